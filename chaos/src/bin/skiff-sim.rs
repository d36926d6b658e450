//! `skiff-sim`: N simulated nodes in one process against real managers (see
//! `skiff_chaos::sim`). Driven by commands on stdin, one a line, each answered on stdout:
//!
//! - `stats`: one JSON line (nodes joined, up, paused, killed, task containers running,
//!   tasks running in more than one container, starts, injected failures);
//! - `add N`: N more nodes;
//! - `kill RANGE`, `pause RANGE`, `resume RANGE`: in bulk (RANGE: `A..B`, `A`, `all`);
//! - `ids RANGE`: the node IDs, one a line, then `.`;
//! - `quit` (or end of input): kill every node and exit.

use anyhow::Context as _;
use clap::Parser;
use skiff_chaos::sim::{parse_range, Behaviour, Fleet, FleetConfig};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "skiff-sim")]
struct Args {
    /// A manager's cluster address (host:port).
    #[arg(long)]
    join: String,
    /// A worker join token.
    #[arg(long)]
    token: String,
    /// Nodes to start at once.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// State directories of the nodes go below this (emptied first).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    start_latency_ms: u64,
    /// Share of container starts that fail (0.0-1.0).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Every container exits this long after its start (0: never).
    #[arg(long, default_value_t = 0)]
    exit_after_ms: u64,
    #[arg(long, default_value_t = 0)]
    exit_code: i32,
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).with_context(|| a.dir.display().to_string())?;
    let mut fleet = Fleet::new(FleetConfig {
        join_addr: a.join,
        token: a.token,
        dir: a.dir.clone(),
        behaviour: Behaviour {
            start_latency: Duration::from_millis(a.start_latency_ms),
            fail_rate: a.fail_rate,
            exit_after: (a.exit_after_ms > 0)
                .then(|| (Duration::from_millis(a.exit_after_ms), a.exit_code)),
        },
        heartbeat_period: Duration::from_millis(a.heartbeat_ms.max(50)),
        seed: a.seed,
    });
    let t0 = std::time::Instant::now();
    fleet.add(a.nodes).context("starting the nodes")?;
    let out = std::io::stdout();
    match fleet.wait_joined(Duration::from_secs(600)) {
        Some(_) => writeln!(
            out.lock(),
            "joined {} nodes in {:.1} s",
            fleet.len(),
            t0.elapsed().as_secs_f64()
        )?,
        None => writeln!(out.lock(), "not every node joined within 600 s")?,
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let (cmd, arg) = (words.next().unwrap_or(""), words.next().unwrap_or("all"));
        let range = parse_range(arg, fleet.len());
        let mut o = out.lock();
        match (cmd, range) {
            ("", _) => continue,
            ("stats", _) => {
                let s = fleet.stats();
                writeln!(
                    o,
                    "{}",
                    serde_json::json!({
                        "nodes": s.nodes, "joined": s.joined, "up": s.up,
                        "paused": s.paused, "killed": s.killed, "running": s.running,
                        "duplicates": s.duplicates, "starts": s.starts,
                        "injected_failures": s.injected_failures,
                        "join_errors": s.join_errors, "streams_opened": s.streams_opened,
                    })
                )?;
            }
            ("add", _) => {
                let n: usize = arg.parse().unwrap_or(0);
                fleet.add(n).context("adding nodes")?;
                writeln!(o, "added {n}")?;
            }
            ("kill", Some(r)) => {
                fleet.kill(r.clone());
                writeln!(o, "killed {r:?}")?;
            }
            ("pause", Some(r)) => {
                fleet.pause(r.clone());
                writeln!(o, "paused {r:?}")?;
            }
            ("resume", Some(r)) => {
                fleet.resume(r.clone()).context("restarting nodes")?;
                writeln!(o, "resumed {r:?}")?;
            }
            ("ids", Some(r)) => {
                for id in fleet.ids(r) {
                    writeln!(o, "{id}")?;
                }
                writeln!(o, ".")?;
            }
            ("quit", _) => break,
            _ => writeln!(o, "error: unknown command or range: {line}")?,
        }
        o.flush()?;
    }
    drop(fleet);
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(())
}
