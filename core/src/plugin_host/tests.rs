use super::*;

/// The reference `local` volume driver, built by `plugins/build.sh` (tests/run.sh runs it
/// before the tests).
fn local_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/local.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the plugins first (plugins/build.sh)",
            path.display()
        )
    })
}

#[test]
fn versions_other_than_the_served_one_are_refused_naming_both() {
    assert!(check_version("p", "berth:volume/driver", "1.0.0").is_ok());
    assert!(check_version("p", "berth:volume/driver", "1.0.7").is_ok());
    for bad in ["2.0.0", "1.1.0", "0.9.0", "1.0"] {
        let e = check_version("p", "berth:volume/driver", bad).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(bad) && text.contains("1.0.0"), "{text}");
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    }
    // Each package has its own version: berth:authz is served at 1.1.0.
    for good in ["1.0.0", "1.1.0", "1.1.3"] {
        assert!(
            check_version("p", "berth:authz/policy", good).is_ok(),
            "{good}"
        );
    }
    let e = check_version("p", "berth:authz/scoped-policy", "1.2.0").unwrap_err();
    assert!(e.to_string().contains("1.1.0"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_driver_round_trip_and_cached_reload() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let wasm = local_wasm();
    let loaded = host.load("local", &wasm).unwrap();
    assert_eq!(loaded.kind, PluginKind::Volume);
    assert_eq!(loaded.version, "1.0.0");
    let state = dir.path().join("state");
    let driver = host
        .volume_driver("local", &loaded, &state, Vec::new())
        .await
        .unwrap();
    let info = driver.create("data", &[]).await.unwrap();
    assert_eq!(info.name, "data");
    let path = driver.mount("data", "c1").await.unwrap();
    assert!(state.join(&path).is_dir(), "{path}");
    assert_eq!(driver.list().await.unwrap().len(), 1);
    let busy = driver.remove("data").await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::FailedPrecondition, "{busy}");
    driver.unmount("data", "c1").await.unwrap();
    driver.remove("data").await.unwrap();
    let gone = driver.get("data").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
    let bad = driver.create("x", &[("size".into(), "1G".into())]).await;
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert!(
        host.volume_driver("local", &loaded, &state, vec![("bogus".into(), "1".into())])
            .await
            .is_err(),
        "a configuration the plugin refuses must fail"
    );

    // A second host on the same cache loads the compiled component without compiling.
    let entries = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
    assert_eq!(entries, 1);
    let again = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let started = std::time::Instant::now();
    let reloaded = again.load("local", &wasm).unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(reloaded.digest, loaded.digest);
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let e = host.load("junk", b"not wasm at all").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("junk"), "{e}");
}

/// A hostile fixture from `plugins/fixtures`, built by `plugins/build.sh`.
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist/fixtures")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the plugins first (plugins/build.sh)",
            path.display()
        )
    })
}

/// A driver for fixture `name`, with a short deadline so the tests stay quick.
async fn hostile(name: &str, dir: &Path) -> (PluginHost, VolumeDriver) {
    let limits = Limits {
        call_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let host = PluginHost::new(&dir.join("cache"), limits).unwrap();
    let loaded = host.load(name, &fixture(name)).unwrap();
    let driver = host
        .volume_driver(name, &loaded, &dir.join("state"), Vec::new())
        .await
        .unwrap();
    (host, driver)
}

fn assert_failed(result: Result<impl std::fmt::Debug>, needle: &str) {
    match result {
        Err(e @ Error::Failed { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
            assert_eq!(e.kind(), ErrorKind::Unavailable);
        }
        other => panic!("expected a failed call mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_misses_its_deadline_and_the_next_call_works() {
    let dir = tempfile::tempdir().unwrap();
    let (host, driver) = hostile("spin", dir.path()).await;
    let reported = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&reported);
    host.on_failure(Arc::new(move |plugin, function, reason| {
        sink.lock()
            .unwrap()
            .push(format!("{plugin} {function}: {reason}"));
    }));
    driver.create("fine", &[]).await.unwrap();
    spin_misses_its_deadline(&driver).await;
    // Logging in a loop is bounded the same way.
    assert_failed(driver.create("spin-hostcall", &[]).await, "deadline");
    assert_eq!(driver.get("fine").await.unwrap().name, "fine");
    let stats = driver.stats();
    assert_eq!(stats.failures, 2);
    assert!(stats.last_error.unwrap().contains("create"));
    // The event log hears of each failure (as `plugin trap` events).
    let reported = reported.lock().unwrap();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(
        reported[0].starts_with("spin create: deadline"),
        "{reported:?}"
    );
}

/// The epoch ticker parks once no call has been armed for longer than a call can last; the
/// next call wakes it, or an endless loop would never be interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_after_an_idle_spell_still_misses_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, driver) = hostile("spin", dir.path()).await;
    driver.create("fine", &[]).await.unwrap();
    // The tests' call limit (1 s) and the grace after it: the ticker is parked by now.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    spin_misses_its_deadline(&driver).await;
}

/// The `spin` fixture's endless loop fails on its deadline (1 s), well before the test gives
/// up on it.
async fn spin_misses_its_deadline(driver: &VolumeDriver) {
    let started = std::time::Instant::now();
    assert_failed(driver.create("spin", &[]).await, "deadline");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_host_call_is_ended_by_the_outer_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, driver) = hostile("slowhost", dir.path()).await;
    let started = std::time::Instant::now();
    assert_failed(driver.create("sleep", &[]).await, "deadline");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_failed(driver.create("sleep-loop", &[]).await, "deadline");
    driver.create("fine", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bombs_hit_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, driver) = hostile("membomb", dir.path()).await;
    assert_failed(
        driver.create("membomb", &[]).await,
        "memory limit of 64 MiB",
    );
    assert_failed(driver.create("membomb-grow", &[]).await, "memory limit");
    driver.create("fine", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, driver) = hostile("trap", dir.path()).await;
    for name in ["panic", "unreachable"] {
        assert_failed(driver.get(name).await, "crashed");
    }
    assert_failed(driver.get("stack-overflow").await, "stack overflow");
    assert_failed(driver.get("shadow-stack-overflow").await, "crashed");
    driver.create("fine", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_floods_and_huge_answers_hit_their_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, driver) = hostile("flood", dir.path()).await;
    assert_failed(driver.create("flood", &[]).await, "handle limit");
    assert_failed(driver.create("flood-dirs", &[]).await, "handle limit");
    assert_failed(driver.list().await, "hostcalls");
    driver.create("fine", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_leaving_the_state_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, driver) = hostile("escape", dir.path()).await;
    for name in [
        "dotdot",
        "absolute",
        "symlink",
        "dot",
        "empty",
        "double-slash",
        "trailing-slash",
        "too-long",
        "nul",
        "not-dir",
    ] {
        driver.create(name, &[]).await.unwrap();
        let path = driver.mount(name, "m").await.unwrap();
        let refused = driver.open_contained(&path).unwrap_err();
        assert_eq!(
            refused.kind(),
            ErrorKind::PermissionDenied,
            "{name}: {refused}"
        );
    }
    driver.create("fine", &[]).await.unwrap();
    let path = driver.mount("fine", "m").await.unwrap();
    driver.open_contained(&path).unwrap();
}

#[test]
fn a_component_built_for_another_major_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let e = host.load("wrongwit", &fixture("wrongwit")).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("@2.0.0") && text.contains("@1.0.0"), "{text}");
}

/// One case of `plugins/authz/examples/cases.json`, shared with the policy's native tests.
#[derive(serde::Deserialize)]
struct PolicyCase {
    name: String,
    policy: Vec<String>,
    #[serde(default)]
    data: Vec<String>,
    request: CaseRequest,
    allow: bool,
    #[serde(default)]
    reason_contains: Option<String>,
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(default)]
    visible: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct CaseRequest {
    request_id: String,
    identity: Identity,
    method: String,
    params: serde_json::Value,
    target: Target,
    transport: Transport,
    remote_address: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_policy_cases_hold_through_the_wasm_component() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm_path = root.join("plugins/dist/rego.wasm");
    let Ok(wasm) = std::fs::read(&wasm_path) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing: plugins/build.sh must run first",
            wasm_path.display()
        );
        eprintln!("skipped: {} is missing", wasm_path.display());
        return;
    };
    let examples = root.join("plugins/authz/examples");
    let cases: Vec<PolicyCase> =
        serde_json::from_str(&std::fs::read_to_string(examples.join("cases.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let loaded = host.load("rego", &wasm).unwrap();
    assert_eq!(loaded.kind, PluginKind::Authz);
    let mut policies: std::collections::HashMap<(Vec<String>, Vec<String>), Authorizer> =
        Default::default();
    for case in cases {
        let key = (case.policy.clone(), case.data.clone());
        if !policies.contains_key(&key) {
            // As berthd passes files: `policy:<path>` and `data:<path>` holding their text.
            let mut config = Vec::new();
            for (prefix, files) in [("policy", &case.policy), ("data", &case.data)] {
                for f in files {
                    let path = examples.join(f);
                    let text = std::fs::read_to_string(&path).unwrap();
                    config.push((format!("{prefix}:{}", path.display()), text));
                }
            }
            let policy = host
                .authorizer("rego", &loaded, config)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            policies.insert(key.clone(), policy);
        }
        let policy = &policies[&key];
        let request = AuthzRequest {
            request_id: case.request.request_id,
            identity: case.request.identity,
            method: case.request.method,
            params: case.request.params.to_string(),
            target: case.request.target,
            transport: case.request.transport,
            remote_address: case.request.remote_address,
        };
        let decision = policy
            .authorize(&request)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(decision.allow, case.allow, "{}: {decision:?}", case.name);
        if let Some(needle) = &case.reason_contains {
            let reason = decision.reason.unwrap_or_default();
            assert!(reason.contains(needle.as_str()), "{}: {reason}", case.name);
        }
        if let (Some(candidates), Some(visible)) = (&case.candidates, &case.visible) {
            let got = policy
                .filter(&request, candidates)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let expected = match visible {
                serde_json::Value::String(s) if s == "all" => Visibility::All,
                v => Visibility::Only(serde_json::from_value(v.clone()).unwrap()),
            };
            assert_eq!(got, expected, "{}", case.name);
            // The rego component exports `scoped-policy`: where its policy states a list
            // scope, the scope shows the same objects as `filter`.
            if decision.scope != ListScope::PerObject {
                let all: Vec<u32> = (0..candidates.len() as u32).collect();
                let scoped: Vec<u32> = all
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let labels = &candidates[i as usize].labels;
                        decision.scope.admits(|key| {
                            labels
                                .iter()
                                .find(|(k, _)| k == key)
                                .map(|(_, v)| v.as_str())
                        })
                    })
                    .collect();
                let expected = match expected {
                    Visibility::All => all,
                    Visibility::Only(indices) => indices,
                };
                assert_eq!(scoped, expected, "{}: {:?}", case.name, decision.scope);
            }
        }
        if request.method.ends_with(".list")
            && case.allow
            && case.policy.iter().any(|p| p == "team-labels.rego")
        {
            assert!(
                matches!(decision.scope, ListScope::All | ListScope::Labels(_)),
                "{}: team-labels.rego states list scopes: {:?}",
                case.name,
                decision.scope
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_built_against_authz_1_0_0_is_asked_authorize_then_filter() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let loaded = host.load("authz10", &dist("fixtures/authz10")).unwrap();
    assert_eq!(loaded.kind, PluginKind::Authz);
    assert_eq!(loaded.version, "1.0.0");
    let policy = host
        .authorizer("authz10", &loaded, Vec::new())
        .await
        .unwrap();
    let request = |method: &str| AuthzRequest {
        request_id: "t".into(),
        identity: Identity::Anonymous,
        method: method.into(),
        params: "{}".into(),
        target: Target {
            kind: ResourceKind::Container,
            id: None,
            name: None,
            labels: Vec::new(),
        },
        transport: Transport::Unix,
        remote_address: None,
    };
    // No scoped-policy export: lists are decided object by object.
    let list = policy.authorize(&request("container.list")).await.unwrap();
    assert!(list.allow);
    assert_eq!(list.scope, ListScope::PerObject);
    let remove = policy
        .authorize(&request("container.remove"))
        .await
        .unwrap();
    assert!(!remove.allow);
    assert_eq!(
        remove.reason.as_deref(),
        Some("authz10 denies container.remove")
    );
    let candidates: Vec<Candidate> = (0..5)
        .map(|i| Candidate {
            kind: ResourceKind::Container,
            id: format!("c{i}"),
            name: None,
            labels: Vec::new(),
        })
        .collect();
    assert_eq!(
        policy
            .filter(&request("container.list"), &candidates)
            .await
            .unwrap(),
        Visibility::Only(vec![0, 2, 4])
    );
    assert_eq!(policy.stats().calls, 3);
}

/// A reference plugin from `plugins/dist`, built by `plugins/build.sh`.
fn dist(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the plugins first (plugins/build.sh)",
            path.display()
        )
    })
}

fn log_container() -> LogContainer {
    LogContainer {
        id: "ab".repeat(32),
        name: "web".into(),
        image: "busybox:latest".into(),
        image_id: format!("sha256:{}", "cd".repeat(32)),
        labels: vec![("tier".into(), "front".into())],
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<LogEntry> {
    range
        .map(|n| LogEntry {
            stderr: n % 3 == 0,
            nanos: 1_800_000_000_000_000_000 + n,
            line: format!("line {n}").into_bytes(),
            partial: false,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_file_driver_stores_rotates_reads_back_and_survives_a_recycle() {
    let dir = tempfile::tempdir().unwrap();
    // A small memory cap, so one oversized batch kills the instance.
    let limits = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    let host = PluginHost::new(&dir.path().join("cache"), limits).unwrap();
    let loaded = host.load("json-file", &dist("json-file")).unwrap();
    assert_eq!(loaded.kind, PluginKind::Logging);
    let state = dir.path().join("state");
    let driver = host
        .logging_driver("json-file", &loaded, &state, Vec::new())
        .await
        .unwrap();
    assert!(driver.capabilities().await.unwrap().can_read_back);
    let container = log_container();
    let bad = driver
        .open(&container, vec![("max-sise".into(), "1k".into())])
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument, "{bad}");
    assert!(bad.to_string().contains("max-sise"), "{bad}");
    let options = vec![
        ("max-size".into(), "2k".into()),
        ("max-file".into(), "3".into()),
        ("compress".into(), "true".into()),
    ];
    let stream = driver.open(&container, options).await.unwrap();
    driver.write(stream, &entries(0..100)).await.unwrap();
    let files: Vec<String> = std::fs::read_dir(state.join(&container.id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        files.contains(&"container.log.1.gz".to_owned()),
        "{files:?}"
    );

    // A batch past the memory cap fails and discards the instance with every stream in it;
    // the next write opens the stream again on the fresh instance.
    let huge = vec![LogEntry {
        stderr: false,
        nanos: 1_800_000_000_000_000_100,
        line: vec![b'x'; 6 << 20],
        partial: false,
    }];
    let failed = driver.write(stream, &huge).await.unwrap_err();
    assert!(matches!(failed, Error::Failed { .. }), "{failed}");
    driver.write(stream, &entries(101..110)).await.unwrap();
    driver.close(stream).await.unwrap();

    let tail = ReadRequest {
        tail: Some(5),
        ..ReadRequest::default()
    };
    let reader = driver.read(&container.id, tail).await.unwrap();
    let got = driver.next(reader, 1024).await.unwrap();
    assert_eq!(got, entries(105..110));
    assert!(driver.next(reader, 1024).await.unwrap().is_empty());
    driver.close_reader(reader).await;

    driver.remove_logs(&container.id).await.unwrap();
    assert!(!state.join(&container.id).exists());
    let none = driver.read(&container.id, ReadRequest::default()).await;
    assert_eq!(none.unwrap_err().kind(), ErrorKind::NotFound);
    // Removing twice is not an error.
    driver.remove_logs(&container.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_driver_reaches_only_the_granted_addresses() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
    let loaded = host.load("syslog", &dist("syslog")).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let grant = format!("udp:{udp_addr},tcp:{tcp_addr}");
    let driver = host
        .logging_driver(
            "syslog",
            &loaded,
            &dir.path().join("state"),
            vec![
                (ALLOW_CONNECT_KEY.into(), grant),
                ("hostname".into(), "node1".into()),
            ],
        )
        .await
        .unwrap();
    assert!(!driver.capabilities().await.unwrap().can_read_back);
    let container = log_container();

    let stream = driver
        .open(
            &container,
            vec![
                ("syslog-address".into(), format!("udp://{udp_addr}")),
                ("tag".into(), "{{.Name}}".into()),
            ],
        )
        .await
        .unwrap();
    driver.write(stream, &entries(0..3)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let mut buf = [0u8; 2048];
        let n = udp.recv(&mut buf).unwrap();
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        got[0],
        "<27>1 2027-01-15T08:00:00Z node1 web - stderr - line 0"
    );
    assert_eq!(
        got[1],
        "<30>1 2027-01-15T08:00:00Z node1 web - stdout - line 1"
    );
    driver.close(stream).await.unwrap();

    let stream = driver
        .open(
            &container,
            vec![("syslog-address".into(), format!("tcp://{tcp_addr}"))],
        )
        .await
        .unwrap();
    let accept = std::thread::spawn(move || {
        let (mut conn, _) = tcp.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    driver.write(stream, &entries(3..5)).await.unwrap();
    driver.close(stream).await.unwrap();
    let framed = String::from_utf8(accept.join().unwrap()).unwrap();
    let first = "<27>1 2027-01-15T08:00:00Z node1 abababababab - stderr - line 3";
    assert!(
        framed.starts_with(&format!("{} {first}", first.len())),
        "{framed}"
    );

    // Any address not granted is refused, with the setting that would grant it.
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let stream = driver
        .open(
            &container,
            vec![("syslog-address".into(), format!("udp://{other_addr}"))],
        )
        .await
        .unwrap();
    let denied = driver.write(stream, &entries(0..1)).await.unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
    assert!(denied.to_string().contains(ALLOW_CONNECT_KEY), "{denied}");

    // Without any grant, nothing is reachable.
    let closed = host
        .logging_driver("syslog", &loaded, &dir.path().join("state2"), Vec::new())
        .await
        .unwrap();
    let stream = closed
        .open(
            &container,
            vec![("syslog-address".into(), format!("udp://{udp_addr}"))],
        )
        .await
        .unwrap();
    let denied = closed.write(stream, &entries(0..1)).await.unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied, "{denied}");
    let bad = host
        .logging_driver(
            "syslog",
            &loaded,
            &dir.path().join("state3"),
            vec![(ALLOW_CONNECT_KEY.into(), "udp:example.com:514".into())],
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument, "{bad}");
}

/// A compiler program (see `compile_out_of_process`) that fails, dies or writes nothing fails
/// the load with what happened, and nothing is cached; one that compiles is loaded from.
#[test]
fn an_out_of_process_compiler_that_fails_fails_the_load_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    cache::prepare_dir(&cache_dir).unwrap();
    let engine = new_engine().unwrap();
    let wasm = fixture("spin");
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let load = |program: &Path| match cache::load(&engine, &cache_dir, "spin", &wasm, Some(program))
    {
        Ok(_) => panic!("{} loaded", program.display()),
        Err(e) => e.to_string(),
    };
    let e = load(&script(
        "fails",
        "cat > /dev/null; echo 'out of luck' >&2; exit 3",
    ));
    assert!(
        e.contains("the compiler failed (exit 3): out of luck"),
        "{e}"
    );
    let e = load(&script("silent", "cat > /dev/null; exit 1"));
    assert!(
        e.ends_with("the compiler failed (exit 1) without saying why"),
        "{e}"
    );
    let e = load(&script("dies", "kill -9 $$"));
    assert!(e.contains("the compiler died (signal 9)"), "{e}");
    let e = load(&script("idle", "cat > /dev/null"));
    assert!(e.contains("left no"), "{e}");
    let e = load(&dir.path().join("missing"));
    assert!(e.contains("cannot run the compiler"), "{e}");
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 0);

    // A compiler that does the work (here: copies an entry compiled elsewhere): the
    // component is then loaded from what it left in the cache.
    let elsewhere = dir.path().join("elsewhere");
    cache::prepare_dir(&elsewhere).unwrap();
    let (_, digest) = cache::load(&engine, &elsewhere, "spin", &wasm, None).unwrap();
    let copier = script(
        "copier",
        &format!(
            "cat > /dev/null; cp {}/{digest}-*.cwasm \"$2/\"",
            elsewhere.display()
        ),
    );
    let (_, loaded) = cache::load(&engine, &cache_dir, "spin", &wasm, Some(&copier)).unwrap();
    assert_eq!(loaded, digest);
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 1);
}
