//! Consensus: the raft node that applies committed entries to the store
//! ([`consensus`]), its durable log ([`storage`]), raft-rs's logging bridged into
//! `tracing` ([`logger`]), an in-process transport with fault injection for tests
//! ([`network`]), the counted controller metrics ([`metrics`]) and how raft's results
//! and errors travel over gRPC ([`wire`]), and the CPU priority of raft's threads
//! ([`priority`]).

pub mod consensus;
pub mod logger;
pub mod metrics;
pub mod network;
pub mod priority;
pub mod storage;
pub mod wire;

pub use consensus::{Bootstrap, RaftConfig, RaftError, RaftHandle, RaftStatus, Transport};
