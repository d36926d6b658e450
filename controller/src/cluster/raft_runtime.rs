//! The runtime that carries raft traffic between managers: the transport's sender and
//! forwarder tasks (and their connections), and the cluster-port connections of other
//! managers. It has a thread of its own, so a burst of worker traffic on the process's
//! runtime (hundreds of status reports, assignment streams and reconnects) cannot hold
//! a heartbeat between managers past the election timeout; that starved leaders into
//! stepping down during large deploys.
//!
//! One per process, started on first use: only managers need it, and a process that
//! simulates many workers must not start one thread per node.

use std::sync::OnceLock;

static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// Where raft network tasks run: the dedicated runtime, or `None` if it could not be
/// started (logged once; the caller then uses the process's runtime, as before).
pub fn handle() -> Option<tokio::runtime::Handle> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft-net")
            .on_thread_start(crate::raft::priority::raise_current_thread)
            .enable_all()
            .build()
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot start the raft network runtime; raft shares the process runtime");
            })
            .ok()
    });
    rt.as_ref().map(|rt| rt.handle().clone())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn tasks_run_on_a_thread_of_their_own() {
        let name = super::handle()
            .expect("runtime started")
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("task ran");
        assert_eq!(name.as_deref(), Some("raft-net"));
    }
}
