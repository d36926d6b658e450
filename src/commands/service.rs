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
    /// Example: skiff service ls --format '{{.Name}} {{.Replicas}}'
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks of a service.
    ///
    /// Example: skiff service ps web
    Ps(PsArgs),
    /// Show services' specs and update status as a JSON array.
    ///
    /// Example: skiff service inspect web
    Inspect(NamesArgs),
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
    /// Fetch the logs of every task of a service, from every node running one.
    ///
    /// Lines are prefixed like Docker's (`web.2.TASKID@NODE    | `); stderr lines go
    /// to stderr. With -f, tasks that start later (scale-up, replacements) are
    /// followed too. A node that cannot be reached is named in a warning on stderr.
    /// A task ID (or a unique prefix of one, as `service ps` shows it) narrows the
    /// output to that task.
    ///
    /// Example: skiff service logs -f --tail 20 web
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
pub struct LsArgs {
    /// Only display IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// table, json, or a Go template over .ID .Name .Mode .Replicas .Image .Ports.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
    /// table, json, or a Go template over .ID .Name .Image .Node .DesiredState
    /// .CurrentState .Error.
    #[arg(long)]
    pub format: Option<String>,
    /// Services (names or IDs); their tasks share one table, as Docker prints them.
    #[arg(required = true, value_name = "SERVICE")]
    pub names: Vec<String>,
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
    /// Follow log output, including tasks that start later.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines from the end of each task's log ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only logs since (RFC 3339, unix seconds, or a duration like 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Do not include task IDs in the line prefix.
    #[arg(long)]
    pub no_task_ids: bool,
    /// Do not truncate task IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print the lines as they are, with no task prefix.
    #[arg(long)]
    pub raw: bool,
    /// A service (name or ID), or one task (ID or unique ID prefix).
    #[arg(value_name = "SERVICE|TASK")]
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
            let spec: skiff_controller::model::ServiceSpec = serde_json::from_value(spec)?;
            let r = c
                .service_create(pb::ServiceCreateRequest {
                    spec: Some(spec.into()),
                })
                .await
                .map_err(status)?;
            println!("{}", r.into_inner().name);
            Ok(0)
        }
        ServiceCommand::Ls(a) => print_services(&mut c, "", a.quiet, a.format.as_deref()).await,
        ServiceCommand::Ps(a) => {
            let opts = TaskListOpts {
                quiet: a.quiet,
                no_trunc: a.no_trunc,
                format: a.format.as_deref(),
            };
            let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
            print_tasks(&mut c, &names, "", &opts).await
        }
        ServiceCommand::Inspect(a) => {
            let mut out = Vec::new();
            for name in &a.names {
                let r = c
                    .service_inspect(pb::ServiceRef { name: name.clone() })
                    .await
                    .map_err(status)?
                    .into_inner();
                out.push(inspect_doc(r)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
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
                spec: None,
                version: 0,
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
        ServiceCommand::Logs(a) => logs(&mut c, a).await,
    }
}

/// `service logs`: the manager gathers every node's lines; this prints them.
async fn logs(c: &mut Orch, a: &LogsArgs) -> Result<i32> {
    use std::io::Write;
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
    let since_unix_nanos = a
        .since
        .as_deref()
        .map(output::parse_time)
        .transpose()?
        .unwrap_or(0);
    let mut s = c
        .service_logs(pb::ServiceLogsRequest {
            service: a.name.clone(),
            follow: a.follow,
            tail,
            since_unix_nanos,
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut incomplete = false;
    while let Some(m) = s.message().await.map_err(status)? {
        if !m.warning.is_empty() {
            incomplete = true;
            writeln!(err, "warning: incomplete log stream: {}", m.warning)?;
            continue;
        }
        let line = log_line(&m, a);
        if m.stream == 2 {
            err.write_all(&line)?;
        } else {
            out.write_all(&line)?;
            out.flush()?;
        }
    }
    // Like Docker: what could be read was printed, but the command did not get it all.
    Ok(if incomplete { 1 } else { 0 })
}

/// One line as Docker prints it: `[TIME ]SERVICE.SLOT.TASK@NODE<pad>    | DATA`.
fn log_line(m: &pb::ServiceLogChunk, a: &LogsArgs) -> Vec<u8> {
    let mut line = Vec::with_capacity(m.data.len() + 64);
    if a.timestamps {
        let t = chrono::DateTime::from_timestamp_nanos(m.time_unix_nanos);
        line.extend_from_slice(
            t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        line.push(b' ');
    }
    if !a.raw {
        let mut name = format!("{}.{}", m.service, m.slot);
        if !a.no_task_ids {
            name.push('.');
            if a.no_trunc {
                name.push_str(&m.task_id);
            } else {
                name.extend(m.task_id.chars().take(12));
            }
        }
        let pad = (m.slot_width as usize).saturating_sub(m.slot.to_string().len());
        line.extend_from_slice(format!("{name}@{}{}    | ", m.node, " ".repeat(pad)).as_bytes());
    }
    line.extend_from_slice(&m.data);
    line
}

/// Fills the defaults `skiff-stack` would fill for a stack service.
/// `service inspect`'s document of one service: its ID, version and specs as the
/// controller's model serializes them.
fn inspect_doc(s: pb::Service) -> Result<serde_json::Value> {
    use skiff_controller::model::{Service, Stored};
    let s: Stored<Service> = s.try_into()?;
    Ok(serde_json::json!({
        "ID": s.id, "Version": {"Index": s.version}, "Spec": s.value.spec,
        "PreviousSpec": s.value.previous, "UpdateStatus": s.value.update, "Generation": s.value.generation,
    }))
}

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

/// `service ls` / `stack services` columns: (template field, table header).
const SERVICE_COLUMNS: [(&str, &str); 6] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

/// One `service ls` row with Docker's template field names.
fn service_row(s: &pb::ServiceSummary) -> serde_json::Value {
    serde_json::json!({
        "ID": s.id.chars().take(12).collect::<String>(),
        "Name": s.name,
        "Mode": s.mode,
        "Replicas": format!("{}/{}", s.running, s.desired),
        "Image": s.image,
        "Ports": s.ports,
    })
}

pub async fn print_services(
    c: &mut Orch,
    stack: &str,
    quiet: bool,
    format: Option<&str>,
) -> Result<i32> {
    let format = output::Format::parse(format)?;
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
    if quiet {
        for s in r.services {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    let rows: Vec<_> = r.services.iter().map(service_row).collect();
    output::print_rows(&format, &SERVICE_COLUMNS, &rows)?;
    Ok(0)
}

/// How `service ps` / `stack ps` print.
pub struct TaskListOpts<'a> {
    pub quiet: bool,
    pub no_trunc: bool,
    pub format: Option<&'a str>,
}

const TASK_COLUMNS: [(&str, &str); 7] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Node", "NODE"),
    ("DesiredState", "DESIRED STATE"),
    ("CurrentState", "CURRENT STATE"),
    ("Error", "ERROR"),
];

/// One `service ps` row with Docker's template field names; `now_ms` makes the
/// "Running 3 seconds ago" state testable.
fn task_row(t: &pb::TaskSummary, no_trunc: bool, now_ms: i64) -> serde_json::Value {
    let id: String = if no_trunc {
        t.id.clone()
    } else {
        t.id.chars().take(12).collect()
    };
    let ago = skiff_agent::humanize::duration((now_ms - t.timestamp_ms) / 1000);
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
    serde_json::json!({
        "ID": id,
        "Name": t.name,
        "Image": t.image,
        "Node": t.node,
        "DesiredState": capitalize(&t.desired),
        "CurrentState": state,
        "Error": err,
    })
}

/// The tasks of `services` (or, with none, of `stack`) in one table.
pub async fn print_tasks(
    c: &mut Orch,
    services: &[&str],
    stack: &str,
    opts: &TaskListOpts<'_>,
) -> Result<i32> {
    let format = output::Format::parse(opts.format)?;
    let mut tasks = Vec::new();
    for service in if services.is_empty() {
        &[""][..]
    } else {
        services
    } {
        let r = c
            .task_list(pb::TaskListRequest {
                service: service.to_string(),
                stack: stack.into(),
                all: true,
            })
            .await
            .map_err(status)?
            .into_inner();
        tasks.extend(r.tasks);
    }
    if opts.quiet {
        for t in tasks {
            println!("{}", t.id);
        }
        return Ok(0);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<_> = tasks
        .iter()
        .map(|t| task_row(t, opts.no_trunc, now))
        .collect();
    output::print_rows(&format, &TASK_COLUMNS, &rows)?;
    Ok(0)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// How long `--detach=false` keeps waiting through a cluster that does not answer.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(60);

/// Whether `--detach=false` waits through error `e` at `now`: the cluster is unavailable
/// (no leader confirmed, leadership lost), the deadline is ahead, and it has not been
/// unavailable (`since`) for [`UNAVAILABLE_FOR`] already.
fn wait_through(
    e: &tonic::Status,
    now: Instant,
    deadline: Instant,
    since: Option<Instant>,
) -> bool {
    e.code() == tonic::Code::Unavailable
        && now < deadline
        && since.is_none_or(|t| now.duration_since(t) < UNAVAILABLE_FOR)
}

/// The pause between two polls of `--detach=false` after one that took `took`. A small
/// cluster answers in a millisecond, and polling every 20 ms keeps the reported
/// convergence time within a few milliseconds of the real one; a large one counts tens
/// of thousands of tasks per answer, so the pause grows to four times the answer's time
/// (the wait costs the manager at most a fifth of a core), up to a second.
fn poll_pause(took: Duration) -> Duration {
    (took * 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// `--detach=false`: live progress per service until every service runs its desired
/// replicas; exits non-zero with the reason when that does not happen in time.
pub async fn wait_converged(c: &mut Orch, stack: &str, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    let tty = crate::commands::stdio::is_tty();
    let mut last = String::new();
    // Since when the cluster has not answered (see below).
    let mut unavailable: Option<Instant> = None;
    loop {
        let asked = Instant::now();
        let listed = c
            .service_list(pb::ServiceListRequest {
                stack: stack.into(),
            })
            .await;
        let took = asked.elapsed();
        // The deploy is committed: a leader election while waiting (a read that cannot
        // confirm leadership, a manager that lost its role) delays the answer but does
        // not undo it, so the wait goes on instead of failing, for up to
        // UNAVAILABLE_FOR (an election takes seconds; an agent that is gone, forever).
        let services = match listed {
            Ok(r) => r.into_inner().services,
            Err(e) if wait_through(&e, Instant::now(), deadline, unavailable) => {
                if unavailable.is_none() {
                    eprintln!("waiting for the cluster: {} (retrying)", e.message());
                    unavailable = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(status(e)),
        };
        unavailable = None;
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
        tokio::time::sleep(poll_pause(took)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_pause_in_proportion_to_the_answer() {
        assert_eq!(
            poll_pause(Duration::from_micros(300)),
            Duration::from_millis(20)
        );
        assert_eq!(
            poll_pause(Duration::from_millis(50)),
            Duration::from_millis(200)
        );
        assert_eq!(poll_pause(Duration::from_secs(3)), Duration::from_secs(1));
    }

    #[test]
    fn the_wait_goes_on_through_an_election_but_not_forever() {
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        let election = tonic::Status::unavailable("could not confirm leadership within 5s");
        assert!(wait_through(&election, now, later, None));
        assert!(wait_through(
            &election,
            now + Duration::from_secs(59),
            later,
            Some(now)
        ));
        assert!(!wait_through(
            &election,
            now + UNAVAILABLE_FOR,
            later,
            Some(now)
        ));
        assert!(
            !wait_through(&election, later, later, None),
            "past the deadline"
        );
        let refused = tonic::Status::invalid_argument("no such stack");
        assert!(!wait_through(&refused, now, later, None));
    }

    fn render(format: &str, columns: &[(&str, &str)], rows: &[serde_json::Value]) -> String {
        let f = output::Format::parse(Some(format)).expect("format");
        output::render_rows(&f, columns, rows).expect("render")
    }

    /// `service inspect` prints what it printed when the manager sent the document as
    /// JSON text: the typed `Service` converts back to the same model values.
    #[test]
    fn inspect_prints_the_document_the_manager_used_to_send() {
        use skiff_controller::model::*;
        let mut spec = ServiceSpec {
            name: "app_web".into(),
            mode: Mode::Replicated { replicas: 3 },
            ..Default::default()
        };
        spec.template.image = "nginx".into();
        spec.template.command = Some(vec!["a".into()]);
        spec.update_config.max_failure_ratio = 0.3;
        spec.ports.push(PortSpec {
            target: 80,
            published: 8080,
            protocol: "tcp".into(),
            mode: "ingress".into(),
        });
        let s = Stored {
            id: "abc".into(),
            version: 12,
            value: Service {
                previous: Some(ServiceSpec {
                    mode: Mode::Global,
                    ..spec.clone()
                }),
                spec,
                generation: 2,
                update: Some(UpdateStatus {
                    state: "completed".into(),
                    message: "done".into(),
                    started_at_ms: 1,
                    next_batch_at_ms: 2,
                }),
                ..Default::default()
            },
        };
        let before = serde_json::json!({
            "ID": s.id, "Version": {"Index": s.version}, "Spec": s.value.spec,
            "PreviousSpec": s.value.previous, "UpdateStatus": s.value.update, "Generation": s.value.generation,
        })
        .to_string();
        let before: serde_json::Value = serde_json::from_str(&before).expect("json");
        let after = inspect_doc(s.into()).expect("converts");
        assert_eq!(
            serde_json::to_string_pretty(&vec![after]).expect("json"),
            serde_json::to_string_pretty(&vec![before]).expect("json")
        );
    }

    #[test]
    fn service_rows_take_docker_fields() {
        let s = pb::ServiceSummary {
            id: "0123456789abcdef".into(),
            name: "app_web".into(),
            mode: "replicated".into(),
            desired: 3,
            running: 2,
            image: "busybox:latest".into(),
            ports: "*:8080->80/tcp".into(),
            ..Default::default()
        };
        let rows = vec![service_row(&s)];
        assert_eq!(
            render(
                "{{.ID}} {{.Name}} {{.Replicas}} {{.Ports}}",
                &SERVICE_COLUMNS,
                &rows
            ),
            "0123456789ab app_web 2/3 *:8080->80/tcp\n"
        );
        assert_eq!(
            render("table", &SERVICE_COLUMNS, &rows).lines().next(),
            Some("ID             NAME      MODE         REPLICAS   IMAGE            PORTS")
        );
        let json: serde_json::Value =
            serde_json::from_str(&render("json", &SERVICE_COLUMNS, &rows)).expect("json");
        assert_eq!(json["Mode"], "replicated");
        assert!(SERVICE_COLUMNS
            .iter()
            .all(|(f, _)| rows[0].get(*f).is_some()));
    }

    #[test]
    fn task_rows_take_docker_fields() {
        let t = pb::TaskSummary {
            id: "abcdefabcdefabcdef".into(),
            name: "app_web.1".into(),
            image: "busybox".into(),
            node: "n1".into(),
            desired: "running".into(),
            state: "pending".into(),
            message: "no suitable node ".repeat(5),
            timestamp_ms: 1_000,
            ..Default::default()
        };
        let row = task_row(&t, false, 61_000);
        assert_eq!(row["ID"], "abcdefabcdef");
        assert_eq!(row["DesiredState"], "Running");
        assert_eq!(row["CurrentState"], "Pending About a minute ago");
        assert!(row["Error"].as_str().expect("str").ends_with('…'));
        let full = task_row(&t, true, 61_000);
        assert_eq!(full["ID"], "abcdefabcdefabcdef");
        assert_eq!(
            render(
                "{{.Name}}@{{.Node}}",
                &TASK_COLUMNS,
                std::slice::from_ref(&row)
            ),
            "app_web.1@n1\n"
        );
        assert!(
            render("table {{.Name}}\t{{.DesiredState}}", &TASK_COLUMNS, &[row])
                .starts_with("NAME        DESIRED STATE\napp_web.1   Running")
        );
        assert!(TASK_COLUMNS.iter().all(|(f, _)| full.get(*f).is_some()));
    }

    #[test]
    fn log_lines_have_dockers_prefix() {
        let args = |extra: &[&str]| {
            let mut v = vec!["logs"];
            v.extend_from_slice(extra);
            v.push("web");
            #[derive(clap::Parser)]
            struct P {
                #[command(flatten)]
                a: LogsArgs,
            }
            <P as clap::Parser>::parse_from(v).a
        };
        let m = pb::ServiceLogChunk {
            service: "web".into(),
            task_id: "abcdefghijklmnopqrstuvwxy".into(),
            slot: 3,
            node: "worker1".into(),
            stream: 1,
            data: b"hello\n".to_vec(),
            time_unix_nanos: 1_700_000_000_123_456_789,
            slot_width: 2,
            ..Default::default()
        };
        let s = |a: &[&str]| String::from_utf8(log_line(&m, &args(a))).expect("utf8");
        // Slots are padded (after the node, as Docker does) to the replica count's width.
        assert_eq!(s(&[]), "web.3.abcdefghijkl@worker1     | hello\n");
        assert_eq!(s(&["--no-task-ids"]), "web.3@worker1     | hello\n");
        assert_eq!(
            s(&["--no-trunc"]),
            "web.3.abcdefghijklmnopqrstuvwxy@worker1     | hello\n"
        );
        assert_eq!(s(&["--raw"]), "hello\n");
        assert_eq!(
            s(&["-t"]),
            "2023-11-14T22:13:20.123456789Z web.3.abcdefghijkl@worker1     | hello\n"
        );
    }
}
