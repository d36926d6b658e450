//! End-to-end tests of container log rotation (`--log-opt max-size/max-file`, agent.yaml
//! `log_opts`), `skiff logs` across rotated files, and the agent's own log settings
//! (`--log-level`, `--log-format`, agent.yaml `log_level`/`log_format`).

mod common;
use common::Agent;
use std::path::PathBuf;

fn log_files(a: &Agent, name: &str) -> Vec<(String, u64)> {
    let id = a.inspect(name, "{{.Id}}");
    let dir = a.root.join("containers").join(id);
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("container dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .map(|e| {
            let len = e.metadata().expect("stat").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    files.sort();
    files
}

/// The numbers of `prefix N` lines, asserting nothing else is there.
fn numbers(out: &str, prefix: &str) -> Vec<usize> {
    out.lines()
        .map(|l| {
            l.strip_prefix(prefix)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?} in:\n{out}"))
        })
        .collect()
}

fn assert_consecutive(ns: &[usize], last: usize) {
    assert_eq!(ns.last(), Some(&last), "{ns:?}");
    for w in ns.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or reorder in {ns:?}");
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn rotation_bounds_files_and_logs_reads_the_tail_in_order() {
    let a = Agent::start().with_busybox();
    // ~70 bytes a record, 400 records: ~28 KB through 2 KiB files.
    a.cmd(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 400 ]; do echo \"line $i\"; i=$((i+1)); done",
    ]);
    let files = log_files(&a, "chatty");
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        ["container.log", "container.log.1", "container.log.2"],
        "max-file=3 keeps three files"
    );
    for (n, len) in &files {
        assert!(*len <= 2048, "{n} is {len} bytes, over max-size");
    }
    let out = a.cmd(&["logs", "chatty"]).stdout;
    let ns = numbers(&out, "line ");
    assert_consecutive(&ns, 399);
    assert!(ns[0] > 0, "the oldest lines should have been rotated away");
    assert!(
        ns.len() > 40,
        "three files hold more than {} lines",
        ns.len()
    );
    let tail = a.cmd(&["logs", "--tail", "5", "chatty"]).stdout;
    assert_eq!(numbers(&tail, "line "), vec![395, 396, 397, 398, 399]);
    assert_eq!(
        a.inspect("chatty", "{{json .HostConfig.LogConfig}}"),
        r#"{"Config":{"max-file":"3","max-size":"2k"},"Type":"json-file"}"#
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn logs_follow_reads_across_rotations() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=4",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; i=0; while [ $i -lt 120 ]; do echo \"n $i\"; i=$((i+1)); sleep 0.01; done",
    ]);
    // Follows until the container exits: every line once, in order, through about
    // eight rotations.
    let out = a.cmd(&["logs", "-f", "slow"]).stdout;
    assert_consecutive(&numbers(&out, "n "), 119);
    assert!(numbers(&out, "n ")[0] == 0, "follow started late:\n{out}");
    assert!(
        log_files(&a, "slow").len() == 4,
        "{:?}",
        log_files(&a, "slow")
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn bad_log_opts_are_refused_naming_the_option() {
    let a = Agent::start().with_busybox();
    for (opt, want) in [
        ("max-size=abc", "max-size=\"abc\""),
        ("max-size=0", "max-size=\"0\""),
        ("max-file=0", "max-file=\"0\""),
        ("max-file=many", "max-file=\"many\""),
        ("compress=true", "unknown log opt 'compress'"),
        ("max-size", "KEY=VALUE"),
    ] {
        let r = a.try_cmd(&["create", "--log-opt", opt, "busybox", "true"]);
        assert_eq!(r.code, 125, "{opt}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{opt}: {}", r.stderr);
    }
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "", "nothing created");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn agent_yaml_log_opts_are_defaults_under_log_opt() {
    let mut a = Agent::start().with_busybox();
    a.cmd(&["create", "--name", "builtin", "busybox", "true"]);
    assert_eq!(
        a.inspect("builtin", "{{json .HostConfig.LogConfig.Config}}"),
        r#"{"max-file":"3","max-size":"10m"}"#,
        "built-in defaults"
    );
    a.restart_with_config("log_opts:\n  max-size: 1m\n  max-file: 2\n");
    a.cmd(&["create", "--name", "fromfile", "busybox", "true"]);
    a.cmd(&[
        "create",
        "--name",
        "override",
        "--log-opt",
        "max-file=5",
        "busybox",
        "true",
    ]);
    assert_eq!(
        a.inspect("fromfile", "{{json .HostConfig.LogConfig.Config}}"),
        r#"{"max-file":"2","max-size":"1m"}"#
    );
    assert_eq!(
        a.inspect("override", "{{json .HostConfig.LogConfig.Config}}"),
        r#"{"max-file":"5","max-size":"1m"}"#
    );
    // Recorded at create: the older container keeps what it was created with.
    assert_eq!(
        a.inspect(
            "builtin",
            "{{index .HostConfig.LogConfig.Config \"max-size\"}}"
        ),
        "10m"
    );
}

/// Runs `skiff agent` with `args` and a fresh --root/--exec-root/--host; it must fail
/// before creating anything. Returns its stderr.
fn agent_refuses(args: &[&str], yaml: &str) -> String {
    common::require_root();
    let dir = tempfile::Builder::new()
        .prefix("sk")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(&cfg, yaml).expect("agent.yaml");
    let root: PathBuf = dir.path().join("root");
    let out = std::process::Command::new(common::bin())
        .arg("agent")
        .args(args)
        .arg("--root")
        .arg(&root)
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .arg("--host")
        .arg(format!("unix://{}", dir.path().join("s.sock").display()))
        .arg("--config")
        .arg(&cfg)
        .env_remove("SKIFF_LOG")
        .output()
        .expect("run agent");
    assert_ne!(out.status.code(), Some(0), "agent started with {args:?}");
    assert!(!root.exists(), "agent created its root before refusing");
    common::cleanup_network(&root);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn agent_refuses_bad_log_settings() {
    let e = agent_refuses(&["--log-level", "verbose"], "");
    assert!(e.contains("invalid log level \"verbose\""), "{e}");
    let e = agent_refuses(&[], "log_level: loud\n");
    assert!(e.contains("invalid log level \"loud\""), "{e}");
    let e = agent_refuses(&[], "log_format: xml\n");
    assert!(e.contains("invalid log format \"xml\""), "{e}");
    let e = agent_refuses(&[], "log_opts: {max-size: huge}\n");
    assert!(
        e.contains("log_opts: invalid log opt max-size=\"huge\""),
        "{e}"
    );
    // The flag's values are checked by clap before anything runs.
    let out = std::process::Command::new(common::bin())
        .args(["--log-format", "xml", "version"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: text, json"));
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn agent_logs_json_when_configured() {
    let mut a = Agent::start();
    let before = a.log().len();
    a.restart_with_config("log_format: json\n");
    let after = a.log()[before..].to_string();
    let lines: Vec<serde_json::Value> = after
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "agent listening" && l["level"] == "INFO"),
        "{after}"
    );
    a.cmd(&["version"]);
}
