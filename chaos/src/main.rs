//! `skiff-chaos`: the command behind `deploy/chaos` (see the library's docs).

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// A bounded Jepsen-style chaos test of a Skiff cluster (3 managers + 3 workers in
/// network namespaces). Exits 0 only when every invariant holds.
#[derive(Parser, Debug)]
#[command(name = "skiff-chaos")]
struct Args {
    /// Seconds of faults and client load (healing and checks come after).
    #[arg(long, default_value_t = 180)]
    duration: u64,
    /// Seed of every random choice (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// The skiff binary under test.
    #[arg(long)]
    bin: PathBuf,
    /// The checkout holding deploy/netns-cluster and examples/ (default: this crate's).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Leave the cluster running after the run, for inspection.
    #[arg(long)]
    keep: bool,
    /// Clients (one stack each).
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Self-test: plant leftovers and an unwritten service after healing; the run must
    /// then FAIL those two invariants (and only those).
    #[arg(long)]
    plant_faults: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("skiff-chaos: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let repo = args
        .repo
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let repo = repo
        .canonicalize()
        .with_context(|| format!("checkout {}", repo.display()))?;
    let bin = args
        .bin
        .canonicalize()
        .with_context(|| format!("skiff binary {}", args.bin.display()))?;
    let mut cfg = skiff_chaos::Config::new(
        bin,
        repo,
        Duration::from_secs(args.duration),
        args.seed.unwrap_or_else(skiff_chaos::random_seed),
    );
    cfg.keep = args.keep;
    cfg.clients = args.clients.max(1);
    cfg.plant = args.plant_faults;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Ctrl-C or SIGTERM: stop, heal nothing, tear everything down.
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted: cleaning up");
            let _ = tx.send(true);
        });
        match skiff_chaos::run(&cfg, rx).await {
            Ok(report) => {
                skiff_chaos::print_report(&report, cfg.duration);
                Ok(report.passed())
            }
            Err(e) => {
                eprintln!("seed {}: the run did not complete", cfg.seed);
                Err(e.into())
            }
        }
    })
}
