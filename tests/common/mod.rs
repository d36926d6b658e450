//! Test harness for end-to-end tests: each test starts its own agent (own --root,
//! --exec-root, socket and cgroup parent) as root on the real kernel, drives the real
//! `skiff` binary, and tears everything down on drop, even when the test fails.
//!
//! Tests that need root call [`require_root`], which fails loudly rather than skipping.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// The shim binary the agent under test runs (it sits beside [`bin`]).
pub fn shim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff-shim"))
}

/// Fails the test unless running as root: these tests exist to exercise the kernel.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests must run as root (they create namespaces, mounts and cgroups)"
    );
}

/// The busybox rootfs tarball, built by the example script into cargo's per-target
/// scratch directory (not /tmp, where one per test process would pile up) and shared by
/// every test process; rebuilt when the script changes.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = dir.join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images/busybox/build.sh");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if mtime(&out).is_some() && mtime(&out) >= mtime(&script) {
            return out;
        }
        // Built under a name of its own, then renamed: test processes running at once
        // never see half a file.
        let part = dir.join(format!("busybox.tar.{}", std::process::id()));
        let st = Command::new("bash")
            .arg(&script)
            .arg(&part)
            .stdout(Stdio::null())
            .status()
            .expect("run build.sh");
        assert!(
            st.success(),
            "examples/images/busybox/build.sh failed (is busybox-static installed?)"
        );
        std::fs::rename(&part, &out).expect("rename busybox.tar");
        out
    })
}

/// busybox plus a `/marker` file saying `text`, as `DIR/NAME.tar`: a one-layer rootfs to
/// import, distinct from every other test's image.
pub fn marker_rootfs_tar(dir: &Path, name: &str, text: &str) -> PathBuf {
    let tar = dir.join(format!("{name}.tar"));
    std::fs::copy(busybox_tar(), &tar).expect("copy busybox.tar");
    let extra = dir.join(format!("{name}-files"));
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(extra.join("marker"), text).expect("write marker");
    let st = std::process::Command::new("tar")
        .arg("-rf")
        .arg(&tar)
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-C")
        .arg(&extra)
        .arg("./marker")
        .status()
        .expect("tar");
    assert!(st.success(), "tar -r failed");
    tar
}

/// A running agent owned by one test.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub exec_root: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

/// Result of one CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// Panics with both streams unless the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed: stdout={:?} stderr={:?}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Agent {
    /// Starts an agent in a fresh temporary directory and waits for its socket.
    pub fn start() -> Agent {
        Self::start_prepared(|_| {})
    }

    /// Starts an agent whose `--root` is a tmpfs of `size` (`mount -o size=`), so a
    /// test can fill it. [`Drop`] unmounts it with everything else below the directory.
    pub fn start_on_tmpfs(size: &str) -> Agent {
        Self::start_prepared(|root| {
            std::fs::create_dir_all(root).expect("root dir");
            nix::mount::mount(
                Some("tmpfs"),
                root,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size}").as_str()),
            )
            .expect("mount tmpfs root");
        })
    }

    fn start_prepared(prepare: impl FnOnce(&Path)) -> Agent {
        require_root();
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sk")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let root = dir.path().join("root");
        let exec_root = dir.path().join("run");
        let socket = dir.path().join("skiff.sock");
        prepare(&root);
        let mut a = Agent {
            root,
            exec_root,
            socket,
            dir,
            child: None,
        };
        a.spawn();
        a
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn spawn(&mut self) {
        self.spawn_from(&bin());
    }

    /// Starts the agent from `exe` (the binary under test, or a copy standing for
    /// another version).
    fn spawn_from(&mut self, exe: &Path) {
        let config = self.dir.path().join("agent.yaml");
        if !config.exists() {
            std::fs::write(&config, "").expect("agent.yaml");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("agent log");
        let child = Command::new(exe)
            .args(["agent", "--root"])
            .arg(&self.root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--host")
            .arg(self.host())
            .arg("--config")
            .arg(self.dir.path().join("agent.yaml"))
            .arg("--default-addr-pool")
            .arg(overlay_pool())
            .env(
                "SKIFF_LOG",
                "info,skiff_agent=debug,skiff_controller=debug,skiff_runtime=debug",
            )
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.try_cmd(&["version"]).code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// `kill -9` the agent (containers and shims keep running).
    /// The agent's process ID, while it runs.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the agent as systemd does with `KillMode=process`: SIGTERM to the agent
    /// alone, then waits for it to exit (containers and shims keep running).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// An upgrade: [`Agent::terminate`], then the agent again on the same state from `exe`.
    pub fn upgrade_to(&mut self, exe: &Path) {
        self.terminate();
        self.spawn_from(exe);
    }

    /// Starts the agent again on the same state.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `skiff ARGS` against this agent.
    pub fn try_cmd(&self, args: &[&str]) -> Run {
        Run::from(
            Command::new(bin())
                .arg("--host")
                .arg(self.host())
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run skiff"),
        )
    }

    /// Runs `skiff ARGS` with `input` on stdin.
    pub fn cmd_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut c = Command::new(bin())
            .arg("--host")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn skiff");
        let mut stdin = c.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        Run::from(c.wait_with_output().expect("wait"))
    }

    /// Runs and requires success.
    pub fn cmd(&self, args: &[&str]) -> Run {
        let r = self.try_cmd(args);
        assert_eq!(
            r.code,
            0,
            "skiff {args:?} failed ({}): stdout={:?} stderr={:?}\nagent log tail:\n{}",
            r.code,
            r.stdout,
            r.stderr,
            tail(&self.log(), 30)
        );
        r
    }

    /// The agent's Docker API socket (`docker.sock` beside the skiff socket).
    pub fn docker_socket(&self) -> PathBuf {
        self.socket.with_file_name("docker.sock")
    }

    /// `DOCKER_HOST` for real Docker clients pointed at this agent.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket().display())
    }

    /// Runs a real docker CLI (`exe`: `docker` from PATH, or a path such as Debian's
    /// `/usr/bin/docker`) against this agent's Docker API socket, with a private client
    /// config directory so no user setting leaks in.
    pub fn try_docker_with(&self, exe: &str, args: &[&str], input: Option<&[u8]>) -> Run {
        run_docker_cli(
            exe,
            &self.docker_socket(),
            &self.dir.path().join("docker-config"),
            args,
            input,
        )
    }

    /// `docker ARGS` (the CLI on PATH) against this agent.
    pub fn try_docker(&self, args: &[&str]) -> Run {
        self.try_docker_with(docker_cli(), args, None)
    }

    /// `docker ARGS`, required to succeed.
    pub fn docker(&self, args: &[&str]) -> Run {
        let r = self.try_docker(args);
        assert_eq!(
            r.code,
            0,
            "docker {args:?} failed ({}): stdout={:?} stderr={:?}\nagent log tail:\n{}",
            r.code,
            r.stdout,
            r.stderr,
            tail(&self.log(), 30)
        );
        r
    }

    /// Imports the busybox test image as `busybox:latest`.
    pub fn with_busybox(self) -> Agent {
        let tar = busybox_tar().to_string_lossy().into_owned();
        self.cmd(&[
            "image",
            "import",
            &tar,
            "busybox:latest",
            "-c",
            "CMD [\"sh\"]",
        ]);
        self
    }

    /// Polls `cond` until it holds or `timeout` passes; tests never sleep blindly.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; agent log tail:\n{}",
            tail(&self.log(), 40)
        );
    }

    /// `inspect -f TEMPLATE NAME`, trimmed.
    pub fn inspect(&self, name: &str, template: &str) -> String {
        self.cmd(&["inspect", "-f", template, name])
            .stdout
            .trim()
            .to_string()
    }
}

/// Runs the docker CLI `exe` against the Docker API on `socket`, with its own client
/// config directory `config` so no user setting leaks in, `input` on stdin if given.
pub fn run_docker_cli(
    exe: &str,
    socket: &Path,
    config: &Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> Run {
    use std::io::Write;
    let _ = std::fs::create_dir_all(config);
    let mut c = Command::new(exe)
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_CONTEXT")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {exe}: {e}"));
    if let Some(data) = input {
        let mut stdin = c.stdin.take().expect("stdin");
        stdin.write_all(data).expect("write stdin");
    }
    Run::from(c.wait_with_output().expect("wait docker"))
}

/// The docker CLI the Docker API tests drive: `SKIFF_TEST_DOCKER` if set, else the newest
/// on the machine (`/usr/local/bin/docker`, then Debian's `/usr/bin/docker`).
pub fn docker_cli() -> &'static str {
    static CLI: OnceLock<String> = OnceLock::new();
    CLI.get_or_init(|| {
        if let Ok(p) = std::env::var("SKIFF_TEST_DOCKER") {
            return p;
        }
        for p in ["/usr/local/bin/docker", "/usr/bin/docker"] {
            if Path::new(p).exists() {
                return p.to_string();
            }
        }
        panic!("no docker CLI: deploy/deps.sh --test installs Debian's docker.io")
    })
}

/// Every docker CLI on the machine: Debian's 20.10 (`/usr/bin/docker`) and a newer one
/// in /usr/local/bin where present; tests that matter for both run with each.
pub fn docker_clis() -> Vec<&'static str> {
    ["/usr/local/bin/docker", "/usr/bin/docker"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Agent {
    /// Removes every container (killing shims), the agent, mounts and cgroups.
    fn drop(&mut self) {
        if self.child.is_none() {
            self.spawn_quiet();
        }
        let ids = self.try_cmd(&["ps", "-aq", "--no-trunc"]).stdout;
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.try_cmd(&["rm", "-f", id]);
        }
        self.kill9();
        cleanup_agent_leftovers(self.dir.path(), &self.root);
        cleanup_network(&self.root);
    }
}

impl Agent {
    /// Restarts the agent (same state) with `yaml` as its config file.
    pub fn restart_with_config(&mut self, yaml: &str) {
        self.kill9();
        std::fs::write(self.dir.path().join("agent.yaml"), yaml).expect("agent.yaml");
        self.spawn();
    }
}

/// The agent's nft table and link-name prefix for a non-default root (mirrors
/// `skiff_agent::network::names_for_root`).
pub fn network_names(root: &Path) -> (String, String) {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(root.to_string_lossy().as_bytes()));
    (format!("skiff-{}", &h[..8]), format!("sk{}", &h[..5]))
}

/// Links of ours still present in the host namespace.
pub fn network_links(root: &Path) -> Vec<String> {
    let (_, prefix) = network_names(root);
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes what an agent that was killed leaves in the kernel: its bridges and veths,
/// its nft table, its tagged rules in `ip filter FORWARD`.
pub fn cleanup_network(root: &Path) {
    let (table, _) = network_names(root);
    for l in network_links(root) {
        let _ = Command::new("ip")
            .args(["link", "del", &l])
            .stderr(Stdio::null())
            .status();
    }
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", &table])
        .stderr(Stdio::null())
        .status();
    cleanup_forward_rules(&table);
}

/// Removes an agent's tagged accept rules from `ip filter FORWARD`.
pub fn cleanup_forward_rules(table: &str) {
    if let Ok(o) = Command::new("nft")
        .args(["-a", "list", "chain", "ip", "filter", "FORWARD"])
        .stderr(Stdio::null())
        .output()
    {
        let needle = format!("comment \"skiff:{table}\"");
        for line in String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(&needle))
        {
            if let Some((_, h)) = line.rsplit_once("# handle ") {
                let _ = Command::new("nft")
                    .args([
                        "delete",
                        "rule",
                        "ip",
                        "filter",
                        "FORWARD",
                        "handle",
                        h.trim(),
                    ])
                    .status();
            }
        }
    }
}

impl Agent {
    fn spawn_quiet(&mut self) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn())).is_err() {
            self.child = None;
        }
    }
}

/// Mirrors the agent's cgroup parent naming for a non-default root.
pub fn cgroup_parent(root: &Path) -> String {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(root.to_string_lossy().as_bytes()));
    format!("skiff-{}", &h[..8])
}

/// After an agent is killed: kills processes (shims, containers' inits) whose command
/// line names `dir`, unmounts what is left below `dir`, and removes the agent's cgroup
/// trees (named after `root`). Network state is [`cleanup_network`]'s.
pub fn cleanup_agent_leftovers(dir: &Path, root: &Path) {
    // Shims left behind (tests that killed the agent mid-way).
    if let Ok(rd) = std::fs::read_dir("/proc") {
        let needle = dir.to_string_lossy().into_owned();
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    // Anything still mounted below the directory (a crashed shim's rootfs).
    unmount_below(dir);
    // Our cgroup trees (named after --root); a container killed with its shim leaves
    // its (now empty) cgroup.
    let parent = cgroup_parent(root);
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Ok(rd) = std::fs::read_dir(base) {
            for ctl in rd.flatten() {
                remove_cgroup_tree(&ctl.path().join(&parent));
            }
            remove_cgroup_tree(&Path::new(base).join(&parent));
        }
    }
}

fn remove_cgroup_tree(p: &Path) {
    if !p.is_dir() {
        return;
    }
    // A container whose shim is gone still runs in its cgroup: kill it first, or the
    // directory cannot go.
    for pid in std::fs::read_to_string(p.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty()) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// A distinct overlay address pool per agent started by this test process, so parallel
/// single-host clusters in one network namespace never pick the same overlay subnet.
pub fn overlay_pool() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("10.{}.0.0/16", 100 + (std::process::id() + n) % 150)
}

/// Detaches every mount below `dir`, deepest first (a daemon or shim killed mid-way
/// leaves its rootfs, overlay and namespace mounts).
pub fn unmount_below(dir: &Path) {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let base = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = m
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&base))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A `docker-registry` process on 127.0.0.1, killed (and its storage removed) on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    child: std::process::Child,
    pub addr: String,
}

impl Registry {
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let exe = Path::new("/usr/bin/docker-registry");
        assert!(
            exe.exists(),
            "docker-registry is not installed (apt-get install docker-registry apache2-utils)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), out.stdout).expect("write htpasswd");
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), cfg).expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(exe)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let r = Registry { dir, child, addr };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                std::fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
