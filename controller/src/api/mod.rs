//! The API servers: the cluster state API ([`cluster`], on the agent's socket), the
//! cluster port's `Raft` and `Membership` services ([`cluster_port`]), the stack and
//! service API ([`orchestrator`]), cluster events ([`events`]) and the Prometheus
//! readings ([`metrics`]). Each holds an `Arc<dyn Membership>` handed to it by whoever
//! starts it (`cluster::Cluster`).

pub mod cluster;
pub mod cluster_port;
pub mod events;
pub mod metrics;
pub mod orchestrator;
