//! Published ports on the host side: berthd binds each published (address, port), which
//! reserves it against every other program and driver, and relays what arrives on it to
//! the container. DNAT in berth's nftables table carries traffic from other hosts and from
//! containers; this relay carries what DNAT cannot reach, connections made on the host
//! itself (127.0.0.1 and the host's own addresses).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// A bound, relaying published port; unbinds when dropped.
#[derive(Debug)]
pub struct Published {
    /// The bound port (resolved if 0 was asked).
    pub host_port: u16,
    task: Option<JoinHandle<()>>,
}

impl Drop for Published {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Binds `host_ip:host_port` (`0` picks a free port) and relays it to `target`.
pub async fn publish(
    tcp: bool,
    host_ip: Option<IpAddr>,
    host_port: u16,
    target: SocketAddr,
) -> std::io::Result<Published> {
    let ip = host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let bind = SocketAddr::new(ip, host_port);
    if tcp {
        let listener = TcpListener::bind(bind).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(relay_tcp(listener, target));
        Ok(Published {
            host_port: port,
            task: Some(task),
        })
    } else {
        let socket = UdpSocket::bind(bind).await?;
        let port = socket.local_addr()?.port();
        let task = tokio::spawn(relay_udp(Arc::new(socket), target));
        Ok(Published {
            host_port: port,
            task: Some(task),
        })
    }
}

async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

/// How long a UDP flow is kept without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

async fn relay_udp(socket: Arc<UdpSocket>, target: SocketAddr) {
    // One upstream socket per client address, so replies find their way back.
    let flows: Arc<tokio::sync::Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let upstream = {
            let mut map = flows.lock().await;
            if let Some(u) = map.get(&client) {
                Arc::clone(u)
            } else {
                let local = if target.is_ipv4() {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
                } else {
                    SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
                };
                let Ok(u) = UdpSocket::bind(local).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                map.insert(client, Arc::clone(&u));
                let (back, up, flows) = (Arc::clone(&socket), Arc::clone(&u), Arc::clone(&flows));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up.recv(&mut buf)).await {
                        let _ = back.send_to(&buf[..n], client).await;
                    }
                    flows.lock().await.remove(&client);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}
