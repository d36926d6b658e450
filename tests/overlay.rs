//! Overlay networks across hosts made of network namespaces: the routing mesh answers
//! on every node (with or without a local task) and survives a node's death, services
//! reach each other by name through virtual IPs across hosts, two overlays are
//! isolated, and `stack rm` leaves no VXLAN device, bridge or rule behind.

mod common;
#[path = "common/netns.rs"]
mod netns;
use netns::NetnsCluster;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const STACK: &str = r#"services:
  web:
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -v -p 80 -h /www"]
    stop_grace_period: 1s
    networks: [front]
    ports: ["8080:80"]
    deploy:
      replicas: 3
      placement:
        constraints: [node.role == worker]
  client:
    image: busybox:latest
    command: [sleep, "1000"]
    stop_grace_period: 1s
    networks: [front]
  api:
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && echo api > /www/index.html && exec httpd -f -p 8080 -h /www"]
    stop_grace_period: 1s
    networks: [front]
  rr:
    image: busybox:latest
    command: [sleep, "1000"]
    stop_grace_period: 1s
    networks: [front]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
  outsider:
    image: busybox:latest
    command: [sleep, "1000"]
    stop_grace_period: 1s
    networks: [back]
networks:
  front: {}
  back: {}
"#;

/// One HTTP GET from the test's own namespace; the body (a replica's hostname).
fn get(addr: &str, port: u16) -> Option<String> {
    let sa: std::net::SocketAddr = format!("{addr}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, rest) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| rest.trim().to_string())
}

/// Distinct replicas answering on `addr` over `n` connections (None: a request failed).
fn replicas_behind(addr: &str, n: usize) -> Option<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(get(addr, 8080)?);
    }
    Some(seen)
}

/// The container of a service's task on whichever host runs it.
fn task_container(c: &NetnsCluster, service: &str) -> (String, String) {
    for (host, _, _) in &c.hosts {
        let out = Command::new(common::bin())
            .args(["--host", &c.sock(host), "ps", "-q", "--filter"])
            .arg(format!("label=com.docker.swarm.service.name={service}"))
            .output()
            .expect("ps");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !id.is_empty() {
            return (
                host.clone(),
                id.lines().next().unwrap_or_default().to_string(),
            );
        }
    }
    panic!("no running container of {service}");
}

/// Runs a command in a task's container; (success, stdout + stderr).
fn exec(c: &NetnsCluster, host: &str, id: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new(common::bin())
        .args(["--host", &c.sock(host), "exec", id])
        .args(cmd)
        .output()
        .expect("exec");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn overlay_mesh_names_isolation_and_cleanup_across_hosts() {
    let c = NetnsCluster::up(3);
    c.deploy("app", STACK);
    // The manager runs no web replica: its answers come through the mesh alone.
    let hosts = ["manager1", "worker1", "worker2", "worker3"];
    let web = c.placement("app");
    assert_eq!(web.values().sum::<usize>(), 8, "{web:?}");

    // The routing mesh: every node answers and spreads over all three replicas, most
    // of them on other nodes.
    for h in hosts {
        let addr = c.addr(h);
        c.wait(
            "all replicas behind a node",
            Duration::from_secs(20),
            || replicas_behind(&addr, 12).is_some_and(|s| s.len() == 3),
        );
    }

    // By name across hosts: `web` is one virtual IP, `tasks.web` the three tasks, and
    // connections to the VIP reach more than one replica.
    let (ch, cid) = task_container(&c, "app_client");
    let (ok, out) = exec(&c, &ch, &cid, &["nslookup", "tasks.web"]);
    assert!(ok, "{out}");
    let task_ips = out.matches("Address").count().saturating_sub(1);
    assert_eq!(task_ips, 3, "tasks.web: {out}");
    let (ok, out) = exec(&c, &ch, &cid, &["nslookup", "web"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("Address").count().saturating_sub(1),
        1,
        "web: {out}"
    );
    // dnsrr: the name gives the task addresses themselves.
    let (ok, out) = exec(&c, &ch, &cid, &["nslookup", "rr"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("Address").count().saturating_sub(1),
        2,
        "rr: {out}"
    );
    // A client reaching a replica on the node it connected to keeps its address.
    let (wh, wid) = task_container(&c, "app_web");
    let host_side = c
        .addr(&wh)
        .rsplit_once('.')
        .map(|(n, _)| format!("{n}.1"))
        .expect("addr");
    c.wait(
        "client address seen by a local replica",
        Duration::from_secs(20),
        || {
            let _ = replicas_behind(&c.addr(&wh), 6);
            // httpd -v logs each client to stderr.
            let out = Command::new(common::bin())
                .args(["--host", &c.sock(&wh), "logs", &wid])
                .output()
                .expect("logs");
            String::from_utf8_lossy(&out.stderr).contains(&format!("{host_side}]"))
        },
    );
    let mut via_vip = BTreeSet::new();
    for _ in 0..9 {
        let (ok, body) = exec(
            &c,
            &ch,
            &cid,
            &["timeout", "5", "wget", "-qO-", "http://web/"],
        );
        assert!(ok, "wget web from {ch}: {body}");
        via_vip.insert(body.trim().to_string());
    }
    assert!(via_vip.len() >= 2, "VIP spreads connections: {via_vip:?}");
    // A VIP is a local address of every node's overlay bridge, yet web's published
    // port 8080 must not capture traffic to api's VIP on port 8080.
    c.wait("api behind its VIP", Duration::from_secs(20), || {
        exec(
            &c,
            &ch,
            &cid,
            &["timeout", "5", "wget", "-qO-", "http://api:8080/"],
        )
        .1
        .trim()
            == "api"
    });
    for _ in 0..4 {
        let (ok, body) = exec(
            &c,
            &ch,
            &cid,
            &["timeout", "5", "wget", "-qO-", "http://api:8080/"],
        );
        assert!(ok && body.trim() == "api", "api:8080 from {ch}: {body}");
    }

    // Isolation: a container on another overlay neither resolves nor reaches web.
    let (oh, oid) = task_container(&c, "app_outsider");
    let (ok, out) = exec(&c, &oh, &oid, &["nslookup", "web"]);
    assert!(
        !ok || !out.contains("Name:"),
        "web resolved from back: {out}"
    );
    let target = out_first_task_ip(&c, &ch, &cid);
    let (ok, out) = exec(
        &c,
        &oh,
        &oid,
        // (busybox's own `wget -T` crashes in this build; `timeout` bounds it instead)
        &["timeout", "3", "wget", "-qO-", &format!("http://{target}/")],
    );
    assert!(!ok, "back reached a front task at {target}: {out}");

    // Attachable overlays take standalone containers on any node, with addresses from
    // the controller and names that resolve across hosts; stack networks do not.
    c.on(
        "manager1",
        &["network", "create", "-d", "overlay", "--attachable", "ovl"],
    );
    c.on(
        "worker1",
        &[
            "run",
            "-d",
            "--name",
            "solo",
            "--network",
            "ovl",
            "busybox:latest",
            "sh",
            "-c",
            "mkdir -p /www && echo solo > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let out = Command::new(common::bin())
        .args([
            "--host",
            &c.sock("worker2"),
            "run",
            "--rm",
            "--network",
            "ovl",
        ])
        .args([
            "busybox:latest",
            "timeout",
            "5",
            "wget",
            "-qO-",
            "http://solo/",
        ])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "solo",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(common::bin())
        .args([
            "--host",
            &c.sock("worker2"),
            "run",
            "--rm",
            "--network",
            "app_front",
        ])
        .args(["busybox:latest", "true"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not manually attachable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(common::bin())
        .args(["--host", &c.sock("manager1"), "network", "rm", "app_front"])
        .output()
        .expect("network rm");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("in use by service"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.on("worker1", &["rm", "-f", "solo"]);
    c.on("manager1", &["network", "rm", "ovl"]);

    // A node dies: once its tasks are replaced (all 8 running again), the other nodes
    // still answer.
    let pid = std::fs::read_to_string(c.dir.join("worker3/agent.pid")).expect("pid");
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    c.wait(
        "tasks replaced off the dead node",
        Duration::from_secs(40),
        || {
            let p = c.placement("app");
            !p.contains_key("worker3") && p.values().sum::<usize>() == 8
        },
    );
    for h in ["manager1", "worker1", "worker2"] {
        let addr = c.addr(h);
        c.wait(
            "mesh answers after failover",
            Duration::from_secs(20),
            || replicas_behind(&addr, 9).is_some_and(|s| s.len() == 3),
        );
    }

    // stack rm: nothing of the overlays is left on the live nodes.
    c.on("manager1", &["stack", "rm", "app"]);
    for h in ["manager1", "worker1", "worker2"] {
        c.wait("overlay removed", Duration::from_secs(30), || {
            let (_, links) = c.in_host(h, &["ip", "-d", "-o", "link", "show", "type", "vxlan"]);
            let (_, rules) = c.in_host(h, &["nft", "list", "ruleset"]);
            links.trim().is_empty()
                && !rules.contains("dport 8080")
                && !rules.contains("snat ip to")
        });
    }
}

/// One task address of `web` as the client container resolves it.
fn out_first_task_ip(c: &NetnsCluster, host: &str, id: &str) -> String {
    let (_, out) = exec(c, host, id, &["nslookup", "tasks.web"]);
    out.lines()
        .filter(|l| l.starts_with("Address"))
        .filter_map(|l| l.split_whitespace().next_back())
        .rfind(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .expect("a task address")
        .to_string()
}

const PAIR: &str = r#"services:
  a:
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_grace_period: 1s
    networks: [front]
    deploy:
      placement:
        constraints: [node.hostname == worker1]
  b:
    image: busybox:latest
    command: [sleep, "1000"]
    stop_grace_period: 1s
    networks: [front]
    deploy:
      placement:
        constraints: [node.hostname == worker2]
networks:
  front: {}
"#;

/// Restarts `host`'s agent on its existing state (deploy/netns-cluster start).
fn restart_agent(c: &NetnsCluster, host: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/netns-cluster");
    let out = Command::new(script)
        .args(["start", host, "--dir"])
        .arg(&c.dir)
        .arg("--bin")
        .arg(common::bin())
        .output()
        .expect("netns-cluster start");
    assert!(
        out.status.success(),
        "restarting {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kill -9 of `host`'s agent; returns once the process is gone.
fn kill_agent(c: &NetnsCluster, host: &str) {
    let pid = std::fs::read_to_string(c.dir.join(format!("{host}/agent.pid"))).expect("pid");
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    c.wait("agent gone", Duration::from_secs(10), || !proc.exists());
}

fn vxlan_links(c: &NetnsCluster, host: &str) -> String {
    c.in_host(host, &["ip", "-o", "link", "show", "type", "vxlan"])
        .1
}

/// Overlay state is reconciled when an agent starts: a VXLAN device lost while the agent
/// was down is rebuilt (with its forwarding entries) for the containers that kept
/// running, and the overlay of a stack removed meanwhile is taken down.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn overlay_state_is_reconciled_at_agent_start() {
    let c = NetnsCluster::up(2);
    c.deploy("pair", PAIR);
    let (bh, bid) = task_container(&c, "pair_b");
    assert_eq!(bh, "worker2");
    let reaches_a = || {
        let (ok, body) = exec(
            &c,
            &bh,
            &bid,
            &["timeout", "3", "wget", "-q", "-O-", "http://a/"],
        );
        ok && !body.trim().is_empty()
    };
    c.wait(
        "b reaches a across hosts",
        Duration::from_secs(20),
        reaches_a,
    );

    // worker1's agent dies and its VXLAN device goes with it (as after a crash that
    // took the device, or an operator's mistake); a's container keeps running.
    kill_agent(&c, "worker1");
    let dev = vxlan_links(&c, "worker1");
    let name = dev
        .split(':')
        .nth(1)
        .map(|s| s.trim().split('@').next().unwrap_or_default().to_string())
        .expect("a vxlan device on worker1");
    let (ok, out) = c.in_host("worker1", &["ip", "link", "del", &name]);
    assert!(ok, "{out}");
    assert!(!reaches_a(), "traffic crossed without a VXLAN device");
    restart_agent(&c, "worker1");
    c.wait(
        "VXLAN device rebuilt and b reaches a again",
        Duration::from_secs(30),
        || vxlan_links(&c, "worker1").contains(&name) && reaches_a(),
    );

    // worker2's agent is down while the stack is removed: at its next start the
    // overlay (device, bridge, rules) and the container go.
    kill_agent(&c, "worker2");
    c.on("manager1", &["stack", "rm", "pair"]);
    c.wait("worker1 cleaned", Duration::from_secs(30), || {
        vxlan_links(&c, "worker1").trim().is_empty()
    });
    assert!(!vxlan_links(&c, "worker2").trim().is_empty());
    restart_agent(&c, "worker2");
    c.wait(
        "worker2's overlay and container removed after its restart",
        Duration::from_secs(40),
        || {
            vxlan_links(&c, "worker2").trim().is_empty()
                && c.on("worker2", &["ps", "-aq"]).trim().is_empty()
        },
    );
}

const MESH: &str = r#"services:
  web:
    image: busybox:latest
    command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_grace_period: 1s
    ports: ["8080:80"]
    deploy:
      replicas: 2
      placement:
        constraints: [node.role == worker]
"#;

/// A worker's agent restarted while no manager answers (so no assignment set can come)
/// keeps serving: its containers keep running, because the executor acts on no view
/// before the first set, and the routing mesh keeps answering on its address, because
/// the service ports it was told to serve are restored when the agent starts.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_worker_restarted_without_a_manager_keeps_its_containers_and_mesh() {
    let c = NetnsCluster::up(2);
    c.deploy("solo", MESH);
    let addr = c.addr("worker1");
    c.wait(
        "the mesh answers on worker1",
        Duration::from_secs(30),
        || get(&addr, 8080).is_some(),
    );
    let before = c.on("worker1", &["ps", "-q"]);
    assert!(!before.trim().is_empty(), "worker1 runs a replica");

    kill_agent(&c, "manager1");
    kill_agent(&c, "worker1");
    restart_agent(&c, "worker1");
    // Several executor passes (one each 500 ms) and a data-plane sync would have run.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.on("worker1", &["ps", "-q"]),
        before,
        "containers kept with no view"
    );
    for _ in 0..5 {
        assert!(
            get(&addr, 8080).is_some(),
            "the mesh answers on the restarted worker"
        );
    }
    restart_agent(&c, "manager1");
}
