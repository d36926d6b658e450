//! Volumes in the agent: turning a create request's `-v` / `--mount` / `--tmpfs` /
//! `--volumes-from` into resolved mount points (creating volumes as Docker does), and
//! the store's guarded creates and removes.
//!
//! A volume is "in use" while any container record (running or not) mounts it;
//! `volume rm` and `volume prune` refuse or skip those, as Docker does. The records are
//! the containers' (`Containers::volume_users`): callers pass that answer in, so this
//! module stays below the containers it serves.

use crate::error::{AgentError, Result};
use crate::events::EventBus;
use skiff_runtime::cgroup::{self, Resources};
use skiff_runtime::container::ContainerConfig;
use skiff_runtime::volume::parse::{self, ParseError};
use skiff_runtime::volume::{
    MountKind, MountPoint, Volume, VolumeError, VolumeStore, ANONYMOUS_LABEL,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// The agent's volume store plus the lock that serialises volume creates and removes.
pub struct Volumes {
    pub store: VolumeStore,
    lock: Mutex<()>,
}

impl From<VolumeError> for AgentError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::NotFound(_) => AgentError::NotFound(e.to_string()),
            VolumeError::InvalidName(_) => AgentError::Invalid(e.to_string()),
            VolumeError::Io { .. } => AgentError::Internal(e.to_string()),
        }
    }
}

fn invalid(e: ParseError) -> AgentError {
    AgentError::Invalid(e.to_string())
}

impl Volumes {
    /// The store at `<root>/volumes`; nothing touches the disk until [`Volumes::init`].
    pub fn new(root: &Path) -> Self {
        Self {
            store: VolumeStore::at(root),
            lock: Mutex::new(()),
        }
    }

    /// Creates the directory and drops leftovers of interrupted operations (at start).
    pub fn init(&self) -> Result<()> {
        let _g = self.guard();
        Ok(self.store.init()?)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(Volume, bool)> {
        let _g = self.guard();
        Ok(self.store.create(name, labels)?)
    }

    /// Removes `name` unless a container uses it (`force` only skips "no such volume").
    /// `users_of` names the containers that mount a volume.
    pub fn remove(&self, users_of: UsersOf<'_>, name: &str, force: bool) -> Result<()> {
        let _g = self.guard();
        let users = users_of(name);
        if !users.is_empty() {
            return Err(AgentError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        match self.store.remove(name) {
            Err(VolumeError::NotFound(_)) if force => Ok(()),
            r => Ok(r?),
        }
    }

    /// Removes the anonymous volumes of a removed container that no other container
    /// uses (`rm -v`, `--rm`). Returns their names.
    pub fn remove_anonymous(&self, users_of: UsersOf<'_>, mounts: &[MountPoint]) -> Vec<String> {
        let _g = self.guard();
        let mut removed = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let Ok(v) = self.store.get(&m.name) else {
                continue;
            };
            if v.anonymous() && users_of(&m.name).is_empty() && self.store.remove(&m.name).is_ok() {
                removed.push(m.name.clone());
            }
        }
        removed
    }

    /// Removes unused volumes: anonymous ones only, or all with `all` (Docker 23+).
    /// Returns the removed names and the bytes freed.
    pub fn prune(
        &self,
        users_of: UsersOf<'_>,
        all: bool,
        filters: &[String],
    ) -> (Vec<String>, u64) {
        let _g = self.guard();
        let mut removed = Vec::new();
        let mut freed = 0;
        for v in self.store.list() {
            if !all && !v.anonymous() {
                continue;
            }
            if !users_of(&v.name).is_empty() || !matches(&v, filters, false) {
                continue;
            }
            let size = self.store.size(&v.name);
            if self.store.remove(&v.name).is_ok() {
                freed += size;
                removed.push(v.name);
            }
        }
        (removed, freed)
    }

    /// Removes volumes created for a container whose create then failed.
    pub fn discard(&self, names: &[String]) {
        for n in names {
            let _ = self.store.remove(n);
        }
    }
}

/// IDs of the containers whose record mounts a volume (by name).
pub type UsersOf<'a> = &'a dyn Fn(&str) -> Vec<String>;

/// The mounts of a container (by name or ID), for `--volumes-from`.
pub type MountsOf<'a> = &'a dyn Fn(&str) -> Result<Vec<MountPoint>>;

/// `volume ls --filter`: `dangling=true|false`, `name=SUBSTR`, `label=KEY[=VALUE]`,
/// `driver=local`. `dangling` needs the in-use answer, passed as `in_use`.
pub fn matches(v: &Volume, filters: &[String], in_use: bool) -> bool {
    filters.iter().all(|f| {
        let Some((k, val)) = f.split_once('=') else {
            return true;
        };
        match k {
            "dangling" => match val {
                "true" | "1" => !in_use,
                "false" | "0" => in_use,
                _ => true,
            },
            "name" => v.name.contains(val),
            "driver" => v.driver == val,
            "label" => {
                let (lk, lv) = val
                    .split_once('=')
                    .map(|(a, b)| (a, Some(b)))
                    .unwrap_or((val, None));
                v.labels
                    .get(lk)
                    .is_some_and(|x| lv.is_none_or(|lv| x == lv))
            }
            "label!" => {
                let (lk, lv) = val
                    .split_once('=')
                    .map(|(a, b)| (a, Some(b)))
                    .unwrap_or((val, None));
                v.labels
                    .get(lk)
                    .is_none_or(|x| lv.is_some_and(|lv| x != lv))
            }
            _ => true,
        }
    })
}

/// Parses the request's mount flags into unresolved mount points (volume names may be
/// empty: anonymous) and resource flags into [`Resources`]. `--mount type=bind`
/// requires an existing source; `-v` creates a missing host directory, as Docker does.
pub fn parse_request(
    binds: &[String],
    mounts: &[String],
    tmpfs: &[String],
    res: Option<skiff_proto::engine::Resources>,
) -> Result<(Vec<MountPoint>, Resources)> {
    let mut points = Vec::new();
    for b in binds {
        let m = parse::parse_bind(b).map_err(invalid)?;
        if m.kind == MountKind::Bind && !m.source.exists() {
            std::fs::create_dir_all(&m.source).map_err(|e| {
                AgentError::Invalid(format!(
                    "error while creating mount source path '{}': {e}",
                    m.source.display()
                ))
            })?;
        }
        points.push(m);
    }
    for s in mounts {
        let m = parse::parse_mount(s).map_err(invalid)?;
        if m.kind == MountKind::Bind && !m.source.exists() {
            return Err(AgentError::Invalid(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                m.source.display()
            )));
        }
        points.push(m);
    }
    for t in tmpfs {
        points.push(parse::parse_tmpfs(t).map_err(invalid)?);
    }
    parse::check_duplicates(&points).map_err(invalid)?;
    Ok((points, resources_from_proto(res.unwrap_or_default())?))
}

/// Proto resources → runtime resources (parsing ulimits and device throttles).
pub fn resources_from_proto(p: skiff_proto::engine::Resources) -> Result<Resources> {
    let inv = |e: cgroup::ResourceError| AgentError::Invalid(e.to_string());
    Ok(Resources {
        memory: p.memory,
        memory_swap: p.memory_swap,
        memory_reservation: p.memory_reservation,
        nano_cpus: p.nano_cpus,
        cpu_shares: p.cpu_shares,
        cpuset_cpus: p.cpuset_cpus,
        pids_limit: p.pids_limit,
        blkio_weight: u16::try_from(p.blkio_weight)
            .map_err(|_| inv(cgroup::ResourceError::BadBlkioWeight))?,
        device_read_bps: p
            .device_read_bps
            .iter()
            .map(|s| cgroup::parse_throttle(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(inv)?,
        device_write_bps: p
            .device_write_bps
            .iter()
            .map(|s| cgroup::parse_throttle(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(inv)?,
        oom_kill_disable: p.oom_kill_disable,
        oom_score_adj: p.oom_score_adj,
        ulimits: p
            .ulimits
            .iter()
            .map(|s| cgroup::parse_ulimit(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(inv)?,
    })
}

/// Completes a new container's mounts and limits: image `VOLUME`s become anonymous
/// volumes, `--volumes-from` is expanded, volumes are created, resources validated.
/// Returns Docker's warnings and the anonymous volumes created (to drop if the create
/// fails afterwards).
pub fn resolve_create(
    volumes: &Volumes,
    events: &EventBus,
    mounts_of: MountsOf<'_>,
    config: &mut ContainerConfig,
    image_volumes: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut points = std::mem::take(&mut config.mounts);
    for spec in &config.volumes_from {
        let (name, mode) = match spec.rsplit_once(':') {
            Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m == "rw")),
            Some(_) => {
                return Err(AgentError::Invalid(format!(
                    "invalid mode for volumes-from: {spec}"
                )))
            }
            None => (spec.as_str(), None),
        };
        for m in mounts_of(name)?
            .iter()
            .filter(|m| m.kind != MountKind::Tmpfs)
        {
            if points.iter().any(|p| p.destination == m.destination) {
                continue;
            }
            let mut m = m.clone();
            if let Some(rw) = mode {
                m.rw = rw;
            }
            m.copy_up = false;
            points.push(m);
        }
    }
    for dest in image_volumes {
        let dest = parse::clean_path(dest);
        if !points.iter().any(|p| p.destination == dest) {
            points.push(MountPoint {
                kind: MountKind::Volume,
                destination: dest,
                rw: true,
                copy_up: true,
                ..Default::default()
            });
        }
    }
    let mut warnings = config
        .resources
        .validate(&host_limits())
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let mut created_anon = Vec::new();
    let res = (|| -> Result<()> {
        for m in points
            .iter_mut()
            .filter(|m| m.kind == MountKind::Volume && m.source.as_os_str().is_empty())
        {
            let (v, created) = if m.name.is_empty() {
                volumes.create(None, [(ANONYMOUS_LABEL.to_string(), String::new())].into())?
            } else {
                volumes.create(Some(&m.name), BTreeMap::new())?
            };
            if created {
                if v.anonymous() {
                    created_anon.push(v.name.clone());
                }
                events.emit(
                    "volume",
                    "create",
                    &v.name,
                    [("driver".to_string(), "local".to_string())].into(),
                );
            }
            m.name = v.name;
            m.source = v.mountpoint;
        }
        Ok(())
    })();
    if let Err(e) = res {
        volumes.discard(&created_anon);
        return Err(e);
    }
    warnings.dedup();
    config.mounts = points;
    Ok((warnings, created_anon))
}

fn host_limits() -> cgroup::HostLimits {
    static HOST: std::sync::OnceLock<cgroup::HostLimits> = std::sync::OnceLock::new();
    HOST.get_or_init(cgroup::HostLimits::detect).clone()
}

/// Docker's `Mounts` array for `inspect`.
pub fn inspect_mounts(mounts: &[MountPoint]) -> serde_json::Value {
    mounts
        .iter()
        .map(|m| match m.kind {
            MountKind::Volume => serde_json::json!({
                "Type": "volume",
                "Name": m.name,
                "Source": m.source,
                "Destination": m.destination,
                "Driver": "local",
                "Mode": m.mode,
                "RW": m.rw,
                "Propagation": "",
            }),
            MountKind::Bind => serde_json::json!({
                "Type": "bind",
                "Source": m.source,
                "Destination": m.destination,
                "Mode": m.mode,
                "RW": m.rw,
                "Propagation": m.propagation,
            }),
            MountKind::Tmpfs => serde_json::json!({
                "Type": "tmpfs",
                "Source": "",
                "Destination": m.destination,
                "Mode": m.mode,
                "RW": m.rw,
                "Propagation": "",
            }),
        })
        .collect()
}

/// Adds Docker's `Mounts` and the HostConfig volume and resource fields to a
/// container's inspect document.
pub fn extend_inspect(doc: &mut serde_json::Value, c: &ContainerConfig) {
    doc["Mounts"] = inspect_mounts(&c.mounts);
    let hc = &mut doc["HostConfig"];
    hc["Binds"] = serde_json::json!(c.binds);
    hc["VolumesFrom"] = serde_json::json!(c.volumes_from);
    let tmpfs: serde_json::Map<String, serde_json::Value> = c
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Tmpfs)
        .map(|m| {
            (
                m.destination.clone(),
                serde_json::json!(m.options.join(",")),
            )
        })
        .collect();
    hc["Tmpfs"] = serde_json::Value::Object(tmpfs);
    if let serde_json::Value::Object(res) = c.resources.to_docker_json() {
        for (k, v) in res {
            hc[k] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let v = Volume {
            name: "data1".into(),
            driver: "local".into(),
            mountpoint: "/x".into(),
            created_at: chrono::Utc::now(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            options: BTreeMap::new(),
        };
        assert!(matches(&v, &["name=data".into()], false));
        assert!(!matches(&v, &["name=other".into()], false));
        assert!(matches(
            &v,
            &["label=env".into(), "label=env=prod".into()],
            false
        ));
        assert!(!matches(&v, &["label=env=dev".into()], false));
        assert!(matches(&v, &["dangling=true".into()], false));
        assert!(!matches(&v, &["dangling=true".into()], true));
        assert!(matches(&v, &["dangling=false".into()], true));
    }

    #[test]
    fn request_parsing() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("made");
        let (pts, _) = parse_request(
            &[format!("{}:/m", missing.display()), "/anon".into()],
            &[],
            &["/t".into()],
            None,
        )
        .expect("ok");
        assert!(missing.is_dir(), "-v creates a missing host directory");
        assert_eq!(pts.len(), 3);
        let err = parse_request(
            &[],
            &[format!(
                "type=bind,src={}/nope,dst=/x",
                dir.path().display()
            )],
            &[],
            None,
        )
        .expect_err("missing");
        assert!(
            err.to_string().contains("bind source path does not exist"),
            "{err}"
        );
        assert!(
            parse_request(&["/a".into()], &[], &["/a".into()], None).is_err(),
            "duplicate accepted"
        );
    }
}
