//! The cluster port's gRPC services: `Raft` (managers only) and `Membership` (join,
//! certificate renewal, heartbeats, manager admission). Every call but `GetCaCert` and
//! `Join` needs a client certificate from the cluster CA, of a node not removed.

use crate::ca::{self, Ca, JoinToken};
use crate::model::{data_ip, new_raft_id, update_status};
use crate::model::{Node, NodeStatus, Op, Proposal, Role};
use crate::orchestrator::membership::Membership;
use crate::raft::consensus::RaftHandle;
use crate::raft::wire::{raft_status, result_to_pb};
use crate::tls::PeerIdentity;
use protobuf::Message as _;
use skiff_proto::cluster as pb;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The metadata key of [`ClusterPort::not_leader`]'s leader address.
pub const LEADER_HINT: &str = "skiff-leader";

#[derive(Clone)]
pub struct ClusterPort {
    pub cluster: Arc<dyn Membership>,
}

impl ClusterPort {
    fn manager(&self) -> Result<RaftHandle, Status> {
        self.cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition("this node is not a manager"))
    }

    /// The verified node ID of the caller, refusing unknown and removed nodes.
    fn caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let id = req
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|p| p.node_id.clone())
            .ok_or_else(|| {
                Status::unauthenticated("a client certificate from this cluster's CA is required")
            })?;
        if let Some(h) = self.cluster.raft() {
            if h.store().read(|sm| sm.is_removed(&id)) {
                return Err(Status::permission_denied(format!(
                    "node {id} was removed from the cluster"
                )));
            }
        }
        Ok(id)
    }

    /// Steps raft messages from manager `caller` into this node's raft.
    fn deliver(&self, caller: &str, messages: Vec<Vec<u8>>) -> Result<(), Status> {
        let h = self.manager()?;
        // A brand-new member has no state yet: it accepts the leader's messages. Anyone
        // else must be a manager on record.
        let known = h.store().read(|sm| {
            sm.nodes().next().is_none() || sm.node(caller).is_some_and(|n| n.role == Role::Manager)
        });
        if !known {
            return Err(Status::permission_denied(format!(
                "node {caller} is not a manager of this cluster"
            )));
        }
        for b in messages {
            match raft::prelude::Message::parse_from_bytes(&b) {
                // A raft ID this node no longer has (it rejoined under a new one after
                // losing its log, or was demoted and promoted again) can still have
                // messages in flight to this address; stepping them would apply another
                // identity's progress (raft-rs panics on a commit beyond its log).
                Ok(m) if m.to != h.id() => {
                    tracing::debug!(
                        to = m.to,
                        raft_id = h.id(),
                        "dropped a raft message for another raft ID"
                    );
                }
                Ok(m) => h.step(m),
                Err(e) => return Err(Status::invalid_argument(format!("bad raft message: {e}"))),
            }
        }
        Ok(())
    }

    /// The managers, derived once per change of the state (every heartbeat answer
    /// carries them: a walk over every node per beat was nodes² a second).
    /// `Unavailable` for a call only the leader serves, naming the leader (if this
    /// manager knows it) in the [`LEADER_HINT`] metadata: after a failover a worker goes
    /// straight there instead of trying the managers in turn, each try a backoff apart,
    /// while the new leader's grace period runs.
    fn not_leader(h: &RaftHandle, message: &str) -> Status {
        let mut s = Status::unavailable(message);
        let leader = h.status().leader_id;
        let addr = Self::managers(h)
            .into_iter()
            .find(|m| leader != 0 && m.raft_id == leader)
            .map(|m| m.addr);
        if let Some(v) = addr.and_then(|a| a.parse().ok()) {
            s.metadata_mut().insert(LEADER_HINT, v);
        }
        s
    }

    fn managers(h: &RaftHandle) -> Vec<pb::Peer> {
        struct Managers(Vec<pb::Peer>);
        h.store()
            .read(|sm| {
                sm.memo_nodes(|sm| {
                    Managers(
                        sm.nodes()
                            .filter(|n| n.role == Role::Manager && n.raft_id != 0)
                            .map(|n| pb::Peer {
                                raft_id: n.raft_id,
                                node_id: n.id.clone(),
                                addr: n.addr.clone(),
                            })
                            .collect(),
                    )
                })
            })
            .0
            .clone()
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for ClusterPort {
    async fn send(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::Empty>, Status> {
        let caller = self.caller(&req)?;
        self.deliver(&caller, req.into_inner().messages)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn stream(
        &self,
        req: Request<tonic::Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::Empty>, Status> {
        let caller = self.caller(&req)?;
        let mut batches = req.into_inner();
        while let Some(b) = batches.message().await? {
            // Checked per batch: the caller may be removed, or this node's raft replaced
            // (demotion, promotion), while the stream lives.
            self.deliver(&caller, b.messages)?;
        }
        Ok(Response::new(pb::Empty {}))
    }

    /// A follower's client proposals: proposed here if this node leads (all together, so
    /// the raft loop puts them in one entry), each answered once applied or failed.
    async fn forward(
        &self,
        req: Request<pb::ForwardBatch>,
    ) -> Result<Response<pb::ForwardResults>, Status> {
        let caller = self.caller(&req)?;
        let h = self.manager()?;
        let is_manager = h
            .store()
            .read(|sm| sm.node(&caller).is_some_and(|n| n.role == Role::Manager));
        if !is_manager {
            return Err(Status::permission_denied(format!(
                "node {caller} is not a manager of this cluster"
            )));
        }
        let results = futures::future::join_all(req.into_inner().proposals.into_iter().map(|b| {
            let h = h.clone();
            async move {
                match serde_json::from_slice::<Proposal>(&b) {
                    Ok(p) => h.propose_local(p).await,
                    Err(e) => Err(crate::raft::consensus::RaftError::Remote(format!(
                        "undecodable proposal: {e}"
                    ))),
                }
            }
        }))
        .await;
        Ok(Response::new(pb::ForwardResults {
            results: results.into_iter().map(result_to_pb).collect(),
        }))
    }
}

type HeartbeatStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::membership_server::Membership for ClusterPort {
    async fn get_ca_cert(&self, _: Request<pb::Empty>) -> Result<Response<pb::CaCert>, Status> {
        Ok(Response::new(pb::CaCert {
            cert_pem: self.cluster.identity().ca_pem.into_bytes(),
        }))
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer_addr = req.extensions().get::<PeerIdentity>().and_then(|p| p.addr);
        let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
        let h = self.manager()?;
        let r = req.into_inner();
        // Never log the token itself.
        let token =
            JoinToken::parse(&r.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        h.read_barrier().await.map_err(raft_status)?;
        let meta = h.store().read(|sm| sm.meta().clone());
        let own_digest =
            ca::cert_digest(&meta.ca_cert_pem).map_err(|e| Status::internal(e.to_string()))?;
        let role = if token.ca_digest != own_digest {
            None
        } else if ca::secrets_equal(&token.secret, &meta.manager_secret) {
            Some(Role::Manager)
        } else if ca::secrets_equal(&token.secret, &meta.worker_secret) {
            Some(Role::Worker)
        } else {
            None
        };
        let Some(role) = role else {
            tracing::warn!(%peer, "join refused: invalid or rotated token");
            return Err(Status::permission_denied(
                "invalid join token (wrong cluster, or rotated)",
            ));
        };
        let node_id = crate::model::new_id();
        let raft_id = if role == Role::Manager {
            new_raft_id()
        } else {
            0
        };
        let node = Node {
            id: node_id.clone(),
            raft_id,
            hostname: r.hostname,
            role,
            status: NodeStatus::Ready,
            data_addr: data_ip(&r.advertise_addr, peer_addr.map(|a| a.ip())),
            addr: r.advertise_addr,
            engine_version: r.engine_version,
            ..Default::default()
        };
        let ca = Ca::load(&meta.ca_cert_pem, &meta.ca_key_pem)
            .map_err(|e| Status::internal(e.to_string()))?;
        let csr = String::from_utf8_lossy(&r.csr_pem).into_owned();
        let cert = ca
            .sign_csr(&csr, &node_id, self.cluster.cert_validity())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        h.propose(Proposal::new(vec![Op::PutNode { node }]))
            .await
            .map_err(raft_status)?;
        tracing::info!(%peer, node_id = %node_id, role = role.as_str(), "node joined");
        Ok(Response::new(pb::JoinResponse {
            node_id,
            cert_pem: cert.into_bytes(),
            ca_pem: meta.ca_cert_pem.into_bytes(),
            role: role.as_str().into(),
            managers: Self::managers(&h),
        }))
    }

    async fn renew_certificate(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::CertificateResponse>, Status> {
        let caller = self.caller(&req)?;
        let h = self.manager()?;
        let meta = h.store().read(|sm| sm.meta().clone());
        let ca = Ca::load(&meta.ca_cert_pem, &meta.ca_key_pem)
            .map_err(|e| Status::internal(e.to_string()))?;
        let csr = String::from_utf8_lossy(&req.get_ref().csr_pem).into_owned();
        let cert = ca
            .sign_csr(&csr, &caller, self.cluster.cert_validity())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(node_id = %caller, "renewed node certificate");
        Ok(Response::new(pb::CertificateResponse {
            cert_pem: cert.into_bytes(),
        }))
    }

    type HeartbeatStream = HeartbeatStream;

    async fn heartbeat(
        &self,
        req: Request<tonic::Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<HeartbeatStream>, Status> {
        let caller = self.caller(&req)?;
        let h = self.manager()?;
        if !h.status().is_leader {
            return Err(Self::not_leader(&h, "not the leader"));
        }
        let exists = h.store().read(|sm| sm.node(&caller).is_some());
        if !exists {
            return Err(Status::permission_denied(format!(
                "node {caller} is not part of this cluster (removed?)"
            )));
        }
        let cluster = self.cluster.clone();
        let period = cluster.heartbeat_period();
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            // The description from the stream's first beat, recorded (and, should a
            // proposal fail, recorded again) until the state holds it; one proposal at
            // a time.
            let mut described: Option<crate::model::NodeDescription> = None;
            let mut describing: Option<tokio::task::JoinHandle<()>> = None;
            // The member list last sent on this stream: sent again only when it changes
            // (compared only when the state changed since: the list is derived once per
            // change for every stream, see `members::shared`).
            let mut members_sent: Option<std::sync::Arc<crate::store::members::MemberList>> = None;
            loop {
                let beat = match inbound.message().await {
                    Ok(Some(b)) => b,
                    _ => return,
                };
                if !h.status().is_leader {
                    let _ = tx
                        .send(Err(ClusterPort::not_leader(&h, "no longer the leader")))
                        .await;
                    return;
                }
                cluster.saw(&caller);
                // A changed description (an agent restarted with other labels, a
                // resized machine) is recorded.
                if let Some(d) = beat.description {
                    described = Some(d.into());
                }
                // What this beat needs of the node, read in place: thousands of beats a
                // second each cloned the whole node record.
                let node = h.store().read(|sm| {
                    sm.node(&caller).map(|n| {
                        let stale = described.as_ref().filter(|d| **d != n.description).cloned();
                        (n.status, n.role, stale)
                    })
                });
                let Some((status, role, stale)) = node else {
                    let _ = tx
                        .send(Err(Status::permission_denied(format!(
                            "node {caller} was removed from the cluster"
                        ))))
                        .await;
                    return;
                };
                let idle = describing.as_ref().is_none_or(|j| j.is_finished());
                if let Some(d) = stale {
                    if idle {
                        let (h, id) = (h.clone(), caller.clone());
                        describing = Some(tokio::spawn(async move {
                            let op = Op::DescribeNode { id, description: d };
                            let _ = h.propose(Proposal::new(vec![op])).await;
                        }));
                    }
                }
                if status != NodeStatus::Ready {
                    let h = h.clone();
                    let id = caller.clone();
                    tokio::spawn(async move {
                        let _ = h
                            .propose(Proposal::new(vec![update_status(&id, NodeStatus::Ready)]))
                            .await;
                    });
                }
                let members = h.store().read(crate::store::members::shared);
                let changed = members_sent.as_ref().is_none_or(|sent| {
                    !std::sync::Arc::ptr_eq(sent, &members) && sent.0 != members.0
                });
                let pb_members = changed.then(|| crate::store::members::to_pb(&members.0));
                members_sent = Some(members);
                let resp = pb::HeartbeatResponse {
                    period_ms: period.as_millis() as u32,
                    managers: ClusterPort::managers(&h),
                    desired_role: role.as_str().into(),
                    members: pb_members,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn add_manager(
        &self,
        req: Request<pb::AddManagerRequest>,
    ) -> Result<Response<pb::AddManagerResponse>, Status> {
        let caller = self.caller(&req)?;
        let h = self.manager()?;
        h.read_barrier().await.map_err(raft_status)?;
        let node = h.store().read(|sm| sm.node(&caller).cloned());
        let node = node.ok_or_else(|| {
            Status::permission_denied(format!("node {caller} is not part of this cluster"))
        })?;
        let r = req.into_inner();
        if node.role != Role::Manager || (node.raft_id == 0 && !r.replace) {
            return Err(Status::permission_denied(format!(
                "node {caller} is not a manager"
            )));
        }
        let mut raft_id = node.raft_id;
        if r.replace {
            // The caller lost its log: its old raft identity may have voted or acked
            // entries it no longer remembers, so it is retired, never resumed.
            if node.raft_id != 0 {
                h.remove_voter(node.raft_id).await.map_err(raft_status)?;
            }
            raft_id = new_raft_id();
        }
        let addr = (!r.addr.is_empty() && r.addr != node.addr).then_some(r.addr);
        if addr.is_some() || raft_id != node.raft_id {
            let op = Op::UpdateNode {
                id: caller.clone(),
                availability: None,
                label_add: Default::default(),
                label_rm: vec![],
                role: None,
                status: None,
                raft_id: (raft_id != node.raft_id).then_some(raft_id),
                addr,
            };
            h.propose(Proposal::new(vec![op]))
                .await
                .map_err(raft_status)?;
        }
        h.add_voter(raft_id).await.map_err(raft_status)?;
        if r.replace {
            tracing::warn!(node_id = %caller, old_raft_id = node.raft_id, raft_id, "manager with a lost raft log rejoined under a new raft ID");
        } else {
            tracing::info!(node_id = %caller, raft_id, "manager added to the raft group");
        }
        Ok(Response::new(pb::AddManagerResponse {
            raft_id,
            managers: Self::managers(&h),
        }))
    }
}
