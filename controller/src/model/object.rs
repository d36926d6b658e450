//! The generic keyed objects of the replicated state, the cluster's identity, and the
//! change events published when either changes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Object {
    pub kind: String,
    pub id: String,
    pub name: String,
    /// Starts at 1; bumped by every update (optimistic concurrency).
    pub version: u64,
    /// Opaque to the controller (JSON by convention).
    #[serde(with = "crate::model::codec::b64")]
    pub spec: Vec<u8>,
    pub created_index: u64,
    pub updated_index: u64,
}

/// A stored object decoded: its identity and version (for optimistic updates) with its
/// value.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored<T> {
    pub id: String,
    pub version: u64,
    pub value: T,
}

/// The cluster's identity, created once by the first manager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ClusterMeta {
    pub cluster_id: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub worker_secret: String,
    pub manager_secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// A change, published after it was applied at `index`.
#[derive(Debug, Clone)]
pub struct Event {
    pub index: u64,
    pub action: Action,
    pub object: Object,
}
