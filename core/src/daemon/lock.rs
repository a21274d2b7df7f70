//! Exclusive ownership of a data root (an flock'd lock file holding our pid) and of the API
//! socket path (refused while another process is accepting on it).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::Error;

/// Name of the lock file inside the data root.
pub const LOCK_FILE: &str = "berthd.lock";

/// Held for the daemon's lifetime; the kernel drops the lock if the process dies.
#[derive(Debug)]
pub struct DataRootLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl DataRootLock {
    /// Takes the lock or says which process holds it. Blocking.
    pub fn acquire(data_root: &Path) -> Result<DataRootLock, Error> {
        let path = data_root.join(LOCK_FILE);
        let io = |source| Error::Io {
            what: "open lock file",
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(Error::DataRootInUse {
                    data_root: data_root.to_owned(),
                    holder: pid.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataRootLock { _file: file, path })
    }

    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes `socket` free to bind: refuses if something accepts on it, removes a stale one.
pub fn claim_socket_path(socket: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                what: "inspect socket path",
                path: socket.to_owned(),
                source,
            });
        }
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(Error::SocketPathTaken {
                    socket: socket.to_owned(),
                });
            }
        }
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(Error::SocketLive {
            socket: socket.to_owned(),
        }),
        Err(_) => std::fs::remove_file(socket).map_err(|source| Error::Io {
            what: "remove stale socket",
            path: socket.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_root_is_refused_with_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataRootLock::acquire(dir.path()).unwrap();
        let err = DataRootLock::acquire(dir.path()).unwrap_err();
        match err {
            Error::DataRootInUse { holder, .. } => assert_eq!(holder, Some(std::process::id())),
            other => panic!("unexpected {other}"),
        }
        drop(first);
        DataRootLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn live_socket_is_refused_and_stale_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        claim_socket_path(&path).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(matches!(
            claim_socket_path(&path),
            Err(Error::SocketLive { .. })
        ));
        drop(listener);
        claim_socket_path(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            claim_socket_path(&path),
            Err(Error::SocketPathTaken { .. })
        ));
    }
}
