//! The orchestration gRPC API (`skiff stack ...`, `skiff service ...`), served by
//! managers. Writes are single raft proposals (a stack deploy is atomic); reads are
//! linearizable (a ReadIndex barrier first).

use crate::model::stack::{self, LABEL_STACK};
use crate::model::wire::WireError;
use crate::model::*;
use crate::model::{new_id, Op, Proposal};
use crate::orchestrator::membership::Membership;
use crate::raft::consensus::{RaftError, RaftHandle};
use crate::store::Stored;
use skiff_proto::orchestrator as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct OrchestratorApi {
    pub cluster: Arc<dyn Membership>,
}

fn raft_status(e: RaftError) -> Status {
    crate::raft::wire::raft_status(e)
}

const NOT_A_MANAGER: &str =
    "This node is not a manager: stacks and services are managed from a manager node.";

/// The decoded state every reader shares (see `SharedState::world`): borrowed, never
/// copied per call (a copy of 20,000 tasks per `service ls` poll was most of a
/// leader's CPU during a large deploy).
type World = Arc<crate::store::Decoded>;

impl OrchestratorApi {
    async fn manager(&self) -> Result<RaftHandle, Status> {
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition(NOT_A_MANAGER))?;
        h.read_barrier().await.map_err(raft_status)?;
        Ok(h)
    }

    async fn world(&self) -> Result<(RaftHandle, World), Status> {
        let h = self.manager().await?;
        let w = h.store().world();
        Ok((h, w))
    }

    async fn propose(h: &RaftHandle, ops: Vec<Op>) -> Result<(), Status> {
        if ops.is_empty() {
            return Ok(());
        }
        h.propose(Proposal::new(ops))
            .await
            .map(|_| ())
            .map_err(raft_status)
    }

    /// Puts a service with routing-mesh ports and no network on the ingress overlay
    /// (so every node answers its ports, as in Swarm); the op creating that network
    /// the first time, proposed together with the service.
    fn ingress_ops(h: &RaftHandle, spec: &mut ServiceSpec) -> Result<Vec<Op>, Status> {
        if !crate::orchestrator::netalloc::join_ingress(spec) {
            return Ok(vec![]);
        }
        h.store().read(|sm| {
            if sm
                .get(KIND_NETWORK, crate::orchestrator::netalloc::INGRESS)
                .is_some()
            {
                return Ok(vec![]);
            }
            crate::orchestrator::overlay::create_op(
                sm,
                crate::orchestrator::netalloc::INGRESS,
                None,
                false,
                false,
            )
            .map(|op| vec![op])
            .map_err(|e| Status::internal(e.to_string()))
        })
    }

    fn find<'a>(
        services: &'a [Stored<Service>],
        name: &str,
    ) -> Result<&'a Stored<Service>, Status> {
        services
            .iter()
            .find(|s| {
                s.value.spec.name == name
                    || s.id == name
                    || (name.len() >= 6 && s.id.starts_with(name))
            })
            .ok_or_else(|| Status::not_found(format!("service {name} not found")))
    }

    fn update_op(s: &Stored<Service>, value: &Service) -> Result<Op, Status> {
        Ok(Op::Update {
            kind: KIND_SERVICE.into(),
            id: s.id.clone(),
            spec: serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?,
            expected_version: s.version,
        })
    }

    /// A new spec for an existing service: a rolling update (new generation).
    fn respec(s: &Stored<Service>, spec: ServiceSpec) -> Service {
        let mut v = s.value.clone();
        v.previous = Some(std::mem::replace(&mut v.spec, spec));
        v.generation += 1;
        v.updated_at_ms = now_ms();
        v
    }
}

fn bad_request(e: WireError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A stack deploy's content in the model's types, checked: everything in it belongs to
/// the stack it is deployed as, and files are only secrets and configs.
struct StackContent {
    networks: Vec<stack::StackNetwork>,
    files: Vec<(&'static str, String, String)>,
    services: Vec<ServiceSpec>,
}

impl TryFrom<&pb::StackDeployRequest> for StackContent {
    type Error = Status;
    fn try_from(r: &pb::StackDeployRequest) -> Result<Self, Status> {
        if !skiff_stack::valid_stack_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "invalid stack name {:?}",
                r.name
            )));
        }
        let foreign = |what: &str, name: &str, stack: &str| {
            Status::invalid_argument(format!(
                "{what} {name} belongs to stack {stack:?}, not {:?}",
                r.name
            ))
        };
        let mut networks = Vec::new();
        for n in r.networks.iter().cloned() {
            let mut n: stack::StackNetwork = n.try_into().map_err(bad_request)?;
            // Addresses are the controller's to allocate.
            n.alloc = None;
            if n.stack != r.name {
                return Err(foreign("network", &n.name, &n.stack));
            }
            networks.push(n);
        }
        let mut services = Vec::new();
        for s in r.services.iter().cloned() {
            let s: ServiceSpec = s.try_into().map_err(bad_request)?;
            if s.stack != r.name {
                return Err(foreign("service", &s.name, &s.stack));
            }
            services.push(s);
        }
        let mut files = Vec::new();
        for f in &r.files {
            let kind = match f.kind.as_str() {
                KIND_SECRET => KIND_SECRET,
                KIND_CONFIG => KIND_CONFIG,
                other => {
                    return Err(Status::invalid_argument(format!(
                        "{}: a stack's files are secrets and configs, not {other:?}",
                        f.name
                    )))
                }
            };
            files.push((kind, f.name.clone(), f.content.clone()));
        }
        Ok(StackContent {
            networks,
            files,
            services,
        })
    }
}

fn mode_str(m: &Mode) -> (String, u64) {
    match m {
        Mode::Replicated { replicas } => ("replicated".into(), *replicas),
        Mode::Global => ("global".into(), 0),
    }
}

fn ports_str(spec: &ServiceSpec) -> String {
    spec.ports
        .iter()
        .map(|p| format!("*:{}->{}/{}", p.published, p.target, p.protocol))
        .collect::<Vec<_>>()
        .join(", ")
}

type LogChunkStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ServiceLogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::orchestrator_server::Orchestrator for OrchestratorApi {
    type ServiceLogsStream = LogChunkStream;

    /// On the leader, its log broker gathers the lines from every node; a follower
    /// relays the request to the leader over the managers' mutual-TLS channel.
    async fn service_logs(
        &self,
        req: Request<pb::ServiceLogsRequest>,
    ) -> Result<Response<LogChunkStream>, Status> {
        let h = self.manager().await?;
        let r = req.into_inner();
        if h.status().is_leader {
            let rx = crate::orchestrator::logbroker::serve(&self.cluster.logs(), h, r)?;
            return Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )));
        }
        let ch = self
            .cluster
            .manager_channel()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let upstream = pb::dispatcher_client::DispatcherClient::new(ch)
            .subscribe_logs(r)
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(upstream)))
    }

    async fn stack_deploy(
        &self,
        req: Request<pb::StackDeployRequest>,
    ) -> Result<Response<pb::StackDeployResponse>, Status> {
        let r = req.into_inner();
        let StackContent {
            networks,
            files,
            services: wanted,
        } = StackContent::try_from(&r)?;
        let name = r.name;
        let span = tracing::info_span!("stack_deploy", stack = %name);
        let _e = span.enter();
        let (h, w) = self.world().await?;
        let services = &w.services;
        let mut ops = Vec::new();
        let mut resp = pb::StackDeployResponse::default();
        // Networks first: services refer to them.
        let existing_networks: Vec<String> = h
            .store()
            .read(|sm| sm.list(KIND_NETWORK).into_iter().map(|o| o.name).collect());
        for n in networks {
            if n.external || existing_networks.contains(&n.name) {
                continue;
            }
            resp.networks.push(n.name.clone());
            ops.push(Op::Create {
                kind: KIND_NETWORK.into(),
                id: new_id(),
                name: n.name.clone(),
                spec: serde_json::to_vec(&n).map_err(|e| Status::internal(e.to_string()))?,
            });
        }
        // Secrets and configs: created once; new content under an existing name replaces it.
        h.store().read(|sm| {
            for (kind, name, content) in files {
                let body = serde_json::to_vec(&FileContent {
                    content,
                    ..Default::default()
                })
                .map_err(|e| Status::internal(e.to_string()))?;
                match sm.get(kind, &name) {
                    Some(o) if o.spec == body => {}
                    Some(o) => ops.push(Op::Update {
                        kind: kind.into(),
                        id: o.id.clone(),
                        spec: body,
                        expected_version: o.version,
                    }),
                    None => ops.push(Op::Create {
                        kind: kind.into(),
                        id: new_id(),
                        name,
                        spec: body,
                    }),
                }
            }
            Ok::<_, Status>(())
        })?;
        for s in &wanted {
            match services.iter().find(|x| x.value.spec.name == s.name) {
                Some(cur) if cur.value.spec == *s => resp.unchanged.push(s.name.clone()),
                Some(cur) => {
                    ops.push(Self::update_op(cur, &Self::respec(cur, s.clone()))?);
                    resp.updated.push(s.name.clone());
                }
                None => {
                    let value = Service {
                        spec: s.clone(),
                        previous: None,
                        generation: 1,
                        update: None,
                        vips: Default::default(),
                        created_at_ms: now_ms(),
                        updated_at_ms: now_ms(),
                    };
                    ops.push(Op::Create {
                        kind: KIND_SERVICE.into(),
                        id: new_id(),
                        name: s.name.clone(),
                        spec: serde_json::to_vec(&value)
                            .map_err(|e| Status::internal(e.to_string()))?,
                    });
                    resp.created.push(s.name.clone());
                }
            }
        }
        if r.prune {
            for cur in services.iter().filter(|x| x.value.spec.stack == name) {
                if !wanted.iter().any(|w| w.name == cur.value.spec.name) {
                    ops.push(Op::Delete {
                        kind: KIND_SERVICE.into(),
                        id: cur.id.clone(),
                        expected_version: cur.version,
                    });
                    resp.removed.push(cur.value.spec.name.clone());
                }
            }
        }
        Self::propose(&h, ops).await?;
        tracing::info!(
            created = resp.created.len(),
            updated = resp.updated.len(),
            "stack deployed"
        );
        Ok(Response::new(resp))
    }

    async fn stack_list(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::StackListResponse>, Status> {
        let (_, w) = self.world().await?;
        let services = &w.services;
        let mut by: BTreeMap<String, u32> = BTreeMap::new();
        for s in services.iter().filter(|s| !s.value.spec.stack.is_empty()) {
            *by.entry(s.value.spec.stack.clone()).or_default() += 1;
        }
        Ok(Response::new(pb::StackListResponse {
            stacks: by
                .into_iter()
                .map(|(name, services)| pb::StackSummary { name, services })
                .collect(),
        }))
    }

    async fn stack_remove(
        &self,
        req: Request<pb::StackRef>,
    ) -> Result<Response<pb::StackRemoveResponse>, Status> {
        let name = req.into_inner().name;
        let (h, w) = self.world().await?;
        let services = &w.services;
        let mut ops = Vec::new();
        let mut removed = Vec::new();
        for s in services.iter().filter(|s| s.value.spec.stack == name) {
            ops.push(Op::Delete {
                kind: KIND_SERVICE.into(),
                id: s.id.clone(),
                expected_version: 0,
            });
            removed.push(format!("Removing service {}", s.value.spec.name));
        }
        h.store().read(|sm| {
            let prefix = format!("{name}_");
            for kind in [KIND_SECRET, KIND_CONFIG] {
                for o in sm
                    .list(kind)
                    .into_iter()
                    .filter(|o| o.name.starts_with(&prefix))
                {
                    ops.push(Op::Delete {
                        kind: kind.into(),
                        id: o.id.clone(),
                        expected_version: 0,
                    });
                    removed.push(format!("Removing {kind} {}", o.name));
                }
            }
            for o in sm.list(KIND_NETWORK) {
                let n: Option<stack::StackNetwork> = serde_json::from_slice(&o.spec).ok();
                if n.map(|n| n.stack == name).unwrap_or(false) {
                    ops.push(Op::Delete {
                        kind: KIND_NETWORK.into(),
                        id: o.id.clone(),
                        expected_version: 0,
                    });
                    removed.push(format!("Removing network {}", o.name));
                }
            }
        });
        if ops.is_empty() {
            return Err(Status::not_found(format!("nothing found in stack: {name}")));
        }
        Self::propose(&h, ops).await?;
        Ok(Response::new(pb::StackRemoveResponse { removed }))
    }

    async fn service_create(
        &self,
        req: Request<pb::ServiceCreateRequest>,
    ) -> Result<Response<pb::ServiceRef>, Status> {
        let spec: ServiceSpec = req
            .into_inner()
            .spec
            .ok_or(WireError::Missing("ServiceCreateRequest.spec"))
            .and_then(TryInto::try_into)
            .map_err(bad_request)?;
        if spec.name.is_empty() || spec.template.image.is_empty() {
            return Err(Status::invalid_argument(
                "a service needs a name and an image",
            ));
        }
        let h = self.manager().await?;
        let mut spec = spec;
        let mut ops = Self::ingress_ops(&h, &mut spec)?;
        let id = new_id();
        let value = Service {
            spec: spec.clone(),
            previous: None,
            generation: 1,
            update: None,
            vips: Default::default(),
            created_at_ms: now_ms(),
            updated_at_ms: now_ms(),
        };
        let op = Op::Create {
            kind: KIND_SERVICE.into(),
            id: id.clone(),
            name: spec.name.clone(),
            spec: serde_json::to_vec(&value).map_err(|e| Status::internal(e.to_string()))?,
        };
        ops.push(op);
        Self::propose(&h, ops).await?;
        Ok(Response::new(pb::ServiceRef { name: id }))
    }

    async fn service_list(
        &self,
        req: Request<pb::ServiceListRequest>,
    ) -> Result<Response<pb::ServiceListResponse>, Status> {
        let stack = req.into_inner().stack;
        let (_, w) = self.world().await?;
        let services = &w.services;
        let tasks = &w.tasks;
        let nodes = &w.nodes;
        // Running tasks per service, in one pass over the tasks (not one per service).
        let mut running_of: HashMap<&str, u64> = HashMap::new();
        for t in tasks.iter().filter(|t| {
            t.value.desired == Desired::Running && t.value.status.state == TaskState::Running
        }) {
            *running_of.entry(t.value.service_id.as_str()).or_default() += 1;
        }
        let mut out = Vec::new();
        for s in services
            .iter()
            .filter(|s| stack.is_empty() || s.value.spec.stack == stack)
        {
            let (mode, mut desired) = mode_str(&s.value.spec.mode);
            if mode == "global" {
                desired = crate::orchestrator::reconcile::global_desired(&s.value.spec, nodes);
            }
            let running = running_of.get(s.id.as_str()).copied().unwrap_or(0);
            let upd = s.value.update.clone().unwrap_or_default();
            out.push(pb::ServiceSummary {
                id: s.id.clone(),
                name: s.value.spec.name.clone(),
                mode,
                desired,
                running,
                image: s.value.spec.template.image.clone(),
                ports: ports_str(&s.value.spec),
                stack: s.value.spec.stack.clone(),
                update_state: upd.state,
                update_message: upd.message,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ServiceListResponse { services: out }))
    }

    async fn service_inspect(
        &self,
        req: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Service>, Status> {
        let name = req.into_inner().name;
        let (_, w) = self.world().await?;
        let services = &w.services;
        let s = Self::find(services, &name)?;
        Ok(Response::new(s.clone().into()))
    }

    async fn service_scale(
        &self,
        req: Request<pb::ServiceScaleRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let (h, w) = self.world().await?;
        let services = &w.services;
        let s = Self::find(services, &r.name)?;
        let mut v = s.value.clone();
        match &mut v.spec.mode {
            Mode::Replicated { replicas } => *replicas = r.replicas,
            Mode::Global => {
                return Err(Status::failed_precondition(format!(
                    "{}: scale can only be used with replicated mode",
                    r.name
                )))
            }
        }
        Self::propose(&h, vec![Self::update_op(s, &v)?]).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn service_update(
        &self,
        req: Request<pb::ServiceUpdateRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let (h, w) = self.world().await?;
        let services = &w.services;
        let s = Self::find(services, &r.name)?;
        // Swarm's optimistic concurrency: an update made from a stale read is refused
        // (the proposal below carries the same version, so the check is atomic).
        if r.version != 0 && r.version != s.version {
            return Err(Status::failed_precondition(format!(
                "update out of sequence: service {} is at version {}, not {}",
                s.value.spec.name, s.version, r.version
            )));
        }
        let mut spec = match r.spec.clone() {
            None => s.value.spec.clone(),
            Some(spec) => spec.try_into().map_err(bad_request)?,
        };
        if !r.image.is_empty() {
            spec.template.image = r.image.clone();
        }
        for k in &r.env_rm {
            spec.template
                .env
                .retain(|e| e.split('=').next() != Some(k.as_str()));
        }
        for e in &r.env_add {
            let k = e.split('=').next().unwrap_or_default();
            spec.template.env.retain(|x| x.split('=').next() != Some(k));
            spec.template.env.push(e.clone());
        }
        let mut ops = Self::ingress_ops(&h, &mut spec)?;
        let mut v = if spec.template != s.value.spec.template || r.force {
            Self::respec(s, spec)
        } else {
            let mut v = s.value.clone();
            v.spec = spec;
            v
        };
        if r.replicas >= 0 {
            if let Mode::Replicated { replicas } = &mut v.spec.mode {
                *replicas = r.replicas as u64;
            }
        }
        ops.push(Self::update_op(s, &v)?);
        Self::propose(&h, ops).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn service_rollback(
        &self,
        req: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let name = req.into_inner().name;
        let (h, w) = self.world().await?;
        let services = &w.services;
        let s = Self::find(services, &name)?;
        let prev = s.value.previous.clone().ok_or_else(|| {
            Status::failed_precondition(format!(
                "service {name} has no previous spec to roll back to"
            ))
        })?;
        let mut v = Self::respec(s, prev);
        v.update = Some(UpdateStatus {
            state: "rollback_started".into(),
            message: "manually requested rollback".into(),
            started_at_ms: now_ms(),
            next_batch_at_ms: 0,
        });
        Self::propose(&h, vec![Self::update_op(s, &v)?]).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn service_remove(
        &self,
        req: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        let name = req.into_inner().name;
        let (h, w) = self.world().await?;
        let services = &w.services;
        let s = Self::find(services, &name)?;
        Self::propose(
            &h,
            vec![Op::Delete {
                kind: KIND_SERVICE.into(),
                id: s.id.clone(),
                expected_version: 0,
            }],
        )
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn task_list(
        &self,
        req: Request<pb::TaskListRequest>,
    ) -> Result<Response<pb::TaskListResponse>, Status> {
        let r = req.into_inner();
        let (_, w) = self.world().await?;
        let services = &w.services;
        let tasks = &w.tasks;
        let nodes = &w.nodes;
        let hostnames: HashMap<&str, &str> = nodes
            .iter()
            .map(|n| (n.id.as_str(), n.hostname.as_str()))
            .collect();
        let service_id = if r.service.is_empty() {
            None
        } else {
            Some(Self::find(services, &r.service)?.id.clone())
        };
        let mut out: Vec<pb::TaskSummary> = tasks
            .iter()
            .filter(|t| {
                service_id
                    .as_ref()
                    .map(|s| &t.value.service_id == s)
                    .unwrap_or(true)
            })
            .filter(|t| {
                r.stack.is_empty()
                    || t.value.stack == r.stack
                    || t.value.template.labels.get(LABEL_STACK) == Some(&r.stack)
            })
            .filter(|t| {
                r.all || t.value.desired == Desired::Running || !t.value.status.state.is_terminal()
            })
            .map(|t| {
                let v = &t.value;
                pb::TaskSummary {
                    id: t.id.clone(),
                    name: if v.slot > 0 {
                        format!("{}.{}", v.service_name, v.slot)
                    } else {
                        format!("{}.{}", v.service_name, v.node_id)
                    },
                    service: v.service_name.clone(),
                    image: v.template.image.clone(),
                    node_id: v.node_id.clone(),
                    node: hostnames
                        .get(v.node_id.as_str())
                        .map(|h| h.to_string())
                        .unwrap_or_default(),
                    desired: match v.desired {
                        Desired::Running => "running".into(),
                        Desired::Shutdown => "shutdown".into(),
                    },
                    state: v.status.state.as_str().into(),
                    message: v.status.message.clone(),
                    error: v.status.error.clone(),
                    timestamp_ms: v.status.timestamp_ms,
                    container_id: v.status.container_id.clone(),
                    slot: v.slot,
                    exit_code: v.status.exit_code,
                    health: v.status.health.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            a.service
                .cmp(&b.service)
                .then(a.slot.cmp(&b.slot))
                .then(b.timestamp_ms.cmp(&a.timestamp_ms))
        });
        Ok(Response::new(pb::TaskListResponse { tasks: out }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::StackDeployRequest {
        let net = stack::StackNetwork {
            name: "app_front".into(),
            driver: "overlay".into(),
            internal: false,
            attachable: false,
            subnet: None,
            external: false,
            stack: "app".into(),
            alloc: None,
        };
        let svc = ServiceSpec {
            name: "app_web".into(),
            stack: "app".into(),
            ..Default::default()
        };
        pb::StackDeployRequest {
            name: "app".into(),
            prune: false,
            services: vec![svc.into()],
            networks: vec![net.into()],
            files: vec![pb::FileObject {
                kind: KIND_SECRET.into(),
                name: "app_pw".into(),
                content: "x".into(),
            }],
        }
    }

    #[test]
    fn a_stack_deploy_takes_only_its_own_objects() {
        let c = StackContent::try_from(&request()).expect("valid");
        assert_eq!(c.services[0].name, "app_web");
        assert_eq!(c.networks[0].name, "app_front");
        assert_eq!(c.files, vec![(KIND_SECRET, "app_pw".into(), "x".into())]);

        let mut r = request();
        r.name = "bad name".into();
        assert!(StackContent::try_from(&r).is_err());
        let mut r = request();
        r.services[0].stack = "other".into();
        assert!(StackContent::try_from(&r).is_err());
        let mut r = request();
        r.networks[0].stack = "other".into();
        assert!(StackContent::try_from(&r).is_err());
        // Files write objects by kind: a task or a service is no stack file.
        let mut r = request();
        r.files[0].kind = KIND_TASK.into();
        assert!(StackContent::try_from(&r).is_err());
        let mut r = request();
        r.services[0].mode = None;
        let e = StackContent::try_from(&r).err().expect("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("ServiceSpec.mode"), "{}", e.message());
    }

    #[test]
    fn a_stack_deploy_cannot_bring_its_own_allocation() {
        let mut r = request();
        r.networks[0].alloc = Some(pb::NetworkAllocation {
            subnet: "10.0.9.0/24".into(),
            gateway: "10.0.9.1".into(),
            vni: 4100,
            nodes: Default::default(),
        });
        let c = StackContent::try_from(&r).expect("valid");
        assert_eq!(c.networks[0].alloc, None);
    }
}
