//! Docker API: `/containers` endpoints.

use super::{DockerApi, Req, Resp, Result};

pub(super) async fn route(_api: &DockerApi, req: Req) -> Result<Resp> {
    Err(super::not_found_route(&req.method, &req.path))
}

/// Attach connections waiting for their container to start (the docker CLI attaches before it starts).
#[derive(Default)]
pub(crate) struct Pending {}
