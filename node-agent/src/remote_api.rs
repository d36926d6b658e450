//! The Engine API for remote CLIs (`skiff --host tcp://HOST:PORT`): the same gRPC services
//! as the unix socket (engine, cluster, orchestrator), on a TCP port of its own
//! (`--api-listen-addr`, Docker's 2376) that only speaks mutual TLS. The handshake
//! refuses anything but a client certificate of this cluster's CA
//! (`skiff cluster client-cert`): no certificate, another cluster's, or a node's.
//! It is kept apart from the cluster port because that port must let certificate-less
//! peers in (to fetch the CA and join) and serves node-only RPCs; here nothing gets in
//! without a client certificate, and a client certificate gets nothing on the cluster
//! port (it carries no node identity there).

use skiff_controller::api::orchestrator::OrchestratorApi;
use skiff_controller::cluster::api::ClusterApi;
use skiff_controller::cluster::Cluster;
use skiff_controller::tls::{self, PeerIdentity};
use skiff_proto::cluster::cluster_server::ClusterServer;
use skiff_proto::engine::engine_server::{Engine, EngineServer};
use skiff_proto::orchestrator::orchestrator_server::OrchestratorServer;
use std::net::SocketAddr;
use std::sync::Arc;

/// Binds `addr` and serves the agent's services to TLS clients in the background.
/// Returns the bound address. Generic over the Engine service so this listener does not
/// depend on the unix-socket front end that implements it.
pub async fn serve<E: Engine>(
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    engine: EngineServer<E>,
    cluster_api: Option<ClusterServer<ClusterApi>>,
    orchestrator_api: Option<OrchestratorServer<OrchestratorApi>>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let id_source = cluster.clone();
    let incoming = tls::api_incoming(listener, Arc::new(move || id_source.identity()));
    tracing::info!(addr = %local, "Engine API listening (mutual TLS, client certificates only)");
    tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(check_client(cluster)))
            .add_service(engine)
            .add_optional_service(cluster_api)
            .add_optional_service(orchestrator_api)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "Engine API port stopped");
        }
    });
    Ok(local)
}

/// Every request on the TLS port: refuses a revoked client certificate (also on a
/// connection opened before the revocation), then logs who calls.
fn check_client(
    cluster: Arc<Cluster>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let peer = req.extensions().get::<PeerIdentity>();
        let (Some(name), Some(serial)) = (
            peer.and_then(|p| p.client.as_deref()),
            peer.and_then(|p| p.client_serial.as_deref()),
        ) else {
            // Unreachable with the handshake's verifier; refuse rather than trust it blindly.
            return Err(tonic::Status::unauthenticated(
                "a client certificate of this cluster is required (skiff cluster client-cert)",
            ));
        };
        if let Err(why) = cluster.client_allowed(serial) {
            tracing::warn!(client = name, serial, addr = ?peer.and_then(|p| p.addr), "refused a remote API call: {why}");
            return Err(tonic::Status::permission_denied(why));
        }
        tracing::debug!(client = name, addr = ?peer.and_then(|p| p.addr), "remote API call");
        Ok(req)
    }
}
