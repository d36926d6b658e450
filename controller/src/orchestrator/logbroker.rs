//! The log broker: `skiff service logs` gathered from every node running the service,
//! the way Swarm's log broker does it.
//!
//! Nodes need no listening port, so the leader never dials them. Every node (the
//! leader's own agent included, in-process) keeps one stream open to the leader
//! (`Dispatcher.LogSubscriptions`) on which it receives the subscriptions it must serve
//! and their cancellations; it answers each with a `Dispatcher.PublishLogs` stream of
//! its containers' lines, ending with `close` when it has sent everything (not
//! following). The broker lives in memory on the leader only: a new leader starts
//! empty, nodes reconnect to it, and clients of the old one see their stream end.
//!
//! A subscription ([`LogBroker::subscribe`]) names the nodes to ask and what to send;
//! a node not connected within [`NODE_GRACE`] is reported unavailable (one notice per
//! node) and the rest is delivered. Without follow, the subscription ends once every
//! node has closed or failed; with follow, it ends when the client drops its
//! [`Subscription`], which tells every node to stop.

use crate::model::NodeStatus;
use crate::model::*;
use crate::raft::consensus::RaftHandle;
use crate::store::read_world;
use crate::store::Stored;
use skiff_proto::orchestrator as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// How long a subscription waits for a node that is not connected to the leader (it
/// may be reconnecting after a leader change) before reporting it unavailable.
pub const NODE_GRACE: Duration = Duration::from_secs(3);
/// Keepalive period on `LogSubscriptions`; nodes give up on a stream silent for three.
pub const KEEPALIVE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    #[error("log subscription {0} does not exist (it ended)")]
    UnknownSubscription(String),
    #[error("node {node} is not asked to publish for log subscription {id}")]
    NotSubscribed { node: String, id: String },
}

/// What a subscriber receives.
#[derive(Debug, PartialEq)]
pub enum Event {
    Messages {
        node: String,
        messages: Vec<pb::LogMessage>,
    },
    /// A node whose logs are missing from the stream; `reason` follows "node NAME"
    /// in the notice ("is not available").
    Unavailable { node: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Not sent yet: the node is not connected (or its connection broke).
    Waiting,
    Sent,
    Done,
    Failed,
}

#[derive(Debug)]
struct NodeSub {
    tasks: Vec<String>,
    progress: Progress,
    /// The unavailable notice went out (once per node).
    warned: bool,
    /// The newest line received, so a resumed follow does not repeat lines.
    last_nanos: i64,
}

struct Sub {
    template: pb::LogSubscription,
    out: mpsc::Sender<Event>,
    nodes: HashMap<String, NodeSub>,
}

struct NodeConn {
    conn: u64,
    tx: mpsc::UnboundedSender<pb::LogSubscription>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    nodes: HashMap<String, NodeConn>,
    subs: HashMap<String, Sub>,
}

/// The leader's registry of connected nodes and open log subscriptions.
#[derive(Default)]
pub struct LogBroker {
    inner: Mutex<Inner>,
}

/// A node's connection to the broker: subscriptions arrive on `rx`.
pub struct NodeRegistration {
    pub conn: u64,
    pub rx: mpsc::UnboundedReceiver<pb::LogSubscription>,
}

/// A client's subscription; dropping it cancels it on every node.
pub struct Subscription {
    pub id: String,
    rx: mpsc::Receiver<Event>,
    broker: Arc<LogBroker>,
}

impl Subscription {
    /// The next event; `None` once every node is done (never while following).
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.cancel(&self.id);
    }
}

impl Inner {
    /// The subscription as node `node` must receive it (resuming after the last line
    /// it delivered, if any).
    fn message_for(template: &pb::LogSubscription, ns: &NodeSub) -> pb::LogSubscription {
        let mut m = template.clone();
        m.task_ids = ns.tasks.clone();
        if ns.last_nanos > 0 {
            m.since_unix_nanos = ns.last_nanos + 1;
            m.tail = -1;
        }
        m
    }

    /// Sends every waiting subscription of `node` over its connection, if it has one.
    fn send_waiting(&mut self, node: &str) {
        let Some(c) = self.nodes.get(node) else {
            return;
        };
        for sub in self.subs.values_mut() {
            if let Some(ns) = sub.nodes.get_mut(node) {
                if ns.progress == Progress::Waiting
                    && c.tx.send(Self::message_for(&sub.template, ns)).is_ok()
                {
                    ns.progress = Progress::Sent;
                }
            }
        }
    }

    /// Marks `node` failed in `id` (one notice per node) and ends the subscription if
    /// that was the last node it waited for.
    fn fail(&mut self, id: &str, node: &str, reason: String, follow_waits: bool) {
        let Some(sub) = self.subs.get_mut(id) else {
            return;
        };
        let Some(ns) = sub.nodes.get_mut(node) else {
            return;
        };
        // A follower keeps waiting: the node gets the subscription if it comes back.
        ns.progress = if sub.template.follow && follow_waits {
            Progress::Waiting
        } else {
            Progress::Failed
        };
        if !ns.warned {
            ns.warned = true;
            notify(
                &sub.out,
                Event::Unavailable {
                    node: node.into(),
                    reason,
                },
            );
        }
        self.finish_if_done(id);
    }

    fn finish_if_done(&mut self, id: &str) {
        let done = self.subs.get(id).is_some_and(|s| {
            !s.template.follow
                && s.nodes
                    .values()
                    .all(|n| matches!(n.progress, Progress::Done | Progress::Failed))
        });
        if done {
            self.subs.remove(id);
            tracing::info!(subscription = %id, active = self.subs.len(), "log subscription complete");
        }
    }

    /// The node's connection is gone: what was sent over it must be sent again (a
    /// follower resumes after the last line) or, not following, is reported missing.
    fn interrupt(&mut self, node: &str) {
        let ids: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| {
                s.nodes
                    .get(node)
                    .is_some_and(|n| n.progress == Progress::Sent)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let follow = self.subs.get(&id).is_some_and(|s| s.template.follow);
            if follow {
                if let Some(ns) = self.subs.get_mut(&id).and_then(|s| s.nodes.get_mut(node)) {
                    ns.progress = Progress::Waiting;
                }
            } else {
                self.fail(
                    &id,
                    node,
                    "is not available (its log stream broke)".into(),
                    false,
                );
            }
        }
    }
}

/// Queues a notice without blocking the caller (which holds the broker lock).
fn notify(out: &mpsc::Sender<Event>, ev: Event) {
    let out = out.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let _ = out.send(ev).await;
            });
        }
        Err(_) => {
            let _ = out.try_send(ev);
        }
    }
}

impl LogBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open subscriptions and connected nodes (for logs and tests).
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (g.subs.len(), g.nodes.len())
    }

    /// A node connects; it is sent at once every subscription waiting for it. A second
    /// connection of the same node replaces the first.
    pub fn register(&self, node: &str) -> NodeRegistration {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut g = self.lock();
        g.next += 1;
        let conn = g.next;
        if g.nodes.insert(node.into(), NodeConn { conn, tx }).is_some() {
            g.interrupt(node);
        }
        g.send_waiting(node);
        tracing::debug!(node_id = %node, conn, "node connected to the log broker");
        NodeRegistration { conn, rx }
    }

    /// A node's connection `conn` ended (a newer one of the same node is left alone).
    pub fn unregister(&self, node: &str, conn: u64) {
        let mut g = self.lock();
        if g.nodes.get(node).is_some_and(|c| c.conn == conn) {
            g.nodes.remove(node);
            g.interrupt(node);
            tracing::debug!(node_id = %node, conn, "node left the log broker");
        }
    }

    /// Opens a subscription: `nodes` are asked now (or as soon as they connect),
    /// `unavailable` are reported at once. Call [`LogBroker::expire`] after
    /// [`NODE_GRACE`] to give up on nodes that never connected.
    pub fn subscribe(
        self: &Arc<Self>,
        mut template: pb::LogSubscription,
        nodes: Vec<(String, Vec<String>)>,
        unavailable: Vec<(String, String)>,
    ) -> Subscription {
        let (out, rx) = mpsc::channel(64);
        let mut g = self.lock();
        g.next += 1;
        let id = format!("logs-{}-{:08x}", g.next, rand::random::<u32>());
        template.id = id.clone();
        template.close = false;
        template.task_ids.clear();
        let mut sub = Sub {
            template,
            out,
            nodes: HashMap::new(),
        };
        for (node, tasks) in nodes {
            sub.nodes.insert(
                node,
                NodeSub {
                    tasks,
                    progress: Progress::Waiting,
                    warned: false,
                    last_nanos: 0,
                },
            );
        }
        let follow = sub.template.follow;
        let node_ids: Vec<String> = sub.nodes.keys().cloned().collect();
        let unavailable: Vec<(String, String)> = unavailable
            .into_iter()
            .inspect(|(node, _)| {
                sub.nodes.entry(node.clone()).or_insert(NodeSub {
                    tasks: vec![],
                    progress: Progress::Waiting,
                    warned: false,
                    last_nanos: 0,
                });
            })
            .collect();
        g.subs.insert(id.clone(), sub);
        for n in &node_ids {
            g.send_waiting(n);
        }
        for (node, reason) in unavailable {
            g.fail(&id, &node, reason, true);
        }
        g.finish_if_done(&id);
        tracing::info!(subscription = %id, follow, nodes = node_ids.len(), active = g.subs.len(), "log subscription opened");
        drop(g);
        Subscription {
            id,
            rx,
            broker: self.clone(),
        }
    }

    /// Follow mode: `node` got a task of the service after the subscription opened.
    pub fn add_node(&self, id: &str, node: &str, tasks: Vec<String>) {
        let mut g = self.lock();
        let Some(sub) = g.subs.get_mut(id) else {
            return;
        };
        if sub.nodes.contains_key(node) {
            return;
        }
        sub.nodes.insert(
            node.into(),
            NodeSub {
                tasks,
                progress: Progress::Waiting,
                warned: false,
                last_nanos: 0,
            },
        );
        g.send_waiting(node);
    }

    /// Reports every node of `id` that has not connected yet as unavailable.
    pub fn expire(&self, id: &str) {
        let mut g = self.lock();
        let waiting: Vec<String> = g
            .subs
            .get(id)
            .map(|s| {
                s.nodes
                    .iter()
                    .filter(|(_, n)| n.progress == Progress::Waiting && !n.warned)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for node in waiting {
            g.fail(id, &node, "is not available".into(), true);
        }
    }

    /// A node's lines for a subscription; `close` marks it done. Waits while the
    /// subscriber is slow (back-pressure reaches the node's stream).
    pub async fn publish(&self, node: &str, msg: pb::LogMessages) -> Result<(), BrokerError> {
        let id = msg.subscription_id;
        let out = {
            let mut g = self.lock();
            let sub = g
                .subs
                .get_mut(&id)
                .ok_or_else(|| BrokerError::UnknownSubscription(id.clone()))?;
            let ns = sub
                .nodes
                .get_mut(node)
                .filter(|n| n.progress == Progress::Sent)
                .ok_or_else(|| BrokerError::NotSubscribed {
                    node: node.into(),
                    id: id.clone(),
                })?;
            if let Some(t) = msg.messages.iter().map(|m| m.time_unix_nanos).max() {
                ns.last_nanos = ns.last_nanos.max(t);
            }
            sub.out.clone()
        };
        if !msg.messages.is_empty()
            && out
                .send(Event::Messages {
                    node: node.into(),
                    messages: msg.messages,
                })
                .await
                .is_err()
        {
            return Err(BrokerError::UnknownSubscription(id));
        }
        if msg.close {
            let mut g = self.lock();
            if let Some(ns) = g.subs.get_mut(&id).and_then(|s| s.nodes.get_mut(node)) {
                ns.progress = Progress::Done;
            }
            g.finish_if_done(&id);
        }
        Ok(())
    }

    /// A node's publish stream for `id` ended without `close`.
    pub fn publish_broken(&self, node: &str, id: &str) {
        let mut g = self.lock();
        let sent = g
            .subs
            .get(id)
            .and_then(|s| s.nodes.get(node))
            .is_some_and(|n| n.progress == Progress::Sent);
        if sent {
            g.fail(
                id,
                node,
                "is not available (its log stream broke)".into(),
                true,
            );
        }
    }

    /// The client left: forget the subscription and tell its nodes to stop.
    fn cancel(&self, id: &str) {
        let mut g = self.lock();
        let Some(sub) = g.subs.remove(id) else {
            return;
        };
        for (node, ns) in &sub.nodes {
            if ns.progress == Progress::Sent {
                if let Some(c) = g.nodes.get(node) {
                    let _ = c.tx.send(pb::LogSubscription {
                        id: id.into(),
                        close: true,
                        ..Default::default()
                    });
                }
            }
        }
        tracing::info!(subscription = %id, active = g.subs.len(), "log subscription cancelled");
    }
}

/// Which nodes hold tasks of `service_id` with (or about to have) a container, with
/// those tasks' IDs.
fn task_nodes(
    tasks: &[Stored<Task>],
    service_id: &str,
    only_task: Option<&str>,
    follow: bool,
) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for t in tasks.iter().filter(|t| {
        let v = &t.value;
        v.service_id == service_id
            && only_task.is_none_or(|id| id == t.id)
            && !v.node_id.is_empty()
            && (!v.status.container_id.is_empty()
                || (TaskState::Preparing..=TaskState::Running).contains(&v.status.state)
                || (follow && v.desired == Desired::Running))
    }) {
        out.entry(t.value.node_id.clone())
            .or_default()
            .push(t.id.clone());
    }
    out
}

/// What `service logs NAME` names: a service (name, ID or ID prefix of 6 or more), or
/// else one task (ID or unique ID prefix), as Docker takes `SERVICE|TASK`.
fn find_target<'a>(
    services: &'a [Stored<Service>],
    tasks: &[Stored<Task>],
    name: &str,
) -> Result<(&'a Stored<Service>, Option<String>), Status> {
    let by_id = |id: &str| id == name || (name.len() >= 6 && id.starts_with(name));
    if let Some(s) = services
        .iter()
        .find(|s| s.value.spec.name == name || by_id(&s.id))
    {
        return Ok((s, None));
    }
    // Task IDs all have one length, so a whole ID matches itself alone.
    let matching: Vec<&Stored<Task>> = tasks.iter().filter(|t| by_id(&t.id)).collect();
    match matching.as_slice() {
        [t] => services
            .iter()
            .find(|s| s.id == t.value.service_id)
            .map(|s| (s, Some(t.id.clone())))
            .ok_or_else(|| Status::not_found(format!("the service of task {} is gone", t.id))),
        [] => Err(Status::not_found(format!(
            "no such service or task: {name}"
        ))),
        many => Err(Status::invalid_argument(format!(
            "task ID prefix {name} is ambiguous ({} tasks match)",
            many.len()
        ))),
    }
}

/// Serves `ServiceLogs` on the leader: subscribes every node holding a task of the
/// service, and with follow every node that gets one later; the returned stream ends
/// when every node is done (not following), or when the caller drops it.
pub fn serve(
    broker: &Arc<LogBroker>,
    h: RaftHandle,
    req: pb::ServiceLogsRequest,
) -> Result<mpsc::Receiver<Result<pb::ServiceLogChunk, Status>>, Status> {
    if !h.status().is_leader {
        return Err(Status::unavailable("not the leader"));
    }
    let broker = broker.clone();
    let (service, slot_width, nodes, unavailable, events, only_task) = h.store().read(|sm| {
        // Subscribed within the same read as the listing, so no task change is missed.
        let events = sm.subscribe();
        let w = read_world(sm);
        let (services, tasks, cluster_nodes) = (&w.services, &w.tasks, &w.nodes);
        let (s, only_task) = find_target(services, tasks, &req.service)?;
        let width = match s.value.spec.mode {
            Mode::Replicated { replicas } => replicas.max(1).to_string().len() as u32,
            Mode::Global => 1,
        };
        let mut nodes = Vec::new();
        let mut unavailable = Vec::new();
        for (node, ids) in task_nodes(tasks, &s.id, only_task.as_deref(), req.follow) {
            match cluster_nodes.iter().find(|n| n.id == node) {
                Some(n) if n.status != NodeStatus::Down => nodes.push((node, ids)),
                _ => unavailable.push((node, "is not available".to_string())),
            }
        }
        Ok::<_, Status>((s.clone(), width, nodes, unavailable, events, only_task))
    })?;
    let template = pb::LogSubscription {
        service_id: service.id.clone(),
        service_name: service.value.spec.name.clone(),
        follow: req.follow,
        tail: req.tail,
        since_unix_nanos: req.since_unix_nanos,
        created_unix_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        ..Default::default()
    };
    let mut sub = broker.subscribe(template, nodes, unavailable);
    let (tx, rx) = mpsc::channel(64);
    let span = tracing::info_span!("service_logs", service = %service.value.spec.name, subscription = %sub.id, follow = req.follow);
    let expiry = {
        let broker = broker.clone();
        let id = sub.id.clone();
        async move {
            tokio::time::sleep(NODE_GRACE).await;
            broker.expire(&id);
        }
    };
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut events = events;
            let mut names = Names::default();
            let expiry = expiry;
            tokio::pin!(expiry);
            let mut expired = false;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    ev = sub.next() => {
                        let Some(ev) = ev else { return };
                        for chunk in names.chunks(&h, &service, slot_width, ev) {
                            if tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = &mut expiry, if !expired => expired = true,
                    r = events.recv(), if req.follow => {
                        if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        while events.try_recv().is_ok() {}
                        let w = h.store().world();
                        let (services, tasks) = (&w.services, &w.tasks);
                        if !services.iter().any(|s| s.id == service.id) {
                            return; // the service is gone: nothing more will come
                        }
                        for (node, ids) in task_nodes(tasks, &service.id, only_task.as_deref(), true) {
                            broker.add_node(&sub.id, &node, ids);
                        }
                    }
                    _ = tick.tick() => {
                        if !h.status().is_leader || h.is_stopped() {
                            let _ = tx
                                .send(Err(Status::unavailable(
                                    "the leader changed while streaming logs; run the command again",
                                )))
                                .await;
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        },
        span,
    ));
    Ok(rx)
}

/// Task and node names for the chunks of one stream, looked up once each.
#[derive(Default)]
struct Names {
    tasks: HashMap<String, (u64, String)>,
    nodes: HashMap<String, String>,
}

impl Names {
    fn chunks(
        &mut self,
        h: &RaftHandle,
        service: &Stored<Service>,
        slot_width: u32,
        ev: Event,
    ) -> Vec<pb::ServiceLogChunk> {
        match ev {
            Event::Unavailable { node, reason } => vec![pb::ServiceLogChunk {
                service: service.value.spec.name.clone(),
                warning: format!("node {} {reason}", self.node(h, &node)),
                node: self.node(h, &node),
                node_id: node,
                ..Default::default()
            }],
            Event::Messages { node, messages } => {
                let node_name = self.node(h, &node);
                messages
                    .into_iter()
                    .map(|m| {
                        let slot = self.slot(h, &m.task_id);
                        pb::ServiceLogChunk {
                            service: service.value.spec.name.clone(),
                            task_id: m.task_id,
                            slot,
                            node_id: node.clone(),
                            node: node_name.clone(),
                            stream: m.stream,
                            data: m.data,
                            time_unix_nanos: m.time_unix_nanos,
                            slot_width,
                            warning: String::new(),
                        }
                    })
                    .collect()
            }
        }
    }

    fn node(&mut self, h: &RaftHandle, id: &str) -> String {
        if let Some(n) = self.nodes.get(id) {
            return n.clone();
        }
        let name = h.store().read(|sm| {
            sm.node(id)
                .map(|n| n.hostname.clone())
                .unwrap_or_else(|| id.to_string())
        });
        self.nodes.insert(id.into(), name.clone());
        name
    }

    fn slot(&mut self, h: &RaftHandle, task_id: &str) -> u64 {
        if let Some(t) = self.tasks.get(task_id) {
            return t.0;
        }
        let slot = h.store().read(|sm| {
            sm.get(KIND_TASK, task_id)
                .and_then(|o| serde_json::from_slice::<Task>(&o.spec).ok())
                .map(|t| (t.slot, t.node_id))
        });
        match slot {
            Some(s) => {
                let n = s.0;
                self.tasks.insert(task_id.into(), s);
                n
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(task: &str, text: &str, t: i64) -> pb::LogMessage {
        pb::LogMessage {
            task_id: task.into(),
            container_id: format!("c-{task}"),
            stream: 1,
            data: text.as_bytes().to_vec(),
            time_unix_nanos: t,
        }
    }

    fn template(follow: bool) -> pb::LogSubscription {
        pb::LogSubscription {
            service_id: "svc".into(),
            service_name: "web".into(),
            follow,
            tail: -1,
            ..Default::default()
        }
    }

    async fn texts(sub: &mut Subscription) -> Vec<String> {
        let mut out = vec![];
        while let Some(ev) = sub.next().await {
            match ev {
                Event::Messages { node, messages } => {
                    for m in messages {
                        out.push(format!("{node}:{}", String::from_utf8_lossy(&m.data)));
                    }
                }
                Event::Unavailable { node, .. } => out.push(format!("{node}:unavailable")),
            }
        }
        out.sort();
        out
    }

    fn stored<T>(id: &str, value: T) -> Stored<T> {
        Stored {
            id: id.into(),
            version: 1,
            value,
        }
    }

    #[test]
    fn a_name_is_a_service_first_then_a_task_and_one_task_narrows_the_nodes() {
        let spec = ServiceSpec {
            name: "web".into(),
            ..Default::default()
        };
        let services = vec![stored(
            "svc1abcdef",
            Service {
                spec,
                ..Default::default()
            },
        )];
        let task = |node: &str| Task {
            service_id: "svc1abcdef".into(),
            node_id: node.into(),
            status: super::super::TaskStatus {
                state: TaskState::Running,
                ..Default::default()
            },
            ..Default::default()
        };
        let tasks = vec![
            stored("tsk111aaaa", task("n1")),
            stored("tsk111bbbb", task("n2")),
            stored("tsk222cccc", task("n2")),
        ];
        for name in ["web", "svc1abcdef", "svc1ab"] {
            let (s, only) = find_target(&services, &tasks, name).expect(name);
            assert_eq!((s.id.as_str(), only), ("svc1abcdef", None), "{name}");
        }
        let (s, only) = find_target(&services, &tasks, "tsk111bb").expect("prefix");
        assert_eq!(
            (s.id.as_str(), only.as_deref()),
            ("svc1abcdef", Some("tsk111bbbb"))
        );
        let nodes = task_nodes(&tasks, "svc1abcdef", only.as_deref(), false);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes["n2"], vec!["tsk111bbbb".to_string()]);
        assert_eq!(task_nodes(&tasks, "svc1abcdef", None, false).len(), 2);
        let e = find_target(&services, &tasks, "tsk111").expect_err("ambiguous");
        assert!(e.message().contains("ambiguous (2 tasks match)"), "{e:?}");
        let e = find_target(&services, &tasks, "nope").expect_err("unknown");
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("no such service or task: nope"));
    }

    #[tokio::test]
    async fn gathers_every_node_and_ends_when_all_are_done() {
        let b = LogBroker::new();
        let mut n1 = b.register("n1");
        let mut n2 = b.register("n2");
        let mut sub = b.subscribe(
            template(false),
            vec![
                ("n1".into(), vec!["t1".into()]),
                ("n2".into(), vec!["t2".into()]),
            ],
            vec![],
        );
        let s1 = n1.rx.recv().await.expect("n1 asked");
        let s2 = n2.rx.recv().await.expect("n2 asked");
        assert_eq!(s1.id, sub.id);
        assert_eq!(s1.task_ids, vec!["t1".to_string()]);
        assert_eq!(s2.task_ids, vec!["t2".to_string()]);
        assert_eq!(s1.service_name, "web");
        let pubs = async {
            b.publish(
                "n1",
                pb::LogMessages {
                    subscription_id: s1.id.clone(),
                    messages: vec![line("t1", "a", 1), line("t1", "b", 2)],
                    close: true,
                },
            )
            .await
            .expect("n1 publishes");
            b.publish(
                "n2",
                pb::LogMessages {
                    subscription_id: s2.id.clone(),
                    messages: vec![line("t2", "c", 3)],
                    close: true,
                },
            )
            .await
            .expect("n2 publishes");
        };
        let (_, got) = tokio::join!(pubs, texts(&mut sub));
        assert_eq!(got, vec!["n1:a", "n1:b", "n2:c"]);
        assert_eq!(b.counts().0, 0, "a finished subscription is forgotten");
    }

    #[tokio::test]
    async fn a_node_that_never_connects_is_reported_and_the_rest_delivered() {
        let b = LogBroker::new();
        let mut n1 = b.register("n1");
        let mut sub = b.subscribe(
            template(false),
            vec![
                ("n1".into(), vec!["t1".into()]),
                ("gone".into(), vec!["t2".into()]),
            ],
            vec![("down".into(), "is not available".into())],
        );
        let s1 = n1.rx.recv().await.expect("n1 asked");
        b.publish(
            "n1",
            pb::LogMessages {
                subscription_id: s1.id,
                messages: vec![line("t1", "a", 1)],
                close: true,
            },
        )
        .await
        .expect("publish");
        // Still waiting for "gone" until the grace period runs out.
        assert_eq!(b.counts().0, 1);
        b.expire(&sub.id);
        assert_eq!(
            texts(&mut sub).await,
            vec!["down:unavailable", "gone:unavailable", "n1:a"]
        );
    }

    #[tokio::test]
    async fn dropping_the_subscription_stops_every_node() {
        let b = LogBroker::new();
        let mut n1 = b.register("n1");
        let mut n2 = b.register("n2");
        let sub = b.subscribe(
            template(true),
            vec![("n1".into(), vec![]), ("n2".into(), vec![])],
            vec![],
        );
        let id = sub.id.clone();
        assert!(n1.rx.recv().await.is_some());
        assert!(n2.rx.recv().await.is_some());
        assert_eq!(b.counts().0, 1);
        drop(sub);
        assert_eq!(b.counts().0, 0);
        for n in [&mut n1, &mut n2] {
            let m = n.rx.recv().await.expect("cancellation");
            assert!(m.close && m.id == id, "{m:?}");
        }
        // A late publish for it is refused, so the node stops.
        assert_eq!(
            b.publish(
                "n1",
                pb::LogMessages {
                    subscription_id: id.clone(),
                    ..Default::default()
                }
            )
            .await,
            Err(BrokerError::UnknownSubscription(id))
        );
    }

    #[tokio::test]
    async fn follow_reaches_nodes_added_later_and_nodes_that_connect_later() {
        let b = LogBroker::new();
        let mut n1 = b.register("n1");
        let mut sub = b.subscribe(template(true), vec![("n1".into(), vec![])], vec![]);
        assert!(n1.rx.recv().await.is_some());
        // Scale-up onto a connected node, and onto one that connects afterwards.
        let mut n2 = b.register("n2");
        b.add_node(&sub.id, "n2", vec!["t2".into()]);
        let m = n2.rx.recv().await.expect("n2 asked");
        assert_eq!(m.task_ids, vec!["t2".to_string()]);
        b.add_node(&sub.id, "n3", vec!["t3".into()]);
        let mut n3 = b.register("n3");
        assert_eq!(n3.rx.recv().await.expect("n3 asked").id, sub.id);
        b.publish(
            "n3",
            pb::LogMessages {
                subscription_id: sub.id.clone(),
                messages: vec![line("t3", "x", 5)],
                close: false,
            },
        )
        .await
        .expect("publish");
        assert!(matches!(sub.next().await, Some(Event::Messages { node, .. }) if node == "n3"));
    }

    #[tokio::test]
    async fn a_follower_resumes_after_its_last_line_when_a_node_reconnects() {
        let b = LogBroker::new();
        let n1 = b.register("n1");
        let mut sub = b.subscribe(template(true), vec![("n1".into(), vec![])], vec![]);
        let mut rx = n1.rx;
        assert!(rx.recv().await.is_some());
        b.publish(
            "n1",
            pb::LogMessages {
                subscription_id: sub.id.clone(),
                messages: vec![line("t1", "a", 100)],
                close: false,
            },
        )
        .await
        .expect("publish");
        assert!(sub.next().await.is_some());
        b.unregister("n1", n1.conn);
        let mut again = b.register("n1");
        let m = again.rx.recv().await.expect("sent again");
        assert_eq!((m.since_unix_nanos, m.tail), (101, -1));
        // An old connection's late unregister changes nothing.
        b.unregister("n1", n1.conn);
        assert_eq!(b.counts(), (1, 1));
    }

    #[tokio::test]
    async fn only_subscribed_nodes_may_publish() {
        let b = LogBroker::new();
        let _n1 = b.register("n1");
        let _n2 = b.register("n2");
        let sub = b.subscribe(template(false), vec![("n1".into(), vec![])], vec![]);
        let r = b
            .publish(
                "n2",
                pb::LogMessages {
                    subscription_id: sub.id.clone(),
                    messages: vec![line("t", "forged", 1)],
                    close: true,
                },
            )
            .await;
        assert!(matches!(r, Err(BrokerError::NotSubscribed { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn a_broken_connection_without_follow_is_reported() {
        let b = LogBroker::new();
        let n1 = b.register("n1");
        let mut sub = b.subscribe(template(false), vec![("n1".into(), vec![])], vec![]);
        b.unregister("n1", n1.conn);
        assert_eq!(texts(&mut sub).await, vec!["n1:unavailable"]);
        assert_eq!(b.counts(), (0, 0));
    }
}
