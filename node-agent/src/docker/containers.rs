//! Docker API: `/containers` endpoints.
//!
//! Create translates Docker's JSON into the same `ContainerConfig` the skiff CLI sends
//! over gRPC and goes through [`crate::request::to_config`], so both front ends accept
//! and refuse the same things. Attach hijacks the connection (`101 UPGRADED`) and
//! relays the shim's frames; an attach to a container that is not running yet waits
//! in [`Pending`] for the `start` that follows it (the docker CLI's order for `run`):
//! that start goes through `start_attached`, so the shim waits for the attach client
//! and no output is lost.

use super::{
    full, json, mux_frame, no_content, ok_json, stream_response, ApiError, ApiVersion, DockerApi,
    Req, Resp, Result,
};
use crate::archive;
use crate::containers::Entry;
use crate::error::AgentError;
use bollard_stubs::models as bm;
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde_json::{json as j, Value};
use skiff_runtime::container::Status;
use skiff_runtime::shim::frame::{read_frame, write_frame, Frame};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

pub(super) async fn route(api: &DockerApi, req: Req) -> Result<Resp> {
    let segs = req.segs.clone();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method.as_str().to_string();
    match (method.as_str(), s.as_slice()) {
        ("GET", ["containers", "json"]) => list(api, req),
        ("POST", ["containers", "create"]) => create(api, req).await,
        ("POST", ["containers", "prune"]) => prune(api, req).await,
        ("POST", ["containers", _, "exec"]) => super::exec::create(api, req).await,
        ("GET", ["containers", id, "json"]) => inspect(api, id, req).await,
        ("POST", ["containers", id, "start"]) => start(api, id).await,
        ("POST", ["containers", id, "stop"]) => stop(api, id, req, false).await,
        ("POST", ["containers", id, "restart"]) => stop(api, id, req, true).await,
        ("POST", ["containers", id, "kill"]) => kill(api, id, req).await,
        ("POST", ["containers", id, "wait"]) => wait(api, id, req),
        ("DELETE", ["containers", id]) => remove(api, id, req).await,
        ("GET", ["containers", id, "logs"]) => logs(api, id, req),
        ("POST", ["containers", id, "attach"]) => attach(api, id, req, Transport::Hijack).await,
        ("GET", ["containers", id, "attach", "ws"]) => {
            // Text messages before API 1.28, binary after (moby#28176).
            let binary = req.version >= ApiVersion(1, 28);
            attach(api, id, req, Transport::WebSocket { binary }).await
        }
        ("POST", ["containers", id, "resize"]) => resize(api, id, req).await,
        ("GET", ["containers", id, "top"]) => top(api, id, req).await,
        ("GET", ["containers", id, "stats"]) => stats(api, id, req),
        ("POST", ["containers", id, "rename"]) => rename(api, id, req).await,
        ("POST", ["containers", id, "update"]) => update(api, id, req).await,
        ("POST", ["containers", id, "pause"]) => {
            api.containers.pause(id).await?;
            no_content()
        }
        ("POST", ["containers", id, "unpause"]) => {
            api.containers.unpause(id).await?;
            no_content()
        }
        ("GET" | "HEAD", ["containers", id, "archive"]) => archive_get(api, id, req).await,
        ("PUT", ["containers", id, "archive"]) => archive_put(api, id, req).await,
        ("GET", ["containers", id, "export"]) => export(api, id),
        ("GET", ["containers", id, "changes"]) => changes(api, id).await,
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

/// Attach connections waiting for their container to start (the docker CLI attaches
/// before it starts): the start hands each its shim connection.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<String, Vec<Parked>>>,
}

/// One parked attach: what it asked for and where its shim connection goes.
struct Parked {
    stdin: bool,
    tx: oneshot::Sender<UnixStream>,
}

impl Pending {
    fn park(&self, id: &str, p: Parked) {
        if let Ok(mut m) = self.waiting.lock() {
            m.entry(id.to_string()).or_default().push(p);
        }
    }
    /// The parked attaches of `id` whose clients are still there.
    fn take(&self, id: &str) -> Vec<Parked> {
        self.waiting
            .lock()
            .ok()
            .and_then(|mut m| m.remove(id))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.tx.is_closed())
            .collect()
    }
}

fn status_only(status: StatusCode) -> Result<Resp> {
    let mut r = hyper::Response::new(full(Vec::new()));
    *r.status_mut() = status;
    Ok(r)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

// ---- list, inspect -------------------------------------------------------------

fn list(api: &DockerApi, req: Req) -> Result<Resp> {
    let filters = req.query.filters()?;
    filters.only(&[
        "id", "name", "label", "status", "ancestor", "exited", "before", "since", "network",
        "volume", "health", "is-task", "publish", "expose",
    ])?;
    for s in filters.get("status") {
        if !matches!(
            s.as_str(),
            "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
        ) {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'status={s}'"
            )));
        }
    }
    let limit = req.query.int("limit")?.filter(|l| *l > 0);
    // `-n`/`-l` imply all, as in Docker.
    let all = req.query.bool("all") || limit.is_some();
    let size = req.query.bool("size");
    let mut list = crate::request::list_containers(&api.containers, all, &filters.to_kv());
    if let Some(l) = limit {
        list.truncate(l as usize);
    }
    let out: Vec<Value> = list.iter().map(|e| summary(api, e, size)).collect();
    ok_json(&out)
}

/// One entry of `GET /containers/json`.
fn summary(api: &DockerApi, e: &Entry, size: bool) -> Value {
    let r = e.record();
    let st = e.state();
    let ports: Vec<Value> = api
        .containers
        .networks
        .ports_now(&e.id)
        .iter()
        .map(|p| {
            j!({
                "IP": if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() },
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.proto.to_string(),
            })
        })
        .collect();
    let mode = network_mode(&r.config.network_mode);
    let mounts: Vec<Value> = r
        .config
        .mounts
        .iter()
        .map(|m| {
            j!({
                "Type": format!("{:?}", m.kind).to_lowercase(),
                "Name": m.name,
                "Source": m.source,
                "Destination": m.destination,
                "Mode": m.mode,
                "RW": m.rw,
                "Propagation": m.propagation,
            })
        })
        .collect();
    let mut v = j!({
        "Id": e.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.config.image,
        "ImageID": r.image_id.to_string(),
        "Command": crate::inspect::command_line(e),
        "Created": r.created.timestamp(),
        "Ports": ports,
        "Labels": r.config.labels,
        "State": st.status.as_str(),
        "Status": crate::inspect::status_line(e),
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": {mode.clone(): {"NetworkID": ""}}},
        "Mounts": mounts,
    });
    if size {
        v["SizeRw"] = j!(skiff_runtime::fsutil::disk_usage(&e.paths.upper()));
        v["SizeRootFs"] = j!(skiff_runtime::fsutil::disk_usage(&e.paths.upper()));
    }
    v
}

fn network_mode(m: &str) -> String {
    if m.is_empty() || m == "default" {
        "bridge".into()
    } else {
        m.to_string()
    }
}

async fn inspect(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let e = api.containers.get(id)?;
    let mut doc = crate::inspect::container_full(&api.containers, &e).await;
    let r = e.record();
    let hc = &mut doc["HostConfig"];
    hc["NetworkMode"] = j!(network_mode(&r.config.network_mode));
    hc["PublishAllPorts"] = j!(r.config.net.publish_all);
    hc["Dns"] = j!(r.config.net.dns);
    hc["DnsSearch"] = j!(r.config.net.dns_search);
    hc["DnsOptions"] = j!(r.config.net.dns_options);
    hc["ExtraHosts"] = j!(r.config.net.extra_hosts);
    let mut bindings = serde_json::Map::new();
    for p in &r.config.net.ports {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = bindings.entry(key).or_insert_with(|| j!([]));
        if let Value::Array(a) = entry {
            a.push(j!({
                "HostIp": p.host_ip,
                "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() },
            }));
        }
    }
    hc["PortBindings"] = Value::Object(bindings);
    let st = e.state();
    doc["State"]["Health"] = Value::Null;
    if let Some(obj) = doc["State"].as_object_mut() {
        obj.remove("Health");
    }
    doc["Config"]["AttachStdout"] = j!(true);
    doc["Config"]["AttachStderr"] = j!(true);
    doc["Config"]["StdinOnce"] = j!(false);
    doc["ExecIDs"] = Value::Null;
    doc["MountLabel"] = j!("");
    doc["ProcessLabel"] = j!("");
    doc["AppArmorProfile"] = j!("");
    if st.pid == 0 {
        doc["State"]["Pid"] = j!(0);
    }
    if req.query.bool("size") {
        let rw = skiff_runtime::fsutil::disk_usage(&e.paths.upper());
        doc["SizeRw"] = j!(rw);
        doc["SizeRootFs"] = j!(rw);
    }
    ok_json(&doc)
}

// ---- create ---------------------------------------------------------------------

async fn create(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let name = req.query.get("name").unwrap_or_default().to_string();
    if let Some(p) = req.query.get("platform").filter(|p| !p.is_empty()) {
        let os = p.split('/').next().unwrap_or_default();
        if os != "linux" {
            return Err(ApiError::bad_request(format!(
                "platform {p} is not supported: Skiff runs linux containers"
            )));
        }
    }
    let body: bm::ContainerCreateBody = req.json_opt().await?.ok_or_else(|| {
        ApiError::bad_request("Config cannot be empty in order to create a container")
    })?;
    let (cfg, exposed, mut warnings) = to_proto_config(body)?;
    let entrypoint_set = cfg.entrypoint_set;
    let mut config = crate::request::to_config(cfg)?;
    config.exposed_ports = exposed;
    // The CLI pulls on a 404 that names the image as it asked for it.
    if let Err(skiff_runtime::image::ImageError::NotFound(_)) = api.images.resolve(&config.image) {
        return Err(ApiError::not_found(format!(
            "No such image: {}",
            config.image
        )));
    }
    let (id, w) = api
        .containers
        .create(crate::containers::CreateOptions {
            name: (!name.is_empty()).then_some(name),
            config,
            entrypoint_set,
        })
        .await?;
    warnings.extend(w);
    Ok(json(
        StatusCode::CREATED,
        &j!({"Id": id, "Warnings": warnings}),
    ))
}

/// Docker's create body as the skiff CLI's config (strings in `-v`/`--mount`/`-p`
/// syntax, which `to_config` parses), the exposed ports, and warnings.
fn to_proto_config(
    b: bm::ContainerCreateBody,
) -> Result<(
    skiff_proto::engine::ContainerConfig,
    Vec<String>,
    Vec<String>,
)> {
    use skiff_proto::engine as pe;
    let mut warnings = Vec::new();
    let image = b
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::bad_request("Config.Image: an image is required"))?;
    let hc = b.host_config.unwrap_or_default();
    if hc.device_requests.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request(
            "HostConfig.DeviceRequests: --gpus and device requests are not supported by Skiff",
        ));
    }
    // Devices in `--device` syntax; to_config parses and checks them.
    let devices = hc
        .devices
        .iter()
        .flatten()
        .map(|d| {
            skiff_runtime::container::devices::DeviceMapping::new(
                d.path_on_host.as_deref().unwrap_or_default(),
                d.path_in_container.as_deref().unwrap_or_default(),
                d.cgroup_permissions.as_deref().unwrap_or_default(),
            )
            .map(|m| m.to_spec_string())
            .map_err(|e| ApiError::bad_request(format!("HostConfig.Devices: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(h) = &b.healthcheck {
        if h.test
            .as_ref()
            .is_some_and(|t| !t.is_empty() && t[0] != "NONE")
        {
            warnings.push("Skiff does not run healthchecks; the Healthcheck is ignored".into());
        }
    }
    let mut log_opts = Vec::new();
    if let Some(lc) = &hc.log_config {
        let kind = lc.typ.as_deref().unwrap_or_default();
        if !kind.is_empty() && kind != "json-file" {
            return Err(ApiError::bad_request(format!(
                "HostConfig.LogConfig.Type: logging driver \"{kind}\" is not supported by Skiff (only json-file)"
            )));
        }
        for (k, v) in lc.config.iter().flatten() {
            log_opts.push(format!("{k}={v}"));
        }
        log_opts.sort();
    }
    let mounts = hc
        .mounts
        .iter()
        .flatten()
        .map(mount_string)
        .collect::<Result<Vec<_>>>()?;
    let tmpfs = hc
        .tmpfs
        .iter()
        .flatten()
        .map(|(dst, opts)| {
            if opts.is_empty() {
                dst.clone()
            } else {
                format!("{dst}:{opts}")
            }
        })
        .collect();
    let mut publish = Vec::new();
    for (port, binds) in hc.port_bindings.iter().flatten() {
        let port = if port.contains('/') {
            port.clone()
        } else {
            format!("{port}/tcp")
        };
        let binds = binds.clone().unwrap_or_default();
        if binds.is_empty() {
            publish.push(port.clone());
        }
        for pb in binds {
            let ip = pb.host_ip.unwrap_or_default();
            let hp = pb.host_port.unwrap_or_default();
            if ip.contains(':') {
                return Err(ApiError::bad_request(format!(
                    "HostConfig.PortBindings: IPv6 host address {ip} is not supported by Skiff"
                )));
            }
            publish.push(match (ip.is_empty(), hp.is_empty()) {
                (true, true) => port.clone(),
                (true, false) => format!("{hp}:{port}"),
                (false, _) => format!("{ip}:{hp}:{port}"),
            });
        }
    }
    publish.sort();
    let mut exposed: Vec<String> = b
        .exposed_ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            if p.contains('/') {
                p
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    exposed.sort();
    let network_mode = hc
        .network_mode
        .clone()
        .filter(|m| m != "default")
        .unwrap_or_default();
    let (mut aliases, mut ipv4) = (Vec::new(), String::new());
    if let Some(eps) = b
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
    {
        for (net, ep) in eps {
            if !network_mode.is_empty() && net != &network_mode && eps.len() > 1 {
                continue;
            }
            aliases.extend(ep.aliases.clone().unwrap_or_default());
            if let Some(a) = ep.ipam_config.as_ref().and_then(|c| c.ipv4_address.clone()) {
                ipv4 = a;
            }
        }
    }
    let restart_policy = hc.restart_policy.as_ref().map(|p| pe::RestartPolicy {
        name: p.name.map(|n| n.as_ref().to_string()).unwrap_or_default(),
        maximum_retry_count: p.maximum_retry_count.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
    });
    let throttle = |v: &Option<Vec<bm::ThrottleDevice>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}:{}",
                    t.path.clone().unwrap_or_default(),
                    t.rate.unwrap_or(0)
                )
            })
            .collect()
    };
    let mut nano_cpus = hc.nano_cpus.unwrap_or(0);
    if let (Some(q), Some(p)) = (hc.cpu_quota, hc.cpu_period) {
        if nano_cpus == 0 && q > 0 && p > 0 {
            nano_cpus = q * 1_000_000_000 / p;
        }
    }
    let resources = pe::Resources {
        memory: hc.memory.unwrap_or(0),
        memory_swap: hc.memory_swap.unwrap_or(0),
        memory_reservation: hc.memory_reservation.unwrap_or(0),
        nano_cpus,
        cpu_shares: hc.cpu_shares.unwrap_or(0),
        cpuset_cpus: hc.cpuset_cpus.clone().unwrap_or_default(),
        pids_limit: hc.pids_limit.unwrap_or(0),
        blkio_weight: u32::from(hc.blkio_weight.unwrap_or(0)),
        device_read_bps: throttle(&hc.blkio_device_read_bps),
        device_write_bps: throttle(&hc.blkio_device_write_bps),
        oom_kill_disable: hc.oom_kill_disable.unwrap_or(false),
        oom_score_adj: hc.oom_score_adj.unwrap_or(0) as i32,
        ulimits: hc
            .ulimits
            .iter()
            .flatten()
            .map(|u| {
                let name = u.name.clone().unwrap_or_default();
                let soft = u.soft.unwrap_or(0);
                let hard = u.hard.unwrap_or(soft);
                format!("{name}={soft}:{hard}")
            })
            .collect(),
    };
    let entrypoint_set = b.entrypoint.is_some();
    let entrypoint: Vec<String> = b
        .entrypoint
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let cfg = pe::ContainerConfig {
        image,
        cmd: b.cmd.unwrap_or_default(),
        entrypoint,
        entrypoint_set,
        env: b.env.unwrap_or_default(),
        working_dir: b.working_dir.unwrap_or_default(),
        user: b.user.unwrap_or_default(),
        hostname: b.hostname.unwrap_or_default(),
        tty: b.tty.unwrap_or(false),
        open_stdin: b.open_stdin.unwrap_or(false),
        labels: b.labels.unwrap_or_default().into_iter().collect(),
        restart_policy,
        auto_remove: hc.auto_remove.unwrap_or(false),
        read_only: hc.readonly_rootfs.unwrap_or(false),
        privileged: hc.privileged.unwrap_or(false),
        cap_add: hc.cap_add.unwrap_or_default(),
        cap_drop: hc.cap_drop.unwrap_or_default(),
        security_opt: hc.security_opt.unwrap_or_default(),
        network_mode,
        stop_signal: b.stop_signal.unwrap_or_default(),
        stop_timeout: b
            .stop_timeout
            .map(|t| t.clamp(-1, i32::MAX as i64) as i32)
            .unwrap_or(-1),
        binds: hc.binds.unwrap_or_default(),
        mounts,
        volumes_from: hc.volumes_from.unwrap_or_default(),
        tmpfs,
        resources: Some(resources),
        net: Some(pe::NetworkOptions {
            ipv4_address: ipv4,
            aliases,
            dns: hc.dns.unwrap_or_default(),
            dns_search: hc.dns_search.unwrap_or_default(),
            dns_options: hc.dns_options.unwrap_or_default(),
            extra_hosts: hc.extra_hosts.unwrap_or_default(),
            publish,
            publish_all: hc.publish_all_ports.unwrap_or(false),
        }),
        log_opts,
        init: hc.init.unwrap_or(false),
        devices,
        device_cgroup_rules: hc.device_cgroup_rules.clone().unwrap_or_default(),
        sysctls: hc.sysctls.clone().unwrap_or_default(),
        shm_size: hc.shm_size.unwrap_or(0),
        ipc_mode: hc.ipc_mode.clone().unwrap_or_default(),
        pid_mode: hc.pid_mode.clone().unwrap_or_default(),
    };
    Ok((cfg, exposed, warnings))
}

/// A structured `HostConfig.Mounts` entry in `--mount` syntax.
fn mount_string(m: &bm::Mount) -> Result<String> {
    let kind = m
        .typ
        .map(|t| t.to_string())
        .unwrap_or_else(|| "volume".into());
    if !matches!(kind.as_str(), "bind" | "volume" | "tmpfs") {
        return Err(ApiError::bad_request(format!(
            "HostConfig.Mounts: mount type \"{kind}\" is not supported by Skiff"
        )));
    }
    let target = m
        .target
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("HostConfig.Mounts: Target must not be empty"))?;
    let mut parts = vec![format!("type={kind}")];
    if let Some(s) = m.source.as_ref().filter(|s| !s.is_empty()) {
        parts.push(format!("source={s}"));
    }
    parts.push(format!("target={target}"));
    if m.read_only == Some(true) {
        parts.push("readonly".into());
    }
    if let Some(p) = m
        .bind_options
        .as_ref()
        .and_then(|b| b.propagation)
        .map(|p| p.as_ref().to_string())
        .filter(|p| !p.is_empty())
    {
        parts.push(format!("bind-propagation={p}"));
    }
    if m.volume_options.as_ref().and_then(|v| v.no_copy) == Some(true) {
        parts.push("volume-nocopy".into());
    }
    if let Some(t) = &m.tmpfs_options {
        if let Some(sz) = t.size_bytes.filter(|s| *s > 0) {
            parts.push(format!("tmpfs-size={sz}"));
        }
        if let Some(mode) = t.mode.filter(|m| *m > 0) {
            parts.push(format!("tmpfs-mode={mode:o}"));
        }
    }
    Ok(parts.join(","))
}

// ---- lifecycle --------------------------------------------------------------------

async fn start(api: &DockerApi, id: &str) -> Result<Resp> {
    let e = api.containers.get(id)?;
    if matches!(e.state().status, Status::Running | Status::Paused) {
        return status_only(StatusCode::NOT_MODIFIED);
    }
    let parked = api.attach.take(&e.id);
    let mut it = parked.into_iter();
    let Some(first) = it.next() else {
        api.containers.start(&e.id).await?;
        return no_content();
    };
    let (_, conn) = api
        .containers
        .start_attached(&e.id, first.stdin, None)
        .await?;
    let _ = first.tx.send(conn);
    for p in it {
        if let Ok((_, conn)) = api.containers.attach(&e.id, p.stdin).await {
            let _ = p.tx.send(conn);
        }
    }
    no_content()
}

async fn stop(api: &DockerApi, id: &str, req: Req, restart: bool) -> Result<Resp> {
    let t = req
        .query
        .int("t")?
        .map(|t| t.clamp(0, u32::MAX as i64) as u32);
    let e = api.containers.get(id)?;
    if restart {
        api.containers.restart(&e.id, t).await?;
        return no_content();
    }
    if !e.state().is_running() {
        return status_only(StatusCode::NOT_MODIFIED);
    }
    if let Some(sig) = req.query.get("signal").filter(|s| !s.is_empty()) {
        // A stop signal other than the container's: send it, then stop as usual
        // (the default stop signal follows after a zero wait only on timeout).
        api.containers.kill(&e.id, sig).await?;
    }
    api.containers.stop(&e.id, t).await?;
    no_content()
}

async fn kill(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let sig = req.query.get("signal").unwrap_or("KILL").to_string();
    api.containers.kill(id, &sig).await?;
    no_content()
}

async fn remove(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    if req.query.bool("link") {
        return Err(ApiError::bad_request(
            "links are not supported by Skiff (there is no link to remove)",
        ));
    }
    let key = api.containers.get(id)?.id.clone();
    api.containers
        .remove_with_volumes(id, req.query.bool("force"), req.query.bool("v"))
        .await?;
    // Attaches still waiting for a start that will never come end now.
    drop(api.attach.take(&key));
    no_content()
}

/// `wait`: the headers go out at once (the CLI waits on this before it starts the
/// container); the body follows when the condition is met.
fn wait(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let cond = req
        .query
        .get("condition")
        .unwrap_or("not-running")
        .to_string();
    if !matches!(cond.as_str(), "" | "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {cond:?} (want not-running, next-exit or removed)"
        )));
    }
    let e = api.containers.get(id)?;
    let containers = api.containers.clone();
    let (tx, rx) = mpsc::channel(1);
    let first = e.state().finished_at;
    tokio::spawn(async move {
        let mut changed = e.changed.subscribe();
        loop {
            let st = e.state();
            let gone = containers.get(&e.id).is_err();
            let done = match cond.as_str() {
                "removed" => gone,
                "next-exit" => {
                    gone || (!st.is_running()
                        && st.status != Status::Created
                        && st.finished_at != first)
                }
                _ => gone || !st.is_running(),
            };
            if done {
                let body = serde_json::to_vec(&j!({"StatusCode": st.exit_code, "Error": null}))
                    .unwrap_or_default();
                let _ = tx.send(Bytes::from(body)).await;
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(stream_response(StatusCode::OK, "application/json", rx))
}

async fn rename(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let name = req
        .query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename: the new name (?name=) is required"))?;
    api.containers.rename(id, name).await?;
    no_content()
}

async fn update(api: &DockerApi, id: &str, mut req: Req) -> Result<Resp> {
    let b: bm::ContainerUpdateBody = req.json_or_default().await?;
    let e = api.containers.get(id)?;
    let mut nano_cpus = b.nano_cpus.unwrap_or(0);
    if let (Some(q), Some(p)) = (b.cpu_quota, b.cpu_period) {
        if nano_cpus == 0 && q > 0 && p > 0 {
            nano_cpus = q * 1_000_000_000 / p;
        }
    }
    let res = skiff_proto::engine::Resources {
        memory: b.memory.unwrap_or(0),
        memory_swap: b.memory_swap.unwrap_or(0),
        memory_reservation: b.memory_reservation.unwrap_or(0),
        nano_cpus,
        cpu_shares: b.cpu_shares.unwrap_or(0),
        cpuset_cpus: b.cpuset_cpus.clone().unwrap_or_default(),
        pids_limit: b.pids_limit.unwrap_or(0),
        blkio_weight: u32::from(b.blkio_weight.unwrap_or(0)),
        ..Default::default()
    };
    let delta = crate::volumes::resources_from_proto(res)?;
    let mut warnings = crate::stats::update(&api.containers, &e.id, &delta).await?;
    if let Some(p) = b.restart_policy.filter(|p| p.name.is_some()) {
        let name = p.name.map(|n| n.as_ref().to_string()).unwrap_or_default();
        let n = p.maximum_retry_count.unwrap_or(0).max(0);
        let s = if n > 0 { format!("{name}:{n}") } else { name };
        let policy =
            skiff_runtime::container::RestartPolicy::parse(if s.is_empty() { "no" } else { &s })
                .map_err(ApiError::bad_request)?;
        crate::stats::set_restart_policy(&api.containers, &e.id, policy).await?;
    }
    warnings.retain(|w| !w.is_empty());
    ok_json(&j!({ "Warnings": warnings }))
}

async fn prune(api: &DockerApi, req: Req) -> Result<Resp> {
    let f = req.query.filters()?;
    f.only(&["until", "label", "label!"])?;
    let r = crate::prune::containers(&api.containers, &f.to_kv()).await?;
    ok_json(&j!({
        "ContainersDeleted": if r.deleted.is_empty() { Value::Null } else { j!(r.deleted) },
        "SpaceReclaimed": r.space_reclaimed,
    }))
}

// ---- logs, top, stats -------------------------------------------------------------

/// Docker's `since`/`until`: Unix seconds with an optional fraction.
fn unix_nanos(q: Option<&str>, key: &str) -> Result<i64> {
    let Some(s) = q.filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {s:?}")))?;
    let frac = format!("{frac:0<9}");
    let nanos: i64 = frac
        .get(..9)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid value for {key}: {s:?}")))?;
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

fn stream_type(tty: bool, v: ApiVersion) -> &'static str {
    if !tty && v >= ApiVersion(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    }
}

fn logs(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let q = &req.query;
    let (stdout, stderr) = (q.bool("stdout"), q.bool("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match q.get("tail") {
        None | Some("" | "all") => -1,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid value for tail: {t:?}")))?,
    };
    let e = api.containers.get(id)?;
    let tty = e.record().config.tty;
    let timestamps = q.bool("timestamps");
    let r = skiff_proto::engine::LogsRequest {
        id: e.id.clone(),
        follow: q.bool("follow"),
        tail,
        timestamps,
        since_unix_nanos: unix_nanos(q.get("since"), "since")?,
        until_unix_nanos: unix_nanos(q.get("until"), "until")?,
        stdout,
        stderr,
    };
    let mut chunks = crate::logs::stream(e, r).map_err(AgentError::from)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                c = chunks.recv() => c,
                // The client went away while nothing new came: stop following.
                _ = tx.closed() => return,
            };
            let Some(c) = c else { return };
            let mut data = Vec::with_capacity(c.data.len() + 32);
            if timestamps {
                let t = chrono::DateTime::from_timestamp_nanos(c.time_unix_nanos);
                data.extend_from_slice(rfc3339(t).as_bytes());
                data.push(b' ');
            }
            data.extend_from_slice(&c.data);
            let out = if tty {
                Bytes::from(data)
            } else {
                mux_frame(c.stream as u8, &data)
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    Ok(stream_response(
        StatusCode::OK,
        stream_type(tty, req.version),
        rx,
    ))
}

async fn top(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let args: Vec<String> = req
        .query
        .get("ps_args")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let (titles, rows) = crate::inspect::top(&api.containers, id, args).await?;
    ok_json(&j!({"Titles": titles, "Processes": rows}))
}

/// Docker's stats document from two samples (`pre` the earlier one).
fn stats_doc(
    e: &Entry,
    cur: Option<&skiff_runtime::cgroup::stats::Sample>,
    pre: Option<&skiff_runtime::cgroup::stats::Sample>,
    read: chrono::DateTime<chrono::Utc>,
    preread: Option<chrono::DateTime<chrono::Utc>>,
) -> Value {
    let cpu = |s: Option<&skiff_runtime::cgroup::stats::Sample>| match s {
        Some(s) => j!({
            "cpu_usage": {
                "total_usage": s.cpu_total_ns,
                "usage_in_kernelmode": 0,
                "usage_in_usermode": s.cpu_total_ns,
            },
            "system_cpu_usage": s.system_ns,
            "online_cpus": s.online_cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
        None => j!({
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
    };
    let blk = |s: &skiff_runtime::cgroup::stats::Sample| {
        j!([
            {"major": 0, "minor": 0, "op": "read", "value": s.blk_read},
            {"major": 0, "minor": 0, "op": "write", "value": s.blk_write},
        ])
    };
    j!({
        "read": rfc3339(read),
        "preread": preread.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "name": format!("/{}", e.name()),
        "id": e.id,
        "num_procs": 0,
        "pids_stats": {"current": cur.map(|s| s.pids).unwrap_or(0)},
        "blkio_stats": {
            "io_service_bytes_recursive": cur.map(blk).unwrap_or(Value::Null),
            "io_serviced_recursive": null,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null,
        },
        "cpu_stats": cpu(cur),
        "precpu_stats": cpu(pre),
        "memory_stats": match cur {
            Some(s) => j!({"usage": s.mem_usage, "limit": s.mem_limit, "stats": {}}),
            None => j!({}),
        },
        "networks": match cur {
            Some(s) => j!({"eth0": {
                "rx_bytes": s.net_rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
                "tx_bytes": s.net_tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0,
            }}),
            None => Value::Null,
        },
    })
}

fn stats(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let stream = req.query.bool_or("stream", true);
    let one_shot = req.query.bool("one-shot");
    if one_shot && stream {
        return Err(ApiError::bad_request(
            "cannot have stream=true and one-shot=true",
        ));
    }
    let e = api.containers.get(id)?;
    let containers = api.containers.clone();
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let host_mem = crate::stats::host_memory();
        let sample = || crate::stats::sample_with(&containers, &e, host_mem);
        let mut pre = sample();
        let mut preread = chrono::Utc::now();
        if one_shot {
            let doc = stats_doc(&e, pre.as_ref(), None, preread, None);
            let _ = tx.send(line(&doc)).await;
            return;
        }
        // Docker's first answer already carries a previous sample (CPU % needs two).
        tokio::time::sleep(Duration::from_millis(if stream { 200 } else { 500 })).await;
        loop {
            if containers.get(&e.id).is_err() {
                return;
            }
            let cur = sample();
            let now = chrono::Utc::now();
            let doc = stats_doc(&e, cur.as_ref(), pre.as_ref(), now, Some(preread));
            if tx.send(line(&doc)).await.is_err() || !stream {
                return;
            }
            pre = cur;
            preread = now;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(stream_response(StatusCode::OK, "application/json", rx))
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

// ---- attach, resize -----------------------------------------------------------------

/// The default detach sequence, ctrl-p ctrl-q.
const DEFAULT_DETACH: &[u8] = &[16, 17];

/// `detachKeys` (`ctrl-p,ctrl-q`, `a`, `ctrl-@`...) as bytes.
fn detach_keys(s: &str) -> Result<Vec<u8>> {
    s.split(',')
        .map(|k| {
            let k = k.trim();
            if let Some(c) = k.strip_prefix("ctrl-") {
                let b = c.as_bytes();
                if b.len() == 1 {
                    let ch = b[0].to_ascii_lowercase();
                    return match ch {
                        b'a'..=b'z' => Ok(ch - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' => Ok(27),
                        b'\\' => Ok(28),
                        b']' => Ok(29),
                        b'^' => Ok(30),
                        b'_' => Ok(31),
                        _ => Err(ApiError::bad_request(format!(
                            "Invalid detach keys ({s}) provided"
                        ))),
                    };
                }
            } else if k.len() == 1 {
                return Ok(k.as_bytes()[0]);
            }
            Err(ApiError::bad_request(format!(
                "Invalid detach keys ({s}) provided"
            )))
        })
        .collect()
}

/// What an attach client asked for.
#[derive(Clone)]
struct AttachOpts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    /// Docker's 8-byte frames around output (a hijacked attach without a tty).
    mux: bool,
    /// The end of the client's input is a half-close that closes the container's stdin
    /// (a hijacked connection); else it is the client leaving (a WebSocket).
    half_close: bool,
    detach: Vec<u8>,
}

/// How an attach talks to its client.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Transport {
    /// `POST /containers/{id}/attach`: the hijacked connection carries the stream.
    Hijack,
    /// `GET /containers/{id}/attach/ws`: WebSocket messages (RFC 6455) carry the raw,
    /// never multiplexed, output; the client's messages go to stdin.
    WebSocket { binary: bool },
}

/// `Sec-WebSocket-Accept` for a WebSocket handshake request, or dockerd's 400 when the
/// request is not one.
fn ws_accept_key(h: &hyper::HeaderMap) -> Result<String> {
    let has = |name: hyper::header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(hyper::header::UPGRADE, "websocket") || !has(hyper::header::CONNECTION, "upgrade") {
        return Err(ApiError::bad_request(
            "not a WebSocket handshake: attach/ws needs Upgrade: websocket and Connection: Upgrade",
        ));
    }
    let version = h
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if version.trim() != "13" {
        return Err(ApiError::bad_request(format!(
            "unsupported WebSocket version {version:?}: only 13 is served"
        )));
    }
    let key = h
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("not a WebSocket handshake: no Sec-WebSocket-Key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key))
}

/// `POST /containers/{id}/attach` and `GET /containers/{id}/attach/ws`: one engine path
/// (the shim connection of a running container, or a parked attach that the start
/// hands its connection), two ways of carrying it to the client.
async fn attach(api: &DockerApi, id: &str, req: Req, transport: Transport) -> Result<Resp> {
    let q = &req.query;
    let e = api.containers.get(id)?;
    let rec = e.record();
    // The handshake is checked once the container is known (dockerd answers 404 first)
    // and before anything is parked.
    let ws_accept = match transport {
        Transport::WebSocket { .. } => Some(ws_accept_key(&req.headers)?),
        Transport::Hijack => None,
    };
    // dockerd's WebSocket attach reads stdin/stdout/stderr from the query from API 1.42;
    // before, it attached all three.
    let all = matches!(transport, Transport::WebSocket { .. }) && req.version < ApiVersion(1, 42);
    let opts = AttachOpts {
        stdin: all || q.bool("stdin"),
        stdout: all || q.bool("stdout"),
        stderr: all || q.bool("stderr"),
        tty: rec.config.tty,
        mux: !rec.config.tty && transport == Transport::Hijack,
        half_close: transport == Transport::Hijack,
        detach: match q.get("detachKeys").filter(|k| !k.is_empty()) {
            Some(k) => detach_keys(k)?,
            None => DEFAULT_DETACH.to_vec(),
        },
    };
    let stream = q.bool("stream");
    let with_logs = q.bool("logs");
    // Logs first (`attach --logs`), as they are now.
    let mut backlog = Vec::new();
    if with_logs {
        let r = skiff_proto::engine::LogsRequest {
            id: e.id.clone(),
            tail: -1,
            stdout: opts.stdout,
            stderr: opts.stderr,
            ..Default::default()
        };
        if let Ok((_, chunks)) = crate::logs::LogCursor::open(&e.paths.log(), &r) {
            for c in chunks {
                backlog.push(frame_out(&opts, c.stream as u8, &c.data));
            }
        }
    }
    // The shim connection now (a running container) or at its start (parked).
    let conn: Option<oneshot::Receiver<UnixStream>> = if !stream {
        None
    } else if e.state().status == Status::Running {
        let (_, c) = api.containers.attach(&e.id, opts.stdin).await?;
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(c);
        Some(rx)
    } else if e.state().status == Status::Paused {
        return Err(ApiError::conflict(format!(
            "You cannot attach to a paused container, unpause it first ({})",
            e.id
        )));
    } else {
        let (tx, rx) = oneshot::channel();
        api.attach.park(
            &e.id,
            Parked {
                stdin: opts.stdin,
                tx,
            },
        );
        Some(rx)
    };
    let upgrade = req.upgrade;
    let id = e.id.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(err) => {
                tracing::debug!(container_id = %id, error = %err, "attach: no upgrade");
                return;
            }
        };
        match transport {
            Transport::Hijack => serve_attach(io, backlog, conn, opts).await,
            Transport::WebSocket { binary } => {
                use tokio_tungstenite::tungstenite::protocol::Role;
                let ws =
                    tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None)
                        .await;
                // The attach runs on a byte pipe; the pump turns its ends into messages.
                let (ours, theirs) = tokio::io::duplex(64 << 10);
                let pump = tokio::spawn(ws_pump(ws, theirs, binary));
                serve_attach(ours, backlog, conn, opts).await;
                let _ = pump.await;
            }
        }
    });
    let mut r = hyper::Response::new(full(Vec::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    match ws_accept {
        Some(accept) => {
            h.insert(
                hyper::header::UPGRADE,
                HeaderValue::from_static("websocket"),
            );
            h.insert(
                hyper::header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&accept)
                    .map_err(|err| ApiError::internal(format!("websocket accept key: {err}")))?,
            );
        }
        None => {
            h.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(stream_type(rec.config.tty, req.version)),
            );
            h.insert(hyper::header::UPGRADE, HeaderValue::from_static("tcp"));
        }
    }
    Ok(r)
}

/// Serves one attach on the client's byte stream: the log backlog, then (once the shim
/// connection is there) the relay; closes the client's side at the end.
async fn serve_attach<S>(
    io: S,
    backlog: Vec<Bytes>,
    conn: Option<oneshot::Receiver<UnixStream>>,
    opts: AttachOpts,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut crd, mut cwr) = tokio::io::split(io);
    for b in backlog {
        if cwr.write_all(&b).await.is_err() {
            return;
        }
    }
    // Wait for the shim connection (the start, when parked); what the client sends
    // meanwhile is kept for the container's stdin.
    let (mut early, mut eof) = (Vec::new(), false);
    let conn = match conn {
        Some(mut rx) => {
            let mut buf = vec![0u8; 8192];
            loop {
                tokio::select! {
                    c = &mut rx => break c.ok(),
                    n = crd.read(&mut buf), if !eof => match n {
                        Ok(0) | Err(_) => eof = true,
                        Ok(n) => early.extend_from_slice(&buf[..n]),
                    },
                }
            }
        }
        None => None,
    };
    if let Some(conn) = conn {
        relay(conn, &mut crd, &mut cwr, &opts, early, eof).await;
    }
    let _ = cwr.shutdown().await;
}

/// Carries a byte pipe over a WebSocket: each read of the attach's output goes out as
/// one message (binary, or text for clients before API 1.28), each message received
/// goes to the attach's input. The client's Close (or a broken connection) ends the
/// input, which detaches; the end of the output sends our Close.
async fn ws_pump<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    pipe: tokio::io::DuplexStream,
    binary: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut sink, mut msgs) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let output = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let msg = if binary {
                Message::binary(buf[..n].to_vec())
            } else {
                Message::text(String::from_utf8_lossy(&buf[..n]).into_owned())
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    let input = async {
        while let Some(m) = msgs.next().await {
            let data = match m {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_bytes()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        // The attach ends (a detach); its output's end closes the WebSocket.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
    // The closing handshake: the client answers our Close with its own; dropping the
    // connection before would break its reply (websocket-client raises on it).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = msgs.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Output as the client reads it: Docker's 8-byte frames when multiplexed, else raw.
fn frame_out(o: &AttachOpts, stream: u8, data: &[u8]) -> Bytes {
    if o.mux {
        mux_frame(stream, data)
    } else {
        Bytes::copy_from_slice(data)
    }
}

/// Relays between the client's connection and the shim until the container exits,
/// the client detaches (detach keys) or goes away. The client's half-close of its input
/// closes the container's stdin (see [`AttachOpts::half_close`]).
async fn relay<R, W>(
    conn: UnixStream,
    crd: &mut R,
    cwr: &mut W,
    o: &AttachOpts,
    early: Vec<u8>,
    early_eof: bool,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (mut srd, mut swr) = conn.into_split();
    let output = async {
        while let Ok(Some(f)) = read_frame(&mut srd).await {
            let out = match f {
                Frame::Stdout(d) if o.stdout => frame_out(o, 1, &d),
                Frame::Stderr(d) if o.stderr => frame_out(o, 2, &d),
                Frame::Exit { .. } => break,
                _ => continue,
            };
            if cwr.write_all(&out).await.is_err() || cwr.flush().await.is_err() {
                break;
            }
        }
    };
    let input = async {
        let mut detach = Detach {
            keys: if o.tty { o.detach.clone() } else { Vec::new() },
            matched: 0,
        };
        let mut buf = vec![0u8; 32 << 10];
        let mut data = early;
        let mut eof = early_eof;
        loop {
            if o.stdin && !data.is_empty() {
                let (send, detached) = detach.feed(&data);
                if !send.is_empty() && write_frame(&mut swr, &Frame::Stdin(send)).await.is_err() {
                    return;
                }
                if detached {
                    return;
                }
            }
            if eof {
                if !o.half_close {
                    // A WebSocket's Close is the client leaving: a detach, the
                    // container's stdin stays open (dockerd's, without StdinOnce).
                    return;
                }
                if o.stdin {
                    let _ = write_frame(&mut swr, &Frame::CloseStdin).await;
                }
                // Keep relaying output: a half-close is not a detach.
                std::future::pending::<()>().await;
                return;
            }
            data = match crd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    eof = true;
                    Vec::new()
                }
                Ok(n) => buf[..n].to_vec(),
            };
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
}

/// Watches client input for the detach sequence, which may be split across reads.
struct Detach {
    keys: Vec<u8>,
    matched: usize,
}

impl Detach {
    /// The bytes to pass on, and whether the sequence completed (detach).
    fn feed(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut send = Vec::with_capacity(data.len());
        for &b in data {
            if !self.keys.is_empty() && b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (send, true);
                }
                continue;
            }
            send.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if !self.keys.is_empty() && b == self.keys[0] {
                self.matched = 1;
                continue;
            }
            send.push(b);
        }
        (send, false)
    }
}

async fn resize(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let h = req.query.int("h")?.unwrap_or(0);
    let w = req.query.int("w")?.unwrap_or(0);
    let (Ok(h), Ok(w)) = (u16::try_from(h), u16::try_from(w)) else {
        return Err(ApiError::bad_request(
            "resize: h and w must be between 0 and 65535",
        ));
    };
    api.containers.resize(id, w, h).await?;
    Ok(json(StatusCode::OK, &j!({})))
}

// ---- archive, export, changes ---------------------------------------------------------

fn path_param(req: &Req) -> Result<String> {
    req.query
        .get("path")
        .filter(|p| !p.is_empty())
        .map(String::from)
        .ok_or_else(|| ApiError::bad_request("the path parameter (?path=) is required"))
}

fn stat_header(st: &archive::PathStat) -> Result<HeaderValue> {
    use base64::Engine;
    let raw = serde_json::to_vec(st).map_err(|e| ApiError::internal(e.to_string()))?;
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(raw))
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn archive_get(api: &DockerApi, id: &str, req: Req) -> Result<Resp> {
    let path = path_param(&req)?;
    let e = api.containers.get(id)?;
    let head = req.method == hyper::Method::HEAD;
    let containers = api.containers.clone();
    let e2 = e.clone();
    let p2 = path.clone();
    let (st, view) = tokio::task::spawn_blocking(move || {
        let view = archive::RootView::open(&containers, &e2, false)?;
        let st = archive::stat(&view, &e2, &p2)?;
        Ok::<_, AgentError>((st, view))
    })
    .await??;
    let header = stat_header(&st)?;
    let mut r = if head {
        drop(view);
        hyper::Response::new(full(Vec::new()))
    } else {
        let mut chunks = archive::tar_path(view, &e, &path)?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(c) = chunks.recv().await {
                match c {
                    Ok(b) => {
                        if tx.send(Bytes::from(b)).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "archive: tar failed");
                        return;
                    }
                }
            }
        });
        stream_response(StatusCode::OK, "application/x-tar", rx)
    };
    r.headers_mut()
        .insert("x-docker-container-path-stat", header);
    if head {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        );
    }
    Ok(r)
}

async fn archive_put(api: &DockerApi, id: &str, mut req: Req) -> Result<Resp> {
    let path = path_param(&req)?;
    let e = api.containers.get(id)?;
    // A stopped container's overlay is mounted for the copy: no start meanwhile.
    let _op = if e.state().is_running() {
        None
    } else {
        Some(e.op.lock().await)
    };
    let rx = req.body_chunks();
    let containers = api.containers.clone();
    let e2 = e.clone();
    tokio::task::spawn_blocking(move || {
        let view = archive::RootView::open(&containers, &e2, true)?;
        archive::untar_at(
            &view,
            &e2,
            &path,
            skiff_runtime::image::registry::ChannelReader::new(rx),
        )
    })
    .await??;
    status_only(StatusCode::OK)
}

fn export(api: &DockerApi, id: &str) -> Result<Resp> {
    let mut chunks = crate::build::export(&api.containers, id)?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(Ok(c)) = chunks.recv().await {
            if tx.send(Bytes::from(c.data)).await.is_err() {
                return;
            }
        }
    });
    Ok(stream_response(StatusCode::OK, "application/x-tar", rx))
}

async fn changes(api: &DockerApi, id: &str) -> Result<Resp> {
    let e = api.containers.get(id)?;
    let list = tokio::task::spawn_blocking(move || archive::changes(&e)).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|c| j!({"Path": c.path, "Kind": c.kind}))
        .collect();
    ok_json(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> bm::ContainerCreateBody {
        serde_json::from_value(v).expect("body")
    }

    #[test]
    fn create_body_becomes_cli_strings() {
        let (c, exposed, _) = to_proto_config(body(j!({
            "Image": "busybox",
            "Cmd": ["sh", "-c", "true"],
            "Entrypoint": null,
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {
                "Binds": ["/tmp/x:/x:ro"],
                "Mounts": [
                    {"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": true},
                    {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024, "Mode": 1023}}
                ],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
                "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
                "Tmpfs": {"/run": "size=64k"},
                "NetworkMode": "default",
                "Memory": 67108864
            },
            "NetworkingConfig": {"EndpointsConfig": {"net1": {"Aliases": ["web"]}}}
        })))
        .expect("convert");
        assert_eq!(c.image, "busybox");
        assert!(!c.entrypoint_set);
        assert_eq!(exposed, vec!["80/tcp"]);
        assert_eq!(
            c.mounts,
            vec![
                "type=volume,source=data,target=/data,readonly",
                "type=tmpfs,target=/t,tmpfs-size=1024,tmpfs-mode=1777"
            ]
        );
        let net = c.net.expect("net");
        assert_eq!(net.publish, vec!["127.0.0.1::53/udp", "8080:80/tcp"]);
        assert_eq!(net.aliases, vec!["web"]);
        assert_eq!(c.network_mode, "");
        let rp = c.restart_policy.expect("policy");
        assert_eq!(
            (rp.name.as_str(), rp.maximum_retry_count),
            ("on-failure", 3)
        );
        let res = c.resources.expect("res");
        assert_eq!(res.ulimits, vec!["nofile=100:200"]);
        assert_eq!(res.memory, 64 << 20);
        assert_eq!(c.log_opts, vec!["max-size=1m"]);
        assert_eq!(c.tmpfs, vec!["/run:size=64k"]);
    }

    #[test]
    fn create_passes_init_and_devices_through() {
        let (c, _, _) = to_proto_config(body(j!({"Image": "b", "HostConfig": {
            "Init": true,
            "Devices": [
                {"PathOnHost": "/dev/null", "PathInContainer": "/dev/mydev", "CgroupPermissions": "rw"},
                {"PathOnHost": "/dev/zero", "PathInContainer": "", "CgroupPermissions": ""}
            ],
            "DeviceCgroupRules": ["c 1:3 r"]
        }})))
        .expect("ok");
        assert!(c.init);
        assert_eq!(
            c.devices,
            vec!["/dev/null:/dev/mydev:rw", "/dev/zero:/dev/zero:rwm"]
        );
        assert_eq!(c.device_cgroup_rules, vec!["c 1:3 r"]);
        let cfg = crate::request::to_config(c).expect("config");
        assert_eq!(cfg.devices[0].path_in_container, "/dev/mydev");
        assert_eq!(cfg.devices[1].cgroup_permissions, "rwm");
    }

    #[test]
    fn create_refuses_what_skiff_cannot_do() {
        let err = |v| to_proto_config(body(v)).expect_err("refused").message;
        assert!(
            err(j!({"Image": "b", "HostConfig": {"LogConfig": {"Type": "syslog"}}}))
                .contains("syslog")
        );
        assert!(
            err(j!({"Image": "b", "HostConfig": {"DeviceRequests": [{"Count": -1}]}}))
                .contains("DeviceRequests")
        );
        assert!(
            err(j!({"Image": "b", "HostConfig": {"Devices": [{"PathOnHost": "dev/kvm"}]}}))
                .contains("Devices")
        );
        assert!(err(j!({"HostConfig": {}})).contains("Image"));
        let (c, _, _) = to_proto_config(body(j!({"Image": "b", "Entrypoint": [""]}))).expect("ok");
        assert!(c.entrypoint_set && c.entrypoint.is_empty());
    }

    #[test]
    fn websocket_handshake_is_checked() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(
            ws_accept_key(&h).expect_err("no headers").status,
            StatusCode::BAD_REQUEST
        );
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        assert!(ws_accept_key(&h).is_err(), "no key");
        // RFC 6455's own example.
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(
            ws_accept_key(&h).expect("handshake"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert!(ws_accept_key(&h).is_err(), "old version");
    }

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(detach_keys("ctrl-p,ctrl-q").expect("keys"), vec![16, 17]);
        assert_eq!(detach_keys("a,ctrl-@").expect("keys"), vec![b'a', 0]);
        assert!(detach_keys("ctrl-").is_err());
    }

    #[test]
    fn detach_sequence_is_found_across_reads() {
        let mut d = Detach {
            keys: vec![16, 17],
            matched: 0,
        };
        assert_eq!(d.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(d.feed(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(d.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(d.feed(b"\x11rest"), (Vec::new(), true));
        let mut none = Detach {
            keys: vec![],
            matched: 0,
        };
        assert_eq!(none.feed(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }

    #[test]
    fn since_takes_fractions() {
        assert_eq!(
            unix_nanos(Some("12.5"), "since").expect("t"),
            12_500_000_000
        );
        assert_eq!(unix_nanos(Some("3"), "since").expect("t"), 3_000_000_000);
        assert!(unix_nanos(Some("x"), "since").is_err());
        assert_eq!(unix_nanos(None, "since").expect("t"), 0);
    }
}
