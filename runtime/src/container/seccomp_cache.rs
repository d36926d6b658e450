//! Seccomp programs compiled once per profile and kept in the agent's exec root.
//!
//! libseccomp takes about 7 ms to build Docker's default profile (three architectures)
//! into BPF, in every container and every exec: a third of a container's start on this
//! kind of machine. The shim instead looks the profile up here, compiles it only on a
//! miss, and registers the program with (our patched) libcontainer, whose init process
//! then loads it as it is (see `vendor/README.md`).
//!
//! A cache file is named for a hash of the profile, the kernel release (libseccomp's
//! output depends on what the running kernel supports) and this format's version, and
//! holds the SHA-256 of the program followed by the program, so a torn or altered file
//! is never loaded: it is compiled again instead. The exec root is normally a tmpfs, so
//! the cache starts empty after a reboot.

use crate::fsutil;
use libcontainer::oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Bumped when the file layout or the key changes.
const FORMAT: &str = "skiff-seccomp-v1";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("compiling seccomp profile: {0}")]
    Compile(#[from] libcontainer::seccomp::SeccompError),
    #[error("writing seccomp cache {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding seccomp profile: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Where the program came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from a valid cache file.
    Cached,
    /// Compiled now (and written to the cache).
    Compiled,
}

/// The cache file for `profile` under `dir`.
pub fn path_for(dir: &Path, profile: &LinuxSeccomp) -> Result<PathBuf, CacheError> {
    let mut key = Sha256::new();
    key.update(FORMAT.as_bytes());
    key.update([0]);
    key.update(kernel_release().as_bytes());
    key.update([0]);
    key.update(serde_json::to_vec(profile)?);
    Ok(dir.join(format!("{:x}.bpf", key.finalize())))
}

/// Loads the program for `profile` from `dir` (compiling and storing it on a miss) and
/// registers it for the containers this process creates.
pub fn register(dir: &Path, profile: &LinuxSeccomp) -> Result<Source, CacheError> {
    let (bpf, source) = load_or_compile(dir, profile)?;
    libcontainer::seccomp::set_precompiled(profile.clone(), bpf)?;
    Ok(source)
}

/// The program for `profile`, from the cache or freshly compiled.
pub fn load_or_compile(
    dir: &Path,
    profile: &LinuxSeccomp,
) -> Result<(Vec<u8>, Source), CacheError> {
    let path = path_for(dir, profile)?;
    if let Some(bpf) = std::fs::read(&path).ok().and_then(|d| verified(&d)) {
        return Ok((bpf, Source::Cached));
    }
    let bpf = libcontainer::seccomp::compile_bpf(profile)?;
    let mut file = Sha256::digest(&bpf).to_vec();
    file.extend_from_slice(&bpf);
    let write = |path: &Path| {
        fsutil::create_dir_mode(dir, 0o700)?;
        fsutil::write_atomic(path, &file)
    };
    write(&path).map_err(|source| CacheError::Write { path, source })?;
    Ok((bpf, Source::Compiled))
}

/// The program in a cache file, if its checksum matches.
fn verified(file: &[u8]) -> Option<Vec<u8>> {
    let (sum, bpf) = file.split_at_checked(32)?;
    (!bpf.is_empty() && Sha256::digest(bpf).as_slice() == sum).then(|| bpf.to_vec())
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::security;

    fn profile() -> LinuxSeccomp {
        security::default_seccomp(&security::default_capabilities())
    }

    #[test]
    fn a_miss_compiles_and_stores_then_a_hit_reads_the_same_program() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = profile();
        let (compiled, src) = load_or_compile(dir.path(), &p).expect("compile");
        assert_eq!(src, Source::Compiled);
        assert_eq!(compiled.len() % 8, 0);
        let (cached, src) = load_or_compile(dir.path(), &p).expect("cached");
        assert_eq!(src, Source::Cached);
        assert_eq!(cached, compiled);
        // The compiler is deterministic, so the cache holds what a fresh compile gives.
        assert_eq!(
            libcontainer::seccomp::compile_bpf(&p).expect("again"),
            compiled
        );
    }

    #[test]
    fn a_corrupt_or_truncated_file_is_compiled_again_never_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = profile();
        let (good, _) = load_or_compile(dir.path(), &p).expect("compile");
        let path = path_for(dir.path(), &p).expect("path");
        let full = std::fs::read(&path).expect("read");
        for bad in [
            full[..full.len() - 8].to_vec(), // truncated at an instruction boundary
            {
                let mut f = full.clone();
                let last = f.len() - 1;
                f[last] ^= 1; // one bit changed in the program
                f
            },
            vec![],
        ] {
            std::fs::write(&path, &bad).expect("write");
            let (bpf, src) = load_or_compile(dir.path(), &p).expect("recompile");
            assert_eq!(src, Source::Compiled);
            assert_eq!(bpf, good);
            assert_eq!(std::fs::read(&path).expect("read"), full, "file repaired");
        }
    }

    #[test]
    fn different_profiles_get_different_files() {
        let dir = Path::new("/x");
        let a = profile();
        let caps = security::apply_cap_changes(
            security::default_capabilities(),
            &["SYS_ADMIN".to_string()],
            &[],
        )
        .expect("caps");
        let b = security::default_seccomp(&caps);
        assert_ne!(a, b);
        assert_ne!(path_for(dir, &a).expect("a"), path_for(dir, &b).expect("b"));
        assert_eq!(
            path_for(dir, &a).expect("a"),
            path_for(dir, &a.clone()).expect("a")
        );
    }

    /// Denies one syscall with EPERM, allows everything else.
    fn deny(name: &str) -> LinuxSeccomp {
        use libcontainer::oci_spec::runtime::{
            LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
        };
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec![name.to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .build()
                .expect("rule")])
            .build()
            .expect("profile")
    }

    /// Installs `profile` as libcontainer's init would, on a thread of its own (a
    /// filter without TSYNC binds only its thread), and reports which syscalls fail.
    fn denied_after_initialize(profile: LinuxSeccomp) -> (bool, bool, bool) {
        std::thread::spawn(move || {
            libcontainer::seccomp::initialize_seccomp(&profile).expect("initialize");
            // SAFETY: syscalls that only read process ids (getsid(0): the caller's).
            let fails = |nr| unsafe { libc::syscall(nr, 0) } == -1;
            (
                fails(libc::SYS_getppid),
                fails(libc::SYS_getpgrp),
                fails(libc::SYS_getsid),
            )
        })
        .join()
        .expect("thread")
    }

    // The only test that registers a program: registration is once per process.
    #[test]
    #[cfg_attr(not(skiff_root), ignore = "needs root: loading a seccomp program")]
    fn initialize_seccomp_loads_the_registered_program_for_an_equal_profile_only() {
        let says_getppid = deny("getppid");
        let program_denying_getpgrp =
            libcontainer::seccomp::compile_bpf(&deny("getpgrp")).expect("compile");
        // Registered under a profile it was not compiled from, so the test can tell
        // which program got loaded.
        assert!(libcontainer::seccomp::set_precompiled(
            says_getppid.clone(),
            program_denying_getpgrp
        )
        .expect("register"));
        assert_eq!(
            denied_after_initialize(says_getppid),
            (false, true, false),
            "an equal profile loads the registered program"
        );
        assert_eq!(
            denied_after_initialize(deny("getsid")),
            (false, false, true),
            "another profile is compiled as before"
        );
        assert!(
            libcontainer::seccomp::set_precompiled(deny("getsid"), vec![0; 8])
                .is_ok_and(|set| !set),
            "the first registration stays"
        );
    }
}
