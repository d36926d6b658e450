//! `skiff shim`: the small process that owns one container run (or one exec).
//!
//! The agent never forks containers from its multi-threaded process. It spawns the
//! shim (a fresh exec of the same binary, in its own session), which:
//! 1. mounts the overlay rootfs and writes the OCI bundle,
//! 2. creates and starts the container through libcontainer (single-threaded, so the
//!    forks libcontainer makes are safe),
//! 3. reports `{"pid": N}` (or an error) on its stdout pipe, then detaches from it,
//! 4. relays stdio between the process, the log file and clients on its unix socket,
//! 5. reaps the process, writes `exit.json` atomically, cleans up, and exits.
//!
//! Shims outlive the agent: a restarted agent finds them through their sockets.

pub mod exec;
pub mod frame;
pub mod init;
pub mod logfile;
pub mod relay;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

/// The one line a shim writes on its report pipe.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    #[serde(default)]
    pub pid: i32,
    /// Created but waiting for the first attach connection to start.
    #[serde(default)]
    pub waiting: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Docker's exit code for the failure (125 engine, 126 not executable, 127 not found).
    #[serde(default)]
    pub exit_code: i32,
}

/// Writes the report line to fd 1 and points fd 1 at /dev/null, so the agent's pipe
/// sees EOF and nothing the shim does later can block on it.
pub(crate) fn report(r: &Report) {
    let mut out = std::io::stdout();
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
}

/// Registers the compiled program for `profile` from the agent's cache (see
/// [`crate::container::seccomp_cache`]). A cache that fails only costs the compile:
/// libcontainer then builds the filter itself, so this never fails a container.
pub(crate) fn precompile_seccomp(
    dir: Option<&std::path::Path>,
    profile: Option<&libcontainer::oci_spec::runtime::LinuxSeccomp>,
) {
    let (Some(dir), Some(profile)) = (dir, profile) else {
        return;
    };
    let _span = tracing::info_span!("seccomp").entered();
    match crate::container::seccomp_cache::register(dir, profile) {
        Ok(source) => tracing::debug!(?source, "seccomp program registered"),
        Err(e) => tracing::warn!(error = %e, "seccomp cache unavailable, libcontainer compiles"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Lookup(#[from] crate::container::rootfs::LookupError),
    #[error(transparent)]
    Spec(#[from] crate::container::spec::SpecError),
    #[error(transparent)]
    Security(#[from] crate::container::security::SecurityError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("{0}")]
    Runtime(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ShimError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ShimError::Lookup(e) => e.exit_code(),
            ShimError::Runtime(msg)
                if msg.contains("executable") || msg.contains("No such file") =>
            {
                127
            }
            _ => 125,
        }
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Io { what, source }
}

/// A pipe pair as owned fds (read, write), close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ShimError::Setup(format!("pipe: {e}")))
}

/// Receives one fd sent with SCM_RIGHTS on a unix stream (the pty master that
/// libcontainer sends on the console socket).
pub(crate) fn recv_fd(sock: &std::os::unix::net::UnixStream) -> Result<OwnedFd, ShimError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| ShimError::Setup(format!("receiving console fd: {e}")))?;
    for c in msg
        .cmsgs()
        .map_err(|e| ShimError::Setup(format!("console cmsg: {e}")))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(ShimError::Setup("console socket sent no fd".into()))
}

/// Hands the heap pages freed after start-up (task and spec parsing, libcontainer's
/// set-up) back to the kernel: a shim then idles for the container's whole life, and
/// those pages would otherwise stay private to every shim.
pub(crate) fn release_free_memory() {
    crate::heap::release_free_memory();
}

/// Makes the calling process a child subreaper, so the container's processes are
/// reparented to the shim (and reaped by it) rather than to init.
pub(crate) fn become_subreaper() -> Result<(), ShimError> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(ShimError::Setup(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
