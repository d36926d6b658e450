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

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// How many request IDs are remembered for de-duplication.
const REMEMBERED_REQUESTS: usize = 100_000;
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Object {
    pub kind: String,
    pub id: String,
    pub name: String,
    /// Starts at 1; bumped by every update (optimistic concurrency).
    pub version: u64,
    /// Opaque to the controller (JSON by convention).
    #[serde(with = "crate::codec::b64")]
    pub spec: Vec<u8>,
    pub created_index: u64,
    pub updated_index: u64,
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
        #[serde(with = "crate::codec::b64")]
        spec: Vec<u8>,
    },
    Update {
        kind: String,
        id: String,
        #[serde(with = "crate::codec::b64")]
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

/// The serialisable image of the state machine (snapshots).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Store {
    pub meta: ClusterMeta,
    pub nodes: BTreeMap<String, Node>,
    /// kind → id → object.
    pub objects: BTreeMap<String, BTreeMap<String, Object>>,
    pub removed_nodes: BTreeSet<String>,
    /// Recent request IDs and their outcome, oldest first.
    pub requests: VecDeque<(String, ApplyResult)>,
    pub applied: u64,
    /// The most recent cluster events (service and node changes), oldest first, for
    /// `skiff events --since` on any manager (see [`crate::events`]).
    #[serde(default)]
    pub events: VecDeque<crate::events::ClusterEvent>,
}

/// The store plus its indexes and change feed.
pub struct StateMachine {
    store: Store,
    names: HashMap<(String, String), String>,
    seen: HashMap<String, ApplyResult>,
    events: tokio::sync::broadcast::Sender<Arc<Event>>,
    cluster_events: tokio::sync::broadcast::Sender<crate::events::ClusterEvent>,
    /// Values derived from the current contents (see [`Self::memo`]); emptied by every
    /// change.
    memo: std::sync::Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

/// A random 25-character ID (Swarm's shape), base 36.
pub fn new_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

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
        let (events, _) = tokio::sync::broadcast::channel(8192);
        let (cluster_events, _) = tokio::sync::broadcast::channel(1024);
        StateMachine {
            store,
            names,
            seen,
            events,
            cluster_events,
            memo: Default::default(),
        }
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
        let cluster_events = self.cluster_events.clone();
        *self = StateMachine::from_store(store);
        self.events = events;
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
    pub fn cluster_events(&self, since: i64) -> Vec<crate::events::ClusterEvent> {
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
    ) -> tokio::sync::broadcast::Receiver<crate::events::ClusterEvent> {
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
        objs.get(id_or_name).or_else(|| {
            self.names
                .get(&(kind.to_string(), id_or_name.to_string()))
                .and_then(|id| objs.get(id))
        })
    }

    pub fn list(&self, kind: &str) -> Vec<Object> {
        self.store
            .objects
            .get(kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
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
            return prev.clone();
        }
        let mut scratch = Scratch::default();
        let res = self.plan(index, p, &mut scratch);
        let res = match res {
            Ok(objects) => {
                self.commit(index, crate::events::proposal_time(&p.at), scratch);
                Ok(Outcome { index, objects })
            }
            Err(e) => Err(e),
        };
        self.remember(p.request_id.clone(), res.clone());
        res
    }

    fn remember(&mut self, id: String, res: ApplyResult) {
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
                .cloned(),
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
        let key = std::any::TypeId::of::<T>();
        let cached = self
            .memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(v) = cached.and_then(|v| v.downcast::<T>().ok()) {
            return v;
        }
        let v = Arc::new(compute(self));
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, v.clone());
        v
    }

    fn commit(&mut self, index: u64, at: i64, s: Scratch) {
        self.memo
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(m) = s.meta {
            self.store.meta = m;
        }
        let mut events = Vec::new();
        let mut cluster_events = Vec::new();
        for (id, n) in s.nodes {
            cluster_events.extend(crate::events::derive_node(
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
                    events.push(Event {
                        index,
                        action,
                        object: node_object(&n, index),
                    });
                    self.store.nodes.insert(id, n);
                }
                None => {
                    if let Some(n) = self.store.nodes.remove(&id) {
                        events.push(Event {
                            index,
                            action: Action::Deleted,
                            object: node_object(&n, index),
                        });
                    }
                }
            }
        }
        self.store.removed_nodes.extend(s.removed);
        let mut deleted = HashMap::new();
        // Objects as they were before this batch, for events that report what changed.
        let mut before = HashMap::new();
        for ((kind, id), o) in s.objects {
            let m = self.store.objects.entry(kind.clone()).or_default();
            if let Some(old) = m.get(&id) {
                if o.is_some() && kind == crate::orchestrator::types::KIND_SERVICE {
                    before.insert((kind.clone(), id.clone()), old.clone());
                }
            }
            match o {
                Some(o) => {
                    m.insert(id, o);
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
                    Some(o) => o,
                    None => continue,
                },
                _ => match self.store.objects.get(&kind).and_then(|m| m.get(&id)) {
                    Some(o) => o.clone(),
                    None => continue,
                },
            };
            let old = before.get(&(kind, id));
            cluster_events.extend(crate::events::derive_object(
                at, index, action, old, &object,
            ));
            events.push(Event {
                index,
                action,
                object,
            });
        }
        for e in events {
            let _ = self.events.send(Arc::new(e));
        }
        for e in cluster_events {
            if self.store.events.len() >= crate::events::HISTORY {
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
        sm.restore(&[]).expect("restore empty");
        assert_eq!(sm.memo(count).0, 0, "a restore drops it too");
        sm.restore(&data).expect("restore");
        assert_eq!(sm.memo(count).0, 1);
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
        assert_eq!(first, again);
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
