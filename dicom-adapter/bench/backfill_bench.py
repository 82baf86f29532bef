#!/usr/bin/env python3
"""Backfill rate from Orthanc over C-GET and over DICOMweb (WADO-RS) beside the C-STORE ingest rate
of the same studies (issue #13's benchmark).

    python dicom-adapter/bench/backfill_bench.py \\
        --diptych $CARGO_TARGET_DIR/release/diptych --model models/synth-v2 --work /tmp/bench-backfill

The same phantom MR instances (cstore_bench.py's files: 192x160 uint16, 5 studies) are, in one
run and on this machine:

- sent by dcmtk's storescu (one association, TCP_NODELAY) to a fresh `diptych serve`: the C-STORE
  ingest rate, from the first byte until every instance is searchable;
- stored into Orthanc (Debian's package, C-FIND and C-GET allowed, its DICOMweb plugin from
  `orthanc-dicomweb` on), then pulled by `diptych backfill --archive ORTHANC@…` into another fresh
  `diptych serve`: the backfill rate, from the command's start (C-FIND included) until every
  instance is searchable, with one study at a time and with --concurrency 4; then the same by
  `diptych backfill --archive-url http://…/dicom-web` (QIDO-RS, then WADO-RS), 1 and 4 at once.

Prints a table, or with --json the table on stderr and one JSON line on stdout.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cstore_bench as cb  # noqa: E402 - the shared files, servers and sender


DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class ArchiveOrthanc(cb.Orthanc):
    """cstore_bench's Orthanc, with C-FIND and C-GET allowed to any calling AE and its DICOMweb
    plugin serving /dicom-web/."""

    def __init__(self, folder):
        folder.mkdir(parents=True)
        self.dicom_port = cb.free_port()
        self.http_port = cb.free_port()
        config = {
            "Name": "backfill-bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        self.server = cb.Server(
            "Orthanc", [cb.ORTHANC, str(path)], folder / "orthanc.log", cb.dcmtk_env(False)
        )
        cb.wait_until(self.http_ready, self.server, 60, "HTTP /system did not answer")
        cb.wait_until(lambda: cb.port_open(self.dicom_port), self.server, 30, "DICOM port did not open")


def wait_searchable(server, n, timeout):
    """Polls GetIndexStats until `n` records and nothing pending."""
    deadline = time.monotonic() + timeout
    while True:
        stats = server.stats()
        if stats.records >= n and stats.pending == 0:
            return stats
        if time.monotonic() > deadline:
            raise cb.BenchError(
                f"diptych: after {timeout} s, records={stats.records} pending={stats.pending}, "
                f"expected {n}; log ({server.server.log_path}):\n{cb.tail(server.server.log_path)}"
            )
        server.server.check_alive()
        time.sleep(0.025)


def cstore_rate(args, stubs, files):
    """storescu → fresh diptych, until searchable: (instances/s, seconds)."""
    run = args.work / "runs" / "cstore"
    if run.exists():
        cb.shutil.rmtree(run)
    server = cb.Diptych(args.diptych, args.model, run / "diptych", stubs)
    try:
        start = time.monotonic()
        _, statuses, failures, _ = cb.send(server.ae_title, server.dicom_port, [files], run, False)
        if failures or cb.acknowledged(statuses) != args.files:
            raise cb.BenchError(f"storescu into diptych: {statuses} {failures}")
        wait_searchable(server, args.files, args.timeout)
        seconds = time.monotonic() - start
        return args.files / seconds, seconds
    finally:
        server.stop()


def backfill_rate(args, stubs, orthanc, concurrency, method):
    """`diptych backfill` from Orthanc (`method`: "c-get" or "wado-rs") into a fresh diptych,
    until searchable."""
    run = args.work / "runs" / f"backfill-{method}-{concurrency}"
    if run.exists():
        cb.shutil.rmtree(run)
    server = cb.Diptych(args.diptych, args.model, run / "diptych", stubs)
    try:
        argv = [
            str(args.diptych),
            "backfill",
            "--server",
            f"http://127.0.0.1:{server.grpc_port}",
            *(
                ["--archive", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}"]
                if method == "c-get"
                else ["--archive-url", f"http://127.0.0.1:{orthanc.http_port}/dicom-web"]
            ),
            "--concurrency",
            str(concurrency),
        ]
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
        if done.returncode != 0:
            raise cb.BenchError(f"diptych backfill failed: {done.stdout}{done.stderr}")
        stats = wait_searchable(server, args.files, args.timeout)
        seconds = time.monotonic() - start
        if stats.instances != args.files:
            raise cb.BenchError(f"backfill indexed {stats.instances} of {args.files} instances")
        return args.files / seconds, seconds, done.stdout.strip()
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diptych", required=True, type=Path, help="the diptych binary")
    parser.add_argument("--model", required=True, type=Path, help="model bundle folder")
    parser.add_argument("--work", required=True, type=Path, help="folder for files, data and logs")
    parser.add_argument("--files", type=int, default=400, help="phantom instances (default 400)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for searchable")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.diptych = args.diptych.resolve()
    args.model = args.model.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        stubs = cb.load_stubs(args.work)
        files = cb.phantom_files(args.work, args.files, 0)
        cb.log("C-STORE ingest: storescu -> diptych ...")
        cstore, cstore_s = cstore_rate(args, stubs, files)
        run = args.work / "runs" / "orthanc"
        if run.exists():
            cb.shutil.rmtree(run)
        orthanc = ArchiveOrthanc(run)
        cb.log("loading Orthanc with the same files ...")
        _, _, failures, _ = cb.send(orthanc.ae_title, orthanc.dicom_port, [files], run, False)
        if failures or orthanc.instances() != args.files:
            raise cb.BenchError(f"storescu into Orthanc: {failures}, {orthanc.instances()} stored")
        rows = []
        for method in ("c-get", "wado-rs"):
            for concurrency in (1, 4):
                cb.log(f"backfill from Orthanc over {method}, --concurrency {concurrency} ...")
                rate, seconds, said = backfill_rate(args, stubs, orthanc, concurrency, method)
                cb.log(f"  {said}")
                rows.append((method, concurrency, rate, seconds))
    except cb.BenchError as error:
        sys.exit(f"backfill benchmark failed: {error}")
    finally:
        for server in list(cb.LIVE):
            server.stop()
    lines = [
        f"Backfill from Orthanc over C-GET and WADO-RS beside C-STORE ingest: {args.files} phantom MR instances "
        f"({cb.ROWS}x{cb.COLS} uint16, {cb.STUDIES} studies), model {args.model.name}, CPU, until searchable",
        "",
        "| path | instances/s | seconds | vs C-STORE |",
        "|---|---|---|---|",
        f"| C-STORE ingest (storescu, 1 association) | {cstore:.0f} | {cstore_s:.2f} | 1.00 |",
    ]
    for method, concurrency, rate, seconds in rows:
        path = "C-FIND + C-GET" if method == "c-get" else "QIDO-RS + WADO-RS"
        lines.append(
            f"| backfill, {path}, {concurrency} stud{'y' if concurrency == 1 else 'ies'} at once "
            f"| {rate:.0f} | {seconds:.2f} | {rate / cstore:.2f} |"
        )
    table = "\n".join(lines)
    if args.json:
        cb.log(table)
        print(
            json.dumps(
                {
                    "benchmark": "backfill",
                    "instances": args.files,
                    "cstore_per_s": round(cstore, 1),
                    "backfill_per_s": {str(c): round(r, 1) for m, c, r, _ in rows if m == "c-get"},
                    "backfill_vs_cstore": {
                        str(c): round(r / cstore, 2) for m, c, r, _ in rows if m == "c-get"
                    },
                    "wado_rs_per_s": {str(c): round(r, 1) for m, c, r, _ in rows if m == "wado-rs"},
                    "wado_rs_vs_cstore": {
                        str(c): round(r / cstore, 2) for m, c, r, _ in rows if m == "wado-rs"
                    },
                }
            )
        )
    else:
        print(table)


if __name__ == "__main__":
    main()
