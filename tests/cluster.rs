//! End-to-end cluster tests: real `skiff agent` processes on loopback ports, each with
//! its own --root. Joining with tokens, leader failover, node status, restarts, removal.

mod common;
#[path = "common/cluster.rs"]
mod harness;

use harness::{wait_until, Member};
use std::time::{Duration, Instant};

/// TCP sockets in LISTEN state owned by `pid`.
fn listening_sockets(pid: u32) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(e.path()) {
            if let Some(i) = l
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(i.to_string());
            }
        }
    }
    let mut n = 0;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                n += 1;
            }
        }
    }
    n
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn private_agent_is_a_one_manager_cluster_without_a_tcp_port() {
    common::require_root();
    let m = Member::start(false, None);
    let ls = m.cmd(&["node", "ls"]);
    assert!(
        ls.contains("Leader") && ls.contains("Ready") && ls.contains(" *"),
        "{ls}"
    );
    assert!(m
        .cmd(&["cluster", "info"])
        .contains("none (private cluster)"));
    assert_eq!(
        listening_sockets(m.pid().expect("pid")),
        0,
        "an agent without --listen-addr must open no TCP port"
    );
    let t = m.cmd(&["cluster", "join-token", "-q", "worker"]);
    assert!(t.trim().starts_with("SWMTKN-1-"), "{t}");
    // Rotation replaces the token.
    let rotated = m.cmd(&["cluster", "join-token", "--rotate", "-q", "worker"]);
    assert_ne!(rotated.trim(), t.trim());
    // State survives a restart of the lone manager.
    let mut m = m;
    m.cmd(&["node", "update", "--label-add", "zone=a", "self"]);
    m.restart();
    assert!(m
        .cmd(&["node", "inspect", "self"])
        .contains("\"zone\": \"a\""));
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn three_managers_failover_restart_and_worker_lifecycle() {
    common::require_root();
    let m1 = Member::start(true, None);
    let port1 = m1.port.expect("port");
    let mtoken = m1
        .cmd(&["cluster", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let wtoken = m1
        .cmd(&["cluster", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let mut ms = [
        m1,
        Member::start(true, Some((port1, mtoken.clone()))),
        Member::start(true, Some((port1, mtoken.clone()))),
    ];
    let mtoken_copy = mtoken;
    let ls = ms[2].cmd(&["node", "ls"]);
    assert_eq!(
        ls.matches("Reachable").count() + ls.matches("Leader").count(),
        3,
        "{ls}"
    );
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");

    // A worker joins without a cluster port of its own.
    let mut w = Member::start(false, Some((port1, wtoken.clone())));
    let wid = w.node_id();
    assert!(ms[1].cmd(&["node", "ls"]).contains(&wid));
    let out = w.try_cmd(&["node", "ls"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not a swarm manager"), "{}", out.stderr);
    // Join tokens are secrets: no agent logs one (neither the worker's nor a manager's,
    // whole or its secret part).
    for (who, log) in [
        ("worker", w.log()),
        ("manager", ms[0].log()),
        ("manager", ms[1].log()),
    ] {
        for t in [&wtoken, &mtoken_copy] {
            let secret = t.rsplit('-').next().unwrap_or(t);
            assert!(!log.contains(secret), "a join token in the {who}'s log");
        }
    }

    // Kill -9 the leader: a write through another manager succeeds within 3 s.
    let leader_id = {
        let info = ms[1].cmd(&["cluster", "info"]);
        info.lines()
            .find_map(|l| l.strip_prefix("Leader: "))
            .expect("leader")
            .trim()
            .to_string()
    };
    let li = ms
        .iter()
        .position(|m| m.node_id() == leader_id)
        .expect("leader member");
    ms[li].kill9();
    let survivor = (li + 1) % 3;
    let t0 = Instant::now();
    loop {
        if ms[survivor]
            .try_cmd(&["node", "update", "--label-add", "after=failover", "self"])
            .code
            == 0
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no committed write within 3 s of killing the leader"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "first committed write {:?} after kill -9 of the leader",
        t0.elapsed()
    );
    // The dead manager shows as down/unreachable within 5 s.
    wait_until("dead leader marked down", Duration::from_secs(6), || {
        let ls = ms[survivor].cmd(&["node", "ls"]);
        ls.lines()
            .any(|l| l.starts_with(&leader_id) && l.contains("Down") && l.contains("Unreachable"))
    });
    ms[li].restart();
    wait_until("restarted manager ready", Duration::from_secs(10), || {
        ms[survivor]
            .cmd(&["node", "ls"])
            .lines()
            .any(|l| l.starts_with(&leader_id) && l.contains("Ready"))
    });

    // Majority down: writes refused with a clear error.
    let keep = (li + 2) % 3;
    for (i, m) in ms.iter_mut().enumerate() {
        if i != keep {
            m.kill9();
        }
    }
    let out = ms[keep].try_cmd(&["node", "update", "--label-add", "lost=quorum", "self"]);
    assert_eq!(out.code, 125, "{}", out.stdout);
    assert!(
        out.stderr.contains("majority"),
        "unclear error: {}",
        out.stderr
    );

    // Restart everyone: state intact.
    for m in ms.iter_mut() {
        m.restart();
    }
    wait_until(
        "label survives a full restart",
        Duration::from_secs(15),
        || {
            let o = ms[0].try_cmd(&["node", "inspect", &ms[survivor].node_id()]);
            o.code == 0 && o.stdout.contains("\"after\": \"failover\"")
        },
    );

    // A stopped worker goes down, can be removed, and cannot come back with that identity.
    w.kill9();
    wait_until("worker down", Duration::from_secs(8), || {
        ms[0]
            .cmd(&["node", "ls"])
            .lines()
            .any(|l| l.starts_with(&wid) && l.contains("Down"))
    });
    ms[0].cmd(&["node", "rm", &wid]);
    assert!(!ms[0].cmd(&["node", "ls"]).contains(&wid));
    w.restart();
    wait_until("removed worker refused", Duration::from_secs(10), || {
        w.log().contains("refused this node")
    });
    assert!(!ms[0].cmd(&["node", "ls"]).contains(&wid));
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn worker_promoted_to_manager_and_demoted_back() {
    common::require_root();
    let m1 = Member::start(true, None);
    let wtoken = m1
        .cmd(&["cluster", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let w = Member::start(true, Some((m1.port.expect("port"), wtoken)));
    let wid = w.node_id();
    m1.cmd(&["node", "promote", &wid]);
    wait_until(
        "promoted worker serves the cluster API",
        Duration::from_secs(15),
        || {
            let o = w.try_cmd(&["node", "ls"]);
            o.code == 0
                && o.stdout
                    .lines()
                    .filter(|l| l.contains("Reachable") || l.contains("Leader"))
                    .count()
                    == 2
        },
    );
    let info = m1.cmd(&["cluster", "info"]);
    assert!(info.contains("Managers: 2"), "{info}");
    m1.cmd(&["node", "demote", &wid]);
    wait_until(
        "demoted manager is a worker again",
        Duration::from_secs(15),
        || {
            w.try_cmd(&["node", "ls"])
                .stderr
                .contains("not a swarm manager")
        },
    );
    let ls = m1.cmd(&["node", "ls"]);
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    assert!(
        !ls.lines()
            .any(|l| l.starts_with(&wid) && (l.contains("Reachable") || l.contains("Leader"))),
        "{ls}"
    );
    // The last manager cannot be demoted.
    let o = m1.try_cmd(&["node", "demote", "self"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("last manager"), "{}", o.stderr);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn engine_labels_and_reported_capacity_steer_placement() {
    common::require_root();
    let m = Member::start_with(true, None, &["--label", "disk=ssd"]);
    let wtoken = m
        .cmd(&["cluster", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let w = Member::start_with(
        false,
        Some((m.port.expect("port"), wtoken)),
        &["--label", "disk=hdd", "--label", "zone=b"],
    );
    let tar = common::busybox_tar().to_string_lossy().into_owned();
    for n in [&m, &w] {
        n.cmd(&[
            "image",
            "import",
            &tar,
            "busybox:latest",
            "-c",
            "CMD [\"sleep\", \"300\"]",
        ]);
    }
    // Each node's description reaches the state: the worker's through its heartbeats,
    // the leader's by itself.
    let wid = w.node_id();
    let inspect = |id: &str| -> serde_json::Value {
        serde_json::from_str(&m.cmd(&["node", "inspect", id])).expect("inspect json")
    };
    wait_until(
        "the worker's engine labels",
        Duration::from_secs(15),
        || inspect(&wid)[0]["Description"]["Engine"]["Labels"]["disk"] == "hdd",
    );
    let d = &inspect(&wid)[0]["Description"];
    assert_eq!(d["Engine"]["Labels"]["zone"], "b");
    assert!(
        d["Resources"]["NanoCPUs"].as_i64().unwrap_or(0) >= 1_000_000_000,
        "{d}"
    );
    assert!(
        d["Resources"]["MemoryBytes"].as_i64().unwrap_or(0) > 0,
        "{d}"
    );
    assert_eq!(d["Platform"]["OS"], "linux");
    let pretty = m.cmd(&["node", "inspect", "--pretty", &wid]);
    assert!(
        pretty.contains("Engine Labels:\n - disk=hdd\n - zone=b\n") && pretty.contains(" CPUs:"),
        "{pretty}"
    );
    wait_until(
        "the manager's engine labels",
        Duration::from_secs(15),
        || inspect("self")[0]["Description"]["Engine"]["Labels"]["disk"] == "ssd",
    );

    // engine.labels constraints pick the node; a reservation no node can hold waits.
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = dir.path().join("stack.yaml");
    std::fs::write(
        &stack,
        "services:\n  onhdd:\n    image: busybox:latest\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [engine.labels.disk==hdd]\n  huge:\n    image: busybox:latest\n    deploy:\n      resources:\n        reservations:\n          memory: 100000G\n",
    )
    .expect("stack file");
    m.cmd(&["stack", "deploy", "-c", &stack.to_string_lossy(), "place"]);
    let running = |n: &Member| {
        n.cmd(&["ps", "-q", "--filter", "name=place_onhdd"])
            .lines()
            .count()
    };
    wait_until(
        "both replicas on the hdd node",
        Duration::from_secs(30),
        || running(&w) == 2,
    );
    assert_eq!(running(&m), 0);
    wait_until("the huge task explained", Duration::from_secs(15), || {
        m.cmd(&["service", "ps", "place_huge"])
            .contains("insufficient resources on 2 nodes")
    });
    // Several services share one table, as with Docker.
    let both = m.cmd(&["service", "ps", "place_onhdd", "place_huge"]);
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 4, "{both}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("ID")).count(), 1);
    assert_eq!(
        lines.iter().filter(|l| l.contains("place_onhdd.")).count(),
        2
    );
    m.cmd(&["stack", "rm", "place"]);
    wait_until(
        "the stack's containers gone",
        Duration::from_secs(30),
        || running(&w) == 0,
    );
}

/// The leader's node ID as `cluster info` on `m` reports it.
fn leader_of(m: &Member) -> String {
    m.cmd(&["cluster", "info"])
        .lines()
        .find_map(|l| l.strip_prefix("Leader: "))
        .expect("leader")
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn five_managers_lose_two_then_quorum_then_recover_every_acknowledged_write() {
    common::require_root();
    let m1 = Member::start(true, None);
    let port1 = m1.port.expect("port");
    let token = m1
        .cmd(&["cluster", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let mut ms = vec![m1];
    for _ in 0..4 {
        ms.push(Member::start(true, Some((port1, token.clone()))));
    }
    let ls = ms[4].cmd(&["node", "ls"]);
    assert_eq!(
        ls.matches("Reachable").count() + ls.matches("Leader").count(),
        5,
        "{ls}"
    );
    let ids: Vec<String> = ms.iter().map(|m| m.node_id()).collect();
    // Every acknowledged write: (node whose label it set, label key).
    let mut acked: Vec<(String, String)> = vec![];
    let mut seq = 0;
    let mut write = |m: &Member, i: usize, acked: &mut Vec<(String, String)>| {
        seq += 1;
        let key = format!("w{seq}");
        let o = m.try_cmd(&["node", "update", "--label-add", &format!("{key}=1"), "self"]);
        if o.code == 0 {
            acked.push((ids[i].clone(), key));
        }
        o
    };
    for (i, m) in ms.iter().enumerate() {
        let o = write(m, i, &mut acked);
        assert_eq!(o.code, 0, "write via manager {i}: {}", o.stderr);
    }

    // kill -9 the leader and one follower: three of five remain, a quorum.
    let leader = leader_of(&ms[0]);
    let li = ids
        .iter()
        .position(|id| *id == leader)
        .expect("leader member");
    let fi = (li + 1) % 5;
    ms[li].kill9();
    ms[fi].kill9();
    let alive: Vec<usize> = (0..5).filter(|i| *i != li && *i != fi).collect();
    // The first write waits out the election (retried as a client would), then every
    // survivor commits writes.
    wait_until(
        "a write commits with two of five managers down",
        Duration::from_secs(20),
        || write(&ms[alive[0]], alive[0], &mut acked).code == 0,
    );
    for &i in &alive {
        let o = write(&ms[i], i, &mut acked);
        assert_eq!(o.code, 0, "write via surviving manager {i}: {}", o.stderr);
    }

    // A third down: no quorum. Writes fail with a clear error, in bounded time.
    let third = alive[0];
    ms[third].kill9();
    for &i in &alive[1..] {
        let t0 = Instant::now();
        let o = write(&ms[i], i, &mut acked);
        let took = t0.elapsed();
        assert_ne!(
            o.code, 0,
            "a write committed without a quorum: {}",
            o.stdout
        );
        assert!(
            o.stderr.contains("majority"),
            "unclear error without a quorum: {}",
            o.stderr
        );
        assert!(
            took < Duration::from_secs(30),
            "a write without a quorum hung for {took:?}"
        );
        eprintln!(
            "no-quorum write refused after {took:?}: {}",
            o.stderr.trim()
        );
    }

    // Restart the three: the cluster recovers and takes writes again.
    for i in [li, fi, third] {
        ms[i].restart();
    }
    wait_until(
        "a write commits after the restarts",
        Duration::from_secs(30),
        || write(&ms[li], li, &mut acked).code == 0,
    );
    // Every acknowledged write is on every manager (each reads its own replica after a
    // read barrier).
    assert!(acked.len() >= 10, "{acked:?}");
    for (i, m) in ms.iter().enumerate() {
        for id in &ids {
            let mine: Vec<&String> = acked
                .iter()
                .filter(|(n, _)| n == id)
                .map(|(_, k)| k)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut inspect = String::new();
            wait_until("manager answers inspect", Duration::from_secs(15), || {
                let o = m.try_cmd(&["node", "inspect", id]);
                inspect = o.stdout;
                o.code == 0
            });
            for k in mine {
                assert!(
                    inspect.contains(&format!("\"{k}\": \"1\"")),
                    "manager {i} lacks acknowledged write {k} on node {id}: {inspect}"
                );
            }
        }
    }
}
