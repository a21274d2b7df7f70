//! Compiled components on disk, keyed by the component's digest and the engine's
//! compatibility hash: a cached load is an mmap instead of a compile. Entries are written
//! once (temp + fsync + rename) and never changed in place, because wasmtime maps them.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Error, Result};

/// Creates the cache directory, root-only: its files are native code wasmtime trusts.
pub(super) fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        Error::Io {
            what: format!("restrict {}", dir.display()),
            source,
        }
    })
}

/// Feeds `Hash` output into sha256, so the engine's compatibility hash becomes a stable key.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Unused: the key is the full digest.
        0
    }
}

fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// Loads `wasm` compiled from the cache, compiling (and caching) it on a miss. Returns the
/// component and the hex sha256 of `wasm`.
pub(super) fn load(
    engine: &Engine,
    dir: &Path,
    plugin: &str,
    wasm: &[u8],
) -> Result<(Component, String)> {
    let digest = hex::encode(Sha256::digest(wasm));
    let path = dir.join(format!("{digest}-{}.cwasm", engine_key(engine)));
    if path.exists() {
        // SAFETY: the cache directory is root-only and holds nothing but wasmtime's own
        // serialized output for this engine configuration, written through a rename and
        // never modified afterwards (deserialize_file maps the file).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok((component, digest)),
            Err(e) => {
                tracing::warn!(plugin, "cached component unusable ({e}); compiling again");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let component = Component::new(engine, wasm).map_err(|e| Error::Load {
        plugin: plugin.to_owned(),
        message: format!("{e:#}"),
    })?;
    match component.serialize() {
        Ok(bytes) => {
            if let Err(e) = write_entry(&path, &bytes) {
                // A cache that cannot be written only costs a compile next time.
                tracing::warn!(plugin, "cannot cache the compiled component: {e}");
            }
        }
        Err(e) => tracing::warn!(plugin, "cannot serialize the compiled component: {e}"),
    }
    Ok((component, digest))
}

fn write_entry(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}
