//! `container.*`: creating, running, stopping, inspecting and removing containers.

use std::collections::BTreeMap;

use berth_api_macros::method_specs;
use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What `container.create` makes (the options of `docker create`/`docker run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Image reference or id.
    pub image: String,
    /// Container name (default: a generated one).
    #[serde(default)]
    pub name: Option<String>,
    /// Command, replacing the image's `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Entrypoint, replacing the image's (an empty list clears it).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` entries added to (or replacing) the image's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user[:group]`, names or ids, resolved in the container's /etc/passwd.
    #[serde(default)]
    pub user: Option<String>,
    /// Host name (default: the short id).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Keep `no_new_privs` set (`--security-opt no-new-privileges`).
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Restart policy: `no` (default), `on-failure[:max-retries]`, `always`,
    /// `unless-stopped`.
    #[serde(default)]
    pub restart: Option<String>,
    /// Capabilities to add to docker's default set (`NET_ADMIN`, `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities to drop from it (`CHOWN`, `ALL`).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Signal `stop` sends first (default: the image's, else SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL when the caller gives none (default 10).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// Cgroup limits.
    #[serde(default)]
    pub resources: ResourceLimits,
    /// Every capability, every host device, no seccomp filter, no masked or read-only
    /// paths (`--privileged`).
    #[serde(default)]
    pub privileged: bool,
    /// Seccomp profile: `default` (docker's default) or `unconfined` (none).
    #[serde(default)]
    pub seccomp: Option<String>,
    /// Run a minimal init as PID 1 that forwards signals and reaps zombies (`--init`).
    #[serde(default)]
    pub init: bool,
    /// Give the container a pseudo-terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep its stdin open for attached clients (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Bind, tmpfs and volume mounts (`-v`, `--mount`, `--tmpfs`).
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Driver of the volumes this container creates without naming one, the image's
    /// `VOLUME`s included (`--volume-driver`; default `local`).
    #[serde(default)]
    pub volume_driver: Option<String>,
    /// `--network`: `bridge` (the default), `none`, `host`, or a network's name or id.
    #[serde(default)]
    pub network: Option<String>,
    /// `--ip`: the IPv4 address on that network.
    #[serde(default)]
    pub ip: Option<String>,
    /// `--network-alias`: more names it answers to on that network (not on `bridge`).
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// `-p`: published ports (ranges already expanded, one entry per port).
    #[serde(default)]
    pub publish: Vec<PortBinding>,
    /// `-P`: publish every port the image `EXPOSE`s on an ephemeral host port.
    #[serde(default)]
    pub publish_all: bool,
    /// `--dns`: name servers for /etc/resolv.conf.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search`: search domains for /etc/resolv.conf.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--add-host NAME:IP`: extra /etc/hosts lines.
    #[serde(default)]
    pub add_hosts: Vec<String>,
    /// `--log-driver`: `local` (only the local log) or an installed logging plugin such
    /// as `json-file` or `syslog` (default: berthd's `log-driver`).
    #[serde(default)]
    pub log_driver: Option<String>,
    /// `--log-opt KEY=VALUE`: options of the logging driver; `mode`
    /// (`blocking`/`non-blocking`) and `max-buffer-size` are berthd's own, the rest go to
    /// the driver.
    #[serde(default)]
    pub log_opts: BTreeMap<String, String>,
}

/// One published port: `-p [host_ip:][host_port:]container_port[/protocol]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortBinding {
    /// `tcp` or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Host address to accept on (IPv4); none for every address.
    #[serde(default)]
    pub host_ip: Option<String>,
    /// Host port; none (or 0) for an ephemeral one.
    #[serde(default)]
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
}

fn tcp() -> String {
    "tcp".into()
}

/// A container's place on one network, in `container.inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointSettings {
    /// The network's id.
    pub network_id: String,
    /// Address with prefix length (`10.201.0.2/24`).
    pub ipv4_address: String,
    /// Gateway, if the network has one.
    pub gateway: Option<String>,
    /// MAC address.
    pub mac_address: String,
    /// Interface name inside the container.
    pub interface: String,
    /// Names it answers to on the network.
    pub aliases: Vec<String>,
}

/// `container.inspect`'s network facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkSettings {
    /// `bridge`, `none`, `host` or a network name.
    pub mode: String,
    /// Networks it is on, by name (empty while it is not running).
    pub networks: BTreeMap<String, EndpointSettings>,
    /// Published ports as bound (host ports resolved).
    pub ports: Vec<PortBinding>,
}

/// What a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host file or directory.
    Bind,
    /// A fresh in-memory filesystem.
    Tmpfs,
    /// A volume, named or anonymous, from a volume driver plugin.
    Volume,
}

/// One mount of `container.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Bind or tmpfs.
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (bind), or volume name (volume; none: a new anonymous volume).
    #[serde(default)]
    pub source: Option<String>,
    /// Path in the container (absolute).
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Create a missing bind source directory (docker's `-v`; `--mount` refuses instead).
    #[serde(default)]
    pub create_source: bool,
    /// tmpfs size in bytes (default: half the RAM, as the kernel does).
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    /// tmpfs mode (default 1777).
    #[serde(default)]
    pub tmpfs_mode: Option<u32>,
    /// Driver of a volume created by this mount (default `local`).
    #[serde(default)]
    pub volume_driver: Option<String>,
    /// Driver options of a volume created by this mount.
    #[serde(default)]
    pub volume_options: BTreeMap<String, String>,
    /// Do not fill an empty volume with the image's content at the mount point.
    #[serde(default)]
    pub volume_nocopy: bool,
}

/// A mount of a container, as `container.inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MountPoint {
    /// `bind`, `tmpfs` or `volume`.
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Volume name (volumes only).
    #[serde(default)]
    pub name: Option<String>,
    /// Host path (bind, volume).
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// Volume driver (volumes only).
    #[serde(default)]
    pub driver: Option<String>,
    /// Writable.
    pub rw: bool,
}

/// Cgroup limits, with docker's names and units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Memory limit in bytes (`--memory`; at least 6 MiB).
    #[serde(default)]
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (`--memory-swap`; -1: unlimited swap; default: twice
    /// `memory`).
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// CPU quota in billionths of a CPU (`--cpus 1.5` is 1500000000).
    #[serde(default)]
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight (`--cpu-shares`, 2..262144, default 1024).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Most processes and threads (`--pids-limit`; 0 or -1: unlimited).
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// CPUs the container may run on (`--cpuset-cpus 0-1,3`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
}

/// `container.top`: the container's processes, `ps -ef` style.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopResult {
    /// Column titles.
    pub titles: Vec<String>,
    /// One row per process, in the order of `titles`.
    pub processes: Vec<Vec<String>>,
}

/// One `container.stats` sample, from the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerStats {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// When the sample was taken (RFC 3339).
    pub read: String,
    /// CPU time used so far, nanoseconds (two samples give the CPU percentage).
    pub cpu_nanos: u64,
    /// CPUs of the host.
    pub online_cpus: u32,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (the host's memory when unlimited).
    pub memory_limit: u64,
    /// Processes and threads.
    pub pids: u64,
    /// The pids limit, if any.
    pub pids_limit: Option<u64>,
}

/// What `container.prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerPruneReport {
    /// Ids of the removed containers.
    pub containers_deleted: Vec<String>,
    /// Bytes their writable layers and logs took.
    pub space_reclaimed: u64,
}

/// What `container.create` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateResult {
    /// The new container's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// Lifecycle state, as docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// Made, never started.
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Its process ended.
    Exited,
    /// Being removed.
    Removing,
}

/// A container's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerState {
    /// Lifecycle state.
    pub status: ContainerStatus,
    /// Host pid of its init process while running.
    pub pid: Option<i32>,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Why it failed to start, if it did.
    pub error: Option<String>,
    /// Whether the OOM killer ended it.
    pub oom_killed: bool,
    /// When it last started (RFC 3339).
    pub started_at: Option<String>,
    /// When it last exited (RFC 3339).
    pub finished_at: Option<String>,
    /// How often the restart policy restarted it.
    #[serde(default)]
    pub restart_count: u32,
}

/// One row of `container.list` (`docker ps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The image as given at creation.
    pub image: String,
    /// The image id.
    pub image_id: String,
    /// The command line.
    pub command: Vec<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// State.
    pub state: ContainerState,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// `container.inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerDetails {
    /// Summary fields.
    #[serde(flatten)]
    pub summary: ContainerSummary,
    /// The options it was created with.
    pub config: CreateRequest,
    /// Environment of its process.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// Host name.
    pub hostname: String,
    /// Its local log file (JSON lines).
    pub log_path: String,
    /// Its bundle directory (OCI `config.json` inside).
    pub bundle: String,
    /// Its mounts (binds, tmpfs, volumes).
    #[serde(default)]
    pub mounts: Vec<MountPoint>,
    /// Its networks and published ports.
    #[serde(default)]
    pub network_settings: NetworkSettings,
    /// Delivery to its logging driver, when it has one other than `local`.
    #[serde(default)]
    pub log_delivery: Option<LogDelivery>,
}

/// How a container's log records reach its logging driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogDelivery {
    /// The driver.
    pub driver: String,
    /// `blocking` or `non-blocking`.
    pub mode: String,
    /// Records the driver accepted.
    pub delivered: u64,
    /// Records dropped: the buffer overflowed (non-blocking), the driver refused a batch,
    /// or the local log rotated past records not yet read.
    pub dropped: u64,
    /// Bytes waiting in the buffer now.
    pub buffered_bytes: u64,
    /// Whether records are being delivered now (false once the container stopped and its
    /// log was closed).
    pub active: bool,
    /// The last delivery error.
    pub last_error: Option<String>,
}

/// Which containers `container.list` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Include stopped ones.
    #[serde(default)]
    pub all: bool,
    /// docker's `--filter`s, all of which must match: `id=`, `name=` (substring),
    /// `label=KEY` or `label=KEY=VALUE`, `status=created|running|paused|exited`,
    /// `exited=CODE`, `ancestor=IMAGE` (as given or the image id).
    #[serde(default)]
    pub filters: Vec<String>,
}

impl ListRequest {
    /// Checks the filters' syntax, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.filters {
            let Some((key, value)) = f.split_once('=') else {
                return Err(format!("bad filter {f:?}: use key=value"));
            };
            match key {
                "id" | "name" | "label" | "ancestor" => {}
                "status"
                    if ["created", "running", "paused", "exited", "removing"].contains(&value) => {}
                "status" => {
                    return Err(format!(
                        "bad filter {f:?}: status is created, running, paused or exited"
                    ));
                }
                "exited" if value.parse::<i32>().is_ok() => {}
                "exited" => return Err(format!("bad filter {f:?}: exited takes a number")),
                other => return Err(format!("unknown filter {other:?}")),
            }
        }
        Ok(())
    }

    /// Whether `c` matches every filter.
    pub fn matches(&self, c: &ContainerSummary) -> bool {
        self.filters.iter().all(|f| {
            let (key, value) = f.split_once('=').unwrap_or((f.as_str(), ""));
            match key {
                "id" => c.id.starts_with(value),
                "name" => c.name.contains(value),
                "label" => match value.split_once('=') {
                    Some((k, v)) => c.labels.get(k).is_some_and(|l| l == v),
                    None => c.labels.contains_key(value),
                },
                "status" => serde_json::to_value(c.state.status)
                    .ok()
                    .is_some_and(|s| s == value),
                "exited" => {
                    c.state.status == ContainerStatus::Exited
                        && c.state.exit_code.map(|e| e.to_string()).as_deref() == Some(value)
                }
                "ancestor" => {
                    c.image == value
                        || c.image_id == value
                        || c.image_id.trim_start_matches("sha256:").starts_with(value)
                }
                _ => false,
            }
        })
    }
}

/// How a container ended (`container.wait`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WaitResult {
    /// Exit code.
    pub exit_code: i32,
    /// Why it failed to start, if it did.
    pub error: Option<String>,
    /// Whether the OOM killer ended it.
    pub oom_killed: bool,
}

/// Which log records to return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// Only the last N records.
    #[serde(default)]
    pub tail: Option<usize>,
    /// Only records at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Only records before this time (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// The text (with its newline when the line was complete).
    pub log: String,
}

/// One item of `container.logs_follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEvent {
    /// A log record.
    Line(LogLine),
    /// The container has exited and every record was sent; nothing follows.
    End,
}

/// What `container.exec` runs in a running container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// `KEY=value` entries added to the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user[:group]` (default: the container's).
    #[serde(default)]
    pub user: Option<String>,
    /// Keep the process's stdin open for `container.exec_input` (else it reads
    /// /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// Give the process a terminal (`exec -t`): its output comes as `stdout`, and
    /// `container.exec_resize` sets the terminal's size.
    #[serde(default)]
    pub tty: bool,
}

/// One item of the `container.exec` subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    /// The process runs; `exec_id` addresses it in `container.exec_input`.
    Started {
        /// Id of this exec.
        exec_id: String,
    },
    /// Bytes the process wrote to stdout (base64).
    Stdout {
        /// Base64 of the bytes.
        data: String,
    },
    /// Bytes the process wrote to stderr (base64).
    Stderr {
        /// Base64 of the bytes.
        data: String,
    },
    /// The process ended (126/127: it could not run); nothing follows.
    Exit {
        /// Its exit code (128+N when killed by signal N).
        exit_code: i32,
    },
}

/// One item of the `container.archive_get` subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ArchiveEvent {
    /// The next bytes of the tar archive (base64).
    Data {
        /// Base64 of the bytes.
        data: String,
    },
    /// The archive is complete; nothing follows.
    End,
    /// The copy failed; nothing follows.
    Failed {
        /// What failed.
        message: String,
        /// Whether the path does not exist in the container.
        not_found: bool,
    },
}

/// One item of the `container.attach` subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AttachEvent {
    /// Bytes the container wrote (base64); a TTY has only `stdout`.
    Output {
        /// `stdout` or `stderr`.
        stream: String,
        /// Base64 of the bytes.
        data: String,
    },
    /// The container exited; nothing follows.
    Exit {
        /// Its exit code.
        exit_code: i32,
    },
}

/// `container.*`: the container lifecycle.
#[method_specs]
#[rpc(server, client, namespace = "container", namespace_separator = ".")]
pub trait Container {
    /// Creates a container from an image (like `docker create`).
    #[method(name = "create", param_kind = map)]
    async fn create(&self, request: CreateRequest) -> RpcResult<CreateResult>;

    /// Starts a created or exited container; returns once its process has exec'd. With
    /// `attach`, the caller promises a `container.attach` right after: the container's
    /// exit is held back (up to 10 s) until that attach has received all its output.
    #[method(name = "start", param_kind = map)]
    async fn start(&self, id: String, attach: Option<bool>) -> RpcResult<()>;

    /// Waits until the container exits and returns how it ended.
    #[method(name = "wait", param_kind = map)]
    async fn wait(&self, id: String) -> RpcResult<WaitResult>;

    /// Sends a signal (default SIGKILL) to the container's process.
    #[method(name = "kill", param_kind = map)]
    async fn kill(&self, id: String, signal: Option<String>) -> RpcResult<()>;

    /// Stops the container: its stop signal, then SIGKILL after `timeout` seconds (default:
    /// its `stop_timeout`, else 10).
    #[method(name = "stop", param_kind = map)]
    async fn stop(&self, id: String, timeout: Option<u64>) -> RpcResult<()>;

    /// Removes a container; a running one only with `force` (it is killed first). With
    /// `volumes`, the anonymous volumes made for it are removed too (`rm -v`).
    #[method(name = "remove", param_kind = map)]
    async fn remove(&self, id: String, force: Option<bool>, volumes: Option<bool>)
    -> RpcResult<()>;

    /// Renames a container.
    #[method(name = "rename", param_kind = map)]
    async fn rename(&self, id: String, name: String) -> RpcResult<()>;

    /// Stops the container (like `stop`) and starts it again.
    #[method(name = "restart", param_kind = map)]
    async fn restart(&self, id: String, timeout: Option<u64>) -> RpcResult<()>;

    /// Runs a process in a running container, streaming its output until it exits.
    #[subscription(name = "exec", unsubscribe = "exec_cancel", item = ExecEvent, param_kind = map, with_extensions)]
    async fn exec(&self, id: String, request: ExecRequest) -> SubscriptionResult;

    /// Writes base64 `data` to an exec's stdin; `close` closes it afterwards.
    #[method(name = "exec_input", param_kind = map)]
    async fn exec_input(
        &self,
        exec_id: String,
        data: Option<String>,
        close: Option<bool>,
    ) -> RpcResult<()>;

    /// Streams a tar archive of `path` in the container (running or not), one top-level
    /// entry named after it (`docker cp CONTAINER:PATH -`).
    #[subscription(name = "archive_get", unsubscribe = "archive_get_cancel", item = ArchiveEvent, param_kind = map)]
    async fn archive_get(&self, id: String, path: String) -> SubscriptionResult;

    /// Starts unpacking a tar archive at `path` in the container: into it when it is a
    /// directory, else as it. Returns an upload id for `archive_put_data`.
    #[method(name = "archive_put", param_kind = map, with_extensions)]
    async fn archive_put(&self, id: String, path: String) -> RpcResult<String>;

    /// Sends the next base64 bytes of an upload; `end` finishes it and reports whether
    /// the archive was unpacked.
    #[method(name = "archive_put_data", param_kind = map)]
    async fn archive_put_data(
        &self,
        upload_id: String,
        data: Option<String>,
        end: Option<bool>,
    ) -> RpcResult<()>;

    /// Streams a running container's output from now on (the first attach after a start
    /// also gets what it wrote before) until it exits.
    #[subscription(name = "attach", unsubscribe = "detach", item = AttachEvent, param_kind = map)]
    async fn attach(&self, id: String) -> SubscriptionResult;

    /// Writes base64 `data` to a container's stdin (created with `-i` or `-t`); `close`
    /// closes its stdin afterwards (ignored with a TTY).
    #[method(name = "input", param_kind = map)]
    async fn input(&self, id: String, data: Option<String>, close: Option<bool>) -> RpcResult<()>;

    /// Sets the size of a container's terminal (created with `-t`).
    #[method(name = "resize", param_kind = map)]
    async fn resize(&self, id: String, rows: u16, cols: u16) -> RpcResult<()>;

    /// Sets the size of an `exec -t` process's terminal.
    #[method(name = "exec_resize", param_kind = map)]
    async fn exec_resize(&self, exec_id: String, rows: u16, cols: u16) -> RpcResult<()>;

    /// Freezes every process of the container.
    #[method(name = "pause", param_kind = map)]
    async fn pause(&self, id: String) -> RpcResult<()>;

    /// Thaws a paused container.
    #[method(name = "unpause", param_kind = map)]
    async fn unpause(&self, id: String) -> RpcResult<()>;

    /// The container's published ports as bound (like `docker port`).
    #[method(name = "port", param_kind = map)]
    async fn port(&self, id: String) -> RpcResult<Vec<PortBinding>>;

    /// The container's processes.
    #[method(name = "top", param_kind = map)]
    async fn top(&self, id: String) -> RpcResult<TopResult>;

    /// CPU, memory and pids figures from the container's cgroup.
    #[method(name = "stats", param_kind = map)]
    async fn stats(&self, id: String) -> RpcResult<ContainerStats>;

    /// Removes every container that is not running (like `docker container prune`).
    #[method(name = "prune", param_kind = map)]
    async fn prune(&self) -> RpcResult<ContainerPruneReport>;

    /// Lists containers (like `docker ps`).
    #[method(name = "list", param_kind = map, with_extensions)]
    async fn list(&self, request: Option<ListRequest>) -> RpcResult<Vec<ContainerSummary>>;

    /// Everything about one container, by id, id prefix or name.
    #[method(name = "inspect", param_kind = map)]
    async fn inspect(&self, id: String) -> RpcResult<ContainerDetails>;

    /// Log records written so far.
    #[method(name = "logs", param_kind = map)]
    async fn logs(&self, id: String, request: Option<LogsRequest>) -> RpcResult<Vec<LogLine>>;

    /// Log records as they are written, starting with those selected by `request`; an `end`
    /// event follows the last record once the container has exited.
    #[subscription(name = "logs_follow", unsubscribe = "logs_unfollow", item = LogEvent, param_kind = map)]
    async fn logs_follow(&self, id: String, request: Option<LogsRequest>) -> SubscriptionResult;
}
