//! Volume calls at the request level that need more than one line, shared by the
//! Engine gRPC API and the Docker API.

use crate::containers::Containers;
use crate::error::{AgentError, Result};
use crate::volumes::matches;
use skiff_proto::engine::{
    JsonDocument, VolumeCreateRequest, VolumeListRequest, VolumeListResponse, VolumeSummary,
};
use skiff_runtime::volume::Volume;

pub fn create(c: &Containers, r: VolumeCreateRequest) -> Result<JsonDocument> {
    if !r.driver.is_empty() && r.driver != "local" {
        return Err(AgentError::NotFound(format!(
            "plugin \"{}\" not found",
            r.driver
        )));
    }
    let (v, created) = c.volumes.create(
        Some(&r.name).filter(|n| !n.is_empty()).map(|n| n.as_str()),
        r.labels.into_iter().collect(),
    )?;
    if created {
        c.events.emit(
            "volume",
            "create",
            &v.name,
            [("driver".to_string(), "local".to_string())].into(),
        );
    }
    Ok(JsonDocument {
        json: v.to_docker_json().to_string(),
    })
}

/// The volumes matching `volume ls` filters (see [`matches`]).
pub fn list_matching(c: &Containers, filters: &[String]) -> Vec<Volume> {
    let needs_use = filters.iter().any(|f| f.starts_with("dangling="));
    c.volumes
        .store
        .list()
        .into_iter()
        .filter(|v| {
            let in_use = needs_use && !c.volume_users(&v.name).is_empty();
            matches(v, filters, in_use)
        })
        .collect()
}

/// `volume rm`: removes the volume unless a container uses it, and says so (no
/// event when `force` passed over a volume that did not exist).
pub fn remove(c: &Containers, name: &str, force: bool) -> Result<()> {
    let existed = c.volumes.store.get(name).is_ok();
    c.volumes.remove(&|n| c.volume_users(n), name, force)?;
    if existed {
        c.events.emit("volume", "destroy", name, Default::default());
    }
    Ok(())
}

pub fn list(c: &Containers, r: VolumeListRequest) -> VolumeListResponse {
    let volumes = list_matching(c, &r.filters)
        .into_iter()
        .map(|v| VolumeSummary {
            name: v.name.clone(),
            driver: v.driver.clone(),
            mountpoint: v.mountpoint.display().to_string(),
            labels: v.labels.clone().into_iter().collect(),
            created_unix: v.created_at.timestamp(),
        })
        .collect();
    VolumeListResponse { volumes }
}
