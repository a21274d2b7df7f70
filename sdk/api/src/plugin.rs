//! `plugin.*`: installing and managing WebAssembly driver plugins.

use std::collections::BTreeMap;

use berth_api_macros::method_specs;
use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::image::RegistryAuth;

/// Media type of a Wasm component layer in an OCI artifact (the CNCF Wasm OCI format).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Media type of the config of a Wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// What `plugin.install` installs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginInstallRequest {
    /// Name to install under (`[a-z0-9][a-z0-9_.-]*`, at most 64 bytes).
    pub name: String,
    /// A component file on the daemon's host (absolute path). One of `path` and `reference`.
    #[serde(default)]
    pub path: Option<String>,
    /// An OCI reference to a Wasm artifact (`registry/repo:tag`).
    #[serde(default)]
    pub reference: Option<String>,
    /// Registry credentials for `reference`.
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
    /// Configuration given to the plugin's `configure`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Leave it disabled (default: enable at once).
    #[serde(default)]
    pub disabled: bool,
}

/// A plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Its world: `volume`, `network`, `logging` or `authz`.
    pub kind: String,
    /// The WIT version it was built against (`1.0.0`).
    pub wit_version: String,
    /// sha256 digest of the component, `sha256:...`.
    pub digest: String,
    /// Component size in bytes.
    pub size: u64,
    /// Where it came from: a file path or an OCI reference.
    pub source: String,
    /// Installed at, RFC 3339.
    pub installed_at: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Its configuration.
    pub config: BTreeMap<String, String>,
    /// `running`, `disabled` or `failed` (see `last_error`).
    pub state: String,
    /// Calls made since berthd started.
    pub calls: u64,
    /// Calls that trapped, timed out or hit a limit (the plugin was restarted).
    pub failures: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// What `plugin.push` pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginPushResult {
    /// The reference pushed.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
}

/// `plugin.*`: install, list, inspect, configure, enable, disable, remove and push plugins.
#[method_specs]
#[rpc(server, client, namespace = "plugin", namespace_separator = ".")]
pub trait Plugin {
    /// Installs a plugin from a component file or an OCI Wasm artifact. A component built
    /// against a WIT version this berthd cannot serve is refused.
    #[method(name = "install", param_kind = map)]
    async fn install(&self, request: PluginInstallRequest) -> RpcResult<PluginInfo>;

    /// Lists plugins.
    #[method(name = "list", param_kind = map, with_extensions)]
    async fn list(&self) -> RpcResult<Vec<PluginInfo>>;

    /// Describes a plugin: world, version, digest, config, state, call counts, last error.
    #[method(name = "inspect", param_kind = map)]
    async fn inspect(&self, name: String) -> RpcResult<PluginInfo>;

    /// Enables a plugin: it is started, and configured.
    #[method(name = "enable", param_kind = map)]
    async fn enable(&self, name: String) -> RpcResult<()>;

    /// Disables a plugin. Refused while a container uses it.
    #[method(name = "disable", param_kind = map)]
    async fn disable(&self, name: String) -> RpcResult<()>;

    /// Sets configuration keys (`KEY=VALUE`; `KEY=` removes one). An enabled plugin is
    /// reconfigured at once; a configuration it refuses is not kept.
    #[method(name = "set", param_kind = map)]
    async fn set(&self, name: String, settings: Vec<String>) -> RpcResult<()>;

    /// Removes a plugin and its state. Refused while it is in use (volumes exist for it).
    #[method(name = "remove", param_kind = map)]
    async fn remove(&self, name: String) -> RpcResult<()>;

    /// Pushes a plugin's component to a registry as an OCI Wasm artifact.
    #[method(name = "push", param_kind = map)]
    async fn push(
        &self,
        name: String,
        reference: String,
        auth: Option<RegistryAuth>,
    ) -> RpcResult<PluginPushResult>;
}
