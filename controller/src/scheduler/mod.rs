//! The scheduler: a pure function from a snapshot of the cluster to a placement plan.
//!
//! It reads no clock and does no I/O, so it is table-tested and benchmarked cheaply
//! (`benches/scheduler.rs`: 100,000 tasks on 10,000 nodes). The reconciler feeds it the
//! tasks that need a node and commits the resulting placements through raft as one
//! batch.
//!
//! For each service, nodes are filtered (ready, availability `active`, constraints,
//! host-mode port conflicts), then tasks are placed one at a time on the best node:
//! spread preferences first (the label value with the fewest tasks of the service),
//! then the fewest tasks of the service on the node, then the fewest tasks overall.
//! Resource reservations and `max_replicas_per_node` are checked as nodes fill up.
//! A task that fits nowhere stays pending with a reason naming the filter at fault.

pub mod constraint;

pub use constraint::{Attribute, Constraint, ConstraintError};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Role {
    Manager,
    #[default]
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

/// CPU (nano-CPUs) and memory (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Resources {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub availability: Availability,
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
    pub engine_labels: BTreeMap<String, String>,
    /// What the node has in total.
    pub capacity: Resources,
}

/// A task already on a node (it counts against the node's resources, ports and the
/// service's per-node tally).
#[derive(Clone, Debug, Default)]
pub struct PlacedTask {
    pub service_id: String,
    pub node_id: String,
    pub reservations: Resources,
    /// Host-mode published ports: (protocol, port).
    pub host_ports: Vec<(String, u16)>,
}

/// The scheduling-relevant part of a service spec.
#[derive(Clone, Debug, Default)]
pub struct ServiceConstraints {
    pub constraints: Vec<Constraint>,
    /// `spread: node.labels.X` preferences, outermost first (the label keys).
    pub spread: Vec<String>,
    /// 0 = unlimited.
    pub max_replicas_per_node: u32,
    pub reservations: Resources,
    pub host_ports: Vec<(String, u16)>,
}

/// A task waiting for a node.
#[derive(Clone, Debug)]
pub struct PendingTask {
    pub task_id: String,
    pub service_id: String,
}

/// Everything the scheduler looks at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    pub placed: Vec<PlacedTask>,
    pub services: HashMap<String, ServiceConstraints>,
}

/// The outcome: placements to commit, and tasks left pending with their reason.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub placements: Vec<(String, String)>,
    pub pending: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
struct NodeLoad {
    used: Resources,
    tasks: u32,
    ports: Vec<(String, u16)>,
    by_service: HashMap<String, u32>,
}

/// Places `pending` tasks on the nodes of `snap`. Deterministic for a given input.
pub fn schedule(snap: &Snapshot, pending: &[PendingTask]) -> Plan {
    let index: HashMap<&str, usize> = snap
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut load = vec![NodeLoad::default(); snap.nodes.len()];
    for t in &snap.placed {
        if let Some(&i) = index.get(t.node_id.as_str()) {
            let l = &mut load[i];
            l.used.nano_cpus += t.reservations.nano_cpus;
            l.used.memory_bytes += t.reservations.memory_bytes;
            l.tasks += 1;
            l.ports.extend(t.host_ports.iter().cloned());
            *l.by_service.entry(t.service_id.clone()).or_default() += 1;
        }
    }
    // Group pending tasks by service, keeping the order services first appear in.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&PendingTask>> = HashMap::new();
    for p in pending {
        groups.entry(p.service_id.as_str()).or_insert_with(|| {
            order.push(p.service_id.as_str());
            Vec::new()
        });
        if let Some(g) = groups.get_mut(p.service_id.as_str()) {
            g.push(p);
        }
    }
    let default = ServiceConstraints::default();
    let mut plan = Plan::default();
    for sid in order {
        let svc = snap.services.get(sid).unwrap_or(&default);
        let tasks = groups.remove(sid).unwrap_or_default();
        place_service(snap, svc, sid, &tasks, &mut load, &mut plan);
    }
    plan
}

fn fits(node: &NodeInfo, l: &NodeLoad, need: Resources) -> bool {
    let cpu_ok =
        need.nano_cpus == 0 || l.used.nano_cpus + need.nano_cpus <= node.capacity.nano_cpus;
    let mem_ok = need.memory_bytes == 0
        || l.used.memory_bytes + need.memory_bytes <= node.capacity.memory_bytes;
    cpu_ok && mem_ok
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} node{} {what}", if n == 1 { "" } else { "s" })
}

fn place_service(
    snap: &Snapshot,
    svc: &ServiceConstraints,
    sid: &str,
    tasks: &[&PendingTask],
    load: &mut [NodeLoad],
    plan: &mut Plan,
) {
    // Filter once per service; remember why nodes were excluded.
    let mut down = 0;
    let mut unavailable = 0;
    let mut failed_constraint: Option<(&Constraint, usize)> = None;
    let mut eligible = Vec::new();
    for (i, n) in snap.nodes.iter().enumerate() {
        if !n.ready {
            down += 1;
            continue;
        }
        if n.availability != Availability::Active {
            unavailable += 1;
            continue;
        }
        if let Some(c) = svc.constraints.iter().find(|c| !c.matches(n)) {
            match &mut failed_constraint {
                Some((_, count)) => *count += 1,
                None => failed_constraint = Some((c, 1)),
            }
            continue;
        }
        eligible.push(i);
    }
    let mut no_resources = 0;
    let mut port_conflict = 0;
    let mut max_per_node = 0;
    let reason = |no_resources: usize, port_conflict: usize, max_per_node: usize| -> String {
        if snap.nodes.is_empty() {
            return "no nodes in the cluster".into();
        }
        let mut parts = Vec::new();
        if let Some((c, n)) = failed_constraint {
            parts.push(format!(
                "no node satisfies constraint {c} ({})",
                plural(n, "excluded")
            ));
        }
        if no_resources > 0 {
            parts.push(
                format!("insufficient resources on {}", plural(no_resources, ""))
                    .trim_end()
                    .to_string(),
            );
        }
        if port_conflict > 0 {
            parts.push(
                format!(
                    "host-mode port already in use on {}",
                    plural(port_conflict, "")
                )
                .trim_end()
                .to_string(),
            );
        }
        if max_per_node > 0 {
            parts.push(
                format!(
                    "max replicas per node reached on {}",
                    plural(max_per_node, "")
                )
                .trim_end()
                .to_string(),
            );
        }
        if unavailable > 0 {
            parts.push(plural(unavailable, "paused or drained"));
        }
        if down > 0 {
            parts.push(plural(down, "down"));
        }
        if parts.is_empty() {
            "no suitable node".into()
        } else {
            parts.join("; ")
        }
    };
    // Nodes whose host ports conflict can never take a task of this service.
    if !svc.host_ports.is_empty() {
        eligible.retain(|&i| {
            let clash = svc.host_ports.iter().any(|p| load[i].ports.contains(p));
            if clash {
                port_conflict += 1;
            }
            !clash
        });
    }
    // Leaf groups by spread label values; each holds a heap of candidate nodes keyed
    // by (tasks of this service, tasks overall, node index), smallest first.
    let mut leaves: Leaves = BTreeMap::new();
    let mut leaf_count: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    for &i in &eligible {
        let n = &snap.nodes[i];
        let key: Vec<String> = svc
            .spread
            .iter()
            .map(|k| n.labels.get(k).cloned().unwrap_or_default())
            .collect();
        let svc_tasks = load[i].by_service.get(sid).copied().unwrap_or(0);
        *leaf_count.entry(key.clone()).or_default() += svc_tasks;
        leaves
            .entry(key)
            .or_default()
            .push(Reverse((svc_tasks, load[i].tasks, i)));
    }
    for t in tasks {
        let mut placed = None;
        while placed.is_none() && !leaves.is_empty() {
            // Descend the spread tree: at each level keep the value with fewest tasks.
            let leaf = pick_leaf(&leaf_count, &leaves, svc.spread.len());
            let Some(leaf) = leaf else { break };
            let Some(heap) = leaves.get_mut(&leaf) else {
                break;
            };
            let Some(Reverse((svc_tasks, total, i))) = heap.pop() else {
                leaves.remove(&leaf);
                continue;
            };
            let n = &snap.nodes[i];
            if svc.max_replicas_per_node > 0 && svc_tasks >= svc.max_replicas_per_node {
                max_per_node += 1;
                continue; // dropped: it cannot take more of this service
            }
            if !fits(n, &load[i], svc.reservations) {
                no_resources += 1;
                continue;
            }
            let l = &mut load[i];
            l.used.nano_cpus += svc.reservations.nano_cpus;
            l.used.memory_bytes += svc.reservations.memory_bytes;
            l.tasks += 1;
            l.ports.extend(svc.host_ports.iter().cloned());
            *l.by_service.entry(sid.to_string()).or_default() += 1;
            *leaf_count.entry(leaf.clone()).or_default() += 1;
            // A node with host ports can take only one task of the service.
            if svc.host_ports.is_empty() {
                heap.push(Reverse((svc_tasks + 1, total + 1, i)));
            }
            if heap.is_empty() {
                leaves.remove(&leaf);
            }
            placed = Some(i);
        }
        match placed {
            Some(i) => plan
                .placements
                .push((t.task_id.clone(), snap.nodes[i].id.clone())),
            None => plan.pending.push((
                t.task_id.clone(),
                reason(no_resources, port_conflict, max_per_node),
            )),
        }
    }
}

/// Candidate nodes per spread leaf, as (tasks of the service, tasks overall, node index).
type Leaves = BTreeMap<Vec<String>, BinaryHeap<Reverse<(u32, u32, usize)>>>;

/// Chooses the leaf to place into: level by level, the label value whose subtree holds
/// the fewest tasks of the service (ties broken by value, for determinism).
fn pick_leaf(
    counts: &BTreeMap<Vec<String>, u32>,
    leaves: &Leaves,
    levels: usize,
) -> Option<Vec<String>> {
    let mut prefix: Vec<String> = Vec::new();
    for level in 0..levels {
        let mut totals: BTreeMap<&str, u32> = BTreeMap::new();
        for (k, _) in leaves
            .iter()
            .filter(|(k, h)| k.starts_with(&prefix) && !h.is_empty())
        {
            *totals.entry(k[level].as_str()).or_default() += counts.get(k).copied().unwrap_or(0);
        }
        let (best, _) = totals.iter().min_by_key(|(v, c)| (**c, **v))?;
        prefix.push(best.to_string());
    }
    leaves
        .iter()
        .find(|(k, h)| k.starts_with(&prefix) && !h.is_empty())
        .map(|(k, _)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: format!("host-{id}"),
            ready: true,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity: Resources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            },
            ..Default::default()
        }
    }

    fn pending(service: &str, n: usize) -> Vec<PendingTask> {
        (0..n)
            .map(|i| PendingTask {
                task_id: format!("{service}.{i}"),
                service_id: service.into(),
            })
            .collect()
    }

    fn per_node(plan: &Plan) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, n) in &plan.placements {
            *m.entry(n.clone()).or_default() += 1;
        }
        m
    }

    #[test]
    fn spreads_replicas_evenly() {
        let snap = Snapshot {
            nodes: vec![node("a", &[]), node("b", &[]), node("c", &[])],
            ..Default::default()
        };
        let plan = schedule(&snap, &pending("web", 6));
        assert!(plan.pending.is_empty());
        assert_eq!(
            per_node(&plan).values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }

    #[test]
    fn fewest_tasks_of_the_service_first() {
        let snap = Snapshot {
            nodes: vec![node("a", &[]), node("b", &[])],
            placed: vec![PlacedTask {
                service_id: "web".into(),
                node_id: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = schedule(&snap, &pending("web", 1));
        assert_eq!(
            plan.placements,
            vec![("web.0".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn constraints_filter_and_explain() {
        let mut snap = Snapshot {
            nodes: vec![node("a", &[("zone", "a")]), node("b", &[("zone", "b")])],
            ..Default::default()
        };
        snap.services.insert(
            "db".into(),
            ServiceConstraints {
                constraints: vec![Constraint::parse("node.labels.zone==b").expect("parse")],
                ..Default::default()
            },
        );
        let plan = schedule(&snap, &pending("db", 2));
        assert!(plan.placements.iter().all(|(_, n)| n == "b"));
        snap.services.insert(
            "db".into(),
            ServiceConstraints {
                constraints: vec![Constraint::parse("node.labels.zone==c").expect("parse")],
                ..Default::default()
            },
        );
        let plan = schedule(&snap, &pending("db", 1));
        assert!(plan.placements.is_empty());
        assert!(
            plan.pending[0]
                .1
                .contains("no node satisfies constraint node.labels.zone==c"),
            "{}",
            plan.pending[0].1
        );
    }

    #[test]
    fn role_and_hostname_constraints() {
        let mut m = node("m", &[]);
        m.role = Role::Manager;
        let snap = Snapshot {
            nodes: vec![m, node("w", &[])],
            services: [(
                "s".to_string(),
                ServiceConstraints {
                    constraints: vec![Constraint::parse("node.role==manager").expect("parse")],
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        assert!(schedule(&snap, &pending("s", 3))
            .placements
            .iter()
            .all(|(_, n)| n == "m"));
        let c = Constraint::parse("node.hostname!=host-w").expect("parse");
        assert!(c.matches(&snap.nodes[0]) && !c.matches(&snap.nodes[1]));
        assert!(Constraint::parse("node.zone==a").is_err());
        assert!(Constraint::parse("node.labels.zone").is_err());
    }

    #[test]
    fn drained_down_and_paused_nodes_get_nothing() {
        let mut a = node("a", &[]);
        a.availability = Availability::Drain;
        let mut b = node("b", &[]);
        b.ready = false;
        let mut c = node("c", &[]);
        c.availability = Availability::Pause;
        let snap = Snapshot {
            nodes: vec![a, b, c, node("d", &[])],
            ..Default::default()
        };
        let plan = schedule(&snap, &pending("s", 3));
        assert!(plan.placements.iter().all(|(_, n)| n == "d"));
        let snap = Snapshot {
            nodes: snap.nodes[..3].to_vec(),
            ..Default::default()
        };
        let plan = schedule(&snap, &pending("s", 1));
        assert!(
            plan.pending[0].1.contains("1 node down"),
            "{}",
            plan.pending[0].1
        );
    }

    #[test]
    fn reservations_and_max_per_node() {
        let mut snap = Snapshot {
            nodes: vec![node("a", &[]), node("b", &[])],
            ..Default::default()
        };
        snap.services.insert(
            "big".into(),
            ServiceConstraints {
                reservations: Resources {
                    nano_cpus: 0,
                    memory_bytes: 600 << 20,
                },
                ..Default::default()
            },
        );
        let plan = schedule(&snap, &pending("big", 3));
        assert_eq!(plan.placements.len(), 2, "one 600 MiB task per 1 GiB node");
        assert!(
            plan.pending[0].1.contains("insufficient resources"),
            "{}",
            plan.pending[0].1
        );
        snap.services.insert(
            "m".into(),
            ServiceConstraints {
                max_replicas_per_node: 1,
                ..Default::default()
            },
        );
        let plan = schedule(&snap, &pending("m", 3));
        assert_eq!(plan.placements.len(), 2);
        assert!(
            plan.pending[0].1.contains("max replicas per node"),
            "{}",
            plan.pending[0].1
        );
    }

    #[test]
    fn host_ports_conflict() {
        let mut snap = Snapshot {
            nodes: vec![node("a", &[]), node("b", &[])],
            placed: vec![PlacedTask {
                service_id: "other".into(),
                node_id: "a".into(),
                host_ports: vec![("tcp".into(), 80)],
                ..Default::default()
            }],
            ..Default::default()
        };
        snap.services.insert(
            "web".into(),
            ServiceConstraints {
                host_ports: vec![("tcp".into(), 80)],
                ..Default::default()
            },
        );
        let plan = schedule(&snap, &pending("web", 2));
        assert_eq!(
            plan.placements,
            vec![("web.0".to_string(), "b".to_string())]
        );
        assert!(plan.pending[0].1.contains("port"), "{}", plan.pending[0].1);
    }

    #[test]
    fn spread_preference_balances_label_values() {
        let nodes = vec![
            node("a1", &[("zone", "a")]),
            node("a2", &[("zone", "a")]),
            node("a3", &[("zone", "a")]),
            node("b1", &[("zone", "b")]),
        ];
        let snap = Snapshot {
            nodes,
            services: [(
                "s".to_string(),
                ServiceConstraints {
                    spread: vec!["zone".into()],
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let plan = schedule(&snap, &pending("s", 4));
        let zone_b = plan.placements.iter().filter(|(_, n)| n == "b1").count();
        assert_eq!(zone_b, 2, "half the tasks in zone b: {:?}", plan.placements);
    }

    #[test]
    fn deterministic() {
        let snap = Snapshot {
            nodes: (0..20).map(|i| node(&format!("n{i}"), &[])).collect(),
            ..Default::default()
        };
        assert_eq!(
            schedule(&snap, &pending("s", 50)),
            schedule(&snap, &pending("s", 50))
        );
    }
}
