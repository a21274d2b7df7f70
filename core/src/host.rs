//! Facts about the host that do not change while berthd runs: kernel, OS, CPUs, memory,
//! cgroup hierarchy, overlayfs and security facilities. Read once at start-up (blocking,
//! before the API serves), then shared. Also what berth's long-lived processes ask of the
//! host's allocator.

use std::path::Path;

use berth_api::system::CgroupInfo;

/// Returns the free pages of every malloc arena to the kernel. glibc keeps freed memory for
/// reuse; after a burst that will not come again (berthd's start-up compiling plugins on
/// worker threads, a shim's set-up) that memory is only weight. Blocking (walks the heap).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// What berthd knows about its host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel_version: String,
    /// PRETTY_NAME from os-release.
    pub operating_system: String,
    /// CPU architecture.
    pub architecture: String,
    /// Online CPUs.
    pub ncpu: u32,
    /// Total memory in bytes.
    pub mem_total: u64,
    /// cgroup hierarchy.
    pub cgroup: CgroupInfo,
    /// Whether overlayfs is available.
    pub overlay_supported: bool,
    /// Kernel security facilities present.
    pub security_options: Vec<String>,
}

impl HostFacts {
    /// Reads the facts from `/proc`, `/sys` and `/etc`. Blocking.
    pub fn probe() -> HostFacts {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        HostFacts {
            hostname: field(|u| u.nodename()),
            kernel_version: field(|u| u.release()),
            operating_system: read("/etc/os-release")
                .and_then(|t| os_release_pretty_name(&t))
                .unwrap_or_else(|| "Linux".to_owned()),
            architecture: std::env::consts::ARCH.to_owned(),
            ncpu: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            mem_total: read("/proc/meminfo")
                .and_then(|t| meminfo_total(&t))
                .unwrap_or(0),
            cgroup: probe_cgroup(Path::new("/sys/fs/cgroup")),
            overlay_supported: read("/proc/filesystems").is_some_and(|t| {
                t.lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
            }),
            security_options: probe_security(),
        }
    }
}

/// Total memory in bytes (0 when unknown).
pub fn memory_total() -> u64 {
    read("/proc/meminfo")
        .and_then(|t| meminfo_total(&t))
        .unwrap_or(0)
}

/// `ps -ef` columns for the given host pids (processes that vanished are skipped).
pub fn process_table(pids: &[u64]) -> berth_api::container::TopResult {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let uptime: f64 = read("/proc/uptime")
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - uptime;
    let mut processes = Vec::new();
    for pid in pids {
        let Some(stat) = read(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Field numbers from proc(5), minus the three before and including `comm`.
        let (ppid, tty, utime, stime, start) = (num(1), num(4), num(11), num(12), num(19));
        let cpu_secs = (utime + stime) / ticks;
        let started = start as f64 / ticks as f64;
        let running_for = (uptime - started).max(0.001);
        let percent = ((utime + stime) as f64 / ticks as f64 / running_for * 100.0) as u64;
        let uid = read(&format!("/proc/{pid}/status"))
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_owned))
            })
            .unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = if cmdline.is_empty() {
            format!("[{comm}]")
        } else {
            String::from_utf8_lossy(cmdline.strip_suffix(b"\0").unwrap_or(&cmdline))
                .replace('\0', " ")
        };
        let start_time = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64((boot + started).max(0.0)),
        )
        .to_string();
        // `ps -ef` shows the time of day for processes started today.
        let start_time = start_time.get(11..16).unwrap_or(&start_time).to_owned();
        let tty = if tty == 0 {
            "?".to_owned()
        } else {
            // major 136..143 are the pseudo-terminals.
            let (major, minor) = ((tty >> 8) & 0xfff, (tty & 0xff) | ((tty >> 12) & 0xfff00));
            if (136..=143).contains(&major) {
                format!("pts/{}", (major - 136) * 256 + minor)
            } else {
                format!("{major}:{minor}")
            }
        };
        processes.push(vec![
            uid,
            pid.to_string(),
            ppid.to_string(),
            percent.to_string(),
            start_time,
            tty,
            format!(
                "{:02}:{:02}:{:02}",
                cpu_secs / 3600,
                cpu_secs / 60 % 60,
                cpu_secs % 60
            ),
            command,
        ]);
    }
    berth_api::container::TopResult {
        titles: ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .map(String::from)
            .to_vec(),
        processes,
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn os_release_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim().trim_matches('"').to_owned())
    })
}

fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Decides v1 or v2 the way runc does: the unified hierarchy counts only when it is mounted
/// at the cgroup root itself (hybrid hosts have a cgroup2 mount under `unified/` but manage
/// controllers through v1).
pub fn probe_cgroup(root: &Path) -> CgroupInfo {
    let is_v2 = nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    let controllers = if is_v2 {
        std::fs::read_to_string(root.join("cgroup.controllers"))
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    } else {
        read("/proc/cgroups")
            .map(|t| v1_controllers(&t))
            .unwrap_or_default()
    };
    CgroupInfo {
        version: if is_v2 { 2 } else { 1 },
        driver: "cgroupfs".to_owned(),
        controllers,
    }
}

/// Enabled v1 controllers attached to a hierarchy, from `/proc/cgroups`.
fn v1_controllers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [name, hierarchy, _, "1"] if *hierarchy != "0" => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect()
}

fn probe_security() -> Vec<String> {
    let mut found = Vec::new();
    if read("/proc/self/status").is_some_and(|t| t.lines().any(|l| l.starts_with("Seccomp:"))) {
        found.push("seccomp".to_owned());
    }
    if read("/sys/module/apparmor/parameters/enabled").is_some_and(|t| t.trim() == "Y") {
        found.push("apparmor".to_owned());
    }
    if Path::new("/sys/fs/selinux/enforce").exists() {
        found.push("selinux".to_owned());
    }
    if Path::new("/proc/self/ns/user").exists()
        && read("/proc/sys/user/max_user_namespaces")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .is_none_or(|n| n > 0)
    {
        found.push("userns".to_owned());
    }
    if Path::new("/proc/self/ns/cgroup").exists() {
        found.push("cgroupns".to_owned());
    }
    // PR_SET_NO_NEW_PRIVS exists on every kernel berth can run on (>= 3.5).
    found.push("no-new-privileges".to_owned());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release_and_meminfo() {
        let os = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_release_pretty_name(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            meminfo_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n"),
            Some(24_567_890 * 1024)
        );
        assert_eq!(meminfo_total("nothing"), None);
    }

    #[test]
    fn reads_v1_controllers() {
        let t = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                 cpuset\t5\t1\t1\ncpu\t3\t40\t1\nhugetlb\t0\t1\t1\nrdma\t7\t1\t0\n";
        assert_eq!(v1_controllers(t), vec!["cpuset", "cpu"]);
    }

    #[test]
    fn probe_reports_this_host() {
        let facts = HostFacts::probe();
        assert!(!facts.kernel_version.is_empty());
        assert!(facts.ncpu >= 1);
        assert!(facts.mem_total > 0);
        assert!(facts.cgroup.version == 1 || facts.cgroup.version == 2);
    }

    #[test]
    fn a_plain_directory_is_not_cgroup2() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe_cgroup(dir.path()).version, 1);
    }
}
