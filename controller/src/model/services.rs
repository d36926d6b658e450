//! Services and tasks as the controller stores them (JSON specs of the generic keyed
//! objects in the state machine: kinds `service` and `task`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const KIND_SERVICE: &str = "service";
pub const KIND_TASK: &str = "task";
/// Cluster networks created by stacks (`stack::StackNetwork` specs).
pub const KIND_NETWORK: &str = "network";

/// One mount of a task's container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `volume`, `bind` or `tmpfs`.
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A secret or config a task sees as a read-only file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileMount {
    /// `secret` or `config`: the object kind holding the content.
    pub kind: String,
    /// The object's cluster name.
    pub name: String,
    /// Absolute path in the container.
    pub target: String,
    pub mode: u32,
}

/// The stored content of a secret or config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileContent {
    pub content: String,
    /// The object's labels (Docker's `Spec.Labels`; `docker stack rm` finds a stack's
    /// secrets by them). Absent when empty, so older stored specs compare equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When it was made and last changed (unix ms; 0 = not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_at_ms: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

pub const KIND_SECRET: &str = "secret";
pub const KIND_CONFIG: &str = "config";

/// A port the service publishes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortSpec {
    pub target: u16,
    pub published: u16,
    pub protocol: String,
    /// `ingress` (every node, load-balanced) or `host` (only where a task runs).
    pub mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// Docker's forms: ["CMD", ...], ["CMD-SHELL", "..."], ["NONE"].
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub pids: i64,
}

/// What every task of a service runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTemplate {
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: String,
    pub user: String,
    pub working_dir: String,
    pub mounts: Vec<MountSpec>,
    /// Network names (as the cluster knows them) and the aliases on each.
    pub networks: BTreeMap<String, Vec<String>>,
    pub limits: Limits,
    pub reservations: Limits,
    pub healthcheck: Option<Healthcheck>,
    pub stop_signal: String,
    pub stop_grace_period_ms: u64,
    /// Secrets and configs mounted read-only.
    #[serde(default)]
    pub files: Vec<FileMount>,
    /// Container settings beyond the common ones (from a stack file's service keys).
    #[serde(default)]
    pub container: ContainerOptions,
}

/// Per-container settings a stack file may give a service (`cap_add`, `init`,
/// `ulimits`...), applied by the executor as `docker run` would apply its flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    /// `HOST[:CONTAINER[:PERMISSIONS]]`.
    pub devices: Vec<String>,
    pub init: bool,
    pub tty: bool,
    pub stdin_open: bool,
    pub read_only: bool,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `HOST:IP`.
    pub extra_hosts: Vec<String>,
    /// `NAME=SOFT:HARD`.
    pub ulimits: Vec<String>,
    /// `TARGET[:OPTIONS]` tmpfs mounts.
    pub tmpfs: Vec<String>,
    /// Log options for the local log files (`max-size`, `max-file`).
    pub log_opts: Vec<String>,
    /// Namespaced kernel parameters (`net.*`, IPC ones), checked by the engine.
    pub sysctls: BTreeMap<String, String>,
    /// /dev/shm size in bytes; 0: the engine's default (64 MiB).
    pub shm_size: i64,
    /// IPC namespace: `private`, `shareable`, `host`, `none`, `container:NAME` or
    /// `service:NAME` (a task of that service on the same node); empty: private.
    pub ipc: String,
    /// PID namespace: `host`, `container:NAME`, `service:NAME`, or empty for the
    /// task's own.
    pub pid: String,
    /// Network namespace in place of the task's networks: `host`, `none`, `bridge`,
    /// `container:NAME` or `service:NAME`; empty: the task's networks.
    pub network_mode: String,
}

/// A service that must reach a state before this one's tasks are placed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceDependency {
    /// The dependency's cluster-wide service name.
    pub service: String,
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    pub condition: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replicated { replicas: u64 },
    Global,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Replicated { replicas: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: String,
    pub delay_ms: u64,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// 0 = attempts count forever.
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            condition: "any".into(),
            delay_ms: 5000,
            max_attempts: 0,
            window_ms: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// 0 = all at once.
    pub parallelism: u64,
    pub delay_ms: u64,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: String,
    pub monitor_ms: u64,
    pub max_failure_ratio: f64,
    /// `stop-first` or `start-first`.
    pub order: String,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay_ms: 0,
            failure_action: "pause".into(),
            monitor_ms: 5000,
            max_failure_ratio: 0.0,
            order: "stop-first".into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// Label keys of `spread: node.labels.KEY` preferences.
    pub spread: Vec<String>,
    pub max_replicas_per_node: u32,
}

/// A service's desired state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// The stack it belongs to, if any.
    pub stack: String,
    pub labels: BTreeMap<String, String>,
    pub mode: Mode,
    pub template: TaskTemplate,
    pub placement: Placement,
    pub restart_policy: RestartPolicy,
    pub update_config: UpdateConfig,
    pub rollback_config: UpdateConfig,
    pub ports: Vec<PortSpec>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: String,
    /// Stack `depends_on`: tasks wait, unplaced, until these are satisfied.
    #[serde(default)]
    pub depends_on: Vec<ServiceDependency>,
    /// Services (cluster-wide names) whose volumes this one mounts (`volumes_from`):
    /// its tasks go to the node where a task of the first of them runs.
    #[serde(default)]
    pub colocate_with: Vec<String>,
}

/// Progress of a rolling update, kept on the service object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_completed`.
    pub state: String,
    pub message: String,
    pub started_at_ms: i64,
    /// When the next batch may start (after `delay`).
    pub next_batch_at_ms: i64,
}

/// The stored service: spec, the spec it replaced (for rollback), update progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub spec: ServiceSpec,
    pub previous: Option<ServiceSpec>,
    /// Bumped on every spec change; tasks record the generation they run.
    pub generation: u64,
    pub update: Option<UpdateStatus>,
    /// Virtual IPs on overlay networks (network name → address), allocated by the
    /// controller; empty for `dnsrr` services.
    #[serde(default)]
    pub vips: BTreeMap<String, std::net::Ipv4Addr>,
    /// When the service was created and its spec last changed (ms since the epoch, set
    /// by the proposer so every replica stores the same); 0 for services stored before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_at_ms: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Preparing,
    Starting,
    Running,
    Complete,
    Failed,
    Shutdown,
    Rejected,
    Orphaned,
}

impl TaskState {
    /// Every state, in lifecycle order (metrics report each; tests walk them).
    pub const ALL: [TaskState; 11] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Preparing,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Failed,
        TaskState::Shutdown,
        TaskState::Rejected,
        TaskState::Orphaned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Failed => "failed",
            TaskState::Shutdown => "shutdown",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }
    /// The task will never run (again).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    #[default]
    Running,
    Shutdown,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub message: String,
    pub error: String,
    pub container_id: String,
    pub exit_code: i32,
    pub timestamp_ms: i64,
    /// The health check verdict, when the task has one: `starting`, `healthy`, `unhealthy`.
    #[serde(default)]
    pub health: String,
}

/// One scheduled unit of a service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub service_id: String,
    pub service_name: String,
    pub stack: String,
    /// Replicated services: 1..=replicas. Global services: 0.
    pub slot: u64,
    /// Global services: the node the task belongs to from birth.
    pub node_id: String,
    pub generation: u64,
    pub template: TaskTemplate,
    pub desired: Desired,
    pub status: TaskStatus,
    pub created_at_ms: i64,
    /// Restart policy bookkeeping: when this task may start (replacements wait `delay`).
    pub not_before_ms: i64,
    /// How many times the slot has been restarted by the policy.
    pub attempt: u64,
    /// Addresses on overlay networks (network name → address), allocated by the
    /// controller so no two nodes ever hand out the same one.
    #[serde(default)]
    pub addresses: BTreeMap<String, std::net::Ipv4Addr>,
}
