//! `--init` (Docker's `HostConfig.Init`): a tiny init (tini) runs as the container's
//! PID 1, reaps orphaned zombies and forwards signals to the user's command, its child.
//! The host's static tini is bind-mounted read-only at Docker's path.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the init appears inside the container (Docker's path).
pub const CONTAINER_PATH: &str = "/sbin/docker-init";

/// Looked up in this order; a dynamically linked binary cannot run in an arbitrary
/// image, so only static ones count.
pub const CANDIDATES: [&str; 3] = [
    "/usr/bin/docker-init",
    "/usr/bin/tini-static",
    "/usr/bin/tini",
];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("--init: no static init binary found (looked for {}; {}): install the `tini` package, which provides /usr/bin/tini-static", CANDIDATES.join(", "), .0)]
    NotFound(String),
    #[error("--init: the configured init_path {0} cannot be used: {1}")]
    Configured(String, String),
}

/// The host path of the static init to mount, canonical (symlinks resolved): the
/// configured one (which must be static too), else the first static candidate.
pub fn find(configured: Option<&Path>) -> Result<PathBuf, InitError> {
    match configured {
        Some(p) => {
            let real = std::fs::canonicalize(p)
                .map_err(|e| InitError::Configured(p.display().to_string(), e.to_string()))?;
            match is_static_elf(&real) {
                Ok(true) => Ok(real),
                Ok(false) => Err(InitError::Configured(
                    p.display().to_string(),
                    "it is dynamically linked; a container cannot load its libraries".into(),
                )),
                Err(e) => Err(InitError::Configured(
                    p.display().to_string(),
                    e.to_string(),
                )),
            }
        }
        None => find_in(&CANDIDATES.map(Path::new)),
    }
}

fn find_in(candidates: &[&Path]) -> Result<PathBuf, InitError> {
    let mut seen = Vec::new();
    for c in candidates {
        let Ok(p) = std::fs::canonicalize(c) else {
            continue;
        };
        match is_static_elf(&p) {
            Ok(true) => return Ok(p),
            Ok(false) => seen.push(format!("{} is dynamically linked", c.display())),
            Err(e) => seen.push(format!("{}: {e}", c.display())),
        }
    }
    Err(InitError::NotFound(if seen.is_empty() {
        "none exists".into()
    } else {
        seen.join("; ")
    }))
}

/// An ELF executable without a `PT_INTERP` program header needs no dynamic loader.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an ELF executable");
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    // Program headers sit near the start; 64 KiB is far more than any init needs.
    f.by_ref().take(64 * 1024).read_to_end(&mut buf)?;
    if buf.len() < 64 || &buf[..4] != b"\x7fELF" {
        return Err(bad());
    }
    let is64 = buf[4] == 2;
    let le = buf[5] == 1;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let b = buf.get(off..off + n)?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if le { b[n - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if is64 {
        (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2))
    } else {
        (rd(0x1c, 4), rd(0x2a, 2), rd(0x2c, 2))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Err(bad());
    };
    for i in 0..phnum {
        let off = usize::try_from(phoff + i * phentsize).map_err(|_| bad())?;
        const PT_INTERP: u64 = 3;
        if rd(off, 4).ok_or_else(bad)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The container's argv under the init: `/sbin/docker-init -- ARGV...`.
pub fn wrap_args(args: &[String]) -> Vec<String> {
    let mut v = vec![CONTAINER_PATH.to_string(), "--".to_string()];
    v.extend(args.iter().cloned());
    v
}

/// The read-only bind mount of `host` at [`CONTAINER_PATH`].
pub fn mount(host: &Path) -> crate::volume::MountPoint {
    crate::volume::MountPoint {
        kind: crate::volume::MountKind::Bind,
        source: host.to_path_buf(),
        destination: CONTAINER_PATH.into(),
        rw: false,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().expect("exe");
        assert!(!is_static_elf(&me).expect("elf"));
        assert!(find_in(&[&me]).is_err());
        let e = find(Some(&me)).expect_err("dynamic").to_string();
        assert!(
            e.contains("dynamically linked") && e.contains("init_path"),
            "{e}"
        );
        let msg = find_in(&[Path::new("/nonexistent/tini")])
            .expect_err("none")
            .to_string();
        assert!(msg.contains("tini-static"), "{msg}");
        // A machine with tini-static installed finds it.
        if Path::new("/usr/bin/tini-static").exists() {
            let p = find(None).expect("static tini");
            assert_eq!(
                find(Some(Path::new("/usr/bin/tini-static"))).expect("configured"),
                std::fs::canonicalize("/usr/bin/tini-static").expect("canonical")
            );
            assert!(is_static_elf(&p).expect("elf"));
        }
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn argv_runs_under_the_init() {
        assert_eq!(
            wrap_args(&["sh".into(), "-c".into(), "exit 3".into()]),
            ["/sbin/docker-init", "--", "sh", "-c", "exit 3"]
        );
    }
}
