//! Differential end-to-end test (root, real kernel): the same docker CLI commands
//! against a private dockerd and against Skiff's Docker API, outputs compared after
//! normalising IDs and times. Every difference is either fixed or documented in
//! docs/docker-api.md ("Deliberate differences"); nothing here is compared loosely
//! except where a step says so (exit code only, for messages whose wording names the
//! runtime underneath).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A private dockerd (Debian's docker.io) with its own root, sockets and no firewall or
/// bridge changes; stopped and removed on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("skdd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let p = |s: &str| dir.path().join(s);
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("run"))
            .arg("--pidfile")
            .arg(p("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p("docker.sock").display()))
            .args(["--bridge", "none", "--iptables=false"])
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("dockerd (deploy/deps.sh --test installs docker.io)");
        let d = Dockerd {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.run(&["version"], None).code != 0 {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let tar = busybox_tar().display().to_string();
        let r = d.run(
            &["import", "-c", "CMD [\"sh\"]", &tar, "busybox:latest"],
            None,
        );
        assert_eq!(r.code, 0, "docker import: {}", r.stderr);
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Run {
        self.run_with(docker_cli(), args, input)
    }

    fn run_with(&self, cli: &str, args: &[&str], input: Option<&[u8]>) -> Run {
        run_docker_cli(
            cli,
            &self.socket(),
            &self.dir.path().join("docker-config"),
            args,
            input,
        )
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"], None).stdout;
        for id in ids.split_whitespace() {
            let _ = self.run(&["rm", "-f", id], None);
        }
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Mounts a killed dockerd may leave below its directory, deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let base = self.dir.path().display().to_string();
        let mut below: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&base))
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Replaces what differs between any two engines by nature: IDs and relative times.
fn normalise(s: &str) -> String {
    use std::sync::OnceLock;
    static RE: OnceLock<(regex::Regex, regex::Regex)> = OnceLock::new();
    let (ids, times) = RE.get_or_init(|| {
        (
            regex::Regex::new(r"\b(?:[0-9a-f]{64}|[0-9a-f]{12})\b").expect("regex"),
            regex::Regex::new(
                r"Less than a second|About a minute|About an hour|\b\d+ (?:seconds?|minutes?|hours?)\b",
            )
            .expect("regex"),
        )
    });
    let s = ids.replace_all(s, "<ID>");
    times.replace_all(&s, "<T>").into_owned()
}

/// How a step is compared.
#[derive(Clone, Copy, PartialEq)]
enum Cmp {
    /// Exit code, stdout and stderr.
    All,
    /// Exit code and stdout (stderr wording names the runtime underneath).
    NoStderr,
}

/// The scenario: each step runs on both engines in the same order.
const STEPS: &[(Cmp, &[&str])] = &[
    (Cmp::All, &["run", "--rm", "--network", "none", "busybox", "echo", "hello"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "busybox", "sh", "-c", "exit 3"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "busybox", "id"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "-u", "1000:1000", "busybox", "id"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "-u", "www-data", "busybox", "id"]),
    (Cmp::NoStderr, &["run", "--rm", "--network", "none", "busybox", "no-such-command"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "-e", "A=1", "-w", "/tmp", "busybox", "sh", "-c", "echo $A; pwd"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "--hostname", "h1", "busybox", "hostname"]),
    (Cmp::All, &["run", "--rm", "--network", "none", "--read-only", "busybox", "touch", "/x"]),
    (Cmp::All, &["create", "--name", "c1", "--network", "none", "busybox", "echo", "hi"]),
    (Cmp::All, &["inspect", "-f", "{{.State.Status}} {{json .Config.Cmd}} {{.Name}} {{.Config.Image}} {{.HostConfig.NetworkMode}}", "c1"]),
    (Cmp::All, &["start", "-a", "c1"]),
    (Cmp::All, &["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}", "c1"]),
    (Cmp::All, &["logs", "c1"]),
    (Cmp::All, &["create", "--name", "c1", "busybox"]),
    (Cmp::All, &["ps", "-a", "--format", "{{.Names}}|{{.Image}}|{{.Command}}|{{.Status}}"]),
    (Cmp::All, &["rm", "c1"]),
    (Cmp::All, &["rm", "nosuch"]),
    (Cmp::All, &["stop", "nosuch"]),
    (Cmp::All, &["inspect", "nosuch"]),
    (Cmp::All, &["logs", "nosuch"]),
    (Cmp::All, &["run", "-d", "--name", "r1", "--network", "none", "busybox", "sh", "-c", "echo out; echo err >&2; sleep 100"]),
    (Cmp::All, &["exec", "r1", "sh", "-c", "echo $((1+2))"]),
    (Cmp::All, &["exec", "r1", "sh", "-c", "exit 5"]),
    (Cmp::All, &["kill", "r1"]),
    (Cmp::All, &["wait", "r1"]),
    (Cmp::All, &["logs", "r1"]),
    (Cmp::All, &["exec", "r1", "true"]),
    (Cmp::All, &["kill", "r1"]),
    (Cmp::All, &["rm", "r1"]),
    (Cmp::All, &["volume", "create", "v1"]),
    (Cmp::All, &["volume", "inspect", "-f", "{{.Driver}} {{.Name}} {{.Scope}}", "v1"]),
    (Cmp::All, &["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]),
    (Cmp::All, &["volume", "rm", "v1"]),
    (Cmp::All, &["volume", "inspect", "v1"]),
    (Cmp::All, &["network", "create", "--label", "a=b", "n1"]),
    (Cmp::All, &["network", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Scope}} {{.Internal}} {{.Attachable}} {{.Labels}}", "n1"]),
    (Cmp::All, &["network", "rm", "n1"]),
    (Cmp::All, &["network", "inspect", "n1"]),
    (Cmp::All, &["images", "--format", "{{.Repository}}:{{.Tag}}"]),
    (Cmp::All, &["tag", "busybox", "bb:2"]),
    (Cmp::All, &["image", "inspect", "-f", "{{.Os}} {{.Architecture}} {{.RepoTags}}", "bb:2"]),
    (Cmp::All, &["rmi", "bb:2"]),
    (Cmp::All, &["rmi", "nosuchimage"]),
];

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn docker_cli_sees_the_same_as_with_dockerd() {
    let a = Agent::start().with_busybox();
    let d = Dockerd::start();
    let mut diffs = Vec::new();
    // The scenario removes what it makes, so it runs once per CLI on the same engines.
    for cli in docker_clis() {
        for (cmp, step) in STEPS {
            let theirs = d.run_with(cli, step, None);
            let ours = a.try_docker_with(cli, step, None);
            let (t_out, o_out) = (normalise(&theirs.stdout), normalise(&ours.stdout));
            let (t_err, o_err) = (normalise(&theirs.stderr), normalise(&ours.stderr));
            let same = theirs.code == ours.code
                && t_out == o_out
                && (*cmp == Cmp::NoStderr || t_err == o_err);
            if !same {
                diffs.push(format!(
                "{cli} {step:?}\n  dockerd: code {} out {t_out:?} err {t_err:?}\n  skiff:   code {} out {o_out:?} err {o_err:?}",
                theirs.code, ours.code
            ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n{}\nagent log tail:\n{}",
        diffs.len(),
        STEPS.len() * docker_clis().len(),
        diffs.join("\n"),
        a.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn normalise_hides_ids_and_times_only() {
    let id = "a".repeat(63) + "1";
    assert_eq!(normalise(&format!("{id}\n")), "<ID>\n");
    assert_eq!(normalise("abc123def456 x"), "<ID> x");
    assert_eq!(
        normalise("Up 3 seconds|Exited (0) 2 minutes ago"),
        "Up <T>|Exited (0) <T> ago"
    );
    assert_eq!(normalise("Up Less than a second"), "Up <T>");
    assert_eq!(normalise("busybox:latest 3"), "busybox:latest 3");
}
