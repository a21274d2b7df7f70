//! Filesystem helpers shared by the engine's modules. All blocking.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes allocated on disk under `root` (like `du -s`), counting each hard-linked inode once
/// and never following symlinks or crossing into other filesystems. Missing paths count 0;
/// unreadable entries are skipped, since usage is an estimate, not an inventory.
pub fn disk_usage(root: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    let dev = meta.dev();
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        if meta.dev() != dev {
            continue;
        }
        if meta.nlink() <= 1 || seen.insert(meta.ino()) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            for entry in entries.flatten() {
                if let Ok(m) = entry.metadata() {
                    stack.push((entry.path(), m));
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_once_and_ignores_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
        let empty = disk_usage(dir.path());
        std::fs::write(dir.path().join("a"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        let used = disk_usage(dir.path()) - empty;
        assert!((64 * 1024..128 * 1024).contains(&used), "{used}");
    }
}

/// `std::fs::remove_dir_all`, where a path that is already gone is success.
pub fn remove_dir_all_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Deepest nesting [`remove_tree_beneath`] descends into.
const MAX_REMOVE_DEPTH: usize = 1024;

/// Deletes the directory `relative` (no `..`, no symlinks on the way) beneath `root` and
/// everything in it, walking open descriptors only: a symlink planted anywhere while it runs
/// is deleted as a link, never followed out of `root`.
pub fn remove_tree_beneath(root: &Path, relative: &str) -> std::io::Result<()> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
    use nix::sys::stat::Mode;
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let beneath = || {
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV
    };
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let (parent_rel, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    if name.is_empty() || name == "." || name == ".." {
        return Err(std::io::Error::other(format!(
            "{relative:?} does not name a directory"
        )));
    }
    let parent = if parent_rel.is_empty() {
        root_fd
    } else {
        openat2(
            &root_fd,
            parent_rel,
            OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(beneath()),
        )?
    };
    let dir = openat2(
        &parent,
        name,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(beneath()),
    )?;
    empty_dir(dir, 0)?;
    unlinkat(&parent, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

fn empty_dir(dir: std::os::fd::OwnedFd, depth: usize) -> std::io::Result<()> {
    use nix::fcntl::{AtFlags, OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstatat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    if depth > MAX_REMOVE_DEPTH {
        return Err(std::io::Error::other(format!(
            "directories nest deeper than {MAX_REMOVE_DEPTH} levels"
        )));
    }
    let listing = nix::dir::Dir::from_fd(nix::unistd::dup(&dir)?)?;
    let mut names = Vec::new();
    let mut listing = listing;
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    for name in names {
        let st = match fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
            let child = openat(
                &dir,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            empty_dir(child, depth + 1)?;
            unlinkat(&dir, name.as_c_str(), UnlinkatFlags::RemoveDir)?;
        } else {
            unlinkat(&dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod remove_tests {
    use super::remove_tree_beneath;

    #[test]
    fn removes_a_tree_and_never_follows_links_out() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("trash/v1/data/a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        std::fs::write(root.join("trash/v1/data/a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("trash/v1/data/link")).unwrap();
        remove_tree_beneath(&root, "trash/v1").unwrap();
        assert!(!root.join("trash/v1").exists());
        assert!(root.join("trash").is_dir());
        assert!(outside.join("keep").exists());
        // A symlink on the way is refused, not followed.
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        assert!(remove_tree_beneath(&root, "evil/x").is_err());
        assert!(remove_tree_beneath(&root, "evil").is_err());
        assert!(remove_tree_beneath(&root, "../outside").is_err());
        assert!(outside.join("keep").exists());
    }
}
