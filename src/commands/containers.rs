//! Container commands: run, create, start, stop, restart, kill, rm, ps, exec, logs,
//! attach, wait, top, rename, inspect.

use super::stdio::{self, Input, RawMode};
use crate::cli::*;
use crate::client::{exit, status};
use crate::output::{self, Format};
use anyhow::{Context, Result};
use serde_json::json;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

/// `-e KEY=VAL` as given; `-e KEY` copies KEY from this shell (dropped when unset).
fn env_list(env: &[String], files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading env file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.split('=').next().unwrap_or_default();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(exit(
                    125,
                    format!("{}:{}: invalid variable name {key:?}", f.display(), n + 1),
                ));
            }
            push_env(&mut out, line);
        }
    }
    for e in env {
        push_env(&mut out, e);
    }
    Ok(out)
}

fn push_env(out: &mut Vec<String>, e: &str) {
    if e.contains('=') {
        out.push(e.to_string());
    } else if let Ok(v) = std::env::var(e) {
        out.push(format!("{e}={v}"));
    }
}

fn labels(l: &[String]) -> HashMap<String, String> {
    l.iter()
        .map(|x| match x.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (x.clone(), String::new()),
        })
        .collect()
}

fn config_of(a: &RunArgs) -> Result<(String, ContainerConfig)> {
    let image = a.image_and_cmd[0].clone();
    let (name, count) = match a.restart.split_once(':') {
        Some((n, c)) => (
            n.to_string(),
            c.parse::<u32>()
                .map_err(|_| exit(125, format!("invalid restart policy {:?}", a.restart)))?,
        ),
        None => (a.restart.clone(), 0),
    };
    let entrypoint = a.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            vec![]
        } else {
            vec![e.clone()]
        }
    });
    let config = ContainerConfig {
        image: image.clone(),
        cmd: a.image_and_cmd[1..].to_vec(),
        entrypoint_set: entrypoint.is_some(),
        entrypoint: entrypoint.unwrap_or_default(),
        env: env_list(&a.env, &a.env_file)?,
        working_dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        tty: a.tty,
        open_stdin: a.interactive,
        labels: labels(&a.label),
        restart_policy: Some(RestartPolicy {
            name,
            maximum_retry_count: count,
        }),
        auto_remove: a.rm,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        security_opt: a.security_opt.clone(),
        network_mode: a.network.clone().unwrap_or_default(),
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout.unwrap_or(-1),
        net: Some(a.net.options()),
        binds: a.mounts.volume.clone(),
        mounts: a.mounts.mount.clone(),
        volumes_from: a.mounts.volumes_from.clone(),
        tmpfs: a.mounts.tmpfs.clone(),
        resources: Some(a.limits.to_proto()?),
        log_opts: a.log_opt.clone(),
        init: a.init,
        devices: a.device.clone(),
        device_cgroup_rules: a.device_cgroup_rule.clone(),
        sysctls: sysctls(&a.sysctl)?,
        shm_size: match &a.shm_size {
            None => 0,
            Some(s) => skiff_runtime::volume::parse::parse_bytes(s).ok_or_else(|| {
                exit(
                    125,
                    format!("invalid argument {s:?} for \"--shm-size\" flag: invalid size: '{s}'"),
                )
            })?,
        },
        ipc_mode: a.ipc.clone().unwrap_or_default(),
        pid_mode: a.pid.clone().unwrap_or_default(),
    };
    Ok((image, config))
}

/// `--sysctl KEY=VALUE`s; which keys are allowed is the engine's to say.
fn sysctls(flags: &[String]) -> Result<std::collections::HashMap<String, String>> {
    flags
        .iter()
        .map(|f| {
            skiff_runtime::container::namespaces::parse_sysctl(f).map_err(|e| {
                exit(
                    125,
                    format!("invalid argument {f:?} for \"--sysctl\" flag: {e}"),
                )
            })
        })
        .collect()
}

pub async fn create(c: &mut Client, a: &RunArgs) -> Result<String> {
    let (_, config) = config_of(a)?;
    let r = c
        .container_create(CreateRequest {
            name: a.name.clone().unwrap_or_default(),
            config: Some(config),
        })
        .await
        .map_err(status)?
        .into_inner();
    for w in r.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok(r.id)
}

/// Attaches the local terminal to a container (starting it when `start`); returns
/// the container's exit code.
async fn attach_session(
    c: &mut Client,
    id: &str,
    start: bool,
    stdin: bool,
    tty: bool,
) -> Result<i32> {
    let (tx, rx) = mpsc::channel::<AttachInput>(64);
    let size = if tty { stdio::term_size() } else { None };
    tx.send(AttachInput {
        id: id.to_string(),
        start,
        stdin,
        resize_width: size.map(|s| s.0).unwrap_or(0),
        resize_height: size.map(|s| s.1).unwrap_or(0),
        ..Default::default()
    })
    .await
    .ok();
    let out = c
        .container_attach(ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    let _raw = (tty && stdin && stdio::is_tty()).then(RawMode::enable);
    stdio::forward_input(stdin, tty, tx.clone(), |i| match i {
        Input::Data(data) => AttachInput {
            data,
            ..Default::default()
        },
        Input::Eof => AttachInput {
            close_stdin: true,
            ..Default::default()
        },
        Input::Resize(w, h) => AttachInput {
            resize_width: w,
            resize_height: h,
            ..Default::default()
        },
    });
    // Without a tty, signals go to the container as Docker's --sig-proxy does.
    if !tty {
        let mut c2 = c.clone();
        let id2 = id.to_string();
        tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term)) = (
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            ) else {
                return;
            };
            loop {
                let sig = tokio::select! { _ = int.recv() => "INT", _ = term.recv() => "TERM" };
                let _ = c2
                    .container_kill(KillRequest {
                        id: id2.clone(),
                        signal: sig.into(),
                    })
                    .await;
            }
        });
    }
    let code = stdio::drain_output(out).await;
    drop(tx);
    code
}

pub async fn run(c: &mut Client, a: &RunArgs) -> Result<i32> {
    if a.detach && a.rm && a.restart != "no" {
        return Err(exit(
            125,
            "conflicting options: cannot specify both --restart and --rm",
        ));
    }
    let id = create(c, a).await?;
    if a.detach {
        c.container_start(StartRequest { id: id.clone() })
            .await
            .map_err(status)?;
        println!("{id}");
        return Ok(0);
    }
    attach_session(c, &id, true, a.interactive, a.tty).await
}

pub async fn start(c: &mut Client, a: &StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(exit(
                125,
                "you cannot start and attach multiple containers at once",
            ));
        }
        let doc = inspect_doc(c, &a.containers[0]).await?;
        let tty = doc["Config"]["Tty"].as_bool().unwrap_or(false);
        return attach_session(c, &a.containers[0], true, a.interactive, tty).await;
    }
    each(&a.containers, |id| {
        let mut c = c.clone();
        async move { c.container_start(StartRequest { id }).await.map(|_| ()) }
    })
    .await
}

/// Runs `f` for every container, printing each name on success (Docker's behaviour)
/// and every error; the exit code is 1 if any failed.
async fn each<F, Fut>(names: &[String], f: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for n in names {
        match f(n.clone()).await {
            Ok(()) => println!("{n}"),
            Err(s) => {
                eprintln!("Error response from agent: {}", s.message());
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn stop(c: &mut Client, a: &StopArgs, restart: bool) -> Result<i32> {
    each(&a.containers, |id| {
        let mut c = c.clone();
        let req = StopRequest {
            id,
            timeout: a.time.unwrap_or(0),
            timeout_set: a.time.is_some(),
        };
        async move {
            if restart {
                c.container_restart(req).await.map(|_| ())
            } else {
                c.container_stop(req).await.map(|_| ())
            }
        }
    })
    .await
}

pub async fn kill(c: &mut Client, a: &KillArgs) -> Result<i32> {
    each(&a.containers, |id| {
        let mut c = c.clone();
        let signal = a.signal.clone();
        async move {
            c.container_kill(KillRequest { id, signal })
                .await
                .map(|_| ())
        }
    })
    .await
}

pub async fn rm(c: &mut Client, a: &RmArgs) -> Result<i32> {
    each(&a.containers, |id| {
        let mut c = c.clone();
        let (force, volumes) = (a.force, a.volumes);
        async move {
            c.container_remove(RemoveRequest { id, force, volumes })
                .await
                .map(|_| ())
        }
    })
    .await
}

fn trunc_command(cmd: &str, no_trunc: bool) -> String {
    let q = format!("\"{cmd}\"");
    if no_trunc || cmd.chars().count() <= 20 {
        q
    } else {
        format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
    }
}

/// `ps`'s default table: template field and Docker's header for each column.
pub const PS_COLUMNS: [(&str, &str); 7] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
];

pub async fn ps(c: &mut Client, a: &PsArgs) -> Result<i32> {
    let list = c
        .container_list(ListRequest {
            all: a.all,
            filters: a.filter.clone(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .containers;
    if a.quiet {
        for s in &list {
            println!("{}", if a.no_trunc { &s.id[..] } else { &s.id[..12] });
        }
        return Ok(0);
    }
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            json!({
                "ID": if a.no_trunc { s.id.clone() } else { s.id[..12].to_string() },
                "Image": s.image,
                "Command": trunc_command(&s.command, a.no_trunc),
                "CreatedAt": chrono::DateTime::from_timestamp(s.created_unix, 0).map(|t| t.to_string()).unwrap_or_default(),
                "RunningFor": output::ago(s.created_unix),
                "Ports": s.ports,
                "State": s.state,
                "Status": s.status,
                "Names": s.names.join(","),
                "Labels": s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            })
        })
        .collect();
    let format = Format::parse(a.format.as_deref())?;
    output::print_rows(&format, &PS_COLUMNS, &rows)?;
    Ok(0)
}

pub async fn exec(c: &mut Client, a: &ExecArgs) -> Result<i32> {
    let (tx, rx) = mpsc::channel::<ExecInput>(64);
    let size = if a.tty { stdio::term_size() } else { None };
    tx.send(ExecInput {
        id: a.container.clone(),
        cmd: a.cmd.clone(),
        tty: a.tty,
        stdin: a.interactive,
        env: env_list(&a.env, &[])?,
        working_dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        detach: a.detach,
        privileged: a.privileged,
        resize_width: size.map(|s| s.0).unwrap_or(0),
        resize_height: size.map(|s| s.1).unwrap_or(0),
        ..Default::default()
    })
    .await
    .ok();
    let out = c
        .container_exec(ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    if a.detach {
        return Ok(0);
    }
    let _raw = (a.tty && a.interactive && stdio::is_tty()).then(RawMode::enable);
    stdio::forward_input(a.interactive, a.tty, tx.clone(), |i| match i {
        Input::Data(data) => ExecInput {
            data,
            ..Default::default()
        },
        Input::Eof => ExecInput {
            close_stdin: true,
            ..Default::default()
        },
        Input::Resize(w, h) => ExecInput {
            resize_width: w,
            resize_height: h,
            ..Default::default()
        },
    });
    let code = stdio::drain_output(out).await;
    drop(tx);
    code
}

pub async fn logs(c: &mut Client, a: &LogsArgs) -> Result<i32> {
    let tail = if a.tail == "all" || a.tail.is_empty() {
        -1
    } else {
        a.tail.parse::<i64>().map_err(|_| {
            exit(
                125,
                format!("invalid --tail {:?}: a number or \"all\"", a.tail),
            )
        })?
    };
    let req = LogsRequest {
        id: a.container.clone(),
        follow: a.follow,
        tail,
        timestamps: a.timestamps,
        since_unix_nanos: a
            .since
            .as_deref()
            .map(output::parse_time)
            .transpose()?
            .unwrap_or(0),
        until_unix_nanos: a
            .until
            .as_deref()
            .map(output::parse_time)
            .transpose()?
            .unwrap_or(0),
        stdout: true,
        stderr: true,
    };
    let mut s = c.container_logs(req).await.map_err(status)?.into_inner();
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(m) = s.message().await.map_err(status)? {
        let mut data = Vec::new();
        if a.timestamps {
            let t = chrono::DateTime::from_timestamp_nanos(m.time_unix_nanos);
            data.extend_from_slice(
                t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                    .as_bytes(),
            );
            data.push(b' ');
        }
        data.extend_from_slice(&m.data);
        if m.stream == 2 {
            err.write_all(&data)?;
        } else {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(0)
}

pub async fn attach(c: &mut Client, a: &AttachArgs) -> Result<i32> {
    let doc = inspect_doc(c, &a.container).await?;
    let tty = doc["Config"]["Tty"].as_bool().unwrap_or(false);
    let open_stdin = doc["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    attach_session(c, &a.container, false, open_stdin && !a.no_stdin, tty).await
}

pub async fn wait(c: &mut Client, a: &NamesArgs) -> Result<i32> {
    let mut rc = 0;
    for n in &a.containers {
        match c.container_wait(NameRequest { id: n.clone() }).await {
            Ok(r) => println!("{}", r.into_inner().status_code),
            Err(s) => {
                eprintln!("Error response from agent: {}", s.message());
                rc = 1;
            }
        }
    }
    Ok(rc)
}

pub async fn top(c: &mut Client, a: &TopArgs) -> Result<i32> {
    let r = c
        .container_top(TopRequest {
            id: a.container.clone(),
            ps_args: a.ps_args.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut rows = vec![r.titles];
    rows.extend(r.processes.into_iter().map(|p| p.cells));
    // Docker's `top` table has a minimum column width of 20, not the usual 10.
    print!("{}", output::align_min(&rows, 20));
    Ok(0)
}

pub async fn rename(c: &mut Client, a: &RenameArgs) -> Result<i32> {
    c.container_rename(RenameRequest {
        id: a.container.clone(),
        new_name: a.new_name.clone(),
    })
    .await
    .map_err(status)?;
    Ok(0)
}

async fn inspect_doc(c: &mut Client, name: &str) -> Result<serde_json::Value> {
    let d = c
        .container_inspect(NameRequest {
            id: name.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(serde_json::from_str(&d.json)?)
}

/// `inspect`: containers first, then images (or only the `--type` asked for).
pub async fn inspect(c: &mut Client, a: &InspectArgs, default_kind: Option<&str>) -> Result<i32> {
    let kind = a.kind.as_deref().or(default_kind);
    let mut docs = Vec::new();
    let mut rc = 0;
    for n in &a.names {
        let mut found = None;
        if kind != Some("image") {
            if let Ok(d) = c.container_inspect(NameRequest { id: n.clone() }).await {
                found = Some(d.into_inner().json);
            }
        }
        if found.is_none() && kind != Some("container") {
            if let Ok(d) = c.image_inspect(NameRequest { id: n.clone() }).await {
                found = Some(d.into_inner().json);
            }
        }
        match found {
            Some(j) => docs.push(serde_json::from_str::<serde_json::Value>(&j)?),
            None => {
                eprintln!("Error: No such object: {n}");
                rc = 1;
            }
        }
    }
    crate::output::print_docs(&docs, a.format.as_deref())?;
    Ok(rc)
}
