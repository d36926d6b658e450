//! End-to-end tests of the Docker API's exec endpoints, driven by the real docker CLIs
//! (Debian's 20.10 and 28.x) against a private agent. Containers are made with skiff's
//! own CLI, so every test also shows the two front ends share one engine.

mod common;
use common::*;

/// A running busybox container named `name`, made through skiff's CLI.
fn running(a: &Agent, name: &str) {
    a.cmd(&["run", "-d", "--name", name, "busybox", "sleep", "1000"]);
}

#[test]
fn exec_runs_and_propagates_exit_codes() {
    let a = Agent::start().with_busybox();
    running(&a, "c1");
    for cli in docker_clis() {
        let r = a.try_docker_with(cli, &["exec", "c1", "echo", "hi"], None);
        assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{cli}: {r:?}");
        let r = a.try_docker_with(
            cli,
            &["exec", "c1", "sh", "-c", "echo out; echo err >&2; exit 3"],
            None,
        );
        assert_eq!(r.code, 3, "{cli}: {r:?}");
        assert_eq!(r.stdout, "out\n", "{cli}: stdout and stderr stay apart");
        assert_eq!(r.stderr, "err\n", "{cli}");
        // A command that does not exist: Docker's 127 with its message.
        let r = a.try_docker_with(cli, &["exec", "c1", "nonexistent-cmd"], None);
        assert_eq!(r.code, 127, "{cli}: {r:?}");
        assert!(
            (r.stdout.clone() + &r.stderr).contains("nonexistent-cmd"),
            "{cli}: the error names the command: {r:?}"
        );
    }
}

#[test]
fn exec_with_stdin_env_workdir_user() {
    let a = Agent::start().with_busybox();
    running(&a, "c1");
    for cli in docker_clis() {
        let r = a.try_docker_with(cli, &["exec", "-i", "c1", "cat"], Some(b"hi\nthere\n"));
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "hi\nthere\n"),
            "{cli}: {r:?}"
        );
        // stdin's end reaches the process: wc counts and exits.
        let r = a.try_docker_with(cli, &["exec", "-i", "c1", "wc", "-l"], Some(b"a\nb\nc\n"));
        assert_eq!(r.stdout.trim(), "3", "{cli}: {r:?}");
        let r = a.try_docker_with(
            cli,
            &[
                "exec",
                "-e",
                "FOO=bar",
                "-w",
                "/tmp",
                "-u",
                "nobody",
                "c1",
                "sh",
                "-c",
                "echo $FOO $(pwd) $(id -un)",
            ],
            None,
        );
        assert_eq!(r.stdout, "bar /tmp nobody\n", "{cli}: {r:?}");
    }
}

#[test]
fn exec_with_a_real_pty() {
    let a = Agent::start().with_busybox();
    running(&a, "c1");
    for cli in docker_clis() {
        // `script` gives the CLI a terminal, as a user's shell would.
        let inner = format!("{cli} exec -it c1 sh -c 'tty; stty size; exit 4'");
        let out = std::process::Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .env("DOCKER_HOST", a.docker_host())
            .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/"), "{cli}: a pty inside: {text:?}");
        assert_eq!(
            out.status.code(),
            Some(4),
            "{cli}: exit code through the pty: {text:?}"
        );
    }
}

#[test]
fn exec_detached_keeps_running_and_inspect_reports() {
    let a = Agent::start().with_busybox();
    running(&a, "c1");
    for cli in docker_clis() {
        let marker = format!("/tmp/done-{}", cli.replace('/', "_"));
        let script = format!("sleep 0.5; echo x > {marker}");
        let r = a.try_docker_with(cli, &["exec", "-d", "c1", "sh", "-c", &script], None);
        assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{cli}: {r:?}");
        a.wait_until(
            "the detached exec's file",
            std::time::Duration::from_secs(10),
            || {
                a.try_docker_with(cli, &["exec", "c1", "cat", &marker], None)
                    .stdout
                    == "x\n"
            },
        );
    }
    // The exec is seen by the engine: skiff's own exec works on the same container.
    assert_eq!(
        a.cmd(&["exec", "c1", "echo", "via-skiff"]).stdout,
        "via-skiff\n"
    );
}

#[test]
fn exec_inspect_over_the_api() {
    let a = Agent::start().with_busybox();
    running(&a, "c1");
    let sock = a.docker_socket();
    let curl = |args: &[&str]| -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&sock)
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created = curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Cmd":["sh","-c","exit 5"],"AttachStdout":true}"#,
        "http://d/v1.47/containers/c1/exec",
    ]);
    let v: serde_json::Value = serde_json::from_str(&created).expect(&created);
    let id = v["Id"].as_str().expect("Id").to_string();
    let before: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://d/v1.47/exec/{id}/json")])).expect("json");
    assert_eq!(before["Running"], false);
    assert!(before["ExitCode"].is_null(), "{before}");
    assert_eq!(before["ProcessConfig"]["entrypoint"], "sh");
    assert_eq!(
        before["ProcessConfig"]["arguments"],
        serde_json::json!(["-c", "exit 5"])
    );
    assert_eq!(before["OpenStdout"], true);
    // Start without an upgrade: 200 and the (multiplexed) output as the body.
    curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Detach":false,"Tty":false}"#,
        &format!("http://d/v1.47/exec/{id}/start"),
    ]);
    let after: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://d/v1.47/exec/{id}/json")])).expect("json");
    assert_eq!(after["ExitCode"], 5, "{after}");
    assert_eq!(after["Running"], false);
    assert!(
        after["ContainerID"].as_str().is_some_and(|c| c.len() == 64),
        "{after}"
    );
    // Starting twice is refused, an unknown exec is Docker's 404.
    let again = curl(&[
        "-XPOST",
        "-d",
        "{}",
        "-H",
        "Content-Type: application/json",
        &format!("http://d/v1.47/exec/{id}/start"),
    ]);
    assert!(again.contains("already running"), "{again}");
    let missing = curl(&["http://d/v1.47/exec/nope/json"]);
    assert!(missing.contains("No such exec instance: nope"), "{missing}");
}

#[test]
fn exec_on_a_stopped_container_fails_like_docker() {
    let a = Agent::start().with_busybox();
    a.cmd(&["create", "--name", "stopped", "busybox", "true"]);
    for cli in docker_clis() {
        let r = a.try_docker_with(cli, &["exec", "stopped", "echo", "hi"], None);
        assert_ne!(r.code, 0, "{cli}: {r:?}");
        assert!(r.stderr.contains("is not running"), "{cli}: {r:?}");
        let r = a.try_docker_with(cli, &["exec", "missing", "echo", "hi"], None);
        assert_ne!(r.code, 0, "{cli}: {r:?}");
        assert!(
            r.stderr.contains("No such container: missing"),
            "{cli}: {r:?}"
        );
    }
}
