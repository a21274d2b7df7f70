//! The content store: blobs addressed by digest under `<data-root>/content/blobs/sha256/`.
//! Ingest writes a temp file while hashing, then verifies size and digest, fsyncs and
//! renames into place: a mismatch or short read leaves nothing visible. Blocking.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use berth_api::ErrorKind;
use sha2::{Digest as _, Sha256};

/// Content store failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The digest is not `sha256:<64 hex>`.
    #[error("unsupported or malformed digest {0:?}: only sha256 is stored")]
    BadDigest(String),
    /// What was written does not hash to what was expected.
    #[error("blob {expected}: content hashes to {actual}")]
    DigestMismatch {
        /// The digest announced.
        expected: String,
        /// The digest computed.
        actual: String,
    },
    /// What was written is not as long as announced.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// No such blob.
    #[error("blob {0} not found")]
    NotFound(String),
    /// A filesystem operation failed.
    #[error("content store: cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadDigest(_) => ErrorKind::InvalidArgument,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => ErrorKind::Unavailable,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                ErrorKind::ResourceExhausted
            }
            Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// The hex part of a valid sha256 digest.
fn hex_of(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(Error::BadDigest(digest.to_owned())),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The blob directory tree.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens the store under `data_root`, creating it and clearing ingests a crash left.
    pub fn open(data_root: &Path) -> Result<ContentStore> {
        let root = data_root.join("content");
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        std::fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
        let _ = std::fs::remove_dir_all(&ingest);
        std::fs::create_dir_all(&ingest).map_err(io("create", &ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    /// Where a blob lives (whether or not it exists).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(hex_of(digest)?))
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &str) -> Option<u64> {
        self.path(digest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
    }

    /// Whether a blob is stored.
    pub fn contains(&self, digest: &str) -> bool {
        self.size(digest).is_some()
    }

    /// Reads a whole (small) blob: manifests, configs.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(digest.to_owned())
            } else {
                io("read", &path)(e)
            }
        })
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(digest.to_owned())
            } else {
                io("open", &path)(e)
            }
        })
    }

    /// Starts writing a blob that must hash to `digest` (and be `size` bytes, when known).
    pub fn ingest(&self, digest: &str, size: Option<u64>) -> Result<Ingest> {
        hex_of(digest)?;
        self.start_ingest(Some(digest.to_owned()), size)
    }

    /// Starts writing a blob whose digest is whatever its content hashes to (local files
    /// berth imports; there is nothing to verify against).
    pub fn ingest_any(&self) -> Result<Ingest> {
        self.start_ingest(None, None)
    }

    fn start_ingest(&self, expected: Option<String>, size: Option<u64>) -> Result<Ingest> {
        let temp = self
            .ingest
            .join(crate::store::random_hex(12).map_err(io("name", &self.ingest))?);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp)
            .map_err(io("create", &temp))?;
        Ok(Ingest {
            file,
            hasher: Sha256::new(),
            written: 0,
            temp,
            expected,
            size,
            blobs: self.blobs.clone(),
        })
    }

    /// Stores bytes the engine produced itself (manifests and configs it writes).
    pub fn write(&self, bytes: &[u8]) -> Result<String> {
        let digest = digest_of(bytes);
        if !self.contains(&digest) {
            let mut ingest = self.ingest(&digest, Some(bytes.len() as u64))?;
            ingest.write_all(bytes).map_err(io("write", &self.ingest))?;
            ingest.commit()?;
        }
        Ok(digest)
    }

    /// Deletes a blob; a missing one is not an error.
    pub fn delete(&self, digest: &str) -> Result<()> {
        let path = self.path(digest)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("delete", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored digest.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.blobs).map_err(io("list", &self.blobs))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(|h| format!("sha256:{h}")))
            .filter(|d| hex_of(d).is_ok())
            .collect())
    }
}

/// A blob being written. Dropped without [`Ingest::commit`], it leaves nothing behind.
#[derive(Debug)]
pub struct Ingest {
    file: File,
    hasher: Sha256,
    written: u64,
    temp: PathBuf,
    expected: Option<String>,
    size: Option<u64>,
    blobs: PathBuf,
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Ingest {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, makes the data durable and the blob visible.
    pub fn commit(mut self) -> Result<String> {
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        let expected = self.expected.clone().unwrap_or_else(|| actual.clone());
        if let Some(size) = self.size
            && size != self.written
        {
            return Err(Error::SizeMismatch {
                digest: expected,
                expected: size,
                actual: self.written,
            });
        }
        if actual != expected {
            return Err(Error::DigestMismatch { expected, actual });
        }
        self.file.sync_all().map_err(io("fsync", &self.temp))?;
        let dest = self.blobs.join(hex_of(&expected)?);
        std::fs::rename(&self.temp, &dest).map_err(io("commit", &dest))?;
        if let Ok(dir) = File::open(&self.blobs) {
            let _ = dir.sync_all();
        }
        Ok(expected)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // After a successful commit the temp name no longer exists; this is then a no-op.
        let _ = std::fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies_then_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = b"hello blob";
        let digest = digest_of(data);
        let mut w = cs.ingest(&digest, Some(data.len() as u64)).unwrap();
        w.write_all(data).unwrap();
        assert!(!cs.contains(&digest), "visible before commit");
        assert_eq!(w.commit().unwrap(), digest);
        assert_eq!(cs.read(&digest).unwrap(), data);
        assert_eq!(cs.list().unwrap(), vec![digest.clone()]);
        cs.delete(&digest).unwrap();
        assert!(!cs.contains(&digest));
    }

    #[test]
    fn mismatches_leave_nothing_visible() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let digest = digest_of(b"right");
        let mut w = cs.ingest(&digest, None).unwrap();
        w.write_all(b"wrong").unwrap();
        assert!(matches!(w.commit(), Err(Error::DigestMismatch { .. })));
        let mut w = cs.ingest(&digest, Some(100)).unwrap();
        w.write_all(b"right").unwrap();
        assert!(matches!(w.commit(), Err(Error::SizeMismatch { .. })));
        let mut w = cs.ingest(&digest, Some(5)).unwrap();
        w.write_all(b"rig").unwrap();
        drop(w);
        assert!(cs.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("content/ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn refuses_bad_digests() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        for bad in ["sha256:xyz", "md5:00", "sha256:../../etc/passwd", ""] {
            assert!(matches!(cs.path(bad), Err(Error::BadDigest(_))), "{bad}");
        }
    }
}
