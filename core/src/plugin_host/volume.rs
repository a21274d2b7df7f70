//! Volume drivers (`berth:volume/volume-driver@1.0.0`): the typed handle the rest of core
//! uses, one live instance per driver (made again after any failure), each call under the
//! sandbox's deadline and caps.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::driver::{CallStats, Instance, call};
use super::sandbox::{self, PluginState};
use super::{Error, Limits, Result};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins-api/wit/volume",
        world: "volume-driver",
        // WASI is linked async, which makes the store async: exports are called async.
        exports: { default: async },
    });
}

use bindings::berth::types::types as wit;
use bindings::exports::berth::volume::driver as wit_driver;
use bindings::{VolumeDriver as Bindings, VolumeDriverPre};

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

/// A volume driver plugin.
pub struct VolumeDriver {
    name: Arc<str>,
    engine: Engine,
    pre: VolumeDriverPre<PluginState>,
    state_dir: PathBuf,
    config: Vec<(String, String)>,
    limits: Limits,
    failures: super::FailureReport,
    ticker: super::ticker::Ticker,
    instance: tokio::sync::Mutex<Option<Instance<Bindings>>>,
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

impl VolumeDriver {
    pub(super) fn new(
        engine: Engine,
        name: Arc<str>,
        component: &Component,
        state_dir: PathBuf,
        config: Vec<(String, String)>,
        oversight: super::Oversight,
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
            limits: oversight.limits,
            failures: oversight.failures,
            ticker: oversight.ticker,
            instance: tokio::sync::Mutex::new(None),
            stats: std::sync::Mutex::new(CallStats::default()),
        })
    }

    super::driver::driver_methods!();

    fn preopen(&self) -> Option<&std::path::Path> {
        Some(&self.state_dir)
    }

    fn net_host(&self) -> Option<Arc<dyn super::network::NetHost>> {
        None
    }

    fn connect_grant(&self) -> Option<Arc<super::logging::ConnectGrant>> {
        None
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
