//! Volumes: the local volume store ([`VolumeStore`], `<root>/volumes/<name>/_data`),
//! the parsing of `-v`, `--mount` and `--tmpfs` into [`MountPoint`]s ([`parse`]), and
//! the host-side preparation the shim does before libcontainer mounts them
//! ([`target`]: symlink-safe targets and Docker's copy-up of image content).
//!
//! A container's mount points are resolved once, at create, and stored in its record,
//! so `--volumes-from` works from a container that never ran.

pub mod parse;
pub mod target;

use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Label Docker puts on volumes created for `-v /path` (anonymous volumes).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    #[default]
    Volume,
    Bind,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One user mount of a container, as Docker's `MountPoint`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MountPoint {
    pub kind: MountKind,
    /// Volume name (volumes only).
    #[serde(default)]
    pub name: String,
    /// Host path: the bind source or the volume's `_data`; empty for tmpfs.
    #[serde(default)]
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    pub rw: bool,
    /// The mode string as given to `-v` (`ro`, `z`, ...), shown by `inspect`.
    #[serde(default)]
    pub mode: String,
    /// Bind propagation (`rprivate` by default for binds).
    #[serde(default)]
    pub propagation: String,
    /// Fill an empty volume with the image's content at the target on first mount.
    #[serde(default)]
    pub copy_up: bool,
    /// Extra mount options (tmpfs: `size=`, `mode=`, `noexec`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// A volume's metadata, stored beside its `_data` directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Volume {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// `docker volume inspect`.
    pub fn to_docker_json(&self) -> serde_json::Value {
        serde_json::json!({
            "CreatedAt": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "Driver": self.driver,
            "Labels": self.labels,
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": self.options,
            "Scope": "local",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("\"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("volume {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// Docker's local volume name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The local volume driver: one directory per volume under `<root>/volumes`.
/// Creates are built in `.tmp-<name>` and renamed into place; removes rename to
/// `.rm-<name>` first, so a crash never leaves a half volume under its real name.
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    /// The store under `root`, without touching the disk.
    pub fn at(root: &Path) -> Self {
        Self {
            dir: root.join("volumes"),
        }
    }

    /// Creates the store directory and drops leftovers of interrupted creates and
    /// removes. Call once at start, before any other operation.
    pub fn init(&self) -> Result<(), VolumeError> {
        let io = |what| {
            move |source| VolumeError::Io {
                name: String::new(),
                what,
                source,
            }
        };
        fsutil::create_dir_mode(&self.dir, 0o700).map_err(io("creating the volume directory"))?;
        for ent in std::fs::read_dir(&self.dir)
            .map_err(io("listing volumes"))?
            .flatten()
        {
            if ent.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_dir_all(ent.path());
            }
        }
        Ok(())
    }

    /// [`VolumeStore::at`] then [`VolumeStore::init`].
    pub fn open(root: &Path) -> Result<Self, VolumeError> {
        let s = Self::at(root);
        s.init()?;
        Ok(s)
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    /// The host path mounted into containers for volume `name`.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.into()));
        }
        match fsutil::read_json::<Volume>(&self.meta(name)) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(VolumeError::NotFound(name.into())),
            Err(source) => Err(VolumeError::Io {
                name: name.into(),
                what: "reading metadata",
                source,
            }),
        }
    }

    pub fn list(&self) -> Vec<Volume> {
        let mut out: Vec<Volume> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') {
                    return None;
                }
                self.get(&n).ok()
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Creates volume `name` (a random one when `None`). Returns the existing volume
    /// when it already exists, as Docker does; `created` tells which.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(Volume, bool), VolumeError> {
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => hex::encode(rand::random::<[u8; 32]>()),
        };
        if !valid_name(&name) {
            return Err(VolumeError::InvalidName(name));
        }
        if let Ok(v) = self.get(&name) {
            return Ok((v, false));
        }
        let io = |what| {
            let name = name.clone();
            move |source| VolumeError::Io { name, what, source }
        };
        let tmp = self.dir.join(format!(
            ".tmp-{name}-{}",
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let vol = Volume {
            name: name.clone(),
            driver: "local".into(),
            mountpoint: self.data_path(&name),
            created_at: chrono::Utc::now(),
            labels,
            options: BTreeMap::new(),
        };
        let res = (|| {
            fsutil::create_dir_mode(&tmp, 0o701).map_err(io("creating"))?;
            // Docker's _data is 0755 root-owned until copy-up sets the image's mode.
            fsutil::create_dir_mode(&tmp.join("_data"), 0o755).map_err(io("creating _data"))?;
            fsutil::write_json_atomic(&tmp.join("volume.json"), &vol)
                .map_err(io("writing metadata"))?;
            match std::fs::rename(&tmp, self.dir.join(&name)) {
                Ok(()) => {}
                // Another create won the race: theirs stands.
                Err(_) if self.get(&name).is_ok() => return Ok(false),
                Err(e) => return Err(io("renaming into place")(e)),
            }
            fsutil::sync_dir(&self.dir).map_err(io("syncing"))?;
            Ok(true)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        let created = res?;
        Ok((self.get(&name)?, created))
    }

    /// Removes the volume and its data. The caller checks it is unused.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let doomed = self.dir.join(format!(".rm-{name}"));
        std::fs::rename(self.dir.join(name), &doomed).map_err(|source| VolumeError::Io {
            name: name.into(),
            what: "removing",
            source,
        })?;
        std::fs::remove_dir_all(&doomed).map_err(|source| VolumeError::Io {
            name: name.into(),
            what: "removing data",
            source,
        })?;
        let _ = fsutil::sync_dir(&self.dir);
        Ok(())
    }

    /// Bytes used by the volume's data.
    pub fn size(&self, name: &str) -> u64 {
        fsutil::disk_usage(&self.data_path(name))
    }
}

/// OCI mount entries for user mounts, parents before children (Docker sorts by depth,
/// so `/a` is mounted before `/a/b`).
pub fn oci_mounts(points: &[MountPoint]) -> Vec<serde_json::Value> {
    let mut sorted: Vec<&MountPoint> = points.iter().collect();
    sorted.sort_by_key(|m| m.destination.matches('/').count());
    sorted
        .into_iter()
        .map(|m| {
            let rw = if m.rw { "rw" } else { "ro" };
            match m.kind {
                MountKind::Tmpfs => {
                    let mut opts = m.options.clone();
                    opts.push(rw.into());
                    serde_json::json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts})
                }
                MountKind::Bind | MountKind::Volume => {
                    let prop = if m.propagation.is_empty() { "rprivate" } else { m.propagation.as_str() };
                    serde_json::json!({
                        "destination": m.destination,
                        "type": "bind",
                        "source": m.source,
                        "options": ["rbind", prop, rw],
                    })
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_mounts_are_ordered_by_depth() {
        let pts = vec![
            MountPoint {
                kind: MountKind::Bind,
                source: "/h".into(),
                destination: "/a/b".into(),
                rw: false,
                propagation: "rslave".into(),
                ..Default::default()
            },
            MountPoint {
                kind: MountKind::Tmpfs,
                destination: "/a".into(),
                rw: true,
                options: vec!["size=1024".into()],
                ..Default::default()
            },
        ];
        let m = oci_mounts(&pts);
        assert_eq!(m[0]["destination"], "/a");
        assert_eq!(m[0]["options"], serde_json::json!(["size=1024", "rw"]));
        assert_eq!(
            m[1]["options"],
            serde_json::json!(["rbind", "rslave", "ro"])
        );
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("data"));
        assert!(valid_name("a.b-c_d9"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn create_get_list_remove() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = VolumeStore::open(d.path()).expect("open");
        let labels: BTreeMap<_, _> = [("k".to_string(), "v".to_string())].into();
        let (v, created) = s.create(Some("data"), labels.clone()).expect("create");
        assert!(created);
        assert_eq!(v.mountpoint, d.path().join("volumes/data/_data"));
        assert!(v.mountpoint.is_dir());
        let (again, created) = s.create(Some("data"), BTreeMap::new()).expect("again");
        assert!(!created);
        assert_eq!(again.labels, labels);
        let (anon, _) = s
            .create(None, [(ANONYMOUS_LABEL.to_string(), String::new())].into())
            .expect("anon");
        assert_eq!(anon.name.len(), 64);
        assert!(anon.anonymous());
        assert_eq!(s.list().len(), 2);
        std::fs::write(v.mountpoint.join("f"), b"12345").expect("write");
        assert_eq!(s.size("data"), 5);
        s.remove("data").expect("rm");
        assert!(matches!(s.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(
            s.create(Some("../x"), BTreeMap::new()),
            Err(VolumeError::InvalidName(_))
        ));
        assert_eq!(s.list().len(), 1);
    }

    #[test]
    fn interrupted_operations_are_dropped_at_open() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("volumes/.tmp-x/_data")).expect("mkdir");
        let s = VolumeStore::open(d.path()).expect("open");
        assert!(s.list().is_empty());
        assert!(!d.path().join("volumes/.tmp-x").exists());
    }
}
