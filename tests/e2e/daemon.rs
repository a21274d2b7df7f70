//! Daemon lifecycle: exclusive data root and socket, config file, shutdown.

use std::os::unix::fs::PermissionsExt;

use berth_tests::Daemon;

#[test]
fn second_daemon_on_the_same_data_root_is_refused() {
    let d = Daemon::start();
    let other_socket = d.dir.path().join("other.sock");
    let out = d.run_second(&["--socket", other_socket.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another berthd"), "{err}");
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    assert!(!other_socket.exists(), "refused daemon created its socket");
    // The first one is untouched.
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping"}"#);
    assert!(body.contains("OK"));
}

#[test]
fn second_daemon_on_a_live_socket_is_refused() {
    let d = Daemon::start();
    let other_root = d.dir.path().join("root2");
    let out = d.run_second(&["--data-root", other_root.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is live"), "{err}");
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping"}"#);
    assert!(body.contains("OK"), "first daemon lost its socket: {body}");
}

#[test]
fn sigterm_stops_cleanly_and_a_stale_socket_is_reclaimed() {
    let mut d = Daemon::start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    let status = d.stop();
    assert!(status.success(), "berthd exited with {status}");
    assert!(!d.socket.exists(), "socket left behind after shutdown");
    assert!(d.log_text().contains("berthd stopped"));
    // A socket file nobody listens on (a crashed daemon's) does not block the next start.
    let stale = std::os::unix::net::UnixListener::bind(&d.socket).unwrap();
    drop(stale);
    assert!(d.socket.exists());
    let again = Daemon::start_with(&[]);
    drop(again);
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions() {
    use berth_api::system::SystemClient;
    let mut d = Daemon::start();
    let c = d.client().await;
    let mut sub = c.heartbeat(Some(10)).await.unwrap();
    assert!(sub.next().await.is_some());
    let status = tokio::task::spawn_blocking(move || {
        let s = d.stop();
        (s, d)
    })
    .await
    .unwrap();
    assert!(status.0.success());
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(item) = sub.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "subscription kept running after shutdown");
}

#[test]
fn config_file_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("from-file");
    let sock = dir.path().join("file.sock");
    let cfg = dir.path().join("berthd.toml");
    std::fs::write(
        &cfg,
        format!(
            "data-root = \"{}\"\nsocket = \"{}\"\nlog-level = \"warn\"\n",
            root.display(),
            sock.display()
        ),
    )
    .unwrap();
    // Flags win: the Daemon helper passes --data-root/--socket of its own.
    let d = Daemon::start_with(&["--config", cfg.to_str().unwrap()]);
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["data_root"], d.data_root.display().to_string());
    assert_eq!(v["result"]["log_level"], "debug");
    assert!(
        !root.exists(),
        "file value used although a flag overrode it"
    );
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berthd.toml");
    let run = |text: &str, extra: &[&str]| {
        std::fs::write(&cfg, text).unwrap();
        let mut cmd = std::process::Command::new(berth_tests::bin("berthd"));
        cmd.arg("--config").arg(&cfg).args(extra);
        let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(20));
        assert!(!out.status.success(), "{text} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("data-rot = \"/x\"\n", &[]);
    assert!(
        err.contains("data-rot") && err.contains(cfg.to_str().unwrap()),
        "{err}"
    );
    let err = run("listen = [\"udp://1.2.3.4:5\"]\n", &[]);
    assert!(err.contains("listen"), "{err}");
    let err = run("", &["--max-request-body-size", "lots"]);
    assert!(err.contains("max-request-body-size"), "{err}");
    let err = run("log-level = \"[[[\"\n", &[]);
    assert!(err.contains("log-level"), "{err}");
}

#[test]
fn state_persists_across_restarts() {
    let mut d = Daemon::start();
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#);
    let id1 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"]["id"].clone();
    assert!(d.stop().success());
    let db = d.data_root.join("berth.db");
    assert!(db.exists());
    let out = std::process::Command::new(berth_tests::bin("berthd"))
        .arg("--data-root")
        .arg(&d.data_root)
        .arg("--socket")
        .arg(&d.socket)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = out.id();
    let mut child = out;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        if let Ok((200, b)) = berth_tests::http_post(
            &d.socket,
            br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#,
        ) {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restart did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    berth_tests::signal(pid, libc::SIGTERM);
    let _ = child.wait();
    let id2 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"]["id"].clone();
    assert_eq!(id1, id2, "daemon id changed across restarts");
}
