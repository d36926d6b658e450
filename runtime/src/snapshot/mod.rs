//! Layer snapshots and container root filesystems.
//!
//! Each image layer is unpacked once, into `<root>/snapshots/<chain id>/fs`, where the
//! chain ID (as in the OCI spec) names the layer together with everything below it. A
//! container's rootfs is an overlayfs mount with those directories as read-only lowers
//! and a per-container upper/work pair that is deleted with the container.
//!
//! Unpacking happens in a temporary directory that is renamed into place only after
//! the layer's content matched its diff ID, so a snapshot that exists is complete.

pub mod unpack;

use crate::digest::{Digest, HashingReader};
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("layer content does not match its diff ID: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("unpacking layer {diff_id}: {source}")]
    Unpack {
        diff_id: Digest,
        source: unpack::UnpackError,
    },
    #[error("mounting overlay at {}: {source}", target.display())]
    Mount { target: PathBuf, source: nix::Error },
    #[error("overlay mount options for {layers} layers exceed the kernel's page-size limit")]
    TooManyLayers { layers: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Owns `<root>/snapshots`.
pub struct Snapshotter {
    root: PathBuf,
}

impl Snapshotter {
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        // Half-unpacked layers from a crash are never renamed into place; drop them.
        if let Ok(rd) = fs::read_dir(root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("tmp-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// OCI chain ID: the diff ID for the first layer, else sha256("parent diff_id").
    pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        }
    }

    pub fn exists(&self, chain: &Digest) -> bool {
        self.layer_dir(chain).is_dir()
    }

    /// The unpacked directory of a layer chain.
    pub fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join(chain.hex()).join("fs")
    }

    /// Unpacks a (possibly compressed) layer blob as snapshot `chain`, verifying that
    /// the uncompressed stream hashes to `diff_id`.
    pub fn unpack(
        &self,
        chain: &Digest,
        blob: impl Read + 'static,
        diff_id: &Digest,
    ) -> Result<(), SnapshotError> {
        let tmp = self
            .root
            .join(format!("tmp-{:016x}", rand::random::<u64>()));
        let result = (|| {
            fs::create_dir_all(tmp.join("fs")).map_err(io_err(&tmp))?;
            let input = unpack::decompressed(blob).map_err(io_err(&tmp))?;
            let mut hr = HashingReader::new(input);
            unpack::unpack_layer(&mut hr, &tmp.join("fs")).map_err(|source| {
                SnapshotError::Unpack {
                    diff_id: diff_id.clone(),
                    source,
                }
            })?;
            io::copy(&mut hr, &mut io::sink()).map_err(io_err(&tmp))?;
            let (actual, _) = hr.finish();
            if actual != *diff_id {
                return Err(SnapshotError::DiffIdMismatch {
                    expected: diff_id.clone(),
                    actual,
                });
            }
            let dest = self.root.join(chain.hex());
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            crate::fsutil::sync_dir(&self.root).map_err(io_err(&self.root))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Deletes every snapshot whose chain ID (hex) is not in `live`; returns bytes freed.
    pub fn remove_unreferenced(&self, live: &BTreeSet<String>) -> Result<u64, SnapshotError> {
        let mut freed = 0;
        for e in fs::read_dir(&self.root)
            .map_err(io_err(&self.root))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.len() == 64 && !live.contains(&name) {
                freed += crate::fsutil::disk_usage(&e.path());
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(freed)
    }
}

/// Mounts an overlay of `lowers` (topmost first) with `upper`/`work` at `target`.
///
/// Lower paths are given relative to their common parent, after `chdir` there, so long
/// layer lists fit the kernel's one-page limit on mount data. The chdir makes this
/// suitable only for single-threaded callers (the shim), which is where it runs.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SnapshotError> {
    use nix::mount::{mount, MsFlags};
    let base = lowers
        .first()
        .and_then(|l| l.parent())
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let rel: Vec<String> = lowers
        .iter()
        .map(|l| {
            l.strip_prefix(&base)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| l.display().to_string())
        })
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        rel.join(":"),
        upper.display(),
        work.display()
    );
    if opts.len() >= 4096 {
        return Err(SnapshotError::TooManyLayers {
            layers: lowers.len(),
        });
    }
    let cwd = std::env::current_dir().ok();
    std::env::set_current_dir(&base).map_err(io_err(&base))?;
    let res = mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    );
    if let Some(c) = cwd {
        let _ = std::env::set_current_dir(c);
    }
    res.map_err(|source| SnapshotError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// Unmounts `target` if it is mounted (lazy, so a busy mount cannot wedge cleanup).
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(SnapshotError::Mount {
            target: target.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_matches_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(Snapshotter::chain_id(None, &a), a);
        assert_eq!(
            Snapshotter::chain_id(Some(&a), &b),
            Digest::of(format!("{a} {b}").as_bytes())
        );
    }

    #[test]
    fn unpack_refuses_wrong_diff_id_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Snapshotter::open(dir.path()).expect("open");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"hi"[..]).expect("append");
        let data = b.into_inner().expect("tar");
        let wrong = Digest::of(b"not it");
        let err = s
            .unpack(&wrong, io::Cursor::new(data.clone()), &wrong)
            .expect_err("must fail");
        assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
        let right = Digest::of(&data);
        s.unpack(&right, io::Cursor::new(data), &right)
            .expect("unpack");
        assert_eq!(
            fs::read(s.layer_dir(&right).join("hello")).expect("read"),
            b"hi"
        );
    }
}
