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

/// Loads `wasm` compiled from the cache, compiling (and caching) it on a miss: here, or by
/// running `compiler` (see [`super::compile_out_of_process`]). Returns the component and the
/// hex sha256 of `wasm`.
pub(super) fn load(
    engine: &Engine,
    dir: &Path,
    plugin: &str,
    wasm: &[u8],
    compiler: Option<&Path>,
) -> Result<(Component, String)> {
    let digest = hex::encode(Sha256::digest(wasm));
    let path = dir.join(format!("{digest}-{}.cwasm", engine_key(engine)));
    if !path.exists()
        && let Some(program) = compiler
    {
        compile_elsewhere(program, dir, plugin, wasm)?;
        if !path.exists() {
            return Err(Error::Load {
                plugin: plugin.to_owned(),
                message: format!(
                    "{} compiled it but left no {} behind",
                    program.display(),
                    path.display()
                ),
            });
        }
    }
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

/// Runs `program compile-plugin DIR PLUGIN` with `wasm` on its stdin; its failure, crash or
/// exhaustion is the load's error, with the last of what it wrote on stderr.
fn compile_elsewhere(program: &Path, dir: &Path, plugin: &str, wasm: &[u8]) -> Result<()> {
    use std::process::{Command, Stdio};
    let failed = |message: String| Error::Load {
        plugin: plugin.to_owned(),
        message,
    };
    let mut child = Command::new(program)
        .arg("compile-plugin")
        .arg(dir)
        .arg(plugin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "cannot run the compiler {}: {e}",
                program.display()
            ))
        })?;
    // Fed from a thread: a compiler that stops reading and writes to a full stderr pipe
    // would otherwise wait for us while we wait for it.
    let stdin = child.stdin.take();
    let output = std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(wasm);
            }
        });
        child.wait_with_output()
    })
    .map_err(|e| failed(format!("waiting for the compiler: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr.trim();
    let said = &said[said.floor_char_boundary(said.len().saturating_sub(2048))..];
    Err(failed(match output.status.code() {
        // berthd's own compiler exits 1 with the whole message on stderr.
        Some(1) if !said.is_empty() => said.to_owned(),
        Some(1) => "the compiler failed (exit 1) without saying why".to_owned(),
        Some(code) => format!("the compiler failed (exit {code}): {said}"),
        None => format!(
            "the compiler died ({}) {said}",
            std::os::unix::process::ExitStatusExt::signal(&output.status)
                .map_or_else(|| "no status".to_owned(), |s| format!("signal {s}"))
        ),
    }))
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
