//! `skiff stack ...`: stacks from Compose-spec files. `stack config` is purely
//! client-side (no agent, no cluster); the parsing lives in the `skiff-stack` crate.

use crate::client::Exit;
use clap::{Args, Subcommand};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Print the normalised stack file(s): merged, interpolated, defaults filled in.
    ///
    /// Example: skiff stack config -c app.yaml -c override.yaml --format json
    Config(ConfigArgs),
    /// Deploy a new stack or update an existing one.
    ///
    /// Example: skiff stack deploy -c examples/hello/app.yaml --detach=false hello
    #[command(alias = "up")]
    Deploy(DeployArgs),
    /// List stacks.
    ///
    /// Example: skiff stack ls --format json
    #[command(alias = "list")]
    Ls(StackLsArgs),
    /// List the services of a stack.
    ///
    /// Example: skiff stack services --format '{{.Name}}: {{.Replicas}}' hello
    Services(StackServicesArgs),
    /// List the tasks of a stack.
    ///
    /// Example: skiff stack ps hello
    Ps(StackPsArgs),
    /// Remove a stack: its services, tasks and networks.
    ///
    /// Example: skiff stack rm hello
    #[command(alias = "remove", alias = "down")]
    Rm(StackRef),
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Stack (Compose) file; repeat to merge several in order.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_files: Vec<PathBuf>,
    /// Remove services that are no longer in the file.
    #[arg(long)]
    pub prune: bool,
    /// Return at once (true) or wait for convergence with live progress (false).
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub detach: bool,
    /// How long --detach=false waits for convergence (e.g. 2m, 90s).
    #[arg(long, default_value = "3m")]
    pub timeout: String,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StackRef {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StackPsArgs {
    /// Do not truncate task IDs and errors.
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// table, json, or a Go template over .ID .Name .Image .Node .DesiredState
    /// .CurrentState .Error.
    #[arg(long)]
    pub format: Option<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct StackLsArgs {
    /// table, json, or a Go template over .Name .Services.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct StackServicesArgs {
    /// Only display IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// table, json, or a Go template over .ID .Name .Mode .Replicas .Image .Ports.
    #[arg(long)]
    pub format: Option<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Stack (Compose) file; repeat to merge several in order.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_files: Vec<PathBuf>,
    /// Output format: yaml or json.
    #[arg(long, default_value = "yaml")]
    pub format: String,
    /// Stack name used to resolve resource names (default: the first file's directory).
    #[arg(long)]
    pub name: Option<String>,
}

/// Where the stack name comes from when none is given: the first file's directory,
/// as Compose does, falling back to "stack" when that is not a valid name.
pub fn default_stack_name(first: &Path) -> String {
    let dir = std::fs::canonicalize(first).ok().and_then(|p| {
        p.parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().to_lowercase())
    });
    match dir {
        Some(d) if skiff_stack::valid_stack_name(&d) => d,
        _ => "stack".to_string(),
    }
}

/// Loads the files against the process environment; warnings go to stderr.
pub fn load(files: &[PathBuf], name: &str) -> anyhow::Result<skiff_stack::StackSpec> {
    let opts = skiff_stack::LoadOptions {
        files: files.to_vec(),
        env: std::env::vars().collect::<HashMap<_, _>>(),
        project_name: name.to_string(),
    };
    let loaded = skiff_stack::load(&opts).map_err(|e| Exit {
        code: 1,
        message: format!("Error: {e}"),
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.spec)
}

/// `skiff stack config`: exit 0 with the spec on stdout, or 1 with the error
/// (`file:line:col: field: message`) on stderr.
pub fn config(a: &ConfigArgs) -> anyhow::Result<i32> {
    if a.format != "yaml" && a.format != "json" {
        return Err(Exit {
            code: 1,
            message: format!(
                "Error: unknown format {:?} (expected yaml or json)",
                a.format
            ),
        }
        .into());
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .compose_files
            .first()
            .map(|f| default_stack_name(f))
            .unwrap_or_else(|| "stack".into()),
    };
    let spec = load(&a.compose_files, &name)?;
    let text = if a.format == "json" {
        skiff_stack::to_json(&spec) + "\n"
    } else {
        skiff_stack::to_yaml(&spec)
    };
    // `stack config | head` closes the pipe early: that is not an error.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

type Orch =
    skiff_proto::orchestrator::orchestrator_client::OrchestratorClient<tonic::transport::Channel>;

pub async fn orchestrator(host: &str) -> anyhow::Result<Orch> {
    Ok(Orch::new(crate::client::channel(host).await?))
}

fn parse_timeout(s: &str) -> anyhow::Result<std::time::Duration> {
    skiff_stack::parse_go_duration(s)
        .map_err(|e| crate::client::exit(125, format!("invalid --timeout {s:?}: {e}")))
}

/// Dispatches the stack commands that talk to a manager.
pub async fn run(host: &str, cmd: &StackCommand) -> anyhow::Result<i32> {
    use crate::client::status;
    use skiff_proto::orchestrator as pb;
    let mut c = orchestrator(host).await?;
    match cmd {
        StackCommand::Config(a) => config(a),
        StackCommand::Deploy(a) => {
            if !skiff_stack::valid_stack_name(&a.name) {
                return Err(crate::client::exit(
                    125,
                    format!(
                        "invalid stack name {:?}: use letters, digits, - and _",
                        a.name
                    ),
                ));
            }
            let timeout = parse_timeout(&a.timeout)?;
            let mut spec = load(&a.compose_files, &a.name)?;
            inline_file_sources(&mut spec)?;
            let r = c
                .stack_deploy(pb::StackDeployRequest {
                    stack_json: skiff_stack::to_json(&spec),
                    prune: a.prune,
                })
                .await
                .map_err(status)?
                .into_inner();
            for n in &r.networks {
                println!("Creating network {n}");
            }
            for s in &r.created {
                println!("Creating service {s}");
            }
            for s in &r.updated {
                println!("Updating service {s}");
            }
            for s in &r.removed {
                println!("Removing service {s}");
            }
            if a.detach {
                return Ok(0);
            }
            super::service::wait_converged(&mut c, &a.name, timeout).await
        }
        StackCommand::Ls(a) => {
            let format = crate::output::Format::parse(a.format.as_deref())?;
            let r = c
                .stack_list(pb::Empty {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<_> = r
                .stacks
                .iter()
                .map(|s| serde_json::json!({"Name": s.name, "Services": s.services}))
                .collect();
            crate::output::print_rows(
                &format,
                &[("Name", "NAME"), ("Services", "SERVICES")],
                &rows,
            )?;
            Ok(0)
        }
        StackCommand::Services(a) => {
            super::service::print_services(&mut c, &a.name, a.quiet, a.format.as_deref()).await
        }
        StackCommand::Ps(a) => {
            let opts = super::service::TaskListOpts {
                quiet: a.quiet,
                no_trunc: a.no_trunc,
                format: a.format.as_deref(),
            };
            super::service::print_tasks(&mut c, &[], &a.name, &opts).await
        }
        StackCommand::Rm(a) => {
            let r = c
                .stack_remove(pb::StackRef {
                    name: a.name.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            for l in r.removed {
                println!("{l}");
            }
            Ok(0)
        }
    }
}

/// Secrets and configs are read here, on the machine that has the files, and travel to
/// the cluster as content (the manager may be another host).
fn inline_file_sources(spec: &mut skiff_stack::StackSpec) -> anyhow::Result<()> {
    use skiff_stack::spec::Source;
    let read = |what: &str, name: &str, src: &Source| -> anyhow::Result<Option<String>> {
        match src {
            Source::File(p) => std::fs::read_to_string(p).map(Some).map_err(|e| {
                crate::client::exit(1, format!("{what} {name}: reading {}: {e}", p.display()))
            }),
            Source::Environment(v) => std::env::var(v).map(Some).map_err(|_| {
                crate::client::exit(
                    1,
                    format!("{what} {name}: environment variable {v} is not set"),
                )
            }),
            _ => Ok(None),
        }
    };
    for (k, s) in spec.secrets.iter_mut() {
        if let Some(c) = read("secret", k, &s.source)? {
            s.source = Source::Content(c);
        }
    }
    for (k, c) in spec.configs.iter_mut() {
        if let Some(v) = read("config", k, &c.source)? {
            c.source = Source::Content(v);
        }
    }
    Ok(())
}
