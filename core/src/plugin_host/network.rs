//! Network drivers (`berth:network/network-driver@1.0.0`): the typed handle the rest of core
//! uses, and the `host-net` import, which forwards every privileged operation as a plain
//! [`NetOp`] to a [`NetHost`] that the network module implements and scopes to the driver.

use std::fmt::Debug;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use berth_api::ErrorKind;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::driver::{CallStats, Instance, call};
use super::sandbox::{self, PluginState};
use super::{Error, Limits, Result};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins-api/wit/network",
        world: "network-driver",
        imports: { "berth:network/host-net": async },
        exports: { default: async },
        with: {
            "berth:types/types@1.0.0": crate::plugin_host::volume::bindings::berth::types::types,
            "berth:types/host-log@1.0.0": crate::plugin_host::volume::bindings::berth::types::host_log,
        },
    });
}

use bindings::berth::network::{host_net, net_types};
use bindings::berth::types::types as wit;
use bindings::exports::berth::network::driver as wit_driver;
use bindings::{NetworkDriver as Bindings, NetworkDriverPre};

/// An address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Cidr {
    /// The address.
    pub address: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A network namespace, as `host-net` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// berthd's own.
    Host,
    /// A container's sandbox, by id.
    Sandbox(String),
}

/// An interface in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkName {
    /// Interface name.
    pub name: String,
    /// Where it is.
    pub netns: Namespace,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub destination: Cidr,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface.
    pub device: Option<String>,
}

/// A DNAT port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Forward {
    /// TCP (else UDP).
    pub tcp: bool,
    /// Host address to match, `None` for all local ones.
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: u16,
    /// Container address.
    pub container_ip: IpAddr,
    /// Container port.
    pub container_port: u16,
}

/// A published port as the host hands it to a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortMap {
    /// TCP (else UDP).
    pub tcp: bool,
    /// Host address, `None` for all.
    pub host_ip: Option<IpAddr>,
    /// Host port (never 0).
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// Bridge or veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// A veth end.
    Veth,
}

/// A link a driver owns, for `list-links`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLink {
    /// Where it is.
    pub link: LinkName,
    /// What it is.
    pub kind: LinkKind,
    /// The other veth end, if it exists.
    pub peer: Option<LinkName>,
    /// Its bridge, if enslaved.
    pub master: Option<String>,
    /// Administratively up.
    pub up: bool,
}

/// One `host-net` operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum NetOp {
    CreateBridge {
        name: String,
        mtu: Option<u32>,
    },
    CreateVethPair {
        name: String,
        peer: String,
        mtu: Option<u32>,
    },
    SetMaster {
        name: String,
        bridge: String,
    },
    MoveToNetns {
        name: String,
        sandbox: String,
        new_name: Option<String>,
    },
    SetAddress {
        link: LinkName,
        address: Cidr,
    },
    SetMac {
        link: LinkName,
        mac: [u8; 6],
    },
    SetMtu {
        link: LinkName,
        mtu: u32,
    },
    SetUp {
        link: LinkName,
    },
    AddRoute {
        netns: Namespace,
        route: RouteSpec,
    },
    EnableMasquerade {
        subnet: Cidr,
        bridge: String,
    },
    DisableMasquerade {
        subnet: Cidr,
        bridge: String,
    },
    AddPortForward(Forward),
    RemovePortForward(Forward),
    SetSysctl {
        netns: Namespace,
        key: String,
        value: String,
    },
    DeleteLink {
        link: LinkName,
    },
    ListLinks,
}

/// What an operation returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetReply {
    /// Done.
    Done,
    /// `list-links`.
    Links(Vec<OwnedLink>),
}

/// Why an operation was refused or failed, as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

/// A boxed future of a `host-net` operation.
pub type NetFuture = Pin<Box<dyn Future<Output = std::result::Result<NetReply, NetError>> + Send>>;

/// The host side of `host-net` for one driver: already scoped to what that driver may touch.
pub trait NetHost: Send + Sync + Debug {
    /// The interface name prefix assigned to the driver.
    fn link_prefix(&self) -> String;
    /// Runs one operation.
    fn call(&self, op: NetOp) -> NetFuture;
}

/// What `create-network` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// Host-generated id.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// `--subnet`.
    pub subnet: Option<Cidr>,
    /// `--gateway`.
    pub gateway: Option<IpAddr>,
    /// `--ip-range`.
    pub ip_range: Option<Cidr>,
    /// `--internal`.
    pub internal: bool,
    /// `-o`.
    pub options: Vec<(String, String)>,
    /// Labels.
    pub labels: Vec<(String, String)>,
}

/// A network as its driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// Id.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// IPv4 subnet.
    pub subnet: Cidr,
    /// IPv4 gateway.
    pub gateway: Option<IpAddr>,
    /// Host bridge.
    pub bridge: Option<String>,
    /// Internal.
    pub internal: bool,
    /// Driver facts.
    pub status: Vec<(String, String)>,
}

/// An endpoint's addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFacts {
    /// Interface address with prefix.
    pub address: Cidr,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// MAC.
    pub mac: Option<[u8; 6]>,
}

/// What `join` returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinFacts {
    /// DNS servers the driver wants, empty for the host's choice.
    pub dns_servers: Vec<IpAddr>,
    /// Search domains.
    pub dns_search: Vec<String>,
}

/// One endpoint for `restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreEndpoint {
    /// Id.
    pub endpoint_id: String,
    /// Sandbox and interface, if joined.
    pub joined: Option<(String, String)>,
    /// Default route.
    pub default_gateway: bool,
    /// Published ports.
    pub ports: Vec<PortMap>,
}

fn ip_in(ip: &net_types::IpAddress) -> IpAddr {
    match *ip {
        net_types::IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        net_types::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

fn ip_out(ip: IpAddr) -> net_types::IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            net_types::IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            net_types::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

fn cidr_in(c: &net_types::IpCidr) -> Cidr {
    Cidr {
        address: ip_in(&c.address),
        prefix: c.prefix_len,
    }
}

fn cidr_out(c: Cidr) -> net_types::IpCidr {
    net_types::IpCidr {
        address: ip_out(c.address),
        prefix_len: c.prefix,
    }
}

fn ns_in(n: &net_types::Netns) -> Namespace {
    match n {
        net_types::Netns::Host => Namespace::Host,
        net_types::Netns::Sandbox(s) => Namespace::Sandbox(s.clone()),
    }
}

fn ns_out(n: &Namespace) -> net_types::Netns {
    match n {
        Namespace::Host => net_types::Netns::Host,
        Namespace::Sandbox(s) => net_types::Netns::Sandbox(s.clone()),
    }
}

fn link_in(l: &net_types::LinkRef) -> LinkName {
    LinkName {
        name: l.name.clone(),
        netns: ns_in(&l.netns),
    }
}

fn link_out(l: &LinkName) -> net_types::LinkRef {
    net_types::LinkRef {
        name: l.name.clone(),
        netns: ns_out(&l.netns),
    }
}

fn kind_out(kind: ErrorKind) -> wit::ErrorKind {
    match kind {
        ErrorKind::NotFound => wit::ErrorKind::NotFound,
        ErrorKind::AlreadyExists => wit::ErrorKind::AlreadyExists,
        ErrorKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
        ErrorKind::FailedPrecondition => wit::ErrorKind::FailedPrecondition,
        ErrorKind::PermissionDenied => wit::ErrorKind::PermissionDenied,
        ErrorKind::ResourceExhausted => wit::ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable => wit::ErrorKind::Unavailable,
        _ => wit::ErrorKind::Internal,
    }
}

fn forward_in(f: &host_net::PortForward) -> Forward {
    Forward {
        tcp: matches!(f.protocol, net_types::Protocol::Tcp),
        host_ip: f.host_ip.as_ref().map(ip_in),
        host_port: f.host_port,
        container_ip: ip_in(&f.container_ip),
        container_port: f.container_port,
    }
}

fn port_out(p: &PortMap) -> net_types::PortMapping {
    net_types::PortMapping {
        protocol: if p.tcp {
            net_types::Protocol::Tcp
        } else {
            net_types::Protocol::Udp
        },
        host_ip: p.host_ip.map(ip_out),
        host_port: p.host_port,
        container_port: p.container_port,
    }
}

impl PluginState {
    async fn net(&mut self, op: NetOp) -> std::result::Result<NetReply, wit::Error> {
        let Some(net) = self.net.clone() else {
            return Err(wit::Error {
                kind: wit::ErrorKind::PermissionDenied,
                message: "host-net is not granted to this plugin".into(),
            });
        };
        net.call(op).await.map_err(|e| wit::Error {
            kind: kind_out(e.kind),
            message: e.message,
        })
    }

    async fn net_done(&mut self, op: NetOp) -> std::result::Result<(), wit::Error> {
        self.net(op).await.map(|_| ())
    }
}

impl net_types::Host for PluginState {}

impl host_net::Host for PluginState {
    async fn link_prefix(&mut self) -> String {
        self.net
            .as_ref()
            .map(|n| n.link_prefix())
            .unwrap_or_default()
    }

    async fn create_bridge(
        &mut self,
        name: String,
        mtu: Option<u32>,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::CreateBridge { name, mtu }).await
    }

    async fn create_veth_pair(
        &mut self,
        name: String,
        peer: String,
        mtu: Option<u32>,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::CreateVethPair { name, peer, mtu })
            .await
    }

    async fn set_master(
        &mut self,
        name: String,
        bridge: String,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::SetMaster { name, bridge }).await
    }

    async fn move_link_to_netns(
        &mut self,
        name: String,
        sandbox: String,
        new_name: Option<String>,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::MoveToNetns {
            name,
            sandbox,
            new_name,
        })
        .await
    }

    async fn set_address(
        &mut self,
        link: net_types::LinkRef,
        address: net_types::IpCidr,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::SetAddress {
            link: link_in(&link),
            address: cidr_in(&address),
        })
        .await
    }

    async fn set_mac(
        &mut self,
        link: net_types::LinkRef,
        mac: net_types::MacAddress,
    ) -> std::result::Result<(), wit::Error> {
        let (a, b, c, d, e, f) = mac;
        self.net_done(NetOp::SetMac {
            link: link_in(&link),
            mac: [a, b, c, d, e, f],
        })
        .await
    }

    async fn set_mtu(
        &mut self,
        link: net_types::LinkRef,
        mtu: u32,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::SetMtu {
            link: link_in(&link),
            mtu,
        })
        .await
    }

    async fn set_up(&mut self, link: net_types::LinkRef) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::SetUp {
            link: link_in(&link),
        })
        .await
    }

    async fn add_route(
        &mut self,
        netns: net_types::Netns,
        route: net_types::Route,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::AddRoute {
            netns: ns_in(&netns),
            route: RouteSpec {
                destination: cidr_in(&route.destination),
                gateway: route.gateway.as_ref().map(ip_in),
                device: route.device,
            },
        })
        .await
    }

    async fn enable_masquerade(
        &mut self,
        subnet: net_types::IpCidr,
        bridge: String,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::EnableMasquerade {
            subnet: cidr_in(&subnet),
            bridge,
        })
        .await
    }

    async fn disable_masquerade(
        &mut self,
        subnet: net_types::IpCidr,
        bridge: String,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::DisableMasquerade {
            subnet: cidr_in(&subnet),
            bridge,
        })
        .await
    }

    async fn add_port_forward(
        &mut self,
        forward: host_net::PortForward,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::AddPortForward(forward_in(&forward)))
            .await
    }

    async fn remove_port_forward(
        &mut self,
        forward: host_net::PortForward,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::RemovePortForward(forward_in(&forward)))
            .await
    }

    async fn set_sysctl(
        &mut self,
        netns: net_types::Netns,
        key: String,
        value: String,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::SetSysctl {
            netns: ns_in(&netns),
            key,
            value,
        })
        .await
    }

    async fn delete_link(
        &mut self,
        link: net_types::LinkRef,
    ) -> std::result::Result<(), wit::Error> {
        self.net_done(NetOp::DeleteLink {
            link: link_in(&link),
        })
        .await
    }

    async fn list_links(&mut self) -> std::result::Result<Vec<host_net::OwnedLink>, wit::Error> {
        match self.net(NetOp::ListLinks).await? {
            NetReply::Links(links) => Ok(links
                .iter()
                .map(|l| host_net::OwnedLink {
                    link: link_out(&l.link),
                    kind: match l.kind {
                        LinkKind::Bridge => host_net::LinkKind::Bridge,
                        LinkKind::Veth => host_net::LinkKind::Veth,
                    },
                    peer: l.peer.as_ref().map(link_out),
                    master: l.master.clone(),
                    up: l.up,
                })
                .collect()),
            NetReply::Done => Ok(Vec::new()),
        }
    }
}

/// A network driver plugin.
pub struct NetworkDriver {
    name: Arc<str>,
    engine: Engine,
    pre: NetworkDriverPre<PluginState>,
    state_dir: PathBuf,
    config: Vec<(String, String)>,
    limits: Limits,
    failures: super::FailureReport,
    ticker: super::ticker::Ticker,
    net: Arc<dyn NetHost>,
    instance: tokio::sync::Mutex<Option<Instance<Bindings>>>,
    stats: std::sync::Mutex<CallStats>,
}

impl std::fmt::Debug for NetworkDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkDriver")
            .field("name", &self.name)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

fn facts(n: wit_driver::NetworkInfo) -> NetworkFacts {
    NetworkFacts {
        network_id: n.network_id,
        name: n.name,
        subnet: cidr_in(&n.ipv4.subnet),
        gateway: n.ipv4.gateway.as_ref().map(ip_in),
        bridge: n.bridge,
        internal: n.internal,
        status: n.status,
    }
}

impl NetworkDriver {
    pub(super) fn new(
        engine: Engine,
        name: Arc<str>,
        component: &Component,
        state_dir: PathBuf,
        config: Vec<(String, String)>,
        oversight: super::Oversight,
        net: Arc<dyn NetHost>,
    ) -> Result<NetworkDriver> {
        let link_error = |e: wasmtime::Error| Error::Link {
            plugin: name.to_string(),
            message: format!("{e:#}"),
        };
        let mut linker = Linker::<PluginState>::new(&engine);
        sandbox::add_wasi(&mut linker).map_err(link_error)?;
        Bindings::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(link_error)?;
        let pre = linker.instantiate_pre(component).map_err(link_error)?;
        let pre = NetworkDriverPre::new(pre).map_err(link_error)?;
        std::fs::create_dir_all(&state_dir).map_err(|source| Error::Io {
            what: format!("create {}", state_dir.display()),
            source,
        })?;
        Ok(NetworkDriver {
            name,
            engine,
            pre,
            state_dir,
            config,
            limits: oversight.limits,
            failures: oversight.failures,
            ticker: oversight.ticker,
            net,
            instance: tokio::sync::Mutex::new(None),
            stats: std::sync::Mutex::new(CallStats::default()),
        })
    }

    super::driver::driver_methods!();

    fn preopen(&self) -> Option<&std::path::Path> {
        Some(&self.state_dir)
    }

    fn net_host(&self) -> Option<Arc<dyn NetHost>> {
        Some(Arc::clone(&self.net))
    }

    fn connect_grant(&self) -> Option<Arc<super::logging::ConnectGrant>> {
        None
    }

    /// `create-network`.
    pub async fn create_network(&self, r: &NetworkRequest) -> Result<NetworkFacts> {
        self.count();
        let request = wit_driver::CreateNetworkRequest {
            network_id: r.network_id.clone(),
            name: r.name.clone(),
            ipv4: wit_driver::IpamRequest {
                subnet: r.subnet.map(cidr_out),
                gateway: r.gateway.map(ip_out),
                ip_range: r.ip_range.map(cidr_out),
            },
            ipv6: None,
            internal: r.internal,
            options: r.options.clone(),
            labels: r.labels.clone(),
        };
        call!(self, "create-network", |i| i
            .bindings
            .berth_network_driver()
            .call_create_network(&mut i.store, &request)
            .await)
        .map(facts)
    }

    /// `delete-network`.
    pub async fn delete_network(&self, network_id: &str) -> Result<()> {
        self.count();
        call!(self, "delete-network", |i| i
            .bindings
            .berth_network_driver()
            .call_delete_network(&mut i.store, network_id)
            .await)
    }

    /// `create-endpoint`.
    pub async fn create_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ipv4: Option<IpAddr>,
        mac: Option<[u8; 6]>,
    ) -> Result<EndpointFacts> {
        self.count();
        let request = wit_driver::CreateEndpointRequest {
            network_id: network_id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            ipv4_address: ipv4.map(ip_out),
            ipv6_address: None,
            mac: mac.map(|m| (m[0], m[1], m[2], m[3], m[4], m[5])),
            options: Vec::new(),
        };
        call!(self, "create-endpoint", |i| i
            .bindings
            .berth_network_driver()
            .call_create_endpoint(&mut i.store, &request)
            .await)
        .map(|e| EndpointFacts {
            address: cidr_in(&e.address),
            gateway: e.gateway.as_ref().map(ip_in),
            mac: e.mac.map(|(a, b, c, d, e, f)| [a, b, c, d, e, f]),
        })
    }

    /// `delete-endpoint`.
    pub async fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<()> {
        self.count();
        call!(self, "delete-endpoint", |i| i
            .bindings
            .berth_network_driver()
            .call_delete_endpoint(&mut i.store, network_id, endpoint_id)
            .await)
    }

    /// `join`.
    pub async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox: &str,
        interface: &str,
        default_gateway: bool,
    ) -> Result<JoinFacts> {
        self.count();
        let request = wit_driver::JoinRequest {
            network_id: network_id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            sandbox: sandbox.to_owned(),
            interface_name: interface.to_owned(),
            default_gateway,
        };
        call!(self, "join", |i| i
            .bindings
            .berth_network_driver()
            .call_join(&mut i.store, &request)
            .await)
        .map(|j| JoinFacts {
            dns_servers: j.dns_servers.iter().map(ip_in).collect(),
            dns_search: j.dns_search,
        })
    }

    /// `leave`.
    pub async fn leave(&self, network_id: &str, endpoint_id: &str, sandbox: &str) -> Result<()> {
        self.count();
        call!(self, "leave", |i| i
            .bindings
            .berth_network_driver()
            .call_leave(&mut i.store, network_id, endpoint_id, &sandbox.to_owned())
            .await)
    }

    /// `publish-ports`.
    pub async fn publish_ports(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ports: &[PortMap],
    ) -> Result<()> {
        self.count();
        let ports: Vec<_> = ports.iter().map(port_out).collect();
        call!(self, "publish-ports", |i| i
            .bindings
            .berth_network_driver()
            .call_publish_ports(&mut i.store, network_id, endpoint_id, &ports)
            .await)
    }

    /// `unpublish-ports`.
    pub async fn unpublish_ports(
        &self,
        network_id: &str,
        endpoint_id: &str,
        ports: &[PortMap],
    ) -> Result<()> {
        self.count();
        let ports: Vec<_> = ports.iter().map(port_out).collect();
        call!(self, "unpublish-ports", |i| i
            .bindings
            .berth_network_driver()
            .call_unpublish_ports(&mut i.store, network_id, endpoint_id, &ports)
            .await)
    }

    /// `restore`: every network of this driver with its endpoints.
    pub async fn restore(&self, networks: &[(String, Vec<RestoreEndpoint>)]) -> Result<()> {
        self.count();
        let networks: Vec<_> = networks
            .iter()
            .map(|(id, endpoints)| wit_driver::NetworkState {
                network_id: id.clone(),
                endpoints: endpoints
                    .iter()
                    .map(|e| wit_driver::EndpointState {
                        endpoint_id: e.endpoint_id.clone(),
                        sandbox: e.joined.as_ref().map(|j| j.0.clone()),
                        interface_name: e.joined.as_ref().map(|j| j.1.clone()),
                        default_gateway: e.default_gateway,
                        ports: e.ports.iter().map(port_out).collect(),
                    })
                    .collect(),
            })
            .collect();
        call!(self, "restore", |i| i
            .bindings
            .berth_network_driver()
            .call_restore(&mut i.store, &networks)
            .await)
    }

    /// `list-networks`.
    pub async fn list_networks(&self) -> Result<Vec<NetworkFacts>> {
        self.count();
        call!(self, "list-networks", |i| i
            .bindings
            .berth_network_driver()
            .call_list_networks(&mut i.store)
            .await)
        .map(|v| v.into_iter().map(facts).collect())
    }
}
