"""STOW-RS on diptych's HTTP port with a real DICOMweb client (dicomweb-client on PyPI).

Usage: stow_check.py URL INGEST_TOKEN SEARCH_TOKEN FILE...

URL is the DICOMweb root (http://host:port/dicomweb). Checks, in order: no token is 401 and a
search-role token 403 (nothing stored); dicomweb-client's store_instances stores every file and
the response lists each in the Referenced SOP Sequence; a request with one good part and one
that is not DICOM is 202 with the bad part in the Failed SOP Sequence, reason 0xC000; a body
that is not multipart/related is 415. Prints one JSON line with what it saw.
"""

import json
import sys
import uuid

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient


def multipart(parts):
    """A multipart/related body of application/dicom parts, and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = b""
    for part in parts:
        body += b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
        body += part + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body, content_type


def main():
    url, ingest_token, search_token, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    seen = {}
    first = open(files[0], "rb").read()
    body, content_type = multipart([first])
    studies = f"{url}/studies"

    no_token = requests.post(studies, data=body, headers={"Content-Type": content_type})
    assert no_token.status_code == 401, (no_token.status_code, no_token.text)
    assert "Bearer" in no_token.text, no_token.text
    wrong_role = requests.post(
        studies,
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {search_token}"},
    )
    assert wrong_role.status_code == 403, (wrong_role.status_code, wrong_role.text)
    assert "role" in wrong_role.text, wrong_role.text
    seen["refused_without_ingest_role"] = True

    client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {ingest_token}"})
    datasets = [pydicom.dcmread(f) for f in files]
    answer = client.store_instances(datasets=datasets)
    stored = [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence]
    assert sorted(stored) == sorted(d.SOPInstanceUID for d in datasets), (stored, answer)
    assert "FailedSOPSequence" not in answer, answer
    seen["stored_by_dicomweb_client"] = len(stored)

    body, content_type = multipart([first, b"this is not a DICOM instance"])
    mixed = requests.post(
        studies,
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {ingest_token}"},
    )
    assert mixed.status_code == 202, (mixed.status_code, mixed.text)
    assert mixed.headers["Content-Type"].startswith("application/dicom+json"), mixed.headers
    result = pydicom.Dataset.from_json(mixed.json())
    assert len(result.ReferencedSOPSequence) == 1, result
    assert result.FailedSOPSequence[0].FailureReason == 0xC000, result
    seen["partial_failure"] = int(result.FailedSOPSequence[0].FailureReason)

    plain = requests.post(
        studies,
        data=first,
        headers={"Content-Type": "application/dicom", "Authorization": f"Bearer {ingest_token}"},
    )
    assert plain.status_code == 415, (plain.status_code, plain.text)
    seen["not_multipart"] = plain.status_code
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
