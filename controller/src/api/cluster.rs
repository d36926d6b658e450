//! The cluster state API (`skiff node ...`, `skiff cluster ...`, and the generic object
//! store later layers use), served on the agent's unix socket. Only managers answer;
//! reads are linearizable (a ReadIndex barrier first).

use crate::ca::{self, JoinToken};
use crate::model::new_raft_id;
use crate::model::{self, Availability, Node, NodeStatus, Op, Proposal, Role};
use crate::orchestrator::membership::Membership;
use crate::raft::consensus::RaftHandle;
use crate::raft::wire::{object_pb, raft_status};
use crate::store::clients;
use skiff_proto::cluster as pb;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct ClusterApi {
    pub cluster: Arc<dyn Membership>,
}

const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

impl ClusterApi {
    async fn manager(&self) -> Result<RaftHandle, Status> {
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
        h.read_barrier().await.map_err(raft_status)?;
        Ok(h)
    }

    fn node_pb(h: &RaftHandle, n: &Node) -> pb::NodeInfo {
        let leader = h.status().leader_id;
        let manager_status = match n.role {
            Role::Worker => String::new(),
            Role::Manager if n.raft_id != 0 && n.raft_id == leader => "Leader".into(),
            Role::Manager if n.status == NodeStatus::Down => "Unreachable".into(),
            Role::Manager => "Reachable".into(),
        };
        pb::NodeInfo {
            id: n.id.clone(),
            hostname: n.hostname.clone(),
            status: n.status.as_str().into(),
            availability: n.availability.as_str().into(),
            role: n.role.as_str().into(),
            manager_status,
            engine_version: n.engine_version.clone(),
            addr: n.addr.clone(),
            labels: n.labels.clone().into_iter().collect(),
            raft_id: n.raft_id,
            version: n.version,
            created_at: n.created_at.clone(),
            updated_at: n.updated_at.clone(),
            nano_cpus: n.description.nano_cpus,
            memory_bytes: n.description.memory_bytes,
            engine_labels: n.description.engine_labels.clone().into_iter().collect(),
            os: n.description.os.clone(),
            arch: n.description.arch.clone(),
        }
    }

    fn find(h: &RaftHandle, key: &str) -> Result<Node, Status> {
        h.store().read(|sm| {
            sm.find_node(key)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("node {key} not found")))
        })
    }
}

type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterApi {
    async fn info(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterInfo>, Status> {
        let me = self.cluster.node_state();
        let Some(h) = self.cluster.raft().filter(|h| !h.is_stopped()) else {
            return Ok(Response::new(pb::ClusterInfo {
                node_id: me.node_id,
                is_manager: false,
                ca_digest: ca::cert_digest(&self.cluster.identity().ca_pem).unwrap_or_default(),
                listen_addr: self
                    .cluster
                    .listen_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                ..Default::default()
            }));
        };
        let st = h.status();
        h.store().read(|sm| {
            let leader = sm
                .nodes()
                .find(|n| n.raft_id == st.leader_id && st.leader_id != 0)
                .map(|n| n.id.clone())
                .unwrap_or_default();
            Ok(Response::new(pb::ClusterInfo {
                cluster_id: sm.meta().cluster_id.clone(),
                node_id: me.node_id,
                is_manager: true,
                leader_id: leader,
                term: st.term,
                commit_index: st.commit,
                applied_index: st.applied,
                managers: sm
                    .nodes()
                    .filter(|n| n.role == Role::Manager)
                    .map(|n| Self::node_pb(&h, n))
                    .collect(),
                nodes: sm.nodes().count() as u32,
                ca_digest: ca::cert_digest(&sm.meta().ca_cert_pem).unwrap_or_default(),
                listen_addr: self
                    .cluster
                    .listen_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            }))
        })
    }

    async fn join_token(
        &self,
        req: Request<pb::JoinTokenRequest>,
    ) -> Result<Response<pb::JoinTokenResponse>, Status> {
        let r = req.into_inner();
        let role = Role::parse(&r.role).ok_or_else(|| {
            Status::invalid_argument(format!("unknown role {:?}: worker or manager", r.role))
        })?;
        let h = self.manager().await?;
        if r.rotate {
            h.propose(Proposal::new(vec![Op::RotateToken {
                role,
                secret: ca::new_secret(),
            }]))
            .await
            .map_err(raft_status)?;
        }
        h.store().read(|sm| {
            let meta = sm.meta();
            let digest =
                ca::cert_digest(&meta.ca_cert_pem).map_err(|e| Status::internal(e.to_string()))?;
            let secret = match role {
                Role::Worker => &meta.worker_secret,
                Role::Manager => &meta.manager_secret,
            };
            let st = h.status();
            let addr = sm
                .nodes()
                .find(|n| n.raft_id == st.leader_id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            Ok(Response::new(pb::JoinTokenResponse {
                token: JoinToken::new(&digest, secret).to_string(),
                addr,
            }))
        })
    }

    async fn node_list(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::NodeListResponse>, Status> {
        let h = self.manager().await?;
        h.store().read(|sm| {
            Ok(Response::new(pb::NodeListResponse {
                nodes: sm.nodes().map(|n| Self::node_pb(&h, n)).collect(),
            }))
        })
    }

    async fn node_inspect(
        &self,
        req: Request<pb::NodeRef>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        let h = self.manager().await?;
        let n = Self::find(&h, &req.get_ref().node)?;
        Ok(Response::new(Self::node_pb(&h, &n)))
    }

    async fn node_update(
        &self,
        req: Request<pb::NodeUpdateRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        let r = req.into_inner();
        let h = self.manager().await?;
        let n = Self::find(&h, &r.node)?;
        let availability = match r.availability.as_str() {
            "" => None,
            a => Some(Availability::parse(a).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "invalid availability {a:?}: active, pause or drain"
                ))
            })?),
        };
        let role = match r.role.as_str() {
            "" => None,
            x => Some(
                Role::parse(x)
                    .ok_or_else(|| Status::invalid_argument(format!("invalid role {x:?}")))?,
            ),
        };
        let mut raft_id = None;
        match role {
            Some(Role::Manager) if n.role == Role::Worker => {
                if n.addr.is_empty() {
                    return Err(Status::failed_precondition(format!(
                        "node {} has no cluster address: start its agent with --listen-addr to make it a manager",
                        n.hostname
                    )));
                }
                raft_id = Some(new_raft_id());
            }
            Some(Role::Worker) if n.role == Role::Manager => {
                let managers = h
                    .store()
                    .read(|sm| sm.nodes().filter(|m| m.role == Role::Manager).count());
                if managers <= 1 {
                    return Err(Status::failed_precondition(
                        "attempting to demote the last manager of the cluster",
                    ));
                }
                // Leave the raft group first, then record the new role.
                h.remove_voter(n.raft_id).await.map_err(raft_status)?;
                raft_id = Some(0);
            }
            _ => {}
        }
        let op = Op::UpdateNode {
            id: n.id.clone(),
            availability,
            label_add: r.label_add.into_iter().collect(),
            label_rm: r.label_rm,
            role,
            status: None,
            raft_id,
            addr: None,
        };
        h.propose(Proposal::new(vec![op]))
            .await
            .map_err(raft_status)?;
        let n = Self::find(&h, &n.id)?;
        Ok(Response::new(Self::node_pb(&h, &n)))
    }

    async fn node_remove(
        &self,
        req: Request<pb::NodeRemoveRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let h = self.manager().await?;
        let n = Self::find(&h, &r.node)?;
        if n.role == Role::Manager {
            return Err(Status::failed_precondition(format!(
                "rpc error: node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
                n.id
            )));
        }
        if n.status != NodeStatus::Down && !r.force {
            return Err(Status::failed_precondition(format!(
                "node {} is not down and can't be removed (use --force to remove it anyway)",
                n.id
            )));
        }
        h.propose(Proposal::new(vec![Op::RemoveNode { id: n.id.clone() }]))
            .await
            .map_err(raft_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
        let r = req.into_inner();
        let mut ops = Vec::with_capacity(r.ops.len());
        for o in r.ops {
            ops.push(match o.action.as_str() {
                "create" => Op::Create {
                    kind: o.kind,
                    id: if o.id.is_empty() {
                        model::new_id()
                    } else {
                        o.id
                    },
                    name: o.name,
                    spec: o.spec,
                },
                "update" => Op::Update {
                    kind: o.kind,
                    id: o.id,
                    spec: o.spec,
                    expected_version: o.expected_version,
                },
                "delete" => Op::Delete {
                    kind: o.kind,
                    id: o.id,
                    expected_version: o.expected_version,
                },
                a => {
                    return Err(Status::invalid_argument(format!(
                        "unknown action {a:?}: create, update or delete"
                    )))
                }
            });
        }
        let mut p = Proposal::new(ops);
        if !r.request_id.is_empty() {
            p.request_id = r.request_id;
        }
        let out = h.propose(p).await.map_err(raft_status)?;
        Ok(Response::new(pb::ProposeResponse {
            objects: out.objects.iter().map(object_pb).collect(),
            index: out.index,
        }))
    }

    async fn get(&self, req: Request<pb::ObjectRef>) -> Result<Response<pb::Object>, Status> {
        let h = self.manager().await?;
        let r = req.into_inner();
        h.store().read(|sm| {
            let o = sm
                .get(&r.kind, &r.id)
                .ok_or_else(|| Status::not_found(format!("{} {} not found", r.kind, r.id)))?;
            Ok(Response::new(object_pb(o)))
        })
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let h = self.manager().await?;
        h.store().read(|sm| {
            let objects = sm.list(&req.get_ref().kind).iter().map(object_pb).collect();
            Ok(Response::new(pb::ListResponse {
                objects,
                index: sm.applied(),
            }))
        })
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::ListRequest>) -> Result<Response<WatchStream>, Status> {
        let h = self.manager().await?;
        let kind = req.into_inner().kind;
        // List and subscribe under one lock: nothing falls between them.
        let (existing, mut rx, index) = h
            .store()
            .read(|sm| (sm.list(&kind), sm.subscribe(), sm.applied()));
        let (tx, out) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            for o in existing {
                let ev = pb::WatchEvent {
                    action: "existing".into(),
                    object: Some(object_pb(&o)),
                    index,
                };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                match rx.recv().await {
                    Ok(e) if kind.is_empty() || e.object.kind == kind => {
                        let ev = pb::WatchEvent {
                            action: e.action.as_str().into(),
                            object: Some(object_pb(&e.object)),
                            index: e.index,
                        };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watcher fell {n} events behind; list again"
                            ))))
                            .await;
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn state_hash(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::StateHashResponse>, Status> {
        // The local replica as it is, no barrier: the point is to compare replicas.
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
        let (index, hash) = h.store().read(|sm| sm.state_hash());
        Ok(Response::new(pb::StateHashResponse { hash, index }))
    }

    /// Signs a CLI client certificate with the replicated CA (managers only: workers do
    /// not hold the CA key). Whoever reaches this API is already root-equivalent (the
    /// unix socket, or a client certificate), so no further check is made.
    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn client_cert(
        &self,
        req: Request<pb::ClientCertRequest>,
    ) -> Result<Response<pb::ClientCertResponse>, Status> {
        /// Longer than the CA itself (20 years) makes no sense; shorter than a minute neither.
        const MAX_VALIDITY: u64 = 10 * 365 * 24 * 3600;
        let h = self.manager().await?;
        let r = req.into_inner();
        if !(60..=MAX_VALIDITY).contains(&r.validity_secs) {
            return Err(Status::invalid_argument(
                "certificate validity must be between 1 minute and 10 years",
            ));
        }
        let meta = h.store().read(|sm| sm.meta().clone());
        let ca = ca::Ca::load(&meta.ca_cert_pem, &meta.ca_key_pem)
            .map_err(|e| Status::internal(e.to_string()))?;
        let cert_pem = ca
            .sign_client_csr(
                &r.csr_pem,
                &r.name,
                std::time::Duration::from_secs(r.validity_secs),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let der = ca::pem_to_der(&cert_pem).map_err(|e| Status::internal(e.to_string()))?;
        let (_, not_after) =
            ca::cert_identity(&der).map_err(|e| Status::internal(e.to_string()))?;
        let id = ca::client_identity(&der)
            .ok_or_else(|| Status::internal("the signed certificate names no client"))?;
        let now_ms = crate::model::now_ms();
        let record = clients::ClientCertRecord {
            name: id.name,
            serial: id.serial.clone(),
            issued_ms: now_ms,
            not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
            revoked_ms: None,
        };
        // Recorded before it is handed out, so every certificate in use can be revoked;
        // records of expired certificates go in the same batch.
        let mut ops = h.store().read(|sm| clients::expired_ops(sm, now_ms));
        ops.push(clients::issue_op(&record).map_err(|e| Status::internal(e.to_string()))?);
        h.propose(Proposal::new(ops)).await.map_err(raft_status)?;
        let not_after = rfc3339_ms(record.not_after_ms);
        tracing::info!(%not_after, serial = %id.serial, "issued a client certificate");
        Ok(Response::new(pb::ClientCertResponse {
            cert_pem,
            ca_pem: meta.ca_cert_pem,
            not_after,
            serial: id.serial,
        }))
    }

    async fn list_client_certs(
        &self,
        _req: Request<pb::Empty>,
    ) -> Result<Response<pb::ClientCertList>, Status> {
        let h = self.manager().await?;
        h.store().read(|sm| {
            let now_ms = crate::model::now_ms();
            Ok(Response::new(pb::ClientCertList {
                certs: clients::list(sm)
                    .into_iter()
                    .filter(|r| r.value.not_after_ms >= now_ms)
                    .map(|r| client_cert_pb(&r.value))
                    .collect(),
            }))
        })
    }

    /// Takes effect on the next request of the certificate on any node's API port, also
    /// on connections opened before.
    #[tracing::instrument(skip_all, fields(who = %req.get_ref().name_or_serial))]
    async fn revoke_client_cert(
        &self,
        req: Request<pb::RevokeClientCertRequest>,
    ) -> Result<Response<pb::ClientCertList>, Status> {
        let h = self.manager().await?;
        let who = req.into_inner().name_or_serial;
        let (ops, records) = h
            .store()
            .read(|sm| clients::revoke_ops(sm, &who, crate::model::now_ms()))
            .map_err(|e| Status::not_found(e.to_string()))?;
        if !ops.is_empty() {
            h.propose(Proposal::new(ops)).await.map_err(raft_status)?;
        }
        tracing::info!(count = records.len(), "revoked client certificates");
        Ok(Response::new(pb::ClientCertList {
            certs: records.iter().map(client_cert_pb).collect(),
        }))
    }
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn client_cert_pb(r: &clients::ClientCertRecord) -> pb::ClientCertInfo {
    pb::ClientCertInfo {
        name: r.name.clone(),
        serial: r.serial.clone(),
        issued: rfc3339_ms(r.issued_ms),
        not_after: rfc3339_ms(r.not_after_ms),
        revoked: r.revoked_ms.map(rfc3339_ms).unwrap_or_default(),
    }
}
