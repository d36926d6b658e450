//! Agent configuration: command-line flags over the YAML file (`--config`, default
//! `/etc/skiff/agent.yaml`), over built-in defaults.

use serde::Deserialize;
use skiff_runtime::shim::logfile::{LogConfig, LogOptError, DEFAULT_OPTS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The image-share port of a node without a cluster port: TCP 7946 is the port Swarm
/// nodes already open to each other (Skiff has no gossip to put there).
pub const DEFAULT_SHARE_PORT: u16 = 7946;

/// The agent's settings after merging flags, file and defaults.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Persistent state (`--root`, default /var/lib/skiff).
    pub root: PathBuf,
    /// Runtime state: sockets, bundles, libcontainer state (`--exec-root`, default /run/skiff).
    pub exec_root: PathBuf,
    /// The API socket path (from `--host unix://PATH`).
    pub socket: PathBuf,
    /// cgroup parent for containers; derived from `--root` so agents sharing a machine
    /// never share cgroups.
    pub cgroup_parent: String,
    /// How a container's shim is run: `skiff-shim` beside the agent, else `skiff shim`.
    pub shim_command: ShimCommand,
    pub shim_log_level: String,
    /// Resolvers, search domains and address pools for container networks.
    pub network: NetSettings,
    /// Cluster membership (the embedded controller); `None` runs engine-only (tests).
    pub cluster: Option<skiff_controller::cluster::ClusterConfig>,
    /// Container log options every container starts from (`--log-opt` overrides per
    /// key): the built-in `max-size: 10m, max-file: 3` under agent.yaml's `log_opts`.
    pub log_opts: BTreeMap<String, String>,
    /// Where Prometheus metrics are served (`/metrics`); `None`: not at all.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the Engine API is served to remote CLIs over mutual TLS (client certificates
    /// of this cluster's CA only; see [`crate::remote_api`]); `None`: not at all.
    pub api_listen_addr: Option<std::net::SocketAddr>,
    /// Docker's Engine API socket (`--docker-socket`, agent.yaml `docker_socket`; default
    /// `docker.sock` beside [`AgentConfig::socket`]); `None`: not served.
    pub docker_socket: Option<PathBuf>,
    /// The static init `--init` containers run (`--init-path`, agent.yaml `init_path`);
    /// `None`: the first static one of `/usr/bin/docker-init`, `tini-static`, `tini`.
    pub init_path: Option<PathBuf>,
    /// The TCP port a worker without a cluster port serves its images on, to the other
    /// nodes (`--image-share-port`, agent.yaml `image_share_port`; 0: not served).
    pub image_share_port: u16,
}

/// Networking settings from the agent's config file.
#[derive(Clone, Debug, Default)]
pub struct NetSettings {
    /// Upstream resolvers (`dns:`); empty = the host's resolv.conf.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// `default_address_pools:`; empty = Docker's defaults.
    pub pools: Vec<skiff_runtime::network::ipam::Pool>,
    /// Pools overlay subnets are allocated from while this node leads; empty = 10.0.0.0/8.
    pub overlay_pools: Vec<ipnet::Ipv4Net>,
    /// UDP port of VXLAN traffic (0 = 4789).
    pub vxlan_port: u16,
}

/// The YAML file's shape. Unknown keys are an error, so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub exec_root: Option<PathBuf>,
    pub host: Option<String>,
    pub cgroup_parent: Option<String>,
    pub log_level: Option<String>,
    /// Upstream resolvers for containers (default: the host's resolv.conf).
    pub dns: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    /// Pools new networks' subnets are taken from: `[{base: CIDR, size: PREFIXLEN}]`.
    pub default_address_pools: Option<Vec<skiff_runtime::network::ipam::Pool>>,
    /// Container log rotation defaults: `{max-size: 10m, max-file: 3}` (json-file's keys).
    #[serde(default, deserialize_with = "scalar_map")]
    pub log_opts: Option<BTreeMap<String, String>>,
    /// `text` (default) or `json`; the `--log-format` flag wins.
    pub log_format: Option<String>,
    /// The agent flags of the same names (`--listen-addr IP[:PORT]`, `--advertise-addr`,
    /// `--join ADDR:PORT` with `--token`), for agents started by a service manager.
    pub listen_addr: Option<String>,
    pub advertise_addr: Option<String>,
    pub join: Option<String>,
    /// The join token; only read when the node first joins (keep the file 0600).
    pub join_token: Option<String>,
    /// `IP:PORT` for the Prometheus endpoint (e.g. 127.0.0.1:9323); unset: no endpoint.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `IP[:PORT]` (port 2376 if omitted) for the mutual-TLS Engine API (`--api-listen-addr`).
    pub api_listen_addr: Option<String>,
    /// Engine labels, `KEY=VALUE` (Docker's daemon `labels`): placement constraints
    /// `engine.labels.KEY` match them. `--label` flags win over keys here.
    pub labels: Option<Vec<String>>,
    /// Where Docker's Engine API is served (`--docker-socket`): a unix socket path, or
    /// `""` for none. Default: `docker.sock` beside the skiff socket.
    pub docker_socket: Option<String>,
    /// The static init binary for `run --init` (default: looked up, see `--init-path`).
    pub init_path: Option<PathBuf>,
    /// `--image-share-port`: where a worker without `listen_addr` serves its images
    /// (default 7946; 0: not served).
    pub image_share_port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad YAML or a bad value, with the file, line and column at fault.
    #[error("{0}")]
    Parse(skiff_stack::StackError),
    #[error("--host {0:?}: the agent listens on unix://PATH")]
    BadHost(String),
    #[error("--docker-socket {0:?}: expected an absolute unix socket path (or \"\" for none)")]
    BadDockerSocket(String),
    #[error("log_opts: {0}")]
    LogOpts(#[from] LogOptError),
}

/// Reads a map whose values may be YAML strings or numbers (`max-file: 3`), as strings.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    use serde::de::Error;
    let Some(m) = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)? else {
        return Ok(None);
    };
    m.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(D::Error::custom(format!(
                        "{k}: expected a string or a number"
                    )))
                }
            };
            Ok((k, s))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The built-in log options overridden per key by agent.yaml's `log_opts`, validated,
/// so a bad value stops the agent at start rather than failing every `run`.
pub fn log_opts(
    file: Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let defaults: BTreeMap<String, String> = DEFAULT_OPTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(LogConfig::merge(&defaults, &file.unwrap_or_default())?.config)
}

pub const DEFAULT_ROOT: &str = "/var/lib/skiff";
pub const DEFAULT_EXEC_ROOT: &str = "/run/skiff";
pub const DEFAULT_HOST: &str = "unix:///run/skiff/skiff.sock";
pub const DEFAULT_CONFIG: &str = "/etc/skiff/agent.yaml";

impl FileConfig {
    /// Reads the file; a missing default file is an empty config, a missing explicit one an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(s) if s.trim().is_empty() => Ok(Self::default()),
            Ok(s) => Self::parse(&s, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
        }
    }
}

impl FileConfig {
    /// Reads agent.yaml with the stack loader's YAML parser: the same node budget and
    /// depth cap (a billion-laughs file fails before it allocates), and errors that name
    /// the file, line and column of the value at fault, or of the unknown key.
    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        use skiff_stack::{Document, StackError, Step};
        let Some(doc) = Document::parse(text, path).map_err(ConfigError::Parse)? else {
            return Ok(Self::default());
        };
        serde_path_to_error::deserialize(doc.to_json()).map_err(|e| {
            let steps: Vec<Step> = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(Step::Key(key)),
                    serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                    _ => None,
                })
                .collect();
            let message = e.inner().to_string();
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split_once('`'))
                .map(|(name, _)| name);
            // The path may already end in the unknown key; its position is the key's.
            let parent = match (unknown, steps.split_last()) {
                (Some(name), Some((Step::Key(k), rest))) if *k == name => rest,
                _ => &steps[..],
            };
            let location = unknown
                .and_then(|name| doc.key_location(parent, name))
                .unwrap_or_else(|| doc.location(&steps));
            let field = match (e.path().to_string(), unknown) {
                (p, Some(name)) if p == "." => name.to_string(),
                (p, _) => p,
            };
            ConfigError::Parse(StackError::Invalid {
                location,
                field,
                message,
            })
        })
    }
}

/// The Docker API socket for a skiff socket: `docker.sock` in the same directory, so
/// `/run/skiff/skiff.sock` gives `/run/skiff/docker.sock` and agents sharing a machine
/// with distinct `--host`s never share one.
pub fn default_docker_socket(skiff_socket: &Path) -> PathBuf {
    skiff_socket.with_file_name("docker.sock")
}

/// `--docker-socket` as given (`unix://PATH`, `PATH`, or empty for none).
pub fn docker_socket_path(value: &str) -> Result<Option<PathBuf>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    let p = value.strip_prefix("unix://").unwrap_or(value);
    if !p.starts_with('/') {
        return Err(ConfigError::BadDockerSocket(value.into()));
    }
    Ok(Some(PathBuf::from(p)))
}

/// The shim's own binary, installed beside `skiff` (src/bin/skiff-shim.rs).
pub const SHIM_BINARY: &str = "skiff-shim";

/// The program and leading arguments that run a shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShimCommand {
    /// `skiff-shim ARGS`: the small binary, whose private memory per container is small.
    Binary(PathBuf),
    /// `skiff shim ARGS`: the agent's own binary, when `skiff-shim` is not beside it.
    Subcommand(PathBuf),
}

impl ShimCommand {
    /// `skiff-shim` from the directory of the agent's executable; if an install copied
    /// only `skiff`, `AGENT_EXE shim`, with a warning (once: the agent calls this once).
    pub fn beside(agent_exe: &Path) -> Self {
        let cmd = Self::choose(agent_exe, |p| p.is_file());
        if let ShimCommand::Subcommand(exe) = &cmd {
            tracing::warn!(
                agent = %exe.display(),
                "{SHIM_BINARY} is not installed beside the agent: shims run as `skiff shim`, \
                 whose private memory is about 0.8 MB more per container (install {SHIM_BINARY} \
                 beside skiff)"
            );
        }
        cmd
    }

    fn choose(agent_exe: &Path, exists: impl Fn(&Path) -> bool) -> Self {
        match agent_exe.parent().map(|dir| dir.join(SHIM_BINARY)) {
            Some(shim) if exists(&shim) => ShimCommand::Binary(shim),
            _ => ShimCommand::Subcommand(agent_exe.to_path_buf()),
        }
    }

    /// The executable to spawn.
    pub fn program(&self) -> &Path {
        match self {
            ShimCommand::Binary(p) | ShimCommand::Subcommand(p) => p,
        }
    }

    /// The arguments before the shim's own (`--task ...`).
    pub fn leading_args(&self) -> &'static [&'static str] {
        match self {
            ShimCommand::Binary(_) => &[],
            ShimCommand::Subcommand(_) => &["shim"],
        }
    }
}

/// Strips `unix://` from a host URL.
pub fn socket_path(host: &str) -> Result<PathBuf, ConfigError> {
    host.strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| ConfigError::BadHost(host.into()))
}

impl AgentConfig {
    pub fn new(
        root: PathBuf,
        exec_root: PathBuf,
        socket: PathBuf,
        cgroup_parent: Option<String>,
        shim_command: ShimCommand,
    ) -> Self {
        let cgroup_parent = cgroup_parent.unwrap_or_else(|| {
            if root == Path::new(DEFAULT_ROOT) {
                "skiff".into()
            } else {
                // Distinct agents on one machine get distinct cgroup trees.
                let h = skiff_runtime::digest::Digest::of(root.to_string_lossy().as_bytes());
                format!("skiff-{}", &h.hex()[..8])
            }
        });
        Self {
            root,
            exec_root,
            socket,
            cgroup_parent,
            shim_command,
            shim_log_level: "info".into(),
            network: Default::default(),
            cluster: None,
            log_opts: DEFAULT_OPTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics_addr: None,
            api_listen_addr: None,
            docker_socket: None,
            init_path: None,
            image_share_port: DEFAULT_SHARE_PORT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_urls() {
        assert_eq!(
            socket_path("unix:///run/x.sock").expect("ok"),
            PathBuf::from("/run/x.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:1").is_err());
        assert!(socket_path("unix://rel").is_err());
    }

    #[test]
    fn shim_binary_beside_the_agent_else_the_agents_subcommand() {
        let agent = Path::new("/usr/local/bin/skiff");
        let beside = Path::new("/usr/local/bin/skiff-shim");
        let cmd = ShimCommand::choose(agent, |p| p == beside);
        assert_eq!(cmd, ShimCommand::Binary(beside.into()));
        assert_eq!(cmd.program(), beside);
        assert!(cmd.leading_args().is_empty());

        let cmd = ShimCommand::choose(agent, |_| false);
        assert_eq!(cmd, ShimCommand::Subcommand(agent.into()));
        assert_eq!(cmd.program(), agent);
        assert_eq!(cmd.leading_args(), ["shim"]);
    }

    #[test]
    fn shim_binary_found_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = dir.path().join("skiff");
        std::fs::write(&agent, "").expect("agent");
        assert_eq!(
            ShimCommand::beside(&agent),
            ShimCommand::Subcommand(agent.clone())
        );
        // A directory of that name is not the binary.
        std::fs::create_dir(dir.path().join(SHIM_BINARY)).expect("mkdir");
        assert_eq!(
            ShimCommand::beside(&agent),
            ShimCommand::Subcommand(agent.clone())
        );
        std::fs::remove_dir(dir.path().join(SHIM_BINARY)).expect("rmdir");
        std::fs::write(dir.path().join(SHIM_BINARY), "").expect("shim");
        assert_eq!(
            ShimCommand::beside(&agent),
            ShimCommand::Binary(dir.path().join(SHIM_BINARY))
        );
    }

    #[test]
    fn cgroup_parent_differs_per_root() {
        let a = AgentConfig::new(
            "/var/lib/skiff".into(),
            "/run/skiff".into(),
            "/s".into(),
            None,
            ShimCommand::Subcommand("/x".into()),
        );
        let b = AgentConfig::new(
            "/tmp/a".into(),
            "/run/a".into(),
            "/s".into(),
            None,
            ShimCommand::Subcommand("/x".into()),
        );
        assert_eq!(a.cgroup_parent, "skiff");
        assert_ne!(a.cgroup_parent, b.cgroup_parent);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "roots: /x\n").expect("write");
        let err = FileConfig::load(&p, true).expect_err("typo accepted");
        assert!(err.to_string().contains("roots"), "{err}");
        assert!(FileConfig::load(&dir.path().join("missing"), false).is_ok());
        assert!(FileConfig::load(&dir.path().join("missing"), true).is_err());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "root: /x\nroots: /y\n").expect("write");
        let err = FileConfig::load(&p, true).expect_err("typo accepted");
        let want = format!("{}:2:1: roots: unknown field `roots`", p.display());
        assert!(err.to_string().starts_with(&want), "{err}");
        std::fs::write(&p, "dns:\n  - 1.1.1.1\n  - [x]\n").expect("write");
        let err = FileConfig::load(&p, true).expect_err("list accepted as a string");
        let want = format!("{}:3:5: dns[1]: invalid type", p.display());
        assert!(err.to_string().starts_with(&want), "{err}");
        std::fs::write(&p, "root: [unclosed\n").expect("write");
        let err = FileConfig::load(&p, true).expect_err("bad YAML accepted");
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn billion_laughs_agent_yaml_fails_fast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.yaml");
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        std::fs::write(&p, &text).expect("write");
        let started = std::time::Instant::now();
        let err = FileConfig::load(&p, true).expect_err("bomb accepted");
        assert!(err.to_string().contains("YAML bomb"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Deep nesting is capped too.
        let deep = format!("root: {}{}\n", "[".repeat(100), "]".repeat(100));
        std::fs::write(&p, deep).expect("write");
        let err = FileConfig::load(&p, true).expect_err("deep nesting accepted");
        assert!(err.to_string().contains("nesting deeper than"), "{err}");
    }

    #[test]
    fn metrics_addr_is_an_ip_and_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "metrics_addr: 127.0.0.1:9323\n").expect("write");
        let c = FileConfig::load(&p, true).expect("load");
        assert_eq!(
            c.metrics_addr,
            Some("127.0.0.1:9323".parse().expect("addr"))
        );
        std::fs::write(&p, "metrics_addr: localhost\n").expect("write");
        let err = FileConfig::load(&p, true).expect_err("not an address");
        assert!(err.to_string().contains("metrics_addr"), "{err}");
        assert_eq!(FileConfig::default().metrics_addr, None, "off by default");
    }

    #[test]
    fn log_opts_override_defaults_per_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "log_opts:\n  max-size: 50m\n").expect("write");
        let f = FileConfig::load(&p, true).expect("load");
        let o = log_opts(f.log_opts).expect("valid");
        assert_eq!(o.get("max-size").map(String::as_str), Some("50m"));
        assert_eq!(o.get("max-file").map(String::as_str), Some("3"));
        std::fs::write(&p, "log_opts: {max-size: 1m, max-file: 5}\n").expect("write");
        let f = FileConfig::load(&p, true).expect("numbers are read as strings");
        assert_eq!(
            log_opts(f.log_opts)
                .expect("valid")
                .get("max-file")
                .map(String::as_str),
            Some("5")
        );
        std::fs::write(&p, "log_opts: {max-file: zero}\n").expect("write");
        let f = FileConfig::load(&p, true).expect("load");
        let err = log_opts(f.log_opts).expect_err("bad max-file");
        assert!(
            err.to_string()
                .starts_with("log_opts: invalid log opt max-file"),
            "{err}"
        );
        assert_eq!(log_opts(None).expect("defaults").len(), 2);
    }
}
