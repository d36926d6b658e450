//! A container's durable description ([`ContainerRecord`], written once at create) and
//! its lifecycle state ([`ContainerState`], rewritten atomically on every transition).
//!
//! Lifecycle rules live here, on the state type, so the agent and its tests agree.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    pub name: String,
    pub maximum_retry_count: u32,
}

impl RestartPolicy {
    /// Parses Docker's `--restart` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let maximum_retry_count = match count {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| format!("invalid restart policy {s:?}: {c:?} is not a number"))?,
        };
        match (name, count) {
            ("" | "no", None) => Ok(Self { name: "no".into(), maximum_retry_count }),
            ("on-failure", _) => Ok(Self { name: name.into(), maximum_retry_count }),
            ("always" | "unless-stopped", None) => Ok(Self { name: name.into(), maximum_retry_count }),
            ("always" | "unless-stopped" | "no", Some(_)) => {
                Err(format!("invalid restart policy {s:?}: maximum retry count is only valid with on-failure"))
            }
            _ => Err(format!(
                "invalid restart policy {s:?}: want no, always, unless-stopped or on-failure[:max-retries]"
            )),
        }
    }

    /// Whether a container that stopped with `exit_code` should be started again.
    /// `manually_stopped` is set by `stop`/`kill` through the API; `restart_count` is
    /// how many restarts the policy has made so far.
    pub fn should_restart(
        &self,
        exit_code: i32,
        manually_stopped: bool,
        restart_count: u32,
    ) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                exit_code != 0
                    && (self.maximum_retry_count == 0 || restart_count < self.maximum_retry_count)
            }
            _ => false,
        }
    }
}

/// Everything a container was created with; Docker's `Config` + `HostConfig` in one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The image as the user named it.
    pub image: String,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub domainname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub labels: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub network_mode: String,
    pub stop_signal: String,
    /// Seconds to wait after the stop signal before SIGKILL.
    pub stop_timeout: Option<u32>,
    pub exposed_ports: Vec<String>,
    /// User mounts, resolved at create (volumes named, `--volumes-from` expanded).
    #[serde(default)]
    pub mounts: Vec<crate::volume::MountPoint>,
    /// `-v` as given (Docker's HostConfig.Binds).
    #[serde(default)]
    pub binds: Vec<String>,
    #[serde(default)]
    pub volumes_from: Vec<String>,
    /// Resource limits; `skiff update` rewrites them.
    #[serde(default)]
    pub resources: crate::cgroup::Resources,
    /// `--ip`, `--network-alias`, `--dns*`, `--add-host`, `-p`, `-P`.
    #[serde(default)]
    pub net: crate::network::ContainerNet,
    /// `--log-opt` over the agent's `log_opts`, merged at create (Docker's
    /// HostConfig.LogConfig). Records from before log rotation have none and run with
    /// the agent's current defaults.
    #[serde(default)]
    pub log_config: Option<crate::shim::logfile::LogConfig>,
    /// `--init`: run under a tiny init (Docker's HostConfig.Init).
    #[serde(default)]
    pub init: bool,
    /// `--device` mappings as given (Docker's HostConfig.Devices).
    #[serde(default)]
    pub devices: Vec<super::devices::DeviceMapping>,
    /// `--device-cgroup-rule` (Docker's HostConfig.DeviceCgroupRules).
    #[serde(default)]
    pub device_cgroup_rules: Vec<String>,
    /// `--sysctl`s (Docker's HostConfig.Sysctls).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `--shm-size` in bytes; create records the default (64 MiB) when none is given,
    /// as Docker does. 0 (a record from before) means the default.
    #[serde(default)]
    pub shm_size: i64,
    /// `--ipc` as given (`private` when none), resolved at every start.
    #[serde(default)]
    pub ipc_mode: String,
    /// `--pid` as given (empty: private), resolved at every start.
    #[serde(default)]
    pub pid_mode: String,
}

impl ContainerConfig {
    pub fn no_new_privileges(&self) -> bool {
        self.security_opt.iter().any(|o| {
            o == "no-new-privileges"
                || o == "no-new-privileges:true"
                || o == "no-new-privileges=true"
        })
    }
}

/// The immutable part of a container (only `name` changes, by `rename`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub image_id: Digest,
    pub config: ContainerConfig,
    /// The argv the container runs (entrypoint + cmd resolved against the image).
    pub path: String,
    pub args: Vec<String>,
    /// Overlay lower directories, topmost first.
    pub lowers: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// How a run ended, as the shim records it in `exit.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    pub oom_killed: bool,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Set when the process could not be started at all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The mutable lifecycle state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    pub pid: i32,
    pub shim_pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub restart_count: u32,
    /// Stopped through the API: restart policies (but `always` at agent start) do not apply.
    pub manually_stopped: bool,
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        matches!(
            self.status,
            Status::Running | Status::Paused | Status::Restarting
        )
    }
    pub fn can_start(&self) -> bool {
        matches!(self.status, Status::Created | Status::Exited | Status::Dead)
    }
    pub fn can_remove(&self, force: bool) -> bool {
        force || !self.is_running()
    }
    /// Folds a finished run into the state.
    pub fn record_exit(&mut self, exit: &ExitInfo) {
        self.status = Status::Exited;
        self.pid = 0;
        self.shim_pid = 0;
        self.exit_code = exit.exit_code;
        self.oom_killed = exit.oom_killed;
        self.error = exit.error.clone();
        self.finished_at = exit.finished_at.or_else(|| Some(chrono::Utc::now()));
    }
}

/// Where a container's files live. `root` is persistent (`--root`), `exec` is runtime
/// state (`--exec-root`, normally on tmpfs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Paths {
    pub dir: PathBuf,
    pub exec_dir: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, exec_root: &Path, id: &str) -> Self {
        Self {
            dir: root.join("containers").join(id),
            exec_dir: exec_root.join("containers").join(id),
        }
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("config.v2.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    /// The OCI bundle directory (holds `config.json`).
    pub fn bundle(&self) -> PathBuf {
        self.exec_dir.clone()
    }
    pub fn rootfs(&self) -> PathBuf {
        self.exec_dir.join("rootfs")
    }
    pub fn task(&self) -> PathBuf {
        self.exec_dir.join("task.json")
    }
    /// The shim's attach/control socket. Sockets live in a flat `<exec-root>/s/` with
    /// short names: a unix socket path must fit in 108 bytes.
    pub fn socket(&self) -> PathBuf {
        self.socket_dir()
            .join(format!("{}.sock", &self.id()[..16.min(self.id().len())]))
    }

    /// The socket of one exec.
    pub fn exec_socket(&self, exec_id: &str) -> PathBuf {
        self.socket_dir().join(format!(
            "{}-{}.sock",
            &self.id()[..16.min(self.id().len())],
            &exec_id[..12.min(exec_id.len())]
        ))
    }

    fn socket_dir(&self) -> PathBuf {
        self.exec_dir
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("s"))
            .unwrap_or_else(|| self.exec_dir.clone())
    }

    fn id(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    pub fn shim_log(&self) -> PathBuf {
        self.exec_dir.join("shim.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_parsing() {
        assert_eq!(RestartPolicy::parse("no").expect("no").name, "no");
        assert_eq!(
            RestartPolicy::parse("on-failure:3")
                .expect("of")
                .maximum_retry_count,
            3
        );
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn restart_decisions() {
        let of = RestartPolicy::parse("on-failure:2").expect("parse");
        assert!(of.should_restart(1, false, 0));
        assert!(of.should_restart(1, false, 1));
        assert!(!of.should_restart(1, false, 2));
        assert!(!of.should_restart(0, false, 0));
        let always = RestartPolicy::parse("always").expect("parse");
        assert!(always.should_restart(0, false, 10));
        assert!(!always.should_restart(0, true, 0));
        assert!(!RestartPolicy::parse("no")
            .expect("parse")
            .should_restart(1, false, 0));
    }

    #[test]
    fn lifecycle_rules() {
        let mut s = ContainerState::default();
        assert!(s.can_start());
        s.status = Status::Running;
        assert!(!s.can_start());
        assert!(!s.can_remove(false));
        assert!(s.can_remove(true));
        s.record_exit(&ExitInfo {
            exit_code: 3,
            ..Default::default()
        });
        assert_eq!(s.status, Status::Exited);
        assert_eq!(s.exit_code, 3);
        assert!(s.can_remove(false));
    }
}
