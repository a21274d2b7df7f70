"""Runs the built component under Wasmtime (the `wasmtime` wheel pinned in test.sh, the same
Wasmtime major version as berthd) and checks the `berth:volume/driver` contract: the WIT glue,
the on-disk layout and persistence across instances.

    ./test.sh [COMPONENT]          (default: plugins/dist/examples/python-volume.wasm)

If plugins/dist/local.wasm (the Rust reference driver, built by plugins/build.sh) exists, it is
also run on the same state directory to check that the two drivers read each other's volumes.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

import wasmtime
from wasmtime import component as wc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
COMPONENT = os.path.join(REPO, "plugins", "dist", "examples", "python-volume.wasm")
REFERENCE = os.path.join(REPO, "plugins", "dist", "local.wasm")

PLUGIN = "berth:types/plugin@1.0.0"
DRIVER = "berth:volume/driver@1.0.0"

# What berthd links (core/src/plugin_host/sandbox.rs add_wasi, plus the world's own import).
ALLOWED_IMPORT = re.compile(
    r"^(wasi:(cli|clocks|filesystem|io|random)/[a-z-]+@0\.2\.\d+"
    r"|berth:types/(types|host-log)@1\.0\.0)$"
)

ENGINE = wasmtime.Engine()
_components = {}


def component(path):
    if path not in _components:
        _components[path] = wc.Component.from_file(ENGINE, path)
    return _components[path]


def _fix_names(value):
    """Records come back with WIT field names (`created-at`); make them attributes too."""
    if isinstance(value, wc.Record):
        for key, field in list(vars(value).items()):
            setattr(value, key.replace("-", "_"), _fix_names(field))
    elif isinstance(value, list):
        return [_fix_names(v) for v in value]
    return value


class Err(Exception):
    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Plugin:
    """One instance of a volume driver component with `state` preopened at /state."""

    def __init__(self, state, path=None):
        self.logs = []
        linker = wc.Linker(ENGINE)
        linker.add_wasip2()
        with linker.root() as root:
            with root.add_instance("berth:types/host-log@1.0.0") as host_log:
                host_log.add_func(
                    "log", lambda _s, level, msg, fields: self.logs.append((level, msg, fields))
                )
                host_log.add_func("enabled", lambda _s, _level: True)
        self.store = wasmtime.Store(ENGINE)
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(state, "/state")
        self.store.set_wasi(wasi)
        self.instance = linker.instantiate(self.store, component(path or COMPONENT))

    def call(self, iface, name, *args):
        idx = self.instance.get_export_index(self.store, iface)
        func = self.instance.get_func(
            self.store, self.instance.get_export_index(self.store, name, idx)
        )
        result = func(self.store, *args)
        func.post_return(self.store)
        return result

    def fallible(self, iface, name, *args):
        """Calls a function returning result<T, error>: T, or raises Err."""
        r = self.call(iface, name, *args)
        if isinstance(r, wc.Variant):
            if r.tag == "err":
                raise Err(r.payload.kind, r.payload.message)
            return _fix_names(r.payload)
        if isinstance(r, wc.Record) and hasattr(r, "kind") and hasattr(r, "message"):
            raise Err(r.kind, r.message)
        return _fix_names(r)

    def configure(self, config):
        return self.fallible(PLUGIN, "configure", config)

    def __getattr__(self, name):
        wit = {"list_": "list"}.get(name, name)
        return lambda *args: self.fallible(DRIVER, wit, *args)


class DriverTest(unittest.TestCase):
    def setUp(self):
        self.state = tempfile.mkdtemp(prefix="berth-pyvol-")
        self.addCleanup(shutil.rmtree, self.state)
        self.p = Plugin(self.state)
        self.p.configure([])

    def assertErr(self, kind, fn, *args):
        with self.assertRaises(Err) as cm:
            fn(*args)
        self.assertEqual(cm.exception.kind, kind, cm.exception.message)
        return cm.exception

    def test_imports_are_what_berthd_links(self):
        ty = component(COMPONENT).type
        imports = sorted(ty.imports(ENGINE))
        bad = [i for i in imports if not ALLOWED_IMPORT.match(i)]
        self.assertEqual(bad, [])
        self.assertIn("berth:types/host-log@1.0.0", imports)
        exports = set(ty.exports(ENGINE))
        self.assertTrue({PLUGIN, DRIVER} <= exports, exports)

    def test_info_and_capabilities(self):
        info = self.p.call(PLUGIN, "info")
        self.assertEqual(info.name, "python-local")
        self.assertTrue(info.version)
        self.assertEqual(self.p.call(DRIVER, "capabilities").scope, "local")

    def test_configure_refuses_keys(self):
        e = self.assertErr("invalid-argument", self.p.configure, [("size", "1")])
        self.assertIn('"size"', e.message)
        self.p.configure([])  # idempotent

    def test_create_is_idempotent_and_persisted(self):
        before = time.time_ns()
        v = self.p.create("data", [])
        self.assertEqual(v.name, "data")
        self.assertEqual(v.mountpoint, "volumes/data/data")
        self.assertGreaterEqual(v.created_at, before)
        self.assertEqual(v.status, [("mounts", "0")])
        self.assertEqual(v.options, [])
        again = self.p.create("data", [])
        self.assertEqual(again.created_at, v.created_at)
        self.assertTrue(os.path.isdir(os.path.join(self.state, "volumes/data/data")))
        with open(os.path.join(self.state, "volumes/data/volume.json")) as f:
            meta = json.load(f)
        self.assertEqual(
            meta, {"format": 1, "name": "data", "created_at": v.created_at, "options": []}
        )
        self.assertEqual(os.listdir(os.path.join(self.state, "staging")), [])
        self.assertTrue(any(msg == "volume created" for _, msg, _ in self.p.logs), self.p.logs)
        # A fresh instance (the host may discard one at any time) sees the same volume.
        fresh = Plugin(self.state)
        fresh.configure([])
        self.assertEqual(fresh.get("data").created_at, v.created_at)

    def test_create_refuses_options_and_bad_names(self):
        e = self.assertErr("invalid-argument", self.p.create, "v", [("type", "tmpfs")])
        self.assertIn("cannot mount devices", e.message)
        self.assertErr("invalid-argument", self.p.create, "v", [("size", "1G")])
        for name in ["", ".", "..", ".hidden", "a/b", "../x", "é", "x" * 256]:
            self.assertErr("invalid-argument", self.p.create, name, [])
        self.assertEqual(self.p.list_(), [])

    def test_create_with_different_options_is_already_exists(self):
        # This driver takes no options, so write a volume whose record has some, as a future
        # version with options would, and check create compares them.
        self.p.create("v", [])
        path = os.path.join(self.state, "volumes/v/volume.json")
        with open(path) as f:
            meta = json.load(f)
        meta["options"] = [["k", "v"]]
        with open(path, "w") as f:
            json.dump(meta, f)
        self.assertEqual(self.p.get("v").options, [("k", "v")])
        self.assertErr("already-exists", self.p.create, "v", [])

    def test_mount_unmount_remove(self):
        self.p.create("v", [])
        self.assertEqual(self.p.mount("v", "m1"), "volumes/v/data")
        self.assertEqual(self.p.mount("v", "m1"), "volumes/v/data")  # repeated id
        self.assertEqual(self.p.mount("v", "a/b:c"), "volumes/v/data")  # encoded id
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.state, "volumes/v/mounts"))), ["=612f623a63", "m1"]
        )
        self.assertEqual(self.p.get("v").status, [("mounts", "2")])
        # Mount ids survive the instance.
        fresh = Plugin(self.state)
        e = self.assertErr("failed-precondition", fresh.remove, "v")
        self.assertIn("2 outstanding", e.message)
        fresh.unmount("v", "m1")
        fresh.unmount("v", "m1")  # unknown ids are accepted
        fresh.unmount("v", "never-mounted")
        fresh.unmount("v", "")  # could never have been recorded
        self.assertErr("failed-precondition", fresh.remove, "v")
        fresh.unmount("v", "a/b:c")
        trash = fresh.remove("v")
        self.assertRegex(trash, r"^trash/[0-9a-f]+-[0-9a-f]+-[0-9a-f]{16}$")
        self.assertTrue(os.path.isfile(os.path.join(self.state, trash, "volume.json")))
        self.assertErr("not-found", fresh.get, "v")
        self.assertErr("not-found", fresh.remove, "v")
        self.assertEqual(fresh.list_(), [])

    def test_unknown_volume_is_not_found(self):
        for op, args in [
            (self.p.get, ("nope",)),
            (self.p.path, ("nope",)),
            (self.p.remove, ("nope",)),
            (self.p.mount, ("nope", "m")),
            (self.p.unmount, ("nope", "m")),
        ]:
            e = self.assertErr("not-found", op, *args)
            self.assertIn('"nope"', e.message)

    def test_mount_id_limits(self):
        self.p.create("v", [])
        self.assertErr("invalid-argument", self.p.mount, "v", "")
        self.p.mount("v", "a" * 255)
        self.assertErr("invalid-argument", self.p.mount, "v", "a" * 256)
        self.p.mount("v", ":" * 127)
        self.assertErr("invalid-argument", self.p.mount, "v", ":" * 128)

    def test_list_and_path(self):
        for name in ["a", "b.c", "d_e-f"]:
            self.p.create(name, [])
        self.assertEqual(sorted(v.name for v in self.p.list_()), ["a", "b.c", "d_e-f"])
        self.assertEqual(self.p.path("b.c"), "volumes/b.c/data")
        # Stray entries are skipped, a volume with broken metadata is listed with the reason.
        open(os.path.join(self.state, "volumes/stray-file"), "w").close()
        os.mkdir(os.path.join(self.state, "volumes/.tmp"))
        with open(os.path.join(self.state, "volumes/a/volume.json"), "w") as f:
            f.write("{")
        listed = {v.name: v for v in self.p.list_()}
        self.assertEqual(sorted(listed), ["a", "b.c", "d_e-f"])
        self.assertEqual(listed["a"].created_at, 0)
        self.assertTrue(any(k == "error" and "unusable" in v for k, v in listed["a"].status))
        self.assertErr("internal", self.p.create, "a", [])
        self.p.remove("a")  # still removable

    def test_configure_sweeps_stale_staging(self):
        staging = os.path.join(self.state, "staging")
        old = os.path.join(staging, "old")
        young = os.path.join(staging, "young")
        os.makedirs(os.path.join(old, "data"))
        os.makedirs(young)
        an_hour_ago = time.time() - 7200
        os.utime(old, (an_hour_ago, an_hour_ago))
        Plugin(self.state).configure([])
        self.assertEqual(os.listdir(staging), ["young"])

    @unittest.skipUnless(os.path.exists(REFERENCE), "plugins/dist/local.wasm not built")
    def test_reads_and_is_read_by_the_rust_reference_driver(self):
        self.p.create("from-python", [])
        self.p.mount("from-python", "m1")
        rust = Plugin(self.state, REFERENCE)
        rust.configure([])
        self.assertEqual(rust.get("from-python").status, [("mounts", "1")])
        rust.create("from-rust", [])
        rust.mount("from-rust", "x/y")
        v = self.p.get("from-rust")
        self.assertEqual(v.status, [("mounts", "1")])
        self.p.unmount("from-rust", "x/y")
        self.p.remove("from-rust")
        self.assertEqual(sorted(v.name for v in rust.list_()), ["from-python"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        COMPONENT = os.path.abspath(sys.argv.pop(1))
    unittest.main()
