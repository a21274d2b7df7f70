#!/usr/bin/env bash
# From a fresh Debian machine to a running container: installs build dependencies, builds
# the release binaries, starts berthd on the default socket and data root, imports a busybox
# image and runs it.
# Run as root: sudo deploy/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "quickstart.sh: run as root (berthd manages namespaces and mounts)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

echo "==> installing build dependencies"
apt-get update -qq
# nftables and iproute2: the default `bridge` network's NAT and port forwards.
apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config ca-certificates busybox-static \
    nftables iproute2 >/dev/null
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

echo "==> building the default volume and network drivers (WebAssembly components berthd embeds)"
plugins/build.sh --locked >/dev/null
echo "==> building berthd and berth (release)"
cargo build --release --locked --bins -p berth-core -p berth-cli
target=${CARGO_TARGET_DIR:-target}/release
install -m 0755 "$target/berthd" "$target/berth-shim" "$target/berth" /usr/local/bin/

socket=/run/berth/berthd.sock
if berth -H "unix://$socket" system ping >/dev/null 2>&1; then
    echo "==> berthd is already running on $socket"
else
    echo "==> starting berthd (log: /var/log/berthd.log)"
    nohup berthd --data-root /var/lib/berth --socket "$socket" >>/var/log/berthd.log 2>&1 &
    for _ in $(seq 100); do
        berth system ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

echo "==> berth version"
berth version
echo
echo "==> berth info"
berth info
echo

# No registry is needed to get a first image: a root filesystem made of busybox-static,
# imported as busybox:latest (with a registry: berth pull REGISTRY/NAME:TAG).
echo "==> importing busybox:latest from busybox-static"
rootfs=$(mktemp -d)
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo cat ls true; do ln -sf busybox "$rootfs/bin/$applet"; done
tar -C "$rootfs" -c . | berth import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - busybox:latest
rm -rf "$rootfs"
berth images
echo

echo "==> berth run --rm busybox echo hello"
berth run --rm busybox echo hello
echo
echo "berthd is running (pid $(cat /var/lib/berth/berthd.lock)). Stop it with: kill \$(cat /var/lib/berth/berthd.lock)"
