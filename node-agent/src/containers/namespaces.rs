//! A container's shared namespaces and kernel parameters: `--ipc`, `--pid`,
//! `--network container:X`, `--shm-size` and `--sysctl`, checked at create and
//! resolved at every start (a joined container must be running, and its PID changes
//! from one run to the next, as with Docker).

use super::{Containers, Entry};
use crate::error::{AgentError, Result};
use skiff_runtime::container::namespaces::{self as ns, IpcMode, Namespace, PidMode, Shm};
use skiff_runtime::container::spec::RunSpec;
use skiff_runtime::container::{ContainerConfig, Status};
use std::path::PathBuf;
use std::sync::Arc;

fn invalid(e: ns::NamespaceError) -> AgentError {
    AgentError::Invalid(e.to_string())
}

pub use crate::network::network_container;

/// Checks the namespace settings at create, with Docker's messages, and records
/// Docker's defaults (`private` IPC, a 64 MiB /dev/shm) so inspect shows what applies.
/// Runs before the hostname is defaulted: a given one conflicts with a joined network.
pub fn check_create(c: &mut ContainerConfig) -> Result<()> {
    let ipc = IpcMode::parse(&c.ipc_mode).map_err(invalid)?;
    PidMode::parse(&c.pid_mode).map_err(invalid)?;
    if c.shm_size < 0 {
        return Err(invalid(ns::NamespaceError::ShmSize));
    }
    if c.ipc_mode.is_empty() {
        c.ipc_mode = "private".into();
    }
    if c.shm_size == 0 {
        c.shm_size = ns::DEFAULT_SHM_SIZE;
    }
    if let Some(other) = network_container(&c.network_mode) {
        let conflict =
            |what: &str| Err(AgentError::Invalid(format!("conflicting options: {what}")));
        if other.is_empty() {
            return Err(AgentError::Invalid(
                "invalid container format container:<name|id>".into(),
            ));
        }
        if !c.hostname.is_empty() {
            return conflict("hostname and the network mode");
        }
        if !c.net.dns.is_empty() {
            return conflict("dns and the network mode");
        }
        if !c.net.extra_hosts.is_empty() {
            return conflict("custom host-to-IP mapping and the network mode");
        }
        if !c.net.ports.is_empty() || c.net.publish_all {
            return conflict("port publishing and the container type network mode");
        }
        if !c.net.ipv4_address.is_empty() || !c.net.aliases.is_empty() {
            return Err(AgentError::Invalid(
                "user specified IP address and network aliases are supported on user defined networks only".into(),
            ));
        }
    }
    ns::validate_sysctls(&c.sysctls, c.network_mode == "host", ipc == IpcMode::Host)
        .map_err(invalid)
}

/// Where a shareable container's /dev/shm is mounted on the host (under the exec
/// root: it lives as long as a run).
pub fn shm_dir(e: &Entry) -> PathBuf {
    e.paths.exec_dir.join("shm")
}

/// A running container whose `what` namespace (`IPC`, `PID`, `network`) `e` joins,
/// with its PID.
fn donor(cs: &Containers, e: &Entry, key: &str, what: &str) -> Result<(Arc<Entry>, i32)> {
    let d = cs.get(key).map_err(|err| {
        AgentError::Invalid(format!("joining the {what} namespace of {key}: {err}"))
    })?;
    if d.id == e.id {
        return Err(AgentError::Invalid(format!(
            "cannot join own {what} namespace"
        )));
    }
    let st = d.state();
    if !matches!(st.status, Status::Running | Status::Paused) || st.pid <= 0 {
        return Err(AgentError::Conflict(format!(
            "cannot join the {what} namespace of a non running container: {key}"
        )));
    }
    Ok((d, st.pid))
}

fn ns_path(pid: i32, kind: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/{kind}"))
}

/// Fills `spec`'s IPC and PID namespaces, /dev/shm, sysctls and, for `--network
/// container:X`, the joined network namespace with X's hostname and resolver files.
/// Mounts nothing: [`mount_shm`] does, just before the shim starts.
pub fn resolve(cs: &Containers, e: &Entry, spec: &mut RunSpec) -> Result<()> {
    let r = e.record();
    let c = &r.config;
    spec.sysctls = c.sysctls.clone();
    spec.pid = match PidMode::parse(&c.pid_mode).map_err(invalid)? {
        PidMode::Private => Namespace::New,
        PidMode::Host => Namespace::Host,
        PidMode::Container(key) => Namespace::Join(ns_path(donor(cs, e, &key, "PID")?.1, "pid")),
    };
    let size = ns::effective_shm_size(c.shm_size);
    (spec.ipc, spec.shm) = match IpcMode::parse(&c.ipc_mode).map_err(invalid)? {
        IpcMode::Private => (Namespace::New, Shm::Tmpfs(size)),
        IpcMode::Shareable => (Namespace::New, Shm::Bind(shm_dir(e))),
        IpcMode::Host => (Namespace::Host, Shm::Bind("/dev/shm".into())),
        IpcMode::None => (Namespace::New, Shm::None),
        IpcMode::Container(key) => {
            let (d, pid) = donor(cs, e, &key, "IPC")?;
            let shm = match IpcMode::parse(&d.record().config.ipc_mode) {
                Ok(IpcMode::Host) => PathBuf::from("/dev/shm"),
                Ok(IpcMode::Shareable) if ns::is_mount_point(&shm_dir(&d)) => shm_dir(&d),
                _ => {
                    return Err(AgentError::Invalid(format!(
                        "container {key}: non-shareable IPC (hint: use IpcMode:shareable for the donor container)"
                    )))
                }
            };
            (Namespace::Join(ns_path(pid, "ipc")), Shm::Bind(shm))
        }
    };
    if let Some(key) = network_container(&c.network_mode) {
        let (d, pid) = donor(cs, e, key, "network")?;
        spec.network = Namespace::Join(ns_path(pid, "net"));
        let dr = d.record();
        spec.hostname = dr.config.hostname.clone();
        // The joined container's names and resolver, as Docker shares them.
        let host = dr.config.network_mode == "host";
        for m in spec.mounts.iter_mut() {
            let (own, hosts) = match m.destination.as_str() {
                "/etc/resolv.conf" => (d.paths.resolv_conf(), "/etc/resolv.conf"),
                "/etc/hosts" => (d.paths.hosts(), "/etc/hosts"),
                "/etc/hostname" => (d.paths.hostname(), ""),
                _ => continue,
            };
            if host && !hosts.is_empty() {
                m.source = hosts.into();
                m.readonly = true;
            } else {
                m.source = own;
            }
        }
    }
    Ok(())
}

/// Mounts a shareable container's /dev/shm before its shim starts.
pub fn mount_shm(e: &Entry, spec: &RunSpec) -> Result<()> {
    match &spec.shm {
        Shm::Bind(dir) if *dir == shm_dir(e) => {
            let size = ns::effective_shm_size(e.record().config.shm_size);
            ns::mount_shareable_shm(dir, size)
                .map_err(|err| AgentError::Internal(format!("mounting /dev/shm: {err}")))
        }
        _ => Ok(()),
    }
}

/// Unmounts what [`mount_shm`] mounted, when a run ends or fails to start. Joined
/// containers keep their bind of it, as with Docker.
pub fn release(e: &Entry) {
    ns::unmount_shareable_shm(&shm_dir(e));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ContainerConfig {
        ContainerConfig {
            network_mode: "bridge".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_records_dockers_defaults() {
        let mut c = cfg();
        check_create(&mut c).expect("defaults");
        assert_eq!(c.ipc_mode, "private");
        assert_eq!(c.shm_size, 64 << 20);
        assert_eq!(c.pid_mode, "");
        c.shm_size = -1;
        assert_eq!(
            check_create(&mut c).map_err(|e| e.to_string()),
            Err("SHM size can not be less than 0".into())
        );
        let mut c = cfg();
        c.ipc_mode = "bogus".into();
        assert_eq!(
            check_create(&mut c).map_err(|e| e.to_string()),
            Err("invalid IPC mode: bogus".into())
        );
        let mut c = cfg();
        c.pid_mode = "container:".into();
        assert_eq!(
            check_create(&mut c).map_err(|e| e.to_string()),
            Err("invalid PID mode: container:".into())
        );
    }

    #[test]
    fn sysctls_follow_the_namespaces() {
        let mut c = cfg();
        c.sysctls = [("net.core.somaxconn".to_string(), "1024".to_string())].into();
        check_create(&mut c.clone()).expect("own network");
        c.network_mode = "container:db".into();
        check_create(&mut c.clone()).expect("joined network");
        c.network_mode = "host".into();
        let e = check_create(&mut c).expect_err("host network");
        assert!(e.to_string().contains("net.core.somaxconn"), "{e}");
        let mut c = cfg();
        c.sysctls = [("kernel.shmmax".to_string(), "1".to_string())].into();
        c.ipc_mode = "host".into();
        assert!(check_create(&mut c).is_err());
        c.sysctls = [("vm.swappiness".to_string(), "1".to_string())].into();
        c.ipc_mode = String::new();
        assert_eq!(
            check_create(&mut c).map_err(|e| e.to_string()),
            Err("sysctl 'vm.swappiness=1' is not allowed".into())
        );
    }

    #[test]
    fn a_joined_network_conflicts_with_its_own_settings() {
        let mut c = cfg();
        c.network_mode = "container:db".into();
        check_create(&mut c.clone()).expect("plain");
        c.hostname = "x".into();
        assert_eq!(
            check_create(&mut c).map_err(|e| e.to_string()),
            Err("conflicting options: hostname and the network mode".into())
        );
        let mut c = cfg();
        c.network_mode = "container:db".into();
        c.net.dns = vec!["1.1.1.1".into()];
        assert!(check_create(&mut c).is_err());
        let mut c = cfg();
        c.network_mode = "container:".into();
        assert!(check_create(&mut c).is_err());
    }
}
