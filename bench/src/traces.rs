//! `berth-bench tracing`: the cost of OpenTelemetry export on `run --rm IMAGE true`. The same
//! runs against a berthd without an OTLP endpoint and one exporting every span to an
//! OTLP/HTTP sink in this process (which answers 200 and counts what it gets), both running
//! at once and alternating run by run, so drift on the machine touches both alike.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use crate::run::{busybox_tarball, run};
use crate::{Berthd, Latency, Machine, Target, machine};

const IMAGE: &str = "bench/busybox:latest";

#[derive(Debug, Serialize)]
struct TracingReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    /// `run --rm` without export.
    untraced: Latency,
    /// `run --rm` with every span exported.
    traced: Latency,
    /// OTLP requests and bytes the sink received.
    export_requests: u64,
    export_bytes: u64,
    targets: Vec<Target>,
}

/// An OTLP/HTTP sink: 200 to every POST, counting requests and body bytes.
fn sink() -> anyhow::Result<(u16, Arc<AtomicU64>, Arc<AtomicU64>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (Arc::clone(&requests), Arc::clone(&bytes));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (r, b) = (Arc::clone(&r), Arc::clone(&b));
            std::thread::spawn(move || {
                let Ok(mut writer) = conn.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(conn);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    r.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(length as u64, Ordering::Relaxed);
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, requests, bytes))
}

/// The exporting daemon's default bridge (the plain one has berth0): both run at once.
const SECOND_BRIDGE: &str = "berthtr0";

/// Runs the scenario: `rounds` × `runs` timed `run --rm` on each daemon, alternating run
/// by run (A B, B A, ...) between two daemons running side by side.
pub fn tracing_cost(
    bin_dir: &Path,
    out_dir: &Path,
    rounds: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let tarball = busybox_tarball(work.path())?;
    let tarball = tarball.to_str().context("utf-8 path")?.to_owned();
    let (port, requests, bytes) = sink()?;
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let plain = Berthd::start(bin_dir)?;
    let exporting = Berthd::start_with(
        bin_dir,
        None,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--bridge-name",
            SECOND_BRIDGE,
            "--bridge-subnet",
            "10.230.0.0/16",
            "--default-address-pool",
            "10.231.0.0/16",
        ],
    )?;
    let berth_bin = bin_dir.join("berth");
    let cli = |d: &Berthd, args: &[&str]| {
        run(Command::new(&berth_bin)
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .args(args))
    };
    let args = ["run", "--rm", "--network", "none", IMAGE, "/bin/true"];
    for d in [&plain, &exporting] {
        cli(d, &["import", &tarball, IMAGE])?;
        for _ in 0..3 {
            cli(d, &args)?;
        }
    }
    let total = rounds * runs;
    let mut untraced = Vec::with_capacity(total);
    let mut traced = Vec::with_capacity(total);
    for i in 0..total {
        if i % 25 == 0 {
            eprintln!("tracing: {}/{total}", i + 1);
        }
        let order = if i % 2 == 0 {
            [(&plain, false), (&exporting, true)]
        } else {
            [(&exporting, true), (&plain, false)]
        };
        for (d, exports) in order {
            let t = Instant::now();
            cli(d, &args)?;
            let took = t.elapsed();
            if exports {
                traced.push(took);
            } else {
                untraced.push(took);
            }
        }
    }
    // SIGTERM: the exporting daemon sends what its batch processor still holds.
    exporting.stop();
    plain.stop();
    let (untraced, traced) = (Latency::of(untraced), Latency::of(traced));
    let added_ms = (traced.median_us - untraced.median_us) / 1000.0;
    let share = added_ms * 1000.0 / untraced.median_us * 100.0;
    let report = TracingReport {
        scenario: "tracing",
        machine: machine(),
        command: format!("berth-bench tracing --rounds {rounds} --runs {runs}"),
        targets: vec![Target {
            name: "tracing on adds little to run --rm (median)",
            target: "< 5 %".into(),
            measured: format!("{added_ms:+.2} ms ({share:+.1} %)"),
            met: share < 5.0,
        }],
        untraced,
        traced,
        export_requests: requests.load(Ordering::Relaxed),
        export_bytes: bytes.load(Ordering::Relaxed),
    };
    crate::write_results(out_dir, "tracing", &report, &render(&report))
}

fn render(r: &TracingReport) -> String {
    let mut s = String::from("# Tracing cost benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). `berth run --rm --network none IMAGE /bin/true` timed end to end (CLI to exit) against a berthd without an OTLP endpoint and one exporting every span (the API calls, the container start's phases, the shim's, the runs' plugin calls) over OTLP/HTTP to a sink in the benchmark, two daemons side by side, alternating run by run (A B, B A, ...) after 3 warm-up runs each; the exporting one is stopped with SIGTERM at the end, so it exports what it still holds. The sink got {} export requests, {} bytes ({:.0} bytes per traced run).\n\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.mem_total_kb / 1024, r.machine.kernel,
        r.command, r.export_requests, r.export_bytes,
        r.export_bytes as f64 / r.traced.samples.max(1) as f64
    ));
    let ms = |us: f64| format!("{:.2} ms", us / 1000.0);
    s.push_str("| berthd | median | p90 | p99 | runs |\n|---|---|---|---|---|\n");
    for (name, l) in [("no export", &r.untraced), ("OTLP export", &r.traced)] {
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            ms(l.median_us),
            ms(l.p90_us),
            ms(l.p99_us),
            l.samples
        ));
    }
    s.push('\n');
    s.push_str(&crate::targets_table(&r.targets));
    s
}
