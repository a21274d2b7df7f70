//! Accept loops and connection tasks. Each accepted stream is authenticated (Unix peer
//! credentials, or TLS and then a client certificate or bearer token per request) and gets
//! its own jsonrpsee tower service (HTTP POST and WebSocket upgrade on the same path), which
//! sees the [`Caller`] on every request; shutdown stops accepting, asks every connection to
//! finish, and waits for them up to a deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use hyper::{Request, Response, StatusCode, header};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::HttpBody;

use jsonrpsee::RpcModule;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{
    BatchRequestConfig, Server, ServerConfig, ServerHandle, StopHandle,
    serve_with_graceful_shutdown, stop_channel,
};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::authz::{AuthzLayer, GateState};
use super::http::HttpGateLayer;
use super::params::ParamsCheckLayer;
use crate::authz::{Caller, Identity, Tokens, TokensInForce, Transport};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How callers are authenticated and authorized.
#[derive(Debug, Clone)]
pub struct Security {
    /// TLS for TCP listeners; `None`: plain TCP (only with `insecure_tcp`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bearer tokens accepted on TCP (replaced on SIGHUP).
    pub tokens: TokensInForce,
    /// TCP callers that present nothing are anonymous instead of refused.
    pub insecure_tcp: bool,
    /// The authorization chain, if one is configured.
    pub gate: Option<Arc<GateState>>,
}

/// Largest response berthd sends; requests are limited by configuration.
const MAX_RESPONSE_BODY_SIZE: u32 = 512 * 1024 * 1024;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// The Unix socket.
    Unix(tokio::net::UnixListener),
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
}

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// Largest request body or WebSocket message.
    pub max_request_body_size: u32,
    /// Largest batch.
    pub max_batch_len: u32,
    /// How long open connections may take to finish after shutdown starts.
    pub shutdown_timeout: Duration,
}

/// Serves `module` on `listeners` until `shutdown` resolves and connections have drained.
pub async fn serve(
    listeners: Vec<Listener>,
    module: RpcModule<()>,
    settings: ServeSettings,
    security: Security,
    shutdown: impl Future<Output = ()>,
) {
    let config = ServerConfig::builder()
        .max_request_body_size(settings.max_request_body_size)
        .max_response_body_size(MAX_RESPONSE_BODY_SIZE)
        .set_batch_request_config(BatchRequestConfig::Limit(settings.max_batch_len))
        .max_connections(u32::MAX)
        .build();
    let builder = Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(HttpGateLayer {
            max_request_body_size: settings.max_request_body_size,
        }))
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer(ParamsCheckLayer {
                    max_response_body_size: MAX_RESPONSE_BODY_SIZE as usize,
                })
                .layer(AuthzLayer {
                    state: security.gate.clone(),
                    tokens: Arc::clone(&security.tokens),
                    max_response_body_size: MAX_RESPONSE_BODY_SIZE as usize,
                }),
        )
        .to_service_builder();
    let methods: jsonrpsee::Methods = module.into();
    let (stop_handle, server_handle) = stop_channel();

    let mut connections = JoinSet::new();
    let mut accepts = JoinSet::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    for listener in listeners {
        let conn_tx = conn_tx.clone();
        let stop = stop_handle.clone();
        accepts.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.clone().shutdown() => return,
                    a = accept(&listener) => a,
                };
                match accepted {
                    Ok(stream) => {
                        if conn_tx.send(stream).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    drop(conn_tx);

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            stream = conn_rx.recv() => {
                let Some(stream) = stream else { break };
                let stop = stop_handle.clone();
                let security = security.clone();
                let (builder, methods) = (builder.clone(), methods.clone());
                connections.spawn(async move {
                    let result = match stream {
                        Stream::Unix(s) => {
                            let service = builder.build(methods, stop.clone());
                            let Some(caller) = unix_caller(&s).await else { return };
                            let service = CallerService::new(service, Authn::Fixed(caller), &security);
                            serve_with_graceful_shutdown(s, service, stop.shutdown()).await
                        }
                        Stream::Tcp(s) => {
                            // The connection stops on its own signal: berthd's shutdown, or
                            // a SIGHUP that revokes a token it authenticated with (which
                            // ends its WebSocket and the subscriptions on it).
                            let (conn_stop, conn_handle) = stop_channel();
                            let service = builder.build(methods, conn_stop.clone());
                            let used = UsedTokens::default();
                            tokio::spawn(stop_connection_on_shutdown_or_revocation(
                                stop,
                                conn_handle,
                                security.tokens.subscribe(),
                                Arc::clone(&used),
                            ));
                            let remote = s.peer_addr().map(|a| a.to_string()).ok();
                            match &security.tls {
                                Some(tls) => {
                                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                                    let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
                                        Ok(Ok(t)) => t,
                                        Ok(Err(e)) => {
                                            debug!(remote = ?remote, "TLS handshake failed: {e}");
                                            return;
                                        }
                                        Err(_) => {
                                            debug!(remote = ?remote, "TLS handshake timed out");
                                            return;
                                        }
                                    };
                                    let cert = tls_stream
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .map(|c| crate::authz::tls_client(c.as_ref()));
                                    let authn = Authn::Tcp { transport: Transport::TcpTls, cert, remote, used };
                                    let service = CallerService::new(service, authn, &security);
                                    serve_with_graceful_shutdown(tls_stream, service, conn_stop.shutdown()).await
                                }
                                None => {
                                    let authn = Authn::Tcp { transport: Transport::TcpInsecure, cert: None, remote, used };
                                    let service = CallerService::new(service, authn, &security);
                                    serve_with_graceful_shutdown(s, service, conn_stop.shutdown()).await
                                }
                            }
                        }
                    };
                    if let Err(e) = result {
                        debug!("connection ended: {e}");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    info!(
        open = connections.len(),
        "shutting down: no new connections"
    );
    let _ = server_handle.stop();
    accepts.shutdown().await;
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "connections still open after the shutdown timeout: closing them"
        );
        connections.shutdown().await;
    }
    // Also wait for WebSocket sessions, which jsonrpsee runs as detached tasks holding
    // clones of the stop handle.
    drop(stop_handle);
    let _ = tokio::time::timeout(settings.shutdown_timeout, server_handle.stopped()).await;
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Stream> {
    match listener {
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
    }
}

/// The Unix peer of a connection, named. `None` if the kernel will not say (the connection
/// is then dropped: it cannot be authorized).
async fn unix_caller(stream: &tokio::net::UnixStream) -> Option<Caller> {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read the peer credentials of a connection: {e}");
            return None;
        }
    };
    let (uid, gid) = (cred.uid(), cred.gid());
    let pid = cred.pid().unwrap_or(0).max(0) as u32;
    let peer = tokio::task::spawn_blocking(move || crate::authz::unix_peer(uid, gid, pid))
        .await
        .ok()?;
    Some(Caller {
        identity: Identity::Unix(peer),
        transport: Transport::Unix,
        remote_address: None,
        token_digest: None,
    })
}

/// The bearer tokens a connection authenticated with, by digest and the name each had.
type UsedTokens = Arc<std::sync::Mutex<Vec<([u8; 32], String)>>>;

/// Stops a TCP connection (through `connection`, its own stop handle) when berthd shuts down
/// or when a reload of the tokens leaves one it authenticated with naming no one, or someone
/// else. A WebSocket keeps the identity of the request that opened it: the calls it carries
/// are refused once that token is revoked, but its subscriptions would stream on until the
/// connection ends.
async fn stop_connection_on_shutdown_or_revocation(
    server: StopHandle,
    connection: ServerHandle,
    mut tokens: tokio::sync::watch::Receiver<Tokens>,
    used: UsedTokens,
) {
    // Held until the connection's sessions are gone, so berthd's shutdown waits for them.
    let _server = server.clone();
    let revoked = async {
        while tokens.changed().await.is_ok() {
            let tokens = tokens.borrow_and_update();
            let used = used.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, name)) = used
                .iter()
                .find(|(digest, name)| tokens.name_of(digest).as_ref() != Some(name))
            {
                info!(token = %name, "a connection's bearer token was revoked: closing it");
                return;
            }
        }
        std::future::pending().await
    };
    tokio::select! {
        () = server.shutdown() => {}
        () = revoked => {}
        // Ended by itself: every clone of its stop handle (its service's, its WebSocket's)
        // is gone.
        () = connection.clone().stopped() => return,
    }
    let _ = connection.stop();
    connection.stopped().await;
}

/// How a connection's requests are authenticated.
#[derive(Debug, Clone)]
enum Authn {
    /// Every request is this caller (the Unix socket's peer).
    Fixed(Caller),
    /// TCP: a bearer token on the request, else the client certificate, else anonymous
    /// (only with `insecure-tcp`).
    Tcp {
        transport: Transport,
        cert: Option<crate::authz::TlsClient>,
        remote: Option<String>,
        /// Where the tokens its requests authenticated with are noted.
        used: UsedTokens,
    },
}

/// Puts the [`Caller`] on every HTTP request of a connection, refusing TCP requests that
/// authenticate as nobody (unless berthd runs with `insecure-tcp`).
#[derive(Debug, Clone)]
struct CallerService<S> {
    inner: S,
    authn: Arc<Authn>,
    tokens: TokensInForce,
    insecure_tcp: bool,
}

impl<S> CallerService<S> {
    fn new(inner: S, authn: Authn, security: &Security) -> Self {
        CallerService {
            inner,
            authn: Arc::new(authn),
            tokens: Arc::clone(&security.tokens),
            insecure_tcp: security.insecure_tcp,
        }
    }

    fn caller<B>(&self, req: &Request<B>) -> Result<Caller, &'static str> {
        let (transport, cert, remote, used) = match &*self.authn {
            Authn::Fixed(caller) => return Ok(caller.clone()),
            Authn::Tcp {
                transport,
                cert,
                remote,
                used,
            } => (*transport, cert, remote, used),
        };
        let caller = |identity, token_digest| Caller {
            identity,
            transport,
            remote_address: remote.clone(),
            token_digest,
        };
        if let Some(value) = req.headers().get(header::AUTHORIZATION) {
            let secret = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or("the Authorization header must be `Bearer TOKEN`")?;
            let digest = Tokens::digest(secret);
            let Some(name) = self.tokens.borrow().name_of(&digest) else {
                return Err("the bearer token is not valid");
            };
            let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.iter().any(|(d, _)| *d == digest) {
                used.push((digest, name.clone()));
            }
            return Ok(caller(Identity::Token { name }, Some(digest)));
        }
        if let Some(cert) = cert {
            return Ok(caller(Identity::Tls(cert.clone()), None));
        }
        if self.insecure_tcp {
            return Ok(caller(Identity::Anonymous, None));
        }
        Err("authentication required: present a TLS client certificate or a bearer token")
    }
}

fn unauthorized(message: &str) -> Response<HttpBody> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": berth_api::ErrorKind::PermissionDenied.code(),
            "message": message,
            "data": {"kind": "PermissionDenied"},
        },
    });
    let mut r = Response::new(HttpBody::from(body.to_string()));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

impl<S, B> tower::Service<Request<B>> for CallerService<S>
where
    S: tower::Service<Request<B>, Response = Response<HttpBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.caller(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                let mut inner = self.inner.clone();
                Box::pin(async move { inner.call(req).await })
            }
            Err(message) => {
                debug!("refused an unauthenticated request: {message}");
                let response = unauthorized(message);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
