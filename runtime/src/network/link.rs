//! Network namespaces, bridges and veth pairs, made with rtnetlink messages on a
//! blocking socket: no processes on the per-container path.
//!
//! How each piece is done, and why:
//! - A persistent namespace ([`create_netns`]) comes from a short-lived thread that
//!   `unshare(CLONE_NEWNET)`s itself (a thread may change its own network namespace;
//!   the agent never forks without exec), bind-mounts `/proc/thread-self/ns/net` onto
//!   the file, opens a netlink socket there to bring `lo` up, and exits.
//! - A netlink socket keeps the namespace it was opened in, so [`Netlink::open_in`]
//!   opens one from a thread that `setns`es into the file and hands it back; every
//!   request made on it acts inside that namespace.
//! - [`attach_veth`] sends one `RTM_NEWLINK` that creates the pair, puts the peer
//!   straight into the container's namespace (by fd) with its MAC, plugs the host end
//!   into the bridge and sets it up; then, on a socket inside the namespace, the
//!   address, link up and default route.
//! - Messages are built with `rtnetlink`'s builders and `netlink-packet-route` types
//!   and sent synchronously (request, then read to the ACK): the callers run under the
//!   agent's network lock, and a request takes microseconds, less than waking a task.
//! - Deleting a veth is the one slow request (10–20 ms): the kernel waits out RCU
//!   grace periods before it answers, whichever tool asks.
//!
//! [`run_cmd`] stays for the callers that still use `nft`, `ip` or `bridge` off the
//! per-container path.

use super::NetError;
use ipnet::Ipv4Net;
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
use rtnetlink::{
    AddressMessageBuilder, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `prog args` (with `stdin` fed in), returning stdout, or an error carrying stderr.
pub fn run_cmd(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    let cmdline = format!("{prog} {}", args.join(" "));
    let err = |message: String| NetError::Command {
        cmd: cmdline.clone(),
        message,
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(err(if msg.is_empty() {
            out.status.to_string()
        } else {
            msg
        }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ifindex of `lo`: the kernel registers loopback first in every namespace.
const LOOPBACK_IFINDEX: u32 = 1;

fn nl_err(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

fn is_errno(e: &NetError, errno: i32) -> bool {
    matches!(e, NetError::Netlink { source, .. } if source.raw_os_error() == Some(errno))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], NetError> {
    let bad = || NetError::BadAddr(mac.to_string());
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in out.iter_mut() {
        let p = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// A blocking rtnetlink socket; every request acts in the network namespace the socket
/// was opened in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's namespace (the agent's, the host's).
    pub fn open() -> Result<Self, NetError> {
        let sock = Socket::new(NETLINK_ROUTE).map_err(nl_err("opening socket"))?;
        Ok(Self { sock, seq: 0 })
    }

    /// A socket inside the namespace bound at `netns`, opened by a short-lived thread
    /// that joins it (the caller's own namespace never changes).
    pub fn open_in(netns: &Path) -> Result<Self, NetError> {
        let f = std::fs::File::open(netns).map_err(|source| NetError::Io {
            what: "opening netns",
            path: netns.into(),
            source,
        })?;
        std::thread::Builder::new()
            .name("netns-socket".into())
            .spawn(move || {
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| nl_err("joining namespace")(e.into()))?;
                Self::open()
            })
            .map_err(nl_err("spawning namespace thread"))?
            .join()
            .map_err(|_| nl_err("namespace thread")(std::io::Error::other("panicked")))?
    }

    /// Sends one request and reads the replies up to its ACK (or, for a dump, its
    /// DONE); returns the data messages. A NACK becomes the error, with its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = seq;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(nl_err(op))?;
        let mut out = vec![];
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(nl_err(op))?;
            let mut off = 0;
            while off < data.len() {
                let len = NetlinkBuffer::new_checked(&data[off..])
                    .map(|b| b.length() as usize)
                    .map_err(|e| nl_err(op)(std::io::Error::other(e.to_string())))?;
                if len == 0 {
                    break;
                }
                let part = &data[off..(off + len).min(data.len())];
                off += (len + 3) & !3;
                // Skips what it cannot parse (a newer kernel's attribute in a dump).
                let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(part) else {
                    continue;
                };
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(nl_err(op)(e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// The index of link `name`, `None` when there is no such link.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetError> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.request(
            RouteNetlinkMessage::GetLink(msg),
            0,
            &format!("finding link {name}"),
        ) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn existing_index(&mut self, name: &str) -> Result<u32, NetError> {
        self.link_index(name)?.ok_or_else(|| NetError::Netlink {
            op: format!("finding link {name}"),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    fn set_link(&mut self, msg: LinkMessage, op: &str) -> Result<(), NetError> {
        self.request(RouteNetlinkMessage::SetLink(msg), 0, op)
            .map(|_| ())
    }

    /// `ip link set INDEX up`.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetError> {
        self.set_link(
            LinkUnspec::new_with_index(index).up().build(),
            &format!("setting link {index} up"),
        )
    }

    /// `ip link set INDEX mtu MTU`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetError> {
        self.set_link(
            LinkUnspec::new_with_index(index).mtu(mtu).build(),
            &format!("setting MTU of link {index}"),
        )
    }

    /// `ip link set INDEX master MASTER`.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NetError> {
        self.set_link(
            LinkUnspec::new_with_index(index).controller(master).build(),
            &format!("plugging link {index} into {master}"),
        )
    }

    /// Deletes link `name`; a missing link is fine (deleting one end of a veth
    /// deletes both).
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.request(
            RouteNetlinkMessage::DelLink(msg),
            0,
            &format!("deleting link {name}"),
        ) {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Deletes the link with interface index `index`; already gone is fine. By index,
    /// not name: a new link may by now carry the old one's name.
    pub fn delete_index(&mut self, index: u32) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(
            RouteNetlinkMessage::DelLink(msg),
            0,
            &format!("deleting link {index}"),
        ) {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Adds `addr/prefix` to a link; already present is fine.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix)
            .build();
        match self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding {addr}/{prefix} to link {index}"),
        ) {
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// `ip route replace DST [via GATEWAY] dev INDEX [src PREF_SRC]` in the main table;
    /// without a gateway the route has link scope, as `ip` gives it.
    pub fn replace_route(
        &mut self,
        dst: Ipv4Net,
        index: u32,
        gateway: Option<Ipv4Addr>,
        pref_src: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .protocol(RouteProtocol::Boot);
        if dst.prefix_len() > 0 {
            b = b.destination_prefix(dst.network(), dst.prefix_len());
        }
        b = match gateway {
            Some(gw) => b.gateway(gw),
            None => b.scope(RouteScope::Link),
        };
        if let Some(src) = pref_src {
            b = b.pref_source(src);
        }
        self.request(
            RouteNetlinkMessage::NewRoute(b.build()),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("routing {dst} via link {index}"),
        )
        .map(|_| ())
    }

    /// Destination prefixes of every IPv4 route in every table, like
    /// `ip -4 route show table all` (default routes and loopback left out).
    pub fn routes_v4(&mut self) -> Result<Vec<Ipv4Net>, NetError> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetRoute(q),
            NLM_F_DUMP,
            "listing routes",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .filter_map(|r| {
                let prefix = r.header.destination_prefix_length;
                r.attributes.into_iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        Ipv4Net::new(d, prefix).ok()
                    }
                    _ => None,
                })
            })
            .filter(|n| !n.network().is_loopback())
            .collect())
    }

    fn neigh_request(
        &mut self,
        msg: NeighbourMessage,
        add: bool,
        op: String,
    ) -> Result<(), NetError> {
        let res = if add {
            self.request(
                RouteNetlinkMessage::NewNeighbour(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
                &op,
            )
        } else {
            self.request(RouteNetlinkMessage::DelNeighbour(msg), 0, &op)
        };
        match res {
            Err(e) if !add && is_errno(&e, libc::ENOENT) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn neigh_msg(index: u32, ip: Ipv4Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unspec;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m
    }

    /// `ip neigh replace IP lladdr MAC dev INDEX nud permanent`.
    pub fn replace_neigh(&mut self, index: u32, ip: Ipv4Addr, mac: &str) -> Result<(), NetError> {
        let mut m = Self::neigh_msg(index, ip);
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(
            parse_mac(mac)?.to_vec(),
        ));
        self.neigh_request(m, true, format!("adding neighbour {ip} on link {index}"))
    }

    /// `ip neigh del IP dev INDEX`; a missing entry is fine.
    pub fn delete_neigh(&mut self, index: u32, ip: Ipv4Addr) -> Result<(), NetError> {
        let m = Self::neigh_msg(index, ip);
        self.neigh_request(m, false, format!("deleting neighbour {ip} on link {index}"))
    }

    fn fdb_msg(index: u32, mac: &str, dst: Ipv4Addr) -> Result<NeighbourMessage, NetError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.header.kind = RouteType::Unspec;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(
            parse_mac(mac)?.to_vec(),
        ));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        Ok(m)
    }

    /// `bridge fdb replace MAC dev INDEX dst DST self permanent` (a VXLAN device's
    /// forwarding entry: frames for MAC go to the node at DST).
    pub fn replace_fdb(&mut self, index: u32, mac: &str, dst: Ipv4Addr) -> Result<(), NetError> {
        let m = Self::fdb_msg(index, mac, dst)?;
        self.neigh_request(m, true, format!("adding fdb entry {mac} on link {index}"))
    }

    /// `bridge fdb del MAC dev INDEX dst DST self`; a missing entry is fine.
    pub fn delete_fdb(&mut self, index: u32, mac: &str, dst: Ipv4Addr) -> Result<(), NetError> {
        let m = Self::fdb_msg(index, mac, dst)?;
        self.neigh_request(
            m,
            false,
            format!("deleting fdb entry {mac} on link {index}"),
        )
    }

    /// Creates (or re-uses) bridge `name` with `gateway/prefix` and brings it up.
    pub fn ensure_bridge(
        &mut self,
        name: &str,
        gateway: Ipv4Addr,
        subnet: &Ipv4Net,
    ) -> Result<(), NetError> {
        let index = match self.link_index(name)? {
            Some(i) => i,
            None => {
                let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bridge)
                    .name(name)
                    .build();
                match self.request(
                    RouteNetlinkMessage::NewLink(msg),
                    NLM_F_CREATE | NLM_F_EXCL,
                    &format!("creating bridge {name}"),
                ) {
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    r => {
                        r?;
                    }
                }
                self.existing_index(name)?
            }
        };
        self.add_address(index, gateway, subnet.prefix_len())?;
        self.set_up(index)
    }

    /// Creates the veth pair of `v` from this socket's namespace (the host end, plugged
    /// into `v.bridge`, which must live here) into `v.netns`, and configures the
    /// container end there. On failure the pair is removed.
    pub fn attach_veth(&mut self, v: &VethSpec<'_>) -> Result<(), NetError> {
        let mut inside = Netlink::open_in(v.netns)?;
        let mac = parse_mac(v.mac)?;
        self.create_pair(
            v.netns,
            v.bridge,
            v.host_if,
            v.ifname,
            v.mtu,
            Some(mac),
            true,
        )?;
        let configured = inside.existing_index(v.ifname).and_then(|index| {
            inside.add_address(index, v.addr, v.subnet.prefix_len())?;
            inside.set_up(index)?;
            if let Some(gw) = v.gateway {
                inside.replace_route(Ipv4Net::default(), index, Some(gw), None)?;
            }
            Ok(())
        });
        if configured.is_err() {
            let _ = self.delete_link(v.host_if);
        }
        configured
    }

    /// A veth pair made ahead of its container (a standby sandbox): the host end
    /// `host_if` down in `bridge`, the other end `ifname` down in the namespace of
    /// `inside` (a socket opened in the namespace bound at `netns`), no address.
    /// Returns the indexes (inside, host). [`Self::rename_up`] and
    /// [`Self::configure_standby`] finish it. On failure the pair is removed.
    pub fn standby_veth(
        &mut self,
        netns: &Path,
        bridge: &str,
        host_if: &str,
        ifname: &str,
        inside: &mut Netlink,
    ) -> Result<(u32, u32), NetError> {
        self.create_pair(netns, bridge, host_if, ifname, None, None, false)?;
        let indexes = inside
            .existing_index(ifname)
            .and_then(|i| Ok((i, self.existing_index(host_if)?)));
        if indexes.is_err() {
            let _ = self.delete_link(host_if);
        }
        indexes
    }

    /// Sends the `RTM_NEWLINK` that creates a veth pair: `host_if` plugged into
    /// `bridge` here (and up if `host_up`), its peer `ifname` moved into the namespace
    /// bound at `netns`, down.
    #[allow(clippy::too_many_arguments)]
    fn create_pair(
        &mut self,
        netns: &Path,
        bridge: &str,
        host_if: &str,
        ifname: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        host_up: bool,
    ) -> Result<(), NetError> {
        let ns = std::fs::File::open(netns).map_err(|source| NetError::Io {
            what: "opening netns",
            path: netns.into(),
            source,
        })?;
        let bridge_index = self.existing_index(bridge)?;
        let mut peer = LinkUnspec::new_with_name(ifname).setns_by_fd(ns.as_raw_fd());
        if let Some(mac) = mac {
            peer = peer.address(mac.to_vec());
        }
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_if)
            .controller(bridge_index);
        if host_up {
            host = host.up();
        }
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            host = host.mtu(mtu);
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!("creating veth {host_if} in bridge {bridge}"),
        )?;
        // No IPv6 on the host end: an interface with IPv6 sends duplicate-address, MLD
        // and router-solicitation multicasts as it comes up, which the bridge floods to
        // every port (networks are IPv4-only). Set before the container end is up:
        // without a carrier yet, no address was made. Best effort (a kernel without
        // IPv6 refuses the setting). The container end keeps IPv6: with it off, the
        // routing mesh lost a task replaced after a node died (tests/overlay.rs), not
        // yet understood; see docs/architecture.md (Networking).
        if let Err(e) = self.set_link(
            LinkUnspec::new_with_name(host_if)
                .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                )]))
                .build(),
            &format!("turning IPv6 addresses off on {host_if}"),
        ) {
            tracing::debug!(error = %e, "IPv6 left on");
        }
        Ok(())
    }

    /// Renames the (down) link `index` to `name` and sets it up, in one request: a
    /// standby's host end becomes its container's.
    pub fn rename_up(&mut self, index: u32, name: &str) -> Result<(), NetError> {
        self.set_link(
            LinkUnspec::new_with_index(index).name(name).up().build(),
            &format!("renaming link {index} to {name}"),
        )
    }

    /// Gives a standby's container end (`index`, in this socket's namespace) its MAC
    /// and address, sets it up and routes through `gateway` if any: what
    /// [`Self::attach_veth`] does inside, for a pair made ahead.
    pub fn configure_standby(
        &mut self,
        index: u32,
        mac: &str,
        addr: Ipv4Addr,
        subnet: Ipv4Net,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetError> {
        let mac = parse_mac(mac)?;
        self.set_link(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
            &format!("setting the address of link {index}"),
        )?;
        self.add_address(index, addr, subnet.prefix_len())?;
        self.set_up(index)?;
        if let Some(gw) = gateway {
            self.replace_route(Ipv4Net::default(), index, Some(gw), None)?;
        }
        Ok(())
    }

    /// Names and up/down state of every link (for checks and tests).
    pub fn links(&mut self) -> Result<Vec<(String, bool)>, NetError> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "listing links",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let up = l.header.flags.contains(LinkFlags::Up);
                    l.attributes.into_iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some((n, up)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }
}

/// Whether a link exists in the agent's namespace.
pub fn link_exists(name: &str) -> bool {
    link_names().iter().any(|n| n == name)
}

/// Links of the calling process's network namespace. Read from /proc/self/net, which
/// follows the namespace the process is in; /sys/class/net shows the namespace of
/// whoever mounted /sys (a host made with `nsenter --net` would see the root's links).
fn link_names() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .map(|s| {
            s.lines()
                .skip(2)
                .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates (or re-uses) a bridge with `gateway/prefix` and brings it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, subnet: &Ipv4Net) -> Result<(), NetError> {
    Netlink::open()?.ensure_bridge(name, gateway, subnet)
}

/// Deletes a link if it exists (deleting one end of a veth deletes both).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        return Ok(());
    }
    Netlink::open()?.delete_link(name)
}

/// The interface index of link `name` in the agent's namespace, if it exists.
pub fn link_index(name: &str) -> Result<Option<u32>, NetError> {
    Netlink::open()?.link_index(name)
}

/// Deletes the link with interface index `index`, if it still exists.
pub fn delete_link_index(index: u32) -> Result<(), NetError> {
    Netlink::open()?.delete_index(index)
}

/// Sets the MTU of link `name` in the agent's namespace.
pub fn set_mtu(name: &str, mtu: u32) -> Result<(), NetError> {
    let mut nl = Netlink::open()?;
    let index = nl.existing_index(name)?;
    nl.set_mtu(index, mtu)
}

/// Sets the MTU of link `name` inside the namespace bound at `netns`.
pub fn set_mtu_in(netns: &Path, name: &str, mtu: u32) -> Result<(), NetError> {
    let mut nl = Netlink::open_in(netns)?;
    let index = nl.existing_index(name)?;
    nl.set_mtu(index, mtu)
}

/// Names of links in the agent's namespace that start with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    link_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Creates a persistent network namespace bound at `path`, with loopback up; returns
/// a socket inside it.
pub fn create_netns(path: &Path) -> Result<Netlink, NetError> {
    let io = |source| NetError::Io {
        what: "creating netns file",
        path: path.into(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    std::fs::File::create(path).map_err(io)?;
    let target = path.to_path_buf();
    // The thread leaves the agent's namespace for a new one and ends with it: the
    // bind mount keeps the namespace, the socket it returns acts inside it.
    let made = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> Result<Netlink, NetError> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| nl_err("unsharing network namespace")(e.into()))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| NetError::Io {
                what: "bind-mounting netns onto",
                path: target.clone(),
                source: e.into(),
            })?;
            Netlink::open()
        })
        .map_err(io)?
        .join()
        .unwrap_or_else(|_| Err(io(std::io::Error::other("namespace thread panicked"))));
    let res = made.and_then(|mut nl| nl.set_up(LOOPBACK_IFINDEX).map(|()| nl));
    if res.is_err() {
        let _ = delete_netns(path);
    }
    res
}

/// Binds the namespace bound at `from` at `to` as well: a standby namespace takes its
/// container's name. The caller removes `from` ([`delete_netns`]) when it likes: an
/// unmount waits for an RCU grace period, which a start need not wait for. On failure
/// `to` is removed.
pub fn bind_netns(from: &Path, to: &Path) -> Result<(), NetError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| NetError::Io { what, path, source }
    };
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(io("creating netns file", to))?;
    }
    std::fs::File::create(to).map_err(io("creating netns file", to))?;
    if let Err(e) = nix::mount::mount(
        Some(from),
        to,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(to);
        return Err(io("bind-mounting netns onto", to)(e.into()));
    }
    Ok(())
}

/// Unmounts and removes a namespace file made by [`create_netns`]; missing is fine.
pub fn delete_netns(path: &Path) -> Result<(), NetError> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetError::Io {
                what: "unmounting netns",
                path: path.into(),
                source: std::io::Error::from(e),
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io {
            what: "removing netns file",
            path: path.into(),
            source,
        }),
    }
}

/// One interface of a container on a bridge.
#[derive(Clone, Debug)]
pub struct VethSpec<'a> {
    pub netns: &'a Path,
    pub bridge: &'a str,
    /// Host-side name (kept below 16 bytes by the caller).
    pub host_if: &'a str,
    /// Name inside the container (`eth0`, `eth1`...).
    pub ifname: &'a str,
    pub addr: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub mac: &'a str,
    /// Installed as the default route (none for internal networks or extra interfaces).
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both ends (an overlay's, lowered for the encapsulation); none: the default.
    pub mtu: Option<u32>,
}

/// Creates a veth pair with one end in the container's namespace, plugged into
/// the bridge, addressed and routed. On failure the pair is removed.
pub fn attach_veth(v: &VethSpec<'_>) -> Result<(), NetError> {
    Netlink::open()?.attach_veth(v)
}

/// Turns on IPv4 forwarding (as Docker does); needed for anything beyond the bridge.
pub fn enable_forwarding() -> Result<(), NetError> {
    let p = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(p)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(|source| NetError::Io {
        what: "enabling",
        path: p.into(),
        source,
    })
}

/// The host's IPv4 route destinations (all tables), so new subnets avoid them.
pub fn host_routes() -> Vec<Ipv4Net> {
    Netlink::open()
        .and_then(|mut nl| nl.routes_v4())
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing host routes");
            vec![]
        })
}

/// Held while a subnet is chosen and its bridge addressed, so agents sharing a host
/// (several `--root`s, parallel tests) never pick the same free subnet at once: the
/// route a bridge address adds is what the next agent's choice avoids.
pub struct HostLock(#[allow(dead_code)] std::fs::File);

/// Takes the host-wide network lock (`/run/lock/skiff-network.lock`), blocking.
pub fn host_lock() -> Result<HostLock, NetError> {
    let path = Path::new("/run/lock/skiff-network.lock");
    let io = |source| NetError::Io {
        what: "locking",
        path: path.into(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own; the lock is released when the file closes.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    Ok(HostLock(f))
}

/// A locally administered MAC derived from the address, like Docker's `02:42:...`.
pub fn mac_for(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_derive() {
        assert_eq!(
            mac_for("172.17.0.2".parse().expect("ip")),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            parse_mac("02:42:ac:11:00:02").expect("mac"),
            [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "zz:42:ac:11:00:02",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn run_cmd_reports_stderr() {
        let e = run_cmd("sh", &["-c", "echo boom >&2; exit 3"], None).expect_err("fails");
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(run_cmd("cat", &[], Some("hi")).expect("cat"), "hi");
    }

    /// Two private namespaces under a temporary directory, removed on drop.
    struct Namespaces {
        dir: tempfile::TempDir,
    }

    impl Namespaces {
        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }
    }

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for n in ["host", "ctr"] {
                let _ = delete_netns(&self.path(n));
            }
        }
    }

    /// `ip -j ARGS` run inside `netns`, parsed.
    fn ip_json(netns: &Path, args: &[&str]) -> serde_json::Value {
        let arg = format!("--net={}", netns.display());
        let mut all = vec![arg.as_str(), "ip", "-j"];
        all.extend_from_slice(args);
        let out = run_cmd("nsenter", &all, None).expect("ip");
        serde_json::from_str(&out).expect("json")
    }

    /// Needs root (namespaces, links); everything it makes lives in two namespaces of
    /// its own, so the host is never touched. `ip` checks the results independently.
    #[test]
    fn wires_a_container_namespace_by_netlink() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = Namespaces {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let (host, ctr) = (ns.path("host"), ns.path("ctr"));
        create_netns(&host).expect("host netns");
        create_netns(&ctr).expect("container netns");
        let lo = ip_json(&ctr, &["link", "show", "lo"]);
        assert!(lo[0]["flags"].to_string().contains("\"UP\""), "{lo}");

        let mut nl = Netlink::open_in(&host).expect("socket");
        let subnet: Ipv4Net = "10.231.0.0/24".parse().expect("net");
        let gw: Ipv4Addr = "10.231.0.1".parse().expect("ip");
        nl.ensure_bridge("skt0", gw, &subnet).expect("bridge");
        nl.ensure_bridge("skt0", gw, &subnet).expect("bridge again");
        let addrs = ip_json(&host, &["-4", "addr", "show", "skt0"]);
        assert_eq!(
            addrs[0]["addr_info"].as_array().map(|a| a.len()),
            Some(1),
            "{addrs}"
        );
        assert_eq!(addrs[0]["addr_info"][0]["local"], "10.231.0.1");

        let v = VethSpec {
            netns: &ctr,
            bridge: "skt0",
            host_if: "sktv1",
            ifname: "eth0",
            addr: "10.231.0.2".parse().expect("ip"),
            subnet,
            mac: "02:42:0a:e7:00:02",
            gateway: Some(gw),
            mtu: Some(1450),
        };
        nl.attach_veth(&v).expect("veth");
        let host_end = ip_json(&host, &["link", "show", "sktv1"]);
        assert_eq!(host_end[0]["master"], "skt0", "{host_end}");
        assert_eq!(host_end[0]["mtu"], 1450, "{host_end}");
        assert!(host_end[0]["flags"].to_string().contains("\"UP\""));
        let eth0 = ip_json(&ctr, &["addr", "show", "eth0"]);
        assert_eq!(eth0[0]["address"], "02:42:0a:e7:00:02", "{eth0}");
        assert_eq!(eth0[0]["mtu"], 1450, "{eth0}");
        assert_eq!(eth0[0]["addr_info"][0]["local"], "10.231.0.2");
        assert_eq!(eth0[0]["addr_info"][0]["prefixlen"], 24);
        assert!(eth0[0]["flags"].to_string().contains("\"UP\""));
        // No IPv6 address on the host end (none of the multicasts an address brings).
        let addrs = ip_json(&host, &["-6", "addr", "show", "dev", "sktv1"]);
        let none = addrs[0]["addr_info"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        assert!(none, "sktv1: {addrs}");
        let routes = ip_json(&ctr, &["-4", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], "10.231.0.1", "{routes}");
        assert_eq!(routes[0]["dev"], "eth0");
        // A second pair with the same name fails and leaves the first alone.
        assert!(nl.attach_veth(&v).is_err());
        assert!(nl.link_index("sktv1").expect("index").is_some());

        // Helpers for overlay devices: MTU, neighbour and fdb entries.
        let idx = nl.link_index("sktv1").expect("index").expect("exists");
        nl.set_mtu(idx, 1450).expect("mtu");
        assert_eq!(ip_json(&host, &["link", "show", "sktv1"])[0]["mtu"], 1450);
        let peer_ip: Ipv4Addr = "10.231.0.9".parse().expect("ip");
        nl.replace_neigh(idx, peer_ip, "02:42:0a:e7:00:09")
            .expect("neigh");
        nl.replace_neigh(idx, peer_ip, "02:42:0a:e7:00:0a")
            .expect("neigh again");
        let neigh = ip_json(&host, &["neigh", "show", "dev", "sktv1"]);
        assert_eq!(neigh[0]["lladdr"], "02:42:0a:e7:00:0a", "{neigh}");
        nl.delete_neigh(idx, peer_ip).expect("neigh del");
        nl.delete_neigh(idx, peer_ip).expect("neigh del twice");
        assert_eq!(
            ip_json(&host, &["neigh", "show", "dev", "sktv1"]),
            serde_json::json!([])
        );
        let vx = rtnetlink::LinkVxlan::new("sktx", 42)
            .port(4789)
            .learning(false)
            .build();
        nl.request(
            RouteNetlinkMessage::NewLink(vx),
            NLM_F_CREATE | NLM_F_EXCL,
            "vxlan",
        )
        .expect("vxlan");
        let vx = nl.link_index("sktx").expect("index").expect("exists");
        let node: Ipv4Addr = "192.0.2.7".parse().expect("ip");
        nl.replace_fdb(vx, "02:42:0a:e7:00:09", node).expect("fdb");
        let fdb: serde_json::Value = serde_json::from_str(
            &run_cmd(
                "nsenter",
                &[
                    &format!("--net={}", host.display()),
                    "bridge",
                    "-j",
                    "fdb",
                    "show",
                    "dev",
                    "sktx",
                ],
                None,
            )
            .expect("bridge"),
        )
        .expect("json");
        assert!(
            fdb.as_array()
                .expect("array")
                .iter()
                .any(|e| e["mac"] == "02:42:0a:e7:00:09" && e["dst"] == "192.0.2.7"),
            "{fdb}"
        );
        nl.delete_fdb(vx, "02:42:0a:e7:00:09", node)
            .expect("fdb del");
        nl.delete_fdb(vx, "02:42:0a:e7:00:09", node)
            .expect("fdb del twice");

        // Routes: the bridge's connected subnet shows; deleting a veth takes both ends.
        assert!(nl.routes_v4().expect("routes").contains(&subnet));
        nl.replace_route("10.232.0.0/16".parse().expect("net"), idx, None, Some(gw))
            .expect("route");
        assert!(nl
            .routes_v4()
            .expect("routes")
            .contains(&"10.232.0.0/16".parse().expect("net")));
        nl.delete_link("sktv1").expect("delete");
        nl.delete_link("sktv1").expect("delete twice");
        assert!(nl.link_index("sktv1").expect("index").is_none());
        let left = Netlink::open_in(&ctr)
            .expect("socket")
            .links()
            .expect("links");
        assert_eq!(left, vec![("lo".to_string(), true)]);
    }
}
