//! A multi-host cluster made of network namespaces (`deploy/netns-cluster`): one
//! manager and N workers, each agent in its own namespace with its own address.
//! Dropping it tears everything down, even when the test failed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct NetnsCluster {
    pub dir: PathBuf,
    pub hosts: Vec<(String, String, String)>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/netns-cluster")
}

impl NetnsCluster {
    pub fn up(workers: u32) -> NetnsCluster {
        Self::up_with(1, workers)
    }

    /// `managers` managers (the first founds the cluster and leads) and `workers`.
    pub fn up_with(managers: u32, workers: u32) -> NetnsCluster {
        Self::up_importing(managers, workers, true)
    }

    /// Like [`NetnsCluster::up_with`], but busybox is imported on the managers only:
    /// the workers start with an empty image store.
    pub fn up_base_on_managers(managers: u32, workers: u32) -> NetnsCluster {
        Self::up_importing(managers, workers, false)
    }

    fn up_importing(managers: u32, workers: u32, on_workers: bool) -> NetnsCluster {
        crate::common::require_root();
        let dir = loop {
            let dir = tempfile::Builder::new()
                .prefix("skc")
                .tempdir_in("/tmp")
                .expect("tempdir")
                .keep();
            let _ = std::fs::remove_dir(&dir);
            // The script derives the bridge subnet (10.251.N.0/24) from the directory;
            // another cluster on this machine (a chaos run) may hold that subnet.
            if !subnet_in_use(&dir) {
                break dir;
            }
        };
        let mut c = NetnsCluster {
            dir: dir.clone(),
            hosts: vec![],
        };
        let out = Command::new(script())
            .args([
                "up",
                "--managers",
                &managers.to_string(),
                "--workers",
                &workers.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .arg("--bin")
            .arg(crate::common::bin())
            .output()
            .expect("netns-cluster up");
        assert!(
            out.status.success(),
            "netns-cluster up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hosts = std::fs::read_to_string(dir.join("hosts")).expect("hosts file");
        c.hosts = hosts
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split_whitespace().collect();
                (p.len() == 3).then(|| (p[0].to_string(), p[1].to_string(), p[2].to_string()))
            })
            .collect();
        let tar = crate::common::busybox_tar().to_string_lossy().into_owned();
        for (name, _, _) in c.hosts.clone() {
            if on_workers || name.starts_with("manager") {
                c.on(&name, &["image", "import", &tar, "busybox:latest"]);
            }
        }
        c
    }

    pub fn sock(&self, host: &str) -> String {
        self.hosts
            .iter()
            .find(|h| h.0 == host)
            .map(|h| format!("unix://{}", h.2))
            .expect("host")
    }

    /// Writes `yaml` into the cluster's directory and deploys it as stack `name` from
    /// manager1, waiting until it converges.
    pub fn deploy(&self, name: &str, yaml: &str) {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).expect("write stack");
        let f = file.to_string_lossy().into_owned();
        self.on(
            "manager1",
            &[
                "stack",
                "deploy",
                "-c",
                &f,
                "--detach=false",
                "--timeout",
                "90s",
                name,
            ],
        );
    }

    /// Runs skiff against `host`; (success, stdout + stderr).
    #[allow(dead_code)]
    pub fn try_on(&self, host: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(crate::common::bin())
            .arg("--host")
            .arg(self.sock(host))
            .args(args)
            .output()
            .expect("run skiff");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The ID of `image` on `host`, if it has it.
    #[allow(dead_code)]
    pub fn image_id(&self, host: &str, image: &str) -> Option<String> {
        let (ok, out) = self.try_on(host, &["image", "inspect", "-f", "{{.Id}}", image]);
        ok.then(|| out.trim().to_string())
    }

    pub fn on(&self, host: &str, args: &[&str]) -> String {
        let out = Command::new(crate::common::bin())
            .arg("--host")
            .arg(self.sock(host))
            .args(args)
            .output()
            .expect("run skiff");
        assert!(
            out.status.success(),
            "skiff {args:?} on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Running tasks per node hostname.
    pub fn placement(&self, stack: &str) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for l in self.on("manager1", &["stack", "ps", stack]).lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() >= 6 && cols[4] == "Running" && cols[5] == "Running" {
                *m.entry(cols[3].to_string()).or_default() += 1;
            }
        }
        m
    }

    pub fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}");
    }
}

/// Whether the underlay subnet deploy/netns-cluster would pick for `dir` is taken.
fn subnet_in_use(dir: &std::path::Path) -> bool {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(dir.to_string_lossy().as_bytes()));
    let n = u8::from_str_radix(&h[..2], 16).unwrap_or(0);
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.contains(&format!(" 10.251.{n}.1/"))
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .arg("--bin")
            .arg(crate::common::bin())
            .status();
    }
}

impl NetnsCluster {
    /// The network namespace of a host (named as deploy/netns-cluster names it).
    pub fn netns(&self, host: &str) -> String {
        use sha2::Digest;
        let real = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let h = hex::encode(sha2::Sha256::digest(real.to_string_lossy().as_bytes()));
        format!("/run/netns/skc{}-{host}", &h[..6])
    }

    /// Runs a command inside a host's network namespace; returns (success, stdout).
    pub fn in_host(&self, host: &str, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns(host)))
            .args(cmd)
            .output()
            .expect("nsenter");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The address of a host on the underlay.
    pub fn addr(&self, host: &str) -> String {
        self.hosts
            .iter()
            .find(|h| h.0 == host)
            .map(|h| h.1.clone())
            .expect("host")
    }
}
