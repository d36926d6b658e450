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

pub use machine::{NodeWatch, StateMachine, Store};

use crate::model::{Node, Service, Task, KIND_SERVICE, KIND_TASK};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

/// The state machine behind its lock, shared by the raft node that applies entries and
/// every reader. Poisoning is ignored: the state machine validates a batch before it
/// changes anything, so a panicking holder leaves it consistent.
#[derive(Clone, Default)]
pub struct SharedState(Arc<RwLock<StateMachine>>, Arc<std::sync::Mutex<World>>);

/// The last world [`SharedState::world`] built, and the change it reflects.
#[derive(Default)]
struct World(Option<(u64, Arc<Decoded>)>);

impl SharedState {
    pub fn new(sm: StateMachine) -> SharedState {
        SharedState(Arc::new(RwLock::new(sm)), Arc::default())
    }

    /// Every service, task and node, decoded ([`read_world`]), built with the lock
    /// held only to take shared references and copy the specs that changed: parsing
    /// them and copying the values happen after, so the raft thread's apply (which
    /// needs the lock to write) does not wait behind them. On a 20,000-task cluster,
    /// copying under the lock held every manager's apply for up to a second, and
    /// parsing changed tasks under it for up to three, and their heartbeats with it.
    pub fn world(&self) -> Arc<Decoded> {
        let cached = self.1.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        let (changes, mut services, mut tasks, nodes) = {
            let sm = self.0.read().unwrap_or_else(|p| p.into_inner());
            if let Some((at, w)) = cached {
                if at == sm.changes() {
                    return w;
                }
            }
            (
                sm.changes(),
                sm.decoded_or_raw::<Service>(KIND_SERVICE),
                sm.decoded_or_raw::<Task>(KIND_TASK),
                sm.nodes().cloned().collect(),
            )
        };
        let parsed_services = services.iter_mut().fold(false, |any, r| r.decode() | any);
        let parsed_tasks = tasks.iter_mut().fold(false, |any, r| r.decode() | any);
        if parsed_services || parsed_tasks {
            let sm = self.0.read().unwrap_or_else(|p| p.into_inner());
            sm.fill_cache(KIND_SERVICE, &services);
            sm.fill_cache(KIND_TASK, &tasks);
        }
        let w = Arc::new(Decoded {
            services: owned(services.iter().filter_map(|r| r.stored()).collect()),
            tasks: owned(tasks.iter().filter_map(|r| r.stored()).collect()),
            nodes,
        });
        let mut slot = self.1.lock().unwrap_or_else(|p| p.into_inner());
        if slot.0.as_ref().is_none_or(|(at, _)| *at < changes) {
            slot.0 = Some((changes, w.clone()));
        }
        w
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

fn owned<T: Clone>(refs: Vec<Stored<Arc<T>>>) -> Vec<Stored<T>> {
    refs.into_iter()
        .map(|s| Stored {
            id: s.id,
            version: s.version,
            value: T::clone(&s.value),
        })
        .collect()
}

/// The tasks placed on `node`, decoded, in ID order: from the state machine's per-node
/// index and decoded cache, so the cost is that node's tasks, not the store's.
pub fn node_tasks(sm: &StateMachine, node: &str) -> Vec<Stored<Task>> {
    sm.task_ids_on(node)
        .filter_map(|id| sm.decoded_one::<Task>(KIND_TASK, id))
        .map(|t| Stored {
            id: t.id,
            version: t.version,
            value: Task::clone(&t.value),
        })
        .collect()
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
