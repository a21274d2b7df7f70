//! Volumes: their records (`volumes`) and which container mounts which (`volume_mounts`) in
//! the state database, and every call to their volume driver plugins. A driver says where a
//! volume's data lives inside its state directory; this module resolves that path beneath
//! the directory (refusing escapes) and hands the host path to the container's bundle, where
//! the shim bind-mounts it without following symlinks.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use berth_api::ErrorKind;
use berth_api::volume::{
    DEFAULT_DRIVER, VolumeCreateRequest, VolumeInfo, VolumeListRequest, VolumePruneReport,
};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::plugin::{self, Plugins};
use crate::plugin_host::{self, VolumeDriver, VolumeScope};
use crate::store::{self, Store, q};

/// Volume failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No volume of that name.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// A bad name, option or request.
    #[error("{0}")]
    Invalid(String),
    /// The volume is in use, or exists with another driver.
    #[error("{0}")]
    State(String),
    /// The driver plugin is missing, disabled or failed to start.
    #[error(transparent)]
    Plugin(#[from] plugin::Error),
    /// The driver call failed.
    #[error("volume {volume}: {source}")]
    Driver {
        /// The volume.
        volume: String,
        /// The plugin host's error.
        source: plugin_host::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A host file operation failed.
    #[error("volume {volume}: cannot {what}: {source}")]
    Io {
        /// The volume.
        volume: String,
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("volume task failed: {0}")]
    Task(String),
    /// A stored volume record cannot be read.
    #[error("volume {volume}: its record in the state database is unreadable: {message}")]
    Corrupt {
        /// The volume.
        volume: String,
        /// The parser's message.
        message: String,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Invalid(_) => ErrorKind::InvalidArgument,
            Error::State(_) => ErrorKind::FailedPrecondition,
            Error::Plugin(e) => e.kind(),
            Error::Driver { source, .. } => source.kind(),
            Error::Store(e) => e.kind(),
            Error::Io { .. } | Error::Task(_) | Error::Corrupt { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// docker's `local` driver options for binding a host directory.
const BIND_OPTIONS: [&str; 3] = ["type", "o", "device"];

/// docker's volume name rule; names are one path component for every driver.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// What berth keeps about a volume (the `doc` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    name: String,
    driver: String,
    created_at: String,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
    anonymous: bool,
    /// Host path of its data when it was created (inspect asks the driver again).
    mountpoint: String,
    /// A `local` bind-type volume's host directory (`-o type=none -o o=bind -o device=`).
    #[serde(default)]
    bind_device: Option<PathBuf>,
}

/// A volume a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    /// Its name; none: a new anonymous volume.
    pub name: Option<String>,
    /// Driver (default `local`).
    pub driver: Option<String>,
    /// Driver options, for a volume created now.
    pub options: BTreeMap<String, String>,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Leave an empty volume empty (no copy of the image's content).
    pub no_copy: bool,
}

/// A volume mounted for a container: kept in the container's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// Volume name.
    pub name: String,
    /// Its driver.
    pub driver: String,
    /// The id given to the driver's `mount`.
    pub mount_id: String,
    /// The host directory to bind (resolved beneath the driver's state directory).
    pub source: PathBuf,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Made for this container.
    pub anonymous: bool,
    /// Leave an empty volume empty (no copy of the image's content).
    #[serde(default)]
    pub no_copy: bool,
}

/// The volumes and their drivers.
#[derive(Debug)]
pub struct Volumes {
    store: Arc<Store>,
    plugins: Arc<Plugins>,
    bind_roots: Vec<PathBuf>,
    /// Create, remove and attach run one at a time, so that a volume is never removed
    /// between a container's check and its mount.
    ops: tokio::sync::Mutex<()>,
}

impl Volumes {
    /// Volumes in `store`, served by `plugins`; `local` volumes may bind host directories
    /// under `bind_roots`.
    pub fn new(store: Arc<Store>, plugins: Arc<Plugins>, bind_roots: Vec<PathBuf>) -> Volumes {
        Volumes {
            store,
            plugins,
            bind_roots,
            ops: tokio::sync::Mutex::new(()),
        }
    }

    async fn driver(&self, name: &str) -> Result<Arc<VolumeDriver>> {
        Ok(self.plugins.volume_driver(name).await?)
    }

    /// A volume's name and labels, from berth's records only (no driver call), for
    /// authorization; `None` if there is no such volume.
    pub async fn labels(&self, name: &str) -> Result<Option<BTreeMap<String, String>>> {
        Ok(self.record(name).await?.map(|r| r.labels))
    }

    async fn record(&self, name: &str) -> Result<Option<Record>> {
        let volume = name.to_owned();
        let name = name.to_owned();
        let doc = self
            .store
            .run(move |c| {
                c.query_row("SELECT doc FROM volumes WHERE name = ?1", [&name], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(q("read volume"))
            })
            .await?;
        // An unreadable record must not pass for a missing one: that would re-create (and
        // then undo) a volume whose data exists.
        doc.map(|d| {
            serde_json::from_str(&d).map_err(|e| Error::Corrupt {
                volume,
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Exclusive use of volumes: held by plugin disable/remove/set so that no volume
    /// operation runs against a driver while it changes.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ops.lock().await
    }

    async fn records(&self) -> Result<Vec<(Record, Vec<String>)>> {
        let rows = self
            .store
            .run(|c| {
                let mut stmt = c
                    .prepare(
                        "SELECT v.doc, group_concat(m.container_id)
                         FROM volumes v LEFT JOIN volume_mounts m ON m.volume = v.name
                         GROUP BY v.name ORDER BY v.created_at, v.name",
                    )
                    .map_err(q("list volumes"))?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                    })
                    .map_err(q("list volumes"))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(q("list volumes"))?;
                Ok(rows)
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(doc, users)| {
                let record: Record = serde_json::from_str(&doc).ok()?;
                let mut users: Vec<String> = users
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                users.sort();
                users.dedup();
                Some((record, users))
            })
            .collect())
    }

    async fn users(&self, name: &str) -> Result<Vec<String>> {
        let name = name.to_owned();
        Ok(self
            .store
            .run(move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT DISTINCT coalesce(container_id, '') FROM volume_mounts
                         WHERE volume = ?1",
                    )
                    .map_err(q("read volume users"))?;
                let users = stmt
                    .query_map([&name], |r| r.get::<_, String>(0))
                    .map_err(q("read volume users"))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(q("read volume users"))?;
                Ok(users)
            })
            .await?)
    }

    fn info(record: Record, users: Vec<String>, scope: &str) -> VolumeInfo {
        VolumeInfo {
            name: record.name,
            driver: record.driver,
            mountpoint: record.mountpoint,
            created_at: record.created_at,
            labels: record.labels,
            options: record.options,
            scope: scope.into(),
            status: BTreeMap::new(),
            anonymous: record.anonymous,
            used_by: users,
        }
    }

    /// `volume.create`.
    pub async fn create(&self, request: VolumeCreateRequest) -> Result<VolumeInfo> {
        let _ops = self.ops.lock().await;
        let record = self
            .ensure(
                request.name.as_deref(),
                request.driver.as_deref(),
                &request.driver_opts,
                request.labels.clone(),
                request.name.is_none(),
            )
            .await?;
        let users = self.users(&record.name).await?;
        let scope = self.scope(&record.driver).await;
        Ok(Self::info(record, users, &scope))
    }

    /// The volume `name` (made now, with `driver` and `options`, if it does not exist).
    async fn ensure(
        &self,
        name: Option<&str>,
        driver: Option<&str>,
        options: &BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Record> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => crate::store::random_hex(32).map_err(|source| Error::Io {
                volume: String::new(),
                what: "generate a name",
                source,
            })?,
        };
        if !valid_name(&name) {
            return Err(Error::Invalid(format!(
                "invalid volume name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 255 bytes"
            )));
        }
        for (k, v) in options {
            if k.is_empty()
                || k.len() > 256
                || v.len() > 4096
                || k.contains('\0')
                || v.contains('\0')
            {
                return Err(Error::Invalid(format!(
                    "volume {name}: bad driver option {k:?}"
                )));
            }
        }
        if let Some(existing) = self.record(&name).await? {
            if let Some(d) = driver
                && d != existing.driver
            {
                return Err(Error::State(format!(
                    "volume {name} already exists with driver {} (not {d})",
                    existing.driver
                )));
            }
            return Ok(existing);
        }
        let driver_name = driver.unwrap_or(DEFAULT_DRIVER).to_owned();
        let bind_device = if driver_name == DEFAULT_DRIVER {
            self.bind_device(&name, options).await?
        } else {
            None
        };
        let driver = self.driver(&driver_name).await?;
        // Drivers' create is idempotent: undoing a failed create must not delete a volume
        // the driver already had.
        let existed = driver.get(&name).await.is_ok();
        // The bind options are the host's business: the driver keeps an empty volume.
        let options_list: Vec<(String, String)> = options
            .iter()
            .filter(|(k, _)| bind_device.is_none() || !BIND_OPTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let created = driver
            .create(&name, &options_list)
            .await
            .map_err(|source| Error::Driver {
                volume: name.clone(),
                source,
            })?;
        let mountpoint = match (&bind_device, created.mountpoint.as_deref()) {
            (Some(device), _) => device.display().to_string(),
            (None, Some(rel)) => match resolve(&driver, &name, rel).await {
                Ok(p) => p.display().to_string(),
                Err(e) => {
                    if !existed {
                        let _ = driver.remove(&name).await;
                    }
                    return Err(e);
                }
            },
            (None, None) => String::new(),
        };
        let record = Record {
            name: name.clone(),
            driver: driver_name,
            created_at: now(),
            labels,
            options: options.clone(),
            anonymous,
            mountpoint,
            bind_device,
        };
        let doc = serde_json::to_string(&record).map_err(|e| Error::Task(e.to_string()));
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                if !existed {
                    let _ = driver.remove(&name).await;
                }
                return Err(e);
            }
        };
        let (n, d) = (record.name.clone(), record.driver.clone());
        let saved = self
            .store
            .run(move |c| {
                c.execute(
                    "INSERT INTO volumes (name, driver, ref_count, created_at, doc)
                     VALUES (?1, ?2, 0, strftime('%s','now'), ?3)",
                    rusqlite::params![n, d, doc],
                )
                .map_err(q("save volume"))
            })
            .await;
        if let Err(e) = saved {
            // Without a record nobody could ever remove it: undo the driver's create.
            if !existed {
                let _ = driver.remove(&name).await;
            }
            return Err(e.into());
        }
        info!(volume = %name, driver = %record.driver, "volume created");
        Ok(record)
    }

    /// For `local` volumes with docker's bind options (`type=none`, `o=bind`, `device=DIR`):
    /// the directory to bind, which must exist under one of the configured roots.
    async fn bind_device(
        &self,
        volume: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Option<PathBuf>> {
        if !BIND_OPTIONS.iter().any(|k| options.contains_key(*k)) {
            return Ok(None);
        }
        let (Some(device), Some("none"), Some("bind" | "rbind")) = (
            options.get("device"),
            options.get("type").map(String::as_str),
            options.get("o").map(String::as_str),
        ) else {
            return Err(Error::Invalid(format!(
                "volume {volume}: the local driver binds host directories only: use -o type=none -o o=bind -o device=/host/dir (type and o take no other values)"
            )));
        };
        if self.bind_roots.is_empty() {
            return Err(Error::State(format!(
                "volume {volume}: bind-type volumes are disabled: list the host directories they may use in berthd's volume-bind-roots"
            )));
        }
        if !device.starts_with('/') {
            return Err(Error::Invalid(format!(
                "volume {volume}: device {device:?} must be an absolute path"
            )));
        }
        self.check_bind_device(volume, std::path::Path::new(device))
            .await
            .map(Some)
    }

    async fn check_bind_device(&self, volume: &str, device: &std::path::Path) -> Result<PathBuf> {
        let device = device.to_owned();
        let roots = self.bind_roots.clone();
        let volume = volume.to_owned();
        tokio::task::spawn_blocking(move || {
            let real = device.canonicalize().map_err(|e| {
                Error::Invalid(format!("volume {volume}: device {}: {e}", device.display()))
            })?;
            if !real.is_dir() {
                return Err(Error::Invalid(format!(
                    "volume {volume}: device {} is not a directory",
                    device.display()
                )));
            }
            let allowed = roots.iter().any(|r| {
                r.canonicalize()
                    .is_ok_and(|root| real.starts_with(&root) && real != root)
            });
            if !allowed {
                return Err(Error::State(format!(
                    "volume {volume}: device {} is not below any of berthd's volume-bind-roots",
                    real.display()
                )));
            }
            Ok(real)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    async fn scope(&self, driver: &str) -> String {
        match self.driver(driver).await {
            Ok(d) => match d.capabilities().await {
                Ok(c) if c.scope == VolumeScope::Global => "global".into(),
                _ => "local".into(),
            },
            Err(_) => "local".into(),
        }
    }

    /// `volume.list`.
    pub async fn list(&self, request: &VolumeListRequest) -> Result<Vec<VolumeInfo>> {
        let mut scopes: HashMap<String, String> = HashMap::new();
        let mut out = Vec::new();
        for (record, users) in self.records().await? {
            if !scopes.contains_key(&record.driver) {
                let s = self.scope(&record.driver).await;
                scopes.insert(record.driver.clone(), s);
            }
            let scope = scopes[&record.driver].clone();
            let info = Self::info(record, users, &scope);
            if request.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// `volume.inspect`: the record, with the driver's current status and location.
    pub async fn inspect(&self, name: &str) -> Result<VolumeInfo> {
        let record = self
            .record(name)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let users = self.users(name).await?;
        let scope = self.scope(&record.driver).await;
        let bind_device = record.bind_device.clone();
        let mut info = Self::info(record, users, &scope);
        match self.driver(&info.driver).await {
            Ok(driver) => match driver.get(name).await {
                Ok(v) => {
                    info.status = v.status.into_iter().collect();
                    info.mountpoint = String::new();
                    if let Some(device) = &bind_device {
                        info.mountpoint = device.display().to_string();
                    } else if let Some(rel) = v.mountpoint {
                        // A driver answering nonsense still gets its volume described.
                        match resolve(&driver, name, &rel).await {
                            Ok(p) => info.mountpoint = p.display().to_string(),
                            Err(e) => {
                                info.status.insert("error".into(), e.to_string());
                            }
                        }
                    }
                }
                Err(e) => {
                    info.status.insert("error".into(), e.to_string());
                }
            },
            Err(e) => {
                info.status.insert("error".into(), e.to_string());
            }
        }
        Ok(info)
    }

    /// `volume.remove`: refused while a container uses it.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let _ops = self.ops.lock().await;
        let Some(record) = self.record(name).await? else {
            return if force {
                Ok(())
            } else {
                Err(Error::NotFound(name.to_owned()))
            };
        };
        match self.remove_unused(&record).await {
            // The driver plugin is gone: with force, forget the volume (as docker purges).
            Err(Error::Plugin(crate::plugin::Error::NotFound(_))) if force => {
                warn!(volume = name, driver = %record.driver, "driver is not installed: forgetting the volume");
                self.forget(name).await
            }
            other => other.map(|_| ()),
        }
    }

    async fn forget(&self, name: &str) -> Result<()> {
        let n = name.to_owned();
        self.store
            .run(move |c| {
                c.execute("DELETE FROM volume_mounts WHERE volume = ?1", [&n])
                    .map_err(q("forget volume mounts"))?;
                c.execute("DELETE FROM volumes WHERE name = ?1", [&n])
                    .map_err(q("forget volume"))
            })
            .await?;
        Ok(())
    }

    /// Removes a volume no container uses; returns the bytes its data took.
    async fn remove_unused(&self, record: &Record) -> Result<u64> {
        // Mounts of containers that are gone, whose release failed earlier: retry them now.
        self.release_orphans(Some(&record.name)).await;
        let users = self.users(&record.name).await?;
        if !users.is_empty() {
            let users: Vec<String> = users
                .iter()
                .map(|u| {
                    if u.is_empty() {
                        "(being created)".into()
                    } else {
                        u[..12.min(u.len())].to_owned()
                    }
                })
                .collect();
            return Err(Error::State(format!(
                "volume {} is in use by container(s) {}: remove them first",
                record.name,
                users.join(", ")
            )));
        }
        let driver = self.driver(&record.driver).await?;
        let bytes = if record.mountpoint.is_empty() || record.bind_device.is_some() {
            0
        } else {
            let p = PathBuf::from(&record.mountpoint);
            tokio::task::spawn_blocking(move || crate::fsutil::disk_usage(&p))
                .await
                .unwrap_or(0)
        };
        let leftover = match driver.remove(&record.name).await {
            Ok(l) => l,
            // Already gone from the driver (a retried remove): only the record is left.
            Err(plugin_host::Error::Plugin {
                kind: ErrorKind::NotFound,
                ..
            }) => None,
            Err(source) => {
                return Err(Error::Driver {
                    volume: record.name.clone(),
                    source,
                });
            }
        };
        if let Some(rel) = leftover {
            // Checked for the error message; the deletion itself walks descriptors beneath
            // the state directory, so a symlink planted meanwhile cannot redirect it.
            resolve(&driver, &record.name, &rel).await?;
            let volume = record.name.clone();
            let root = driver.state_dir().to_path_buf();
            tokio::task::spawn_blocking(move || crate::fsutil::remove_tree_beneath(&root, &rel))
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map_err(|source| Error::Io {
                    volume,
                    what: "delete its data",
                    source,
                })?;
        }
        let n = record.name.clone();
        self.store
            .run(move |c| {
                c.execute("DELETE FROM volumes WHERE name = ?1", [&n])
                    .map_err(q("remove volume"))
            })
            .await?;
        info!(volume = %record.name, "volume removed");
        Ok(bytes)
    }

    /// `volume.prune`: unused anonymous volumes, or every unused one with `all`.
    pub async fn prune(&self, all: bool) -> Result<VolumePruneReport> {
        let _ops = self.ops.lock().await;
        let mut report = VolumePruneReport::default();
        for (record, users) in self.records().await? {
            if !users.is_empty() || !(all || record.anonymous) {
                continue;
            }
            match self.remove_unused(&record).await {
                Ok(bytes) => {
                    report.space_reclaimed += bytes;
                    report.volumes_deleted.push(record.name);
                }
                Err(e) => warn!(volume = %record.name, "prune: {e}"),
            }
        }
        Ok(report)
    }

    /// Creates (where needed) and mounts the volumes a new container asks for. The mounts
    /// belong to no container until the container's creation claims them (see
    /// [`claim_mounts`]); [`Self::release`] undoes them.
    pub async fn attach(&self, requests: &[VolumeRequest]) -> Result<Vec<Attached>> {
        let _ops = self.ops.lock().await;
        let mut attached = Vec::new();
        for request in requests {
            match self.attach_one(request).await {
                Ok(a) => attached.push(a),
                Err(e) => {
                    self.release_locked(&attached, true).await;
                    return Err(e);
                }
            }
        }
        Ok(attached)
    }

    async fn attach_one(&self, request: &VolumeRequest) -> Result<Attached> {
        let record = self
            .ensure(
                request.name.as_deref(),
                request.driver.as_deref(),
                &request.options,
                BTreeMap::new(),
                request.name.is_none(),
            )
            .await?;
        let driver = self.driver(&record.driver).await?;
        let mount_id = crate::store::random_hex(16).map_err(|source| Error::Io {
            volume: record.name.clone(),
            what: "generate a mount id",
            source,
        })?;
        // Anonymous for this container only if it asked for no name: a volume named
        // explicitly is never removed with the container, whatever made it.
        let anonymous = request.name.is_none();
        let (m, v, anon) = (mount_id.clone(), record.name.clone(), anonymous);
        self.store
            .run(move |c| {
                c.execute(
                    "INSERT INTO volume_mounts (mount_id, volume, container_id, anonymous)
                     VALUES (?1, ?2, NULL, ?3)",
                    rusqlite::params![m, v, anon],
                )
                .map_err(q("record a volume mount"))
            })
            .await?;
        let fail = |source| Error::Driver {
            volume: record.name.clone(),
            source,
        };
        let source = async {
            let rel = driver.mount(&record.name, &mount_id).await.map_err(fail)?;
            let data = resolve(&driver, &record.name, &rel).await?;
            match &record.bind_device {
                // Checked again: the allowed roots may have changed since the volume was made.
                Some(device) => self.check_bind_device(&record.name, device).await,
                None => Ok(data),
            }
        }
        .await;
        let attached = Attached {
            name: record.name.clone(),
            driver: record.driver.clone(),
            mount_id,
            source: PathBuf::new(),
            target: request.target.clone(),
            read_only: request.read_only,
            anonymous,
            no_copy: request.no_copy,
        };
        match source {
            Ok(source) => Ok(Attached { source, ..attached }),
            Err(e) => {
                self.release_locked(std::slice::from_ref(&attached), true)
                    .await;
                Err(e)
            }
        }
    }

    /// Undoes [`Self::attach`] for a container that was not created: unmounts, and removes
    /// the anonymous volumes made for it.
    pub async fn release(&self, attached: &[Attached]) {
        let _ops = self.ops.lock().await;
        self.release_locked(attached, true).await;
    }

    async fn release_locked(&self, attached: &[Attached], remove_anonymous: bool) {
        for a in attached {
            self.unmount(&a.name, &a.driver, &a.mount_id).await;
            if a.anonymous && remove_anonymous {
                self.remove_if_unused(&a.name).await;
            }
        }
    }

    /// Releases one mount with its driver. The row goes only once the driver has let go
    /// (or no longer knows the volume): otherwise the driver would keep refusing to remove
    /// a volume berth shows as unused. Kept rows are retried by [`Self::release_orphans`].
    async fn unmount(&self, volume: &str, driver: &str, mount_id: &str) {
        let released = match self.driver(driver).await {
            Ok(d) => match d.unmount(volume, mount_id).await {
                Ok(())
                | Err(plugin_host::Error::Plugin {
                    kind: ErrorKind::NotFound,
                    ..
                }) => true,
                Err(e) => {
                    warn!(volume, mount_id, "unmount failed, will retry: {e}");
                    false
                }
            },
            Err(e) => {
                warn!(volume, mount_id, "unmount failed, will retry: {e}");
                false
            }
        };
        if !released {
            return;
        }
        let m = mount_id.to_owned();
        if let Err(e) = self
            .store
            .run(move |c| {
                c.execute("DELETE FROM volume_mounts WHERE mount_id = ?1", [&m])
                    .map_err(q("forget a volume mount"))
            })
            .await
        {
            warn!(volume, mount_id, "{e}");
        }
    }

    async fn remove_if_unused(&self, name: &str) {
        match self.record(name).await {
            Ok(Some(record)) => match self.remove_unused(&record).await {
                Ok(_) | Err(Error::State(_)) => {}
                Err(e) => warn!(volume = name, "cannot remove anonymous volume: {e}"),
            },
            Ok(None) => {}
            Err(e) => warn!(volume = name, "{e}"),
        }
    }

    /// After a container was removed: releases its mounts and, with `remove_anonymous`
    /// (`rm -v`, `--rm`), removes the anonymous volumes made for it.
    pub async fn release_container(&self, container_id: &str, remove_anonymous: bool) {
        let _ops = self.ops.lock().await;
        let rows = self.mount_rows(Some(container_id)).await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                warn!(container = container_id, "cannot release volumes: {e}");
                return;
            }
        };
        for (mount_id, volume, driver, anonymous) in rows {
            self.unmount(&volume, &driver, &mount_id).await;
            if anonymous && remove_anonymous {
                self.remove_if_unused(&volume).await;
            }
        }
    }

    /// Releases the mounts (of `volume`, or of every volume) whose container no longer
    /// exists: left by a failed unmount, or by berthd stopping between a container's
    /// removal and the release of its volumes.
    pub async fn release_orphans(&self, volume: Option<&str>) {
        let volume = volume.map(str::to_owned);
        let rows = self
            .store
            .run(move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT m.mount_id, m.volume, v.driver FROM volume_mounts m
                         JOIN volumes v ON v.name = m.volume
                         WHERE m.container_id IS NOT NULL
                            AND m.container_id NOT IN (SELECT id FROM containers)
                            AND (?1 IS NULL OR m.volume = ?1)",
                    )
                    .map_err(q("find orphaned volume mounts"))?;
                let rows = stmt
                    .query_map([&volume], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(q("find orphaned volume mounts"))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(q("find orphaned volume mounts"))?;
                Ok(rows)
            })
            .await;
        match rows {
            Ok(rows) => {
                for (mount_id, volume, driver) in rows {
                    self.unmount(&volume, &driver, &mount_id).await;
                }
            }
            Err(e) => warn!("cannot release orphaned volume mounts: {e}"),
        }
    }

    /// The mounts of `container` (none: mounts no container has claimed yet), as
    /// (mount id, volume, driver, anonymous).
    async fn mount_rows(
        &self,
        container: Option<&str>,
    ) -> store::Result<Vec<(String, String, String, bool)>> {
        let container = container.map(str::to_owned);
        self.store
            .run(move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT m.mount_id, m.volume, v.driver, m.anonymous FROM volume_mounts m
                         JOIN volumes v ON v.name = m.volume WHERE m.container_id IS ?1",
                    )
                    .map_err(q("read volume mounts"))?;
                let rows = stmt
                    .query_map([&container], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(q("read volume mounts"))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(q("read volume mounts"))?;
                Ok(rows)
            })
            .await
    }

    /// At daemon start: releases mounts whose container no longer exists (berthd stopped
    /// between removing a container and releasing its volumes), and undoes half-made
    /// attachments of containers never created.
    pub async fn reconcile(&self) {
        self.release_orphans(None).await;
        self.release_unclaimed().await;
    }

    async fn release_unclaimed(&self) {
        let rows = self.mount_rows(None).await.unwrap_or_default();
        let attached: Vec<Attached> = rows
            .into_iter()
            .map(|(mount_id, name, driver, anonymous)| Attached {
                name,
                driver,
                mount_id,
                source: PathBuf::new(),
                target: String::new(),
                read_only: false,
                anonymous,
                no_copy: false,
            })
            .collect();
        let _ops = self.ops.lock().await;
        self.release_locked(&attached, true).await;
    }
}

/// Gives the mounts of `attached` to the container `container_id`, with the connection of
/// the container's own creation (so that the two are written together).
pub fn claim_mounts(
    conn: &rusqlite::Connection,
    attached: &[Attached],
    container_id: &str,
) -> std::result::Result<(), store::Error> {
    for a in attached {
        conn.execute(
            "UPDATE volume_mounts SET container_id = ?1 WHERE mount_id = ?2",
            [container_id, &a.mount_id],
        )
        .map_err(q("claim a volume mount"))?;
    }
    Ok(())
}

/// Resolves a path a driver returned beneath its state directory (see
/// [`VolumeDriver::open_contained`]) to the host path it names now.
async fn resolve(driver: &Arc<VolumeDriver>, volume: &str, relative: &str) -> Result<PathBuf> {
    let d = Arc::clone(driver);
    let rel = relative.to_owned();
    let volume = volume.to_owned();
    tokio::task::spawn_blocking(move || {
        let fd = d.open_contained(&rel).map_err(|source| Error::Driver {
            volume: volume.clone(),
            source,
        })?;
        let path =
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|source| {
                Error::Io {
                    volume: volume.clone(),
                    what: "resolve its directory",
                    source,
                }
            })?;
        // The descriptor was opened beneath the state directory; its path must say so too
        // (a rename under our feet would show here).
        if !path.starts_with(d.state_dir()) {
            return Err(Error::Driver {
                volume,
                source: plugin_host::Error::Escape {
                    plugin: d.name().to_owned(),
                    path: rel,
                    reason: "it resolved outside the state directory".into(),
                },
            });
        }
        Ok(path)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn volume_names() {
        for ok in ["data", "a", "A.b_c-d", &"x".repeat(255), "0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "..", "a b", &"x".repeat(256)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
