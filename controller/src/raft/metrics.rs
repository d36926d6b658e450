//! The controller metrics counted as they happen (see `api::metrics` for their
//! registration and the on-scrape readings of the state). Here because the raft node
//! is their lowest writer; the reconciler counts scheduling delay into them too.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Counted as it happens; cheap to update (atomics).
#[derive(Debug)]
pub struct ControllerMetrics {
    /// From `RaftHandle::propose` to the outcome applied on this manager.
    pub proposal_duration: Histogram,
    /// From a task's creation to its placement on a node (leader's reconciler).
    pub scheduling_delay: Histogram,
    /// A new (non-empty) leader seen by this manager's raft node.
    pub leader_changes: Counter,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics {
            // 0.5 ms .. ~8 s: one fsync on a fast disk up to a request timeout.
            proposal_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            // 1 ms .. ~65 s: an immediate placement up to a task waiting for a node.
            scheduling_delay: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            leader_changes: Counter::default(),
        }
    }
}
