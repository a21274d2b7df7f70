//! Kernel network objects through rtnetlink: links, addresses and routes, in the host's
//! namespace or in a sandbox's. A netlink socket belongs to the namespace it was opened
//! in, so a sandbox's socket is opened by a short-lived thread that first enters that
//! namespace; no tokio worker ever changes namespace.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// What a netlink operation ran into.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The link, namespace or address does not exist.
    #[error("{0}: no such object")]
    NotFound(String),
    /// It exists already.
    #[error("{0}: it exists already")]
    Exists(String),
    /// Anything else the kernel said.
    #[error("{what}: {message}")]
    Other {
        /// The operation.
        what: String,
        /// The kernel's or the socket's message.
        message: String,
    },
}

fn classify(what: String, e: rtnetlink::Error) -> NetlinkError {
    if let rtnetlink::Error::NetlinkError(m) = &e {
        match m.code.map(|c| -c.get()) {
            Some(libc::EEXIST) => return NetlinkError::Exists(what),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH) => return NetlinkError::NotFound(what),
            Some(code) => {
                return NetlinkError::Other {
                    what,
                    message: std::io::Error::from_raw_os_error(code).to_string(),
                };
            }
            None => {}
        }
    }
    NetlinkError::Other {
        what,
        message: e.to_string(),
    }
}

type R<T> = std::result::Result<T, NetlinkError>;

/// A route netlink connection bound to one namespace.
#[derive(Debug, Clone)]
pub struct Rtnl {
    handle: rtnetlink::Handle,
}

/// A link as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// The index of its bridge, if enslaved.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
}

fn state_of(m: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: m.header.index,
        name: String::new(),
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => state.name = n.clone(),
            LinkAttribute::Controller(c) => state.master = Some(*c),
            _ => {}
        }
    }
    state
}

impl Rtnl {
    /// A connection in berthd's own namespace (call inside the runtime).
    pub fn host() -> std::io::Result<Rtnl> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Rtnl { handle })
    }

    /// A connection inside the namespace bound at `netns`.
    pub async fn in_netns(netns: &Path) -> std::io::Result<Rtnl> {
        let runtime = tokio::runtime::Handle::current();
        let path: PathBuf = netns.to_owned();
        let made = tokio::task::spawn_blocking(move || {
            // A thread of its own: it enters the namespace, opens the socket and ends, so
            // no pooled thread is ever left in a container's namespace.
            std::thread::spawn(move || -> std::io::Result<_> {
                let _runtime = runtime.enter();
                let file = std::fs::File::options()
                    .read(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let (connection, handle, _) = rtnetlink::new_connection()?;
                Ok((connection, handle))
            })
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
        })
        .await
        .map_err(std::io::Error::other)??;
        let (connection, handle) = made;
        tokio::spawn(connection);
        Ok(Rtnl { handle })
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> R<Option<LinkState>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(m) => Ok(m.as_ref().map(state_of)),
            Err(e) => match classify(format!("look up link {name}"), e) {
                NetlinkError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> R<Vec<LinkState>> {
        let stream = self.handle.link().get().execute();
        let all: Vec<LinkMessage> = stream
            .try_collect()
            .await
            .map_err(|e| classify("list links".into(), e))?;
        Ok(all.iter().map(state_of).collect())
    }

    async fn index(&self, name: &str) -> R<u32> {
        self.link(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| NetlinkError::NotFound(format!("link {name}")))
    }

    /// Creates a bridge.
    pub async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> R<()> {
        let mut b = LinkBridge::new(name);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| classify(format!("create bridge {name}"), e))
    }

    /// Creates a veth pair.
    pub async fn create_veth(&self, name: &str, peer: &str, mtu: Option<u32>) -> R<()> {
        let mut v = LinkVeth::new(name, peer);
        if let Some(m) = mtu {
            v = v.mtu(m);
        }
        self.handle
            .link()
            .add(v.build())
            .execute()
            .await
            .map_err(|e| classify(format!("create veth pair {name}/{peer}"), e))?;
        if let Some(m) = mtu {
            self.set_mtu(peer, m).await?;
        }
        Ok(())
    }

    async fn set(&self, what: String, m: LinkMessage) -> R<()> {
        self.handle
            .link()
            .set(m)
            .execute()
            .await
            .map_err(|e| classify(what, e))
    }

    /// Enslaves `name` to `bridge`.
    pub async fn set_master(&self, name: &str, bridge: &str) -> R<()> {
        let index = self.index(name).await?;
        let master = self.index(bridge).await?;
        self.set(
            format!("attach {name} to {bridge}"),
            LinkUnspec::new_with_index(index).controller(master).build(),
        )
        .await
    }

    /// Moves `name` into the namespace bound at `netns`.
    pub async fn move_to(&self, name: &str, netns: &Path) -> R<()> {
        let index = self.index(name).await?;
        let file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(netns)
            .map_err(|e| NetlinkError::Other {
                what: format!("open namespace {}", netns.display()),
                message: e.to_string(),
            })?;
        self.set(
            format!("move {name} into a sandbox"),
            LinkUnspec::new_with_index(index)
                .setns_by_fd(file.as_raw_fd())
                .build(),
        )
        .await
    }

    /// Renames a (down) link.
    pub async fn rename(&self, name: &str, new_name: &str) -> R<()> {
        let index = self.index(name).await?;
        self.set(
            format!("rename {name} to {new_name}"),
            LinkUnspec::new_with_index(index)
                .name(new_name.to_owned())
                .build(),
        )
        .await
    }

    /// Adds an address; one already present is fine.
    pub async fn add_address(&self, name: &str, address: IpAddr, prefix: u8) -> R<()> {
        let index = self.index(name).await?;
        match self
            .handle
            .address()
            .add(index, address, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match classify(format!("add {address}/{prefix} to {name}"), e) {
                NetlinkError::Exists(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Sets the MAC address.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> R<()> {
        let index = self.index(name).await?;
        self.set(
            format!("set the MAC address of {name}"),
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .await
    }

    /// Sets the MTU.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> R<()> {
        let index = self.index(name).await?;
        self.set(
            format!("set the MTU of {name}"),
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
        )
        .await
    }

    /// Brings a link up.
    pub async fn set_up(&self, name: &str) -> R<()> {
        let index = self.index(name).await?;
        self.set(
            format!("bring {name} up"),
            LinkUnspec::new_with_index(index).up().build(),
        )
        .await
    }

    /// Adds an IPv4 route; an identical one already present is fine.
    pub async fn add_route(
        &self,
        destination: (std::net::Ipv4Addr, u8),
        gateway: Option<std::net::Ipv4Addr>,
        device: Option<&str>,
    ) -> R<()> {
        let mut route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(destination.0, destination.1);
        if let Some(g) = gateway {
            route = route.gateway(g);
        }
        if let Some(d) = device {
            route = route.output_interface(self.index(d).await?);
        }
        match self.handle.route().add(route.build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) => match classify(
                format!("add a route to {}/{}", destination.0, destination.1),
                e,
            ) {
                NetlinkError::Exists(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Deletes a link (a veth's peer goes with it).
    pub async fn delete(&self, name: &str) -> R<()> {
        let index = self.index(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| classify(format!("delete link {name}"), e))
    }
}

use std::os::unix::fs::OpenOptionsExt;
