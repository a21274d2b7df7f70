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
