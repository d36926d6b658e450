//! Request-level conversions both front ends share: a container config as the clients
//! send it (the gRPC `ContainerConfig`, which the Docker API builds from Docker's JSON)
//! into the engine's record, `ps` filters, and a channel of body chunks as a `Read`;
//! the network and volume calls in [`networks`] and [`volumes`].

pub mod networks;
pub mod volumes;

use crate::containers::{Containers, Entry};
use crate::error::AgentError;
use skiff_runtime::container::{ContainerConfig, RestartPolicy as RtRestart, Status};
use std::sync::Arc;

pub fn to_config(c: skiff_proto::engine::ContainerConfig) -> Result<ContainerConfig, AgentError> {
    let (mounts, resources) =
        crate::volumes::parse_request(&c.binds, &c.mounts, &c.tmpfs, c.resources)?;
    let restart_policy = match c.restart_policy {
        Some(p) if !p.name.is_empty() => {
            let s = if p.maximum_retry_count > 0 {
                format!("{}:{}", p.name, p.maximum_retry_count)
            } else {
                p.name
            };
            RtRestart::parse(&s).map_err(AgentError::Invalid)?
        }
        _ => RtRestart {
            name: "no".into(),
            maximum_retry_count: 0,
        },
    };
    if c.auto_remove && restart_policy.name != "no" {
        return Err(AgentError::Invalid(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    Ok(ContainerConfig {
        image: c.image,
        cmd: c.cmd,
        entrypoint: c.entrypoint,
        env: c.env,
        working_dir: c.working_dir,
        user: c.user,
        hostname: c.hostname,
        domainname: String::new(),
        tty: c.tty,
        open_stdin: c.open_stdin,
        labels: c.labels.into_iter().collect(),
        restart_policy,
        auto_remove: c.auto_remove,
        read_only: c.read_only,
        privileged: c.privileged,
        cap_add: c.cap_add,
        cap_drop: c.cap_drop,
        security_opt: c.security_opt,
        network_mode: c.network_mode,
        stop_signal: c.stop_signal,
        stop_timeout: (c.stop_timeout >= 0).then_some(c.stop_timeout as u32),
        exposed_ports: vec![],
        net: crate::network::net_config(c.net)?,
        mounts,
        binds: c.binds,
        volumes_from: c.volumes_from,
        resources,
        log_config: log_config(&c.log_opts)?,
        init: c.init,
        devices: c
            .devices
            .iter()
            .map(|d| skiff_runtime::container::devices::DeviceMapping::parse(d))
            .collect::<Result<_, _>>()
            .map_err(|e| AgentError::Invalid(e.to_string()))?,
        device_cgroup_rules: c.device_cgroup_rules,
        sysctls: c.sysctls.into_iter().collect(),
        shm_size: c.shm_size,
        ipc_mode: c.ipc_mode,
        pid_mode: c.pid_mode,
    })
}

/// `--log-opt KEY=VALUE`s as given; the agent's defaults are merged in at create.
pub fn log_config(
    opts: &[String],
) -> Result<Option<skiff_runtime::shim::logfile::LogConfig>, AgentError> {
    use skiff_runtime::shim::logfile::{parse_opt, LogConfig, DRIVER};
    if opts.is_empty() {
        return Ok(None);
    }
    let config = opts
        .iter()
        .map(|o| parse_opt(o))
        .collect::<Result<_, _>>()
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    Ok(Some(LogConfig {
        kind: DRIVER.into(),
        config,
    }))
}

/// The containers `ps` lists: running ones (all with `all`), newest first, that pass
/// every filter (`KEY=VALUE`; values of one key are ORed but labels must all match,
/// keys ANDed, as Docker does).
pub fn list_containers(containers: &Containers, all: bool, filters: &[String]) -> Vec<Arc<Entry>> {
    let list = containers.list();
    // `before`/`since` name a container; those created before/after it pass.
    let created_of = |key: &str| containers.get(key).ok().map(|e| e.record().created);
    let mut groups: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for f in filters {
        if let Some((k, v)) = f.split_once('=') {
            groups.entry(k).or_default().push(v);
        }
    }
    // A status filter shows stopped containers too (`ps --filter status=exited`).
    let all = all || groups.contains_key("status") || groups.contains_key("exited");
    let bounds: Vec<(&str, Option<chrono::DateTime<chrono::Utc>>)> = ["before", "since"]
        .iter()
        .filter_map(|k| {
            groups
                .get(k)
                .map(|v| (*k, v.first().and_then(|x| created_of(x))))
        })
        .collect();
    list.into_iter()
        .filter(|e| all || e.state().is_running())
        .filter(|e| {
            groups.iter().all(|(k, vs)| match *k {
                "before" | "since" => true,
                // Every label must match (Docker's MatchKVList); other keys match any value.
                "label" => vs.iter().all(|v| list_filter(e, &[format!("{k}={v}")])),
                _ => vs.iter().any(|v| list_filter(e, &[format!("{k}={v}")])),
            })
        })
        .filter(|e| {
            let created = e.record().created;
            bounds.iter().all(|(k, t)| match (k, t) {
                (_, None) => false,
                (&"before", Some(t)) => created < *t,
                (_, Some(t)) => created > *t,
            })
        })
        .collect()
}

/// One `ps --filter` term: name=, id=, status=, label=, ancestor=, exited=, network=,
/// volume=, health= (ANDed across terms). Unknown keys pass.
pub fn list_filter(e: &Entry, filters: &[String]) -> bool {
    filters.iter().all(|f| {
        let Some((k, v)) = f.split_once('=') else {
            return true;
        };
        let r = e.record();
        let st = e.state();
        match k {
            "name" => r.name.contains(v.trim_start_matches('/')),
            "id" => e.id.starts_with(v),
            "status" => st.status.as_str() == v,
            "label" => {
                let (lk, lv) = v.split_once('=').unwrap_or((v, ""));
                r.config
                    .labels
                    .get(lk)
                    .map(|x| lv.is_empty() || x == lv)
                    .unwrap_or(false)
            }
            "ancestor" => {
                let bare = v.strip_suffix(":latest").unwrap_or(v);
                let img = r
                    .config
                    .image
                    .strip_suffix(":latest")
                    .unwrap_or(&r.config.image);
                img == bare || r.image_id.as_str().contains(v)
            }
            "exited" => st.status == Status::Exited && v.parse::<i32>().ok() == Some(st.exit_code),
            "network" => {
                let mode = if r.config.network_mode.is_empty() {
                    "bridge"
                } else {
                    r.config.network_mode.as_str()
                };
                mode == v
            }
            "volume" => r
                .config
                .mounts
                .iter()
                .any(|m| m.name == v || m.source.to_string_lossy() == v || m.destination == v),
            // No container has a healthcheck: each is "none".
            "health" => v == "none",
            _ => true,
        }
    })
}
