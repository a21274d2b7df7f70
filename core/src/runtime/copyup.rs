//! Filling an empty volume with what the image has at its mount point, as docker does. Runs
//! in the shim, before the volume is bound over that path, whenever the volume is empty at a
//! container's start (docker fills it once, when the container is created; the difference
//! shows only for a volume emptied by hand). Every step is relative to open directory
//! descriptors and never follows a symlink, since both sides hold content the container's
//! image or a previous container controls. An exclusive `flock` on the volume directory
//! makes containers starting together fill it once; entries that appear meanwhile (a
//! running container writing) are left as they are.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fstatat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, symlinkat};

/// Deepest directory nesting copied; deeper trees are refused rather than recursed into.
const MAX_DEPTH: usize = 128;

fn open_dir(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Names in a directory, without `.` and `..`.
fn entries(dir: BorrowedFd<'_>) -> Result<Vec<(std::ffi::CString, Option<Type>)>, Errno> {
    let dup = open_dir(dir, c".")?;
    let mut d = Dir::from_fd(dup)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        out.push((name.to_owned(), e.file_type()));
    }
    Ok(out)
}

/// Copies the image's `source` directory into the volume directory `volume` if the volume
/// is empty and the source is not. Both descriptors may be `O_PATH`.
pub fn fill_empty_volume(source: BorrowedFd<'_>, volume: BorrowedFd<'_>) -> Result<(), String> {
    let src = open_dir(source, c".").map_err(|e| format!("open the image's directory: {e}"))?;
    let dst = open_dir(volume, c".").map_err(|e| format!("open the volume: {e}"))?;
    let dst = nix::fcntl::Flock::lock(
        std::fs::File::from(dst),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| format!("lock the volume: {e}"))?;
    let dst_entries = entries(dst.as_fd()).map_err(|e| format!("read the volume: {e}"))?;
    if !dst_entries.is_empty() {
        return Ok(());
    }
    let src_entries =
        entries(src.as_fd()).map_err(|e| format!("read the image's directory: {e}"))?;
    if src_entries.is_empty() {
        return Ok(());
    }
    copy_dir(src.as_fd(), dst.as_fd(), 0)?;
    copy_meta(src.as_fd(), c".", dst.as_fd(), c".", false)
}

fn copy_dir(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("directories nest deeper than {MAX_DEPTH} levels"));
    }
    for (name, _) in entries(src).map_err(|e| format!("read a directory: {e}"))? {
        let shown = name.to_string_lossy().into_owned();
        let st = fstatat(src, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| format!("stat {shown}: {e}"))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
        match kind {
            SFlag::S_IFDIR => {
                match mkdirat(dst, name.as_c_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => continue,
                    Err(e) => return Err(format!("create {shown}: {e}")),
                }
                let s = open_dir(src, &name).map_err(|e| format!("open {shown}: {e}"))?;
                let d = open_dir(dst, &name).map_err(|e| format!("open {shown}: {e}"))?;
                copy_dir(s.as_fd(), d.as_fd(), depth + 1)?;
            }
            SFlag::S_IFREG => {
                let from = openat(
                    src,
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| format!("open {shown}: {e}"))?;
                let to = match openat(
                    dst,
                    name.as_c_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::EEXIST) => continue,
                    Err(e) => return Err(format!("create {shown}: {e}")),
                };
                let mut from = std::fs::File::from(from);
                let mut to = std::fs::File::from(to);
                std::io::copy(&mut from, &mut to).map_err(|e| format!("copy {shown}: {e}"))?;
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(src, name.as_c_str())
                    .map_err(|e| format!("read link {shown}: {e}"))?;
                match symlinkat(target.as_os_str(), dst, name.as_c_str()) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => continue,
                    Err(e) => return Err(format!("create link {shown}: {e}")),
                }
            }
            _ => match mknodat(dst, name.as_c_str(), kind, perm, st.st_rdev) {
                Ok(()) => {}
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(format!("create {shown}: {e}")),
            },
        }
        copy_meta(src, &name, dst, &name, kind == SFlag::S_IFLNK)?;
    }
    Ok(())
}

/// Owner, permissions (after the owner, which clears set-id bits) and times.
fn copy_meta(
    src: BorrowedFd<'_>,
    src_name: &CStr,
    dst: BorrowedFd<'_>,
    dst_name: &CStr,
    symlink: bool,
) -> Result<(), String> {
    let shown = src_name.to_string_lossy();
    let st = fstatat(src, src_name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!("stat {shown}: {e}"))?;
    fchownat(
        dst,
        dst_name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown {shown}: {e}"))?;
    if !symlink {
        // fchmodat cannot refuse to follow a symlink on this kernel interface: open the
        // entry itself (O_NOFOLLOW) and change it through the descriptor.
        let fd = openat(
            dst,
            dst_name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open {shown}: {e}"))?;
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            proc_path.as_str(),
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| format!("chmod {shown}: {e}"))?;
    }
    utimensat(
        dst,
        dst_name,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| format!("set times of {shown}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::PermissionsExt;

    fn dir_fd(p: &std::path::Path) -> OwnedFd {
        let f = std::fs::File::open(p).unwrap();
        // SAFETY: the raw descriptor comes from a File we own and give up here.
        unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(f)) }
    }

    #[test]
    fn fills_only_an_empty_volume_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("image");
        let vol = t.path().join("vol");
        std::fs::create_dir_all(image.join("sub/deeper")).unwrap();
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(image.join("sub/deeper/f"), b"data").unwrap();
        std::fs::set_permissions(
            image.join("sub/deeper/f"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", image.join("link")).unwrap();
        fill_empty_volume(dir_fd(&image).as_fd(), dir_fd(&vol).as_fd()).unwrap();
        assert_eq!(std::fs::read(vol.join("sub/deeper/f")).unwrap(), b"data");
        let mode = std::fs::metadata(vol.join("sub/deeper/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert_eq!(
            std::fs::read_link(vol.join("link")).unwrap(),
            std::path::Path::new("/etc/passwd")
        );
        // Not empty any more: a second fill changes nothing.
        std::fs::write(image.join("new"), b"x").unwrap();
        fill_empty_volume(dir_fd(&image).as_fd(), dir_fd(&vol).as_fd()).unwrap();
        assert!(!vol.join("new").exists());
    }
}
