//! Cluster events (`skiff events --filter type=service|node`): service create/update/
//! remove and node join/ready/down/update/remove, as Docker reports them from a swarm.
//!
//! They are derived inside the state machine's apply path ([`derive_node`],
//! [`derive_object`]), from the old and new value of what a proposal changed, stamped
//! with the proposal's own time (`Proposal::at`). Every manager applies the same log, so
//! every manager derives the same events with the same timestamps, and the most recent
//! [`HISTORY`] are kept in the replicated store: a manager that restarts, or receives a
//! snapshot, still replays them for `--since`.
//!
//! Workers have no state machine: [`feed`] reaches a manager over the mutual-TLS
//! cluster port (the `Events` service, [`EventsApi`]) and follows its stream,
//! reconnecting (to any manager) without repeating what was already delivered.

use crate::cluster::Cluster;
use crate::orchestrator::types::{Mode, Service, KIND_SERVICE};
use crate::state::{Action, Node, Object};
use serde::{Deserialize, Serialize};
use skiff_proto::cluster as pb;
use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// How many cluster events the replicated store keeps for replay.
pub const HISTORY: usize = 1000;

/// One cluster event, as recorded in the store and streamed to nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterEvent {
    /// From the proposal's `at` (the proposer's clock), so identical on every manager.
    pub time_unix_nanos: i64,
    /// Raft index of the entry that caused it.
    pub index: u64,
    /// `service` or `node`.
    pub kind: String,
    pub action: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl ClusterEvent {
    fn new(at: i64, index: u64, kind: &str, action: &str, id: &str) -> ClusterEvent {
        ClusterEvent {
            time_unix_nanos: at,
            index,
            kind: kind.into(),
            action: action.into(),
            actor_id: id.into(),
            attributes: BTreeMap::new(),
        }
    }

    fn attr(mut self, k: &str, v: impl Into<String>) -> ClusterEvent {
        self.attributes.insert(k.into(), v.into());
        self
    }

    /// Records `k.old` / `k.new` when the value changed.
    fn changed(&mut self, k: &str, old: &str, new: &str) -> bool {
        if old == new {
            return false;
        }
        self.attributes.insert(format!("{k}.old"), old.into());
        self.attributes.insert(format!("{k}.new"), new.into());
        true
    }

    pub fn to_pb(&self) -> pb::ClusterEvent {
        pb::ClusterEvent {
            r#type: self.kind.clone(),
            action: self.action.clone(),
            actor_id: self.actor_id.clone(),
            attributes: self.attributes.clone().into_iter().collect(),
            time_unix_nanos: self.time_unix_nanos,
        }
    }

    pub fn from_pb(e: pb::ClusterEvent) -> ClusterEvent {
        ClusterEvent {
            time_unix_nanos: e.time_unix_nanos,
            index: 0,
            kind: e.r#type,
            action: e.action,
            actor_id: e.actor_id,
            attributes: e.attributes.into_iter().collect(),
        }
    }

    /// What identifies an event across a reconnect (time plus what happened to whom).
    fn key(&self) -> (i64, String, String, String) {
        (
            self.time_unix_nanos,
            self.kind.clone(),
            self.action.clone(),
            self.actor_id.clone(),
        )
    }
}

/// A proposal's RFC 3339 time in nanoseconds (0 if unreadable: still deterministic).
pub fn proposal_time(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// Node events for one node's change: `join` (new), `ready`/`down` (status
/// transitions), `update` (availability, role, labels, address), `remove`.
pub fn derive_node(
    at: i64,
    index: u64,
    old: Option<&Node>,
    new: Option<&Node>,
) -> Vec<ClusterEvent> {
    let ev = |n: &Node, action: &str| {
        ClusterEvent::new(at, index, "node", action, &n.id).attr("name", n.hostname.clone())
    };
    match (old, new) {
        (None, Some(n)) => vec![ev(n, "join")
            .attr("role", n.role.as_str())
            .attr("state", n.status.as_str())],
        (Some(o), None) => vec![ev(o, "remove")],
        (Some(o), Some(n)) => {
            let mut out = Vec::new();
            if o.status != n.status {
                let action = match n.status {
                    crate::state::NodeStatus::Ready => "ready",
                    crate::state::NodeStatus::Down => "down",
                    crate::state::NodeStatus::Unknown => "update",
                };
                let mut e = ev(n, action);
                e.changed("state", o.status.as_str(), n.status.as_str());
                out.push(e);
            }
            let mut e = ev(n, "update");
            let mut any = e.changed(
                "availability",
                o.availability.as_str(),
                n.availability.as_str(),
            );
            any |= e.changed("role", o.role.as_str(), n.role.as_str());
            any |= o.labels != n.labels || o.addr != n.addr || o.hostname != n.hostname;
            if any {
                out.push(e);
            }
            out
        }
        (None, None) => vec![],
    }
}

/// The service event for a change of a stored object, if it is a service: `create`,
/// `update` (with Docker's `replicas.*`, `image.*`, `updatestate.*` attributes when
/// they changed), `remove`. Other kinds (tasks, networks, secrets) yield none.
pub fn derive_object(
    at: i64,
    index: u64,
    action: Action,
    old: Option<&Object>,
    new: &Object,
) -> Option<ClusterEvent> {
    if new.kind != KIND_SERVICE {
        return None;
    }
    let name = |o: &Object| o.name.clone();
    match action {
        Action::Created => {
            Some(ClusterEvent::new(at, index, "service", "create", &new.id).attr("name", name(new)))
        }
        Action::Deleted => {
            Some(ClusterEvent::new(at, index, "service", "remove", &new.id).attr("name", name(new)))
        }
        Action::Updated => {
            let mut e =
                ClusterEvent::new(at, index, "service", "update", &new.id).attr("name", name(new));
            let decode = |o: &Object| serde_json::from_slice::<Service>(&o.spec).ok();
            if let (Some(a), Some(b)) = (old.and_then(decode), decode(new)) {
                let replicas = |s: &Service| match s.spec.mode {
                    Mode::Replicated { replicas } => replicas.to_string(),
                    Mode::Global => String::new(),
                };
                e.changed("replicas", &replicas(&a), &replicas(&b));
                e.changed("image", &a.spec.template.image, &b.spec.template.image);
                let state = |s: &Service| s.update.as_ref().map(|u| u.state.clone());
                e.changed(
                    "updatestate",
                    &state(&a).unwrap_or_default(),
                    &state(&b).unwrap_or_default(),
                );
            }
            Some(e)
        }
    }
}

/// Cluster events at or after `since`, then every new one.
pub struct Feed {
    pub past: Vec<ClusterEvent>,
    /// `None` when not following.
    pub live: Option<mpsc::Receiver<ClusterEvent>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("no manager reachable for cluster events: {0}")]
    Unreachable(String),
}

/// The cluster events since `since` (0: none), and with `follow` the ones that come
/// after: from this node's own state machine on a manager, from a manager otherwise.
pub async fn feed(cluster: Arc<Cluster>, since: i64, follow: bool) -> Result<Feed, FeedError> {
    if let Some(h) = cluster.raft().filter(|h| !h.is_stopped()) {
        // Everything committed before the call is replayed (not just what this manager
        // happened to have applied); a cluster without quorum still gets what is here.
        if let Err(e) = h.read_barrier().await {
            tracing::debug!(error = %e, "events: read barrier failed; replaying local state");
        }
        let (past, rx) = {
            let sm = h.state().read().unwrap_or_else(|p| p.into_inner());
            (sm.cluster_events(since), sm.subscribe_cluster_events())
        };
        let live = follow.then(|| forward_local(rx));
        return Ok(Feed { past, live });
    }
    remote_feed(cluster, since, follow).await
}

/// Turns a state machine subscription into an owned channel.
fn forward_local(mut rx: broadcast::Receiver<ClusterEvent>) -> mpsc::Receiver<ClusterEvent> {
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let r = tokio::select! {
                r = rx.recv() => r,
                _ = tx.closed() => return,
            };
            match r {
                Ok(e) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cluster events subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    out
}

type EventStream = tonic::Streaming<pb::ClusterEventsBatch>;

/// How long opening a manager's stream may take (a dead manager's address must not
/// hold `skiff events` up).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

async fn open(cluster: &Cluster, since: i64, follow: bool) -> Result<EventStream, String> {
    let ch = cluster.manager_channel().map_err(|e| e.to_string())?;
    let mut c = pb::events_client::EventsClient::new(ch);
    let call = c.stream(pb::ClusterEventsRequest {
        since_unix_nanos: since,
        follow,
    });
    let s = tokio::time::timeout(OPEN_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer from a manager within {OPEN_TIMEOUT:?}"))?
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(s)
}

async fn remote_feed(cluster: Arc<Cluster>, since: i64, follow: bool) -> Result<Feed, FeedError> {
    let mut s = open(&cluster, since, follow)
        .await
        .map_err(FeedError::Unreachable)?;
    // The first message is the replay, even when empty.
    // Longer than the manager's read barrier may take without a quorum.
    let first = tokio::time::timeout(OPEN_TIMEOUT * 3, s.message())
        .await
        .map_err(|_| FeedError::Unreachable("the manager sent no replay".into()))?;
    let past: Vec<ClusterEvent> = match first {
        Ok(Some(b)) => b.events.into_iter().map(ClusterEvent::from_pb).collect(),
        Ok(None) => vec![],
        Err(e) => return Err(FeedError::Unreachable(e.message().to_string())),
    };
    if !follow {
        return Ok(Feed { past, live: None });
    }
    let (tx, rx) = mpsc::channel(256);
    // Where a reconnect resumes: the last event delivered, else where this feed began.
    let mut last = past
        .last()
        .map(|e| e.time_unix_nanos)
        .unwrap_or(if since > 0 { since } else { now_nanos() });
    let mut at_last: HashSet<_> = past
        .iter()
        .filter(|e| e.time_unix_nanos == last)
        .map(ClusterEvent::key)
        .collect();
    tokio::spawn(
        async move {
            let mut stream = Some(s);
            let mut replay = false;
            loop {
                let Some(s) = stream.as_mut() else {
                    // Reconnect (perhaps to another manager) and resume after `last`.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if tx.is_closed() {
                        return;
                    }
                    match open(&cluster, last, true).await {
                        Ok(s) => {
                            stream = Some(s);
                            replay = true;
                        }
                        Err(e) => tracing::debug!(error = %e, "events: reconnecting"),
                    }
                    continue;
                };
                let msg = tokio::select! {
                    m = s.message() => m,
                    _ = tx.closed() => return,
                };
                let batch = match msg {
                    Ok(Some(b)) => b,
                    Ok(None) | Err(_) => {
                        stream = None;
                        continue;
                    }
                };
                let was_replay = std::mem::take(&mut replay);
                for e in batch.events.into_iter().map(ClusterEvent::from_pb) {
                    // A replay after a reconnect starts at `last`: skip what was sent.
                    if was_replay
                        && (e.time_unix_nanos < last
                            || (e.time_unix_nanos == last && at_last.contains(&e.key())))
                    {
                        continue;
                    }
                    if e.time_unix_nanos != last {
                        last = e.time_unix_nanos;
                        at_last.clear();
                    }
                    at_last.insert(e.key());
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
        }
        .instrument(tracing::debug_span!("cluster_events")),
    );
    Ok(Feed {
        past,
        live: Some(rx),
    })
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// The `Events` service on the mutual-TLS cluster port: any node of the cluster (its
/// certificate says so) may follow a manager's cluster events.
#[derive(Clone)]
pub struct EventsApi {
    pub cluster: Arc<Cluster>,
}

type BatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ClusterEventsBatch, Status>> + Send>>;

#[tonic::async_trait]
impl pb::events_server::Events for EventsApi {
    type StreamStream = BatchStream;

    async fn stream(
        &self,
        req: Request<pb::ClusterEventsRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let caller = req
            .extensions()
            .get::<crate::tls::PeerIdentity>()
            .and_then(|p| p.node_id.clone())
            .ok_or_else(|| {
                Status::unauthenticated("a client certificate from this cluster's CA is required")
            })?;
        let r = req.into_inner();
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition("this node is not a manager"))?;
        if h.state()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_removed(&caller)
        {
            return Err(Status::permission_denied(format!(
                "node {caller} was removed from the cluster"
            )));
        }
        let feed = feed(self.cluster.clone(), r.since_unix_nanos, r.follow)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::debug_span!("events_stream", node_id = %caller);
        tokio::spawn(
            async move {
                let first = pb::ClusterEventsBatch {
                    events: feed.past.iter().map(ClusterEvent::to_pb).collect(),
                };
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
                let Some(mut live) = feed.live else { return };
                while let Some(e) = live.recv().await {
                    let b = pb::ClusterEventsBatch {
                        events: vec![e.to_pb()],
                    };
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::types::{ServiceSpec, UpdateStatus};
    use crate::state::{Availability, NodeStatus, Role};

    fn node(status: NodeStatus) -> Node {
        Node {
            id: "n1".into(),
            hostname: "h1".into(),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn node_transitions() {
        let up = node(NodeStatus::Ready);
        let join = derive_node(5, 1, None, Some(&node(NodeStatus::Unknown)));
        assert_eq!(join.len(), 1);
        assert_eq!(join[0].action, "join");
        assert_eq!(join[0].attributes["name"], "h1");
        assert_eq!(join[0].attributes["state"], "unknown");
        assert_eq!(join[0].time_unix_nanos, 5);

        let ready = derive_node(6, 2, Some(&node(NodeStatus::Unknown)), Some(&up));
        assert_eq!(ready.len(), 1, "{ready:?}");
        assert_eq!(ready[0].action, "ready");
        assert_eq!(ready[0].attributes["state.new"], "ready");

        let down = derive_node(7, 3, Some(&up), Some(&node(NodeStatus::Down)));
        assert_eq!(down[0].action, "down");
        assert_eq!(down[0].attributes["state.old"], "ready");

        let mut drained = up.clone();
        drained.availability = Availability::Drain;
        drained.role = Role::Manager;
        let upd = derive_node(8, 4, Some(&up), Some(&drained));
        assert_eq!(upd.len(), 1);
        assert_eq!(upd[0].action, "update");
        assert_eq!(upd[0].attributes["availability.new"], "drain");
        assert_eq!(upd[0].attributes["role.old"], "worker");

        // A heartbeat-only rewrite with nothing visible changed yields nothing.
        assert!(derive_node(9, 5, Some(&up), Some(&up)).is_empty());
        assert_eq!(derive_node(10, 6, Some(&up), None)[0].action, "remove");
    }

    fn service_obj(replicas: u64, image: &str, update: Option<&str>) -> Object {
        let s = Service {
            spec: ServiceSpec {
                name: "web".into(),
                mode: Mode::Replicated { replicas },
                template: crate::orchestrator::types::TaskTemplate {
                    image: image.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            update: update.map(|u| UpdateStatus {
                state: u.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Object {
            kind: KIND_SERVICE.into(),
            id: "s1".into(),
            name: "web".into(),
            version: 1,
            spec: serde_json::to_vec(&s).expect("json"),
            created_index: 1,
            updated_index: 1,
        }
    }

    #[test]
    fn service_changes() {
        let a = service_obj(3, "busybox", None);
        let c = derive_object(1, 1, Action::Created, None, &a).expect("event");
        assert_eq!((c.kind.as_str(), c.action.as_str()), ("service", "create"));
        assert_eq!(c.attributes["name"], "web");

        let b = service_obj(5, "busybox:2", Some("updating"));
        let u = derive_object(2, 2, Action::Updated, Some(&a), &b).expect("event");
        assert_eq!(u.action, "update");
        assert_eq!(u.attributes["replicas.old"], "3");
        assert_eq!(u.attributes["replicas.new"], "5");
        assert_eq!(u.attributes["image.new"], "busybox:2");
        assert_eq!(u.attributes["updatestate.new"], "updating");

        let r = derive_object(3, 3, Action::Deleted, None, &b).expect("event");
        assert_eq!(r.action, "remove");

        let mut task = a.clone();
        task.kind = "task".into();
        assert!(derive_object(4, 4, Action::Created, None, &task).is_none());
    }

    #[test]
    fn the_state_machine_records_replayable_events() {
        use crate::state::{Op, Proposal, StateMachine};
        let prop = |id: &str, at: &str, ops: Vec<Op>| Proposal {
            request_id: id.into(),
            at: at.into(),
            ops,
        };
        let mut sm = StateMachine::default();
        let mut live = sm.subscribe_cluster_events();
        let svc = service_obj(1, "busybox", None);
        sm.apply(
            1,
            &prop(
                "a",
                "2024-01-01T00:00:01Z",
                vec![
                    Op::PutNode {
                        node: node(NodeStatus::Unknown),
                    },
                    Op::Create {
                        kind: KIND_SERVICE.into(),
                        id: "s1".into(),
                        name: "web".into(),
                        spec: svc.spec.clone(),
                    },
                ],
            ),
        )
        .expect("apply");
        let scaled = service_obj(4, "busybox", None);
        sm.apply(
            2,
            &prop(
                "b",
                "2024-01-01T00:00:02Z",
                vec![Op::Update {
                    kind: KIND_SERVICE.into(),
                    id: "s1".into(),
                    spec: scaled.spec.clone(),
                    expected_version: 0,
                }],
            ),
        )
        .expect("apply");
        // A rejected proposal records nothing.
        assert!(sm
            .apply(
                3,
                &prop(
                    "c",
                    "2024-01-01T00:00:03Z",
                    vec![Op::RemoveNode { id: "x".into() }]
                )
            )
            .is_err());
        let t1 = proposal_time("2024-01-01T00:00:01Z");
        let t2 = proposal_time("2024-01-01T00:00:02Z");
        let all = sm.cluster_events(1);
        let summary: Vec<_> = all
            .iter()
            .map(|e| (e.kind.as_str(), e.action.as_str(), e.time_unix_nanos))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("node", "join", t1),
                ("service", "create", t1),
                ("service", "update", t2)
            ]
        );
        assert_eq!(all[2].attributes["replicas.new"], "4");
        assert_eq!(sm.cluster_events(t2).len(), 1, "--since filters by time");
        assert!(
            sm.cluster_events(0).is_empty(),
            "since 0 means only new events"
        );
        let streamed: Vec<_> = std::iter::from_fn(|| live.try_recv().ok()).collect();
        assert_eq!(streamed, all);
        // Snapshots carry the history: a restored manager replays the same events.
        let mut restored = StateMachine::default();
        restored
            .restore(&sm.snapshot_data().expect("snapshot"))
            .expect("restore");
        assert_eq!(restored.cluster_events(1), all);
    }

    #[test]
    fn history_is_bounded() {
        use crate::state::{Op, Proposal, StateMachine};
        let mut sm = StateMachine::default();
        for i in 0..(HISTORY as u64 + 10) {
            let p = Proposal {
                request_id: format!("r{i}"),
                at: "2024-01-01T00:00:01Z".into(),
                ops: vec![Op::Create {
                    kind: KIND_SERVICE.into(),
                    id: format!("s{i}"),
                    name: format!("svc{i}"),
                    spec: b"{}".to_vec(),
                }],
            };
            sm.apply(i + 1, &p).expect("apply");
        }
        let all = sm.cluster_events(1);
        assert_eq!(all.len(), HISTORY);
        assert_eq!(all[0].actor_id, "s10", "the oldest are dropped first");
    }

    #[test]
    fn proposal_times_parse() {
        assert_eq!(
            proposal_time("1970-01-01T00:00:01Z"),
            1_000_000_000,
            "RFC 3339 to nanoseconds"
        );
        assert_eq!(proposal_time("garbage"), 0);
    }
}
