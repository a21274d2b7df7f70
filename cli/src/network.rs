//! `berth network ...`, `berth port`, and the `-p` syntax of `run`/`create`.

use anyhow::{Context as _, bail};
use berth_api::container::{ContainerClient, PortBinding};
use berth_api::jsonrpsee::ws_client::WsClient;
use berth_api::network::{NetworkClient, NetworkCreateRequest, NetworkListRequest};

use crate::output::{self, Format};
use crate::volume::{pairs, report};

/// `berth network` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create {
        /// Name.
        name: String,
        /// Network driver plugin.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// IPv4 subnet, e.g. 10.5.0.0/24 (default: from the driver's pool).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address in the subnet.
        #[arg(long)]
        gateway: Option<String>,
        /// Range of the subnet to allocate container addresses from.
        #[arg(long)]
        ip_range: Option<String>,
        /// No access to the outside (no NAT, no published ports).
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE.
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        /// Label KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Print only ids.
        #[arg(short, long)]
        quiet: bool,
        /// name=TEXT, id=PREFIX, driver=NAME, label=KEY[=VALUE], type=custom|builtin.
        #[arg(short, long)]
        filter: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show details of networks as JSON.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network no container is on.
    Prune {
        /// Do not ask for confirmation (berth never asks; accepted for docker parity).
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network.
    Connect {
        /// IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        /// More names for the container on the network.
        #[arg(long)]
        alias: Vec<String>,
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Network.
        network: String,
        /// Container.
        container: String,
    },
}

/// Runs a `berth network` command.
pub async fn network(client: &WsClient, command: NetworkCommand) -> anyhow::Result<u8> {
    match command {
        NetworkCommand::Create {
            name,
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            opts,
            label,
        } => {
            let request = NetworkCreateRequest {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                ip_range,
                internal,
                options: pairs("-o", &opts)?,
                labels: pairs("--label", &label)?,
            };
            match NetworkClient::create(client, request).await {
                Ok(n) => {
                    println!("{}", n.id);
                    Ok(0)
                }
                Err(e) => Ok(report(e)),
            }
        }
        NetworkCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let list =
                match NetworkClient::list(client, Some(NetworkListRequest { filters: filter }))
                    .await
                {
                    Ok(l) => l,
                    Err(e) => return Ok(report(e)),
                };
            if format == Format::Json {
                output::json(&list)?;
            } else if quiet {
                for n in &list {
                    println!("{}", &n.id[..12]);
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| {
                        vec![
                            n.id[..12].to_owned(),
                            n.name.clone(),
                            n.driver.clone(),
                            n.subnet.clone(),
                            if n.internal { "internal" } else { "" }.to_owned(),
                        ]
                    })
                    .collect();
                output::table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", ""], &rows);
            }
            Ok(0)
        }
        NetworkCommand::Inspect { names } => {
            let mut all = Vec::new();
            let mut code = 0;
            for name in names {
                match NetworkClient::inspect(client, name).await {
                    Ok(n) => all.push(n),
                    Err(e) => code = report(e),
                }
            }
            output::json(&all)?;
            Ok(code)
        }
        NetworkCommand::Rm { names } => {
            let mut code = 0;
            for name in names {
                match NetworkClient::remove(client, name.clone()).await {
                    Ok(()) => println!("{name}"),
                    Err(e) => code = report(e),
                }
            }
            Ok(code)
        }
        NetworkCommand::Prune { force: _ } => match NetworkClient::prune(client).await {
            Ok(report) => {
                if !report.networks_deleted.is_empty() {
                    println!("Deleted Networks:");
                    for n in &report.networks_deleted {
                        println!("{n}");
                    }
                }
                Ok(0)
            }
            Err(e) => Ok(report(e)),
        },
        NetworkCommand::Connect {
            ip,
            alias,
            network,
            container,
        } => match NetworkClient::connect(client, network, container, ip, Some(alias)).await {
            Ok(()) => Ok(0),
            Err(e) => Ok(report(e)),
        },
        NetworkCommand::Disconnect { network, container } => {
            match NetworkClient::disconnect(client, network, container).await {
                Ok(()) => Ok(0),
                Err(e) => Ok(report(e)),
            }
        }
    }
}

/// `berth port CONTAINER [PORT[/PROTO]]`.
pub async fn port(client: &WsClient, id: String, filter: Option<String>) -> anyhow::Result<u8> {
    let ports = match ContainerClient::port(client, id.clone()).await {
        Ok(p) => p,
        Err(e) => return Ok(report(e)),
    };
    let wanted = match &filter {
        Some(f) => {
            let (port, proto) = f.split_once('/').unwrap_or((f, "tcp"));
            Some((
                port.parse::<u16>()
                    .with_context(|| format!("invalid port {f:?}"))?,
                proto.to_owned(),
            ))
        }
        None => None,
    };
    let mut shown = 0;
    for p in &ports {
        if let Some((port, proto)) = &wanted
            && (p.container_port != *port || &p.protocol != proto)
        {
            continue;
        }
        let host = format!(
            "{}:{}",
            p.host_ip.as_deref().unwrap_or("0.0.0.0"),
            p.host_port.unwrap_or(0)
        );
        if wanted.is_some() {
            println!("{host}");
        } else {
            println!("{}/{} -> {host}", p.container_port, p.protocol);
        }
        shown += 1;
    }
    if let Some(f) = filter
        && shown == 0
    {
        bail!("no public port {f} published for container {id}");
    }
    Ok(0)
}

/// docker's `-p`: `[IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]`, one entry per port.
pub fn parse_publish(spec: &str) -> anyhow::Result<Vec<PortBinding>> {
    let bad = || format!("invalid -p {spec:?}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]");
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) if p == "tcp" || p == "udp" => (r, p.to_owned()),
        Some(_) => bail!(bad()),
        None => (spec, "tcp".to_owned()),
    };
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (host_ip, host_ports, container_ports) = match parts.as_slice() {
        [c] => (None, None, *c),
        [c, h] => (None, Some(*h), *c),
        [c, h, ip] => (Some(*ip), Some(*h).filter(|h| !h.is_empty()), *c),
        _ => bail!(bad()),
    };
    let range = |s: &str| -> anyhow::Result<(u16, u16)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.parse().with_context(bad)?;
        let b: u16 = b.parse().with_context(bad)?;
        if a == 0 || b < a {
            bail!(bad());
        }
        Ok((a, b))
    };
    let (c0, c1) = range(container_ports)?;
    let hosts = host_ports.map(range).transpose()?;
    if let Some((h0, h1)) = hosts
        && h1 - h0 != c1 - c0
    {
        bail!("invalid -p {spec:?}: the host and container ranges differ in size");
    }
    let host_ip = host_ip
        .map(|ip| ip.trim_start_matches('[').trim_end_matches(']'))
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned);
    if let Some(ip) = &host_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        bail!("invalid -p {spec:?}: {ip:?} is not an IP address");
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, c)| PortBinding {
            protocol: protocol.clone(),
            host_ip: host_ip.clone(),
            host_port: hosts.map(|(h0, _)| h0 + i as u16),
            container_port: c,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].host_port, p[0].container_port), (Some(8080), 80));
        assert_eq!(p[0].protocol, "tcp");
        let p = parse_publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p[0].protocol, "udp");
        let p = parse_publish("80").unwrap();
        assert_eq!((p[0].host_port, p[0].container_port), (None, 80));
        let p = parse_publish("127.0.0.1::80").unwrap();
        assert_eq!(
            (p[0].host_port, p[0].host_ip.as_deref()),
            (None, Some("127.0.0.1"))
        );
        let p = parse_publish("9000-9002:7000-7002").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[2].host_port, p[2].container_port), (Some(9002), 7002));
        for bad in ["", "x", "80/sctp", "9000-9001:80", "0", "1:2:3:4"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
