//! Controller metrics for Prometheus (`metrics_addr` on the agent).
//!
//! Two kinds: what must be counted as it happens ([`ControllerMetrics`]: proposal
//! latency, scheduling delay, leader changes; one instance per process, shared by
//! every raft node the process runs across promotions), and what is a point-in-time
//! reading of the state ([`ControllerCollector`]: raft term and indexes, leadership,
//! tasks by state, nodes by status), computed on each scrape and never in a loop.

use crate::model::{TaskState, KIND_TASK};
use crate::orchestrator::membership::Membership;
pub use crate::raft::metrics::ControllerMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;

impl ControllerMetrics {
    /// Registers the counted metrics and the on-scrape collector for `cluster`.
    pub fn register(self: &Arc<Self>, cluster: Arc<dyn Membership>, reg: &mut Registry) {
        reg.register_with_unit(
            "skiff_raft_proposal_duration",
            "Time from proposing a change to it being applied on this manager",
            Unit::Seconds,
            self.proposal_duration.clone(),
        );
        reg.register_with_unit(
            "skiff_scheduling_delay",
            "Time from a task's creation to its assignment to a node",
            Unit::Seconds,
            self.scheduling_delay.clone(),
        );
        reg.register(
            "skiff_raft_leader_changes_seen",
            "Times this manager saw a new raft leader",
            self.leader_changes.clone(),
        );
        reg.register_collector(Box::new(ControllerCollector { cluster }));
    }
}

/// Reads raft status and the replicated state at scrape time (managers only; a worker
/// exposes none of these).
pub struct ControllerCollector {
    cluster: Arc<dyn Membership>,
}

impl std::fmt::Debug for ControllerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerCollector")
            .finish_non_exhaustive()
    }
}

/// What one scrape reports; built apart from the encoding so it can be tested.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub is_leader: bool,
    pub tasks: BTreeMap<&'static str, u64>,
    pub nodes: BTreeMap<&'static str, u64>,
}

/// Only the part of a task the gauge needs (decoding the whole template is wasted work).
#[derive(serde::Deserialize)]
struct TaskStatusOnly {
    status: StateOnly,
}

#[derive(serde::Deserialize)]
struct StateOnly {
    state: TaskState,
}

/// Reads a manager's view: `None` on a worker.
pub fn snapshot(cluster: &dyn Membership) -> Option<Snapshot> {
    let h = cluster.raft().filter(|h| !h.is_stopped())?;
    let st = h.status();
    // Copy the task specs out under the read lock; decode after releasing it so a
    // scrape never holds up the apply loop for long.
    let (specs, nodes) = h.store().read(|sm| {
        let specs: Vec<Vec<u8>> = sm.list(KIND_TASK).into_iter().map(|o| o.spec).collect();
        let mut nodes: BTreeMap<&'static str, u64> = BTreeMap::new();
        for s in ["ready", "down", "unknown"] {
            nodes.insert(s, 0);
        }
        for n in sm.nodes() {
            *nodes.entry(n.status.as_str()).or_default() += 1;
        }
        (specs, nodes)
    });
    Some(Snapshot {
        term: st.term,
        commit: st.commit,
        applied: st.applied,
        is_leader: st.is_leader,
        tasks: count_tasks(&specs),
        nodes,
    })
}

/// Tasks by state, every state present (zeros included) so series do not vanish.
pub fn count_tasks(specs: &[Vec<u8>]) -> BTreeMap<&'static str, u64> {
    let mut out: BTreeMap<&'static str, u64> =
        TaskState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for spec in specs {
        if let Ok(t) = serde_json::from_slice::<TaskStatusOnly>(spec) {
            *out.entry(t.status.state.as_str()).or_default() += 1;
        }
    }
    out
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl prometheus_client::encoding::EncodeGaugeValue + Copy + Send + Sync + std::fmt::Debug,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// Writes a snapshot as OpenMetrics/Prometheus families.
pub fn encode_snapshot(s: &Snapshot, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    gauge(
        &mut enc,
        "skiff_raft_term",
        "Current raft term",
        s.term as i64,
    )?;
    gauge(
        &mut enc,
        "skiff_raft_commit_index",
        "Highest raft log index known to be committed",
        s.commit as i64,
    )?;
    gauge(
        &mut enc,
        "skiff_raft_applied_index",
        "Highest raft log index applied to this manager's state machine",
        s.applied as i64,
    )?;
    gauge(
        &mut enc,
        "skiff_raft_is_leader",
        "1 if this manager is the raft leader",
        i64::from(s.is_leader),
    )?;
    let family = |enc: &mut DescriptorEncoder,
                  name: &str,
                  help: &str,
                  label: &str,
                  values: &BTreeMap<&'static str, u64>|
     -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
        for (k, v) in values {
            let labels = [(label, *k)];
            let fam = m.encode_family(&labels)?;
            ConstGauge::new(*v as i64).encode(fam)?;
        }
        Ok(())
    };
    family(
        &mut enc,
        "skiff_tasks",
        "Tasks in the cluster by state",
        "state",
        &s.tasks,
    )?;
    family(
        &mut enc,
        "skiff_nodes",
        "Nodes in the cluster by status",
        "status",
        &s.nodes,
    )?;
    Ok(())
}

impl Collector for ControllerCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match snapshot(&*self.cluster) {
            Some(s) => encode_snapshot(&s, enc),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Snapshot);

    impl Collector for Fixed {
        fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_snapshot(&self.0, enc)
        }
    }

    #[test]
    fn tasks_are_counted_by_state_with_zeros() {
        let specs = vec![
            br#"{"status":{"state":"running"},"slot":1}"#.to_vec(),
            br#"{"status":{"state":"running"}}"#.to_vec(),
            br#"{"status":{"state":"failed"}}"#.to_vec(),
            b"not json".to_vec(),
        ];
        let c = count_tasks(&specs);
        assert_eq!(c["running"], 2);
        assert_eq!(c["failed"], 1);
        assert_eq!(c["pending"], 0);
        assert_eq!(c.len(), TaskState::ALL.len());
    }

    #[test]
    fn exposition() {
        let m = Arc::new(ControllerMetrics::default());
        m.proposal_duration.observe(0.003);
        m.leader_changes.inc();
        let mut reg = Registry::default();
        reg.register_with_unit(
            "skiff_raft_proposal_duration",
            "h",
            Unit::Seconds,
            m.proposal_duration.clone(),
        );
        reg.register(
            "skiff_raft_leader_changes_seen",
            "h",
            m.leader_changes.clone(),
        );
        let mut snap = Snapshot {
            term: 7,
            commit: 42,
            applied: 41,
            is_leader: true,
            tasks: count_tasks(&[br#"{"status":{"state":"running"}}"#.to_vec()]),
            ..Default::default()
        };
        snap.nodes.insert("ready", 2);
        reg.register_collector(Box::new(Fixed(snap)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        for want in [
            "# TYPE skiff_raft_proposal_duration_seconds histogram",
            "skiff_raft_proposal_duration_seconds_count 1",
            "skiff_raft_proposal_duration_seconds_bucket{le=\"0.004\"} 1",
            "skiff_raft_leader_changes_seen_total 1",
            "skiff_raft_term 7",
            "skiff_raft_commit_index 42",
            "skiff_raft_applied_index 41",
            "skiff_raft_is_leader 1",
            "skiff_tasks{state=\"running\"} 1",
            "skiff_tasks{state=\"pending\"} 0",
            "skiff_nodes{status=\"ready\"} 2",
            "# EOF",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }
}
