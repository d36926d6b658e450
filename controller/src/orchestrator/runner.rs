//! The reconcile loop: on the leader only, after every applied change and on a tick
//! (timers: restart delays, update delays), read the state, reconcile, and propose the
//! resulting operations as one batch.

use super::reconcile::{reconcile, Stored, World};
use super::types::*;
use crate::consensus::RaftHandle;
use crate::state::{new_id, Node, Proposal, StateMachine};
use std::time::Duration;
use tracing::Instrument;

/// Reads services, tasks and nodes out of the state machine.
pub fn read_world(sm: &StateMachine) -> (Vec<Stored<Service>>, Vec<Stored<Task>>, Vec<Node>) {
    (
        decode(sm, KIND_SERVICE),
        decode(sm, KIND_TASK),
        sm.nodes().cloned().collect(),
    )
}

/// The objects of `kind` whose specs decode as `T` (others are skipped).
fn decode<T: serde::de::DeserializeOwned>(sm: &StateMachine, kind: &str) -> Vec<Stored<T>> {
    sm.list(kind)
        .into_iter()
        .filter_map(|o| {
            serde_json::from_slice(&o.spec).ok().map(|value| Stored {
                id: o.id,
                version: o.version,
                value,
            })
        })
        .collect()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs one pass if this node leads; returns how many operations were proposed.
pub async fn pass(h: &RaftHandle) -> usize {
    if !h.status().is_leader {
        return 0;
    }
    let ops = {
        let sm = h.state().read().unwrap_or_else(|p| p.into_inner());
        let (services, tasks, nodes) = read_world(&sm);
        reconcile(
            &World {
                services: &services,
                tasks: &tasks,
                nodes: &nodes,
                now_ms: now_ms(),
            },
            new_id,
        )
    };
    let n = ops.len();
    if n > 0 {
        if let Err(e) = h.propose(Proposal::new(ops)).await {
            // A task changed under us (an agent reported status): the next pass sees it.
            tracing::debug!(error = %e, "reconcile proposal rejected; retrying on the next pass");
        }
    }
    n
}

/// Spawns the loop; it ends when the raft node stops.
pub fn spawn(h: RaftHandle) {
    tokio::spawn(
        async move {
            let mut events = h
                .state()
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .subscribe();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                if h.is_stopped() {
                    return;
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    r = events.recv() => {
                        if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            return;
                        }
                        // Coalesce a burst of changes into one pass.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        while events.try_recv().is_ok() {}
                    }
                }
                pass(&h).await;
            }
        }
        .instrument(tracing::info_span!("reconciler")),
    );
}
