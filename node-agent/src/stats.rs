//! `stats` and `update`: live usage from a container's cgroup, and live changes to its
//! limits. Samples are taken once a second per streamed container; CPU % is computed
//! from consecutive samples as Docker does.

use crate::containers::{Containers, Entry};
use crate::error::{AgentError, Result};
use skiff_proto::engine::StatsResponse;
use skiff_runtime::cgroup::stats::Sample;
use skiff_runtime::cgroup::{Cgroup, Resources};
use skiff_runtime::fsutil;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// Total host memory in bytes (caps "unlimited" memory limits, as Docker shows).
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The container's cgroup (same naming as the agent uses for `cgroupsPath`).
pub fn cgroup_of(containers: &Containers, id: &str) -> Cgroup {
    containers.cgroup(id)
}

fn sample(containers: &Containers, e: &Entry) -> Option<Sample> {
    sample_with(containers, e, host_memory())
}

/// One sample of a running container (`None` otherwise); `host_mem` is read once by
/// callers that sample many containers (the metrics endpoint).
pub(crate) fn sample_with(containers: &Containers, e: &Entry, host_mem: u64) -> Option<Sample> {
    let st = e.state();
    if !st.is_running() {
        return None;
    }
    Some(cgroup_of(containers, &e.id).sample(host_mem, st.pid, Path::new("/proc")))
}

fn response(e: &Entry, s: Option<&Sample>, prev: Option<&Sample>) -> StatsResponse {
    let mut r = StatsResponse {
        id: e.id.clone(),
        name: e.name(),
        ..Default::default()
    };
    if let Some(s) = s {
        r.running = true;
        r.cpu_percent = prev.map(|p| s.cpu_percent(p)).unwrap_or(0.0);
        r.mem_usage = s.mem_usage;
        r.mem_limit = s.mem_limit;
        r.mem_percent = s.mem_percent();
        r.net_rx = s.net_rx;
        r.net_tx = s.net_tx;
        r.blk_read = s.blk_read;
        r.blk_write = s.blk_write;
        r.pids = s.pids;
    }
    r
}

/// Streams stats for one container until the client goes away (or once, after two
/// samples half a second apart, when `stream` is false). A removed container ends
/// the stream.
pub fn stream(
    containers: Arc<Containers>,
    e: Arc<Entry>,
    stream: bool,
) -> mpsc::Receiver<std::result::Result<StatsResponse, Status>> {
    let (tx, rx) = mpsc::channel(4);
    let span = tracing::debug_span!("stats", container_id = %e.id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut prev = sample(&containers, &e);
            let first = if stream {
                Duration::from_millis(0)
            } else {
                Duration::from_millis(500)
            };
            tokio::time::sleep(first).await;
            loop {
                if containers.get(&e.id).is_err() {
                    return;
                }
                let cur = sample(&containers, &e);
                let r = response(
                    &e,
                    cur.as_ref(),
                    prev.as_ref().filter(|_| stream || cur.is_some()),
                );
                if tx.send(Ok(r)).await.is_err() || !stream {
                    return;
                }
                prev = cur;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                }
            }
        },
        span,
    ));
    rx
}

/// `skiff update`: merges the given limits into the container's record and, when it
/// runs, writes them to its cgroup. Fields left at zero keep their value.
pub async fn update(containers: &Containers, key: &str, delta: &Resources) -> Result<Vec<String>> {
    let e = containers.get(key)?;
    let _op = e.op.lock().await;
    let mut rec = e.record();
    let old = rec.config.resources.clone();
    let mut new = old.clone();
    if delta.memory != 0 {
        new.memory = delta.memory;
        if delta.memory_swap == 0 && old.memory_swap > 0 && old.memory_swap < delta.memory {
            return Err(AgentError::Invalid(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time".into(),
            ));
        }
    }
    if delta.memory_swap != 0 {
        new.memory_swap = delta.memory_swap;
    }
    if delta.memory_reservation != 0 {
        new.memory_reservation = delta.memory_reservation;
    }
    if delta.nano_cpus != 0 {
        new.nano_cpus = delta.nano_cpus;
    }
    if delta.cpu_shares != 0 {
        new.cpu_shares = delta.cpu_shares;
    }
    if !delta.cpuset_cpus.is_empty() {
        new.cpuset_cpus = delta.cpuset_cpus.clone();
    }
    if delta.pids_limit != 0 {
        new.pids_limit = delta.pids_limit;
    }
    if delta.blkio_weight != 0 {
        new.blkio_weight = delta.blkio_weight;
    }
    // Swap keeps its ratio rule only at create; an update keeps what was there.
    let keep_swap = new.memory_swap;
    let warnings = new
        .validate(&skiff_runtime::cgroup::HostLimits::detect())
        .map_err(|err| AgentError::Invalid(err.to_string()))?;
    if delta.memory_swap == 0 && keep_swap != 0 {
        new.memory_swap = keep_swap;
    }
    if e.state().is_running() {
        let mut apply = delta.clone();
        apply.memory_swap = if delta.memory_swap != 0 || delta.memory != 0 {
            new.memory_swap
        } else {
            0
        };
        cgroup_of(containers, &e.id).update(&apply).map_err(|err| {
            AgentError::Invalid(format!("Cannot update container {}: {err}", e.id))
        })?;
    }
    rec.config.resources = new;
    fsutil::write_json_atomic(&e.paths.record(), &rec)?;
    if let Ok(mut w) = e.record.write() {
        *w = rec;
    }
    containers.events.emit(
        "container",
        "update",
        &e.id,
        [("name".to_string(), e.name())].into(),
    );
    Ok(warnings)
}

/// `update --restart`: a new restart policy for the container (refused with `--rm`,
/// as Docker does).
pub async fn set_restart_policy(
    containers: &Containers,
    key: &str,
    policy: skiff_runtime::container::RestartPolicy,
) -> Result<()> {
    let e = containers.get(key)?;
    let _op = e.op.lock().await;
    let mut rec = e.record();
    if rec.config.auto_remove && policy.name != "no" {
        return Err(AgentError::Invalid(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
                .into(),
        ));
    }
    rec.config.restart_policy = policy;
    fsutil::write_json_atomic(&e.paths.record(), &rec)?;
    if let Ok(mut w) = e.record.write() {
        *w = rec;
    }
    Ok(())
}
