//! Host-side pieces of `RUN --mount`: persistent cache directories (with their sharing
//! locks), secret files on a private tmpfs, in-root resolution of bind sources, and
//! removal of the mount-point stubs the runtime creates in the step's upper directory,
//! so that no mount ever leaves a trace in a layer (BuildKit's stub cleaner does the same).

use super::dockerfile::Sharing;
use super::layer::{self, LayerError};
use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Anything a RUN step holds while its container runs: undone on drop, in reverse order.
#[derive(Default)]
pub struct Held {
    temp_dirs: Vec<PathBuf>,
    tmpfs: Vec<PathBuf>,
    locks: Vec<nix::fcntl::Flock<fs::File>>,
}

impl Held {
    /// A fresh private directory removed when the step is done.
    pub fn temp_dir(&mut self, path: PathBuf) -> io::Result<PathBuf> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        self.temp_dirs.push(path.clone());
        Ok(path)
    }

    /// A fresh directory with a tmpfs on it, so secrets never reach a disk.
    pub fn tmpfs_dir(&mut self, path: PathBuf) -> io::Result<PathBuf> {
        let p = self.temp_dir(path)?;
        nix::mount::mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=0700,size=16m"),
        )
        .map_err(io::Error::from)?;
        self.tmpfs.push(p.clone());
        Ok(p)
    }

    pub fn keep_lock(&mut self, l: nix::fcntl::Flock<fs::File>) {
        self.locks.push(l);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for p in self.tmpfs.drain(..) {
            let _ = crate::snapshot::unmount(&p);
        }
        for p in self.temp_dirs.drain(..).rev() {
            let _ = fs::remove_dir_all(&p);
        }
        self.locks.clear();
    }
}

/// Where the cache mount `id` lives below `root` (instance > 0: extra private copies).
pub fn cache_dir(root: &Path, id: &str, instance: usize) -> PathBuf {
    let h = crate::digest::Digest::of(id.as_bytes());
    let hex = h.hex();
    let short = &hex[..hex.len().min(32)];
    if instance == 0 {
        root.join(short)
    } else {
        root.join(format!("{short}-{instance}"))
    }
}

/// Picks and locks the cache directory for a step: `shared` takes the directory as it
/// is, `locked` waits for exclusive use, `private` takes the first instance nobody else
/// holds. Returns the directory and the lock to hold while the step runs.
pub fn lock_cache(
    root: &Path,
    id: &str,
    sharing: Sharing,
) -> io::Result<(PathBuf, Option<nix::fcntl::Flock<fs::File>>)> {
    use nix::fcntl::{Flock, FlockArg};
    fs::create_dir_all(root)?;
    let open = |dir: &Path| -> io::Result<fs::File> {
        let mut p = dir.as_os_str().to_owned();
        p.push(".lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(PathBuf::from(p))
    };
    match sharing {
        Sharing::Shared => Ok((cache_dir(root, id, 0), None)),
        Sharing::Locked => {
            let dir = cache_dir(root, id, 0);
            let f = open(&dir)?;
            let l = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
            Ok((dir, Some(l)))
        }
        Sharing::Private => {
            for i in 0..64 {
                let dir = cache_dir(root, id, i);
                let f = open(&dir)?;
                if let Ok(l) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    return Ok((dir, Some(l)));
                }
            }
            Err(io::Error::other(format!(
                "cache mount {id:?}: 64 private instances are all in use"
            )))
        }
    }
}

/// Creates a cache directory on first use with the mount's mode and owner; returns
/// whether it was new (so a `from=` seed is copied only once).
pub fn ensure_cache_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    let tmp = dir.with_extension(format!("new-{:08x}", rand::random::<u32>()));
    fs::create_dir(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode & 0o7777))?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
    match fs::rename(&tmp, dir) {
        Ok(()) => Ok(true),
        Err(_) if dir.is_dir() => {
            let _ = fs::remove_dir(&tmp);
            Ok(false)
        }
        Err(e) => {
            let _ = fs::remove_dir(&tmp);
            Err(e)
        }
    }
}

/// Resolves `rel` inside `root`, following symlinks as if `root` were `/`, so a bind
/// source can never name a host path outside the context or stage.
pub fn resolve_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let mut parts: VecDeque<String> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(p) = parts.pop_front() {
        if p == ".." {
            cur.pop();
            continue;
        }
        if p == "." {
            continue;
        }
        let candidate = root.join(cur.join("/")).join(&p);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!("{rel}: too many symbolic links")));
                }
                let t = fs::read_link(&candidate)?;
                let t = t.to_string_lossy();
                if t.starts_with('/') {
                    cur.clear();
                }
                let mut next: VecDeque<String> = t
                    .split('/')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect();
                next.extend(parts.drain(..));
                parts = next;
            }
            _ => cur.push(p),
        }
    }
    Ok(if cur.is_empty() {
        root.to_path_buf()
    } else {
        root.join(cur.join("/"))
    })
}

/// The paths (relative, no slashes at the ends) the runtime will create in the upper
/// directory to mount `targets` on: every component missing from the image's layers.
pub fn mount_stubs(lowers: &[PathBuf], targets: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for t in targets {
        let clean = super::context::clean(t);
        let mut prefix = String::new();
        let mut missing = false;
        for part in clean.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if missing || layer::lookup(lowers, &prefix).is_none() {
                missing = true;
                out.insert(prefix.clone());
            }
        }
    }
    out.into_iter().collect()
}

fn entry_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    s.trim_start_matches("./").trim_matches('/').to_string()
}

/// Rewrites the layer tar at `path` without the mount stubs: a stub entry (directory or
/// empty file) goes unless the step put something else below it.
pub fn drop_stubs(path: &Path, stubs: &[String]) -> Result<(), LayerError> {
    if stubs.is_empty() {
        return Ok(());
    }
    let io_err = |e: io::Error| LayerError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    // Pass 1: which stubs have real content below them.
    let mut names = Vec::new();
    {
        let mut a = tar::Archive::new(fs::File::open(path).map_err(io_err)?);
        for e in a.entries().map_err(io_err)? {
            let e = e.map_err(io_err)?;
            names.push(entry_name(&e.path_bytes()));
        }
    }
    let stub_set: BTreeSet<&str> = stubs.iter().map(String::as_str).collect();
    let kept_below = |s: &str| {
        names
            .iter()
            .any(|n| !stub_set.contains(n.as_str()) && n.starts_with(&format!("{s}/")))
    };
    let drop: BTreeSet<&str> = stubs
        .iter()
        .map(String::as_str)
        .filter(|s| !kept_below(s))
        .collect();
    let out_path = path.with_extension("nostubs");
    let res = (|| -> Result<(), io::Error> {
        let mut a = tar::Archive::new(fs::File::open(path)?);
        let mut out = tar::Builder::new(io::BufWriter::new(fs::File::create(&out_path)?));
        for e in a.entries()? {
            let mut e = e?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let name = entry_name(raw.as_bytes());
            let kind = e.header().entry_type();
            let empty = kind.is_dir() || (kind.is_file() && e.header().size()? == 0);
            if empty && drop.contains(name.as_str()) {
                continue;
            }
            let mut h = e.header().clone();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                out.append_link(&mut h, &raw, target)?;
            } else {
                out.append_data(&mut h, &raw, &mut e)?;
            }
        }
        io::Write::flush(&mut out.into_inner()?)?;
        fs::rename(&out_path, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&out_path);
    }
    res.map_err(io_err)
}

/// Copies a tree (files, directories, symlinks; modes and owners kept), for `rw` bind
/// mounts whose writes must be thrown away and for cache directories seeded `from=`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        return Ok(());
    }
    if ft.is_dir() {
        if !dst.is_dir() {
            fs::create_dir(dst)?;
        }
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else if ft.is_file() {
        fs::copy(src, dst)?;
    } else {
        return Ok(()); // devices, fifos, sockets: not copied
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

/// Writes a secret's bytes as a file only `uid` (or root) can read.
pub fn write_secret(
    dir: &Path,
    id: &str,
    data: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<PathBuf> {
    let hex = crate::digest::Digest::of(id.as_bytes()).hex().to_string();
    let name = hex.get(..16).unwrap_or("secret").to_string();
    let p = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&p)?;
    io::Write::write_all(&mut f, data)?;
    drop(f);
    std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dirs_are_per_id_and_private_instances_differ() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(cache_dir(d.path(), "a", 0), cache_dir(d.path(), "a", 0));
        assert_ne!(cache_dir(d.path(), "a", 0), cache_dir(d.path(), "b", 0));
        let (a, la) = lock_cache(d.path(), "go", Sharing::Private).expect("first");
        let (b, _lb) = lock_cache(d.path(), "go", Sharing::Private).expect("second");
        assert_ne!(a, b, "a held private cache is not shared");
        drop(la);
        let (c, _lc) = lock_cache(d.path(), "go", Sharing::Private).expect("third");
        assert_eq!(a, c, "a released instance is reused");
        let (s, l) = lock_cache(d.path(), "go", Sharing::Shared).expect("shared");
        assert_eq!(s, a);
        assert!(l.is_none());
        let me = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        assert!(ensure_cache_dir(&s, 0o750, me, gid).expect("create"));
        assert!(!ensure_cache_dir(&s, 0o750, me, gid).expect("exists"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&s).expect("meta").mode() & 0o777, 0o750);
    }

    #[test]
    fn bind_sources_never_leave_the_root() {
        let root = tempfile::tempdir().expect("root");
        let r = root.path();
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", r.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../..", r.join("a/up")).expect("symlink");
        std::os::unix::fs::symlink("b", r.join("a/rel")).expect("symlink");
        assert_eq!(
            resolve_in_root(r, "abs/passwd").expect("abs"),
            r.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(r, "a/up/x").expect("up"), r.join("x"));
        assert_eq!(
            resolve_in_root(r, "../../a/rel").expect("rel"),
            r.join("a/b")
        );
        assert_eq!(resolve_in_root(r, ".").expect("dot"), r.to_path_buf());
        std::os::unix::fs::symlink("loop", r.join("loop")).expect("symlink");
        assert!(resolve_in_root(r, "loop").is_err());
    }

    #[test]
    fn stubs_are_the_missing_components_and_are_dropped_from_layers() {
        let lower = tempfile::tempdir().expect("lower");
        fs::create_dir_all(lower.path().join("run")).expect("mkdir");
        fs::create_dir_all(lower.path().join("root")).expect("mkdir");
        let lowers = vec![lower.path().to_path_buf()];
        let stubs = mount_stubs(
            &lowers,
            &["/run/secrets/tok".into(), "/root/.cache/go".into()],
        );
        assert_eq!(
            stubs,
            [
                "root/.cache",
                "root/.cache/go",
                "run/secrets",
                "run/secrets/tok"
            ]
        );
        // A layer with the stubs, a real file and a real file under a stub directory.
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("layer.tar");
        {
            let mut b = tar::Builder::new(fs::File::create(&p).expect("create"));
            let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                b.append_data(&mut h, name, data).expect("append");
            };
            add("root/", tar::EntryType::Directory, b"");
            add("root/.cache/", tar::EntryType::Directory, b"");
            add("root/.cache/go/", tar::EntryType::Directory, b"");
            add("root/.cache/kept", tar::EntryType::Regular, b"k");
            add("run/", tar::EntryType::Directory, b"");
            add("run/secrets/", tar::EntryType::Directory, b"");
            add("run/secrets/tok", tar::EntryType::Regular, b"");
            add("app", tar::EntryType::Regular, b"x");
            b.finish().expect("finish");
        }
        drop_stubs(&p, &stubs).expect("drop");
        let mut a = tar::Archive::new(fs::File::open(&p).expect("open"));
        let names: Vec<String> = a
            .entries()
            .expect("entries")
            .map(|e| entry_name(&e.expect("entry").path_bytes()))
            .collect();
        assert_eq!(
            names,
            ["root", "root/.cache", "root/.cache/kept", "run", "app"]
        );
    }

    #[test]
    fn secrets_are_written_with_their_mode() {
        let d = tempfile::tempdir().expect("tmp");
        let me = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let p = write_secret(d.path(), "tok", b"s3cret", 0o440, me, gid).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"s3cret");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o777, 0o440);
        assert!(
            !p.to_string_lossy().contains("tok"),
            "file names do not carry ids"
        );
    }
}
