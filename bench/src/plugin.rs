//! Plugin-path costs: compiling the `local` volume driver component, loading it again from
//! the on-disk cache, making a configured instance, and the latency of calls into it
//! through berth's plugin host (deadline armed, outer timeout, typed results) — the
//! numbers the plugin issue sets targets for. Then the same for the built-in Rego policy:
//! `authorize` and `filter` calls straight into the component, without the API around them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_core::plugin_host::{
    AuthzRequest, Candidate, Identity, Limits, PluginHost, ResourceKind, Target as Object,
    Transport, UnixPeer, Visibility,
};
use serde::Serialize;

use super::{Latency, Machine, Target, machine};

#[derive(Debug, Serialize)]
struct PluginResult {
    scenario: &'static str,
    machine: Machine,
    command: String,
    component: String,
    component_bytes: usize,
    compile_ms: f64,
    cached_load: Latency,
    instantiate_and_configure: Latency,
    call_capabilities: Latency,
    call_get: Latency,
    policy: PolicyCalls,
    targets: Vec<Target>,
}

/// The Rego policy's calls, as `berth-bench authz` makes them in a real API call.
#[derive(Debug, Serialize)]
struct PolicyCalls {
    component: String,
    policy: String,
    candidates: usize,
    authorize: Latency,
    filter: Latency,
    /// `authorize` under [`BASELINE_POLICY`]: what any policy costs before its own rules.
    baseline_authorize: Latency,
}

/// A policy that allows everything with one rule and states no list scope: timed next to
/// the real one, it separates the fixed cost of a call into the component (marshalling,
/// the input, one evaluation) from the cost of the policy's own rules; `authz` times it
/// inside real API calls.
pub(crate) const BASELINE_POLICY: &str = "package berth.authz\n\ndefault allow := true\n";

/// The request `container.list` puts to the policy for root on the Unix socket.
fn list_request(n: u64) -> AuthzRequest {
    AuthzRequest {
        request_id: format!("bench-{n}"),
        identity: Identity::Unix(UnixPeer {
            uid: 0,
            gid: 0,
            pid: 1,
            user: Some("root".into()),
            groups: vec!["root".into()],
        }),
        method: "container.list".into(),
        params: r#"{"request":{"all":true}}"#.into(),
        target: Object {
            kind: ResourceKind::Container,
            id: None,
            name: None,
            labels: Vec::new(),
        },
        transport: Transport::Unix,
        remote_address: None,
    }
}

/// Times `authorize` and `filter` (over `candidates` containers of the caller's team) of
/// the Rego component running `policy_path` (by default the policy of `berth-bench authz`),
/// with root as no admin, and `authorize` under [`BASELINE_POLICY`].
fn policy_calls(
    runtime: &tokio::runtime::Runtime,
    host: &PluginHost,
    rego: &Path,
    policy_path: &Path,
    calls: usize,
    candidates: usize,
) -> anyhow::Result<PolicyCalls> {
    let wasm = std::fs::read(rego).with_context(|| {
        format!(
            "reading {} (build it with plugins/build.sh)",
            rego.display()
        )
    })?;
    let policy = std::fs::read_to_string(policy_path).with_context(|| {
        format!(
            "reading {} (run from the repository root)",
            policy_path.display()
        )
    })?;
    let loaded = host.load("rego", &wasm)?;
    let config = |name: String, text: String| {
        vec![
            (format!("policy:{name}"), text),
            (
                "data:bench.json".to_owned(),
                r#"{"admins": [], "admin_groups": []}"#.to_owned(),
            ),
        ]
    };
    let baseline = runtime.block_on(host.authorizer(
        "rego",
        &loaded,
        config("baseline.rego".into(), BASELINE_POLICY.into()),
    ))?;
    let baseline_authorize = runtime.block_on(async {
        let mut times = Vec::with_capacity(calls);
        for n in 0..(calls + calls / 10) as u64 {
            let request = list_request(n);
            let started = Instant::now();
            let decision = baseline.authorize(&request).await?;
            let took = started.elapsed();
            anyhow::ensure!(decision.allow, "the baseline policy denied");
            if n as usize >= calls / 10 {
                times.push(took);
            }
        }
        anyhow::Ok(times)
    })?;
    drop(baseline);
    let authorizer = runtime.block_on(host.authorizer(
        "rego",
        &loaded,
        config(policy_path.display().to_string(), policy),
    ))?;
    let list: Vec<Candidate> = (0..candidates)
        .map(|i| Candidate {
            kind: ResourceKind::Container,
            id: format!("{i:064x}"),
            name: Some(format!("c{i}")),
            labels: vec![("team".into(), "root".into())],
        })
        .collect();
    let (authorize, filter) = runtime.block_on(async {
        let mut authorize = Vec::with_capacity(calls);
        let mut filter = Vec::with_capacity(calls);
        for n in 0..(calls + calls / 10) as u64 {
            let request = list_request(n);
            let started = Instant::now();
            let decision = authorizer.authorize(&request).await?;
            let authorized = started.elapsed();
            anyhow::ensure!(decision.allow, "the policy denied: {:?}", decision.reason);
            let started = Instant::now();
            let visible = authorizer.filter(&request, &list).await?;
            let filtered = started.elapsed();
            if let Visibility::Only(v) = &visible {
                anyhow::ensure!(v.len() == list.len(), "the policy hid {visible:?}");
            }
            // The first tenth warms up.
            if n as usize >= calls / 10 {
                authorize.push(authorized);
                filter.push(filtered);
            }
        }
        anyhow::Ok((authorize, filter))
    })?;
    Ok(PolicyCalls {
        component: rego.display().to_string(),
        policy: policy_path.display().to_string(),
        candidates,
        authorize: Latency::of(authorize),
        filter: Latency::of(filter),
        baseline_authorize: Latency::of(baseline_authorize),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the scenario and writes `plugin.json` and `plugin.md` to `out_dir`.
pub fn plugin(
    wasm_path: &Path,
    rego_path: &Path,
    policy_path: &Path,
    out_dir: &Path,
    calls: usize,
) -> anyhow::Result<()> {
    let wasm = std::fs::read(wasm_path).with_context(|| {
        format!(
            "reading {} (build it with plugins/build.sh)",
            wasm_path.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");

    let started = Instant::now();
    let host = PluginHost::new(&cache, Limits::default())?;
    let loaded = host.load("local", &wasm)?;
    let compile = started.elapsed();
    eprintln!("compiled in {:.1} ms", ms(compile));

    let mut loads = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let again = PluginHost::new(&cache, Limits::default())?;
        again.load("local", &wasm)?;
        loads.push(started.elapsed());
    }

    let state = dir.path().join("state");
    let mut instantiations = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let driver = runtime.block_on(host.volume_driver("local", &loaded, &state, Vec::new()))?;
        instantiations.push(started.elapsed());
        drop(driver);
    }

    let driver = runtime.block_on(host.volume_driver("local", &loaded, &state, Vec::new()))?;
    runtime.block_on(driver.create("data", &[]))?;
    let (capabilities, get) = runtime.block_on(async {
        for _ in 0..200 {
            driver.capabilities().await?;
            driver.get("data").await?;
        }
        let mut capabilities = Vec::with_capacity(calls);
        let mut get = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            driver.capabilities().await?;
            capabilities.push(started.elapsed());
            let started = Instant::now();
            driver.get("data").await?;
            get.push(started.elapsed());
        }
        anyhow::Ok((capabilities, get))
    })?;

    let policy = policy_calls(&runtime, &host, rego_path, policy_path, calls, 10)?;
    let capabilities = Latency::of(capabilities);
    let get = Latency::of(get);
    let cached_load = Latency::of(loads);
    let targets = vec![
        Target {
            name: "volume driver call p99 (Wasm call, capabilities)",
            target: "<= 20 us".into(),
            measured: format!("{:.1} us", capabilities.p99_us),
            met: capabilities.p99_us <= 20.0,
        },
        Target {
            name: "cached plugin load (median)",
            target: "a few ms".into(),
            measured: format!("{:.2} ms", cached_load.median_us / 1e3),
            met: cached_load.median_us <= 5_000.0,
        },
    ];
    let result = PluginResult {
        scenario: "plugin",
        machine: machine(),
        command: format!(
            "berth-bench plugin --calls {calls} --policy {}",
            policy_path.display()
        ),
        component: wasm_path.display().to_string(),
        component_bytes: wasm.len(),
        compile_ms: ms(compile),
        cached_load,
        instantiate_and_configure: Latency::of(instantiations),
        call_capabilities: capabilities,
        call_get: get,
        policy,
        targets,
    };
    let m = &result.machine;
    let row = |name: &str, l: &Latency| {
        format!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {} |\n",
            l.median_us, l.p90_us, l.p99_us, l.samples
        )
    };
    let mut md = format!(
        "# Plugin benchmark\n\nMachine: {} CPUs ({}), {} MiB RAM, kernel {}.\n\nCommand: `{}` (release build). Component: `{}` ({} bytes), the reference `local` volume driver. Compiled once (Cranelift) in {:.1} ms; then loaded from the on-disk cache by a fresh plugin host 20 times; 20 fresh configured instances; then {} calls each of `capabilities` (no arguments, no I/O) and `get` (reads the volume's metadata in the plugin's state directory through WASI), each through berth's plugin host: deadline armed, outer timeout, typed result.\n\n| what | median | p90 | p99 | samples |\n|---|---|---|---|---|\n",
        m.cpus,
        m.cpu_model,
        m.mem_total_kb / 1024,
        m.kernel,
        result.command,
        result.component,
        result.component_bytes,
        result.compile_ms,
        calls,
    );
    md += &row("cached load (engine + deserialize)", &result.cached_load);
    md += &row(
        "new instance + configure",
        &result.instantiate_and_configure,
    );
    md += &row("call: capabilities", &result.call_capabilities);
    md += &row("call: get (WASI file reads)", &result.call_get);
    let p = &result.policy;
    md += &format!(
        "\n## The Rego authorization policy\n\nComponent `{}` running `{}` (root is no admin), called straight through the plugin host: `authorize` as `container.list` calls it (`authorize-scoped`, which also evaluates the policy's list scope; the baseline row is the same call under a one-rule policy that allows everything and states no scope, the fixed cost any policy pays before its own rules), and `filter` over {} containers of the caller's team, which berthd calls only for a policy that decides lists object by object. No API, no decision log.\n\n| what | median | p90 | p99 | samples |\n|---|---|---|---|---|\n",
        p.component, p.policy, p.candidates
    );
    md += &row(
        "call: authorize, baseline policy (`default allow := true`)",
        &p.baseline_authorize,
    );
    md += &row("call: authorize", &p.authorize);
    md += &row(
        &format!("call: filter ({} candidates)", p.candidates),
        &p.filter,
    );
    md += "\n";
    md += &crate::targets_table(&result.targets);
    crate::write_results(out_dir, "plugin", &result, &md)
}
