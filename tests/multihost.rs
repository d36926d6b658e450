//! Multi-host behaviour on hosts made from network namespaces (`deploy/netns-cluster`):
//! one manager and three workers; replicas spread over nodes, constraints on node
//! labels, scaling, drain, and a worker whose agent dies has its tasks moved.

mod common;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct NetnsCluster {
    dir: PathBuf,
    hosts: Vec<(String, String, String)>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/netns-cluster")
}

impl NetnsCluster {
    fn up(workers: u32) -> NetnsCluster {
        common::require_root();
        let dir = tempfile::Builder::new()
            .prefix("skc")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let _ = std::fs::remove_dir(&dir);
        let mut c = NetnsCluster {
            dir: dir.clone(),
            hosts: vec![],
        };
        let out = Command::new(script())
            .args([
                "up",
                "--managers",
                "1",
                "--workers",
                &workers.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .arg("--bin")
            .arg(common::bin())
            .output()
            .expect("netns-cluster up");
        assert!(
            out.status.success(),
            "netns-cluster up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hosts = std::fs::read_to_string(dir.join("hosts")).expect("hosts file");
        c.hosts = hosts
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split_whitespace().collect();
                (p.len() == 3).then(|| (p[0].to_string(), p[1].to_string(), p[2].to_string()))
            })
            .collect();
        let tar = common::busybox_tar().to_string_lossy().into_owned();
        for (name, _, _) in c.hosts.clone() {
            c.on(&name, &["image", "import", &tar, "busybox:latest"]);
        }
        c
    }

    fn sock(&self, host: &str) -> String {
        self.hosts
            .iter()
            .find(|h| h.0 == host)
            .map(|h| format!("unix://{}", h.2))
            .expect("host")
    }

    fn on(&self, host: &str, args: &[&str]) -> String {
        let out = Command::new(common::bin())
            .arg("--host")
            .arg(self.sock(host))
            .args(args)
            .output()
            .expect("run skiff");
        assert!(
            out.status.success(),
            "skiff {args:?} on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Running tasks per node hostname.
    fn placement(&self, stack: &str) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for l in self.on("manager1", &["stack", "ps", stack]).lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() >= 6 && cols[4] == "Running" && cols[5] == "Running" {
                *m.entry(cols[3].to_string()).or_default() += 1;
            }
        }
        m
    }

    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}");
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .arg("--bin")
            .arg(common::bin())
            .status();
    }
}

#[test]
fn stacks_spread_move_and_honour_constraints_across_hosts() {
    let c = NetnsCluster::up(3);
    let nodes = c.on("manager1", &["node", "ls"]);
    assert_eq!(nodes.matches("Ready").count(), 4, "{nodes}");
    c.on(
        "manager1",
        &["node", "update", "--label-add", "zone=b", "worker3"],
    );
    let file = c.dir.join("app.yaml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: busybox:latest\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 8\n  db:\n    image: busybox:latest\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.labels.zone==b]\n",
    )
    .expect("write stack");
    let f = file.to_string_lossy().into_owned();
    c.on(
        "manager1",
        &[
            "stack",
            "deploy",
            "-c",
            &f,
            "--detach=false",
            "--timeout",
            "60s",
            "app",
        ],
    );
    let web = c.placement("app");
    assert_eq!(web.values().sum::<usize>(), 10);
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
