//! The raft-backed cluster controller. It knows nothing of containers or namespaces.
//!
//! Layers, bottom to top; a module imports only from its own layer or below (the test
//! the root test `tests/layers.rs` checks every file):
//! 1. [`model`]: plain types and pure helpers (nodes, objects, proposals, services,
//!    tasks, stacks, cluster event derivation, IDs, codecs);
//! 2. [`store`]: the replicated state machine and its lock, with typed reads;
//! 3. [`raft`]: the raft node applying committed entries to the store, its durable log,
//!    the counted metrics, raft results over gRPC;
//! 4. [`ca`], [`tls`]: the cluster CA, join tokens, rustls configurations;
//! 5. [`orchestrator`], [`scheduler`]: reconciler, scheduler, allocator, dispatcher, log
//!    broker, and the [`orchestrator::membership::Membership`] view servers hold;
//! 6. [`api`]: the gRPC servers (cluster API, cluster port, stacks and services,
//!    events) and the metrics collector;
//! 7. [`cluster`]: a node's membership (found/join/resume, heartbeats, renewal), which
//!    builds [`cluster::Cluster`] and starts the servers.
//!
//! The modules `state`, `consensus`, `storage`, `events`, `metrics`, `logger` and
//! `network` keep the paths other crates used before the layering.

pub mod api;
pub mod ca;
pub mod cluster;
pub mod model;
pub mod orchestrator;
pub mod raft;
pub mod scheduler;
pub mod store;
pub mod tls;

pub use raft::{consensus, logger, network, storage};
pub use raft::{Bootstrap, RaftConfig, RaftError, RaftHandle, RaftStatus, Transport};
pub use state::{Object, Op, Outcome, Proposal, StateMachine, Store};

/// The replicated state's types and machine, at their path before the layering.
pub mod state {
    pub use crate::model::{
        new_id, Action, ApplyError, ApplyResult, Availability, ClusterMeta, Event, Node,
        NodeDescription, NodeStatus, Object, Op, Outcome, Proposal, Role, NODE_KIND,
    };
    pub use crate::store::{StateMachine, Store};
}

/// Cluster events: the model's data and derivation with the server and feed.
pub mod events {
    pub use crate::api::events::*;
    pub use crate::model::events::*;
}

/// Controller metrics: the counted ones and the on-scrape collector.
pub mod metrics {
    pub use crate::api::metrics::*;
}
