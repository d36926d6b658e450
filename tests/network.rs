//! End-to-end networking tests: real bridges, veths, nftables and namespaces, driven
//! through the real binary as root. Every test checks that nothing of the agent's is
//! left in the kernel afterwards (links, nft table, namespaces).

mod common;

use common::Agent;
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Docker's FORWARD DROP policy is host-wide: the coexistence test runs alone (write
/// lock) and every other test of this file shares the read lock.
static HOST_FIREWALL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    HOST_FIREWALL.read().unwrap_or_else(|p| p.into_inner())
}

/// A network namespace standing in for another host: a veth to the host namespace,
/// 10.250.N.1 on the host side and 10.250.N.2 inside. Removed on drop.
struct OutsideHost {
    name: String,
    host_if: String,
    pub host_ip: String,
}

impl OutsideHost {
    fn new() -> OutsideHost {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) + (std::process::id() % 200);
        let n = n % 250;
        let name = format!("skt-out-{}-{n}", std::process::id());
        let host_if = format!("skto{}x{n}", std::process::id() % 100000);
        let o = OutsideHost {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: format!("10.250.{n}.1"),
        };
        sh(&format!("ip netns add {name}"));
        sh(&format!(
            "ip link add {host_if} type veth peer name eth0 netns {name}"
        ));
        sh(&format!(
            "ip addr add 10.250.{n}.1/30 dev {host_if} && ip link set {host_if} up"
        ));
        sh(&format!(
            "ip -n {name} addr add 10.250.{n}.2/30 dev eth0 && ip -n {name} link set eth0 up && ip -n {name} link set lo up"
        ));
        o
    }

    /// Runs a shell command inside the namespace; returns (success, stdout).
    fn run(&self, cmd: &str) -> (bool, String) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .stderr(Stdio::inherit())
            .output()
            .expect("ip netns exec");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// One A query for `name` over TCP (RFC 7766 framing), built by hand; the raw answer.
fn dns_over_tcp(server: &str, name: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut s = std::net::TcpStream::connect(server).expect("dns tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    s.write_all(&msg).expect("dns tcp write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("dns tcp length");
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).expect("dns tcp answer");
    assert_eq!(&answer[..2], &[0x12, 0x34], "answer to another query");
    answer
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Starts busybox httpd serving "hello from NAME" on port 80.
fn httpd(a: &Agent, extra: &[&str], name: &str) {
    let script = format!(
        "mkdir -p /www && echo hello from {name} > /www/index.html && exec httpd -f -p 80 -h /www"
    );
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    a.cmd(&args);
}

/// Asserts the kernel holds nothing of this agent's after it is gone.
fn assert_clean(root: &std::path::Path) {
    let (table, _) = common::network_names(root);
    let links = common::network_links(root);
    assert!(links.is_empty(), "links left behind: {links:?}");
    let tables = sh("nft list tables");
    assert!(!tables.contains(&table), "nft table {table} left behind");
}

/// Tears down the agent, then checks nothing is left.
fn finish(a: Agent) {
    let root = a.root.clone();
    drop(a);
    assert_clean(&root);
}

/// This agent's links whose names go on from its prefix with `kind` (`v`: containers'
/// veths, `s`: standby sandboxes' host ends).
fn agent_links(a: &Agent, kind: char) -> Vec<String> {
    let (_, prefix) = common::network_names(&a.root);
    common::network_links(&a.root)
        .into_iter()
        .filter(|l| l.starts_with(&format!("{prefix}{kind}")))
        .collect()
}

fn veths(a: &Agent) -> Vec<String> {
    agent_links(a, 'v')
}

/// Host-side veths are deleted in the background after a container stops (the
/// kernel's RCU waits stay out of `rm`); they must be gone shortly after.
fn veths_deleted(a: &Agent) {
    a.wait_until("veths deleted", Duration::from_secs(5), || {
        veths(a).is_empty()
    });
}

/// Entries of the exec root's directory `dir`.
fn exec_root_entries(a: &Agent, dir: &str) -> usize {
    std::fs::read_dir(a.exec_root.join(dir))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn netns_files(a: &Agent) -> usize {
    exec_root_entries(a, "netns")
}

/// A restart reuses the container's link name while the old link may still be
/// being deleted in the background: the old link's deletion must never take the new
/// one with it (a restart once failed with "finding link eth0: No such device").
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn quick_restarts_keep_the_container_wired() {
    let _fw = shared();
    let a = Agent::start().with_busybox();
    a.cmd(&["run", "-d", "--name", "bouncer", "busybox", "sleep", "600"]);
    for i in 0..12 {
        a.cmd(&["restart", "-t", "0", "bouncer"]);
        let addr = a
            .cmd(&["exec", "bouncer", "ip", "-o", "-4", "addr", "show", "eth0"])
            .stdout;
        assert!(addr.contains(" inet "), "restart {i}: eth0 is {addr:?}");
        // The next restart can also come after the old link's deletion has started.
        if i % 3 == 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(a.inspect("bouncer", "{{.State.Status}}"), "running");
    a.cmd(&["rm", "-f", "bouncer"]);
    veths_deleted(&a);
    assert_eq!(netns_files(&a), 0);
    finish(a);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn user_network_names_resolve_and_networks_are_isolated() {
    let _shared = shared();
    let a = Agent::start().with_busybox();
    a.cmd(&["network", "create", "--subnet", "10.123.0.0/24", "front"]);
    a.cmd(&["network", "create", "back"]);
    httpd(
        &a,
        &[
            "--network",
            "front",
            "--network-alias",
            "web",
            "--ip",
            "10.123.0.50",
        ],
        "srv",
    );
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "cli",
        "--network",
        "front",
        "busybox",
        "sleep",
        "300",
    ]);
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "other",
        "--network",
        "back",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(
        a.inspect("srv", "{{.NetworkSettings.Networks.front.IPAddress}}"),
        "10.123.0.50"
    );

    // By name, alias and short ID, with ping and wget.
    a.cmd(&["exec", "cli", "ping", "-c", "1", "-W", "3", "srv"]);
    let id = a.inspect("srv", "{{.Id}}");
    for host in ["srv", "web", &id[..12]] {
        let out = a
            .cmd(&[
                "exec",
                "cli",
                "timeout",
                "5",
                "wget",
                "-qO-",
                &format!("http://{host}/"),
            ])
            .stdout;
        assert_eq!(out.trim(), "hello from srv", "via {host}");
    }
    let resolv = a.cmd(&["exec", "cli", "cat", "/etc/resolv.conf"]).stdout;
    assert!(resolv.contains("nameserver 10.123.0.1"), "{resolv}");
    // The embedded DNS answers over TCP too (for answers too large for a datagram).
    let answer = dns_over_tcp("10.123.0.1:53", "srv");
    assert!(
        answer.windows(4).any(|w| w == [10, 123, 0, 50]),
        "no A record for srv over TCP: {answer:?}"
    );

    // Another network: neither the name nor the address is reachable.
    let r = a.try_cmd(&["exec", "other", "nslookup", "srv"]);
    assert!(
        r.code != 0 || !r.stdout.contains("10.123.0.50"),
        "resolved across networks: {}",
        r.stdout
    );
    let r = a.try_cmd(&[
        "exec",
        "other",
        "timeout",
        "3",
        "wget",
        "-qO-",
        "http://10.123.0.50/",
    ]);
    assert_ne!(
        r.code, 0,
        "reached a container on another network: {}",
        r.stdout
    );

    // network inspect / ls show the attachment and IPAM usage.
    let doc = a.cmd(&["network", "inspect", "front"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&doc).expect("json");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.123.0.0/24");
    assert_eq!(v[0]["Containers"].as_object().map(|m| m.len()), Some(2));
    assert_eq!(v[0]["IPAM"]["Usage"]["Allocated"], 2);
    let ls = a
        .cmd(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])
        .stdout;
    for n in ["bridge bridge", "front bridge", "back bridge"] {
        assert!(ls.lines().any(|l| l == n), "{n} missing from {ls}");
    }

    // A network with active endpoints cannot go; connect/disconnect work live.
    let r = a.try_cmd(&["network", "rm", "front"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("active endpoints"), "{}", r.stderr);
    a.cmd(&["network", "connect", "front", "other"]);
    a.cmd(&[
        "exec",
        "other",
        "timeout",
        "5",
        "wget",
        "-qO-",
        "http://srv/",
    ]);
    a.cmd(&["network", "disconnect", "front", "other"]);
    let r = a.try_cmd(&[
        "exec",
        "other",
        "timeout",
        "3",
        "wget",
        "-qO-",
        "http://10.123.0.50/",
    ]);
    assert_ne!(r.code, 0, "still connected after disconnect");

    // Duplicate static IP is refused; removal frees addresses and links.
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--network",
        "front",
        "--ip",
        "10.123.0.50",
        "busybox",
        "true",
    ]);
    assert_ne!(r.code, 0, "double allocation accepted");
    a.cmd(&["rm", "-f", "srv", "cli", "other"]);
    veths_deleted(&a);
    assert_eq!(netns_files(&a), 0);
    let out = a.cmd(&["network", "prune", "-f"]).stdout;
    assert!(out.contains("front") && out.contains("back"), "{out}");
    finish(a);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn internal_network_has_no_outside_route_and_bridge_does() {
    let _shared = shared();
    let a = Agent::start().with_busybox();
    a.cmd(&["network", "create", "--internal", "sealed"]);
    let routes = a
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "sealed",
            "busybox",
            "ip",
            "route",
        ])
        .stdout;
    assert!(
        !routes.contains("default"),
        "internal network has a default route: {routes}"
    );
    let host_ip =
        sh("ip -4 -o route get 192.0.2.123 2>/dev/null | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'");
    let host_ip = host_ip.trim();
    if !host_ip.is_empty() {
        let r = a.try_cmd(&[
            "run",
            "--rm",
            "--network",
            "sealed",
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            host_ip,
        ]);
        assert_ne!(r.code, 0, "internal network reached {host_ip}");
    }
    // The default network is `bridge`, with a default route and NAT.
    let routes = a.cmd(&["run", "--rm", "busybox", "ip", "route"]).stdout;
    assert!(routes.contains("default via"), "{routes}");
    assert_eq!(
        a.cmd(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "ip",
            "-o",
            "link"
        ])
        .stdout
        .lines()
        .count(),
        1
    );
    assert_eq!(netns_files(&a), 0);
    veths_deleted(&a);
    finish(a);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn published_ports_answer_from_outside_loopback_and_containers() {
    let _shared = shared();
    let a = Agent::start().with_busybox();
    let out = OutsideHost::new();
    httpd(
        &a,
        &["-p", "18080:80", "-p", "127.0.0.1:18081:80", "-p", "80"],
        "web",
    );
    let ports = a.cmd(&["port", "web"]).stdout;
    assert!(ports.contains("80/tcp -> 0.0.0.0:18080"), "{ports}");
    assert!(ports.contains("80/tcp -> 127.0.0.1:18081"), "{ports}");
    let ps = a.cmd(&["ps", "--format", "{{.Ports}}"]).stdout;
    assert!(ps.contains("0.0.0.0:18080->80/tcp"), "{ps}");

    // From another host (namespace), through DNAT.
    let (ok, body) = out.run(&format!(
        "busybox timeout 5 busybox wget -qO- http://{}:18080/",
        out.host_ip
    ));
    assert!(
        ok && body.trim() == "hello from web",
        "outside host got {body:?}"
    );
    // 127.0.0.1-only publish is not reachable from outside.
    let (ok, _) = out.run(&format!(
        "busybox timeout 3 busybox wget -qO- http://{}:18081/",
        out.host_ip
    ));
    assert!(!ok, "loopback-only port answered from outside");
    // From the host itself: loopback and its own address.
    for addr in [
        "127.0.0.1:18080",
        "127.0.0.1:18081",
        &format!("{}:18080", out.host_ip),
    ] {
        let body = http_get(addr);
        assert!(body.contains("hello from web"), "{addr}: {body:?}");
    }
    // The ephemeral port.
    let eph = a.cmd(&["port", "web", "80"]).stdout;
    let eph_port = eph
        .lines()
        .find_map(|l| l.strip_prefix("0.0.0.0:"))
        .expect("ephemeral mapping")
        .trim()
        .to_string();
    assert!(http_get(&format!("127.0.0.1:{eph_port}")).contains("hello from web"));
    // From another container, on the host's address.
    a.cmd(&["network", "create", "elsewhere"]);
    let body = a
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "elsewhere",
            "busybox",
            "timeout",
            "5",
            "wget",
            "-qO-",
            &format!("http://{}:18080/", out.host_ip),
        ])
        .stdout;
    assert_eq!(body.trim(), "hello from web");

    // A port already in use: clear error, exit 125, nothing half-made. (Only web's
    // veth is left once the --rm container's has been deleted in the background.)
    a.wait_until(
        "--rm container's veth deleted",
        Duration::from_secs(5),
        || veths(&a).len() == 1,
    );
    let before = (veths(&a).len(), netns_files(&a));
    let r = a.try_cmd(&[
        "run", "-d", "--name", "dup", "-p", "18080:80", "busybox", "sleep", "60",
    ]);
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(
        r.stderr.contains("port is already allocated"),
        "{}",
        r.stderr
    );
    a.wait_until("failed set-up undone", Duration::from_secs(5), || {
        (veths(&a).len(), netns_files(&a)) == before
    });

    // Agent restart keeps the running container's wiring, and the ports answer again.
    let mut a = a;
    a.restart();
    let (ok, body) = out.run(&format!(
        "busybox timeout 5 busybox wget -qO- http://{}:18080/",
        out.host_ip
    ));
    assert!(
        ok && body.contains("hello from web"),
        "after restart: {body:?}"
    );
    assert!(http_get("127.0.0.1:18080").contains("hello from web"));

    a.cmd(&["rm", "-f", "web", "dup"]);
    veths_deleted(&a);
    let rules = sh(&format!(
        "nft list table inet {}",
        common::network_names(&a.root).0
    ));
    assert!(
        !rules.contains("dnat ip to"),
        "DNAT rules left after rm: {rules}"
    );
    assert!(TcpStream::connect_timeout(
        &"127.0.0.1:18080".parse().expect("addr"),
        Duration::from_secs(1)
    )
    .is_err());
    drop(out);
    finish(a);
}

/// Runs `f` on a thread that has joined the network namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Sends `msg` to `addr` over UDP and returns the reply ("" on timeout).
fn udp_roundtrip(addr: &str, msg: &[u8]) -> String {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.send_to(msg, addr).expect("send");
    let mut buf = [0u8; 256];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn udp_publish_works() {
    let _shared = shared();
    let a = Agent::start().with_busybox();
    let out = OutsideHost::new();
    // busybox has no UDP server: the test serves UDP inside the container's own
    // network namespace (its SandboxKey) while the container sleeps.
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "udp1",
        "-p",
        "15353:5353/udp",
        "-p",
        "127.0.0.1:15354:5353/udp",
        "busybox",
        "sleep",
        "300",
    ]);
    let sandbox = a.inspect("udp1", "{{.NetworkSettings.SandboxKey}}");
    assert!(
        sandbox.starts_with(&a.exec_root.to_string_lossy().to_string()),
        "{sandbox}"
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(&sandbox, move || {
        let s = UdpSocket::bind("0.0.0.0:5353").expect("bind in container");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let mut buf = [0u8; 256];
        for _ in 0..2 {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&[b"echo:", &buf[..n]].concat(), peer);
            }
        }
    });
    ready_rx.recv().expect("server ready");
    let target = format!("{}:15353", out.host_ip);
    let reply = in_netns(&format!("/run/netns/{}", out.name), move || {
        udp_roundtrip(&target, b"outside")
    })
    .join()
    .expect("join");
    assert_eq!(reply, "echo:outside", "UDP via DNAT from another host");
    assert_eq!(
        udp_roundtrip("127.0.0.1:15354", b"loop"),
        "echo:loop",
        "UDP via the loopback proxy"
    );
    server.join().expect("server");
    drop(out);
    finish(a);
}

/// A tiny DNS responder: answers every A query with `answer`.
fn fake_dns(addr: &str, answer: Ipv4Addr) -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(addr).expect("bind fake dns");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // Header: same ID, response + RD + RA, 1 question, 1 answer.
            let mut r = buf[..n].to_vec();
            r[2] = 0x81;
            r[3] = 0x80;
            r[6] = 0;
            r[7] = 1;
            r[8..12].copy_from_slice(&[0, 0, 0, 0]);
            // Question ends after the name (zero byte) plus type and class.
            let Some(end) = buf[12..n].iter().position(|b| *b == 0).map(|p| 12 + p + 5) else {
                continue;
            };
            let qtype = u16::from_be_bytes([buf[end - 4], buf[end - 3]]);
            r.truncate(end);
            if qtype == 1 {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&answer.octets());
            } else {
                r[7] = 0;
            }
            let _ = sock.send_to(&r, peer);
        }
    })
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn dns_forwards_unknown_names_to_configured_upstreams() {
    let _shared = shared();
    let mut a = Agent::start().with_busybox();
    // Upstreams on loopback: reachable by the embedded DNS, which runs on the host.
    let _agent_upstream = fake_dns("127.0.0.153:53", "192.0.2.77".parse().expect("ip"));
    let _own_upstream = fake_dns("127.0.0.154:53", "192.0.2.88".parse().expect("ip"));
    a.restart_with_config("dns: [127.0.0.153]\ndns_search: [corp.test]\n");
    a.cmd(&["network", "create", "n"]);
    let out = a
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "n",
            "busybox",
            "nslookup",
            "outside.example.",
        ])
        .stdout;
    assert!(
        out.contains("192.0.2.77"),
        "agent-level upstream not used: {out}"
    );
    let out = a
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "n",
            "--dns",
            "127.0.0.154",
            "busybox",
            "nslookup",
            "outside.example.",
        ])
        .stdout;
    assert!(out.contains("192.0.2.88"), "--dns upstream not used: {out}");
    // resolv.conf shows the configuration.
    let rc = a
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "n",
            "--dns-search",
            "a.test",
            "--dns-option",
            "ndots:3",
            "busybox",
            "cat",
            "/etc/resolv.conf",
        ])
        .stdout;
    assert!(
        rc.contains("search a.test") && rc.contains("options ndots:3"),
        "{rc}"
    );
    let rc = a
        .cmd(&["run", "--rm", "busybox", "cat", "/etc/resolv.conf"])
        .stdout;
    assert!(rc.contains("search corp.test"), "{rc}");
    let rc = a
        .cmd(&[
            "run",
            "--rm",
            "--dns",
            "192.0.2.53",
            "busybox",
            "cat",
            "/etc/resolv.conf",
        ])
        .stdout;
    assert!(rc.contains("nameserver 192.0.2.53"), "{rc}");
    let hosts = a
        .cmd(&[
            "run",
            "--rm",
            "--add-host",
            "db.local:10.1.2.3",
            "busybox",
            "cat",
            "/etc/hosts",
        ])
        .stdout;
    assert!(hosts.contains("10.1.2.3\tdb.local"), "{hosts}");
    finish(a);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn reconcile_removes_wiring_of_containers_gone_while_agent_was_down() {
    let _shared = shared();
    let mut a = Agent::start().with_busybox();
    a.cmd(&[
        "run", "-d", "--name", "ku", "-p", "18090:80", "busybox", "sleep", "300",
    ]);
    assert_eq!(veths(&a).len(), 1);
    let pid = a.inspect("ku", "{{.State.Pid}}");
    a.kill9();
    // The container (and its shim) die while the agent is away.
    let _ = Command::new("kill").args(["-9", &pid]).status();
    let shims = sh(&format!(
        "pgrep -f 'shim --task {}' || true",
        a.exec_root.display()
    ));
    for p in shims.split_whitespace() {
        let _ = Command::new("kill").args(["-9", p]).status();
    }
    std::thread::sleep(Duration::from_millis(500));
    a.restart();
    a.wait_until("stale veth removed", Duration::from_secs(10), || {
        veths(&a).is_empty()
    });
    assert_eq!(netns_files(&a), 0);
    let rules = sh(&format!(
        "nft list table inet {}",
        common::network_names(&a.root).0
    ));
    assert!(!rules.contains("dport 18090"), "stale DNAT kept: {rules}");
    finish(a);
}

/// A plain HTTP GET from the host; returns the whole response.
fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) =
        TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(5))
    else {
        return String::from("connect failed");
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A Docker daemon (Debian's docker.io) with its own state, for the coexistence test.
/// Drop stops it and removes the iptables tables it made if they did not exist before.
struct Dockerd {
    child: std::process::Child,
    dir: tempfile::TempDir,
    tables_before: String,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if Command::new("dockerd").arg("--version").output().is_err() {
            return None;
        }
        let tables_before = sh("nft list tables");
        let dir = tempfile::Builder::new()
            .prefix("skd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let p = dir.path();
        let log = std::fs::File::create(p.join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p.join("docker.sock").display()))
            .args([
                "--bridge",
                "none",
                "--containerd-namespace",
                "skiff-test",
                "--iptables=true",
            ])
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let d = Dockerd {
            child,
            dir,
            tables_before,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if sh("iptables -S FORWARD 2>/dev/null || true").contains("DOCKER-USER") {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "dockerd did not set up iptables; log:\n{}",
            std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("iptables")
            .args(["-P", "FORWARD", "ACCEPT"])
            .status();
        for t in ["filter", "nat"] {
            if !self.tables_before.contains(&format!("table ip {t}\n")) {
                let _ = Command::new("nft")
                    .args(["delete", "table", "ip", t])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        common::unmount_below(self.dir.path());
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn coexists_with_docker_forward_drop_and_firewall_reloads() {
    let _alone = HOST_FIREWALL.write().unwrap_or_else(|p| p.into_inner());
    let a = Agent::start().with_busybox();
    let Some(_docker) = Dockerd::start() else {
        eprintln!("dockerd is not installed (apt-get install docker.io): coexistence not tested");
        return;
    };
    // Docker sets the policy to DROP when it turns forwarding on itself; make sure it is.
    sh("iptables -P FORWARD DROP");
    assert!(sh("iptables -S FORWARD").contains("-P FORWARD DROP"));
    let out = OutsideHost::new();
    a.cmd(&["network", "create", "co"]);
    httpd(&a, &["--network", "co", "-p", "18085:80"], "cweb");
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "ccli",
        "--network",
        "co",
        "busybox",
        "sleep",
        "300",
    ]);
    let check = |what: &str| {
        let body = a
            .cmd(&[
                "exec",
                "ccli",
                "timeout",
                "5",
                "wget",
                "-qO-",
                "http://cweb/",
            ])
            .stdout;
        assert_eq!(
            body.trim(),
            "hello from cweb",
            "{what}: container to container"
        );
        let (ok, body) = out.run(&format!(
            "busybox timeout 5 busybox wget -qO- http://{}:18085/",
            out.host_ip
        ));
        assert!(
            ok && body.contains("hello from cweb"),
            "{what}: published port from outside: {body:?}"
        );
        // Outbound (masqueraded, forwarded to another interface). The outside address
        // is the host side's with the last octet 2 (the /30's other end).
        let peer = match out.host_ip.rsplit_once('.') {
            Some((net, _)) => format!("{net}.2"),
            None => out.host_ip.clone(),
        };
        a.wait_until(
            &format!("{what}: ping {peer} from a container"),
            Duration::from_secs(15),
            || {
                a.try_cmd(&["exec", "ccli", "ping", "-c", "1", "-W", "2", &peer])
                    .code
                    == 0
            },
        );
    };
    check("with Docker's FORWARD DROP");
    // A firewall reload that drops our table and our FORWARD rules: restored within 10s.
    let (table, _) = common::network_names(&a.root);
    sh(&format!("nft delete table inet {table}"));
    common::cleanup_forward_rules(&table);
    a.wait_until("firewall restored", Duration::from_secs(20), || {
        sh("nft list tables").contains(&table)
            && sh("iptables -S FORWARD").contains(&format!("skiff:{table}"))
    });
    check("after a firewall reload");
    drop(out);
    finish(a);
}

/// Host ends of standby sandboxes (veth pairs made ahead of starts).
fn standby_links(a: &Agent) -> Vec<String> {
    agent_links(a, 's')
}

fn standby_namespaces(a: &Agent) -> usize {
    exec_root_entries(a, "netns-standby")
}

/// Namespaces and veth pairs made ahead of starts (node-agent/src/network/standby.rs):
/// each start takes its own, its container is wired exactly as one wired on the spot
/// (its namespace and link names, address, route, reachability, `--ip`), and `network
/// rm` and the agent's stop leave nothing of them behind.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn standby_sandboxes_are_taken_once_and_leave_nothing_behind() {
    let _shared = shared();
    let mut a = Agent::start().with_busybox();
    // The default bridge's are made at agent start.
    a.wait_until("default bridge standbys", Duration::from_secs(10), || {
        standby_links(&a).len() == 2 && standby_namespaces(&a) == 2
    });
    let before = standby_links(&a);
    a.cmd(&["run", "-d", "--name", "s1", "busybox", "sleep", "600"]);
    a.cmd(&["run", "-d", "--name", "s2", "busybox", "sleep", "600"]);
    // Both waiting pairs were taken (and renamed); new ones took their place.
    a.wait_until("standbys refilled", Duration::from_secs(10), || {
        let now = standby_links(&a);
        now.len() == 2 && now.iter().all(|l| !before.contains(l))
    });
    assert_eq!(veths(&a).len(), 2, "containers' links: {:?}", veths(&a));
    let keys: Vec<String> = ["s1", "s2"]
        .iter()
        .map(|n| a.inspect(n, "{{.NetworkSettings.SandboxKey}}"))
        .collect();
    assert_ne!(keys[0], keys[1]);
    for k in &keys {
        assert!(
            k.starts_with(&a.exec_root.join("netns").display().to_string()),
            "{k}"
        );
    }
    assert_eq!(netns_files(&a), 2);
    let ip2 = a.inspect("s2", "{{.NetworkSettings.IPAddress}}");
    let mac1 = a.inspect("s1", "{{.NetworkSettings.MacAddress}}");
    let link = a
        .cmd(&["exec", "s1", "ip", "-o", "link", "show", "eth0"])
        .stdout;
    assert!(link.contains(&mac1) && link.contains("UP"), "{link}");
    let route = a.cmd(&["exec", "s1", "ip", "route"]).stdout;
    assert!(route.contains("default via"), "{route}");
    a.cmd(&["exec", "s1", "ping", "-c", "1", "-W", "5", &ip2]);

    // A user network: its first start fills its pool; a fixed address still works.
    a.cmd(&["network", "create", "--subnet", "10.126.0.0/24", "pooled"]);
    a.cmd(&[
        "run",
        "-d",
        "--network",
        "pooled",
        "--name",
        "p1",
        "busybox",
        "sleep",
        "600",
    ]);
    a.wait_until("user network standbys", Duration::from_secs(10), || {
        standby_links(&a).len() == 4
    });
    a.cmd(&[
        "run",
        "-d",
        "--network",
        "pooled",
        "--ip",
        "10.126.0.3",
        "--name",
        "p2",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(
        a.inspect("p2", "{{.NetworkSettings.Networks.pooled.IPAddress}}"),
        "10.126.0.3"
    );
    a.cmd(&["exec", "p2", "ping", "-c", "1", "-W", "5", "10.126.0.2"]);
    for n in ["s1", "s2", "p1", "p2"] {
        a.cmd(&["rm", "-f", n]);
    }
    veths_deleted(&a);
    assert_eq!(netns_files(&a), 0);
    // Removing the network removes its standbys.
    a.wait_until(
        "user network standbys refilled",
        Duration::from_secs(10),
        || standby_links(&a).len() == 4,
    );
    a.cmd(&["network", "rm", "pooled"]);
    a.wait_until(
        "network's standbys removed",
        Duration::from_secs(10),
        || standby_links(&a).len() == 2 && standby_namespaces(&a) == 2,
    );
    // The agent's stop removes the rest.
    a.terminate();
    assert!(standby_links(&a).is_empty(), "{:?}", standby_links(&a));
    assert_eq!(standby_namespaces(&a), 0);
    finish(a);
}
