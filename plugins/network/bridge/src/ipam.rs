//! The driver's persistent state and its address management: which networks exist, their
//! subnets and bridges, which endpoint holds which address, where each endpoint is joined
//! and which ports it publishes. Pure logic over a JSON document in the state directory,
//! so it is unit-tested on the host.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

use berth_plugin::Error;
use serde::{Deserialize, Serialize};

/// An IPv4 subnet or interface address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    /// The address (host bits zero for a subnet).
    pub address: Ipv4Addr,
    /// 0..=32.
    pub prefix: u8,
}

impl Cidr {
    /// A subnet from any address in it.
    pub fn subnet(address: Ipv4Addr, prefix: u8) -> Cidr {
        Cidr {
            address: Ipv4Addr::from(u32::from(address) & Self::mask_of(prefix)),
            prefix,
        }
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }

    /// The first address.
    pub fn first(&self) -> u32 {
        u32::from(self.address) & self.mask()
    }

    /// The last address (broadcast).
    pub fn last(&self) -> u32 {
        self.first() | !self.mask()
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.first()
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 subnet (a.b.c.d/n)"))?;
        let address: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 subnet (a.b.c.d/n)"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        Ok(Cidr { address, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// A published port of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// TCP (else UDP).
    pub tcp: bool,
    /// Host address, `None` for all.
    pub host_ip: Option<Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// Where an endpoint is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The host's sandbox id.
    pub sandbox: String,
    /// Interface name inside the sandbox.
    pub interface: String,
    /// Whether it carries the sandbox's default route.
    pub default_gateway: bool,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its address in the network's subnet.
    pub address: Ipv4Addr,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Where it is joined, if it is.
    pub joined: Option<Joined>,
    /// Ports published for it.
    pub ports: Vec<Port>,
}

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// User-visible name.
    pub name: String,
    /// Its subnet.
    pub subnet: Cidr,
    /// The bridge's address, containers' default gateway.
    pub gateway: Ipv4Addr,
    /// Where container addresses come from (`--ip-range`), else the whole subnet.
    pub range: Option<Cidr>,
    /// The host-side bridge.
    pub bridge: String,
    /// No outside connectivity.
    pub internal: bool,
    /// MTU of the bridge and veths, if set.
    pub mtu: Option<u32>,
    /// Endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl Network {
    /// Allocates an address: `wanted` if free and inside the subnet, else the lowest free
    /// address of the range (never the network, gateway or broadcast address).
    pub fn allocate(&self, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
        let taken =
            |ip: Ipv4Addr| ip == self.gateway || self.endpoints.values().any(|e| e.address == ip);
        // /31 and /32 have no network or broadcast address to avoid.
        let usable = |ip: u32| {
            self.subnet.prefix >= 31 || (ip != self.subnet.first() && ip != self.subnet.last())
        };
        if let Some(ip) = wanted {
            if !self.subnet.contains(ip) || !usable(u32::from(ip)) {
                return Err(Error::invalid_argument(format!(
                    "address {ip} is not a usable address of subnet {} of network {}",
                    self.subnet, self.name
                )));
            }
            if taken(ip) {
                return Err(Error::already_exists(format!(
                    "address {ip} is already in use on network {}",
                    self.name
                )));
            }
            return Ok(ip);
        }
        let range = self.range.unwrap_or(self.subnet);
        (range.first()..=range.last())
            .filter(|ip| usable(*ip))
            .map(Ipv4Addr::from)
            .find(|ip| !taken(*ip))
            .ok_or_else(|| {
                Error::resource_exhausted(format!(
                    "no free address left in {range} on network {}",
                    self.name
                ))
            })
    }
}

/// Everything the driver keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
}

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "networks.json";

impl State {
    /// Reads the state from `dir` (empty if there is none yet).
    pub fn load(dir: &Path) -> Result<State, Error> {
        match std::fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::internal(format!("the state file {STATE_FILE} is corrupt: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::from_io("read the state file", &e)),
        }
    }

    /// Writes the state to `dir`, crash-safely.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::internal(format!("encode the state: {e}")))?;
        berth_plugin::fs::write_atomic(&dir.join(STATE_FILE), &bytes)
            .map_err(|e| Error::from_io("write the state file", &e))
    }

    /// The first `prefix`-sized subnet of `pool` that no network of this driver overlaps.
    pub fn free_subnet(&self, pool: Cidr, prefix: u8) -> Result<Cidr, Error> {
        if prefix < pool.prefix || prefix > 30 {
            return Err(Error::invalid_argument(format!(
                "subnets of /{prefix} cannot be carved from the pool {pool}"
            )));
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let mut start = u64::from(pool.first());
        while start + step - 1 <= u64::from(pool.last()) {
            let candidate = Cidr::subnet(Ipv4Addr::from(start as u32), prefix);
            if !self
                .networks
                .values()
                .any(|n| n.subnet.overlaps(&candidate))
            {
                return Ok(candidate);
            }
            start += step;
        }
        Err(Error::resource_exhausted(format!(
            "the address pool {pool} has no free /{prefix} subnet left: remove unused networks or give --subnet"
        )))
    }

    /// The network with `id`, or `not-found`.
    pub fn network_mut(&mut self, id: &str) -> Result<&mut Network, Error> {
        self.networks
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no network {id}")))
    }
}

/// A MAC address derived from the IPv4 address, as docker does (02:42:a.b.c.d): locally
/// administered, unicast, and stable for an address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(subnet: &str) -> Network {
        let subnet: Cidr = subnet.parse().unwrap();
        Network {
            name: "n".into(),
            subnet,
            gateway: Ipv4Addr::from(subnet.first() + 1),
            range: None,
            bridge: "berthb1".into(),
            internal: false,
            mtu: None,
            endpoints: BTreeMap::new(),
        }
    }

    fn add(n: &mut Network, id: &str, ip: Ipv4Addr) {
        n.endpoints.insert(
            id.into(),
            Endpoint {
                address: ip,
                mac: mac_for(ip),
                joined: None,
                ports: vec![],
            },
        );
    }

    #[test]
    fn allocation_skips_gateway_and_taken_addresses_and_reuses_freed_ones() {
        let mut n = net("10.1.0.0/29");
        let first = n.allocate(None).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 1, 0, 2));
        add(&mut n, "a", first);
        let next = n.allocate(None).unwrap();
        add(&mut n, "b", next);
        assert_eq!(n.endpoints["b"].address, Ipv4Addr::new(10, 1, 0, 3));
        for id in ["c", "d", "e"] {
            let next = n.allocate(None).unwrap();
            add(&mut n, id, next);
        }
        // .7 is broadcast: the /29 is full.
        assert_eq!(n.endpoints["e"].address, Ipv4Addr::new(10, 1, 0, 6));
        let err = n.allocate(None).unwrap_err();
        assert_eq!(err.kind, berth_plugin::ErrorKind::ResourceExhausted);
        n.endpoints.remove("a");
        assert_eq!(n.allocate(None).unwrap(), Ipv4Addr::new(10, 1, 0, 2));
    }

    #[test]
    fn requested_addresses_are_checked() {
        let mut n = net("10.1.0.0/24");
        add(&mut n, "a", Ipv4Addr::new(10, 1, 0, 9));
        assert_eq!(
            n.allocate(Some(Ipv4Addr::new(10, 1, 0, 9)))
                .unwrap_err()
                .kind,
            berth_plugin::ErrorKind::AlreadyExists
        );
        assert_eq!(
            n.allocate(Some(Ipv4Addr::new(10, 1, 0, 1)))
                .unwrap_err()
                .kind,
            berth_plugin::ErrorKind::AlreadyExists
        );
        for bad in [
            Ipv4Addr::new(10, 2, 0, 5),
            Ipv4Addr::new(10, 1, 0, 0),
            Ipv4Addr::new(10, 1, 0, 255),
        ] {
            assert_eq!(
                n.allocate(Some(bad)).unwrap_err().kind,
                berth_plugin::ErrorKind::InvalidArgument
            );
        }
        assert_eq!(
            n.allocate(Some(Ipv4Addr::new(10, 1, 0, 200))).unwrap(),
            Ipv4Addr::new(10, 1, 0, 200)
        );
    }

    #[test]
    fn ip_range_limits_allocation() {
        let mut n = net("10.1.0.0/24");
        n.range = Some("10.1.0.128/25".parse().unwrap());
        assert_eq!(n.allocate(None).unwrap(), Ipv4Addr::new(10, 1, 0, 128));
    }

    #[test]
    fn pool_subnets_do_not_overlap_existing_networks() {
        let mut s = State::default();
        let pool: Cidr = "10.201.0.0/16".parse().unwrap();
        let a = s.free_subnet(pool, 24).unwrap();
        assert_eq!(a.to_string(), "10.201.0.0/24");
        s.networks.insert("a".into(), net("10.201.0.0/24"));
        // A user subnet covering the third and fourth /24s.
        s.networks.insert("b".into(), net("10.201.2.0/23"));
        assert_eq!(
            s.free_subnet(pool, 24).unwrap().to_string(),
            "10.201.1.0/24"
        );
        s.networks.insert("b2".into(), net("10.201.1.0/24"));
        assert_eq!(
            s.free_subnet(pool, 24).unwrap().to_string(),
            "10.201.4.0/24"
        );
        let tiny: Cidr = "10.9.0.0/24".parse().unwrap();
        s.networks.insert("c".into(), net("10.9.0.0/24"));
        assert_eq!(
            s.free_subnet(tiny, 24).unwrap_err().kind,
            berth_plugin::ErrorKind::ResourceExhausted
        );
    }

    #[test]
    fn cidr_parsing_and_overlap() {
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("x/8".parse::<Cidr>().is_err());
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.5.0.0/16".parse().unwrap();
        let c: Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert_eq!(
            Cidr::subnet(Ipv4Addr::new(10, 1, 2, 3), 16).to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn state_round_trips_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        let mut s = State::default();
        let mut n = net("10.1.0.0/24");
        add(&mut n, "e", Ipv4Addr::new(10, 1, 0, 2));
        n.endpoints.get_mut("e").unwrap().ports.push(Port {
            tcp: true,
            host_ip: None,
            host_port: 8080,
            container_port: 80,
        });
        s.networks.insert("id".into(), n);
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        std::fs::write(dir.path().join(STATE_FILE), b"{").unwrap();
        assert_eq!(
            State::load(dir.path()).unwrap_err().kind,
            berth_plugin::ErrorKind::Internal
        );
    }
}
