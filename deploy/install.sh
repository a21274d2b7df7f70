#!/usr/bin/env bash
# Builds release binaries and installs berth system-wide:
#   /usr/local/bin/{berthd,berth}, /etc/berth/berthd.toml (kept if present),
#   systemd units berthd.service + berthd.socket, and the `berth` group for socket access.
# Usage: sudo deploy/install.sh [--enable]   (--enable starts the socket and service)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
# berthd embeds the default `local` volume driver, a WebAssembly component built first.
plugins/build.sh --locked >/dev/null
cargo build --release --locked --bins -p berth-core -p berth-cli
target=${CARGO_TARGET_DIR:-target}/release
install -D -m 0755 "$target/berthd" "$PREFIX/bin/berthd"
install -D -m 0755 "$target/berth-shim" "$PREFIX/bin/berth-shim"
install -D -m 0755 "$target/berth" "$PREFIX/bin/berth"
install -d -m 0755 /etc/berth
[ -e /etc/berth/berthd.toml ] || install -m 0644 deploy/berthd.toml /etc/berth/berthd.toml
install -D -m 0644 README.md "$PREFIX/share/doc/berth/README.md"
getent group berth >/dev/null || groupadd --system berth

if [ -d /run/systemd/system ]; then
    install -m 0644 deploy/berthd.service deploy/berthd.socket /etc/systemd/system/
    systemctl daemon-reload
    if [ "${1:-}" = "--enable" ]; then
        systemctl enable --now berthd.socket berthd.service
    fi
    echo "installed; start with: systemctl enable --now berthd.socket berthd.service"
else
    echo "installed; no systemd here: start with: $PREFIX/bin/berthd &"
fi
"$PREFIX/bin/berth" completion bash > /etc/bash_completion.d/berth 2>/dev/null || true
