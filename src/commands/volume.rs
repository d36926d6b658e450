//! `volume create/ls/inspect/rm/prune`, the run/create mount flags, and the shared
//! confirmation and size formatting used by every prune command.

use crate::client::status;
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

/// Mount flags of `run` / `create`.
#[derive(Args, Debug, Clone, Default)]
pub struct MountFlags {
    /// Bind mount or volume: NAME:/path[:ro], /host/path:/path[:ro], or /path (anonymous).
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount: type=volume|bind|tmpfs,source=..,target=..[,readonly][,tmpfs-size=..].
    #[arg(long = "mount")]
    pub mount: Vec<String>,
    /// Mount the volumes of another container: CONTAINER[:ro|rw].
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Mount a tmpfs: /path[:OPTIONS].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume. Example: skiff volume create --label env=prod data
    Create(VolumeCreateArgs),
    /// List volumes. Example: skiff volume ls -f dangling=true
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Show volumes as JSON. Example: skiff volume inspect data
    Inspect(VolumeInspectArgs),
    /// Remove volumes (refused while a container uses them). Example: skiff volume rm data
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused anonymous volumes (-a: all unused). Example: skiff volume prune -f
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Volume driver (only "local").
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Name (random when omitted).
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// dangling=true|false, name=.., label=KEY[=VALUE], driver=local.
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Do not fail on volumes that do not exist.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Flags shared by the prune commands.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove all unused (images: not only dangling; volumes: not only anonymous).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Filters: until=.., label=.. (volumes: label=.. only).
    #[arg(long)]
    pub filter: Vec<String>,
}

pub async fn run(c: &mut Client, cmd: &VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create(a) => {
            let labels = a
                .label
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .unwrap_or((l.clone(), String::new()))
                })
                .collect();
            let doc = c
                .volume_create(VolumeCreateRequest {
                    name: a.name.clone().unwrap_or_default(),
                    labels,
                    driver: a.driver.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let v: serde_json::Value = serde_json::from_str(&doc.json)?;
            println!("{}", v["Name"].as_str().unwrap_or_default());
            Ok(0)
        }
        VolumeCommand::Ls(a) => {
            let list = c
                .volume_list(VolumeListRequest {
                    filters: a.filter.clone(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .volumes;
            if a.quiet {
                for v in &list {
                    println!("{}", v.name);
                }
                return Ok(0);
            }
            let rows: Vec<_> = list
                .iter()
                .map(|v| {
                    let mut labels: Vec<String> = v.labels.iter().map(|(k, val)| format!("{k}={val}")).collect();
                    labels.sort();
                    json!({"Driver": v.driver, "Name": v.name, "Mountpoint": v.mountpoint, "Labels": labels.join(","), "Scope": "local"})
                })
                .collect();
            output::print_rows(
                &Format::parse(a.format.as_deref())?,
                &[("Driver", "DRIVER"), ("Name", "VOLUME NAME")],
                &rows,
            )?;
            Ok(0)
        }
        VolumeCommand::Inspect(a) => {
            let mut docs = Vec::new();
            let mut rc = 0;
            for n in &a.names {
                match c.volume_inspect(NameRequest { id: n.clone() }).await {
                    Ok(d) => docs.push(serde_json::from_str::<serde_json::Value>(
                        &d.into_inner().json,
                    )?),
                    Err(s) => {
                        eprintln!("Error response from agent: {}", s.message());
                        rc = 1;
                    }
                }
            }
            crate::output::print_docs(&docs, a.format.as_deref())?;
            Ok(rc)
        }
        VolumeCommand::Rm(a) => {
            let mut rc = 0;
            for n in &a.names {
                match c
                    .volume_remove(VolumeRemoveRequest {
                        name: n.clone(),
                        force: a.force,
                    })
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(s) => {
                        eprintln!("Error response from agent: {}", s.message());
                        rc = 1;
                    }
                }
            }
            Ok(rc)
        }
        VolumeCommand::Prune(a) => {
            let warning = if a.all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !confirm(a.force, warning)? {
                return Ok(0);
            }
            let r = c
                .volume_prune(PruneRequest {
                    filters: a.filter.clone(),
                    all: a.all,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_pruned("Deleted Volumes:", &r);
            Ok(0)
        }
    }
}

/// Docker's prompt: the warning, then "Are you sure you want to continue? [y/N]".
/// `-f` skips it; a non-interactive stdin without `-f` declines.
pub fn confirm(force: bool, warning: &str) -> Result<bool> {
    if force {
        return Ok(true);
    }
    use std::io::Write;
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return Ok(false);
    }
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Docker's prune report: the header and the removed names, then the space freed.
pub fn print_pruned(header: &str, r: &PruneResponse) {
    if !r.untagged.is_empty() || !r.deleted.is_empty() {
        println!("{header}");
        for u in &r.untagged {
            println!("untagged: {u}");
        }
        for d in &r.deleted {
            if header.starts_with("Deleted Images") {
                println!("deleted: {d}");
            } else {
                println!("{d}");
            }
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(r.space_reclaimed));
}

/// Docker's decimal sizes (`1.5MB`, `0B`).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{}{}", trim_float(v), UNITS[i])
    }
}

/// Binary sizes as `docker stats` shows them (`1.5MiB`).
pub fn human_binary(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{}{}", trim_float(v), UNITS[i])
    }
}

/// Three significant digits, like Go's `%.3g` as Docker's units package uses.
fn trim_float(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(4_404_019), "4.4MB");
        assert_eq!(human_binary(524_288_000), "500MiB");
        assert_eq!(human_binary(1536), "1.5KiB");
        assert_eq!(human_binary(2_300_000), "2.19MiB");
    }
}
