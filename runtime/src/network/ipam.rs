//! Address management: choosing a subnet for a new network from the configured pools
//! (skipping any that overlap the host's routes or another network), and handing out
//! addresses inside a subnet, never twice.

use super::NetError;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// A pool to carve network subnets from (Docker's `default-address-pools` entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub base: Ipv4Net,
    /// Prefix length of each subnet taken from `base`.
    pub size: u8,
}

/// Docker's defaults: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
pub fn default_pools() -> Vec<Pool> {
    vec![
        Pool {
            base: "172.17.0.0/16".parse().expect("static"),
            size: 16,
        },
        Pool {
            base: "172.18.0.0/15".parse().expect("static"),
            size: 16,
        },
        Pool {
            base: "172.20.0.0/14".parse().expect("static"),
            size: 16,
        },
        Pool {
            base: "172.24.0.0/14".parse().expect("static"),
            size: 16,
        },
        Pool {
            base: "172.28.0.0/14".parse().expect("static"),
            size: 16,
        },
        Pool {
            base: "192.168.0.0/16".parse().expect("static"),
            size: 20,
        },
    ]
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first subnet of the pools that overlaps nothing in `taken` (existing networks
/// and the host's routes; a default route, 0.0.0.0/0, is ignored).
pub fn pick_subnet(pools: &[Pool], taken: &[Ipv4Net]) -> Result<Ipv4Net, NetError> {
    let taken: Vec<&Ipv4Net> = taken.iter().filter(|t| t.prefix_len() > 0).collect();
    for pool in pools {
        let Ok(subnets) = pool.base.subnets(pool.size) else {
            continue;
        };
        for s in subnets {
            if !taken.iter().any(|t| overlaps(t, &s)) {
                return Ok(s);
            }
        }
    }
    Err(NetError::NoPool)
}

/// Whether `subnet` overlaps any of `taken` (for `network create --subnet`).
pub fn conflicts(subnet: &Ipv4Net, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    taken
        .iter()
        .filter(|t| t.prefix_len() > 0)
        .find(|t| overlaps(t, subnet))
        .copied()
}

/// Parses `ip -4 -j route show table all` output into destination prefixes.
pub fn parse_routes_json(json: &str) -> Vec<Ipv4Net> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["dst"].as_str())
                .filter(|d| *d != "default")
                .filter_map(|d| {
                    if d.contains('/') {
                        d.parse::<Ipv4Net>().ok()
                    } else {
                        d.parse::<Ipv4Addr>()
                            .ok()
                            .and_then(|a| Ipv4Net::new(a, 32).ok())
                    }
                })
                // Local table entries for the host's own addresses are /32s that
                // also appear as the connected subnet; loopback is never a candidate.
                .filter(|n| !n.network().is_loopback())
                .collect()
        })
        .unwrap_or_default()
}

/// Addresses in use in one subnet. The network and broadcast addresses and the
/// gateway are never handed out.
#[derive(Clone, Debug)]
pub struct Ipam {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: BTreeSet<Ipv4Addr>,
    /// Allocation continues after the last address handed out, so a just-freed
    /// address is not immediately reused (stale ARP/DNS entries point at it).
    cursor: u32,
}

impl Ipam {
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr) -> Self {
        Self {
            subnet,
            gateway,
            used: BTreeSet::new(),
            cursor: u32::from(gateway),
        }
    }

    /// The first usable host address: Docker's default gateway choice.
    pub fn default_gateway(subnet: &Ipv4Net) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(subnet.network()) + 1)
    }

    fn usable(&self, a: Ipv4Addr) -> bool {
        self.subnet.contains(&a)
            && a != self.subnet.network()
            && a != self.subnet.broadcast()
            && a != self.gateway
    }

    /// Marks a specific address as used (`--ip`, or re-adopting at agent start).
    pub fn reserve(&mut self, a: Ipv4Addr) -> Result<(), NetError> {
        if !self.subnet.contains(&a) || a == self.subnet.network() || a == self.subnet.broadcast() {
            return Err(NetError::NotInSubnet {
                addr: a,
                subnet: self.subnet,
            });
        }
        if a == self.gateway || !self.used.insert(a) {
            return Err(NetError::InUse(a));
        }
        Ok(())
    }

    /// Hands out a free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, NetError> {
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast()).saturating_sub(1);
        if last < first {
            return Err(NetError::Exhausted(self.subnet));
        }
        let span = last - first + 1;
        let start = if self.cursor < first || self.cursor >= last {
            first
        } else {
            self.cursor + 1
        };
        for i in 0..span {
            let n = first + (start - first + i) % span;
            let a = Ipv4Addr::from(n);
            if self.usable(a) && !self.used.contains(&a) {
                self.used.insert(a);
                self.cursor = n;
                return Ok(a);
            }
        }
        Err(NetError::Exhausted(self.subnet))
    }

    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&a);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// Usable addresses in the subnet (for `network inspect`).
    pub fn capacity(&self) -> u64 {
        (1u64 << (32 - self.subnet.prefix_len())).saturating_sub(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    #[test]
    fn pick_skips_routes_and_networks() {
        let pools = default_pools();
        assert_eq!(pick_subnet(&pools, &[]).expect("p"), net("172.17.0.0/16"));
        let taken = [net("172.17.5.0/24"), net("0.0.0.0/0"), net("172.18.0.0/16")];
        assert_eq!(
            pick_subnet(&pools, &taken).expect("p"),
            net("172.19.0.0/16")
        );
        // A covering route (e.g. 172.16.0.0/12 on a VPN) rules out the whole 172 range.
        assert_eq!(
            pick_subnet(&pools, &[net("172.16.0.0/12")]).expect("p"),
            net("192.168.0.0/20")
        );
        let tiny = [Pool {
            base: net("10.0.0.0/30"),
            size: 30,
        }];
        assert!(matches!(
            pick_subnet(&tiny, &[net("10.0.0.0/8")]),
            Err(NetError::NoPool)
        ));
        assert_eq!(
            conflicts(&net("192.0.2.0/25"), &[net("192.0.2.0/24")]),
            Some(net("192.0.2.0/24"))
        );
    }

    #[test]
    fn routes_json() {
        let j = r#"[{"dst":"default","gateway":"192.0.2.1"},{"dst":"192.0.2.0/24"},{"type":"local","dst":"192.0.2.2"},{"dst":"127.0.0.0/8"}]"#;
        assert_eq!(
            parse_routes_json(j),
            vec![net("192.0.2.0/24"), net("192.0.2.2/32")]
        );
        assert!(parse_routes_json("garbage").is_empty());
    }

    #[test]
    fn never_twice_and_frees() {
        let s = net("10.9.0.0/29"); // .1 gateway, .2-.6 usable
        let mut ipam = Ipam::new(s, Ipam::default_gateway(&s));
        ipam.reserve("10.9.0.4".parse().expect("ip"))
            .expect("reserve");
        let mut got = BTreeSet::new();
        for _ in 0..4 {
            assert!(got.insert(ipam.allocate().expect("alloc")));
        }
        assert!(!got.contains(&"10.9.0.4".parse::<Ipv4Addr>().expect("ip")));
        assert!(matches!(ipam.allocate(), Err(NetError::Exhausted(_))));
        assert!(matches!(
            ipam.reserve("10.9.0.4".parse().expect("ip")),
            Err(NetError::InUse(_))
        ));
        assert!(matches!(
            ipam.reserve("10.9.0.1".parse().expect("ip")),
            Err(NetError::InUse(_))
        ));
        assert!(matches!(
            ipam.reserve("10.9.1.1".parse().expect("ip")),
            Err(NetError::NotInSubnet { .. })
        ));
        ipam.release("10.9.0.3".parse().expect("ip"));
        assert_eq!(
            ipam.allocate().expect("alloc"),
            "10.9.0.3".parse::<Ipv4Addr>().expect("ip")
        );
        assert_eq!(ipam.in_use(), 5);
        assert_eq!(ipam.capacity(), 5);
    }

    #[test]
    fn freed_address_is_not_reused_at_once() {
        let s = net("10.9.0.0/24");
        let mut ipam = Ipam::new(s, Ipam::default_gateway(&s));
        let a = ipam.allocate().expect("a");
        ipam.release(a);
        assert_ne!(ipam.allocate().expect("b"), a);
    }
}
