//! Volume drivers (`berth:volume/volume-driver@1.0.0`): the typed handle the rest of core
//! uses, one live instance per driver (made again after any failure), each call under the
//! sandbox's deadline and caps.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::ErrorKind;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use super::sandbox::{self, PluginState};
use super::{Error, Limits, Result};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins-api/wit/volume",
        world: "volume-driver",
        // WASI is linked async, which makes the store async: exports are called async.
        exports: { default: async },
    });
}

use bindings::berth::types::host_log;
use bindings::berth::types::types as wit;
use bindings::exports::berth::volume::driver as wit_driver;
use bindings::{VolumeDriver as Bindings, VolumeDriverPre};

/// Extra time the host waits beyond a call's deadline: epochs do not count time a plugin
/// spends blocked in a host call, this outer timeout does.
const GRACE: Duration = Duration::from_millis(500);

/// A volume as its driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Where its data lives, relative to the driver's state directory.
    pub mountpoint: Option<String>,
    /// Creation time, nanoseconds since the epoch (0: unknown).
    pub created_at: u64,
    /// Driver-specific status.
    pub status: Vec<(String, String)>,
    /// The options it was created with.
    pub options: Vec<(String, String)>,
}

/// Where a driver's volumes are available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeScope {
    /// This host only.
    Local,
    /// Every host.
    Global,
}

/// What a driver supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeCapabilities {
    /// Its scope.
    pub scope: VolumeScope,
}

impl From<wit_driver::VolumeInfo> for VolumeInfo {
    fn from(v: wit_driver::VolumeInfo) -> Self {
        VolumeInfo {
            name: v.name,
            mountpoint: v.mountpoint,
            created_at: v.created_at,
            status: v.status,
            options: v.options,
        }
    }
}

fn kind_of(kind: wit::ErrorKind) -> ErrorKind {
    match kind {
        wit::ErrorKind::NotFound => ErrorKind::NotFound,
        wit::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        wit::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        wit::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
        wit::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        wit::ErrorKind::ResourceExhausted => ErrorKind::ResourceExhausted,
        wit::ErrorKind::Unavailable => ErrorKind::Unavailable,
        wit::ErrorKind::Internal => ErrorKind::Internal,
    }
}

impl wit::Host for PluginState {}

impl host_log::Host for PluginState {
    fn log(&mut self, level: host_log::Level, message: String, fields: Vec<(String, String)>) {
        if !self.log_allowed() {
            return;
        }
        // A plugin's lines are bounded, so a chatty one cannot flood berthd's log.
        let message: String = message.chars().take(2048).collect();
        let fields: Vec<String> = fields
            .iter()
            .take(16)
            .map(|(k, v)| format!("{k}={}", v.chars().take(256).collect::<String>()))
            .collect();
        let fields = fields.join(" ");
        let plugin = &*self.plugin;
        match level {
            host_log::Level::Trace => tracing::trace!(plugin, %fields, "{message}"),
            host_log::Level::Debug => tracing::debug!(plugin, %fields, "{message}"),
            host_log::Level::Info => tracing::info!(plugin, %fields, "{message}"),
            host_log::Level::Warn => tracing::warn!(plugin, %fields, "{message}"),
            host_log::Level::Error => tracing::error!(plugin, %fields, "{message}"),
        }
    }

    fn enabled(&mut self, level: host_log::Level) -> bool {
        match level {
            host_log::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            host_log::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            host_log::Level::Info => tracing::enabled!(tracing::Level::INFO),
            host_log::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            host_log::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        }
    }
}

/// A live instance.
struct Instance {
    store: Store<PluginState>,
    bindings: Bindings,
}

/// Calls counted for `plugin inspect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (trap, deadline, limit) and restarted the plugin.
    pub failures: u64,
    /// The last such failure.
    pub last_error: Option<String>,
}

/// A volume driver plugin.
pub struct VolumeDriver {
    name: Arc<str>,
    engine: Engine,
    pre: VolumeDriverPre<PluginState>,
    state_dir: PathBuf,
    config: Vec<(String, String)>,
    limits: Limits,
    instance: tokio::sync::Mutex<Option<Instance>>,
    stats: std::sync::Mutex<CallStats>,
}

impl std::fmt::Debug for VolumeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeDriver")
            .field("name", &self.name)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// Runs one export call on the live instance (made first if there is none), under the
/// deadline; any failure discards the instance.
macro_rules! call {
    ($self:ident, $function:literal, |$instance:ident| $call:expr) => {{
        let mut slot = $self.instance.lock().await;
        if slot.is_none() {
            *slot = Some($self.instantiate().await?);
        }
        let Some($instance) = slot.as_mut() else {
            unreachable!("just filled");
        };
        sandbox::arm_deadline(&mut $instance.store, $self.limits.call_timeout);
        // One span per plugin call (exported to OpenTelemetry with the rest of berthd's).
        let span = tracing::info_span!(
            "plugin.call",
            plugin = &*$self.name,
            function = $function,
            elapsed_us = tracing::field::Empty,
            ok = tracing::field::Empty,
        );
        let started = Instant::now();
        let outcome = tracing::Instrument::instrument(
            tokio::time::timeout($self.limits.call_timeout + GRACE, async { $call }),
            span.clone(),
        )
        .await;
        let elapsed = started.elapsed();
        let result = match outcome {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(Error::Plugin {
                plugin: $self.name.to_string(),
                function: $function,
                kind: kind_of(e.kind),
                message: e.message,
            }),
            Ok(Err(e)) => {
                Err($self.failed($function, sandbox::reason(&e, $self.limits.call_timeout)))
            }
            Err(_) => Err($self.failed(
                $function,
                format!("deadline of {:?} exceeded", $self.limits.call_timeout),
            )),
        };
        if matches!(result, Err(Error::Failed { .. })) {
            // The store is poisoned after any error from inside the plugin.
            *slot = None;
        }
        span.record("elapsed_us", elapsed.as_micros() as u64);
        span.record("ok", result.is_ok());
        span.in_scope(|| tracing::debug!(?elapsed, ok = result.is_ok(), "plugin call"));
        result
    }};
}

impl VolumeDriver {
    pub(super) fn new(
        engine: Engine,
        name: Arc<str>,
        component: &Component,
        state_dir: PathBuf,
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<VolumeDriver> {
        let link_error = |e: wasmtime::Error| Error::Link {
            plugin: name.to_string(),
            message: format!("{e:#}"),
        };
        let mut linker = Linker::<PluginState>::new(&engine);
        sandbox::add_wasi(&mut linker).map_err(link_error)?;
        Bindings::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(link_error)?;
        let pre = linker.instantiate_pre(component).map_err(link_error)?;
        let pre = VolumeDriverPre::new(pre).map_err(link_error)?;
        std::fs::create_dir_all(&state_dir).map_err(|source| Error::Io {
            what: format!("create {}", state_dir.display()),
            source,
        })?;
        Ok(VolumeDriver {
            name,
            engine,
            pre,
            state_dir,
            config,
            limits,
            instance: tokio::sync::Mutex::new(None),
            stats: std::sync::Mutex::new(CallStats::default()),
        })
    }

    fn failed(&self, function: &'static str, reason: String) -> Error {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.failures += 1;
        stats.last_error = Some(format!("{function}: {reason}"));
        tracing::warn!(plugin = &*self.name, function, "plugin failed: {reason}");
        Error::Failed {
            plugin: self.name.to_string(),
            function,
            reason,
        }
    }

    /// A fresh instance, configured.
    async fn instantiate(&self) -> Result<Instance> {
        let mut store = sandbox::new_store(
            &self.engine,
            Arc::clone(&self.name),
            &self.state_dir,
            &self.limits,
        )
        .map_err(|e| self.failed("instantiate", format!("{e:#}")))?;
        sandbox::arm_deadline(&mut store, self.limits.call_timeout);
        let bindings = tokio::time::timeout(
            self.limits.call_timeout + GRACE,
            self.pre.instantiate_async(&mut store),
        )
        .await
        .map_err(|_| self.failed("instantiate", "deadline exceeded".into()))?
        .map_err(|e| self.failed("instantiate", sandbox::reason(&e, self.limits.call_timeout)))?;
        let mut instance = Instance { store, bindings };
        sandbox::arm_deadline(&mut instance.store, self.limits.call_timeout);
        let configured = tokio::time::timeout(
            self.limits.call_timeout + GRACE,
            instance
                .bindings
                .berth_types_plugin()
                .call_configure(&mut instance.store, &self.config),
        )
        .await
        .map_err(|_| self.failed("configure", "deadline exceeded".into()))?
        .map_err(|e| self.failed("configure", sandbox::reason(&e, self.limits.call_timeout)))?;
        configured.map_err(|e| Error::Plugin {
            plugin: self.name.to_string(),
            function: "configure",
            kind: kind_of(e.kind),
            message: e.message,
        })?;
        Ok(instance)
    }

    /// Makes the first instance now, so that a broken component or config shows at once.
    pub(super) async fn warm_up(&self) -> Result<()> {
        let mut slot = self.instance.lock().await;
        if slot.is_none() {
            *slot = Some(self.instantiate().await?);
        }
        Ok(())
    }

    fn count(&self) {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).calls += 1;
    }

    /// Call counts and the last failure.
    pub fn stats(&self) -> CallStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver's state directory on the host (its `/state`).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// Opens `relative`, a path the driver returned, as a directory beneath its state
    /// directory: no absolute path, no `.`/`..`/empty component, no symlink anywhere on the
    /// way, no other filesystem. The result is an `O_PATH` descriptor, so what is mounted
    /// later is what was checked now.
    pub fn open_contained(&self, relative: &str) -> Result<OwnedFd> {
        let refuse = |reason: &str| Error::Escape {
            plugin: self.name.to_string(),
            path: relative.chars().take(256).collect(),
            reason: reason.to_owned(),
        };
        if relative.is_empty() || relative.len() > 4096 || relative.contains('\0') {
            return Err(refuse("not a usable relative path"));
        }
        if relative.starts_with('/') {
            return Err(refuse("absolute paths are not allowed"));
        }
        if relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(refuse("empty, `.` and `..` components are not allowed"));
        }
        let root = nix::fcntl::open(
            &self.state_dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: format!("open {}", self.state_dir.display()),
            source: e.into(),
        })?;
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        openat2(&root, relative, how).map_err(|e| match e {
            nix::errno::Errno::ELOOP => refuse("it goes through a symlink"),
            nix::errno::Errno::EXDEV => refuse("it leaves the state directory"),
            nix::errno::Errno::ENOTDIR => refuse("it is not a directory"),
            nix::errno::Errno::ENOENT => refuse("it does not exist"),
            other => refuse(&other.to_string()),
        })
    }

    /// `create`: makes (or, with the same options, returns) a volume.
    pub async fn create(&self, name: &str, options: &[(String, String)]) -> Result<VolumeInfo> {
        self.count();
        call!(self, "create", |i| i
            .bindings
            .berth_volume_driver()
            .call_create(&mut i.store, name, options)
            .await)
        .map(VolumeInfo::from)
    }

    /// `remove`: forgets a volume; may return a directory (relative to the state
    /// directory) for the host to delete.
    pub async fn remove(&self, name: &str) -> Result<Option<String>> {
        self.count();
        call!(self, "remove", |i| i
            .bindings
            .berth_volume_driver()
            .call_remove(&mut i.store, name)
            .await)
    }

    /// `mount`: where the volume's data is, relative to the state directory.
    pub async fn mount(&self, name: &str, mount_id: &str) -> Result<String> {
        self.count();
        call!(self, "mount", |i| i
            .bindings
            .berth_volume_driver()
            .call_mount(&mut i.store, name, mount_id)
            .await)
    }

    /// `unmount`.
    pub async fn unmount(&self, name: &str, mount_id: &str) -> Result<()> {
        self.count();
        call!(self, "unmount", |i| i
            .bindings
            .berth_volume_driver()
            .call_unmount(&mut i.store, name, mount_id)
            .await)
    }

    /// `path`.
    pub async fn path(&self, name: &str) -> Result<Option<String>> {
        self.count();
        call!(self, "path", |i| i
            .bindings
            .berth_volume_driver()
            .call_path(&mut i.store, name)
            .await)
    }

    /// `get`.
    pub async fn get(&self, name: &str) -> Result<VolumeInfo> {
        self.count();
        call!(self, "get", |i| i
            .bindings
            .berth_volume_driver()
            .call_get(&mut i.store, name)
            .await)
        .map(VolumeInfo::from)
    }

    /// `list`.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>> {
        self.count();
        call!(self, "list", |i| i
            .bindings
            .berth_volume_driver()
            .call_list(&mut i.store)
            .await)
        .map(|v| v.into_iter().map(VolumeInfo::from).collect())
    }

    /// `capabilities`.
    pub async fn capabilities(&self) -> Result<VolumeCapabilities> {
        self.count();
        call!(self, "capabilities", |i| i
            .bindings
            .berth_volume_driver()
            .call_capabilities(&mut i.store)
            .await
            .map(Ok::<_, wit::Error>))
        .map(|c| VolumeCapabilities {
            scope: match c.scope {
                wit::Scope::Local => VolumeScope::Local,
                wit::Scope::Global => VolumeScope::Global,
            },
        })
    }
}
