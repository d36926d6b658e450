//! Structured reads from an agent over its unix socket (the same gRPC API the CLI uses).
//! Writes go through the CLI instead (see `workload`), so the clients exercise what a user
//! runs. Every call is bounded: a paused agent must not wedge the checker.

use crate::ChaosError;
use hyper_util::rt::TokioIo;
use skiff_proto::cluster::cluster_client::ClusterClient;
use skiff_proto::cluster::{Empty as ClusterEmpty, ListRequest};
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::{ContainerSummary, ListRequest as ContainerListRequest, NameRequest};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one read may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);

async fn bounded<T, F>(what: &str, sock: &Path, f: F) -> Result<T, ChaosError>
where
    F: Future<Output = Result<T, tonic::Status>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(s)) => Err(ChaosError::Api {
            what: what.into(),
            sock: sock.into(),
            message: s.message().to_string(),
        }),
        Err(_) => Err(ChaosError::Api {
            what: what.into(),
            sock: sock.into(),
            message: format!("no answer within {CALL_TIMEOUT:?}"),
        }),
    }
}

/// A channel to the agent listening on `sock`.
pub async fn channel(sock: &Path) -> Result<Channel, ChaosError> {
    let p: PathBuf = sock.into();
    let endpoint =
        Endpoint::from_static("http://skiff.local").connect_timeout(Duration::from_secs(3));
    let connect =
        endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }));
    match tokio::time::timeout(Duration::from_secs(4), connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(ChaosError::Api {
            what: "connect".into(),
            sock: sock.into(),
            message: e.to_string(),
        }),
        Err(_) => Err(ChaosError::Api {
            what: "connect".into(),
            sock: sock.into(),
            message: "timed out".into(),
        }),
    }
}

/// One object of the replicated store, its spec parsed as JSON.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: String,
    pub name: String,
    pub spec: serde_json::Value,
}

/// Objects of `kind` as this manager sees them (linearizable: the manager reads after a
/// raft ReadIndex barrier).
pub async fn list(sock: &Path, kind: &str) -> Result<Vec<Object>, ChaosError> {
    let mut c = ClusterClient::new(channel(sock).await?).max_decoding_message_size(256 << 20);
    let r = bounded(
        "list",
        sock,
        c.list(ListRequest {
            kind: kind.to_string(),
        }),
    )
    .await?
    .into_inner();
    Ok(r.objects
        .into_iter()
        .map(|o| Object {
            id: o.id,
            name: o.name,
            spec: serde_json::from_slice(&o.spec).unwrap_or(serde_json::Value::Null),
        })
        .collect())
}

/// `(applied index, SHA-256 of the whole state machine)` of this manager's replica.
pub async fn state_hash(sock: &Path) -> Result<(u64, String), ChaosError> {
    let mut c = ClusterClient::new(channel(sock).await?);
    let r = bounded("state hash", sock, c.state_hash(ClusterEmpty {}))
        .await?
        .into_inner();
    Ok((r.index, r.hash))
}

/// The leader's node ID as this manager sees it ("" when none is known).
pub async fn leader(sock: &Path) -> Result<String, ChaosError> {
    let mut c = ClusterClient::new(channel(sock).await?);
    let r = bounded("cluster info", sock, c.info(ClusterEmpty {}))
        .await?
        .into_inner();
    Ok(r.leader_id)
}

/// This node's own ID.
pub async fn node_id(sock: &Path) -> Result<String, ChaosError> {
    let mut c = ClusterClient::new(channel(sock).await?);
    let r = bounded("cluster info", sock, c.info(ClusterEmpty {}))
        .await?
        .into_inner();
    Ok(r.node_id)
}

/// `(node ID, hostname, status)` of every node.
pub async fn nodes(sock: &Path) -> Result<Vec<(String, String, String)>, ChaosError> {
    let mut c = ClusterClient::new(channel(sock).await?);
    let r = bounded("node ls", sock, c.node_list(ClusterEmpty {}))
        .await?
        .into_inner();
    Ok(r.nodes
        .into_iter()
        .map(|n| (n.id, n.hostname, n.status))
        .collect())
}

/// Every container of this node's engine, running or not.
pub async fn containers(sock: &Path) -> Result<Vec<ContainerSummary>, ChaosError> {
    let mut c = EngineClient::new(channel(sock).await?).max_decoding_message_size(64 << 20);
    let r = bounded(
        "ps -a",
        sock,
        c.container_list(ContainerListRequest {
            all: true,
            filters: vec![],
        }),
    )
    .await?
    .into_inner();
    Ok(r.containers)
}

/// `skiff inspect ID` as JSON.
pub async fn inspect(sock: &Path, id: &str) -> Result<serde_json::Value, ChaosError> {
    let mut c = EngineClient::new(channel(sock).await?);
    let r = bounded(
        "inspect",
        sock,
        c.container_inspect(NameRequest { id: id.into() }),
    )
    .await?
    .into_inner();
    let v: serde_json::Value = serde_json::from_str(&r.json).unwrap_or(serde_json::Value::Null);
    // Docker's inspect is a one-element array; accept either shape.
    Ok(match v {
        serde_json::Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    })
}
