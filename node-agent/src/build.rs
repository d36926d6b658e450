//! Build, history, save, export and commit for the API.
//!
//! RUN steps run in ordinary containers created through [`Containers`] (same shim path
//! as `skiff run`), labelled `skiff.build=true`; each is removed right after its upper
//! directory has been diffed into a layer.

use crate::containers::{Containers, CreateOptions};
use crate::error::AgentError;
use crate::events::EventBus;
use skiff_proto::engine::{
    BuildInput, BuildOutput, CommitRequest, DataChunk, HistoryEntry, HistoryResponse, ImageRef,
};
use skiff_runtime::build::{self, BoxFuture, BuildOptions, Output, RunRequest, StepRunner};
use skiff_runtime::container::ContainerConfig;
use skiff_runtime::image::auth::Credentials;
use skiff_runtime::image::registry::RegistryConfig;
use skiff_runtime::image::{ImageStore, Reference};
use skiff_runtime::shim::frame::{read_frame, Frame};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::Instrument;

/// Label marking a container as a build step's.
pub const BUILD_LABEL: &str = "skiff.build";

struct AgentRunner {
    containers: Arc<Containers>,
    images: Arc<ImageStore>,
    registry: RegistryConfig,
    /// Registry host → credentials, as the CLI sent them.
    auths: BTreeMap<String, Credentials>,
}

impl AgentRunner {
    async fn run_inner(
        &self,
        req: RunRequest,
        layer_out: &Path,
        out: Output<'_>,
    ) -> Result<i32, String> {
        let config = ContainerConfig {
            image: req.image.to_string(),
            cmd: req.argv,
            env: req.env,
            working_dir: req.workdir,
            user: req.user,
            network_mode: req.network,
            mounts: req.mounts,
            privileged: req.privileged,
            labels: [(BUILD_LABEL.to_string(), "true".to_string())].into(),
            restart_policy: skiff_runtime::container::RestartPolicy {
                name: "no".into(),
                maximum_retry_count: 0,
            },
            ..Default::default()
        };
        let (id, _) = self
            .containers
            .create(CreateOptions {
                name: None,
                config,
                entrypoint_set: true,
            })
            .await
            .map_err(|e| e.to_string())?;
        out(&format!(" ---> Running in {}", &id[..12]));
        let result = async {
            let (entry, mut conn) = self
                .containers
                .start_attached(&id, false, None)
                .await
                .map_err(|e| e.to_string())?;
            let mut code = None;
            let mut line = Vec::new();
            while let Ok(Some(f)) = read_frame(&mut conn).await {
                match f {
                    Frame::Stdout(d) | Frame::Stderr(d) => {
                        line.extend_from_slice(&d);
                        while let Some(p) = line.iter().position(|&b| b == b'\n') {
                            let l: Vec<u8> = line.drain(..=p).collect();
                            out(String::from_utf8_lossy(&l[..l.len() - 1]).as_ref());
                        }
                    }
                    Frame::Exit { code: c, error } => {
                        if !error.is_empty() {
                            out(&error);
                        }
                        code = Some(c);
                        break;
                    }
                    _ => {}
                }
            }
            if !line.is_empty() {
                out(String::from_utf8_lossy(&line).as_ref());
            }
            self.containers.wait_handled(&entry).await;
            let code = code.unwrap_or(entry.state().exit_code);
            if code == 0 {
                let upper = entry.paths.upper();
                let dest = layer_out.to_path_buf();
                tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let f = std::fs::File::create(&dest)
                        .map_err(|e| format!("{}: {e}", dest.display()))?;
                    build::layer::diff_upper(&upper, std::io::BufWriter::new(f))
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())??;
            }
            Ok::<i32, String>(code)
        }
        .await;
        if let Err(e) = self.containers.remove(&id, true).await {
            tracing::warn!(container_id = %id, error = %e, "removing build container");
        }
        result
    }
}

impl StepRunner for AgentRunner {
    fn run<'a>(
        &'a self,
        req: RunRequest,
        layer_out: &'a Path,
        out: Output<'a>,
    ) -> BoxFuture<'a, Result<i32, String>> {
        Box::pin(self.run_inner(req, layer_out, out))
    }

    fn pull<'a>(&'a self, image: &'a str, out: Output<'a>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let r = Reference::parse(image).map_err(|e| e.to_string())?;
            let creds = self
                .auths
                .get(&skiff_runtime::image::auth::credential_key(&r.domain))
                .cloned();
            out(&format!("Pulling {r}"));
            skiff_runtime::image::registry::pull(
                self.images.clone(),
                &r,
                creds,
                &self.registry,
                skiff_runtime::image::registry::quiet(),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    }
}

/// What a build asks for, whichever front end it came through.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// The Dockerfile's name (for messages; with `dockerfile` empty, its path in the
    /// context, as Docker's API sends it).
    pub dockerfile_name: String,
    /// The Dockerfile's content when the client sent it apart from the context.
    pub dockerfile: Option<String>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// RUN network: `host` (default) or `none`.
    pub network: String,
    /// Registry host → credentials, for base image pulls.
    pub auths: BTreeMap<String, Credentials>,
    /// `--label`s: added as a last `LABEL` step of the built stage, as Docker's legacy
    /// builder does.
    pub labels: BTreeMap<String, String>,
    /// Build secrets for `RUN --mount=type=secret` (id → value); never stored.
    pub secrets: std::collections::HashMap<String, Vec<u8>>,
}

/// The Dockerfile with a `LABEL` step for `labels` at the end of the stage that is
/// built (the `target` stage, else the last one).
pub fn with_labels(
    name: &str,
    dockerfile: &str,
    target: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<String, AgentError> {
    if labels.is_empty() {
        return Ok(dockerfile.to_string());
    }
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let step = format!(
        "LABEL {}",
        labels
            .iter()
            .map(|(k, v)| format!("{}={}", q(k), q(v)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let ins = skiff_runtime::build::dockerfile::parse(name, dockerfile)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    // The line of the FROM that starts the stage after the target, if any.
    let next_from = target.and_then(|t| {
        let froms: Vec<&skiff_runtime::build::dockerfile::Instruction> =
            ins.iter().filter(|i| i.keyword == "FROM").collect();
        let at = froms.iter().position(|i| {
            let words: Vec<&str> = i.rest.split_whitespace().collect();
            words.len() >= 3
                && words[words.len() - 2].eq_ignore_ascii_case("as")
                && words[words.len() - 1].eq_ignore_ascii_case(t)
        })?;
        froms.get(at + 1).map(|i| i.line)
    });
    let mut lines: Vec<&str> = dockerfile.lines().collect();
    match next_from {
        Some(line) => lines.insert(line.saturating_sub(1), &step),
        None => lines.push(&step),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// What a running build reports: output lines, then the image or the error.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildEvent {
    Line(String),
    Built(String),
    Failed(String),
}

/// Largest Dockerfile read from a context.
const MAX_DOCKERFILE: u64 = 4 << 20;

/// Reads the Dockerfile at `name` inside the unpacked context: a relative path whose
/// components are plain directories and a regular file (no symlink leads out).
fn read_context_dockerfile(ctx: &Path, name: &str) -> Result<String, AgentError> {
    use std::io::Read;
    use std::path::Component;
    let rel = Path::new(name);
    let mut p = ctx.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => p.push(n),
            Component::CurDir => {}
            _ => {
                return Err(AgentError::Invalid(format!(
                    "the Dockerfile ({name}) must be a path inside the build context"
                )))
            }
        }
        let m = std::fs::symlink_metadata(&p).map_err(|_| {
            AgentError::Invalid(format!("Cannot locate specified Dockerfile: {name}"))
        })?;
        if m.file_type().is_symlink() {
            return Err(AgentError::Invalid(format!(
                "the Dockerfile ({name}) must not be reached through a symbolic link"
            )));
        }
    }
    if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
        return Err(AgentError::Invalid(format!(
            "Cannot locate specified Dockerfile: {name}"
        )));
    }
    let mut s = String::new();
    std::fs::File::open(&p)?
        .take(MAX_DOCKERFILE + 1)
        .read_to_string(&mut s)
        .map_err(|e| AgentError::Invalid(format!("reading the Dockerfile {name}: {e}")))?;
    if s.len() as u64 > MAX_DOCKERFILE {
        return Err(AgentError::Invalid(format!(
            "the Dockerfile {name} is larger than {MAX_DOCKERFILE} bytes"
        )));
    }
    Ok(s)
}

/// Receives the gRPC build (options, then the context tar), runs it, streams its output.
pub async fn build(
    containers: Arc<Containers>,
    images: Arc<ImageStore>,
    events: Arc<EventBus>,
    registry: RegistryConfig,
    mut input: Streaming<BuildInput>,
) -> Result<mpsc::Receiver<Result<BuildOutput, Status>>, AgentError> {
    let first = input
        .message()
        .await
        .map_err(|e| AgentError::Invalid(e.to_string()))?
        .ok_or_else(|| AgentError::Invalid("empty build request".into()))?;
    let mut auths = BTreeMap::new();
    for (host, basic) in &first.auths {
        if let Some(c) = Credentials::from_basic(basic) {
            auths.insert(skiff_runtime::image::auth::credential_key(host), c);
        }
    }
    let req = BuildRequest {
        dockerfile_name: if first.dockerfile_name.is_empty() {
            "Dockerfile".into()
        } else {
            first.dockerfile_name.clone()
        },
        dockerfile: Some(first.dockerfile.clone()),
        tags: first.tags.clone(),
        build_args: first.build_args.clone().into_iter().collect(),
        target: (!first.target.is_empty()).then(|| first.target.clone()),
        no_cache: first.no_cache,
        pull: first.pull,
        network: first.network.clone(),
        auths,
        labels: BTreeMap::new(),
        secrets: first.secrets.clone().into_iter().collect(),
    };
    let (ctx_tx, ctx_rx) = mpsc::channel::<Vec<u8>>(16);
    let _ = ctx_tx.send(first.context).await;
    tokio::spawn(async move {
        while let Ok(Some(m)) = input.message().await {
            if ctx_tx.send(m.context).await.is_err() {
                break;
            }
        }
    });
    let mut rx = run_build(containers, images, events, registry, req, ctx_rx).await?;
    let (tx, out) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let msg = match ev {
                BuildEvent::Line(line) => BuildOutput {
                    line,
                    ..Default::default()
                },
                BuildEvent::Built(image_id) => BuildOutput {
                    image_id,
                    ..Default::default()
                },
                BuildEvent::Failed(error) => BuildOutput {
                    error,
                    ..Default::default()
                },
            };
            if tx.send(Ok(msg)).await.is_err() {
                break;
            }
        }
    });
    Ok(out)
}

/// Unpacks the context (a tar, maybe compressed, from `context`) with the
/// breakout-proof unpacker, runs the build, and streams its events. Errors in the
/// request or the context come back before anything runs.
pub async fn run_build(
    containers: Arc<Containers>,
    images: Arc<ImageStore>,
    events: Arc<EventBus>,
    registry: RegistryConfig,
    req: BuildRequest,
    context: mpsc::Receiver<Vec<u8>>,
) -> Result<mpsc::Receiver<BuildEvent>, AgentError> {
    let tags = req
        .tags
        .iter()
        .map(|t| {
            Reference::parse(t).map_err(|e| AgentError::Invalid(format!("invalid tag {t:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = BuildOptions {
        dockerfile_name: req.dockerfile_name.clone(),
        dockerfile: req.dockerfile.clone().unwrap_or_default(),
        tags,
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        no_cache: req.no_cache,
        pull: req.pull,
        network: req.network.clone(),
        cache_file: containers.cfg.root.join("image/build-cache.json"),
        secrets: req.secrets.clone(),
        // Host networking and insecure RUN steps stay refused (no entitlement flag yet).
        allow_insecure: false,
    };
    // Parse errors are reported before the context is even read.
    if req.dockerfile.is_some() {
        skiff_runtime::build::dockerfile::parse(&opts.dockerfile_name, &opts.dockerfile)
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
    }
    let ctx_dir = images.temp_path("context");
    std::fs::create_dir_all(&ctx_dir)?;
    let dir = ctx_dir.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        let input = skiff_runtime::snapshot::unpack::decompressed(
            skiff_runtime::image::registry::ChannelReader::new(context),
        )
        .map_err(|e| e.to_string())?;
        skiff_runtime::snapshot::unpack::unpack_layer(input, &dir).map_err(|e| e.to_string())
    })
    .await
    .map_err(AgentError::internal)?;
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&ctx_dir);
        return Err(AgentError::Invalid(format!(
            "reading the build context: {e}"
        )));
    }
    if req.dockerfile.is_none() {
        let read = read_context_dockerfile(&ctx_dir, &opts.dockerfile_name).and_then(|d| {
            let d = with_labels(
                &opts.dockerfile_name,
                &d,
                opts.target.as_deref(),
                &req.labels,
            )?;
            skiff_runtime::build::dockerfile::parse(&opts.dockerfile_name, &d)
                .map_err(|e| AgentError::Invalid(e.to_string()))?;
            Ok(d)
        });
        match read {
            Ok(d) => opts.dockerfile = d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&ctx_dir);
                return Err(e);
            }
        }
    }
    let auths = req.auths;
    let (tx, rx) = mpsc::channel(1024);
    let span = tracing::info_span!("build", dockerfile = %opts.dockerfile_name);
    tokio::spawn(
        async move {
            let runner = AgentRunner {
                containers,
                images: images.clone(),
                registry,
                auths,
            };
            // Output lines are never dropped: the synchronous callback feeds an unbounded
            // queue, drained into the (bounded) response stream at the client's pace.
            let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<String>();
            let fwd = tx.clone();
            let forwarder = tokio::spawn(async move {
                while let Some(line) = lines_rx.recv().await {
                    if fwd.send(BuildEvent::Line(line)).await.is_err() {
                        break;
                    }
                }
            });
            let out = move |line: &str| {
                let _ = lines_tx.send(line.to_string());
            };
            let res = build::build(images, &runner, &opts, &ctx_dir, &out).await;
            // Every line reaches the client before the result does.
            drop(out);
            let _ = forwarder.await;
            let _ = std::fs::remove_dir_all(&ctx_dir);
            match res {
                Ok(id) => {
                    for t in &opts.tags {
                        events.emit(
                            "image",
                            "tag",
                            id.as_str(),
                            [("name".to_string(), t.to_string())].into(),
                        );
                    }
                    let _ = tx.send(BuildEvent::Built(id.to_string())).await;
                }
                Err(e) => {
                    tracing::info!(error = %e, "build failed");
                    let _ = tx.send(BuildEvent::Failed(e.to_string())).await;
                }
            }
        }
        .instrument(span),
    );
    Ok(rx)
}

/// Adapts a blocking writer producing an archive into a stream of chunks.
struct ChanWriter {
    tx: mpsc::Sender<Result<DataChunk, Status>>,
}

impl std::io::Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(DataChunk { data: b.to_vec() }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `save`: the archive streams out as it is written.
pub fn save(
    images: Arc<ImageStore>,
    names: Vec<String>,
) -> Result<mpsc::Receiver<Result<DataChunk, Status>>, AgentError> {
    for n in &names {
        images.resolve(n)?;
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let w = std::io::BufWriter::with_capacity(1 << 20, ChanWriter { tx: tx.clone() });
        if let Err(e) = skiff_runtime::image::save::save(&images, &names, w) {
            let _ = tx.blocking_send(Err(AgentError::from(e).into()));
        }
    });
    Ok(rx)
}

/// `history`: newest step first, sizes of the layers each step added.
pub fn history(images: &ImageStore, name: &str) -> Result<HistoryResponse, AgentError> {
    let img = images.resolve(name)?;
    let mut layers = img.record.layers.iter().rev();
    let mut entries = Vec::new();
    let n = img.config.history.len();
    for (i, h) in img.config.history.iter().enumerate().rev() {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map(|l| layer_size(images, l)).unwrap_or(0)
        };
        entries.push(HistoryEntry {
            id: if i + 1 == n {
                img.id().to_string()
            } else {
                "<missing>".into()
            },
            created_unix: h
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|d| d.timestamp())
                .unwrap_or(0),
            created_by: h.created_by.clone().unwrap_or_default(),
            size,
            comment: h.comment.clone().unwrap_or_default(),
            tags: if i + 1 == n {
                img.repo_tags.clone()
            } else {
                vec![]
            },
        });
    }
    Ok(HistoryResponse { entries })
}

fn layer_size(images: &ImageStore, l: &skiff_runtime::image::LayerRef) -> u64 {
    // Uncompressed size: the tar length of an uncompressed layer, else the blob's size.
    std::fs::metadata(images.blob_path(&l.digest))
        .map(|m| m.len())
        .unwrap_or(l.size)
}

/// `export`: the container's filesystem (image layers plus its changes) as a tar.
pub fn export(
    containers: &Containers,
    key: &str,
) -> Result<mpsc::Receiver<Result<DataChunk, Status>>, AgentError> {
    let e = containers.get(key)?;
    let r = e.record();
    let mut lowers = vec![e.paths.upper()];
    lowers.extend(r.lowers.iter().cloned());
    let view = containers.images.temp_path("export");
    std::fs::create_dir_all(&view)?;
    let opts = format!(
        "lowerdir={}",
        lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    if let Err(err) = nix::mount::mount(
        Some("overlay"),
        &view,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    ) {
        let _ = std::fs::remove_dir(&view);
        return Err(AgentError::Internal(format!(
            "mounting the container's filesystem: {err}"
        )));
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let w = std::io::BufWriter::with_capacity(1 << 20, ChanWriter { tx: tx.clone() });
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        let res = tar.append_dir_all(".", &view).and_then(|_| tar.finish());
        drop(tar);
        let _ = skiff_runtime::snapshot::unmount(&view);
        let _ = std::fs::remove_dir(&view);
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(Status::internal(format!("export: {e}"))));
        }
    });
    Ok(rx)
}

/// `commit`: the container's changes as a new layer on its image, with its config.
/// With `pause` (Docker's default) a running container is frozen while its changes are
/// read, so the layer is one consistent moment, and thawed after, whatever happened.
pub async fn commit(
    containers: &Containers,
    req: CommitRequest,
    pause: bool,
) -> Result<ImageRef, AgentError> {
    let e = containers.get(&req.container)?;
    let paused = pause
        && e.state().status == skiff_runtime::container::Status::Running
        && match containers.pause(&e.id).await {
            Ok(()) => true,
            Err(err) => {
                // As dockerd: a container that cannot be paused is committed as it runs.
                tracing::warn!(container_id = %e.id, error = %err, "commit: pause failed");
                false
            }
        };
    let res = commit_changes(containers, &e, req).await;
    if paused {
        if let Err(err) = containers.unpause(&e.id).await {
            tracing::warn!(container_id = %e.id, error = %err, "commit: unpause failed");
        }
    }
    res
}

/// The layer, config and image of a commit.
async fn commit_changes(
    containers: &Containers,
    e: &crate::containers::Entry,
    req: CommitRequest,
) -> Result<ImageRef, AgentError> {
    let r = e.record();
    let images = containers.images.clone();
    let reference = if req.reference.is_empty() {
        None
    } else {
        Some(Reference::parse(&req.reference).map_err(|x| AgentError::Invalid(x.to_string()))?)
    };
    let upper = e.paths.upper();
    let c = r.config.clone();
    let image_id = r.image_id.clone();
    let tags: Vec<Reference> = reference.clone().into_iter().collect();
    let id = tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
        let _g = images.ingest_guard()?;
        let base = images.resolve(image_id.as_str())?;
        let tmp = images.temp_path("commit");
        let res = (|| -> Result<_, AgentError> {
            let f = std::fs::File::create(&tmp)?;
            build::layer::diff_upper(&upper, std::io::BufWriter::new(f))
                .map_err(AgentError::internal)?;
            let (layer, _) = images.put_blob(std::fs::File::open(&tmp)?, None)?;
            let mut cfg = base.config.clone();
            let rc = &mut cfg.config;
            rc.cmd = Some(c.cmd.clone());
            rc.entrypoint = (!c.entrypoint.is_empty()).then(|| c.entrypoint.clone());
            rc.env = Some(c.env.clone());
            rc.working_dir = c.working_dir.clone();
            rc.user = c.user.clone();
            if !c.labels.is_empty() {
                let l = rc.labels.get_or_insert_with(Default::default);
                for (k, v) in &c.labels {
                    l.insert(k.clone(), v.clone());
                }
            }
            skiff_runtime::image::changes::apply(rc, &req.changes)?;
            cfg.rootfs.diff_ids.push(layer.clone());
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let author = (!req.author.is_empty()).then(|| req.author.clone());
            cfg.created = Some(now.clone());
            // Docker's commit sets the image's author (empty when none is given).
            cfg.author = author.clone();
            cfg.history.push(skiff_runtime::image::config::History {
                created: Some(now),
                created_by: Some(format!("{} {}", r.path, r.args.join(" "))),
                author,
                comment: (!req.message.is_empty()).then(|| req.message.clone()),
                empty_layer: false,
            });
            let cid = images.put_config(&cfg)?;
            let mut layers: Vec<_> = base
                .record
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.media_type.clone()))
                .collect();
            layers.push((layer, skiff_runtime::image::MEDIA_LAYER_TAR.into()));
            Ok(images.commit_image(&cid, layers, &tags, None)?)
        })();
        let _ = std::fs::remove_file(&tmp);
        res
    })
    .await
    .map_err(AgentError::internal)??;
    containers
        .events
        .emit("image", "commit", id.as_str(), Default::default());
    Ok(ImageRef {
        id: id.to_string(),
        reference: reference.map(|r| r.to_string()).unwrap_or_default(),
    })
}

/// Whether the image ID is only a build step's intermediate (hidden from `images` without -a).
pub fn intermediate_ids(root: &Path) -> std::collections::BTreeSet<String> {
    let cache: BTreeMap<String, String> =
        skiff_runtime::fsutil::read_json(&root.join("image/build-cache.json"))
            .ok()
            .flatten()
            .unwrap_or_default();
    cache.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_go_at_the_end_of_the_built_stage() {
        let l: BTreeMap<String, String> = [("a b".to_string(), "x\"y".to_string())].into();
        let df = "FROM busybox AS one\nRUN true\nFROM one AS two\nCMD [\"sh\"]\n";
        let last = with_labels("Dockerfile", df, None, &l).expect("ok");
        assert_eq!(
            last,
            "FROM busybox AS one\nRUN true\nFROM one AS two\nCMD [\"sh\"]\nLABEL \"a b\"=\"x\\\"y\"\n"
        );
        let first = with_labels("Dockerfile", df, Some("ONE"), &l).expect("ok");
        assert!(
            first.starts_with("FROM busybox AS one\nRUN true\nLABEL "),
            "{first}"
        );
        assert_eq!(
            with_labels("Dockerfile", df, None, &BTreeMap::new()).expect("ok"),
            df
        );
    }
}
