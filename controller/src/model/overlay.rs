//! What one node is told of the overlay networks (the networks it takes part in, every
//! endpoint on them, the services on them), and the standalone containers attached to
//! attachable overlays. Plain data: the orchestrator computes and allocates them.

use super::services::PortSpec;
use super::stack::NetAlloc;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const KIND_ATTACHMENT: &str = "attachment";

/// A standalone container on an attachable overlay network (an `attachment` object,
/// named by the container ID); the leader allocates its address like a task's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub node_id: String,
    pub container_id: String,
    /// The container's name: it resolves on the network cluster-wide.
    pub name: String,
    /// Set by the leader.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    /// The cluster object ID.
    pub id: String,
    pub name: String,
    pub internal: bool,
    pub attachable: bool,
    pub alloc: NetAlloc,
    /// Taking-part nodes → their data-path address (the VXLAN underlay destination).
    pub peers: BTreeMap<String, String>,
}

/// One task's address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    pub node_id: String,
    pub task_id: String,
    pub service: String,
    /// Running tasks receive load-balanced traffic; others only get forwarding entries.
    pub running: bool,
    /// Names it answers to on the network by itself (standalone containers).
    #[serde(default)]
    pub names: Vec<String>,
}

/// A service as the data path sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    pub name: String,
    pub dnsrr: bool,
    /// Network → virtual IP (`vip` mode).
    pub vips: BTreeMap<String, Ipv4Addr>,
    /// Network → the names it answers to there (its own name first).
    pub aliases: BTreeMap<String, Vec<String>>,
    pub ports: Vec<PortSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OverlayView {
    /// Every overlay network of the cluster by name, allocated or not: a task on one of
    /// them waits for its address instead of getting a local bridge.
    pub all: Vec<String>,
    pub networks: Vec<OverlayNetwork>,
    pub endpoints: Vec<Endpoint>,
    pub services: Vec<ServiceEndpoints>,
}

impl OverlayView {
    pub fn network(&self, name: &str) -> Option<&OverlayNetwork> {
        self.networks.iter().find(|n| n.name == name)
    }
}
