//! The overlay snapshotter: one directory per unpacked layer under
//! `<data-root>/snapshots/<id>/fs`, keyed by chain id in the state database. Ids are short
//! integers so that overlay mount options stay well under a page even with 100+ layers.
//! Layers unpack independently (in parallel) because each has its own directory.
//! Blocking.

pub mod unpack;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::ErrorKind;
use rusqlite::OptionalExtension;
use sha2::{Digest as _, Sha256};

use crate::store::{self, Store};
pub use unpack::{UnpackError, UnpackOptions, UnpackStats};

/// Snapshotter failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layer could not be extracted (hostile or malformed).
    #[error("layer {diff_id}: {source}")]
    Unpack {
        /// The layer's uncompressed digest.
        diff_id: String,
        /// Why.
        source: UnpackError,
    },
    /// The uncompressed layer does not hash to its declared diff id.
    #[error("layer {expected}: uncompressed content hashes to {actual}")]
    DiffIdMismatch {
        /// Declared diff id.
        expected: String,
        /// Computed digest.
        actual: String,
    },
    /// A filesystem operation failed.
    #[error("snapshots: cannot {what} {}: {source}", path.display())]
    Io {
        /// What.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unpack {
                source: UnpackError::Hostile { .. } | UnpackError::Tar { .. },
                ..
            } => ErrorKind::InvalidArgument,
            Error::DiffIdMismatch { .. } => ErrorKind::InvalidArgument,
            Error::Unpack { .. } | Error::Io { .. } => ErrorKind::Internal,
            Error::Store(e) => e.kind(),
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

fn query(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Store(store::Error::Query { what, source })
}

/// One unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Short numeric id (the directory name).
    pub id: i64,
    /// Chain id: identifies this layer *and* everything below it.
    pub chain_id: String,
    /// Chain id of the layer below, if any.
    pub parent: Option<String>,
    /// Digest of the uncompressed layer tar.
    pub diff_id: String,
    /// Bytes of file content.
    pub size: u64,
}

/// Chain ids for a list of diff ids, bottom layer first (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// Reads through, hashing and counting.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps `reader` in the decompressor its first bytes call for (gzip, zstd, or none).
pub fn decompressed<'a>(
    reader: impl Read + Send + 'a,
) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
    } else {
        Box::new(buffered)
    })
}

/// The snapshot directory tree and its index.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    store: Arc<Store>,
}

fn row_to_snapshot(r: &rusqlite::Row<'_>) -> rusqlite::Result<Snapshot> {
    Ok(Snapshot {
        id: r.get(0)?,
        chain_id: r.get(1)?,
        parent: r.get(2)?,
        diff_id: r.get(3)?,
        size: r.get::<_, i64>(4)?.max(0) as u64,
    })
}

impl Snapshotter {
    /// Opens the tree under `data_root`, dropping half-made snapshots a crash left behind:
    /// temp directories, rows without a directory, directories without a row.
    pub fn open(data_root: &Path, store: Arc<Store>) -> Result<Snapshotter> {
        let root = data_root.join("snapshots");
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        let s = Snapshotter { root, store };
        let known: Vec<Snapshot> = s.list()?;
        for snap in &known {
            if !s.dir(snap.id).join("fs").is_dir() {
                s.store.with_conn(|c| {
                    c.execute("DELETE FROM snapshots WHERE id = ?1", [snap.id])
                        .map_err(|source| store::Error::Query {
                            what: "drop orphan snapshot row",
                            source,
                        })
                })?;
            }
        }
        let ids: std::collections::HashSet<String> =
            known.iter().map(|s| s.id.to_string()).collect();
        for entry in std::fs::read_dir(&s.root)
            .map_err(io("list", &s.root))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(s)
    }

    fn dir(&self, id: i64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// The directory holding a snapshot's files (an overlay lower dir).
    pub fn fs_path(&self, id: i64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// The snapshot for `chain_id`, if unpacked.
    pub fn get(&self, chain_id: &str) -> Result<Option<Snapshot>> {
        let chain_id = chain_id.to_owned();
        self.store
            .with_conn(|c| {
                c.query_row(
                    "SELECT id, chain_id, parent, diff_id, size_bytes FROM snapshots WHERE chain_id = ?1",
                    [&chain_id],
                    row_to_snapshot,
                )
                .optional()
                .map_err(|source| store::Error::Query { what: "find snapshot", source })
            })
            .map_err(Error::from)
    }

    /// Every snapshot.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        self.store
            .with_conn(|c| {
                let mut stmt = c
                    .prepare("SELECT id, chain_id, parent, diff_id, size_bytes FROM snapshots ORDER BY id")
                    .map_err(|source| store::Error::Query { what: "list snapshots", source })?;
                let rows = stmt
                    .query_map([], row_to_snapshot)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(|source| store::Error::Query { what: "list snapshots", source })?;
                Ok(rows)
            })
            .map_err(Error::from)
    }

    /// Unpacks a (possibly compressed) layer tar read from `reader` as the snapshot
    /// `chain_id`, verifying its diff id. On any failure nothing is left behind.
    pub fn unpack_layer(
        &self,
        chain_id: &str,
        parent: Option<&str>,
        diff_id: &str,
        reader: impl Read + Send,
        options: UnpackOptions,
    ) -> Result<Snapshot> {
        if let Some(existing) = self.get(chain_id)? {
            return Ok(existing);
        }
        let temp = self.root.join(format!(
            "tmp-{}",
            store::random_hex(8).map_err(io("name a temp dir in", &self.root))?
        ));
        let fs = temp.join("fs");
        std::fs::create_dir_all(&fs).map_err(io("create", &fs))?;
        let guard = RemoveOnDrop(temp.clone());
        let mut hashing = HashingReader {
            inner: decompressed(reader).map_err(io("read layer into", &fs))?,
            hasher: Sha256::new(),
        };
        let stats = unpack::unpack(&mut hashing, &fs, options).map_err(|source| Error::Unpack {
            diff_id: diff_id.to_owned(),
            source,
        })?;
        // The diff id covers the whole stream, including the tar's trailing padding.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io("read layer into", &fs))?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != diff_id {
            return Err(Error::DiffIdMismatch {
                expected: diff_id.to_owned(),
                actual,
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (chain, parent_s, diff) = (
            chain_id.to_owned(),
            parent.map(str::to_owned),
            diff_id.to_owned(),
        );
        let inserted: Option<i64> = self.store.with_conn(|c| {
            c.query_row(
                "INSERT INTO snapshots (chain_id, parent, diff_id, size_bytes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (chain_id) DO NOTHING RETURNING id",
                rusqlite::params![chain, parent_s, diff, stats.bytes as i64, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(|source| store::Error::Query {
                what: "record snapshot",
                source,
            })
        })?;
        let Some(id) = inserted else {
            // Another pull unpacked the same layer meanwhile; keep theirs.
            return self
                .get(chain_id)?
                .ok_or_else(|| query("find snapshot")(rusqlite::Error::QueryReturnedNoRows));
        };
        let dest = self.dir(id);
        if let Err(e) = std::fs::rename(&temp, &dest) {
            let _ = self.store.with_conn(|c| {
                c.execute("DELETE FROM snapshots WHERE id = ?1", [id])
                    .map_err(|source| store::Error::Query {
                        what: "undo snapshot",
                        source,
                    })
            });
            return Err(io("publish", &dest)(e));
        }
        std::mem::forget(guard);
        Ok(Snapshot {
            id,
            chain_id: chain_id.to_owned(),
            parent: parent.map(str::to_owned),
            diff_id: diff_id.to_owned(),
            size: stats.bytes,
        })
    }

    /// Deletes a snapshot and its files.
    pub fn remove(&self, chain_id: &str) -> Result<()> {
        let Some(snap) = self.get(chain_id)? else {
            return Ok(());
        };
        let dir = self.dir(snap.id);
        // Rename first so a crash mid-delete leaves an orphan `open` cleans, not a half tree.
        let doomed = self.root.join(format!("tmp-rm-{}", snap.id));
        std::fs::rename(&dir, &doomed).map_err(io("remove", &dir))?;
        self.store.with_conn(|c| {
            c.execute("DELETE FROM snapshots WHERE id = ?1", [snap.id])
                .map_err(|source| store::Error::Query {
                    what: "remove snapshot",
                    source,
                })
        })?;
        std::fs::remove_dir_all(&doomed).map_err(io("remove", &doomed))?;
        Ok(())
    }
}

/// Removes a directory tree when dropped, unless forgotten.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aaaa".to_owned();
        let b = "sha256:bbbb".to_owned();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(ids[1], expected);
    }

    #[test]
    fn sniffs_compression() {
        use std::io::Write;
        let plain = b"plain tar bytes".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        for input in [plain.clone(), gz, zst] {
            let mut out = Vec::new();
            decompressed(&input[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain);
        }
    }
}
