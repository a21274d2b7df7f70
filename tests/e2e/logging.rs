//! Logging drivers end to end (root): the built-in `json-file` driver stores, rotates,
//! compresses and serves `berth logs`, resumes across a berthd restart without losing or
//! repeating a line (also for a container that ended while berthd was down), its log goes
//! with the container, and it cannot be disabled or removed while a container delivers to
//! it; the `syslog` driver delivers every line to a real rsyslogd on loopback over UDP and
//! TCP, through sockets granted for those addresses only; a driver that cannot deliver
//! never holds a container up, and its drops are counted; bad drivers and options are
//! refused.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{Daemon, import_busybox, require_root};

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "unexpected success");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A shell command printing `line 0` to `line N-1`, then `done` on stderr.
fn printer(n: usize, pause: Option<&str>) -> String {
    let pause = pause.map(|p| format!("sleep {p}; ")).unwrap_or_default();
    format!(
        "i=0; while [ $i -lt {n} ]; do echo \"line $i\"; {pause}i=$((i+1)); done; echo done >&2"
    )
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    let o = d.cli(&["container", "inspect", name]);
    serde_json::from_str::<serde_json::Value>(&ok(&o)).unwrap()[0].clone()
}

/// Waits until the container's delivery has finished (stream closed), returning its figures.
fn delivered(d: &Daemon, name: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = inspect(d, name);
        let delivery = v["log_delivery"].clone();
        if delivery["active"] == false {
            return delivery;
        }
        assert!(
            Instant::now() < deadline,
            "delivery of {name} did not finish: {delivery}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `berth logs ARGS`: its stdout lines and its stderr lines (it writes each record to the
/// stream the container wrote it to).
fn log_lines(d: &Daemon, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut all = vec!["logs"];
    all.extend(args);
    let o = d.cli(&all);
    let out = ok(&o).lines().map(str::to_owned).collect();
    let err = String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    (out, err)
}

/// `run [FLAGS] --name NAME --log-driver json-file busybox sh -c SCRIPT`, which must succeed.
fn run_json_file(d: &Daemon, flags: &[&str], name: &str, script: &str) {
    let mut args = vec!["run"];
    args.extend(flags);
    args.extend([
        "--name",
        name,
        "--log-driver",
        "json-file",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    ok(&d.cli(&args));
}

/// Runs `name` with the `json-file` driver, printing `lines` lines 50 ms apart, and stops
/// berthd 1.2 s into the run for `down`.
fn restart_during_run(d: &mut Daemon, name: &str, lines: usize, down: Duration) {
    run_json_file(d, &["-d"], name, &printer(lines, Some("0.05")));
    std::thread::sleep(Duration::from_millis(1200));
    d.stop();
    std::thread::sleep(down);
    d.restart();
}

/// The driver has every line of a `printer(lines, ..)` container, each once, and dropped none.
fn assert_every_line_delivered_once(d: &Daemon, name: &str, lines: usize) {
    let delivery = delivered(d, name, Duration::from_secs(20));
    assert_eq!(delivery["dropped"], 0, "{delivery}");
    let (got, errors) = log_lines(d, &[name]);
    let expected: Vec<String> = (0..lines).map(|n| format!("line {n}")).collect();
    assert_eq!(got, expected);
    assert_eq!(errors, ["done"]);
}

#[test]
fn json_file_driver_rotates_reads_back_resumes_and_is_removed() {
    require_root!();
    let mut d = Daemon::start();
    import_busybox(&d, "busybox");
    let driver_state = d.data_root.join("plugins/json-file/state");

    let cmd = printer(600, None);
    ok(&d.cli(&[
        "run",
        "--name",
        "rotated",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=4k",
        "--log-opt",
        "max-file=3",
        "--log-opt",
        "compress=true",
        "busybox",
        "sh",
        "-c",
        &cmd,
    ]));
    let delivery = delivered(&d, "rotated", Duration::from_secs(20));
    assert_eq!(delivery["driver"], "json-file");
    assert_eq!(delivery["delivered"], 601, "{delivery}");
    assert_eq!(delivery["dropped"], 0, "{delivery}");
    let id = inspect(&d, "rotated")["id"].as_str().unwrap().to_owned();
    let files: Vec<String> = std::fs::read_dir(driver_state.join(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        files.contains(&"container.log.1.gz".into())
            && files.contains(&"container.log.2.gz".into()),
        "{files:?}"
    );
    // `berth logs` is served by the driver: only what its rotation kept, newest last.
    let (kept, kept_err) = log_lines(&d, &["rotated"]);
    assert!(kept.len() > 20 && kept.len() < 600, "{} lines", kept.len());
    assert_eq!(kept_err, ["done"]);
    let first: usize = kept[0].strip_prefix("line ").unwrap().parse().unwrap();
    let expected: Vec<String> = (first..600).map(|n| format!("line {n}")).collect();
    assert_eq!(kept, expected, "the kept lines have a gap");
    let (tail, tail_err) = log_lines(&d, &["--tail", "3", "rotated"]);
    assert_eq!(
        (tail, tail_err),
        (
            vec!["line 598".to_owned(), "line 599".to_owned()],
            vec!["done".to_owned()]
        )
    );
    // The local log still has everything.
    let local = std::fs::read_to_string(
        d.data_root
            .join("containers")
            .join(&id)
            .join("container.log"),
    )
    .unwrap();
    assert_eq!(local.lines().count(), 601);

    // A berthd restart in the middle of a run: delivery goes on from where it was, and
    // every line reaches the driver exactly once.
    restart_during_run(&mut d, "steady", 60, Duration::from_millis(500));
    ok(&d.cli(&["wait", "steady"]));
    assert_every_line_delivered_once(&d, "steady", 60);

    // A container that ends while berthd is down: the next berthd delivers the rest of its
    // log, and only the rest.
    restart_during_run(&mut d, "orphan", 40, Duration::from_millis(2500));
    assert_eq!(inspect(&d, "orphan")["state"]["status"], "exited");
    assert_every_line_delivered_once(&d, "orphan", 40);

    // `logs -f` from the driver ends when the container has ended.
    let (lines, errors) = log_lines(&d, &["-f", "--tail", "2", "steady"]);
    assert_eq!(
        (lines, errors),
        (vec!["line 59".to_owned()], vec!["done".to_owned()])
    );

    // Its stored log goes with the container.
    ok(&d.cli(&["rm", "rotated"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver_state.join(&id).exists() {
        assert!(
            Instant::now() < deadline,
            "the driver kept the log of a removed container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bad drivers and options are refused, naming what is wrong.
    let e = err(&d.cli(&["run", "--rm", "--log-driver", "nope", "busybox", "true"]));
    assert!(e.contains("nope"), "{e}");
    let e = err(&d.cli(&["run", "--rm", "--log-driver", "bridge", "busybox", "true"]));
    assert!(e.contains("not a logging driver"), "{e}");
    let o = d.cli(&[
        "run",
        "--rm",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-sise=1k",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("max-sise"));
    let e = err(&d.cli(&[
        "run",
        "--rm",
        "--log-driver",
        "json-file",
        "--log-opt",
        "mode=fast",
        "busybox",
        "true",
    ]));
    assert!(e.contains("mode"), "{e}");
    let e = err(&d.cli(&["run", "--rm", "--log-opt", "max-size=1k", "busybox", "true"]));
    assert!(e.contains("local"), "{e}");

    // A driver that a running container delivers to is neither disabled nor removed.
    ok(&d.cli(&[
        "run",
        "-d",
        "--name",
        "shipping",
        "--log-driver",
        "json-file",
        "busybox",
        "sleep",
        "60",
    ]));
    for verb in ["disable", "rm"] {
        let o = d.cli(&["plugin", verb, "json-file"]);
        assert_eq!(o.status.code(), Some(1), "plugin {verb}: {}", err(&o));
        assert!(
            err(&o).contains("shipping") && err(&o).contains("in use"),
            "{}",
            err(&o)
        );
    }
    ok(&d.cli(&["rm", "-f", "shipping"]));
    ok(&d.cli(&["plugin", "disable", "json-file"]));
    ok(&d.cli(&["plugin", "enable", "json-file"]));
    // Once disabling is over, containers deliver to the driver again.
    ok(&d.cli(&[
        "run",
        "--rm",
        "--log-driver",
        "json-file",
        "busybox",
        "true",
    ]));
}

/// A real syslog receiver: rsyslogd in the foreground on loopback, UDP and TCP, writing
/// every message as `APP-NAME MSGID SEVERITY MSG` lines to a file. Its UDP socket gets a
/// large receive buffer: a burst of datagrams beyond the default one is dropped by the
/// kernel before rsyslogd reads it.
struct Rsyslog {
    child: Child,
    output: PathBuf,
    udp: u16,
    tcp: u16,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start() -> Option<Rsyslog> {
        if Command::new("rsyslogd").arg("-v").output().is_err() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("rsyslogd is missing: .ci/run installs rsyslog");
            }
            eprintln!("skipped: rsyslogd is not installed (apt-get install rsyslog)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let free = || {
            let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let (udp, tcp) = (free(), free());
        let output = dir.path().join("received.log");
        let config = dir.path().join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                "global(workDirectory=\"{work}\")\n\
                 module(load=\"imudp\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\" rcvbufSize=\"16m\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\")\n\
                 template(name=\"lines\" type=\"string\" string=\"%app-name% %msgid% %syslogseverity% %msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{out}\" template=\"lines\" flushOnTXEnd=\"on\" asyncWriting=\"off\")\n",
                work = dir.path().display(),
                out = output.display(),
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        let receiver = Rsyslog {
            child,
            output,
            udp,
            tcp,
            _dir: dir,
        };
        // Ready once its TCP port answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(receiver)
    }

    /// The received lines of app `tag`, once `count` of them arrived.
    fn wait_for(&self, tag: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.output).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.split(' ').next() == Some(tag))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message_texts(received: &[String]) -> Vec<String> {
    received
        .iter()
        .map(|l| {
            l.splitn(4, ' ')
                .nth(3)
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

#[test]
fn syslog_driver_delivers_every_line_to_rsyslog_over_udp_and_tcp() {
    require_root!();
    let Some(rsyslog) = Rsyslog::start() else {
        return;
    };
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    let (udp, tcp) = (rsyslog.udp, rsyslog.tcp);

    // Before the grant, the plugin may not reach the receiver: nothing arrives, the
    // refusal is in inspect, and the container is not held up.
    let address = format!("syslog-address=udp://127.0.0.1:{udp}");
    ok(&d.cli(&[
        "run",
        "--name",
        "early",
        "--log-driver",
        "syslog",
        "--log-opt",
        &address,
        "--log-opt",
        "tag=early",
        "busybox",
        "echo",
        "hello",
    ]));
    let delivery = delivered(&d, "early", Duration::from_secs(20));
    assert_eq!(delivery["delivered"], 0, "{delivery}");
    assert_eq!(delivery["dropped"], 1, "{delivery}");
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("berth.allow-connect"),
        "{delivery}"
    );

    let grant = format!("berth.allow-connect=udp:127.0.0.1:{udp},tcp:127.0.0.1:{tcp}");
    ok(&d.cli(&["plugin", "set", "syslog", &grant]));

    let cmd = printer(300, None);
    ok(&d.cli(&[
        "run",
        "--name",
        "over-udp",
        "--log-driver",
        "syslog",
        "--log-opt",
        &address,
        "--log-opt",
        "tag=udpapp",
        "busybox",
        "sh",
        "-c",
        &cmd,
    ]));
    let delivery = delivered(&d, "over-udp", Duration::from_secs(20));
    assert_eq!(delivery["delivered"], 301, "{delivery}");
    let received = rsyslog.wait_for("udpapp", 301);
    let expected: Vec<String> = (0..300)
        .map(|n| format!("line {n}"))
        .chain(["done".to_owned()])
        .collect();
    assert_eq!(message_texts(&received), expected);
    // RFC 5424 fields as rsyslog parsed them: MSGID is the stream, severity info or err.
    assert_eq!(received[0], "udpapp stdout 6 line 0");
    assert_eq!(received[300], "udpapp stderr 3 done");
    // syslog stores nothing to read back: `berth logs` reads the local log.
    assert_eq!(log_lines(&d, &["over-udp"]).0.len(), 300);

    let tcp_address = format!("syslog-address=tcp://127.0.0.1:{tcp}");
    let cmd = printer(3000, None);
    ok(&d.cli(&[
        "run",
        "--name",
        "over-tcp",
        "--log-driver",
        "syslog",
        "--log-opt",
        &tcp_address,
        "--log-opt",
        "tag=tcpapp",
        "busybox",
        "sh",
        "-c",
        &cmd,
    ]));
    let delivery = delivered(&d, "over-tcp", Duration::from_secs(30));
    assert_eq!(delivery["delivered"], 3001, "{delivery}");
    let received = rsyslog.wait_for("tcpapp", 3001);
    let expected: Vec<String> = (0..3000)
        .map(|n| format!("line {n}"))
        .chain(["done".to_owned()])
        .collect();
    assert_eq!(message_texts(&received), expected);
}

#[test]
fn an_unreachable_driver_never_holds_a_container_and_its_drops_are_counted() {
    require_root!();
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    // A granted TCP address where nobody listens: every batch is `unavailable`.
    let port = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let grant = format!("berth.allow-connect=tcp:127.0.0.1:{port}");
    ok(&d.cli(&["plugin", "set", "syslog", &grant]));
    let address = format!("syslog-address=tcp://127.0.0.1:{port}");
    let cmd = printer(2000, None);
    let started = Instant::now();
    ok(&d.cli(&[
        "run",
        "--name",
        "nowhere",
        "--log-driver",
        "syslog",
        "--log-opt",
        &address,
        "--log-opt",
        "mode=non-blocking",
        "--log-opt",
        "max-buffer-size=8k",
        "busybox",
        "sh",
        "-c",
        &cmd,
    ]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the container took {:?}",
        started.elapsed()
    );
    // The local log has every line at once.
    assert_eq!(log_lines(&d, &["nowhere"]).0.len(), 2000);
    let delivery = delivered(&d, "nowhere", Duration::from_secs(30));
    assert_eq!(delivery["mode"], "non-blocking");
    assert_eq!(delivery["delivered"], 0, "{delivery}");
    assert_eq!(delivery["dropped"], 2001, "{delivery}");
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&port.to_string()),
        "{delivery}"
    );
}

/// `GET /metrics` on the API socket: the whole raw response.
fn scrape(d: &Daemon) -> (u16, String, String) {
    let raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = berth_tests::raw_exchange(&d.socket, raw).unwrap();
    let head = String::from_utf8_lossy(&reply)
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (status, body) = berth_tests::parse_http_response(&reply).unwrap();
    (status, head, body)
}

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
}

#[test]
fn metrics_count_calls_plugins_containers_and_log_records_behind_authorization() {
    require_root!();
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    ok(&d.cli(&[
        "run",
        "--name",
        "counted",
        "--log-driver",
        "json-file",
        "busybox",
        "echo",
        "one",
    ]));
    delivered(&d, "counted", Duration::from_secs(20));
    let _ = d.cli(&["container", "inspect", "no-such-container"]);
    ok(&d.cli(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "60"]));

    let (status, head, text) = scrape(&d);
    assert_eq!(status, 200, "{text}");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(text.ends_with("# EOF\n"));
    assert!(
        sample(
            &text,
            "berth_api_calls_total{method=\"container.create\",outcome=\"ok\"}"
        ) >= 2.0
    );
    assert!(
        sample(
            &text,
            "berth_api_calls_total{method=\"container.inspect\",outcome=\"NotFound\"}"
        ) >= 1.0
    );
    assert!(
        text.contains("berth_api_call_duration_seconds_bucket{"),
        "{text}"
    );
    assert_eq!(sample(&text, "berth_containers{state=\"running\"}"), 1.0);
    assert_eq!(sample(&text, "berth_containers{state=\"exited\"}"), 1.0);
    assert!(
        sample(
            &text,
            "berth_plugin_calls_total{plugin=\"json-file\",function=\"write\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &text,
            "berth_log_records_delivered_total{driver=\"json-file\"}"
        ),
        1.0
    );
    // The same text is a JSON-RPC call too.
    let o = d.cli(&["container", "inspect", "sleeper"]);
    ok(&o);
    let (status, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.metrics"}"#);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["result"]
            .as_str()
            .unwrap()
            .contains("berth_containers{state=\"running\"} 1")
    );
    let _ = d.cli(&["rm", "-f", "sleeper"]);
    drop(d);

    // Behind authorization: a policy that refuses `system.metrics` refuses the scrape.
    if berth_tests::plugin_component("rego.wasm").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.rego");
    std::fs::write(
        &policy,
        "package berth.authz\nimport rego.v1\ndefault allow := false\nallow if input.method != \"system.metrics\"\nreason := \"metrics are private\" if input.method == \"system.metrics\"\n",
    )
    .unwrap();
    let d = Daemon::start_with(&[
        "--authz-plugins",
        "rego",
        "--authz-policy",
        policy.to_str().unwrap(),
    ]);
    let (status, _, text) = scrape(&d);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("metrics are private"), "{text}");
}

#[test]
fn a_cri_local_log_serves_logs_follow_and_delivery() {
    require_root!();
    let d = Daemon::start_with(&["--local-log-format", "cri", "--local-log-max-size", "8192"]);
    import_busybox(&d, "busybox");
    let cmd = printer(300, None);
    ok(&d.cli(&["run", "--name", "cri", "busybox", "sh", "-c", &cmd]));
    let id = inspect(&d, "cri")["id"].as_str().unwrap().to_owned();
    let log = d
        .data_root
        .join("containers")
        .join(&id)
        .join("container.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    let fields: Vec<&str> = last.splitn(4, ' ').collect();
    assert_eq!(&fields[1..], ["stderr", "F", "done"], "{last}");
    // Rotated at 8 KiB: `berth logs` reads the kept files, in order.
    assert!(berth_tests_rotated(&log).exists());
    let (lines, errors) = log_lines(&d, &["cri"]);
    assert_eq!(errors, ["done"]);
    let first: usize = lines[0].strip_prefix("line ").unwrap().parse().unwrap();
    let expected: Vec<String> = (first..300).map(|n| format!("line {n}")).collect();
    assert_eq!(lines, expected);
    let (lines, _) = log_lines(&d, &["-f", "--tail", "2", "cri"]);
    assert_eq!(lines, ["line 299"]);
    // Delivery reads the CRI lines too.
    run_json_file(&d, &[], "cri-json", &printer(50, None));
    let delivery = delivered(&d, "cri-json", Duration::from_secs(20));
    assert_eq!(delivery["delivered"], 51, "{delivery}");
    let (lines, errors) = log_lines(&d, &["cri-json"]);
    assert_eq!(lines.len(), 50);
    assert_eq!(errors, ["done"]);
    let bad = d.run_second(&["--local-log-format", "text"]);
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && said.contains("json-file or cri"),
        "{said}"
    );
}

fn berth_tests_rotated(log: &std::path::Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

#[test]
fn berth_run_prints_every_line_of_a_chatty_container() {
    require_root!();
    let d = Daemon::start();
    import_busybox(&d, "busybox");
    // Far more lines than jsonrpsee's default subscription buffer (1024), which the CLI
    // outran and cut the output of; they come faster than the CLI prints them.
    const LINES: usize = 30_000;
    let out = ok(&d.cli(&["run", "--rm", "busybox", "sh", "-c", &printer(LINES, None)]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), LINES, "last line: {:?}", lines.last());
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, line)| *line == format!("line {i}")),
        "lines missing or out of order"
    );
}
