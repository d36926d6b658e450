//! End-to-end tests of installing and upgrading: `deploy/install.sh` into a staging
//! directory (twice: the second run must change nothing), the systemd unit it writes,
//! the deploy files (cloud-init, Vagrant), and an agent upgrade that leaves running
//! containers alone (what `systemctl restart skiff` does with `KillMode=process`).

mod common;
use common::Agent;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Install {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs deploy/install.sh with the binary under test into `destdir`.
fn install(destdir: &Path, extra: &[&str]) -> Install {
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .arg("--bin")
        .arg(common::bin())
        .arg("--destdir")
        .arg(destdir)
        .arg("--no-packages")
        .args(extra)
        .output()
        .expect("run install.sh");
    Install {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .expect("mtime")
}

/// `Key=Value` lines of a unit file, by key (the last one wins, as in systemd).
fn directives(unit: &str) -> HashMap<String, String> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

const STAGED: &[(&str, u32)] = &[
    ("usr/local/bin/skiff", 0o755),
    ("usr/local/bin/skiff-shim", 0o755),
    ("etc/skiff/agent.yaml", 0o600),
    ("etc/systemd/system/skiff.service", 0o644),
    ("usr/share/bash-completion/completions/skiff", 0o644),
    ("usr/local/share/zsh/site-functions/_skiff", 0o644),
    ("usr/share/fish/vendor_completions.d/skiff.fish", 0o644),
    ("usr/local/share/man/man1/skiff-run.1", 0o644),
    ("usr/local/share/man/man1/skiff-agent.1", 0o644),
];

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn install_twice_into_a_destdir_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let first = install(d, &["--listen-addr", "192.0.2.10"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("installed /usr/local/bin/skiff"),
        "{}",
        first.stdout
    );
    assert!(!first.stdout.contains("no changes"), "{}", first.stdout);
    for (f, m) in STAGED {
        assert_eq!(mode(&d.join(f)), *m, "{f}");
    }
    assert!(
        std::fs::read(d.join("usr/local/bin/skiff")).expect("bin")
            == std::fs::read(common::bin()).expect("bin"),
        "installed binary differs"
    );
    assert!(
        std::fs::read(d.join("usr/local/bin/skiff-shim")).expect("shim")
            == std::fs::read(common::shim_bin()).expect("shim"),
        "installed shim differs"
    );
    // The next command for a manager: how workers join.
    assert!(
        first.stdout.contains("skiff cluster join-token -q worker"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("--join 192.0.2.10:2377"),
        "{}",
        first.stdout
    );

    // agent.yaml: readable by the agent, with the cluster settings given.
    let cfg = d.join("etc/skiff/agent.yaml");
    let file = skiff_agent::config::FileConfig::load(&cfg, true).expect("agent.yaml loads");
    assert_eq!(file.listen_addr.as_deref(), Some("192.0.2.10"));
    assert_eq!(file.join, None);
    assert_eq!(file.root.as_deref(), Some(Path::new("/var/lib/skiff")));
    let opts = skiff_agent::config::log_opts(file.log_opts).expect("log_opts valid");
    assert_eq!(opts.get("max-size").map(String::as_str), Some("10m"));
    assert_eq!(opts.get("max-file").map(String::as_str), Some("3"));

    // The unit: containers survive agent restarts, the agent is protected from OOM.
    let unit_path = d.join("etc/systemd/system/skiff.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let dir_ = directives(&unit);
    for (k, v) in [
        (
            "ExecStart",
            "/usr/local/bin/skiff agent --config /etc/skiff/agent.yaml",
        ),
        ("Delegate", "yes"),
        ("KillMode", "process"),
        ("OOMScoreAdjust", "-500"),
        ("Restart", "always"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(dir_.get(k).map(String::as_str), Some(v), "{k} in\n{unit}");
    }
    verify_unit(&unit, d);

    let before: Vec<SystemTime> = STAGED.iter().map(|(f, _)| mtime(&d.join(f))).collect();
    let second = install(d, &["--listen-addr", "192.0.2.10"]);
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains("Nothing to do") && second.stdout.contains("(no changes)"),
        "{}",
        second.stdout
    );
    assert!(!second.stdout.contains("  installed"), "{}", second.stdout);
    let after: Vec<SystemTime> = STAGED.iter().map(|(f, _)| mtime(&d.join(f))).collect();
    assert_eq!(before, after, "the second run rewrote files");
}

/// `systemd-analyze verify` on the unit, its ExecStart and man pages pointed into the
/// staging tree (the tool checks that both exist). Skipped where the tool is missing.
fn verify_unit(unit: &str, destdir: &Path) {
    let Ok(o) = Command::new("systemd-analyze").arg("--version").output() else {
        return;
    };
    if !o.status.success() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let staged = unit.replace(
        "/usr/local/bin/skiff",
        &destdir.join("usr/local/bin/skiff").to_string_lossy(),
    );
    let p = dir.path().join("skiff.service");
    std::fs::write(&p, staged).expect("write unit");
    // Documentation=man:skiff-agent(1) must name a page install.sh installed.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .env("MANPATH", destdir.join("usr/local/share/man"))
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    // Warnings about units this one orders itself after are the host's business.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("skiff.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn install_for_a_joining_node_and_an_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let r = install(d, &["--join", "192.0.2.10"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--join needs --token"), "{}", r.stderr);
    let r = install(
        d,
        &["--join", "192.0.2.10:2377", "--token", "SWMTKN-1-abc-def"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("skiff node ls"), "{}", r.stdout);
    let cfg = d.join("etc/skiff/agent.yaml");
    let file = skiff_agent::config::FileConfig::load(&cfg, true).expect("agent.yaml loads");
    assert_eq!(file.join.as_deref(), Some("192.0.2.10:2377"));
    assert_eq!(file.join_token.as_deref(), Some("SWMTKN-1-abc-def"));
    assert_eq!(mode(&cfg), 0o600, "the token is a secret");

    // A new binary is an upgrade: only the binary changes; agent.yaml is kept. The
    // skiff-shim beside --bin is installed with it (here: the same as before).
    let newer = dir.path().join("skiff-newer");
    std::fs::copy(common::bin(), &newer).expect("copy");
    std::fs::copy(common::shim_bin(), dir.path().join("skiff-shim")).expect("copy shim");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newer)
        .expect("open");
    std::io::Write::write_all(&mut f, b"\0newer").expect("append");
    drop(f);
    let config_before = std::fs::read(&cfg).expect("cfg");
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(["--bin", &newer.to_string_lossy()])
        .args(["--destdir", &d.to_string_lossy(), "--no-packages"])
        .output()
        .expect("install.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("installed /usr/local/bin/skiff"), "{text}");
    assert!(text.contains("Done: 1 change(s)."), "{text}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), config_before);
    assert_eq!(
        std::fs::read(d.join("usr/local/bin/skiff")).expect("bin"),
        std::fs::read(&newer).expect("bin")
    );

    // Only skiff, no skiff-shim beside it: refused, rather than leaving the agent beside
    // a skiff-shim of another build.
    let lonely = tempfile::tempdir().expect("tempdir");
    let alone = lonely.path().join("skiff");
    std::fs::copy(common::bin(), &alone).expect("copy");
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(["--bin", &alone.to_string_lossy()])
        .args(["--destdir", &d.to_string_lossy(), "--no-packages"])
        .output()
        .expect("install.sh");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skiff-shim") && err.contains("--shim"),
        "{err}"
    );
    // ... and accepted with --shim.
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .args(["--bin", &alone.to_string_lossy()])
        .args(["--shim", &common::shim_bin().to_string_lossy()])
        .args(["--destdir", &d.to_string_lossy(), "--no-packages"])
        .output()
        .expect("install.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn install_refuses_bad_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = install(dir.path(), &["--frobnicate"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("unknown option: --frobnicate"),
        "{}",
        r.stderr
    );
    let r = install(dir.path(), &["--token", "x"]);
    assert!(
        r.stderr.contains("--token is only used with --join"),
        "{}",
        r.stderr
    );
    let help = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .arg("--help")
        .output()
        .expect("help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--destdir DIR"));
}

#[test]
fn cloud_init_and_vagrant_files_are_valid() {
    for (f, role) in [
        ("deploy/cloud-init/manager.yaml", "manager"),
        ("deploy/cloud-init/worker.yaml", "worker"),
    ] {
        let text = std::fs::read_to_string(repo().join(f)).expect(f);
        assert!(
            text.starts_with("#cloud-config\n"),
            "{f}: cloud-init needs the header"
        );
        let v = skiff_stack::Document::parse(&text, std::path::Path::new(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .unwrap_or_else(|| panic!("{f}: empty"))
            .to_json();
        let runcmd = v["runcmd"]
            .as_array()
            .unwrap_or_else(|| panic!("{f}: runcmd"));
        let cmds = skiff_stack::to_yaml_string(&serde_json::Value::Array(runcmd.clone()));
        // install.sh through the provisioning script Vagrant and deploy/vm-cluster share.
        assert!(
            cmds.contains("deploy/vm/provision.sh"),
            "{f}: runs deploy/vm/provision.sh"
        );
        assert!(v["packages"].as_array().is_some(), "{f}: packages");
        if role == "worker" {
            assert!(
                text.contains("MANAGER_ADDR") && text.contains("JOIN_TOKEN"),
                "{f}"
            );
            assert!(cmds.contains("--join"), "{f}");
        } else {
            assert!(cmds.contains("provision.sh manager"), "{f}");
        }
    }
    let provision =
        std::fs::read_to_string(repo().join("deploy/vm/provision.sh")).expect("provision.sh");
    for want in [
        "deploy/install.sh",
        "--listen-addr",
        "--join",
        "--advertise-addr",
    ] {
        assert!(
            provision.contains(want),
            "deploy/vm/provision.sh lacks {want}"
        );
    }
    let vagrantfile = repo().join("deploy/vagrant/Vagrantfile");
    let text = std::fs::read_to_string(&vagrantfile).expect("Vagrantfile");
    for want in [
        "virtualbox",
        "manager",
        "worker1",
        "worker2",
        "install.sh",
        "--join",
    ] {
        assert!(text.contains(want), "Vagrantfile lacks {want}");
    }
    if Command::new("ruby").arg("--version").output().is_ok() {
        let out = Command::new("ruby")
            .arg("-c")
            .arg(&vagrantfile)
            .output()
            .expect("ruby");
        assert!(
            out.status.success(),
            "ruby -c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The provisioning scripts the Vagrantfile runs must at least parse.
    for s in [
        "deploy/install.sh",
        "deploy/vagrant/provision.sh",
        "deploy/vm/provision.sh",
        "deploy/vm/build-image.sh",
        "deploy/vm-cluster",
    ] {
        let st = Command::new("bash")
            .arg("-n")
            .arg(repo().join(s))
            .status()
            .expect("bash");
        assert!(st.success(), "bash -n {s}");
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn agent_upgrade_leaves_containers_running() {
    let mut a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' TERM; i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done",
    ]);
    a.wait_until("output", Duration::from_secs(5), || {
        a.try_cmd(&["logs", "ticker"]).stdout.contains("tick 3")
    });
    let pid = a.inspect("ticker", "{{.State.Pid}}");
    // The new version, installed the way install.sh does it: new files renamed over
    // the old paths while the old agent still runs from them.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("skiff");
    std::fs::copy(common::shim_bin(), dir.path().join("skiff-shim.new")).expect("copy");
    std::fs::rename(
        dir.path().join("skiff-shim.new"),
        dir.path().join("skiff-shim"),
    )
    .expect("rename");
    std::fs::copy(common::bin(), dir.path().join("skiff.new")).expect("copy");
    std::fs::rename(dir.path().join("skiff.new"), &path).expect("rename");
    a.upgrade_to(&path);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the old agent"
    );
    assert_eq!(
        a.inspect("ticker", "{{.State.Status}} {{.State.Pid}}"),
        format!("running {pid}")
    );
    // Output written while the agent was down is there, in order; the shim kept
    // rotating the log on its own.
    a.wait_until("output after the upgrade", Duration::from_secs(5), || {
        a.try_cmd(&["logs", "--tail", "1", "ticker"])
            .stdout
            .trim()
            .strip_prefix("tick ")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 60)
    });
    let out = a.cmd(&["logs", "ticker"]).stdout;
    let ns: Vec<u32> = out
        .lines()
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .expect(l)
        })
        .collect();
    for w in ns.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap in the logs across the upgrade: {ns:?}");
    }
    assert_eq!(
        a.cmd(&["exec", "ticker", "echo", "still"]).stdout,
        "still\n"
    );
    a.cmd(&["stop", "ticker"]);
    assert_eq!(a.inspect("ticker", "{{.State.ExitCode}}"), "42");
}

/// The agent.yaml install.sh writes, used verbatim by real agents (the harness's
/// --root/--exec-root/--host flags win over the file's paths): a manager from
/// `--listen-addr`, and a worker that joins it from `--join`/`--token`.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn installed_agent_yaml_founds_and_joins_a_cluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let staged = |args: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = install(dir.path(), args);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        std::fs::read_to_string(dir.path().join("etc/skiff/agent.yaml")).expect("agent.yaml")
    };
    // Fresh nodes: the harness's first start founded a one-node cluster of its own, and
    // a node's address is fixed when it founds or joins.
    let mut manager = Agent::start();
    manager.kill9();
    std::fs::remove_dir_all(manager.root.join("cluster")).expect("wipe cluster state");
    manager.restart_with_config(&staged(&["--listen-addr", &addr]));
    let join = manager.cmd(&["cluster", "join-token", "worker"]).stdout;
    assert!(join.contains(&format!("--join {addr}")), "{join}");
    let token = manager
        .cmd(&["cluster", "join-token", "-q", "worker"])
        .stdout
        .trim()
        .to_string();

    let mut worker = Agent::start();
    worker.kill9();
    std::fs::remove_dir_all(worker.root.join("cluster")).expect("wipe cluster state");
    worker.restart_with_config(&staged(&["--join", &addr, "--token", &token]));
    manager.wait_until("the worker joined", Duration::from_secs(20), || {
        manager
            .try_cmd(&["node", "ls", "--format", "{{.Status}}"])
            .stdout
            == "Ready\nReady\n"
    });
    assert_eq!(worker.cmd(&["version"]).code, 0);
}

/// install.sh as on a real host (no --destdir, so /usr/local, /etc and /usr/share),
/// inside a private mount namespace whose /etc and /usr/share are overlays and whose
/// /usr/local is a tmpfs: nothing reaches the real system. systemd's runtime directory
/// is hidden, so this covers the host-without-systemd branch whatever the machine runs.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn install_on_a_host_without_systemd_says_how_to_start() {
    common::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["eu", "ew", "su", "sw"] {
        std::fs::create_dir(d.join(sub)).expect("mkdir");
    }
    let script = format!(
        r#"set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/eu,workdir={d}/ew /etc
mount -t overlay overlay -o lowerdir=/usr/share,upperdir={d}/su,workdir={d}/sw /usr/share
mount -t tmpfs none /usr/local
if [ -d /run/systemd ]; then mount -t tmpfs none /run/systemd; fi
bash {install} --bin {bin} --no-packages --join 192.0.2.10:2377 --token SWMTKN-1-x
echo ===SECOND===
bash {install} --bin {bin} --no-packages --join 192.0.2.10:2377 --token SWMTKN-1-x
test "$(stat -c %a /etc/skiff/agent.yaml)" = 600
test -x /usr/local/bin/skiff
test -x /usr/local/bin/skiff-shim
grep -qx 'KillMode=process' /etc/systemd/system/skiff.service
"#,
        d = d.display(),
        install = repo().join("deploy/install.sh").display(),
        bin = common::bin().display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    let (first, second) = text.split_once("===SECOND===").expect("two runs");
    assert!(
        first.contains("systemd is not running here")
            && first.contains("nohup /usr/local/bin/skiff agent --config /etc/skiff/agent.yaml"),
        "{first}"
    );
    assert!(first.contains("skiff node ls"), "{first}");
    assert!(second.contains("(no changes)"), "{second}");
    assert!(
        !err.contains("not applied"),
        "same options, nothing to note: {err}"
    );
    // The real system was not touched: the files went to the overlays' upper dirs.
    assert!(d.join("eu/skiff/agent.yaml").exists());
    assert!(d.join("eu/systemd/system/skiff.service").exists());
}

/// The exe and command line of the shim that owns `pid` (its parent: the shim is the
/// container's subreaper).
fn shim_of(pid: &str) -> (PathBuf, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .expect("PPid")
        .trim()
        .to_string();
    let exe = std::fs::read_link(format!("/proc/{ppid}/exe")).expect("shim exe");
    let cmdline = std::fs::read(format!("/proc/{ppid}/cmdline")).expect("cmdline");
    let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (exe, args)
}

/// An install that copied only `skiff`: the agent runs `skiff shim` instead of the
/// missing `skiff-shim`, says so once, and containers of both kinds of shim survive the
/// agent moving between the two installs.
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn agent_without_skiff_shim_beside_it_runs_skiff_shim_command() {
    let mut a = Agent::start().with_busybox();
    let warning = "skiff-shim is not installed beside the agent";
    assert!(!a.log().contains(warning), "{}", a.log());
    a.cmd(&["run", "-d", "--name", "small", "busybox", "sleep", "600"]);
    let small = a.inspect("small", "{{.State.Pid}}");
    let (exe, args) = shim_of(&small);
    assert_eq!(exe, common::shim_bin(), "{args}");
    assert!(args.contains(" --task "), "{args}");

    let dir = tempfile::tempdir().expect("tempdir");
    let lonely = dir.path().join("skiff");
    std::fs::copy(common::bin(), &lonely).expect("copy");
    a.upgrade_to(&lonely);
    assert_eq!(a.log().matches(warning).count(), 1, "{}", a.log());
    a.cmd(&["run", "-d", "--name", "big", "busybox", "sleep", "600"]);
    let big = a.inspect("big", "{{.State.Pid}}");
    let (exe, args) = shim_of(&big);
    assert_eq!(exe, lonely, "{args}");
    assert!(args.contains(" shim --task "), "{args}");

    // Back to a full install: both containers are still there and answer.
    a.upgrade_to(&common::bin());
    for (name, pid) in [("small", &small), ("big", &big)] {
        assert_eq!(
            a.inspect(name, "{{.State.Status}} {{.State.Pid}}"),
            format!("running {pid}")
        );
        assert_eq!(
            a.cmd(&["exec", name, "echo", name]).stdout,
            format!("{name}\n")
        );
    }
    a.cmd(&["stop", "-t", "1", "small", "big"]);
    assert_eq!(a.inspect("big", "{{.State.ExitCode}}"), "137");
}
