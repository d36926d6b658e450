//! End-to-end `skiff events`: cluster service events replayed with --since/--until and
//! merged with local container events on one node; node events of a two-node cluster
//! seen from the other node (forwarded by a manager to a worker), replayed and live.

mod common;
#[path = "common/cluster.rs"]
mod harness;

use common::Agent;
use harness::{wait_until, Member};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Parses `--format json` output: one object a line.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn summary(evs: &[serde_json::Value]) -> Vec<(String, String, String)> {
    evs.iter()
        .map(|e| {
            (
                e["Type"].as_str().unwrap_or_default().to_string(),
                e["Action"].as_str().unwrap_or_default().to_string(),
                e["Actor"]["Attributes"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

const STACK: &str = r#"
services:
  web:
    image: busybox:latest
    command: ["sleep", "300"]
    stop_grace_period: 1s
"#;

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn service_events_replay_between_since_and_until() {
    let a = Agent::start().with_busybox();
    let t0 = now();
    let file = a.dir.path().join("ev.yaml");
    std::fs::write(&file, STACK).expect("stack file");
    a.cmd(&[
        "stack",
        "deploy",
        "-c",
        &file.to_string_lossy(),
        "--detach=false",
        "--timeout",
        "60s",
        "evs",
    ]);
    a.cmd(&["service", "scale", "evs_web=2"]);
    a.wait_until("two replicas", Duration::from_secs(30), || {
        a.cmd(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=evs_web",
        ])
        .stdout
        .lines()
        .count()
            == 2
    });
    a.cmd(&["stack", "rm", "evs"]);
    let t1 = now();

    // --until in the past: the command replays and exits by itself.
    let out = a
        .cmd(&[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "type=service",
            "--format",
            "json",
        ])
        .stdout;
    let evs = json_lines(&out);
    let s = summary(&evs);
    let web = |action: &str| {
        (
            "service".to_string(),
            action.to_string(),
            "evs_web".to_string(),
        )
    };
    assert_eq!(s.first(), Some(&web("create")), "{out}");
    assert_eq!(s.last(), Some(&web("remove")), "{out}");
    let scaled = evs
        .iter()
        .find(|e| e["Actor"]["Attributes"]["replicas.new"] == "2")
        .unwrap_or_else(|| panic!("no scale event in {out}"));
    assert_eq!(scaled["Action"], "update");
    assert_eq!(scaled["Actor"]["Attributes"]["replicas.old"], "1");
    assert!(s.iter().all(|(t, ..)| t == "service"), "{out}");
    let times: Vec<i64> = evs.iter().filter_map(|e| e["timeNano"].as_i64()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {times:?}"
    );

    // Without a type filter, the cluster's events and this node's own are one stream.
    let all = a
        .cmd(&[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--format",
            "{{.Type}} {{.Action}}",
        ])
        .stdout;
    assert!(all.contains("service create"), "{all}");
    assert!(all.contains("container start"), "{all}");
    // A window before anything happened is empty.
    let none = a
        .cmd(&[
            "events",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2000-01-01T00:00:01Z",
        ])
        .stdout;
    assert!(none.trim().is_empty(), "{none}");
    // service= filters by name or ID.
    let by_name = a
        .cmd(&[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "service=evs_web",
            "--filter",
            "event=create",
            "--format",
            "json",
        ])
        .stdout;
    assert_eq!(
        summary(&json_lines(&by_name)),
        vec![web("create")],
        "{by_name}"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn node_events_are_seen_from_the_other_node() {
    common::require_root();
    let t0 = now();
    let m = Member::start(true, None);
    let port = m.port.expect("port");
    let token = m
        .cmd(&["cluster", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let w = Member::start(false, Some((port, token)));
    let wid = w.node_id();
    wait_until("the worker ready", Duration::from_secs(20), || {
        m.cmd(&["node", "ls"])
            .lines()
            .any(|l| l.contains(&wid) && l.contains("Ready"))
    });
    let t1 = now();

    // Replayed on the worker, which has no state machine: its manager forwards them.
    let node_events = |who: &Member| {
        json_lines(&who.cmd(&[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "type=node",
            "--format",
            "json",
        ]))
    };
    for (who, what) in [(&w, "worker"), (&m, "manager")] {
        let evs = node_events(who);
        let mine: Vec<_> = evs
            .iter()
            .filter(|e| e["Actor"]["ID"] == wid.as_str())
            .map(|e| e["Action"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            mine.first().map(String::as_str),
            Some("join"),
            "{what} should see the worker join: {evs:?}"
        );
    }
    let join = node_events(&w)
        .into_iter()
        .find(|e| e["Actor"]["ID"] == wid.as_str())
        .expect("join");
    assert_eq!(join["Actor"]["Attributes"]["role"], "worker");
    assert_eq!(join["Actor"]["Attributes"]["state"], "ready");

    // Live on the worker: follow node events while the manager drains it.
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let until = (chrono::Utc::now() + chrono::Duration::seconds(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut follow = Command::new(common::bin())
        .args(["--host", &w.host(), "events", "--until", &until])
        .args([
            "--filter",
            "type=node",
            "--filter",
            "event=update",
            "--format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("skiff events");
    let stdout = follow.stdout.take().expect("stdout");
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().expect("lines").push(l);
        }
    });
    // The follower may subscribe after a change: keep changing until one arrives.
    let mut drain = true;
    let seen = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let avail = if drain { "drain" } else { "active" };
        m.cmd(&["node", "update", "--availability", avail, &wid]);
        drain = !drain;
        std::thread::sleep(Duration::from_millis(500));
        let got: Vec<_> = lines.lock().expect("lines").clone();
        if !got.is_empty() || std::time::Instant::now() > seen {
            break got;
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
    let ev: serde_json::Value = serde_json::from_str(got.first().unwrap_or_else(|| {
        panic!(
            "the worker saw no live node event; worker log:\n{}",
            w.log()
        )
    }))
    .expect("json");
    assert_eq!(ev["Type"], "node");
    assert_eq!(ev["Action"], "update");
    assert_eq!(ev["Actor"]["ID"], wid.as_str());
    assert!(
        ev["Actor"]["Attributes"]["availability.new"] == "drain"
            || ev["Actor"]["Attributes"]["availability.new"] == "active",
        "{ev}"
    );

    // The worker goes away and comes back: the manager records down, then ready, and
    // the worker replays both from the manager after its restart.
    let mut w = w;
    let t2 = now();
    w.kill9();
    let status_events = |who: &Member, since: &str| -> Vec<String> {
        json_lines(&who.cmd(&[
            "events",
            "--since",
            since,
            "--until",
            &now(),
            "--filter",
            "type=node",
            "--filter",
            &format!("node={wid}"),
            "--format",
            "json",
        ]))
        .iter()
        .filter_map(|e| e["Action"].as_str().map(str::to_string))
        .filter(|a| a == "down" || a == "ready")
        .collect()
    };
    wait_until(
        "the manager to mark the worker down",
        Duration::from_secs(20),
        || status_events(&m, &t2) == ["down"],
    );
    w.restart();
    wait_until(
        "the worker ready again, seen from the worker",
        Duration::from_secs(20),
        || status_events(&w, &t2) == ["down", "ready"],
    );
    let down = json_lines(&w.cmd(&[
        "events",
        "--since",
        &t2,
        "--until",
        &now(),
        "--filter",
        "event=down",
        "--format",
        "json",
    ]));
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0]["Actor"]["Attributes"]["state.old"], "ready");
    assert_eq!(down[0]["Actor"]["Attributes"]["state.new"], "down");
}
