//! JSON-RPC conformance and the system namespace, over HTTP and WebSocket.

use berth_api::jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use berth_api::jsonrpsee::rpc_params;
use berth_api::system::{Heartbeat, SystemClient};
use berth_tests::Daemon;
use serde_json::{Value, json};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

#[test]
fn standard_error_codes() {
    let d = Daemon::start();
    // -32700: not JSON.
    let (status, body) = d.post(b"{\"jsonrpc\": \"2.0\", \"method\": ");
    assert_eq!(error_code(&parse(&body)), -32700, "status {status}: {body}");
    let (_, body) = d.post(b"\x00\xff\xfe garbage");
    assert_eq!(error_code(&parse(&body)), -32700, "{body}");
    // -32600: JSON, but not a request.
    for bad in [
        r#"{"id": 1, "method": "system.ping"}"#,
        r#"{"jsonrpc": "1.0", "id": 1, "method": "system.ping"}"#,
        r#"{"jsonrpc": "2.0", "id": 1}"#,
        r#"{"jsonrpc": "2.0", "id": 1, "method": 5}"#,
        r#"42"#,
        r#"[]"#,
    ] {
        let (_, body) = d.post(bad.as_bytes());
        assert_eq!(error_code(&parse(&body)), -32600, "{bad} -> {body}");
    }
    // -32601.
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":7,"method":"container.frobnicate"}"#);
    let v = parse(&body);
    assert_eq!(error_code(&v), -32601);
    assert_eq!(v["id"], 7);
    // -32602 with the field named, for wrong types, unknown and surplus params.
    let (_, body) = d.post(
        br#"{"jsonrpc":"2.0","id":1,"method":"system.heartbeat","params":{"interval_ms":"soon"}}"#,
    );
    let v = parse(&body);
    assert_eq!(error_code(&v), -32602, "{body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`interval_ms`"),
        "{body}"
    );
    assert_eq!(v["error"]["data"]["field"], "interval_ms");
    assert_eq!(v["error"]["data"]["kind"], "InvalidArgument");
    let (_, body) =
        d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping","params":{"loud":true}}"#);
    let v = parse(&body);
    assert_eq!(error_code(&v), -32602, "{body}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`loud`"),
        "{body}"
    );
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping","params":[1]}"#);
    assert_eq!(error_code(&parse(&body)), -32602, "{body}");
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping","params":"x"}"#);
    assert_eq!(error_code(&parse(&body)), -32602, "{body}");
    assert!(
        body.contains("params must be an array or an object"),
        "{body}"
    );
    // Positional and named params are both accepted.
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping","params":[]}"#);
    assert_eq!(parse(&body)["result"], "OK", "{body}");
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping","params":{}}"#);
    assert_eq!(parse(&body)["result"], "OK", "{body}");
}

#[test]
fn notifications_get_no_response() {
    let d = Daemon::start();
    let (status, body) = d.post(br#"{"jsonrpc":"2.0","method":"system.ping"}"#);
    assert_eq!(status, 204);
    assert!(body.is_empty(), "a notification was answered: {body:?}");
    // Bad params in a notification: still silent, and the daemon carries on.
    let (_, body) =
        d.post(br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"interval_ms":1}}"#);
    assert!(body.is_empty(), "{body:?}");
    let (_, body) = d.post(
        br#"[{"jsonrpc":"2.0","method":"system.ping"},{"jsonrpc":"2.0","method":"system.info"}]"#,
    );
    assert!(
        body.is_empty(),
        "an all-notification batch was answered: {body:?}"
    );
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping"}"#);
    assert_eq!(parse(&body)["result"], "OK");
}

#[test]
fn batch_of_100_mixed_calls() {
    let d = Daemon::start();
    let mut batch = Vec::new();
    let mut expected = std::collections::HashMap::new();
    for i in 0..100 {
        let entry = match i % 6 {
            0 => {
                expected.insert(i, "OK");
                json!({"jsonrpc": "2.0", "id": i, "method": "system.ping"})
            }
            1 => {
                expected.insert(i, "info");
                json!({"jsonrpc": "2.0", "id": i, "method": "system.info"})
            }
            2 => {
                expected.insert(i, "version");
                json!({"jsonrpc": "2.0", "id": i, "method": "system.version", "params": []})
            }
            3 => {
                expected.insert(i, "-32601");
                json!({"jsonrpc": "2.0", "id": i, "method": "image.nope"})
            }
            4 => {
                expected.insert(i, "-32602");
                json!({"jsonrpc": "2.0", "id": i, "method": "system.df", "params": {"x": 1}})
            }
            _ => json!({"jsonrpc": "2.0", "method": "system.ping"}),
        };
        batch.push(entry);
    }
    let (status, body) = d.post(serde_json::to_string(&batch).unwrap().as_bytes());
    assert_eq!(status, 200);
    let responses = parse(&body);
    let responses = responses.as_array().expect("batch answer is an array");
    assert_eq!(
        responses.len(),
        expected.len(),
        "one answer per call, none for notifications"
    );
    for r in responses {
        let id = r["id"].as_i64().expect("id") as i32;
        match expected[&id] {
            "OK" => assert_eq!(r["result"], "OK"),
            "info" => assert!(r["result"]["data_root"].is_string(), "{r}"),
            "version" => assert_eq!(r["result"]["api_version"], berth_api::API_VERSION),
            code => assert_eq!(error_code(r).to_string(), code, "{r}"),
        }
    }
}

#[test]
fn batch_over_the_limit_is_refused() {
    let d = Daemon::start_with(&["--max-batch-len", "3"]);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "system.ping"});
    let (_, body) = d.post(json!([call, call, call, call]).to_string().as_bytes());
    let v = parse(&body);
    assert!(error_code(&v) < 0, "{body}");
    let (_, body) = d.post(json!([call, call, call]).to_string().as_bytes());
    assert_eq!(parse(&body).as_array().unwrap().len(), 3);
}

#[test]
fn oversized_bodies_are_refused_not_truncated() {
    let d = Daemon::start_with(&["--max-request-body-size", "4096"]);
    let padding = "x".repeat(8192);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"system.ping","params":{{"pad":"{padding}"}}}}"#
    );
    let (status, answer) = d.post(body.as_bytes());
    assert_eq!(status, 413, "{answer}");
    assert_eq!(error_code(&parse(&answer)), -32007, "{answer}");
    // A body that lies about its length is refused too, before it is read.
    let raw = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n{}";
    let reply = berth_tests::raw_exchange(&d.socket, raw.as_bytes()).unwrap();
    let (status, _) = berth_tests::parse_http_response(&reply).unwrap();
    assert_eq!(status, 413);
    // Just under the limit works.
    let (_, answer) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping"}"#);
    assert_eq!(parse(&answer)["result"], "OK");
}

#[tokio::test]
async fn oversized_websocket_message_is_refused_and_daemon_survives() {
    let d = Daemon::start_with(&["--max-request-body-size", "4096"]);
    let client = d.client().await;
    let big = "y".repeat(10_000);
    let r: Result<String, _> = client.request("system.ping", rpc_params![big]).await;
    assert!(r.is_err(), "oversized WebSocket message was accepted");
    let fresh = d.client().await;
    assert_eq!(fresh.ping().await.unwrap(), "OK");
}

#[test]
fn garbage_and_non_http_bytes_do_not_hurt_the_daemon() {
    let mut d = Daemon::start();
    let mut junk = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let _ = berth_tests::raw_exchange(&d.socket, &junk);
    let _ = berth_tests::raw_exchange(
        &d.socket,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let _ = berth_tests::raw_exchange(&d.socket, b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    let reply = berth_tests::raw_exchange(
        &d.socket,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nConnection: close\r\n\r\n\xff\xfe\xfd\xfc",
    )
    .unwrap();
    let (_, body) = berth_tests::parse_http_response(&reply).unwrap();
    assert_eq!(error_code(&parse(&body)), -32700, "{body}");
    assert!(d.is_running());
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.ping"}"#);
    assert_eq!(parse(&body)["result"], "OK");
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

#[tokio::test]
async fn typed_client_calls_every_system_method() {
    let d = Daemon::start();
    let c = d.client().await;
    assert_eq!(c.ping().await.unwrap(), "OK");
    let v = c.version().await.unwrap();
    assert_eq!(v.api_version, berth_api::API_VERSION);
    assert_eq!(v.os, "linux");
    let info = c.info().await.unwrap();
    assert_eq!(info.data_root, d.data_root.display().to_string());
    assert_eq!(info.containers.total, 0);
    assert!(info.ncpu >= 1 && info.mem_total > 0);
    assert!(info.cgroup.version == 1 || info.cgroup.version == 2);
    assert_eq!(info.listeners, vec![d.host()]);
    assert_eq!(info.id.len(), 32);
    let df = c.df().await.unwrap();
    let kinds: Vec<&str> = df.kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(kinds, ["Images", "Containers", "Local Volumes", "Plugins"]);
    // The state database alone takes room under the data root.
    assert!(df.data_root_bytes > 0);
}

#[tokio::test]
async fn heartbeat_subscription_round_trip_over_websocket() {
    let d = Daemon::start();
    let c = d.client().await;
    let mut sub = c.heartbeat(Some(20)).await.expect("subscribe");
    for expected in 1..=3 {
        let beat: Heartbeat = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .expect("a tick within 5 s")
            .expect("stream open")
            .expect("valid item");
        assert_eq!(beat.seq, expected);
    }
    sub.unsubscribe().await.expect("unsubscribe");
    // Out-of-range interval: refused with the field named.
    let Err(err) = c.heartbeat(Some(1)).await else {
        panic!("an interval of 1 ms was accepted");
    };
    assert!(err.to_string().contains("interval_ms"), "{err}");
    // The raw subscription protocol: subscribe, get notifications, unsubscribe.
    let mut raw = c
        .subscribe::<Value, _>(
            "system.heartbeat",
            rpc_params![10],
            "system.heartbeat_unsubscribe",
        )
        .await
        .unwrap();
    let first = raw.next().await.unwrap().unwrap();
    assert_eq!(first["seq"], 1);
}

#[test]
fn discover_lists_every_served_method_with_schemas() {
    let d = Daemon::start();
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#);
    let doc = parse(&body)["result"].clone();
    assert!(doc["openrpc"].as_str().unwrap().starts_with("1."));
    let methods = doc["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for spec in berth_api::all_methods() {
        assert!(
            names.contains(&spec.name),
            "{} missing from rpc.discover",
            spec.name
        );
    }
    // Every listed method is really served (none answers "method not found").
    for m in methods {
        let name = m["name"].as_str().unwrap();
        let (_, body) = d.post(
            json!({"jsonrpc":"2.0","id":1,"method":name,"params":{"interval_ms": 1}})
                .to_string()
                .as_bytes(),
        );
        let v = parse(&body);
        assert_ne!(
            v["error"]["code"], -32601,
            "{name} is documented but not served"
        );
    }
    assert!(doc["components"]["schemas"]["SystemInfo"]["properties"]["containers"].is_object());
    let info = methods.iter().find(|m| m["name"] == "system.info").unwrap();
    assert_eq!(
        info["result"]["schema"]["$ref"],
        "#/components/schemas/SystemInfo"
    );
}

#[test]
fn tcp_listener_serves_the_same_api() {
    let d = Daemon::start_with(&["--listen", "tcp://127.0.0.1:0", "--insecure-tcp"]);
    let (_, body) = d.post(br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#);
    let info = parse(&body)["result"].clone();
    let tcp = info["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str()?.strip_prefix("tcp://"))
        .next()
        .expect("a tcp listener in system.info")
        .to_owned();
    assert!(
        tcp.starts_with("127.0.0.1:") && !tcp.ends_with(":0"),
        "{tcp}"
    );
    let out = d.cli(&["-H", &format!("tcp://{tcp}"), "system", "ping"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
}
