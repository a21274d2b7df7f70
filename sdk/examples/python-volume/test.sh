#!/usr/bin/env bash
# Runs test_component.py against a built component (default: the one build.sh writes) under
# the pinned `wasmtime` wheel, the same Wasmtime major version as berthd. Uses build.sh's
# virtualenv ($BERTH_PY_VENV, default .venv here); run ./build.sh first.
#
#   ./test.sh [COMPONENT] [unittest arguments...]
set -euo pipefail

WASMTIME_PY_VERSION=48.0.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${BERTH_PY_VENV:-$here/.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "test.sh: no virtualenv at $venv: run ./build.sh first" >&2
    exit 1
fi
component="${1:-$here/../../../plugins/dist/examples/python-volume.wasm}"
shift || true
if [[ ! -f "$component" ]]; then
    echo "test.sh: no component at $component: run ./build.sh first" >&2
    exit 1
fi
component="$(cd "$(dirname "$component")" && pwd)/$(basename "$component")"
stamp="$venv/.berth-python-volume-test-pins"
if [[ "$(cat "$stamp" 2>/dev/null)" != "wasmtime==$WASMTIME_PY_VERSION" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "wasmtime==$WASMTIME_PY_VERSION"
    echo "wasmtime==$WASMTIME_PY_VERSION" >"$stamp"
fi
exec "$venv/bin/python" "$here/test_component.py" "$component" "$@"
