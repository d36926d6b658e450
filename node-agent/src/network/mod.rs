//! The agent's networks: definitions on disk, per-container sandboxes (a named network
//! namespace wired to bridges), published ports, the embedded DNS and the nftables table.
//!
//! State:
//! - `<root>/network/<id>.json`: network definitions (durable);
//! - `<root>/network/containers/<id>.json`: a container's networks after `network
//!   connect/disconnect` (absent = derived from `--network`);
//! - `<exec-root>/network/sandboxes/<id>.json`: what is wired for a running container
//!   (namespace, interfaces, addresses, ports), so a restarted agent can keep or undo it;
//! - `<exec-root>/netns/<id>`: the container's network namespace (nsfs bind mount);
//! - `<exec-root>/netns-standby/<random>`: namespaces made ahead of starts (standby.rs).
//!
//! One tokio mutex serialises every change; the firewall state and the DNS names are
//! recomputed from the whole state after each one (the table then gets only the
//! difference, often nothing), so they can never drift.
//!
//! This file holds the definitions and the store of networks (create, list, remove);
//! the rest by concern: `sandbox.rs` (a container's wiring), `ports.rs` (published
//! container and service ports), `firewall.rs` (the nftables table), `embedded_dns.rs`,
//! `reaper.rs` (background deletion of stopped containers' links), `standby.rs`
//! (namespaces and veth pairs made ahead of starts), `overlay.rs`.

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

mod embedded_dns;
mod firewall;
mod overlay;
mod ports;
mod reaper;
mod sandbox;
mod standby;

pub use crate::config::NetSettings;
pub use firewall::spawn_firewall_watch;
pub use overlay::{ClusterNetworks, LABEL_OVERLAY};
pub use ports::ports_line;

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
    /// Sandboxes added so far (a count), and how many of them the last successful
    /// refresh covered: a start whose sandbox a later refresh already covered needs
    /// none of its own (see `setup`).
    sandboxes_added: u64,
    refreshed_upto: u64,
    /// Namespaces made ahead of starts (standby.rs).
    standbys: standby::Standbys,
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

impl ServicePort {
    /// Starts serving `fw`: the kernel rules come with the next table refresh, the
    /// loopback proxy (TCP only; 127.0.0.1 cannot be DNATed) at once.
    async fn open(fw: nft::FwService) -> ServicePort {
        let targets = Arc::new(RwLock::new(Self::targets(&fw)));
        let proxy = if fw.proto == Proto::Tcp {
            match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, fw.port)).await {
                Ok(l) => Some(tokio::spawn(ports::serve_round_robin(l, targets.clone()))),
                Err(e) => {
                    tracing::warn!(port = fw.port, error = %e, "loopback proxy for service port unavailable");
                    None
                }
            }
        } else {
            None
        };
        ServicePort { fw, targets, proxy }
    }

    /// Where the loopback proxy sends connections: the backends of `fw`.
    fn targets(fw: &nft::FwService) -> Vec<SocketAddr> {
        fw.backends
            .iter()
            .map(|(ip, p)| SocketAddr::from((*ip, *p)))
            .collect()
    }
}

/// What the cluster last told this node to serve: service ports, virtual IPs and
/// overlay names. Kept in the run directory (gone with a reboot, like the containers)
/// so a restarted agent serves it again at once: the firewall table it rewrites at
/// start would otherwise drop the routing mesh until its first assignment set arrives.
#[derive(Serialize, Deserialize, Default)]
struct Dataplane {
    services: Vec<(String, nft::FwService)>,
    vips: Vec<nft::FwVip>,
    overlay_names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
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

/// The container a `container:NAME|ID` network mode names.
pub fn network_container(mode: &str) -> Option<&str> {
    mode.strip_prefix("container:")
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
    fn dataplane_file(&self) -> PathBuf {
        self.run_dir.join("dataplane.json")
    }

    /// Records the cluster's part of the data plane (see [`Dataplane`]); a failure only
    /// costs the quick restart, so it is logged, not returned.
    fn save_dataplane_locked(&self, inner: &Inner) {
        let d = Dataplane {
            services: inner
                .services
                .iter()
                .map(|(k, p)| (k.clone(), p.fw.clone()))
                .collect(),
            vips: inner.vips.clone(),
            overlay_names: inner.overlay_names.clone(),
        };
        if let Err(e) = fsutil::write_json_atomic(&self.dataplane_file(), &d) {
            tracing::warn!(error = %e, "recording service ports and virtual IPs");
        }
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
        match fsutil::read_json::<Dataplane>(&self.dataplane_file()) {
            Ok(Some(d)) => {
                for (key, fw) in d.services {
                    let port = ServicePort::open(fw).await;
                    inner.services.insert(key, port);
                }
                inner.vips = d.vips;
                inner.overlay_names = d.overlay_names;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable record of service ports; skipped"),
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
        self.sweep_standbys();
        self.refresh_locked(&mut inner)?;
        self.prefill_default(&mut inner);
        for st in inner.nets.values_mut() {
            self.start_dns(st);
        }
        Ok(())
    }

    /// UDP port of this node's VXLAN traffic.
    pub fn vxlan_port(&self) -> u16 {
        self.settings.vxlan_port
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
        self.drop_pool(&mut inner, &id);
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
