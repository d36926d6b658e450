//! The real engine: [`Containers`] and [`Networks`] on this host, by delegation only.

use super::{Engine, NetworkEngine, NetworkSummary, Result};
use crate::containers::{Containers, CreateOptions};
use crate::events::EventBus;
use crate::network::{CreateNetwork, Networks};
use skiff_controller::orchestrator::overlay::{OverlayNetwork, OverlayView};
use skiff_runtime::container::ContainerState;
use skiff_runtime::network::Proto;
use skiff_runtime::shim::frame::{read_frame, Frame};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

/// On the `Arc`: creating, starting, stopping and removing need the shared handle.
#[tonic::async_trait]
impl Engine for Arc<Containers> {
    async fn create(
        &self,
        name: Option<String>,
        config: skiff_proto::engine::ContainerConfig,
    ) -> Result<String> {
        let entrypoint_set = config.entrypoint_set;
        let config = crate::request::to_config(config)?;
        let opts = CreateOptions {
            name,
            config,
            entrypoint_set,
        };
        Containers::create(self, opts).await.map(|(id, _)| id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        Containers::start(self, id).await
    }

    async fn stop(&self, id: &str, grace_secs: Option<u32>) -> Result<()> {
        Containers::stop(self, id, grace_secs).await
    }

    async fn remove(&self, id: &str, force: bool) -> Result<()> {
        Containers::remove(self, id, force).await
    }

    async fn exec(&self, id: &str, args: Vec<String>) -> Result<i32> {
        let spec = skiff_runtime::shim::exec::ExecSpec {
            args,
            ..Default::default()
        };
        let (mut conn, _) = Containers::exec(self, id, spec, false).await?;
        while let Some(f) = read_frame(&mut conn).await? {
            if let Frame::Exit { code, .. } = f {
                return Ok(code);
            }
        }
        Err(crate::error::AgentError::Internal(
            "exec ended without an exit code".into(),
        ))
    }

    fn state(&self, id: &str) -> Option<ContainerState> {
        self.get(id).ok().map(|e| e.state())
    }

    fn labelled(&self, key: &str) -> Vec<(String, String)> {
        self.list()
            .into_iter()
            .filter_map(|e| {
                let value = e.record().config.labels.get(key).cloned()?;
                Some((value, e.id.clone()))
            })
            .collect()
    }

    fn events(&self) -> &EventBus {
        &self.events
    }

    fn task_state_changed(&self, state: &'static str) {
        self.metrics.task_state(state);
    }

    fn root(&self) -> &Path {
        &self.cfg.root
    }

    fn networks(&self) -> &dyn NetworkEngine {
        self.networks.as_ref()
    }
}

#[tonic::async_trait]
impl NetworkEngine for Networks {
    async fn resolve(&self, key: &str) -> Result<String> {
        Networks::resolve(self, key).await
    }

    async fn create(&self, req: CreateNetwork) -> Result<()> {
        Networks::create(self, req).await.map(|_| ())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        Networks::remove(self, key, &[]).await
    }

    async fn list(&self) -> Vec<NetworkSummary> {
        Networks::list(self)
            .await
            .into_iter()
            .map(|(n, eps, ..)| NetworkSummary {
                endpoints: eps.len(),
                id: n.id,
                name: n.name,
                labels: n.labels,
            })
            .collect()
    }

    async fn primary_ip(&self, container_id: &str) -> Option<Ipv4Addr> {
        Networks::primary_ip(self, container_id).await
    }

    async fn set_service_port(
        &self,
        service: &str,
        proto: Proto,
        port: u16,
        backends: Vec<(Ipv4Addr, u16)>,
    ) -> Result<()> {
        Networks::set_service_port(self, service, proto, port, backends).await
    }

    async fn retain_service_ports(&self, keep: &HashSet<String>) -> Result<()> {
        Networks::retain_service_ports(self, keep).await
    }

    async fn ensure_overlay(&self, o: &OverlayNetwork, node_id: &str) -> Result<()> {
        Networks::ensure_overlay(self, o, node_id, self.vxlan_port()).await
    }

    async fn sync_overlays(&self, view: &OverlayView, node_id: &str) -> Result<()> {
        Networks::sync_overlays(self, view, node_id).await
    }

    async fn prune_overlays(&self, keep: &HashSet<String>) -> Vec<String> {
        Networks::prune_overlays(self, keep).await
    }
}
