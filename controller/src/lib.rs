//! The raft-backed cluster controller. It knows nothing of containers or namespaces.
//!
//! Map of the crate:
//! - [`storage`]: the durable raft log (checksummed WAL + snapshot file);
//! - [`state`]: the replicated state machine (cluster identity, nodes, keyed objects);
//! - [`consensus`]: the raft node task (Ready loop), its mailbox [`consensus::RaftHandle`];
//! - [`scheduler`]: pure placement of tasks on nodes (filters, spread, reservations);
//! - [`network`]: an in-process transport with fault injection, for tests;
//! - [`logger`]: raft-rs's slog output bridged into `tracing`.

pub mod consensus;
pub mod logger;
pub mod network;
pub mod scheduler;
pub mod state;
pub mod storage;

pub use consensus::{Bootstrap, RaftConfig, RaftError, RaftHandle, RaftStatus, Transport};
pub use state::{Object, Op, Outcome, Proposal, StateMachine, Store};
