//! The replicated state machine: every manager applies the same committed proposals in
//! the same order, so everything here is deterministic (no clock, no randomness: IDs and
//! timestamps come inside the proposal).
//!
//! It holds the cluster's identity (CA, join-token secrets), the nodes, and a generic
//! store of keyed, versioned objects (`kind` + `id`, unique `name` per kind) that later
//! layers use for services, tasks, networks, volumes, secrets and configs. A proposal is
//! a batch of operations applied atomically: all or nothing. Each carries a request ID,
//! and a retried request is answered from the first outcome rather than applied twice.
//!
//! Every change is published on a broadcast channel ([`StateMachine::subscribe`]) so a
//! reconciler can watch without polling.

use crate::model::{
    task_placement, Action, ApplyError, ApplyResult, ClusterMeta, Event, Node, Object, Op, Outcome,
    Proposal, Role, TaskPlacement, KIND_TASK, NODE_KIND,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// How many request IDs are remembered for de-duplication.
const REMEMBERED_REQUESTS: usize = 100_000;

/// The serialisable image of the state machine (snapshots).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Store {
    pub meta: ClusterMeta,
    pub nodes: BTreeMap<String, Node>,
    /// kind → id → object. Objects are replaced, never changed in place, so a
    /// snapshot's copy of the store shares them: copying 20,000 tasks' specs took
    /// most of a second of the raft thread.
    #[serde(with = "shared_objects")]
    pub objects: BTreeMap<String, BTreeMap<String, Arc<Object>>>,
    pub removed_nodes: BTreeSet<String>,
    /// Recent request IDs and their outcome, oldest first. Shared with the
    /// de-duplication index, and with every snapshot copy: a status batch's outcome
    /// names hundreds of tasks, and copying 100,000 of them for each snapshot held the
    /// raft thread for most of a second on a 20,000-task cluster.
    #[serde(with = "shared_outcomes")]
    pub requests: VecDeque<(String, Arc<ApplyResult>)>,
    pub applied: u64,
    /// The most recent cluster events (service and node changes), oldest first, for
    /// `skiff events --since` on any manager (see [`crate::model::events`]).
    #[serde(default)]
    pub events: VecDeque<crate::model::events::ClusterEvent>,
}

/// [`Store::requests`] in snapshots: as a plain list of outcomes (the format does not
/// change with the sharing).
mod shared_outcomes {
    use super::*;
    use serde::{Deserializer, Serializer};

    type Requests = VecDeque<(String, Arc<ApplyResult>)>;

    pub fn serialize<S: Serializer>(v: &Requests, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(id, r)| (id, &**r)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Requests, D::Error> {
        let v: VecDeque<(String, ApplyResult)> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|(id, r)| (id, Arc::new(r))).collect())
    }
}

/// [`Store::objects`] in snapshots: plain objects (the format does not change with
/// the sharing).
mod shared_objects {
    use super::*;
    use serde::{Deserializer, Serializer};

    type Objects = BTreeMap<String, BTreeMap<String, Arc<Object>>>;

    pub fn serialize<S: Serializer>(v: &Objects, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(kind, objs)| {
            let plain: BTreeMap<&String, &Object> = objs.iter().map(|(id, o)| (id, &**o)).collect();
            (kind, plain)
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Objects, D::Error> {
        let v: BTreeMap<String, BTreeMap<String, Object>> = Deserialize::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(kind, objs)| {
                let shared = objs.into_iter().map(|(id, o)| (id, Arc::new(o))).collect();
                (kind, shared)
            })
            .collect())
    }
}

/// The store plus its indexes and change feed.
pub struct StateMachine {
    store: Store,
    names: HashMap<(String, String), String>,
    seen: HashMap<String, Arc<ApplyResult>>,
    events: tokio::sync::broadcast::Sender<Arc<Event>>,
    cluster_events: tokio::sync::broadcast::Sender<crate::model::events::ClusterEvent>,
    /// Values derived from the current contents (see [`Self::memo`]); emptied by every
    /// change.
    memo: std::sync::Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
    /// Values derived from the nodes alone (see [`Self::memo_nodes`]); emptied by every
    /// change of a node.
    memo_nodes: std::sync::Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
    /// Decoded copies of objects, by value type and kind, kept across changes: see
    /// [`Self::decoded`].
    decoded: std::sync::Mutex<HashMap<(std::any::TypeId, String), Box<dyn std::any::Any + Send>>>,
    /// Each task's placement, and the tasks of each node (unplaced ones under ""), kept
    /// at every change: a node's assignment stream reads its own tasks in O(its tasks),
    /// where a scan of the whole store made every change cost streams × tasks.
    placements: HashMap<String, TaskPlacement>,
    by_node: HashMap<String, BTreeSet<String>>,
    /// Change signals for one node's watchers ([`Self::watch_node`]), and for all of
    /// them (changes that may concern any node, and snapshot restores).
    signals: Arc<Signals>,
    /// Counts changes of the contents (commits and restores): see [`Self::changes`].
    changes: u64,
}

/// See [`StateMachine::watch_node`]: a bump of a counter per change, so a wake costs the
/// watchers of the node concerned, where a broadcast of every event woke every stream
/// to compare (events × streams: billions at the scale goal).
struct Signals {
    nodes: std::sync::Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
    any: tokio::sync::watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            nodes: Default::default(),
            any: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Signals {
    fn bump(tx: &tokio::sync::watch::Sender<u64>) {
        tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Wakes when the state changed in a way that may concern one node (see
/// [`StateMachine::watch_node`]).
pub struct NodeWatch {
    node: tokio::sync::watch::Receiver<u64>,
    any: tokio::sync::watch::Receiver<u64>,
}

impl NodeWatch {
    /// Waits for the next change that may concern the node; `false` once the state
    /// machine is gone (its raft node stopped).
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.node.changed() => r.is_ok(),
            r = self.any.changed() => r.is_ok(),
        }
    }

    /// Forgets changes signalled so far (they are covered by the read that follows).
    pub fn mark_seen(&mut self) {
        self.node.mark_unchanged();
        self.any.mark_unchanged();
    }
}

/// One object from [`StateMachine::decoded_or_raw`]: its value (`Ok`: cached, `None`
/// if it does not decode) or its raw spec to parse (`Err`).
pub struct Raw<T> {
    pub id: String,
    pub created_index: u64,
    pub version: u64,
    pub value: Result<Option<Arc<T>>, Vec<u8>>,
}

impl<T: serde::de::DeserializeOwned> Raw<T> {
    /// Parses a raw spec (nothing to do for a cached value); `true` if it parsed one.
    pub fn decode(&mut self) -> bool {
        let Err(spec) = &self.value else {
            return false;
        };
        self.value = Ok(serde_json::from_slice::<T>(spec).ok().map(Arc::new));
        true
    }

    /// The decoded object, if its spec decodes.
    pub fn stored(&self) -> Option<crate::model::Stored<Arc<T>>> {
        match &self.value {
            Ok(Some(v)) => Some(crate::model::Stored {
                id: self.id.clone(),
                version: self.version,
                value: v.clone(),
            }),
            _ => None,
        }
    }
}

/// The cache behind [`StateMachine::decoded`] and [`StateMachine::decoded_one`]: per
/// object ID, the creation index and version it was decoded at, and the value.
type DecodedCache<T> = HashMap<String, (u64, u64, Option<Arc<T>>)>;

fn node_object(n: &Node, index: u64) -> Object {
    Object {
        kind: NODE_KIND.into(),
        id: n.id.clone(),
        name: n.hostname.clone(),
        version: n.version,
        spec: serde_json::to_vec(n).unwrap_or_default(),
        created_index: 0,
        updated_index: index,
    }
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::from_store(Store::default())
    }
}

impl StateMachine {
    pub fn from_store(store: Store) -> StateMachine {
        let mut names = HashMap::new();
        for (kind, objs) in &store.objects {
            for o in objs.values() {
                names.insert((kind.clone(), o.name.clone()), o.id.clone());
            }
        }
        let seen = store.requests.iter().cloned().collect();
        let mut placements = HashMap::new();
        let mut by_node: HashMap<String, BTreeSet<String>> = HashMap::new();
        for o in store
            .objects
            .get(KIND_TASK)
            .into_iter()
            .flat_map(|m| m.values())
        {
            if let Some(p) = task_placement(&o.spec) {
                by_node
                    .entry(p.node_id.clone())
                    .or_default()
                    .insert(o.id.clone());
                placements.insert(o.id.clone(), p);
            }
        }
        let (events, _) = tokio::sync::broadcast::channel(8192);
        let (cluster_events, _) = tokio::sync::broadcast::channel(1024);
        StateMachine {
            store,
            names,
            seen,
            events,
            cluster_events,
            memo: Default::default(),
            memo_nodes: Default::default(),
            decoded: Default::default(),
            placements,
            by_node,
            signals: Arc::default(),
            changes: 0,
        }
    }

    /// A number that moves with every change of the contents (never back, restores
    /// included): what a value derived from the contents was derived at.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// A watch that wakes after each change that may concern `node` (an event whose
    /// [`Event::node`] is `node` or any node) and after a snapshot restore. Taken in the
    /// same read as the first look, like [`Self::subscribe`].
    pub fn watch_node(&self, node: &str) -> NodeWatch {
        let mut nodes = self.signals.nodes.lock().unwrap_or_else(|p| p.into_inner());
        // Watchers come and go with workers' streams: forget nodes nobody watches.
        if nodes.len() > 64 && nodes.len().is_power_of_two() {
            nodes.retain(|_, tx| tx.receiver_count() > 0);
        }
        let tx = nodes
            .entry(node.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0);
        NodeWatch {
            node: tx.subscribe(),
            any: self.signals.any.subscribe(),
        }
    }

    /// IDs of the tasks placed on `node` ("": the unplaced ones), in ID order.
    pub fn task_ids_on(&self, node: &str) -> impl Iterator<Item = &String> {
        self.by_node.get(node).into_iter().flatten()
    }

    /// Records where task `id` now is (`None`: deleted or unreadable) in the per-node
    /// index; returns where it was.
    fn place_task(&mut self, id: &str, now: Option<TaskPlacement>) -> Option<TaskPlacement> {
        let before = self.placements.remove(id);
        if let Some(b) = &before {
            if let Some(ids) = self.by_node.get_mut(&b.node_id) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_node.remove(&b.node_id);
                }
            }
        }
        if let Some(p) = now {
            self.by_node
                .entry(p.node_id.clone())
                .or_default()
                .insert(id.to_string());
            self.placements.insert(id.to_string(), p);
        }
        before
    }

    /// Replaces everything with a snapshot image, keeping subscribers (they get no events
    /// for the jump and should re-list: see [`Self::subscribe`]).
    pub fn restore(&mut self, data: &[u8]) -> Result<(), serde_json::Error> {
        let store: Store = if data.is_empty() {
            Store::default()
        } else {
            serde_json::from_slice(data)?
        };
        let events = self.events.clone();
        let signals = self.signals.clone();
        let cluster_events = self.cluster_events.clone();
        let changes = self.changes + 1;
        *self = StateMachine::from_store(store);
        self.changes = changes;
        self.events = events;
        Signals::bump(&signals.any);
        self.signals = signals;
        self.cluster_events = cluster_events;
        Ok(())
    }

    pub fn snapshot_data(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.store)
    }

    /// SHA-256 (hex) of the whole replicated state and the index it reflects. Managers
    /// that applied the same log hash equal at the same index: the chaos checker
    /// (`deploy/chaos`) compares them to catch divergence.
    pub fn state_hash(&self) -> (u64, String) {
        use sha2::Digest as _;
        // Every map in the store is ordered, so the encoding is canonical.
        let bytes = self.snapshot_data().unwrap_or_default();
        (self.store.applied, hex::encode(sha2::Sha256::digest(bytes)))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn applied(&self) -> u64 {
        self.store.applied
    }

    /// A receiver of every future change. Take it while holding the read lock you list
    /// under, so no change falls between the list and the feed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Recorded cluster events at or after `since` (nanoseconds; 0: none).
    pub fn cluster_events(&self, since: i64) -> Vec<crate::model::events::ClusterEvent> {
        if since <= 0 {
            return vec![];
        }
        self.store
            .events
            .iter()
            .filter(|e| e.time_unix_nanos >= since)
            .cloned()
            .collect()
    }

    /// A receiver of future cluster events; take it under the same read lock as
    /// [`Self::cluster_events`] so none falls between the two.
    pub fn subscribe_cluster_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::model::events::ClusterEvent> {
        self.cluster_events.subscribe()
    }

    pub fn meta(&self) -> &ClusterMeta {
        &self.store.meta
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.store.nodes.values()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.store.nodes.get(id)
    }

    pub fn is_removed(&self, id: &str) -> bool {
        self.store.removed_nodes.contains(id)
    }

    /// Finds a node by ID, unique ID prefix or hostname.
    pub fn find_node(&self, key: &str) -> Option<&Node> {
        if let Some(n) = self.store.nodes.get(key) {
            return Some(n);
        }
        let by_name: Vec<_> = self
            .store
            .nodes
            .values()
            .filter(|n| n.hostname == key)
            .collect();
        if by_name.len() == 1 {
            return Some(by_name[0]);
        }
        let by_prefix: Vec<_> = self
            .store
            .nodes
            .values()
            .filter(|n| n.id.starts_with(key))
            .collect();
        if by_prefix.len() == 1 {
            return Some(by_prefix[0]);
        }
        None
    }

    pub fn get(&self, kind: &str, id_or_name: &str) -> Option<&Object> {
        let objs = self.store.objects.get(kind)?;
        objs.get(id_or_name)
            .or_else(|| {
                self.names
                    .get(&(kind.to_string(), id_or_name.to_string()))
                    .and_then(|id| objs.get(id))
            })
            .map(|o| &**o)
    }

    pub fn list(&self, kind: &str) -> Vec<Object> {
        self.store
            .objects
            .get(kind)
            .map(|m| m.values().map(|o| Object::clone(o)).collect())
            .unwrap_or_default()
    }

    /// The objects of `kind`, by reference.
    pub fn objects(&self, kind: &str) -> impl Iterator<Item = &Object> {
        self.store
            .objects
            .get(kind)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|o| &**o)
    }

    /// The objects of `kind` whose specs decode as `T` (others are skipped), in
    /// [`Self::list`] order. An object unchanged since the previous call (same ID,
    /// creation index and version: the same contents) is cloned from that call's result
    /// instead of parsed again: during a deploy the store changes many times a second
    /// and each change used to parse every task anew, under the store's read lock.
    pub fn decoded<T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static>(
        &self,
        kind: &str,
    ) -> Vec<crate::model::Stored<T>> {
        self.decoded_refs::<T>(kind)
            .into_iter()
            .map(|s| crate::model::Stored {
                id: s.id,
                version: s.version,
                value: T::clone(&s.value),
            })
            .collect()
    }

    /// [`Self::decoded`] without the copies: each value shared with the cache, so a
    /// caller under the store's lock pays a pointer per object and copies (if it must)
    /// after letting go of the lock (see `SharedState::world`).
    pub fn decoded_refs<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
        kind: &str,
    ) -> Vec<crate::model::Stored<Arc<T>>> {
        let mut caches = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cache) = Self::cache_of::<T>(&mut caches, kind) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut present = 0;
        for o in self.objects(kind) {
            present += 1;
            if let Some(value) = Self::cached(cache, o) {
                out.push(crate::model::Stored {
                    id: o.id.clone(),
                    version: o.version,
                    value,
                });
            }
        }
        self.prune_deleted(cache, kind, present);
        out
    }

    /// Drops the cached entries of objects of `kind` that are gone (the cache holds
    /// more entries than the `present` objects).
    fn prune_deleted<T>(&self, cache: &mut DecodedCache<T>, kind: &str, present: usize) {
        if cache.len() > present {
            let ids: std::collections::HashSet<&str> =
                self.objects(kind).map(|o| o.id.as_str()).collect();
            cache.retain(|id, _| ids.contains(id.as_str()));
        }
    }

    /// One object of `kind` decoded as `T` (`None`: there is none, or it does not
    /// decode), from the same cache as [`Self::decoded`]: what a node's assignment
    /// stream reads for each of its tasks, without touching the others.
    pub fn decoded_one<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
        kind: &str,
        id: &str,
    ) -> Option<crate::model::Stored<Arc<T>>> {
        let o = self.store.objects.get(kind)?.get(id)?;
        let mut caches = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        let cache = Self::cache_of::<T>(&mut caches, kind)?;
        let value = Self::cached(cache, o);
        // Entries of deleted objects go when they outnumber the live ones (a manager
        // that only serves streams never lists the whole kind).
        let live = self.store.objects.get(kind);
        if cache.len() > 2 * live.map_or(0, |m| m.len()) + 1024 {
            cache.retain(|id, _| live.is_some_and(|m| m.contains_key(id)));
        }
        let value = value?;
        Some(crate::model::Stored {
            id: o.id.clone(),
            version: o.version,
            value,
        })
    }

    /// [`Self::decoded_refs`] for a caller that holds the store's lock only to take
    /// references: each object of `kind` as its cached value if that is current, else
    /// its raw spec (copied: a memcpy, where parsing costs a hundred times more). The
    /// caller parses the raw ones after letting go of the lock ([`Raw::decode`]) and
    /// hands them back to the cache ([`Self::fill_cache`]). On a 20,000-task cluster
    /// whose tasks had all changed, parsing under the lock held the raft thread's apply
    /// (and the leader's heartbeats with it) for seconds.
    pub fn decoded_or_raw<T: Send + Sync + 'static>(&self, kind: &str) -> Vec<Raw<T>> {
        let mut caches = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cache) = Self::cache_of::<T>(&mut caches, kind) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut present = 0;
        for o in self.objects(kind) {
            present += 1;
            let value = match cache.get(&o.id) {
                Some((c, v, value)) if *c == o.created_index && *v == o.version => {
                    Ok(value.clone())
                }
                _ => Err(o.spec.clone()),
            };
            out.push(Raw {
                id: o.id.clone(),
                created_index: o.created_index,
                version: o.version,
                value,
            });
        }
        self.prune_deleted(cache, kind, present);
        out
    }

    /// Puts values parsed outside the lock (see [`Self::decoded_or_raw`]) in the cache,
    /// unless it holds a newer version of the object by now.
    pub fn fill_cache<T: Send + Sync + 'static>(&self, kind: &str, parsed: &[Raw<T>]) {
        let mut caches = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cache) = Self::cache_of::<T>(&mut caches, kind) else {
            return;
        };
        for r in parsed {
            let Ok(value) = &r.value else { continue };
            let newer = cache
                .get(&r.id)
                .is_some_and(|(c, v, _)| (*c, *v) >= (r.created_index, r.version));
            if !newer {
                cache.insert(r.id.clone(), (r.created_index, r.version, value.clone()));
            }
        }
    }

    /// `o` decoded from `cache`, or parsed (and cached) if it changed since.
    fn cached<T: serde::de::DeserializeOwned>(
        cache: &mut DecodedCache<T>,
        o: &Object,
    ) -> Option<Arc<T>> {
        match cache.get(&o.id) {
            Some((c, v, value)) if *c == o.created_index && *v == o.version => value.clone(),
            _ => {
                let value = serde_json::from_slice::<T>(&o.spec).ok().map(Arc::new);
                cache.insert(o.id.clone(), (o.created_index, o.version, value.clone()));
                value
            }
        }
    }

    fn cache_of<'c, T: Send + Sync + 'static>(
        caches: &'c mut HashMap<(std::any::TypeId, String), Box<dyn std::any::Any + Send>>,
        kind: &str,
    ) -> Option<&'c mut DecodedCache<T>> {
        caches
            .entry((std::any::TypeId::of::<T>(), kind.to_string()))
            .or_insert_with(|| Box::new(DecodedCache::<T>::new()))
            .downcast_mut::<DecodedCache<T>>()
    }

    /// Marks `index` applied for entries that carry no proposal (raft's empty entries,
    /// conf changes).
    pub fn set_applied(&mut self, index: u64) {
        self.store.applied = self.store.applied.max(index);
    }

    /// Applies one committed proposal at `index`. Deterministic; validates the whole batch
    /// on a scratch copy of what it touches before changing anything.
    pub fn apply(&mut self, index: u64, p: &Proposal) -> ApplyResult {
        self.store.applied = self.store.applied.max(index);
        if let Some(prev) = self.seen.get(&p.request_id) {
            return ApplyResult::clone(prev);
        }
        let mut scratch = Scratch::default();
        let res = self.plan(index, p, &mut scratch);
        let res = match res {
            Ok(objects) => {
                self.commit(index, crate::model::events::proposal_time(&p.at), scratch);
                Ok(Outcome { index, objects })
            }
            Err(e) => Err(e),
        };
        self.remember(p.request_id.clone(), res.clone());
        res
    }

    /// Remembers a request's outcome for a retry of it, without the objects' specs:
    /// a retry learns what changed (IDs, versions, index), and the store does not keep
    /// a copy of every object of the last REMEMBERED_REQUESTS proposals (on a
    /// 20,000-task deploy that was over a GiB per manager, copied into every snapshot).
    fn remember(&mut self, id: String, mut res: ApplyResult) {
        if let Ok(out) = &mut res {
            for o in &mut out.objects {
                o.spec = Vec::new();
            }
        }
        let res = Arc::new(res);
        self.seen.insert(id.clone(), res.clone());
        self.store.requests.push_back((id, res));
        while self.store.requests.len() > REMEMBERED_REQUESTS {
            if let Some((old, _)) = self.store.requests.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    fn cur_node(&self, s: &Scratch, id: &str) -> Option<Node> {
        match s.nodes.get(id) {
            Some(n) => n.clone(),
            None => self.store.nodes.get(id).cloned(),
        }
    }

    fn cur_obj(&self, s: &Scratch, kind: &str, id: &str) -> Option<Object> {
        match s.objects.get(&(kind.to_string(), id.to_string())) {
            Some(o) => o.clone(),
            None => self
                .store
                .objects
                .get(kind)
                .and_then(|m| m.get(id))
                .map(|o| Object::clone(o)),
        }
    }

    fn name_owner(&self, s: &Scratch, kind: &str, name: &str) -> Option<String> {
        let key = (kind.to_string(), name.to_string());
        match s.names.get(&key) {
            Some(v) => v.clone(),
            None => self.names.get(&key).cloned(),
        }
    }

    fn plan(&self, index: u64, p: &Proposal, s: &mut Scratch) -> Result<Vec<Object>, ApplyError> {
        let mut out = Vec::new();
        for op in &p.ops {
            match op {
                Op::InitCluster { meta } => {
                    if !self.store.meta.cluster_id.is_empty() || s.meta.is_some() {
                        return Err(ApplyError::Invalid("cluster already initialised".into()));
                    }
                    s.meta = Some(meta.clone());
                }
                Op::RotateToken { role, secret } => {
                    let mut m = s.meta.clone().unwrap_or_else(|| self.store.meta.clone());
                    match role {
                        Role::Worker => m.worker_secret = secret.clone(),
                        Role::Manager => m.manager_secret = secret.clone(),
                    }
                    s.meta = Some(m);
                }
                Op::PutNode { node } => {
                    if self.store.removed_nodes.contains(&node.id) {
                        return Err(ApplyError::Removed(node.id.clone()));
                    }
                    let prev = self.cur_node(s, &node.id);
                    let mut n = node.clone();
                    n.version = prev.as_ref().map_or(1, |p| p.version + 1);
                    n.created_at = prev.map_or(p.at.clone(), |p| p.created_at);
                    n.updated_at = p.at.clone();
                    out.push(node_object(&n, index));
                    s.nodes.insert(n.id.clone(), Some(n));
                }
                Op::UpdateNode {
                    id,
                    availability,
                    label_add,
                    label_rm,
                    role,
                    status,
                    raft_id,
                    addr,
                } => {
                    let mut n = self.cur_node(s, id).ok_or_else(|| ApplyError::NotFound {
                        kind: NODE_KIND.into(),
                        id: id.clone(),
                    })?;
                    if let Some(a) = availability {
                        n.availability = *a;
                    }
                    for k in label_rm {
                        if n.labels.remove(k).is_none() {
                            return Err(ApplyError::Invalid(format!(
                                "key {k} doesn't exist in node's labels"
                            )));
                        }
                    }
                    n.labels
                        .extend(label_add.iter().map(|(k, v)| (k.clone(), v.clone())));
                    if let Some(r) = role {
                        n.role = *r;
                    }
                    if let Some(st) = status {
                        n.status = *st;
                    }
                    if let Some(r) = raft_id {
                        n.raft_id = *r;
                    }
                    if let Some(a) = addr {
                        n.addr = a.clone();
                    }
                    n.version += 1;
                    n.updated_at = p.at.clone();
                    out.push(node_object(&n, index));
                    s.nodes.insert(id.clone(), Some(n));
                }
                Op::DescribeNode { id, description } => {
                    let mut n = self.cur_node(s, id).ok_or_else(|| ApplyError::NotFound {
                        kind: NODE_KIND.into(),
                        id: id.clone(),
                    })?;
                    n.description = description.clone();
                    n.version += 1;
                    n.updated_at = p.at.clone();
                    out.push(node_object(&n, index));
                    s.nodes.insert(id.clone(), Some(n));
                }
                Op::RemoveNode { id } => {
                    let n = self.cur_node(s, id).ok_or_else(|| ApplyError::NotFound {
                        kind: NODE_KIND.into(),
                        id: id.clone(),
                    })?;
                    out.push(node_object(&n, index));
                    s.nodes.insert(id.clone(), None);
                    s.removed.push(id.clone());
                }
                Op::Create {
                    kind,
                    id,
                    name,
                    spec,
                } => {
                    if kind.is_empty() || id.is_empty() || name.is_empty() {
                        return Err(ApplyError::Invalid(
                            "create needs a kind, an id and a name".into(),
                        ));
                    }
                    if self.cur_obj(s, kind, id).is_some() {
                        return Err(ApplyError::IdConflict {
                            kind: kind.clone(),
                            id: id.clone(),
                        });
                    }
                    if self.name_owner(s, kind, name).is_some() {
                        return Err(ApplyError::NameConflict {
                            kind: kind.clone(),
                            name: name.clone(),
                        });
                    }
                    let o = Object {
                        kind: kind.clone(),
                        id: id.clone(),
                        name: name.clone(),
                        version: 1,
                        spec: spec.clone(),
                        created_index: index,
                        updated_index: index,
                    };
                    s.names
                        .insert((kind.clone(), name.clone()), Some(id.clone()));
                    s.objects
                        .insert((kind.clone(), id.clone()), Some(o.clone()));
                    s.actions.push((kind.clone(), id.clone(), Action::Created));
                    out.push(o);
                }
                Op::Update {
                    kind,
                    id,
                    spec,
                    expected_version,
                } => {
                    let mut o = self
                        .cur_obj(s, kind, id)
                        .ok_or_else(|| ApplyError::NotFound {
                            kind: kind.clone(),
                            id: id.clone(),
                        })?;
                    if *expected_version != 0 && o.version != *expected_version {
                        return Err(ApplyError::VersionMismatch {
                            kind: kind.clone(),
                            id: id.clone(),
                            expected: *expected_version,
                            actual: o.version,
                        });
                    }
                    o.version += 1;
                    o.spec = spec.clone();
                    o.updated_index = index;
                    s.objects
                        .insert((kind.clone(), id.clone()), Some(o.clone()));
                    s.actions.push((kind.clone(), id.clone(), Action::Updated));
                    out.push(o);
                }
                Op::Delete {
                    kind,
                    id,
                    expected_version,
                } => {
                    let o = self
                        .cur_obj(s, kind, id)
                        .ok_or_else(|| ApplyError::NotFound {
                            kind: kind.clone(),
                            id: id.clone(),
                        })?;
                    if *expected_version != 0 && o.version != *expected_version {
                        return Err(ApplyError::VersionMismatch {
                            kind: kind.clone(),
                            id: id.clone(),
                            expected: *expected_version,
                            actual: o.version,
                        });
                    }
                    s.names.insert((kind.clone(), o.name.clone()), None);
                    s.objects.insert((kind.clone(), id.clone()), None);
                    s.actions.push((kind.clone(), id.clone(), Action::Deleted));
                    out.push(o);
                }
            }
        }
        Ok(out)
    }

    /// `compute(self)`, computed once per version of the contents and shared: readers
    /// that all need the same derived value (every node's assignment stream decodes the
    /// whole task list) pay for it once per change instead of once each. Keyed by the
    /// value's type, so each type must mean one derivation.
    pub fn memo<T: std::any::Any + Send + Sync>(&self, compute: impl FnOnce(&Self) -> T) -> Arc<T> {
        Self::memoized(&self.memo, || compute(self))
    }

    /// [`Self::memo`] for a value derived from the nodes alone (the member list every
    /// heartbeat stream compares, the managers every heartbeat answer names): kept
    /// across changes of other objects. During a deploy the state changes hundreds of
    /// times a second and each change re-derived a 1,000-node list.
    pub fn memo_nodes<T: std::any::Any + Send + Sync>(
        &self,
        compute: impl FnOnce(&Self) -> T,
    ) -> Arc<T> {
        Self::memoized(&self.memo_nodes, || compute(self))
    }

    fn memoized<T: std::any::Any + Send + Sync>(
        memo: &std::sync::Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
        compute: impl FnOnce() -> T,
    ) -> Arc<T> {
        let key = std::any::TypeId::of::<T>();
        let cached = memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(v) = cached.and_then(|v| v.downcast::<T>().ok()) {
            return v;
        }
        let v = Arc::new(compute());
        memo.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, v.clone());
        v
    }

    fn commit(&mut self, index: u64, at: i64, s: Scratch) {
        self.changes += 1;
        self.memo
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if !s.nodes.is_empty() {
            self.memo_nodes
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        if let Some(m) = s.meta {
            self.store.meta = m;
        }
        let mut events = Vec::new();
        let mut cluster_events = Vec::new();
        for (id, n) in s.nodes {
            cluster_events.extend(crate::model::events::derive_node(
                at,
                index,
                self.store.nodes.get(&id),
                n.as_ref(),
            ));
            match n {
                Some(n) => {
                    let action = if self.store.nodes.contains_key(&id) {
                        Action::Updated
                    } else {
                        Action::Created
                    };
                    events.push(Event::new(index, action, node_object(&n, index)));
                    self.store.nodes.insert(id, n);
                }
                None => {
                    if let Some(n) = self.store.nodes.remove(&id) {
                        events.push(Event::new(index, Action::Deleted, node_object(&n, index)));
                    }
                }
            }
        }
        self.store.removed_nodes.extend(s.removed);
        let mut deleted = HashMap::new();
        // Objects as they were before this batch, for events that report what changed.
        let mut before = HashMap::new();
        // Where each task of the batch was (deleted) or is now, for its event.
        let mut placed: HashMap<String, TaskPlacement> = HashMap::new();
        for ((kind, id), o) in s.objects {
            if kind == KIND_TASK {
                let now = o.as_ref().and_then(|o| task_placement(&o.spec));
                let was = self.place_task(&id, now.clone());
                if let Some(p) = now.or(was) {
                    placed.insert(id.clone(), p);
                }
            }
            let m = self.store.objects.entry(kind.clone()).or_default();
            if let Some(old) = m.get(&id) {
                if o.is_some() && kind == crate::model::KIND_SERVICE {
                    before.insert((kind.clone(), id.clone()), Object::clone(old));
                }
            }
            match o {
                Some(o) => {
                    m.insert(id, Arc::new(o));
                }
                None => {
                    if let Some(o) = m.remove(&id) {
                        deleted.insert((kind, id), o);
                    }
                }
            }
        }
        for ((kind, name), id) in s.names {
            match id {
                Some(id) => self.names.insert((kind, name), id),
                None => self.names.remove(&(kind, name)),
            };
        }
        for (kind, id, action) in s.actions {
            let object = match action {
                Action::Deleted => match deleted.remove(&(kind.clone(), id.clone())) {
                    Some(o) => Object::clone(&o),
                    None => continue,
                },
                _ => match self.store.objects.get(&kind).and_then(|m| m.get(&id)) {
                    Some(o) => Object::clone(o),
                    None => continue,
                },
            };
            let old = before.get(&(kind, id));
            cluster_events.extend(crate::model::events::derive_object(
                at, index, action, old, &object,
            ));
            let placement = (object.kind == KIND_TASK)
                .then(|| placed.get(&object.id))
                .flatten();
            events.push(Event::placed(index, action, object, placement));
        }
        {
            let nodes = self.signals.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let mut any = false;
            for e in &events {
                match &e.node {
                    Some(n) => {
                        if let Some(tx) = nodes.get(n) {
                            Signals::bump(tx);
                        }
                    }
                    None => any = true,
                }
            }
            if any {
                Signals::bump(&self.signals.any);
            }
        }
        for e in events {
            let _ = self.events.send(Arc::new(e));
        }
        for e in cluster_events {
            if self.store.events.len() >= crate::model::events::HISTORY {
                self.store.events.pop_front();
            }
            self.store.events.push_back(e.clone());
            let _ = self.cluster_events.send(e);
        }
    }
}

/// Pending changes of one batch; `None` means deleted.
#[derive(Default)]
struct Scratch {
    meta: Option<ClusterMeta>,
    nodes: BTreeMap<String, Option<Node>>,
    removed: Vec<String>,
    objects: BTreeMap<(String, String), Option<Object>>,
    names: BTreeMap<(String, String), Option<String>>,
    actions: Vec<(String, String, Action)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Availability;

    fn create(kind: &str, id: &str, name: &str) -> Op {
        Op::Create {
            kind: kind.into(),
            id: id.into(),
            name: name.into(),
            spec: b"{}".to_vec(),
        }
    }

    fn prop(id: &str, ops: Vec<Op>) -> Proposal {
        Proposal {
            request_id: id.into(),
            at: "2024-01-01T00:00:00Z".into(),
            ops,
        }
    }

    #[test]
    fn a_memo_of_the_nodes_outlives_other_changes_but_not_a_node_change() {
        struct Nodes(usize);
        let mut sm = StateMachine::default();
        let computed = std::sync::atomic::AtomicUsize::new(0);
        let count = |sm: &StateMachine| {
            computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Nodes(sm.nodes().count())
        };
        assert_eq!(sm.memo_nodes(count).0, 0);
        sm.apply(1, &prop("r1", vec![create("service", "a", "web")]))
            .expect("create");
        assert_eq!(sm.memo_nodes(count).0, 0);
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 1);
        let node = Node {
            id: "n1".into(),
            hostname: "h".into(),
            ..Default::default()
        };
        sm.apply(2, &prop("r2", vec![Op::PutNode { node }]))
            .expect("join");
        assert_eq!(sm.memo_nodes(count).0, 1, "a node change drops it");
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 2);
        sm.restore(&[]).expect("restore empty");
        assert_eq!(sm.memo_nodes(count).0, 0, "a restore drops it too");
    }

    #[test]
    fn memo_is_computed_once_per_change_of_the_contents() {
        struct Services(usize);
        let mut sm = StateMachine::default();
        let computed = std::sync::atomic::AtomicUsize::new(0);
        let count = |sm: &StateMachine| {
            computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Services(sm.list("service").len())
        };
        assert_eq!(sm.memo(count).0, 0);
        assert_eq!(sm.memo(count).0, 0);
        assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 1);
        sm.apply(1, &prop("r1", vec![create("service", "a", "web")]))
            .expect("create");
        assert_eq!(sm.memo(count).0, 1, "a change drops the memo");
        // A rejected batch changes nothing, and a retried request nothing either.
        let _ = sm.apply(2, &prop("r2", vec![create("service", "b", "web")]));
        let _ = sm.apply(3, &prop("r1", vec![create("service", "a", "web")]));
        assert_eq!(sm.memo(count).0, 1);
        let data = sm.snapshot_data().expect("snapshot");
        let before = sm.changes();
        sm.restore(&[]).expect("restore empty");
        assert_eq!(sm.memo(count).0, 0, "a restore drops it too");
        sm.restore(&data).expect("restore");
        assert_eq!(sm.memo(count).0, 1);
        // Restores publish no events: they move the change count (and wake every
        // node watch, see `a_node_watch_wakes_...`).
        assert_eq!(sm.changes(), before + 2);
    }

    fn task_op(id: &str, node: &str, overlay: bool, version: Option<u64>) -> Op {
        let mut t = crate::model::Task {
            node_id: node.into(),
            ..Default::default()
        };
        if overlay {
            t.addresses
                .insert("net".into(), std::net::Ipv4Addr::new(10, 0, 0, 2));
        }
        let spec = serde_json::to_vec(&t).expect("json");
        match version {
            None => Op::Create {
                kind: KIND_TASK.into(),
                id: id.into(),
                name: id.into(),
                spec,
            },
            Some(v) => Op::Update {
                kind: KIND_TASK.into(),
                id: id.into(),
                spec,
                expected_version: v,
            },
        }
    }

    fn on(sm: &StateMachine, node: &str) -> Vec<String> {
        sm.task_ids_on(node).cloned().collect()
    }

    #[test]
    fn the_per_node_task_index_follows_placement_removal_and_restore() {
        let mut sm = StateMachine::default();
        sm.apply(
            1,
            &prop(
                "1",
                vec![
                    task_op("t1", "", false, None),
                    task_op("t2", "n1", false, None),
                ],
            ),
        )
        .expect("create");
        assert_eq!(on(&sm, ""), ["t1"], "unplaced");
        assert_eq!(on(&sm, "n1"), ["t2"]);
        // The scheduler places t1 on n1: it moves.
        sm.apply(2, &prop("2", vec![task_op("t1", "n1", false, Some(1))]))
            .expect("place");
        assert!(on(&sm, "").is_empty());
        assert_eq!(on(&sm, "n1"), ["t1", "t2"]);
        let t1 = sm
            .decoded_one::<crate::model::Task>(KIND_TASK, "t1")
            .expect("t1");
        assert_eq!((t1.version, t1.value.node_id.as_str()), (2, "n1"));
        sm.apply(
            3,
            &prop(
                "3",
                vec![Op::Delete {
                    kind: KIND_TASK.into(),
                    id: "t2".into(),
                    expected_version: 0,
                }],
            ),
        )
        .expect("delete");
        assert_eq!(on(&sm, "n1"), ["t1"]);
        assert!(sm
            .decoded_one::<crate::model::Task>(KIND_TASK, "t2")
            .is_none());
        // A snapshot restore rebuilds it.
        let data = sm.snapshot_data().expect("snapshot");
        let mut other = StateMachine::default();
        other.restore(&data).expect("restore");
        assert_eq!(on(&other, "n1"), ["t1"]);
        assert!(on(&other, "").is_empty());
    }

    #[test]
    fn decoded_entries_of_deleted_objects_do_not_pile_up() {
        let mut sm = StateMachine::default();
        let cached = |sm: &StateMachine| {
            let mut caches = sm.decoded.lock().expect("lock");
            StateMachine::cache_of::<crate::model::Task>(&mut caches, KIND_TASK)
                .map_or(0, |c| c.len())
        };
        let ids: Vec<String> = (0..1500).map(|i| format!("t{i}")).collect();
        let creates = ids
            .iter()
            .map(|id| task_op(id, "n1", false, None))
            .collect();
        sm.apply(1, &prop("create", creates)).expect("create");
        for id in &ids {
            assert!(sm
                .decoded_one::<crate::model::Task>(KIND_TASK, id)
                .is_some());
        }
        assert_eq!(cached(&sm), 1500);
        let deletes = ids
            .iter()
            .map(|id| Op::Delete {
                kind: KIND_TASK.into(),
                id: id.clone(),
                expected_version: 0,
            })
            .collect();
        sm.apply(2, &prop("delete", deletes)).expect("delete");
        sm.apply(3, &prop("new", vec![task_op("fresh", "n1", false, None)]))
            .expect("create");
        assert!(sm
            .decoded_one::<crate::model::Task>(KIND_TASK, "fresh")
            .is_some());
        assert_eq!(cached(&sm), 1, "the deleted ones were dropped");
    }

    #[test]
    fn specs_copied_under_the_lock_are_parsed_after_and_cached_unless_stale() {
        #[derive(Clone, serde::Deserialize)]
        struct Spec {
            #[serde(default)]
            n: u64,
        }
        let update = |n: u64, v: u64| Op::Update {
            kind: "service".into(),
            id: "a".into(),
            spec: format!("{{\"n\":{n}}}").into_bytes(),
            expected_version: v,
        };
        let mut sm = StateMachine::default();
        sm.apply(1, &prop("r1", vec![create("service", "a", "x")]))
            .expect("create");
        // Nothing cached yet: the raw spec comes back, parses, and fills the cache.
        let mut first = sm.decoded_or_raw::<Spec>("service");
        assert_eq!(first.len(), 1);
        assert!(first[0].value.is_err(), "raw spec expected");
        assert!(first[0].decode());
        assert!(!first[0].decode(), "parsed once");
        sm.fill_cache("service", &first);
        let again = sm.decoded_or_raw::<Spec>("service");
        assert!(matches!(&again[0].value, Ok(Some(_))), "cached now");
        // A newer version: raw again. A slow reader's older parse does not replace the
        // newer one in the cache.
        sm.apply(2, &prop("r2", vec![update(5, 1)]))
            .expect("update");
        let mut newer = sm.decoded_or_raw::<Spec>("service");
        assert!(newer[0].value.is_err());
        newer[0].decode();
        sm.fill_cache("service", &newer);
        sm.fill_cache("service", &first);
        let now = sm.decoded_or_raw::<Spec>("service");
        let cached = now[0].stored().expect("decodes");
        assert_eq!((cached.version, cached.value.n), (2, 5));
        // The other readers share the same cache.
        assert_eq!(sm.decoded::<Spec>("service")[0].value.n, 5);
    }

    #[tokio::test]
    async fn a_node_watch_wakes_for_its_own_changes_and_shared_ones_only() {
        use std::time::Duration;
        let woke = |w: &mut NodeWatch| futures::FutureExt::now_or_never(w.changed()).is_some();
        let mut sm = StateMachine::default();
        let mut n1 = sm.watch_node("n1");
        let mut n2 = sm.watch_node("n2");
        sm.apply(1, &prop("1", vec![task_op("t1", "n1", false, None)]))
            .expect("create");
        assert!(woke(&mut n1), "its own task");
        assert!(!woke(&mut n2), "another node's task");
        // A task with overlay addresses is in every member's view; other kinds too.
        sm.apply(2, &prop("2", vec![task_op("t2", "n1", true, None)]))
            .expect("overlay task");
        assert!(woke(&mut n2));
        n1.mark_seen();
        sm.apply(3, &prop("3", vec![create("config", "c", "c")]))
            .expect("config");
        assert!(woke(&mut n1) && woke(&mut n2));
        // A restore publishes no events: it wakes everyone.
        let data = sm.snapshot_data().expect("snapshot");
        sm.restore(&data).expect("restore");
        assert!(woke(&mut n1) && woke(&mut n2));
        // Nothing more happened.
        let quiet = tokio::time::timeout(Duration::from_millis(20), n1.changed()).await;
        assert!(quiet.is_err());
    }

    #[test]
    fn decoded_objects_follow_every_change_of_the_contents() {
        #[derive(Clone, serde::Deserialize)]
        struct Spec {
            #[serde(default)]
            n: u64,
        }
        let spec = |n: u64| format!("{{\"n\":{n}}}").into_bytes();
        let update = |id: &str, n: u64, v: u64| Op::Update {
            kind: "service".into(),
            id: id.into(),
            spec: spec(n),
            expected_version: v,
        };
        let values = |sm: &StateMachine| {
            let mut v: Vec<(String, u64)> = sm
                .decoded::<Spec>("service")
                .into_iter()
                .map(|s| (s.id, s.value.n))
                .collect();
            v.sort();
            v
        };
        let mut sm = StateMachine::default();
        sm.apply(
            1,
            &prop(
                "r1",
                vec![create("service", "a", "x"), create("service", "b", "y")],
            ),
        )
        .expect("create");
        assert_eq!(values(&sm), [("a".into(), 0), ("b".into(), 0)]);
        sm.apply(2, &prop("r2", vec![update("a", 7, 1)]))
            .expect("update");
        assert_eq!(values(&sm), [("a".into(), 7), ("b".into(), 0)]);
        let del = Op::Delete {
            kind: "service".into(),
            id: "a".into(),
            expected_version: 0,
        };
        sm.apply(3, &prop("r3", vec![del])).expect("delete");
        assert_eq!(values(&sm), [("b".into(), 0)]);
        // Recreated under the same ID: a new object, not the cached one.
        sm.apply(4, &prop("r4", vec![create("service", "a", "x")]))
            .expect("recreate");
        sm.apply(5, &prop("r5", vec![update("a", 3, 1)]))
            .expect("update");
        assert_eq!(values(&sm), [("a".into(), 3), ("b".into(), 0)]);
        // Specs that do not decode are skipped, as before.
        sm.apply(
            6,
            &prop(
                "r6",
                vec![Op::Update {
                    kind: "service".into(),
                    id: "b".into(),
                    spec: b"nope".to_vec(),
                    expected_version: 1,
                }],
            ),
        )
        .expect("update");
        assert_eq!(values(&sm), [("a".into(), 3)]);
    }

    #[test]
    fn names_are_unique_per_kind() {
        let mut sm = StateMachine::default();
        sm.apply(1, &prop("r1", vec![create("service", "a", "web")]))
            .expect("create");
        let err = sm
            .apply(2, &prop("r2", vec![create("service", "b", "web")]))
            .expect_err("dup name");
        assert!(matches!(err, ApplyError::NameConflict { .. }), "{err}");
        sm.apply(3, &prop("r3", vec![create("network", "c", "web")]))
            .expect("other kind may reuse a name");
        assert_eq!(sm.get("service", "web").map(|o| o.id.as_str()), Some("a"));
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let mut sm = StateMachine::default();
        let err = sm
            .apply(
                1,
                &prop(
                    "r1",
                    vec![create("task", "t1", "one"), create("task", "t2", "one")],
                ),
            )
            .expect_err("second op conflicts with the first");
        assert!(matches!(err, ApplyError::NameConflict { .. }));
        assert!(sm.list("task").is_empty(), "nothing half-applied");
        assert_eq!(sm.applied(), 1);
    }

    #[test]
    fn retried_requests_apply_once() {
        let mut sm = StateMachine::default();
        let p = prop("same", vec![create("config", "x", "cfg")]);
        let first = sm.apply(1, &p).expect("first");
        let again = sm
            .apply(2, &p)
            .expect("a retry returns the first outcome, not a conflict");
        // The same change (index, IDs, versions); the retry is not sent the specs.
        assert_eq!(first.index, again.index);
        let ids = |o: &Outcome| {
            o.objects
                .iter()
                .map(|o| (o.id.clone(), o.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&first), ids(&again));
        assert!(!first.objects[0].spec.is_empty());
        assert!(again.objects[0].spec.is_empty(), "remembered without specs");
        assert_eq!(sm.list("config").len(), 1);
    }

    #[test]
    fn versions_guard_updates_and_events_flow() {
        let mut sm = StateMachine::default();
        let mut rx = sm.subscribe();
        sm.apply(1, &prop("r1", vec![create("service", "s", "web")]))
            .expect("create");
        let upd = |v| Op::Update {
            kind: "service".into(),
            id: "s".into(),
            spec: b"{\"r\":2}".to_vec(),
            expected_version: v,
        };
        sm.apply(2, &prop("r2", vec![upd(1)]))
            .expect("update at v1");
        let err = sm
            .apply(3, &prop("r3", vec![upd(1)]))
            .expect_err("stale version");
        assert!(matches!(err, ApplyError::VersionMismatch { actual: 2, .. }));
        sm.apply(
            4,
            &prop(
                "r4",
                vec![Op::Delete {
                    kind: "service".into(),
                    id: "s".into(),
                    expected_version: 0,
                }],
            ),
        )
        .expect("delete");
        let actions: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.index, e.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                (1, Action::Created),
                (2, Action::Updated),
                (4, Action::Deleted)
            ]
        );
        // The name is free again.
        sm.apply(5, &prop("r5", vec![create("service", "s2", "web")]))
            .expect("reuse name");
    }

    #[test]
    fn removed_nodes_cannot_come_back_and_snapshots_round_trip() {
        let mut sm = StateMachine::default();
        let node = Node {
            id: "n1".into(),
            hostname: "h".into(),
            ..Default::default()
        };
        sm.apply(1, &prop("a", vec![Op::PutNode { node: node.clone() }]))
            .expect("join");
        let label = Op::UpdateNode {
            id: "n1".into(),
            availability: Some(Availability::Drain),
            label_add: [("zone".to_string(), "a".to_string())].into(),
            label_rm: vec![],
            role: None,
            status: None,
            raft_id: None,
            addr: None,
        };
        sm.apply(2, &prop("b", vec![label])).expect("update");
        assert_eq!(
            sm.node("n1").map(|n| (n.availability, n.version)),
            Some((Availability::Drain, 2))
        );
        let data = sm.snapshot_data().expect("snapshot");
        let mut restored = StateMachine::default();
        restored.restore(&data).expect("restore");
        assert_eq!(restored.store(), sm.store());
        sm.apply(3, &prop("c", vec![Op::RemoveNode { id: "n1".into() }]))
            .expect("rm");
        let err = sm
            .apply(4, &prop("d", vec![Op::PutNode { node }]))
            .expect_err("stale rejoin");
        assert!(matches!(err, ApplyError::Removed(_)));
    }
}

/// Cluster events as the state machine records them on apply.
#[cfg(test)]
mod cluster_event_tests {
    use super::*;
    use crate::model::events::fixtures::{node, service_obj};
    use crate::model::events::{proposal_time, HISTORY};
    use crate::model::{NodeStatus, KIND_SERVICE};

    #[test]
    fn the_state_machine_records_replayable_events() {
        let prop = |id: &str, at: &str, ops: Vec<Op>| Proposal {
            request_id: id.into(),
            at: at.into(),
            ops,
        };
        let mut sm = StateMachine::default();
        let mut live = sm.subscribe_cluster_events();
        let svc = service_obj(1, "busybox", None);
        sm.apply(
            1,
            &prop(
                "a",
                "2024-01-01T00:00:01Z",
                vec![
                    Op::PutNode {
                        node: node(NodeStatus::Unknown),
                    },
                    Op::Create {
                        kind: KIND_SERVICE.into(),
                        id: "s1".into(),
                        name: "web".into(),
                        spec: svc.spec.clone(),
                    },
                ],
            ),
        )
        .expect("apply");
        let scaled = service_obj(4, "busybox", None);
        sm.apply(
            2,
            &prop(
                "b",
                "2024-01-01T00:00:02Z",
                vec![Op::Update {
                    kind: KIND_SERVICE.into(),
                    id: "s1".into(),
                    spec: scaled.spec.clone(),
                    expected_version: 0,
                }],
            ),
        )
        .expect("apply");
        // A rejected proposal records nothing.
        assert!(sm
            .apply(
                3,
                &prop(
                    "c",
                    "2024-01-01T00:00:03Z",
                    vec![Op::RemoveNode { id: "x".into() }]
                )
            )
            .is_err());
        let t1 = proposal_time("2024-01-01T00:00:01Z");
        let t2 = proposal_time("2024-01-01T00:00:02Z");
        let all = sm.cluster_events(1);
        let summary: Vec<_> = all
            .iter()
            .map(|e| (e.kind.as_str(), e.action.as_str(), e.time_unix_nanos))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("node", "join", t1),
                ("service", "create", t1),
                ("service", "update", t2)
            ]
        );
        assert_eq!(all[2].attributes["replicas.new"], "4");
        assert_eq!(sm.cluster_events(t2).len(), 1, "--since filters by time");
        assert!(
            sm.cluster_events(0).is_empty(),
            "since 0 means only new events"
        );
        let streamed: Vec<_> = std::iter::from_fn(|| live.try_recv().ok()).collect();
        assert_eq!(streamed, all);
        // Snapshots carry the history: a restored manager replays the same events.
        let mut restored = StateMachine::default();
        restored
            .restore(&sm.snapshot_data().expect("snapshot"))
            .expect("restore");
        assert_eq!(restored.cluster_events(1), all);
    }

    #[test]
    fn history_is_bounded() {
        let mut sm = StateMachine::default();
        for i in 0..(HISTORY as u64 + 10) {
            let p = Proposal {
                request_id: format!("r{i}"),
                at: "2024-01-01T00:00:01Z".into(),
                ops: vec![Op::Create {
                    kind: KIND_SERVICE.into(),
                    id: format!("s{i}"),
                    name: format!("svc{i}"),
                    spec: b"{}".to_vec(),
                }],
            };
            sm.apply(i + 1, &p).expect("apply");
        }
        let all = sm.cluster_events(1);
        assert_eq!(all.len(), HISTORY);
        assert_eq!(all[0].actor_id, "s10", "the oldest are dropped first");
    }
}
