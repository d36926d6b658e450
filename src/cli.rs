//! The command line, as clap definitions. Names, flags and defaults follow Docker's.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "Container engine and orchestrator: Docker Engine plus Swarm mode in one binary",
    after_help = "Examples:\n  skiff run --rm busybox echo hello\n  skiff stack deploy -c app.yaml app\n  skiff COMMAND --help"
)]
pub struct Cli {
    /// Agent to talk to: unix:///PATH, ssh://[USER@]HOST[:PORT] or tcp://HOST[:PORT]
    /// (mutual TLS, see --tlsdir) [env: SKIFF_HOST] [default: unix:///run/skiff/skiff.sock].
    /// `skiff agent`: the socket to serve.
    // No clap `env`/default: --host, --context, SKIFF_HOST, SKIFF_CONTEXT and the current
    // context rank in that order (`crate::context::resolve`).
    #[arg(long, short = 'H', global = true, value_name = "URL")]
    pub host: Option<String>,
    /// Context to use (see `skiff context`) [env: SKIFF_CONTEXT].
    // Its own id: `build`'s positional CONTEXT (a directory) must not meet this one.
    #[arg(
        long = "context",
        id = "context_name",
        global = true,
        value_name = "NAME"
    )]
    pub context: Option<String>,
    /// For tcp:// hosts: directory with ca.pem, cert.pem, key.pem (default: the
    /// context's, else $SKIFF_CONFIG/tls or ~/.skiff/tls).
    #[arg(long, global = true, env = "SKIFF_TLS_DIR", value_name = "DIR")]
    pub tlsdir: Option<PathBuf>,
    /// Log level for this process (agent and shim logs go to stderr).
    #[arg(long, global = true, env = "SKIFF_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the per-host agent (daemon).
    ///
    /// Example: skiff agent --root /var/lib/skiff
    ///
    /// Example: skiff agent --listen-addr 10.0.0.5 --api-listen-addr 10.0.0.5:2376
    Agent(AgentArgs),
    /// Internal: the per-container shim, spawned by the agent.
    #[command(hide = true)]
    Shim(ShimArgs),
    /// Create and start a container.
    ///
    /// Example: skiff run -d -p 8080:80 --name web busybox httpd -f -p 80
    Run(RunArgs),
    /// Create a container without starting it.
    ///
    /// Example: skiff create --name job busybox echo hi
    Create(RunArgs),
    /// Start one or more stopped containers.
    ///
    /// Example: skiff start -a job
    Start(StartArgs),
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    ///
    /// Example: skiff stop -t 2 web
    Stop(StopArgs),
    /// Restart containers.
    ///
    /// Example: skiff restart web
    Restart(StopArgs),
    /// Send a signal to running containers.
    ///
    /// Example: skiff kill -s HUP web
    Kill(KillArgs),
    /// Remove containers.
    ///
    /// Example: skiff rm -f web
    Rm(RmArgs),
    /// List containers.
    ///
    /// Example: skiff ps -a --format '{{.Names}} {{.Status}}'
    Ps(PsArgs),
    /// Run a command in a running container.
    ///
    /// Example: skiff exec -it web sh
    Exec(ExecArgs),
    /// Fetch a container's logs.
    ///
    /// Example: skiff logs -f --tail 10 web
    Logs(LogsArgs),
    /// Attach to a running container's stdio.
    ///
    /// Example: skiff attach web
    Attach(AttachArgs),
    /// Block until containers stop, then print their exit codes.
    ///
    /// Example: skiff wait job
    Wait(NamesArgs),
    /// Show the processes of a container.
    ///
    /// Example: skiff top web
    Top(TopArgs),
    /// Rename a container.
    ///
    /// Example: skiff rename web web-old
    Rename(RenameArgs),
    /// Low-level information on containers or images, as JSON.
    ///
    /// Example: skiff inspect -f '{{.State.Pid}}' web
    Inspect(InspectArgs),
    /// Stream events: this node's containers, images, networks and volumes, and the
    /// cluster's services and nodes.
    ///
    /// Example: skiff events --filter type=container --since 10m
    ///
    /// Example: skiff events --since 1h --until 0s --filter type=service --format json
    Events(EventsArgs),
    /// System-wide information, with warnings for missing kernel features.
    ///
    /// Example: skiff info
    Info(FormatArgs),
    /// Client and agent versions.
    ///
    /// Example: skiff version
    Version(FormatArgs),
    /// List images.
    ///
    /// Example: skiff images -q
    Images(ImagesArgs),
    /// Manage images.
    ///
    /// Example: skiff image import rootfs.tar busybox:latest
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage containers.
    ///
    /// Example: skiff container ls -a
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Load images from a `docker save` or OCI-layout archive.
    ///
    /// Example: skiff load -i busybox.tar
    Load(LoadArgs),
    /// Create a tag TARGET that refers to SOURCE.
    ///
    /// Example: skiff tag busybox myrepo/busybox:1
    Tag(TagArgs),
    /// Remove images.
    ///
    /// Example: skiff rmi busybox:old
    Rmi(RmiArgs),
    /// Import a rootfs tarball as an image (like `docker import`).
    ///
    /// Example: skiff import rootfs.tar busybox:latest
    Import(ImportArgs),
    /// Download an image from a registry.
    ///
    /// Example: skiff pull 127.0.0.1:5000/app:1
    Pull(crate::commands::registry::PullArgs),
    /// Upload an image to a registry.
    ///
    /// Example: skiff push 127.0.0.1:5000/app:1
    Push(crate::commands::registry::PushArgs),
    /// Log in to a registry (credentials are stored 0600 in ~/.skiff/config.json).
    ///
    /// Example: echo "$PW" | skiff login -u me --password-stdin 127.0.0.1:5000
    Login(crate::commands::registry::LoginArgs),
    /// Log out from a registry.
    ///
    /// Example: skiff logout 127.0.0.1:5000
    Logout(crate::commands::registry::LogoutArgs),
    /// Build an image from a Dockerfile.
    ///
    /// Example: skiff build -t app:1 --build-arg V=2 .
    Build(crate::commands::build::BuildArgs),
    /// Show the history of an image.
    ///
    /// Example: skiff history app:1
    History(crate::commands::build::HistoryArgs),
    /// Save images to a tar archive (readable by `docker load`).
    ///
    /// Example: skiff save -o app.tar app:1
    Save(crate::commands::build::SaveArgs),
    /// Export a container's filesystem as a tar archive.
    ///
    /// Example: skiff export -o fs.tar web
    Export(crate::commands::build::ExportArgs),
    /// Create an image from a container's changes.
    ///
    /// Example: skiff commit -c 'CMD ["sh"]' web app:snapshot
    Commit(crate::commands::build::CommitArgs),
    /// Manage networks.
    ///
    /// Example: skiff network create app
    #[command(subcommand)]
    Network(crate::commands::network::NetworkCommand),
    /// List a container's published ports.
    ///
    /// Example: skiff port web 80
    Port(crate::commands::network::PortArgs),
    /// Manage volumes.
    ///
    /// Example: skiff volume create data
    #[command(subcommand)]
    Volume(crate::commands::volume::VolumeCommand),
    /// Live resource usage of containers.
    ///
    /// Example: skiff stats --no-stream
    Stats(crate::commands::stats::StatsArgs),
    /// Change the resource limits of containers, running or not.
    ///
    /// Example: skiff update --memory 256m --cpus 0.5 web
    Update(crate::commands::stats::UpdateArgs),
    /// Disk usage and clean-up.
    ///
    /// Example: skiff system prune -af --volumes
    #[command(subcommand)]
    System(crate::commands::stats::SystemCommand),
    /// Manage stacks (Compose-spec files with Swarm's deploy section).
    ///
    /// Example: skiff stack config -c app.yaml
    #[command(subcommand)]
    Stack(crate::commands::stack::StackCommand),
    /// Manage services (managers only).
    ///
    /// Example: skiff service ls
    #[command(subcommand)]
    Service(crate::commands::service::ServiceCommand),
    /// Manage cluster nodes (managers only).
    ///
    /// Example: skiff node ls
    #[command(subcommand)]
    Node(crate::commands::cluster::NodeCommand),
    /// Cluster status and join tokens.
    ///
    /// Example: skiff cluster join-token worker
    #[command(subcommand)]
    Cluster(crate::commands::cluster::ClusterCommand),
    /// Manage contexts: named agent endpoints (local socket, ssh://, tcp:// with TLS).
    ///
    /// Example: skiff context create prod --host ssh://root@10.0.0.5 && skiff context use prod
    #[command(subcommand)]
    Context(crate::context::ContextCommand),
    /// Print a shell completion script.
    ///
    /// Example: source <(skiff completion bash)
    ///
    /// Example: skiff completion zsh > "${fpath[1]}/_skiff"
    ///
    /// Example: skiff completion fish > ~/.config/fish/completions/skiff.fish
    Completion(crate::commands::shell::CompletionArgs),
    /// Write man pages (skiff.1, skiff-run.1, ...) generated from this command line.
    ///
    /// Example: skiff man --dir /usr/local/share/man/man1
    Man(crate::commands::shell::ManArgs),
}

/// The command tree as users see it: every command's `Example:` moved to an
/// `Examples:` section after its help (see `commands::shell`).
pub fn command() -> clap::Command {
    crate::commands::shell::with_examples(<Cli as clap::CommandFactory>::command())
}

/// Parses the process arguments against [`command`]; exits with clap's message on error.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images. Example: skiff image ls
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Import a rootfs tarball. Example: skiff image import rootfs.tar.gz app:1
    Import(ImportArgs),
    /// Inspect images. Example: skiff image inspect busybox
    Inspect(InspectArgs),
    /// Remove images. Example: skiff image rm busybox
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Tag an image. Example: skiff image tag busybox bb:1
    Tag(TagArgs),
    /// Load an archive. Example: skiff image load -i image.tar
    Load(LoadArgs),
    /// Pull an image. Example: skiff image pull busybox
    Pull(crate::commands::registry::PullArgs),
    /// Push an image. Example: skiff image push 127.0.0.1:5000/app:1
    Push(crate::commands::registry::PushArgs),
    /// Build an image. Example: skiff image build -t app .
    Build(crate::commands::build::BuildArgs),
    /// Show an image's history. Example: skiff image history app
    History(crate::commands::build::HistoryArgs),
    /// Save images. Example: skiff image save -o app.tar app
    Save(crate::commands::build::SaveArgs),
    /// Remove dangling images (-a: all unused). Example: skiff image prune -af
    Prune(crate::commands::volume::PruneArgs),
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// List containers. Example: skiff container ls -a
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Inspect containers. Example: skiff container inspect web
    Inspect(InspectArgs),
    /// Remove containers. Example: skiff container rm -f web
    Rm(RmArgs),
    /// Create and start a container. Example: skiff container run busybox true
    Run(RunArgs),
    /// Create a container. Example: skiff container create busybox true
    Create(RunArgs),
    /// Start containers. Example: skiff container start web
    Start(StartArgs),
    /// Stop containers. Example: skiff container stop web
    Stop(StopArgs),
    /// Kill containers. Example: skiff container kill web
    Kill(KillArgs),
    /// Show logs. Example: skiff container logs web
    Logs(LogsArgs),
    /// Remove all stopped containers. Example: skiff container prune -f
    Prune(crate::commands::volume::PruneArgs),
    /// Live resource usage. Example: skiff container stats --no-stream web
    Stats(crate::commands::stats::StatsArgs),
    /// Change resource limits. Example: skiff container update --pids-limit 50 web
    Update(crate::commands::stats::UpdateArgs),
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Persistent state directory.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub root: PathBuf,
    /// Runtime state directory (sockets, bundles).
    #[arg(long, default_value = "/run/skiff")]
    pub exec_root: PathBuf,
    /// Agent configuration file (YAML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// cgroup parent for containers (default: derived from --root).
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// Serve Prometheus metrics on IP:PORT at /metrics (default: off; agent.yaml
    /// `metrics_addr`). Bind to loopback or a private interface.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the Engine API to remote CLIs (`--host tcp://...`) on IP[:PORT] (port 2376 if
    /// omitted; agent.yaml `api_listen_addr`), mutual TLS only: clients need a certificate
    /// from `skiff cluster client-cert`. Off by default.
    #[arg(long, value_name = "IP[:PORT]")]
    pub api_listen_addr: Option<String>,
    /// Serve Docker's Engine API (docker CLI, Compose, SDKs) on this unix socket (default:
    /// docker.sock beside the skiff socket, /run/skiff/docker.sock; agent.yaml
    /// `docker_socket`; "" turns it off). Same owner and mode (0660) as the skiff socket.
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<String>,
    /// The static init binary `run --init` mounts at /sbin/docker-init (agent.yaml
    /// `init_path`; default: /usr/bin/docker-init, /usr/bin/tini-static, or
    /// /usr/bin/tini if statically linked).
    #[arg(long, value_name = "PATH")]
    pub init_path: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: crate::commands::cluster::AgentClusterArgs,
}

#[derive(Args, Debug)]
pub struct ShimArgs {
    #[arg(long)]
    pub task: PathBuf,
    #[arg(long)]
    pub exec: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from this shell).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the image's ENTRYPOINT.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Give extended privileges (all capabilities, no seccomp, all devices).
    #[arg(long)]
    pub privileged: bool,
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security options (no-new-privileges, seccomp=unconfined).
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Network: bridge (default), host, none, container:NAME|ID, or a user-defined network.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    #[command(flatten)]
    pub net: crate::commands::network::NetRunArgs,
    #[command(flatten)]
    pub mounts: crate::commands::volume::MountFlags,
    #[command(flatten)]
    pub limits: crate::commands::stats::RunLimitFlags,
    /// Labels (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i32>,
    /// Log rotation (json-file): max-size=SIZE (10m, -1 unlimited), max-file=N.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Run a tiny init (tini) as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Give a host device to the container: HOST[:CONTAINER[:PERMS]] (PERMS of rwm).
    #[arg(long = "device", value_name = "HOST[:CONTAINER[:PERMS]]")]
    pub device: Vec<String>,
    /// Allow devices in the container's cgroup: 'TYPE MAJOR:MINOR ACCESS' (e.g. 'c 1:3 rwm').
    #[arg(long = "device-cgroup-rule")]
    pub device_cgroup_rule: Vec<String>,
    /// Set a namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*, kernel.msg*,
    /// kernel.sem, fs.mqueue.*).
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Size of /dev/shm: bytes, or with a unit (64m, 1g); default 64m.
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// IPC namespace: private (default), shareable, host, none or container:NAME|ID.
    #[arg(long = "ipc")]
    pub ipc: Option<String>,
    /// PID namespace: host or container:NAME|ID (default: the container's own).
    #[arg(long = "pid")]
    pub pid: Option<String>,
    /// Image, then the command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub image_and_cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach stdout/stderr and forward signals.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach stdin.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<i32>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes too.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter (name=, id=, status=, label=, ancestor=).
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// table, json, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(short = 't', long)]
    pub tty: bool,
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    #[arg(long)]
    pub privileged: bool,
    #[arg(required = true)]
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines from the end ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only logs since (RFC 3339, unix seconds, or a duration like 10m).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// ps options (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Go template, e.g. '{{.State.Pid}}' or '{{json .Mounts}}'.
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// container or image (default: try both).
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Replay events from this time (RFC 3339, Unix seconds, or a duration ago: 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at this time (same forms); without it, follow until interrupted.
    #[arg(long)]
    pub until: Option<String>,
    /// type=container|image|network|volume|service|node, event=ACTION, container=,
    /// image=, network=, volume=, service=, node= (ID or name), label=KEY[=VALUE].
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// json (one object a line) or a Go template such as '{{.Type}} {{.Action}}'.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct FormatArgs {
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(short = 'a', long)]
    pub all: bool,
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(long)]
    pub format: Option<String>,
    /// Only images of this repository[:tag].
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Tarball path, or - for stdin.
    pub file: String,
    /// NAME[:TAG] for the new image.
    pub reference: Option<String>,
    /// Dockerfile instruction to apply (CMD, ENV, EXPOSE, ...).
    #[arg(short = 'c', long = "change")]
    pub change: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Archive to read (default: stdin).
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}
