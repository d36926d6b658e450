//! The dispatcher: managers stream each node its assigned tasks over the cluster port
//! (mutual TLS; the node is the one its certificate names) as typed objects, and accept
//! task status updates back (only for a node's own tasks, never backwards). Managers'
//! own executors read the local state machine directly; this is how worker nodes get
//! their share. It also carries the node side of the log
//! broker (`LogSubscriptions`, `PublishLogs`; see [`super::logbroker`]) and the
//! managers-only relay of a follower's `service logs` (`SubscribeLogs`).

use super::membership::Membership;
use super::status_batch::StatusBatcher;
use crate::model::*;
use crate::model::{Op, Proposal};
use crate::store::Stored;
use crate::tls::PeerIdentity;
use skiff_proto::orchestrator as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker waits on a silent assignment stream before it gives it up and
/// connects again (to the leader or another manager).
pub const ASSIGNMENTS_SILENCE: Duration = Duration::from_secs(10);
/// How long a stream stays quiet before the dispatcher sends a liveness-only set (the
/// loop wakes every 2 s, so one goes out within 3–5 s: two chances per silence window).
const KEEPALIVE_PERIOD: Duration = Duration::from_secs(3);
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct DispatcherApi {
    cluster: Arc<dyn Membership>,
    /// Workers' status reports, batched per raft node (replaced with the node).
    statuses: Arc<std::sync::Mutex<Option<StatusBatcher>>>,
}

fn caller<T>(req: &Request<T>) -> Result<String, Status> {
    req.extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.node_id.clone())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate from this cluster's CA is required")
        })
}

/// The assignment set of `node` in the current state. Its cost is the node's own tasks
/// (the store's per-node index), not the cluster's: every stream builds its set after
/// each change that concerns it.
pub fn assignments(sm: &crate::store::StateMachine, node: &str) -> pb::AssignmentSet {
    let tasks = crate::store::node_tasks(sm, node);
    let used: std::collections::BTreeSet<&str> =
        tasks.iter().map(|t| t.value.service_id.as_str()).collect();
    let services: Vec<pb::Service> = used
        .into_iter()
        .filter_map(|id| sm.decoded_one::<Service>(KIND_SERVICE, id))
        .map(|s| {
            Stored {
                id: s.id,
                version: s.version,
                value: Service::clone(&s.value),
            }
            .into()
        })
        .collect();
    // Only the secrets and configs this node's tasks mount are sent to it.
    let mut files: Vec<pb::FileObject> = Vec::new();
    for f in tasks.iter().flat_map(|t| t.value.template.files.iter()) {
        if files.iter().any(|x| x.kind == f.kind && x.name == f.name) {
            continue;
        }
        if let Some(o) = sm.get(&f.kind, &f.name) {
            if let Ok(c) = serde_json::from_slice::<FileContent>(&o.spec) {
                files.push(pb::FileObject {
                    kind: f.kind.clone(),
                    name: f.name.clone(),
                    content: c.content,
                });
            }
        }
    }
    pb::AssignmentSet {
        tasks: tasks.into_iter().map(Into::into).collect(),
        services,
        networks: sm.objects(KIND_NETWORK).map(|o| o.name.clone()).collect(),
        files,
        overlay: Some(super::overlay::view(sm, node).into()),
        revoked_clients: crate::store::clients::revoked_serials(sm),
        unchanged: false,
    }
}

/// Why a node's task status was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {task} is not assigned to node {node}")]
    NotAssigned { task: String, node: String },
    #[error("task {task} is at version {current}, not {sent}: report from a fresh view")]
    Stale {
        task: String,
        current: u64,
        sent: u64,
    },
    #[error("task {task} cannot move back from {from} to {to}")]
    Backwards {
        task: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("encoding the task: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Raft(#[from] crate::raft::consensus::RaftError),
}

impl From<StatusError> for Status {
    fn from(e: StatusError) -> Status {
        match e {
            StatusError::NotFound(_) => Status::not_found(e.to_string()),
            StatusError::NotAssigned { .. } => Status::permission_denied(e.to_string()),
            StatusError::Stale { .. } | StatusError::Backwards { .. } => {
                Status::failed_precondition(e.to_string())
            }
            StatusError::Encode(_) => Status::internal(e.to_string()),
            StatusError::Raft(e) => crate::raft::wire::raft_status(e),
        }
    }
}

/// The stored task with `status` applied, if `node` may record it: the task must be
/// assigned to `node`, be at `version` (0: any), and its state must not move backwards.
pub fn apply_status(
    task: &Stored<Task>,
    node: &str,
    version: u64,
    status: TaskStatus,
) -> Result<Task, StatusError> {
    if task.value.node_id != node {
        return Err(StatusError::NotAssigned {
            task: task.id.clone(),
            node: node.into(),
        });
    }
    if version != 0 && version != task.version {
        return Err(StatusError::Stale {
            task: task.id.clone(),
            current: task.version,
            sent: version,
        });
    }
    if status.state < task.value.status.state {
        return Err(StatusError::Backwards {
            task: task.id.clone(),
            from: task.value.status.state.as_str(),
            to: status.state.as_str(),
        });
    }
    let mut t = task.value.clone();
    t.status = status;
    Ok(t)
}

/// The proposal that records a status `node` reports for one of its tasks (see
/// [`apply_status`]), from the stored task object `stored` (None: there is no such
/// task); it carries the version read, so a change racing it is refused, not lost.
pub fn prepare_status(
    stored: Option<&Object>,
    node: &str,
    task_id: &str,
    version: u64,
    status: TaskStatus,
) -> Result<Proposal, StatusError> {
    let stored = stored
        .and_then(|o| {
            serde_json::from_slice::<Task>(&o.spec)
                .ok()
                .map(|value| Stored {
                    id: o.id.clone(),
                    version: o.version,
                    value,
                })
        })
        .ok_or_else(|| StatusError::NotFound(task_id.into()))?;
    let task = apply_status(&stored, node, version, status)?;
    let spec = serde_json::to_vec(&task).map_err(StatusError::Encode)?;
    Ok(Proposal::new(vec![Op::Update {
        kind: KIND_TASK.into(),
        id: stored.id,
        spec,
        expected_version: stored.version,
    }]))
}

/// Records a status `node` reports for one of its tasks (see [`prepare_status`]), alone;
/// workers' reports through the dispatcher go in batches ([`StatusBatcher`]).
pub async fn record_status(
    h: &crate::raft::consensus::RaftHandle,
    node: &str,
    task_id: &str,
    version: u64,
    status: TaskStatus,
) -> Result<(), StatusError> {
    let stored = h.store().read(|sm| sm.get(KIND_TASK, task_id).cloned());
    let p = prepare_status(stored.as_ref(), node, task_id, version, status)?;
    h.propose(p).await?;
    Ok(())
}

type AssignStream = Pin<Box<dyn futures::Stream<Item = Result<pb::AssignmentSet, Status>> + Send>>;
type SubscriptionStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::LogSubscription, Status>> + Send>>;
type LogChunkStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ServiceLogChunk, Status>> + Send>>;

impl DispatcherApi {
    pub fn new(cluster: Arc<dyn Membership>) -> DispatcherApi {
        DispatcherApi {
            cluster,
            statuses: Arc::default(),
        }
    }

    /// The status batcher writing through `h` (started on first use, and again when
    /// the raft node was replaced).
    fn statuses(&self, h: &crate::raft::consensus::RaftHandle) -> StatusBatcher {
        let mut b = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        match b.as_ref() {
            Some(s) if s.raft_id() == h.id() && !s.is_closed() => s.clone(),
            _ => {
                let s = StatusBatcher::start(h.clone());
                *b = Some(s.clone());
                s
            }
        }
    }

    /// This node's raft handle: the dispatcher is served by managers only.
    fn manager(&self) -> Result<crate::raft::consensus::RaftHandle, Status> {
        self.cluster
            .raft()
            .ok_or_else(|| Status::failed_precondition("not a manager"))
    }

    /// This node's raft handle if it leads (log subscriptions live on the leader only).
    fn leader(&self) -> Result<crate::raft::consensus::RaftHandle, Status> {
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition("not a manager"))?;
        if !h.status().is_leader {
            return Err(Status::unavailable("not the leader"));
        }
        Ok(h)
    }
}

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherApi {
    type AssignmentsStream = AssignStream;
    type LogSubscriptionsStream = SubscriptionStream;
    type SubscribeLogsStream = LogChunkStream;

    async fn log_subscriptions(
        &self,
        req: Request<pb::LogSubscriptionsRequest>,
    ) -> Result<Response<SubscriptionStream>, Status> {
        let node = caller(&req)?;
        let h = self.leader()?;
        if h.store().read(|sm| sm.node(&node).is_none()) {
            return Err(Status::permission_denied(format!(
                "node {node} is not part of this cluster"
            )));
        }
        let broker = self.cluster.logs();
        let mut reg = broker.register(&node);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let span = tracing::info_span!("log_subscriptions", node_id = %node);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut keepalive = tokio::time::interval(super::logbroker::KEEPALIVE);
                loop {
                    let msg = tokio::select! {
                        m = reg.rx.recv() => match m {
                            Some(m) => m,
                            None => break, // replaced by a newer connection of the node
                        },
                        _ = keepalive.tick() => {
                            if !h.status().is_leader || h.is_stopped() {
                                let _ = tx.send(Err(Status::unavailable("no longer the leader"))).await;
                                break;
                            }
                            pb::LogSubscription::default()
                        }
                        _ = tx.closed() => break,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
                broker.unregister(&node, reg.conn);
            },
            span,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn publish_logs(
        &self,
        req: Request<tonic::Streaming<pb::LogMessages>>,
    ) -> Result<Response<pb::Empty>, Status> {
        let node = caller(&req)?;
        self.leader()?;
        let broker = self.cluster.logs();
        let mut input = req.into_inner();
        let mut current: Option<String> = None;
        loop {
            let msg = match input.message().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => {
                    if let Some(id) = &current {
                        broker.publish_broken(&node, id);
                    }
                    return Ok(Response::new(pb::Empty {}));
                }
            };
            let close = msg.close;
            current = Some(msg.subscription_id.clone());
            broker.publish(&node, msg).await.map_err(|e| match e {
                super::logbroker::BrokerError::UnknownSubscription(_) => {
                    Status::not_found(e.to_string())
                }
                super::logbroker::BrokerError::NotSubscribed { .. } => {
                    Status::permission_denied(e.to_string())
                }
            })?;
            if close {
                return Ok(Response::new(pb::Empty {}));
            }
        }
    }

    async fn subscribe_logs(
        &self,
        req: Request<pb::ServiceLogsRequest>,
    ) -> Result<Response<LogChunkStream>, Status> {
        let node = caller(&req)?;
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition("not a manager"))?;
        // Only managers relay their clients' requests; a worker has no business here.
        let is_manager = h.store().read(|sm| {
            sm.node(&node)
                .is_some_and(|n| n.role == crate::model::Role::Manager)
        });
        if !is_manager {
            return Err(Status::permission_denied(format!(
                "node {node} is not a manager of this cluster"
            )));
        }
        let h = self.leader()?;
        let rx = super::logbroker::serve(&self.cluster.logs(), h, req.into_inner())?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn assignments(
        &self,
        req: Request<pb::AssignmentsRequest>,
    ) -> Result<Response<AssignStream>, Status> {
        let node = caller(&req)?;
        let keepalive = req.get_ref().keepalive;
        let h = self.manager()?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let span = tracing::info_span!("dispatch", node_id = %node);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Woken by changes that may concern this node only (the state
                // machine's per-node signal, `Event::node`) or a snapshot restore: a
                // change on other nodes costs this stream nothing.
                let mut watch = h.store().read(|sm| sm.watch_node(&node));
                let mut last = None;
                let mut dirty = true;
                let mut sent_at = tokio::time::Instant::now();
                let mut looked_at = sent_at;
                loop {
                    if dirty {
                        looked_at = tokio::time::Instant::now();
                        let set = h.store().read(|sm| assignments(sm, &node));
                        dirty = false;
                        if last.as_ref() != Some(&set) {
                            if tx.send(Ok(set.clone())).await.is_err() {
                                return;
                            }
                            sent_at = tokio::time::Instant::now();
                            last = Some(set);
                        }
                    }
                    // A quiet stream still says it is alive (the worker gives a silent one
                    // up after ASSIGNMENTS_SILENCE), in a few bytes instead of the set.
                    if keepalive && last.is_some() && sent_at.elapsed() >= KEEPALIVE_PERIOD {
                        let alive = pb::AssignmentSet {
                            unchanged: true,
                            ..Default::default()
                        };
                        if tx.send(Ok(alive)).await.is_err() {
                            return;
                        }
                        sent_at = tokio::time::Instant::now();
                    }
                    tokio::select! {
                        alive = watch.changed() => {
                            if !alive {
                                return;
                            }
                            // Changes come in bursts: at most one look (and one set) per
                            // COALESCE; the first change after a quiet spell is looked at
                            // at once.
                            tokio::time::sleep_until(looked_at + super::COALESCE).await;
                            watch.mark_seen();
                            dirty = true;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = tx.closed() => return,
                    }
                    if h.is_stopped() {
                        return;
                    }
                }
            },
            span,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn attach(
        &self,
        req: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        let node = caller(&req)?;
        let r = req.into_inner();
        let h = self.manager()?;
        let out = super::attach::attach(
            &h,
            &node,
            &r.network,
            &r.container_id,
            &r.name,
            r.check_only,
        )
        .await
        .map_err(|e| match e {
            super::attach::AttachError::NotAttachable(_) => {
                Status::permission_denied(e.to_string())
            }
            super::attach::AttachError::Raft(e) => crate::raft::wire::raft_status(e),
            e => Status::unavailable(e.to_string()),
        })?;
        Ok(Response::new(match out {
            super::attach::Outcome::NotOverlay => pb::AttachResponse::default(),
            super::attach::Outcome::Attached(ip) => pb::AttachResponse {
                overlay: true,
                ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            },
        }))
    }

    async fn detach(&self, req: Request<pb::DetachRequest>) -> Result<Response<pb::Empty>, Status> {
        let node = caller(&req)?;
        let r = req.into_inner();
        let h = self.manager()?;
        // A node may only detach its own containers.
        let owned = h.store().read(|sm| {
            super::attach::list(sm)
                .iter()
                .filter(|a| a.value.container_id == r.container_id)
                .all(|a| a.value.node_id == node)
        });
        if !owned {
            return Err(Status::permission_denied(
                "the container belongs to another node",
            ));
        }
        super::attach::detach(&h, &r.container_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn update_task_status(
        &self,
        req: Request<pb::UpdateTaskStatusRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let node = caller(&req)?;
        let r = req.into_inner();
        let status: TaskStatus = r
            .status
            .ok_or(crate::model::wire::WireError::Missing(
                "UpdateTaskStatusRequest.status",
            ))
            .and_then(TryInto::try_into)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let h = self.manager()?;
        self.statuses(&h)
            .record(&node, &r.task_id, r.version, status)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState) -> Stored<Task> {
        Stored {
            id: "t1".into(),
            version: 4,
            value: Task {
                node_id: "n1".into(),
                status: TaskStatus {
                    state,
                    ..Default::default()
                },
                ..Default::default()
            },
        }
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus {
            state,
            message: "started".into(),
            container_id: "c1".into(),
            timestamp_ms: 9,
            ..Default::default()
        }
    }

    #[test]
    fn a_status_replaces_only_the_status() {
        let t = task(TaskState::Assigned);
        let got = apply_status(&t, "n1", 4, status(TaskState::Running)).expect("applies");
        let mut want = t.value.clone();
        want.status = status(TaskState::Running);
        assert_eq!(got, want);
        // Version 0: whatever version is stored; the same state again (a health change).
        let running = task(TaskState::Running);
        assert!(apply_status(&running, "n1", 0, status(TaskState::Running)).is_ok());
    }

    #[test]
    fn other_nodes_stale_versions_and_backward_moves_are_refused() {
        let t = task(TaskState::Running);
        assert!(matches!(
            apply_status(&t, "n2", 4, status(TaskState::Complete)),
            Err(StatusError::NotAssigned { .. })
        ));
        assert!(matches!(
            apply_status(&t, "n1", 3, status(TaskState::Complete)),
            Err(StatusError::Stale {
                current: 4,
                sent: 3,
                ..
            })
        ));
        assert!(matches!(
            apply_status(&t, "n1", 4, status(TaskState::Starting)),
            Err(StatusError::Backwards {
                from: "running",
                to: "starting",
                ..
            })
        ));
        assert_eq!(
            Status::from(StatusError::NotFound("x".into())).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            Status::from(StatusError::NotAssigned {
                task: "t".into(),
                node: "n".into()
            })
            .code(),
            tonic::Code::PermissionDenied
        );
    }
}
