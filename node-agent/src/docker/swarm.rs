//! Docker API: Swarm's endpoints (`/swarm`, `/nodes`, `/services`, `/tasks`,
//! `/secrets`, `/configs`) on Skiff's cluster.
//!
//! Reads come from the manager's replicated state after a read barrier (linearizable,
//! as the orchestration API reads); service writes go through the controller's
//! orchestration API (`OrchestratorApi`, the same calls `skiff service` makes), node
//! writes through its cluster API (`ClusterApi`, as `skiff node`), secrets and configs
//! are single raft proposals (as `skiff stack deploy` makes them). A worker answers
//! Docker's 503 "not a swarm manager", as a Swarm worker does. Spec conversion lives
//! in `service_spec`.

use super::service_spec::{self, Resolve};
use super::{json, Req, Resp, Result};
use super::{mux_frame, no_content, ok_json, stream_response, ApiError, DockerApi, Filters};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_controller::api::orchestrator::OrchestratorApi;
use skiff_controller::cluster::api::ClusterApi;
use skiff_controller::consensus::{RaftError, RaftHandle};
use skiff_controller::orchestrator::reconcile::Stored;
use skiff_controller::orchestrator::runner::read_world;
use skiff_controller::orchestrator::stack::LABEL_STACK;
use skiff_controller::orchestrator::types as st;
use skiff_controller::state::{new_id, Op, Proposal, Role, StateMachine};
use skiff_proto::cluster as cpb;
use skiff_proto::cluster::cluster_server::Cluster as _;
use skiff_proto::orchestrator as opb;
use skiff_proto::orchestrator::orchestrator_server::Orchestrator as _;
use std::collections::{BTreeMap, HashMap};

/// Go's zero time, which dockerd shows for times it does not know.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub(super) async fn route(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let segs: Vec<String> = req.segs.clone();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["swarm"]) => swarm_inspect(api).await,
        (&Method::POST, ["swarm", op]) | (&Method::GET, ["swarm", op]) => swarm_refused(api, op),
        (&Method::GET, ["nodes"]) => node_list(api, &req).await,
        (&Method::GET, ["nodes", id]) => node_inspect(api, id).await,
        (&Method::POST, ["nodes", id, "update"]) => node_update(api, &mut req, id).await,
        (&Method::DELETE, ["nodes", id]) => node_remove(api, &req, id).await,
        (&Method::GET, ["services"]) => service_list(api, &req).await,
        (&Method::POST, ["services", "create"]) => service_create(api, &mut req).await,
        (&Method::GET, ["services", id]) => service_inspect(api, id).await,
        (&Method::POST, ["services", id, "update"]) => service_update(api, &mut req, id).await,
        (&Method::DELETE, ["services", id]) => service_remove(api, id).await,
        (&Method::GET, ["services", id, "logs"]) => logs(api, &req, id, None).await,
        (&Method::GET, ["tasks"]) => task_list(api, &req).await,
        (&Method::GET, ["tasks", id]) => task_inspect(api, id).await,
        (&Method::GET, ["tasks", id, "logs"]) => {
            let (_, w) = world(api).await?;
            let t = find_task(&w.tasks, id)?;
            let sid = t.value.service_id.clone();
            let tid = t.id.clone();
            logs(api, &req, &sid, Some(tid)).await
        }
        (&Method::GET, [kind @ ("secrets" | "configs")]) => file_list(api, &req, kind).await,
        (&Method::POST, [kind @ ("secrets" | "configs"), "create"]) => {
            file_create(api, &mut req, kind).await
        }
        (&Method::GET, [kind @ ("secrets" | "configs"), id]) => file_inspect(api, kind, id).await,
        (&Method::POST, [kind @ ("secrets" | "configs"), id, "update"]) => {
            file_update(api, &mut req, kind, id).await
        }
        (&Method::DELETE, [kind @ ("secrets" | "configs"), id]) => file_remove(api, kind, id).await,
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

// ---------------------------------------------------------------- access

/// dockerd's answers for a node outside a swarm and for a worker.
fn not_manager(in_cluster: bool) -> ApiError {
    if in_cluster {
        ApiError::unavailable(
            "This node is not a swarm manager. Worker nodes can't be used to view or modify \
             cluster state. Please run this command on a manager node or promote the current \
             node to a manager (skiff node promote).",
        )
    } else {
        ApiError::unavailable(
            "This node is not a swarm manager. Use \"skiff cluster init\" or \"skiff cluster \
             join\" to connect this node to a Skiff cluster and try again.",
        )
    }
}

fn raft_err(e: RaftError) -> ApiError {
    use skiff_controller::state::ApplyError as A;
    match &e {
        RaftError::Rejected(A::NotFound { .. }) => ApiError::not_found(e.to_string()),
        RaftError::Rejected(A::NameConflict { kind, name }) => ApiError::conflict(format!(
            "rpc error: code = AlreadyExists desc = {kind} {name} already exists"
        )),
        RaftError::Rejected(A::VersionMismatch { .. }) => out_of_sequence(),
        RaftError::Rejected(A::Invalid(_)) => ApiError::bad_request(e.to_string()),
        _ => ApiError::unavailable(e.to_string()),
    }
}

/// dockerd's answer to an update made from a stale read (swarmkit's error, HTTP 500).
fn out_of_sequence() -> ApiError {
    ApiError::internal("rpc error: code = Unknown desc = update out of sequence")
}

/// This node's raft handle once it is a manager, after a read barrier.
async fn manager(api: &DockerApi) -> Result<RaftHandle> {
    let c = api.cluster.as_ref().ok_or_else(|| not_manager(false))?;
    let h = c
        .raft()
        .filter(|h| !h.is_stopped())
        .ok_or_else(|| not_manager(true))?;
    h.read_barrier().await.map_err(raft_err)?;
    Ok(h)
}

fn orchestrator(api: &DockerApi) -> Result<OrchestratorApi> {
    let cluster = api.cluster.clone().ok_or_else(|| not_manager(false))?;
    Ok(OrchestratorApi { cluster })
}

fn cluster_api(api: &DockerApi) -> Result<ClusterApi> {
    let cluster = api.cluster.clone().ok_or_else(|| not_manager(false))?;
    Ok(ClusterApi { cluster })
}

struct World {
    services: Vec<Stored<st::Service>>,
    tasks: Vec<Stored<st::Task>>,
    nodes: Vec<skiff_controller::state::Node>,
}

async fn world(api: &DockerApi) -> Result<(RaftHandle, World)> {
    let h = manager(api).await?;
    let w = h.store().read(|sm| {
        let w = read_world(sm);
        World {
            services: w.services.clone(),
            tasks: w.tasks.clone(),
            nodes: w.nodes.clone(),
        }
    });
    Ok((h, w))
}

fn time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| ZERO_TIME.into())
}

/// A Swarm object's spec read strictly (see [`service_spec::parse_strict`]), with the
/// messages dockerd gives: "invalid JSON: PATH: ...".
fn strict_body<T: serde::de::DeserializeOwned + serde::Serialize>(raw: &Value) -> Result<T> {
    service_spec::parse_strict(raw).map_err(|e| match e {
        service_spec::SpecError::Invalid(m) => ApiError::bad_request(format!("invalid JSON: {m}")),
        e => ApiError::bad_request(e.to_string()),
    })
}

fn version_param(req: &Req) -> Result<Option<u64>> {
    match req.query.get("version") {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid version {v:?}: not an unsigned integer"))
        }),
    }
}

/// `label=KEY` / `label=KEY=VALUE` filters against a label map (all must match).
fn labels_match(f: &[String], labels: &BTreeMap<String, String>) -> bool {
    f.iter().all(|l| match l.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(l.as_str()),
    })
}

/// `name`/`id` filters: any value matching as a prefix (dockerd's rule for both).
fn any_prefix(f: &[String], s: &str) -> bool {
    f.is_empty() || f.iter().any(|v| s.starts_with(v.as_str()))
}

// ---------------------------------------------------------------- swarm

async fn swarm_inspect(api: &DockerApi) -> Result<Resp> {
    let h = manager(api).await?;
    let info = super::system::swarm_info(api, api.cluster.as_deref());
    let mut doc = info.get("Cluster").cloned().unwrap_or_else(|| json!({}));
    drop(h);
    // The join tokens are Skiff's (`skiff cluster join-token` prints the same).
    let capi = cluster_api(api)?;
    let mut tokens = serde_json::Map::new();
    for (key, role) in [("Worker", "worker"), ("Manager", "manager")] {
        let t = capi
            .join_token(tonic::Request::new(cpb::JoinTokenRequest {
                role: role.into(),
                rotate: false,
            }))
            .await?
            .into_inner()
            .token;
        tokens.insert(key.into(), json!(t));
    }
    doc["JoinTokens"] = Value::Object(tokens);
    ok_json(&doc)
}

/// `swarm init/join/leave/update/unlock/unlockkey`: Skiff's cluster is managed with its
/// own commands; the message names the one to use.
fn swarm_refused(api: &DockerApi, op: &str) -> Result<Resp> {
    let how = match op {
        "init" | "join" if api.cluster.is_some() => {
            return Err(ApiError::unavailable(
                "This node is already part of a swarm (a Skiff cluster). Use \"skiff cluster \
                 leave\" to leave it first.",
            ))
        }
        "init" => "skiff cluster init",
        "join" => "skiff cluster join",
        "leave" => "skiff cluster leave",
        "update" => {
            "the agent's cluster options (agent.yaml) and skiff cluster join-token --rotate"
        }
        _ => "skiff cluster",
    };
    Err(ApiError::not_implemented(format!(
        "swarm {op} is not served on Skiff's Docker API: use {how}"
    )))
}

// ---------------------------------------------------------------- nodes

fn node_doc(h: &RaftHandle, n: &skiff_controller::state::Node) -> Value {
    let st = h.status();
    let host = n
        .addr
        .rsplit_once(':')
        .map_or(n.addr.as_str(), |(h, _)| h)
        .to_string();
    let addr = if n.data_addr.is_empty() {
        host
    } else {
        n.data_addr.clone()
    };
    let mut doc = json!({
        "ID": n.id,
        "Version": {"Index": n.version},
        "CreatedAt": if n.created_at.is_empty() { ZERO_TIME } else { n.created_at.as_str() },
        "UpdatedAt": if n.updated_at.is_empty() { ZERO_TIME } else { n.updated_at.as_str() },
        "Spec": {
            "Labels": n.labels,
            "Role": n.role.as_str(),
            "Availability": n.availability.as_str(),
        },
        "Description": {
            "Hostname": n.hostname,
            "Platform": {
                "Architecture": super::system::go_arch(&n.description.arch),
                "OS": if n.description.os.is_empty() { "linux" } else { n.description.os.as_str() },
            },
            "Resources": {
                "NanoCPUs": n.description.nano_cpus,
                "MemoryBytes": n.description.memory_bytes,
            },
            "Engine": {
                "EngineVersion": n.engine_version,
                "Labels": n.description.engine_labels,
                "Plugins": [],
            },
            "TLSInfo": {},
        },
        "Status": {"State": n.status.as_str(), "Addr": addr},
    });
    if n.role == Role::Manager {
        doc["ManagerStatus"] = json!({
            "Leader": n.raft_id != 0 && n.raft_id == st.leader_id,
            "Reachability": if n.status == skiff_controller::state::NodeStatus::Down { "unreachable" } else { "reachable" },
            "Addr": n.addr,
        });
    }
    doc
}

fn find_node<'a>(
    nodes: &'a [skiff_controller::state::Node],
    key: &str,
) -> Result<&'a skiff_controller::state::Node> {
    nodes
        .iter()
        .find(|n| n.id == key)
        .or_else(|| nodes.iter().find(|n| n.hostname == key))
        .or_else(|| {
            let m: Vec<_> = nodes.iter().filter(|n| n.id.starts_with(key)).collect();
            (m.len() == 1).then(|| m[0])
        })
        .ok_or_else(|| ApiError::not_found(format!("node {key} not found")))
}

async fn node_list(api: &DockerApi, req: &Req) -> Result<Resp> {
    let f = req.query.filters()?;
    f.only(&["id", "label", "node.label", "membership", "name", "role"])?;
    let (h, w) = world(api).await?;
    let out: Vec<Value> = w
        .nodes
        .iter()
        .filter(|n| any_prefix(f.get("id"), &n.id))
        .filter(|n| any_prefix(f.get("name"), &n.hostname))
        .filter(|n| f.get("role").is_empty() || f.get("role").iter().any(|r| r == n.role.as_str()))
        .filter(|_| {
            f.get("membership").is_empty() || f.get("membership").iter().any(|m| m == "accepted")
        })
        .filter(|n| labels_match(f.get("node.label"), &n.labels))
        .filter(|n| labels_match(f.get("label"), &n.description.engine_labels))
        .map(|n| node_doc(&h, n))
        .collect();
    ok_json(&out)
}

async fn node_inspect(api: &DockerApi, key: &str) -> Result<Resp> {
    let (h, w) = world(api).await?;
    ok_json(&node_doc(&h, find_node(&w.nodes, key)?))
}

async fn node_update(api: &DockerApi, req: &mut Req, key: &str) -> Result<Resp> {
    let version = version_param(req)?;
    let raw: Value = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let spec: bollard_stubs::models::NodeSpec = strict_body(&raw)?;
    if spec.name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(ApiError::bad_request(
            "invalid NodeSpec: Name is not supported by Skiff (nodes are named by their hostname)",
        ));
    }
    let (_, w) = world(api).await?;
    let n = find_node(&w.nodes, key)?;
    if version.is_some_and(|v| v != n.version) {
        return Err(out_of_sequence());
    }
    let want = spec.labels.unwrap_or_default();
    let label_rm: Vec<String> = n
        .labels
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    let label_add: HashMap<String, String> = want
        .into_iter()
        .filter(|(k, v)| n.labels.get(k) != Some(v))
        .collect();
    let role = spec.role.map(|r| r.to_string()).unwrap_or_default();
    let role = if role == n.role.as_str() {
        String::new()
    } else {
        role
    };
    let availability = spec.availability.map(|a| a.to_string()).unwrap_or_default();
    cluster_api(api)?
        .node_update(tonic::Request::new(cpb::NodeUpdateRequest {
            node: n.id.clone(),
            availability,
            label_add,
            label_rm,
            role,
        }))
        .await?;
    Ok(json(StatusCode::OK, &json!({})))
}

async fn node_remove(api: &DockerApi, req: &Req, key: &str) -> Result<Resp> {
    let (_, w) = world(api).await?;
    let n = find_node(&w.nodes, key)?;
    cluster_api(api)?
        .node_remove(tonic::Request::new(cpb::NodeRemoveRequest {
            node: n.id.clone(),
            force: req.query.bool("force"),
        }))
        .await?;
    Ok(json(StatusCode::OK, &json!({})))
}

// ---------------------------------------------------------------- services

/// Names of the cluster objects a spec refers to, read once from the state and from
/// the node's own network table (the CLI sends network IDs it got from inspect).
struct Names {
    networks: HashMap<String, String>,
    files: Vec<(String, String, String)>,
}

impl Names {
    async fn read(api: &DockerApi, h: &RaftHandle) -> Names {
        let mut networks = HashMap::new();
        for (n, ..) in api.containers.networks.list().await {
            if n.driver == "overlay" {
                networks.insert(n.id.clone(), n.name.clone());
            }
        }
        h.store().read(|sm| {
            for o in sm.list(st::KIND_NETWORK) {
                networks.insert(o.id.clone(), o.name.clone());
                networks.insert(o.name.clone(), o.name.clone());
            }
            let mut files = Vec::new();
            for kind in [st::KIND_SECRET, st::KIND_CONFIG] {
                for o in sm.list(kind) {
                    files.push((kind.to_string(), o.id.clone(), o.name.clone()));
                }
            }
            Names { networks, files }
        })
    }

    fn net_id(&self, h: &RaftHandle, name: &str) -> String {
        h.store()
            .read(|sm| sm.get(st::KIND_NETWORK, name).map(|o| o.id.clone()))
            .unwrap_or_else(|| name.to_string())
    }
}

impl Resolve for Names {
    fn network(&self, key: &str) -> Option<String> {
        self.networks.get(key).cloned()
    }
    fn file(&self, kind: &str, id: &str, name: &str) -> Option<String> {
        self.files
            .iter()
            .find(|(k, i, _)| k == kind && !id.is_empty() && i == id)
            // Inspect shows Skiff's reference (the name) as the ID too.
            .or_else(|| {
                self.files
                    .iter()
                    .find(|(k, _, n)| k == kind && (n == name || (name.is_empty() && n == id)))
            })
            .map(|(_, _, n)| n.clone())
    }
}

fn find_service<'a>(
    services: &'a [Stored<st::Service>],
    key: &str,
) -> Result<&'a Stored<st::Service>> {
    services
        .iter()
        .find(|s| s.id == key)
        .or_else(|| services.iter().find(|s| s.value.spec.name == key))
        .or_else(|| {
            let m: Vec<_> = services.iter().filter(|s| s.id.starts_with(key)).collect();
            (m.len() == 1).then(|| m[0])
        })
        .ok_or_else(|| ApiError::not_found(format!("service {key} not found")))
}

fn update_status(u: &st::UpdateStatus) -> Value {
    let mut d =
        json!({"State": u.state, "StartedAt": time_ms(u.started_at_ms), "Message": u.message});
    if u.state.ends_with("completed") {
        d["CompletedAt"] = d["StartedAt"].clone();
    }
    d
}

fn service_doc(
    h: &RaftHandle,
    names: &Names,
    s: &Stored<st::Service>,
    w: &World,
    status: bool,
) -> Value {
    let net_id = |n: &str| names.net_id(h, n);
    let spec = service_spec::to_docker(&s.value.spec, &net_id);
    let mut endpoint = json!({"Spec": spec["EndpointSpec"].clone()});
    if !s.value.spec.ports.is_empty() {
        endpoint["Ports"] = service_spec::ports(&s.value.spec.ports);
    }
    if !s.value.vips.is_empty() {
        endpoint["VirtualIPs"] = s
            .value
            .vips
            .iter()
            .map(|(n, ip)| {
                let len = h
                    .store()
                    .read(|sm| {
                        sm.get(st::KIND_NETWORK, n).and_then(|o| {
                            serde_json::from_slice::<
                                skiff_controller::orchestrator::stack::StackNetwork,
                            >(&o.spec)
                            .ok()
                        })
                    })
                    .and_then(|n| n.alloc)
                    .map(|a| a.subnet.prefix_len())
                    .unwrap_or(24);
                json!({"NetworkID": net_id(n), "Addr": format!("{ip}/{len}")})
            })
            .collect();
    }
    let mut doc = json!({
        "ID": s.id,
        "Version": {"Index": s.version},
        "CreatedAt": time_ms(s.value.created_at_ms),
        "UpdatedAt": time_ms(s.value.updated_at_ms.max(s.value.created_at_ms)),
        "Spec": spec,
        "Endpoint": endpoint,
    });
    if let Some(p) = &s.value.previous {
        doc["PreviousSpec"] = service_spec::to_docker(p, &net_id);
    }
    if let Some(u) = &s.value.update {
        doc["UpdateStatus"] = update_status(u);
    }
    if status {
        let mine = || w.tasks.iter().filter(|t| t.value.service_id == s.id);
        let running = mine()
            .filter(|t| {
                t.value.desired == st::Desired::Running
                    && t.value.status.state == st::TaskState::Running
            })
            .count();
        let desired = match s.value.spec.mode {
            st::Mode::Replicated { replicas } => replicas as usize,
            st::Mode::Global => mine()
                .filter(|t| t.value.desired == st::Desired::Running)
                .count(),
        };
        let completed = mine()
            .filter(|t| t.value.status.state == st::TaskState::Complete)
            .count();
        doc["ServiceStatus"] = json!({
            "RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed,
        });
    }
    doc
}

async fn service_list(api: &DockerApi, req: &Req) -> Result<Resp> {
    let f = req.query.filters()?;
    f.only(&["id", "label", "mode", "name"])?;
    let (h, w) = world(api).await?;
    let names = Names::read(api, &h).await;
    let mut out: Vec<&Stored<st::Service>> = w
        .services
        .iter()
        .filter(|s| any_prefix(f.get("id"), &s.id))
        .filter(|s| any_prefix(f.get("name"), &s.value.spec.name))
        .filter(|s| labels_match(f.get("label"), &s.value.spec.labels))
        .filter(|s| {
            let mode = match s.value.spec.mode {
                st::Mode::Replicated { .. } => "replicated",
                st::Mode::Global => "global",
            };
            f.get("mode").is_empty() || f.get("mode").iter().any(|m| m == mode)
        })
        .collect();
    out.sort_by(|a, b| a.value.spec.name.cmp(&b.value.spec.name));
    let status = req.query.bool("status");
    let docs: Vec<Value> = out
        .into_iter()
        .map(|s| service_doc(&h, &names, s, &w, status))
        .collect();
    ok_json(&docs)
}

async fn service_inspect(api: &DockerApi, key: &str) -> Result<Resp> {
    let (h, w) = world(api).await?;
    let names = Names::read(api, &h).await;
    let s = find_service(&w.services, key)?;
    ok_json(&service_doc(&h, &names, s, &w, false))
}

fn spec_error(e: service_spec::SpecError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

async fn service_create(api: &DockerApi, req: &mut Req) -> Result<Resp> {
    let raw: Value = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let h = manager(api).await?;
    let names = Names::read(api, &h).await;
    let spec = service_spec::to_skiff(&raw, &names).map_err(spec_error)?;
    if h.store()
        .world()
        .services
        .iter()
        .any(|s| s.value.spec.name == spec.name)
    {
        return Err(ApiError::conflict(format!(
            "rpc error: code = AlreadyExists desc = service {} already exists",
            spec.name
        )));
    }
    let id = orchestrator(api)?
        .service_create(tonic::Request::new(opb::ServiceCreateRequest {
            spec: Some(spec.clone().into()),
        }))
        .await?
        .into_inner()
        .name;
    tracing::info!(service = %spec.name, id = %id, "service created");
    Ok(json(
        StatusCode::CREATED,
        &json!({"ID": id, "Warnings": null}),
    ))
}

async fn service_update(api: &DockerApi, req: &mut Req, key: &str) -> Result<Resp> {
    let version = version_param(req)?.ok_or_else(|| {
        ApiError::bad_request("invalid service version '': the version query parameter is required")
    })?;
    let rollback = req.query.get("rollback") == Some("previous");
    let raw: Value = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let (h, w) = world(api).await?;
    let cur = find_service(&w.services, key)?;
    if cur.version != version {
        return Err(out_of_sequence());
    }
    let orch = orchestrator(api)?;
    if rollback {
        orch.service_rollback(tonic::Request::new(opb::ServiceRef {
            name: cur.id.clone(),
        }))
        .await?;
        return ok_json(&json!({"Warnings": null}));
    }
    let names = Names::read(api, &h).await;
    let mut spec = service_spec::to_skiff(&raw, &names).map_err(spec_error)?;
    if spec.name != cur.value.spec.name {
        return Err(ApiError::bad_request(
            "rpc error: code = Unimplemented desc = renaming services is not supported",
        ));
    }
    // A service made by `skiff stack deploy` keeps its stack.
    if spec.stack.is_empty() {
        spec.stack = cur.value.spec.stack.clone();
    }
    let force = raw["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0) > 0;
    orch.service_update(tonic::Request::new(opb::ServiceUpdateRequest {
        name: cur.id.clone(),
        replicas: -1,
        force,
        spec: Some(spec.into()),
        version,
        ..Default::default()
    }))
    .await
    .map_err(|s| {
        if s.message().starts_with("update out of sequence") {
            out_of_sequence()
        } else {
            s.into()
        }
    })?;
    ok_json(&json!({"Warnings": null}))
}

async fn service_remove(api: &DockerApi, key: &str) -> Result<Resp> {
    let (_, w) = world(api).await?;
    let s = find_service(&w.services, key)?;
    orchestrator(api)?
        .service_remove(tonic::Request::new(opb::ServiceRef { name: s.id.clone() }))
        .await?;
    Ok(json(StatusCode::OK, &json!({})))
}

/// `GET /services/{id}/logs` and `/tasks/{id}/logs`: the log broker's lines in Docker's
/// multiplexed frames; with `details` each line carries the attributes the CLI reads
/// to name the task (`com.docker.swarm.node.id=...,...service.id=...,...task.id=...`).
async fn logs(api: &DockerApi, req: &Req, key: &str, task: Option<String>) -> Result<Resp> {
    let (stdout, stderr) = (req.query.bool("stdout"), req.query.bool("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match req.query.get("tail") {
        None | Some("") | Some("all") => -1,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid tail {t:?}")))?,
    };
    let since = match req.query.get("since") {
        None | Some("") | Some("0") => 0,
        Some(s) => super::system::parse_event_time(
            s,
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        )?,
    };
    let (_, w) = world(api).await?;
    let s = find_service(&w.services, key)?;
    let service_id = s.id.clone();
    let mut upstream = orchestrator(api)?
        .service_logs(tonic::Request::new(opb::ServiceLogsRequest {
            service: service_id.clone(),
            follow: req.query.bool("follow"),
            tail,
            since_unix_nanos: since,
        }))
        .await?
        .into_inner();
    let (details, timestamps) = (req.query.bool("details"), req.query.bool("timestamps"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(item) = upstream.next().await {
            let c = match item {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(mux_frame(3, e.message().as_bytes())).await;
                    break;
                }
            };
            if !c.warning.is_empty() {
                tracing::debug!(warning = %c.warning, "service logs");
                continue;
            }
            if task.as_ref().is_some_and(|t| *t != c.task_id)
                || (c.stream == 1 && !stdout)
                || (c.stream == 2 && !stderr)
            {
                continue;
            }
            let mut line = Vec::with_capacity(c.data.len() + 160);
            if timestamps {
                let t = chrono::DateTime::from_timestamp_nanos(c.time_unix_nanos);
                line.extend_from_slice(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                        .as_bytes(),
                );
                line.push(b' ');
            }
            if details {
                line.extend_from_slice(
                    format!(
                        "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={} ",
                        c.node_id, service_id, c.task_id
                    )
                    .as_bytes(),
                );
            }
            line.extend_from_slice(&c.data);
            let stream = if c.stream == 2 { 2 } else { 1 };
            if tx.send(mux_frame(stream, &line)).await.is_err() {
                break;
            }
        }
    });
    Ok(stream_response(
        StatusCode::OK,
        "application/vnd.docker.multiplexed-stream",
        rx,
    ))
}

// ---------------------------------------------------------------- tasks

fn find_task<'a>(tasks: &'a [Stored<st::Task>], key: &str) -> Result<&'a Stored<st::Task>> {
    tasks
        .iter()
        .find(|t| t.id == key)
        .or_else(|| {
            let m: Vec<_> = tasks.iter().filter(|t| t.id.starts_with(key)).collect();
            (m.len() == 1).then(|| m[0])
        })
        .ok_or_else(|| ApiError::not_found(format!("task {key} not found")))
}

fn task_doc(h: &RaftHandle, names: &Names, t: &Stored<st::Task>, w: &World) -> Value {
    let v = &t.value;
    // The task's spec: its own container template under its service's policies.
    let mut spec = w
        .services
        .iter()
        .find(|s| s.id == v.service_id)
        .map(|s| s.value.spec.clone())
        .unwrap_or_default();
    spec.template = v.template.clone();
    let net_id = |n: &str| names.net_id(h, n);
    let task_spec = service_spec::to_docker(&spec, &net_id)["TaskTemplate"].clone();
    // Swarm keeps a pending task's scheduling failure in Err: `docker service ps`
    // shows it in its ERROR column.
    let err = if !v.status.error.is_empty() {
        v.status.error.clone()
    } else if v.status.state == st::TaskState::Pending && !v.status.message.is_empty() {
        // Swarm's shape: "no suitable node (scheduling constraints not satisfied on 3 nodes)".
        let m = &v.status.message;
        if m.starts_with("no suitable node") {
            m.clone()
        } else {
            format!("no suitable node ({m})")
        }
    } else {
        String::new()
    };
    let mut status = json!({
        "Timestamp": time_ms(v.status.timestamp_ms.max(v.created_at_ms)),
        "State": v.status.state.as_str(),
        "Message": v.status.message,
        "PortStatus": {},
    });
    if !err.is_empty() {
        status["Err"] = json!(err);
    }
    if !v.status.container_id.is_empty() {
        status["ContainerStatus"] = json!({
            "ContainerID": v.status.container_id, "PID": 0, "ExitCode": v.status.exit_code,
        });
    }
    let mut doc = json!({
        "ID": t.id,
        "Version": {"Index": t.version},
        "CreatedAt": time_ms(v.created_at_ms),
        "UpdatedAt": time_ms(v.status.timestamp_ms.max(v.created_at_ms)),
        "Labels": {},
        "Spec": task_spec,
        "ServiceID": v.service_id,
        "NodeID": v.node_id,
        "Status": status,
        "DesiredState": match v.desired { st::Desired::Running => "running", st::Desired::Shutdown => "shutdown" },
    });
    if v.slot > 0 {
        doc["Slot"] = json!(v.slot);
    }
    if !v.addresses.is_empty() {
        doc["NetworksAttachments"] = v
            .addresses
            .iter()
            .map(|(n, ip)| json!({"Network": {"ID": net_id(n), "Spec": {"Name": n}}, "Addresses": [format!("{ip}/24")]}))
            .collect();
    }
    doc
}

async fn task_list(api: &DockerApi, req: &Req) -> Result<Resp> {
    let f: Filters = req.query.filters()?;
    f.only(&[
        "id",
        "name",
        "service",
        "node",
        "label",
        "desired-state",
        "_up-to-date",
    ])?;
    let (h, w) = world(api).await?;
    let names = Names::read(api, &h).await;
    let service_ids: Vec<String> = f
        .get("service")
        .iter()
        .filter_map(|k| find_service(&w.services, k).ok().map(|s| s.id.clone()))
        .collect();
    let node_ids: Vec<String> = f
        .get("node")
        .iter()
        .filter_map(|k| find_node(&w.nodes, k).ok().map(|n| n.id.clone()))
        .collect();
    let up_to_date = !f.get("_up-to-date").is_empty();
    let out: Vec<Value> = w
        .tasks
        .iter()
        .filter(|t| any_prefix(f.get("id"), &t.id))
        .filter(|t| f.get("service").is_empty() || service_ids.contains(&t.value.service_id))
        .filter(|t| f.get("node").is_empty() || node_ids.contains(&t.value.node_id))
        .filter(|t| {
            let name = if t.value.slot > 0 {
                format!("{}.{}", t.value.service_name, t.value.slot)
            } else {
                format!("{}.{}", t.value.service_name, t.value.node_id)
            };
            any_prefix(f.get("name"), &name)
        })
        .filter(|t| {
            f.get("desired-state").is_empty()
                || f.get("desired-state").iter().any(|d| match d.as_str() {
                    "running" => t.value.desired == st::Desired::Running,
                    "shutdown" => t.value.desired == st::Desired::Shutdown,
                    "accepted" => t.value.desired == st::Desired::Running,
                    _ => false,
                })
        })
        .filter(|t| {
            // Swarm matches a task's labels against its service's.
            let svc = w.services.iter().find(|s| s.id == t.value.service_id);
            let mut labels = t.value.template.labels.clone();
            if let Some(s) = svc {
                labels.extend(s.value.spec.labels.clone());
            }
            if !t.value.stack.is_empty() {
                labels
                    .entry(LABEL_STACK.into())
                    .or_insert(t.value.stack.clone());
            }
            labels_match(f.get("label"), &labels)
        })
        .filter(|t| {
            !up_to_date
                || w.services
                    .iter()
                    .find(|s| s.id == t.value.service_id)
                    .is_some_and(|s| s.value.generation == t.value.generation)
        })
        .map(|t| task_doc(&h, &names, t, &w))
        .collect();
    ok_json(&out)
}

async fn task_inspect(api: &DockerApi, key: &str) -> Result<Resp> {
    let (h, w) = world(api).await?;
    let names = Names::read(api, &h).await;
    let t = find_task(&w.tasks, key)?;
    ok_json(&task_doc(&h, &names, t, &w))
}

// ---------------------------------------------------------------- secrets and configs

fn kind_of(group: &str) -> (&'static str, &'static str) {
    if group == "secrets" {
        (st::KIND_SECRET, "secret")
    } else {
        (st::KIND_CONFIG, "config")
    }
}

fn file_doc(kind: &str, o: &skiff_controller::state::Object) -> Value {
    use base64::Engine;
    let c: st::FileContent = serde_json::from_slice(&o.spec).unwrap_or_default();
    let mut spec = json!({"Name": o.name, "Labels": c.labels});
    // Swarm never returns a secret's data; a config's it does.
    if kind == st::KIND_CONFIG {
        spec["Data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(c.content.as_bytes()));
    }
    json!({
        "ID": o.id,
        "Version": {"Index": o.version},
        "CreatedAt": time_ms(c.created_at_ms),
        "UpdatedAt": time_ms(c.updated_at_ms.max(c.created_at_ms)),
        "Spec": spec,
    })
}

fn find_file<'a>(
    sm: &'a StateMachine,
    kind: &str,
    key: &str,
) -> Option<&'a skiff_controller::state::Object> {
    sm.get(kind, key).or_else(|| {
        let all = sm.list(kind);
        let m: Vec<_> = all.iter().filter(|o| o.id.starts_with(key)).collect();
        if m.len() == 1 {
            sm.get(kind, &m[0].id)
        } else {
            None
        }
    })
}

async fn file_list(api: &DockerApi, req: &Req, group: &str) -> Result<Resp> {
    let (kind, _) = kind_of(group);
    let f = req.query.filters()?;
    f.only(&["id", "label", "name", "names"])?;
    let h = manager(api).await?;
    h.store().read(|sm| {
        let mut out: Vec<Value> = sm
            .list(kind)
            .iter()
            .filter(|o| any_prefix(f.get("id"), &o.id))
            .filter(|o| any_prefix(f.get("name"), &o.name))
            .filter(|o| f.get("names").is_empty() || f.get("names").contains(&o.name))
            .filter(|o| {
                let c: st::FileContent = serde_json::from_slice(&o.spec).unwrap_or_default();
                labels_match(f.get("label"), &c.labels)
            })
            .map(|o| file_doc(kind, o))
            .collect();
        out.sort_by(|a, b| a["Spec"]["Name"].as_str().cmp(&b["Spec"]["Name"].as_str()));
        ok_json(&out)
    })
}

async fn file_inspect(api: &DockerApi, group: &str, key: &str) -> Result<Resp> {
    let (kind, singular) = kind_of(group);
    let h = manager(api).await?;
    h.store().read(|sm| {
        let o = find_file(sm, kind, key)
            .ok_or_else(|| ApiError::not_found(format!("{singular} {key} not found")))?;
        ok_json(&file_doc(kind, o))
    })
}

/// Reads a `SecretSpec`/`ConfigSpec` body: name, labels and the base64 data as text.
async fn file_spec(
    req: &mut Req,
    singular: &str,
) -> Result<(String, BTreeMap<String, String>, Option<String>)> {
    use base64::Engine;
    let raw: Value = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let spec: bollard_stubs::models::SecretSpec = strict_body(&raw)?;
    if singular == "config" && raw.get("Driver").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::bad_request("invalid JSON: Driver: unknown field"));
    }
    if spec.driver.as_ref().is_some_and(|d| !d.name.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "invalid {singular} spec: Driver is not supported by Skiff (secrets are stored in the cluster)"
        )));
    }
    if spec.templating.as_ref().is_some_and(|d| !d.name.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "invalid {singular} spec: Templating is not supported by Skiff"
        )));
    }
    let data = match spec.data {
        None => None,
        Some(d) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|e| {
                    ApiError::bad_request(format!("invalid {singular} spec: Data: not base64: {e}"))
                })?;
            Some(String::from_utf8(bytes).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid {singular} spec: Data: Skiff stores {singular}s as UTF-8 text; this one is binary"
                ))
            })?)
        }
    };
    Ok((
        spec.name.unwrap_or_default(),
        spec.labels.unwrap_or_default().into_iter().collect(),
        data,
    ))
}

async fn file_create(api: &DockerApi, req: &mut Req, group: &str) -> Result<Resp> {
    let (kind, singular) = kind_of(group);
    let (name, labels, data) = file_spec(req, singular).await?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = InvalidArgument desc = invalid name {name:?}: {singular} names are letters, digits, '_', '.' and '-'"
        )));
    }
    let content = data.ok_or_else(|| {
        ApiError::bad_request(format!("invalid {singular} spec: Data is required"))
    })?;
    let h = manager(api).await?;
    if h.store().read(|sm| sm.get(kind, &name).is_some()) {
        return Err(ApiError::conflict(format!(
            "rpc error: code = AlreadyExists desc = {singular} {name} already exists"
        )));
    }
    let id = new_id();
    let now = skiff_controller::orchestrator::runner::now_ms();
    let spec = serde_json::to_vec(&st::FileContent {
        content,
        labels,
        created_at_ms: now,
        updated_at_ms: now,
    })
    .map_err(|e| ApiError::internal(e.to_string()))?;
    h.propose(Proposal::new(vec![Op::Create {
        kind: kind.into(),
        id: id.clone(),
        name,
        spec,
    }]))
    .await
    .map_err(raft_err)?;
    Ok(json(StatusCode::CREATED, &json!({"ID": id})))
}

async fn file_update(api: &DockerApi, req: &mut Req, group: &str, key: &str) -> Result<Resp> {
    let (kind, singular) = kind_of(group);
    let version = version_param(req)?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid {singular} version: the version query parameter is required"
        ))
    })?;
    let (name, labels, data) = file_spec(req, singular).await?;
    let h = manager(api).await?;
    let (id, cur_version, mut cur) = h.store().read(|sm| {
        let o = find_file(sm, kind, key)
            .ok_or_else(|| ApiError::not_found(format!("{singular} {key} not found")))?;
        let c: st::FileContent = serde_json::from_slice(&o.spec).unwrap_or_default();
        if !name.is_empty() && name != o.name {
            return Err(ApiError::bad_request(format!(
                "rpc error: code = InvalidArgument desc = only updates to Labels are allowed ({singular} name)"
            )));
        }
        Ok((o.id.clone(), o.version, c))
    })?;
    if data.as_ref().is_some_and(|d| *d != cur.content) {
        return Err(ApiError::bad_request(
            "rpc error: code = InvalidArgument desc = only updates to Labels are allowed",
        ));
    }
    if version != cur_version {
        return Err(out_of_sequence());
    }
    cur.labels = labels;
    cur.updated_at_ms = skiff_controller::orchestrator::runner::now_ms();
    let spec = serde_json::to_vec(&cur).map_err(|e| ApiError::internal(e.to_string()))?;
    h.propose(Proposal::new(vec![Op::Update {
        kind: kind.into(),
        id,
        spec,
        expected_version: version,
    }]))
    .await
    .map_err(raft_err)?;
    Ok(json(StatusCode::OK, &json!({})))
}

async fn file_remove(api: &DockerApi, group: &str, key: &str) -> Result<Resp> {
    let (kind, singular) = kind_of(group);
    let (h, w) = world(api).await?;
    let (id, name) = h.store().read(|sm| {
        find_file(sm, kind, key)
            .map(|o| (o.id.clone(), o.name.clone()))
            .ok_or_else(|| ApiError::not_found(format!("{singular} {key} not found")))
    })?;
    let users: Vec<&str> = w
        .services
        .iter()
        .filter(|s| {
            s.value
                .spec
                .template
                .files
                .iter()
                .any(|f| f.kind == kind && f.name == name)
        })
        .map(|s| s.value.spec.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = InvalidArgument desc = {singular} '{name}' is in use by the following service{}: {}",
            if users.len() > 1 { "s" } else { "" },
            users.join(", ")
        )));
    }
    h.propose(Proposal::new(vec![Op::Delete {
        kind: kind.into(),
        id,
        expected_version: 0,
    }]))
    .await
    .map_err(raft_err)?;
    no_content()
}

/// `_ping`'s `Swarm` header: dockerd's `inactive`, `active/worker` or `active/manager`,
/// which tells the CLI whether to offer its swarm commands.
pub(super) fn ping_state(api: &DockerApi) -> &'static str {
    match api.cluster.as_ref() {
        None => "inactive",
        Some(c) if c.raft().is_some_and(|h| !h.is_stopped()) => "active/manager",
        Some(_) => "active/worker",
    }
}
