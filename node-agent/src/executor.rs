//! The task executor: makes the tasks the controller assigned to this node real through
//! the local engine, and reports their state back
//! (`assigned → starting → running → complete | failed | shutdown`).
//!
//! It is level-triggered: every pass compares the tasks assigned to this node with the
//! containers labelled with task IDs, and converges them (start, health-check, stop,
//! remove). Passes run after every cluster change and on a tick, so a missed event is
//! never a lost task. Status goes back as a task status carrying the task version it was
//! computed from; a conflict (the reconciler changed the task meanwhile) is retried on
//! the next pass.

use crate::engine::{Engine, ImageFetch};
use skiff_controller::consensus::RaftHandle;
use skiff_controller::orchestrator::reconcile::Stored;
use skiff_controller::orchestrator::runner::now_ms;
use skiff_controller::orchestrator::{Desired, Service, Task, TaskState, TaskStatus};
use skiff_runtime::container::Status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::Instrument;

pub use crate::labels::{LABEL_NODE, LABEL_SERVICE, LABEL_STACK_NETWORK, LABEL_TASK};

/// Overlay networks of the cluster (`all`) and those set up on this node (`ready`).
struct OverlaysReady {
    ready: std::collections::HashSet<String>,
    all: std::collections::HashSet<String>,
}

/// Health-check bookkeeping per task.
#[derive(Default, Clone)]
struct Health {
    last_run_ms: i64,
    failures: u32,
    verdict: String,
}

/// What the executor sees of the cluster: this node's tasks, their services, and the
/// cluster's network names.
#[derive(Default, Clone)]
pub struct View {
    pub tasks: Vec<Stored<Task>>,
    pub services: Vec<Stored<Service>>,
    pub networks: Vec<String>,
    /// Secret and config contents by (kind, name).
    pub files: HashMap<(String, String), String>,
    /// This node's part of the overlay networks.
    pub overlay: skiff_controller::orchestrator::overlay::OverlayView,
}

/// Where tasks come from and where their state goes: the local state machine on a
/// manager, the dispatcher stream on a worker.
#[tonic::async_trait]
pub trait Source: Send + Sync + 'static {
    fn view(&self, node_id: &str) -> View;
    /// Records the status of task `id` (at `version`) of node `node_id`.
    async fn report(
        &self,
        node_id: &str,
        id: &str,
        version: u64,
        status: &TaskStatus,
    ) -> Result<(), String>;
    /// Resolves after the next change (or a timeout the caller applies).
    async fn changed(&self);
    /// Whether there is a view at all. A worker's is empty until its first assignment set
    /// arrives, and that empty view means "not known yet", not "no tasks": acting on it
    /// would stop every container a restarted agent re-adopted.
    fn ready(&self) -> bool;
    /// Whether the view is known to be current: removing a container because its task
    /// is missing from a view that lags behind the cluster would kill healthy work.
    async fn current(&self) -> bool;
}

/// A manager's own state machine.
pub struct LocalSource {
    raft: RaftHandle,
    events: Mutex<tokio::sync::broadcast::Receiver<Arc<skiff_controller::state::Event>>>,
}

impl LocalSource {
    pub fn new(raft: RaftHandle) -> Arc<Self> {
        let events = raft.store().read(|sm| sm.subscribe());
        Arc::new(Self {
            raft,
            events: Mutex::new(events),
        })
    }
}

#[tonic::async_trait]
impl Source for LocalSource {
    fn view(&self, node_id: &str) -> View {
        self.raft.store().read(|sm| {
            let mut files = HashMap::new();
            for kind in [
                skiff_controller::orchestrator::KIND_SECRET,
                skiff_controller::orchestrator::KIND_CONFIG,
            ] {
                for o in sm.list(kind) {
                    if let Ok(c) = serde_json::from_slice::<
                        skiff_controller::orchestrator::FileContent,
                    >(&o.spec)
                    {
                        files.insert((kind.to_string(), o.name), c.content);
                    }
                }
            }
            View {
                // This node's tasks only (the store's per-node index): a manager's
                // executor looks after every change that concerns it.
                tasks: skiff_controller::store::node_tasks(sm, node_id),
                services: sm.decoded(skiff_controller::orchestrator::KIND_SERVICE),
                networks: sm
                    .list(skiff_controller::orchestrator::KIND_NETWORK)
                    .into_iter()
                    .map(|o| o.name)
                    .collect(),
                files,
                overlay: skiff_controller::orchestrator::overlay::view(sm, node_id),
            }
        })
    }

    /// The same rules as a worker's report through the dispatcher.
    async fn report(
        &self,
        node_id: &str,
        id: &str,
        version: u64,
        status: &TaskStatus,
    ) -> Result<(), String> {
        skiff_controller::orchestrator::dispatcher::record_status(
            &self.raft,
            node_id,
            id,
            version,
            status.clone(),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// The state machine is loaded from disk before the executor starts.
    fn ready(&self) -> bool {
        true
    }

    /// A manager's state can lag behind the leader's (just restarted, partitioned): a
    /// read barrier says it has caught up.
    async fn current(&self) -> bool {
        self.raft.read_barrier().await.is_ok()
    }

    async fn changed(&self) {
        let mut rx = self.events.lock().await;
        let _ = rx.recv().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        while rx.try_recv().is_ok() {}
    }
}

/// A worker: the dispatcher stream from a manager over mutual TLS, reconnected (to the
/// leader or another manager) whenever it breaks.
pub struct RemoteSource {
    cluster: Arc<skiff_controller::cluster::Cluster>,
    view: std::sync::RwLock<View>,
    notify: tokio::sync::Notify,
    /// Streams opened so far (a healthy quiet cluster opens one per manager change).
    opened: Arc<std::sync::atomic::AtomicU64>,
    /// An assignment set has arrived since the agent started (see [`Source::ready`]).
    received: AtomicBool,
    /// The stream now open has delivered its first set: the view is current. False
    /// between streams, while tasks removed meanwhile are not known.
    live: AtomicBool,
}

impl RemoteSource {
    pub fn spawn(cluster: Arc<skiff_controller::cluster::Cluster>) -> Arc<Self> {
        Self::spawn_counting(cluster, Arc::default())
    }

    /// As [`RemoteSource::spawn`], counting each stream it opens in `opened` (the node
    /// simulator sums them over its nodes to show reconnect storms).
    pub fn spawn_counting(
        cluster: Arc<skiff_controller::cluster::Cluster>,
        opened: Arc<std::sync::atomic::AtomicU64>,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            cluster,
            view: Default::default(),
            notify: tokio::sync::Notify::new(),
            opened,
            received: AtomicBool::new(false),
            live: AtomicBool::new(false),
        });
        let bg = me.clone();
        tokio::spawn(
            async move {
                // 0.5 s doubling to 5 s, jittered: a fleet reconnecting to an overloaded
                // manager must not keep it overloaded. A stream that outlived the silence
                // window worked, and the next failure retries quickly again.
                let mut backoff = skiff_controller::cluster::backoff::Backoff::new(
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                );
                let worked = skiff_controller::orchestrator::dispatcher::ASSIGNMENTS_SILENCE;
                loop {
                    let started = tokio::time::Instant::now();
                    let ended = bg.stream().await;
                    bg.live.store(false, Ordering::Release);
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "assignment stream ended; reconnecting");
                    }
                    if started.elapsed() >= worked {
                        backoff.reset();
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            .instrument(tracing::info_span!("assignments")),
        );
        me
    }

    async fn stream(&self) -> Result<(), String> {
        use skiff_proto::orchestrator::dispatcher_client::DispatcherClient;
        let ch = self.cluster.manager_channel().map_err(|e| e.to_string())?;
        let mut c = DispatcherClient::new(ch);
        let mut s = c
            .assignments(skiff_proto::orchestrator::AssignmentsRequest { keepalive: true })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let silence = skiff_controller::orchestrator::dispatcher::ASSIGNMENTS_SILENCE;
        loop {
            // A manager that keeps the connection but stops sending (stopped, or cut off
            // from the others) is left for another; a quiet one sends keepalives.
            let msg = tokio::time::timeout(silence, s.message())
                .await
                .map_err(|_| format!("no assignments for {}s", silence.as_secs()))?
                .map_err(|e| e.to_string())?;
            let Some(set) = msg else { return Ok(()) };
            if set.unchanged {
                continue;
            }
            self.cluster.set_revoked_clients(&set.revoked_clients);
            // A set this agent cannot read is refused whole: acting on part of it could
            // stop tasks that are missing only because they did not decode.
            let wire = |e: skiff_controller::model::wire::WireError| format!("assignments: {e}");
            let view = View {
                tasks: set
                    .tasks
                    .into_iter()
                    .map(Stored::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(wire)?,
                services: set
                    .services
                    .into_iter()
                    .map(Stored::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(wire)?,
                networks: set.networks,
                files: set
                    .files
                    .into_iter()
                    .map(|f| ((f.kind, f.name), f.content))
                    .collect(),
                overlay: set
                    .overlay
                    .map(TryInto::try_into)
                    .transpose()
                    .map_err(wire)?
                    .unwrap_or_default(),
            };
            if let Ok(mut v) = self.view.write() {
                *v = view;
            }
            self.received.store(true, Ordering::Release);
            self.live.store(true, Ordering::Release);
            self.notify.notify_waiters();
        }
    }
}

#[tonic::async_trait]
impl Source for RemoteSource {
    fn view(&self, _node_id: &str) -> View {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// The node is the one the certificate names: `node_id` is not sent.
    async fn report(
        &self,
        _node_id: &str,
        id: &str,
        version: u64,
        status: &TaskStatus,
    ) -> Result<(), String> {
        use skiff_proto::orchestrator::dispatcher_client::DispatcherClient;
        let ch = self.cluster.manager_channel().map_err(|e| e.to_string())?;
        DispatcherClient::new(ch)
            .update_task_status(skiff_proto::orchestrator::UpdateTaskStatusRequest {
                task_id: id.into(),
                version,
                status: Some(status.clone().into()),
            })
            .await
            .map(|_| ())
            .map_err(|e| e.message().to_string())
    }

    async fn changed(&self) {
        self.notify.notified().await;
    }

    fn ready(&self) -> bool {
        self.received.load(Ordering::Acquire)
    }

    async fn current(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }
}

pub struct Executor {
    engine: Arc<dyn Engine>,
    source: Arc<dyn Source>,
    node_id: String,
    health: Mutex<HashMap<String, Health>>,
    /// Tasks with a start or stop in progress (both run concurrently, off the pass).
    in_flight: Mutex<std::collections::HashSet<String>>,
    /// Wakes the data-plane loop (see [`Executor::spawn`]).
    dataplane: tokio::sync::Notify,
    /// Brings a task's image to this node when it lacks it.
    images: Option<Arc<dyn ImageFetch>>,
}

/// Least time between two data-plane syncs. During a deploy the view changes dozens of
/// times a second; each sync may run `nft` and `ip`, so changes are batched: the first
/// after a quiet spell is programmed at once, later ones at most this often.
const DATAPLANE_INTERVAL: Duration = Duration::from_millis(100);

impl Executor {
    /// An executor that has not started its loops (see [`Executor::spawn`]).
    pub fn new(
        engine: Arc<dyn Engine>,
        source: Arc<dyn Source>,
        node_id: String,
        images: Option<Arc<dyn ImageFetch>>,
    ) -> Arc<Self> {
        Arc::new(Executor {
            engine,
            source,
            node_id,
            health: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(Default::default()),
            dataplane: tokio::sync::Notify::new(),
            images,
        })
    }

    pub fn spawn(
        engine: Arc<dyn Engine>,
        source: Arc<dyn Source>,
        node_id: String,
        images: Option<Arc<dyn ImageFetch>>,
    ) {
        let ex = Self::new(engine, source, node_id.clone(), images);
        // The data plane (overlay forwarding entries, virtual IPs, DNS names, published
        // service ports) follows the latest view in a loop of its own, so bursts of
        // changes cost one sync rather than one each.
        let dp = ex.clone();
        tokio::spawn(
            async move {
                let mut last: Option<tokio::time::Instant> = None;
                loop {
                    dp.dataplane.notified().await;
                    if let Some(at) = last {
                        tokio::time::sleep_until(at + DATAPLANE_INTERVAL).await;
                    }
                    last = Some(tokio::time::Instant::now());
                    let view = dp.source.view(&dp.node_id);
                    let containers = dp.task_containers(&dp.engine.labelled(LABEL_TASK));
                    let nets = dp.engine.networks();
                    if let Err(e) = nets.sync_overlays(&view.overlay, &dp.node_id).await {
                        tracing::warn!(error = %e, "programming overlay networks");
                    }
                    dp.publish_service_ports(&view, &containers).await;
                }
            }
            .instrument(tracing::info_span!("dataplane", node_id = %node_id)),
        );
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = ex.source.changed() => {}
                    }
                    ex.pass().await;
                }
            }
            .instrument(tracing::info_span!("executor", node_id = %node_id)),
        );
    }

    fn my_tasks(&self) -> Vec<Stored<Task>> {
        self.source.view(&self.node_id).tasks
    }

    /// Containers of this node that belong to tasks: task ID → container ID, a running
    /// one where a task has several (only a fault makes two; the pass removes the others).
    fn task_containers(&self, labelled: &[(String, String)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = HashMap::new();
        for (task, cid) in labelled {
            let replace = match map.get(task) {
                None => true,
                Some(have) => {
                    !self.engine.state(have).is_some_and(|s| s.is_running())
                        && self.engine.state(cid).is_some_and(|s| s.is_running())
                }
            };
            if replace {
                map.insert(task.clone(), cid.clone());
            }
        }
        map
    }

    /// A namespace mode for the engine: `service:NAME` becomes `container:ID` of a
    /// running task of NAME on this node (the controller places the task beside one
    /// and starts it after); other modes go as they are. `key` names the setting in
    /// the error when no such task runs here.
    fn peer_mode(&self, key: &str, mode: &str) -> Result<String, String> {
        let Some(service) = mode.strip_prefix("service:") else {
            return Ok(mode.to_string());
        };
        self.engine
            .labelled(LABEL_SERVICE)
            .into_iter()
            .filter(|(svc, id)| {
                svc == service && self.engine.state(id).is_some_and(|s| s.is_running())
            })
            .map(|(_, id)| id)
            .min()
            .map(|id| format!("container:{id}"))
            .ok_or_else(|| format!("{key} {mode}: no running task of {service} on this node"))
    }

    /// A task that could not be prepared (image, network, container): rejected with why.
    async fn reject_preparing(&self, t: &Stored<Task>, error: String) {
        self.report(t, |v| {
            v.status.state = TaskState::Rejected;
            v.status.error = error;
            v.status.message = "preparing failed".into();
        })
        .await;
    }

    async fn report(&self, t: &Stored<Task>, f: impl FnOnce(&mut Task)) {
        let mut v = t.value.clone();
        f(&mut v);
        if v == t.value {
            return;
        }
        v.status.timestamp_ms = now_ms();
        if let Err(e) = self
            .source
            .report(&self.node_id, &t.id, t.version, &v.status)
            .await
        {
            tracing::debug!(task_id = %t.id, error = %e, "task status not recorded; retrying next pass");
        } else {
            tracing::info!(task_id = %t.id, state = v.status.state.as_str(), "task state");
            if v.status.state != t.value.status.state {
                self.engine.task_state_changed(v.status.state.as_str());
            }
        }
    }

    async fn pass(self: &Arc<Self>) {
        if !self.source.ready() {
            return; // nothing is known yet; the first view wakes the loop
        }
        // One read of the cluster's view per pass; every rule below works from it.
        let view = self.source.view(&self.node_id);
        let tasks = &view.tasks;
        let labelled = self.engine.labelled(LABEL_TASK);
        let containers = self.task_containers(&labelled);
        let now = now_ms();
        let overlays_ready = self.sync_overlays(&view.overlay).await;
        for t in tasks {
            let cid = containers.get(&t.id).cloned();
            let span = tracing::info_span!("task", task_id = %t.id);
            match (t.value.desired, t.value.status.state) {
                (Desired::Running, s)
                    if s <= TaskState::Assigned && !t.value.node_id.is_empty() =>
                {
                    if t.value.not_before_ms > now || !Self::networks_ready(t, &overlays_ready) {
                        continue;
                    }
                    // Already running: started by an earlier pass whose report was refused
                    // (the task's version moved on meanwhile) or has not reached this view
                    // yet. Report again; starting afresh would kill a healthy container.
                    if let Some(c) = &cid {
                        if self.engine.state(c).is_some_and(|s| s.is_running()) {
                            if !self.in_flight.lock().await.contains(&t.id) {
                                self.report(t, |v| mark_running(v, c))
                                    .instrument(span)
                                    .await;
                            }
                            continue;
                        }
                    }
                    // Starts run concurrently; the `in_flight` set doubles as the in-flight
                    // guard so a slow start is not begun twice by the next pass.
                    if !self.in_flight.lock().await.insert(t.id.clone()) {
                        continue;
                    }
                    let me = self.clone();
                    let t = t.clone();
                    tokio::spawn(
                        async move {
                            me.start(&t).await;
                            me.in_flight.lock().await.remove(&t.id);
                        }
                        .instrument(span),
                    );
                }
                (Desired::Running, TaskState::Starting | TaskState::Running) => {
                    self.observe(t, cid, now).instrument(span).await;
                }
                (Desired::Shutdown, s) if !s.is_terminal() => {
                    if !self.in_flight.lock().await.insert(t.id.clone()) {
                        continue; // a stop is already in flight
                    }
                    let me = self.clone();
                    let t = t.clone();
                    tokio::spawn(
                        async move {
                            if let Some(c) = &cid {
                                let grace =
                                    (t.value.template.stop_grace_period_ms / 1000).max(1) as u32;
                                let _ = me.engine.stop(c, Some(grace)).await;
                            }
                            // Re-read the task: its version moved while we waited.
                            let fresh = me.my_tasks().into_iter().find(|x| x.id == t.id);
                            if let Some(fresh) = fresh {
                                me.report(&fresh, |v| {
                                    v.status.state = TaskState::Shutdown;
                                    v.status.message = "shutdown".into();
                                })
                                .await;
                            }
                            me.in_flight.lock().await.remove(&t.id);
                        }
                        .instrument(span),
                    );
                }
                _ => {}
            }
        }
        self.prune_networks(&view.networks).await;
        // Containers of tasks that are finished, told to stop, or gone from the store
        // (a task marked orphaned while this node was away still has its container),
        // and any second container of a task.
        let mut current = None;
        for (task_id, cid) in &labelled {
            let task = tasks.iter().find(|t| &t.id == task_id);
            let keep = task.is_some_and(|t| {
                t.value.desired == Desired::Running && !t.value.status.state.is_terminal()
            });
            if keep && containers.get(task_id) == Some(cid) {
                continue;
            }
            // Gone from the store, or not there yet: only act on a view known current.
            if task.is_none() {
                if current.is_none() {
                    current = Some(self.source.current().await);
                }
                if current != Some(true) {
                    continue;
                }
            }
            if !self.in_flight.lock().await.insert(task_id.clone()) {
                continue;
            }
            let me = self.clone();
            let (task_id, cid) = (task_id.clone(), cid.clone());
            // Unknown task: the container's own stop timeout (set from the task's
            // stop_grace_period when it was made).
            let grace = task.map(|t| (t.value.template.stop_grace_period_ms / 1000).max(1) as u32);
            tokio::spawn(async move {
                if me.engine.state(&cid).is_some_and(|s| s.is_running()) {
                    let _ = me.engine.stop(&cid, grace).await;
                }
                let _ = me.engine.remove(&cid, true).await;
                let _ = std::fs::remove_dir_all(me.files_dir(&task_id));
                me.health.lock().await.remove(&task_id);
                me.in_flight.lock().await.remove(&task_id);
            });
        }
    }

    /// Starts `t`'s container; the caller holds the task's in-flight guard.
    async fn start(&self, t: &Stored<Task>) {
        // The task's containers are read here, under the guard, not from the pass: a start
        // that ended after the pass read them has made one, and a second would run the
        // task twice. A running one is reported (its report was refused or not yet seen);
        // others are left from a start whose report was lost, and go.
        let mine: Vec<String> = self
            .engine
            .labelled(LABEL_TASK)
            .into_iter()
            .filter(|(task, _)| task == &t.id)
            .map(|(_, c)| c)
            .collect();
        if let Some(c) = mine
            .iter()
            .find(|c| self.engine.state(c).is_some_and(|s| s.is_running()))
        {
            self.report(t, |v| mark_running(v, c)).await;
            return;
        }
        for c in mine {
            let _ = self.engine.remove(&c, true).await;
        }
        let tpl = &t.value.template;
        // The image first: from a registry the reference names, else from a node
        // that has it (see `imageshare`).
        if let Some(fetcher) = &self.images {
            if let Err(e) = fetcher.ensure(&tpl.image).await {
                self.reject_preparing(t, e).await;
                return;
            }
        }
        let mut labels: std::collections::HashMap<String, String> =
            tpl.labels.clone().into_iter().collect();
        labels.insert(LABEL_TASK.into(), t.id.clone());
        labels.insert(LABEL_SERVICE.into(), t.value.service_name.clone());
        labels.insert(LABEL_NODE.into(), self.node_id.clone());
        // The first network carries the container; service names resolve as aliases
        // (on overlays, through the cluster-wide names instead).
        let mut network_mode = String::from("bridge");
        let mut aliases = Vec::new();
        let mut ipv4_address = String::new();
        if let Some((net, al)) = tpl.networks.iter().next() {
            if let Some(ip) = t.value.addresses.get(net) {
                network_mode = net.clone();
                ipv4_address = ip.to_string();
            } else if let Err(e) = self.ensure_network(net).await {
                self.reject_preparing(t, e).await;
                return;
            } else {
                network_mode = net.clone();
                aliases = al.clone();
            }
        }
        let opts = &tpl.container;
        let shared = [
            ("network_mode", &opts.network_mode),
            ("ipc", &opts.ipc),
            ("pid", &opts.pid),
        ]
        .map(|(key, mode)| self.peer_mode(key, mode));
        let [network, ipc_mode, pid_mode] = match shared {
            [Ok(n), Ok(i), Ok(p)] => [n, i, p],
            [Err(e), ..] | [_, Err(e), _] | [.., Err(e)] => {
                self.reject_preparing(t, e).await;
                return;
            }
        };
        if !network.is_empty() {
            network_mode = network;
        }
        let mut binds: Vec<String> = tpl
            .mounts
            .iter()
            .filter(|m| m.kind != "tmpfs" && !m.source.is_empty())
            .map(|m| {
                format!(
                    "{}:{}{}",
                    m.source,
                    m.target,
                    if m.read_only { ":ro" } else { "" }
                )
            })
            .collect();
        match self.write_files(t) {
            Ok(mut extra) => binds.append(&mut extra),
            Err(e) => {
                self.reject_preparing(t, e).await;
                return;
            }
        }
        let tmpfs = tpl
            .mounts
            .iter()
            .filter(|m| m.kind == "tmpfs")
            .map(|m| m.target.clone())
            .chain(opts.tmpfs.iter().cloned())
            .collect();
        let config = skiff_proto::engine::ContainerConfig {
            image: tpl.image.clone(),
            cmd: tpl.command.clone().unwrap_or_default(),
            entrypoint_set: tpl.entrypoint.is_some(),
            entrypoint: tpl.entrypoint.clone().unwrap_or_default(),
            env: tpl.env.clone(),
            working_dir: tpl.working_dir.clone(),
            user: tpl.user.clone(),
            hostname: tpl.hostname.clone(),
            labels,
            network_mode,
            stop_signal: tpl.stop_signal.clone(),
            stop_timeout: (tpl.stop_grace_period_ms / 1000) as i32,
            binds,
            tmpfs,
            resources: Some(skiff_proto::engine::Resources {
                memory: tpl.limits.memory_bytes,
                nano_cpus: tpl.limits.nano_cpus,
                pids_limit: tpl.limits.pids,
                memory_reservation: tpl.reservations.memory_bytes,
                ulimits: opts.ulimits.clone(),
                ..Default::default()
            }),
            net: Some(skiff_proto::engine::NetworkOptions {
                aliases,
                ipv4_address,
                dns: opts.dns.clone(),
                dns_search: opts.dns_search.clone(),
                dns_options: opts.dns_options.clone(),
                extra_hosts: opts.extra_hosts.clone(),
                ..Default::default()
            }),
            tty: opts.tty,
            open_stdin: opts.stdin_open,
            read_only: opts.read_only,
            privileged: opts.privileged,
            cap_add: opts.cap_add.clone(),
            cap_drop: opts.cap_drop.clone(),
            security_opt: opts.security_opt.clone(),
            init: opts.init,
            devices: opts.devices.clone(),
            log_opts: opts.log_opts.clone(),
            sysctls: opts
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            shm_size: opts.shm_size,
            ipc_mode,
            pid_mode,
            ..Default::default()
        };
        let name = format!(
            "{}.{}.{}",
            t.value.service_name,
            if t.value.slot > 0 {
                t.value.slot.to_string()
            } else {
                self.node_id[..self.node_id.len().min(12)].to_string()
            },
            &t.id[..t.id.len().min(12)]
        );
        let id = match self.engine.create(Some(name), config).await {
            Ok(id) => id,
            Err(e) => {
                self.reject_preparing(t, e.to_string()).await;
                return;
            }
        };
        match self.engine.start(&id).await {
            Ok(()) => self.report(t, |v| mark_running(v, &id)).await,
            Err(e) => {
                let msg = e.to_string();
                self.report(t, |v| {
                    v.status.state = TaskState::Failed;
                    v.status.error = msg;
                    v.status.message = "starting container failed".into();
                    v.status.container_id = id.clone();
                })
                .await
            }
        }
    }

    /// Makes this node's side of its overlay networks exist (the data-plane loop programs
    /// them) and returns the overlay networks ready for containers (by name).
    async fn sync_overlays(
        &self,
        ov: &skiff_controller::orchestrator::overlay::OverlayView,
    ) -> OverlaysReady {
        let nets = self.engine.networks();
        let mut ready = std::collections::HashSet::new();
        for o in &ov.networks {
            match nets.ensure_overlay(o, &self.node_id).await {
                Ok(()) => {
                    ready.insert(o.name.clone());
                }
                Err(e) => {
                    tracing::warn!(network = %o.name, error = %e, "setting up overlay network")
                }
            }
        }
        self.dataplane.notify_one();
        let keep = ov.networks.iter().map(|o| o.id.clone()).collect();
        for name in nets.prune_overlays(&keep).await {
            self.engine
                .events()
                .emit("network", "destroy", &name, Default::default());
        }
        OverlaysReady {
            ready,
            all: ov.all.iter().cloned().collect(),
        }
    }

    /// Whether a task's first network can take it: overlays need this node's side set
    /// up and the task's address allocated; other networks are made on demand.
    fn networks_ready(t: &Stored<Task>, o: &OverlaysReady) -> bool {
        match t.value.template.networks.keys().next() {
            Some(net) if o.all.contains(net) => {
                o.ready.contains(net) && t.value.addresses.contains_key(net)
            }
            _ => true,
        }
    }

    /// Publishes each service's ports on this node. Ingress ports of services on an
    /// overlay form the routing mesh: every node balances them over every running task
    /// of the cluster. Other ports (`mode: host`, or services on local networks) go to
    /// this node's own running tasks.
    async fn publish_service_ports(&self, view: &View, containers: &HashMap<String, String>) {
        let (tasks, services) = (&view.tasks, &view.services);
        let mut keep = std::collections::HashSet::new();
        let ov = &view.overlay;
        let mut meshed = std::collections::HashSet::new();
        for s in &ov.services {
            let Some(net) = s.aliases.keys().next() else {
                continue;
            };
            for p in s
                .ports
                .iter()
                .filter(|p| skiff_controller::orchestrator::netalloc::is_ingress(p))
            {
                let Ok(proto) = p.protocol.parse::<skiff_runtime::network::Proto>() else {
                    continue;
                };
                meshed.insert(s.name.clone());
                let mut backends: Vec<(std::net::Ipv4Addr, u16)> = ov
                    .endpoints
                    .iter()
                    .filter(|e| &e.network == net && e.service == s.name && e.running)
                    .map(|e| (e.ip, p.target))
                    .collect();
                backends.sort();
                let key = format!("{}/{}/{}", s.name, proto, p.published);
                if !backends.is_empty() {
                    keep.insert(key);
                }
                if let Err(e) = self
                    .engine
                    .networks()
                    .set_service_port(&s.name, proto, p.published, backends)
                    .await
                {
                    tracing::warn!(service = %s.name, port = p.published, error = %e, "publishing mesh port");
                }
            }
        }
        for svc in services {
            for p in svc.value.spec.ports.iter().filter(|p| {
                p.published > 0
                    && !(meshed.contains(&svc.value.spec.name)
                        && skiff_controller::orchestrator::netalloc::is_ingress(p))
            }) {
                let Ok(proto) = p.protocol.parse::<skiff_runtime::network::Proto>() else {
                    continue;
                };
                let mut backends = Vec::new();
                for t in tasks.iter().filter(|t| {
                    t.value.service_id == svc.id
                        && t.value.desired == Desired::Running
                        && t.value.status.state == TaskState::Running
                }) {
                    if let Some(cid) = containers.get(&t.id) {
                        if let Some(ip) = self.engine.networks().primary_ip(cid).await {
                            backends.push((ip, p.target));
                        }
                    }
                }
                backends.sort();
                let key = format!("{}/{}/{}", svc.value.spec.name, proto, p.published);
                if !backends.is_empty() {
                    keep.insert(key);
                }
                if let Err(e) = self
                    .engine
                    .networks()
                    .set_service_port(&svc.value.spec.name, proto, p.published, backends)
                    .await
                {
                    tracing::warn!(service = %svc.value.spec.name, port = p.published, error = %e, "publishing service port");
                }
            }
        }
        if let Err(e) = self.engine.networks().retain_service_ports(&keep).await {
            tracing::warn!(error = %e, "unpublishing service ports");
        }
    }

    /// Removes local networks made for stacks once the cluster no longer has them and
    /// no container uses them.
    async fn prune_networks(&self, wanted: &[String]) {
        for n in self.engine.networks().list().await {
            let ours = n
                .labels
                .get(LABEL_STACK_NETWORK)
                .map(|v| v == "true")
                .unwrap_or(false);
            if ours
                && n.endpoints == 0
                && !wanted.contains(&n.name)
                && self.engine.networks().remove(&n.id).await.is_ok()
            {
                tracing::info!(network = %n.name, "removed stack network");
                self.engine
                    .events()
                    .emit("network", "destroy", &n.id, Default::default());
            }
        }
    }

    /// Where a task's secrets and configs are written (0700, removed with the task).
    fn files_dir(&self, task_id: &str) -> std::path::PathBuf {
        self.engine.root().join("taskfiles").join(task_id)
    }

    /// Writes the task's secrets and configs and returns read-only binds for them.
    fn write_files(&self, t: &Stored<Task>) -> Result<Vec<String>, String> {
        use std::os::unix::fs::PermissionsExt;
        let files = &t.value.template.files;
        if files.is_empty() {
            return Ok(vec![]);
        }
        let view = self.source.view(&self.node_id);
        let dir = self.files_dir(&t.id);
        skiff_runtime::fsutil::create_dir_mode(&dir, 0o700)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut binds = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let content = view
                .files
                .get(&(f.kind.clone(), f.name.clone()))
                .ok_or_else(|| format!("{} {} not found", f.kind, f.name))?;
            let path = dir.join(format!("{i}-{}", f.name));
            skiff_runtime::fsutil::write_atomic(&path, content.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mode = if f.mode == 0 { 0o444 } else { f.mode };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
            binds.push(format!("{}:{}:ro", path.display(), f.target));
        }
        Ok(binds)
    }

    async fn ensure_network(&self, name: &str) -> Result<(), String> {
        if self.engine.networks().resolve(name).await.is_ok() {
            return Ok(());
        }
        let req = crate::network::CreateNetwork {
            name: name.into(),
            driver: "bridge".into(),
            labels: [(LABEL_STACK_NETWORK.to_string(), "true".to_string())].into(),
            ..Default::default()
        };
        match self.engine.networks().create(req).await {
            Ok(_) => Ok(()),
            Err(e) if self.engine.networks().resolve(name).await.is_ok() => {
                tracing::debug!(error = %e, "network created concurrently");
                Ok(())
            }
            Err(e) => Err(format!("creating network {name}: {e}")),
        }
    }

    /// Watches a running task: exits become complete/failed, health checks run.
    async fn observe(&self, t: &Stored<Task>, cid: Option<String>, now: i64) {
        let Some(cid) = cid else {
            self.report(t, |v| {
                v.status.state = TaskState::Failed;
                v.status.error = "task container disappeared".into();
            })
            .await;
            return;
        };
        let Some(st) = self.engine.state(&cid) else {
            return;
        };
        if matches!(st.status, Status::Exited | Status::Dead) {
            let code = st.exit_code;
            self.report(t, |v| {
                v.status.exit_code = code;
                if code == 0 {
                    v.status.state = TaskState::Complete;
                    v.status.message = "finished".into();
                } else {
                    v.status.state = TaskState::Failed;
                    v.status.error = format!("task: non-zero exit ({code})");
                    v.status.message = "failed".into();
                }
            })
            .await;
            return;
        }
        let Some(hc) = t.value.template.healthcheck.clone() else {
            return;
        };
        if hc.test.first().map(|s| s == "NONE").unwrap_or(true) {
            return;
        }
        let mut h = self
            .health
            .lock()
            .await
            .get(&t.id)
            .cloned()
            .unwrap_or_default();
        let started = st.started_at.map(|s| s.timestamp_millis()).unwrap_or(now);
        let interval = hc.interval_ms.max(200) as i64;
        if now - h.last_run_ms < interval {
            return;
        }
        h.last_run_ms = now;
        let argv: Vec<String> = match hc.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), hc.test[1..].join(" ")],
            Some("CMD") => hc.test[1..].to_vec(),
            _ => hc.test.clone(),
        };
        let ok = self
            .exec_status(&cid, argv, Duration::from_millis(hc.timeout_ms.max(500)))
            .await
            == Some(0);
        if ok {
            h.failures = 0;
            h.verdict = "healthy".into();
        } else if now - started >= hc.start_period_ms as i64 {
            h.failures += 1;
            if h.failures >= hc.retries.max(1) {
                h.verdict = "unhealthy".into();
            }
        }
        let verdict = h.verdict.clone();
        self.health.lock().await.insert(t.id.clone(), h);
        if !verdict.is_empty() && verdict != t.value.status.health {
            self.report(t, |v| v.status.health = verdict.clone()).await;
            if verdict == "unhealthy" {
                // Like Swarm: an unhealthy task is stopped and replaced.
                let _ = self.engine.stop(&cid, Some(1)).await;
            }
        }
    }

    /// Runs a command in the container and returns its exit code (None on timeout).
    async fn exec_status(&self, cid: &str, args: Vec<String>, timeout: Duration) -> Option<i32> {
        let run = self.engine.exec(cid, args);
        tokio::time::timeout(timeout, run).await.ok()?.ok()
    }
}

/// A task's status once its container `id` runs.
fn mark_running(v: &mut Task, id: &str) {
    v.status.state = TaskState::Running;
    v.status.message = "started".into();
    v.status.container_id = id.to_string();
    v.status.health = if v.template.healthcheck.is_some() {
        "starting".into()
    } else {
        String::new()
    };
}

#[cfg(test)]
mod tests;
