"""Sends DICOM files to a Storage SCP with pynetdicom, one association per file (each proposing
the file's SOP class in the file's own transfer syntax), and prints one JSON line:
{"file name": {"status": n, "comment": "..."}, ...}; status -1 when no association or no
response came.

usage: store_files.py HOST PORT CALLED_AE FILE...
"""

import json
import sys
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE


def send(host, port, called, path):
    ds = dcmread(path)
    ae = AE(ae_title="ARCHIVESCU")
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        return {"status": -1, "comment": "association not established"}
    try:
        status = assoc.send_c_store(ds)
        code = getattr(status, "Status", None)
        if code is None:
            return {"status": -1, "comment": "no response"}
        return {"status": int(code), "comment": str(status.get("ErrorComment", ""))}
    finally:
        if assoc.is_established:
            assoc.release()


def main():
    host, port, called, *files = sys.argv[1:]
    results = {Path(f).name: send(host, int(port), called, f) for f in files}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
