//! The node side of `service logs` (see `skiff_controller::orchestrator::logbroker`):
//! every node keeps one stream open to the leader's log broker on which it receives
//! log subscriptions, and answers each by publishing the lines of its containers of
//! that service. The connection is always opened by the node (workers need no
//! listening port); the leader's own agent talks to its broker in-process.
//!
//! A subscription covers the containers labelled with one of its task IDs or with its
//! service name; when following, containers that start later are picked up too (a
//! scale-up, a replacement). It ends with `close` once every container has been read
//! (not following), when the broker cancels it (the client left), or when the
//! connection to the leader breaks (the broker then asks again, resuming after the
//! last line it received).

use crate::containers::{Containers, Entry};
use crate::labels::{LABEL_SERVICE, LABEL_TASK};
use crate::logs::LogCursor;
use skiff_controller::cluster::Cluster;
use skiff_controller::orchestrator::logbroker::{LogBroker, KEEPALIVE};
use skiff_proto::engine::LogsRequest;
use skiff_proto::orchestrator as pb;
use skiff_runtime::container::Status;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Lines per published message (and a byte budget, whichever comes first).
const BATCH_LINES: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// Where a subscription's lines go.
#[derive(Clone)]
enum Sink {
    /// This node leads: straight into its broker.
    Local(Arc<LogBroker>),
    /// `Dispatcher.PublishLogs` on the leader, over the node's connection to it.
    Remote(tonic::transport::Channel),
}

pub struct LogPublisher {
    containers: Arc<Containers>,
    cluster: Arc<Cluster>,
    /// Subscriptions being served now (logged, so leaks show in the agent's log).
    active: AtomicUsize,
}

impl LogPublisher {
    pub fn spawn(containers: Arc<Containers>, cluster: Arc<Cluster>) {
        let me = Arc::new(LogPublisher {
            containers,
            cluster,
            active: AtomicUsize::new(0),
        });
        let node_id = me.cluster.node_id();
        tokio::spawn(
            async move {
                let mut next = 0usize;
                loop {
                    let ended = if me.leads() {
                        me.serve_local().await
                    } else {
                        next += 1;
                        me.serve_remote(next).await
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "log subscription stream ended; reconnecting");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            .instrument(tracing::info_span!("log_publisher", node_id = %node_id)),
        );
    }

    fn leads(&self) -> bool {
        self.cluster
            .raft()
            .is_some_and(|h| !h.is_stopped() && h.status().is_leader)
    }

    /// The leader's address when this node (a manager) knows it; else every manager,
    /// tried in turn (a follower answers "not the leader").
    fn candidates(&self) -> Vec<String> {
        let managers = self.cluster.node_state().managers;
        let leader = self.cluster.raft().map(|h| h.status().leader_id);
        if let Some(a) = leader
            .filter(|l| *l != 0)
            .and_then(|l| managers.iter().find(|m| m.0 == l))
            .map(|m| m.2.clone())
            .filter(|a| !a.is_empty())
        {
            return vec![a];
        }
        managers
            .into_iter()
            .map(|m| m.2)
            .filter(|a| !a.is_empty())
            .collect()
    }

    async fn serve_local(self: &Arc<Self>) -> Result<(), String> {
        let broker = self.cluster.logs.clone();
        let me = self.cluster.node_id();
        let reg = broker.register(&me);
        let mut rx = reg.rx;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut active = HashMap::new();
        let res = loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.handle(m, &Sink::Local(broker.clone()), &mut active),
                    None => break Ok(()),
                },
                _ = tick.tick() => {
                    if !self.leads() {
                        break Err("no longer the leader".to_string());
                    }
                }
            }
        };
        broker.unregister(&me, reg.conn);
        Self::stop_all(active);
        res
    }

    async fn serve_remote(self: &Arc<Self>, pick: usize) -> Result<(), String> {
        use pb::dispatcher_client::DispatcherClient;
        let candidates = self.candidates();
        let addr = candidates
            .get(pick % candidates.len().max(1))
            .ok_or("no manager address is known yet")?;
        let id = self.cluster.identity();
        let tls = skiff_controller::tls::client_config(&id.ca_pem, Some(&id))
            .map_err(|e| e.to_string())?;
        let ch = skiff_controller::tls::channel(addr, tls).map_err(|e| e.to_string())?;
        let mut s = DispatcherClient::new(ch.clone())
            .log_subscriptions(pb::LogSubscriptionsRequest {})
            .await
            .map_err(|e| format!("{addr}: {}", e.message()))?
            .into_inner();
        tracing::debug!(manager = %addr, "connected to the log broker");
        let sink = Sink::Remote(ch);
        let mut active = HashMap::new();
        let res = loop {
            let m = match tokio::time::timeout(KEEPALIVE * 3, s.message()).await {
                Err(_) => break Err(format!("{addr}: no keepalive from the log broker")),
                Ok(Err(e)) => break Err(format!("{addr}: {}", e.message())),
                Ok(Ok(None)) => break Ok(()),
                Ok(Ok(Some(m))) => m,
            };
            self.handle(m, &sink, &mut active);
        };
        Self::stop_all(active);
        res
    }

    /// Starts or cancels one subscription.
    fn handle(
        self: &Arc<Self>,
        m: pb::LogSubscription,
        sink: &Sink,
        active: &mut HashMap<String, tokio::task::JoinHandle<()>>,
    ) {
        active.retain(|_, h| !h.is_finished());
        if m.id.is_empty() {
            return; // keepalive
        }
        if let Some(h) = active.remove(&m.id) {
            h.abort();
        }
        if m.close {
            return;
        }
        let me = self.clone();
        let id = m.id.clone();
        let span = tracing::info_span!("log_subscription", subscription = %m.id, service = %m.service_name);
        let sink = sink.clone();
        active.insert(
            id,
            tokio::spawn(async move { me.serve_subscription(m, sink).await }.instrument(span)),
        );
    }

    fn stop_all(active: HashMap<String, tokio::task::JoinHandle<()>>) {
        for (_, h) in active {
            h.abort();
        }
    }

    /// Publishes one subscription until done, cancelled, or refused by the broker.
    async fn serve_subscription(self: Arc<Self>, sub: pb::LogSubscription, sink: Sink) {
        let _guard = ActiveGuard::new(self.clone(), &sub.id);
        let (tx, rx) = mpsc::channel::<pb::LogMessages>(8);
        let me = self.cluster.node_id();
        // The sink drains `rx`; when the broker refuses a message (the subscription
        // ended) it stops, `tx` closes, and the readers stop with it.
        let sink_task = match sink {
            Sink::Local(broker) => tokio::spawn(async move {
                let mut rx = rx;
                while let Some(m) = rx.recv().await {
                    if let Err(e) = broker.publish(&me, m).await {
                        tracing::debug!(error = %e, "log broker refused lines");
                        return;
                    }
                }
            }),
            Sink::Remote(ch) => tokio::spawn(async move {
                let r = pb::dispatcher_client::DispatcherClient::new(ch)
                    .publish_logs(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e.message(), "publishing logs ended");
                }
            }),
        };
        let sink_guard = AbortOnDrop(sink_task);
        let mut seen: HashSet<String> = HashSet::new();
        let mut readers = tokio::task::JoinSet::new();
        loop {
            for e in self.containers.list() {
                if seen.contains(&e.id) || !matches(&e, &sub) {
                    continue;
                }
                // Following, a container that has not started yet is taken once it
                // runs (its first line is read then); without, it has nothing to say.
                if sub.follow && e.state().status == Status::Created {
                    continue;
                }
                seen.insert(e.id.clone());
                readers.spawn(read_container(e, sub.clone(), tx.clone()));
            }
            if !sub.follow {
                loop {
                    tokio::select! {
                        r = readers.join_next() => if r.is_none() { break },
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {
                            if sink_guard.0.is_finished() {
                                return; // refused by the broker: nobody listens
                            }
                        }
                    }
                }
                let _ = tx
                    .send(pb::LogMessages {
                        subscription_id: sub.id.clone(),
                        messages: vec![],
                        close: true,
                    })
                    .await;
                // Let the sink deliver the close before the guard aborts it.
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while !sink_guard.0.is_finished() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                return;
            }
            while readers.try_join_next().is_some() {}
            if sink_guard.0.is_finished() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// Counts a subscription while it is served, and logs its start and end (also when
/// cancelled by an abort).
struct ActiveGuard {
    owner: Arc<LogPublisher>,
    id: String,
}

impl ActiveGuard {
    fn new(owner: Arc<LogPublisher>, id: &str) -> Self {
        let n = owner.active.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(subscription = %id, active = n, "log subscription started");
        ActiveGuard {
            owner,
            id: id.into(),
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let n = self.owner.active.fetch_sub(1, Ordering::SeqCst) - 1;
        tracing::info!(subscription = %self.id, active = n, "log subscription ended");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether container `e` belongs to the subscription's service.
fn matches(e: &Entry, sub: &pb::LogSubscription) -> bool {
    let r = e.record.read().unwrap_or_else(|p| p.into_inner());
    let labels = &r.config.labels;
    match labels.get(LABEL_TASK) {
        Some(t) if sub.task_ids.iter().any(|x| x == t) => true,
        Some(_) => labels.get(LABEL_SERVICE) == Some(&sub.service_name),
        None => false,
    }
}

/// Sends one container's lines (and, following, its new lines until it stops).
async fn read_container(
    e: Arc<Entry>,
    sub: pb::LogSubscription,
    tx: mpsc::Sender<pb::LogMessages>,
) {
    let task_id = {
        let r = e.record.read().unwrap_or_else(|p| p.into_inner());
        r.config.labels.get(LABEL_TASK).cloned().unwrap_or_default()
    };
    // A container that started after the subscription was made (a new replica) is
    // read whole: `--tail` is about what existed when the command ran.
    let fresh = e
        .state()
        .started_at
        .and_then(|t| t.timestamp_nanos_opt())
        .is_some_and(|t| sub.created_unix_nanos > 0 && t > sub.created_unix_nanos);
    let req = LogsRequest {
        id: e.id.clone(),
        follow: sub.follow,
        tail: if fresh { -1 } else { sub.tail },
        since_unix_nanos: sub.since_unix_nanos,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let send = |chunks: Vec<skiff_proto::engine::LogChunk>| {
        let tx = tx.clone();
        let sub_id = sub.id.clone();
        let task_id = task_id.clone();
        let cid = e.id.clone();
        async move {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut it = chunks.into_iter().peekable();
            while let Some(c) = it.next() {
                bytes += c.data.len();
                batch.push(pb::LogMessage {
                    task_id: task_id.clone(),
                    container_id: cid.clone(),
                    stream: c.stream,
                    data: c.data,
                    time_unix_nanos: c.time_unix_nanos,
                });
                if batch.len() >= BATCH_LINES || bytes >= BATCH_BYTES || it.peek().is_none() {
                    let msg = pb::LogMessages {
                        subscription_id: sub_id.clone(),
                        messages: std::mem::take(&mut batch),
                        close: false,
                    };
                    bytes = 0;
                    if tx.send(msg).await.is_err() {
                        return false;
                    }
                }
            }
            true
        }
    };
    let (mut cursor, existing) = match LogCursor::open(&e.paths.log(), &req) {
        Ok(x) => x,
        Err(err) => {
            tracing::warn!(container_id = %e.id, error = %err, "reading container log");
            return;
        }
    };
    if !send(existing).await || !sub.follow {
        return;
    }
    let mut changed = e.changed.subscribe();
    loop {
        let running = e.state().is_running();
        match cursor.poll() {
            Ok(chunks) => {
                if !send(chunks).await {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(container_id = %e.id, error = %err, "reading container log");
                return;
            }
        }
        if !running {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = changed.changed() => {}
            _ = tx.closed() => return,
        }
    }
}
