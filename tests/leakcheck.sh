#!/usr/bin/env bash
# Snapshot (or compare) what a berth test run could leak on the host: mounts of berth data
# roots and berth-shim processes, container cgroups under every hierarchy's berth/, and
# berth's network interfaces and nftables tables.
#   tests/leakcheck.sh snapshot FILE   record the current state
#   tests/leakcheck.sh compare FILE    fail, listing them, if new entries appeared
set -euo pipefail
state() {
    # Mounts whose source or target names a berth path (overlay roots, bind mounts).
    grep -E 'berth|/containers/[0-9a-f]{64}' /proc/self/mountinfo | awk '{print "mount " $5}' || true
    # Container cgroups (v1: one per hierarchy; v2: one).
    for dir in /sys/fs/cgroup/*/berth/* /sys/fs/cgroup/berth/*; do
        [ -d "$dir" ] && echo "cgroup $dir"
    done
    # Network interfaces and nftables tables of berth (bridges, veths).
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^berth' | sed 's/^/link /' || true
    nft list tables 2>/dev/null | grep -E 'table inet berth' | sed 's/^/nft /' || true
    # Shims whose containers outlived the tests.
    pgrep -a -f 'berth-shim start' | awk '{$1=""; print "shim" $0}' || true
}
case "${1:-}" in
snapshot) state | sort > "$2" ;;
compare)
    sleep 1 # the last shims finish removing their cgroups
    leaked=$(comm -13 "$2" <(state | sort))
    if [ -n "$leaked" ]; then
        echo "leak check: the test run left these behind:" >&2
        echo "$leaked" >&2
        exit 1
    fi
    echo "leak check: no mounts, cgroups, shims, links or nftables tables left behind"
    ;;
*) echo "usage: $0 snapshot|compare FILE" >&2; exit 2 ;;
esac
