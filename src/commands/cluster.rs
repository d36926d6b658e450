//! `skiff node ...`, `skiff cluster ...`, and the agent's cluster flags turned into a
//! [`ClusterConfig`]. The commands talk to the local agent's unix socket; only managers
//! answer them (Swarm's rule).

use crate::client;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skiff_controller::cluster::{ClusterConfig, DEFAULT_PORT};
use skiff_proto::cluster as pb;
use skiff_proto::cluster::cluster_client::ClusterClient;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use tonic::transport::Channel;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List nodes. Example: skiff node ls --format '{{.Hostname}} {{.Status}}'
    Ls(NodeLsArgs),
    /// Show a node's details as JSON. Example: skiff node inspect self
    Inspect(NodeInspectArgs),
    /// Change availability or labels. Example: skiff node update --availability drain node-2
    Update(NodeUpdateArgs),
    /// Make workers managers. Example: skiff node promote node-2
    Promote(NodesArgs),
    /// Make managers workers. Example: skiff node demote node-2
    Demote(NodesArgs),
    /// Remove nodes from the cluster. Example: skiff node rm --force node-3
    Rm(NodeRmArgs),
}

#[derive(Args, Debug)]
pub struct NodeLsArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// table, json, or a Go template over .ID .Self .Hostname .Status .Availability
    /// .ManagerStatus .EngineVersion.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    /// Node IDs, ID prefixes or hostnames (`self` is this node).
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NodeInspectArgs {
    /// Print a human-readable summary instead of JSON.
    #[arg(long)]
    pub pretty: bool,
    #[command(flatten)]
    pub nodes: NodesArgs,
}

#[derive(Args, Debug)]
pub struct NodeUpdateArgs {
    /// active, pause or drain.
    #[arg(long)]
    pub availability: Option<String>,
    /// Add or update a label (key=value).
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a label by key.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    pub node: String,
}

#[derive(Args, Debug)]
pub struct NodeRmArgs {
    /// Remove a node that is not down.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Leader, term, commit index and managers. Example: skiff cluster info
    Info,
    /// Print (or rotate) the token to join as a worker or manager.
    ///
    /// Example: skiff cluster join-token --rotate worker
    JoinToken(JoinTokenArgs),
    /// Issue a client certificate (signed by the cluster CA) for `--host tcp://`: writes
    /// ca.pem, cert.pem and key.pem (0600) into DIR. The key is made here and never sent.
    ///
    /// `client-cert ls` lists the certificates issued (and not expired); `client-cert
    /// revoke NAME|SERIAL` refuses them on every node's API port from the next request.
    ///
    /// Example: skiff cluster client-cert --name alice --out ~/.skiff/prod --expiry 30d
    ClientCert(ClientCertArgs),
}

#[derive(Subcommand, Debug)]
pub enum ClientCertAction {
    /// List the client certificates issued and not yet expired.
    ///
    /// Example: skiff cluster client-cert ls
    #[command(alias = "list")]
    Ls {
        /// Only serials.
        #[arg(short, long)]
        quiet: bool,
        /// table, json, or a Go template over .Name .Serial .Issued .Expires .Revoked.
        #[arg(long)]
        format: Option<String>,
    },
    /// Revoke every certificate of a name, or one by serial (as `ls` shows them).
    ///
    /// Example: skiff cluster client-cert revoke alice
    Revoke {
        #[arg(required = true, value_name = "NAME|SERIAL")]
        who: Vec<String>,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClientCertArgs {
    #[command(subcommand)]
    pub action: Option<ClientCertAction>,
    /// Directory to write ca.pem, cert.pem, key.pem into [default: $SKIFF_CONFIG/tls,
    /// else ~/.skiff/tls: what `--host tcp://` reads when no --tlsdir is given].
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Who holds the certificate (its common name) [default: USER@HOSTNAME].
    #[arg(long)]
    pub name: Option<String>,
    /// Validity: a number with s, m, h, d or y (days of 24 h, years of 365 d).
    #[arg(long, default_value = "90d")]
    pub expiry: String,
}

const CLIENT_CERT_COLUMNS: [(&str, &str); 5] = [
    ("Name", "NAME"),
    ("Serial", "SERIAL"),
    ("Issued", "ISSUED"),
    ("Expires", "EXPIRES"),
    ("Revoked", "REVOKED"),
];

fn print_client_certs(
    certs: &[pb::ClientCertInfo],
    quiet: bool,
    format: Option<&str>,
) -> Result<()> {
    if quiet {
        for c in certs {
            println!("{}", c.serial);
        }
        return Ok(());
    }
    let format = crate::output::Format::parse(format)?;
    let table = matches!(format, crate::output::Format::Table);
    let rows: Vec<_> = certs
        .iter()
        .map(|c| {
            serde_json::json!({
                "Name": c.name,
                "Serial": c.serial,
                "Issued": c.issued,
                "Expires": c.not_after,
                "Revoked": if c.revoked.is_empty() && table { "-" } else { &c.revoked },
            })
        })
        .collect();
    crate::output::print_rows(&format, &CLIENT_CERT_COLUMNS, &rows)
}

/// `90d` → 90 days; `s`, `m`, `h`, `d`, `y` units.
fn parse_expiry(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--expiry {s:?}: want a number and a unit, e.g. 90d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "y" => 365 * 86400,
        _ => anyhow::bail!("--expiry {s:?}: the unit must be s, m, h, d or y"),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

/// Generates a key, has a manager sign it as a client certificate, writes the files.
async fn client_cert(c: &mut ClusterClient<Channel>, a: &ClientCertArgs) -> Result<()> {
    let validity = parse_expiry(&a.expiry)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{user}@{host}")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-@".contains(*c))
                .take(64)
                .collect()
        }
    };
    let (key_pem, csr_pem) = skiff_controller::ca::new_key_and_csr()?;
    let r = c
        .client_cert(pb::ClientCertRequest {
            name: name.clone(),
            csr_pem,
            validity_secs: validity.as_secs(),
        })
        .await
        .map_err(client::status)?
        .into_inner();
    let dir = a
        .out
        .clone()
        .unwrap_or_else(crate::context::default_tls_dir);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    skiff_runtime::fsutil::create_dir_mode(&dir, 0o700)
        .with_context(|| format!("creating {}", dir.display()))?;
    let write = |f: &str, data: &str, mode: u32| {
        let p = dir.join(f);
        crate::context::write_private(&p, data.as_bytes(), mode)
            .with_context(|| format!("writing {}", p.display()))
    };
    write("key.pem", &key_pem, 0o600)?;
    write("cert.pem", &r.cert_pem, 0o644)?;
    write("ca.pem", &r.ca_pem, 0o644)?;
    println!(
        "Client certificate {name:?} (serial {}, expires {}) written to {}",
        r.serial,
        r.not_after,
        dir.display()
    );
    eprintln!(
        "Use it with: skiff --host tcp://MANAGER:2376 --tlsdir {} ps   (the agent needs --api-listen-addr)",
        dir.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    /// worker or manager.
    pub role: String,
    /// Replace the token: the old one stops working.
    #[arg(long)]
    pub rotate: bool,
    /// Only display the token.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The agent's cluster flags (`skiff agent --join ... --token ...`).
#[derive(Args, Debug, Clone)]
pub struct AgentClusterArgs {
    /// Join the cluster of the manager at ADDR:PORT (needs --token).
    #[arg(long, value_name = "ADDR:PORT", requires = "token")]
    pub join: Option<String>,
    /// Join token, from `skiff cluster join-token worker|manager` on a manager.
    #[arg(long, env = "SKIFF_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Address other nodes use to reach this one: IP or IP:PORT (default: the listen address).
    #[arg(long, value_name = "IP[:PORT]")]
    pub advertise_addr: Option<String>,
    /// Open the mutual-TLS cluster port on IP[:PORT] (port 2377 if omitted). Without it the
    /// agent opens no TCP port at all.
    #[arg(long, value_name = "IP[:PORT]")]
    pub listen_addr: Option<String>,
    /// The TCP port a worker without --listen-addr serves its images on to the other
    /// nodes (mutual TLS, current members only), at its advertise IP or the IP it joined
    /// from; nodes with a cluster port serve them there. 0: not served (default 7946;
    /// agent.yaml `image_share_port`).
    #[arg(long, value_name = "PORT")]
    pub image_share_port: Option<u16>,
    /// How often nodes heartbeat to the leader (milliseconds).
    #[arg(long, default_value_t = 1000, hide = true)]
    pub heartbeat_ms: u64,
    /// Silence after which the leader marks a node down (milliseconds).
    #[arg(long, default_value_t = 3000, hide = true)]
    pub down_grace_ms: u64,
    /// Lifetime of node certificates (seconds); renewed at half-life.
    #[arg(long, default_value_t = 90 * 24 * 3600, hide = true)]
    pub cert_validity_secs: u64,
    /// Pool overlay network subnets are carved from (/24 each), when this manager leads
    /// (repeatable; default 10.0.0.0/8). Give every manager the same pools.
    #[arg(long = "default-addr-pool", value_name = "CIDR")]
    pub default_addr_pool: Vec<ipnet::Ipv4Net>,
    /// UDP port of overlay (VXLAN) traffic; every node of a cluster must use the same.
    #[arg(long, value_name = "PORT", default_value_t = 4789)]
    pub data_path_port: u16,
    /// An engine label, KEY=VALUE (repeatable); `engine.labels.KEY` constraints match it.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

/// Engine labels from agent.yaml's `labels` and then the `--label` flags (later wins).
pub fn engine_labels<'a>(
    items: impl IntoIterator<Item = &'a String>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for l in items {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .with_context(|| format!("invalid engine label {l:?}: want KEY=VALUE"))?;
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

pub fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .parse()
        .with_context(|| format!("{s:?} is not an IP or IP:PORT"))?;
    Ok(SocketAddr::new(ip, default_port))
}

/// Builds the controller's configuration from the agent's flags.
pub fn cluster_config(a: &AgentClusterArgs, root: &Path) -> Result<ClusterConfig> {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let mut c = ClusterConfig::new(
        root.join("cluster"),
        hostname,
        env!("CARGO_PKG_VERSION").into(),
    );
    c.listen_addr = a
        .listen_addr
        .as_deref()
        .map(|s| parse_addr(s, DEFAULT_PORT))
        .transpose()
        .context("--listen-addr")?;
    let listen_port = c.listen_addr.map_or(DEFAULT_PORT, |l| l.port());
    c.advertise_addr = a
        .advertise_addr
        .as_deref()
        .map(|s| parse_addr(s, listen_port).map(|x| x.to_string()))
        .transpose()
        .context("--advertise-addr")?;
    if c.advertise_addr.is_none() {
        if let Some(l) = c.listen_addr {
            anyhow::ensure!(!l.ip().is_unspecified(), "--listen-addr {l} is a wildcard: pass --advertise-addr so other nodes know where to reach this one");
        }
    }
    if let (Some(j), Some(t)) = (&a.join, &a.token) {
        let addr = parse_addr(j, DEFAULT_PORT).context("--join")?;
        c.join = Some((addr.to_string(), t.clone()));
    }
    c.heartbeat_period = std::time::Duration::from_millis(a.heartbeat_ms.max(50));
    c.down_grace = std::time::Duration::from_millis(a.down_grace_ms.max(a.heartbeat_ms * 2));
    c.cert_validity = std::time::Duration::from_secs(a.cert_validity_secs.max(10));
    Ok(c)
}

async fn connect(host: &str) -> Result<ClusterClient<Channel>> {
    // The CLI's one connector, so every command reports a refused socket the same way.
    Ok(ClusterClient::new(client::channel(host).await?))
}

/// `self` means this node.
async fn resolve(c: &mut ClusterClient<Channel>, node: &str) -> Result<String> {
    if node == "self" {
        return Ok(c
            .info(pb::Empty {})
            .await
            .map_err(client::status)?
            .into_inner()
            .node_id);
    }
    Ok(node.to_string())
}

pub async fn node(host: &str, cmd: &NodeCommand) -> Result<i32> {
    let mut c = connect(host).await?;
    match cmd {
        NodeCommand::Ls(a) => {
            let me = c
                .info(pb::Empty {})
                .await
                .map_err(client::status)?
                .into_inner()
                .node_id;
            let mut nodes = c
                .node_list(pb::Empty {})
                .await
                .map_err(client::status)?
                .into_inner()
                .nodes;
            nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
            if a.quiet {
                for n in nodes {
                    println!("{}", n.id);
                }
                return Ok(0);
            }
            let format = crate::output::Format::parse(a.format.as_deref())?;
            let table = matches!(format, crate::output::Format::Table);
            let rows: Vec<_> = nodes.iter().map(|n| node_row(n, &me, table)).collect();
            crate::output::print_rows(&format, &NODE_COLUMNS, &rows)?;
        }
        NodeCommand::Inspect(a) => {
            let mut out = Vec::new();
            for (i, n) in a.nodes.nodes.iter().enumerate() {
                let id = resolve(&mut c, n).await?;
                let info = c
                    .node_inspect(pb::NodeRef { node: id })
                    .await
                    .map_err(client::status)?
                    .into_inner();
                if a.pretty {
                    if i > 0 {
                        println!();
                    }
                    print!("{}", node_pretty(&info));
                } else {
                    out.push(inspect_json(&info));
                }
            }
            if !a.pretty {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        NodeCommand::Update(a) => {
            let mut label_add = std::collections::HashMap::new();
            for l in &a.label_add {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                label_add.insert(k.to_string(), v.to_string());
            }
            let id = resolve(&mut c, &a.node).await?;
            let req = pb::NodeUpdateRequest {
                node: id,
                availability: a.availability.clone().unwrap_or_default(),
                label_add,
                label_rm: a.label_rm.clone(),
                role: String::new(),
            };
            let n = c
                .node_update(req)
                .await
                .map_err(client::status)?
                .into_inner();
            println!("{}", a.node.replace("self", &n.id));
        }
        NodeCommand::Promote(a) | NodeCommand::Demote(a) => {
            let (role, verb) = if matches!(cmd, NodeCommand::Promote(_)) {
                ("manager", "promoted to")
            } else {
                ("worker", "demoted in")
            };
            for n in &a.nodes {
                let id = resolve(&mut c, n).await?;
                let req = pb::NodeUpdateRequest {
                    node: id,
                    role: role.into(),
                    ..Default::default()
                };
                c.node_update(req).await.map_err(client::status)?;
                if role == "manager" {
                    println!("Node {n} {verb} a manager in the swarm.");
                } else {
                    println!("Manager {n} {verb} the swarm.");
                }
            }
        }
        NodeCommand::Rm(a) => {
            for n in &a.nodes {
                let id = resolve(&mut c, n).await?;
                c.node_remove(pb::NodeRemoveRequest {
                    node: id,
                    force: a.force,
                })
                .await
                .map_err(client::status)?;
                println!("{n}");
            }
        }
    }
    Ok(0)
}

pub async fn cluster(host: &str, cmd: &ClusterCommand) -> Result<i32> {
    let mut c = connect(host).await?;
    match cmd {
        ClusterCommand::Info => {
            let i = c
                .info(pb::Empty {})
                .await
                .map_err(client::status)?
                .into_inner();
            println!("Node ID: {}", i.node_id);
            println!("Is Manager: {}", i.is_manager);
            println!(
                "Cluster Port: {}",
                if i.listen_addr.is_empty() {
                    "none (private cluster)"
                } else {
                    &i.listen_addr
                }
            );
            println!("CA Digest: sha256:{}", i.ca_digest);
            if i.is_manager {
                println!("Cluster ID: {}", i.cluster_id);
                println!(
                    "Leader: {}",
                    if i.leader_id.is_empty() {
                        "none"
                    } else {
                        &i.leader_id
                    }
                );
                println!("Raft Term: {}", i.term);
                println!("Commit Index: {}", i.commit_index);
                println!("Applied Index: {}", i.applied_index);
                println!("Nodes: {}", i.nodes);
                println!("Managers: {}", i.managers.len());
                for m in &i.managers {
                    println!(
                        "  {} {} {} {}",
                        m.id,
                        m.hostname,
                        if m.addr.is_empty() { "-" } else { &m.addr },
                        m.manager_status
                    );
                }
            }
        }
        ClusterCommand::ClientCert(a) => match &a.action {
            None => client_cert(&mut c, a).await?,
            Some(ClientCertAction::Ls { quiet, format }) => {
                let certs = c
                    .list_client_certs(pb::Empty {})
                    .await
                    .map_err(client::status)?
                    .into_inner()
                    .certs;
                print_client_certs(&certs, *quiet, format.as_deref())?;
            }
            Some(ClientCertAction::Revoke { who }) => {
                for w in who {
                    let certs = c
                        .revoke_client_cert(pb::RevokeClientCertRequest {
                            name_or_serial: w.clone(),
                        })
                        .await
                        .map_err(client::status)?
                        .into_inner()
                        .certs;
                    for cert in certs {
                        println!("revoked {} ({})", cert.serial, cert.name);
                    }
                }
            }
        },
        ClusterCommand::JoinToken(a) => {
            let r = c
                .join_token(pb::JoinTokenRequest {
                    role: a.role.clone(),
                    rotate: a.rotate,
                })
                .await
                .map_err(client::status)?
                .into_inner();
            if a.quiet {
                println!("{}", r.token);
                return Ok(0);
            }
            if a.rotate {
                println!("Successfully rotated {} join token.\n", a.role);
            }
            let addr = if r.addr.is_empty() {
                "<manager address: start it with --listen-addr>".to_string()
            } else {
                r.addr
            };
            println!(
                "To add a {} to this cluster, run the following command:\n",
                a.role
            );
            println!(
                "    skiff agent --join {addr} --token {} --listen-addr <IP:PORT>\n",
                r.token
            );
        }
    }
    Ok(0)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

const NODE_COLUMNS: [(&str, &str); 6] = [
    ("ID", "ID"),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("EngineVersion", "ENGINE VERSION"),
];

/// One `node ls` row with Docker's template field names. The default table marks this
/// node's ID with ` *`, as Docker does; templates get the bare ID and `.Self`.
fn node_row(n: &pb::NodeInfo, me: &str, table: bool) -> serde_json::Value {
    let id = if table && n.id == me {
        format!("{} *", n.id)
    } else {
        n.id.clone()
    };
    serde_json::json!({
        "ID": id,
        "Self": n.id == me,
        "Hostname": n.hostname,
        "Status": capitalize(&n.status),
        "Availability": capitalize(&n.availability),
        "ManagerStatus": n.manager_status,
        "EngineVersion": n.engine_version,
    })
}

/// `node inspect --pretty`: Docker's human-readable layout, as far as Skiff has the
/// fields.
fn node_pretty(n: &pb::NodeInfo) -> String {
    use std::fmt::Write as _;
    fn line(s: &mut String, k: &str, v: &str) {
        let _ = writeln!(s, "{:<24}{v}", format!("{k}:"));
    }
    fn labels(s: &mut String, title: &str, m: &std::collections::HashMap<String, String>) {
        if m.is_empty() {
            return;
        }
        let _ = writeln!(s, "{title}:");
        let mut kv: Vec<_> = m.iter().collect();
        kv.sort();
        for (k, v) in kv {
            let _ = writeln!(s, " - {k}={v}");
        }
    }
    let mut s = String::new();
    line(&mut s, "ID", &n.id);
    line(&mut s, "Hostname", &n.hostname);
    line(&mut s, "Joined at", &n.created_at);
    line(&mut s, "Status", "");
    line(&mut s, " State", &capitalize(&n.status));
    line(&mut s, " Availability", &capitalize(&n.availability));
    line(&mut s, " Address", n.addr.split(':').next().unwrap_or(""));
    if n.role == "manager" {
        let reachable = if n.manager_status == "Unreachable" {
            "Unreachable"
        } else {
            "Reachable"
        };
        let leader = if n.manager_status == "Leader" {
            "Yes"
        } else {
            "No"
        };
        line(&mut s, "Manager Status", "");
        line(&mut s, " Address", &n.addr);
        line(&mut s, " Raft Status", reachable);
        line(&mut s, " Leader", leader);
    }
    labels(&mut s, "Labels", &n.labels);
    line(&mut s, "Platform", "");
    line(&mut s, " Operating System", &n.os);
    line(&mut s, " Architecture", &n.arch);
    line(&mut s, "Resources", "");
    line(&mut s, " CPUs", &(n.nano_cpus / 1_000_000_000).to_string());
    line(
        &mut s,
        " Memory",
        &super::volume::human_binary(n.memory_bytes.max(0) as u64),
    );
    line(&mut s, "Engine Version", &n.engine_version);
    labels(&mut s, "Engine Labels", &n.engine_labels);
    s
}

/// Docker's node inspect shape, as far as Skiff has the fields.
fn inspect_json(n: &pb::NodeInfo) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ID": n.id,
        "Version": {"Index": n.version},
        "CreatedAt": n.created_at,
        "UpdatedAt": n.updated_at,
        "Spec": {"Labels": n.labels, "Role": n.role, "Availability": n.availability},
        "Description": {
            "Hostname": n.hostname,
            "Platform": {"Architecture": n.arch, "OS": n.os},
            "Resources": {"NanoCPUs": n.nano_cpus, "MemoryBytes": n.memory_bytes},
            "Engine": {"EngineVersion": n.engine_version, "Labels": n.engine_labels},
        },
        "Status": {"State": n.status, "Addr": n.addr.split(':').next().unwrap_or("")},
    });
    if n.role == "manager" {
        v["ManagerStatus"] = serde_json::json!({
            "Leader": n.manager_status == "Leader",
            "Reachability": if n.manager_status == "Unreachable" { "unreachable" } else { "reachable" },
            "Addr": n.addr,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_node_inspect_shows_resources_and_engine_labels() {
        let n = pb::NodeInfo {
            id: "n1".into(),
            hostname: "host-a".into(),
            status: "ready".into(),
            availability: "active".into(),
            role: "manager".into(),
            manager_status: "Leader".into(),
            addr: "10.0.0.1:2377".into(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 25_276_510_208,
            engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            ..Default::default()
        };
        let p = node_pretty(&n);
        for want in [
            "ID:                     n1\n",
            " State:                 Ready\n",
            " Address:               10.0.0.1\n",
            " Leader:                Yes\n",
            " CPUs:                  2\n",
            " Memory:                23.5GiB\n",
            "Engine Labels:\n - disk=ssd\n",
        ] {
            assert!(p.contains(want), "{want:?} not in:\n{p}");
        }
        assert!(!p.contains("\nLabels:"), "no node labels, no section:\n{p}");
    }

    #[test]
    fn node_rows_mark_self_in_tables_only() {
        let n = pb::NodeInfo {
            id: "n1".into(),
            hostname: "host-a".into(),
            status: "ready".into(),
            availability: "active".into(),
            manager_status: "Leader".into(),
            engine_version: "0.1.0".into(),
            ..Default::default()
        };
        let table = crate::output::render_rows(
            &crate::output::Format::Table,
            &NODE_COLUMNS,
            &[node_row(&n, "n1", true)],
        )
        .expect("table");
        assert!(table.contains("n1 *      host-a"), "{table}");
        let f = crate::output::Format::parse(Some("{{.ID}} {{.Self}} {{.Status}}")).expect("f");
        let t = crate::output::render_rows(&f, &NODE_COLUMNS, &[node_row(&n, "n1", false)])
            .expect("template");
        assert_eq!(t, "n1 true Ready\n");
        let j = crate::output::render_rows(
            &crate::output::Format::Json,
            &NODE_COLUMNS,
            &[node_row(&n, "other", false)],
        )
        .expect("json");
        let v: serde_json::Value = serde_json::from_str(j.trim()).expect("json");
        assert_eq!(v["Self"], false);
        assert_eq!(v["ManagerStatus"], "Leader");
    }
}
