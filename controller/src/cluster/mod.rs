//! A node's membership in the cluster: the piece the agent embeds.
//!
//! [`Cluster::start`] either founds a new cluster (no `--join`: this node becomes its only
//! manager, creates the CA, and opens no TCP port unless given a listen address), joins
//! one with a token, or resumes from `<state dir>/node.json`. Managers run the raft node,
//! serve `Raft` and `Membership` on the mutual-TLS cluster port and the [`api::ClusterApi`]
//! on the agent's unix socket. Every node keeps a heartbeat stream to the leader; the
//! leader marks nodes down after the grace period.
//!
//! State directory layout: `node.json` (identity, role, known managers), `tls/` (CA,
//! node certificate and key), `raft/` (the log, managers only), `removed` (a marker:
//! this node was removed and must be wiped before it joins again).

pub mod backoff;
pub mod raft_runtime;
pub mod transport;

/// The servers at their path before the layering.
pub use crate::api::{cluster as api, cluster_port as service};
pub use crate::model::{data_ip, NodeState};
pub use crate::store::{clients, members};

use crate::ca::{self, Ca, JoinToken};
use crate::model::{
    self, new_raft_id, update_status, ClusterMeta, Node, NodeStatus, Op, Proposal, Role,
};
use crate::orchestrator::logbroker::LogBroker;
use crate::orchestrator::membership::{ChannelError, Membership};
use crate::raft::consensus::{self, Bootstrap, RaftConfig, RaftError, RaftHandle};
use crate::store::Store;
use crate::tls::{self, Identity};
use skiff_proto::cluster as pb;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The cluster port used when `--listen-addr` names only an IP (Swarm's).
pub const DEFAULT_PORT: u16 = 2377;
/// The longest wait between heartbeat reconnects (200 ms doubling, jittered): under the
/// default 3 s down grace, so backing off alone never gets a node marked down.
const HEARTBEAT_RETRY_MAX: Duration = Duration::from_millis(1600);
/// What a new leader adds to the down grace once, for nodes to reconnect: a node that
/// began its longest backoff just before the election may try a dead manager next, then
/// a follower (which names the leader, see [`service::LEADER_HINT`]): two retries.
const FAILOVER_RECONNECT: Duration = Duration::from_millis(2 * 1600);

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub state_dir: PathBuf,
    pub hostname: String,
    pub engine_version: String,
    /// Where the mutual-TLS cluster port listens; `None`: no TCP port at all.
    pub listen_addr: Option<SocketAddr>,
    /// host:port other nodes use to reach this one (default: the listen address).
    pub advertise_addr: Option<String>,
    /// `(manager address, token)` to join an existing cluster.
    pub join: Option<(String, String)>,
    pub heartbeat_period: Duration,
    /// A node silent for this long is marked down.
    pub down_grace: Duration,
    pub cert_validity: Duration,
    /// Renew the node certificate when less than this fraction of its life remains.
    pub renew_fraction: f64,
    pub raft_tick: Duration,
    pub snapshot_every: u64,
    /// What this node reports of itself (capacity, engine labels) to the leader.
    pub description: crate::model::NodeDescription,
    /// Services of the embedding agent served on the cluster port beside the
    /// controller's (the image share), behind the same mutual TLS and revocation check.
    pub extra_routes: Option<tonic::service::Routes>,
}

impl ClusterConfig {
    pub fn new(state_dir: PathBuf, hostname: String, engine_version: String) -> ClusterConfig {
        ClusterConfig {
            state_dir,
            hostname,
            engine_version,
            listen_addr: None,
            advertise_addr: None,
            join: None,
            heartbeat_period: Duration::from_secs(1),
            down_grace: Duration::from_secs(3),
            cert_validity: Duration::from_secs(90 * 24 * 3600),
            renew_fraction: 0.5,
            raft_tick: Duration::from_millis(100),
            snapshot_every: 10_000,
            description: Default::default(),
            extra_routes: None,
        }
    }

    fn advertise(&self) -> String {
        match (&self.advertise_addr, self.listen_addr) {
            (Some(a), _) => a.clone(),
            (None, Some(l)) => l.to_string(),
            (None, None) => String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "this node was removed from the cluster; its old identity cannot rejoin. Delete {} to join again as a new node",
        .0.display()
    )]
    Removed(PathBuf),
    #[error("this node is already part of a cluster (state in {}); --join is only for a new node", .0.display())]
    AlreadyJoined(PathBuf),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error("joining {addr}: {message}")]
    Join { addr: String, message: String },
    #[error("{0}")]
    NoManager(String),
    #[error("binding the cluster port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.into(),
        source,
    }
}

/// Writes a file atomically and durably (temp, fsync, rename, directory fsync).
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(io(d))?;
    }
    Ok(())
}

/// A running cluster member.
pub struct Cluster {
    pub cfg: ClusterConfig,
    node: RwLock<NodeState>,
    identity: RwLock<Identity>,
    raft: RwLock<Option<RaftHandle>>,
    transport: Arc<transport::GrpcTransport>,
    /// Leader-only: when each node was last heard from.
    seen: Mutex<HashMap<String, Instant>>,
    /// Set when the cluster port is open.
    listening: Mutex<Option<SocketAddr>>,
    /// Counted controller metrics, shared by every raft node this process runs.
    pub metrics: Arc<crate::raft::metrics::ControllerMetrics>,
    /// Set when this node's raft stopped by itself (a storage error such as a full disk):
    /// the agent then exits, so its supervisor restarts it on a clean replay of the log
    /// (fail-stop, as etcd does on a failed WAL write) instead of serving a dead replica.
    fatal: tokio::sync::watch::Sender<Option<String>>,
    /// `service logs` subscriptions and the nodes serving them (used while leading).
    pub logs: Arc<crate::orchestrator::logbroker::LogBroker>,
    /// A worker's copy of the revoked client certificates (from its assignments); `None`
    /// until the first set arrives. Managers read their state instead.
    revoked_clients: RwLock<Option<std::collections::HashSet<String>>>,
    /// A worker's copy of the member list (from its heartbeat stream); `None` until the
    /// first one arrives. Managers read their state instead.
    members: RwLock<Option<Vec<members::Member>>>,
    /// Where this node serves images when it has no cluster port (0: not there);
    /// reported in its description.
    image_share_port: std::sync::atomic::AtomicU16,
    /// Node-side channels to managers by address, kept: a channel per call meant a TCP
    /// and TLS handshake per task status report, on both ends. Cleared on renewal.
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

/// What the servers this node starts see of it.
impl Membership for Cluster {
    fn raft(&self) -> Option<RaftHandle> {
        Cluster::raft(self)
    }
    fn node_state(&self) -> NodeState {
        Cluster::node_state(self)
    }
    fn identity(&self) -> Identity {
        Cluster::identity(self)
    }
    fn listen_addr(&self) -> Option<SocketAddr> {
        Cluster::listen_addr(self)
    }
    fn cert_validity(&self) -> Duration {
        self.cfg.cert_validity
    }
    fn heartbeat_period(&self) -> Duration {
        self.cfg.heartbeat_period
    }
    fn saw(&self, node_id: &str) {
        Cluster::saw(self, node_id)
    }
    fn manager_channel(&self) -> Result<tonic::transport::Channel, ChannelError> {
        Ok(Cluster::manager_channel(self)?)
    }
    fn logs(&self) -> Arc<LogBroker> {
        self.logs.clone()
    }
}

impl Cluster {
    /// Founds, joins or resumes, then starts the background tasks.
    pub async fn start(cfg: ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let dir = cfg.state_dir.clone();
        std::fs::create_dir_all(dir.join("tls")).map_err(io(&dir))?;
        if dir.join("removed").exists() {
            return Err(ClusterError::Removed(dir));
        }
        let node_file = dir.join("node.json");
        let existing = match std::fs::read(&node_file) {
            Ok(b) => Some(serde_json::from_slice::<NodeState>(&b).map_err(|source| {
                ClusterError::Json {
                    path: node_file.clone(),
                    source,
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&node_file)(e)),
        };
        let fresh_join = existing.is_none() && cfg.join.is_some();
        let (node, identity, bootstrap) = match (existing, &cfg.join) {
            (Some(n), _) => {
                if cfg.join.is_some() {
                    tracing::info!("already a cluster member; ignoring --join");
                }
                let read =
                    |f: &str| std::fs::read_to_string(dir.join("tls").join(f)).map_err(io(&dir));
                let id = Identity {
                    ca_pem: read("ca.crt")?,
                    cert_pem: read("node.crt")?,
                    key_pem: read("node.key")?,
                };
                (n, id, Bootstrap::Join)
            }
            (None, Some((addr, token))) => {
                let (n, id) = join(&cfg, addr, token).await?;
                (n, id, Bootstrap::Join)
            }
            (None, None) => {
                let (n, id, store) = found(&cfg)?;
                (n, id, Bootstrap::New(Box::new(store)))
            }
        };
        let tls_client = tls::client_config(&identity.ca_pem, Some(&identity))?;
        let c = Arc::new(Cluster {
            transport: transport::GrpcTransport::new(tls_client),
            node: RwLock::new(node),
            identity: RwLock::new(identity),
            raft: RwLock::new(None),
            seen: Mutex::default(),
            metrics: Arc::default(),
            fatal: tokio::sync::watch::channel(None).0,
            listening: Mutex::default(),
            logs: crate::orchestrator::logbroker::LogBroker::new(),
            revoked_clients: RwLock::new(None),
            members: RwLock::new(None),
            image_share_port: Default::default(),
            channels: Mutex::default(),
            cfg,
        });
        c.save_identity()?;
        c.save_node()?;
        c.transport.set_addrs(
            c.node_state()
                .managers
                .iter()
                .map(|(r, _, a)| (*r, a.clone()))
                .collect(),
        );
        if let Some(addr) = c.cfg.listen_addr {
            c.clone().listen(addr).await?;
        }
        if c.node_state().role == Role::Manager {
            c.start_manager(bootstrap).await?;
            if fresh_join {
                c.request_voter().await?;
            }
        }
        tokio::spawn(c.clone().heartbeat_loop());
        tokio::spawn(c.clone().renew_loop());
        Ok(c)
    }

    pub fn node_state(&self) -> NodeState {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn node_id(&self) -> String {
        self.node_state().node_id
    }

    pub fn raft(&self) -> Option<RaftHandle> {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the client certificate with `serial` may use this node's Engine API
    /// port: `Err` with the reason when it was revoked, or when this worker has not
    /// heard the revocation list yet (fail closed; `ssh://` still works).
    pub fn client_allowed(&self, serial: &str) -> Result<(), String> {
        let revoked = match self.raft().filter(|h| !h.is_stopped()) {
            Some(h) => h.store().read(|sm| clients::is_revoked(sm, serial)),
            None => match &*self
                .revoked_clients
                .read()
                .unwrap_or_else(|p| p.into_inner())
            {
                Some(set) => set.contains(serial),
                None => {
                    return Err(
                        "this worker has not reached a manager yet, so it cannot tell \
                                revoked client certificates; retry shortly, or use ssh://"
                            .into(),
                    )
                }
            },
        };
        if revoked {
            return Err(format!(
                "client certificate {serial} was revoked (skiff cluster client-cert ls)"
            ));
        }
        Ok(())
    }

    /// A worker's revocation list, as its latest assignments carried it.
    pub fn set_revoked_clients(&self, serials: &[String]) {
        *self
            .revoked_clients
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(serials.iter().cloned().collect());
    }

    /// What this node reports of itself: the configured description and where it serves
    /// images.
    pub fn description(&self) -> crate::model::NodeDescription {
        let mut d = self.cfg.description.clone();
        d.image_share_port = self
            .image_share_port
            .load(std::sync::atomic::Ordering::Relaxed);
        d
    }

    /// Records the port this node serves images on (no cluster port); the next
    /// heartbeat reports it.
    pub fn set_image_share_port(&self, port: u16) {
        self.image_share_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cluster's members as this node knows them: a manager's state, a worker's
    /// latest copy; `None` while a worker has not heard one yet.
    pub fn members(&self) -> Option<Vec<members::Member>> {
        match self.raft().filter(|h| !h.is_stopped()) {
            Some(h) => Some(h.store().read(members::shared).0.clone()),
            None => self
                .members
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Whether node `id` may fetch this node's images (see [`members::check_member`]).
    pub fn is_member(&self, id: &str) -> Result<(), String> {
        match self.raft().filter(|h| !h.is_stopped()) {
            Some(h) => {
                if h.store().read(|sm| sm.node(id).is_some()) {
                    Ok(())
                } else {
                    members::check_member(Some(&[]), id)
                }
            }
            None => {
                let ms = self.members.read().unwrap_or_else(|p| p.into_inner());
                members::check_member(ms.as_deref(), id)
            }
        }
    }

    /// The IP the cluster knows this node by (its `data_addr`), once known.
    pub fn own_data_addr(&self) -> Option<String> {
        let me = self.node_id();
        self.members()?
            .into_iter()
            .find(|m| m.node_id == me)
            .map(|m| m.data_addr)
            .filter(|a| !a.is_empty())
    }

    /// Resolves (with the reason) once this node can no longer serve as a manager and the
    /// process should exit to be restarted; pending forever otherwise.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let why = match rx.wait_for(|f| f.is_some()).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    pub fn identity(&self) -> Identity {
        self.identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        *self.listening.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save_node(&self) -> Result<(), ClusterError> {
        let path = self.cfg.state_dir.join("node.json");
        let data =
            serde_json::to_vec_pretty(&self.node_state()).map_err(|source| ClusterError::Json {
                path: path.clone(),
                source,
            })?;
        write_atomic(&path, &data, 0o600)
    }

    fn save_identity(&self) -> Result<(), ClusterError> {
        let id = self.identity();
        let d = self.cfg.state_dir.join("tls");
        write_atomic(&d.join("ca.crt"), id.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&d.join("node.crt"), id.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&d.join("node.key"), id.key_pem.as_bytes(), 0o600)
    }

    async fn listen(self: Arc<Self>, addr: SocketAddr) -> Result<(), ClusterError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ClusterError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ClusterError::Bind { addr, source })?;
        *self.listening.lock().unwrap_or_else(|p| p.into_inner()) = Some(local);
        let server_cfg = tls::server_config(&self.identity())?;
        let incoming = tls::incoming(listener, server_cfg);
        tracing::info!(addr = %local, "cluster port listening (mutual TLS)");
        // One set of services, served twice: connections of other managers (raft
        // streams, forwarded proposals) on the raft network runtime, everything else on
        // the process's. Both serve every route, so only where the work runs differs.
        let this = self.clone();
        let dispatcher = crate::orchestrator::dispatcher::DispatcherApi::new(self.clone());
        let serve = move |incoming: tokio_stream::wrappers::ReceiverStream<
            std::io::Result<tls::TlsConn>,
        >| {
            let svc = service::ClusterPort {
                cluster: this.clone(),
            };
            let events = pb::events_server::EventsServer::new(crate::api::events::EventsApi {
                cluster: this.clone(),
            });
            let dispatcher = skiff_proto::orchestrator::dispatcher_server::DispatcherServer::new(
                dispatcher.clone(),
            );
            let revocation = tonic::service::InterceptorLayer::new(refuse_removed(this.clone()));
            let extra = this.cfg.extra_routes.clone().unwrap_or_default();
            async move {
                let res = tonic::transport::Server::builder()
                    .layer(revocation)
                    .add_routes(extra)
                    .add_service(
                        pb::raft_server::RaftServer::new(svc.clone())
                            .max_decoding_message_size(256 << 20),
                    )
                    .add_service(pb::membership_server::MembershipServer::new(svc))
                    .add_service(events)
                    .add_service(dispatcher)
                    .serve_with_incoming(incoming)
                    .await;
                if let Err(e) = res {
                    tracing::error!(error = %e, "cluster port stopped");
                }
            }
        };
        let (rest_tx, rest_rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(serve(tokio_stream::wrappers::ReceiverStream::new(rest_rx)));
        let this = self.clone();
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            let mut incoming = incoming;
            // Started at the first manager connection: workers never need it.
            let mut managers: Option<tokio::sync::mpsc::Sender<_>> = None;
            while let Some(conn) = incoming.next().await {
                let conn = match conn {
                    Ok(c) if this.is_manager_peer(c.peer()) => {
                        if managers.is_none() {
                            managers = raft_runtime::handle().map(|rt| {
                                let (tx, rx) = tokio::sync::mpsc::channel(16);
                                rt.spawn(serve(tokio_stream::wrappers::ReceiverStream::new(rx)));
                                tx
                            });
                        }
                        match &managers {
                            Some(tx) => match tx.send(Ok(c)).await {
                                Ok(()) => continue,
                                Err(back) => back.0,
                            },
                            None => Ok(c),
                        }
                    }
                    other => other,
                };
                if rest_tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Whether a cluster-port peer is another manager of this one's cluster (or, on a
    /// member that has no state yet, any node: only the leader contacts it then).
    fn is_manager_peer(&self, peer: &tls::PeerIdentity) -> bool {
        let (Some(id), Some(h)) = (peer.node_id.as_deref(), self.raft()) else {
            return false;
        };
        h.store().read(|sm| {
            sm.nodes().next().is_none() || sm.node(id).is_some_and(|n| n.role == Role::Manager)
        })
    }

    async fn start_raft(
        self: &Arc<Self>,
        bootstrap: Bootstrap,
    ) -> Result<RaftHandle, ClusterError> {
        let n = self.node_state();
        let mut rc = RaftConfig::new(n.raft_id, self.cfg.state_dir.join("raft"));
        rc.tick = self.cfg.raft_tick;
        rc.snapshot_every = self.cfg.snapshot_every;
        rc.metrics = self.metrics.clone();
        let founding = matches!(bootstrap, Bootstrap::New(_));
        let h = consensus::start(rc, bootstrap, self.transport.clone())?;
        self.transport.set_raft(h.clone());
        *self.raft.write().unwrap_or_else(|p| p.into_inner()) = Some(h.clone());
        // A sole voter need not wait out an election timeout.
        if founding || h.status().voters == vec![n.raft_id] {
            h.campaign();
        }
        tokio::spawn(self.clone().manager_loop(h.clone()));
        Ok(h)
    }

    /// Keeps peer addresses in step with the state, tracks liveness while leading, and
    /// reacts to this node's own removal or demotion.
    async fn manager_loop(self: Arc<Self>, h: RaftHandle) {
        let mut was_leader = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            if h.is_stopped() {
                // Removal, demotion and replacement swap or clear the handle first; a
                // current handle that stopped did so on a storage error or a panic.
                let current = self.raft().is_some_and(|c| c.id() == h.id());
                if current && !h.status().removed {
                    self.fatal.send_replace(Some(
                        "the raft node stopped unexpectedly (a storage error or a panic, see \
                         the log above); exiting so a restart replays the log from disk"
                            .into(),
                    ));
                }
                return;
            }
            let st = h.status();
            let (addrs, managers, nodes) = h.store().read(|sm| {
                let ms: Vec<(u64, String, String)> = sm
                    .nodes()
                    .filter(|n| n.role == Role::Manager && n.raft_id != 0)
                    .map(|n| (n.raft_id, n.id.clone(), n.addr.clone()))
                    .collect();
                let addrs: HashMap<u64, String> = ms
                    .iter()
                    .filter(|(_, _, a)| !a.is_empty())
                    .map(|(r, _, a)| (*r, a.clone()))
                    .collect();
                let nodes: Vec<Node> = sm.nodes().cloned().collect();
                (addrs, ms, nodes)
            });
            if !addrs.is_empty() {
                self.transport.set_addrs(addrs);
            }
            if !managers.is_empty() {
                let changed = {
                    let mut n = self.node.write().unwrap_or_else(|p| p.into_inner());
                    let changed = n.managers != managers;
                    n.managers = managers;
                    changed
                };
                if changed {
                    let _ = self.save_node();
                }
            }
            if st.removed {
                self.on_removed(&h).await;
                return;
            }
            if !st.is_leader {
                was_leader = false;
                continue;
            }
            let now = Instant::now();
            let me = self.node_id();
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !was_leader {
                // A new leader gives everyone a full grace period, workers
                // [`FAILOVER_RECONNECT`] more: they find it only after the election,
                // each at its own point in its backoff (managers know the leader from
                // raft at once).
                seen.clear();
                for n in &nodes {
                    let extra = match n.role {
                        Role::Worker => FAILOVER_RECONNECT,
                        Role::Manager => Duration::ZERO,
                    };
                    seen.insert(n.id.clone(), now + extra);
                }
                was_leader = true;
            }
            seen.insert(me.clone(), now);
            let mut ops = Vec::new();
            for n in &nodes {
                let last = *seen.entry(n.id.clone()).or_insert(now);
                let alive = now.saturating_duration_since(last) < self.cfg.down_grace;
                let want = if alive {
                    NodeStatus::Ready
                } else {
                    NodeStatus::Down
                };
                if n.status != want && (n.status != NodeStatus::Unknown || !alive || n.id == me) {
                    if want == NodeStatus::Down {
                        tracing::info!(node = %n.id, silent_for = ?now.saturating_duration_since(last), "marking a silent node down");
                    }
                    ops.push(update_status(&n.id, want));
                }
            }
            drop(seen);
            if !ops.is_empty() {
                let h = h.clone();
                tokio::spawn(async move {
                    if let Err(e) = h.propose(Proposal::new(ops)).await {
                        tracing::debug!(error = %e, "recording node status");
                    }
                });
            }
        }
    }

    /// This manager applied its own removal: demoted (stay as a worker, wipe the raft log
    /// so a later promotion starts clean) or removed (refuse to run until wiped).
    async fn on_removed(&self, h: &RaftHandle) {
        h.stop();
        while !h.is_stopped() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *self.raft.write().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = std::fs::remove_dir_all(self.cfg.state_dir.join("raft"));
        {
            let mut n = self.node.write().unwrap_or_else(|p| p.into_inner());
            n.role = Role::Worker;
            n.raft_id = 0;
        }
        let _ = self.save_node();
        tracing::info!("this node left the raft group; it now runs as a worker");
    }

    /// `node promote` recorded this worker as a manager with a raft ID: start raft and ask
    /// to be added as a voter.
    async fn become_manager(self: &Arc<Self>) {
        if self.listen_addr().is_none() {
            tracing::warn!(
                "promoted to manager, but this agent has no --listen-addr; staying a worker"
            );
            return;
        }
        let me = self.node_id();
        let Some(raft_id) = self
            .node_state()
            .managers
            .iter()
            .find(|(_, n, _)| *n == me)
            .map(|m| m.0)
        else {
            return;
        };
        {
            let mut n = self.node.write().unwrap_or_else(|p| p.into_inner());
            n.role = Role::Manager;
            n.raft_id = raft_id;
        }
        let _ = self.save_node();
        let _ = std::fs::remove_dir_all(self.cfg.state_dir.join("raft"));
        match self.start_raft(Bootstrap::Join).await {
            Ok(_) => match self.request_voter().await {
                Ok(()) => tracing::info!(raft_id, "promoted: now a manager"),
                Err(e) => tracing::error!(error = %e, "promotion: could not join the raft group"),
            },
            Err(e) => tracing::error!(error = %e, "promotion: could not start raft"),
        }
    }

    /// Records a heartbeat (leader side).
    pub(crate) fn saw(&self, node_id: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_string(), Instant::now());
    }

    fn leader_addr(&self) -> Option<String> {
        let h = self.raft()?;
        let st = h.status();
        if st.leader_id == 0 {
            return None;
        }
        self.node_state()
            .managers
            .iter()
            .find(|(r, _, _)| *r == st.leader_id)
            .map(|(_, _, a)| a.clone())
            .filter(|a| !a.is_empty())
    }

    /// A mutual-TLS channel to a manager (the leader when known, else any), for
    /// node-side clients such as the task executor of a worker.
    pub fn manager_channel(&self) -> Result<tonic::transport::Channel, ClusterError> {
        let candidates: Vec<String> = match self.leader_addr() {
            Some(a) => vec![a],
            None => self
                .node_state()
                .managers
                .iter()
                .map(|(_, _, a)| a.clone())
                .filter(|a| !a.is_empty())
                .collect(),
        };
        let pick = rand::random::<u32>() as usize;
        let addr = candidates
            .get(pick % candidates.len().max(1))
            .cloned()
            .ok_or_else(|| ClusterError::NoManager("no manager address is known yet".into()))?;
        if let Some(ch) = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
        {
            return Ok(ch.clone());
        }
        let tls = tls::client_config(&self.identity().ca_pem, Some(&self.identity()))?;
        let ch = tls::channel(&addr, tls)?;
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, ch.clone());
        Ok(ch)
    }

    /// Mutual-TLS channels to every other manager, leader first, for node-side clients
    /// that may ask more than one (the image share asks each in turn).
    pub fn other_manager_channels(
        &self,
    ) -> Result<Vec<(String, tonic::transport::Channel)>, ClusterError> {
        let own = self.cfg.advertise();
        let leader = self.leader_addr();
        let mut addrs: Vec<String> = Vec::new();
        for (_, _, a) in self.node_state().managers {
            if !a.is_empty() && a != own && !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs.sort_by_key(|a| Some(a) != leader.as_ref());
        let tls = tls::client_config(&self.identity().ca_pem, Some(&self.identity()))?;
        addrs
            .into_iter()
            .map(|a| Ok((a.clone(), tls::channel(&a, tls.clone())?)))
            .collect()
    }

    /// One stream to the leader at a time; on any failure, try the next manager.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut next = 0usize;
        // A stream that lasted this long worked: the next failure retries quickly again.
        let worked = self.cfg.heartbeat_period * 3;
        let mut backoff = backoff::Backoff::new(Duration::from_millis(200), HEARTBEAT_RETRY_MAX);
        // The leader a manager named in refusing the stream: tried next, at once.
        let mut hinted: Option<String> = None;
        loop {
            let me = self.node_id();
            if let Some(h) = self.raft() {
                if h.status().is_leader {
                    // The leader hears no heartbeat of its own: it records its
                    // description itself.
                    let stale = h.store().read(|sm| {
                        sm.node(&me)
                            .is_some_and(|n| n.description != self.description())
                    });
                    if stale {
                        let op = Op::DescribeNode {
                            id: me.clone(),
                            description: self.description(),
                        };
                        if let Err(e) = h.propose(Proposal::new(vec![op])).await {
                            tracing::debug!(error = %e, "recording this node's description");
                        }
                    }
                    tokio::time::sleep(self.cfg.heartbeat_period).await;
                    continue;
                }
            }
            let candidates: Vec<String> = match self.leader_addr() {
                Some(a) => vec![a],
                None => self
                    .node_state()
                    .managers
                    .iter()
                    .map(|(_, _, a)| a.clone())
                    .filter(|a| !a.is_empty())
                    .collect(),
            };
            if candidates.is_empty() {
                tokio::time::sleep(self.cfg.heartbeat_period).await;
                continue;
            }
            let (addr, from_hint) = match hinted.take() {
                Some(a) => (a, true),
                None => {
                    next += 1;
                    (candidates[(next - 1) % candidates.len()].clone(), false)
                }
            };
            // The raft leader this stream goes to, if it does: a manager that sees the
            // stream break knows the leader is gone long before an election timeout.
            let to_leader = self
                .raft()
                .map(|h| h.status().leader_id)
                .filter(|l| *l != 0 && self.leader_addr().as_deref() == Some(addr.as_str()));
            let started = tokio::time::Instant::now();
            let ended = self.heartbeat_stream(&addr, &me).await;
            if started.elapsed() >= worked {
                backoff.reset();
            }
            // Only a leader that is certainly gone (its port refuses connections) ends
            // its lease early: a stream that broke or went quiet may come from a leader
            // starved of CPU (thousands of workers' streams on its runtime), and two
            // members dropping its lease at once deposed a working leader.
            if let (Some(h), Some(leader)) = (self.raft(), to_leader) {
                let removed = matches!(&ended, Err(s) if s.code() == tonic::Code::PermissionDenied);
                if !removed && transport::gone(&addr).await {
                    h.leader_lost(leader);
                }
            }
            // A manager that is not the leader names it: go there now (not again from
            // a hinted try, so two managers that disagree cannot bounce a node between
            // them without a pause).
            let hint = match &ended {
                Err(s) if s.code() == tonic::Code::Unavailable && !from_hint => s
                    .metadata()
                    .get(service::LEADER_HINT)
                    .and_then(|v| v.to_str().ok())
                    .filter(|a| *a != addr)
                    .map(str::to_string),
                _ => None,
            };
            if let Some(leader) = hint {
                tracing::debug!(manager = %addr, %leader, "not the leader; trying the one it names");
                hinted = Some(leader);
                continue;
            }
            match ended {
                Ok(()) => {}
                Err(s) if s.code() == tonic::Code::PermissionDenied => {
                    tracing::error!(manager = %addr, error = %s.message(), "the cluster refused this node");
                    if s.message().contains("removed") {
                        let _ = write_atomic(&self.cfg.state_dir.join("removed"), b"", 0o600);
                        return;
                    }
                }
                Err(s) => {
                    tracing::debug!(manager = %addr, error = %s.message(), "heartbeat stream ended")
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn heartbeat_stream(self: &Arc<Self>, addr: &str, me: &str) -> Result<(), tonic::Status> {
        let tls = tls::client_config(&self.identity().ca_pem, Some(&self.identity()))
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let ch = tls::channel(addr, tls).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = pb::membership_client::MembershipClient::new(ch);
        let period = self.cfg.heartbeat_period;
        let me_too = self.clone();
        let outbound = async_stream(me.to_string(), period, move || me_too.description());
        let mut inbound = client.heartbeat(outbound).await?.into_inner();
        loop {
            let msg = tokio::time::timeout(period * 3, inbound.message())
                .await
                .map_err(|_| tonic::Status::unavailable("heartbeat timed out"))??;
            let Some(resp) = msg else { return Ok(()) };
            if let Some(ms) = &resp.members {
                *self.members.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(members::from_pb(ms));
            }
            let managers: Vec<(u64, String, String)> = resp
                .managers
                .iter()
                .map(|p| (p.raft_id, p.node_id.clone(), p.addr.clone()))
                .collect();
            let changed = {
                let mut n = self.node.write().unwrap_or_else(|p| p.into_inner());
                let changed = !managers.is_empty() && n.managers != managers;
                if changed {
                    n.managers = managers;
                }
                changed
            };
            if changed {
                let _ = self.save_node();
            }
            if resp.desired_role == Role::Manager.as_str() && self.raft().is_none() {
                self.become_manager().await;
            }
            // If we lead now, the stream to the old leader is pointless.
            if let Some(h) = self.raft() {
                if h.status().is_leader {
                    return Ok(());
                }
            }
        }
    }

    /// Renews the node certificate when less than `renew_fraction` of its life remains.
    async fn renew_loop(self: Arc<Self>) {
        loop {
            let wait = match self.renew_due() {
                Ok(Some(d)) => d,
                Ok(None) => match self.renew().await {
                    Ok(()) => {
                        tracing::info!("node certificate renewed");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate renewal failed; will retry");
                        Duration::from_secs(1)
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read own certificate");
                    Duration::from_secs(60)
                }
            };
            tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
        }
    }

    /// `None` when renewal is due now, else how long until it is.
    fn renew_due(&self) -> Result<Option<Duration>, ClusterError> {
        let der = ca::pem_to_der(&self.identity().cert_pem)?;
        let (_, not_after) = ca::cert_identity(&der)?;
        let life = self.cfg.cert_validity.as_secs_f64();
        let renew_at = not_after - time::Duration::seconds_f64(life * self.cfg.renew_fraction);
        let now = time::OffsetDateTime::now_utc();
        Ok(if now >= renew_at {
            None
        } else {
            Some(Duration::from_secs_f64((renew_at - now).as_seconds_f64()))
        })
    }

    async fn renew(&self) -> Result<(), ClusterError> {
        let (key_pem, csr_pem) = ca::new_key_and_csr()?;
        let cert_pem = if let Some(h) = self.raft().filter(|h| !h.is_stopped()) {
            // A manager signs its own renewal with the replicated CA.
            let meta = h.store().read(|sm| sm.meta().clone());
            Ca::load(&meta.ca_cert_pem, &meta.ca_key_pem)?.sign_csr(
                &csr_pem,
                &self.node_id(),
                self.cfg.cert_validity,
            )?
        } else {
            let addr = self
                .leader_addr()
                .or_else(|| self.node_state().managers.first().map(|m| m.2.clone()))
                .unwrap_or_default();
            let tls = tls::client_config(&self.identity().ca_pem, Some(&self.identity()))?;
            let mut c = pb::membership_client::MembershipClient::new(tls::channel(&addr, tls)?);
            let r = c
                .renew_certificate(pb::RenewRequest {
                    csr_pem: csr_pem.into_bytes(),
                })
                .await
                .map_err(|s| ClusterError::Join {
                    addr: addr.clone(),
                    message: s.message().into(),
                })?;
            String::from_utf8_lossy(&r.into_inner().cert_pem).into_owned()
        };
        {
            let mut id = self.identity.write().unwrap_or_else(|p| p.into_inner());
            id.cert_pem = cert_pem;
            id.key_pem = key_pem;
        }
        self.save_identity()?;
        let id = self.identity();
        self.transport
            .set_tls(tls::client_config(&id.ca_pem, Some(&id))?);
        // New connections present the new certificate.
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }
}

/// The revocation check every request on the cluster port passes first: a certificate
/// whose node was removed (`node rm`) is refused whatever service it calls, even on a
/// connection opened before the removal. A worker (no state) refuses node certificates
/// not in the member list it last heard.
fn refuse_removed(
    cluster: Arc<Cluster>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let id = req
            .extensions()
            .get::<tls::PeerIdentity>()
            .and_then(|p| p.node_id.clone());
        match (id, cluster.raft()) {
            (Some(id), Some(h)) => {
                if h.store().read(|sm| sm.is_removed(&id)) {
                    return Err(tonic::Status::permission_denied(format!(
                        "node {id} was removed from the cluster; its certificate is revoked"
                    )));
                }
            }
            (Some(id), None) => {
                cluster
                    .is_member(&id)
                    .map_err(tonic::Status::permission_denied)?;
            }
            (None, _) => {}
        }
        Ok(req)
    }
}

/// Beats now and then every `period`, forever. The description rides on the first beat
/// of each stream and on the beats where it changed (the image-share port is known only
/// once that port is open); a new stream (a new leader) carries it again.
fn async_stream(
    node_id: String,
    period: Duration,
    describe: impl Fn() -> crate::model::NodeDescription + Send + Sync + 'static,
) -> impl futures::Stream<Item = pb::HeartbeatRequest> {
    let describe = Arc::new(describe);
    futures::stream::unfold(None, move |sent| {
        let node_id = node_id.clone();
        let describe = describe.clone();
        async move {
            if sent.is_some() {
                tokio::time::sleep(period).await;
            }
            let now = describe();
            let description = (sent.as_ref() != Some(&now)).then(|| now.clone().into());
            let req = pb::HeartbeatRequest {
                node_id,
                description,
            };
            Some((req, Some(now)))
        }
    })
}

/// Founds a new cluster: CA, secrets, this node as its only manager.
fn found(cfg: &ClusterConfig) -> Result<(NodeState, Identity, Store), ClusterError> {
    let cluster_id = model::new_id();
    let node_id = model::new_id();
    let raft_id = new_raft_id();
    let ca = Ca::create(&cluster_id)?;
    let (key_pem, csr) = ca::new_key_and_csr()?;
    let cert_pem = ca.sign_csr(&csr, &node_id, cfg.cert_validity)?;
    let meta = ClusterMeta {
        cluster_id: cluster_id.clone(),
        ca_cert_pem: ca.cert_pem().into(),
        ca_key_pem: ca.key_pem(),
        worker_secret: ca::new_secret(),
        manager_secret: ca::new_secret(),
    };
    let now = chrono::Utc::now().to_rfc3339();
    let node = Node {
        id: node_id.clone(),
        raft_id,
        hostname: cfg.hostname.clone(),
        role: Role::Manager,
        status: NodeStatus::Ready,
        addr: cfg.advertise(),
        data_addr: data_ip(&cfg.advertise(), None),
        engine_version: cfg.engine_version.clone(),
        version: 1,
        created_at: now.clone(),
        updated_at: now,
        ..Default::default()
    };
    let mut store = Store {
        meta,
        ..Default::default()
    };
    store.nodes.insert(node_id.clone(), node);
    tracing::info!(node_id = %node_id, cluster_id = %cluster_id, "founded a new cluster; this node is its manager");
    let ns = NodeState {
        node_id,
        cluster_id,
        role: Role::Manager,
        raft_id,
        managers: vec![(raft_id, String::new(), cfg.advertise())],
    };
    Ok((
        ns,
        Identity {
            ca_pem: ca.cert_pem().into(),
            cert_pem,
            key_pem,
        },
        store,
    ))
}

/// Joins an existing cluster: check the CA against the token, buy a certificate, and (as
/// a manager) ask to be added as a raft voter once our own raft node runs.
async fn join(
    cfg: &ClusterConfig,
    addr: &str,
    token: &str,
) -> Result<(NodeState, Identity), ClusterError> {
    let fail = |m: String| ClusterError::Join {
        addr: addr.into(),
        message: m,
    };
    let token = JoinToken::parse(token)?;
    // 1. The CA certificate, over TLS we cannot verify yet; trusted only if it matches.
    let ch = tls::channel(addr, tls::insecure_client()?)?;
    let ca_pem = pb::membership_client::MembershipClient::new(ch)
        .get_ca_cert(pb::Empty {})
        .await
        .map_err(|s| fail(format!("cannot reach the manager: {}", s.message())))?
        .into_inner()
        .cert_pem;
    let ca_pem = String::from_utf8_lossy(&ca_pem).into_owned();
    let digest = ca::cert_digest(&ca_pem)?;
    if digest != token.ca_digest {
        return Err(fail(format!(
            "the manager's CA (digest {digest}) does not match the join token: wrong cluster, or a man in the middle"
        )));
    }
    // 2. Buy a certificate with the token over TLS verified against that CA.
    let (key_pem, csr_pem) = ca::new_key_and_csr()?;
    let ch = tls::channel(addr, tls::client_config(&ca_pem, None)?)?;
    let resp = pb::membership_client::MembershipClient::new(ch)
        .join(pb::JoinRequest {
            token: token.to_string(),
            csr_pem: csr_pem.into_bytes(),
            hostname: cfg.hostname.clone(),
            advertise_addr: cfg.advertise(),
            engine_version: cfg.engine_version.clone(),
        })
        .await
        .map_err(|s| fail(s.message().to_string()))?
        .into_inner();
    let role = Role::parse(&resp.role).unwrap_or_default();
    if role == Role::Manager && cfg.listen_addr.is_none() {
        return Err(fail(
            "a manager needs a cluster port: pass --listen-addr".into(),
        ));
    }
    let managers: Vec<(u64, String, String)> = resp
        .managers
        .iter()
        .map(|p| (p.raft_id, p.node_id.clone(), p.addr.clone()))
        .collect();
    let raft_id = managers
        .iter()
        .find(|(_, n, _)| *n == resp.node_id)
        .map_or(0, |m| m.0);
    tracing::info!(node_id = %resp.node_id, role = role.as_str(), "joined the cluster");
    let id = Identity {
        ca_pem,
        cert_pem: String::from_utf8_lossy(&resp.cert_pem).into_owned(),
        key_pem,
    };
    Ok((
        NodeState {
            node_id: resp.node_id,
            cluster_id: String::new(),
            role,
            raft_id,
            managers,
        },
        id,
    ))
}

impl Cluster {
    /// Starts this manager's raft node. A log found damaged (a flipped byte, a bad
    /// snapshot, a cut tail), or a recovery a crash interrupted, is set aside and the node
    /// rejoins the raft group under a fresh raft ID, receiving a snapshot from the
    /// leader, as long as other managers exist to recover from. A fresh ID matters: the
    /// old one may have voted or acknowledged entries this node no longer remembers.
    async fn start_manager(self: &Arc<Self>, bootstrap: Bootstrap) -> Result<(), ClusterError> {
        let dir = self.cfg.state_dir.join("raft");
        if self.node_state().raft_id != 0 {
            // A lone manager has no one to recover from: it repairs a torn tail or refuses
            // corruption (DiskStorage::open). With peers, any damage means a lost log.
            let damage = if self.other_managers() > 0 {
                match crate::raft::storage::DiskStorage::check(&dir) {
                    Ok(r) if r.truncated_bytes > 0 => Some(format!(
                        "its last {} bytes are cut off or torn, so entries this manager \
                         acknowledged may be gone",
                        r.truncated_bytes
                    )),
                    Err(e) if e.is_corruption() => Some(e.to_string()),
                    _ => None,
                }
            } else {
                None
            };
            let Some(why) = damage else {
                return self.start_raft(bootstrap).await.map(|_| ());
            };
            tracing::error!(error = %why, "the raft log is damaged; setting it aside and recovering from the other managers");
            // Persisted first: a crash from here on resumes the recovery.
            self.set_raft_id(0)?;
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let aside = self.cfg.state_dir.join(format!("raft.damaged-{secs}"));
            std::fs::rename(&dir, &aside).map_err(io(&dir))?;
        }
        // Whatever a previous, interrupted attempt left is of no use to a new identity.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&dir)(e)),
            _ => {}
        }
        let raft_id = self.request_replacement().await?;
        self.set_raft_id(raft_id)?;
        self.start_raft(Bootstrap::Join).await?;
        tracing::warn!(
            raft_id,
            "rejoined the raft group under a new raft ID; catching up from the leader"
        );
        Ok(())
    }

    fn set_raft_id(&self, raft_id: u64) -> Result<(), ClusterError> {
        self.node.write().unwrap_or_else(|p| p.into_inner()).raft_id = raft_id;
        self.save_node()
    }

    /// Managers other than this one that this node knows an address for.
    fn other_managers(&self) -> usize {
        let n = self.node_state();
        let me = self.cfg.advertise();
        n.managers
            .iter()
            .filter(|(_, id, a)| !a.is_empty() && *a != me && *id != n.node_id)
            .count()
    }

    /// Asks the other managers to retire this node's old raft ID and add it back under a
    /// new one (`AddManager` with `replace`); returns the new ID.
    async fn request_replacement(&self) -> Result<u64, ClusterError> {
        let id = self.identity();
        let tls = tls::client_config(&id.ca_pem, Some(&id))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no other manager is known");
        while Instant::now() < deadline {
            for (_, _, addr) in self.node_state().managers {
                if addr.is_empty() || addr == self.cfg.advertise() {
                    continue;
                }
                let mut c =
                    pb::membership_client::MembershipClient::new(tls::channel(&addr, tls.clone())?);
                match c
                    .add_manager(pb::AddManagerRequest {
                        addr: self.cfg.advertise(),
                        replace: true,
                    })
                    .await
                {
                    Ok(r) if r.get_ref().raft_id != 0 => return Ok(r.into_inner().raft_id),
                    Ok(_) => last = format!("{addr} answered without a raft ID"),
                    Err(s) => last = format!("{addr}: {}", s.message()),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(ClusterError::Join {
            addr: "managers".into(),
            message: format!("could not rejoin the raft group after losing the log: {last}"),
        })
    }

    /// After a manager joined and its raft node runs: ask the leader to add it as a voter.
    pub async fn request_voter(&self) -> Result<(), ClusterError> {
        let id = self.identity();
        let tls = tls::client_config(&id.ca_pem, Some(&id))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            for (_, _, addr) in self.node_state().managers {
                if addr.is_empty()
                    || Some(addr.clone()) == self.listen_addr().map(|a| a.to_string())
                    || addr == self.cfg.advertise()
                {
                    continue;
                }
                let mut c =
                    pb::membership_client::MembershipClient::new(tls::channel(&addr, tls.clone())?);
                match c
                    .add_manager(pb::AddManagerRequest {
                        addr: self.cfg.advertise(),
                        replace: false,
                    })
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(s) => last = s.message().to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(ClusterError::Join {
            addr: "managers".into(),
            message: format!("could not be added as a manager: {last}"),
        })
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn the_description_rides_on_the_first_beat_and_on_changes() {
        let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let p = port.clone();
        let describe = move || crate::model::NodeDescription {
            image_share_port: p.load(std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        };
        let mut beats = Box::pin(async_stream(
            "n1".into(),
            Duration::from_millis(1),
            describe,
        ));
        let mut sent = Vec::new();
        for i in 0..4 {
            if i == 2 {
                port.store(7946, std::sync::atomic::Ordering::Relaxed);
            }
            let beat = beats.next().await.expect("endless");
            assert_eq!(beat.node_id, "n1");
            sent.push(beat.description.map(|d| d.image_share_port));
        }
        assert_eq!(sent, [Some(0), None, Some(7946), None]);
    }
}
