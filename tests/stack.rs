//! End-to-end stacks on the embedded one-node cluster: deploy with convergence, name
//! resolution between services, scaling, a rolling update that fails its health check
//! and rolls back, idempotent redeploys, and `stack rm` leaving nothing behind.

mod common;
use common::Agent;
use std::time::Duration;

const STACK: &str = r#"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "hostname > /index.html; exec httpd -f -p 80 -h /"]
    ports: ["PORT:80"]
    networks: [backend]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"]
      interval: 1s
      timeout: 1s
      retries: 2
    stop_grace_period: 1s
    deploy:
      replicas: 2
      update_config:
        parallelism: 1
        failure_action: rollback
        monitor: 2s
      restart_policy:
        condition: on-failure
        delay: 1s
  api:
    image: busybox:latest
    command: ["sh", "-c", "echo api > /index.html; exec httpd -f -p 8080 -h /"]
    volumes:
      - data:/data
    networks: [backend]
networks:
  backend: {}
volumes:
  data: {}
"#;

fn write_stack(a: &Agent, name: &str, text: &str) -> String {
    let p = a.dir.path().join(name);
    std::fs::write(&p, text).expect("write stack file");
    p.to_string_lossy().into_owned()
}

/// GET / on the host's loopback, returning the body.
fn http_get(port: u16) -> Option<String> {
    http_get_path(port, "/")
}

fn http_get_path(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    // A CGI script's own headers end with a bare "\n\n".
    let body = out
        .split_once("\r\n\r\n")
        .or_else(|| out.split_once("\n\n"))
        .map(|(_, b)| b)?;
    Some(body.trim().to_string())
}

fn services(a: &Agent, stack: &str) -> String {
    a.cmd(&["stack", "services", stack]).stdout
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stack_lifecycle_on_one_node() {
    let a = Agent::start().with_busybox();
    let file = write_stack(&a, "app.yaml", &STACK.replace("PORT", "18080"));
    let r = a.cmd(&[
        "stack",
        "deploy",
        "-c",
        &file,
        "--detach=false",
        "--timeout",
        "60s",
        "demo",
    ]);
    assert!(
        r.stdout.contains("Creating service demo_web") && r.stdout.contains("converged"),
        "{}",
        r.stdout
    );
    let svc = services(&a, "demo");
    assert!(svc.contains("demo_web") && svc.contains("2/2"), "{svc}");
    assert!(svc.contains("demo_api") && svc.contains("1/1"), "{svc}");

    // Services reach each other by name over the stack network. (Under load a replica
    // can fail its 1 s health check and be replaced, so ask whichever web task runs.)
    a.wait_until("web reaches api by name", Duration::from_secs(20), || {
        let ids = a.cmd(&["ps", "-q", "--filter", "name=demo_web"]).stdout;
        ids.lines().next().is_some_and(|web| {
            a.try_cmd(&["exec", web, "wget", "-q", "-O", "-", "http://api:8080/"])
                .stdout
                == "api\n"
        })
    });

    // The published port answers on the host, spread over the replicas (the node
    // republishes the port within a pass of a task starting, so allow it a moment).
    let mut seen = std::collections::HashSet::new();
    a.wait_until(
        "both replicas behind the published port",
        Duration::from_secs(15),
        || {
            if let Some(body) = http_get(18080) {
                seen.insert(body);
            }
            seen.len() == 2
        },
    );

    // Deploying the same file again changes nothing.
    let r = a.cmd(&["stack", "deploy", "-c", &file, "demo"]);
    assert!(!r.stdout.contains("Updating"), "{}", r.stdout);

    // Scale up and down.
    a.cmd(&["service", "scale", "demo_web=4"]);
    a.wait_until("4 replicas", Duration::from_secs(30), || {
        services(&a, "demo").contains("4/4")
    });
    a.cmd(&["service", "scale", "demo_web=1"]);
    a.wait_until("1 replica", Duration::from_secs(30), || {
        services(&a, "demo").contains("1/1")
            && a.cmd(&["ps", "-q", "--filter", "name=demo_web"])
                .stdout
                .lines()
                .count()
                == 1
    });

    // A killed task is replaced by the restart policy.
    let web = a
        .cmd(&["ps", "-q", "--filter", "name=demo_web"])
        .stdout
        .trim()
        .to_string();
    a.cmd(&["kill", &web]);
    a.wait_until("replacement", Duration::from_secs(30), || {
        let ids = a.cmd(&["ps", "-q", "--filter", "name=demo_web"]).stdout;
        ids.lines().count() == 1 && !ids.contains(&web) && services(&a, "demo").contains("1/1")
    });

    // stack rm leaves no container or network behind.
    a.cmd(&["stack", "rm", "demo"]);
    a.wait_until("containers removed", Duration::from_secs(30), || {
        a.cmd(&["ps", "-aq"]).stdout.trim().is_empty()
    });
    a.wait_until("network removed", Duration::from_secs(10), || {
        !a.cmd(&["network", "ls"]).stdout.contains("demo_backend")
    });
    assert!(a.cmd(&["stack", "ls"]).stdout.lines().count() <= 1);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn failing_update_rolls_back() {
    let a = Agent::start().with_busybox();
    let stack = STACK.replace("PORT", "18081");
    let file = write_stack(&a, "app.yaml", &stack);
    a.cmd(&[
        "stack",
        "deploy",
        "-c",
        &file,
        "--detach=false",
        "--timeout",
        "60s",
        "roll",
    ]);
    // The new version's server never answers: its health check fails.
    let broken = stack.replace("exec httpd -f -p 80 -h /\"]", "exec sleep 1000\"]");
    assert_ne!(broken, stack);
    let file2 = write_stack(&a, "broken.yaml", &broken);
    a.cmd(&["stack", "deploy", "-c", &file2, "roll"]);
    a.wait_until("rollback", Duration::from_secs(90), || {
        a.cmd(&["service", "inspect", "roll_web"])
            .stdout
            .contains("rollback_completed")
    });
    let tasks = a.cmd(&["service", "ps", "roll_web"]).stdout;
    let running: Vec<&str> = tasks
        .lines()
        .filter(|l| l.contains("Running ") && l.contains(" Running"))
        .collect();
    assert_eq!(running.len(), 2, "{tasks}");
    let spec = a.cmd(&["service", "inspect", "roll_web"]).stdout;
    assert!(
        spec.contains("exec httpd"),
        "rolled back to the working command: {spec}"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn unplaceable_tasks_explain_why() {
    let a = Agent::start().with_busybox();
    let file = write_stack(
        &a,
        "c.yaml",
        "services:\n  db:\n    image: busybox:latest\n    command: [sleep, '1000']\n    deploy:\n      placement:\n        constraints: [node.labels.zone==b]\n",
    );
    a.cmd(&["stack", "deploy", "-c", &file, "cons"]);
    a.wait_until("pending reason", Duration::from_secs(15), || {
        a.cmd(&["stack", "ps", "--no-trunc", "cons"])
            .stdout
            .contains("no node satisfies constraint node.labels.zone==b")
    });
    let r = a.try_cmd(&[
        "stack",
        "deploy",
        "-c",
        &file,
        "--detach=false",
        "--timeout",
        "2s",
        "cons",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("did not converge"), "{}", r.stderr);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn bad_stack_file_changes_nothing() {
    let a = Agent::start().with_busybox();
    let file = write_stack(
        &a,
        "bad.yaml",
        "services:\n  web:\n    image: busybox:latest\n    deploy:\n      replicas: three\n",
    );
    let r = a.try_cmd(&["stack", "deploy", "-c", &file, "bad"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("bad.yaml:5:") && r.stderr.contains("replicas"),
        "{}",
        r.stderr
    );
    assert!(!a.cmd(&["stack", "ls"]).stdout.contains("bad"));
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn secrets_and_configs_are_mounted_read_only() {
    let a = Agent::start().with_busybox();
    std::fs::write(a.dir.path().join("db_password.txt"), "s3cret\n").expect("secret file");
    std::fs::write(a.dir.path().join("app.conf"), "level=debug\n").expect("config file");
    let file = write_stack(
        &a,
        "sec.yaml",
        "services:\n  app:\n    image: busybox:latest\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n    secrets: [db_password]\n    configs:\n      - source: app_conf\n        target: /etc/app.conf\nsecrets:\n  db_password:\n    file: ./db_password.txt\nconfigs:\n  app_conf:\n    file: ./app.conf\n",
    );
    a.cmd(&[
        "stack",
        "deploy",
        "-c",
        &file,
        "--detach=false",
        "--timeout",
        "60s",
        "sec",
    ]);
    let c = a
        .cmd(&["ps", "-q", "--filter", "name=sec_app"])
        .stdout
        .trim()
        .to_string();
    assert_eq!(
        a.cmd(&["exec", &c, "cat", "/run/secrets/db_password"])
            .stdout,
        "s3cret\n"
    );
    assert_eq!(
        a.cmd(&["exec", &c, "cat", "/etc/app.conf"]).stdout,
        "level=debug\n"
    );
    assert_ne!(
        a.try_cmd(&["exec", &c, "sh", "-c", "echo x > /run/secrets/db_password"])
            .code,
        0,
        "secrets are read-only"
    );
    a.cmd(&["stack", "rm", "sec"]);
    a.wait_until("containers removed", Duration::from_secs(30), || {
        a.cmd(&["ps", "-aq"]).stdout.trim().is_empty()
    });
    // The secret's file on the host went with its task.
    let left = std::fs::read_dir(a.root.join("taskfiles"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "task files left behind");
}

/// The example the README's quickstart deploys (examples/hello/app.yaml), on another
/// port: three web replicas behind the published port, and web's CGI page fetching
/// the api service by name over the stack's overlay.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn the_example_stack_answers() {
    let a = Agent::start().with_busybox();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/app.yaml");
    let out = std::process::Command::new(common::bin())
        .args(["--host", &a.host(), "stack", "deploy", "-c"])
        .arg(&file)
        .args(["--detach=false", "--timeout", "90s", "hello"])
        .env("WEB_PORT", "18095")
        .output()
        .expect("stack deploy");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut webs = std::collections::HashSet::new();
    a.wait_until(
        "web answers on the published port",
        Duration::from_secs(20),
        || {
            if let Some(b) = http_get(18095).filter(|b| b.starts_with("hello from web ")) {
                webs.insert(b);
            }
            webs.len() >= 2
        },
    );
    a.wait_until(
        "web's CGI reaches api by name",
        Duration::from_secs(20),
        || http_get_path(18095, "/cgi-bin/api").is_some_and(|b| b.starts_with("hello from api ")),
    );
    // Several services inspect into one array, in the order asked.
    let v: serde_json::Value = serde_json::from_str(
        &a.cmd(&["service", "inspect", "hello_web", "hello_api"])
            .stdout,
    )
    .expect("inspect json");
    let names: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["Spec"]["name"].as_str())
        .collect();
    assert_eq!(names, ["hello_web", "hello_api"], "{v}");
    a.cmd(&["stack", "rm", "hello"]);
    a.wait_until("containers removed", Duration::from_secs(30), || {
        a.cmd(&["ps", "-aq"]).stdout.trim().is_empty()
    });
    a.cmd(&["volume", "rm", "hello_pages"]);
}
