//! Registry operations for the API: `pull`, `push` and `login`, with progress streamed
//! back to the client. Credentials arrive per request (the CLI keeps them, as Docker's
//! does) and are used for that request's registry only.

use crate::error::AgentError;
use crate::events::EventBus;
use skiff_proto::engine::{LoginRequest, LoginResponse, ProgressMessage, PullRequest, PushRequest};
use skiff_runtime::image::auth::Credentials;
use skiff_runtime::image::registry::{self, Progress, ProgressFn, RegistryConfig, RegistryError};
use skiff_runtime::image::{ImageError, ImageStore, Reference};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument;

/// Registries allowed over plain HTTP besides loopback: `SKIFF_INSECURE_REGISTRIES`
/// (comma-separated `host[:port]`), read when the agent starts.
pub fn registry_config() -> RegistryConfig {
    let insecure = std::env::var("SKIFF_INSECURE_REGISTRIES")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    RegistryConfig { insecure }
}

pub fn creds(username: &str, password: &str) -> Option<Credentials> {
    (!username.is_empty()).then(|| Credentials {
        username: username.into(),
        password: password.into(),
    })
}

pub fn to_agent_error(e: RegistryError) -> AgentError {
    match e {
        e @ RegistryError::NotFound(_) => AgentError::NotFound(e.to_string()),
        RegistryError::Image(ImageError::NotFound(m)) => {
            AgentError::NotFound(format!("No such image: {m}"))
        }
        RegistryError::Unauthorized { .. } => AgentError::Invalid(e.to_string()),
        other => AgentError::Internal(other.to_string()),
    }
}

type Tx = mpsc::Sender<Result<ProgressMessage, Status>>;

fn progress_sink(tx: &Tx) -> ProgressFn {
    let tx = tx.clone();
    Arc::new(move |p: Progress| {
        // Progress is advisory: a slow client loses intermediate reports, never the data.
        let _ = tx.try_send(Ok(ProgressMessage {
            id: p.id,
            status: p.status,
            current: p.current,
            total: p.total,
            ..Default::default()
        }));
    })
}

async fn send(tx: &Tx, status: String) {
    let _ = tx
        .send(Ok(ProgressMessage {
            status,
            ..Default::default()
        }))
        .await;
}

/// Starts a pull; progress and the outcome stream back on the returned channel.
pub fn pull(
    images: Arc<ImageStore>,
    events: Arc<EventBus>,
    metrics: Arc<crate::counters::AgentMetrics>,
    cfg: RegistryConfig,
    req: PullRequest,
) -> Result<mpsc::Receiver<Result<ProgressMessage, Status>>, AgentError> {
    let reference =
        Reference::parse(&req.reference).map_err(|e| AgentError::Invalid(e.to_string()))?;
    let (tx, rx) = mpsc::channel(256);
    let span = tracing::info_span!("pull", image = %reference);
    tokio::spawn(
        async move {
            let sink = progress_sink(&tx);
            match registry::pull(
                images,
                &reference,
                creds(&req.username, &req.password),
                &cfg,
                sink,
            )
            .await
            {
                Ok(r) => {
                    send(&tx, format!("Digest: {}", r.manifest_digest)).await;
                    let what = if r.changed {
                        "Downloaded newer image for"
                    } else {
                        "Image is up to date for"
                    };
                    send(&tx, format!("Status: {what} {reference}")).await;
                    events.emit("image", "pull", &reference.to_string(), Default::default());
                    metrics.pull_done(true);
                    let _ = tx
                        .send(Ok(ProgressMessage {
                            image_id: r.id.to_string(),
                            ..Default::default()
                        }))
                        .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pull failed");
                    metrics.pull_done(false);
                    let _ = tx.send(Err(to_agent_error(e).into())).await;
                }
            }
        }
        .instrument(span),
    );
    Ok(rx)
}

/// Starts a push; progress and the outcome stream back on the returned channel.
pub fn push(
    images: Arc<ImageStore>,
    events: Arc<EventBus>,
    cfg: RegistryConfig,
    req: PushRequest,
) -> Result<mpsc::Receiver<Result<ProgressMessage, Status>>, AgentError> {
    let reference =
        Reference::parse(&req.reference).map_err(|e| AgentError::Invalid(e.to_string()))?;
    if reference.domain == skiff_runtime::image::reference::DEFAULT_DOMAIN
        && !reference.path.contains('/')
    {
        return Err(AgentError::Invalid(format!(
            "{reference}: pushing needs a repository name"
        )));
    }
    let (tx, rx) = mpsc::channel(256);
    let span = tracing::info_span!("push", image = %reference);
    tokio::spawn(
        async move {
            let sink = progress_sink(&tx);
            match registry::push(
                images,
                &reference,
                creds(&req.username, &req.password),
                &cfg,
                sink,
            )
            .await
            {
                Ok(r) => {
                    send(
                        &tx,
                        format!("{}: digest: {} size: {}", r.tag, r.digest, r.size),
                    )
                    .await;
                    events.emit("image", "push", &reference.to_string(), Default::default());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push failed");
                    let _ = tx.send(Err(to_agent_error(e).into())).await;
                }
            }
        }
        .instrument(span),
    );
    Ok(rx)
}

pub async fn login(cfg: &RegistryConfig, req: LoginRequest) -> Result<LoginResponse, AgentError> {
    let c = creds(&req.username, &req.password)
        .ok_or_else(|| AgentError::Invalid("username is required".into()))?;
    check_login(cfg, &req.server, c)
        .await
        .map_err(to_agent_error)?;
    Ok(LoginResponse {
        status: "Login Succeeded".into(),
    })
}

/// Checks credentials against `server` (a host, a URL, or Docker Hub's aliases), with
/// the registry's own error so a front end can tell refused credentials apart.
pub async fn check_login(
    cfg: &RegistryConfig,
    server: &str,
    c: Credentials,
) -> Result<(), RegistryError> {
    let server = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let server = match server.as_str() {
        "" | "index.docker.io/v1" | "index.docker.io" | "registry-1.docker.io" => {
            "docker.io".to_string()
        }
        _ => server,
    };
    registry::login(&server, c, cfg).await
}
