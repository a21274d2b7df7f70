//! `berth-shim archive-get|archive-put BUNDLE PID|- PATH`: `docker cp` for one container.
//! The shim enters the container's mount namespace (running) or mounts its root
//! filesystem in a private mount namespace of its own (stopped; nothing shows on the
//! host and everything goes when the shim exits), chroots into that root, and writes a
//! tar of PATH to stdout or unpacks a tar from stdin at PATH. Paths, symlinks and `..`
//! resolve inside the container's root: a copy can never reach the host.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::{ShimConfig, files};

/// Exit code when the path does not exist in the container.
pub const EXIT_NOT_FOUND: i32 = 2;

struct Failure {
    code: i32,
    message: String,
}

fn failure(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

fn enter_root(bundle: &Path, pid: Option<i32>) -> Result<(), Failure> {
    match pid {
        Some(pid) => {
            let ns = nix::fcntl::open(
                format!("/proc/{pid}/ns/mnt").as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| failure(format!("the container is not running: {e}")))?;
            // Entering a mount namespace also moves root and cwd to its root.
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
                .map_err(|e| failure(format!("enter the container's mount namespace: {e}")))?;
        }
        None => {
            let raw = std::fs::read(bundle.join(files::SHIM))
                .map_err(|e| failure(format!("read the container's shim config: {e}")))?;
            let config: ShimConfig = serde_json::from_slice(&raw)
                .map_err(|e| failure(format!("parse the container's shim config: {e}")))?;
            nix::sched::unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| failure(format!("create a mount namespace: {e}")))?;
            mount::<str, str, str, str>(
                None,
                "/",
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )
            .map_err(|e| failure(format!("make mounts private: {e}")))?;
            super::init::mount_rootfs(&config).map_err(|e| failure(e.message))?;
            nix::unistd::chroot(&config.rootfs)
                .map_err(|e| failure(format!("enter the root filesystem: {e}")))?;
        }
    }
    nix::unistd::chdir("/").map_err(|e| failure(format!("chdir /: {e}")))?;
    Ok(())
}

fn absolute(path: &str) -> Result<PathBuf, Failure> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(failure(format!("{path:?} is not an absolute path")));
    }
    Ok(p.to_path_buf())
}

fn finish(result: Result<(), Failure>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("{}", f.message);
            f.code
        }
    }
}

/// Writes a tar of `path` (one top-level entry named after it) to stdout.
pub fn get(bundle: &Path, pid: Option<i32>, path: &str) -> i32 {
    finish((|| {
        enter_root(bundle, pid)?;
        let path = absolute(path)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Failure {
            code: if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                1
            },
            message: format!("{}: {e}", path.display()),
        })?;
        let name = berth_api::archive::entry_name(&path);
        let stdout = std::io::stdout().lock();
        let mut builder = tar::Builder::new(std::io::BufWriter::new(stdout));
        builder.follow_symlinks(false);
        let written = if meta.is_dir() {
            builder.append_dir_all(&name, &path)
        } else {
            builder.append_path_with_name(&path, &name)
        };
        written
            .and_then(|()| builder.into_inner())
            .and_then(|mut w| w.flush())
            .map_err(|e| failure(format!("archive {}: {e}", path.display())))
    })())
}

/// Unpacks a tar from stdin at `path`: into it when it is a directory, else as it (the
/// archive's top-level entry renamed), like `docker cp`.
pub fn put(bundle: &Path, pid: Option<i32>, path: &str) -> i32 {
    finish((|| {
        enter_root(bundle, pid)?;
        let dest = absolute(path)?;
        berth_api::archive::unpack_at(std::io::stdin().lock(), &dest).map_err(|e| Failure {
            code: if matches!(e, berth_api::archive::UnpackError::NoParent(_)) {
                EXIT_NOT_FOUND
            } else {
                1
            },
            message: e.to_string(),
        })?;
        // Drain what follows the archive's end so the writer never sees a broken pipe.
        let _ = std::io::copy(
            &mut std::io::stdin().lock().take(1 << 20),
            &mut std::io::sink(),
        );
        Ok(())
    })())
}
