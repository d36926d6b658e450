//! Standalone containers on attachable overlay networks (`run --network NAME`): each is
//! an `attachment` object (named by the container ID) whose address the leader
//! allocates like a task's, so two nodes never hand out the same one, and whose node
//! takes part in the network from then on.

use super::overlay::{overlay_networks, OverlayError};
use crate::model::{new_id, Op, Proposal};
use crate::raft::consensus::RaftHandle;
use crate::store::StateMachine;
use crate::store::Stored;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub use crate::model::overlay::{Attachment, KIND_ATTACHMENT};

/// Every stored attachment.
pub fn list(sm: &StateMachine) -> Vec<Stored<Attachment>> {
    crate::store::decode(sm, KIND_ATTACHMENT)
}

/// What [`attach`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a cluster network: the node resolves it locally.
    NotOverlay,
    /// The container's address (only checked, with `check_only`).
    Attached(Option<Ipv4Addr>),
}

/// Why an attachment failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Network(#[from] OverlayError),
    #[error("network {0} is not manually attachable (create it with --attachable)")]
    NotAttachable(String),
    #[error("no address allocated on {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}")]
    Raft(#[from] crate::raft::consensus::RaftError),
}

/// Records `container_id` on `network` for `node` and waits for its address. With
/// `check_only`, only says whether the network can take the container.
pub async fn attach(
    h: &RaftHandle,
    node: &str,
    network: &str,
    container_id: &str,
    name: &str,
    check_only: bool,
) -> Result<Outcome, AttachError> {
    // `Err(done)`: answered from the state alone.
    let existing = h.store().read(|sm| {
        let Some(net) = overlay_networks(sm)
            .into_iter()
            .find(|n| n.value.name == network || (network.len() >= 6 && n.id.starts_with(network)))
        else {
            return Err(Ok(Outcome::NotOverlay));
        };
        if !net.value.attachable {
            return Err(Err(AttachError::NotAttachable(net.value.name)));
        }
        if check_only {
            return Err(Ok(Outcome::Attached(None)));
        }
        Ok(list(sm)
            .into_iter()
            .find(|a| a.value.container_id == container_id && a.value.network == net.value.name)
            .map(|a| a.value)
            .ok_or(net.value.name))
    });
    let existing = match existing {
        Ok(existing) => existing,
        Err(done) => return done,
    };
    let network = match existing {
        Ok(a) if a.ip.is_some() => return Ok(Outcome::Attached(a.ip)),
        Ok(a) => a.network,
        Err(net_name) => {
            let spec = Attachment {
                network: net_name.clone(),
                node_id: node.into(),
                container_id: container_id.into(),
                name: name.into(),
                ip: None,
            };
            h.propose(Proposal::new(vec![Op::Create {
                kind: KIND_ATTACHMENT.into(),
                id: new_id(),
                name: container_id.into(),
                spec: serde_json::to_vec(&spec).unwrap_or_default(),
            }]))
            .await?;
            net_name
        }
    };
    let limit = Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let ip = h.store().read(|sm| {
            list(sm)
                .into_iter()
                .find(|a| a.value.container_id == container_id)
                .and_then(|a| a.value.ip)
        });
        if ip.is_some() {
            return Ok(Outcome::Attached(ip));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(AttachError::Timeout(network, limit))
}

/// Forgets a container's attachments (no-op when it has none).
pub async fn detach(h: &RaftHandle, container_id: &str) -> Result<(), AttachError> {
    let ops: Vec<Op> = h.store().read(|sm| {
        list(sm)
            .into_iter()
            .filter(|a| a.value.container_id == container_id)
            .map(|a| Op::Delete {
                kind: KIND_ATTACHMENT.into(),
                id: a.id,
                expected_version: 0,
            })
            .collect()
    });
    if !ops.is_empty() {
        h.propose(Proposal::new(ops)).await?;
    }
    Ok(())
}
