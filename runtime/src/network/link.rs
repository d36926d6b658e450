//! Network namespaces, bridges and veth pairs, made with iproute2 and util-linux.
//!
//! Why external commands: a persistent network namespace must be created by a
//! process that unshares and bind-mounts it, and the agent is multi-threaded and
//! never forks without exec. `unshare --net=FILE` does exactly that in a fresh
//! process; `ip link add ... peer name eth0 netns FILE` creates the container end
//! directly inside the namespace; `nsenter --net=FILE ip -batch -` configures it.

use super::NetError;
use ipnet::Ipv4Net;
use std::io::Write;
use std::net::Ipv4Addr;
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

fn ip(args: &[&str]) -> Result<String, NetError> {
    run_cmd("ip", args, None)
}

/// Whether a link exists in the agent's namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Creates (or re-uses) a bridge with `gateway/prefix` and brings it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, subnet: &Ipv4Net) -> Result<(), NetError> {
    if !link_exists(name) {
        ip(&["link", "add", name, "type", "bridge"])?;
    }
    let addr = format!("{gateway}/{}", subnet.prefix_len());
    let shown = ip(&["-4", "-o", "addr", "show", "dev", name])?;
    if !shown.contains(&format!(" {addr} ")) {
        ip(&["addr", "add", &addr, "dev", name])?;
    }
    ip(&["link", "set", name, "up"])?;
    Ok(())
}

/// Deletes a link if it exists (deleting one end of a veth deletes both).
pub fn delete_link(name: &str) -> Result<(), NetError> {
    if link_exists(name) {
        ip(&["link", "del", name])?;
    }
    Ok(())
}

/// Names of links in the agent's namespace that start with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a persistent network namespace bound at `path`, with loopback up.
pub fn create_netns(path: &Path) -> Result<(), NetError> {
    let io = |source| NetError::Io {
        what: "creating netns file",
        path: path.into(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    std::fs::File::create(path).map_err(io)?;
    let arg = format!("--net={}", path.display());
    if let Err(e) = run_cmd("unshare", &[&arg, "ip", "link", "set", "lo", "up"], None) {
        let _ = delete_netns(path);
        return Err(e);
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
}

/// The `ip -batch` script run inside the container's namespace for `v`.
pub fn inside_script(v: &VethSpec<'_>) -> String {
    let mut s = format!(
        "addr add {}/{} dev {}\nlink set {} up\n",
        v.addr,
        v.subnet.prefix_len(),
        v.ifname,
        v.ifname
    );
    if let Some(gw) = v.gateway {
        s.push_str(&format!(
            "route replace default via {gw} dev {}\n",
            v.ifname
        ));
    }
    s
}

/// Creates a veth pair with one end in the container's namespace, plugged into
/// the bridge, addressed and routed. On failure the pair is removed.
pub fn attach_veth(v: &VethSpec<'_>) -> Result<(), NetError> {
    let netns = v.netns.to_string_lossy();
    ip(&[
        "link", "add", v.host_if, "type", "veth", "peer", "name", v.ifname, "address", v.mac,
        "netns", &netns,
    ])?;
    let res = (|| {
        ip(&["link", "set", v.host_if, "master", v.bridge, "up"])?;
        let arg = format!("--net={netns}");
        run_cmd(
            "nsenter",
            &[&arg, "ip", "-batch", "-"],
            Some(&inside_script(v)),
        )?;
        Ok(())
    })();
    if res.is_err() {
        let _ = delete_link(v.host_if);
    }
    res
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
    ip(&["-4", "-j", "route", "show", "table", "all"])
        .map(|j| super::ipam::parse_routes_json(&j))
        .unwrap_or_default()
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
    fn inside_script_routes_only_with_gateway() {
        let v = VethSpec {
            netns: Path::new("/run/x"),
            bridge: "br",
            host_if: "veth",
            ifname: "eth0",
            addr: "10.1.0.2".parse().expect("ip"),
            subnet: "10.1.0.0/24".parse().expect("net"),
            mac: "02:42:0a:01:00:02",
            gateway: Some("10.1.0.1".parse().expect("ip")),
        };
        let s = inside_script(&v);
        assert!(s.contains("addr add 10.1.0.2/24 dev eth0\n"));
        assert!(s.contains("route replace default via 10.1.0.1 dev eth0\n"));
        assert!(!inside_script(&VethSpec { gateway: None, ..v }).contains("route"));
        assert_eq!(
            mac_for("172.17.0.2".parse().expect("ip")),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn run_cmd_reports_stderr() {
        let e = run_cmd("sh", &["-c", "echo boom >&2; exit 3"], None).expect_err("fails");
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(run_cmd("cat", &[], Some("hi")).expect("cat"), "hi");
    }
}
