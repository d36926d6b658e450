//! Docker-shaped JSON documents for `inspect` and the `ps` status column.

use crate::containers::Entry;
use crate::humanize;
use serde_json::{json, Value};
use skiff_runtime::container::Status;
use skiff_runtime::image::Image;

fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// `docker inspect` for a container.
pub fn container(e: &Entry) -> Value {
    let r = e.record();
    let s = e.state();
    let c = &r.config;
    let exposed: serde_json::Map<String, Value> = c
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    let mut doc = json!({
        "Id": r.id,
        "Created": rfc3339(Some(r.created)),
        "Path": r.path,
        "Args": r.args,
        "State": {
            "Status": s.status.as_str(),
            "Running": matches!(s.status, Status::Running | Status::Paused),
            "Paused": s.status == Status::Paused,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": rfc3339(s.started_at),
            "FinishedAt": rfc3339(s.finished_at),
        },
        "Image": r.image_id.to_string(),
        "ResolvConfPath": e.paths.resolv_conf(),
        "HostnamePath": e.paths.hostname(),
        "HostsPath": e.paths.hosts(),
        "LogPath": e.paths.log(),
        "Name": format!("/{}", r.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "NetworkMode": c.network_mode,
            "RestartPolicy": {"Name": c.restart_policy.name, "MaximumRetryCount": c.restart_policy.maximum_retry_count},
            "AutoRemove": c.auto_remove,
            "CapAdd": c.cap_add,
            "CapDrop": c.cap_drop,
            "Privileged": c.privileged,
            "ReadonlyRootfs": c.read_only,
            // Docker's *bool: null unless --init was given.
            "Init": if c.init { json!(true) } else { Value::Null },
            "Devices": c.devices,
            "DeviceCgroupRules": if c.device_cgroup_rules.is_empty() { Value::Null } else { json!(c.device_cgroup_rules) },
            "SecurityOpt": c.security_opt,
            // Records from before these keys ran with Docker's defaults.
            "IpcMode": if c.ipc_mode.is_empty() { "private" } else { c.ipc_mode.as_str() },
            "PidMode": c.pid_mode,
            "ShmSize": skiff_runtime::container::namespaces::effective_shm_size(c.shm_size),
            "LogConfig": c.log_config.clone().unwrap_or_else(|| skiff_runtime::shim::logfile::LogConfig {
                kind: skiff_runtime::shim::logfile::DRIVER.into(),
                config: Default::default(),
            }),
        },
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": r.lowers.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(":"),
                "UpperDir": e.paths.upper(),
                "WorkDir": e.paths.work(),
                "MergedDir": e.paths.rootfs(),
            },
        },
        "Mounts": [],
        "Config": {
            "Hostname": c.hostname,
            "Domainname": c.domainname,
            "User": c.user,
            "AttachStdin": c.open_stdin,
            "Tty": c.tty,
            "OpenStdin": c.open_stdin,
            "ExposedPorts": exposed,
            "Env": c.env,
            "Cmd": c.cmd,
            "Image": c.image,
            "WorkingDir": c.working_dir,
            "Entrypoint": if c.entrypoint.is_empty() { Value::Null } else { json!(c.entrypoint) },
            "Labels": c.labels,
            "StopSignal": c.stop_signal,
            "StopTimeout": c.stop_timeout,
        },
        "NetworkSettings": {
            "Ports": {},
            "Networks": {},
        },
    });
    // Docker leaves Sysctls out when none are set.
    if !c.sysctls.is_empty() {
        doc["HostConfig"]["Sysctls"] = json!(c.sysctls);
    }
    doc
}

/// `docker inspect` with what the networks and volumes add (both front ends answer this).
pub async fn container_full(containers: &crate::containers::Containers, e: &Entry) -> Value {
    let mut doc = container(e);
    doc["NetworkSettings"] = containers.networks.settings_json(&e.record()).await;
    crate::volumes::extend_inspect(&mut doc, &e.record().config);
    doc
}

/// The STATUS column of `ps`.
pub fn status_line(e: &Entry) -> String {
    let s = e.state();
    let now = chrono::Utc::now();
    let since = |t: Option<chrono::DateTime<chrono::Utc>>| {
        humanize::duration(t.map(|t| (now - t).num_seconds()).unwrap_or(0))
    };
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", since(s.started_at)),
        Status::Paused => format!("Up {} (Paused)", since(s.started_at)),
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, since(s.finished_at)),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => format!("Exited ({}) {} ago", s.exit_code, since(s.finished_at)),
        Status::Dead => "Dead".into(),
    }
}

/// The COMMAND column of `ps` (quoted, as Docker shows it).
pub fn command_line(e: &Entry) -> String {
    let r = e.record();
    let mut parts = vec![r.path.clone()];
    parts.extend(r.args.iter().cloned());
    parts.join(" ")
}

/// `top`: `ps ARGS` (default `-ef`) on the host, keeping the rows of the container's
/// processes; returns the titles and the rows (the last column may hold spaces).
pub async fn top(
    containers: &crate::containers::Containers,
    key: &str,
    ps_args: Vec<String>,
) -> crate::error::Result<(Vec<String>, Vec<Vec<String>>)> {
    use crate::error::AgentError;
    let e = containers.get(key)?;
    if !e.state().is_running() {
        return Err(AgentError::Precondition(format!(
            "container {} is not running",
            e.id
        )));
    }
    let pids = containers.pids(&e);
    let args = if ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_args
    };
    let out = tokio::process::Command::new("ps")
        .args(&args)
        .output()
        .await
        .map_err(|err| AgentError::Internal(format!("running ps: {err}")))?;
    if !out.status.success() {
        return Err(AgentError::Invalid(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let titles: Vec<String> = header.split_whitespace().map(String::from).collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| AgentError::Invalid("ps output has no PID column".into()))?;
    let processes = lines
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let pid: i32 = cells.get(pid_col)?.parse().ok()?;
            if !pids.contains(&pid) {
                return None;
            }
            // The last column (the command) may contain spaces.
            let n = titles.len();
            let mut row: Vec<String> = cells.iter().take(n - 1).map(|s| s.to_string()).collect();
            row.push(cells.get(n - 1..).map(|c| c.join(" ")).unwrap_or_default());
            Some(row)
        })
        .collect();
    Ok((titles, processes))
}

/// `docker image inspect`.
pub fn image(img: &Image, size: u64) -> Value {
    let c = &img.config;
    json!({
        "Id": img.id().to_string(),
        "RepoTags": img.repo_tags,
        "RepoDigests": img.record.repo_digests,
        "Created": c.created.clone().unwrap_or_default(),
        "Architecture": c.architecture,
        "Os": c.os,
        "Size": size,
        "Config": c.config,
        "RootFS": {
            "Type": c.rootfs.kind,
            "Layers": c.rootfs.diff_ids,
        },
        "Metadata": {"LastTagTime": img.record.added},
    })
}
