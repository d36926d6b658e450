//! The bounded chaos run in CI (`deploy/chaos`, crate `skiff-chaos`): 3 managers and 3
//! workers in network namespaces, clients deploying, scaling and updating stacks, a
//! fault every 5–10 s, then heal and check every invariant.
//!
//! CI runs it for `SKIFF_CHAOS_DURATION` seconds (default 180, as the issue asks; the whole suite stays
//! well under 30 minutes); longer runs: `deploy/chaos --duration 1800`. A failure
//! prints the seed; `SKIFF_CHAOS_SEED=N` (or `deploy/chaos --seed N`) replays its
//! choices. A second test proves the checker fails when it should.

mod common;

use std::sync::Mutex;
use std::time::Duration;

/// The two tests each build a six-host cluster: one at a time.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn config(duration: Duration) -> skiff_chaos::Config {
    let seed = std::env::var("SKIFF_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(skiff_chaos::random_seed);
    skiff_chaos::Config::new(
        common::bin(),
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        duration,
        seed,
    )
}

fn run(cfg: &skiff_chaos::Config) -> skiff_chaos::Report {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let report = rt
        .block_on(skiff_chaos::run(cfg, rx))
        .unwrap_or_else(|e| panic!("seed {}: the chaos run did not complete: {e}", cfg.seed));
    skiff_chaos::print_report(&report, cfg.duration);
    report
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_bounded_chaos_run_keeps_every_invariant() {
    common::require_root();
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let secs = std::env::var("SKIFF_CHAOS_DURATION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let cfg = config(Duration::from_secs(secs));
    let report = run(&cfg);
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        report.passed(),
        "seed {}: invariants failed: {failed:?} (see the report above; rerun with SKIFF_CHAOS_SEED={})",
        cfg.seed,
        cfg.seed
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn the_checker_catches_planted_leftovers_and_unwritten_changes() {
    common::require_root();
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = config(Duration::from_secs(12));
    cfg.plant = true;
    let report = run(&cfg);
    let by_name = |prefix: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no check {prefix}"))
    };
    let acked = by_name("every acknowledged spec change");
    assert!(!acked.passed, "an unwritten service went unnoticed");
    assert!(
        acked
            .details
            .iter()
            .any(|d| d.contains("chaos-unwritten was never written")),
        "{:?}",
        acked.details
    );
    let left = by_name("no container");
    assert!(!left.passed, "planted leftovers went unnoticed");
    for needle in [
        "VXLAN device skvchaos0",
        "container",
        "chaos-stray",
        "nft table inet chaos-stray",
        "cgroup",
        "shim process",
    ] {
        assert!(
            left.details.iter().any(|d| d.contains(needle)),
            "missed {needle}: {:?}",
            left.details
        );
    }
    assert!(
        by_name("no slot").passed,
        "{:?}",
        by_name("no slot").details
    );
}
