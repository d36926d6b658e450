//! The gRPC contract between Skiff processes: the only thing the CLI, the agent and the
//! controller share.
//!
//! - [`engine`]: the agent's local container-engine API (`skiff run`, `ps`, `images` ...).

/// The single-host engine API served by every agent on its unix socket.
pub mod engine {
    #![allow(clippy::all)]
    tonic::include_proto!("skiff.engine.v1");
}

/// The cluster API: raft between managers, joining and heartbeats over mutual TLS, and the
/// cluster state API (nodes, tokens, keyed objects) the CLI reaches on the unix socket.
pub mod cluster {
    #![allow(clippy::all)]
    tonic::include_proto!("skiff.cluster.v1");
}

/// Stacks, services and tasks: the orchestration API managers serve.
pub mod orchestrator {
    #![allow(clippy::all)]
    tonic::include_proto!("skiff.orchestrator.v1");
}

/// Images shared between nodes over the cluster port (see `images.proto`).
pub mod images {
    #![allow(clippy::all)]
    tonic::include_proto!("skiff.images.v1");
}
