//! Containers: the persisted store (SQLite rows + a directory per container), the state
//! machine (created → running → exited, removing), start through `berth-shim`, and
//! reconciliation with live shims when berthd starts. Blocking; async callers use the
//! blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::ErrorKind;
use berth_api::container::{
    ContainerDetails, ContainerState, ContainerStatus, ContainerSummary, CreateRequest, LogLine,
    LogsRequest, WaitResult,
};
use serde::{Deserialize, Serialize};

use crate::image::{self, Images};
use crate::runtime::cgroup::{self, ContainerCgroup};
use crate::runtime::protocol::{ExitRecord, Request, Response};
use crate::runtime::{ShimConfig, files, logfile, shim, spec};
use crate::store::{self, Store, q};
use crate::volume::VolumeRequest;

/// Container failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container matches.
    #[error("no such container: {0}")]
    NotFound(String),
    /// The name is taken.
    #[error("the container name {0:?} is already in use")]
    NameInUse(String),
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// The operation does not fit the container's state.
    #[error("{0}")]
    State(String),
    /// The command could not run (exit code 126 or 127), or the container could not start.
    #[error("{message}")]
    StartFailed {
        /// What failed.
        message: String,
        /// 125, 126 or 127.
        exit_code: i32,
    },
    /// The image could not be used.
    #[error(transparent)]
    Image(#[from] image::Error),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Its control group failed.
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    /// A filesystem or process operation failed.
    #[error("container {id}: cannot {what}: {source}")]
    Io {
        /// Container id.
        id: String,
        /// What.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::NameInUse(_) => ErrorKind::AlreadyExists,
            Error::Invalid(_) => ErrorKind::InvalidArgument,
            Error::State(_) | Error::StartFailed { .. } => ErrorKind::FailedPrecondition,
            Error::Image(e) => e.kind(),
            Error::Store(e) => e.kind(),
            Error::Cgroup(e) => e.kind(),
            Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// What berth keeps about a container (the `doc` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Id (64 hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// The image as given.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// Creation time.
    pub created: String,
    /// Creation options.
    pub config: CreateRequest,
    /// The resolved command line.
    pub args: Vec<String>,
    /// The resolved environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// Host name.
    pub hostname: String,
    /// Signal `stop` sends first.
    pub stop_signal: String,
    /// Current state.
    pub state: ContainerState,
    /// Set by `stop` and `kill`, cleared by `start`: restart policies leave such a container
    /// alone (`unless-stopped` even across daemon restarts).
    #[serde(default)]
    pub manually_stopped: bool,
    /// Volumes mounted for it (resolved host paths), released when it is removed.
    #[serde(default)]
    pub volumes: Vec<crate::volume::Attached>,
}

/// When a container that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never.
    No,
    /// When it exits non-zero, at most this many times (0: no limit).
    OnFailure(u32),
    /// Always, unless stopped by the user (then again at daemon start).
    Always,
    /// Always, unless stopped by the user (also not at daemon start).
    UnlessStopped,
}

/// Refuses a container that is neither running nor paused.
fn ensure_running(record: &ContainerRecord) -> Result<()> {
    if matches!(
        record.state.status,
        ContainerStatus::Running | ContainerStatus::Paused
    ) {
        Ok(())
    } else {
        Err(Error::State(format!(
            "container {} is not running",
            record.name
        )))
    }
}

/// Whether a container gets the default seccomp filter (`seccomp` is `default` or unset,
/// and it is not privileged).
fn seccomp_enabled(request: &CreateRequest) -> Result<bool> {
    match request.seccomp.as_deref() {
        None | Some("default") => Ok(!request.privileged),
        Some("unconfined") => Ok(false),
        Some(other) => Err(Error::Invalid(format!(
            "invalid seccomp profile {other:?}: berth supports `default` and `unconfined`"
        ))),
    }
}

/// Checks user mounts: absolute, distinct targets (not `/`), existing bind sources (made
/// for `-v` as docker does).
fn validate_mounts(mounts: &mut [berth_api::container::MountSpec]) -> Result<()> {
    use berth_api::container::MountKind;
    let mut targets = std::collections::HashSet::new();
    for m in mounts.iter_mut() {
        let target = std::path::Path::new(&m.target);
        if !target.is_absolute() || target.components().count() < 2 {
            return Err(Error::Invalid(format!(
                "invalid mount target {:?}: it must be an absolute path other than /",
                m.target
            )));
        }
        if target
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::Invalid(format!(
                "invalid mount target {:?}: `..` is not allowed",
                m.target
            )));
        }
        if !targets.insert(target.components().collect::<PathBuf>()) {
            return Err(Error::Invalid(format!(
                "duplicate mount point {:?}",
                m.target
            )));
        }
        match m.kind {
            MountKind::Bind => {
                let Some(source) = m.source.as_deref().filter(|s| s.starts_with('/')) else {
                    return Err(Error::Invalid(format!(
                        "bind mount at {:?}: the source must be an absolute host path",
                        m.target
                    )));
                };
                if !std::path::Path::new(source).exists() {
                    if !m.create_source {
                        return Err(Error::Invalid(format!(
                            "bind source path does not exist: {source}"
                        )));
                    }
                    std::fs::create_dir_all(source).map_err(|e| {
                        Error::Invalid(format!("cannot create bind source {source}: {e}"))
                    })?;
                }
            }
            MountKind::Volume => {
                if let Some(name) = &m.source
                    && !crate::volume::valid_name(name)
                {
                    return Err(Error::Invalid(format!(
                        "invalid volume name {name:?} for {:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                        m.target
                    )));
                }
                if m.tmpfs_size.is_some() || m.tmpfs_mode.is_some() {
                    return Err(Error::Invalid(format!(
                        "volume mount at {:?} takes no tmpfs options",
                        m.target
                    )));
                }
            }
            MountKind::Tmpfs => {
                if m.source.is_some() {
                    return Err(Error::Invalid(format!(
                        "tmpfs mount at {:?} takes no source",
                        m.target
                    )));
                }
                if m.tmpfs_mode.is_some_and(|mode| mode > 0o7777) {
                    return Err(Error::Invalid(format!(
                        "tmpfs mount at {:?}: mode must be octal, at most 7777",
                        m.target
                    )));
                }
            }
        }
    }
    Ok(())
}

/// What `inspect` shows of a container's mounts.
fn mount_points(r: &ContainerRecord) -> Vec<berth_api::container::MountPoint> {
    use berth_api::container::{MountKind, MountPoint};
    let mut out: Vec<MountPoint> = r
        .config
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Volume)
        .map(|m| MountPoint {
            kind: m.kind,
            name: None,
            source: m.source.clone().unwrap_or_default(),
            destination: m.target.clone(),
            driver: None,
            rw: !m.read_only,
        })
        .collect();
    out.extend(r.volumes.iter().map(|v| MountPoint {
        kind: MountKind::Volume,
        name: Some(v.name.clone()),
        source: v.source.display().to_string(),
        destination: v.target.clone(),
        driver: Some(v.driver.clone()),
        rw: !v.read_only,
    }));
    out
}

/// The runtime spec's user mounts: binds, tmpfs and volumes, parents before children so
/// that a mount inside another lands on top of it.
fn container_mounts(record: &ContainerRecord) -> Result<Vec<oci_spec::runtime::Mount>> {
    use berth_api::container::MountKind;
    let mut mounts: Vec<(usize, oci_spec::runtime::Mount)> = Vec::new();
    let depth = |t: &str| Path::new(t).components().count();
    for m in &record.config.mounts {
        if m.kind == MountKind::Volume {
            continue;
        }
        let mount =
            spec::user_mount(m).map_err(|e| Error::Invalid(format!("runtime spec: {e}")))?;
        mounts.push((depth(&m.target), mount));
    }
    for v in &record.volumes {
        let mount = spec::volume_mount(&v.source, &v.target, v.read_only, !v.no_copy)
            .map_err(|e| Error::Invalid(format!("runtime spec: {e}")))?;
        mounts.push((depth(&v.target), mount));
    }
    mounts.sort_by_key(|(d, _)| *d);
    Ok(mounts.into_iter().map(|(_, m)| m).collect())
}

/// docker's checks and defaults for cgroup limits.
fn validate_limits(limits: &mut berth_api::container::ResourceLimits) -> Result<()> {
    const MIN_MEMORY: i64 = 6 * 1024 * 1024;
    if let Some(m) = limits.memory {
        if m <= 0 {
            limits.memory = None;
        } else if m < MIN_MEMORY {
            return Err(Error::Invalid(
                "invalid --memory: the minimum memory limit is 6MB".into(),
            ));
        }
    }
    match (limits.memory, limits.memory_swap) {
        (None, Some(s)) if s > 0 => {
            return Err(Error::Invalid(
                "invalid --memory-swap: set --memory too when limiting memory+swap".into(),
            ));
        }
        (None, Some(_)) => limits.memory_swap = None,
        (Some(m), None | Some(0)) => limits.memory_swap = Some(2 * m),
        (Some(m), Some(s)) if s != -1 && s < m => {
            return Err(Error::Invalid(
                "invalid --memory-swap: it must be at least --memory (it counts memory plus swap), or -1 for unlimited swap".into(),
            ));
        }
        _ => {}
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    if let Some(n) = limits.nano_cpus {
        if n == 0 {
            limits.nano_cpus = None;
        } else if n < 10_000_000 || n > cpus * 1_000_000_000 {
            return Err(Error::Invalid(format!(
                "invalid --cpus: the range is 0.01 to {cpus}.00 on this host ({cpus} CPUs)"
            )));
        }
    }
    if let Some(shares) = limits.cpu_shares {
        if shares == 0 {
            limits.cpu_shares = None;
        } else if !(2..=262_144).contains(&shares) {
            return Err(Error::Invalid(
                "invalid --cpu-shares: use 2 to 262144".into(),
            ));
        }
    }
    if let Some(p) = limits.pids_limit
        && p <= 0
    {
        limits.pids_limit = Some(-1);
    }
    if let Some(set) = &limits.cpuset_cpus {
        let wanted = parse_cpu_list(set).ok_or_else(|| {
            Error::Invalid(format!(
                "invalid --cpuset-cpus {set:?}: use a list like 0-2,4"
            ))
        })?;
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| parse_cpu_list(s.trim()))
            .unwrap_or_else(|| (0..cpus as u32).collect());
        if let Some(missing) = wanted.iter().find(|c| !online.contains(c)) {
            return Err(Error::Invalid(format!(
                "invalid --cpuset-cpus {set:?}: CPU {missing} is not available on this host"
            )));
        }
    }
    Ok(())
}

/// Parses a kernel CPU list (`0-2,4`).
fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Parses `no`, `on-failure[:N]`, `always`, `unless-stopped`.
pub fn parse_restart(s: &str) -> Result<RestartPolicy> {
    let (name, max) = match s.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (s, None),
    };
    let policy = match (name, max) {
        ("" | "no", None) => RestartPolicy::No,
        ("always", None) => RestartPolicy::Always,
        ("unless-stopped", None) => RestartPolicy::UnlessStopped,
        ("on-failure", None) => RestartPolicy::OnFailure(0),
        ("on-failure", Some(m)) => RestartPolicy::OnFailure(m.parse().map_err(|_| {
            Error::Invalid(format!(
                "invalid restart policy {s:?}: max retries must be a number"
            ))
        })?),
        _ => {
            return Err(Error::Invalid(format!(
                "invalid restart policy {s:?}: use no, on-failure[:N], always or unless-stopped"
            )));
        }
    };
    Ok(policy)
}

impl ContainerRecord {
    /// The container's restart policy.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.config
            .restart
            .as_deref()
            .and_then(|s| parse_restart(s).ok())
            .unwrap_or(RestartPolicy::No)
    }

    /// Whether the policy restarts it after this exit (not counting daemon start).
    pub fn should_restart(&self) -> bool {
        if self.manually_stopped || self.state.error.is_some() {
            return false;
        }
        match self.restart_policy() {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => {
                self.state.exit_code.unwrap_or(0) != 0
                    && (max == 0 || self.state.restart_count < max)
            }
        }
    }
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "rapid", "sharp", "tidy", "vivid", "witty", "zesty", "bold",
];
const NOUNS: &[&str] = &[
    "anchor",
    "buoy",
    "cove",
    "dock",
    "ferry",
    "galley",
    "harbor",
    "jetty",
    "keel",
    "lighthouse",
    "mast",
    "pier",
    "quay",
    "rudder",
    "sail",
    "tug",
    "wharf",
    "yawl",
    "hull",
    "bow",
];

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A `berth-shim` command line that works in a container, and the full id of the container
/// the caller's reference named.
#[derive(Debug)]
pub struct ShimCommand {
    /// The shim binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<std::ffi::OsString>,
    /// The container.
    pub container_id: String,
}

/// Whether `key` could be the start of a container id (lowercase hex, not empty): only such
/// keys are matched as prefixes.
pub fn is_id_prefix(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container subsystem.
#[derive(Debug)]
pub struct Containers {
    store: Arc<Store>,
    images: Arc<Images>,
    dir: PathBuf,
    data_root: PathBuf,
    snapshots_dir: PathBuf,
    shim_binary: PathBuf,
    events: Arc<crate::events::Events>,
    network_hooks: std::sync::OnceLock<Arc<dyn NetworkHooks>>,
    log_hooks: std::sync::OnceLock<Arc<dyn LogHooks>>,
    /// Each container's local log: its rotation and line format.
    local_log: LocalLog,
    /// Containers whose restart policy wanted them started at daemon start before
    /// networking was up.
    deferred_restarts: std::sync::Mutex<Vec<String>>,
}

/// How the shim writes each container's local log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalLog {
    /// Size at which it rotates.
    pub max_bytes: u64,
    /// Files kept, the live one included.
    pub max_files: u32,
    /// Line format.
    pub format: logfile::LogFormat,
}

/// What the container lifecycle asks of log delivery (to logging drivers), which lives
/// above this module. Called on blocking threads.
pub trait LogHooks: Send + Sync + std::fmt::Debug {
    /// Opens the container's log with its driver, before its shim starts: an error (bad
    /// `--log-opt`, unknown driver) fails the start.
    fn open(&self, record: &ContainerRecord) -> std::result::Result<(), String>;
    /// The container's process ended (or never started): deliver what is left, then close.
    fn exited(&self, container_id: &str);
    /// The container (whose process has ended) is being removed: finish delivering, then
    /// remove what its driver stored. Returns once nothing writes into the container's
    /// directory any more. Blocking.
    fn removed(&self, record: &ContainerRecord);
}

/// What the container lifecycle asks of networking, which lives above this module.
pub trait NetworkHooks: Send + Sync + std::fmt::Debug {
    /// Makes and plumbs the container's network namespace; called before its shim starts,
    /// on a blocking thread.
    fn attach(&self, record: &ContainerRecord) -> std::result::Result<(), String>;
    /// Tears its networking down after it ended (idempotent), on a blocking thread.
    fn detach(&self, container_id: &str);
}

impl Containers {
    /// Opens the container store under `data_root`.
    pub fn open(
        data_root: &Path,
        store: Arc<Store>,
        images: Arc<Images>,
        shim_binary: PathBuf,
        events: Arc<crate::events::Events>,
        local_log: LocalLog,
    ) -> Result<Containers> {
        let dir = data_root.join("containers");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            id: String::new(),
            what: "create containers dir",
            source,
        })?;
        Ok(Containers {
            store,
            images,
            dir,
            data_root: data_root.to_owned(),
            snapshots_dir: data_root.join("snapshots"),
            shim_binary,
            events,
            network_hooks: std::sync::OnceLock::new(),
            log_hooks: std::sync::OnceLock::new(),
            local_log,
            deferred_restarts: std::sync::Mutex::default(),
        })
    }

    /// Records a container event: its name, image and labels, and `extra`.
    fn emit(&self, action: &str, record: &ContainerRecord, extra: &[(&str, String)]) {
        let mut attributes = record.config.labels.clone();
        attributes.insert("name".into(), record.name.clone());
        attributes.insert("image".into(), record.image.clone());
        for (key, value) in extra {
            attributes.insert((*key).to_owned(), value.clone());
        }
        self.events
            .emit("container", action, &record.id, attributes);
    }

    /// Records a volume event for each volume the container holds: volumes are mounted
    /// by their driver when the container is made and released when it is removed.
    fn emit_volumes(&self, action: &str, record: &ContainerRecord) {
        for volume in &record.volumes {
            let attributes = [
                ("name", volume.name.as_str()),
                ("driver", &volume.driver),
                ("container", &record.id),
                ("destination", &volume.target),
                (
                    "read_write",
                    if volume.read_only { "false" } else { "true" },
                ),
            ];
            self.events.emit("volume", action, &volume.name, attributes);
        }
    }

    /// Records an event of this container that happened outside this module (`exec_start`,
    /// `exec_die`, `restart`).
    pub fn emit_event(&self, key: &str, action: &str, extra: &[(&str, String)]) {
        if let Ok(record) = self.resolve(key) {
            self.emit(action, &record, extra);
        }
    }

    /// Connects the lifecycle to networking (once, when networking has started).
    pub fn set_network_hooks(&self, hooks: Arc<dyn NetworkHooks>) {
        let _ = self.network_hooks.set(hooks);
    }

    /// Starts the containers [`Self::reconcile`] left for networking (call once the hooks
    /// are set); returns the ones now running. Blocking.
    pub fn start_deferred(&self) -> Vec<String> {
        let ids = std::mem::take(
            &mut *self
                .deferred_restarts
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut live = Vec::new();
        for id in ids {
            match self.start_by_policy(&id) {
                Ok((r, _)) => live.push(r.id),
                Err(e) => tracing::warn!(container = %id, "restart at daemon start failed: {e}"),
            }
        }
        live
    }

    /// Connects the lifecycle to log delivery (once, when the plugins have started).
    pub fn set_log_hooks(&self, hooks: Arc<dyn LogHooks>) {
        let _ = self.log_hooks.set(hooks);
    }

    fn log_exited(&self, id: &str) {
        if let Some(h) = self.log_hooks.get() {
            h.exited(id);
        }
    }

    fn network_detach(&self, id: &str) {
        if let Some(h) = self.network_hooks.get() {
            h.detach(id);
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        shim::bundle_of(&self.container_dir(id))
    }

    fn save(&self, record: &ContainerRecord) -> Result<()> {
        let doc = serde_json::to_string(record).map_err(|e| Error::Invalid(e.to_string()))?;
        let status = serde_json::to_value(record.state.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let r = record.clone();
        // An update never re-creates a container removed meanwhile (a monitor recording
        // an exit races `rm -f`): only `insert` makes rows.
        let updated = self.store.with_conn(move |c| {
            c.execute(
                "UPDATE containers SET name = ?2, state = ?3, doc = ?4 WHERE id = ?1",
                rusqlite::params![r.id, r.name, status, doc],
            )
            .map_err(q("save container"))
        })?;
        if updated == 0 {
            return Err(Error::NotFound(record.id.clone()));
        }
        Ok(())
    }

    fn insert(&self, record: &ContainerRecord) -> Result<()> {
        let doc = serde_json::to_string(record).map_err(|e| Error::Invalid(e.to_string()))?;
        let r = record.clone();
        self.store.with_conn(move |c| {
            // One transaction: a container never exists without owning its volume mounts.
            let tx = c.unchecked_transaction().map_err(q("create container"))?;
            tx.execute(
                "INSERT INTO containers (id, name, image_id, state, created_at, doc) VALUES (?1, ?2, ?3, 'created', strftime('%s','now'), ?4)",
                rusqlite::params![r.id, r.name, r.image_id, doc],
            )
            .map_err(q("create container"))?;
            crate::volume::claim_mounts(&tx, &r.volumes, &r.id)?;
            tx.commit().map_err(q("create container"))
        })?;
        Ok(())
    }

    /// Finds a container by id, unique id prefix, or name.
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord> {
        let k = key.trim_start_matches('/').to_owned();
        // Only ids are hex: another key is no prefix (and `LIKE` would read `%` and `_` in
        // it as wildcards).
        let prefix = if is_id_prefix(&k) { k.as_str() } else { "" };
        let docs: Vec<String> = self.store.with_conn(|c| {
            let mut s = c
                .prepare_cached("SELECT doc FROM containers WHERE id = ?1 OR name = ?1 UNION ALL SELECT doc FROM containers WHERE ?2 != '' AND id LIKE ?2 || '%' AND id != ?1 LIMIT 4")
                .map_err(q("find container"))?;
            s.query_map([&k, prefix], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(q("find container"))
        })?;
        let mut records: Vec<ContainerRecord> = docs
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        // A full id wins over a name spelled like it, as in docker: the gate pins the
        // container a call was authorized for by its id, and no name may take that over.
        let exact = records
            .iter()
            .position(|r| r.id == k)
            .or_else(|| records.iter().position(|r| r.name == k));
        if let Some(exact) = exact {
            return Ok(records.swap_remove(exact));
        }
        match records.len() {
            1 => Ok(records.remove(0)),
            0 => Err(Error::NotFound(key.to_owned())),
            _ => Err(Error::Invalid(format!(
                "container id prefix {key:?} is ambiguous"
            ))),
        }
    }

    /// Whether a container is named exactly `name`. Not [`Self::resolve`]: a name such as
    /// `c4` is also an id prefix, and another container's id starting with it does not make
    /// the name taken.
    fn name_taken(&self, name: &str) -> Result<bool> {
        Ok(self.store.with_conn(|c| {
            c.prepare_cached("SELECT 1 FROM containers WHERE name = ?1")
                .and_then(|mut s| s.exists([name]))
                .map_err(q("find container name"))
        })?)
    }

    /// Every record's text, newest first.
    fn all_docs(&self) -> Result<Vec<String>> {
        Ok(self.store.with_conn(|c| {
            let mut s = c
                .prepare_cached("SELECT doc FROM containers ORDER BY created_at DESC, rowid DESC")
                .map_err(q("list containers"))?;
            s.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(q("list containers"))
        })?)
    }

    fn all(&self) -> Result<Vec<ContainerRecord>> {
        Ok(self
            .all_docs()?
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect())
    }

    fn unique_name(&self) -> Result<String> {
        for _ in 0..50 {
            let r = crate::store::random_hex(2).map_err(|source| Error::Io {
                id: String::new(),
                what: "generate a name",
                source,
            })?;
            let n = u16::from_str_radix(&r, 16).unwrap_or(0) as usize;
            let name = format!(
                "{}_{}",
                ADJECTIVES[n % ADJECTIVES.len()],
                NOUNS[(n / ADJECTIVES.len()) % NOUNS.len()]
            );
            if !self.name_taken(&name)? {
                return Ok(name);
            }
            let suffixed = format!("{name}_{}", n % 1000);
            if !self.name_taken(&suffixed)? {
                return Ok(suffixed);
            }
        }
        Err(Error::Invalid(
            "could not generate a free container name".into(),
        ))
    }

    /// The volumes a container made from `request` needs: its volume mounts, and an
    /// anonymous volume for each `VOLUME` of the image that no mount covers (as docker).
    /// Also checks what `create` would refuse before any volume is made for it.
    pub fn volume_requests(&self, request: &CreateRequest) -> Result<Vec<VolumeRequest>> {
        use berth_api::container::MountKind;
        let mut mounts = request.mounts.clone();
        validate_mounts(&mut mounts)?;
        validate_limits(&mut request.resources.clone())?;
        seccomp_enabled(request)?;
        if let Some(n) = &request.name {
            let n = n.trim_start_matches('/');
            if self.name_taken(n)? {
                return Err(Error::NameInUse(n.to_owned()));
            }
        }
        let image = self.images.resolve(&request.image)?;
        let details = self.images.inspect(&image.id)?;
        let mut out: Vec<VolumeRequest> = mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| VolumeRequest {
                name: m.source.clone(),
                driver: m.volume_driver.clone().or(request.volume_driver.clone()),
                options: m.volume_options.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                no_copy: m.volume_nocopy,
            })
            .collect();
        let covered: std::collections::HashSet<PathBuf> = mounts
            .iter()
            .map(|m| Path::new(&m.target).components().collect())
            .collect();
        for target in &details.config.volumes {
            let path = Path::new(target);
            if !path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                || path.components().count() < 2
            {
                tracing::warn!(image = %request.image, volume = %target, "ignoring an image VOLUME that is not an absolute path below /");
                continue;
            }
            if covered.contains(&path.components().collect::<PathBuf>()) {
                continue;
            }
            out.push(VolumeRequest {
                name: None,
                driver: request.volume_driver.clone(),
                options: Default::default(),
                target: target.clone(),
                read_only: false,
                no_copy: false,
            });
        }
        Ok(out)
    }

    /// `docker create`: resolves the image, writes the bundle, records the container.
    /// `volumes` are the volumes already mounted for it (see [`Self::volume_requests`]).
    pub fn create(
        &self,
        mut request: CreateRequest,
        volumes: Vec<crate::volume::Attached>,
    ) -> Result<ContainerRecord> {
        validate_limits(&mut request.resources)?;
        validate_mounts(&mut request.mounts)?;
        seccomp_enabled(&request)?;
        let image = self.images.resolve(&request.image)?;
        let details = self.images.inspect(&image.id)?;
        let name = match &request.name {
            Some(n) => {
                let n = n.trim_start_matches('/');
                if !valid_name(n) {
                    return Err(Error::Invalid(format!(
                        "invalid container name {n:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
                    )));
                }
                if self.name_taken(n)? {
                    return Err(Error::NameInUse(n.to_owned()));
                }
                n.to_owned()
            }
            None => self.unique_name()?,
        };
        let entrypoint = match &request.entrypoint {
            Some(e) => e.clone(),
            None => details.config.entrypoint.clone().unwrap_or_default(),
        };
        let cmd = match (&request.cmd, &request.entrypoint) {
            (Some(c), _) => c.clone(),
            // Overriding the entrypoint drops the image's cmd, as docker does.
            (None, Some(_)) => Vec::new(),
            (None, None) => details.config.cmd.clone().unwrap_or_default(),
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() {
            return Err(Error::Invalid(
                "no command specified: the image has none and none was given".into(),
            ));
        }
        let policy = parse_restart(request.restart.as_deref().unwrap_or("no"))?;
        if policy != RestartPolicy::No && request.auto_remove {
            return Err(Error::Invalid(
                "conflicting options: --restart and --rm".into(),
            ));
        }
        if let Some(sig) = &request.stop_signal
            && parse_signal(sig).is_none()
        {
            return Err(Error::Invalid(format!("invalid stop signal {sig:?}")));
        }
        if let Err(e) = spec::effective_capabilities(&request.cap_add, &request.cap_drop) {
            return Err(Error::Invalid(e.to_string()));
        }
        for e in &request.env {
            if e.is_empty() || e.starts_with('=') {
                return Err(Error::Invalid(format!(
                    "invalid environment variable {e:?}"
                )));
            }
        }
        let id = crate::store::random_hex(32).map_err(|source| Error::Io {
            id: String::new(),
            what: "generate an id",
            source,
        })?;
        let hostname = request
            .hostname
            .clone()
            .unwrap_or_else(|| id[..12].to_owned());
        let mut env = spec::merge_env(&details.config.env, &request.env);
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        env.push(format!("HOSTNAME={hostname}"));
        if request.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let workdir = request
            .workdir
            .clone()
            .or(details.config.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        if !workdir.starts_with('/') {
            return Err(Error::Invalid(format!(
                "working directory {workdir:?} is not absolute"
            )));
        }
        let record = ContainerRecord {
            id: id.clone(),
            name,
            image: request.image.clone(),
            image_id: image.id.clone(),
            created: now(),
            args,
            env,
            workdir,
            hostname,
            stop_signal: request
                .stop_signal
                .clone()
                .or_else(|| details.config.stop_signal.clone())
                .unwrap_or_else(|| "SIGTERM".into()),
            config: request,
            state: ContainerState {
                status: ContainerStatus::Created,
                pid: None,
                exit_code: None,
                error: None,
                oom_killed: false,
                started_at: None,
                finished_at: None,
                restart_count: 0,
            },
            manually_stopped: false,
            volumes,
        };
        let dir = self.container_dir(&id);
        for sub in ["bundle", "upper", "work", "rootfs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|source| Error::Io {
                id: id.clone(),
                what: "create its directories",
                source,
            })?;
        }
        self.write_bundle(
            &record,
            &image
                .layers
                .iter()
                .rev()
                .map(|l| l.chain_id.clone())
                .collect::<Vec<_>>(),
        )?;
        self.insert(&record)?;
        self.emit("create", &record, &[]);
        self.emit_volumes("mount", &record);
        Ok(record)
    }

    fn write_bundle(&self, record: &ContainerRecord, chains_top_first: &[String]) -> Result<()> {
        let id = &record.id;
        let io = |what: &'static str| {
            let id = id.clone();
            move |source| Error::Io { id, what, source }
        };
        let dir = self.container_dir(id);
        let mut lower_dirs = Vec::new();
        for chain in chains_top_first {
            let snap = self
                .images
                .snapshots
                .get(chain)
                .map_err(|e| Error::Image(e.into()))?
                .ok_or_else(|| {
                    Error::State(format!(
                        "a layer of image {} is missing: pull it again",
                        record.image
                    ))
                })?;
            lower_dirs.push(format!("{}/fs", snap.id));
        }
        std::fs::write(dir.join("hostname"), format!("{}\n", record.hostname))
            .map_err(io("write hostname"))?;
        let mode = crate::network::mode_of(record.config.network.as_deref());
        let add_hosts: Vec<(String, String)> = record
            .config
            .add_hosts
            .iter()
            .filter_map(|h| crate::network::parse_add_host(h).ok())
            .collect();
        // A networked container's files are written again when its namespace is plumbed.
        let hosts = if mode == crate::network::Mode::Host {
            let mut h = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (name, ip) in &add_hosts {
                h.push_str(&format!("{ip}\t{name}\n"));
            }
            h
        } else {
            crate::network::render_hosts(&record.hostname, &[], &add_hosts)
        };
        std::fs::write(dir.join("hosts"), hosts).map_err(io("write hosts"))?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = crate::network::render_resolv(
            &host_resolv,
            &record.config.dns,
            &record.config.dns_search,
            mode == crate::network::Mode::Host,
        );
        std::fs::write(dir.join("resolv.conf"), resolv).map_err(io("write resolv.conf"))?;
        let oci = spec::build(&spec::RunOptions {
            args: record.args.clone(),
            env: record.env.clone(),
            cwd: record.workdir.clone(),
            user: record.config.user.clone().filter(|u| !u.is_empty()),
            hostname: record.hostname.clone(),
            read_only: record.config.read_only,
            no_new_privileges: record.config.no_new_privileges,
            nofile: spec::daemon_nofile(),
            cap_add: record.config.cap_add.clone(),
            cap_drop: record.config.cap_drop.clone(),
            resources: spec::resources(&record.config.resources)
                .map_err(|e| Error::Invalid(format!("runtime spec: {e}")))?,
            cgroups_path: cgroup::path_of(id),
            privileged: record.config.privileged,
            seccomp: seccomp_enabled(&record.config)?,
            init: record.config.init,
            mounts: container_mounts(record)?,
            network: match crate::network::mode_of(record.config.network.as_deref()) {
                crate::network::Mode::None => spec::NetworkNamespace::New,
                crate::network::Mode::Host => spec::NetworkNamespace::Host,
                crate::network::Mode::Network(_) => {
                    spec::NetworkNamespace::Join(crate::network::netns_path(&self.data_root, id))
                }
            },
        })
        .map_err(|e| Error::Invalid(format!("runtime spec: {e}")))?;
        let bundle = self.bundle(id);
        let spec_json =
            serde_json::to_vec_pretty(&oci).map_err(|e| Error::Invalid(e.to_string()))?;
        shim::write_atomic(&bundle.join(files::SPEC), &spec_json)
            .map_err(io("write the runtime spec"))?;
        let config = ShimConfig {
            id: id.clone(),
            snapshots_dir: self.snapshots_dir.clone(),
            lower_dirs,
            upper_dir: dir.join("upper"),
            work_dir: dir.join("work"),
            rootfs: dir.join("rootfs"),
            log_path: dir.join("container.log"),
            log_max_bytes: self.local_log.max_bytes,
            log_max_files: self.local_log.max_files,
            log_format: self.local_log.format,
            tty: record.config.tty,
            open_stdin: record.config.open_stdin,
            etc_files: vec![
                (dir.join("hostname"), "/etc/hostname".into()),
                (dir.join("hosts"), "/etc/hosts".into()),
                (dir.join("resolv.conf"), "/etc/resolv.conf".into()),
            ],
        };
        let shim_json =
            serde_json::to_vec_pretty(&config).map_err(|e| Error::Invalid(e.to_string()))?;
        shim::write_atomic(&bundle.join(files::SHIM), &shim_json)
            .map_err(io("write the shim config"))?;
        Ok(())
    }

    /// Starts the container: spawns its shim and returns once the command has exec'd.
    /// The flag says whether this call started it (false: it was already running).
    pub fn start(&self, key: &str) -> Result<(ContainerRecord, bool)> {
        self.start_with(key, false)
    }

    /// [`Self::start`]; with `await_attach` the shim holds the container's exit until the
    /// first attach (see `container.start`).
    pub fn start_with(&self, key: &str, await_attach: bool) -> Result<(ContainerRecord, bool)> {
        self.start_inner(key, await_attach, false)
    }

    /// [`Self::start`] by a restart policy: a stop the user asks for while it starts wins
    /// (the container is killed again and stays stopped).
    pub fn start_by_policy(&self, key: &str) -> Result<(ContainerRecord, bool)> {
        self.start_inner(key, false, true)
    }

    fn start_inner(
        &self,
        key: &str,
        await_attach: bool,
        by_policy: bool,
    ) -> Result<(ContainerRecord, bool)> {
        let mut record = self.resolve(key)?;
        match record.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => return Ok((record, false)),
            ContainerStatus::Removing => {
                return Err(Error::State(format!(
                    "container {} is being removed",
                    record.name
                )));
            }
            ContainerStatus::Created | ContainerStatus::Exited => {}
        }
        let bundle = self.bundle(&record.id);
        let _ = std::fs::remove_file(bundle.join(files::EXIT));
        // A restart reuses the writable layer but needs a clean overlay work dir.
        let work = self.container_dir(&record.id).join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|source| Error::Io {
            id: record.id.clone(),
            what: "reset its work dir",
            source,
        })?;
        if matches!(
            crate::network::mode_of(record.config.network.as_deref()),
            crate::network::Mode::Network(_)
        ) {
            let hooks = self.network_hooks.get().ok_or_else(|| {
                Error::State(format!(
                    "container {} needs its network, and networking is not started yet",
                    record.name
                ))
            })?;
            let attached =
                tracing::info_span!("container.network_attach").in_scope(|| hooks.attach(&record));
            if let Err(message) = attached {
                return Err(Error::StartFailed {
                    message: format!("network: {message}"),
                    exit_code: 125,
                });
            }
        }
        if let Some(hooks) = self.log_hooks.get()
            && let Err(message) =
                tracing::info_span!("container.log_open").in_scope(|| hooks.open(&record))
        {
            self.network_detach(&record.id);
            return Err(Error::StartFailed {
                message: format!("logging driver: {message}"),
                exit_code: 125,
            });
        }
        let mut command = std::process::Command::new(&self.shim_binary);
        command.arg("start").arg(&bundle);
        if await_attach {
            command.arg("--await-attach");
        }
        let shim_span = tracing::info_span!("container.shim_start", container = %record.id);
        let output = shim_span
            .in_scope(|| command.stdin(std::process::Stdio::null()).output())
            .map_err(|source| {
                self.network_detach(&record.id);
                self.log_exited(&record.id);
                Error::Io {
                    id: record.id.clone(),
                    what: "run berth-shim",
                    source,
                }
            })?;
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let mut lines = stdout.lines();
            let pid: i32 = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
            shim_span.in_scope(|| record_shim_phases(lines.next().unwrap_or("")));
            record.state.status = ContainerStatus::Running;
            let stopped_meanwhile =
                by_policy && self.resolve(&record.id).is_ok_and(|r| r.manually_stopped);
            record.manually_stopped = stopped_meanwhile;
            record.state.pid = Some(pid);
            record.state.exit_code = None;
            record.state.error = None;
            record.state.oom_killed = false;
            record.state.started_at = Some(now());
            record.state.finished_at = None;
            self.save(&record)?;
            self.emit("start", &record, &[]);
            if stopped_meanwhile {
                let _ = self.kill(&record.id, libc::SIGKILL);
            }
            Ok((record, true))
        } else {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            let exit_code = output.status.code().unwrap_or(125);
            record.state.status = ContainerStatus::Exited;
            record.state.pid = None;
            record.state.exit_code = Some(exit_code);
            record.state.error = Some(message.clone());
            record.state.finished_at = Some(now());
            self.save(&record)?;
            self.network_detach(&record.id);
            self.log_exited(&record.id);
            Err(Error::StartFailed { message, exit_code })
        }
    }

    /// Records how a container ended (from its shim) and returns the updated record.
    pub fn mark_exited(&self, id: &str, exit: &ExitRecord) -> Result<ContainerRecord> {
        self.mark_exited_run(id, exit, None)
    }

    /// Like [`Self::mark_exited`], but only for the run that started at `run` (a monitor
    /// of an earlier run must not overwrite a restarted container's state).
    pub fn mark_exited_run(
        &self,
        id: &str,
        exit: &ExitRecord,
        run: Option<&str>,
    ) -> Result<ContainerRecord> {
        let mut record = self.resolve(id)?;
        if let Some(run) = run
            && record.state.started_at.as_deref() != Some(run)
        {
            return Ok(record);
        }
        let was_live = matches!(
            record.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        );
        record.state.status = ContainerStatus::Exited;
        record.state.pid = None;
        record.state.exit_code = Some(exit.exit_code);
        record.state.error = exit.error.clone();
        record.state.oom_killed = exit.oom_killed;
        record.state.finished_at = Some(exit.finished_at.clone());
        self.save(&record)?;
        self.network_detach(&record.id);
        self.log_exited(&record.id);
        // Once per run, whichever of the monitor, `rm -f` or reconcile records it first.
        if was_live {
            if exit.oom_killed {
                self.emit("oom", &record, &[]);
            }
            self.emit("die", &record, &[("exitCode", exit.exit_code.to_string())]);
        }
        Ok(record)
    }

    /// Blocks until the container's shim reports its exit (or returns the recorded one).
    pub fn wait_exit(&self, id: &str) -> Result<ExitRecord> {
        let record = self.resolve(id)?;
        let bundle = self.bundle(&record.id);
        if let Some(exit) = shim::read_exit(&bundle) {
            return Ok(exit);
        }
        if record.state.status != ContainerStatus::Running
            && record.state.status != ContainerStatus::Paused
        {
            return Ok(ExitRecord {
                exit_code: record.state.exit_code.unwrap_or(0),
                signal: None,
                oom_killed: record.state.oom_killed,
                finished_at: record.state.finished_at.clone().unwrap_or_default(),
                error: record.state.error.clone(),
            });
        }
        match shim::call(&bundle, &Request::Wait, None) {
            Ok(Response::Exited(exit)) => Ok(exit),
            // Removed meanwhile (an --rm container): whoever removed it knows how it ended.
            _ if !self.container_dir(&record.id).exists() => Err(Error::NotFound(id.to_owned())),
            // The shim is gone (or going): its exit record is the truth, if it left one.
            _ => Ok(wait_for_exit_file(&bundle).unwrap_or(ExitRecord {
                exit_code: 255,
                signal: None,
                oom_killed: false,
                finished_at: now(),
                error: Some("the container's shim disappeared".into()),
            })),
        }
    }

    /// `docker wait`.
    pub fn wait(&self, id: &str) -> Result<WaitResult> {
        let exit = self.wait_exit(id)?;
        Ok(WaitResult {
            exit_code: exit.exit_code,
            error: exit.error,
            oom_killed: exit.oom_killed,
        })
    }

    /// Marks a container as stopped by its user (restart policies leave it alone).
    fn mark_manually_stopped(&self, key: &str) -> Result<()> {
        let mut record = self.resolve(key)?;
        if !record.manually_stopped {
            record.manually_stopped = true;
            self.save(&record)?;
        }
        Ok(())
    }

    /// `docker kill`: the signal, and no restart by the policy afterwards.
    pub fn kill_by_user(&self, key: &str, signal: i32) -> Result<()> {
        self.mark_manually_stopped(key)?;
        self.kill(key, signal)
    }

    /// Counts a restart by the policy.
    pub fn count_restart(&self, key: &str) -> Result<u32> {
        let mut record = self.resolve(key)?;
        record.state.restart_count += 1;
        self.save(&record)?;
        Ok(record.state.restart_count)
    }

    /// Sends `signal` to the container's process.
    pub fn kill(&self, key: &str, signal: i32) -> Result<()> {
        let record = self.resolve(key)?;
        if record.state.status != ContainerStatus::Running
            && record.state.status != ContainerStatus::Paused
        {
            return Err(Error::State(format!(
                "container {} is not running",
                record.name
            )));
        }
        let sent = shim::call(
            &self.bundle(&record.id),
            &Request::Kill { signal },
            Some(std::time::Duration::from_secs(10)),
        );
        if signal == libc::SIGKILL && record.state.status == ContainerStatus::Paused {
            // Frozen processes only act on the signal once thawed.
            self.unpause(&record.id)?;
        }
        if sent.is_ok() {
            self.emit("kill", &record, &[("signal", signal.to_string())]);
        }
        match sent {
            Ok(Response::Ok | Response::Exited(_)) => Ok(()),
            Ok(Response::Error { message }) => Err(Error::Invalid(message)),
            Ok(Response::Running { .. } | Response::Output { .. }) => Ok(()),
            Err(source) => Err(Error::Io {
                id: record.id,
                what: "reach its shim",
                source,
            }),
        }
    }

    /// `docker stop`: the stop signal, then SIGKILL after `timeout`.
    pub fn stop(&self, key: &str, timeout: std::time::Duration) -> Result<()> {
        let record = self.resolve(key)?;
        // Also between a policy's restarts: a stopped container stays stopped.
        self.mark_manually_stopped(&record.id)?;
        match record.state.status {
            ContainerStatus::Running => {}
            // Frozen processes cannot act on the stop signal.
            ContainerStatus::Paused => self.unpause(&record.id)?,
            _ => return Ok(()),
        }
        let signal = parse_signal(&record.stop_signal).unwrap_or(libc::SIGTERM);
        let _ = self.kill(&record.id, signal);
        let bundle = self.bundle(&record.id);
        match shim::call(
            &bundle,
            &Request::Wait,
            Some(timeout.max(std::time::Duration::from_millis(1))),
        ) {
            Ok(Response::Exited(_)) => {}
            _ => {
                let _ = self.kill(&record.id, libc::SIGKILL);
                let _ = self.wait_exit(&record.id);
            }
        }
        self.emit("stop", &record, &[]);
        Ok(())
    }

    /// `docker rm`: refuses running containers unless `force`.
    pub fn remove(&self, key: &str, force: bool) -> Result<()> {
        let record = self.resolve(key)?;
        if matches!(
            record.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            if !force {
                return Err(Error::State(format!(
                    "cannot remove container {}: it is running (stop it first, or force removal)",
                    record.name
                )));
            }
            let _ = self.kill(&record.id, libc::SIGKILL);
            let exit = self.wait_exit(&record.id)?;
            self.mark_exited(&record.id, &exit)?;
        }
        // Its shim removes the group when the container exits; one that died could not.
        if let Err(e) = cgroup::remove_if_present(&cgroup::path_of(&record.id)) {
            tracing::warn!("container {}: {e}", record.id);
        }
        self.network_detach(&record.id);
        let id = record.id.clone();
        self.store.with_conn(move |c| {
            c.execute("DELETE FROM network_members WHERE container_id = ?1", [&id])
                .map_err(q("remove container"))?;
            c.execute("DELETE FROM containers WHERE id = ?1", [&id])
                .map_err(q("remove container"))
        })?;
        if let Some(h) = self.log_hooks.get() {
            h.removed(&record);
        }
        let dir = self.container_dir(&record.id);
        crate::fsutil::remove_dir_all_if_present(&dir).map_err(|source| Error::Io {
            id: record.id.clone(),
            what: "remove its files",
            source,
        })?;
        self.emit_volumes("unmount", &record);
        self.emit("destroy", &record, &[]);
        Ok(())
    }

    fn running_cgroup(&self, record: &ContainerRecord) -> Result<ContainerCgroup> {
        ensure_running(record)?;
        ContainerCgroup::open(&cgroup::path_of(&record.id)).ok_or_else(|| {
            Error::State(format!(
                "container {} has no control group (started by an older berth?)",
                record.name
            ))
        })
    }

    /// The `berth-shim exec` command line for running `request` in the container.
    pub fn exec_command(
        &self,
        key: &str,
        request: &berth_api::container::ExecRequest,
    ) -> Result<ShimCommand> {
        let record = self.resolve(key)?;
        match record.state.status {
            ContainerStatus::Running => {}
            ContainerStatus::Paused => {
                return Err(Error::State(format!(
                    "container {} is paused: unpause it first",
                    record.name
                )));
            }
            _ => {
                return Err(Error::State(format!(
                    "container {} is not running",
                    record.name
                )));
            }
        }
        if request.cmd.is_empty() {
            return Err(Error::Invalid("exec: no command given".into()));
        }
        if let Some(w) = &request.workdir
            && !w.starts_with('/')
        {
            return Err(Error::Invalid(format!(
                "working directory {w:?} is not absolute"
            )));
        }
        let pid = record
            .state
            .pid
            .ok_or_else(|| Error::State(format!("container {} has no process", record.name)))?;
        let process = crate::runtime::exec::ExecProcess {
            args: request.cmd.clone(),
            env: request.env.clone(),
            cwd: request.workdir.clone(),
            user: request.user.clone().filter(|u| !u.is_empty()),
            tty: request.tty,
        };
        let json = serde_json::to_string(&process).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(ShimCommand {
            program: self.shim_binary.clone(),
            args: vec![
                "exec".into(),
                self.bundle(&record.id).into_os_string(),
                pid.to_string().into(),
                json.into(),
            ],
            container_id: record.id,
        })
    }

    /// The `berth-shim archive-get|archive-put` command line for `path` in the container.
    pub fn archive_command(&self, key: &str, path: &str, put: bool) -> Result<ShimCommand> {
        let record = self.resolve(key)?;
        if !path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "path {path:?} in the container must be absolute"
            )));
        }
        let pid = match record.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => record
                .state
                .pid
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            ContainerStatus::Removing => {
                return Err(Error::State(format!(
                    "container {} is being removed",
                    record.name
                )));
            }
            _ => "-".to_owned(),
        };
        Ok(ShimCommand {
            program: self.shim_binary.clone(),
            args: vec![
                if put { "archive-put" } else { "archive-get" }.into(),
                self.bundle(&record.id).into_os_string(),
                pid.into(),
                path.into(),
            ],
            container_id: record.id,
        })
    }

    /// The record of a running (or paused) container; any other state is refused.
    fn running(&self, key: &str) -> Result<ContainerRecord> {
        let record = self.resolve(key)?;
        ensure_running(&record)?;
        Ok(record)
    }

    /// Connects to a running container's shim for attaching (blocking; the caller reads
    /// the `output` lines that follow).
    pub fn attach(&self, key: &str) -> Result<std::os::unix::net::UnixStream> {
        let record = self.running(key)?;
        let io = |source| Error::Io {
            id: record.id.clone(),
            what: "attach to its shim",
            source,
        };
        let mut stream = shim::connect(&self.bundle(&record.id)).map_err(io)?;
        let mut line = serde_json::to_vec(&Request::Attach).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        std::io::Write::write_all(&mut stream, &line).map_err(io)?;
        Ok(stream)
    }

    /// Sends a request about stdin or the terminal to a running container's shim.
    pub fn stdio_request(&self, key: &str, request: &Request) -> Result<()> {
        let record = self.running(key)?;
        match shim::call(
            &self.bundle(&record.id),
            request,
            Some(std::time::Duration::from_secs(10)),
        ) {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::Error { message }) => Err(Error::State(format!(
                "container {}: {message}",
                record.name
            ))),
            Ok(Response::Exited(_)) => Err(Error::State(format!(
                "container {} is not running",
                record.name
            ))),
            Ok(other) => Err(Error::State(format!(
                "container {}: unexpected answer from its shim: {other:?}",
                record.name
            ))),
            Err(source) => Err(Error::Io {
                id: record.id,
                what: "reach its shim",
                source,
            }),
        }
    }

    /// `docker pause`: freezes every process of the container.
    pub fn pause(&self, key: &str) -> Result<()> {
        let mut record = self.resolve(key)?;
        if record.state.status == ContainerStatus::Paused {
            return Err(Error::State(format!(
                "container {} is already paused",
                record.name
            )));
        }
        self.running_cgroup(&record)?.freeze()?;
        record.state.status = ContainerStatus::Paused;
        self.save(&record)?;
        self.emit("pause", &record, &[]);
        Ok(())
    }

    /// `docker unpause`.
    pub fn unpause(&self, key: &str) -> Result<()> {
        let mut record = self.resolve(key)?;
        if record.state.status != ContainerStatus::Paused {
            return Err(Error::State(format!(
                "container {} is not paused",
                record.name
            )));
        }
        self.running_cgroup(&record)?.thaw()?;
        // It may have exited meanwhile (a SIGKILL sent while frozen): keep that.
        let mut now = self.resolve(&record.id)?;
        if now.state.status == ContainerStatus::Paused {
            now.state.status = ContainerStatus::Running;
            record = now;
            self.save(&record)?;
        }
        self.emit("unpause", &record, &[]);
        Ok(())
    }

    /// `docker top`: the container's processes, `ps -ef` style.
    pub fn top(&self, key: &str) -> Result<berth_api::container::TopResult> {
        let record = self.resolve(key)?;
        let pids = self.running_cgroup(&record)?.processes();
        Ok(crate::host::process_table(&pids))
    }

    /// One `docker stats` sample.
    pub fn stats(&self, key: &str) -> Result<berth_api::container::ContainerStats> {
        let record = self.resolve(key)?;
        let usage = self.running_cgroup(&record)?.usage();
        Ok(berth_api::container::ContainerStats {
            id: record.id.clone(),
            name: record.name.clone(),
            read: now(),
            cpu_nanos: usage.cpu_nanos,
            online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: usage.memory_bytes,
            memory_limit: usage.memory_limit.unwrap_or_else(crate::host::memory_total),
            pids: usage.pids,
            pids_limit: usage.pids_limit,
        })
    }

    /// `docker rename`.
    pub fn rename(&self, key: &str, name: &str) -> Result<()> {
        let mut record = self.resolve(key)?;
        let name = name.trim_start_matches('/');
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        if record.name == name {
            return Ok(());
        }
        if self.name_taken(name)? {
            return Err(Error::NameInUse(name.to_owned()));
        }
        let old_name = std::mem::replace(&mut record.name, name.to_owned());
        self.save(&record)?;
        self.emit("rename", &record, &[("oldName", old_name)]);
        Ok(())
    }

    /// `docker container prune`: removes every container that is not running.
    pub fn prune(&self) -> Result<berth_api::container::ContainerPruneReport> {
        let mut report = berth_api::container::ContainerPruneReport::default();
        for record in self.all()? {
            if matches!(
                record.state.status,
                ContainerStatus::Created | ContainerStatus::Exited
            ) {
                let bytes = crate::fsutil::disk_usage(&self.container_dir(&record.id));
                match self.remove(&record.id, false) {
                    Ok(()) => {
                        report.containers_deleted.push(record.id);
                        report.space_reclaimed += bytes;
                    }
                    // Started or removed meanwhile: not prunable after all.
                    Err(Error::State(_) | Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }

    /// The `stop_timeout` a container was created with, if any.
    pub fn stop_timeout(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.resolve(key)?.config.stop_timeout)
    }

    /// Summaries, newest first.
    pub fn list(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        Ok(self
            .all_docs()?
            .iter()
            .filter_map(|d| serde_json::from_str::<ListedRecord>(d).ok())
            .filter(|r| {
                all || matches!(
                    r.state.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
            })
            .map(ListedRecord::into_summary)
            .collect())
    }

    /// Everything about one container.
    pub fn inspect(&self, key: &str) -> Result<ContainerDetails> {
        let r = self.resolve(key)?;
        let dir = self.container_dir(&r.id);
        Ok(ContainerDetails {
            summary: summary(&r),
            config: r.config.clone(),
            env: r.env.clone(),
            workdir: r.workdir.clone(),
            hostname: r.hostname.clone(),
            log_path: dir.join("container.log").display().to_string(),
            bundle: self.bundle(&r.id).display().to_string(),
            mounts: mount_points(&r),
            network_settings: Default::default(),
            log_delivery: None,
        })
    }

    /// The log file of a container.
    pub fn log_path(&self, key: &str) -> Result<(ContainerRecord, PathBuf)> {
        let r = self.resolve(key)?;
        let path = self.container_dir(&r.id).join("container.log");
        Ok((r, path))
    }

    /// Bundle directory of a container.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.bundle(id)
    }

    /// At daemon start: containers recorded as running whose shim is gone are marked
    /// exited (with the exit the shim recorded, if any), and those whose restart policy
    /// says so (`always`, `unless-stopped` not stopped by the user) are started again.
    /// Returns the ids running afterwards.
    pub fn reconcile(&self) -> Result<Vec<String>> {
        let mut live = self.reattach()?;
        for record in self.all()? {
            let eligible = match record.restart_policy() {
                RestartPolicy::Always => true,
                RestartPolicy::UnlessStopped => !record.manually_stopped,
                _ => false,
            };
            if eligible
                && record.state.status == ContainerStatus::Exited
                && record.state.error.is_none()
            {
                if self.network_hooks.get().is_none()
                    && matches!(
                        crate::network::mode_of(record.config.network.as_deref()),
                        crate::network::Mode::Network(_)
                    )
                {
                    // Its network comes up with berthd's networking: restarted then.
                    self.deferred_restarts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(record.id.clone());
                    continue;
                }
                match self.start_by_policy(&record.id) {
                    Ok((r, _)) => live.push(r.id),
                    Err(e) => {
                        tracing::warn!(container = %record.name, "restart at daemon start failed: {e}")
                    }
                }
            }
        }
        Ok(live)
    }

    fn reattach(&self) -> Result<Vec<String>> {
        let mut live = Vec::new();
        for record in self.all()? {
            if !matches!(
                record.state.status,
                ContainerStatus::Running | ContainerStatus::Paused
            ) {
                continue;
            }
            let bundle = self.bundle(&record.id);
            match shim::call(
                &bundle,
                &Request::State,
                Some(std::time::Duration::from_secs(5)),
            ) {
                Ok(Response::Running { .. }) => live.push(record.id.clone()),
                Ok(Response::Exited(exit)) => {
                    self.mark_exited(&record.id, &exit)?;
                }
                _ => {
                    let exit = shim::read_exit(&bundle).unwrap_or(ExitRecord {
                        exit_code: 255,
                        signal: None,
                        oom_killed: false,
                        finished_at: now(),
                        error: Some(
                            "the container's shim disappeared while berthd was down".into(),
                        ),
                    });
                    self.mark_exited(&record.id, &exit)?;
                }
            }
        }
        Ok(live)
    }
}

/// A shim that stopped answering may still be writing its exit record: give it a moment.
fn wait_for_exit_file(bundle: &Path) -> Option<ExitRecord> {
    for _ in 0..100 {
        if let Some(exit) = shim::read_exit(bundle) {
            return Some(exit);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// The fields of a record that a list shows. A list parses only these: the creation options
/// but their labels are most of a record's text, and `ps` has no use for them.
#[derive(Deserialize)]
struct ListedRecord {
    id: String,
    name: String,
    image: String,
    image_id: String,
    created: String,
    config: ListedConfig,
    args: Vec<String>,
    state: ContainerState,
}

#[derive(Deserialize)]
struct ListedConfig {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl ListedRecord {
    /// The same summary as [`summary`] gives of the whole record.
    fn into_summary(self) -> ContainerSummary {
        ContainerSummary {
            id: self.id,
            name: self.name,
            image: self.image,
            image_id: self.image_id,
            command: self.args,
            created: self.created,
            state: self.state,
            labels: self.config.labels,
        }
    }
}

fn summary(r: &ContainerRecord) -> ContainerSummary {
    ContainerSummary {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        command: r.args.clone(),
        created: r.created.clone(),
        state: r.state.clone(),
        labels: r
            .config
            .labels
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    }
}

/// `SIGTERM`, `TERM`, `15` → 15.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The shim's start phases as spans of the current one, from its second line of output: six
/// times in ns since the epoch (start, before the clone, after it, cgroup placed, root
/// filesystem mounted, exec done). The init mounts while the shim places it in its cgroup,
/// so those two overlap; exec is from the later of them to the command running.
fn record_shim_phases(line: &str) {
    let times: Vec<std::time::SystemTime> = line
        .split_whitespace()
        .filter_map(|t| t.parse::<u64>().ok())
        .map(|ns| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
        .collect();
    let [began, grouping, before_clone, cloned, mounted, execed] = times.as_slice() else {
        return;
    };
    crate::telemetry::record_phases(&[
        ("shim.spec", *began, *grouping),
        ("shim.cgroup", *grouping, *before_clone),
        ("shim.clone", *before_clone, *cloned),
        ("shim.mounts", *cloned, *mounted),
        ("shim.exec", *mounted, *execed),
    ]);
}

/// Filters and trims log records as `docker logs` does.
pub fn select_logs(records: Vec<logfile::Record>, request: &LogsRequest) -> Vec<LogLine> {
    let since = request
        .since
        .as_deref()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok());
    let until = request
        .until
        .as_deref()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok());
    let mut lines: Vec<LogLine> = records
        .into_iter()
        .filter(|r| {
            let t = humantime::parse_rfc3339_weak(&r.time).ok();
            since.is_none_or(|s| t.is_some_and(|t| t >= s))
                && until.is_none_or(|u| t.is_some_and(|t| t < u))
        })
        .map(|r| LogLine {
            stream: serde_json::to_value(r.stream)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            time: r.time,
            log: r.log,
        })
        .collect();
    if let Some(n) = request.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_names() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x") && !valid_name("a b") && !valid_name(""));
    }

    #[test]
    fn a_listed_record_gives_the_summary_of_the_whole_record() {
        let config: CreateRequest = serde_json::from_value(serde_json::json!({
            "image": "busybox",
            "name": "web",
            "cmd": ["sh", "-c", "sleep 1"],
            "env": ["A=1"],
            "labels": {"team": "blue", "tier": "front"},
        }))
        .unwrap();
        let record = ContainerRecord {
            id: "ab".repeat(32),
            name: "web".into(),
            image: "busybox".into(),
            image_id: format!("sha256:{}", "cd".repeat(32)),
            created: "2026-12-06T01:02:03.000000004Z".into(),
            config,
            args: vec!["sh".into(), "-c".into(), "sleep 1".into()],
            env: vec!["A=1".into()],
            workdir: "/".into(),
            hostname: "web".into(),
            stop_signal: "SIGTERM".into(),
            state: ContainerState {
                status: ContainerStatus::Exited,
                pid: None,
                exit_code: Some(3),
                error: Some("boom".into()),
                oom_killed: true,
                started_at: Some("2026-12-06T01:02:04Z".into()),
                finished_at: Some("2026-12-06T01:02:05Z".into()),
                restart_count: 2,
            },
            manually_stopped: true,
            volumes: Vec::new(),
        };
        let doc = serde_json::to_string(&record).unwrap();
        let listed: ListedRecord = serde_json::from_str(&doc).unwrap();
        assert_eq!(listed.into_summary(), summary(&record));
    }
}
