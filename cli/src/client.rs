//! Connecting to berthd: `unix:///path` or `tcp://host:port`, one WebSocket carrying every
//! call and subscription of a command.

use anyhow::{Context as _, bail};
use berth_api::jsonrpsee::ws_client::{WsClient, WsClientBuilder};

/// Default daemon address, as berthd's default socket.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berthd.sock";

/// Where berthd is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A Unix socket path.
    Unix(std::path::PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
}

impl Host {
    /// Parses `unix:///path`, `tcp://host:port`, or a bare absolute socket path.
    pub fn parse(s: &str) -> anyhow::Result<Host> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                bail!(
                    "invalid host {s:?}: unix:// needs an absolute path (unix:///run/berth/berthd.sock)"
                );
            }
            Ok(Host::Unix(path.into()))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                bail!("invalid host {s:?}: expected tcp://HOST:PORT");
            }
            Ok(Host::Tcp(addr.to_owned()))
        } else if s.starts_with('/') {
            Ok(Host::Unix(s.into()))
        } else {
            bail!("invalid host {s:?}: expected unix:///path or tcp://host:port")
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Opens the WebSocket session.
pub async fn connect(host: &Host) -> anyhow::Result<WsClient> {
    let unreachable = || format!("cannot connect to berthd at {host}: is it running?");
    let builder = WsClientBuilder::default()
        .max_request_size(u32::MAX)
        .max_response_size(u32::MAX)
        .request_timeout(std::time::Duration::from_secs(24 * 3600));
    match host {
        Host::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(unreachable)?;
            builder
                .build_with_stream("ws://localhost/", stream)
                .await
                .with_context(unreachable)
        }
        Host::Tcp(addr) => builder
            .build(format!("ws://{addr}/"))
            .await
            .with_context(unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts() {
        assert_eq!(
            Host::parse("unix:///run/b.sock").unwrap(),
            Host::Unix("/run/b.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2375").unwrap(),
            Host::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            Host::parse("/x.sock").unwrap(),
            Host::Unix("/x.sock".into())
        );
        for bad in ["unix://rel", "tcp://nohost", "tcp://:1", "http://x:1", "x"] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Host::parse(DEFAULT_HOST).unwrap().to_string(), DEFAULT_HOST);
    }
}
