//! Connecting to berthd: `unix:///path` or `tcp://host:port`, one WebSocket for a command's
//! calls and, for a command that prints a stream, one more carrying only that stream, read no
//! faster than the command writes it out ([`Paced`]). On tcp:// hosts optionally TLS (rustls
//! with the ring provider: berthd's certificate verified against a CA or the system's roots,
//! optionally a client certificate) and a bearer token. On the Unix socket berthd knows the
//! caller by its peer credentials, so neither applies there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use berth_api::jsonrpsee::client_transport::ws::{Url, WsTransportClientBuilder};
use berth_api::jsonrpsee::core::client::{
    ReceivedMessage, Subscription, SubscriptionCloseReason, TransportReceiverT, TransportSenderT,
};
use berth_api::jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClient, WsClientBuilder};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Default daemon address, as berthd's default socket.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berthd.sock";

/// How long TCP connect and the TLS handshake may take, as jsonrpsee's own connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The global options that say where berthd is and how to authenticate to it. Environment
/// variables other than BERTH_HOST are read by [`ConnectArgs::resolve`], not by clap, so that
/// tests can give their own environment.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Daemon connection")]
pub struct ConnectArgs {
    /// Daemon to talk to: unix:///path or tcp://host:port.
    #[arg(short = 'H', long, env = "BERTH_HOST", default_value = DEFAULT_HOST, global = true)]
    pub host: String,
    /// Use TLS (tcp:// hosts only; also $BERTH_TLS=1). berth always verifies berthd's
    /// certificate: against --tlscacert, else $BERTH_CERT_PATH/ca.pem if it exists, else the
    /// system's root certificates.
    #[arg(long, global = true)]
    pub tls: bool,
    /// Use TLS and verify berthd's certificate (also $BERTH_TLS_VERIFY=1); implied by
    /// --tlscacert, --tlscert and --tlskey. --tlsverify=false overrides $BERTH_TLS_VERIFY.
    #[arg(
        long,
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        global = true
    )]
    pub tlsverify: Option<bool>,
    /// CA certificate(s) (PEM) that berthd's certificate must chain to; implies --tlsverify
    /// [default: $BERTH_CERT_PATH/ca.pem if it exists, else the system's roots].
    #[arg(long, value_name = "PATH", global = true)]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate (PEM) to present to berthd, with --tlskey; implies --tlsverify
    /// [default with TLS on: $BERTH_CERT_PATH/cert.pem if it exists].
    #[arg(long, value_name = "PATH", global = true)]
    pub tlscert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tlscert [default with TLS on:
    /// $BERTH_CERT_PATH/key.pem if it exists].
    #[arg(long, value_name = "PATH", global = true)]
    pub tlskey: Option<PathBuf>,
    /// Read a bearer token from this file (surrounding whitespace is trimmed) [default:
    /// $BERTH_TOKEN]. It is sent as "Authorization: Bearer TOKEN" to tcp:// hosts only: on
    /// the Unix socket berthd knows the caller by its peer credentials (its user).
    #[arg(long, value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
}

/// The environment variables [`ConnectArgs::resolve`] reads, for the help text.
pub const ENV_HELP: &str = "\
Environment (docker's DOCKER_* variables, named BERTH_* here):
  BERTH_HOST        daemon address, as -H
  BERTH_TLS         1: use TLS, as --tls
  BERTH_TLS_VERIFY  1: use TLS and verify berthd, as --tlsverify
  BERTH_CERT_PATH   directory with ca.pem, cert.pem and key.pem: the defaults of --tlscacert,
                    --tlscert and --tlskey when TLS is on (it does not turn TLS on by itself)
  BERTH_TOKEN       bearer token for tcp:// hosts (--token-file takes precedence)";

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
    /// CA certificate(s) that berthd's certificate must chain to; `None`: the system's roots.
    pub ca: Option<PathBuf>,
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
    /// A bearer token (tcp:// only), trimmed and fit for an HTTP header.
    pub token: Option<String>,
}

/// A boolean environment variable: unset or empty is false.
fn env_bool(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> anyhow::Result<bool> {
    let Some(value) = env(name) else {
        return Ok(false);
    };
    match value.to_string_lossy().trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => bail!("{name}={value:?}: expected 1 or 0 (true/false, yes/no, on/off)"),
    }
}

impl ConnectArgs {
    /// The connection these options and the environment ask for; `env` looks a variable up
    /// (`std::env::var_os` outside tests). Client certificate files named only by
    /// BERTH_CERT_PATH count when they exist; explicit paths are read when connecting.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<OsString>) -> anyhow::Result<Connection> {
        let host = Host::parse(&self.host)?;
        if let Host::Unix(_) = host {
            // Flags are refused; BERTH_TLS* and BERTH_TOKEN, meant for some tcp:// host, are
            // left aside so that `-H unix://...` still works in such a shell.
            let flag = if self.tls {
                Some("--tls")
            } else if self.tlsverify == Some(true) {
                Some("--tlsverify")
            } else if self.tlscacert.is_some() {
                Some("--tlscacert")
            } else if self.tlscert.is_some() {
                Some("--tlscert")
            } else if self.tlskey.is_some() {
                Some("--tlskey")
            } else {
                None
            };
            if let Some(flag) = flag {
                bail!(
                    "{flag}: TLS applies to tcp:// hosts only (on the Unix socket {host} berthd \
                     knows you by your user)"
                );
            }
            if self.token_file.is_some() {
                bail!(
                    "--token-file: tokens apply to tcp:// hosts only (on the Unix socket {host} \
                     berthd knows you by your user)"
                );
            }
            return Ok(Connection {
                host,
                tls: None,
                token: None,
            });
        }

        let verify = match self.tlsverify {
            Some(v) => v,
            None => env_bool(env, "BERTH_TLS_VERIFY")?,
        };
        let use_tls = self.tls
            || env_bool(env, "BERTH_TLS")?
            || verify
            || self.tlscacert.is_some()
            || self.tlscert.is_some()
            || self.tlskey.is_some();
        let tls = if use_tls {
            let cert_dir = env("BERTH_CERT_PATH")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            let in_dir = |name: &str| cert_dir.as_ref().map(|d| d.join(name));
            let ca = self
                .tlscacert
                .clone()
                .or_else(|| in_dir("ca.pem").filter(|p| p.exists()));
            let client = match (&self.tlscert, &self.tlskey) {
                (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                (Some(_), None) => {
                    bail!("--tlscert needs --tlskey (the certificate's private key)")
                }
                (None, Some(_)) => bail!("--tlskey needs --tlscert (the key's certificate)"),
                (None, None) => match (in_dir("cert.pem"), in_dir("key.pem")) {
                    (Some(cert), Some(key)) => match (cert.exists(), key.exists()) {
                        (true, true) => Some((cert, key)),
                        (false, false) => None,
                        (true, false) => bail!(
                            "BERTH_CERT_PATH: {} exists but {} does not",
                            cert.display(),
                            key.display()
                        ),
                        (false, true) => bail!(
                            "BERTH_CERT_PATH: {} exists but {} does not",
                            key.display(),
                            cert.display()
                        ),
                    },
                    _ => None,
                },
            };
            Some(TlsFiles { ca, client })
        } else {
            None
        };

        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?;
                let token = text.trim();
                if token.is_empty() {
                    bail!("the token file {} is empty", path.display());
                }
                check_token(token).with_context(|| format!("the token in {}", path.display()))?;
                Some(token.to_owned())
            }
            None => match env("BERTH_TOKEN") {
                None => None,
                Some(value) => {
                    let value = value
                        .into_string()
                        .map_err(|_| anyhow!("BERTH_TOKEN is not valid UTF-8"))?;
                    let token = value.trim();
                    if token.is_empty() {
                        None
                    } else {
                        check_token(token).context("BERTH_TOKEN")?;
                        Some(token.to_owned())
                    }
                }
            },
        };
        Ok(Connection { host, tls, token })
    }
}

fn check_token(token: &str) -> anyhow::Result<()> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        bail!("a token is printable ASCII without spaces (it travels in an HTTP header)")
    }
}

/// What an error while loading a PEM file says: the file's name and its role always.
fn pem_error(path: &Path, what: &str, e: pem::Error) -> anyhow::Error {
    match e {
        pem::Error::Io(e) => anyhow!("cannot read the {what} {}: {e}", path.display()),
        pem::Error::NoItemsFound => anyhow!("{} holds no PEM {what}", path.display()),
        e => anyhow!("{} (the {what}) is not valid PEM: {e}", path.display()),
    }
}

/// Every certificate of a PEM file; at least one.
fn load_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, what, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The roots berthd's certificate must chain to, and a description for error messages.
fn roots(files: &TlsFiles) -> anyhow::Result<(rustls::RootCertStore, String)> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in load_certs(ca, "CA certificate")? {
                roots.add(cert).map_err(|e| {
                    anyhow!("{} holds an unusable CA certificate: {e}", ca.display())
                })?;
            }
            Ok((roots, ca.display().to_string()))
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                bail!(
                    "no system root certificates to verify berthd with{why}; name berthd's CA \
                     with --tlscacert (or BERTH_CERT_PATH)"
                );
            }
            Ok((roots, "the system's root certificates".to_owned()))
        }
    }
}

/// The rustls client configuration, with an explicit ring provider (no process-wide default).
/// Returns what berthd's certificate is verified against too.
fn tls_config(files: &TlsFiles) -> anyhow::Result<(rustls::ClientConfig, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (roots, trusted) = roots(files)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_root_certificates(roots);
    let mut config = match &files.client {
        Some((cert, key)) => {
            let chain = load_certs(cert, "client certificate")?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "private key", e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                anyhow!(
                    "{} and {} are no certificate and key pair: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, trusted))
}

/// The name berthd's certificate must carry: the host part of HOST:PORT (a DNS name or an IP
/// address, IPv6 in brackets).
fn server_name(addr: &str) -> anyhow::Result<ServerName<'static>> {
    let name = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr);
    ServerName::try_from(name.to_owned())
        .map_err(|_| anyhow!("{name:?} is not a valid TLS server name (DNS name or IP address)"))
}

/// TCP to `addr` and the TLS handshake with berthd there.
async fn tls_connect(
    addr: &str,
    files: &TlsFiles,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let (config, trusted) = tls_config(files)?;
    let name = server_name(addr)?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to tcp://{addr} timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to berthd at tcp://{addr}: is it running?"))?;
    let _ = tcp.set_nodelay(true);
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => bail!("TLS handshake with tcp://{addr} failed: timed out"),
        Ok(Err(e)) => {
            let hint = match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(_)) => {
                    format!(" (berthd's certificate was verified against {trusted})")
                }
                Some(rustls::Error::InvalidMessage(_)) => {
                    " (does berthd use TLS on this port?)".to_owned()
                }
                // A server without TLS often drops the connection on a ClientHello, and
                // the reset can arrive before its plain-text answer is read.
                _ if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
                {
                    " (does berthd use TLS on this port?)".to_owned()
                }
                _ => String::new(),
            };
            bail!("TLS handshake with tcp://{addr} failed: {e}{hint}")
        }
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Why `subscription` ended without its closing item. jsonrpsee's client drops a subscription
/// whose items pile up unread beyond its buffer, which a [`Paced`] stream never lets happen;
/// the other way is a closed connection. Either way what came so far is not the whole stream,
/// and the command must not end as if it were.
fn cut_short<T>(subscription: &Subscription<T>, stream: &str) -> anyhow::Error {
    match subscription.close_reason() {
        Some(SubscriptionCloseReason::Lagged) => {
            anyhow!("the {stream} was dropped: its items came faster than this reader took them")
        }
        _ => anyhow!("the {stream} ended early: berthd closed the connection"),
    }
}

/// Items a subscription on a [`connect`]ion may hold unread before jsonrpsee's client drops
/// it. The streams there come slowly (a pull's or push's progress, `stats`); the ones that can
/// outrun their reader (output, logs, archives, events) are [`Paced`].
const STREAM_BUFFER: usize = 1 << 16;

/// jsonrpsee's buffer on a [`Paced`] connection, which holds at most [`PACE_WINDOW`] items
/// (and the subscription's answer): output chunks are up to 32 KiB, archive chunks up to
/// 256 KiB.
const PACED_BUFFER: usize = 1024;

/// Opens the WebSocket session for a command's calls.
pub async fn connect(conn: &Connection) -> anyhow::Result<WsClient> {
    open(conn, STREAM_BUFFER, None).await
}

/// A connection for one subscription whose items are taken as fast as they can be written
/// out, and no faster: once [`PACE_WINDOW`] items have arrived that the command has not
/// taken yet, the connection stops reading from berthd. berthd's sends then wait, and so does
/// what feeds them (the process behind an `exec`, the archive behind a `cp`): a stalled reader
/// slows the stream down instead of losing it. The subscription is read through
/// [`Paced::read`], which counts an item taken once the command asks for the next.
///
/// Once the subscription's items flow, nothing else may use it: a call's answer queued behind
/// unread items would wait for the command, which waits for the answer. Calls go over a
/// [`connect`]ion of their own.
pub struct Paced {
    /// The client to subscribe with.
    pub client: WsClient,
    flow: Arc<Flow>,
}

impl Paced {
    /// `subscription`, made over this connection's client, as a paced stream.
    pub fn read<T>(&self, subscription: Subscription<T>) -> PacedStream<T> {
        PacedStream {
            subscription,
            flow: Arc::clone(&self.flow),
            holding: false,
        }
    }
}

/// A subscription of a [`Paced`] connection.
pub struct PacedStream<T> {
    subscription: Subscription<T>,
    flow: Arc<Flow>,
    /// Whether the command holds an item it has not finished with: asking for the next one
    /// finishes it.
    holding: bool,
}

impl<T: serde::de::DeserializeOwned> PacedStream<T> {
    /// The next item; the one before it is taken. Cancel-safe, as `Subscription::next`.
    pub async fn next(&mut self) -> Option<Result<T, serde_json::Error>> {
        if std::mem::take(&mut self.holding) {
            let _ = self
                .flow
                .unread
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            self.flow.taken.notify_one();
        }
        let item = self.subscription.next().await;
        self.holding = item.is_some();
        item
    }

    /// Why the stream ended without its closing item (see [`cut_short`]).
    pub fn cut_short(&self, stream: &str) -> anyhow::Error {
        cut_short(&self.subscription, stream)
    }
}

/// Items of a paced stream that may be read ahead of the command: far below jsonrpsee's
/// per-subscription buffer ([`PACED_BUFFER`]), at which it would drop the subscription.
const PACE_WINDOW: usize = PACED_BUFFER / 4;

#[derive(Default)]
struct Flow {
    /// Messages read from berthd and not yet taken by the command (the subscription's
    /// answer is one that never is: one slot of the window).
    unread: AtomicUsize,
    taken: tokio::sync::Notify,
}

/// The transport's receiving half, holding back while the window is full.
struct PacedReceiver<R> {
    inner: R,
    flow: Arc<Flow>,
}

impl<R: TransportReceiverT + Send> TransportReceiverT for PacedReceiver<R> {
    type Error = R::Error;

    async fn receive(&mut self) -> Result<ReceivedMessage, Self::Error> {
        loop {
            let taken = self.flow.taken.notified();
            if self.flow.unread.load(Ordering::SeqCst) < PACE_WINDOW {
                break;
            }
            taken.await;
        }
        let message = self.inner.receive().await?;
        self.flow.unread.fetch_add(1, Ordering::SeqCst);
        Ok(message)
    }
}

/// Opens a [`Paced`] connection.
pub async fn connect_paced(conn: &Connection) -> anyhow::Result<Paced> {
    let flow = Arc::new(Flow::default());
    let client = open(conn, PACED_BUFFER, Some(Arc::clone(&flow))).await?;
    Ok(Paced { client, flow })
}

async fn open(
    conn: &Connection,
    subscription_buffer: usize,
    flow: Option<Arc<Flow>>,
) -> anyhow::Result<WsClient> {
    let host = &conn.host;
    let unreachable = || format!("cannot connect to berthd at {host}: is it running?");
    let client = WsClientBuilder::default()
        .max_buffer_capacity_per_subscription(subscription_buffer)
        .request_timeout(std::time::Duration::from_secs(24 * 3600));
    let mut transport = WsTransportClientBuilder::default()
        .max_request_size(u32::MAX)
        .max_response_size(u32::MAX)
        .connection_timeout(CONNECT_TIMEOUT);
    if let Some(token) = &conn.token {
        // Once, though a command may open two connections.
        static WARNED: std::sync::Once = std::sync::Once::new();
        if conn.tls.is_none() {
            WARNED.call_once(|| {
                eprintln!(
                    "berth: warning: the token goes to {host} in cleartext (use --tlsverify \
                     and --tlscacert)"
                );
            });
        }
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token holds characters a header cannot carry")?;
        headers.insert("authorization", value);
        transport = transport.set_headers(headers);
    }
    let url = |authority: &str| {
        Url::parse(&format!("ws://{authority}/")).context("the address is not a URL host")
    };
    match (host, &conn.tls) {
        (Host::Tcp(addr), Some(files)) => {
            let stream = tls_connect(addr, files).await?;
            let (sender, receiver) = transport
                .build_with_stream(url(addr)?, stream)
                .await
                .with_context(|| {
                    format!(
                        "berthd at {host} refused the connection (check the client certificate \
                         or token)"
                    )
                })?;
            Ok(finish(client, sender, receiver, flow))
        }
        (Host::Unix(path), _) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(unreachable)?;
            let (sender, receiver) = transport
                .build_with_stream(url("localhost")?, stream)
                .await
                .with_context(unreachable)?;
            Ok(finish(client, sender, receiver, flow))
        }
        (Host::Tcp(addr), None) => {
            let (sender, receiver) = transport
                .build(url(addr)?)
                .await
                .with_context(unreachable)?;
            Ok(finish(client, sender, receiver, flow))
        }
    }
}

fn finish<S, R>(
    builder: WsClientBuilder,
    sender: S,
    receiver: R,
    flow: Option<Arc<Flow>>,
) -> WsClient
where
    S: TransportSenderT + Send,
    R: TransportReceiverT + Send,
{
    match flow {
        Some(flow) => builder.build_with_transport(
            sender,
            PacedReceiver {
                inner: receiver,
                flow,
            },
        ),
        None => builder.build_with_transport(sender, receiver),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[derive(Debug, Parser)]
    struct Opts {
        #[command(flatten)]
        conn: ConnectArgs,
    }

    /// The options of `argv` with the environment `vars` only.
    fn resolve(argv: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<Connection> {
        let mut full = vec!["berth", "-H", "tcp://127.0.0.1:2376"];
        full.extend_from_slice(argv);
        let opts = Opts::try_parse_from(full)?;
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        opts.conn.resolve(&|name| vars.get(name).cloned())
    }

    fn err(argv: &[&str], vars: &[(&str, &str)]) -> String {
        format!("{:#}", resolve(argv, vars).unwrap_err())
    }

    fn tls(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Option<TlsFiles> {
        Some(TlsFiles {
            ca: ca.map(Path::to_owned),
            client: client.map(|(c, k)| (c.to_owned(), k.to_owned())),
        })
    }

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

    #[test]
    fn no_tls_without_asking() {
        let c = resolve(&[], &[]).unwrap();
        assert_eq!(c.host, Host::Tcp("127.0.0.1:2376".into()));
        assert_eq!((c.tls, c.token), (None, None));
        // BERTH_CERT_PATH only names the files, as DOCKER_CERT_PATH.
        let c = resolve(&[], &[("BERTH_CERT_PATH", "/nonexistent")]).unwrap();
        assert_eq!(c.tls, None);
        let c = resolve(&["--tlsverify=false"], &[("BERTH_TLS_VERIFY", "1")]).unwrap();
        assert_eq!(c.tls, None);
        let c = resolve(&[], &[("BERTH_TLS_VERIFY", "0"), ("BERTH_TLS", "")]).unwrap();
        assert_eq!(c.tls, None);
    }

    #[test]
    fn tls_flags_and_environment() {
        // --tls, --tlsverify and their variables: the system's roots.
        for (argv, vars) in [
            (&["--tls"][..], &[][..]),
            (&["--tlsverify"], &[]),
            (&["--tlsverify=true"], &[]),
            (&[], &[("BERTH_TLS_VERIFY", "1")]),
            (&[], &[("BERTH_TLS", "yes")]),
        ] {
            assert_eq!(
                resolve(argv, vars).unwrap().tls,
                tls(None, None),
                "{argv:?}"
            );
        }
        // --tlscacert implies TLS.
        let c = resolve(&["--tlscacert", "/c/ca.pem"], &[]).unwrap();
        assert_eq!(c.tls, tls(Some(Path::new("/c/ca.pem")), None));
        // Paths are taken as given; they are read when connecting.
        let c = resolve(&["--tlscert", "/c/a.pem", "--tlskey", "/c/a-key.pem"], &[]).unwrap();
        let pair = (Path::new("/c/a.pem"), Path::new("/c/a-key.pem"));
        assert_eq!(c.tls, tls(None, Some(pair)));
        assert!(err(&["--tlscert", "/c/a.pem"], &[]).contains("--tlscert needs --tlskey"));
        assert!(err(&["--tlskey", "/c/k.pem", "--tls"], &[]).contains("--tlskey needs --tlscert"));
        assert!(err(&[], &[("BERTH_TLS_VERIFY", "maybe")]).contains("BERTH_TLS_VERIFY"));
    }

    #[test]
    fn cert_path_gives_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let var = [("BERTH_CERT_PATH", d.to_str().unwrap())];
        let on = [var[0], ("BERTH_TLS_VERIFY", "1")];
        // Nothing there: the system's roots and no client certificate.
        assert_eq!(resolve(&[], &on).unwrap().tls, tls(None, None));
        std::fs::write(d.join("ca.pem"), "").unwrap();
        assert_eq!(
            resolve(&[], &on).unwrap().tls,
            tls(Some(&d.join("ca.pem")), None)
        );
        std::fs::write(d.join("cert.pem"), "").unwrap();
        let e = err(&[], &on);
        assert!(e.contains(&d.join("key.pem").display().to_string()), "{e}");
        std::fs::write(d.join("key.pem"), "").unwrap();
        let all = tls(
            Some(&d.join("ca.pem")),
            Some((&d.join("cert.pem"), &d.join("key.pem"))),
        );
        assert_eq!(resolve(&[], &on).unwrap().tls, all);
        assert_eq!(resolve(&["--tls"], &var).unwrap().tls, all);
        // Flags win over the directory.
        let c = resolve(
            &[
                "--tlscacert",
                "/o/ca.pem",
                "--tlscert",
                "/o/c",
                "--tlskey",
                "/o/k",
            ],
            &on,
        )
        .unwrap();
        let pair = (Path::new("/o/c"), Path::new("/o/k"));
        assert_eq!(c.tls, tls(Some(Path::new("/o/ca.pem")), Some(pair)));
        // Still nothing without asking for TLS.
        assert_eq!(resolve(&[], &var).unwrap().tls, None);
    }

    #[test]
    fn unix_socket_refuses_tls_and_token_flags() {
        let unix = |argv: &[&str], vars: &[(&str, &str)]| {
            let mut full = vec!["berth", "-H", "unix:///run/b.sock"];
            full.extend_from_slice(argv);
            let vars: HashMap<&str, OsString> =
                vars.iter().map(|(k, v)| (*k, OsString::from(v))).collect();
            Opts::try_parse_from(full)
                .unwrap()
                .conn
                .resolve(&|name| vars.get(name).cloned())
        };
        for flags in [
            &["--tls"][..],
            &["--tlsverify"],
            &["--tlscacert", "/c/ca.pem"],
            &["--tlscert", "/c/c", "--tlskey", "/c/k"],
        ] {
            let e = format!("{:#}", unix(flags, &[]).unwrap_err());
            assert!(
                e.contains("TLS applies to tcp:// hosts only"),
                "{flags:?}: {e}"
            );
        }
        let e = format!("{:#}", unix(&["--token-file", "/t"], &[]).unwrap_err());
        assert!(e.contains("tcp:// hosts only"), "{e}");
        // The environment, meant for some tcp:// host, is left aside.
        let c = unix(
            &[],
            &[
                ("BERTH_TLS_VERIFY", "1"),
                ("BERTH_CERT_PATH", "/c"),
                ("BERTH_TOKEN", "t"),
            ],
        )
        .unwrap();
        assert_eq!((c.tls, c.token), (None, None));
    }

    #[test]
    fn tokens() {
        let c = resolve(&[], &[("BERTH_TOKEN", "  s3cret\n")]).unwrap();
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert_eq!(resolve(&[], &[("BERTH_TOKEN", " ")]).unwrap().token, None);
        assert!(err(&[], &[("BERTH_TOKEN", "a b")]).contains("BERTH_TOKEN"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "\n  from-file \n").unwrap();
        let f = file.to_str().unwrap();
        let c = resolve(&["--token-file", f], &[("BERTH_TOKEN", "env")]).unwrap();
        assert_eq!(c.token.as_deref(), Some("from-file"));
        std::fs::write(&file, " \n").unwrap();
        assert!(err(&["--token-file", f], &[]).contains(&format!("{f} is empty")));
        let missing = dir.path().join("missing");
        let m = missing.to_str().unwrap();
        assert!(err(&["--token-file", m], &[]).contains(&format!("token file {m}")));
    }

    /// A test PKI in a directory, in deploy/gen-certs.sh's names: ca.pem, server-cert.pem,
    /// server-key.pem (127.0.0.1 and localhost), alice-cert.pem, alice-key.pem.
    struct Pki {
        dir: tempfile::TempDir,
        ca_der: CertificateDer<'static>,
        server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
        client_der: CertificateDer<'static>,
    }

    impl Pki {
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Certificates made with rcgen.
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let write =
                |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "test CA");
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            write("ca.pem", &ca.pem());
            let leaf = |name: &str, sans: Vec<String>, usage| {
                let key = KeyPair::generate().unwrap();
                let mut params = CertificateParams::new(sans).unwrap();
                params.distinguished_name.push(DnType::CommonName, name);
                params.extended_key_usages = vec![usage];
                write(
                    &format!("{name}-cert.pem"),
                    &params.signed_by(&key, &ca).unwrap().pem(),
                );
                write(&format!("{name}-key.pem"), &key.serialize_pem());
            };
            leaf(
                "server",
                vec!["127.0.0.1".into(), "localhost".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            leaf("alice", vec![], ExtendedKeyUsagePurpose::ClientAuth);
            Pki::load(dir)
        }

        fn load(dir: tempfile::TempDir) -> Pki {
            let p = |name: &str| dir.path().join(name);
            Pki {
                ca_der: load_certs(&p("ca.pem"), "CA").unwrap().remove(0),
                server: (
                    load_certs(&p("server-cert.pem"), "server certificate").unwrap(),
                    PrivateKeyDer::from_pem_file(p("server-key.pem")).unwrap(),
                ),
                client_der: load_certs(&p("alice-cert.pem"), "client")
                    .unwrap()
                    .remove(0),
                dir,
            }
        }

        /// A TLS server on 127.0.0.1 that wants a client certificate. It answers one
        /// connection's HTTP request with 401 and yields the client's certificate and request.
        async fn serve(
            &self,
        ) -> (
            String,
            tokio::task::JoinHandle<anyhow::Result<(CertificateDer<'static>, String)>>,
        ) {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(self.server.0.clone(), self.server.1.clone_key())
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let task = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await?;
                let mut tls = acceptor.accept(tcp).await?;
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .context("no client cert")?[0]
                    .clone()
                    .into_owned();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await?;
                    anyhow::ensure!(n > 0, "EOF before the end of the request");
                    request.extend_from_slice(&buf[..n]);
                }
                tls.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                    .await?;
                tls.shutdown().await?;
                Ok((cert, String::from_utf8(request)?))
            });
            (addr, task)
        }
    }

    #[test]
    fn pem_errors_name_the_file() {
        let pki = Pki::new();
        let p = |n: &str| pki.path(n);
        let message = |files: TlsFiles| format!("{:#}", tls_config(&files).unwrap_err());
        let shown = |n: &str| p(n).display().to_string();

        let e = message(TlsFiles {
            ca: Some(p("missing.pem")),
            client: None,
        });
        assert!(
            e.contains(&format!("CA certificate {}", shown("missing.pem"))),
            "{e}"
        );
        std::fs::write(p("junk.pem"), "not PEM\n").unwrap();
        let e = message(TlsFiles {
            ca: Some(p("junk.pem")),
            client: None,
        });
        assert!(
            e.contains(&format!("{} holds no PEM CA", shown("junk.pem"))),
            "{e}"
        );

        let client = |cert: &str, key: &str| TlsFiles {
            ca: Some(p("ca.pem")),
            client: Some((p(cert), p(key))),
        };
        let e = message(client("missing.pem", "alice-key.pem"));
        assert!(e.contains(&shown("missing.pem")), "{e}");
        let e = message(client("alice-cert.pem", "missing.pem"));
        assert!(
            e.contains(&format!("private key {}", shown("missing.pem"))),
            "{e}"
        );
        // A certificate where the key should be.
        let e = message(client("alice-cert.pem", "ca.pem"));
        assert!(
            e.contains(&format!("{} holds no PEM private key", shown("ca.pem"))),
            "{e}"
        );
        // A key that is not the certificate's.
        let e = message(client("alice-cert.pem", "server-key.pem"));
        assert!(e.contains(&shown("server-key.pem")) && e.contains(&shown("alice-cert.pem")));
        assert!(tls_config(&client("alice-cert.pem", "alice-key.pem")).is_ok());
    }

    /// Connects with alice's certificate and a token to `pki`'s server; checks what it saw.
    async fn handshake_with_client_certificate_and_token(pki: &Pki) {
        let (addr, server) = pki.serve().await;
        let conn = Connection {
            host: Host::Tcp(addr.clone()),
            tls: Some(TlsFiles {
                ca: Some(pki.path("ca.pem")),
                client: Some((pki.path("alice-cert.pem"), pki.path("alice-key.pem"))),
            }),
            token: Some("s3cret".into()),
        };
        // The server answers 401 to the WebSocket upgrade.
        let e = format!("{:#}", connect(&conn).await.unwrap_err());
        assert!(e.contains("refused the connection"), "{e}");
        let (cert, request) = server.await.unwrap().unwrap();
        assert_eq!(cert, pki.client_der);
        let request = request.to_ascii_lowercase();
        assert!(request.starts_with("get / http/1.1\r\n"), "{request}");
        assert!(
            request.contains("\r\nauthorization: bearer s3cret\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nupgrade: websocket\r\n"), "{request}");
    }

    #[tokio::test]
    async fn tls_handshake_with_client_certificate_and_token() {
        handshake_with_client_certificate_and_token(&Pki::new()).await;
    }

    /// deploy/gen-certs.sh's files work with rustls, on both ends (where openssl is).
    #[tokio::test]
    async fn gen_certs_script_makes_files_rustls_takes() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("no openssl: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gen-certs.sh");
        let out = std::process::Command::new("sh")
            .arg(script)
            .args(["--client", "alice"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        handshake_with_client_certificate_and_token(&Pki::load(dir)).await;
    }

    /// A handshake with the listener at `addr` fails, and the error asks whether berthd uses
    /// TLS there.
    async fn asks_whether_berthd_uses_tls(addr: &str, files: &TlsFiles) {
        let e = format!("{:#}", tls_connect(addr, files).await.unwrap_err());
        assert!(
            e.starts_with(&format!("TLS handshake with tcp://{addr} failed: ")),
            "{e}"
        );
        assert!(e.contains("does berthd use TLS on this port?"), "{e}");
    }

    #[tokio::test]
    async fn tls_handshake_failures_say_why() {
        let pki = Pki::new();
        // berthd's certificate from another CA.
        let other = Pki::new();
        let (addr, server) = pki.serve().await;
        let files = TlsFiles {
            ca: Some(other.path("ca.pem")),
            client: None,
        };
        let e = format!("{:#}", tls_connect(&addr, &files).await.unwrap_err());
        let expected = format!("TLS handshake with tcp://{addr} failed: invalid peer certificate");
        assert!(e.starts_with(&expected), "{e}");
        assert!(
            e.contains(&other.path("ca.pem").display().to_string()),
            "{e}"
        );
        assert!(server.await.unwrap().is_err());

        // A listener without TLS.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = plain.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        asks_whether_berthd_uses_tls(&addr, &files).await;
        server.await.unwrap();

        // A listener that resets the connection instead of answering.
        let resetting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reset_addr = resetting.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (tcp, _) = resetting.accept().await.unwrap();
            tcp.set_zero_linger().unwrap();
        });
        asks_whether_berthd_uses_tls(&reset_addr, &files).await;
        server.await.unwrap();

        // Nobody there.
        let e = format!("{:#}", tls_connect(&addr, &files).await.unwrap_err());
        assert!(
            e.contains(&format!("cannot connect to berthd at tcp://{addr}")),
            "{e}"
        );
    }

    #[test]
    fn server_names() {
        assert_eq!(
            server_name("127.0.0.1:2376").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:2376").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("berth.example:2376").unwrap(),
            ServerName::try_from("berth.example").unwrap()
        );
        assert!(server_name("bad_name!:1").is_err());
    }
}
