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

pub mod context;
pub mod dockerfile;
pub mod layer;

use crate::digest::Digest;
use crate::image::config::{History, ImageConfig, RootFs};
use crate::image::{ImageError, ImageStore, Reference, MEDIA_LAYER_TAR};
use dockerfile::{Command, Instruction, Typed};
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
#[derive(Clone, Debug, Default)]
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
    /// Where the layer cache index lives.
    pub cache_file: PathBuf,
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
    let mut global_args: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut used_args: Vec<String> = Vec::new();
    let mut stage: Option<Stage> = None;
    let mut target_done = false;
    for (n, ins) in instructions.iter().enumerate() {
        (b.out)(&format!("Step {}/{total} : {}", n + 1, ins.original));
        let step_err = |message: String| BuildError::Step {
            file: opts.dockerfile_name.clone(),
            line: ins.line,
            instruction: ins.keyword.clone(),
            message,
        };
        if ins.keyword == "FROM" {
            if let Some(s) = stage.take() {
                let name = s.name.clone();
                b.stages.push(s);
                if opts.target.is_some() && name == opts.target {
                    target_done = true;
                    break;
                }
            }
            let vars: HashMap<String, String> = global_args
                .iter()
                .filter_map(|(k, v)| {
                    opts.build_args
                        .get(k)
                        .cloned()
                        .or(v.clone())
                        .map(|v| (k.clone(), v))
                })
                .collect();
            let Typed::From {
                image,
                alias,
                platform,
            } = ins.typed(&vars).map_err(step_err)?
            else {
                unreachable!()
            };
            if let Some(p) = platform {
                (b.out)(&format!(
                    "WARNING: --platform={p} is ignored: building for the host's platform"
                ));
            }
            let s = b.from(&image, alias).await.map_err(step_err)?;
            (b.out)(&format!(
                " ---> {}",
                s.id.as_ref()
                    .map(|d| d.short().to_string())
                    .unwrap_or_else(|| "scratch".into())
            ));
            stage = Some(s);
            continue;
        }
        let Some(s) = stage.as_mut() else {
            // ARG before the first FROM: global, usable in FROM lines.
            if let Ok(Typed::Arg(list)) = ins.typed(&HashMap::new()) {
                for (k, v) in list {
                    global_args.insert(k, v);
                }
            }
            continue;
        };
        let typed = ins.typed(&s.vars()).map_err(step_err)?;
        if let Typed::Arg(list) = &typed {
            for (k, default) in list {
                used_args.push(k.clone());
                let v = opts
                    .build_args
                    .get(k)
                    .cloned()
                    .or_else(|| default.clone())
                    .or_else(|| global_args.get(k).cloned().flatten());
                if let Some(v) = v {
                    s.args.insert(k.clone(), v);
                }
            }
            continue;
        }
        let mut st = s.clone();
        b.step(&mut st, ins, typed).await.map_err(|e| match e {
            StepError::Msg(m) => step_err(m),
            StepError::Build(e) => e,
        })?;
        *s = st;
        (b.out)(&format!(
            " ---> {}",
            s.id.as_ref()
                .map(|d| d.short().to_string())
                .unwrap_or_default()
        ));
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
    let _ = target_done;
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
        if !used_args.contains(k) && !global_args.contains_key(k) {
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
    async fn from(&mut self, image: &str, alias: Option<String>) -> Result<Stage, String> {
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
            return Ok(s);
        }
        if image == "scratch" {
            return Ok(Stage {
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
            });
        }
        let img = self.image(image).await?;
        Ok(Stage {
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
        })
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
            Typed::Run { cmd, network } => {
                let argv = cmd.argv(&shell);
                let mut env = s.env();
                for (k, v) in &s.args {
                    if !env.iter().any(|e| e.split('=').next() == Some(k)) {
                        env.push(format!("{k}={v}"));
                    }
                }
                let network = network.unwrap_or_else(|| {
                    if self.opts.network.is_empty() {
                        "host".into()
                    } else {
                        self.opts.network.clone()
                    }
                });
                let what = format!(
                    "RUN {}\nenv={}\nuser={}\nworkdir={}\nnet={network}",
                    serde_json::to_string(&argv).unwrap_or_default(),
                    env.join("\0"),
                    s.config.config.user,
                    s.config.config.working_dir
                );
                let key = self.cache_key(s, &what);
                if self.cached(s, &key) {
                    return Ok(());
                }
                let image = s.id.clone().ok_or(
                    "RUN in a `FROM scratch` stage with no files: there is no shell to run",
                )?;
                let tmp = TempFile(self.store.temp_path("layer"));
                let req = RunRequest {
                    image,
                    argv: argv.clone(),
                    env,
                    workdir: s.config.config.working_dir.clone(),
                    user: s.config.config.user.clone(),
                    network,
                };
                let code = self.runner.run(req, &tmp.0, self.out).await?;
                if code != 0 {
                    return Err(BuildError::RunFailed {
                        command: argv.join(" "),
                        code,
                    }
                    .into());
                }
                let created_by = match &cmd {
                    Command::Shell(c) => format!("RUN {} {c}", shell.join(" ")),
                    Command::Exec(v) => {
                        format!("RUN {}", serde_json::to_string(v).unwrap_or_default())
                    }
                };
                self.commit(s, Some(&tmp.0), created_by, false)?;
                self.cache.insert(key, s.id.clone().ok_or("no image")?);
            }
            Typed::Copy {
                srcs,
                dest,
                chown,
                chmod,
                from,
            } => {
                self.copy(s, ins, srcs, dest, chown, chmod, from, false)
                    .await?;
            }
            Typed::Add {
                srcs,
                dest,
                chown,
                chmod,
            } => {
                if let Some(u) = srcs.iter().find(|s| {
                    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
                }) {
                    return Err(format!(
                        "ADD {u}: remote sources are not supported; download in a RUN step instead"
                    )
                    .into());
                }
                self.copy(s, ins, srcs, dest, chown, chmod, None, true)
                    .await?;
            }
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
                    Typed::OnBuild(t) => (self.out)(&format!(
                        "WARNING: ONBUILD {t} is recorded nowhere: ONBUILD triggers are not supported"
                    )),
                    _ => {}
                }
                s.config.validate().map_err(|e| e.to_string())?;
                self.commit(s, None, ins.original.clone(), true)?;
                self.cache.insert(key, s.id.clone().ok_or("no image")?);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &mut self,
        s: &mut Stage,
        ins: &Instruction,
        srcs: Vec<String>,
        dest: String,
        chown: Option<String>,
        chmod: Option<String>,
        from: Option<String>,
        add: bool,
    ) -> Result<(), StepError> {
        // The root sources are resolved in: the context, or another stage's / image's files.
        let mut view: Option<MergedView> = None;
        let root: PathBuf = match &from {
            None => self.context.to_path_buf(),
            Some(f) => {
                let lowers = if let Some(st) = self
                    .stages
                    .iter()
                    .find(|st| st.name.as_deref() == Some(f.as_str()))
                {
                    self.lowers(&st.clone())?
                } else if let Some(st) = f.parse::<usize>().ok().and_then(|i| self.stages.get(i)) {
                    self.lowers(&st.clone())?
                } else {
                    let img = self.image(f).await?;
                    self.store.lower_dirs(&img)?
                };
                let v = MergedView::open(&self.store, &lowers)?;
                let p = v.path.clone();
                view = Some(v);
                p
            }
        };
        let mut sources = Vec::new();
        for src in &srcs {
            let found = context::resolve_sources(&root, src).map_err(|e| e.to_string())?;
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
            sources.extend(found);
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
            || sources.len() > 1
            || layer::lookup(&lowers, &abs) == Some(layer::Kind::Dir);
        let owner = match &chown {
            Some(c) => Some(resolve_owner(&lowers, c)?),
            None => None,
        };
        let chmod = match &chmod {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .map_err(|_| format!("invalid --chmod {m:?}: want octal"))?,
            ),
            None => None,
        };
        let content = layer::hash_sources(&sources).map_err(|e| e.to_string())?;
        let what = format!(
            "{} {srcs:?} -> {abs} dir={dest_is_dir} owner={owner:?} chmod={chmod:?} from={from:?}\ncontent={content}",
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
            chmod,
            extract_archives: add,
            lowers: &lowers,
        };
        layer::copy_layer(&plan, f).map_err(|e| e.to_string())?;
        drop(view);
        let created_by = format!("{} {} {shown}", ins.keyword, srcs.join(" "));
        self.commit(s, Some(&tmp.0), created_by, false)?;
        self.cache.insert(key, s.id.clone().ok_or("no image")?);
        Ok(())
    }
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
