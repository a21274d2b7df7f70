//! `berth-bench authz`: what an authorization policy costs on real API calls. Two berthd run
//! side by side, each with its own data root holding the same N labelled containers: one
//! without a policy, one with the built-in Rego policy running
//! `plugins/authz/examples/team-labels.rego` (the caller is judged and `container.list` is
//! narrowed by the policy). Reported: round trips of `system.version` (authorize only) and
//! `container.list` (authorize, and the list's scope: label conditions berthd checks itself,
//! or a `filter` call for a policy that decides object by object) over keep-alive HTTP
//! connections, calls
//! alternating between the daemons; throughput; and the gate's own decision time from the
//! decision log.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::run::{busybox_tarball, run};
use crate::{Berthd, KeepAlive, Latency, Machine, Target, machine};

#[derive(Debug, Serialize)]
struct Pass {
    version: Latency,
    list: Latency,
    list_calls_per_second: f64,
    /// berthd's CPU time per call, all its threads (the decision log's writer too).
    version_cpu_us: f64,
    list_cpu_us: f64,
}

#[derive(Debug, Serialize)]
struct AuthzReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    containers: usize,
    policy: String,
    without_policy: Pass,
    with_policy: Pass,
    /// The policy chain's time per call, from the decision log: `system.version`, then
    /// `container.list`.
    decision_version: Latency,
    decision_list: Latency,
    added_version_p50_us: f64,
    added_version_p99_us: f64,
    added_list_p50_us: f64,
    added_list_p99_us: f64,
    list_throughput_cost_percent: f64,
    targets: Vec<Target>,
}

/// The policy measured by default: per-team label ownership, with list filtering.
pub const TEAM_LABELS: &str = "plugins/authz/examples/team-labels.rego";

/// Calls to one daemon in a row; the daemons take turns a block at a time.
const BLOCK: usize = 200;
/// Calls at the start of each block that are not counted: the first calls after the other
/// daemon's block find the caches full of its data, which is a cost of switching between
/// two daemons on one machine, not of the policy.
const BLOCK_WARMUP: usize = 10;

/// What one daemon gave in an interleaved pass: the latencies counted, its throughput, and
/// its CPU time per call.
struct Measured {
    latency: Latency,
    calls_per_second: f64,
    cpu_us_per_call: f64,
}

/// `body` put to both daemons, `calls` counted calls each, in alternating blocks (the order
/// swapped every pair of blocks) so that both are measured on the same machine at the same
/// time: a slow spell of the host falls on both. Each daemon's CPU time is read around each
/// of its blocks.
fn interleaved(
    daemons: [(&mut KeepAlive, &Berthd); 2],
    body: &str,
    calls: usize,
) -> anyhow::Result<[Measured; 2]> {
    let call = |client: &mut KeepAlive| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let answer = client.call(body)?;
        let took = t.elapsed();
        if !answer.starts_with(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\"") {
            bail!("{body} failed: {}", String::from_utf8_lossy(&answer));
        }
        Ok(took)
    };
    let [(plain, plain_daemon), (gated, gated_daemon)] = daemons;
    let mut samples = [Vec::with_capacity(calls), Vec::with_capacity(calls)];
    let mut cpu = [Duration::ZERO; 2];
    let mut made = [0usize; 2];
    let mut pair = 0;
    while samples.iter().any(|s| s.len() < calls) {
        for which in [pair % 2, 1 - pair % 2] {
            let (client, daemon) = if which == 0 {
                (&mut *plain, plain_daemon)
            } else {
                (&mut *gated, gated_daemon)
            };
            let before = daemon.cpu_time()?;
            for i in 0..BLOCK {
                let took = call(client)?;
                if i >= BLOCK_WARMUP && samples[which].len() < calls {
                    samples[which].push(took);
                }
            }
            cpu[which] += daemon.cpu_time()?.saturating_sub(before);
            made[which] += BLOCK;
        }
        pair += 1;
    }
    let measured = |s: Vec<Duration>, which: usize| {
        let busy: Duration = s.iter().sum();
        Measured {
            calls_per_second: s.len() as f64 / busy.as_secs_f64(),
            latency: Latency::of(s),
            cpu_us_per_call: cpu[which].as_secs_f64() * 1e6 / made[which] as f64,
        }
    };
    let [plain_samples, gated_samples] = samples;
    Ok([measured(plain_samples, 0), measured(gated_samples, 1)])
}

/// Both passes, `system.version` first, then `container.list`.
fn passes(plain: &Berthd, gated: &Berthd, calls: usize) -> anyhow::Result<(Pass, Pass)> {
    let mut plain_client = KeepAlive::connect(&plain.socket)?;
    let mut gated_client = KeepAlive::connect(&gated.socket)?;
    let [plain_version, gated_version] = interleaved(
        [(&mut plain_client, plain), (&mut gated_client, gated)],
        r#"{"jsonrpc":"2.0","id":1,"method":"system.version"}"#,
        calls,
    )?;
    let [plain_list, gated_list] = interleaved(
        [(&mut plain_client, plain), (&mut gated_client, gated)],
        r#"{"jsonrpc":"2.0","id":1,"method":"container.list","params":{"request":{"all":true}}}"#,
        calls,
    )?;
    let pass = |version: Measured, list: Measured| Pass {
        version: version.latency,
        version_cpu_us: version.cpu_us_per_call,
        list_calls_per_second: list.calls_per_second,
        list_cpu_us: list.cpu_us_per_call,
        list: list.latency,
    };
    Ok((
        pass(plain_version, plain_list),
        pass(gated_version, gated_list),
    ))
}

/// Where the gated daemon's default network goes, apart from the plain daemon's `berth0`.
const GATED_BRIDGE: &str = "berthaz0";

/// Loads the busybox image and `containers` labelled containers into a daemon.
fn populate(cli: &Path, socket: &Path, tarball: &Path, containers: usize) -> anyhow::Result<()> {
    let host = format!("unix://{}", socket.display());
    run(Command::new(cli)
        .args(["-H", &host, "import"])
        .arg(tarball)
        .arg("busybox"))?;
    for i in 0..containers {
        run(Command::new(cli).args([
            "-H",
            &host,
            "create",
            "--name",
            &format!("c{i}"),
            "-l",
            "team=root",
            "busybox",
            "true",
        ]))?;
    }
    Ok(())
}

pub fn authz(
    bin_dir: &Path,
    out_dir: &Path,
    calls: usize,
    containers: usize,
    policy_file: &Path,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let root = work.path().join("gated");
    let policy = policy_file
        .canonicalize()
        .with_context(|| format!("{} (run from the repository root)", policy_file.display()))?;
    let data = work.path().join("data.json");
    // root is no admin here: its calls take the policy's full path, and its list is
    // filtered (its containers carry team=root, one of its groups).
    std::fs::write(&data, r#"{"admins": [], "admin_groups": []}"#)?;
    let cli = bin_dir.join("berth");
    let tarball = busybox_tarball(work.path())?;

    let policy_arg = policy.to_str().context("utf-8")?.to_owned();
    let data_arg = data.to_str().context("utf-8")?.to_owned();
    let with = [
        "--authz-plugins",
        "rego",
        "--authz-policy",
        &policy_arg,
        "--authz-data",
        &data_arg,
        "--bridge-name",
        GATED_BRIDGE,
        "--bridge-subnet",
        "10.232.0.0/16",
        "--default-address-pool",
        "10.233.0.0/16",
    ];
    let plain = Berthd::start_with(bin_dir, Some(&work.path().join("plain")), &[])?;
    let gated = Berthd::start_with(bin_dir, Some(&root), &with)?;
    populate(&cli, &plain.socket, &tarball, containers)?;
    populate(&cli, &gated.socket, &tarball, containers)?;
    let log_path = root.join("authz/decisions.log");
    let logged_before = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .count();
    let (without_policy, with_policy) = passes(&plain, &gated, calls)?;
    std::thread::sleep(Duration::from_millis(300));
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)?
        .lines()
        .skip(logged_before)
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["decision"] == "allow")
        .collect();
    drop(gated);
    drop(plain);
    let decisions_of = |method: &str| -> anyhow::Result<Latency> {
        let times: Vec<Duration> = logged
            .iter()
            .filter(|v| v["method"] == method)
            .filter_map(|v| v["latency_us"].as_u64())
            .map(Duration::from_micros)
            .collect();
        if times.len() < calls {
            bail!("only {} decisions on {method} were logged", times.len());
        }
        Ok(Latency::of(times))
    };
    let decision_version = decisions_of("system.version")?;
    let decision_list = decisions_of("container.list")?;

    let added = |a: f64, b: f64| b - a;
    let added_version_p99_us = added(without_policy.version.p99_us, with_policy.version.p99_us);
    let added_list_p99_us = added(without_policy.list.p99_us, with_policy.list.p99_us);
    let cost =
        100.0 * (1.0 - with_policy.list_calls_per_second / without_policy.list_calls_per_second);
    let report = AuthzReport {
        scenario: "authz",
        machine: machine(),
        command: format!(
            "berth-bench authz --calls {calls} --containers {containers} --policy {}",
            policy_file.display()
        ),
        containers,
        policy: format!("{} (built-in rego component)", policy_file.display()),
        added_version_p50_us: added(
            without_policy.version.median_us,
            with_policy.version.median_us,
        ),
        added_version_p99_us,
        added_list_p50_us: added(without_policy.list.median_us, with_policy.list.median_us),
        added_list_p99_us,
        list_throughput_cost_percent: cost,
        targets: vec![
            within_50_us(
                "authz p99 added per call (system.version: authorize)",
                added_version_p99_us,
            ),
            within_50_us(
                "authz p99 added per call (container.list: authorize + list scope)",
                added_list_p99_us,
            ),
            within_50_us(
                "authz decision p99 inside the call (system.version, decision log)",
                decision_version.p99_us,
            ),
            within_50_us(
                "authz decision p99 inside the call (container.list, decision log)",
                decision_list.p99_us,
            ),
        ],
        decision_version,
        decision_list,
        without_policy,
        with_policy,
    };
    crate::write_results(out_dir, "authz", &report, &render(&report))
}

/// The issue's target for each of these figures: p99 ≤ 50 µs.
fn within_50_us(name: &'static str, us: f64) -> Target {
    Target {
        name,
        target: "≤ 50 µs".into(),
        measured: format!("{us:.1} µs"),
        met: us <= 50.0,
    }
}

fn render(r: &AuthzReport) -> String {
    let mut s = String::new();
    s.push_str("# berth authorization benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). Two berthd, each with its own data root holding {} containers labelled `team=root`: one without a policy, one with `--authz-plugins rego` running {}; the caller (root on the Unix socket) is not an admin in the policy's data, so every call takes the policy's full path and `container.list` is narrowed to the caller's team (by the list scope the policy states with its decision, or object by object through `filter` for a policy without one). One HTTP/1.1 keep-alive connection to each; the daemons take turns in blocks of {} calls (the first {} of each block, after the switch, not counted), so both are measured on the same machine at the same time. Throughput is calls per second of time spent in each daemon's calls.\n\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.mem_total_kb / 1024,
        r.machine.kernel,
        r.command,
        r.containers,
        r.policy,
        BLOCK,
        BLOCK_WARMUP
    ));
    s.push_str(
        "| call | policy | samples | median | p90 | p99 | mean |\n|---|---|---|---|---|---|---|\n",
    );
    for (call, off, on) in [
        (
            "system.version",
            &r.without_policy.version,
            &r.with_policy.version,
        ),
        (
            "container.list",
            &r.without_policy.list,
            &r.with_policy.list,
        ),
    ] {
        for (label, l) in [("none", off), ("rego", on)] {
            s.push_str(&format!(
                "| {call} | {label} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |\n",
                l.samples, l.median_us, l.p90_us, l.p99_us, l.mean_us
            ));
        }
    }
    s.push_str(&format!(
        "\nAdded by the policy: system.version {:+.1} µs median, {:+.1} µs p99; container.list {:+.1} µs median, {:+.1} µs p99.\n\n",
        r.added_version_p50_us, r.added_version_p99_us, r.added_list_p50_us, r.added_list_p99_us
    ));
    s.push_str(&format!(
        "berthd's CPU time per call (all its threads, from its CPU-time clock around each block; time spent waiting to be woken does not count): system.version {:.1} µs without the policy, {:.1} µs with it ({:+.1} µs); container.list {:.1} µs and {:.1} µs ({:+.1} µs).\n\n",
        r.without_policy.version_cpu_us,
        r.with_policy.version_cpu_us,
        r.with_policy.version_cpu_us - r.without_policy.version_cpu_us,
        r.without_policy.list_cpu_us,
        r.with_policy.list_cpu_us,
        r.with_policy.list_cpu_us - r.without_policy.list_cpu_us,
    ));
    s.push_str(&format!(
        "container.list throughput: {:.0} calls/s without the policy, {:.0} with it ({:.1} % fewer).\n\n",
        r.without_policy.list_calls_per_second, r.with_policy.list_calls_per_second, r.list_throughput_cost_percent
    ));
    s.push_str(
        "The policy chain's time inside each call (from the decision log's `latency_us`: asking every policy of the chain, which here is the Wasm call with its marshalling and the Rego evaluation of `allow`, and for the list also of `list_scope`; the target lookup before it and the list narrowing after it are not included):\n\n| call | decisions | median | p90 | p99 | mean |\n|---|---|---|---|---|---|\n",
    );
    for (call, l) in [
        ("system.version", &r.decision_version),
        ("container.list", &r.decision_list),
    ] {
        s.push_str(&format!(
            "| {call} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |\n",
            l.samples, l.median_us, l.p90_us, l.p99_us, l.mean_us
        ));
    }
    s.push('\n');
    s.push_str("## Targets\n\n");
    s.push_str(&crate::targets_table(&r.targets));
    s
}
