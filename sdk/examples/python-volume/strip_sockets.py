"""Removes the wasi:sockets imports from a componentize-py component, in its text form.

    python3 strip_sockets.py IN.wat OUT.wat

componentize-py links CPython against a wasi-libc whose socket functions import wasi:sockets.
berthd links no sockets into a volume driver, so such a component would not instantiate, and
the driver never opens a socket. This rewrites the component (as printed by `wasm-tools print`)
so that libc's socket imports are satisfied by trapping functions instead of by component
imports:

- the `wasi:sockets/*` instance imports are deleted;
- the types aliased from them become local definitions (a resource type for each resource,
  `u8` for the value types, which only the now unused instance types of those imports refer
  to), so no index in the type space moves;
- the functions aliased from them are deleted, and every core function lowered from one
  becomes an alias of an `unreachable` function with the same core signature (taken from
  libc's own import of it), added to the `wit-component:stubs` core module that wit-component
  already puts in every componentize-py component for missing symbols.

So the component gains no core instance (berthd caps the number per plugin) and loses the
imports. Every socket call traps, which berthd reports as a plugin crash: the same outcome as
any other use of a capability the world does not grant. Every reference in the component
section of `wasm-tools print` output is by name, which this relies on (the deleted functions
and instances are referred to by name only); `wasm-tools parse` fails on any dangling name.
"""

import re
import sys

ID = r'\$(?:"[^"]*"|[^\s()]+)'
IMPORT_RE = re.compile(
    rf'^  \(import "(wasi:sockets/[^"@]+)@[^"]*" \(instance ({ID}) .*\(type ({ID})\)\)\)$'
)
TYPE_ALIAS_RE = re.compile(rf'^  \(alias export ({ID}) "([^"]+)" \(type ({ID})')
FUNC_ALIAS_RE = re.compile(rf'^  \(alias export ({ID}) "([^"]+)" \(func ({ID})')
LOWER_RE = re.compile(rf"^  \(core func ({ID}) .*\(canon lower \(func ({ID})\)")
TYPE_DEF_RE = re.compile(rf"^  \(type ({ID}) ")
RESOURCE_EXPORT_RE = re.compile(r'^      \(export \(;\d+;\) "([^"]+)" \(type \(sub resource\)\)\)$')
CORE_IMPORT_RE = re.compile(
    r'^    \(import "(wasi:sockets/[^"@]+)@[^"]*" "([^"]+)" '
    r"\(func .*?((?:\(param[^)]*\) ?)?(?:\(result[^)]*\))?)\)\)$"
)
STUBS_MODULE = "  (core module $wit-component:stubs "
STUBS_INSTANCE = "  (core instance $wit-component:stubs "


def fail(message):
    sys.exit(f"strip_sockets.py: {message}")


def main(src, dst):
    with open(src) as f:
        lines = f.readlines()

    # Pass 1: the sockets imports, the resources their instance types export, and libc's core
    # signatures for the socket functions.
    resources_of_type = {}  # instance type id -> names of its resource exports
    current_type = None
    sockets = {}  # instance id -> interface (without version)
    resources = {}  # instance id -> resource names
    signatures = {}  # (interface, function) -> core signature text
    for line in lines:
        if line.startswith("  ("):
            m = TYPE_DEF_RE.match(line) if line.startswith("  (type ") else None
            current_type = m.group(1) if m else None
            m = IMPORT_RE.match(line.rstrip("\n"))
            if m:
                sockets[m.group(2)] = m.group(1)
                resources[m.group(2)] = resources_of_type.get(m.group(3), set())
        elif current_type and line.startswith("      (export "):
            m = RESOURCE_EXPORT_RE.match(line.rstrip("\n"))
            if m:
                resources_of_type.setdefault(current_type, set()).add(m.group(1))
        elif line.startswith('    (import "wasi:sockets/'):
            m = CORE_IMPORT_RE.match(line.rstrip("\n"))
            if not m:
                fail(f"cannot read core import: {line.strip()}")
            key = (m.group(1), m.group(2))
            if signatures.setdefault(key, m.group(3)) != m.group(3):
                fail(f"two core signatures for {key}")
    if not sockets:
        # Nothing to do: copy through.
        with open(dst, "w") as f:
            f.writelines(lines)
        return

    # Pass 2: rewrite.
    stub_names = {}  # core signature -> export name in the stubs module
    socket_funcs = {}  # component func id -> (interface, function)
    out = []
    in_stubs_module = False
    stubs_module_end = None
    stubs_instantiated = False
    for line in lines:
        bare = line.rstrip("\n")
        if in_stubs_module:
            if bare == "  )":
                in_stubs_module = False
                stubs_module_end = len(out)
            out.append(line)
            continue
        if not line.startswith("  (") or line.startswith("   "):
            out.append(line)
            continue
        if line.startswith(STUBS_MODULE):
            in_stubs_module = True
            out.append(line)
            continue
        if line.startswith(STUBS_INSTANCE):
            stubs_instantiated = True
            out.append(line)
            continue
        m = IMPORT_RE.match(bare)
        if m and m.group(2) in sockets:
            continue
        m = TYPE_ALIAS_RE.match(bare)
        if m and m.group(1) in sockets:
            kind = "(resource (rep i32))" if m.group(2) in resources[m.group(1)] else "u8"
            out.append(f"  (type {m.group(3)} {kind})\n")
            continue
        m = FUNC_ALIAS_RE.match(bare)
        if m and m.group(1) in sockets:
            socket_funcs[m.group(3)] = (sockets[m.group(1)], m.group(2))
            continue
        m = LOWER_RE.match(bare)
        if m and m.group(2) in socket_funcs:
            key = socket_funcs[m.group(2)]
            if key not in signatures:
                fail(f"no core signature for {key}: no core module imports it")
            if not stubs_instantiated:
                fail(f"{key} is lowered before the stubs instance exists")
            sig = signatures[key]
            name = stub_names.setdefault(sig, f"berth:sockets-trap-{len(stub_names)}")
            out.append(
                f'  (alias core export $wit-component:stubs "{name}" (core func {m.group(1)}))\n'
            )
            continue
        out.append(line)

    if stubs_module_end is None:
        fail("no wit-component:stubs core module to add the trapping functions to")
    stubs = [
        f'    (func (export "{name}") {sig} unreachable)\n' for sig, name in stub_names.items()
    ]
    out[stubs_module_end:stubs_module_end] = stubs

    text = "".join(out)
    # Deleted functions are caught by `wasm-tools parse` (their names are shared with the core
    # functions that replace their lowerings, so they cannot be searched for here).
    for ident in sockets:
        if re.search(re.escape(ident) + r"[\s)]", text):
            fail(f"{ident} is still referred to")
    with open(dst, "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("usage: strip_sockets.py IN.wat OUT.wat")
    main(sys.argv[1], sys.argv[2])
