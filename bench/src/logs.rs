//! `berth-bench logs`: log throughput. A container prints N lines as fast as it can
//! (`yes LINE | head -n N`); the time from `run -d` until every line has reached the
//! logging driver gives lines per second, for berth's local log alone, the `json-file`
//! driver, and the `syslog` driver (TCP, to a receiver in this process that counts every
//! message), against docker's `json-file` on the same machine, rounds interleaved.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::run::{busybox_tarball, run};
use crate::{Berthd, KeepAlive, Machine, Target, machine};

const IMAGE: &str = "bench/busybox:latest";
/// 72 characters, newline excluded: a typical application log line.
const LINE: &str = "2026-12-04T20:00:00Z INFO request served path=/api/items status=200 ms=3";

#[derive(Debug, Serialize)]
struct Throughput {
    /// `berth`, `docker`.
    engine: &'static str,
    /// `local` (berth's local log only), `json-file`, `syslog`.
    driver: &'static str,
    /// Seconds per round, from `run -d` to the last line delivered.
    seconds: Vec<f64>,
    /// Lines per second of the median round.
    median_lines_per_s: f64,
}

#[derive(Debug, Serialize)]
struct LogsReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    lines: usize,
    rounds: usize,
    results: Vec<Throughput>,
    targets: Vec<Target>,
}

/// Counts syslog messages arriving over TCP with octet counting (`LEN SP MSG`).
struct Receiver {
    port: u16,
    received: Arc<AtomicUsize>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let count = Arc::clone(&count);
                std::thread::spawn(move || {
                    let mut reader = BufReader::with_capacity(1 << 20, conn);
                    let mut length = Vec::new();
                    let mut message = Vec::new();
                    loop {
                        length.clear();
                        if reader.read_until(b' ', &mut length).unwrap_or(0) == 0 {
                            return;
                        }
                        let Some(n) = std::str::from_utf8(&length[..length.len() - 1])
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok())
                        else {
                            return;
                        };
                        message.resize(n, 0);
                        if reader.read_exact(&mut message).is_err() {
                            return;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Ok(Receiver { port, received })
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Polls `container.inspect` until `done` says so; the inspect result.
fn wait_inspect(
    client: &mut KeepAlive,
    id: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"container.inspect\",\"params\":{{\"id\":\"{id}\"}}}}"
    );
    loop {
        let body = client.call(&request)?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let result = v["result"].clone();
        if done(&result) {
            return Ok(result);
        }
        if Instant::now() > deadline {
            bail!("container {id} not done in {limit:?}: {result}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the scenario.
pub fn logs(
    bin_dir: &Path,
    out_dir: &Path,
    lines: usize,
    rounds: usize,
    peers: bool,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let tarball = busybox_tarball(work.path())?;
    let tarball = tarball.to_str().context("utf-8 path")?.to_owned();
    let printer = format!("yes '{LINE}' | head -n {lines}");

    let berthd = Berthd::start(bin_dir)?;
    let berth_bin = bin_dir.join("berth");
    let host = format!("unix://{}", berthd.socket.display());
    let berth = |args: &[&str]| run(Command::new(&berth_bin).arg("-H").arg(&host).args(args));
    berth(&["import", &tarball, IMAGE])?;
    let receiver = Receiver::start()?;
    let grant = format!("berth.allow-connect=tcp:127.0.0.1:{}", receiver.port);
    berth(&["plugin", "set", "syslog", &grant])?;
    let syslog_address = format!("syslog-address=tcp://127.0.0.1:{}", receiver.port);
    let mut client = KeepAlive::connect(&berthd.socket)?;
    let limit = Duration::from_secs(600);

    let dockerd = if peers {
        let d = crate::pull::Dockerd::start()?;
        d.docker(&["import", &tarball, IMAGE])?;
        Some(d)
    } else {
        None
    };

    let mut local = Vec::new();
    let mut json_file = Vec::new();
    let mut syslog = Vec::new();
    let mut docker = Vec::new();
    for round in 0..rounds {
        eprintln!("logs: round {}/{rounds}", round + 1);
        // The local log alone: until the container has exited (everything is written).
        let t = Instant::now();
        let id = berth(&[
            "run",
            "-d",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            &printer,
        ])?;
        wait_inspect(&mut client, id.trim(), limit, |v| {
            v["state"]["status"] == "exited"
        })?;
        local.push(t.elapsed().as_secs_f64());
        berth(&["rm", id.trim()])?;

        for (driver, samples) in [("json-file", &mut json_file), ("syslog", &mut syslog)] {
            let before = receiver.received.load(Ordering::Relaxed);
            let t = Instant::now();
            let mut args = vec!["run", "-d", "--network", "none", "--log-driver", driver];
            if driver == "syslog" {
                args.extend(["--log-opt", &syslog_address]);
            }
            args.extend([IMAGE, "sh", "-c", &printer]);
            let id = berth(&args)?;
            let v = wait_inspect(&mut client, id.trim(), limit, |v| {
                v["log_delivery"]["active"] == false
            })?;
            let delivered = v["log_delivery"]["delivered"].as_u64().unwrap_or(0) as usize;
            if driver == "syslog" {
                // The driver has sent everything; wait for the receiver to have it all.
                while receiver.received.load(Ordering::Relaxed) - before < lines
                    && t.elapsed() < limit
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            samples.push(t.elapsed().as_secs_f64());
            if delivered != lines {
                bail!("{driver}: {delivered} of {lines} lines delivered: {v}");
            }
            if driver == "syslog" {
                let got = receiver.received.load(Ordering::Relaxed) - before;
                if got != lines {
                    bail!("syslog: the receiver got {got} of {lines} messages");
                }
            }
            berth(&["rm", id.trim()])?;
        }

        if let Some(d) = &dockerd {
            let docker_cli =
                |args: &[&str]| run(Command::new("docker").arg("-H").arg(d.host()).args(args));
            let t = Instant::now();
            let id = docker_cli(&[
                "run",
                "-d",
                "--network",
                "none",
                "--log-driver",
                "json-file",
                IMAGE,
                "sh",
                "-c",
                &printer,
            ])?;
            docker_cli(&["wait", id.trim()])?;
            docker.push(t.elapsed().as_secs_f64());
            let logged = docker_cli(&["logs", "--tail", "all", id.trim()])?
                .lines()
                .count();
            if logged != lines {
                bail!("docker json-file kept {logged} of {lines} lines");
            }
            docker_cli(&["rm", id.trim()])?;
        }
    }

    let entry = |engine, driver, seconds: Vec<f64>| Throughput {
        engine,
        driver,
        median_lines_per_s: lines as f64 / median(&seconds),
        seconds,
    };
    let mut results = vec![
        entry("berth", "local", local),
        entry("berth", "json-file", json_file),
        entry("berth", "syslog", syslog),
    ];
    if !docker.is_empty() {
        results.push(entry("docker", "json-file", docker));
    }
    let mut targets = Vec::new();
    if let Some(docker) = results.iter().find(|r| r.engine == "docker") {
        for driver in ["json-file", "syslog"] {
            if let Some(ours) = results
                .iter()
                .find(|r| r.engine == "berth" && r.driver == driver)
            {
                targets.push(Target {
                    name: if driver == "json-file" {
                        "json-file driver throughput at least docker's json-file"
                    } else {
                        "syslog driver throughput at least docker's json-file"
                    },
                    target: ">= docker json-file".into(),
                    measured: format!(
                        "{:.0} vs {:.0} lines/s",
                        ours.median_lines_per_s, docker.median_lines_per_s
                    ),
                    met: ours.median_lines_per_s >= docker.median_lines_per_s,
                });
            }
        }
    }
    let report = LogsReport {
        scenario: "logs",
        machine: machine(),
        command: format!("berth-bench logs --lines {lines} --rounds {rounds}"),
        lines,
        rounds,
        results,
        targets,
    };
    crate::write_results(out_dir, "logs", &report, &render(&report))
}

fn render(r: &LogsReport) -> String {
    let mut s = String::from("# Log throughput benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). A container prints {} lines of {} characters as fast as it can (`yes LINE | head -n {}`, busybox-static, `--network none`); a round is timed from `run -d` until every line has reached the driver: for berth, until `inspect` shows the delivery closed with all lines delivered (and, for syslog, until a TCP receiver in the benchmark has counted every message); for berth's local log alone, until the container has exited; for docker, until `docker wait` returns (its json-file is written synchronously; the line count is checked after). {} rounds, engines interleaved.\n\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.mem_total_kb / 1024, r.machine.kernel,
        r.command, r.lines, LINE.len(), r.lines, r.rounds
    ));
    s.push_str(
        "| engine | driver | median lines/s | median round | rounds |\n|---|---|---|---|---|\n",
    );
    for t in &r.results {
        let rounds: Vec<String> = t.seconds.iter().map(|x| format!("{x:.2} s")).collect();
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} s | {} |\n",
            t.engine,
            t.driver,
            t.median_lines_per_s,
            median(&t.seconds),
            rounds.join(", ")
        ));
    }
    if !r.targets.is_empty() {
        s.push('\n');
        s.push_str(&crate::targets_table(&r.targets));
    }
    s
}
