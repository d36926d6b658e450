//! Crash-safe file writes: every piece of on-disk state goes through here so an agent
//! killed at any instant leaves either the old or the new version, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself is durable.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path)?;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Replaces `path` with `data` atomically (temp file, rename) without waiting for the
/// disk: for files that are rebuilt or reconciled when the agent starts (runtime state
/// under the exec root, generated `hosts`/`resolv.conf`, a container's run state), where
/// a power cut may cost the last update but never tears the file. A killed agent loses
/// nothing (the page cache outlives it), and on ext4's default `data=ordered` the data
/// reaches the disk before the rename does. Each fsync costs 1-20 ms on a busy disk,
/// and `run --rm` wrote twenty of them.
pub fn replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path)?;
    fs::write(&tmp, data)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// [`replace`] for a value serialised as pretty JSON.
pub fn replace_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    replace(path, &data)
}

/// `.NAME.tmp-PID` beside `path`.
fn temp_sibling(path: &Path) -> io::Result<std::path::PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok(dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory so entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Marks `dir` as the top of a directory hierarchy (`chattr +T`), so ext2/3/4 spread
/// its subdirectories over the filesystem's block groups (the Orlov allocator) instead
/// of packing them next to it. Containers' directories come and go by the thousand;
/// on ext4 without a journal, allocating an inode skips every inode of the group freed
/// in the last half minute or so, and with all of them in one group each new file
/// scanned past thousands. Other filesystems refuse the flag: best effort, the answer
/// says whether it is set.
pub fn spread_subdirs(dir: &Path) -> bool {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(f) = File::open(dir) else {
        return false;
    };
    match ioctl_getflags(&f) {
        Ok(flags) if flags.contains(IFlags::TOPDIR) => true,
        Ok(flags) => ioctl_setflags(&f, flags | IFlags::TOPDIR).is_ok(),
        Err(_) => false,
    }
}

/// Creates a directory (and parents) with the given mode on the leaf.
pub fn create_dir_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Total size in bytes of regular files under `path`, not following symlinks; hard
/// links are counted once per inode.
pub fn disk_usage(path: &Path) -> u64 {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for entry in rd.flatten() {
            let Ok(md) = entry.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                walk(&entry.path(), seen, total);
            } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
                *total += md.len();
            }
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(path, &mut seen, &mut total);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        for write in [write_atomic, replace] {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = dir.path().join("state.json");
            write(&p, b"one").expect("write");
            write(&p, b"two").expect("write");
            assert_eq!(fs::read(&p).expect("read"), b"two");
            let names: Vec<_> = fs::read_dir(dir.path())
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names.len(), 1, "temp files left: {names:?}");
        }
    }

    #[test]
    fn spread_subdirs_sets_the_flag_where_the_filesystem_has_it() {
        use rustix::fs::{ioctl_getflags, IFlags};
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("containers");
        fs::create_dir(&d).expect("mkdir");
        let flags = || ioctl_getflags(File::open(&d).expect("open")).ok();
        let set = spread_subdirs(&d);
        // The answer is the truth, whichever filesystem the temp dir is on (ext4 sets
        // it; tmpfs has no such flag), and asking again changes nothing.
        assert_eq!(set, flags().is_some_and(|f| f.contains(IFlags::TOPDIR)));
        assert_eq!(spread_subdirs(&d), set);
        assert!(!spread_subdirs(&dir.path().join("missing")));
    }

    #[test]
    fn replace_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("gone").join("state.json");
        assert!(replace_json(&p, &serde_json::json!({"a": 1})).is_err());
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
    }

    #[test]
    fn read_json_missing_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v: Option<serde_json::Value> = read_json(&dir.path().join("nope")).expect("read");
        assert!(v.is_none());
    }
}
