//! What one node must know to run its part of the overlay networks: the networks it
//! takes part in, every endpoint on them (to program VXLAN forwarding and neighbour
//! entries: no flooding, no learning), and the services on them (for DNS, virtual IPs
//! and routing-mesh ports). Managers compute it from their state machine; workers get
//! it with their assignments.

use super::netalloc::is_overlay;
use crate::model::stack::StackNetwork;
use crate::model::*;
use crate::store::read_world;
use crate::store::StateMachine;
use crate::store::Stored;
use std::collections::{BTreeMap, HashSet};

pub use crate::model::overlay::{
    Attachment, Endpoint, OverlayNetwork, OverlayView, ServiceEndpoints,
};

/// Stored overlay networks.
pub fn overlay_networks(sm: &StateMachine) -> Vec<Stored<StackNetwork>> {
    sm.list(KIND_NETWORK)
        .into_iter()
        .filter_map(|o| {
            serde_json::from_slice::<StackNetwork>(&o.spec)
                .ok()
                .filter(is_overlay)
                .map(|value| Stored {
                    id: o.id,
                    version: o.version,
                    value,
                })
        })
        .collect()
}

/// The overlay view of `node`.
pub fn view(sm: &StateMachine, node: &str) -> OverlayView {
    let stored = overlay_networks(sm);
    let all: Vec<String> = stored.iter().map(|n| n.value.name.clone()).collect();
    // A node on no overlay sees no network, endpoint or service: it skips the decoded
    // world (every task of the cluster), as each assignment stream builds this view
    // after each change that concerns its node.
    if !stored.iter().any(|n| {
        n.value
            .alloc
            .as_ref()
            .is_some_and(|a| a.nodes.contains_key(node))
    }) {
        return OverlayView {
            all,
            ..Default::default()
        };
    }
    let w = read_world(sm);
    let (services, tasks, nodes) = (&w.services, &w.tasks, &w.nodes);
    let addr_of: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.data_addr.as_str()))
        .collect();
    let networks: Vec<OverlayNetwork> = stored
        .into_iter()
        .filter_map(|n| {
            let alloc = n.value.alloc?;
            if !alloc.nodes.contains_key(node) {
                return None;
            }
            let peers = alloc
                .nodes
                .keys()
                .map(|id| {
                    (
                        id.clone(),
                        addr_of.get(id.as_str()).copied().unwrap_or("").to_string(),
                    )
                })
                .collect();
            Some(OverlayNetwork {
                id: n.id,
                name: n.value.name,
                internal: n.value.internal,
                attachable: n.value.attachable,
                alloc,
                peers,
            })
        })
        .collect();
    let mine: HashSet<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    let mut endpoints = Vec::new();
    // A node on no overlay sees no endpoint: skip the walk over every task of the
    // cluster (each assignment stream builds this view after each change).
    let tasks = if mine.is_empty() { &[][..] } else { &tasks[..] };
    for t in tasks.iter().filter(|t| !t.value.status.state.is_terminal()) {
        for (net, ip) in &t.value.addresses {
            if mine.contains(net.as_str()) && !t.value.node_id.is_empty() {
                endpoints.push(Endpoint {
                    network: net.clone(),
                    ip: *ip,
                    node_id: t.value.node_id.clone(),
                    task_id: t.id.clone(),
                    service: t.value.service_name.clone(),
                    running: t.value.status.state == TaskState::Running
                        && t.value.desired == Desired::Running
                        && t.value.status.health != "unhealthy",
                    names: vec![],
                });
            }
        }
    }
    let attachments = if mine.is_empty() {
        Vec::new()
    } else {
        crate::store::decode::<Attachment>(sm, KIND_ATTACHMENT)
    };
    for a in attachments {
        if let (Some(ip), true) = (a.value.ip, mine.contains(a.value.network.as_str())) {
            endpoints.push(Endpoint {
                network: a.value.network,
                ip,
                node_id: a.value.node_id,
                task_id: a.value.container_id,
                service: String::new(),
                running: true,
                names: vec![a.value.name],
            });
        }
    }
    endpoints.sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
    let services = services
        .iter()
        .filter(|s| {
            s.value
                .spec
                .template
                .networks
                .keys()
                .any(|n| mine.contains(n.as_str()))
        })
        .map(|s| {
            let spec = &s.value.spec;
            ServiceEndpoints {
                name: spec.name.clone(),
                dnsrr: spec.endpoint_mode == "dnsrr",
                vips: s.value.vips.clone(),
                aliases: spec
                    .template
                    .networks
                    .iter()
                    .filter(|(n, _)| mine.contains(n.as_str()))
                    .map(|(n, al)| {
                        let mut names = vec![spec.name.clone()];
                        names.extend(al.iter().filter(|a| **a != spec.name).cloned());
                        (n.clone(), names)
                    })
                    .collect(),
                ports: spec.ports.clone(),
            }
        })
        .collect();
    OverlayView {
        all,
        networks,
        endpoints,
        services,
    }
}

/// Why an overlay network cannot be created or removed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("invalid network name {0:?}")]
    BadName(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid subnet {0:?}")]
    BadSubnet(String),
    #[error("Pool overlaps with other one on this address space ({0})")]
    Overlaps(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {0} is in use by service {1}")]
    InUse(String, String),
}

/// The operation creating an overlay network (`network create -d overlay`), validated
/// against the current state: the subnet itself is allocated by the leader.
pub fn create_op(
    sm: &StateMachine,
    name: &str,
    subnet: Option<&str>,
    internal: bool,
    attachable: bool,
) -> Result<crate::model::Op, OverlayError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(OverlayError::BadName(name.into()));
    }
    if sm.get(KIND_NETWORK, name).is_some() {
        return Err(OverlayError::Exists(name.into()));
    }
    if let Some(s) = subnet {
        let net: ipnet::Ipv4Net = s.parse().map_err(|_| OverlayError::BadSubnet(s.into()))?;
        for n in overlay_networks(sm) {
            if let Some(a) = n.value.alloc {
                if a.subnet.contains(&net.network()) || net.contains(&a.subnet.network()) {
                    return Err(OverlayError::Overlaps(a.subnet.to_string()));
                }
            }
        }
    }
    let spec = StackNetwork {
        name: name.into(),
        driver: "overlay".into(),
        internal,
        attachable,
        subnet: subnet.map(String::from),
        external: false,
        stack: String::new(),
        alloc: None,
    };
    Ok(crate::model::Op::Create {
        kind: KIND_NETWORK.into(),
        id: crate::model::new_id(),
        name: name.into(),
        spec: serde_json::to_vec(&spec).unwrap_or_default(),
    })
}

/// The operation removing a cluster network by name or ID, refused while a service
/// uses it (as Docker does).
pub fn remove_op(sm: &StateMachine, key: &str) -> Result<crate::model::Op, OverlayError> {
    let o = sm
        .list(KIND_NETWORK)
        .into_iter()
        .find(|o| o.name == key || (key.len() >= 6 && o.id.starts_with(key)))
        .ok_or_else(|| OverlayError::NotFound(key.into()))?;
    let w = read_world(sm);
    let services = &w.services;
    if let Some(s) = services
        .iter()
        .find(|s| s.value.spec.template.networks.contains_key(&o.name))
    {
        return Err(OverlayError::InUse(o.name, s.value.spec.name.clone()));
    }
    Ok(crate::model::Op::Delete {
        kind: KIND_NETWORK.into(),
        id: o.id,
        expected_version: 0,
    })
}
