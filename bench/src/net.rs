//! `berth-bench network`: `run --rm IMAGE true` on each engine's default bridge network
//! (berth's Wasm `bridge` driver, docker's bridge, podman's default network), interleaved;
//! and TCP throughput into a container through a published port on 127.0.0.1, against the
//! same transfer over the host's loopback with no container in the way.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::run::{busybox_tarball, run};
use crate::{Berthd, Latency, Machine, machine};

#[derive(Debug, Serialize)]
struct EngineNet {
    engine: &'static str,
    run_rm_bridge: Latency,
    /// MiB/s into a container through `-p 127.0.0.1::PORT` (none if not measured).
    published_port_mib_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct NetReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    rounds: usize,
    transfer_mib: usize,
    host_loopback_mib_s: f64,
    engines: Vec<EngineNet>,
}

/// Sends `mib` MiB to `port` on 127.0.0.1 and waits for the receiver to close: MiB/s.
fn send(port: u16, mib: usize) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let chunk = vec![0u8; 1 << 20];
    loop {
        let attempt = (|| -> std::io::Result<f64> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            let t = Instant::now();
            for _ in 0..mib {
                s.write_all(&chunk)?;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?;
            Ok(mib as f64 / t.elapsed().as_secs_f64())
        })();
        match attempt {
            Ok(rate) => return Ok(rate),
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying the transfer to port {port}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => bail!("transfer to 127.0.0.1:{port}: {e}"),
        }
    }
}

/// The same transfer to a sink on the host's loopback.
fn loopback(mib: usize) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let sink = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        while c.read(&mut buf)? > 0 {}
        Ok(())
    });
    let rate = send(port, mib)?;
    sink.join()
        .map_err(|_| anyhow::anyhow!("sink thread panicked"))??;
    Ok(rate)
}

fn port_of(text: &str) -> anyhow::Result<u16> {
    text.lines()
        .next()
        .and_then(|l| l.trim().rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {text:?}"))
}

/// Runs the scenario.
pub fn network_scenario(
    bin_dir: &Path,
    out_dir: &Path,
    rounds: usize,
    mib: usize,
    peers: bool,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let tarball = busybox_tarball(work.path())?;
    let tar = tarball.to_str().context("utf-8 path")?;
    let image = "bench/busybox:latest";
    let berthd = Berthd::start(bin_dir)?;
    let berth_bin = bin_dir.join("berth");
    let host = format!("unix://{}", berthd.socket.display());
    let berth = |args: &[&str]| run(Command::new(&berth_bin).arg("-H").arg(&host).args(args));
    berth(&["import", tar, image])?;
    let dockerd = if peers {
        Some(crate::pull::Dockerd::start_bridged()?)
    } else {
        None
    };
    if let Some(d) = &dockerd {
        d.docker(&["import", tar, image])?;
    }
    let podman = if peers && crate::pull::which("podman") {
        Some(crate::pull::Podman::new()?)
    } else {
        None
    };
    if let Some(p) = &podman {
        p.podman(&["import", tar, image])?;
    }
    let exec = |engine: &str, args: &[&str]| -> anyhow::Result<String> {
        match engine {
            "berth" => berth(args),
            "docker" => {
                let d = dockerd.as_ref().context("dockerd")?;
                run(Command::new("docker").arg("-H").arg(d.host()).args(args))
            }
            _ => podman.as_ref().context("podman")?.podman_output(args),
        }
    };
    let mut engines: Vec<(&'static str, Vec<Duration>)> = vec![("berth", Vec::new())];
    if dockerd.is_some() {
        engines.push(("docker", Vec::new()));
    }
    if podman.is_some() {
        engines.push(("podman", Vec::new()));
    }
    // One warm-up each; an engine whose default network does not work here is reported
    // and left out rather than failing the whole run.
    let mut usable = Vec::new();
    for (engine, samples) in engines {
        match exec(engine, &["run", "--rm", image, "/bin/true"]) {
            Ok(_) => usable.push((engine, samples)),
            Err(e) => eprintln!("{engine} left out: its default network does not run here: {e:#}"),
        }
    }
    for round in 0..rounds {
        if round % 10 == 0 {
            eprintln!("round {}/{rounds}", round + 1);
        }
        for (engine, samples) in usable.iter_mut() {
            let t = Instant::now();
            exec(engine, &["run", "--rm", image, "/bin/true"])?;
            samples.push(t.elapsed());
        }
    }
    let host_loopback = loopback(mib)?;
    eprintln!("host loopback: {host_loopback:.0} MiB/s");
    let mut report = Vec::new();
    for (engine, samples) in usable {
        let name = format!("benchsink{engine}");
        let rate = (|| -> anyhow::Result<f64> {
            exec(
                engine,
                &[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "-p",
                    "127.0.0.1::5001",
                    image,
                    "/bin/sh",
                    "-c",
                    "/bin/nc -l -p 5001 > /dev/null",
                ],
            )?;
            std::thread::sleep(Duration::from_millis(500));
            let port = port_of(&exec(engine, &["port", &name, "5001"])?)?;
            send(port, mib)
        })();
        let _ = exec(engine, &["rm", "-f", &name]);
        let rate = match rate {
            Ok(r) => {
                eprintln!("{engine}: {r:.0} MiB/s through a published port");
                Some(r)
            }
            Err(e) => {
                eprintln!("{engine}: published-port transfer failed: {e:#}");
                None
            }
        };
        report.push(EngineNet {
            engine,
            run_rm_bridge: Latency::of(samples),
            published_port_mib_s: rate,
        });
    }
    let report = NetReport {
        scenario: "network",
        machine: machine(),
        command: format!("berth-bench network --rounds {rounds} --mib {mib}"),
        rounds,
        transfer_mib: mib,
        host_loopback_mib_s: host_loopback,
        engines: report,
    };
    crate::write_results(out_dir, "network", &report, &render(&report))
}

fn render(r: &NetReport) -> String {
    let mut s = String::from("# Network benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). Each round runs `run --rm IMAGE /bin/true` once per engine on its default network (berth: the `bridge` network of the Wasm `bridge` driver; docker: its `bridge` network, dockerd with iptables; podman: its default network), interleaved. Throughput: {} MiB sent from the host to `nc -l` in a container through `-p 127.0.0.1::5001` (berth and docker relay loopback connections through a userland proxy), against the same transfer to a sink on the host's loopback.\n\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.mem_total_kb / 1024,
        r.machine.kernel,
        r.command,
        r.transfer_mib
    ));
    s.push_str("| engine | run --rm (bridge) median | p90 | p99 | published port | vs host loopback |\n|---|---|---|---|---|---|\n");
    for e in &r.engines {
        s.push_str(&format!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |\n",
            e.engine,
            e.run_rm_bridge.median_us / 1000.0,
            e.run_rm_bridge.p90_us / 1000.0,
            e.run_rm_bridge.p99_us / 1000.0,
            e.published_port_mib_s
                .map(|m| format!("{m:.0} MiB/s"))
                .unwrap_or_else(|| "-".into()),
            e.published_port_mib_s
                .map(|m| format!("{:.0}%", 100.0 * m / r.host_loopback_mib_s))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s.push_str(&format!(
        "\nHost loopback, no container: {:.0} MiB/s.\n",
        r.host_loopback_mib_s
    ));
    let berth = r.engines.iter().find(|e| e.engine == "berth");
    let best_peer = r
        .engines
        .iter()
        .filter(|e| e.engine != "berth")
        .map(|e| e.run_rm_bridge.median_us)
        .fold(f64::INFINITY, f64::min);
    if let Some(b) = berth
        && best_peer.is_finite()
    {
        s.push_str(&format!(
            "\nOn the default bridge, berth's median is {:.1}x faster than the best peer.\n",
            best_peer / b.run_rm_bridge.median_us
        ));
    }
    s
}
