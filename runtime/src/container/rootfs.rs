//! Look-ups inside a container's root filesystem that run on the host (user names,
//! executables). The rootfs belongs to the image author, so every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)`: a symlink such as `/etc/passwd -> /host/secret` resolves
//! inside the rootfs, never outside it.

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotInPath(String),
    #[error("exec: {0:?}: no such file or directory")]
    NoSuchFile(String),
    #[error("exec: {0:?}: permission denied")]
    NotExecutable(String),
    #[error("reading {path} in the container: {reason}")]
    Io { path: String, reason: String },
}

impl LookupError {
    /// Docker's exit code for a process that could not start for this reason.
    pub fn exit_code(&self) -> i32 {
        match self {
            LookupError::NotInPath(_) | LookupError::NoSuchFile(_) => 127,
            LookupError::NotExecutable(_) => 126,
            _ => 125,
        }
    }
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_in(root: &OwnedFd, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(openat2(
        root,
        path,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Reads a small file at `path` (absolute, container view) inside `root`.
pub fn read_file(root: &Path, path: &str) -> io::Result<Vec<u8>> {
    let r = open_root(root)?;
    let fd = open_in(&r, path, OFlags::RDONLY)?;
    let mut buf = Vec::new();
    File::from(fd).take(4 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A resolved `--user`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

fn parse_db(data: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(String::from).collect())
        .collect()
}

/// Resolves `user[:group]` (names or numbers) against the rootfs' /etc/passwd and
/// /etc/group, as Docker does: numeric IDs need no entry, names do. The supplementary
/// groups start with the primary group, as Docker's do (`id` prints `groups=0(root)`).
pub fn resolve_user(root: &Path, spec: &str) -> Result<User, LookupError> {
    let passwd = parse_db(&read_file(root, "/etc/passwd").unwrap_or_default());
    let groups = parse_db(&read_file(root, "/etc/group").unwrap_or_default());
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = passwd
        .iter()
        .find(|e| e.len() >= 4 && (e[0] == u || (u.parse::<u32>().is_ok() && e[2] == u)));
    let mut user = match (entry, u.parse::<u32>()) {
        (Some(e), _) => User {
            uid: e[2].parse().map_err(|_| LookupError::NoUser(u.into()))?,
            gid: e[3].parse().map_err(|_| LookupError::NoUser(u.into()))?,
            additional_gids: vec![],
            home: e.get(5).cloned().unwrap_or_else(|| "/".into()),
        },
        (None, Ok(uid)) => User {
            uid,
            gid: 0,
            additional_gids: vec![],
            home: "/".into(),
        },
        (None, Err(_)) => return Err(LookupError::NoUser(u.into())),
    };
    if let Some(g) = g {
        user.gid = match groups.iter().find(|e| e.len() >= 3 && e[0] == g) {
            Some(e) => e[2].parse().map_err(|_| LookupError::NoGroup(g.into()))?,
            None => g.parse().map_err(|_| LookupError::NoGroup(g.into()))?,
        };
    } else if let Some(name) = entry.map(|e| e[0].clone()) {
        // Supplementary groups the user is listed in.
        user.additional_gids = groups
            .iter()
            .filter(|e| e.len() >= 4 && e[3].split(',').any(|m| m == name))
            .filter_map(|e| e[2].parse().ok())
            .filter(|gid| *gid != user.gid)
            .collect();
    }
    user.additional_gids.insert(0, user.gid);
    Ok(user)
}

fn is_executable(root: &OwnedFd, path: &str) -> Result<bool, io::Error> {
    let fd = open_in(root, path, OFlags::PATH)?;
    let st = rustix::fs::fstat(&fd)?;
    let mode = st.st_mode;
    if mode & libc::S_IFMT == libc::S_IFDIR {
        return Ok(false);
    }
    Ok(mode & 0o111 != 0)
}

/// Checks that `argv0` names an executable inside the rootfs (searching `PATH` from
/// `env` when it has no slash), so a bad command fails with Docker's 126/127 message
/// before any namespace is made. Returns the path that will be executed.
pub fn find_executable(
    root: &Path,
    argv0: &str,
    env: &[String],
    cwd: &str,
) -> Result<String, LookupError> {
    let r = open_root(root).map_err(|e| LookupError::Io {
        path: "/".into(),
        reason: e.to_string(),
    })?;
    let check = |p: &str| -> Result<String, LookupError> {
        match is_executable(&r, p) {
            Ok(true) => Ok(p.to_string()),
            Ok(false) => Err(LookupError::NotExecutable(argv0.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(LookupError::NoSuchFile(argv0.into()))
            }
            Err(e) => Err(LookupError::Io {
                path: p.into(),
                reason: e.to_string(),
            }),
        }
    };
    if argv0.contains('/') {
        let p = if argv0.starts_with('/') {
            argv0.to_string()
        } else {
            format!("{}/{argv0}", cwd.trim_end_matches('/'))
        };
        return check(&p);
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        match check(&format!("{}/{argv0}", dir.trim_end_matches('/'))) {
            Ok(p) => return Ok(p),
            Err(LookupError::NotExecutable(_)) => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied {
        LookupError::NotExecutable(argv0.into())
    } else {
        LookupError::NotInPath(argv0.into())
    })
}

/// Creates directory `path` (and missing parents) inside `root`, resolving every
/// existing component inside the rootfs (a symlinked `WORKDIR` cannot create
/// directories on the host).
pub fn mkdir_all(root: &Path, path: &str) -> io::Result<()> {
    // Dangling symlinks (`/work -> /host/dir`) are followed inside the rootfs too.
    if crate::volume::parse::clean_path(path) == "/" {
        return Ok(());
    }
    match crate::volume::target::resolve_target(root, path, true) {
        Ok(_) => Ok(()),
        Err(crate::volume::target::TargetError::Io { source, .. }) => Err(source),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("etc")).expect("etc");
        fs::create_dir_all(d.path().join("bin")).expect("bin");
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n",
        )
        .expect("passwd");
        fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nstaff:x:50:www\n",
        )
        .expect("group");
        fs::write(d.path().join("bin/sh"), "").expect("sh");
        fs::set_permissions(d.path().join("bin/sh"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        fs::write(d.path().join("bin/noexec"), "").expect("noexec");
        d
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let d = rootfs();
        let u = resolve_user(d.path(), "www").expect("www");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
        assert_eq!(u.additional_gids, vec![33, 50]);
        let n = resolve_user(d.path(), "1000:staff").expect("num");
        assert_eq!((n.gid, n.additional_gids), (50, vec![50]));
        assert_eq!(
            resolve_user(d.path(), "1000").expect("uid").additional_gids,
            vec![0]
        );
        assert_eq!(
            resolve_user(d.path(), "nobody"),
            Err(LookupError::NoUser("nobody".into()))
        );
        assert!(resolve_user(d.path(), "www:nogroup").is_err());
    }

    #[test]
    fn passwd_symlink_cannot_escape() {
        let d = rootfs();
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("passwd"), "evil:x:7:7::/:/bin/sh\n").expect("write");
        fs::remove_file(d.path().join("etc/passwd")).expect("rm");
        symlink(outside.path().join("passwd"), d.path().join("etc/passwd")).expect("symlink");
        assert!(resolve_user(d.path(), "evil").is_err());
    }

    #[test]
    fn mkdir_all_stays_inside() {
        let d = rootfs();
        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), d.path().join("escape")).expect("symlink");
        mkdir_all(d.path(), "/escape/sub/dir").expect("mkdir");
        assert!(
            !outside.path().join("sub").exists(),
            "created outside the rootfs"
        );
        assert!(d
            .path()
            .join(outside.path().strip_prefix("/").expect("abs"))
            .join("sub/dir")
            .is_dir());
        mkdir_all(d.path(), "/a/b/c").expect("mkdir");
        assert!(d.path().join("a/b/c").is_dir());
    }

    #[test]
    fn executables_are_checked_like_docker() {
        let d = rootfs();
        let env = vec!["PATH=/bin".to_string()];
        assert_eq!(
            find_executable(d.path(), "sh", &env, "/").expect("sh"),
            "/bin/sh"
        );
        assert_eq!(
            find_executable(d.path(), "nope", &env, "/")
                .expect_err("nope")
                .exit_code(),
            127
        );
        assert_eq!(
            find_executable(d.path(), "/bin/noexec", &env, "/")
                .expect_err("noexec")
                .exit_code(),
            126
        );
        assert_eq!(
            find_executable(d.path(), "/bin", &env, "/")
                .expect_err("dir")
                .exit_code(),
            126
        );
    }
}
