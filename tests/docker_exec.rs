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
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
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
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
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
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
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
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
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
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
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
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
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

/// Creates an exec over the API and starts it on a raw connection with an upgrade, as
/// the docker CLI does; returns the whole exchange (headers, then the stream).
fn raw_start(a: &Agent, version: &str, tty: bool) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let body =
        format!(r#"{{"Cmd":["echo","hi"],"AttachStdout":true,"AttachStderr":true,"Tty":{tty}}}"#);
    let created = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(a.docker_socket())
        .args([
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
        ])
        .arg(format!("http://d/v{version}/containers/c1/exec"))
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&created.stdout).expect("exec create JSON");
    let id = v["Id"].as_str().expect("Id");
    let start = format!(r#"{{"Detach":false,"Tty":{tty}}}"#);
    let mut s = std::os::unix::net::UnixStream::connect(a.docker_socket()).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "POST /v{version}/exec/{id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{start}",
        start.len()
    )
    .expect("write");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn exec_start_hijacks_like_dockerd() {
    let a = Agent::start().with_busybox();
    running(&a, "c1");
    // No tty, API >= 1.42: multiplexed stream, announced as such.
    let (head, body) = raw_start(&a, "1.47", false);
    assert!(head.starts_with("HTTP/1.1 101 UPGRADED"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/vnd.docker.multiplexed-stream"),
        "{head}"
    );
    assert!(
        lower.contains("connection: upgrade") && lower.contains("upgrade: tcp"),
        "{head}"
    );
    assert_eq!(
        body, b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n",
        "one stdout frame"
    );
    // Older API: still multiplexed frames, announced as a raw stream (dockerd does this).
    let (head, body) = raw_start(&a, "1.41", false);
    assert!(
        head.to_ascii_lowercase()
            .contains("application/vnd.docker.raw-stream"),
        "{head}"
    );
    assert_eq!(body, b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n");
    // A tty: raw bytes, as the terminal wrote them.
    let (head, body) = raw_start(&a, "1.47", true);
    assert!(
        head.to_ascii_lowercase()
            .contains("application/vnd.docker.raw-stream"),
        "{head}"
    );
    assert_eq!(body, b"hi\r\n");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn detach_keys_leave_the_exec_running() {
    use std::io::{Read, Write};
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
    let bad = curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Cmd":["true"],"DetachKeys":"ctrl-xx"}"#,
        "http://d/v1.47/containers/c1/exec",
    ]);
    assert!(bad.contains("Invalid detach keys"), "{bad}");
    let created = curl(&[
        "-XPOST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Cmd":["sh","-c","read x; echo never"],"AttachStdin":true,"AttachStdout":true,"Tty":true,"DetachKeys":"ctrl-x,a"}"#,
        "http://d/v1.47/containers/c1/exec",
    ]);
    let v: serde_json::Value = serde_json::from_str(&created).expect(&created);
    let id = v["Id"].as_str().expect("Id").to_string();
    let start = r#"{"Detach":false,"Tty":true}"#;
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "POST /v1.47/exec/{id}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{start}",
        start.len()
    )
    .expect("write");
    // The detach sequence: the server ends the stream, the process runs on.
    s.write_all(b"\x18a").expect("detach keys");
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("the server closes the stream after a detach");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(!text.contains("never"), "{text}");
    let inspect: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://d/v1.47/exec/{id}/json")])).expect("json");
    assert_eq!(inspect["Running"], true, "{inspect}");
    assert!(inspect["ExitCode"].is_null(), "{inspect}");
    assert_eq!(inspect["DetachKeys"], "ctrl-x,a");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn execs_go_with_their_container() {
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
        r#"{"Cmd":["true"]}"#,
        "http://d/v1.47/containers/c1/exec",
    ]);
    let v: serde_json::Value = serde_json::from_str(&created).expect(&created);
    let id = v["Id"].as_str().expect("Id").to_string();
    assert!(curl(&[&format!("http://d/v1.47/exec/{id}/json")]).contains(&id));
    a.cmd(&["rm", "-f", "c1"]);
    let gone = curl(&[&format!("http://d/v1.47/exec/{id}/json")]);
    assert!(
        gone.contains(&format!("No such exec instance: {id}")),
        "{gone}"
    );
}
