//! The `berth` CLI against a real daemon.

use berth_tests::Daemon;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_info_and_df() {
    let d = Daemon::start();
    let out = d.cli(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Client:") && text.contains("Server: berth engine"),
        "{text}"
    );

    let out = d.cli(&["version", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["server"]["api_version"], berth_api::API_VERSION);

    for args in [&["info"][..], &["system", "info"]] {
        let out = d.cli(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&format!("Data Root: {}", d.data_root.display())),
            "{text}"
        );
        assert!(text.contains("Cgroup Version:"), "{text}");
    }
    let out = d.cli(&["info", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["containers"]["total"], 0);

    let out = d.cli(&["system", "df"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("TYPE"), "{text}");
    assert!(text.contains("Local Volumes"), "{text}");
    let out = d.cli(&["system", "df", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["kinds"].as_array().unwrap().len(), 4);
}

#[test]
fn berth_host_environment_variable() {
    let d = Daemon::start();
    let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
    cmd.env("BERTH_HOST", d.host()).args(["system", "ping"]);
    let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "OK");
}

#[test]
fn no_daemon_and_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
    cmd.arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .arg("version");
    let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "cannot connect to berthd at unix://{}: is it running?",
            sock.display()
        )),
        "{}",
        stderr(&out)
    );
    let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
    cmd.arg("--no-such-flag");
    let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
    cmd.args(["-H", "ftp://x", "version"]);
    let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid host"), "{}", stderr(&out));
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
        cmd.args(["completion", shell]);
        let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(30));
        assert!(out.status.success());
        assert!(stdout(&out).contains("berth"), "{shell}");
        assert!(stdout(&out).contains("version"), "{shell}");
    }
}
