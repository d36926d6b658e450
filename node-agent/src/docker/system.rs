//! Docker API: `/_ping`, `/version`, `/info`, `/events`, `/system/df`, `/auth`.

use super::{ok_json, ApiError, DockerApi, Req, Resp, Result, API_VERSION, MIN_API_VERSION};
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_proto::engine::{Event, EventsRequest};

/// What `Server` headers and `/version` call this engine.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(super) async fn route(api: &DockerApi, req: Req) -> Result<Resp> {
    let segs: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => {
            Ok(ping(&req.method, super::swarm::ping_state(api)))
        }
        (&Method::GET, ["version"]) => ok_json(&version()),
        (&Method::GET, ["info"]) => info(api).await,
        (&Method::GET, ["events"]) => events(api, &req),
        (&Method::GET, ["system", "df"]) => df(api, &req).await,
        (&Method::POST, ["auth"]) => auth(req).await,
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

/// `_ping`: `OK` with the headers clients negotiate from (API version, OS, swarm state).
fn ping(method: &Method, swarm: &'static str) -> Resp {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut r = hyper::Response::new(super::full(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("builder-version", HeaderValue::from_static("1"));
    // The CLI offers its swarm commands on a manager only, as with dockerd.
    h.insert("swarm", HeaderValue::from_static(swarm));
    r
}

/// `/version`, in dockerd's shape; the engine component is Skiff.
pub fn version() -> serde_json::Value {
    let v = crate::sysinfo::version();
    let arch = go_arch(&v.arch);
    json!({
        "Platform": { "Name": format!("Skiff {}", v.version) },
        "Components": [{
            "Name": "Engine",
            "Version": v.version,
            "Details": {
                "ApiVersion": API_VERSION.to_string(),
                "Arch": arch,
                "BuildTime": "",
                "Experimental": "false",
                "GitCommit": v.git_commit,
                "GoVersion": "",
                "KernelVersion": v.kernel_version,
                "MinAPIVersion": MIN_API_VERSION.to_string(),
                "Os": v.os,
            }
        }, {
            "Name": "skiff-shim",
            "Version": v.version,
            "Details": { "Runtime": v.runtime }
        }],
        "Version": v.version,
        "ApiVersion": API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        "GitCommit": v.git_commit,
        "GoVersion": "",
        "Os": v.os,
        "Arch": arch,
        "KernelVersion": v.kernel_version,
        "BuildTime": "",
    })
}

/// Go's names for architectures (`amd64`, `arm64`), which Docker's clients expect.
pub fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

async fn info(api: &DockerApi) -> Result<Resp> {
    let list = api.containers.list();
    let running = list.iter().filter(|e| e.state().is_running()).count() as u32;
    let images = api.images.list()?.len() as u32;
    let i = crate::sysinfo::info(&api.containers.cfg, list.len() as u32, running, images);
    ok_json(&json!({
        "ID": i.name,
        "Containers": i.containers,
        "ContainersRunning": i.running,
        "ContainersPaused": i.paused,
        "ContainersStopped": i.stopped,
        "Images": i.images,
        "Driver": i.storage_driver,
        "DriverStatus": [],
        "CgroupDriver": i.cgroup_driver,
        "CgroupVersion": if i.cgroup_version == "2" { "2" } else { "1" },
        "KernelVersion": i.kernel_version,
        "OperatingSystem": i.operating_system,
        "OSType": "linux",
        "Architecture": i.architecture,
        "NCPU": i.ncpu,
        "MemTotal": i.mem_total,
        "DockerRootDir": i.root_dir,
        "Name": i.name,
        "ServerVersion": i.server_version,
        "Warnings": i.warnings,
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Swarm": swarm_info(api, api.cluster.as_deref()),
        "Runtimes": { "runc": { "path": "skiff shim" } },
        "DefaultRuntime": "runc",
        "Labels": [],
        "Debug": false,
        "LoggingDriver": "json-file",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [] , "Mirrors": []},
        "Plugins": { "Volume": ["local"], "Network": ["bridge", "host", "null", "overlay"], "Log": ["json-file"] },
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Isolation": "",
        "InitBinary": "",
        "ExperimentalBuild": false,
    }))
}

/// `info`'s Swarm section from this node's cluster membership: Skiff's cluster is the
/// swarm (managed with `skiff cluster`/`skiff node`), so a member says it is active.
pub(super) fn swarm_info(
    api: &DockerApi,
    cluster: Option<&skiff_controller::cluster::Cluster>,
) -> Value {
    use skiff_controller::state::Role;
    let Some(c) = cluster else {
        return json!({
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null,
        });
    };
    let me = c.node_state();
    let host = |addr: &str| {
        addr.parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string())
    };
    let own_addr = c
        .cfg
        .advertise_addr
        .clone()
        .or_else(|| c.listen_addr().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut doc = json!({
        "NodeID": me.node_id,
        "NodeAddr": host(&own_addr),
        "LocalNodeState": "active",
        "ControlAvailable": false,
        "Error": "",
        "RemoteManagers": me
            .managers
            .iter()
            .filter(|(_, _, addr)| !addr.is_empty())
            .map(|(_, id, addr)| json!({"NodeID": id, "Addr": addr}))
            .collect::<Vec<_>>(),
    });
    // A manager reads the replicated state: node counts and the cluster's identity.
    let Some(h) = c.raft().filter(|_| me.role == Role::Manager) else {
        return doc;
    };
    h.store().read(|sm| {
        let nodes: Vec<_> = sm.nodes().collect();
        let managers: Vec<_> = nodes.iter().filter(|n| n.role == Role::Manager).collect();
        if let Some(n) = sm.node(&me.node_id) {
            if !n.addr.is_empty() {
                doc["NodeAddr"] = json!(host(&n.addr));
            }
        }
        let created = nodes
            .iter()
            .map(|n| n.created_at.as_str())
            .filter(|s| !s.is_empty())
            .min()
            .unwrap_or_default()
            .to_string();
        doc["ControlAvailable"] = json!(true);
        doc["Nodes"] = json!(nodes.len());
        doc["Managers"] = json!(managers.len());
        doc["RemoteManagers"] = json!(managers
            .iter()
            .filter(|n| !n.addr.is_empty())
            .map(|n| json!({"NodeID": n.id, "Addr": n.addr}))
            .collect::<Vec<_>>());
        // Overlay subnets come from the agent's --default-addr-pool, else Swarm's default.
        let pools: Vec<String> = if api.containers.cfg.network.overlay_pools.is_empty() {
            skiff_controller::orchestrator::runner::AllocConfig::default().pools
        } else {
            api.containers.cfg.network.overlay_pools.clone()
        }
        .iter()
        .map(|p| p.to_string())
        .collect();
        // The CLI prints Cluster.Spec's fields for a manager; Skiff's values where it has
        // them, Swarm's defaults otherwise.
        doc["Cluster"] = json!({
            "ID": sm.meta().cluster_id,
            "Version": {"Index": 0},
            "CreatedAt": created,
            "UpdatedAt": created,
            "Spec": {
                "Name": "default",
                "Labels": {},
                "Orchestration": {"TaskHistoryRetentionLimit": 5},
                "Raft": {"SnapshotInterval": c.cfg.snapshot_every, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500, "ElectionTick": 10, "HeartbeatTick": 1},
                "Dispatcher": {"HeartbeatPeriod": c.cfg.heartbeat_period.as_nanos() as u64},
                "CAConfig": {"NodeCertExpiry": c.cfg.cert_validity.as_nanos() as u64},
                "TaskDefaults": {},
                "EncryptionConfig": {"AutoLockManagers": false},
            },
            "TLSInfo": {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
            "RootRotationInProgress": false,
            "DefaultAddrPool": pools,
            "SubnetSize": skiff_controller::orchestrator::netalloc::DEFAULT_SUBNET_SIZE,
            "DataPathPort": api.containers.networks.vxlan_port(),
        });
        doc
    })
}

/// A point in time as the events endpoint takes it, in unix nanoseconds: the CLI's
/// `SECONDS[.NANOS]`, RFC 3339, or a Go duration (`10m`, `1h30m`, `0s`) before now.
pub(crate) fn parse_event_time(v: &str, now: i64) -> Result<i64> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(0);
    }
    let bad = || {
        ApiError::bad_request(format!(
            "invalid time value {v:?}: want unix seconds, RFC 3339 or a duration such as 10m"
        ))
    };
    if let Some((secs, frac)) = v.split_once('.') {
        if let (Ok(s), true) = (
            secs.parse::<i64>(),
            frac.chars().all(|c| c.is_ascii_digit()),
        ) {
            let mut f = frac.to_string();
            f.truncate(9);
            while f.len() < 9 {
                f.push('0');
            }
            let n: i64 = f.parse().map_err(|_| bad())?;
            return Ok(s.saturating_mul(1_000_000_000).saturating_add(n));
        }
    }
    if let Ok(s) = v.parse::<i64>() {
        return Ok(s.saturating_mul(1_000_000_000));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return t.timestamp_nanos_opt().ok_or_else(bad);
    }
    go_duration_nanos(v).map(|d| now - d).ok_or_else(bad)
}

/// Go's `time.ParseDuration` (`1h30m`, `90s`, `1.5h`, `500ms`, signed), on the builder's
/// parser of Docker's durations.
fn go_duration_nanos(v: &str) -> Option<i64> {
    let (neg, rest) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let d = if rest == "0" {
        0
    } else {
        skiff_runtime::build::dockerfile::parse_duration(rest)?
    };
    Some(if neg { -d } else { d })
}

/// An engine event in Docker's shape. The legacy `status`/`id`/`from` fields exist
/// only for container and image events, as dockerd sends them.
pub(crate) fn docker_event(ev: &Event) -> Value {
    let mut doc = json!({
        "Type": ev.r#type,
        "Action": ev.action,
        "Actor": {"ID": ev.actor_id, "Attributes": ev.attributes},
        "scope": if matches!(ev.r#type.as_str(), "service" | "node" | "secret" | "config") { "swarm" } else { "local" },
        "time": ev.time_unix_nanos.div_euclid(1_000_000_000),
        "timeNano": ev.time_unix_nanos,
    });
    if matches!(ev.r#type.as_str(), "container" | "image") {
        doc["status"] = json!(ev.action);
        doc["id"] = json!(ev.actor_id);
        if let Some(img) = ev
            .attributes
            .get("image")
            .filter(|_| ev.r#type == "container")
        {
            doc["from"] = json!(img);
        }
    }
    doc
}

/// `GET /events`: the replay since `since`, then live events (one JSON object per line,
/// each sent as it happens) until `until` or until the client leaves.
fn events(api: &DockerApi, req: &Req) -> Result<Resp> {
    let now = crate::events::now_nanos();
    let since = parse_event_time(req.query.get("since").unwrap_or_default(), now)?;
    let until = parse_event_time(req.query.get("until").unwrap_or_default(), now)?;
    let f = req.query.filters()?;
    f.only(&[
        "type",
        "event",
        "action",
        "container",
        "image",
        "network",
        "volume",
        "label",
        "scope",
        "daemon",
        "node",
        "service",
        "plugin",
        "secret",
        "config",
    ])?;
    // `scope` and `daemon` say nothing here: every event is this daemon's, and the
    // scope is implied by the type (swarm for services and nodes).
    let scopes: Vec<String> = f.get("scope").to_vec();
    let filters: Vec<String> = f
        .to_kv()
        .into_iter()
        .filter(|kv| !kv.starts_with("scope=") && !kv.starts_with("daemon="))
        .collect();
    // `until` in the past with no `since`: Docker replays what it kept up to then.
    let since = if since == 0 && until > 0 && until <= now {
        1
    } else {
        since
    };
    let mut rx = crate::events::stream(
        &api.events,
        api.cluster.clone(),
        EventsRequest {
            since_unix_nanos: since,
            until_unix_nanos: until,
            filters,
        },
    );
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = tx.closed() => return,
            };
            let Some(Ok(ev)) = ev else { return };
            let doc = docker_event(&ev);
            if !scopes.is_empty() && !scopes.iter().any(|s| doc["scope"] == json!(s)) {
                continue;
            }
            let mut line = doc.to_string().into_bytes();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
    });
    Ok(super::stream_response(
        StatusCode::OK,
        "application/json",
        out,
    ))
}

/// `GET /system/df` (`?type=container|image|volume|build-cache`, repeatable): the
/// engine's `prune::df` measures; this adds the fields of Docker's summaries.
async fn df(api: &DockerApi, req: &Req) -> Result<Resp> {
    let types = req.query.all("type");
    for t in &types {
        if !matches!(*t, "container" | "image" | "volume" | "build-cache") {
            return Err(ApiError::bad_request(format!("unknown object type: {t}")));
        }
    }
    let want = |t: &str| types.is_empty() || types.contains(&t);
    let c = api.containers.clone();
    let (rows, verbose, images) = tokio::task::spawn_blocking(move || -> Result<_> {
        let d = crate::prune::df(&c)?;
        let verbose: Value = serde_json::from_str(&d.verbose_json)
            .map_err(|e| ApiError::internal(format!("df: {e}")))?;
        Ok((d.rows, verbose, c.images.list()?))
    })
    .await??;
    let mut doc = serde_json::Map::new();
    if want("image") {
        let layers = rows
            .iter()
            .find(|r| r.kind == "Images")
            .map_or(0, |r| r.size);
        doc.insert("LayersSize".into(), json!(layers));
        let list: Vec<Value> = verbose["Images"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                let id = i["ID"].as_str().unwrap_or_default();
                let img = images.iter().find(|m| m.id().as_str() == id);
                json!({
                    "Id": id,
                    "ParentId": "",
                    "RepoTags": i["RepoTags"],
                    "RepoDigests": img.map(|m| m.record.repo_digests.clone()).unwrap_or_default(),
                    "Created": img.and_then(|m| m.created()).map_or(0, |t| t.timestamp()),
                    "Size": i["Size"],
                    "SharedSize": 0,
                    "VirtualSize": i["Size"],
                    "Labels": img.and_then(|m| m.config.config.labels.clone()).unwrap_or_default(),
                    "Containers": i["Containers"],
                })
            })
            .collect();
        doc.insert("Images".into(), json!(list));
    }
    if want("container") {
        let list: Vec<Value> = verbose["Containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| {
                let e = api.containers.get(row["ID"].as_str()?).ok()?;
                Some(container_summary(&e, row["SizeRw"].as_u64().unwrap_or(0)))
            })
            .collect();
        doc.insert("Containers".into(), json!(list));
    }
    if want("volume") {
        let list: Vec<Value> = verbose["Volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| {
                let v = api
                    .containers
                    .volumes
                    .store
                    .get(row["Name"].as_str()?)
                    .ok()?;
                let mut j = v.to_docker_json();
                j["UsageData"] = json!({"Size": row["Size"], "RefCount": row["Links"]});
                Some(j)
            })
            .collect();
        doc.insert("Volumes".into(), json!(list));
    }
    if want("build-cache") {
        doc.insert("BuildCache".into(), json!([]));
    }
    ok_json(&doc)
}

/// The fields of Docker's ContainerSummary that `system df -v` prints, with the sizes.
fn container_summary(e: &crate::containers::Entry, size_rw: u64) -> Value {
    let r = e.record();
    let mounts: Vec<Value> = r
        .config
        .mounts
        .iter()
        .map(|m| {
            json!({
                "Type": m.kind.as_str(),
                "Name": m.name,
                "Destination": m.destination,
                "Driver": if m.kind == skiff_runtime::volume::MountKind::Volume { "local" } else { "" },
                "RW": m.rw,
            })
        })
        .collect();
    json!({
        "Id": e.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.config.image,
        "ImageID": r.image_id.to_string(),
        "Command": crate::inspect::command_line(e),
        "Created": r.created.timestamp(),
        "Ports": [],
        "SizeRw": size_rw,
        "SizeRootFs": size_rw,
        "Labels": r.config.labels,
        "State": e.state().status.as_str(),
        "Status": crate::inspect::status_line(e),
        "HostConfig": {"NetworkMode": if r.config.network_mode.is_empty() { "default" } else { r.config.network_mode.as_str() }},
        "NetworkSettings": {"Networks": {}},
        "Mounts": mounts,
    })
}

/// `POST /auth`: checks the credentials against the registry (the agent keeps none;
/// the CLI stores them, as Docker's does).
async fn auth(mut req: Req) -> Result<Resp> {
    let body: bollard_stubs::models::AuthConfig = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let username = body.username.unwrap_or_default();
    let server = body.serveraddress.unwrap_or_default();
    let Some(creds) = crate::registry::creds(&username, &body.password.unwrap_or_default()) else {
        return Err(ApiError::bad_request("username: a username is required"));
    };
    let cfg = crate::registry::registry_config();
    match crate::registry::check_login(&cfg, &server, creds).await {
        Ok(()) => ok_json(&json!({"Status": "Login Succeeded", "IdentityToken": ""})),
        Err(e @ skiff_runtime::image::registry::RegistryError::Unauthorized { .. }) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
        }
        Err(e) => Err(crate::registry::to_agent_error(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_take_the_cli_forms() {
        let now = 2_000_000_000_000_000_000i64;
        assert_eq!(parse_event_time("", now).expect("empty"), 0);
        assert_eq!(
            parse_event_time("1700000000.500000000", now).expect("cli"),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_event_time("1700000000.5", now).expect("short"),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_event_time("1700000000", now).expect("secs"),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_event_time("2023-11-14T22:13:20Z", now).expect("rfc3339"),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_event_time("10m", now).expect("dur"),
            now - 600_000_000_000
        );
        assert_eq!(
            parse_event_time("1h30m", now).expect("dur"),
            now - 5_400_000_000_000
        );
        assert_eq!(parse_event_time("0s", now).expect("zero"), now);
        assert!(parse_event_time("yesterday", now).is_err());
        assert!(parse_event_time("10x", now).is_err());
    }

    #[test]
    fn events_have_docker_shape() {
        let ev = Event {
            r#type: "container".into(),
            action: "start".into(),
            actor_id: "abc".into(),
            attributes: [("image".to_string(), "busybox".to_string())].into(),
            time_unix_nanos: 1_700_000_000_123_456_789,
        };
        let d = docker_event(&ev);
        assert_eq!(d["status"], "start");
        assert_eq!(d["id"], "abc");
        assert_eq!(d["from"], "busybox");
        assert_eq!(d["Actor"]["Attributes"]["image"], "busybox");
        assert_eq!(d["scope"], "local");
        assert_eq!(d["time"], 1_700_000_000);
        assert_eq!(d["timeNano"], 1_700_000_000_123_456_789i64);
        let net = docker_event(&Event {
            r#type: "network".into(),
            action: "create".into(),
            actor_id: "n".into(),
            ..Default::default()
        });
        assert!(net.get("status").is_none() && net.get("from").is_none());
        let svc = docker_event(&Event {
            r#type: "service".into(),
            ..Default::default()
        });
        assert_eq!(svc["scope"], "swarm");
    }
}
