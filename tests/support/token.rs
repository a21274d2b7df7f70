//! A registry token service for tests of the bearer token flow: issues ES256 JWTs (signed
//! with a throwaway key whose self-signed certificate the registry trusts) to clients that
//! present the right basic credentials, and refuses everyone else.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

/// Names the registry and the token service agree on.
pub const ISSUER: &str = "berth-test-issuer";
/// The registry's service name.
pub const SERVICE: &str = "berth-test-registry";

/// A running token service (its thread lives as long as the test process).
#[derive(Debug)]
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    /// PEM certificate the registry must trust (`rootcertbundle`).
    pub cert_pem: PathBuf,
    _dir: tempfile::TempDir,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl Signer {
    fn token(&self, subject: &str, scope: &str) -> String {
        // scope: repository:NAME:ACTIONS
        let mut access = Vec::new();
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        if let [kind, name, actions] = parts.as_slice() {
            access.push(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
        }
        let header = json!({
            "alg": "ES256",
            "typ": "JWT",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let t = now();
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": t + 300, "nbf": t - 10, "iat": t, "jti": format!("{t}-{subject}"),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .key
            .sign(&rng, signing_input.as_bytes())
            .expect("sign token");
        format!("{signing_input}.{}", b64url(sig.as_ref()))
    }
}

impl TokenServer {
    /// Starts issuing tokens to `user`:`password`.
    pub fn start(user: &str, password: &str) -> TokenServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![ISSUER.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let cert_pem = dir.path().join("token.pem");
        std::fs::write(&cert_pem, cert.pem()).expect("write cert");
        let rng = ring::rand::SystemRandom::new();
        let signer = Arc::new(Signer {
            key: EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .expect("pkcs8 key"),
            cert_der: cert.der().to_vec(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let realm = format!("http://{}/token", listener.local_addr().expect("addr"));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let signer = Arc::clone(&signer);
                let expected = expected.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut authorized = false;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("authorization")
                            && value.trim() == expected
                        {
                            authorized = true;
                        }
                    }
                    let target = request_line.split_whitespace().nth(1).unwrap_or("");
                    let scope = target
                        .split_once('?')
                        .map(|(_, q)| q)
                        .unwrap_or("")
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("scope="))
                        .map(|s| {
                            s.replace("%3A", ":")
                                .replace("%2C", ",")
                                .replace("%2F", "/")
                        })
                        .unwrap_or_default();
                    let (status, body) = if authorized {
                        (
                            "200 OK",
                            json!({"token": signer.token("alice", &scope)}).to_string(),
                        )
                    } else {
                        (
                            "401 Unauthorized",
                            json!({"errors": [{"code": "UNAUTHORIZED"}]}).to_string(),
                        )
                    };
                    let mut out = stream;
                    let _ = write!(
                        out,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        TokenServer {
            realm,
            cert_pem,
            _dir: dir,
        }
    }
}
