//! `berth-bench authz`: what an authorization policy costs on real API calls. One data root
//! with N labelled containers is served twice: by berthd without a policy, then with the
//! built-in Rego policy running `plugins/authz/examples/team-labels.rego` (the caller is
//! judged and `container.list` is filtered by the policy). Reported: round trips of
//! `system.version` (authorize only) and `container.list` (authorize and filter) over a
//! keep-alive HTTP connection, throughput, and the gate's own decision time from the
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
    decision_us_p50: f64,
    decision_us_p99: f64,
    decisions_logged: usize,
    added_version_p50_us: f64,
    added_version_p99_us: f64,
    added_list_p50_us: f64,
    added_list_p99_us: f64,
    list_throughput_cost_percent: f64,
    targets: Vec<Target>,
}

fn timed(client: &mut KeepAlive, body: &str, calls: usize) -> anyhow::Result<(Latency, f64)> {
    for _ in 0..calls / 10 {
        client.call(body)?;
    }
    let mut samples = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        let answer = client.call(body)?;
        samples.push(t.elapsed());
        if !answer.starts_with(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\"") {
            bail!("{body} failed: {}", String::from_utf8_lossy(&answer));
        }
    }
    let per_second = calls as f64 / started.elapsed().as_secs_f64();
    Ok((Latency::of(samples), per_second))
}

fn pass(socket: &Path, calls: usize) -> anyhow::Result<Pass> {
    let mut client = KeepAlive::connect(socket)?;
    let (version, _) = timed(
        &mut client,
        r#"{"jsonrpc":"2.0","id":1,"method":"system.version"}"#,
        calls,
    )?;
    let (list, list_calls_per_second) = timed(
        &mut client,
        r#"{"jsonrpc":"2.0","id":1,"method":"container.list","params":{"request":{"all":true}}}"#,
        calls,
    )?;
    Ok(Pass {
        version,
        list,
        list_calls_per_second,
    })
}

pub fn authz(
    bin_dir: &Path,
    out_dir: &Path,
    calls: usize,
    containers: usize,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let root = work.path().join("root");
    let policy = Path::new("plugins/authz/examples/team-labels.rego")
        .canonicalize()
        .context("run from the repository root: plugins/authz/examples/team-labels.rego")?;
    let data = work.path().join("data.json");
    // root is no admin here: its calls take the policy's full path, and its list is
    // filtered (its containers carry team=root, one of its groups).
    std::fs::write(&data, r#"{"admins": [], "admin_groups": []}"#)?;
    let cli = bin_dir.join("berth");

    let plain = Berthd::start_with(bin_dir, Some(&root), &[])?;
    let host = format!("unix://{}", plain.socket.display());
    let tarball = busybox_tarball(work.path())?;
    run(Command::new(&cli)
        .args(["-H", &host, "import"])
        .arg(&tarball)
        .arg("busybox"))?;
    for i in 0..containers {
        run(Command::new(&cli).args([
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
    let without_policy = pass(&plain.socket, calls)?;
    drop(plain);

    let policy_arg = policy.to_str().context("utf-8")?.to_owned();
    let data_arg = data.to_str().context("utf-8")?.to_owned();
    let with = [
        "--authz-plugins",
        "rego",
        "--authz-policy",
        &policy_arg,
        "--authz-data",
        &data_arg,
    ];
    let gated = Berthd::start_with(bin_dir, Some(&root), &with)?;
    let log_path = root.join("authz/decisions.log");
    let logged_before = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .count();
    let with_policy = pass(&gated.socket, calls)?;
    std::thread::sleep(Duration::from_millis(300));
    let decisions: Vec<Duration> = std::fs::read_to_string(&log_path)?
        .lines()
        .skip(logged_before)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["decision"] == "allow")
        .filter_map(|v| v["latency_us"].as_u64())
        .map(Duration::from_micros)
        .collect();
    drop(gated);
    if decisions.len() < calls {
        bail!("only {} decisions were logged", decisions.len());
    }
    let decisions_logged = decisions.len();
    let decision = Latency::of(decisions);

    let added = |a: f64, b: f64| b - a;
    let added_version_p99_us = added(without_policy.version.p99_us, with_policy.version.p99_us);
    let added_list_p99_us = added(without_policy.list.p99_us, with_policy.list.p99_us);
    let cost =
        100.0 * (1.0 - with_policy.list_calls_per_second / without_policy.list_calls_per_second);
    let report = AuthzReport {
        scenario: "authz",
        machine: machine(),
        command: format!("berth-bench authz --calls {calls} --containers {containers}"),
        containers,
        policy: "plugins/authz/examples/team-labels.rego (built-in rego component)".into(),
        added_version_p50_us: added(
            without_policy.version.median_us,
            with_policy.version.median_us,
        ),
        added_version_p99_us,
        added_list_p50_us: added(without_policy.list.median_us, with_policy.list.median_us),
        added_list_p99_us,
        list_throughput_cost_percent: cost,
        decision_us_p50: decision.median_us,
        decision_us_p99: decision.p99_us,
        decisions_logged,
        targets: vec![
            Target {
                name: "authz p99 added per call (system.version: authorize)",
                target: "≤ 50 µs".into(),
                measured: format!("{added_version_p99_us:.1} µs"),
                met: added_version_p99_us <= 50.0,
            },
            Target {
                name: "authz p99 added per call (container.list: authorize + filter)",
                target: "≤ 50 µs".into(),
                measured: format!("{added_list_p99_us:.1} µs"),
                met: added_list_p99_us <= 50.0,
            },
            Target {
                name: "authz decision p99 inside the call (decision log)",
                target: "≤ 50 µs".into(),
                measured: format!("{:.1} µs", decision.p99_us),
                met: decision.p99_us <= 50.0,
            },
        ],
        without_policy,
        with_policy,
    };
    crate::write_results(out_dir, "authz", &report, &render(&report))
}

fn render(r: &AuthzReport) -> String {
    let mut s = String::new();
    s.push_str("# berth authorization benchmark\n\n");
    s.push_str(&format!(
        "Machine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). One data root with {} containers labelled `team=root`, served by berthd without a policy, then with `--authz-plugins rego` running {}; the caller (root on the Unix socket) is not an admin in the policy's data, so every call takes the policy's full path and `container.list` is filtered. One HTTP/1.1 keep-alive connection, calls one after another.\n\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.mem_total_kb / 1024,
        r.machine.kernel,
        r.command,
        r.containers,
        r.policy
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
        "container.list throughput: {:.0} calls/s without the policy, {:.0} with it ({:.1} % fewer).\n\n",
        r.without_policy.list_calls_per_second, r.with_policy.list_calls_per_second, r.list_throughput_cost_percent
    ));
    s.push_str(&format!(
        "The gate's decision time inside the call (target lookup, the Wasm policy call, logging; from the decision log's `latency_us`, {} allowed calls): median {:.1} µs, p99 {:.1} µs.\n\n",
        r.decisions_logged, r.decision_us_p50, r.decision_us_p99
    ));
    s.push_str("## Targets\n\n");
    s.push_str(&crate::targets_table(&r.targets));
    s
}
