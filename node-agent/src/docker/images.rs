//! Docker API: `/images` endpoints.

use super::{DockerApi, Req, Resp, Result};

pub(super) async fn route(_api: &DockerApi, req: Req) -> Result<Resp> {
    Err(super::not_found_route(&req.method, &req.path))
}
