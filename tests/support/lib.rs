//! Test support: start real berthd processes on temporary data roots and sockets, talk to
//! them through the typed client, the CLI, or raw bytes; run a real registry; make layers.

pub mod dockerd;
pub mod registry;
pub mod tarball;
pub mod token;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use berth_api::jsonrpsee::ws_client::{WsClient, WsClientBuilder};

/// Directory holding the workspace's binaries: `BERTH_BIN_DIR`, else the profile directory
/// this test binary was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Path of a workspace binary, which must have been built (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (tests/run.sh does)",
        path.display()
    );
    path
}

/// The nftables table of the berthd on `data_root` (as `core/src/network/hostnet.rs` names it).
pub fn table_name(data_root: &std::path::Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_root.as_os_str().as_encoded_bytes());
    format!("berth_{}", hex::encode(&digest[..4]))
}

/// A berthd process on its own temporary data root and socket, stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Temporary directory holding data root, socket and logs.
    pub dir: tempfile::TempDir,
    /// The data root.
    pub data_root: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// berthd's stderr.
    pub log: PathBuf,
    /// This daemon's default bridge (each test daemon gets its own, and its own subnets).
    pub bridge: String,
    net_args: Vec<String>,
}

/// A number per daemon started by this test process, for its bridge name and subnets.
fn next_daemon_index() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Daemon {
    /// Starts berthd with default settings and waits until it answers.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts berthd with extra flags and waits until it answers.
    pub fn start_with(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_root = dir.path().join("root");
        let socket = dir.path().join("berthd.sock");
        // Daemons run side by side: each gets a bridge and subnets of its own
        // (172.20.N.0/24 for `bridge`, /28s of 172.21.N.0/24 for user networks).
        let n = next_daemon_index() % 250;
        let bridge = format!("berth{n}t");
        let net_args = vec![
            "--bridge-name".to_owned(),
            bridge.clone(),
            "--bridge-subnet".to_owned(),
            format!("172.20.{n}.0/24"),
            "--default-address-pool".to_owned(),
            format!("172.21.{n}.0/24"),
            "--default-address-pool-size".to_owned(),
            "28".to_owned(),
        ];
        let mut d = Daemon {
            child: None,
            data_root,
            socket,
            log: dir.path().join("berthd.log"),
            dir,
            bridge,
            net_args,
        };
        let child = d.spawn(extra);
        d.child = Some(child);
        d.wait_ready();
        d
    }

    /// Runs another berthd with this daemon's paths plus `extra`, expecting it to exit.
    pub fn run_second(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(bin("berthd"));
        cmd.arg("--data-root")
            .arg(&self.data_root)
            .arg("--socket")
            .arg(&self.socket)
            .args(extra);
        output_with_timeout(cmd, Duration::from_secs(20))
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        Command::new(bin("berthd"))
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("debug")
            .args(&self.net_args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berthd")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berthd exited at start ({status}):\n{}", self.log_text());
            }
            if let Ok((200, body)) = http_post(
                &self.socket,
                br#"{"jsonrpc":"2.0","id":1,"method":"system.ping"}"#,
            ) && body.contains("\"OK\"")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not answer within 20 s:\n{}", self.log_text());
    }

    /// berthd's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What berthd logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `unix://<socket>`, for `-H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A WebSocket client session.
    pub async fn client(&self) -> WsClient {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("connect to berthd");
        WsClientBuilder::default()
            .build_with_stream("ws://localhost/", stream)
            .await
            .expect("WebSocket handshake")
    }

    /// POSTs `body` as JSON-RPC over HTTP; returns status and body.
    pub fn post(&self, body: &[u8]) -> (u16, String) {
        http_post(&self.socket, body).expect("HTTP exchange with berthd")
    }

    /// Runs the `berth` CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("berth"));
        cmd.arg("-H").arg(self.host()).args(args);
        output_with_timeout(cmd, Duration::from_secs(60))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGTERM);
        wait_with_timeout(&mut child, Duration::from_secs(30))
    }

    /// SIGKILLs berthd (no cleanup at all), as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts berthd again on the same data root and socket.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill berthd first");
        let child = self.spawn(&[]);
        self.child = Some(child);
        self.wait_ready();
    }

    /// Starts berthd again on the same data root and socket, with extra flags.
    pub fn restart_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "stop or kill berthd first");
        let child = self.spawn(extra);
        self.child = Some(child);
        self.wait_ready();
    }

    /// Runs the `berth` CLI against this daemon as another user (`setpriv`, with the user's
    /// groups), from a copy of the binary anyone may run.
    pub fn cli_as(&self, user: &str, args: &[&str]) -> Output {
        let berth = self.dir.path().join("berth-cli");
        if !berth.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(bin("berth"), &berth).expect("copy the CLI");
            std::fs::set_permissions(&berth, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the CLI");
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("open the daemon's directory");
        }
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={}", primary_group(user)))
            .arg("--init-groups")
            .arg("--reset-env")
            .arg(&berth)
            .arg("-H")
            .arg(self.host())
            .args(args);
        output_with_timeout(cmd, Duration::from_secs(60))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.kill_containers();
        self.remove_network_state();
        // A failing test shows what its daemon logged (the harness prints a failing test's
        // output, and the log goes with the temporary directory).
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(&self.log)
        {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "--- berthd log ({}), last {} lines:",
                self.bridge,
                tail.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Daemon {
    /// What berthd keeps on the host across restarts by design (its default bridge and its
    /// nftables table) goes with the test daemon. Tests remove the networks they create.
    fn remove_network_state(&self) {
        // Namespaces of containers that outlived a failed test's daemon.
        if let Ok(entries) = std::fs::read_dir(self.data_root.join("netns")) {
            for entry in entries.flatten() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(entry.path())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // The default bridge, and the bridges of networks a failed test did not remove:
        // left behind, they keep their subnets' routes and break the next daemon that
        // gets the same subnets.
        let mut bridges = vec![self.bridge.clone()];
        let state = self.data_root.join("plugins/bridge/state/networks.json");
        if let Ok(text) = std::fs::read_to_string(state)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(networks) = v["networks"].as_object()
        {
            bridges.extend(
                networks
                    .values()
                    .filter_map(|n| n["bridge"].as_str())
                    .filter(|b| b.starts_with("berth"))
                    .map(str::to_owned),
            );
        }
        let links = Command::new("ip").args(["-o", "link", "show"]).output();
        if let Ok(out) = links {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(name) = line.split(": ").nth(1) else {
                    continue;
                };
                let name = name.split('@').next().unwrap_or(name);
                if bridges.iter().any(|b| b == name) {
                    let _ = Command::new("ip").args(["link", "del", name]).output();
                }
            }
        }
        let table = table_name(&self.data_root);
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &table])
            .output();
    }

    /// Containers outlive berthd by design; a test that failed half-way must not leave its
    /// containers (and their shims and cgroups) running on the host. Kills every process
    /// in the cgroups of this data root's containers, then gives the shims a moment to
    /// record the exits and remove the groups.
    fn kill_containers(&self) {
        let Ok(entries) = std::fs::read_dir(self.data_root.join("containers")) else {
            return;
        };
        let ids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let groups = |id: &str| -> Vec<PathBuf> {
            ["/sys/fs/cgroup/pids/berth", "/sys/fs/cgroup/berth"]
                .iter()
                .map(|root| Path::new(root).join(id))
                .filter(|p| p.exists())
                .collect()
        };
        let mut live = false;
        for id in &ids {
            for group in groups(id) {
                let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                    signal(pid, libc::SIGKILL);
                    live = true;
                }
            }
            // A paused container acts on the SIGKILL only once thawed.
            let _ = std::fs::write(
                format!("/sys/fs/cgroup/freezer/berth/{id}/freezer.state"),
                "THAWED",
            );
            let _ = std::fs::write(format!("/sys/fs/cgroup/berth/{id}/cgroup.freeze"), "0");
        }
        if live {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && ids.iter().any(|id| !groups(id).is_empty()) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn output_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let status = wait_with_timeout(&mut child, limit);
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// One HTTP/1.1 POST of a JSON body over a Unix socket, connection closed after.
pub fn http_post(socket: &Path, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let raw = raw_exchange(socket, &req)?;
    parse_http_response(&raw)
}

/// Writes `bytes` to the socket and reads until the peer closes (or 10 s pass).
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // The server may answer (and close) before reading everything, e.g. an oversized body.
    // No half-close: hyper takes EOF on its read side as the client going away.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Status code and (de-chunked) body of a raw HTTP/1.1 response.
pub fn parse_http_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response in {text:?}")))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Whether this process runs as root (namespace, mount and cgroup tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips a root-only test with a message, except under `CI=true`, where a skip is a failure.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("this test needs root, and CI must run it as root");
            }
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// Imports a busybox image (from Debian's busybox-static) as `name`, with `sh`, `echo`,
/// `cat`, `ls`, `sleep`, `id`, `true`... applets, `/etc/passwd` with root and nobody.
pub fn import_busybox(daemon: &Daemon, name: &str) {
    import_busybox_with(daemon, name, &[]);
}

/// [`import_busybox`] with extra Dockerfile-style `changes` (`VOLUME /data`, ...).
pub fn import_busybox_with(daemon: &Daemon, name: &str, changes: &[&str]) {
    let root = tempfile::tempdir().expect("tempdir");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir");
    std::fs::create_dir_all(root.path().join("tmp")).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    for applet in [
        "sh", "echo", "cat", "ls", "sleep", "id", "true", "false", "hostname", "touch", "grep",
        "pwd", "env", "mount", "trap", "wc", "head", "unshare", "mkdir", "stty", "tty", "ip",
        "wget", "httpd", "nc", "nslookup", "ping", "yes",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
    }
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        root.path().join("etc/group"),
        "root:x:0:\nnogroup:x:65534:\n",
    )
    .expect("group");
    // Beside the root, named after it: tests import concurrently.
    let tarball = root.path().with_extension("tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(ok.success());
    let mut args = vec!["import", "-c", "CMD [\"/bin/sh\"]", "-c", "ENV PATH=/bin"];
    for c in changes {
        args.extend(["-c", c]);
    }
    args.extend([tarball.to_str().expect("utf-8"), name]);
    let out = daemon.cli(&args);
    let _ = std::fs::remove_file(&tarball);
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A component built by `plugins/build.sh`, by its path under `plugins/dist/`
/// (`fixtures/spin.wasm`). Missing: a failure under CI, else `None` (the caller skips).
pub fn plugin_component(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(relative);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: plugins/build.sh must run before the tests",
            path.display()
        );
    }
    eprintln!(
        "skipped: {} is missing (run plugins/build.sh)",
        path.display()
    );
    None
}

/// Lines of this process's mountinfo that mention `path`.
pub fn mounts_under(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(path.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

fn primary_group(user: &str) -> String {
    let out = Command::new("id").args(["-g", user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A test CA, a server certificate for localhost and 127.0.0.1, and a client certificate
/// per name in `clients`, made in `dir` by deploy/gen-certs.sh (`ca.pem`, `server-cert.pem`,
/// `server-key.pem`, `NAME-cert.pem`, `NAME-key.pem`).
pub fn test_certificates(dir: &Path, clients: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gen-certs.sh");
    let mut cmd = Command::new("sh");
    cmd.arg(&script);
    for client in clients {
        cmd.args(["--client", client]);
    }
    let out = cmd.arg(dir).output().expect("run deploy/gen-certs.sh");
    assert!(
        out.status.success(),
        "gen-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes (once per machine) a system user with these supplementary groups, each made too.
pub fn ensure_user(user: &str, groups: &[&str]) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for g in groups {
        let ok = Command::new("groupadd")
            .args(["-f", g])
            .status()
            .expect("groupadd");
        assert!(ok.success(), "groupadd {g}");
    }
    let exists = Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("id")
        .success();
    if !exists {
        let mut cmd = Command::new("useradd");
        cmd.args(["-M", "-s", "/usr/sbin/nologin"]);
        if !groups.is_empty() {
            cmd.arg("-G").arg(groups.join(","));
        }
        let ok = cmd.arg(user).status().expect("useradd");
        assert!(ok.success(), "useradd {user}");
    } else if !groups.is_empty() {
        let ok = Command::new("usermod")
            .arg("-a")
            .arg("-G")
            .arg(groups.join(","))
            .arg(user)
            .status()
            .expect("usermod");
        assert!(ok.success(), "usermod {user}");
    }
}

/// Unix seconds a little ahead of now: a `berth events --until` that includes what just
/// happened and ends the stream by itself.
pub fn until_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    format!("{:.3}", now.as_secs_f64() + 0.5)
}
