//! The host side of `host-net`: executes a network driver's privileged operations (links
//! through rtnetlink, NAT and forwarding through berth's own nftables table, sysctls),
//! and refuses anything outside the driver's scope. A driver may touch only links it
//! created (the `net_links` table: namespace, name, owner), sandboxes berthd is joining it
//! to, host ports berthd reserved for it, and firewall rules it installed (`net_rules`).
//!
//! Firewall: nftables rather than iptables. berth's rules live in one table of their own
//! (`inet berth`), replaced as a whole in one atomic `nft -f` transaction whenever they
//! change, so berthd never leaves a half-applied rule set, never edits the host's own
//! chains, and removes everything it did by deleting one table.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::ErrorKind;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::netlink::{NetlinkError, Rtnl};
use crate::plugin_host::{
    Cidr, Forward, LinkKind, LinkName, Namespace, NetError, NetFuture, NetHost, NetOp, NetReply,
    OwnedLink,
};
use crate::store::{self, Store, q};

/// The nftables table of the berthd on `data_root`: `berth` for the default data root, else
/// `berth_` and a digest of the path, so that several daemons (tests, side-by-side
/// installs) never replace each other's rules.
pub fn table_name(data_root: &Path) -> String {
    use sha2::Digest;
    if data_root == Path::new("/var/lib/berth") {
        return "berth".into();
    }
    let digest = sha2::Sha256::digest(data_root.as_os_str().as_encoded_bytes());
    format!("berth_{}", hex::encode(&digest[..4]))
}

fn denied(message: impl Into<String>) -> NetError {
    NetError {
        kind: ErrorKind::PermissionDenied,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> NetError {
    NetError {
        kind: ErrorKind::InvalidArgument,
        message: message.into(),
    }
}

fn internal(message: impl Into<String>) -> NetError {
    NetError {
        kind: ErrorKind::Internal,
        message: message.into(),
    }
}

fn from_netlink(e: NetlinkError) -> NetError {
    let kind = match e {
        NetlinkError::NotFound(_) => ErrorKind::NotFound,
        NetlinkError::Exists(_) => ErrorKind::AlreadyExists,
        NetlinkError::Other { .. } => ErrorKind::Internal,
    };
    NetError {
        kind,
        message: e.to_string(),
    }
}

fn from_store(e: store::Error) -> NetError {
    internal(e.to_string())
}

/// A firewall rule a driver asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Rule {
    /// Masquerade `subnet` leaving through anything but `bridge`; forward between them.
    Masquerade { subnet: String, bridge: String },
    /// DNAT a host port to a container.
    Forward {
        tcp: bool,
        host_ip: Option<IpAddr>,
        host_port: u16,
        container_ip: IpAddr,
        container_port: u16,
    },
}

/// Renders berth's whole table. Pure, so it is unit-tested.
fn render(table: &str, rules: &BTreeSet<Rule>, bridges: &BTreeSet<String>) -> String {
    let quote = |s: &str| format!("\"{s}\"");
    let set = |items: &BTreeSet<String>| {
        items
            .iter()
            .map(|b| quote(b))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut forward = vec![
        "type filter hook forward priority filter; policy accept;".to_owned(),
        "ct state established,related accept".to_owned(),
    ];
    let mut prerouting =
        vec!["type nat hook prerouting priority dstnat; policy accept;".to_owned()];
    let mut postrouting =
        vec!["type nat hook postrouting priority srcnat; policy accept;".to_owned()];
    for b in bridges {
        forward.push(format!("iifname {0} oifname {0} accept", quote(b)));
    }
    if !bridges.is_empty() {
        // Published ports may be reached from any network, as with docker's proxy.
        forward.push(format!(
            "ct status dnat oifname {{ {} }} accept",
            set(bridges)
        ));
        // Networks are isolated from each other.
        forward.push(format!(
            "iifname {{ {0} }} oifname {{ {0} }} drop",
            set(bridges)
        ));
    }
    for rule in rules {
        match rule {
            Rule::Masquerade { subnet, bridge } => {
                let family = if subnet.contains(':') { "ip6" } else { "ip" };
                forward.push(format!("iifname {} accept", quote(bridge)));
                postrouting.push(format!(
                    "{family} saddr {subnet} oifname != {} masquerade",
                    quote(bridge)
                ));
                // Hairpin: a container reaching a published port of its own network.
                postrouting.push(format!(
                    "ct status dnat {family} saddr {subnet} {family} daddr {subnet} masquerade"
                ));
            }
            Rule::Forward {
                tcp,
                host_ip,
                host_port,
                container_ip,
                container_port,
            } => {
                let proto = if *tcp { "tcp" } else { "udp" };
                let (family, target) = match container_ip {
                    IpAddr::V4(ip) => ("ip", format!("{ip}:{container_port}")),
                    IpAddr::V6(ip) => ("ip6", format!("[{ip}]:{container_port}")),
                };
                let matcher = match host_ip {
                    Some(h) => format!("{family} daddr {h}"),
                    None => "fib daddr type local".to_owned(),
                };
                prerouting.push(format!(
                    "{matcher} {proto} dport {host_port} dnat {family} to {target}"
                ));
            }
        }
    }
    if !bridges.is_empty() {
        // Anything else into or out of berth's bridges (internal networks, unmasqueraded ones).
        forward.push(format!("iifname {{ {} }} drop", set(bridges)));
        forward.push(format!("oifname {{ {} }} drop", set(bridges)));
    }
    let chain = |name: &str, lines: &[String]| {
        format!(
            "  chain {name} {{\n{}\n  }}\n",
            lines
                .iter()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    // Declaring then deleting the table first makes the replacement one transaction that
    // works whether or not the table exists.
    format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n{}{}{}}}\n",
        chain("forward", &forward),
        chain("prerouting", &prerouting),
        chain("postrouting", &postrouting)
    )
}

/// Runs `nft -f -` with `script`.
async fn nft(script: String) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused berth's rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn ns_key(ns: &Namespace) -> String {
    match ns {
        Namespace::Host => "host".into(),
        Namespace::Sandbox(s) => s.clone(),
    }
}

/// Namespace-wide sysctls a driver may set.
const HOST_SYSCTLS: &[&str] = &["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];
const SANDBOX_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];

/// Shared state of every driver's `host-net`.
#[derive(Debug)]
pub struct HostNet {
    store: Arc<Store>,
    table: String,
    netns_dir: PathBuf,
    rtnl: Rtnl,
    /// Sandboxes each driver may use now.
    grants: Mutex<HashMap<String, HashSet<String>>>,
    /// Host ports reserved for each driver: (tcp, port).
    reserved: Mutex<HashMap<(bool, u16), String>>,
    /// Subnets on owned bridges (from `set-address`), by bridge.
    bridge_subnets: Mutex<HashMap<String, (String, Cidr)>>,
    /// One firewall update at a time, so the table always reflects the last state.
    firewall: tokio::sync::Mutex<()>,
    /// One operation per driver at a time.
    serial: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl HostNet {
    /// Opens the host side (call inside the runtime); `netns_dir` holds sandboxes' bound
    /// namespaces, one file per sandbox id.
    pub fn new(
        store: Arc<Store>,
        netns_dir: PathBuf,
        data_root: &Path,
    ) -> std::io::Result<HostNet> {
        Ok(HostNet {
            store,
            table: table_name(data_root),
            netns_dir,
            rtnl: Rtnl::host()?,
            grants: Mutex::default(),
            reserved: Mutex::default(),
            bridge_subnets: Mutex::default(),
            firewall: tokio::sync::Mutex::new(()),
            serial: Mutex::default(),
        })
    }

    /// Where the namespace of sandbox `id` is bound.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    /// The directory of bound namespaces.
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    /// Lets `driver` use sandbox `sandbox` (before `join` or `restore`).
    pub fn grant(&self, driver: &str, sandbox: &str) {
        self.grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(driver.to_owned())
            .or_default()
            .insert(sandbox.to_owned());
    }

    /// Takes sandbox `sandbox` back from every driver.
    pub fn revoke(&self, sandbox: &str) {
        for set in self
            .grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            set.remove(sandbox);
        }
    }

    /// Reserves a host port for `driver` (the caller holds the listening socket).
    pub fn reserve(&self, driver: &str, tcp: bool, port: u16) {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tcp, port), driver.to_owned());
    }

    /// Releases a reservation.
    pub fn unreserve(&self, tcp: bool, port: u16) {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tcp, port));
    }

    /// Forgets the links of a sandbox that is gone.
    pub async fn forget_sandbox(&self, sandbox: &str) {
        let sandbox = sandbox.to_owned();
        if let Err(e) = self
            .store
            .run(move |conn| {
                conn.execute("DELETE FROM net_links WHERE netns = ?1", [&sandbox])
                    .map_err(q("forget a sandbox's links"))?;
                conn.execute(
                    "UPDATE net_links SET peer = NULL, peer_netns = NULL WHERE peer_netns = ?1",
                    [&sandbox],
                )
                .map_err(q("forget a sandbox's links"))?;
                Ok(())
            })
            .await
        {
            tracing::warn!("{e}");
        }
    }

    /// Applies the stored firewall rules (at start, and after every change).
    pub async fn apply_firewall(&self) -> Result<(), NetError> {
        let _one = self.firewall.lock().await;
        let (rules, bridges) = self
            .store
            .run(|conn| {
                let mut stmt = conn
                    .prepare("SELECT rule FROM net_rules")
                    .map_err(q("read firewall rules"))?;
                let rules: Vec<String> = stmt
                    .query_map([], |r| r.get(0))
                    .map_err(q("read firewall rules"))?
                    .collect::<Result<_, _>>()
                    .map_err(q("read firewall rules"))?;
                let mut stmt = conn
                    .prepare("SELECT name FROM net_links WHERE netns = 'host' AND kind = 'bridge'")
                    .map_err(q("read bridges"))?;
                let bridges: BTreeSet<String> = stmt
                    .query_map([], |r| r.get(0))
                    .map_err(q("read bridges"))?
                    .collect::<Result<_, _>>()
                    .map_err(q("read bridges"))?;
                Ok((rules, bridges))
            })
            .await
            .map_err(from_store)?;
        let rules: BTreeSet<Rule> = rules
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect();
        nft(render(&self.table, &rules, &bridges))
            .await
            .map_err(internal)
    }

    /// The scoped `host-net` of one driver.
    pub fn scoped(self: &Arc<Self>, driver: &str, prefix: &str) -> Arc<dyn NetHost> {
        Arc::new(ScopedNet {
            driver: driver.to_owned(),
            prefix: prefix.to_owned(),
            host: Arc::clone(self),
        })
    }

    async fn owner(
        &self,
        netns: &Namespace,
        name: &str,
    ) -> Result<Option<(String, String)>, NetError> {
        let key = ns_key(netns);
        let name = name.to_owned();
        self.store
            .run(move |conn| {
                conn.query_row(
                    "SELECT driver, kind FROM net_links WHERE netns = ?1 AND name = ?2",
                    [&key, &name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(q("look up a link's owner"))
            })
            .await
            .map_err(from_store)
    }

    async fn record_link(
        &self,
        driver: &str,
        netns: &Namespace,
        name: &str,
        kind: LinkKind,
        peer: Option<(&Namespace, &str)>,
    ) -> Result<(), NetError> {
        let row = (
            ns_key(netns),
            name.to_owned(),
            driver.to_owned(),
            match kind {
                LinkKind::Bridge => "bridge",
                LinkKind::Veth => "veth",
            },
            peer.map(|(n, _)| ns_key(n)),
            peer.map(|(_, p)| p.to_owned()),
        );
        self.store
            .run(move |conn| {
                conn.execute(
                    "INSERT OR REPLACE INTO net_links (netns, name, driver, kind, peer_netns, peer)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5],
                )
                .map_err(q("record a link"))?;
                Ok(())
            })
            .await
            .map_err(from_store)
    }

    async fn rtnl_for(&self, netns: &Namespace) -> Result<Rtnl, NetError> {
        match netns {
            Namespace::Host => Ok(self.rtnl.clone()),
            Namespace::Sandbox(id) => {
                let path = self.netns_path(id);
                if !path.exists() {
                    return Err(NetError {
                        kind: ErrorKind::NotFound,
                        message: format!("sandbox {id} no longer exists"),
                    });
                }
                Rtnl::in_netns(&path)
                    .await
                    .map_err(|e| internal(format!("enter sandbox {id}: {e}")))
            }
        }
    }
}

/// One driver's view of [`HostNet`].
#[derive(Debug)]
struct ScopedNet {
    driver: String,
    prefix: String,
    host: Arc<HostNet>,
}

impl NetHost for ScopedNet {
    fn link_prefix(&self) -> String {
        self.prefix.clone()
    }

    fn call(&self, op: NetOp) -> NetFuture {
        let driver = self.driver.clone();
        let prefix = self.prefix.clone();
        let host = Arc::clone(&self.host);
        Box::pin(async move {
            let lock = {
                let mut serial = host.serial.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(serial.entry(driver.clone()).or_default())
            };
            let _one = lock.lock().await;
            tracing::debug!(driver = %driver, ?op, "host-net");
            let scope = Scope {
                driver: &driver,
                prefix: &prefix,
                host: &host,
            };
            scope.run(op).await
        })
    }
}

struct Scope<'a> {
    driver: &'a str,
    prefix: &'a str,
    host: &'a HostNet,
}

impl Scope<'_> {
    fn check_new_name(&self, name: &str) -> Result<(), NetError> {
        if !valid_ifname(name) {
            return Err(invalid(format!(
                "{name:?} is not a valid interface name (1 to 15 of [A-Za-z0-9._-])"
            )));
        }
        if !name.starts_with(self.prefix) {
            return Err(denied(format!(
                "interface {name:?} does not start with this driver's prefix {:?}",
                self.prefix
            )));
        }
        Ok(())
    }

    fn check_sandbox(&self, sandbox: &str) -> Result<(), NetError> {
        let grants = self.host.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants
            .get(self.driver)
            .is_some_and(|set| set.contains(sandbox))
        {
            Ok(())
        } else {
            Err(denied(format!(
                "sandbox {sandbox:?} is not one this driver is joining"
            )))
        }
    }

    async fn check_owned(&self, link: &LinkName) -> Result<LinkKind, NetError> {
        if let Namespace::Sandbox(s) = &link.netns {
            self.check_sandbox(s)?;
        }
        match self.host.owner(&link.netns, &link.name).await? {
            Some((owner, kind)) if owner == self.driver => Ok(if kind == "bridge" {
                LinkKind::Bridge
            } else {
                LinkKind::Veth
            }),
            _ => Err(denied(format!(
                "interface {:?} was not created by this driver",
                link.name
            ))),
        }
    }

    async fn add_rule(&self, rule: Rule, add: bool) -> Result<(), NetError> {
        let driver = self.driver.to_owned();
        let text = serde_json::to_string(&rule).map_err(|e| internal(e.to_string()))?;
        self.host
            .store
            .run(move |conn| {
                if add {
                    conn.execute(
                        "INSERT OR IGNORE INTO net_rules (driver, rule) VALUES (?1, ?2)",
                        [&driver, &text],
                    )
                } else {
                    conn.execute(
                        "DELETE FROM net_rules WHERE driver = ?1 AND rule = ?2",
                        [&driver, &text],
                    )
                }
                .map_err(q("record a firewall rule"))?;
                Ok(())
            })
            .await
            .map_err(from_store)?;
        self.host.apply_firewall().await
    }

    async fn run(&self, op: NetOp) -> Result<NetReply, NetError> {
        let host = self.host;
        match op {
            NetOp::CreateBridge { name, mtu } => {
                self.check_new_name(&name)?;
                if let Some((owner, _)) = host.owner(&Namespace::Host, &name).await?
                    && owner != self.driver
                {
                    return Err(denied(format!(
                        "interface {name:?} belongs to another driver"
                    )));
                }
                host.rtnl
                    .create_bridge(&name, mtu)
                    .await
                    .map_err(from_netlink)?;
                host.record_link(self.driver, &Namespace::Host, &name, LinkKind::Bridge, None)
                    .await?;
            }
            NetOp::CreateVethPair { name, peer, mtu } => {
                self.check_new_name(&name)?;
                self.check_new_name(&peer)?;
                host.rtnl
                    .create_veth(&name, &peer, mtu)
                    .await
                    .map_err(from_netlink)?;
                let h = Namespace::Host;
                host.record_link(self.driver, &h, &name, LinkKind::Veth, Some((&h, &peer)))
                    .await?;
                host.record_link(self.driver, &h, &peer, LinkKind::Veth, Some((&h, &name)))
                    .await?;
            }
            NetOp::SetMaster { name, bridge } => {
                let h = Namespace::Host;
                self.check_owned(&LinkName {
                    name: name.clone(),
                    netns: h.clone(),
                })
                .await?;
                if self
                    .check_owned(&LinkName {
                        name: bridge.clone(),
                        netns: h,
                    })
                    .await?
                    != LinkKind::Bridge
                {
                    return Err(invalid(format!("{bridge:?} is not a bridge")));
                }
                host.rtnl
                    .set_master(&name, &bridge)
                    .await
                    .map_err(from_netlink)?;
            }
            NetOp::MoveToNetns {
                name,
                sandbox,
                new_name,
            } => {
                self.check_owned(&LinkName {
                    name: name.clone(),
                    netns: Namespace::Host,
                })
                .await?;
                self.check_sandbox(&sandbox)?;
                if let Some(n) = &new_name
                    && !valid_ifname(n)
                {
                    return Err(invalid(format!("{n:?} is not a valid interface name")));
                }
                let path = host.netns_path(&sandbox);
                if !path.exists() {
                    return Err(NetError {
                        kind: ErrorKind::NotFound,
                        message: format!("sandbox {sandbox} no longer exists"),
                    });
                }
                host.rtnl
                    .move_to(&name, &path)
                    .await
                    .map_err(from_netlink)?;
                let final_name = new_name.clone().unwrap_or_else(|| name.clone());
                if let Some(n) = &new_name {
                    let inside = host.rtnl_for(&Namespace::Sandbox(sandbox.clone())).await?;
                    inside.rename(&name, n).await.map_err(from_netlink)?;
                }
                let (driver, old, new, sb) = (
                    self.driver.to_owned(),
                    name.clone(),
                    final_name,
                    sandbox.clone(),
                );
                host.store
                    .run(move |conn| {
                        conn.execute(
                            "UPDATE net_links SET netns = ?1, name = ?2
                             WHERE netns = 'host' AND name = ?3 AND driver = ?4",
                            [&sb, &new, &old, &driver],
                        )
                        .map_err(q("record a moved link"))?;
                        conn.execute(
                            "UPDATE net_links SET peer_netns = ?1, peer = ?2
                             WHERE peer_netns = 'host' AND peer = ?3 AND driver = ?4",
                            [&sb, &new, &old, &driver],
                        )
                        .map_err(q("record a moved link"))?;
                        Ok(())
                    })
                    .await
                    .map_err(from_store)?;
            }
            NetOp::SetAddress { link, address } => {
                let kind = self.check_owned(&link).await?;
                let rtnl = host.rtnl_for(&link.netns).await?;
                rtnl.add_address(&link.name, address.address, address.prefix)
                    .await
                    .map_err(from_netlink)?;
                if kind == LinkKind::Bridge && link.netns == Namespace::Host {
                    host.bridge_subnets
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(link.name.clone(), (self.driver.to_owned(), address));
                }
            }
            NetOp::SetMac { link, mac } => {
                self.check_owned(&link).await?;
                let rtnl = host.rtnl_for(&link.netns).await?;
                rtnl.set_mac(&link.name, mac).await.map_err(from_netlink)?;
            }
            NetOp::SetMtu { link, mtu } => {
                if !(68..=65535).contains(&mtu) {
                    return Err(invalid(format!("MTU {mtu} is out of range (68 to 65535)")));
                }
                self.check_owned(&link).await?;
                let rtnl = host.rtnl_for(&link.netns).await?;
                rtnl.set_mtu(&link.name, mtu).await.map_err(from_netlink)?;
            }
            NetOp::SetUp { link } => {
                self.check_owned(&link).await?;
                let rtnl = host.rtnl_for(&link.netns).await?;
                rtnl.set_up(&link.name).await.map_err(from_netlink)?;
            }
            NetOp::AddRoute { netns, route } => {
                match &netns {
                    Namespace::Host => {
                        let Some(device) = &route.device else {
                            return Err(denied(
                                "a route in the host namespace must name a device this driver owns",
                            ));
                        };
                        self.check_owned(&LinkName {
                            name: device.clone(),
                            netns: Namespace::Host,
                        })
                        .await?;
                    }
                    Namespace::Sandbox(s) => self.check_sandbox(s)?,
                }
                let (IpAddr::V4(dest), gateway) = (route.destination.address, route.gateway) else {
                    return Err(invalid("only IPv4 routes are supported"));
                };
                let gateway = match gateway {
                    None => None,
                    Some(IpAddr::V4(g)) => Some(g),
                    Some(IpAddr::V6(_)) => {
                        return Err(invalid("an IPv4 route needs an IPv4 gateway"));
                    }
                };
                let rtnl = host.rtnl_for(&netns).await?;
                rtnl.add_route(
                    (dest, route.destination.prefix),
                    gateway,
                    route.device.as_deref(),
                )
                .await
                .map_err(from_netlink)?;
            }
            NetOp::EnableMasquerade { subnet, bridge } => {
                if self
                    .check_owned(&LinkName {
                        name: bridge.clone(),
                        netns: Namespace::Host,
                    })
                    .await?
                    != LinkKind::Bridge
                {
                    return Err(invalid(format!("{bridge:?} is not a bridge")));
                }
                let path = if subnet.address.is_ipv4() {
                    "/proc/sys/net/ipv4/ip_forward"
                } else {
                    "/proc/sys/net/ipv6/conf/all/forwarding"
                };
                tokio::fs::write(path, b"1")
                    .await
                    .map_err(|e| internal(format!("enable IP forwarding: {e}")))?;
                self.add_rule(
                    Rule::Masquerade {
                        subnet: subnet.to_string(),
                        bridge,
                    },
                    true,
                )
                .await?;
            }
            NetOp::DisableMasquerade { subnet, bridge } => {
                self.add_rule(
                    Rule::Masquerade {
                        subnet: subnet.to_string(),
                        bridge,
                    },
                    false,
                )
                .await?;
            }
            NetOp::AddPortForward(f) => {
                self.check_forward(&f)?;
                self.add_rule(forward_rule(&f), true).await?;
            }
            NetOp::RemovePortForward(f) => {
                self.add_rule(forward_rule(&f), false).await?;
            }
            NetOp::SetSysctl { netns, key, value } => {
                self.set_sysctl(&netns, &key, &value).await?;
            }
            NetOp::DeleteLink { link } => {
                self.check_owned(&link).await?;
                let rtnl = host.rtnl_for(&link.netns).await?;
                let result = rtnl.delete(&link.name).await;
                let (netns, name) = (ns_key(&link.netns), link.name.clone());
                host.store
                    .run(move |conn| {
                        // A veth's peer goes with it.
                        let peer: Option<(Option<String>, Option<String>)> = conn
                            .query_row(
                                "SELECT peer_netns, peer FROM net_links WHERE netns = ?1 AND name = ?2",
                                [&netns, &name],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )
                            .optional()
                            .map_err(q("forget a link"))?;
                        if let Some((Some(pn), Some(p))) = peer {
                            conn.execute(
                                "DELETE FROM net_links WHERE netns = ?1 AND name = ?2",
                                [&pn, &p],
                            )
                            .map_err(q("forget a link"))?;
                        }
                        conn.execute(
                            "DELETE FROM net_links WHERE netns = ?1 AND name = ?2",
                            [&netns, &name],
                        )
                        .map_err(q("forget a link"))?;
                        Ok(())
                    })
                    .await
                    .map_err(from_store)?;
                if link.netns == Namespace::Host {
                    host.bridge_subnets
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&link.name);
                }
                result.map_err(from_netlink)?;
            }
            NetOp::ListLinks => return self.list_links().await.map(NetReply::Links),
        }
        Ok(NetReply::Done)
    }

    fn check_forward(&self, f: &Forward) -> Result<(), NetError> {
        let reserved = self.host.reserved.lock().unwrap_or_else(|p| p.into_inner());
        if reserved.get(&(f.tcp, f.host_port)).map(String::as_str) != Some(self.driver) {
            return Err(denied(format!(
                "host port {} was not reserved for this driver",
                f.host_port
            )));
        }
        drop(reserved);
        let subnets = self
            .host
            .bridge_subnets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let inside = subnets
            .values()
            .any(|(owner, c)| owner == self.driver && super::cidr_contains(c, f.container_ip));
        if !inside {
            return Err(denied(format!(
                "{} is not in a subnet of a bridge this driver owns",
                f.container_ip
            )));
        }
        Ok(())
    }

    async fn set_sysctl(&self, netns: &Namespace, key: &str, value: &str) -> Result<(), NetError> {
        if key.contains('/') || key.contains("..") || value.len() > 64 || value.contains('\n') {
            return Err(invalid(format!("bad sysctl {key:?}={value:?}")));
        }
        let parts: Vec<&str> = key.split('.').collect();
        let per_interface = parts.len() == 5
            && parts[0] == "net"
            && matches!(
                (parts[1], parts[2]),
                ("ipv4", "conf") | ("ipv6", "conf") | ("ipv4", "neigh")
            )
            && !matches!(parts[3], "all" | "default");
        let allowed = if per_interface {
            self.check_owned(&LinkName {
                name: parts[3].to_owned(),
                netns: netns.clone(),
            })
            .await
            .is_ok()
        } else {
            match netns {
                Namespace::Host => HOST_SYSCTLS.contains(&key),
                Namespace::Sandbox(s) => {
                    self.check_sandbox(s)?;
                    SANDBOX_SYSCTLS.contains(&key)
                }
            }
        };
        if !allowed {
            return Err(denied(format!(
                "sysctl {key} is not allowed for network drivers"
            )));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        match netns {
            Namespace::Host => tokio::fs::write(&path, value.as_bytes())
                .await
                .map_err(|e| internal(format!("write {key}: {e}"))),
            Namespace::Sandbox(s) => {
                let ns = self.host.netns_path(s);
                let value = value.to_owned();
                tokio::task::spawn_blocking(move || {
                    std::thread::spawn(move || -> std::io::Result<()> {
                        let file = std::fs::File::open(&ns)?;
                        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                        // /proc/sys/net is the view of the opening thread's namespace.
                        std::fs::write(path, value)
                    })
                    .join()
                    .map_err(|_| std::io::Error::other("sysctl thread panicked"))?
                })
                .await
                .map_err(|e| internal(e.to_string()))?
                .map_err(|e| internal(format!("write {key} in sandbox {s}: {e}")))
            }
        }
    }

    async fn list_links(&self) -> Result<Vec<OwnedLink>, NetError> {
        let driver = self.driver.to_owned();
        type Row = (String, String, String, Option<String>, Option<String>);
        let rows: Vec<Row> = self
            .host
            .store
            .run(move |conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT netns, name, kind, peer_netns, peer FROM net_links WHERE driver = ?1",
                    )
                    .map_err(q("list links"))?;
                stmt.query_map([&driver], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(q("list links"))?
                .collect::<Result<_, _>>()
                .map_err(q("list links"))
            })
            .await
            .map_err(from_store)?;
        let host_links = self.host.rtnl.links().await.map_err(from_netlink)?;
        let name_of = |index: u32| {
            host_links
                .iter()
                .find(|l| l.index == index)
                .map(|l| l.name.clone())
        };
        let ns_of = |key: &str| {
            if key == "host" {
                Namespace::Host
            } else {
                Namespace::Sandbox(key.to_owned())
            }
        };
        let mut out = Vec::new();
        for (netns, name, kind, peer_netns, peer) in rows {
            let (up, master) = if netns == "host" {
                match host_links.iter().find(|l| l.name == name) {
                    Some(l) => (l.up, l.master.and_then(name_of)),
                    None => continue,
                }
            } else if self.host.netns_path(&netns).exists() {
                (true, None)
            } else {
                continue;
            };
            out.push(OwnedLink {
                link: LinkName {
                    name,
                    netns: ns_of(&netns),
                },
                kind: if kind == "bridge" {
                    LinkKind::Bridge
                } else {
                    LinkKind::Veth
                },
                peer: match (peer_netns, peer) {
                    (Some(n), Some(p)) => Some(LinkName {
                        name: p,
                        netns: ns_of(&n),
                    }),
                    _ => None,
                },
                master,
                up,
            });
        }
        Ok(out)
    }
}

fn forward_rule(f: &Forward) -> Rule {
    Rule::Forward {
        tcp: f.tcp,
        host_ip: f.host_ip,
        host_port: f.host_port,
        container_ip: f.container_ip,
        container_port: f.container_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_isolates_bridges_and_masquerades_only_what_was_asked() {
        let mut rules = BTreeSet::new();
        rules.insert(Rule::Masquerade {
            subnet: "10.201.0.0/24".into(),
            bridge: "berthb1".into(),
        });
        rules.insert(Rule::Forward {
            tcp: true,
            host_ip: None,
            host_port: 8080,
            container_ip: "10.201.0.2".parse().unwrap(),
            container_port: 80,
        });
        let bridges: BTreeSet<String> = ["berthb1".to_owned(), "berthb2".to_owned()].into();
        let text = render("berth", &rules, &bridges);
        assert!(text.starts_with("table inet berth {}\ndelete table inet berth\n"));
        assert!(text.contains(
            "iifname { \"berthb1\", \"berthb2\" } oifname { \"berthb1\", \"berthb2\" } drop"
        ));
        assert!(text.contains("ip saddr 10.201.0.0/24 oifname != \"berthb1\" masquerade"));
        assert!(text.contains("fib daddr type local tcp dport 8080 dnat ip to 10.201.0.2:80"));
        assert!(text.contains("iifname \"berthb1\" accept"));
        assert!(!text.contains("iifname \"berthb2\" accept"), "{text}");
        // In the forward chain, the catch-all drops come after every accept.
        let forward = &text[..text.find("chain prerouting").unwrap()];
        let accept = forward.rfind("accept").unwrap();
        let drop = forward
            .rfind("oifname { \"berthb1\", \"berthb2\" } drop")
            .unwrap();
        assert!(drop > accept);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(valid_ifname("berthb1a2b3c4d"));
        assert!(!valid_ifname("berthb1a2b3c4d55"));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname(".."));
    }
}
