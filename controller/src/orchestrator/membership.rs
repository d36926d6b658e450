//! What the servers need of the node they run on: its current raft handle (which
//! changes on promotion, demotion and replacement), its identity and node state, the
//! log broker, and a channel to a manager. `cluster::Cluster` implements it; servers
//! hold an `Arc<dyn Membership>` so they never import the assembler that starts them.

use super::logbroker::LogBroker;
use crate::model::NodeState;
use crate::raft::RaftHandle;
use crate::tls::Identity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why no channel to a manager could be opened.
pub type ChannelError = Box<dyn std::error::Error + Send + Sync>;

/// A running cluster member, as the servers see it.
pub trait Membership: Send + Sync + 'static {
    /// This node's raft handle while it is a manager.
    fn raft(&self) -> Option<RaftHandle>;
    /// What this node remembers about itself (ID, role, known managers).
    fn node_state(&self) -> NodeState;
    /// This node's certificate, key and cluster CA.
    fn identity(&self) -> Identity;
    /// The cluster port's address once it listens.
    fn listen_addr(&self) -> Option<SocketAddr>;
    /// How long the node certificates this node signs are valid.
    fn cert_validity(&self) -> Duration;
    /// How often nodes send heartbeats.
    fn heartbeat_period(&self) -> Duration;
    /// Records a heartbeat from `node_id` (leader-side liveness).
    fn saw(&self, node_id: &str);
    /// A mutual-TLS channel to a manager (the leader when known, else any).
    fn manager_channel(&self) -> Result<tonic::transport::Channel, ChannelError>;
    /// `service logs` subscriptions and the nodes serving them.
    fn logs(&self) -> Arc<LogBroker>;
}
