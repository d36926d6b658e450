//! `skiff service ...` and the shared task/service tables used by `stack`.

use crate::client::{exit, status};
use crate::output;
use anyhow::Result;
use clap::{Args, Subcommand};
use skiff_proto::orchestrator as pb;
use std::time::{Duration, Instant};

type Orch = pb::orchestrator_client::OrchestratorClient<tonic::transport::Channel>;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a service.
    ///
    /// Example: skiff service create --name web --replicas 3 busybox httpd -f -p 80
    Create(CreateArgs),
    /// List services.
    ///
    /// Example: skiff service ls
    #[command(alias = "list")]
    Ls,
    /// List the tasks of a service.
    ///
    /// Example: skiff service ps web
    Ps(PsArgs),
    /// Show a service's spec and update status as JSON.
    ///
    /// Example: skiff service inspect web
    Inspect(NameArgs),
    /// Set the replica count of services (NAME=N ...).
    ///
    /// Example: skiff service scale web=5 api=2
    Scale(ScaleArgs),
    /// Update a service (a rolling update when the task template changes).
    ///
    /// Example: skiff service update --image busybox:2 web
    Update(UpdateArgs),
    /// Roll a service back to its previous spec.
    ///
    /// Example: skiff service rollback web
    Rollback(NameArgs),
    /// Remove services.
    ///
    /// Example: skiff service rm web
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Fetch the logs of every task of a service on this node.
    ///
    /// Example: skiff service logs -f web
    Logs(LogsArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value_t = 1)]
    pub replicas: u64,
    /// replicated or global.
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    #[arg(long = "constraint")]
    pub constraint: Vec<String>,
    #[arg(long = "network")]
    pub network: Vec<String>,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub image_and_cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[arg(required = true)]
    pub pairs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long = "env-add")]
    pub env_add: Vec<String>,
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Replace every task even if nothing changed.
    #[arg(long)]
    pub force: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[arg(short = 'f', long)]
    pub follow: bool,
    pub name: String,
}

pub async fn orchestrator(host: &str) -> Result<Orch> {
    Ok(Orch::new(crate::client::channel(host).await?))
}

pub async fn run(host: &str, cmd: &ServiceCommand) -> Result<i32> {
    let mut c = orchestrator(host).await?;
    match cmd {
        ServiceCommand::Create(a) => {
            let mut spec = serde_json::json!({
                "name": a.name,
                "mode": if a.mode == "global" { serde_json::json!("global") } else { serde_json::json!({"replicated": {"replicas": a.replicas}}) },
                "template": {
                    "image": a.image_and_cmd[0],
                    "command": if a.image_and_cmd.len() > 1 { serde_json::json!(a.image_and_cmd[1..]) } else { serde_json::Value::Null },
                    "env": a.env,
                    "networks": a.network.iter().map(|n| (n.clone(), vec![a.name.clone()])).collect::<std::collections::BTreeMap<_, _>>(),
                },
                "placement": {"constraints": a.constraint},
            });
            spec = fill_service_defaults(spec);
            let r = c
                .service_create(pb::ServiceCreateRequest {
                    spec_json: spec.to_string(),
                })
                .await
                .map_err(status)?;
            println!("{}", r.into_inner().name);
            Ok(0)
        }
        ServiceCommand::Ls => print_services(&mut c, "").await,
        ServiceCommand::Ps(a) => print_tasks(&mut c, &a.name, "", a.quiet, a.no_trunc).await,
        ServiceCommand::Inspect(a) => {
            let r = c
                .service_inspect(pb::ServiceRef {
                    name: a.name.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let v: serde_json::Value = serde_json::from_str(&r.json)?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!([v]))?);
            Ok(0)
        }
        ServiceCommand::Scale(a) => {
            for p in &a.pairs {
                let (name, n) = p.split_once('=').ok_or_else(|| {
                    exit(
                        125,
                        format!("invalid scale specifier {p:?}: want SERVICE=REPLICAS"),
                    )
                })?;
                let replicas = n
                    .parse()
                    .map_err(|_| exit(125, format!("invalid replicas value {n:?}")))?;
                c.service_scale(pb::ServiceScaleRequest {
                    name: name.into(),
                    replicas,
                })
                .await
                .map_err(status)?;
                println!("{name} scaled to {replicas}");
            }
            Ok(0)
        }
        ServiceCommand::Update(a) => {
            c.service_update(pb::ServiceUpdateRequest {
                name: a.name.clone(),
                image: a.image.clone().unwrap_or_default(),
                env_add: a.env_add.clone(),
                env_rm: a.env_rm.clone(),
                replicas: a.replicas.map(|r| r as i64).unwrap_or(-1),
                force: a.force,
                spec_json: String::new(),
            })
            .await
            .map_err(status)?;
            println!("{}", a.name);
            Ok(0)
        }
        ServiceCommand::Rollback(a) => {
            c.service_rollback(pb::ServiceRef {
                name: a.name.clone(),
            })
            .await
            .map_err(status)?;
            println!("{}", a.name);
            Ok(0)
        }
        ServiceCommand::Rm(a) => {
            let mut rc = 0;
            for n in &a.names {
                match c.service_remove(pb::ServiceRef { name: n.clone() }).await {
                    Ok(_) => println!("{n}"),
                    Err(s) => {
                        eprintln!("Error response from agent: {}", s.message());
                        rc = 1;
                    }
                }
            }
            Ok(rc)
        }
        ServiceCommand::Logs(a) => {
            // Tasks on this node: their containers' logs, prefixed like Docker's.
            let tasks = c
                .task_list(pb::TaskListRequest {
                    service: a.name.clone(),
                    stack: String::new(),
                    all: true,
                })
                .await
                .map_err(status)?
                .into_inner()
                .tasks;
            let engine = crate::client::connect(host).await?;
            let mut handles = Vec::new();
            for t in tasks.into_iter().filter(|t| !t.container_id.is_empty()) {
                let mut e = engine.clone();
                let follow = a.follow;
                handles.push(tokio::spawn(async move {
                    let req = skiff_proto::engine::LogsRequest {
                        id: t.container_id.clone(),
                        follow,
                        tail: -1,
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    };
                    if let Ok(s) = e.container_logs(req).await {
                        let mut s = s.into_inner();
                        while let Ok(Some(m)) = s.message().await {
                            print!(
                                "{}.{}@{}    | {}",
                                t.service,
                                t.slot,
                                t.node,
                                String::from_utf8_lossy(&m.data)
                            );
                        }
                    }
                }));
            }
            for h in handles {
                let _ = h.await;
            }
            Ok(0)
        }
    }
}

/// Fills the defaults `skiff-stack` would fill for a stack service.
fn fill_service_defaults(mut spec: serde_json::Value) -> serde_json::Value {
    let defaults = serde_json::json!({
        "stack": "", "labels": {}, "ports": [], "endpoint_mode": "vip",
        "restart_policy": {"condition": "any", "delay_ms": 5000, "max_attempts": 0, "window_ms": 0},
        "update_config": {"parallelism": 1, "delay_ms": 0, "failure_action": "pause", "monitor_ms": 5000, "max_failure_ratio": 0.0, "order": "stop-first"},
        "rollback_config": {"parallelism": 1, "delay_ms": 0, "failure_action": "pause", "monitor_ms": 5000, "max_failure_ratio": 0.0, "order": "stop-first"},
    });
    let tdefaults = serde_json::json!({
        "entrypoint": null, "labels": {}, "hostname": "", "user": "", "working_dir": "", "mounts": [],
        "limits": {"nano_cpus": 0, "memory_bytes": 0, "pids": 0}, "reservations": {"nano_cpus": 0, "memory_bytes": 0, "pids": 0},
        "healthcheck": null, "stop_signal": "", "stop_grace_period_ms": 10000,
    });
    if let (Some(o), Some(d)) = (spec.as_object_mut(), defaults.as_object()) {
        for (k, v) in d {
            o.entry(k.clone()).or_insert(v.clone());
        }
        if let Some(p) = o.get_mut("placement").and_then(|p| p.as_object_mut()) {
            p.entry("spread").or_insert(serde_json::json!([]));
            p.entry("max_replicas_per_node")
                .or_insert(serde_json::json!(0));
        }
        if let (Some(t), Some(td)) = (
            o.get_mut("template").and_then(|t| t.as_object_mut()),
            tdefaults.as_object(),
        ) {
            for (k, v) in td {
                t.entry(k.clone()).or_insert(v.clone());
            }
        }
    }
    spec
}

pub async fn print_services(c: &mut Orch, stack: &str) -> Result<i32> {
    let r = c
        .service_list(pb::ServiceListRequest {
            stack: stack.into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if !stack.is_empty() && r.services.is_empty() {
        eprintln!("Nothing found in stack: {stack}");
        return Ok(0);
    }
    let mut rows = vec![["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
        .map(String::from)
        .to_vec()];
    for s in r.services {
        let id: String = s.id.chars().take(12).collect();
        rows.push(vec![
            id,
            s.name,
            s.mode,
            format!("{}/{}", s.running, s.desired),
            s.image,
            s.ports,
        ]);
    }
    print!("{}", output::align(&rows));
    Ok(0)
}

pub async fn print_tasks(
    c: &mut Orch,
    service: &str,
    stack: &str,
    quiet: bool,
    no_trunc: bool,
) -> Result<i32> {
    let r = c
        .task_list(pb::TaskListRequest {
            service: service.into(),
            stack: stack.into(),
            all: true,
        })
        .await
        .map_err(status)?
        .into_inner();
    if quiet {
        for t in r.tasks {
            println!("{}", t.id);
        }
        return Ok(0);
    }
    let mut rows = vec![[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
    ]
    .map(String::from)
    .to_vec()];
    let now = chrono::Utc::now().timestamp_millis();
    for t in r.tasks {
        let id: String = if no_trunc {
            t.id.clone()
        } else {
            t.id.chars().take(12).collect()
        };
        let ago = skiff_agent::humanize::duration((now - t.timestamp_ms) / 1000);
        let mut state = format!("{} {} ago", capitalize(&t.state), ago);
        if !t.health.is_empty() && t.state == "running" {
            state = format!("{} ({})", state, t.health);
        }
        let mut err = if t.error.is_empty() && t.state == "pending" {
            t.message.clone()
        } else {
            t.error.clone()
        };
        if !no_trunc && err.chars().count() > 60 {
            err = format!("{}…", err.chars().take(58).collect::<String>());
        }
        rows.push(vec![
            id,
            t.name,
            t.image,
            t.node,
            capitalize(&t.desired),
            state,
            err,
        ]);
    }
    print!("{}", output::align(&rows));
    Ok(0)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// `--detach=false`: live progress per service until every service runs its desired
/// replicas; exits non-zero with the reason when that does not happen in time.
pub async fn wait_converged(c: &mut Orch, stack: &str, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    let tty = crate::commands::stdio::is_tty();
    let mut last = String::new();
    loop {
        let services = c
            .service_list(pb::ServiceListRequest {
                stack: stack.into(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .services;
        let mut lines = Vec::new();
        let mut done = true;
        for s in &services {
            let ok = s.running == s.desired
                && !matches!(s.update_state.as_str(), "updating" | "rollback_started");
            done &= ok;
            lines.push(format!(
                "{}: {}/{} running{}",
                s.name,
                s.running,
                s.desired,
                if ok { " ✔" } else { "" }
            ));
        }
        let text = lines.join("\n");
        if text != last {
            if tty && !last.is_empty() {
                print!("\x1b[{}A\x1b[J", last.lines().count());
            }
            println!("{text}");
            last = text;
        }
        if done {
            println!("Stack {stack} converged");
            return Ok(0);
        }
        if let Some(s) = services
            .iter()
            .find(|s| s.update_state == "paused" || s.update_state == "rollback_completed")
        {
            return Err(exit(
                1,
                format!("service {} did not converge: {}", s.name, s.update_message),
            ));
        }
        if Instant::now() >= deadline {
            let tasks = c
                .task_list(pb::TaskListRequest {
                    service: String::new(),
                    stack: stack.into(),
                    all: false,
                })
                .await
                .map_err(status)?
                .into_inner()
                .tasks;
            let reason = tasks
                .iter()
                .find(|t| t.state != "running")
                .map(|t| {
                    format!(
                        "{}: {} {}",
                        t.name,
                        t.state,
                        if t.error.is_empty() {
                            &t.message
                        } else {
                            &t.error
                        }
                    )
                })
                .unwrap_or_else(|| "tasks are still starting".into());
            return Err(exit(
                1,
                format!("stack {stack} did not converge within {timeout:?}: {reason}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
