//! Multi-host behaviour on hosts made from network namespaces (`deploy/netns-cluster`):
//! one manager and three workers; replicas spread over nodes, constraints on node
//! labels, scaling, drain, and a worker whose agent dies has its tasks moved.

mod common;
#[path = "common/netns.rs"]
mod netns;
use netns::NetnsCluster;
use std::process::Command;
use std::time::Duration;

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stacks_spread_move_and_honour_constraints_across_hosts() {
    let c = NetnsCluster::up(3);
    let nodes = c.on("manager1", &["node", "ls"]);
    assert_eq!(nodes.matches("Ready").count(), 4, "{nodes}");
    c.on(
        "manager1",
        &["node", "update", "--label-add", "zone=b", "worker3"],
    );
    c.deploy(
        "app",
        "services:\n  web:\n    image: busybox:latest\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 8\n  db:\n    image: busybox:latest\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.labels.zone==b]\n",
    );
    let web = c.placement("app");
    assert_eq!(web.values().sum::<usize>(), 10);
    // Each task started exactly once: no container died on the way (an executor that
    // missed its own start report in a stale view used to kill and start it again).
    for n in ["manager1", "worker1", "worker2", "worker3"] {
        let died = c.on(
            n,
            &[
                "events",
                "--since",
                "10m",
                "--until",
                "0s",
                "--filter",
                "type=container",
                "--filter",
                "event=die",
                "--format",
                "{{.Actor.ID}}",
            ],
        );
        assert!(
            died.trim().is_empty(),
            "containers died on {n} during the deploy: {died}"
        );
    }
    // web's 8 replicas spread over all four nodes; db only on the zone=b node.
    let db_nodes: Vec<String> = c
        .on("manager1", &["service", "ps", "app_db"])
        .lines()
        .skip(1)
        .filter(|l| l.contains(" Running "))
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect();
    assert_eq!(db_nodes, vec!["worker3", "worker3"]);
    for n in ["manager1", "worker1", "worker2"] {
        assert!(web.get(n).copied().unwrap_or(0) >= 2, "spread: {web:?}");
    }
    // Drain worker1: its tasks go elsewhere.
    c.on(
        "manager1",
        &["node", "update", "--availability", "drain", "worker1"],
    );
    c.wait("drain", Duration::from_secs(30), || {
        let p = c.placement("app");
        !p.contains_key("worker1") && p.values().sum::<usize>() == 10
    });
    c.wait("worker1 emptied", Duration::from_secs(20), || {
        c.on("worker1", &["ps", "-q"]).trim().is_empty()
    });
    // Kill worker2's agent: the node goes down and its tasks are replaced elsewhere.
    let pid = std::fs::read_to_string(c.dir.join("worker2/agent.pid")).expect("pid");
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    c.wait(
        "tasks moved off the dead node",
        Duration::from_secs(30),
        || {
            let p = c.placement("app");
            !p.contains_key("worker2") && p.values().sum::<usize>() == 10
        },
    );
    // Scale down, then remove: nothing left on any live node.
    c.on("manager1", &["service", "scale", "app_web=2"]);
    c.wait("scaled down", Duration::from_secs(30), || {
        c.placement("app").values().sum::<usize>() == 4
    });
    c.on("manager1", &["stack", "rm", "app"]);
    for n in ["manager1", "worker1", "worker3"] {
        c.wait("containers removed", Duration::from_secs(30), || {
            c.on(n, &["ps", "-aq"]).trim().is_empty()
        });
    }
}
