//! Crash-safe file handling in a plugin's state directory.
//!
//! The host may discard an instance at any moment (trap, missed deadline, limit, upgrade, daemon
//! restart), so a plugin keeps everything it must not lose in its state directory and never
//! leaves a half-written file where a later instance will read it. The primitives here are the
//! ones WASI 0.2 offers for that: create-exclusive, rename (atomic replace within a directory)
//! and fsync, on files and on directories (a rename or a new name is durable only once its
//! directory is synced).
//!
//! WASI 0.2 has no file locks. Different instances of one plugin can run at the same time, so
//! read-modify-write of a shared file can lose an update; prefer layouts where each fact is its
//! own file or directory (create to add, remove to delete, rename to publish).

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the host preopens the plugin's state directory (volume, network and logging worlds;
/// authz policies get none). Host side it is `<data-root>/plugins/<plugin>/state`.
pub const STATE_DIR: &str = "/state";

/// Prefix of the temporary names made by [`write_atomic`]. Starts with a dot so that it never
/// collides with names a plugin derives from berth object names (which start with a letter or
/// digit) and so that directory listings can skip it.
pub const TEMP_PREFIX: &str = ".tmp-";

/// [`STATE_DIR`] as a path.
pub fn state_dir() -> &'static Path {
    Path::new(STATE_DIR)
}

/// Replaces (or creates) `path` with `contents` so that a reader, including a later instance
/// after a crash at any point, sees either the old file or the complete new one.
///
/// Writes a temporary file in the same directory, fsyncs it, renames it over `path` and fsyncs
/// the directory. The temporary name is [`TEMP_PREFIX`] plus a unique suffix rather than a
/// function of `path`, so it stays within the 255-byte name limit whatever `path` is. A crash
/// before the rename leaves that temporary file behind: see [`remove_stale_temp_files`].
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path)?;
    let (tmp, mut file) = create_temp_file(dir)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    drop(file);
    if let Err(err) = written {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(dir)
}

/// Makes the entries of directory `dir` durable (new names, renames and removals in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates directory `dir` and any missing parents, and syncs each parent whose entries
/// changed, so that the directory survives a crash once this returns.
pub fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir)?;
    create_dir_all_synced(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        // Another instance created it between the check and here: same outcome.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(err) => Err(err),
    }
}

/// A name that no other call, in this instance or in a concurrent instance of the same plugin,
/// returns: `prefix`, the wall-clock time in nanoseconds, a per-instance counter and 64 bits
/// seeded from the host's random source.
///
/// Meant for temporary and trash entries. Callers still create with create-exclusive semantics
/// (or rename onto a name that must not exist), so a collision would be detected, not silently
/// shared.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // std's RandomState keys come from `wasi:random/insecure-seed` on wasm32-wasip2: enough to
    // separate instances that read the same clock, without a dependency on a random-number crate.
    let random = RandomState::new().hash_one((nanos, count));
    format!("{prefix}{nanos:x}-{count:x}-{random:016x}")
}

/// Removes files in `dir` whose name starts with [`TEMP_PREFIX`] and that were last modified
/// more than `min_age` ago: leftovers of [`write_atomic`] calls interrupted by a discarded
/// instance. Younger ones may belong to a write in progress in a concurrent instance and are
/// kept. Returns how many were removed; a missing `dir` counts as empty.
pub fn remove_stale_temp_files(dir: &Path, min_age: Duration) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age < min_age {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Removed by a concurrent sweep.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn create_temp_file(dir: &Path) -> io::Result<(PathBuf, File)> {
    // A collision is practically impossible (see unique_name); retrying a few times turns it
    // into a non-event instead of an error.
    let mut last_err = None;
    for _ in 0..4 {
        let path = dir.join(unique_name(TEMP_PREFIX));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no unique temporary name")))
}

fn parent_dir(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_creates_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["meta.json"]);
    }

    #[test]
    fn write_atomic_fails_cleanly_without_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(&dir.path().join("missing/meta.json"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(write_atomic(Path::new("meta.json"), b"x").is_err());
    }

    #[test]
    fn unique_names_differ() {
        let a = unique_name("t-");
        let b = unique_name("t-");
        assert_ne!(a, b);
        assert!(a.starts_with("t-"));
        assert!(a.len() < 64);
    }

    #[test]
    fn create_dir_all_synced_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all_synced(&deep).unwrap();
        create_dir_all_synced(&deep).unwrap();
        assert!(deep.is_dir());
    }

    #[test]
    fn stale_temp_files_are_swept_by_age() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}old")), b"").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}dir"))).unwrap();
        // Young files are kept: they may be a concurrent instance's write in progress.
        assert_eq!(
            remove_stale_temp_files(dir.path(), Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(
            remove_stale_temp_files(dir.path(), Duration::ZERO).unwrap(),
            1
        );
        assert!(dir.path().join("keep").exists());
        assert!(dir.path().join(format!("{TEMP_PREFIX}dir")).is_dir());
        assert_eq!(
            remove_stale_temp_files(&dir.path().join("missing"), Duration::ZERO).unwrap(),
            0
        );
    }
}
