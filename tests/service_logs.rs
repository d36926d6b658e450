//! `service logs` gathers lines from every node running the service (issue 7), on hosts
//! made from network namespaces: three managers and three workers. Without `-f` it
//! shows every replica's lines with Docker's prefix, from the leader and through a
//! follower (which relays to the leader's log broker); with `-f` it keeps streaming
//! and picks up a replica added by `service scale`; killing the client leaves no
//! subscription on any node; a dead node is named on stderr and the rest is shown;
//! after the leader dies, the nodes serve the new leader's broker.

mod common;
#[path = "common/netns.rs"]
mod netns;
use netns::NetnsCluster;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each replica says who it is every half second, on stdout and on stderr.
const LOOP: &str = "trap 'exit 0' TERM; while true; do echo \"out $(hostname)\"; echo \"err $(hostname)\" >&2; sleep 0.5; done";

/// A `service logs` line split into (slot, task, node, text); `None` if it does not
/// have Docker's `SERVICE.SLOT[.TASK]@NODE<pad>    | TEXT` shape for service `talk`.
fn parse(line: &str) -> Option<(u64, String, String, String)> {
    let (prefix, text) = line.split_once("    | ")?;
    let (name, node) = prefix.trim_end().rsplit_once('@')?;
    let mut parts = name.split('.');
    if parts.next()? != "talk" {
        return None;
    }
    let slot = parts.next()?.parse().ok()?;
    let task = parts.next().unwrap_or_default().to_string();
    Some((slot, task, node.to_string(), text.to_string()))
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn logs(c: &NetnsCluster, host: &str, args: &[&str]) -> Out {
    let out = Command::new(common::bin())
        .args(["--host", &c.sock(host), "service", "logs"])
        .args(args)
        .arg("talk")
        .output()
        .expect("run skiff service logs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The nodes that lines came from, and the slots.
fn sources(text: &str) -> (BTreeSet<String>, BTreeSet<u64>) {
    let mut nodes = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for (slot, _, node, _) in text.lines().filter_map(parse) {
        nodes.insert(node);
        slots.insert(slot);
    }
    (nodes, slots)
}

/// The hostname of the raft leader as manager `via` sees it.
fn leader(c: &NetnsCluster, via: &str) -> Option<String> {
    let ls = c.on(via, &["node", "ls"]);
    let line = ls.lines().find(|l| l.contains("Leader"))?;
    ["manager1", "manager2", "manager3"]
        .into_iter()
        .find(|m| line.split_whitespace().any(|w| w == *m))
        .map(String::from)
}

/// The agent log of a host, without colour codes.
fn agent_log(c: &NetnsCluster, host: &str) -> String {
    let raw = std::fs::read_to_string(c.dir.join(host).join("agent.log")).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The `active=N` of the last log line holding one of `messages`, if any.
fn last_active(log: &str, messages: &[&str]) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| messages.iter().any(|m| l.contains(m)))?;
    line.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("active="))
        .and_then(|n| n.parse().ok())
}

/// Nodes whose service tasks run, by hostname.
fn running_on(c: &NetnsCluster) -> Vec<String> {
    c.on("manager1", &["service", "ps", "talk"])
        .lines()
        .skip(1)
        .filter(|l| l.contains(" Running "))
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn service_logs_come_from_every_node_and_follow_new_replicas() {
    let c = NetnsCluster::up_with(3, 3);
    c.wait("six ready nodes", Duration::from_secs(60), || {
        c.on("manager1", &["node", "ls"]).matches("Ready").count() == 6
    });
    let lead = leader(&c, "manager1").expect("a leader");
    let follower = ["manager1", "manager2", "manager3"]
        .into_iter()
        .find(|m| *m != lead)
        .expect("a follower")
        .to_string();
    // Replicas go to the workers: every manager is drained for now.
    for m in ["manager1", "manager2", "manager3"] {
        c.on(
            "manager1",
            &["node", "update", "--availability", "drain", m],
        );
    }
    c.on(
        "manager1",
        &[
            "service",
            "create",
            "--name",
            "talk",
            "--replicas",
            "3",
            "busybox:latest",
            "sh",
            "-c",
            LOOP,
        ],
    );
    c.wait(
        "three replicas on the workers",
        Duration::from_secs(60),
        || {
            let mut on = running_on(&c);
            on.sort();
            on == ["worker1", "worker2", "worker3"]
        },
    );
    let workers: BTreeSet<String> = ["worker1", "worker2", "worker3"]
        .into_iter()
        .map(String::from)
        .collect();

    // No -f, from the leader: every replica's lines, Docker's prefix, stderr apart.
    let mut last = None;
    c.wait("lines from every replica", Duration::from_secs(30), || {
        let o = logs(&c, &lead, &[]);
        let ok = o.code == 0
            && sources(&o.stdout) == (workers.clone(), [1, 2, 3].into())
            && sources(&o.stderr).0 == workers;
        last = Some(o);
        ok
    });
    let o = last.expect("ran");
    for l in o.stdout.lines() {
        let (_, task, node, text) = parse(l).unwrap_or_else(|| panic!("line shape: {l:?}"));
        assert_eq!(task.len(), 12, "truncated task ID in {l:?}");
        assert!(text.starts_with("out "), "stdout holds stdout lines: {l:?}");
        assert!(workers.contains(&node));
    }
    for l in o.stderr.lines() {
        let (_, _, _, text) = parse(l).unwrap_or_else(|| panic!("stderr line shape: {l:?}"));
        assert!(text.starts_with("err "), "stderr holds stderr lines: {l:?}");
    }
    let one_task = o.stdout.lines().find_map(parse).expect("a line");

    // Through a follower manager, with --tail 1 --no-task-ids: one line per replica.
    let o = logs(&c, &follower, &["--tail", "1", "--no-task-ids"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let both = format!("{}{}", o.stdout, o.stderr);
    assert_eq!(both.lines().count(), 3, "{both}");
    assert_eq!(
        sources(&both),
        (workers.clone(), [1, 2, 3].into()),
        "{both}"
    );
    assert!(
        both.lines()
            .all(|l| parse(l).is_some_and(|p| p.1.is_empty())),
        "no task IDs: {both}"
    );
    let raw = logs(&c, &lead, &["--raw", "--tail", "2"]);
    assert!(
        raw.stdout.lines().all(|l| l.starts_with("out ")),
        "--raw prints bare lines: {}",
        raw.stdout
    );

    // One task, named by its (truncated) ID as Docker's `service logs TASK` takes it:
    // only its lines, through the follower.
    let (slot, task, node, _) = one_task;
    let one_task_logs = || {
        let one = Command::new(common::bin())
            .args(["--host", &c.sock(&follower), "service", "logs"])
            .args(["--tail", "3", &task])
            .output()
            .expect("run skiff service logs TASK");
        assert!(
            one.status.success(),
            "{}",
            String::from_utf8_lossy(&one.stderr)
        );
        // The tail counts both streams.
        format!(
            "{}{}",
            String::from_utf8_lossy(&one.stdout),
            String::from_utf8_lossy(&one.stderr)
        )
    };
    let mut text = String::new();
    // A task that started a moment ago may not have three lines yet.
    c.wait("three lines of one task", Duration::from_secs(20), || {
        text = one_task_logs();
        text.lines().count() >= 3
    });
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .all(|l| parse(l).is_some_and(|p| (p.0, &p.1, &p.2) == (slot, &task, &node))),
        "lines of task {task} only: {text}"
    );

    // -f through the follower: every replica, then the one a scale-up adds on the
    // leader (a node the subscription did not include at first).
    let mut child = Command::new(common::bin())
        .args([
            "--host",
            &c.sock(&follower),
            "service",
            "logs",
            "-f",
            "talk",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn service logs -f");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().expect("stdout");
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout).lines() {
                match l {
                    Ok(l) => seen.lock().expect("lines").push(l),
                    Err(_) => return,
                }
            }
        })
    };
    let from = |node: &str, slot: Option<u64>| {
        seen.lock()
            .expect("lines")
            .iter()
            .filter_map(|l| parse(l))
            .filter(|p| p.2 == node && slot.is_none_or(|s| p.0 == s))
            .count()
    };
    c.wait(
        "followed lines from every worker",
        Duration::from_secs(30),
        || workers.iter().all(|w| from(w, None) > 0),
    );
    let before = from("worker1", None);
    c.wait("new lines keep coming", Duration::from_secs(20), || {
        from("worker1", None) > before + 2
    });
    c.on(
        "manager1",
        &["node", "update", "--availability", "active", &lead],
    );
    c.on("manager1", &["service", "scale", "talk=4"]);
    c.wait(
        "the fourth replica on the leader",
        Duration::from_secs(60),
        || running_on(&c).iter().filter(|n| **n == lead).count() == 1,
    );
    c.wait(
        "followed lines from the new replica",
        Duration::from_secs(30),
        || from(&lead, Some(4)) > 0,
    );

    // Killing the client cancels the subscription on every node (and the relay on
    // the follower): each agent's last count of served subscriptions is 0.
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let hosts = ["worker1", "worker2", "worker3", lead.as_str()];
    for h in hosts {
        assert!(
            agent_log(&c, h).contains("log subscription started"),
            "{h} served the subscription"
        );
    }
    c.wait(
        "no log subscription left on any node",
        Duration::from_secs(20),
        || {
            hosts.iter().all(|h| {
                last_active(
                    &agent_log(&c, h),
                    &["log subscription started", "log subscription ended"],
                ) == Some(0)
            }) && last_active(
                &agent_log(&c, &lead),
                &[
                    "log subscription opened",
                    "log subscription cancelled",
                    "log subscription complete",
                ],
            ) == Some(0)
        },
    );

    // A dead node: named once on stderr, the others' lines still shown, exit 1.
    let pid = std::fs::read_to_string(c.dir.join("worker3/agent.pid")).expect("pid");
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    let mut last = None;
    c.wait(
        "worker3 reported unavailable",
        Duration::from_secs(30),
        || {
            let o = logs(&c, &lead, &[]);
            let ok = o.code == 1
                && o.stderr
                    .lines()
                    .filter(|l| l.contains("node worker3 is not available"))
                    .count()
                    == 1;
            last = Some(o);
            ok
        },
    );
    let o = last.expect("ran");
    let (nodes, _) = sources(&o.stdout);
    for n in ["worker1", "worker2", lead.as_str()] {
        assert!(nodes.contains(n), "lines from {n} still shown: {nodes:?}");
    }

    // The leader dies: nodes reconnect to the new leader's broker, which serves the
    // logs from then on (asked through the surviving follower).
    let pid = std::fs::read_to_string(c.dir.join(&lead).join("agent.pid")).expect("pid");
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    c.wait("a new leader", Duration::from_secs(30), || {
        leader(&c, &follower).is_some_and(|l| l != lead)
    });
    c.wait(
        "the workers' lines through the new leader",
        Duration::from_secs(30),
        || {
            let o = logs(&c, &follower, &["--tail", "1"]);
            let (nodes, _) = sources(&format!("{}{}", o.stdout, o.stderr));
            let ok = nodes.contains("worker1") && nodes.contains("worker2");
            if !ok {
                eprintln!("not yet: {}{}", o.stdout, o.stderr);
            }
            ok
        },
    );
}
