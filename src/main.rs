//! The `skiff` binary: the CLI, plus the `agent` and (hidden) `shim` entry points
//! (the agent normally runs the separate, smaller `skiff-shim`; see src/bin/skiff-shim.rs).
//! Commands only parse flags, call the agent over gRPC and print; no daemon logic
//! lives here.

mod cli;
mod client;
mod commands;
mod context;
mod output;
mod remote;
mod shim_entry;
#[allow(dead_code)]
mod template;

use cli::{Cli, Command, ContainerCommand, ImageCommand};
use commands::{containers, images, system};

fn init_tracing(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(shim_entry::span_events())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// glibc gives each thread that contends for malloc its own arena (up to 8 per core),
/// and each keeps its freed pages: on the long-lived agent that is most of its RSS
/// beyond the binary. Two arenas keep contention low on a handful of workers.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a glibc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    let cli = cli::parse();
    // The shim runs single-threaded until libcontainer has forked: no runtime here.
    if let Command::Shim(a) = &cli.command {
        let code = shim_entry::run(&cli.log_level, &a.task, a.exec.as_deref());
        std::process::exit(code);
    }
    // The agent serves many requests at once; a client command makes a few calls in a
    // row, and one thread does that without starting workers (and without reading the
    // cgroup's CPU quota to size them): about 0.3 ms off every command. Anything that
    // blocks (stdin, files to upload) runs on a thread of its own.
    let rt = if let Command::Agent(_) = &cli.command {
        limit_malloc_arenas();
        tokio::runtime::Runtime::new()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting runtime: {e}");
            std::process::exit(125);
        }
    };
    let code = rt.block_on(dispatch(cli));
    // Do not wait for stdin reader threads blocked on a terminal.
    rt.shutdown_background();
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> i32 {
    let result = run(cli).await;
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(x) = e.downcast_ref::<client::Exit>() {
                eprintln!("{}", x.message);
                x.code
            } else {
                eprintln!("Error: {}", error_chain(&e));
                125
            }
        }
    }
}

/// The error and its causes, skipping causes the message above already quotes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !out.contains(&c) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&c);
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    // The agent and dial-stdio serve or reach the local socket: contexts do not apply.
    let local_host = cli
        .host
        .clone()
        .or_else(|| std::env::var("SKIFF_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| context::DEFAULT_HOST.to_string());
    if let Command::Agent(a) = &cli.command {
        return agent(&local_host, a, (&cli.log_level, &cli.log_format)).await;
    }
    if let Command::System(commands::stats::SystemCommand::DialStdio) = &cli.command {
        return remote::dial_stdio(&local_host).await;
    }
    if let Command::Context(c) = &cli.command {
        return context::run(c, cli.context.as_deref());
    }
    if let Command::Logout(a) = &cli.command {
        return commands::registry::logout(a).await; // purely client-side, like Docker's
    }
    // Shell integration needs no agent: generated from the command line itself.
    match &cli.command {
        Command::Completion(a) => return commands::shell::completion(a),
        Command::Man(a) => return commands::shell::man(a),
        _ => {}
    }
    // Needs no agent or cluster: it only reads files.
    if let Command::Stack(commands::stack::StackCommand::Config(a)) = &cli.command {
        return commands::stack::config(a);
    }
    let endpoint = context::resolve(
        cli.host.as_deref(),
        cli.context.as_deref(),
        cli.tlsdir.as_deref(),
    )?;
    client::set_tls_dir(endpoint.tls_dir);
    let host = endpoint.host;
    match &cli.command {
        Command::Stack(s) => return commands::stack::run(&host, s).await,
        Command::Service(s) => return commands::service::run(&host, s).await,
        Command::Node(n) => return commands::cluster::node(&host, n).await,
        Command::Cluster(n) => return commands::cluster::cluster(&host, n).await,
        _ => {}
    }
    let mut c = client::connect(&host).await?;
    let c = &mut c;
    match &cli.command {
        Command::Agent(_)
        | Command::Shim(_)
        | Command::Node(_)
        | Command::Cluster(_)
        | Command::Completion(_)
        | Command::Context(_)
        | Command::Man(_) => Ok(0),
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => {
            containers::run(c, a).await
        }
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            println!("{}", containers::create(c, a).await?);
            Ok(0)
        }
        Command::Start(a) | Command::Container(ContainerCommand::Start(a)) => {
            containers::start(c, a).await
        }
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => {
            containers::stop(c, a, false).await
        }
        Command::Restart(a) => containers::stop(c, a, true).await,
        Command::Kill(a) | Command::Container(ContainerCommand::Kill(a)) => {
            containers::kill(c, a).await
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => containers::rm(c, a).await,
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => containers::ps(c, a).await,
        Command::Exec(a) => containers::exec(c, a).await,
        Command::Logs(a) | Command::Container(ContainerCommand::Logs(a)) => {
            containers::logs(c, a).await
        }
        Command::Attach(a) => containers::attach(c, a).await,
        Command::Wait(a) => containers::wait(c, a).await,
        Command::Top(a) => containers::top(c, a).await,
        Command::Rename(a) => containers::rename(c, a).await,
        Command::Inspect(a) => containers::inspect(c, a, None).await,
        Command::Container(ContainerCommand::Inspect(a)) => {
            containers::inspect(c, a, Some("container")).await
        }
        Command::Image(ImageCommand::Inspect(a)) => containers::inspect(c, a, Some("image")).await,
        Command::Events(a) => system::events(c, a).await,
        Command::Info(a) => system::info(c, a).await,
        Command::Version(a) => system::version(c, a).await,
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::images(c, a).await,
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => images::import(c, a).await,
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => images::load(c, a).await,
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(c, a).await,
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(c, a).await,
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => {
            commands::registry::pull(c, a).await
        }
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            commands::registry::push(c, a).await
        }
        Command::Login(a) => commands::registry::login(c, a).await,
        Command::Logout(a) => commands::registry::logout(a).await,
        Command::Build(a) | Command::Image(ImageCommand::Build(a)) => {
            commands::build::build(c, a).await
        }
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            commands::build::history(c, a).await
        }
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => {
            commands::build::save(c, a).await
        }
        Command::Export(a) => commands::build::export(c, a).await,
        Command::Commit(a) => commands::build::commit(c, a).await,
        Command::Network(n) => commands::network::run(c, n).await,
        Command::Port(a) => commands::network::port(c, a).await,
        Command::Volume(v) => commands::volume::run(c, v).await,
        Command::Stats(a) | Command::Container(ContainerCommand::Stats(a)) => {
            commands::stats::stats(c, a).await
        }
        Command::Update(a) | Command::Container(ContainerCommand::Update(a)) => {
            commands::stats::update(c, a).await
        }
        Command::System(s) => commands::stats::system(c, s).await,
        Command::Stack(_) | Command::Service(_) => Ok(0),
        Command::Container(ContainerCommand::Prune(a)) => {
            commands::stats::container_prune(c, a).await
        }
        Command::Image(ImageCommand::Prune(a)) => commands::stats::image_prune(c, a).await,
    }
}

/// Refuses a log level the filter would silently read as a target name (`--log-level
/// verbose` enabling nothing): each directive is a level or `target=level`.
fn check_log_level(level: &str) -> anyhow::Result<()> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = level.split(',').map(str::trim).find(|d| {
        !d.is_empty() && !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
    });
    if let Some(d) = bad {
        anyhow::bail!(
            "invalid log level {d:?}: want off, error, warn, info, debug, trace, or TARGET=LEVEL (e.g. info,skiff_agent=debug)"
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
        anyhow::bail!("invalid log level {level:?}: {e}");
    }
    Ok(())
}

/// `log` is (`--log-level`, `--log-format`); agent.yaml's `log_level`/`log_format`
/// apply where the flags were left at their defaults.
async fn agent(host: &str, a: &cli::AgentArgs, log: (&str, &str)) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    use skiff_agent::config::{self, AgentConfig, FileConfig};
    let explicit = a.config.is_some();
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| config::DEFAULT_CONFIG.into());
    let mut file = FileConfig::load(&path, explicit)?;
    let level = match (log.0, file.log_level.take()) {
        ("info", Some(l)) => l,
        (l, _) => l.to_string(),
    };
    let format = match (log.1, file.log_format.take()) {
        ("text", Some(f)) => f,
        (f, _) => f.to_string(),
    };
    anyhow::ensure!(
        format == "text" || format == "json",
        "invalid log format {format:?}: want text or json"
    );
    check_log_level(&level)?;
    init_tracing(&level, &format);
    // Cluster settings from agent.yaml (written by deploy/install.sh) under the flags.
    let mut cluster = a.cluster.clone();
    cluster.listen_addr = cluster.listen_addr.or(file.listen_addr.take());
    cluster.advertise_addr = cluster.advertise_addr.or(file.advertise_addr.take());
    if cluster.join.is_none() {
        cluster.join = file.join.take();
        cluster.token = cluster.token.or(file.join_token.take());
        anyhow::ensure!(
            cluster.join.is_none() || cluster.token.is_some(),
            "{}: join needs join_token",
            path.display()
        );
    }
    let log_opts =
        config::log_opts(file.log_opts.take()).with_context(|| format!("{}", path.display()))?;
    let root = if a.root.as_os_str() != config::DEFAULT_ROOT {
        a.root.clone()
    } else {
        file.root.unwrap_or(a.root.clone())
    };
    let exec_root = if a.exec_root.as_os_str() != config::DEFAULT_EXEC_ROOT {
        a.exec_root.clone()
    } else {
        file.exec_root.unwrap_or(a.exec_root.clone())
    };
    let host = if host != config::DEFAULT_HOST {
        host.to_string()
    } else {
        file.host.unwrap_or(host.to_string())
    };
    let socket = config::socket_path(&host)?;
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut cfg = AgentConfig::new(
        root,
        exec_root,
        socket,
        a.cgroup_parent.clone().or(file.cgroup_parent),
        config::ShimCommand::beside(&exe),
    );
    cfg.network = skiff_agent::network::NetSettings {
        dns: file.dns.unwrap_or_default(),
        dns_search: file.dns_search.unwrap_or_default(),
        pools: file.default_address_pools.unwrap_or_default(),
        overlay_pools: a.cluster.default_addr_pool.clone(),
        vxlan_port: a.cluster.data_path_port,
    };
    cfg.metrics_addr = a.metrics_addr.or(file.metrics_addr);
    cfg.api_listen_addr = a
        .api_listen_addr
        .clone()
        .or(file.api_listen_addr.take())
        .map(|s| commands::cluster::parse_addr(&s, remote::DEFAULT_TLS_PORT))
        .transpose()
        .context("--api-listen-addr")?;
    cfg.docker_socket = match a.docker_socket.clone().or(file.docker_socket.take()) {
        Some(v) => config::docker_socket_path(&v)?,
        None => Some(config::default_docker_socket(&cfg.socket)),
    };
    cfg.init_path = a.init_path.clone().or(file.init_path.take());
    if let Some(p) = a.cluster.image_share_port.or(file.image_share_port) {
        cfg.image_share_port = p;
    }
    cfg.log_opts = log_opts;
    let file_labels = file.labels.take().unwrap_or_default();
    let labels = commands::cluster::engine_labels(file_labels.iter().chain(&a.cluster.labels))
        .with_context(|| format!("{} or --label", path.display()))?;
    let mut cluster_cfg = commands::cluster::cluster_config(&cluster, &cfg.root)?;
    cluster_cfg.description = skiff_agent::sysinfo::node_description(labels);
    cfg.cluster = Some(cluster_cfg);
    skiff_agent::run(cfg).await?;
    Ok(0)
}
