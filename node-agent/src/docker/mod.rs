//! Docker's Engine API on a unix socket (`--docker-socket`, default
//! `/run/skiff/docker.sock`), so the docker CLI, Compose and the Docker SDKs drive this
//! agent unchanged.
//!
//! This is a third front end on the engine, beside the gRPC server (`server.rs`) and the
//! task executor: handlers translate Docker's JSON and query strings into calls on the
//! same engine objects ([`Containers`], the image store, networks, volumes) and never
//! call another front end. The contract is moby's `api/swagger.yaml`; request bodies are
//! read into the generated models of `bollard-stubs` where one fits.
//!
//! Layout: this file holds the server, the router, API version negotiation, Docker's
//! error shape and the small request/response helpers every group uses; each endpoint
//! group has a file of its own (`system`, `containers`, `exec`, `images`, `networks`,
//! `volumes`, and Swarm's
//! `swarm`, with the service spec converter in `service_spec`).

mod containers;
mod exec;
mod images;
mod networks;
mod service_spec;
mod swarm;
mod system;
mod volumes;

use crate::containers::Containers;
use crate::error::AgentError;
use crate::events::EventBus;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use skiff_runtime::image::ImageStore;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// The newest API version served; clients that ask for more are refused, as dockerd does.
pub const API_VERSION: ApiVersion = ApiVersion(1, 47);
/// The oldest API version served (dockerd 27's minimum).
pub const MIN_API_VERSION: ApiVersion = ApiVersion(1, 24);
/// Largest JSON request body read (a create with a huge env is far below this).
pub const MAX_JSON_BODY: usize = 16 << 20;

/// The body every handler answers with: a whole buffer or a stream of chunks.
pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = hyper::Response<Body>;
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// What the handlers reach: the same engine objects the gRPC server uses.
pub struct DockerApi {
    pub containers: Arc<Containers>,
    pub images: Arc<ImageStore>,
    pub events: Arc<EventBus>,
    /// The node's cluster membership (for `info`'s Swarm section and cluster networks).
    pub cluster: Option<Arc<skiff_controller::cluster::Cluster>>,
    /// The containers group's own state (attach connections waiting for a start).
    pub(crate) attach: containers::Pending,
    /// Exec instances made by `POST /containers/{id}/exec`, until they are gone.
    pub(crate) execs: exec::Execs,
}

impl DockerApi {
    pub fn new(
        containers: Arc<Containers>,
        images: Arc<ImageStore>,
        events: Arc<EventBus>,
        cluster: Option<Arc<skiff_controller::cluster::Cluster>>,
    ) -> Self {
        DockerApi {
            containers,
            images,
            events,
            cluster,
            attach: Default::default(),
            execs: Default::default(),
        }
    }
}

/// `MAJOR.MINOR` of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.split_once('.')?;
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// An error in Docker's shape: a status code and `{"message": "..."}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn not_implemented(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }

    fn into_response(self) -> Resp {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        use crate::error::Kind;
        let status = match (e.kind(), &e) {
            (Kind::NotFound, _) => StatusCode::NOT_FOUND,
            // Docker answers 409 for operations the container's state forbids ("is not
            // running", "is already paused").
            (Kind::Conflict | Kind::Precondition, _) => StatusCode::CONFLICT,
            (Kind::Invalid, _) => StatusCode::BAD_REQUEST,
            // A process that could not start: dockerd answers 400 for a bad command
            // (exit 127/126 in the CLI) and 500 otherwise.
            (Kind::Start, AgentError::Start { exit_code, .. })
                if *exit_code == 126 || *exit_code == 127 =>
            {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<skiff_runtime::image::ImageError> for ApiError {
    fn from(e: skiff_runtime::image::ImageError) -> Self {
        AgentError::from(e).into()
    }
}

/// Errors of the cluster-side handlers, which speak gRPC statuses.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let status = match s.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, s.message().to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("worker failed: {e}"))
    }
}

/// One request, with the version prefix stripped and the path split into segments.
pub struct Req {
    pub method: Method,
    /// The path without `/vX.Y`, percent-decoded (`/containers/abc/json`).
    pub path: String,
    /// `path` split on `/`, empty segments dropped.
    pub segs: Vec<String>,
    /// The version the client asked for, or [`API_VERSION`] for unversioned paths.
    pub version: ApiVersion,
    pub query: Query,
    pub headers: HeaderMap,
    /// Taken by the first read ([`Req::bytes`], [`Req::body_chunks`]).
    pub body: Option<Incoming>,
    /// Completes once a `101 Switching Protocols` answer went out (attach, exec start).
    pub upgrade: hyper::upgrade::OnUpgrade,
}

impl Req {
    /// The request body as JSON of type `T`; an empty body is `None`.
    pub async fn json_opt<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let bytes = self.bytes(MAX_JSON_BODY).await?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                ApiError::bad_request(format!("invalid JSON: {inner}"))
            } else {
                ApiError::bad_request(format!("invalid JSON: {path}: {inner}"))
            }
        })?;
        Ok(Some(v))
    }

    /// The request body as JSON of type `T`; an empty body is `T::default()`.
    pub async fn json_or_default<T: serde::de::DeserializeOwned + Default>(&mut self) -> Result<T> {
        Ok(self.json_opt().await?.unwrap_or_default())
    }

    /// The whole body, refused past `limit` bytes.
    pub async fn bytes(&mut self, limit: usize) -> Result<Bytes> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            )),
            Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
        }
    }

    /// The body as a channel of chunks (image load, build contexts, archives), read by
    /// a task so a blocking consumer can pull from it at its own pace.
    pub fn body_chunks(&mut self) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(16);
        let Some(mut body) = self.body.take() else {
            return rx;
        };
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    if tx.send(data.to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        });
        rx
    }

    /// Path segment `i` (after the group name), or a 404 naming the path.
    pub fn seg(&self, i: usize) -> Result<&str> {
        self.segs
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| not_found_route(&self.method, &self.path))
    }

    /// The `X-Registry-Auth` header (base64url JSON), decoded; empty when absent.
    pub fn registry_auth(&self) -> Option<serde_json::Value> {
        use base64::Engine;
        let h = self.headers.get("x-registry-auth")?.to_str().ok()?;
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(h.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim()))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h.trim()))
            .ok()?;
        serde_json::from_slice(&raw).ok()
    }
}

/// Query parameters, repeated keys kept (`?filters=...&all=1`).
#[derive(Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a repeated key (`?tag=a&tag=b`).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Docker's booleans: `1`, `true`, `True`, `yes` are true; absent, `0`, `false`,
    /// `""` are false.
    pub fn bool(&self, key: &str) -> bool {
        matches!(
            self.get(key).map(|v| v.to_ascii_lowercase()).as_deref(),
            Some("1" | "true" | "yes")
        )
    }
    /// Like [`Query::bool`], with a default when the key is absent.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        if self.get(key).is_some() {
            self.bool(key)
        } else {
            default
        }
    }
    /// An integer parameter; a malformed one is a 400 naming it.
    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }
    /// `filters={"key":{"value":true}}` (or the older `{"key":["value"]}`).
    pub fn filters(&self) -> Result<Filters> {
        match self.get("filters") {
            None | Some("") => Ok(Filters::default()),
            Some(s) => Filters::parse(s),
        }
    }
}

/// Docker's filter arguments: key → values.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(s: &str) -> Result<Filters> {
        let v: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: expected a JSON object"))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(true))
                    .map(|(v, _)| v.clone())
                    .collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter: {k}: expected a list or a map of values"
                    )))
                }
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
    }
    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or_default()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Refuses keys outside `allowed`, with dockerd's message.
    pub fn only(&self, allowed: &[&str]) -> Result<()> {
        for k in self.0.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
            }
        }
        Ok(())
    }
    /// As `KEY=VALUE` strings, the form the engine's list and prune calls take.
    pub fn to_kv(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
            .collect()
    }
}

/// A JSON answer.
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v)
        .unwrap_or_else(|e| format!("{{\"message\":\"encoding the answer: {e}\"}}").into_bytes());
    let mut r = hyper::Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `200` with JSON.
pub fn ok_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<Resp> {
    Ok(json(StatusCode::OK, v))
}

/// `204 No Content`.
pub fn no_content() -> Result<Resp> {
    let mut r = hyper::Response::new(full(Vec::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A streamed answer: each chunk the channel yields goes out as it comes (chunked
/// encoding); the stream ends when every sender is gone.
pub fn stream_response(status: StatusCode, content_type: &str, rx: mpsc::Receiver<Bytes>) -> Resp {
    let s = tokio_stream::wrappers::ReceiverStream::new(rx);
    let s = futures::StreamExt::map(s, |b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut r = hyper::Response::new(BodyExt::boxed(StreamBody::new(s)));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// Docker's 8-byte header before each frame of a multiplexed (non-tty) stream:
/// stream type (0 stdin, 1 stdout, 2 stderr, 3 system error), 3 zero bytes, big-endian
/// length.
pub fn mux_frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

fn not_found_route(method: &Method, path: &str) -> ApiError {
    ApiError::not_found(format!(
        "page not found: {method} {path} is not an endpoint of Skiff's Docker API"
    ))
}

/// Splits `/v1.41/containers/json` into the version and the rest.
fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let (v, _) = rest.split_once('/').unwrap_or((rest, ""));
        if v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return (Some(v), &path[2 + v.len()..]);
        }
    }
    (None, path)
}

/// The version check dockerd makes on a versioned path.
fn check_version(v: &str) -> Result<ApiVersion> {
    let parsed = ApiVersion::parse(v)
        .ok_or_else(|| ApiError::bad_request(format!("invalid API version: {v:?}")))?;
    if parsed > API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if parsed < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(parsed)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Headers every answer carries (dockerd's): the API version and the OS.
fn add_common_headers(h: &mut HeaderMap) {
    h.insert(
        "api-version",
        HeaderValue::from_str(&API_VERSION.to_string()).unwrap_or(HeaderValue::from_static("")),
    );
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert(
        "server",
        HeaderValue::from_str(&format!(
            "Docker/{} (linux) Skiff/{}",
            system::ENGINE_VERSION,
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or(HeaderValue::from_static("Skiff")),
    );
}

impl DockerApi {
    /// Routes one request; every error becomes Docker's `{"message"}` body.
    async fn handle(self: Arc<Self>, mut req: hyper::Request<Incoming>) -> Resp {
        let upgrade = hyper::upgrade::on(&mut req);
        let (parts, body) = req.into_parts();
        let raw_path = parts.uri.path().to_string();
        let (ver, rest) = split_version(&raw_path);
        let span = tracing::debug_span!("docker_api", method = %parts.method, path = %raw_path);
        let mut resp = async {
            let version = match ver {
                Some(v) => check_version(v)?,
                None => API_VERSION,
            };
            let path = percent_decode(rest);
            let segs = path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let req = Req {
                method: parts.method.clone(),
                path,
                segs,
                version,
                query: Query::parse(parts.uri.query()),
                headers: parts.headers,
                body: Some(body),
                upgrade,
            };
            self.route(req).await
        }
        .instrument(span)
        .await
        .unwrap_or_else(|e| {
            if e.status.is_server_error() {
                tracing::warn!(method = %parts.method, path = %raw_path, status = %e.status, error = %e.message, "docker api");
            } else {
                tracing::debug!(method = %parts.method, path = %raw_path, status = %e.status, error = %e.message, "docker api");
            }
            e.into_response()
        });
        add_common_headers(resp.headers_mut());
        resp
    }

    async fn route(&self, req: Req) -> Result<Resp> {
        let group = req.segs.first().cloned().unwrap_or_default();
        match group.as_str() {
            "_ping" | "version" | "info" | "events" | "system" | "auth" => {
                system::route(self, req).await
            }
            "containers" => containers::route(self, req).await,
            "exec" => exec::route(self, req).await,
            "images" | "build" | "commit" => images::route(self, req).await,
            "networks" => networks::route(self, req).await,
            "volumes" => volumes::route(self, req).await,
            "swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs" => {
                swarm::route(self, req).await
            }
            // No plugins exist here: the list is empty and a lookup is dockerd's 404.
            "plugins" if req.method == Method::GET && req.segs.len() == 1 => ok_json(&[(); 0]),
            "plugins"
                if req.method == Method::GET && req.segs.get(2).is_some_and(|s| s == "json") =>
            {
                Err(ApiError::not_found(format!(
                    "plugin \"{}\" not found",
                    req.segs.get(1).map(String::as_str).unwrap_or_default()
                )))
            }
            "plugins" | "distribution" | "session" | "grpc" => Err(ApiError::not_implemented(
                format!("{} {} is not implemented by Skiff", req.method, req.path),
            )),
            _ => Err(not_found_route(&req.method, &req.path)),
        }
    }
}

/// Binds the Docker API socket (0660, like the skiff socket) and serves it until
/// `shutdown` completes. A stale socket file is replaced; a live one is an error.
pub async fn listen(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("another server is listening on {}", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Serves connections from `listener` until the task is dropped. Each connection gets
/// an HTTP/1.1 server with upgrades (attach and exec hijack their connection).
pub async fn serve(listener: tokio::net::UnixListener, api: Arc<DockerApi>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "docker api: accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            // Half-closed connections are served: a client may shut its write side
            // once the request is out (dockerd answers those too).
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(error = %e, "docker api connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stripped_and_checked() {
        assert_eq!(
            split_version("/v1.41/containers/json"),
            (Some("1.41"), "/containers/json")
        );
        assert_eq!(
            split_version("/containers/json"),
            (None, "/containers/json")
        );
        assert_eq!(split_version("/volumes/v1.2"), (None, "/volumes/v1.2"));
        assert!(check_version("1.41").is_ok());
        let e = check_version("1.99").expect_err("too new");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("too new"), "{}", e.message);
        assert!(check_version("1.12")
            .expect_err("too old")
            .message
            .contains("too old"));
        assert!(check_version("x").is_err());
    }

    #[test]
    fn filters_take_both_forms() {
        let f = Filters::parse(r#"{"label":{"a=b":true},"status":["running"]}"#).expect("ok");
        assert_eq!(f.get("label"), ["a=b"]);
        assert_eq!(f.get("status"), ["running"]);
        assert_eq!(f.to_kv(), vec!["label=a=b", "status=running"]);
        assert!(f.only(&["label"]).is_err());
        assert!(Filters::parse("[1]").is_err());
        assert!(Filters::parse("{").is_err());
    }

    #[test]
    fn query_booleans_follow_docker() {
        let q = Query::parse(Some("all=1&size=false&force=True&x="));
        assert!(q.bool("all"));
        assert!(!q.bool("size"));
        assert!(q.bool("force"));
        assert!(!q.bool("x"));
        assert!(q.bool_or("missing", true));
        assert!(Query::parse(Some("limit=abc")).int("limit").is_err());
        assert_eq!(
            Query::parse(Some("limit=3")).int("limit").expect("int"),
            Some(3)
        );
    }

    #[test]
    fn mux_frames_have_docker_headers() {
        let f = mux_frame(2, b"hi");
        assert_eq!(&f[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn agent_errors_keep_docker_status_codes() {
        let e: ApiError = AgentError::NotFound("No such container: x".into()).into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such container: x");
        let e: ApiError = AgentError::Conflict("name in use".into()).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e: ApiError = AgentError::Invalid("bad".into()).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
