//! The Linux side of an overlay network on one node: a bridge (shared with the
//! container veths) plus a VXLAN device plugged into it.
//!
//! The VXLAN device never learns and never floods: forwarding (`bridge fdb`) and
//! neighbour (`ip neigh`) entries for every remote endpoint are programmed from cluster
//! state, and the device answers ARP for them itself (`proxy`), as Docker's overlay
//! driver does. Broadcast and unknown traffic stays on the node, so the gateway address
//! every node's bridge carries never clashes across hosts.
//!
//! These run once per network or per endpoint change, not per container start, so they
//! use iproute2's batch mode (one process per sync).

use super::link::{link_exists, run_cmd};
use super::NetError;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// VXLAN adds 50 bytes (outer Ethernet, IP, UDP and VXLAN headers) to a 1500-byte underlay.
pub const OVERLAY_MTU: u32 = 1450;

/// The node's side of one overlay network.
#[derive(Clone, Debug)]
pub struct OverlaySpec<'a> {
    pub bridge: &'a str,
    pub vxlan: &'a str,
    pub vni: u32,
    pub port: u16,
    pub subnet: Ipv4Net,
    /// This node's own address on the network: the bridge's source for routed traffic
    /// (unique per node, so replies come back here), its MAC derived from it.
    pub node_ip: Ipv4Addr,
    pub mac: &'a str,
}

/// A remote endpoint: its overlay address and MAC, and the node that holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub mac: String,
    pub node: Ipv4Addr,
}

fn ip_batch(script: &str) -> Result<(), NetError> {
    if script.is_empty() {
        return Ok(());
    }
    run_cmd("ip", &["-force", "-batch", "-"], Some(script)).map(|_| ())
}

/// Makes the VXLAN device, plugs it into the bridge, fixes the bridge's MAC, MTU and
/// node address, and routes the subnet with the node address as source. The bridge
/// itself (with the gateway address) is made by [`super::link::ensure_bridge`] first.
pub fn ensure(spec: &OverlaySpec<'_>) -> Result<(), NetError> {
    if !link_exists(spec.vxlan) {
        run_cmd(
            "ip",
            &[
                "link",
                "add",
                spec.vxlan,
                "type",
                "vxlan",
                "id",
                &spec.vni.to_string(),
                "dstport",
                &spec.port.to_string(),
                "nolearning",
                "proxy",
                // No outer UDP checksum (RFC 7348's advice for IPv4; Docker's too):
                // the inner packets carry their own.
                "noudpcsum",
            ],
            None,
        )?;
    }
    let mtu = OVERLAY_MTU.to_string();
    let node = format!("{}/32", spec.node_ip);
    let addrs = run_cmd(
        "ip",
        &["-4", "-o", "addr", "show", "dev", spec.bridge],
        None,
    )?;
    let mut s = format!(
        "link set {vx} mtu {mtu} master {br} up\nlink set {br} address {mac} mtu {mtu}\n",
        vx = spec.vxlan,
        br = spec.bridge,
        mac = spec.mac
    );
    if !addrs.contains(&format!(" {node} ")) {
        s.push_str(&format!("addr add {node} dev {}\n", spec.bridge));
    }
    s.push_str(&format!(
        "route replace {} dev {} proto kernel scope link src {}\n",
        spec.subnet, spec.bridge, spec.node_ip
    ));
    ip_batch(&s)
}

/// Current remote entries of a VXLAN device: MAC → destination node, and IP → MAC.
fn current(vxlan: &str) -> (BTreeMap<String, String>, BTreeMap<Ipv4Addr, String>) {
    let mut fdb = BTreeMap::new();
    if let Ok(out) = run_cmd("bridge", &["-j", "fdb", "show", "dev", vxlan], None) {
        if let Ok(serde_json::Value::Array(rows)) = serde_json::from_str(&out) {
            for r in rows {
                if let (Some(mac), Some(dst)) = (r["mac"].as_str(), r["dst"].as_str()) {
                    fdb.insert(mac.to_string(), dst.to_string());
                }
            }
        }
    }
    let mut neigh = BTreeMap::new();
    if let Ok(out) = run_cmd("ip", &["-4", "-j", "neigh", "show", "dev", vxlan], None) {
        if let Ok(serde_json::Value::Array(rows)) = serde_json::from_str(&out) {
            for r in rows {
                if let (Some(ip), Some(mac)) = (
                    r["dst"].as_str().and_then(|s| s.parse().ok()),
                    r["lladdr"].as_str(),
                ) {
                    neigh.insert(ip, mac.to_string());
                }
            }
        }
    }
    (fdb, neigh)
}

/// Programs exactly `peers` on the device: adds and replaces what changed, removes
/// entries of endpoints that are gone.
pub fn sync_peers(vxlan: &str, peers: &[Peer]) -> Result<(), NetError> {
    let (fdb, neigh) = current(vxlan);
    let want_fdb: BTreeMap<String, String> = peers
        .iter()
        .map(|p| (p.mac.clone(), p.node.to_string()))
        .collect();
    let want_neigh: BTreeMap<Ipv4Addr, String> =
        peers.iter().map(|p| (p.ip, p.mac.clone())).collect();
    let mut bridge_script = String::new();
    for (mac, dst) in &want_fdb {
        if fdb.get(mac) != Some(dst) {
            bridge_script.push_str(&format!(
                "fdb replace {mac} dev {vxlan} dst {dst} self permanent\n"
            ));
        }
    }
    for (mac, dst) in &fdb {
        if !want_fdb.contains_key(mac) {
            bridge_script.push_str(&format!("fdb del {mac} dev {vxlan} dst {dst} self\n"));
        }
    }
    let mut ip_script = String::new();
    for (ip, mac) in &want_neigh {
        if neigh.get(ip) != Some(mac) {
            ip_script.push_str(&format!(
                "neigh replace {ip} lladdr {mac} dev {vxlan} nud permanent\n"
            ));
        }
    }
    for ip in neigh.keys() {
        if !want_neigh.contains_key(ip) {
            ip_script.push_str(&format!("neigh del {ip} dev {vxlan}\n"));
        }
    }
    if !bridge_script.is_empty() {
        run_cmd("bridge", &["-force", "-batch", "-"], Some(&bridge_script))?;
    }
    ip_batch(&ip_script)
}

/// Keeps exactly `vips` (besides the gateway and node address) as /32 addresses on the
/// bridge: containers' ARP for a virtual IP is answered locally and the connection is
/// balanced by this node's nftables rules.
pub fn sync_local_addrs(
    bridge: &str,
    keep: &[Ipv4Addr],
    vips: &BTreeSet<Ipv4Addr>,
) -> Result<(), NetError> {
    let out = run_cmd("ip", &["-4", "-j", "addr", "show", "dev", bridge], None)?;
    let mut have = BTreeSet::new();
    if let Ok(serde_json::Value::Array(links)) = serde_json::from_str(&out) {
        for l in links {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if let (Some(ip), Some(32)) = (
                    a["local"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()),
                    a["prefixlen"].as_u64(),
                ) {
                    have.insert(ip);
                }
            }
        }
    }
    let mut s = String::new();
    for v in vips.difference(&have) {
        s.push_str(&format!("addr add {v}/32 dev {bridge}\n"));
    }
    for v in have.difference(vips) {
        if !keep.contains(v) {
            s.push_str(&format!("addr del {v}/32 dev {bridge}\n"));
        }
    }
    ip_batch(&s)
}
