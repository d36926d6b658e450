//! A node simulator: many agents in one process against real managers, for scale runs
//! (`skiff-sim`, `deploy/bench/scale.sh`, `tests/scale_sim.rs`).
//!
//! Each simulated node is what a worker agent is minus the kernel: it joins with a token
//! and gets its own certificate ([`Cluster`] in join mode), keeps the real heartbeat and
//! assignment streams over mutual TLS ([`RemoteSource`]) and runs the real
//! [`Executor`], over an in-memory engine ([`SimEngine`]) that starts with a configured
//! latency and fails or exits as configured.
//!
//! Every node runs on its own thread with a single-threaded tokio runtime: killing a
//! node drops its runtime (every task and connection of that node ends at once, as a
//! `kill -9` would), and pausing one blocks its thread (its connections stay open but
//! silent, as a `SIGSTOP` or a partition would look to the managers). A killed node
//! brought back resumes from its state directory with the containers it had (an agent
//! restart).

use crate::rng::Rng;
use skiff_agent::engine::fake::{Behaviour as FakeBehaviour, FakeEngine};
use skiff_agent::engine::{Engine, NetworkEngine};
use skiff_agent::error::AgentError;
use skiff_agent::events::EventBus;
use skiff_agent::executor::{Executor, RemoteSource};
use skiff_controller::cluster::{Cluster, ClusterConfig};
use skiff_runtime::container::ContainerState;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_agent::labels::LABEL_TASK;

/// How simulated containers behave.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// How long a start takes.
    pub start_latency: Duration,
    /// The share of starts (0.0–1.0) that fail, as a missing binary would (exit 127).
    pub fail_rate: f64,
    /// Every started container exits this long after its start, with this code.
    pub exit_after: Option<(Duration, i32)>,
}

/// The in-memory engine with seeded random start failures on top of [`FakeEngine`].
pub struct SimEngine {
    fake: FakeEngine,
    fail_rate: f64,
    rng: Mutex<Rng>,
    starts: AtomicU64,
    failed: AtomicU64,
}

impl SimEngine {
    pub fn new(root: impl Into<PathBuf>, b: &Behaviour, seed: u64) -> SimEngine {
        SimEngine {
            fake: FakeEngine::new(
                root,
                FakeBehaviour {
                    start_latency: b.start_latency,
                    exit_after: b.exit_after,
                    // The simulator reads states, not the call record.
                    keep_records: 64,
                    ..Default::default()
                },
            ),
            fail_rate: b.fail_rate,
            rng: Mutex::new(Rng::new(seed)),
            starts: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Task IDs of the containers running now.
    pub fn running_tasks(&self) -> Vec<String> {
        self.fake
            .labelled(LABEL_TASK)
            .into_iter()
            .filter(|(_, cid)| self.fake.state(cid).is_some_and(|s| s.is_running()))
            .map(|(task, _)| task)
            .collect()
    }

    /// `(starts, injected failures)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.starts.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn roll_failure(&self) -> bool {
        self.fail_rate > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .chance(self.fail_rate)
    }
}

#[tonic::async_trait]
impl Engine for SimEngine {
    async fn create(
        &self,
        name: Option<String>,
        config: skiff_proto::engine::ContainerConfig,
    ) -> skiff_agent::engine::Result<String> {
        Engine::create(&self.fake, name, config).await
    }

    async fn start(&self, id: &str) -> skiff_agent::engine::Result<()> {
        self.starts.fetch_add(1, Ordering::Relaxed);
        if self.roll_failure() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.fake.exit(id, 127);
            return Err(AgentError::Start {
                message: "simulated start failure".into(),
                exit_code: 127,
            });
        }
        self.fake.start(id).await
    }

    async fn stop(&self, id: &str, grace_secs: Option<u32>) -> skiff_agent::engine::Result<()> {
        self.fake.stop(id, grace_secs).await
    }

    async fn remove(&self, id: &str, force: bool) -> skiff_agent::engine::Result<()> {
        Engine::remove(&self.fake, id, force).await
    }

    async fn exec(&self, id: &str, args: Vec<String>) -> skiff_agent::engine::Result<i32> {
        self.fake.exec(id, args).await
    }

    fn state(&self, id: &str) -> Option<ContainerState> {
        self.fake.state(id)
    }

    fn labelled(&self, key: &str) -> Vec<(String, String)> {
        self.fake.labelled(key)
    }

    fn events(&self) -> &EventBus {
        self.fake.events()
    }

    fn task_state_changed(&self, state: &'static str) {
        self.fake.task_state_changed(state)
    }

    fn root(&self) -> &Path {
        self.fake.root()
    }

    fn networks(&self) -> &dyn NetworkEngine {
        self.fake.networks()
    }
}

/// Where the simulated nodes join and how they behave.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// A manager's cluster address (host:port).
    pub join_addr: String,
    /// A worker join token.
    pub token: String,
    /// One state directory per node is made below this.
    pub dir: PathBuf,
    pub behaviour: Behaviour,
    pub heartbeat_period: Duration,
    pub seed: u64,
}

/// A simulated node's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Paused,
    Killed,
}

struct Running {
    /// Dropping it ends the node's runtime (a kill).
    stop: tokio::sync::oneshot::Sender<()>,
    /// Set while paused: dropping it releases the node's thread.
    pause: Option<std::sync::mpsc::SyncSender<()>>,
    pause_tx: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Receiver<()>>,
    thread: std::thread::JoinHandle<()>,
}

struct SimNode {
    dir: PathBuf,
    engine: Arc<SimEngine>,
    /// The node ID once joined ("" before).
    id: Arc<Mutex<String>>,
    /// Join failures seen (each is retried).
    join_errors: Arc<AtomicU64>,
    /// Assignment streams opened, over every run of the node.
    streams: Arc<AtomicU64>,
    run: Option<Running>,
}

/// N simulated nodes and the bulk operations on them.
pub struct Fleet {
    cfg: FleetConfig,
    nodes: Vec<SimNode>,
}

/// A count of the fleet at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub nodes: usize,
    pub joined: usize,
    pub up: usize,
    pub paused: usize,
    pub killed: usize,
    /// Task containers running, over all nodes.
    pub running: usize,
    /// Task IDs with more than one running container (on one node or several).
    pub duplicates: usize,
    pub starts: u64,
    pub injected_failures: u64,
    pub join_errors: u64,
    /// Assignment streams opened, over all nodes (one per node per manager change when
    /// healthy; more means streams break).
    pub streams_opened: u64,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Fleet {
        Fleet {
            cfg,
            nodes: Vec::new(),
        }
    }

    /// Adds and starts `n` nodes (they join concurrently).
    pub fn add(&mut self, n: usize) -> std::io::Result<()> {
        for _ in 0..n {
            let i = self.nodes.len();
            let dir = self.cfg.dir.join(format!("node{i:05}"));
            std::fs::create_dir_all(&dir)?;
            let seed = self
                .cfg
                .seed
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add(i as u64);
            let mut node = SimNode {
                engine: Arc::new(SimEngine::new(
                    dir.join("engine"),
                    &self.cfg.behaviour,
                    seed,
                )),
                dir,
                id: Arc::default(),
                join_errors: Arc::default(),
                streams: Arc::default(),
                run: None,
            };
            node.run = Some(spawn_node(&self.cfg, i, &node)?);
            self.nodes.push(node);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn state(&self, i: usize) -> Option<NodeState> {
        self.nodes.get(i).map(|n| match &n.run {
            None => NodeState::Killed,
            Some(r) if r.pause.is_some() => NodeState::Paused,
            Some(_) => NodeState::Up,
        })
    }

    /// The node IDs of nodes `range` (joined ones only).
    pub fn ids(&self, range: std::ops::Range<usize>) -> Vec<String> {
        self.nodes
            .get(range)
            .unwrap_or_default()
            .iter()
            .map(|n| n.id.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .filter(|id| !id.is_empty())
            .collect()
    }

    /// Kills nodes `range`: their runtimes end, connections close.
    pub fn kill(&mut self, range: std::ops::Range<usize>) {
        let mut threads = Vec::new();
        for n in self.nodes.get_mut(range).unwrap_or_default() {
            if let Some(mut r) = n.run.take() {
                r.pause.take();
                let _ = r.stop.send(());
                threads.push(r.thread);
            }
        }
        for t in threads {
            let _ = t.join();
        }
    }

    /// Pauses nodes `range`: their threads block, connections stay open but silent.
    pub fn pause(&mut self, range: std::ops::Range<usize>) {
        for n in self.nodes.get_mut(range).unwrap_or_default() {
            if let Some(r) = &mut n.run {
                if r.pause.is_none() {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    if r.pause_tx.send(rx).is_ok() {
                        r.pause = Some(tx);
                    }
                }
            }
        }
    }

    /// Brings nodes `range` back: paused ones continue, killed ones restart from their
    /// state directory (with the containers they had).
    pub fn resume(&mut self, range: std::ops::Range<usize>) -> std::io::Result<()> {
        let start = range.start;
        for (k, n) in self
            .nodes
            .get_mut(range)
            .unwrap_or_default()
            .iter_mut()
            .enumerate()
        {
            match &mut n.run {
                Some(r) => {
                    r.pause.take();
                }
                None => n.run = Some(spawn_node(&self.cfg, start + k, n)?),
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> FleetStats {
        let mut s = FleetStats {
            nodes: self.nodes.len(),
            ..Default::default()
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            match self.state(i) {
                Some(NodeState::Up) => s.up += 1,
                Some(NodeState::Paused) => s.paused += 1,
                _ => s.killed += 1,
            }
            if !n.id.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                s.joined += 1;
            }
            s.join_errors += n.join_errors.load(Ordering::Relaxed);
            s.streams_opened += n.streams.load(Ordering::Relaxed);
            let (starts, failed) = n.engine.counts();
            s.starts += starts;
            s.injected_failures += failed;
            for t in n.engine.running_tasks() {
                *seen.entry(t).or_default() += 1;
            }
        }
        s.running = seen.values().sum();
        s.duplicates = seen.values().filter(|c| **c > 1).count();
        s
    }

    /// Waits until every live node has joined, or `timeout`; returns how long it took.
    pub fn wait_joined(&self, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            let s = self.stats();
            if s.joined >= s.nodes {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The node directories (for cleanup by the caller).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.dir.clone()).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let n = self.nodes.len();
        self.kill(0..n);
    }
}

/// Starts node `i` on a thread of its own; a failed join is retried until it succeeds
/// or the node is killed.
fn spawn_node(cfg: &FleetConfig, i: usize, node: &SimNode) -> std::io::Result<Running> {
    let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (pause_tx, mut pause_rx) =
        tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Receiver<()>>();
    let mut cc = ClusterConfig::new(
        node.dir.join("cluster"),
        format!("sim{i:05}"),
        env!("CARGO_PKG_VERSION").into(),
    );
    cc.join = Some((cfg.join_addr.clone(), cfg.token.clone()));
    cc.heartbeat_period = cfg.heartbeat_period;
    let engine = node.engine.clone();
    let id = node.id.clone();
    let join_errors = node.join_errors.clone();
    let streams = node.streams.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sim{i:05}"))
        .stack_size(1 << 20)
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let run = async {
                    let cluster = loop {
                        match Cluster::start(cc.clone()).await {
                            Ok(c) => break c,
                            Err(e) => {
                                join_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(node = i, error = %e, "join failed; retrying");
                                // A half-done join leaves nothing worth keeping.
                                let _ = std::fs::remove_dir_all(&cc.state_dir);
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    };
                    *id.lock().unwrap_or_else(|p| p.into_inner()) = cluster.node_id();
                    let source = RemoteSource::spawn_counting(cluster.clone(), streams.clone());
                    let engine: Arc<dyn Engine> = engine;
                    Executor::spawn(engine, source, cluster.node_id(), None);
                    // Pauses: block this thread (and so the whole node) until released.
                    while let Some(release) = pause_rx.recv().await {
                        let _ = release.recv();
                    }
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    _ = run => {}
                    _ = &mut stop_rx => {}
                }
            });
            rt.shutdown_background();
        })?;
    Ok(Running {
        stop,
        pause: None,
        pause_tx,
        thread,
    })
}

/// Parses `A..B`, `A-B` or `A` (one node) against a fleet of `len` nodes; `all` is every
/// node. Bounds are clamped to the fleet.
pub fn parse_range(s: &str, len: usize) -> Option<std::ops::Range<usize>> {
    let s = s.trim();
    if s == "all" {
        return Some(0..len);
    }
    let (a, b) = match s.split_once("..").or_else(|| s.split_once('-')) {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let a: usize = s.parse().ok()?;
            (a, a + 1)
        }
    };
    (a <= b).then(|| a.min(len)..b.min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(labels: &[(&str, &str)]) -> skiff_proto::engine::ContainerConfig {
        skiff_proto::engine::ContainerConfig {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn starts_fail_at_the_configured_rate_and_failed_containers_are_not_running() {
        let root = tempfile::tempdir().expect("tmp");
        let b = Behaviour {
            fail_rate: 0.3,
            ..Default::default()
        };
        let e = SimEngine::new(root.path(), &b, 7);
        let mut failed = 0;
        for i in 0..1000 {
            let id = e
                .create(None, config(&[(LABEL_TASK, &format!("t{i}"))]))
                .await
                .expect("create");
            if let Err(err) = e.start(&id).await {
                assert!(matches!(err, AgentError::Start { exit_code: 127, .. }));
                assert_eq!(e.state(&id).map(|s| s.exit_code), Some(127));
                failed += 1;
            }
        }
        assert!((200..400).contains(&failed), "{failed} of 1000 failed");
        assert_eq!(e.counts(), (1000, failed));
        assert_eq!(e.running_tasks().len(), 1000 - failed as usize);
    }

    #[tokio::test]
    async fn no_failures_by_default_and_the_same_seed_fails_the_same_starts() {
        let root = tempfile::tempdir().expect("tmp");
        let e = SimEngine::new(root.path(), &Behaviour::default(), 1);
        for _ in 0..100 {
            let id = e.create(None, config(&[])).await.expect("create");
            e.start(&id).await.expect("start");
        }
        assert_eq!(e.counts(), (100, 0));
        let b = Behaviour {
            fail_rate: 0.5,
            ..Default::default()
        };
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let e = SimEngine::new(root.path(), &b, 42);
            let mut o = Vec::new();
            for _ in 0..50 {
                let id = e.create(None, config(&[])).await.expect("create");
                o.push(e.start(&id).await.is_ok());
            }
            outcomes.push(o);
        }
        assert_eq!(outcomes[0], outcomes[1]);
    }

    #[tokio::test]
    async fn containers_exit_after_the_configured_time_with_the_code() {
        let root = tempfile::tempdir().expect("tmp");
        let b = Behaviour {
            start_latency: Duration::from_millis(50),
            exit_after: Some((Duration::from_millis(200), 3)),
            ..Default::default()
        };
        let e = SimEngine::new(root.path(), &b, 1);
        let id = e
            .create(None, config(&[(LABEL_TASK, "t1")]))
            .await
            .expect("create");
        let t0 = Instant::now();
        e.start(&id).await.expect("start");
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(e.running_tasks(), vec!["t1".to_string()]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(e.running_tasks().is_empty());
        assert_eq!(e.state(&id).map(|s| s.exit_code), Some(3));
    }

    #[test]
    fn ranges_parse_and_clamp() {
        assert_eq!(parse_range("all", 10), Some(0..10));
        assert_eq!(parse_range("2..5", 10), Some(2..5));
        assert_eq!(parse_range("2-5", 10), Some(2..5));
        assert_eq!(parse_range("3", 10), Some(3..4));
        assert_eq!(parse_range("5..50", 10), Some(5..10));
        assert_eq!(parse_range("5..2", 10), None);
        assert_eq!(parse_range("x", 10), None);
    }

    #[test]
    fn an_empty_fleet_counts_nothing_and_bulk_operations_on_it_are_no_ops() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut f = Fleet::new(FleetConfig {
            join_addr: "127.0.0.1:1".into(),
            token: String::new(),
            dir: dir.path().into(),
            behaviour: Behaviour::default(),
            heartbeat_period: Duration::from_secs(1),
            seed: 1,
        });
        f.kill(0..5);
        f.pause(0..5);
        f.resume(0..5).expect("resume");
        assert_eq!(f.stats(), FleetStats::default());
        assert!(f.is_empty());
    }
}
