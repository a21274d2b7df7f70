//! Turns an image's run configuration and the user's options into an OCI runtime spec,
//! with docker's defaults: its 14 capabilities, masked and read-only paths, the standard
//! mounts, `no_new_privs` off unless asked, and the image's env, cwd, entrypoint and cmd.

use std::collections::HashMap;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, get_default_maskedpaths, get_default_readonly_paths,
};

use super::init::USER_ANNOTATION;

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The network namespace a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkNamespace {
    /// A new one, with only `lo`.
    #[default]
    New,
    /// The host's.
    Host,
    /// One made and plumbed beforehand, bound at this path.
    Join(std::path::PathBuf),
}

/// What the user asked for, on top of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The full command (entrypoint + cmd), already resolved.
    pub args: Vec<String>,
    /// `KEY=value`, image env first, user env overriding.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// `user[:group]`, resolved inside the container.
    pub user: Option<String>,
    /// Host name.
    pub hostname: String,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Keep `no_new_privs` set.
    pub no_new_privileges: bool,
    /// Capabilities added to docker's default set (`CHOWN`, `CAP_NET_ADMIN`, or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities removed from it (or `ALL`).
    pub cap_drop: Vec<String>,
    /// Open-file limit (soft and hard). Containers get berthd's own hard limit, as docker
    /// gives them dockerd's: raising it would need CAP_SYS_RESOURCE.
    pub nofile: u64,
    /// Cgroup limits, already validated and defaulted (see [`resources`]).
    pub resources: Option<LinuxResources>,
    /// The cgroup path (`/berth/<id>`).
    pub cgroups_path: String,
    /// `--privileged`: all capabilities, host devices, no masked or read-only paths, no
    /// seccomp filter, /sys writable.
    pub privileged: bool,
    /// Install docker's default seccomp filter.
    pub seccomp: bool,
    /// Run berth's minimal init as PID 1.
    pub init: bool,
    /// User mounts (binds, tmpfs), validated, after the standard ones.
    pub mounts: Vec<Mount>,
    /// Its network namespace.
    pub network: NetworkNamespace,
}

/// The OCI mount for a validated user mount.
pub fn user_mount(m: &berth_api::container::MountSpec) -> Result<Mount, oci_spec::OciSpecError> {
    use berth_api::container::MountKind;
    let access = if m.read_only { "ro" } else { "rw" };
    match m.kind {
        MountKind::Volume => Err(oci_spec::OciSpecError::Other(format!(
            "volume mount at {} has no resolved source",
            m.target
        ))),
        MountKind::Bind => MountBuilder::default()
            .destination(m.target.as_str())
            .typ("bind")
            .source(m.source.clone().unwrap_or_default())
            .options(vec!["rbind".to_owned(), access.to_owned()])
            .build(),
        MountKind::Tmpfs => {
            let mut options = vec![
                "nosuid".to_owned(),
                "nodev".to_owned(),
                "noexec".to_owned(),
                access.to_owned(),
                format!("mode={:o}", m.tmpfs_mode.unwrap_or(0o1777)),
            ];
            if let Some(size) = m.tmpfs_size {
                options.push(format!("size={size}"));
            }
            MountBuilder::default()
                .destination(m.target.as_str())
                .typ("tmpfs")
                .source("tmpfs")
                .options(options)
                .build()
        }
    }
}

/// Mount option (ours, ignored by other runtimes' `x-` convention) asking the shim to open
/// the bind source without following any symlink, so that a volume directory a driver
/// returned cannot be swapped for a link between berthd's check and the mount.
pub const NO_SYMLINKS_OPTION: &str = "x-berth-nosymlinks";

/// Mount option (ours) asking the shim to fill the bind source, if empty, with what the
/// container's root filesystem has at the mount point (docker's volume copy).
pub const COPY_UP_OPTION: &str = "x-berth-copyup";

/// A volume: its resolved host directory bound at `target`; `copy_up` fills it from the
/// image when empty.
pub fn volume_mount(
    source: &std::path::Path,
    target: &str,
    read_only: bool,
    copy_up: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let mut options = vec![
        "rbind".to_owned(),
        if read_only { "ro" } else { "rw" }.to_owned(),
        NO_SYMLINKS_OPTION.to_owned(),
    ];
    if copy_up {
        options.push(COPY_UP_OPTION.to_owned());
    }
    MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
}

/// Annotation set when the container gets docker's default seccomp filter.
pub const SECCOMP_ANNOTATION: &str = "org.berth.seccomp";
/// Annotation set when the container runs berth's minimal init as PID 1.
pub const INIT_ANNOTATION: &str = "org.berth.init";

/// docker's `--cpus` period.
const CPU_PERIOD_US: u64 = 100_000;

/// The spec's `linux.resources` for docker-style limits (already validated).
pub fn resources(
    limits: &berth_api::container::ResourceLimits,
) -> Result<Option<LinuxResources>, oci_spec::OciSpecError> {
    let mut builder = LinuxResourcesBuilder::default();
    let mut any = false;
    if limits.memory.is_some() || limits.memory_swap.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(m) = limits.memory {
            memory = memory.limit(m);
        }
        if let Some(s) = limits.memory_swap {
            memory = memory.swap(s);
        }
        builder = builder.memory(memory.build()?);
        any = true;
    }
    if limits.nano_cpus.is_some() || limits.cpu_shares.is_some() || limits.cpuset_cpus.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(n) = limits.nano_cpus {
            cpu = cpu
                .quota(n * CPU_PERIOD_US as i64 / 1_000_000_000)
                .period(CPU_PERIOD_US);
        }
        if let Some(shares) = limits.cpu_shares {
            cpu = cpu.shares(shares);
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            cpu = cpu.cpus(cpus.clone());
        }
        builder = builder.cpu(cpu.build()?);
        any = true;
    }
    if let Some(p) = limits.pids_limit {
        builder = builder.pids(LinuxPidsBuilder::default().limit(p).build()?);
        any = true;
    }
    if any {
        Ok(Some(builder.build()?))
    } else {
        Ok(None)
    }
}

/// Parses `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN`.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let wire = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(wire)).ok()
}

/// Docker's rule: start from the default set, drop (`ALL` empties it), then add (`ALL`
/// gives every capability).
pub fn effective_capabilities(
    add: &[String],
    drop: &[String],
) -> Result<oci_spec::runtime::Capabilities, oci_spec::OciSpecError> {
    let all = || -> oci_spec::runtime::Capabilities {
        // "All" is all this host lets berthd hand out: its own bounding set.
        caps::read(None, caps::CapSet::Bounding)
            .unwrap_or_else(|_| caps::all())
            .into_iter()
            .filter_map(|c| parse_capability(&c.to_string()))
            .collect()
    };
    let unknown =
        |name: &str| oci_spec::OciSpecError::Other(format!("unknown capability {name:?}"));
    let mut set: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    for name in drop {
        if name.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            set.remove(&parse_capability(name).ok_or_else(|| unknown(name))?);
        }
    }
    for name in add {
        if name.eq_ignore_ascii_case("ALL") {
            set.extend(all());
        } else {
            set.insert(parse_capability(name).ok_or_else(|| unknown(name))?);
        }
    }
    Ok(set)
}

/// berthd's own hard open-file limit, which containers get by default.
pub fn daemon_nofile() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// Merges environments docker's way: later entries replace earlier ones with the same key.
pub fn merge_env(image: &[String], user: &[String]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    for entry in image.iter().chain(user) {
        let key = entry
            .split_once('=')
            .map_or(entry.as_str(), |(k, _)| k)
            .to_owned();
        if !values.contains_key(&key) {
            order.push(key.clone());
        }
        values.insert(key, entry.clone());
    }
    order
        .into_iter()
        .filter_map(|k| values.remove(&k))
        .collect()
}

/// The host's device nodes (`/dev` and one level below), for `--privileged`.
fn host_devices() -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut found = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/dev")];
    for _depth in 0..2 {
        let mut next = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // The container has its own of these.
                if [
                    "/dev/pts",
                    "/dev/shm",
                    "/dev/mqueue",
                    "/dev/console",
                    "/dev/ptmx",
                ]
                .iter()
                .any(|p| path == std::path::Path::new(p))
                {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let kind = meta.file_type();
                let typ = if kind.is_char_device() {
                    LinuxDeviceType::C
                } else if kind.is_block_device() {
                    LinuxDeviceType::B
                } else {
                    if kind.is_dir() {
                        next.push(path);
                    }
                    continue;
                };
                let rdev = meta.rdev();
                if let Ok(device) = LinuxDeviceBuilder::default()
                    .path(path)
                    .typ(typ)
                    .major(nix::sys::stat::major(rdev) as i64)
                    .minor(nix::sys::stat::minor(rdev) as i64)
                    .file_mode(meta.mode() & 0o7777)
                    .uid(meta.uid())
                    .gid(meta.gid())
                    .build()
                {
                    found.push(device);
                }
            }
        }
        dirs = next;
    }
    found.sort_by(|a, b| a.path().cmp(b.path()));
    found
}

fn tmpfs(dest: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ("tmpfs")
        .source("tmpfs")
        .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .build()
        .expect("static mount is valid")
}

/// The spec for one container. Errors only on builder misuse, which is a bug.
pub fn build(options: &RunOptions) -> Result<Spec, oci_spec::OciSpecError> {
    let caps = if options.privileged {
        effective_capabilities(&["ALL".to_owned()], &[])?
    } else {
        effective_capabilities(&options.cap_add, &options.cap_drop)?
    };
    let ro_unless_privileged = if options.privileged { "rw" } else { "ro" };
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(options.args.clone())
        .env(options.env.clone())
        .cwd(if options.cwd.is_empty() {
            "/".to_owned()
        } else {
            options.cwd.clone()
        })
        .no_new_privileges(options.no_new_privileges)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps.clone())
                .inheritable(caps.clone())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(options.nofile)
                .hard(options.nofile)
                .build()?,
        ])
        .build()?;
    let mut namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<Result<Vec<_>, _>>()?;
    match &options.network {
        NetworkNamespace::Host => {}
        NetworkNamespace::New => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
        NetworkNamespace::Join(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
    }
    let mounts = vec![
        MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .options(vec!["nosuid".into(), "noexec".into(), "nodev".into()])
            .build()?,
        tmpfs(
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        MountBuilder::default()
            .destination("/dev/pts")
            .typ("devpts")
            .source("devpts")
            .options(vec![
                "nosuid".into(),
                "noexec".into(),
                "newinstance".into(),
                "ptmxmode=0666".into(),
                "mode=0620".into(),
                "gid=5".into(),
            ])
            .build()?,
        tmpfs(
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        MountBuilder::default()
            .destination("/dev/mqueue")
            .typ("mqueue")
            .source("mqueue")
            .options(vec!["nosuid".into(), "noexec".into(), "nodev".into()])
            .build()?,
        MountBuilder::default()
            .destination("/sys")
            .typ("sysfs")
            .source("sysfs")
            .options(vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                ro_unless_privileged.into(),
            ])
            .build()?,
        MountBuilder::default()
            .destination("/sys/fs/cgroup")
            .typ("cgroup")
            .source("cgroup")
            .options(vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "relatime".into(),
                ro_unless_privileged.into(),
            ])
            .build()?,
    ];
    let mut mounts = mounts;
    mounts.extend(options.mounts.iter().cloned());
    let mut annotations = HashMap::new();
    if let Some(user) = &options.user {
        annotations.insert(USER_ANNOTATION.to_owned(), user.clone());
    }
    if options.seccomp && !options.privileged {
        annotations.insert(SECCOMP_ANNOTATION.to_owned(), "default".to_owned());
    }
    if options.init {
        annotations.insert(INIT_ANNOTATION.to_owned(), "true".to_owned());
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(options.cgroups_path.clone());
    if options.privileged {
        linux = linux.devices(host_devices());
    } else {
        linux = linux
            .masked_paths(get_default_maskedpaths())
            .readonly_paths(get_default_readonly_paths());
    }
    if let Some(resources) = &options.resources {
        linux = linux.resources(resources.clone());
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(options.read_only)
                .build()?,
        )
        .hostname(options.hostname.clone())
        .process(process)
        .mounts(mounts)
        .annotations(annotations)
        .linux(linux.build()?)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_keeps_order_and_overrides() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into(), "B=2".into()],
            &["A=override".into(), "C=3".into()],
        );
        assert_eq!(merged, ["PATH=/bin", "A=override", "B=2", "C=3"]);
    }

    #[test]
    fn cap_add_and_drop_follow_docker() {
        let set = effective_capabilities(&["net_admin".into()], &["CAP_CHOWN".into()]).unwrap();
        assert!(set.contains(&Capability::NetAdmin) && !set.contains(&Capability::Chown));
        assert_eq!(set.len(), 14);
        let set = effective_capabilities(&["KILL".into()], &["ALL".into()]).unwrap();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![Capability::Kill]);
        assert!(
            effective_capabilities(&["ALL".into()], &[])
                .unwrap()
                .contains(&Capability::SysAdmin)
        );
        assert!(effective_capabilities(&["BOGUS".into()], &[]).is_err());
    }

    #[test]
    fn spec_has_docker_defaults() {
        let spec = build(&RunOptions {
            args: vec!["/bin/sh".into()],
            hostname: "abc".into(),
            user: Some("app".into()),
            nofile: 1024,
            ..RunOptions::default()
        })
        .unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert!(
            !caps
                .bounding()
                .as_ref()
                .unwrap()
                .contains(&Capability::SysAdmin)
        );
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p == "/proc/kcore")
        );
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 6);
        assert_eq!(spec.annotations().as_ref().unwrap()[USER_ANNOTATION], "app");
        assert_eq!(spec.process().as_ref().unwrap().cwd(), "/");
    }
}
