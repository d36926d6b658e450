//! End-to-end tests (root, real kernel) of Docker's own clients against an agent's
//! Docker API socket: the Python docker SDK from PyPI and Debian's docker-compose 1.29
//! (which runs on Debian's packaged SDK). Nothing here sends a hand-made request.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn python_sdk_drives_the_engine() {
    let a = Agent::start().with_busybox();
    let out = Command::new("python3")
        .arg(repo("tests/docker/sdk_check.py"))
        .env("DOCKER_HOST", a.docker_host())
        .output()
        .expect("python3 (deploy/deps.sh --test installs the docker SDK)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "sdk_check.py failed: {stdout}\n{stderr}\nagent log:\n{}",
        a.log()
    );
    // What the SDK made and removed is gone from the engine too.
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
    assert!(!a.cmd(&["volume", "ls", "-q"]).stdout.contains("sdkvol"));
}

/// A free TCP port on loopback for a published port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn docker_compose_up_ps_logs_exec_down() {
    let a = Agent::start().with_busybox();
    let port = free_port().to_string();
    let project = "skcompose";
    let compose = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .args([
                "-p",
                project,
                "-f",
                &repo("tests/docker/compose/docker-compose.yml"),
            ])
            .args(args)
            .env("DOCKER_HOST", a.docker_host())
            .env("WEB_PORT", &port)
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .output()
            .expect("docker-compose (deploy/deps.sh --test installs it)");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    // Whatever happens below, the project goes away (containers, network, volume).
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Run);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "-v", "--remove-orphans"]);
        }
    }
    let _down = Down(&compose);

    let up = compose(&["up", "-d", "--build"]);
    assert_eq!(up.code, 0, "up: {}\n{}\n{}", up.stdout, up.stderr, a.log());
    let ps = compose(&["ps"]);
    assert_eq!(ps.code, 0, "{}", ps.stderr);
    for svc in ["skcompose_web_1", "skcompose_db_1"] {
        let line = ps.stdout.lines().find(|l| l.starts_with(svc));
        assert!(
            line.is_some_and(|l| l.contains("Up")),
            "{svc} not up:\n{}",
            ps.stdout
        );
    }
    // The same containers are the engine's: skiff's own CLI sees them.
    let names = a.cmd(&["ps", "--format", "{{.Names}}"]).stdout;
    assert!(
        names.contains("skcompose_web_1") && names.contains("skcompose_db_1"),
        "{names}"
    );

    // The built image answers on the published port.
    a.wait_until("web answers", Duration::from_secs(15), || {
        Command::new("curl")
            .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{port}/")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "compose-ok")
            .unwrap_or(false)
    });
    a.wait_until("db log line", Duration::from_secs(10), || {
        compose(&["logs", "db"]).stdout.contains("db ready")
    });
    // Service names resolve on the project network; the volume is shared.
    let e = compose(&["exec", "-T", "web", "ping", "-c", "1", "-W", "2", "db"]);
    assert_eq!(e.code, 0, "ping db: {}{}", e.stdout, e.stderr);
    let e = compose(&["exec", "-T", "web", "cat", "/data/shared"]);
    assert_eq!((e.code, e.stdout.trim()), (0, "from-db"), "{}", e.stderr);

    let down = compose(&["down", "-v"]);
    assert_eq!(down.code, 0, "down: {}", down.stderr);
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
    let vols = a.cmd(&["volume", "ls", "-q"]).stdout;
    assert!(!vols.contains("skcompose_data"), "{vols}");
    let nets = a.cmd(&["network", "ls", "--format", "{{.Name}}"]).stdout;
    assert!(!nets.contains("skcompose_front"), "{nets}");
}
