//! `berth-shim start BUNDLE`: starts one container and supervises it until it exits.
//!
//! The process berthd spawns forks the supervisor and waits only until the container has
//! exec'd (or failed to), printing its pid (or the error) and exiting: berthd gets a
//! synchronous answer, and the supervisor, now orphaned and in its own session, outlives
//! berthd. The supervisor clones the container into new namespaces, copies its output to
//! the log file, serves a control socket, reaps the exit status and records it atomically.
//! Single-threaded, blocking, `poll(2)`-driven.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};
use oci_spec::runtime::Spec;

use super::cgroup::{self, ContainerCgroup};
use super::init::{self, InitFds};
use super::logfile::{LogWriter, Stream};
use super::protocol::{ExitRecord, Request, Response};
use super::{ShimConfig, files};

/// Reads the bundle, starts the container, and exits with 0 (pid printed) or the init's
/// failure code (message on stderr).
/// With `await_attach` the container's exit is held back until a client has attached (at
/// most [`ATTACH_WAIT`]): `run -it` attaches right after the start and must not miss the
/// output of a container that exits at once.
/// Now, in nanoseconds since the Unix epoch: the phase times `start` reports.
pub(super) fn unix_nanos() -> i64 {
    crate::events::unix_nanos(std::time::SystemTime::now())
}

/// Starts the container. On success prints its pid, then a line of six times (ns since the
/// epoch): start, cgroup creation begun, before the clone, after it, root filesystem mounted
/// (by the init), and exec done.
pub fn start(bundle: &Path, await_attach: bool) -> i32 {
    let began = unix_nanos();
    let loaded = load(bundle);
    let (spec, config) = match loaded {
        Ok(v) => v,
        Err(message) => {
            eprintln!("{message}");
            return 125;
        }
    };
    let (report_r, report_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("create report pipe: {e}");
            return 125;
        }
    };
    // SAFETY: berth-shim is single-threaded here (it was just exec'd), so fork is sound.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("fork the supervisor: {e}");
            125
        }
        Ok(ForkResult::Child) => {
            drop(report_r);
            let code = supervise(bundle, spec, &config, report_w, await_attach);
            // SAFETY: leaving the supervisor; nothing to unwind.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(report_w);
            let mut report = String::new();
            let _ = std::fs::File::from(report_r).read_to_string(&mut report);
            match report.split_once(' ') {
                Some(("ok", rest)) => {
                    let (pid, phases) = rest.split_once(' ').unwrap_or((rest, ""));
                    println!("{pid}\n{began} {phases}");
                    0
                }
                Some(("err", rest)) => {
                    let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
                    eprintln!("{message}");
                    code.parse().unwrap_or(125)
                }
                _ => {
                    eprintln!("the shim supervisor died before the container started");
                    125
                }
            }
        }
    }
}

fn load(bundle: &Path) -> Result<(Spec, ShimConfig), String> {
    let spec = Spec::load(bundle.join(files::SPEC))
        .map_err(|e| format!("read {}: {e}", bundle.join(files::SPEC).display()))?;
    let raw = std::fs::read(bundle.join(files::SHIM))
        .map_err(|e| format!("read {}: {e}", bundle.join(files::SHIM).display()))?;
    let config = serde_json::from_slice(&raw)
        .map_err(|e| format!("parse {}: {e}", bundle.join(files::SHIM).display()))?;
    Ok((spec, config))
}

/// Writes `data` to `path` durably: temp file, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&temp, path)?;
    sync_dir_of(path);
    Ok(())
}

fn sync_dir_of(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Writes `data` to `path` whole (temp file, rename): readers see all of it or nothing.
/// What [`Unsynced::sync`] then makes durable is the caller's to schedule: an fsync costs
/// about a millisecond here, too much for a path someone waits on.
fn write_visible(path: &Path, data: &[u8]) -> std::io::Result<Unsynced> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(data)?;
    std::fs::rename(&temp, path)?;
    Ok(Unsynced {
        file,
        path: path.to_owned(),
    })
}

/// A file [`write_visible`] wrote, not yet on disk.
struct Unsynced {
    file: std::fs::File,
    path: PathBuf,
}

impl Unsynced {
    /// fsyncs the file, then the directory that names it.
    fn sync(self) -> std::io::Result<()> {
        self.file.sync_all()?;
        sync_dir_of(&self.path);
        Ok(())
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

struct Supervisor<'a> {
    bundle: &'a Path,
    log: LogWriter,
    diag: std::fs::File,
    cgroup: Option<ContainerCgroup>,
}

impl Supervisor<'_> {
    fn note(&mut self, message: &str) {
        let _ = writeln!(self.diag, "{} {message}", now());
    }

    /// Notes an OOM kill and removes the cgroup (the container's processes are all gone:
    /// the pid namespace ends with its init).
    fn release_cgroup(&mut self, record: &mut ExitRecord) {
        if let Some(group) = self.cgroup.take() {
            record.oom_killed |= group.oom_killed();
            if let Err(e) = group.remove() {
                self.note(&e.to_string());
            }
        }
    }

    fn record_exit(&mut self, record: &ExitRecord) {
        if let Some(written) = self.write_exit(record) {
            self.sync_exit(written);
        }
    }

    /// Writes the exit record where readers find it; [`Self::sync_exit`] makes it durable.
    fn write_exit(&mut self, record: &ExitRecord) -> Option<Unsynced> {
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        match write_visible(&self.bundle.join(files::EXIT), &bytes) {
            Ok(written) => Some(written),
            Err(e) => {
                self.note(&format!("cannot record the exit status: {e}"));
                None
            }
        }
    }

    fn sync_exit(&mut self, written: Unsynced) {
        if let Err(e) = written.sync() {
            self.note(&format!("cannot sync the exit status to disk: {e}"));
        }
    }
}

fn report(mut pipe: std::fs::File, line: &str) {
    let _ = pipe.write_all(line.as_bytes());
}

fn exit_record(status: WaitStatus) -> Option<ExitRecord> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitRecord {
            exit_code: code,
            signal: None,
            oom_killed: false,
            finished_at: now(),
            error: None,
        }),
        WaitStatus::Signaled(_, sig, _) => Some(ExitRecord {
            exit_code: 128 + sig as i32,
            signal: Some(sig as i32),
            oom_killed: false,
            finished_at: now(),
            error: None,
        }),
        _ => None,
    }
}

fn supervise(
    bundle: &Path,
    spec: Spec,
    config: &ShimConfig,
    report_w: OwnedFd,
    await_attach: bool,
) -> i32 {
    let report_pipe = std::fs::File::from(report_w);
    let _ = setsid();
    // Leave berthd's pipes: it reads our parent's output until EOF.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
    let diag = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join("shim.log"))
    {
        Ok(f) => f,
        Err(e) => {
            report(report_pipe, &format!("err 125 open shim.log: {e}"));
            return 125;
        }
    };
    let log = match LogWriter::open(
        &config.log_path,
        config.log_max_bytes,
        config.log_max_files,
        config.log_format,
    ) {
        Ok(l) => l,
        Err(e) => {
            report(
                report_pipe,
                &format!("err 125 open log {}: {e}", config.log_path.display()),
            );
            return 125;
        }
    };
    let mut sup = Supervisor {
        bundle,
        log,
        diag,
        cgroup: None,
    };
    let socket_path = bundle.join(files::SOCKET);
    let _ = std::fs::remove_file(&socket_path);
    // Socket paths are limited to 108 bytes and data roots can be long: bind relative to
    // the bundle (clients connect through /proc/self/fd, see `connect`).
    if let Err(e) = std::env::set_current_dir(bundle) {
        report(
            report_pipe,
            &format!("err 125 enter {}: {e}", bundle.display()),
        );
        return 125;
    }
    let listener = match UnixListener::bind(files::SOCKET) {
        Ok(l) => l,
        Err(e) => {
            report(
                report_pipe,
                &format!("err 125 bind {}: {e}", socket_path.display()),
            );
            return 125;
        }
    };
    let _ = listener.set_nonblocking(true);

    let (fail_r, fail_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            report(report_pipe, &format!("err 125 create pipes: {e}"));
            return 125;
        }
    };
    let io = match ContainerIo::new(config) {
        Ok(io) => io,
        Err(e) => {
            report(
                report_pipe,
                &format!("err 125 set up the container's stdio: {e}"),
            );
            return 125;
        }
    };

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    let mut sigfd =
        match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(s) => s,
            Err(e) => {
                report(report_pipe, &format!("err 125 signalfd: {e}"));
                return 125;
            }
        };

    let fds = InitFds {
        stdin: io.child[0].as_raw_fd(),
        stdout: io.child[1].as_raw_fd(),
        stderr: io.child[2].as_raw_fd(),
        error: fail_w.as_raw_fd(),
        console: io.console.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|all| {
            all.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    match network.map(|n| n.path().clone()) {
        // No network namespace in the spec: the host's.
        None => {}
        Some(None) => flags |= CloneFlags::CLONE_NEWNET,
        // berthd made and plumbed it: the supervisor enters it, and the clone inherits it.
        Some(Some(path)) => {
            let entered = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
                });
            if let Err(e) = entered {
                report(
                    report_pipe,
                    &format!(
                        "err 125 enter the network namespace {}: {e}",
                        path.display()
                    ),
                );
                return 125;
            }
        }
    }
    // The group is made before the clone, so that the init never runs outside it: it is
    // born in it (v2) or joins it first thing (v1). See `cgroup::Entry` for why.
    let grouping = unix_nanos();
    let mut entry = None;
    if let Some(linux) = spec.linux()
        && let Some(path) = linux.cgroups_path()
    {
        let made = ContainerCgroup::create(&path.display().to_string(), linux.resources().as_ref())
            .and_then(|group| match group.entry() {
                Ok(e) => Ok((group, e)),
                Err(e) => {
                    let _ = group.remove();
                    Err(e)
                }
            });
        match made {
            Ok((group, e)) => {
                sup.cgroup = Some(group);
                entry = Some(e);
            }
            Err(e) => {
                let message = e.to_string();
                sup.record_exit(&ExitRecord {
                    exit_code: 125,
                    signal: None,
                    oom_killed: false,
                    finished_at: now(),
                    error: Some(message.clone()),
                });
                let _ = std::fs::remove_file(&socket_path);
                report(report_pipe, &format!("err 125 {message}"));
                return 0;
            }
        }
    }
    let before_clone = unix_nanos();
    let child = |join: &[PathBuf]| -> isize {
        // The container must not inherit the supervisor's blocked SIGCHLD.
        let mut all = SigSet::empty();
        all.add(Signal::SIGCHLD);
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&all), None);
        init::run(&spec, config, &fds, join)
    };
    let spawned = match &entry {
        Some(cgroup::Entry::JoinTasks(files)) => clone_plain(|| child(files), flags),
        Some(cgroup::Entry::CloneInto { dir, procs }) => {
            match clone_into_cgroup(|| child(&[]), flags, dir.as_fd()) {
                // A kernel before 5.7 has no clone3: the init joins the group itself, as
                // a whole process (the slow way).
                Err(Errno::ENOSYS) => clone_plain(|| child(std::slice::from_ref(procs)), flags),
                other => other,
            }
        }
        None => clone_plain(|| child(&[]), flags),
    };
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            let mut record = ExitRecord {
                exit_code: 125,
                signal: None,
                oom_killed: false,
                finished_at: now(),
                error: Some(format!("clone the container process: {e}")),
            };
            sup.release_cgroup(&mut record);
            let _ = std::fs::remove_file(&socket_path);
            report(
                report_pipe,
                &format!("err 125 clone the container process: {e}"),
            );
            return 125;
        }
    };
    let cloned = unix_nanos();
    drop(entry);
    drop(fail_w);
    let ContainerIo {
        child,
        mut outputs,
        mut input,
        console,
    } = io;
    drop(child);
    let console = console.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });

    if let Some(socket) = console
        && let Some(master) = receive_console(&socket)
    {
        let _ = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        if let Ok(reader) = master.try_clone() {
            outputs.push((reader, Stream::Stdout));
        }
        input = Some(master);
    }
    let mut failure = String::new();
    let _ = std::fs::File::from(fail_r).read_to_string(&mut failure);
    let mut mounted = 0i64;
    if let Some(rest) = failure.strip_prefix(super::init::MOUNTED_PREFIX) {
        let (time, after) = rest.split_once('\n').unwrap_or((rest, ""));
        mounted = time.trim().parse().unwrap_or(0);
        failure = after.to_owned();
    }
    if !failure.is_empty() {
        let (code, message) = failure.split_once(':').unwrap_or(("125", failure.as_str()));
        let code: i32 = code.parse().unwrap_or(125);
        let _ = waitpid(pid, None);
        drain(&mut sup, outputs);
        let mut record = ExitRecord {
            exit_code: code,
            signal: None,
            oom_killed: false,
            finished_at: now(),
            error: Some(message.to_owned()),
        };
        sup.release_cgroup(&mut record);
        sup.record_exit(&record);
        let _ = std::fs::remove_file(&socket_path);
        report(report_pipe, &format!("err {code} {message}"));
        return 0;
    }
    let execed = unix_nanos();
    // For people inspecting the bundle, there once the start returns. Not synced: a pid
    // means nothing after a reboot, and an fsync costs a millisecond.
    let _ = write_visible(
        &bundle.join(files::SHIM_PID),
        std::process::id().to_string().as_bytes(),
    );
    report(
        report_pipe,
        &format!("ok {pid} {grouping} {before_clone} {cloned} {mounted} {execed}"),
    );
    // The supervisor lives as long as its container, one per container: what setting up
    // took (the spec, parse buffers) goes back to the kernel now.
    drop(spec);
    crate::host::release_free_memory();

    let io = LoopIo {
        outputs,
        input,
        tty: config.tty,
        await_attach,
    };
    event_loop(&mut sup, pid, &listener, &mut sigfd, io);
    let _ = std::fs::remove_file(&socket_path);
    0
}

/// Clones the container's init with `flags` (new namespaces); the child runs `child`,
/// which execs or exits.
fn clone_plain(child: impl FnOnce() -> isize, flags: CloneFlags) -> nix::Result<Pid> {
    let mut stack = vec![0u8; 1024 * 1024];
    let mut child = Some(child);
    // SAFETY: the supervisor is single-threaded; the child runs on its own stack and only
    // execs or exits.
    unsafe {
        nix::sched::clone(
            Box::new(|| child.take().map_or(125, |f| f())),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
}

/// [`clone_plain`], the child created in the cgroup v2 directory `dir`.
fn clone_into_cgroup(
    child: impl FnOnce() -> isize,
    flags: CloneFlags,
    dir: BorrowedFd<'_>,
) -> nix::Result<Pid> {
    // Fork-like (no new stack, no shared memory): the child returns here with 0.
    let args = libc::clone_args {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: dir.as_raw_fd() as u64,
    };
    // SAFETY: clone3 with a valid, live argument struct of the size given; the supervisor
    // is single-threaded, so the child may run Rust code until it execs, as after fork.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match ret {
        0 => {
            let code = child();
            // SAFETY: leaving the child; the init execs before this unless it failed.
            unsafe { libc::_exit(code as i32) }
        }
        -1 => Err(Errno::last()),
        pid => Ok(Pid::from_raw(pid as i32)),
    }
}

/// `clone3`'s flag to create the child in the cgroup (v2) given by a directory fd.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

fn drain(sup: &mut Supervisor<'_>, outputs: Vec<(OwnedFd, Stream)>) {
    for (fd, stream) in outputs {
        let mut data = Vec::new();
        let _ = std::fs::File::from(fd).read_to_end(&mut data);
        let _ = sup.log.push(stream, &data);
    }
    let _ = sup.log.flush_pending();
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    waiting: bool,
    attached: bool,
}

/// The container's stdio: what the init gets, what the supervisor reads (output) and
/// writes (input).
struct ContainerIo {
    /// stdin, stdout, stderr of the init (/dev/null until the init opens its terminal,
    /// with a TTY).
    child: [OwnedFd; 3],
    /// Output the supervisor reads, by stream.
    outputs: Vec<(OwnedFd, Stream)>,
    /// Where input goes: the stdin pipe (`-i`) or the terminal (`-t`).
    input: Option<OwnedFd>,
    /// With a TTY: (our end, the init's end) of the socket the init sends the terminal's
    /// master over (it opens the terminal in the container's own devpts, so `tty` and
    /// `/dev/pts/N` work inside).
    console: Option<(OwnedFd, OwnedFd)>,
}

impl ContainerIo {
    fn new(config: &ShimConfig) -> nix::Result<ContainerIo> {
        let null = || {
            nix::fcntl::open(
                "/dev/null",
                OFlag::O_RDWR | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
        };
        if config.tty {
            use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
            let (ours, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )?;
            return Ok(ContainerIo {
                child: [null()?, null()?, null()?],
                outputs: Vec::new(),
                input: None,
                console: Some((ours, theirs)),
            });
        }
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (stdin, input) = if config.open_stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
            nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            (r, Some(w))
        } else {
            (null()?, None)
        };
        Ok(ContainerIo {
            child: [stdin, out_w, err_w],
            outputs: vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
            input,
            console: None,
        })
    }
}

/// Receives the terminal master the init sends (None if it failed before sending).
fn receive_console(socket: &OwnedFd) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for cmsg in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// How long an exit waits for the promised attach.
const ATTACH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The container's stdio as the event loop serves it.
struct LoopIo {
    outputs: Vec<(OwnedFd, Stream)>,
    input: Option<OwnedFd>,
    tty: bool,
    await_attach: bool,
}

/// Output kept for the first client that attaches (`run -it` attaches right after start).
const EARLY_OUTPUT_MAX: usize = 1 << 20;

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

fn respond(client: &mut Client, response: &Response) -> bool {
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    let _ = client.stream.set_nonblocking(false);
    let ok = client.stream.write_all(&line).is_ok();
    let _ = client.stream.set_nonblocking(true);
    ok
}

#[allow(clippy::too_many_lines)]
fn event_loop(
    sup: &mut Supervisor<'_>,
    pid: Pid,
    listener: &UnixListener,
    sigfd: &mut SignalFd,
    io: LoopIo,
) -> ExitRecord {
    let LoopIo {
        outputs,
        mut input,
        tty,
        await_attach,
    } = io;
    let mut awaiting_attach = await_attach;
    let mut exited_at: Option<std::time::Instant> = None;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    let mut outputs: Vec<Option<(OwnedFd, Stream)>> = outputs.into_iter().map(Some).collect();
    let mut pending_input: Vec<u8> = Vec::new();
    let mut close_input = false;
    let mut early: Option<Vec<(Stream, Vec<u8>)>> = Some(Vec::new());
    let mut early_bytes = 0usize;
    let mut clients: HashMap<RawFd, Client> = HashMap::new();
    let mut exited: Option<ExitRecord> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if exited.is_some() && exited_at.is_none() {
            exited_at = Some(std::time::Instant::now());
        }
        if awaiting_attach && exited_at.is_some_and(|at| at.elapsed() >= ATTACH_WAIT) {
            awaiting_attach = false;
        }
        if let Some(record) = &exited
            && outputs.iter().all(Option::is_none)
            && !awaiting_attach
        {
            let mut record = record.clone();
            sup.release_cgroup(&mut record);
            let record = &record;
            let _ = sup.log.flush_pending();
            // The record is in place before anyone hears of the exit and before the socket
            // stops answering: a client that misses the socket finds the file. It reaches
            // the disk after the waiters have their answer, which need not wait for that.
            let written = sup.write_exit(record);
            for client in clients.values_mut().filter(|c| c.waiting || c.attached) {
                respond(client, &Response::Exited(record.clone()));
            }
            if let Some(written) = written {
                sup.sync_exit(written);
            }
            return record.clone();
        }
        let mut pfds: Vec<PollFd<'_>> = Vec::new();
        let mut kinds: Vec<u8> = Vec::new();
        // SAFETY: each borrowed fd stays open until after poll returns below.
        let borrow = |fd: RawFd| unsafe { BorrowedFd::borrow_raw(fd) };
        for (fd, _) in outputs.iter().flatten() {
            pfds.push(PollFd::new(borrow(fd.as_raw_fd()), PollFlags::POLLIN));
            kinds.push(0);
        }
        pfds.push(PollFd::new(
            borrow(sigfd.as_fd().as_raw_fd()),
            PollFlags::POLLIN,
        ));
        kinds.push(1);
        pfds.push(PollFd::new(borrow(listener.as_raw_fd()), PollFlags::POLLIN));
        kinds.push(2);
        if let Some(fd) = &input
            && !pending_input.is_empty()
        {
            pfds.push(PollFd::new(borrow(fd.as_raw_fd()), PollFlags::POLLOUT));
            kinds.push(4);
        }
        let client_fds: Vec<RawFd> = clients.keys().copied().collect();
        for fd in &client_fds {
            pfds.push(PollFd::new(borrow(*fd), PollFlags::POLLIN));
            kinds.push(3);
        }
        // Once the container is gone, its output must end soon: wait at most a second.
        let timeout = if exited.is_some() {
            PollTimeout::from(1000u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut pfds, timeout) {
            Ok(0) if exited.is_some() => {
                if outputs.iter().any(Option::is_some) {
                    outputs.iter_mut().for_each(|o| *o = None);
                }
                continue;
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                sup.note(&format!("poll failed: {e}"));
                continue;
            }
        }
        let ready: Vec<(u8, RawFd, PollFlags)> = pfds
            .iter()
            .zip(&kinds)
            .filter_map(|(p, k)| {
                let ev = p.revents().unwrap_or(PollFlags::empty());
                (!ev.is_empty()).then(|| (*k, p.as_fd().as_raw_fd(), ev))
            })
            .collect();
        drop(pfds);
        for (kind, fd, _ev) in ready {
            match kind {
                0 => {
                    let slot = outputs
                        .iter_mut()
                        .find(|o| o.as_ref().is_some_and(|(f, _)| f.as_raw_fd() == fd));
                    if let Some(slot) = slot {
                        let Some((owned, stream)) = slot.as_ref() else {
                            continue;
                        };
                        let stream = *stream;
                        match nix::unistd::read(owned, &mut buf) {
                            Ok(0) => *slot = None,
                            Ok(n) => {
                                if let Err(e) = sup.log.push(stream, &buf[..n]) {
                                    sup.note(&format!("log write failed: {e}"));
                                }
                                if let Some(kept) = early.as_mut()
                                    && early_bytes + n <= EARLY_OUTPUT_MAX
                                {
                                    kept.push((stream, buf[..n].to_vec()));
                                    early_bytes += n;
                                }
                                let response = Response::Output {
                                    stream: stream_name(stream).to_owned(),
                                    data: BASE64.encode(&buf[..n]),
                                };
                                // A client that cannot keep up is dropped, never waited for
                                // long (its writes time out).
                                clients.retain(|_, c| !c.attached || respond(c, &response));
                            }
                            Err(Errno::EINTR | Errno::EAGAIN) => {}
                            // A pty answers EIO once the container's side is closed.
                            Err(_) => *slot = None,
                        }
                    }
                }
                1 => {
                    while let Ok(Some(_)) = sigfd.read_signal() {}
                    loop {
                        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(status) => {
                                if status.pid() == Some(pid)
                                    && let Some(record) = exit_record(status)
                                {
                                    exited = Some(record);
                                }
                            }
                        }
                    }
                }
                4 => {
                    if let Some(fd) = &input {
                        match nix::unistd::write(fd, &pending_input) {
                            Ok(n) => {
                                pending_input.drain(..n);
                            }
                            Err(Errno::EINTR | Errno::EAGAIN) => {}
                            Err(_) => {
                                pending_input.clear();
                                input = None;
                            }
                        }
                    }
                    if pending_input.is_empty() && close_input && !tty {
                        input = None;
                    }
                }
                2 => {
                    while let Ok((stream, _)) = listener.accept() {
                        let _ = stream.set_nonblocking(true);
                        let raw = stream.as_raw_fd();
                        clients.insert(
                            raw,
                            Client {
                                stream,
                                buf: Vec::new(),
                                waiting: false,
                                attached: false,
                            },
                        );
                    }
                }
                _ => {
                    let Some(client) = clients.get_mut(&fd) else {
                        continue;
                    };
                    let mut chunk = [0u8; 4096];
                    let closed = match client.stream.read(&mut chunk) {
                        Ok(0) => true,
                        Ok(n) => {
                            client.buf.extend_from_slice(&chunk[..n]);
                            client.buf.len() > 64 * 1024
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                        Err(_) => true,
                    };
                    let mut alive = !closed;
                    while let Some(nl) = client.buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = client.buf.drain(..=nl).collect();
                        let response = match serde_json::from_slice::<Request>(line.trim_ascii()) {
                            Err(e) => Response::Error {
                                message: format!("bad request: {e}"),
                            },
                            Ok(Request::State) => match &exited {
                                Some(r) => Response::Exited(r.clone()),
                                None => Response::Running { pid: pid.as_raw() },
                            },
                            Ok(Request::Kill { signal }) => {
                                match (&exited, Signal::try_from(signal)) {
                                    (Some(r), _) => Response::Exited(r.clone()),
                                    (None, Ok(sig)) => match nix::sys::signal::kill(pid, sig) {
                                        Ok(()) => Response::Ok,
                                        Err(e) => Response::Error {
                                            message: format!("kill: {e}"),
                                        },
                                    },
                                    (None, Err(_)) => Response::Error {
                                        message: format!("invalid signal {signal}"),
                                    },
                                }
                            }
                            Ok(Request::Attach) => {
                                client.attached = true;
                                awaiting_attach = false;
                                let _ = client
                                    .stream
                                    .set_write_timeout(Some(std::time::Duration::from_secs(2)));
                                alive &= respond(client, &Response::Ok);
                                for (stream, data) in early.take().unwrap_or_default() {
                                    alive &= respond(
                                        client,
                                        &Response::Output {
                                            stream: stream_name(stream).to_owned(),
                                            data: BASE64.encode(&data),
                                        },
                                    );
                                }
                                // `exited` follows once the output is drained (a pty
                                // delivers it after the exit), when the loop ends.
                                continue;
                            }
                            Ok(Request::Input { data }) => match (&input, BASE64.decode(data)) {
                                (None, _) => Response::Error {
                                    message:
                                        "the container's stdin is not open (create it with -i)"
                                            .into(),
                                },
                                (_, Err(e)) => Response::Error {
                                    message: format!("input is not base64: {e}"),
                                },
                                (Some(_), Ok(bytes))
                                    if pending_input.len() + bytes.len() > EARLY_OUTPUT_MAX =>
                                {
                                    let _ = bytes;
                                    Response::Error {
                                        message: "the container is not reading its input".into(),
                                    }
                                }
                                (Some(_), Ok(bytes)) => {
                                    pending_input.extend_from_slice(&bytes);
                                    Response::Ok
                                }
                            },
                            Ok(Request::CloseStdin) => {
                                close_input = true;
                                if pending_input.is_empty() && !tty {
                                    input = None;
                                }
                                Response::Ok
                            }
                            Ok(Request::Resize { rows, cols }) => match (&input, tty) {
                                (Some(master), true) => {
                                    let size = libc::winsize {
                                        ws_row: rows,
                                        ws_col: cols,
                                        ws_xpixel: 0,
                                        ws_ypixel: 0,
                                    };
                                    // SAFETY: TIOCSWINSZ reads a winsize struct that lives
                                    // across the call.
                                    if unsafe {
                                        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size)
                                    } == 0
                                    {
                                        Response::Ok
                                    } else {
                                        Response::Error {
                                            message: format!("resize: {}", Errno::last()),
                                        }
                                    }
                                }
                                _ => Response::Error {
                                    message: "the container has no terminal (create it with -t)"
                                        .into(),
                                },
                            },
                            // Answered when the loop ends: output drained, cgroup gone,
                            // exit recorded (and a promised attach served).
                            Ok(Request::Wait) => {
                                client.waiting = true;
                                continue;
                            }
                        };
                        alive &= respond(client, &response);
                    }
                    if !alive {
                        clients.remove(&fd);
                    }
                }
            }
        }
    }
}

/// Connects to the shim of the container whose bundle is `bundle`, whatever the length of
/// its path (through a directory descriptor and `/proc/self/fd`).
pub fn connect(bundle: &Path) -> std::io::Result<UnixStream> {
    let dir = std::fs::File::open(bundle)?;
    UnixStream::connect(format!(
        "/proc/self/fd/{}/{}",
        dir.as_raw_fd(),
        files::SOCKET
    ))
}

/// Sends one request to a shim and reads its answer. Blocking; for berthd's blocking pool.
pub fn call(
    bundle: &Path,
    request: &Request,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<Response> {
    let mut stream = connect(bundle)?;
    stream.set_read_timeout(timeout)?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = std::io::BufReader::new(stream);
    let mut answer = String::new();
    if reader.read_line(&mut answer)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the shim closed the connection",
        ));
    }
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// The exit record a shim left, if the container has exited.
pub fn read_exit(bundle: &Path) -> Option<ExitRecord> {
    std::fs::read(bundle.join(files::EXIT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Bundle path helper for callers holding only a container directory.
pub fn bundle_of(container_dir: &Path) -> PathBuf {
    container_dir.join("bundle")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup v2 mount of this host: `/sys/fs/cgroup` itself, or the hybrid layout's
    /// `unified` hierarchy (which holds no controllers, but places processes all the same).
    fn cgroup2_mount() -> Option<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts.lines().find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
    }

    #[test]
    fn clone_into_a_v2_group_creates_the_child_there() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mount = cgroup2_mount();
        let (true, Some(mount)) = (root, mount) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run as root on a host with a cgroup2 mount"
            );
            eprintln!("skipped: needs root and a cgroup2 mount");
            return;
        };
        let name = format!("berth-clone-into-test-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).unwrap();
        let fd: OwnedFd = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .unwrap()
            .into();
        // The test harness has other threads: the child only waits to be killed.
        let child = || -> isize {
            // SAFETY: pause is async-signal-safe.
            unsafe { libc::pause() };
            0
        };
        let pid = clone_into_cgroup(child, CloneFlags::empty(), fd.as_fd()).unwrap();
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        std::fs::remove_dir(&dir).unwrap();
        assert!(
            membership.lines().any(|l| l == format!("0::/{name}")),
            "{membership}"
        );
    }
}
