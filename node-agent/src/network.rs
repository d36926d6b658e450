//! The agent's networks: definitions on disk, per-container sandboxes (a named network
//! namespace wired to bridges), published ports, the embedded DNS and the nftables table.
//!
//! State:
//! - `<root>/network/<id>.json`: network definitions (durable);
//! - `<root>/network/containers/<id>.json`: a container's networks after `network
//!   connect/disconnect` (absent = derived from `--network`);
//! - `<exec-root>/network/sandboxes/<id>.json`: what is wired for a running container
//!   (namespace, interfaces, addresses, ports), so a restarted agent can keep or undo it;
//! - `<exec-root>/netns/<id>`: the container's network namespace (nsfs bind mount).
//!
//! One tokio mutex serialises every change; the firewall state and the DNS names are
//! recomputed from the whole state after each one (the table then gets only the
//! difference, often nothing), so they can never drift.

use crate::error::AgentError;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skiff_runtime::container::spec::NetworkNamespace;
use skiff_runtime::container::{ContainerRecord, Paths};
use skiff_runtime::fsutil;
use skiff_runtime::network::dns::{self, DnsTable};
use skiff_runtime::network::ipam::{self, Ipam, Pool};
use skiff_runtime::network::nft::{self, FwNetwork, FwPort, FwState, Nft};
use skiff_runtime::network::Proto;
use skiff_runtime::network::{link, proxy, vxlan, NetError, Network, OverlayInfo, PortBinding};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::task::JoinHandle;
use tracing::Instrument;

mod overlay;
pub use crate::config::NetSettings;
pub use overlay::{ClusterNetworks, LABEL_OVERLAY};

type Result<T> = std::result::Result<T, AgentError>;

fn net_err(e: NetError) -> AgentError {
    match e {
        NetError::BadPort(_)
        | NetError::BadAddr(_)
        | NetError::BadSubnet(_)
        | NetError::BadHost(_) => AgentError::Invalid(e.to_string()),
        NetError::InUse(_) | NetError::NotInSubnet { .. } => AgentError::Invalid(e.to_string()),
        NetError::PortInUse { .. } => AgentError::Start {
            message: format!("driver failed programming external connectivity: {e}"),
            exit_code: 125,
        },
        e => AgentError::Internal(e.to_string()),
    }
}

/// Which network a container is on, with its per-network settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointConfig {
    /// Network ID.
    pub network: String,
    #[serde(default)]
    pub ipv4_address: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// One interface of a running container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub ifname: String,
    pub host_if: String,
    pub aliases: Vec<String>,
}

/// A published port as wired (`binding.host_port` is the actual port).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    pub binding: PortBinding,
    pub container_ip: Ipv4Addr,
}

/// What is wired for one running container.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sandbox {
    pub container_id: String,
    pub name: String,
    pub netns: PathBuf,
    pub attachments: Vec<Attachment>,
    pub ports: Vec<Published>,
    /// The container's own `--dns` servers (the embedded DNS forwards to them).
    #[serde(default)]
    pub dns: Vec<String>,
    /// It holds a cluster-allocated overlay address (a standalone container).
    #[serde(default)]
    pub attached: bool,
    #[serde(skip)]
    proxies: Vec<JoinHandle<()>>,
    /// Loaded from disk at agent start; kept only if the container still runs.
    #[serde(skip)]
    restored: bool,
}

struct NetState {
    net: Network,
    ipam: Ipam,
    dns_task: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Inner {
    nets: BTreeMap<String, NetState>,
    sandboxes: HashMap<String, Sandbox>,
    /// Ports published by services (key: service name/protocol/port).
    services: BTreeMap<String, ServicePort>,
    /// Cluster-wide names on overlay networks (network ID → name → addresses): service
    /// virtual IPs, `tasks.NAME`, and `dnsrr` task addresses.
    overlay_names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// Service virtual IPs balanced by this node.
    vips: Vec<nft::FwVip>,
    /// What the nftables table was last set to (`None`: unknown, reload it whole).
    fw_applied: Option<FwState>,
    /// What was last programmed on each overlay's devices (remote peers, local VIPs),
    /// so an unchanged view costs no iproute2 calls.
    programmed: HashMap<String, (Vec<vxlan::Peer>, std::collections::BTreeSet<Ipv4Addr>)>,
    /// Host-side veths of stopped containers being deleted in the background, with the
    /// network and address each still holds (released once the link is gone), keyed
    /// by link name, with the link's index: a restarted container's new link takes
    /// the old name, and only the old index may be deleted.
    reaping: HashMap<String, Reaping>,
}

/// A host link being deleted in the background and the address it still holds.
struct Reaping {
    network_id: String,
    ip: Ipv4Addr,
    index: u32,
}

/// A service's published port on this node: kernel DNAT over the backends, and a
/// loopback proxy (TCP) that spreads 127.0.0.1 connections the same way.
struct ServicePort {
    fw: nft::FwService,
    targets: Arc<RwLock<Vec<SocketAddr>>>,
    proxy: Option<JoinHandle<()>>,
}

pub struct Networks {
    dir: PathBuf,
    run_dir: PathBuf,
    netns_dir: PathBuf,
    /// nftables table name (`skiff` or `skiff-<hash of --root>`).
    pub table: String,
    /// Prefix of every link this agent makes.
    pub prefix: String,
    settings: NetSettings,
    nft: Box<dyn Nft>,
    inner: tokio::sync::Mutex<Inner>,
    dns: Arc<RwLock<DnsTable>>,
    /// Set once the node's cluster runs: standalone containers on overlays.
    cluster: RwLock<Option<Arc<dyn overlay::ClusterNetworks>>>,
    /// Ourselves, for background link deletion.
    me: std::sync::Weak<Networks>,
}

/// Serves loopback connections to a service port, rotating over its current targets.
async fn serve_round_robin(l: tokio::net::TcpListener, targets: Arc<RwLock<Vec<SocketAddr>>>) {
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

/// Table name and link prefix for an agent root: distinct per --root so agents coexist.
pub fn names_for_root(root: &Path) -> (String, String) {
    if root == Path::new(crate::config::DEFAULT_ROOT) {
        return ("skiff".into(), "skiff".into());
    }
    let h = skiff_runtime::digest::Digest::of(root.to_string_lossy().as_bytes())
        .hex()
        .to_string();
    (format!("skiff-{}", &h[..8]), format!("sk{}", &h[..5]))
}

fn short_hash(s: &str, n: usize) -> String {
    skiff_runtime::digest::Digest::of(s.as_bytes()).hex()[..n].to_string()
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn host_resolv() -> (Vec<String>, Vec<String>, Vec<String>) {
    skiff_runtime::network::parse_resolv_conf(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    )
}

/// Returns `ip` to its network's pool (if the network still exists).
fn release(inner: &mut Inner, nid: &str, ip: Ipv4Addr) {
    if let Some(st) = inner.nets.get_mut(nid) {
        st.ipam.release(ip);
    }
}

/// Options for `network create`.
#[derive(Debug, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

impl Networks {
    pub fn new(root: &Path, exec_root: &Path, settings: NetSettings) -> Arc<Self> {
        let (table, prefix) = names_for_root(root);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            dir: root.join("network"),
            run_dir: exec_root.join("network"),
            netns_dir: exec_root.join("netns"),
            table,
            prefix,
            settings,
            nft: Box::new(nft::NftBinary),
            inner: tokio::sync::Mutex::new(Inner::default()),
            dns: Arc::new(RwLock::new(DnsTable::default())),
            cluster: RwLock::new(None),
        })
    }

    fn pools(&self) -> Vec<Pool> {
        if self.settings.pools.is_empty() {
            ipam::default_pools()
        } else {
            self.settings.pools.clone()
        }
    }

    fn net_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
    fn conn_file(&self, cid: &str) -> PathBuf {
        self.dir.join("containers").join(format!("{cid}.json"))
    }
    fn sandbox_file(&self, cid: &str) -> PathBuf {
        self.run_dir.join("sandboxes").join(format!("{cid}.json"))
    }

    /// Loads networks and sandboxes, makes sure the default `bridge` network and every
    /// bridge exist. Runs before containers are restored.
    pub async fn init(&self) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("containers"))?;
        std::fs::create_dir_all(self.run_dir.join("sandboxes"))?;
        let mut inner = self.inner.lock().await;
        for ent in std::fs::read_dir(&self.dir)?.flatten() {
            let p = ent.path();
            if p.extension().is_some_and(|x| x == "json") {
                match fsutil::read_json::<Network>(&p) {
                    Ok(Some(n)) => {
                        let ipam = Ipam::new(n.subnet, n.gateway);
                        inner.nets.insert(
                            n.id.clone(),
                            NetState {
                                net: n,
                                ipam,
                                dns_task: None,
                            },
                        );
                    }
                    _ => {
                        tracing::warn!(path = %p.display(), "unreadable network definition; skipped")
                    }
                }
            }
        }
        let _host = link::host_lock().map_err(net_err)?;
        if !inner.nets.values().any(|s| s.net.is_default()) {
            let bridge = format!("{}0", self.prefix);
            let req = CreateNetwork {
                name: "bridge".into(),
                driver: "bridge".into(),
                ..Default::default()
            };
            self.create_locked(&mut inner, req, Some(bridge))?;
        }
        for st in inner.nets.values_mut() {
            link::ensure_bridge(&st.net.bridge, st.net.gateway, &st.net.subnet).map_err(net_err)?;
        }
        link::enable_forwarding().map_err(net_err)?;
        for ent in std::fs::read_dir(self.run_dir.join("sandboxes"))?.flatten() {
            if let Ok(Some(mut sb)) = fsutil::read_json::<Sandbox>(&ent.path()) {
                for a in &sb.attachments {
                    if let Some(st) = inner.nets.get_mut(&a.network_id) {
                        let _ = st.ipam.reserve(a.ip);
                    }
                }
                sb.restored = true;
                inner.sandboxes.insert(sb.container_id.clone(), sb);
            }
        }
        Ok(())
    }

    /// After containers are restored: undoes sandboxes of containers no longer running,
    /// re-serves ports of those that are, removes stray links and namespaces of ours,
    /// and rewrites the firewall table.
    pub async fn reconcile(&self, running: &HashSet<String>) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let stale: Vec<String> = inner
            .sandboxes
            .iter()
            .filter(|(id, sb)| sb.restored && !running.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            tracing::info!(container_id = %id, "removing network sandbox of a container that is not running");
            self.teardown_locked(&mut inner, &id);
        }
        for sb in inner
            .sandboxes
            .values_mut()
            .filter(|s| s.restored && s.proxies.is_empty())
        {
            for p in &sb.ports {
                match proxy::bind(&p.binding).await {
                    Ok(b) => sb.proxies.push(proxy::serve(
                        b,
                        SocketAddr::from((p.container_ip, p.binding.container_port)),
                    )),
                    Err(e) => tracing::warn!(error = %e, "re-serving published port"),
                }
            }
        }
        let keep: HashSet<String> = inner
            .nets
            .values()
            .flat_map(|s| {
                std::iter::once(s.net.bridge.clone())
                    .chain(s.net.overlay.as_ref().map(|o| o.vxlan.clone()))
            })
            .chain(
                inner
                    .sandboxes
                    .values()
                    .flat_map(|s| s.attachments.iter().map(|a| a.host_if.clone())),
            )
            .collect();
        for l in link::links_with_prefix(&self.prefix) {
            if !keep.contains(&l) {
                tracing::info!(link = %l, "removing stray link");
                let _ = link::delete_link(&l);
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.netns_dir) {
            for ent in rd.flatten() {
                let id = ent.file_name().to_string_lossy().into_owned();
                if !inner.sandboxes.contains_key(&id) {
                    let _ = link::delete_netns(&ent.path());
                }
            }
        }
        self.refresh_locked(&mut inner)?;
        for st in inner.nets.values_mut() {
            self.start_dns(st);
        }
        Ok(())
    }

    /// Re-applies the firewall if someone (a firewall reload) removed it.
    pub async fn check_firewall(&self) {
        let mut inner = self.inner.lock().await;
        let missing = !nft::table_exists(self.nft.as_ref(), &self.table);
        let added = nft::ensure_forward_accept(self.nft.as_ref(), &self.table, &self.prefix)
            .unwrap_or(false);
        if missing {
            tracing::warn!(table = %self.table, "nftables table was removed; re-applying");
            inner.fw_applied = None;
            if let Err(e) = self.refresh_locked(&mut inner) {
                tracing::warn!(error = %e, "re-applying firewall");
            }
        } else if added {
            tracing::info!("re-inserted FORWARD accept rules");
        }
    }

    fn start_dns(&self, st: &mut NetState) {
        if st.net.is_default() || st.dns_task.is_some() {
            return;
        }
        let addr = SocketAddr::from((st.net.gateway, 53));
        match std::net::UdpSocket::bind(addr).and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(s)
        }) {
            Ok(sock) => {
                // TCP beside UDP, for answers too large for a datagram.
                let tcp = std::net::TcpListener::bind(addr)
                    .and_then(|l| {
                        l.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(l)
                    })
                    .map_err(|e| {
                        tracing::warn!(addr = %addr, error = %e, "embedded DNS: no TCP listener")
                    })
                    .ok();
                st.dns_task = Some(tokio::spawn(dns::serve(
                    sock,
                    tcp,
                    self.dns.clone(),
                    st.net.id.clone(),
                )))
            }
            Err(e) => tracing::warn!(addr = %addr, error = %e, "embedded DNS could not bind"),
        }
    }

    /// Rebuilds DNS names and the nftables table from the whole state.
    fn refresh_locked(&self, inner: &mut Inner) -> Result<()> {
        let mut table = DnsTable::default();
        let ups: Vec<String> = if self.settings.dns.is_empty() {
            host_resolv().0
        } else {
            self.settings.dns.clone()
        };
        table.upstreams = ups.iter().filter_map(|s| dns::upstream_addr(s)).collect();
        let mut fw = FwState::default();
        for st in inner.nets.values() {
            fw.networks.push(FwNetwork {
                bridge: st.net.bridge.clone(),
                subnet: st.net.subnet,
                internal: st.net.internal,
            });
        }
        for (nid, names) in &inner.overlay_names {
            let m = table.names.entry(nid.clone()).or_default();
            for (k, v) in names {
                m.entry(k.clone()).or_default().extend(v.iter().copied());
            }
        }
        for st in inner.nets.values() {
            if let Some(o) = &st.net.overlay {
                let local = inner
                    .sandboxes
                    .values()
                    .flat_map(|sb| sb.attachments.iter())
                    .filter(|a| a.network_id == st.net.id)
                    .map(|a| a.ip)
                    .collect();
                fw.overlays.push(nft::FwOverlay {
                    bridge: st.net.bridge.clone(),
                    subnet: st.net.subnet,
                    node_ip: o.node_ip,
                    local,
                });
            }
        }
        fw.vips = inner.vips.clone();
        for sb in inner.sandboxes.values() {
            let own: Vec<SocketAddr> = sb
                .dns
                .iter()
                .filter_map(|s| dns::upstream_addr(s))
                .collect();
            let nets: Vec<String> = sb
                .attachments
                .iter()
                .map(|a| a.network_id.clone())
                .collect();
            for a in &sb.attachments {
                table.source_networks.insert(a.ip, nets.clone());
                let names = table.names.entry(a.network_id.clone()).or_default();
                let keys = [sb.name.clone(), sb.container_id[..12].to_string()]
                    .into_iter()
                    .chain(a.aliases.iter().cloned());
                for k in keys {
                    names.entry(k.to_ascii_lowercase()).or_default().push(a.ip);
                }
                if !own.is_empty() {
                    table.per_source.insert(a.ip, own.clone());
                }
            }
            for p in &sb.ports {
                fw.ports.push(FwPort {
                    proto: p.binding.proto,
                    host_ip: p.binding.host_ip.parse().ok(),
                    host_port: p.binding.host_port,
                    container_ip: p.container_ip,
                    container_port: p.binding.container_port,
                });
            }
        }
        fw.services = inner.services.values().map(|p| p.fw.clone()).collect();
        if let Ok(mut t) = self.dns.write() {
            *t = table;
        }
        // Most refreshes (a container without published ports starting or stopping)
        // leave the table as it is: `update` then runs no `nft` at all.
        let applied = inner.fw_applied.take();
        let done =
            nft::update(self.nft.as_ref(), &self.table, applied.as_ref(), &fw).map_err(net_err)?;
        tracing::debug!(update = ?done, "firewall");
        // A whole-table reload (networks or services changed; rare since task starts and
        // stops refill chains instead) also makes sure of the accept rules in
        // `ip filter FORWARD`, which a Docker started after us may have just created
        // with a DROP policy; the watcher checks them every 10 s besides.
        if done == nft::Update::Table {
            nft::ensure_forward_accept(self.nft.as_ref(), &self.table, &self.prefix)
                .map_err(net_err)?;
        }
        inner.fw_applied = Some(fw);
        Ok(())
    }

    /// UDP port of this node's VXLAN traffic.
    pub fn vxlan_port(&self) -> u16 {
        self.settings.vxlan_port
    }

    /// The first address of a running container (its primary network).
    pub async fn primary_ip(&self, container_id: &str) -> Option<Ipv4Addr> {
        let inner = self.inner.lock().await;
        inner
            .sandboxes
            .get(container_id)
            .and_then(|sb| sb.attachments.first())
            .map(|a| a.ip)
    }

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
                self.refresh_locked(&mut inner)?;
            }
            return Ok(());
        }
        let fw = nft::FwService {
            proto,
            port,
            backends: backends.clone(),
        };
        let addrs: Vec<SocketAddr> = backends
            .iter()
            .map(|(ip, p)| SocketAddr::from((*ip, *p)))
            .collect();
        if let Some(existing) = inner.services.get_mut(&key) {
            if existing.fw == fw {
                return Ok(());
            }
            existing.fw = fw;
            if let Ok(mut t) = existing.targets.write() {
                *t = addrs;
            }
        } else {
            let targets = Arc::new(RwLock::new(addrs));
            let proxy = if proto == Proto::Tcp {
                match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                    Ok(l) => Some(tokio::spawn(serve_round_robin(l, targets.clone()))),
                    Err(e) => {
                        tracing::warn!(port, error = %e, "loopback proxy for service port unavailable");
                        None
                    }
                }
            } else {
                None
            };
            inner
                .services
                .insert(key, ServicePort { fw, targets, proxy });
        }
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
        self.refresh_locked(&mut inner)
    }

    fn find<'a>(inner: &'a Inner, key: &str) -> Result<&'a NetState> {
        if key.is_empty() {
            return Err(AgentError::NotFound("network  not found".into()));
        }
        if let Some(s) = inner.nets.get(key) {
            return Ok(s);
        }
        if let Some(s) = inner.nets.values().find(|s| s.net.name == key) {
            return Ok(s);
        }
        let m: Vec<&NetState> = inner
            .nets
            .values()
            .filter(|s| s.net.id.starts_with(key))
            .collect();
        match m.len() {
            1 => Ok(m[0]),
            0 => Err(AgentError::NotFound(format!("network {key} not found"))),
            _ => Err(AgentError::Invalid(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                m.len()
            ))),
        }
    }

    /// The network ID for a name, ID or prefix.
    pub async fn resolve(&self, key: &str) -> Result<String> {
        let inner = self.inner.lock().await;
        Self::find(&inner, key).map(|s| s.net.id.clone())
    }

    pub async fn create(&self, req: CreateNetwork) -> Result<Network> {
        let mut inner = self.inner.lock().await;
        let _host = link::host_lock().map_err(net_err)?;
        let n = self.create_locked(&mut inner, req, None)?;
        let res = link::ensure_bridge(&n.bridge, n.gateway, &n.subnet)
            .map_err(net_err)
            .and_then(|_| self.refresh_locked(&mut inner));
        if let Err(e) = res {
            let _ = link::delete_link(&n.bridge);
            let _ = std::fs::remove_file(self.net_file(&n.id));
            inner.nets.remove(&n.id);
            let _ = self.refresh_locked(&mut inner);
            return Err(e);
        }
        if let Some(st) = inner.nets.get_mut(&n.id) {
            self.start_dns(st);
        }
        Ok(n)
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        req: CreateNetwork,
        bridge: Option<String>,
    ) -> Result<Network> {
        if !req.driver.is_empty() && req.driver != "bridge" {
            return Err(AgentError::NotFound(format!(
                "plugin \"{}\" not found",
                req.driver
            )));
        }
        if req.name.is_empty()
            || !req
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(AgentError::Invalid(format!(
                "invalid network name {:?}",
                req.name
            )));
        }
        if inner.nets.values().any(|s| s.net.name == req.name) {
            return Err(AgentError::Conflict(format!(
                "network with name {} already exists",
                req.name
            )));
        }
        let mut taken: Vec<Ipv4Net> = inner.nets.values().map(|s| s.net.subnet).collect();
        let subnet = if req.subnet.is_empty() {
            taken.extend(link::host_routes());
            ipam::pick_subnet(&self.pools(), &taken).map_err(net_err)?
        } else {
            let s: Ipv4Net = req
                .subnet
                .parse()
                .map_err(|_| AgentError::Invalid(format!("invalid subnet {:?}", req.subnet)))?;
            let s = s.trunc();
            if let Some(c) = ipam::conflicts(&s, &taken) {
                return Err(AgentError::Conflict(format!(
                    "Pool overlaps with other one on this address space ({c})"
                )));
            }
            s
        };
        let gateway = if req.gateway.is_empty() {
            Ipam::default_gateway(&subnet)
        } else {
            let g: Ipv4Addr = req
                .gateway
                .parse()
                .map_err(|_| AgentError::Invalid(format!("invalid gateway {:?}", req.gateway)))?;
            if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                return Err(AgentError::Invalid(format!(
                    "gateway {g} is not a usable address of {subnet}"
                )));
            }
            g
        };
        let id = random_id();
        let net = Network {
            bridge: bridge.unwrap_or_else(|| {
                format!("{}-{}", self.prefix, &id[..15 - self.prefix.len() - 1])
            }),
            id: id.clone(),
            name: req.name,
            driver: "bridge".into(),
            subnet,
            gateway,
            internal: req.internal,
            created: chrono::Utc::now(),
            labels: req.labels,
            overlay: None,
        };
        std::fs::create_dir_all(&self.dir)?;
        fsutil::write_json_atomic(&self.net_file(&id), &net)?;
        inner.nets.insert(
            id,
            NetState {
                ipam: Ipam::new(subnet, gateway),
                net: net.clone(),
                dns_task: None,
            },
        );
        Ok(net)
    }

    /// All networks with the containers attached to each (ID → (name, IP, MAC)).
    pub async fn list(&self) -> Vec<(Network, Vec<(String, String, Attachment)>, usize, u64)> {
        let inner = self.inner.lock().await;
        inner
            .nets
            .values()
            .map(|st| {
                let eps = inner
                    .sandboxes
                    .values()
                    .flat_map(|sb| {
                        sb.attachments
                            .iter()
                            .filter(|a| a.network_id == st.net.id)
                            .map(|a| (sb.container_id.clone(), sb.name.clone(), a.clone()))
                    })
                    .collect();
                (st.net.clone(), eps, st.ipam.in_use(), st.ipam.capacity())
            })
            .collect()
    }

    /// `network inspect` JSON.
    pub async fn inspect(&self, key: &str) -> Result<Value> {
        let id = self.resolve(key).await?;
        let all = self.list().await;
        let (n, eps, used, cap) = all
            .into_iter()
            .find(|x| x.0.id == id)
            .ok_or_else(|| AgentError::NotFound(format!("network {key} not found")))?;
        Ok(network_json(&n, &eps, used, cap))
    }

    /// Removes a network that no container uses (Docker refuses otherwise).
    pub async fn remove(&self, key: &str, in_use_by: &[String]) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let id = Self::find(&inner, key)?.net.id.clone();
        let st = inner
            .nets
            .get(&id)
            .ok_or_else(|| AgentError::internal("network vanished"))?;
        if st.net.is_default() {
            return Err(AgentError::Precondition(
                "bridge is a pre-defined network and cannot be removed".into(),
            ));
        }
        let active = inner
            .sandboxes
            .values()
            .any(|sb| sb.attachments.iter().any(|a| a.network_id == id));
        if active || !in_use_by.is_empty() {
            return Err(AgentError::Conflict(format!(
                "error while removing network: network {} id {id} has active endpoints",
                st.net.name
            )));
        }
        if let Some(st) = inner.nets.remove(&id) {
            if let Some(t) = st.dns_task {
                t.abort();
            }
            if let Some(o) = &st.net.overlay {
                link::delete_link(&o.vxlan).map_err(net_err)?;
            }
            link::delete_link(&st.net.bridge).map_err(net_err)?;
        }
        std::fs::remove_file(self.net_file(&id))?;
        self.refresh_locked(&mut inner)
    }

    /// The networks a container is (to be) attached to.
    pub fn endpoints_of(&self, r: &ContainerRecord) -> Vec<EndpointConfig> {
        if let Ok(Some(v)) = fsutil::read_json::<Vec<EndpointConfig>>(&self.conn_file(&r.id)) {
            return v;
        }
        match r.config.network_mode.as_str() {
            "none" | "host" => vec![],
            m if crate::namespaces::network_container(m).is_some() => vec![],
            "" | "default" => vec![EndpointConfig {
                network: "bridge".into(),
                ..Default::default()
            }],
            m => vec![EndpointConfig {
                network: m.to_string(),
                ipv4_address: r.config.net.ipv4_address.clone(),
                aliases: r.config.net.aliases.clone(),
            }],
        }
    }

    /// Whether a container's networks include `network_id` (for `network rm`).
    pub async fn uses(&self, r: &ContainerRecord, network_id: &str) -> bool {
        let inner = self.inner.lock().await;
        self.endpoints_of(r).iter().any(|e| {
            Self::find(&inner, &e.network)
                .map(|s| s.net.id == network_id)
                .unwrap_or(false)
        })
    }

    /// Validates `--network` and the container's network options at create time.
    pub async fn check_mode(
        &self,
        mode: &str,
        net: &skiff_runtime::network::ContainerNet,
    ) -> Result<()> {
        skiff_runtime::network::hosts_file("x", &[], &net.extra_hosts).map_err(net_err)?;
        let user_defined = match mode {
            "none" | "host" => false,
            // Another container's namespace: `namespaces::check_create` checks it.
            m if crate::namespaces::network_container(m).is_some() => false,
            m => {
                let found = {
                    let inner = self.inner.lock().await;
                    Self::find(&inner, m).map(|s| !s.net.is_default())
                };
                match found {
                    Ok(user) => user,
                    Err(e @ AgentError::NotFound(_)) => {
                        if !self.cluster_network_ok(m).await? {
                            return Err(e);
                        }
                        true
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if (!net.ipv4_address.is_empty() || !net.aliases.is_empty()) && !user_defined {
            return Err(AgentError::Invalid(
                "user specified IP address and network aliases are supported on user defined networks only".into(),
            ));
        }
        if !net.ipv4_address.is_empty() && net.ipv4_address.parse::<Ipv4Addr>().is_err() {
            return Err(AgentError::Invalid(format!(
                "invalid IPv4 address: {}",
                net.ipv4_address
            )));
        }
        Ok(())
    }

    /// Wires a container's network before its shim starts; returns how its namespace is
    /// made. Writes its resolv.conf and hosts. On error nothing is left behind.
    pub async fn setup(
        &self,
        r: &ContainerRecord,
        paths: &Paths,
        exposed: &[String],
    ) -> Result<NetworkNamespace> {
        let mode = r.config.network_mode.as_str();
        if mode == "host" {
            return Ok(NetworkNamespace::Host);
        }
        let mut eps = self.endpoints_of(r);
        let attached = self.attach_standalone(r, &mut eps).await?;
        if eps.is_empty() {
            let hosts = skiff_runtime::network::hosts_file(
                &r.config.hostname,
                &[],
                &r.config.net.extra_hosts,
            )
            .map_err(net_err)?;
            fsutil::write_atomic(&paths.hosts(), hosts.as_bytes())?;
            return Ok(NetworkNamespace::New);
        }
        let mut inner = self.inner.lock().await;
        // A leftover from a run whose exit we did not see.
        self.teardown_locked(&mut inner, &r.id);
        let mut sb = Sandbox {
            container_id: r.id.clone(),
            name: r.name.clone(),
            netns: self.netns_dir.join(&r.id),
            dns: r.config.net.dns.clone(),
            attached,
            ..Default::default()
        };
        let res = self
            .wire(&mut inner, &mut sb, r, paths, &eps, exposed)
            .await;
        match res {
            Ok(()) => {
                let path = sb.netns.clone();
                fsutil::write_json_atomic(&self.sandbox_file(&r.id), &sb)?;
                inner.sandboxes.insert(r.id.clone(), sb);
                let refreshed =
                    tracing::debug_span!("firewall").in_scope(|| self.refresh_locked(&mut inner));
                if let Err(e) = refreshed {
                    self.teardown_locked(&mut inner, &r.id);
                    return Err(e);
                }
                Ok(NetworkNamespace::Join(path))
            }
            Err(e) => {
                self.undo(&mut inner, sb);
                Err(e)
            }
        }
    }

    async fn wire(
        &self,
        inner: &mut Inner,
        sb: &mut Sandbox,
        r: &ContainerRecord,
        paths: &Paths,
        eps: &[EndpointConfig],
        exposed: &[String],
    ) -> Result<()> {
        let mut resolved = vec![];
        for ep in eps {
            resolved.push((Self::find(inner, &ep.network)?.net.id.clone(), ep));
        }
        tracing::debug_span!("netns")
            .in_scope(|| link::create_netns(&sb.netns))
            .map_err(net_err)?;
        let mut routed = false;
        for (i, (nid, ep)) in resolved.iter().enumerate() {
            let a = tracing::debug_span!("veth", network_id = %nid)
                .in_scope(|| self.attach_one(inner, sb, nid, ep, i, &mut routed))?;
            sb.attachments.push(a);
        }
        // Published ports go to the first network's address, as with Docker.
        let mut bindings = r.config.net.ports.clone();
        if r.config.net.publish_all {
            for key in exposed {
                let (port, proto) = skiff_runtime::network::parse_exposed(key).map_err(net_err)?;
                if !bindings
                    .iter()
                    .any(|b| b.container_port == port && b.proto == proto)
                {
                    bindings.push(PortBinding {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: port,
                        proto,
                    });
                }
            }
        }
        if let Some(first) = sb.attachments.first().map(|a| a.ip) {
            for b in bindings {
                let bound = proxy::bind(&b).await.map_err(net_err)?;
                let mut actual = b.clone();
                actual.host_port = bound.port();
                sb.proxies.push(proxy::serve(
                    bound,
                    SocketAddr::from((first, b.container_port)),
                ));
                sb.ports.push(Published {
                    binding: actual,
                    container_ip: first,
                });
            }
        }
        tracing::debug_span!("files").in_scope(|| self.write_files(inner, sb, r, paths))
    }

    fn attach_one(
        &self,
        inner: &mut Inner,
        sb: &Sandbox,
        nid: &str,
        ep: &EndpointConfig,
        index: usize,
        routed: &mut bool,
    ) -> Result<Attachment> {
        let host_if = format!(
            "{}v{}",
            self.prefix,
            short_hash(&format!("{}{nid}", sb.container_id), 14 - self.prefix.len())
        );
        // A restart of the same container: its old link (and address) must go first.
        self.unreap(inner, &host_if);
        let st = inner
            .nets
            .get_mut(nid)
            .ok_or_else(|| AgentError::internal("network vanished"))?;
        if st.net.overlay.is_some() && ep.ipv4_address.is_empty() {
            // Addresses on an overlay are the controller's to hand out.
            return Err(AgentError::Invalid(format!(
                "network {} is a cluster overlay: only service tasks can attach to it for now",
                st.net.name
            )));
        }
        let ip = if ep.ipv4_address.is_empty() {
            st.ipam.allocate().map_err(net_err)?
        } else {
            let ip: Ipv4Addr = ep.ipv4_address.parse().map_err(|_| {
                AgentError::Invalid(format!("invalid IP address {:?}", ep.ipv4_address))
            })?;
            st.ipam.reserve(ip).map_err(net_err)?;
            ip
        };
        let mac = link::mac_for(ip);
        let ifname = format!("eth{index}");
        let gateway = (!st.net.internal && !*routed).then_some(st.net.gateway);
        let spec = link::VethSpec {
            netns: &sb.netns,
            bridge: &st.net.bridge,
            host_if: &host_if,
            ifname: &ifname,
            addr: ip,
            subnet: st.net.subnet,
            mac: &mac,
            gateway,
            // Lowered on overlays for the VXLAN encapsulation, set as the pair is made.
            mtu: st.net.overlay.is_some().then_some(vxlan::OVERLAY_MTU),
        };
        if let Err(e) = link::attach_veth(&spec) {
            let _ = link::delete_link(&host_if);
            st.ipam.release(ip);
            return Err(net_err(e));
        }
        *routed |= gateway.is_some();
        Ok(Attachment {
            network_id: nid.to_string(),
            ip,
            mac,
            ifname,
            host_if,
            aliases: ep.aliases.clone(),
        })
    }

    /// resolv.conf and hosts: user networks use the embedded DNS on their gateway; the
    /// default bridge gets the configured (or the host's non-loopback) resolvers.
    fn write_files(
        &self,
        inner: &Inner,
        sb: &Sandbox,
        r: &ContainerRecord,
        paths: &Paths,
    ) -> Result<()> {
        let c = &r.config.net;
        let (host_ns, host_search, host_opts) = host_resolv();
        let embedded = sb
            .attachments
            .iter()
            .filter_map(|a| inner.nets.get(&a.network_id))
            .find(|st| !st.net.is_default())
            .map(|st| st.net.gateway.to_string());
        let nameservers: Vec<String> = match embedded {
            Some(gw) => vec![gw],
            None if !c.dns.is_empty() => c.dns.clone(),
            None if !self.settings.dns.is_empty() => self.settings.dns.clone(),
            None => host_ns,
        };
        let nameservers: Vec<String> = nameservers
            .into_iter()
            .filter(|n| !skiff_runtime::network::is_loopback(n))
            .collect();
        let search = if !c.dns_search.is_empty() {
            c.dns_search.clone()
        } else if !self.settings.dns_search.is_empty() {
            self.settings.dns_search.clone()
        } else {
            host_search
        };
        let opts = if c.dns_options.is_empty() {
            host_opts
        } else {
            c.dns_options.clone()
        };
        let resolv = skiff_runtime::network::resolv_conf(&nameservers, &search, &opts);
        let own: Vec<Ipv4Addr> = sb.attachments.first().map(|a| a.ip).into_iter().collect();
        let hosts = skiff_runtime::network::hosts_file(&r.config.hostname, &own, &c.extra_hosts)
            .map_err(net_err)?;
        // Generated again at every start: no fsync.
        fsutil::replace(&paths.resolv_conf(), resolv.as_bytes())?;
        fsutil::replace(&paths.hosts(), hosts.as_bytes())?;
        Ok(())
    }

    /// Undoes a sandbox. Its host-side veths go to the background reaper: deleting a
    /// link waits for kernel RCU grace periods (~20 ms each here), which would
    /// otherwise be most of a `run --rm`, and hold every other container's network
    /// set-up behind this lock. Each address stays taken until its link is gone, so it
    /// is never on two live interfaces at once.
    fn undo(&self, inner: &mut Inner, sb: Sandbox) {
        if sb.attached {
            self.detach_standalone(&sb.container_id);
        }
        for p in &sb.proxies {
            p.abort();
        }
        for a in &sb.attachments {
            self.reap(inner, a);
        }
        if let Err(e) = link::delete_netns(&sb.netns) {
            tracing::warn!(error = %e, "removing network namespace");
        }
        let _ = std::fs::remove_file(self.sandbox_file(&sb.container_id));
    }

    /// Deletes `a`'s host link in the background, then releases its address.
    fn reap(&self, inner: &mut Inner, a: &Attachment) {
        let index = match link::link_index(&a.host_if) {
            Ok(Some(i)) => i,
            Ok(None) => {
                release(inner, &a.network_id, a.ip);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, link = %a.host_if, "finding link to delete");
                let _ = link::delete_link(&a.host_if);
                release(inner, &a.network_id, a.ip);
                return;
            }
        };
        let Some(me) = self.me.upgrade() else {
            let _ = link::delete_link_index(index);
            release(inner, &a.network_id, a.ip);
            return;
        };
        inner.reaping.insert(
            a.host_if.clone(),
            Reaping {
                network_id: a.network_id.clone(),
                ip: a.ip,
                index,
            },
        );
        let host_if = a.host_if.clone();
        tokio::spawn(
            async move {
                let deleted =
                    tokio::task::spawn_blocking(move || link::delete_link_index(index)).await;
                if let Ok(Err(e)) = deleted {
                    tracing::warn!(error = %e, "deleting link");
                }
                let mut inner = me.inner.lock().await;
                // Absent or another index: a new set-up of the same container took the
                // name over (see unreap) and released this address itself.
                if inner
                    .reaping
                    .get(&host_if)
                    .is_some_and(|r| r.index == index)
                {
                    if let Some(r) = inner.reaping.remove(&host_if) {
                        release(&mut inner, &r.network_id, r.ip);
                    }
                }
            }
            .instrument(tracing::debug_span!("reap", link = %a.host_if)),
        );
    }

    /// Finishes a pending deletion of `host_if` now (a restarted container reuses its
    /// link name), releasing the address it held.
    fn unreap(&self, inner: &mut Inner, host_if: &str) {
        if let Some(r) = inner.reaping.remove(host_if) {
            if let Err(e) = link::delete_link_index(r.index) {
                tracing::warn!(error = %e, link = %host_if, "deleting link");
            }
            release(inner, &r.network_id, r.ip);
        }
    }

    /// Waits (up to `limit`) for background link deletions to finish.
    pub async fn flush_reaper(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.inner.lock().await.reaping.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("links still being deleted at shutdown");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn teardown_locked(&self, inner: &mut Inner, id: &str) {
        let sb = inner.sandboxes.remove(id).or_else(|| {
            fsutil::read_json::<Sandbox>(&self.sandbox_file(id))
                .ok()
                .flatten()
        });
        if let Some(sb) = sb {
            self.undo(inner, sb);
        }
        // A namespace made by a setup that crashed before recording it.
        let _ = link::delete_netns(&self.netns_dir.join(id));
    }

    /// Undoes a container's network after it exits; idempotent.
    pub async fn teardown(&self, id: &str) {
        let mut inner = self.inner.lock().await;
        let had = inner.sandboxes.contains_key(id) || self.sandbox_file(id).exists();
        tracing::debug_span!("unwire").in_scope(|| self.teardown_locked(&mut inner, id));
        if had {
            let refreshed =
                tracing::debug_span!("firewall").in_scope(|| self.refresh_locked(&mut inner));
            if let Err(e) = refreshed {
                tracing::warn!(error = %e, "refreshing firewall after teardown");
            }
        }
    }

    /// Forgets a removed container.
    pub async fn forget(&self, id: &str) {
        self.teardown(id).await;
        let _ = std::fs::remove_file(self.conn_file(id));
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

    /// Docker's `NetworkSettings` for inspect.
    pub async fn settings_json(&self, r: &ContainerRecord) -> Value {
        let inner = self.inner.lock().await;
        let sb = inner.sandboxes.get(&r.id);
        let mut nets = serde_json::Map::new();
        let mut primary =
            json!({"IPAddress": "", "Gateway": "", "IPPrefixLen": 0, "MacAddress": ""});
        for ep in self.endpoints_of(r) {
            let Ok(st) = Self::find(&inner, &ep.network) else {
                continue;
            };
            let a = sb.and_then(|s| s.attachments.iter().find(|a| a.network_id == st.net.id));
            let v = json!({
                "NetworkID": st.net.id,
                "IPAddress": a.map(|a| a.ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": if a.is_some() { st.net.subnet.prefix_len() } else { 0 },
                "Gateway": if a.is_some() { st.net.gateway.to_string() } else { String::new() },
                "MacAddress": a.map(|a| a.mac.clone()).unwrap_or_default(),
                "Aliases": ep.aliases,
                "IPAMConfig": if ep.ipv4_address.is_empty() { Value::Null } else { json!({"IPv4Address": ep.ipv4_address}) },
            });
            if nets.is_empty() {
                primary = v.clone();
            }
            nets.insert(st.net.name.clone(), v);
        }
        let mut ports = serde_json::Map::new();
        if let Some(sb) = sb {
            for p in &sb.ports {
                let key = format!("{}/{}", p.binding.container_port, p.binding.proto);
                let host_ip = if p.binding.host_ip.is_empty() {
                    "0.0.0.0".to_string()
                } else {
                    p.binding.host_ip.clone()
                };
                let entry = ports.entry(key).or_insert_with(|| json!([]));
                if let Some(arr) = entry.as_array_mut() {
                    arr.push(
                        json!({"HostIp": host_ip, "HostPort": p.binding.host_port.to_string()}),
                    );
                }
            }
        }
        json!({
            "SandboxKey": sb.map(|s| s.netns.display().to_string()).unwrap_or_default(),
            "IPAddress": primary["IPAddress"],
            "IPPrefixLen": primary["IPPrefixLen"],
            "Gateway": primary["Gateway"],
            "MacAddress": primary["MacAddress"],
            "Ports": ports,
            "Networks": nets,
        })
    }

    /// `network connect`: records the network for the container and, when it runs,
    /// wires the new interface live.
    pub async fn connect(
        &self,
        r: &ContainerRecord,
        paths: &Paths,
        running: bool,
        ep: EndpointConfig,
    ) -> Result<()> {
        if matches!(r.config.network_mode.as_str(), "host" | "none") {
            return Err(AgentError::Invalid(format!(
                "container cannot be disconnected from host network or connected to host network ({})",
                r.config.network_mode
            )));
        }
        if crate::namespaces::network_container(&r.config.network_mode).is_some() {
            return Err(AgentError::Invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        let mut inner = self.inner.lock().await;
        let nid = Self::find(&inner, &ep.network)?.net.id.clone();
        let mut eps = self.endpoints_of(r);
        for e in eps.iter_mut() {
            if let Ok(s) = Self::find(&inner, &e.network) {
                e.network = s.net.id.clone();
            }
        }
        if eps.iter().any(|e| e.network == nid) {
            return Err(AgentError::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                r.name, ep.network
            )));
        }
        let ep = EndpointConfig {
            network: nid.clone(),
            ..ep
        };
        if running {
            if let Some(mut sb) = inner.sandboxes.remove(&r.id) {
                let mut routed = true;
                let idx = sb.attachments.len();
                let res = self.attach_one(&mut inner, &sb, &nid, &ep, idx, &mut routed);
                let res = res.and_then(|a| {
                    sb.attachments.push(a);
                    self.write_files(&inner, &sb, r, paths)?;
                    fsutil::write_json_atomic(&self.sandbox_file(&r.id), &sb)?;
                    Ok(())
                });
                inner.sandboxes.insert(r.id.clone(), sb);
                res?;
            }
        }
        eps.push(ep);
        fsutil::write_json_atomic(&self.conn_file(&r.id), &eps)?;
        self.refresh_locked(&mut inner)
    }

    /// `network disconnect`.
    pub async fn disconnect(&self, r: &ContainerRecord, network: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let nid = Self::find(&inner, network)?.net.id.clone();
        let mut eps = self.endpoints_of(r);
        let before = eps.len();
        eps.retain(|e| {
            Self::find(&inner, &e.network)
                .map(|s| s.net.id != nid)
                .unwrap_or(true)
        });
        if eps.len() == before {
            return Err(AgentError::Invalid(format!(
                "container {} is not connected to network {network}",
                r.name
            )));
        }
        if let Some(sb) = inner.sandboxes.get_mut(&r.id) {
            if let Some(pos) = sb.attachments.iter().position(|a| a.network_id == nid) {
                let a = sb.attachments.remove(pos);
                // Synchronous, unlike a stopped container's (see `undo`): the container
                // is still running and must be off the network when disconnect returns.
                let _ = link::delete_link(&a.host_if);
                release(&mut inner, &nid, a.ip);
            }
            if let Some(sb) = inner.sandboxes.get(&r.id) {
                fsutil::write_json_atomic(&self.sandbox_file(&r.id), sb)?;
            }
        }
        fsutil::write_json_atomic(&self.conn_file(&r.id), &eps)?;
        self.refresh_locked(&mut inner)
    }

    /// Removes everything this agent made in the kernel (for `agent --cleanup`-style
    /// teardown and tests): sandboxes, bridges, the table, the FORWARD rules.
    pub async fn shutdown_all(&self) {
        let mut inner = self.inner.lock().await;
        let ids: Vec<String> = inner.sandboxes.keys().cloned().collect();
        for id in ids {
            self.teardown_locked(&mut inner, &id);
        }
        for st in inner.nets.values_mut() {
            if let Some(t) = st.dns_task.take() {
                t.abort();
            }
            let _ = link::delete_link(&st.net.bridge);
        }
        let _ = nft::delete_table(self.nft.as_ref(), &self.table);
        inner.fw_applied = None;
        let _ = nft::remove_forward_accept(self.nft.as_ref(), &self.table);
    }
}

/// Re-applies our firewall every 10 s if a firewall reload (firewalld, `nft flush
/// ruleset`, Docker restarting) removed it.
pub fn spawn_firewall_watch(n: Arc<Networks>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            n.check_firewall().await;
        }
    });
}

/// Docker's `network inspect` document.
pub fn network_json(
    n: &Network,
    eps: &[(String, String, Attachment)],
    used: usize,
    cap: u64,
) -> Value {
    let containers: serde_json::Map<String, Value> = eps
        .iter()
        .map(|(id, name, a)| {
            (
                id.clone(),
                json!({
                    "Name": name,
                    // Stable per (network, container) endpoint, in Docker's 64-hex shape.
                    "EndpointID": short_hash(&format!("{}/{id}", n.id), 64),
                    "MacAddress": a.mac,
                    "IPv4Address": format!("{}/{}", a.ip, n.subnet.prefix_len()),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Scope": if n.overlay.is_some() { "swarm" } else { "local" },
        "Driver": n.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}],
            "Usage": {"Allocated": used, "Available": cap.saturating_sub(used as u64)},
        },
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": n.bridge},
        "Labels": n.labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_per_root_and_fit_ifnamsiz() {
        let (t1, p1) = names_for_root(Path::new("/var/lib/skiff"));
        let (t2, p2) = names_for_root(Path::new("/tmp/a/root"));
        assert_eq!((t1.as_str(), p1.as_str()), ("skiff", "skiff"));
        assert!(t2.starts_with("skiff-") && p2.starts_with("sk") && p2.len() == 7);
        assert_ne!(p1, p2);
        // Bridge and veth names must fit in 15 bytes.
        let id = "0123456789abcdef";
        assert!(format!("{p2}-{}", &id[..15 - p2.len() - 1]).len() <= 15);
        assert_eq!(format!("{p2}v{}", short_hash("x", 14 - p2.len())).len(), 15);
    }

    #[test]
    fn inspect_document() {
        let n = Network {
            id: "ab".repeat(32),
            name: "app".into(),
            driver: "bridge".into(),
            subnet: "10.5.0.0/24".parse().expect("net"),
            gateway: "10.5.0.1".parse().expect("ip"),
            internal: true,
            bridge: "skab-1".into(),
            created: chrono::Utc::now(),
            labels: Default::default(),
            overlay: None,
        };
        let a = Attachment {
            network_id: n.id.clone(),
            ip: "10.5.0.2".parse().expect("ip"),
            mac: "m".into(),
            ifname: "eth0".into(),
            host_if: "v".into(),
            aliases: vec![],
        };
        let v = network_json(&n, &[("cid".into(), "web".into(), a)], 1, 253);
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.5.0.0/24");
        assert_eq!(v["Containers"]["cid"]["IPv4Address"], "10.5.0.2/24");
        assert_eq!(v["IPAM"]["Usage"]["Available"], 252);
        assert_eq!(v["Internal"], true);
    }
}

/// Converts the API's network options into the record's.
pub fn net_config(
    o: Option<skiff_proto::engine::NetworkOptions>,
) -> Result<skiff_runtime::network::ContainerNet> {
    let o = o.unwrap_or_default();
    let ports = o
        .publish
        .iter()
        .map(|p| skiff_runtime::network::parse_publish(p))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(net_err)?;
    Ok(skiff_runtime::network::ContainerNet {
        ipv4_address: o.ipv4_address,
        aliases: o.aliases,
        dns: o.dns,
        dns_search: o.dns_search,
        dns_options: o.dns_options,
        extra_hosts: o.extra_hosts,
        ports,
        publish_all: o.publish_all,
    })
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

impl Networks {
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

/// The Engine API's network calls, kept here so `server.rs` only delegates.
pub mod rpc {
    use super::*;
    use crate::containers::Containers;
    use skiff_proto::engine::*;
    use tonic::Status;

    pub async fn create(c: &Containers, r: NetworkCreateRequest) -> Result<NetworkCreateResponse> {
        let n = c
            .networks
            .create(CreateNetwork {
                name: r.name,
                driver: r.driver,
                subnet: r.subnet,
                gateway: r.gateway,
                internal: r.internal,
                labels: r.labels.into_iter().collect(),
            })
            .await?;
        c.events.emit(
            "network",
            "create",
            &n.id,
            [
                ("name".to_string(), n.name.clone()),
                ("type".into(), "bridge".into()),
            ]
            .into(),
        );
        Ok(NetworkCreateResponse { id: n.id })
    }

    /// `network ls --filter`: name, id, driver, type (builtin|custom), label (ANDed).
    pub fn matches(n: &Network, filters: &[String]) -> bool {
        filters.iter().all(|f| match f.split_once('=') {
            Some(("name", v)) => n.name.contains(v),
            Some(("id", v)) => n.id.starts_with(v),
            Some(("driver", v)) => n.driver == v,
            Some(("type", "builtin")) => n.is_default(),
            Some(("type", "custom")) => !n.is_default(),
            Some(("label", v)) => match v.split_once('=') {
                Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                None => n.labels.contains_key(v),
            },
            _ => true,
        })
    }

    pub async fn list(c: &Containers, r: NetworkListRequest) -> NetworkListResponse {
        let mut networks: Vec<NetworkSummary> = c
            .networks
            .list()
            .await
            .into_iter()
            .filter(|(n, ..)| matches(n, &r.filters))
            .map(|(n, eps, ..)| NetworkSummary {
                id: n.id.clone(),
                name: n.name.clone(),
                driver: n.driver.clone(),
                scope: "local".into(),
                internal: n.internal,
                subnet: n.subnet.to_string(),
                gateway: n.gateway.to_string(),
                created_unix: n.created.timestamp(),
                containers: eps.len() as u32,
                labels: n.labels.clone().into_iter().collect(),
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        NetworkListResponse { networks }
    }

    pub async fn remove(c: &Containers, key: &str) -> Result<()> {
        let id = c.networks.resolve(key).await?;
        let name = c
            .networks
            .list()
            .await
            .into_iter()
            .find(|(n, ..)| n.id == id)
            .map(|(n, ..)| n);
        c.networks.remove(&id, &[]).await?;
        c.events
            .emit("network", "destroy", &id, net_attrs(name.as_ref()));
        Ok(())
    }

    /// Docker's attributes of a network event: its name and driver.
    fn net_attrs(n: Option<&Network>) -> std::collections::HashMap<String, String> {
        n.map(|n| {
            [
                ("name".to_string(), n.name.clone()),
                ("type".to_string(), n.driver.clone()),
            ]
            .into()
        })
        .unwrap_or_default()
    }

    /// Removes every user network without active endpoints that matches the prune
    /// `filters` (`until=`, `label=`, `label!=`); returns their names.
    pub async fn prune(c: &Containers, filters: &[String]) -> Vec<String> {
        let mut out = vec![];
        for (n, eps, ..) in c.networks.list().await {
            if n.is_default() || !eps.is_empty() {
                continue;
            }
            // Mirrors of cluster overlays go with the cluster network, not by prune.
            if n.overlay.is_some() || !crate::prune::created_matches(n.created, &n.labels, filters)
            {
                continue;
            }
            if c.networks.remove(&n.id, &[]).await.is_ok() {
                c.events
                    .emit("network", "destroy", &n.id, net_attrs(Some(&n)));
                out.push(n.name);
            }
        }
        out.sort();
        out
    }

    /// The raft handle, when this node is a manager: cluster-scoped objects are made there.
    fn manager_raft(
        cluster: Option<&Arc<skiff_controller::cluster::Cluster>>,
    ) -> std::result::Result<skiff_controller::consensus::RaftHandle, Status> {
        cluster.and_then(|c| c.raft()).ok_or_else(|| {
            Status::failed_precondition(
                "cannot create a multi-host network from a worker node: create it on a manager",
            )
        })
    }

    /// `network create` for every front end: overlays are made in the cluster (on a
    /// manager), every other driver on this node.
    pub async fn create_any(
        c: &Containers,
        cluster: Option<&Arc<skiff_controller::cluster::Cluster>>,
        r: NetworkCreateRequest,
    ) -> std::result::Result<NetworkCreateResponse, Status> {
        if r.driver != "overlay" {
            return Ok(create(c, r).await?);
        }
        let h = manager_raft(cluster)?;
        let op = h
            .store()
            .read(|sm| {
                skiff_controller::orchestrator::overlay::create_op(
                    sm,
                    &r.name,
                    (!r.subnet.is_empty()).then_some(r.subnet.as_str()),
                    r.internal,
                    r.attachable,
                )
            })
            .map_err(|e| match e {
                skiff_controller::orchestrator::overlay::OverlayError::Exists(_) => {
                    Status::already_exists(e.to_string())
                }
                _ => Status::invalid_argument(e.to_string()),
            })?;
        let op = with_stack(op, &r.labels)?;
        let out = h
            .propose(skiff_controller::state::Proposal::new(vec![op]))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let id = out
            .objects
            .first()
            .map(|o| o.id.clone())
            .unwrap_or_default();
        Ok(NetworkCreateResponse { id })
    }

    /// A cluster network labelled with Docker's stack label (`docker stack deploy`
    /// makes its networks so) belongs to that stack, as a `skiff stack deploy` one does.
    fn with_stack(
        op: skiff_controller::state::Op,
        labels: &std::collections::HashMap<String, String>,
    ) -> std::result::Result<skiff_controller::state::Op, Status> {
        use skiff_controller::orchestrator::stack::{StackNetwork, LABEL_STACK};
        let (
            skiff_controller::state::Op::Create {
                kind,
                id,
                name,
                spec,
            },
            Some(stack),
        ) = (&op, labels.get(LABEL_STACK))
        else {
            return Ok(op);
        };
        let mut n: StackNetwork =
            serde_json::from_slice(spec).map_err(|e| Status::internal(e.to_string()))?;
        n.stack = stack.clone();
        Ok(skiff_controller::state::Op::Create {
            kind: kind.clone(),
            id: id.clone(),
            name: name.clone(),
            spec: serde_json::to_vec(&n).map_err(|e| Status::internal(e.to_string()))?,
        })
    }

    /// `network rm` for every front end: cluster networks are removed from the cluster
    /// (each node then drops its side), the rest here.
    pub async fn remove_any(
        c: &Containers,
        cluster: Option<&Arc<skiff_controller::cluster::Cluster>>,
        key: &str,
    ) -> std::result::Result<(), Status> {
        if let Some(h) = cluster.and_then(|c| c.raft()) {
            let op = h
                .store()
                .read(|sm| skiff_controller::orchestrator::overlay::remove_op(sm, key));
            match op {
                Ok(op) => {
                    h.propose(skiff_controller::state::Proposal::new(vec![op]))
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    return Ok(());
                }
                Err(e @ skiff_controller::orchestrator::overlay::OverlayError::InUse(..)) => {
                    return Err(Status::failed_precondition(e.to_string()));
                }
                Err(_) => {}
            }
        }
        Ok(remove(c, key).await?)
    }

    pub async fn connect(c: &Containers, r: NetworkConnectRequest) -> Result<()> {
        let e = c.get(&r.container)?;
        let _op = e.op.lock().await;
        let running = e.state().is_running();
        let ep = EndpointConfig {
            network: r.network.clone(),
            ipv4_address: r.ipv4_address,
            aliases: r.aliases,
        };
        c.networks
            .connect(&e.record(), &e.paths, running, ep)
            .await?;
        let id = c.networks.resolve(&r.network).await?;
        c.events.emit(
            "network",
            "connect",
            &id,
            endpoint_attrs(c, &id, &e.id).await,
        );
        Ok(())
    }

    pub async fn disconnect(c: &Containers, r: NetworkConnectRequest) -> Result<()> {
        let e = c.get(&r.container)?;
        let _op = e.op.lock().await;
        c.networks.disconnect(&e.record(), &r.network).await?;
        let id = c.networks.resolve(&r.network).await?;
        c.events.emit(
            "network",
            "disconnect",
            &id,
            endpoint_attrs(c, &id, &e.id).await,
        );
        Ok(())
    }

    /// Attributes of a connect/disconnect event: the container, and the network's name
    /// and driver as Docker gives them.
    async fn endpoint_attrs(
        c: &Containers,
        network_id: &str,
        container: &str,
    ) -> std::collections::HashMap<String, String> {
        let n = c
            .networks
            .list()
            .await
            .into_iter()
            .find(|(n, ..)| n.id == network_id)
            .map(|(n, ..)| n);
        let mut a = net_attrs(n.as_ref());
        a.insert("container".into(), container.to_string());
        a
    }

    pub async fn port(c: &Containers, key: &str) -> Result<PortResponse> {
        let e = c.get(key)?;
        let mut ports: Vec<String> = c
            .networks
            .ports(&e.id)
            .await
            .iter()
            .map(|p| p.to_string())
            .collect();
        ports.sort();
        Ok(PortResponse { ports })
    }
}
