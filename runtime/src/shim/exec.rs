//! The shim of one `exec` (`skiff shim --task FILE --exec FILE`): joins a running
//! container's namespaces and cgroup through libcontainer's tenant builder and relays
//! the process's stdio over its socket like the container shim does.

use super::logfile::LogWriter;
use super::relay::{self, Stdio, Stream};
use super::{io, pipe, recv_fd, report, Report, ShimError};
use crate::container::spec::RunSpec;
use crate::container::{rootfs, security};
use crate::fsutil;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One exec request, as the agent writes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    pub exec_id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
    pub privileged: bool,
    pub socket_path: PathBuf,
    /// Initial terminal size (columns, rows).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

/// Runs one exec to completion; returns the shim's own exit status.
pub fn main(task: &Path, exec: &Path) -> i32 {
    let loaded: Result<(RunSpec, ExecSpec), ShimError> = (|| {
        let run = fsutil::read_json(task)
            .map_err(io("reading task"))?
            .ok_or_else(|| ShimError::Setup("task file missing".into()))?;
        let ex = fsutil::read_json(exec)
            .map_err(io("reading exec"))?
            .ok_or_else(|| ShimError::Setup("exec file missing".into()))?;
        Ok((run, ex))
    })();
    let (run, ex) = match loaded {
        Ok(v) => v,
        Err(e) => {
            report(&Report {
                error: e.to_string(),
                exit_code: 125,
                ..Default::default()
            });
            return 1;
        }
    };
    let span = tracing::info_span!("exec", container_id = %run.id, exec_id = %ex.exec_id);
    let _enter = span.enter();
    let res = start(&run, &ex, exec);
    let _ = fs::remove_file(exec);
    match res {
        Ok((pid, stdio, listener)) => {
            super::release_free_memory();
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return 1;
            };
            rt.block_on(async move {
                if listener.set_nonblocking(true).is_err() {
                    return;
                }
                let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
                    return;
                };
                report(&Report {
                    pid: pid.as_raw(),
                    ..Default::default()
                });
                // The process is already running: hold its output (in the pipe or pty)
                // until the agent's client is connected, so nothing is lost.
                let first = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    relay::accept_hello(&listener),
                )
                .await
                .ok()
                .flatten();
                relay::run(
                    pid,
                    stdio,
                    listener,
                    None::<LogWriter>,
                    first,
                    |_| String::new(),
                    || {},
                )
                .await;
            });
            let _ = fs::remove_file(&ex.socket_path);
            0
        }
        Err(e) => {
            let _ = fs::remove_file(&ex.socket_path);
            report(&Report {
                error: e.to_string(),
                exit_code: e.exit_code(),
                ..Default::default()
            });
            1
        }
    }
}

type Started = (nix::unistd::Pid, Stdio, std::os::unix::net::UnixListener);

fn start(run: &RunSpec, ex: &ExecSpec, exec_file: &Path) -> Result<Started, ShimError> {
    super::become_subreaper()?;
    let user_spec = if ex.user.is_empty() {
        if run.user.is_empty() {
            "0"
        } else {
            run.user.as_str()
        }
    } else {
        ex.user.as_str()
    };
    let user = rootfs::resolve_user(&run.rootfs, user_spec)?;
    let cwd = if !ex.cwd.is_empty() {
        ex.cwd.as_str()
    } else if !run.cwd.is_empty() {
        run.cwd.as_str()
    } else {
        "/"
    };
    let mut env = run.env.clone();
    for e in &ex.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    if ex.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let argv0 = ex
        .args
        .first()
        .ok_or_else(|| ShimError::Setup("no command specified".into()))?;
    rootfs::find_executable(&run.rootfs, argv0, &env, cwd)?;
    let caps = if ex.privileged || run.privileged {
        security::all_capabilities()
    } else {
        security::apply_cap_changes(
            security::default_capabilities(),
            &run.cap_add,
            &run.cap_drop,
        )?
    };
    let names: Vec<serde_json::Value> = caps
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let effective = if user.uid == 0 { names.clone() } else { vec![] };
    let process = json!({
        "terminal": ex.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": ex.args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": names, "permitted": names, "inheritable": [], "effective": effective},
    });
    let mut process = process;
    // See spec.rs: noNewPrivileges must be absent, not false, for seccomp to load.
    if run.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }
    let process_path = exec_file.with_extension("process.json");
    fsutil::replace_json(&process_path, &process).map_err(io("writing process.json"))?;

    let _ = fs::remove_file(&ex.socket_path);
    let listener = std::os::unix::net::UnixListener::bind(&ex.socket_path)
        .map_err(io("binding exec socket"))?;
    fs::set_permissions(&ex.socket_path, fs::Permissions::from_mode(0o600))
        .map_err(io("chmod socket"))?;

    // libcontainer applies the container's profile (from its config.json) to the exec.
    if run.seccomp_cache.is_some() {
        if let Ok(spec) =
            libcontainer::oci_spec::runtime::Spec::load(run.bundle.join("config.json"))
        {
            let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
            super::precompile_seccomp(run.seccomp_cache.as_deref(), profile);
        }
    }
    let mut builder = ContainerBuilder::new(run.id.clone(), SyscallType::default())
        .with_root_path(&run.runtime_root)
        .map_err(|e| ShimError::Runtime(e.to_string()))?;
    let mut stdio = Stdio {
        outputs: vec![],
        stdin: None,
        pty: None,
    };
    let console_path = ex.socket_path.with_extension("console");
    let mut console = None;
    if ex.tty {
        let _ = fs::remove_file(&console_path);
        console = Some(
            std::os::unix::net::UnixListener::bind(&console_path)
                .map_err(io("binding console socket"))?,
        );
        builder = builder.with_console_socket(Some(&console_path));
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin: OwnedFd = if ex.stdin {
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
    let pid = builder
        .as_tenant()
        .with_process(Some(&process_path))
        .with_detach(true)
        .build()
        .map_err(|e| ShimError::Runtime(e.to_string()));
    let _ = fs::remove_file(&process_path);
    let pid = pid?;
    if let Some(l) = console {
        let (conn, _) = l.accept().map_err(io("accepting console socket"))?;
        let master = recv_fd(&conn)?;
        let _ = fs::remove_file(&console_path);
        if let Some((w, h)) = ex.console_size {
            relay::resize(&master, w, h);
        }
        stdio.stdin = Some(master.try_clone().map_err(io("dup pty"))?);
        stdio.pty = Some(master.try_clone().map_err(io("dup pty"))?);
        stdio.outputs = vec![(master, Stream::Stdout)];
    }
    Ok((pid, stdio, listener))
}
