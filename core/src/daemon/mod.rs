//! berthd's wiring: configuration, ownership of the data root and socket, start-up in
//! dependency order, serving, and graceful shutdown.

pub mod config;
pub mod lock;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::ErrorKind;
use tracing::{info, warn};

use crate::api::{self, Listener};
use crate::host::HostFacts;
use crate::store::{self, Store};
pub use config::{Args, Config, LogFormat};
use lock::DataRootLock;

/// Start-up and wiring failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for berthd.
    #[error("invalid config file {path}: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// A config value is out of range.
    #[error("invalid config value for {key}: {message}")]
    ConfigInvalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Another berthd owns this data root.
    #[error("data root {} is in use by another berthd{}", data_root.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    DataRootInUse {
        /// The data root.
        data_root: PathBuf,
        /// The pid written in the lock file, if readable.
        holder: Option<u32>,
    },
    /// Another process accepts connections on the socket path.
    #[error("socket {} is live: another berthd is listening on it", socket.display())]
    SocketLive {
        /// The socket path.
        socket: PathBuf,
    },
    /// The socket path exists and is not a socket.
    #[error("socket path {} exists and is not a socket", socket.display())]
    SocketPathTaken {
        /// The path.
        socket: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The event log could not start.
    #[error(transparent)]
    Events(#[from] crate::events::Error),
    /// The image subsystem could not start.
    #[error(transparent)]
    Image(Box<crate::image::Error>),
    /// The container subsystem could not start.
    #[error(transparent)]
    Container(Box<crate::container::Error>),
    /// The plugin subsystem could not start.
    #[error(transparent)]
    Plugin(Box<crate::plugin::Error>),
    /// The API could not be assembled (a bug: duplicate method names).
    #[error("cannot assemble the API: {0}")]
    Api(String),
    /// TLS, tokens or the decision log could not be set up.
    #[error(transparent)]
    Authz(#[from] crate::authz::Error),
}

impl From<crate::image::Error> for Error {
    fn from(e: crate::image::Error) -> Self {
        Error::Image(Box::new(e))
    }
}

impl From<crate::container::Error> for Error {
    fn from(e: crate::container::Error) -> Self {
        Error::Container(Box::new(e))
    }
}

impl From<crate::plugin::Error> for Error {
    fn from(e: crate::plugin::Error) -> Self {
        Error::Plugin(Box::new(e))
    }
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ConfigRead { .. } | Error::ConfigParse { .. } | Error::ConfigInvalid { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::DataRootInUse { .. }
            | Error::SocketLive { .. }
            | Error::SocketPathTaken { .. } => ErrorKind::FailedPrecondition,
            Error::Io { .. } | Error::Bind { .. } => ErrorKind::Unavailable,
            Error::Store(e) => e.kind(),
            Error::Events(e) => e.kind(),
            Error::Image(e) => e.kind(),
            Error::Container(e) => e.kind(),
            Error::Plugin(e) => e.kind(),
            Error::Api(_) => ErrorKind::Internal,
            Error::Authz(e) => e.kind(),
        }
    }
}

/// Everything the API handlers share.
#[derive(Debug)]
pub struct Context {
    /// Effective configuration.
    pub config: Config,
    /// The state database.
    pub store: Arc<Store>,
    /// The event log (`events.subscribe`).
    pub events: Arc<crate::events::Events>,
    /// Host facts probed at start-up.
    pub host: HostFacts,
    /// Images, their content and snapshots.
    pub images: Arc<crate::image::Images>,
    /// Containers.
    pub containers: Arc<crate::container::Containers>,
    /// Installed plugins and their live drivers.
    pub plugins: Arc<crate::plugin::Plugins>,
    /// Volumes.
    pub volumes: Arc<crate::volume::Volumes>,
    /// Networks.
    pub networks: Arc<crate::network::Networks>,
    /// Delivery of container logs to logging drivers.
    pub logs: Arc<crate::logs::Delivery>,
    /// This data root's id.
    pub daemon_id: String,
    /// When berthd started.
    pub started: Instant,
    /// Where the API is reachable, for `system.info`.
    pub listeners: Vec<String>,
    /// The container each live exec session and upload works in.
    pub sessions: api::Sessions,
}

/// A daemon that owns its data root and has bound its listeners, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    ctx: Arc<Context>,
    listeners: Vec<StdListener>,
    remove_socket: Option<PathBuf>,
    running: Vec<String>,
    auth: Auth,
    gate_slot: Arc<std::sync::OnceLock<Arc<api::GateState>>>,
    _lock: DataRootLock,
}

/// What authenticates and authorizes callers, prepared before serving.
#[derive(Debug)]
struct Auth {
    tls: Option<Arc<rustls::ServerConfig>>,
    tokens: crate::authz::TokensInForce,
    decision_log: Option<crate::authz::DecisionLog>,
}

/// What SIGHUP reloads: the tokens file, the authorization policies (their files read
/// again), and the decision log (reopened after rotation).
#[derive(Debug, Clone)]
pub struct Reloader {
    ctx: Arc<Context>,
    tokens: crate::authz::TokensInForce,
    gate: Arc<std::sync::OnceLock<Arc<api::GateState>>>,
}

impl Reloader {
    /// Reloads; failures are logged and leave the previous state in force.
    pub async fn reload(&self) {
        if let Some(path) = self.ctx.config.tokens_file.clone() {
            match tokio::task::spawn_blocking(move || crate::authz::Tokens::load(&path)).await {
                Ok(Ok(tokens)) => {
                    self.tokens.send_replace(tokens);
                    info!("SIGHUP: tokens reloaded");
                }
                Ok(Err(e)) => warn!("SIGHUP: tokens not reloaded, the previous ones stay: {e}"),
                Err(e) => warn!("SIGHUP: tokens reload failed: {e}"),
            }
        }
        if let Some(state) = self.gate.get() {
            state.gate.log().reopen();
        }
        self.ctx.plugins.reload_authz().await;
    }
}

fn prepare_auth(config: &Config) -> Result<Auth, Error> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            // Without tokens or an anonymous fallback, a certificate is the only way in: ask
            // for it in the handshake.
            let require =
                config.tls_ca.is_some() && config.tokens_file.is_none() && !config.insecure_tcp;
            Some(crate::authz::server_config(
                cert,
                key,
                config.tls_ca.as_deref(),
                require,
            )?)
        }
        _ => None,
    };
    let tokens = match &config.tokens_file {
        Some(path) => crate::authz::Tokens::load(path)?,
        None => crate::authz::Tokens::none(),
    };
    let decision_log = if config.authz_plugins.is_empty() {
        None
    } else {
        let path = config
            .authz_decision_log
            .clone()
            .unwrap_or_else(|| config.data_root.join("authz").join("decisions.log"));
        Some(crate::authz::DecisionLog::open(&path)?)
    };
    Ok(Auth {
        tls,
        tokens: Arc::new(tokio::sync::watch::Sender::new(tokens)),
        decision_log,
    })
}

#[derive(Debug)]
enum StdListener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// Takes the data root, opens the state, probes the host and binds the listeners, in that
/// order, so that a second daemon is refused before it touches anything. Blocking.
pub fn prepare(config: Config) -> Result<Prepared, Error> {
    create_dir(&config.data_root, 0o711)?;
    let lock = DataRootLock::acquire(&config.data_root)?;
    let store = Arc::new(Store::open(&config.data_root)?);
    let daemon_id = store.daemon_id()?;
    let events = crate::events::Events::open(Arc::clone(&store))?;
    // One TLS crypto provider for every registry client (ring: no C toolchain beyond cc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let images = Arc::new(crate::image::Images::open(
        &config.data_root,
        Arc::clone(&store),
        crate::image::registry::Registries::new(crate::image::registry::RegistrySettings {
            mirrors: config.registry_mirrors.clone(),
            insecure: config.insecure_registries.clone(),
        }),
    )?);
    let shim_binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("berth-shim"));
    let containers = Arc::new(crate::container::Containers::open(
        &config.data_root,
        Arc::clone(&store),
        Arc::clone(&images),
        shim_binary,
        Arc::clone(&events),
        crate::container::LocalLog {
            max_bytes: config.local_log_max_size,
            max_files: config.local_log_max_files,
            format: config.local_log_format,
        },
    )?);
    let plugins = Arc::new(crate::plugin::Plugins::open(
        &config.data_root,
        Arc::clone(&store),
        Arc::clone(&images),
        crate::plugin_host::Limits::default(),
    )?);
    let volumes = Arc::new(crate::volume::Volumes::new(
        Arc::clone(&store),
        Arc::clone(&plugins),
        config.volume_bind_roots.clone(),
    ));
    let networks = Arc::new(crate::network::Networks::new(
        Arc::clone(&store),
        Arc::clone(&plugins),
        &config.data_root,
        crate::network::DefaultNetwork {
            bridge_name: config.bridge_name.clone(),
            bridge_subnet: config.bridge_subnet.clone(),
            pool: config.default_address_pool.clone(),
            pool_size: config.default_address_pool_size,
        },
    ));
    let trap_events = Arc::clone(&events);
    plugins.on_failure(Arc::new(move |plugin, function, reason| {
        let attributes = [("name", plugin), ("function", function), ("reason", reason)];
        trap_events.emit("plugin", "trap", plugin, attributes);
    }));
    let auth = prepare_auth(&config)?;
    plugins.set_authz(crate::plugin::AuthzSetup {
        chain: config.authz_plugins.clone(),
        rego_defaults: [
            ("policy", &config.authz_policy),
            ("data", &config.authz_data),
        ]
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(key, files)| {
            let list: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            (key.to_owned(), list.join(","))
        })
        .collect(),
    });
    // Containers survive berthd: find the ones still running, record the ones that ended.
    let running = containers.reconcile()?;
    let host = HostFacts::probe();
    if !host.overlay_supported {
        warn!("the kernel offers no overlayfs: images cannot be unpacked on this host");
    }

    let mut listeners = Vec::new();
    let mut names = Vec::new();
    let mut remove_socket = None;
    let activated = systemd_listeners()?;
    if activated.is_empty() {
        if let Some(parent) = config.socket.parent() {
            create_dir(parent, 0o755)?;
        }
        lock::claim_socket_path(&config.socket)?;
        let unix = std::os::unix::net::UnixListener::bind(&config.socket).map_err(|source| {
            Error::Bind {
                addr: format!("unix://{}", config.socket.display()),
                source,
            }
        })?;
        remove_socket = Some(config.socket.clone());
        secure_socket(&config.socket, &config.socket_group)?;
        names.push(format!("unix://{}", config.socket.display()));
        listeners.push(StdListener::Unix(unix));
    } else {
        for l in activated {
            names.push(match &l {
                StdListener::Unix(u) => format!(
                    "unix://{} (socket-activated)",
                    u.local_addr()
                        .ok()
                        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                        .unwrap_or_default()
                ),
                StdListener::Tcp(t) => format!(
                    "tcp://{} (socket-activated)",
                    t.local_addr().map(|a| a.to_string()).unwrap_or_default()
                ),
            });
            listeners.push(l);
        }
    }
    for url in &config.listen {
        let addr = config::parse_tcp_listen(url).map_err(|message| Error::ConfigInvalid {
            key: "listen",
            message,
        })?;
        let tcp = std::net::TcpListener::bind(addr).map_err(|source| Error::Bind {
            addr: url.clone(),
            source,
        })?;
        let bound = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if auth.tls.is_none() {
            warn!(listener = %bound, "insecure-tcp: TCP listener without TLS: anyone who can reach it controls berthd unless an authorization policy says otherwise");
        } else if config.insecure_tcp {
            warn!(listener = %bound, "insecure-tcp: TLS callers without a certificate or token are let in as anonymous");
        }
        names.push(format!("tcp://{bound}"));
        listeners.push(StdListener::Tcp(tcp));
    }
    for l in &listeners {
        let r = match l {
            StdListener::Unix(u) => u.set_nonblocking(true),
            StdListener::Tcp(t) => t.set_nonblocking(true),
        };
        r.map_err(|source| Error::Bind {
            addr: "listener".into(),
            source,
        })?;
    }
    let logs = Arc::new(crate::logs::Delivery::new(
        Arc::clone(&plugins),
        &config.data_root,
    ));
    Ok(Prepared {
        ctx: Arc::new(Context {
            config,
            store,
            events,
            host,
            images,
            containers,
            plugins,
            volumes,
            logs,
            networks,
            daemon_id,
            started: Instant::now(),
            listeners: names,
            sessions: api::Sessions::default(),
        }),
        listeners,
        remove_socket,
        running,
        auth,
        gate_slot: Arc::default(),
        _lock: lock,
    })
}

impl Prepared {
    /// Where the API is reachable.
    pub fn listeners(&self) -> &[String] {
        &self.ctx.listeners
    }

    /// What SIGHUP reloads.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            ctx: Arc::clone(&self.ctx),
            tokens: Arc::clone(&self.auth.tokens),
            gate: Arc::clone(&self.gate_slot),
        }
    }

    /// Serves the API until `shutdown` resolves, then lets open calls finish (bounded by
    /// `shutdown-timeout`), removes the socket and releases the data root.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Prepared {
            ctx,
            listeners,
            remove_socket,
            running,
            auth,
            gate_slot,
            _lock,
        } = self;
        let mut async_listeners = Vec::new();
        for l in listeners {
            async_listeners.push(match l {
                StdListener::Unix(u) => {
                    Listener::Unix(tokio::net::UnixListener::from_std(u).map_err(|source| {
                        Error::Bind {
                            addr: "unix listener".into(),
                            source,
                        }
                    })?)
                }
                StdListener::Tcp(t) => {
                    Listener::Tcp(tokio::net::TcpListener::from_std(t).map_err(|source| {
                        Error::Bind {
                            addr: "tcp listener".into(),
                            source,
                        }
                    })?)
                }
            });
        }
        // Drivers start before the API serves, so the first request finds them running.
        if let Err(e) = ctx.networks.start_host().await {
            warn!("networking is unavailable: {e}");
        }
        ctx.plugins.start().await?;
        ctx.volumes.reconcile().await;
        ctx.networks.start(&running).await;
        ctx.containers
            .set_network_hooks(Arc::new(crate::network::Hooks::new(
                Arc::clone(&ctx.networks),
                Arc::clone(&ctx.images),
            )));
        // Delivery resumes for the containers that ran on while berthd was down, and is
        // finished for those that exited meanwhile.
        ctx.logs.start(tokio::runtime::Handle::current());
        let (containers, logs, ids) = (
            Arc::clone(&ctx.containers),
            Arc::clone(&ctx.logs),
            running.clone(),
        );
        let resumed = tokio::task::spawn_blocking(move || {
            let records: Vec<_> = ids
                .iter()
                .filter_map(|id| containers.resolve(id).ok())
                .collect();
            logs.resume(&records);
            // Those that exited while berthd was down get the rest of their log delivered.
            let stopped: Vec<_> = containers
                .list(true)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| !ids.contains(&c.id) && logs.interrupted(&c.id))
                .filter_map(|c| containers.resolve(&c.id).ok())
                .collect();
            logs.finish_interrupted(&stopped);
        })
        .await;
        if let Err(e) = resumed {
            warn!("resuming log delivery failed: {e}");
        }
        ctx.containers
            .set_log_hooks(Arc::clone(&ctx.logs) as Arc<dyn crate::container::LogHooks>);
        let containers = Arc::clone(&ctx.containers);
        let mut running = running;
        match tokio::task::spawn_blocking(move || containers.start_deferred()).await {
            Ok(started) => running.extend(started),
            Err(e) => warn!("restarting containers at start failed: {e}"),
        }
        let module =
            api::rpc_module(Arc::clone(&ctx), running).map_err(|e| Error::Api(e.to_string()))?;
        let settings = api::ServeSettings {
            max_request_body_size: ctx.config.max_request_body_size,
            max_batch_len: ctx.config.max_batch_len,
            shutdown_timeout: Duration::from_secs(ctx.config.shutdown_timeout),
        };
        let gate = auth.decision_log.map(|log| {
            Arc::new(api::GateState {
                gate: crate::authz::Gate::new(
                    Arc::clone(&ctx.plugins),
                    ctx.config.authz_plugins.clone(),
                    log,
                ),
                ctx: Arc::clone(&ctx),
            })
        });
        if let Some(g) = &gate {
            let _ = gate_slot.set(Arc::clone(g));
            info!(chain = ?ctx.config.authz_plugins, log = %g.gate.log().path().display(), "authorization: every call passes the policy chain");
            for name in &ctx.config.authz_plugins {
                if let Err(e) = ctx.plugins.authorizer(name).await {
                    warn!(
                        "authorization policy {name} is not running, so calls are denied (root may still call system.ping): {e}"
                    );
                }
            }
        }
        let security = api::Security {
            tls: auth.tls,
            tokens: auth.tokens,
            insecure_tcp: ctx.config.insecure_tcp,
            gate,
        };
        // Start-up is the burst of berthd's life (compiling plugins, restoring state): what it
        // freed goes back to the kernel instead of staying in the allocator while idle.
        let _ = tokio::task::spawn_blocking(crate::host::release_free_memory).await;
        info!(listeners = ?ctx.listeners, data_root = %ctx.config.data_root.display(), "berthd serving");
        api::serve(async_listeners, module, settings, security, shutdown).await;
        let logs = Arc::clone(&ctx.logs);
        let _ = tokio::task::spawn_blocking(move || logs.shutdown(Duration::from_secs(3))).await;
        let events = Arc::clone(&ctx.events);
        let flushed = tokio::task::spawn_blocking(move || events.flush(Duration::from_secs(5)))
            .await
            .unwrap_or(false);
        if !flushed {
            tracing::warn!("the last events may not be in the history: its writer did not finish");
        }
        if let Some(path) = remove_socket {
            let _ = std::fs::remove_file(path);
        }
        info!("berthd stopped");
        Ok(())
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(Error::Io {
            what: "create directory",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Mode 0660, owned by root:`group` when that group exists, like docker's socket.
fn secure_socket(socket: &Path, group: &str) -> Result<(), Error> {
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660)).map_err(|source| {
        Error::Io {
            what: "set permissions on",
            path: socket.to_owned(),
            source,
        }
    })?;
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => {
            if let Err(e) = nix::unistd::chown(socket, None, Some(g.gid)) {
                warn!(socket = %socket.display(), group, "cannot give the socket to its group: {e}");
            }
        }
        Ok(None) => {
            info!(
                group,
                "group does not exist: socket is reachable by root only"
            );
        }
        Err(e) => warn!(group, "cannot look up group: {e}"),
    }
    Ok(())
}

/// Listeners passed by systemd socket activation (`LISTEN_PID`/`LISTEN_FDS`), if any.
fn systemd_listeners() -> Result<Vec<StdListener>, Error> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !ours || count <= 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for fd in 3..3 + count {
        // SAFETY: systemd hands these descriptors to this process (LISTEN_PID matched) and
        // nothing else in berthd has taken ownership of them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        use nix::sys::socket::SockaddrLike;
        let family = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(
            std::os::fd::AsRawFd::as_raw_fd(&owned),
        )
        .map_err(|e| Error::Bind {
            addr: format!("socket-activated fd {fd}"),
            source: e.into(),
        })?
        .family();
        out.push(match family {
            Some(nix::sys::socket::AddressFamily::Unix) => StdListener::Unix(owned.into()),
            _ => StdListener::Tcp(owned.into()),
        });
    }
    // SAFETY: berthd is still single-threaded when it prepares its listeners.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    Ok(out)
}
