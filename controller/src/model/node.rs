//! Nodes as the replicated state records them: role, availability, status and what
//! each reports of itself.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Node "kind" used in watch events.
pub const NODE_KIND: &str = "node";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Worker,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "worker" => Some(Role::Worker),
            "manager" => Some(Role::Manager),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
    pub fn parse(s: &str) -> Option<Availability> {
        match s {
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    #[default]
    Unknown,
    Ready,
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Node {
    pub id: String,
    /// Raft member ID while a manager (0 for workers).
    pub raft_id: u64,
    pub hostname: String,
    pub role: Role,
    pub availability: Availability,
    pub status: NodeStatus,
    /// Advertised cluster address (host:port), if the node listens.
    pub addr: String,
    /// The IP other nodes send overlay (VXLAN) traffic to: the advertised address, or
    /// the address the node joined from.
    #[serde(default)]
    pub data_addr: String,
    pub engine_version: String,
    pub labels: BTreeMap<String, String>,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    /// What the node reports of itself (absent from nodes that never reported).
    #[serde(default)]
    pub description: NodeDescription,
}

/// What a node reports of itself, as Swarm's node description: its capacity (which
/// task reservations are placed against) and the engine labels its agent was started
/// with (`engine.labels.KEY` constraints), plus its platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct NodeDescription {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    #[serde(default)]
    pub engine_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
    /// The port a node without a cluster port serves its images on, at its
    /// `data_addr` (0: it serves them on its cluster port, or not at all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub image_share_port: u16,
}

fn is_zero(p: &u16) -> bool {
    *p == 0
}

/// A member of the cluster as other nodes see it (the list a worker's heartbeat
/// stream carries; see `store::members`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    pub node_id: String,
    pub role: Role,
    pub ready: bool,
    /// host:port of its image share; empty when it serves none.
    pub image_addr: String,
    pub data_addr: String,
}

/// What a node remembers about itself between restarts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NodeState {
    pub node_id: String,
    pub cluster_id: String,
    pub role: Role,
    pub raft_id: u64,
    /// Known managers: raft ID → address (for reconnecting after a restart).
    pub managers: Vec<(u64, String, String)>,
}

/// The IP a node's overlay traffic goes to: the host of its advertised address, else
/// the address it was seen connecting from.
pub fn data_ip(advertise: &str, peer: Option<std::net::IpAddr>) -> String {
    advertise
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or(peer)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}
