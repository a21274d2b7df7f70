//! Connecting to berthd: `unix:///path` or `tcp://host:port` (TLS with a CA and optionally a
//! client certificate, a bearer token), one WebSocket carrying every call and subscription of
//! a command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use berth_api::jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClient, WsClientBuilder};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Default daemon address, as berthd's default socket.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berthd.sock";

/// Where berthd is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A Unix socket path.
    Unix(std::path::PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl Host {
    /// Parses `unix:///path`, `tcp://host:port`, or a bare absolute socket path.
    pub fn parse(s: &str) -> anyhow::Result<Host> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                bail!(
                    "invalid host {s:?}: unix:// needs an absolute path (unix:///run/berth/berthd.sock)"
                );
            }
            Ok(Host::Unix(path.into()))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                bail!("invalid host {s:?}: expected tcp://HOST:PORT");
            }
            Ok(Host::Tcp(addr.to_owned()))
        } else if s.starts_with('/') {
            Ok(Host::Unix(s.into()))
        } else {
            bail!("invalid host {s:?}: expected unix:///path or tcp://host:port")
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// TLS settings for a tcp:// host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that berthd's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key (PEM), if the daemon wants one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// How to reach and authenticate to berthd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Where.
    pub host: Host,
    /// TLS (tcp:// only).
    pub tls: Option<TlsFiles>,
    /// A bearer token (tcp:// only).
    pub token: Option<String>,
}

impl Connection {
    /// Checks the combination of options: TLS and tokens apply to tcp:// hosts only.
    pub fn new(host: Host, tls: Option<TlsFiles>, token: Option<String>) -> anyhow::Result<Self> {
        if matches!(host, Host::Unix(_)) && tls.is_some() {
            bail!(
                "TLS applies to tcp:// hosts only (on the Unix socket berthd knows you by your user)"
            );
        }
        let token = match host {
            Host::Unix(_) => None,
            Host::Tcp(_) => token,
        };
        Ok(Connection { host, tls, token })
    }
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let read = |path: &Path| format!("cannot read {}", path.display());
    for cert in CertificateDer::pem_file_iter(&files.ca).with_context(|| read(&files.ca))? {
        roots
            .add(cert.with_context(|| read(&files.ca))?)
            .with_context(|| format!("{} holds an unusable CA certificate", files.ca.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no CA certificate", files.ca.display());
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_root_certificates(roots);
    Ok(match &files.client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| read(cert))?
                .collect::<Result<_, _>>()
                .with_context(|| read(cert))?;
            let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| read(key))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .with_context(|| format!("{} does not fit {}", key.display(), cert.display()))?
        }
        None => builder.with_no_client_auth(),
    })
}

/// Opens the WebSocket session.
pub async fn connect(conn: &Connection) -> anyhow::Result<WsClient> {
    let host = &conn.host;
    let unreachable = || format!("cannot connect to berthd at {host}: is it running?");
    let mut builder = WsClientBuilder::default()
        .max_request_size(u32::MAX)
        .max_response_size(u32::MAX)
        .request_timeout(std::time::Duration::from_secs(24 * 3600));
    if let Some(token) = &conn.token {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("the token holds characters a header cannot carry")?;
        headers.insert("authorization", value);
        builder = builder.set_headers(headers);
    }
    if let (Host::Tcp(addr), Some(files)) = (host, &conn.tls) {
        let config = tls_config(files)?;
        let name = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr);
        let server_name = ServerName::try_from(name.to_owned())
            .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(unreachable)?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host} failed"))?;
        return builder
            .build_with_stream(format!("ws://{addr}/"), tls)
            .await
            .with_context(|| format!("berthd at {host} refused the connection (check the client certificate or token)"));
    }
    match host {
        Host::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(unreachable)?;
            builder
                .build_with_stream("ws://localhost/", stream)
                .await
                .with_context(unreachable)
        }
        Host::Tcp(addr) => builder
            .build(format!("ws://{addr}/"))
            .await
            .with_context(unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        assert_eq!(
            Host::parse("unix:///run/b.sock").unwrap(),
            Host::Unix("/run/b.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2375").unwrap(),
            Host::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            Host::parse("/x.sock").unwrap(),
            Host::Unix("/x.sock".into())
        );
        for bad in ["unix://rel", "tcp://nohost", "tcp://:1", "http://x:1", "x"] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Host::parse(DEFAULT_HOST).unwrap().to_string(), DEFAULT_HOST);
    }
}
