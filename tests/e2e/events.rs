//! Events end to end (root): a live `berth events` sees a container's whole life in order,
//! history from `--since` survives a berthd restart with its numbering, `--until` ends the
//! stream, filters narrow it, and bad times or filters are refused.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_tests::{Daemon, bin, import_busybox, require_root, until_now};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every JSON line of `berth events ARGS --format json` (which must end by itself).
fn history(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["events", "--format", "json"];
    all.extend(args);
    let o = d.cli(&all);
    assert!(o.status.success(), "events {args:?}: {}", err(&o));
    out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn actions(events: &[serde_json::Value], kind: &str, name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["attributes"]["name"] == name)
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn events_follow_history_filters_and_restart() {
    require_root!();
    let mut d = Daemon::start();
    import_busybox(&d, "busybox");

    // A live follower, started before anything happens to the container.
    let mut follower = Command::new(bin("berth"))
        .arg("-H")
        .arg(d.host())
        .args(["events", "--format", "json", "--filter", "type=container"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth events");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give the subscription time to be in place: events before it are not its to see.
    std::thread::sleep(Duration::from_millis(500));

    let o = d.cli(&[
        "run", "--name", "ev1", "-l", "team=a", "busybox", "sh", "-c", "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(d.cli(&["rm", "ev1"]).status.success());

    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while actions(&seen, "container", "ev1").len() < 4 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(serde_json::from_str(&line).expect("a JSON event per line"));
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        actions(&seen, "container", "ev1"),
        ["create", "start", "die", "destroy"],
        "live stream: {seen:#?}"
    );
    let die = seen.iter().find(|e| e["action"] == "die").unwrap();
    assert_eq!(die["attributes"]["exitCode"], "3");
    assert_eq!(
        die["attributes"]["team"], "a",
        "labels travel with the event"
    );
    assert_eq!(die["attributes"]["image"], "busybox");
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );

    // History: everything since the start, ending by itself at --until.
    let until = until_now();
    let past = history(&d, &["--since", "0", "--until", &until]);
    assert!(
        past.iter()
            .any(|e| e["type"] == "image" && e["action"] == "import"),
        "{past:#?}"
    );
    assert_eq!(
        actions(&past, "container", "ev1"),
        ["create", "start", "die", "destroy"]
    );
    let dies = history(
        &d,
        &["--since", "10m", "--until", &until, "--filter", "event=die"],
    );
    assert_eq!(dies.len(), 1, "{dies:#?}");
    let by_label = history(
        &d,
        &[
            "--since",
            "0",
            "--until",
            &until,
            "-f",
            "label=team=b",
            "-f",
            "label=team=a",
        ],
    );
    assert_eq!(actions(&by_label, "container", "ev1").len(), 4);
    let none = history(
        &d,
        &[
            "--since",
            "0",
            "--until",
            &until,
            "-f",
            "container=nothing-like-it",
        ],
    );
    assert!(none.is_empty(), "{none:#?}");

    // Kept across a restart, numbering going on.
    let last_seq = past
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    d.stop();
    d.restart();
    let until = until_now();
    let after = history(&d, &["--since", "0", "--until", &until]);
    assert_eq!(
        actions(&after, "container", "ev1"),
        ["create", "start", "die", "destroy"],
        "history lost in the restart"
    );
    assert!(
        d.cli(&["create", "--name", "ev2", "busybox", "true"])
            .status
            .success()
    );
    let until = until_now();
    let created = history(
        &d,
        &["--since", "0", "--until", &until, "-f", "container=ev2"],
    );
    assert_eq!(actions(&created, "container", "ev2"), ["create"]);
    assert!(created[0]["seq"].as_u64().unwrap() > last_seq);

    // A future --until ends a live stream by itself.
    let started = Instant::now();
    let o = d.cli(&["events", "--until", "2s"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = d.cli(&[
        "events",
        "--until",
        &format!("{:.3}", until.parse::<f64>().unwrap() + 2.0),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(started.elapsed() < Duration::from_secs(20));

    // Bad input is refused with what was wrong.
    let o = d.cli(&["events", "--since", "yesterday"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("invalid time"), "{}", err(&o));
    let o = d.cli(&["events", "--filter", "colour=red"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("invalid event filter"), "{}", err(&o));
    assert!(d.cli(&["rm", "ev2"]).status.success());
}
