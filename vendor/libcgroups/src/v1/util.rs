use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);

    reader
        .lines()
        .map(|lr| {
            lr.map_err(V1MountPointError::Io)
                .and_then(|line| MountInfo::from_line(&line).map_err(V1MountPointError::MountInfo))
        })
        .try_fold(Vec::new(), |mut mount_points, r| {
            r.map(|m| {
                if m.fs_type == "cgroup" {
                    mount_points.push(m.mount_point);
                }
                mount_points
            })
        })
}

/// Skiff patch: the cgroup v1 hierarchies mounted directly in `root` (normally
/// /sys/fs/cgroup), sorted, found by listing `root` and checking each subdirectory that
/// is a mount point for the cgroup (v1) filesystem type.
///
/// The same answer as [`list_subsystem_mount_points`] filtered to `root`'s children,
/// without reading /proc/self/mountinfo to its end: that table holds every container's
/// rootfs and namespace mounts, so on a node with hundreds of containers its kernel
/// formatting was the largest cost of starting one more (libcontainer's emulated v1
/// hierarchy called the full read in every container's init). Hierarchies mounted
/// deeper than `root`'s children are not listed.
pub fn list_subsystem_mount_points_in(
    root: &std::path::Path,
) -> Result<Vec<PathBuf>, V1MountPointError> {
    use std::os::unix::fs::MetadataExt;
    let root_dev = std::fs::metadata(root).map_err(V1MountPointError::Io)?.dev();
    let mut points = Vec::new();
    for entry in std::fs::read_dir(root).map_err(V1MountPointError::Io)? {
        let path = entry.map_err(V1MountPointError::Io)?.path();
        // Not a symlink (cpu -> cpu,cpuacct), and a mount point: another device.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && m.dev() != root_dev => {}
            _ => continue,
        }
        if nix::sys::statfs::statfs(&path)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC)
        {
            points.push(path);
        }
    }
    points.sort();
    Ok(points)
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());

    for controller in CONTROLLERS {
        if let Ok(mount_point) = get_subsystem_mount_point(controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

// Skiff patch: the cgroup mounts are read from mountinfo once per process, and only
// as far as needed.
//
// Every lookup used to read and parse /proc/self/mountinfo, to its end for a controller
// not mounted in v1, and a v1 manager looks up every controller: a dozen reads per
// manager, several managers per container start. Each container adds its rootfs and
// network-namespace mounts, so on a node with 100 containers this was most of the CPU
// of starting one more. Now the first lookup reads mountinfo once, stopping as soon as
// every controller that /proc/cgroups says is mounted in v1 has its mount (cgroup
// hierarchies are mounted at boot, at the top of the table); later lookups, and the
// container's intermediate process (a clone), use that list. A process that outlives a
// remount of the hierarchies would need a fresh list (none here does).
static CGROUP_MOUNTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// Whether `mount_point` is where `subsystem` is mounted. Some systems mount net_prio and
/// net_cls in the same directory, other systems in their own directories; this handles
/// both cases (likewise cpu and cpuacct).
fn mounts_subsystem(subsystem: &str, mount_point: &std::path::Path) -> bool {
    match subsystem {
        "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
            .iter()
            .any(|s| mount_point.ends_with(s)),
        "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
            .iter()
            .any(|s| mount_point.ends_with(s)),
        "cpu" => ["cpu,cpuacct", "cpu"]
            .iter()
            .any(|s| mount_point.ends_with(s)),
        "cpuacct" => ["cpu,cpuacct", "cpuacct"]
            .iter()
            .any(|s| mount_point.ends_with(s)),
        _ => mount_point.ends_with(subsystem),
    }
}

/// The supported controllers the kernel has mounted in a v1 hierarchy (a non-zero
/// hierarchy ID in /proc/cgroups); `None` if that cannot be read.
fn mounted_v1_controllers() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (name, hierarchy) = (f.next()?, f.next()?);
                let enabled = f.nth(1)?;
                (hierarchy != "0" && enabled == "1").then(|| name.to_string())
            })
            .filter(|name| CONTROLLERS.iter().any(|c| c.to_string() == *name))
            .collect(),
    )
}

fn cgroup_mount_points() -> Result<&'static [PathBuf], V1MountPointError> {
    if let Some(mounts) = CGROUP_MOUNTS.get() {
        return Ok(mounts);
    }
    let wanted = mounted_v1_controllers();
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);
    let mut mounts: Vec<PathBuf> = Vec::new();
    for line in reader.lines() {
        let m = MountInfo::from_line(&line?).map_err(V1MountPointError::MountInfo)?;
        if m.fs_type != "cgroup" {
            continue;
        }
        mounts.push(m.mount_point);
        let complete = wanted.as_ref().is_some_and(|w| {
            w.iter()
                .all(|c| mounts.iter().any(|mp| mounts_subsystem(c, mp)))
        });
        if complete {
            break;
        }
    }
    Ok(CGROUP_MOUNTS.get_or_init(|| mounts))
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    cgroup_mount_points()?
        .iter()
        .find(|mount_point| mounts_subsystem(&subsystem_name, mount_point))
        .cloned()
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}
