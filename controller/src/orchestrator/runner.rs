//! The reconcile loop: on the leader only, after every applied change and on a tick
//! (timers: restart delays, update delays), read the state, reconcile, and propose the
//! resulting operations as one batch.

use super::reconcile::{reconcile, World};
pub use crate::model::now_ms;
use crate::model::*;
use crate::model::{new_id, Proposal};
use crate::raft::consensus::RaftHandle;
pub use crate::store::read_world;
use crate::store::Stored;
pub use crate::store::{decode, Decoded};
use std::time::Duration;
use tracing::Instrument;

/// Where overlay subnets come from, and which subnets the leader's host already routes.
#[derive(Clone, Debug)]
pub struct AllocConfig {
    pub pools: Vec<ipnet::Ipv4Net>,
    pub avoid: fn() -> Vec<ipnet::Ipv4Net>,
}

impl Default for AllocConfig {
    fn default() -> Self {
        Self {
            pools: super::netalloc::DEFAULT_POOL.parse().into_iter().collect(),
            avoid: Vec::new,
        }
    }
}

/// Proposes missing overlay allocations (networks and services together, each task on
/// its own so one lost race does not hold back the rest).
async fn allocate(h: &RaftHandle, cfg: &AllocConfig) -> usize {
    // Read under the lock, planned outside it (see `pass`).
    let w = h.store().world();
    let (networks, attachments) = h.store().read(|sm| {
        (
            super::overlay::overlay_networks(sm),
            super::attach::list(sm),
        )
    });
    let avoid = if networks.iter().any(|n| n.value.alloc.is_none()) {
        (cfg.avoid)()
    } else {
        Vec::new()
    };
    let plan = super::netalloc::allocate(&super::netalloc::Input {
        networks: &networks,
        services: &w.services,
        tasks: &w.tasks,
        attachments: &attachments,
        nodes: &w.nodes,
        pools: &cfg.pools,
        avoid: &avoid,
    });
    if plan.is_empty() {
        return 0;
    }
    let mut batches: Vec<Vec<crate::model::Op>> = Vec::new();
    let head: Vec<_> = plan.networks.into_iter().chain(plan.services).collect();
    if !head.is_empty() {
        batches.push(head);
    }
    batches.extend(
        plan.tasks
            .into_iter()
            .chain(plan.attachments)
            .map(|op| vec![op]),
    );
    let n = batches.iter().map(Vec::len).sum();
    let results =
        futures::future::join_all(batches.into_iter().map(|ops| h.propose(Proposal::new(ops))))
            .await;
    for e in results.into_iter().filter_map(Result::err) {
        tracing::debug!(error = %e, "allocation proposal rejected; retrying on the next pass");
    }
    n
}

/// The most operations one reconcile proposal carries.
const PASS_CHUNK: usize = 500;

/// Runs one pass if this node leads; returns how many operations were proposed.
pub async fn pass(h: &RaftHandle, alloc: &AllocConfig) -> usize {
    if !h.status().is_leader {
        return 0;
    }
    let now = now_ms();
    // The decoded world is an immutable snapshot: planning runs outside the store's lock
    // (a pass over thousands of tasks held it for up to a second, and raft's apply, which
    // needs the lock to write, waited that long, heartbeats and all).
    let w = h.store().world();
    let ops = reconcile(
        &World {
            services: &w.services,
            tasks: &w.tasks,
            nodes: &w.nodes,
            now_ms: now,
        },
        new_id,
    );
    let placed = placements(&w.tasks, &ops, now);
    let n = ops.len();
    if n > 0 {
        // In proposals of at most PASS_CHUNK operations: a deploy's first pass creates
        // every task, and one proposal of them all (30 MB for 20,000 tasks) was one log
        // entry that every manager applied in one go, its heartbeats waiting. Each
        // operation stands alone (a lost one is redone by the next pass).
        let mut chunks = Vec::new();
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            chunks.push(Proposal::new(ops.by_ref().take(PASS_CHUNK).collect()));
        }
        let results = futures::future::join_all(chunks.into_iter().map(|p| h.propose(p))).await;
        let mut rejected = 0;
        for e in results.into_iter().filter_map(Result::err) {
            // A task changed under us (an agent reported status): the next pass sees it.
            rejected += 1;
            tracing::debug!(error = %e, "reconcile proposal rejected; retrying on the next pass");
        }
        if rejected == 0 {
            for secs in placed {
                h.metrics().scheduling_delay.observe(secs);
            }
        }
        // Addresses for the tasks just made come on the pass their commit triggers.
        return n;
    }
    allocate(h, alloc).await
}

/// Seconds from creation to assignment of every task these ops place on a node (tasks
/// not assigned before), for the scheduling delay histogram.
fn placements(before: &[Stored<Task>], ops: &[crate::model::Op], now: i64) -> Vec<f64> {
    use crate::model::Op;
    let placed_before: std::collections::HashSet<&str> = before
        .iter()
        .filter(|t| t.value.status.state >= TaskState::Assigned)
        .map(|t| t.id.as_str())
        .collect();
    let was_placed = |id: &str| placed_before.contains(id);
    ops.iter()
        .filter_map(|op| match op {
            Op::Create { kind, id, spec, .. } | Op::Update { kind, id, spec, .. }
                if kind == KIND_TASK =>
            {
                let t: Task = serde_json::from_slice(spec).ok()?;
                (t.status.state == TaskState::Assigned && !was_placed(id))
                    .then(|| (now - t.created_at_ms).max(0) as f64 / 1000.0)
            }
            _ => None,
        })
        .collect()
}

/// Spawns the loop; it ends when the raft node stops.
pub fn spawn(h: RaftHandle, alloc: AllocConfig) {
    tokio::spawn(
        async move {
            let mut events = h.store().read(|sm| sm.subscribe());
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut passed_at = tokio::time::Instant::now();
            let mut took = Duration::ZERO;
            // The term whose leadership this node confirmed before its passes.
            let mut confirmed_term = 0;
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
                        // A burst of changes is coalesced into at most one pass per
                        // COALESCE, or per twice the last pass's length if that is
                        // longer (a pass is O(tasks): back to back, on a large cluster,
                        // they took the leader's whole CPU from its heartbeats and
                        // streams); the first change after a quiet spell gets one at
                        // once.
                        tokio::time::sleep_until(passed_at + super::COALESCE.max(took * 2)).await;
                        while events.try_recv().is_ok() {}
                    }
                }
                // A new leader may not have applied everything committed before its
                // term (another leader's creates among it): planning from that state
                // started a second task for slots that had one. Once per term, it
                // waits until it has applied all of it (a read barrier confirms its
                // leadership with a commit of its own term and waits for the apply).
                let st = h.status();
                if st.is_leader && confirmed_term != st.term {
                    if let Err(e) = h.read_barrier().await {
                        tracing::debug!(error = %e, "leadership not confirmed; no pass yet");
                        continue;
                    }
                    confirmed_term = st.term;
                }
                passed_at = tokio::time::Instant::now();
                pass(&h, &alloc).await;
                took = passed_at.elapsed();
            }
        }
        .instrument(tracing::info_span!("reconciler")),
    );
}

#[cfg(test)]
mod placement_metrics {
    use super::*;
    use crate::model::Op;

    fn task(state: TaskState, created_at_ms: i64) -> Task {
        Task {
            created_at_ms,
            status: TaskStatus {
                state,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn op(id: &str, t: &Task, create: bool) -> Op {
        let spec = serde_json::to_vec(t).expect("json");
        if create {
            Op::Create {
                kind: KIND_TASK.into(),
                id: id.into(),
                name: id.into(),
                spec,
            }
        } else {
            Op::Update {
                kind: KIND_TASK.into(),
                id: id.into(),
                spec,
                expected_version: 1,
            }
        }
    }

    #[test]
    fn only_new_placements_are_timed() {
        let before = vec![
            Stored {
                id: "pending".into(),
                version: 1,
                value: task(TaskState::Pending, 1_000),
            },
            Stored {
                id: "placed".into(),
                version: 1,
                value: task(TaskState::Assigned, 1_000),
            },
        ];
        let ops = vec![
            op("pending", &task(TaskState::Assigned, 1_000), false),
            // Already assigned: a rewrite (e.g. a status message) is not a placement.
            op("placed", &task(TaskState::Assigned, 1_000), false),
            // Created and placed in one pass.
            op("fresh", &task(TaskState::Assigned, 3_500), true),
            op("waits", &task(TaskState::Pending, 3_500), true),
        ];
        assert_eq!(placements(&before, &ops, 4_000), vec![3.0, 0.5]);
    }
}
