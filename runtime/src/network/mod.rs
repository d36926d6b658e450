//! Single-host networking as a library: what a network and a container's attachment
//! are, and the pieces the agent composes to build them.
//!
//! - [`ipam`]: subnet choice that avoids the host's routes, and address allocation;
//! - [`link`]: network namespaces, bridges and veth pairs (through rtnetlink, no
//!   processes);
//! - [`nft`]: the agent's own nftables table, generated as one pure function and
//!   applied atomically (the agent never touches other tables' rules, except one
//!   tagged accept rule in an existing `ip filter FORWARD` chain, see [`nft`]);
//! - [`dns`]: the embedded resolver for user-defined networks;
//! - [`proxy`]: the userland proxy that serves published ports on the host's
//!   loopback (DNAT there would need `route_localnet`, CVE-2020-8558).

pub mod dns;
pub mod ipam;
pub mod link;
pub mod nft;
pub mod proxy;
pub mod vxlan;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Errors of the networking code; each names the value or object at fault.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid port specification: {0:?}")]
    BadPort(String),
    #[error("invalid IP address: {0:?}")]
    BadAddr(String),
    #[error("invalid subnet: {0:?}")]
    BadSubnet(String),
    #[error("invalid --add-host {0:?}: want HOST:IP")]
    BadHost(String),
    #[error("no available address pool for a new network (all configured pools overlap host routes or other networks)")]
    NoPool,
    #[error("no available IPv4 address in {0}")]
    Exhausted(ipnet::Ipv4Net),
    #[error("address {addr} is not in subnet {subnet}")]
    NotInSubnet {
        addr: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
    },
    #[error("address {0} is already in use")]
    InUse(Ipv4Addr),
    #[error("Bind for {addr} failed: port is already allocated ({source})")]
    PortInUse {
        addr: String,
        source: std::io::Error,
    },
    #[error("running {cmd}: {message}")]
    Command { cmd: String, message: String },
    #[error("netlink: {op}: {source}")]
    Netlink { op: String, source: std::io::Error },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Transport protocol of a published port.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Proto {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(NetError::BadPort(s.into())),
        }
    }
}

/// One `-p` request as the user gave it. `host_port` 0 means "any free port".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Empty means every host address (Docker's 0.0.0.0).
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortBinding {
    /// Docker's `port` line: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.proto, ip, self.host_port
        )
    }
}

fn port_num(s: &str, spec: &str, allow_zero: bool) -> Result<u16, NetError> {
    match s.parse::<u16>() {
        Ok(0) if !allow_zero => Err(NetError::BadPort(spec.into())),
        Ok(p) => Ok(p),
        Err(_) => Err(NetError::BadPort(spec.into())),
    }
}

/// Parses Docker's `-p` forms: `80`, `8080:80`, `IP:8080:80`, `IP::80`, each with an
/// optional `/tcp` or `/udp`.
pub fn parse_publish(spec: &str) -> Result<PortBinding, NetError> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.parse::<Proto>()?),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host_port, cport) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(NetError::BadPort(spec.into())),
    };
    if !host_ip.is_empty() {
        host_ip
            .parse::<Ipv4Addr>()
            .map_err(|_| NetError::BadAddr(host_ip.into()))?;
    }
    let host_port = if host_port.is_empty() {
        0
    } else {
        port_num(host_port, spec, true)?
    };
    Ok(PortBinding {
        host_ip: if host_ip == "0.0.0.0" {
            String::new()
        } else {
            host_ip.into()
        },
        host_port,
        container_port: port_num(cport, spec, false)?,
        proto,
    })
}

/// Parses an EXPOSE'd port key (`80/tcp`, `53/udp`, `8080`).
pub fn parse_exposed(key: &str) -> Result<(u16, Proto), NetError> {
    let (p, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    Ok((port_num(p, key, false)?, proto.parse()?))
}

/// A container's own network settings (Docker's `--ip`, `--network-alias`, `--dns*`,
/// `--add-host`, `-p`, `-P`). Stored in the container record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerNet {
    pub ipv4_address: String,
    pub aliases: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `HOST:IP` entries for /etc/hosts.
    pub extra_hosts: Vec<String>,
    pub ports: Vec<PortBinding>,
    pub publish_all: bool,
}

/// A network's durable definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// Always `bridge` for now.
    pub driver: String,
    pub subnet: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub internal: bool,
    /// The Linux bridge that carries it.
    pub bridge: String,
    pub created: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Set for this node's part of a cluster overlay network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayInfo>,
}

/// The node-local devices and address of an overlay network (see [`vxlan`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    pub vni: u32,
    pub vxlan: String,
    /// This node's own address on the network.
    pub node_ip: Ipv4Addr,
}

impl Network {
    /// The default `bridge` network has no embedded DNS, as with Docker.
    pub fn is_default(&self) -> bool {
        self.name == "bridge"
    }
}

/// Renders /etc/hosts for a container: Docker's fixed lines, its own address(es)
/// with its hostname, then `--add-host` entries.
pub fn hosts_file(hostname: &str, own: &[Ipv4Addr], extra: &[String]) -> Result<String, NetError> {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for e in extra {
        let (h, ip) = e
            .split_once(':')
            .filter(|(h, ip)| !h.is_empty() && !ip.is_empty())
            .ok_or_else(|| NetError::BadHost(e.clone()))?;
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| NetError::BadHost(e.clone()))?;
        s.push_str(&format!("{ip}\t{h}\n"));
    }
    if own.is_empty() {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for ip in own {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    Ok(s)
}

/// Renders resolv.conf. Loopback nameservers are unreachable from a container's own
/// namespace and are dropped; none left means Docker's public fallback is *not* used
/// here (no traffic leaves without the operator asking): the file has no nameserver.
pub fn resolv_conf(nameservers: &[String], search: &[String], options: &[String]) -> String {
    let mut s = String::new();
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    for n in nameservers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    if s.is_empty() {
        s.push('\n');
    }
    s
}

/// The host's resolv.conf split into (nameservers, search, options).
pub fn parse_resolv_conf(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut ns, mut search, mut opts) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("nameserver") => ns.extend(it.next().map(String::from)),
            Some("search") | Some("domain") => search = it.map(String::from).collect(),
            Some("options") => opts.extend(it.map(String::from)),
            _ => {}
        }
    }
    (ns, search, opts)
}

/// Whether a nameserver address is on loopback (unreachable from a container).
pub fn is_loopback(ns: &str) -> bool {
    ns.parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").expect("p");
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port, p.proto),
            ("", 8080, 80, Proto::Tcp)
        );
        let p = parse_publish("127.0.0.1:8080:80").expect("p");
        assert_eq!(p.host_ip, "127.0.0.1");
        let p = parse_publish("8080:80/udp").expect("p");
        assert_eq!(p.proto, Proto::Udp);
        let p = parse_publish("80").expect("p");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("127.0.0.1::53/udp").expect("p");
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.proto),
            ("127.0.0.1", 0, Proto::Udp)
        );
        for bad in [
            "",
            "x:80",
            "80:0",
            "1.2.3:80:80",
            "80/sctp",
            "1:2:3:4",
            "70000",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_publish("0.0.0.0:1:2").expect("p").to_string(),
            "2/tcp -> 0.0.0.0:1"
        );
    }

    #[test]
    fn hosts_and_resolv() {
        let h = hosts_file(
            "web",
            &["10.0.0.2".parse().expect("ip")],
            &["db:10.9.9.9".into()],
        )
        .expect("hosts");
        assert!(
            h.contains("10.0.0.2\tweb\n")
                && h.contains("10.9.9.9\tdb\n")
                && !h.contains("127.0.1.1")
        );
        assert!(hosts_file("web", &[], &["nocolon".into()]).is_err());
        assert!(hosts_file("web", &[], &["db:notanip".into()]).is_err());
        let r = resolv_conf(
            &["10.0.0.1".into()],
            &["example.com".into()],
            &["ndots:2".into()],
        );
        assert_eq!(
            r,
            "search example.com\nnameserver 10.0.0.1\noptions ndots:2\n"
        );
        let (ns, s, o) = parse_resolv_conf(
            "# x\nnameserver 127.0.0.53\nnameserver 9.9.9.9\nsearch a b\noptions edns0\n",
        );
        assert_eq!((ns.len(), s.len(), o.len()), (2, 2, 1));
        assert!(is_loopback("127.0.0.53") && !is_loopback("9.9.9.9"));
    }
}
