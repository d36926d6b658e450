//! Docker API: `/images`, `/build` and `/commit` endpoints.
//!
//! Every operation is the engine's (`crate::images`, `crate::registry`, `crate::build`,
//! `crate::prune`); this file reads Docker's query strings and headers and writes
//! Docker's answers: JSON documents, JSON-lines progress streams and tar archives.

use super::{json, ok_json, ApiError, ApiVersion, DockerApi, Req, Resp, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_proto::engine::{CommitRequest, ProgressMessage, PullRequest, PushRequest};
use skiff_runtime::image::auth::Credentials;
use skiff_runtime::image::{Image, Reference};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

pub(super) async fn route(api: &DockerApi, req: Req) -> Result<Resp> {
    let group = req.segs.first().cloned().unwrap_or_default();
    if group == "build" && req.segs.len() == 1 {
        return match req.method {
            Method::POST => build(api, req).await,
            _ => Err(super::not_found_route(&req.method, &req.path)),
        };
    }
    if group == "build" {
        // `/build/prune`, `/build/cancel`: BuildKit's cache, which Skiff does not have.
        return Err(ApiError::not_implemented(format!(
            "{} {} is not implemented by Skiff (its builder keeps no BuildKit cache)",
            req.method, req.path
        )));
    }
    if group == "commit" {
        return match req.method {
            Method::POST if req.segs.len() == 1 => commit(api, req).await,
            _ => Err(super::not_found_route(&req.method, &req.path)),
        };
    }
    // Image names contain slashes and colons (`localhost:5000/a/b:tag`): route on the
    // path's end, the name is everything between `/images/` and it.
    let rest = req
        .path
        .trim_start_matches('/')
        .strip_prefix("images")
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let m = req.method.clone();
    match (&m, rest.as_str()) {
        (&Method::GET, "json") => list(api, &req).await,
        (&Method::POST, "create") => create(api, req).await,
        (&Method::POST, "load") => load(api, req).await,
        (&Method::POST, "prune") => prune(api, &req).await,
        (&Method::GET, "search") => Err(ApiError::not_implemented(
            "image search is not supported by Skiff: it talks to registries only to pull \
             and push (search Docker Hub on its web site)",
        )),
        (&Method::GET, "get") => {
            let names: Vec<String> = req
                .query
                .all("names")
                .into_iter()
                .map(String::from)
                .collect();
            save(api, names)
        }
        (&Method::DELETE, name) if !name.is_empty() => remove(api, name, &req),
        (_, _) => {
            let Some((name, action)) = rest.rsplit_once('/') else {
                return Err(super::not_found_route(&req.method, &req.path));
            };
            if name.is_empty() {
                return Err(super::not_found_route(&req.method, &req.path));
            }
            match (&m, action) {
                (&Method::GET, "json") => inspect(api, name, req.version),
                (&Method::GET, "history") => history(api, name),
                (&Method::POST, "tag") => tag(api, name, &req),
                (&Method::POST, "push") => push(api, name, req).await,
                (&Method::GET, "get") => save(api, vec![name.to_string()]),
                _ => Err(super::not_found_route(&req.method, &req.path)),
            }
        }
    }
}

/// Unix seconds of an image's creation (0 when unknown).
fn created_unix(img: &Image) -> i64 {
    img.created().map(|c| c.timestamp()).unwrap_or_default()
}

fn labels(img: &Image) -> BTreeMap<String, String> {
    img.config.config.labels.clone().unwrap_or_default()
}

/// `reference=` filter: a pattern on `name` or `name:tag`, `*` matching within a path
/// component as Docker's (Go `path.Match`) does.
fn reference_matches(pattern: &str, tags: &[String]) -> bool {
    tags.iter().any(|t| {
        let name = match t.rfind(':') {
            Some(i) if !t[i..].contains('/') => &t[..i],
            _ => t.as_str(),
        };
        glob(pattern, t) || glob(pattern, name)
    })
}

/// Shell-style match: `*` (not across `/`), `?`, literal otherwise.
fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => s.first().is_some_and(|&c| c != b'/') && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// `label=key` or `label=key=value` against an image's labels.
fn label_matches(filter: &str, labels: &BTreeMap<String, String>) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// `GET /images/json`.
async fn list(api: &DockerApi, req: &Req) -> Result<Resp> {
    let filters = req.query.filters()?;
    filters.only(&["dangling", "label", "reference", "before", "since"])?;
    let dangling = match filters.get("dangling") {
        [] => None,
        [v] if v == "true" || v == "1" => Some(true),
        [v] if v == "false" || v == "0" => Some(false),
        v => {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'dangling={}'",
                v.join(",")
            )))
        }
    };
    // Compared at full precision: images made within one second keep their order.
    let time_of = |key: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        match filters.get(key) {
            [] => Ok(None),
            [name, ..] => {
                let img = api
                    .images
                    .resolve(name)
                    .map_err(|e| no_such_image(e, name))?;
                Ok(img.created())
            }
        }
    };
    let before = time_of("before")?;
    let since = time_of("since")?;
    let all = req.query.bool("all");
    let listed = crate::images::list(&api.containers, all).await?;
    let old_api = req.version < ApiVersion(1, 44);
    let out: Vec<Value> = listed
        .into_iter()
        .filter(|l| {
            let img = &l.image;
            let c = img.created();
            dangling.is_none_or(|d| d == img.repo_tags.is_empty())
                && filters
                    .get("label")
                    .iter()
                    .all(|f| label_matches(f, &labels(img)))
                && before.is_none_or(|b| c.is_some_and(|c| c < b))
                && since.is_none_or(|s| c.is_some_and(|c| c > s))
        })
        .filter_map(|l| {
            let img = &l.image;
            // As dockerd: a reference filter keeps only the tags that match it.
            let patterns = filters.get("reference");
            let tags: Vec<&String> = img
                .repo_tags
                .iter()
                .filter(|t| {
                    patterns.is_empty()
                        || patterns
                            .iter()
                            .any(|p| reference_matches(p, std::slice::from_ref(*t)))
                })
                .collect();
            if !patterns.is_empty() && tags.is_empty() {
                return None;
            }
            let mut v = json!({
                "Id": img.id().to_string(),
                "ParentId": "",
                "RepoTags": tags,
                "RepoDigests": img.record.repo_digests,
                "Created": created_unix(img),
                "Size": l.size,
                "SharedSize": -1,
                "Labels": labels(img),
                "Containers": l.containers,
            });
            if old_api {
                v["VirtualSize"] = json!(l.size);
            }
            Some(v)
        })
        .collect();
    ok_json(&out)
}

/// `GET /images/{name}/json`: the engine's inspect document with the fields Docker's
/// clients also read.
fn inspect(api: &DockerApi, name: &str, version: ApiVersion) -> Result<Resp> {
    let img = api
        .images
        .resolve(name)
        .map_err(|e| no_such_image(e, name))?;
    let size = api.images.size(&img);
    let mut v = crate::inspect::image(&img, size);
    let comment = img
        .config
        .history
        .last()
        .and_then(|h| h.comment.clone())
        .unwrap_or_default();
    v["Parent"] = json!("");
    v["Comment"] = json!(comment);
    v["Author"] = json!(img.config.author.clone().unwrap_or_default());
    v["DockerVersion"] = json!("");
    v["GraphDriver"] = json!({ "Name": "overlay2", "Data": null });
    if version < ApiVersion(1, 44) {
        v["VirtualSize"] = json!(size);
        v["Container"] = json!("");
        v["ContainerConfig"] = v["Config"].clone();
    }
    ok_json(&v)
}

/// Docker's 404 wording for an image that is not there.
fn no_such_image(e: skiff_runtime::image::ImageError, name: &str) -> ApiError {
    match e {
        skiff_runtime::image::ImageError::NotFound(_) => {
            ApiError::not_found(format!("No such image: {name}"))
        }
        other => other.into(),
    }
}

/// `name` as dockerd names a missing image in `rmi`'s error: a reference with neither
/// tag nor digest gets `:latest`.
fn with_default_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// `GET /images/{name}/history`.
fn history(api: &DockerApi, name: &str) -> Result<Resp> {
    api.images
        .resolve(name)
        .map_err(|e| no_such_image(e, name))?;
    let h = crate::build::history(&api.images, name)?;
    let out: Vec<Value> = h
        .entries
        .into_iter()
        .map(|e| {
            json!({
                "Id": e.id,
                "Created": e.created_unix,
                "CreatedBy": e.created_by,
                "Tags": if e.tags.is_empty() { Value::Null } else { json!(e.tags) },
                "Size": e.size,
                "Comment": e.comment,
            })
        })
        .collect();
    ok_json(&out)
}

/// `POST /images/{name}/tag?repo=&tag=`.
fn tag(api: &DockerApi, name: &str, req: &Req) -> Result<Resp> {
    let repo = req.query.get("repo").unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad_request(
            "repository name must have at least one component",
        ));
    }
    let target = match req.query.get("tag") {
        Some(t) if !t.is_empty() => format!("{repo}:{t}"),
        _ => repo.to_string(),
    };
    api.images
        .resolve(name)
        .map_err(|e| no_such_image(e, name))?;
    crate::images::tag(&api.containers, name, &target)?;
    let mut r = hyper::Response::new(super::full(Vec::new()));
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

/// `DELETE /images/{name}?force=&noprune=`.
fn remove(api: &DockerApi, name: &str, req: &Req) -> Result<Resp> {
    api.images
        .resolve(name)
        .map_err(|e| no_such_image(e, &with_default_tag(name)))?;
    let (untagged, deleted) = crate::images::remove(&api.containers, name, req.query.bool("force"))
        .map_err(|e| match e {
            crate::error::AgentError::Image(skiff_runtime::image::ImageError::Conflict(m)) => {
                ApiError::conflict(format!("conflict: {m}"))
            }
            other => other.into(),
        })?;
    let mut out: Vec<Value> = untagged.iter().map(|u| json!({ "Untagged": u })).collect();
    out.extend(deleted.iter().map(|d| json!({ "Deleted": d })));
    ok_json(&out)
}

/// `GET /images/{name}/get`, `GET /images/get?names=`: a `docker save` archive.
fn save(api: &DockerApi, names: Vec<String>) -> Result<Resp> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    for n in &names {
        api.images.resolve(n).map_err(|e| no_such_image(e, n))?;
    }
    let mut chunks = crate::build::save(api.images.clone(), names)?;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        while let Some(c) = chunks.recv().await {
            match c {
                Ok(c) => {
                    if tx.send(Bytes::from(c.data)).await.is_err() {
                        return;
                    }
                }
                // Past the 200 an error can only cut the archive short, as dockerd's.
                Err(e) => {
                    tracing::warn!(error = %e.message(), "docker api: save failed");
                    return;
                }
            }
        }
    });
    Ok(super::stream_response(
        StatusCode::OK,
        "application/x-tar",
        rx,
    ))
}

/// `POST /images/load?quiet=`: the body is a `docker save` archive.
async fn load(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let body = req.body_chunks();
    let loaded = crate::images::load(&api.containers, body).await?;
    // `quiet` only silences progress bars, which this loader does not draw.
    let mut out = Vec::new();
    for l in &loaded {
        out.extend_from_slice(&line(&json!({ "stream": format!("{l}\n") })));
    }
    let mut r = hyper::Response::new(super::full(out));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `POST /images/prune?filters=`.
async fn prune(api: &DockerApi, req: &Req) -> Result<Resp> {
    let filters = req.query.filters()?;
    filters.only(&["dangling", "until", "label", "label!"])?;
    // Docker: dangling=true (the default) removes untagged images only; false, every
    // unused image (`prune -a`).
    let all = matches!(filters.get("dangling"), [v] if v == "false" || v == "0");
    let mut rest = filters.clone();
    rest.0.remove("dangling");
    let r = crate::prune::images(&api.containers, all, &rest.to_kv()).await?;
    let mut deleted: Vec<Value> = r
        .untagged
        .iter()
        .map(|u| json!({ "Untagged": u }))
        .collect();
    deleted.extend(r.deleted.iter().map(|d| json!({ "Deleted": d })));
    ok_json(&json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": r.space_reclaimed,
    }))
}

/// One line of a JSON-lines progress stream.
fn line(v: &Value) -> Bytes {
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    Bytes::from(b)
}

fn error_line(message: &str) -> Bytes {
    line(&json!({ "errorDetail": { "message": message }, "error": message }))
}

/// A registry progress report as Docker's JSON lines (usually one).
///
/// `tag` and `repo` are what dockerd names the pull's opening line with
/// (`v1: Pulling from team/app`, the repository path without the registry).
fn progress_json(p: &ProgressMessage, tag: &str, repo: &str) -> Vec<Value> {
    let mut id = p.id.clone();
    let mut status = p.status.clone();
    if id.is_empty() && p.status.starts_with("Pulling from ") {
        id = tag.to_string();
        if !repo.is_empty() {
            status = format!("Pulling from {repo}");
        }
    }
    let mut v = json!({ "status": status });
    if !id.is_empty() {
        v["id"] = json!(id);
        // Only transfers carry numbers: the CLI draws a bar for those and prints the
        // other statuses as lines.
        let moving = matches!(p.status.as_str(), "Downloading" | "Pushing" | "Extracting");
        v["progressDetail"] = if moving && (p.total > 0 || p.current > 0) {
            json!({ "current": p.current, "total": p.total })
        } else {
            json!({})
        };
    }
    // Push's last line, `TAG: digest: D size: N`, is followed by Docker's aux message
    // (which the CLI reads but does not print).
    if let Some((tag, rest)) = p.status.split_once(": digest: ") {
        if let Some((digest, size)) = rest.split_once(" size: ") {
            let size: u64 = size.trim().parse().unwrap_or(0);
            let aux = json!({ "progressDetail": {}, "aux": { "Tag": tag, "Digest": digest, "Size": size } });
            return vec![v, aux];
        }
    }
    vec![v]
}

fn progress_lines(p: &ProgressMessage, tag: &str, repo: &str) -> Bytes {
    let mut out = Vec::new();
    for v in progress_json(p, tag, repo) {
        out.extend_from_slice(&line(&v));
    }
    Bytes::from(out)
}

/// Streams registry progress as Docker's JSON lines. Errors before anything but the
/// opening status answer with a plain Docker error (404 for a missing image), as
/// dockerd does; later ones go in the stream.
async fn progress_stream(
    mut rx: mpsc::Receiver<std::result::Result<ProgressMessage, tonic::Status>>,
    tag: String,
    repo: String,
) -> Result<Resp> {
    let mut held = Vec::new();
    loop {
        match rx.recv().await {
            None => break,
            Some(Err(st)) => {
                let e: ApiError = st.into();
                return Err(e);
            }
            Some(Ok(p)) => {
                let opening = p.id.is_empty()
                    && (p.status.starts_with("Pulling from ")
                        || p.status.starts_with("The push refers to"));
                held.push(p);
                if !opening {
                    break;
                }
            }
        }
    }
    let (tx, out) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for p in held {
            if !p.image_id.is_empty() {
                continue;
            }
            if tx.send(progress_lines(&p, &tag, &repo)).await.is_err() {
                return;
            }
        }
        while let Some(m) = rx.recv().await {
            let b = match m {
                Ok(p) if !p.image_id.is_empty() => continue,
                Ok(p) => progress_lines(&p, &tag, &repo),
                Err(st) => error_line(st.message()),
            };
            if tx.send(b).await.is_err() {
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

/// `X-Registry-Auth` as the (username, password) the engine's registry calls take.
fn auth_of(req: &Req) -> (String, String) {
    let Some(v) = req.registry_auth() else {
        return Default::default();
    };
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (user, pass) = (s("username"), s("password"));
    if !user.is_empty() {
        return (user, pass);
    }
    // The `auth` form: base64 of `user:pass`.
    Credentials::from_basic(&s("auth"))
        .map(|c| (c.username, c.password))
        .unwrap_or_default()
}

/// `POST /images/create`: pull (`fromImage`) or import (`fromSrc`).
async fn create(api: &DockerApi, mut req: Req) -> Result<Resp> {
    if let Some(src) = req.query.get("fromSrc").map(String::from) {
        return import(api, &src, &mut req).await;
    }
    let Some(from) = req.query.get("fromImage").filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request("fromImage or fromSrc is required"));
    };
    let tag = req.query.get("tag").unwrap_or_default();
    let reference = if tag.is_empty() {
        from.to_string()
    } else if tag.starts_with("sha256:") {
        format!("{from}@{tag}")
    } else {
        format!("{from}:{tag}")
    };
    let parsed = Reference::parse(&reference)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?;
    let shown_tag = parsed
        .tag
        .clone()
        .or_else(|| parsed.digest.as_ref().map(|d| d.to_string()))
        .unwrap_or_else(|| "latest".into());
    let (username, password) = auth_of(&req);
    let rx = crate::registry::pull(
        api.images.clone(),
        api.events.clone(),
        api.containers.metrics.clone(),
        crate::registry::registry_config(),
        PullRequest {
            reference,
            username,
            password,
        },
    )?;
    progress_stream(rx, shown_tag, parsed.path.clone()).await
}

/// `POST /images/create?fromSrc=-`: the body is a rootfs tarball (plain, gzip, zstd).
async fn import(api: &DockerApi, src: &str, req: &mut Req) -> Result<Resp> {
    if src != "-" {
        return Err(ApiError::not_implemented(format!(
            "importing from {src:?} is not supported by Skiff: send the tarball as the body (fromSrc=-)"
        )));
    }
    let repo = req.query.get("repo").unwrap_or_default();
    let reference = if repo.is_empty() {
        None
    } else {
        let r = match req.query.get("tag") {
            Some(t) if !t.is_empty() => format!("{repo}:{t}"),
            _ => repo.to_string(),
        };
        Some(
            Reference::parse(&r)
                .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?,
        )
    };
    let changes: Vec<String> = req
        .query
        .all("changes")
        .into_iter()
        .map(String::from)
        .collect();
    let message = req.query.get("message").unwrap_or_default().to_string();
    let body = req.body_chunks();
    let id = crate::images::import(&api.containers, body, reference, changes, message).await?;
    let mut r = hyper::Response::new(super::full(line(&json!({ "status": id.to_string() }))));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `POST /images/{name}/push?tag=`.
async fn push(api: &DockerApi, name: &str, req: Req) -> Result<Resp> {
    let reference = match req.query.get("tag") {
        Some(t) if !t.is_empty() => format!("{name}:{t}"),
        _ => name.to_string(),
    };
    let parsed = Reference::parse(&reference)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))?;
    if let Some(local) = parsed.tagged() {
        if api.images.resolve(&local).is_err() {
            return Err(ApiError::not_found(format!(
                "An image does not exist locally with the tag: {}",
                parsed.familiar_name()
            )));
        }
    }
    let (username, password) = auth_of(&req);
    let rx = crate::registry::push(
        api.images.clone(),
        api.events.clone(),
        crate::registry::registry_config(),
        PushRequest {
            reference,
            username,
            password,
        },
    )?;
    progress_stream(rx, String::new(), String::new()).await
}

/// Config overrides of `POST /commit` as Dockerfile-style changes, the form the engine's
/// commit applies.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommitConfig {
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    stop_signal: Option<String>,
}

fn config_changes(c: &CommitConfig) -> Vec<String> {
    let mut out = Vec::new();
    let j = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    if let Some(v) = &c.cmd {
        out.push(format!("CMD {}", j(v)));
    }
    if let Some(v) = &c.entrypoint {
        out.push(format!("ENTRYPOINT {}", j(v)));
    }
    for e in c.env.iter().flatten() {
        out.push(format!("ENV {e}"));
    }
    if let Some(w) = c.working_dir.as_ref().filter(|w| !w.is_empty()) {
        out.push(format!("WORKDIR {w}"));
    }
    if let Some(u) = c.user.as_ref().filter(|u| !u.is_empty()) {
        out.push(format!("USER {u}"));
    }
    for (k, v) in c.labels.iter().flatten() {
        out.push(format!(
            "LABEL {k}={}",
            serde_json::to_string(v).unwrap_or_default()
        ));
    }
    for p in c.exposed_ports.iter().flat_map(|m| m.keys()) {
        out.push(format!("EXPOSE {p}"));
    }
    if let Some(s) = c.stop_signal.as_ref().filter(|s| !s.is_empty()) {
        out.push(format!("STOPSIGNAL {s}"));
    }
    out
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`.
async fn commit(api: &DockerApi, mut req: Req) -> Result<Resp> {
    // The CLI sends `null` when no config is given.
    let overrides: CommitConfig = req
        .json_opt::<Option<CommitConfig>>()
        .await?
        .flatten()
        .unwrap_or_default();
    let container = req.query.get("container").unwrap_or_default().to_string();
    if container.is_empty() {
        return Err(ApiError::bad_request("container is required"));
    }
    let repo = req.query.get("repo").unwrap_or_default();
    let reference = match (repo, req.query.get("tag")) {
        ("", _) => String::new(),
        (r, Some(t)) if !t.is_empty() => format!("{r}:{t}"),
        (r, _) => r.to_string(),
    };
    let mut changes = config_changes(&overrides);
    changes.extend(req.query.all("changes").into_iter().map(String::from));
    let r = crate::build::commit(
        &api.containers,
        CommitRequest {
            container,
            reference,
            changes,
            message: req.query.get("comment").unwrap_or_default().to_string(),
            author: req.query.get("author").unwrap_or_default().to_string(),
        },
        // Docker pauses by default.
        req.query.bool_or("pause", true),
    )
    .await?;
    Ok(json(StatusCode::CREATED, &json!({ "Id": r.id })))
}

/// `X-Registry-Config`: base64url JSON, registry host → `{username, password}` or
/// `{auth}`.
fn registry_config_header(req: &Req) -> BTreeMap<String, Credentials> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    let Some(h) = req
        .headers
        .get("x-registry-config")
        .and_then(|h| h.to_str().ok())
    else {
        return out;
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(h.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim()))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h.trim()));
    let Ok(Value::Object(map)) = raw.map(|r| serde_json::from_slice(&r).unwrap_or(Value::Null))
    else {
        return out;
    };
    for (host, v) in map {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let creds = if !s("username").is_empty() {
            Some(Credentials {
                username: s("username"),
                password: s("password"),
            })
        } else {
            Credentials::from_basic(&s("auth"))
        };
        if let Some(c) = creds {
            out.insert(skiff_runtime::image::auth::credential_key(&host), c);
        }
    }
    out
}

/// A JSON object of strings from a query parameter (`buildargs`, `labels`).
fn json_map(req: &Req, key: &str) -> Result<BTreeMap<String, String>> {
    match req.query.get(key) {
        None | Some("") => Ok(BTreeMap::new()),
        Some(s) => {
            let m: BTreeMap<String, Option<String>> = serde_json::from_str(s).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid {key}: expected a JSON object of strings: {e}"
                ))
            })?;
            Ok(m.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect())
        }
    }
}

/// `POST /build`: the body is the context tar (maybe compressed); the answer is
/// Docker's JSON stream of the legacy builder.
async fn build(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let q = &req.query;
    if q.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::not_implemented(
            "building from a remote context is not supported by Skiff: send the context as the body",
        ));
    }
    if q.get("version") == Some("2") {
        return Err(ApiError::not_implemented(
            "BuildKit is not supported by Skiff; use the legacy builder (DOCKER_BUILDKIT=0)",
        ));
    }
    if let Some(p) = q.get("platform").filter(|p| !p.is_empty()) {
        let want = format!(
            "linux/{}",
            skiff_runtime::image::config::host_architecture()
        );
        if !p.split(',').all(|x| x == want || x == "linux") {
            return Err(ApiError::bad_request(format!(
                "platform {p} is not supported: this node builds {want} only"
            )));
        }
    }
    let labels = json_map(&req, "labels")?;
    let quiet = q.bool("q");
    let network = match q.get("networkmode").unwrap_or_default() {
        "none" => "none",
        _ => "host",
    };
    let breq = crate::build::BuildRequest {
        dockerfile_name: q
            .get("dockerfile")
            .filter(|d| !d.is_empty())
            .unwrap_or("Dockerfile")
            .to_string(),
        dockerfile: None,
        tags: q.all("t").into_iter().map(String::from).collect(),
        build_args: json_map(&req, "buildargs")?,
        target: q.get("target").filter(|t| !t.is_empty()).map(String::from),
        no_cache: q.bool("nocache"),
        pull: q.bool("pull"),
        network: network.into(),
        auths: registry_config_header(&req),
        labels,
        // The legacy build endpoint carries no secrets (BuildKit's session does).
        secrets: Default::default(),
    };
    let body = req.body_chunks();
    let mut events = crate::build::run_build(
        api.containers.clone(),
        api.images.clone(),
        api.events.clone(),
        crate::registry::registry_config(),
        breq,
        body,
    )
    .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        use crate::build::BuildEvent;
        while let Some(ev) = events.recv().await {
            let b = match ev {
                BuildEvent::Line(_) if quiet => continue,
                BuildEvent::Line(l) => line(&json!({ "stream": format!("{l}\n") })),
                BuildEvent::Built(id) => {
                    let mut b = line(&json!({ "aux": { "ID": id } })).to_vec();
                    if quiet {
                        b.extend_from_slice(&line(&json!({ "stream": format!("{id}\n") })));
                    }
                    Bytes::from(b)
                }
                BuildEvent::Failed(e) => error_line(&e),
            };
            if tx.send(b).await.is_err() {
                return;
            }
        }
    });
    Ok(super::stream_response(
        StatusCode::OK,
        "application/json",
        rx,
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn missing_images_are_named_with_their_default_tag() {
        assert_eq!(with_default_tag("nosuch"), "nosuch:latest");
        assert_eq!(
            with_default_tag("localhost:5000/a/b"),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(with_default_tag("a/b:v1"), "a/b:v1");
        assert_eq!(with_default_tag("a@sha256:00"), "a@sha256:00");
    }

    use super::*;

    #[test]
    fn reference_filter_matches_like_docker() {
        let tags = vec![
            "busybox:latest".to_string(),
            "localhost:5000/a/b:v1".to_string(),
        ];
        assert!(reference_matches("busybox", &tags));
        assert!(reference_matches("busybox:latest", &tags));
        assert!(reference_matches("bus*", &tags));
        assert!(reference_matches("localhost:5000/a/b", &tags));
        assert!(reference_matches("localhost:5000/*/b:v?", &tags));
        assert!(
            !reference_matches("*", &["a/b:1".to_string()]),
            "* stays in one component"
        );
        assert!(!reference_matches("alpine", &tags));
        assert!(!reference_matches("busybox:1", &tags));
    }

    #[test]
    fn label_filter_takes_key_or_key_value() {
        let l: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(label_matches("a", &l));
        assert!(label_matches("a=1", &l));
        assert!(!label_matches("a=2", &l));
        assert!(!label_matches("b", &l));
    }

    #[test]
    fn progress_has_docker_shape() {
        let p = ProgressMessage {
            id: "abc".into(),
            status: "Downloading".into(),
            current: 5,
            total: 10,
            ..Default::default()
        };
        assert_eq!(
            progress_json(&p, "latest", ""),
            vec![
                json!({"status":"Downloading","id":"abc","progressDetail":{"current":5,"total":10}})
            ]
        );
        let p = ProgressMessage {
            id: "abc".into(),
            status: "Pull complete".into(),
            current: 10,
            total: 10,
            ..Default::default()
        };
        assert_eq!(progress_json(&p, "", "")[0]["progressDetail"], json!({}));
        let p = ProgressMessage {
            status: "Pulling from library/busybox".into(),
            ..Default::default()
        };
        let opening = &progress_json(&p, "1.36", "team/bb")[0];
        assert_eq!(opening["id"], "1.36");
        assert_eq!(opening["status"], "Pulling from team/bb");
        let p = ProgressMessage {
            status: "v1: digest: sha256:ab size: 527".into(),
            ..Default::default()
        };
        let lines = progress_json(&p, "", "");
        assert_eq!(
            lines[0],
            json!({"status":"v1: digest: sha256:ab size: 527"})
        );
        assert_eq!(
            lines[1]["aux"],
            json!({"Tag":"v1","Digest":"sha256:ab","Size":527})
        );
        assert_eq!(
            error_line("boom"),
            Bytes::from("{\"error\":\"boom\",\"errorDetail\":{\"message\":\"boom\"}}\n")
        );
    }

    #[test]
    fn commit_config_becomes_changes() {
        let c: CommitConfig = serde_json::from_str(
            r#"{"Cmd":["sh","-c","echo hi"],"Env":["A=1"],"WorkingDir":"/w","Labels":{"k":"v w"},"ExposedPorts":{"80/tcp":{}},"Unknown":1}"#,
        )
        .expect("parse");
        assert_eq!(
            config_changes(&c),
            vec![
                r#"CMD ["sh","-c","echo hi"]"#,
                "ENV A=1",
                "WORKDIR /w",
                r#"LABEL k="v w""#,
                "EXPOSE 80/tcp",
            ]
        );
    }
}
