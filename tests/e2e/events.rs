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

/// A WebSocket client on berthd's socket that reads only when told to, so that it can fall
/// behind: the CLI's client would drop the subscription itself first.
struct SlowSubscriber {
    stream: std::os::unix::net::UnixStream,
}

impl SlowSubscriber {
    fn connect(socket: &std::path::Path) -> SlowSubscriber {
        use std::io::{Read as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("handshake answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        SlowSubscriber { stream }
    }

    /// Sends one text message (masked, as a client must).
    fn send(&mut self, text: &str) {
        use std::io::Write as _;
        let payload = text.as_bytes();
        let mask = [0x5a, 0x17, 0xc3, 0x81];
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next text message (control frames skipped).
    fn next(&mut self) -> serde_json::Value {
        use std::io::Read as _;
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).expect("a frame");
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).unwrap();
                    u16::from_be_bytes(n) as usize
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).unwrap();
                    u64::from_be_bytes(n) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).unwrap();
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            if opcode >= 8 {
                continue;
            }
            message.extend(payload);
            if fin {
                return serde_json::from_slice(&message).expect("a JSON message");
            }
        }
    }
}

#[test]
fn a_subscriber_that_falls_behind_gets_every_event_late() {
    require_root!();
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    let mut slow = SlowSubscriber::connect(&d.socket);
    slow.send(
        &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
            "params": {"request": {"filters": ["event=tag"]}}})
        .to_string(),
    );
    let subscribed = slow.next();
    assert!(
        subscribed["result"].is_string() || subscribed["result"].is_u64(),
        "{subscribed}"
    );

    // The subscriber reads nothing while 9000 events happen: berthd's sends to it stop on
    // the full socket, and the live stream (4096 events) runs ahead of it; the history
    // (10000) still holds them all.
    const TAGS: usize = 9000;
    tag_events(&d, TAGS);

    let mut seqs = Vec::with_capacity(TAGS);
    while seqs.len() < TAGS {
        let message = slow.next();
        let item = &message["params"]["result"];
        assert_eq!(
            item["item"],
            "event",
            "after {} events: {message}",
            seqs.len()
        );
        assert_eq!(item["action"], "tag");
        seqs.push(item["seq"].as_u64().expect("seq"));
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "events missing or out of order"
    );
    assert!(
        d.log_text().contains("fell behind the live stream"),
        "the subscriber never fell behind: the test proves nothing"
    );
}

/// `tags` tag events, in batches of 500 `image.tag` calls.
fn tag_events(d: &Daemon, tags: usize) {
    for chunk in 0..tags.div_ceil(500) {
        let batch: Vec<serde_json::Value> = (0..500.min(tags - chunk * 500))
            .map(|i| {
                serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "image.tag",
                    "params": {"source": "busybox", "target": format!("lag{}:x", i % 2)}})
            })
            .collect();
        let (status, body) = d.post(serde_json::to_string(&batch).unwrap().as_bytes());
        assert_eq!(status, 200, "batch {chunk}: {body}");
        assert!(!body.contains("\"error\""), "batch {chunk}: {body}");
    }
}

#[test]
fn berth_events_fails_when_its_stream_is_cut() {
    require_root!();
    let mut d = Daemon::start();
    let mut follower = Command::new(bin("berth"))
        .arg("-H")
        .arg(d.host())
        .args(["events", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth events");
    std::thread::sleep(Duration::from_millis(500));
    // berthd dies under the follower: its stream ends without its `end` item.
    d.kill9();
    let status = berth_tests::wait_with_timeout(&mut follower, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "a cut stream ended as a success");
    assert!(
        stderr.contains("the event stream ended early: berthd closed the connection"),
        "{stderr}"
    );
    // Back up, so that it stops cleanly with the test.
    d.restart();
}
