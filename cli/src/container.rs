//! Container commands: run, create, start, ps, logs, wait, kill, stop, rm, inspect.

use std::io::Write;

use anyhow::{Context as _, bail};
use berth_api::container::{
    ContainerClient, ContainerStatus, CreateRequest, ListRequest, LogEvent, LogsRequest, MountKind,
    MountSpec, ResourceLimits,
};
use berth_api::jsonrpsee::core::client::Error as RpcError;
use berth_api::jsonrpsee::ws_client::WsClient;

use crate::client::{Connection, Paced};

use crate::output::{self, Format};

/// Options shared by `run` and `create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=value, or KEY to copy it from this shell).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=value lines).
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Labels (KEY=value).
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Security options: no-new-privileges.
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Add Linux capabilities (NET_ADMIN, ALL, ...).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (CHOWN, ALL, ...).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Signal to stop the container with.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before killing.
    #[arg(long)]
    pub stop_timeout: Option<u64>,
    /// Memory limit (bytes, or with a unit: 512m, 1g).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap; default: twice --memory).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs (1.5 = one and a half CPUs' worth of time).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Relative CPU weight (default 1024).
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<u64>,
    /// Most processes and threads (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// CPUs the container may run on (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Give the container every capability and device, no seccomp filter.
    #[arg(long)]
    pub privileged: bool,
    /// Run an init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Keep stdin open and send this terminal's input to the container.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Mount a volume or bind a host path: NAME:/path[:ro|rw] (a named volume, created on
    /// first use), /path (a new anonymous volume), or /host/path:/path[:ro|rw] (a bind).
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Driver for volumes this container creates (default: local).
    #[arg(long)]
    pub volume_driver: Option<String>,
    /// Network: bridge (the default), none, host, or a network's name.
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// IPv4 address on the network.
    #[arg(long)]
    pub ip: Option<String>,
    /// More names for the container on the network.
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Publish a port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp] (ranges with A-B).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Name server for /etc/resolv.conf.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Search domain for /etc/resolv.conf.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Logging driver: `local` (the local log only), `json-file`, `syslog` or another
    /// installed logging plugin.
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// Logging driver option KEY=VALUE (repeatable).
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Mount: type=volume[,source=NAME],target=/path[,readonly][,volume-driver=D][,volume-opt=K=V],
    /// type=bind,source=/host,target=/path[,readonly] or
    /// type=tmpfs,target=/path[,tmpfs-size=64m][,tmpfs-mode=1777].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs: /path[:size=64m,mode=1777,ro].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Image.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn request(args: &CreateArgs) -> anyhow::Result<CreateRequest> {
    let mut env = Vec::new();
    for file in &args.env_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading env file {file}"))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    for e in &args.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    let mut no_new_privileges = false;
    let mut seccomp = None;
    for opt in &args.security_opt {
        match opt.as_str() {
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                no_new_privileges = true
            }
            "no-new-privileges=false" | "no-new-privileges:false" => no_new_privileges = false,
            other => match other
                .strip_prefix("seccomp=")
                .or_else(|| other.strip_prefix("seccomp:"))
            {
                Some(profile) => seccomp = Some(profile.to_owned()),
                None => bail!(
                    "unsupported --security-opt {other:?} (berth knows no-new-privileges and seccomp=unconfined|default)"
                ),
            },
        }
    }
    let bytes = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<i64>> {
        value
            .as_deref()
            .map(|v| parse_bytes(v).with_context(|| format!("invalid {flag} {v:?}")))
            .transpose()
    };
    let resources = ResourceLimits {
        memory: bytes("--memory", &args.memory)?,
        memory_swap: bytes("--memory-swap", &args.memory_swap)?,
        nano_cpus: args
            .cpus
            .as_deref()
            .map(|c| {
                c.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(|n| (n * 1e9).round() as i64)
                    .with_context(|| format!("invalid --cpus {c:?}: use a number like 1.5"))
            })
            .transpose()?,
        cpu_shares: args.cpu_shares,
        pids_limit: args.pids_limit,
        cpuset_cpus: args.cpuset_cpus.clone(),
    };
    Ok(CreateRequest {
        image: args.image.clone(),
        name: args.name.clone(),
        cmd: (!args.command.is_empty()).then(|| args.command.clone()),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        labels,
        read_only: args.read_only,
        auto_remove: args.rm,
        no_new_privileges,
        restart: args.restart.clone(),
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        resources,
        privileged: args.privileged,
        seccomp,
        init: args.init,
        tty: args.tty,
        open_stdin: args.interactive,
        mounts: mounts(args)?,
        volume_driver: args.volume_driver.clone(),
        network: args.network.clone(),
        ip: args.ip.clone(),
        network_aliases: args.network_alias.clone(),
        publish: args
            .publish
            .iter()
            .map(|p| crate::network::parse_publish(p))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect(),
        publish_all: args.publish_all,
        dns: args.dns.clone(),
        dns_search: args.dns_search.clone(),
        add_hosts: args.add_host.clone(),
        log_driver: args.log_driver.clone(),
        log_opts: args
            .log_opt
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("invalid --log-opt {o:?}: use KEY=VALUE"),
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

/// `-v`, `--mount` and `--tmpfs`, docker's syntax.
fn mounts(args: &CreateArgs) -> anyhow::Result<Vec<MountSpec>> {
    let spec = |kind, source: Option<&str>, target: &str| MountSpec {
        kind,
        source: source.map(str::to_owned),
        target: target.to_owned(),
        read_only: false,
        create_source: false,
        tmpfs_size: None,
        tmpfs_mode: None,
        volume_driver: None,
        volume_options: Default::default(),
        volume_nocopy: false,
    };
    let size = |v: &str, flag: &str| -> anyhow::Result<u64> {
        u64::try_from(parse_bytes(v).with_context(|| format!("invalid {flag}"))?)
            .with_context(|| format!("invalid {flag}: negative size"))
    };
    let mode = |v: &str, flag: &str| -> anyhow::Result<u32> {
        u32::from_str_radix(v, 8).with_context(|| format!("invalid {flag}: the mode is octal"))
    };
    let mut all = Vec::new();
    for v in &args.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (source, target, access) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] => (Some(*s), *t, None),
            [s, t, m] => (Some(*s), *t, Some(*m)),
            _ => bail!("invalid -v {v:?}: use NAME:/path[:ro], /path or /host/path:/path[:ro]"),
        };
        if source.is_some_and(str::is_empty) || target.is_empty() {
            bail!("invalid -v {v:?}: use NAME:/path[:ro], /path or /host/path:/path[:ro]");
        }
        let mut m = match source {
            Some(s) if s.starts_with('/') => {
                let mut m = spec(MountKind::Bind, Some(s), target);
                m.create_source = true;
                m
            }
            // A name, or nothing: a named or an anonymous volume.
            other => {
                let mut m = spec(MountKind::Volume, other, target);
                m.volume_driver = args.volume_driver.clone();
                m
            }
        };
        for mode in access.unwrap_or("").split(',').filter(|m| !m.is_empty()) {
            match mode {
                "rw" => m.read_only = false,
                "ro" => m.read_only = true,
                "nocopy" if m.kind == MountKind::Volume => m.volume_nocopy = true,
                other => bail!("invalid -v {v:?}: unknown mode {other:?} (ro, rw, nocopy)"),
            }
        }
        all.push(m);
    }
    for text in &args.mount {
        let flag = format!("--mount {text:?}");
        let mut m = spec(MountKind::Bind, None, "");
        let mut kind = None;
        for field in text.split(',') {
            let (key, value) = field.split_once('=').unwrap_or((field, "true"));
            match key {
                "type" => {
                    kind = Some(match value {
                        "bind" => MountKind::Bind,
                        "tmpfs" => MountKind::Tmpfs,
                        "volume" => MountKind::Volume,
                        other => {
                            bail!("invalid {flag}: unknown type {other:?} (volume, bind or tmpfs)")
                        }
                    })
                }
                "source" | "src" => m.source = Some(value.to_owned()),
                "target" | "destination" | "dst" => m.target = value.to_owned(),
                "readonly" | "ro" => m.read_only = value != "false" && value != "0",
                "volume-driver" => m.volume_driver = Some(value.to_owned()),
                "volume-nocopy" => m.volume_nocopy = value != "false" && value != "0",
                "volume-opt" => {
                    let (k, v) = value
                        .split_once('=')
                        .with_context(|| format!("invalid {flag}: volume-opt takes KEY=VALUE"))?;
                    m.volume_options.insert(k.to_owned(), v.to_owned());
                }
                "tmpfs-size" => m.tmpfs_size = Some(size(value, &flag)?),
                "tmpfs-mode" => m.tmpfs_mode = Some(mode(value, &flag)?),
                other => bail!("invalid {flag}: unknown field {other:?}"),
            }
        }
        // docker's default type is volume.
        m.kind = kind.unwrap_or(MountKind::Volume);
        if m.kind == MountKind::Volume && m.volume_driver.is_none() {
            m.volume_driver = args.volume_driver.clone();
        }
        if m.kind != MountKind::Volume
            && (m.volume_driver.is_some() || !m.volume_options.is_empty() || m.volume_nocopy)
        {
            bail!(
                "invalid {flag}: volume-driver, volume-opt and volume-nocopy are for type=volume"
            );
        }
        if m.target.is_empty() {
            bail!("invalid {flag}: target= is required");
        }
        all.push(m);
    }
    for text in &args.tmpfs {
        let flag = format!("--tmpfs {text:?}");
        let (target, opts) = text.split_once(':').unwrap_or((text.as_str(), ""));
        let mut m = spec(MountKind::Tmpfs, None, target);
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", v)) => m.tmpfs_size = Some(size(v, &flag)?),
                Some(("mode", v)) => m.tmpfs_mode = Some(mode(v, &flag)?),
                None if opt == "ro" => m.read_only = true,
                None if opt == "rw" => m.read_only = false,
                _ => bail!("invalid {flag}: unknown option {opt:?} (size=, mode=, ro)"),
            }
        }
        all.push(m);
    }
    Ok(all)
}

/// docker's sizes: a number of bytes, or with a binary unit (`512m`, `1.5g`, `100kb`);
/// `-1` means unlimited.
pub fn parse_bytes(text: &str) -> anyhow::Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => bail!("unknown unit {unit:?} (use b, k, m, g, t or p)"),
    };
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .context("not a size")?;
    Ok((n * factor) as i64)
}

/// A bad option: reported like docker's flag errors, with its exit code 125.
fn usage_error(e: anyhow::Error) -> anyhow::Result<u8> {
    eprintln!("berth: {e:#}");
    Ok(125)
}

/// The exit code a failed start carries (126/127), else 125 like docker.
fn start_exit_code(e: &RpcError) -> u8 {
    if let RpcError::Call(obj) = e
        && let Some(code) = berth_api::error::data_of(obj).and_then(|d| d.exit_code)
    {
        return u8::try_from(code).unwrap_or(125);
    }
    125
}

/// Creates the container `args` describe; a bad option or a refusal is reported and
/// becomes exit code 125, as in docker.
async fn create_container(
    client: &WsClient,
    args: &CreateArgs,
) -> anyhow::Result<Result<berth_api::container::CreateResult, u8>> {
    let request = match request(args) {
        Ok(r) => r,
        Err(e) => return usage_error(e).map(Err),
    };
    match client.create(request).await {
        Ok(c) => Ok(Ok(c)),
        Err(e) => {
            eprintln!("berth: {}", crate::describe(&e.into()));
            Ok(Err(125))
        }
    }
}

/// `berth create`.
pub async fn create(client: &WsClient, args: CreateArgs) -> anyhow::Result<u8> {
    let created = match create_container(client, &args).await? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    println!("{}", created.id);
    Ok(0)
}

/// `berth run`: create, start, stream output, exit with the container's code.
pub async fn run(
    client: &WsClient,
    conn: &Connection,
    args: CreateArgs,
    detach: bool,
) -> anyhow::Result<u8> {
    if detach {
        let created = match create_container(client, &args).await? {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if let Err(e) = client.start(created.id.clone(), None).await {
            let code = start_exit_code(&e);
            eprintln!("berth: {}", crate::describe(&e.into()));
            return Ok(code);
        }
        println!("{}", created.id);
        return Ok(0);
    }
    // The output gets a connection of its own, opened while the container is made.
    let (created, paced) = tokio::join!(
        create_container(client, &args),
        crate::client::connect_paced(conn)
    );
    let created = match created? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let paced = paced?;
    if args.interactive || args.tty {
        return run_attached(client, &paced, &created.id, &args).await;
    }
    // Follow the log from its start before starting, so no output is missed.
    let mut logs = paced.read(
        paced
            .client
            .logs_follow(created.id.clone(), None)
            .await
            .context("container.logs_follow")?,
    );
    if let Err(e) = client.start(created.id.clone(), None).await {
        let code = start_exit_code(&e);
        eprintln!("berth: {}", crate::describe(&e.into()));
        if args.rm {
            let _ = client
                .remove(created.id.clone(), Some(true), Some(true))
                .await;
        }
        return Ok(code);
    }
    let waiter = client.wait(created.id.clone());
    // Why the output did not all come, if it did not.
    let stream = async {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        while let Some(event) = logs.next().await {
            let line = match event {
                Ok(LogEvent::Line(line)) => line,
                Ok(LogEvent::End) => return None,
                Err(e) => return Some(anyhow::anyhow!("the output stream failed: {e}")),
            };
            let _ = if line.stream == "stderr" {
                err.write_all(line.log.as_bytes()).and_then(|_| err.flush())
            } else {
                out.write_all(line.log.as_bytes()).and_then(|_| out.flush())
            };
        }
        Some(logs.cut_short("output stream"))
    };
    let (result, cut) = tokio::join!(waiter, stream);
    let result = result.context("container.wait")?;
    if let Some(error) = &result.error {
        eprintln!("berth: {error}");
    }
    let code = u8::try_from(result.exit_code).unwrap_or(255);
    if let Some(cut) = cut {
        // A container that succeeded does not make a cut output a success.
        eprintln!("berth: {cut:#}");
        return Ok(code.max(1));
    }
    Ok(code)
}

/// `berth start`.
pub async fn start(client: &WsClient, ids: Vec<String>) -> anyhow::Result<u8> {
    let mut code = 0;
    for id in ids {
        match client.start(id.clone(), None).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                code = start_exit_code(&e).max(1);
                eprintln!("berth: {}", crate::describe(&e.into()));
            }
        }
    }
    Ok(code)
}

/// Options of `berth ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: id=, name=, label=KEY[=VALUE], status=, exited=CODE, ancestor=IMAGE.
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// "3 seconds", as docker's `Up 3 seconds`.
fn up_for(s: &berth_api::container::ContainerState) -> String {
    let ago = output::ago(s.started_at.as_deref());
    ago.strip_suffix(" ago").unwrap_or(&ago).to_owned()
}

fn status_text(s: &berth_api::container::ContainerState) -> String {
    match s.status {
        ContainerStatus::Running => format!("Up {}", up_for(s)),
        ContainerStatus::Paused => format!("Up {} (Paused)", up_for(s)),
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Removing => "Removal In Progress".into(),
        ContainerStatus::Exited => format!(
            "Exited ({}) {}",
            s.exit_code.unwrap_or(0),
            output::ago(s.finished_at.as_deref())
        ),
    }
}

/// `berth ps`.
pub async fn ps(client: &WsClient, args: PsArgs) -> anyhow::Result<u8> {
    let list = client
        .list(Some(ListRequest {
            all: args.all,
            filters: args.filter.clone(),
        }))
        .await
        .context("container.list")?;
    if args.format == Format::Json {
        output::json(&list)?;
        return Ok(0);
    }
    let id = |full: &str| {
        if args.no_trunc {
            full.to_owned()
        } else {
            full[..full.len().min(12)].to_owned()
        }
    };
    if args.quiet {
        for c in &list {
            println!("{}", id(&c.id));
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let cmd = c.command.join(" ");
            let cmd = if args.no_trunc || cmd.chars().count() <= 20 {
                cmd
            } else {
                format!("{}…", cmd.chars().take(19).collect::<String>())
            };
            vec![
                id(&c.id),
                c.image.clone(),
                format!("\"{cmd}\""),
                output::ago(Some(&c.created)),
                status_text(&c.state),
                c.name.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "NAMES",
        ],
        &rows,
    );
    Ok(0)
}

/// Options of `berth logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Container.
    pub id: String,
    /// Follow the output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Only lines since this time (RFC 3339) or duration ago (10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines before this time (RFC 3339) or duration ago.
    #[arg(long)]
    pub until: Option<String>,
}

fn time_arg(s: &Option<String>) -> anyhow::Result<Option<String>> {
    let Some(s) = s else { return Ok(None) };
    if humantime::parse_rfc3339_weak(s).is_ok() {
        return Ok(Some(s.clone()));
    }
    let ago = humantime::parse_duration(s)
        .with_context(|| format!("invalid time {s:?}: use RFC 3339 or a duration like 10m"))?;
    let at = std::time::SystemTime::now() - ago;
    Ok(Some(humantime::format_rfc3339_nanos(at).to_string()))
}

/// `berth logs`.
pub async fn logs(paced: &Paced, args: LogsArgs) -> anyhow::Result<u8> {
    let client = &paced.client;
    let tail = match args.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .with_context(|| format!("invalid --tail {n:?}"))?,
        ),
    };
    let request = LogsRequest {
        tail,
        since: time_arg(&args.since)?,
        until: time_arg(&args.until)?,
    };
    let print = |line: berth_api::container::LogLine| {
        let text = if args.timestamps {
            format!("{} {}", line.time, line.log)
        } else {
            line.log
        };
        if line.stream == "stderr" {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    };
    if args.follow {
        let mut sub = paced.read(
            client
                .logs_follow(args.id.clone(), Some(request))
                .await
                .context("container.logs_follow")?,
        );
        let mut ended = false;
        while let Some(event) = sub.next().await {
            match event.context("log stream")? {
                LogEvent::Line(line) => print(line),
                LogEvent::End => {
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            let _ = std::io::stdout().flush();
            return Err(sub.cut_short("log stream"));
        }
    } else {
        for line in client
            .logs(args.id.clone(), Some(request))
            .await
            .context("container.logs")?
        {
            print(line);
        }
    }
    let _ = std::io::stdout().flush();
    Ok(0)
}

/// `berth wait`.
pub async fn wait(client: &WsClient, ids: Vec<String>) -> anyhow::Result<u8> {
    for id in ids {
        let r = client.wait(id).await.context("container.wait")?;
        println!("{}", r.exit_code);
    }
    Ok(0)
}

/// Runs `op` for each id, printing the id on success (docker's style for kill/stop/rm).
pub async fn each<F, Fut>(ids: Vec<String>, op: F) -> anyhow::Result<u8>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), RpcError>>,
{
    let mut code = 0;
    for id in ids {
        match op(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                code = 1;
                eprintln!("berth: {}", crate::describe(&e.into()));
            }
        }
    }
    Ok(code)
}

/// `berth container inspect`.
pub async fn inspect(client: &WsClient, ids: Vec<String>) -> anyhow::Result<u8> {
    let mut all = Vec::new();
    let mut code = 0;
    for id in ids {
        match client.inspect(id).await {
            Ok(d) => all.push(d),
            Err(e) => {
                code = 1;
                eprintln!("berth: {}", crate::describe(&e.into()));
            }
        }
    }
    output::json(&all)?;
    Ok(code)
}

/// `berth container prune`.
pub async fn prune(client: &WsClient) -> anyhow::Result<u8> {
    let report = ContainerClient::prune(client)
        .await
        .context("container.prune")?;
    if !report.containers_deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &report.containers_deleted {
            println!("{id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::output::human_size(report.space_reclaimed)
    );
    Ok(0)
}

/// `run -i`/`-t`: start, then attach (the first attach gets the output written before it).
async fn run_attached(
    client: &WsClient,
    paced: &Paced,
    id: &str,
    args: &CreateArgs,
) -> anyhow::Result<u8> {
    if let Err(e) = client.start(id.to_owned(), Some(true)).await {
        let code = start_exit_code(&e);
        eprintln!("berth: {}", crate::describe(&e.into()));
        if args.rm {
            let _ = client.remove(id.to_owned(), Some(true), Some(true)).await;
        }
        return Ok(code);
    }
    match crate::attach::session(client, paced, id, args.tty, args.interactive).await {
        Ok(crate::attach::Ended::Exited(code)) => Ok(u8::try_from(code).unwrap_or(255)),
        Ok(crate::attach::Ended::Detached) => {
            eprintln!(
                "\r\nberth: detached from {}; it keeps running",
                &id[..12.min(id.len())]
            );
            Ok(0)
        }
        // Gone before the attach: its output is in the log, its exit code with wait.
        Err(e) => {
            if std::env::var_os("BERTH_DEBUG").is_some() {
                eprintln!("attach failed: {e:#}");
            }
            if let Ok(lines) = client.logs(id.to_owned(), None).await {
                for line in lines {
                    if line.stream == "stderr" {
                        eprint!("{}", line.log);
                    } else {
                        print!("{}", line.log);
                    }
                }
            }
            let result = client.wait(id.to_owned()).await.context("container.wait")?;
            Ok(u8::try_from(result.exit_code).unwrap_or(255))
        }
    }
}

/// `berth attach`.
pub async fn attach(
    client: &WsClient,
    paced: &Paced,
    id: String,
    stdin: bool,
) -> anyhow::Result<u8> {
    let details = match client.inspect(id.clone()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("berth: {}", crate::describe(&e.into()));
            return Ok(1);
        }
    };
    let full = details.summary.id.clone();
    match crate::attach::session(
        client,
        paced,
        &full,
        details.config.tty,
        stdin && details.config.open_stdin,
    )
    .await
    {
        Ok(crate::attach::Ended::Exited(code)) => Ok(u8::try_from(code).unwrap_or(255)),
        Ok(crate::attach::Ended::Detached) => {
            eprintln!("\r\nberth: detached from {id}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("berth: {e:#}");
            Ok(1)
        }
    }
}

/// `berth top`.
pub async fn top(client: &WsClient, id: String) -> anyhow::Result<u8> {
    match client.top(id).await {
        Ok(t) => {
            let header: Vec<&str> = t.titles.iter().map(String::as_str).collect();
            output::table(&header, &t.processes);
            Ok(0)
        }
        Err(e) => {
            eprintln!("berth: {}", crate::describe(&e.into()));
            Ok(1)
        }
    }
}

/// Options of `berth stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Containers (default: all running).
    pub ids: Vec<String>,
}

/// Binary sizes the way `docker stats` prints them (MiB, GiB).
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// `berth stats`: CPU percentages come from two samples a second apart, as docker's do.
pub async fn stats(client: &WsClient, args: StatsArgs) -> anyhow::Result<u8> {
    let ids = if args.ids.is_empty() {
        client
            .list(Some(ListRequest::default()))
            .await
            .context("container.list")?
            .into_iter()
            .map(|c| c.id)
            .collect()
    } else {
        args.ids.clone()
    };
    let sample = |ids: Vec<String>| async move {
        let mut out = Vec::new();
        for id in ids {
            out.push(client.stats(id).await);
        }
        out
    };
    let mut previous = Vec::new();
    for result in sample(ids.clone()).await {
        match result {
            Ok(s) => previous.push(Ok(s)),
            Err(e) => {
                eprintln!("berth: {}", crate::describe(&e.into()));
                return Ok(1);
            }
        }
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let current = sample(ids.clone()).await;
        let mut rows = Vec::new();
        let mut json = Vec::new();
        for (before, now) in previous.iter().zip(&current) {
            let (Ok(b), Ok(n)) = (before, now) else {
                continue;
            };
            let elapsed = humantime::parse_rfc3339_weak(&n.read)
                .ok()
                .zip(humantime::parse_rfc3339_weak(&b.read).ok())
                .and_then(|(n, b)| n.duration_since(b).ok())
                .map_or(1e9, |d| d.as_nanos().max(1) as f64);
            let cpu = n.cpu_nanos.saturating_sub(b.cpu_nanos) as f64 / elapsed * 100.0;
            let mem = n.memory_bytes as f64 / n.memory_limit.max(1) as f64 * 100.0;
            rows.push(vec![
                n.id[..12.min(n.id.len())].to_owned(),
                n.name.clone(),
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    binary_size(n.memory_bytes),
                    binary_size(n.memory_limit)
                ),
                format!("{mem:.2}%"),
                n.pids.to_string(),
            ]);
            json.push(serde_json::json!({
                "id": n.id, "name": n.name, "cpu_percent": cpu,
                "memory_bytes": n.memory_bytes, "memory_limit": n.memory_limit,
                "memory_percent": mem, "pids": n.pids,
            }));
        }
        match args.format {
            Format::Json => output::json(&json)?,
            Format::Table => {
                if !args.no_stream {
                    // Clear the screen and go home, as docker stats does.
                    print!("\x1b[2J\x1b[H");
                }
                output::table(
                    &[
                        "CONTAINER ID",
                        "NAME",
                        "CPU %",
                        "MEM USAGE / LIMIT",
                        "MEM %",
                        "PIDS",
                    ],
                    &rows,
                );
            }
        }
        if args.no_stream || rows.is_empty() {
            return Ok(0);
        }
        previous = current;
    }
}

/// Options of `berth exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the process.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables (KEY=value).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container.
    pub container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `berth exec`: streams the process's output, feeds it stdin with `-i`, and exits with
/// its exit code.
pub async fn exec(client: &WsClient, paced: &Paced, args: ExecArgs) -> anyhow::Result<u8> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use berth_api::container::{ExecEvent, ExecRequest};

    let request = ExecRequest {
        cmd: args.command.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        stdin: args.interactive,
        tty: args.tty,
    };
    let mut sub = match paced.client.exec(args.container.clone(), request).await {
        Ok(s) => paced.read(s),
        Err(e) => {
            eprintln!("berth: {}", crate::describe(&e.into()));
            return Ok(1);
        }
    };
    let mut stdin = args.interactive.then(crate::attach::stdin_chunks);
    let mut exec_id: Option<String> = None;
    let _raw = if args.tty && args.interactive {
        crate::attach::RawMode::enable()
    } else {
        None
    };
    let mut winch = args
        .tty
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok())
        .flatten();
    let resize = |id: String| async move {
        if let Some((rows, cols)) = crate::attach::terminal_size() {
            let _ = client.exec_resize(id, rows, cols).await;
        }
    };
    loop {
        let event = tokio::select! {
            event = sub.next() => event,
            Some(()) = async { winch.as_mut()?.recv().await }, if winch.is_some() && exec_id.is_some() => {
                resize(exec_id.clone().unwrap_or_default()).await;
                continue;
            }
            chunk = async { stdin.as_mut()?.recv().await },
                if stdin.is_some() && exec_id.is_some() => {
                let id = exec_id.clone().unwrap_or_default();
                match chunk {
                    Some(chunk) if !chunk.is_empty() => {
                        let data = BASE64.encode(&chunk);
                        client.exec_input(id, Some(data), None).await.context("container.exec_input")?;
                    }
                    _ => {
                        stdin = None;
                        client.exec_input(id, None, Some(true)).await.context("container.exec_input")?;
                    }
                }
                continue;
            }
        };
        let Some(event) = event else {
            return Err(sub.cut_short("exec stream"));
        };
        match event.context("exec stream")? {
            ExecEvent::Started { exec_id: id } => {
                if args.tty {
                    resize(id.clone()).await;
                }
                exec_id = Some(id);
            }
            ExecEvent::Stdout { data } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&BASE64.decode(data)?)?;
                out.flush()?;
            }
            ExecEvent::Stderr { data } => {
                let mut err = std::io::stderr().lock();
                err.write_all(&BASE64.decode(data)?)?;
                err.flush()?;
            }
            ExecEvent::Exit { exit_code } => return Ok(u8::try_from(exit_code).unwrap_or(255)),
        }
    }
}

/// Options of `berth cp`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH, a local path, or - (a tar archive on stdin).
    pub source: String,
    /// CONTAINER:DEST_PATH, a local path, or - (a tar archive on stdout).
    pub dest: String,
}

/// `CONTAINER:PATH` → Some((container, path)); local paths (including `./a:b`) → None.
fn container_path(arg: &str) -> Option<(&str, &str)> {
    let (name, path) = arg.split_once(':')?;
    (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then_some((name, path))
}

/// Bytes sent between the async client and a blocking tar reader or writer.
struct ChannelWriter(tokio::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "copy cancelled"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
    offset: usize,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset >= self.pending.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.pending = chunk;
                    self.offset = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// `berth cp`: copies between a container (running or stopped) and the local machine,
/// with docker's rules for directories and new names.
pub async fn cp(client: &WsClient, conn: &Connection, args: CpArgs) -> anyhow::Result<u8> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use berth_api::container::ArchiveEvent;

    match (container_path(&args.source), container_path(&args.dest)) {
        (Some((id, path)), None) => {
            let paced = crate::client::connect_paced(conn).await?;
            let mut sub = match paced
                .client
                .archive_get(id.to_owned(), path.to_owned())
                .await
            {
                Ok(s) => paced.read(s),
                Err(e) => {
                    eprintln!("berth: {}", crate::describe(&e.into()));
                    return Ok(1);
                }
            };
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
            let dest = args.dest.clone();
            let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut reader = ChannelReader {
                    rx,
                    pending: Vec::new(),
                    offset: 0,
                };
                if dest == "-" {
                    std::io::copy(&mut reader, &mut std::io::stdout().lock())?;
                } else {
                    berth_api::archive::unpack_at(&mut reader, std::path::Path::new(&dest))?;
                }
                Ok(())
            });
            let mut failure = None;
            let mut ended = false;
            while let Some(event) = sub.next().await {
                match event.context("archive stream")? {
                    ArchiveEvent::Data { data } => {
                        if tx.send(BASE64.decode(data)?).await.is_err() {
                            break;
                        }
                    }
                    ArchiveEvent::End => {
                        ended = true;
                        break;
                    }
                    ArchiveEvent::Failed { message, .. } => {
                        failure = Some(message);
                        break;
                    }
                }
            }
            if !ended && failure.is_none() {
                failure = Some(format!("{:#}", sub.cut_short("archive stream")));
            }
            drop(tx);
            let written = writer.await?;
            if let Some(message) = failure {
                eprintln!("berth: {id}:{path}: {message}");
                return Ok(1);
            }
            if let Err(e) = written {
                eprintln!("berth: {}: {e:#}", args.dest);
                return Ok(1);
            }
            Ok(0)
        }
        (None, Some((id, path))) => {
            let upload = match client.archive_put(id.to_owned(), path.to_owned()).await {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("berth: {}", crate::describe(&e.into()));
                    return Ok(1);
                }
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
            let source = args.source.clone();
            let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx));
                if source == "-" {
                    std::io::copy(&mut std::io::stdin().lock(), &mut out)?;
                } else {
                    let path = std::path::Path::new(&source);
                    let meta = std::fs::symlink_metadata(path)
                        .with_context(|| format!("{source}: no such file or directory"))?;
                    let name = berth_api::archive::entry_name(path);
                    let mut builder = tar::Builder::new(&mut out);
                    builder.follow_symlinks(false);
                    if meta.is_dir() {
                        builder.append_dir_all(&name, path)?;
                    } else {
                        builder.append_path_with_name(path, &name)?;
                    }
                    builder.finish()?;
                }
                std::io::Write::flush(&mut out)?;
                Ok(())
            });
            while let Some(chunk) = rx.recv().await {
                client
                    .archive_put_data(upload.clone(), Some(BASE64.encode(&chunk)), None)
                    .await
                    .context("container.archive_put_data")?;
            }
            if let Err(e) = reader.await? {
                // Finish the upload so the daemon's side ends; the local error is the news.
                let _ = client.archive_put_data(upload, None, Some(true)).await;
                eprintln!("berth: {e:#}");
                return Ok(1);
            }
            match client.archive_put_data(upload, None, Some(true)).await {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("berth: {id}:{path}: {}", crate::describe(&e.into()));
                    Ok(1)
                }
            }
        }
        (Some(_), Some(_)) => usage_error(anyhow::anyhow!(
            "copying between containers is not supported: copy to a local path first"
        )),
        (None, None) => usage_error(anyhow::anyhow!(
            "one of source and destination must be CONTAINER:PATH"
        )),
    }
}
