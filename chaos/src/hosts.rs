//! The cluster under test: `deploy/netns-cluster` hosts (one network namespace each, own
//! address, own nftables), whose `--root` is a small loop-mounted ext4 filesystem so a
//! disk can be filled. Also the levers the nemesis pulls on them: signals, nftables drop
//! rules and traffic shaping inside a host's namespace, a full disk.
//!
//! [`Hosts`] removes everything it made when dropped (namespaces, links, mounts, loop
//! devices, processes, cgroups, files), also after a failure or a panic, unless told to
//! keep the cluster.

use crate::ChaosError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Size of each host's loop-mounted `--root`.
const ROOT_MB: u64 = 384;
/// nftables table the nemesis puts its drop rules in (inside a host's namespace).
pub const CHAOS_TABLE: &str = "skiff-chaos";
/// The agents' log filter (unless SKIFF_LOG is set): the orchestrator's decisions too,
/// so a failed run's logs say why a service did not converge.
const AGENT_LOG: &str = "info,skiff_controller::orchestrator=debug,skiff_agent::executor=debug";

fn agent_env() -> Vec<(&'static str, &'static str)> {
    if std::env::var_os("SKIFF_LOG").is_some() {
        vec![]
    } else {
        vec![("SKIFF_LOG", AGENT_LOG)]
    }
}

/// Runs a command with a deadline; a command still running then is killed.
pub async fn cmd(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<std::process::Output, ChaosError> {
    cmd_env(program, args, stdin, timeout, &[]).await
}

/// [`cmd`] with extra environment variables.
async fn cmd_env(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Result<std::process::Output, ChaosError> {
    let line = format!("{program} {}", args.join(" "));
    let mut c = tokio::process::Command::new(program);
    c.envs(env.iter().copied());
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().map_err(|source| ChaosError::Io {
        what: format!("running {line}"),
        source,
    })?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        let _ = w.write_all(input.as_bytes()).await;
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(source)) => Err(ChaosError::Io {
            what: format!("running {line}"),
            source,
        }),
        Err(_) => Err(ChaosError::Command {
            cmd: line,
            status: format!("killed after {timeout:?}"),
            stderr: String::new(),
        }),
    }
}

/// Like [`cmd`], but a non-zero exit is an error.
pub async fn cmd_ok(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, ChaosError> {
    cmd_ok_env(program, args, stdin, timeout, &[]).await
}

async fn cmd_ok_env(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Result<String, ChaosError> {
    let o = cmd_env(program, args, stdin, timeout, env).await?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(ChaosError::Command {
            cmd: format!("{program} {}", args.join(" ")),
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        })
    }
}

/// Blocking variant for teardown (which also runs from `Drop`).
fn run_blocking(program: &str, args: &[&str], timeout: Duration) -> bool {
    let Ok(mut child) = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// One host of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub addr: String,
    pub sock: PathBuf,
    /// `<cluster dir>/<name>`: agent.pid, agent.log, root/, run/.
    pub dir: PathBuf,
    pub manager: bool,
    /// Its namespace under /run/netns.
    pub netns: String,
}

impl Node {
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn root_hash(&self) -> String {
        hex::encode(sha2::Sha256::digest(
            self.root().to_string_lossy().as_bytes(),
        ))
    }

    /// The agent's nftables table in this host's namespace (named after its --root).
    pub fn nft_table(&self) -> String {
        format!("skiff-{}", &self.root_hash()[..8])
    }

    /// The prefix of every link the agent makes (named after its --root).
    pub fn link_prefix(&self) -> String {
        format!("sk{}", &self.root_hash()[..5])
    }

    /// The agent's cgroup parent (named after its --root).
    pub fn cgroup_parent(&self) -> String {
        format!("skiff-{}", &self.root_hash()[..8])
    }

    /// The agent's PID as last started.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("agent.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the agent process exists and is not a zombie.
    pub fn alive(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                // The state follows the parenthesised command name.
                let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
                let root = self.root().to_string_lossy().into_owned();
                // The command line names our root: a recycled PID is not our agent.
                !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(&root))
                        .unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    pub fn signal(&self, sig: Signal) -> Result<(), ChaosError> {
        let pid = self
            .pid()
            .ok_or_else(|| ChaosError::Setup(format!("{}: no agent pid", self.name)))?;
        kill(Pid::from_raw(pid), sig).map_err(|e| ChaosError::Io {
            what: format!("{sig} to {} (pid {pid})", self.name),
            source: e.into(),
        })
    }

    /// Runs `args` inside this host's network namespace.
    pub async fn in_netns(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ChaosError> {
        let ns = format!("--net=/run/netns/{}", self.netns);
        let mut full = vec![ns.as_str()];
        full.extend_from_slice(args);
        cmd_ok("nsenter", &full, stdin, Duration::from_secs(15)).await
    }
}

/// The whole cluster; torn down on drop.
pub struct Hosts {
    pub dir: PathBuf,
    img_dir: PathBuf,
    script: PathBuf,
    bin: PathBuf,
    pub nodes: Vec<Node>,
    /// Whether `tc netem` works on this kernel (probed once).
    netem: std::sync::Mutex<Option<bool>>,
    keep: AtomicBool,
    torn_down: AtomicBool,
}

impl Hosts {
    /// Makes a cluster of `managers` + `workers` hosts in `dir` (which must not exist).
    pub async fn up(
        dir: &Path,
        repo: &Path,
        bin: &Path,
        managers: usize,
        workers: usize,
    ) -> Result<Hosts, ChaosError> {
        let io = |what: String| move |source| ChaosError::Io { what, source };
        let img_dir = PathBuf::from(format!("{}.img", dir.display()));
        let mut hosts = Hosts {
            dir: dir.into(),
            img_dir: img_dir.clone(),
            script: repo.join("deploy/netns-cluster"),
            bin: bin.into(),
            nodes: vec![],
            netem: std::sync::Mutex::new(None),
            keep: AtomicBool::new(false),
            torn_down: AtomicBool::new(false),
        };
        std::fs::create_dir_all(&img_dir).map_err(io(format!("creating {}", img_dir.display())))?;
        let names: Vec<String> = (1..=managers)
            .map(|i| format!("manager{i}"))
            .chain((1..=workers).map(|i| format!("worker{i}")))
            .collect();
        // Each host's --root is its own small filesystem (a full disk stays on one host).
        for name in &names {
            let img = img_dir.join(format!("{name}.img"));
            let root = dir.join(name).join("root");
            std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
            let f =
                std::fs::File::create(&img).map_err(io(format!("creating {}", img.display())))?;
            f.set_len(ROOT_MB << 20)
                .map_err(io(format!("sizing {}", img.display())))?;
            let (img_s, root_s) = (img.to_string_lossy(), root.to_string_lossy());
            cmd_ok(
                "mkfs.ext4",
                &["-q", "-F", "-m", "0", &img_s],
                None,
                Duration::from_secs(60),
            )
            .await?;
            cmd_ok(
                "mount",
                &["-o", "loop", &img_s, &root_s],
                None,
                Duration::from_secs(30),
            )
            .await?;
        }
        let (dir_s, bin_s) = (dir.to_string_lossy(), bin.to_string_lossy());
        let script = hosts.script.to_string_lossy().into_owned();
        let m = managers.to_string();
        let w = workers.to_string();
        cmd_ok_env(
            &script,
            &[
                "up",
                "--managers",
                &m,
                "--workers",
                &w,
                "--dir",
                &dir_s,
                "--bin",
                &bin_s,
            ],
            None,
            Duration::from_secs(180),
            &agent_env(),
        )
        .await?;
        let listing = std::fs::read_to_string(dir.join("hosts"))
            .map_err(io(format!("reading {}/hosts", dir.display())))?;
        for line in listing.lines() {
            let p: Vec<&str> = line.split_whitespace().collect();
            if p.len() < 3 {
                continue;
            }
            let mut node = Node {
                name: p[0].into(),
                addr: p[1].into(),
                sock: p[2].into(),
                dir: dir.join(p[0]),
                manager: p[0].starts_with("manager"),
                netns: String::new(),
            };
            let pid = node
                .pid()
                .ok_or_else(|| ChaosError::Setup(format!("{}: no agent.pid", node.name)))?;
            node.netns = cmd_ok(
                "ip",
                &["netns", "identify", &pid.to_string()],
                None,
                Duration::from_secs(10),
            )
            .await?
            .trim()
            .to_string();
            if node.netns.is_empty() {
                return Err(ChaosError::Setup(format!(
                    "{}: namespace not found",
                    node.name
                )));
            }
            hosts.nodes.push(node);
        }
        if hosts.nodes.len() != names.len() {
            return Err(ChaosError::Setup(format!(
                "expected {} hosts, {}/hosts lists {}",
                names.len(),
                dir.display(),
                hosts.nodes.len()
            )));
        }
        // The image every task runs, built offline by the examples' script.
        let tar = img_dir.join("busybox.tar");
        let tar_s = tar.to_string_lossy().into_owned();
        let build = repo.join("examples/images/busybox/build.sh");
        cmd_ok(
            "bash",
            &[&build.to_string_lossy(), &tar_s],
            None,
            Duration::from_secs(120),
        )
        .await?;
        for n in &hosts.nodes {
            let host = format!("unix://{}", n.sock.display());
            cmd_ok(
                &bin_s,
                &["--host", &host, "image", "import", &tar_s, "busybox:latest"],
                None,
                Duration::from_secs(60),
            )
            .await?;
        }
        Ok(hosts)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn managers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.manager)
    }

    /// Leaves the cluster running after the run (`--keep`).
    pub fn keep(&self) {
        self.keep.store(true, Ordering::SeqCst);
    }

    /// Starts a host's agent again on its existing state.
    pub async fn start(&self, node: &Node) -> Result<(), ChaosError> {
        let (dir_s, bin_s) = (self.dir.to_string_lossy(), self.bin.to_string_lossy());
        cmd_ok_env(
            &self.script.to_string_lossy(),
            &["start", &node.name, "--dir", &dir_s, "--bin", &bin_s],
            None,
            Duration::from_secs(40),
            &agent_env(),
        )
        .await
        .map(|_| ())
    }

    /// Drops all traffic between `node` and the hosts at `peers` (both directions, in
    /// `node`'s namespace). Replaces any earlier partition of `node`.
    pub async fn partition(&self, node: &Node, peers: &[String]) -> Result<(), ChaosError> {
        let set = peers.join(", ");
        let script = format!(
            "add table inet {CHAOS_TABLE}\ndelete table inet {CHAOS_TABLE}\n\
             table inet {CHAOS_TABLE} {{\n\
             chain input {{ type filter hook input priority -300; policy accept; ip saddr {{ {set} }} drop; }}\n\
             chain output {{ type filter hook output priority -300; policy accept; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        node.in_netns(&["nft", "-f", "-"], Some(&script))
            .await
            .map(|_| ())
    }

    pub async fn heal_partition(&self, node: &Node) -> Result<(), ChaosError> {
        // `add` first: deleting a table that is not there is an error.
        let script = format!("add table inet {CHAOS_TABLE}\ndelete table inet {CHAOS_TABLE}\n");
        node.in_netns(&["nft", "-f", "-"], Some(&script))
            .await
            .map(|_| ())
    }

    /// Delays and drops packets on `node`'s interface: `tc netem` where the kernel has
    /// it; otherwise random drops in nftables plus a slow token bucket (`tc tbf`), which
    /// delays whatever queues behind it. Returns what was applied.
    pub async fn degrade(
        &self,
        node: &Node,
        delay_ms: u64,
        loss_pct: u64,
    ) -> Result<String, ChaosError> {
        let probe = *self.netem.lock().unwrap_or_else(|p| p.into_inner());
        if probe != Some(false) {
            let (d, j, l) = (
                format!("{delay_ms}ms"),
                format!("{}ms", delay_ms / 2),
                format!("{loss_pct}%"),
            );
            let r = node
                .in_netns(
                    &[
                        "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &d, &j,
                        "loss", &l,
                    ],
                    None,
                )
                .await;
            *self.netem.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.is_ok());
            if r.is_ok() {
                return Ok(format!(
                    "netem delay {delay_ms}ms±{}ms loss {loss_pct}%",
                    delay_ms / 2
                ));
            }
        }
        node.in_netns(
            &[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst",
                "16kbit", "latency", "400ms",
            ],
            None,
        )
        .await?;
        let table = format!("{CHAOS_TABLE}-loss");
        let script = format!(
            "add table inet {table}\ndelete table inet {table}\n\
             table inet {table} {{\n\
             chain input {{ type filter hook input priority -310; policy accept; iifname \"eth0\" numgen random mod 100 < {loss_pct} drop; }}\n\
             chain output {{ type filter hook output priority -310; policy accept; oifname \"eth0\" numgen random mod 100 < {loss_pct} drop; }}\n\
             }}\n"
        );
        node.in_netns(&["nft", "-f", "-"], Some(&script)).await?;
        Ok(format!(
            "loss {loss_pct}% (nftables) + tbf 1mbit/400ms queue (this kernel has no netem)"
        ))
    }

    pub async fn heal_degrade(&self, node: &Node) -> Result<(), ChaosError> {
        let _ = node
            .in_netns(&["tc", "qdisc", "del", "dev", "eth0", "root"], None)
            .await;
        let table = format!("{CHAOS_TABLE}-loss");
        let script = format!("add table inet {table}\ndelete table inet {table}\n");
        node.in_netns(&["nft", "-f", "-"], Some(&script))
            .await
            .map(|_| ())
    }

    fn fill_files(node: &Node) -> [PathBuf; 2] {
        [
            node.root().join(".chaos-fill"),
            node.root().join(".chaos-fill-tail"),
        ]
    }

    /// Fills `node`'s --root filesystem to the last block.
    pub async fn fill_disk(&self, node: &Node) -> Result<(), ChaosError> {
        let [big, tail] = Self::fill_files(node);
        let st = nix::sys::statvfs::statvfs(&node.root()).map_err(|e| ChaosError::Io {
            what: format!("statvfs {}", node.root().display()),
            source: e.into(),
        })?;
        let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
        let (big_s, tail_s) = (big.to_string_lossy(), tail.to_string_lossy());
        let len = avail.to_string();
        let _ = cmd(
            "fallocate",
            &["-l", &len, &big_s],
            None,
            Duration::from_secs(30),
        )
        .await;
        // Whatever fallocate left (it rounds), written until ENOSPC.
        let of = format!("of={tail_s}");
        let _ = cmd(
            "dd",
            &["if=/dev/zero", &of, "bs=4096"],
            None,
            Duration::from_secs(30),
        )
        .await;
        Ok(())
    }

    pub async fn free_disk(&self, node: &Node) -> Result<(), ChaosError> {
        for f in Self::fill_files(node) {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ChaosError::Io {
                        what: format!("removing {}", f.display()),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes everything the cluster made. Idempotent; each step is bounded and failures
    /// are skipped so later steps still run.
    pub fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // Paused agents would hang the script's `skiff rm`.
        for n in &self.nodes {
            let _ = n.signal(Signal::SIGCONT);
        }
        let (dir_s, bin_s) = (
            self.dir.to_string_lossy().into_owned(),
            self.bin.to_string_lossy().into_owned(),
        );
        let script = self.script.to_string_lossy().into_owned();
        if self.dir.join("hosts").exists() {
            run_blocking(
                &script,
                &["down", "--dir", &dir_s, "--bin", &bin_s],
                Duration::from_secs(120),
            );
        }
        // What the script may have missed (it timed out, or `up` failed half-way):
        // container processes (found by their cgroups; they would pin the loop-mounted
        // roots through their mount namespaces), agents and shims.
        for n in &self.nodes {
            kill_cgroup_members(&n.cgroup_parent());
        }
        kill_processes_under(&self.dir);
        unmount_under(&self.dir);
        for n in &self.nodes {
            run_blocking("ip", &["netns", "del", &n.netns], Duration::from_secs(10));
            remove_cgroups(&n.cgroup_parent());
        }
        let h = hex::encode(sha2::Sha256::digest(dir_s.as_bytes()));
        let bridge = format!("skc{}", &h[..6]);
        run_blocking("ip", &["link", "del", &bridge], Duration::from_secs(10));
        for i in 0..16 {
            let veth = format!("{bridge}v{i}");
            if Path::new("/sys/class/net").join(&veth).exists() {
                run_blocking("ip", &["link", "del", &veth], Duration::from_secs(10));
            }
        }
        detach_loops(&self.img_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.img_dir);
    }

    /// Copies each host's agent log to `to` (kept after a failure).
    pub fn save_logs(&self, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for n in &self.nodes {
            let _ = std::fs::copy(n.dir.join("agent.log"), to.join(format!("{}.log", n.name)));
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if self.keep.load(Ordering::SeqCst) {
            eprintln!(
                "cluster kept in {} (remove it with: deploy/netns-cluster down --dir {}; then umount and `losetup -d` the images in {})",
                self.dir.display(),
                self.dir.display(),
                self.img_dir.display()
            );
            return;
        }
        self.teardown();
    }
}

/// SIGKILLs every process whose command line names `dir` (agents, shims).
fn kill_processes_under(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// SIGKILLs every process in an agent's cgroup trees (its containers).
fn kill_cgroup_members(parent: &str) {
    fn walk(p: &Path) {
        if let Ok(procs) = std::fs::read_to_string(p.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                walk(&e.path());
            }
        }
    }
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Ok(rd) = std::fs::read_dir(base) {
            for ctl in rd.flatten() {
                walk(&ctl.path().join(parent));
            }
            walk(&Path::new(base).join(parent));
        }
    }
    // Let the kernel reap them before their cgroups are removed.
    std::thread::sleep(Duration::from_millis(200));
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let base = dir.to_string_lossy().into_owned();
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = m
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&base))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Detaches the loop devices backing the images in `img_dir`.
fn detach_loops(img_dir: &Path) {
    let Ok(out) = std::process::Command::new("losetup")
        .args(["-a", "-O", "NAME,BACK-FILE", "-n"])
        .output()
    else {
        return;
    };
    let base = img_dir.to_string_lossy().into_owned();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split_whitespace();
        if let (Some(dev), Some(file)) = (it.next(), it.next()) {
            if file.starts_with(&base) {
                run_blocking("losetup", &["-d", dev], Duration::from_secs(10));
            }
        }
    }
}

/// Removes an agent's cgroup trees under every mounted hierarchy.
fn remove_cgroups(parent: &str) {
    fn rm_tree(p: &Path) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    rm_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(p);
    }
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Ok(rd) = std::fs::read_dir(base) {
            for ctl in rd.flatten() {
                let p = ctl.path().join(parent);
                if p.is_dir() {
                    rm_tree(&p);
                }
            }
            let p = Path::new(base).join(parent);
            if p.is_dir() {
                rm_tree(&p);
            }
        }
    }
}
