//! Docker API: `/exec` endpoints.

use super::{DockerApi, Req, Resp, Result};

pub(super) async fn route(_api: &DockerApi, req: Req) -> Result<Resp> {
    Err(super::not_found_route(&req.method, &req.path))
}

/// Exec instances by ID: made by create, run by start, read by inspect.
#[derive(Default)]
pub(crate) struct Execs {}
