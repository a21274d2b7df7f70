//! Networks: their records (`networks`), which container is on which (`network_members`,
//! with the endpoint while the container runs), the sandboxes (one bound network
//! namespace per running container), published ports, and every call to network driver
//! plugins. A container's namespace is made and plumbed before its shim starts and torn
//! down when it exits, so a container never runs without the network it asked for.

mod dns;
pub mod hostnet;
mod netlink;
mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use berth_api::ErrorKind;
use berth_api::container::{EndpointSettings, NetworkSettings, PortBinding};
use berth_api::network::{
    DEFAULT_DRIVER, DEFAULT_NETWORK, NetworkCreateRequest, NetworkInfo, NetworkListRequest,
    NetworkMember, NetworkPruneReport,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::plugin::{self, Plugins};
use crate::plugin_host::{self, Cidr, NetworkDriver, NetworkRequest, PortMap, RestoreEndpoint};
use crate::store::{self, Store, q};

pub use hostnet::HostNet;

/// Network failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No network of that name.
    #[error("no such network: {0}")]
    NotFound(String),
    /// A network of that name exists.
    #[error("network {0} already exists")]
    Exists(String),
    /// A bad name, address or option.
    #[error("{0}")]
    Invalid(String),
    /// The network or container is not in a state that allows it.
    #[error("{0}")]
    State(String),
    /// The driver plugin is missing, disabled or failed to start.
    #[error(transparent)]
    Plugin(#[from] plugin::Error),
    /// The driver call failed.
    #[error("network {network}: {source}")]
    Driver {
        /// The network.
        network: String,
        /// The plugin host's error.
        source: plugin_host::Error,
    },
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The address pool has no subnet left for a new network.
    #[error("{0}")]
    PoolExhausted(String),
    /// A host operation failed.
    #[error("{what}: {message}")]
    Host {
        /// What was being done.
        what: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Exists(_) => ErrorKind::AlreadyExists,
            Error::Invalid(_) => ErrorKind::InvalidArgument,
            Error::State(_) => ErrorKind::FailedPrecondition,
            Error::Plugin(e) => e.kind(),
            Error::Driver { source, .. } => source.kind(),
            Error::Store(e) => e.kind(),
            Error::PoolExhausted(_) => ErrorKind::ResourceExhausted,
            Error::Host { .. } => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn host_err(what: impl Into<String>) -> impl FnOnce(String) -> Error {
    let what = what.into();
    move |message| Error::Host { what, message }
}

/// Whether `ip` lies in `cidr`.
pub(crate) fn cidr_contains(cidr: &Cidr, ip: IpAddr) -> bool {
    match (cidr.address, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = if cidr.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(cidr.prefix.min(32)))
            };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = if cidr.prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(cidr.prefix.min(128)))
            };
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Whether two subnets share an address.
fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    cidr_contains(a, b.address) || cidr_contains(b, a.address)
}

/// The first `size`-long subnet of `pool` that no berth network overlaps and that no host
/// route narrower than the pool reaches into: a bridge left behind by another program, a
/// VPN's route, another engine's network. The kernel would send part of the new network's
/// traffic there. A route as broad as the pool or broader (a VPN's 10.0.0.0/8, the default
/// route) loses to the new network's own, longer route, so it does not count. `None` when
/// every subnet is taken.
fn free_pool_subnet(pool: &Cidr, size: u8, networks: &[Cidr], routes: &[Cidr]) -> Option<Cidr> {
    let IpAddr::V4(base) = pool.address else {
        return None;
    };
    if size < pool.prefix || size > 30 {
        return None;
    }
    let pool_mask = u32::MAX
        .checked_shl(32 - u32::from(pool.prefix))
        .unwrap_or(0);
    let first = u64::from(u32::from(base) & pool_mask);
    let last = first + (u64::from(!pool_mask));
    let step = 1u64 << (32 - u32::from(size));
    let mut start = first;
    while start + step - 1 <= last {
        let candidate = Cidr {
            address: IpAddr::V4(Ipv4Addr::from(start as u32)),
            prefix: size,
        };
        let used = networks.iter().any(|n| overlaps(n, &candidate))
            || routes
                .iter()
                .any(|r| r.prefix > pool.prefix && overlaps(r, &candidate));
        if !used {
            return Some(candidate);
        }
        start += step;
    }
    None
}

/// The IPv4 destinations of `/proc/net/route` (the main table), from its text.
fn parse_routes(text: &str) -> Vec<Cidr> {
    let hex = |field: &str| u32::from_str_radix(field, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...: the addresses are
            // the kernel's network-order words printed as native integers.
            let destination = hex(fields.get(1)?)?;
            let mask = hex(fields.get(7)?)?;
            Some(Cidr {
                address: IpAddr::V4(Ipv4Addr::from(destination.to_ne_bytes())),
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// The host's IPv4 routes. Blocking; none if they cannot be read.
fn host_routes() -> Vec<Cidr> {
    std::fs::read_to_string("/proc/net/route")
        .map(|text| parse_routes(&text))
        .unwrap_or_default()
}

fn parse_cidr(s: &str, what: &str) -> Result<Cidr> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| Error::Invalid(format!("{what} {s:?}: use a.b.c.d/n")))?;
    let address: IpAddr = ip
        .parse()
        .map_err(|_| Error::Invalid(format!("{what} {s:?}: {ip:?} is not an IP address")))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| Error::Invalid(format!("{what} {s:?}: bad prefix length")))?;
    if address.is_ipv6() {
        return Err(Error::Invalid(format!(
            "{what} {s:?}: IPv6 networks are not supported yet"
        )));
    }
    Ok(Cidr { address, prefix })
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| Error::Invalid(format!("{what} {s:?} is not an IP address")))
}

/// docker's network name rule.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// The default `bridge` network and the `bridge` driver's pool, from berthd's config
/// (defaults 10.200.0.0/16 on `berth0`, and /24s of 10.201.0.0/16: docker's 172.17.0.0/16
/// is left alone, so berth and docker run side by side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    /// Bridge of the default network.
    pub bridge_name: String,
    /// Its subnet.
    pub bridge_subnet: String,
    /// The pool of user networks.
    pub pool: String,
    /// Their prefix length.
    pub pool_size: u8,
}

/// Where the namespace of a container's sandbox is bound (its sandbox id is its id).
pub fn netns_path(data_root: &Path, container_id: &str) -> PathBuf {
    data_root.join("netns").join(container_id)
}

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Its own namespace with only `lo`.
    None,
    /// The host's namespace.
    Host,
    /// Its own namespace, on the network with this name or id.
    Network(String),
}

/// `--network` as given (default `bridge`).
pub fn mode_of(network: Option<&str>) -> Mode {
    match network.unwrap_or(DEFAULT_NETWORK) {
        "none" => Mode::None,
        "host" => Mode::Host,
        "" | "default" => Mode::Network(DEFAULT_NETWORK.into()),
        other => Mode::Network(other.into()),
    }
}

/// The `/etc/hosts` of a container.
pub fn render_hosts(
    hostname: &str,
    own: &[(IpAddr, Vec<String>)],
    add_hosts: &[(String, String)],
) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (name, ip) in add_hosts {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    if own.is_empty() {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for (ip, names) in own {
        let mut line = format!("{ip}\t{hostname}");
        for n in names {
            if n != hostname {
                line.push('\t');
                line.push_str(n);
            }
        }
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// The `/etc/resolv.conf` of a container: `servers` if any were chosen, else the host's
/// name servers without the loopback ones (unreachable from a container's namespace).
pub fn render_resolv(
    host_resolv: &str,
    servers: &[String],
    search: &[String],
    keep_loopback: bool,
) -> String {
    let mut out = String::new();
    let mut host_servers = Vec::new();
    let mut host_rest = Vec::new();
    for line in host_resolv.lines() {
        let t = line.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            let loopback = ns.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if keep_loopback || !loopback {
                host_servers.push(ns.to_owned());
            }
        } else if (t.starts_with("search") || t.starts_with("domain")) && !search.is_empty() {
        } else if !t.is_empty() && !t.starts_with('#') {
            host_rest.push(t.to_owned());
        }
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let chosen = if servers.is_empty() {
        &host_servers
    } else {
        servers
    };
    for ns in chosen {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    for line in host_rest {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `--add-host NAME:IP` (docker also accepts `NAME=IP`).
pub fn parse_add_host(s: &str) -> Result<(String, String)> {
    let (name, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| Error::Invalid(format!("bad --add-host {s:?}: use NAME:IP")))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || name.contains(char::is_whitespace) || ip.parse::<IpAddr>().is_err() {
        return Err(Error::Invalid(format!("bad --add-host {s:?}: use NAME:IP")));
    }
    Ok((name.to_owned(), ip.to_owned()))
}

/// What berth keeps about a network (the `doc` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    driver: String,
    created_at: String,
    subnet: Cidr,
    gateway: Option<IpAddr>,
    internal: bool,
    bridge: Option<String>,
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    dns: bool,
}

/// A container's endpoint on a network while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Endpoint {
    id: String,
    interface: String,
    address: Cidr,
    gateway: Option<IpAddr>,
    mac: Option<[u8; 6]>,
    default_gateway: bool,
    ports: Vec<PortMap>,
}

/// A container's membership of a network (the `doc` column of `network_members`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    ip: Option<IpAddr>,
    aliases: Vec<String>,
    /// Its name, for DNS and inspect.
    container_name: String,
    endpoint: Option<Endpoint>,
}

fn mac_text(mac: Option<[u8; 6]>) -> String {
    mac.map(|m| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
    .unwrap_or_default()
}

/// The networks and their drivers.
#[derive(Debug)]
pub struct Networks {
    store: Arc<Store>,
    plugins: Arc<Plugins>,
    data_root: PathBuf,
    defaults: DefaultNetwork,
    host: OnceLock<Arc<HostNet>>,
    published: Mutex<HashMap<String, Vec<proxy::Published>>>,
    dns: dns::Resolvers,
    /// Why the default network could not be made at start, for the containers that ask.
    default_error: Mutex<Option<String>>,
    /// Attach, detach, create and remove run one at a time.
    ops: tokio::sync::Mutex<()>,
}

impl Networks {
    /// The manager over `data_root` (the host side starts with [`Self::start_host`]).
    pub fn new(
        store: Arc<Store>,
        plugins: Arc<Plugins>,
        data_root: &Path,
        defaults: DefaultNetwork,
    ) -> Networks {
        Networks {
            store,
            plugins,
            data_root: data_root.to_owned(),
            defaults,
            host: OnceLock::new(),
            published: Mutex::default(),
            dns: dns::Resolvers::default(),
            default_error: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens netlink and applies berth's firewall table; then hands the host side to the
    /// plugin manager so that network drivers can start. Call inside the runtime, before
    /// the plugins start.
    pub async fn start_host(&self) -> Result<()> {
        let dir = self.data_root.join("netns");
        let made = dir.clone();
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(&made))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| Error::Host {
                what: format!("create {}", dir.display()),
                message: e.to_string(),
            })?;
        let host = Arc::new(
            HostNet::new(Arc::clone(&self.store), dir, &self.data_root).map_err(|e| {
                Error::Host {
                    what: "open netlink".into(),
                    message: e.to_string(),
                }
            })?,
        );
        if let Err(e) = host.apply_firewall().await {
            warn!("cannot apply berth's firewall rules: {}", e.message);
        }
        self.plugins.set_network_host(
            Arc::clone(&host),
            vec![
                ("pool".to_owned(), self.defaults.pool.clone()),
                (
                    "pool-prefix".to_owned(),
                    self.defaults.pool_size.to_string(),
                ),
            ],
        );
        let _ = self.host.set(host);
        Ok(())
    }

    fn host(&self) -> Result<&Arc<HostNet>> {
        self.host
            .get()
            .ok_or_else(|| Error::State("networking is not started yet".into()))
    }

    async fn driver(&self, name: &str) -> Result<Arc<NetworkDriver>> {
        Ok(self.plugins.network_driver(name).await?)
    }

    /// Brings networks up after a daemon start: makes the default `bridge` network on
    /// first start, has every driver restore its networks and the endpoints of the
    /// containers still running, tears down what containers that ended left, and binds
    /// their published ports and name servers again.
    pub async fn start(&self, running: &[String]) {
        if let Err(e) = self.ensure_default().await {
            warn!("cannot create the default `bridge` network: {e}");
            *self.default_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        let _ops = self.ops.lock().await;
        let Ok(host) = self.host().cloned() else {
            return;
        };
        let records = match self.records().await {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot read networks: {e}");
                return;
            }
        };
        let members = self.all_members().await.unwrap_or_default();
        // Containers that ended while berthd was down lose their endpoints.
        for (network_id, container_id, mut member) in members.clone() {
            if member.endpoint.is_some() && !running.contains(&container_id) {
                member.endpoint = None;
                let _ = self
                    .save_member(&network_id, &container_id, &member, None)
                    .await;
            }
        }
        if let Ok(entries) = std::fs::read_dir(host.netns_dir()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !running.contains(&id) {
                    destroy_netns(&entry.path()).await;
                    host.forget_sandbox(&id).await;
                }
            }
        }
        let mut by_driver: BTreeMap<String, Vec<(String, Vec<RestoreEndpoint>)>> = BTreeMap::new();
        for r in &records {
            let endpoints = members
                .iter()
                .filter(|(n, c, m)| n == &r.id && running.contains(c) && m.endpoint.is_some())
                .filter_map(|(_, c, m)| {
                    let e = m.endpoint.as_ref()?;
                    host.grant(&r.driver, c);
                    Some(RestoreEndpoint {
                        endpoint_id: e.id.clone(),
                        joined: Some((c.clone(), e.interface.clone())),
                        default_gateway: e.default_gateway,
                        ports: e.ports.clone(),
                    })
                })
                .collect();
            by_driver
                .entry(r.driver.clone())
                .or_default()
                .push((r.id.clone(), endpoints));
        }
        // Ports are reserved and bound before drivers re-add their forwards.
        for (network_id, container_id, member) in &members {
            if let Some(e) = &member.endpoint
                && running.contains(container_id)
            {
                let driver = records
                    .iter()
                    .find(|r| &r.id == network_id)
                    .map(|r| r.driver.clone())
                    .unwrap_or_default();
                let mut bound = Vec::new();
                for p in &e.ports {
                    match proxy::publish(
                        p.tcp,
                        p.host_ip,
                        p.host_port,
                        SocketAddr::new(e.address.address, p.container_port),
                    )
                    .await
                    {
                        Ok(b) => {
                            host.reserve(&driver, p.tcp, p.host_port);
                            bound.push(b);
                        }
                        Err(err) => {
                            warn!(container = %container_id, port = p.host_port, "cannot bind a published port again: {err}")
                        }
                    }
                }
                self.published
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(container_id.clone())
                    .or_default()
                    .extend(bound);
            }
        }
        for (driver, networks) in by_driver {
            match self.driver(&driver).await {
                Ok(d) => {
                    if let Err(e) = d.restore(&networks).await {
                        warn!(driver = %driver, "network driver restore failed: {e}");
                    }
                }
                Err(e) => warn!(driver = %driver, "networks of this driver are down: {e}"),
            }
        }
        for r in &records {
            if r.dns {
                self.serve_dns(r).await;
            }
        }
    }

    async fn serve_dns(&self, r: &Record) {
        if let Some(IpAddr::V4(gw)) = r.gateway {
            let members = self.member_names(&r.id).await.unwrap_or_default();
            self.dns.serve(&r.id, gw, members).await;
        }
    }

    async fn member_names(&self, network_id: &str) -> Result<Vec<(String, IpAddr)>> {
        let mut out = Vec::new();
        for (n, _c, m) in self.all_members().await? {
            if n != network_id {
                continue;
            }
            if let Some(e) = &m.endpoint {
                out.push((m.container_name.clone(), e.address.address));
                for a in &m.aliases {
                    out.push((a.clone(), e.address.address));
                }
            }
        }
        Ok(out)
    }

    async fn refresh_dns(&self, network_id: &str) {
        if let Ok(names) = self.member_names(network_id).await {
            self.dns.update(network_id, names);
        }
    }

    async fn ensure_default(&self) -> Result<()> {
        if self.find(DEFAULT_NETWORK).await?.is_some() {
            return Ok(());
        }
        let mut options = BTreeMap::new();
        options.insert("bridge-name".to_owned(), self.defaults.bridge_name.clone());
        self.create_inner(
            NetworkCreateRequest {
                name: DEFAULT_NETWORK.into(),
                driver: Some(DEFAULT_DRIVER.into()),
                subnet: Some(self.defaults.bridge_subnet.clone()),
                options,
                ..Default::default()
            },
            true,
        )
        .await?;
        info!("created the default `bridge` network");
        Ok(())
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let docs: Vec<String> = self
            .store
            .run(|conn| {
                let mut stmt = conn
                    .prepare("SELECT doc FROM networks ORDER BY created_at, name")
                    .map_err(q("list networks"))?;
                stmt.query_map([], |r| r.get(0))
                    .map_err(q("list networks"))?
                    .collect::<std::result::Result<_, _>>()
                    .map_err(q("list networks"))
            })
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect())
    }

    async fn find(&self, key: &str) -> Result<Option<Record>> {
        let records = self.records().await?;
        // A full id wins over a name spelled like it: the gate pins the network a call was
        // authorized for by its id, and no name may take that over.
        if let Some(r) = records
            .iter()
            .find(|r| r.id == key)
            .or_else(|| records.iter().find(|r| r.name == key))
        {
            return Ok(Some(r.clone()));
        }
        let by_prefix: Vec<&Record> = records
            .iter()
            .filter(|r| key.len() >= 3 && r.id.starts_with(key))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok(Some((*one).clone())),
            [] => Ok(None),
            _ => Err(Error::Invalid(format!(
                "network id prefix {key:?} is ambiguous"
            ))),
        }
    }

    /// A network's id, name and labels (by id, id prefix or name), from berth's records
    /// only, for authorization.
    pub async fn identify(&self, key: &str) -> Result<(String, String, BTreeMap<String, String>)> {
        let r = self.resolve(key).await?;
        Ok((r.id, r.name, r.labels))
    }

    async fn resolve(&self, key: &str) -> Result<Record> {
        match self.find(key).await? {
            Some(r) => Ok(r),
            None if key == DEFAULT_NETWORK => {
                let why = self
                    .default_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                Err(match why {
                    Some(why) => Error::State(format!(
                        "the default `bridge` network could not be created when berthd started: {why}"
                    )),
                    None => Error::NotFound(key.to_owned()),
                })
            }
            None => Err(Error::NotFound(key.to_owned())),
        }
    }

    async fn all_members(&self) -> Result<Vec<(String, String, Member)>> {
        let rows: Vec<(String, String, String)> = self
            .store
            .run(|conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT network_id, container_id, doc FROM network_members ORDER BY container_id, position",
                    )
                    .map_err(q("list network members"))?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(q("list network members"))?
                    .collect::<std::result::Result<_, _>>()
                    .map_err(q("list network members"))
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(n, c, d)| Some((n, c, serde_json::from_str(&d).ok()?)))
            .collect())
    }

    async fn members_of(&self, container_id: &str) -> Result<Vec<(String, Member)>> {
        Ok(self
            .all_members()
            .await?
            .into_iter()
            .filter(|(_, c, _)| c == container_id)
            .map(|(n, _, m)| (n, m))
            .collect())
    }

    async fn save_member(
        &self,
        network_id: &str,
        container_id: &str,
        member: &Member,
        position: Option<i64>,
    ) -> Result<()> {
        let doc = serde_json::to_string(member).map_err(|e| Error::Invalid(e.to_string()))?;
        let (n, c) = (network_id.to_owned(), container_id.to_owned());
        self.store
            .run(move |conn| {
                match position {
                    Some(p) => conn.execute(
                        "INSERT INTO network_members (network_id, container_id, position, doc)
                         VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![n, c, p, doc],
                    ),
                    None => conn.execute(
                        "UPDATE network_members SET doc = ?3 WHERE network_id = ?1 AND container_id = ?2",
                        rusqlite::params![n, c, doc],
                    ),
                }
                .map_err(q("save a network member"))?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    fn info(&self, r: &Record, members: &[(String, String, Member)]) -> NetworkInfo {
        NetworkInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            driver: r.driver.clone(),
            created_at: r.created_at.clone(),
            subnet: r.subnet.to_string(),
            gateway: r.gateway.map(|g| g.to_string()),
            internal: r.internal,
            bridge: r.bridge.clone(),
            options: r.options.clone(),
            labels: r.labels.clone(),
            status: BTreeMap::new(),
            dns: r.dns,
            containers: members
                .iter()
                .filter(|(n, _, _)| n == &r.id)
                .map(|(_, c, m)| {
                    (
                        c.clone(),
                        NetworkMember {
                            name: m.container_name.clone(),
                            ipv4_address: m
                                .endpoint
                                .as_ref()
                                .map(|e| e.address.to_string())
                                .unwrap_or_default(),
                            mac_address: mac_text(m.endpoint.as_ref().and_then(|e| e.mac)),
                            aliases: m.aliases.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// `network.create`.
    pub async fn create(&self, request: NetworkCreateRequest) -> Result<NetworkInfo> {
        if matches!(
            request.name.as_str(),
            "bridge" | "host" | "none" | "default"
        ) {
            return Err(Error::Invalid(format!(
                "network name {:?} is reserved",
                request.name
            )));
        }
        self.create_inner(request, false).await
    }

    async fn create_inner(
        &self,
        request: NetworkCreateRequest,
        builtin: bool,
    ) -> Result<NetworkInfo> {
        if !valid_name(&request.name) {
            return Err(Error::Invalid(format!(
                "invalid network name {:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                request.name
            )));
        }
        let subnet = request
            .subnet
            .as_deref()
            .map(|s| parse_cidr(s, "subnet"))
            .transpose()?;
        let gateway = request
            .gateway
            .as_deref()
            .map(|s| parse_ip(s, "gateway"))
            .transpose()?;
        let ip_range = request
            .ip_range
            .as_deref()
            .map(|s| parse_cidr(s, "ip range"))
            .transpose()?;
        if gateway.is_some() && subnet.is_none() || ip_range.is_some() && subnet.is_none() {
            return Err(Error::Invalid(
                "--gateway and --ip-range need --subnet".into(),
            ));
        }
        let _ops = self.ops.lock().await;
        let existing = self.records().await?;
        // By name only: a name such as `cafe` is also an id prefix, and another network's id
        // starting with it does not make the name taken.
        if existing.iter().any(|r| r.name == request.name) {
            return Err(Error::Exists(request.name));
        }
        let driver_name = request
            .driver
            .clone()
            .unwrap_or_else(|| DEFAULT_DRIVER.into());
        // berthd picks the built-in driver's subnets itself: it also sees the host's routes,
        // which the sandboxed driver cannot.
        let subnet = match subnet {
            None if driver_name == DEFAULT_DRIVER && !builtin => {
                Some(self.pool_subnet(&existing).await?)
            }
            given => given,
        };
        let driver = self.driver(&driver_name).await?;
        let id = crate::store::random_hex(32).map_err(|e| Error::Host {
            what: "generate an id".into(),
            message: e.to_string(),
        })?;
        let facts = driver
            .create_network(&NetworkRequest {
                network_id: id.clone(),
                name: request.name.clone(),
                subnet,
                gateway,
                ip_range,
                internal: request.internal,
                options: request.options.clone().into_iter().collect(),
                labels: request.labels.clone().into_iter().collect(),
            })
            .await
            .map_err(|source| Error::Driver {
                network: request.name.clone(),
                source,
            })?;
        // Subnets are unique across every driver's networks.
        let others = self.records().await?;
        if let Some(other) = others.iter().find(|o| overlaps(&o.subnet, &facts.subnet)) {
            let _ = driver.delete_network(&id).await;
            return Err(Error::Exists(format!(
                "{} (its subnet {} overlaps network {}'s {})",
                request.name, facts.subnet, other.name, other.subnet
            )));
        }
        let record = Record {
            id: id.clone(),
            name: request.name.clone(),
            driver: driver_name,
            created_at: now(),
            subnet: facts.subnet,
            gateway: facts.gateway,
            internal: facts.internal,
            bridge: facts.bridge,
            options: request.options,
            labels: request.labels,
            dns: !builtin,
        };
        let doc = serde_json::to_string(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        let row = (
            record.id.clone(),
            record.name.clone(),
            record.driver.clone(),
            doc,
        );
        let saved = self
            .store
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO networks (id, name, driver, created_at, doc)
                     VALUES (?1, ?2, ?3, strftime('%s','now'), ?4)",
                    rusqlite::params![row.0, row.1, row.2, row.3],
                )
                .map_err(q("save a network"))?;
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            let _ = driver.delete_network(&id).await;
            return Err(e.into());
        }
        if record.dns {
            self.serve_dns(&record).await;
        }
        Ok(self.info(&record, &[]))
    }

    /// A free subnet of the built-in driver's address pool (its `pool` and `pool-prefix`
    /// settings, else berthd's): see [`free_pool_subnet`].
    async fn pool_subnet(&self, networks: &[Record]) -> Result<Cidr> {
        let config = self
            .plugins
            .inspect(DEFAULT_DRIVER)
            .await
            .map(|p| p.config)
            .unwrap_or_default();
        let pool_text = config
            .get("pool")
            .cloned()
            .unwrap_or_else(|| self.defaults.pool.clone());
        let pool = parse_cidr(&pool_text, "the address pool")?;
        let size = match config.get("pool-prefix") {
            Some(p) => p.parse::<u8>().map_err(|_| {
                Error::Invalid(format!(
                    "the bridge driver's pool-prefix {p:?} is not a number"
                ))
            })?,
            None => self.defaults.pool_size,
        };
        let routes = tokio::task::spawn_blocking(host_routes)
            .await
            .unwrap_or_default();
        let taken: Vec<Cidr> = networks.iter().map(|r| r.subnet).collect();
        free_pool_subnet(&pool, size, &taken, &routes).ok_or_else(|| {
            Error::PoolExhausted(format!(
                "the address pool {pool} has no free /{size} subnet that no network or host \
                 route uses: remove unused networks or give --subnet"
            ))
        })
    }

    /// `network.list`.
    pub async fn list(&self, request: &NetworkListRequest) -> Result<Vec<NetworkInfo>> {
        request.validate().map_err(Error::Invalid)?;
        let members = self.all_members().await?;
        Ok(self
            .records()
            .await?
            .iter()
            .map(|r| self.info(r, &members))
            .filter(|i| request.matches(i))
            .collect())
    }

    /// `network.inspect`.
    pub async fn inspect(&self, key: &str) -> Result<NetworkInfo> {
        let r = self.resolve(key).await?;
        let members = self.all_members().await?;
        let mut info = self.info(&r, &members);
        if let Ok(d) = self.driver(&r.driver).await
            && let Ok(all) = d.list_networks().await
            && let Some(f) = all.into_iter().find(|f| f.network_id == r.id)
        {
            info.status = f.status.into_iter().collect();
        }
        Ok(info)
    }

    /// `network.remove`.
    pub async fn remove(&self, key: &str) -> Result<()> {
        let _ops = self.ops.lock().await;
        let r = self.resolve(key).await?;
        self.remove_locked(&r).await
    }

    async fn remove_locked(&self, r: &Record) -> Result<()> {
        if r.name == DEFAULT_NETWORK {
            return Err(Error::State(
                "the default `bridge` network cannot be removed".into(),
            ));
        }
        let users: Vec<String> = self
            .all_members()
            .await?
            .into_iter()
            .filter(|(n, _, _)| n == &r.id)
            .map(|(_, _, m)| m.container_name)
            .collect();
        if !users.is_empty() {
            return Err(Error::State(format!(
                "network {} has containers attached: {}",
                r.name,
                users.join(", ")
            )));
        }
        let driver = self.driver(&r.driver).await?;
        match driver.delete_network(&r.id).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Driver {
                    network: r.name.clone(),
                    source,
                });
            }
        }
        self.dns.stop(&r.id);
        let id = r.id.clone();
        self.store
            .run(move |conn| {
                conn.execute("DELETE FROM networks WHERE id = ?1", [&id])
                    .map_err(q("remove a network"))?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// `network.prune`.
    pub async fn prune(&self) -> Result<NetworkPruneReport> {
        let _ops = self.ops.lock().await;
        let members = self.all_members().await?;
        let mut report = NetworkPruneReport::default();
        for r in self.records().await? {
            if r.name == DEFAULT_NETWORK || members.iter().any(|(n, _, _)| n == &r.id) {
                continue;
            }
            match self.remove_locked(&r).await {
                Ok(()) => report.networks_deleted.push(r.name),
                Err(e) => warn!(network = %r.name, "prune: {e}"),
            }
        }
        Ok(report)
    }

    /// Checks a container's network options before it is created.
    pub async fn check_create(&self, request: &berth_api::container::CreateRequest) -> Result<()> {
        for h in &request.add_hosts {
            parse_add_host(h)?;
        }
        for d in &request.dns {
            parse_ip(d, "--dns")?;
        }
        match mode_of(request.network.as_deref()) {
            Mode::None | Mode::Host => {
                if !request.publish.is_empty() || request.publish_all {
                    // docker ignores them with a warning; refusing says it louder.
                    return Err(Error::Invalid(format!(
                        "published ports need a network: --network {} publishes nothing",
                        request.network.as_deref().unwrap_or_default()
                    )));
                }
                if request.ip.is_some() || !request.network_aliases.is_empty() {
                    return Err(Error::Invalid(
                        "--ip and --network-alias need a network".into(),
                    ));
                }
                Ok(())
            }
            Mode::Network(name) => {
                let r = self.resolve(&name).await?;
                if let Some(ip) = &request.ip {
                    let ip = parse_ip(ip, "--ip")?;
                    if r.name == DEFAULT_NETWORK {
                        return Err(Error::Invalid(
                            "--ip needs a user-defined network, as in docker".into(),
                        ));
                    }
                    if !cidr_contains(&r.subnet, ip) {
                        return Err(Error::Invalid(format!(
                            "--ip {ip} is not in network {}'s subnet {}",
                            r.name, r.subnet
                        )));
                    }
                }
                if r.name == DEFAULT_NETWORK && !request.network_aliases.is_empty() {
                    return Err(Error::Invalid(
                        "--network-alias needs a user-defined network, as in docker".into(),
                    ));
                }
                if r.internal && (!request.publish.is_empty() || request.publish_all) {
                    return Err(Error::Invalid(format!(
                        "network {} is internal: it publishes no ports",
                        r.name
                    )));
                }
                for p in &request.publish {
                    if p.protocol != "tcp" && p.protocol != "udp" {
                        return Err(Error::Invalid(format!(
                            "bad protocol {:?}: use tcp or udp",
                            p.protocol
                        )));
                    }
                    if p.container_port == 0 {
                        return Err(Error::Invalid(
                            "container port 0 cannot be published".into(),
                        ));
                    }
                    if let Some(h) = &p.host_ip
                        && !matches!(parse_ip(h, "host address")?, IpAddr::V4(_))
                    {
                        return Err(Error::Invalid(format!(
                            "host address {h}: IPv6 publishing is not supported yet"
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Records that a new container is on the network its options name.
    pub async fn add_container(&self, record: &crate::container::ContainerRecord) -> Result<()> {
        let Mode::Network(name) = mode_of(record.config.network.as_deref()) else {
            return Ok(());
        };
        let r = self.resolve(&name).await?;
        let member = Member {
            ip: record
                .config
                .ip
                .as_deref()
                .map(|ip| parse_ip(ip, "--ip"))
                .transpose()?,
            aliases: record.config.network_aliases.clone(),
            container_name: record.name.clone(),
            endpoint: None,
        };
        self.save_member(&r.id, &record.id, &member, Some(0)).await
    }

    /// Makes a container's sandbox and plumbs it into each of its networks, publishes its
    /// ports and writes its `/etc/hosts` and `/etc/resolv.conf`. Called before its shim
    /// starts; on failure everything made is undone.
    pub async fn attach(
        &self,
        record: &crate::container::ContainerRecord,
        exposed: &[(u16, bool)],
    ) -> Result<()> {
        if !matches!(mode_of(record.config.network.as_deref()), Mode::Network(_)) {
            return Ok(());
        }
        let _ops = self.ops.lock().await;
        let result = self.attach_locked(record, exposed).await;
        if result.is_err() {
            self.detach_locked(&record.id).await;
        }
        result
    }

    async fn attach_locked(
        &self,
        record: &crate::container::ContainerRecord,
        exposed: &[(u16, bool)],
    ) -> Result<()> {
        let host = Arc::clone(self.host()?);
        let members = self.members_of(&record.id).await?;
        if members.is_empty() {
            return Err(Error::State(format!(
                "container {} is on no network: connect it to one",
                record.name
            )));
        }
        let path = host.netns_path(&record.id);
        if path.exists() {
            destroy_netns(&path).await;
            host.forget_sandbox(&record.id).await;
        }
        create_netns(&path).await.map_err(host_err(format!(
            "create the network namespace of container {}",
            record.name
        )))?;
        let records = self.records().await?;
        let mut own = Vec::new();
        let mut dns_servers = Vec::new();
        let mut default_taken = false;
        for (index, (network_id, mut member)) in members.into_iter().enumerate() {
            let r = records
                .iter()
                .find(|r| r.id == network_id)
                .ok_or_else(|| Error::NotFound(network_id.clone()))?;
            let driver = self.driver(&r.driver).await?;
            let endpoint_id = crate::store::random_hex(32).map_err(|e| Error::Host {
                what: "generate an id".into(),
                message: e.to_string(),
            })?;
            let driver_err = |source| Error::Driver {
                network: r.name.clone(),
                source,
            };
            let facts = driver
                .create_endpoint(&r.id, &endpoint_id, member.ip, None)
                .await
                .map_err(driver_err)?;
            let interface = format!("eth{index}");
            let default_gateway = !default_taken && !r.internal;
            default_taken |= default_gateway;
            let mut endpoint = Endpoint {
                id: endpoint_id.clone(),
                interface: interface.clone(),
                address: facts.address,
                gateway: facts.gateway,
                mac: facts.mac,
                default_gateway,
                ports: Vec::new(),
            };
            member.endpoint = Some(endpoint.clone());
            member.container_name = record.name.clone();
            // Saved first, so that a failure below still finds it to undo.
            self.save_member(&r.id, &record.id, &member, None).await?;
            host.grant(&r.driver, &record.id);
            let joined = driver
                .join(&r.id, &endpoint_id, &record.id, &interface, default_gateway)
                .await
                .map_err(|source| Error::Driver {
                    network: r.name.clone(),
                    source,
                })?;
            if index == 0 {
                endpoint.ports = self
                    .publish(&host, r, &driver, record, &endpoint, exposed)
                    .await?;
                member.endpoint = Some(endpoint.clone());
                self.save_member(&r.id, &record.id, &member, None).await?;
            }
            own.push((facts.address.address, {
                let mut names = vec![record.name.clone()];
                names.extend(member.aliases.iter().cloned());
                names
            }));
            if dns_servers.is_empty() {
                if !joined.dns_servers.is_empty() {
                    dns_servers = joined.dns_servers.iter().map(|s| s.to_string()).collect();
                } else if r.dns
                    && let Some(gw) = r.gateway
                {
                    dns_servers.push(gw.to_string());
                }
            }
            if r.dns {
                self.refresh_dns(&r.id).await;
            }
        }
        // Disk work stays off the runtime's workers.
        let dir = self.data_root.join("containers").join(&record.id);
        let owned = record.clone();
        tokio::task::spawn_blocking(move || write_etc(&dir, &owned, &own, &dns_servers))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(host_err(format!(
                "write /etc/hosts and /etc/resolv.conf of container {}",
                record.name
            )))?;
        Ok(())
    }

    async fn publish(
        &self,
        host: &Arc<HostNet>,
        r: &Record,
        driver: &NetworkDriver,
        record: &crate::container::ContainerRecord,
        endpoint: &Endpoint,
        exposed: &[(u16, bool)],
    ) -> Result<Vec<PortMap>> {
        let mut wanted: Vec<PortBinding> = record.config.publish.clone();
        if record.config.publish_all {
            for (port, tcp) in exposed {
                let protocol = if *tcp { "tcp" } else { "udp" };
                if !wanted
                    .iter()
                    .any(|w| w.container_port == *port && w.protocol == protocol)
                {
                    wanted.push(PortBinding {
                        protocol: protocol.into(),
                        host_ip: None,
                        host_port: None,
                        container_port: *port,
                    });
                }
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        if r.internal {
            return Err(Error::Invalid(format!(
                "network {} is internal: it publishes no ports",
                r.name
            )));
        }
        let mut bound = Vec::new();
        let mut maps = Vec::new();
        for w in &wanted {
            let tcp = w.protocol != "udp";
            let host_ip = w
                .host_ip
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| parse_ip(h, "host address"))
                .transpose()?;
            let published = proxy::publish(
                tcp,
                host_ip,
                w.host_port.unwrap_or(0),
                SocketAddr::new(endpoint.address.address, w.container_port),
            )
            .await
            .map_err(|e| {
                Error::State(format!(
                    "cannot publish {}:{}/{}: {e}",
                    host_ip.map_or_else(|| "0.0.0.0".to_owned(), |h| h.to_string()),
                    w.host_port.unwrap_or(0),
                    w.protocol
                ))
            })?;
            host.reserve(&r.driver, tcp, published.host_port);
            maps.push(PortMap {
                tcp,
                host_ip,
                host_port: published.host_port,
                container_port: w.container_port,
            });
            bound.push(published);
        }
        if let Err(source) = driver.publish_ports(&r.id, &endpoint.id, &maps).await {
            for m in &maps {
                host.unreserve(m.tcp, m.host_port);
            }
            return Err(Error::Driver {
                network: r.name.clone(),
                source,
            });
        }
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(record.id.clone())
            .or_default()
            .extend(bound);
        Ok(maps)
    }

    /// Tears a container's networking down: its ports, endpoints and namespace. Idempotent.
    pub async fn detach(&self, container_id: &str) {
        let _ops = self.ops.lock().await;
        self.detach_locked(container_id).await;
    }

    async fn detach_locked(&self, container_id: &str) {
        let Ok(host) = self.host().cloned() else {
            return;
        };
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(container_id);
        let records = self.records().await.unwrap_or_default();
        for (network_id, mut member) in self.members_of(container_id).await.unwrap_or_default() {
            let Some(e) = member.endpoint.take() else {
                continue;
            };
            let Some(r) = records.iter().find(|r| r.id == network_id) else {
                continue;
            };
            match self.driver(&r.driver).await {
                Ok(driver) => {
                    if !e.ports.is_empty()
                        && let Err(err) = driver.unpublish_ports(&r.id, &e.id, &e.ports).await
                    {
                        warn!(container = %container_id, "unpublish ports: {err}");
                    }
                    if let Err(err) = driver.leave(&r.id, &e.id, container_id).await {
                        warn!(container = %container_id, "leave network {}: {err}", r.name);
                    }
                    if let Err(err) = driver.delete_endpoint(&r.id, &e.id).await
                        && err.kind() != ErrorKind::NotFound
                    {
                        warn!(container = %container_id, "delete endpoint on {}: {err}", r.name);
                    }
                }
                Err(err) => warn!(container = %container_id, "network {} is down: {err}", r.name),
            }
            for p in &e.ports {
                host.unreserve(p.tcp, p.host_port);
            }
            let _ = self
                .save_member(&network_id, container_id, &member, None)
                .await;
            if r.dns {
                self.refresh_dns(&r.id).await;
            }
        }
        host.revoke(container_id);
        let path = host.netns_path(container_id);
        if path.exists() {
            destroy_netns(&path).await;
        }
        host.forget_sandbox(container_id).await;
    }

    /// A container's network facts for inspect.
    pub async fn settings(&self, record: &crate::container::ContainerRecord) -> NetworkSettings {
        let records = self.records().await.unwrap_or_default();
        let mode = match mode_of(record.config.network.as_deref()) {
            Mode::None => "none".to_owned(),
            Mode::Host => "host".to_owned(),
            // With an authorization chain the gate records the network by its id.
            Mode::Network(n) => records
                .iter()
                .find(|r| r.id == n)
                .map_or(n, |r| r.name.clone()),
        };
        let mut settings = NetworkSettings {
            mode,
            ..Default::default()
        };
        for (network_id, member) in self.members_of(&record.id).await.unwrap_or_default() {
            let Some(r) = records.iter().find(|r| r.id == network_id) else {
                continue;
            };
            let Some(e) = member.endpoint else {
                continue;
            };
            for p in &e.ports {
                settings.ports.push(PortBinding {
                    protocol: if p.tcp { "tcp" } else { "udp" }.into(),
                    host_ip: Some(
                        p.host_ip
                            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                            .to_string(),
                    ),
                    host_port: Some(p.host_port),
                    container_port: p.container_port,
                });
            }
            settings.networks.insert(
                r.name.clone(),
                EndpointSettings {
                    network_id: r.id.clone(),
                    ipv4_address: e.address.to_string(),
                    gateway: e.gateway.map(|g| g.to_string()),
                    mac_address: mac_text(e.mac),
                    interface: e.interface,
                    aliases: member.aliases,
                },
            );
        }
        settings
    }

    /// `network.connect`: adds the container to a network; a running one is plumbed now.
    pub async fn connect(
        &self,
        network: &str,
        record: &crate::container::ContainerRecord,
        running: bool,
        ip: Option<&str>,
        aliases: Vec<String>,
    ) -> Result<()> {
        let r = self.resolve(network).await?;
        if !matches!(mode_of(record.config.network.as_deref()), Mode::Network(_)) {
            return Err(Error::State(format!(
                "container {} uses --network {}: it cannot join other networks",
                record.name,
                record.config.network.as_deref().unwrap_or_default()
            )));
        }
        let ip = ip.map(|s| parse_ip(s, "--ip")).transpose()?;
        if let Some(ip) = ip
            && !cidr_contains(&r.subnet, ip)
        {
            return Err(Error::Invalid(format!(
                "--ip {ip} is not in network {}'s subnet {}",
                r.name, r.subnet
            )));
        }
        let _ops = self.ops.lock().await;
        let members = self.members_of(&record.id).await?;
        if members.iter().any(|(n, _)| n == &r.id) {
            return Err(Error::Exists(format!(
                "{} (container {} is already on it)",
                r.name, record.name
            )));
        }
        let position = members.len() as i64;
        let member = Member {
            ip,
            aliases,
            container_name: record.name.clone(),
            endpoint: None,
        };
        self.save_member(&r.id, &record.id, &member, Some(position))
            .await?;
        if !running {
            return Ok(());
        }
        let outcome = self.plumb_one(record, &r, member, position as usize).await;
        if outcome.is_err() {
            let _ = self.unplumb_one(&record.id, &r).await;
            let (n, c) = (r.id.clone(), record.id.clone());
            let _ = self
                .store
                .run(move |conn| {
                    conn.execute(
                        "DELETE FROM network_members WHERE network_id = ?1 AND container_id = ?2",
                        [&n, &c],
                    )
                    .map_err(q("forget a network member"))?;
                    Ok(())
                })
                .await;
        }
        outcome
    }

    async fn plumb_one(
        &self,
        record: &crate::container::ContainerRecord,
        r: &Record,
        mut member: Member,
        position: usize,
    ) -> Result<()> {
        let host = Arc::clone(self.host()?);
        let driver = self.driver(&r.driver).await?;
        let endpoint_id = crate::store::random_hex(32).map_err(|e| Error::Host {
            what: "generate an id".into(),
            message: e.to_string(),
        })?;
        let facts = driver
            .create_endpoint(&r.id, &endpoint_id, member.ip, None)
            .await
            .map_err(|source| Error::Driver {
                network: r.name.clone(),
                source,
            })?;
        let interface = format!("eth{position}");
        member.endpoint = Some(Endpoint {
            id: endpoint_id.clone(),
            interface: interface.clone(),
            address: facts.address,
            gateway: facts.gateway,
            mac: facts.mac,
            default_gateway: false,
            ports: Vec::new(),
        });
        self.save_member(&r.id, &record.id, &member, None).await?;
        host.grant(&r.driver, &record.id);
        driver
            .join(&r.id, &endpoint_id, &record.id, &interface, false)
            .await
            .map_err(|source| Error::Driver {
                network: r.name.clone(),
                source,
            })?;
        if r.dns {
            self.refresh_dns(&r.id).await;
        }
        Ok(())
    }

    async fn unplumb_one(&self, container_id: &str, r: &Record) -> Result<()> {
        let Some((_, mut member)) = self
            .members_of(container_id)
            .await?
            .into_iter()
            .find(|(n, _)| n == &r.id)
        else {
            return Ok(());
        };
        if let Some(e) = member.endpoint.take() {
            let driver = self.driver(&r.driver).await?;
            if !e.ports.is_empty() {
                let _ = driver.unpublish_ports(&r.id, &e.id, &e.ports).await;
                if let Some(h) = self.host.get() {
                    for p in &e.ports {
                        h.unreserve(p.tcp, p.host_port);
                    }
                }
            }
            let _ = driver.leave(&r.id, &e.id, container_id).await;
            let _ = driver.delete_endpoint(&r.id, &e.id).await;
            self.save_member(&r.id, container_id, &member, None).await?;
            if r.dns {
                self.refresh_dns(&r.id).await;
            }
        }
        Ok(())
    }

    /// `network.disconnect`.
    pub async fn disconnect(
        &self,
        network: &str,
        container_id: &str,
        container_name: &str,
    ) -> Result<()> {
        let r = self.resolve(network).await?;
        let _ops = self.ops.lock().await;
        let members = self.members_of(container_id).await?;
        if !members.iter().any(|(n, _)| n == &r.id) {
            return Err(Error::NotFound(format!(
                "{} (container {container_name} is not on it)",
                r.name
            )));
        }
        self.unplumb_one(container_id, &r).await?;
        let (n, c) = (r.id.clone(), container_id.to_owned());
        self.store
            .run(move |conn| {
                conn.execute(
                    "DELETE FROM network_members WHERE network_id = ?1 AND container_id = ?2",
                    [&n, &c],
                )
                .map_err(q("forget a network member"))?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// Writes a networked container's `/etc/hosts` and `/etc/resolv.conf` into `dir`. Blocking.
fn write_etc(
    dir: &Path,
    record: &crate::container::ContainerRecord,
    own: &[(IpAddr, Vec<String>)],
    dns_servers: &[String],
) -> std::result::Result<(), String> {
    let add_hosts: Vec<(String, String)> = record
        .config
        .add_hosts
        .iter()
        .filter_map(|h| parse_add_host(h).ok())
        .collect();
    let hosts = render_hosts(&record.hostname, own, &add_hosts);
    let servers = if record.config.dns.is_empty() {
        dns_servers.to_vec()
    } else {
        record.config.dns.clone()
    };
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = render_resolv(&host_resolv, &servers, &record.config.dns_search, false);
    crate::runtime::shim::write_atomic(&dir.join("hosts"), hosts.as_bytes())
        .map_err(|e| e.to_string())?;
    crate::runtime::shim::write_atomic(&dir.join("resolv.conf"), resolv.as_bytes())
        .map_err(|e| e.to_string())
}

/// The container lifecycle's view of [`Networks`]: called on blocking threads, it runs
/// the async work on the daemon's runtime.
#[derive(Debug)]
pub struct Hooks {
    networks: Arc<Networks>,
    images: Arc<crate::image::Images>,
    runtime: tokio::runtime::Handle,
}

impl Hooks {
    /// Hooks over `networks` (call inside the runtime).
    pub fn new(networks: Arc<Networks>, images: Arc<crate::image::Images>) -> Hooks {
        Hooks {
            networks,
            images,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// `80/tcp` → (80, true).
fn exposed_port(s: &str) -> Option<(u16, bool)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    Some((port.parse().ok()?, proto != "udp"))
}

impl crate::container::NetworkHooks for Hooks {
    fn attach(
        &self,
        record: &crate::container::ContainerRecord,
    ) -> std::result::Result<(), String> {
        let exposed: Vec<(u16, bool)> = if record.config.publish_all {
            self.images
                .inspect(&record.image_id)
                .map(|d| {
                    d.config
                        .exposed_ports
                        .iter()
                        .filter_map(|p| exposed_port(p))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.runtime
            .block_on(self.networks.attach(record, &exposed))
            .map_err(|e| e.to_string())
    }

    fn detach(&self, container_id: &str) {
        self.runtime.block_on(self.networks.detach(container_id));
    }
}

/// Makes a network namespace and binds it at `path`, with `lo` up.
async fn create_netns(path: &Path) -> std::result::Result<(), String> {
    let target = path.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        // A thread of its own: it unshares its network namespace, binds it, and ends.
        let bind = target.clone();
        std::thread::spawn(move || -> std::result::Result<(), String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare: {e}"))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &bind,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind the namespace: {e}"))
        })
        .join()
        .map_err(|_| "the namespace thread panicked".to_owned())?
    })
    .await
    .map_err(|e| e.to_string())??;
    let inside = netlink::Rtnl::in_netns(path)
        .await
        .map_err(|e| format!("enter the new namespace: {e}"))?;
    inside.set_up("lo").await.map_err(|e| e.to_string())
}

/// Unbinds and removes a namespace made by [`create_netns`].
async fn destroy_netns(path: &Path) {
    let target = path.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&target);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv_conf() {
        let hosts = render_hosts(
            "web",
            &[(
                "10.1.0.2".parse().unwrap(),
                vec!["web1".into(), "api".into()],
            )],
            &[("db".into(), "10.9.0.9".into())],
        );
        assert!(hosts.contains("10.9.0.9\tdb\n"));
        assert!(hosts.contains("10.1.0.2\tweb\tweb1\tapi\n"));
        assert!(!hosts.contains("127.0.1.1"));
        let alone = render_hosts("web", &[], &[]);
        assert!(alone.contains("127.0.1.1\tweb\n"));

        let host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch corp\noptions edns0\n";
        let r = render_resolv(host, &[], &[], false);
        assert_eq!(r, "nameserver 192.0.2.1\nsearch corp\noptions edns0\n");
        let r = render_resolv(host, &["10.5.0.1".into()], &["x.test".into()], false);
        assert_eq!(r, "search x.test\nnameserver 10.5.0.1\noptions edns0\n");
    }

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s, "test").unwrap()
    }

    #[test]
    fn host_routes_are_read_from_proc_net_route() {
        // A real /proc/net/route on a little-endian host: default route, a /16 and a /28.
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                    berthb1\t001015AC\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0\n\
                    garbage\n";
        let routes = parse_routes(text);
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes,
                vec![
                    cidr("0.0.0.0/0"),
                    cidr("192.168.0.0/16"),
                    cidr("172.21.16.0/28")
                ]
            );
        }
        assert_eq!(routes.len(), 3);
    }

    #[test]
    fn pool_subnets_skip_networks_and_narrower_host_routes() {
        let pool = cidr("172.21.1.0/24");
        // Empty host: the first /28.
        assert_eq!(
            free_pool_subnet(&pool, 28, &[], &[]),
            Some(cidr("172.21.1.0/28"))
        );
        // A berth network holds the first, a leftover bridge's route the second.
        assert_eq!(
            free_pool_subnet(
                &pool,
                28,
                &[cidr("172.21.1.0/28")],
                &[cidr("172.21.1.16/28")]
            ),
            Some(cidr("172.21.1.32/28"))
        );
        // A route inside a candidate (a /30 in the third) counts; the default route, a
        // VPN's /8 and a route as wide as the pool do not.
        let broad = [
            cidr("0.0.0.0/0"),
            cidr("172.0.0.0/8"),
            cidr("172.21.1.0/24"),
            cidr("172.21.1.4/30"),
        ];
        assert_eq!(
            free_pool_subnet(&pool, 28, &[], &broad),
            Some(cidr("172.21.1.16/28"))
        );
        // Used up, and sizes the pool cannot give.
        let all: Vec<Cidr> = (0..16)
            .map(|i| cidr(&format!("172.21.1.{}/28", i * 16)))
            .collect();
        assert_eq!(free_pool_subnet(&pool, 28, &all, &[]), None);
        assert_eq!(free_pool_subnet(&pool, 16, &[], &[]), None);
        assert_eq!(free_pool_subnet(&pool, 31, &[], &[]), None);
        assert_eq!(
            free_pool_subnet(&pool, 24, &[], &[]),
            Some(cidr("172.21.1.0/24"))
        );
    }

    #[test]
    fn modes_add_hosts_and_subnets() {
        assert_eq!(mode_of(None), Mode::Network("bridge".into()));
        assert_eq!(mode_of(Some("none")), Mode::None);
        assert_eq!(mode_of(Some("host")), Mode::Host);
        assert_eq!(mode_of(Some("mynet")), Mode::Network("mynet".into()));
        assert_eq!(
            parse_add_host("db:10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert_eq!(
            parse_add_host("db=10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host("db:notanip").is_err());
        let c = parse_cidr("10.5.0.0/16", "subnet").unwrap();
        assert!(cidr_contains(&c, "10.5.200.1".parse().unwrap()));
        assert!(!cidr_contains(&c, "10.6.0.1".parse().unwrap()));
        assert!(parse_cidr("10.5.0.0", "subnet").is_err());
        assert!(parse_cidr("10.5.0.0/40", "subnet").is_err());
        assert!(parse_cidr("fd00::/64", "subnet").is_err());
    }
}
