//! The agent's nftables rules. Everything lives in one table per agent
//! (`inet skiff` for the default --root, `inet skiff-<hash>` otherwise), rebuilt as a
//! whole from the desired state and replaced atomically in one `nft -f` transaction,
//! so several agents (and Docker, firewalld...) coexist and nobody's rules are flushed.
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwService {
    pub proto: Proto,
    pub port: u16,
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// Everything the table must express.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FwState {
    pub networks: Vec<FwNetwork>,
    pub ports: Vec<FwPort>,
    pub services: Vec<FwService>,
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
    s.push_str("  chain published {\n");
    for p in &state.ports {
        let daddr = p
            .host_ip
            .map(|ip| format!("ip daddr {ip} "))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "    {daddr}{} dport {} dnat ip to {}:{}",
            p.proto, p.host_port, p.container_ip, p.container_port
        );
    }
    for svc in &state.services {
        if let Some(rule) = service_dnat(svc) {
            let _ = writeln!(s, "    {rule}");
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump published\n  }\n");
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    ip daddr != 127.0.0.0/8 fib daddr type local jump published\n  }\n");
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
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
        }
    }

    #[test]
    fn ruleset_expresses_state() {
        let s = ruleset("skiff-abcd", &state());
        assert!(s.starts_with(
            "add table inet skiff-abcd\ndelete table inet skiff-abcd\ntable inet skiff-abcd {"
        ));
        assert!(s.contains("    tcp dport 8080 dnat ip to 172.17.0.2:80\n"));
        assert!(s.contains("    ip daddr 192.0.2.2 udp dport 5353 dnat ip to 172.17.0.3:53\n"));
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
