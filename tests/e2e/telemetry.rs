//! OpenTelemetry end to end (root): berthd exports its spans over OTLP/HTTP to a receiver
//! started here (decoding the protobuf a collector would get). A call carrying a W3C
//! `traceparent` is a child of the caller's span; a container start has its phases (network,
//! log open, shim spawn, the shim's spec, clone, mounts, cgroup and exec) and its plugin calls under
//! it; a pull has a span per layer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use berth_tests::registry::Registry;
use berth_tests::{Daemon, import_busybox, require_registry, require_root};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

/// One exported span: name, trace id, span id, parent span id, start and end (ns).
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace: String,
    id: String,
    parent: String,
    start: u64,
    end: u64,
}

/// An OTLP/HTTP receiver: answers every POST with 200 and keeps the spans it decodes, and
/// the paths and content types it was sent.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Exported>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::listen(None)
    }

    /// The same over TLS, with this server configuration.
    fn start_tls(tls: rustls::ServerConfig) -> Receiver {
        Receiver::listen(Some(Arc::new(tls)))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&spans), Arc::clone(&requests));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (spans, requests) = (Arc::clone(&s), Arc::clone(&r));
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(conn, &spans, &requests),
                    Some(tls) => {
                        let Ok(session) = rustls::ServerConnection::new(tls) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(session, conn), &spans, &requests);
                    }
                });
            }
        });
        Receiver {
            port,
            spans,
            requests,
        }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(
    conn: impl Read + Write,
    spans: &Mutex<Vec<Exported>>,
    requests: &Mutex<Vec<(String, String)>>,
) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        requests.lock().unwrap().push((path, content_type));
        if let Ok(export) = ExportTraceServiceRequest::decode(body.as_slice()) {
            let mut all = spans.lock().unwrap();
            for resource in export.resource_spans {
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        all.push(Exported {
                            name: span.name,
                            trace: hex(&span.trace_id),
                            id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano,
                        });
                    }
                }
            }
        }
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        let writer = reader.get_mut();
        if writer.write_all(ok).and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}

#[test]
fn spans_reach_an_otlp_receiver_with_the_callers_trace_and_the_start_phases() {
    require_registry!();
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}/v1/traces", receiver.port);
    let reg = Registry::start();
    reg.seed_busybox();
    let mut d = Daemon::start_with(&["--otlp-endpoint", &endpoint]);
    import_busybox(&d, "busybox");

    // A call carrying the caller's trace context.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"system.version"}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\ntraceparent: 00-{trace}-{caller_span}-01\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = request.into_bytes();
    raw.extend_from_slice(body);
    let reply = berth_tests::raw_exchange(&d.socket, &raw).unwrap();
    let (status, _) = berth_tests::parse_http_response(&reply).unwrap();
    assert_eq!(status, 200);

    let o = d.cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--log-driver",
        "json-file",
        "busybox",
        "true",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = d.cli(&["pull", &reg.reference("busybox:latest")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // SIGTERM: berthd exports what is left before it exits.
    assert!(d.stop().success());

    let spans = receiver.spans();
    let named =
        |name: &str| -> Vec<&Exported> { spans.iter().filter(|s| s.name == name).collect() };
    let version = named("system.version");
    assert_eq!(version.len(), 1, "{spans:#?}");
    assert_eq!(version[0].trace, trace);
    assert_eq!(version[0].parent, caller_span);

    let start = named("container.start");
    assert_eq!(start.len(), 1, "{spans:#?}");
    let start = start[0];
    let children_of = |parent: &Exported| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.parent == parent.id && s.trace == parent.trace)
            .map(|s| s.name.clone())
            .collect()
    };
    let under_start = children_of(start);
    for phase in ["container.log_open", "container.shim_start"] {
        assert!(
            under_start.contains(&phase.to_owned()),
            "{phase}: {under_start:?}"
        );
    }
    let shim = spans
        .iter()
        .find(|s| s.name == "container.shim_start" && s.parent == start.id)
        .unwrap();
    let phases: Vec<&Exported> = spans.iter().filter(|s| s.parent == shim.id).collect();
    let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 5, "shim phases: {names:?} (spans: {spans:#?})");
    for phase in [
        "shim.spec",
        "shim.clone",
        "shim.mounts",
        "shim.cgroup",
        "shim.exec",
    ] {
        assert!(names.contains(&phase), "{phase}: {names:?}");
    }
    for phase in &phases {
        assert!(
            phase.start <= phase.end
                && phase.start >= shim.start
                && phase.end <= shim.end + 1_000_000,
            "{phase:?} outside {shim:?}"
        );
    }
    // The logging driver's calls sit under the start's log opening.
    let log_open = spans
        .iter()
        .find(|s| s.name == "container.log_open" && s.parent == start.id)
        .unwrap();
    assert!(
        children_of(log_open).contains(&"plugin.call".to_owned()),
        "{spans:#?}"
    );

    let pull = named("image.pull");
    assert_eq!(pull.len(), 1, "{spans:#?}");
    let layers = spans
        .iter()
        .filter(|s| s.name == "image.pull.layer" && s.trace == pull[0].trace)
        .count();
    assert!(layers >= 1, "{spans:#?}");

    let requests = receiver.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|(path, ty)| path == "/v1/traces" && ty == "application/x-protobuf"),
        "{requests:?}"
    );
}

/// A TLS server configuration from deploy/gen-certs.sh's CA and server certificate (for
/// 127.0.0.1), made in `dir`; the CA's path.
fn collector_tls(dir: &std::path::Path) -> (rustls::ServerConfig, std::path::PathBuf) {
    use rustls_pki_types::pem::PemObject as _;
    berth_tests::test_certificates(dir, &[]);
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("server-cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    (config, dir.join("ca.pem"))
}

#[test]
fn spans_reach_an_https_collector_whose_certificate_chains_to_otlp_ca() {
    require_root!();
    let certs = tempfile::tempdir().unwrap();
    let (tls, ca) = collector_tls(certs.path());
    let ca = ca.to_str().unwrap().to_owned();
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"system.version"}"#;

    let trusted = Receiver::start_tls(tls.clone());
    let endpoint = format!("https://127.0.0.1:{}/v1/traces", trusted.port);
    let mut d = Daemon::start_with(&["--otlp-endpoint", &endpoint, "--otlp-ca", &ca]);
    assert_eq!(d.post(call).0, 200);
    assert!(d.stop().success());
    let spans = trusted.spans();
    assert!(
        spans.iter().any(|s| s.name == "system.version"),
        "{spans:#?}"
    );
    assert!(
        trusted
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|(path, _)| path == "/v1/traces")
    );

    // Without otlp-ca the system's roots decide, and they do not know the test CA: the
    // export fails its handshake, and berthd goes on regardless.
    let untrusted = Receiver::start_tls(tls);
    let endpoint = format!("https://127.0.0.1:{}/v1/traces", untrusted.port);
    let mut d = Daemon::start_with(&["--otlp-endpoint", &endpoint]);
    assert_eq!(d.post(call).0, 200);
    assert!(d.stop().success());
    assert!(untrusted.requests.lock().unwrap().is_empty());
    assert!(untrusted.spans().is_empty());
}
