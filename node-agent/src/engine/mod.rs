//! The engine as the task executor (and a node simulator) drives it: the container and
//! network operations they need, as traits, so the executor can run against the real
//! [`Containers`](crate::containers::Containers) on a host or against
//! [`fake::FakeEngine`] in memory (unit tests without root, simulated nodes).
//!
//! Layering: this module sits above the engine core (`containers`, `network`, ...) and
//! below the front ends; the real implementation ([`local`]) only delegates.

pub mod fake;
mod local;

use crate::error::AgentError;
use crate::events::EventBus;
use crate::network::CreateNetwork;
use skiff_controller::orchestrator::overlay::{OverlayNetwork, OverlayView};
use skiff_runtime::container::ContainerState;
use skiff_runtime::network::Proto;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

pub type Result<T> = std::result::Result<T, AgentError>;

/// A network as a listing shows it: enough to decide whether to remove it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Containers attached to it.
    pub endpoints: usize,
}

/// Container operations: lifecycle, health-check execs, state and listings.
#[tonic::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Creates a container from a config as the API clients send it; returns its ID.
    async fn create(
        &self,
        name: Option<String>,
        config: skiff_proto::engine::ContainerConfig,
    ) -> Result<String>;
    async fn start(&self, id: &str) -> Result<()>;
    /// Stops with a grace period in seconds (`None`: the container's own stop timeout).
    async fn stop(&self, id: &str, grace_secs: Option<u32>) -> Result<()>;
    async fn remove(&self, id: &str, force: bool) -> Result<()>;
    /// Runs a command in a running container and returns its exit code once it ends.
    async fn exec(&self, id: &str, args: Vec<String>) -> Result<i32>;
    /// The lifecycle state of a container, `None` when there is no such container.
    fn state(&self, id: &str) -> Option<ContainerState>;
    /// Containers carrying the label `key`: (label value, container ID).
    fn labelled(&self, key: &str) -> Vec<(String, String)>;
    /// The event bus: notifications out (`subscribe`) and events in (`emit`).
    fn events(&self) -> &EventBus;
    /// Counts a task state change the executor recorded (the metrics endpoint shows it).
    fn task_state_changed(&self, state: &'static str);
    /// The agent's state directory (task secrets and configs live under it).
    fn root(&self) -> &Path;
    fn networks(&self) -> &dyn NetworkEngine;
}

/// Network operations: local networks, published service ports, overlays.
#[tonic::async_trait]
pub trait NetworkEngine: Send + Sync {
    /// The network ID for a name, ID or prefix.
    async fn resolve(&self, key: &str) -> Result<String>;
    async fn create(&self, req: CreateNetwork) -> Result<()>;
    /// Removes a network no container uses.
    async fn remove(&self, key: &str) -> Result<()>;
    async fn list(&self) -> Vec<NetworkSummary>;
    /// The first address of a running container (its primary network).
    async fn primary_ip(&self, container_id: &str) -> Option<Ipv4Addr>;
    /// Publishes a service port over these backends; an empty list unpublishes it.
    async fn set_service_port(
        &self,
        service: &str,
        proto: Proto,
        port: u16,
        backends: Vec<(Ipv4Addr, u16)>,
    ) -> Result<()>;
    /// Unpublishes every service port whose `service/proto/port` key is not in `keep`.
    async fn retain_service_ports(&self, keep: &HashSet<String>) -> Result<()>;
    /// Sets up this node's side of an overlay network.
    async fn ensure_overlay(&self, o: &OverlayNetwork, node_id: &str) -> Result<()>;
    /// Programs the overlays' data plane (forwarding entries, virtual IPs, names).
    async fn sync_overlays(&self, view: &OverlayView, node_id: &str) -> Result<()>;
    /// Removes overlays whose cluster ID is not in `keep`; returns the removed names.
    async fn prune_overlays(&self, keep: &HashSet<String>) -> Vec<String>;
}

/// Brings a task's image to this node when it lacks it (from a registry or a peer).
#[tonic::async_trait]
pub trait ImageFetch: Send + Sync {
    async fn ensure(&self, image: &str) -> std::result::Result<(), String>;
}
