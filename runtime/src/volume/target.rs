//! Host-side preparation of a container's mounts, done by the shim after the rootfs is
//! mounted and before libcontainer runs (nothing in the container runs yet, so the
//! rootfs holds only image content).
//!
//! The image author controls the rootfs: `/data -> /etc` or `/data -> ../../../../host`
//! must not make a mount land outside it. [`resolve_target`] creates the target with
//! every component resolved by `openat2(RESOLVE_IN_ROOT)`, then reads back the real
//! path of the opened target: that symlink-free path is what libcontainer mounts on.

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("mount target {target}: {source}")]
    Io { target: String, source: io::Error },
    #[error(
        "mount target {target} resolves to {resolved}, outside the container's root filesystem"
    )]
    Escapes { target: String, resolved: String },
    #[error("copying image content at {target} into the volume: {source}")]
    CopyUp { target: String, source: io::Error },
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_in(root: &OwnedFd, path: &str, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    Ok(openat2(
        root,
        path,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates mount target `dest` inside `root` (a directory, or an empty file when
/// `dir` is false) and returns its symlink-free path relative to the container root,
/// e.g. `/etc/real` for a `/data -> /etc/real` symlink in the image.
///
/// Components are walked one at a time from a symlink-free prefix: a symlink is read
/// and its target spliced into the remaining components (absolute targets restart at
/// the container root, `..` stops at it), and missing components are created, so a
/// dangling `/data -> /host/path` creates `<rootfs>/host/path`, never `/host/path`.
pub fn resolve_target(root: &Path, dest: &str, dir: bool) -> Result<String, TargetError> {
    let err = |source| TargetError::Io {
        target: dest.into(),
        source,
    };
    let real_root = fs::canonicalize(root).map_err(err)?;
    let r = open_root(&real_root).map_err(err)?;
    let mut todo: std::collections::VecDeque<String> = dest
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let last = todo.is_empty();
        let parent = format!("/{}", cur.join("/"));
        let pfd = open_in(&r, &parent, OFlags::PATH | OFlags::DIRECTORY, 0).map_err(err)?;
        match rustix::fs::statat(&pfd, c.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
                if kind == rustix::fs::FileType::Symlink {
                    links += 1;
                    if links > 40 {
                        return Err(err(io::Error::from_raw_os_error(libc::ELOOP)));
                    }
                    let target = rustix::fs::readlinkat(&pfd, c.as_str(), Vec::new())
                        .map_err(|e| err(e.into()))?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    for t in target.split('/').filter(|t| !t.is_empty()).rev() {
                        todo.push_front(t.to_string());
                    }
                    continue;
                }
                if !last && kind != rustix::fs::FileType::Directory {
                    return Err(err(io::Error::from_raw_os_error(libc::ENOTDIR)));
                }
            }
            Err(rustix::io::Errno::NOENT) => {
                if last && !dir {
                    let fd = rustix::fs::openat(
                        &pfd,
                        c.as_str(),
                        OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::WRONLY
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o644),
                    );
                    match fd {
                        Ok(_) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(err(e.into())),
                    }
                } else {
                    match rustix::fs::mkdirat(&pfd, c.as_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(err(e.into())),
                    }
                }
            }
            Err(e) => return Err(err(e.into())),
        }
        cur.push(c);
    }
    // Belt and braces: open what we built in-root and check where it really is.
    let built = format!("/{}", cur.join("/"));
    let flags = if dir {
        OFlags::PATH | OFlags::DIRECTORY
    } else {
        OFlags::PATH | OFlags::NOFOLLOW
    };
    let fd = open_in(&r, &built, flags, 0).map_err(err)?;
    let real = fd_path(&fd).map_err(err)?;
    match real.strip_prefix(&real_root) {
        Ok(rel) if !rel.as_os_str().is_empty() => Ok(format!("/{}", rel.display())),
        _ => Err(TargetError::Escapes {
            target: dest.into(),
            resolved: real.display().to_string(),
        }),
    }
}

fn is_empty_dir(p: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(p)?.next().is_none())
}

/// Docker's copy-up: when volume directory `data` is empty and the image has a
/// directory at `dest`, copy that directory's content (and its owner and mode) into
/// the volume. Symlinks are copied as symlinks, never followed; the source is reached
/// through an in-root file descriptor so image symlinks cannot point it at the host.
/// Returns whether anything was copied.
pub fn copy_up(root: &Path, dest: &str, data: &Path) -> Result<bool, TargetError> {
    let err = |source| TargetError::CopyUp {
        target: dest.into(),
        source,
    };
    if !is_empty_dir(data).map_err(err)? {
        return Ok(false);
    }
    let r = open_root(root).map_err(err)?;
    let src = match open_in(&r, dest, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(false)
        }
        Err(e) => return Err(err(e)),
    };
    // The fd's /proc path names the directory itself; below it we never follow links.
    let src_path = PathBuf::from(format!("/proc/self/fd/{}", src.as_raw_fd()));
    let md = fs::metadata(&src_path).map_err(err)?;
    copy_tree(&src_path, data).map_err(err)?;
    std::os::unix::fs::chown(data, Some(md.uid()), Some(md.gid())).map_err(err)?;
    fs::set_permissions(data, fs::Permissions::from_mode(md.mode() & 0o7777)).map_err(err)?;
    Ok(true)
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    for ent in fs::read_dir(src)? {
        let ent = ent?;
        let from = ent.path();
        let to = dst.join(ent.file_name());
        let md = fs::symlink_metadata(&from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            // O_NOFOLLOW: the entry was a regular file a moment ago and nothing runs
            // in the rootfs yet, but never trust that.
            let mut input = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&from)?;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)?;
            io::copy(&mut input, &mut out)?;
        } else {
            // Device nodes, fifos and sockets are not copied (as a precaution).
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()))?;
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// Prepares every user mount of a run: copy-up into empty volumes, then targets
/// created and resolved inside `rootfs`. Returns the mounts with symlink-free
/// destinations, ready for the OCI spec.
pub fn prepare_mounts(
    rootfs: &Path,
    points: &[super::MountPoint],
) -> Result<Vec<super::MountPoint>, TargetError> {
    use super::MountKind;
    let mut out = Vec::with_capacity(points.len());
    for m in points {
        let mut m = m.clone();
        let dir = match m.kind {
            MountKind::Tmpfs => true,
            MountKind::Volume => {
                if m.copy_up {
                    copy_up(rootfs, &m.destination, &m.source)?;
                }
                true
            }
            MountKind::Bind => match fs::metadata(&m.source) {
                Ok(md) => md.is_dir(),
                Err(source) => {
                    return Err(TargetError::Io {
                        target: m.destination.clone(),
                        source: io::Error::new(
                            source.kind(),
                            format!("bind source path {}: {source}", m.source.display()),
                        ),
                    })
                }
            },
        };
        m.destination = resolve_target(rootfs, &m.destination, dir)?;
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinked_targets_stay_inside() {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("outside");
        symlink(outside.path(), root.path().join("abs")).expect("symlink");
        symlink("../../../../../../..", root.path().join("up")).expect("symlink");
        fs::create_dir(root.path().join("etc")).expect("etc");
        symlink("/etc", root.path().join("data")).expect("symlink");

        let t = resolve_target(root.path(), "/abs/sub", true).expect("abs");
        assert_eq!(t, format!("{}/sub", outside.path().display()));
        assert!(
            !outside.path().join("sub").exists(),
            "created outside the rootfs"
        );
        assert!(root.path().join(t.trim_start_matches('/')).is_dir());

        assert_eq!(
            resolve_target(root.path(), "/up/x", true).expect("up"),
            "/x"
        );
        assert_eq!(
            resolve_target(root.path(), "/data", true).expect("data"),
            "/etc"
        );
        assert_eq!(
            resolve_target(root.path(), "/plain/dir", true).expect("plain"),
            "/plain/dir"
        );
        // Files: created in-root even through a dangling absolute symlink.
        symlink(outside.path().join("f"), root.path().join("etc/f")).expect("symlink");
        let f = resolve_target(root.path(), "/etc/f", false).expect("file");
        assert!(!outside.path().join("f").exists());
        assert!(root.path().join(f.trim_start_matches('/')).is_file());
        // The root itself is never a valid target.
        symlink("/", root.path().join("toroot")).expect("symlink");
        assert!(matches!(
            resolve_target(root.path(), "/toroot", true),
            Err(TargetError::Escapes { .. })
        ));
    }

    #[test]
    fn copy_up_fills_empty_volumes_only() {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("outside");
        fs::write(outside.path().join("secret"), "host").expect("secret");
        fs::create_dir_all(root.path().join("app/sub")).expect("mkdir");
        fs::write(root.path().join("app/a.txt"), "A").expect("a");
        fs::write(root.path().join("app/sub/b.txt"), "B").expect("b");
        symlink(outside.path().join("secret"), root.path().join("app/link")).expect("symlink");
        fs::set_permissions(root.path().join("app"), fs::Permissions::from_mode(0o750))
            .expect("chmod");
        let vol = tempfile::tempdir().expect("vol");
        assert!(copy_up(root.path(), "/app", vol.path()).expect("copy"));
        assert_eq!(
            fs::read_to_string(vol.path().join("a.txt")).expect("a"),
            "A"
        );
        assert_eq!(
            fs::read_to_string(vol.path().join("sub/b.txt")).expect("b"),
            "B"
        );
        assert_eq!(
            fs::read_link(vol.path().join("link")).expect("link"),
            outside.path().join("secret")
        );
        assert_eq!(fs::metadata(vol.path()).expect("md").mode() & 0o777, 0o750);
        // Not empty any more: a second mount copies nothing.
        fs::write(root.path().join("app/c.txt"), "C").expect("c");
        assert!(!copy_up(root.path(), "/app", vol.path()).expect("again"));
        assert!(!vol.path().join("c.txt").exists());
        // A symlinked source directory resolves inside the rootfs.
        symlink(outside.path(), root.path().join("evil")).expect("symlink");
        let vol2 = tempfile::tempdir().expect("vol2");
        assert!(!copy_up(root.path(), "/evil", vol2.path()).expect("evil"));
        assert!(!vol2.path().join("secret").exists());
        assert!(!copy_up(root.path(), "/missing", vol2.path()).expect("missing"));
    }
}
