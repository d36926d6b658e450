//! Network calls at the request level, shared by the Engine gRPC API and the Docker
//! API (which builds the same requests from Docker's JSON): create (local or cluster),
//! list, remove, prune, connect, disconnect, port.

use crate::containers::Containers;
use crate::error::AgentError;
use crate::network::CreateNetwork;
use crate::network::EndpointConfig;
use skiff_proto::engine::*;
use skiff_runtime::network::Network;
use std::sync::Arc;
use tonic::Status;

type Result<T> = std::result::Result<T, AgentError>;

pub async fn create(c: &Containers, r: NetworkCreateRequest) -> Result<NetworkCreateResponse> {
    let n = c
        .networks
        .create(CreateNetwork {
            name: r.name,
            driver: r.driver,
            subnet: r.subnet,
            gateway: r.gateway,
            internal: r.internal,
            labels: r.labels.into_iter().collect(),
        })
        .await?;
    c.events.emit(
        "network",
        "create",
        &n.id,
        [
            ("name".to_string(), n.name.clone()),
            ("type".into(), "bridge".into()),
        ]
        .into(),
    );
    Ok(NetworkCreateResponse { id: n.id })
}

/// `network ls --filter`: name, id, driver, type (builtin|custom), label (ANDed).
pub fn matches(n: &Network, filters: &[String]) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some(("name", v)) => n.name.contains(v),
        Some(("id", v)) => n.id.starts_with(v),
        Some(("driver", v)) => n.driver == v,
        Some(("type", "builtin")) => n.is_default(),
        Some(("type", "custom")) => !n.is_default(),
        Some(("label", v)) => match v.split_once('=') {
            Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
            None => n.labels.contains_key(v),
        },
        _ => true,
    })
}

pub async fn list(c: &Containers, r: NetworkListRequest) -> NetworkListResponse {
    let mut networks: Vec<NetworkSummary> = c
        .networks
        .list()
        .await
        .into_iter()
        .filter(|(n, ..)| matches(n, &r.filters))
        .map(|(n, eps, ..)| NetworkSummary {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: n.driver.clone(),
            scope: "local".into(),
            internal: n.internal,
            subnet: n.subnet.to_string(),
            gateway: n.gateway.to_string(),
            created_unix: n.created.timestamp(),
            containers: eps.len() as u32,
            labels: n.labels.clone().into_iter().collect(),
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    NetworkListResponse { networks }
}

pub async fn remove(c: &Containers, key: &str) -> Result<()> {
    let id = c.networks.resolve(key).await?;
    let name = c
        .networks
        .list()
        .await
        .into_iter()
        .find(|(n, ..)| n.id == id)
        .map(|(n, ..)| n);
    c.networks.remove(&id, &[]).await?;
    c.events
        .emit("network", "destroy", &id, net_attrs(name.as_ref()));
    Ok(())
}

/// Docker's attributes of a network event: its name and driver.
fn net_attrs(n: Option<&Network>) -> std::collections::HashMap<String, String> {
    n.map(|n| {
        [
            ("name".to_string(), n.name.clone()),
            ("type".to_string(), n.driver.clone()),
        ]
        .into()
    })
    .unwrap_or_default()
}

/// Removes every user network without active endpoints that matches the prune
/// `filters` (`until=`, `label=`, `label!=`); returns their names.
pub async fn prune(c: &Containers, filters: &[String]) -> Vec<String> {
    let mut out = vec![];
    for (n, eps, ..) in c.networks.list().await {
        if n.is_default() || !eps.is_empty() {
            continue;
        }
        // Mirrors of cluster overlays go with the cluster network, not by prune.
        if n.overlay.is_some() || !crate::prune::created_matches(n.created, &n.labels, filters) {
            continue;
        }
        if c.networks.remove(&n.id, &[]).await.is_ok() {
            c.events
                .emit("network", "destroy", &n.id, net_attrs(Some(&n)));
            out.push(n.name);
        }
    }
    out.sort();
    out
}

/// The raft handle, when this node is a manager: cluster-scoped objects are made there.
fn manager_raft(
    cluster: Option<&Arc<skiff_controller::cluster::Cluster>>,
) -> std::result::Result<skiff_controller::consensus::RaftHandle, Status> {
    cluster.and_then(|c| c.raft()).ok_or_else(|| {
        Status::failed_precondition(
            "cannot create a multi-host network from a worker node: create it on a manager",
        )
    })
}

/// `network create` for every front end: overlays are made in the cluster (on a
/// manager), every other driver on this node.
pub async fn create_any(
    c: &Containers,
    cluster: Option<&Arc<skiff_controller::cluster::Cluster>>,
    r: NetworkCreateRequest,
) -> std::result::Result<NetworkCreateResponse, Status> {
    if r.driver != "overlay" {
        return Ok(create(c, r).await?);
    }
    let h = manager_raft(cluster)?;
    let op = h
        .store()
        .read(|sm| {
            skiff_controller::orchestrator::overlay::create_op(
                sm,
                &r.name,
                (!r.subnet.is_empty()).then_some(r.subnet.as_str()),
                r.internal,
                r.attachable,
            )
        })
        .map_err(|e| match e {
            skiff_controller::orchestrator::overlay::OverlayError::Exists(_) => {
                Status::already_exists(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        })?;
    let op = with_stack(op, &r.labels)?;
    let out = h
        .propose(skiff_controller::state::Proposal::new(vec![op]))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let id = out
        .objects
        .first()
        .map(|o| o.id.clone())
        .unwrap_or_default();
    Ok(NetworkCreateResponse { id })
}

/// A cluster network labelled with Docker's stack label (`docker stack deploy`
/// makes its networks so) belongs to that stack, as a `skiff stack deploy` one does.
fn with_stack(
    op: skiff_controller::state::Op,
    labels: &std::collections::HashMap<String, String>,
) -> std::result::Result<skiff_controller::state::Op, Status> {
    use skiff_controller::orchestrator::stack::{StackNetwork, LABEL_STACK};
    let (
        skiff_controller::state::Op::Create {
            kind,
            id,
            name,
            spec,
        },
        Some(stack),
    ) = (&op, labels.get(LABEL_STACK))
    else {
        return Ok(op);
    };
    let mut n: StackNetwork =
        serde_json::from_slice(spec).map_err(|e| Status::internal(e.to_string()))?;
    n.stack = stack.clone();
    Ok(skiff_controller::state::Op::Create {
        kind: kind.clone(),
        id: id.clone(),
        name: name.clone(),
        spec: serde_json::to_vec(&n).map_err(|e| Status::internal(e.to_string()))?,
    })
}

/// `network rm` for every front end: cluster networks are removed from the cluster
/// (each node then drops its side), the rest here.
pub async fn remove_any(
    c: &Containers,
    cluster: Option<&Arc<skiff_controller::cluster::Cluster>>,
    key: &str,
) -> std::result::Result<(), Status> {
    if let Some(h) = cluster.and_then(|c| c.raft()) {
        let op = h
            .store()
            .read(|sm| skiff_controller::orchestrator::overlay::remove_op(sm, key));
        match op {
            Ok(op) => {
                h.propose(skiff_controller::state::Proposal::new(vec![op]))
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                return Ok(());
            }
            Err(e @ skiff_controller::orchestrator::overlay::OverlayError::InUse(..)) => {
                return Err(Status::failed_precondition(e.to_string()));
            }
            Err(_) => {}
        }
    }
    Ok(remove(c, key).await?)
}

pub async fn connect(c: &Containers, r: NetworkConnectRequest) -> Result<()> {
    let e = c.get(&r.container)?;
    let _op = e.op.lock().await;
    let running = e.state().is_running();
    let ep = EndpointConfig {
        network: r.network.clone(),
        ipv4_address: r.ipv4_address,
        aliases: r.aliases,
    };
    c.networks
        .connect(&e.record(), &e.paths, running, ep)
        .await?;
    let id = c.networks.resolve(&r.network).await?;
    c.events.emit(
        "network",
        "connect",
        &id,
        endpoint_attrs(c, &id, &e.id).await,
    );
    Ok(())
}

pub async fn disconnect(c: &Containers, r: NetworkConnectRequest) -> Result<()> {
    let e = c.get(&r.container)?;
    let _op = e.op.lock().await;
    c.networks.disconnect(&e.record(), &r.network).await?;
    let id = c.networks.resolve(&r.network).await?;
    c.events.emit(
        "network",
        "disconnect",
        &id,
        endpoint_attrs(c, &id, &e.id).await,
    );
    Ok(())
}

/// Attributes of a connect/disconnect event: the container, and the network's name
/// and driver as Docker gives them.
async fn endpoint_attrs(
    c: &Containers,
    network_id: &str,
    container: &str,
) -> std::collections::HashMap<String, String> {
    let n = c
        .networks
        .list()
        .await
        .into_iter()
        .find(|(n, ..)| n.id == network_id)
        .map(|(n, ..)| n);
    let mut a = net_attrs(n.as_ref());
    a.insert("container".into(), container.to_string());
    a
}

pub async fn port(c: &Containers, key: &str) -> Result<PortResponse> {
    let e = c.get(key)?;
    let mut ports: Vec<String> = c
        .networks
        .ports(&e.id)
        .await
        .iter()
        .map(|p| p.to_string())
        .collect();
    ports.sort();
    Ok(PortResponse { ports })
}
