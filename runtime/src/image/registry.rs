//! A client for the OCI distribution protocol: `pull`, `push` and `login`.
//!
//! Manifests: Docker v2 schema 2 and OCI manifests, and manifest lists / OCI indexes
//! (the host's linux platform is picked). Layers: gzip, zstd or plain tar. Auth: the
//! `WWW-Authenticate` dance (Bearer tokens from the realm with service and scope, or
//! Basic). Credentials go to the registry host they were given for, and to a token realm
//! only when it is that same host (or Docker Hub's own auth server for Docker Hub);
//! other realms get an anonymous token request.
//!
//! Every blob streams into [`ImageStore::put_blob`], which hashes while writing and keeps
//! nothing on a mismatch or a short read. Plain HTTP is used only for insecure registries
//! (loopback always counts as insecure, as in Docker), and only after HTTPS failed.

use super::auth::{parse_challenge, Challenge, Credentials};
use super::config::MAX_CONFIG_BYTES;
use super::reference::{Reference, DEFAULT_DOMAIN};
use super::store::ImageStore;
use super::*;
use crate::digest::Digest;
use futures::StreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType, Os};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Largest manifest or index accepted.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Layers downloaded (or uploaded) at once.
pub const PARALLEL_LAYERS: usize = 3;

const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: unexpected HTTP status {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{registry}: unauthorized: {detail}")]
    Unauthorized { registry: String, detail: String },
    #[error("manifest for {0} not found: manifest unknown")]
    NotFound(String),
    #[error("{reference}: invalid manifest: {reason}")]
    BadManifest { reference: String, reason: String },
    #[error("{reference}: no matching manifest for linux/{arch} in the manifest list")]
    NoPlatform { reference: String, arch: String },
    #[error("{what} from {url} is larger than {limit} bytes")]
    TooLarge {
        what: String,
        url: String,
        limit: u64,
    },
    #[error("{registry}: plain HTTP is only used for insecure registries (loopback, or listed as insecure)")]
    Insecure {
        registry: String,
        source: reqwest::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("worker failed: {0}")]
    Join(String),
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Which registries may be spoken to over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Hosts (`host` or `host:port`) listed as insecure, in addition to loopback.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    pub fn is_insecure(&self, host: &str) -> bool {
        is_loopback(host)
            || self
                .insecure
                .iter()
                .any(|h| h == host || h == strip_port(host))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// One progress report: per layer (`id` is the short digest) or overall (`id` empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    pub id: String,
    pub status: String,
    pub current: u64,
    pub total: u64,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A progress sink that drops every report (config blobs are not shown).
pub fn quiet() -> ProgressFn {
    Arc::new(|_| {})
}

fn report(p: &ProgressFn, id: &str, status: &str, current: u64, total: u64) {
    p(Progress {
        id: id.into(),
        status: status.into(),
        current,
        total,
    });
}

/// A blob a manifest points at, its digest checked to be one the store can hold
/// (sha256): what is left of an oci-spec [`Descriptor`] once it has been vetted.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// What a fetched manifest document turned out to be.
#[derive(Debug)]
pub enum Fetched {
    Index(Vec<Descriptor>),
    Manifest { config: Blob, layers: Vec<Blob> },
}

const LAYER_TYPES: &[&str] = &[
    MEDIA_DOCKER_LAYER,
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_ZSTD,
    MEDIA_LAYER_TAR,
];

/// Checks a manifest document against its declared media type (the body's `mediaType`,
/// else the Content-Type): an index must list manifests, a manifest must carry a config
/// and layers, never both, and only known layer types. Which keys are present decides
/// the kind (as Docker does); the document is then read as oci-spec's [`ImageIndex`] or
/// [`ImageManifest`], which Docker's schema 2 documents also fit.
pub fn classify(reference: &str, raw: &[u8], content_type: Option<&str>) -> Result<Fetched> {
    let bad = |reason: String| RegistryError::BadManifest {
        reference: reference.into(),
        reason,
    };
    let doc: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| bad(format!("not a JSON manifest: {e}")))?;
    let field = |k: &str| doc.get(k).filter(|v| !v.is_null());
    let body_type = field("mediaType").and_then(|v| v.as_str());
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty());
    if let (Some(body), Some(ct)) = (body_type, ct) {
        let generic =
            ct == "application/json" || ct == "application/octet-stream" || ct == "text/plain";
        if body != ct && !generic {
            return Err(bad(format!(
                "Content-Type {ct} does not match the document's mediaType {body}"
            )));
        }
    }
    let declared = body_type.or(ct).unwrap_or_default();
    let is_index_type = declared == MEDIA_OCI_INDEX || declared == MEDIA_DOCKER_LIST;
    let is_manifest_type = declared == MEDIA_OCI_MANIFEST || declared == MEDIA_DOCKER_MANIFEST;
    let schema_version = field("schemaVersion").and_then(|v| v.as_u64()).unwrap_or(0);
    if schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {schema_version} is not supported (want 2)"
        )));
    }
    let parts = (
        field("manifests").is_some(),
        field("config").is_some(),
        field("layers").is_some(),
    );
    match parts {
        (true, false, false) if is_index_type || declared.is_empty() => {
            let index: ImageIndex =
                serde_json::from_value(doc).map_err(|e| bad(format!("not a valid index: {e}")))?;
            Ok(Fetched::Index(index.manifests().clone()))
        }
        (false, true, true) if is_manifest_type || declared.is_empty() => {
            let m: ImageManifest = serde_json::from_value(doc)
                .map_err(|e| bad(format!("not a valid manifest: {e}")))?;
            let blob = |d: &Descriptor| -> Result<Blob> {
                Ok(Blob {
                    media_type: d.media_type().to_string(),
                    digest: Digest::try_from(d.digest()).map_err(|e| bad(e.to_string()))?,
                    size: d.size(),
                })
            };
            let layers = m.layers().iter().map(blob).collect::<Result<Vec<_>>>()?;
            if let Some(l) = layers
                .iter()
                .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
            {
                return Err(bad(format!(
                    "layer {} has unsupported media type {:?}",
                    l.digest, l.media_type
                )));
            }
            let config = blob(m.config())?;
            if config.size > MAX_CONFIG_BYTES as u64 {
                return Err(bad(format!(
                    "config is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                    config.size
                )));
            }
            Ok(Fetched::Manifest { config, layers })
        }
        _ => Err(bad(format!(
            "media type {declared:?} does not match the document's content"
        ))),
    }
}

/// The host's entry in an index (linux, host architecture; arm64 prefers variant v8).
pub fn pick_platform(list: &[Descriptor]) -> Option<&Descriptor> {
    let arch = config::host_architecture();
    let candidates: Vec<&Descriptor> = list
        .iter()
        .filter(|d| {
            d.platform()
                .as_ref()
                .map(|p| *p.os() == Os::Linux && p.architecture().to_string() == arch)
                .unwrap_or(false)
        })
        .collect();
    candidates
        .iter()
        .find(|d| {
            d.platform()
                .as_ref()
                .and_then(|p| p.variant().as_deref())
                .map(|v| v == "v8")
                .unwrap_or(true)
        })
        .or(candidates.first())
        .copied()
}

/// A connection to one repository on one registry, carrying its auth state.
pub struct Session {
    http: reqwest::Client,
    /// `https://host` or `http://host`.
    base: String,
    /// The registry as users name it (`docker.io`, `127.0.0.1:5000`).
    registry: String,
    repo: String,
    creds: Option<Credentials>,
    /// `pull` or `pull,push`.
    actions: &'static str,
    auth_header: Mutex<Option<String>>,
}

fn http_err(url: &str) -> impl FnOnce(reqwest::Error) -> RegistryError + '_ {
    move |source| RegistryError::Http {
        url: url.to_string(),
        source,
    }
}

async fn status_err(url: &str, resp: reqwest::Response) -> RegistryError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    RegistryError::Status {
        url: url.into(),
        status,
        body: body.trim().to_string(),
    }
}

impl Session {
    /// Opens a session for `registry`/`repo`: finds the scheme (HTTPS, then plain HTTP if
    /// the registry is insecure) by pinging `/v2/`.
    pub async fn open(
        registry: &str,
        repo: &str,
        creds: Option<Credentials>,
        cfg: &RegistryConfig,
        push: bool,
    ) -> Result<Session> {
        let api_host = if registry == DEFAULT_DOMAIN {
            "registry-1.docker.io"
        } else {
            registry
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(http_err(registry))?;
        let mut s = Session {
            http,
            base: format!("https://{api_host}"),
            registry: registry.to_string(),
            repo: repo.to_string(),
            creds,
            actions: if push { "pull,push" } else { "pull" },
            auth_header: Mutex::new(None),
        };
        let url = format!("{}/v2/", s.base);
        if let Err(e) = s.http.get(&url).send().await {
            if !cfg.is_insecure(registry) {
                return Err(RegistryError::Http { url, source: e });
            }
            tracing::debug!(registry, error = %e, "HTTPS failed; insecure registry, trying plain HTTP");
            s.base = format!("http://{api_host}");
        }
        Ok(s)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repo)
    }

    fn realm_may_see_credentials(&self, realm: &str) -> bool {
        let Ok(u) = reqwest::Url::parse(realm) else {
            return false;
        };
        let realm_host = match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return false,
        };
        let api = self.base.split("://").nth(1).unwrap_or_default();
        realm_host == api
            || realm_host == self.registry
            || (self.registry == DEFAULT_DOMAIN && realm_host == "auth.docker.io")
    }

    /// Answers a 401 challenge: sets the Authorization header for later requests.
    async fn authenticate(&self, challenge: &str) -> Result<()> {
        match parse_challenge(challenge) {
            Some(Challenge::Basic { .. }) => {
                let c = self
                    .creds
                    .as_ref()
                    .ok_or_else(|| RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        detail: "authentication required (run `skiff login`)".into(),
                    })?;
                self.set_auth(format!("Basic {}", c.basic()));
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:{}", self.repo, self.actions));
                let token = self
                    .fetch_token(&realm, service.as_deref(), Some(&scope))
                    .await?;
                self.set_auth(format!("Bearer {token}"));
                Ok(())
            }
            None => Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail: format!("unsupported authentication challenge {challenge:?}"),
            }),
        }
    }

    fn set_auth(&self, h: String) {
        if let Ok(mut g) = self.auth_header.lock() {
            *g = Some(h);
        }
    }

    fn auth(&self) -> Option<String> {
        self.auth_header.lock().ok().and_then(|g| g.clone())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String> {
        let mut req = self.http.get(realm);
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            q.push(("service", s));
        }
        if let Some(s) = scope {
            q.push(("scope", s));
        }
        let send_creds = self.creds.is_some() && self.realm_may_see_credentials(realm);
        if let (true, Some(c)) = (send_creds, &self.creds) {
            q.push(("account", &c.username));
            req = req.basic_auth(&c.username, Some(&c.password));
        } else if self.creds.is_some() {
            tracing::warn!(realm, registry = %self.registry, "token realm is another host; not sending credentials to it");
        }
        let resp = req.query(&q).send().await.map_err(http_err(realm))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            || resp.status() == reqwest::StatusCode::FORBIDDEN
        {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail: "incorrect username or password".into(),
            });
        }
        if !resp.status().is_success() {
            return Err(status_err(realm, resp).await);
        }
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let raw = resp.bytes().await.map_err(http_err(realm))?;
        let t: Token = serde_json::from_slice(&raw).map_err(|e| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            detail: format!("bad token response: {e}"),
        })?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                detail: "empty token".into(),
            });
        }
        Ok(token)
    }

    /// Sends a body-less request, authenticating and retrying once on 401.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response> {
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), url);
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            if let Some(h) = self.auth() {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(http_err(url))?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED || attempt == 1 {
                if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        detail: "authentication required (run `skiff login`)".into(),
                    });
                }
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            self.authenticate(&challenge).await?;
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Fetches a manifest or index by tag or digest; returns (raw, digest, content type).
    pub async fn get_manifest(&self, reference: &str) -> Result<(Vec<u8>, Digest, Option<String>)> {
        let url = self.url(&format!("manifests/{reference}"));
        let accept = [
            MEDIA_OCI_INDEX,
            MEDIA_DOCKER_LIST,
            MEDIA_OCI_MANIFEST,
            MEDIA_DOCKER_MANIFEST,
        ]
        .join(", ");
        let resp = self.send(reqwest::Method::GET, &url, Some(&accept)).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(format!(
                "{}/{}:{reference}",
                self.registry, self.repo
            )));
        }
        if !resp.status().is_success() {
            return Err(status_err(&url, resp).await);
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let raw = read_limited(resp, &url, "manifest", MAX_MANIFEST_BYTES).await?;
        let digest = Digest::of(&raw);
        if let Ok(want) = Digest::parse(reference) {
            if want != digest {
                return Err(ImageError::DigestMismatch {
                    expected: want,
                    actual: digest,
                }
                .into());
            }
        }
        Ok((raw, digest, ct))
    }

    /// Streams a blob into the store, verifying its digest (and size, when known) on the way.
    pub async fn fetch_blob(
        &self,
        store: &Arc<ImageStore>,
        d: &Blob,
        progress: &ProgressFn,
    ) -> Result<()> {
        let id = d.digest.short().to_string();
        let url = self.url(&format!("blobs/{}", d.digest));
        let mut resp = self.send(reqwest::Method::GET, &url, None).await?;
        if !resp.status().is_success() {
            return Err(status_err(&url, resp).await);
        }
        let total = if d.size > 0 {
            d.size
        } else {
            resp.content_length().unwrap_or(0)
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        let st = store.clone();
        let want = d.digest.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let _ingest = st.ingest_guard()?;
            st.put_blob(ChannelReader::new(rx), Some(&want))
        });
        let mut got = 0u64;
        let mut last = std::time::Instant::now();
        let pumped: Result<()> = async {
            while let Some(chunk) = resp.chunk().await.map_err(http_err(&url))? {
                got += chunk.len() as u64;
                if d.size > 0 && got > d.size {
                    return Err(RegistryError::TooLarge {
                        what: format!("blob {}", d.digest),
                        url: url.clone(),
                        limit: d.size,
                    });
                }
                if tx.send(chunk.to_vec()).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
                if last.elapsed().as_millis() >= 100 {
                    last = std::time::Instant::now();
                    report(progress, &id, "Downloading", got, total);
                }
            }
            Ok(())
        }
        .await;
        drop(tx);
        if let Err(e) = pumped {
            // Make the writer fail rather than store a prefix: it sees a short stream,
            // whose digest cannot match.
            let _ = writer.await;
            return Err(e);
        }
        writer
            .await
            .map_err(|e| RegistryError::Join(e.to_string()))??;
        report(progress, &id, "Download complete", got, total);
        Ok(())
    }

    /// Whether the registry already has a blob.
    async fn has_blob(&self, d: &Digest) -> Result<bool> {
        let url = self.url(&format!("blobs/{d}"));
        let resp = self.send(reqwest::Method::HEAD, &url, None).await?;
        Ok(resp.status().is_success())
    }

    /// Uploads one blob from the store (monolithic upload), streaming the file.
    async fn upload_blob(
        &self,
        store: &ImageStore,
        d: &Digest,
        progress: &ProgressFn,
    ) -> Result<()> {
        let id = d.short().to_string();
        if self.has_blob(d).await? {
            report(progress, &id, "Layer already exists", 0, 0);
            return Ok(());
        }
        let start = self.url("blobs/uploads/");
        let resp = self.send(reqwest::Method::POST, &start, None).await?;
        if resp.status() != reqwest::StatusCode::ACCEPTED {
            return Err(status_err(&start, resp).await);
        }
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                url: start.clone(),
                status: 202,
                body: "upload without Location".into(),
            })?
            .to_string();
        let mut loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        loc.push(if loc.contains('?') { '&' } else { '?' });
        loc.push_str(&format!("digest={d}"));
        let path = store.blob_path(d);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ImageError::io(&path, e))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| ImageError::io(&path, e))?
            .len();
        let progress2 = progress.clone();
        let id2 = id.clone();
        let stream = futures::stream::unfold((file, 0u64), move |(mut f, sent)| {
            let progress = progress2.clone();
            let id = id2.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 256 << 10];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let sent = sent + n as u64;
                        report(&progress, &id, "Pushing", sent, total);
                        Some((Ok::<_, std::io::Error>(buf), (f, sent)))
                    }
                    Err(e) => Some((Err(e), (f, sent))),
                }
            }
        });
        let mut req = self
            .http
            .put(&loc)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(h) = self.auth() {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        let resp = req.send().await.map_err(http_err(&loc))?;
        if resp.status() != reqwest::StatusCode::CREATED {
            return Err(status_err(&loc, resp).await);
        }
        report(progress, &id, "Pushed", total, total);
        Ok(())
    }

    async fn put_manifest(&self, tag: &str, media_type: &str, raw: Vec<u8>) -> Result<()> {
        let url = self.url(&format!("manifests/{tag}"));
        let mut req = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(raw);
        if let Some(h) = self.auth() {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        let resp = req.send().await.map_err(http_err(&url))?;
        if !resp.status().is_success() {
            return Err(status_err(&url, resp).await);
        }
        Ok(())
    }
}

async fn read_limited(
    mut resp: reqwest::Response,
    url: &str,
    what: &str,
    limit: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(http_err(url))? {
        if out.len() + c.len() > limit {
            return Err(RegistryError::TooLarge {
                what: what.into(),
                url: url.into(),
                limit: limit as u64,
            });
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Adapts chunks from an async producer into a blocking `Read` (a layer download, an
/// uploaded archive or build context read on the blocking pool).
pub struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a pull did.
#[derive(Debug)]
pub struct PullResult {
    pub id: Digest,
    pub manifest_digest: Digest,
    /// False when the tag already pointed at this image.
    pub changed: bool,
}

/// Pulls `reference` into the store and tags it (when pulled by tag).
pub async fn pull(
    store: Arc<ImageStore>,
    reference: &Reference,
    creds: Option<Credentials>,
    cfg: &RegistryConfig,
    progress: ProgressFn,
) -> Result<PullResult> {
    let name = reference.to_string();
    let session = Session::open(&reference.domain, &reference.path, creds, cfg, false).await?;
    let wanted = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    report(
        &progress,
        "",
        &format!("Pulling from {}", reference.familiar_name()),
        0,
        0,
    );
    let (mut raw, mut digest, mut ct) = session.get_manifest(&wanted).await?;
    // Docker records the digest that was asked for (the index's, for a multi-platform tag).
    let top_digest = digest.clone();
    let mut depth = 0;
    let (config, layers) = loop {
        match classify(&name, &raw, ct.as_deref())? {
            Fetched::Manifest { config, layers } => break (config, layers),
            Fetched::Index(list) => {
                depth += 1;
                if depth > 2 {
                    return Err(RegistryError::BadManifest {
                        reference: name,
                        reason: "indexes nested too deeply".into(),
                    });
                }
                let chosen = pick_platform(&list).ok_or_else(|| RegistryError::NoPlatform {
                    reference: name.clone(),
                    arch: config::host_architecture().into(),
                })?;
                let d = chosen.digest().to_string();
                (raw, digest, ct) = session.get_manifest(&d).await?;
            }
        }
    };
    tracing::debug!(manifest = %digest, "resolved image manifest");
    // Config first (small, verified, size-capped), then the layers in parallel.
    if !store.has_blob(&config.digest) {
        session.fetch_blob(&store, &config, &quiet()).await?;
    }
    let cfg_raw = store.read_blob(&config.digest, MAX_CONFIG_BYTES)?;
    let parsed: ImageConfig = serde_json::from_slice(&cfg_raw)
        .map_err(|e| ImageError::BadConfig(format!("{}: {e}", config.digest)))?;
    parsed.validate().map_err(ImageError::BadConfig)?;
    for l in &layers {
        let id = l.digest.short();
        if store.has_blob(&l.digest) {
            report(&progress, id, "Already exists", 0, 0);
        } else {
            report(&progress, id, "Pulling fs layer", 0, l.size);
        }
    }
    // Collected first: a lazily mapped stream would make this future's type carry a
    // closure with higher-ranked lifetimes, which tokio::spawn rejects.
    let missing: Vec<&Blob> = layers
        .iter()
        .filter(|l| !store.has_blob(&l.digest))
        .collect();
    let futs: Vec<_> = missing
        .into_iter()
        .map(|l| session.fetch_blob(&store, l, &progress))
        .collect();
    let mut downloads = futures::stream::iter(futs).buffer_unordered(PARALLEL_LAYERS);
    while let Some(r) = downloads.next().await {
        r?;
    }
    drop(downloads);
    let before = reference
        .tagged()
        .and_then(|t| store.resolve(&t).ok())
        .map(|i| i.id().clone());
    let tags: Vec<Reference> = if reference.digest.is_none() {
        vec![reference.clone()]
    } else {
        vec![]
    };
    let repo_digest = format!("{}@{}", reference.familiar_name(), top_digest);
    let st = store.clone();
    let cd = config.digest.clone();
    let lay: Vec<(Digest, String)> = layers
        .iter()
        .map(|l| (l.digest.clone(), l.media_type.clone()))
        .collect();
    for l in &layers {
        report(&progress, l.digest.short(), "Extracting", 0, 0);
    }
    let id = tokio::task::spawn_blocking(move || {
        let _ingest = st.ingest_guard()?;
        st.commit_image(&cd, lay, &tags, Some(repo_digest))
    })
    .await
    .map_err(|e| RegistryError::Join(e.to_string()))??;
    for l in &layers {
        report(&progress, l.digest.short(), "Pull complete", 0, 0);
    }
    Ok(PullResult {
        changed: before.as_ref() != Some(&id),
        id,
        manifest_digest: top_digest,
    })
}

/// What a push did.
#[derive(Debug)]
pub struct PushResult {
    pub tag: String,
    pub digest: Digest,
    pub size: usize,
}

/// Builds the manifest for a local image: Docker schema 2 when every layer is gzip
/// (what every client reads), otherwise OCI with each layer's own media type.
pub fn manifest_for(store: &ImageStore, image: &Image) -> Result<(String, Vec<u8>)> {
    let all_gzip = image
        .record
        .layers
        .iter()
        .all(|l| l.media_type == MEDIA_DOCKER_LAYER || l.media_type == MEDIA_LAYER_GZIP);
    let (mt, cfg_mt) = if all_gzip {
        (MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_CONFIG)
    } else {
        (MEDIA_OCI_MANIFEST, MEDIA_OCI_CONFIG)
    };
    let size_of = |d: &Digest| {
        std::fs::metadata(store.blob_path(d))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let bad = |e: String| ImageError::BadConfig(e);
    let descriptor = |mt: &str, d: &Digest| -> std::result::Result<Descriptor, ImageError> {
        let digest = d.to_oci().map_err(|e| bad(e.to_string()))?;
        Ok(Descriptor::new(MediaType::from(mt), size_of(d), digest))
    };
    let layers = image
        .record
        .layers
        .iter()
        .map(|l| {
            let mt = if all_gzip {
                MEDIA_DOCKER_LAYER
            } else if l.media_type == MEDIA_DOCKER_LAYER {
                MEDIA_LAYER_GZIP
            } else {
                l.media_type.as_str()
            };
            descriptor(mt, &l.digest)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let doc = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(mt))
        .config(descriptor(cfg_mt, image.id())?)
        .layers(layers)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let raw = serde_json::to_vec_pretty(&doc).map_err(|e| ImageError::BadConfig(e.to_string()))?;
    Ok((mt.into(), raw))
}

/// Pushes a local image to the registry its name points at.
pub async fn push(
    store: Arc<ImageStore>,
    reference: &Reference,
    creds: Option<Credentials>,
    cfg: &RegistryConfig,
    progress: ProgressFn,
) -> Result<PushResult> {
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    let local = reference.tagged().unwrap_or_else(|| reference.to_string());
    let image = store.resolve(&local)?;
    let session = Session::open(&reference.domain, &reference.path, creds, cfg, true).await?;
    report(
        &progress,
        "",
        &format!("The push refers to repository [{}]", reference.full_name()),
        0,
        0,
    );
    for l in &image.record.layers {
        report(&progress, l.digest.short(), "Preparing", 0, 0);
    }
    // The first request authenticates; uploads then reuse the token.
    session.has_blob(image.id()).await?;
    let futs: Vec<_> = image
        .record
        .layers
        .iter()
        .map(|l| session.upload_blob(&store, &l.digest, &progress))
        .collect();
    let mut uploads = futures::stream::iter(futs).buffer_unordered(PARALLEL_LAYERS);
    while let Some(r) = uploads.next().await {
        r?;
    }
    drop(uploads);
    session.upload_blob(&store, image.id(), &quiet()).await?;
    let (mt, raw) = manifest_for(&store, &image)?;
    let digest = Digest::of(&raw);
    let size = raw.len();
    session.put_manifest(&tag, mt.as_str(), raw).await?;
    // Record the repo digest, as Docker does after a push.
    let st = store.clone();
    let rd = format!("{}@{digest}", reference.familiar_name());
    let layers: Vec<(Digest, String)> = image
        .record
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.media_type.clone()))
        .collect();
    let id = image.id().clone();
    tokio::task::spawn_blocking(move || st.commit_image(&id, layers, &[], Some(rd)))
        .await
        .map_err(|e| RegistryError::Join(e.to_string()))??;
    Ok(PushResult { tag, digest, size })
}

/// Checks credentials against a registry, as `docker login` does.
pub async fn login(registry: &str, creds: Credentials, cfg: &RegistryConfig) -> Result<()> {
    let session = Session::open(registry, "", Some(creds), cfg, false).await?;
    let url = format!("{}/v2/", session.base);
    let resp = session
        .http
        .get(&url)
        .send()
        .await
        .map_err(http_err(&url))?;
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(());
    }
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match parse_challenge(&challenge) {
        Some(Challenge::Bearer { realm, service, .. }) => {
            session
                .fetch_token(&realm, service.as_deref(), None)
                .await?;
        }
        _ => session.authenticate(&challenge).await?,
    }
    let resp = session.send(reqwest::Method::GET, &url, None).await?;
    if !resp.status().is_success() {
        return Err(RegistryError::Unauthorized {
            registry: registry.into(),
            detail: "incorrect username or password".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn classify_refuses_media_type_mismatches() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":10}},"layers":[{{"mediaType":"{MEDIA_DOCKER_LAYER}","digest":"{}","size":5}}]}}"#,
            d('a'),
            d('b')
        );
        assert!(matches!(
            classify("r", manifest.as_bytes(), Some(MEDIA_DOCKER_MANIFEST)),
            Ok(Fetched::Manifest { .. })
        ));
        // Declared an index, but it is a manifest.
        let lying = manifest.replace(MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX);
        assert!(classify("r", lying.as_bytes(), None).is_err());
        // Content-Type disagrees with the body.
        assert!(classify("r", manifest.as_bytes(), Some(MEDIA_OCI_INDEX)).is_err());
        // Both config/layers and manifests.
        let both = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[],"manifests":[]}}"#,
            d('a')
        );
        assert!(classify("r", both.as_bytes(), None).is_err());
        // Unknown layer type, schema 1, oversized config.
        assert!(classify(
            "r",
            manifest.replace(MEDIA_DOCKER_LAYER, "text/evil").as_bytes(),
            None
        )
        .is_err());
        assert!(classify(
            "r",
            manifest
                .replace("\"schemaVersion\":2", "\"schemaVersion\":1")
                .as_bytes(),
            None
        )
        .is_err());
        assert!(classify(
            "r",
            manifest
                .replace("\"size\":10", "\"size\":2000000")
                .as_bytes(),
            None
        )
        .is_err());
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_INDEX}","manifests":[{{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"{}","os":"linux"}}}}]}}"#,
            d('c'),
            config::host_architecture()
        );
        match classify("r", index.as_bytes(), Some(MEDIA_OCI_INDEX)) {
            Ok(Fetched::Index(list)) => assert_eq!(
                pick_platform(&list).map(|x| x.digest().to_string()),
                Some(d('c'))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn platform_pick_ignores_other_arches() {
        let list: Vec<Descriptor> = serde_json::from_str(&format!(
            r#"[{{"mediaType":"{MEDIA_OCI_MANIFEST}","size":1,"digest":"{}","platform":{{"architecture":"s390x","os":"linux"}}}},{{"mediaType":"{MEDIA_OCI_MANIFEST}","size":1,"digest":"{}","platform":{{"architecture":"{}","os":"windows"}}}}]"#,
            d('a'),
            d('b'),
            config::host_architecture()
        ))
        .expect("json");
        assert!(pick_platform(&list).is_none());
    }

    #[test]
    fn loopback_is_insecure_others_are_not() {
        let c = RegistryConfig {
            insecure: vec!["reg.lan:5000".into()],
        };
        for h in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.3.4.5",
        ] {
            assert!(c.is_insecure(h), "{h}");
        }
        assert!(c.is_insecure("reg.lan:5000"));
        assert!(!c.is_insecure("docker.io"));
        assert!(!c.is_insecure("reg.lan.evil.com"));
    }

    /// A one-connection-at-a-time HTTP server on loopback answering with canned
    /// responses; records each request's head.
    fn mock(responses: Vec<String>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for resp in responses {
                let Ok((s, _)) = l.accept() else { break };
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.push(head);
                let mut s = s;
                let _ = s.write_all(resp.as_bytes());
            }
            seen
        });
        (addr, h)
    }

    fn resp(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut s = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.push_str(body);
        s
    }

    #[tokio::test]
    async fn token_realm_on_another_host_gets_no_password() {
        // Realm host (localhost) differs from the registry (127.0.0.1:1): anonymous token request.
        let (realm_addr, realm) = mock(vec![resp("200 OK", &[], r#"{"token":"anon"}"#)]);
        let realm_url = format!(
            "http://{}/token",
            realm_addr.replace("127.0.0.1", "localhost")
        );
        let s = Session {
            http: reqwest::Client::new(),
            base: "http://127.0.0.1:1".into(),
            registry: "127.0.0.1:1".into(),
            repo: "a/b".into(),
            creds: Some(Credentials {
                username: "u".into(),
                password: "secret".into(),
            }),
            actions: "pull",
            auth_header: Mutex::new(None),
        };
        let t = s
            .fetch_token(&realm_url, Some("svc"), Some("repository:a/b:pull"))
            .await
            .expect("token");
        assert_eq!(t, "anon");
        let seen = realm.join().expect("join");
        assert!(
            !seen[0].to_ascii_lowercase().contains("authorization"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains("scope=repository%3Aa%2Fb%3Apull"),
            "{}",
            seen[0]
        );

        // Same host: Basic credentials are sent to the realm.
        let (realm_addr, realm) = mock(vec![resp("200 OK", &[], r#"{"access_token":"t2"}"#)]);
        let s = Session {
            base: format!("http://{realm_addr}"),
            registry: realm_addr.clone(),
            ..s
        };
        let t = s
            .fetch_token(&format!("http://{realm_addr}/token"), None, None)
            .await
            .expect("token");
        assert_eq!(t, "t2");
        let seen = realm.join().expect("join");
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("authorization: basic"),
            "{}",
            seen[0]
        );
    }

    #[tokio::test]
    async fn truncated_blob_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(ImageStore::open(dir.path()).expect("store"));
        let body = "hello world";
        let digest = Digest::of(body.as_bytes());
        // Server claims 11 bytes but sends 5 then closes.
        let short =
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello".to_string();
        let (addr, server) = mock(vec![short, resp("200 OK", &[], "hello WORLD")]);
        let s = Session {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
            registry: addr.clone(),
            repo: "a/b".into(),
            creds: None,
            actions: "pull",
            auth_header: Mutex::new(None),
        };
        let desc = Blob {
            media_type: MEDIA_LAYER_TAR.into(),
            digest: digest.clone(),
            size: 11,
        };
        let noop: ProgressFn = Arc::new(|_| {});
        assert!(
            s.fetch_blob(&store, &desc, &noop).await.is_err(),
            "truncated blob accepted"
        );
        assert!(
            s.fetch_blob(&store, &desc, &noop).await.is_err(),
            "wrong content accepted"
        );
        server.join().expect("join");
        assert!(!store.has_blob(&digest));
        let blobs = std::fs::read_dir(dir.path().join("image/blobs/sha256"))
            .expect("ls")
            .count();
        let tmp = std::fs::read_dir(dir.path().join("image/tmp"))
            .expect("ls")
            .count();
        assert_eq!((blobs, tmp), (0, 0));
    }
}
