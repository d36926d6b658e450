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
    /// Build every service that has a `build:` section, even if its image exists.
    #[arg(long, conflicts_with = "no_build")]
    pub build: bool,
    /// Build nothing: services with `build:` deploy their image as it is.
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub load: LoadFlags,
    pub name: String,
}

/// How the files are read, shared by `stack config` and `stack deploy`.
#[derive(Args, Debug, Default)]
pub struct LoadFlags {
    /// Read variables from this file instead of the .env beside the first file
    /// (repeatable; later files win).
    #[arg(long = "env-file")]
    pub env_files: Vec<PathBuf>,
    /// Enable the services of this profile (repeatable; '*' enables all).
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
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
    /// Stack name used to resolve resource names (default: the file's `name:`, else
    /// the first file's directory).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub load: LoadFlags,
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
/// `name_is_default`: the file's top-level `name:` may replace `name`.
pub fn load(
    files: &[PathBuf],
    name: &str,
    name_is_default: bool,
    flags: &LoadFlags,
) -> anyhow::Result<skiff_stack::Loaded> {
    let opts = skiff_stack::LoadOptions {
        files: files.to_vec(),
        env: std::env::vars().collect::<HashMap<_, _>>(),
        project_name: name.to_string(),
        name_is_default,
        env_files: flags.env_files.clone(),
        profiles: flags.profiles.clone(),
    };
    let loaded = skiff_stack::load(&opts).map_err(|e| Exit {
        code: 1,
        message: format!("Error: {e}"),
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded)
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
    let spec = load(&a.compose_files, &name, a.name.is_none(), &a.load)?.spec;
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

/// What a manager deploys of a loaded stack: as the docker CLI does for Swarm, the
/// client resolves the stack file into the cluster's services, networks, secrets and
/// configs (the controller's pure conversions), and the manager gets typed objects.
fn deploy_request(
    spec: &skiff_stack::StackSpec,
    prune: bool,
) -> skiff_proto::orchestrator::StackDeployRequest {
    use skiff_controller::model::stack;
    use skiff_proto::orchestrator as pb;
    pb::StackDeployRequest {
        name: spec.name.clone(),
        prune,
        services: stack::services(spec).into_iter().map(Into::into).collect(),
        networks: stack::networks(spec).into_iter().map(Into::into).collect(),
        files: stack::files(spec)
            .into_iter()
            .map(|(kind, name, content)| pb::FileObject {
                kind: kind.into(),
                name,
                content,
            })
            .collect(),
    }
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
            let loaded = load(&a.compose_files, &a.name, false, &a.load)?;
            let mut spec = loaded.spec;
            // Files first: a missing one stops the deploy before anything is built
            // or created.
            inline_file_sources(&mut spec, &loaded.env)?;
            if !a.no_build {
                build_services(host, &spec, a.build).await?;
            }
            let r = c
                .stack_deploy(deploy_request(&spec, a.prune))
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
/// the cluster as content (the manager may be another host). `environment` sources
/// read the same environment the file was interpolated with.
fn inline_file_sources(
    spec: &mut skiff_stack::StackSpec,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    use skiff_stack::spec::Source;
    let read = |what: &str, name: &str, src: &Source| -> anyhow::Result<Option<String>> {
        match src {
            Source::File(p) => std::fs::read_to_string(p).map(Some).map_err(|e| {
                crate::client::exit(1, format!("{what} {name}: reading {}: {e}", p.display()))
            }),
            Source::Environment(v) => env.get(v).cloned().map(Some).ok_or_else(|| {
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

/// Builds the services that have a `build:` section with Skiff's builder on the node
/// the CLI talks to, tagging each as its `image`. An image that already exists there
/// is used as it is (the next deploy builds nothing) unless `force` (`--build`).
async fn build_services(
    host: &str,
    spec: &skiff_stack::StackSpec,
    force: bool,
) -> anyhow::Result<()> {
    let built: Vec<_> = spec
        .services
        .iter()
        .filter_map(|(n, s)| s.build.as_ref().map(|b| (n, s, b)))
        .collect();
    if built.is_empty() {
        return Ok(());
    }
    let mut engine = crate::client::connect(host).await?;
    for (name, svc, b) in built {
        if !force {
            let exists = engine
                .image_inspect(skiff_proto::engine::NameRequest {
                    id: svc.image.clone(),
                })
                .await
                .is_ok();
            if exists {
                continue;
            }
        }
        println!("Building {name} ({})", svc.image);
        let job = build_job(spec, name, svc, b)?;
        let id = super::build::run_build(&mut engine, job, |line| {
            println!("{name}: {line}");
        })
        .await
        .map_err(|e| crate::client::exit(1, format!("building service {name}: {e}")))?;
        println!("Built {name}: {id}");
    }
    Ok(())
}

/// What to send for one service's `build:` section.
fn build_job(
    spec: &skiff_stack::StackSpec,
    name: &str,
    svc: &skiff_stack::ServiceSpec,
    b: &skiff_stack::BuildSpec,
) -> anyhow::Result<super::build::BuildJob> {
    use skiff_stack::spec::Source;
    let fail = |m: String| crate::client::exit(1, format!("service {name}: build: {m}"));
    let context = PathBuf::from(&b.context);
    if !context.is_dir() {
        return Err(fail(format!(
            "context {:?} is not a local directory (remote contexts cannot be built here)",
            b.context
        )));
    }
    let (mut dockerfile, dockerfile_name, rel) = match &b.dockerfile_inline {
        Some(text) => (text.clone(), "dockerfile_inline".to_string(), None),
        None => {
            let rel = b.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
            let path = context.join(&rel);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
            let rel = path
                .strip_prefix(&context)
                .ok()
                .map(|p| p.display().to_string());
            (text, path.display().to_string(), rel)
        }
    };
    // Labels go on the final stage; with a target stage the builder has no way to add
    // them, so say so rather than drop them quietly.
    if !b.labels.is_empty() {
        if b.target.is_some() {
            eprintln!(
                "warning: service {name}: build.labels are not applied when build.target is set"
            );
        } else {
            dockerfile.push_str("\nLABEL");
            for (k, v) in &b.labels {
                dockerfile.push_str(&format!(
                    " {}={}",
                    serde_json::Value::String(k.clone()),
                    serde_json::Value::String(v.clone())
                ));
            }
            dockerfile.push('\n');
        }
    }
    let mut secrets = HashMap::new();
    for r in &b.secrets {
        let Some(s) = spec.secrets.get(&r.source) else {
            continue;
        };
        match &s.source {
            Source::Content(c) => {
                secrets.insert(r.source.clone(), c.clone().into_bytes());
            }
            _ => {
                return Err(fail(format!(
                    "secret {} must come from a file, the environment or content",
                    r.source
                )))
            }
        }
    }
    let mut tags = vec![svc.image.clone()];
    tags.extend(b.tags.iter().cloned());
    Ok(super::build::BuildJob {
        context,
        dockerfile,
        dockerfile_name,
        dockerfile_rel: rel,
        tags,
        build_args: b
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect(),
        target: b.target.clone().unwrap_or_default(),
        no_cache: b.no_cache,
        pull: b.pull,
        network: match b.network.as_deref() {
            Some("none") => "none".into(),
            _ => "host".into(),
        },
        secrets,
    })
}
