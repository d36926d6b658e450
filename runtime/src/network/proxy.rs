//! The userland proxy for published ports. Its socket on the host port does two jobs:
//! it reserves the port (a second `-p` on it fails with Docker's "port is already
//! allocated" before anything is made), and it serves connections to 127.0.0.1, which
//! nftables leaves alone (DNAT from loopback would need route_localnet=1). Traffic
//! from other hosts, namespaces and containers is DNAT'ed in the kernel and never
//! reaches this socket.

use super::{NetError, PortBinding, Proto};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How long an idle UDP "connection" keeps its upstream socket.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// A bound host port, before it serves anything.
pub enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Bound {
    /// The actual host port (for `-p 80`, the kernel's choice).
    pub fn port(&self) -> u16 {
        match self {
            Bound::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
            Bound::Udp(s) => s.local_addr().map(|a| a.port()).unwrap_or(0),
        }
    }
}

/// Binds the host side of `b`. Fails clearly when the port is taken.
pub async fn bind(b: &PortBinding) -> Result<Bound, NetError> {
    let ip: Ipv4Addr = if b.host_ip.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        b.host_ip
            .parse()
            .map_err(|_| NetError::BadAddr(b.host_ip.clone()))?
    };
    let addr = SocketAddr::from((ip, b.host_port));
    let err = |source| NetError::PortInUse {
        addr: addr.to_string(),
        source,
    };
    Ok(match b.proto {
        Proto::Tcp => Bound::Tcp(TcpListener::bind(addr).await.map_err(err)?),
        Proto::Udp => Bound::Udp(UdpSocket::bind(addr).await.map_err(err)?),
    })
}

/// Serves a bound port, relaying to `target`, until the returned task is aborted.
pub fn serve(bound: Bound, target: SocketAddr) -> JoinHandle<()> {
    match bound {
        Bound::Tcp(l) => tokio::spawn(serve_tcp(l, target)),
        Bound::Udp(s) => tokio::spawn(serve_udp(s, target)),
    }
}

async fn serve_tcp(l: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut out) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

async fn serve_udp(sock: UdpSocket, target: SocketAddr) {
    let sock = Arc::new(sock);
    let flows: Arc<tokio::sync::Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Default::default();
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let mut map = flows.lock().await;
        let up = match map.get(&peer) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind("0.0.0.0:0").await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                map.insert(peer, u.clone());
                let (u2, sock2, flows2) = (u.clone(), sock.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65535];
                    while let Ok(Ok(m)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut b)).await {
                        let _ = sock2.send_to(&b[..m], peer).await;
                    }
                    flows2.lock().await.remove(&peer);
                });
                u
            }
        };
        drop(map);
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_and_udp_relay_and_port_conflict() {
        let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = backend.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut c, _) = backend.accept().await.expect("accept");
            c.write_all(b"hello").await.expect("write");
        });
        let b = PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: 0,
            container_port: 1,
            proto: Proto::Tcp,
        };
        let bound = bind(&b).await.expect("bind");
        let port = bound.port();
        assert_ne!(port, 0);
        let taken = PortBinding {
            host_port: port,
            ..b.clone()
        };
        assert!(matches!(
            bind(&taken).await,
            Err(NetError::PortInUse { .. })
        ));
        let task = serve(bound, target);
        let mut c = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut s = String::new();
        c.read_to_string(&mut s).await.expect("read");
        assert_eq!(s, "hello");
        task.abort();

        let echo = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let target = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, p) = echo.recv_from(&mut buf).await.expect("recv");
            echo.send_to(&buf[..n], p).await.expect("send");
        });
        let bound = bind(&PortBinding {
            proto: Proto::Udp,
            ..b
        })
        .await
        .expect("bind udp");
        let port = bound.port();
        let task = serve(bound, target);
        let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        c.send_to(b"ping", ("127.0.0.1", port)).await.expect("send");
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
            .await
            .expect("timely")
            .expect("recv");
        assert_eq!(&buf[..n], b"ping");
        task.abort();
    }
}
