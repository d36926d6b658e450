//! From the merged, interpolated YAML tree to the typed [`StackSpec`]: every short
//! form expanded, every reference checked, every key accounted for.

use crate::dotenv;
use crate::error::{Diag, Location, Pos, Result, StackError};
use crate::spec::*;
use crate::value::*;
use crate::yaml::{Key, Node, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What conversion needs besides the tree.
pub(crate) struct Cx<'a> {
    pub diag: &'a mut Diag,
    /// Process environment overlaid on `.env`: for `environment` keys without a value.
    pub env: &'a HashMap<String, String>,
    /// Relative paths (binds, env_file, secret files) resolve against this: the first
    /// stack file's directory, as in Compose.
    pub base_dir: PathBuf,
    pub project: String,
    /// Services left out by their profiles, with those profiles.
    pub disabled: BTreeMap<String, Vec<String>>,
}

const TOP: &[(&str, K)] = &[
    ("version", K::Ok),
    ("name", K::Ok),
    ("services", K::Ok),
    ("networks", K::Ok),
    ("volumes", K::Ok),
    ("secrets", K::Ok),
    ("configs", K::Ok),
    ("include", K::Ok),
    ("models", K::Warn("")),
];

/// Said of keys that a container of the cluster cannot be given.
const NOT_APPLIED: &str = ": the cluster's tasks do not support it";

const SERVICE: &[(&str, K)] = &[
    ("image", K::Ok),
    ("build", K::Ok),
    ("command", K::Ok),
    ("entrypoint", K::Ok),
    ("environment", K::Ok),
    ("env_file", K::Ok),
    ("ports", K::Ok),
    ("volumes", K::Ok),
    ("volumes_from", K::Ok),
    ("networks", K::Ok),
    ("hostname", K::Ok),
    ("user", K::Ok),
    ("working_dir", K::Ok),
    ("labels", K::Ok),
    ("label_file", K::Ok),
    ("healthcheck", K::Ok),
    ("stop_grace_period", K::Ok),
    ("stop_signal", K::Ok),
    ("depends_on", K::Ok),
    ("secrets", K::Ok),
    ("configs", K::Ok),
    ("deploy", K::Ok),
    ("scale", K::Ok),
    ("restart", K::Ok),
    ("profiles", K::Ok),
    ("extends", K::Ok),
    ("cap_add", K::Ok),
    ("cap_drop", K::Ok),
    ("privileged", K::Ok),
    ("security_opt", K::Ok),
    ("devices", K::Ok),
    ("dns", K::Ok),
    ("dns_search", K::Ok),
    ("dns_opt", K::Ok),
    ("extra_hosts", K::Ok),
    ("group_add", K::Ok),
    ("init", K::Ok),
    ("read_only", K::Ok),
    ("tty", K::Ok),
    ("stdin_open", K::Ok),
    ("tmpfs", K::Ok),
    ("sysctls", K::Ok),
    ("ulimits", K::Ok),
    ("logging", K::Ok),
    // Compose 2.x resource keys, honoured as deploy.resources.
    ("cpus", K::Ok),
    ("mem_limit", K::Ok),
    ("mem_reservation", K::Ok),
    ("pids_limit", K::Ok),
    ("cgroupns_mode", K::Warn(NOT_APPLIED)),
    ("cgroup", K::Warn(NOT_APPLIED)),
    ("cgroup_parent", K::Warn(NOT_APPLIED)),
    ("domainname", K::Warn(NOT_APPLIED)),
    (
        "external_links",
        K::Warn(": services on the same network reach each other by name"),
    ),
    ("ipc", K::Ok),
    (
        "links",
        K::Warn(": services on the same network reach each other by name"),
    ),
    ("mac_address", K::Warn(NOT_APPLIED)),
    ("network_mode", K::Ok),
    ("pid", K::Ok),
    ("shm_size", K::Ok),
    ("userns_mode", K::Warn(NOT_APPLIED)),
    (
        "container_name",
        K::Warn(": task containers are named after their service"),
    ),
    (
        "expose",
        K::Warn(": services on the same network can reach each other's containers on any port"),
    ),
    ("annotations", K::Warn(NOT_APPLIED)),
    ("attach", K::Warn("")),
    ("blkio_config", K::Warn(NOT_APPLIED)),
    ("credential_spec", K::Warn(NOT_APPLIED)),
    (
        "develop",
        K::Warn(": watch mode is a local development feature"),
    ),
    ("device_cgroup_rules", K::Warn(NOT_APPLIED)),
    ("gpus", K::Warn(NOT_APPLIED)),
    ("isolation", K::Warn(NOT_APPLIED)),
    ("mem_swappiness", K::Warn(NOT_APPLIED)),
    ("oom_kill_disable", K::Warn(NOT_APPLIED)),
    ("oom_score_adj", K::Warn(NOT_APPLIED)),
    (
        "platform",
        K::Warn(": use a deploy.placement constraint on node.platform"),
    ),
    ("post_start", K::Warn(NOT_APPLIED)),
    ("pre_stop", K::Warn(NOT_APPLIED)),
    ("provider", K::Warn(NOT_APPLIED)),
    (
        "pull_policy",
        K::Warn(": images are pulled by the node that runs a task"),
    ),
    (
        "pull_refresh_after",
        K::Warn(": images are pulled by the node that runs a task"),
    ),
    ("runtime", K::Warn(NOT_APPLIED)),
    ("storage_opt", K::Warn(NOT_APPLIED)),
    ("use_api_socket", K::Warn(NOT_APPLIED)),
    ("uts", K::Warn(NOT_APPLIED)),
    ("models", K::Warn(NOT_APPLIED)),
    (
        "volume_driver",
        K::Warn(": set the driver on a top-level volume"),
    ),
    (
        "cpu_quota",
        K::Warn(": set cpus or deploy.resources.limits.cpus"),
    ),
    (
        "cpu_shares",
        K::Warn(": set deploy.resources.reservations.cpus"),
    ),
    ("cpuset", K::Warn(NOT_APPLIED)),
    (
        "cpu_count",
        K::Warn(": set cpus or deploy.resources.limits.cpus"),
    ),
    (
        "cpu_percent",
        K::Warn(": set cpus or deploy.resources.limits.cpus"),
    ),
    (
        "cpu_period",
        K::Warn(": set cpus or deploy.resources.limits.cpus"),
    ),
    ("cpu_rt_period", K::Warn(NOT_APPLIED)),
    ("cpu_rt_runtime", K::Warn(NOT_APPLIED)),
    ("memswap_limit", K::Warn(NOT_APPLIED)),
];

/// A service's `ipc` or `pid`: one of `modes`, checked as the engine checks them. The
/// `service:NAME` and `container:NAME` forms would need the tasks of two services on
/// one node, which placement does not promise: warned and left out.
/// `ipc`, `pid` and `network_mode`: one of `modes`, or `service:NAME` (recorded in
/// `refs`: the task is placed beside a task of NAME and joins it) or `container:NAME`
/// (a container of that name on the task's node).
fn namespace_mode(
    cx: &mut Cx,
    refs: &mut Refs,
    svc: &str,
    n: Option<&Node>,
    f: &str,
    what: &str,
    modes: &[&str],
) -> Result<Option<String>> {
    let Some(n) = n else {
        return Ok(None);
    };
    let v = string(cx.diag, n, f)?;
    if modes.contains(&v.as_str()) {
        return Ok(Some(v));
    }
    if let Some(name) = v.strip_prefix("service:") {
        if !name.is_empty() {
            refs.shares
                .push((svc.to_string(), name.to_string(), n.pos, f.to_string()));
            return Ok(Some(v));
        }
    }
    if v.strip_prefix("container:").is_some_and(|c| !c.is_empty()) {
        return Ok(Some(v));
    }
    Err(cx
        .diag
        .invalid(n.pos, f, format!("invalid {what} mode: {v}")))
}

/// References checked once every section is known.
#[derive(Default)]
struct Refs {
    /// (service, dependency, where, required).
    depends: Vec<(String, String, Pos, bool)>,
    /// (service, source service, where).
    volumes_from: Vec<(String, String, Pos)>,
    /// `service:NAME` in `network_mode`, `ipc`, `pid`: (service, NAME, where, field).
    shares: Vec<(String, String, Pos, String)>,
}

/// A file in Compose's first format (services at the top level, no `services:`)
/// says so, rather than calling its first service an unknown key.
fn compose_v1(cx: &Cx, root: &Node) -> Result<()> {
    if root.get("services").is_some() {
        return Ok(());
    }
    let Some(entries) = root.as_map() else {
        return Ok(());
    };
    for (k, v) in entries {
        let is_known = TOP.iter().any(|(name, _)| *name == k.name) || k.name.starts_with("x-");
        if !is_known && (v.get("image").is_some() || v.get("build").is_some()) {
            return Err(cx.diag.invalid(
                k.pos,
                &k.name,
                "services at the top level (Compose file format 1) are not supported: put them under a top-level `services:` key",
            ));
        }
    }
    Ok(())
}

pub(crate) fn convert(cx: &mut Cx, root: &Node) -> Result<StackSpec> {
    compose_v1(cx, root)?;
    let top = fields(cx.diag, root, "", TOP)?;
    let mut spec = StackSpec {
        name: cx.project.clone(),
        ..Default::default()
    };
    if let Some(v) = get(top, "version") {
        // Ignored, as by compose-go; 2.x keys are honoured whatever it says.
        scalar(cx.diag, v, "version", "a string")?;
    }
    // `name:` is the Compose project name; a deploy names the stack on the command
    // line, so only a different name is worth a warning.
    if let Some(v) = get(top, "name") {
        let name = string(cx.diag, v, "name")?;
        if name != cx.project {
            cx.diag.warn(
                v.pos,
                "name",
                format!(
                    "ignored: the stack is named {:?} on the command line",
                    cx.project
                ),
            );
        }
    }
    if let Some(n) = get(top, "networks") {
        for (k, v) in named_entries(cx.diag, n, "networks")? {
            let net = network(cx, k, v)?;
            spec.networks.insert(k.name.clone(), net);
        }
    }
    if let Some(n) = get(top, "volumes") {
        for (k, v) in named_entries(cx.diag, n, "volumes")? {
            let vol = volume_spec(cx, k, v)?;
            spec.volumes.insert(k.name.clone(), vol);
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(n) = get(top, section) {
            for (k, v) in named_entries(cx.diag, n, section)? {
                let s = secret_spec(cx, section, k, v)?;
                if section == "secrets" {
                    spec.secrets.insert(k.name.clone(), s);
                } else {
                    spec.configs.insert(k.name.clone(), s);
                }
            }
        }
    }
    let Some(services) = get(top, "services") else {
        return Err(cx
            .diag
            .invalid(root.pos, "services", "a stack needs at least one service"));
    };
    let entries = named_entries(cx.diag, services, "services")?;
    if entries.is_empty() && !cx.disabled.is_empty() {
        let mut profiles: Vec<&str> = cx.disabled.values().flatten().map(String::as_str).collect();
        profiles.sort_unstable();
        profiles.dedup();
        return Err(cx.diag.invalid(
            services.pos,
            "services",
            format!(
                "no service is enabled: every service is in a profile that is not active ({}); enable one with --profile NAME or COMPOSE_PROFILES",
                profiles.join(", ")
            ),
        ));
    }
    if entries.is_empty() {
        return Err(cx.diag.invalid(
            services.pos,
            "services",
            "a stack needs at least one service",
        ));
    }
    let mut refs = Refs::default();
    let mut uses_default = false;
    for (k, v) in entries {
        let svc = service(cx, &spec, &mut refs, k, v)?;
        uses_default |= svc.networks.contains_key("default");
        spec.services.insert(k.name.clone(), svc);
    }
    let mut dropped = Vec::new();
    for (svc, dep, pos, required) in &refs.depends {
        if spec.services.contains_key(dep) {
            continue;
        }
        let f = format!("services.{svc}.depends_on.{dep}");
        match cx.disabled.get(dep) {
            Some(_) if !required => dropped.push((svc.clone(), dep.clone())),
            Some(p) => {
                return Err(cx.diag.invalid(
                    *pos,
                    &f,
                    format!(
                        "service {dep:?} is not enabled: activate one of its profiles ({}) with --profile",
                        p.join(", ")
                    ),
                ))
            }
            None if !required => {
                cx.diag.warn(*pos, &f, format!("undefined service {dep:?} (not required: ignored)"));
                dropped.push((svc.clone(), dep.clone()));
            }
            None => {
                return Err(cx
                    .diag
                    .invalid(*pos, &f, format!("undefined service {dep:?}")))
            }
        }
    }
    for (svc, dep) in dropped {
        if let Some(s) = spec.services.get_mut(&svc) {
            s.depends_on.remove(&dep);
        }
    }
    for (svc, src, pos) in &refs.volumes_from {
        if !spec.services.contains_key(src) {
            let f = format!("services.{svc}.volumes_from");
            let why = match cx.disabled.get(src) {
                Some(p) => format!(
                    "service {src:?} is not enabled: activate one of its profiles ({}) with --profile",
                    p.join(", ")
                ),
                None => format!("undefined service {src:?}"),
            };
            return Err(cx.diag.invalid(*pos, &f, why));
        }
    }
    for (svc, src, pos, f) in &refs.shares {
        if src == svc {
            return Err(cx.diag.invalid(
                *pos,
                f,
                format!("service {svc:?} cannot share its own namespace"),
            ));
        }
        if !spec.services.contains_key(src) {
            let why = match cx.disabled.get(src) {
                Some(p) => format!(
                    "service {src:?} is not enabled: activate one of its profiles ({}) with --profile",
                    p.join(", ")
                ),
                None => format!("undefined service {src:?}"),
            };
            return Err(cx.diag.invalid(*pos, f, why));
        }
    }
    // Docker lets a container join another's IPC namespace only when that one is
    // shareable: a service others name in `ipc: service:` becomes so.
    let ipc_donors: Vec<String> = spec
        .services
        .values()
        .filter_map(|s| s.ipc.as_deref()?.strip_prefix("service:"))
        .map(str::to_string)
        .collect();
    for d in ipc_donors {
        if let Some(s) = spec.services.get_mut(&d) {
            if s.ipc.as_deref().is_none_or(|m| m == "private") {
                s.ipc = Some("shareable".into());
            }
        }
    }
    if let Some(cycle) = dependency_cycle(&spec) {
        let first = &cycle[0];
        let second = cycle.get(1).cloned().unwrap_or_default();
        let found = refs
            .depends
            .iter()
            .find(|(s, d, ..)| s == first && *d == second)
            .map(|x| (x.2, format!("services.{first}.depends_on")))
            .or_else(|| {
                refs.volumes_from
                    .iter()
                    .find(|(s, d, _)| s == first && *d == second)
                    .map(|x| (x.2, format!("services.{first}.depends_on")))
            })
            .or_else(|| {
                refs.shares
                    .iter()
                    .find(|(s, d, ..)| s == first && *d == second)
                    .map(|x| (x.2, x.3.clone()))
            });
        let (pos, f) = found.unwrap_or((root.pos, format!("services.{first}.depends_on")));
        return Err(cx.diag.invalid(
            pos,
            &f,
            format!("dependency cycle detected: {}", cycle.join(" -> ")),
        ));
    }
    if uses_default && !spec.networks.contains_key("default") {
        spec.networks.insert(
            "default".into(),
            NetworkSpec {
                name: format!("{}_default", cx.project),
                driver: Some("overlay".into()),
                ..Default::default()
            },
        );
    }
    Ok(spec)
}

/// The first cycle among `depends_on`, `volumes_from` and `service:` namespace
/// sharing (each starts a service after its source), as `a -> b -> a`.
fn dependency_cycle(spec: &StackSpec) -> Option<Vec<String>> {
    fn deps(s: &ServiceSpec) -> Vec<String> {
        let mut d: Vec<String> = s.depends_on.keys().cloned().collect();
        d.extend(
            s.volumes_from
                .iter()
                .filter_map(|v| v.strip_prefix("service:"))
                .map(|v| v.split(':').next().unwrap_or(v).to_string()),
        );
        d.extend(s.shared_services().map(str::to_string));
        d
    }
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(
        spec: &StackSpec,
        name: &str,
        state: &mut HashMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(name).copied().unwrap_or(0) {
            2 => return None,
            1 => {
                let start = path.iter().position(|p| p == name).unwrap_or(0);
                let mut c = path[start..].to_vec();
                c.push(name.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(name.to_string(), 1);
        path.push(name.to_string());
        if let Some(s) = spec.services.get(name) {
            for d in deps(s) {
                if let Some(c) = visit(spec, &d, state, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        state.insert(name.to_string(), 2);
        None
    }
    let mut state = HashMap::new();
    for name in spec.services.keys() {
        if let Some(c) = visit(spec, name, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// A mapping whose keys are user-chosen names (services, networks...). Keys are
/// validated as names rather than against a schema; `x-` keys are skipped.
fn named_entries<'n>(diag: &Diag, n: &'n Node, f: &str) -> Result<Vec<&'n (Key, Node)>> {
    let entries: &[(Key, Node)] = match &n.value {
        Value::Map(m) => m,
        Value::Null => &[],
        _ => {
            return Err(diag.invalid(
                n.pos,
                f,
                format!("expected a mapping, found {}", n.describe()),
            ))
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let name = &e.0.name;
        if name.starts_with("x-") {
            continue;
        }
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(diag.invalid(
                e.0.pos,
                &sub(f, name),
                format!("invalid name {name:?} (letters, digits, '_', '-' and '.', starting with a letter or digit)"),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// `external: true`, or the legacy `external: {name: x}`.
fn external(cx: &mut Cx, entries: &[(Key, Node)], f: &str) -> Result<(bool, Option<String>)> {
    let Some(n) = get_some(entries, "external") else {
        return Ok((false, None));
    };
    let ef = sub(f, "external");
    if let Value::Map(_) = n.value {
        let e = fields(cx.diag, n, &ef, &[("name", K::Ok)])?;
        cx.diag
            .warn(n.pos, &ef, "external.name is deprecated: use name");
        return Ok((
            true,
            opt_string(cx.diag, get(e, "name"), &sub(&ef, "name"))?,
        ));
    }
    Ok((boolean(cx.diag, n, &ef)?, None))
}

fn conflicting_with_external(
    cx: &Cx,
    entries: &[(Key, Node)],
    f: &str,
    allowed: &[&str],
) -> Result<()> {
    for (k, _) in entries {
        if !allowed.contains(&k.name.as_str()) && !k.name.starts_with("x-") {
            return Err(cx.diag.invalid(
                k.pos,
                &sub(f, &k.name),
                format!(
                    "conflicting parameters \"external\" and {:?} specified",
                    k.name
                ),
            ));
        }
    }
    Ok(())
}

fn resolved_name(cx: &Cx, key: &str, external: bool, name: Option<String>) -> String {
    match name {
        Some(n) => n,
        None if external => key.to_string(),
        None => format!("{}_{key}", cx.project),
    }
}

fn network(cx: &mut Cx, k: &Key, n: &Node) -> Result<NetworkSpec> {
    let f = format!("networks.{}", k.name);
    let e = fields(
        cx.diag,
        n,
        &f,
        &[
            ("driver", K::Ok),
            ("driver_opts", K::Ok),
            ("attachable", K::Ok),
            ("enable_ipv6", K::Ok),
            ("enable_ipv4", K::Warn("")),
            ("external", K::Ok),
            ("internal", K::Ok),
            ("ipam", K::Ok),
            ("labels", K::Ok),
            ("name", K::Ok),
        ],
    )?;
    let (ext, legacy_name) = external(cx, e, &f)?;
    let name = opt_string(cx.diag, get(e, "name"), &sub(&f, "name"))?.or(legacy_name);
    if ext {
        conflicting_with_external(cx, e, &f, &["external", "name"])?;
        return Ok(NetworkSpec {
            name: resolved_name(cx, &k.name, true, name),
            external: true,
            ..Default::default()
        });
    }
    let mut net = NetworkSpec {
        name: resolved_name(cx, &k.name, false, name),
        driver: Some(
            opt_string(cx.diag, get(e, "driver"), &sub(&f, "driver"))?
                .unwrap_or_else(|| "overlay".into()),
        ),
        driver_opts: labels(cx.diag, get(e, "driver_opts"), &sub(&f, "driver_opts"))?,
        labels: labels(cx.diag, get(e, "labels"), &sub(&f, "labels"))?,
        ..Default::default()
    };
    for (key, slot) in [
        ("attachable", &mut net.attachable),
        ("internal", &mut net.internal),
        ("enable_ipv6", &mut net.enable_ipv6),
    ] {
        if let Some(v) = get_some(e, key) {
            *slot = boolean(cx.diag, v, &sub(&f, key))?;
        }
    }
    if let Some(ipam) = get_some(e, "ipam") {
        let ff = sub(&f, "ipam");
        let ie = fields(
            cx.diag,
            ipam,
            &ff,
            &[("driver", K::Ok), ("config", K::Ok), ("options", K::Ok)],
        )?;
        let mut out = Ipam {
            driver: opt_string(cx.diag, get(ie, "driver"), &sub(&ff, "driver"))?,
            options: labels(cx.diag, get(ie, "options"), &sub(&ff, "options"))?,
            ..Default::default()
        };
        if let Some(cfg) = get_some(ie, "config") {
            let cf = sub(&ff, "config");
            let Value::Seq(items) = &cfg.value else {
                return Err(cx.diag.invalid(
                    cfg.pos,
                    &cf,
                    format!("expected a list, found {}", cfg.describe()),
                ));
            };
            for (i, it) in items.iter().enumerate() {
                let pf = idx(&cf, i);
                let pe = fields(
                    cx.diag,
                    it,
                    &pf,
                    &[
                        ("subnet", K::Ok),
                        ("ip_range", K::Ok),
                        ("gateway", K::Ok),
                        ("aux_addresses", K::Ok),
                    ],
                )?;
                let mut pool = IpamPool {
                    subnet: opt_string(cx.diag, get(pe, "subnet"), &sub(&pf, "subnet"))?,
                    ip_range: opt_string(cx.diag, get(pe, "ip_range"), &sub(&pf, "ip_range"))?,
                    gateway: opt_string(cx.diag, get(pe, "gateway"), &sub(&pf, "gateway"))?,
                    aux_addresses: labels(
                        cx.diag,
                        get(pe, "aux_addresses"),
                        &sub(&pf, "aux_addresses"),
                    )?,
                };
                for (key, v) in [("subnet", &pool.subnet), ("ip_range", &pool.ip_range)] {
                    if let (Some(v), Some(n)) = (v, get(pe, key)) {
                        check_cidr(cx.diag, n, &sub(&pf, key), v)?;
                    }
                }
                if let (Some(g), Some(n)) = (&pool.gateway, get(pe, "gateway")) {
                    if g.parse::<std::net::IpAddr>().is_err() {
                        return Err(cx.diag.invalid(
                            n.pos,
                            &sub(&pf, "gateway"),
                            format!("invalid IP address {g:?}"),
                        ));
                    }
                }
                pool.aux_addresses.retain(|_, v| !v.is_empty());
                out.config.push(pool);
            }
        }
        net.ipam = Some(out);
    }
    Ok(net)
}

fn check_cidr(diag: &Diag, n: &Node, f: &str, v: &str) -> Result<()> {
    let ok = v.split_once('/').is_some_and(|(ip, len)| {
        match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        }
    });
    if ok {
        Ok(())
    } else {
        Err(diag.invalid(
            n.pos,
            f,
            format!("invalid CIDR {v:?} (expected e.g. 10.0.9.0/24)"),
        ))
    }
}

fn volume_spec(cx: &mut Cx, k: &Key, n: &Node) -> Result<VolumeSpec> {
    let f = format!("volumes.{}", k.name);
    let e = fields(
        cx.diag,
        n,
        &f,
        &[
            ("driver", K::Ok),
            ("driver_opts", K::Ok),
            ("external", K::Ok),
            ("labels", K::Ok),
            ("name", K::Ok),
        ],
    )?;
    let (ext, legacy) = external(cx, e, &f)?;
    let name = opt_string(cx.diag, get(e, "name"), &sub(&f, "name"))?.or(legacy);
    if ext {
        conflicting_with_external(cx, e, &f, &["external", "name"])?;
    }
    Ok(VolumeSpec {
        name: resolved_name(cx, &k.name, ext, name),
        external: ext,
        driver: opt_string(cx.diag, get(e, "driver"), &sub(&f, "driver"))?,
        driver_opts: labels(cx.diag, get(e, "driver_opts"), &sub(&f, "driver_opts"))?,
        labels: labels(cx.diag, get(e, "labels"), &sub(&f, "labels"))?,
    })
}

fn secret_spec(cx: &mut Cx, section: &str, k: &Key, n: &Node) -> Result<SecretSpec> {
    let f = format!("{section}.{}", k.name);
    let is_secret = section == "secrets";
    let keys: &[(&str, K)] = if is_secret {
        &[
            ("file", K::Ok),
            ("environment", K::Ok),
            ("content", K::Ok),
            ("external", K::Ok),
            ("labels", K::Ok),
            ("name", K::Ok),
            ("driver", K::Warn("")),
            ("driver_opts", K::Warn("")),
            ("template_driver", K::Warn("")),
        ]
    } else {
        &[
            ("file", K::Ok),
            ("environment", K::Ok),
            ("content", K::Ok),
            ("external", K::Ok),
            ("labels", K::Ok),
            ("name", K::Ok),
            ("template_driver", K::Warn("")),
        ]
    };
    let e = fields(cx.diag, n, &f, keys)?;
    let (ext, legacy) = external(cx, e, &f)?;
    let name = opt_string(cx.diag, get(e, "name"), &sub(&f, "name"))?.or(legacy);
    let mut sources = Vec::new();
    if ext {
        conflicting_with_external(cx, e, &f, &["external", "name"])?;
        sources.push(Source::External);
    }
    if let Some(v) = get_some(e, "file") {
        let ff = sub(&f, "file");
        // Read at deploy, not here: `stack config` works without the files.
        sources.push(Source::File(host_path(cx, v, &ff)?));
    }
    if let Some(v) = get_some(e, "environment") {
        let ef = sub(&f, "environment");
        sources.push(Source::Environment(string(cx.diag, v, &ef)?));
    }
    if let Some(v) = get_some(e, "content") {
        sources.push(Source::Content(string(cx.diag, v, &sub(&f, "content"))?));
    }
    let what = "file, environment, content or external";
    let source = match sources.len() {
        1 => sources.remove(0),
        0 => {
            return Err(cx
                .diag
                .invalid(k.pos, &f, format!("needs a source: one of {what}")))
        }
        _ => {
            return Err(cx.diag.invalid(
                k.pos,
                &f,
                format!("has more than one source: give one of {what}"),
            ))
        }
    };
    Ok(SecretSpec {
        name: resolved_name(cx, &k.name, ext, name),
        source,
        labels: labels(cx.diag, get(e, "labels"), &sub(&f, "labels"))?,
    })
}

/// A host path from the file, made absolute against the base directory; `~` is HOME.
fn host_path(cx: &Cx, n: &Node, f: &str) -> Result<PathBuf> {
    let t = scalar(cx.diag, n, f, "a path")?;
    resolve_host_path(cx, t).map_err(|m| cx.diag.invalid(n.pos, f, m))
}

fn resolve_host_path(cx: &Cx, t: &str) -> std::result::Result<PathBuf, String> {
    let p = if t == "~" || t.starts_with("~/") {
        let home = cx
            .env
            .get("HOME")
            .ok_or_else(|| format!("{t:?} uses ~ but HOME is not set"))?;
        Path::new(home).join(t.trim_start_matches('~').trim_start_matches('/'))
    } else {
        cx.base_dir.join(t)
    };
    Ok(crate::relocate::normalise(&p))
}

fn service(
    cx: &mut Cx,
    spec: &StackSpec,
    refs: &mut Refs,
    k: &Key,
    n: &Node,
) -> Result<ServiceSpec> {
    let f = format!("services.{}", k.name);
    let e = fields(cx.diag, n, &f, SERVICE)?;
    let p = |key: &str| sub(&f, key);
    let build = match get_some(e, "build") {
        Some(b) => Some(build(cx, spec, b, &p("build"))?),
        None => None,
    };
    let image = match (get_some(e, "image"), &build) {
        (Some(v), _) => string(cx.diag, v, &p("image"))?,
        // Compose names a built image after the project and service; image names
        // are lower case.
        (None, Some(_)) => format!("{}_{}", cx.project, k.name).to_lowercase(),
        (None, None) => {
            if let Some(pv) = get_some(e, "provider") {
                return Err(cx.diag.invalid(
                    pv.pos,
                    &p("provider"),
                    "a service run by a provider (no image, no build) cannot be deployed as a cluster service",
                ));
            }
            return Err(cx.diag.invalid(
                k.pos,
                &f,
                "has neither an image nor a build context specified (if this file only overrides another, load it after that one: -c BASE -c OVERRIDE)",
            ));
        }
    };
    if image.trim().is_empty() {
        let pos = get(e, "image").map(|v| v.pos).unwrap_or(k.pos);
        return Err(cx.diag.invalid(pos, &p("image"), "image is empty"));
    }
    let mut s = ServiceSpec {
        image,
        build,
        ..Default::default()
    };
    s.command = get(e, "command")
        .map(|v| command(cx.diag, v, &p("command")))
        .transpose()?
        .flatten();
    s.entrypoint = get(e, "entrypoint")
        .map(|v| command(cx.diag, v, &p("entrypoint")))
        .transpose()?
        .flatten();
    s.environment = environment(cx, e, &f)?;
    if let Some(v) = get_some(e, "ports") {
        s.ports = ports(cx.diag, v, &p("ports"))?;
    }
    if let Some(v) = get_some(e, "volumes") {
        s.volumes = mounts(cx, spec, v, &p("volumes"))?;
    }
    s.network_mode = namespace_mode(
        cx,
        refs,
        &k.name,
        get_some(e, "network_mode"),
        &p("network_mode"),
        "network",
        &["host", "none", "bridge"],
    )?;
    match (&s.network_mode, get_some(e, "networks")) {
        // Compose: "service declares mutually exclusive `network_mode` and `networks`".
        (Some(_), Some(v)) => {
            return Err(cx.diag.invalid(
                v.pos,
                &p("networks"),
                "network_mode and networks are mutually exclusive",
            ));
        }
        (Some(_), None) => {}
        (None, n) => s.networks = service_networks(cx, spec, n, &p("networks"))?,
    }
    s.hostname = opt_string(cx.diag, get(e, "hostname"), &p("hostname"))?;
    s.user = opt_string(cx.diag, get(e, "user"), &p("user"))?;
    s.working_dir = opt_string(cx.diag, get(e, "working_dir"), &p("working_dir"))?;
    if let Some(v) = get_some(e, "label_file") {
        s.labels = label_files(cx, v, &p("label_file"))?;
    }
    s.labels
        .extend(labels(cx.diag, get(e, "labels"), &p("labels"))?);
    if let Some(v) = get_some(e, "healthcheck") {
        s.healthcheck = Some(healthcheck(cx, v, &p("healthcheck"))?);
    }
    if let Some(v) = get_some(e, "stop_grace_period") {
        s.stop_grace_period = Some(duration(cx.diag, v, &p("stop_grace_period"))?);
    }
    s.stop_signal = opt_string(cx.diag, get(e, "stop_signal"), &p("stop_signal"))?;
    if let Some(v) = get_some(e, "depends_on") {
        s.depends_on = depends_on(cx, refs, &k.name, v, &p("depends_on"))?;
    }
    for section in ["secrets", "configs"] {
        if let Some(v) = get_some(e, section) {
            let r = file_refs(cx, spec, section, v, &p(section))?;
            if section == "secrets" {
                s.secrets = r;
            } else {
                s.configs = r;
            }
        }
    }
    for (key, slot) in [
        ("cap_add", &mut s.cap_add),
        ("cap_drop", &mut s.cap_drop),
        ("dns", &mut s.dns),
        ("dns_search", &mut s.dns_search),
        ("dns_opt", &mut s.dns_opt),
        ("group_add", &mut s.group_add),
        ("tmpfs", &mut s.tmpfs),
    ] {
        if let Some(v) = get(e, key) {
            *slot = str_list(cx.diag, v, &p(key), true)?;
        }
    }
    if let Some(v) = get_some(e, "extra_hosts") {
        s.extra_hosts = extra_hosts(cx.diag, v, &p("extra_hosts"))?;
    }
    if let Some(v) = get_some(e, "init") {
        s.init = Some(boolean(cx.diag, v, &p("init"))?);
    }
    for (key, slot) in [
        ("read_only", &mut s.read_only),
        ("tty", &mut s.tty),
        ("stdin_open", &mut s.stdin_open),
    ] {
        if let Some(v) = get_some(e, key) {
            *slot = boolean(cx.diag, v, &p(key))?;
        }
    }
    s.sysctls = labels(cx.diag, get(e, "sysctls"), &p("sysctls"))?;
    if let Some(v) = get_some(e, "group_add") {
        cx.diag.warn(
            v.pos,
            &p("group_add"),
            format!("ignoring unsupported option group_add{NOT_APPLIED}"),
        );
    }
    if let Some(v) = get_some(e, "shm_size") {
        s.shm_size = Some(bytes(cx.diag, v, &p("shm_size"))?);
    }
    s.ipc = namespace_mode(
        cx,
        refs,
        &k.name,
        get_some(e, "ipc"),
        &p("ipc"),
        "IPC",
        &["private", "shareable", "host", "none"],
    )?;
    s.pid = namespace_mode(
        cx,
        refs,
        &k.name,
        get_some(e, "pid"),
        &p("pid"),
        "PID",
        &["host"],
    )?;
    if let Some(v) = get_some(e, "privileged") {
        s.privileged = boolean(cx.diag, v, &p("privileged"))?;
    }
    for (key, slot) in [
        ("security_opt", &mut s.security_opt),
        ("devices", &mut s.devices),
        ("profiles", &mut s.profiles),
    ] {
        if let Some(v) = get_some(e, key) {
            *slot = device_like(cx.diag, v, &p(key))?;
        }
    }
    if let Some(v) = get_some(e, "volumes_from") {
        s.volumes_from = volumes_from(cx, refs, &k.name, v, &p("volumes_from"))?;
    }
    if let Some(v) = get_some(e, "ulimits") {
        s.ulimits = ulimits(cx, v, &p("ulimits"))?;
    }
    if let Some(v) = get_some(e, "logging") {
        let lf = p("logging");
        let le = fields(cx.diag, v, &lf, &[("driver", K::Ok), ("options", K::Ok)])?;
        s.logging = Some(Logging {
            driver: opt_string(cx.diag, get(le, "driver"), &sub(&lf, "driver"))?,
            options: labels(cx.diag, get(le, "options"), &sub(&lf, "options"))?,
        });
    }
    if let Some(v) = get(e, "deploy") {
        s.deploy = crate::deploy::deploy(cx, v, &p("deploy"))?;
    }
    let dep = get_some(e, "deploy");
    let in_deploy = |key: &str| {
        dep.and_then(|d| d.get(key))
            .is_some_and(|n| n.value != Value::Null)
    };
    if let Some(v) = get_some(e, "scale") {
        let n = uint(cx.diag, v, &p("scale"))?;
        match s.deploy.mode {
            ServiceMode::Global => {
                return Err(cx.diag.invalid(
                    v.pos,
                    &p("scale"),
                    "scale can only be used with replicated mode",
                ))
            }
            ServiceMode::Replicated { replicas } if in_deploy("replicas") && replicas != n => {
                return Err(cx.diag.invalid(
                    v.pos,
                    &p("scale"),
                    format!(
                        "scale ({n}) and deploy.replicas ({replicas}) differ: give one of them"
                    ),
                ))
            }
            ServiceMode::Replicated { .. } => {
                s.deploy.mode = ServiceMode::Replicated { replicas: n }
            }
        }
    }
    if let Some(v) = get_some(e, "restart") {
        let policy = restart(cx.diag, v, &p("restart"))?;
        // deploy.restart_policy, when given, is the more specific of the two.
        if !in_deploy("restart_policy") {
            s.deploy.restart_policy.condition = policy.0;
            s.deploy.restart_policy.max_attempts = policy.1;
        }
    }
    legacy_resources(cx, e, &f, &mut s.deploy.resources)?;
    if let Some(l) = &mut s.logging {
        let driver = l.driver.clone().unwrap_or_default();
        if !matches!(driver.as_str(), "" | "json-file" | "local") {
            let pos = get(e, "logging").map(|v| v.pos).unwrap_or(k.pos);
            cx.diag.warn(
                pos,
                &p("logging.driver"),
                format!("ignoring unsupported log driver {driver:?}: tasks log to local files"),
            );
        }
    }
    network_mode_ports(cx, e, &s, &p("ports"))?;
    if s.deploy.endpoint_mode == EndpointMode::Dnsrr {
        if let Some(i) = s.ports.iter().position(|pc| pc.mode == PortMode::Ingress) {
            let pos = get(e, "ports").map(|v| v.pos).unwrap_or(k.pos);
            return Err(cx.diag.invalid(
                pos,
                &idx(&p("ports"), i),
                "a port published in ingress mode cannot be used with endpoint_mode dnsrr (use mode: host)",
            ));
        }
    }
    Ok(s)
}

/// Ports a `network_mode` rules out. Sharing another's namespace (`service:`,
/// `container:`) publishes nothing of its own (Compose refuses `ports` there too);
/// `none` has nothing to publish on. With `host`, Docker discards published ports
/// and Compose warns; in a cluster an ingress port would route to a task that does
/// not listen behind it, so it is an error and `mode: host` is the way.
fn network_mode_ports(cx: &Cx, e: &[(Key, Node)], s: &ServiceSpec, f: &str) -> Result<()> {
    let (Some(mode), Some(v)) = (s.network_mode.as_deref(), get_some(e, "ports")) else {
        return Ok(());
    };
    if mode == "host" {
        if let Some(i) = s.ports.iter().position(|pc| pc.mode == PortMode::Ingress) {
            return Err(cx.diag.invalid(
                v.pos,
                &idx(f, i),
                "a port published in ingress mode cannot be used with network_mode host (Docker discards published ports in host network mode; use mode: host, or no ports: the task listens on the node's own)",
            ));
        }
    } else if mode != "bridge" && !s.ports.is_empty() {
        return Err(cx.diag.invalid(
            v.pos,
            f,
            format!("conflicting options: port publishing and network_mode {mode}"),
        ));
    }
    Ok(())
}

/// `command`/`entrypoint`: a list, or a string split like a shell would. `null`
/// means "not set".
fn command(diag: &Diag, n: &Node, f: &str) -> Result<Option<Vec<String>>> {
    match &n.value {
        Value::Null => Ok(None),
        Value::Str { text, .. } => shlex::split(text)
            .map(Some)
            .ok_or_else(|| diag.invalid(n.pos, f, format!("unbalanced quotes in {text:?}"))),
        Value::Seq(_) => str_list(diag, n, f, false).map(Some),
        Value::Map(_) => Err(diag.invalid(
            n.pos,
            f,
            "expected a string or a list of strings, found a mapping",
        )),
    }
}

/// env_file entries first, then `environment` over them; sorted by key.
fn environment(cx: &mut Cx, e: &[(Key, Node)], f: &str) -> Result<Vec<String>> {
    let mut vars: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(n) = get_some(e, "env_file") {
        let ef = sub(f, "env_file");
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for (i, it) in items.into_iter().enumerate() {
            let itf = if matches!(n.value, Value::Seq(_)) {
                idx(&ef, i)
            } else {
                ef.clone()
            };
            let (path_node, required) = match &it.value {
                Value::Map(_) => {
                    let m = fields(
                        cx.diag,
                        it,
                        &itf,
                        &[
                            ("path", K::Ok),
                            ("required", K::Ok),
                            ("format", K::Warn(": only the default format is read")),
                        ],
                    )?;
                    let Some(pn) = get_some(m, "path") else {
                        return Err(cx.diag.invalid(it.pos, &itf, "path is required"));
                    };
                    let req = match get_some(m, "required") {
                        Some(r) => boolean(cx.diag, r, &sub(&itf, "required"))?,
                        None => true,
                    };
                    (pn, req)
                }
                _ => (it, true),
            };
            let path = host_path(cx, path_node, &itf)?;
            let text = match crate::read_capped(&path) {
                Ok(t) => t,
                Err(StackError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && !required =>
                {
                    continue
                }
                Err(StackError::Io { source, .. }) => {
                    return Err(cx.diag.invalid(
                        path_node.pos,
                        &itf,
                        format!("cannot read env file {}: {source}", path.display()),
                    ))
                }
                Err(e) => return Err(e),
            };
            let entries = dotenv::parse(&text).map_err(|(line, message)| StackError::Invalid {
                location: Location {
                    file: path.clone(),
                    line,
                    col: 1,
                },
                field: itf.clone(),
                message,
            })?;
            for (k, v) in dotenv::resolve(&entries, cx.env) {
                vars.insert(k, Some(v));
            }
        }
    }
    if let Some(n) = get(e, "environment") {
        for (k, v) in kv(cx.diag, n, &sub(f, "environment"))? {
            // No value: taken from the deploying environment when set there.
            let v = v.or_else(|| cx.env.get(&k).cloned());
            vars.insert(k, v);
        }
    }
    Ok(vars
        .into_iter()
        .map(|(k, v)| v.map(|v| format!("{k}={v}")).unwrap_or(k))
        .collect())
}

fn parse_port_number(s: &str) -> std::result::Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {s:?}")),
    }
}

fn parse_port_range(s: &str) -> std::result::Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_port_number(a)?, parse_port_number(b)?);
            if b < a {
                return Err(format!("invalid port range {s:?}"));
            }
            Ok((a, b))
        }
        None => parse_port_number(s).map(|p| (p, p)),
    }
}

fn parse_protocol(s: &str) -> std::result::Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(format!(
            "invalid protocol {s:?} (expected tcp, udp or sctp)"
        )),
    }
}

/// Short port syntax: `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`, with an
/// IPv6 host address in brackets. Ranges expand to one entry per port.
pub(crate) fn parse_short_port(spec: &str) -> std::result::Result<Vec<PortConfig>, String> {
    if spec.trim().is_empty() {
        return Err("invalid port \"\": empty (an unset variable?)".to_string());
    }
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, parse_protocol(p)?),
        None => (spec, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r
            .split_once("]:")
            .ok_or_else(|| format!("invalid port {spec:?}"))?;
        (Some(ip.to_string()), r)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (None, rest),
            // `:8080:80`: an empty host IP means every address, as in Docker.
            3 => (
                Some(parts[0].to_string()).filter(|ip| !ip.is_empty()),
                rest.split_once(':').map(|x| x.1).unwrap_or(rest),
            ),
            _ => {
                return Err(format!(
                    "invalid port {spec:?} (put an IPv6 host address in brackets)"
                ))
            }
        }
    };
    if let Some(ip) = &host_ip {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid host IP {ip:?} in port {spec:?}"));
        }
    }
    let (published, target) = match rest.split_once(':') {
        Some((p, t)) => (
            if p.is_empty() {
                None
            } else {
                Some(parse_port_range(p)?)
            },
            parse_port_range(t)?,
        ),
        None => (None, parse_port_range(rest)?),
    };
    let count = target.1 - target.0;
    // `8000-8010:80`: Docker picks one host port of the range; a cluster publishes
    // the same port on every node, so the first one is taken.
    let published = match published {
        Some(p) if count == 0 => Some((p.0, p.0)),
        other => other,
    };
    if let Some(p) = published {
        if p.1 - p.0 != count {
            return Err(format!(
                "invalid port {spec:?}: the published and target ranges differ in size"
            ));
        }
    }
    Ok((0..=count)
        .map(|i| PortConfig {
            target: target.0 + i,
            published: published.map(|p| p.0 + i),
            protocol,
            mode: PortMode::Ingress,
            host_ip: host_ip.clone(),
            ..Default::default()
        })
        .collect())
}

fn ports(diag: &mut Diag, n: &Node, f: &str) -> Result<Vec<PortConfig>> {
    let Value::Seq(items) = &n.value else {
        return Err(diag.invalid(
            n.pos,
            f,
            format!("expected a list of ports, found {}", n.describe()),
        ));
    };
    let mut out: Vec<PortConfig> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let pf = idx(f, i);
        let new = match &it.value {
            Value::Str { text, .. } => {
                parse_short_port(text).map_err(|m| diag.invalid(it.pos, &pf, m))?
            }
            Value::Map(_) => vec![long_port(diag, it, &pf)?],
            _ => {
                return Err(diag.invalid(
                    it.pos,
                    &pf,
                    format!("expected a port, found {}", it.describe()),
                ))
            }
        };
        for pc in new {
            if let Some(p) = pc.published {
                if out
                    .iter()
                    .any(|o| o.published == Some(p) && o.protocol == pc.protocol)
                {
                    return Err(diag.invalid(
                        it.pos,
                        &pf,
                        format!("port {p}/{} is published twice", pc.protocol),
                    ));
                }
            }
            out.push(pc);
        }
    }
    Ok(out)
}

fn long_port(diag: &mut Diag, n: &Node, f: &str) -> Result<PortConfig> {
    let e = fields(
        diag,
        n,
        f,
        &[
            ("target", K::Ok),
            ("published", K::Ok),
            ("host_ip", K::Ok),
            ("protocol", K::Ok),
            ("mode", K::Ok),
            ("name", K::Ok),
            ("app_protocol", K::Ok),
        ],
    )?;
    let port = |n: &Node, f: &str| -> Result<u16> {
        let t = scalar(diag, n, f, "a port number")?;
        parse_port_number(t.trim()).map_err(|m| diag.invalid(n.pos, f, m))
    };
    let Some(t) = get_some(e, "target") else {
        return Err(diag.invalid(n.pos, f, "target is required"));
    };
    let mut pc = PortConfig {
        target: port(t, &sub(f, "target"))?,
        ..Default::default()
    };
    if let Some(p) = get_some(e, "published") {
        let pf = sub(f, "published");
        let t = scalar(diag, p, &pf, "a port number")?.trim().to_string();
        if !t.is_empty() {
            // A range (`8000-8010`): as in the short syntax, its first port.
            pc.published = Some(if t.contains('-') {
                parse_port_range(&t)
                    .map(|r| r.0)
                    .map_err(|m| diag.invalid(p.pos, &pf, m))?
            } else {
                port(p, &pf)?
            });
        }
    }
    if let Some(p) = get_some(e, "protocol") {
        let pf = sub(f, "protocol");
        pc.protocol = parse_protocol(scalar(diag, p, &pf, "a protocol")?)
            .map_err(|m| diag.invalid(p.pos, &pf, m))?;
    }
    if let Some(m) = get_some(e, "mode") {
        let mf = sub(f, "mode");
        pc.mode = match scalar(diag, m, &mf, "a port mode")? {
            "ingress" => PortMode::Ingress,
            "host" => PortMode::Host,
            other => {
                return Err(diag.invalid(
                    m.pos,
                    &mf,
                    format!("invalid mode {other:?} (expected ingress or host)"),
                ))
            }
        };
    }
    if let Some(ip) = get_some(e, "host_ip") {
        let hf = sub(f, "host_ip");
        let t = string(diag, ip, &hf)?;
        if t.parse::<std::net::IpAddr>().is_err() {
            return Err(diag.invalid(ip.pos, &hf, format!("invalid IP address {t:?}")));
        }
        pc.host_ip = Some(t);
    }
    pc.name = opt_string(diag, get(e, "name"), &sub(f, "name"))?;
    pc.app_protocol = opt_string(diag, get(e, "app_protocol"), &sub(f, "app_protocol"))?;
    Ok(pc)
}

fn check_target(diag: &Diag, n: &Node, f: &str, target: &str) -> Result<()> {
    if !target.starts_with('/') {
        return Err(diag.invalid(
            n.pos,
            f,
            format!("mount target {target:?} must be an absolute path"),
        ));
    }
    Ok(())
}

/// A container path as Compose writes it out: `/var/mail/` is `/var/mail`.
fn clean_container_path(p: &str) -> String {
    crate::relocate::normalise(Path::new(p))
        .to_string_lossy()
        .into_owned()
}

fn is_host_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('.') || s.starts_with('~')
}

fn volume_ref(cx: &Cx, spec: &StackSpec, n: &Node, f: &str, name: &str) -> Result<()> {
    if !spec.volumes.contains_key(name) {
        return Err(cx.diag.invalid(
            n.pos,
            f,
            format!("undefined volume {name:?} (declare it in the top-level volumes section)"),
        ));
    }
    Ok(())
}

/// Short volume syntax: `TARGET`, `SOURCE:TARGET[:OPTIONS]` or `TARGET:ro`.
fn short_mount(cx: &mut Cx, spec: &StackSpec, n: &Node, f: &str, text: &str) -> Result<Mount> {
    let parts: Vec<&str> = text.split(':').collect();
    let is_mode = |s: &str| s.split(',').all(|o| matches!(o, "ro" | "rw"));
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, None),
        [t, o] if t.starts_with('/') && is_mode(o) => (None, *t, Some(*o)),
        [s, t] => (Some(*s), *t, None),
        [s, t, o] => (Some(*s), *t, Some(*o)),
        _ => {
            return Err(cx.diag.invalid(
                n.pos,
                f,
                format!("invalid volume {text:?} (expected SOURCE:TARGET[:MODE])"),
            ))
        }
    };
    check_target(cx.diag, n, f, target)?;
    let mut m = Mount {
        target: clean_container_path(target),
        ..Default::default()
    };
    match source {
        Some("") => {
            return Err(cx.diag.invalid(
                n.pos,
                f,
                format!(
                    "invalid volume {text:?}: the source before ':' is empty (an unset variable?)"
                ),
            ))
        }
        Some(s) if is_host_path(s) => {
            m.kind = MountKind::Bind;
            let p = resolve_host_path(cx, s).map_err(|e| cx.diag.invalid(n.pos, f, e))?;
            m.source = Some(p.to_string_lossy().into_owned());
        }
        Some(s) => {
            volume_ref(cx, spec, n, f, s)?;
            m.kind = MountKind::Volume;
            m.source = Some(s.to_string());
        }
        None => m.kind = MountKind::Volume,
    }
    // Options the cluster cannot apply to this kind of mount, and unknown ones, are
    // warned and dropped: compose-go ignores unknown options, and `:z`/`:Z` (SELinux
    // relabelling) is common on named volumes in files written for Podman or Fedora.
    let mut ignored: Vec<&str> = Vec::new();
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        match o {
            "ro" => m.read_only = true,
            "rw" => m.read_only = false,
            "nocopy" if m.kind == MountKind::Volume => {
                m.volume.get_or_insert_with(Default::default).nocopy = true
            }
            "z" | "Z" if m.kind == MountKind::Bind => {
                m.bind.get_or_insert_with(Default::default).selinux = Some(o.to_string())
            }
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
                if m.kind == MountKind::Bind =>
            {
                m.bind.get_or_insert_with(Default::default).propagation = Some(o.to_string())
            }
            "cached" | "delegated" | "consistent" => m.consistency = Some(o.to_string()),
            "" => {
                return Err(cx.diag.invalid(
                    n.pos,
                    f,
                    format!("invalid volume {text:?}: empty option"),
                ));
            }
            other => ignored.push(other),
        }
    }
    if !ignored.is_empty() {
        let kind = match m.kind {
            MountKind::Bind => "bind mount",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs mount",
        };
        cx.diag.warn(
            n.pos,
            f,
            format!(
                "ignoring volume option(s) {} in {text:?}: not applicable to a {kind} here",
                ignored.join(",")
            ),
        );
    }
    Ok(m)
}

fn long_mount(cx: &mut Cx, spec: &StackSpec, n: &Node, f: &str) -> Result<Mount> {
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("type", K::Ok),
            ("source", K::Ok),
            ("target", K::Ok),
            ("read_only", K::Ok),
            ("consistency", K::Ok),
            ("bind", K::Ok),
            ("volume", K::Ok),
            ("tmpfs", K::Ok),
            ("image", K::Warn("")),
        ],
    )?;
    let Some(tn) = get_some(e, "type") else {
        return Err(cx
            .diag
            .invalid(n.pos, f, "type is required (volume, bind or tmpfs)"));
    };
    let tf = sub(f, "type");
    let kind = match scalar(cx.diag, tn, &tf, "a mount type")? {
        "volume" => MountKind::Volume,
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        other => {
            return Err(cx.diag.invalid(
                tn.pos,
                &tf,
                format!("unsupported mount type {other:?} (expected volume, bind or tmpfs)"),
            ))
        }
    };
    let Some(target_node) = get_some(e, "target") else {
        return Err(cx.diag.invalid(n.pos, f, "target is required"));
    };
    let target = string(cx.diag, target_node, &sub(f, "target"))?;
    check_target(cx.diag, target_node, &sub(f, "target"), &target)?;
    let mut m = Mount {
        kind,
        target: clean_container_path(&target),
        ..Default::default()
    };
    let sf = sub(f, "source");
    let source = get_some(e, "source");
    match (kind, source) {
        (MountKind::Bind, None) => {
            return Err(cx
                .diag
                .invalid(n.pos, f, "source is required for a bind mount"))
        }
        (MountKind::Bind, Some(s)) => {
            m.source = Some(host_path(cx, s, &sf)?.to_string_lossy().into_owned())
        }
        (MountKind::Volume, Some(s)) => {
            let name = string(cx.diag, s, &sf)?;
            volume_ref(cx, spec, s, &sf, &name)?;
            m.source = Some(name);
        }
        (MountKind::Volume, None) => {}
        (MountKind::Tmpfs, Some(s)) => {
            return Err(cx.diag.invalid(s.pos, &sf, "a tmpfs mount takes no source"))
        }
        (MountKind::Tmpfs, None) => {}
    }
    if let Some(v) = get_some(e, "read_only") {
        m.read_only = boolean(cx.diag, v, &sub(f, "read_only"))?;
    }
    m.consistency = opt_string(cx.diag, get(e, "consistency"), &sub(f, "consistency"))?;
    let option_block = |cx: &mut Cx, key: &str, want: MountKind| -> Result<Option<&Node>> {
        match get_some(e, key) {
            Some(b) if kind != want => Err(cx.diag.invalid(
                b.pos,
                &sub(f, key),
                format!("{key} options do not apply to a {kind:?} mount"),
            )),
            other => Ok(other),
        }
    };
    if let Some(b) = option_block(cx, "bind", MountKind::Bind)? {
        let bf = sub(f, "bind");
        let be = fields(
            cx.diag,
            b,
            &bf,
            &[
                ("propagation", K::Ok),
                ("create_host_path", K::Ok),
                ("selinux", K::Ok),
            ],
        )?;
        let mut bo = BindOptions {
            propagation: opt_string(cx.diag, get(be, "propagation"), &sub(&bf, "propagation"))?,
            selinux: opt_string(cx.diag, get(be, "selinux"), &sub(&bf, "selinux"))?,
            ..Default::default()
        };
        if let Some(c) = get_some(be, "create_host_path") {
            bo.create_host_path = Some(boolean(cx.diag, c, &sub(&bf, "create_host_path"))?);
        }
        m.bind = Some(bo);
    }
    if let Some(b) = option_block(cx, "volume", MountKind::Volume)? {
        let vf = sub(f, "volume");
        let ve = fields(cx.diag, b, &vf, &[("nocopy", K::Ok), ("subpath", K::Ok)])?;
        let mut vo = VolumeOptions {
            subpath: opt_string(cx.diag, get(ve, "subpath"), &sub(&vf, "subpath"))?,
            ..Default::default()
        };
        if let Some(c) = get_some(ve, "nocopy") {
            vo.nocopy = boolean(cx.diag, c, &sub(&vf, "nocopy"))?;
        }
        m.volume = Some(vo);
    }
    if let Some(b) = option_block(cx, "tmpfs", MountKind::Tmpfs)? {
        let tf = sub(f, "tmpfs");
        let te = fields(cx.diag, b, &tf, &[("size", K::Ok), ("mode", K::Ok)])?;
        let mut to = TmpfsOptions::default();
        if let Some(s) = get_some(te, "size") {
            to.size = Some(bytes(cx.diag, s, &sub(&tf, "size"))?);
        }
        if let Some(s) = get_some(te, "mode") {
            to.mode = Some(file_mode(cx.diag, s, &sub(&tf, "mode"))?);
        }
        m.tmpfs = Some(to);
    }
    Ok(m)
}

fn mounts(cx: &mut Cx, spec: &StackSpec, n: &Node, f: &str) -> Result<Vec<Mount>> {
    let Value::Seq(items) = &n.value else {
        return Err(cx.diag.invalid(
            n.pos,
            f,
            format!("expected a list of volumes, found {}", n.describe()),
        ));
    };
    let mut out: Vec<Mount> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let mf = idx(f, i);
        let m = match &it.value {
            Value::Str { text, .. } => short_mount(cx, spec, it, &mf, text)?,
            Value::Map(_) => long_mount(cx, spec, it, &mf)?,
            _ => {
                return Err(cx.diag.invalid(
                    it.pos,
                    &mf,
                    format!("expected a volume, found {}", it.describe()),
                ))
            }
        };
        if out.iter().any(|o| o.target == m.target) {
            return Err(cx.diag.invalid(
                it.pos,
                &mf,
                format!("duplicate mount target {:?}", m.target),
            ));
        }
        let unapplied = [
            (
                "bind propagation",
                m.bind
                    .as_ref()
                    .and_then(|b| b.propagation.as_ref())
                    .is_some(),
            ),
            (
                "SELinux relabelling",
                m.bind.as_ref().and_then(|b| b.selinux.as_ref()).is_some(),
            ),
            ("nocopy", m.volume.as_ref().is_some_and(|v| v.nocopy)),
            (
                "subpath",
                m.volume.as_ref().and_then(|v| v.subpath.as_ref()).is_some(),
            ),
        ];
        for (what, set) in unapplied {
            if set {
                cx.diag.warn(
                    it.pos,
                    &mf,
                    format!("ignoring {what}: the cluster's mounts do not support it"),
                );
            }
        }
        out.push(m);
    }
    Ok(out)
}

fn service_networks(
    cx: &mut Cx,
    spec: &StackSpec,
    n: Option<&Node>,
    f: &str,
) -> Result<BTreeMap<String, ServiceNetwork>> {
    let mut out = BTreeMap::new();
    let check = |cx: &Cx, pos: Pos, name: &str| -> Result<()> {
        if name != "default" && !spec.networks.contains_key(name) {
            return Err(cx.diag.invalid(
                pos,
                &sub(f, name),
                format!(
                    "undefined network {name:?} (declare it in the top-level networks section)"
                ),
            ));
        }
        Ok(())
    };
    match n.map(|n| (n, &n.value)) {
        None | Some((_, Value::Null)) => {
            out.insert("default".to_string(), ServiceNetwork::default());
        }
        Some((n, Value::Seq(items))) => {
            let _ = n;
            for (i, it) in items.iter().enumerate() {
                let name = string(cx.diag, it, &idx(f, i))?;
                check(cx, it.pos, &name)?;
                out.insert(name, ServiceNetwork::default());
            }
        }
        Some((n, Value::Map(entries))) => {
            let _ = n;
            for (k, v) in entries {
                if k.name.starts_with("x-") {
                    continue;
                }
                check(cx, k.pos, &k.name)?;
                let nf = sub(f, &k.name);
                let e = fields(
                    cx.diag,
                    v,
                    &nf,
                    &[
                        ("aliases", K::Ok),
                        ("ipv4_address", K::Ok),
                        ("ipv6_address", K::Ok),
                        ("priority", K::Warn("")),
                        ("gw_priority", K::Warn("")),
                        ("link_local_ips", K::Warn("")),
                        ("mac_address", K::Warn("")),
                        ("driver_opts", K::Warn("")),
                        ("interface_name", K::Warn("")),
                    ],
                )?;
                let mut sn = ServiceNetwork::default();
                if let Some(a) = get(e, "aliases") {
                    sn.aliases = str_list(cx.diag, a, &sub(&nf, "aliases"), false)?;
                }
                for (key, v4) in [("ipv4_address", true), ("ipv6_address", false)] {
                    if let Some(a) = get_some(e, key) {
                        let af = sub(&nf, key);
                        let t = string(cx.diag, a, &af)?;
                        let ok = if v4 {
                            t.parse::<std::net::Ipv4Addr>().is_ok()
                        } else {
                            t.parse::<std::net::Ipv6Addr>().is_ok()
                        };
                        if !ok {
                            return Err(cx.diag.invalid(
                                a.pos,
                                &af,
                                format!("invalid address {t:?}"),
                            ));
                        }
                        if v4 {
                            sn.ipv4_address = Some(t);
                        } else {
                            sn.ipv6_address = Some(t);
                        }
                    }
                }
                out.insert(k.name.clone(), sn);
            }
        }
        Some((n, _)) => {
            return Err(cx.diag.invalid(
                n.pos,
                f,
                format!("expected a list or a mapping, found {}", n.describe()),
            ))
        }
    }
    Ok(out)
}

fn healthcheck(cx: &mut Cx, n: &Node, f: &str) -> Result<Healthcheck> {
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("test", K::Ok),
            ("interval", K::Ok),
            ("timeout", K::Ok),
            ("retries", K::Ok),
            ("start_period", K::Ok),
            ("start_interval", K::Ok),
            ("disable", K::Ok),
        ],
    )?;
    let mut h = Healthcheck::default();
    let disabled = match get_some(e, "disable") {
        Some(d) => boolean(cx.diag, d, &sub(f, "disable"))?,
        None => false,
    };
    if let Some(t) = get_some(e, "test") {
        let tf = sub(f, "test");
        h.test = match &t.value {
            Value::Str { text, .. } => vec!["CMD-SHELL".to_string(), text.clone()],
            _ => str_list(cx.diag, t, &tf, false)?,
        };
        match h.test.first().map(String::as_str) {
            Some("CMD") if h.test.len() > 1 => {}
            Some("CMD-SHELL") if h.test.len() == 2 => {}
            Some("NONE") if h.test.len() == 1 => {}
            _ => return Err(cx.diag.invalid(
                t.pos,
                &tf,
                "expected a string, [\"CMD\", args...], [\"CMD-SHELL\", \"command\"] or [\"NONE\"]",
            )),
        }
    }
    for (key, slot) in [
        ("interval", &mut h.interval),
        ("timeout", &mut h.timeout),
        ("start_period", &mut h.start_period),
        ("start_interval", &mut h.start_interval),
    ] {
        if let Some(v) = get_some(e, key) {
            *slot = Some(duration(cx.diag, v, &sub(f, key))?);
        }
    }
    if let Some(v) = get_some(e, "retries") {
        h.retries = Some(uint(cx.diag, v, &sub(f, "retries"))?);
    }
    if disabled {
        if !h.test.is_empty() && h.test != ["NONE"] {
            return Err(cx.diag.invalid(
                n.pos,
                &sub(f, "disable"),
                "disable: true cannot be combined with test",
            ));
        }
        h.test = vec!["NONE".to_string()];
    }
    Ok(h)
}

fn depends_on(
    cx: &mut Cx,
    refs: &mut Refs,
    service: &str,
    n: &Node,
    f: &str,
) -> Result<BTreeMap<String, Dependency>> {
    let mut out = BTreeMap::new();
    let default = Dependency {
        condition: DependsCondition::ServiceStarted,
        restart: false,
        required: true,
    };
    match &n.value {
        Value::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                let name = string(cx.diag, it, &idx(f, i))?;
                refs.depends
                    .push((service.to_string(), name.clone(), it.pos, true));
                out.insert(name, default.clone());
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let df = sub(f, &k.name);
                let e = fields(
                    cx.diag,
                    v,
                    &df,
                    &[
                        ("condition", K::Ok),
                        ("restart", K::Ok),
                        ("required", K::Ok),
                    ],
                )?;
                let mut d = default.clone();
                if let Some(c) = get_some(e, "condition") {
                    let cf = sub(&df, "condition");
                    d.condition = match scalar(cx.diag, c, &cf, "a condition")? {
                        "service_started" => DependsCondition::ServiceStarted,
                        "service_healthy" => DependsCondition::ServiceHealthy,
                        "service_completed_successfully" => DependsCondition::ServiceCompletedSuccessfully,
                        other => {
                            return Err(cx.diag.invalid(
                                c.pos,
                                &cf,
                                format!(
                                    "invalid condition {other:?} (expected service_started, service_healthy or \
                                     service_completed_successfully)"
                                ),
                            ))
                        }
                    };
                }
                if let Some(r) = get_some(e, "restart") {
                    d.restart = boolean(cx.diag, r, &sub(&df, "restart"))?;
                    if d.restart {
                        cx.diag.warn(
                            r.pos,
                            &sub(&df, "restart"),
                            format!(
                                "not applied: tasks of {service:?} are not restarted when {:?} restarts",
                                k.name
                            ),
                        );
                    }
                }
                if let Some(r) = get_some(e, "required") {
                    d.required = boolean(cx.diag, r, &sub(&df, "required"))?;
                }
                refs.depends
                    .push((service.to_string(), k.name.clone(), k.pos, d.required));
                out.insert(k.name.clone(), d);
            }
        }
        _ => {
            return Err(cx.diag.invalid(
                n.pos,
                f,
                format!("expected a list or a mapping, found {}", n.describe()),
            ))
        }
    }
    if let Some(pos) = refs
        .depends
        .iter()
        .find(|(s, d, ..)| s == service && d == service)
        .map(|x| x.2)
    {
        return Err(cx.diag.invalid(pos, f, "a service cannot depend on itself"));
    }
    Ok(out)
}

fn file_refs(
    cx: &mut Cx,
    spec: &StackSpec,
    section: &str,
    n: &Node,
    f: &str,
) -> Result<Vec<FileReference>> {
    let Value::Seq(items) = &n.value else {
        return Err(cx
            .diag
            .invalid(n.pos, f, format!("expected a list, found {}", n.describe())));
    };
    let is_secret = section == "secrets";
    let mut out: Vec<FileReference> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let rf = idx(f, i);
        let (source, source_pos, target, uid, gid, mode) = match &it.value {
            Value::Str { text, .. } => (text.clone(), it.pos, None, None, None, None),
            Value::Map(_) => {
                let e = fields(
                    cx.diag,
                    it,
                    &rf,
                    &[
                        ("source", K::Ok),
                        ("target", K::Ok),
                        ("uid", K::Ok),
                        ("gid", K::Ok),
                        ("mode", K::Ok),
                    ],
                )?;
                let Some(s) = get_some(e, "source") else {
                    return Err(cx.diag.invalid(it.pos, &rf, "source is required"));
                };
                let mode = get_some(e, "mode")
                    .map(|m| file_mode(cx.diag, m, &sub(&rf, "mode")))
                    .transpose()?;
                (
                    string(cx.diag, s, &sub(&rf, "source"))?,
                    s.pos,
                    opt_string(cx.diag, get(e, "target"), &sub(&rf, "target"))?,
                    opt_string(cx.diag, get(e, "uid"), &sub(&rf, "uid"))?,
                    opt_string(cx.diag, get(e, "gid"), &sub(&rf, "gid"))?,
                    mode,
                )
            }
            _ => {
                return Err(cx.diag.invalid(
                    it.pos,
                    &rf,
                    format!("expected a name or a mapping, found {}", it.describe()),
                ))
            }
        };
        let known = if is_secret {
            spec.secrets.contains_key(&source)
        } else {
            spec.configs.contains_key(&source)
        };
        if !known {
            let what = if is_secret { "secret" } else { "config" };
            return Err(cx.diag.invalid(
                source_pos,
                &rf,
                format!(
                    "undefined {what} {source:?} (declare it in the top-level {section} section)"
                ),
            ));
        }
        let target = match target {
            Some(t) if t.starts_with('/') => t,
            Some(t) if is_secret => format!("/run/secrets/{t}"),
            Some(t) => format!("/{t}"),
            None if is_secret => format!("/run/secrets/{source}"),
            None => format!("/{source}"),
        };
        if out.iter().any(|o| o.target == target) {
            return Err(cx
                .diag
                .invalid(it.pos, &rf, format!("duplicate target {target:?}")));
        }
        out.push(FileReference {
            source,
            target,
            uid: uid.unwrap_or_else(|| "0".into()),
            gid: gid.unwrap_or_else(|| "0".into()),
            mode: mode.unwrap_or(0o444),
        });
    }
    Ok(out)
}

fn extra_hosts(diag: &Diag, n: &Node, f: &str) -> Result<Vec<String>> {
    let pairs: Vec<(String, String)> = match &n.value {
        Value::Map(_) => kv(diag, n, f)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        _ => {
            let mut out = Vec::new();
            for (i, s) in str_list(diag, n, f, false)?.into_iter().enumerate() {
                // `host:ip` or `host=ip`; IPv6 addresses contain colons, so split once.
                let split = s.split_once('=').or_else(|| s.split_once(':'));
                let Some((h, ip)) = split else {
                    let pos = match &n.value {
                        Value::Seq(items) => items.get(i).map(|x| x.pos).unwrap_or(n.pos),
                        _ => n.pos,
                    };
                    return Err(diag.invalid(
                        pos,
                        &idx(f, i),
                        format!("invalid extra host {s:?} (expected HOST:IP)"),
                    ));
                };
                out.push((h.to_string(), ip.to_string()));
            }
            out
        }
    };
    Ok(pairs
        .into_iter()
        .map(|(h, ip)| format!("{h}:{}", ip.trim_start_matches('[').trim_end_matches(']')))
        .collect())
}

fn ulimits(cx: &mut Cx, n: &Node, f: &str) -> Result<BTreeMap<String, Ulimit>> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &n.value else {
        return Err(cx.diag.invalid(
            n.pos,
            f,
            format!("expected a mapping, found {}", n.describe()),
        ));
    };
    for (k, v) in entries {
        let uf = sub(f, &k.name);
        let u = match &v.value {
            Value::Map(_) => {
                let e = fields(cx.diag, v, &uf, &[("soft", K::Ok), ("hard", K::Ok)])?;
                let (Some(s), Some(h)) = (get_some(e, "soft"), get_some(e, "hard")) else {
                    return Err(cx
                        .diag
                        .invalid(v.pos, &uf, "soft and hard are both required"));
                };
                Ulimit {
                    soft: int(cx.diag, s, &sub(&uf, "soft"))?,
                    hard: int(cx.diag, h, &sub(&uf, "hard"))?,
                }
            }
            _ => {
                let x = int(cx.diag, v, &uf)?;
                Ulimit { soft: x, hard: x }
            }
        };
        out.insert(k.name.clone(), u);
    }
    Ok(out)
}

/// `build:`, the short form being the context directory.
fn build(cx: &mut Cx, spec: &StackSpec, n: &Node, f: &str) -> Result<BuildSpec> {
    let mut b = BuildSpec::default();
    if let Value::Str { text, .. } = &n.value {
        b.context = build_context(cx, n, f, text)?;
        return Ok(b);
    }
    const BUILDER: &str = ": Skiff's builder does not support it";
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("context", K::Ok),
            ("dockerfile", K::Ok),
            ("dockerfile_inline", K::Ok),
            ("args", K::Ok),
            ("target", K::Ok),
            ("labels", K::Ok),
            ("network", K::Ok),
            ("additional_contexts", K::Ok),
            ("secrets", K::Ok),
            ("cache_from", K::Ok),
            ("no_cache", K::Ok),
            ("pull", K::Ok),
            ("tags", K::Ok),
            (
                "cache_to",
                K::Warn(": the build cache stays on the node that builds"),
            ),
            ("extra_hosts", K::Warn(BUILDER)),
            ("isolation", K::Warn(BUILDER)),
            ("privileged", K::Warn(BUILDER)),
            ("shm_size", K::Warn(BUILDER)),
            ("ssh", K::Warn(BUILDER)),
            (
                "platforms",
                K::Warn(": images are built for the building node's platform"),
            ),
            ("ulimits", K::Warn(BUILDER)),
            ("entitlements", K::Warn(BUILDER)),
            ("provenance", K::Warn(BUILDER)),
            ("sbom", K::Warn(BUILDER)),
            ("no_cache_filter", K::Warn(BUILDER)),
        ],
    )?;
    b.context = match get_some(e, "context") {
        Some(c) => {
            let t = string(cx.diag, c, &sub(f, "context"))?;
            build_context(cx, c, &sub(f, "context"), &t)?
        }
        None => build_context(cx, n, f, ".")?,
    };
    b.dockerfile = opt_string(cx.diag, get(e, "dockerfile"), &sub(f, "dockerfile"))?;
    b.dockerfile_inline = opt_string(
        cx.diag,
        get(e, "dockerfile_inline"),
        &sub(f, "dockerfile_inline"),
    )?;
    if b.dockerfile.is_some() && b.dockerfile_inline.is_some() {
        let pos = get(e, "dockerfile_inline").map(|v| v.pos).unwrap_or(n.pos);
        return Err(cx.diag.invalid(
            pos,
            &sub(f, "dockerfile_inline"),
            "dockerfile and dockerfile_inline are mutually exclusive",
        ));
    }
    if let Some(a) = get(e, "args") {
        for (k, v) in kv(cx.diag, a, &sub(f, "args"))? {
            // No value: from the deploying environment, when set there.
            let v = v.or_else(|| cx.env.get(&k).cloned());
            b.args.insert(k, v);
        }
    }
    b.target = opt_string(cx.diag, get(e, "target"), &sub(f, "target"))?;
    b.labels = labels(cx.diag, get(e, "labels"), &sub(f, "labels"))?;
    if let Some(v) = get_some(e, "network") {
        let nf = sub(f, "network");
        let net = string(cx.diag, v, &nf)?;
        if !matches!(net.as_str(), "host" | "none" | "default") {
            cx.diag.warn(
                v.pos,
                &nf,
                format!("build steps run on the host network or none, not {net:?}: using host"),
            );
        }
        b.network = Some(net);
    }
    b.additional_contexts = labels(
        cx.diag,
        get(e, "additional_contexts"),
        &sub(f, "additional_contexts"),
    )?;
    if let Some(v) = get_some(e, "additional_contexts") {
        if !b.additional_contexts.is_empty() {
            cx.diag.warn(
                v.pos,
                &sub(f, "additional_contexts"),
                format!("ignoring unsupported option additional_contexts{BUILDER}"),
            );
        }
    }
    if let Some(v) = get_some(e, "secrets") {
        b.secrets = file_refs(cx, spec, "secrets", v, &sub(f, "secrets"))?;
    }
    if let Some(v) = get(e, "cache_from") {
        b.cache_from = str_list(cx.diag, v, &sub(f, "cache_from"), false)?;
        if !b.cache_from.is_empty() {
            cx.diag.warn(
                v.pos,
                &sub(f, "cache_from"),
                "ignoring cache_from: the builder reuses its own cache on the node that builds",
            );
        }
    }
    if let Some(v) = get(e, "tags") {
        b.tags = str_list(cx.diag, v, &sub(f, "tags"), false)?;
    }
    for (key, slot) in [("no_cache", &mut b.no_cache), ("pull", &mut b.pull)] {
        if let Some(v) = get_some(e, key) {
            *slot = boolean(cx.diag, v, &sub(f, key))?;
        }
    }
    Ok(b)
}

/// A local context directory made absolute; remote contexts (git, URLs) kept as
/// written, for the deploy to refuse with a clear message.
fn build_context(cx: &Cx, n: &Node, f: &str, t: &str) -> Result<String> {
    if crate::relocate::is_remote(t) {
        return Ok(t.to_string());
    }
    resolve_host_path(cx, t)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|m| cx.diag.invalid(n.pos, f, m))
}

/// `label_file`: one file or a list, `KEY=VALUE` lines as in env files.
fn label_files(cx: &mut Cx, n: &Node, f: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let items: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![n],
    };
    for it in items {
        let path = host_path(cx, it, f)?;
        let text = crate::read_capped(&path).map_err(|e| match e {
            StackError::Io { source, .. } => cx.diag.invalid(
                it.pos,
                f,
                format!("cannot read label file {}: {source}", path.display()),
            ),
            other => other,
        })?;
        let entries = dotenv::parse(&text).map_err(|(line, message)| StackError::Invalid {
            location: Location {
                file: path.clone(),
                line,
                col: 1,
            },
            field: f.to_string(),
            message,
        })?;
        for e in entries {
            out.insert(e.key.clone(), e.value.clone().unwrap_or_default());
        }
    }
    Ok(out)
}

/// A list of strings; `devices` entries may also be `{source, target, permissions}`.
fn device_like(diag: &mut Diag, n: &Node, f: &str) -> Result<Vec<String>> {
    let Value::Seq(items) = &n.value else {
        return str_list(diag, n, f, false);
    };
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let itf = idx(f, i);
        match &it.value {
            Value::Map(_) => {
                let e = fields(
                    diag,
                    it,
                    &itf,
                    &[("source", K::Ok), ("target", K::Ok), ("permissions", K::Ok)],
                )?;
                let Some(src) = get_some(e, "source") else {
                    return Err(diag.invalid(it.pos, &itf, "source is required"));
                };
                let source = string(diag, src, &sub(&itf, "source"))?;
                let target = opt_string(diag, get(e, "target"), &sub(&itf, "target"))?
                    .unwrap_or_else(|| source.clone());
                let perms = opt_string(diag, get(e, "permissions"), &sub(&itf, "permissions"))?;
                out.push(match perms {
                    Some(p) => format!("{source}:{target}:{p}"),
                    None => format!("{source}:{target}"),
                });
            }
            _ => out.push(scalar(diag, it, &itf, "a string")?.to_string()),
        }
    }
    Ok(out)
}

/// `volumes_from`: `service:NAME[:ro|rw]` or `NAME[:ro|rw]` (a service of this stack),
/// normalised to `service:NAME[:ro]`. `container:NAME` names a container outside the
/// stack, which a cluster cannot place next to: warned and left out.
fn volumes_from(
    cx: &mut Cx,
    refs: &mut Refs,
    service: &str,
    n: &Node,
    f: &str,
) -> Result<Vec<String>> {
    let Value::Seq(items) = &n.value else {
        return Err(cx
            .diag
            .invalid(n.pos, f, format!("expected a list, found {}", n.describe())));
    };
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let itf = idx(f, i);
        let t = scalar(cx.diag, it, &itf, "a service name")?.to_string();
        let parts: Vec<&str> = t.split(':').collect();
        let (kind, name, mode) = match parts.as_slice() {
            [name] => ("service", *name, None),
            [name, m] if matches!(*m, "ro" | "rw") => ("service", *name, Some(*m)),
            [k @ ("service" | "container"), name] => (*k, *name, None),
            [k @ ("service" | "container"), name, m] if matches!(*m, "ro" | "rw") => {
                (*k, *name, Some(*m))
            }
            _ => {
                return Err(cx.diag.invalid(
                    it.pos,
                    &itf,
                    format!("invalid volumes_from {t:?} (expected service:NAME[:ro|rw])"),
                ))
            }
        };
        if name.is_empty() {
            return Err(cx
                .diag
                .invalid(it.pos, &itf, format!("invalid volumes_from {t:?}")));
        }
        if kind == "container" {
            cx.diag.warn(
                it.pos,
                &itf,
                format!("ignoring {t:?}: a stack's tasks can only take volumes from its services"),
            );
            continue;
        }
        if name == service {
            return Err(cx
                .diag
                .invalid(it.pos, &itf, "a service cannot take volumes from itself"));
        }
        refs.volumes_from
            .push((service.to_string(), name.to_string(), it.pos));
        out.push(match mode {
            Some("ro") => format!("service:{name}:ro"),
            _ => format!("service:{name}"),
        });
    }
    Ok(out)
}

/// Compose's `restart` as a Swarm restart policy: condition and attempt limit.
fn restart(diag: &Diag, n: &Node, f: &str) -> Result<(RestartCondition, Option<u64>)> {
    let t = scalar(diag, n, f, "a restart policy")?;
    let (name, count) = match t.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    };
    let bad = || {
        diag.invalid(
            n.pos,
            f,
            format!("invalid restart policy {t:?} (expected no, always, on-failure[:N] or unless-stopped)"),
        )
    };
    match (name, count) {
        ("no" | "none", None) => Ok((RestartCondition::None, None)),
        ("always" | "unless-stopped", None) => Ok((RestartCondition::Any, None)),
        ("on-failure", None) => Ok((RestartCondition::OnFailure, None)),
        ("on-failure", Some(c)) => match c.parse::<u64>() {
            Ok(0) => Ok((RestartCondition::OnFailure, None)),
            Ok(c) => Ok((RestartCondition::OnFailure, Some(c))),
            Err(_) => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Compose 2.x's `cpus`, `mem_limit`, `mem_reservation` and `pids_limit`, as
/// deploy.resources; a value also set there is taken from deploy.resources.
fn legacy_resources(cx: &mut Cx, e: &[(Key, Node)], f: &str, r: &mut Resources) -> Result<()> {
    let warn_both = |cx: &mut Cx, n: &Node, key: &str, other: &str| {
        cx.diag.warn(
            n.pos,
            &sub(f, key),
            format!("also set as deploy.resources.{other}, which is used"),
        );
    };
    if let Some(v) = get_some(e, "cpus") {
        let c = crate::deploy::cpus(cx, v, &sub(f, "cpus"))?;
        let l = r.limits.get_or_insert_with(Default::default);
        match l.nano_cpus {
            Some(x) if x != c => warn_both(cx, v, "cpus", "limits.cpus"),
            Some(_) => {}
            None => l.nano_cpus = Some(c),
        }
    }
    if let Some(v) = get_some(e, "mem_limit") {
        let m = bytes(cx.diag, v, &sub(f, "mem_limit"))?;
        let l = r.limits.get_or_insert_with(Default::default);
        match l.memory_bytes {
            Some(x) if x != m => warn_both(cx, v, "mem_limit", "limits.memory"),
            Some(_) => {}
            None => l.memory_bytes = Some(m),
        }
    }
    if let Some(v) = get_some(e, "pids_limit") {
        let pf = sub(f, "pids_limit");
        let p = int(cx.diag, v, &pf)?;
        if p < -1 {
            return Err(cx.diag.invalid(
                v.pos,
                &pf,
                "pids_limit must be -1 (unlimited), 0 or more",
            ));
        }
        let l = r.limits.get_or_insert_with(Default::default);
        match l.pids {
            Some(x) if x != p => warn_both(cx, v, "pids_limit", "limits.pids"),
            Some(_) => {}
            None => l.pids = Some(p),
        }
    }
    if let Some(v) = get_some(e, "mem_reservation") {
        let m = bytes(cx.diag, v, &sub(f, "mem_reservation"))?;
        let l = r.reservations.get_or_insert_with(Default::default);
        match l.memory_bytes {
            Some(x) if x != m => warn_both(cx, v, "mem_reservation", "reservations.memory"),
            Some(_) => {}
            None => l.memory_bytes = Some(m),
        }
    }
    Ok(())
}
