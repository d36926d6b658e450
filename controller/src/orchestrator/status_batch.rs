//! Task status reports from workers, committed in batches: reports that arrive within
//! [`WINDOW`] of each other (at most [`MAX_BATCH`]) go to raft together and land in one
//! log entry, instead of an entry each. A deploy of thousands of tasks reports each a
//! few times within seconds; an entry per report meant as many applies, store changes
//! (each waking every assignment stream) and fsyncs. As Swarm's dispatcher does.
//!
//! Each report stays its own proposal inside the entry, checked on its own against the
//! state: a stale or refused report fails alone, never its neighbours. Each caller is
//! answered with its own outcome, and only once its update is committed (or failed).
//! Two reports of one task never share a batch: the later waits for the next one, so
//! it is checked against the state the earlier left (as if they had come one by one).

use super::dispatcher::{prepare_status, StatusError};
use crate::model::{TaskStatus, KIND_TASK};
use crate::raft::consensus::{RaftError, RaftHandle};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long the first report of a batch waits for others.
pub const WINDOW: Duration = Duration::from_millis(50);
/// Reports per batch at most.
pub const MAX_BATCH: usize = 1000;
/// Reports queued beyond the batch being committed; more wait to be queued.
const QUEUE: usize = 8192;

struct Report {
    node: String,
    task_id: String,
    version: u64,
    status: TaskStatus,
    arrived: Instant,
    reply: oneshot::Sender<Result<(), StatusError>>,
}

/// The batching front of one raft node's status writes. Dropping it (all clones) ends
/// its task once the queued reports are committed.
#[derive(Clone)]
pub struct StatusBatcher {
    raft_id: u64,
    tx: mpsc::Sender<Report>,
}

impl StatusBatcher {
    /// Starts the batching task on the current runtime.
    pub fn start(h: RaftHandle) -> StatusBatcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        let raft_id = h.id();
        tokio::spawn(run(h, rx));
        StatusBatcher { raft_id, tx }
    }

    /// The raft node this batcher writes through.
    pub fn raft_id(&self) -> u64 {
        self.raft_id
    }

    /// Whether its task has ended (the runtime it ran on shut down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Records a status `node` reports for one of its tasks, under the rules of
    /// [`super::dispatcher::apply_status`]; returns once it is committed or refused.
    pub async fn record(
        &self,
        node: &str,
        task_id: &str,
        version: u64,
        status: TaskStatus,
    ) -> Result<(), StatusError> {
        let (reply, rx) = oneshot::channel();
        let report = Report {
            node: node.into(),
            task_id: task_id.into(),
            version,
            status,
            arrived: Instant::now(),
            reply,
        };
        self.tx
            .send(report)
            .await
            .map_err(|_| StatusError::Raft(RaftError::Stopped))?;
        rx.await
            .unwrap_or(Err(StatusError::Raft(RaftError::Stopped)))
    }
}

async fn run(h: RaftHandle, mut rx: mpsc::Receiver<Report>) {
    let mut pending: VecDeque<Report> = VecDeque::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(r) => pending.push_back(r),
                None => return,
            }
        }
        // Until the oldest report has waited its window or a batch is full; reports
        // queued while the previous batch committed have waited already and go at once.
        let until = pending
            .front()
            .map_or_else(Instant::now, |r| r.arrived + WINDOW);
        while open && pending.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => pending.push_back(r),
                Ok(None) => open = false,
                Err(_) => break,
            }
        }
        // Whatever is queued already joins too, even past the window (a busy runtime may
        // have let it pass with reports waiting).
        while open && pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => pending.push_back(r),
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        let batch = take_batch(&mut pending);
        commit(&h, batch).await;
    }
}

/// Up to [`MAX_BATCH`] reports from the front, one per task; a task's later reports stay
/// queued, in order, for a later batch.
fn take_batch(pending: &mut VecDeque<Report>) -> Vec<Report> {
    let mut batch = Vec::new();
    let mut tasks = HashSet::new();
    let mut later = VecDeque::new();
    while batch.len() < MAX_BATCH {
        let Some(r) = pending.pop_front() else { break };
        if tasks.insert(r.task_id.clone()) {
            batch.push(r);
        } else {
            later.push_back(r);
        }
    }
    later.append(pending);
    *pending = later;
    batch
}

/// Checks every report against the state and proposes the valid ones together (one
/// message to the raft node, so one entry); answers each caller with its own outcome.
async fn commit(h: &RaftHandle, batch: Vec<Report>) {
    // The task objects are copied under the store's lock, decoded and checked outside it.
    let stored: Vec<_> = h.store().read(|sm| {
        batch
            .iter()
            .map(|r| sm.get(KIND_TASK, &r.task_id).cloned())
            .collect()
    });
    let (replies, proposals): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .zip(stored)
        .filter_map(|(r, o)| {
            match prepare_status(o.as_ref(), &r.node, &r.task_id, r.version, r.status) {
                Ok(p) => Some((r.reply, p)),
                Err(e) => {
                    let _ = r.reply.send(Err(e));
                    None
                }
            }
        })
        .unzip();
    for (reply, res) in replies.into_iter().zip(h.propose_all(proposals).await) {
        let _ = reply.send(res.map(|_| ()).map_err(StatusError::from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Op, Proposal, Task, TaskState};
    use crate::raft::consensus::{start, Bootstrap, RaftConfig};

    /// A one-manager cluster (its own leader) holding `n` tasks of node `n1`.
    async fn leader_with_tasks(dir: &std::path::Path, n: usize) -> (RaftHandle, Vec<String>) {
        let mut cfg = RaftConfig::new(1, dir.to_path_buf());
        cfg.tick = Duration::from_millis(20);
        let net = crate::raft::network::Network::default();
        let h = start(cfg, Bootstrap::New(Box::default()), net.endpoint()).expect("raft");
        net.attach(1, h.clone());
        h.campaign();
        let mut st = h.watch_status();
        tokio::time::timeout(Duration::from_secs(5), st.wait_for(|s| s.is_leader))
            .await
            .expect("leads in time")
            .expect("running");
        let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let task = Task {
            node_id: "n1".into(),
            ..Default::default()
        };
        let spec = serde_json::to_vec(&task).expect("encodes");
        let ops = ids
            .iter()
            .map(|id| Op::Create {
                kind: KIND_TASK.into(),
                id: id.clone(),
                name: id.clone(),
                spec: spec.clone(),
            })
            .collect();
        h.propose(Proposal::new(ops)).await.expect("tasks created");
        (h, ids)
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus {
            state,
            ..Default::default()
        }
    }

    fn state_of(h: &RaftHandle, id: &str) -> Option<TaskState> {
        h.store().read(|sm| {
            sm.get(KIND_TASK, id)
                .and_then(|o| serde_json::from_slice::<Task>(&o.spec).ok())
                .map(|t| t.status.state)
        })
    }

    // One thread: every caller has queued its report before the batcher looks again, so
    // the count below does not depend on how loaded the machine is.
    #[tokio::test]
    async fn concurrent_reports_share_one_entry_and_each_is_answered_once_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, ids) = leader_with_tasks(dir.path(), 300).await;
        let b = StatusBatcher::start(h.clone());
        // The state machine's own index: the published status may lag behind answers.
        let applied = |h: &RaftHandle| h.store().read(crate::store::StateMachine::applied);
        let before = applied(&h);
        let calls = ids.iter().map(|id| {
            let (b, h, id) = (b.clone(), h.clone(), id.clone());
            tokio::spawn(async move {
                b.record("n1", &id, 0, status(TaskState::Running))
                    .await
                    .expect("recorded");
                // Answered only once committed: this manager applied it already.
                assert_eq!(state_of(&h, &id), Some(TaskState::Running));
            })
        });
        for c in futures::future::join_all(calls).await {
            c.expect("caller task");
        }
        let entries = applied(&h) - before;
        assert_eq!(entries, 1, "300 reports took {entries} log entries");
        h.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_report_fails_alone_and_a_second_report_of_a_task_waits_for_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, ids) = leader_with_tasks(dir.path(), 3).await;
        let b = StatusBatcher::start(h.clone());
        let (ok, missing, foreign, stale, second) = tokio::join!(
            b.record("n1", &ids[0], 0, status(TaskState::Starting)),
            b.record("n1", "nope", 0, status(TaskState::Running)),
            b.record("n2", &ids[1], 0, status(TaskState::Running)),
            b.record("n1", &ids[2], 99, status(TaskState::Running)),
            b.record("n1", &ids[0], 0, status(TaskState::Running)),
        );
        ok.expect("valid report recorded");
        assert!(matches!(missing, Err(StatusError::NotFound(_))));
        assert!(matches!(foreign, Err(StatusError::NotAssigned { .. })));
        assert!(matches!(stale, Err(StatusError::Stale { .. })));
        // Batched alone, it was checked against the state the first one left.
        second.expect("second report of the task recorded");
        assert_eq!(state_of(&h, &ids[0]), Some(TaskState::Running));
        assert_eq!(state_of(&h, &ids[1]), Some(TaskState::default()));
        h.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_reaches_every_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, ids) = leader_with_tasks(dir.path(), 50).await;
        let b = StatusBatcher::start(h.clone());
        h.stop();
        let mut st = h.watch_status();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !h.is_stopped() {
                let _ = st.changed().await;
            }
        })
        .await;
        let results = futures::future::join_all(
            ids.iter()
                .map(|id| b.record("n1", id, 0, status(TaskState::Running))),
        )
        .await;
        assert_eq!(results.len(), 50);
        for r in results {
            assert!(matches!(r, Err(StatusError::Raft(_))), "got {r:?}");
        }
    }
}
