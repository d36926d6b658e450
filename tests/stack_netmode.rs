//! Stack services sharing namespaces on the embedded one-node cluster: a sidecar with
//! `network_mode`, `ipc` and `pid` set to `service:web` runs beside web's task, after
//! it, and sees web's server on its own loopback and web's processes; a
//! `network_mode: none` service has only a loopback interface.

mod common;
use common::Agent;
use std::time::Duration;

const STACK: &str = r#"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "echo from-web > /index.html; exec httpd -f -p 8000 -h /"]
    stop_grace_period: 1s
  side:
    image: busybox:latest
    command: [sleep, "1000"]
    network_mode: service:web
    ipc: service:web
    pid: service:web
    stop_grace_period: 1s
  lone:
    image: busybox:latest
    command: [sleep, "1000"]
    network_mode: none
    stop_grace_period: 1s
"#;

/// The one running container of a stack service.
fn container(a: &Agent, name: &str) -> String {
    a.cmd(&["ps", "-q", "--filter", &format!("name={name}")])
        .stdout
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_service_sidecar_shares_the_network_ipc_and_pid_of_its_peer() {
    let a = Agent::start().with_busybox();
    let file = a.dir.path().join("ns.yaml");
    std::fs::write(&file, STACK).expect("write stack file");
    let file = file.to_string_lossy().into_owned();
    a.cmd(&[
        "stack",
        "deploy",
        "-c",
        &file,
        "--detach=false",
        "--timeout",
        "90s",
        "ns",
    ]);
    let side = container(&a, "ns_side");
    assert!(!side.is_empty(), "{}", a.cmd(&["ps", "-a"]).stdout);
    // web's server answers on the sidecar's loopback: one network namespace.
    let mut body = String::new();
    a.wait_until(
        "web answers in the sidecar",
        Duration::from_secs(20),
        || {
            body = a
                .try_cmd(&[
                    "exec",
                    &side,
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    "http://127.0.0.1:8000/",
                ])
                .stdout;
            body.trim() == "from-web"
        },
    );
    // web's httpd is among the sidecar's processes: one PID namespace.
    let ps = a.cmd(&["exec", &side, "ps"]).stdout;
    assert!(ps.contains("httpd"), "{ps}");
    // `none`: a loopback and nothing else.
    let lone = container(&a, "ns_lone");
    let links = a.cmd(&["exec", &lone, "ip", "-o", "link"]).stdout;
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo"), "{links}");

    a.cmd(&["stack", "rm", "ns"]);
    a.wait_until("containers removed", Duration::from_secs(30), || {
        a.cmd(&["ps", "-aq"]).stdout.trim().is_empty()
    });
}
