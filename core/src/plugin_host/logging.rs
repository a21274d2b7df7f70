//! Logging drivers (`berth:logging/logging-driver@1.0.0`): the typed handle the log delivery
//! uses. The component's `log-stream` and `log-reader` resources stay inside this module:
//! callers hold plain ids. Resources die with the instance they were made in, so every
//! open stream remembers its container and options and is opened again (`start-logging`)
//! on the fresh instance after a recycle, as the WIT asks; a reader is reopened from the
//! last timestamp it returned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny};
use wasmtime_wasi::sockets::SocketAddrUse;

use super::driver::{CallStats, Instance, call};
use super::sandbox::{self, PluginState};
use super::{Error, Limits, Result};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins-api/wit/logging",
        world: "logging-driver",
        exports: { default: async },
        with: {
            "berth:types/types@1.0.0": crate::plugin_host::volume::bindings::berth::types::types,
            "berth:types/host-log@1.0.0": crate::plugin_host::volume::bindings::berth::types::host_log,
        },
    });
}

use bindings::exports::berth::logging::driver as wit;
use bindings::{LoggingDriver as Bindings, LoggingDriverPre};

/// The configuration key naming the addresses a logging driver may connect to.
pub const ALLOW_CONNECT_KEY: &str = "berth.allow-connect";

/// The addresses a plugin may reach (`berth.allow-connect`, e.g.
/// `udp:192.0.2.10:514,tcp:192.0.2.10:601`): connecting or sending to exactly these, and
/// the wildcard bind a connect implies. Listening, other addresses and name lookups are
/// denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectGrant {
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
}

impl ConnectGrant {
    /// Parses the setting; the error names the bad entry.
    pub fn parse(text: &str) -> std::result::Result<ConnectGrant, String> {
        let mut grant = ConnectGrant::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (protocol, address) = entry.split_once(':').unwrap_or(("", entry));
            let address: SocketAddr = address.parse().map_err(|_| {
                format!("{ALLOW_CONNECT_KEY}: {entry:?} is not udp:IP:PORT or tcp:IP:PORT")
            })?;
            match protocol {
                "udp" => grant.udp.push(address),
                "tcp" => grant.tcp.push(address),
                _ => {
                    return Err(format!(
                        "{ALLOW_CONNECT_KEY}: {entry:?} is not udp:IP:PORT or tcp:IP:PORT"
                    ));
                }
            }
        }
        Ok(grant)
    }

    /// Whether anything is granted.
    pub(super) fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tcp.is_empty()
    }

    pub(super) fn grants_udp(&self) -> bool {
        !self.udp.is_empty()
    }

    pub(super) fn grants_tcp(&self) -> bool {
        !self.tcp.is_empty()
    }

    /// The check wasmtime-wasi asks for every address a socket uses.
    pub(super) fn allows(&self, address: SocketAddr, usage: SocketAddrUse) -> bool {
        let implicit_bind = address.ip().is_unspecified() && address.port() == 0;
        match usage {
            SocketAddrUse::TcpBind => implicit_bind && self.grants_tcp(),
            SocketAddrUse::UdpBind => implicit_bind && self.grants_udp(),
            SocketAddrUse::TcpConnect => self.tcp.contains(&address),
            // Sending is checked per destination, connected or not.
            SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => self.udp.contains(&address),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
        }
    }
}

/// The container a log belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogContainer {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image as the user gave it.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
}

/// One record (a line, or a fragment of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// From standard error (else standard output).
    pub stderr: bool,
    /// Nanoseconds since the Unix epoch.
    pub nanos: u64,
    /// The bytes, without the newline.
    pub line: Vec<u8>,
    /// The line continues in the next record.
    pub partial: bool,
}

/// Which stored records a reader returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadRequest {
    /// At or after this time (ns).
    pub since: Option<u64>,
    /// Before this time (ns).
    pub until: Option<u64>,
    /// The last N.
    pub tail: Option<u32>,
    /// Keep the cursor open at the end.
    pub follow: bool,
}

/// An open stream, by id.
pub type StreamId = u64;
/// An open reader, by id.
pub type ReaderId = u64;

fn to_wit(entry: &LogEntry) -> wit::LogRecord {
    wit::LogRecord {
        source: if entry.stderr {
            wit::LogSource::Stderr
        } else {
            wit::LogSource::Stdout
        },
        timestamp_nanos: entry.nanos,
        line: entry.line.clone(),
        partial: entry.partial,
    }
}

fn from_wit(record: wit::LogRecord) -> LogEntry {
    LogEntry {
        stderr: record.source == wit::LogSource::Stderr,
        nanos: record.timestamp_nanos,
        line: record.line,
        partial: record.partial,
    }
}

/// A resource, and the instance generation it lives in.
type Handle = (ResourceAny, u64);

struct OpenStream {
    container: wit::ContainerInfo,
    options: Vec<(String, String)>,
    handle: Option<Handle>,
}

struct OpenReader {
    container_id: String,
    request: ReadRequest,
    /// Timestamp of the last record returned, to reopen from after a recycle.
    last: Option<u64>,
    handle: Option<Handle>,
}

/// The open resources. Every call holds this lock, so a recycle (which bumps
/// `generation`) never races a call using a resource of the old instance.
#[derive(Default)]
struct Table {
    generation: u64,
    next_id: u64,
    streams: HashMap<StreamId, OpenStream>,
    readers: HashMap<ReaderId, OpenReader>,
}

/// What a logging driver supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggingCapabilities {
    /// `read-logs` works.
    pub can_read_back: bool,
}

/// A logging driver plugin.
pub struct LoggingDriver {
    name: Arc<str>,
    engine: Engine,
    pre: LoggingDriverPre<PluginState>,
    state_dir: std::path::PathBuf,
    config: Vec<(String, String)>,
    connect: Option<Arc<ConnectGrant>>,
    limits: Limits,
    failures: super::FailureReport,
    ticker: super::ticker::Ticker,
    instance: tokio::sync::Mutex<Option<Instance<Bindings>>>,
    table: tokio::sync::Mutex<Table>,
    stats: std::sync::Mutex<CallStats>,
    capabilities: std::sync::OnceLock<LoggingCapabilities>,
}

impl std::fmt::Debug for LoggingDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingDriver")
            .field("name", &self.name)
            .field("connect", &self.connect)
            .finish()
    }
}

impl LoggingDriver {
    /// `config` may hold [`ALLOW_CONNECT_KEY`], which the host keeps and the plugin never
    /// sees.
    pub(super) fn new(
        engine: Engine,
        name: Arc<str>,
        component: &Component,
        state_dir: std::path::PathBuf,
        config: Vec<(String, String)>,
        oversight: super::Oversight,
    ) -> Result<LoggingDriver> {
        let invalid = |message: String| Error::Plugin {
            plugin: name.to_string(),
            function: "configure",
            kind: berth_api::ErrorKind::InvalidArgument,
            message,
        };
        let mut connect = None;
        let mut plugin_config = Vec::new();
        for (key, value) in config {
            if key == ALLOW_CONNECT_KEY {
                let grant = ConnectGrant::parse(&value).map_err(invalid)?;
                connect = (!grant.is_empty()).then(|| Arc::new(grant));
            } else if key.starts_with("berth.") {
                return Err(invalid(format!(
                    "unknown host setting {key:?} (logging drivers take {ALLOW_CONNECT_KEY})"
                )));
            } else {
                plugin_config.push((key, value));
            }
        }
        let link_error = |e: wasmtime::Error| Error::Link {
            plugin: name.to_string(),
            message: format!("{e:#}"),
        };
        let mut linker = Linker::<PluginState>::new(&engine);
        sandbox::add_wasi(&mut linker).map_err(link_error)?;
        sandbox::add_sockets(&mut linker).map_err(link_error)?;
        Bindings::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(link_error)?;
        let pre = linker.instantiate_pre(component).map_err(link_error)?;
        let pre = LoggingDriverPre::new(pre).map_err(link_error)?;
        std::fs::create_dir_all(&state_dir).map_err(|source| Error::Io {
            what: format!("create {}", state_dir.display()),
            source,
        })?;
        Ok(LoggingDriver {
            name,
            engine,
            pre,
            state_dir,
            config: plugin_config,
            connect,
            limits: oversight.limits,
            failures: oversight.failures,
            ticker: oversight.ticker,
            instance: tokio::sync::Mutex::new(None),
            table: tokio::sync::Mutex::new(Table::default()),
            stats: std::sync::Mutex::new(CallStats::default()),
            capabilities: std::sync::OnceLock::new(),
        })
    }

    super::driver::driver_methods!();

    fn preopen(&self) -> Option<&std::path::Path> {
        Some(&self.state_dir)
    }

    fn net_host(&self) -> Option<Arc<dyn super::network::NetHost>> {
        None
    }

    fn connect_grant(&self) -> Option<Arc<ConnectGrant>> {
        self.connect.clone()
    }

    /// After a failure the instance is gone, and every resource with it.
    fn note<T>(table: &mut Table, result: &Result<T>) {
        if matches!(result, Err(Error::Failed { .. })) {
            table.generation += 1;
        }
    }

    /// `capabilities` (asked once: it depends on configuration only).
    pub async fn capabilities(&self) -> Result<LoggingCapabilities> {
        if let Some(c) = self.capabilities.get() {
            return Ok(*c);
        }
        let mut table = self.table.lock().await;
        self.count();
        let result = call!(self, "capabilities", |i| i
            .bindings
            .berth_logging_driver()
            .call_capabilities(&mut i.store)
            .await
            .map(Ok::<_, super::volume::bindings::berth::types::types::Error>));
        Self::note(&mut table, &result);
        let capabilities = LoggingCapabilities {
            can_read_back: result?.can_read_back,
        };
        let _ = self.capabilities.set(capabilities);
        Ok(capabilities)
    }

    async fn start_logging(&self, table: &mut Table, id: StreamId) -> Result<ResourceAny> {
        let Some(open) = table.streams.get(&id) else {
            return Err(closed(&self.name, "start-logging"));
        };
        let (container, options) = (open.container.clone(), open.options.clone());
        self.count();
        let result = call!(self, "start-logging", |i| i
            .bindings
            .berth_logging_driver()
            .call_start_logging(&mut i.store, &container, &options)
            .await);
        Self::note(table, &result);
        let resource = result?;
        if let Some(open) = table.streams.get_mut(&id) {
            open.handle = Some((resource, table.generation));
        }
        Ok(resource)
    }

    /// Opens the log of `container` with its `--log-opt`s (`start-logging`); bad options
    /// fail here.
    pub async fn open(
        &self,
        container: &LogContainer,
        options: Vec<(String, String)>,
    ) -> Result<StreamId> {
        let mut table = self.table.lock().await;
        table.next_id += 1;
        let id = table.next_id;
        table.streams.insert(
            id,
            OpenStream {
                container: wit::ContainerInfo {
                    id: container.id.clone(),
                    name: container.name.clone(),
                    image: container.image.clone(),
                    image_id: container.image_id.clone(),
                    labels: container.labels.clone(),
                },
                options,
                handle: None,
            },
        );
        match self.start_logging(&mut table, id).await {
            Ok(_) => Ok(id),
            Err(e) => {
                table.streams.remove(&id);
                Err(e)
            }
        }
    }

    /// The live resource of stream `id`, opened again if the instance was recycled.
    async fn live_stream(&self, table: &mut Table, id: StreamId) -> Result<ResourceAny> {
        let current = table.generation;
        match table.streams.get(&id).map(|s| s.handle) {
            None => Err(closed(&self.name, "write")),
            Some(Some((resource, generation))) if generation == current => Ok(resource),
            Some(_) => self.start_logging(table, id).await,
        }
    }

    /// Delivers a batch (`log-stream.write`).
    pub async fn write(&self, id: StreamId, batch: &[LogEntry]) -> Result<()> {
        let mut table = self.table.lock().await;
        let resource = self.live_stream(&mut table, id).await?;
        let records: Vec<wit::LogRecord> = batch.iter().map(to_wit).collect();
        self.count();
        let result = call!(self, "write", |i| i
            .bindings
            .berth_logging_driver()
            .log_stream()
            .call_write(&mut i.store, resource, &records)
            .await);
        Self::note(&mut table, &result);
        result
    }

    /// Finishes stream `id` (`close`, then drop) and forgets it.
    pub async fn close(&self, id: StreamId) -> Result<()> {
        let mut table = self.table.lock().await;
        let current = table.generation;
        let Some(open) = table.streams.remove(&id) else {
            return Ok(());
        };
        let Some((resource, generation)) = open.handle else {
            return Ok(());
        };
        if generation != current {
            return Ok(());
        }
        self.count();
        let result = call!(self, "close", |i| {
            let closed = i
                .bindings
                .berth_logging_driver()
                .log_stream()
                .call_close(&mut i.store, resource)
                .await;
            let dropped = resource.resource_drop_async(&mut i.store).await;
            match (closed, dropped) {
                (Ok(r), Ok(())) => Ok(r),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        });
        Self::note(&mut table, &result);
        result
    }

    async fn read_logs(&self, table: &mut Table, id: ReaderId) -> Result<ResourceAny> {
        let Some(open) = table.readers.get(&id) else {
            return Err(closed(&self.name, "read-logs"));
        };
        let container_id = open.container_id.clone();
        let mut request = open.request;
        if let Some(last) = open.last {
            // Reopened after a recycle: from where it stopped.
            request.since = Some(last.max(request.since.unwrap_or(0)));
            request.tail = None;
        }
        let options = wit::ReadOptions {
            since: request.since,
            until: request.until,
            tail: request.tail,
            follow: request.follow,
        };
        self.count();
        let result = call!(self, "read-logs", |i| i
            .bindings
            .berth_logging_driver()
            .call_read_logs(&mut i.store, &container_id, options)
            .await);
        Self::note(table, &result);
        let resource = result?;
        if let Some(open) = table.readers.get_mut(&id) {
            open.handle = Some((resource, table.generation));
        }
        Ok(resource)
    }

    /// Opens a cursor over the stored log of `container_id` (`read-logs`).
    pub async fn read(&self, container_id: &str, request: ReadRequest) -> Result<ReaderId> {
        let mut table = self.table.lock().await;
        table.next_id += 1;
        let id = table.next_id;
        table.readers.insert(
            id,
            OpenReader {
                container_id: container_id.to_owned(),
                request,
                last: None,
                handle: None,
            },
        );
        match self.read_logs(&mut table, id).await {
            Ok(_) => Ok(id),
            Err(e) => {
                table.readers.remove(&id);
                Err(e)
            }
        }
    }

    /// Up to `max` (at most 1024) further records of reader `id`.
    pub async fn next(&self, id: ReaderId, max: u32) -> Result<Vec<LogEntry>> {
        let mut table = self.table.lock().await;
        let current = table.generation;
        let resource = match table.readers.get(&id).map(|r| r.handle) {
            None => return Err(closed(&self.name, "next")),
            Some(Some((resource, generation))) if generation == current => resource,
            Some(_) => self.read_logs(&mut table, id).await?,
        };
        let max = max.clamp(1, 1024);
        self.count();
        let result = call!(self, "next", |i| i
            .bindings
            .berth_logging_driver()
            .log_reader()
            .call_next(&mut i.store, resource, max)
            .await);
        Self::note(&mut table, &result);
        let records: Vec<LogEntry> = result?.into_iter().map(from_wit).collect();
        if let (Some(last), Some(open)) = (records.last(), table.readers.get_mut(&id)) {
            open.last = Some(last.nanos);
        }
        Ok(records)
    }

    /// Ends reader `id`.
    pub async fn close_reader(&self, id: ReaderId) {
        let _ = self.drop_reader(id).await;
    }

    async fn drop_reader(&self, id: ReaderId) -> Result<()> {
        let mut table = self.table.lock().await;
        let current = table.generation;
        let Some(Some((resource, generation))) = table.readers.remove(&id).map(|r| r.handle) else {
            return Ok(());
        };
        if generation != current {
            return Ok(());
        }
        let result = call!(self, "drop reader", |i| resource
            .resource_drop_async(&mut i.store)
            .await
            .map(Ok::<_, super::volume::bindings::berth::types::types::Error>));
        Self::note(&mut table, &result);
        result
    }

    /// Deletes what the driver stored for `container_id` (`remove-logs`); nothing stored
    /// is success.
    pub async fn remove_logs(&self, container_id: &str) -> Result<()> {
        let mut table = self.table.lock().await;
        self.count();
        let result = call!(self, "remove-logs", |i| i
            .bindings
            .berth_logging_driver()
            .call_remove_logs(&mut i.store, container_id)
            .await);
        Self::note(&mut table, &result);
        match result {
            Err(Error::Plugin {
                kind: berth_api::ErrorKind::NotFound,
                ..
            }) => Ok(()),
            other => other,
        }
    }
}

fn closed(plugin: &str, function: &'static str) -> Error {
    Error::Plugin {
        plugin: plugin.to_owned(),
        function,
        kind: berth_api::ErrorKind::FailedPrecondition,
        message: "the log stream or reader is closed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_grants_only_the_listed_addresses() {
        let grant = ConnectGrant::parse("udp:127.0.0.1:5514, tcp:[::1]:601").unwrap();
        let udp: SocketAddr = "127.0.0.1:5514".parse().unwrap();
        let tcp: SocketAddr = "[::1]:601".parse().unwrap();
        assert!(grant.allows(udp, SocketAddrUse::UdpSend));
        assert!(!grant.allows(udp, SocketAddrUse::TcpConnect));
        assert!(grant.allows(tcp, SocketAddrUse::TcpConnect));
        assert!(!grant.allows("127.0.0.1:5515".parse().unwrap(), SocketAddrUse::UdpSend));
        assert!(grant.allows("0.0.0.0:0".parse().unwrap(), SocketAddrUse::UdpBind));
        assert!(!grant.allows("0.0.0.0:514".parse().unwrap(), SocketAddrUse::UdpBind));
        assert!(!grant.allows(tcp, SocketAddrUse::TcpListen));
        assert!(ConnectGrant::parse("icmp:1.2.3.4:1").is_err());
        assert!(ConnectGrant::parse("udp:logs.example:514").is_err());
        assert!(ConnectGrant::parse("").unwrap().is_empty());
    }
}
