//! Turns a [`RunSpec`] (what the agent decided) and the resolved user into the OCI
//! runtime `config.json` that libcontainer runs, with Docker's defaults: its capability
//! set, seccomp profile, masked and read-only /proc and /sys paths, and a private
//! pid/ipc/uts/mount/net namespace.

use super::namespaces::{Namespace, Shm};
use super::rootfs::User;
use super::security;
use oci_spec::runtime::{Capability, Spec};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A file or directory bind-mounted into the container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// How the container's network namespace is made (see [`Namespace`]).
pub type NetworkNamespace = Namespace;

/// Everything one run of a container needs, as the agent hands it to the shim.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunSpec {
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub hostname: String,
    pub domainname: String,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp_unconfined: bool,
    pub network: NetworkNamespace,
    /// `--ipc`: the IPC namespace.
    #[serde(default)]
    pub ipc: Namespace,
    /// `--pid`: the PID namespace.
    #[serde(default)]
    pub pid: Namespace,
    /// `--shm-size` / `--ipc`: how /dev/shm is made.
    #[serde(default)]
    pub shm: Shm,
    /// `--sysctl`s, checked at create (`namespaces::validate_sysctls`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// cgroupfs path relative to each hierarchy's root, e.g. `/skiff/<id>`.
    pub cgroups_path: String,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub mounts: Vec<BindMount>,
    pub log_path: PathBuf,
    /// How the shim rotates `log_path` (`--log-opt max-size/max-file`).
    #[serde(default)]
    pub log_rotation: crate::shim::logfile::Rotation,
    pub exit_path: PathBuf,
    pub socket_path: PathBuf,
    /// libcontainer's state directory (shared by all containers of one agent).
    pub runtime_root: PathBuf,
    /// Where compiled seccomp programs are kept (see `seccomp_cache`); none: compile
    /// in every container.
    #[serde(default)]
    pub seccomp_cache: Option<PathBuf>,
    /// Wait for the first attach connection before starting the process.
    pub wait_attach: bool,
    /// Initial terminal size (columns, rows), applied before the process starts.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// User mounts (`-v`, `--mount`, `--tmpfs`, `--volumes-from`); the shim resolves
    /// their targets inside the rootfs before the spec is built.
    #[serde(default)]
    pub volumes: Vec<crate::volume::MountPoint>,
    /// Resource limits (`--memory`, `--cpus`, `--pids-limit`, `--ulimit`, ...).
    #[serde(default)]
    pub resources: crate::cgroup::Resources,
    /// `--init`: the host's static init, bind-mounted at `/sbin/docker-init` and run as
    /// PID 1 with `args` as its child.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// `--device` mappings; the host nodes are read when the spec is built.
    #[serde(default)]
    pub devices: Vec<super::devices::DeviceMapping>,
    /// `--device-cgroup-rule`s, checked at create.
    #[serde(default)]
    pub device_cgroup_rules: Vec<String>,
}

impl RunSpec {
    /// The user mounts plus the init's read-only bind (so the shim resolves its target
    /// inside the rootfs like any other mount).
    pub fn volumes_with_init(&self) -> Vec<crate::volume::MountPoint> {
        let mut v = self.volumes.clone();
        if let Some(host) = &self.init {
            v.push(super::docker_init::mount(host));
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Security(#[from] security::SecurityError),
    #[error(transparent)]
    Device(#[from] super::devices::DeviceError),
    #[error("building OCI spec: {0}")]
    Invalid(String),
}

fn cap_names(caps: &[Capability]) -> Vec<String> {
    caps.iter()
        .filter_map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        })
        .collect()
}

/// Builds the OCI spec for `run` with `user` resolved inside the rootfs.
pub fn oci_spec(run: &RunSpec, user: &User) -> Result<Spec, SpecError> {
    let caps = if run.privileged {
        security::all_capabilities()
    } else {
        security::apply_cap_changes(
            security::default_capabilities(),
            &run.cap_add,
            &run.cap_drop,
        )?
    };
    let names = cap_names(&caps);
    // A non-root user keeps no effective capabilities, as with Docker.
    let effective = if user.uid == 0 { names.clone() } else { vec![] };
    let mut env = run.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", run.hostname));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    if run.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let sys_ro = !run.privileged;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if sys_ro { "ro" } else { "rw" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if sys_ro { "ro" } else { "rw" }]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    mounts.extend(run.shm.oci_mount());
    for m in &run.mounts {
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "rprivate", if m.readonly { "ro" } else { "rw" }],
        }));
    }
    mounts.extend(crate::volume::oci_mounts(&run.volumes));
    let mut namespaces = vec![json!({"type": "uts"}), json!({"type": "mount"})];
    namespaces.extend(run.pid.oci_entry("pid"));
    namespaces.extend(run.ipc.oci_entry("ipc"));
    namespaces.extend(run.network.oci_entry("network"));
    let mut devices = vec![json!({"allow": false, "access": "rwm"})];
    devices.extend(default_device_rules(run.privileged));
    // Given devices come after the defaults: a later rule wins (the fuse deny above).
    let (nodes, allow) = super::devices::oci_entries(&super::devices::resolve_all(&run.devices)?);
    devices.extend(allow);
    for r in &run.device_cgroup_rules {
        devices.push(super::devices::parse_cgroup_rule(r)?);
    }
    let mut resources = run.resources.oci_resources();
    resources["devices"] = json!(devices);
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": run.cgroups_path,
        "resources": resources,
    });
    if !nodes.is_empty() {
        linux["devices"] = json!(nodes);
    }
    if !run.sysctls.is_empty() {
        linux["sysctl"] = json!(run.sysctls);
    }
    let args = match &run.init {
        Some(_) => super::docker_init::wrap_args(&run.args),
        None => run.args.clone(),
    };
    if !run.privileged {
        linux["maskedPaths"] = json!(security::masked_paths());
        linux["readonlyPaths"] = json!(security::readonly_paths());
        if !run.seccomp_unconfined {
            let seccomp = security::default_seccomp(&caps);
            linux["seccomp"] =
                serde_json::to_value(seccomp).map_err(|e| SpecError::Invalid(e.to_string()))?;
        }
    }
    let mut process = json!({
        "terminal": run.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": if run.cwd.is_empty() { "/" } else { run.cwd.as_str() },
        "capabilities": {
            "bounding": names,
            "permitted": names,
            "inheritable": [],
            "effective": effective,
        },
    });
    // Containers start at 0 (or --oom-score-adj) whatever the agent's own score is.
    process["oomScoreAdj"] = json!(run.resources.oom_score_adj);
    if !run.resources.ulimits.is_empty() {
        process["rlimits"] = run.resources.oci_rlimits();
    }
    // libcontainer loads seccomp before dropping capabilities only when
    // noNewPrivileges is absent (not merely false), so it is set only when true.
    if run.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    let doc = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": run.rootfs, "readonly": run.read_only},
        "hostname": run.hostname,
        "domainname": run.domainname,
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(doc).map_err(|e| SpecError::Invalid(e.to_string()))
}

/// Device cgroup rules: Docker's allow-list (null, zero, full, tty, urandom, random,
/// ptmx, pts) or everything for `--privileged`.
fn default_device_rules(privileged: bool) -> Vec<serde_json::Value> {
    if privileged {
        return vec![json!({"allow": true, "access": "rwm"})];
    }
    let c = |major: i64, minor: i64| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    vec![
        c(1, 3),                                                                          // null
        c(1, 5),                                                                          // zero
        c(1, 7),                                                                          // full
        c(5, 0),                                                                          // tty
        c(1, 9),                                                                          // urandom
        c(1, 8),                                                                          // random
        c(5, 1),                                                                          // console
        c(5, 2),                                                                          // ptmx
        json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}),               // pts
        json!({"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"}), // fuse
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunSpec {
        RunSpec {
            id: "abc".into(),
            args: vec!["sh".into()],
            hostname: "abc".into(),
            cgroups_path: "/skiff/abc".into(),
            rootfs: "/tmp/rootfs".into(),
            ..Default::default()
        }
    }

    /// The shim registers the compiled program under the profile of the spec it built;
    /// libcontainer compares it with the profile it reads back from config.json.
    #[test]
    fn seccomp_profile_survives_config_json_unchanged() {
        let s = oci_spec(&run(), &User::default()).expect("spec");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        s.save(&path).expect("save");
        let loaded = Spec::load(&path).expect("load");
        let profile = |s: &Spec| s.linux().as_ref().and_then(|l| l.seccomp().clone());
        assert!(profile(&s).is_some());
        assert_eq!(profile(&s), profile(&loaded));
    }

    #[test]
    fn defaults_are_dockers() {
        let s = oci_spec(
            &run(),
            &User {
                home: "/root".into(),
                ..Default::default()
            },
        )
        .expect("spec");
        let v = serde_json::to_value(&s).expect("json");
        let bounding = v["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&json!("CAP_NET_RAW")));
        assert!(!bounding.contains(&json!("CAP_SYS_ADMIN")));
        assert!(v["linux"]["seccomp"].is_object());
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .expect("masked")
            .contains(&json!("/proc/kcore")));
        let ns: Vec<_> = v["linux"]["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .map(|n| n["type"].clone())
            .collect();
        for t in ["pid", "ipc", "uts", "mount", "network"] {
            assert!(ns.contains(&json!(t)), "missing {t} namespace");
        }
        let env = v["process"]["env"].as_array().expect("env");
        assert!(env.contains(&json!("HOSTNAME=abc")));
        assert!(env.contains(&json!("HOME=/root")));
    }

    #[test]
    fn privileged_drops_confinement() {
        let mut r = run();
        r.privileged = true;
        let v = serde_json::to_value(oci_spec(&r, &User::default()).expect("spec")).expect("json");
        assert!(v["linux"].get("seccomp").is_none() || v["linux"]["seccomp"].is_null());
        assert!(v["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps")
            .contains(&json!("CAP_SYS_ADMIN")));
    }

    #[test]
    fn non_root_user_has_no_effective_caps_and_host_network_has_no_netns() {
        let mut r = run();
        r.network = NetworkNamespace::Host;
        let v = serde_json::to_value(
            oci_spec(
                &r,
                &User {
                    uid: 33,
                    gid: 33,
                    ..Default::default()
                },
            )
            .expect("spec"),
        )
        .expect("json");
        assert_eq!(v["process"]["capabilities"]["effective"], json!([]));
        assert!(!v["linux"]["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn shared_namespaces_shm_and_sysctls_reach_the_spec() {
        let mut r = run();
        r.pid = Namespace::Host;
        r.ipc = Namespace::Join("/proc/42/ns/ipc".into());
        r.shm = Shm::Bind("/run/skiff/containers/x/shm".into());
        r.sysctls = [("net.core.somaxconn".to_string(), "1024".to_string())].into();
        let v = serde_json::to_value(oci_spec(&r, &User::default()).expect("spec")).expect("json");
        let ns = v["linux"]["namespaces"].as_array().expect("ns");
        assert!(!ns.iter().any(|n| n["type"] == "pid"));
        assert!(ns.contains(&json!({"type": "ipc", "path": "/proc/42/ns/ipc"})));
        assert_eq!(v["linux"]["sysctl"]["net.core.somaxconn"], "1024");
        let shm: Vec<_> = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0]["type"], "bind");
        r.shm = Shm::None;
        let v = serde_json::to_value(oci_spec(&r, &User::default()).expect("spec")).expect("json");
        assert!(!v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["destination"] == "/dev/shm"));
    }

    #[test]
    fn init_runs_the_command_as_its_child() {
        let mut r = run();
        r.args = vec!["sh".into(), "-c".into(), "exit 3".into()];
        r.init = Some("/usr/bin/tini-static".into());
        let v = serde_json::to_value(oci_spec(&r, &User::default()).expect("spec")).expect("json");
        assert_eq!(
            v["process"]["args"],
            json!(["/sbin/docker-init", "--", "sh", "-c", "exit 3"])
        );
        let m = r.volumes_with_init();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].destination, "/sbin/docker-init");
        assert!(!m[0].rw);
        assert_eq!(m[0].source, std::path::Path::new("/usr/bin/tini-static"));
        r.init = None;
        let v = serde_json::to_value(oci_spec(&r, &User::default()).expect("spec")).expect("json");
        assert_eq!(v["process"]["args"], json!(["sh", "-c", "exit 3"]));
        assert!(r.volumes_with_init().is_empty());
    }

    /// libcontainer turns the same entries into devices.allow writes (cgroup v1) or a
    /// BPF program (v2), so the spec is what both get.
    #[test]
    fn devices_get_a_node_and_an_allow_rule_after_the_defaults() {
        let mut r = run();
        r.devices = vec![
            super::super::devices::DeviceMapping::parse("/dev/null:/dev/mydev:rw")
                .expect("mapping"),
        ];
        r.device_cgroup_rules = vec!["c 10:229 rwm".into()];
        let v = serde_json::to_value(oci_spec(&r, &User::default()).expect("spec")).expect("json");
        assert_eq!(v["linux"]["devices"][0]["path"], "/dev/mydev");
        assert_eq!(v["linux"]["devices"][0]["type"], "c");
        assert_eq!(v["linux"]["devices"][0]["major"], 1);
        assert_eq!(v["linux"]["devices"][0]["minor"], 3);
        let rules = v["linux"]["resources"]["devices"]
            .as_array()
            .expect("rules");
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        let n = rules.len();
        assert_eq!(
            rules[n - 2],
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
        );
        // The fuse deny among the defaults comes before the user's rule for it.
        assert_eq!(
            rules[n - 1],
            json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"})
        );
        r.devices = vec![
            super::super::devices::DeviceMapping::parse("/dev/skiff-missing").expect("mapping"),
        ];
        let e = oci_spec(&r, &User::default()).expect_err("missing device");
        assert!(e.to_string().contains("/dev/skiff-missing"), "{e}");
        r.devices.clear();
        r.device_cgroup_rules = vec!["bogus".into()];
        assert!(oci_spec(&r, &User::default()).is_err());
    }
}
