//! Namespaces a container may share and the kernel parameters it may set: Docker's
//! `--ipc`/`--pid` values, `--sysctl` validation and `--shm-size`.
//!
//! Docker is the reference: the same mode names, the same sysctls allowed (only those
//! the kernel keeps per namespace, so a container never changes the host's), and
//! messages that name the value refused.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Docker's default size of a container's /dev/shm (its daemon's `default-shm-size`).
pub const DEFAULT_SHM_SIZE: i64 = 64 << 20;

/// IPC sysctls the kernel keeps per IPC namespace (besides `fs.mqueue.*`).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("invalid IPC mode: {0}")]
    IpcMode(String),
    #[error("invalid PID mode: {0}")]
    PidMode(String),
    #[error("SHM size can not be less than 0")]
    ShmSize,
    /// `KEY=VALUE` as given: not a namespaced sysctl.
    #[error("sysctl '{0}' is not allowed")]
    Sysctl(String),
    #[error("sysctl {0:?} is not allowed in the host's network namespace")]
    SysctlHostNet(String),
    #[error("sysctl {0:?} is not allowed in the host's IPC namespace")]
    SysctlHostIpc(String),
}

/// How one namespace of a container is made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "path")]
pub enum Namespace {
    /// A new namespace of the container's own.
    #[default]
    New,
    /// The host's namespace.
    Host,
    /// Join an existing namespace (an nsfs file such as `/proc/PID/ns/ipc`).
    Join(PathBuf),
}

impl Namespace {
    /// The OCI `linux.namespaces` entry for namespace `kind`; none for the host's.
    pub fn oci_entry(&self, kind: &str) -> Option<serde_json::Value> {
        match self {
            Namespace::New => Some(serde_json::json!({"type": kind})),
            Namespace::Host => None,
            Namespace::Join(p) => Some(serde_json::json!({"type": kind, "path": p})),
        }
    }
}

/// Docker's `--ipc` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpcMode {
    /// An IPC namespace and /dev/shm of its own (the default).
    Private,
    /// Like private, but other containers may join it (`--ipc container:THIS`).
    Shareable,
    Host,
    /// A private IPC namespace and no /dev/shm at all.
    None,
    /// Another container's IPC namespace and /dev/shm (name or ID).
    Container(String),
}

impl IpcMode {
    /// Parses `--ipc`; empty is the default, private.
    pub fn parse(s: &str) -> Result<Self, NamespaceError> {
        Ok(match s {
            "" | "private" => IpcMode::Private,
            "shareable" => IpcMode::Shareable,
            "host" => IpcMode::Host,
            "none" => IpcMode::None,
            _ => match s.strip_prefix("container:") {
                Some(c) if !c.is_empty() => IpcMode::Container(c.into()),
                _ => return Err(NamespaceError::IpcMode(s.into())),
            },
        })
    }
}

/// Docker's `--pid` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidMode {
    Private,
    Host,
    /// Another container's PID namespace (name or ID).
    Container(String),
}

impl PidMode {
    /// Parses `--pid`; empty is the default, a private namespace.
    pub fn parse(s: &str) -> Result<Self, NamespaceError> {
        Ok(match s {
            "" | "private" => PidMode::Private,
            "host" => PidMode::Host,
            _ => match s.strip_prefix("container:") {
                Some(c) if !c.is_empty() => PidMode::Container(c.into()),
                _ => return Err(NamespaceError::PidMode(s.into())),
            },
        })
    }
}

/// How a container's /dev/shm is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Shm {
    /// A tmpfs of this many bytes, private to the container.
    Tmpfs(i64),
    /// A bind of a tmpfs mounted outside the container (shareable, joined, host IPC).
    Bind(PathBuf),
    /// No /dev/shm (`--ipc none`).
    None,
}

impl Default for Shm {
    fn default() -> Self {
        Shm::Tmpfs(DEFAULT_SHM_SIZE)
    }
}

impl Shm {
    /// The OCI mount for /dev/shm, if any.
    pub fn oci_mount(&self) -> Option<serde_json::Value> {
        match self {
            Shm::Tmpfs(size) => Some(serde_json::json!({
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={}", effective_shm_size(*size))],
            })),
            Shm::Bind(p) => Some(serde_json::json!({
                "destination": "/dev/shm", "type": "bind", "source": p,
                "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev"],
            })),
            Shm::None => None,
        }
    }
}

/// `--shm-size` as recorded (0: the default) to the bytes the tmpfs gets.
pub fn effective_shm_size(size: i64) -> i64 {
    if size > 0 {
        size
    } else {
        DEFAULT_SHM_SIZE
    }
}

/// Mounts a shareable container's /dev/shm tmpfs at `dir` on the host, so the
/// containers that join its IPC namespace bind the same one. A no-op when mounted.
pub fn mount_shareable_shm(dir: &Path, size: i64) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let opts = format!("mode=1777,size={}", effective_shm_size(size));
    mount(
        Some("shm"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Unmounts what [`mount_shareable_shm`] mounted; nothing mounted is fine.
pub fn unmount_shareable_shm(dir: &Path) {
    use nix::mount::{umount2, MntFlags};
    if is_mount_point(dir) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Some(Ok(p))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) else {
        return false;
    };
    d.dev() != p.dev()
}

/// Parses one `--sysctl KEY=VALUE`.
pub fn parse_sysctl(s: &str) -> Result<(String, String), NamespaceError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(NamespaceError::Sysctl(s.into())),
    }
}

/// Checks sysctls as Docker does: only those the kernel keeps per namespace (`net.*`,
/// IPC ones), and each only when the container does not share the host's namespace
/// (`host_net`, `host_ipc`), so that setting one never changes the host.
pub fn validate_sysctls(
    sysctls: &BTreeMap<String, String>,
    host_net: bool,
    host_ipc: bool,
) -> Result<(), NamespaceError> {
    for (k, v) in sysctls {
        // The key becomes a path under /proc/sys: dotted names only.
        let well_formed = k.split('.').all(|p| !p.is_empty())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        let ipc = IPC_SYSCTLS.contains(&k.as_str()) || k.starts_with("fs.mqueue.");
        let net = k.starts_with("net.");
        if !well_formed || !(ipc || net) {
            return Err(NamespaceError::Sysctl(format!("{k}={v}")));
        }
        if net && host_net {
            return Err(NamespaceError::SysctlHostNet(k.clone()));
        }
        if ipc && host_ipc {
            return Err(NamespaceError::SysctlHostIpc(k.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ipc_and_pid_modes_are_dockers() {
        assert_eq!(IpcMode::parse(""), Ok(IpcMode::Private));
        assert_eq!(IpcMode::parse("shareable"), Ok(IpcMode::Shareable));
        assert_eq!(IpcMode::parse("none"), Ok(IpcMode::None));
        assert_eq!(IpcMode::parse("host"), Ok(IpcMode::Host));
        assert_eq!(
            IpcMode::parse("container:db"),
            Ok(IpcMode::Container("db".into()))
        );
        for bad in ["container:", "bogus", "Host"] {
            assert_eq!(
                IpcMode::parse(bad).map_err(|e| e.to_string()),
                Err(format!("invalid IPC mode: {bad}"))
            );
        }
        assert_eq!(PidMode::parse("host"), Ok(PidMode::Host));
        assert_eq!(
            PidMode::parse("container:x"),
            Ok(PidMode::Container("x".into()))
        );
        assert_eq!(
            PidMode::parse("shareable").map_err(|e| e.to_string()),
            Err("invalid PID mode: shareable".into())
        );
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        let ok = map(&[
            ("net.core.somaxconn", "1024"),
            ("net.ipv4.conf.br-x.forwarding", "1"),
            ("kernel.shmmax", "1"),
            ("kernel.sem", "1 2 3 4"),
            ("fs.mqueue.msg_max", "20"),
        ]);
        assert_eq!(validate_sysctls(&ok, false, false), Ok(()));
        for bad in [
            "kernel.hostname",
            "vm.swappiness",
            "net..x",
            "net.a/b",
            "fs.file-max",
        ] {
            let e = validate_sysctls(&map(&[(bad, "1")]), false, false).expect_err(bad);
            assert_eq!(e.to_string(), format!("sysctl '{bad}=1' is not allowed"));
        }
        let e = validate_sysctls(&map(&[("net.core.somaxconn", "1")]), true, false)
            .expect_err("host net");
        assert!(e.to_string().contains("\"net.core.somaxconn\""), "{e}");
        assert!(e.to_string().contains("network namespace"), "{e}");
        let e =
            validate_sysctls(&map(&[("kernel.shmmax", "1")]), false, true).expect_err("host ipc");
        assert!(e.to_string().contains("IPC namespace"), "{e}");
        // Host IPC does not stop a net sysctl, nor host network an IPC one.
        assert_eq!(
            validate_sysctls(&map(&[("net.core.somaxconn", "1")]), false, true),
            Ok(())
        );
        assert_eq!(
            validate_sysctls(&map(&[("kernel.shmmax", "1")]), true, false),
            Ok(())
        );
    }

    #[test]
    fn sysctl_flags_need_a_value() {
        assert_eq!(
            parse_sysctl("net.core.somaxconn=1024"),
            Ok(("net.core.somaxconn".into(), "1024".into()))
        );
        assert_eq!(
            parse_sysctl("kernel.sem=1 2 3 4").map(|p| p.1),
            Ok("1 2 3 4".into())
        );
        assert_eq!(
            parse_sysctl("net.core.somaxconn").map_err(|e| e.to_string()),
            Err("sysctl 'net.core.somaxconn' is not allowed".into())
        );
    }

    #[test]
    fn shm_mounts() {
        let m = Shm::default().oci_mount().expect("tmpfs");
        assert_eq!(m["type"], "tmpfs");
        assert!(m["options"]
            .as_array()
            .expect("options")
            .contains(&serde_json::json!("size=67108864")));
        let m = Shm::Tmpfs(1 << 30).oci_mount().expect("tmpfs");
        assert!(m["options"]
            .as_array()
            .expect("options")
            .contains(&serde_json::json!("size=1073741824")));
        let m = Shm::Bind("/dev/shm".into()).oci_mount().expect("bind");
        assert_eq!(m["source"], "/dev/shm");
        assert!(Shm::None.oci_mount().is_none());
        assert_eq!(effective_shm_size(0), DEFAULT_SHM_SIZE);
    }
}
