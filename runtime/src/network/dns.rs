//! The embedded DNS server of user-defined networks.
//!
//! One UDP socket and one TCP listener per user network, bound to the network's gateway
//! address on the host side of the bridge (so containers reach it with no extra rules,
//! the way Podman's aardvark-dns does). An answer too large for a UDP datagram (512
//! bytes, or the client's EDNS payload size) goes out truncated (TC set), and the
//! client's resolver asks again over TCP, as RFC 7766 expects. Container names, aliases and short IDs on that network
//! answer with their addresses; everything else is relayed unchanged to the upstream
//! resolvers (the container's `--dns`, else the agent's `dns:` setting, else the
//! host's resolv.conf; loopback upstreams work since the server runs on the host).

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How a query arrived, which decides how large an answer may be and how a forwarded
/// query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The largest UDP answer for a client that sent no EDNS (RFC 1035).
const UDP_MAX: usize = 512;
/// Idle TCP connections are closed after this long (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// TTL of local answers (Docker's).
const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Names per network, and upstreams; shared between the agent and the servers.
#[derive(Debug, Default)]
pub struct DnsTable {
    /// network ID → lower-case name → addresses.
    pub names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// Default upstream resolvers.
    pub upstreams: Vec<SocketAddr>,
    /// Per container address: its own `--dns` servers.
    pub per_source: HashMap<Ipv4Addr, Vec<SocketAddr>>,
    /// Per container address: every network its container is on (Docker resolves
    /// names of all of a container's networks, whichever server is asked).
    pub source_networks: HashMap<Ipv4Addr, Vec<String>>,
}

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer from the table (possibly with no records, for a local name and a type we lack).
    Local(Vec<Ipv4Addr>),
    Forward(Vec<SocketAddr>),
}

impl DnsTable {
    /// Decides how to answer `name` (`type`) asked by `src` on `network`.
    pub fn decide(&self, network: &str, name: &str, rtype: RecordType, src: Ipv4Addr) -> Decision {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let own = [network.to_string()];
        let networks = self
            .source_networks
            .get(&src)
            .map(Vec::as_slice)
            .unwrap_or(&own);
        let addrs: Vec<Ipv4Addr> = networks
            .iter()
            .filter_map(|n| self.names.get(n).and_then(|m| m.get(&key)))
            .flatten()
            .copied()
            .collect();
        if !addrs.is_empty() {
            return Decision::Local(if rtype == RecordType::A {
                addrs
            } else {
                vec![]
            });
        }
        Decision::Forward(
            self.per_source
                .get(&src)
                .cloned()
                .unwrap_or_else(|| self.upstreams.clone()),
        )
    }
}

/// Parses an upstream resolver address (`IP` or `IP:PORT`).
pub fn upstream_addr(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Builds the answer to `query` for a local decision.
pub fn local_answer(query: &Message, addrs: &[Ipv4Addr]) -> Message {
    let mut m = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    m.metadata.response_code = ResponseCode::NoError;
    for q in &query.queries {
        m.add_query(q.clone());
        for a in addrs {
            m.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*a))));
        }
    }
    m
}

fn error_answer(query: &Message, code: ResponseCode) -> Message {
    let mut m = local_answer(query, &[]);
    m.metadata.authoritative = false;
    m.metadata.response_code = code;
    m
}

/// Encodes `answer` for `transport`: over UDP, one that does not fit the client's
/// payload size goes out as its truncated header and question (TC set).
fn encode(query: &Message, answer: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = answer.to_vec().ok()?;
    let limit = query
        .edns
        .as_ref()
        .map(|e| usize::from(e.max_payload()).max(UDP_MAX))
        .unwrap_or(UDP_MAX);
    if transport == Transport::Udp && bytes.len() > limit {
        let mut t = answer.truncate();
        t.queries = answer.queries.clone();
        return t.to_vec().ok();
    }
    Some(bytes)
}

async fn forward(packet: &[u8], upstreams: &[SocketAddr], transport: Transport) -> Option<Vec<u8>> {
    for up in upstreams {
        if transport == Transport::Tcp {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(packet, *up)).await {
                Ok(Ok(r)) => return Some(r),
                _ => {
                    tracing::debug!(upstream = %up, "upstream resolver did not answer over TCP");
                    continue;
                }
            }
        }
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .ok()?;
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(packet).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
        tracing::debug!(upstream = %up, "upstream resolver did not answer");
    }
    None
}

/// One query to an upstream over TCP (two-byte length prefix each way).
async fn forward_tcp(packet: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    write_tcp(&mut s, packet).await?;
    read_tcp(&mut s).await
}

async fn write_tcp(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large"))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

async fn read_tcp(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Answers one packet; `None` when it is not a query worth answering.
pub async fn handle(
    table: &RwLock<DnsTable>,
    network: &str,
    packet: &[u8],
    src: Ipv4Addr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    if query.metadata.message_type != MessageType::Query || query.metadata.op_code != OpCode::Query
    {
        return None;
    }
    let decision = {
        let t = table.read().ok()?;
        match query.queries.first() {
            Some(q) => t.decide(network, &q.name().to_ascii(), q.query_type(), src),
            None => return error_answer(&query, ResponseCode::FormErr).to_vec().ok(),
        }
    };
    match decision {
        Decision::Local(addrs) => encode(&query, &local_answer(&query, &addrs), transport),
        Decision::Forward(ups) => match forward(packet, &ups, transport).await {
            Some(r) => Some(r),
            None => error_answer(&query, ResponseCode::ServFail).to_vec().ok(),
        },
    }
}

/// Serves one network over UDP and, when given, TCP, until the task is aborted.
pub async fn serve(
    sock: UdpSocket,
    tcp: Option<TcpListener>,
    table: Arc<RwLock<DnsTable>>,
    network: String,
) {
    if let Some(l) = tcp {
        tokio::join!(
            serve_udp(sock, table.clone(), network.clone()),
            serve_tcp(l, table, network)
        );
    } else {
        serve_udp(sock, table, network).await;
    }
}

async fn serve_tcp(l: TcpListener, table: Arc<RwLock<DnsTable>>, network: String) {
    loop {
        let (mut s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "dns accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let std::net::IpAddr::V4(src) = peer.ip() else {
            continue;
        };
        let (table, network) = (table.clone(), network.clone());
        tokio::spawn(async move {
            // Several queries may share one connection (RFC 7766 pipelining, in order).
            while let Ok(Ok(packet)) = tokio::time::timeout(TCP_IDLE, read_tcp(&mut s)).await {
                let Some(reply) = handle(&table, &network, &packet, src, Transport::Tcp).await
                else {
                    return;
                };
                if write_tcp(&mut s, &reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn serve_udp(sock: UdpSocket, table: Arc<RwLock<DnsTable>>, network: String) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "dns receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let std::net::IpAddr::V4(src) = peer.ip() else {
            continue;
        };
        let packet = buf[..n].to_vec();
        let (sock, table, network) = (sock.clone(), table.clone(), network.clone());
        tokio::spawn(async move {
            if let Some(reply) = handle(&table, &network, &packet, src, Transport::Udp).await {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).expect("name"), t));
        m.to_vec().expect("encode")
    }

    fn table(up: SocketAddr) -> RwLock<DnsTable> {
        let mut t = DnsTable {
            upstreams: vec![up],
            ..Default::default()
        };
        t.names
            .entry("n1".into())
            .or_default()
            .insert("web".into(), vec!["10.1.0.2".parse().expect("ip")]);
        RwLock::new(t)
    }

    #[tokio::test]
    async fn local_names_answer_on_their_network_only() {
        let t = table("127.0.0.1:9".parse().expect("addr"));
        let r = handle(
            &t,
            "n1",
            &query("WEB.", RecordType::A),
            "10.1.0.3".parse().expect("ip"),
            Transport::Udp,
        )
        .await
        .expect("reply");
        let m = Message::from_vec(&r).expect("parse");
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            &m.answers[0].data,
            &RData::A(A("10.1.0.2".parse().expect("ip")))
        );
        let r = handle(
            &t,
            "n1",
            &query("web.", RecordType::AAAA),
            "10.1.0.3".parse().expect("ip"),
            Transport::Udp,
        )
        .await
        .expect("reply");
        let m = Message::from_vec(&r).expect("parse");
        assert_eq!(
            (m.answers.len(), m.metadata.response_code),
            (0, ResponseCode::NoError)
        );
        assert!(matches!(
            t.read().expect("lock").decide(
                "n2",
                "web.",
                RecordType::A,
                "10.2.0.3".parse().expect("ip")
            ),
            Decision::Forward(_)
        ));
        // A container on n1 and n2 asking n2's server still sees n1's names.
        t.write().expect("lock").source_networks.insert(
            "10.2.0.3".parse().expect("ip"),
            vec!["n2".into(), "n1".into()],
        );
        assert_eq!(
            t.read().expect("lock").decide(
                "n2",
                "web.",
                RecordType::A,
                "10.2.0.3".parse().expect("ip")
            ),
            Decision::Local(vec!["10.1.0.2".parse().expect("ip")])
        );
    }

    #[tokio::test]
    async fn other_names_are_forwarded_and_relayed() {
        let up = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let up_addr = up.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            let (n, peer) = up.recv_from(&mut buf).await.expect("recv");
            let q = Message::from_vec(&buf[..n]).expect("parse");
            let a = local_answer(&q, &["192.0.2.77".parse().expect("ip")]);
            up.send_to(&a.to_vec().expect("enc"), peer)
                .await
                .expect("send");
        });
        let t = table(up_addr);
        let r = handle(
            &t,
            "n1",
            &query("example.test.", RecordType::A),
            "10.1.0.3".parse().expect("ip"),
            Transport::Udp,
        )
        .await
        .expect("reply");
        let m = Message::from_vec(&r).expect("parse");
        assert_eq!(
            &m.answers[0].data,
            &RData::A(A("192.0.2.77".parse().expect("ip")))
        );
    }

    #[tokio::test]
    async fn dead_upstream_is_servfail() {
        let dead = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let t = table(dead.local_addr().expect("addr"));
        drop(dead);
        let r = handle(
            &t,
            "n1",
            &query("x.test.", RecordType::A),
            "10.1.0.3".parse().expect("ip"),
            Transport::Udp,
        )
        .await
        .expect("reply");
        assert_eq!(
            Message::from_vec(&r).expect("parse").metadata.response_code,
            ResponseCode::ServFail
        );
        assert_eq!(
            upstream_addr("9.9.9.9"),
            Some("9.9.9.9:53".parse().expect("a"))
        );
        assert_eq!(
            upstream_addr("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().expect("a"))
        );
    }

    /// A name with more addresses than a 512-byte datagram holds: UDP answers truncated
    /// (TC set, no records), TCP answers whole, through the real sockets.
    #[tokio::test]
    async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
        let mut t = DnsTable::default();
        let many: Vec<Ipv4Addr> = (1..=60).map(|i| Ipv4Addr::new(10, 1, 1, i)).collect();
        t.names
            .entry("n1".into())
            .or_default()
            .insert("big".into(), many.clone());
        let table = Arc::new(RwLock::new(t));
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind(addr).await.expect("tcp on the same port");
        let server = tokio::spawn(serve(udp, Some(tcp), table, "n1".into()));

        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client
            .send_to(&query("big.", RecordType::A), addr)
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("udp answer in time")
            .expect("recv");
        assert!(n <= UDP_MAX, "{n} bytes over UDP");
        let m = Message::from_vec(&buf[..n]).expect("parse");
        assert!(m.metadata.truncation, "TC bit set");
        assert!(m.answers.is_empty());

        let mut s = TcpStream::connect(addr).await.expect("tcp connect");
        write_tcp(&mut s, &query("big.", RecordType::A))
            .await
            .expect("write");
        let r = tokio::time::timeout(Duration::from_secs(5), read_tcp(&mut s))
            .await
            .expect("tcp answer in time")
            .expect("read");
        let m = Message::from_vec(&r).expect("parse");
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), many.len());
        // A second query on the same connection is answered too.
        write_tcp(&mut s, &query("big.", RecordType::AAAA))
            .await
            .expect("write");
        let m = Message::from_vec(&read_tcp(&mut s).await.expect("read")).expect("parse");
        assert_eq!(m.metadata.id, 4242);
        server.abort();
    }
}
