//! Safe extraction of one layer tar into one snapshot directory, in overlay form.
//!
//! Every filesystem operation is relative to a directory fd opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so no entry — through `..`, an
//! absolute path, a symlink or a hardlink planted by an earlier entry — can touch anything
//! outside the layer directory. Hostile entries fail the layer with a message naming them.
//! OCI whiteouts become overlay whiteouts (0/0 character devices) and opaque directories get
//! `trusted.overlay.opaque=y`. Ownership, modes, xattrs, mtimes and hardlinks are kept.
//! Blocking; needs root for chown, whiteouts and trusted xattrs.

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

/// Prefix of OCI whiteout files.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Extraction settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Create character and block device entries (refused by default).
    pub allow_device_nodes: bool,
}

/// What a finished extraction produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries processed.
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Why a layer could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry tries to reach outside the layer, or is forbidden.
    #[error("hostile layer entry {entry:?}: {reason}")]
    Hostile {
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// The tar stream is malformed or truncated.
    #[error("malformed layer tar{}: {source}", entry.as_ref().map(|e| format!(" at {e:?}")).unwrap_or_default())]
    Tar {
        /// The last entry read, if any.
        entry: Option<String>,
        /// The parser's or reader's error.
        source: std::io::Error,
    },
    /// A filesystem operation on a valid entry failed.
    #[error("cannot {what} layer entry {entry:?}: {source}")]
    Fs {
        /// What was being done.
        what: &'static str,
        /// The entry.
        entry: String,
        /// Why.
        source: std::io::Error,
    },
}

fn hostile(entry: &Path, reason: impl Into<String>) -> UnpackError {
    UnpackError::Hostile {
        entry: entry.display().to_string(),
        reason: reason.into(),
    }
}

fn fs_err(what: &'static str, entry: &Path) -> impl FnOnce(Errno) -> UnpackError + use<> {
    let entry = entry.display().to_string();
    move |e| UnpackError::Fs {
        what,
        entry,
        source: e.into(),
    }
}

/// Turns a tar path into a clean path relative to the layer root. `..` is refused; an
/// absolute path is rooted at the layer (as docker and GNU tar do), never at the host's `/`.
fn clean_relative(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err(hostile(raw, "path contains `..`")),
            Component::Prefix(_) => return Err(hostile(raw, "path has a prefix")),
        }
    }
    Ok(out)
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens directory `rel` beneath `root` (creating missing components when `create`).
fn open_dir(
    root: &OwnedFd,
    rel: &Path,
    entry: &Path,
    create: bool,
) -> Result<OwnedFd, UnpackError> {
    let path: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    match openat2(root, path, beneath(flags)) {
        Ok(fd) => return Ok(fd),
        Err(Errno::EXDEV | Errno::ELOOP) => {
            return Err(hostile(
                entry,
                "path leads outside the layer through a symlink",
            ));
        }
        Err(Errno::ENOENT) if create => {}
        Err(Errno::ENOTDIR) => {
            return Err(hostile(entry, "a parent of this path is not a directory"));
        }
        Err(e) => return Err(fs_err("open parent of", entry)(e)),
    }
    let mut dir =
        openat2(root, ".", beneath(flags)).map_err(fs_err("open layer root for", entry))?;
    for part in rel.components() {
        let name = part.as_os_str();
        match openat2(&dir, name, beneath(flags)) {
            Ok(fd) => dir = fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(fs_err("create parent of", entry)(e)),
                }
                dir =
                    openat2(&dir, name, beneath(flags)).map_err(fs_err("open parent of", entry))?;
            }
            Err(Errno::EXDEV | Errno::ELOOP) => {
                return Err(hostile(
                    entry,
                    "path leads outside the layer through a symlink",
                ));
            }
            Err(Errno::ENOTDIR) => {
                return Err(hostile(entry, "a parent of this path is not a directory"));
            }
            Err(e) => return Err(fs_err("open parent of", entry)(e)),
        }
    }
    Ok(dir)
}

/// Removes whatever is at `name` in `dir` (recursively for directories).
fn remove_existing(dir: &OwnedFd, name: &OsStr, entry: &Path) -> Result<(), UnpackError> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => {
            // The dir fd is O_PATH, so resolve through /proc to reach the directory itself;
            // remove_dir_all never follows symlinks inside it.
            let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
            std::fs::remove_dir_all(&path).map_err(|source| UnpackError::Fs {
                what: "replace directory at",
                entry: entry.display().to_string(),
                source,
            })
        }
        Err(e) => Err(fs_err("replace", entry)(e)),
    }
}

fn set_xattr_fd(fd: &impl AsFd, name: &str, value: &[u8]) -> Result<(), Errno> {
    let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid fd, NUL-terminated name, and a (pointer, length) pair from a live slice.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(Errno::last()) }
}

fn set_xattr_nofollow(dir: &OwnedFd, name: &OsStr, key: &str, value: &[u8]) -> Result<(), Errno> {
    let path = CString::new(
        PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .join(name)
            .as_os_str()
            .as_bytes(),
    )
    .map_err(|_| Errno::EINVAL)?;
    let ckey = CString::new(key).map_err(|_| Errno::EINVAL)?;
    // SAFETY: NUL-terminated strings and a live slice.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            ckey.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// xattrs a layer may carry. Overlay's own attributes would let a layer forge whiteouts or
/// redirects, so they are dropped, as are unknown namespaces.
fn xattr_allowed(key: &str) -> bool {
    !key.starts_with("trusted.overlay.")
        && (key.starts_with("user.")
            || key.starts_with("trusted.")
            || key == "security.capability"
            || key.starts_with("system.posix_acl_"))
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<Meta, UnpackError> {
    let header = entry.header();
    let bad = |what: &str, e: std::io::Error| UnpackError::Tar {
        entry: Some(path.display().to_string()),
        source: std::io::Error::other(format!("{what}: {e}")),
    };
    // An empty numeric field means 0, as GNU tar and Go's archive/tar read it; anything
    // else that is not a number is an error.
    let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
    let old = header.as_old();
    let number = |what: &str, value: std::io::Result<u64>, field: &[u8]| match value {
        Ok(v) => Ok(v),
        Err(_) if blank(field) => Ok(0),
        Err(e) => Err(bad(what, e)),
    };
    let uid = number("uid", header.uid(), &old.uid)?;
    let gid = number("gid", header.gid(), &old.gid)?;
    let mode = header.mode().map_err(|e| bad("mode", e))?;
    let mtime = number("mtime", header.mtime(), &old.mtime)?;
    let mut xattrs = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                && xattr_allowed(name)
            {
                xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        uid: u32::try_from(uid).map_err(|_| hostile(path, "uid out of range"))?,
        gid: u32::try_from(gid).map_err(|_| hostile(path, "gid out of range"))?,
        mode: mode & 0o7777,
        mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
        xattrs,
    })
}

fn times(mtime: i64) -> TimeSpec {
    TimeSpec::new(mtime, 0)
}

/// chown of `name` in `dir` itself, never what a symlink points at.
fn chown_nofollow(
    dir: &OwnedFd,
    name: &OsStr,
    owner: (Option<Uid>, Option<Gid>),
    entry: &Path,
) -> Result<(), UnpackError> {
    fchownat(dir, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(fs_err("chown", entry))
}

/// Sets atime and mtime of `name` in `dir` itself, never what a symlink points at.
fn set_times_nofollow(
    dir: &OwnedFd,
    name: &OsStr,
    mtime: i64,
    entry: &Path,
) -> Result<(), UnpackError> {
    let t = times(mtime);
    utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(fs_err("set times on", entry))
}

/// Extracts the tar stream `reader` into the empty directory `dest`.
pub fn unpack(
    reader: impl Read,
    dest: &Path,
    options: UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root: OwnedFd = nix::fcntl::open(
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(fs_err("open destination", dest))?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    // Directory metadata is applied last, deepest first, so that writing children does
    // not disturb mtimes and read-only directories can still be filled.
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let entries = archive.entries().map_err(|source| UnpackError::Tar {
        entry: None,
        source,
    })?;
    let mut last: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Tar {
            entry: last.clone(),
            source,
        })?;
        let raw = entry
            .path()
            .map_err(|source| UnpackError::Tar {
                entry: last.clone(),
                source,
            })?
            .into_owned();
        last = Some(raw.display().to_string());
        stats.entries += 1;
        let rel = clean_relative(&raw)?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            // The layer root itself ("./"): keep its metadata for the root directory.
            if kind.is_dir() {
                dirs.push((rel, meta_of(&mut entry, &raw)?));
            }
            continue;
        }
        let name = rel.file_name().map(OsStr::to_owned).unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_owned();
        let parent = open_dir(&root, &parent_rel, &raw, true)?;
        let name_str = name.to_string_lossy();

        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if name_str == OPAQUE_MARKER {
                let dir = openat2(
                    &root,
                    if parent_rel.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        &parent_rel
                    },
                    beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
                )
                .map_err(fs_err("open opaque directory", &raw))?;
                set_xattr_fd(&dir, "trusted.overlay.opaque", b"y")
                    .map_err(fs_err("mark opaque", &raw))?;
            } else if hidden.starts_with(".wh.") {
                // aufs metadata (.wh..wh.plnk and friends): meaningless for overlay.
            } else {
                if hidden.is_empty() || hidden.contains('/') {
                    return Err(hostile(&raw, "malformed whiteout"));
                }
                remove_existing(&parent, OsStr::new(hidden), &raw)?;
                mknodat(&parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(fs_err("create whiteout", &raw))?;
            }
            continue;
        }

        let meta = meta_of(&mut entry, &raw)?;
        let owner = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
        match kind {
            tar::EntryType::Directory => {
                match openat2(
                    &parent,
                    name.as_os_str(),
                    beneath(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
                ) {
                    Ok(_) => {}
                    Err(_) => {
                        remove_existing(&parent, &name, &raw)?;
                        mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o700))
                            .map_err(fs_err("create directory", &raw))?;
                    }
                }
                dirs.push((rel, meta));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&parent, &name, &raw)?;
                let fd = openat2(
                    &parent,
                    name.as_os_str(),
                    beneath(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW)
                        .mode(Mode::from_bits_truncate(0o600)),
                )
                .map_err(fs_err("create file", &raw))?;
                let mut file = std::fs::File::from(fd);
                stats.bytes +=
                    std::io::copy(&mut entry, &mut file).map_err(|source| UnpackError::Tar {
                        entry: Some(raw.display().to_string()),
                        source,
                    })?;
                nix::unistd::fchown(&file, owner.0, owner.1).map_err(fs_err("chown", &raw))?;
                nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(meta.mode))
                    .map_err(fs_err("chmod", &raw))?;
                for (k, v) in &meta.xattrs {
                    set_xattr_fd(&file, k, v).map_err(fs_err("set xattr on", &raw))?;
                }
                let t = times(meta.mtime);
                nix::sys::stat::futimens(&file, &t, &t).map_err(fs_err("set times on", &raw))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|source| UnpackError::Tar {
                        entry: Some(raw.display().to_string()),
                        source,
                    })?
                    .ok_or_else(|| hostile(&raw, "symlink without target"))?
                    .into_owned();
                remove_existing(&parent, &name, &raw)?;
                // A symlink may point anywhere: it is resolved inside the container's root
                // at run time, and extraction never follows it (RESOLVE_BENEATH above).
                symlinkat(target.as_os_str(), &parent, name.as_os_str())
                    .map_err(fs_err("create symlink", &raw))?;
                chown_nofollow(&parent, &name, owner, &raw)?;
                for (k, v) in &meta.xattrs {
                    set_xattr_nofollow(&parent, &name, k, v)
                        .map_err(fs_err("set xattr on", &raw))?;
                }
                set_times_nofollow(&parent, &name, meta.mtime, &raw)?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|source| UnpackError::Tar {
                        entry: Some(raw.display().to_string()),
                        source,
                    })?
                    .ok_or_else(|| hostile(&raw, "hardlink without target"))?
                    .into_owned();
                let target = clean_relative(&target_raw).map_err(|_| {
                    hostile(
                        &raw,
                        format!("hardlink target {} leaves the layer", target_raw.display()),
                    )
                })?;
                let target_name = target
                    .file_name()
                    .ok_or_else(|| hostile(&raw, "hardlink to the layer root"))?;
                let not_in_layer = || {
                    hostile(
                        &raw,
                        format!(
                            "hardlink target {} is not in this layer",
                            target_raw.display()
                        ),
                    )
                };
                let target_parent =
                    match open_dir(&root, target.parent().unwrap_or(Path::new("")), &raw, false) {
                        Err(UnpackError::Fs { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            return Err(not_in_layer());
                        }
                        other => other?,
                    };
                remove_existing(&parent, &name, &raw)?;
                linkat(
                    &target_parent,
                    target_name,
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    if e == Errno::ENOENT {
                        not_in_layer()
                    } else {
                        fs_err("create hardlink", &raw)(e)
                    }
                })?;
            }
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ if !options.allow_device_nodes => {
                        return Err(hostile(&raw, "device nodes are not allowed in layers"));
                    }
                    _ => {
                        let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                        let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                        let flag = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (
                            flag,
                            nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                        )
                    }
                };
                remove_existing(&parent, &name, &raw)?;
                mknodat(
                    &parent,
                    name.as_os_str(),
                    sflag,
                    Mode::from_bits_truncate(meta.mode),
                    dev,
                )
                .map_err(fs_err("create node", &raw))?;
                chown_nofollow(&parent, &name, owner, &raw)?;
                set_times_nofollow(&parent, &name, meta.mtime, &raw)?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => return Err(hostile(&raw, format!("unsupported entry type {other:?}"))),
        }
    }
    for (rel, meta) in dirs.into_iter().rev() {
        let path: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let dir = openat2(
            &root,
            path,
            beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
        )
        .map_err(fs_err("reopen directory", &rel))?;
        nix::unistd::fchown(
            &dir,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(fs_err("chown", &rel))?;
        nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(meta.mode))
            .map_err(fs_err("chmod", &rel))?;
        for (k, v) in &meta.xattrs {
            set_xattr_fd(&dir, k, v).map_err(fs_err("set xattr on", &rel))?;
        }
        let t = times(meta.mtime);
        nix::sys::stat::futimens(&dir, &t, &t).map_err(fs_err("set times on", &rel))?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_refuses_paths() {
        assert_eq!(
            clean_relative(Path::new("./a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert_eq!(clean_relative(Path::new("./")).unwrap(), PathBuf::new());
        assert!(matches!(
            clean_relative(Path::new("a/../../b")),
            Err(UnpackError::Hostile { .. })
        ));
        assert_eq!(
            clean_relative(Path::new("/etc/passwd")).unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(clean_relative(Path::new("/")).unwrap(), PathBuf::new());
    }

    #[test]
    fn overlay_attributes_from_layers_are_dropped() {
        assert!(!xattr_allowed("trusted.overlay.opaque"));
        assert!(!xattr_allowed("trusted.overlay.redirect"));
        assert!(!xattr_allowed("security.selinux"));
        assert!(xattr_allowed("user.foo"));
        assert!(xattr_allowed("security.capability"));
    }
}
