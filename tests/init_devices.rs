//! `--init` and `--device` end to end, through skiff's own CLI and the real docker CLIs
//! against one private agent: tini as PID 1 (exit codes, SIGTERM forwarded on stop,
//! orphans reaped), host device nodes in the container and the device cgroup.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// The static init the agent mounts is on this machine (the `tini` package).
fn have_init() -> bool {
    ["/usr/bin/docker-init", "/usr/bin/tini-static"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn init_is_pid_one_and_passes_the_exit_code() {
    assert!(
        have_init(),
        "install tini (deploy/deps.sh) to run this test"
    );
    let a = Agent::start().with_busybox();
    let r = a.try_cmd(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3, "skiff: {r:?}");
    let r = a.cmd(&["run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline"]);
    assert_eq!(
        r.stdout.replace('\0', " ").trim(),
        "/sbin/docker-init -- cat /proc/1/cmdline"
    );
    // A read-only rootfs still gets the init's mount point; a tty works under it.
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--init",
        "--read-only",
        "-t",
        "busybox",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(r.code, 4, "skiff --read-only -t: {r:?}");
    for cli in docker_clis() {
        let r = a.try_docker_with(
            cli,
            &["run", "--rm", "--init", "busybox", "sh", "-c", "exit 3"],
            None,
        );
        assert_eq!(r.code, 3, "{cli}: {r:?}");
        // The user's command is the init's child, not PID 1.
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--init",
                "busybox",
                "sh",
                "-c",
                "echo $$ $PPID",
            ],
            None,
        );
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        let pids: Vec<&str> = r.stdout.split_whitespace().collect();
        assert_eq!(pids.len(), 2, "{cli}: {r:?}");
        assert_ne!(pids[0], "1", "{cli}: the command must not be PID 1");
        assert_eq!(pids[1], "1", "{cli}: its parent is the init");
        // The init is read-only in the container.
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--init",
                "busybox",
                "sh",
                "-c",
                "echo x > /sbin/docker-init",
            ],
            None,
        );
        assert_ne!(r.code, 0, "{cli}: the init must be read-only: {r:?}");
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stop_under_init_forwards_sigterm() {
    assert!(
        have_init(),
        "install tini (deploy/deps.sh) to run this test"
    );
    let a = Agent::start().with_busybox();
    // `sleep` as PID 1 ignores SIGTERM (the kernel drops signals PID 1 has no handler
    // for) and is killed after the timeout with 137; under tini it gets the SIGTERM.
    a.docker(&[
        "run", "-d", "--init", "--name", "id", "busybox", "sleep", "300",
    ]);
    a.cmd(&[
        "run", "-d", "--init", "--name", "is", "busybox", "sleep", "300",
    ]);
    let t = Instant::now();
    a.docker(&["stop", "id"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "docker stop took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    a.cmd(&["stop", "is"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "skiff stop took {:?}",
        t.elapsed()
    );
    for n in ["id", "is"] {
        let code = a.inspect(n, "{{.State.ExitCode}}");
        assert_eq!(code, "143", "{n}: exit code after SIGTERM through tini");
    }
    // Inspect shows the flag through both front ends, in Docker's shape.
    for n in ["id", "is"] {
        assert_eq!(a.inspect(n, "{{.HostConfig.Init}}"), "true");
        let r = a.docker(&["inspect", "-f", "{{.HostConfig.Init}}", n]);
        assert_eq!(r.stdout.trim(), "true");
    }
    a.cmd(&["run", "-d", "--name", "plain", "busybox", "true"]);
    let r = a.docker(&["inspect", "-f", "{{json .HostConfig.Init}}", "plain"]);
    assert_eq!(r.stdout.trim(), "null", "Init is unset without --init");
    a.cmd(&["rm", "-f", "id", "is", "plain"]);
}

/// `(sleep 1 &)`: the subshell exits at once, so `sleep 1` is an orphan that the
/// kernel hands to PID 1. Without an init, PID 1 is `sleep 300`, which never waits:
/// the orphan stays a zombie. Under tini it is reaped.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn init_reaps_orphans() {
    assert!(
        have_init(),
        "install tini (deploy/deps.sh) to run this test"
    );
    let a = Agent::start().with_busybox();
    let script = "(sleep 1 &); exec sleep 300";
    a.cmd(&[
        "run", "-d", "--name", "noinit", "busybox", "sh", "-c", script,
    ]);
    a.docker(&[
        "run", "-d", "--init", "--name", "withinit", "busybox", "sh", "-c", script,
    ]);
    a.cmd(&[
        "run",
        "-d",
        "--init",
        "--name",
        "withinit2",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let states = |name: &str| -> String {
        // Every process's "pid (comm) STATE", without the cat that reads them.
        a.cmd(&["exec", name, "sh", "-c", "cat /proc/[0-9]*/stat"])
            .stdout
            .lines()
            .filter(|l| !l.contains("(cat)"))
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The control shows the test can fail: the orphan becomes a zombie there.
    a.wait_until("a zombie without --init", Duration::from_secs(15), || {
        states("noinit").lines().any(|l| l.ends_with(" Z"))
    });
    for n in ["withinit", "withinit2"] {
        // Its orphan has exited by now (same script, started after the control's) and
        // must be gone, not a zombie: only tini and sleep 300 remain.
        a.wait_until("the orphan to be reaped", Duration::from_secs(10), || {
            let s = states(n);
            !s.lines().any(|l| l.ends_with(" Z")) && s.lines().count() == 2
        });
        let s = states(n);
        assert!(
            s.contains("(docker-init)") || s.contains("(tini"),
            "{n}: {s}"
        );
        assert!(!s.lines().any(|l| l.ends_with(" Z")), "{n}: {s}");
    }
    a.cmd(&["rm", "-f", "noinit", "withinit", "withinit2"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn device_node_appears_with_host_numbers() {
    let a = Agent::start().with_busybox();
    let script = "stat -c '%F %t:%T' /dev/mydev; echo hi > /dev/mydev && echo written";
    let r = a.cmd(&[
        "run",
        "--rm",
        "--device",
        "/dev/null:/dev/mydev",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(r.stdout, "character special file 1:3\nwritten\n");
    for cli in docker_clis() {
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--device",
                "/dev/null:/dev/mydev",
                "busybox",
                "sh",
                "-c",
                script,
            ],
            None,
        );
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "character special file 1:3\nwritten\n"),
            "{cli}: {r:?}"
        );
        // Read-only permission: the cgroup lets it be opened for reading only.
        // (loop-control is outside the default allow-list, unlike /dev/zero.)
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--device",
                "/dev/loop-control:/dev/lc:r",
                "busybox",
                "sh",
                "-c",
                ": < /dev/lc && echo readable; : > /dev/lc",
            ],
            None,
        );
        assert_ne!(r.code, 0, "{cli}: {r:?}");
        assert_eq!(r.stdout.trim(), "readable", "{cli}: {r:?}");
        assert!(r.stderr.contains("Operation not permitted"), "{cli}: {r:?}");
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--device",
                "/dev/loop-control:/dev/lc",
                "busybox",
                "sh",
                "-c",
                ": > /dev/lc && echo writable",
            ],
            None,
        );
        assert_eq!((r.code, r.stdout.trim()), (0, "writable"), "{cli}: {r:?}");
        // A missing host device: refused with its name. The docker CLI turns an error
        // that says "no such file or directory" into 127, as it does with dockerd's.
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--device",
                "/dev/skiff-nope",
                "busybox",
                "true",
            ],
            None,
        );
        assert!(matches!(r.code, 125 | 127), "{cli}: {r:?}");
        assert!(r.stderr.contains("/dev/skiff-nope"), "{cli}: {r:?}");
    }
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--device",
        "/dev/skiff-nope",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("/dev/skiff-nope"), "{r:?}");
    // Bad syntax is refused before anything is made, through either front end.
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--device",
        "/dev/null:/dev/x:rwx",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("rwx"), "{r:?}");
    let r = a.try_docker(&[
        "run",
        "--rm",
        "--device",
        "/dev/null:dev/x",
        "busybox",
        "true",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("dev/x"), "{r:?}");
    // A directory gives every device below it (ptmx lives in /dev/pts).
    let r = a.cmd(&[
        "run",
        "--rm",
        "--device",
        "/dev/pts:/dev/hostpts",
        "busybox",
        "stat",
        "-c",
        "%t:%T",
        "/dev/hostpts/ptmx",
    ]);
    assert_eq!(r.stdout.trim(), "5:2");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn device_cgroup_denies_what_was_not_given() {
    let a = Agent::start().with_busybox();
    // Root with CAP_MKNOD may make a node for loop-control (10:237), but the cgroup
    // refuses opening it: only the defaults and given devices are allowed.
    let script = "mknod /tmp/l c 10 237 && : > /tmp/l && echo opened";
    for cli in docker_clis() {
        let r = a.try_docker_with(cli, &["run", "--rm", "busybox", "sh", "-c", script], None);
        assert_ne!(r.code, 0, "{cli}: {r:?}");
        assert!(r.stderr.contains("Operation not permitted"), "{cli}: {r:?}");
        // An allow rule for it lifts the refusal.
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "--device-cgroup-rule",
                "c 10:237 rwm",
                "busybox",
                "sh",
                "-c",
                script,
            ],
            None,
        );
        assert_eq!((r.code, r.stdout.trim()), (0, "opened"), "{cli}: {r:?}");
    }
    let r = a.try_cmd(&["run", "--rm", "busybox", "sh", "-c", script]);
    assert!(r.stderr.contains("Operation not permitted"), "{r:?}");
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--device-cgroup-rule",
        "c 10:237 rw",
        "busybox",
        "sh",
        "-c",
        ": > /dev/null; mknod /tmp/l c 10 237 && : > /tmp/l && echo opened",
    ]);
    assert_eq!((r.code, r.stdout.trim()), (0, "opened"), "{r:?}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn devices_show_in_inspect_through_both_front_ends() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "create",
        "--name",
        "dd",
        "--device",
        "/dev/null:/dev/mydev:rw",
        "busybox",
    ]);
    a.cmd(&["create", "--name", "ds", "--device", "/dev/zero", "busybox"]);
    let want = |n: &str| match n {
        "dd" => {
            r#"[{"PathOnHost":"/dev/null","PathInContainer":"/dev/mydev","CgroupPermissions":"rw"}]"#
        }
        _ => {
            r#"[{"PathOnHost":"/dev/zero","PathInContainer":"/dev/zero","CgroupPermissions":"rwm"}]"#
        }
    };
    for n in ["dd", "ds"] {
        let parse = |s: &str| -> serde_json::Value {
            serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
        };
        assert_eq!(
            parse(&a.inspect(n, "{{json .HostConfig.Devices}}")),
            parse(want(n)),
            "skiff inspect {n}"
        );
        for cli in docker_clis() {
            let r = a.try_docker_with(
                cli,
                &["inspect", "-f", "{{json .HostConfig.Devices}}", n],
                None,
            );
            assert_eq!(parse(&r.stdout), parse(want(n)), "{cli} inspect {n}: {r:?}");
        }
    }
    a.cmd(&["rm", "-f", "dd", "ds"]);
}

/// agent.yaml `init_path` picks the init; a dynamically linked one is refused at create
/// with a message naming it, through both front ends.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn configured_init_path_must_be_static() {
    assert!(
        have_init(),
        "install tini (deploy/deps.sh) to run this test"
    );
    let mut a = Agent::start().with_busybox();
    let dynamic = std::env::current_exe().expect("test binary (dynamically linked)");
    a.restart_with_config(&format!("init_path: {}\n", dynamic.display()));
    let r = a.try_cmd(&["run", "--rm", "--init", "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("dynamically linked"), "{r:?}");
    let r = a.try_docker(&["run", "--rm", "--init", "busybox", "true"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("init_path"), "{r:?}");
    // Without --init nothing changes.
    a.cmd(&["run", "--rm", "busybox", "true"]);
    a.restart_with_config("init_path: /usr/bin/tini-static\n");
    let r = a.try_docker(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 5"]);
    assert_eq!(r.code, 5, "{r:?}");
}
