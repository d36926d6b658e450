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
    /// The one node whose work this change concerns: a task's node, for a task on no
    /// overlay network (`Some("")`: an unplaced task, no node's). `None` when it may
    /// concern any node (every other kind; a task with overlay addresses, which is an
    /// endpoint in every member's overlay view). Computed once at apply, so each of
    /// thousands of assignment streams tests it with a comparison.
    pub node: Option<String>,
}

impl Event {
    pub fn new(index: u64, action: Action, object: Object) -> Event {
        let placement = (object.kind == super::KIND_TASK)
            .then(|| task_placement(&object.spec))
            .flatten();
        Event::placed(index, action, object, placement.as_ref())
    }

    /// An event whose task placement (see [`task_placement`]) the caller already read.
    pub fn placed(
        index: u64,
        action: Action,
        object: Object,
        placement: Option<&TaskPlacement>,
    ) -> Event {
        let node = placement.filter(|p| !p.overlay).map(|p| p.node_id.clone());
        Event {
            index,
            action,
            object,
            node,
        }
    }
}

/// Where a task is: its node (empty while unplaced) and whether it has overlay
/// addresses (it is then an endpoint in every overlay member's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlacement {
    pub node_id: String,
    pub overlay: bool,
}

/// The placement of a stored task, read without decoding the rest of it (`None`: the
/// spec cannot be read, which tells everyone).
pub fn task_placement(spec: &[u8]) -> Option<TaskPlacement> {
    #[derive(serde::Deserialize)]
    struct Placement {
        #[serde(default)]
        node_id: String,
        #[serde(default)]
        addresses: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
    }
    let p: Placement = serde_json::from_slice(spec).ok()?;
    Some(TaskPlacement {
        node_id: p.node_id,
        overlay: !p.addresses.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Task, KIND_TASK};

    fn event(kind: &str, spec: Vec<u8>) -> Event {
        let object = Object {
            kind: kind.into(),
            id: "x".into(),
            name: "x".into(),
            version: 1,
            spec,
            created_index: 1,
            updated_index: 1,
        };
        Event::new(1, Action::Updated, object)
    }

    fn task_event(node: &str, overlay: bool) -> Event {
        let mut t = Task {
            node_id: node.into(),
            ..Default::default()
        };
        if overlay {
            t.addresses
                .insert("net".into(), std::net::Ipv4Addr::new(10, 0, 0, 2));
        }
        event(KIND_TASK, serde_json::to_vec(&t).expect("json"))
    }

    #[test]
    fn a_task_change_concerns_its_node_only_unless_it_is_an_overlay_endpoint() {
        assert_eq!(task_event("n1", false).node.as_deref(), Some("n1"));
        // Unplaced: nobody's.
        assert_eq!(task_event("", false).node.as_deref(), Some(""));
        // An overlay endpoint is in every member's view.
        assert_eq!(task_event("n1", true).node, None);
    }

    #[test]
    fn other_kinds_and_unreadable_tasks_concern_every_node() {
        assert_eq!(event("service", b"{}".to_vec()).node, None);
        assert_eq!(event("network", b"{}".to_vec()).node, None);
        assert_eq!(event(KIND_TASK, b"not json".to_vec()).node, None);
    }
}
