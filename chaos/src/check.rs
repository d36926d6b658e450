//! The invariants checked after the cluster was healed, each reported PASS or FAIL with
//! what broke it:
//!
//! 1. every acknowledged spec change is present on every manager ([`acked_changes`]);
//! 2. every service converges to its spec within a bound ([`converge`]): the tasks the
//!    state holds and the containers the hosts run agree with it;
//! 3. no slot runs two tasks ([`slots`]), in the state nor on the hosts;
//! 4. nothing is left that belongs to no task ([`leftovers`]): containers, mounts, shims,
//!    veths, bridges, VXLAN devices, nftables rules, cgroups;
//! 5. the state machines of all managers hash equal ([`hashes`]).

use crate::api;
use crate::hosts::{Hosts, Node, CHAOS_TABLE};
use crate::workload::{self, Field, Op};
use skiff_proto::engine::ContainerSummary;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const LABEL_TASK: &str = "com.docker.swarm.task.id";
const LABEL_SERVICE: &str = "com.docker.swarm.service.name";
/// Standby network namespaces an agent keeps ready (node-agent/src/network/standby.rs:
/// two for each of four networks and two bare ones), and their host links (the
/// networks' only): the agent's own, not a task's, but never more.
const STANDBY_NAMESPACES: usize = 10;
const STANDBY_LINKS: usize = 8;

/// One invariant's verdict.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub details: Vec<String>,
}

impl Check {
    fn new(name: &str, problems: Vec<String>, note: String) -> Check {
        let passed = problems.is_empty();
        Check {
            name: name.into(),
            passed,
            details: if passed { vec![note] } else { problems },
        }
    }
}

/// What the cluster looks like at one moment: the state (read from one manager) and
/// every host's containers.
struct World {
    services: Vec<api::Object>,
    tasks: Vec<api::Object>,
    /// Cluster networks (overlays carry their allocation: which nodes take part).
    networks: Vec<api::Object>,
    /// hostname → node ID.
    node_ids: BTreeMap<String, String>,
    /// node ID → status.
    node_status: BTreeMap<String, String>,
    containers: BTreeMap<String, Vec<ContainerSummary>>,
}

impl World {
    async fn read(hosts: &Hosts) -> Result<World, String> {
        let mut last = String::from("no manager answered");
        for m in hosts.managers() {
            let r = async {
                let services = api::list(&m.sock, "service").await?;
                let tasks = api::list(&m.sock, "task").await?;
                let networks = api::list(&m.sock, "network").await?;
                let nodes = api::nodes(&m.sock).await?;
                Ok::<_, crate::ChaosError>((services, tasks, networks, nodes))
            }
            .await;
            match r {
                Ok((services, tasks, networks, nodes)) => {
                    let mut containers = BTreeMap::new();
                    for n in &hosts.nodes {
                        let c = api::containers(&n.sock)
                            .await
                            .map_err(|e| format!("{}: {e}", n.name))?;
                        containers.insert(n.name.clone(), c);
                    }
                    return Ok(World {
                        services,
                        tasks,
                        networks,
                        node_ids: nodes.iter().map(|n| (n.1.clone(), n.0.clone())).collect(),
                        node_status: nodes.iter().map(|n| (n.0.clone(), n.2.clone())).collect(),
                        containers,
                    });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn tasks_of<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a api::Object> {
        self.tasks
            .iter()
            .filter(move |t| t.spec["service_id"].as_str() == Some(service_id))
    }

    fn hostname_of(&self, node_id: &str) -> Option<&str> {
        self.node_ids
            .iter()
            .find(|(_, id)| id.as_str() == node_id)
            .map(|(h, _)| h.as_str())
    }

    /// Running containers whose task, in the state, is assigned to that very host,
    /// desired running and running: the containers that belong to a task.
    fn owned(&self, host: &str) -> BTreeSet<String> {
        let me = self.node_ids.get(host).cloned().unwrap_or_default();
        let Some(cs) = self.containers.get(host) else {
            return BTreeSet::new();
        };
        cs.iter()
            .filter(|c| c.state == "running")
            .filter(|c| {
                c.labels.get(LABEL_TASK).is_some_and(|tid| {
                    self.tasks.iter().any(|t| {
                        t.id == *tid
                            && t.spec["node_id"].as_str() == Some(me.as_str())
                            && t.spec["desired"] == "running"
                            && t.spec["status"]["state"] == "running"
                    })
                })
            })
            .map(|c| c.id.clone())
            .collect()
    }
}

fn task_marker(t: &api::Object) -> Option<u64> {
    workload::observe(&serde_json::json!({"spec": {"template": t.spec["template"]}})).1
}

/// Why the world has not converged yet (empty: converged).
fn unconverged(w: &World) -> Vec<String> {
    let mut why = vec![];
    for (id, status) in &w.node_status {
        if status != "ready" {
            why.push(format!(
                "node {} is {status}",
                w.hostname_of(id).unwrap_or(id)
            ));
        }
    }
    for s in &w.services {
        let (replicas, marker) = workload::observe(&s.spec);
        let Some(replicas) = replicas else { continue };
        let wanted: Vec<&api::Object> = w
            .tasks_of(&s.id)
            .filter(|t| t.spec["desired"] == "running")
            .collect();
        let running: Vec<&&api::Object> = wanted
            .iter()
            .filter(|t| t.spec["status"]["state"] == "running")
            .collect();
        if running.len() as u64 != replicas || wanted.len() != running.len() {
            why.push(format!(
                "{}: {}/{replicas} tasks running ({} desired running)",
                s.name,
                running.len(),
                wanted.len()
            ));
            continue;
        }
        if let Some(t) = running.iter().find(|t| task_marker(t) != marker) {
            why.push(format!(
                "{}: task {} runs spec {:?}, the service is at {marker:?}",
                s.name,
                t.id,
                task_marker(t)
            ));
            continue;
        }
        // The hosts agree: each running task has its running container where it should.
        for t in &running {
            let node = t.spec["node_id"].as_str().unwrap_or_default();
            let host = w.hostname_of(node).unwrap_or_default();
            let found = w.containers.get(host).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.state == "running" && c.labels.get(LABEL_TASK) == Some(&t.id))
            });
            if !found {
                why.push(format!(
                    "{}: task {} has no running container on {host}",
                    s.name, t.id
                ));
            }
        }
        let extra: usize = w
            .containers
            .values()
            .flatten()
            .filter(|c| c.state == "running" && c.labels.get(LABEL_SERVICE) == Some(&s.name))
            .count();
        if extra as u64 != replicas {
            why.push(format!(
                "{}: {extra} running containers on the hosts for {replicas} replicas",
                s.name
            ));
        }
    }
    why
}

/// Invariant 2: polls until the state and the hosts match every service's spec.
pub async fn converge(hosts: &Hosts, bound: Duration) -> Check {
    let name = format!("every service converges to its spec within {bound:?}");
    let t0 = Instant::now();
    let mut last = vec![];
    while t0.elapsed() < bound {
        match World::read(hosts).await {
            Ok(w) => {
                last = unconverged(&w);
                if last.is_empty() {
                    return Check::new(
                        &name,
                        vec![],
                        format!(
                            "{} services converged {:.1}s after healing",
                            w.services.len(),
                            t0.elapsed().as_secs_f64()
                        ),
                    );
                }
            }
            Err(e) => last = vec![format!("cannot read the cluster: {e}")],
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Check::new(&name, last, String::new())
}

/// Invariant 1: each manager's services against what the history allows.
pub async fn acked_changes(hosts: &Hosts, ops: &[Op]) -> Check {
    let name = "every acknowledged spec change is present on every manager";
    let expect = workload::expectations(ops);
    let services: BTreeSet<&String> = expect.keys().map(|(s, _)| s).collect();
    let mut problems = vec![];
    let acked = ops
        .iter()
        .filter(|o| o.outcome == workload::Outcome::Ok)
        .count();
    for m in hosts.managers() {
        let objs = match api::list(&m.sock, "service").await {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("{}: cannot list services: {e}", m.name));
                continue;
            }
        };
        for o in &objs {
            if !services.contains(&o.name) {
                problems.push(format!("{}: service {} was never written", m.name, o.name));
            }
        }
        for svc in &services {
            let found = objs.iter().find(|o| &o.name == *svc);
            let (replicas, marker) = found.map_or((None, None), |o| workload::observe(&o.spec));
            let mut fields = vec![(Field::Exists, found.map(|_| 1))];
            if found.is_some() {
                fields.push((Field::Replicas, replicas));
                fields.push((Field::Marker, marker));
            }
            for (field, seen) in fields {
                let Some(allowed) = expect.get(&((*svc).clone(), field)) else {
                    continue;
                };
                if !allowed.allows(seen) {
                    problems.push(format!(
                        "{}: {svc} {field:?} is {seen:?}, but the last acknowledged write (op {}) set {:?}{}",
                        m.name,
                        allowed.acked_by.map_or("-".into(), |s| s.to_string()),
                        allowed.acked,
                        if allowed.maybe.is_empty() {
                            String::new()
                        } else {
                            format!(" and unknown-outcome ops may have set {:?}", allowed.maybe)
                        }
                    ));
                }
            }
        }
    }
    Check::new(
        name,
        problems,
        format!(
            "{acked} acknowledged of {} operations; {} services checked on {} managers",
            ops.len(),
            services.len(),
            hosts.managers().count()
        ),
    )
}

/// Invariant 3: no (service, slot) with two running tasks or two running containers.
pub async fn slots(hosts: &Hosts) -> Check {
    let name = "no slot runs two tasks after convergence";
    // Several looks over a few seconds: a duplicate that lingers is what matters. A node
    // that comes back still runs its replaced tasks until it has stopped them (their
    // stop grace period, then the report), which can overlap the first looks; a slot
    // duplicated in every look, for four seconds, is a real one.
    const LOOKS: usize = 5;
    let mut seen: BTreeMap<(String, u64), (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut unreadable = None;
    for _ in 0..LOOKS {
        let w = match World::read(hosts).await {
            Ok(w) => w,
            Err(e) => {
                unreadable = Some(format!("cannot read the cluster: {e}"));
                break;
            }
        };
        let mut in_state: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for t in &w.tasks {
            if t.spec["status"]["state"] == "running" {
                let key = (
                    t.spec["service_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    t.spec["slot"].as_u64().unwrap_or_default(),
                );
                in_state.entry(key).or_default().push(t.id.clone());
            }
        }
        let mut on_hosts: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for (host, cs) in &w.containers {
            for c in cs.iter().filter(|c| c.state == "running") {
                let Some(t) = c
                    .labels
                    .get(LABEL_TASK)
                    .and_then(|id| w.tasks.iter().find(|t| &t.id == id))
                else {
                    continue;
                };
                let slot = t.spec["slot"].as_u64().unwrap_or_default();
                if slot == 0 {
                    continue; // global services have no slots
                }
                let svc = t.spec["service_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                on_hosts
                    .entry((svc, slot))
                    .or_default()
                    .push(format!("{host}:{}", &c.id[..12.min(c.id.len())]));
            }
        }
        let mut this_look: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
        for ((svc, slot), ids) in in_state.iter().chain(on_hosts.iter()) {
            if ids.len() > 1 && *slot > 0 {
                this_look
                    .entry((svc.clone(), *slot))
                    .or_default()
                    .insert(format!("runs {}: {}", ids.len(), ids.join(", ")));
            }
        }
        for (key, what) in this_look {
            let e = seen.entry(key).or_default();
            e.0 += 1;
            e.1.extend(what);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let problems = unreadable
        .into_iter()
        .chain(
            seen.into_iter()
                .filter(|(_, (looks, _))| *looks == LOOKS)
                .flat_map(|((svc, slot), (_, what))| {
                    what.into_iter().map(move |w| format!("{svc}.{slot} {w}"))
                }),
        )
        .collect();
    Check::new(
        name,
        problems,
        format!("checked {LOOKS} times over {LOOKS} s, in the state and on every host; a slot fails if duplicated in every look"),
    )
}

/// The IPv4 addresses in a string.
fn ipv4s(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.parse::<std::net::Ipv4Addr>().is_ok())
        .map(String::from)
        .collect()
}

/// The quoted interface names in `iifname "x"` / `oifname "x"` clauses of nft output.
fn nft_ifnames(s: &str) -> Vec<String> {
    let mut out = vec![];
    for key in ["iifname \"", "oifname \"", "iifname != \"", "oifname != \""] {
        let mut rest = s;
        while let Some(i) = rest.find(key) {
            rest = &rest[i + key.len()..];
            if let Some(j) = rest.find('"') {
                out.push(rest[..j].to_string());
                rest = &rest[j..];
            }
        }
    }
    out
}

/// A container's network attachments: (network ID, IP, host-side veth).
fn sandbox(node: &Node, container: &str) -> Vec<(String, String, String)> {
    let p = node
        .exec_root()
        .join("network/sandboxes")
        .join(format!("{container}.json"));
    let Ok(b) = std::fs::read(&p) else {
        return vec![];
    };
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    v["attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["network_id"].as_str().unwrap_or_default().to_string(),
                        x["ip"].as_str().unwrap_or_default().to_string(),
                        x["host_if"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's local network records: (network ID, bridge, VXLAN device if an overlay).
fn networks(node: &Node) -> Vec<(String, String, Option<String>)> {
    let Ok(rd) = std::fs::read_dir(node.root().join("network")) else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["bridge"].as_str().unwrap_or_default().to_string(),
                v["overlay"]["vxlan"].as_str().map(String::from),
            )
        })
        .collect()
}

/// HOOK(overlay, issue 8): the overlay networks `host` takes part in, by cluster network
/// ID. The cluster decides membership (`alloc.nodes` of the network object: hosts that
/// run its tasks, and every host for a network carrying a routing-mesh port); a host's
/// bridge and VXLAN device of an overlay belong to a task exactly while it is a member.
/// Every VXLAN link in the host's namespace is checked against this whatever its name
/// (`skv*` as first planned, or the agent's `<prefix>x<hash>`), so a device the
/// overlay code forgets to remove is caught.
fn member_overlays(w: &World, host: &str) -> BTreeSet<String> {
    let me = w.node_ids.get(host).cloned().unwrap_or_default();
    w.networks
        .iter()
        .filter(|n| n.spec["alloc"]["nodes"].get(&me).is_some())
        .map(|n| n.id.clone())
        .collect()
}

/// HOOK(overlay, issue 8): the VXLAN devices of `node` that belong to an overlay it is
/// a member of (the agent's network record names the device:
/// `<root>/network/<id>.json` → `overlay.vxlan`).
fn owned_vxlans(node: &Node, members: &BTreeSet<String>) -> BTreeSet<String> {
    networks(node)
        .into_iter()
        .filter(|(id, _, _)| members.contains(id))
        .filter_map(|(_, _, vx)| vx)
        .collect()
}

/// For a report: which cluster network a local overlay device is for, and which nodes
/// the cluster has taking part in it.
fn overlay_context(w: &World, node: &Node, dev: &str) -> String {
    let Some((id, _, _)) = networks(node)
        .into_iter()
        .find(|(_, bridge, vx)| bridge == dev || vx.as_deref() == Some(dev))
    else {
        return " (no local network record names it)".into();
    };
    let Some(net) = w.networks.iter().find(|n| n.id == id) else {
        return format!(" (network {id} no longer exists in the cluster)");
    };
    let members: Vec<String> = net.spec["alloc"]["nodes"]
        .as_object()
        .map(|m| {
            m.keys()
                .map(|k| w.hostname_of(k).unwrap_or(k).to_string())
                .collect()
        })
        .unwrap_or_default();
    format!(
        " (network {}; the cluster has {:?} taking part)",
        net.name, members
    )
}

/// The targets of `dnat` statements in a line of `nft list` output (not `ct status dnat`
/// matches).
fn dnat_targets(line: &str) -> Vec<String> {
    ["dnat ip to ", "dnat to "]
        .iter()
        .filter_map(|k| line.split_once(k).map(|(_, t)| t))
        .flat_map(ipv4s)
        .collect()
}

/// Everything of one host that belongs to no task.
async fn host_leftovers(node: &Node, w: &World, cluster_ips: &BTreeSet<String>) -> Vec<String> {
    let mut out = vec![];
    let owned = w.owned(&node.name);
    // Containers.
    for c in w.containers.get(&node.name).into_iter().flatten() {
        if !owned.contains(&c.id) {
            out.push(format!(
                "container {} ({}, {}, task {}) belongs to no running task of this host",
                &c.id[..12.min(c.id.len())],
                c.names.join(","),
                c.state,
                c.labels.get(LABEL_TASK).map_or("-", |s| s.as_str())
            ));
        }
    }
    let container_of = |path: &str| -> Option<String> {
        let run = node.exec_root().to_string_lossy().into_owned();
        let rest = path.strip_prefix(&run)?;
        let mut parts = rest.trim_start_matches('/').split('/');
        match (parts.next(), parts.next()) {
            (Some("netns" | "containers"), Some(id)) => Some(id.to_string()),
            _ => None,
        }
    };
    // Mounts (the host's own --root filesystem and its exec root's tmpfs aside).
    let base = node.dir.to_string_lossy().into_owned();
    let root = node.root().to_string_lossy().into_owned();
    let exec_root = node.exec_root().to_string_lossy().into_owned();
    let mut standby_mounts = 0;
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let Some(p) = line.split(' ').nth(4) else {
            continue;
        };
        if !p.starts_with(&format!("{base}/")) || p == root || p == exec_root {
            continue;
        }
        if p.starts_with(&format!("{exec_root}/netns-standby/")) {
            standby_mounts += 1;
            continue;
        }
        match container_of(p) {
            Some(id) if owned.contains(&id) => {}
            _ => out.push(format!("mount {p} belongs to no running task")),
        }
    }
    if standby_mounts > STANDBY_NAMESPACES {
        out.push(format!(
            "{standby_mounts} standby network namespaces (an agent keeps at most {STANDBY_NAMESPACES})"
        ));
    }
    // Shims.
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            let args: Vec<&str> = cmd.split('\0').collect();
            // `skiff-shim ...`, or `skiff shim ...` (the fallback, older agents).
            let is_shim =
                args[0].rsplit('/').next() == Some("skiff-shim") || args.get(1) == Some(&"shim");
            if !is_shim {
                continue;
            }
            let exec_root = node.exec_root().to_string_lossy().into_owned();
            let Some(p) = args.iter().find(|a| a.starts_with(&exec_root)) else {
                continue;
            };
            match container_of(p) {
                Some(id) if owned.contains(&id) => {}
                _ => out.push(format!(
                    "shim process {} ({p}) belongs to no running task",
                    e.file_name().to_string_lossy()
                )),
            }
        }
    }
    // Links: veths of live containers, bridges of networks in use, VXLAN devices.
    let mut attached: BTreeSet<String> = BTreeSet::new();
    let mut veths: BTreeSet<String> = BTreeSet::new();
    for id in &owned {
        for (net, _, host_if) in sandbox(node, id) {
            attached.insert(net);
            veths.insert(host_if);
        }
    }
    let prefix = node.link_prefix();
    let members = member_overlays(w, &node.name);
    let vxlans = owned_vxlans(node, &members);
    let mut bridges: BTreeSet<String> = [format!("{prefix}0")].into();
    for (id, bridge, vx) in networks(node) {
        // Local bridge networks stay until removed; an overlay's side while a member
        // (or while a container still uses it).
        if vx.is_none() || members.contains(&id) || attached.contains(&id) {
            bridges.insert(bridge);
        }
    }
    let links: Vec<(String, String)> = match node
        .in_netns(&["ip", "-j", "-d", "link", "show"], None)
        .await
    {
        Ok(j) => serde_json::from_str::<serde_json::Value>(&j)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|l| {
                (
                    l["ifname"].as_str().unwrap_or_default().to_string(),
                    l["linkinfo"]["info_kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect(),
        Err(e) => {
            out.push(format!("cannot list links: {e}"));
            vec![]
        }
    };
    let mut standby_links = 0;
    for (name, kind) in &links {
        if name == "lo" || name == "eth0" {
            continue;
        }
        if kind == "vxlan" || name.starts_with("skv") {
            if !vxlans.contains(name) {
                out.push(format!(
                    "VXLAN device {name} belongs to no task on this host{}",
                    overlay_context(w, node, name)
                ));
            }
        } else if name.starts_with(&format!("{prefix}s")) {
            standby_links += 1;
        } else if !(veths.contains(name) || bridges.contains(name)) {
            out.push(format!(
                "{kind} link {name} belongs to no task on this host"
            ));
        }
    }
    if standby_links > STANDBY_LINKS {
        out.push(format!(
            "{standby_links} standby veths (an agent keeps at most {STANDBY_LINKS})"
        ));
    }
    let link_names: BTreeSet<&String> = links.iter().map(|(n, _)| n).collect();
    // nftables: only the agent's table; its DNAT targets are live tasks; its interface
    // matches name existing links.
    match node.in_netns(&["nft", "list", "tables"], None).await {
        Ok(t) => {
            for line in t.lines().filter(|l| !l.trim().is_empty()) {
                if line.trim() != format!("table inet {}", node.nft_table()) {
                    let why = if line.contains(CHAOS_TABLE) {
                        "the nemesis's table outlived the heal"
                    } else {
                        "not the agent's"
                    };
                    out.push(format!("nft {} ({why})", line.trim()));
                }
            }
        }
        Err(e) => out.push(format!("cannot list nft tables: {e}")),
    }
    if let Ok(rules) = node
        .in_netns(&["nft", "list", "table", "inet", &node.nft_table()], None)
        .await
    {
        for line in rules.lines() {
            for ip in dnat_targets(line) {
                if !cluster_ips.contains(&ip) {
                    out.push(format!(
                        "nft rule DNATs to {ip}, which no running task has: {}",
                        line.trim()
                    ));
                }
            }
            for ifname in nft_ifnames(line) {
                if !link_names.contains(&ifname) {
                    out.push(format!(
                        "nft rule names link {ifname}, which no longer exists: {}",
                        line.trim()
                    ));
                }
            }
        }
    }
    // cgroups: one directory per live container under the agent's parent.
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(ctls) = std::fs::read_dir(base) else {
            continue;
        };
        let mut parents: Vec<std::path::PathBuf> = ctls
            .flatten()
            .map(|c| c.path().join(node.cgroup_parent()))
            .collect();
        parents.push(Path::new(base).join(node.cgroup_parent()));
        for parent in parents {
            let Ok(rd) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let id = e.file_name().to_string_lossy().into_owned();
                if !owned.contains(&id) {
                    out.push(format!(
                        "cgroup {} belongs to no running task",
                        e.path().display()
                    ));
                }
            }
        }
    }
    out
}

/// Invariant 4: retried for a while, since teardown after a task stops is asynchronous.
pub async fn leftovers(hosts: &Hosts, bound: Duration) -> Check {
    let name =
        "no container, mount, shim, veth, VXLAN device, nft rule or cgroup belongs to no task";
    let t0 = Instant::now();
    let mut problems;
    loop {
        problems = vec![];
        match World::read(hosts).await {
            Ok(w) => {
                let mut ips = BTreeSet::new();
                for n in &hosts.nodes {
                    for id in w.owned(&n.name) {
                        ips.extend(sandbox(n, &id).into_iter().map(|(_, ip, _)| ip));
                    }
                }
                for n in &hosts.nodes {
                    for p in host_leftovers(n, &w, &ips).await {
                        problems.push(format!("{}: {p}", n.name));
                    }
                }
            }
            Err(e) => problems.push(format!("cannot read the cluster: {e}")),
        }
        if problems.is_empty() || t0.elapsed() > bound {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Check::new(
        name,
        problems,
        format!("all {} hosts clean", hosts.nodes.len()),
    )
}

/// Invariant 5: all managers report the same hash at the same index. Managers keep
/// applying (heartbeat-driven status changes), so samples are compared index by index.
pub async fn hashes(hosts: &Hosts, bound: Duration) -> Check {
    let name = "the state machines of all managers hash equal";
    let managers: Vec<&Node> = hosts.managers().collect();
    let mut seen: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    let t0 = Instant::now();
    let mut errors = BTreeMap::new();
    while t0.elapsed() < bound {
        for m in &managers {
            match api::state_hash(&m.sock).await {
                Ok((index, hash)) => {
                    seen.entry(index).or_default().insert(m.name.clone(), hash);
                    errors.remove(&m.name);
                }
                Err(e) => {
                    errors.insert(m.name.clone(), e.to_string());
                }
            }
        }
        for (index, by) in &seen {
            let distinct: BTreeSet<&String> = by.values().collect();
            if distinct.len() > 1 {
                let all: Vec<String> = by
                    .iter()
                    .map(|(m, h)| format!("{m}={}", &h[..16.min(h.len())]))
                    .collect();
                return Check::new(
                    name,
                    vec![format!(
                        "at index {index} the hashes differ: {}",
                        all.join(" ")
                    )],
                    String::new(),
                );
            }
            if by.len() == managers.len() {
                let h = by.values().next().cloned().unwrap_or_default();
                return Check::new(
                    name,
                    vec![],
                    format!(
                        "{} managers at index {index}: {}",
                        by.len(),
                        &h[..16.min(h.len())]
                    ),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut problems: Vec<String> = errors
        .into_iter()
        .map(|(m, e)| format!("{m}: {e}"))
        .collect();
    problems.push(format!(
        "no index was reported by all {} managers within {bound:?} (last: {:?})",
        managers.len(),
        seen.iter()
            .next_back()
            .map(|(i, by)| (i, by.keys().collect::<Vec<_>>()))
    ));
    Check::new(name, problems, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nft_output() {
        let l = "tcp dport 18080 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.10 . 80, 1 : 10.0.0.13 . 80 }";
        assert_eq!(dnat_targets(l), vec!["10.0.0.10", "10.0.0.13"]);
        let snat = "oifname \"x\" ct status dnat ip saddr 10.0.0.0/24 snat ip to 10.0.0.4";
        assert!(dnat_targets(snat).is_empty());
        assert_eq!(
            nft_ifnames("oifname \"skab\" ct status dnat ip saddr 10.0.0.0/24 oifname != \"x1\""),
            vec!["skab", "x1"]
        );
    }
}
