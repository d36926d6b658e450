//! Shims spawned ahead of need.
//!
//! Spawning a shim (fork and exec of `skiff-shim`, the loader, the runtime's start-up)
//! was about 1.5 ms of every container start. The agent keeps a few `skiff-shim
//! --standby` processes waiting on a pipe; a start hands one its arguments and log
//! path (see `take_assignment` in `src/bin/skiff-shim.rs`) and a replacement is
//! spawned in the background. A standby holds nothing of any container until it is
//! assigned, so nothing is shared between containers; it exits when its pipe closes
//! (the agent stopped or died), so none outlives the agent by more than that read.
//! With no standby left (a burst of starts), a start spawns its shim as before.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Standby shims kept: one serves a lone `run`, the second a `run` right after it
/// while the first's replacement is still starting.
pub const STANDBY: usize = 2;

/// Empty arguments after `--standby`: room for the command line an assigned shim
/// shows (its exe, `--task` and an exec's `--exec` path; `set_cmdline` in
/// src/bin/skiff-shim.rs).
const STANDBY_PAD: usize = 1024;

/// A shim spawned for one run: reap `child`, read the report from `stdout`.
pub struct Spawned {
    pub child: Child,
    pub stdout: ChildStdout,
}

struct Standby {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

pub struct ShimPool {
    program: PathBuf,
    /// Arguments before the shim's own (`shim` when it is `skiff shim`).
    leading: Vec<OsString>,
    log_level: String,
    size: usize,
    idle: Mutex<Vec<Standby>>,
    refilling: AtomicBool,
}

impl ShimPool {
    /// A pool of `size` standby shims of `program` run with `leading` arguments first;
    /// none is spawned before the first `refill`. Only the `skiff-shim` binary has a
    /// standby mode: for `skiff shim`, `size` is 0 and every shim is spawned on demand.
    pub fn new(program: &Path, leading: &[&str], log_level: &str, size: usize) -> Arc<Self> {
        Arc::new(ShimPool {
            program: program.to_path_buf(),
            leading: leading.iter().map(OsString::from).collect(),
            log_level: log_level.to_string(),
            size,
            idle: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.leading).env("SKIFF_LOG", &self.log_level);
        // A process group of its own, so signals to the agent's group (Ctrl-C in a
        // terminal) never reach the shim; set through posix_spawn's attributes.
        cmd.process_group(0);
        cmd
    }

    fn spawn_standby(&self) -> std::io::Result<Standby> {
        let mut cmd = self.command();
        // The empty arguments make room for the command line the shim shows once
        // assigned (`set_cmdline` in src/bin/skiff-shim.rs).
        cmd.arg("--standby")
            .args(std::iter::repeat_n("", STANDBY_PAD))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("standby shim without pipes"));
        };
        Ok(Standby {
            child,
            stdin,
            stdout,
        })
    }

    /// Tops the pool up to its size in the background (one filler at a time).
    pub fn refill(self: &Arc<Self>) {
        if self.size == 0 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let short = me.idle.lock().map(|v| v.len() < me.size).unwrap_or(false);
                if !short {
                    break;
                }
                match me.spawn_standby() {
                    Ok(s) => {
                        if let Ok(mut v) = me.idle.lock() {
                            v.push(s);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(program = %me.program.display(), error = %e, "spawning a standby shim");
                        break;
                    }
                }
            }
            me.refilling.store(false, Ordering::Release);
        });
    }

    /// A shim running with `args`, its stderr appended to `log`: a standby one when
    /// there is one, else a fresh spawn.
    pub async fn spawn(self: &Arc<Self>, args: &[&OsStr], log: &Path) -> std::io::Result<Spawned> {
        loop {
            let standby = self.idle.lock().ok().and_then(|mut v| v.pop());
            let Some(mut s) = standby else { break };
            self.refill();
            let mut msg = log.as_os_str().as_bytes().to_vec();
            msg.push(0);
            for a in args {
                msg.extend_from_slice(a.as_bytes());
                msg.push(0);
            }
            // A standby that died (killed by someone) refuses the write: try the next.
            if s.stdin.write_all(&msg).await.is_ok() && s.stdin.shutdown().await.is_ok() {
                drop(s.stdin);
                return Ok(Spawned {
                    child: s.child,
                    stdout: s.stdout,
                });
            }
            let _ = s.child.start_kill();
            tokio::spawn(async move {
                let _ = s.child.wait().await;
            });
        }
        self.refill();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("shim without stdout"))?;
        Ok(Spawned { child, stdout })
    }
}
