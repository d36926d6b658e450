//! Counters the engine keeps as things happen (container start latency, image pulls,
//! task state changes): the engine core and the executor count, the metrics endpoint
//! ([`crate::metrics`]) reads them on each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// One label, as these families use them.
type Label = [(&'static str, &'static str); 1];

/// Counted as it happens.
#[derive(Debug)]
pub struct AgentMetrics {
    /// From `start` to the container running (shim spawned, process started).
    pub start_duration: Histogram,
    /// Registry pulls by `result` (`success`, `failure`).
    pub image_pulls: Family<Label, Counter>,
    /// Task states this node's executor recorded in the cluster, by new `state`.
    pub task_state_changes: Family<Label, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            // 5 ms .. ~40 s.
            start_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            image_pulls: Family::default(),
            task_state_changes: Family::default(),
        }
    }
}

impl AgentMetrics {
    pub fn pull_done(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.image_pulls.get_or_create(&[("result", result)]).inc();
    }

    pub fn task_state(&self, state: &'static str) {
        self.task_state_changes
            .get_or_create(&[("state", state)])
            .inc();
    }
}
