//! The container runtime, run by `berth-shim`: everything between an OCI runtime spec and a
//! running container process — namespaces, the overlay root filesystem, mounts,
//! `pivot_root`, capabilities, `no_new_privs`, user switching and `execve` — plus the shim's
//! supervision loop (stdio to the log file, exit status recorded atomically, a control
//! socket). **Synchronous code only**: the shim is single-threaded, has no tokio and no
//! wasmtime, and is the only process that clones into namespaces.

pub mod archive;
pub mod cgroup;
mod copyup;
pub mod exec;
pub mod init;
pub mod logfile;
pub mod protocol;
pub mod seccomp;
pub mod shim;
pub mod spec;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File names inside a container's bundle directory.
pub mod files {
    /// The OCI runtime spec.
    pub const SPEC: &str = "config.json";
    /// berth's own launch settings for the shim ([`super::ShimConfig`]).
    pub const SHIM: &str = "shim.json";
    /// The shim's control socket.
    pub const SOCKET: &str = "shim.sock";
    /// The exit record ([`super::protocol::ExitRecord`]), written once, atomically.
    pub const EXIT: &str = "exit.json";
    /// The shim's pid, for reattaching after a daemon restart.
    pub const SHIM_PID: &str = "shim.pid";
}

/// What the shim needs beyond the OCI spec: where the layers are and where to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    /// Container id.
    pub id: String,
    /// Directory holding the snapshot directories; lower dirs are given relative to it so
    /// overlay's mount options stay short.
    pub snapshots_dir: PathBuf,
    /// Lower dirs relative to `snapshots_dir`, top layer first (`12/fs`).
    pub lower_dirs: Vec<String>,
    /// The container's writable layer.
    pub upper_dir: PathBuf,
    /// overlayfs work dir (same filesystem as `upper_dir`).
    pub work_dir: PathBuf,
    /// Where the root filesystem is mounted (inside the container's mount namespace only).
    pub rootfs: PathBuf,
    /// The local log file (JSON lines).
    pub log_path: PathBuf,
    /// Largest log file before it is rotated to `<log>.1` (0: never).
    pub log_max_bytes: u64,
    /// Log files kept, the live one included (configs written before this existed: 2).
    #[serde(default = "two_log_files")]
    pub log_max_files: u32,
    /// The log's line format.
    #[serde(default)]
    pub log_format: logfile::LogFormat,
    /// Files bind-mounted over the image's `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
    pub etc_files: Vec<(PathBuf, String)>,
    /// Give the container a pseudo-terminal as its stdio (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
}

fn two_log_files() -> u32 {
    2
}
