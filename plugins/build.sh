#!/usr/bin/env bash
# Builds every reference plugin in this guest workspace to a wasm32-wasip2 component and copies
# it to plugins/dist/<name>.wasm, every Rust SDK example to plugins/dist/examples/<name>.wasm, and
# every hostile test fixture to plugins/dist/fixtures/<name>.wasm, printing sizes.
#
# A plugin is a crate at plugins/<kind>/<name>/ whose package is named berth-<kind>-<name>
# (for example plugins/volume/local -> berth-volume-local -> dist/local.wasm). An example is a
# crate at sdk/examples/<name>/ whose package is named berth-example-<name> (for example
# sdk/examples/rust-volume -> berth-example-rust-volume -> dist/examples/rust-volume.wasm);
# examples without a Cargo.toml (python-volume) have their own build scripts. A fixture is a
# crate at plugins/fixtures/<name>/ whose package is named berth-fixture-<name> (for example
# plugins/fixtures/spin -> berth-fixture-spin -> dist/fixtures/spin.wasm); fixtures/ is not a
# plugin kind, and fixtures/support is the library the fixtures share, not a fixture. rustc's
# wasm32-wasip2 target links a component directly (through wasm-component-ld), so no wasm-tools
# step is needed; the script checks the component header to be sure.
#
# Extra arguments go to cargo, for example `./build.sh -j1` on a busy machine (or set
# CARGO_BUILD_JOBS). CARGO_TARGET_DIR is honoured.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

packages=()
artifacts=()
dests=()

# add_component MANIFEST PACKAGE DEST: build PACKAGE, whose manifest MANIFEST must name it so,
# and copy its component to DEST.
add_component() {
    local manifest="$1" package="$2" dest="$3" seen
    if ! grep -q "^name = \"$package\"$" "$manifest"; then
        echo "build.sh: $manifest must name its package \"$package\"" >&2
        exit 1
    fi
    for seen in "${dests[@]}"; do
        if [[ "$seen" == "$dest" ]]; then
            echo "build.sh: two crates would both be $dest" >&2
            exit 1
        fi
    done
    packages+=("$package")
    artifacts+=("${package//-/_}.wasm")
    dests+=("$dest")
}

for manifest in */*/Cargo.toml; do
    dir="${manifest%/Cargo.toml}"
    kind="${dir%%/*}"
    name="${dir#*/}"
    if [[ "$kind" == fixtures ]]; then
        continue # below
    fi
    add_component "$manifest" "berth-$kind-$name" "dist/$name.wasm"
done
if [[ ${#packages[@]} -eq 0 ]]; then
    echo "build.sh: no plugins found under $here/<kind>/<name>/" >&2
    exit 1
fi

for manifest in ../sdk/examples/*/Cargo.toml; do
    # Without Rust examples the pattern stays unexpanded.
    [[ -e "$manifest" ]] || continue
    dir="${manifest%/Cargo.toml}"
    name="${dir#../sdk/examples/}"
    add_component "$manifest" "berth-example-$name" "dist/examples/$name.wasm"
done

for manifest in fixtures/*/Cargo.toml; do
    # Without fixtures the pattern stays unexpanded.
    [[ -e "$manifest" ]] || continue
    dir="${manifest%/Cargo.toml}"
    name="${dir#fixtures/}"
    if [[ "$name" == support ]]; then
        continue
    fi
    add_component "$manifest" "berth-fixture-$name" "dist/fixtures/$name.wasm"
done

target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "$target_dir" ]]; then
    echo "build.sh: cannot find cargo's target directory" >&2
    exit 1
fi

# One invocation for all plugins, examples and fixtures: the SDK's world features may be unified
# across them, which it supports (see sdk/plugin/src/lib.rs).
cargo_args=(build --release --target wasm32-wasip2)
for package in "${packages[@]}"; do
    cargo_args+=(-p "$package")
done
cargo "${cargo_args[@]}" "$@"

mkdir -p dist/examples dist/fixtures
for i in "${!packages[@]}"; do
    src="$target_dir/wasm32-wasip2/release/${artifacts[$i]}"
    dst="${dests[$i]}"
    # A component starts with "\0asm" and then version 0x0d, layer 0x01; a core module has
    # version 0x01, layer 0x00.
    header="$(head -c 8 "$src" | od -An -tx1 | tr -d ' \n')"
    if [[ "$header" != "0061736d0d000100" ]]; then
        echo "build.sh: $src is not a WebAssembly component (header $header)" >&2
        exit 1
    fi
    cp "$src" "$dst.tmp"
    mv "$dst.tmp" "$dst"
    size="$(stat -c %s "$dst")"
    printf '%-32s %8d bytes (%d KiB)  <- %s\n' "$dst" "$size" $(((size + 1023) / 1024)) "${packages[$i]}"
done
