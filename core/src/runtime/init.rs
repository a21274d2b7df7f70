//! The container's first process, between `clone` and `execve`: it runs in the new
//! namespaces, builds the root filesystem (overlay + the spec's mounts + device nodes),
//! pivots into it, applies hostname, rlimits, user, capabilities and `no_new_privs`, then
//! execs the command. Any failure is written to the error pipe and the process exits; a
//! successful exec closes that pipe (it is close-on-exec), which is how the shim knows.
//!
//! Every mount target inside the root filesystem is resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink planted in an image (`/proc -> /etc`) can never
//! redirect a mount onto the host.

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::sethostname;
use nix::unistd::{Gid, Uid, chdir, pivot_root, setsid};
use oci_spec::runtime::Spec;

use super::ShimConfig;
use super::seccomp;
use super::spec::{INIT_ANNOTATION, SECCOMP_ANNOTATION};

/// Why the container's process could not start; the kind picks the exit code.
#[derive(Debug)]
pub struct InitError {
    /// 127: command not found, 126: not executable, 125: anything else.
    pub code: i32,
    /// What failed, naming the path or setting.
    pub message: String,
}

fn fail(code: i32, message: impl Into<String>) -> InitError {
    InitError {
        code,
        message: message.into(),
    }
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> InitError {
    move |e| fail(125, format!("{what}: {e}"))
}

/// Sets IFF_UP on `lo` of the current network namespace.
fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd was just opened and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data, for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes the flags into the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The file descriptors the init inherits from the shim.
#[derive(Debug)]
pub struct InitFds {
    /// Becomes the container's stdin.
    pub stdin: RawFd,
    /// Becomes the container's stdout.
    pub stdout: RawFd,
    /// Becomes the container's stderr.
    pub stderr: RawFd,
    /// Write end, close-on-exec: failures are reported here.
    pub error: RawFd,
    /// With a TTY: the init opens a terminal in the container's own devpts (so `tty` and
    /// `/dev/pts/N` work inside) and sends its master end to the shim over this socket.
    pub console: Option<RawFd>,
}

/// Runs in the cloned child; never returns.
///
/// `join_cgroup`: the files through which the init joins the container's cgroup before
/// anything else (see `cgroup::join_tasks`); empty when it was created in its group.
pub fn run(spec: &Spec, shim: &ShimConfig, fds: &InitFds, join_cgroup: &[PathBuf]) -> ! {
    let outcome = prepare_and_exec(spec, shim, fds, join_cgroup);
    let err = match outcome {
        Err(e) => e,
        Ok(never) => match never {},
    };
    // SAFETY: the shim gave us this descriptor and nothing else owns it in this process.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds.error) };
    let _ = write!(pipe, "{}:{}", err.code, err.message);
    // SAFETY: _exit is always safe; it skips atexit handlers inherited from the shim.
    unsafe { libc::_exit(err.code) }
}

enum Never {}

/// The first line the init writes on the error pipe: `mounted <ns since the epoch>`.
pub(super) const MOUNTED_PREFIX: &str = "mounted ";

fn prepare_and_exec(
    spec: &Spec,
    shim: &ShimConfig,
    fds: &InitFds,
    join_cgroup: &[PathBuf],
) -> Result<Never, InitError> {
    super::cgroup::join_tasks(join_cgroup)
        .map_err(|e| fail(125, format!("join the container's cgroup: {e}")))?;
    for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
        // SAFETY: dup2 between descriptors this process owns; dup2 clears close-on-exec on
        // the target, which is what the standard streams need.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(fail(125, format!("set up stdio: {}", Errno::last())));
        }
    }
    setsid().map_err(setup("setsid"))?;
    let host_cgroups = host_cgroup_mounts();
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .map_err(setup("make mounts private"))?;
    mount_rootfs(shim)?;
    let root_fd = nix::fcntl::open(
        &shim.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(setup(format!(
        "open root filesystem {}",
        shim.rootfs.display()
    )))?;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let is_cgroup = |m: &&oci_spec::runtime::Mount| m.typ().as_deref() == Some("cgroup");
    for m in mounts.iter().filter(|m| !is_cgroup(m)) {
        mount_in_root(&root_fd, m)?;
    }
    make_devices(&root_fd)?;
    let devices = spec.linux().as_ref().and_then(|l| l.devices().clone());
    for device in devices.unwrap_or_default() {
        make_spec_device(&root_fd, &device)?;
    }
    for (source, dest) in &shim.etc_files {
        bind_file(&root_fd, source, dest)?;
    }
    // When the root filesystem was ready, for the start's trace (the error pipe's first line;
    // an error, if one follows, comes after it).
    let mounted = format!("{MOUNTED_PREFIX}{}\n", super::shim::unix_nanos());
    // SAFETY: writing a few bytes to the pipe the shim gave us.
    unsafe {
        libc::write(fds.error, mounted.as_ptr().cast(), mounted.len());
    }

    // We are in the container's cgroup: a cgroup namespace made now shows that group as
    // the root.
    let wants_cgroupns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup)
        });
    if wants_cgroupns {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(setup("create the cgroup namespace"))?;
    }
    for m in mounts.iter().filter(is_cgroup) {
        mount_cgroups(&root_fd, m, &host_cgroups)?;
    }
    // A namespace of its own with nothing plumbed (`--network none`) still has `lo` up, as
    // with docker; a namespace berthd made has it up already.
    let new_netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_none()
            })
        });
    if new_netns {
        loopback_up().map_err(setup("bring the loopback interface up"))?;
    }

    // pivot_root into the new root and detach the old one.
    chdir(&shim.rootfs).map_err(setup("enter the root filesystem"))?;
    pivot_root(".", ".").map_err(setup("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(setup("detach the old root"))?;
    chdir("/").map_err(setup("chdir /"))?;

    if let Some(linux) = spec.linux() {
        for path in linux.masked_paths().as_deref().unwrap_or_default() {
            mask(path)?;
        }
        for path in linux.readonly_paths().as_deref().unwrap_or_default() {
            readonly(path)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly().unwrap_or(false))
    {
        mount::<str, str, str, str>(
            None,
            "/",
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None,
        )
        .map_err(setup("make the root filesystem read-only"))?;
    }
    if let Some(hostname) = spec.hostname() {
        sethostname(hostname).map_err(setup("set hostname"))?;
    }
    if let Some(console) = fds.console {
        open_console(console)?;
    }

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| fail(125, "spec has no process"))?;
    for rl in process.rlimits().as_deref().unwrap_or_default() {
        let resource = rlimit_resource(&rl.typ().to_string())
            .ok_or_else(|| fail(125, format!("unknown rlimit {}", rl.typ())))?;
        let lim = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit with a valid resource and a live struct.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(fail(
                125,
                format!("set rlimit {}: {}", rl.typ(), Errno::last()),
            ));
        }
    }
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    let user_spec = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(USER_ANNOTATION).cloned())
        .unwrap_or_default();
    let user = resolve_user(user_spec)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")));
    }
    let cwd_path = process.cwd().as_path();
    let cwd = cwd_path.display().to_string();
    if !cwd_path.exists() {
        std::fs::create_dir_all(cwd_path)
            .map_err(|e| fail(125, format!("create working directory {cwd}: {e}")))?;
    }

    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail(125, format!("set no_new_privs: {}", Errno::last())));
        }
    }
    if annotation(spec, SECCOMP_ANNOTATION).is_some() {
        // Installed while still privileged (no_new_privs stays the user's choice); the
        // filter lets the calls that follow through.
        let bounding = capability_set(
            process
                .capabilities()
                .as_ref()
                .and_then(|c| c.bounding().as_ref()),
        );
        for program in seccomp::default_filters(&bounding).map_err(|m| fail(125, m))? {
            seccomp::install(&program)
                .map_err(|e| fail(125, format!("install the seccomp filter: {e}")))?;
        }
    }
    apply_user_and_capabilities(process, &user)?;
    chdir(cwd_path).map_err(setup(format!("chdir to {cwd}")))?;

    let args = process.args().clone().unwrap_or_default();
    let program = args.first().ok_or_else(|| fail(125, "no command given"))?;
    let path = find_executable(program, &env)?;
    // Everything but stdio and the error pipe is closed at exec (the pipe is close-on-exec
    // too, which is what tells the shim the exec happened).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    let cpath =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| fail(125, "NUL in command"))?;
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(125, "NUL in arguments"))?;
    let cenv: Vec<CString> = env
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(125, "NUL in environment"))?;
    default_signal_dispositions();
    if annotation(spec, INIT_ANNOTATION).is_some() {
        // Signals are blocked before the fork so that none (above all the command's
        // SIGCHLD) is lost before PID 1 waits for them; the command gets the mask back.
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
        let mut all = SigSet::all();
        all.remove(Signal::SIGKILL);
        all.remove(Signal::SIGSTOP);
        let mut previous = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut previous))
            .map_err(setup("block signals for --init"))?;
        // SAFETY: the init is single-threaded (a clone of the single-threaded shim).
        match unsafe { nix::unistd::fork() } {
            Err(e) => return Err(fail(125, format!("fork the command under --init: {e}"))),
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                // Keep only stdio: the shim's pipes (the error pipe, its report pipe) must
                // close when the command execs, not when this process ends.
                // SAFETY: close_range only closes descriptors of this process.
                unsafe {
                    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                }
                // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
                unsafe {
                    libc::prctl(libc::PR_SET_NAME, c"berth-init".as_ptr(), 0, 0, 0);
                }
                reap_forever(child, &all)
            }
            Ok(nix::unistd::ForkResult::Child) => {
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)
                    .map_err(setup("restore the signal mask"))?;
            }
        }
    }
    let e = nix::unistd::execve(&cpath, &cargs, &cenv).unwrap_err();
    Err(exec_error(program, e))
}

/// Opens a terminal from the container's `/dev/ptmx`, makes its terminal side our stdio and
/// controlling terminal, and hands the master side to the shim.
fn open_console(socket: RawFd) -> Result<(), InitError> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(setup("open /dev/ptmx"))?;
    grantpt(&master).map_err(setup("grantpt"))?;
    unlockpt(&master).map_err(setup("unlockpt"))?;
    let name = ptsname_r(&master).map_err(setup("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(setup(format!("open {name}")))?;
    for to in 0..3 {
        // SAFETY: dup2 between descriptors this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), to) } < 0 {
            return Err(fail(125, format!("set up the terminal: {}", Errno::last())));
        }
    }
    // SAFETY: TIOCSCTTY on the terminal now at fd 0, in a new session without one.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(fail(
            125,
            format!("make the terminal controlling: {}", Errno::last()),
        ));
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        socket,
        &[std::io::IoSlice::new(b"t")],
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(setup("send the terminal to the shim"))?;
    Ok(())
}

/// Exit code for failures before the command runs (docker's 125).
pub const INIT_EXIT_SETUP: i32 = 125;

/// Sets every signal back to its default action. Rust's runtime ignores SIGPIPE in the shim,
/// and an ignored signal survives `execve`: without this a container's `yes | head` would
/// spin forever once `head` exits, where docker's ends. The raw system call reaches the
/// real-time signals glibc keeps for itself (32 and 33), which can arrive ignored too.
pub(super) fn default_signal_dispositions() {
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, no restorer, empty mask.
    let default = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads the zeroed struct and writes nothing (no old action);
        // the kernel's sigset is 8 bytes.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// docker's exit codes for an `execve` that failed: 127 not found, else 126.
pub(super) fn exec_error(program: &str, e: Errno) -> InitError {
    match e {
        Errno::ENOENT => fail(127, format!("exec {program:?}: no such file or directory")),
        Errno::EACCES | Errno::EPERM => fail(126, format!("exec {program:?}: permission denied")),
        Errno::ENOEXEC => fail(126, format!("exec {program:?}: exec format error")),
        other => fail(126, format!("exec {program:?}: {other}")),
    }
}

/// Annotation carrying the `--user` value, resolved inside the container.
pub const USER_ANNOTATION: &str = "org.berth.user";

pub(super) fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// `--init` (and `exec`'s shim): forwards every signal it can to the command, reaps every orphan, and
/// exits the way the command did.
pub(super) fn reap_forever(command: nix::unistd::Pid, all: &nix::sys::signal::SigSet) -> ! {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        let signal = all.wait().unwrap_or(Signal::SIGCHLD);
        if signal != Signal::SIGCHLD {
            let _ = kill(command, signal);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                    // SAFETY: leaving PID 1; the kernel then ends the namespace.
                    unsafe { libc::_exit(code) }
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                    // SAFETY: as above; 128+n is how a shell reports death by signal n.
                    unsafe { libc::_exit(128 + sig as i32) }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// The host's cgroup mounts as (mount point, filesystem type, super options), read
/// before `pivot_root` hides them.
fn host_cgroup_mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next()?;
            let options = r.next().unwrap_or("");
            (fstype == "cgroup" || fstype == "cgroup2").then(|| {
                (
                    PathBuf::from(mount_point),
                    fstype.to_owned(),
                    options.to_owned(),
                )
            })
        })
        .collect()
}

/// The container's view of its own cgroup at the spec's cgroup mount: cgroup2 where the
/// host is unified, else a tmpfs holding one mount per v1 hierarchy (as runc does).
fn mount_cgroups(
    root: &OwnedFd,
    m: &oci_spec::runtime::Mount,
    host: &[(PathBuf, String, String)],
) -> Result<(), InitError> {
    let dest = m.destination().display().to_string();
    let target = open_in_root(root, &dest, false)?;
    let target_path = fd_path(&target);
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let readonly = m
        .options()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o == "ro");
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    let unified = host
        .iter()
        .any(|(p, t, _)| t == "cgroup2" && p == Path::new("/sys/fs/cgroup"));
    if unified {
        return mount(
            Some("cgroup2"),
            &target_path,
            Some("cgroup2"),
            flags,
            None::<&str>,
        )
        .map_err(setup(format!("mount cgroup2 at {dest}")));
    }
    mount(
        Some("tmpfs"),
        &target_path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(setup(format!("mount tmpfs at {dest}")))?;
    // The descriptor opened before the mount names the directory underneath: resolve again.
    let tmpfs = open_in_root(root, &dest, false)?;
    let tmpfs_path = fd_path(&tmpfs);
    for (mount_point, fstype, options) in host {
        if fstype != "cgroup" {
            continue;
        }
        let Some(name) = mount_point.file_name().and_then(OsStr::to_str) else {
            continue;
        };
        let data: Vec<&str> = options
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        let dir = tmpfs_path.join(name);
        std::fs::create_dir(&dir).map_err(|e| fail(125, format!("create {dest}/{name}: {e}")))?;
        mount(
            Some("cgroup"),
            &dir,
            Some("cgroup"),
            flags,
            Some(data.join(",").as_str()),
        )
        .map_err(setup(format!("mount the {name} cgroup at {dest}/{name}")))?;
        if name.contains(',') {
            for part in name.split(',') {
                let _ = std::os::unix::fs::symlink(name, tmpfs_path.join(part));
            }
        }
    }
    if readonly {
        mount::<str, PathBuf, str, str>(
            None,
            &tmpfs_path,
            None,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NODEV,
            Some("mode=755"),
        )
        .map_err(setup(format!("remount {dest} read-only")))?;
    }
    Ok(())
}

/// A device node the spec asks for (`--privileged` passes the host's).
fn make_spec_device(
    root: &OwnedFd,
    device: &oci_spec::runtime::LinuxDevice,
) -> Result<(), InitError> {
    let path = device.path().display().to_string();
    let Some(parent) = device.path().parent() else {
        return Ok(());
    };
    let name = device
        .path()
        .file_name()
        .ok_or_else(|| fail(125, format!("bad device path {path}")))?;
    let dir = open_in_root(root, &parent.display().to_string(), false)?;
    let kind = match device.typ() {
        oci_spec::runtime::LinuxDeviceType::B => SFlag::S_IFBLK,
        oci_spec::runtime::LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let mode = Mode::from_bits_truncate(device.file_mode().unwrap_or(0o660));
    match nix::sys::stat::mknodat(
        &dir,
        name,
        kind,
        mode,
        makedev(device.major() as u64, device.minor() as u64),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(fail(125, format!("create device {path}: {e}"))),
    }
    let _ = nix::unistd::fchownat(
        &dir,
        name,
        device.uid().map(Uid::from_raw),
        device.gid().map(Gid::from_raw),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    Ok(())
}

pub(super) fn mount_rootfs(shim: &ShimConfig) -> Result<(), InitError> {
    // Relative lower dirs keep the option string short, so it fits a page even with many
    // layers: resolve them from the snapshots directory.
    chdir(&shim.snapshots_dir).map_err(setup(format!("enter {}", shim.snapshots_dir.display())))?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        shim.lower_dirs.join(":"),
        shim.upper_dir.display(),
        shim.work_dir.display()
    );
    if opts.len() >= 4096 {
        return Err(fail(
            125,
            format!("overlay options are {} bytes, over a page", opts.len()),
        ));
    }
    mount(
        Some("overlay"),
        &shim.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(setup(format!(
        "mount the overlay root filesystem at {}",
        shim.rootfs.display()
    )))
}

/// Opens `dest` (absolute, inside the container) beneath `root`, creating it as a
/// directory (or, with `file`, an empty file) when missing.
fn open_in_root(root: &OwnedFd, dest: &str, file: bool) -> Result<OwnedFd, InitError> {
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    match openat2(root, dest, how()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(fail(125, format!("resolve {dest} in the container: {e}"))),
    }
    let mut current = openat2(root, "/", how()).map_err(setup("open the container root"))?;
    let parts: Vec<&OsStr> = Path::new(dest)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match openat2(&current, *part, how()) {
            Ok(fd) => current = fd,
            Err(Errno::ENOENT) => {
                if last && file {
                    let fd = openat2(
                        &current,
                        *part,
                        OpenHow::new()
                            .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC)
                            .mode(Mode::from_bits_truncate(0o644))
                            .resolve(ResolveFlag::RESOLVE_IN_ROOT),
                    )
                    .map_err(setup(format!("create {dest} in the container")))?;
                    drop(fd);
                } else {
                    match nix::sys::stat::mkdirat(&current, *part, Mode::from_bits_truncate(0o755))
                    {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(fail(125, format!("create {dest} in the container: {e}")));
                        }
                    }
                }
                current =
                    openat2(&current, *part, how()).map_err(setup(format!("resolve {dest}")))?;
            }
            Err(e) => return Err(fail(125, format!("resolve {dest} in the container: {e}"))),
        }
    }
    Ok(current)
}

fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

fn mount_in_root(root: &OwnedFd, m: &oci_spec::runtime::Mount) -> Result<(), InitError> {
    let dest = m.destination().display().to_string();
    let typ = m.typ().clone().unwrap_or_default();
    // A bound file needs a file to be bound onto.
    let file_source = typ == "bind"
        && m.source()
            .as_ref()
            .is_some_and(|s| std::fs::metadata(s).is_ok_and(|meta| !meta.is_dir()));
    let target = open_in_root(root, &dest, file_source)?;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = typ == "bind";
    let mut readonly = false;
    let mut no_symlinks = false;
    let mut copy_up = false;
    for opt in m.options().as_deref().unwrap_or_default() {
        match opt.as_str() {
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "ro" => readonly = true,
            "rw" => {}
            super::spec::NO_SYMLINKS_OPTION => no_symlinks = true,
            super::spec::COPY_UP_OPTION => copy_up = true,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "bind" | "rbind" => {
                bind = true;
                if opt == "rbind" {
                    flags |= MsFlags::MS_REC;
                }
            }
            other => data.push(other.to_owned()),
        }
    }
    let data = data.join(",");
    let source = m.source().as_ref().map(|s| s.display().to_string());
    let target_path = fd_path(&target);
    if bind {
        // A volume's directory is opened here without following any symlink, and that very
        // directory is what gets bound.
        let pinned = match (&source, no_symlinks) {
            (Some(s), true) => Some(
                openat2(
                    nix::fcntl::AT_FDCWD,
                    s.as_str(),
                    OpenHow::new()
                        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS),
                )
                .map_err(setup(format!("open volume directory {s}")))?,
            ),
            _ => None,
        };
        if let Some(volume) = pinned.as_ref().filter(|_| copy_up) {
            super::copyup::fill_empty_volume(target.as_fd(), volume.as_fd()).map_err(|e| {
                fail(
                    125,
                    format!("fill the volume at {dest} from the image: {e}"),
                )
            })?;
        }
        let source = match &pinned {
            Some(fd) => Some(fd_path(fd).display().to_string()),
            None => source,
        };
        mount(
            source.as_deref(),
            &target_path,
            None::<&str>,
            flags | MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(setup(format!("bind mount {dest}")))?;
        // Flags of a bind mount only take effect on a remount (without MS_REC), of the new
        // mount: the descriptor opened before names the directory underneath.
        let flags = flags - MsFlags::MS_REC;
        if readonly || !flags.is_empty() {
            let mounted = open_in_root(root, &dest, file_source)?;
            mount::<str, PathBuf, str, str>(
                None,
                &fd_path(&mounted),
                None,
                flags
                    | MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | if readonly {
                        MsFlags::MS_RDONLY
                    } else {
                        MsFlags::empty()
                    },
                None,
            )
            .map_err(setup(format!("remount {dest}")))?;
        }
    } else {
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            source.as_deref().or(Some(typ.as_str())),
            &target_path,
            Some(typ.as_str()),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(setup(format!("mount {typ} at {dest}")))?;
    }
    Ok(())
}

fn make_devices(root: &OwnedFd) -> Result<(), InitError> {
    let dev = open_in_root(root, "/dev", false)?;
    let dev_path = fd_path(&dev);
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev_path.join(name);
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail(125, format!("create /dev/{name}: {e}"))),
        }
        // mknod honours the umask; the devices must be world read-write.
        let _ = nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match nix::unistd::symlinkat(target, &dev, link) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail(125, format!("create /dev/{link}: {e}"))),
        }
    }
    Ok(())
}

fn bind_file(root: &OwnedFd, source: &Path, dest: &str) -> Result<(), InitError> {
    let target = open_in_root(root, dest, true)?;
    mount(
        Some(source),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(setup(format!("bind mount {dest}")))
}

fn mask(path: &str) -> Result<(), InitError> {
    let p = Path::new(path);
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(setup(format!("mask {path}"))),
        Ok(_) => mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(setup(format!("mask {path}"))),
    }
}

fn readonly(path: &str) -> Result<(), InitError> {
    let p = Path::new(path);
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(setup(format!("bind {path} read-only")))?;
    mount::<str, Path, str, str>(
        None,
        p,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None,
    )
    .map_err(setup(format!("remount {path} read-only")))
}

pub(super) fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// A resolved `--user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups from /etc/group.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME`), when known.
    pub home: Option<String>,
}

fn read_db(path: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

/// Resolves `user[:group]` (names or ids) against the container's /etc/passwd and
/// /etc/group (after pivot_root). Empty means root.
pub fn resolve_user(spec: String) -> Result<ResolvedUser, InitError> {
    resolve_user_in(&spec, &read_db("/etc/passwd"), &read_db("/etc/group"))
}

fn resolve_user_in(
    spec: &str,
    passwd: &[Vec<String>],
    group: &[Vec<String>],
) -> Result<ResolvedUser, InitError> {
    if spec.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: Some("/root".into()),
        });
    }
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd.iter().find(|e| {
        e.first().map(String::as_str) == Some(user)
            || (user.parse::<u32>().is_ok() && e.get(2).map(String::as_str) == Some(user))
    });
    let uid = match (user.parse::<u32>(), entry) {
        (Ok(n), _) => n,
        (Err(_), Some(e)) => e
            .get(2)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| fail(125, format!("bad /etc/passwd entry for {user}")))?,
        (Err(_), None) => {
            return Err(fail(
                125,
                format!("unable to find user {user}: no matching entries in passwd file"),
            ));
        }
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .iter()
                .find(|e| e.first().map(String::as_str) == Some(g))
                .and_then(|e| e.get(2)?.parse().ok())
                .ok_or_else(|| {
                    fail(
                        125,
                        format!("unable to find group {g}: no matching entries in group file"),
                    )
                })?,
        },
        None => entry.and_then(|e| e.get(3)?.parse().ok()).unwrap_or(0),
    };
    let name = entry.and_then(|e| e.first().cloned()).unwrap_or_default();
    let groups = if grp.is_none() && !name.is_empty() {
        group
            .iter()
            .filter(|e| {
                e.get(3)
                    .is_some_and(|members| members.split(',').any(|m| m == name))
            })
            .filter_map(|e| e.get(2)?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home: entry.and_then(|e| e.get(5).cloned()),
    })
}

fn cap_from_name(name: &str) -> Option<caps::Capability> {
    name.parse::<caps::Capability>().ok()
}

/// The caps crate's set for a spec capability list.
pub(super) fn capability_set(names: Option<&oci_spec::runtime::Capabilities>) -> caps::CapsHashSet {
    names
        .map(|s| {
            s.iter()
                // The spec's wire name (CAP_CHOWN) is what the caps crate parses; the
                // Display form drops the prefix.
                .filter_map(|c| {
                    serde_json::to_value(c)
                        .ok()?
                        .as_str()
                        .and_then(cap_from_name)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn apply_user_and_capabilities(
    process: &oci_spec::runtime::Process,
    user: &ResolvedUser,
) -> Result<(), InitError> {
    use caps::{CapSet, CapsHashSet};
    let spec_caps = process.capabilities().as_ref();
    let set_of = capability_set;
    let bounding = set_of(spec_caps.and_then(|c| c.bounding().as_ref()));
    let effective = set_of(spec_caps.and_then(|c| c.effective().as_ref()));
    let permitted = set_of(spec_caps.and_then(|c| c.permitted().as_ref()));
    let inheritable = set_of(spec_caps.and_then(|c| c.inheritable().as_ref()));
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| fail(125, format!("drop {cap}: {e}")))?;
        }
    }
    // SAFETY: prctl(PR_SET_KEEPCAPS) takes plain integers; it keeps permitted capabilities
    // across the uid change below, so the sets can then be set as the spec says.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
    }
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(setup("setgroups"))?;
    nix::unistd::setresgid(
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
    )
    .map_err(setup(format!("setgid {}", user.gid)))?;
    nix::unistd::setresuid(
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
    )
    .map_err(setup(format!("setuid {}", user.uid)))?;
    let (effective, permitted) = if user.uid == 0 {
        (effective, permitted)
    } else {
        // As in docker, a non-root user starts without capabilities.
        (CapsHashSet::new(), CapsHashSet::new())
    };
    // capset writes all three sets at once and each must stay within the ones after it:
    // inheritable while everything is still permitted, then effective, then permitted.
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| fail(125, format!("set inheritable capabilities: {e}")))?;
    caps::set(None, CapSet::Effective, &effective)
        .map_err(|e| fail(125, format!("set effective capabilities: {e}")))?;
    caps::set(None, CapSet::Permitted, &permitted)
        .map_err(|e| fail(125, format!("set permitted capabilities: {e}")))?;
    Ok(())
}

/// Finds `program` the way a shell does, with the container's `PATH`.
pub(super) fn find_executable(program: &str, env: &[String]) -> Result<PathBuf, InitError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(fail(
        127,
        format!("exec: {program:?}: executable file not found in $PATH"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn users_by_name_and_id() {
        let passwd = db(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh",
        );
        let group = db("root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:");
        let u = resolve_user_in("app", &passwd, &group).unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 1000, vec![10]));
        assert_eq!(u.home.as_deref(), Some("/home/app"));
        let u = resolve_user_in("1000:50", &passwd, &group).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        let u = resolve_user_in("nobody:staff", &passwd, &group).unwrap();
        assert_eq!((u.uid, u.gid), (65534, 50));
        let u = resolve_user_in("4242", &passwd, &group).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert!(
            resolve_user_in("ghost", &passwd, &group)
                .unwrap_err()
                .message
                .contains("unable to find user ghost")
        );
        assert!(resolve_user_in("app:ghosts", &passwd, &group).is_err());
        assert_eq!(resolve_user_in("", &passwd, &group).unwrap().uid, 0);
    }
}
