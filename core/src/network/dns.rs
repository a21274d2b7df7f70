//! The embedded name server of user-defined networks: berthd answers on each such
//! network's gateway address (port 53, UDP) for the names and aliases of the containers on
//! it, and forwards every other question to the host's own name servers, which berthd can
//! reach even when they are loopback addresses (systemd-resolved) that containers cannot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Names on one network, lower case, without the trailing dot.
type Names = Arc<RwLock<HashMap<String, Vec<Ipv4Addr>>>>;

#[derive(Debug)]
struct Served {
    names: Names,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The name servers of every user-defined network, by network id.
#[derive(Debug, Default)]
pub struct Resolvers {
    served: Mutex<HashMap<String, Served>>,
}

fn table(entries: Vec<(String, IpAddr)>) -> HashMap<String, Vec<Ipv4Addr>> {
    let mut map: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    for (name, ip) in entries {
        if let IpAddr::V4(v4) = ip {
            let list = map.entry(name.to_ascii_lowercase()).or_default();
            if !list.contains(&v4) {
                list.push(v4);
            }
        }
    }
    map
}

impl Resolvers {
    /// Starts answering on `gateway:53` for `entries` (kept if already serving).
    pub async fn serve(&self, network_id: &str, gateway: Ipv4Addr, entries: Vec<(String, IpAddr)>) {
        if let Some(s) = self
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(network_id)
        {
            *s.names.write().unwrap_or_else(|p| p.into_inner()) = table(entries);
            return;
        }
        let socket = match UdpSocket::bind(SocketAddr::new(IpAddr::V4(gateway), 53)).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(%gateway, "cannot serve DNS for a network: {e}");
                return;
            }
        };
        let names: Names = Arc::new(RwLock::new(table(entries)));
        let task = tokio::spawn(answer(socket, Arc::clone(&names)));
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(network_id.to_owned(), Served { names, task });
    }

    /// Replaces the names of a network being served.
    pub fn update(&self, network_id: &str, entries: Vec<(String, IpAddr)>) {
        if let Some(s) = self
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(network_id)
        {
            *s.names.write().unwrap_or_else(|p| p.into_inner()) = table(entries);
        }
    }

    /// Stops serving a network.
    pub fn stop(&self, network_id: &str) {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(network_id);
    }
}

fn upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

async fn answer(socket: Arc<UdpSocket>, names: Names) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (socket, names) = (Arc::clone(&socket), Arc::clone(&names));
        tokio::spawn(async move {
            if let Some(reply) = respond(&query, &names).await {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

/// The reply to one query: from the table, or from the host's name servers.
async fn respond(query: &[u8], names: &Names) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let question = request.queries.first()?.clone();
    let name = question
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let known = names
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .cloned();
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    if let Some(addresses) = known {
        reply.metadata.authoritative = true;
        if question.query_type() == RecordType::A {
            for ip in addresses {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    600,
                    RData::A(A(ip)),
                ));
            }
        }
        // Other types of a known name: no data, not "no such name".
        return reply.to_vec().ok();
    }
    if let Some(answer) = forward(query).await {
        return Some(answer);
    }
    reply.metadata.response_code = ResponseCode::ServFail;
    reply.to_vec().ok()
}

async fn forward(query: &[u8]) -> Option<Vec<u8>> {
    for upstream in upstreams() {
        let local = if upstream.is_ipv4() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        } else {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
        };
        let Ok(socket) = UdpSocket::bind(local).await else {
            continue;
        };
        if socket.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    #[tokio::test]
    async fn known_names_are_answered_from_the_table() {
        let names: Names = Arc::new(RwLock::new(table(vec![
            ("Web".into(), "10.5.0.2".parse().unwrap()),
            ("api".into(), "10.5.0.2".parse().unwrap()),
        ])));
        let mut q = Message::query();
        q.metadata.id = 7;
        q.add_query(Query::query(
            Name::from_ascii("web.").unwrap(),
            RecordType::A,
        ));
        let reply =
            Message::from_vec(&respond(&q.to_vec().unwrap(), &names).await.unwrap()).unwrap();
        assert_eq!(reply.metadata.id, 7);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A(Ipv4Addr::new(10, 5, 0, 2)))
        );
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("api").unwrap(),
            RecordType::AAAA,
        ));
        let reply =
            Message::from_vec(&respond(&q.to_vec().unwrap(), &names).await.unwrap()).unwrap();
        assert!(reply.answers.is_empty());
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    }
}
