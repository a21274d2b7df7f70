#!/usr/bin/env bash
# The whole berth test suite: builds every binary, then runs unit and end-to-end tests.
# Root-only tests (namespaces, mounts, cgroups, netns) skip with a message when not root,
# except under CI=true, where a skip is a failure. As root, a leak check compares mounts,
# container cgroups and shims before and after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The guest side first: the plugin SDK and reference plugins, as wasm32-wasip2 components
# (berthd embeds plugins/dist/local.wasm), and their unit tests on the host.
plugins/build.sh --locked
cargo build --workspace --bins --locked
(cd plugins && cargo test --workspace --all-features --locked)
# The same driver in Python (componentize-py, from PyPI), and its tests under wasmtime-py.
sdk/examples/python-volume/build.sh
sdk/examples/python-volume/test.sh
before=""
if [ "$(id -u)" = 0 ]; then
    before=$(mktemp)
    tests/leakcheck.sh snapshot "$before"
fi
cargo test --workspace --locked
if [ -n "$before" ]; then
    tests/leakcheck.sh compare "$before"
    rm -f "$before"
fi
