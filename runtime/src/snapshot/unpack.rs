//! Breakout-proof unpacking of OCI image layers.
//!
//! Threat model: a layer tarball is attacker-controlled. Its entry names may be absolute or
//! contain `..`, and its symlinks (absolute, `../`-laden, chained, dangling) and hardlinks
//! may be aimed at the host, then used as the parent of later entries. Whatever the archive
//! holds, nothing outside the destination directory may be created, modified or removed.
//!
//! Approach: the destination is opened once as a directory fd (the "root"). Entry names are
//! normalised lexically (a `..` that would climb above the root is an error). Every entry's
//! parent directory is then opened with `openat2(root, parent, RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so the kernel resolves all symlinks as if `root` were `/`, and the
//! final component is created with `*at` syscalls on that parent fd that never follow a
//! symlink in the final component (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`, `mknodat`, `unlinkat`). Metadata is applied through
//! the new fd or with `AT_SYMLINK_NOFOLLOW`. The `tar` crate only parses.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
    Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

/// Compression of a layer blob, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

/// Detects the compression of a blob from (at least) its first four bytes.
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `r` so that it yields the uncompressed tar stream, whatever the blob's compression.
pub fn decompressed<R: Read + 'static>(r: R) -> io::Result<Box<dyn Read>> {
    let mut buffered = BufReader::new(r);
    // A single read may return fewer bytes than the magic needs; keep reading until EOF.
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match buffered.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = detect_compression(&head[..n]);
    let stream = io::Cursor::new(head).take(n as u64).chain(buffered);
    Ok(match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
    })
}

/// What [`unpack_layer`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UnpackStats {
    /// Tar entries processed (including skipped ones).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Entries that were deliberately not unpacked (device nodes, unknown types).
    pub skipped: Vec<String>,
}

/// Why a layer could not be unpacked. Every entry-level variant names the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination directory could not be opened.
    #[error("cannot open layer destination {}: {source}", dest.display())]
    Destination { dest: PathBuf, source: io::Error },
    /// The tar stream itself is unreadable or corrupt.
    #[error("corrupt tar stream after entry {after:?}: {source}")]
    Archive { after: String, source: io::Error },
    /// The entry's path would climb above the layer root.
    #[error("entry {path:?}: path escapes the layer root")]
    Breakout { path: String },
    /// The entry is malformed (bad name, header field or link target).
    #[error("entry {path:?}: {reason}")]
    InvalidEntry { path: String, reason: String },
    /// A hardlink's target escapes the root, is missing or cannot be linked.
    #[error("entry {path:?}: hardlink target {target:?}: {source}")]
    HardlinkTarget {
        path: String,
        target: String,
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: io::Error,
    },
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// Attaches the entry path and operation to a syscall error.
trait Ctx<T> {
    fn ctx(self, path: &str, op: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, Errno> {
    fn ctx(self, path: &str, op: &'static str) -> Result<T> {
        self.map_err(|e| UnpackError::Io {
            path: path.to_owned(),
            op,
            source: e.into(),
        })
    }
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, path: &str, op: &'static str) -> Result<T> {
        self.map_err(|source| UnpackError::Io {
            path: path.to_owned(),
            op,
            source,
        })
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::InvalidEntry {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Unpacks one layer's uncompressed tar stream into `dest` (an existing, normally empty
/// directory that becomes an overlayfs lower layer). Nothing is ever written outside `dest`.
///
/// Whiteouts become overlayfs whiteouts (0/0 character devices, `trusted.overlay.opaque`),
/// device nodes are skipped and listed in [`UnpackStats::skipped`].
pub fn unpack_layer<R: Read>(tar: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Destination {
        dest: dest.to_path_buf(),
        source: e.into(),
    })?;
    let mut unpacker = Unpacker {
        root,
        chown: rustix::process::geteuid().is_root(),
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
    };
    let mut archive = tar::Archive::new(tar);
    let mut last = String::new();
    let entries = archive.entries().map_err(|source| UnpackError::Archive {
        after: last.clone(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Archive {
            after: last.clone(),
            source,
        })?;
        let raw = entry.path_bytes().into_owned();
        last = String::from_utf8_lossy(&raw).into_owned();
        unpacker.entry(&mut entry, &raw, &last)?;
    }
    unpacker.finish()?;
    Ok(unpacker.stats)
}

/// Splits a tar path into normal components: leading `/`, `.` and empty components are
/// dropped and `..` pops a component. `Err(())` if a `..` would climb above the root.
fn normalize(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, ()> {
    let mut comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop().ok_or(())?;
            }
            c => comps.push(c),
        }
    }
    Ok(comps)
}

fn join(comps: &[&[u8]]) -> OsString {
    if comps.is_empty() {
        return OsString::from(".");
    }
    OsStr::from_bytes(&comps.join(&b'/')).to_owned()
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn is_dir(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Opens `path` under the directory `root` as an `O_PATH` fd, resolving every symlink
/// (and `..`) as if `root` were `/`, so nothing outside `root` can be reached; with
/// `follow_final` false, a symlink as the last component is opened itself. For `cp`
/// into and out of a container's filesystem: use `/proc/self/fd/N` of the result.
pub fn open_path_in_root(root: &Path, path: &str, follow_final: bool) -> io::Result<OwnedFd> {
    let root = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow_final {
        flags |= OFlags::NOFOLLOW;
    }
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rfs::openat2(&root, rel, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// What `stat_in_root` reports of a path: its `st_mode`, size, modification time and,
/// for a symlink, its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub link_target: Option<String>,
}

/// `lstat` of `path` under `root`, its parents resolved inside `root` (see
/// [`open_path_in_root`]).
pub fn stat_in_root(root: &Path, path: &str) -> io::Result<PathInfo> {
    let fd = open_path_in_root(root, path, false)?;
    let st = rfs::fstat(&fd)?;
    let link_target = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        Some(
            rfs::readlinkat(&fd, "", Vec::new())?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(PathInfo {
        mode: st.st_mode,
        size: st.st_size as u64,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as i64,
        link_target,
    })
}

/// Opens `path` (relative to `root`) as a directory, resolving symlinks inside `root`.
fn open_in_root(root: BorrowedFd<'_>, path: &OsStr, nofollow: bool) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if nofollow {
        flags |= OFlags::NOFOLLOW;
    }
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rfs::openat2(root, path, flags, Mode::empty(), resolve) {
            // The kernel asks for a retry when a concurrent rename raced with `..` resolution.
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Opens the final component `name` of `parent` as a directory without following symlinks.
fn open_child_dir(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(parent, name, flags, Mode::empty())
}

/// `lstat` of `name` in `parent`; `None` if it does not exist.
fn lstat_at(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<Option<rfs::Stat>> {
    match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `parent` if it exists; directories are removed recursively.
fn remove_existing(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    match lstat_at(parent, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => remove_dir_all_at(parent, name),
        Some(_) => rfs::unlinkat(parent, name, AtFlags::empty()),
    }
}

/// Recursively removes directory `name` in `parent` using only fd-relative calls that never
/// follow symlinks (symlinks inside are unlinked, not traversed). Iterative, so deep trees
/// cannot overflow the stack.
fn remove_dir_all_at(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    // Each element is an open directory and its name in the element below (or in `parent`).
    let mut stack: Vec<(OwnedFd, OsString)> =
        vec![(open_child_dir(parent, name)?, name.to_owned())];
    loop {
        let Some((dir, _)) = stack.last() else {
            return Ok(());
        };
        let mut subdir = None;
        for child in Dir::read_from(dir)? {
            let child = child?;
            let child_name = os(child.file_name().to_bytes());
            if child_name == "." || child_name == ".." {
                continue;
            }
            let child_is_dir = match child.file_type() {
                FileType::Directory => true,
                FileType::Unknown => {
                    lstat_at(dir.as_fd(), child_name)?.is_some_and(|st| is_dir(&st))
                }
                _ => false,
            };
            if child_is_dir {
                subdir = Some(child_name.to_owned());
                break;
            }
            rfs::unlinkat(dir, child_name, AtFlags::empty())?;
        }
        match subdir {
            Some(sub) => {
                let fd = open_child_dir(dir.as_fd(), &sub)?;
                stack.push((fd, sub));
            }
            None => {
                if let Some((fd, dir_name)) = stack.pop() {
                    drop(fd);
                    let holder = stack.last().map_or(parent, |(fd, _)| fd.as_fd());
                    rfs::unlinkat(holder, &dir_name, AtFlags::REMOVEDIR)?;
                }
            }
        }
    }
}

/// Metadata of an entry, from its header and PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn parse_id(value: &[u8], path: &str, what: &str) -> Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| invalid(path, format!("malformed PAX {what}")))
}

/// Parses a PAX time such as `1700000000.123456789` or `-1.5`.
fn parse_pax_time(value: &[u8], path: &str) -> Result<Timespec> {
    let bad = || invalid(path, "malformed PAX mtime");
    let s = std::str::from_utf8(value).map_err(|_| bad())?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    if neg {
        secs = -secs;
        if nanos > 0 {
            secs -= 1;
            nanos = 1_000_000_000 - nanos;
        }
    }
    Ok(Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    })
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, path: &str) -> Result<Self> {
        let header = entry.header();
        let field = |r: io::Result<u64>, what: &str| {
            r.map_err(|e| invalid(path, format!("bad {what}: {e}")))
        };
        let mut uid = field(header.uid(), "uid")?;
        let mut gid = field(header.gid(), "gid")?;
        let mode = header
            .mode()
            .map_err(|e| invalid(path, format!("bad mode: {e}")))?
            & 0o7777;
        let mtime = field(header.mtime(), "mtime")?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| invalid(path, format!("bad PAX header: {e}")))?;
        for ext in pax.into_iter().flatten() {
            let ext = ext.map_err(|e| invalid(path, format!("bad PAX record: {e}")))?;
            let Ok(key) = ext.key() else { continue };
            match key {
                "uid" => uid = parse_id(ext.value_bytes(), path, "uid")?,
                "gid" => gid = parse_id(ext.value_bytes(), path, "gid")?,
                "mtime" => mtime = parse_pax_time(ext.value_bytes(), path)?,
                _ => {
                    if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                        if name.starts_with("user.") || name == "security.capability" {
                            xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                        } else {
                            tracing::debug!(
                                entry = path,
                                xattr = name,
                                "ignoring disallowed xattr"
                            );
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| invalid(path, format!("{what} {v} out of range")))
        };
        Ok(Meta {
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mode,
            mtime,
            xattrs,
        })
    }

    fn timestamps(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

struct Unpacker {
    root: OwnedFd,
    /// Whether ownership is applied (only when running as root).
    chown: bool,
    stats: UnpackStats,
    /// Directory mtimes, applied after all entries (creating children changes them).
    dir_times: Vec<(OsString, Timespec)>,
}

impl Unpacker {
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        path: &str,
    ) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.stats.entries += 1;
        if raw.contains(&0) {
            return Err(invalid(path, "NUL byte in path"));
        }
        let comps = normalize(raw).map_err(|()| UnpackError::Breakout {
            path: path.to_owned(),
        })?;

        if let Some((name, parent)) = comps.split_last() {
            if name.starts_with(WHITEOUT_PREFIX) {
                return self.whiteout(parent, name, path);
            }
        }

        // Old-style (type '\0') regular entries with a trailing slash are directories.
        let old_dir = kind == EntryType::Regular
            && entry.header().as_old().linkflag[0] == 0
            && raw.ends_with(b"/");
        match kind {
            EntryType::Directory => {}
            _ if old_dir => {}
            EntryType::Char | EntryType::Block => {
                self.skip(path, "device node");
                return Ok(());
            }
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Fifo => {}
            _ => {
                self.skip(path, "unsupported entry type");
                return Ok(());
            }
        }
        let is_dir_entry = kind == EntryType::Directory || old_dir;

        let meta = Meta::read(entry, path)?;
        let Some((name, parent)) = comps.split_last() else {
            if !is_dir_entry {
                return Err(invalid(
                    path,
                    "only a directory may describe the layer root",
                ));
            }
            let fd = open_in_root(self.root.as_fd(), OsStr::new("."), false)
                .ctx(path, "open layer root")?;
            return self.finish_dir(fd, OsString::from("."), &meta, path);
        };
        let name = os(name);
        let parent_fd = self.open_parent(parent, path)?;
        let parent_fd = parent_fd.as_fd();

        if is_dir_entry {
            match lstat_at(parent_fd, name).ctx(path, "stat")? {
                Some(st) if is_dir(&st) => {}
                existing => {
                    if existing.is_some() {
                        remove_existing(parent_fd, name).ctx(path, "remove existing entry")?;
                    }
                    rfs::mkdirat(parent_fd, name, Mode::from_raw_mode(0o700))
                        .ctx(path, "mkdirat")?;
                }
            }
            let fd = open_child_dir(parent_fd, name).ctx(path, "open directory")?;
            return self.finish_dir(fd, join(&comps), &meta, path);
        }

        match kind {
            EntryType::Link => self.hardlink(entry, parent_fd, name, path),
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid(path, "symlink without target"))?;
                if target.is_empty() || target.contains(&0) {
                    return Err(invalid(path, "invalid symlink target"));
                }
                remove_existing(parent_fd, name).ctx(path, "remove existing entry")?;
                rfs::symlinkat(os(&target), parent_fd, name).ctx(path, "symlinkat")?;
                if self.chown {
                    rfs::chownat(
                        parent_fd,
                        name,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .ctx(path, "chown symlink")?;
                }
                rfs::utimensat(
                    parent_fd,
                    name,
                    &meta.timestamps(),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .ctx(path, "set symlink times")?;
                Ok(())
            }
            EntryType::Fifo => {
                remove_existing(parent_fd, name).ctx(path, "remove existing entry")?;
                rfs::mknodat(
                    parent_fd,
                    name,
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .ctx(path, "mkfifo")?;
                // Non-blocking read-only open of a FIFO succeeds without a writer.
                let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd =
                    rfs::openat(parent_fd, name, flags, Mode::empty()).ctx(path, "open fifo")?;
                let st = rfs::fstat(&fd).ctx(path, "stat fifo")?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
                    return Err(invalid(path, "fifo was replaced while unpacking"));
                }
                self.owner_mode(fd.as_fd(), &meta, path)?;
                rfs::futimens(&fd, &meta.timestamps()).ctx(path, "set times")?;
                Ok(())
            }
            _ => {
                // Regular file: never write through an existing entry (it may be a symlink or
                // a hardlink to something we must not modify); replace it.
                remove_existing(parent_fd, name).ctx(path, "remove existing entry")?;
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rfs::openat(parent_fd, name, flags, Mode::from_raw_mode(0o600))
                    .ctx(path, "create file")?;
                let mut file = File::from(fd);
                self.stats.bytes += io::copy(entry, &mut file).ctx(path, "write file contents")?;
                // Order matters: writing and chown clear setuid bits and file capabilities.
                self.owner_mode(file.as_fd(), &meta, path)?;
                self.xattrs(file.as_fd(), &meta, path)?;
                rfs::futimens(&file, &meta.timestamps()).ctx(path, "set times")?;
                Ok(())
            }
        }
    }

    fn skip(&mut self, path: &str, why: &str) {
        tracing::warn!(entry = path, "skipping {why} in layer");
        self.stats.skipped.push(path.to_owned());
    }

    /// Opens (creating missing directories 0755) the parent directory `comps`, with all
    /// symlinks resolved inside the root.
    fn open_parent(&self, comps: &[&[u8]], path: &str) -> Result<OwnedFd> {
        let root = self.root.as_fd();
        match open_in_root(root, &join(comps), false) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e).ctx(path, "open parent directory"),
        }
        let mut cur = open_in_root(root, OsStr::new("."), false).ctx(path, "open layer root")?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match open_in_root(root, &prefix, false) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    let created = match rfs::mkdirat(&cur, os(comps[i]), Mode::from_raw_mode(0o755))
                    {
                        Ok(()) => true,
                        // E.g. a dangling symlink: the reopen below reports it.
                        Err(Errno::EXIST) => false,
                        Err(e) => return Err(e).ctx(path, "create parent directory"),
                    };
                    let fd =
                        open_in_root(root, &prefix, false).ctx(path, "open parent directory")?;
                    if created {
                        rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                            .ctx(path, "chmod parent directory")?;
                    }
                    cur = fd;
                }
                Err(e) => return Err(e).ctx(path, "open parent directory"),
            }
        }
        Ok(cur)
    }

    fn finish_dir(&mut self, fd: OwnedFd, rel: OsString, meta: &Meta, path: &str) -> Result<()> {
        self.owner_mode(fd.as_fd(), meta, path)?;
        self.xattrs(fd.as_fd(), meta, path)?;
        self.dir_times.push((rel, meta.mtime));
        Ok(())
    }

    /// chown then chmod (chown clears setuid/setgid).
    fn owner_mode(&self, fd: BorrowedFd<'_>, meta: &Meta, path: &str) -> Result<()> {
        if self.chown {
            rfs::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .ctx(path, "chown")?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).ctx(path, "chmod")
    }

    fn xattrs(&self, fd: BorrowedFd<'_>, meta: &Meta, path: &str) -> Result<()> {
        for (name, value) in &meta.xattrs {
            match rfs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::OPNOTSUPP) => {
                    tracing::warn!(
                        entry = path,
                        xattr = name.as_str(),
                        "filesystem does not support xattr"
                    );
                }
                Err(e) => return Err(e).ctx(path, "set xattr"),
            }
        }
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent_fd: BorrowedFd<'_>,
        name: &OsStr,
        path: &str,
    ) -> Result<()> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| invalid(path, "hardlink without target"))?;
        let target = String::from_utf8_lossy(&raw_target).into_owned();
        let target_err = |source: io::Error| UnpackError::HardlinkTarget {
            path: path.to_owned(),
            target: target.clone(),
            source,
        };
        let escape = || {
            target_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "escapes the layer root",
            ))
        };
        if raw_target.contains(&0) {
            return Err(target_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NUL byte in target",
            )));
        }
        let tcomps = normalize(&raw_target).map_err(|()| escape())?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(target_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "target is the layer root",
            )));
        };
        let tname = os(tname);
        let tparent_fd = open_in_root(self.root.as_fd(), &join(tparent), false)
            .map_err(|e| target_err(e.into()))?;
        let tst = match lstat_at(tparent_fd.as_fd(), tname) {
            Ok(Some(st)) => st,
            Ok(None) => return Err(target_err(Errno::NOENT.into())),
            Err(e) => return Err(target_err(e.into())),
        };
        if is_dir(&tst) {
            return Err(target_err(Errno::ISDIR.into()));
        }
        if let Some(st) = lstat_at(parent_fd, name).ctx(path, "stat")? {
            if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                return Ok(()); // Already that very inode (e.g. a link to itself).
            }
            remove_existing(parent_fd, name).ctx(path, "remove existing entry")?;
        }
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never what it points to.
        rfs::linkat(&tparent_fd, tname, parent_fd, name, AtFlags::empty())
            .map_err(|e| target_err(e.into()))
    }

    fn whiteout(&mut self, parent: &[&[u8]], name: &[u8], path: &str) -> Result<()> {
        if name == WHITEOUT_OPAQUE {
            let parent_fd = self.open_parent(parent, path)?;
            return rfs::fsetxattr(&parent_fd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .ctx(path, "mark directory opaque");
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            self.skip(path, "aufs metadata");
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(invalid(path, "invalid whiteout name"));
        }
        let hidden = os(hidden);
        let parent_fd = self.open_parent(parent, path)?;
        remove_existing(parent_fd.as_fd(), hidden).ctx(path, "remove whited-out entry")?;
        rfs::mknodat(
            &parent_fd,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .ctx(path, "create whiteout")
    }

    /// Applies the deferred directory mtimes. A directory that a later entry removed or
    /// replaced is skipped.
    fn finish(&mut self) -> Result<()> {
        for (rel, mtime) in &self.dir_times {
            let fd = match open_in_root(self.root.as_fd(), rel, true) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(e).ctx(&rel.to_string_lossy(), "open directory"),
            };
            let times = Timestamps {
                last_access: *mtime,
                last_modification: *mtime,
            };
            rfs::futimens(&fd, &times).ctx(&rel.to_string_lossy(), "set directory times")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    const MTIME: u64 = 1_600_000_000;

    /// Builds tars with raw names, bypassing the `tar` crate's path sanitising.
    struct T(tar::Builder<Vec<u8>>);

    impl T {
        fn new() -> Self {
            T(tar::Builder::new(Vec::new()))
        }

        fn raw(mut self, kind: EntryType, name: &str, link: &str, data: &[u8], mode: u32) -> Self {
            assert!(
                name.len() <= 100 && link.len() <= 100,
                "test names must fit the old header"
            );
            let mut h = tar::Header::new_gnu();
            {
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..name.len()].copy_from_slice(name.as_bytes());
                old.linkname = [0; 100];
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_cksum();
            self.0.append(&h, data).expect("append");
            self
        }

        fn dir(self, name: &str, mode: u32) -> Self {
            self.raw(EntryType::Directory, name, "", b"", mode)
        }

        fn file(self, name: &str, data: &[u8], mode: u32) -> Self {
            self.raw(EntryType::Regular, name, "", data, mode)
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.raw(EntryType::Symlink, name, target, b"", 0o777)
        }

        fn link(self, name: &str, target: &str) -> Self {
            self.raw(EntryType::Link, name, target, b"", 0o777)
        }

        fn device(mut self, kind: EntryType, name: &str, major: u32, minor: u32) -> Self {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).expect("path");
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o666);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_device_major(major).expect("major");
            h.set_device_minor(minor).expect("minor");
            h.set_cksum();
            self.0.append(&h, io::empty()).expect("append");
            self
        }

        fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
            self.0
                .append_pax_extensions(records.iter().copied())
                .expect("pax");
            self
        }

        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().expect("finish tar")
        }
    }

    /// A tempdir holding `dest` next to a sentinel `outside` dir and a `victim` file.
    struct Fx {
        tmp: tempfile::TempDir,
        dest: PathBuf,
        outside: PathBuf,
    }

    type Snapshot = BTreeMap<PathBuf, String>;

    impl Fx {
        fn new() -> Self {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dest = tmp.path().join("dest");
            let outside = tmp.path().join("outside");
            fs::create_dir(&dest).expect("mkdir dest");
            fs::create_dir(&outside).expect("mkdir outside");
            fs::write(outside.join("secret"), "sentinel").expect("write secret");
            fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o640))
                .expect("chmod");
            fs::create_dir(outside.join("sub")).expect("mkdir sub");
            fs::write(tmp.path().join("victim"), "victim").expect("write victim");
            Fx { tmp, dest, outside }
        }

        fn out(&self) -> &str {
            self.outside.to_str().expect("utf-8 tempdir")
        }

        /// Everything in the tempdir except `dest`, with metadata, contents and xattrs.
        fn snapshot(&self) -> Snapshot {
            fn walk(dir: &Path, skip: &Path, acc: &mut Snapshot) {
                for e in fs::read_dir(dir).expect("read_dir") {
                    let p = e.expect("dirent").path();
                    if p == skip {
                        continue;
                    }
                    let md = fs::symlink_metadata(&p).expect("lstat");
                    let mut xattrs = vec![0u8; 4096];
                    let n = rfs::llistxattr(&p, &mut xattrs[..]).unwrap_or(0);
                    let content = if md.is_file() {
                        fs::read_to_string(&p).expect("read")
                    } else if md.file_type().is_symlink() {
                        fs::read_link(&p).expect("readlink").display().to_string()
                    } else {
                        String::new()
                    };
                    let desc = format!(
                        "mode={:o} uid={} nlink={} ino={} mtime={}.{} xattrs={:?} content={content}",
                        md.mode(),
                        md.uid(),
                        md.nlink(),
                        md.ino(),
                        md.mtime(),
                        md.mtime_nsec(),
                        &xattrs[..n]
                    );
                    acc.insert(p.clone(), desc);
                    if md.is_dir() {
                        walk(&p, skip, acc);
                    }
                }
            }
            let mut acc = Snapshot::new();
            // Include the tempdir itself (a new entry changes its mtime).
            let md = fs::metadata(self.tmp.path()).expect("stat tmp");
            acc.insert(
                self.tmp.path().to_path_buf(),
                format!("{}.{}", md.mtime(), md.mtime_nsec()),
            );
            walk(self.tmp.path(), &self.dest, &mut acc);
            acc
        }

        /// Unpacks `tar`, asserting that nothing outside `dest` changed.
        fn unpack(&self, tar: Vec<u8>) -> Result<UnpackStats, UnpackError> {
            let before = self.snapshot();
            let res = unpack_layer(io::Cursor::new(tar), &self.dest);
            assert_eq!(
                before,
                self.snapshot(),
                "something outside dest changed ({res:?})"
            );
            res
        }

        fn d(&self, rel: &str) -> PathBuf {
            self.dest.join(rel)
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.d(rel)).expect("read inside dest")
        }

        fn exists(&self, rel: &str) -> bool {
            fs::symlink_metadata(self.d(rel)).is_ok()
        }

        fn ino(&self, rel: &str) -> u64 {
            fs::symlink_metadata(self.d(rel)).expect("lstat").ino()
        }
    }

    fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        let n = rfs::lgetxattr(p, name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    fn is_whiteout(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    }

    #[test]
    fn breakout_dotdot_path_rejected() {
        let fx = Fx::new();
        for name in [
            "../escaped",
            "a/../../escaped",
            "./../outside/secret",
            "a/b/../../../victim",
        ] {
            let err = fx
                .unpack(T::new().file(name, b"pwned", 0o644).bytes())
                .expect_err(name);
            assert!(
                matches!(&err, UnpackError::Breakout { path } if path == name),
                "{err}"
            );
        }
        // The same via a PAX `path` record, which bypasses the ustar name field.
        let tar = T::new()
            .pax(&[("path", b"../escaped")])
            .file("innocent", b"pwned", 0o644)
            .bytes();
        assert!(matches!(fx.unpack(tar), Err(UnpackError::Breakout { .. })));
        assert!(!fx.tmp.path().join("escaped").exists());
        // `..` that stays inside is fine.
        fx.unpack(T::new().file("a/../inside", b"ok", 0o644).bytes())
            .expect("inner ..");
        assert_eq!(fx.read("inside"), "ok");
    }

    #[test]
    fn breakout_absolute_path_is_rooted() {
        let fx = Fx::new();
        let secret = format!("{}/secret", fx.out());
        let stats = fx
            .unpack(T::new().file(&secret, b"pwned", 0o644).bytes())
            .expect("unpack");
        assert_eq!(stats.entries, 1);
        assert_eq!(fx.read(secret.trim_start_matches('/')), "pwned");
    }

    #[test]
    fn breakout_symlink_absolute_dir_then_file() {
        let fx = Fx::new();
        // containerd SymlinkAbsolute: /etc means the layer's etc.
        let tar = T::new()
            .dir("etc", 0o755)
            .symlink("localetc", "/etc")
            .file("/localetc/unbroken", b"unbroken", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert_eq!(fx.read("etc/unbroken"), "unbroken");
        // Aimed at the real outside directory: parent missing inside dest -> error, no write.
        let tar = T::new()
            .symlink("evil", fx.out())
            .file("evil/pwned", b"pwned", 0o644)
            .bytes();
        assert!(fx.unpack(tar).is_err());
        // With the mirror path present inside dest, the write lands there.
        let tar = T::new()
            .dir(fx.out(), 0o755)
            .file("evil/pwned", b"pwned", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert_eq!(
            fx.read(&format!("{}/pwned", fx.out().trim_start_matches('/'))),
            "pwned"
        );
    }

    #[test]
    fn breakout_symlink_updir_then_file() {
        let fx = Fx::new();
        let tar = T::new()
            .dir("dummy", 0o755)
            .symlink("up", "../../../../../..")
            .symlink("updown", "dummy/../../../outside")
            .file("up/pwned", b"pwned", 0o644)
            .file("up/outside/secret", b"pwned", 0o644)
            .file("updown/secret2", b"pwned", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert_eq!(fx.read("pwned"), "pwned");
        assert_eq!(fx.read("outside/secret"), "pwned");
        assert_eq!(fx.read("outside/secret2"), "pwned");
    }

    #[test]
    fn breakout_symlink_absolute_dir_then_directory() {
        let fx = Fx::new();
        let tar = T::new()
            .symlink("evil", fx.out())
            .dir("evil/newdir", 0o700)
            .bytes();
        assert!(fx.unpack(tar).is_err());
        let tar = T::new()
            .symlink("evil2", &format!("{}/sub", fx.out()))
            .dir(&format!("{}/sub", fx.out()), 0o755)
            .dir("evil2/newdir", 0o700)
            .bytes();
        fx.unpack(tar).expect("unpack");
        let inside = fx.d(&format!("{}/sub/newdir", fx.out().trim_start_matches('/')));
        assert_eq!(fs::metadata(inside).expect("newdir").mode() & 0o7777, 0o700);
    }

    #[test]
    fn breakout_symlink_chains() {
        let fx = Fx::new();
        // containerd SymlinkMultipleAbsolute / SymlinkMultipleRelative / SymlinkUpAndOut.
        let tar = T::new()
            .dir("etc", 0o755)
            .dir("dummy", 0o755)
            .symlink("/dummy/etc", "/etc")
            .symlink("localetc", "./dummy/etc")
            .symlink("abs", "/dummy/etc")
            .symlink("upandout", "/dummy/../etc")
            .symlink("a", "../../..")
            .symlink("b", "a/../../a/../../etc")
            .symlink("c", "/b/../../b")
            .file("/localetc/one", b"1", 0o644)
            .file("abs/two", b"2", 0o644)
            .file("upandout/three", b"3", 0o644)
            .file("c/four", b"4", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        for (f, v) in [("one", "1"), ("two", "2"), ("three", "3"), ("four", "4")] {
            assert_eq!(fx.read(&format!("etc/{f}")), v);
        }
    }

    #[test]
    fn breakout_hardlink_dotdot_target() {
        let fx = Fx::new();
        for target in [
            "../outside/secret",
            "a/../../outside/secret",
            "../../../../../etc/passwd",
        ] {
            let err = fx
                .unpack(T::new().link("stolen", target).bytes())
                .expect_err(target);
            assert!(
                matches!(&err, UnpackError::HardlinkTarget { path, .. } if path == "stolen"),
                "{err}"
            );
        }
        assert!(!fx.exists("stolen"));
    }

    #[test]
    fn breakout_hardlink_absolute_target() {
        let fx = Fx::new();
        let secret = format!("{}/secret", fx.out());
        let err = fx
            .unpack(T::new().link("stolen", &secret).bytes())
            .expect_err("missing inside");
        assert!(matches!(err, UnpackError::HardlinkTarget { .. }), "{err}");
        assert!(!fx.exists("stolen"));
        // containerd HardlinkDirectAbsolute: /etc/passwd means the layer's.
        let tar = T::new()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside", 0o644)
            .link("localpasswd", "/etc/passwd")
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert_eq!(fx.ino("localpasswd"), fx.ino("etc/passwd"));
    }

    #[test]
    fn breakout_hardlink_through_symlinked_parent() {
        let fx = Fx::new();
        let tar = T::new()
            .symlink("evil", fx.out())
            .link("stolen", "evil/secret")
            .bytes();
        assert!(matches!(
            fx.unpack(tar),
            Err(UnpackError::HardlinkTarget { .. })
        ));
        // Link *created* through a symlinked parent.
        let tar = T::new()
            .dir("etc", 0o755)
            .file("etc/f", b"x", 0o644)
            .link("evil/stolen", "etc/f")
            .bytes();
        assert!(fx.unpack(tar).is_err());
        // containerd HardlinkRelative / HardlinkRelativeLong: resolved inside.
        let tar = T::new()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside", 0o644)
            .dir("breakouts", 0o755)
            .symlink("breakouts/d1", "../../etc")
            .symlink("localetc", "../../../../../../../etc")
            .link("breakouts/mypasswd", "/breakouts/d1/passwd")
            .link("localpasswd", "/localetc/passwd")
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert_eq!(fx.ino("breakouts/mypasswd"), fx.ino("etc/passwd"));
        assert_eq!(fx.ino("localpasswd"), fx.ino("etc/passwd"));
    }

    #[test]
    fn breakout_hardlink_to_symlink_links_the_symlink() {
        let fx = Fx::new();
        // containerd HardlinkSymlinkChmod: the hardlink's mode must not reach the target.
        let secret = format!("{}/secret", fx.out());
        let tar = T::new()
            .symlink(&secret, &secret)
            .link("sketchylink", &secret)
            .bytes();
        fx.unpack(tar).expect("unpack");
        let md = fs::symlink_metadata(fx.d("sketchylink")).expect("lstat");
        assert!(md.file_type().is_symlink());
        assert_eq!(
            fx.ino("sketchylink"),
            fx.ino(secret.trim_start_matches('/'))
        );
    }

    #[test]
    fn breakout_whiteout_dotdot() {
        let fx = Fx::new();
        for name in [
            "../.wh.victim",
            "a/../../outside/.wh.secret",
            "../outside/.wh..wh..opq",
        ] {
            let err = fx
                .unpack(T::new().file(name, b"", 0o644).bytes())
                .expect_err(name);
            assert!(matches!(err, UnpackError::Breakout { .. }), "{err}");
        }
        for name in [".wh..", ".wh...", "etc/.wh.."] {
            let err = fx
                .unpack(T::new().file(name, b"", 0o644).bytes())
                .expect_err(name);
            assert!(matches!(err, UnpackError::InvalidEntry { .. }), "{err}");
        }
    }

    #[test]
    fn breakout_whiteout_through_symlinked_parent() {
        let fx = Fx::new();
        let tar = T::new()
            .symlink("evil", fx.out())
            .file("evil/.wh.secret", b"", 0o644)
            .bytes();
        assert!(fx.unpack(tar).is_err());
        let tar = T::new().file("evil/.wh..wh..opq", b"", 0o644).bytes();
        assert!(fx.unpack(tar).is_err());
        // containerd WhiteoutSymlink: whiting out the symlink removes the link, not its target.
        let tar = T::new()
            .dir("etc", 0o755)
            .file("etc/passwd", b"all users", 0o644)
            .symlink("localetc", "/etc")
            .file(".wh.localetc", b"", 0o644)
            .file(".wh.evil", b"", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert!(is_whiteout(&fx.d("localetc")));
        assert!(is_whiteout(&fx.d("evil")));
        assert_eq!(fx.read("etc/passwd"), "all users");
        // containerd WhiteoutSymlinkPath: a whiteout below a symlink lands in its (inner) target.
        let tar = T::new()
            .file("etc/whitedout", b"x", 0o644)
            .symlink("link2", "/etc")
            .file("link2/.wh.whitedout", b"", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert!(is_whiteout(&fx.d("etc/whitedout")));
    }

    #[test]
    #[cfg_attr(not(skiff_root), ignore = "needs root: mknod and trusted xattrs")]
    fn opaque_whiteout() {
        let fx = Fx::new();
        let tar = T::new()
            .dir("d", 0o755)
            .file("d/keep", b"k", 0o644)
            .file("d/.wh..wh..opq", b"", 0o644)
            .file("e/.wh..wh..opq", b"", 0o644)
            .file(".wh..wh..opq", b"", 0o644)
            .file("d/.wh..wh.plnk", b"", 0o644)
            .bytes();
        let stats = fx.unpack(tar).expect("unpack");
        for dir in ["d", "e", ""] {
            assert_eq!(
                xattr(&fx.d(dir), "trusted.overlay.opaque").as_deref(),
                Some(&b"y"[..]),
                "{dir}"
            );
        }
        assert_eq!(fx.read("d/keep"), "k");
        assert!(!fx.exists("d/.wh..wh..opq") && !fx.exists("d/.wh..wh.plnk"));
        assert_eq!(stats.skipped, vec!["d/.wh..wh.plnk".to_owned()]);
    }

    #[test]
    fn device_nodes_skipped_fifo_created() {
        let fx = Fx::new();
        let tar = T::new()
            .dir("dev", 0o755)
            .device(EntryType::Char, "dev/null", 1, 3)
            .device(EntryType::Char, "dev/whiteoutish", 0, 0)
            .device(EntryType::Block, "dev/sda", 8, 0)
            .device(EntryType::Fifo, "dev/fifo", 0, 0)
            .bytes();
        let stats = fx.unpack(tar).expect("unpack");
        assert_eq!(
            stats.skipped,
            vec!["dev/null", "dev/whiteoutish", "dev/sda"]
        );
        assert_eq!(stats.entries, 5);
        assert!(!fx.exists("dev/null") && !fx.exists("dev/sda") && !fx.exists("dev/whiteoutish"));
        let md = fs::symlink_metadata(fx.d("dev/fifo")).expect("fifo");
        assert!(md.file_type().is_fifo());
        assert_eq!(md.mode() & 0o7777, 0o666);
    }

    #[test]
    #[cfg_attr(not(skiff_root), ignore = "needs root: mknod and trusted xattrs")]
    fn file_replaces_directory() {
        let fx = Fx::new();
        let tar = T::new()
            .dir("d", 0o755)
            .file("d/x", b"x", 0o644)
            .dir("d/sub/deeper", 0o500)
            .file("d/sub/deeper/y", b"y", 0o400)
            .symlink("d/ln", fx.out())
            .symlink("d/sub/ln2", &format!("{}/secret", fx.out()))
            .link("keep", "d/x")
            .file("d", b"now a file", 0o600)
            .bytes();
        fx.unpack(tar).expect("unpack");
        assert_eq!(fx.read("d"), "now a file");
        assert_eq!(fx.read("keep"), "x");
    }

    #[test]
    fn directory_over_symlink_replaces_it() {
        let fx = Fx::new();
        // In-layer: containerd DirectoryOverrideSymlink.
        let tar = T::new()
            .symlink("localetc", fx.out())
            .dir("localetc", 0o750)
            .file("localetc/f", b"f", 0o644)
            .bytes();
        fx.unpack(tar).expect("unpack");
        let md = fs::symlink_metadata(fx.d("localetc")).expect("lstat");
        assert!(md.is_dir() && md.mode() & 0o7777 == 0o750);
        assert_eq!(fx.read("localetc/f"), "f");
        // Pre-existing symlink and hardlink (to the outside sentinel) in dest. Unlinking the
        // hardlink changes the sentinel's link count, so check its content and mode instead.
        std::os::unix::fs::symlink(&fx.outside, fx.d("pre")).expect("symlink");
        fs::hard_link(fx.outside.join("secret"), fx.d("hl")).expect("hardlink");
        let tar = T::new()
            .dir("pre", 0o755)
            .file("pre/f", b"f", 0o644)
            .file("hl", b"new", 0o666)
            .bytes();
        unpack_layer(io::Cursor::new(tar), &fx.dest).expect("unpack");
        assert!(fs::symlink_metadata(fx.d("pre")).expect("lstat").is_dir());
        assert_eq!(fx.read("pre/f"), "f");
        assert!(!fx.outside.join("f").exists());
        assert_eq!(fx.read("hl"), "new");
        let secret = fs::symlink_metadata(fx.outside.join("secret")).expect("lstat");
        assert_eq!((secret.nlink(), secret.mode() & 0o7777), (1, 0o640));
        assert_eq!(
            fs::read_to_string(fx.outside.join("secret")).expect("read"),
            "sentinel"
        );
    }

    #[test]
    fn root_entry_and_invalid_root_replacements() {
        let fx = Fx::new();
        fx.unpack(T::new().dir("./", 0o750).dir("/", 0o751).bytes())
            .expect("unpack");
        assert_eq!(fs::metadata(&fx.dest).expect("stat").mode() & 0o7777, 0o751);
        assert_eq!(fs::metadata(&fx.dest).expect("stat").mtime(), MTIME as i64);
        for tar in [
            T::new().symlink("", fx.out()),
            T::new().symlink(".", "/"),
            T::new().file("./", b"", 0o644),
        ] {
            let err = fx.unpack(tar.bytes()).expect_err("non-directory root");
            assert!(matches!(err, UnpackError::InvalidEntry { .. }), "{err}");
        }
        assert!(fs::symlink_metadata(&fx.dest).expect("lstat").is_dir());
        let err = fx
            .unpack(T::new().symlink("a/..", "/").bytes())
            .expect_err("root symlink");
        assert!(matches!(err, UnpackError::InvalidEntry { .. }), "{err}");
    }

    fn normal_layer() -> Vec<u8> {
        let cap: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut t = T::new()
            .dir("bin", 0o755)
            .pax(&[("SCHILY.xattr.security.capability", &cap[..])])
            .file("bin/tool", b"#!/bin/sh\n", 0o4755)
            .file("bin/ping", b"ping", 0o755)
            .symlink("bin/sh", "tool")
            .link("bin/tool2", "bin/tool")
            .dir("tmp", 0o1777)
            .dir("home/user", 0o700)
            .pax(&[
                ("SCHILY.xattr.user.note", b"hello"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                (
                    "SCHILY.xattr.security.selinux",
                    b"system_u:object_r:etc_t:s0",
                ),
                ("uid", b"1000"),
                ("gid", b"1001"),
                ("mtime", b"1500000000.25"),
            ])
            .file("home/user/.profile", b"export A=1\n", 0o640)
            .dir("opaque", 0o755)
            .file("opaque/.wh..wh..opq", b"", 0o644)
            .file("opaque/new", b"new", 0o644)
            .file("gone-parent/.wh.gone", b"", 0o644)
            .raw(EntryType::Fifo, "run/fifo", "", b"", 0o620);
        let mut h = tar::Header::new_gnu();
        h.set_path("home/user").expect("path");
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o711);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_234_567_890);
        h.set_size(0);
        h.set_cksum();
        t.0.append(&h, io::empty()).expect("append");
        t.bytes()
    }

    #[test]
    #[cfg_attr(not(skiff_root), ignore = "needs root: file ownership")]
    fn normal_layer_unpacks_to_expected_tree() {
        let fx = Fx::new();
        let stats = fx.unpack(normal_layer()).expect("unpack");
        assert_eq!(stats.entries, 14);
        assert_eq!(stats.bytes, 10 + 4 + 11 + 3);
        assert!(stats.skipped.is_empty());
        let mode = |p: &str| fs::symlink_metadata(fx.d(p)).expect(p).mode();
        assert_eq!(mode("bin") & 0o7777, 0o755);
        assert_eq!(mode("bin/tool") & 0o7777, 0o4755);
        assert_eq!(mode("tmp") & 0o7777, 0o1777);
        assert_eq!(mode("home/user") & 0o7777, 0o711);
        assert_eq!(mode("home") & 0o7777, 0o755);
        assert_eq!(mode("home/user/.profile") & 0o7777, 0o640);
        assert_eq!(
            fs::read_link(fx.d("bin/sh")).expect("readlink"),
            Path::new("tool")
        );
        assert_eq!(fx.ino("bin/tool2"), fx.ino("bin/tool"));
        assert!(xattr(&fx.d("bin/tool"), "security.capability").is_some());
        let profile = fx.d("home/user/.profile");
        assert_eq!(xattr(&profile, "user.note").as_deref(), Some(&b"hello"[..]));
        assert_eq!(xattr(&profile, "trusted.overlay.opaque"), None);
        assert_eq!(xattr(&profile, "security.selinux"), None);
        let md = fs::symlink_metadata(&profile).expect("lstat");
        assert_eq!(
            (md.uid(), md.gid(), md.mtime(), md.mtime_nsec()),
            (1000, 1001, 1_500_000_000, 250_000_000)
        );
        let home = fs::metadata(fx.d("home/user")).expect("stat");
        assert_eq!((home.uid(), home.mtime()), (1000, 1_234_567_890));
        assert_eq!(
            fs::metadata(fx.d("bin")).expect("stat").mtime(),
            MTIME as i64
        );
        assert_eq!(
            xattr(&fx.d("opaque"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(fx.read("opaque/new"), "new");
        assert!(is_whiteout(&fx.d("gone-parent/gone")));
        assert!(fs::symlink_metadata(fx.d("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo());
        assert_eq!(mode("run/fifo") & 0o7777, 0o620);
    }

    /// Reads one byte per call, to exercise short reads of the magic.
    struct Trickle(io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    #[cfg_attr(not(skiff_root), ignore = "needs root: file ownership")]
    fn compressed_layers_round_trip() {
        let plain = normal_layer();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert_eq!(detect_compression(&gz), Compression::Gzip);
        assert_eq!(detect_compression(&zst), Compression::Zstd);
        assert_eq!(detect_compression(&plain), Compression::None);
        assert_eq!(detect_compression(&[0x1f]), Compression::None);
        for blob in [plain.clone(), gz, zst] {
            let mut out = Vec::new();
            decompressed(Trickle(io::Cursor::new(blob.clone())))
                .expect("decompressed")
                .read_to_end(&mut out)
                .expect("read");
            assert_eq!(out, plain);
            let fx = Fx::new();
            let stats = unpack_layer(
                decompressed(io::Cursor::new(blob)).expect("decompressed"),
                &fx.dest,
            )
            .expect("unpack");
            assert_eq!(stats.entries, 14);
            assert_eq!(fx.read("opaque/new"), "new");
        }
        let mut out = Vec::new();
        decompressed(io::empty())
            .expect("empty")
            .read_to_end(&mut out)
            .expect("read");
        assert!(out.is_empty());
    }

    #[test]
    fn paths_in_root_stay_in_root() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/f"), b"abc").expect("write");
        std::os::unix::fs::symlink("/etc", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../..", root.join("up")).expect("symlink");
        let info = stat_in_root(&root, "/abs/f").expect("stat through an absolute link");
        assert_eq!(info.size, 3);
        let link = stat_in_root(&root, "abs").expect("lstat");
        assert_eq!(link.link_target.as_deref(), Some("/etc"));
        // `up` climbs no higher than the root: up/etc is the root's etc.
        assert_eq!(stat_in_root(&root, "up/etc/f").expect("stat").size, 3);
        assert!(stat_in_root(&root, "/missing").is_err());
    }
}
