//! A throwaway dockerd (Debian's docker.io) on its own data root and socket, without
//! touching the host's network, to check that what berth produces works with docker.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running dockerd, stopped (and its mounts released) on drop.
#[derive(Debug)]
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

/// Whether dockerd is installed.
pub fn present() -> bool {
    Command::new("dockerd").arg("--version").output().is_ok()
}

impl Dockerd {
    /// Starts dockerd and waits until it answers.
    pub fn start() -> Dockerd {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .args([
                "--host",
                &host,
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["version"]).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(&self.host).args(args);
        crate::output_with_timeout(cmd, Duration::from_secs(120))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        crate::signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}
