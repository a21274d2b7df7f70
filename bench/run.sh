#!/usr/bin/env bash
# The benchmark report from a clean checkout, in one command (as root):
#   bench/run.sh            every scenario, full size (about 10 minutes with the peers, once built)
#   bench/run.sh --quick    fewer rounds and smaller sizes (about 2 minutes once built)
#   bench/run.sh --no-peers berth alone
# Installs the peers from Debian (docker.io, podman, runc) and what the scenarios use
# (docker-registry, busybox-static, iptables, nftables), builds the Wasm drivers and the
# release binaries, runs `berth-bench all` and writes bench/results/report.md with SVG plots
# in bench/results/plots/. Every daemon, registry, container and image it makes goes away
# when it ends; dockerd runs on its own data root and socket, podman on its own storage.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh: run as root (every engine needs it)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

echo "==> installing the peers and the scenarios' tools"
apt-get update -qq
apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config ca-certificates \
    docker.io podman runc docker-registry busybox-static iptables nftables iproute2 >/dev/null
rustup target add wasm32-wasip2 >/dev/null

echo "==> building the Wasm drivers and the release binaries"
plugins/build.sh --locked >/dev/null
cargo build --release --locked --workspace --bins
target=${CARGO_TARGET_DIR:-target}/release

echo "==> berth-bench all $*"
"$target/berth-bench" --bin-dir "$target" --out-dir bench/results all "$@"
echo "==> report: bench/results/report.md"
