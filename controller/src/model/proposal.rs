//! Proposals: batches of operations replicated through raft and applied atomically,
//! and the deterministic verdict of applying one.

use super::ids::new_id;
use super::node::{Availability, Node, NodeDescription, NodeStatus, Role};
use super::object::{ClusterMeta, Object};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Sets the cluster identity (bootstrap only; refused once set).
    InitCluster {
        meta: ClusterMeta,
    },
    RotateToken {
        role: Role,
        secret: String,
    },
    /// Adds a node or replaces it whole (join).
    PutNode {
        node: Node,
    },
    UpdateNode {
        id: String,
        #[serde(default)]
        availability: Option<Availability>,
        #[serde(default)]
        label_add: BTreeMap<String, String>,
        #[serde(default)]
        label_rm: Vec<String>,
        #[serde(default)]
        role: Option<Role>,
        #[serde(default)]
        status: Option<NodeStatus>,
        #[serde(default)]
        raft_id: Option<u64>,
        #[serde(default)]
        addr: Option<String>,
    },
    /// Removes a node for good: its ID can never join again.
    RemoveNode {
        id: String,
    },
    /// Records what a node reports of itself (sent with its heartbeats).
    DescribeNode {
        id: String,
        description: NodeDescription,
    },
    Create {
        kind: String,
        id: String,
        name: String,
        #[serde(with = "crate::model::codec::b64")]
        spec: Vec<u8>,
    },
    Update {
        kind: String,
        id: String,
        #[serde(with = "crate::model::codec::b64")]
        spec: Vec<u8>,
        #[serde(default)]
        expected_version: u64,
    },
    Delete {
        kind: String,
        id: String,
        #[serde(default)]
        expected_version: u64,
    },
}

/// One replicated log entry's payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proposal {
    pub request_id: String,
    /// RFC 3339 time chosen by the proposer (the state machine reads no clock).
    pub at: String,
    pub ops: Vec<Op>,
}

impl Proposal {
    pub fn new(ops: Vec<Op>) -> Proposal {
        Proposal {
            request_id: new_id(),
            at: chrono::Utc::now().to_rfc3339(),
            ops,
        }
    }
}

/// Why a proposal was rejected: a deterministic verdict, the same on every manager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },
    #[error("{kind} with name {name:?} already exists")]
    NameConflict { kind: String, name: String },
    #[error("{kind} {id} already exists")]
    IdConflict { kind: String, id: String },
    #[error("{kind} {id} is at version {actual}, not {expected}: it changed since it was read")]
    VersionMismatch {
        kind: String,
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("node {0} was removed from the cluster and cannot rejoin with that identity")]
    Removed(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// What a successful proposal changed, in op order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Outcome {
    pub index: u64,
    pub objects: Vec<Object>,
}

pub type ApplyResult = Result<Outcome, ApplyError>;

/// The operation that sets one node's status.
pub fn update_status(id: &str, status: NodeStatus) -> Op {
    Op::UpdateNode {
        id: id.into(),
        availability: None,
        label_add: Default::default(),
        label_rm: vec![],
        role: None,
        status: Some(status),
        raft_id: None,
        addr: None,
    }
}
