//! Installed plugins: their records in the state database, their files under
//! `<data-root>/plugins/<name>/` (`component.wasm`, and `state/`, the plugin's own directory),
//! install from a file or an OCI Wasm artifact, push, enable/disable, configuration, and the
//! live driver of every enabled plugin. The sandbox itself is `plugin_host`'s.

mod oci;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::ErrorKind;
use berth_api::plugin::{PluginInfo, PluginInstallRequest, PluginPushResult};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::image::Images;
use crate::plugin_host::{
    self, Authorizer, LoadedComponent, LoggingDriver, NetworkDriver, PluginHost, PluginKind,
    VolumeDriver,
};
use crate::store::{self, Store, q};

/// Name of the default volume driver, installed on first start.
pub const DEFAULT_VOLUME_DRIVER: &str = "local";

/// `source` of a plugin that came with berthd.
const BUILTIN_SOURCE: &str = "builtin";

/// Largest component accepted, from a file or a registry.
const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// A driver built into berthd.
#[derive(Clone, Copy)]
struct Embedded {
    bytes: &'static [u8],
    /// SHA-256 of `bytes`, lowercase hex, computed at build time.
    digest: &'static str,
}

/// The `local` volume driver, built into berthd (see build.rs).
#[cfg(berth_embedded_local)]
const EMBEDDED_LOCAL: Option<Embedded> = Some(Embedded {
    bytes: include_bytes!(env!("BERTH_LOCAL_WASM")),
    digest: env!("BERTH_LOCAL_WASM_SHA256"),
});
#[cfg(not(berth_embedded_local))]
const EMBEDDED_LOCAL: Option<Embedded> = None;

/// Name of the default network driver, installed on first start.
pub const DEFAULT_NETWORK_DRIVER: &str = "bridge";

/// The `bridge` network driver, built into berthd (see build.rs).
#[cfg(berth_embedded_bridge)]
const EMBEDDED_BRIDGE: Option<Embedded> = Some(Embedded {
    bytes: include_bytes!(env!("BERTH_BRIDGE_WASM")),
    digest: env!("BERTH_BRIDGE_WASM_SHA256"),
});
#[cfg(not(berth_embedded_bridge))]
const EMBEDDED_BRIDGE: Option<Embedded> = None;

/// Name of the built-in Rego authorization policy, installed when the authz chain names it.
pub const REGO_POLICY: &str = "rego";

/// The `rego` policy, built into berthd (see build.rs).
#[cfg(berth_embedded_rego)]
const EMBEDDED_REGO: Option<Embedded> = Some(Embedded {
    bytes: include_bytes!(env!("BERTH_REGO_WASM")),
    digest: env!("BERTH_REGO_WASM_SHA256"),
});
#[cfg(not(berth_embedded_rego))]
const EMBEDDED_REGO: Option<Embedded> = None;

/// Names of the built-in logging drivers, installed on first start.
pub const JSON_FILE_LOG_DRIVER: &str = "json-file";
/// See [`JSON_FILE_LOG_DRIVER`].
pub const SYSLOG_LOG_DRIVER: &str = "syslog";

/// The `json-file` and `syslog` logging drivers, built into berthd (see build.rs).
#[cfg(berth_embedded_json_file)]
const EMBEDDED_JSON_FILE: Option<Embedded> = Some(Embedded {
    bytes: include_bytes!(env!("BERTH_JSON_FILE_WASM")),
    digest: env!("BERTH_JSON_FILE_WASM_SHA256"),
});
#[cfg(not(berth_embedded_json_file))]
const EMBEDDED_JSON_FILE: Option<Embedded> = None;
#[cfg(berth_embedded_syslog)]
const EMBEDDED_SYSLOG: Option<Embedded> = Some(Embedded {
    bytes: include_bytes!(env!("BERTH_SYSLOG_WASM")),
    digest: env!("BERTH_SYSLOG_WASM_SHA256"),
});
#[cfg(not(berth_embedded_syslog))]
const EMBEDDED_SYSLOG: Option<Embedded> = None;

/// Largest policy or data file an authz plugin's `policy`/`data` setting may name.
const MAX_POLICY_FILE_BYTES: u64 = 8 << 20;

/// The interface name prefix a network driver gets: `berth` for the built-in one, `b` and
/// four hex digits of its name's digest for others (at most 5 bytes, as the WIT promises).
pub fn link_prefix(plugin: &str) -> String {
    use sha2::Digest;
    if plugin == DEFAULT_NETWORK_DRIVER {
        return "berth".into();
    }
    let digest = sha2::Sha256::digest(plugin.as_bytes());
    format!("b{:02x}{:02x}", digest[0], digest[1])
}

/// Plugin management failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No plugin of that name.
    #[error("no such plugin: {0}")]
    NotFound(String),
    /// A plugin of that name exists.
    #[error("plugin {0} is already installed")]
    Exists(String),
    /// A bad name, setting, source or file.
    #[error("{0}")]
    Invalid(String),
    /// The plugin is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// The sandbox refused or failed the plugin.
    #[error(transparent)]
    Host(#[from] plugin_host::Error),
    /// Pulling or pushing the artifact failed.
    #[error(transparent)]
    Registry(Box<crate::image::Error>),
    /// A file operation failed.
    #[error("plugin {plugin}: cannot {what}: {source}")]
    Io {
        /// The plugin.
        plugin: String,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A blocking task died.
    #[error("plugin task failed: {0}")]
    Task(String),
    /// A stored plugin record cannot be read.
    #[error("plugin {plugin}: its record in the state database is unreadable: {message}")]
    Corrupt {
        /// The plugin.
        plugin: String,
        /// The parser's message.
        message: String,
    },
}

impl From<crate::image::Error> for Error {
    fn from(e: crate::image::Error) -> Self {
        Error::Registry(Box::new(e))
    }
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Exists(_) => ErrorKind::AlreadyExists,
            Error::Invalid(_) => ErrorKind::InvalidArgument,
            Error::State(_) => ErrorKind::FailedPrecondition,
            Error::Host(e) => e.kind(),
            Error::Registry(e) => e.kind(),
            Error::Io { .. } | Error::Task(_) | Error::Corrupt { .. } => ErrorKind::Internal,
            Error::Store(e) => e.kind(),
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// What berth keeps about a plugin (the `doc` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    name: String,
    kind: String,
    wit_version: String,
    digest: String,
    size: u64,
    source: String,
    installed_at: String,
    enabled: bool,
    config: BTreeMap<String, String>,
}

/// A running plugin.
#[derive(Debug, Clone)]
enum Live {
    Volume(Arc<VolumeDriver>),
    Network(Arc<NetworkDriver>),
    Authz(Arc<Authorizer>),
    Logging(Arc<LoggingDriver>),
}

/// berthd's authorization set-up: the chain of policy plugins (from its configuration, never
/// from the API) and the settings the built-in `rego` policy gets for keys its own
/// configuration leaves unset.
#[derive(Debug, Clone, Default)]
pub struct AuthzSetup {
    /// Policy plugins in order; every one must allow a call.
    pub chain: Vec<String>,
    /// Default settings of the built-in `rego` policy.
    pub rego_defaults: Vec<(String, String)>,
}

/// Plugin names: short, one path component, lower case (they name directories and drivers).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

/// What network drivers need from berthd: the host side of `host-net`, and the default
/// configuration of the built-in `bridge` driver.
type NetworkHost = (Arc<crate::network::HostNet>, Vec<(String, String)>);

/// The installed plugins and their live drivers.
#[derive(Debug)]
pub struct Plugins {
    host: PluginHost,
    store: Arc<Store>,
    images: Arc<Images>,
    root: PathBuf,
    live: std::sync::RwLock<HashMap<String, Live>>,
    start_errors: std::sync::Mutex<HashMap<String, String>>,
    /// Management operations run one at a time, so that install/enable/set/remove never
    /// interleave on one plugin's files and live driver.
    ops: tokio::sync::Mutex<()>,
    /// The host side of `host-net`, set once networking starts (before the plugins do).
    network_host: std::sync::OnceLock<NetworkHost>,
    /// The authorization chain, set before the plugins start.
    authz: std::sync::OnceLock<AuthzSetup>,
}

impl Plugins {
    /// Opens the plugin directory (`<data_root>/plugins`) and the engine. Blocking.
    pub fn open(
        data_root: &Path,
        store: Arc<Store>,
        images: Arc<Images>,
        limits: plugin_host::Limits,
    ) -> Result<Plugins> {
        let root = data_root.join("plugins");
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            plugin: "(all)".into(),
            what: "create the plugin directory",
            source,
        })?;
        // Drivers get paths below here; symlinks above them would only confuse the checks.
        let root = root.canonicalize().map_err(|source| Error::Io {
            plugin: "(all)".into(),
            what: "resolve the plugin directory",
            source,
        })?;
        let host = PluginHost::new(&data_root.join("plugin-cache"), limits)?;
        Ok(Plugins {
            host,
            store,
            images,
            root,
            live: Default::default(),
            start_errors: Default::default(),
            ops: tokio::sync::Mutex::new(()),
            network_host: std::sync::OnceLock::new(),
            authz: std::sync::OnceLock::new(),
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn component_path(&self, name: &str) -> PathBuf {
        self.dir(name).join("component.wasm")
    }

    fn state_dir(&self, name: &str) -> PathBuf {
        self.dir(name).join("state")
    }

    /// At daemon start: installs (or upgrades) the built-in `local` driver, then starts every
    /// enabled plugin. A plugin that fails to start is logged and shown as `failed`; berthd
    /// serves anyway.
    pub async fn start(&self) -> Result<()> {
        let _ops = self.ops.lock().await;
        if let Err(e) = self.install_builtin().await {
            warn!("cannot install the built-in drivers: {e}");
        }
        for record in self.records().await? {
            if !record.enabled {
                continue;
            }
            match self.launch(&record).await {
                Ok(live) => {
                    self.set_live(&record.name, Some(live));
                    info!(plugin = %record.name, kind = %record.kind, "plugin started");
                }
                Err(e) => {
                    warn!(plugin = %record.name, "plugin failed to start: {e}");
                    self.start_error(&record.name, Some(e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Gives network drivers their `host-net` (once, before [`Self::start`]).
    /// `bridge_defaults` is configuration the built-in `bridge` driver gets for every key
    /// its own configuration leaves unset (berthd's address pool).
    pub fn set_network_host(
        &self,
        host: Arc<crate::network::HostNet>,
        bridge_defaults: Vec<(String, String)>,
    ) {
        let _ = self.network_host.set((host, bridge_defaults));
    }

    /// Sets who is told of every plugin failure (trap, deadline, limit) from now on.
    pub fn on_failure(&self, observer: plugin_host::FailureObserver) {
        self.host.on_failure(observer);
    }

    /// Sets the authorization chain (once, before [`Self::start`]).
    pub fn set_authz(&self, setup: AuthzSetup) {
        let _ = self.authz.set(setup);
    }

    /// The authorization chain: names of the policy plugins every call must pass.
    pub fn authz_chain(&self) -> &[String] {
        self.authz.get().map(|s| s.chain.as_slice()).unwrap_or(&[])
    }

    fn in_authz_chain(&self, name: &str) -> bool {
        self.authz_chain().iter().any(|n| n == name)
    }

    async fn install_builtin(&self) -> Result<()> {
        for (name, embedded) in [
            (DEFAULT_VOLUME_DRIVER, EMBEDDED_LOCAL),
            (DEFAULT_NETWORK_DRIVER, EMBEDDED_BRIDGE),
            (REGO_POLICY, EMBEDDED_REGO),
            (JSON_FILE_LOG_DRIVER, EMBEDDED_JSON_FILE),
            (SYSLOG_LOG_DRIVER, EMBEDDED_SYSLOG),
        ] {
            // Compiling the policy engine costs most of a second: only when it is used.
            if name == REGO_POLICY
                && !self.in_authz_chain(name)
                && self.record(name).await?.is_none()
            {
                continue;
            }
            let Some(Embedded { bytes, digest }) = embedded else {
                if self.record(name).await?.is_none() {
                    warn!(
                        "this berthd was built without the `{name}` driver (plugins/dist/{name}.wasm was missing at build time): install it with `berth plugin install --name {name} FILE`"
                    );
                }
                continue;
            };
            let existing = self.record(name).await?;
            // Installed by the user, or already this build's: nothing to load, and the
            // embedded bytes are not even read (they would stay in berthd's memory).
            if existing.as_ref().is_some_and(|record| {
                record.source != BUILTIN_SOURCE || record.digest == format!("sha256:{digest}")
            }) {
                continue;
            }
            let loaded = self.load(name, bytes.to_vec()).await?;
            match existing {
                None => {
                    self.write_component(name, bytes).await?;
                    let record = Record {
                        name: name.into(),
                        kind: loaded.kind.name().into(),
                        wit_version: loaded.version.clone(),
                        digest: format!("sha256:{}", loaded.digest),
                        size: bytes.len() as u64,
                        source: BUILTIN_SOURCE.into(),
                        installed_at: now(),
                        enabled: true,
                        config: BTreeMap::new(),
                    };
                    self.save(&record, true).await?;
                    info!("installed the built-in `{name}` driver");
                }
                // A newer berthd brings a newer driver; its state directory carries over.
                Some(mut record) => {
                    self.write_component(name, bytes).await?;
                    record.digest = format!("sha256:{}", loaded.digest);
                    record.wit_version = loaded.version.clone();
                    record.size = bytes.len() as u64;
                    self.save(&record, false).await?;
                    info!("upgraded the built-in `{name}` driver");
                }
            }
        }
        Ok(())
    }

    /// Compiles (or loads from the cache) on the blocking pool.
    async fn load(&self, name: &str, bytes: Vec<u8>) -> Result<LoadedComponent> {
        let host = self.host.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || host.load(&name, &bytes))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::from)
    }

    /// Loads the installed component and starts it with its configuration.
    async fn launch(&self, record: &Record) -> Result<Live> {
        let path = self.component_path(&record.name);
        let bytes = read_component(&record.name, &path).await?;
        let loaded = self.load(&record.name, bytes).await?;
        self.run(&record.name, &loaded, &record.config).await
    }

    async fn run(
        &self,
        name: &str,
        loaded: &LoadedComponent,
        config: &BTreeMap<String, String>,
    ) -> Result<Live> {
        let config: Vec<(String, String)> =
            config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match loaded.kind {
            PluginKind::Volume => {
                let driver = self
                    .host
                    .volume_driver(name, loaded, &self.state_dir(name), config)
                    .await?;
                Ok(Live::Volume(Arc::new(driver)))
            }
            PluginKind::Network => {
                let (host, defaults) = self.network_host.get().ok_or_else(|| {
                    Error::State(format!(
                        "network driver {name} cannot start: networking is not started"
                    ))
                })?;
                let mut config = config;
                if name == DEFAULT_NETWORK_DRIVER {
                    for (k, v) in defaults {
                        if !config.iter().any(|(key, _)| key == k) {
                            config.push((k.clone(), v.clone()));
                        }
                    }
                }
                let prefix = link_prefix(name);
                let driver = self
                    .host
                    .network_driver(
                        name,
                        loaded,
                        &self.state_dir(name),
                        config,
                        host.scoped(name, &prefix),
                    )
                    .await?;
                Ok(Live::Network(Arc::new(driver)))
            }
            PluginKind::Authz => {
                let mut config = config;
                if name == REGO_POLICY
                    && let Some(setup) = self.authz.get()
                {
                    for (k, v) in &setup.rego_defaults {
                        if !config.iter().any(|(key, _)| key == k) {
                            config.push((k.clone(), v.clone()));
                        }
                    }
                }
                let config = expand_policy_files(name, config).await?;
                let policy = self.host.authorizer(name, loaded, config).await?;
                Ok(Live::Authz(Arc::new(policy)))
            }
            PluginKind::Logging => {
                let driver = self
                    .host
                    .logging_driver(name, loaded, &self.state_dir(name), config)
                    .await?;
                Ok(Live::Logging(Arc::new(driver)))
            }
        }
    }

    /// Starts every plugin of the authorization chain again with its policy files read
    /// anew (SIGHUP). A policy that fails to load is logged and the previous one stays.
    pub async fn reload_authz(&self) {
        let _ops = self.ops.lock().await;
        for name in self.authz_chain().to_vec() {
            let record = match self.record(&name).await {
                Ok(Some(r)) if r.enabled => r,
                Ok(_) => {
                    warn!(plugin = %name, "authz reload: the plugin is not installed or disabled");
                    continue;
                }
                Err(e) => {
                    warn!(plugin = %name, "authz reload: {e}");
                    continue;
                }
            };
            match self.launch(&record).await {
                Ok(live) => {
                    self.set_live(&name, Some(live));
                    info!(plugin = %name, "authz policy reloaded");
                }
                Err(e) if self.is_live(&name) => {
                    warn!(plugin = %name, "authz reload failed, the previous policy stays: {e}")
                }
                Err(e) => {
                    warn!(plugin = %name, "authz reload failed: {e}");
                    self.start_error(&name, Some(e.to_string()));
                }
            }
        }
    }

    fn set_live(&self, name: &str, live: Option<Live>) {
        let mut map = self.live.write().unwrap_or_else(|p| p.into_inner());
        match live {
            Some(l) => {
                map.insert(name.to_owned(), l);
                self.start_error(name, None);
            }
            None => {
                map.remove(name);
            }
        }
    }

    fn start_error(&self, name: &str, error: Option<String>) {
        let mut map = self.start_errors.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => map.insert(name.to_owned(), e),
            None => map.remove(name),
        };
    }

    async fn write_component(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let (state, path) = (self.state_dir(name), self.component_path(name));
        let (plugin, bytes) = (name.to_owned(), bytes.to_vec());
        tokio::task::spawn_blocking(move || write_component(&plugin, &state, &path, &bytes))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    async fn remove_dir(&self, name: &str) {
        let dir = self.dir(name);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

fn write_component(name: &str, state: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |what| {
        let plugin = name.to_owned();
        move |source| Error::Io {
            plugin,
            what,
            source,
        }
    };
    std::fs::create_dir_all(state).map_err(io("create its directories"))?;
    crate::runtime::shim::write_atomic(path, bytes).map_err(io("write its component"))
}

impl Plugins {
    async fn records(&self) -> Result<Vec<Record>> {
        Ok(self
            .store
            .run(|c| {
                let mut stmt = c
                    .prepare("SELECT doc FROM plugins ORDER BY name")
                    .map_err(q("list plugins"))?;
                let docs = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(q("list plugins"))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(q("list plugins"))?;
                Ok(docs)
            })
            .await?
            .into_iter()
            .filter_map(|d| serde_json::from_str(&d).ok())
            .collect())
    }

    async fn record(&self, name: &str) -> Result<Option<Record>> {
        let plugin = name.to_owned();
        let name = name.to_owned();
        let doc = self
            .store
            .run(move |c| {
                c.query_row("SELECT doc FROM plugins WHERE name = ?1", [&name], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(q("read plugin"))
            })
            .await?;
        // Unreadable is not absent: an install over it would wipe the plugin's state.
        doc.map(|d| {
            serde_json::from_str(&d).map_err(|e| Error::Corrupt {
                plugin,
                message: e.to_string(),
            })
        })
        .transpose()
    }

    async fn get(&self, name: &str) -> Result<Record> {
        self.record(name)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    async fn save(&self, record: &Record, insert: bool) -> Result<()> {
        let doc = serde_json::to_string(record).map_err(|e| Error::Task(e.to_string()))?;
        let r = record.clone();
        self.store
            .run(move |c| {
                let sql = if insert {
                    "INSERT INTO plugins (name, kind, enabled, created_at, doc)
                     VALUES (?1, ?2, ?3, strftime('%s','now'), ?4)"
                } else {
                    "UPDATE plugins SET kind = ?2, enabled = ?3, doc = ?4 WHERE name = ?1"
                };
                c.execute(sql, rusqlite::params![r.name, r.kind, r.enabled, doc])
                    .map_err(q("save plugin"))?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Volumes and networks that exist for driver `name`, and how many containers use them.
    async fn usage(&self, name: &str) -> Result<(u64, u64)> {
        let name = name.to_owned();
        Ok(self
            .store
            .run(move |c| {
                c.query_row(
                    "SELECT count(*) + (SELECT count(*) FROM networks WHERE driver = ?1),
                        (SELECT count(DISTINCT m.volume) FROM volume_mounts m
                            JOIN volumes v ON v.name = m.volume WHERE v.driver = ?1)
                        + (SELECT count(DISTINCT m.container_id) FROM network_members m
                            JOIN networks n ON n.id = m.network_id WHERE n.driver = ?1)
                     FROM volumes WHERE driver = ?1",
                    [&name],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )
                .map_err(q("count a plugin's volumes"))
            })
            .await?)
    }

    fn info(&self, record: Record) -> PluginInfo {
        let live = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.name)
            .cloned();
        let start_error = self
            .start_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.name)
            .cloned();
        let stats = match &live {
            Some(Live::Volume(d)) => d.stats(),
            Some(Live::Network(d)) => d.stats(),
            Some(Live::Authz(p)) => p.stats(),
            Some(Live::Logging(d)) => d.stats(),
            None => Default::default(),
        };
        let state = match (&live, record.enabled) {
            (Some(_), _) => "running",
            (None, true) => "failed",
            (None, false) => "disabled",
        };
        PluginInfo {
            name: record.name,
            kind: record.kind,
            wit_version: record.wit_version,
            digest: record.digest,
            size: record.size,
            source: record.source,
            installed_at: record.installed_at,
            enabled: record.enabled,
            config: record.config,
            state: state.into(),
            calls: stats.calls,
            failures: stats.failures,
            last_error: start_error.or(stats.last_error),
        }
    }

    /// `plugin.install`.
    pub async fn install(&self, request: PluginInstallRequest) -> Result<PluginInfo> {
        let name = request.name.clone();
        if !valid_name(&name) {
            return Err(Error::Invalid(format!(
                "invalid plugin name {name:?}: use [a-z0-9][a-z0-9_.-]*, at most 64 bytes"
            )));
        }
        let (bytes, source) = match (&request.path, &request.reference) {
            (Some(path), None) => {
                if !path.starts_with('/') {
                    return Err(Error::Invalid(format!(
                        "plugin path {path:?} must be absolute (a file on the daemon's host)"
                    )));
                }
                (read_component(&name, Path::new(path)).await?, path.clone())
            }
            (None, Some(reference)) => (
                oci::pull(&self.images, reference, &request.auth, MAX_COMPONENT_BYTES).await?,
                reference.clone(),
            ),
            _ => {
                return Err(Error::Invalid(
                    "give exactly one of `path` (a component file) and `reference` (an OCI artifact)"
                        .into(),
                ));
            }
        };
        let _ops = self.ops.lock().await;
        if self.record(&name).await?.is_some() {
            return Err(Error::Exists(name));
        }
        let loaded = self.load(&name, bytes.clone()).await?;
        // A stale directory (an install interrupted before its record was written) goes.
        self.remove_dir(&name).await;
        self.write_component(&name, &bytes).await?;
        let record = Record {
            name: name.clone(),
            kind: loaded.kind.name().into(),
            wit_version: loaded.version.clone(),
            digest: format!("sha256:{}", loaded.digest),
            size: bytes.len() as u64,
            source,
            installed_at: now(),
            enabled: !request.disabled,
            config: request.config.clone(),
        };
        if record.enabled {
            match self.run(&name, &loaded, &record.config).await {
                Ok(live) => self.set_live(&name, Some(live)),
                Err(e) => {
                    self.remove_dir(&name).await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.save(&record, true).await {
            self.set_live(&name, None);
            self.remove_dir(&name).await;
            return Err(e);
        }
        info!(plugin = %name, kind = %record.kind, digest = %record.digest, "plugin installed");
        Ok(self.info(record))
    }

    /// `plugin.list`.
    pub async fn list(&self) -> Result<Vec<PluginInfo>> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .map(|r| self.info(r))
            .collect())
    }

    /// `plugin.inspect`.
    pub async fn inspect(&self, name: &str) -> Result<PluginInfo> {
        let record = self.get(name).await?;
        Ok(self.info(record))
    }

    /// `plugin.enable`: starts it (a failed start leaves it disabled).
    pub async fn enable(&self, name: &str) -> Result<()> {
        let _ops = self.ops.lock().await;
        let mut record = self.get(name).await?;
        if record.enabled && self.is_live(name) {
            return Err(Error::State(format!("plugin {name} is already enabled")));
        }
        let live = self.launch(&record).await?;
        self.set_live(name, Some(live));
        record.enabled = true;
        self.save(&record, false).await
    }

    /// `plugin.disable`: refused while containers use its volumes.
    pub async fn disable(&self, name: &str) -> Result<()> {
        let _ops = self.ops.lock().await;
        let mut record = self.get(name).await?;
        if !record.enabled {
            return Err(Error::State(format!("plugin {name} is already disabled")));
        }
        self.refuse_if_in_chain(name, "disabled")?;
        let (_, in_use) = self.usage(name).await?;
        if in_use > 0 {
            return Err(Error::State(format!(
                "plugin {name} is in use: containers use {in_use} of its volumes or networks (remove them first)"
            )));
        }
        self.set_live(name, None);
        self.start_error(name, None);
        record.enabled = false;
        self.save(&record, false).await
    }

    /// `plugin.set`: `KEY=VALUE` sets, `KEY=` removes. An enabled plugin is started again
    /// with the new configuration before it is kept.
    pub async fn set(&self, name: &str, settings: &[String]) -> Result<()> {
        let _ops = self.ops.lock().await;
        let mut record = self.get(name).await?;
        let mut config = record.config.clone();
        for s in settings {
            let Some((key, value)) = s.split_once('=') else {
                return Err(Error::Invalid(format!(
                    "bad setting {s:?}: expected KEY=VALUE"
                )));
            };
            if key.is_empty() || key.len() > 256 || value.len() > 4096 {
                return Err(Error::Invalid(format!(
                    "bad setting {s:?}: keys are 1 to 256 bytes, values at most 4096"
                )));
            }
            if value.is_empty() {
                config.remove(key);
            } else {
                config.insert(key.to_owned(), value.to_owned());
            }
        }
        if record.enabled {
            let path = self.component_path(name);
            let bytes = read_component(name, &path).await?;
            let loaded = self.load(name, bytes).await?;
            let live = self.run(name, &loaded, &config).await?;
            self.set_live(name, Some(live));
        }
        record.config = config;
        self.save(&record, false).await
    }

    /// `plugin.remove`: refused while volumes exist for it.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let _ops = self.ops.lock().await;
        let record = self.get(name).await?;
        self.refuse_if_in_chain(name, "removed")?;
        if record.source == BUILTIN_SOURCE {
            return Err(Error::State(format!(
                "plugin {name} is built into berthd and cannot be removed (disable it instead)"
            )));
        }
        let (volumes, _) = self.usage(name).await?;
        if volumes > 0 {
            return Err(Error::State(format!(
                "plugin {name} is in use: {volumes} volume(s) or network(s) exist for it (remove them first)"
            )));
        }
        self.set_live(name, None);
        self.start_error(name, None);
        let n = name.to_owned();
        self.store
            .run(move |c| {
                c.execute("DELETE FROM plugins WHERE name = ?1", [&n])
                    .map_err(q("remove plugin"))
            })
            .await?;
        let dir = self.dir(name);
        let plugin = name.to_owned();
        tokio::task::spawn_blocking(move || crate::fsutil::remove_dir_all_if_present(&dir))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(|source| Error::Io {
                plugin,
                what: "remove its files",
                source,
            })?;
        info!(plugin = %name, "plugin removed");
        Ok(())
    }

    /// `plugin.push`.
    pub async fn push(
        &self,
        name: &str,
        reference: &str,
        auth: &Option<berth_api::image::RegistryAuth>,
    ) -> Result<PluginPushResult> {
        let record = self.get(name).await?;
        let bytes = read_component(name, &self.component_path(name)).await?;
        oci::push(&self.images, &record.kind, reference, auth, bytes).await
    }

    /// A policy of the authz chain stays: without it every call would be refused, and only
    /// berthd's configuration can change the chain.
    fn refuse_if_in_chain(&self, name: &str, what: &str) -> Result<()> {
        if self.in_authz_chain(name) {
            return Err(Error::State(format!(
                "plugin {name} is in berthd's authorization chain (authz-plugins) and cannot be {what}: change berthd's configuration first"
            )));
        }
        Ok(())
    }

    /// The running authorization policy `name`, or why there is none.
    pub async fn authorizer(&self, name: &str) -> Result<Arc<Authorizer>> {
        self.live_driver(name, PluginKind::Authz, |live| match live {
            Live::Authz(p) => Some(Arc::clone(p)),
            _ => None,
        })
        .await
    }

    fn is_live(&self, name: &str) -> bool {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// The running volume driver `name`.
    pub async fn volume_driver(&self, name: &str) -> Result<Arc<VolumeDriver>> {
        self.live_driver(name, PluginKind::Volume, |live| match live {
            Live::Volume(d) => Some(Arc::clone(d)),
            _ => None,
        })
        .await
    }

    /// The running network driver `name`.
    pub async fn network_driver(&self, name: &str) -> Result<Arc<NetworkDriver>> {
        self.live_driver(name, PluginKind::Network, |live| match live {
            Live::Network(d) => Some(Arc::clone(d)),
            _ => None,
        })
        .await
    }

    /// The running logging driver `name`.
    pub async fn logging_driver(&self, name: &str) -> Result<Arc<LoggingDriver>> {
        self.live_driver(name, PluginKind::Logging, |live| match live {
            Live::Logging(d) => Some(Arc::clone(d)),
            _ => None,
        })
        .await
    }

    /// The running driver `name` of `kind`, or why there is none.
    async fn live_driver<T>(
        &self,
        name: &str,
        kind: PluginKind,
        pick: impl Fn(&Live) -> Option<T>,
    ) -> Result<T> {
        if let Some(d) = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .and_then(&pick)
        {
            return Ok(d);
        }
        let kind = kind.name();
        match self.record(name).await? {
            None => Err(Error::NotFound(format!(
                "{name} (no {kind} driver plugin of that name is installed)"
            ))),
            Some(r) if r.kind != kind => Err(Error::Invalid(format!(
                "plugin {name} is a {} plugin, not a {kind} driver",
                r.kind
            ))),
            Some(r) if !r.enabled => Err(Error::State(format!(
                "{kind} driver {name} is disabled (berth plugin enable {name})"
            ))),
            Some(_) => {
                let why = self
                    .start_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "it is not running".into());
                Err(Error::State(format!(
                    "{kind} driver {name} failed to start: {why}"
                )))
            }
        }
    }
}

/// An authz plugin's `policy` and `data` settings name files (comma-separated absolute
/// paths), which berthd reads, since a policy sees no file system: each becomes a
/// `policy:<path>` or `data:<path>` entry holding the file's text.
async fn expand_policy_files(
    plugin: &str,
    config: Vec<(String, String)>,
) -> Result<Vec<(String, String)>> {
    let plugin = plugin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(config.len());
        for (key, value) in config {
            if key != "policy" && key != "data" {
                out.push((key, value));
                continue;
            }
            for path in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if !path.starts_with('/') {
                    return Err(Error::Invalid(format!(
                        "plugin {plugin}: {key} file {path:?} must be an absolute path"
                    )));
                }
                let text = read_policy_file(Path::new(path)).map_err(|e| {
                    Error::Invalid(format!(
                        "plugin {plugin}: cannot read {key} file {path}: {e}"
                    ))
                })?;
                out.push((format!("{key}:{path}"), text));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

fn read_policy_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_POLICY_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// Reads a component file, refusing anything that is not a regular file of sane size.
async fn read_component(plugin: &str, path: &Path) -> Result<Vec<u8>> {
    let path = path.to_owned();
    let plugin = plugin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let io = |what| {
            let plugin = plugin.clone();
            move |source| Error::Io {
                plugin,
                what,
                source,
            }
        };
        let file = std::fs::File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Invalid(format!("no such component file: {}", path.display()))
            } else {
                io("open its component")(e)
            }
        })?;
        let meta = file.metadata().map_err(io("stat its component"))?;
        if !meta.is_file() {
            return Err(Error::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        if meta.len() > MAX_COMPONENT_BYTES {
            return Err(Error::Invalid(format!(
                "{} is {} bytes: components are at most {MAX_COMPONENT_BYTES} bytes",
                path.display(),
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_COMPONENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io("read its component"))?;
        Ok(bytes)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn plugin_names() {
        for ok in ["local", "nfs-v4", "a", "x.y_z", "0abc"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Local", "-x", ".x", "a/b", "..", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
