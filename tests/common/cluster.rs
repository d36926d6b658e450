//! A multi-agent cluster on loopback for end-to-end tests: each member is a real
//! `skiff agent` process with its own --root, socket and cluster port. Everything is
//! killed and removed on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub dir: tempfile::TempDir,
    pub port: Option<u16>,
    args: Vec<String>,
    /// Flags kept across restarts (unlike the join).
    extra: Vec<String>,
    child: Option<Child>,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Member {
    /// Starts an agent; `listen` opens a cluster port; `join` = (port, token).
    pub fn start(listen: bool, join: Option<(u16, String)>) -> Member {
        Self::start_in(std::path::Path::new("/tmp"), listen, join)
    }

    /// [`Self::start`] with more agent flags (kept across restarts).
    pub fn start_with(listen: bool, join: Option<(u16, String)>, extra: &[&str]) -> Member {
        Self::start_full(std::path::Path::new("/tmp"), listen, join, extra)
    }

    /// [`Self::start`] with the agent's state under `base` (benchmarks put it on a disk
    /// that really syncs; /tmp is often tmpfs).
    pub fn start_in(base: &std::path::Path, listen: bool, join: Option<(u16, String)>) -> Member {
        Self::start_full(base, listen, join, &[])
    }

    fn start_full(
        base: &std::path::Path,
        listen: bool,
        join: Option<(u16, String)>,
        extra: &[&str],
    ) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("skc")
            .tempdir_in(base)
            .expect("tempdir");
        let port = listen.then(free_port);
        let mut args = vec![];
        if let Some(p) = port {
            args.push("--listen-addr".to_string());
            args.push(format!("127.0.0.1:{p}"));
        }
        if let Some((p, t)) = join {
            args.extend([
                "--join".to_string(),
                format!("127.0.0.1:{p}"),
                "--token".into(),
                t,
            ]);
        }
        let mut m = Member {
            dir,
            port,
            args,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        m.spawn();
        m
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("s.sock").display())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        std::fs::write(d.join("agent.yaml"), "").expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("agent.log"))
            .expect("log");
        let child = Command::new(crate::common::bin())
            .arg("--host")
            .arg(self.host())
            .arg("agent")
            .arg("--root")
            .arg(self.root())
            .arg("--exec-root")
            .arg(d.join("run"))
            .arg("--config")
            .arg(d.join("agent.yaml"))
            .arg("--default-addr-pool")
            .arg(crate::common::overlay_pool())
            .args(&self.args)
            .args(&self.extra)
            .env("SKIFF_LOG", "info")
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_cmd(&["cluster", "info"]).code != 0 {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent exited ({st}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not come up; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the agent without waiting for it; returns its exit status if it exits
    /// within `within` (a refused join).
    pub fn spawn_expect_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("agent.log"))
            .expect("log");
        let mut child = Command::new(crate::common::bin())
            .arg("--host")
            .arg(self.host())
            .arg("agent")
            .arg("--root")
            .arg(self.root())
            .arg("--exec-root")
            .arg(d.join("run"))
            .arg("--config")
            .arg(d.join("agent.yaml"))
            .args(&self.args)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again on the same state (a join happens once; it resumes).
    pub fn restart(&mut self) {
        self.kill9();
        self.args.truncate(if self.port.is_some() { 2 } else { 0 });
        self.spawn();
    }

    pub fn try_cmd(&self, args: &[&str]) -> Out {
        let o = Command::new(crate::common::bin())
            .arg("--host")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run skiff");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        let o = self.try_cmd(args);
        assert_eq!(o.code, 0, "skiff {args:?}: {} {}", o.stdout, o.stderr);
        o.stdout
    }

    pub fn node_id(&self) -> String {
        let info = self.cmd(&["cluster", "info"]);
        info.lines()
            .find_map(|l| l.strip_prefix("Node ID: "))
            .expect("node id")
            .trim()
            .to_string()
    }
}

impl Drop for Member {
    /// Kills the agent and removes what it wired on the host (links, nft table, FORWARD
    /// rules): a killed agent cannot clean up after itself.
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.try_cmd(&["ps", "-aq", "--no-trunc"]).stdout;
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let _ = self.try_cmd(&["rm", "-f", id]);
            }
        }
        self.kill9();
        crate::common::cleanup_agent_leftovers(self.dir.path(), &self.root());
        crate::common::cleanup_network(&self.root());
    }
}

/// Polls `cond` until it holds or `timeout` passes; tests never sleep blindly.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
