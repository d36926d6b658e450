//! A bounded, Jepsen-style chaos test of a whole Skiff cluster (`deploy/chaos`).
//!
//! A run brings up 3 managers and 3 workers as network namespaces
//! (`deploy/netns-cluster`, each `--root` on its own small loop-mounted filesystem), then
//! for the given duration runs clients that keep deploying, scaling and updating stacks
//! while a nemesis injects a fault every 5–10 s. At the end it heals everything, waits
//! for convergence and checks the invariants, printing each as PASS or FAIL. A seed
//! makes the choices reproducible; a failure prints the seed, the fault schedule and
//! what broke, and keeps the agents' logs.
//!
//! Map of the crate:
//! - [`hosts`]: the cluster (set-up, teardown) and the faults' mechanics;
//! - [`workload`]: the clients, the operation history and what it allows at the end;
//! - [`nemesis`]: which fault when, and healing;
//! - [`check`]: the invariants;
//! - [`api`]: structured reads over an agent's unix socket;
//! - [`rng`]: the seeded PRNG;
//! - [`sim`]: the node simulator for scale runs (`skiff-sim`).

pub mod api;
pub mod check;
pub mod hosts;
pub mod nemesis;
pub mod rng;
pub mod sim;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{what} on {}: {message}", sock.display())]
    Api {
        what: String,
        sock: PathBuf,
        message: String,
    },
    #[error("set-up: {0}")]
    Setup(String),
    #[error("interrupted")]
    Interrupted,
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long clients and the nemesis run (healing and checks come after).
    pub duration: Duration,
    pub seed: u64,
    /// The `skiff` binary under test.
    pub bin: PathBuf,
    /// The checkout (for `deploy/netns-cluster` and the busybox image script).
    pub repo: PathBuf,
    /// Leave the cluster running afterwards.
    pub keep: bool,
    pub managers: usize,
    pub workers: usize,
    /// One client, and one stack, each.
    pub clients: usize,
    /// How long services may take to converge after healing.
    pub converge_within: Duration,
    /// Self-test of the checker: after healing, plant what the invariants must catch
    /// (a service no client wrote, a stray container, a VXLAN device and an nftables
    /// table that belong to no task). A run with this set must FAIL exactly those.
    pub plant: bool,
}

impl Config {
    pub fn new(bin: PathBuf, repo: PathBuf, duration: Duration, seed: u64) -> Config {
        Config {
            duration,
            seed,
            bin,
            repo,
            keep: false,
            managers: 3,
            workers: 3,
            clients: 3,
            converge_within: Duration::from_secs(120),
            plant: false,
        }
    }
}

/// A run's verdicts and what is needed to reproduce it.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub checks: Vec<check::Check>,
    pub schedule: Vec<String>,
    /// (acknowledged, failed, unknown) operations.
    pub ops: (usize, usize, usize),
    /// Where the agents' logs were kept (after a failure).
    pub logs: Option<PathBuf>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// A fresh seed from the clock, for runs not given one.
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rng::Rng::new(t.as_nanos() as u64 ^ std::process::id() as u64).next_u64() % 1_000_000_000
}

/// Runs the whole test; `stop` turning true (ctrl-C) ends it early, still cleaning up.
pub async fn run(
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Report, ChaosError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ChaosError::Setup(
            "run as root: the chaos test creates namespaces, mounts and loop devices".into(),
        ));
    }
    for tool in [
        "nft",
        "tc",
        "ip",
        "nsenter",
        "losetup",
        "mkfs.ext4",
        "fallocate",
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(ChaosError::Setup(format!(
                "{tool} is not installed (deploy/deps.sh installs what Skiff needs)"
            )));
        }
    }
    let dir = PathBuf::from(format!("/tmp/skchaos-{}-{}", cfg.seed, std::process::id()));
    say(format!(
        "== skiff chaos: seed {}, {}s of faults, {} managers + {} workers, {} clients; cluster in {}",
        cfg.seed,
        cfg.duration.as_secs(),
        cfg.managers,
        cfg.workers,
        cfg.clients,
        dir.display()
    ));
    let cancelled = async {
        let _ = stop.wait_for(|s| *s).await;
    };
    let hosts = tokio::select! {
        h = hosts::Hosts::up(&dir, &cfg.repo, &cfg.bin, cfg.managers, cfg.workers) => Arc::new(h?),
        _ = cancelled => return Err(ChaosError::Interrupted),
    };
    if cfg.keep {
        hosts.keep();
    }
    let schedule = Arc::new(nemesis::Schedule::default());
    let history = Arc::new(workload::History::default());
    let body = exercise(cfg, hosts.clone(), schedule.clone(), history.clone());
    let mut stop2 = stop.clone();
    let result = tokio::select! {
        r = body => r,
        _ = stop2.wait_for(|s| *s) => Err(ChaosError::Interrupted),
    };
    let report = match result {
        Ok(checks) => {
            let ops = history.ops();
            let count = |o| ops.iter().filter(|x| x.outcome == o).count();
            let mut r = Report {
                seed: cfg.seed,
                checks,
                schedule: schedule.events(),
                ops: (
                    count(workload::Outcome::Ok),
                    count(workload::Outcome::Failed),
                    count(workload::Outcome::Unknown),
                ),
                logs: None,
            };
            if !r.passed() {
                let to = PathBuf::from(format!("/tmp/skiff-chaos-{}-logs", cfg.seed));
                if hosts.save_logs(&to).is_ok() {
                    write_history(&to, &ops);
                    r.logs = Some(to);
                }
            }
            Ok(r)
        }
        Err(e) => Err(e),
    };
    if !cfg.keep {
        say("== tearing down");
        hosts.teardown();
    }
    report
}

fn write_history(to: &std::path::Path, ops: &[workload::Op]) {
    let lines: Vec<String> = ops
        .iter()
        .map(|o| {
            format!(
                "{:>5} {:>7.1}s-{:>7.1}s client {} via {:<8} {:<8} {}{}",
                o.seq,
                o.start.as_secs_f64(),
                o.end.as_secs_f64(),
                o.client,
                o.manager,
                o.outcome.as_str(),
                o.desc,
                if o.error.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", o.error.replace('\n', " "))
                }
            )
        })
        .collect();
    let _ = std::fs::write(to.join("history.txt"), lines.join("\n") + "\n");
}

/// Faults and clients for the duration, then healing and the checks.
async fn exercise(
    cfg: &Config,
    hosts: Arc<hosts::Hosts>,
    schedule: Arc<nemesis::Schedule>,
    history: Arc<workload::History>,
) -> Result<Vec<check::Check>, ChaosError> {
    let ready = wait_ready(&hosts, Duration::from_secs(60)).await;
    if !ready.is_empty() {
        return Err(ChaosError::Setup(format!(
            "the cluster did not become ready: {}",
            ready.join("; ")
        )));
    }
    let stacks = workload::stacks_dir(&hosts.dir);
    std::fs::create_dir_all(&stacks).map_err(|source| ChaosError::Io {
        what: format!("creating {}", stacks.display()),
        source,
    })?;
    let started = Instant::now();
    let until = started + cfg.duration;
    say("== running clients and the nemesis");
    let mut clients = vec![];
    for id in 0..cfg.clients {
        let ctx = workload::Client {
            id,
            seed: cfg.seed,
            bin: cfg.bin.clone(),
            dir: stacks.clone(),
            hosts: hosts.clone(),
            history: history.clone(),
            started,
        };
        clients.push(tokio::spawn(ctx.run(until)));
    }
    let mut nemesis = nemesis::Nemesis::new(hosts.clone(), cfg.seed, schedule.clone(), started);
    nemesis.run(until).await;
    for c in clients {
        let _ = c.await;
    }
    let ops = history.ops();
    let count = |o| ops.iter().filter(|x| x.outcome == o).count();
    say(format!(
        "== workload: {} operations: {} acknowledged, {} failed, {} unknown outcome",
        ops.len(),
        count(workload::Outcome::Ok),
        count(workload::Outcome::Failed),
        count(workload::Outcome::Unknown)
    ));
    say("== healing everything");
    nemesis.heal_all().await;
    if cfg.plant {
        plant(cfg, &hosts).await?;
    }
    say("== checking invariants");
    let mut checks = vec![];
    // Convergence first: the other checks read a settled cluster.
    checks.push(check::converge(&hosts, cfg.converge_within).await);
    checks.push(check::acked_changes(&hosts, &ops).await);
    checks.push(check::slots(&hosts).await);
    let settle = if cfg.plant { 5 } else { 30 };
    checks.push(check::leftovers(&hosts, Duration::from_secs(settle)).await);
    checks.push(check::hashes(&hosts, Duration::from_secs(30)).await);
    Ok(checks)
}

/// Plants what the checker must catch (see [`Config::plant`]).
async fn plant(cfg: &Config, hosts: &hosts::Hosts) -> Result<(), ChaosError> {
    say("== planting faults the checker must catch");
    let t = Duration::from_secs(60);
    let bin = cfg.bin.to_string_lossy().into_owned();
    let on = |name: &str| {
        hosts
            .node(name)
            .cloned()
            .ok_or_else(|| ChaosError::Setup(format!("no host {name}")))
    };
    let (m1, w1, w2, w3) = (
        on("manager1")?,
        on("worker1")?,
        on("worker2")?,
        on("worker3")?,
    );
    let host = |n: &hosts::Node| format!("unix://{}", n.sock.display());
    hosts::cmd_ok(
        &bin,
        &[
            "--host",
            &host(&m1),
            "service",
            "create",
            "--name",
            "chaos-unwritten",
            "busybox:latest",
            "sleep",
            "1000000",
        ],
        None,
        t,
    )
    .await?;
    hosts::cmd_ok(
        &bin,
        &[
            "--host",
            &host(&w2),
            "run",
            "-d",
            "--name",
            "chaos-stray",
            "busybox:latest",
            "sleep",
            "1000000",
        ],
        None,
        t,
    )
    .await?;
    w1.in_netns(
        &[
            "ip",
            "link",
            "add",
            "skvchaos0",
            "type",
            "vxlan",
            "id",
            "4242",
            "dstport",
            "4790",
            "dev",
            "eth0",
        ],
        None,
    )
    .await?;
    w3.in_netns(&["nft", "add", "table", "inet", "chaos-stray"], None)
        .await?;
    Ok(())
}

/// Waits until every node is Ready on the first manager; returns what is not.
async fn wait_ready(hosts: &hosts::Hosts, bound: Duration) -> Vec<String> {
    let t0 = Instant::now();
    let Some(m) = hosts.managers().next() else {
        return vec!["no manager".into()];
    };
    loop {
        let why = match api::nodes(&m.sock).await {
            Ok(nodes) if nodes.len() == hosts.nodes.len() => nodes
                .iter()
                .filter(|n| n.2 != "ready")
                .map(|n| format!("{} is {}", n.1, n.2))
                .collect(),
            Ok(nodes) => vec![format!(
                "{} of {} nodes joined",
                nodes.len(),
                hosts.nodes.len()
            )],
            Err(e) => vec![e.to_string()],
        };
        if why.is_empty() || t0.elapsed() > bound {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Prints the verdicts, and after a failure what is needed to reproduce it.
pub fn print_report(r: &Report, duration: Duration) {
    say("== invariants");
    for c in &r.checks {
        say(format!(
            "{} {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name
        ));
        for d in c.details.iter().filter(|d| !d.is_empty()) {
            say(format!("       {d}"));
        }
    }
    if r.passed() {
        say(format!("RESULT: PASS (seed {})", r.seed));
        return;
    }
    say("== fault schedule");
    for e in &r.schedule {
        say(format!("  {e}"));
    }
    say(format!(
        "RESULT: FAIL (seed {}). Reproduce with: deploy/chaos --seed {} --duration {}",
        r.seed,
        r.seed,
        duration.as_secs()
    ));
    if let Some(l) = &r.logs {
        say(format!(
            "agent logs and the operation history are in {}",
            l.display()
        ));
    }
}
