//! `version` and `info`: what this host is and which kernel features are missing.

use crate::config::AgentConfig;
use skiff_proto::engine::{InfoResponse, VersionInfo};
use std::path::Path;

pub const API_VERSION: &str = "1.0";

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn version() -> VersionInfo {
    VersionInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        git_commit: option_env!("SKIFF_GIT_COMMIT").unwrap_or("unknown").into(),
        os: std::env::consts::OS.into(),
        arch: skiff_runtime::image::config::host_architecture().into(),
        kernel_version: kernel(),
        runtime: "libcontainer (youki) 0.7".into(),
    }
}

/// `v1`, `v2` or `hybrid` (v1 controllers with a v2 hierarchy mounted beside them).
pub fn cgroup_version() -> &'static str {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    match (v2, hybrid) {
        (true, _) => "2",
        (false, true) => "1 (hybrid)",
        _ => "1",
    }
}

/// WARNING lines for kernel features Skiff uses that this host lacks.
pub fn warnings() -> Vec<String> {
    let mut w = Vec::new();
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("overlay") {
        w.push(
            "WARNING: overlayfs is not available: containers cannot get a root filesystem".into(),
        );
    }
    let v2 = cgroup_version() == "2";
    let controllers: Vec<String> = if v2 {
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    } else {
        std::fs::read_to_string("/proc/cgroups")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split_whitespace().nth(3) == Some("1"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    };
    for c in ["memory", "pids", "cpu", "cpuset"] {
        if !controllers.iter().any(|x| x == c) {
            w.push(format!(
                "WARNING: the {c} cgroup controller is not available: --{c} limits will not work"
            ));
        }
    }
    if !v2 && !controllers.iter().any(|x| x == "blkio") {
        w.push("WARNING: the blkio cgroup controller is not available".into());
    }
    if which("nft").is_none() {
        w.push("WARNING: nft (nftables) is not installed: published ports and network isolation are unavailable".into());
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if userns.trim() == "0" || userns.is_empty() {
        w.push("WARNING: user namespaces are disabled".into());
    }
    if !Path::new("/proc/sys/net/ipv4/ip_forward").exists() {
        w.push("WARNING: IPv4 forwarding is unavailable".into());
    }
    w
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .unwrap_or(None)
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(bin))
                .find(|p| p.is_file())
        })
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The host's memory in bytes (`MemTotal`); 0 when unreadable.
pub fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|k| k.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// CPUs this process may use (its affinity mask, as Docker's NCPU).
pub fn ncpu() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// What this node reports to the cluster: capacity, platform and `engine_labels`.
pub fn node_description(
    engine_labels: std::collections::BTreeMap<String, String>,
) -> skiff_controller::state::NodeDescription {
    skiff_controller::state::NodeDescription {
        nano_cpus: i64::from(ncpu()) * 1_000_000_000,
        memory_bytes: mem_total() as i64,
        engine_labels,
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        ..Default::default()
    }
}

pub fn info(cfg: &AgentConfig, containers: u32, running: u32, images: u32) -> InfoResponse {
    let mem = mem_total();
    InfoResponse {
        containers,
        running,
        paused: 0,
        stopped: containers - running,
        images,
        storage_driver: "overlay2".into(),
        cgroup_driver: "cgroupfs".into(),
        cgroup_version: cgroup_version().into(),
        kernel_version: kernel(),
        operating_system: os_name(),
        architecture: std::env::consts::ARCH.into(),
        ncpu: ncpu(),
        mem_total: mem,
        root_dir: cfg.root.display().to_string(),
        exec_root: cfg.exec_root.display().to_string(),
        name: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        warnings: warnings(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        security_options: "seccomp,name=default".into(),
    }
}
