//! `stats`, `update`, the resource-limit flags of `run`/`create`, and the prune and
//! disk-usage commands (`system df`, `system prune`, `container prune`, `image prune`).

use super::volume::{confirm, human_binary, human_size, print_pruned, PruneArgs};
use crate::client::{exit, status};
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use std::collections::BTreeMap;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

/// Resource-limit flags, shared by `run`/`create` and (partly) `update`.
#[derive(Args, Debug, Clone, Default)]
pub struct LimitFlags {
    /// Memory limit (e.g. 500m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap, equal to --memory for none.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10-1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u32>,
}

/// Flags only `run`/`create` take.
#[derive(Args, Debug, Clone, Default)]
pub struct RunLimitFlags {
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Limit read rate from a device (PATH:RATE, e.g. /dev/vda:1mb).
    #[arg(long = "device-read-bps")]
    pub device_read_bps: Vec<String>,
    /// Limit write rate to a device (PATH:RATE).
    #[arg(long = "device-write-bps")]
    pub device_write_bps: Vec<String>,
    /// Tune the host's OOM preferences (-1000 to 1000).
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Disable the OOM killer.
    #[arg(long = "oom-kill-disable")]
    pub oom_kill_disable: bool,
    /// Ulimit options (nofile=1024:2048).
    #[arg(long = "ulimit")]
    pub ulimit: Vec<String>,
}

fn bytes(flag: &str, v: &Option<String>) -> Result<i64> {
    match v.as_deref() {
        None => Ok(0),
        Some("-1") => Ok(-1),
        Some(s) => skiff_runtime::volume::parse::parse_bytes(s).ok_or_else(|| {
            exit(
                125,
                format!("invalid argument {s:?} for \"{flag}\" flag: invalid size: '{s}'"),
            )
        }),
    }
}

impl LimitFlags {
    pub fn to_proto(&self) -> Result<Resources> {
        let memory = bytes("--memory", &self.memory)?;
        if memory < 0 {
            return Err(exit(
                125,
                "invalid argument \"-1\" for \"-m, --memory\" flag",
            ));
        }
        Ok(Resources {
            memory,
            memory_swap: bytes("--memory-swap", &self.memory_swap)?,
            memory_reservation: bytes("--memory-reservation", &self.memory_reservation)?,
            nano_cpus: match &self.cpus {
                Some(s) => skiff_runtime::cgroup::parse_cpus(s).map_err(|e| {
                    exit(
                        125,
                        format!("invalid argument {s:?} for \"--cpus\" flag: {e}"),
                    )
                })?,
                None => 0,
            },
            cpu_shares: self.cpu_shares.unwrap_or(0),
            cpuset_cpus: self.cpuset_cpus.clone().unwrap_or_default(),
            pids_limit: match self.pids_limit {
                Some(n) if n <= 0 => -1,
                Some(n) => n,
                None => 0,
            },
            blkio_weight: self.blkio_weight.unwrap_or(0),
            ..Default::default()
        })
    }
}

impl RunLimitFlags {
    pub fn to_proto(&self) -> Result<Resources> {
        Ok(Resources {
            device_read_bps: self.device_read_bps.clone(),
            device_write_bps: self.device_write_bps.clone(),
            oom_score_adj: self.oom_score_adj.unwrap_or(0),
            oom_kill_disable: self.oom_kill_disable,
            ulimits: self.ulimit.clone(),
            ..self.limits.to_proto()?
        })
    }
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print the first result and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// table, json, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub limits: LimitFlags,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show disk usage. Example: skiff system df -v
    Df(DfArgs),
    /// Remove stopped containers, dangling images (-a: unused), and with --volumes
    /// unused anonymous volumes. Example: skiff system prune -af --volumes
    Prune(SystemPruneArgs),
    /// System-wide information. Example: skiff system info
    Info(crate::cli::FormatArgs),
    /// Stream events. Example: skiff system events
    Events(crate::cli::EventsArgs),
    /// Internal: relay stdin/stdout to the local agent's socket (what `--host ssh://`
    /// runs on the remote host). Example: skiff system dial-stdio
    #[command(hide = true)]
    DialStdio,
}

#[derive(Args, Debug)]
pub struct DfArgs {
    #[arg(short = 'v', long)]
    pub verbose: bool,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    #[command(flatten)]
    pub prune: PruneArgs,
    /// Prune anonymous volumes too.
    #[arg(long)]
    pub volumes: bool,
}

pub async fn update(c: &mut Client, a: &UpdateArgs) -> Result<i32> {
    let resources = a.limits.to_proto()?;
    let mut rc = 0;
    for id in &a.containers {
        match c
            .container_update(UpdateRequest {
                ids: vec![id.clone()],
                resources: Some(resources.clone()),
            })
            .await
        {
            Ok(r) => {
                for w in r.into_inner().warnings {
                    eprintln!("WARNING: {w}");
                }
                println!("{id}");
            }
            Err(s) => {
                eprintln!("Error response from agent: {}", s.message());
                rc = 1;
            }
        }
    }
    Ok(rc)
}

fn stats_row(s: &StatsResponse, no_trunc: bool) -> serde_json::Value {
    let id = if no_trunc {
        s.id.clone()
    } else {
        s.id.chars().take(12).collect()
    };
    if !s.running {
        return json!({
            "Container": id, "ID": id, "Name": s.name, "CPUPerc": "0.00%", "MemUsage": "0B / 0B",
            "MemPerc": "0.00%", "NetIO": "0B / 0B", "BlockIO": "0B / 0B", "PIDs": "0",
        });
    }
    json!({
        "Container": id,
        "ID": id,
        "Name": s.name,
        "CPUPerc": format!("{:.2}%", s.cpu_percent),
        "MemUsage": format!("{} / {}", human_binary(s.mem_usage), human_binary(s.mem_limit)),
        "MemPerc": format!("{:.2}%", s.mem_percent),
        "NetIO": format!("{} / {}", human_size(s.net_rx), human_size(s.net_tx)),
        "BlockIO": format!("{} / {}", human_size(s.blk_read), human_size(s.blk_write)),
        "PIDs": s.pids.to_string(),
    })
}

const STATS_COLUMNS: [(&str, &str); 8] = [
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// `stats`: one stream per container, merged; while streaming, the table is redrawn
/// in place once a second (cursor home, each line cleared to its end, then the rest
/// of the screen cleared), so it never flickers the way a full clear does.
pub async fn stats(c: &mut Client, a: &StatsArgs) -> Result<i32> {
    let names: Vec<String> = if a.containers.is_empty() {
        let list = c
            .container_list(ListRequest {
                all: a.all,
                filters: vec![],
            })
            .await
            .map_err(status)?
            .into_inner()
            .containers;
        list.into_iter().map(|s| s.id).collect()
    } else {
        a.containers.clone()
    };
    let format = Format::parse(a.format.as_deref())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Option<StatsResponse>)>(64);
    let mut order = Vec::new();
    let mut rc = 0;
    for (i, n) in names.iter().enumerate() {
        match c
            .container_stats(StatsRequest {
                id: n.clone(),
                stream: !a.no_stream,
            })
            .await
        {
            Ok(s) => {
                order.push(i);
                let mut s = s.into_inner();
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Ok(Some(m)) = s.message().await {
                        if tx.send((i, Some(m))).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((i, None)).await;
                });
            }
            Err(s) => {
                eprintln!("Error response from agent: {}", s.message());
                rc = 1;
            }
        }
    }
    drop(tx);
    let mut latest: BTreeMap<usize, StatsResponse> = BTreeMap::new();
    let mut live: std::collections::HashSet<usize> = order.iter().copied().collect();
    if a.no_stream {
        while let Some((i, m)) = rx.recv().await {
            if let Some(m) = m {
                latest.insert(i, m);
            }
        }
        let rows: Vec<_> = latest.values().map(|s| stats_row(s, a.no_trunc)).collect();
        output::print_rows(&format, &STATS_COLUMNS, &rows)?;
        return Ok(rc);
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(1000));
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some((i, Some(s))) => { latest.insert(i, s); }
                Some((i, None)) => { live.remove(&i); latest.remove(&i); }
                None => return Ok(rc),
            },
            _ = tick.tick() => {
                let rows: Vec<_> = latest.values().map(|s| stats_row(s, a.no_trunc)).collect();
                redraw(&format, &rows, tty)?;
                if live.is_empty() {
                    return Ok(rc);
                }
            }
        }
    }
}

fn redraw(format: &Format, rows: &[serde_json::Value], tty: bool) -> Result<()> {
    use std::io::Write;
    let text = match format {
        Format::Json => rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
        Format::Table => {
            let mut table = vec![STATS_COLUMNS
                .iter()
                .map(|(_, h)| h.to_string())
                .collect::<Vec<_>>()];
            for r in rows {
                table.push(
                    STATS_COLUMNS
                        .iter()
                        .map(|(f, _)| r[*f].as_str().unwrap_or_default().to_string())
                        .collect(),
                );
            }
            output::align(&table)
        }
        Format::Template(t) => {
            let mut s = String::new();
            for r in rows {
                s.push_str(&t.render(r)?);
                s.push('\n');
            }
            s
        }
    };
    let mut out = std::io::stdout().lock();
    if tty {
        let mut frame = String::from("\x1b[H");
        for line in text.lines() {
            frame.push_str(line);
            frame.push_str("\x1b[K\n");
        }
        frame.push_str("\x1b[J");
        out.write_all(frame.as_bytes())?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

pub async fn container_prune(c: &mut Client, a: &PruneArgs) -> Result<i32> {
    if !confirm(a.force, "WARNING! This will remove all stopped containers.")? {
        return Ok(0);
    }
    let r = c
        .container_prune(PruneRequest {
            filters: a.filter.clone(),
            all: false,
        })
        .await
        .map_err(status)?
        .into_inner();
    print_pruned("Deleted Containers:", &r);
    Ok(0)
}

pub async fn image_prune(c: &mut Client, a: &PruneArgs) -> Result<i32> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !confirm(a.force, warning)? {
        return Ok(0);
    }
    let r = c
        .image_prune(PruneRequest {
            filters: a.filter.clone(),
            all: a.all,
        })
        .await
        .map_err(status)?
        .into_inner();
    print_pruned("Deleted Images:", &r);
    Ok(0)
}

pub async fn system(c: &mut Client, cmd: &SystemCommand) -> Result<i32> {
    match cmd {
        SystemCommand::Df(a) => df(c, a).await,
        SystemCommand::Prune(a) => system_prune(c, a).await,
        SystemCommand::Info(a) => super::system::info(c, a).await,
        SystemCommand::Events(a) => super::system::events(c, a).await,
        SystemCommand::DialStdio => Ok(0), // handled before connecting (main.rs)
    }
}

async fn df(c: &mut Client, a: &DfArgs) -> Result<i32> {
    let r = c.system_df(Empty {}).await.map_err(status)?.into_inner();
    if a.verbose {
        let v: serde_json::Value = serde_json::from_str(&r.verbose_json)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|row| {
            let pct = (row.reclaimable * 100).checked_div(row.size).unwrap_or(0);
            json!({
                "Type": row.kind,
                "TotalCount": row.total.to_string(),
                "Active": row.active.to_string(),
                "Size": human_size(row.size),
                "Reclaimable": format!("{} ({pct}%)", human_size(row.reclaimable)),
            })
        })
        .collect();
    let columns = [
        ("Type", "TYPE"),
        ("TotalCount", "TOTAL"),
        ("Active", "ACTIVE"),
        ("Size", "SIZE"),
        ("Reclaimable", "RECLAIMABLE"),
    ];
    output::print_rows(&Format::parse(a.format.as_deref())?, &columns, &rows)?;
    Ok(0)
}

async fn system_prune(c: &mut Client, a: &SystemPruneArgs) -> Result<i32> {
    let mut items = vec![
        "all stopped containers",
        "all networks not used by at least one container",
    ];
    if a.volumes {
        items.push("all anonymous volumes not used by at least one container");
    }
    items.push(if a.prune.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    });
    let warning = format!(
        "WARNING! This will remove:\n{}",
        items
            .iter()
            .map(|i| format!("  - {i}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if !confirm(a.prune.force, &warning)? {
        return Ok(0);
    }
    let req = || PruneRequest {
        filters: a.prune.filter.clone(),
        all: a.prune.all,
    };
    let mut total = 0;
    let r = c.container_prune(req()).await.map_err(status)?.into_inner();
    total += r.space_reclaimed;
    if !r.deleted.is_empty() {
        println!("Deleted Containers:\n{}\n", r.deleted.join("\n"));
    }
    let r = c.network_prune(req()).await.map_err(status)?.into_inner();
    if !r.deleted.is_empty() {
        println!("Deleted Networks:\n{}\n", r.deleted.join("\n"));
    }
    if a.volumes {
        let r = c
            .volume_prune(PruneRequest {
                filters: a.prune.filter.clone(),
                all: false,
            })
            .await
            .map_err(status)?
            .into_inner();
        total += r.space_reclaimed;
        if !r.deleted.is_empty() {
            println!("Deleted Volumes:\n{}\n", r.deleted.join("\n"));
        }
    }
    let r = c.image_prune(req()).await.map_err(status)?.into_inner();
    total += r.space_reclaimed;
    if !r.deleted.is_empty() || !r.untagged.is_empty() {
        println!("Deleted Images:");
        for u in &r.untagged {
            println!("untagged: {u}");
        }
        for d in &r.deleted {
            println!("deleted: {d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(total));
    Ok(0)
}
