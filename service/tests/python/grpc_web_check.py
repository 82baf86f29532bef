#!/usr/bin/env python3
"""Checks gRPC-Web on the gRPC port from outside a browser, byte for byte, over HTTP/1.1.

Used by service/tests/grpc_web.rs, which starts `diptych serve` with a tokens file and
`grpc.web_allowed_origins = [ALLOWED]`. Messages are encoded with stubs generated from proto/
(grpcio-tools, as auth_check.py); the gRPC-Web framing (a 5-byte header per message, trailers
in a frame flagged 0x80, base64 for grpc-web-text) is written here from the protocol's
description, so nothing of the server's own stack is trusted.

Checks:
  - application/grpc-web+proto and application/grpc-web-text both answer GetCapabilities;
  - the same tokens and roles as native gRPC: no token UNAUTHENTICATED, the search role
    PERMISSION_DENIED on GetIndexStats (naming admin), the admin role admitted;
  - a malformed filter is INVALID_ARGUMENT with the parser's message;
  - CORS: a preflight from the allowed origin is admitted (origin echoed, the gRPC-Web headers
    allowed, grpc-status exposed), one from another origin gets no Access-Control-Allow-Origin.

Exits 0 when every check passes and prints one JSON line of facts.
"""

import argparse
import base64
import http.client
import importlib
import json
import re
import struct
import sys
import tempfile
import urllib.parse
from pathlib import Path

try:
    from grpc_tools import protoc
except ImportError as missing:  # pragma: no cover - environment problem, not a test failure
    sys.exit(f"missing Python package ({missing}); create the venv with `make deps-py`")

CHECKS = []


def check(condition, what):
    """Records a check; raises with `what` when it fails."""
    if not condition:
        raise AssertionError(what)
    CHECKS.append(what)


def generate_stubs(proto_dir: Path, out_dir: Path):
    protos = sorted(str(p) for p in (proto_dir / "diptych" / "v1").glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", *protos])
    check(code == 0, "grpc_tools.protoc generated the Python messages")
    sys.path.insert(0, str(out_dir))
    return {name: importlib.import_module(f"diptych.v1.{name}_pb2") for name in ["common", "info", "search"]}


def frame(message: bytes, flag: int = 0) -> bytes:
    return struct.pack(">BI", flag, len(message)) + message


def unframe(body: bytes):
    """The data messages and the trailers (a dict) of a gRPC-Web response body."""
    messages, trailers = [], {}
    while body:
        flag, length = struct.unpack(">BI", body[:5])
        payload, body = body[5 : 5 + length], body[5 + length :]
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if ":" in line:
                    key, value = line.split(":", 1)
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


def call(addr, method, request: bytes, token=None, text=False, origin=None):
    """POSTs one unary gRPC-Web call; returns (HTTP status, headers, messages, grpc status)."""
    content_type = "application/grpc-web-text" if text else "application/grpc-web+proto"
    body = frame(request)
    if text:
        body = base64.b64encode(body)
    headers = {"content-type": content_type, "x-grpc-web": "1", "accept": content_type}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if origin:
        headers["origin"] = origin
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", method, body=body, headers=headers)
    response = connection.getresponse()
    raw = response.read()
    head = {k.lower(): v for k, v in response.getheaders()}
    connection.close()
    if text:
        # Each chunk the server sent is base64 of its own, padding included: decode them apart.
        raw = b"".join(base64.b64decode(part) for part in re.findall(rb"[A-Za-z0-9+/]+={0,2}", raw))
    messages, trailers = unframe(raw)
    # A call refused before any message is "trailers-only": the status is in the headers.
    status = trailers.get("grpc-status", head.get("grpc-status"))
    message = urllib.parse.unquote(trailers.get("grpc-message", head.get("grpc-message", "")))
    return response.status, head, messages, (int(status) if status is not None else None, message)


def preflight(addr, method, origin):
    host, port = addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(
        "OPTIONS",
        method,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web,x-user-agent",
        },
    )
    response = connection.getresponse()
    response.read()
    head = {k.lower(): v for k, v in response.getheaders()}
    connection.close()
    return response.status, head


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--proto-dir", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True, help="JSON: role -> token")
    parser.add_argument("--allowed-origin", required=True)
    args = parser.parse_args()
    tokens = json.loads(args.tokens.read_text())
    with tempfile.TemporaryDirectory() as out:
        pb = generate_stubs(args.proto_dir, Path(out))
        caps_method = "/diptych.v1.InfoService/GetCapabilities"
        empty = pb["info"].GetCapabilitiesRequest().SerializeToString()

        for text in (False, True):
            kind = "grpc-web-text" if text else "grpc-web+proto"
            status, head, messages, (code, message) = call(args.addr, caps_method, empty, tokens["search"], text)
            check(status == 200 and code == 0, f"{kind}: GetCapabilities answers OK (HTTP {status}, grpc {code} {message})")
            check(head.get("content-type", "").startswith(f"application/{kind}"), f"{kind}: answered in {kind}")
            caps = pb["info"].Capabilities.FromString(messages[0])
            check(caps.model_id and caps.max_top_k > 0, f"{kind}: the capabilities decode ({caps.model_id})")

        _, _, _, (code, message) = call(args.addr, caps_method, empty)
        check(code == 16, f"no token: UNAUTHENTICATED, as native gRPC (got {code} {message})")
        _, _, _, (code, message) = call(args.addr, caps_method, empty, "not-a-token-of-anyone-here")
        check(code == 16, f"a wrong token: UNAUTHENTICATED (got {code})")
        stats_method = "/diptych.v1.InfoService/GetIndexStats"
        stats_request = pb["info"].GetIndexStatsRequest().SerializeToString()
        _, _, _, (code, message) = call(args.addr, stats_method, stats_request, tokens["search"])
        check(code == 7 and "admin" in message, f"the search role: PERMISSION_DENIED naming admin (got {code} {message})")
        _, _, messages, (code, message) = call(args.addr, stats_method, stats_request, tokens["admin"], text=True)
        check(code == 0 and len(messages) == 1, f"the admin role: GetIndexStats answers (got {code} {message})")

        card_request = pb["info"].GetModelCardRequest().SerializeToString()
        _, _, messages, _ = call(args.addr, "/diptych.v1.InfoService/GetModelCard", card_request, tokens["search"])
        card = pb["info"].ModelCard.FromString(messages[0])
        grid = card.grid_rows * card.grid_columns
        code = pb["common"].Code(grid_rows=card.grid_rows, grid_columns=card.grid_columns, indices=[0] * grid)
        search = pb["search"].SearchRequest(
            query=pb["search"].Query(codes=pb["common"].SliceCodes(normal=code, abnormal=code)),
            mode=pb["common"].SEARCH_MODE_NORMAL,
            filter="modality:(MR",
        )
        _, _, _, (code, message) = call(args.addr, "/diptych.v1.SearchService/Search", search.SerializeToString(), tokens["search"])
        check(code == 3 and "filter" in message.lower(), f"a malformed filter: INVALID_ARGUMENT with the parser's message (got {code} {message})")

        status, head = preflight(args.addr, caps_method, args.allowed_origin)
        check(status == 200, f"the preflight from {args.allowed_origin} is answered (HTTP {status})")
        check(head.get("access-control-allow-origin") == args.allowed_origin, f"the allowed origin is echoed: {head}")
        allowed_headers = head.get("access-control-allow-headers", "").lower()
        check(all(h in allowed_headers for h in ["authorization", "content-type", "x-grpc-web"]), f"the gRPC-Web request headers are allowed: {allowed_headers}")
        _, head, _, (code, _) = call(args.addr, caps_method, empty, tokens["search"], origin=args.allowed_origin)
        check(code == 0 and head.get("access-control-allow-origin") == args.allowed_origin, "a call from the allowed origin may be read")
        check("grpc-status" in head.get("access-control-expose-headers", "").lower(), "grpc-status is exposed to the page")
        stranger = "http://stranger.example:3000"
        status, head = preflight(args.addr, caps_method, stranger)
        check("access-control-allow-origin" not in head, f"a preflight from {stranger} is not admitted: {head}")
        _, head, _, _ = call(args.addr, caps_method, empty, tokens["search"], origin=stranger)
        check("access-control-allow-origin" not in head, "a call from another origin may not be read by its page")

    print(json.dumps({"checks": len(CHECKS)}))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}\npassed before it: {CHECKS}")
        sys.exit(1)
