//! `network.*`: networks served by network driver plugins (the built-in `bridge` among them),
//! and containers' membership in them.

use std::collections::BTreeMap;

use berth_api_macros::method_specs;
use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The driver used when none is named.
pub const DEFAULT_DRIVER: &str = "bridge";

/// The network containers join when they name none (`--network bridge`), as in docker: no
/// name resolution between its containers, `/etc/hosts` only.
pub const DEFAULT_NETWORK: &str = "bridge";

/// What `network.create` makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreateRequest {
    /// Name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`); `bridge`, `host` and `none` are reserved.
    pub name: String,
    /// Network driver plugin (default `bridge`).
    #[serde(default)]
    pub driver: Option<String>,
    /// IPv4 subnet (`--subnet 10.5.0.0/24`); default: the driver's pool.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Gateway address in the subnet (`--gateway`).
    #[serde(default)]
    pub gateway: Option<String>,
    /// Sub-range container addresses come from (`--ip-range`).
    #[serde(default)]
    pub ip_range: Option<String>,
    /// No connectivity outside the network (`--internal`).
    #[serde(default)]
    pub internal: bool,
    /// Driver options (`-o key=value`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A container attached to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkMember {
    /// Container name.
    pub name: String,
    /// Its address with prefix length (`10.201.0.2/24`), empty while it is not running.
    pub ipv4_address: String,
    /// Its MAC address, empty while it is not running.
    pub mac_address: String,
    /// Names it answers to on this network besides its own (`--network-alias`).
    pub aliases: Vec<String>,
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInfo {
    /// Id (64 hex digits).
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver plugin.
    pub driver: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// IPv4 subnet.
    pub subnet: String,
    /// IPv4 gateway, if any.
    pub gateway: Option<String>,
    /// No outside connectivity.
    pub internal: bool,
    /// The host-side bridge, for drivers that make one.
    pub bridge: Option<String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver-specific facts (filled by `inspect`).
    #[serde(default)]
    pub status: BTreeMap<String, String>,
    /// Whether containers on it resolve each other by name (every network but the default
    /// `bridge`).
    pub dns: bool,
    /// Containers attached, by id.
    pub containers: BTreeMap<String, NetworkMember>,
}

/// What `network.list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkListRequest {
    /// docker's filters: `name=`, `id=`, `driver=`, `label=key[=value]`, `type=custom|builtin`.
    #[serde(default)]
    pub filters: Vec<String>,
}

impl NetworkListRequest {
    /// Checks the filters' syntax.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.filters {
            let Some((key, _)) = f.split_once('=') else {
                return Err(format!("bad filter {f:?}: use key=value"));
            };
            if !matches!(key, "name" | "id" | "driver" | "label" | "type") {
                return err_key(key);
            }
        }
        Ok(())
    }

    /// Whether `n` passes every filter.
    pub fn matches(&self, n: &NetworkInfo) -> bool {
        self.filters.iter().all(|f| {
            let (key, value) = f.split_once('=').unwrap_or((f, ""));
            match key {
                "name" => n.name.contains(value),
                "id" => n.id.starts_with(value),
                "driver" => n.driver == value,
                "label" => match value.split_once('=') {
                    Some((k, v)) => n.labels.get(k).map(String::as_str) == Some(v),
                    None => n.labels.contains_key(value),
                },
                "type" => (value == "builtin") == (n.name == DEFAULT_NETWORK),
                _ => false,
            }
        })
    }
}

fn err_key(key: &str) -> Result<(), String> {
    Err(format!(
        "unknown filter {key:?}: use name, id, driver, label or type"
    ))
}

/// What `network.prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkPruneReport {
    /// Names deleted.
    pub networks_deleted: Vec<String>,
}

/// `network.*`: create, list, inspect and remove networks; attach running containers.
#[method_specs]
#[rpc(server, client, namespace = "network", namespace_separator = ".")]
pub trait Network {
    /// Creates a network through its driver (like `docker network create`).
    #[method(name = "create", param_kind = map)]
    async fn create(&self, request: NetworkCreateRequest) -> RpcResult<NetworkInfo>;

    /// Lists networks, filtered.
    #[method(name = "list", param_kind = map, with_extensions)]
    async fn list(&self, request: Option<NetworkListRequest>) -> RpcResult<Vec<NetworkInfo>>;

    /// Describes a network (by name, id or id prefix), with its driver's status.
    #[method(name = "inspect", param_kind = map)]
    async fn inspect(&self, name: String) -> RpcResult<NetworkInfo>;

    /// Removes a network. Refused while containers are attached to it, and for `bridge`.
    #[method(name = "remove", param_kind = map)]
    async fn remove(&self, name: String) -> RpcResult<()>;

    /// Removes every network no container is attached to (never `bridge`).
    #[method(name = "prune", param_kind = map)]
    async fn prune(&self) -> RpcResult<NetworkPruneReport>;

    /// Attaches a container to a network (like `docker network connect`); a running
    /// container gets its interface at once.
    #[method(name = "connect", param_kind = map)]
    async fn connect(
        &self,
        network: String,
        container: String,
        ip: Option<String>,
        aliases: Option<Vec<String>>,
    ) -> RpcResult<()>;

    /// Detaches a container from a network; a running container loses its interface.
    #[method(name = "disconnect", param_kind = map)]
    async fn disconnect(&self, network: String, container: String) -> RpcResult<()>;
}
