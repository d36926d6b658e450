//! The agent's gRPC service: the Engine API on the local unix socket. Each handler is a
//! thin translation between protobuf messages and [`Containers`] / the image store.

use crate::containers::{Containers, CreateOptions};
use crate::error::AgentError;
use crate::events::{self, EventBus};
use crate::{inspect, logs, sysinfo};
use skiff_proto::engine::engine_server::Engine;
use skiff_proto::engine::*;
use skiff_runtime::image::{ImageStore, Reference};
use skiff_runtime::shim::frame::{read_frame, write_frame, Frame};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct EngineService {
    pub containers: Arc<Containers>,
    pub images: Arc<ImageStore>,
    pub events: Arc<EventBus>,
    /// The node's cluster membership, whose service and node events `events` merges in.
    pub cluster: Option<Arc<skiff_controller::cluster::Cluster>>,
}

fn blocking_err(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker failed: {e}"))
}

/// Pumps frames from a shim connection into attach output messages.
fn relay_output(
    mut rd: tokio::net::unix::OwnedReadHalf,
    tx: mpsc::Sender<Result<AttachOutput, Status>>,
    on_exit: impl std::future::Future<Output = Option<i32>> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut code = None;
        let mut error = String::new();
        while let Ok(Some(f)) = read_frame(&mut rd).await {
            let msg = match f {
                Frame::Stdout(d) => AttachOutput {
                    stream: 1,
                    data: d,
                    ..Default::default()
                },
                Frame::Stderr(d) => AttachOutput {
                    stream: 2,
                    data: d,
                    ..Default::default()
                },
                Frame::Exit { code: c, error: e } => {
                    code = Some(c);
                    error = e;
                    break;
                }
                _ => continue,
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        let settled = on_exit.await;
        let exit_code = code.or(settled).unwrap_or(255);
        let _ = tx
            .send(Ok(AttachOutput {
                exited: true,
                exit_code,
                error,
                ..Default::default()
            }))
            .await;
    });
}

/// Pumps client input into frames on the shim connection.
fn relay_input<T: Send + 'static>(
    mut input: Streaming<T>,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    first: Vec<Frame>,
    to_frames: fn(T) -> Vec<Frame>,
) {
    tokio::spawn(async move {
        for f in first {
            if write_frame(&mut wr, &f).await.is_err() {
                return;
            }
        }
        while let Ok(Some(m)) = input.message().await {
            for f in to_frames(m) {
                if write_frame(&mut wr, &f).await.is_err() {
                    return;
                }
            }
        }
        // The client went away: keep the write half open so the shim does not see EOF
        // as a detach of stdin it did not ask for; dropping it here is fine for pipes.
    });
}

fn attach_frames(m: AttachInput) -> Vec<Frame> {
    let mut v = Vec::new();
    if !m.data.is_empty() {
        v.push(Frame::Stdin(m.data));
    }
    if m.resize_width > 0 && m.resize_height > 0 {
        v.push(Frame::Resize {
            width: m.resize_width as u16,
            height: m.resize_height as u16,
        });
    }
    if m.close_stdin {
        v.push(Frame::CloseStdin);
    }
    v
}

fn exec_frames(m: ExecInput) -> Vec<Frame> {
    attach_frames(AttachInput {
        data: m.data,
        close_stdin: m.close_stdin,
        resize_width: m.resize_width,
        resize_height: m.resize_height,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl Engine for EngineService {
    type EventsStream = RpcStream<Event>;
    type ContainerAttachStream = RpcStream<AttachOutput>;
    type ContainerLogsStream = RpcStream<LogChunk>;
    type ContainerExecStream = RpcStream<AttachOutput>;
    type ContainerStatsStream = RpcStream<StatsResponse>;
    type ImagePullStream = RpcStream<ProgressMessage>;
    type ImagePushStream = RpcStream<ProgressMessage>;
    type ImageBuildStream = RpcStream<BuildOutput>;
    type ImageSaveStream = RpcStream<DataChunk>;
    type ContainerExportStream = RpcStream<DataChunk>;

    async fn version(&self, _: Request<Empty>) -> Result<Response<VersionInfo>, Status> {
        Ok(Response::new(sysinfo::version()))
    }

    async fn info(&self, _: Request<Empty>) -> Result<Response<InfoResponse>, Status> {
        let list = self.containers.list();
        let running = list.iter().filter(|e| e.state().is_running()).count() as u32;
        let images = self.images.list().map_err(AgentError::from)?.len() as u32;
        Ok(Response::new(sysinfo::info(
            &self.containers.cfg,
            list.len() as u32,
            running,
            images,
        )))
    }

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let out = events::stream(&self.events, self.cluster.clone(), req.into_inner());
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn image_import(
        &self,
        req: Request<Streaming<ImportChunk>>,
    ) -> Result<Response<ImageRef>, Status> {
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty import"))?;
        let reference = if first.reference.is_empty() {
            None
        } else {
            Some(
                Reference::parse(&first.reference)
                    .map_err(|e| AgentError::Invalid(e.to_string()))?,
            )
        };
        let (tx, rx) = mpsc::channel(16);
        let _ = tx.send(first.data).await;
        tokio::spawn(async move {
            while let Ok(Some(m)) = input.message().await {
                if tx.send(m.data).await.is_err() {
                    break;
                }
            }
        });
        let id = crate::images::import(
            &self.containers,
            rx,
            reference.clone(),
            first.changes,
            String::new(),
        )
        .await?;
        Ok(Response::new(ImageRef {
            id: id.to_string(),
            reference: reference.map(|r| r.to_string()).unwrap_or_default(),
        }))
    }

    async fn image_load(
        &self,
        req: Request<Streaming<DataChunk>>,
    ) -> Result<Response<LoadResponse>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(m)) = input.message().await {
                if tx.send(m.data).await.is_err() {
                    break;
                }
            }
        });
        let loaded = crate::images::load(&self.containers, rx).await?;
        Ok(Response::new(LoadResponse { loaded }))
    }

    async fn image_list(
        &self,
        req: Request<ImageListRequest>,
    ) -> Result<Response<ImageListResponse>, Status> {
        let list = crate::images::list(&self.containers, req.into_inner().all).await?;
        let images = list
            .into_iter()
            .map(|l| ImageSummary {
                id: l.image.id().to_string(),
                repo_tags: l.image.repo_tags.clone(),
                created_unix: l.image.created().map(|c| c.timestamp()).unwrap_or_default(),
                size: l.size,
                repo_digests: l.image.record.repo_digests.clone(),
                containers: l.containers,
            })
            .collect();
        Ok(Response::new(ImageListResponse { images }))
    }

    async fn image_tag(&self, req: Request<TagRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        crate::images::tag(&self.containers, &r.source, &r.target)?;
        Ok(Response::new(Empty {}))
    }

    async fn image_remove(
        &self,
        req: Request<ImageRemoveRequest>,
    ) -> Result<Response<ImageRemoveResponse>, Status> {
        let r = req.into_inner();
        let mut resp = ImageRemoveResponse::default();
        for name in &r.names {
            let (untagged, deleted) = crate::images::remove(&self.containers, name, r.force)?;
            resp.untagged.extend(untagged);
            resp.deleted.extend(deleted);
        }
        Ok(Response::new(resp))
    }

    async fn image_inspect(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        let img = self
            .images
            .resolve(&req.into_inner().id)
            .map_err(AgentError::from)?;
        let size = self.images.size(&img);
        Ok(Response::new(JsonDocument {
            json: inspect::image(&img, size).to_string(),
        }))
    }

    async fn container_create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let r = req.into_inner();
        let cfg = r
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let entrypoint_set = cfg.entrypoint_set;
        let config = crate::request::to_config(cfg)?;
        let span = tracing::info_span!("create", image = %config.image);
        let (id, warnings) = self
            .containers
            .create(CreateOptions {
                name: Some(r.name),
                config,
                entrypoint_set,
            })
            .instrument(span)
            .await?;
        Ok(Response::new(CreateResponse { id, warnings }))
    }

    async fn container_start(&self, req: Request<StartRequest>) -> Result<Response<Empty>, Status> {
        self.containers.start(&req.into_inner().id).await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_attach(
        &self,
        req: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::ContainerAttachStream>, Status> {
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty attach"))?;
        let (entry, conn) = if first.start {
            let size = (first.resize_width > 0 && first.resize_height > 0)
                .then_some((first.resize_width as u16, first.resize_height as u16));
            self.containers
                .start_attached(&first.id, first.stdin, size)
                .await?
        } else {
            self.containers.attach(&first.id, first.stdin).await?
        };
        let (rd, wr) = conn.into_split();
        let (tx, rx) = mpsc::channel(256);
        let containers = self.containers.clone();
        let e2 = entry.clone();
        relay_output(rd, tx, async move {
            containers.wait_handled(&e2).await;
            Some(e2.state().exit_code)
        });
        let mut first_frames = attach_frames(AttachInput {
            data: first.data,
            close_stdin: first.close_stdin,
            resize_width: first.resize_width,
            resize_height: first.resize_height,
            ..Default::default()
        });
        if !first.stdin {
            first_frames.retain(|f| matches!(f, Frame::Resize { .. }));
        }
        relay_input(input, wr, first_frames, attach_frames);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn container_stop(&self, req: Request<StopRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.containers
            .stop(&r.id, r.timeout_set.then_some(r.timeout.max(0) as u32))
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_restart(
        &self,
        req: Request<StopRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.containers
            .restart(&r.id, r.timeout_set.then_some(r.timeout.max(0) as u32))
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_kill(&self, req: Request<KillRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.containers.kill(&r.id, &r.signal).await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_remove(
        &self,
        req: Request<RemoveRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.containers
            .remove_with_volumes(&r.id, r.force, r.volumes)
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn network_create(
        &self,
        req: Request<NetworkCreateRequest>,
    ) -> Result<Response<NetworkCreateResponse>, Status> {
        Ok(Response::new(
            crate::request::networks::create_any(
                &self.containers,
                self.cluster.as_ref(),
                req.into_inner(),
            )
            .await?,
        ))
    }

    async fn network_list(
        &self,
        req: Request<NetworkListRequest>,
    ) -> Result<Response<NetworkListResponse>, Status> {
        Ok(Response::new(
            crate::request::networks::list(&self.containers, req.into_inner()).await,
        ))
    }

    async fn network_inspect(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        let doc = self
            .containers
            .networks
            .inspect(&req.into_inner().id)
            .await?;
        Ok(Response::new(JsonDocument {
            json: doc.to_string(),
        }))
    }

    async fn network_remove(&self, req: Request<NameRequest>) -> Result<Response<Empty>, Status> {
        crate::request::networks::remove_any(
            &self.containers,
            self.cluster.as_ref(),
            &req.into_inner().id,
        )
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn network_prune(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let deleted =
            crate::request::networks::prune(&self.containers, &req.into_inner().filters).await;
        Ok(Response::new(PruneResponse {
            deleted,
            ..Default::default()
        }))
    }

    async fn network_connect(
        &self,
        req: Request<NetworkConnectRequest>,
    ) -> Result<Response<Empty>, Status> {
        crate::request::networks::connect(&self.containers, req.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn network_disconnect(
        &self,
        req: Request<NetworkConnectRequest>,
    ) -> Result<Response<Empty>, Status> {
        crate::request::networks::disconnect(&self.containers, req.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_port(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<PortResponse>, Status> {
        Ok(Response::new(
            crate::request::networks::port(&self.containers, &req.into_inner().id).await?,
        ))
    }

    async fn container_list(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ListResponse>, Status> {
        let r = req.into_inner();
        let containers = crate::request::list_containers(&self.containers, r.all, &r.filters)
            .into_iter()
            .map(|e| {
                let rec = e.record();
                ContainerSummary {
                    id: e.id.clone(),
                    names: vec![rec.name.clone()],
                    image: rec.config.image.clone(),
                    command: inspect::command_line(&e),
                    created_unix: rec.created.timestamp(),
                    state: e.state().status.as_str().into(),
                    status: inspect::status_line(&e),
                    ports: crate::network::ports_line(&self.containers.networks.ports_now(&e.id)),
                    labels: rec.config.labels.clone().into_iter().collect(),
                }
            })
            .collect();
        Ok(Response::new(ListResponse { containers }))
    }

    async fn container_inspect(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        let e = self.containers.get(&req.into_inner().id)?;
        let doc = inspect::container_full(&self.containers, &e).await;
        Ok(Response::new(JsonDocument {
            json: doc.to_string(),
        }))
    }

    async fn container_wait(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<WaitResponse>, Status> {
        let code = self.containers.wait(&req.into_inner().id).await?;
        Ok(Response::new(WaitResponse {
            status_code: code,
            error: String::new(),
        }))
    }

    async fn container_logs(
        &self,
        req: Request<LogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        let mut r = req.into_inner();
        if !r.stdout && !r.stderr {
            r.stdout = true;
            r.stderr = true;
        }
        let e = self.containers.get(&r.id)?;
        let rx = logs::stream(e, r).map_err(AgentError::from)?;
        let rx = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok);
        Ok(Response::new(Box::pin(rx)))
    }

    async fn container_exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ContainerExecStream>, Status> {
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty exec"))?;
        if first.cmd.is_empty() {
            return Err(Status::invalid_argument("no exec command specified"));
        }
        let spec = skiff_runtime::shim::exec::ExecSpec {
            args: first.cmd.clone(),
            env: first.env.clone(),
            cwd: first.working_dir.clone(),
            user: first.user.clone(),
            tty: first.tty,
            stdin: first.stdin,
            privileged: first.privileged,
            console_size: (first.resize_width > 0 && first.resize_height > 0)
                .then_some((first.resize_width as u16, first.resize_height as u16)),
            ..Default::default()
        };
        let span = tracing::info_span!("exec", container = %first.id);
        let (conn, _pid) = self
            .containers
            .exec(&first.id, spec, first.detach)
            .instrument(span)
            .await?;
        let (tx, rx) = mpsc::channel(256);
        if first.detach {
            let _ = tx
                .send(Ok(AttachOutput {
                    exited: true,
                    exit_code: 0,
                    ..Default::default()
                }))
                .await;
            // Keep the connection open in the background until the exec ends.
            tokio::spawn(async move {
                let (mut rd, _wr) = conn.into_split();
                while let Ok(Some(_)) = read_frame(&mut rd).await {}
            });
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let (rd, wr) = conn.into_split();
        relay_output(rd, tx, async { None });
        let first_frames = exec_frames(ExecInput {
            data: first.data,
            close_stdin: first.close_stdin,
            resize_width: first.resize_width,
            resize_height: first.resize_height,
            ..Default::default()
        });
        relay_input(input, wr, first_frames, exec_frames);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn container_top(
        &self,
        req: Request<TopRequest>,
    ) -> Result<Response<TopResponse>, Status> {
        let r = req.into_inner();
        let (titles, rows) = inspect::top(&self.containers, &r.id, r.ps_args).await?;
        let processes = rows.into_iter().map(|cells| TopRow { cells }).collect();
        Ok(Response::new(TopResponse { titles, processes }))
    }

    async fn container_rename(
        &self,
        req: Request<RenameRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.containers.rename(&r.id, &r.new_name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn image_pull(
        &self,
        req: Request<PullRequest>,
    ) -> Result<Response<Self::ImagePullStream>, Status> {
        let rx = crate::registry::pull(
            self.images.clone(),
            self.events.clone(),
            self.containers.metrics.clone(),
            crate::registry::registry_config(),
            req.into_inner(),
        )?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn image_push(
        &self,
        req: Request<PushRequest>,
    ) -> Result<Response<Self::ImagePushStream>, Status> {
        let rx = crate::registry::push(
            self.images.clone(),
            self.events.clone(),
            crate::registry::registry_config(),
            req.into_inner(),
        )?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn registry_login(
        &self,
        req: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(
            crate::registry::login(&crate::registry::registry_config(), req.into_inner()).await?,
        ))
    }

    async fn image_build(
        &self,
        req: Request<Streaming<BuildInput>>,
    ) -> Result<Response<Self::ImageBuildStream>, Status> {
        let rx = crate::build::build(
            self.containers.clone(),
            self.images.clone(),
            self.events.clone(),
            crate::registry::registry_config(),
            req.into_inner(),
        )
        .await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn image_save(
        &self,
        req: Request<SaveRequest>,
    ) -> Result<Response<Self::ImageSaveStream>, Status> {
        let rx = crate::build::save(self.images.clone(), req.into_inner().names)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn image_history(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        Ok(Response::new(crate::build::history(
            &self.images,
            &req.into_inner().id,
        )?))
    }

    async fn container_export(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<Self::ContainerExportStream>, Status> {
        let rx = crate::build::export(&self.containers, &req.into_inner().id)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn container_commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<ImageRef>, Status> {
        let r = crate::build::commit(&self.containers, req.into_inner(), false).await?;
        Ok(Response::new(r))
    }

    async fn volume_create(
        &self,
        req: Request<VolumeCreateRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        Ok(Response::new(crate::request::volumes::create(
            &self.containers,
            req.into_inner(),
        )?))
    }

    async fn volume_list(
        &self,
        req: Request<VolumeListRequest>,
    ) -> Result<Response<VolumeListResponse>, Status> {
        Ok(Response::new(crate::request::volumes::list(
            &self.containers,
            req.into_inner(),
        )))
    }

    async fn volume_inspect(
        &self,
        req: Request<NameRequest>,
    ) -> Result<Response<JsonDocument>, Status> {
        let v = self
            .containers
            .volumes
            .store
            .get(&req.into_inner().id)
            .map_err(AgentError::from)?;
        Ok(Response::new(JsonDocument {
            json: v.to_docker_json().to_string(),
        }))
    }

    async fn volume_remove(
        &self,
        req: Request<VolumeRemoveRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        crate::request::volumes::remove(&self.containers, &r.name, r.force)?;
        Ok(Response::new(Empty {}))
    }

    async fn volume_prune(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(crate::prune::volumes(
            &self.containers,
            r.all,
            &r.filters,
        )))
    }

    async fn container_update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let r = req.into_inner();
        let delta = crate::volumes::resources_from_proto(r.resources.unwrap_or_default())?;
        let mut warnings = Vec::new();
        for id in &r.ids {
            warnings.extend(crate::stats::update(&self.containers, id, &delta).await?);
        }
        Ok(Response::new(UpdateResponse { warnings }))
    }

    async fn container_stats(
        &self,
        req: Request<StatsRequest>,
    ) -> Result<Response<Self::ContainerStatsStream>, Status> {
        let r = req.into_inner();
        let e = self.containers.get(&r.id)?;
        let rx = crate::stats::stream(self.containers.clone(), e, r.stream);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn container_prune(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        Ok(Response::new(
            crate::prune::containers(&self.containers, &req.into_inner().filters).await?,
        ))
    }

    async fn image_prune(
        &self,
        req: Request<PruneRequest>,
    ) -> Result<Response<PruneResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            crate::prune::images(&self.containers, r.all, &r.filters).await?,
        ))
    }

    async fn system_df(&self, _: Request<Empty>) -> Result<Response<DfResponse>, Status> {
        let c = self.containers.clone();
        let df = tokio::task::spawn_blocking(move || crate::prune::df(&c))
            .await
            .map_err(blocking_err)??;
        Ok(Response::new(df))
    }
}
