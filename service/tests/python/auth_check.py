#!/usr/bin/env python3
"""Checks the gRPC port's security from Python: bearer tokens and roles, TLS, client certificates.

Used by service/tests/auth_grpc.rs, which starts `diptych serve` with a tokens file (and TLS
files) it made; stubs come from proto/ through grpcio-tools as in client_check.py. Scenarios:

  roles   every RPC with no token, a wrong token, a malformed header, and each role's token
  tls     server TLS: a token over TLS works, plaintext does not reach the API
  mtls    client certificates: mapped to a role, unmapped, missing, from another CA
  closed  no tokens file on a non-loopback address: every call refused, health still answers

Exits 0 when every check passes and prints one JSON line of facts; otherwise prints what failed.
"""

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

try:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_tools import protoc
except ImportError as missing:  # pragma: no cover - environment problem, not a test failure
    sys.exit(f"missing Python package ({missing}); create the venv with `make deps-py`")

CHECKS = []
# Every status message the server sent, to check none carries a token.
MESSAGES = []

RPCS = [
    "Encode",
    "Decompose",
    "GetModelCard",
    "GetIndexStats",
    "GetCapabilities",
    "Ingest",
    "Delete",
    "Search",
    "Watch",
]
ALLOWED = {
    "ingest": {"Ingest", "GetCapabilities"},
    "search": {"Search", "Watch", "Encode", "Decompose", "GetModelCard", "GetCapabilities"},
    "admin": set(RPCS),
}
NEEDS = {  # the role names the PERMISSION_DENIED message must give
    "Ingest": "ingest or admin",
    "Delete": "admin",
    "GetIndexStats": "admin",
}
for name in ["Encode", "Decompose", "GetModelCard", "Search", "Watch"]:
    NEEDS[name] = "search or admin"


def check(condition, what):
    """Records a check; raises with `what` when it fails."""
    if not condition:
        raise AssertionError(what)
    CHECKS.append(what)


def generate_stubs(proto_dir: Path, out_dir: Path):
    protos = sorted(str(p) for p in (proto_dir / "diptych" / "v1").glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    )
    check(code == 0, "grpc_tools.protoc generated the Python stubs")
    sys.path.insert(0, str(out_dir))
    modules = {}
    for name in ["common", "images", "info", "ingest", "search"]:
        modules[name] = importlib.import_module(f"diptych.v1.{name}_pb2")
        modules[name + "_grpc"] = importlib.import_module(f"diptych.v1.{name}_pb2_grpc")
    return modules


def calls(pb, channel, dicom):
    """One callable per RPC: metadata -> None (raises grpc.RpcError when refused)."""
    common = pb["common"]
    image = pb["images_grpc"].ImageServiceStub(channel)
    info = pb["info_grpc"].InfoServiceStub(channel)
    ingest = pb["ingest_grpc"].IngestServiceStub(channel)
    search = pb["search_grpc"].SearchServiceStub(channel)
    images, info_pb, ingest_pb, search_pb = pb["images"], pb["info"], pb["ingest"], pb["search"]
    timeout = 30

    def source():
        return common.ImageInput(dicom=dicom)

    def watch(md):
        stream = search.Watch(search_pb.WatchRequest(), metadata=md, timeout=1.5)
        try:
            next(iter(stream))
        except grpc.RpcError as error:
            # An admitted Watch stays open until the deadline: that is success here.
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        except StopIteration:
            pass

    def ingest_one(md):
        answer = ingest.Ingest(iter([ingest_pb.IngestRequest(dicom=dicom, client_ref="auth")]), metadata=md, timeout=timeout)
        check(answer.accepted + answer.duplicates == 1, f"Ingest took the instance: {answer}")

    def delete(md):
        try:
            ingest.Delete(
                ingest_pb.DeleteRequest(target=common.DicomRef(sop_instance_uid="1.2.826.0.1.3680043.99.1")), metadata=md, timeout=timeout
            )
        except grpc.RpcError as error:
            # Nothing has this UID: NOT_FOUND comes from the handler, so the gate let it through.
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise

    return {
        "Encode": lambda md: image.Encode(images.EncodeRequest(image=source()), metadata=md, timeout=timeout),
        "Decompose": lambda md: image.Decompose(
            images.DecomposeRequest(image=source(), format=common.IMAGE_FORMAT_PNG), metadata=md, timeout=timeout
        ),
        "GetModelCard": lambda md: info.GetModelCard(info_pb.GetModelCardRequest(), metadata=md, timeout=timeout),
        "GetIndexStats": lambda md: info.GetIndexStats(info_pb.GetIndexStatsRequest(), metadata=md, timeout=timeout),
        "GetCapabilities": lambda md: info.GetCapabilities(info_pb.GetCapabilitiesRequest(), metadata=md, timeout=timeout),
        "Ingest": ingest_one,
        "Delete": delete,
        "Search": lambda md: search.Search(
            search_pb.SearchRequest(query=search_pb.Query(image=source()), mode=common.SEARCH_MODE_COMBINED, top_k=3),
            metadata=md,
            timeout=timeout,
        ),
        "Watch": watch,
    }


def outcome(call, metadata):
    """(status code, details) of one call; details recorded for the no-token-in-messages check."""
    try:
        call(metadata)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        details = error.details() or ""
        MESSAGES.append(details)
        return error.code(), details


def bearer(token):
    return [("authorization", f"Bearer {token}")]


def open_services_answer(channel, what):
    """Health and reflection answer without credentials."""
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    check(status == health_pb2.HealthCheckResponse.SERVING, f"{what}: health answers SERVING without credentials")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for a in answers for s in a.list_services_response.service}
    check("diptych.v1.SearchService" in names, f"{what}: reflection lists the API without credentials")


def expect_refused(code, details, expected, fragments, what):
    check(code == expected, f"{what}: {code} is {expected} ({details!r})")
    for fragment in fragments:
        check(fragment in details, f"{what}: the message says {fragment!r}: {details!r}")


def roles(args, pb):
    tokens = json.loads(Path(args.tokens).read_text())
    channel = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(channel).result(timeout=30)
    open_services_answer(channel, "tokens file")
    rpc = calls(pb, channel, Path(args.dicom).read_bytes())
    wrong = tokens["wrong"]
    for name in RPCS:
        code, details = outcome(rpc[name], [])
        expect_refused(code, details, grpc.StatusCode.UNAUTHENTICATED, ["authorization: Bearer", NEEDS.get(name, "ingest, search or admin")], f"{name} without a token")
        code, details = outcome(rpc[name], bearer(wrong))
        expect_refused(code, details, grpc.StatusCode.UNAUTHENTICATED, ["not known"], f"{name} with a wrong token")
        # The token without the `Bearer` scheme, as a careless client might send it.
        code, details = outcome(rpc[name], [("authorization", tokens["admin"])])
        expect_refused(code, details, grpc.StatusCode.UNAUTHENTICATED, ["Bearer <token>"], f"{name} with a malformed header")
        for role in ["ingest", "search", "admin"]:
            code, details = outcome(rpc[name], bearer(tokens[role]))
            if name in ALLOWED[role]:
                check(code == grpc.StatusCode.OK, f"{name} with the {role} token is answered: {code} {details!r}")
            else:
                expect_refused(
                    code, details, grpc.StatusCode.PERMISSION_DENIED, [f"role {role}", f"needs role {NEEDS[name]}"], f"{name} with the {role} token"
                )
    secrets = [tokens[k] for k in ["ingest", "search", "admin", "wrong"]]
    leaks = [m for m in MESSAGES if any(s in m for s in secrets)]
    check(not leaks, f"no status message carries a token: {leaks!r}")
    return {"rpcs": len(RPCS), "refusals": len(MESSAGES)}


def tls_credentials(args, cert=None, key=None):
    ca = Path(args.ca).read_bytes()
    if cert:
        return grpc.ssl_channel_credentials(ca, Path(key).read_bytes(), Path(cert).read_bytes())
    return grpc.ssl_channel_credentials(ca)


def secure_channel(args, credentials):
    # The server certificate names localhost; the address is 127.0.0.1.
    return grpc.secure_channel(args.addr, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def unreachable(channel, pb, what):
    """A channel whose calls never reach the API (no TLS, or a refused client certificate)."""
    info = pb["info_grpc"].InfoServiceStub(channel)
    try:
        info.GetCapabilities(pb["info"].GetCapabilitiesRequest(), timeout=5)
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.UNAVAILABLE, f"{what}: the call fails with UNAVAILABLE ({error.code()}, {error.details()!r})")
        return
    raise AssertionError(f"{what}: the call succeeded")


def tls(args, pb):
    channel = secure_channel(args, tls_credentials(args))
    grpc.channel_ready_future(channel).result(timeout=30)
    open_services_answer(channel, "TLS")
    rpc = calls(pb, channel, Path(args.dicom).read_bytes())
    for name in ["Search", "GetModelCard"]:
        code, details = outcome(rpc[name], bearer(args.token))
        check(code == grpc.StatusCode.OK, f"{name} over TLS with the search token: {code} {details!r}")
    code, details = outcome(rpc["Search"], [])
    expect_refused(code, details, grpc.StatusCode.UNAUTHENTICATED, ["authorization: Bearer"], "Search over TLS without a token")
    code, details = outcome(rpc["Ingest"], bearer(args.token))
    expect_refused(code, details, grpc.StatusCode.PERMISSION_DENIED, ["needs role ingest or admin"], "Ingest over TLS with the search token")
    unreachable(grpc.insecure_channel(args.addr), pb, "plaintext to the TLS port")
    return {}


def mtls(args, pb):
    dicom = Path(args.dicom).read_bytes()
    # The certificate mapped to caller "gateway" (role search): no token needed.
    channel = secure_channel(args, tls_credentials(args, args.client_cert, args.client_key))
    grpc.channel_ready_future(channel).result(timeout=30)
    open_services_answer(channel, "mutual TLS")
    rpc = calls(pb, channel, dicom)
    for name in ["Search", "Encode", "GetCapabilities"]:
        code, details = outcome(rpc[name], [])
        check(code == grpc.StatusCode.OK, f"{name} with the mapped client certificate: {code} {details!r}")
    for name in ["Ingest", "Delete"]:
        code, details = outcome(rpc[name], [])
        expect_refused(code, details, grpc.StatusCode.PERMISSION_DENIED, ['"gateway" has role search'], f"{name} with the mapped client certificate")
    # A certificate of the same CA that no caller maps: identity without a role, unless a token.
    stranger = secure_channel(args, tls_credentials(args, args.stranger_cert, args.stranger_key))
    rpc = calls(pb, stranger, dicom)
    code, details = outcome(rpc["Search"], [])
    expect_refused(code, details, grpc.StatusCode.PERMISSION_DENIED, ["CN=stranger", "client_cert_cn"], "Search with an unmapped certificate")
    code, details = outcome(rpc["GetIndexStats"], bearer(args.token))
    check(code == grpc.StatusCode.OK, f"GetIndexStats with an unmapped certificate and the admin token: {code} {details!r}")
    unreachable(secure_channel(args, tls_credentials(args)), pb, "TLS without a client certificate")
    unreachable(secure_channel(args, tls_credentials(args, args.rogue_cert, args.rogue_key)), pb, "a client certificate of another CA")
    unreachable(grpc.insecure_channel(args.addr), pb, "plaintext to the mutual-TLS port")
    check(args.token not in " ".join(MESSAGES), "no status message carries the token")
    return {}


def closed(args, pb):
    channel = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(channel).result(timeout=30)
    open_services_answer(channel, "no tokens, non-loopback")
    rpc = calls(pb, channel, Path(args.dicom).read_bytes())
    for name in RPCS:
        code, details = outcome(rpc[name], [])
        expect_refused(code, details, grpc.StatusCode.UNAUTHENTICATED, ["tokens_file"], f"{name} on a closed server")
    return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["roles", "tls", "mtls", "closed"])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--proto-dir", required=True, type=Path)
    parser.add_argument("--dicom", required=True, help="a DICOM file to encode, search and ingest")
    parser.add_argument("--tokens", help="roles: JSON file {ingest, search, admin, wrong: token}")
    parser.add_argument("--token", help="tls: the search token; mtls: the admin token")
    parser.add_argument("--ca")
    parser.add_argument("--client-cert")
    parser.add_argument("--client-key")
    parser.add_argument("--stranger-cert")
    parser.add_argument("--stranger-key")
    parser.add_argument("--rogue-cert")
    parser.add_argument("--rogue-key")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        pb = generate_stubs(args.proto_dir, Path(out))
        try:
            facts = {"roles": roles, "tls": tls, "mtls": mtls, "closed": closed}[args.scenario](args, pb)
        except AssertionError as failed:
            print(f"FAILED: {failed}\npassed before it: {len(CHECKS)}", file=sys.stderr)
            sys.exit(1)
    facts.update(scenario=args.scenario, checks=len(CHECKS))
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
