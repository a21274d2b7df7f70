//! berth-bench: reproducible measurements of berth beside docker, podman and runc, written
//! to `bench/results/` as JSON and Markdown. Each scenario is a subcommand; `berth-bench all`
//! runs every one and `berth-bench report` turns their results into one report with plots.
//! `berth-bench api` measures the API round trip and berthd's idle memory.

mod authz;
mod logs;
mod net;
mod plugin;
mod pull;
mod report;
mod run;
mod starts;
mod traces;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "berth-bench", about = "Benchmarks for berth")]
struct Cli {
    /// Directory with the berthd and berth binaries (build them with --release).
    #[arg(long, default_value = "target/release", global = true)]
    bin_dir: PathBuf,
    /// Where results are written.
    #[arg(long, default_value = "bench/results", global = true)]
    out_dir: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Every scenario in turn (each against docker, podman and runc where it has peers),
    /// then the report (bench/results/report.md with SVG plots).
    All {
        /// Fewer rounds and smaller sizes: the whole run in under 5 minutes.
        #[arg(long)]
        quick: bool,
        /// Only berth (no docker/podman/runc).
        #[arg(long)]
        no_peers: bool,
    },
    /// The report alone, from the scenario results already in the output directory.
    Report,
    /// Detached starts back to back, then `ps -a` with that many containers and with many
    /// more (created, not started), against docker and podman.
    Starts {
        /// Containers started one after another (`run -d`).
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Containers in all for the second `ps -a` measurement.
        #[arg(long, default_value_t = 1000)]
        ps_at: usize,
        /// Timed `ps -a` calls at each size.
        #[arg(long, default_value_t = 10)]
        ps_rounds: usize,
        /// Only berth (no docker/podman).
        #[arg(long)]
        no_peers: bool,
    },
    /// Log throughput: lines per second from a container printing as fast as it can,
    /// through berth's local log, its json-file and syslog drivers, and docker's json-file.
    Logs {
        /// Lines the container prints per round.
        #[arg(long, default_value_t = 200_000)]
        lines: usize,
        /// Rounds (every engine and driver in each).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only berth (no docker).
        #[arg(long)]
        no_peers: bool,
    },
    /// The cost of OpenTelemetry export on `run --rm`: berthd without and with an OTLP
    /// endpoint (a sink in this process), alternating blocks.
    Tracing {
        /// Blocks per configuration.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Timed runs per block.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// `system.ping` round trips over the Unix socket with a keep-alive HTTP client, and
    /// berthd's RSS/PSS when idle.
    Api {
        /// Measured round trips (after 1000 warm-up calls).
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
    },
    /// Cold and warm pulls of a ~200 MB, 10-layer image from a loopback registry, against
    /// docker and podman in the same run.
    Pull {
        /// Rounds (each pulls with every engine, interleaved).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Layers in the image.
        #[arg(long, default_value_t = 10)]
        layers: usize,
        /// Megabytes of random data per layer.
        #[arg(long, default_value_t = 20)]
        layer_mb: usize,
        /// Only berth (no docker/podman).
        #[arg(long)]
        no_peers: bool,
    },
    /// The plugin path: compiling and cached loading of the `local` volume driver,
    /// instantiation, and the latency of calls into it.
    Plugin {
        /// The component (built by plugins/build.sh).
        #[arg(long, default_value = "plugins/dist/local.wasm")]
        component: PathBuf,
        /// The Rego authorization policy component (built by plugins/build.sh).
        #[arg(long, default_value = "plugins/dist/rego.wasm")]
        policy_component: PathBuf,
        /// The Rego policy the component runs (root must be allowed to list).
        #[arg(long, default_value = authz::TEAM_LABELS)]
        policy: PathBuf,
        /// Measured calls per function.
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
    },
    /// `run --rm IMAGE true` on each engine's default bridge network, and TCP throughput
    /// through a published port against the host's loopback.
    Network {
        /// Measured runs per engine.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// MiB sent in the throughput test.
        #[arg(long, default_value_t = 512)]
        mib: usize,
        /// Only berth (no docker/podman).
        #[arg(long)]
        no_peers: bool,
    },
    /// The cost of an authorization policy (the built-in Rego one) on real API calls:
    /// decision latency from the decision log, and `container.list` round trips and
    /// throughput with and without the policy.
    Authz {
        /// Measured calls per configuration. The added p99 is a difference of two tails: on the
        /// 2-CPU benchmark VM it moved by up to ±15 µs from run to run at 20 000 calls, and
        /// by about ±6 µs at 60 000.
        #[arg(long, default_value_t = 60_000)]
        calls: usize,
        /// Containers in the list.
        #[arg(long, default_value_t = 10)]
        containers: usize,
        /// The Rego policy the gated daemon runs (root must be allowed to list and must
        /// see the containers, which are labelled `team=root`).
        #[arg(long, default_value = authz::TEAM_LABELS)]
        policy: PathBuf,
    },
    /// `run --rm IMAGE true` end to end, and supervisor memory with idle containers,
    /// against docker and podman in the same run.
    Run {
        /// Measured runs per engine.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// Idle containers per engine for the memory measurement.
        #[arg(long, default_value_t = 20)]
        idle: usize,
        /// Only berth (no docker/podman).
        #[arg(long)]
        no_peers: bool,
    },
}

/// Latency summary in microseconds.
#[derive(Debug, Serialize)]
struct Latency {
    samples: usize,
    median_us: f64,
    p90_us: f64,
    p99_us: f64,
    mean_us: f64,
    min_us: f64,
    /// The distribution, for the report's plots: percentiles 0, 1, ..., 100.
    percentiles_us: Vec<f64>,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
        Latency {
            samples: samples.len(),
            median_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            mean_us: mean,
            min_us: us(samples[0]),
            percentiles_us: (0..=100).map(|p| at(f64::from(p) / 100.0)).collect(),
        }
    }
}

/// The CPU time process `pid` has used so far (every thread), read from its CPU-time clock:
/// nanoseconds, where /proc's utime and stime count whole ticks.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock is a valid place for the clock id.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if rc != 0 {
        bail!(
            "no CPU-time clock for process {pid}: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: now is a valid timespec to fill.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        bail!(
            "reading the CPU time of process {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Memory of one process, from /proc/PID/smaps_rollup.
#[derive(Debug, Serialize)]
struct Memory {
    rss_kb: u64,
    pss_kb: u64,
}

fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading smaps_rollup of {pid}"))?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kb: field("Rss:"),
        pss_kb: field("Pss:"),
    })
}

#[derive(Debug, Serialize)]
struct ApiResult {
    scenario: &'static str,
    machine: Machine,
    command: String,
    ping_keepalive_http: Latency,
    berthd_idle_at_start: Memory,
    berthd_idle_after_load: Memory,
    berthd_idle_restarted: Memory,
    targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
struct Target {
    name: &'static str,
    target: String,
    measured: String,
    met: bool,
}

/// Writes a scenario's results as `STEM.json` and `STEM.md` in `out_dir`, and prints the
/// Markdown.
fn write_results(
    out_dir: &Path,
    stem: &str,
    result: &impl Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let json = out_dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(result)?)?;
    let md = out_dir.join(format!("{stem}.md"));
    std::fs::write(&md, markdown)?;
    print!("{markdown}");
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(())
}

/// A Markdown table of `targets`, for a scenario's report.
fn targets_table(targets: &[Target]) -> String {
    let mut s = String::from("| target | goal | measured | met |\n|---|---|---|---|\n");
    for t in targets {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t.name,
            t.target,
            t.measured,
            if t.met { "yes" } else { "no" }
        ));
    }
    s
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_total_kb: u64,
    kernel: String,
    /// How an idle CPU waits (the cpuidle driver, and a KVM guest's halt polling): in a
    /// virtual machine it sets what waking a halted CPU costs, which every round trip pays.
    idle: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default(),
        mem_total_kb: meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        idle: idle_waiting(),
    }
}

/// How this machine's idle CPUs wait, as a report's machine line names it.
fn idle_waiting() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let driver =
        read("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_else(|| "none".into());
    match read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Some(ns) if driver == "haltpoll" => {
            format!("cpuidle driver haltpoll, guest halt polling up to {ns} ns")
        }
        _ => format!("cpuidle driver {driver}"),
    }
}

/// A berthd on a temporary data root, killed on drop.
struct Berthd {
    child: Child,
    /// The API socket.
    pub socket: PathBuf,
    root: PathBuf,
    /// Its default bridge (`--bridge-name`, else `berth0`), deleted with it.
    bridge: String,
    _dir: tempfile::TempDir,
}

impl Berthd {
    fn start(bin_dir: &Path) -> anyhow::Result<Berthd> {
        Berthd::start_with(bin_dir, None, &[])
    }

    /// Starts berthd with extra flags, on `root` (kept after the daemon) or a fresh data
    /// root; its socket is always in a fresh directory.
    fn start_with(bin_dir: &Path, root: Option<&Path>, extra: &[&str]) -> anyhow::Result<Berthd> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("berthd.sock");
        let root = root.map_or_else(|| dir.path().join("root"), Path::to_path_buf);
        let bin = bin_dir.join("berthd");
        if !bin.exists() {
            bail!(
                "{} missing: run `cargo build --release --workspace --bins`",
                bin.display()
            );
        }
        let child = Command::new(&bin)
            .arg("--data-root")
            .arg(&root)
            .arg("--socket")
            .arg(&socket)
            .arg("--log-level")
            .arg("warn")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let bridge = extra
            .iter()
            .position(|a| *a == "--bridge-name")
            .and_then(|i| extra.get(i + 1))
            .map_or_else(|| "berth0".to_owned(), |b| (*b).to_owned());
        let d = Berthd {
            child,
            socket,
            root,
            bridge,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut c) = KeepAlive::connect(&d.socket)
                && c.ping().is_ok()
            {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("berthd did not answer within 20 s")
    }
}

impl Berthd {
    /// The CPU time berthd has used so far, all its threads together.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.child.id())
    }

    /// Stops berthd with SIGTERM, as a service manager would, so it finishes what it does at
    /// shutdown (flushing spans, the event log); waits up to 20 s.
    fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What berthd keeps across restarts by design goes with the benchmark's daemon: its
        // default bridge and its nftables table (named after its data root, see
        // core/src/network/hostnet.rs).
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
        let table = format!("berth_{}", hex::encode(&digest[..4]));
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &table])
            .stderr(Stdio::null())
            .status();
    }
}

/// A minimal HTTP/1.1 keep-alive client: one connection, one request at a time.
struct KeepAlive {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

const PING: &[u8] = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 47\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system.ping\"}";

impl KeepAlive {
    fn connect(socket: &Path) -> std::io::Result<KeepAlive> {
        let s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(KeepAlive {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    fn ping(&mut self) -> anyhow::Result<()> {
        let body = self.exchange(PING)?;
        if !body.windows(4).any(|w| w == b"\"OK\"") {
            bail!("unexpected answer {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// POSTs a JSON-RPC body; returns the response body.
    fn call(&mut self, json: &str) -> anyhow::Result<Vec<u8>> {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        self.exchange(request.as_bytes())
    }

    fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.writer.write_all(request)?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
            {
                length = v.parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.context("response without content-length")?];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }
}

fn api(cli: &Cli, iterations: usize) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let d = Berthd::start_with(&cli.bin_dir, Some(root.path()), &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_start = memory_of(d.child.id())?;
    let mut client = KeepAlive::connect(&d.socket)?;
    for _ in 0..1000 {
        client.ping()?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        client.ping()?;
        samples.push(t.elapsed());
    }
    drop(client);
    std::thread::sleep(Duration::from_millis(500));
    let idle_after = memory_of(d.child.id())?;
    // The first start compiled the built-in drivers; a restart finds them in the cache, as
    // every later start of an installed berthd does.
    d.stop();
    let again = Berthd::start_with(&cli.bin_dir, Some(root.path()), &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_restarted = memory_of(again.child.id())?;
    drop(again);
    let latency = Latency::of(samples);
    let result = ApiResult {
        scenario: "api",
        machine: machine(),
        command: format!("berth-bench api --iterations {iterations}"),
        targets: vec![
            Target {
                name: "system.ping median round trip (keep-alive, Unix socket)",
                target: "< 100 µs".into(),
                measured: format!("{:.1} µs", latency.median_us),
                met: latency.median_us < 100.0,
            },
            Target {
                name: "berthd idle PSS (first start, built-in drivers compiled)",
                target: "< 15 MB".into(),
                measured: format!("{:.1} MB", idle_after.pss_kb as f64 / 1024.0),
                met: (idle_after.pss_kb as f64 / 1024.0) < 15.0,
            },
            Target {
                name: "berthd idle PSS (restarted, drivers from the cache)",
                target: "< 15 MB".into(),
                measured: format!("{:.1} MB", idle_restarted.pss_kb as f64 / 1024.0),
                met: (idle_restarted.pss_kb as f64 / 1024.0) < 15.0,
            },
        ],
        ping_keepalive_http: latency,
        berthd_idle_at_start: idle_start,
        berthd_idle_after_load: idle_after,
        berthd_idle_restarted: idle_restarted,
    };
    write_results(&cli.out_dir, "api", &result, &render_api(&result))
}

fn render_api(r: &ApiResult) -> String {
    let l = &r.ping_keepalive_http;
    let mut s = String::new();
    s.push_str("# berth API benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build).\n\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.mem_total_kb / 1024,
        r.machine.kernel,
        r.command
    ));
    s.push_str("## system.ping round trip, HTTP/1.1 keep-alive over the Unix socket\n\n");
    s.push_str("| samples | median | p90 | p99 | mean | min |\n|---|---|---|---|---|---|\n");
    s.push_str(&format!(
        "| {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |\n\n",
        l.samples, l.median_us, l.p90_us, l.p99_us, l.mean_us, l.min_us
    ));
    s.push_str(
        "## berthd memory (no containers; the built-in volume, network and logging drivers running)\n\n| when | RSS | PSS |\n|---|---|---|\n",
    );
    for (when, m) in [
        ("idle after the first start", &r.berthd_idle_at_start),
        ("idle after the run", &r.berthd_idle_after_load),
        ("idle after a restart", &r.berthd_idle_restarted),
    ] {
        s.push_str(&format!(
            "| {when} | {:.1} MB | {:.1} MB |\n",
            m.rss_kb as f64 / 1024.0,
            m.pss_kb as f64 / 1024.0
        ));
    }
    s.push_str("\n## Targets\n\n");
    s.push_str(&targets_table(&r.targets));
    s
}

/// How big each scenario of `all` is.
struct Sizes {
    api_calls: usize,
    run_rounds: usize,
    idle: usize,
    network_rounds: usize,
    network_mib: usize,
    starts: usize,
    ps_at: usize,
    ps_rounds: usize,
    pull_rounds: usize,
    pull_layer_mb: usize,
    authz_calls: usize,
    plugin_calls: usize,
    log_lines: usize,
    log_rounds: usize,
    tracing_runs: usize,
}

impl Sizes {
    /// What the issues' targets are stated for (100 idle containers, ps at 1000, a
    /// 200 MB image).
    const FULL: Sizes = Sizes {
        api_calls: 20_000,
        run_rounds: 30,
        idle: 100,
        network_rounds: 30,
        network_mib: 512,
        starts: 100,
        ps_at: 1000,
        ps_rounds: 10,
        pull_rounds: 5,
        pull_layer_mb: 20,
        authz_calls: 60_000,
        plugin_calls: 10_000,
        log_lines: 200_000,
        log_rounds: 3,
        tracing_runs: 20,
    };
    /// Every scenario in about two minutes.
    const QUICK: Sizes = Sizes {
        api_calls: 5_000,
        run_rounds: 10,
        idle: 10,
        network_rounds: 5,
        network_mib: 64,
        starts: 20,
        ps_at: 100,
        ps_rounds: 3,
        pull_rounds: 1,
        pull_layer_mb: 2,
        authz_calls: 3_000,
        plugin_calls: 1_000,
        log_lines: 20_000,
        log_rounds: 1,
        tracing_runs: 5,
    };
}

/// Every scenario, then the report. A scenario that fails is reported and the others still
/// run; the run fails at the end if any did.
fn all(cli: &Cli, quick: bool, peers: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut failed: Vec<String> = Vec::new();
    let mut step = |name: &str, result: anyhow::Result<()>| {
        eprintln!("== {name} done at {:.0} s", started.elapsed().as_secs_f64());
        if let Err(e) = result {
            eprintln!("== {name} FAILED: {e:#}");
            failed.push(format!("{name}: {e:#}"));
        }
    };
    let out = &cli.out_dir;
    let bin = &cli.bin_dir;
    let z = if quick { Sizes::QUICK } else { Sizes::FULL };
    step("api", api(cli, z.api_calls));
    step(
        "run",
        run::run_scenario(bin, out, z.run_rounds, z.idle, peers),
    );
    step(
        "network",
        net::network_scenario(bin, out, z.network_rounds, z.network_mib, peers),
    );
    step(
        "starts",
        starts::starts(bin, out, z.starts, z.ps_at, z.ps_rounds, peers),
    );
    step(
        "pull",
        pull::pull(bin, out, z.pull_rounds, 10, z.pull_layer_mb, peers),
    );
    step(
        "authz",
        authz::authz(bin, out, z.authz_calls, 10, Path::new(authz::TEAM_LABELS)),
    );
    step(
        "logs",
        logs::logs(bin, out, z.log_lines, z.log_rounds, peers),
    );
    step("tracing", traces::tracing_cost(bin, out, 3, z.tracing_runs));
    step(
        "plugin",
        plugin::plugin(
            Path::new("plugins/dist/local.wasm"),
            Path::new("plugins/dist/rego.wasm"),
            Path::new(authz::TEAM_LABELS),
            out,
            z.plugin_calls,
        ),
    );
    let mode = if quick { "all --quick" } else { "all" };
    report::write_with(out, mode, started.elapsed(), &failed)?;
    if !failed.is_empty() {
        bail!(
            "{} scenario(s) failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::All { quick, no_peers } => all(&cli, quick, !no_peers),
        Scenario::Report => report::write(&cli.out_dir),
        Scenario::Starts {
            count,
            ps_at,
            ps_rounds,
            no_peers,
        } => starts::starts(
            &cli.bin_dir,
            &cli.out_dir,
            count.max(1),
            ps_at.max(count),
            ps_rounds.max(1),
            !no_peers,
        ),
        Scenario::Api { iterations } => api(&cli, iterations.max(1)),
        Scenario::Tracing { rounds, runs } => {
            traces::tracing_cost(&cli.bin_dir, &cli.out_dir, rounds.max(1), runs.max(1))
        }
        Scenario::Logs {
            lines,
            rounds,
            no_peers,
        } => logs::logs(
            &cli.bin_dir,
            &cli.out_dir,
            lines.max(1),
            rounds.max(1),
            !no_peers,
        ),
        Scenario::Authz {
            calls,
            containers,
            policy,
        } => authz::authz(
            &cli.bin_dir,
            &cli.out_dir,
            calls.max(100),
            containers,
            &policy,
        ),
        Scenario::Plugin {
            component,
            policy_component,
            policy,
            calls,
        } => plugin::plugin(
            &component,
            &policy_component,
            &policy,
            &cli.out_dir,
            calls.max(100),
        ),
        Scenario::Run {
            rounds,
            idle,
            no_peers,
        } => run::run_scenario(&cli.bin_dir, &cli.out_dir, rounds.max(1), idle, !no_peers),
        Scenario::Network {
            rounds,
            mib,
            no_peers,
        } => net::network_scenario(
            &cli.bin_dir,
            &cli.out_dir,
            rounds.max(1),
            mib.max(1),
            !no_peers,
        ),
        Scenario::Pull {
            rounds,
            layers,
            layer_mb,
            no_peers,
        } => pull::pull(
            &cli.bin_dir,
            &cli.out_dir,
            rounds.max(1),
            layers.max(1),
            layer_mb.max(1),
            !no_peers,
        ),
    }
}
