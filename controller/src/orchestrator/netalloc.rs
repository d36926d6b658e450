//! Cluster-wide address allocation for overlay networks, run by the leader's reconcile
//! loop: a subnet and a VXLAN ID per network, one address per taking-part node (its
//! source for load-balanced traffic), a virtual IP per service and one address per task.
//!
//! There is no allocator state besides what the objects already hold: an address is in
//! use while a live (non-terminal) task, a service, or a node entry carries it. Every
//! allocation is computed from one snapshot and proposed as optimistic updates, so a
//! proposal that loses a race is simply recomputed on the next pass, and a subset of
//! proposals that does commit never overlaps (all picks were free in the same snapshot).

use crate::model::stack::StackNetwork;
use crate::model::*;
use crate::model::{Node, Op};
use crate::store::Stored;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

/// Swarm's default address pool, carved into /24 networks.
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
pub const DEFAULT_SUBNET_SIZE: u8 = 24;
/// VXLAN IDs below this are left to hand-made devices (Docker starts at 4096 too).
const VNI_BASE: u32 = 4096;
const VNI_MAX: u32 = (1 << 24) - 1;

pub use crate::model::stack::NetAlloc;

/// Whether a stored network is an overlay.
pub fn is_overlay(n: &StackNetwork) -> bool {
    n.driver == "overlay"
}

/// Whether a port answers on every node (the routing mesh) rather than only where a
/// task runs.
pub fn is_ingress(p: &PortSpec) -> bool {
    p.published > 0 && p.mode != "host"
}

/// The overlay network a service goes on when it publishes routing-mesh ports but
/// names no network (Swarm's `ingress`): without an overlay its ports would answer
/// only on the nodes running its tasks.
pub const INGRESS: &str = "ingress";

/// Puts a service with ingress ports and no network on [`INGRESS`]; whether it did.
/// The caller creates that network when the cluster has none yet.
pub fn join_ingress(spec: &mut ServiceSpec) -> bool {
    if spec.template.networks.is_empty() && spec.ports.iter().any(is_ingress) {
        spec.template.networks.insert(INGRESS.into(), vec![]);
        return true;
    }
    false
}

/// A task that holds (or will hold) its addresses.
fn live(t: &Task) -> bool {
    !t.status.state.is_terminal()
}

/// The first overlay network of a service's tasks: the one its published ports reach.
pub fn mesh_network<'a>(tpl: &'a TaskTemplate, overlays: &HashSet<&str>) -> Option<&'a String> {
    tpl.networks.keys().find(|n| overlays.contains(n.as_str()))
}

/// Everything the allocator reads.
pub struct Input<'a> {
    pub networks: &'a [Stored<StackNetwork>],
    pub services: &'a [Stored<Service>],
    pub tasks: &'a [Stored<Task>],
    /// Standalone containers on attachable overlays.
    pub attachments: &'a [Stored<crate::model::overlay::Attachment>],
    pub nodes: &'a [Node],
    /// Where overlay subnets come from.
    pub pools: &'a [Ipv4Net],
    /// Subnets to stay clear of (the leader host's routes).
    pub avoid: &'a [Ipv4Net],
}

/// Updates to propose, grouped so that one losing an optimistic race does not hold
/// back the others.
#[derive(Debug, Default)]
pub struct Plan {
    pub networks: Vec<Op>,
    pub services: Vec<Op>,
    pub tasks: Vec<Op>,
    pub attachments: Vec<Op>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.services.is_empty()
            && self.tasks.is_empty()
            && self.attachments.is_empty()
    }
}

fn update<T: Serialize>(kind: &str, s: &Stored<T>) -> Option<Op> {
    Some(Op::Update {
        kind: kind.into(),
        id: s.id.clone(),
        spec: serde_json::to_vec(&s.value).ok()?,
        expected_version: s.version,
    })
}

fn vni_for(id: &str, used: &HashSet<u32>) -> u32 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let span = (VNI_MAX - VNI_BASE) as u64;
    let mut v = VNI_BASE + (h % span) as u32;
    while used.contains(&v) {
        v = if v >= VNI_MAX { VNI_BASE } else { v + 1 };
    }
    v
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn pick_subnet(pools: &[Ipv4Net], taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    for pool in pools {
        let size = DEFAULT_SUBNET_SIZE.max(pool.prefix_len());
        let Ok(subnets) = pool.subnets(size) else {
            continue;
        };
        for s in subnets {
            if !taken.iter().any(|t| overlaps(t, &s)) {
                return Some(s);
            }
        }
    }
    None
}

/// Hands out the lowest free host address of one network.
/// How a task's status error starts while it waits for an address.
const NO_ADDRESS: &str = "no free address on network ";

struct Pool {
    subnet: Ipv4Net,
    used: BTreeSet<Ipv4Addr>,
}

impl Pool {
    fn take(&mut self) -> Option<Ipv4Addr> {
        let ip = self.subnet.hosts().find(|a| !self.used.contains(a))?;
        self.used.insert(ip);
        Some(ip)
    }
}

/// Computes every missing allocation.
pub fn allocate(inp: &Input<'_>) -> Plan {
    let mut plan = Plan::default();
    let mut nets: Vec<Stored<StackNetwork>> = inp
        .networks
        .iter()
        .filter(|n| is_overlay(&n.value))
        .cloned()
        .collect();
    nets.sort_by(|a, b| a.value.name.cmp(&b.value.name));
    let mut changed: HashSet<String> = HashSet::new();

    // 1. Subnets and VXLAN IDs.
    let mut taken: Vec<Ipv4Net> = nets
        .iter()
        .filter_map(|n| n.value.alloc.as_ref().map(|a| a.subnet))
        .collect();
    let mut vnis: HashSet<u32> = nets
        .iter()
        .filter_map(|n| n.value.alloc.as_ref().map(|a| a.vni))
        .collect();
    // Networks with a subnet of the user's first, so automatic picks avoid them.
    let mut order: Vec<usize> = (0..nets.len())
        .filter(|i| nets[*i].value.alloc.is_none())
        .collect();
    order.sort_by_key(|i| nets[*i].value.subnet.is_none());
    for i in order {
        let n = &mut nets[i];
        let subnet = match &n.value.subnet {
            Some(s) => match s.parse::<Ipv4Net>() {
                Ok(s) if !taken.iter().any(|t| overlaps(t, &s.trunc())) => Some(s.trunc()),
                _ => {
                    tracing::warn!(network = %n.value.name, subnet = %s, "overlay subnet invalid or overlapping; not allocated");
                    None
                }
            },
            None => {
                let mut avoid = taken.clone();
                avoid.extend_from_slice(inp.avoid);
                pick_subnet(inp.pools, &avoid)
            }
        };
        let Some(subnet) = subnet else {
            tracing::warn!(network = %n.value.name, "no free overlay subnet in the address pools");
            continue;
        };
        let Some(gateway) = subnet.hosts().next() else {
            continue;
        };
        let vni = vni_for(&n.id, &vnis);
        vnis.insert(vni);
        taken.push(subnet);
        n.value.alloc = Some(NetAlloc {
            subnet,
            gateway,
            vni,
            nodes: BTreeMap::new(),
        });
        changed.insert(n.id.clone());
    }

    // Addresses in use per network name.
    let mut pools: HashMap<String, Pool> = HashMap::new();
    for n in &nets {
        if let Some(a) = &n.value.alloc {
            let mut used: BTreeSet<Ipv4Addr> = a.nodes.values().copied().collect();
            used.insert(a.gateway);
            pools.insert(
                n.value.name.clone(),
                Pool {
                    subnet: a.subnet,
                    used,
                },
            );
        }
    }
    for s in inp.services {
        for (net, ip) in &s.value.vips {
            if let Some(p) = pools.get_mut(net) {
                p.used.insert(*ip);
            }
        }
    }
    for t in inp.tasks.iter().filter(|t| live(&t.value)) {
        for (net, ip) in &t.value.addresses {
            if let Some(p) = pools.get_mut(net) {
                p.used.insert(*ip);
            }
        }
    }
    for a in inp.attachments {
        if let (Some(ip), Some(p)) = (a.value.ip, pools.get_mut(&a.value.network)) {
            p.used.insert(ip);
        }
    }
    let overlays: HashSet<&str> = pools.keys().map(String::as_str).collect();

    // 2. Which nodes take part: those running its tasks, and every node for networks
    // that carry a routing-mesh port.
    let mut members: HashMap<String, BTreeSet<String>> = HashMap::new();
    for t in inp.tasks.iter().filter(|t| live(&t.value)) {
        if t.value.node_id.is_empty() {
            continue;
        }
        for net in t.value.template.networks.keys() {
            if overlays.contains(net.as_str()) {
                members
                    .entry(net.clone())
                    .or_default()
                    .insert(t.value.node_id.clone());
            }
        }
    }
    for a in inp.attachments {
        members
            .entry(a.value.network.clone())
            .or_default()
            .insert(a.value.node_id.clone());
    }
    for s in inp.services {
        if s.value.spec.ports.iter().any(is_ingress) {
            if let Some(net) = mesh_network(&s.value.spec.template, &overlays) {
                members
                    .entry(net.clone())
                    .or_default()
                    .extend(inp.nodes.iter().map(|n| n.id.clone()));
            }
        }
    }
    let known: HashSet<&str> = inp.nodes.iter().map(|n| n.id.as_str()).collect();
    for n in nets.iter_mut() {
        let name = n.value.name.clone();
        let Some(a) = n.value.alloc.as_mut() else {
            continue;
        };
        let before = a.nodes.len();
        a.nodes.retain(|id, _| known.contains(id.as_str()));
        let mut grew = false;
        if let (Some(want), Some(pool)) = (members.get(&name), pools.get_mut(&name)) {
            for node in want {
                if !a.nodes.contains_key(node) {
                    if let Some(ip) = pool.take() {
                        a.nodes.insert(node.clone(), ip);
                        grew = true;
                    }
                }
            }
        }
        if grew || a.nodes.len() != before {
            changed.insert(n.id.clone());
        }
    }
    plan.networks = nets
        .iter()
        .filter(|n| changed.contains(&n.id))
        .filter_map(|n| update(crate::model::KIND_NETWORK, n))
        .collect();

    // 3. Virtual IPs.
    for s in inp.services {
        let spec = &s.value.spec;
        let mut vips = s.value.vips.clone();
        if spec.endpoint_mode == "dnsrr" {
            vips.clear();
        } else {
            vips.retain(|net, _| spec.template.networks.contains_key(net));
            for net in spec.template.networks.keys() {
                if !vips.contains_key(net) {
                    if let Some(ip) = pools.get_mut(net).and_then(Pool::take) {
                        vips.insert(net.clone(), ip);
                    }
                }
            }
        }
        if vips != s.value.vips {
            let mut s = s.clone();
            s.value.vips = vips;
            plan.services.extend(update(KIND_SERVICE, &s));
        }
    }

    // 4. Task addresses.
    // A task that finds its network's subnet full waits, saying so in its status
    // (visible in `service ps`) rather than silently.
    for t in inp.tasks.iter().filter(|t| live(&t.value)) {
        let mut addrs = t.value.addresses.clone();
        let mut full = Vec::new();
        for net in t.value.template.networks.keys() {
            if !addrs.contains_key(net) {
                if let Some(pool) = pools.get_mut(net) {
                    match pool.take() {
                        Some(ip) => {
                            addrs.insert(net.clone(), ip);
                        }
                        None => full.push(format!("{net} ({})", pool.subnet)),
                    }
                }
            }
        }
        let mut next = t.clone();
        next.value.addresses = addrs;
        if !full.is_empty() {
            next.value.status.error = format!(
                "{NO_ADDRESS}{}: every address of the subnet is taken",
                full.join(", ")
            );
        } else if next.value.status.error.starts_with(NO_ADDRESS) {
            next.value.status.error.clear();
        }
        if next.value != t.value {
            plan.tasks.extend(update(KIND_TASK, &next));
        }
    }

    // 5. Standalone containers.
    for a in inp.attachments.iter().filter(|a| a.value.ip.is_none()) {
        if let Some(ip) = pools.get_mut(&a.value.network).and_then(Pool::take) {
            let mut a = a.clone();
            a.value.ip = Some(ip);
            plan.attachments
                .extend(update(crate::model::KIND_ATTACHMENT, &a));
        }
    }
    plan
}

/// Whether every overlay network of a task has its address (the task may start).
pub fn task_ready(t: &Task, overlays: &HashSet<String>) -> bool {
    t.template
        .networks
        .keys()
        .filter(|n| overlays.contains(*n))
        .all(|n| t.addresses.contains_key(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: &str, name: &str, subnet: Option<&str>) -> Stored<StackNetwork> {
        Stored {
            id: id.into(),
            version: 1,
            value: StackNetwork {
                name: name.into(),
                driver: "overlay".into(),
                internal: false,
                attachable: false,
                subnet: subnet.map(String::from),
                external: false,
                stack: "s".into(),
                alloc: None,
            },
        }
    }

    fn task(id: &str, node: &str, nets: &[&str]) -> Stored<Task> {
        let mut t = Task {
            node_id: node.into(),
            service_id: "svc".into(),
            ..Default::default()
        };
        for n in nets {
            t.template.networks.insert(n.to_string(), vec![]);
        }
        Stored {
            id: id.into(),
            version: 3,
            value: t,
        }
    }

    fn apply_net(ops: &[Op], nets: &mut [Stored<StackNetwork>]) {
        for op in ops {
            if let Op::Update { id, spec, .. } = op {
                if let Some(n) = nets.iter_mut().find(|n| &n.id == id) {
                    n.value = serde_json::from_slice(spec).expect("network json");
                }
            }
        }
    }

    fn decoded<T: serde::de::DeserializeOwned>(op: &Op) -> (String, T) {
        match op {
            Op::Update { id, spec, .. } => {
                (id.clone(), serde_json::from_slice(spec).expect("json"))
            }
            other => panic!("unexpected op {other:?}"),
        }
    }

    fn pools() -> Vec<Ipv4Net> {
        vec![DEFAULT_POOL.parse().expect("pool")]
    }

    fn run(
        networks: &[Stored<StackNetwork>],
        services: &[Stored<Service>],
        tasks: &[Stored<Task>],
        nodes: &[Node],
        avoid: &[Ipv4Net],
    ) -> Plan {
        allocate(&Input {
            networks,
            services,
            tasks,
            attachments: &[],
            nodes,
            pools: &pools(),
            avoid,
        })
    }

    #[test]
    fn subnets_never_overlap_and_avoid_host_routes() {
        let mut nets = vec![
            net("a", "s_a", None),
            net("b", "s_b", None),
            net("c", "s_c", Some("10.0.1.0/24")),
        ];
        let avoid: Vec<Ipv4Net> = vec!["10.0.0.0/24".parse().expect("net")];
        let p = run(&nets, &[], &[], &[], &avoid);
        apply_net(&p.networks, &mut nets);
        let subnets: Vec<Ipv4Net> = nets
            .iter()
            .map(|n| n.value.alloc.as_ref().expect("allocated").subnet)
            .collect();
        // The user's subnet is kept; the others skip it and the host's route.
        assert_eq!(subnets[2], "10.0.1.0/24".parse::<Ipv4Net>().expect("net"));
        for (i, a) in subnets.iter().enumerate() {
            assert!(!overlaps(a, &avoid[0]), "{a} overlaps a host route");
            for b in &subnets[i + 1..] {
                assert!(!overlaps(a, b), "{a} overlaps {b}");
            }
        }
        let vnis: HashSet<u32> = nets
            .iter()
            .map(|n| n.value.alloc.as_ref().expect("allocated").vni)
            .collect();
        assert_eq!(vnis.len(), 3);
        assert!(vnis.iter().all(|v| (VNI_BASE..=VNI_MAX).contains(v)));
    }

    #[test]
    fn overlapping_user_subnet_is_refused() {
        let mut nets = vec![net("a", "s_a", Some("10.9.0.0/16"))];
        let p = run(&nets, &[], &[], &[], &[]);
        apply_net(&p.networks, &mut nets);
        nets.push(net("b", "s_b", Some("10.9.3.0/24")));
        let p = run(&nets, &[], &[], &[], &[]);
        assert!(p.networks.is_empty(), "{:?}", p.networks);
    }

    #[test]
    fn addresses_are_unique_across_nodes_tasks_and_vips() {
        let mut nets = vec![net("a", "s_a", Some("10.5.0.0/29"))];
        let nodes: Vec<Node> = ["n1", "n2"]
            .iter()
            .map(|id| Node {
                id: id.to_string(),
                ..Default::default()
            })
            .collect();
        let first = run(&nets, &[], &[], &nodes, &[]);
        apply_net(&first.networks, &mut nets);
        let mut svc = Stored {
            id: "svc".into(),
            version: 1,
            value: Service::default(),
        };
        svc.value
            .spec
            .template
            .networks
            .insert("s_a".into(), vec![]);
        let mut tasks = vec![
            task("t1", "n1", &["s_a"]),
            task("t2", "n2", &["s_a"]),
            task("t3", "n2", &["s_a"]),
        ];
        let p = run(&nets, std::slice::from_ref(&svc), &tasks, &nodes, &[]);
        apply_net(&p.networks, &mut nets);
        let a = nets[0].value.alloc.clone().expect("alloc");
        assert_eq!(a.nodes.len(), 2, "both nodes run tasks");
        let mut seen: HashSet<Ipv4Addr> = a.nodes.values().copied().collect();
        seen.insert(a.gateway);
        let (_, s): (String, Service) = decoded(&p.services[0]);
        let vip = s.vips["s_a"];
        assert!(seen.insert(vip), "VIP {vip} reused");
        // A /29 has six hosts: gateway, two nodes and the VIP leave two for tasks, so
        // the third task waits for an address, and says why.
        assert_eq!(p.tasks.len(), 3);
        for op in &p.tasks {
            let (id, t): (String, Task) = decoded(op);
            if id == "t3" {
                assert!(t.addresses.is_empty());
                assert_eq!(
                    t.status.error,
                    "no free address on network s_a (10.5.0.0/29): every address of the subnet is taken"
                );
                tasks[2].value = t;
                continue;
            }
            let ip = t.addresses["s_a"];
            assert!(a.subnet.contains(&ip));
            assert!(seen.insert(ip), "{ip} of {id} reused");
            if let Some(x) = tasks.iter_mut().find(|x| x.id == id) {
                x.value = t;
            }
        }
        svc.value = s;
        let p = run(&nets, std::slice::from_ref(&svc), &tasks, &nodes, &[]);
        assert!(p.is_empty(), "{p:?}");
        // A finished task frees its address for the waiting one.
        tasks[0].value.status.state = TaskState::Complete;
        let freed = tasks[0].value.addresses["s_a"];
        let p = run(&nets, std::slice::from_ref(&svc), &tasks, &nodes, &[]);
        let (id, t): (String, Task) = decoded(&p.tasks[0]);
        assert_eq!((id.as_str(), t.addresses["s_a"]), ("t3", freed));
        assert!(t.status.error.is_empty(), "{}", t.status.error);
    }

    #[test]
    fn mesh_networks_span_every_node_and_dnsrr_has_no_vip() {
        let mut nets = vec![net("a", "s_a", None)];
        let nodes: Vec<Node> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| Node {
                id: id.to_string(),
                ..Default::default()
            })
            .collect();
        let mut svc = Stored {
            id: "svc".into(),
            version: 1,
            value: Service::default(),
        };
        svc.value
            .spec
            .template
            .networks
            .insert("s_a".into(), vec![]);
        svc.value.spec.ports.push(PortSpec {
            target: 80,
            published: 8080,
            protocol: "tcp".into(),
            mode: "ingress".into(),
        });
        svc.value.spec.endpoint_mode = "dnsrr".into();
        for _ in 0..2 {
            let p = run(&nets, std::slice::from_ref(&svc), &[], &nodes, &[]);
            assert!(p.services.is_empty(), "dnsrr services get no VIP");
            apply_net(&p.networks, &mut nets);
        }
        let a = nets[0].value.alloc.clone().expect("alloc");
        assert_eq!(a.nodes.len(), 3, "{a:?}");
    }

    /// A service made without a network (`docker service create -p 8080:80 ...`) must
    /// still answer on a node that runs none of its tasks.
    #[test]
    fn ingress_ports_without_a_network_mesh_on_every_node() {
        let nodes: Vec<Node> = ["manager", "w1", "w2"]
            .iter()
            .map(|id| Node {
                id: id.to_string(),
                ..Default::default()
            })
            .collect();
        let mut spec = ServiceSpec {
            ports: vec![PortSpec {
                target: 80,
                published: 8080,
                protocol: "tcp".into(),
                mode: "ingress".into(),
            }],
            ..Default::default()
        };
        assert!(join_ingress(&mut spec));
        assert!(!join_ingress(&mut spec), "joins once");
        let svc = Stored {
            id: "svc".into(),
            version: 1,
            value: Service {
                spec: spec.clone(),
                ..Default::default()
            },
        };
        let mut t = task("t1", "w1", &[]);
        t.value.template = spec.template.clone();
        let mut nets = vec![net("i", INGRESS, None)];
        for _ in 0..2 {
            let p = run(&nets, std::slice::from_ref(&svc), &[t.clone()], &nodes, &[]);
            apply_net(&p.networks, &mut nets);
        }
        let a = nets[0].value.alloc.clone().expect("ingress allocated");
        assert_eq!(
            a.nodes.keys().map(String::as_str).collect::<Vec<_>>(),
            ["manager", "w1", "w2"],
            "{a:?}"
        );

        // Host-mode ports and services that name their network stay as they are.
        let mut host = ServiceSpec {
            ports: vec![PortSpec {
                target: 80,
                published: 8081,
                protocol: "tcp".into(),
                mode: "host".into(),
            }],
            ..Default::default()
        };
        assert!(!join_ingress(&mut host));
        assert!(host.template.networks.is_empty());
        let mut named = spec.clone();
        named.template.networks.clear();
        named.template.networks.insert("front".into(), vec![]);
        assert!(!join_ingress(&mut named));
        assert!(!named.template.networks.contains_key(INGRESS));
    }
}
