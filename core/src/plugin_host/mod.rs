//! The plugin host: one wasmtime engine with an epoch ticker, compiled components cached on
//! disk, and per-world sandboxes. A plugin is a WebAssembly component implementing one world
//! of `plugins-api/wit`; it gets only its world's imports (WASI without sockets, `host-log`,
//! one preopened state directory; logging drivers get sockets to the addresses they are granted), a memory cap, a handle cap, a per-call byte cap and a
//! deadline per call. A trap, a missed deadline or a hit limit fails that call with a clean
//! error and discards the instance; the next call gets a fresh one. Nothing from wasmtime
//! leaves this module: the rest of core sees typed handles such as [`VolumeDriver`].

mod authz;
mod cache;
mod driver;
mod logging;
mod network;
mod sandbox;
mod ticker;
mod volume;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_api::ErrorKind;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub use authz::{
    Authorizer, AuthzRequest, Candidate, Decision, FILTER_CHUNK, Identity, LabelIn, ListScope,
    ResourceKind, Target, TlsClient, Transport, UnixPeer, Visibility,
};
pub use logging::{
    ALLOW_CONNECT_KEY, ConnectGrant, LogContainer, LogEntry, LoggingCapabilities, LoggingDriver,
    ReadRequest, ReaderId, StreamId,
};
pub use network::{
    Cidr, EndpointFacts, Forward, JoinFacts, LinkKind, LinkName, Namespace, NetError, NetFuture,
    NetHost, NetOp, NetReply, NetworkDriver, NetworkFacts, NetworkRequest, OwnedLink, PortMap,
    RestoreEndpoint, RouteSpec,
};
pub use volume::{VolumeCapabilities, VolumeDriver, VolumeInfo, VolumeScope};

/// The WIT package versions this host serves: a component built against `1.y` of a package
/// loads if `y` is at most the minor served here; another major, or a newer minor, is refused.
const SERVED_VERSIONS: &[(&str, (u64, u64, u64))] = &[
    ("berth:types", (1, 0, 0)),
    ("berth:volume", (1, 0, 0)),
    ("berth:network", (1, 0, 0)),
    ("berth:logging", (1, 0, 0)),
    ("berth:authz", (1, 1, 0)),
];

/// The version served of the package of `interface` (`berth:authz/policy`); 1.0.0 for a
/// package this host does not know (its interfaces match no world anyway).
fn served_version(interface: &str) -> (u64, u64, u64) {
    let package = interface.split('/').next().unwrap_or(interface);
    SERVED_VERSIONS
        .iter()
        .find(|(name, _)| *name == package)
        .map_or((1, 0, 0), |(_, version)| *version)
}

/// How often the epoch ticks; deadlines are counted in ticks.
const TICK: Duration = Duration::from_millis(10);

/// Plugin failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a component, or wasmtime could not compile it.
    #[error("plugin {plugin}: cannot load the component: {message}")]
    Load {
        /// Plugin name (or file).
        plugin: String,
        /// Why.
        message: String,
    },
    /// The component implements no world this host knows, or several.
    #[error("plugin {plugin}: {message}")]
    UnknownWorld {
        /// Plugin name (or file).
        plugin: String,
        /// What was found.
        message: String,
    },
    /// Built against a WIT version this host cannot serve.
    #[error(
        "plugin {plugin}: built against {interface}@{found}, but this berthd serves @{served}: rebuild it against berth:*@{served}"
    )]
    Incompatible {
        /// Plugin name (or file).
        plugin: String,
        /// The interface, e.g. `berth:volume/driver`.
        interface: String,
        /// The version it was built against.
        found: String,
        /// The version this host serves.
        served: String,
    },
    /// The component imports something its world does not grant (sockets, ...).
    #[error("plugin {plugin}: {message}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// wasmtime's message, naming the import.
        message: String,
    },
    /// The call trapped, hit a limit, or missed its deadline; the instance was discarded.
    #[error("plugin {plugin}: {function} failed: {reason} (the plugin was restarted)")]
    Failed {
        /// Plugin name.
        plugin: String,
        /// The function called.
        function: &'static str,
        /// What happened (`deadline of 5s exceeded`, `memory limit of 64 MiB reached`, ...).
        reason: String,
    },
    /// The plugin answered with an error of its own.
    #[error("plugin {plugin}: {function}: {message}")]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// The function called.
        function: &'static str,
        /// The kind the plugin gave.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// A path the plugin returned leaves its state directory (or is not a directory).
    #[error("plugin {plugin}: refused the path {path:?} it returned: {reason}")]
    Escape {
        /// Plugin name.
        plugin: String,
        /// The path, as returned.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// Reading or writing host files (the cache, a state directory) failed.
    #[error("plugin host: cannot {what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Load { .. } | Error::UnknownWorld { .. } | Error::Link { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Incompatible { .. } => ErrorKind::FailedPrecondition,
            Error::Failed { .. } => ErrorKind::Unavailable,
            Error::Plugin { kind, .. } => *kind,
            Error::Escape { .. } => ErrorKind::PermissionDenied,
            Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Caps every plugin instance gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, bytes.
    pub memory_bytes: usize,
    /// Longest call, wall clock.
    pub call_timeout: Duration,
    /// Most live handles (WASI descriptors, streams, component resources).
    pub handles: usize,
    /// Most bytes copied between host and plugin in one call.
    pub call_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            handles: 4096,
            call_bytes: 16 << 20,
        }
    }
}

/// The kinds of plugin (one WIT world each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// `berth:volume/volume-driver`.
    Volume,
    /// `berth:network/network-driver`.
    Network,
    /// `berth:logging/logging-driver`.
    Logging,
    /// `berth:authz/authz-policy`.
    Authz,
}

impl PluginKind {
    /// The world's driver interface, as components export it.
    fn interface(self) -> &'static str {
        match self {
            PluginKind::Volume => "berth:volume/driver",
            PluginKind::Network => "berth:network/driver",
            PluginKind::Logging => "berth:logging/driver",
            PluginKind::Authz => "berth:authz/policy",
        }
    }

    /// `volume`, `network`, `logging`, `authz`.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Volume => "volume",
            PluginKind::Network => "network",
            PluginKind::Logging => "logging",
            PluginKind::Authz => "authz",
        }
    }
}

/// A compiled component and what it implements.
#[derive(Clone)]
pub struct LoadedComponent {
    component: Component,
    /// Its world.
    pub kind: PluginKind,
    /// The WIT version it was built against (`1.0.0`).
    pub version: String,
    /// sha256 of the component bytes, hex.
    pub digest: String,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .finish()
    }
}

/// Told of every plugin failure (a trap, a deadline, a limit hit): the plugin, the
/// function and the reason.
pub type FailureObserver = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// Where driver handles report their failures; the observer is set once, later than the
/// host is made (the event log comes after the plugins).
#[derive(Clone, Default)]
pub(crate) struct FailureReport(Arc<std::sync::OnceLock<FailureObserver>>);

impl std::fmt::Debug for FailureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FailureReport")
            .field(&self.0.get().is_some())
            .finish()
    }
}

impl FailureReport {
    pub(crate) fn report(&self, plugin: &str, function: &str, reason: &str) {
        if let Some(observer) = self.0.get() {
            observer(plugin, function, reason);
        }
    }
}

/// What every driver handle is held to: its limits, and where its failures are reported.
#[derive(Debug, Clone)]
pub(crate) struct Oversight {
    pub(crate) limits: Limits,
    pub(crate) failures: FailureReport,
    pub(crate) ticker: ticker::Ticker,
}

/// The engine, its epoch ticker and the component cache.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    ticker: ticker::Ticker,
    cache_dir: PathBuf,
    limits: Limits,
    failures: FailureReport,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache_dir", &self.cache_dir)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The engine every host makes, and every out-of-process compile: the same configuration, so
/// what one compiles the other can load.
fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if std::env::var_os("BERTH_WASM_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(|e| Error::Load {
        plugin: "(engine)".into(),
        message: e.to_string(),
    })
}

/// The program that compiles components for the hosts of this process, if not themselves.
static COMPILER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every host of this process compile components by running `program` with the
/// arguments `compile-plugin CACHE_DIR PLUGIN` and the component on its stdin (berthd runs
/// itself so: see [`compile_plugin_main`]), then load the result from the cache. Compiling
/// is the one time cranelift runs: in a process of its own, its code and heap never become
/// part of berthd's memory, and a component that crashes or exhausts the compiler fails its
/// load instead of berthd. Set once, before any host loads a component.
pub fn compile_out_of_process(program: PathBuf) {
    let _ = COMPILER.set(program);
}

/// The work of `PROGRAM compile-plugin CACHE_DIR PLUGIN`: the component on stdin compiled into
/// `cache_dir` with the engine configuration of every host. The error is what the loading host
/// reports after its own "plugin PLUGIN: cannot load the component:".
pub fn compile_plugin_main(cache_dir: &Path, plugin: &str) -> std::result::Result<(), String> {
    use std::io::Read as _;
    let mut wasm = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut wasm)
        .map_err(|e| format!("reading the component from stdin: {e}"))?;
    let compiled = new_engine().and_then(|engine| {
        cache::prepare_dir(cache_dir)?;
        cache::load(&engine, cache_dir, plugin, &wasm, None)
    });
    match compiled {
        Ok(_) => Ok(()),
        Err(Error::Load { message, .. }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

impl PluginHost {
    /// Makes the engine (epoch interruption on) and starts its ticker thread; compiled
    /// components are cached in `cache_dir` (created 0700). With `BERTH_WASM_PERFMAP=1` in
    /// the environment, plugin code is named in `/tmp/perf-PID.map` for `perf`.
    pub fn new(cache_dir: &Path, limits: Limits) -> Result<PluginHost> {
        let engine = new_engine()?;
        cache::prepare_dir(cache_dir)?;
        // Ticks go on long enough for any call to reach its deadline, and its outer timeout.
        let keep_ticking = limits.call_timeout + driver::GRACE + 2 * TICK;
        let ticker =
            ticker::Ticker::start(&engine, TICK, keep_ticking).map_err(|source| Error::Io {
                what: "start the epoch ticker".into(),
                source,
            })?;
        Ok(PluginHost {
            engine,
            ticker,
            cache_dir: cache_dir.to_path_buf(),
            limits,
            failures: FailureReport::default(),
        })
    }

    /// What every driver this host makes is held to.
    fn oversight(&self) -> Oversight {
        Oversight {
            limits: self.limits,
            failures: self.failures.clone(),
            ticker: self.ticker.clone(),
        }
    }

    /// Sets who is told of every failure of every driver this host makes (once; later
    /// calls are ignored).
    pub fn on_failure(&self, observer: FailureObserver) {
        let _ = self.failures.0.set(observer);
    }

    /// Compiles `wasm` (or loads it from the cache) and finds its world and version.
    /// Blocking: compiling takes up to seconds; call it off the async workers.
    pub fn load(&self, plugin: &str, wasm: &[u8]) -> Result<LoadedComponent> {
        let (component, digest) = cache::load(
            &self.engine,
            &self.cache_dir,
            plugin,
            wasm,
            COMPILER.get().map(PathBuf::as_path),
        )?;
        let (kind, version) = self.world_of(plugin, &component)?;
        Ok(LoadedComponent {
            component,
            kind,
            version,
            digest,
        })
    }

    /// The world a component exports, refusing versions this host cannot serve.
    fn world_of(&self, plugin: &str, component: &Component) -> Result<(PluginKind, String)> {
        let ty = component.component_type();
        let mut found = Vec::new();
        let names: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .chain(ty.imports(&self.engine).map(|(name, _)| name.to_owned()))
            .collect();
        for name in &names {
            let Some((interface, version)) = name.split_once('@') else {
                continue;
            };
            if !interface.starts_with("berth:") {
                continue;
            }
            check_version(plugin, interface, version)?;
            for kind in [
                PluginKind::Volume,
                PluginKind::Network,
                PluginKind::Logging,
                PluginKind::Authz,
            ] {
                if interface == kind.interface() {
                    found.push((kind, version.to_owned()));
                }
            }
        }
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::UnknownWorld {
                plugin: plugin.to_owned(),
                message: "the component exports no berth driver interface (berth:volume/driver, berth:network/driver, berth:logging/driver or berth:authz/policy)".into(),
            }),
            _ => Err(Error::UnknownWorld {
                plugin: plugin.to_owned(),
                message: "the component exports several berth driver interfaces; one plugin implements one world".into(),
            }),
        }
    }

    /// A volume driver running `component`, with `state_dir` as its `/state` and `config`
    /// given to its `configure`. The first instance is made (and configured) now, so a bad
    /// component or config fails here.
    pub async fn volume_driver(
        &self,
        name: &str,
        component: &LoadedComponent,
        state_dir: &Path,
        config: Vec<(String, String)>,
    ) -> Result<VolumeDriver> {
        expect_kind(name, component, PluginKind::Volume, "a volume driver")?;
        let driver = VolumeDriver::new(
            self.engine.clone(),
            Arc::from(name),
            &component.component,
            state_dir.to_path_buf(),
            config,
            self.oversight(),
        )?;
        driver.warm_up().await?;
        Ok(driver)
    }

    /// A network driver running `component`, its `host-net` served by `net`.
    pub async fn network_driver(
        &self,
        name: &str,
        component: &LoadedComponent,
        state_dir: &Path,
        config: Vec<(String, String)>,
        net: Arc<dyn NetHost>,
    ) -> Result<NetworkDriver> {
        expect_kind(name, component, PluginKind::Network, "a network driver")?;
        let driver = NetworkDriver::new(
            self.engine.clone(),
            Arc::from(name),
            &component.component,
            state_dir.to_path_buf(),
            config,
            self.oversight(),
            net,
        )?;
        driver.warm_up().await?;
        Ok(driver)
    }
}

impl PluginHost {
    /// A logging driver running `component`, with `state_dir` as its `/state`.
    pub async fn logging_driver(
        &self,
        name: &str,
        component: &LoadedComponent,
        state_dir: &Path,
        config: Vec<(String, String)>,
    ) -> Result<LoggingDriver> {
        expect_kind(name, component, PluginKind::Logging, "a logging driver")?;
        let driver = LoggingDriver::new(
            self.engine.clone(),
            Arc::from(name),
            &component.component,
            state_dir.to_path_buf(),
            config,
            self.oversight(),
        )?;
        driver.warm_up().await?;
        Ok(driver)
    }

    /// An authorization policy running `component`, configured with `config`. The first
    /// instance is made now, so a policy that does not compile fails here.
    pub async fn authorizer(
        &self,
        name: &str,
        component: &LoadedComponent,
        config: Vec<(String, String)>,
    ) -> Result<Authorizer> {
        expect_kind(
            name,
            component,
            PluginKind::Authz,
            "an authorization policy",
        )?;
        let policy = Authorizer::new(
            self.engine.clone(),
            Arc::from(name),
            &component.component,
            config,
            self.oversight(),
        )?;
        policy.warm_up().await?;
        Ok(policy)
    }
}

/// Refuses to run `component` as anything but a plugin of `kind` (`what` names it in the
/// error: "a volume driver").
fn expect_kind(
    name: &str,
    component: &LoadedComponent,
    kind: PluginKind,
    what: &str,
) -> Result<()> {
    if component.kind == kind {
        return Ok(());
    }
    Err(Error::UnknownWorld {
        plugin: name.to_owned(),
        message: format!("it is a {} plugin, not {what}", component.kind.name()),
    })
}

/// Refuses a `berth:*` version this host cannot serve: another major, or a newer minor.
fn check_version(plugin: &str, interface: &str, version: &str) -> Result<()> {
    let parts: Vec<u64> = version
        .split('.')
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect();
    let served = served_version(interface);
    let (served_major, served_minor, _) = served;
    let compatible = parts.len() == 3 && parts[0] == served_major && parts[1] <= served_minor;
    if compatible {
        return Ok(());
    }
    Err(Error::Incompatible {
        plugin: plugin.to_owned(),
        interface: interface.to_owned(),
        found: version.to_owned(),
        served: format!("{}.{}.{}", served.0, served.1, served.2),
    })
}

#[cfg(test)]
mod tests;
