//! Published ports: a container's (`-p`), read back for `ps` and `port`, and a
//! service's on this node (kernel DNAT over the backends, a loopback TCP proxy).

use super::*;

impl Networks {
    /// Publishes (or updates) a service port with these backends; an empty list
    /// unpublishes it. Connections spread round-robin over the backends.
    pub async fn set_service_port(
        &self,
        service: &str,
        proto: Proto,
        port: u16,
        backends: Vec<(Ipv4Addr, u16)>,
    ) -> Result<()> {
        let key = format!("{service}/{proto}/{port}");
        let mut inner = self.inner.lock().await;
        if backends.is_empty() {
            if let Some(p) = inner.services.remove(&key) {
                if let Some(h) = p.proxy {
                    h.abort();
                }
                self.save_dataplane_locked(&inner);
                self.refresh_locked(&mut inner)?;
            }
            return Ok(());
        }
        let fw = nft::FwService {
            proto,
            port,
            backends,
        };
        if let Some(existing) = inner.services.get_mut(&key) {
            if existing.fw == fw {
                return Ok(());
            }
            if let Ok(mut t) = existing.targets.write() {
                *t = ServicePort::targets(&fw);
            }
            existing.fw = fw;
        } else {
            let port = ServicePort::open(fw).await;
            inner.services.insert(key, port);
        }
        self.save_dataplane_locked(&inner);
        self.refresh_locked(&mut inner)
    }

    /// Unpublishes every service port whose key is not in `keep`.
    pub async fn retain_service_ports(&self, keep: &HashSet<String>) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let gone: Vec<String> = inner
            .services
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        for k in gone {
            if let Some(p) = inner.services.remove(&k) {
                if let Some(h) = p.proxy {
                    h.abort();
                }
            }
        }
        self.save_dataplane_locked(&inner);
        self.refresh_locked(&mut inner)
    }

    /// The published ports of a running container.
    pub async fn ports(&self, id: &str) -> Vec<PortBinding> {
        let inner = self.inner.lock().await;
        inner
            .sandboxes
            .get(id)
            .map(|s| s.ports.iter().map(|p| p.binding.clone()).collect())
            .unwrap_or_default()
    }

    /// Published ports of a running container, read from its sandbox file (no lock;
    /// for `ps`, which must not wait behind a network change).
    pub fn ports_now(&self, id: &str) -> Vec<PortBinding> {
        fsutil::read_json::<Sandbox>(&self.sandbox_file(id))
            .ok()
            .flatten()
            .map(|s| s.ports.into_iter().map(|p| p.binding).collect())
            .unwrap_or_default()
    }
}

/// Serves loopback connections to a service port, rotating over its current targets.
pub(super) async fn serve_round_robin(
    l: tokio::net::TcpListener,
    targets: Arc<RwLock<Vec<SocketAddr>>>,
) {
    let mut next = 0usize;
    loop {
        let Ok((mut inbound, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let target = targets.read().ok().and_then(|t| {
            if t.is_empty() {
                None
            } else {
                Some(t[next % t.len()])
            }
        });
        next = next.wrapping_add(1);
        let Some(target) = target else { continue };
        tokio::spawn(async move {
            if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

/// Docker's PORTS column: `0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp`.
pub fn ports_line(ports: &[PortBinding]) -> String {
    ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.proto)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
