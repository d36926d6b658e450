//! `skiff agent`: the per-host daemon.
//!
//! Map of the crate (its modules form layers, each importing only from its own layer
//! or below, front ends never from one another: see docs/architecture.md "Agent
//! layers", checked by `tests/layers.rs`):
//! - [`config`]: flags + `/etc/skiff/agent.yaml` → [`config::AgentConfig`];
//! - [`containers`]: every container this host runs, its lifecycle and its shim;
//! - [`engine`]: the container and network operations the executor drives, as traits
//!   (the real engine and an in-memory fake);
//! - [`server`]: the Engine gRPC API on the local unix socket;
//! - [`events`], [`logs`], [`inspect`], [`sysinfo`]: what the API reports;
//! - [`logpublisher`]: this node's share of `service logs`, sent to the leader's log broker;
//! - [`metrics`]: the Prometheus endpoint (`metrics_addr`), off unless configured;
//! - [`docker`]: Docker's Engine API on its own unix socket (`--docker-socket`), a third
//!   front end on the same engine;
//! - [`remote_api`]: the Engine API over mutual TLS for remote CLIs (`--api-listen-addr`);
//! - [`error`]: error kinds that survive the gRPC hop.
//!
//! The agent owns no container process: shims do (see `skiff_runtime::shim`), so the
//! agent can be killed and restarted without disturbing what runs.

pub mod archive;
pub mod attach;
pub mod build;
pub mod config;
pub mod containers;
pub mod counters;
pub mod docker;
pub mod engine;
pub mod error;
pub mod events;
pub mod executor;
pub mod humanize;
pub mod images;
pub mod imageshare;
pub mod inspect;
pub mod labels;
pub mod logpublisher;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod network;
pub mod prune;
pub mod registry;
pub mod remote_api;
pub mod request;
pub mod server;
pub mod shimpool;
pub mod stats;
pub mod sysinfo;
pub mod volumes;

use config::AgentConfig;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another agent is already listening on {0}")]
    AlreadyRunning(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] skiff_runtime::image::ImageError),
    #[error(transparent)]
    Agent(#[from] error::AgentError),
    #[error("cluster: {0}")]
    Cluster(#[from] skiff_controller::cluster::ClusterError),
    #[error("serving the API: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] metrics::ServeError),
    #[error("cluster: {0}")]
    ClusterFailed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Keeps the kernel's OOM killer away from the agent before it reaches containers.
fn protect_from_oom() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-500") {
        tracing::warn!(error = %e, "could not lower the agent's oom_score_adj");
    }
}

/// Runs the agent until SIGINT/SIGTERM. Containers keep running after it returns.
/// How often the agent returns freed heap to the kernel (a walk of malloc's free lists).
const HEAP_TRIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(cfg: AgentConfig) -> Result<(), StartError> {
    protect_from_oom();
    skiff_runtime::fsutil::create_dir_mode(&cfg.root, 0o700)
        .map_err(io(format!("creating {}", cfg.root.display())))?;
    skiff_runtime::fsutil::create_dir_mode(&cfg.exec_root, 0o700)
        .map_err(io(format!("creating {}", cfg.exec_root.display())))?;
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let images = Arc::new(skiff_runtime::image::ImageStore::open(&cfg.root)?);
    // glibc keeps what bursts of work (container starts and removals, pulls, builds)
    // freed for reuse, so the agent would stay at its peak: hand it back now and then.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(HEAP_TRIM_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(skiff_runtime::heap::release_free_memory).await;
        }
    });
    let events = Arc::new(events::EventBus::default());
    let containers = containers::Containers::new(cfg.clone(), images.clone(), events.clone());
    containers.restore().await?;

    if tokio::net::UnixStream::connect(&cfg.socket).await.is_ok() {
        return Err(StartError::AlreadyRunning(cfg.socket.display().to_string()));
    }
    let _ = std::fs::remove_file(&cfg.socket);
    let listener = tokio::net::UnixListener::bind(&cfg.socket)
        .map_err(io(format!("binding {}", cfg.socket.display())))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o660))
        .map_err(io("chmod socket"))?;
    tracing::info!(socket = %cfg.socket.display(), root = %cfg.root.display(), "agent listening");

    // The embedded controller: a one-manager cluster unless told to join one.
    let cluster = match &cfg.cluster {
        Some(cc) => {
            let mut cc = cc.clone();
            // This node serves its images to the others: on the cluster port when it has
            // one, else on the image-share port. One service, so one limit per node.
            let share = imageshare::ImageShareService::new(images.clone());
            cc.extra_routes = Some(share.clone().routes());
            let c = skiff_controller::cluster::Cluster::start(cc).await?;
            share.serve_without_cluster_port(c.clone(), cfg.image_share_port);
            Some(c)
        }
        None => None,
    };
    // Orchestration: the reconciler (acts only while this manager leads) and the task
    // executor that runs this node's share of the services.
    if let Some(c) = &cluster {
        let source: Arc<dyn executor::Source> = match c.raft() {
            Some(h) => {
                let mut alloc = skiff_controller::orchestrator::runner::AllocConfig {
                    avoid: skiff_runtime::network::link::host_routes,
                    ..Default::default()
                };
                if !cfg.network.overlay_pools.is_empty() {
                    alloc.pools = cfg.network.overlay_pools.clone();
                }
                skiff_controller::orchestrator::runner::spawn(h.clone(), alloc);
                containers
                    .networks
                    .set_cluster(Arc::new(attach::LocalAttacher {
                        raft: h.clone(),
                        node_id: c.node_id(),
                    }));
                executor::LocalSource::new(h)
            }
            None => {
                containers
                    .networks
                    .set_cluster(Arc::new(attach::RemoteAttacher { cluster: c.clone() }));
                executor::RemoteSource::spawn(c.clone())
            }
        };
        let fetcher = imageshare::ImageFetcher::new(images.clone(), c.clone());
        let engine: Arc<dyn engine::Engine> = Arc::new(containers.clone());
        executor::Executor::spawn(engine, source, c.node_id(), Some(fetcher));
        // `service logs`: this node's share, for whichever manager leads.
        logpublisher::LogPublisher::spawn(containers.clone(), c.clone());
    }
    if let Some(addr) = cfg.metrics_addr {
        let reg = metrics::registry(containers.clone(), cluster.clone());
        metrics::serve(addr, Arc::new(reg)).await?;
    }
    let engine_cluster = cluster.clone();
    let cluster_for_api = cluster.clone();
    // A manager whose raft died on a storage error exits (fail-stop); see `Cluster::fatal`.
    let (fatal_tx, fatal_rx) = tokio::sync::watch::channel(None::<String>);
    let mut fatal_wait = fatal_rx.clone();
    if let Some(c) = cluster.clone() {
        tokio::spawn(async move {
            let why = c.fatal().await;
            tracing::error!(error = %why, "stopping the agent");
            let _ = fatal_tx.send(Some(why));
            // Open streams (logs -f, watches) can hold a graceful shutdown forever.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            tracing::error!("graceful shutdown stalled; exiting now");
            std::process::exit(1);
        });
    }
    let orchestrator_api = cluster.clone().map(|cluster| {
        skiff_proto::orchestrator::orchestrator_server::OrchestratorServer::new(
            skiff_controller::api::orchestrator::OrchestratorApi { cluster },
        )
    });
    let cluster_api = cluster.map(|cluster| {
        skiff_proto::cluster::cluster_server::ClusterServer::new(
            skiff_controller::cluster::api::ClusterApi { cluster },
        )
    });

    if let (Some(addr), Some(c)) = (cfg.api_listen_addr, &cluster_for_api) {
        let engine = server::EngineService {
            containers: containers.clone(),
            images: images.clone(),
            events: events.clone(),
            cluster: engine_cluster.clone(),
        };
        remote_api::serve(
            addr,
            c.clone(),
            skiff_proto::engine::engine_server::EngineServer::new(engine)
                .max_decoding_message_size(64 << 20),
            cluster_api.clone(),
            orchestrator_api.clone(),
        )
        .await
        .map_err(io(format!("binding the Engine API port {addr}")))?;
    }
    let docker_task = match &cfg.docker_socket {
        Some(path) => {
            let l = docker::listen(path).await.map_err(io(format!(
                "binding the Docker API socket {}",
                path.display()
            )))?;
            tracing::info!(socket = %path.display(), "docker api listening");
            let api = Arc::new(docker::DockerApi::new(
                containers.clone(),
                images.clone(),
                events.clone(),
                engine_cluster.clone(),
            ));
            Some(tokio::spawn(docker::serve(l, api)))
        }
        None => None,
    };
    let networks = containers.networks.clone();
    let service = server::EngineService {
        containers,
        images,
        events,
        cluster: engine_cluster,
    };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                // A closed channel (no cluster) never ends the agent.
                if fatal_wait.wait_for(|f| f.is_some()).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {}
        }
        tracing::info!("shutting down; containers keep running");
    };
    tonic::transport::Server::builder()
        .add_service(
            skiff_proto::engine::engine_server::EngineServer::new(service)
                .max_decoding_message_size(64 << 20),
        )
        .add_optional_service(cluster_api)
        .add_optional_service(orchestrator_api)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    networks.drain_standbys().await;
    // Links of containers that stopped just before are still being deleted.
    networks
        .flush_reaper(std::time::Duration::from_secs(5))
        .await;
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(t) = docker_task {
        t.abort();
    }
    if let Some(p) = &cfg.docker_socket {
        let _ = std::fs::remove_file(p);
    }
    if let Some(why) = fatal_rx.borrow().clone() {
        return Err(StartError::ClusterFailed(why));
    }
    Ok(())
}

/// The executor fetches images through the engine's trait; the fetcher lives with the
/// image sharing it uses.
#[tonic::async_trait]
impl engine::ImageFetch for imageshare::ImageFetcher {
    async fn ensure(&self, image: &str) -> Result<(), String> {
        imageshare::ImageFetcher::ensure(self, image).await
    }
}
