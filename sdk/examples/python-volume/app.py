"""berth's `local` volume driver, written in Python: a WebAssembly component (built with
componentize-py, see build.sh) implementing `berth:volume/volume-driver@1.0.0`.

It does what the Rust reference driver (plugins/volume/local) does, with the same on-disk
layout, so the two read each other's state. A volume is a directory in the plugin's state
directory, which berthd preopens at `/state`:

    /state/
      volumes/<name>/           one directory per volume; renamed in and out as a whole
        volume.json             metadata, written once before the volume appears
        mounts/<mount-entry>    one empty file per outstanding mount id
        data/                   the volume's data: the only directory the host bind-mounts
      staging/<unique>/         a volume being created, renamed to volumes/<name> when complete
      trash/<unique>/           a removed volume, deleted by the host after `remove` returns

Every fact about a volume is its own directory entry, so each operation is a single create,
remove or rename, made durable by fsyncing the directory that changed. Metadata is written
atomically: volume.json is written and fsynced inside a fresh staging directory that nothing
else reads, and that directory is then renamed to volumes/<name> (the temp-file, fsync, rename
pattern at the granularity of the whole volume directory, so data/ and mounts/ appear together
with the metadata). No file is ever rewritten, so concurrent instances of the plugin, which
the host may run, never lose each other's updates, and a crash at any point leaves either the
state before or the state after. Nothing lives in memory between calls: the host may discard
the instance at any time.

Metadata and mount records sit beside data/, never inside it, because containers can write
anything into data/; the driver never reads inside data/. Paths handed to the host are
relative to the state directory (`volumes/<name>/data`, `trash/<unique>`).

Options: none (Docker's `local` options `type`, `device` and `o` get a message saying why they
cannot work here). Configuration keys: none.

`VolumeStore` does the work on a state directory passed to it, reporting failures as
`VolumeError` (a berth error kind and a message); the glue at the bottom roots it at /state for
every call and turns those into the WIT `error`. Everything is imported at load time: the
component is pre-initialized at build time and has no standard library on disk at run time.
"""

import errno
import json
import os
import re
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import driver, plugin
from wit_world.imports import host_log, types

VERSION = "0.1.0"

# Where the host preopens the state directory.
STATE_DIR = "/state"

VOLUMES_DIR = "volumes"
STAGING_DIR = "staging"
TRASH_DIR = "trash"
META_FILE = "volume.json"
MOUNTS_DIR = "mounts"
DATA_DIR = "data"

# The metadata format written and read. A record with another format was written by a
# different driver version; rather than guess, it is reported as unusable.
FORMAT = 1

# berth's volume name rule. ASCII only: str.isalnum would accept any Unicode letter.
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}\Z")
# Mount ids kept as they are in mounts/ (readable); any other id is hex-encoded behind "=".
_PLAIN_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
# Longest file name Linux accepts, the limit for a mount record's name.
_NAME_MAX = 255

_DOCKER_LOCAL_OPTIONS = ("type", "device", "o")

# Staging directories older than this are leftovers of creates interrupted by a discarded
# instance; younger ones may be a concurrent instance's create in progress.
_STALE_STAGING_SECONDS = 3600

# errno values that mean out of space or over quota.
_EXHAUSTED = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n)}

_counter = 0


def _quote(s):
    """A string quoted for an error message, like Rust's `{:?}`."""
    return json.dumps(s, ensure_ascii=False)


class VolumeError(Exception):
    """A failed operation: a berth error kind (its WIT name) and a one-line message."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def io(cls, op, path, err):
        """An I/O failure in the state directory. Only exhaustion is not `internal`: a missing
        or unreadable file of the driver's own is a broken invariant, not the caller's fault."""
        kind = "resource-exhausted" if err.errno in _EXHAUSTED else "internal"
        reason = err.strerror or str(err)
        return cls(kind, f"{op} {path}: {reason}")


def not_found(name):
    return VolumeError("not-found", f"volume {_quote(name)} not found")


def validate_name(name):
    """Names become path components: one that passes is neither `.` nor `..` and has no `/`."""
    if not _NAME_RE.match(name):
        raise VolumeError(
            "invalid-argument",
            f"invalid volume name {_quote(name)}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,254}}",
        )


def mount_entry(mount_id):
    """The file name recording mount id `mount_id` in mounts/. Ids that are not plain are
    hex-encoded behind `=`, which plain ids cannot start with, so two ids never share a file.
    Ids too long for a file name are refused rather than hashed, which could collide."""
    if _PLAIN_ID_RE.match(mount_id):
        entry = mount_id
    else:
        entry = "=" + mount_id.encode("utf-8").hex()
    if not mount_id or len(entry) > _NAME_MAX:
        raise VolumeError(
            "invalid-argument",
            f"mount id of {len(mount_id.encode('utf-8'))} bytes cannot be recorded: ids must be "
            "non-empty and at most 255 bytes (127 bytes if they contain characters other than "
            "[A-Za-z0-9_.-])",
        )
    return entry


def validate_options(options):
    """This driver accepts no options."""
    if not options:
        return
    key = options[0][0]
    if key in _DOCKER_LOCAL_OPTIONS:
        raise VolumeError(
            "invalid-argument",
            f"option {_quote(key)} is not supported: berth's local driver keeps volumes as "
            "directories in its state directory and cannot mount devices, tmpfs or network "
            "file systems (the docker local driver options type, device and o are not available)",
        )
    raise VolumeError(
        "invalid-argument", f"unknown option {_quote(key)}: the local driver takes no options"
    )


def unique_name():
    """A name no other call returns, in this instance or a concurrent one: wall-clock nanos, a
    per-instance counter and 64 random bits. Callers still create exclusively (or rename onto a
    name that must not exist), so a collision would be detected, never shared."""
    global _counter
    _counter += 1
    return f"{time.time_ns():x}-{_counter:x}-{os.urandom(8).hex()}"


def meta_to_json(name, created_at, options):
    record = {
        "format": FORMAT,
        "name": name,
        "created_at": created_at,
        "options": [[k, v] for k, v in options],
    }
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def meta_from_json(name, raw):
    """Parses volume `name`'s record and checks it describes that volume in a format this
    driver reads. Returns (created_at, options); raises ValueError with a reason otherwise."""
    record = json.loads(raw.decode("utf-8"))
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for field in ("format", "name", "created_at", "options"):
        if field not in record:
            raise ValueError(f"missing field {field}")
    if record["format"] != FORMAT:
        raise ValueError(f"format {record['format']} (this driver reads format {FORMAT})")
    if record["name"] != name:
        raise ValueError(f"it names volume {_quote(record['name'])}")
    created_at = record["created_at"]
    if type(created_at) is not int or not 0 <= created_at < 2**64:
        raise ValueError("created_at is not a u64")
    options = record["options"]
    if not isinstance(options, list) or not all(
        isinstance(o, list) and len(o) == 2 and all(isinstance(s, str) for s in o) for o in options
    ):
        raise ValueError("options is not a list of [key, value] strings")
    return created_at, [(k, v) for k, v in options]


class VolumeStore:
    """The volumes of one state directory. A volume exists exactly when volumes/<name> is a
    directory; that directory appears whole (renamed from staging/) and disappears whole
    (renamed to trash/)."""

    def __init__(self, root, log):
        self.root = root
        self.log = log

    # --- operations ---------------------------------------------------------------------

    def create(self, name, options, created_at):
        validate_name(name)
        validate_options(options)
        if self._exists(name):
            return self._existing_for_create(name, options)
        self._ensure_dir(VOLUMES_DIR)
        self._ensure_dir(STAGING_DIR)
        staging = f"{STAGING_DIR}/{unique_name()}"
        try:
            self._build_volume_dir(staging, name, created_at, options)
        except VolumeError:
            self._discard_staging(staging)
            raise
        # The publishing step. rename(2) onto an existing non-empty directory fails, and a
        # published volume directory is never empty, so a concurrent create is not overwritten.
        try:
            os.rename(self._abs(staging), self._abs(f"{VOLUMES_DIR}/{name}"))
        except OSError as err:
            self._discard_staging(staging)
            if self._exists(name):
                # Lost a race with a concurrent create: same as finding it first.
                return self._existing_for_create(name, options)
            raise VolumeError.io("publishing", f"{VOLUMES_DIR}/{name}", err) from None
        self._sync(VOLUMES_DIR)
        self.log("info", "volume created", [("volume", name)])
        return self._info(name, (created_at, list(options)))

    def remove(self, name):
        validate_name(name)
        self._require(name)
        mounts = self._count_mounts(name)
        if mounts > 0:
            raise VolumeError(
                "failed-precondition",
                f"volume {_quote(name)} is in use: {mounts} outstanding mount(s)",
            )
        self._ensure_dir(TRASH_DIR)
        trash = f"{TRASH_DIR}/{unique_name()}"
        try:
            os.rename(self._abs(f"{VOLUMES_DIR}/{name}"), self._abs(trash))
        except FileNotFoundError:
            # A concurrent remove got there first.
            raise not_found(name) from None
        except OSError as err:
            raise VolumeError.io("moving to trash", f"{VOLUMES_DIR}/{name}", err) from None
        self._sync(VOLUMES_DIR)
        self._sync(TRASH_DIR)
        self.log("info", "volume removed", [("volume", name), ("trash", trash)])
        # Deleting the data inside the sandbox could outlast the call deadline; the host deletes
        # the trash directory, without following symlinks, after this returns.
        return trash

    def mount(self, name, mount_id):
        validate_name(name)
        entry = mount_entry(mount_id)
        self._require(name)
        data = f"{VOLUMES_DIR}/{name}/{DATA_DIR}"
        if not os.path.isdir(self._abs(data)):
            raise VolumeError("internal", f"data directory of volume {_quote(name)} is missing")
        mounts = f"{VOLUMES_DIR}/{name}/{MOUNTS_DIR}"
        # Only mounts/ itself, never its parents: if the volume was removed since the check
        # above, recreating volumes/<name> would conjure a volume without data.
        try:
            os.mkdir(self._abs(mounts))
            self._sync(f"{VOLUMES_DIR}/{name}")
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise not_found(name) from None
        except OSError as err:
            raise VolumeError.io("creating", mounts, err) from None
        record = f"{mounts}/{entry}"
        try:
            fd = os.open(self._abs(record), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            # A repeated mount: already recorded, same path.
            return data
        except OSError as err:
            raise VolumeError.io("recording mount", record, err) from None
        os.close(fd)
        self._sync(mounts)
        return data

    def unmount(self, name, mount_id):
        validate_name(name)
        self._require(name)
        try:
            entry = mount_entry(mount_id)
        except VolumeError:
            # An id that could never have been recorded is, by definition, unknown.
            return
        mounts = f"{VOLUMES_DIR}/{name}/{MOUNTS_DIR}"
        record = f"{mounts}/{entry}"
        try:
            os.unlink(self._abs(record))
        except FileNotFoundError:
            return
        except OSError as err:
            raise VolumeError.io("removing mount record", record, err) from None
        self._sync(mounts)

    def path(self, name):
        validate_name(name)
        self._require(name)
        return f"{VOLUMES_DIR}/{name}/{DATA_DIR}"

    def get(self, name):
        validate_name(name)
        self._require(name)
        return self._info(name, self._read_meta_or_error(name))

    def list(self):
        """Every volume. One whose metadata is unusable is still listed (the reason in its
        status) so the host's reconciliation sees it and it can be removed; entries of volumes/
        that are not directories named like volumes are skipped with a warning."""
        try:
            entries = list(os.scandir(self._abs(VOLUMES_DIR)))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise VolumeError.io("listing", VOLUMES_DIR, err) from None
        volumes = []
        for entry in entries:
            if not (entry.is_dir(follow_symlinks=False) and _NAME_RE.match(entry.name)):
                self.log(
                    "warn",
                    "skipping an entry of volumes/ that is not a volume directory",
                    [("entry", entry.name)],
                )
                continue
            volumes.append(self._info(entry.name, self._read_meta_or_error(entry.name)))
        return volumes

    def sweep_staging(self, min_age=_STALE_STAGING_SECONDS):
        """Deletes staging directories left by creates a discarded instance never finished.
        They hold only the driver's own files and an empty data/ (never mounted), so deleting
        them here is quick and follows no container-made symlinks. Returns how many."""
        try:
            entries = list(os.scandir(self._abs(STAGING_DIR)))
        except FileNotFoundError:
            return 0
        except OSError as err:
            raise VolumeError.io("listing", STAGING_DIR, err) from None
        now = time.time()
        removed = 0
        for entry in entries:
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                age = 0
            if age < min_age:
                continue
            try:
                _remove_tree(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as err:
                raise VolumeError.io("removing", f"{STAGING_DIR}/{entry.name}", err) from None
        return removed

    # --- helpers ------------------------------------------------------------------------

    def _abs(self, rel):
        return f"{self.root}/{rel}"

    def _exists(self, name):
        return os.path.isdir(self._abs(f"{VOLUMES_DIR}/{name}"))

    def _require(self, name):
        if not self._exists(name):
            raise not_found(name)

    def _sync(self, rel):
        """Makes the entries of directory `rel` durable (new names, renames, removals)."""
        try:
            fd = os.open(self._abs(rel), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise VolumeError.io("syncing", rel, err) from None

    def _ensure_dir(self, rel):
        """Creates top-level directory `rel` of the state directory if missing, durably."""
        if os.path.isdir(self._abs(rel)):
            return
        try:
            os.mkdir(self._abs(rel))
        except FileExistsError:
            # Another instance created it between the check and here.
            if os.path.isdir(self._abs(rel)):
                return
            raise VolumeError(
                "internal", f"creating {rel}: exists and is not a directory"
            ) from None
        except OSError as err:
            raise VolumeError.io("creating", rel, err) from None
        self._sync(".")

    def _existing_for_create(self, name, options):
        """The answer to `create` for a volume that exists: itself if the options match."""
        meta = self._read_meta(name)
        if meta[1] != list(options):
            raise VolumeError(
                "already-exists", f"volume {_quote(name)} already exists with different options"
            )
        return self._info(name, meta)

    def _build_volume_dir(self, staging, name, created_at, options):
        """Fills `staging` with a complete volume directory and makes it durable."""
        raw = meta_to_json(name, created_at, options)
        for rel in (staging, f"{staging}/{DATA_DIR}", f"{staging}/{MOUNTS_DIR}"):
            try:
                os.mkdir(self._abs(rel), 0o755)
            except OSError as err:
                raise VolumeError.io("creating", rel, err) from None
        meta_rel = f"{staging}/{META_FILE}"
        try:
            fd = os.open(self._abs(meta_rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise VolumeError.io("writing", meta_rel, err) from None
        self._sync(staging)

    def _discard_staging(self, staging):
        try:
            _remove_tree(self._abs(staging))
        except OSError as err:
            # Harmless: a later sweep removes it.
            self.log(
                "warn",
                "could not remove a staging directory",
                [("path", staging), ("error", err.strerror or str(err))],
            )

    def _read_meta(self, name):
        rel = f"{VOLUMES_DIR}/{name}/{META_FILE}"
        try:
            with open(self._abs(rel), "rb") as f:
                raw = f.read()
            return meta_from_json(name, raw)
        except (OSError, ValueError) as err:
            reason = (err.strerror if isinstance(err, OSError) else None) or str(err)
            raise VolumeError(
                "internal", f"metadata {rel} of volume {_quote(name)} is unusable: {reason}"
            ) from None

    def _read_meta_or_error(self, name):
        try:
            return self._read_meta(name)
        except VolumeError as err:
            return err

    def _count_mounts(self, name):
        """Outstanding mount ids; a volume without mounts/ has none."""
        rel = f"{VOLUMES_DIR}/{name}/{MOUNTS_DIR}"
        try:
            return len(os.listdir(self._abs(rel)))
        except FileNotFoundError:
            return 0
        except OSError as err:
            raise VolumeError.io("listing", rel, err) from None

    def _info(self, name, meta):
        """The WIT description of volume `name`; degraded (no creation time or options, the
        reason in the status) when `meta` is an error."""
        status = []
        try:
            status.append(("mounts", str(self._count_mounts(name))))
        except VolumeError as err:
            status.append(("error", err.message))
        if isinstance(meta, VolumeError):
            self.log(
                "warn", "volume has unusable metadata", [("volume", name), ("error", meta.message)]
            )
            status.append(("error", meta.message))
            created_at, options = 0, []
        else:
            created_at, options = meta
        return driver.VolumeInfo(
            name=name,
            mountpoint=f"{VOLUMES_DIR}/{name}/{DATA_DIR}",
            created_at=created_at,
            status=status,
            options=options,
        )


def _remove_tree(path):
    """Deletes a directory tree without following symlinks (shutil would pull in more modules
    than this needs)."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
        else:
            os.unlink(entry.path)
    os.rmdir(path)


# --- WIT glue -------------------------------------------------------------------------------

_LEVELS = {
    "trace": host_log.Level.TRACE,
    "debug": host_log.Level.DEBUG,
    "info": host_log.Level.INFO,
    "warn": host_log.Level.WARN,
    "error": host_log.Level.ERROR,
}

_KINDS = {
    "not-found": types.ErrorKind.NOT_FOUND,
    "already-exists": types.ErrorKind.ALREADY_EXISTS,
    "invalid-argument": types.ErrorKind.INVALID_ARGUMENT,
    "failed-precondition": types.ErrorKind.FAILED_PRECONDITION,
    "permission-denied": types.ErrorKind.PERMISSION_DENIED,
    "resource-exhausted": types.ErrorKind.RESOURCE_EXHAUSTED,
    "unavailable": types.ErrorKind.UNAVAILABLE,
    "internal": types.ErrorKind.INTERNAL,
}

# The host keeps 4 KiB of a message; it must be one line.
_MAX_MESSAGE_BYTES = 4096


def _log(level, message, fields):
    """One structured line into berthd's log through berth:types/host-log."""
    host_log.log(_LEVELS[level], message, fields)


def _store():
    return VolumeStore(STATE_DIR, _log)


def _wit_error(err):
    message = "".join(" " if c < " " or c == "\x7f" else c for c in err.message)
    raw = message.encode("utf-8")
    if len(raw) > _MAX_MESSAGE_BYTES:
        message = raw[: _MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "…"
    return Err(types.Error(kind=_KINDS[err.kind], message=message))


def _call(op, *args):
    """Runs a store operation, turning its failures into the WIT `error`. Any other exception
    is a bug: reported as `internal` rather than trapping, which would discard the instance."""
    try:
        return op(*args)
    except VolumeError as err:
        raise _wit_error(err) from None
    except Exception as err:  # noqa: BLE001 - the host must get an error, not a trap
        _log("error", "unexpected failure", [("error", repr(err))])
        raise _wit_error(VolumeError("internal", f"unexpected failure: {err!r}")) from None


class Plugin(exports.Plugin):
    def info(self):
        return plugin.PluginInfo(
            name="python-local",
            version=VERSION,
            description="Volumes as directories in the plugin's state directory (Python example)",
        )

    def configure(self, config):
        # No configuration keys: the first one given is unknown.
        if config:
            key = config[0][0]
            raise _wit_error(
                VolumeError(
                    "invalid-argument",
                    f"unknown configuration key {_quote(key)} (none are accepted)",
                )
            )
        # configure runs after every instantiation, so right after any instance that may have
        # been discarded mid-create: the moment to clear what such creates left behind.
        # Housekeeping failures must not make the host refuse a valid configuration.
        try:
            removed = _store().sweep_staging()
        except VolumeError as err:
            _log("warn", "could not clean up the staging directory", [("error", err.message)])
        else:
            if removed:
                _log("info", "removed leftovers of interrupted creates", [("count", str(removed))])


class Driver(exports.Driver):
    def create(self, name, options):
        return _call(_store().create, name, options, time.time_ns())

    def remove(self, name):
        return _call(_store().remove, name)

    def mount(self, name, mount_id):
        return _call(_store().mount, name, mount_id)

    def unmount(self, name, mount_id):
        return _call(_store().unmount, name, mount_id)

    def path(self, name):
        return _call(_store().path, name)

    def get(self, name):
        return _call(_store().get, name)

    def list(self):
        return _call(_store().list)

    def capabilities(self):
        return driver.VolumeCapabilities(scope=types.Scope.LOCAL)
