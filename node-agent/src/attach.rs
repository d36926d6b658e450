//! How a node's standalone containers join attachable overlay networks: a manager
//! records the attachment in its own state machine, a worker asks a manager's
//! dispatcher (over mutual TLS; the node is the one its certificate names).

use crate::network::ClusterNetworks;
use skiff_controller::consensus::RaftHandle;
use skiff_controller::orchestrator::attach::{self, Outcome};
use std::net::Ipv4Addr;
use std::sync::Arc;

pub struct LocalAttacher {
    pub raft: RaftHandle,
    pub node_id: String,
}

#[tonic::async_trait]
impl ClusterNetworks for LocalAttacher {
    async fn attach(
        &self,
        network: &str,
        container_id: &str,
        name: &str,
        check_only: bool,
    ) -> Result<Option<Option<Ipv4Addr>>, String> {
        match attach::attach(
            &self.raft,
            &self.node_id,
            network,
            container_id,
            name,
            check_only,
        )
        .await
        {
            Ok(Outcome::NotOverlay) => Ok(None),
            Ok(Outcome::Attached(ip)) => Ok(Some(ip)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn detach(&self, container_id: &str) -> Result<(), String> {
        attach::detach(&self.raft, container_id)
            .await
            .map_err(|e| e.to_string())
    }
}

pub struct RemoteAttacher {
    pub cluster: Arc<skiff_controller::cluster::Cluster>,
}

#[tonic::async_trait]
impl ClusterNetworks for RemoteAttacher {
    async fn attach(
        &self,
        network: &str,
        container_id: &str,
        name: &str,
        check_only: bool,
    ) -> Result<Option<Option<Ipv4Addr>>, String> {
        use skiff_proto::orchestrator::dispatcher_client::DispatcherClient;
        let ch = self.cluster.manager_channel().map_err(|e| e.to_string())?;
        let r = DispatcherClient::new(ch)
            .attach(skiff_proto::orchestrator::AttachRequest {
                network: network.into(),
                container_id: container_id.into(),
                name: name.into(),
                check_only,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if !r.overlay {
            return Ok(None);
        }
        Ok(Some(r.ip.parse().ok()))
    }

    async fn detach(&self, container_id: &str) -> Result<(), String> {
        use skiff_proto::orchestrator::dispatcher_client::DispatcherClient;
        let ch = self.cluster.manager_channel().map_err(|e| e.to_string())?;
        DispatcherClient::new(ch)
            .detach(skiff_proto::orchestrator::DetachRequest {
                container_id: container_id.into(),
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }
}
