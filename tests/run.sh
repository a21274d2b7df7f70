#!/usr/bin/env bash
# The whole berth test suite: builds every binary, then runs unit and end-to-end tests.
# Root-only tests (namespaces, mounts, cgroups, netns) skip with a message when not root,
# except under CI=true, where a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
cargo test --workspace --locked
