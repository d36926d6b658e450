//! End-to-end tests of the Docker API's system, network and volume endpoints, driven by
//! the real docker CLIs (Debian's 20.10 and a current one) against a private agent, with
//! `curl --unix-socket` where the status code or the message is the point.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One raw request on the agent's Docker socket: `(status, body)`.
fn curl(a: &Agent, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "20", "--unix-socket"])
        .arg(a.docker_socket())
        .args(["-X", method, "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c
        .arg(format!("http://docker{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (
        code.trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {path}: {text:?}")),
        body.to_string(),
    )
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// `docker ARGS` with `exe`, required to succeed.
fn docker_ok(a: &Agent, exe: &str, args: &[&str]) -> String {
    let r = a.try_docker_with(exe, args, None);
    assert_eq!(
        r.code, 0,
        "{exe} {args:?} failed: stdout={:?} stderr={:?}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// `docker ARGS` with `exe`, required to fail; returns stderr.
fn docker_err(a: &Agent, exe: &str, args: &[&str]) -> String {
    let r = a.try_docker_with(exe, args, None);
    assert_ne!(r.code, 0, "{exe} {args:?} should fail: {:?}", r.stdout);
    r.stderr
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn version_negotiates_and_refuses_too_new_clients() {
    let a = Agent::start();
    for cli in docker_clis() {
        let v = docker_ok(&a, cli, &["version", "--format", "{{.Server.APIVersion}}"]);
        assert_eq!(v.trim(), "1.47", "{cli}");
        let client = docker_ok(&a, cli, &["version", "--format", "{{.Client.APIVersion}}"]);
        // 20.10 speaks 1.41; a newer CLI negotiates down to what we announce.
        let want = if cli == "/usr/bin/docker" {
            "1.41"
        } else {
            "1.47"
        };
        assert_eq!(client.trim(), want, "{cli}");
    }
    let (code, body) = curl(&a, "GET", "/v1.99/info", None);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("client version 1.99 is too new. Maximum supported API version is 1.47"),
        "{body}"
    );
    let (code, body) = curl(&a, "GET", "/info", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"OSType\":\"linux\""), "{body}");
    let (code, _) = curl(&a, "GET", "/v1.24/version", None);
    assert_eq!(code, 200);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn info_counts_containers_and_reports_the_cluster() {
    let a = Agent::start().with_busybox();
    a.cmd(&["run", "-d", "--name", "inf1", "busybox", "sleep", "300"]);
    a.cmd(&["create", "--name", "inf2", "busybox", "true"]);
    let node_id = a.cmd(&["node", "ls", "-q"]).stdout.trim().to_string();
    assert!(!node_id.is_empty());
    for cli in docker_clis() {
        let f = docker_ok(
            &a,
            cli,
            &[
                "info",
                "--format",
                "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Images}} {{.OSType}} {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}} {{.Swarm.Nodes}} {{.Swarm.Managers}}",
            ],
        );
        assert_eq!(
            f.trim(),
            format!("2 1 1 1 linux active true {node_id} 1 1"),
            "{cli}"
        );
        let pool = docker_ok(
            &a,
            cli,
            &[
                "info",
                "--format",
                "{{.Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.DataPathPort}}",
            ],
        );
        // The harness gives each agent its own --default-addr-pool 10.N.0.0/16.
        let pool = pool.trim();
        assert!(
            pool.starts_with("[10.") && pool.ends_with(".0.0/16] 4789"),
            "{cli}: {pool}"
        );
        let text = docker_ok(&a, cli, &["info"]);
        for want in [
            "Swarm: active",
            &format!("NodeID: {node_id}"),
            "Is Manager: true",
            "Storage Driver: overlay2",
            "Kernel Version:",
        ] {
            assert!(text.contains(want), "{cli}: {want:?} missing from\n{text}");
        }
    }
    a.cmd(&["rm", "-f", "inf1", "inf2"]);
}

/// A `docker events` process whose output is read line by line on a thread.
struct EventsWatch {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl EventsWatch {
    fn start(a: &Agent, exe: &str, args: &[&str]) -> EventsWatch {
        let cfg = a.dir.path().join("docker-config");
        let _ = std::fs::create_dir_all(&cfg);
        let mut child = Command::new(exe)
            .arg("events")
            .args(args)
            .env("DOCKER_HOST", a.docker_host())
            .env("DOCKER_CONFIG", &cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        EventsWatch {
            child,
            rx,
            seen: vec![],
        }
    }

    /// Waits until a line equal to `want` arrived; returns everything seen so far.
    fn wait_for(&mut self, want: &str, timeout: Duration) -> &[String] {
        let deadline = Instant::now() + timeout;
        while !self.seen.iter().any(|l| l == want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no {want:?} event; saw {:?}", self.seen),
            }
        }
        &self.seen
    }
}

impl Drop for EventsWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn events_stream_live_and_bounded_queries_end() {
    let a = Agent::start().with_busybox();
    let since = format!("{}", chrono::Utc::now().timestamp() - 1);
    for cli in docker_clis() {
        let mut w = EventsWatch::start(
            &a,
            cli,
            &[
                "--format",
                "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
            ],
        );
        // The watcher is subscribed once the stream answered; an event made before
        // that would be missed, so prove it with a first marker.
        a.wait_until("events stream connected", Duration::from_secs(10), || {
            a.cmd(&["volume", "create", "evmark"]);
            a.cmd(&["volume", "rm", "evmark"]);
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(l) = w.rx.try_recv() {
                w.seen.push(l);
            }
            w.seen.iter().any(|l| l.starts_with("volume create"))
        });
        a.cmd(&["run", "--rm", "--name", "evrun", "busybox", "true"]);
        let seen = w.wait_for("container destroy evrun", Duration::from_secs(20));
        let ours: Vec<&str> = seen
            .iter()
            .filter(|l| l.ends_with(" evrun"))
            .map(|l| l.as_str())
            .collect();
        assert_eq!(
            ours,
            [
                "container create evrun",
                "container start evrun",
                "container die evrun",
                "container destroy evrun"
            ],
            "{cli}"
        );
    }

    // Bounded: replays and ends by itself, in Docker's JSON shape. The CLI sends whole
    // seconds, so `--until 0s` covers the events above once the second has turned.
    let last = chrono::Utc::now().timestamp();
    a.wait_until(
        "the clock to pass the last event's second",
        Duration::from_secs(3),
        || chrono::Utc::now().timestamp() > last,
    );
    for cli in docker_clis() {
        let r = a.try_docker_with(
            "timeout",
            &[
                "20",
                cli,
                "events",
                "--since",
                &since,
                "--until",
                "0s",
                "--format",
                "{{json .}}",
            ],
            None,
        );
        assert_eq!(r.code, 0, "{cli} events did not end by itself: {r:?}");
        let die: serde_json::Value = r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["Action"] == "die" && v["Actor"]["Attributes"]["name"] == "evrun")
            .unwrap_or_else(|| panic!("{cli}: no die event in {}", r.stdout));
        assert_eq!(die["Type"], "container");
        assert_eq!(die["status"], "die");
        assert_eq!(die["from"], "busybox");
        assert_eq!(die["scope"], "local");
        assert_eq!(die["Actor"]["Attributes"]["exitCode"], "0");
        assert!(die["timeNano"].as_i64().unwrap_or(0) > 0);

        let r = a.try_docker_with(
            "timeout",
            &[
                "20",
                cli,
                "events",
                "--since",
                &since,
                "--until",
                "0s",
                "--filter",
                "event=die",
                "--filter",
                "container=evrun",
                "--format",
                "{{.Type}} {{.Action}}",
            ],
            None,
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            lines(&r.stdout),
            vec!["container die"; docker_clis().len()],
            "{cli}: one die per run above"
        );
        let r = a.try_docker_with(
            "timeout",
            &[
                "20",
                cli,
                "events",
                "--since",
                &since,
                "--until",
                "0s",
                "--filter",
                "type=volume",
                "--format",
                "{{.Action}} {{.Actor.ID}}",
            ],
            None,
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            lines(&r.stdout).iter().all(|l| l.ends_with(" evmark")),
            "{}",
            r.stdout
        );
        assert!(r.stdout.contains("destroy evmark"), "{}", r.stdout);
    }
    let (code, body) = curl(&a, "GET", "/events?since=yesterday", None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid time value"), "{body}");
    let (code, body) = curl(
        &a,
        "GET",
        "/events?filters=%7B%22colour%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(code, 400, "{body}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn system_df_plain_and_verbose() {
    let a = Agent::start().with_busybox();
    a.docker(&["volume", "create", "dfvol"]);
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "dfctr",
        "-v",
        "dfvol:/data",
        "busybox",
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /data/blob; head -c 200000 /dev/zero > /big; sleep 300",
    ]);
    a.wait_until("files written", Duration::from_secs(10), || {
        a.try_cmd(&["exec", "dfctr", "test", "-s", "/big"]).code == 0
    });
    for cli in docker_clis() {
        let plain = docker_ok(&a, cli, &["system", "df"]);
        let rows = lines(&plain);
        assert!(rows[0].starts_with("TYPE"), "{plain}");
        let row = |k: &str| {
            rows.iter()
                .find(|l| l.starts_with(k))
                .unwrap_or_else(|| panic!("{cli}: no {k} row in\n{plain}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(row("Images")[1..3], ["1", "1"], "{plain}");
        assert_eq!(row("Containers")[1..3], ["1", "1"], "{plain}");
        assert_eq!(row("Local Volumes")[2..4], ["1", "1"], "{plain}");
        assert_eq!(row("Build Cache")[2..4], ["0", "0"], "{plain}");
        let v = docker_ok(&a, cli, &["system", "df", "-v"]);
        let vol = lines(&v)
            .into_iter()
            .find(|l| l.starts_with("dfvol"))
            .unwrap_or_else(|| panic!("{cli}: no volume line in\n{v}"));
        let cells: Vec<&str> = vol.split_whitespace().collect();
        assert_eq!(cells[1], "1", "links: {vol}");
        assert!(cells[2].ends_with("kB") && cells[2] != "0B", "size: {vol}");
        let ctr = lines(&v)
            .into_iter()
            .find(|l| l.ends_with("dfctr"))
            .unwrap_or_else(|| panic!("{cli}: no container line in\n{v}"));
        assert!(ctr.contains("busybox") && ctr.contains("Up "), "{ctr}");
        assert!(
            lines(&v)
                .iter()
                .any(|l| l.starts_with("busybox ") && l.contains(" latest ")),
            "{v}"
        );
    }
    let (code, body) = curl(&a, "GET", "/system/df?type=volume", None);
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        doc.get("Images").is_none() && doc.get("Containers").is_none(),
        "{doc}"
    );
    assert_eq!(doc["Volumes"][0]["Name"], "dfvol");
    assert_eq!(doc["Volumes"][0]["UsageData"]["RefCount"], 1);
    assert!(doc["Volumes"][0]["UsageData"]["Size"].as_u64().unwrap_or(0) >= 300_000);
    let (code, _) = curl(&a, "GET", "/system/df?type=pets", None);
    assert_eq!(code, 400);
    a.cmd(&["rm", "-f", "dfctr"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn networks_create_connect_inspect_remove_prune() {
    let a = Agent::start().with_busybox();
    a.cmd(&["run", "-d", "--name", "netc", "busybox", "sleep", "300"]);
    for (i, cli) in docker_clis().into_iter().enumerate() {
        let name = format!("dnet{i}");
        let subnet = format!("10.231.{i}.0/24");
        let id = docker_ok(
            &a,
            cli,
            &[
                "network",
                "create",
                "--subnet",
                &subnet,
                "--gateway",
                &format!("10.231.{i}.1"),
                "--label",
                "team=web",
                "--internal",
                &name,
            ],
        );
        let id = id.trim().to_string();
        assert_eq!(id.len(), 64, "{id}");
        // One engine: skiff sees what docker made.
        assert!(a.cmd(&["network", "ls"]).stdout.contains(&name));
        let err = docker_err(&a, cli, &["network", "create", &name]);
        assert!(
            err.contains(&format!("network with name {name} already exists")),
            "{err}"
        );
        let ls = docker_ok(
            &a,
            cli,
            &[
                "network",
                "ls",
                "--filter",
                "label=team=web",
                "--format",
                "{{.Name}}",
            ],
        );
        assert_eq!(lines(&ls), [name.as_str()], "{cli}");
        let ls = docker_ok(
            &a,
            cli,
            &[
                "network",
                "ls",
                "--filter",
                "type=builtin",
                "--format",
                "{{.Name}}",
            ],
        );
        assert_eq!(lines(&ls), ["bridge"], "{cli}");
        let ls = docker_ok(
            &a,
            cli,
            &[
                "network",
                "ls",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("name={name}"),
            ],
        );
        assert_eq!(lines(&ls), [id.as_str()], "{cli}");
        let inspect = docker_ok(
            &a,
            cli,
            &["network", "inspect", "-f", "{{.Driver}} {{.Scope}} {{.Internal}} {{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}} {{.Labels.team}}", &name],
        );
        assert_eq!(
            inspect.trim(),
            format!("bridge local true {subnet} 10.231.{i}.1 web"),
            "{cli}"
        );

        let ip = format!("10.231.{i}.50");
        docker_ok(
            &a,
            cli,
            &[
                "network", "connect", "--alias", "webby", "--ip", &ip, &name, "netc",
            ],
        );
        let containers = docker_ok(
            &a,
            cli,
            &["network", "inspect", "-f", "{{json .Containers}}", &name],
        );
        let c: serde_json::Value = serde_json::from_str(&containers).expect("json");
        let ep = c
            .as_object()
            .and_then(|m| m.values().next())
            .expect("one endpoint");
        assert_eq!(ep["Name"], "netc");
        assert_eq!(ep["IPv4Address"], format!("{ip}/24"));
        assert_eq!(ep["EndpointID"].as_str().map(str::len), Some(64));
        // The container really got the address.
        let addrs = a.cmd(&["exec", "netc", "ip", "-4", "addr"]).stdout;
        assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
        let err = docker_err(&a, cli, &["network", "connect", &name, "netc"]);
        assert!(err.contains("already exists in network"), "{err}");
        let err = docker_err(&a, cli, &["network", "rm", &name]);
        assert!(err.contains("has active endpoints"), "{err}");
        let (code, _) = curl(&a, "DELETE", &format!("/networks/{name}"), None);
        assert_eq!(code, 403, "Docker answers 403 for a network in use");
        docker_ok(&a, cli, &["network", "disconnect", &name, "netc"]);
        let addrs = a.cmd(&["exec", "netc", "ip", "-4", "addr"]).stdout;
        assert!(!addrs.contains(&ip), "{addrs}");
        let err = docker_err(&a, cli, &["network", "connect", &name, "nosuchctr"]);
        assert!(err.contains("No such container: nosuchctr"), "{err}");
        let err = docker_err(&a, cli, &["network", "inspect", "nosuchnet"]);
        assert!(err.contains("nosuchnet"), "{err}");
        docker_ok(&a, cli, &["network", "rm", &name]);
        assert!(!a.cmd(&["network", "ls"]).stdout.contains(&name));
    }
    // The reverse: skiff's networks are docker's, and prune takes the unused ones.
    a.cmd(&["network", "create", "--label", "keep=yes", "skn1"]);
    a.cmd(&["network", "create", "skn2"]);
    a.cmd(&["network", "create", "skn3"]);
    a.docker(&["network", "connect", "skn3", "netc"]);
    let ls = a.docker(&["network", "ls", "--format", "{{.Name}}"]).stdout;
    for n in ["bridge", "skn1", "skn2", "skn3"] {
        assert!(lines(&ls).contains(&n), "{ls}");
    }
    let ls = a
        .docker(&[
            "network",
            "ls",
            "--filter",
            "dangling=true",
            "--format",
            "{{.Name}}",
        ])
        .stdout;
    assert_eq!(lines(&ls), ["skn1", "skn2"]);
    let out = a
        .docker(&["network", "prune", "-f", "--filter", "label!=keep=yes"])
        .stdout;
    assert!(
        out.contains("skn2") && !out.contains("skn1") && !out.contains("skn3"),
        "{out}"
    );
    let out = a.docker(&["network", "prune", "-f"]).stdout;
    assert!(out.contains("skn1"), "{out}");
    let ls = a.cmd(&["network", "ls"]).stdout;
    assert!(
        !ls.contains("skn1") && !ls.contains("skn2") && ls.contains("skn3"),
        "{ls}"
    );
    a.cmd(&["rm", "-f", "netc"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn network_and_volume_bad_input_is_a_400_naming_the_field() {
    let a = Agent::start();
    let count = |a: &Agent| lines(&a.docker(&["network", "ls", "-q"]).stdout).len();
    let before = count(&a);
    for (body, want) in [
        ("{\"Name\": ", "invalid JSON"),
        ("{\"Name\": 3}", "Name"),
        ("{\"Name\": \"x1\", \"Driver\": \"macvlan\"}", "Driver"),
        ("{\"Name\": \"x1\", \"IPAM\": {\"Config\": [{\"Subnet\": \"10.0.0.300/24\"}]}}", "IPAM.Config[0].Subnet"),
        ("{\"Name\": \"x1\", \"IPAM\": {\"Config\": [{\"Subnet\": \"10.232.0.0/24\", \"Gateway\": \"nope\"}]}}", "IPAM.Config[0].Gateway"),
        ("{\"Name\": \"x1\", \"EnableIPv6\": true}", "EnableIPv6"),
        ("{\"Name\": \"x1\", \"Internal\": \"yes\"}", "Internal"),
        ("{\"Name\": \"bad name\"}", "invalid network name"),
    ] {
        let (code, resp) = curl(&a, "POST", "/networks/create", Some(body));
        assert_eq!(code, 400, "{body} -> {resp}");
        assert!(resp.contains(want), "{body} -> {resp}");
    }
    assert_eq!(count(&a), before, "nothing half-created");
    for cli in docker_clis() {
        let err = docker_err(&a, cli, &["network", "create", "--ipv6", "v6net"]);
        assert!(err.contains("IPv6"), "{err}");
        let err = docker_err(&a, cli, &["network", "create", "-d", "weave", "wnet"]);
        assert!(err.contains("weave"), "{err}");
    }
    assert_eq!(count(&a), before, "nothing half-created");

    let vols = |a: &Agent| lines(&a.cmd(&["volume", "ls", "-q"]).stdout).len();
    for (body, want) in [
        ("[1,2]", "invalid JSON"),
        ("{\"Name\": 3}", "Name"),
        ("{\"Name\": \"v1\", \"Driver\": \"nfs\"}", "Driver"),
        (
            "{\"Name\": \"v1\", \"DriverOpts\": {\"type\": \"tmpfs\"}}",
            "DriverOpts",
        ),
        ("{\"Name\": \"v1\", \"Labels\": [\"a\"]}", "Labels"),
        ("{\"Name\": \"/abs\"}", "invalid characters"),
    ] {
        let (code, resp) = curl(&a, "POST", "/volumes/create", Some(body));
        assert_eq!(code, 400, "{body} -> {resp}");
        assert!(resp.contains(want), "{body} -> {resp}");
    }
    assert_eq!(vols(&a), 0, "nothing half-created");
    let (code, resp) = curl(
        &a,
        "GET",
        "/volumes?filters=%7B%22colour%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(code, 400, "{resp}");
    assert!(resp.contains("invalid filter 'colour'"), "{resp}");
    let (code, resp) = curl(&a, "POST", "/auth", Some("{\"username\": 7}"));
    assert_eq!(code, 400, "{resp}");
    assert!(resp.contains("username"), "{resp}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn volumes_create_list_inspect_remove_prune() {
    let a = Agent::start().with_busybox();
    for (i, cli) in docker_clis().into_iter().enumerate() {
        let name = format!("dvol{i}");
        assert_eq!(
            docker_ok(&a, cli, &["volume", "create", "--label", "tier=db", &name]).trim(),
            name
        );
        // Docker generates a name when none is given.
        let anon = docker_ok(&a, cli, &["volume", "create"]);
        assert_eq!(anon.trim().len(), 64, "{anon}");
        let ls = docker_ok(
            &a,
            cli,
            &[
                "volume",
                "ls",
                "--filter",
                "label=tier=db",
                "--format",
                "{{.Name}} {{.Driver}}",
            ],
        );
        assert_eq!(lines(&ls), [format!("{name} local")], "{cli}");
        let insp = docker_ok(
            &a,
            cli,
            &[
                "volume",
                "inspect",
                "-f",
                "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels.tier}} {{.Mountpoint}}",
                &name,
            ],
        );
        let cells: Vec<&str> = insp.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            [name.as_str(), "local", "local", "db"],
            "{insp}"
        );
        assert!(Path::new(cells[4]).is_dir(), "{insp}");
        // One engine: skiff sees it, and a container can use it.
        assert!(a.cmd(&["volume", "ls", "-q"]).stdout.contains(&name));
        let user = format!("vuser{i}");
        a.cmd(&[
            "run",
            "-d",
            "--name",
            &user,
            "-v",
            &format!("{name}:/data"),
            "busybox",
            "sleep",
            "300",
        ]);
        let err = docker_err(&a, cli, &["volume", "rm", &name]);
        assert!(
            err.contains(&format!("remove {name}: volume is in use - [")),
            "{err}"
        );
        let (code, _) = curl(&a, "DELETE", &format!("/volumes/{name}"), None);
        assert_eq!(code, 409);
        let dangling = docker_ok(
            &a,
            cli,
            &["volume", "ls", "-q", "--filter", "dangling=false"],
        );
        assert_eq!(lines(&dangling), [name.as_str()], "{cli}");
        // 28's CLI words a 404 itself ("No such volume"); 20.10 prints ours.
        let err = docker_err(&a, cli, &["volume", "inspect", "nosuchvol"]);
        assert!(err.to_lowercase().contains("no such volume"), "{err}");
        let err = docker_err(&a, cli, &["volume", "rm", "nosuchvol"]);
        assert!(err.to_lowercase().contains("no such volume"), "{err}");
        docker_ok(&a, cli, &["volume", "rm", "-f", "nosuchvol"]);
        a.cmd(&["rm", "-f", &user]);
        docker_ok(&a, cli, &["volume", "rm", &name, anon.trim()]);
        assert_eq!(a.cmd(&["volume", "ls", "-q"]).stdout.trim(), "");
    }
    // The reverse, and prune: API 1.41 clients prune every unused volume; newer ones
    // only anonymous volumes unless --all.
    a.cmd(&["volume", "create", "skv1"]);
    a.cmd(&[
        "run", "--name", "anonuser", "-v", "/anon", "busybox", "true",
    ]);
    a.cmd(&[
        "run", "-d", "--name", "keeper", "-v", "skv2:/k", "busybox", "sleep", "300",
    ]);
    a.cmd(&["rm", "anonuser"]);
    let ls = a.docker(&["volume", "ls", "-q"]).stdout;
    assert_eq!(
        lines(&ls).len(),
        3,
        "skv1, skv2 and the anonymous volume: {ls}"
    );
    if docker_clis().contains(&"/usr/local/bin/docker") {
        let out = docker_ok(&a, "/usr/local/bin/docker", &["volume", "prune", "-f"]);
        assert!(
            !out.contains("skv1"),
            "named volumes stay without --all: {out}"
        );
        let ls = a.cmd(&["volume", "ls", "-q"]).stdout;
        assert_eq!(lines(&ls), ["skv1", "skv2"], "{ls}");
        let out = docker_ok(&a, "/usr/local/bin/docker", &["volume", "prune", "-af"]);
        assert!(out.contains("skv1"), "{out}");
    } else {
        let out = a.docker(&["volume", "prune", "-f"]).stdout;
        assert!(out.contains("skv1"), "{out}");
    }
    let ls = a.cmd(&["volume", "ls", "-q"]).stdout;
    assert_eq!(
        lines(&ls),
        ["skv2"],
        "in-use volumes are never pruned: {ls}"
    );
    a.cmd(&["rm", "-f", "keeper"]);
    a.docker(&["volume", "rm", "skv2"]);
    assert_eq!(a.cmd(&["volume", "ls", "-q"]).stdout.trim(), "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn login_checks_credentials_with_the_registry() {
    let secured = Registry::start(Some(("alice", "s3cret")));
    let open = Registry::start(None);
    let a = Agent::start();
    for cli in docker_clis() {
        let login = |addr: &str, pass: &str| {
            a.try_docker_with(
                cli,
                &["login", "-u", "alice", "--password-stdin", addr],
                Some(format!("{pass}\n").as_bytes()),
            )
        };
        let bad = login(&secured.addr, "wrong");
        assert_ne!(bad.code, 0, "{cli}: {bad:?}");
        assert!(bad.stderr.contains("unauthorized"), "{cli}: {}", bad.stderr);
        let ok = login(&secured.addr, "s3cret");
        assert_eq!(ok.code, 0, "{cli}: {ok:?}");
        assert!(
            ok.stdout.contains("Login Succeeded"),
            "{cli}: {}",
            ok.stdout
        );
        let ok = login(&open.addr, "anything");
        assert_eq!(ok.code, 0, "{cli}: a registry without auth accepts: {ok:?}");
    }
    let body = format!(
        "{{\"username\":\"alice\",\"password\":\"nope\",\"serveraddress\":\"{}\"}}",
        secured.addr
    );
    let (code, resp) = curl(&a, "POST", "/auth", Some(&body));
    assert_eq!(code, 401, "{resp}");
    let body = body.replace("nope", "s3cret");
    let (code, resp) = curl(&a, "POST", "/auth", Some(&body));
    assert_eq!(code, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).expect("json");
    assert_eq!(v["Status"], "Login Succeeded");
    assert_eq!(v["IdentityToken"], "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn overlay_networks_go_through_the_cluster() {
    let a = Agent::start();
    for cli in docker_clis() {
        let id = docker_ok(
            &a,
            cli,
            &["network", "create", "-d", "overlay", "--attachable", "dov"],
        );
        assert_eq!(id.trim().len(), 25, "a cluster object ID: {id}");
        // One engine: the cluster holds the name for skiff too.
        let dup = a.try_cmd(&["network", "create", "-d", "overlay", "dov"]);
        assert_ne!(dup.code, 0);
        assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
        let err = docker_err(&a, cli, &["network", "create", "-d", "overlay", "dov"]);
        assert!(
            err.contains("network with name dov already exists"),
            "{err}"
        );
        docker_ok(&a, cli, &["network", "rm", "dov"]);
        // Gone from the cluster: the name is free again.
        a.cmd(&["network", "create", "-d", "overlay", "dov"]);
        a.cmd(&["network", "rm", "dov"]);
    }
}
