//! A container's control group: made by the shim before the container runs (limits from
//! the spec's `linux.resources`), joined by the container's init, read for stats and `top`,
//! frozen for `pause`, and removed once the container has exited. cgroups-rs does the v1
//! and v2 file work; this module decides what docker's options mean in each.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use berth_api::ErrorKind;
use cgroups_rs::cgroup::Cgroup;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::freezer::FreezerController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, Hierarchy, MaxValue};
use oci_spec::runtime::LinuxResources;

/// The cgroup every container's group lives under (`/sys/fs/cgroup/<controller>/berth/<id>`
/// on v1, `/sys/fs/cgroup/berth/<id>` on v2), like docker's `cgroupfs` driver.
pub const PARENT: &str = "berth";

/// Control group failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The group could not be made.
    #[error("create cgroup {path}: {message}")]
    Create {
        /// The cgroup path.
        path: String,
        /// Why.
        message: String,
    },
    /// A limit could not be applied (out of range for this kernel, or a missing controller).
    #[error("cgroup {path}: cannot set {what}: {message}")]
    Limit {
        /// The cgroup path.
        path: String,
        /// Which limit.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// Another operation on the group failed.
    #[error("cgroup {path}: cannot {what}: {message}")]
    Operation {
        /// The cgroup path.
        path: String,
        /// What.
        what: &'static str,
        /// Why.
        message: String,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Limit { .. } => ErrorKind::InvalidArgument,
            Error::Create { .. } | Error::Operation { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// The cgroup path (relative to each hierarchy's root) of a container.
pub fn path_of(container_id: &str) -> String {
    format!("/{PARENT}/{container_id}")
}

/// Usage figures for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (None: unlimited).
    pub memory_limit: Option<u64>,
    /// CPU time used, nanoseconds.
    pub cpu_nanos: u64,
    /// Processes and threads in the group.
    pub pids: u64,
    /// The pids limit (None: unlimited).
    pub pids_limit: Option<u64>,
}

/// One container's control group.
pub struct ContainerCgroup {
    group: Cgroup,
}

impl std::fmt::Debug for ContainerCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCgroup")
            .field("path", &self.group.path())
            .field("v2", &self.group.v2())
            .finish()
    }
}

impl ContainerCgroup {
    /// Creates the group `path` (see [`path_of`]) on this host and applies `resources`.
    pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<Self> {
        Self::create_in(
            cgroups_rs::hierarchies::auto(),
            path.trim_start_matches('/'),
            resources,
        )
    }

    /// Creates the group `path` in `hierarchy` and applies `resources`; on failure nothing
    /// is left behind.
    pub fn create_in(
        hierarchy: Box<dyn Hierarchy>,
        path: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self> {
        let group = Cgroup::load(hierarchy, path);
        group.create().map_err(|e| Error::Create {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // cgroups-rs only logs when a v1 controller directory cannot be made.
        if !group.exists() {
            return Err(Error::Create {
                path: path.to_owned(),
                message: "no controller directory could be made".to_owned(),
            });
        }
        let made = Self { group };
        if let Some(resources) = resources
            && let Err(e) = made.apply(resources)
        {
            let _ = made.remove();
            return Err(e);
        }
        Ok(made)
    }

    /// Opens the existing group `path` (None when there is none).
    pub fn open(path: &str) -> Option<Self> {
        let group = Cgroup::load(
            cgroups_rs::hierarchies::auto(),
            path.trim_start_matches('/'),
        );
        group.exists().then_some(Self { group })
    }

    fn path(&self) -> String {
        self.group.path().to_owned()
    }

    fn limit_error(&self, what: &'static str) -> impl FnOnce(cgroups_rs::error::Error) -> Error {
        let path = self.path();
        move |e| Error::Limit {
            path,
            what,
            message: describe(&e),
        }
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        let v2 = self.group.v2();
        if let Some(memory) = resources.memory() {
            let mem: &MemController = self.controller("memory", "memory limits")?;
            if let Some(limit) = memory.limit() {
                mem.set_limit(limit)
                    .map_err(self.limit_error("the memory limit"))?;
            }
            if let Some(swap) = memory.swap() {
                // OCI (and docker) count swap together with memory; v2 limits swap alone.
                let value = match (v2, swap, memory.limit()) {
                    (true, -1, _) => -1,
                    (true, total, Some(limit)) if limit > 0 => (total - limit).max(0),
                    (_, total, _) => total,
                };
                let file = if v2 {
                    "memory.swap.max"
                } else {
                    "memory.memsw.limit_in_bytes"
                };
                if mem_file_exists(mem, file) {
                    mem.set_memswap_limit(value)
                        .map_err(self.limit_error("the memory+swap limit"))?;
                }
            }
        }
        if let Some(cpu) = resources.cpu() {
            let needs_cpu = cpu.shares().is_some() || cpu.quota().is_some();
            if needs_cpu {
                let ctl: &CpuController = self.controller("cpu", "CPU limits")?;
                if let Some(shares) = cpu.shares() {
                    let value = if v2 { shares_to_weight(shares) } else { shares };
                    ctl.set_shares(value)
                        .map_err(self.limit_error("the CPU shares"))?;
                }
                if let Some(quota) = cpu.quota() {
                    ctl.set_cfs_quota_and_period(Some(quota), cpu.period())
                        .map_err(self.limit_error("the CPU quota"))?;
                }
            }
            if let Some(cpus) = cpu.cpus() {
                let ctl: &CpuSetController = self.controller("cpuset", "--cpuset-cpus")?;
                ctl.set_cpus(cpus)
                    .map_err(self.limit_error("the CPU set"))?;
            }
        }
        if let Some(pids) = resources.pids() {
            let ctl: &PidController = self.controller("pids", "the pids limit")?;
            let limit = pids.limit();
            let value = if limit <= 0 {
                MaxValue::Max
            } else {
                MaxValue::Value(limit)
            };
            ctl.set_pid_max(value)
                .map_err(self.limit_error("the pids limit"))?;
        }
        Ok(())
    }

    fn controller<'a, T>(&'a self, name: &str, needed_for: &'static str) -> Result<&'a T>
    where
        &'a T: From<&'a cgroups_rs::Subsystem>,
        T: cgroups_rs::Controller + cgroups_rs::ControllIdentifier,
    {
        self.group.controller_of::<T>().ok_or_else(|| Error::Limit {
            path: self.path(),
            what: needed_for,
            message: format!("this host has no {name} cgroup controller"),
        })
    }

    /// How a new process enters this group without the kernel's costly move of a whole
    /// process: see [`Entry`].
    pub(crate) fn entry(&self) -> Result<Entry> {
        if !self.group.v2() {
            return Ok(Entry::JoinTasks(self.task_files()));
        }
        let dir = self
            .group
            .subsystems()
            .first()
            .map(|s| s.to_controller().path().to_path_buf())
            .ok_or_else(|| Error::Operation {
                path: self.path(),
                what: "open the group",
                message: "no cgroup v2 directory".to_owned(),
            })?;
        let opened = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(|e| Error::Operation {
                path: self.path(),
                what: "open the group",
                message: e.to_string(),
            })?;
        Ok(Entry::CloneInto {
            procs: dir.join("cgroup.procs"),
            dir: opened.into(),
        })
    }

    /// The v1 `tasks` file of each controller.
    fn task_files(&self) -> Vec<std::path::PathBuf> {
        self.group
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().join("tasks"))
            .collect()
    }

    /// Moves the calling process into the group (`exec` does so before it forks the
    /// command): cheaply on v1 when it is single-threaded, as a whole process otherwise.
    pub(crate) fn join_self(&self) -> Result<()> {
        let single_threaded = std::fs::read_dir("/proc/self/task").is_ok_and(|t| t.count() == 1);
        if self.group.v2() || !single_threaded {
            return self.add_process(u64::from(std::process::id()));
        }
        join_tasks(&self.task_files()).map_err(|e| Error::Operation {
            path: self.path(),
            what: "join the group",
            message: e.to_string(),
        })
    }

    /// Moves process `pid` (and its threads) into every controller of the group.
    pub fn add_process(&self, pid: u64) -> Result<()> {
        self.group
            .add_task_by_tgid(CgroupPid::from(pid))
            .map_err(|e| Error::Operation {
                path: self.path(),
                what: "add the container process",
                message: describe(&e),
            })
    }

    /// Whether the kernel's OOM killer has killed a process of this group.
    pub fn oom_killed(&self) -> bool {
        let Some(mem) = self.group.controller_of::<MemController>() else {
            return false;
        };
        let file = if self.group.v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let dir = cgroups_rs::Controller::path(mem);
        std::fs::read_to_string(dir.join(file))
            .ok()
            .is_some_and(|text| oom_kill_count(&text) > 0)
    }

    /// Freezes every process of the group (`pause`).
    pub fn freeze(&self) -> Result<()> {
        self.freezer()?.freeze().map_err(|e| Error::Operation {
            path: self.path(),
            what: "freeze",
            message: describe(&e),
        })
    }

    /// Thaws the group (`unpause`).
    pub fn thaw(&self) -> Result<()> {
        self.freezer()?.thaw().map_err(|e| Error::Operation {
            path: self.path(),
            what: "thaw",
            message: describe(&e),
        })
    }

    /// Whether the group is frozen (or freezing).
    pub fn is_frozen(&self) -> bool {
        self.group
            .controller_of::<FreezerController>()
            .and_then(|f| f.state().ok())
            .is_some_and(|s| !matches!(s, cgroups_rs::freezer::FreezerState::Thawed))
    }

    fn freezer(&self) -> Result<&FreezerController> {
        self.group
            .controller_of::<FreezerController>()
            .ok_or_else(|| Error::Operation {
                path: self.path(),
                what: "pause",
                message: "this host has no freezer cgroup controller".to_owned(),
            })
    }

    /// SIGKILLs every process of the group. They are frozen while listed and signalled, so
    /// none can exit and leave its pid to an unrelated process meanwhile; thawed after, so
    /// they act on the signal. Without a freezer controller they are signalled as they are.
    fn kill_all(&self) {
        if self.processes().is_empty() {
            return;
        }
        let frozen = self.freeze().is_ok();
        for pid in self.processes() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if frozen || self.is_frozen() {
            let _ = self.thaw();
        }
    }

    /// Host pids of the group's processes, sorted.
    pub fn processes(&self) -> Vec<u64> {
        let mut pids: Vec<u64> = self.group.procs().into_iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Memory, CPU and pids figures.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        let v2 = self.group.v2();
        if let Some(mem) = self.group.controller_of::<MemController>() {
            let dir = cgroups_rs::Controller::path(mem);
            let (current, max) = if v2 {
                ("memory.current", "memory.max")
            } else {
                ("memory.usage_in_bytes", "memory.limit_in_bytes")
            };
            usage.memory_bytes = read_number(&dir.join(current)).unwrap_or(0);
            // v1 reports "no limit" as a huge page-rounded number.
            usage.memory_limit = read_number(&dir.join(max)).filter(|&n| n < (1 << 62));
        }
        if v2 {
            if let Some(cpu) = self.group.controller_of::<CpuController>() {
                usage.cpu_nanos = cpu
                    .cpu()
                    .stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .map_or(0, |us| us * 1000);
            }
        } else if let Some(acct) = self.group.controller_of::<CpuAcctController>() {
            usage.cpu_nanos = acct.cpuacct().usage;
        }
        if let Some(pids) = self.group.controller_of::<PidController>() {
            usage.pids = pids.get_pid_current().unwrap_or(0);
            usage.pids_limit = match pids.get_pid_max() {
                Ok(MaxValue::Value(n)) if n > 0 => Some(n as u64),
                _ => None,
            };
        }
        usage
    }

    /// Removes the group. A group whose last processes are still exiting answers EBUSY for
    /// a moment: retried for up to about two seconds.
    pub fn remove(&self) -> Result<()> {
        let mut delay = Duration::from_millis(2);
        let mut waited = Duration::ZERO;
        loop {
            match self.group.delete() {
                Ok(()) => break,
                Err(e) if waited < Duration::from_secs(2) && is_busy(&e) => {
                    std::thread::sleep(delay);
                    waited += delay;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(Error::Operation {
                        path: self.path(),
                        what: "remove the group",
                        message: describe(&e),
                    });
                }
            }
        }
        Ok(())
    }
}

/// How a container's first process enters its group. Moving a whole process (a pid written
/// to `cgroup.procs`) takes the kernel's global threadgroup lock for writing, and taking it
/// waits for an RCU grace period: 6–25 ms on an idle 2-CPU host, the largest part of a
/// container's start. Both ways here avoid that lock.
#[derive(Debug)]
pub(crate) enum Entry {
    /// cgroup v1: the `tasks` file of each controller. A single-threaded process writing
    /// `0` there moves only itself, which the kernel does without the global lock.
    JoinTasks(Vec<std::path::PathBuf>),
    /// cgroup v2: the group's directory, for `clone3(CLONE_INTO_CGROUP)`, which creates the
    /// process in the group (the lock is taken for reading only, as by any fork); and its
    /// `cgroup.procs`, for a kernel without clone3 (before 5.7).
    CloneInto {
        /// The group's directory, open.
        dir: std::os::fd::OwnedFd,
        /// Its `cgroup.procs` file.
        procs: std::path::PathBuf,
    },
}

/// Writes `0` to each of `files`: the v1 `tasks` files of [`Entry::JoinTasks`] (which
/// moves the calling thread: the caller must be its process's only thread), or a v2
/// `cgroup.procs` (which moves the whole calling process).
pub(crate) fn join_tasks(files: &[std::path::PathBuf]) -> std::io::Result<()> {
    use std::io::Write as _;
    for file in files {
        std::fs::File::options()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)
            .and_then(|mut f| f.write_all(b"0"))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    }
    Ok(())
}

/// Removes the group `path` if it still exists (a shim that died could not), killing first
/// whatever still runs in it: with its shim gone, nothing supervises those processes, and
/// they would outlive their container.
pub fn remove_if_present(path: &str) -> Result<()> {
    match ContainerCgroup::open(path) {
        Some(group) => {
            group.kill_all();
            group.remove()
        }
        None => Ok(()),
    }
}

fn mem_file_exists(mem: &MemController, file: &str) -> bool {
    cgroups_rs::Controller::path(mem).join(file).exists()
}

fn is_busy(e: &cgroups_rs::error::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
        == Some(libc::EBUSY)
}

fn describe(e: &cgroups_rs::error::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads the `oom_kill N` line of v1's `memory.oom_control` or v2's `memory.events`.
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// v1 `cpu.shares` (2..262144, default 1024) to v2 `cpu.weight` (1..10000, default 100),
/// the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgroups_rs::Subsystem;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    use std::path::PathBuf;

    /// A cgroup v2 hierarchy rooted in a temporary directory: what the kernel would show,
    /// as plain files.
    #[derive(Debug)]
    struct FakeV2 {
        root: PathBuf,
    }

    impl Hierarchy for FakeV2 {
        fn subsystems(&self) -> Vec<Subsystem> {
            let r = || self.root.clone();
            vec![
                Subsystem::Cpu(CpuController::new(r(), true)),
                Subsystem::CpuSet(CpuSetController::new(r(), true)),
                Subsystem::Mem(MemController::new(r(), true)),
                Subsystem::Pid(PidController::new(r(), true)),
                Subsystem::Freezer(FreezerController::new(r(), true)),
            ]
        }
        fn root(&self) -> PathBuf {
            self.root.clone()
        }
        fn root_control_group(&self) -> Cgroup {
            Cgroup::load(Box::new(FakeV2 { root: self.root() }), "")
        }
        fn parent_control_group(&self, path: &str) -> Cgroup {
            let parent = Path::new(path).parent().unwrap_or(Path::new(""));
            Cgroup::load(Box::new(FakeV2 { root: self.root() }), parent)
        }
        fn v2(&self) -> bool {
            true
        }
    }

    fn fake_v2() -> (tempfile::TempDir, Box<FakeV2>) {
        let dir = tempfile::tempdir().unwrap();
        // The files the kernel puts in every new group that the limits read back.
        let group = dir.path().join("berth/c1");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(group.join("memory.swap.max"), "max\n").unwrap();
        let root = dir.path().to_path_buf();
        (dir, Box::new(FakeV2 { root }))
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join("berth/c1").join(file))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn v2_limits_use_v2_files_and_units() {
        let (dir, hierarchy) = fake_v2();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256 * 1024 * 1024)
                    .swap(512 * 1024 * 1024)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(150_000i64)
                    .period(100_000u64)
                    .cpus("0-1")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(64).build().unwrap())
            .build()
            .unwrap();
        let group = ContainerCgroup::create_in(hierarchy, "berth/c1", Some(&resources)).unwrap();
        assert!(group.group.v2());
        assert_eq!(read(dir.path(), "memory.max"), "268435456");
        // v2 limits swap alone: 512 MiB total minus 256 MiB of memory.
        assert_eq!(read(dir.path(), "memory.swap.max"), "268435456");
        assert_eq!(read(dir.path(), "cpu.max"), "150000 100000");
        assert_eq!(
            read(dir.path(), "cpu.weight"),
            shares_to_weight(512).to_string()
        );
        assert_eq!(read(dir.path(), "cpuset.cpus"), "0-1");
        assert_eq!(read(dir.path(), "pids.max"), "64");

        group.freeze().unwrap();
        assert_eq!(read(dir.path(), "cgroup.freeze"), "1");
        assert!(group.is_frozen());
        group.thaw().unwrap();
        assert_eq!(read(dir.path(), "cgroup.freeze"), "0");
    }

    #[test]
    fn v2_unlimited_swap_and_pids() {
        let (dir, hierarchy) = fake_v2();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 * 1024 * 1024)
                    .swap(-1)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
            .build()
            .unwrap();
        ContainerCgroup::create_in(hierarchy, "berth/c1", Some(&resources)).unwrap();
        assert_eq!(read(dir.path(), "memory.swap.max"), "max");
        assert_eq!(read(dir.path(), "pids.max"), "max");
    }

    #[test]
    fn v2_oom_kills_are_read_from_memory_events() {
        let (dir, hierarchy) = fake_v2();
        let group = ContainerCgroup::create_in(hierarchy, "berth/c1", None).unwrap();
        let events = dir.path().join("berth/c1/memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n").unwrap();
        assert!(!group.oom_killed());
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(group.oom_killed());
    }

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 100);
    }

    #[test]
    fn oom_kill_lines() {
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
