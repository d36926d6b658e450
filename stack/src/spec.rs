//! The normalised stack: what the CLI prints for `stack config` and what the
//! controller deploys. Every short form of the file has been expanded, every
//! reference checked, relative paths made absolute, and Swarm's defaults filled in,
//! so consumers never re-interpret Compose syntax.
//!
//! Maps are `BTreeMap`s so output is deterministic (a deploy of the same file twice
//! must compare equal). Durations serialise in Go's notation (`1m30s`), the way
//! Compose files write them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A whole stack, keyed by the names used in the file.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct StackSpec {
    /// The stack (project) name; resources are created as `NAME_key`.
    pub name: String,
    pub services: BTreeMap<String, ServiceSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, ConfigSpec>,
}

/// One service. `None` / empty means "the image's or Swarm's default".
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub image: String,
    /// Overrides the image's CMD (string forms are split like a shell would).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT; `Some([])` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` (or bare `KEY`), env_file entries first then `environment`,
    /// sorted by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    /// Networks by their key in the file; `default` when the file names none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Container labels (the service's own labels are in `deploy.labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "go_duration_opt"
    )]
    pub stop_grace_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// `HOST:IP` entries for /etc/hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    /// tmpfs mount targets (`/run` or `/run:size=64k`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// /dev/shm size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// IPC namespace: `private`, `shareable`, `host`, `none`, `service:NAME` or
    /// `container:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// PID namespace: `host`, `service:NAME`, `container:NAME`, or none for the
    /// task's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Network namespace instead of the stack's networks: `host`, `none`, `bridge`,
    /// `service:NAME` or `container:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// `HOST[:CONTAINER[:PERMISSIONS]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Services (`service:NAME[:ro]`) whose volumes this one mounts too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// The profiles that enable this service (none: always enabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// How to build `image` before deploying, when the file says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    #[serde(default)]
    pub deploy: Deploy,
}

impl ServiceSpec {
    /// Services whose namespaces this one joins (`service:NAME` in `network_mode`,
    /// `ipc`, `pid`): its tasks run beside theirs and start after them.
    pub fn shared_services(&self) -> impl Iterator<Item = &str> {
        [&self.network_mode, &self.ipc, &self.pid]
            .into_iter()
            .filter_map(|m| m.as_deref()?.strip_prefix("service:"))
    }
}

/// A service's `build:` section, normalised (the short form is the context).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BuildSpec {
    /// Absolute directory (relative paths resolved against the file's directory).
    pub context: String,
    /// Dockerfile path relative to the context (default `Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// Build arguments; a `None` value means "from the environment, if set there".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network for RUN steps: `host`, `none` or `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_contexts: BTreeMap<String, String>,
    /// Top-level secrets offered to `RUN --mount=type=secret`, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_cache: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
    /// More names for the built image, besides the service's `image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// `ingress` publishes on every node through the routing mesh; `host` only on the
/// nodes running a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    #[default]
    Ingress,
    Host,
}

/// One published (or merely declared) port. Ranges are expanded to one entry each.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortConfig {
    pub target: u16,
    /// `None`: Swarm picks a port from its dynamic range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PortMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named volume (declared at the top level) or an anonymous one (no source).
    #[default]
    Volume,
    /// A host path, made absolute against the first stack file's directory.
    Bind,
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Volume key (as in the file's top-level `volumes`) or absolute host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BindOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_host_path: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeOptions {
    #[serde(default, skip_serializing_if = "is_false")]
    pub nocopy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TmpfsOptions {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceNetwork {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// Docker's healthcheck: `test` is `["CMD", args...]`, `["CMD-SHELL", "cmd"]` or
/// `["NONE"]` (disabled, also what `disable: true` becomes).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "go_duration_opt"
    )]
    pub interval: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "go_duration_opt"
    )]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "go_duration_opt"
    )]
    pub start_period: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "go_duration_opt"
    )]
    pub start_interval: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependsCondition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// A `depends_on` entry. Swarm does not order service start-up; it is kept so the
/// controller may, and so `stack config` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub condition: DependsCondition,
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart: bool,
    pub required: bool,
}

/// A secret or config mounted into a service's containers (read-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// Key in the top-level `secrets` / `configs`.
    pub source: String,
    /// Absolute path in the container: `/run/secrets/NAME` for secrets, `/NAME` for
    /// configs by default.
    pub target: String,
    pub uid: String,
    pub gid: String,
    /// Permission bits (default 0o444).
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Logging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Replicated with a count, or one task on every eligible node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ServiceMode {
    Replicated { replicas: u64 },
    Global,
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// A virtual IP load-balances over the tasks.
    #[default]
    Vip,
    /// DNS round-robin over the task addresses.
    Dnsrr,
}

/// Swarm's `deploy:` section, with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Deploy {
    #[serde(flatten)]
    pub mode: ServiceMode,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub update_config: UpdateConfig,
    #[serde(default)]
    pub rollback_config: UpdateConfig,
    /// Service labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<Preference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
}

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
            && self.preferences.is_empty()
            && self.max_replicas_per_node.is_none()
    }
}

/// The node attribute a constraint or spread preference looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeAttribute {
    NodeId,
    NodeHostname,
    NodeRole,
    NodePlatformOs,
    NodePlatformArch,
    NodeLabel(String),
    EngineLabel(String),
}

impl fmt::Display for NodeAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAttribute::NodeId => f.write_str("node.id"),
            NodeAttribute::NodeHostname => f.write_str("node.hostname"),
            NodeAttribute::NodeRole => f.write_str("node.role"),
            NodeAttribute::NodePlatformOs => f.write_str("node.platform.os"),
            NodeAttribute::NodePlatformArch => f.write_str("node.platform.arch"),
            NodeAttribute::NodeLabel(l) => write!(f, "node.labels.{l}"),
            NodeAttribute::EngineLabel(l) => write!(f, "engine.labels.{l}"),
        }
    }
}

impl FromStr for NodeAttribute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let label = |rest: &str| {
            if rest.is_empty() {
                Err(format!("{s:?} names no label"))
            } else {
                Ok(rest.to_string())
            }
        };
        // Swarm matches attribute names case-insensitively; labels keep their case.
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "node.id" => NodeAttribute::NodeId,
            "node.hostname" => NodeAttribute::NodeHostname,
            "node.role" => NodeAttribute::NodeRole,
            "node.platform.os" => NodeAttribute::NodePlatformOs,
            "node.platform.arch" => NodeAttribute::NodePlatformArch,
            _ if lower.starts_with("node.labels.") => NodeAttribute::NodeLabel(label(&s["node.labels.".len()..])?),
            _ if lower.starts_with("engine.labels.") => {
                NodeAttribute::EngineLabel(label(&s["engine.labels.".len()..])?)
            }
            _ => {
                return Err(format!(
                    "unknown attribute {s:?} (expected node.id, node.hostname, node.role, node.platform.os, \
                     node.platform.arch, node.labels.NAME or engine.labels.NAME)"
                ))
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConstraintOp {
    Eq,
    Ne,
}

/// A placement constraint such as `node.role==manager` or `node.labels.zone!=b`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub attribute: NodeAttribute,
    pub op: ConstraintOp,
    pub value: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{}{op}{}", self.attribute, self.value)
    }
}

impl FromStr for Constraint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, op, value) = if let Some((k, v)) = s.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(format!("constraint {s:?} has no == or != operator"));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            return Err(format!("constraint {s:?} has no value"));
        }
        if value.contains("==") || value.contains("!=") {
            return Err(format!("constraint {s:?} has more than one operator"));
        }
        let attribute: NodeAttribute = key.parse()?;
        if attribute == NodeAttribute::NodeRole
            && !matches!(value.to_ascii_lowercase().as_str(), "manager" | "worker")
        {
            return Err(format!("constraint {s:?}: node.role is manager or worker"));
        }
        Ok(Constraint {
            attribute,
            op,
            value: value.to_string(),
        })
    }
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `spread: node.labels.zone`: balance tasks over the values of an attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preference {
    pub spread: NodeAttribute,
}

#[derive(Serialize, Deserialize)]
struct PreferenceRepr {
    spread: String,
}

impl Serialize for Preference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PreferenceRepr {
            spread: self.spread.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Preference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = PreferenceRepr::deserialize(d)?;
        Ok(Preference {
            spread: r.spread.parse().map_err(serde::de::Error::custom)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ResourceReservations>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.limits.is_none() && self.reservations.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// CPUs × 10⁹ (`cpus: "0.5"` is 500000000), Docker's NanoCPUs. Serialised as
    /// `cpus: "0.5"`, so printed specs load back as Compose files.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "cpus",
        with = "nano_cpus"
    )]
    pub nano_cpus: Option<u64>,
    /// Serialised as `memory: BYTES`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "memory")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceReservations {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "cpus",
        with = "nano_cpus"
    )]
    pub nano_cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "memory")]
    pub memory_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

/// Swarm's defaults: condition any, delay 5s, unlimited attempts, no window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    #[serde(with = "go_duration")]
    pub delay: Duration,
    /// `None`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "go_duration_opt"
    )]
    pub window: Option<Duration>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: Duration::from_secs(5),
            max_attempts: None,
            window: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    /// Only valid in `update_config`.
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// `update_config` / `rollback_config`. Swarm's defaults: parallelism 1, no delay,
/// failure_action pause, monitor 5s, max_failure_ratio 0, order stop-first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks updated at once; 0 means all.
    pub parallelism: u64,
    #[serde(with = "go_duration")]
    pub delay: Duration,
    pub failure_action: FailureAction,
    #[serde(with = "go_duration")]
    pub monitor: Duration,
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// A top-level network. `name` is the resolved cluster-wide name.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// `STACK_key` unless the file gives `name:` or the network is external.
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// `overlay` unless given (and unset for external networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_ipv6: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ipam {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpamPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// `STACK_key` unless the file gives `name:` or the volume is external.
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where a secret's or config's bytes come from. Files are read at deploy time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An absolute path on the machine running the CLI.
    File(PathBuf),
    /// The value of this variable in the deploying environment.
    Environment(String),
    /// Inline content (configs only).
    Content(String),
    /// Already exists in the cluster under `name`.
    External,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    /// `STACK_key` unless the file gives `name:` or the secret is external.
    pub name: String,
    /// Serialised the Compose way (`file: PATH`, `external: true`...).
    #[serde(flatten, with = "source_repr")]
    pub source: Source,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Configs have the same shape as secrets.
pub type ConfigSpec = SecretSpec;

/// Go's `time.Duration` notation: `1h2m3.5s`, `300ms`, `0s`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_secs = d.as_secs();
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    let s = trim_fraction(
        (total_secs % 60) as u128 * 1_000_000_000 + d.subsec_nanos() as u128,
        1_000_000_000,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

fn trim_fraction(n: u128, unit: u128) -> String {
    let whole = n / unit;
    let frac = n % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Parses Go's duration notation (`1m30s`, `1.5h`, `250ms`, `0`). No negatives.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 10s, 1m30s, 500ms)");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("invalid duration {s:?}: missing unit (e.g. 10s)")),
            _ => return Err(bad()),
        };
        total += num * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e10 {
        return Err(bad());
    }
    Ok(Duration::from_nanos((total * 1e9).round() as u64))
}

/// `500000000` nano-CPUs as `"0.5"`.
pub fn format_nano_cpus(n: u64) -> String {
    trim_fraction(n as u128, 1_000_000_000)
}

mod nano_cpus {
    use super::*;
    pub fn serialize<S: serde::Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => s.serialize_str(&format_nano_cpus(*n)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(t) => match t.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some((v * 1e9).round() as u64)),
                _ => Err(serde::de::Error::custom(format!("invalid cpus {t:?}"))),
            },
            None => Ok(None),
        }
    }
}

mod source_repr {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    struct Repr {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        external: bool,
    }

    pub fn serialize<S: serde::Serializer>(src: &Source, s: S) -> Result<S::Ok, S::Error> {
        let mut r = Repr::default();
        match src {
            Source::File(p) => r.file = Some(p.clone()),
            Source::Environment(v) => r.environment = Some(v.clone()),
            Source::Content(c) => r.content = Some(c.clone()),
            Source::External => r.external = true,
        }
        r.serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
        let r = Repr::deserialize(d)?;
        match (r.file, r.environment, r.content, r.external) {
            (Some(p), None, None, false) => Ok(Source::File(p)),
            (None, Some(v), None, false) => Ok(Source::Environment(v)),
            (None, None, Some(c), false) => Ok(Source::Content(c)),
            (None, None, None, true) => Ok(Source::External),
            _ => Err(serde::de::Error::custom(
                "expected exactly one of file, environment, content, external",
            )),
        }
    }
}

mod go_duration {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_go_duration(*d))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_go_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod go_duration_opt {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_go_duration(*d)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(t) => parse_go_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip() {
        for (text, d) in [
            ("0s", Duration::ZERO),
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("1h0m0s", Duration::from_secs(3600)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2µs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(format_go_duration(d), text);
            assert_eq!(parse_go_duration(text), Ok(d), "{text}");
        }
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "10", "ten", "-1s", "1x", "s", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constraints_parse_and_print() {
        let c: Constraint = "node.role == manager".parse().expect("valid");
        assert_eq!(
            c,
            Constraint {
                attribute: NodeAttribute::NodeRole,
                op: ConstraintOp::Eq,
                value: "manager".into()
            }
        );
        assert_eq!(c.to_string(), "node.role==manager");
        let c: Constraint = "node.labels.zone!=b".parse().expect("valid");
        assert_eq!(c.attribute, NodeAttribute::NodeLabel("zone".into()));
        assert_eq!(c.op, ConstraintOp::Ne);
        let c: Constraint = "engine.labels.Disk==ssd".parse().expect("valid");
        assert_eq!(c.attribute, NodeAttribute::EngineLabel("Disk".into()));
        assert!("node.hostname==a".parse::<Constraint>().is_ok());
        assert!("node.id!=x1".parse::<Constraint>().is_ok());
        for bad in [
            "node.role=manager",
            "node.rack==1",
            "node.labels.==a",
            "node.role==boss",
            "node.id==",
            "a==b==c",
        ] {
            assert!(bad.parse::<Constraint>().is_err(), "{bad}");
        }
    }
}
