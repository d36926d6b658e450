//! This node's part of the cluster's overlay networks, driven by the executor from the
//! controller's [`OverlayView`]: the bridge + VXLAN device of every network the node
//! takes part in, forwarding entries for every remote endpoint, the names the embedded
//! DNS answers cluster-wide, and the virtual IPs balanced here.

use super::{link, net_err, vxlan, Ipam, NetState, Network, Networks, OverlayInfo, Result};
use skiff_controller::orchestrator::overlay::{OverlayNetwork, OverlayView};
use skiff_runtime::fsutil;
use skiff_runtime::network::nft::FwVip;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Label marking local networks that mirror a cluster overlay network.
pub const LABEL_OVERLAY: &str = "com.skiff.overlay";

impl Networks {
    fn overlay_names_for(&self, id: &str) -> (String, String) {
        let h = super::short_hash(id, 15 - self.prefix.len() - 1);
        (
            format!("{}o{h}", self.prefix),
            format!("{}x{h}", self.prefix),
        )
    }

    /// Makes (or checks) this node's side of an overlay network. The local network
    /// shares the cluster network's ID and name, so containers attach to it by name.
    pub async fn ensure_overlay(&self, o: &OverlayNetwork, node_id: &str, port: u16) -> Result<()> {
        let Some(node_ip) = o.alloc.nodes.get(node_id).copied() else {
            return Ok(());
        };
        let mut inner = self.inner.lock().await;
        let (bridge, vx) = self.overlay_names_for(&o.id);
        let wanted = OverlayInfo {
            vni: o.alloc.vni,
            vxlan: vx.clone(),
            node_ip,
        };
        let fresh = match inner.nets.get(&o.id) {
            Some(st)
                if st.net.overlay.as_ref() == Some(&wanted)
                    && st.net.subnet == o.alloc.subnet
                    && link::link_exists(&vx) =>
            {
                return Ok(());
            }
            Some(_) => false,
            None => true,
        };
        if fresh {
            // A local network of the same name (say, left from before the network became
            // an overlay) would shadow it.
            if let Some(other) = inner
                .nets
                .values()
                .find(|st| st.net.name == o.name && st.net.id != o.id)
            {
                return Err(crate::error::AgentError::Conflict(format!(
                    "a local network named {} ({}) is in the way of the overlay network",
                    o.name, other.net.id
                )));
            }
        }
        let net = Network {
            id: o.id.clone(),
            name: o.name.clone(),
            driver: "overlay".into(),
            subnet: o.alloc.subnet,
            gateway: o.alloc.gateway,
            internal: o.internal,
            bridge: bridge.clone(),
            created: chrono::Utc::now(),
            labels: [(LABEL_OVERLAY.to_string(), "true".to_string())].into(),
            overlay: Some(wanted),
        };
        let _host = link::host_lock().map_err(net_err)?;
        link::ensure_bridge(&bridge, net.gateway, &net.subnet).map_err(net_err)?;
        let spec = vxlan::OverlaySpec {
            bridge: &bridge,
            vxlan: &vx,
            vni: o.alloc.vni,
            port: if port == 0 { 4789 } else { port },
            subnet: o.alloc.subnet,
            node_ip,
            mac: &link::mac_for(node_ip),
        };
        if let Err(e) = vxlan::ensure(&spec) {
            if fresh {
                let _ = link::delete_link(&vx);
                let _ = link::delete_link(&bridge);
            }
            return Err(net_err(e));
        }
        std::fs::create_dir_all(&self.dir)?;
        fsutil::write_json_atomic(&self.net_file(&net.id), &net)?;
        let mut ipam = Ipam::new(net.subnet, net.gateway);
        let _ = ipam.reserve(node_ip);
        let dns_task = inner.nets.remove(&o.id).and_then(|old| old.dns_task);
        let mut st = NetState {
            net,
            ipam,
            dns_task,
        };
        // Addresses of local containers stay reserved across a re-sync.
        for a in inner
            .sandboxes
            .values()
            .flat_map(|sb| sb.attachments.iter())
            .filter(|a| a.network_id == o.id)
        {
            let _ = st.ipam.reserve(a.ip);
        }
        self.start_dns(&mut st);
        inner.nets.insert(o.id.clone(), st);
        inner.programmed.remove(&o.id);
        tracing::info!(network = %o.name, vni = o.alloc.vni, subnet = %o.alloc.subnet, %node_ip, "overlay network ready");
        self.refresh_locked(&mut inner)
    }

    /// Programs everything cluster-wide for the networks this node takes part in:
    /// forwarding entries, virtual IPs (addresses and balancing) and DNS names.
    pub async fn sync_overlays(&self, view: &OverlayView, node_id: &str) -> Result<()> {
        let mut names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>> = HashMap::new();
        let mut vips = Vec::new();
        for o in &view.networks {
            let Some(node_ip) = o.alloc.nodes.get(node_id).copied() else {
                continue;
            };
            let (bridge, vx) = self.overlay_names_for(&o.id);
            let mut peers: Vec<vxlan::Peer> = Vec::new();
            let dst = |node: &str| o.peers.get(node).and_then(|a| a.parse::<Ipv4Addr>().ok());
            for (node, ip) in &o.alloc.nodes {
                if node != node_id {
                    if let Some(d) = dst(node) {
                        peers.push(vxlan::Peer {
                            ip: *ip,
                            mac: link::mac_for(*ip),
                            node: d,
                        });
                    }
                }
            }
            let eps: Vec<_> = view
                .endpoints
                .iter()
                .filter(|e| e.network == o.name)
                .collect();
            for e in eps.iter().filter(|e| e.node_id != node_id) {
                if let Some(d) = dst(&e.node_id) {
                    peers.push(vxlan::Peer {
                        ip: e.ip,
                        mac: link::mac_for(e.ip),
                        node: d,
                    });
                }
            }
            peers.sort();
            let n = names.entry(o.id.clone()).or_default();
            for e in &eps {
                for name in &e.names {
                    n.entry(name.to_ascii_lowercase()).or_default().push(e.ip);
                }
            }
            let mut local_vips = BTreeSet::new();
            for s in &view.services {
                let Some(aliases) = s.aliases.get(&o.name) else {
                    continue;
                };
                let running: Vec<Ipv4Addr> = eps
                    .iter()
                    .filter(|e| e.service == s.name && e.running)
                    .map(|e| e.ip)
                    .collect();
                let answer = match s.vips.get(&o.name) {
                    Some(vip) if !s.dnsrr => {
                        local_vips.insert(*vip);
                        vips.push(FwVip {
                            vip: *vip,
                            backends: running.clone(),
                        });
                        vec![*vip]
                    }
                    _ => running.clone(),
                };
                for a in aliases {
                    let a = a.to_ascii_lowercase();
                    n.entry(a.clone())
                        .or_default()
                        .extend(answer.iter().copied());
                    n.entry(format!("tasks.{a}"))
                        .or_default()
                        .extend(running.iter().copied());
                }
            }
            let programmed = (peers, local_vips);
            let unchanged = self.inner.lock().await.programmed.get(&o.id) == Some(&programmed);
            if !unchanged && link::link_exists(&vx) && link::link_exists(&bridge) {
                vxlan::sync_peers(&vx, &programmed.0).map_err(net_err)?;
                vxlan::sync_local_addrs(&bridge, &[o.alloc.gateway, node_ip], &programmed.1)
                    .map_err(net_err)?;
                self.inner
                    .lock()
                    .await
                    .programmed
                    .insert(o.id.clone(), programmed);
            }
        }
        vips.sort_by_key(|v| v.vip);
        let mut inner = self.inner.lock().await;
        if inner.overlay_names != names || inner.vips != vips {
            inner.overlay_names = names;
            inner.vips = vips;
            self.save_dataplane_locked(&inner);
            self.refresh_locked(&mut inner)?;
        }
        Ok(())
    }

    /// Removes this node's side of overlay networks it no longer takes part in, once no
    /// local container uses them. Returns the removed networks' names.
    pub async fn prune_overlays(&self, keep: &HashSet<String>) -> Vec<String> {
        let mut inner = self.inner.lock().await;
        let gone: Vec<String> = inner
            .nets
            .values()
            .filter(|st| st.net.overlay.is_some() && !keep.contains(&st.net.id))
            .map(|st| st.net.id.clone())
            .filter(|id| {
                !inner
                    .sandboxes
                    .values()
                    .any(|sb| sb.attachments.iter().any(|a| &a.network_id == id))
            })
            .collect();
        let mut removed = Vec::new();
        for id in gone {
            if let Some(st) = inner.nets.remove(&id) {
                if let Some(t) = st.dns_task {
                    t.abort();
                }
                if let Some(o) = &st.net.overlay {
                    let _ = link::delete_link(&o.vxlan);
                }
                let _ = link::delete_link(&st.net.bridge);
                let _ = std::fs::remove_file(self.net_file(&id));
                inner.overlay_names.remove(&id);
                inner.programmed.remove(&id);
                tracing::info!(network = %st.net.name, "overlay network removed from this node");
                removed.push(st.net.name);
            }
        }
        if !removed.is_empty() {
            if let Err(e) = self.refresh_locked(&mut inner) {
                tracing::warn!(error = %e, "refreshing firewall after removing overlays");
            }
        }
        removed
    }

    /// Whether `name` is an overlay network present on this node.
    pub async fn is_local_overlay(&self, name: &str) -> bool {
        let inner = self.inner.lock().await;
        inner
            .nets
            .values()
            .any(|st| st.net.name == name && st.net.overlay.is_some())
    }
}

/// The cluster side of standalone containers on attachable overlays: a manager asks
/// its own state machine, a worker the dispatcher.
#[tonic::async_trait]
pub trait ClusterNetworks: Send + Sync {
    /// `Ok(None)`: `network` is not a cluster network. With `check_only`, only says
    /// whether it is one that takes standalone containers (the address is `None`).
    async fn attach(
        &self,
        network: &str,
        container_id: &str,
        name: &str,
        check_only: bool,
    ) -> std::result::Result<Option<Option<Ipv4Addr>>, String>;
    async fn detach(&self, container_id: &str) -> std::result::Result<(), String>;
}

impl Networks {
    /// Hooks the cluster in (once it runs).
    pub fn set_cluster(&self, c: Arc<dyn ClusterNetworks>) {
        if let Ok(mut g) = self.cluster.write() {
            *g = Some(c);
        }
    }

    fn cluster(&self) -> Option<Arc<dyn ClusterNetworks>> {
        self.cluster.read().ok().and_then(|g| g.clone())
    }

    /// At create time: whether an unknown network name is an attachable cluster overlay.
    pub(super) async fn cluster_network_ok(&self, name: &str) -> Result<bool> {
        let Some(c) = self.cluster() else {
            return Ok(false);
        };
        match c.attach(name, "", "", true).await {
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(crate::error::AgentError::Invalid(e)),
        }
    }

    /// Before wiring: a container whose network is a cluster overlay gets its address
    /// from the controller, and waits for this node's side of the network.
    pub(super) async fn attach_standalone(
        &self,
        r: &skiff_runtime::container::ContainerRecord,
        eps: &mut [super::EndpointConfig],
    ) -> Result<bool> {
        let Some(c) = self.cluster() else {
            return Ok(false);
        };
        let mut attached = false;
        for ep in eps.iter_mut().filter(|e| e.ipv4_address.is_empty()) {
            let local_plain = {
                let inner = self.inner.lock().await;
                Self::find(&inner, &ep.network)
                    .map(|s| s.net.overlay.is_none())
                    .unwrap_or(false)
            };
            if local_plain || r.config.labels.contains_key(crate::labels::LABEL_TASK) {
                continue;
            }
            let ip = match c.attach(&ep.network, &r.id, &r.name, false).await {
                Ok(Some(Some(ip))) => ip,
                Ok(_) => continue,
                Err(e) => return Err(crate::error::AgentError::Invalid(e)),
            };
            attached = true;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !self.is_local_overlay(&ep.network).await {
                if std::time::Instant::now() > deadline {
                    let _ = c.detach(&r.id).await;
                    return Err(crate::error::AgentError::Internal(format!(
                        "overlay network {} was not set up on this node in time",
                        ep.network
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            ep.ipv4_address = ip.to_string();
        }
        Ok(attached)
    }

    /// Gives a standalone container's overlay address back (in the background).
    pub(super) fn detach_standalone(&self, container_id: &str) {
        if let Some(c) = self.cluster() {
            let id = container_id.to_string();
            tokio::spawn(async move {
                if let Err(e) = c.detach(&id).await {
                    tracing::warn!(container_id = %id, error = %e, "releasing overlay address");
                }
            });
        }
    }
}
