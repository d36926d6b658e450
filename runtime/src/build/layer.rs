//! Making layers: the diff of a build container's overlay upper directory (with
//! whiteouts), the files a COPY/ADD adds, and look-ups in a stack of unpacked layers.

use super::context::Source;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Paths the runtime itself creates or bind-mounts in every container: never part of a
/// RUN step's layer (Docker keeps them out too).
pub const RUNTIME_PATHS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    ".dockerenv",
];

fn header_for(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn is_opaque(path: &Path) -> bool {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        let mut buf = [0u8; 4];
        if let Ok(n) = rustix::fs::lgetxattr(path, name, &mut buf) {
            if n >= 1 && buf[0] == b'y' {
                return true;
            }
        }
    }
    false
}

/// Writes the changes recorded in an overlay upper directory as an OCI layer tar:
/// 0/0 character devices become `.wh.NAME`, opaque directories get `.wh..wh..opq`,
/// hard links stay hard links.
pub fn diff_upper(upper: &Path, out: impl Write) -> Result<(), LayerError> {
    let mut tar = tar::Builder::new(out);
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    diff_dir(upper, "", &mut tar, &mut inodes)?;
    tar.into_inner()
        .map_err(io_err(upper))?
        .flush()
        .map_err(io_err(upper))
}

fn diff_dir<W: Write>(
    base: &Path,
    rel: &str,
    tar: &mut tar::Builder<W>,
    inodes: &mut HashMap<(u64, u64), String>,
) -> Result<(), LayerError> {
    let dir = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if RUNTIME_PATHS.contains(&r.as_str()) {
            continue;
        }
        let p = e.path();
        let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let wh = if rel.is_empty() {
                format!(".wh.{name}")
            } else {
                format!("{rel}/.wh.{name}")
            };
            let mut h = header_for(&meta, tar::EntryType::Regular);
            h.set_mode(0o644);
            tar.append_data(&mut h, &wh, io::empty())
                .map_err(io_err(&p))?;
        } else if ft.is_dir() {
            let mut h = header_for(&meta, tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{r}/"), io::empty())
                .map_err(io_err(&p))?;
            if is_opaque(&p) {
                let mut h = header_for(&meta, tar::EntryType::Regular);
                h.set_mode(0o644);
                tar.append_data(&mut h, format!("{r}/.wh..wh..opq"), io::empty())
                    .map_err(io_err(&p))?;
            }
            diff_dir(base, &r, tar, inodes)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&p).map_err(io_err(&p))?;
            let mut h = header_for(&meta, tar::EntryType::Symlink);
            tar.append_link(&mut h, &r, &target).map_err(io_err(&p))?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = inodes.get(&key) {
                    let mut h = header_for(&meta, tar::EntryType::Link);
                    tar.append_link(&mut h, &r, first).map_err(io_err(&p))?;
                    continue;
                }
                inodes.insert(key, r.clone());
            }
            let mut h = header_for(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(&p).map_err(io_err(&p))?;
            tar.append_data(&mut h, &r, f).map_err(io_err(&p))?;
        } else {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                continue; // sockets are not archived
            };
            let mut h = header_for(&meta, kind);
            let rdev = meta.rdev();
            let _ = h.set_device_major(rustix::fs::major(rdev));
            let _ = h.set_device_minor(rustix::fs::minor(rdev));
            tar.append_data(&mut h, &r, io::empty())
                .map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// What a path is in a stack of unpacked layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// Looks `path` up in `lowers` (topmost first) the way overlayfs would, honouring
/// whiteouts and opaque directories (symlinks in the middle of the path are not
/// followed; the build only needs this to decide "is the destination a directory").
pub fn lookup(lowers: &[PathBuf], path: &str) -> Option<Kind> {
    let rel = super::context::clean(path);
    if rel.is_empty() {
        return Some(Kind::Dir);
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for layer in lowers {
        // An opaque or whited-out ancestor in this layer hides everything below.
        let mut hidden = false;
        for n in 1..parts.len() {
            let anc = layer.join(parts[..n].join("/"));
            if let Ok(m) = fs::symlink_metadata(&anc) {
                if m.file_type().is_char_device() && m.rdev() == 0 {
                    return None;
                }
                if m.is_dir() && is_opaque(&anc) {
                    hidden = true;
                }
            }
        }
        let p = layer.join(&rel);
        if let Ok(m) = fs::symlink_metadata(&p) {
            let ft = m.file_type();
            if ft.is_char_device() && m.rdev() == 0 {
                return None;
            }
            return Some(if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::File
            });
        }
        if hidden {
            return None;
        }
    }
    None
}

/// Owner for files a COPY/ADD adds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Where the files of one COPY/ADD source go, given the destination as written.
pub struct CopyPlan<'a> {
    pub sources: &'a [Source],
    /// Absolute destination path (WORKDIR applied).
    pub dest: String,
    /// The destination names a directory (trailing `/`, several sources, or an
    /// existing directory).
    pub dest_is_dir: bool,
    pub owner: Option<Owner>,
    pub chmod: Option<u32>,
    /// ADD: local tar archives are extracted at the destination.
    pub extract_archives: bool,
    /// Directories to create (with parents) before the files: those missing below.
    pub lowers: &'a [PathBuf],
}

/// Writes the layer for a COPY/ADD.
pub fn copy_layer(plan: &CopyPlan, out: impl Write) -> Result<(), LayerError> {
    let mut tar = tar::Builder::new(out);
    let dest = super::context::clean(&plan.dest);
    let mut made: Vec<String> = Vec::new();
    let mkdirs =
        |tar: &mut tar::Builder<_>, dir: &str, made: &mut Vec<String>| -> Result<(), LayerError> {
            let parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
            for n in 1..=parts.len() {
                let d = parts[..n].join("/");
                if made.contains(&d) || lookup(plan.lowers, &d).is_some() {
                    continue;
                }
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_mtime(0);
                h.set_size(0);
                let o = plan.owner.unwrap_or_default();
                h.set_uid(o.uid as u64);
                h.set_gid(o.gid as u64);
                tar.append_data(&mut h, format!("{d}/"), io::empty())
                    .map_err(io_err(Path::new(dir)))?;
                made.push(d);
            }
            Ok(())
        };
    if plan.sources.is_empty() && plan.dest_is_dir {
        mkdirs(&mut tar, &dest, &mut made)?; // WORKDIR
    }
    for src in plan.sources {
        if src.is_dir {
            // A directory's contents (not the directory itself) land in the destination.
            mkdirs(&mut tar, &dest, &mut made)?;
            add_tree(&mut tar, &src.path, &dest, plan)?;
            continue;
        }
        if plan.extract_archives && is_archive(&src.path) {
            mkdirs(&mut tar, &dest, &mut made)?;
            extract_into(&mut tar, &src.path, &dest)?;
            continue;
        }
        let name = src
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = if plan.dest_is_dir {
            join(&dest, &name)
        } else {
            dest.clone()
        };
        if let Some((parent, _)) = target.rsplit_once('/') {
            mkdirs(&mut tar, parent, &mut made)?;
        } else if plan.dest_is_dir {
            mkdirs(&mut tar, &dest, &mut made)?;
        }
        add_one(&mut tar, &src.path, &target, plan)?;
    }
    tar.into_inner()
        .map_err(io_err(Path::new(&plan.dest)))?
        .flush()
        .map_err(io_err(Path::new(&plan.dest)))
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn add_one<W: Write>(
    tar: &mut tar::Builder<W>,
    src: &Path,
    name: &str,
    plan: &CopyPlan,
) -> Result<(), LayerError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        tar::EntryType::Directory
    } else if ft.is_symlink() {
        tar::EntryType::Symlink
    } else if ft.is_file() {
        tar::EntryType::Regular
    } else {
        return Ok(());
    };
    let mut h = header_for(&meta, kind);
    let owner = plan.owner.unwrap_or_default();
    h.set_uid(owner.uid as u64);
    h.set_gid(owner.gid as u64);
    if let (Some(m), false) = (plan.chmod, ft.is_symlink()) {
        h.set_mode(m);
    }
    match kind {
        tar::EntryType::Directory => tar.append_data(&mut h, format!("{name}/"), io::empty()),
        tar::EntryType::Symlink => {
            let t = fs::read_link(src).map_err(io_err(src))?;
            tar.append_link(&mut h, name, t)
        }
        _ => {
            h.set_size(meta.len());
            let f = fs::File::open(src).map_err(io_err(src))?;
            tar.append_data(&mut h, name, f)
        }
    }
    .map_err(io_err(src))
}

fn add_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    dest: &str,
    plan: &CopyPlan,
) -> Result<(), LayerError> {
    let mut entries: Vec<_> = fs::read_dir(dir).map_err(io_err(dir))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = join(dest, &e.file_name().to_string_lossy());
        add_one(tar, &e.path(), &name, plan)?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            add_tree(tar, &e.path(), &name, plan)?;
        }
    }
    Ok(())
}

/// A tar (plain, gzip or zstd) that ADD unpacks rather than copies.
fn is_archive(p: &Path) -> bool {
    let Ok(f) = fs::File::open(p) else {
        return false;
    };
    let Ok(r) = crate::snapshot::unpack::decompressed(f) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut r = r;
    if io::Read::read_exact(&mut r, &mut block).is_err() {
        return false;
    }
    &block[257..262] == b"ustar"
}

/// Re-emits an archive's entries below `dest` (names cleaned; the unpacker guards the rest).
fn extract_into<W: Write>(
    tar: &mut tar::Builder<W>,
    archive: &Path,
    dest: &str,
) -> Result<(), LayerError> {
    let f = fs::File::open(archive).map_err(io_err(archive))?;
    let r = crate::snapshot::unpack::decompressed(f).map_err(io_err(archive))?;
    let mut a = tar::Archive::new(r);
    for entry in a.entries().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = super::context::clean(&raw);
        if rel.is_empty() {
            continue;
        }
        let name = join(dest, &rel);
        let mut h = entry.header().clone();
        let kind = h.entry_type();
        if kind.is_hard_link() {
            let t = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            tar.append_link(&mut h, &name, join(dest, &super::context::clean(&t)))
                .map_err(io_err(archive))?;
        } else if kind.is_symlink() {
            let t = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            tar.append_link(&mut h, &name, t).map_err(io_err(archive))?;
        } else if kind.is_dir() {
            tar.append_data(&mut h, format!("{name}/"), io::empty())
                .map_err(io_err(archive))?;
        } else if kind.is_file() {
            tar.append_data(&mut h, &name, &mut entry)
                .map_err(io_err(archive))?;
        }
    }
    Ok(())
}

/// A content hash of COPY sources (paths, modes, link targets, file bytes; not times),
/// for the build cache.
pub fn hash_sources(sources: &[Source]) -> Result<String, LayerError> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    fn visit(h: &mut sha2::Sha256, p: &Path, rel: &str) -> Result<(), LayerError> {
        use sha2::Digest as _;
        let meta = fs::symlink_metadata(p).map_err(io_err(p))?;
        h.update(format!("{rel}\0{:o}\0", meta.mode()).as_bytes());
        if meta.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(p).map_err(io_err(p))?.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                visit(
                    h,
                    &e.path(),
                    &format!("{rel}/{}", e.file_name().to_string_lossy()),
                )?;
            }
        } else if meta.file_type().is_symlink() {
            h.update(
                fs::read_link(p)
                    .map_err(io_err(p))?
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if meta.is_file() {
            let mut f = fs::File::open(p).map_err(io_err(p))?;
            io::copy(&mut f, h).map_err(io_err(p))?;
        }
        Ok(())
    }
    for s in sources {
        visit(&mut h, &s.path, &s.rel)?;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        tar::Archive::new(tar_bytes)
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn upper_diff_has_whiteouts_and_skips_runtime_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let up = d.path();
        fs::create_dir_all(up.join("app")).expect("mkdir");
        fs::write(up.join("app/new.txt"), "x").expect("write");
        fs::hard_link(up.join("app/new.txt"), up.join("app/link.txt")).expect("link");
        fs::create_dir_all(up.join("etc")).expect("mkdir");
        fs::write(up.join("etc/hosts"), "").expect("write");
        fs::create_dir_all(up.join("proc")).expect("mkdir");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            up.join("app/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .expect("mknod (root needed)");
        let mut buf = Vec::new();
        diff_upper(up, &mut buf).expect("diff");
        assert_eq!(
            names(&buf),
            [
                "app/",
                "app/.wh.gone",
                "app/link.txt",
                "app/new.txt",
                "etc/"
            ]
        );
        let mut a = tar::Archive::new(&buf[..]);
        let kinds: Vec<tar::EntryType> = a
            .entries()
            .expect("e")
            .map(|e| e.expect("e").header().entry_type())
            .collect();
        assert_eq!(
            kinds[3],
            tar::EntryType::Link,
            "second name of an inode is a hard link"
        );
    }

    #[test]
    fn copy_layer_places_files_and_dirs() {
        let d = tempfile::tempdir().expect("tempdir");
        let ctx = d.path().join("ctx");
        fs::create_dir_all(ctx.join("dir/sub")).expect("mkdir");
        fs::write(ctx.join("a.txt"), "a").expect("write");
        fs::write(ctx.join("dir/sub/b.txt"), "b").expect("write");
        let lower = d.path().join("lower");
        fs::create_dir_all(lower.join("usr")).expect("mkdir");
        let lowers = vec![lower];
        assert_eq!(lookup(&lowers, "/usr"), Some(Kind::Dir));
        assert_eq!(lookup(&lowers, "/nope"), None);
        let srcs = super::super::context::resolve_sources(&ctx, "a.txt").expect("srcs");
        let plan = CopyPlan {
            sources: &srcs,
            dest: "/usr/app/".into(),
            dest_is_dir: true,
            owner: Some(Owner { uid: 5, gid: 6 }),
            chmod: None,
            extract_archives: false,
            lowers: &lowers,
        };
        let mut buf = Vec::new();
        copy_layer(&plan, &mut buf).expect("layer");
        assert_eq!(names(&buf), ["usr/app/", "usr/app/a.txt"]);
        let mut a = tar::Archive::new(&buf[..]);
        let e = a
            .entries()
            .expect("e")
            .nth(1)
            .expect("file")
            .expect("entry");
        assert_eq!(
            (
                e.header().uid().expect("uid"),
                e.header().gid().expect("gid")
            ),
            (5, 6)
        );
        let srcs = super::super::context::resolve_sources(&ctx, "dir").expect("srcs");
        let plan = CopyPlan {
            sources: &srcs,
            dest: "/opt".into(),
            dest_is_dir: true,
            owner: None,
            lowers: &lowers,
            chmod: None,
            extract_archives: false,
        };
        let mut buf = Vec::new();
        copy_layer(&plan, &mut buf).expect("layer");
        assert_eq!(names(&buf), ["opt/", "opt/sub/", "opt/sub/b.txt"]);
        let h1 = hash_sources(&srcs).expect("hash");
        fs::write(ctx.join("dir/sub/b.txt"), "changed").expect("write");
        assert_ne!(h1, hash_sources(&srcs).expect("hash"));
    }
}
