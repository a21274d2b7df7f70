//! `berth-bench run`: `run --rm IMAGE true` end to end (CLI → daemon → exit) for berth,
//! docker and podman on the same busybox image, interleaved, with `runc run` on a bundle of
//! the same root filesystem as the floor (no daemon, no image store); and the memory (PSS)
//! of the per-container supervisor with N idle containers (berth-shim vs containerd-shim vs
//! conmon).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{Berthd, Latency, Machine, Target, machine};

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A busybox root filesystem tarball (from busybox-static).
pub(crate) fn busybox_tarball(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static is needed")?;
    for applet in ["sh", "true", "sleep", "nc", "yes", "head"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let tarball = dir.join("busybox.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg("."))?;
    Ok(tarball)
}

fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Pids of processes whose command name is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            {
                out.push(pid);
            }
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct EngineRun {
    engine: &'static str,
    run_rm_true: Latency,
    /// The same with `-v benchvol:/data` (a named volume of the default driver); none for
    /// runc, which has no volumes.
    run_rm_volume: Option<Latency>,
    supervisor: Option<String>,
    supervisor_pss_kb_each: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RunReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    rounds: usize,
    idle_containers: usize,
    engines: Vec<EngineRun>,
    targets: Vec<Target>,
}

/// A runc bundle of the busybox root filesystem whose process is `/bin/true`, with runc's
/// default namespaces (a new network namespace: like `--network none`).
fn runc_bundle(dir: &Path, rootfs: &Path) -> anyhow::Result<std::path::PathBuf> {
    let bundle = dir.join("runc-bundle");
    std::fs::create_dir_all(&bundle)?;
    run(Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle))?;
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["path"] = rootfs.to_str().context("utf-8 path")?.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(bundle)
}

/// Runs the scenario.
pub fn run_scenario(
    bin_dir: &Path,
    out_dir: &Path,
    rounds: usize,
    idle: usize,
    peers: bool,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let tarball = busybox_tarball(work.path())?;
    let berthd = Berthd::start(bin_dir)?;
    let berth_bin = bin_dir.join("berth");
    let host = format!("unix://{}", berthd.socket.display());
    let berth = |args: &[&str]| run(Command::new(&berth_bin).arg("-H").arg(&host).args(args));
    berth(&[
        "import",
        tarball.to_str().context("utf-8 path")?,
        "bench/busybox:latest",
    ])?;

    let dockerd = if peers {
        Some(crate::pull::Dockerd::start()?)
    } else {
        None
    };
    if let Some(d) = &dockerd {
        d.docker(&[
            "import",
            tarball.to_str().context("utf-8")?,
            "bench/busybox:latest",
        ])?;
    }
    let podman = if peers && crate::pull::which("podman") {
        Some(crate::pull::Podman::new()?)
    } else {
        None
    };
    if let Some(p) = &podman {
        p.podman(&[
            "import",
            tarball.to_str().context("utf-8")?,
            "bench/busybox:latest",
        ])?;
    }
    let runc = if peers && crate::pull::which("runc") {
        let state = work.path().join("runc-state");
        let bundle = runc_bundle(work.path(), &work.path().join("rootfs"))?;
        Some((state, bundle))
    } else {
        None
    };
    let runc_runs = std::cell::Cell::new(0u32);
    let image = "bench/busybox:latest";
    // (engine, plain runs, runs with a named volume)
    type Samples = (&'static str, Vec<Duration>, Vec<Duration>);
    let mut samples: Vec<Samples> = vec![("berth", Vec::new(), Vec::new())];
    if dockerd.is_some() {
        samples.push(("docker", Vec::new(), Vec::new()));
    }
    if podman.is_some() {
        samples.push(("podman", Vec::new(), Vec::new()));
    }
    if runc.is_some() {
        samples.push(("runc", Vec::new(), Vec::new()));
    }
    // The volume exists beforehand in every engine: what is timed is mounting it.
    berth(&["volume", "create", "benchvol"])?;
    if let Some(d) = &dockerd {
        d.docker(&["volume", "create", "benchvol"])?;
    }
    if let Some(p) = &podman {
        p.podman(&["volume", "create", "benchvol"])?;
    }
    let time_one = |engine: &str, volume: bool| -> anyhow::Result<Duration> {
        if engine == "runc" {
            let (state, bundle) = runc.as_ref().context("runc")?;
            runc_runs.set(runc_runs.get() + 1);
            let id = format!("berth-bench-{}", runc_runs.get());
            let t = Instant::now();
            // `runc run` creates, starts, waits for and deletes the container.
            run(Command::new("runc")
                .arg("--root")
                .arg(state)
                .arg("run")
                .arg("--bundle")
                .arg(bundle)
                .arg(&id))?;
            return Ok(t.elapsed());
        }
        // Every engine without a network here; the bridge is `berth-bench network`.
        let mut args = vec!["run", "--rm", "--network", "none"];
        if volume {
            args.extend(["-v", "benchvol:/data"]);
        }
        args.extend([image, "/bin/true"]);
        let t = Instant::now();
        match engine {
            "berth" => berth(&args).map(drop),
            "docker" => dockerd.as_ref().context("dockerd")?.docker(&args),
            _ => podman.as_ref().context("podman")?.podman(&args),
        }?;
        Ok(t.elapsed())
    };
    for (engine, _, _) in &samples {
        time_one(engine, false)?;
        if *engine != "runc" {
            time_one(engine, true)?;
        }
    }
    for round in 0..rounds {
        if round % 10 == 0 {
            eprintln!("round {}/{rounds}", round + 1);
        }
        for (engine, plain, with_volume) in samples.iter_mut() {
            plain.push(time_one(engine, false)?);
            if *engine != "runc" {
                with_volume.push(time_one(engine, true)?);
            }
        }
    }

    // Supervisor memory with `idle` sleeping containers per engine.
    let mut memory: Vec<(&'static str, String, f64)> = Vec::new();
    for (engine, _, _) in samples.iter().filter(|(engine, ..)| *engine != "runc") {
        let (supervisor, start): (&str, Box<dyn Fn() -> anyhow::Result<()>>) = match *engine {
            "berth" => (
                "berth-shim",
                Box::new(|| {
                    berth(&["run", "-d", "--network", "none", image, "/bin/sleep", "600"]).map(drop)
                }),
            ),
            "docker" => {
                let d = dockerd.as_ref().context("dockerd")?;
                (
                    "containerd-shim",
                    Box::new(move || {
                        d.docker(&["run", "-d", "--network", "none", image, "/bin/sleep", "600"])
                    }),
                )
            }
            _ => {
                let p = podman.as_ref().context("podman")?;
                (
                    "conmon",
                    Box::new(move || {
                        p.podman(&["run", "-d", "--network", "none", image, "/bin/sleep", "600"])
                    }),
                )
            }
        };
        for _ in 0..idle {
            start()?;
        }
        std::thread::sleep(Duration::from_secs(2));
        let pids = pids_named(supervisor);
        let total: u64 = pids.iter().map(|p| pss_kb(*p)).sum();
        let each = if pids.is_empty() {
            0.0
        } else {
            total as f64 / pids.len() as f64
        };
        eprintln!(
            "{engine}: {} {supervisor} processes, {each:.0} kB PSS each",
            pids.len()
        );
        memory.push((engine, supervisor.to_owned(), each));
        match *engine {
            "berth" => {
                let ids = berth(&["ps", "-q"])?;
                for id in ids.split_whitespace() {
                    let _ = berth(&["rm", "-f", id]);
                }
            }
            "docker" => {
                let d = dockerd.as_ref().context("dockerd")?;
                let _ = run(Command::new("sh").arg("-c").arg(format!(
                    "docker -H {} rm -f $(docker -H {} ps -q)",
                    d.host(),
                    d.host()
                )));
            }
            _ => {
                if let Some(p) = &podman {
                    let _ = p.podman(&["rm", "-f", "--all"]);
                }
            }
        }
    }

    let engines: Vec<EngineRun> = samples
        .into_iter()
        .map(|(engine, plain, with_volume)| {
            let mem = memory.iter().find(|m| m.0 == engine);
            EngineRun {
                engine,
                run_rm_true: Latency::of(plain),
                run_rm_volume: (!with_volume.is_empty()).then(|| Latency::of(with_volume)),
                supervisor: mem.map(|m| m.1.clone()),
                supervisor_pss_kb_each: mem.map(|m| m.2),
            }
        })
        .collect();
    let berth_run = engines[0].run_rm_true.median_us / 1000.0;
    let berth_pss = engines[0].supervisor_pss_kb_each.unwrap_or(f64::NAN) / 1024.0;
    let report = RunReport {
        scenario: "run",
        machine: machine(),
        command: format!("berth-bench run --rounds {rounds} --idle {idle}"),
        rounds,
        idle_containers: idle,
        targets: vec![
            Target {
                name: "run --rm true median (CLI → daemon → exit, --network none)",
                target: "≤ 20 ms".into(),
                measured: format!("{berth_run:.1} ms"),
                met: berth_run <= 20.0,
            },
            Target {
                name: "shim PSS per idle container",
                target: "≤ 0.3 MB".into(),
                measured: format!("{berth_pss:.2} MB"),
                met: berth_pss <= 0.3,
            },
        ],
        engines,
    };
    crate::write_results(out_dir, "run", &report, &render(&report))
}

fn render(r: &RunReport) -> String {
    let mut s = String::from("# Run benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). The same busybox-static image is imported into every engine; each round runs `run --rm IMAGE /bin/true` once per engine (interleaved; every engine with `--network none`; the default bridge is measured by `berth-bench network`), and `runc run` once on a bundle of the same root filesystem (the floor: no daemon, no image store, no logs). Each round also runs `run --rm -v benchvol:/data IMAGE /bin/true` (a named volume of the default driver, created beforehand; for berth the Wasm `local` driver). Memory: PSS of the per-container supervisor process with {} idle containers per engine.\n\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.mem_total_kb / 1024, r.machine.kernel, r.command, r.idle_containers
    ));
    s.push_str("| engine | run --rm median | p90 | p99 | with -v median | -v overhead | supervisor | PSS each |\n|---|---|---|---|---|---|---|---|\n");
    let best_peer = r
        .engines
        .iter()
        .filter(|e| e.engine == "docker" || e.engine == "podman")
        .map(|e| e.run_rm_true.median_us)
        .fold(f64::INFINITY, f64::min);
    let ms = |us: f64| format!("{:.1} ms", us / 1000.0);
    for e in &r.engines {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            e.engine,
            ms(e.run_rm_true.median_us),
            ms(e.run_rm_true.p90_us),
            ms(e.run_rm_true.p99_us),
            e.run_rm_volume
                .as_ref()
                .map_or_else(|| "-".into(), |v| ms(v.median_us)),
            e.run_rm_volume.as_ref().map_or_else(
                || "-".into(),
                |v| format!(
                    "{:+.1} ms",
                    (v.median_us - e.run_rm_true.median_us) / 1000.0
                )
            ),
            e.supervisor.as_deref().unwrap_or("-"),
            e.supervisor_pss_kb_each
                .map(|k| format!("{:.2} MB", k / 1024.0))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    if best_peer.is_finite() {
        s.push_str(&format!(
            "\nberth's median is {:.1}x faster than the best daemon peer.\n",
            best_peer / r.engines[0].run_rm_true.median_us
        ));
    }
    if let Some(runc) = r.engines.iter().find(|e| e.engine == "runc") {
        s.push_str(&format!(
            "berth's median is {:.1}x runc's (`runc run` alone).\n",
            r.engines[0].run_rm_true.median_us / runc.run_rm_true.median_us
        ));
    }
    s.push('\n');
    s.push_str(&crate::targets_table(&r.targets));
    s
}
