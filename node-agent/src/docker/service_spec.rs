//! Docker's `ServiceSpec` (moby's swagger, read into `bollard-stubs`' models) ↔ Skiff's
//! `orchestrator::types::ServiceSpec`: the one place the two meet.
//!
//! Every field of Docker's spec is destructured without `..`, so a field the converter
//! forgot is a compile error, and every field Skiff has no meaning for is refused with
//! its path when it carries anything but Docker's default. Keys that are not in the
//! swagger at all are refused too ([`unknown_keys`]): nothing is dropped silently.

use bollard_stubs::models as dm;
use serde::Serialize;
use serde_json::{json, Value};
use skiff_controller::orchestrator::netalloc;
use skiff_controller::orchestrator::stack::LABEL_STACK;
use skiff_controller::orchestrator::types as st;
use std::collections::{BTreeMap, HashMap};

/// A spec Skiff cannot take, with the field that made it so.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("invalid ServiceSpec: {0} is not supported by Skiff")]
    Unsupported(String),
    #[error("invalid ServiceSpec: {0}")]
    Invalid(String),
    #[error("invalid JSON: {0}: unknown field")]
    Unknown(String),
}

type R<T> = Result<T, SpecError>;

/// What the converter needs from the cluster: names of the objects a spec refers to by
/// ID (the docker CLI resolves `--network NAME` to an ID before it sends the spec).
pub trait Resolve {
    /// A cluster network's name from its name or ID.
    fn network(&self, key: &str) -> Option<String>;
    /// A secret's (`kind` "secret") or config's name from its name or ID.
    fn file(&self, kind: &str, id: &str, name: &str) -> Option<String>;
}

/// Keys of `raw` (at any depth) the typed model did not read back: fields that are
/// not in Docker's API. `null` values are ignored (Go clients send them).
pub fn unknown_keys(raw: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => {
            for (k, v) in r {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(tv) => unknown_keys(v, tv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(r), Value::Array(t)) => {
            for (i, (rv, tv)) in r.iter().zip(t).enumerate() {
                unknown_keys(rv, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Reads Docker's JSON into the typed spec; unknown keys and wrong types name their path.
pub fn parse(raw: &Value) -> R<dm::ServiceSpec> {
    parse_strict(raw)
}

/// Reads a Docker model strictly: a wrong type names its path (`Invalid`), and a key the
/// model does not have is refused (`Unknown`) rather than dropped.
pub fn parse_strict<T: serde::de::DeserializeOwned + serde::Serialize>(raw: &Value) -> R<T> {
    let spec: T = serde_path_to_error::deserialize(raw)
        .map_err(|e| SpecError::Invalid(format!("{}: {}", e.path(), e.inner())))?;
    let typed = serde_json::to_value(&spec).map_err(|e| SpecError::Invalid(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_keys(raw, &typed, "", &mut unknown);
    if let Some(first) = unknown.into_iter().next() {
        return Err(SpecError::Unknown(first));
    }
    Ok(spec)
}

/// Empty, zero, false or null at every leaf: what Go clients send for "not set".
fn blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(blank),
        Value::Object(o) => o.values().all(blank),
    }
}

/// Refuses `v` unless it is blank.
fn refuse<T: Serialize>(path: &str, v: &Option<T>) -> R<()> {
    match v {
        Some(x) if !blank(&serde_json::to_value(x).unwrap_or(Value::Null)) => {
            Err(SpecError::Unsupported(path.into()))
        }
        _ => Ok(()),
    }
}

/// Refuses a string field unless it is one of the values that mean Docker's default.
fn only(path: &str, v: &Option<impl ToString>, allowed: &[&str]) -> R<()> {
    match v.as_ref().map(|x| x.to_string()) {
        Some(s) if !s.is_empty() && !allowed.contains(&s.as_str()) => Err(SpecError::Unsupported(
            format!("{path} {s:?} (Skiff takes {})", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn ns_to_ms(ns: Option<i64>) -> u64 {
    (ns.unwrap_or(0).max(0) / 1_000_000) as u64
}

fn nonneg(path: &str, v: Option<i64>) -> R<u64> {
    match v {
        Some(n) if n < 0 => Err(SpecError::Invalid(format!("{path} must not be negative"))),
        Some(n) => Ok(n as u64),
        None => Ok(0),
    }
}

fn sorted(m: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

/// Docker's `ServiceSpec` → Skiff's. `raw` is the request body as sent.
pub fn to_skiff(raw: &Value, res: &dyn Resolve) -> R<st::ServiceSpec> {
    let dm::ServiceSpec {
        name,
        labels,
        task_template,
        mode,
        update_config,
        rollback_config,
        networks,
        endpoint_spec,
    } = parse(raw)?;
    let name = name.unwrap_or_default();
    if name.is_empty() {
        return Err(SpecError::Invalid("Name: a service needs a name".into()));
    }
    let labels = sorted(labels);
    let mut out = st::ServiceSpec {
        stack: labels.get(LABEL_STACK).cloned().unwrap_or_default(),
        name,
        labels,
        ..Default::default()
    };
    out.mode = match mode {
        None => st::Mode::default(),
        Some(dm::ServiceSpecMode {
            replicated,
            global,
            replicated_job,
            global_job,
        }) => {
            refuse("Mode.ReplicatedJob", &replicated_job)?;
            if global_job.is_some() {
                return Err(SpecError::Unsupported("Mode.GlobalJob".into()));
            }
            match (replicated, global) {
                (Some(_), Some(_)) => {
                    return Err(SpecError::Invalid(
                        "Mode: Replicated and Global are exclusive".into(),
                    ))
                }
                (None, Some(_)) => st::Mode::Global,
                (Some(r), None) => st::Mode::Replicated {
                    replicas: match r.replicas {
                        None => 1,
                        Some(n) => nonneg("Mode.Replicated.Replicas", Some(n))?,
                    },
                },
                (None, None) => st::Mode::default(),
            }
        }
    };
    let t = task_template.unwrap_or_default();
    let dm::TaskSpec {
        plugin_spec,
        container_spec,
        network_attachment_spec,
        resources,
        restart_policy,
        placement,
        force_update: _, // see `to_docker`: a changed counter forces a redeploy
        runtime,
        networks: task_networks,
        log_driver,
    } = t;
    refuse("TaskTemplate.PluginSpec", &plugin_spec)?;
    refuse(
        "TaskTemplate.NetworkAttachmentSpec",
        &network_attachment_spec,
    )?;
    only("TaskTemplate.Runtime", &runtime, &["container"])?;
    if let Some(l) = log_driver {
        only("TaskTemplate.LogDriver.Name", &l.name, &["json-file"])?;
        refuse("TaskTemplate.LogDriver.Options", &l.options)?;
    }
    let c = container_spec
        .ok_or_else(|| SpecError::Invalid("TaskTemplate.ContainerSpec is required".into()))?;
    out.template = container(c, res)?;
    // The service's own networks (deprecated place) and the task template's: one list.
    for (i, n) in networks
        .unwrap_or_default()
        .into_iter()
        .chain(task_networks.unwrap_or_default())
        .enumerate()
    {
        let p = format!("TaskTemplate.Networks[{i}]");
        refuse(&format!("{p}.DriverOpts"), &n.driver_opts)?;
        let target = n.target.unwrap_or_default();
        let name = res
            .network(&target)
            .ok_or_else(|| SpecError::Invalid(format!("{p}.Target: network {target} not found")))?;
        out.template
            .networks
            .insert(name, n.aliases.unwrap_or_default());
    }
    if let Some(r) = resources {
        let dm::TaskSpecResources {
            limits,
            reservations,
            swap_bytes,
            memory_swappiness,
        } = r;
        refuse("TaskTemplate.Resources.SwapBytes", &swap_bytes)?;
        refuse(
            "TaskTemplate.Resources.MemorySwappiness",
            &memory_swappiness,
        )?;
        if let Some(l) = limits {
            out.template.limits = st::Limits {
                nano_cpus: l.nano_cpus.unwrap_or(0),
                memory_bytes: l.memory_bytes.unwrap_or(0),
                pids: l.pids.unwrap_or(0),
            };
        }
        if let Some(r) = reservations {
            refuse(
                "TaskTemplate.Resources.Reservations.GenericResources",
                &r.generic_resources,
            )?;
            out.template.reservations = st::Limits {
                nano_cpus: r.nano_cpus.unwrap_or(0),
                memory_bytes: r.memory_bytes.unwrap_or(0),
                pids: 0,
            };
        }
    }
    if let Some(r) = restart_policy {
        let condition = r.condition.map(|c| c.to_string()).unwrap_or_default();
        out.restart_policy = st::RestartPolicy {
            condition: if condition.is_empty() {
                "any".into()
            } else {
                condition
            },
            delay_ms: match r.delay {
                Some(d) => ns_to_ms(Some(d)),
                None => st::RestartPolicy::default().delay_ms,
            },
            max_attempts: nonneg("TaskTemplate.RestartPolicy.MaxAttempts", r.max_attempts)?,
            window_ms: ns_to_ms(r.window),
        };
    }
    if let Some(p) = placement {
        let dm::TaskSpecPlacement {
            constraints,
            preferences,
            max_replicas,
            platforms,
        } = p;
        refuse("TaskTemplate.Placement.Platforms", &platforms)?;
        let constraints = constraints.unwrap_or_default();
        for c in &constraints {
            skiff_controller::scheduler::constraint::Constraint::parse(c).map_err(|e| {
                SpecError::Invalid(format!("TaskTemplate.Placement.Constraints: {e}"))
            })?;
        }
        let mut spread = Vec::new();
        for (i, pref) in preferences.unwrap_or_default().into_iter().enumerate() {
            let d = pref
                .spread
                .and_then(|s| s.spread_descriptor)
                .unwrap_or_default();
            let key = d.strip_prefix("node.labels.").ok_or_else(|| {
                SpecError::Unsupported(format!(
                    "TaskTemplate.Placement.Preferences[{i}].Spread.SpreadDescriptor {d:?} (Skiff spreads over node.labels.KEY)"
                ))
            })?;
            spread.push(key.to_string());
        }
        out.placement = st::Placement {
            constraints,
            spread,
            max_replicas_per_node: u32::try_from(nonneg(
                "TaskTemplate.Placement.MaxReplicas",
                max_replicas,
            )?)
            .map_err(|_| {
                SpecError::Invalid("TaskTemplate.Placement.MaxReplicas is too large".into())
            })?,
        };
    }
    if let Some(u) = update_config {
        out.update_config = update(
            "UpdateConfig",
            u.parallelism,
            u.delay,
            u.failure_action.map(|x| x.to_string()),
            u.monitor,
            u.max_failure_ratio,
            u.order.map(|x| x.to_string()),
        )?;
    }
    if let Some(u) = rollback_config {
        out.rollback_config = update(
            "RollbackConfig",
            u.parallelism,
            u.delay,
            u.failure_action.map(|x| x.to_string()),
            u.monitor,
            u.max_failure_ratio,
            u.order.map(|x| x.to_string()),
        )?;
    }
    out.endpoint_mode = "vip".into();
    if let Some(e) = endpoint_spec {
        let mode = e.mode.map(|m| m.to_string()).unwrap_or_default();
        if !mode.is_empty() {
            out.endpoint_mode = mode;
        }
        for (i, p) in e.ports.unwrap_or_default().into_iter().enumerate() {
            let path = format!("EndpointSpec.Ports[{i}]");
            refuse(&format!("{path}.Name"), &p.name)?;
            only(&format!("{path}.Protocol"), &p.protocol, &["tcp", "udp"])?;
            let port = |what: &str, v: Option<i64>| -> R<u16> {
                u16::try_from(v.unwrap_or(0)).map_err(|_| {
                    SpecError::Invalid(format!("{path}.{what}: {} is not a port", v.unwrap_or(0)))
                })
            };
            let target = port("TargetPort", p.target_port)?;
            let published = port("PublishedPort", p.published_port)?;
            if target == 0 {
                return Err(SpecError::Invalid(format!("{path}.TargetPort is required")));
            }
            if published == 0 {
                return Err(SpecError::Unsupported(format!(
                    "{path}.PublishedPort 0 (a port picked by the cluster); name the published port"
                )));
            }
            let protocol = p.protocol.map(|x| x.to_string()).unwrap_or_default();
            let mode = p.publish_mode.map(|x| x.to_string()).unwrap_or_default();
            out.ports.push(st::PortSpec {
                target,
                published,
                protocol: if protocol.is_empty() {
                    "tcp".into()
                } else {
                    protocol
                },
                mode: if mode.is_empty() {
                    "ingress".into()
                } else {
                    mode
                },
            });
        }
    }
    Ok(out)
}

fn update(
    path: &str,
    parallelism: Option<i64>,
    delay: Option<i64>,
    failure_action: Option<String>,
    monitor: Option<i64>,
    max_failure_ratio: Option<f64>,
    order: Option<String>,
) -> R<st::UpdateConfig> {
    let d = st::UpdateConfig::default();
    let ratio = max_failure_ratio.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(SpecError::Invalid(format!(
            "{path}.MaxFailureRatio must be between 0 and 1"
        )));
    }
    Ok(st::UpdateConfig {
        parallelism: nonneg(&format!("{path}.Parallelism"), parallelism)?,
        delay_ms: ns_to_ms(delay),
        failure_action: failure_action
            .filter(|s| !s.is_empty())
            .unwrap_or(d.failure_action),
        monitor_ms: match monitor {
            Some(m) if m > 0 => ns_to_ms(Some(m)),
            _ => d.monitor_ms,
        },
        max_failure_ratio: ratio,
        order: order.filter(|s| !s.is_empty()).unwrap_or(d.order),
    })
}

fn container(c: dm::TaskSpecContainerSpec, res: &dyn Resolve) -> R<st::TaskTemplate> {
    let dm::TaskSpecContainerSpec {
        image,
        labels,
        command,
        args,
        hostname,
        env,
        dir,
        user,
        groups,
        privileges,
        tty,
        open_stdin,
        read_only,
        mounts,
        stop_signal,
        stop_grace_period,
        health_check,
        hosts,
        dns_config,
        secrets,
        oom_score_adj,
        configs,
        isolation,
        init,
        sysctls,
        capability_add,
        capability_drop,
        ulimits,
    } = c;
    const P: &str = "TaskTemplate.ContainerSpec";
    refuse(&format!("{P}.Groups"), &groups)?;
    refuse(&format!("{P}.Privileges"), &privileges)?;
    refuse(&format!("{P}.TTY"), &tty)?;
    refuse(&format!("{P}.OpenStdin"), &open_stdin)?;
    refuse(&format!("{P}.ReadOnly"), &read_only)?;
    refuse(&format!("{P}.Hosts"), &hosts)?;
    refuse(&format!("{P}.DNSConfig"), &dns_config)?;
    refuse(&format!("{P}.OomScoreAdj"), &oom_score_adj)?;
    only(&format!("{P}.Isolation"), &isolation, &["default"])?;
    refuse(&format!("{P}.Init"), &init)?;
    refuse(&format!("{P}.CapabilityAdd"), &capability_add)?;
    refuse(&format!("{P}.CapabilityDrop"), &capability_drop)?;
    refuse(&format!("{P}.Ulimits"), &ulimits)?;
    let image = image.unwrap_or_default();
    if image.is_empty() {
        return Err(SpecError::Invalid(format!("{P}.Image is required")));
    }
    let mut t = st::TaskTemplate {
        image,
        entrypoint: command.filter(|c| !c.is_empty()),
        command: args.filter(|a| !a.is_empty()),
        env: env.unwrap_or_default(),
        labels: sorted(labels),
        hostname: hostname.unwrap_or_default(),
        user: user.unwrap_or_default(),
        working_dir: dir.unwrap_or_default(),
        stop_signal: stop_signal.unwrap_or_default(),
        stop_grace_period_ms: ns_to_ms(stop_grace_period),
        ..Default::default()
    };
    // Checked by the engine when a task's container is created, as on Swarm.
    t.container.sysctls = sysctls.unwrap_or_default().into_iter().collect();
    for (i, m) in mounts.unwrap_or_default().into_iter().enumerate() {
        t.mounts.push(mount(&format!("{P}.Mounts[{i}]"), m)?);
    }
    if let Some(h) = health_check {
        refuse(&format!("{P}.HealthCheck.StartInterval"), &h.start_interval)?;
        t.healthcheck = Some(st::Healthcheck {
            test: h.test.unwrap_or_default(),
            interval_ms: ns_to_ms(h.interval),
            timeout_ms: ns_to_ms(h.timeout),
            retries: u32::try_from(h.retries.unwrap_or(0).max(0)).unwrap_or(u32::MAX),
            start_period_ms: ns_to_ms(h.start_period),
        });
    }
    for (i, s) in secrets.unwrap_or_default().into_iter().enumerate() {
        let f = s.file.unwrap_or_default();
        t.files.push(file_ref(
            res,
            st::KIND_SECRET,
            &format!("{P}.Secrets[{i}]"),
            (s.secret_id, s.secret_name),
            (f.uid, f.gid, f.name, f.mode),
            "/run/secrets/",
        )?);
    }
    for (i, s) in configs.unwrap_or_default().into_iter().enumerate() {
        let p = format!("{P}.Configs[{i}]");
        refuse(&format!("{p}.Runtime"), &s.runtime)?;
        let f = s.file.unwrap_or_default();
        t.files.push(file_ref(
            res,
            st::KIND_CONFIG,
            &p,
            (s.config_id, s.config_name),
            (f.uid, f.gid, f.name, f.mode),
            "/",
        )?);
    }
    Ok(t)
}

/// A secret or config reference (`p` is its path in the spec): the object found by ID
/// or name, root-owned as Skiff writes them, Docker's relative `File.Name` under `dir`.
fn file_ref(
    res: &dyn Resolve,
    kind: &str,
    p: &str,
    (id, name): (Option<String>, Option<String>),
    (uid, gid, file, mode): (Option<String>, Option<String>, Option<String>, Option<u32>),
    dir: &str,
) -> R<st::FileMount> {
    let name = res
        .file(
            kind,
            id.as_deref().unwrap_or_default(),
            name.as_deref().unwrap_or_default(),
        )
        .ok_or_else(|| {
            SpecError::Invalid(format!(
                "{p}: {kind} not found: {}",
                name.or(id).unwrap_or_default()
            ))
        })?;
    only(&format!("{p}.File.UID"), &uid, &["0"])?;
    only(&format!("{p}.File.GID"), &gid, &["0"])?;
    let f = file
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| name.clone());
    let target = if f.starts_with('/') {
        f
    } else {
        format!("{dir}{f}")
    };
    Ok(st::FileMount {
        kind: kind.into(),
        name,
        target,
        mode: mode.unwrap_or(0o444),
    })
}

fn mount(p: &str, m: dm::Mount) -> R<st::MountSpec> {
    let dm::Mount {
        target,
        source,
        typ,
        read_only,
        consistency,
        bind_options,
        volume_options,
        image_options,
        tmpfs_options,
    } = m;
    let kind = typ
        .map(|t| t.to_string())
        .unwrap_or_else(|| "volume".into());
    if !["bind", "volume", "tmpfs"].contains(&kind.as_str()) {
        return Err(SpecError::Unsupported(format!(
            "{p}.Type {kind:?} (Skiff mounts bind, volume and tmpfs)"
        )));
    }
    only(
        &format!("{p}.Consistency"),
        &consistency,
        &["default", "consistent"],
    )?;
    refuse(&format!("{p}.ImageOptions"), &image_options)?;
    refuse(&format!("{p}.TmpfsOptions"), &tmpfs_options)?;
    if let Some(b) = bind_options {
        only(
            &format!("{p}.BindOptions.Propagation"),
            &b.propagation,
            &["rprivate"],
        )?;
        refuse(&format!("{p}.BindOptions.NonRecursive"), &b.non_recursive)?;
        refuse(
            &format!("{p}.BindOptions.CreateMountpoint"),
            &b.create_mountpoint,
        )?;
        refuse(
            &format!("{p}.BindOptions.ReadOnlyNonRecursive"),
            &b.read_only_non_recursive,
        )?;
        refuse(
            &format!("{p}.BindOptions.ReadOnlyForceRecursive"),
            &b.read_only_force_recursive,
        )?;
    }
    if let Some(v) = volume_options {
        refuse(&format!("{p}.VolumeOptions.NoCopy"), &v.no_copy)?;
        refuse(&format!("{p}.VolumeOptions.DriverConfig"), &v.driver_config)?;
        refuse(&format!("{p}.VolumeOptions.Subpath"), &v.subpath)?;
        // `docker stack deploy` labels a stack's volumes with their stack; that is all
        // Skiff's volumes (made on first use) can carry.
        let other: Vec<_> = v
            .labels
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k != LABEL_STACK)
            .collect();
        if !other.is_empty() {
            return Err(SpecError::Unsupported(format!("{p}.VolumeOptions.Labels")));
        }
    }
    let target = target.unwrap_or_default();
    if target.is_empty() {
        return Err(SpecError::Invalid(format!("{p}.Target is required")));
    }
    Ok(st::MountSpec {
        kind,
        source: source.unwrap_or_default(),
        target,
        read_only: read_only.unwrap_or(false),
    })
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

fn update_doc(u: &st::UpdateConfig) -> Value {
    json!({
        "Parallelism": u.parallelism,
        "Delay": ms_to_ns(u.delay_ms),
        "FailureAction": u.failure_action,
        "Monitor": ms_to_ns(u.monitor_ms),
        "MaxFailureRatio": u.max_failure_ratio,
        "Order": u.order,
    })
}

/// Skiff's spec as Docker's `ServiceSpec`. `net_id` gives a cluster network's ID from
/// its name (the CLI shows names by looking IDs up).
pub fn to_docker(s: &st::ServiceSpec, net_id: &dyn Fn(&str) -> String) -> Value {
    let t = &s.template;
    let mut c = json!({
        "Image": t.image,
        "Labels": t.labels,
        "Env": t.env,
        "Isolation": "default",
    });
    if let Some(e) = &t.entrypoint {
        c["Command"] = json!(e);
    }
    if let Some(a) = &t.command {
        c["Args"] = json!(a);
    }
    for (k, v) in [
        ("Hostname", &t.hostname),
        ("User", &t.user),
        ("Dir", &t.working_dir),
        ("StopSignal", &t.stop_signal),
    ] {
        if !v.is_empty() {
            c[k] = json!(v);
        }
    }
    if t.stop_grace_period_ms > 0 {
        c["StopGracePeriod"] = json!(ms_to_ns(t.stop_grace_period_ms));
    }
    if !t.container.sysctls.is_empty() {
        c["Sysctls"] = json!(t.container.sysctls);
    }
    if !t.mounts.is_empty() {
        c["Mounts"] = t
            .mounts
            .iter()
            .map(|m| {
                let mut d = json!({"Type": m.kind, "Target": m.target});
                if !m.source.is_empty() {
                    d["Source"] = json!(m.source);
                }
                if m.read_only {
                    d["ReadOnly"] = json!(true);
                }
                d
            })
            .collect();
    }
    if let Some(h) = &t.healthcheck {
        c["HealthCheck"] = json!({
            "Test": h.test, "Interval": ms_to_ns(h.interval_ms), "Timeout": ms_to_ns(h.timeout_ms),
            "Retries": h.retries, "StartPeriod": ms_to_ns(h.start_period_ms),
        });
    }
    let files = |kind: &str, key: &str| -> Vec<Value> {
        t.files
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| {
                json!({
                    "File": {"Name": f.target, "UID": "0", "GID": "0", "Mode": f.mode},
                    format!("{key}ID"): f.name,
                    format!("{key}Name"): f.name,
                })
            })
            .collect()
    };
    let secrets = files(st::KIND_SECRET, "Secret");
    if !secrets.is_empty() {
        c["Secrets"] = json!(secrets);
    }
    let configs = files(st::KIND_CONFIG, "Config");
    if !configs.is_empty() {
        c["Configs"] = json!(configs);
    }
    let mut task = json!({
        "ContainerSpec": c,
        "Resources": {
            "Limits": limits(&t.limits, true),
            "Reservations": limits(&t.reservations, false),
        },
        "RestartPolicy": {
            "Condition": s.restart_policy.condition,
            "Delay": ms_to_ns(s.restart_policy.delay_ms),
            "MaxAttempts": s.restart_policy.max_attempts,
        },
        "Placement": {},
        "ForceUpdate": 0,
        "Runtime": "container",
    });
    if s.restart_policy.window_ms > 0 {
        task["RestartPolicy"]["Window"] = json!(ms_to_ns(s.restart_policy.window_ms));
    }
    let p = &s.placement;
    if !p.constraints.is_empty() {
        task["Placement"]["Constraints"] = json!(p.constraints);
    }
    if !p.spread.is_empty() {
        task["Placement"]["Preferences"] = p
            .spread
            .iter()
            .map(|k| json!({"Spread": {"SpreadDescriptor": format!("node.labels.{k}")}}))
            .collect();
    }
    if p.max_replicas_per_node > 0 {
        task["Placement"]["MaxReplicas"] = json!(p.max_replicas_per_node);
    }
    // The ingress network a service was put on for naming none is not part of its spec
    // in Swarm (it shows in `Endpoint.VirtualIPs`); sent back without it, the
    // orchestrator puts the service on it again.
    let joined_ingress = t.networks.len() == 1
        && t.networks.contains_key(netalloc::INGRESS)
        && s.ports.iter().any(netalloc::is_ingress);
    if !t.networks.is_empty() && !joined_ingress {
        task["Networks"] = t
            .networks
            .iter()
            .map(|(n, aliases)| {
                let mut d = json!({"Target": net_id(n)});
                if !aliases.is_empty() {
                    d["Aliases"] = json!(aliases);
                }
                d
            })
            .collect();
    }
    let mode = match s.mode {
        st::Mode::Replicated { replicas } => json!({"Replicated": {"Replicas": replicas}}),
        st::Mode::Global => json!({"Global": {}}),
    };
    let mut endpoint =
        json!({"Mode": if s.endpoint_mode.is_empty() { "vip" } else { s.endpoint_mode.as_str() }});
    if !s.ports.is_empty() {
        endpoint["Ports"] = ports(&s.ports);
    }
    json!({
        "Name": s.name,
        "Labels": s.labels,
        "TaskTemplate": task,
        "Mode": mode,
        "UpdateConfig": update_doc(&s.update_config),
        "RollbackConfig": update_doc(&s.rollback_config),
        "EndpointSpec": endpoint,
    })
}

fn limits(l: &st::Limits, with_pids: bool) -> Value {
    let mut d = json!({});
    if l.nano_cpus > 0 {
        d["NanoCPUs"] = json!(l.nano_cpus);
    }
    if l.memory_bytes > 0 {
        d["MemoryBytes"] = json!(l.memory_bytes);
    }
    if with_pids && l.pids > 0 {
        d["Pids"] = json!(l.pids);
    }
    d
}

/// Published ports as Docker's `EndpointPortConfig` list.
pub fn ports(ps: &[st::PortSpec]) -> Value {
    ps.iter()
        .map(|p| {
            json!({
                "Protocol": p.protocol, "TargetPort": p.target,
                "PublishedPort": p.published, "PublishMode": p.mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Resolve for Fake {
        fn network(&self, key: &str) -> Option<String> {
            match key {
                "netid123" | "front" => Some("front".into()),
                _ => None,
            }
        }
        fn file(&self, _kind: &str, id: &str, name: &str) -> Option<String> {
            (id == "sid" || name == "pw").then(|| "pw".to_string())
        }
    }

    /// What `docker service create` (CLI 20.10) sends for a typical service.
    fn cli_spec() -> Value {
        json!({
            "Name": "web",
            "Labels": {"a": "b"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox:latest",
                    "Args": ["httpd", "-f"],
                    "Env": ["X=1"],
                    "Init": false,
                    "StopGracePeriod": 10_000_000_000u64,
                    "DNSConfig": {},
                    "Isolation": "default",
                    "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data"}],
                    "Secrets": [{"File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "sid", "SecretName": "pw"}]
                },
                "Resources": {"Limits": {"MemoryBytes": 67108864}, "Reservations": {}},
                "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 3},
                "Placement": {"Constraints": ["node.role==worker"], "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]},
                "Networks": [{"Target": "netid123", "Aliases": ["w"]}],
                "ForceUpdate": 0,
                "Runtime": "container"
            },
            "Mode": {"Replicated": {"Replicas": 3}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "rollback", "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "start-first"},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}
        })
    }

    #[test]
    fn a_cli_spec_converts_and_round_trips() {
        let s = to_skiff(&cli_spec(), &Fake).expect("converts");
        assert_eq!(s.name, "web");
        assert_eq!(s.mode, st::Mode::Replicated { replicas: 3 });
        assert_eq!(s.template.command, Some(vec!["httpd".into(), "-f".into()]));
        assert_eq!(s.template.entrypoint, None);
        assert_eq!(s.template.stop_grace_period_ms, 10_000);
        assert_eq!(s.template.limits.memory_bytes, 64 << 20);
        assert_eq!(s.template.networks["front"], vec!["w".to_string()]);
        assert_eq!(s.template.files[0].target, "/run/secrets/pw");
        assert_eq!(s.template.files[0].mode, 0o444);
        assert_eq!(s.restart_policy.condition, "on-failure");
        assert_eq!(s.restart_policy.max_attempts, 3);
        assert_eq!(s.placement.spread, vec!["zone".to_string()]);
        assert_eq!(s.update_config.failure_action, "rollback");
        assert_eq!(s.update_config.order, "start-first");
        assert_eq!(s.ports[0].published, 8080);
        assert_eq!(s.ports[0].mode, "ingress");
        // Skiff → Docker → Skiff is the identity.
        let doc = to_docker(&s, &|n| n.to_string());
        let back = to_skiff(&doc, &Fake).expect("its own output converts");
        assert_eq!(back, s);
    }

    #[test]
    fn sysctls_reach_the_task_and_come_back() {
        let mut v = cli_spec();
        v["TaskTemplate"]["ContainerSpec"]["Sysctls"] = json!({"net.core.somaxconn": "1024"});
        let s = to_skiff(&v, &Fake).expect("converts");
        assert_eq!(s.template.container.sysctls["net.core.somaxconn"], "1024");
        let doc = to_docker(&s, &|n| n.to_string());
        assert_eq!(
            doc["TaskTemplate"]["ContainerSpec"]["Sysctls"],
            json!({"net.core.somaxconn": "1024"})
        );
        assert_eq!(to_skiff(&doc, &Fake).expect("back"), s);
    }

    /// The ingress network a service with no network was put on stays out of its spec
    /// as Swarm shows it, and what the CLI sends back puts it there again.
    #[test]
    fn a_joined_ingress_network_is_not_shown_in_the_spec() {
        let mut v = cli_spec();
        v["TaskTemplate"]["Networks"] = json!([]);
        let mut s = to_skiff(&v, &Fake).expect("converts");
        assert!(netalloc::join_ingress(&mut s));
        let doc = to_docker(&s, &|n| format!("id-{n}"));
        assert!(doc["TaskTemplate"].get("Networks").is_none(), "{doc}");
        let mut back = to_skiff(&doc, &Fake).expect("converts back");
        assert!(netalloc::join_ingress(&mut back));
        assert_eq!(back, s);
        // Without an ingress port it is an ordinary network and shown.
        s.ports.clear();
        let doc = to_docker(&s, &|n| format!("id-{n}"));
        assert_eq!(doc["TaskTemplate"]["Networks"][0]["Target"], "id-ingress");
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut v = cli_spec();
        v["TaskTemplate"]["ContainerSpec"]["Privileges"] = json!({"SELinuxContext": {"User": "x"}});
        assert_eq!(
            to_skiff(&v, &Fake).expect_err("refused").to_string(),
            "invalid ServiceSpec: TaskTemplate.ContainerSpec.Privileges is not supported by Skiff"
        );
        let mut v = cli_spec();
        v["TaskTemplate"]["ContainerSpec"]["Bogus"] = json!(1);
        assert_eq!(
            to_skiff(&v, &Fake).expect_err("refused"),
            SpecError::Unknown("TaskTemplate.ContainerSpec.Bogus".into())
        );
        let mut v = cli_spec();
        v["Mode"] = json!({"ReplicatedJob": {"MaxConcurrent": 1}});
        assert!(to_skiff(&v, &Fake)
            .expect_err("refused")
            .to_string()
            .contains("Mode.ReplicatedJob"));
        let mut v = cli_spec();
        v["TaskTemplate"]["LogDriver"] = json!({"Name": "syslog"});
        assert!(to_skiff(&v, &Fake)
            .expect_err("refused")
            .to_string()
            .contains("LogDriver.Name"));
        let mut v = cli_spec();
        v["TaskTemplate"]["Placement"]["Constraints"] = json!(["node.colour==red"]);
        assert!(to_skiff(&v, &Fake)
            .expect_err("refused")
            .to_string()
            .contains("Constraints"));
        let mut v = cli_spec();
        v["TaskTemplate"]["Networks"] = json!([{"Target": "nope"}]);
        assert!(to_skiff(&v, &Fake)
            .expect_err("refused")
            .to_string()
            .contains("network nope not found"));
        let mut v = cli_spec();
        v["EndpointSpec"]["Ports"][0]["TargetPort"] = json!("eighty");
        assert!(
            matches!(to_skiff(&v, &Fake), Err(SpecError::Invalid(m)) if m.contains("TargetPort"))
        );
    }

    #[test]
    fn go_defaults_are_not_refused() {
        // Null, false, zero and empty values are what Go sends for "unset".
        let mut v = cli_spec();
        v["TaskTemplate"]["ContainerSpec"]["Privileges"] =
            json!({"CredentialSpec": null, "SELinuxContext": null});
        v["TaskTemplate"]["ContainerSpec"]["TTY"] = json!(false);
        v["TaskTemplate"]["LogDriver"] = json!({"Name": "json-file"});
        assert!(to_skiff(&v, &Fake).is_ok());
        let global = json!({"Name": "g", "Mode": {"Global": {}},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}});
        assert_eq!(to_skiff(&global, &Fake).expect("ok").mode, st::Mode::Global);
    }

    #[test]
    fn stack_label_sets_the_stack() {
        let mut v = cli_spec();
        v["Labels"] = json!({LABEL_STACK: "shop"});
        assert_eq!(to_skiff(&v, &Fake).expect("ok").stack, "shop");
    }
}
