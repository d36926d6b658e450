//! The container manager: every container this agent owns, its lifecycle, its shim.
//!
//! State lives on disk (`<root>/containers/<id>/`) and in memory; every transition is
//! written atomically as it happens. The in-memory state follows the processes: when a
//! write fails (a full disk) the transition still stands in memory, since the process
//! did start or stop, and the write is retried until it lands ([`Entry::persist`]).
//! Lifecycle operations on one container are serialised by its `op` lock; the state
//! itself sits behind a short std mutex. A monitor task per running container holds a
//! connection to its shim and folds the exit into the state when it ends (restart
//! policies and `--rm` follow from there).

pub mod namespaces;

use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::events::EventBus;
use crate::names;
use skiff_runtime::container::spec::{BindMount, NetworkNamespace, RunSpec};
use skiff_runtime::container::{
    ContainerConfig, ContainerRecord, ContainerState, ExitInfo, Paths, Status,
};
use skiff_runtime::fsutil;
use skiff_runtime::image::ImageStore;
use skiff_runtime::shim::frame::{read_frame, write_frame, Frame};
use skiff_runtime::shim::logfile::{LogConfig, Rotation};
use skiff_runtime::shim::Report;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::Instrument;

/// How long after a create, start or exec cgroup migrations are kept cheap (see
/// `skiff_runtime::cgroup::keep_migration_warm`): long enough to cover a burst of
/// starts, short enough that an idle agent does nothing.
const MIGRATION_WARM: Duration = Duration::from_secs(1);

/// How long a start or a removal's deletion waits for the previous run's shim to end
/// (its clean-up includes an unmount that syncs the upper filesystem).
const SHIM_CLEANUP_WAIT: Duration = Duration::from_secs(30);

/// After an exit: waits for the shim to end (`conn`, its connection once the exit was
/// announced, reaches EOF when the shim process is gone), unmounts the rootfs in case
/// the shim crashed before it could, then lets `Entry::shim_ended` waiters go.
async fn shim_end(e: Arc<Entry>, conn: Option<UnixStream>) {
    if let Some(mut c) = conn {
        let mut buf = [0u8; 256];
        let drained = async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        if tokio::time::timeout(SHIM_CLEANUP_WAIT, drained)
            .await
            .is_err()
        {
            tracing::warn!(container_id = %e.id, "shim still cleaning up after 30s");
        }
    }
    let rootfs = e.paths.rootfs();
    let _ = tokio::task::spawn_blocking(move || skiff_runtime::snapshot::unmount(&rootfs)).await;
    e.shim_cleaning.send_replace(false);
}

/// One container in memory.
pub struct Entry {
    pub id: String,
    pub paths: Paths,
    pub record: RwLock<ContainerRecord>,
    pub state: Mutex<ContainerState>,
    /// Bumped after every state change and after exit handling completes.
    pub changed: watch::Sender<u64>,
    /// Serialises start/stop/remove on this container.
    pub op: tokio::sync::Mutex<()>,
    /// The state in memory is newer than `state.json` (a write failed).
    dirty: AtomicBool,
    /// The container's current run, bumped by every start: a monitor watches one run.
    run: AtomicU64,
    /// The run a monitor watches (0: none). At most one may watch a run (two would
    /// fold one exit in twice), and a finishing monitor of the previous run must not
    /// leave the next one unwatched.
    monitored: AtomicU64,
    /// True from an exit until the shim of that run has ended: a shim announces the
    /// exit first and then cleans up (libcontainer state, cgroups, the rootfs mount),
    /// so whatever reuses or deletes those (a start, a removal's deletion) waits.
    shim_cleaning: watch::Sender<bool>,
}

impl Entry {
    fn new(id: String, paths: Paths, record: ContainerRecord, state: ContainerState) -> Self {
        Entry {
            id,
            paths,
            record: RwLock::new(record),
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            op: tokio::sync::Mutex::new(()),
            dirty: AtomicBool::new(false),
            run: AtomicU64::new(1),
            monitored: AtomicU64::new(0),
            shim_cleaning: watch::channel(false).0,
        }
    }

    /// Waits until the shim of the last run has ended (at once if it has, or if there
    /// was none); see `shim_cleaning`.
    pub async fn shim_ended(&self) {
        let mut rx = self.shim_cleaning.subscribe();
        let _ = rx.wait_for(|cleaning| !cleaning).await;
    }

    pub fn name(&self) -> String {
        self.record
            .read()
            .map(|r| r.name.clone())
            .unwrap_or_default()
    }
    pub fn record(&self) -> ContainerRecord {
        self.record
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    pub fn state(&self) -> ContainerState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    /// Applies `f` to the state, persists it, and notifies waiters. A failed write is
    /// retried (see [`Entry::persist`]); the change stands regardless, since it records
    /// what the processes did.
    fn update(self: &Arc<Self>, f: impl FnOnce(&mut ContainerState)) -> ContainerState {
        let snapshot = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let was_stopped = s.manually_stopped;
            f(&mut s);
            self.persist(&s, s.manually_stopped != was_stopped);
            s.clone()
        };
        self.changed.send_modify(|g| *g += 1);
        snapshot
    }

    /// Writes `s` (the caller holds the state lock). The first failure marks the entry
    /// dirty and starts a task that rewrites the state every second until a write
    /// lands, the next update's write succeeds, or the entry is gone.
    ///
    /// Only a change the restart decision after a reboot depends on (a user's stop) is
    /// fsynced; the rest (pid, running, exit code) is reconciled against the shim and
    /// exit.json when the agent starts, so a power cut costs nothing real.
    fn persist(self: &Arc<Self>, s: &ContainerState, durable: bool) {
        let written = if durable {
            fsutil::write_json_atomic(&self.paths.state(), s)
        } else {
            fsutil::replace_json(&self.paths.state(), s)
        };
        match written {
            Ok(()) => {
                if self.dirty.swap(false, Ordering::SeqCst) {
                    tracing::info!(container_id = %self.id, "container state written again");
                }
            }
            Err(e) => {
                if self.dirty.swap(true, Ordering::SeqCst) {
                    return; // a retry is already running
                }
                tracing::error!(container_id = %self.id, error = %e, "writing container state; will retry");
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return; // the next update retries
                };
                let me = Arc::downgrade(self);
                rt.spawn(
                    async move {
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let Some(e) = me.upgrade() else { return };
                            if !e.dirty.load(Ordering::SeqCst) {
                                return;
                            }
                            let s = e.state.lock().unwrap_or_else(|p| p.into_inner());
                            e.persist(&s, true);
                        }
                    }
                    .instrument(tracing::debug_span!("state_retry")),
                );
            }
        }
    }
}

/// `create` writes hostname, hosts and resolv.conf without an fsync; a power cut right
/// after it can leave them empty, which would hand the container a blank /etc/hosts.
/// Rewrites any that are empty or missing before a start.
fn regenerate_lost_files(e: &Entry) -> Result<()> {
    let lost = |p: &Path| std::fs::metadata(p).map(|m| m.len() == 0).unwrap_or(true);
    let r = e.record();
    let hostname = &r.config.hostname;
    if lost(&e.paths.hostname()) {
        fsutil::replace(&e.paths.hostname(), format!("{hostname}\n").as_bytes())?;
    }
    if lost(&e.paths.hosts()) {
        fsutil::replace(&e.paths.hosts(), hosts_file(hostname).as_bytes())?;
    }
    if lost(&e.paths.resolv_conf()) {
        fsutil::replace(
            &e.paths.resolv_conf(),
            resolv_conf(&r.config.network_mode).as_bytes(),
        )?;
    }
    Ok(())
}

/// What `create` is asked for.
pub struct CreateOptions {
    pub name: Option<String>,
    pub config: ContainerConfig,
    /// `--entrypoint` was given (possibly empty): the image's ENTRYPOINT and CMD are reset.
    pub entrypoint_set: bool,
}

pub struct Containers {
    pub cfg: AgentConfig,
    pub images: Arc<ImageStore>,
    pub events: Arc<EventBus>,
    by_id: Mutex<HashMap<String, Arc<Entry>>>,
    /// Names reserved by creates in flight, so two creates cannot take one name.
    reserved: Mutex<Vec<String>>,
    pub networks: Arc<crate::network::Networks>,
    pub volumes: crate::volumes::Volumes,
    /// Counters and histograms the metrics endpoint exposes.
    pub metrics: Arc<crate::counters::AgentMetrics>,
    /// Spawns shims, from standbys when the shim is the `skiff-shim` binary.
    pub shims: Arc<crate::shimpool::ShimPool>,
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn signal_number(s: &str) -> Result<i32> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(libc::SIGKILL);
    }
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| AgentError::Invalid(format!("invalid signal: {s}")))
}

impl Containers {
    pub fn new(cfg: AgentConfig, images: Arc<ImageStore>, events: Arc<EventBus>) -> Arc<Self> {
        let networks =
            crate::network::Networks::new(&cfg.root, &cfg.exec_root, cfg.network.clone());
        let volumes = crate::volumes::Volumes::new(&cfg.root);
        let standby = match &cfg.shim_command {
            crate::config::ShimCommand::Binary(_) => crate::shimpool::STANDBY,
            crate::config::ShimCommand::Subcommand(_) => 0,
        };
        let shims = crate::shimpool::ShimPool::new(
            cfg.shim_command.program(),
            cfg.shim_command.leading_args(),
            &cfg.shim_log_level,
            standby,
        );
        Arc::new(Self {
            cfg,
            images,
            events,
            by_id: Mutex::new(HashMap::new()),
            reserved: Mutex::new(vec![]),
            networks,
            volumes,
            metrics: Arc::default(),
            shims,
        })
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        self.by_id
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Resolves a full ID, a unique ID prefix or a name (with or without Docker's `/`).
    pub fn get(&self, key: &str) -> Result<Arc<Entry>> {
        let key = key.trim_start_matches('/');
        let entries = self.entries();
        if key.is_empty() {
            return Err(AgentError::NotFound("No such container: ".into()));
        }
        if let Some(e) = entries.iter().find(|e| e.id == key) {
            return Ok(e.clone());
        }
        if let Some(e) = entries.iter().find(|e| e.name() == key) {
            return Ok(e.clone());
        }
        let matches: Vec<_> = entries.iter().filter(|e| e.id.starts_with(key)).collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(AgentError::NotFound(format!("No such container: {key}"))),
            _ => Err(AgentError::Invalid(format!(
                "multiple containers found with provided prefix: {key}"
            ))),
        }
    }

    /// IDs of containers whose record mounts volume `name` (a volume is in use while
    /// any container, running or not, mounts it).
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|e| {
                e.record()
                    .config
                    .mounts
                    .iter()
                    .any(|m| m.kind == skiff_runtime::volume::MountKind::Volume && m.name == name)
            })
            .map(|e| e.id.clone())
            .collect()
    }

    pub fn list(&self) -> Vec<Arc<Entry>> {
        let mut v = self.entries();
        v.sort_by_key(|e| std::cmp::Reverse(e.record().created));
        v
    }

    /// Image IDs used by any container (so `rmi` can refuse them).
    pub fn image_in_use(&self, id: &skiff_runtime::digest::Digest) -> bool {
        self.entries().iter().any(|e| e.record().image_id == *id)
    }

    fn emit(&self, e: &Entry, action: &str, extra: &[(&str, String)]) {
        let r = e.record();
        let mut attrs: HashMap<String, String> = [
            ("name".to_string(), r.name.clone()),
            ("image".to_string(), r.config.image.clone()),
        ]
        .into();
        for (k, v) in &r.config.labels {
            attrs.insert(k.clone(), v.clone());
        }
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.events.emit("container", action, &e.id, attrs);
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{}", self.cfg.cgroup_parent.trim_matches('/'), id)
    }

    /// The container's cgroup (the same path as its `cgroupsPath`).
    pub fn cgroup(&self, id: &str) -> skiff_runtime::cgroup::Cgroup {
        skiff_runtime::cgroup::Cgroup::new(&self.cgroups_path(id))
    }

    /// Loads every container from disk and re-adopts running ones (their shims keep
    /// running across agent restarts). Exits that happened while the agent was away are
    /// folded in, and restart policies applied.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        let dir = self.cfg.root.join("containers");
        // The exec root too: it is a tmpfs (/run) on most hosts, but not when
        // --exec-root points at a disk, and libcontainer's state lives in `runtime`.
        std::fs::create_dir_all(&dir)?;
        let exec_dirs = ["containers", "runtime"].map(|d| self.cfg.exec_root.join(d));
        for d in &exec_dirs {
            fsutil::create_dir_mode(d, 0o700)?;
        }
        for d in exec_dirs.iter().chain([&dir]) {
            if !fsutil::spread_subdirs(d) {
                tracing::debug!(dir = %d.display(), "directories not spread (not ext2/3/4)");
            }
        }
        self.networks.init().await?;
        self.volumes.init()?;
        for ent in std::fs::read_dir(&dir)?.flatten() {
            let id = ent.file_name().to_string_lossy().to_string();
            if id.starts_with('.') {
                // An interrupted create: never acknowledged, so nothing to keep.
                let _ = std::fs::remove_dir_all(ent.path());
                continue;
            }
            let paths = Paths::new(&self.cfg.root, &self.cfg.exec_root, &id);
            let record: Option<ContainerRecord> = fsutil::read_json(&paths.record()).ok().flatten();
            let Some(record) = record else {
                tracing::warn!(container_id = %id, "no readable record; skipping");
                continue;
            };
            let state: ContainerState = fsutil::read_json(&paths.state())
                .ok()
                .flatten()
                .unwrap_or_default();
            let entry = Arc::new(Entry::new(id.clone(), paths, record, state.clone()));
            self.by_id
                .lock()
                .map_err(|_| AgentError::internal("lock"))?
                .insert(id.clone(), entry.clone());
            if state.is_running() {
                if UnixStream::connect(entry.paths.socket()).await.is_ok() {
                    tracing::info!(container_id = %id, pid = state.pid, "re-adopted running container");
                    self.spawn_monitor(entry.clone());
                } else {
                    tracing::info!(container_id = %id, "container exited while the agent was down");
                    // Its shim is gone; if it died before its clean-up, the rootfs is
                    // still mounted.
                    let _ = skiff_runtime::snapshot::unmount(&entry.paths.rootfs());
                    self.clone().handle_exit(entry.clone(), None).await;
                }
            } else if UnixStream::connect(entry.paths.socket()).await.is_ok() {
                // The agent died between spawning the shim and recording the start: the
                // process runs but was never acknowledged. Left alone, a later remove
                // (which trusts the record) would orphan it; stop it instead. (Found by
                // the chaos test's leftover check.)
                tracing::warn!(container_id = %id, "a shim outlived an unrecorded start; killing it");
                let _ = self.signal(&entry, libc::SIGKILL).await;
            } else if entry.record().config.restart_policy.name == "always"
                && !state.manually_stopped
                && state.started_at.is_some()
            {
                // Like Docker at daemon start: `always` containers come back.
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.start(&entry.id).await {
                        tracing::warn!(container_id = %entry.id, error = %e, "restart at agent start failed");
                    }
                });
            }
        }
        self.sweep_exec_dirs();
        self.shims.refill();
        let running = self
            .entries()
            .iter()
            .filter(|e| e.state().is_running())
            .map(|e| e.id.clone())
            .collect();
        self.networks.reconcile(&running).await?;
        crate::network::spawn_firewall_watch(self.networks.clone());
        Ok(())
    }

    /// Removes the exec dirs (and any rootfs still mounted in one) of containers that
    /// no longer exist: a removal deletes them in the background once the shim has
    /// ended, and an agent stopped meanwhile leaves them behind.
    fn sweep_exec_dirs(&self) {
        let Ok(dir) = std::fs::read_dir(self.cfg.exec_root.join("containers")) else {
            return;
        };
        let Ok(known) = self
            .by_id
            .lock()
            .map(|m| m.keys().cloned().collect::<HashSet<_>>())
        else {
            return;
        };
        for ent in dir.flatten() {
            let id = ent.file_name().to_string_lossy().to_string();
            if known.contains(&id) {
                continue;
            }
            let paths = Paths::new(&self.cfg.root, &self.cfg.exec_root, &id);
            let _ = skiff_runtime::snapshot::unmount(&paths.rootfs());
            if let Err(err) = std::fs::remove_dir_all(ent.path()) {
                tracing::warn!(path = %ent.path().display(), error = %err, "removing a removed container's exec dir");
            }
        }
    }

    /// Creates a container (nothing runs yet). On any error nothing is left behind.
    pub async fn create(self: &Arc<Self>, opts: CreateOptions) -> Result<(String, Vec<String>)> {
        // A start usually follows a create within milliseconds.
        skiff_runtime::cgroup::keep_migration_warm(MIGRATION_WARM);
        let CreateOptions {
            name,
            mut config,
            entrypoint_set,
        } = opts;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                names::validate(&n).map_err(AgentError::Invalid)?;
                n
            }
            None => loop {
                let n = names::generate();
                if self.get(&n).is_err() {
                    break n;
                }
            },
        };
        let image = self.images.resolve(&config.image).map_err(|e| match e {
            skiff_runtime::image::ImageError::NotFound(_) => AgentError::NotFound(format!(
                "Unable to find image '{}' locally (load it with `skiff load` or `skiff image import`)",
                config.image
            )),
            e => e.into(),
        })?;
        let ic = &image.config.config;
        // Docker's rules: --entrypoint resets the image's CMD; a given CMD replaces it.
        let (entrypoint, cmd) = if entrypoint_set {
            (config.entrypoint.clone(), config.cmd.clone())
        } else {
            let cmd = if config.cmd.is_empty() {
                ic.cmd.clone().unwrap_or_default()
            } else {
                config.cmd.clone()
            };
            (ic.entrypoint.clone().unwrap_or_default(), cmd)
        };
        let mut argv: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
        if argv.is_empty() {
            return Err(AgentError::Invalid("no command specified".into()));
        }
        let path = argv.remove(0);
        let mut env = ic.env.clone().unwrap_or_default();
        for e in &config.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        config.env = env;
        config.entrypoint = entrypoint;
        config.cmd = cmd;
        if config.working_dir.is_empty() {
            config.working_dir = ic.working_dir.clone();
        }
        if !config.working_dir.is_empty() && !config.working_dir.starts_with('/') {
            return Err(AgentError::Invalid(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                config.working_dir
            )));
        }
        if config.user.is_empty() {
            config.user = ic.user.clone();
        }
        if config.stop_signal.is_empty() {
            config.stop_signal = if ic.stop_signal.is_empty() {
                "SIGTERM".into()
            } else {
                ic.stop_signal.clone()
            };
        }
        signal_number(&config.stop_signal)?;
        for (k, v) in ic.labels.clone().unwrap_or_default() {
            config.labels.entry(k).or_insert(v);
        }
        if let Some(p) = &ic.exposed_ports {
            config.exposed_ports = p.keys().cloned().collect();
        }
        if config.network_mode.is_empty() || config.network_mode == "default" {
            config.network_mode = "bridge".into();
        }
        namespaces::check_create(&mut config)?;
        self.networks
            .check_mode(&config.network_mode, &config.net)
            .await?;
        // Validate capabilities now, not at start.
        skiff_runtime::container::security::apply_cap_changes(
            skiff_runtime::container::security::default_capabilities(),
            &config.cap_add,
            &config.cap_drop,
        )
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
        validate_devices_and_init(&config, self.cfg.init_path.as_deref())?;
        // Log options are recorded merged with the agent's defaults, as Docker does, so
        // inspect shows what applies and a later agent.yaml change does not alter them.
        let given = config
            .log_config
            .take()
            .map(|c| c.config)
            .unwrap_or_default();
        config.log_config = Some(
            LogConfig::merge(&self.cfg.log_opts, &given)
                .map_err(|e| AgentError::Invalid(e.to_string()))?,
        );
        let id = random_id();
        if config.hostname.is_empty() {
            config.hostname = if config.network_mode == "host" {
                nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                id[..12].to_string()
            };
        }
        {
            let mut reserved = self
                .reserved
                .lock()
                .map_err(|_| AgentError::internal("lock"))?;
            if let Ok(other) = self.get(&name) {
                if other.name() == name {
                    return Err(AgentError::Conflict(format!(
                        "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                        other.id
                    )));
                }
            }
            if reserved.contains(&name) {
                return Err(AgentError::Conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use"
                )));
            }
            reserved.push(name.clone());
        }
        let image_volumes: Vec<String> =
            ic.volumes.iter().flat_map(|v| v.keys().cloned()).collect();
        let mounts_of = |key: &str| Ok(self.get(key)?.record().config.mounts);
        let result = crate::volumes::resolve_create(
            &self.volumes,
            &self.events,
            &mounts_of,
            &mut config,
            &image_volumes,
        )
        .and_then(|(warnings, anon)| {
            let r = self.write_new(&id, &name, &image, config, path, argv);
            if r.is_err() {
                self.volumes.discard(&anon);
            }
            r.map(|e| (e, warnings))
        });
        if let Ok(mut r) = self.reserved.lock() {
            r.retain(|n| n != &name);
        }
        let (entry, warnings) = result?;
        self.emit(&entry, "create", &[]);
        Ok((id, warnings))
    }

    fn write_new(
        &self,
        id: &str,
        name: &str,
        image: &skiff_runtime::image::Image,
        config: ContainerConfig,
        path: String,
        args: Vec<String>,
    ) -> Result<Arc<Entry>> {
        let paths = Paths::new(&self.cfg.root, &self.cfg.exec_root, id);
        let tmp = self.cfg.root.join("containers").join(format!(".tmp-{id}"));
        let res = (|| -> Result<ContainerRecord> {
            fsutil::create_dir_mode(&tmp, 0o700)?;
            std::fs::create_dir_all(tmp.join("upper"))?;
            std::fs::create_dir_all(tmp.join("work"))?;
            let record = ContainerRecord {
                id: id.into(),
                name: name.into(),
                created: chrono::Utc::now(),
                image_id: image.id().clone(),
                lowers: self.images.lower_dirs(image)?,
                config,
                path,
                args,
            };
            // Fsyncs for the record and the directories only: the generated files
            // are checked again at start (`regenerate_lost_files`), and a lost
            // state.json reads as "created". A crash before the rename leaves a
            // `.tmp-` dir that restore drops.
            std::fs::write(
                tmp.join("hostname"),
                format!("{}\n", record.config.hostname).as_bytes(),
            )?;
            std::fs::write(tmp.join("hosts"), hosts_file(&record.config.hostname))?;
            std::fs::write(
                tmp.join("resolv.conf"),
                resolv_conf(&record.config.network_mode),
            )?;
            fsutil::replace_json(&tmp.join("state.json"), &ContainerState::default())?;
            fsutil::write_json_atomic(&tmp.join("config.v2.json"), &record)?;
            std::fs::rename(&tmp, &paths.dir)?;
            fsutil::sync_dir(&self.cfg.root.join("containers"))?;
            Ok(record)
        })();
        let record = match res {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let entry = Arc::new(Entry::new(
            id.into(),
            paths,
            record,
            ContainerState::default(),
        ));
        self.by_id
            .lock()
            .map_err(|_| AgentError::internal("lock"))?
            .insert(id.into(), entry.clone());
        Ok(entry)
    }

    fn run_spec(&self, e: &Entry, wait_attach: bool) -> Result<RunSpec> {
        let r = e.record();
        let c = &r.config;
        let network = match c.network_mode.as_str() {
            "host" => NetworkNamespace::Host,
            _ => NetworkNamespace::New,
        };
        let mut args = vec![r.path.clone()];
        args.extend(r.args.iter().cloned());
        let mut mounts = vec![
            BindMount {
                source: e.paths.resolv_conf(),
                destination: "/etc/resolv.conf".into(),
                readonly: false,
            },
            BindMount {
                source: e.paths.hostname(),
                destination: "/etc/hostname".into(),
                readonly: false,
            },
            BindMount {
                source: e.paths.hosts(),
                destination: "/etc/hosts".into(),
                readonly: false,
            },
        ];
        if network == NetworkNamespace::Host {
            mounts.retain(|m| m.destination == "/etc/hostname");
            mounts.push(BindMount {
                source: "/etc/hosts".into(),
                destination: "/etc/hosts".into(),
                readonly: true,
            });
            mounts.push(BindMount {
                source: "/etc/resolv.conf".into(),
                destination: "/etc/resolv.conf".into(),
                readonly: true,
            });
        }
        let init = if c.init {
            Some(
                skiff_runtime::container::docker_init::find(self.cfg.init_path.as_deref())
                    .map_err(|e| AgentError::Invalid(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(RunSpec {
            id: e.id.clone(),
            args,
            env: c.env.clone(),
            cwd: c.working_dir.clone(),
            user: c.user.clone(),
            tty: c.tty,
            open_stdin: c.open_stdin,
            hostname: c.hostname.clone(),
            domainname: c.domainname.clone(),
            read_only: c.read_only,
            privileged: c.privileged,
            cap_add: c.cap_add.clone(),
            cap_drop: c.cap_drop.clone(),
            no_new_privileges: c.no_new_privileges(),
            seccomp_unconfined: c
                .security_opt
                .iter()
                .any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined"),
            network,
            cgroups_path: self.cgroups_path(&e.id),
            lowers: r.lowers.clone(),
            upper: e.paths.upper(),
            work: e.paths.work(),
            rootfs: e.paths.rootfs(),
            bundle: e.paths.bundle(),
            mounts,
            log_path: e.paths.log(),
            log_rotation: self.log_rotation(c),
            exit_path: e.paths.exit(),
            socket_path: e.paths.socket(),
            runtime_root: self.cfg.exec_root.join("runtime"),
            seccomp_cache: Some(self.cfg.exec_root.join("seccomp")),
            wait_attach,
            console_size: None,
            volumes: c.mounts.clone(),
            resources: c.resources.clone(),
            init,
            devices: c.devices.clone(),
            device_cgroup_rules: c.device_cgroup_rules.clone(),
            // Filled at start by `namespaces::resolve`.
            ipc: Default::default(),
            pid: Default::default(),
            shm: Default::default(),
            sysctls: Default::default(),
        })
    }

    /// The rotation a container's logs get; records from before rotation existed take
    /// the agent's defaults.
    fn log_rotation(&self, c: &ContainerConfig) -> Rotation {
        let merged = match &c.log_config {
            Some(l) => l.rotation(),
            None => {
                LogConfig::merge(&self.cfg.log_opts, &Default::default()).and_then(|l| l.rotation())
            }
        };
        merged.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "container log options; using the defaults");
            Rotation::default()
        })
    }

    /// Spawns the shim (`skiff-shim`, or `skiff shim`) for `args`, and reads its
    /// one-line report.
    async fn spawn_shim(&self, args: &[&std::ffi::OsStr], log: &std::path::Path) -> Result<Report> {
        let exe = self.cfg.shim_command.program();
        let crate::shimpool::Spawned { mut child, stdout } =
            self.shims.spawn(args, log).await.map_err(|e| {
                AgentError::Internal(format!("spawning shim {}: {e}", exe.display()))
            })?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        // Reap the shim whenever it ends, so it never lingers as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let line = match line {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let last = tail.lines().last().unwrap_or("no output").to_string();
                return Err(AgentError::Internal(format!(
                    "shim exited without reporting: {last}"
                )));
            }
            Ok(Err(e)) => return Err(AgentError::Internal(format!("reading shim report: {e}"))),
            Err(_) => return Err(AgentError::internal("shim did not report within 60s")),
        };
        serde_json::from_str(&line)
            .map_err(|e| AgentError::Internal(format!("bad shim report {line:?}: {e}")))
    }

    /// Starts a created or exited container. Starting a running container is a no-op.
    pub async fn start(self: &Arc<Self>, key: &str) -> Result<()> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        self.start_locked(&e, false).await.map(|_| ())
    }

    /// Starts with the shim waiting for an attach; returns the connected attach stream.
    pub async fn start_attached(
        self: &Arc<Self>,
        key: &str,
        stdin: bool,
        console_size: Option<(u16, u16)>,
    ) -> Result<(Arc<Entry>, UnixStream)> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        let report = self.start_with(&e, true, console_size).await?;
        if !report.waiting {
            return Err(AgentError::Conflict(format!(
                "container {} is already running",
                e.id
            )));
        }
        let mut conn = UnixStream::connect(e.paths.socket()).await?;
        write_frame(
            &mut conn,
            &Frame::Hello {
                stdin,
                output: true,
            },
        )
        .await?;
        write_frame(&mut conn, &Frame::Start).await?;
        drop(_op);
        Ok((e, conn))
    }

    async fn start_locked(self: &Arc<Self>, e: &Arc<Entry>, wait_attach: bool) -> Result<Report> {
        self.start_with(e, wait_attach, None).await
    }

    async fn start_with(
        self: &Arc<Self>,
        e: &Arc<Entry>,
        wait_attach: bool,
        console_size: Option<(u16, u16)>,
    ) -> Result<Report> {
        let st = e.state();
        if st.is_running() {
            return Ok(Report {
                pid: st.pid,
                ..Default::default()
            });
        }
        if !st.can_start() {
            return Err(AgentError::Precondition(format!(
                "container {} cannot be started in state {}",
                e.id,
                st.status.as_str()
            )));
        }
        let span = tracing::info_span!("start", container_id = %e.id);
        let started = std::time::Instant::now();
        // The kernel's wait before the first cgroup migration after a quiet spell runs
        // off this path (begun at create when there was one), not inside libcontainer's.
        skiff_runtime::cgroup::keep_migration_warm(MIGRATION_WARM);
        // The previous run's shim may still be cleaning up what this run reuses (the
        // rootfs mount point, the cgroups, libcontainer's state for this ID).
        // (`shim_end` bounds that wait itself; this bound only guards against a bug.)
        if tokio::time::timeout(2 * SHIM_CLEANUP_WAIT, e.shim_ended())
            .await
            .is_err()
        {
            tracing::warn!(container_id = %e.id, "the previous run's shim is still cleaning up; starting anyway");
        }
        async {
            let _ = std::fs::remove_file(e.paths.exit());
            regenerate_lost_files(e)?;
            fsutil::create_dir_mode(&e.paths.exec_dir, 0o700)?;
            if let Some(d) = e.paths.socket().parent() {
                fsutil::create_dir_mode(d, 0o700)?;
            }
            let mut spec = self.run_spec(e, wait_attach)?;
            spec.console_size = console_size;
            namespaces::resolve(self, e, &mut spec)?;
            let record = e.record();
            // A joined network (`container:X`) is X's: nothing to wire.
            if namespaces::network_container(&record.config.network_mode).is_none() {
                spec.network = self
                    .networks
                    .setup(&record, &e.paths, &record.config.exposed_ports)
                    .instrument(tracing::debug_span!("net_setup"))
                    .await?;
            }
            if let Err(err) = namespaces::mount_shm(e, &spec) {
                self.networks.teardown(&e.id).await;
                return Err(err);
            }
            // Under the exec root (runtime state, tmpfs in production): no fsync.
            fsutil::replace_json(&e.paths.task(), &spec)?;
            let task = e.paths.task();
            let report = self
                .spawn_shim(
                    &[std::ffi::OsStr::new("--task"), task.as_os_str()],
                    &e.paths.shim_log(),
                )
                .instrument(tracing::debug_span!("shim_spawn"))
                .await;
            let report = match report {
                Ok(r) if r.error.is_empty() => r,
                Ok(r) => {
                    self.networks.teardown(&e.id).await;
                    namespaces::release(e);
                    let code = if r.exit_code == 0 { 125 } else { r.exit_code };
                    e.update(|s| {
                        s.record_exit(&ExitInfo {
                            exit_code: code,
                            error: r.error.clone(),
                            ..Default::default()
                        })
                    });
                    self.emit(e, "die", &[("exitCode", code.to_string())]);
                    if e.record().config.auto_remove {
                        let _ = self.remove_locked(e, true).await;
                    }
                    return Err(AgentError::Start {
                        message: r.error,
                        exit_code: code,
                    });
                }
                Err(err) => {
                    self.networks.teardown(&e.id).await;
                    namespaces::release(e);
                    e.update(|s| {
                        s.record_exit(&ExitInfo {
                            exit_code: 125,
                            error: err.to_string(),
                            ..Default::default()
                        })
                    });
                    if e.record().config.auto_remove {
                        let _ = self.remove_locked(e, true).await;
                    }
                    return Err(err);
                }
            };
            e.run.fetch_add(1, Ordering::SeqCst);
            e.update(|s| {
                s.status = Status::Running;
                s.pid = report.pid;
                s.started_at = Some(chrono::Utc::now());
                s.finished_at = None;
                s.exit_code = 0;
                s.oom_killed = false;
                s.error.clear();
                s.manually_stopped = false;
            });
            self.emit(e, "start", &[]);
            self.metrics
                .start_duration
                .observe(started.elapsed().as_secs_f64());
            self.spawn_monitor(e.clone());
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Watches a running container's shim; handles the exit when it comes.
    /// A no-op when one already watches: every path that finds a running container
    /// unwatched (a start whose bookkeeping failed half-way) can call it.
    fn spawn_monitor(self: &Arc<Self>, e: Arc<Entry>) {
        let run = e.run.load(Ordering::SeqCst);
        if e.monitored.swap(run, Ordering::SeqCst) == run {
            return;
        }
        let me = self.clone();
        let span = tracing::info_span!("monitor", container_id = %e.id);
        tokio::spawn(
            async move {
                let mut attempts = 0;
                let conn = loop {
                    match UnixStream::connect(e.paths.socket()).await {
                        Ok(c) => break Some(c),
                        Err(_) if attempts < 50 => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => break None,
                    }
                };
                // The shim's announcement stands in for exit.json when the shim could
                // not write that (a full disk).
                let mut announced = None;
                let mut cleaning = None;
                if let Some(mut c) = conn {
                    if write_frame(
                        &mut c,
                        &Frame::Hello {
                            stdin: false,
                            output: false,
                        },
                    )
                    .await
                    .is_ok()
                    {
                        while let Ok(Some(f)) = read_frame(&mut c).await {
                            if let Frame::Exit { code, error } = f {
                                announced = Some(ExitInfo {
                                    exit_code: code,
                                    error,
                                    finished_at: Some(chrono::Utc::now()),
                                    oom_killed: false,
                                });
                                cleaning = Some(c);
                                break;
                            }
                        }
                    }
                }
                e.shim_cleaning.send_replace(true);
                tokio::spawn(shim_end(e.clone(), cleaning));
                me.handle_exit(e.clone(), announced)
                    .instrument(tracing::debug_span!("handle_exit"))
                    .await;
                // Only if no monitor of a newer run took over meanwhile.
                let _ = e
                    .monitored
                    .compare_exchange(run, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
            .instrument(span),
        );
    }

    /// Folds a finished run into the state, then applies `--rm` or the restart policy.
    /// The shim may still be cleaning up: see `Entry::shim_cleaning`.
    async fn handle_exit(self: Arc<Self>, e: Arc<Entry>, announced: Option<ExitInfo>) {
        // The shim writes exit.json before announcing the exit.
        let exit: ExitInfo = match (fsutil::read_json(&e.paths.exit()), announced) {
            (Ok(Some(x)), _) => x,
            (_, Some(x)) => x,
            _ => ExitInfo {
                exit_code: 255,
                error: "container shim exited unexpectedly".into(),
                finished_at: Some(chrono::Utc::now()),
                ..Default::default()
            },
        };
        namespaces::release(&e);
        self.networks
            .teardown(&e.id)
            .instrument(tracing::debug_span!("net_teardown"))
            .await;
        let prev = e.state();
        let ran_for = prev
            .started_at
            .map(|s| (chrono::Utc::now() - s).num_seconds())
            .unwrap_or(0);
        let st = e.update(|s| s.record_exit(&exit));
        if exit.oom_killed {
            self.emit(&e, "oom", &[]);
        }
        self.emit(&e, "die", &[("exitCode", exit.exit_code.to_string())]);
        tracing::info!(exit_code = exit.exit_code, "container exited");
        let r = e.record();
        if r.config.auto_remove {
            let removed = self
                .remove(&e.id, true)
                .instrument(tracing::debug_span!("auto_remove"))
                .await;
            if let Err(err) = removed {
                tracing::warn!(error = %err, "auto-remove failed");
            }
            e.changed.send_modify(|g| *g += 1);
            return;
        }
        let policy = r.config.restart_policy.clone();
        if policy.should_restart(exit.exit_code, st.manually_stopped, st.restart_count) {
            // Docker's back-off: 100ms doubling, reset after a run of 10s or more.
            let n = if ran_for >= 10 {
                0
            } else {
                st.restart_count.min(10)
            };
            let delay = Duration::from_millis((100u64 << n).min(60_000));
            e.update(|s| s.status = Status::Restarting);
            let me = self.clone();
            let e = e.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _op = e.op.lock().await;
                if e.state().status != Status::Restarting {
                    return; // stopped or removed meanwhile
                }
                e.update(|s| {
                    s.status = Status::Exited;
                    s.restart_count += 1;
                });
                if let Err(err) = me.start_locked(&e, false).await {
                    tracing::warn!(container_id = %e.id, error = %err, "restart failed");
                }
                me.emit(&e, "restart", &[]);
            });
        }
        e.changed.send_modify(|g| *g += 1);
    }

    /// Sends a signal through the shim.
    async fn signal(&self, e: &Entry, sig: i32) -> Result<()> {
        let mut c = UnixStream::connect(e.paths.socket())
            .await
            .map_err(|_| AgentError::Precondition(format!("Container {} is not running", e.id)))?;
        write_frame(
            &mut c,
            &Frame::Hello {
                stdin: false,
                output: false,
            },
        )
        .await?;
        write_frame(&mut c, &Frame::Signal(sig)).await?;
        Ok(())
    }

    /// Resizes a running container's terminal (a no-op without a tty).
    pub async fn resize(&self, key: &str, width: u16, height: u16) -> Result<()> {
        let e = self.get(key)?;
        if !e.state().is_running() {
            return Err(AgentError::Precondition(format!(
                "Container {} is not running",
                e.id
            )));
        }
        let mut c = UnixStream::connect(e.paths.socket())
            .await
            .map_err(|_| AgentError::Precondition(format!("Container {} is not running", e.id)))?;
        write_frame(
            &mut c,
            &Frame::Hello {
                stdin: false,
                output: false,
            },
        )
        .await?;
        write_frame(&mut c, &Frame::Resize { width, height }).await?;
        Ok(())
    }

    /// Waits until the container is no longer running (or `timeout` passes).
    async fn wait_stopped(&self, e: &Entry, timeout: Duration) -> bool {
        let mut rx = e.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !matches!(e.state().status, Status::Running | Status::Paused) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    pub async fn kill(&self, key: &str, signal: &str) -> Result<()> {
        let e = self.get(key)?;
        let sig = signal_number(signal)?;
        if !e.state().is_running() {
            return Err(AgentError::Precondition(format!(
                "Cannot kill container: {}: Container {} is not running",
                key, e.id
            )));
        }
        if sig == libc::SIGKILL || sig == libc::SIGTERM || sig == libc::SIGINT {
            e.update(|s| s.manually_stopped = true);
        }
        if sig == libc::SIGKILL {
            self.thaw(&e).await?;
        }
        self.emit(&e, "kill", &[("signal", sig.to_string())]);
        self.signal(&e, sig).await
    }

    /// Docker's stop: the stop signal, then SIGKILL after the timeout.
    pub async fn stop(self: &Arc<Self>, key: &str, timeout: Option<u32>) -> Result<()> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        self.stop_locked(&e, timeout).await
    }

    async fn stop_locked(self: &Arc<Self>, e: &Arc<Entry>, timeout: Option<u32>) -> Result<()> {
        let st = e.state();
        if st.status == Status::Restarting {
            e.update(|s| {
                s.status = Status::Exited;
                s.manually_stopped = true;
            });
            return Ok(());
        }
        if !st.is_running() {
            return Ok(());
        }
        self.thaw(e).await?;
        e.update(|s| s.manually_stopped = true);
        // Only a monitor folds the exit in; make sure one watches.
        self.spawn_monitor(e.clone());
        let r = e.record();
        let t = timeout.or(r.config.stop_timeout).unwrap_or(10);
        let sig = signal_number(&r.config.stop_signal).unwrap_or(libc::SIGTERM);
        let _ = self.signal(e, sig).await;
        if !self.wait_stopped(e, Duration::from_secs(t as u64)).await {
            tracing::info!(container_id = %e.id, "stop timeout; sending SIGKILL");
            let _ = self.signal(e, libc::SIGKILL).await;
            if !self.wait_stopped(e, Duration::from_secs(10)).await {
                return Err(AgentError::Internal(format!(
                    "container {} did not stop after SIGKILL",
                    e.id
                )));
            }
        }
        self.emit(e, "stop", &[]);
        Ok(())
    }

    pub async fn restart(self: &Arc<Self>, key: &str, timeout: Option<u32>) -> Result<()> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        self.stop_locked(&e, timeout).await?;
        self.start_locked(&e, false).await?;
        self.emit(&e, "restart", &[]);
        Ok(())
    }

    /// Waits for the container to stop; returns its exit code.
    pub async fn wait(&self, key: &str) -> Result<i32> {
        let e = self.get(key)?;
        let mut rx = e.changed.subscribe();
        loop {
            let st = e.state();
            if !st.is_running() && st.status != Status::Created {
                return Ok(st.exit_code);
            }
            if rx.changed().await.is_err() {
                return Ok(e.state().exit_code);
            }
        }
    }

    /// Waits until a just-exited container's exit has been handled (state recorded,
    /// `--rm` done), so a client that saw the exit sees consistent state afterwards.
    pub async fn wait_handled(&self, e: &Entry) {
        let mut rx = e.changed.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let gone = self.get(&e.id).is_err();
            let st = e.state();
            if gone
                || (!st.is_running() && st.status != Status::Created)
                || st.status == Status::Restarting
            {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    pub async fn remove(self: &Arc<Self>, key: &str, force: bool) -> Result<()> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        self.remove_locked(&e, force).await
    }

    async fn remove_locked(self: &Arc<Self>, e: &Arc<Entry>, force: bool) -> Result<()> {
        let e = e.clone();
        let st = e.state();
        if st.is_running() && st.status != Status::Restarting {
            if !force {
                return Err(AgentError::Conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    e.id
                )));
            }
            self.thaw(&e).await?;
            e.update(|s| s.manually_stopped = true);
            self.spawn_monitor(e.clone());
            let _ = self.signal(&e, libc::SIGKILL).await;
            if !self.wait_stopped(&e, Duration::from_secs(10)).await {
                return Err(AgentError::Internal(format!(
                    "could not kill running container {}",
                    e.id
                )));
            }
        }
        e.update(|s| s.status = Status::Removing);
        self.networks.forget(&e.id).await;
        namespaces::release(&e);
        // Renamed, the container is gone; its files are deleted in the background (off
        // `rm`'s and `run --rm`'s path), once its shim has ended: the shim unmounts the
        // rootfs (in the exec dir, over `upper/` here) after announcing the exit. A
        // crash mid-delete leaves a `.`-prefixed dir that restore() drops, and an exec
        // dir of no container, which restore() also removes.
        let doomed = self
            .cfg
            .root
            .join("containers")
            .join(format!(".rm-{}", e.id));
        std::fs::rename(&e.paths.dir, &doomed)?;
        let gone = e.clone();
        tokio::spawn(async move {
            gone.shim_ended().await;
            let _ = tokio::task::spawn_blocking(move || {
                let _ = skiff_runtime::snapshot::unmount(&gone.paths.rootfs());
                for dir in [&gone.paths.exec_dir, &doomed] {
                    match std::fs::remove_dir_all(dir) {
                        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                            tracing::warn!(path = %dir.display(), error = %err, "deleting a removed container's files");
                        }
                        _ => {}
                    }
                }
            })
            .await;
        });
        self.by_id
            .lock()
            .map_err(|_| AgentError::internal("lock"))?
            .remove(&e.id);
        self.emit(&e, "destroy", &[]);
        // --rm takes the container's anonymous volumes with it, as Docker does.
        let r = e.record();
        if r.config.auto_remove {
            let users = |n: &str| self.volume_users(n);
            for v in self.volumes.remove_anonymous(&users, &r.config.mounts) {
                self.events
                    .emit("volume", "destroy", &v, Default::default());
            }
        }
        e.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// `pause`: freezes every process of a running container (cgroup freezer).
    pub async fn pause(&self, key: &str) -> Result<()> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        match e.state().status {
            Status::Running => {}
            Status::Paused => {
                return Err(AgentError::Precondition(format!(
                    "Container {} is already paused",
                    e.id
                )))
            }
            _ => {
                return Err(AgentError::Precondition(format!(
                    "Container {} is not running",
                    e.id
                )))
            }
        }
        let cg = self.cgroup(&e.id);
        tokio::task::spawn_blocking(move || cg.freeze(true))
            .await
            .map_err(|err| AgentError::Internal(format!("pause: {err}")))?
            .map_err(|err| {
                AgentError::Internal(format!("Cannot pause container {}: {err}", e.id))
            })?;
        e.update(|s| s.status = Status::Paused);
        self.emit(&e, "pause", &[]);
        Ok(())
    }

    /// `unpause`: thaws a paused container.
    pub async fn unpause(&self, key: &str) -> Result<()> {
        let e = self.get(key)?;
        let _op = e.op.lock().await;
        if e.state().status != Status::Paused {
            return Err(AgentError::Precondition(format!(
                "Container {} is not paused",
                e.id
            )));
        }
        self.thaw(&e).await?;
        self.emit(&e, "unpause", &[]);
        Ok(())
    }

    /// Thaws a paused container (before it is stopped or killed: a frozen process
    /// does not act on signals).
    async fn thaw(&self, e: &Arc<Entry>) -> Result<()> {
        if e.state().status != Status::Paused {
            return Ok(());
        }
        let cg = self.cgroup(&e.id);
        tokio::task::spawn_blocking(move || cg.freeze(false))
            .await
            .map_err(|err| AgentError::Internal(format!("unpause: {err}")))?
            .map_err(|err| {
                AgentError::Internal(format!("Cannot unpause container {}: {err}", e.id))
            })?;
        e.update(|s| {
            if s.status == Status::Paused {
                s.status = Status::Running;
            }
        });
        Ok(())
    }

    /// `rm [-v]`: removes the container and, with `volumes`, its anonymous volumes
    /// that no other container uses.
    pub async fn remove_with_volumes(
        self: &Arc<Self>,
        key: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let mounts = self.get(key)?.record().config.mounts;
        self.remove(key, force).await?;
        if volumes {
            let users = |n: &str| self.volume_users(n);
            for v in self.volumes.remove_anonymous(&users, &mounts) {
                self.events
                    .emit("volume", "destroy", &v, Default::default());
            }
        }
        Ok(())
    }

    pub async fn rename(&self, key: &str, new_name: &str) -> Result<()> {
        let e = self.get(key)?;
        let new_name = new_name.trim_start_matches('/');
        names::validate(new_name).map_err(AgentError::Invalid)?;
        let _g = self
            .reserved
            .lock()
            .map_err(|_| AgentError::internal("lock"))?;
        if let Ok(other) = self.get(new_name) {
            if other.name() == new_name {
                return Err(AgentError::Conflict(format!(
                    "Conflict. The container name \"/{new_name}\" is already in use by container \"{}\"",
                    other.id
                )));
            }
        }
        let mut r = e.record();
        let old = r.name.clone();
        r.name = new_name.to_string();
        fsutil::write_json_atomic(&e.paths.record(), &r)?;
        if let Ok(mut w) = e.record.write() {
            *w = r;
        }
        self.emit(&e, "rename", &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    /// Connects an attach client to a running container's shim.
    pub async fn attach(&self, key: &str, stdin: bool) -> Result<(Arc<Entry>, UnixStream)> {
        let e = self.get(key)?;
        if !e.state().is_running() {
            return Err(AgentError::Precondition(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        let mut conn = UnixStream::connect(e.paths.socket()).await?;
        write_frame(
            &mut conn,
            &Frame::Hello {
                stdin,
                output: true,
            },
        )
        .await?;
        Ok((e, conn))
    }

    /// Starts an exec shim; returns a connection to it (already said Hello) and the
    /// exec process's pid on the host (what Docker's exec inspect reports).
    pub async fn exec(
        &self,
        key: &str,
        spec: skiff_runtime::shim::exec::ExecSpec,
        detach: bool,
    ) -> Result<(UnixStream, i32)> {
        // An exec's process joins the container's cgroup: the same migration as a start.
        skiff_runtime::cgroup::keep_migration_warm(MIGRATION_WARM);
        let e = self.get(key)?;
        if e.state().status != Status::Running {
            return Err(AgentError::Precondition(format!(
                "Container {} is not running",
                e.id
            )));
        }
        let mut spec = spec;
        spec.exec_id = hex::encode(rand::random::<[u8; 16]>());
        spec.socket_path = e.paths.exec_socket(&spec.exec_id);
        let exec_file = e
            .paths
            .exec_dir
            .join(format!("exec-{}.json", &spec.exec_id[..12]));
        fsutil::write_json_atomic(&exec_file, &spec)?;
        let task = e.paths.task();
        let report = self
            .spawn_shim(
                &[
                    std::ffi::OsStr::new("--task"),
                    task.as_os_str(),
                    std::ffi::OsStr::new("--exec"),
                    exec_file.as_os_str(),
                ],
                &e.paths.shim_log(),
            )
            .await?;
        if !report.error.is_empty() {
            let code = if report.exit_code == 0 {
                126
            } else {
                report.exit_code
            };
            return Err(AgentError::Start {
                message: report.error,
                exit_code: code,
            });
        }
        self.emit(&e, "exec_start", &[("execID", spec.exec_id.clone())]);
        let mut conn = UnixStream::connect(&spec.socket_path).await?;
        write_frame(
            &mut conn,
            &Frame::Hello {
                stdin: spec.stdin,
                output: !detach,
            },
        )
        .await?;
        Ok((conn, report.pid))
    }

    /// PIDs in the container's cgroup.
    pub fn pids(&self, e: &Entry) -> Vec<i32> {
        let rel = self.cgroups_path(&e.id);
        let rel = rel.trim_start_matches('/');
        for base in [
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ] {
            if let Ok(s) =
                std::fs::read_to_string(PathBuf::from(base).join(rel).join("cgroup.procs"))
            {
                return s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        let pid = e.state().pid;
        if pid > 0 {
            vec![pid]
        } else {
            vec![]
        }
    }
}

/// `--device` host paths must name device nodes (or directories holding some), the
/// cgroup rules must parse, and `--init` needs a static init on this host: checked at
/// create so `run` fails before anything is made (Docker finds out at start).
fn validate_devices_and_init(
    c: &ContainerConfig,
    init_path: Option<&std::path::Path>,
) -> Result<()> {
    use skiff_runtime::container::{devices, docker_init};
    devices::resolve_all(&c.devices).map_err(|e| AgentError::Invalid(e.to_string()))?;
    for r in &c.device_cgroup_rules {
        devices::parse_cgroup_rule(r).map_err(|e| AgentError::Invalid(e.to_string()))?;
    }
    if c.init {
        docker_init::find(init_path).map_err(|e| AgentError::Invalid(e.to_string()))?;
    }
    Ok(())
}

fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// A container with its own network namespace but no network gets no nameservers; on
/// the host network it would see the host's file (bind-mounted instead of this one).
fn resolv_conf(_network_mode: &str) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    // Loopback resolvers are unreachable from a container's own namespace.
    let mut out: String = host
        .lines()
        .filter(|l| !(l.starts_with("nameserver") && (l.contains("127.") || l.contains("::1"))))
        .map(|l| format!("{l}\n"))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_docker() {
        assert_eq!(signal_number("KILL").expect("kill"), 9);
        assert_eq!(signal_number("sigterm").expect("term"), 15);
        assert_eq!(signal_number("SIGUSR1").expect("usr1"), libc::SIGUSR1);
        assert_eq!(signal_number("2").expect("int"), 2);
        assert!(signal_number("FOO").is_err());
    }

    #[test]
    fn resolv_conf_drops_loopback_resolvers() {
        let s = resolv_conf("none");
        assert!(!s.contains("nameserver 127."));
    }
}
