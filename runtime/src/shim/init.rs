//! The shim of one container run (`skiff shim --task FILE`).

use super::frame::{read_frame, Frame};
use super::logfile::LogWriter;
use super::relay::{self, Stdio, Stream};
use super::{io, pipe, recv_fd, report, Report, ShimError};
use crate::container::spec::{oci_spec, RunSpec};
use crate::container::{rootfs, ExitInfo};
use crate::{fsutil, snapshot};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Runs one container to completion; returns the shim's own exit status.
pub fn main(task: &Path) -> i32 {
    let run: RunSpec = match fsutil::read_json(task) {
        Ok(Some(r)) => r,
        Ok(None) => {
            report(&Report {
                error: format!("{}: no such task file", task.display()),
                exit_code: 125,
                ..Default::default()
            });
            return 1;
        }
        Err(e) => {
            report(&Report {
                error: e.to_string(),
                exit_code: 125,
                ..Default::default()
            });
            return 1;
        }
    };
    let span = tracing::info_span!("shim", container_id = %run.id);
    let _enter = span.enter();
    match prepare(&run) {
        Ok(prepared) => {
            serve(run, prepared);
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "container failed to start");
            let exit = ExitInfo {
                exit_code: e.exit_code(),
                oom_killed: false,
                finished_at: Some(chrono::Utc::now()),
                error: e.to_string(),
            };
            let _ = fsutil::replace_json(&run.exit_path, &exit);
            let _ = snapshot::unmount(&run.rootfs);
            let _ = fs::remove_file(&run.socket_path);
            report(&Report {
                error: e.to_string(),
                exit_code: e.exit_code(),
                ..Default::default()
            });
            1
        }
    }
}

struct Prepared {
    container: Container,
    pid: Pid,
    stdio: Stdio,
    listener: std::os::unix::net::UnixListener,
}

fn lc(e: libcontainer::error::LibcontainerError) -> ShimError {
    ShimError::Runtime(e.to_string())
}

fn prepare(run: &RunSpec) -> Result<Prepared, ShimError> {
    super::become_subreaper()?;
    for d in [&run.upper, &run.work, &run.rootfs] {
        fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    let step = tracing::info_span!("overlay").entered();
    // A rootfs left mounted by a shim that was killed is stale; start clean.
    snapshot::unmount(&run.rootfs)?;
    snapshot::mount_overlay(&run.lowers, &run.upper, &run.work, &run.rootfs)?;
    drop(step);

    let step = tracing::info_span!("bundle").entered();

    let user = rootfs::resolve_user(
        &run.rootfs,
        if run.user.is_empty() { "0" } else { &run.user },
    )?;
    let cwd = if run.cwd.is_empty() {
        "/"
    } else {
        run.cwd.as_str()
    };
    rootfs::mkdir_all(&run.rootfs, cwd).map_err(io(format!("creating working directory {cwd}")))?;
    let argv0 = run
        .args
        .first()
        .ok_or_else(|| ShimError::Setup("no command specified".into()))?;
    rootfs::find_executable(&run.rootfs, argv0, &run.env, cwd)?;

    // User mounts: copy-up and symlink-safe targets, before anything runs inside.
    let mut run_mounts = run.clone();
    run_mounts.volumes =
        crate::volume::target::prepare_mounts(&run.rootfs, &run.volumes_with_init())
            .map_err(|e| ShimError::Setup(e.to_string()))?;
    let spec = oci_spec(&run_mounts, &user)?;
    spec.save(run.bundle.join("config.json"))
        .map_err(|e| ShimError::Setup(format!("writing config.json: {e}")))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    super::precompile_seccomp(run.seccomp_cache.as_deref(), seccomp);

    let _ = fs::remove_file(&run.socket_path);
    let listener = std::os::unix::net::UnixListener::bind(&run.socket_path)
        .map_err(io(format!("binding {}", run.socket_path.display())))?;
    fs::set_permissions(&run.socket_path, fs::Permissions::from_mode(0o600))
        .map_err(io("chmod socket"))?;

    drop(step);

    let step = tracing::info_span!("create").entered();
    let mut builder = ContainerBuilder::new(run.id.clone(), SyscallType::default())
        .with_root_path(&run.runtime_root)
        .map_err(lc)?;
    let console_path = run.bundle.join("console.sock");
    let mut console = None;
    let mut stdio = Stdio {
        outputs: vec![],
        stdin: None,
        pty: None,
    };
    if run.tty {
        let _ = fs::remove_file(&console_path);
        console = Some(
            std::os::unix::net::UnixListener::bind(&console_path)
                .map_err(io("binding console socket"))?,
        );
        builder = builder.with_console_socket(Some(&console_path));
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin: OwnedFd = if run.open_stdin {
            let (in_r, in_w) = pipe()?;
            stdio.stdin = Some(in_w);
            in_r
        } else {
            fs::File::open("/dev/null")
                .map_err(io("opening /dev/null"))?
                .into()
        };
        builder = builder
            .with_stdin(stdin)
            .with_stdout(out_w)
            .with_stderr(err_w);
        stdio.outputs = vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)];
    }
    let container = builder
        .validate_id()
        .map_err(lc)?
        .as_init(&run.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(lc)?;
    // Limits libcontainer 0.7 does not apply (it never sets memory.oom_control).
    if let Err(e) = crate::cgroup::Cgroup::new(&run.cgroups_path).apply_after_create(&run.resources)
    {
        let mut c = container;
        let _ = c.delete(true);
        return Err(ShimError::Setup(e.to_string()));
    }
    if let Some(l) = console {
        let (conn, _) = l.accept().map_err(io("accepting console socket"))?;
        let master = recv_fd(&conn)?;
        let _ = fs::remove_file(&console_path);
        if let Some((w, h)) = run.console_size {
            relay::resize(&master, w, h);
        }
        stdio.stdin = Some(master.try_clone().map_err(io("dup pty"))?);
        stdio.pty = Some(master.try_clone().map_err(io("dup pty"))?);
        stdio.outputs = vec![(master, Stream::Stdout)];
    }
    let pid = container
        .pid()
        .ok_or_else(|| ShimError::Runtime("container has no init pid".into()))?;
    drop(step);
    Ok(Prepared {
        container,
        pid,
        stdio,
        listener,
    })
}

/// Reads the cgroup's OOM-kill counter (v1 `memory.oom_control`, v2 `memory.events`).
fn oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let candidates = [
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        (
            Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
            "oom_kill ",
        ),
    ];
    for (p, key) in candidates {
        if let Ok(s) = fs::read_to_string(&p) {
            if let Some(n) = s
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
            {
                return n;
            }
        }
    }
    0
}

fn serve(run: RunSpec, p: Prepared) {
    let Prepared {
        mut container,
        pid,
        stdio,
        listener,
    } = p;
    super::release_free_memory();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&Report {
                error: format!("starting shim runtime: {e}"),
                exit_code: 125,
                ..Default::default()
            });
            let _ = container.delete(true);
            return;
        }
    };
    let mut relayed = false;
    rt.block_on(async {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
            return;
        };
        let mut first = None;
        if run.wait_attach {
            report(&Report {
                pid: pid.as_raw(),
                waiting: true,
                ..Default::default()
            });
            // The agent connects at once; if it died meanwhile, give up rather than hang.
            match tokio::time::timeout(Duration::from_secs(60), accept_start(&listener)).await {
                Ok(Some(c)) => first = Some(c),
                _ => {
                    tracing::warn!("no attach client arrived; starting detached");
                }
            }
        }
        let started = tracing::info_span!("start").in_scope(|| container.start());
        let start_error = started.as_ref().err().map(|e| e.to_string());
        if let Some(msg) = start_error.clone() {
            if !run.wait_attach {
                report(&Report {
                    error: msg.clone(),
                    exit_code: 125,
                    ..Default::default()
                });
            }
            tracing::error!(error = %msg, "start failed; killing the created container");
            // Its init would wait forever for a start that will not come, and this shim
            // with it, long after the agent recorded the failure and forgot the
            // container (found by the chaos test). Killed, the relay below reaps it and
            // cleans up (cgroup, mount, socket) as after any exit.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        } else {
            if !run.wait_attach {
                report(&Report {
                    pid: pid.as_raw(),
                    ..Default::default()
                });
            }
            tracing::info!(pid = pid.as_raw(), "container started");
        }
        let log = LogWriter::open(&run.log_path, run.log_rotation).ok();
        let exit_path = run.exit_path.clone();
        let cg = run.cgroups_path.clone();
        let rootfs_dir = run.rootfs.clone();
        let socket_path = run.socket_path.clone();
        // After the exit is announced: libcontainer's state and the cgroups (an rmdir
        // per v1 hierarchy), and the rootfs, whose unmount syncs the whole upper
        // filesystem (overlayfs does on unmount) and so can take as long as the host's
        // dirty data takes to write. The agent waits for this shim to end before it
        // starts the container again or deletes its directories.
        let cleanup = move || {
            let _step = tracing::info_span!("cleanup").entered();
            if let Err(e) = container.delete(true) {
                tracing::warn!(error = %e, "deleting container state");
            }
            let _ = snapshot::unmount(&rootfs_dir);
        };
        relay::run(
            pid,
            stdio,
            listener,
            log,
            first,
            move |o| {
                let _step = tracing::info_span!("exit").entered();
                // Like Docker: any OOM kill in the container's cgroup marks the run
                // OOMKilled, even when the victim was a child and init exited by itself.
                let oom = oom_kills(&cg) > 0;
                let exit = match &start_error {
                    Some(e) => ExitInfo {
                        exit_code: 125,
                        oom_killed: false,
                        finished_at: Some(chrono::Utc::now()),
                        error: e.clone(),
                    },
                    None => ExitInfo {
                        exit_code: o.code,
                        oom_killed: oom,
                        finished_at: Some(chrono::Utc::now()),
                        error: String::new(),
                    },
                };
                if let Err(e) = fsutil::replace_json(&exit_path, &exit) {
                    tracing::error!(error = %e, "writing exit status");
                }
                // Before the exit is announced, so no client connects to a dead run.
                let _ = fs::remove_file(&socket_path);
                tracing::info!(exit_code = o.code, oom_killed = oom, "container exited");
                String::new()
            },
            cleanup,
        )
        .await;
        relayed = true;
    });
    if !relayed {
        let _ = fs::remove_file(&run.socket_path);
    }
}

/// Accepts the attach client that asked for the start, and reads its Hello and Start.
async fn accept_start(
    listener: &tokio::net::UnixListener,
) -> Option<(tokio::net::UnixStream, bool, bool)> {
    let (mut conn, stdin, output) = relay::accept_hello(listener).await?;
    match read_frame(&mut conn).await {
        Ok(Some(Frame::Start)) => Some((conn, stdin, output)),
        _ => None,
    }
}
