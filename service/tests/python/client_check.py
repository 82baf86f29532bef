#!/usr/bin/env python3
"""Checks a running `diptych serve` from Python, with stubs generated from proto/ by grpcio-tools.

A client nobody in this project wrote: the official grpcio runtime, health-checking and
reflection packages, and stubs that grpc_tools.protoc generates from the public .proto files at
run time. Used by service/tests/serve_grpc.rs; runnable by hand against any server:

    ~/.cache/diptych/py-venv/bin/python service/tests/python/client_check.py \
        --addr 127.0.0.1:50051 --proto-dir proto --dicom slice.dcm \
        --raw slice.u16 --rows 192 --cols 160

Exits 0 when every check passes and prints one JSON line of facts; otherwise prints what failed.
"""

import argparse
import concurrent.futures
import importlib
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

try:
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_tools import protoc
except ImportError as missing:  # pragma: no cover - environment problem, not a test failure
    sys.exit(
        f"missing Python package ({missing}); create the venv with `make deps-py` "
        "(grpcio grpcio-tools grpcio-health-checking grpcio-reflection numpy)"
    )

CHECKS = []


def check(condition, what):
    """Records a check; raises with `what` when it fails."""
    if not condition:
        raise AssertionError(what)
    CHECKS.append(what)


def generate_stubs(proto_dir: Path, out_dir: Path):
    """Runs protoc (from grpcio-tools) on proto/diptych/v1/*.proto into out_dir."""
    protos = sorted(str(p) for p in (proto_dir / "diptych" / "v1").glob("*.proto"))
    check(len(protos) >= 5, f"found the diptych.v1 proto files in {proto_dir}")
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *protos,
        ]
    )
    check(code == 0, "grpc_tools.protoc generated the Python stubs")
    sys.path.insert(0, str(out_dir))
    names = ["common", "images", "info", "ingest", "search"]
    modules = {}
    for name in names:
        modules[name] = importlib.import_module(f"diptych.v1.{name}_pb2")
        modules[name + "_grpc"] = importlib.import_module(f"diptych.v1.{name}_pb2_grpc")
    return modules


def expect_error(call, code, fragment, what):
    """Calls `call` and checks it fails with `code` and a message containing `fragment`."""
    try:
        call()
    except grpc.RpcError as error:
        check(error.code() == code, f"{what}: status {error.code()} is {code}")
        check(fragment in (error.details() or ""), f"{what}: message names {fragment!r}: {error.details()!r}")
        return error.details()
    raise AssertionError(f"{what}: the call succeeded but must fail with {code}")


def png_size(data: bytes):
    """Width, height and colour type from a PNG's IHDR chunk."""
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG signature")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[25]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--proto-dir", required=True, type=Path)
    parser.add_argument("--dicom", required=True, type=Path, help="a single-frame MR DICOM file")
    parser.add_argument("--raw", required=True, type=Path, help="the same pixels as little-endian uint16")
    parser.add_argument("--rows", required=True, type=int)
    parser.add_argument("--cols", required=True, type=int)
    parser.add_argument("--provider", default="", help="expected execution provider, if known")
    parser.add_argument("--max-message-bytes", type=int, default=0, help="the server's limit, if known")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as stub_dir:
        pb = generate_stubs(args.proto_dir, Path(stub_dir))
        common, images, info = pb["common"], pb["images"], pb["info"]
        channel = grpc.insecure_channel(args.addr)
        grpc.channel_ready_future(channel).result(timeout=args.timeout)

        # Health: the server and the model-serving services are SERVING (the test waited).
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", "diptych.v1.ImageService", "diptych.v1.InfoService"]:
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            check(status == health_pb2.HealthCheckResponse.SERVING, f"health of {service!r} is SERVING")

        # Reflection: the services are listed and their descriptors served.
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            reflection.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="diptych.v1.ImageService"),
                    ]
                )
            )
        )
        listed = {s.name for s in answers[0].list_services_response.service}
        for name in [
            "diptych.v1.AdminService",
            "diptych.v1.ImageService",
            "diptych.v1.InfoService",
            "diptych.v1.IngestService",
            "diptych.v1.SearchService",
            "grpc.health.v1.Health",
        ]:
            check(name in listed, f"reflection lists {name}")
        check(
            len(answers[1].file_descriptor_response.file_descriptor_proto) >= 1,
            "reflection serves the descriptor of diptych.v1.ImageService",
        )

        info_stub = pb["info_grpc"].InfoServiceStub(channel)
        card = info_stub.GetModelCard(info.GetModelCardRequest())
        check(card.model_id != "", "the model card has a model id")
        size, grid_rows, grid_cols, k = card.input_size, card.grid_rows, card.grid_columns, card.codebook_size
        check(size > 0 and grid_rows > 0 and grid_cols > 0 and k >= 2 and card.code_dim >= 1, "the model card has sizes")
        check(card.abnormal_labels[0] == "background" and len(card.abnormal_labels) >= 2, "abnormal labels start with background")
        check(card.normal_labels[0] == "background", "normal labels start with background")
        check(json.loads(card.preprocess_json)["input_size"] == size, "preprocess_json matches input_size")
        check(len(card.encoder_sha256) == 64 and len(card.decoder_sha256) == 64, "graph checksums are SHA-256")
        labels = len(card.abnormal_labels)

        caps = info_stub.GetCapabilities(info.GetCapabilitiesRequest())
        check(caps.execution_provider in ("cpu", "cuda"), f"execution provider reported: {caps.execution_provider!r}")
        if args.provider:
            check(caps.execution_provider == args.provider, f"execution provider is {args.provider}")
        check(caps.model_id == card.model_id, "capabilities name the serving model")
        check(caps.max_message_bytes >= 1024, "a message size limit is reported")
        if args.max_message_bytes:
            check(caps.max_message_bytes == args.max_message_bytes, "the configured message limit is reported")
        stats = info_stub.GetIndexStats(info.GetIndexStatsRequest())
        check(stats.records == 0 and stats.model_id == card.model_id, "an empty index of the serving model")

        image_stub = pb["images_grpc"].ImageServiceStub(channel)
        dicom_bytes = args.dicom.read_bytes()
        stored = np.fromfile(args.raw, dtype="<u2")
        check(stored.size == args.rows * args.cols, "the raw file holds rows × cols values")

        def dicom_input(data=dicom_bytes, frame=0):
            return common.ImageInput(dicom=data, frame=frame)

        def raw_input(pixel_type, data, rows=args.rows, cols=args.cols):
            return common.ImageInput(
                raw=common.RawPixels(rows=rows, columns=cols, pixel_type=pixel_type, data=data)
            )

        started = time.perf_counter()
        from_dicom = image_stub.Encode(images.EncodeRequest(image=dicom_input()))
        encode_ms = (time.perf_counter() - started) * 1e3
        codes = from_dicom.codes
        check(codes.model_id == card.model_id, "codes carry the serving model id")
        for code in (codes.normal, codes.abnormal):
            check((code.grid_rows, code.grid_columns) == (grid_rows, grid_cols), "codes have the model's grid")
            check(len(code.indices) == grid_rows * grid_cols, "one index per grid position")
            check(all(0 <= i < k for i in code.indices), "indices lie in [0, K)")
        check(0.0 <= from_dicom.abnormality <= 1.0, "abnormality lies in [0, 1]")
        check(len(from_dicom.abnormal_distance) == grid_rows * grid_cols, "one distance per grid position")

        # The same stored values as raw pixels, in two storage types, give the same answer.
        as_u16 = image_stub.Encode(
            images.EncodeRequest(image=raw_input(common.PIXEL_TYPE_UINT16, stored.astype("<u2").tobytes()))
        )
        as_f32 = image_stub.Encode(
            images.EncodeRequest(image=raw_input(common.PIXEL_TYPE_FLOAT32, stored.astype("<f4").tobytes()))
        )
        for other, name in ((as_u16, "uint16"), (as_f32, "float32")):
            check(other.codes == from_dicom.codes, f"raw {name} pixels encode exactly like the DICOM file")
            check(other.abnormality == from_dicom.abnormality, f"raw {name} pixels score like the DICOM file")

        # Concurrent requests (batched by the server) each get the single-request answer.
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(image_stub.Encode, images.EncodeRequest(image=dicom_input())) for _ in range(32)]
            answers = [f.result(timeout=args.timeout) for f in futures]
        check(all(a.codes == from_dicom.codes for a in answers), "32 concurrent Encodes agree with a single one")

        # Decompose, as PNG and as float32.
        png = image_stub.Decompose(images.DecomposeRequest(image=dicom_input(), format=common.IMAGE_FORMAT_PNG))
        check(png.codes == from_dicom.codes, "Decompose encodes like Encode")
        for name in ["input", "segmentation", "reconstruction", "normal_appearing"]:
            part = getattr(png, name)
            check((part.rows, part.columns) == (size, size), f"{name} is {size}×{size}")
            width, height, colour = png_size(part.png)
            check((width, height) == (size, size), f"{name} PNG is {size}×{size}")
            check(colour == (2 if name == "segmentation" else 0), f"{name} PNG colour type")
        raw = image_stub.Decompose(images.DecomposeRequest(image=dicom_input(), format=common.IMAGE_FORMAT_FLOAT32))
        model_input = np.frombuffer(raw.input.float32, dtype="<f4")
        check(model_input.size == size * size, "float32 input has S×S values")
        check(model_input.min() >= 0.0 and model_input.max() <= 1.0 and model_input.max() > 0.5, "model input lies in [0, 1]")
        seg = np.frombuffer(raw.segmentation.float32, dtype="<f4")
        check(seg.size == size * size, "the label map has S×S values")
        check(np.all(seg == np.round(seg)) and seg.min() >= 0 and seg.max() < labels, "labels are indices of abnormal_labels")
        for name in ["reconstruction", "normal_appearing"]:
            values = np.frombuffer(getattr(raw, name).float32, dtype="<f4")
            check(values.size == size * size and np.all(np.isfinite(values)), f"float32 {name} has S×S finite values")

        # Bad requests: INVALID_ARGUMENT naming the field.
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        expect_error(lambda: image_stub.Encode(images.EncodeRequest()), invalid, "image", "no image")
        expect_error(
            lambda: image_stub.Encode(images.EncodeRequest(image=raw_input(common.PIXEL_TYPE_UINT16, stored.tobytes()[:-2]))),
            invalid,
            "image.raw.data",
            "raw data one value short",
        )
        expect_error(
            lambda: image_stub.Encode(images.EncodeRequest(image=raw_input(common.PIXEL_TYPE_UNSPECIFIED, b"\0\0"))),
            invalid,
            "image.raw.pixel_type",
            "unspecified pixel type",
        )
        expect_error(
            lambda: image_stub.Encode(images.EncodeRequest(image=dicom_input(b"not a DICOM file, just text"))),
            invalid,
            "image.dicom",
            "bytes that are not DICOM",
        )
        expect_error(
            lambda: image_stub.Encode(images.EncodeRequest(image=dicom_input(frame=3))),
            invalid,
            "image.frame",
            "a frame the instance does not have",
        )
        expect_error(
            lambda: image_stub.Decompose(images.DecomposeRequest(image=dicom_input(), format=7)),
            invalid,
            "format",
            "an unknown image format",
        )

        # A request beyond the message limit is refused before it is decoded (tonic answers
        # OUT_OF_RANGE, "decoded message length too large").
        if args.max_message_bytes:
            oversized = np.zeros(args.max_message_bytes // 2 + 1024, dtype="<u2").tobytes()
            expect_error(
                lambda: image_stub.Encode(
                    images.EncodeRequest(image=raw_input(common.PIXEL_TYPE_UINT16, oversized, rows=1, cols=len(oversized) // 2))
                ),
                grpc.StatusCode.OUT_OF_RANGE,
                "too large",
                "a request beyond the message limit",
            )

        # Search and Ingest answer malformed requests with the field to fix (search_check.py
        # covers what they do with good ones).
        search_pb, ingest_pb = pb["search"], pb["ingest"]
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        search_stub = pb["search_grpc"].SearchServiceStub(channel)
        expect_error(lambda: search_stub.Search(search_pb.SearchRequest()), invalid, "query", "Search without a query")
        expect_error(
            lambda: search_stub.Search(search_pb.SearchRequest(query=search_pb.Query(image=dicom_input()))),
            invalid,
            "mode",
            "Search without a mode",
        )
        ingest_stub = pb["ingest_grpc"].IngestServiceStub(channel)
        expect_error(lambda: ingest_stub.Delete(ingest_pb.DeleteRequest()), invalid, "target", "Delete without a target")

        # UIDs are checked against DICOM's UID rule before anything is looked up (issue #10):
        # INVALID_ARGUMENT naming the field and the rule, never echoing the value.
        combined = common.SEARCH_MODE_COMBINED
        for hostile in ['1.2" OR study_instance_uid:*', 'x" OR *', "1.2:3", "1.(2)", "*", "1.2.\u00e9", "1..2", "1" * 10000, ""]:
            shown = repr(hostile[:24])
            indexed = common.SliceRef(sop_instance_uid=hostile)
            details = expect_error(
                lambda: search_stub.Search(search_pb.SearchRequest(query=search_pb.Query(indexed=indexed), mode=combined)),
                invalid,
                "query.indexed.sop_instance_uid: is",
                f"Search by the indexed UID {shown}",
            )
            check("1 to 64 characters" in details and " OR " not in details, f"the rule, not the value: {details!r}")
            composite = search_pb.CompositeQuery(
                normal_from=search_pb.CodeSource(image=dicom_input()),
                abnormal_from=search_pb.CodeSource(indexed=indexed),
            )
            expect_error(
                lambda: search_stub.Search(search_pb.SearchRequest(query=search_pb.Query(composite=composite), mode=combined)),
                invalid,
                "query.composite.abnormal_from.indexed.sop_instance_uid: is",
                f"a composite Search with the indexed UID {shown}",
            )
            for level in ["study_instance_uid", "series_instance_uid", "sop_instance_uid"]:
                expect_error(
                    lambda: ingest_stub.Delete(ingest_pb.DeleteRequest(target=common.DicomRef(**{level: hostile}))),
                    invalid,
                    f"target.{level}: is",
                    f"Delete of {level} {shown}",
                )

        # The server still answers after all the bad requests.
        again = image_stub.Encode(images.EncodeRequest(image=dicom_input()))
        check(again.codes == from_dicom.codes, "the server still answers, with the same codes")

        print(
            json.dumps(
                {
                    "checks": len(CHECKS),
                    "model_id": card.model_id,
                    "execution_provider": caps.execution_provider,
                    "input_size": size,
                    "grid": [grid_rows, grid_cols],
                    "abnormality": round(from_dicom.abnormality, 6),
                    "first_encode_ms": round(encode_ms, 2),
                }
            )
        )


def run_checks(main_function):
    """Runs a check script's main; a failed check exits 1 saying how many passed before it."""
    try:
        main_function()
    except AssertionError as failure:
        print(f"FAILED after {len(CHECKS)} passing checks: {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_checks(main)
