//! Volumes and plugins end to end: the built-in `local` driver, named and anonymous volumes
//! in containers, plugin management, hostile plugins failing cleanly, and plugins as OCI
//! artifacts.

use std::time::{Duration, Instant};

use berth_tests::{
    Daemon, import_busybox, import_busybox_with, mounts_under, plugin_component, require_root,
};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let o = d.cli(args);
    assert!(o.status.success(), "berth {args:?} failed: {}", err(&o));
    out(&o)
}

fn fails(d: &Daemon, args: &[&str]) -> String {
    let o = d.cli(args);
    assert!(
        !o.status.success(),
        "berth {args:?} should fail: {}",
        out(&o)
    );
    err(&o)
}

fn json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(d, args)).expect("json")
}

fn volume_names(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = ok(d, &["volume", "ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn named_anonymous_and_image_volumes() {
    require_root!();
    let mut d = Daemon::start();
    import_busybox(&d, "busybox");
    import_busybox_with(&d, "withvol", &["VOLUME /vol"]);

    let plugins = json(&d, &["plugin", "ls", "--format", "json"]);
    let local = plugins
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "local"))
        .unwrap_or_else(|| panic!("no local plugin: {plugins}"));
    assert_eq!(local["state"], "running");
    assert_eq!(local["source"], "builtin");

    // A named volume: data written by one container is read by the next.
    assert_eq!(ok(&d, &["volume", "create", "data"]), "data\n");
    assert_eq!(
        ok(&d, &["volume", "create", "data"]),
        "data\n",
        "idempotent"
    );
    let o = d.cli(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        ok(
            &d,
            &["run", "--rm", "-v", "data:/d:ro", "busybox", "cat", "/d/f"]
        ),
        "kept\n"
    );
    let o = d.cli(&[
        "run",
        "--rm",
        "-v",
        "data:/d:ro",
        "busybox",
        "touch",
        "/d/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("Read-only"), "{}", err(&o));
    let info = json(&d, &["volume", "inspect", "data"]);
    let mountpoint = info[0]["mountpoint"].as_str().unwrap().to_owned();
    assert!(
        mountpoint.starts_with(d.data_root.canonicalize().unwrap().to_str().unwrap()),
        "{mountpoint}"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{mountpoint}/f")).unwrap(),
        "kept\n"
    );
    assert_eq!(info[0]["driver"], "local");
    assert_eq!(info[0]["anonymous"], false);

    // Named on first use, with --mount; in use: refused removal.
    ok(
        &d,
        &[
            "create",
            "--name",
            "holder",
            "--mount",
            "type=volume,source=auto,target=/m",
            "busybox",
            "true",
        ],
    );
    assert!(volume_names(&d).contains(&"auto".to_owned()));
    let e = fails(&d, &["volume", "rm", "auto"]);
    assert!(e.contains("in use"), "{e}");
    let mounts = json(&d, &["container", "inspect", "holder"])[0]["mounts"].clone();
    assert_eq!(mounts[0]["type"], "volume", "{mounts}");
    assert_eq!(mounts[0]["name"], "auto");
    assert_eq!(mounts[0]["destination"], "/m");
    ok(&d, &["rm", "holder"]);
    ok(&d, &["volume", "rm", "auto"]);

    // An image VOLUME gets an anonymous volume; rm keeps it, prune removes it.
    let before = volume_names(&d);
    ok(
        &d,
        &[
            "run",
            "--name",
            "a",
            "withvol",
            "sh",
            "-c",
            "echo x > /vol/x",
        ],
    );
    let after = volume_names(&d);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    let anon: Vec<_> = after.iter().filter(|v| !before.contains(v)).collect();
    assert_eq!(anon[0].len(), 64);
    let v = json(&d, &["volume", "inspect", anon[0]]);
    assert_eq!(v[0]["anonymous"], true);
    ok(&d, &["rm", "a"]);
    assert!(volume_names(&d).contains(anon[0]), "rm without -v keeps it");
    // Naming an anonymous volume explicitly makes it this container's named volume: --rm
    // leaves it alone (as docker).
    ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{}:/x", anon[0]),
            "busybox",
            "true",
        ],
    );
    wait_until("containers to go", || ok(&d, &["ps", "-aq"]).is_empty());
    assert!(
        volume_names(&d).contains(anon[0]),
        "--rm removed a named use"
    );
    // A create refused for its name makes no volume.
    ok(&d, &["create", "--name", "taken", "busybox", "true"]);
    let o = d.cli(&[
        "create", "--name", "taken", "-v", "never:/n", "busybox", "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(!volume_names(&d).contains(&"never".to_owned()));
    ok(&d, &["rm", "taken"]);
    let pruned = ok(&d, &["volume", "prune", "-f"]);
    assert!(pruned.contains(anon[0].as_str()), "{pruned}");
    assert!(!volume_names(&d).contains(anon[0]));
    assert!(
        volume_names(&d).contains(&"data".to_owned()),
        "prune keeps named ones"
    );

    // rm -v and --rm remove anonymous volumes (image VOLUMEs and -v /path); a -v NAME over
    // the image's VOLUME path replaces its anonymous volume.
    ok(
        &d,
        &["run", "--name", "b", "-v", "/extra", "withvol", "true"],
    );
    assert_eq!(volume_names(&d).len(), before.len() + 2);
    ok(&d, &["rm", "-v", "b"]);
    assert_eq!(volume_names(&d), before);
    ok(&d, &["run", "--rm", "withvol", "true"]);
    wait_until("--rm to remove the anonymous volume", || {
        volume_names(&d) == before
    });
    ok(
        &d,
        &["run", "--rm", "-v", "data:/vol", "withvol", "cat", "/vol/f"],
    );
    assert_eq!(volume_names(&d), before);

    // Bad input: clear errors, nothing left behind.
    let o = d.cli(&["run", "--rm", "-v", "bad name:/x", "busybox", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("invalid volume name"), "{}", err(&o));
    let o = d.cli(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=x,target=/x,volume-driver=nope",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("nope"), "{}", err(&o));
    let e = fails(&d, &["volume", "create", "-o", "size=1g", "opt"]);
    assert!(e.contains("option"), "{e}");
    let e = fails(&d, &["volume", "inspect", "nosuch"]);
    assert!(e.contains("no such volume"), "{e}");
    let e = fails(&d, &["volume", "create", "--driver", "nope", "v"]);
    assert!(e.contains("nope"), "{e}");
    assert_eq!(volume_names(&d), before);
    ok(&d, &["volume", "rm", "-f", "nosuch"]);

    // An empty volume is filled with what the image has at its mount point (files, modes,
    // symlinks), once: a volume with content is left alone.
    ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            "tools:/bin",
            "busybox",
            "sh",
            "-c",
            "echo x > /bin/marker",
        ],
    );
    let tools = json(&d, &["volume", "inspect", "tools"])[0]["mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let tools = std::path::Path::new(&tools);
    assert!(tools.join("busybox").is_file());
    assert_eq!(
        std::fs::read_link(tools.join("sh")).unwrap(),
        std::path::Path::new("busybox")
    );
    ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            "tools:/bin",
            "busybox",
            "cat",
            "/bin/marker",
        ],
    );
    assert!(tools.join("marker").is_file());
    wait_until("containers to go", || ok(&d, &["ps", "-aq"]).is_empty());
    ok(&d, &["volume", "rm", "tools"]);
    // nocopy (-v NAME:/path:nocopy, --mount volume-nocopy) leaves an empty volume empty.
    ok(
        &d,
        &["run", "--rm", "-v", "bare:/etc:nocopy", "busybox", "true"],
    );
    ok(
        &d,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=bare2,target=/etc,volume-nocopy",
            "busybox",
            "true",
        ],
    );
    ok(&d, &["run", "--rm", "-v", "full:/etc", "busybox", "true"]);
    wait_until("containers to go", || ok(&d, &["ps", "-aq"]).is_empty());
    for (volume, copied) in [("bare", false), ("bare2", false), ("full", true)] {
        let mp = json(&d, &["volume", "inspect", volume])[0]["mountpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            std::path::Path::new(&mp).join("passwd").exists(),
            copied,
            "{volume}"
        );
        ok(&d, &["volume", "rm", volume]);
    }
    // --volume-driver applies to the image's VOLUMEs too.
    let o = d.cli(&["run", "--rm", "--volume-driver", "nope", "withvol", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("nope"), "{}", err(&o));

    // Data survives berthd restarting.
    assert!(d.stop().success());
    d.restart();
    assert_eq!(
        ok(
            &d,
            &[
                "run",
                "--rm",
                "-v",
                "data:/data",
                "busybox",
                "cat",
                "/data/f"
            ]
        ),
        "kept\n"
    );
    wait_until("containers to go", || ok(&d, &["ps", "-aq"]).is_empty());
    let pruned = ok(&d, &["volume", "prune", "-a"]);
    assert!(pruned.contains("data"), "{pruned}");
    assert!(volume_names(&d).is_empty());
    assert!(!std::path::Path::new(&mountpoint).exists());
    assert!(mounts_under(&d.data_root).is_empty());
}

#[test]
fn plugin_management() {
    let (Some(spin), Some(wrongwit)) = (
        plugin_component("fixtures/spin.wasm"),
        plugin_component("fixtures/wrongwit.wasm"),
    ) else {
        return;
    };
    let d = Daemon::start();
    let spin = spin.to_str().unwrap();
    let installed = ok(&d, &["plugin", "install", "--name", "spinner", spin]);
    assert!(installed.contains("spinner"), "{installed}");
    let e = fails(&d, &["plugin", "install", "--name", "spinner", spin]);
    assert!(e.contains("already installed"), "{e}");
    let p = json(&d, &["plugin", "inspect", "spinner"]);
    assert_eq!(p[0]["kind"], "volume");
    assert_eq!(p[0]["wit_version"], "1.0.0");
    assert_eq!(p[0]["state"], "running");
    assert!(p[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    ok(&d, &["volume", "create", "--driver", "spinner", "v1"]);
    // A call that misses its deadline fails with that reason, and the event log records
    // the trap.
    let e = fails(&d, &["volume", "create", "--driver", "spinner", "spin"]);
    assert!(e.contains("deadline"), "{e}");
    let ls = ok(&d, &["volume", "ls", "--filter", "driver=spinner"]);
    assert!(ls.contains("spinner") && ls.contains("v1"), "{ls}");

    // Configuration: a key the plugin refuses is not kept; an accepted one is.
    let e = fails(&d, &["plugin", "set", "spinner", "nonsense=1"]);
    assert!(e.contains("nonsense"), "{e}");
    assert_eq!(
        json(&d, &["plugin", "inspect", "spinner"])[0]["config"],
        serde_json::json!({})
    );

    // In use: no remove; disable stops it, enable brings it back.
    let e = fails(&d, &["plugin", "rm", "spinner"]);
    assert!(e.contains("in use"), "{e}");
    ok(&d, &["plugin", "disable", "spinner"]);
    assert_eq!(
        json(&d, &["plugin", "inspect", "spinner"])[0]["state"],
        "disabled"
    );
    let e = fails(&d, &["volume", "create", "--driver", "spinner", "v2"]);
    assert!(e.contains("disabled"), "{e}");
    ok(&d, &["plugin", "enable", "spinner"]);
    ok(&d, &["volume", "rm", "v1"]);
    ok(&d, &["plugin", "rm", "spinner"]);
    assert!(!ok(&d, &["plugin", "ls"]).contains("spinner"));
    assert!(!d.data_root.join("plugins/spinner").exists());

    // Refused at install: wrong WIT version (naming both), not a component, bad names, and
    // the built-in driver cannot be removed.
    let e = fails(
        &d,
        &[
            "plugin",
            "install",
            "--name",
            "old",
            wrongwit.to_str().unwrap(),
        ],
    );
    assert!(e.contains("@1.0.0") && e.contains("2.0.0"), "{e}");
    let junk = d.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let e = fails(&d, &["plugin", "install", junk.to_str().unwrap()]);
    assert!(e.contains("cannot load"), "{e}");
    let e = fails(&d, &["plugin", "install", "--name", "Bad/Name", spin]);
    assert!(e.contains("invalid plugin name"), "{e}");
    let e = fails(&d, &["plugin", "rm", "local"]);
    assert!(e.contains("built into berthd"), "{e}");
    let e = fails(&d, &["plugin", "inspect", "nosuch"]);
    assert!(e.contains("no such plugin"), "{e}");
    assert_eq!(
        ok(&d, &["plugin", "ls", "-q"]),
        "bridge\njson-file\nlocal\nsyslog\n"
    );

    // Everything above is in the event log, in order.
    let until = berth_tests::until_now();
    let events = ok(
        &d,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--format",
            "json",
            "-f",
            "plugin=spinner",
        ],
    );
    let seen: Vec<String> = events
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            e["action"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        seen,
        ["install", "trap", "disable", "enable", "remove"],
        "{events}"
    );
    assert!(events.contains("deadline"), "{events}");
    let volumes = ok(
        &d,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "-f",
            "type=volume",
            "-f",
            "volume=v1",
        ],
    );
    assert!(
        volumes.contains("volume create v1") && volumes.contains("volume destroy v1"),
        "{volumes}"
    );
}

#[test]
fn bind_type_local_volumes_only_under_allowed_roots() {
    require_root!();
    let roots = tempfile::tempdir().unwrap();
    let allowed = roots.path().join("allowed");
    let site = allowed.join("site");
    let outside = roots.path().join("outside");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(site.join("index.html"), "hello\n").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("sneaky")).unwrap();
    let d = Daemon::start_with(&["--volume-bind-roots", allowed.to_str().unwrap()]);
    import_busybox(&d, "busybox");
    let device = format!("device={}", site.display());
    ok(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            &device,
            "site",
        ],
    );
    let v = json(&d, &["volume", "inspect", "site"]);
    assert_eq!(
        v[0]["mountpoint"],
        site.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        ok(
            &d,
            &[
                "run",
                "--rm",
                "-v",
                "site:/s",
                "busybox",
                "cat",
                "/s/index.html"
            ]
        ),
        "hello\n"
    );
    ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            "site:/s",
            "busybox",
            "sh",
            "-c",
            "echo w > /s/new",
        ],
    );
    assert_eq!(std::fs::read_to_string(site.join("new")).unwrap(), "w\n");
    // Outside the roots (directly or through a symlink), or not a bind: refused.
    for (dev, says) in [
        (format!("device={}", outside.display()), "volume-bind-roots"),
        (
            format!("device={}/sneaky", allowed.display()),
            "volume-bind-roots",
        ),
        (format!("device={}", allowed.display()), "volume-bind-roots"),
        ("device=relative/dir".to_owned(), "absolute"),
    ] {
        let e = fails(
            &d,
            &[
                "volume",
                "create",
                "-o",
                "type=none",
                "-o",
                "o=bind",
                "-o",
                &dev,
                "x",
            ],
        );
        assert!(e.contains(says), "{dev}: {e}");
    }
    let e = fails(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=nfs",
            "-o",
            "o=addr=1.2.3.4",
            "-o",
            "device=:/x",
            "x",
        ],
    );
    assert!(e.contains("binds host directories only"), "{e}");
    wait_until("containers to go", || ok(&d, &["ps", "-aq"]).is_empty());
    ok(&d, &["volume", "rm", "site"]);
    assert!(
        site.join("index.html").exists(),
        "removing the volume keeps the host's data"
    );
    assert!(volume_names(&d).is_empty());
    drop(d);
    // Without roots configured, bind-type volumes are refused.
    let d = Daemon::start();
    let e = fails(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            &device,
            "y",
        ],
    );
    assert!(e.contains("disabled"), "{e}");
}

#[test]
fn the_sdk_example_drivers_run_in_berthd() {
    require_root!();
    // The Python driver (componentize-py) and the copyable Rust template.
    let examples = [
        ("py", "examples/python-volume.wasm"),
        ("rsx", "examples/rust-volume.wasm"),
    ];
    let mut files = Vec::new();
    for (name, path) in examples {
        let Some(f) = plugin_component(path) else {
            return;
        };
        files.push((name, f));
    }
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    for (name, file) in &files {
        ok(
            &d,
            &["plugin", "install", "--name", name, file.to_str().unwrap()],
        );
        let p = json(&d, &["plugin", "inspect", name]);
        assert_eq!(p[0]["kind"], "volume", "{p}");
        let volume = format!("{name}-vol");
        ok(&d, &["volume", "create", "--driver", name, &volume]);
        let o = d.cli(&[
            "run",
            "--rm",
            "-v",
            &format!("{volume}:/d"),
            "busybox",
            "sh",
            "-c",
            "echo from-the-driver > /d/f",
        ]);
        assert!(o.status.success(), "{name}: {}", err(&o));
        assert_eq!(
            ok(
                &d,
                &[
                    "run",
                    "--rm",
                    "-v",
                    &format!("{volume}:/d:ro"),
                    "busybox",
                    "cat",
                    "/d/f"
                ]
            ),
            "from-the-driver\n"
        );
        let v = json(&d, &["volume", "inspect", &volume]);
        assert_eq!(v[0]["driver"], *name);
        assert!(
            v[0]["mountpoint"]
                .as_str()
                .unwrap()
                .contains(&format!("/plugins/{name}/state/")),
            "{v}"
        );
        let e = fails(
            &d,
            &["volume", "create", "--driver", name, "-o", "bogus=1", "bad"],
        );
        assert!(e.contains("bogus"), "{name}: {e}");
        wait_until("containers to go", || ok(&d, &["ps", "-aq"]).is_empty());
        ok(&d, &["volume", "rm", &volume]);
        ok(&d, &["plugin", "rm", name]);
    }
    assert!(mounts_under(&d.data_root).is_empty());
}

#[test]
fn hostile_plugins_fail_cleanly() {
    require_root!();
    let names = ["spin", "slowhost", "membomb", "trap", "escape", "flood"];
    let mut files = Vec::new();
    for n in names {
        let Some(f) = plugin_component(&format!("fixtures/{n}.wasm")) else {
            return;
        };
        files.push(f);
    }
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    for (name, file) in names.iter().zip(&files) {
        ok(
            &d,
            &["plugin", "install", "--name", name, file.to_str().unwrap()],
        );
    }
    // (driver, volume name, what the error says)
    let cases = [
        ("spin", "spin", "deadline"),
        ("slowhost", "sleep", "deadline"),
        ("membomb", "membomb", "memory"),
        ("trap", "panic", "crashed"),
        ("trap", "stack-overflow", "stack overflow"),
        ("flood", "flood", "limit"),
    ];
    for (driver, volume, says) in cases {
        let started = Instant::now();
        let e = fails(&d, &["volume", "create", "--driver", driver, volume]);
        let took = started.elapsed();
        assert!(e.contains(says), "{driver}/{volume}: {e}");
        assert!(
            took < Duration::from_secs(9),
            "{driver}/{volume} took {took:?}"
        );
        // The container that needed it fails cleanly.
        let mount = format!("type=volume,source={volume},target=/v,volume-driver={driver}");
        let o = d.cli(&["run", "--rm", "--mount", &mount, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "{driver}/{volume}: {}", err(&o));
        // berthd serves, and the plugin works again for honest requests.
        ok(&d, &["system", "ping"]);
        let fine = format!("fine-{driver}");
        ok(&d, &["volume", "create", "--driver", driver, &fine]);
        ok(&d, &["volume", "rm", &fine]);
        let p = json(&d, &["plugin", "inspect", driver]);
        assert!(p[0]["failures"].as_u64().unwrap() >= 1, "{p}");
        assert!(p[0]["last_error"].is_string(), "{p}");
    }
    // Paths escaping the driver's directory: the mount is refused, nothing is mounted.
    for volume in ["dotdot", "absolute", "symlink", "not-dir", "empty", "nul"] {
        let mount = format!("type=volume,source={volume},target=/v,volume-driver=escape");
        let o = d.cli(&["run", "--rm", "--mount", &mount, "busybox", "true"]);
        assert_eq!(o.status.code(), Some(125), "{volume}: {}", err(&o));
        assert!(
            err(&o).contains("refused the path"),
            "{volume}: {}",
            err(&o)
        );
        let v = json(&d, &["volume", "inspect", volume]);
        assert_eq!(v[0]["used_by"], serde_json::json!([]), "{volume}: {v}");
    }
    assert!(ok(&d, &["ps", "-aq"]).is_empty());
    assert!(mounts_under(&d.data_root).is_empty());
    assert!(std::path::Path::new("/etc/passwd").exists());
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn plugins_as_oci_artifacts() {
    if !berth_tests::registry::tools_present() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("docker-registry is needed in CI");
        }
        eprintln!("skipped: docker-registry is not installed");
        return;
    }
    let Some(local) = plugin_component("local.wasm") else {
        return;
    };
    let registry = berth_tests::registry::Registry::start();
    let d = Daemon::start();
    let reference = registry.reference("plugins/local:1.0");
    let pushed = ok(&d, &["plugin", "push", "local", &reference]);
    assert!(pushed.contains("@sha256:"), "{pushed}");
    ok(&d, &["plugin", "install", "--name", "local2", &reference]);
    let a = json(&d, &["plugin", "inspect", "local", "local2"]);
    assert_eq!(a[0]["digest"], a[1]["digest"], "{a}");
    assert_eq!(a[1]["source"], reference.as_str());
    let digest = a[0]["digest"].as_str().unwrap();
    let expected = format!("sha256:{}", sha256_hex(&std::fs::read(local).unwrap()));
    assert_eq!(digest, expected);
    ok(&d, &["volume", "create", "--driver", "local2", "w"]);
    ok(&d, &["volume", "rm", "w"]);
    // An image is not a Wasm artifact; a missing tag is not found.
    registry.seed_busybox();
    let e = fails(
        &d,
        &[
            "plugin",
            "install",
            "--name",
            "img",
            &registry.reference("busybox:latest"),
        ],
    );
    assert!(e.contains("not a Wasm component artifact"), "{e}");
    let e = fails(
        &d,
        &[
            "plugin",
            "install",
            "--name",
            "gone",
            &registry.reference("plugins/none:1"),
        ],
    );
    assert!(!e.is_empty());
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
