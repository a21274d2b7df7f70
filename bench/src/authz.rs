//! `berth-bench authz`: what an authorization policy costs on real API calls. Three berthd
//! run side by side, each with its own data root holding the same N labelled containers: one
//! without a policy, one with the built-in Rego policy running
//! `plugins/authz/examples/team-labels.rego` (the caller is judged and `container.list` is
//! narrowed by the policy), and one with a baseline policy of one rule, which shows what the
//! Wasm call into any policy costs. Reported: round trips of `system.version` (authorize
//! only) and `container.list` (authorize, and the list's scope: label conditions berthd
//! checks itself, or a `filter` call for a policy that decides object by object) over
//! keep-alive HTTP connections, each policed daemon's calls taking turns with the plain
//! one's; throughput; and the gate's own decision time from the decision log.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::plugin::BASELINE_POLICY;
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

/// One policed daemon's figures, and the daemon without a policy's, measured in the same
/// rounds.
#[derive(Debug, Serialize)]
struct Policed {
    policy: String,
    /// The daemon without a policy, in the same rounds.
    unpoliced: Pass,
    policed: Pass,
    /// The policy chain's time per call, from the decision log: `system.version`, then
    /// `container.list`.
    decision_version: Latency,
    decision_list: Latency,
    added_version_p50_us: f64,
    added_version_p99_us: f64,
    added_list_p50_us: f64,
    added_list_p99_us: f64,
    list_throughput_cost_percent: f64,
}

impl Policed {
    fn against(plain: Pass, policy: String, pass: Pass, decisions: [Latency; 2]) -> Policed {
        let [decision_version, decision_list] = decisions;
        Policed {
            policy,
            added_version_p50_us: pass.version.median_us - plain.version.median_us,
            added_version_p99_us: pass.version.p99_us - plain.version.p99_us,
            added_list_p50_us: pass.list.median_us - plain.list.median_us,
            added_list_p99_us: pass.list.p99_us - plain.list.p99_us,
            list_throughput_cost_percent: 100.0
                * (1.0 - pass.list_calls_per_second / plain.list_calls_per_second),
            decision_version,
            decision_list,
            unpoliced: plain,
            policed: pass,
        }
    }
}

#[derive(Debug, Serialize)]
struct AuthzReport {
    scenario: &'static str,
    machine: Machine,
    command: String,
    containers: usize,
    /// The policy measured.
    with_policy: Policed,
    /// [`BASELINE_POLICY`], measured next: what any policy costs before its own rules.
    with_baseline: Policed,
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

/// `body` put to both daemons, `calls` counted calls each, in blocks taken in turn (the
/// order swapped every round) so that both are measured on the same machine at the same
/// time: a slow spell of the host falls on both. Each daemon's CPU time is read around each
/// of its blocks.
fn interleaved(
    daemons: &mut [(KeepAlive, &Berthd); 2],
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
    let mut samples = [Vec::with_capacity(calls), Vec::with_capacity(calls)];
    let mut cpu = [Duration::ZERO; 2];
    let mut made = [0usize; 2];
    let mut round = 0;
    while samples.iter().any(|s| s.len() < calls) {
        for k in 0..2 {
            let which = (round + k) % 2;
            let (client, daemon) = &mut daemons[which];
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
        round += 1;
    }
    let measured = |s: Vec<Duration>, which: usize| {
        let busy: Duration = s.iter().sum();
        Measured {
            calls_per_second: s.len() as f64 / busy.as_secs_f64(),
            latency: Latency::of(s),
            cpu_us_per_call: cpu[which].as_secs_f64() * 1e6 / made[which] as f64,
        }
    };
    let [plain, policed] = samples;
    Ok([measured(plain, 0), measured(policed, 1)])
}

/// A pass of the daemon without a policy and one of `policed`, `system.version` first, then
/// `container.list`, both daemons in the same rounds.
fn passes(plain: &Berthd, policed: &Berthd, calls: usize) -> anyhow::Result<[Pass; 2]> {
    let mut clients = [
        (KeepAlive::connect(&plain.socket)?, plain),
        (KeepAlive::connect(&policed.socket)?, policed),
    ];
    let versions = interleaved(
        &mut clients,
        r#"{"jsonrpc":"2.0","id":1,"method":"system.version"}"#,
        calls,
    )?;
    let lists = interleaved(
        &mut clients,
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
    let ([plain_version, policed_version], [plain_list, policed_list]) = (versions, lists);
    Ok([
        pass(plain_version, plain_list),
        pass(policed_version, policed_list),
    ])
}

/// The decision times of this process's calls logged in `log`: `system.version`, then
/// `container.list`. Each method's calls came in blocks of [`BLOCK`]; as with the round
/// trips, the first [`BLOCK_WARMUP`] of each block and any past `calls` are not counted.
fn decision_times(log: &Path, calls: usize) -> anyhow::Result<[Latency; 2]> {
    let ours = u64::from(std::process::id());
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(log)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["identity"]["unix"]["pid"].as_u64() == Some(ours))
        .collect();
    let of = |method: &str| -> anyhow::Result<Latency> {
        let times: Vec<Duration> = logged
            .iter()
            .filter(|v| v["method"] == method)
            .enumerate()
            .filter(|(i, _)| i % BLOCK >= BLOCK_WARMUP)
            .take(calls)
            .map(|(_, v)| {
                v["latency_us"]
                    .as_u64()
                    .map(Duration::from_micros)
                    .context("a decision without latency_us")
            })
            .collect::<anyhow::Result<_>>()?;
        if times.len() < calls {
            bail!(
                "only {} counted decisions on {method} were logged in {}",
                times.len(),
                log.display()
            );
        }
        Ok(Latency::of(times))
    };
    Ok([of("system.version")?, of("container.list")?])
}

/// Where the policed daemons' default networks go, apart from the plain daemon's `berth0`:
/// bridge, its subnet, the address pool.
const POLICED_NETWORKS: [[&str; 3]; 2] = [
    ["berthaz0", "10.232.0.0/16", "10.233.0.0/16"],
    ["berthaz1", "10.234.0.0/16", "10.235.0.0/16"],
];

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
    let policy = policy_file
        .canonicalize()
        .with_context(|| format!("{} (run from the repository root)", policy_file.display()))?;
    let baseline = work.path().join("baseline.rego");
    std::fs::write(&baseline, BASELINE_POLICY)?;
    let data = work.path().join("data.json");
    // root is no admin here: its calls take the policy's full path, and its list is
    // filtered (its containers carry team=root, one of its groups).
    std::fs::write(&data, r#"{"admins": [], "admin_groups": []}"#)?;
    let cli = bin_dir.join("berth");
    let tarball = busybox_tarball(work.path())?;
    let data_arg = data.to_str().context("utf-8")?;

    let policed = |name: &str, policy: &Path, [bridge, subnet, pool]: [&str; 3]| {
        let policy = policy.to_str().context("utf-8")?;
        let with = [
            "--authz-plugins",
            "rego",
            "--authz-policy",
            policy,
            "--authz-data",
            data_arg,
            "--bridge-name",
            bridge,
            "--bridge-subnet",
            subnet,
            "--default-address-pool",
            pool,
        ];
        Berthd::start_with(bin_dir, Some(&work.path().join(name)), &with)
    };
    let plain = Berthd::start_with(bin_dir, Some(&work.path().join("plain")), &[])?;
    let gated = policed("gated", &policy, POLICED_NETWORKS[0])?;
    let floor = policed("baseline", &baseline, POLICED_NETWORKS[1])?;
    for daemon in [&plain, &gated, &floor] {
        populate(&cli, &daemon.socket, &tarball, containers)?;
    }
    let logs = ["gated", "baseline"].map(|name| work.path().join(name).join("authz/decisions.log"));
    // A pair at a time, as with two daemons only: taking turns among three made each block
    // start colder, and the policy's figures worse than they are beside one daemon.
    let [plain_beside_policy, gated_pass] = passes(&plain, &gated, calls)?;
    let [plain_beside_baseline, floor_pass] = passes(&plain, &floor, calls)?;
    std::thread::sleep(Duration::from_millis(300));
    let with_policy = Policed::against(
        plain_beside_policy,
        format!("{} (built-in rego component)", policy_file.display()),
        gated_pass,
        decision_times(&logs[0], calls)?,
    );
    let with_baseline = Policed::against(
        plain_beside_baseline,
        format!(
            "`{}` (built-in rego component)",
            BASELINE_POLICY.replace('\n', " ").trim()
        ),
        floor_pass,
        decision_times(&logs[1], calls)?,
    );
    drop(floor);
    drop(gated);
    drop(plain);

    let report = AuthzReport {
        scenario: "authz",
        machine: machine(),
        command: format!(
            "berth-bench authz --calls {calls} --containers {containers} --policy {}",
            policy_file.display()
        ),
        containers,
        targets: vec![
            within_50_us(
                "authz p99 added per call (system.version: authorize)",
                with_policy.added_version_p99_us,
            ),
            within_50_us(
                "authz p99 added per call (container.list: authorize + list scope)",
                with_policy.added_list_p99_us,
            ),
            within_50_us(
                "authz decision p99 inside the call (system.version, decision log)",
                with_policy.decision_version.p99_us,
            ),
            within_50_us(
                "authz decision p99 inside the call (container.list, decision log)",
                with_policy.decision_list.p99_us,
            ),
        ],
        with_policy,
        with_baseline,
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
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}; {}.\n\nCommand: `{}` (release build). Three berthd, each with its own data root holding {} containers labelled `team=root`: one without a policy; one with `--authz-plugins rego` running {}; one running the baseline policy {}, which allows everything with one rule and states no list scope, so that it shows what the Wasm call into any policy costs inside a real call. The caller (root on the Unix socket) is not an admin in the policy's data, so every call takes the policy's full path and `container.list` is narrowed to the caller's team (by the list scope the policy states with its decision, or object by object through `filter` for a policy without one). One HTTP/1.1 keep-alive connection to each. The policed daemons are measured one after the other, each beside the daemon without a policy: the two take turns in blocks of {} calls (the first {} of each block, after the switch, not counted), so both are measured on the same machine at the same time. Throughput is calls per second of time spent in each daemon's calls.\n\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.mem_total_kb / 1024,
        r.machine.kernel,
        r.machine.idle,
        r.command,
        r.containers,
        r.with_policy.policy,
        r.with_baseline.policy,
        BLOCK,
        BLOCK_WARMUP
    ));
    s.push_str(
        "| call | policy | samples | median | p90 | p99 | mean |\n|---|---|---|---|---|---|---|\n",
    );
    type Of = fn(&Pass) -> &Latency;
    let calls: [(&str, Of); 2] = [
        ("system.version", |p| &p.version),
        ("container.list", |p| &p.list),
    ];
    for (call, of) in calls {
        for (label, pass) in [
            ("none", &r.with_policy.unpoliced),
            ("rego", &r.with_policy.policed),
            ("none", &r.with_baseline.unpoliced),
            ("baseline", &r.with_baseline.policed),
        ] {
            let l = of(pass);
            s.push_str(&format!(
                "| {call} | {label} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |\n",
                l.samples, l.median_us, l.p90_us, l.p99_us, l.mean_us
            ));
        }
    }
    s.push('\n');
    for (what, p) in [
        ("the policy", &r.with_policy),
        ("the baseline policy", &r.with_baseline),
    ] {
        s.push_str(&format!(
            "Added by {what}: system.version {:+.1} µs median, {:+.1} µs p99; container.list {:+.1} µs median, {:+.1} µs p99. berthd's CPU time per call (all its threads, from its CPU-time clock around each block; time spent waiting to be woken does not count): system.version {:.1} µs without a policy, {:.1} µs with it ({:+.1} µs); container.list {:.1} µs and {:.1} µs ({:+.1} µs). container.list throughput: {:.0} calls/s without a policy, {:.0} with it ({:.1} % fewer).\n\n",
            p.added_version_p50_us,
            p.added_version_p99_us,
            p.added_list_p50_us,
            p.added_list_p99_us,
            p.unpoliced.version_cpu_us,
            p.policed.version_cpu_us,
            p.policed.version_cpu_us - p.unpoliced.version_cpu_us,
            p.unpoliced.list_cpu_us,
            p.policed.list_cpu_us,
            p.policed.list_cpu_us - p.unpoliced.list_cpu_us,
            p.unpoliced.list_calls_per_second,
            p.policed.list_calls_per_second,
            p.list_throughput_cost_percent,
        ));
    }
    s.push_str(&format!(
        "The policy chain's time inside each call (from the decision log's `latency_us`: asking every policy of the chain, which here is the Wasm call with its marshalling and the Rego evaluation of `allow`, and for the list also of `list_scope`; the target lookup before it and the list narrowing after it are not included), for the calls whose round trips are counted (not the first {} of each block):\n\n| call | policy | decisions | median | p90 | p99 | mean |\n|---|---|---|---|---|---|---|\n",
        BLOCK_WARMUP
    ));
    for (call, label, l) in [
        ("system.version", "rego", &r.with_policy.decision_version),
        (
            "system.version",
            "baseline",
            &r.with_baseline.decision_version,
        ),
        ("container.list", "rego", &r.with_policy.decision_list),
        ("container.list", "baseline", &r.with_baseline.decision_list),
    ] {
        s.push_str(&format!(
            "| {call} | {label} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |\n",
            l.samples, l.median_us, l.p90_us, l.p99_us, l.mean_us
        ));
    }
    s.push('\n');
    s.push_str("## Targets\n\n");
    s.push_str(&crate::targets_table(&r.targets));
    s
}
