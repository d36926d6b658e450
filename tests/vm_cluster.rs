//! A cluster of real virtual machines (`deploy/vm-cluster`), as root: QEMU VMs booted
//! from a Debian image built with mmdebstrap (cached in SKIFF_VM_CACHE, default
//! /var/cache/skiff-vm, between runs), each provisioned by cloud-init from the user data
//! in deploy/cloud-init/ with this build's binary, the agent run by systemd. Separate
//! kernels, real NICs on a bridge, reboots and power cuts: what the namespace clusters
//! cannot show. Every phase drives the host's `skiff` through `--host ssh://` (the remote
//! host option) or runs commands in the VMs over ssh; the cluster is torn down on drop.
//!
//! `vm_cluster_end_to_end` is one test, phases in order, because booting the VMs is the
//! expensive part (and it is opt-in, `--ignored`, for the same reason; under emulation
//! run it with `--release`, docs/deploy.md section 11):
//! 3 Ready nodes; the README's example stack answering on every VM; `systemctl restart
//! skiff` under traffic; a worker reboot; a worker power cut; a rolling upgrade.
//! Each phase prints its duration (see BENCHMARKS.md). On failure the test prints each
//! VM's containers, links and agent log; SKIFF_VM_KEEP_ON_FAILURE=1 keeps the cluster for a
//! look (remove it with `deploy/vm-cluster down --dir DIR`), and SKIFF_VM_CLUSTER_DIR=DIR
//! runs the phases on such a kept cluster instead of booting a new one.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/vm-cluster")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct VmCluster {
    dir: PathBuf,
    ns: String,
    /// (name, address, --host URL) from DIR/hosts.
    hosts: Vec<(String, String, String)>,
}

impl VmCluster {
    fn up(managers: u32, workers: u32) -> VmCluster {
        common::require_root();
        // A cluster an earlier run kept (SKIFF_VM_KEEP_ON_FAILURE): the phases run on it,
        // and it is torn down at the end like a fresh one.
        if let Some(dir) = std::env::var_os("SKIFF_VM_CLUSTER_DIR") {
            return VmCluster::attach(PathBuf::from(dir), managers + workers);
        }
        let dir = tempfile::Builder::new()
            .prefix("skvm")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        std::fs::remove_dir(&dir).expect("rmdir");
        // Constructed before `up` runs, so a failed `up` is torn down too.
        let mut c = VmCluster {
            dir: dir.clone(),
            ns: String::new(),
            hosts: vec![],
        };
        let out = Command::new(script())
            .args(["up", "--managers", &managers.to_string()])
            .args(["--workers", &workers.to_string(), "--dir"])
            .arg(&dir)
            .arg("--bin")
            .arg(common::bin())
            .output()
            .expect("run deploy/vm-cluster");
        assert!(
            out.status.success(),
            "vm-cluster up failed: {}{}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        c.read_files(managers + workers);
        c
    }

    fn attach(dir: PathBuf, nodes: u32) -> VmCluster {
        let mut c = VmCluster {
            dir,
            ns: String::new(),
            hosts: vec![],
        };
        c.read_files(nodes);
        c
    }

    fn read_files(&mut self, nodes: u32) {
        let dir = self.dir.clone();
        let c = self;
        c.ns = std::fs::read_to_string(dir.join("netns"))
            .expect("DIR/netns")
            .trim()
            .to_string();
        c.hosts = std::fs::read_to_string(dir.join("hosts"))
            .expect("DIR/hosts")
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split_whitespace().collect();
                (p.len() == 3).then(|| (p[0].into(), p[1].into(), p[2].into()))
            })
            .collect();
        assert_eq!(c.hosts.len() as u32, nodes, "DIR/hosts");
    }

    fn host(&self, name: &str) -> &(String, String, String) {
        self.hosts.iter().find(|h| h.0 == name).expect("host")
    }

    fn addr(&self, name: &str) -> String {
        self.host(name).1.clone()
    }

    /// The gateway on the VMs' bridge, where the cluster script serves files.
    fn gateway(&self) -> String {
        let a = self.addr("manager1");
        format!("{}.1", &a[..a.rfind('.').expect("IPv4")])
    }

    /// `skiff ARGS` on the host, reaching `name`'s agent through `--host ssh://...`.
    fn try_skiff_on(&self, name: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(common::bin())
            .args(["--host", &self.host(name).2])
            .args(args)
            .env(
                "SKIFF_SSH_COMMAND",
                format!("ssh -F {}", self.dir.join("ssh_config").display()),
            )
            .output()
            .expect("run skiff")
    }

    fn skiff(&self, args: &[&str]) -> String {
        let out = self.try_skiff_on("manager1", args);
        assert!(
            out.status.success(),
            "skiff {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    }

    /// Runs a shell command as root in VM `name`.
    fn try_ssh(&self, name: &str, cmd: &str) -> Output {
        Command::new(script())
            .args(["ssh", name, "--dir"])
            .arg(&self.dir)
            .args(["--", cmd])
            .output()
            .expect("run vm-cluster ssh")
    }

    fn ssh(&self, name: &str, cmd: &str) -> String {
        let out = self.try_ssh(name, cmd);
        assert!(
            out.status.success(),
            "{name}: {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out)
    }

    fn vm(&self, verb: &str, name: &str) {
        let st = Command::new(script())
            .args([verb, name, "--dir"])
            .arg(&self.dir)
            .status()
            .expect("run vm-cluster");
        assert!(st.success(), "vm-cluster {verb} {name}");
    }

    /// The body of http://ADDR:PORT/PATH fetched from inside the namespace, if it answers.
    fn curl(&self, addr: &str, path: &str) -> Option<String> {
        curl_in(&self.ns, addr, path)
    }

    /// Ids of the running stack containers on VM `name` (the agent's own view).
    fn stack_containers(&self, name: &str) -> BTreeSet<String> {
        let out = self.try_ssh(
            name,
            "skiff ps -q --no-trunc --filter label=com.docker.stack.namespace=hello",
        );
        text(&out).lines().map(str::to_string).collect()
    }

    fn all_stack_containers(&self) -> usize {
        self.hosts
            .iter()
            .map(|h| self.stack_containers(&h.0).len())
            .sum()
    }

    /// Running tasks of stack `hello` per node, from `stack ps`.
    fn running_tasks(&self) -> Vec<(String, String)> {
        let out = self.try_skiff_on(
            "manager1",
            &[
                "stack",
                "ps",
                "hello",
                "--format",
                "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
            ],
        );
        text(&out)
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split_whitespace().collect();
                (p.len() >= 4 && p[2] == "Running" && p[3] == "Running")
                    .then(|| (p[0].to_string(), p[1].to_string()))
            })
            .collect()
    }

    fn ready_nodes(&self) -> usize {
        let out = self.try_skiff_on("manager1", &["node", "ls"]);
        text(&out).matches(" Ready ").count()
    }

    /// What a failed run needs to be understood: each VM's agent log, tasks and links.
    fn diagnose(&self) {
        if let Ok(o) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.try_skiff_on("manager1", &["stack", "ps", "hello", "--no-trunc"])
        })) {
            eprintln!(
                "--- stack ps hello\n{}{}",
                text(&o),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        for h in &self.hosts {
            let o = self.try_ssh(
                &h.0,
                "skiff ps -a; ip -br addr; ip -d link show type vxlan; journalctl -u skiff --no-pager -n 40",
            );
            eprintln!(
                "--- {}\n{}{}",
                h.0,
                text(&o),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    fn wait_ssh(&self, name: &str, timeout: Duration) {
        wait_until(&format!("{name} answering ssh"), timeout, || {
            self.try_ssh(name, "systemctl is-active --quiet skiff && skiff version")
                .status
                .success()
        });
    }
}

fn curl_in(ns: &str, addr: &str, path: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-fsS", "-m", "10"])
        .arg(format!("http://{addr}:8080{path}"))
        .output()
        .ok()?;
    out.status.success().then(|| text(&out))
}

impl Drop for VmCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnose();
            if std::env::var_os("SKIFF_VM_KEEP_ON_FAILURE").is_some() {
                eprintln!(
                    "vm_cluster: SKIFF_VM_KEEP_ON_FAILURE: kept; remove it with: deploy/vm-cluster down --dir {}",
                    self.dir.display()
                );
                return;
            }
        }
        let _ = Command::new(script())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .status();
    }
}

/// Requests to the published port on every VM, in a loop until dropped; counts failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(c: &VmCluster, addrs: Vec<String>) -> Traffic {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, o, f, ns) = (stop.clone(), ok.clone(), failed.clone(), c.ns.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for a in &addrs {
                    match curl_in(&ns, a, "/") {
                        Some(b) if b.contains("hello from web") => {
                            o.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => f.fetch_add(1, Ordering::Relaxed),
                    };
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Traffic {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the loop: (answered, failed).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Polls `cond` every second until it holds or `timeout` passes (VMs are slow; each
/// probe runs ssh or the CLI).
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn phase(name: &str, started: Instant) {
    eprintln!(
        "vm_cluster: phase {name}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A copy of the binary under test that differs in its bytes (a trailing marker, which
/// the ELF loader ignores), so install.sh sees a new binary and performs an upgrade.
fn new_binary(dir: &Path) -> PathBuf {
    let path = dir.join("www/skiff-new");
    let mut bytes = std::fs::read(dir.join("www/skiff")).expect("served binary");
    bytes.extend_from_slice(b"\nskiff-vm-cluster-upgrade\n");
    std::fs::write(&path, &bytes).expect("write new binary");
    path
}

/// Not in the default run (`cargo test`): booting three VMs under TCG emulation takes longer
/// than the whole suite's CI budget on 2 cores (BENCHMARKS.md, "Real VMs"). Run it with
/// `cargo test --test vm_cluster -- --ignored` (root; KVM makes it several times faster).
#[test]
#[ignore = "boots QEMU VMs (tens of minutes under TCG): cargo test --test vm_cluster -- --ignored"]
fn vm_cluster_end_to_end() {
    let t = Instant::now();
    let c = VmCluster::up(1, 2);
    phase("up (image, boot, cloud-init, join)", t);

    // 3 Ready nodes, seen from the host through the remote host option.
    let nodes = c.skiff(&["node", "ls"]);
    assert_eq!(nodes.matches(" Ready ").count(), 3, "{nodes}");
    for h in ["manager1", "worker1", "worker2"] {
        assert!(nodes.contains(h), "{h} in node ls: {nodes}");
        // The agent runs under systemd, installed by the cloud-init user data.
        assert_eq!(
            c.ssh(h, "systemctl is-active skiff").trim(),
            "active",
            "{h}"
        );
    }

    // The README's example stack, deployed from the host; its port answers on every VM
    // (routing mesh), and web reaches api over the overlay (VXLAN between VMs).
    let t = Instant::now();
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hello/app.yaml");
    let app = app.to_string_lossy().into_owned();
    c.skiff(&[
        "stack",
        "deploy",
        "-c",
        &app,
        "--detach=false",
        "--timeout",
        "300s",
        "hello",
    ]);
    let addrs: Vec<String> = c.hosts.iter().map(|h| h.1.clone()).collect();
    for a in &addrs {
        wait_until(&format!("web on {a}:8080"), Duration::from_secs(60), || {
            c.curl(a, "/").is_some_and(|b| b.contains("hello from web"))
        });
        wait_until(
            &format!("web -> api on {a}"),
            Duration::from_secs(120),
            || {
                c.curl(a, "/cgi-bin/api")
                    .is_some_and(|b| b.contains("hello from api"))
            },
        );
    }
    let nodes_used: BTreeSet<String> = c.running_tasks().into_iter().map(|t| t.1).collect();
    assert!(
        nodes_used.len() >= 2,
        "tasks on more than one VM: {nodes_used:?}"
    );
    assert_eq!(c.all_stack_containers(), 4, "3 web + 1 api containers");
    phase("stack deploy and routing mesh", t);

    // `systemctl restart skiff` on a worker during traffic: its containers keep running
    // (KillMode=process), the node stays Ready, the port keeps answering.
    let t = Instant::now();
    let before = c.stack_containers("worker1");
    assert!(!before.is_empty(), "worker1 runs tasks");
    let pid_before = c.ssh("worker1", "systemctl show -p MainPID --value skiff");
    let traffic = Traffic::start(&c, addrs.clone());
    std::thread::sleep(Duration::from_secs(2));
    c.ssh("worker1", "systemctl restart skiff");
    c.wait_ssh("worker1", Duration::from_secs(60));
    assert_ne!(
        c.ssh("worker1", "systemctl show -p MainPID --value skiff"),
        pid_before,
        "the agent restarted"
    );
    wait_until("3 Ready nodes", Duration::from_secs(60), || {
        c.ready_nodes() == 3
    });
    std::thread::sleep(Duration::from_secs(5));
    let (ok, failed) = traffic.finish();
    assert_eq!(
        c.stack_containers("worker1"),
        before,
        "containers survive an agent restart"
    );
    let restarts = c.ssh(
        "worker1",
        "for id in $(skiff ps -q --filter label=com.docker.stack.namespace=hello); do skiff inspect -f '{{.RestartCount}}' $id; done",
    );
    assert!(
        restarts.lines().all(|l| l.trim() == "0"),
        "restart counts: {restarts}"
    );
    assert!(
        ok > 0 && failed == 0,
        "traffic: {ok} answered, {failed} failed"
    );
    phase("systemctl restart skiff under traffic", t);

    // A worker reboots: the agent comes back under systemd, the stack is whole again
    // and nothing is duplicated.
    let t = Instant::now();
    let _ = c.try_ssh("worker2", "systemctl reboot");
    wait_until("worker2 going down", Duration::from_secs(60), || {
        !c.try_ssh("worker2", "true").status.success()
    });
    c.wait_ssh("worker2", Duration::from_secs(300));
    wait_until(
        "3 Ready nodes after the reboot",
        Duration::from_secs(120),
        || c.ready_nodes() == 3,
    );
    wait_until(
        "4 running tasks and 4 containers",
        Duration::from_secs(120),
        || c.running_tasks().len() == 4 && c.all_stack_containers() == 4,
    );
    let names: Vec<String> = c.running_tasks().into_iter().map(|t| t.0).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no task twice: {names:?}");
    for a in &addrs {
        wait_until(
            &format!("web on {a} after reboot"),
            Duration::from_secs(60),
            || c.curl(a, "/").is_some_and(|b| b.contains("hello from web")),
        );
    }
    phase("worker reboot", t);

    // Power cut on a worker: its tasks run elsewhere within 30 s; back up, its stale
    // containers are removed.
    let t = Instant::now();
    let victim = c
        .running_tasks()
        .into_iter()
        .map(|t| t.1)
        .find(|n| n != "manager1")
        .unwrap_or_else(|| "worker1".into());
    let stale = c.stack_containers(&victim);
    assert!(!stale.is_empty(), "{victim} runs tasks");
    c.vm("poweroff", &victim);
    let cut = Instant::now();
    wait_until(
        &format!("tasks moved off {victim} within 30 s"),
        Duration::from_secs(30),
        || {
            let tasks = c.running_tasks();
            tasks.len() == 4 && tasks.iter().all(|t| t.1 != victim)
        },
    );
    eprintln!(
        "vm_cluster: tasks moved off {victim} in {:.1} s",
        cut.elapsed().as_secs_f64()
    );
    c.vm("start", &victim);
    c.wait_ssh(&victim, Duration::from_secs(300));
    wait_until(
        &format!("stale containers removed on {victim}"),
        Duration::from_secs(120),
        || {
            let out = c.try_ssh(&victim, "skiff ps -aq --no-trunc");
            out.status.success() && text(&out).lines().all(|id| !stale.contains(id))
        },
    );
    wait_until(
        "3 Ready nodes after the power cut",
        Duration::from_secs(120),
        || c.ready_nodes() == 3,
    );
    assert_eq!(c.running_tasks().len(), 4);
    wait_until("4 containers in all", Duration::from_secs(60), || {
        c.all_stack_containers() == 4
    });
    phase("worker power cut", t);

    // A rolling upgrade with install.sh --bin NEW, one VM at a time, while the published
    // port keeps answering on every VM.
    let t = Instant::now();
    let new = new_binary(&c.dir);
    let new_sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&new).expect("read")))
    };
    let traffic = Traffic::start(&c, addrs.clone());
    for h in ["worker1", "worker2", "manager1"] {
        let out = c.ssh(
            h,
            &format!(
                "curl -fsS -o /var/tmp/skiff-new http://{}:8000/skiff-new && chmod 0755 /var/tmp/skiff-new && \
                 /usr/local/src/skiff/deploy/install.sh --bin /var/tmp/skiff-new",
                c.gateway()
            ),
        );
        assert!(out.contains("restarted skiff.service"), "{h}: {out}");
        c.wait_ssh(h, Duration::from_secs(60));
        let running = c.ssh(
            h,
            "sha256sum /proc/$(systemctl show -p MainPID --value skiff)/exe",
        );
        assert!(
            running.starts_with(&new_sum),
            "{h} runs the new binary: {running}"
        );
        wait_until(
            &format!("3 Ready after upgrading {h}"),
            Duration::from_secs(60),
            || c.ready_nodes() == 3,
        );
    }
    let (ok, failed) = traffic.finish();
    assert!(
        ok > 0 && failed == 0,
        "traffic: {ok} answered, {failed} failed"
    );
    assert_eq!(c.running_tasks().len(), 4);
    phase("rolling upgrade with install.sh --bin", t);
}

/// The files users run on VirtualBox and in clouds validate offline with Debian's tools:
/// the user data with `cloud-init schema`, the Vagrantfile with `vagrant validate`; and
/// each of them runs the provisioning script the VM cluster above exercises.
#[test]
fn user_data_and_vagrantfile_validate() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for f in ["manager.yaml", "worker.yaml"] {
        let path = root.join("deploy/cloud-init").join(f);
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .expect("cloud-init is not installed (deploy/deps.sh --test)");
        assert!(
            out.status.success() && text(&out).contains("Valid cloud-config"),
            "{f}: {}{}",
            text(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        let body = std::fs::read_to_string(&path).expect("read user data");
        assert!(
            body.contains("deploy/vm/provision.sh"),
            "{f} runs provision.sh"
        );
    }
    let home = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    // A copy, so that vagrant's .vagrant/ state lands in a scratch directory.
    let vagrant = work.path().join("deploy/vagrant");
    std::fs::create_dir_all(&vagrant).expect("mkdir");
    for f in ["Vagrantfile", "provision.sh"] {
        std::fs::copy(root.join("deploy/vagrant").join(f), vagrant.join(f)).expect("copy");
    }
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(&vagrant)
        .env("VAGRANT_HOME", home.path())
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .expect("vagrant is not installed (deploy/deps.sh --test)");
    assert!(
        out.status.success() && text(&out).contains("validated successfully"),
        "vagrant validate: {}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let provision =
        std::fs::read_to_string(root.join("deploy/vagrant/provision.sh")).expect("provision.sh");
    assert!(provision.contains("deploy/vm/provision.sh"));
}
