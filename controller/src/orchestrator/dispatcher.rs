//! The dispatcher: managers stream each node its assigned tasks over the cluster port
//! (mutual TLS; the node is the one its certificate names) and accept task state
//! updates back. Managers' own executors read the local state machine directly; this
//! is how worker nodes get their share. It also carries the node side of the log
//! broker (`LogSubscriptions`, `PublishLogs`; see [`super::logbroker`]) and the
//! managers-only relay of a follower's `service logs` (`SubscribeLogs`).

use super::membership::Membership;
use crate::model::*;
use crate::model::{Op, Proposal};
use crate::store::read_world;
use crate::store::Stored;
use crate::tls::PeerIdentity;
use skiff_proto::orchestrator as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct DispatcherApi {
    pub cluster: Arc<dyn Membership>,
}

fn caller<T>(req: &Request<T>) -> Result<String, Status> {
    req.extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.node_id.clone())
        .ok_or_else(|| {
            Status::unauthenticated("a client certificate from this cluster's CA is required")
        })
}

fn obj<T: serde::Serialize>(s: &Stored<T>) -> pb::StoredObject {
    pb::StoredObject {
        id: s.id.clone(),
        version: s.version,
        json: serde_json::to_string(&s.value).unwrap_or_default(),
    }
}

/// The assignment set of `node` in the current state.
pub fn assignments(sm: &crate::store::StateMachine, node: &str) -> pb::AssignmentSet {
    let w = read_world(sm);
    let (services, tasks) = (&w.services, &w.tasks);
    let tasks: Vec<&Stored<Task>> = tasks.iter().filter(|t| t.value.node_id == node).collect();
    let services = services
        .iter()
        .filter(|s| tasks.iter().any(|t| t.value.service_id == s.id))
        .map(obj)
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
        tasks: tasks.into_iter().map(obj).collect(),
        services,
        networks: sm.list(KIND_NETWORK).into_iter().map(|o| o.name).collect(),
        files,
        overlay_json: serde_json::to_string(&super::overlay::view(sm, node)).unwrap_or_default(),
        revoked_clients: crate::store::clients::revoked_serials(sm),
    }
}

type AssignStream = Pin<Box<dyn futures::Stream<Item = Result<pb::AssignmentSet, Status>> + Send>>;
type SubscriptionStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::LogSubscription, Status>> + Send>>;
type LogChunkStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ServiceLogChunk, Status>> + Send>>;

impl DispatcherApi {
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
        let h = self.manager()?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let span = tracing::info_span!("dispatch", node_id = %node);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut events = h.store().read(|sm| sm.subscribe());
                let mut last = None;
                loop {
                    let set = h.store().read(|sm| assignments(sm, &node));
                    if last.as_ref() != Some(&set) {
                        if tx.send(Ok(set.clone())).await.is_err() {
                            return;
                        }
                        last = Some(set);
                    }
                    // The same channel carries liveness: a quiet period still ends in a resend
                    // check, and a closed client ends the loop.
                    tokio::select! {
                        r = events.recv() => {
                            if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            while events.try_recv().is_ok() {}
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

    async fn update_task(
        &self,
        req: Request<pb::StoredObject>,
    ) -> Result<Response<pb::Empty>, Status> {
        let node = caller(&req)?;
        let r = req.into_inner();
        let task: Task = serde_json::from_str(&r.json)
            .map_err(|e| Status::invalid_argument(format!("task: {e}")))?;
        let h = self.manager()?;
        // A node may only report on its own tasks.
        let owned = h.store().read(|sm| {
            sm.get(KIND_TASK, &r.id)
                .and_then(|o| serde_json::from_slice::<Task>(&o.spec).ok())
                .map(|t| t.node_id == node && task.node_id == node)
                .unwrap_or(false)
        });
        if !owned {
            return Err(Status::permission_denied(format!(
                "task {} is not assigned to node {node}",
                r.id
            )));
        }
        let op = Op::Update {
            kind: KIND_TASK.into(),
            id: r.id,
            spec: r.json.into_bytes(),
            expected_version: r.version,
        };
        h.propose(Proposal::new(vec![op]))
            .await
            .map_err(crate::raft::wire::raft_status)?;
        Ok(Response::new(pb::Empty {}))
    }
}
