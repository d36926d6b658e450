//! The agent's nftables rules. Everything lives in one table per agent
//! (`inet skiff` for the default --root, `inet skiff-<hash>` otherwise), generated as
//! a whole from the desired state and replaced atomically in one `nft -f` transaction,
//! so several agents (and Docker, firewalld...) coexist and nobody's rules are flushed.
//! Published ports are elements of two maps, so when only they change [`update`]
//! adds and removes elements instead of reloading the table, and when nothing
//! changed (most container starts) it runs no `nft` at all.
//!
//! One exception, for hosts where Docker runs: Docker sets the iptables FORWARD
//! policy to DROP, and a drop in any base chain is final, so no rule in our own table
//! can let our containers' traffic through. When an `ip filter FORWARD` chain exists
//! we insert two accept rules matching our bridges, tagged with a comment naming our
//! table, and remove only those (by handle).

use super::{NetError, Proto};
use ipnet::Ipv4Net;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// One bridge network as the firewall sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
}

/// One published port, resolved to its container address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwPort {
    pub proto: Proto,
    /// `None` = every host address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// A port published by a service: connections are spread over the backends (the
/// service's tasks on this node) with `numgen`, in the kernel (no IPVS needed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwService {
    pub proto: Proto,
    pub port: u16,
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// An overlay network's bridge on this node: traffic the node DNATs onto it leaves
/// with the node's own overlay address, so replies from other nodes come back here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwOverlay {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub node_ip: Ipv4Addr,
    /// Local containers: connections from outside to them keep their source address.
    pub local: Vec<Ipv4Addr>,
}

/// A service's virtual IP, balanced over its running tasks (any port, any protocol).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwVip {
    pub vip: Ipv4Addr,
    pub backends: Vec<Ipv4Addr>,
}

/// Everything the table must express.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FwState {
    pub networks: Vec<FwNetwork>,
    pub ports: Vec<FwPort>,
    pub services: Vec<FwService>,
    pub overlays: Vec<FwOverlay>,
    pub vips: Vec<FwVip>,
}

/// The DNAT statement for a virtual IP.
pub fn vip_dnat(v: &FwVip) -> Option<String> {
    match v.backends.as_slice() {
        // No task: the VIP answers nothing (a refused connection), and its traffic
        // never falls through to a published port of the same number.
        [] => Some(format!("ip daddr {} accept", v.vip)),
        [ip] => Some(format!("ip daddr {} dnat ip to {ip}", v.vip)),
        many => {
            let map: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, ip)| format!("{i} : {ip}"))
                .collect();
            Some(format!(
                "ip daddr {} dnat ip to numgen inc mod {} map {{ {} }}",
                v.vip,
                many.len(),
                map.join(", ")
            ))
        }
    }
}

/// The DNAT statement for a service port: one backend directly, several through a
/// round-robin `numgen` map.
pub fn service_dnat(svc: &FwService) -> Option<String> {
    match svc.backends.as_slice() {
        [] => None,
        [(ip, port)] => Some(format!(
            "{} dport {} dnat ip to {ip}:{port}",
            svc.proto, svc.port
        )),
        many => {
            let map: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
                .collect();
            Some(format!(
                "{} dport {} dnat ip to numgen inc mod {} map {{ {} }}",
                svc.proto,
                svc.port,
                many.len(),
                map.join(", ")
            ))
        }
    }
}

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('"', ""))
}

/// The `vips` chain's rules: each virtual IP DNATed over its running tasks.
fn vip_rules(state: &FwState) -> String {
    let mut s = String::new();
    for v in &state.vips {
        if let Some(rule) = vip_dnat(v) {
            let _ = writeln!(s, "    {rule}");
        }
    }
    s
}

/// The `overlay_snat` chain's rules: mesh traffic leaving into an overlay is SNATed to
/// the node's overlay address, except towards local tasks (their clients' source
/// address is kept). Local tasks are elements of the [`OVERLAY_LOCAL`] set, so a task
/// starting or stopping changes no rule.
fn overlay_snat_rules(state: &FwState) -> String {
    let mut s = String::new();
    for o in &state.overlays {
        let b = q(&o.bridge);
        let _ = writeln!(
            s,
            "    oifname {b} ct status dnat ip saddr {} snat ip to {}",
            o.subnet, o.node_ip
        );
        let _ = writeln!(
            s,
            "    oifname {b} ct status dnat oifname . ip daddr != @{OVERLAY_LOCAL} snat ip to {}",
            o.node_ip
        );
    }
    s
}

/// The set of local tasks on overlays, as `bridge . address` (two overlays may share a
/// subnet).
const OVERLAY_LOCAL: &str = "overlay_local";

fn local_elements(state: &FwState) -> Vec<String> {
    state
        .overlays
        .iter()
        .flat_map(|o| o.local.iter().map(|a| format!("{} . {a}", q(&o.bridge))))
        .collect()
}

/// The script that atomically replaces table `inet <table>` with `state`.
///
/// - `published` (reached from prerouting and output for local destinations) DNATs
///   published ports. Output skips 127.0.0.0/8: DNAT from loopback needs
///   route_localnet, so the userland proxy serves loopback instead.
/// - `postrouting` masquerades traffic leaving a non-internal network, and
///   hairpinned DNAT traffic back into its own bridge (so replies come back through us).
/// - `forward` lets DNAT'ed (published) and established traffic through, and drops
///   traffic between different networks and in or out of internal networks.
pub fn ruleset(table: &str, state: &FwState) -> String {
    let mut s = String::new();
    // Creating then deleting makes the delete valid whether or not the table exists.
    let _ = writeln!(
        s,
        "add table inet {table}\ndelete table inet {table}\ntable inet {table} {{"
    );
    let (any, addr): (Vec<&FwPort>, Vec<&FwPort>) =
        state.ports.iter().partition(|p| p.host_ip.is_none());
    for (map, ports) in [(ANY_PORTS, &any), (ADDR_PORTS, &addr)] {
        let _ = writeln!(s, "  map {map} {{\n    type {}", map_type(map));
        if !ports.is_empty() {
            let elems: Vec<String> = ports.iter().map(|p| port_element(p)).collect();
            let _ = writeln!(s, "    elements = {{ {} }}", elems.join(", "));
        }
        s.push_str("  }\n");
    }
    let _ = writeln!(s, "  set {OVERLAY_LOCAL} {{\n    type ifname . ipv4_addr");
    let local = local_elements(state);
    if !local.is_empty() {
        let _ = writeln!(s, "    elements = {{ {} }}", local.join(", "));
    }
    s.push_str("  }\n");
    s.push_str("  chain published {\n");
    // Virtual IPs first: they are local addresses too (on the overlay bridges), and a
    // port published on the node must not capture a service's traffic to another
    // service's VIP on the same port number. VIPs change with every task that starts
    // or stops; they live in a chain of their own that `update` refills alone.
    s.push_str("    jump vips\n");
    // Published ports are map elements, so a container's ports come and go without
    // reloading the table (see `update`); each lookup rule exists only while its map
    // has entries.
    if !addr.is_empty() {
        let _ = writeln!(
            s,
            "    dnat ip to ip daddr . meta l4proto . th dport map @{ADDR_PORTS}"
        );
    }
    if !any.is_empty() {
        let _ = writeln!(
            s,
            "    meta nfproto ipv4 dnat ip to meta l4proto . th dport map @{ANY_PORTS}"
        );
    }
    for svc in &state.services {
        if let Some(rule) = service_dnat(svc) {
            let _ = writeln!(s, "    {rule}");
        }
    }
    s.push_str("  }\n");
    let _ = writeln!(s, "  chain vips {{\n{}  }}", vip_rules(state));
    let _ = writeln!(
        s,
        "  chain overlay_snat {{\n{}  }}",
        overlay_snat_rules(state)
    );
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump published\n  }\n");
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    ip daddr != 127.0.0.0/8 fib daddr type local jump published\n  }\n");
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    s.push_str("    jump overlay_snat\n");
    for n in &state.networks {
        let _ = writeln!(
            s,
            "    oifname {} ip saddr {} ct status dnat masquerade",
            q(&n.bridge),
            n.subnet
        );
        if !n.internal {
            let _ = writeln!(
                s,
                "    ip saddr {} oifname != {} masquerade",
                n.subnet,
                q(&n.bridge)
            );
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    s.push_str("    ct state established,related accept\n");
    for n in state.networks.iter().filter(|n| n.internal) {
        let b = q(&n.bridge);
        let _ = writeln!(
            s,
            "    iifname {b} oifname != {b} drop\n    oifname {b} iifname != {b} drop"
        );
    }
    s.push_str("    ct status dnat accept\n");
    for n in &state.networks {
        let others: Vec<String> = state
            .networks
            .iter()
            .filter(|o| o.bridge != n.bridge)
            .map(|o| q(&o.bridge))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(
                s,
                "    iifname {} oifname {{ {} }} drop",
                q(&n.bridge),
                others.join(", ")
            );
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// The map of ports published on every host address: `proto . port : ip . port`.
const ANY_PORTS: &str = "ports";
/// The map of ports published on one host address: `addr . proto . port : ip . port`.
const ADDR_PORTS: &str = "addr_ports";

fn map_type(map: &str) -> &'static str {
    if map == ADDR_PORTS {
        "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"
    } else {
        "inet_proto . inet_service : ipv4_addr . inet_service"
    }
}

/// A port's key in its map (`[addr . ]proto . port`).
fn port_key(p: &FwPort) -> String {
    match p.host_ip {
        Some(ip) => format!("{ip} . {} . {}", p.proto, p.host_port),
        None => format!("{} . {}", p.proto, p.host_port),
    }
}

fn port_element(p: &FwPort) -> String {
    format!(
        "{} : {} . {}",
        port_key(p),
        p.container_ip,
        p.container_port
    )
}

/// `state` in a canonical order, so that equal states compare equal however the
/// caller collected them (containers come from a hash map).
fn canonical(state: &FwState) -> FwState {
    let mut c = state.clone();
    c.ports.sort_by_key(|p| {
        (
            p.host_ip,
            p.proto,
            p.host_port,
            p.container_ip,
            p.container_port,
        )
    });
    for o in &mut c.overlays {
        o.local.sort();
    }
    c
}

/// What [`update`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// The table already expressed the state: no `nft` run.
    Unchanged,
    /// Only elements were added and removed: published ports, local overlay tasks.
    Elements,
    /// Virtual IPs or overlays changed (with or without elements): their chains were
    /// refilled, in one transaction.
    Chains,
    /// The whole table was replaced.
    Table,
}

/// Takes table `table` from `old` (what was last applied; `None` when unknown) to
/// `new`, doing the least that is exact: nothing when they are equal; when only
/// published ports (each lookup rule staying as it is), local overlay tasks, virtual
/// IPs or overlays changed, one transaction of element deletions and additions and
/// refills of the `vips` and `overlay_snat` chains; otherwise (or if that fails)
/// [`apply`]. Reloading the whole table costs several times a small update, and most
/// container starts change nothing in it at all. Adding elements is the cheapest
/// change (about 2 ms here); anything that frees kernel objects (deleted elements, a
/// flushed chain) waits for an RCU grace period inside the commit (about 16 ms), so a
/// task start on an overlay only adds.
pub fn update(
    nft: &dyn Nft,
    table: &str,
    old: Option<&FwState>,
    new: &FwState,
) -> Result<Update, NetError> {
    let new_c = canonical(new);
    let Some(old_c) = old.map(canonical) else {
        return apply(nft, table, new).map(|_| Update::Table);
    };
    if old_c == new_c {
        return Ok(Update::Unchanged);
    }
    let rules_of = |s: &FwState| {
        (
            s.ports.iter().any(|p| p.host_ip.is_none()),
            s.ports.iter().any(|p| p.host_ip.is_some()),
        )
    };
    let rest = |s: &FwState| FwState {
        ports: vec![],
        vips: vec![],
        overlays: vec![],
        ..s.clone()
    };
    if rest(&old_c) == rest(&new_c) && rules_of(&old_c) == rules_of(&new_c) {
        let mut script = port_delta(table, &old_c.ports, &new_c.ports).unwrap_or_default();
        script.push_str(&set_delta(
            table,
            OVERLAY_LOCAL,
            &local_elements(&old_c),
            &local_elements(&new_c),
        ));
        let mut kind = Update::Elements;
        let rules_only = |s: &FwState| -> Vec<FwOverlay> {
            s.overlays
                .iter()
                .map(|o| FwOverlay {
                    local: vec![],
                    ..o.clone()
                })
                .collect()
        };
        for (chain, changed, rules) in [
            (
                "vips",
                old_c.vips != new_c.vips,
                vip_rules as fn(&FwState) -> String,
            ),
            (
                "overlay_snat",
                rules_only(&old_c) != rules_only(&new_c),
                overlay_snat_rules,
            ),
        ] {
            if changed {
                kind = Update::Chains;
                let _ = writeln!(script, "flush chain inet {table} {chain}");
                for rule in rules(&new_c).lines() {
                    let _ = writeln!(script, "add rule inet {table} {chain} {}", rule.trim());
                }
            }
        }
        match nft.run(&["-f", "-"], Some(&script)) {
            Ok(_) => return Ok(kind),
            Err(e) => tracing::warn!(error = %e, "updating the table in place; reloading it"),
        }
    }
    apply(nft, table, new).map(|_| Update::Table)
}

/// The element deletions (first) and additions that turn set `set`'s `old` elements
/// into `new`.
fn set_delta(table: &str, set: &str, old: &[String], new: &[String]) -> String {
    let mut s = String::new();
    for e in old.iter().filter(|e| !new.contains(e)) {
        let _ = writeln!(s, "delete element inet {table} {set} {{ {e} }}");
    }
    for e in new.iter().filter(|e| !old.contains(e)) {
        let _ = writeln!(s, "add element inet {table} {set} {{ {e} }}");
    }
    s
}

/// The element deletions (first) and additions that turn `old` ports into `new`.
fn port_delta(table: &str, old: &[FwPort], new: &[FwPort]) -> Option<String> {
    let mut s = String::new();
    for p in old.iter().filter(|p| !new.contains(p)) {
        let map = if p.host_ip.is_some() {
            ADDR_PORTS
        } else {
            ANY_PORTS
        };
        let _ = writeln!(s, "delete element inet {table} {map} {{ {} }}", port_key(p));
    }
    for p in new.iter().filter(|p| !old.contains(p)) {
        let map = if p.host_ip.is_some() {
            ADDR_PORTS
        } else {
            ANY_PORTS
        };
        let _ = writeln!(
            s,
            "add element inet {table} {map} {{ {} }}",
            port_element(p)
        );
    }
    (!s.is_empty()).then_some(s)
}

/// Runs nft; behind a trait so rule application can be tested without root.
pub trait Nft: Send + Sync {
    /// Feeds `script` to `nft -f -`; returns stdout.
    fn run(&self, args: &[&str], script: Option<&str>) -> Result<String, NetError>;
}

/// The real `nft` binary.
pub struct NftBinary;

impl Nft for NftBinary {
    fn run(&self, args: &[&str], script: Option<&str>) -> Result<String, NetError> {
        super::link::run_cmd("nft", args, script)
    }
}

/// Replaces our table with `state`.
pub fn apply(nft: &dyn Nft, table: &str, state: &FwState) -> Result<(), NetError> {
    nft.run(&["-f", "-"], Some(&ruleset(table, state)))
        .map(|_| ())
}

/// Deletes our table (nothing else).
pub fn delete_table(nft: &dyn Nft, table: &str) -> Result<(), NetError> {
    nft.run(
        &["-f", "-"],
        Some(&format!(
            "add table inet {table}\ndelete table inet {table}\n"
        )),
    )
    .map(|_| ())
}

/// Whether our table exists (a firewall reload may have flushed everything).
pub fn table_exists(nft: &dyn Nft, table: &str) -> bool {
    nft.run(&["list", "table", "inet", table], None).is_ok()
}

fn tag(table: &str) -> String {
    format!("skiff:{table}")
}

/// Handles of our tagged rules in `ip filter FORWARD`, from `nft -a list chain` output.
pub fn tagged_handles(listing: &str, table: &str) -> Vec<u64> {
    let needle = format!("comment \"{}\"", tag(table));
    listing
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            l.rsplit_once("# handle ")
                .and_then(|(_, h)| h.trim().parse().ok())
        })
        .collect()
}

/// When `ip filter FORWARD` exists (Docker, iptables-nft users), makes sure it accepts
/// traffic in and out of our bridges (`link_prefix*`). Returns whether rules were added.
pub fn ensure_forward_accept(
    nft: &dyn Nft,
    table: &str,
    link_prefix: &str,
) -> Result<bool, NetError> {
    let Ok(listing) = nft.run(&["-a", "list", "chain", "ip", "filter", "FORWARD"], None) else {
        return Ok(false); // no such chain: nothing can drop our traffic there
    };
    if tagged_handles(&listing, table).len() >= 2 {
        return Ok(false);
    }
    remove_forward_accept(nft, table)?;
    let c = tag(table);
    let script = format!(
        "insert rule ip filter FORWARD iifname \"{link_prefix}*\" accept comment \"{c}\"\ninsert rule ip filter FORWARD oifname \"{link_prefix}*\" accept comment \"{c}\"\n"
    );
    nft.run(&["-f", "-"], Some(&script))?;
    Ok(true)
}

/// Removes our tagged rules from `ip filter FORWARD`, if any.
pub fn remove_forward_accept(nft: &dyn Nft, table: &str) -> Result<(), NetError> {
    let Ok(listing) = nft.run(&["-a", "list", "chain", "ip", "filter", "FORWARD"], None) else {
        return Ok(());
    };
    for h in tagged_handles(&listing, table) {
        nft.run(
            &[
                "delete",
                "rule",
                "ip",
                "filter",
                "FORWARD",
                "handle",
                &h.to_string(),
            ],
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn state() -> FwState {
        FwState {
            networks: vec![
                FwNetwork {
                    bridge: "skab0".into(),
                    subnet: "172.17.0.0/16".parse().expect("n"),
                    internal: false,
                },
                FwNetwork {
                    bridge: "skab1".into(),
                    subnet: "172.18.0.0/16".parse().expect("n"),
                    internal: true,
                },
            ],
            ports: vec![
                FwPort {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_ip: "172.17.0.2".parse().expect("ip"),
                    container_port: 80,
                },
                FwPort {
                    proto: Proto::Udp,
                    host_ip: Some("192.0.2.2".parse().expect("ip")),
                    host_port: 5353,
                    container_ip: "172.17.0.3".parse().expect("ip"),
                    container_port: 53,
                },
            ],
            services: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn overlay_traffic_is_balanced_and_returns_through_this_node() {
        let state = FwState {
            overlays: vec![FwOverlay {
                bridge: "skabo1".into(),
                subnet: "10.0.1.0/24".parse().expect("n"),
                node_ip: "10.0.1.2".parse().expect("ip"),
                local: vec!["10.0.1.7".parse().expect("ip")],
            }],
            vips: vec![
                FwVip {
                    vip: "10.0.1.3".parse().expect("ip"),
                    backends: vec![
                        "10.0.1.7".parse().expect("ip"),
                        "10.0.1.9".parse().expect("ip"),
                    ],
                },
                FwVip {
                    vip: "10.0.1.4".parse().expect("ip"),
                    backends: vec![],
                },
            ],
            ..Default::default()
        };
        let s = ruleset("t", &state);
        // In chains of their own, reached from the published and postrouting chains.
        assert!(s.contains("  chain published {\n    jump vips\n"));
        assert!(s.contains("  chain vips {\n    ip daddr 10.0.1.3"));
        assert!(s.contains("policy accept;\n    jump overlay_snat\n"));
        assert!(s.contains(
            "ip daddr 10.0.1.3 dnat ip to numgen inc mod 2 map { 0 : 10.0.1.7, 1 : 10.0.1.9 }"
        ));
        assert!(
            s.contains("    ip daddr 10.0.1.4 accept\n"),
            "a VIP with no running task is left alone, not passed on to published ports"
        );
        // Containers' VIP traffic always returns through us; outside clients reaching a
        // local task keep their address, remote tasks see this node's address.
        assert!(s.contains(
            "oifname \"skabo1\" ct status dnat ip saddr 10.0.1.0/24 snat ip to 10.0.1.2"
        ));
        assert!(s.contains(
            "oifname \"skabo1\" ct status dnat oifname . ip daddr != @overlay_local snat ip to 10.0.1.2"
        ));
        assert!(
            s.contains("  set overlay_local {\n    type ifname . ipv4_addr\n    elements = { \"skabo1\" . 10.0.1.7 }\n  }\n"),
            "{s}"
        );
    }

    #[test]
    fn ruleset_expresses_state() {
        let s = ruleset("skiff-abcd", &state());
        assert!(s.starts_with(
            "add table inet skiff-abcd\ndelete table inet skiff-abcd\ntable inet skiff-abcd {"
        ));
        assert!(s.contains("  map ports {\n    type inet_proto . inet_service : ipv4_addr . inet_service\n    elements = { tcp . 8080 : 172.17.0.2 . 80 }\n  }\n"));
        assert!(s.contains("    elements = { 192.0.2.2 . udp . 5353 : 172.17.0.3 . 53 }\n"));
        assert!(s.contains("    dnat ip to ip daddr . meta l4proto . th dport map @addr_ports\n"));
        assert!(s.contains("    meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports\n"));
        // Nothing published: empty maps and no lookup rules.
        let bare = ruleset(
            "t",
            &FwState {
                ports: vec![],
                ..state()
            },
        );
        assert!(
            !bare.contains("dnat ip to") && !bare.contains("elements"),
            "{bare}"
        );
        assert!(s.contains("ip saddr 172.17.0.0/16 oifname != \"skab0\" masquerade"));
        // Internal networks are never masqueraded out and are fenced in both directions.
        assert!(!s.contains("ip saddr 172.18.0.0/16 oifname != \"skab1\" masquerade"));
        assert!(s.contains("iifname \"skab1\" oifname != \"skab1\" drop"));
        assert!(s.contains("oifname \"skab1\" iifname != \"skab1\" drop"));
        assert!(s.contains("iifname \"skab0\" oifname { \"skab1\" } drop"));
        assert!(s.contains("ip daddr != 127.0.0.0/8 fib daddr type local jump published"));
        // Published traffic is accepted before the isolation drops of other networks.
        assert!(s.find("ct status dnat accept") < s.find("oifname { \"skab1\" } drop"));
        // Only our table is named anywhere.
        assert!(!s.contains("flush ruleset"));
    }

    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<(String, Option<String>)>>,
        forward: Mutex<Option<String>>,
    }

    impl Fake {
        /// The scripts fed to `nft -f` since the last call.
        fn scripts(&self) -> Vec<String> {
            self.calls
                .lock()
                .expect("lock")
                .drain(..)
                .filter_map(|c| c.1)
                .collect()
        }
    }

    impl Nft for Fake {
        fn run(&self, args: &[&str], script: Option<&str>) -> Result<String, NetError> {
            self.calls
                .lock()
                .expect("lock")
                .push((args.join(" "), script.map(String::from)));
            if args.contains(&"FORWARD") && args.contains(&"list") {
                return self
                    .forward
                    .lock()
                    .expect("lock")
                    .clone()
                    .ok_or(NetError::Command {
                        cmd: "nft".into(),
                        message: "No such file or directory".into(),
                    });
            }
            Ok(String::new())
        }
    }

    #[test]
    fn forward_accept_only_when_chain_exists_and_only_ours_removed() {
        let f = Fake::default();
        assert!(!ensure_forward_accept(&f, "skiff-x", "skab").expect("ok"));
        assert_eq!(f.calls.lock().expect("lock").len(), 1);
        *f.forward.lock().expect("lock") = Some(
            "table ip filter {\n chain FORWARD { # handle 2\n  policy drop;\n  counter jump DOCKER-USER # handle 7\n  iifname \"skab*\" accept comment \"skiff:skiff-other\" # handle 9\n }\n}\n".into(),
        );
        assert!(ensure_forward_accept(&f, "skiff-x", "skab").expect("ok"));
        let calls = f.calls.lock().expect("lock").clone();
        let script = calls
            .iter()
            .rev()
            .find_map(|c| c.1.clone())
            .expect("script");
        assert!(script.contains(
            "insert rule ip filter FORWARD iifname \"skab*\" accept comment \"skiff:skiff-x\""
        ));
        assert!(
            !calls.iter().any(|c| c.0.contains("delete")),
            "touched another agent's rule: {calls:?}"
        );
        assert_eq!(
            tagged_handles(
                "x comment \"skiff:t\" # handle 12\ny comment \"skiff:t2\" # handle 13",
                "t"
            ),
            vec![12]
        );
    }

    #[test]
    fn update_does_the_least_that_is_exact() {
        let f = Fake::default();
        let s0 = state();
        // Unknown previous state: the whole table.
        assert_eq!(update(&f, "t", None, &s0).expect("update"), Update::Table);
        assert!(f.scripts()[0].contains("delete table inet t"));
        // Same state, ports in another order: nothing runs.
        let mut reordered = s0.clone();
        reordered.ports.reverse();
        assert_eq!(
            update(&f, "t", Some(&s0), &reordered).expect("update"),
            Update::Unchanged
        );
        assert!(f.scripts().is_empty());
        // One more port and one gone, same lookup rules: elements only.
        let mut s1 = s0.clone();
        s1.ports[0].host_port = 8081;
        s1.ports.push(FwPort {
            proto: Proto::Udp,
            host_ip: Some("192.0.2.2".parse().expect("ip")),
            host_port: 5354,
            container_ip: "172.17.0.4".parse().expect("ip"),
            container_port: 54,
        });
        assert_eq!(
            update(&f, "t", Some(&s0), &s1).expect("update"),
            Update::Elements
        );
        assert_eq!(
            f.scripts(),
            vec!["delete element inet t ports { tcp . 8080 }\n\
                 add element inet t ports { tcp . 8081 : 172.17.0.2 . 80 }\n\
                 add element inet t addr_ports { 192.0.2.2 . udp . 5354 : 172.17.0.4 . 54 }\n"
                .to_string()]
        );
        // The last port of a map gone (its lookup rule goes too), or a network
        // changed: the whole table.
        let mut s2 = s0.clone();
        s2.ports.retain(|p| p.host_ip.is_some());
        assert_eq!(
            update(&f, "t", Some(&s0), &s2).expect("update"),
            Update::Table
        );
        let mut s3 = s0.clone();
        s3.networks.pop();
        assert_eq!(
            update(&f, "t", Some(&s0), &s3).expect("update"),
            Update::Table
        );
        let applied = f.scripts();
        assert_eq!(applied.len(), 2);
        assert!(applied.iter().all(|s| s.contains("delete table inet t")));

        // A task started: a VIP's backends and an overlay's local tasks change, plus a
        // port. One transaction refills the VIP chain and edits the map and the set;
        // the overlay's rules stay.
        let overlay = |local: &[&str]| FwOverlay {
            bridge: "skabo1".into(),
            subnet: "10.0.1.0/24".parse().expect("n"),
            node_ip: "10.0.1.2".parse().expect("ip"),
            local: local.iter().map(|a| a.parse().expect("ip")).collect(),
        };
        let vip = |backends: &[&str]| FwVip {
            vip: "10.0.1.3".parse().expect("ip"),
            backends: backends.iter().map(|a| a.parse().expect("ip")).collect(),
        };
        let mut m0 = s0.clone();
        m0.overlays = vec![overlay(&["10.0.1.7"])];
        m0.vips = vec![vip(&["10.0.1.7"])];
        let mut m1 = m0.clone();
        m1.overlays = vec![overlay(&["10.0.1.7", "10.0.1.8"])];
        m1.vips = vec![vip(&["10.0.1.7", "10.0.1.8"])];
        m1.ports[0].host_port = 8081;
        assert_eq!(
            update(&f, "t", Some(&m0), &m1).expect("update"),
            Update::Chains
        );
        let script = f.scripts().concat();
        assert!(
            script.contains("add element inet t ports { tcp . 8081"),
            "{script}"
        );
        assert!(script.contains(
            "flush chain inet t vips\n\
             add rule inet t vips ip daddr 10.0.1.3 dnat ip to numgen inc mod 2 map { 0 : 10.0.1.7, 1 : 10.0.1.8 }\n"
        ), "{script}");
        assert!(!script.contains("overlay_snat"), "{script}");
        assert!(
            script.contains("add element inet t overlay_local { \"skabo1\" . 10.0.1.8 }\n"),
            "{script}"
        );
        assert!(!script.contains("delete table"), "{script}");
        // Only the VIP's last backend gone: its chain alone, refilled with the VIP
        // left alone (answered by nobody, captured by no published port).
        let mut m2 = m1.clone();
        m2.vips = vec![vip(&[])];
        assert_eq!(
            update(&f, "t", Some(&m1), &m2).expect("update"),
            Update::Chains
        );
        assert_eq!(
            f.scripts(),
            vec![
                "flush chain inet t vips\nadd rule inet t vips ip daddr 10.0.1.3 accept\n"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_local_overlay_task_is_one_element_and_a_new_overlay_refills_its_chain() {
        let f = Fake::default();
        let overlay = |bridge: &str, local: &[&str]| FwOverlay {
            bridge: bridge.into(),
            subnet: "10.0.1.0/24".parse().expect("n"),
            node_ip: "10.0.1.2".parse().expect("ip"),
            local: local.iter().map(|a| a.parse().expect("ip")).collect(),
        };
        let with = |o: Vec<FwOverlay>| FwState {
            overlays: o,
            ..state()
        };
        let s0 = with(vec![overlay("skabo1", &["10.0.1.7"])]);
        // Started: one element added, nothing else (no chain is flushed, nothing freed).
        let s1 = with(vec![overlay("skabo1", &["10.0.1.7", "10.0.1.8"])]);
        assert_eq!(
            update(&f, "t", Some(&s0), &s1).expect("update"),
            Update::Elements
        );
        assert_eq!(
            f.scripts(),
            vec!["add element inet t overlay_local { \"skabo1\" . 10.0.1.8 }\n".to_string()]
        );
        // Stopped: its element deleted.
        assert_eq!(
            update(&f, "t", Some(&s1), &s0).expect("update"),
            Update::Elements
        );
        assert_eq!(
            f.scripts(),
            vec!["delete element inet t overlay_local { \"skabo1\" . 10.0.1.8 }\n".to_string()]
        );
        // A second overlay with the same subnet: its rules, and its tasks kept apart
        // from the first's by bridge.
        let s2 = with(vec![
            overlay("skabo1", &["10.0.1.7"]),
            overlay("skabo2", &["10.0.1.7"]),
        ]);
        assert_eq!(
            update(&f, "t", Some(&s0), &s2).expect("update"),
            Update::Chains
        );
        let script = f.scripts().concat();
        assert!(
            script.contains("add element inet t overlay_local { \"skabo2\" . 10.0.1.7 }\n"),
            "{script}"
        );
        assert!(
            script.contains("flush chain inet t overlay_snat\n"),
            "{script}"
        );
        assert!(script.contains(
            "add rule inet t overlay_snat oifname \"skabo2\" ct status dnat oifname . ip daddr != @overlay_local snat ip to 10.0.1.2\n"
        ), "{script}");
    }

    #[test]
    fn apply_feeds_the_script() {
        let f = Fake::default();
        apply(&f, "skiff-t", &state()).expect("apply");
        delete_table(&f, "skiff-t").expect("delete");
        let calls = f.calls.lock().expect("lock");
        assert_eq!(calls[0].0, "-f -");
        assert!(calls[0]
            .1
            .as_deref()
            .expect("script")
            .contains("chain forward"));
        assert_eq!(
            calls[1].1.as_deref(),
            Some("add table inet skiff-t\ndelete table inet skiff-t\n")
        );
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;

    #[test]
    fn services_round_robin_over_backends() {
        let one = FwService {
            proto: Proto::Tcp,
            port: 8080,
            backends: vec![("10.0.0.2".parse().expect("ip"), 80)],
        };
        assert_eq!(
            service_dnat(&one).as_deref(),
            Some("tcp dport 8080 dnat ip to 10.0.0.2:80")
        );
        let two = FwService {
            proto: Proto::Tcp,
            port: 8080,
            backends: vec![
                ("10.0.0.2".parse().expect("ip"), 80),
                ("10.0.0.3".parse().expect("ip"), 80),
            ],
        };
        assert_eq!(
            service_dnat(&two).as_deref(),
            Some("tcp dport 8080 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.2 . 80, 1 : 10.0.0.3 . 80 }")
        );
        assert!(service_dnat(&FwService {
            proto: Proto::Tcp,
            port: 1,
            backends: vec![]
        })
        .is_none());
        let state = FwState {
            services: vec![two],
            ..Default::default()
        };
        assert!(ruleset("t", &state).contains("numgen inc mod 2"));
    }
}
