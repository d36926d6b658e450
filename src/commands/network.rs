//! Network commands (`network create/ls/inspect/rm/prune/connect/disconnect`, `port`)
//! and the networking flags of `run`/`create`.

use crate::client::{exit, status};
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

/// `run`/`create` networking flags (Docker's names).
#[derive(Args, Debug, Clone, Default)]
pub struct NetRunArgs {
    /// Publish a container's port to the host: [IP:][HOST_PORT:]CONTAINER_PORT[/udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every EXPOSE'd port to a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// IPv4 address on a user-defined network.
    #[arg(long = "ip")]
    pub ip: Option<String>,
    /// Extra DNS name for the container on its network.
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Custom DNS servers.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Custom DNS search domains.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// DNS options (resolv.conf `options`).
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a line to /etc/hosts (HOST:IP).
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
}

impl NetRunArgs {
    pub fn options(&self) -> NetworkOptions {
        NetworkOptions {
            ipv4_address: self.ip.clone().unwrap_or_default(),
            aliases: self.network_alias.clone(),
            dns: self.dns.clone(),
            dns_search: self.dns_search.clone(),
            dns_options: self.dns_option.clone(),
            extra_hosts: self.add_host.clone(),
            publish: self.publish.clone(),
            publish_all: self.publish_all,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network. Example: skiff network create --subnet 10.10.0.0/24 app
    Create(CreateArgs),
    /// List networks. Example: skiff network ls
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks as JSON. Example: skiff network inspect app
    Inspect(InspectArgs),
    /// Remove networks. Example: skiff network rm app
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove all unused networks. Example: skiff network prune -f
    Prune(PruneArgs),
    /// Connect a container to a network. Example: skiff network connect app web
    Connect(ConnectArgs),
    /// Disconnect a container from a network. Example: skiff network disconnect app web
    Disconnect(DisconnectArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver: `bridge` (this host) or `overlay` (cluster-wide, VXLAN; on a manager).
    #[arg(short = 'd', long, default_value = "bridge")]
    pub driver: String,
    /// Overlay: standalone containers (`run --network`) may attach.
    #[arg(long)]
    pub attachable: bool,
    /// Subnet in CIDR form (default: the first free one of the address pools).
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// No route to the outside.
    #[arg(long)]
    pub internal: bool,
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter (name=, id=, driver=, label=, type=custom|builtin).
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long = "alias")]
    pub alias: Vec<String>,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct DisconnectArgs {
    #[arg(short = 'f', long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PORT[/PROTO] to show only that mapping.
    pub port: Option<String>,
}

pub async fn run(c: &mut Client, cmd: &NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => {
            let labels = a
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect();
            let r = c
                .network_create(NetworkCreateRequest {
                    name: a.name.clone(),
                    driver: a.driver.clone(),
                    subnet: a.subnet.clone().unwrap_or_default(),
                    gateway: a.gateway.clone().unwrap_or_default(),
                    internal: a.internal,
                    labels,
                    attachable: a.attachable,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", r.id);
            Ok(0)
        }
        NetworkCommand::Ls(a) => {
            let list = c
                .network_list(NetworkListRequest {
                    filters: a.filter.clone(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .networks;
            let id = |s: &NetworkSummary| {
                if a.no_trunc {
                    s.id.clone()
                } else {
                    s.id[..12.min(s.id.len())].to_string()
                }
            };
            if a.quiet {
                for n in &list {
                    println!("{}", id(n));
                }
                return Ok(0);
            }
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|n| {
                    json!({
                        "ID": id(n),
                        "Name": n.name,
                        "Driver": n.driver,
                        "Scope": n.scope,
                        "Internal": n.internal.to_string(),
                        "Subnet": n.subnet,
                        "Gateway": n.gateway,
                        "CreatedAt": chrono::DateTime::from_timestamp(n.created_unix, 0).map(|t| t.to_string()).unwrap_or_default(),
                        "Labels": n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    })
                })
                .collect();
            let format = Format::parse(a.format.as_deref())?;
            output::print_rows(
                &format,
                &[
                    ("ID", "NETWORK ID"),
                    ("Name", "NAME"),
                    ("Driver", "DRIVER"),
                    ("Scope", "SCOPE"),
                ],
                &rows,
            )?;
            Ok(0)
        }
        NetworkCommand::Inspect(a) => {
            let mut docs = vec![];
            let mut rc = 0;
            for n in &a.names {
                match c.network_inspect(NameRequest { id: n.clone() }).await {
                    Ok(d) => docs.push(serde_json::from_str::<serde_json::Value>(
                        &d.into_inner().json,
                    )?),
                    Err(e) => {
                        eprintln!("Error: {}", e.message());
                        rc = 1;
                    }
                }
            }
            crate::output::print_docs(&docs, a.format.as_deref())?;
            Ok(rc)
        }
        NetworkCommand::Rm(a) => {
            let mut rc = 0;
            for n in &a.names {
                match c.network_remove(NameRequest { id: n.clone() }).await {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {}", e.message());
                        rc = 1;
                    }
                }
            }
            Ok(rc)
        }
        NetworkCommand::Prune(a) => {
            if !a.force && !crate::commands::network::confirm("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ") {
                return Ok(0);
            }
            let r = c
                .network_prune(PruneRequest::default())
                .await
                .map_err(status)?
                .into_inner();
            if !r.deleted.is_empty() {
                println!("Deleted Networks:");
                for n in r.deleted {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkCommand::Connect(a) => {
            c.network_connect(NetworkConnectRequest {
                network: a.network.clone(),
                container: a.container.clone(),
                ipv4_address: a.ip.clone().unwrap_or_default(),
                aliases: a.alias.clone(),
                force: false,
            })
            .await
            .map_err(status)?;
            Ok(0)
        }
        NetworkCommand::Disconnect(a) => {
            c.network_disconnect(NetworkConnectRequest {
                network: a.network.clone(),
                container: a.container.clone(),
                force: a.force,
                ..Default::default()
            })
            .await
            .map_err(status)?;
            Ok(0)
        }
    }
}

/// Asks on the terminal; anything but y/yes is no.
pub fn confirm(question: &str) -> bool {
    use std::io::Write;
    print!("{question}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok()
        && matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// `port CONTAINER [PORT[/PROTO]]`.
pub async fn port(c: &mut Client, a: &PortArgs) -> Result<i32> {
    let ports = c
        .container_port(NameRequest {
            id: a.container.clone(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .ports;
    match &a.port {
        None => {
            for p in ports {
                println!("{p}");
            }
        }
        Some(want) => {
            let want = if want.contains('/') {
                want.clone()
            } else {
                format!("{want}/tcp")
            };
            let hits: Vec<&String> = ports
                .iter()
                .filter(|p| p.split(" -> ").next() == Some(want.as_str()))
                .collect();
            if hits.is_empty() {
                return Err(exit(
                    1,
                    format!(
                        "Error: No public port '{want}' published for {}",
                        a.container
                    ),
                ));
            }
            for h in hits {
                println!("{}", h.split(" -> ").nth(1).unwrap_or_default());
            }
        }
    }
    Ok(0)
}
