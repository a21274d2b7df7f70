//! `system.*`: daemon identity, host facts, disk usage and liveness.

use berth_api_macros::method_specs;
use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Versions of the daemon and the host it runs on (`berth version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    /// berthd's release version.
    pub version: String,
    /// The JSON-RPC API version berthd speaks.
    pub api_version: String,
    /// The git commit berthd was built from, when known at build time.
    pub git_commit: Option<String>,
    /// Operating system family (`linux`).
    pub os: String,
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Running kernel release.
    pub kernel_version: String,
}

/// Container counts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerCounts {
    /// All containers.
    pub total: u64,
    /// Running.
    pub running: u64,
    /// Paused (frozen).
    pub paused: u64,
    /// Created or exited.
    pub stopped: u64,
}

/// The cgroup hierarchy berthd manages containers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CgroupInfo {
    /// `1` (legacy or hybrid hierarchy) or `2` (unified hierarchy).
    pub version: u8,
    /// How cgroups are driven: `cgroupfs` (berthd writes the cgroup filesystem itself).
    pub driver: String,
    /// Controllers available to containers.
    pub controllers: Vec<String>,
}

/// What `berth info` shows: the daemon, the host and counts of every object kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfo {
    /// A stable id for this daemon's data root, created on first start.
    pub id: String,
    /// Host name.
    pub name: String,
    /// berthd's release version.
    pub server_version: String,
    /// The JSON-RPC API version.
    pub api_version: String,
    /// Running kernel release.
    pub kernel_version: String,
    /// Operating system, from os-release (`Debian GNU/Linux 12 (bookworm)`).
    pub operating_system: String,
    /// Operating system family (`linux`).
    pub os_type: String,
    /// CPU architecture.
    pub architecture: String,
    /// Logical CPUs online.
    pub ncpu: u32,
    /// Total memory in bytes.
    pub mem_total: u64,
    /// cgroup version, driver and controllers.
    pub cgroup: CgroupInfo,
    /// Storage driver for image layers and container root filesystems.
    pub storage_driver: String,
    /// Whether the kernel offers overlayfs (required by the storage driver).
    pub storage_driver_supported: bool,
    /// Where berthd keeps its state.
    pub data_root: String,
    /// Where berthd listens.
    pub listeners: Vec<String>,
    /// Containers by state.
    pub containers: ContainerCounts,
    /// Images.
    pub images: u64,
    /// Volumes.
    pub volumes: u64,
    /// Networks.
    pub networks: u64,
    /// Installed plugins.
    pub plugins: u64,
    /// Kernel security facilities present on the host (`seccomp`, `apparmor`, `selinux`,
    /// `userns`, `cgroupns`, `no-new-privileges`).
    pub security_options: Vec<String>,
    /// Daemon log level.
    pub log_level: String,
    /// Seconds since berthd started.
    pub uptime_secs: u64,
    /// Host time when the answer was made, RFC 3339.
    pub system_time: String,
}

/// Disk usage of one kind of object (`berth system df`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageSummary {
    /// `Images`, `Containers`, `Local Volumes`, `Plugins`.
    pub kind: String,
    /// How many objects of this kind exist.
    pub total: u64,
    /// How many are in use.
    pub active: u64,
    /// Bytes on disk under the data root for this kind.
    pub size_bytes: u64,
    /// Bytes that pruning unused objects would free.
    pub reclaimable_bytes: u64,
}

/// `system.df`: usage per kind plus the whole data root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DiskUsage {
    /// One row per object kind.
    pub kinds: Vec<UsageSummary>,
    /// Everything under the data root, including the state database.
    pub data_root_bytes: u64,
}

/// One tick of `system.heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Heartbeat {
    /// 1 for the first tick, then counting up.
    pub seq: u64,
    /// Seconds since berthd started.
    pub uptime_secs: u64,
}

/// `system.*`: what the daemon is, where it runs, and whether it answers.
#[method_specs]
#[rpc(server, client, namespace = "system", namespace_separator = ".")]
pub trait System {
    /// Versions of berthd and of the host kernel (like `docker version`).
    #[method(name = "version", param_kind = map)]
    async fn version(&self) -> RpcResult<VersionInfo>;

    /// Daemon and host facts with counts of every object kind (like `docker info`).
    #[method(name = "info", param_kind = map)]
    async fn info(&self) -> RpcResult<SystemInfo>;

    /// Answers `"OK"`: the cheapest round trip, for liveness checks.
    #[method(name = "ping", param_kind = map)]
    async fn ping(&self) -> RpcResult<String>;

    /// Disk usage by object kind (like `docker system df`).
    #[method(name = "df", param_kind = map)]
    async fn df(&self) -> RpcResult<DiskUsage>;

    /// berthd's metrics in the OpenMetrics text format (what `GET /metrics` serves): API
    /// calls by method and outcome with latency histograms, plugin calls, containers by
    /// state, pulls, log records delivered and dropped.
    #[method(name = "metrics", param_kind = map)]
    async fn metrics(&self) -> RpcResult<String>;

    /// Ticks every `interval_ms` (default 1000, 10..=3600000) until unsubscribed: a liveness
    /// stream for automation that holds a WebSocket open.
    #[subscription(name = "heartbeat", unsubscribe = "heartbeat_unsubscribe", item = Heartbeat, param_kind = map)]
    async fn heartbeat(&self, interval_ms: Option<u64>) -> SubscriptionResult;
}
