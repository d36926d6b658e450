//! `skiff build`: the Dockerfile executor.
//!
//! Each instruction yields an image in the store (untagged, like Docker's classic
//! builder), so a step's parent is always a real image and RUN steps can start a
//! container of it. The layer cache maps sha256(parent image ID, instruction with
//! variables expanded, and for COPY/ADD a hash of the copied files' content) to the
//! image that step produced; a cached rebuild therefore reproduces the same image IDs.
//!
//! RUN is delegated to a [`StepRunner`] (the agent), which runs the command in a
//! container through the same shim path as `skiff run` and diffs its overlay upper
//! directory into a layer ([`layer::diff_upper`]). Every layer, whatever its origin,
//! enters the store through `commit_image` and so through the breakout-proof unpacker.
//! `RUN --mount` sources (cache directories, secrets on a tmpfs, bind sources) are
//! prepared here and handed to the runner as ordinary mount points ([`mounts`]); the
//! stubs their targets leave in the upper directory are removed from the layer.

pub mod context;
pub mod dockerfile;
pub mod layer;
pub mod mounts;

use crate::digest::Digest;
use crate::image::config::{History, ImageConfig, RootFs};
use crate::image::{ImageError, ImageStore, Reference, MEDIA_LAYER_TAR};
use dockerfile::{CopySpec, Instruction, RunMount, RunSpec, Typed};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i32 },
    #[error("target stage {0:?} could not be found")]
    NoTarget(String),
}

/// What `skiff build` asked for.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Name of the Dockerfile as the user gave it (for error messages).
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// Pull base images even when present.
    pub pull: bool,
    /// Network for RUN containers: `host` (default) or `none`.
    pub network: String,
    /// Where the layer cache index lives; `RUN --mount=type=cache` directories live
    /// beside it (`build-cache-mounts/`), so they survive builds like the index does.
    pub cache_file: PathBuf,
    /// Build secrets by id (`--secret id=ID,...`), for `RUN --mount=type=secret`.
    pub secrets: HashMap<String, Vec<u8>>,
    /// BuildKit's `network.host` and `security.insecure` entitlements: without it,
    /// `RUN --network=host` and `RUN --security=insecure` are refused.
    pub allow_insecure: bool,
}

/// Secret values stay out of logs: Debug shows their ids only.
impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("dockerfile_name", &self.dockerfile_name)
            .field("tags", &self.tags)
            .field("build_args", &self.build_args)
            .field("target", &self.target)
            .field("no_cache", &self.no_cache)
            .field("pull", &self.pull)
            .field("network", &self.network)
            .field("cache_file", &self.cache_file)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("allow_insecure", &self.allow_insecure)
            .finish_non_exhaustive()
    }
}

/// BuildKit's automatic platform ARGs for a build of this host's platform (Skiff builds
/// only for the host): available in FROM lines, and in a stage once declared `ARG NAME`.
pub fn platform_args() -> BTreeMap<String, String> {
    let arch = crate::image::config::host_architecture();
    let variant = match arch {
        "arm" => "v7",
        _ => "",
    };
    let platform = if variant.is_empty() {
        format!("linux/{arch}")
    } else {
        format!("linux/{arch}/{variant}")
    };
    let mut m = BTreeMap::new();
    for side in ["BUILD", "TARGET"] {
        m.insert(format!("{side}PLATFORM"), platform.clone());
        m.insert(format!("{side}OS"), "linux".into());
        m.insert(format!("{side}ARCH"), arch.into());
        m.insert(format!("{side}VARIANT"), variant.into());
    }
    m
}

/// One RUN step, as the runner gets it.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub image: Digest,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub network: String,
    /// `RUN --mount` sources, ready to mount (binds and tmpfs).
    pub mounts: Vec<crate::volume::MountPoint>,
    /// `RUN --security=insecure` (only when the build allows it).
    pub privileged: bool,
}

pub type Output<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What the executor needs from the engine.
pub trait StepRunner: Send + Sync {
    /// Runs `req` in a container; on exit 0 writes the container's filesystem changes as
    /// a layer tar to `layer_out`. Returns the exit code.
    fn run<'a>(
        &'a self,
        req: RunRequest,
        layer_out: &'a Path,
        out: Output<'a>,
    ) -> BoxFuture<'a, Result<i32, String>>;
    /// Pulls an image that is not in the store (or `--pull`).
    fn pull<'a>(&'a self, image: &'a str, out: Output<'a>) -> BoxFuture<'a, Result<(), String>>;
}

/// The state of the stage being built.
#[derive(Clone)]
struct Stage {
    name: Option<String>,
    config: ImageConfig,
    layers: Vec<(Digest, String)>,
    /// Image after the last step (None only for `FROM scratch` before any step).
    id: Option<Digest>,
    args: BTreeMap<String, String>,
    cmd_set: bool,
}

impl Stage {
    fn env(&self) -> Vec<String> {
        self.config.config.env.clone().unwrap_or_default()
    }

    /// Variables for `$VAR` expansion: ARGs, overridden by ENV.
    fn vars(&self) -> HashMap<String, String> {
        let mut v: HashMap<String, String> = self.args.clone().into_iter().collect();
        for e in self.env() {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.into(), val.into());
            }
        }
        v
    }

    fn set_env(&mut self, k: &str, v: &str) {
        let env = self.config.config.env.get_or_insert_with(Vec::new);
        env.retain(|e| e.split('=').next() != Some(k));
        env.push(format!("{k}={v}"));
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn parent_key(&self) -> String {
        self.id
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "scratch".into())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A read-only merged view of an image's layers (for COPY --from): the single layer
/// directory itself, or an overlay mount removed on drop.
struct MergedView {
    path: PathBuf,
    mounted: bool,
}

impl MergedView {
    fn open(store: &ImageStore, lowers: &[PathBuf]) -> Result<Self, String> {
        match lowers {
            [] => {
                let p = store.temp_path("empty");
                std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                Ok(Self {
                    path: p,
                    mounted: false,
                })
            }
            [one] => Ok(Self {
                path: one.clone(),
                mounted: false,
            }),
            many => {
                let p = store.temp_path("view");
                std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
                let opts = format!(
                    "lowerdir={}",
                    many.iter()
                        .map(|l| l.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                );
                if let Err(e) = nix::mount::mount(
                    Some("overlay"),
                    &p,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(opts.as_str()),
                ) {
                    let _ = std::fs::remove_dir(&p);
                    return Err(format!("mounting the stage's filesystem: {e}"));
                }
                Ok(Self {
                    path: p,
                    mounted: true,
                })
            }
        }
    }
}

impl Drop for MergedView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = crate::snapshot::unmount(&self.path);
            let _ = std::fs::remove_dir(&self.path);
        } else if self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().starts_with("empty-"))
            .unwrap_or(false)
        {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Where the `--mount`/`COPY --from` sources of a step are read: the context or a view.
enum SourceRoot {
    Context(PathBuf),
    View(MergedView),
}

impl SourceRoot {
    fn path(&self) -> &Path {
        match self {
            SourceRoot::Context(p) => p,
            SourceRoot::View(v) => &v.path,
        }
    }
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Builder<'a> {
    store: Arc<ImageStore>,
    runner: &'a dyn StepRunner,
    opts: &'a BuildOptions,
    context: &'a Path,
    out: Output<'a>,
    cache: BTreeMap<String, Digest>,
    stages: Vec<Stage>,
}

fn load_cache(p: &Path) -> BTreeMap<String, Digest> {
    crate::fsutil::read_json(p)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Runs the build; returns the final image ID (tagged with `opts.tags`).
pub async fn build(
    store: Arc<ImageStore>,
    runner: &dyn StepRunner,
    opts: &BuildOptions,
    context: &Path,
    out: Output<'_>,
) -> Result<Digest, BuildError> {
    let instructions = dockerfile::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut b = Builder {
        cache: if opts.no_cache {
            BTreeMap::new()
        } else {
            load_cache(&opts.cache_file)
        },
        store,
        runner,
        opts,
        context,
        out,
        stages: Vec::new(),
    };
    let total = instructions.len();
    let platform = platform_args();
    let mut args = ArgScope {
        global: BTreeMap::new(),
        used: Vec::new(),
        platform: &platform,
    };
    let mut stage: Option<Stage> = None;
    for (n, ins) in instructions.iter().enumerate() {
        (b.out)(&format!("Step {}/{total} : {}", n + 1, ins.original));
        let step_err = |message: String| step_error(opts, ins, message);
        if ins.keyword == "FROM" {
            if let Some(s) = stage.take() {
                let name = s.name.clone();
                b.stages.push(s);
                if opts.target.is_some() && name == opts.target {
                    break;
                }
            }
            let Typed::From {
                image,
                alias,
                platform,
            } = ins.typed(&args.vars_for_from(opts)).map_err(step_err)?
            else {
                return Err(step_error(opts, ins, "not a FROM".into()));
            };
            if let Some(p) = platform {
                (b.out)(&format!(
                    "WARNING: --platform={p} is ignored: building for the host's platform"
                ));
            }
            let (s, triggers) = b.from(&image, alias).await.map_err(step_err)?;
            (b.out)(&format!(
                " ---> {}",
                s.id.as_ref()
                    .map(|d| d.short().to_string())
                    .unwrap_or_else(|| "scratch".into())
            ));
            let s = stage.insert(s);
            // ONBUILD triggers of the base image run first, as if written after FROM.
            if !triggers.is_empty() {
                (b.out)(&format!("# Executing {} build trigger(s)", triggers.len()));
            }
            for t in &triggers {
                let tins = dockerfile::parse_trigger(&opts.dockerfile_name, ins.line, t)?;
                if matches!(tins.keyword.as_str(), "FROM" | "ONBUILD" | "MAINTAINER") {
                    return Err(step_error(
                        opts,
                        ins,
                        format!("{} isn't allowed as an ONBUILD trigger", tins.keyword),
                    ));
                }
                b.instruction(s, &tins, &mut args).await?;
            }
            continue;
        }
        let Some(s) = stage.as_mut() else {
            // ARG before the first FROM: global, usable in FROM lines.
            if let Ok(Typed::Arg(list)) = ins.typed(&args.vars_for_from(opts)) {
                for (k, v) in list {
                    args.global.insert(k, v);
                }
            }
            continue;
        };
        b.instruction(s, ins, &mut args).await?;
    }
    if let Some(s) = stage.take() {
        b.stages.push(s);
    }
    let fin = match &opts.target {
        Some(t) => b
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(t.as_str()))
            .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
        None => b
            .stages
            .last()
            .ok_or_else(|| BuildError::NoTarget("(none)".into()))?,
    };
    let id = match &fin.id {
        Some(id) => id.clone(),
        None => {
            // `FROM scratch` with no further steps: an empty image.
            let mut s = fin.clone();
            b.commit(&mut s, None, "FROM scratch".into(), true)?;
            s.id.clone()
                .ok_or_else(|| BuildError::NoTarget("scratch".into()))?
        }
    };
    for k in opts.build_args.keys() {
        if !args.used.contains(k) && !args.global.contains_key(k) {
            (b.out)(&format!(
                "[Warning] One or more build-args [{k}] were not consumed"
            ));
        }
    }
    if !opts.no_cache || !b.cache.is_empty() {
        let mut all = load_cache(&opts.cache_file);
        all.extend(b.cache.clone());
        crate::fsutil::write_json_atomic(&opts.cache_file, &all)
            .map_err(|e| ImageError::io(&opts.cache_file, e))?;
    }
    (b.out)(&format!("Successfully built {}", id.short()));
    for t in &opts.tags {
        if let Some(name) = t.tagged() {
            b.store.tag(id.as_str(), &name)?;
            (b.out)(&format!("Successfully tagged {name}"));
        }
    }
    Ok(id)
}

/// ARGs seen so far: global ones (before the first FROM) and the names stages used.
struct ArgScope<'p> {
    global: BTreeMap<String, Option<String>>,
    used: Vec<String>,
    platform: &'p BTreeMap<String, String>,
}

impl ArgScope<'_> {
    /// Variables for FROM lines and global ARG defaults: the automatic platform ARGs,
    /// then global ARGs (their default or the `--build-arg` value).
    fn vars_for_from(&self, opts: &BuildOptions) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = self.platform.clone().into_iter().collect();
        for (k, v) in &self.global {
            if let Some(v) = opts.build_args.get(k).cloned().or(v.clone()) {
                vars.insert(k.clone(), v);
            }
        }
        vars
    }
}

fn step_error(opts: &BuildOptions, ins: &Instruction, message: String) -> BuildError {
    BuildError::Step {
        file: opts.dockerfile_name.clone(),
        line: ins.line,
        instruction: ins.keyword.clone(),
        message,
    }
}

enum StepError {
    Msg(String),
    Build(BuildError),
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError::Msg(s)
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> Self {
        StepError::Msg(s.into())
    }
}

impl From<ImageError> for StepError {
    fn from(e: ImageError) -> Self {
        StepError::Build(e.into())
    }
}

impl From<BuildError> for StepError {
    fn from(e: BuildError) -> Self {
        StepError::Build(e)
    }
}

impl Builder<'_> {
    /// The stage a FROM starts, and the base image's ONBUILD triggers to run in it.
    async fn from(
        &mut self,
        image: &str,
        alias: Option<String>,
    ) -> Result<(Stage, Vec<String>), String> {
        let lname = image.to_ascii_lowercase();
        if let Some(prev) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lname.as_str()))
        {
            let mut s = prev.clone();
            s.name = alias;
            s.args.clear();
            s.cmd_set = false;
            return Ok((s, Vec::new()));
        }
        if image == "scratch" {
            return Ok((
                Stage {
                    name: alias,
                    config: ImageConfig {
                        architecture: crate::image::config::host_architecture().into(),
                        os: "linux".into(),
                        rootfs: RootFs {
                            kind: "layers".into(),
                            diff_ids: vec![],
                        },
                        ..Default::default()
                    },
                    layers: vec![],
                    id: None,
                    args: BTreeMap::new(),
                    cmd_set: false,
                },
                Vec::new(),
            ));
        }
        let mut img = self.image(image).await?;
        // Triggers run in this build and are not inherited further (Docker's rule).
        let triggers = img.config.config.on_build.take().unwrap_or_default();
        let stage = Stage {
            name: alias,
            layers: img
                .record
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.media_type.clone()))
                .collect(),
            id: Some(img.id().clone()),
            config: img.config,
            args: BTreeMap::new(),
            cmd_set: false,
        };
        Ok((stage, triggers))
    }

    /// Runs one instruction (not FROM) in stage `s`.
    async fn instruction(
        &mut self,
        s: &mut Stage,
        ins: &Instruction,
        args: &mut ArgScope<'_>,
    ) -> Result<(), BuildError> {
        let opts = self.opts;
        let typed = ins.typed(&s.vars()).map_err(|m| step_error(opts, ins, m))?;
        if let Typed::Arg(list) = &typed {
            for (k, default) in list {
                args.used.push(k.clone());
                let v = opts
                    .build_args
                    .get(k)
                    .cloned()
                    .or_else(|| default.clone())
                    .or_else(|| args.global.get(k).cloned().flatten())
                    .or_else(|| args.platform.get(k).cloned());
                if let Some(v) = v {
                    s.args.insert(k.clone(), v);
                }
            }
            return Ok(());
        }
        let mut st = s.clone();
        self.step(&mut st, ins, typed).await.map_err(|e| match e {
            StepError::Msg(m) => step_error(opts, ins, m),
            StepError::Build(e) => e,
        })?;
        *s = st;
        (self.out)(&format!(
            " ---> {}",
            s.id.as_ref()
                .map(|d| d.short().to_string())
                .unwrap_or_default()
        ));
        Ok(())
    }

    /// The files a `--from=NAME` refers to: an earlier stage (by name or index) or an
    /// image; without a name, the build context.
    async fn source_root(&mut self, from: Option<&str>) -> Result<SourceRoot, StepError> {
        let Some(f) = from else {
            return Ok(SourceRoot::Context(self.context.to_path_buf()));
        };
        let lowers = if let Some(st) = self.stages.iter().find(|st| st.name.as_deref() == Some(f)) {
            self.lowers(&st.clone())?
        } else if let Some(st) = f.parse::<usize>().ok().and_then(|i| self.stages.get(i)) {
            self.lowers(&st.clone())?
        } else {
            let img = self.image(f).await?;
            self.store.lower_dirs(&img)?
        };
        Ok(SourceRoot::View(MergedView::open(&self.store, &lowers)?))
    }

    /// A base image from the store, pulled when absent (or always with `--pull`).
    async fn image(&self, name: &str) -> Result<crate::image::Image, String> {
        let local = self.store.resolve(name);
        if self.opts.pull || local.is_err() {
            if let Err(e) = self.runner.pull(name, self.out).await {
                return match local {
                    Ok(img) if self.opts.pull => {
                        (self.out)(&format!(
                            "WARNING: pulling {name} failed ({e}); using the local image"
                        ));
                        Ok(img)
                    }
                    _ => Err(format!(
                        "pull access denied or image not found for {name}: {e}"
                    )),
                };
            }
            return self.store.resolve(name).map_err(|e| e.to_string());
        }
        local.map_err(|e| e.to_string())
    }

    fn lowers(&self, s: &Stage) -> Result<Vec<PathBuf>, ImageError> {
        match &s.id {
            Some(id) => {
                let img = self.store.resolve(id.as_str())?;
                self.store.lower_dirs(&img)
            }
            None => Ok(vec![]),
        }
    }

    /// Records a step: optional layer, config change already applied to `s.config`.
    fn commit(
        &mut self,
        s: &mut Stage,
        layer: Option<&Path>,
        created_by: String,
        empty: bool,
    ) -> Result<(), BuildError> {
        let store = self.store.clone();
        let _ingest = store.ingest_guard()?;
        if let Some(p) = layer {
            let f = std::fs::File::open(p).map_err(|e| ImageError::io(p, e))?;
            let (d, _) = store.put_blob(f, None)?;
            s.layers.push((d.clone(), MEDIA_LAYER_TAR.into()));
            s.config.rootfs.diff_ids.push(d);
        }
        let t = now();
        s.config.created = Some(t.clone());
        s.config.history.push(History {
            created: Some(t),
            created_by: Some(created_by),
            comment: None,
            empty_layer: empty,
            ..Default::default()
        });
        let id = store.put_config(&s.config)?;
        let id =
            tokio::task::block_in_place(|| store.commit_image(&id, s.layers.clone(), &[], None))?;
        s.id = Some(id);
        Ok(())
    }

    fn cache_key(&self, s: &Stage, what: &str) -> String {
        Digest::of(format!("{}\n{what}", s.parent_key()).as_bytes()).to_string()
    }

    /// Switches `s` to a cached step's image, if the cache has one that still exists.
    fn cached(&self, s: &mut Stage, key: &str) -> bool {
        if self.opts.no_cache {
            return false;
        }
        let Some(id) = self.cache.get(key) else {
            return false;
        };
        let Ok(img) = self.store.resolve(id.as_str()) else {
            return false;
        };
        if self.store.lower_dirs(&img).is_err() {
            return false;
        }
        s.config = img.config.clone();
        s.layers = img
            .record
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.media_type.clone()))
            .collect();
        s.id = Some(img.id().clone());
        (self.out)(" ---> Using cache");
        true
    }

    async fn step(
        &mut self,
        s: &mut Stage,
        ins: &Instruction,
        typed: Typed,
    ) -> Result<(), StepError> {
        let shell = s.shell();
        match typed {
            Typed::Run(spec) => self.run(s, spec).await?,
            Typed::Copy(spec) => self.copy(s, ins, spec).await?,
            Typed::Workdir(w) => {
                let path = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", s.config.config.working_dir.trim_end_matches('/'))
                };
                let path = format!("/{}", context::clean(&path));
                let key = self.cache_key(s, &format!("WORKDIR {path}"));
                if self.cached(s, &key) {
                    return Ok(());
                }
                s.config.config.working_dir = path.clone();
                let lowers = self.lowers(s)?;
                if layer::lookup(&lowers, &path).is_none() {
                    let tmp = TempFile(self.store.temp_path("layer"));
                    let f = std::fs::File::create(&tmp.0).map_err(|e| ImageError::io(&tmp.0, e))?;
                    let plan = layer::CopyPlan {
                        sources: &[],
                        dest: path.clone(),
                        dest_is_dir: true,
                        owner: None,
                        chmod: None,
                        extract_archives: false,
                        lowers: &lowers,
                        exclude: &[],
                        parents: false,
                    };
                    mkdir_layer(&plan, f).map_err(|e| e.to_string())?;
                    self.commit(s, Some(&tmp.0), format!("WORKDIR {path}"), false)?;
                } else {
                    self.commit(s, None, format!("WORKDIR {path}"), true)?;
                }
                self.cache.insert(key, s.id.clone().ok_or("no image")?);
            }
            other => {
                let key = self.cache_key(s, &format!("{other:?}"));
                if self.cached(s, &key) {
                    if matches!(other, Typed::Cmd(_)) {
                        s.cmd_set = true;
                    }
                    return Ok(());
                }
                let c = &mut s.config.config;
                match other {
                    Typed::Env(pairs) => {
                        for (k, v) in pairs {
                            s.set_env(&k, &v);
                        }
                    }
                    Typed::Label(pairs) => {
                        let l = c.labels.get_or_insert_with(Default::default);
                        for (k, v) in pairs {
                            l.insert(k, v);
                        }
                    }
                    Typed::Cmd(cmd) => {
                        c.cmd = Some(cmd.argv(&shell));
                        s.cmd_set = true;
                    }
                    Typed::Entrypoint(cmd) => {
                        c.entrypoint = Some(cmd.argv(&shell));
                        // Docker: an ENTRYPOINT resets a CMD inherited from the base image.
                        if !s.cmd_set {
                            c.cmd = None;
                        }
                    }
                    Typed::User(u) => c.user = u,
                    Typed::Expose(ports) => {
                        let e = c.exposed_ports.get_or_insert_with(Default::default);
                        for p in ports {
                            e.insert(p, serde_json::json!({}));
                        }
                    }
                    Typed::Volume(vols) => {
                        let e = c.volumes.get_or_insert_with(Default::default);
                        for v in vols {
                            e.insert(v, serde_json::json!({}));
                        }
                    }
                    Typed::Healthcheck(h) => c.healthcheck = h,
                    Typed::Shell(sh) => c.shell = Some(sh),
                    Typed::StopSignal(sig) => c.stop_signal = sig,
                    Typed::Maintainer(_) => {}
                    Typed::OnBuild(t) => c.on_build.get_or_insert_with(Vec::new).push(t),
                    _ => {}
                }
                s.config.validate().map_err(|e| e.to_string())?;
                self.commit(s, None, ins.original.clone(), true)?;
                self.cache.insert(key, s.id.clone().ok_or("no image")?);
            }
        }
        Ok(())
    }

    /// RUN: mounts prepared, the command run by the runner, stubs dropped from the layer.
    async fn run(&mut self, s: &mut Stage, spec: RunSpec) -> Result<(), StepError> {
        let shell = s.shell();
        let network = match spec.network.as_deref() {
            Some("host") if !self.opts.allow_insecure => {
                return Err("RUN --network=host needs the network.host entitlement, which this build was not given".into())
            }
            Some(n) => n.to_string(),
            None if self.opts.network.is_empty() => "host".into(),
            None => self.opts.network.clone(),
        };
        if spec.insecure && !self.opts.allow_insecure {
            return Err("RUN --security=insecure needs the security.insecure entitlement, which this build was not given".into());
        }
        let argv = match &spec.script {
            Some((name, data)) => shebang_argv(data, &script_path(name)),
            None => spec.cmd.argv(&shell),
        };
        let mut env = s.env();
        for (k, v) in &s.args {
            if !env.iter().any(|e| e.split('=').next() == Some(k)) {
                env.push(format!("{k}={v}"));
            }
        }
        // Bind sources are resolved first: their content is part of the cache key.
        let mut roots: Vec<(SourceRoot, PathBuf)> = Vec::new();
        let mut mount_key = Vec::new();
        for m in &spec.mounts {
            match m {
                RunMount::Bind {
                    target,
                    source,
                    from,
                    rw,
                } => {
                    let root = self.source_root(from.as_deref()).await?;
                    let path = mounts::resolve_in_root(root.path(), source)
                        .map_err(|e| format!("--mount source {source:?}: {e}"))?;
                    let meta = std::fs::metadata(&path).map_err(|_| {
                        format!(
                            "--mount=type=bind: source {source:?} not found in {}",
                            from.as_deref().unwrap_or("the build context")
                        )
                    })?;
                    let content = layer::hash_sources(&[context::Source {
                        path: path.clone(),
                        rel: String::new(),
                        is_dir: meta.is_dir(),
                    }])
                    .map_err(|e| e.to_string())?;
                    mount_key.push(format!("bind {target} rw={rw} {content}"));
                    roots.push((root, path));
                }
                RunMount::Cache {
                    target,
                    id,
                    readonly,
                    ..
                } => mount_key.push(format!("cache {target} {id} ro={readonly}")),
                // Secret values never reach a cache key, a layer or the history.
                RunMount::Secret {
                    id, target, env, ..
                } => mount_key.push(format!("secret {id} {target:?} {env:?}")),
                RunMount::Tmpfs { target, size } => {
                    mount_key.push(format!("tmpfs {target} {size:?}"))
                }
            }
        }
        let what = format!(
            "RUN {}\nenv={}\nuser={}\nworkdir={}\nnet={network}\ninsecure={}\nmounts={}\nscript={:?}",
            serde_json::to_string(&argv).unwrap_or_default(),
            env.join("\0"),
            s.config.config.user,
            s.config.config.working_dir,
            spec.insecure,
            mount_key.join("\0"),
            spec.script,
        );
        let key = self.cache_key(s, &what);
        if self.cached(s, &key) {
            return Ok(());
        }
        let image =
            s.id.clone()
                .ok_or("RUN in a `FROM scratch` stage with no files: there is no shell to run")?;
        let mut held = mounts::Held::default();
        let points = self
            .prepare_mounts(&spec, &mut roots, &mut held, &mut env)
            .await?;
        let lowers = self.lowers(s)?;
        let stubs = mounts::mount_stubs(
            &lowers,
            &points
                .iter()
                .map(|p| p.destination.clone())
                .collect::<Vec<_>>(),
        );
        let tmp = TempFile(self.store.temp_path("layer"));
        let req = RunRequest {
            image,
            argv: argv.clone(),
            env,
            workdir: s.config.config.working_dir.clone(),
            user: s.config.config.user.clone(),
            network,
            mounts: points,
            privileged: spec.insecure,
        };
        let code = self.runner.run(req, &tmp.0, self.out).await;
        drop(held);
        drop(roots);
        let code = code?;
        if code != 0 {
            return Err(BuildError::RunFailed {
                command: argv.join(" "),
                code,
            }
            .into());
        }
        tokio::task::block_in_place(|| mounts::drop_stubs(&tmp.0, &stubs))
            .map_err(|e| e.to_string())?;
        let created_by = match (&spec.cmd, &spec.script) {
            (_, Some((name, _))) => format!("RUN {}", script_path(name)),
            (dockerfile::Command::Shell(c), None) => format!("RUN {} {c}", shell.join(" ")),
            (dockerfile::Command::Exec(v), None) => {
                format!("RUN {}", serde_json::to_string(v).unwrap_or_default())
            }
        };
        self.commit(s, Some(&tmp.0), created_by, false)?;
        self.cache.insert(key, s.id.clone().ok_or("no image")?);
        Ok(())
    }

    /// Turns a RUN's `--mount`s (and a `#!` heredoc script) into mount points; what
    /// must be undone after the step goes into `held`, secret env values into `env`.
    async fn prepare_mounts(
        &mut self,
        spec: &RunSpec,
        roots: &mut [(SourceRoot, PathBuf)],
        held: &mut mounts::Held,
        env: &mut Vec<String>,
    ) -> Result<Vec<crate::volume::MountPoint>, StepError> {
        use crate::volume::{MountKind, MountPoint};
        let bind = |source: PathBuf, destination: &str, rw: bool| MountPoint {
            kind: MountKind::Bind,
            source,
            destination: destination.to_string(),
            rw,
            ..Default::default()
        };
        let mut points = Vec::new();
        let mut roots = roots.iter();
        let mut secret_dir: Option<PathBuf> = None;
        for m in &spec.mounts {
            match m {
                RunMount::Bind { target, rw, .. } => {
                    let (_, path) = roots.next().ok_or("bind mount source went missing")?;
                    let source = if *rw {
                        // Writes are allowed but thrown away: the step gets a copy.
                        let dir = held
                            .temp_dir(self.store.temp_path("bind"))
                            .map_err(|e| e.to_string())?;
                        let copy = dir.join("data");
                        let p = path.clone();
                        let c = copy.clone();
                        tokio::task::block_in_place(|| mounts::copy_tree(&p, &c))
                            .map_err(|e| format!("copying the bind mount source: {e}"))?;
                        copy
                    } else {
                        path.clone()
                    };
                    points.push(bind(source, target, *rw));
                }
                RunMount::Cache {
                    target,
                    id,
                    sharing,
                    mode,
                    uid,
                    gid,
                    from,
                    source,
                    readonly,
                } => {
                    let root = self.cache_mounts_root()?;
                    let (dir, lock) =
                        tokio::task::block_in_place(|| mounts::lock_cache(&root, id, *sharing))
                            .map_err(|e| format!("cache mount {id:?}: {e}"))?;
                    if let Some(l) = lock {
                        held.keep_lock(l);
                    }
                    let new = mounts::ensure_cache_dir(&dir, *mode, *uid, *gid)
                        .map_err(|e| format!("cache mount {id:?}: {e}"))?;
                    if new && from.is_some() {
                        let view = self.source_root(from.as_deref()).await?;
                        let src = mounts::resolve_in_root(view.path(), source)
                            .map_err(|e| format!("cache mount {id:?} source: {e}"))?;
                        if src.exists() {
                            tokio::task::block_in_place(|| mounts::copy_tree(&src, &dir))
                                .map_err(|e| format!("seeding cache mount {id:?}: {e}"))?;
                        }
                    }
                    points.push(bind(dir, target, !readonly));
                }
                RunMount::Secret {
                    id,
                    target,
                    env: var,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(value) = self.opts.secrets.get(id) else {
                        if *required {
                            return Err(format!(
                                "secret {id:?} is required but was not provided (pass it with --secret id={id},src=FILE)"
                            )
                            .into());
                        }
                        continue;
                    };
                    if let Some(t) = target {
                        let dir = match &secret_dir {
                            Some(d) => d.clone(),
                            None => {
                                let d = held
                                    .tmpfs_dir(self.store.temp_path("secrets"))
                                    .map_err(|e| format!("secrets tmpfs: {e}"))?;
                                secret_dir = Some(d.clone());
                                d
                            }
                        };
                        let f = mounts::write_secret(&dir, id, value, *mode, *uid, *gid)
                            .map_err(|e| format!("secret {id:?}: {e}"))?;
                        points.push(bind(f, t, false));
                    }
                    if let Some(v) = var {
                        env.retain(|e| e.split('=').next() != Some(v.as_str()));
                        env.push(format!("{v}={}", String::from_utf8_lossy(value)));
                    }
                }
                RunMount::Tmpfs { target, size } => points.push(MountPoint {
                    kind: MountKind::Tmpfs,
                    destination: target.clone(),
                    rw: true,
                    options: size.map(|n| vec![format!("size={n}")]).unwrap_or_default(),
                    ..Default::default()
                }),
            }
        }
        if let Some((name, data)) = &spec.script {
            let dir = held
                .temp_dir(self.store.temp_path("pipes"))
                .map_err(|e| e.to_string())?;
            let f = dir.join("script");
            std::fs::write(&f, data).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            points.push(bind(f, &script_path(name), false));
        }
        Ok(points)
    }

    /// `<root>/image/build-cache-mounts`: beside the layer cache index.
    fn cache_mounts_root(&self) -> Result<PathBuf, String> {
        self.opts
            .cache_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.join("build-cache-mounts"))
            .ok_or_else(|| "the builder has no state directory for cache mounts".into())
    }

    async fn copy(
        &mut self,
        s: &mut Stage,
        ins: &Instruction,
        spec: CopySpec,
    ) -> Result<(), StepError> {
        let CopySpec {
            add,
            srcs,
            inline,
            dest,
            chown,
            chmod,
            from,
            parents,
            exclude,
            link: _, // layers are always independent of their parent here
            checksum,
            keep_git_dir,
        } = spec;
        if add {
            if let Some(u) = srcs.iter().find(|s| is_remote(s)) {
                return Err(format!(
                    "ADD {u}: remote sources (URLs, git repositories) need the network, which this builder does not use; put the file in the build context"
                )
                .into());
            }
            if keep_git_dir {
                return Err("ADD --keep-git-dir: git sources need the network, which this builder does not use".into());
            }
            if checksum.is_some() && (srcs.len() != 1 || !inline.is_empty()) {
                return Err("ADD --checksum needs exactly one source".into());
            }
        }
        // The root sources are resolved in: the context, or another stage's / image's files.
        let root = self.source_root(from.as_deref()).await?;
        let mut sources = Vec::new();
        for src in &srcs {
            // `--parents` with a `/./` pivot keeps only the path after the pivot.
            let pivot = match (parents, src.split_once("/./")) {
                (true, Some((p, _))) => context::clean(p),
                _ => String::new(),
            };
            let found = context::resolve_sources(root.path(), src).map_err(|e| e.to_string())?;
            if found.is_empty() {
                return Err(format!(
                    "{}: \"{src}\": no such file or directory",
                    if from.is_some() {
                        "source"
                    } else {
                        "file not found in build context or excluded by .dockerignore"
                    }
                )
                .into());
            }
            for mut f in found {
                if layer::excluded(&exclude, &f.rel) {
                    continue;
                }
                if !pivot.is_empty() {
                    f.rel = f
                        .rel
                        .strip_prefix(&format!("{pivot}/"))
                        .unwrap_or(&f.rel)
                        .to_string();
                }
                sources.push(f);
            }
        }
        // Heredoc sources become files named after their delimiter.
        let mut held = mounts::Held::default();
        if !inline.is_empty() {
            let dir = held
                .temp_dir(self.store.temp_path("inline"))
                .map_err(|e| e.to_string())?;
            for (name, content) in &inline {
                let rel = context::clean(name);
                if rel.is_empty() || rel.contains('/') {
                    return Err(format!("heredoc name {name:?} is not a file name").into());
                }
                let p = dir.join(&rel);
                std::fs::write(&p, content).map_err(|e| e.to_string())?;
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .map_err(|e| e.to_string())?;
                sources.push(context::Source {
                    path: p,
                    rel,
                    is_dir: false,
                });
            }
        }
        if let Some(c) = &checksum {
            verify_checksum(&sources, c)?;
        }
        let workdir = s.config.config.working_dir.clone();
        let abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!(
                "{}/{dest}",
                if workdir.is_empty() {
                    ""
                } else {
                    workdir.trim_end_matches('/')
                }
            )
        };
        let shown = format!(
            "/{}{}",
            context::clean(&abs),
            if abs.ends_with('/') || abs.ends_with("/.") {
                "/"
            } else {
                ""
            }
        );
        let lowers = self.lowers(s)?;
        let dest_is_dir = dest.ends_with('/')
            || dest.ends_with("/.")
            || parents
            || sources.len() > 1
            || layer::lookup(&lowers, &abs) == Some(layer::Kind::Dir);
        let owner = match &chown {
            Some(c) => Some(resolve_owner(&lowers, c)?),
            None => None,
        };
        let content = layer::hash_sources(&sources).map_err(|e| e.to_string())?;
        let what = format!(
            "{} {srcs:?} -> {abs} dir={dest_is_dir} owner={owner:?} chmod={chmod:?} from={from:?} parents={parents} exclude={exclude:?}\ncontent={content}",
            ins.keyword
        );
        let key = self.cache_key(s, &what);
        if self.cached(s, &key) {
            return Ok(());
        }
        let tmp = TempFile(self.store.temp_path("layer"));
        let f = std::fs::File::create(&tmp.0).map_err(|e| ImageError::io(&tmp.0, e))?;
        let plan = layer::CopyPlan {
            sources: &sources,
            dest: abs.clone(),
            dest_is_dir,
            owner,
            chmod: chmod.as_ref(),
            extract_archives: add,
            lowers: &lowers,
            exclude: &exclude,
            parents,
        };
        layer::copy_layer(&plan, f).map_err(|e| e.to_string())?;
        drop(root);
        drop(held);
        let mut shown_srcs: Vec<String> = srcs.clone();
        shown_srcs.extend(inline.iter().map(|(n, _)| format!("<<{n}")));
        let created_by = format!("{} {} {shown}", ins.keyword, shown_srcs.join(" "));
        self.commit(s, Some(&tmp.0), created_by, false)?;
        self.cache.insert(key, s.id.clone().ok_or("no image")?);
        Ok(())
    }
}

/// Where a `#!` heredoc script is mounted for its RUN. BuildKit uses `/dev/pipes/`, but
/// `/dev` is the runtime's own tmpfs here; the mount point stub is dropped from the layer.
fn script_path(name: &str) -> String {
    format!("/run/heredoc/{name}")
}

/// The argv the kernel would make of a `#!` script: interpreter, its optional single
/// argument, the script. Spelled out because the runtime checks argv[0] in the image
/// before mounts exist, and the script is a mount.
fn shebang_argv(data: &str, path: &str) -> Vec<String> {
    let line = data.lines().next().unwrap_or_default();
    let line = line.strip_prefix("#!").unwrap_or(line).trim();
    let mut argv = Vec::new();
    match line.split_once(char::is_whitespace) {
        Some((interp, arg)) => {
            argv.push(interp.to_string());
            argv.push(arg.trim().to_string());
        }
        None if !line.is_empty() => argv.push(line.to_string()),
        None => {}
    }
    argv.push(path.to_string());
    argv
}

/// URLs and git references: ADD sources that would need the network.
fn is_remote(src: &str) -> bool {
    let l = src.to_ascii_lowercase();
    ["http://", "https://", "git://", "git@", "ssh://", "git+"]
        .iter()
        .any(|p| l.starts_with(p))
        || (l.contains("://") && l.ends_with(".git"))
}

/// `ADD --checksum=sha256:HEX` for a local file: the file's bytes must hash to HEX.
fn verify_checksum(sources: &[context::Source], want: &str) -> Result<(), String> {
    use sha2::Digest as _;
    let [src] = sources else {
        return Err("ADD --checksum needs exactly one source file".into());
    };
    if src.is_dir {
        return Err(format!(
            "ADD --checksum: {} is a directory, not a file",
            src.rel
        ));
    }
    let mut f = std::fs::File::open(&src.path).map_err(|e| format!("{}: {e}", src.rel))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", src.rel))?;
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    if !got.eq_ignore_ascii_case(want) {
        return Err(format!(
            "ADD --checksum: {} has checksum {got}, expected {want}",
            src.rel
        ));
    }
    Ok(())
}

/// A layer holding only the destination directory (and missing parents).
fn mkdir_layer(plan: &layer::CopyPlan, out: std::fs::File) -> Result<(), layer::LayerError> {
    layer::copy_layer(plan, out)
}

/// `--chown=USER[:GROUP]`: numbers, or names looked up in the stage's /etc/passwd and /etc/group.
fn resolve_owner(lowers: &[PathBuf], spec: &str) -> Result<layer::Owner, String> {
    let (u, g) = spec
        .split_once(':')
        .map(|(u, g)| (u, Some(g)))
        .unwrap_or((spec, None));
    let read = |f: &str| -> String {
        lowers
            .iter()
            .map(|l| l.join(f))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let lookup = |file: &str, name: &str, col: usize| -> Result<u32, String> {
        if let Ok(n) = name.parse() {
            return Ok(n);
        }
        read(file)
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .and_then(|l| l.split(':').nth(col))
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| {
                format!(
                    "unable to find {} {name:?} in the image's {file}",
                    if col == 2 && file.ends_with("passwd") {
                        "user"
                    } else {
                        "group"
                    }
                )
            })
    };
    let uid = lookup("etc/passwd", u, 2)?;
    let gid = match g {
        Some(g) => lookup("etc/group", g, 2)?,
        None if u.parse::<u32>().is_ok() => uid,
        None => lookup("etc/passwd", u, 3)?,
    };
    Ok(layer::Owner { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records RUN requests and answers with a layer holding `entries` (name, data;
    /// names ending in `/` are directories).
    #[derive(Default)]
    struct Fake {
        reqs: Mutex<Vec<RunRequest>>,
        entries: Vec<(String, Vec<u8>)>,
    }

    impl StepRunner for Fake {
        fn run<'a>(
            &'a self,
            req: RunRequest,
            layer_out: &'a Path,
            _out: Output<'a>,
        ) -> BoxFuture<'a, Result<i32, String>> {
            Box::pin(async move {
                if let Ok(mut r) = self.reqs.lock() {
                    r.push(req);
                }
                let f = std::fs::File::create(layer_out).map_err(|e| e.to_string())?;
                let mut b = tar::Builder::new(f);
                for (name, data) in &self.entries {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(if name.ends_with('/') {
                        tar::EntryType::Directory
                    } else {
                        tar::EntryType::Regular
                    });
                    h.set_size(data.len() as u64);
                    h.set_mode(0o755);
                    h.set_uid(0);
                    h.set_gid(0);
                    h.set_mtime(0);
                    b.append_data(&mut h, name, &data[..])
                        .map_err(|e| e.to_string())?;
                }
                b.finish().map_err(|e| e.to_string())?;
                Ok(0)
            })
        }

        fn pull<'a>(&'a self, image: &'a str, _: Output<'a>) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move { Err(format!("{image}: offline")) })
        }
    }

    struct Env {
        dir: tempfile::TempDir,
        store: Arc<ImageStore>,
    }

    impl Env {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Arc::new(ImageStore::open(&dir.path().join("image")).expect("store"));
            std::fs::create_dir_all(dir.path().join("ctx")).expect("ctx");
            Env { dir, store }
        }

        fn ctx(&self) -> PathBuf {
            self.dir.path().join("ctx")
        }

        fn write(&self, rel: &str, data: &str) {
            let p = self.ctx().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, data).expect("write");
        }

        fn opts(&self, df: &str) -> BuildOptions {
            BuildOptions {
                dockerfile_name: "Dockerfile".into(),
                dockerfile: df.into(),
                cache_file: self.dir.path().join("image/build-cache.json"),
                ..Default::default()
            }
        }

        async fn build(&self, runner: &Fake, opts: BuildOptions) -> Result<Digest, BuildError> {
            let lines = Mutex::new(Vec::<String>::new());
            let out = |l: &str| {
                if let Ok(mut v) = lines.lock() {
                    v.push(l.to_string());
                }
            };
            build(self.store.clone(), runner, &opts, &self.ctx(), &out).await
        }

        /// Mode and content of `path` in the image (topmost layer first).
        fn file(&self, id: &Digest, path: &str) -> Option<(u32, String)> {
            use std::os::unix::fs::MetadataExt;
            let img = self.store.resolve(id.as_str()).expect("image");
            let lowers = self.store.lower_dirs(&img).expect("lowers");
            layer::lookup(&lowers, path)?;
            let p = lowers
                .iter()
                .map(|l| l.join(path.trim_start_matches('/')))
                .find(|p| p.symlink_metadata().is_ok())?;
            let mode = p.symlink_metadata().ok()?.mode() & 0o7777;
            Some((mode, std::fs::read_to_string(&p).unwrap_or_default()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copy_heredocs_parents_exclude_and_chmod() {
        let e = Env::new();
        e.write("x/a.txt", "a");
        e.write("x/b.md", "b");
        e.write("y/c.txt", "c");
        let df = "FROM scratch\nARG WHO=you\nCOPY <<EOF <<'RAW' /etc/\nhello $WHO\nEOF\nraw $WHO\nRAW\nCOPY <<EOF /greeting\nhi\nEOF\nCOPY --parents x/a.txt y/c.txt /p/\nCOPY --parents ./x/./a.txt /q/\nCOPY --exclude=*.md x /e/\nCOPY --chmod=u+x,go-r x/a.txt /m\nCOPY --link --chmod=640 x/a.txt /o\n";
        let id = e.build(&Fake::default(), e.opts(df)).await.expect("build");
        assert_eq!(
            e.file(&id, "/etc/EOF").map(|f| f.1).as_deref(),
            Some("hello you\n")
        );
        assert_eq!(
            e.file(&id, "/etc/RAW").map(|f| f.1).as_deref(),
            Some("raw $WHO\n")
        );
        assert_eq!(e.file(&id, "/greeting"), Some((0o644, "hi\n".into())));
        assert!(e.file(&id, "/p/x/a.txt").is_some());
        assert!(e.file(&id, "/p/y/c.txt").is_some());
        assert!(e.file(&id, "/q/a.txt").is_some());
        assert!(e.file(&id, "/q/x").is_none());
        assert!(e.file(&id, "/e/a.txt").is_some());
        assert!(e.file(&id, "/e/b.md").is_none(), "--exclude");
        assert_eq!(e.file(&id, "/m").map(|f| f.0), Some(0o700));
        assert_eq!(e.file(&id, "/o").map(|f| f.0), Some(0o640));
        let img = e.store.resolve(id.as_str()).expect("image");
        let hist: Vec<String> = img
            .config
            .history
            .iter()
            .filter_map(|h| h.created_by.clone())
            .collect();
        assert!(hist.iter().any(|h| h == "COPY <<EOF /greeting"), "{hist:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn onbuild_triggers_run_in_the_child_build() {
        let e = Env::new();
        e.write("t.txt", "from the child's context");
        let mut o =
            e.opts("FROM scratch\nCOPY <<EOF /base\nb\nEOF\nONBUILD COPY t.txt /from-trigger\n");
        o.tags = vec![Reference::parse("parent:1").expect("ref")];
        let parent = e.build(&Fake::default(), o).await.expect("parent");
        let img = e.store.resolve(parent.as_str()).expect("parent image");
        assert_eq!(
            img.config.config.on_build,
            Some(vec!["COPY t.txt /from-trigger".to_string()])
        );
        assert!(e.file(&parent, "/from-trigger").is_none());
        let child = e
            .build(
                &Fake::default(),
                e.opts("FROM parent:1\nCOPY <<EOF /child\nc\nEOF\n"),
            )
            .await
            .expect("child");
        assert_eq!(
            e.file(&child, "/from-trigger").map(|f| f.1).as_deref(),
            Some("from the child's context")
        );
        let img = e.store.resolve(child.as_str()).expect("child image");
        assert_eq!(
            img.config.config.on_build, None,
            "triggers are not inherited"
        );
        // A trigger failing names the FROM line.
        let mut o = e.opts("FROM scratch\nONBUILD COPY missing.txt /x\n");
        o.tags = vec![Reference::parse("bad:1").expect("ref")];
        e.build(&Fake::default(), o).await.expect("bad parent");
        let err = e
            .build(&Fake::default(), e.opts("\nFROM bad:1\n"))
            .await
            .expect_err("trigger fails");
        assert!(err.to_string().starts_with("Dockerfile:2: COPY"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn platform_args_need_a_declaration_in_stages() {
        let e = Env::new();
        let df = "FROM scratch\nENV BEFORE=x$TARGETARCH\nARG TARGETARCH\nARG BUILDPLATFORM\nARG TARGETVARIANT\nENV ARCH=$TARGETARCH PLAT=$BUILDPLATFORM\n";
        let id = e.build(&Fake::default(), e.opts(df)).await.expect("build");
        let img = e.store.resolve(id.as_str()).expect("image");
        let env = img.config.config.env.unwrap_or_default();
        let arch = crate::image::config::host_architecture();
        assert!(env.contains(&"BEFORE=x".to_string()), "{env:?}");
        assert!(env.contains(&format!("ARCH={arch}")), "{env:?}");
        assert!(env.iter().any(|v| v.starts_with("PLAT=linux/")), "{env:?}");
        // Global scope: FROM lines see them without a declaration.
        let scope = ArgScope {
            global: BTreeMap::new(),
            used: vec![],
            platform: &platform_args(),
        };
        let vars = scope.vars_for_from(&e.opts(""));
        assert_eq!(vars.get("TARGETOS").map(String::as_str), Some("linux"));
        assert_eq!(vars.get("BUILDARCH").map(String::as_str), Some(arch));
    }

    /// A stage with a "shell" so RUN has an image to start.
    const BASE: &str = "FROM scratch\nCOPY <<EOF /bin/sh\nfake\nEOF\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(skiff_root), ignore = "needs root: mounts and namespaces")]
    async fn run_mounts_reach_the_runner_and_leave_no_trace() {
        let e = Env::new();
        let runner = Fake {
            entries: vec![
                ("t/".into(), vec![]),
                ("cache/".into(), vec![]),
                ("out.txt".into(), b"made".to_vec()),
            ],
            ..Default::default()
        };
        let df = format!(
            "{BASE}RUN --mount=type=cache,id=c1,target=/cache --mount=type=secret,id=tok,env=TOKEN --mount=type=tmpfs,target=/t,size=1k --network=none echo hi\n"
        );
        let mut o = e.opts(&df);
        o.secrets.insert("tok".into(), b"s3cret".to_vec());
        let id = e.build(&runner, o.clone()).await.expect("build");
        let reqs = runner.reqs.lock().expect("lock").clone();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.network, "none");
        assert!(r.env.contains(&"TOKEN=s3cret".to_string()));
        assert_eq!(r.mounts.len(), 2);
        assert_eq!(r.mounts[0].destination, "/cache");
        assert!(r.mounts[0]
            .source
            .starts_with(e.dir.path().join("image/build-cache-mounts")));
        assert!(r.mounts[0].source.is_dir(), "the cache directory persists");
        assert_eq!(r.mounts[1].kind, crate::volume::MountKind::Tmpfs);
        assert_eq!(r.mounts[1].options, ["size=1024"]);
        assert!(e.file(&id, "/out.txt").is_some());
        assert!(e.file(&id, "/t").is_none(), "tmpfs stub dropped");
        assert!(e.file(&id, "/cache").is_none(), "cache stub dropped");
        let img = e.store.resolve(id.as_str()).expect("image");
        let cfg = serde_json::to_string(&img.config).expect("json");
        assert!(!cfg.contains("s3cret"), "secret in the config: {cfg}");
        // Same cache id, second build: the very same directory.
        let again = e.build(&runner, {
            let mut o = o.clone();
            o.no_cache = true;
            o
        });
        again.await.expect("second build");
        let reqs = runner.reqs.lock().expect("lock").clone();
        assert_eq!(reqs[1].mounts[0].source, reqs[0].mounts[0].source);
        // A required secret that was not given is named.
        let df = format!("{BASE}RUN --mount=type=secret,id=api,required=true true\n");
        let err = e.build(&runner, e.opts(&df)).await.expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("Dockerfile:5: RUN: secret \"api\" is required"),
            "{err}"
        );
        // Not required and absent: skipped.
        let df = format!("{BASE}RUN --mount=type=secret,id=api true\n");
        e.build(&runner, e.opts(&df)).await.expect("optional");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secret_files_live_on_a_tmpfs_that_is_gone_after_the_step() {
        if !nix::unistd::geteuid().is_root() {
            return; // mounting the tmpfs needs root
        }
        let e = Env::new();
        let runner = Fake::default();
        let mut o = e.opts(&format!(
            "{BASE}RUN --mount=type=secret,id=tok,mode=0440,uid=7 cat /run/secrets/tok\n"
        ));
        o.secrets.insert("tok".into(), b"s3cret".to_vec());
        e.build(&runner, o).await.expect("build");
        let r = runner.reqs.lock().expect("lock")[0].clone();
        assert_eq!(r.mounts[0].destination, "/run/secrets/tok");
        assert!(!r.mounts[0].rw);
        assert!(!r.mounts[0].source.exists(), "the secret file is gone");
        assert!(!r.env.iter().any(|v| v.contains("s3cret")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_flags_entitlements_scripts_and_binds() {
        let e = Env::new();
        let runner = Fake::default();
        for (flag, what) in [
            ("--network=host", "network.host"),
            ("--security=insecure", "security.insecure"),
        ] {
            let df = format!("{BASE}RUN {flag} true\n");
            let err = e.build(&runner, e.opts(&df)).await.expect_err(flag);
            assert!(err.to_string().contains(what), "{err}");
            let mut o = e.opts(&df);
            o.allow_insecure = true;
            e.build(&runner, o).await.expect("allowed");
        }
        {
            let reqs = runner.reqs.lock().expect("lock");
            assert_eq!(reqs[0].network, "host");
            assert!(reqs[1].privileged);
        }
        // `#!` heredoc: run as a file under /run/heredoc.
        let df = format!("{BASE}RUN <<EOT\n#!/bin/sh\necho hi\nEOT\n");
        e.build(&runner, e.opts(&df)).await.expect("script");
        let r = runner
            .reqs
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("req");
        assert_eq!(r.argv, ["/bin/sh", "/run/heredoc/EOT"]);
        assert_eq!(
            shebang_argv("#!/usr/bin/env  python3 -u\nprint()\n", "/s"),
            ["/usr/bin/env", "python3 -u", "/s"]
        );
        assert_eq!(r.mounts[0].destination, "/run/heredoc/EOT");
        // Bind from the context: read-only; content is part of the cache key.
        e.write("src/main.c", "int main;");
        let df = format!("{BASE}RUN --mount=type=bind,source=src,target=/src make\n");
        e.build(&runner, e.opts(&df)).await.expect("bind");
        let n = runner.reqs.lock().expect("lock").len();
        let r = runner
            .reqs
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("req");
        assert_eq!(r.mounts[0].source, e.ctx().join("src"));
        assert!(!r.mounts[0].rw);
        e.build(&runner, e.opts(&df)).await.expect("cached");
        assert_eq!(
            runner.reqs.lock().expect("lock").len(),
            n,
            "unchanged: cached"
        );
        e.write("src/main.c", "int main(void);");
        e.build(&runner, e.opts(&df)).await.expect("rebuilt");
        assert_eq!(
            runner.reqs.lock().expect("lock").len(),
            n + 1,
            "changed: re-run"
        );
        // A symlink in the context cannot lead a bind source out of it.
        std::os::unix::fs::symlink("/etc", e.ctx().join("evil")).expect("symlink");
        let df = format!("{BASE}RUN --mount=type=bind,source=evil/passwd,target=/x true\n");
        let err = e.build(&runner, e.opts(&df)).await.expect_err("escape");
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_checksum_and_offline_refusals() {
        use sha2::Digest as _;
        let e = Env::new();
        e.write("f.bin", "payload");
        let good = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"payload")));
        let df = format!("FROM scratch\nADD --checksum={good} f.bin /f\n");
        let id = e
            .build(&Fake::default(), e.opts(&df))
            .await
            .expect("good sum");
        assert!(e.file(&id, "/f").is_some());
        let bad = format!("sha256:{}", "0".repeat(64));
        let df = format!("FROM scratch\nADD --checksum={bad} f.bin /f\n");
        let err = e
            .build(&Fake::default(), e.opts(&df))
            .await
            .expect_err("bad");
        assert!(err.to_string().contains("expected sha256:000"), "{err}");
        for (df, want) in [
            (
                "FROM scratch\nADD https://example.com/x.tgz /x\n",
                "need the network",
            ),
            (
                "FROM scratch\nADD git@github.com:moby/buildkit.git /src\n",
                "need the network",
            ),
            (
                "FROM scratch\nADD --keep-git-dir f.bin /src\n",
                "git sources need the network",
            ),
        ] {
            let err = e.build(&Fake::default(), e.opts(df)).await.expect_err(df);
            assert!(err.to_string().starts_with("Dockerfile:2: ADD"), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
