//! The gRPC contract between Skiff processes: the only thing the CLI, the agent and the
//! controller share.
//!
//! - [`engine`]: the agent's local container-engine API (`skiff run`, `ps`, `images` ...).

/// The single-host engine API served by every agent on its unix socket.
pub mod engine {
    #![allow(clippy::all)]
    tonic::include_proto!("skiff.engine.v1");
}
