"""C-STOREs with hostile UIDs from pynetdicom, all on one association, then a good instance.

Each hostile UID of HOSTILE_UIDS is sent twice: once as the SOP Instance UID (command and data
set), once as the Study Instance UID (data set). Every C-STORE status and error comment is
reported; the good instance sent last shows the association survived the refusals. Prints one
JSON line: {"results": [{"attribute": ..., "uid": ..., "status": ..., "comment": ...}, ...],
"good": status, "established": bool}. Exits 1 when the association could not be opened.

UIDs longer than 64 characters are not here: pynetdicom refuses to put them in a command
(service/tests/dicom_e2e.rs sends them with dcmtk's storescu).

usage: hostile_uid_store.py HOST PORT CALLED_AE TEMPLATE.dcm GOOD_SOP_INSTANCE_UID
"""

import copy
import json
import sys
import warnings

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

HOSTILE_UIDS = [
    '1.2" OR study_instance_uid:*',
    'x" OR *',
    "1.2:3",
    "1.(2)",
    "*",
    "1.2.\u00e9",
    "1..2",
    ".1",
]


def send(assoc, ds):
    status = assoc.send_c_store(ds)
    code = getattr(status, "Status", None)
    comment = str(getattr(status, "ErrorComment", "") or "")
    return code, comment


def main():
    host, port, called, path, good_uid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    warnings.simplefilter("ignore")  # pydicom warns about every invalid UI value
    template = dcmread(path)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(MRImageStorage)
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 60
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        print(json.dumps({"established": False}))
        sys.exit(1)
    results = []
    try:
        for uid in HOSTILE_UIDS:
            for attribute in ["SOPInstanceUID", "StudyInstanceUID"]:
                ds = copy.deepcopy(template)
                setattr(ds, attribute, uid)
                if attribute == "SOPInstanceUID":
                    ds.file_meta.MediaStorageSOPInstanceUID = uid
                code, comment = send(assoc, ds)
                results.append({"attribute": attribute, "uid": uid, "status": code, "comment": comment})
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = good_uid
        ds.file_meta.MediaStorageSOPInstanceUID = good_uid
        good, _ = send(assoc, ds)
    finally:
        if assoc.is_established:
            assoc.release()
    print(json.dumps({"established": True, "results": results, "good": good}))


if __name__ == "__main__":
    main()
