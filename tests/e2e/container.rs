//! Containers end to end (root): run, exit codes, output and logs, isolation and security
//! defaults, stop/kill/rm, surviving a berthd crash, and no leaked mounts.

use berth_tests::{Daemon, import_busybox, mounts_under, require_root};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn daemon_with_busybox() -> Daemon {
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    d
}

#[test]
fn run_rm_echo_hello_and_exit_codes() {
    require_root!();
    let d = daemon_with_busybox();
    let o = d.cli(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(out(&o), "hello\n", "{}", err(&o));
    assert_eq!(o.status.code(), Some(0));
    // --rm: gone (the removal runs right after the exit).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !out(&d.cli(&["ps", "-aq"])).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "--rm container was not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = d.cli(&[
        "run",
        "busybox",
        "sh",
        "-c",
        "echo out; echo oops >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(out(&o), "out\n");
    assert!(err(&o).contains("oops"));
    let o = d.cli(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));
    assert!(err(&o).contains("executable file not found"), "{}", err(&o));
    let o = d.cli(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    let o = d.cli(&["run", "--rm", "no-such-image:1", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("no such image"), "{}", err(&o));
    let o = d.cli(&["run", "--name", "dup", "busybox", "true"]);
    assert!(o.status.success());
    let o = d.cli(&["run", "--name", "dup", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("already in use"), "{}", err(&o));
}

#[test]
fn logs_and_lifecycle_commands() {
    require_root!();
    let d = daemon_with_busybox();
    let o = d.cli(&[
        "run",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; echo bad >&2",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let o = d.cli(&["logs", "talker"]);
    assert_eq!(out(&o), "line1\nline2\nline3\nline4\nline5\n");
    assert_eq!(err(&o), "bad\n");
    let o = d.cli(&["logs", "--tail", "2", "talker"]);
    assert_eq!(
        out(&o),
        "line5\n",
        "stderr line is the other of the last two"
    );
    let o = d.cli(&["logs", "-t", "talker"]);
    assert!(
        out(&o)
            .lines()
            .all(|l| l.contains('T') && l.ends_with(char::is_alphanumeric)),
        "{}",
        out(&o)
    );

    let o = d.cli(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "100"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim().len(), 64);
    assert!(out(&d.cli(&["ps"])).contains("sleeper"));
    let o = d.cli(&["rm", "sleeper"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("running"), "{}", err(&o));
    // PID 1 without a handler ignores SIGTERM: stop escalates to SIGKILL after the timeout.
    let started = std::time::Instant::now();
    assert!(d.cli(&["stop", "-t", "1", "sleeper"]).status.success());
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(out(&d.cli(&["wait", "sleeper"])).trim(), "137");
    // start again, then kill with a named signal.
    assert!(d.cli(&["start", "sleeper"]).status.success());
    assert!(d.cli(&["kill", "-s", "KILL", "sleeper"]).status.success());
    assert_eq!(out(&d.cli(&["wait", "sleeper"])).trim(), "137");
    let o = d.cli(&["kill", "-s", "NOPE", "sleeper"]);
    assert_eq!(o.status.code(), Some(1));
    // A trapped SIGTERM ends the container gracefully.
    let o = d.cli(&[
        "run",
        "-d",
        "--name",
        "graceful",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' TERM; while true; do sleep 0.1; done",
    ]);
    assert!(o.status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(d.cli(&["stop", "-t", "10", "graceful"]).status.success());
    assert_eq!(out(&d.cli(&["wait", "graceful"])).trim(), "42");
    let o = d.cli(&["container", "inspect", "graceful"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"]["exit_code"], 42);
    assert_eq!(v[0]["state"]["status"], "exited");
    // --stop-signal replaces SIGTERM; --stop-timeout is stop's default wait.
    let o = d.cli(&[
        "run",
        "-d",
        "--name",
        "custom",
        "--stop-signal",
        "SIGUSR1",
        "--stop-timeout",
        "5",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 43' USR1; while true; do sleep 0.1; done",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(d.cli(&["stop", "custom"]).status.success());
    assert_eq!(out(&d.cli(&["wait", "custom"])).trim(), "43");
    assert_eq!(
        d.cli(&["run", "--stop-signal", "SIGNOPE", "busybox", "true"])
            .status
            .code(),
        Some(125)
    );
    // rename
    assert!(d.cli(&["rename", "talker", "chatter"]).status.success());
    assert_eq!(out(&d.cli(&["logs", "--tail", "2", "chatter"])), "line5\n");
    let o = d.cli(&["rename", "chatter", "graceful"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("already in use"), "{}", err(&o));
    // Names are compared exactly: `c4` is free even when another container's id starts
    // with c4, and the exact name wins when resolving it.
    let id = out(&d.cli(&["create", "busybox", "true"]))
        .trim()
        .to_owned();
    let prefix = &id[..2];
    let o = d.cli(&["create", "--name", prefix, "busybox", "true"]);
    assert!(o.status.success(), "{}", err(&o));
    let named = out(&o).trim().to_owned();
    assert_ne!(named, id);
    assert_eq!(inspect(&d, prefix)["id"], named.as_str());
    let o = d.cli(&["rename", prefix, &format!("{prefix}x")]);
    assert!(o.status.success(), "{}", err(&o));
    let o = d.cli(&["rename", &format!("{prefix}x"), prefix]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(d.cli(&["rm", prefix, &id]).status.success());
    // prune removes every stopped container and nothing running.
    assert!(
        d.cli(&["run", "-d", "--name", "alive", "busybox", "sleep", "60"])
            .status
            .success()
    );
    let o = d.cli(&["container", "prune", "-f"]);
    assert!(out(&o).contains("Total reclaimed space"), "{}", err(&o));
    let left = out(&d.cli(&["ps", "-a", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&left).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alive"]);
    let o = d.cli(&["rm", "-f", "alive"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&d.cli(&["ps", "-aq"])).is_empty());
    let o = d.cli(&["rm", "ghost"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no such container: ghost"));
}

#[test]
fn isolation_and_security_defaults() {
    require_root!();
    let d = daemon_with_busybox();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        let o = d.cli(&all);
        assert!(o.status.success() || !args.is_empty(), "{}", err(&o));
        o
    };
    let o = run(&["--hostname", "boat", "busybox", "hostname"]);
    assert_eq!(out(&o).trim(), "boat");
    let o = run(&[
        "busybox",
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(
        out(&o).starts_with("1\n"),
        "not PID 1 in its own namespace: {}",
        out(&o)
    );
    // --cap-drop/--cap-add change the set: CHOWN (bit 0) out, NET_ADMIN (bit 12) in.
    let o = run(&[
        "--cap-drop",
        "chown",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(out(&o).contains("00000000a80435fa"), "{}", out(&o));
    let o = d.cli(&["run", "--rm", "--cap-add", "BOGUS", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("BOGUS"), "{}", err(&o));
    // docker's default capabilities (0xa80425fb), no more.
    let o = run(&["busybox", "grep", "CapEff", "/proc/self/status"]);
    assert!(out(&o).contains("00000000a80425fb"), "{}", out(&o));
    let o = run(&[
        "-u",
        "nobody",
        "busybox",
        "sh",
        "-c",
        "id -u; grep CapEff /proc/self/status",
    ]);
    assert!(
        out(&o).starts_with("65534\n") && out(&o).contains("0000000000000000"),
        "{}",
        out(&o)
    );
    // Masked paths that exist on this host read as empty inside the container.
    let mut checked = 0;
    for path in [
        "/proc/timer_list",
        "/proc/keys",
        "/proc/sched_debug",
        "/proc/kcore",
        "/sys/firmware",
        "/proc/acpi",
        "/proc/scsi",
    ] {
        let host = std::path::Path::new(path);
        if !host.exists() {
            continue;
        }
        let script = if host.is_dir() {
            format!("ls -A {path} | wc -c")
        } else {
            format!("wc -c < {path}")
        };
        let o = run(&["busybox", "sh", "-c", &script]);
        assert_eq!(out(&o).trim(), "0", "{path} is not masked");
        checked += 1;
    }
    assert!(
        checked >= 2,
        "too few masked paths exist on this host to check"
    );
    let o = run(&[
        "busybox",
        "sh",
        "-c",
        "echo 1 > /proc/sys/kernel/domainname && echo WRITABLE",
    ]);
    assert!(!out(&o).contains("WRITABLE"), "/proc/sys is writable");
    let o = d.cli(&["run", "--rm", "--read-only", "busybox", "touch", "/probe"]);
    assert_ne!(o.status.code(), Some(0), "wrote to a read-only root");
    let o = run(&[
        "-w",
        "/work/dir",
        "-e",
        "GREETING=ahoy",
        "busybox",
        "sh",
        "-c",
        "pwd; echo $GREETING; echo $HOSTNAME",
    ]);
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["/work/dir", "ahoy"]);
    let o = run(&["busybox", "cat", "/etc/hostname", "/etc/hosts"]);
    assert!(out(&o).contains("localhost"));
    let o = run(&["busybox", "ls", "/dev"]);
    for dev in ["null", "zero", "random", "urandom", "tty", "pts", "shm"] {
        assert!(
            out(&o).split_whitespace().any(|x| x == dev),
            "/dev/{dev} missing: {}",
            out(&o)
        );
    }
    // Writes land in the container's own layer, not in the image.
    let o = d.cli(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo data > /tmp/f",
    ]);
    assert!(o.status.success());
    let o = run(&["busybox", "ls", "/tmp"]);
    assert!(
        !out(&o).contains('f'),
        "a container's write leaked into the image"
    );
}

#[test]
fn containers_survive_a_berthd_crash() {
    require_root!();
    let mut d = daemon_with_busybox();
    let before = mounts_under(&d.data_root);
    assert!(
        d.cli(&["run", "-d", "--name", "long", "busybox", "sleep", "60"])
            .status
            .success()
    );
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "late",
            "busybox",
            "sh",
            "-c",
            "sleep 1; echo written-while-down; exit 3"
        ])
        .status
        .success()
    );
    let o = d.cli(&["container", "inspect", "long"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pid = v[0]["state"]["pid"].as_i64().unwrap();
    d.kill9();
    std::thread::sleep(std::time::Duration::from_millis(2000));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with berthd"
    );
    d.restart();
    let o = d.cli(&["ps"]);
    assert!(out(&o).contains("long"), "{}", out(&o));
    let o = d.cli(&["container", "inspect", "late"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"]["status"], "exited");
    assert_eq!(
        v[0]["state"]["exit_code"], 3,
        "the exit while berthd was down was lost"
    );
    assert_eq!(out(&d.cli(&["logs", "late"])), "written-while-down\n");
    // Reattached: stop and wait still work on the survivor.
    assert!(d.cli(&["stop", "-t", "1", "long"]).status.success());
    assert_eq!(out(&d.cli(&["wait", "long"])).trim(), "137");
    assert!(d.cli(&["rm", "long", "late"]).status.success());
    assert_eq!(mounts_under(&d.data_root), before, "mounts leaked");
}

#[test]
fn image_symlinks_cannot_redirect_mounts_onto_the_host() {
    require_root!();
    let d = daemon_with_busybox();
    // An image whose /proc and /etc/hostname are symlinks to host paths.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).unwrap();
    let target = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(target.path(), root.path().join("proc")).unwrap();
    std::os::unix::fs::symlink(
        target.path().join("hostname"),
        root.path().join("etc/hostname"),
    )
    .unwrap();
    let tarball = root.path().join("../evil-rootfs.tar");
    assert!(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    assert!(
        d.cli(&["import", tarball.to_str().unwrap(), "evil:1"])
            .status
            .success()
    );
    let _ = d.cli(&["run", "--rm", "evil:1", "/bin/sh", "-c", "true"]);
    assert!(
        mounts_under(target.path()).is_empty(),
        "a mount landed on the host through an image symlink"
    );
    assert!(!target.path().join("hostname").exists());
}

#[test]
fn restart_policies() {
    require_root!();
    let d = daemon_with_busybox();
    let inspect = |name: &str| -> serde_json::Value {
        let o = d.cli(&["container", "inspect", name]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0].clone()
    };
    // on-failure:2 restarts a failing container twice, then leaves it exited.
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo run; exit 3"
        ])
        .status
        .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = inspect("flaky");
        if v["state"]["restart_count"] == 2 && v["state"]["status"] == "exited" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "on-failure:2 did not settle: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        inspect("flaky")["state"]["restart_count"],
        2,
        "restarted beyond its limit"
    );
    assert_eq!(out(&d.cli(&["logs", "flaky"])), "run\nrun\nrun\n");
    // on-failure does not restart a success; always does, until stopped.
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "fine",
            "--restart",
            "on-failure",
            "busybox",
            "true"
        ])
        .status
        .success()
    );
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "forever",
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "sleep 0.2"
        ])
        .status
        .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(inspect("fine")["state"]["restart_count"], 0);
    assert!(
        inspect("forever")["state"]["restart_count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(d.cli(&["stop", "-t", "1", "forever"]).status.success());
    let settled = inspect("forever")["state"]["restart_count"].clone();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        inspect("forever")["state"]["restart_count"],
        settled,
        "restarted after a stop"
    );
    assert_eq!(inspect("forever")["state"]["status"], "exited");
    // Bad or conflicting policies.
    let o = d.cli(&["run", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("invalid restart policy"));
    let o = d.cli(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("conflicting options"));
    assert!(
        d.cli(&["rm", "-f", "flaky", "fine", "forever"])
            .status
            .success()
    );
}

#[test]
fn restart_policies_apply_when_berthd_starts() {
    require_root!();
    let mut d = daemon_with_busybox();
    let pid_of = |d: &Daemon, name: &str| -> Option<i64> {
        let o = d.cli(&["container", "inspect", name]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0]["state"]["pid"].as_i64()
    };
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "keeper",
            "--restart",
            "always",
            "busybox",
            "sleep",
            "600"
        ])
        .status
        .success()
    );
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "parked",
            "--restart",
            "unless-stopped",
            "busybox",
            "sleep",
            "600"
        ])
        .status
        .success()
    );
    assert!(d.cli(&["stop", "-t", "1", "parked"]).status.success());
    let old = pid_of(&d, "keeper").expect("keeper runs");
    d.kill9();
    // The container dies while berthd is down.
    berth_tests::signal(old as u32, libc::SIGKILL);
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.restart();
    let new = pid_of(&d, "keeper").expect("an `always` container is started again with berthd");
    assert_ne!(new, old);
    assert!(std::path::Path::new(&format!("/proc/{new}")).exists());
    assert_eq!(
        pid_of(&d, "parked"),
        None,
        "a stopped unless-stopped container was started"
    );
    assert!(d.cli(&["rm", "-f", "keeper", "parked"]).status.success());
}

/// Whether the host runs the unified (v2) cgroup hierarchy.
fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The container's cgroup directories that exist on the host.
fn cgroup_dirs_of(id: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if cgroup_v2() {
        let p = std::path::PathBuf::from(format!("/sys/fs/cgroup/berth/{id}"));
        if p.exists() {
            found.push(p);
        }
    } else if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for d in dirs.flatten() {
            let p = d.path().join("berth").join(id);
            if p.exists() {
                found.push(p);
            }
        }
    }
    found
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    let o = d.cli(&["container", "inspect", name]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0].clone()
}

#[test]
fn cgroup_limits_oom_and_cleanup() {
    require_root!();
    let d = daemon_with_busybox();
    // The container sees its own limits through its cgroup namespace.
    let script = if cgroup_v2() {
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.swap.max /sys/fs/cgroup/pids.max \
         /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpuset.cpus; cat /proc/self/cgroup"
    } else {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
         /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares \
         /sys/fs/cgroup/cpuset/cpuset.cpus; cat /proc/self/cgroup"
    };
    let o = d.cli(&[
        "run",
        "--name",
        "limited",
        "-m",
        "64m",
        "--memory-swap",
        "96m",
        "--pids-limit",
        "20",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    if cgroup_v2() {
        assert_eq!(
            &lines[..5],
            ["67108864", "33554432", "20", "50000 100000", "0"]
        );
        assert!(lines.contains(&"0::/"), "{text}");
    } else {
        assert_eq!(
            &lines[..6],
            ["67108864", "100663296", "20", "50000", "512", "0"],
            "{text}"
        );
        // Its cgroup namespace shows its own group as the root.
        assert!(lines.iter().any(|l| l.ends_with(":memory:/")), "{text}");
    }
    let id = inspect(&d, "limited")["id"].as_str().unwrap().to_owned();
    assert!(
        cgroup_dirs_of(&id).is_empty(),
        "cgroups left after exit: {:?}",
        cgroup_dirs_of(&id)
    );

    // The pids limit holds: forks beyond it fail.
    let o = d.cli(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
    ]);
    assert!(err(&o).contains("fork"), "no fork failure: {}", err(&o));

    // Memory exhaustion: killed by the OOM killer, reported as such (137, OOMKilled).
    let o = d.cli(&[
        "run",
        "--name",
        "hog",
        "-m",
        "8m",
        "--memory-swap",
        "8m",
        "busybox",
        "sh",
        "-c",
        "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", err(&o));
    let v = inspect(&d, "hog");
    assert_eq!(v["state"]["oom_killed"], true, "{v}");
    assert_eq!(v["state"]["exit_code"], 137);
    let hog_id = v["id"].as_str().unwrap().to_owned();
    assert!(cgroup_dirs_of(&hog_id).is_empty());

    // Invalid limits are refused before anything is made.
    for (args, needle) in [
        (&["-m", "1m"][..], "minimum memory"),
        (&["--memory-swap", "64m"][..], "--memory"),
        (
            &["-m", "64m", "--memory-swap", "32m"][..],
            "at least --memory",
        ),
        (&["--cpus", "999"][..], "--cpus"),
        (&["--cpuset-cpus", "999"][..], "not available"),
        (&["--cpuset-cpus", "x-y"][..], "--cpuset-cpus"),
        (&["--cpu-shares", "1"][..], "--cpu-shares"),
        (&["-m", "12q"][..], "unit"),
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["busybox", "true"]);
        let o = d.cli(&all);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(needle), "{args:?}: {}", err(&o));
    }
    assert!(d.cli(&["rm", "limited", "hog"]).status.success());
}

/// Whether `pid` is gone (or only a zombie waiting for its reaper).
fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn removing_a_container_whose_shim_died_kills_what_it_left() {
    require_root!();
    let d = daemon_with_busybox();
    let o = d.cli(&["run", "-d", "--name", "orphan", "busybox", "sleep", "1000"]);
    assert!(o.status.success(), "{}", err(&o));
    let id = out(&o).trim().to_owned();
    let pid = inspect(&d, "orphan")["state"]["pid"].as_u64().unwrap() as u32;
    let shim_pid: u32 = std::fs::read_to_string(
        d.data_root
            .join("containers")
            .join(&id)
            .join("bundle")
            .join("shim.pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    berth_tests::signal(shim_pid, libc::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !process_gone(shim_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(process_gone(shim_pid), "the shim did not die");
    // Unsupervised now, the container still runs.
    assert!(!process_gone(pid));
    assert!(!cgroup_dirs_of(&id).is_empty());

    let o = d.cli(&["rm", "-f", "orphan"]);
    assert!(o.status.success(), "{}", err(&o));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !process_gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        process_gone(pid),
        "rm -f left the container's process {pid} running"
    );
    assert_eq!(cgroup_dirs_of(&id), Vec::<std::path::PathBuf>::new());
    assert!(!d.data_root.join("containers").join(&id).exists());
}

#[test]
fn seccomp_privileged_and_init() {
    require_root!();
    let d = daemon_with_busybox();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        d.cli(&all)
    };
    // The default filter: in force, refuses namespace and mount calls even with the
    // capability that would otherwise allow them... unless SYS_ADMIN is granted.
    let o = run(&["busybox", "grep", "^Seccomp:", "/proc/self/status"]);
    assert!(out(&o).contains("2"), "{}", out(&o));
    let o = run(&["busybox", "sh", "-c", "unshare -n true"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("not permitted"), "{}", err(&o));
    let o = run(&[
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /m && mount -t tmpfs t /m && echo mounted",
    ]);
    assert_eq!(out(&o).trim(), "mounted", "{}", err(&o));
    let o = run(&[
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    ]);
    assert!(out(&o).contains("0"), "{}", out(&o));
    let o = run(&["--security-opt", "seccomp=/tmp/x.json", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("unconfined"), "{}", err(&o));
    // setuid programs keep working: no_new_privs stays off by default.
    let o = run(&["busybox", "grep", "^NoNewPrivs:", "/proc/self/status"]);
    assert!(out(&o).contains("0"), "{}", out(&o));

    // --privileged: every capability the host has, no filter, writable /sys, host devices.
    let host_bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_owned()))
        .unwrap();
    let o = run(&[
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "grep -E '^(CapEff|Seccomp):' /proc/self/status; mkdir -p /m && mount -t tmpfs t /m \
         && echo mounted; ls /dev | wc -l",
    ]);
    let text = out(&o);
    assert!(text.contains(&host_bounding), "{text} vs {host_bounding}");
    assert!(text.contains("mounted"), "{text}{}", err(&o));
    let devices: usize = text.lines().last().unwrap().trim().parse().unwrap();
    let o = run(&["busybox", "sh", "-c", "ls /dev | wc -l"]);
    let default_devices: usize = out(&o).trim().parse().unwrap();
    assert!(devices > default_devices, "{devices} vs {default_devices}");

    // --init: PID 1 forwards signals and reaps orphans.
    let o = run(&[
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/comm; (sleep 0.2 &); sleep 1; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l",
    ]);
    assert_eq!(out(&o), "berth-init\n0\n", "{}", err(&o));
    assert!(
        d.cli(&[
            "run", "-d", "--init", "--name", "ini", "busybox", "sleep", "60"
        ])
        .status
        .success()
    );
    // sleep is not PID 1 here, so SIGTERM ends it at once (as PID 1 it would be ignored).
    let started = std::time::Instant::now();
    assert!(d.cli(&["stop", "-t", "10", "ini"]).status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out(&d.cli(&["wait", "ini"])).trim(), "143");
    assert!(d.cli(&["rm", "ini"]).status.success());
}

#[test]
fn pause_unpause_top_stats_restart() {
    require_root!();
    let d = daemon_with_busybox();
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "busy",
            "-m",
            "32m",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.05; done"
        ])
        .status
        .success()
    );
    let o = d.cli(&["top", "busy"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.starts_with("UID"), "{text}");
    assert!(text.contains("sh -c trap"), "{text}");

    let o = d.cli(&["stats", "--no-stream", "--format", "json", "busy"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["memory_limit"], 32 * 1024 * 1024);
    assert!(v[0]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(v[0]["pids"].as_u64().unwrap() >= 1);

    assert!(d.cli(&["pause", "busy"]).status.success());
    assert_eq!(inspect(&d, "busy")["state"]["status"], "paused");
    let o = d.cli(&["pause", "busy"]);
    assert!(err(&o).contains("already paused"), "{}", err(&o));
    // Frozen: no CPU time passes.
    let cpu = |d: &Daemon| {
        let o = d.cli(&["stats", "--no-stream", "--format", "json", "busy"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["cpu_percent"].as_f64().unwrap()
    };
    assert_eq!(cpu(&d), 0.0);
    assert!(d.cli(&["unpause", "busy"]).status.success());
    assert_eq!(inspect(&d, "busy")["state"]["status"], "running");
    let o = d.cli(&["unpause", "busy"]);
    assert!(err(&o).contains("not paused"), "{}", err(&o));

    let first_pid = inspect(&d, "busy")["state"]["pid"].clone();
    assert!(d.cli(&["restart", "-t", "5", "busy"]).status.success());
    let v = inspect(&d, "busy");
    assert_eq!(v["state"]["status"], "running");
    assert_ne!(v["state"]["pid"], first_pid);
    // The first run's monitor must not mark the restarted container exited.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(inspect(&d, "busy")["state"]["status"], "running");

    // A paused container still stops (thawed so it can act on the signal).
    assert!(d.cli(&["pause", "busy"]).status.success());
    assert!(d.cli(&["stop", "-t", "5", "busy"]).status.success());
    assert_eq!(inspect(&d, "busy")["state"]["exit_code"], 0);
    let id = inspect(&d, "busy")["id"].as_str().unwrap().to_owned();
    assert!(d.cli(&["rm", "busy"]).status.success());
    assert!(cgroup_dirs_of(&id).is_empty());
    let o = d.cli(&["top", "busy"]);
    assert!(!o.status.success());
}

#[test]
fn exec_runs_in_the_container() {
    require_root!();
    let d = daemon_with_busybox();
    assert!(
        d.cli(&[
            "run",
            "-d",
            "--name",
            "host1",
            "--hostname",
            "inside",
            "-e",
            "FOO=bar",
            "-m",
            "64m",
            "busybox",
            "sleep",
            "60"
        ])
        .status
        .success()
    );
    // Same namespaces (hostname, PID 1 is the container's), environment, cgroup, seccomp.
    let o = d.cli(&[
        "exec",
        "-e",
        "EXTRA=1",
        "host1",
        "sh",
        "-c",
        "hostname; echo $FOO $EXTRA; cat /proc/1/cmdline; echo; \
         grep ^Seccomp: /proc/self/status; echo oops >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "inside");
    assert_eq!(lines[1], "bar 1");
    assert!(lines[2].starts_with("sleep"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert_eq!(err(&o), "oops\n");
    // Its process joined the container's cgroup.
    let o = d.cli(&["exec", "host1", "cat", "/proc/self/cgroup"]);
    assert!(
        out(&o).contains(":/\n") || out(&o).contains("0::/"),
        "{}",
        out(&o)
    );
    // stdin with -i.
    let mut child = std::process::Command::new(berth_tests::bin("berth"))
        .args(["-H", &d.host(), "exec", "-i", "host1", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "through stdin\n");
    assert!(o.status.success());
    // -u and -w.
    let o = d.cli(&[
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "host1",
        "sh",
        "-c",
        "id -u; pwd",
    ]);
    assert_eq!(out(&o), "65534\n/tmp\n", "{}", err(&o));
    // Docker's exit codes for commands that cannot run.
    let o = d.cli(&["exec", "host1", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(err(&o).contains("executable file not found"), "{}", err(&o));
    let o = d.cli(&["exec", "host1", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126));
    // Not running, paused, unknown: clear errors.
    assert!(d.cli(&["pause", "host1"]).status.success());
    let o = d.cli(&["exec", "host1", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("paused"), "{}", err(&o));
    assert!(d.cli(&["unpause", "host1"]).status.success());
    let o = d.cli(&["exec", "nope", "true"]);
    assert!(err(&o).contains("no such container"), "{}", err(&o));
    assert!(d.cli(&["rm", "-f", "host1"]).status.success());
}

#[test]
fn cp_in_and_out_of_running_and_stopped_containers() {
    require_root!();
    let d = daemon_with_busybox();
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), "one\n").unwrap();
    std::fs::write(src.join("sub/b"), "two\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    assert!(
        d.cli(&["run", "-d", "--name", "box", "busybox", "sleep", "60"])
            .status
            .success()
    );
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    // Into an existing directory, and as a new name.
    let o = d.cli(&["cp", &s(&src), "box:/tmp/"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = d.cli(&["cp", &s(&src.join("a")), "box:/tmp/renamed"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = d.cli(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/src/a /tmp/src/sub/b /tmp/renamed; ls -l /tmp/src/link",
    ]);
    let text = out(&o);
    assert!(text.starts_with("one\ntwo\none\n"), "{text}{}", err(&o));
    // The symlink was copied as a link, not followed on the host.
    assert!(text.contains("-> /etc/passwd"), "{text}");
    // Out again, to a new name and into an existing directory.
    let back = local.path().join("back");
    let o = d.cli(&["cp", "box:/tmp/src", &s(&back)]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        std::fs::read_to_string(back.join("sub/b")).unwrap(),
        "two\n"
    );
    let o = d.cli(&["cp", "box:/etc/hostname", &s(local.path())]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(local.path().join("hostname").exists());
    // A path in the container never resolves on the host: an absolute symlink inside it
    // points into the container's root.
    let o = d.cli(&["cp", "box:/tmp/src/link", &s(&local.path().join("pw"))]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        std::fs::symlink_metadata(local.path().join("pw"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Errors: missing source, missing destination directory, container to container.
    let o = d.cli(&["cp", "box:/nope", &s(&local.path().join("x"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("No such file"), "{}", err(&o));
    let o = d.cli(&["cp", &s(&src.join("a")), "box:/no/such/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no such directory"), "{}", err(&o));
    let o = d.cli(&["cp", "box:/a", "box:/b"]);
    assert_eq!(o.status.code(), Some(125));
    // A stopped container: its files are reachable, and writes land in its layer.
    assert!(d.cli(&["stop", "-t", "0", "box"]).status.success());
    let o = d.cli(&["cp", &s(&src.join("a")), "box:/tmp/while-stopped"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = d.cli(&["cp", "box:/tmp/renamed", &s(&local.path().join("r2"))]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        std::fs::read_to_string(local.path().join("r2")).unwrap(),
        "one\n"
    );
    assert!(d.cli(&["start", "box"]).status.success());
    let o = d.cli(&["exec", "box", "cat", "/tmp/while-stopped"]);
    assert_eq!(out(&o), "one\n", "{}", err(&o));
    // cp to stdout is a tar archive.
    let o = d.cli(&["cp", "box:/etc/hostname", "-"]);
    let mut archive = tar::Archive::new(&o.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["hostname"]);
    assert!(d.cli(&["rm", "-f", "box"]).status.success());
}

/// A berth CLI running on a pseudo-terminal of the test's own, as in a real terminal.
struct OnTerminal {
    master: std::fs::File,
    child: std::process::Child,
}

impl OnTerminal {
    fn spawn(d: &Daemon, args: &[&str], rows: u16, cols: u16) -> OnTerminal {
        use std::os::fd::FromRawFd;
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors and reads the winsize, all alive here.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: openpty just returned these descriptors to us.
        let (master, slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
        cmd.arg("-H").arg(d.host()).args(args);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and TIOCSCTTY in the child before exec, so the CLI's terminal is
        // a controlling terminal as in a real session.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        OnTerminal { master, child }
    }

    fn type_in(&mut self, text: &[u8]) {
        use std::io::Write;
        self.master.write_all(text).unwrap();
    }

    /// Reads the terminal until `needle` shows up (or fails after 10 s).
    fn expect(&mut self, needle: &str) -> String {
        use std::io::Read;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.master);
        while !String::from_utf8_lossy(&seen).contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} not seen; got {:?}",
                String::from_utf8_lossy(&seen)
            );
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one live descriptor.
            if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    fn wait(mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "the CLI did not exit");
            // Keep the terminal drained so the CLI never blocks writing to it.
            let _ = self.expect_nothing();
        }
    }

    fn expect_nothing(&mut self) -> Option<()> {
        use std::io::Read;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.master);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live descriptor.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
            let mut buf = [0u8; 4096];
            let _ = self.master.read(&mut buf);
        }
        Some(())
    }
}

#[test]
fn interactive_stdin_tty_attach_and_detach() {
    require_root!();
    let d = daemon_with_busybox();
    // -i without a terminal: piped stdin reaches the container and closes at EOF.
    let mut child = std::process::Command::new(berth_tests::bin("berth"))
        .args(["-H", &d.host(), "run", "-i", "--rm", "busybox", "sh", "-c"])
        .arg("cat; echo err >&2; exit 5")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"piped in\n")
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(out(&o), "piped in\n");
    assert_eq!(err(&o), "err\n");
    // -t: the container has a terminal of the caller's size; a command that exits at once
    // still shows its output.
    for _ in 0..5 {
        let o = d.cli(&["run", "-t", "--rm", "busybox", "echo", "quick"]);
        assert_eq!(out(&o), "quick\r\n");
    }
    let mut term = OnTerminal::spawn(
        &d,
        &["run", "-it", "--name", "shell", "busybox", "sh"],
        33,
        111,
    );
    term.type_in(b"tty; stty size\n");
    let seen = term.expect("33 111");
    assert!(seen.contains("/dev/pts/0"), "{seen}");
    // Ctrl-P Ctrl-Q detaches and leaves the shell running.
    term.type_in(b"\x10\x11");
    assert_eq!(term.wait(), Some(0));
    assert_eq!(inspect(&d, "shell")["state"]["status"], "running");
    // Attach again, resize, and leave with the shell's exit code.
    let mut term = OnTerminal::spawn(&d, &["attach", "shell"], 20, 70);
    term.type_in(b"stty size\n");
    term.expect("20 70");
    term.type_in(b"exit 3\n");
    assert_eq!(term.wait(), Some(3));
    assert_eq!(inspect(&d, "shell")["state"]["exit_code"], 3);
    // exec -it: a terminal of its own in the container's devpts, sized like the caller's.
    assert!(
        d.cli(&["run", "-d", "--name", "box", "busybox", "sleep", "60"])
            .status
            .success()
    );
    let mut term = OnTerminal::spawn(&d, &["exec", "-it", "box", "sh"], 25, 90);
    term.type_in(b"tty; stty size\n");
    let seen = term.expect("25 90");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    term.type_in(b"exit 4\n");
    assert_eq!(term.wait(), Some(4));
    let o = d.cli(&[
        "exec",
        "-t",
        "box",
        "sh",
        "-c",
        "test -t 1 && echo on-a-tty",
    ]);
    assert_eq!(out(&o), "on-a-tty\r\n", "{}", err(&o));
    assert!(d.cli(&["rm", "-f", "box"]).status.success());
    // Input to a container without an open stdin, attach to a stopped one: clear errors.
    let o = d.cli(&["attach", "shell"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not running"), "{}", err(&o));
    assert!(d.cli(&["rm", "shell"]).status.success());
}

#[test]
fn ps_filters() {
    require_root!();
    let d = daemon_with_busybox();
    assert!(
        d.cli(&[
            "run", "-d", "--name", "web-1", "-l", "team=a", "busybox", "sleep", "60"
        ])
        .status
        .success()
    );
    assert!(
        d.cli(&[
            "run", "--name", "job-1", "-l", "team=b", "busybox", "sh", "-c", "exit 3"
        ])
        .status
        .code()
            == Some(3)
    );
    let names = |args: &[&str]| {
        let mut all = vec!["ps", "--format", "json"];
        all.extend_from_slice(args);
        let o = d.cli(&all);
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&[]), ["web-1"]);
    assert_eq!(names(&["-a"]), ["job-1", "web-1"]);
    assert_eq!(names(&["--filter", "status=exited"]), ["job-1"]);
    assert_eq!(names(&["-f", "exited=3"]), ["job-1"]);
    assert_eq!(names(&["-a", "-f", "label=team=a"]), ["web-1"]);
    assert_eq!(names(&["-a", "-f", "label=team"]), ["job-1", "web-1"]);
    assert_eq!(names(&["-a", "-f", "name=job"]), ["job-1"]);
    assert_eq!(
        names(&["-a", "-f", "ancestor=busybox", "-f", "status=running"]),
        ["web-1"]
    );
    let o = d.cli(&["ps", "-f", "bogus=1"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("bogus"), "{}", err(&o));
    assert!(d.cli(&["rm", "-f", "web-1", "job-1"]).status.success());
}

#[test]
fn bind_and_tmpfs_mounts() {
    require_root!();
    let d = daemon_with_busybox();
    let host = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    std::fs::write(host.path().join("greeting"), "hello from the host\n").unwrap();
    // -v: read-write, the container's writes land on the host.
    let o = d.cli(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", s(host.path())),
        "busybox",
        "sh",
        "-c",
        "cat /data/greeting; echo written > /data/out",
    ]);
    assert_eq!(out(&o), "hello from the host\n", "{}", err(&o));
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "written\n"
    );
    // :ro refuses writes; a single file can be bound; -v creates a missing host directory.
    let made = host.path().join("made/by/v");
    let o = d.cli(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data:ro", s(host.path())),
        "-v",
        &format!("{}:/etc/greeting", s(&host.path().join("greeting"))),
        "-v",
        &format!("{}:/made", s(&made)),
        "busybox",
        "sh",
        "-c",
        "touch /data/nope || echo refused; cat /etc/greeting; ls -d /made",
    ]);
    assert_eq!(
        out(&o),
        "refused\nhello from the host\n/made\n",
        "{}",
        err(&o)
    );
    assert!(made.is_dir());
    // --mount type=bind refuses a missing source; --mount readonly; tmpfs with a size.
    let o = d.cli(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,source=/no/such/dir,target=/x",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    let o = d.cli(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m,mode=700",
        "--mount",
        "type=tmpfs,target=/t2",
        "busybox",
        "sh",
        "-c",
        "grep -E ' /(scratch|t2) ' /proc/mounts; ls -ld /scratch; \
         head -c 2000000 /dev/zero > /scratch/big || echo full",
    ]);
    let text = out(&o);
    assert!(
        text.contains("/scratch tmpfs") && text.contains("size=1024k"),
        "{text}"
    );
    assert!(text.contains("/t2 tmpfs"), "{text}");
    assert!(text.contains("drwx------"), "{text}");
    assert!(text.ends_with("full\n"), "{text}");
    // Bad mounts are refused before anything runs.
    for args in [
        &["-v", "/tmp:/"][..],
        &["-v", "/tmp:relative"][..],
        &["-v", "/tmp:/a", "-v", "/tmp:/a"][..],
        &["-v", "bad?name:/a"][..],
        &["--mount", "type=volume,target=/a,tmpfs-size=1m"][..],
        &["--mount", "type=tmpfs,source=/x,target=/a"][..],
        &["--tmpfs", "/a:bogus"][..],
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["busybox", "true"]);
        let o = d.cli(&all);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", err(&o));
    }
    // Mounts exist only in the container's mount namespace: nothing on the host.
    assert!(mounts_under(host.path()).is_empty());
}

#[test]
fn container_processes_start_with_default_signal_dispositions() {
    require_root!();
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    // SIGPIPE is not ignored: `yes` dies when `head` has what it wants (in run and exec).
    let o = d.cli(&["run", "--rm", "busybox", "sh", "-c", "yes y | head -n 3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "y\ny\ny\n");
    let o = d.cli(&["run", "-d", "--name", "pipes", "busybox", "sleep", "60"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = d.cli(&["exec", "pipes", "sh", "-c", "yes n | head -n 2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "n\nn\n");
    let o = d.cli(&["exec", "pipes", "grep", "SigIgn", "/proc/self/status"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "SigIgn:\t0000000000000000"
    );
    let _ = d.cli(&["rm", "-f", "pipes"]);
}

/// Runs `berth ARGS` whose reader takes nothing for `stall`, then reads everything: the
/// bytes it read, the exit status and stderr.
fn read_after_a_stall(
    d: &Daemon,
    args: &[&str],
    stall: std::time::Duration,
) -> (usize, std::process::ExitStatus, String) {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new(berth_tests::bin("berth"))
        .arg("-H")
        .arg(d.host())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    std::thread::sleep(stall);
    let mut stdout = child.stdout.take().expect("piped");
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("reading berth's output: {e}"),
        }
    }
    let status = berth_tests::wait_with_timeout(&mut child, std::time::Duration::from_secs(120));
    (total, status, errors.join().unwrap_or_default())
}

/// A reader that stops taking output for a while loses nothing: `exec`, `logs -f` and `cp`
/// wait for it (berthd, and the process behind the stream, are slowed down), as docker's do.
/// The CLI's client used to read ahead until its per-stream buffer of 1024 items overflowed,
/// then drop the stream.
#[test]
fn streams_wait_for_a_reader_that_stalls() {
    require_root!();
    let d = daemon_with_busybox();
    let stall = std::time::Duration::from_secs(4);
    // Far more than 1024 output chunks.
    const BYTES: usize = 64 << 20;
    let o = d.cli(&["run", "-d", "--name", "box", "busybox", "sleep", "600"]);
    assert!(o.status.success(), "{}", err(&o));

    let count = BYTES.to_string();
    let (read, status, errors) = read_after_a_stall(
        &d,
        &["exec", "box", "head", "-c", &count, "/dev/zero"],
        stall,
    );
    assert!(status.success(), "exec: {status}: {errors}");
    assert_eq!(read, BYTES, "exec: {errors}");

    let o = d.cli(&[
        "exec",
        "box",
        "sh",
        "-c",
        &format!("head -c {count} /dev/zero > /big"),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let (read, status, errors) = read_after_a_stall(&d, &["cp", "box:/big", "-"], stall);
    assert!(status.success(), "cp: {status}: {errors}");
    // A tar stream: the file, its header and the end-of-archive blocks.
    assert!(read > BYTES, "cp gave {read} bytes: {errors}");

    // Far more than the 65536 log lines a stream of lines used to hold.
    const LINES: usize = 200_000;
    let o = d.cli(&[
        "run",
        "--name",
        "chatty",
        "busybox",
        "busybox",
        "seq",
        "1",
        &LINES.to_string(),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let (read, status, errors) = read_after_a_stall(&d, &["logs", "-f", "chatty"], stall);
    assert!(status.success(), "logs -f: {status}: {errors}");
    let expected: usize = (1..=LINES).map(|i| i.to_string().len() + 1).sum();
    assert_eq!(read, expected, "logs -f: {errors}");
}
