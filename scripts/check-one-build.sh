#!/usr/bin/env bash
# After `cargo test --workspace --release`, `make run`'s build of the service must find everything
# already built: one build serves both commands (a newcomer's `make run` after `make test` starts
# at once instead of compiling the service's whole dependency graph again).
#
# Cargo builds a crate again whenever its enabled features differ between the two builds (the
# workspace build unifies the features of every member and of the dev-dependencies, so
# service/Cargo.toml turns the same ones on: its "One build" block), and a workspace crate again
# when it is selected on the command line in one build and not in the other (so `make run` names
# the service's workspace dependencies too: the Makefile's SERVICE_PACKAGES, passed here as the
# arguments). This script fails, naming the crates, when the two builds drift apart.
#
# Usage: check-one-build.sh -p PACKAGE...   (after `cargo test --workspace --release`)
set -euo pipefail
if [[ $# -eq 0 ]]; then
  echo "usage: $0 -p PACKAGE... (the packages 'make run' builds)" >&2
  exit 2
fi
built=$(cargo build --release "$@" --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and not m.get("fresh", True):
        print(m["package_id"])')
if [[ -n "$built" ]]; then
  echo "check-one-build: 'cargo build --release $*' compiled again after the workspace test build:" >&2
  while read -r crate; do echo "  $crate" >&2; done <<<"$built"
  echo "Their features differ between the two builds: add what the workspace turns on to the" >&2
  echo "'One build' block of service/Cargo.toml (compare 'cargo tree -e features' of both)." >&2
  exit 1
fi
echo "check-one-build: 'cargo build --release $*' after the test build compiled nothing"
