//! End-to-end tests of the single-host engine: images from tarballs, the container
//! lifecycle, exit codes, exec, logs, re-adoption after `kill -9` of the agent.

mod common;
use common::Agent;
use std::time::Duration;

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn run_exit_codes_match_docker() {
    let a = Agent::start().with_busybox();
    let r = a.try_cmd(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "hello\n"));
    assert_eq!(
        a.try_cmd(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
            .code,
        3
    );
    let r = a.try_cmd(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    assert!(
        r.stderr.contains("executable file not found"),
        "{}",
        r.stderr
    );
    assert_eq!(
        a.try_cmd(&["run", "--rm", "busybox", "/etc/passwd"]).code,
        126
    );
    let r = a.try_cmd(&["run", "--rm", "nosuchimage"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("Unable to find image"), "{}", r.stderr);
    // --rm removed every one of them, including those that failed to start.
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn lifecycle_create_start_stop_rm() {
    let a = Agent::start().with_busybox();
    let id = a
        .cmd(&["create", "--name", "svc", "busybox", "sleep", "300"])
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(a.inspect("svc", "{{.State.Status}}"), "created");
    a.cmd(&["start", &id[..8]]);
    assert_eq!(a.inspect("svc", "{{.State.Running}}"), "true");
    let pid: i32 = a.inspect("svc", "{{.State.Pid}}").parse().expect("pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Duplicate names and removing a running container are refused.
    let dup = a.try_cmd(&["create", "--name", "svc", "busybox", "true"]);
    assert_eq!(dup.code, 125);
    assert!(dup.stderr.contains("already in use"), "{}", dup.stderr);
    let rm = a.try_cmd(&["rm", "svc"]);
    assert_ne!(rm.code, 0);
    assert!(
        rm.stderr.contains("cannot remove a running container"),
        "{}",
        rm.stderr
    );
    // sleep as PID 1 ignores SIGTERM: stop falls back to SIGKILL after -t.
    a.cmd(&["stop", "-t", "1", "svc"]);
    assert_eq!(
        a.inspect("svc", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    a.cmd(&["rm", "svc"]);
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
    assert!(
        !a.root.join("containers").join(&id).exists(),
        "container directory left behind"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn exec_logs_and_env() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "app",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo started; echo oops >&2; sleep 300",
    ]);
    a.wait_until("log line", Duration::from_secs(5), || {
        a.try_cmd(&["logs", "app"]).stdout.contains("started")
    });
    let logs = a.cmd(&["logs", "app"]);
    assert_eq!(logs.stdout, "started\n");
    assert_eq!(logs.stderr, "oops\n");
    let r = a.cmd(&["exec", "app", "sh", "-c", "echo $GREETING; pwd"]);
    assert_eq!(r.stdout, "hi\n/tmp\n");
    assert_eq!(a.try_cmd(&["exec", "app", "sh", "-c", "exit 7"]).code, 7);
    assert_eq!(
        a.cmd(&["exec", "-u", "www-data", "app", "id", "-u"]).stdout,
        "33\n"
    );
    assert_eq!(
        a.cmd_stdin(&["exec", "-i", "app", "cat"], b"piped\n")
            .stdout,
        "piped\n"
    );
    assert_eq!(a.try_cmd(&["exec", "app", "nope"]).code, 127);
    // Supplementary groups start with the primary group, as Docker's do.
    assert_eq!(
        a.cmd(&["exec", "app", "id"]).stdout,
        "uid=0(root) gid=0(root) groups=0(root)\n"
    );
    assert_eq!(
        a.cmd(&["run", "--rm", "-u", "1000:1000", "busybox", "id"])
            .stdout,
        "uid=1000 gid=1000 groups=1000\n"
    );
    let top = a.cmd(&["top", "app"]).stdout;
    assert!(top.contains("sleep 300"), "{top}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stdin_and_output_streams() {
    let a = Agent::start().with_busybox();
    let r = a.cmd_stdin(
        &[
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "cat; echo err >&2",
        ],
        b"line1\nline2\n",
    );
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "line1\nline2\n");
    assert_eq!(r.stderr, "err\n");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn defaults_are_confined_like_docker() {
    let a = Agent::start().with_busybox();
    let r = a.cmd(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "grep CapBnd /proc/self/status; hostname; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(
        r.stdout.contains("00000000a80425fb"),
        "default capability set: {}",
        r.stdout
    );
    // Privileged operations are refused by capabilities and seccomp.
    assert_ne!(
        a.try_cmd(&["run", "--rm", "busybox", "mount", "-t", "tmpfs", "t", "/mnt"])
            .code,
        0
    );
    assert_ne!(
        a.try_cmd(&["run", "--rm", "busybox", "unshare", "-u", "true"])
            .code,
        0
    );
    // Masked /proc paths read as empty (this host has /proc/timer_list).
    assert_eq!(
        a.cmd(&["run", "--rm", "busybox", "cat", "/proc/timer_list"])
            .stdout,
        ""
    );
    let r = a.cmd(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(r.stdout.contains("0000000000000000"), "{}", r.stdout);
    // A read-only rootfs refuses writes; the default one accepts them.
    assert_ne!(
        a.try_cmd(&["run", "--rm", "--read-only", "busybox", "touch", "/x"])
            .code,
        0
    );
    a.cmd(&["run", "--rm", "busybox", "touch", "/x"]);
    // New pid namespace: the command is PID 1.
    assert_eq!(
        a.cmd(&["run", "--rm", "busybox", "sh", "-c", "echo $$"])
            .stdout,
        "1\n"
    );
}

/// The seccomp program is compiled by the first container and kept in the exec root;
/// containers and execs after it load the kept program, and it still confines them.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn seccomp_program_is_compiled_once_and_still_applied() {
    let a = Agent::start().with_busybox();
    let cache = a.exec_root.join("seccomp");
    let programs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    // User namespaces: refused by the default profile (EPERM), allowed without it.
    let unshare = |extra: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "unshare", "-U", "true"]);
        let r = a.try_cmd(&args);
        if r.code != 0 {
            assert!(
                r.stderr.contains("Operation not permitted"),
                "{args:?}: {r:?}"
            );
        }
        r.code
    };
    assert_ne!(unshare(&[]), 0, "first container: compiled filter applied");
    let first = programs();
    assert_eq!(first.len(), 1, "{first:?}");
    let stored = std::fs::read(&first[0]).expect("program");
    assert_ne!(unshare(&[]), 0, "second container: kept filter applied");
    let r = a.cmd(&[
        "run",
        "--rm",
        "busybox",
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    ]);
    assert_eq!(
        r.stdout.split_whitespace().nth(1),
        Some("2"),
        "{}",
        r.stdout
    );
    assert_eq!(programs(), first, "no second compile of the same profile");
    assert_eq!(std::fs::read(&first[0]).expect("program"), stored);
    // An exec gets the container's filter from the same file.
    a.cmd(&["run", "-d", "--name", "sc", "busybox", "sleep", "60"]);
    let r = a.try_cmd(&["exec", "sc", "unshare", "-U", "true"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Operation not permitted"), "{r:?}");
    let r = a.cmd(&["exec", "sc", "grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(
        r.stdout.split_whitespace().nth(1),
        Some("2"),
        "{}",
        r.stdout
    );
    a.cmd(&["rm", "-f", "sc"]);
    // Other capabilities make another profile, compiled and kept beside the first.
    assert_eq!(unshare(&["--cap-add", "SYS_ADMIN"]), 0);
    assert_eq!(programs().len(), 2);
    assert_eq!(unshare(&["--security-opt", "seccomp=unconfined"]), 0);
    // A damaged file is never loaded: the shim compiles again and rewrites it.
    std::fs::write(&first[0], &stored[..stored.len() - 8]).expect("truncate");
    assert_ne!(unshare(&[]), 0, "damaged cache: compiled filter applied");
    assert_eq!(std::fs::read(&first[0]).expect("program"), stored);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn agent_kill9_leaves_containers_running_and_readopts() {
    let mut a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "long",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    a.wait_until("container output", Duration::from_secs(5), || {
        a.try_cmd(&["logs", "long"]).stdout.contains("up")
    });
    let pid = a.inspect("long", "{{.State.Pid}}");
    // The container's parent is its shim, in a process group of its own: a signal to
    // the agent's group (Ctrl-C in its terminal) does not reach it.
    let stat = |p: &str| -> Vec<String> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).expect("stat");
        let after = &s[s.rfind(')').expect("comm") + 2..];
        after.split(' ').map(String::from).collect()
    };
    let shim = stat(&pid)[1].clone();
    assert!(
        std::fs::read_to_string(format!("/proc/{shim}/cmdline"))
            .expect("cmdline")
            .contains("shim"),
        "parent {shim} of {pid} is not a shim"
    );
    let own_group = std::process::id().to_string();
    let group_of = |p: &str| stat(p)[2].clone();
    assert_eq!(group_of(&shim), shim, "shim leads its own process group");
    assert_ne!(group_of(&shim), group_of(&own_group));
    a.kill9();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container died with the agent"
    );
    a.restart();
    assert_eq!(
        a.inspect("long", "{{.State.Status}} {{.State.Pid}}"),
        format!("running {pid}")
    );
    assert_eq!(a.cmd(&["exec", "long", "echo", "still"]).stdout, "still\n");
    a.cmd(&["stop", "long"]);
    assert_eq!(a.inspect("long", "{{.State.ExitCode}}"), "42");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn exit_while_agent_down_is_recorded() {
    let mut a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "short",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 9",
    ]);
    a.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    a.restart();
    a.wait_until("exit recorded", Duration::from_secs(5), || {
        a.inspect("short", "{{.State.Status}}") == "exited"
    });
    assert_eq!(a.inspect("short", "{{.State.ExitCode}}"), "9");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn restart_policies() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    a.wait_until("two restarts then stop", Duration::from_secs(10), || {
        a.inspect("flaky", "{{.State.Status}} {{.RestartCount}}") == "exited 2"
    });
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 0",
    ]);
    a.wait_until("restarted at least twice", Duration::from_secs(10), || {
        a.inspect("always", "{{.RestartCount}}")
            .parse::<u32>()
            .unwrap_or(0)
            >= 2
    });
    a.cmd(&["stop", "always"]);
    let n = a.inspect("always", "{{.RestartCount}}");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        a.inspect("always", "{{.RestartCount}} {{.State.Status}}"),
        format!("{n} exited"),
        "stop must end restarts"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn images_tag_rmi_and_inspect() {
    let a = Agent::start().with_busybox();
    let images = a.cmd(&["images"]).stdout;
    assert!(
        images.starts_with("REPOSITORY   TAG       IMAGE ID"),
        "{images}"
    );
    a.cmd(&["tag", "busybox", "example.com/team/bb:v1"]);
    let q = a.cmd(&["images", "-q"]).stdout;
    assert_eq!(q.lines().count(), 1, "one image, two tags: {q}");
    let json = a.cmd(&["images", "--format", "json"]).stdout;
    assert_eq!(json.lines().count(), 2);
    a.cmd(&["create", "--name", "user", "busybox", "true"]);
    let r = a.try_cmd(&["rmi", "example.com/team/bb:v1"]);
    assert_eq!(
        r.code, 0,
        "untagging one of two tags is allowed: {}",
        r.stderr
    );
    let r = a.try_cmd(&["rmi", "busybox"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("being used by a container"),
        "{}",
        r.stderr
    );
    a.cmd(&["rm", "user"]);
    let r = a.cmd(&["rmi", "busybox"]).stdout;
    assert!(r.contains("Deleted: sha256:"), "{r}");
    assert_eq!(a.cmd(&["images", "-q"]).stdout, "");
    // Layers and snapshots went with the last image.
    assert_eq!(
        std::fs::read_dir(a.root.join("snapshots"))
            .expect("snapshots")
            .count(),
        0
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn inspect_templates() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run", "-d", "--name", "tt", "-l", "tier=web", "busybox", "sleep", "300",
    ]);
    assert_eq!(a.inspect("tt", "{{.Name}}"), "/tt");
    assert_eq!(a.inspect("tt", "{{index .Config.Labels \"tier\"}}"), "web");
    assert_eq!(
        a.inspect("tt", "{{json .Config.Cmd}}"),
        "[\"sleep\",\"300\"]"
    );
    let ps = a.cmd(&["ps", "--format", "{{.Names}}|{{.Image}}"]).stdout;
    assert_eq!(ps, "tt|busybox\n");
}

#[test]
fn missing_agent_is_a_clear_error() {
    let r = std::process::Command::new(common::bin())
        .args(["--host", "unix:///tmp/no-such-skiff.sock", "ps"])
        .output()
        .expect("run");
    assert_eq!(r.status.code(), Some(125));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("Is the agent running?") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn events_attach_wait_rename_and_info() {
    let a = Agent::start().with_busybox();
    let since = (chrono_like_now() - 1).to_string();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "ev1",
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 0.5; echo two; exit 4",
    ]);
    // attach follows the output of a running container and ends with its exit code.
    let r = a.try_cmd(&["attach", "ev1"]);
    assert_eq!(
        r.code,
        4,
        "attach exits with the container's code: {r:?}",
        r = (r.code, &r.stdout, &r.stderr)
    );
    assert_eq!(a.cmd(&["wait", "ev1"]).stdout, "4\n");
    // logs -f of an exited container prints everything and returns.
    assert_eq!(a.cmd(&["logs", "-f", "ev1"]).stdout, "one\ntwo\n");
    assert_eq!(a.cmd(&["logs", "--tail", "1", "ev1"]).stdout, "two\n");
    a.cmd(&["rename", "ev1", "ev2"]);
    assert_eq!(a.inspect("ev2", "{{.Name}}"), "/ev2");
    a.cmd(&["rm", "ev2"]);
    // The event stream recorded the lifecycle, filtered by type.
    let until = (chrono_like_now() + 1).to_string();
    let ev = a
        .cmd(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=container",
        ])
        .stdout;
    for action in ["create", "start", "die", "rename", "destroy"] {
        assert!(
            ev.contains(&format!("container {action} ")),
            "missing {action} in:\n{ev}"
        );
    }
    assert!(!ev.contains(" image "), "filter leaked other types:\n{ev}");
    let json = a
        .cmd(&[
            "events", "--since", &since, "--until", &until, "--format", "json",
        ])
        .stdout;
    assert!(json
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    // info reports the host and, on stderr, WARNING lines for what is missing.
    let info = a.cmd(&["info"]);
    assert!(
        info.stdout.contains("Cgroup Driver: cgroupfs")
            && info.stdout.contains("Storage Driver: overlay2"),
        "{}",
        info.stdout
    );
    assert!(
        info.stderr.lines().all(|l| l.starts_with("WARNING")),
        "{}",
        info.stderr
    );
    assert!(a.cmd(&["version"]).stdout.contains("Server: Skiff Agent"));
}

fn chrono_like_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A shim announces the exit before its clean-up (libcontainer state, cgroups, the
/// rootfs unmount, which syncs the upper filesystem): a start right after an exit must
/// wait for that clean-up, and a removal deletes the files once it is done.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn starts_right_after_exit_and_removal_leave_nothing_behind() {
    let a = Agent::start().with_busybox();
    a.cmd(&["create", "--name", "again", "busybox", "echo", "ran"]);
    for i in 0..10 {
        let r = a.try_cmd(&["start", "-a", "again"]);
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "ran\n"),
            "start {i}: {}",
            r.stderr
        );
    }
    a.cmd(&["rm", "again"]);
    for _ in 0..10 {
        assert_eq!(a.try_cmd(&["run", "--rm", "busybox", "true"]).code, 0);
    }
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
    // The deletions run in the background once each shim has ended.
    let exec_containers = a.exec_root.join("containers");
    let mut left = (String::new(), 0);
    for _ in 0..100 {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mounted = mounts
            .lines()
            .filter(|l| l.contains(&*exec_containers.to_string_lossy()))
            .collect::<Vec<_>>()
            .join("\n");
        let count = |d: &std::path::Path| std::fs::read_dir(d).map_or(0, |d| d.count());
        left = (
            mounted,
            count(&exec_containers) + count(&a.root.join("containers")),
        );
        if left == (String::new(), 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        left,
        (String::new(), 0),
        "mounts or directories left behind"
    );
}

/// The agent keeps standby shims (`skiff-shim --standby`, node-agent/src/shimpool.rs):
/// a start takes one, which then shows its run's command line like a freshly spawned
/// shim; standbys killed by someone else are skipped (the start spawns a shim) and
/// replaced.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn standby_shims_serve_starts_and_dead_ones_are_replaced() {
    let a = Agent::start().with_busybox();
    let agent = a.pid().expect("agent pid").to_string();
    // (pid, command line with spaces) of the agent's skiff-shim children.
    let shims = || -> Vec<(String, String)> {
        let mut out = vec![];
        for e in std::fs::read_dir("/proc").expect("proc").flatten() {
            let p = e.path();
            let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split(' ').nth(1));
            if ppid != Some(agent.as_str()) {
                continue;
            }
            let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("skiff-shim") {
                out.push((e.file_name().to_string_lossy().into_owned(), cmd));
            }
        }
        out
    };
    let standbys = || {
        shims()
            .into_iter()
            .filter(|(_, c)| c.contains("--standby"))
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
    };
    a.wait_until("two standby shims", Duration::from_secs(10), || {
        standbys().len() == 2
    });
    let id = a
        .cmd(&["run", "-d", "busybox", "sleep", "60"])
        .stdout
        .trim()
        .to_string();
    let task = format!(
        "--task {}",
        a.exec_root.join("containers").join(&id).display()
    );
    assert!(
        shims().iter().any(|(_, c)| c.contains(&task)),
        "no shim shows {task}: {:?}",
        shims()
    );
    a.wait_until(
        "the taken standby replaced",
        Duration::from_secs(10),
        || standbys().len() == 2,
    );
    for p in standbys() {
        let _ = std::process::Command::new("kill").args(["-9", &p]).status();
    }
    let r = a.try_cmd(&["run", "--rm", "busybox", "echo", "ok"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "ok\n"), "{}", r.stderr);
    a.wait_until("standbys replaced", Duration::from_secs(10), || {
        standbys().len() == 2
    });
    a.cmd(&["rm", "-f", &id]);
}
