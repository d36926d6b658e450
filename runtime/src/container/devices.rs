//! Host devices given to a container (`--device`, Docker's `HostConfig.Devices`) and
//! extra device cgroup rules (`--device-cgroup-rule`, `HostConfig.DeviceCgroupRules`).
//!
//! A mapping is kept as the user gave it; the host node is read (type, major, minor,
//! mode, owner) each time the container starts, as Docker does, since device numbers
//! may change across reboots. libcontainer creates the node (`linux.devices`) and the
//! cgroup allows it (`linux.resources.devices`) on cgroup v1 and v2 alike.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One `--device HOST[:CONTAINER[:PERMS]]`, in Docker's `DeviceMapping` shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    /// Any of `r`, `w`, `m` (default `rwm`).
    pub cgroup_permissions: String,
}

/// A device node read from the host, as it goes into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Path inside the container.
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    /// Permission bits of the host node.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub permissions: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("invalid device specification: {0}")]
    Spec(String),
    #[error("invalid device mode: {0}")]
    Mode(String),
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    #[error("error gathering device information while adding custom device {path:?}: {reason}")]
    Gather { path: String, reason: String },
    #[error("invalid device cgroup rule {0:?}: want TYPE MAJOR:MINOR ACCESS (e.g. 'c 1:3 rwm')")]
    Rule(String),
}

fn valid_mode(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 3
        && m.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && m.chars().collect::<std::collections::BTreeSet<_>>().len() == m.len()
}

impl DeviceMapping {
    /// Docker's `--device` syntax: `HOST`, `HOST:CONTAINER`, `HOST:PERMS` or
    /// `HOST:CONTAINER:PERMS`.
    pub fn parse(s: &str) -> Result<Self, DeviceError> {
        let parts: Vec<&str> = s.split(':').collect();
        let (host, mut dst, mut perms) = (parts[0], "", "rwm");
        match parts.len() {
            1 => {}
            2 if valid_mode(parts[1]) => perms = parts[1],
            2 => dst = parts[1],
            3 => {
                dst = parts[1];
                perms = parts[2];
            }
            _ => return Err(DeviceError::Spec(s.into())),
        }
        Self::new(host, dst, perms)
    }

    /// A mapping from its parts; an empty container path is the host path and empty
    /// permissions are `rwm`, as dockerd fills them in.
    pub fn new(host: &str, dst: &str, perms: &str) -> Result<Self, DeviceError> {
        if host.is_empty() {
            return Err(DeviceError::Spec(format!("{host}:{dst}:{perms}")));
        }
        let dst = if dst.is_empty() { host } else { dst };
        let perms = if perms.is_empty() { "rwm" } else { perms };
        if !valid_mode(perms) {
            return Err(DeviceError::Mode(perms.into()));
        }
        for p in [host, dst] {
            if !p.starts_with('/') {
                return Err(DeviceError::NotAbsolute(p.into()));
            }
        }
        Ok(DeviceMapping {
            path_on_host: host.into(),
            path_in_container: dst.into(),
            cgroup_permissions: perms.into(),
        })
    }

    /// `HOST:CONTAINER:PERMS`, the form [`DeviceMapping::parse`] reads back.
    pub fn to_spec_string(&self) -> String {
        format!(
            "{}:{}:{}",
            self.path_on_host, self.path_in_container, self.cgroup_permissions
        )
    }

    /// The device nodes this mapping gives: the node itself, or every node below a
    /// directory (`--device /dev/snd`), each at the same place below the container path.
    pub fn resolve(&self) -> Result<Vec<HostDevice>, DeviceError> {
        let gather = |reason: String| DeviceError::Gather {
            path: self.path_on_host.clone(),
            reason,
        };
        let host = std::fs::canonicalize(&self.path_on_host).map_err(|e| gather(os_reason(&e)))?;
        let md = std::fs::metadata(&host).map_err(|e| gather(os_reason(&e)))?;
        if let Some(d) = self.node(&host, &md, &self.path_in_container) {
            return Ok(vec![d]);
        }
        if !md.is_dir() {
            return Err(gather("not a device node".into()));
        }
        let mut out = Vec::new();
        let mut stack: Vec<PathBuf> = vec![host.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for ent in rd.flatten() {
                let p = ent.path();
                // Never follows symlinks below the directory (Docker's WalkDir).
                let Ok(md) = std::fs::symlink_metadata(&p) else {
                    continue;
                };
                if md.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&host) else {
                    continue;
                };
                let dst = format!(
                    "{}/{}",
                    self.path_in_container.trim_end_matches('/'),
                    rel.display()
                );
                if let Some(d) = self.node(&p, &md, &dst) {
                    out.push(d);
                }
            }
        }
        if out.is_empty() {
            return Err(gather("not a device node".into()));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn node(&self, _host: &Path, md: &std::fs::Metadata, dst: &str) -> Option<HostDevice> {
        let ft = md.file_type();
        let kind = if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            return None;
        };
        let rdev = md.rdev();
        Some(HostDevice {
            path: dst.into(),
            kind,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            permissions: self.cgroup_permissions.clone(),
        })
    }
}

/// An OS error as Go's `syscall.Errno` prints it ("no such file or directory").
fn os_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Every device of `mappings`, read from the host now.
pub fn resolve_all(mappings: &[DeviceMapping]) -> Result<Vec<HostDevice>, DeviceError> {
    let mut out = Vec::new();
    for m in mappings {
        out.extend(m.resolve()?);
    }
    Ok(out)
}

/// Parses one `--device-cgroup-rule` (`c 1:3 rwm`, `a *:* rwm`, `b 8:* r`) into an
/// OCI `linux.resources.devices` allow entry.
pub fn parse_cgroup_rule(rule: &str) -> Result<Value, DeviceError> {
    let bad = || DeviceError::Rule(rule.into());
    let f: Vec<&str> = rule.split_whitespace().collect();
    let [kind, nums, access] = f.as_slice() else {
        return Err(bad());
    };
    if !matches!(*kind, "a" | "b" | "c") || !valid_mode(access) {
        return Err(bad());
    }
    let (maj, min) = nums.split_once(':').ok_or_else(bad)?;
    let num = |s: &str| -> Result<Option<i64>, DeviceError> {
        if s == "*" {
            Ok(None)
        } else {
            s.parse::<i64>().map(Some).map_err(|_| bad())
        }
    };
    let mut v = json!({"allow": true, "type": kind, "access": access});
    if let Some(m) = num(maj)? {
        v["major"] = json!(m);
    }
    if let Some(m) = num(min)? {
        v["minor"] = json!(m);
    }
    Ok(v)
}

/// The OCI `linux.devices` entries and the cgroup allow rules for `devs`.
pub fn oci_entries(devs: &[HostDevice]) -> (Vec<Value>, Vec<Value>) {
    let nodes = devs
        .iter()
        .map(|d| {
            json!({
                "path": d.path,
                "type": d.kind.to_string(),
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.mode,
                "uid": d.uid,
                "gid": d.gid,
            })
        })
        .collect();
    let rules = devs
        .iter()
        .map(|d| json!({"allow": true, "type": d.kind.to_string(), "major": d.major, "minor": d.minor, "access": d.permissions}))
        .collect();
    (nodes, rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockers_device_syntax() {
        let m = |h: &str, c: &str, p: &str| DeviceMapping {
            path_on_host: h.into(),
            path_in_container: c.into(),
            cgroup_permissions: p.into(),
        };
        assert_eq!(
            DeviceMapping::parse("/dev/null").expect("ok"),
            m("/dev/null", "/dev/null", "rwm")
        );
        assert_eq!(
            DeviceMapping::parse("/dev/null:r").expect("ok"),
            m("/dev/null", "/dev/null", "r")
        );
        assert_eq!(
            DeviceMapping::parse("/dev/null:/dev/x").expect("ok"),
            m("/dev/null", "/dev/x", "rwm")
        );
        assert_eq!(
            DeviceMapping::parse("/dev/null:/dev/x:rw").expect("ok"),
            m("/dev/null", "/dev/x", "rw")
        );
        let back = DeviceMapping::parse("/dev/null:/dev/x:rw").expect("ok");
        assert_eq!(
            DeviceMapping::parse(&back.to_spec_string()).expect("ok"),
            back
        );
        assert!(DeviceMapping::parse("/dev/null:/dev/x:rwx").is_err());
        assert!(DeviceMapping::parse("/dev/null:/dev/x:rr").is_err());
        assert!(DeviceMapping::parse("dev/null").is_err());
        assert!(DeviceMapping::parse("/a:/b:r:x").is_err());
    }

    #[test]
    fn reads_the_host_node_and_names_a_missing_one() {
        let d = DeviceMapping::parse("/dev/null:/dev/mydev:rw")
            .expect("ok")
            .resolve()
            .expect("ok");
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].kind, d[0].major, d[0].minor), ('c', 1, 3));
        assert_eq!(d[0].path, "/dev/mydev");
        assert_eq!(d[0].permissions, "rw");
        let e = DeviceMapping::parse("/dev/skiff-nonexistent")
            .expect("ok")
            .resolve()
            .expect_err("must fail");
        assert!(e.to_string().contains("\"/dev/skiff-nonexistent\""), "{e}");
        assert!(e.to_string().contains("no such file"), "{e}");
        let e = DeviceMapping::parse("/etc/hostname")
            .expect("ok")
            .resolve()
            .expect_err("must fail");
        assert!(e.to_string().contains("not a device node"), "{e}");
    }

    #[test]
    fn a_directory_gives_every_node_below_it() {
        // /dev/pts holds ptmx (c 5:2) on every Linux machine.
        let d = DeviceMapping::parse("/dev/pts:/dev/mypts")
            .expect("ok")
            .resolve()
            .expect("ok");
        assert!(d
            .iter()
            .any(|x| x.path == "/dev/mypts/ptmx" && x.major == 5 && x.minor == 2));
        let empty = tempfile::tempdir().expect("ok");
        let m = DeviceMapping::parse(&empty.path().display().to_string()).expect("ok");
        assert!(m.resolve().is_err());
    }

    #[test]
    fn cgroup_rules() {
        assert_eq!(
            parse_cgroup_rule("c 1:3 rwm").expect("ok"),
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        );
        assert_eq!(
            parse_cgroup_rule("a *:* r").expect("ok"),
            json!({"allow": true, "type": "a", "access": "r"})
        );
        assert_eq!(
            parse_cgroup_rule("b 8:* rw").expect("ok"),
            json!({"allow": true, "type": "b", "major": 8, "access": "rw"})
        );
        for bad in ["c 1:3", "x 1:3 r", "c 1-3 r", "c a:3 r", "c 1:3 rwx"] {
            assert!(parse_cgroup_rule(bad).is_err(), "{bad}");
        }
    }
}
