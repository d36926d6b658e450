//! Docker API: `/exec` endpoints.

use super::{DockerApi, Req, Resp, Result};

pub(super) async fn route(_api: &DockerApi, req: Req) -> Result<Resp> {
    Err(super::not_found_route(&req.method, &req.path))
}

/// `POST /containers/{id}/exec` (the exec group's; a stub until it lands).
pub(super) async fn create(_api: &DockerApi, req: Req) -> Result<Resp> {
    Err(super::ApiError::not_implemented(format!(
        "{} {} is not implemented yet",
        req.method, req.path
    )))
}

/// Exec instances by ID: made by create, run by start, read by inspect.
#[derive(Default)]
pub(crate) struct Execs {}
