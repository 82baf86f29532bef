#!/usr/bin/env python3
"""Drives the calls the audit trail records, from the grpcio client, for service/tests/audit_e2e.rs.

Stubs come from proto/ through grpcio-tools as in client_check.py. Scenarios:

  calls     Encode (a DICOM file), Decompose (raw pixels, then an empty image: refused), and the
            three InfoService calls, each with an x-request-id the test finds in the audit file
  searches  --count indexed searches over --threads threads, each with its own x-request-id; the
            moment the last one is answered, SIGKILL to --kill (the server's pid)

Prints one JSON line of facts (the request ids answered); exits 1 saying what failed otherwise.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from client_check import check, generate_stubs, run_checks  # noqa: E402


def metadata(token, request_id):
    return [("authorization", f"Bearer {token}"), ("x-request-id", request_id)]


def calls(args, pb, channel):
    common, images, info = pb["common"], pb["images"], pb["info"]
    image_stub = pb["images_grpc"].ImageServiceStub(channel)
    info_stub = pb["info_grpc"].InfoServiceStub(channel)
    dicom = args.dicom.read_bytes()
    encoded = image_stub.Encode(
        images.EncodeRequest(image=common.ImageInput(dicom=dicom)), metadata=metadata(args.token, "audit-encode")
    )
    check(encoded.codes.model_id != "", "Encode answered codes")
    raw = common.RawPixels(rows=16, columns=16, pixel_type=common.PIXEL_TYPE_UINT8, data=bytes(range(256)))
    decomposed = image_stub.Decompose(
        images.DecomposeRequest(image=common.ImageInput(raw=raw)), metadata=metadata(args.token, "audit-decompose")
    )
    check(len(decomposed.reconstruction.png) > 0, "Decompose answered images")
    try:
        image_stub.Decompose(images.DecomposeRequest(), metadata=metadata(args.token, "audit-decompose-empty"))
        check(False, "Decompose without an image is refused")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"Decompose without an image: {error.code()}")
    info_stub.GetIndexStats(info.GetIndexStatsRequest(), metadata=metadata(args.token, "audit-stats"))
    info_stub.GetModelCard(info.GetModelCardRequest(), metadata=metadata(args.token, "audit-card"))
    info_stub.GetCapabilities(info.GetCapabilitiesRequest(), metadata=metadata(args.token, "audit-capabilities"))
    return {"calls": 6}


def searches(args, pb, channel):
    common, search = pb["common"], pb["search"]
    stub = pb["search_grpc"].SearchServiceStub(channel)
    request = search.SearchRequest(
        query=search.Query(indexed=common.SliceRef(sop_instance_uid=args.sop)),
        mode=common.SEARCH_MODE_COMBINED,
        top_k=5,
    )
    answered, lock = [], threading.Lock()
    latencies = []

    def one(i):
        request_id = f"kill-{i}"
        started = time.perf_counter()
        stub.Search(request, metadata=metadata(args.token, request_id), timeout=60)
        with lock:
            latencies.append(time.perf_counter() - started)
            answered.append(request_id)
            if len(answered) == args.count:
                # The last answer is in: kill the server before anything else happens.
                os.kill(args.kill, signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        for future in [pool.submit(one, i) for i in range(args.count)]:
            future.result()
    check(len(answered) == args.count, f"all {args.count} searches answered")
    return {"answered": answered, "mean_ms": round(1e3 * sum(latencies) / len(latencies), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["calls", "searches"])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--proto-dir", required=True, type=Path)
    ap.add_argument("--token", required=True)
    ap.add_argument("--dicom", type=Path)
    ap.add_argument("--sop")
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--kill", type=int)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as stubs:
        pb = generate_stubs(args.proto_dir, Path(stubs))
        channel = grpc.insecure_channel(args.addr, options=[("grpc.max_receive_message_length", 64 << 20)])
        facts = calls(args, pb, channel) if args.scenario == "calls" else searches(args, pb, channel)
        print(json.dumps(facts))


if __name__ == "__main__":
    run_checks(main)
