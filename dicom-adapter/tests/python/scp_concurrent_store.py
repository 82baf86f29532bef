"""Concurrent C-STORE load on diptych's DICOM listener, from pynetdicom.

Opens ASSOCIATIONS associations at once (one process each, so that Python's GIL does not
serialise them); each sends INSTANCES instances made
from the template file, every one with its own SOP Instance UID (<root>.<association>.<n>), and
checks every C-STORE status. A C-STORE whose response does not come within pynetdicom's DIMSE
timeout is a failure ("lost"); nothing is sent twice. pynetdicom's reactor race, which took
responses away from their sender under this load, is fixed first (pynetdicom_reactor_pause.py);
responses the reactor still takes are counted from pynetdicom's log as "stolen". Set
DIPTYCH_UNPATCHED_PYNETDICOM=1 to run without the fix and see the race. Prints one JSON line:
{"sent": n, "failures": [...], "stolen_responses": n, "seconds": s}. Exits 1 if any association
failed to open, any response was lost, or any status was not 0x0000.

usage: scp_concurrent_store.py HOST PORT CALLED_AE TEMPLATE.dcm ASSOCIATIONS INSTANCES UID_ROOT
"""

import json
import logging
import multiprocessing
import os
import sys
import time

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

import pynetdicom_reactor_pause


class StolenResponses(logging.Handler):
    """Counts the responses pynetdicom's reactor took from their sender (it logs each one)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        if "Received unexpected C-STORE" in record.getMessage():
            self.count += 1


def run_association(host, port, called, path, index, count, root, queue):
    if os.environ.get("DIPTYCH_UNPATCHED_PYNETDICOM") != "1":
        pynetdicom_reactor_pause.install()
    stolen = StolenResponses()
    logging.getLogger("pynetdicom").addHandler(stolen)
    results = []
    try:
        associate_and_send(host, port, called, dcmread(path), index, count, root, results)
    except Exception as error:  # reported, not raised: the parent counts it as a failure
        results.append(("exception", index, repr(error)))
    results.append(("stolen", index, stolen.count))
    queue.put(results)


def associate_and_send(host, port, called, template, index, count, root, results):
    ae = AE(ae_title=f"LOAD{index:02d}")
    ae.add_requested_context(MRImageStorage)
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 60
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        results.append(("association", index, "not established"))
        return
    sent = 0
    try:
        for n in range(count):
            ds = template
            uid = f"{root}.{index + 1}.{n + 1}"
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid
            code = getattr(assoc.send_c_store(ds), "Status", None)
            if code is None:
                # No response before the DIMSE timeout: pynetdicom has aborted the association.
                results.append(("lost", index, n))
                break
            if code != 0x0000:
                results.append(("status", index, n, code))
            else:
                sent += 1
    finally:
        if assoc.is_established:
            assoc.release()
    results.append(("sent", index, sent))


def main():
    host, port, called, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    associations, instances, root = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    queue = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(
            target=run_association,
            args=(host, port, called, path, i, instances, root, queue),
        )
        for i in range(associations)
    ]
    start = time.monotonic()
    for process in processes:
        process.start()
    results = []
    for _ in processes:
        results.extend(queue.get())
    for process in processes:
        process.join()
    seconds = time.monotonic() - start
    sent = sum(r[2] for r in results if r[0] == "sent")
    stolen = sum(r[2] for r in results if r[0] == "stolen")
    failures = [r for r in results if r[0] not in ("sent", "stolen")]
    print(json.dumps({"sent": sent, "failures": failures[:20], "stolen_responses": stolen, "seconds": seconds}))
    sys.exit(1 if failures or sent != associations * instances else 0)


if __name__ == "__main__":
    main()
