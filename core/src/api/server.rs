//! Accept loops and connection tasks. Each accepted stream gets its own jsonrpsee tower
//! service (HTTP POST and WebSocket upgrade on the same path); shutdown stops accepting,
//! asks every connection to finish, and waits for them up to a deadline.

use std::time::Duration;

use jsonrpsee::RpcModule;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{
    BatchRequestConfig, Server, ServerConfig, serve_with_graceful_shutdown, stop_channel,
};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::http::HttpGateLayer;
use super::params::ParamsCheckLayer;

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
        .set_rpc_middleware(RpcServiceBuilder::new().layer(ParamsCheckLayer {
            max_response_body_size: MAX_RESPONSE_BODY_SIZE as usize,
        }))
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
                let service = builder.clone().build(methods.clone(), stop_handle.clone());
                let stop = stop_handle.clone();
                connections.spawn(async move {
                    let result = match stream {
                        Stream::Unix(s) => serve_with_graceful_shutdown(s, service, stop.shutdown()).await,
                        Stream::Tcp(s) => serve_with_graceful_shutdown(s, service, stop.shutdown()).await,
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
