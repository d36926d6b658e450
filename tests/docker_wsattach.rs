//! End-to-end tests (root, real kernel) of the Docker API's WebSocket attach, exec
//! inspect's Pid, commit's author/pause and import's message and time, driven by real
//! clients: websocket-client and the docker SDK from PyPI, and both docker CLIs.

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

/// Runs a Python script with `args`; panics with its output unless it printed `ok`.
fn python(a: &Agent, args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .env("DOCKER_HOST", a.docker_host())
        .output()
        .expect("python3 (deploy/deps.sh --test installs websocket-client and the docker SDK)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "python {args:?} failed: {stdout}\n{stderr}\nagent log:\n{}",
        a.log()
    );
    stdout
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn websocket_attach_carries_raw_stdio() {
    let a = Agent::start().with_busybox();
    a.docker(&["run", "-d", "-i", "--name", "wsraw", "busybox", "cat"]);
    a.docker(&["run", "-d", "-it", "--name", "wstty", "busybox", "sh"]);
    a.docker(&[
        "create",
        "-i",
        "--name",
        "wspark",
        "busybox",
        "sh",
        "-c",
        "read l; echo got:$l; echo oops >&2",
    ]);
    a.docker(&[
        "run",
        "--name",
        "wslog",
        "busybox",
        "sh",
        "-c",
        "echo past; echo bad >&2",
    ]);
    let sock = a.docker_socket().display().to_string();
    python(&a, &[&repo("tests/docker/ws_attach.py"), &sock]);
    // The parked attach got its connection from the start: the container ran to its end
    // with the input the WebSocket sent, as the engine (skiff's own CLI) records.
    assert_eq!(a.inspect("wspark", "{{.State.ExitCode}}"), "0");
    assert!(a.cmd(&["logs", "wspark"]).stdout.contains("got:early"));
    // The attaches left the running containers running.
    for c in ["wsraw", "wstty"] {
        assert_eq!(
            a.docker(&["inspect", "-f", "{{.State.Running}}", c])
                .stdout
                .trim(),
            "true"
        );
    }
    a.docker(&["rm", "-f", "wsraw", "wstty", "wspark", "wslog"]);
}

/// `docker exec -d` as the CLI sends it (create, start detached) through the SDK, which
/// also reads the exec's inspect: its Pid is the live process, on the host, in the
/// container's pid namespace and cgroup.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn exec_inspect_reports_the_live_pid() {
    let a = Agent::start().with_busybox();
    a.docker(&["run", "-d", "--name", "ex", "busybox", "sleep", "300"]);
    let init: i32 = a
        .docker(&["inspect", "-f", "{{.State.Pid}}", "ex"])
        .stdout
        .trim()
        .parse()
        .expect("container pid");
    let script = r#"
import docker, sys
c = docker.from_env()
e = c.api.exec_create("ex", ["sleep", "100"])
assert c.api.exec_inspect(e["Id"])["Pid"] == 0
c.api.exec_start(e["Id"], detach=True)
print(c.api.exec_inspect(e["Id"])["Pid"])
print("ok")
"#;
    let out = python(&a, &["-c", script]);
    let pid: i32 = out
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"));
    assert!(pid > 0 && pid != init, "exec pid {pid}, init {init}");
    let proc = |p: i32, what: &str| {
        std::fs::read_to_string(format!("/proc/{p}/{what}"))
            .unwrap_or_else(|e| panic!("/proc/{p}/{what}: {e}"))
    };
    assert_eq!(proc(pid, "cmdline"), "sleep\x00100\x00");
    assert_eq!(proc(pid, "cgroup"), proc(init, "cgroup"));
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).expect("pid ns");
    assert_eq!(ns(pid), ns(init));
    assert_ne!(ns(pid), ns(std::process::id() as i32));
    // The pid is the one the kill reaches: after the container goes, so does it.
    a.docker(&["rm", "-f", "ex"]);
    a.wait_until("the exec process to end", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists() || proc(pid, "stat").contains(") Z ")
    });
}

/// Now as `events --since` takes it, to the nanosecond (commits follow each other within
/// a second).
fn now_since() -> String {
    let t = chrono::Utc::now();
    format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())
}

/// The container's pause/unpause events between `since` and now.
fn pause_events(a: &Agent, since: &str, name: &str) -> String {
    let until = chrono::Utc::now().timestamp() + 1;
    a.docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={name}"),
        "--filter",
        "event=pause",
        "--filter",
        "event=unpause",
        "--format",
        "{{.Action}}",
    ])
    .stdout
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn commit_keeps_author_and_message_and_pauses() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "run",
        "-d",
        "--name",
        "cm",
        "busybox",
        "sh",
        "-c",
        "echo x > /made; sleep 300",
    ]);
    a.wait_until("the file", Duration::from_secs(10), || {
        a.try_docker(&["exec", "cm", "cat", "/made"]).code == 0
    });
    for (i, cli) in docker_clis().into_iter().enumerate() {
        let img = format!("cmimg{i}");
        let since = now_since();
        a.try_docker_with(
            cli,
            &["commit", "-a", "A <a@x>", "-m", "msg", "cm", &img],
            None,
        )
        .ok();
        assert_eq!(
            a.docker(&["inspect", "-f", "{{.Author}}|{{.Comment}}", &img])
                .stdout
                .trim(),
            "A <a@x>|msg",
            "{cli}"
        );
        let h = a
            .try_docker_with(
                cli,
                &[
                    "history",
                    "--no-trunc",
                    "--format",
                    "{{.Comment}}|{{.CreatedSince}}",
                    &img,
                ],
                None,
            )
            .ok()
            .stdout;
        assert!(
            h.lines().next().is_some_and(|l| l.starts_with("msg|")),
            "{cli}: {h}"
        );
        // Docker's default pause: frozen for the commit, thawed after.
        assert_eq!(
            pause_events(&a, &since, "cm")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["pause", "unpause"],
            "{cli}"
        );
        assert_eq!(
            a.docker(&["inspect", "-f", "{{.State.Status}}", "cm"])
                .stdout
                .trim(),
            "running"
        );
        // The committed layer holds the change.
        assert_eq!(
            a.docker(&["run", "--rm", &img, "cat", "/made"]).stdout,
            "x\n"
        );
    }
    // --pause=false leaves it running throughout; no author means none.
    let since = now_since();
    a.docker(&["commit", "--pause=false", "cm", "cmnopause"]);
    assert_eq!(pause_events(&a, &since, "cm").trim(), "");
    assert_eq!(
        a.docker(&["inspect", "-f", "{{.Author}}|{{.Comment}}", "cmnopause"])
            .stdout
            .trim(),
        "|"
    );
    // The engine sees the same image (one store): skiff's CLI lists it.
    assert!(a.cmd(&["images"]).stdout.contains("cmimg0"));
    a.docker(&["rm", "-f", "cm"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn import_records_message_and_time() {
    let a = Agent::start();
    let tar = busybox_tar().display().to_string();
    for (i, cli) in docker_clis().into_iter().enumerate() {
        let img = format!("imp{i}");
        a.try_docker_with(cli, &["import", "-m", "note", &tar, &img], None)
            .ok();
        let h = a
            .try_docker_with(
                cli,
                &[
                    "history",
                    "--format",
                    "{{.Comment}}|{{.CreatedSince}}|{{.CreatedAt}}",
                    &img,
                ],
                None,
            )
            .ok()
            .stdout;
        let line = h.trim();
        assert!(line.starts_with("note|"), "{cli}: {h}");
        assert!(!line.contains("N/A"), "{cli}: {h}");
        assert!(
            line.contains(" ago|") && !line.contains("years"),
            "{cli}: {h}"
        );
        assert_eq!(
            a.docker(&["inspect", "-f", "{{.Comment}}", &img])
                .stdout
                .trim(),
            "note"
        );
    }
    // Without a message: the default comment, still with a time.
    a.docker(&["import", &tar, "impdefault"]);
    let h = a
        .docker(&[
            "history",
            "--format",
            "{{.Comment}}|{{.CreatedSince}}",
            "impdefault",
        ])
        .stdout;
    assert!(
        h.starts_with("Imported from tarball|") && !h.contains("N/A"),
        "{h}"
    );
}
