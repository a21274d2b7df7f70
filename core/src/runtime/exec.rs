//! `berth-shim exec BUNDLE PID PROCESS`: one more process in a running container (`docker
//! exec`). The shim joins the container's cgroup and namespaces (those of its init, `PID`),
//! forks the process there with the container's capabilities, seccomp filter and user
//! rules, and stays as its parent: it forwards signals and exits the way the process did.
//! The process's stdio are the shim's own (berthd's pipes).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cgroup::ContainerCgroup;
use super::init::{self, INIT_EXIT_SETUP, InitError};
use super::seccomp;
use super::spec::{SECCOMP_ANNOTATION, merge_env};
use super::{files, init::USER_ANNOTATION};

/// What to run, from `container.exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProcess {
    /// Command and arguments.
    pub args: Vec<String>,
    /// `KEY=value` added to the container's environment.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub cwd: Option<String>,
    /// `user[:group]` (default: the container's).
    pub user: Option<String>,
    /// Run it on a terminal of its own (`exec -t`), relayed to the shim's stdio.
    #[serde(default)]
    pub tty: bool,
}

/// The file descriptor berthd passes to `exec -t` shims for resize requests: lines of
/// `ROWS COLS`.
pub const RESIZE_FD: i32 = 3;

/// Runs the exec; returns the exit code for the shim process.
pub fn exec(bundle: &Path, init_pid: i32, process: &str) -> i32 {
    match prepare(bundle, init_pid, process) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {}", e.message);
            e.code
        }
    }
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> InitError {
    move |e| InitError {
        code: INIT_EXIT_SETUP,
        message: format!("{what}: {e}"),
    }
}

fn fail(code: i32, message: impl Into<String>) -> InitError {
    InitError {
        code,
        message: message.into(),
    }
}

fn prepare(bundle: &Path, init_pid: i32, process: &str) -> Result<i32, InitError> {
    let spec = Spec::load(bundle.join(files::SPEC)).map_err(|e| {
        fail(
            INIT_EXIT_SETUP,
            format!("read {}: {e}", bundle.join(files::SPEC).display()),
        )
    })?;
    let process: ExecProcess = serde_json::from_str(process)
        .map_err(|e| fail(INIT_EXIT_SETUP, format!("bad exec request: {e}")))?;
    if process.args.is_empty() {
        return Err(fail(INIT_EXIT_SETUP, "no command given"));
    }
    let container = spec
        .process()
        .as_ref()
        .ok_or_else(|| fail(INIT_EXIT_SETUP, "the container's spec has no process"))?;

    // Into the container's cgroup first, so that the forked process is born in it.
    if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
        let path = path.display().to_string();
        let group = ContainerCgroup::open(&path)
            .ok_or_else(|| fail(INIT_EXIT_SETUP, "the container is not running"))?;
        group
            .join_self()
            .map_err(|e| fail(INIT_EXIT_SETUP, e.to_string()))?;
    }
    // Every namespace file is opened before any is entered: entering the mount namespace
    // changes what /proc shows.
    let mut namespaces: Vec<(OwnedFd, CloneFlags, &str)> = Vec::new();
    for (name, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let fd = nix::fcntl::open(
            format!("/proc/{init_pid}/ns/{name}").as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            fail(
                INIT_EXIT_SETUP,
                format!("the container is not running (its {name} namespace: {e})"),
            )
        })?;
        namespaces.push((fd, flag, name));
    }
    for (fd, flag, name) in &namespaces {
        nix::sched::setns(fd, *flag).map_err(setup(format!("enter the {name} namespace")))?;
    }
    drop(namespaces);
    // The terminal comes from the container's own devpts (the mount namespace we are in).
    let terminal = if process.tty {
        use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(setup("open /dev/ptmx"))?;
        grantpt(&master).map_err(setup("grantpt"))?;
        unlockpt(&master).map_err(setup("unlockpt"))?;
        let name = ptsname_r(&master).map_err(setup("ptsname"))?;
        // SAFETY: the descriptor is the pty master's, whose ownership moves here.
        let master = unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                master,
            ))
        };
        Some((master, name))
    } else {
        None
    };

    let mut all = SigSet::all();
    all.remove(Signal::SIGKILL);
    all.remove(Signal::SIGSTOP);
    let mut previous = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut previous))
        .map_err(setup("block signals"))?;
    // SAFETY: berth-shim is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(setup("fork"))? {
        ForkResult::Parent { child } => match terminal {
            Some((master, _)) => relay(child, master, &all),
            None => init::reap_forever(child, &all),
        },
        ForkResult::Child => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
            if let Some((master, name)) = terminal
                && let Err(e) = use_terminal(master, &name)
            {
                eprintln!("berth: {}", e.message);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(e.code) }
            }
            let e = match run_in_container(&spec, container, &process) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            eprintln!("berth: {}", e.message);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(e.code) }
        }
    }
}

/// In the child: a new session whose controlling terminal, stdin, stdout and stderr are
/// the terminal `name`.
fn use_terminal(master: OwnedFd, name: &str) -> Result<(), InitError> {
    drop(master);
    nix::unistd::setsid().map_err(setup("setsid"))?;
    let slave = nix::fcntl::open(name, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(setup(format!("open {name}")))?;
    for to in 0..3 {
        // SAFETY: dup2 between descriptors this process owns.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&slave), to) } < 0 {
            return Err(fail(
                INIT_EXIT_SETUP,
                format!("set up the terminal: {}", Errno::last()),
            ));
        }
    }
    // SAFETY: TIOCSCTTY on the terminal at fd 0, in our new session.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(fail(
            INIT_EXIT_SETUP,
            format!("make the terminal controlling: {}", Errno::last()),
        ));
    }
    Ok(())
}

/// In the parent with `exec -t`: copies stdin to the terminal and the terminal to stdout,
/// applies resize requests from [`RESIZE_FD`], forwards signals, and exits the way the
/// process did.
fn relay(child: nix::unistd::Pid, master: OwnedFd, signals: &SigSet) -> ! {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use std::io::{BufRead, Write};
    use std::os::fd::{AsFd, BorrowedFd, FromRawFd};

    let Ok(sigfd) = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC) else {
        init::reap_forever(child, signals)
    };
    // SAFETY: berthd gives exec -t shims the read end of a pipe at RESIZE_FD (or nothing
    // there, and the read fails).
    let resize_source = unsafe { std::fs::File::from_raw_fd(RESIZE_FD) };
    let mut resizes = Some(std::io::BufReader::new(resize_source));
    let mut stdin_open = true;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 32 * 1024];
    let exit = |code: i32| -> ! {
        let _ = std::io::stdout().flush();
        // SAFETY: leaving the shim.
        unsafe { libc::_exit(code) }
    };
    loop {
        // SAFETY: the descriptors stay open for the duration of the poll.
        let stdin_fd = unsafe { BorrowedFd::borrow_raw(0) };
        let resize_fd = resizes.as_ref().map(|r| r.get_ref().as_fd());
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        if let Some(fd) = resize_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            match nix::unistd::read(&master, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
                // EIO: the process's side is closed; its exit follows.
                _ => {}
            }
        }
        if ready[1] {
            while let Ok(Some(info)) = sigfd.read_signal() {
                let signal = info.ssi_signo as i32;
                if signal != libc::SIGCHLD {
                    // SAFETY: kill with a pid and a signal number.
                    unsafe {
                        libc::kill(child.as_raw(), signal);
                    }
                    continue;
                }
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => {
                        drain(&master, &mut stdout, &mut buf);
                        exit(code)
                    }
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        drain(&master, &mut stdout, &mut buf);
                        exit(128 + sig as i32)
                    }
                    _ => {}
                }
                break;
            }
        }
        let mut next = 2;
        if stdin_open {
            if ready[next] {
                // SAFETY: reading our own stdin.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    stdin_open = false;
                } else {
                    let _ = nix::unistd::write(&master, &buf[..n as usize]);
                }
            }
            next += 1;
        }
        if let Some(reader) = resizes.as_mut()
            && ready.get(next).copied().unwrap_or(false)
        {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => resizes = None,
                Ok(_) => {
                    let mut parts = line.split_whitespace().map(str::parse::<u16>);
                    if let (Some(Ok(rows)), Some(Ok(cols))) = (parts.next(), parts.next()) {
                        let size = libc::winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ reads a live winsize.
                        unsafe {
                            libc::ioctl(
                                std::os::fd::AsRawFd::as_raw_fd(&master),
                                libc::TIOCSWINSZ,
                                &size,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// What the terminal still holds once the process has exited.
fn drain(master: &OwnedFd, out: &mut impl std::io::Write, buf: &mut [u8]) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(50u16)), Ok(n) if n > 0) {
            return;
        }
        match nix::unistd::read(master, buf) {
            Ok(n) if n > 0 => {
                let _ = out.write_all(&buf[..n]);
            }
            _ => return,
        }
    }
}

enum Never {}

fn run_in_container(
    spec: &Spec,
    container: &oci_spec::runtime::Process,
    process: &ExecProcess,
) -> Result<Never, InitError> {
    let user_spec = process
        .user
        .clone()
        .or_else(|| init::annotation(spec, USER_ANNOTATION).map(str::to_owned))
        .unwrap_or_default();
    let user = init::resolve_user(user_spec)?;
    let mut env = merge_env(container.env().as_deref().unwrap_or_default(), &process.env);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")));
    }
    let cwd = process
        .cwd
        .clone()
        .unwrap_or_else(|| container.cwd().display().to_string());
    for rl in container.rlimits().as_deref().unwrap_or_default() {
        if let Some(resource) = init::rlimit_resource(&rl.typ().to_string()) {
            let lim = libc::rlimit {
                rlim_cur: rl.soft(),
                rlim_max: rl.hard(),
            };
            // SAFETY: setrlimit with a valid resource and a live struct.
            unsafe {
                libc::setrlimit(resource, &lim);
            }
        }
    }
    if container.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail(
                INIT_EXIT_SETUP,
                format!("set no_new_privs: {}", Errno::last()),
            ));
        }
    }
    if init::annotation(spec, SECCOMP_ANNOTATION).is_some() {
        let bounding = init::capability_set(
            container
                .capabilities()
                .as_ref()
                .and_then(|c| c.bounding().as_ref()),
        );
        for program in seccomp::default_filters(&bounding).map_err(|m| fail(INIT_EXIT_SETUP, m))? {
            seccomp::install(&program)
                .map_err(|e| fail(INIT_EXIT_SETUP, format!("install the seccomp filter: {e}")))?;
        }
    }
    init::apply_user_and_capabilities(container, &user)?;
    nix::unistd::chdir(cwd.as_str()).map_err(setup(format!("chdir to {cwd}")))?;
    let program = &process.args[0];
    let path = init::find_executable(program, &env)?;
    // The process dies with this shim (berthd kills the shim when the caller goes away).
    // Set after the uid change, which clears it.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| fail(INIT_EXIT_SETUP, "NUL in command"))?;
    let cargs: Vec<CString> = process
        .args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(INIT_EXIT_SETUP, "NUL in arguments"))?;
    let cenv: Vec<CString> = env
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(INIT_EXIT_SETUP, "NUL in environment"))?;
    super::init::default_signal_dispositions();
    let e = nix::unistd::execve(&cpath, &cargs, &cenv).unwrap_err();
    Err(init::exec_error(program, e))
}
