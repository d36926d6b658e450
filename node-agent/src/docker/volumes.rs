//! Docker API: `/volumes` endpoints, on the engine's volume calls (`request::volumes`,
//! `prune::volumes`), the same ones `skiff volume` uses.

use super::{json, no_content, ok_json, ApiError, DockerApi, Req, Resp, Result};
use crate::request::volumes as rpc;
use bollard_stubs::models::VolumeCreateRequest;
use hyper::{Method, StatusCode};
use serde_json::json;
use skiff_proto::engine as pb;

pub(super) async fn route(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let segs: Vec<String> = req.segs.clone();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["volumes"]) => list(api, &req),
        (&Method::POST, ["volumes", "create"]) => create(api, &mut req).await,
        (&Method::POST, ["volumes", "prune"]) => prune(api, &req),
        (&Method::GET, ["volumes", name]) => inspect(api, name),
        (&Method::DELETE, ["volumes", name]) => {
            rpc::remove(&api.containers, name, req.query.bool("force"))?;
            no_content()
        }
        (&Method::PUT, ["volumes", _]) => Err(ApiError::bad_request(
            "volume update is only for cluster volumes, which Skiff does not have",
        )),
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

/// `GET /volumes`: dangling, driver, label, name filters.
fn list(api: &DockerApi, req: &Req) -> Result<Resp> {
    let f = req.query.filters()?;
    f.only(&["dangling", "driver", "label", "label!", "name"])?;
    for v in f.get("dangling") {
        if !matches!(v.as_str(), "true" | "false" | "1" | "0") {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'dangling={v}'"
            )));
        }
    }
    let vols: Vec<_> = rpc::list_matching(&api.containers, &f.to_kv())
        .iter()
        .map(|v| v.to_docker_json())
        .collect();
    ok_json(&json!({ "Volumes": vols, "Warnings": [] }))
}

/// `POST /volumes/create` → 201 with the volume (the existing one when the name is
/// taken, as Docker does).
async fn create(api: &DockerApi, req: &mut Req) -> Result<Resp> {
    let body: VolumeCreateRequest = req.json_or_default().await?;
    let r = create_request(body)?;
    let doc = rpc::create(&api.containers, r)?;
    let v: serde_json::Value = serde_json::from_str(&doc.json)
        .map_err(|e| ApiError::internal(format!("volume document: {e}")))?;
    Ok(json(StatusCode::CREATED, &v))
}

/// Refuses what the local driver cannot do before anything is made.
fn create_request(r: VolumeCreateRequest) -> Result<pb::VolumeCreateRequest> {
    let driver = r.driver.unwrap_or_default();
    if !driver.is_empty() && driver != "local" {
        return Err(ApiError::bad_request(format!(
            "invalid Driver {driver:?}: Skiff has only the local volume driver"
        )));
    }
    if let Some(opts) = r.driver_opts.filter(|o| !o.is_empty()) {
        let mut keys: Vec<_> = opts.into_keys().collect();
        keys.sort();
        return Err(ApiError::bad_request(format!(
            "DriverOpts ({}): Skiff's local volumes are plain directories and take no driver options",
            keys.join(", ")
        )));
    }
    if r.cluster_volume_spec.is_some() {
        return Err(ApiError::bad_request(
            "ClusterVolumeSpec: cluster volumes are not supported by Skiff",
        ));
    }
    Ok(pb::VolumeCreateRequest {
        name: r.name.unwrap_or_default(),
        labels: r.labels.unwrap_or_default().into_iter().collect(),
        driver,
    })
}

fn inspect(api: &DockerApi, name: &str) -> Result<Resp> {
    let v = api
        .containers
        .volumes
        .store
        .get(name)
        .map_err(crate::error::AgentError::from)?;
    ok_json(&v.to_docker_json())
}

/// `POST /volumes/prune`: anonymous volumes only, unless `all=true` (API 1.42+); older
/// clients get every unused volume, as dockerd gives them.
fn prune(api: &DockerApi, req: &Req) -> Result<Resp> {
    let mut f = req.query.filters()?;
    f.only(&["label", "label!", "all"])?;
    let all_filter = f.0.remove("all").unwrap_or_default();
    let all = match all_filter.first().map(String::as_str) {
        None => req.version < super::ApiVersion(1, 42),
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(v) => return Err(ApiError::bad_request(format!("invalid filter 'all={v}'"))),
    };
    let r = crate::prune::volumes(&api.containers, all, &f.to_kv());
    ok_json(&json!({
        "VolumesDeleted": r.deleted,
        "SpaceReclaimed": r.space_reclaimed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_what_the_local_driver_cannot_do() {
        let ok: VolumeCreateRequest = serde_json::from_value(json!({
            "Name": "v1", "Driver": "local", "DriverOpts": {}, "Labels": {"a": "b"}
        }))
        .expect("request");
        let r = create_request(ok).expect("valid");
        assert_eq!(r.name, "v1");
        assert_eq!(r.labels.get("a").map(String::as_str), Some("b"));
        let bad: VolumeCreateRequest =
            serde_json::from_value(json!({"Name": "v", "Driver": "nfs"})).expect("request");
        let e = create_request(bad).expect_err("driver");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Driver"), "{}", e.message);
        let opts: VolumeCreateRequest = serde_json::from_value(
            json!({"Name": "v", "DriverOpts": {"type": "tmpfs", "device": "tmpfs"}}),
        )
        .expect("request");
        let e = create_request(opts).expect_err("opts");
        assert!(
            e.message.contains("DriverOpts (device, type)"),
            "{}",
            e.message
        );
    }
}
