//! berth's default `bridge` network driver, a WebAssembly component implementing
//! `berth:network/network-driver@1.0.0`.
//!
//! Each network is a Linux bridge in the host namespace holding the network's gateway
//! address; each endpoint is a veth pair, one end enslaved to the bridge, the other moved
//! into the container's sandbox as `eth0` (`eth1`, ...) with the endpoint's address. Unless
//! the network is internal, its subnet is masqueraded and published ports are forwarded.
//! The driver decides addresses and names and keeps them in `/state/networks.json`
//! (`ipam`); every kernel effect is a `host-net` call, which berthd checks against what
//! this driver created.
//!
//! Configuration keys: `pool` (IPv4 subnet networks are carved from, default
//! 10.201.0.0/16), `pool-prefix` (their size, default 24), `mtu` (default for new
//! networks; the kernel's 1500 if unset). Network options: `bridge-name` (or docker's
//! `com.docker.network.bridge.name`; it must start with the host's link prefix) and `mtu`
//! (or `com.docker.network.driver.mtu`). IPv6 is not supported yet and is refused.

mod ipam;

use std::net::Ipv4Addr;
use std::sync::Mutex;

use berth_plugin::fs::STATE_DIR;
use berth_plugin::network::berth::network::host_net::{self, PortForward};
use berth_plugin::network::berth::network::net_types::{
    IpAddress, IpCidr, LinkRef, Netns, PortMapping, Protocol, Route,
};
use berth_plugin::network::exports::berth::network::driver::{
    self, CreateEndpointRequest, CreateNetworkRequest, EndpointInfo, JoinInfo, JoinRequest,
    NetworkCapabilities, NetworkInfo, NetworkState, SubnetInfo,
};
use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::{Error, ErrorKind, Scope, config, log};

use ipam::{Cidr, Endpoint, Joined, Network, Port, State};

/// The driver's configuration, set by `configure` after every instantiation.
#[derive(Debug, Clone, Copy)]
struct Config {
    pool: Cidr,
    pool_prefix: u8,
    mtu: Option<u32>,
}

static CONFIG: Mutex<Config> = Mutex::new(Config {
    pool: Cidr {
        address: Ipv4Addr::new(10, 201, 0, 0),
        prefix: 16,
    },
    pool_prefix: 24,
    mtu: None,
});

fn config() -> Config {
    *CONFIG.lock().unwrap_or_else(|p| p.into_inner())
}

fn parse_mtu(value: &str, what: &str) -> Result<u32, Error> {
    value
        .parse::<u32>()
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| Error::invalid_argument(format!("{what} {value:?}: use 68 to 65535")))
}

fn state_dir() -> &'static std::path::Path {
    std::path::Path::new(STATE_DIR)
}

fn v4(ip: &IpAddress) -> Result<Ipv4Addr, Error> {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
        IpAddress::Ipv6(_) => Err(Error::invalid_argument(
            "the bridge driver supports IPv4 only",
        )),
    }
}

fn addr(ip: Ipv4Addr) -> IpAddress {
    let [a, b, c, d] = ip.octets();
    IpAddress::Ipv4((a, b, c, d))
}

fn cidr(address: Ipv4Addr, prefix: u8) -> IpCidr {
    IpCidr {
        address: addr(address),
        prefix_len: prefix,
    }
}

fn cidr_in(c: &IpCidr) -> Result<Cidr, Error> {
    if c.prefix_len > 32 {
        return Err(Error::invalid_argument(format!(
            "prefix length /{} is not IPv4",
            c.prefix_len
        )));
    }
    Ok(Cidr {
        address: v4(&c.address)?,
        prefix: c.prefix_len,
    })
}

fn host_link(name: &str) -> LinkRef {
    LinkRef {
        name: name.to_owned(),
        netns: Netns::Host,
    }
}

/// Treats `not-found` as done (the object is already gone).
fn gone_ok(result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Treats `already-exists` as done (restore and retried creates).
fn exists_ok(result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The host-side veth end and its temporary peer name for an endpoint.
fn veth_names(endpoint_id: &str) -> (String, String) {
    let prefix = host_net::link_prefix();
    let short = &endpoint_id[..endpoint_id.len().min(8)];
    (format!("{prefix}v{short}"), format!("{prefix}p{short}"))
}

fn forward(e: &Endpoint, p: &Port) -> PortForward {
    PortForward {
        protocol: if p.tcp { Protocol::Tcp } else { Protocol::Udp },
        host_ip: p.host_ip.map(addr),
        host_port: p.host_port,
        container_ip: addr(e.address),
        container_port: p.container_port,
    }
}

fn port_in(p: &PortMapping) -> Result<Port, Error> {
    Ok(Port {
        tcp: matches!(p.protocol, Protocol::Tcp),
        host_ip: p.host_ip.as_ref().map(v4).transpose()?,
        host_port: p.host_port,
        container_port: p.container_port,
    })
}

/// Creates (or, after a crash or reboot, re-creates) a network's bridge, address and NAT.
fn ensure_bridge(n: &Network) -> Result<(), Error> {
    exists_ok(host_net::create_bridge(&n.bridge, n.mtu))?;
    let bridge = host_link(&n.bridge);
    host_net::set_address(&bridge, cidr(n.gateway, n.subnet.prefix))?;
    host_net::set_up(&bridge)?;
    if !n.internal {
        host_net::enable_masquerade(cidr(n.subnet.address, n.subnet.prefix), &n.bridge)?;
    }
    Ok(())
}

fn remove_bridge(n: &Network) -> Result<(), Error> {
    if !n.internal {
        host_net::disable_masquerade(cidr(n.subnet.address, n.subnet.prefix), &n.bridge)?;
    }
    gone_ok(host_net::delete_link(&host_link(&n.bridge)))
}

/// Plumbs an endpoint into a sandbox; on failure removes what it made.
fn plumb(n: &Network, endpoint_id: &str, e: &Endpoint, joined: &Joined) -> Result<(), Error> {
    let (host_end, peer) = veth_names(endpoint_id);
    if let Err(err) = host_net::create_veth_pair(&host_end, &peer, n.mtu) {
        if err.kind != ErrorKind::AlreadyExists {
            return Err(err);
        }
        // A leftover of an interrupted join: start again from nothing.
        gone_ok(host_net::delete_link(&host_link(&host_end)))?;
        host_net::create_veth_pair(&host_end, &peer, n.mtu)?;
    }
    let steps = || -> Result<(), Error> {
        host_net::set_master(&host_end, &n.bridge)?;
        host_net::set_up(&host_link(&host_end))?;
        host_net::move_link_to_netns(&peer, &joined.sandbox, Some(&joined.interface))?;
        let inside = LinkRef {
            name: joined.interface.clone(),
            netns: Netns::Sandbox(joined.sandbox.clone()),
        };
        let m = e.mac;
        host_net::set_mac(&inside, (m[0], m[1], m[2], m[3], m[4], m[5]))?;
        host_net::set_address(&inside, cidr(e.address, n.subnet.prefix))?;
        host_net::set_up(&inside)?;
        if joined.default_gateway && !n.internal {
            host_net::add_route(
                &Netns::Sandbox(joined.sandbox.clone()),
                &Route {
                    destination: cidr(Ipv4Addr::UNSPECIFIED, 0),
                    gateway: Some(addr(n.gateway)),
                    device: Some(joined.interface.clone()),
                },
            )?;
        }
        Ok(())
    };
    if let Err(err) = steps() {
        let _ = host_net::delete_link(&host_link(&host_end));
        return Err(err);
    }
    Ok(())
}

fn network_info(id: &str, n: &Network) -> NetworkInfo {
    NetworkInfo {
        network_id: id.to_owned(),
        name: n.name.clone(),
        ipv4: SubnetInfo {
            subnet: cidr(n.subnet.address, n.subnet.prefix),
            gateway: Some(addr(n.gateway)),
        },
        ipv6: None,
        bridge: Some(n.bridge.clone()),
        internal: n.internal,
        status: vec![
            ("endpoints".to_owned(), n.endpoints.len().to_string()),
            (
                "mtu".to_owned(),
                n.mtu.map_or_else(|| "1500".to_owned(), |m| m.to_string()),
            ),
        ],
    }
}

/// The component's implementation of its two exported interfaces. Stateless between calls:
/// each call reads and writes the state file.
struct BridgeDriver;

impl plugin::Guest for BridgeDriver {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "bridge".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Linux bridge networks with NAT and published ports".to_owned(),
        }
    }

    fn configure(pairs: Vec<(String, String)>) -> Result<(), Error> {
        config::check_keys(&pairs, &["pool", "pool-prefix", "mtu"], "configuration key")?;
        let mut c = config();
        if let Some(pool) = config::get(&pairs, "pool") {
            let parsed: Cidr = pool.parse().map_err(Error::invalid_argument)?;
            c.pool = Cidr::subnet(parsed.address, parsed.prefix);
        }
        if let Some(prefix) = config::get(&pairs, "pool-prefix") {
            c.pool_prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|p| (c.pool.prefix..=30).contains(p))
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "pool-prefix {prefix:?}: use {} to 30 for the pool {}",
                        c.pool.prefix, c.pool
                    ))
                })?;
        }
        if let Some(mtu) = config::get(&pairs, "mtu") {
            c.mtu = Some(parse_mtu(mtu, "mtu")?);
        }
        *CONFIG.lock().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    }
}

impl driver::Guest for BridgeDriver {
    fn create_network(request: CreateNetworkRequest) -> Result<NetworkInfo, Error> {
        let mut state = State::load(state_dir())?;
        if let Some(n) = state.networks.get(&request.network_id) {
            return Ok(network_info(&request.network_id, n));
        }
        if request.ipv6.is_some() {
            return Err(Error::invalid_argument(
                "the bridge driver does not support IPv6 networks yet",
            ));
        }
        let cfg = config();
        let mut bridge = None;
        let mut mtu = cfg.mtu;
        for (key, value) in &request.options {
            match key.as_str() {
                "bridge-name" | "com.docker.network.bridge.name" => bridge = Some(value.clone()),
                "mtu" | "com.docker.network.driver.mtu" => mtu = Some(parse_mtu(value, key)?),
                other => {
                    return Err(Error::invalid_argument(format!(
                        "unknown option {other:?} of the bridge driver (known: bridge-name, mtu)"
                    )));
                }
            }
        }
        let subnet = match &request.ipv4.subnet {
            Some(s) => {
                let s = cidr_in(s)?;
                if s.prefix > 30 {
                    return Err(Error::invalid_argument(format!(
                        "subnet {s} is too small: use /30 or larger"
                    )));
                }
                Cidr::subnet(s.address, s.prefix)
            }
            None => state.free_subnet(cfg.pool, cfg.pool_prefix)?,
        };
        if let Some((_, other)) = state
            .networks
            .iter()
            .find(|(_, n)| n.subnet.overlaps(&subnet))
        {
            return Err(Error::already_exists(format!(
                "subnet {subnet} overlaps network {} ({})",
                other.name, other.subnet
            )));
        }
        let gateway = match &request.ipv4.gateway {
            Some(g) => {
                let g = v4(g)?;
                if !subnet.contains(g)
                    || u32::from(g) == subnet.first()
                    || u32::from(g) == subnet.last()
                {
                    return Err(Error::invalid_argument(format!(
                        "gateway {g} is not a usable address of subnet {subnet}"
                    )));
                }
                g
            }
            None => Ipv4Addr::from(subnet.first() + 1),
        };
        let range = match &request.ipv4.ip_range {
            Some(r) => {
                let r = cidr_in(r)?;
                let r = Cidr::subnet(r.address, r.prefix);
                if r.prefix < subnet.prefix || !subnet.contains(r.address) {
                    return Err(Error::invalid_argument(format!(
                        "ip range {r} is not inside subnet {subnet}"
                    )));
                }
                Some(r)
            }
            None => None,
        };
        let prefix = host_net::link_prefix();
        let bridge = match bridge {
            Some(b) => b,
            None => format!(
                "{prefix}b{}",
                &request.network_id[..request.network_id.len().min(8)]
            ),
        };
        if state.networks.values().any(|n| n.bridge == bridge) {
            return Err(Error::already_exists(format!(
                "bridge {bridge} is already used by another network"
            )));
        }
        let network = Network {
            name: request.name.clone(),
            subnet,
            gateway,
            range,
            bridge,
            internal: request.internal,
            mtu,
            endpoints: Default::default(),
        };
        if let Err(e) = ensure_bridge(&network) {
            let _ = remove_bridge(&network);
            return Err(e);
        }
        let info = network_info(&request.network_id, &network);
        state.networks.insert(request.network_id, network);
        state.save(state_dir())?;
        Ok(info)
    }

    fn delete_network(network_id: String) -> Result<(), Error> {
        let mut state = State::load(state_dir())?;
        let Some(n) = state.networks.get(&network_id) else {
            return Err(Error::not_found(format!("no network {network_id}")));
        };
        remove_bridge(n)?;
        state.networks.remove(&network_id);
        state.save(state_dir())
    }

    fn create_endpoint(request: CreateEndpointRequest) -> Result<EndpointInfo, Error> {
        let mut state = State::load(state_dir())?;
        let n = state.network_mut(&request.network_id)?;
        let endpoint = match n.endpoints.get(&request.endpoint_id) {
            Some(e) => e.clone(),
            None => {
                let address = n.allocate(request.ipv4_address.as_ref().map(v4).transpose()?)?;
                let mac = match request.mac {
                    Some((a, b, c, d, e, f)) => [a, b, c, d, e, f],
                    None => ipam::mac_for(address),
                };
                if !request.options.is_empty() {
                    return Err(Error::invalid_argument(
                        "the bridge driver takes no endpoint options",
                    ));
                }
                let e = Endpoint {
                    address,
                    mac,
                    joined: None,
                    ports: Vec::new(),
                };
                n.endpoints.insert(request.endpoint_id.clone(), e.clone());
                e
            }
        };
        let info = EndpointInfo {
            endpoint_id: request.endpoint_id,
            address: cidr(endpoint.address, n.subnet.prefix),
            address_ipv6: None,
            gateway: (!n.internal).then(|| addr(n.gateway)),
            gateway_ipv6: None,
            mac: Some({
                let m = endpoint.mac;
                (m[0], m[1], m[2], m[3], m[4], m[5])
            }),
        };
        state.save(state_dir())?;
        Ok(info)
    }

    fn delete_endpoint(network_id: String, endpoint_id: String) -> Result<(), Error> {
        let mut state = State::load(state_dir())?;
        let n = state.network_mut(&network_id)?;
        if n.endpoints.remove(&endpoint_id).is_none() {
            return Err(Error::not_found(format!("no endpoint {endpoint_id}")));
        }
        state.save(state_dir())
    }

    fn join(request: JoinRequest) -> Result<JoinInfo, Error> {
        let mut state = State::load(state_dir())?;
        let n = state.network_mut(&request.network_id)?;
        let e = n
            .endpoints
            .get(&request.endpoint_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no endpoint {}", request.endpoint_id)))?;
        let joined = Joined {
            sandbox: request.sandbox,
            interface: request.interface_name,
            default_gateway: request.default_gateway,
        };
        plumb(n, &request.endpoint_id, &e, &joined)?;
        if let Some(e) = n.endpoints.get_mut(&request.endpoint_id) {
            e.joined = Some(joined);
        }
        state.save(state_dir())?;
        Ok(JoinInfo {
            dns_servers: Vec::new(),
            dns_search: Vec::new(),
        })
    }

    fn leave(network_id: String, endpoint_id: String, _sandbox: String) -> Result<(), Error> {
        let mut state = State::load(state_dir())?;
        let Ok(n) = state.network_mut(&network_id) else {
            return Ok(());
        };
        let (host_end, _) = veth_names(&endpoint_id);
        gone_ok(host_net::delete_link(&host_link(&host_end)))?;
        if let Some(e) = n.endpoints.get_mut(&endpoint_id) {
            e.joined = None;
        }
        state.save(state_dir())
    }

    fn publish_ports(
        network_id: String,
        endpoint_id: String,
        ports: Vec<PortMapping>,
    ) -> Result<(), Error> {
        let mut state = State::load(state_dir())?;
        let n = state.network_mut(&network_id)?;
        if n.internal {
            return Err(Error::failed_precondition(format!(
                "network {} is internal: it publishes no ports",
                n.name
            )));
        }
        let e = n
            .endpoints
            .get(&endpoint_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no endpoint {endpoint_id}")))?;
        let ports = ports.iter().map(port_in).collect::<Result<Vec<_>, _>>()?;
        let mut added = Vec::new();
        for p in &ports {
            if let Err(err) = host_net::add_port_forward(forward(&e, p)) {
                for done in &added {
                    let _ = host_net::remove_port_forward(forward(&e, done));
                }
                return Err(err);
            }
            added.push(*p);
        }
        if let Some(e) = n.endpoints.get_mut(&endpoint_id) {
            for p in ports {
                if !e.ports.contains(&p) {
                    e.ports.push(p);
                }
            }
        }
        state.save(state_dir())
    }

    fn unpublish_ports(
        network_id: String,
        endpoint_id: String,
        ports: Vec<PortMapping>,
    ) -> Result<(), Error> {
        let mut state = State::load(state_dir())?;
        let n = state.network_mut(&network_id)?;
        let Some(e) = n.endpoints.get(&endpoint_id).cloned() else {
            return Ok(());
        };
        let ports = ports.iter().map(port_in).collect::<Result<Vec<_>, _>>()?;
        for p in &ports {
            host_net::remove_port_forward(forward(&e, p))?;
        }
        if let Some(e) = n.endpoints.get_mut(&endpoint_id) {
            e.ports.retain(|p| !ports.contains(p));
        }
        state.save(state_dir())
    }

    fn restore(networks: Vec<NetworkState>) -> Result<(), Error> {
        let mut state = State::load(state_dir())?;
        let existing: Vec<String> = host_net::list_links()?
            .into_iter()
            .filter(|l| matches!(l.link.netns, Netns::Host))
            .map(|l| l.link.name)
            .collect();
        // Networks the host no longer has: remove what is left of them.
        let forgotten: Vec<String> = state
            .networks
            .keys()
            .filter(|id| !networks.iter().any(|n| &n.network_id == *id))
            .cloned()
            .collect();
        for id in forgotten {
            if let Some(n) = state.networks.remove(&id) {
                for eid in n.endpoints.keys() {
                    let _ = gone_ok(host_net::delete_link(&host_link(&veth_names(eid).0)));
                }
                if let Err(e) = remove_bridge(&n) {
                    log::warn(
                        "could not remove a forgotten network",
                        &[("network", &n.name), ("error", &e.message)],
                    );
                }
            }
        }
        for listed in &networks {
            let Some(n) = state.networks.get_mut(&listed.network_id) else {
                log::warn(
                    "the host lists a network this driver does not know: skipped",
                    &[("network", &listed.network_id)],
                );
                continue;
            };
            if let Err(e) = ensure_bridge(n) {
                log::error(
                    "could not restore a network",
                    &[("network", &n.name), ("error", &e.message)],
                );
                continue;
            }
            n.endpoints.retain(|eid, _| {
                let keep = listed.endpoints.iter().any(|e| &e.endpoint_id == eid);
                if !keep {
                    let _ = host_net::delete_link(&host_link(&veth_names(eid).0));
                }
                keep
            });
            let snapshot = n.clone();
            for ep in &listed.endpoints {
                let Some(e) = snapshot.endpoints.get(&ep.endpoint_id) else {
                    continue;
                };
                let joined = match (&ep.sandbox, &ep.interface_name) {
                    (Some(sandbox), Some(interface)) => Some(Joined {
                        sandbox: sandbox.clone(),
                        interface: interface.clone(),
                        default_gateway: ep.default_gateway,
                    }),
                    _ => None,
                };
                if let Some(j) = &joined
                    && !existing.contains(&veth_names(&ep.endpoint_id).0)
                    && let Err(err) = plumb(&snapshot, &ep.endpoint_id, e, j)
                {
                    log::error(
                        "could not re-plumb an endpoint",
                        &[("endpoint", &ep.endpoint_id), ("error", &err.message)],
                    );
                }
                let mut ports = Vec::new();
                if joined.is_some() {
                    for p in &ep.ports {
                        let p = port_in(p)?;
                        match host_net::add_port_forward(forward(e, &p)) {
                            Ok(()) => ports.push(p),
                            Err(err) => log::error(
                                "could not restore a port forward",
                                &[("endpoint", &ep.endpoint_id), ("error", &err.message)],
                            ),
                        }
                    }
                }
                if let Some(e) = n.endpoints.get_mut(&ep.endpoint_id) {
                    e.joined = joined;
                    e.ports = ports;
                }
            }
        }
        state.save(state_dir())
    }

    fn list_networks() -> Result<Vec<NetworkInfo>, Error> {
        let state = State::load(state_dir())?;
        Ok(state
            .networks
            .iter()
            .map(|(id, n)| network_info(id, n))
            .collect())
    }

    fn capabilities() -> NetworkCapabilities {
        NetworkCapabilities {
            scope: Scope::Local,
        }
    }
}

berth_plugin::export_network_driver!(BridgeDriver);
