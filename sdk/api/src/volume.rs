//! `volume.*`: named and anonymous volumes, served by volume driver plugins.

use std::collections::BTreeMap;

use berth_api_macros::method_specs;
use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The driver used when none is named.
pub const DEFAULT_DRIVER: &str = "local";

/// What `volume.create` makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreateRequest {
    /// Name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`); default: a random 64-hex name.
    #[serde(default)]
    pub name: Option<String>,
    /// Volume driver plugin (default `local`).
    #[serde(default)]
    pub driver: Option<String>,
    /// Driver options (`-o key=value`).
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Driver plugin.
    pub driver: String,
    /// Where its data is on the host (empty when the driver gives it no location now).
    pub mountpoint: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Options it was created with.
    pub options: BTreeMap<String, String>,
    /// `local` or `global`, from the driver.
    pub scope: String,
    /// Driver-specific status (filled by `inspect`).
    #[serde(default)]
    pub status: BTreeMap<String, String>,
    /// Made for one container (an image `VOLUME` or `-v /path`), removed with it by `rm -v`.
    pub anonymous: bool,
    /// Containers using it (ids).
    pub used_by: Vec<String>,
}

/// What `volume.list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeListRequest {
    /// `dangling=true|false`, `driver=NAME`, `name=SUBSTRING`, `label=KEY[=VALUE]`; all must
    /// match.
    #[serde(default)]
    pub filters: Vec<String>,
}

impl VolumeListRequest {
    /// Checks every filter's key and value.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.filters {
            let Some((key, value)) = f.split_once('=') else {
                return Err(format!("bad filter {f:?}: expected KEY=VALUE"));
            };
            match key {
                "dangling" if matches!(value, "true" | "false" | "1" | "0") => {}
                "dangling" => {
                    return Err(format!("bad filter {f:?}: dangling takes true or false"));
                }
                "driver" | "name" | "label" => {}
                other => {
                    return Err(format!(
                        "unknown filter {other:?}: use dangling, driver, name or label"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `v` passes every filter.
    pub fn matches(&self, v: &VolumeInfo) -> bool {
        self.filters.iter().all(|f| {
            let (key, value) = f.split_once('=').unwrap_or((f, ""));
            match key {
                "dangling" => v.used_by.is_empty() == matches!(value, "true" | "1"),
                "driver" => v.driver == value,
                "name" => v.name.contains(value),
                "label" => match value.split_once('=') {
                    Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                    None => v.labels.contains_key(value),
                },
                _ => false,
            }
        })
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VolumePruneReport {
    /// Names deleted.
    pub volumes_deleted: Vec<String>,
    /// Bytes freed on disk (for drivers whose data is on this host).
    pub space_reclaimed: u64,
}

/// `volume.*`: create, list, inspect and remove volumes.
#[method_specs]
#[rpc(server, client, namespace = "volume", namespace_separator = ".")]
pub trait Volume {
    /// Creates a volume through its driver (like `docker volume create`). Creating an
    /// existing name with the same driver returns it.
    #[method(name = "create", param_kind = map)]
    async fn create(&self, request: VolumeCreateRequest) -> RpcResult<VolumeInfo>;

    /// Lists volumes, filtered.
    #[method(name = "list", param_kind = map, with_extensions)]
    async fn list(&self, request: Option<VolumeListRequest>) -> RpcResult<Vec<VolumeInfo>>;

    /// Describes a volume, with its driver's status.
    #[method(name = "inspect", param_kind = map)]
    async fn inspect(&self, name: String) -> RpcResult<VolumeInfo>;

    /// Removes a volume and its data. Refused while a container uses it; `force` does not
    /// override that (remove the container first), it only makes a missing volume no error.
    #[method(name = "remove", param_kind = map)]
    async fn remove(&self, name: String, force: Option<bool>) -> RpcResult<()>;

    /// Removes unused anonymous volumes, or with `all` every unused volume.
    #[method(name = "prune", param_kind = map)]
    async fn prune(&self, all: Option<bool>) -> RpcResult<VolumePruneReport>;
}
