//! `docker cp` path rules, shared by the daemon (copying into a container) and the CLI
//! (copying out of one): an archive holds one top-level entry; unpacked at an existing
//! directory it lands inside it, unpacked at any other path it becomes that path.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination's parent directory does not exist.
    #[error("{0}: no such directory")]
    NoParent(PathBuf),
    /// An entry name is absolute or climbs out with `..`.
    #[error("archive entry {0} leaves the destination")]
    Escapes(PathBuf),
    /// Reading the archive or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UnpackError {
    let what = what.into();
    move |source| UnpackError::Io { what, source }
}

/// Unpacks `archive` at `dest` with docker's rules, keeping modes and times (and owners
/// when run as root). Entries never write through a symlink out of the destination (the
/// tar crate's `unpack_in` checks every parent).
pub fn unpack_at(archive: impl Read, dest: &Path) -> Result<(), UnpackError> {
    if dest.is_dir() {
        return unpack_in(archive, dest);
    }
    if dest.as_os_str().as_encoded_bytes().ends_with(b"/") {
        // `dir/` names a directory that must exist, as in docker.
        return Err(UnpackError::NoParent(dest.to_path_buf()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(UnpackError::NoParent(parent));
    }
    // Unpacked beside the destination, then the one top-level entry renamed onto it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = parent.join(format!(".berth-cp-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&staging).map_err(io(format!("create {}", staging.display())))?;
    let result = unpack_in(archive, &staging).and_then(|()| {
        let mut tops = std::fs::read_dir(&staging)
            .map_err(io(format!("read {}", staging.display())))?
            .flatten();
        match (tops.next(), tops.next()) {
            (Some(top), None) => {
                std::fs::rename(top.path(), dest).map_err(io(format!("create {}", dest.display())))
            }
            (None, _) => Ok(()),
            (Some(_), Some(_)) => Err(UnpackError::Io {
                what: format!("copy to {}", dest.display()),
                source: std::io::Error::other("the archive has several top-level entries"),
            }),
        }
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn unpack_in(archive: impl Read, dir: &Path) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(archive);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(io("read the archive"))? {
        let mut entry = entry.map_err(io("read the archive"))?;
        let name = entry.path().map_err(io("read an entry name"))?.into_owned();
        if name
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(UnpackError::Escapes(name));
        }
        let unpacked = entry
            .unpack_in(dir)
            .map_err(io(format!("write {}", dir.join(&name).display())))?;
        if !unpacked {
            return Err(UnpackError::Escapes(name));
        }
    }
    Ok(())
}

/// The top-level entry name an archive of `path` gets (`.` for `/`).
pub fn entry_name(path: &Path) -> PathBuf {
    path.file_name()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn into_a_directory_or_as_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let tar = archive_of(&[("f", b"one"), ("d/x", b"two")]);
        unpack_at(&tar[..], dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"one");
        let single = archive_of(&[("f", b"one")]);
        unpack_at(&single[..], &dir.path().join("renamed")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("renamed")).unwrap(), b"one");
        let tree = archive_of(&[("d/x", b"two")]);
        unpack_at(&tree[..], &dir.path().join("copy")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("copy/x")).unwrap(), b"two");
        assert!(matches!(
            unpack_at(&single[..], &dir.path().join("no/such/dir")),
            Err(UnpackError::NoParent(_))
        ));
        let missing_dir = format!("{}/missing/", dir.path().display());
        assert!(matches!(
            unpack_at(&single[..], Path::new(&missing_dir)),
            Err(UnpackError::NoParent(_))
        ));
    }

    #[test]
    fn entries_cannot_write_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "l", outside.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "l/x", &b"x"[..]).unwrap();
        let raw = b.into_inner().unwrap();
        assert!(unpack_at(&raw[..], dir.path()).is_err());
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn escaping_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = archive_of(&[("aaaaaaa", b"x")]);
        // tar's builder refuses `..`: patch the name in the header instead.
        raw[..7].copy_from_slice(b"../evil");
        let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        assert!(matches!(
            unpack_at(&raw[..], dir.path()),
            Err(UnpackError::Escapes(_))
        ));
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }
}
