//! The raft-backed cluster controller. It knows nothing of containers or namespaces.
//!
//! Map of the crate:
//! - [`storage`]: the durable raft log (checksummed WAL + snapshot file);
//! - [`state`]: the replicated state machine (cluster identity, nodes, keyed objects);
//! - [`consensus`]: the raft node task (Ready loop), its mailbox [`consensus::RaftHandle`];
//! - [`orchestrator`]: services, tasks and the reconciler that keeps them converged;
//! - [`scheduler`]: pure placement of tasks on nodes (filters, spread, reservations);
//! - [`cluster`]: a node's membership: found/join/resume, the mutual-TLS cluster port
//!   (raft transport, join, heartbeats, certificate renewal) and the cluster state API;
//! - [`events`]: cluster events (services, nodes) derived on apply, replayed and streamed;
//! - [`metrics`]: Prometheus metrics of the raft node, reconciler and cluster state;
//! - [`ca`], [`tls`]: the cluster CA, join tokens, rustls configurations;
//! - [`network`]: an in-process transport with fault injection, for tests;
//! - [`logger`]: raft-rs's slog output bridged into `tracing`.

pub mod ca;
pub mod cluster;
mod codec;
pub mod consensus;
pub mod events;
pub mod logger;
pub mod metrics;
pub mod network;
pub mod orchestrator;
pub mod scheduler;
pub mod state;
pub mod storage;
pub mod tls;

pub use consensus::{Bootstrap, RaftConfig, RaftError, RaftHandle, RaftStatus, Transport};
pub use state::{Object, Op, Outcome, Proposal, StateMachine, Store};
