//! Turns a parsed stack file (`skiff_stack::StackSpec`) into the services the
//! controller stores: names are prefixed with the stack (`hello_web`), networks and
//! named volumes likewise, and Swarm's labels mark what belongs to the stack.

use super::services::*;
use skiff_stack::spec as st;
use std::collections::BTreeMap;

pub const LABEL_STACK: &str = "com.docker.stack.namespace";

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

fn update_config(u: &st::UpdateConfig) -> UpdateConfig {
    UpdateConfig {
        parallelism: u.parallelism,
        delay_ms: ms(u.delay),
        failure_action: enum_str(&u.failure_action),
        monitor_ms: ms(u.monitor),
        max_failure_ratio: u.max_failure_ratio,
        order: enum_str(&u.order),
    }
}

/// The cluster-wide name of a stack network or volume.
pub fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// A network the stack needs: its cluster name and driver.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StackNetwork {
    pub name: String,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    pub subnet: Option<String>,
    pub external: bool,
    pub stack: String,
    /// Overlay networks: subnet, VNI and per-node addresses, set by the controller.
    #[serde(default)]
    pub alloc: Option<NetAlloc>,
}

/// What the controller allocated for an overlay network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetAlloc {
    pub subnet: ipnet::Ipv4Net,
    /// Every node's bridge carries it: containers' default route, never sent across hosts.
    pub gateway: std::net::Ipv4Addr,
    pub vni: u32,
    /// Nodes taking part → the node's own address on the network.
    #[serde(default)]
    pub nodes: BTreeMap<String, std::net::Ipv4Addr>,
}

/// Converts every service of the stack.
pub fn services(spec: &st::StackSpec) -> Vec<ServiceSpec> {
    spec.services
        .iter()
        .map(|(name, s)| service(spec, name, s))
        .collect()
}

/// The networks a stack declares (resolved names).
pub fn networks(spec: &st::StackSpec) -> Vec<StackNetwork> {
    spec.networks
        .values()
        .map(|n| StackNetwork {
            name: n.name.clone(),
            driver: n.driver.clone().unwrap_or_else(|| "overlay".into()),
            internal: n.internal,
            attachable: n.attachable,
            subnet: n
                .ipam
                .as_ref()
                .and_then(|i| i.config.first())
                .and_then(|p| p.subnet.clone()),
            external: n.external,
            stack: spec.name.clone(),
            alloc: None,
        })
        .collect()
}

fn service(spec: &st::StackSpec, name: &str, s: &st::ServiceSpec) -> ServiceSpec {
    let stack = &spec.name;
    let mut labels = s.deploy.labels.clone();
    labels.insert(LABEL_STACK.into(), stack.clone());
    let mut container_labels = s.labels.clone();
    container_labels.insert(LABEL_STACK.into(), stack.clone());
    let mounts = mounts(spec, s);
    let networks: BTreeMap<String, Vec<String>> = s
        .networks
        .iter()
        .map(|(n, sn)| {
            let cluster_name = spec
                .networks
                .get(n)
                .map(|x| x.name.clone())
                .unwrap_or_else(|| scoped(stack, n));
            let mut aliases = vec![name.to_string()];
            aliases.extend(sn.aliases.iter().cloned());
            (cluster_name, aliases)
        })
        .collect();
    let limits = s.deploy.resources.limits.clone().unwrap_or_default();
    let reservations = s.deploy.resources.reservations.clone().unwrap_or_default();
    let rp = &s.deploy.restart_policy;
    ServiceSpec {
        name: scoped(stack, name),
        stack: stack.clone(),
        labels,
        mode: match s.deploy.mode {
            st::ServiceMode::Replicated { replicas } => Mode::Replicated { replicas },
            st::ServiceMode::Global => Mode::Global,
        },
        template: TaskTemplate {
            image: s.image.clone(),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            env: s.environment.clone(),
            labels: container_labels,
            hostname: s.hostname.clone().unwrap_or_default(),
            user: s.user.clone().unwrap_or_default(),
            working_dir: s.working_dir.clone().unwrap_or_default(),
            mounts,
            networks,
            limits: Limits {
                nano_cpus: limits.nano_cpus.unwrap_or(0) as i64,
                memory_bytes: limits.memory_bytes.unwrap_or(0) as i64,
                pids: limits.pids.unwrap_or(0),
            },
            reservations: Limits {
                nano_cpus: reservations.nano_cpus.unwrap_or(0) as i64,
                memory_bytes: reservations.memory_bytes.unwrap_or(0) as i64,
                pids: 0,
            },
            healthcheck: s
                .healthcheck
                .as_ref()
                // `NONE` (Compose's `disable: true`) means no check at all.
                .filter(|h| !h.test.is_empty() && h.test != ["NONE"])
                .map(|h| Healthcheck {
                    test: h.test.clone(),
                    interval_ms: h.interval.map(ms).unwrap_or(30_000),
                    timeout_ms: h.timeout.map(ms).unwrap_or(30_000),
                    retries: h.retries.unwrap_or(3) as u32,
                    start_period_ms: h.start_period.map(ms).unwrap_or(0),
                }),
            container: container_options(stack, s),
            stop_signal: s.stop_signal.clone().unwrap_or_default(),
            stop_grace_period_ms: s.stop_grace_period.map(ms).unwrap_or(10_000),
            files: s
                .secrets
                .iter()
                .map(|r| {
                    (
                        KIND_SECRET,
                        r,
                        spec.secrets.get(&r.source).map(|x| x.name.clone()),
                    )
                })
                .chain(s.configs.iter().map(|r| {
                    (
                        KIND_CONFIG,
                        r,
                        spec.configs.get(&r.source).map(|x| x.name.clone()),
                    )
                }))
                .map(|(kind, r, name)| FileMount {
                    kind: kind.into(),
                    name: name.unwrap_or_else(|| scoped(stack, &r.source)),
                    target: r.target.clone(),
                    mode: r.mode,
                })
                .collect(),
        },
        placement: Placement {
            constraints: s
                .deploy
                .placement
                .constraints
                .iter()
                .map(|c| c.to_string())
                .collect(),
            spread: s
                .deploy
                .placement
                .preferences
                .iter()
                .map(|p| {
                    p.spread
                        .to_string()
                        .trim_start_matches("node.labels.")
                        .to_string()
                })
                .collect(),
            max_replicas_per_node: s.deploy.placement.max_replicas_per_node.unwrap_or(0) as u32,
        },
        restart_policy: RestartPolicy {
            condition: enum_str(&rp.condition),
            delay_ms: ms(rp.delay),
            max_attempts: rp.max_attempts.unwrap_or(0),
            window_ms: rp.window.map(ms).unwrap_or(0),
        },
        update_config: update_config(&s.deploy.update_config),
        rollback_config: update_config(&s.deploy.rollback_config),
        ports: s
            .ports
            .iter()
            .map(|p| PortSpec {
                target: p.target,
                published: p.published.unwrap_or(0),
                protocol: p.protocol.to_string(),
                mode: enum_str(&p.mode),
            })
            .collect(),
        endpoint_mode: enum_str(&s.deploy.endpoint_mode),
        depends_on: dependencies(stack, s),
        // Namespace sharing first: a task joins a peer on its own node.
        colocate_with: s
            .shared_services()
            .chain(
                s.volumes_from
                    .iter()
                    .filter_map(|v| v.strip_prefix("service:"))
                    .map(|v| v.strip_suffix(":ro").unwrap_or(v)),
            )
            .map(|v| scoped(stack, v))
            .fold(Vec::new(), |mut out, v| {
                if !out.contains(&v) {
                    out.push(v);
                }
                out
            }),
    }
}

/// The service's own mounts, then those of the services it takes volumes from
/// (`volumes_from`), read-only when it says `:ro`; a target it mounts itself wins.
fn mounts(spec: &st::StackSpec, s: &st::ServiceSpec) -> Vec<MountSpec> {
    let stack = &spec.name;
    let convert = |m: &st::Mount, ro: bool| {
        let kind = enum_str(&m.kind);
        let source = match (&m.source, kind.as_str()) {
            (Some(src), "volume") => match spec.volumes.get(src) {
                Some(v) => v.name.clone(),
                None => scoped(stack, src),
            },
            (Some(src), _) => src.clone(),
            (None, _) => String::new(),
        };
        MountSpec {
            kind,
            source,
            target: m.target.clone(),
            read_only: m.read_only || ro,
        }
    };
    // tmpfs mounts with a size or mode go as `--tmpfs TARGET:OPTIONS` (container_options).
    let mut out: Vec<MountSpec> = s
        .volumes
        .iter()
        .filter(|m| tmpfs_option(m).is_none())
        .map(|m| convert(m, false))
        .collect();
    for from in &s.volumes_from {
        let Some(rest) = from.strip_prefix("service:") else {
            continue;
        };
        let (name, ro) = match rest.strip_suffix(":ro") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let Some(src) = spec.services.get(name) else {
            continue;
        };
        // An anonymous volume is new for every task: there is nothing to share.
        for m in src.volumes.iter().filter(|m| m.source.is_some()) {
            if !out.iter().any(|o| o.target == m.target) {
                out.push(convert(m, ro));
            }
        }
    }
    out
}

/// `depends_on`, and `volumes_from` and `service:` namespace sharing (which need
/// their source started first).
fn dependencies(stack: &str, s: &st::ServiceSpec) -> Vec<ServiceDependency> {
    let mut out: Vec<ServiceDependency> = s
        .depends_on
        .iter()
        .map(|(name, d)| ServiceDependency {
            service: scoped(stack, name),
            condition: enum_str(&d.condition),
        })
        .collect();
    let sources = s
        .volumes_from
        .iter()
        .filter_map(|from| from.strip_prefix("service:"))
        .map(|rest| rest.strip_suffix(":ro").unwrap_or(rest))
        .chain(s.shared_services());
    for name in sources {
        let service = scoped(stack, name);
        if !out.iter().any(|d| d.service == service) {
            out.push(ServiceDependency {
                service,
                condition: "service_started".into(),
            });
        }
    }
    out
}

/// A tmpfs mount with a size or mode, as `docker run --tmpfs` writes it.
fn tmpfs_option(m: &st::Mount) -> Option<String> {
    let t = m
        .tmpfs
        .as_ref()
        .filter(|_| m.kind == st::MountKind::Tmpfs)?;
    let mut opts = Vec::new();
    if let Some(size) = t.size {
        opts.push(format!("size={size}"));
    }
    if let Some(mode) = t.mode {
        opts.push(format!("mode={mode:o}"));
    }
    if m.read_only {
        opts.push("ro".into());
    }
    (!opts.is_empty()).then(|| format!("{}:{}", m.target, opts.join(",")))
}

/// A namespace mode with `service:NAME` naming the cluster-wide service.
fn shared(stack: &str, mode: &Option<String>) -> String {
    match mode.as_deref() {
        Some(m) => match m.strip_prefix("service:") {
            Some(name) => format!("service:{}", scoped(stack, name)),
            None => m.to_string(),
        },
        None => String::new(),
    }
}

/// The service keys a task's container applies.
fn container_options(stack: &str, s: &st::ServiceSpec) -> ContainerOptions {
    ContainerOptions {
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        privileged: s.privileged,
        security_opt: s.security_opt.clone(),
        devices: s.devices.clone(),
        init: s.init.unwrap_or(false),
        tty: s.tty,
        stdin_open: s.stdin_open,
        read_only: s.read_only,
        dns: s.dns.clone(),
        dns_search: s.dns_search.clone(),
        dns_options: s.dns_opt.clone(),
        extra_hosts: s.extra_hosts.clone(),
        ulimits: s
            .ulimits
            .iter()
            .map(|(k, u)| format!("{k}={}:{}", u.soft, u.hard))
            .collect(),
        tmpfs: s
            .tmpfs
            .iter()
            .cloned()
            .chain(s.volumes.iter().filter_map(tmpfs_option))
            .collect(),
        log_opts: s
            .logging
            .as_ref()
            .map(|l| {
                l.options
                    .iter()
                    .filter(|(k, _)| matches!(k.as_str(), "max-size" | "max-file"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default(),
        sysctls: s.sysctls.clone(),
        shm_size: s
            .shm_size
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
            .unwrap_or(0),
        ipc: shared(stack, &s.ipc),
        pid: shared(stack, &s.pid),
        network_mode: shared(stack, &s.network_mode),
    }
}

/// The secrets and configs a stack defines with content: (kind, cluster name, content).
pub fn files(spec: &st::StackSpec) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for (kind, map) in [(KIND_SECRET, &spec.secrets), (KIND_CONFIG, &spec.configs)] {
        for f in map.values() {
            if let st::Source::Content(c) = &f.source {
                out.push((kind, f.name.clone(), c.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> st::StackSpec {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.yaml");
        std::fs::write(&path, yaml).expect("write");
        skiff_stack::load(&skiff_stack::LoadOptions {
            files: vec![path],
            project_name: "st".into(),
            ..Default::default()
        })
        .expect("loads")
        .spec
    }

    #[test]
    fn container_keys_volumes_from_and_dependencies_reach_the_service() {
        let spec = load(concat!(
            "services:\n",
            "  db:\n    image: x\n    volumes: [data:/data, /logs, ./conf:/conf]\n",
            "    healthcheck: {test: [CMD, 'true']}\n",
            "  app:\n    image: x\n    volumes_from: ['db:ro']\n    cap_add: [NET_ADMIN]\n",
            "    init: true\n    ulimits: {nofile: {soft: 10, hard: 20}}\n",
            "    volumes:\n      - {type: tmpfs, target: /cache, tmpfs: {size: 1m}}\n",
            "    depends_on: {db: {condition: service_healthy}}\n",
            "volumes:\n  data: {}\n",
        ));
        let svcs = services(&spec);
        let app = svcs.iter().find(|s| s.name == "st_app").expect("app");
        let t = &app.template;
        assert_eq!(t.container.cap_add, vec!["NET_ADMIN".to_string()]);
        assert!(t.container.init);
        assert_eq!(t.container.ulimits, vec!["nofile=10:20".to_string()]);
        assert_eq!(t.container.tmpfs, vec!["/cache:size=1048576".to_string()]);
        // db's named volume and bind, read-only; its anonymous volume is not shared.
        let mounts: Vec<(&str, &str, bool)> = t
            .mounts
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str(), m.read_only))
            .collect();
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        assert!(mounts.contains(&("st_data", "/data", true)), "{mounts:?}");
        assert!(mounts.iter().any(|m| m.1 == "/conf" && m.2), "{mounts:?}");
        assert_eq!(app.colocate_with, vec!["st_db".to_string()]);
        assert_eq!(
            app.depends_on,
            vec![ServiceDependency {
                service: "st_db".into(),
                condition: "service_healthy".into(),
            }]
        );
    }

    #[test]
    fn a_service_peer_is_scoped_placed_beside_and_started_after() {
        let spec = load(concat!(
            "services:\n",
            "  web:\n    image: x\n",
            "  side:\n    image: x\n    network_mode: service:web\n",
            "    ipc: service:web\n    pid: 'container:legacy'\n",
            "  h:\n    image: x\n    network_mode: host\n",
        ));
        let svcs = services(&spec);
        let get = |n: &str| svcs.iter().find(|s| s.name == n).expect("service");
        let side = get("st_side");
        let c = &side.template.container;
        assert_eq!(c.network_mode, "service:st_web");
        assert_eq!(c.ipc, "service:st_web");
        assert_eq!(c.pid, "container:legacy");
        assert!(side.template.networks.is_empty());
        assert_eq!(side.colocate_with, vec!["st_web".to_string()]);
        assert_eq!(
            side.depends_on,
            vec![ServiceDependency {
                service: "st_web".into(),
                condition: "service_started".into(),
            }]
        );
        // The IPC donor is made shareable.
        assert_eq!(get("st_web").template.container.ipc, "shareable");
        let h = get("st_h");
        assert_eq!(h.template.container.network_mode, "host");
        assert!(h.template.networks.is_empty() && h.colocate_with.is_empty());
    }
}
