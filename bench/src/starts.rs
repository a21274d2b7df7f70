//! `berth-bench starts`: N detached containers started back to back (`run -d`, every engine
//! in turn for each start), then `ps -a` timed with those N containers and again after more
//! are created (not started) up to M in all — what a busy host or a CI runner sees.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::run::{busybox_tarball, run};
use crate::{Berthd, Latency, Machine, Target, machine};

const IMAGE: &str = "bench/busybox:latest";

#[derive(Debug, Serialize)]
struct EngineStarts {
    engine: &'static str,
    /// One `run -d --network none IMAGE sleep` each.
    start_detached: Latency,
    /// Wall time of all the starts, one after another.
    all_starts_s: f64,
    /// `ps -a` with the started containers.
    ps_at_count: Latency,
    /// One `create --network none IMAGE sleep` each, up to the second size (none when
    /// the second size is the first).
    create: Option<Latency>,
    /// `ps -a` with every container.
    ps_at_total: Latency,
}

#[derive(Debug, Serialize)]
struct StartsReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    count: usize,
    total: usize,
    engines: Vec<EngineStarts>,
    targets: Vec<Target>,
}

/// Runs one CLI command of an engine; its standard output.
type Cli = Box<dyn Fn(&[&str]) -> anyhow::Result<String>>;

/// One engine's CLI, on its own daemon or storage.
struct Engine {
    name: &'static str,
    cli: Cli,
    remove_all: Box<dyn Fn()>,
}

impl Engine {
    fn timed(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let t = Instant::now();
        (self.cli)(args).with_context(|| format!("{} {}", self.name, args.join(" ")))?;
        Ok(t.elapsed())
    }
}

/// Runs the scenario.
pub fn starts(
    bin_dir: &Path,
    out_dir: &Path,
    count: usize,
    total: usize,
    ps_rounds: usize,
    peers: bool,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let tarball = busybox_tarball(work.path())?;
    let tarball = tarball.to_str().context("utf-8 path")?.to_owned();

    let berthd = Berthd::start(bin_dir)?;
    let berth_bin = bin_dir.join("berth");
    let host = format!("unix://{}", berthd.socket.display());
    let berth = {
        let (bin, host) = (berth_bin.clone(), host.clone());
        move |args: &[&str]| run(Command::new(&bin).arg("-H").arg(&host).args(args))
    };
    berth(&["import", &tarball, IMAGE])?;
    let mut engines = vec![Engine {
        name: "berth",
        cli: Box::new(berth.clone()),
        // Containers outlive berthd by design: they go before it does.
        remove_all: Box::new(move || {
            if let Ok(ids) = berth(&["ps", "-a", "-q"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                for chunk in ids.chunks(100) {
                    let mut args = vec!["rm", "-f"];
                    args.extend(chunk);
                    let _ = berth(&args);
                }
            }
        }),
    }];

    let dockerd = if peers {
        Some(std::rc::Rc::new(crate::pull::Dockerd::start()?))
    } else {
        None
    };
    if let Some(d) = &dockerd {
        d.docker(&["import", &tarball, IMAGE])?;
        let (d1, d2) = (d.clone(), d.clone());
        engines.push(Engine {
            name: "docker",
            cli: Box::new(move |args: &[&str]| {
                run(Command::new("docker").arg("-H").arg(d1.host()).args(args))
            }),
            remove_all: Box::new(move || {
                let _ = run(Command::new("sh").arg("-c").arg(format!(
                    "docker -H {0} ps -aq | xargs -r docker -H {0} rm -f",
                    d2.host()
                )));
            }),
        });
    }
    let podman = if peers && crate::pull::which("podman") {
        Some(std::rc::Rc::new(crate::pull::Podman::new()?))
    } else {
        None
    };
    if let Some(p) = &podman {
        p.podman(&["import", &tarball, IMAGE])?;
        let (p1, p2) = (p.clone(), p.clone());
        engines.push(Engine {
            name: "podman",
            cli: Box::new(move |args: &[&str]| p1.podman_output(args)),
            remove_all: Box::new(move || {
                let _ = p2.podman(&["rm", "-f", "--all"]);
            }),
        });
    }

    let outcome = measure(&engines, count, total, ps_rounds);
    for engine in &engines {
        (engine.remove_all)();
    }
    let results = outcome?;

    let berth_start = results[0].start_detached.median_us / 1000.0;
    let best_peer_start = results
        .iter()
        .skip(1)
        .map(|e| e.start_detached.median_us / 1000.0)
        .fold(f64::INFINITY, f64::min);
    let berth_ps = results[0].ps_at_total.median_us / 1000.0;
    let best_peer_ps = results
        .iter()
        .skip(1)
        .map(|e| e.ps_at_total.median_us / 1000.0)
        .fold(f64::INFINITY, f64::min);
    let mut targets = Vec::new();
    if best_peer_start.is_finite() {
        targets.push(Target {
            name: "detached start median faster than the best peer",
            target: "< best peer".into(),
            measured: format!("{berth_start:.1} ms vs {best_peer_start:.1} ms"),
            met: berth_start < best_peer_start,
        });
        targets.push(Target {
            name: "ps -a at the larger size faster than the best peer",
            target: "< best peer".into(),
            measured: format!("{berth_ps:.1} ms vs {best_peer_ps:.1} ms"),
            met: berth_ps < best_peer_ps,
        });
    }
    let report = StartsReport {
        scenario: "starts",
        machine: machine(),
        command: format!(
            "berth-bench starts --count {count} --ps-at {total} --ps-rounds {ps_rounds}"
        ),
        count,
        total,
        engines: results,
        targets,
    };
    crate::write_results(out_dir, "starts", &report, &render(&report))
}

fn measure(
    engines: &[Engine],
    count: usize,
    total: usize,
    ps_rounds: usize,
) -> anyhow::Result<Vec<EngineStarts>> {
    let sleeper = ["--network", "none", IMAGE, "/bin/sleep", "3600"];
    let n = engines.len();
    let mut starts = vec![Vec::with_capacity(count); n];
    let mut creates = vec![Vec::with_capacity(total - count); n];
    let mut ps_small = vec![Vec::with_capacity(ps_rounds); n];
    let mut ps_large = vec![Vec::with_capacity(ps_rounds); n];
    let mut run_d = vec!["run", "-d"];
    run_d.extend(sleeper);
    let mut create = vec!["create"];
    create.extend(sleeper);

    for i in 0..count {
        if i % 25 == 0 {
            eprintln!("starts: {}/{count}", i + 1);
        }
        for (e, engine) in engines.iter().enumerate() {
            starts[e].push(engine.timed(&run_d)?);
        }
    }
    // A second of quiet so that no engine is still settling its last start.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..ps_rounds {
        for (e, engine) in engines.iter().enumerate() {
            ps_small[e].push(engine.timed(&["ps", "-a"])?);
        }
    }
    for i in count..total {
        if i % 100 == 0 {
            eprintln!("creates: {}/{total}", i + 1);
        }
        for (e, engine) in engines.iter().enumerate() {
            creates[e].push(engine.timed(&create)?);
        }
    }
    for _ in 0..ps_rounds {
        for (e, engine) in engines.iter().enumerate() {
            ps_large[e].push(engine.timed(&["ps", "-a"])?);
        }
    }
    let mut out = Vec::with_capacity(n);
    for (e, engine) in engines.iter().enumerate() {
        let all_starts_s = starts[e].iter().map(Duration::as_secs_f64).sum();
        out.push(EngineStarts {
            engine: engine.name,
            start_detached: Latency::of(std::mem::take(&mut starts[e])),
            all_starts_s,
            ps_at_count: Latency::of(std::mem::take(&mut ps_small[e])),
            create: (!creates[e].is_empty()).then(|| Latency::of(std::mem::take(&mut creates[e]))),
            ps_at_total: Latency::of(std::mem::take(&mut ps_large[e])),
        });
    }
    Ok(out)
}

fn render(r: &StartsReport) -> String {
    let mut s = String::from("# Starts and ps benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). The same busybox-static image in every engine. {} containers started back to back with `run -d --network none IMAGE /bin/sleep 3600` (every engine in turn for each start), `ps -a` timed with those {}, then containers created (not started) up to {} in all and `ps -a` timed again.\n\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.mem_total_kb / 1024, r.machine.kernel,
        r.command, r.count, r.count, r.total
    ));
    s.push_str(&format!(
        "| engine | run -d median | p90 | all {} starts | ps -a at {} | create median | ps -a at {} |\n|---|---|---|---|---|---|---|\n",
        r.count, r.count, r.total
    ));
    let ms = |us: f64| format!("{:.1} ms", us / 1000.0);
    for e in &r.engines {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {} | {} | {} |\n",
            e.engine,
            ms(e.start_detached.median_us),
            ms(e.start_detached.p90_us),
            e.all_starts_s,
            ms(e.ps_at_count.median_us),
            e.create
                .as_ref()
                .map_or_else(|| "-".into(), |c| ms(c.median_us)),
            ms(e.ps_at_total.median_us),
        ));
    }
    if !r.targets.is_empty() {
        s.push('\n');
        s.push_str(&crate::targets_table(&r.targets));
    }
    s
}
