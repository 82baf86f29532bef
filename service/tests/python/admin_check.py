#!/usr/bin/env python3
"""The AdminService from Python's grpcio, for service/tests/admin_api.rs.

  roles --tokens FILE        every AdminService RPC without a token (UNAUTHENTICATED), with the
                             ingest and search tokens (PERMISSION_DENIED naming `admin`), and with
                             the admin token (admitted: whatever the handler answers, never
                             UNAUTHENTICATED or PERMISSION_DENIED)
  call METHOD JSON --token T one call; prints {"ok": <answer as JSON>} or
                             {"code": "<STATUS>", "message": "..."} on one line

Stubs come from proto/ through grpcio-tools, into --stubs (made once, reused).
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

try:
    import grpc
    from google.protobuf import json_format
    from grpc_tools import protoc
except ImportError as missing:  # pragma: no cover - environment problem, not a test failure
    sys.exit(f"missing Python package ({missing}); create the venv with `make deps-py`")

REQUESTS = {
    "ListPeers": "ListPeersRequest",
    "AddPeer": "AddPeerRequest",
    "RemovePeer": "RemovePeerRequest",
    "ListKosDestinations": "ListKosDestinationsRequest",
    "AddKosDestination": "AddKosDestinationRequest",
    "RemoveKosDestination": "RemoveKosDestinationRequest",
    "EchoDestination": "EchoDestinationRequest",
    "ListAssociations": "ListAssociationsRequest",
    "Backfill": "BackfillRequest",
}

# Server-streaming methods: the answer is read to its end (errors come while reading).
STREAMING = {"Backfill"}


def stubs(proto_dir: Path, out_dir: Path):
    if not (out_dir / "diptych" / "v1" / "admin_pb2_grpc.py").is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        protos = sorted(str(p) for p in (proto_dir / "diptych" / "v1").glob("*.proto"))
        include = str(Path(protoc.__file__).parent / "_proto")
        code = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos])
        if code != 0:
            sys.exit("grpc_tools.protoc could not generate the Python stubs")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("diptych.v1.admin_pb2"), importlib.import_module("diptych.v1.admin_pb2_grpc")


def invoke(pb, stub, method, body, token):
    request = json_format.Parse(body, getattr(pb, REQUESTS[method])())
    metadata = [("authorization", f"Bearer {token}")] if token else []
    answer = getattr(stub, method)(request, metadata=metadata, timeout=30)
    return list(answer)[-1] if method in STREAMING else answer


def roles(pb, stub, tokens):
    checked = 0
    for method in REQUESTS:
        for role in [None, "ingest", "search", "admin"]:
            try:
                invoke(pb, stub, method, "{}", tokens[role] if role else None)
                code, message = grpc.StatusCode.OK, ""
            except grpc.RpcError as error:
                code, message = error.code(), error.details() or ""
            if role is None:
                ok = code == grpc.StatusCode.UNAUTHENTICATED
            elif role == "admin":
                ok = code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            else:
                ok = code == grpc.StatusCode.PERMISSION_DENIED and "admin" in message
            if not ok:
                sys.exit(f"{method} as {role or 'nobody'}: got {code.name} {message!r}")
            checked += 1
    print(json.dumps({"checked": checked}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["roles", "call"])
    parser.add_argument("method", nargs="?")
    parser.add_argument("body", nargs="?", default="{}")
    parser.add_argument("--addr", required=True)
    parser.add_argument("--proto-dir", required=True, type=Path)
    parser.add_argument("--stubs", required=True, type=Path)
    parser.add_argument("--token")
    parser.add_argument("--tokens", type=Path)
    args = parser.parse_args()
    pb, pb_grpc = stubs(args.proto_dir, args.stubs)
    stub = pb_grpc.AdminServiceStub(grpc.insecure_channel(args.addr))
    if args.scenario == "roles":
        roles(pb, stub, json.loads(args.tokens.read_text()))
        return
    try:
        answer = invoke(pb, stub, args.method, args.body, args.token)
        print(json.dumps({"ok": json_format.MessageToDict(answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)}))
    except grpc.RpcError as error:
        print(json.dumps({"code": error.code().name, "message": error.details() or ""}))


if __name__ == "__main__":
    main()
