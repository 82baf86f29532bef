#!/usr/bin/env python3
"""C-STORE throughput of diptych's DICOM listener, side by side with Orthanc (issue #4's benchmark).

    ~/.cache/diptych/py-venv/bin/python dicom-adapter/bench/cstore_bench.py \
        --diptych $CARGO_TARGET_DIR/release/diptych --model models/phantom-v1 \
        --work ~/.cache/diptych/bench-cstore [--files 400] [--json]

What it measures, for each target (diptych, Orthanc from the Debian package with its default
SQLite index and filesystem storage) and for 1 and 8 parallel dcmtk `storescu` processes, each
sending all the phantom files over one association:

- acknowledgement rate: successful C-STORE responses / wall time from starting the senders until
  the last one exits;
- diptych only, end-to-end rate to searchable: distinct instances / time from starting the senders
  until InfoService.GetIndexStats reports them all as records with nothing pending;
- the encoder's own throughput at batch 32, from `diptych bench encode --json` (issue #3), which the
  rate to searchable is compared with (bar: >= 90%);
- CPU time: of the storescu processes per instance sent (from wait4), and of the server process
  (all threads, from /proc/<pid>/stat) per instance, until acknowledged (Orthanc) or searchable
  (diptych). The encoder's CPU per slice over diptych's CPU per searchable instance is the rate to
  searchable diptych would reach on cores of its own, relative to the encoder's: the same
  comparison without the senders, which share this machine's cores.

Each sender count is measured in `--runs` runs (default 5); within a run both servers are
measured one after the other, the first of one run going last in the next, so that the machine's
drift falls on both alike. Every run is printed, and the acknowledgement ratio is the median of the
runs' ratios (the other JSON figures are those of the run with the median rate).

Every measurement starts its server afresh on an empty folder, so no run sees an earlier run's
instances. With 8 senders of the same files (as the issue specifies) each instance arrives 8 times:
all 8N stores count as acknowledgements, and the N distinct instances count for the rate to
searchable. `--distinct` gives each sender its own copy of the files with fresh UIDs instead, so
that 8N distinct instances must be encoded.

storescu and Orthanc (both DCMTK) run with TCP_NODELAY=1, as diptych's listener does on its own;
Debian's DCMTK otherwise leaves Nagle's algorithm on, and a ~40 ms delayed-ACK stall per instance
would cap one sender near 22 instances/s against any server (`--nagle` keeps that default).

The phantom files are made once with pydicom into --work and reused. Every child process is ended
when the script ends, on errors too.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

try:
    import grpc
    import numpy as np
    import pydicom
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
except ImportError as missing:  # pragma: no cover - environment problem
    sys.exit(
        f"missing Python package ({missing}); create the venv with `make deps-py` "
        "(grpcio grpcio-tools grpcio-health-checking pydicom numpy)"
    )

REPO = Path(__file__).resolve().parents[2]
ORTHANC = "/usr/sbin/Orthanc"
STORESCU = "storescu"
ROWS, COLS = 192, 160
STUDIES = 5
# Root of the UIDs this benchmark makes up (UUID-derived root, as PS3.5 B.2 allows).
UID_ROOT = "2.25.271828182845904523536028747135266249"
STORE_RESPONSE = re.compile(r"Received Store Response \(([^)]*)\)")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and what to check."""


def log(message):
    """Progress on stderr, so that stdout holds only the table or the JSON line."""
    print(message, file=sys.stderr, flush=True)


# --- phantom files -----------------------------------------------------------------------------


def phantom_pixels(rng, slice_index, slices_per_study, study):
    """A synthetic MR slice: an elliptical "brain" whose size follows the slice position, a
    darker "ventricle", a bright spot in some studies, and Rician-like noise; uint16, 12 bits."""
    y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    position = (slice_index + 0.5) / slices_per_study  # 0..1 through the head
    scale = 0.35 + 0.65 * np.sin(np.pi * position)
    cy, cx = ROWS / 2 + 4 * np.sin(study), COLS / 2
    ry, rx = 80 * scale, 64 * scale
    r = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    image = np.where(r <= 1.0, 900.0, 0.0)
    image += np.where((r > 0.85) & (r <= 1.0), 500.0, 0.0)  # scalp
    ventricle = ((y - cy) / (18 * scale + 1)) ** 2 + ((x - cx) / (9 * scale + 1)) ** 2
    image = np.where(ventricle <= 1.0, 300.0, image)
    if study % 2 == 1:  # a lesion in odd studies
        lesion = ((y - cy + 25 * scale) ** 2 + (x - cx - 20 * scale) ** 2) / (10 * scale + 1) ** 2
        image = np.where(lesion <= 1.0, 1600.0, image)
    noise = rng.normal(0.0, 40.0, size=(2, ROWS, COLS))
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    return np.clip(image, 0, 4095).astype(np.uint16)


def make_instance(path, index, n, copy):
    """Writes phantom instance `index` of `n` (copy `copy`) as explicit VR little endian Part 10."""
    per_study = -(-n // STUDIES)
    study, slice_index = divmod(index, per_study)
    rng = np.random.default_rng(1_000_003 * copy + index)
    pixels = phantom_pixels(rng, slice_index, per_study, study)

    sop_uid = f"{UID_ROOT}.{copy}.3.{index + 1}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = f"{UID_ROOT}.0.1"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = f"{UID_ROOT}.{copy}.1.{study + 1}"
    ds.SeriesInstanceUID = f"{UID_ROOT}.{copy}.2.{study + 1}"
    ds.PatientID = f"BENCH{copy:02d}{study:03d}"
    ds.PatientName = f"Phantom^{copy}^{study}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = f"A{copy:02d}{study:03d}"
    ds.StudyID = str(study + 1)
    ds.Modality = "MR"
    ds.BodyPartExamined = "BRAIN"
    ds.SeriesDescription = "phantom T1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = slice_index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = "10"
    ds.RepetitionTime = "500"
    ds.SliceThickness = "5"
    ds.PixelSpacing = ["1.2", "1.2"]
    ds.SliceLocation = str(5.0 * slice_index)
    ds.ImagePositionPatient = ["-96", "-115.2", str(5.0 * slice_index)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = f"{UID_ROOT}.{copy}.4.{study + 1}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "800"
    ds.WindowWidth = "1600"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def phantom_files(work, n, copy):
    """The folder of `n` phantom files of copy `copy`, made on first use and reused afterwards."""
    folder = work / "files" / f"n{n}-copy{copy}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for index in range(n):
        make_instance(folder / f"mr{index:05d}.dcm", index, n, copy)
    done.write_text(f"{n} phantom MR instances, {ROWS}x{COLS} uint16\n")
    return folder


def dicom_files(folder):
    """The .dcm files of a phantom folder, sorted."""
    return sorted(str(p) for p in folder.glob("*.dcm"))


# --- child processes ---------------------------------------------------------------------------


def dcmtk_env(nagle):
    """The environment of a DCMTK program (storescu, Orthanc's DICOM server).

    Debian's DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is set. DCMTK writes each
    P-DATA PDU as a 12-byte header and a body, so with Nagle on a small write of every instance
    waits for the peer's delayed ACK (~40 ms): one storescu then stalls near 22 instances/s
    against any server, dcmtk's own `storescp --ignore` included, and Orthanc's responses stall
    the same way. Unless `nagle`, both run with TCP_NODELAY=1 (diptych sets it on its sockets).
    """
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if not nagle:
        env["TCP_NODELAY"] = "1"
    return env



def free_port():
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, lines=25):
    """The last lines of a log file, for error messages."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# Server processes still running; `main` ends them all on the way out, errors included.
LIVE = []


class Server:
    """A server child process with its log; `stop` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.process = subprocess.Popen(
            argv,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        LIVE.append(self)

    def cpu_seconds(self):
        """CPU time (user + system, all threads) the process has used so far, from /proc."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check_alive(self):
        """Raises when the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise BenchError(
                f"{self.name} exited with status {code} while starting; its log "
                f"({self.log_path}) ends with:\n{tail(self.log_path)}"
            )

    def stop(self):
        """Ends the process and its log."""
        if self in LIVE:
            LIVE.remove(self)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def wait_until(condition, server, seconds, what):
    """Polls `condition` every 50 ms until it holds; raises naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        server.check_alive()
        if condition():
            return
        time.sleep(0.05)
    raise BenchError(
        f"{server.name}: {what} within {seconds} s; its log ({server.log_path}) ends with:\n"
        f"{tail(server.log_path)}"
    )


class Orthanc:
    """Orthanc with a minimal configuration: default SQLite index and filesystem storage in a
    fresh folder, no plugins, no authentication, any calling AE may store."""

    ae_title = "ORTHANC"

    def __init__(self, folder, nagle):
        folder.mkdir(parents=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        config = {
            "Name": "cstore-bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
        }
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        env = dcmtk_env(nagle)
        self.server = Server("Orthanc", [ORTHANC, str(path)], folder / "orthanc.log", env)
        wait_until(self.http_ready, self.server, 60, "HTTP /system did not answer")
        wait_until(lambda: port_open(self.dicom_port), self.server, 30, "DICOM port did not open")

    def http(self, path):
        """GET on Orthanc's REST API, decoded from JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def http_ready(self):
        """True once /system answers."""
        try:
            return "Version" in self.http("/system")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def instances(self):
        """Instances Orthanc holds."""
        return int(self.http("/statistics")["CountInstances"])

    def stop(self):
        """Ends Orthanc."""
        self.server.stop()


class Diptych:
    """`diptych serve` on a fresh data folder, gRPC and DICOM on free local ports, CPU encoder."""

    ae_title = "DIPTYCH"

    def __init__(self, binary, model, folder, stubs):
        folder.mkdir(parents=True)
        self.dicom_port = free_port()
        self.grpc_port = free_port()
        self.http_port = free_port()
        argv = [
            binary,
            "serve",
            "--model",
            str(model),
            "--data-dir",
            str(folder / "data"),
            "--grpc-addr",
            f"127.0.0.1:{self.grpc_port}",
            "--http-addr",
            f"127.0.0.1:{self.http_port}",
            "--dicom-addr",
            f"127.0.0.1:{self.dicom_port}",
            "--ae-title",
            self.ae_title,
            "--execution-provider",
            "cpu",
        ]
        self.server = Server("diptych serve", argv, folder / "diptych.log")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.info = stubs["info_grpc"].InfoServiceStub(self.channel)
        self.info_pb2 = stubs["info"]
        # The listener is bound before health turns SERVING; no TCP probe, which it would log.
        wait_until(self.serving, self.server, 120, "gRPC health did not report SERVING")

    def serving(self):
        """True once gRPC health reports SERVING for the server as a whole."""
        try:
            status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError:
            return False
        return status == health_pb2.HealthCheckResponse.SERVING

    def stage_means(self):
        """Mean milliseconds per accepted instance of each accept stage, from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        sums, counts = {}, {}
        for line in text.splitlines():
            for suffix, into in (("_sum", sums), ("_count", counts)):
                head = f"diptych_accept_stage_duration_seconds{suffix}{{stage=\""
                if line.startswith(head):
                    stage = line[len(head) :].split('"')[0]
                    into[stage] = float(line.split()[-1])
        return {k: sums[k] * 1e3 / counts[k] for k in sums if counts.get(k)}

    def stats(self):
        """InfoService.GetIndexStats."""
        return self.info.GetIndexStats(self.info_pb2.GetIndexStatsRequest(), timeout=10)

    def stop(self):
        """Ends the server."""
        self.channel.close()
        self.server.stop()


# --- measurement -------------------------------------------------------------------------------


def send(ae_title, port, folders, work, nagle):
    """Runs one storescu per folder at once, each sending every file of its folder over one
    association; returns (seconds until all exited, status counts over all responses, failures,
    CPU seconds the storescu processes used)."""
    logs = []
    processes = []
    env = dcmtk_env(nagle)
    start = time.monotonic()
    try:
        for k, folder in enumerate(folders):
            out = open(work / f"storescu-{k}.log", "wb")
            logs.append(out)
            argv = [STORESCU, "-v", "-aet", "BENCH", "-aec", ae_title, "127.0.0.1", str(port)]
            argv += dicom_files(folder)
            processes.append(
                subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            )
        codes = []
        sender_cpu = 0.0
        for p in processes:
            # wait4 rather than wait: the child's own CPU time comes with its exit status.
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            codes.append(p.returncode)
            sender_cpu += usage.ru_utime + usage.ru_stime
        seconds = time.monotonic() - start
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        for out in logs:
            out.close()
    statuses = {}
    failures = []
    for k, code in enumerate(codes):
        text = (work / f"storescu-{k}.log").read_text(errors="replace")
        for status in STORE_RESPONSE.findall(text):
            statuses[status] = statuses.get(status, 0) + 1
        errors = [line for line in text.splitlines() if line.startswith(("E:", "F:"))]
        if code != 0 or errors:
            failures.append(f"storescu #{k} exited with {code}: " + " | ".join(errors[:5]))
    return seconds, statuses, failures, sender_cpu


def acknowledged(statuses):
    """Successful responses: Success, and Warning (the instance was stored)."""
    return sum(n for status, n in statuses.items() if status == "Success" or status.startswith("Warning"))


def measure(target, senders, args, stubs, folders_for):
    """One run on a fresh server: returns a dict of counts, times and rates."""
    run = args.work / "runs" / f"{target}-{senders}"
    if run.exists():
        shutil.rmtree(run)
    folders = folders_for(senders)
    sent = len(folders) * args.files
    distinct = len(set(folders)) * args.files
    server = (
        Orthanc(run / "orthanc", args.nagle)
        if target == "orthanc"
        else Diptych(args.diptych, args.model, run / "diptych", stubs)
    )
    try:
        start = time.monotonic()
        cpu_start = server.server.cpu_seconds()
        seconds, statuses, failures, sender_cpu = send(
            server.ae_title, server.dicom_port, folders, run, args.nagle
        )
        cpu_ack = server.server.cpu_seconds() - cpu_start
        acks = acknowledged(statuses)
        result = {
            "target": target,
            "senders": senders,
            "sent": sent,
            "distinct": distinct,
            "acknowledged": acks,
            "statuses": statuses,
            "failures": failures,
            "ack_seconds": seconds,
            "ack_per_s": acks / seconds,
            "sender_cpu_ms_per_instance": sender_cpu * 1e3 / sent,
            "server_cpu_ms_per_instance_acked": cpu_ack * 1e3 / sent,
        }
        if target == "orthanc":
            result["stored"] = server.instances()
        else:
            result["stage_ms"] = server.stage_means()
            # Searchable: every distinct instance is a record and nothing is pending.
            deadline = time.monotonic() + args.timeout
            while True:
                stats = server.stats()
                if stats.records >= distinct and stats.pending == 0:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"diptych: after {args.timeout} s, GetIndexStats reports records="
                        f"{stats.records} pending={stats.pending}, expected records={distinct} "
                        f"pending=0; storescu failures: {failures}; server log "
                        f"({server.server.log_path}) ends with:\n{tail(server.server.log_path)}"
                    )
                server.server.check_alive()
                # Every 25 ms: finer polling costs the server CPU it would rather spend indexing
                # (each poll counts the catalog), and 25 ms is < 1 % of any run's time.
                time.sleep(0.025)
            searchable = time.monotonic() - start
            cpu_searchable = server.server.cpu_seconds() - cpu_start
            result.update(
                {
                    "stored": int(stats.instances),
                    "records": int(stats.records),
                    "searchable_seconds": searchable,
                    "searchable_per_s": distinct / searchable,
                    "server_cpu_ms_per_instance_searchable": cpu_searchable * 1e3 / distinct,
                }
            )
        return result
    finally:
        server.stop()


def encoder_throughput(args):
    """The service's encoder at batch 32 from `diptych bench encode --json`: (slices/s, CPU ms
    per slice, None), or (None, None, why) when that subcommand is missing or fails."""
    argv = [str(args.diptych), "bench", "encode", "--model", str(args.model), "--json", "--seconds", "3", "--runs", "1"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, None, f"`{' '.join(argv)}` failed: {error}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, None, f"`diptych bench encode` exited with {done.returncode}: {last}"
    for line in done.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("batch") == 32 and row.get("ort_slices_per_s"):
            return float(row["ort_slices_per_s"]), row.get("ort_cpu_ms_per_slice"), None
    return None, None, "`diptych bench encode --json` printed no line with batch 32 and ort_slices_per_s"


# --- report ------------------------------------------------------------------------------------


def ratio(a, b):
    """a / b, or None when either is missing."""
    return None if a is None or b in (None, 0) else a / b


def median(values):
    """The median of a non-empty list (the mean of the middle two when the count is even)."""
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ack_ratios(results, senders):
    """diptych's acknowledgements per second over Orthanc's, run by run, for one sender count."""
    by_run = {}
    for r in results:
        if r["senders"] == senders:
            by_run.setdefault(r["run"], {})[r["target"]] = r["ack_per_s"]
    return [
        runs["diptych"] / runs["orthanc"]
        for _, runs in sorted(by_run.items())
        if "diptych" in runs and runs.get("orthanc")
    ]


def representative(results, target, senders):
    """The run of `target` with `senders` whose acknowledgement rate is the median one."""
    rows = sorted((r for r in results if (r["target"], r["senders"]) == (target, senders)), key=lambda r: r["ack_per_s"])
    return rows[(len(rows) - 1) // 2]


def rounded(value):
    """Two decimals for the JSON line."""
    return None if value is None else round(value, 2)


def table(results, encoder, args):
    """The human-readable report. `encoder` is (slices/s, CPU ms per slice, note)."""
    rate, cpu, note = encoder
    copies = "distinct copies per sender" if args.distinct else "same files for every sender"
    lines = [
        f"C-STORE of {args.files} phantom MR instances ({ROWS}x{COLS} uint16, explicit VR LE), "
        f"storescu over loopback (Nagle {'on' if args.nagle else 'off'} in DCMTK), {copies}",
        f"{'run':>3} {'target':<8} {'senders':>7} {'sent':>6} {'acked':>6} {'ack s':>8} {'ack/s':>8} "
        f"{'searchable s':>13} {'searchable/s':>13} {'sender CPU':>11} {'server CPU':>11}",
    ]
    for r in results:
        if "searchable_seconds" in r:
            s = f"{r['searchable_seconds']:13.2f} {r['searchable_per_s']:13.1f}"
            server_cpu = r["server_cpu_ms_per_instance_searchable"]
        else:
            s = f"{'-':>13} {'-':>13}"
            server_cpu = r["server_cpu_ms_per_instance_acked"]
        lines.append(
            f"{r.get('run', 1):>3} {r['target']:<8} {r['senders']:>7} {r['sent']:>6} {r['acknowledged']:>6} "
            f"{r['ack_seconds']:8.2f} {r['ack_per_s']:8.1f} {s} "
            f"{r['sender_cpu_ms_per_instance']:8.2f} ms {server_cpu:8.2f} ms"
        )
    for r in results:
        if r.get("stage_ms"):
            lines.append(
                f"  run {r.get('run', 1)} diptych x{r['senders']}, ms per instance by accept stage: "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_ms"].items())
            )
    for senders in sorted({r["senders"] for r in results}):
        ratios = ack_ratios(results, senders)
        if ratios:
            lines.append(
                f"diptych ack/s over Orthanc's, {senders} sender(s): runs "
                + ", ".join(f"{x:.2f}" for x in ratios)
                + f"; median {median(ratios):.2f} (bar >= 1)"
            )
    lines.append(
        "CPU columns: CPU time per instance sent (storescu processes) and per instance handled "
        "(the server, all threads: until acknowledged for Orthanc, until searchable for diptych)"
    )
    for r in results:
        other = {k: v for k, v in r["statuses"].items() if k != "Success"}
        if other or r["failures"]:
            lines.append(f"  {r['target']} x{r['senders']}: statuses {r['statuses']}; {r['failures']}")
        if r["stored"] != r["distinct"] or r.get("records", r["distinct"]) != r["distinct"]:
            lines.append(
                f"  {r['target']} x{r['senders']}: holds {r['stored']} instances"
                + (f" and {r['records']} records" if "records" in r else "")
                + f" after {r['distinct']} distinct were sent"
            )
    lines.append(
        "encoder (diptych bench encode, batch 32): "
        + (f"{rate:.1f} slices/s, {cpu:.2f} ms CPU per slice" if rate is not None else f"missing ({note})")
    )
    return "\n".join(lines)


def summary(results, encoder, args):
    """The one JSON line of the benchmark (the rows that were run)."""
    rate, cpu, note = encoder
    out = {
        "bench": "cstore",
        "instances": args.files,
        "distinct_per_sender": args.distinct,
        "dcmtk_nagle": args.nagle,
        "encoder_slices_per_s": rounded(rate),
        "encoder_cpu_ms_per_slice": rounded(cpu),
    }
    if rate is None:
        out["encoder_missing"] = note
    by = {(r["target"], r["senders"]): representative(results, r["target"], r["senders"]) for r in results}
    out["runs"] = max(r.get("run", 1) for r in results) if results else 0
    for (target, senders), r in sorted(by.items()):
        out[f"{target}_ack_per_s_{senders}"] = rounded(r["ack_per_s"])
        out[f"sender_cpu_ms_per_instance_{target}_{senders}"] = rounded(r["sender_cpu_ms_per_instance"])
        if target == "orthanc":
            out[f"orthanc_cpu_ms_per_instance_{senders}"] = rounded(r["server_cpu_ms_per_instance_acked"])
            continue
        out[f"diptych_searchable_per_s_{senders}"] = rounded(r["searchable_per_s"])
        out[f"diptych_stage_ms_{senders}"] = {k: rounded(v) for k, v in r.get("stage_ms", {}).items()}
        out[f"diptych_cpu_ms_per_instance_{senders}"] = rounded(r["server_cpu_ms_per_instance_searchable"])
        out[f"searchable_vs_encoder_{senders}"] = rounded(ratio(r["searchable_per_s"], rate))
        # The same comparison on CPU time: the encoder's CPU per slice over diptych's CPU per
        # searchable instance, i.e. the rate to searchable on cores of its own ÷ the encoder's.
        out[f"searchable_vs_encoder_cpu_{senders}"] = rounded(
            ratio(cpu, r["server_cpu_ms_per_instance_searchable"])
        )
        ratios = ack_ratios(results, senders)
        if ratios:
            out[f"ack_ratio_{senders}"] = rounded(median(ratios))
            out[f"ack_ratio_runs_{senders}"] = [rounded(x) for x in ratios]
    out["store_failures"] = sum(r["sent"] - r["acknowledged"] for r in results)
    # Instances held after the run that differ from those sent (lost, or duplicates kept twice).
    out["count_mismatches"] = sum(
        r["stored"] != r["distinct"] or r.get("records", r["distinct"]) != r["distinct"] for r in results
    )
    return out


def load_stubs(work):
    """Python stubs of proto/diptych/v1, generated with grpc_tools like the service's client check."""
    sys.path.insert(0, str(REPO / "service" / "tests" / "python"))
    from client_check import generate_stubs  # noqa: E402 - the shared generator

    out = work / "stubs"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return generate_stubs(REPO / "proto", out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diptych", required=True, type=Path, help="the diptych binary")
    parser.add_argument("--model", required=True, type=Path, help="model bundle folder")
    parser.add_argument("--work", required=True, type=Path, help="folder for files, configs, data and logs")
    parser.add_argument("--files", type=int, default=400, help="phantom instances per sender (default 400)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line (the table goes to stderr)"
    )
    parser.add_argument("--distinct", action="store_true", help="give each sender its own copy with fresh UIDs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for searchable")
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="leave Nagle's algorithm on in storescu and Orthanc (Debian's DCMTK default; "
        "~40 ms stall per instance)",
    )
    parser.add_argument("--skip-encoder", action="store_true", help="do not run `diptych bench encode`")
    parser.add_argument(
        "--targets",
        default="orthanc,diptych",
        help="comma-separated servers to measure (default orthanc,diptych)",
    )
    parser.add_argument(
        "--senders", default="1,8", help="comma-separated sender counts to run (default 1,8)"
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="alternating runs per sender count; medians reported (default 5)"
    )
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.diptych = args.diptych.resolve()
    args.model = args.model.resolve()
    if args.files < 1:
        parser.error("--files must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    for tool, why in ((ORTHANC, "apt-get install orthanc"), (shutil.which(STORESCU), "apt-get install dcmtk")):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"missing {tool or STORESCU}: `make deps-apt` ({why})")
    if not os.access(args.diptych, os.X_OK):
        sys.exit(f"no diptych binary at {args.diptych}: `cargo build --release -p diptych-service`")
    if not (args.model / "manifest.json").is_file():
        sys.exit(f"no model bundle at {args.model} (manifest.json missing)")
    args.work.mkdir(parents=True, exist_ok=True)
    # SIGTERM (e.g. from make) unwinds like an error, so that the servers are ended too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("cstore benchmark: terminated"))

    try:
        stubs = load_stubs(args.work)
        log(f"phantom files: {args.files} per copy in {args.work / 'files'}")
        copies = {}

        def folders_for(senders):
            if not args.distinct:
                copies.setdefault(0, phantom_files(args.work, args.files, 0))
                return [copies[0]] * senders
            for k in range(senders):
                copies.setdefault(k, phantom_files(args.work, args.files, k))
            return [copies[k] for k in range(senders)]

        sender_counts = [int(n) for n in args.senders.split(",")]
        folders_for(max(sender_counts) if args.distinct else 1)
        results = []
        targets = args.targets.split(",")
        for senders in sender_counts:
            # The servers alternate, the first of one run going last in the next, so that the
            # machine's drift falls on both alike.
            for run in range(args.runs):
                for target in targets if run % 2 == 0 else targets[::-1]:
                    log(f"run {run + 1}/{args.runs}: {target}, {senders} sender(s)...")
                    r = measure(target, senders, args, stubs, folders_for)
                    r["run"] = run + 1
                    log(
                        f"  acknowledged {r['acknowledged']}/{r['sent']} in {r['ack_seconds']:.2f} s"
                        + (f", searchable in {r['searchable_seconds']:.2f} s" if "searchable_seconds" in r else "")
                    )
                    results.append(r)
        if args.skip_encoder:
            encoder = (None, None, "skipped (--skip-encoder)")
        else:
            log("encoder throughput: diptych bench encode --json --seconds 3 ...")
            encoder = encoder_throughput(args)
    except BenchError as error:
        sys.exit(f"cstore benchmark failed: {error}")
    finally:
        for server in list(LIVE):
            server.stop()

    if args.json:
        log(table(results, encoder, args))
        print(json.dumps(summary(results, encoder, args)))
    else:
        print(table(results, encoder, args))


if __name__ == "__main__":
    main()
