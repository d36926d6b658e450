//! The store: the replicated state machine ([`machine`]) behind the one lock every
//! reader and the raft apply path share ([`SharedState`]), and the typed reads layered
//! on it (decoded objects, the reconciler's world, client certificate records, the
//! member list).
//!
//! Only this module takes the state lock: readers pass a closure to
//! [`SharedState::read`], and only the raft node writes, through `SharedState::write`.

pub mod clients;
pub mod machine;
pub mod members;

pub use machine::{StateMachine, Store};

use crate::model::{Node, Service, Task, KIND_SERVICE, KIND_TASK};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

/// The state machine behind its lock, shared by the raft node that applies entries and
/// every reader. Poisoning is ignored: the state machine validates a batch before it
/// changes anything, so a panicking holder leaves it consistent.
#[derive(Clone, Default)]
pub struct SharedState(Arc<RwLock<StateMachine>>);

impl SharedState {
    pub fn new(sm: StateMachine) -> SharedState {
        SharedState(Arc::new(RwLock::new(sm)))
    }

    /// Runs `f` on one consistent view of the state and returns what it computed. List
    /// and subscribe inside the same call so no change falls between them.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The write guard: the raft node's apply path only (entries, snapshots).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, StateMachine> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

pub use crate::model::Stored;

/// Every service, task and node of the store, decoded.
#[derive(Debug, Default)]
pub struct Decoded {
    pub services: Vec<Stored<Service>>,
    pub tasks: Vec<Stored<Task>>,
    pub nodes: Vec<Node>,
}

/// The store's services, tasks and nodes, decoded once per change of the store and
/// shared by every reader (the reconciler, the allocator, each node's assignment stream,
/// the local executor): during a deploy the store changes hundreds of times a second and
/// each of them used to decode every task for itself.
pub fn read_world(sm: &StateMachine) -> std::sync::Arc<Decoded> {
    sm.memo(|sm| Decoded {
        services: sm.decoded(KIND_SERVICE),
        tasks: sm.decoded(KIND_TASK),
        nodes: sm.nodes().cloned().collect(),
    })
}

/// The objects of `kind` whose specs decode as `T` (others are skipped).
pub fn decode<T: serde::de::DeserializeOwned>(sm: &StateMachine, kind: &str) -> Vec<Stored<T>> {
    sm.list(kind)
        .into_iter()
        .filter_map(|o| {
            serde_json::from_slice(&o.spec).ok().map(|value| Stored {
                id: o.id,
                version: o.version,
                value,
            })
        })
        .collect()
}
