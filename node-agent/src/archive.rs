//! A container's filesystem from outside: `cp` in and out (stat, tar of a path, unpack
//! of a tar at a path) and the list of changes against its image (`diff`).
//!
//! Paths are always resolved inside the container's root (`openat2(RESOLVE_IN_ROOT)`),
//! so a symlink in the container can never lead a copy to the host; directories are
//! walked by directory fds with `O_NOFOLLOW`, so swapping one for a symlink mid-copy
//! does not either. A running
//! container is reached through `/proc/<pid>/root` (its own view, volumes included);
//! a stopped one through an overlay of its upper directory over its image layers
//! mounted for the operation (volumes are not part of that view).

use crate::containers::{Containers, Entry};
use crate::error::{AgentError, Result};
use skiff_runtime::container::Status;
use skiff_runtime::snapshot::unpack;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// A container's root directory, mounted for as long as this lives when it had to be.
pub struct RootView {
    pub path: PathBuf,
    mounted: bool,
}

impl RootView {
    /// The running container's root, or an overlay of a stopped one (`writable`: its
    /// upper directory takes the writes, as if it ran).
    pub fn open(containers: &Containers, e: &Entry, writable: bool) -> Result<RootView> {
        let st = e.state();
        if matches!(st.status, Status::Running | Status::Paused) && st.pid > 0 {
            return Ok(RootView {
                path: PathBuf::from(format!("/proc/{}/root", st.pid)),
                mounted: false,
            });
        }
        let r = e.record();
        let view = containers.images.temp_path("cp");
        std::fs::create_dir_all(&view)?;
        let lowers = r
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let (flags, opts) = if writable {
            (
                nix::mount::MsFlags::empty(),
                format!(
                    "lowerdir={lowers},upperdir={},workdir={}",
                    e.paths.upper().display(),
                    e.paths.work().display()
                ),
            )
        } else {
            (
                nix::mount::MsFlags::MS_RDONLY,
                format!("lowerdir={}:{lowers}", e.paths.upper().display()),
            )
        };
        if let Err(err) = nix::mount::mount(
            Some("overlay"),
            &view,
            Some("overlay"),
            flags,
            Some(opts.as_str()),
        ) {
            let _ = std::fs::remove_dir(&view);
            return Err(AgentError::Internal(format!(
                "mounting the container's filesystem: {err}"
            )));
        }
        Ok(RootView {
            path: view,
            mounted: true,
        })
    }
}

impl Drop for RootView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = skiff_runtime::snapshot::unmount(&self.path);
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Docker's `X-Docker-Container-Path-Stat` document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (the CLI decodes them so).
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// `st_mode` as Go's `os.FileMode`: permission bits plus type and special flags.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    match st_mode & libc::S_IFMT {
        libc::S_IFDIR => m |= 1 << 31,
        libc::S_IFLNK => m |= 1 << 27,
        libc::S_IFIFO => m |= 1 << 25,
        libc::S_IFSOCK => m |= 1 << 24,
        libc::S_IFBLK => m |= 1 << 26,
        libc::S_IFCHR => m |= (1 << 26) | (1 << 21),
        _ => {}
    }
    if st_mode & libc::S_ISUID != 0 {
        m |= 1 << 23;
    }
    if st_mode & libc::S_ISGID != 0 {
        m |= 1 << 22;
    }
    if st_mode & libc::S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

fn not_found(path: &str, e: &Entry) -> AgentError {
    AgentError::NotFound(format!(
        "Could not find the file {path} in container {}",
        e.name()
    ))
}

fn base_name(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// `stat` of a path in the container (the last component not followed).
pub fn stat(view: &RootView, e: &Entry, path: &str) -> Result<PathStat> {
    let info = unpack::stat_in_root(&view.path, path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => not_found(path, e),
        _ => AgentError::Internal(format!("stat {path}: {err}")),
    })?;
    let mtime = chrono::DateTime::from_timestamp(info.mtime, info.mtime_nsec as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(PathStat {
        name: base_name(path),
        size: info.size as i64,
        mode: go_file_mode(info.mode),
        mtime,
        link_target: info.link_target.unwrap_or_default(),
    })
}

/// A writer that hands 64 KiB chunks to an async receiver (from the blocking pool).
struct ChanWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
}

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tar of `path` (named by its last component, a directory with everything below
/// it), streamed from the blocking pool. The view stays mounted until the tar is done.
pub fn tar_path(
    view: RootView,
    e: &Entry,
    path: &str,
) -> Result<mpsc::Receiver<std::io::Result<Vec<u8>>>> {
    let fd =
        unpack::open_path_in_root(&view.path, path, false).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => not_found(path, e),
            _ => AgentError::Internal(format!("open {path}: {err}")),
        })?;
    // A symlink is archived as itself (its target read through the fd, not the magic link).
    let link = unpack::stat_in_root(&view.path, path)
        .ok()
        .and_then(|i| i.link_target.clone().map(|t| (t, i)));
    let name = match base_name(path).as_str() {
        "/" => ".".to_string(),
        n => n.to_string(),
    };
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let w = std::io::BufWriter::with_capacity(64 << 10, ChanWriter { tx: tx.clone() });
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        let res = match &link {
            Some((target, info)) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(info.mode & 0o7777);
                h.set_mtime(info.mtime.max(0) as u64);
                h.set_size(0);
                tar.append_link(&mut h, &name, target)
            }
            None => append(&mut tar, &proc_path, &name),
        }
        .and_then(|_| tar.finish());
        drop(tar);
        drop(fd);
        drop(view);
        if let Err(err) = res {
            let _ = tx.blocking_send(Err(err));
        }
    });
    Ok(rx)
}

/// Appends the object `fd_path` (a `/proc/self/fd/N` of an `O_PATH` fd) as `name`.
fn append<W: Write>(tar: &mut tar::Builder<W>, fd_path: &Path, name: &str) -> std::io::Result<()> {
    // The magic link is followed to the object itself, never beyond it.
    let meta = std::fs::metadata(fd_path)?;
    if meta.is_dir() {
        // Walked by directory fds, one component at a time and never following a
        // symlink: a container that swaps a directory for a symlink to `/` while we
        // walk gets its symlink archived, not the host's files.
        let dir = rustix::fs::open(
            fd_path,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        return append_tree(tar, &dir, name, 0);
    }
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if meta.file_type().is_file() {
        let f = std::fs::File::open(fd_path)?;
        return tar.append_data(&mut h, name, f);
    }
    h.set_size(0);
    tar.append_data(&mut h, name, std::io::empty())
}

/// Deepest directory nesting a copy follows (the kernel's own path limits are far
/// below what this allows; it only bounds the walk's fds and recursion).
const MAX_DEPTH: usize = 256;

/// A tar header from a `stat` taken without following the entry.
fn header_of(st: &rustix::fs::Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(size);
    h
}

/// Appends directory `dir` as `name` and everything below it, each entry opened
/// relative to its parent's fd with `O_NOFOLLOW`.
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &std::os::fd::OwnedFd,
    name: &str,
    depth: usize,
) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    if depth > MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "{name}: directories nested too deeply"
        )));
    }
    let st = rustix::fs::fstat(dir)?;
    let mut h = header_of(&st, tar::EntryType::Directory, 0);
    tar.append_data(&mut h, name, std::io::empty())?;
    let mut names: Vec<std::ffi::CString> = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    names.sort();
    for n in names {
        let child = format!("{name}/{}", n.to_string_lossy());
        let st = match rustix::fs::statat(dir, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue, // gone while we walked
            Err(e) => return Err(e.into()),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = rustix::fs::openat(
                    dir,
                    n.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                );
                match sub {
                    Ok(sub) => append_tree(tar, &sub, &child, depth + 1)?,
                    // Swapped for something else since the stat: skipped, never followed.
                    Err(
                        rustix::io::Errno::NOENT
                        | rustix::io::Errno::NOTDIR
                        | rustix::io::Errno::LOOP,
                    ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            FileType::RegularFile => {
                let f = match rustix::fs::openat(
                    dir,
                    n.as_c_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                ) {
                    Ok(f) => std::fs::File::from(f),
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => continue,
                    Err(e) => return Err(e.into()),
                };
                // The size of what was opened, not of what the stat saw.
                let st = rustix::fs::fstat(&f)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    continue;
                }
                let mut h = header_of(&st, tar::EntryType::Regular, st.st_size.max(0) as u64);
                tar.append_data(
                    &mut h,
                    &child,
                    std::io::Read::take(f, st.st_size.max(0) as u64),
                )?;
            }
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(dir, n.as_c_str(), Vec::new()) {
                    Ok(t) => t,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => continue,
                    Err(e) => return Err(e.into()),
                };
                let mut h = header_of(&st, tar::EntryType::Symlink, 0);
                if target.as_bytes().len() <= 100 {
                    // The target as the container wrote it (no path normalisation).
                    h.set_link_name_literal(target.as_bytes())?;
                    tar.append_data(&mut h, &child, std::io::empty())?;
                } else {
                    // Too long for the header: a GNU long-link entry carries it.
                    tar.append_link(&mut h, &child, target.to_string_lossy().as_ref())?;
                }
            }
            FileType::Fifo => {
                let mut h = header_of(&st, tar::EntryType::Fifo, 0);
                tar.append_data(&mut h, &child, std::io::empty())?;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = header_of(&st, kind, 0);
                let _ = h.set_device_major(rustix::fs::major(st.st_rdev));
                let _ = h.set_device_minor(rustix::fs::minor(st.st_rdev));
                tar.append_data(&mut h, &child, std::io::empty())?;
            }
            // Sockets and anything else have no tar form; Docker skips them too.
            _ => {}
        }
    }
    Ok(())
}

/// Unpacks a tar into the directory `path` of the container; nothing outside that
/// directory can be written, whatever the archive holds (`..`, absolute names and
/// symlinks are all resolved inside it).
pub fn untar_at(view: &RootView, e: &Entry, path: &str, body: impl std::io::Read) -> Result<()> {
    let fd = unpack::open_path_in_root(&view.path, path, true).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => not_found(path, e),
        _ => AgentError::Internal(format!("open {path}: {err}")),
    })?;
    let dir = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !std::fs::metadata(&dir).map(|m| m.is_dir()).unwrap_or(false) {
        return Err(AgentError::Invalid(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    unpack::unpack_layer(body, &dir).map_err(|err| match err {
        unpack::UnpackError::Archive { .. } | unpack::UnpackError::Io { .. } => {
            AgentError::Invalid(format!("extracting the archive: {err}"))
        }
        other => AgentError::Invalid(format!("refused: {other}")),
    })?;
    Ok(())
}

/// One change of `diff`: 0 modified, 1 added, 2 deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub kind: u8,
}

/// The container's changes against its image, from its overlay upper directory:
/// whiteouts (0/0 character devices) are deletions, paths the image has are
/// modifications, others additions.
pub fn changes(e: &Entry) -> Vec<Change> {
    let r = e.record();
    let upper = e.paths.upper();
    let mut out = Vec::new();
    let mut stack = vec![(upper.clone(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            // The runtime's own mount points are no change of the container's.
            if skiff_runtime::build::layer::RUNTIME_PATHS.contains(&&path[1..]) {
                continue;
            }
            let Ok(meta) = ent.metadata() else { continue };
            let kind = if meta.file_type().is_char_device() && meta.rdev() == 0 {
                2
            } else if skiff_runtime::build::layer::lookup(&r.lowers, &path).is_some() {
                0
            } else {
                1
            };
            out.push(Change {
                path: path.clone(),
                kind,
            });
            if meta.is_dir() {
                stack.push((ent.path(), path));
            }
        }
    }
    out.sort();
    // A directory the image has shows as modified only with a change below it.
    let keep: Vec<bool> = out
        .iter()
        .map(|c| {
            let is_dir = std::fs::symlink_metadata(upper.join(&c.path[1..]))
                .map(|m| m.is_dir())
                .unwrap_or(false);
            let prefix = format!("{}/", c.path);
            !(c.kind == 0 && is_dir) || out.iter().any(|o| o.path.starts_with(&prefix))
        })
        .collect();
    out.into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_copies_archive_symlinks_and_never_follow_them() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("data");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/f"), b"hello").expect("write");
        std::os::unix::fs::symlink("/", root.join("a/escape")).expect("symlink");
        std::os::unix::fs::symlink("/etc", root.join("a/b/etc")).expect("symlink");
        let mut buf = Vec::new();
        {
            let mut tar = tar::Builder::new(&mut buf);
            append(&mut tar, &root, "data").expect("append");
            tar.finish().expect("finish");
        }
        let mut seen = Vec::new();
        let mut ar = tar::Archive::new(&buf[..]);
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let kind = e.header().entry_type();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut e, &mut body).expect("read");
            let link = e
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.display().to_string());
            seen.push((path, kind, body, link));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "data",
                "data/a",
                "data/a/b",
                "data/a/b/etc",
                "data/a/b/f",
                "data/a/escape"
            ]
        );
        let f = &seen[4];
        assert_eq!((f.1, f.2.as_str()), (tar::EntryType::Regular, "hello"));
        assert_eq!(seen[5].1, tar::EntryType::Symlink);
        assert_eq!(seen[5].3.as_deref(), Some("/"));
        assert!(
            !names.iter().any(|n| n.starts_with("data/a/escape/")),
            "followed a symlink"
        );
    }

    #[test]
    fn file_modes_are_go_file_modes() {
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(
            go_file_mode(libc::S_IFREG | libc::S_ISUID | 0o755),
            (1 << 23) | 0o755
        );
    }

    #[test]
    fn names_are_last_components() {
        assert_eq!(base_name("/etc/hostname"), "hostname");
        assert_eq!(base_name("/etc/"), "etc");
        assert_eq!(base_name("/"), "/");
        assert_eq!(base_name("rel"), "rel");
    }
}
