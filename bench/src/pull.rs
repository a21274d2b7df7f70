//! `berth-bench pull`: a ~200 MB, 10-layer image of random data on a loopback
//! docker-registry, pulled cold (empty store) and warm (everything present) by berth, docker
//! and podman, interleaved round by round, each with its own data root.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use sha2::Digest;

use crate::{Berthd, Latency, Machine, Target, machine};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Incompressible bytes from a fixed-seed xorshift generator (reproducible, fast).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn layer_tar(index: usize, size: usize) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let data = random_bytes(size, 0x9e37_79b9_7f4a_7c15 ^ index as u64);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, format!("data/layer-{index}.bin"), &data[..])?;
    Ok(builder.into_inner()?)
}

/// Debian's docker-registry on a loopback port, storage in a temp dir.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> anyhow::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("storage").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if ureq::get(&format!("http://{}/v2/", reg.addr))
                .call()
                .is_ok()
            {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("docker-registry did not start")
    }

    fn push_blob(&self, repo: &str, data: &[u8]) -> anyhow::Result<String> {
        let digest = sha256(data);
        let resp =
            ureq::post(&format!("http://{}/v2/{repo}/blobs/uploads/", self.addr)).send_empty()?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("upload location")?
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        ureq::put(&format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(data)?;
        Ok(digest)
    }

    /// Pushes the benchmark image; returns its total compressed size.
    fn push_big_image(&self, repo: &str, layers: usize, layer_size: usize) -> anyhow::Result<u64> {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        let mut total = 0;
        for i in 0..layers {
            let tar = layer_tar(i, layer_size)?;
            diff_ids.push(sha256(&tar));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar)?;
            let gz = gz.finish()?;
            total += gz.len() as u64;
            let digest = self.push_blob(repo, &gz)?;
            descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": gz.len()}));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?;
        let config_digest = self.push_blob(repo, &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))?;
        ureq::put(&format!("http://{}/v2/{repo}/manifests/latest", self.addr))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send(&manifest[..])?;
        Ok(total)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dockerd on its own data root and socket, without touching the host's network.
pub(crate) struct Dockerd {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
    /// The host's iptables rules before a bridged dockerd changed them (restored on drop:
    /// dockerd leaves its chains and a FORWARD policy of DROP behind).
    saved_iptables: Option<Vec<u8>>,
}

impl Dockerd {
    /// `unix://...` of this daemon.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn start() -> anyhow::Result<Dockerd> {
        Self::start_with(false)
    }

    /// dockerd with its default bridge network and iptables rules (for the network
    /// scenario; it changes the host's firewall while it runs, as docker does).
    pub(crate) fn start_bridged() -> anyhow::Result<Dockerd> {
        Self::start_with(true)
    }

    fn start_with(bridged: bool) -> anyhow::Result<Dockerd> {
        let network: &[&str] = if bridged {
            &[]
        } else {
            &["--iptables=false", "--ip6tables=false", "--bridge=none"]
        };
        let saved_iptables = if bridged {
            let out = Command::new("iptables-save")
                .output()
                .context("iptables-save (apt-get install iptables)")?;
            Some(out.stdout)
        } else {
            None
        };
        let dir = tempfile::tempdir()?;
        let sock = dir.path().join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .args(["--host", &host])
            .args(network)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd (apt-get install docker.io)")?;
        let d = Dockerd {
            child,
            host,
            dir,
            saved_iptables,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["version"]).is_ok() {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default()
        )
    }

    pub(crate) fn docker(&self, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new("docker").arg("-H").arg(&self.host).args(args))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
        if let Some(rules) = self.saved_iptables.take() {
            // iptables-restore only replaces the tables it is given: empty the ones dockerd
            // (and podman's netavark) filled first, so that a host without rules gets none.
            for args in [
                &["-t", "nat", "-F"][..],
                &["-t", "nat", "-X"],
                &["-t", "filter", "-F"],
                &["-t", "filter", "-X"],
                &["-P", "FORWARD", "ACCEPT"],
            ] {
                let _ = Command::new("iptables")
                    .args(args)
                    .stderr(Stdio::null())
                    .status();
            }
            let restored = Command::new("iptables-restore")
                .stdin(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    if let Some(mut stdin) = c.stdin.take() {
                        std::io::Write::write_all(&mut stdin, &rules)?;
                    }
                    c.wait()
                });
            if !restored.is_ok_and(|s| s.success()) {
                eprintln!("could not restore the host's iptables rules after dockerd");
            }
            let _ = Command::new("ip")
                .args(["link", "del", "docker0"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// podman with its own storage root.
pub(crate) struct Podman {
    root: PathBuf,
    runroot: PathBuf,
    _dir: tempfile::TempDir,
    /// podman's default bridges that did not exist before (removed on drop: podman leaves
    /// them behind, and `system reset` does not take them).
    new_bridges: Vec<&'static str>,
}

/// The bridges podman's default network makes (CNI and netavark backends).
const PODMAN_BRIDGES: [&str; 2] = ["cni-podman0", "podman0"];

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Podman {
    pub(crate) fn new() -> anyhow::Result<Podman> {
        let dir = tempfile::tempdir()?;
        // crun refuses this machine's hybrid cgroups, and the default ulimits exceed what
        // the sandbox allows: runc, cgroupfs and explicit ulimits make podman work here.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )?;
        Ok(Podman {
            root: dir.path().join("root"),
            runroot: dir.path().join("run"),
            _dir: dir,
            new_bridges: PODMAN_BRIDGES
                .into_iter()
                .filter(|b| !link_exists(b))
                .collect(),
        })
    }

    pub(crate) fn podman_output(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::run::run(
            Command::new("podman")
                .env("CONTAINERS_CONF", self._dir.path().join("containers.conf"))
                .arg("--root")
                .arg(&self.root)
                .arg("--runroot")
                .arg(&self.runroot)
                .args(["--storage-driver", "overlay"])
                .args(args),
        )
    }

    pub(crate) fn podman(&self, args: &[&str]) -> anyhow::Result<()> {
        self.podman_output(args).map(drop)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["system", "reset", "--force"]);
        for bridge in &self.new_bridges {
            if link_exists(bridge) {
                let _ = Command::new("ip")
                    .args(["link", "del", bridge])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

#[derive(Debug, Serialize)]
struct EngineResult {
    engine: &'static str,
    cold: Latency,
    warm: Latency,
}

#[derive(Debug, Serialize)]
struct PullReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    image: String,
    compressed_bytes: u64,
    rounds: usize,
    engines: Vec<EngineResult>,
    cold_speedup_vs_docker: Option<f64>,
    cold_speedup_vs_podman: Option<f64>,
    targets: Vec<Target>,
}

/// Runs the scenario.
pub fn pull(
    bin_dir: &Path,
    out_dir: &Path,
    rounds: usize,
    layers: usize,
    layer_mb: usize,
    peers: bool,
) -> anyhow::Result<()> {
    let registry = Registry::start()?;
    eprintln!(
        "building and pushing a {layers}-layer image of {} MB ...",
        layers * layer_mb
    );
    let compressed = registry.push_big_image("bench/big", layers, layer_mb * 1024 * 1024)?;
    let image = format!("{}/bench/big:latest", registry.addr);

    let berthd = Berthd::start(bin_dir)?;
    let berth = bin_dir.join("berth");
    let berth_host = format!("unix://{}", berthd.socket.display());
    let berth_cmd = |args: &[&str]| run(Command::new(&berth).arg("-H").arg(&berth_host).args(args));
    let dockerd = if peers { Some(Dockerd::start()?) } else { None };
    let podman = if peers && which("podman") {
        Some(Podman::new()?)
    } else {
        None
    };

    let mut samples: Vec<(&'static str, Vec<Duration>, Vec<Duration>)> =
        vec![("berth", vec![], vec![])];
    if dockerd.is_some() {
        samples.push(("docker", vec![], vec![]));
    }
    if podman.is_some() {
        samples.push(("podman", vec![], vec![]));
    }
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (engine, cold, warm) in samples.iter_mut() {
            let (c, w) = match *engine {
                "berth" => {
                    let _ = berth_cmd(&["rmi", "-f", &image]);
                    let c = timed(|| berth_cmd(&["pull", "-q", &image]))?;
                    let w = timed(|| berth_cmd(&["pull", "-q", &image]))?;
                    (c, w)
                }
                "docker" => {
                    let d = dockerd.as_ref().context("dockerd")?;
                    let _ = d.docker(&["rmi", "-f", &image]);
                    let c = timed(|| d.docker(&["pull", "-q", &image]))?;
                    let w = timed(|| d.docker(&["pull", "-q", &image]))?;
                    (c, w)
                }
                _ => {
                    let p = podman.as_ref().context("podman")?;
                    let _ = p.podman(&["rmi", "-f", &image]);
                    let c = timed(|| p.podman(&["pull", "-q", "--tls-verify=false", &image]))?;
                    let w = timed(|| p.podman(&["pull", "-q", "--tls-verify=false", &image]))?;
                    (c, w)
                }
            };
            cold.push(c);
            warm.push(w);
        }
    }
    let engines: Vec<EngineResult> = samples
        .into_iter()
        .map(|(engine, cold, warm)| EngineResult {
            engine,
            cold: Latency::of(cold),
            warm: Latency::of(warm),
        })
        .collect();
    let median = |name: &str| {
        engines
            .iter()
            .find(|e| e.engine == name)
            .map(|e| e.cold.median_us)
    };
    let berth_cold = median("berth").unwrap_or(f64::NAN);
    let vs_docker = median("docker").map(|d| d / berth_cold);
    let vs_podman = median("podman").map(|p| p / berth_cold);
    let report = PullReport {
        scenario: "pull",
        machine: machine(),
        command: format!(
            "berth-bench pull --rounds {rounds} --layers {layers} --layer-mb {layer_mb}"
        ),
        image: format!("{layers} layers x {layer_mb} MB random data, gzip"),
        compressed_bytes: compressed,
        rounds,
        engines,
        cold_speedup_vs_docker: vs_docker,
        cold_speedup_vs_podman: vs_podman,
        targets: vec![Target {
            name: "cold pull + unpack speed-up over docker (median)",
            target: "≥ 2.5x".into(),
            measured: vs_docker
                .map_or_else(|| "not measured (no docker)".into(), |r| format!("{r:.2}x")),
            met: vs_docker.is_some_and(|r| r >= 2.5),
        }],
    };
    crate::write_results(out_dir, "pull", &report, &render(&report))
}

pub(crate) fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn render(r: &PullReport) -> String {
    let mut s = String::from("# Pull benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nImage: {} ({:.1} MB compressed) on a loopback docker-registry.\nCommand: `{}` (release build). Each round pulls with every engine in turn (interleaved): cold = image removed first (empty store for it), warm = pulled again.\n\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.mem_total_kb / 1024, r.machine.kernel,
        r.image, r.compressed_bytes as f64 / 1e6, r.command
    ));
    s.push_str(
        "| engine | cold median | cold p90 | warm median | warm p90 |\n|---|---|---|---|---|\n",
    );
    for e in &r.engines {
        s.push_str(&format!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |\n",
            e.engine,
            e.cold.median_us / 1000.0,
            e.cold.p90_us / 1000.0,
            e.warm.median_us / 1000.0,
            e.warm.p90_us / 1000.0
        ));
    }
    s.push('\n');
    if let Some(d) = r.cold_speedup_vs_docker {
        s.push_str(&format!("Cold pull: berth is {d:.2}x faster than docker"));
        if let Some(p) = r.cold_speedup_vs_podman {
            s.push_str(&format!(" and {p:.2}x faster than podman"));
        }
        s.push_str(".\n");
    }
    s.push('\n');
    s.push_str(&crate::targets_table(&r.targets));
    s
}
