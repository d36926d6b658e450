//! Agent configuration: command-line flags over the YAML file (`--config`, default
//! `/etc/skiff/agent.yaml`), over built-in defaults.

use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// The binary spawned as `skiff shim`.
    pub shim_binary: PathBuf,
    pub shim_log_level: String,
    /// Resolvers, search domains and address pools for container networks.
    pub network: crate::network::NetSettings,
    /// Cluster membership (the embedded controller); `None` runs engine-only (tests).
    pub cluster: Option<skiff_controller::cluster::ClusterConfig>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("--host {0:?}: the agent listens on unix://PATH")]
    BadHost(String),
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
            Ok(s) => serde_yaml::from_str(&s).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
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
        shim_binary: PathBuf,
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
            shim_binary,
            shim_log_level: "info".into(),
            network: Default::default(),
            cluster: None,
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
    fn cgroup_parent_differs_per_root() {
        let a = AgentConfig::new(
            "/var/lib/skiff".into(),
            "/run/skiff".into(),
            "/s".into(),
            None,
            "/x".into(),
        );
        let b = AgentConfig::new(
            "/tmp/a".into(),
            "/run/a".into(),
            "/s".into(),
            None,
            "/x".into(),
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
}
