//! Images without a registry: this node serves its images to the cluster, and fetches
//! the image of a task it must run from a node that has it.
//!
//! Served on the cluster port (mutual TLS, removed nodes refused), so only managers
//! serve: workers open no port. Which node has an image is asked on demand: a node
//! missing an image asks each other manager in turn (leader first) for its manifest,
//! and fetches from the first that has it. Each serving node streams at most
//! [`SERVE_PARALLEL`] blobs at once; further requests wait their turn, so many workers
//! fetching at once share the source instead of swamping it. The transfer and its
//! checks (digests, sizes, diff IDs, nothing left behind on failure) are
//! `skiff_runtime::image::share`.

use skiff_controller::cluster::Cluster;
use skiff_proto::images as pb;
use skiff_runtime::digest::Digest;
use skiff_runtime::image::reference::DEFAULT_DOMAIN;
use skiff_runtime::image::registry::{self, RegistryConfig};
use skiff_runtime::image::share::{self, ChunkStream, Peer, PeerLayer, PeerManifest, ShareError};
use skiff_runtime::image::{ImageError, ImageStore, Reference};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Blobs one node streams at once; more requests queue.
pub const SERVE_PARALLEL: usize = 4;

/// The serving side: this node's store, read only.
#[derive(Clone)]
pub struct ImageShareService {
    store: Arc<ImageStore>,
    permits: Arc<Semaphore>,
}

impl ImageShareService {
    pub fn new(store: Arc<ImageStore>) -> Self {
        ImageShareService {
            store,
            permits: Arc::new(Semaphore::new(SERVE_PARALLEL)),
        }
    }

    /// The service as routes for the cluster port.
    pub fn routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(pb::image_share_server::ImageShareServer::new(self))
    }
}

type BlobStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::image_share_server::ImageShare for ImageShareService {
    type BlobStream = BlobStream;

    async fn manifest(
        &self,
        req: Request<pb::ImageRequest>,
    ) -> Result<Response<pb::ImageManifest>, Status> {
        let name = req.into_inner().name;
        let st = self.store.clone();
        let span = tracing::debug_span!("image_share_manifest", image = %name);
        let m = tokio::task::spawn_blocking(move || share::manifest_of(&st, &name))
            .instrument(span)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match m {
            Ok(m) => Ok(Response::new(pb::ImageManifest {
                config_digest: m.config.to_string(),
                config_size: m.config_size,
                layers: m
                    .layers
                    .into_iter()
                    .map(|l| pb::LayerDescriptor {
                        digest: l.digest.to_string(),
                        media_type: l.media_type,
                        size: l.size,
                    })
                    .collect(),
            })),
            Err(e @ (ImageError::NotFound(_) | ImageError::Ambiguous(_))) => {
                Err(Status::not_found(e.to_string()))
            }
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn blob(&self, req: Request<pb::BlobRequest>) -> Result<Response<BlobStream>, Status> {
        let raw = req.into_inner().digest;
        let digest =
            Digest::parse(&raw).map_err(|e| Status::invalid_argument(format!("{raw:?}: {e}")))?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let path = self.store.blob_path(&digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!("no blob {digest} on this node")))
            }
            Err(e) => return Err(Status::internal(format!("{}: {e}", path.display()))),
        };
        let (tx, rx) = mpsc::channel::<Result<pb::BlobChunk, Status>>(4);
        let span = tracing::debug_span!("image_share_blob", blob = %digest);
        tokio::spawn(
            async move {
                // Held until the last chunk is sent or the fetcher goes away.
                let _permit = permit;
                loop {
                    let mut buf = vec![0u8; share::CHUNK_BYTES];
                    let mut n = 0;
                    // Fill whole chunks: fewer, larger messages.
                    while n < buf.len() {
                        match file.read(&mut buf[n..]).await {
                            Ok(0) => break,
                            Ok(k) => n += k,
                            Err(e) => {
                                let _ = tx
                                    .send(Err(Status::internal(format!("{}: {e}", path.display()))))
                                    .await;
                                return;
                            }
                        }
                    }
                    if n == 0 {
                        return;
                    }
                    buf.truncate(n);
                    if tx.send(Ok(pb::BlobChunk { data: buf })).await.is_err() {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Another node, reached over the cluster port.
pub struct GrpcPeer {
    addr: String,
    client: pb::image_share_client::ImageShareClient<tonic::transport::Channel>,
}

impl GrpcPeer {
    pub fn new(addr: String, channel: tonic::transport::Channel) -> Self {
        GrpcPeer {
            addr,
            client: pb::image_share_client::ImageShareClient::new(channel),
        }
    }

    fn transport(&self, s: Status) -> ShareError {
        ShareError::Transport {
            peer: self.name(),
            message: s.message().to_string(),
        }
    }
}

impl Peer for GrpcPeer {
    fn name(&self) -> String {
        format!("node {}", self.addr)
    }

    async fn manifest(&self, name: &str) -> Result<Option<PeerManifest>, ShareError> {
        let r = match self
            .client
            .clone()
            .manifest(pb::ImageRequest { name: name.into() })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(self.transport(s)),
        };
        let bad = |reason: String| ShareError::BadManifest {
            peer: self.name(),
            name: name.into(),
            reason,
        };
        let parse = |d: &str| Digest::parse(d).map_err(|e| bad(format!("{d:?}: {e}")));
        Ok(Some(PeerManifest {
            config: parse(&r.config_digest)?,
            config_size: r.config_size,
            layers: r
                .layers
                .into_iter()
                .map(|l| {
                    Ok(PeerLayer {
                        digest: parse(&l.digest)?,
                        media_type: l.media_type,
                        size: l.size,
                    })
                })
                .collect::<Result<_, ShareError>>()?,
        }))
    }

    async fn blob(&self, digest: &Digest) -> Result<ChunkStream, ShareError> {
        let s = self
            .client
            .clone()
            .blob(pb::BlobRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(|s| self.transport(s))?
            .into_inner();
        let peer = self.name();
        Ok(Box::pin(s.map(move |r| {
            r.map(|c| c.data).map_err(|s| ShareError::Transport {
                peer: peer.clone(),
                message: s.message().to_string(),
            })
        })))
    }
}

/// The fetching side, used by the task executor before it creates a container.
pub struct ImageFetcher {
    store: Arc<ImageStore>,
    cluster: Arc<Cluster>,
    registry: RegistryConfig,
    /// One fetch at a time on this node: tasks of one service wait for the first
    /// fetch instead of each fetching the same layers.
    lock: tokio::sync::Mutex<()>,
}

impl ImageFetcher {
    pub fn new(store: Arc<ImageStore>, cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(ImageFetcher {
            store,
            cluster,
            registry: crate::registry::registry_config(),
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn have(&self, image: &str) -> bool {
        self.store.resolve(image).is_ok()
    }

    /// Makes sure `image` is in this node's store: already there; else pulled from the
    /// registry the reference names (when it names one); else fetched from a manager
    /// that has it. The error names every source tried and why it failed.
    pub async fn ensure(&self, image: &str) -> Result<(), String> {
        if self.have(image) {
            return Ok(());
        }
        let _one = self.lock.lock().await;
        if self.have(image) {
            return Ok(());
        }
        let span = tracing::info_span!("image_fetch", image = %image);
        self.fetch(image).instrument(span).await
    }

    async fn fetch(&self, image: &str) -> Result<(), String> {
        let reference = Reference::parse(image).ok();
        let mut tried = Vec::new();
        if let Some(r) = reference.as_ref().filter(|r| r.domain != DEFAULT_DOMAIN) {
            let started = std::time::Instant::now();
            match registry::pull(
                self.store.clone(),
                r,
                None,
                &self.registry,
                registry::quiet(),
            )
            .await
            {
                Ok(p) => {
                    tracing::info!(id = %p.id, registry = %r.domain,
                        ms = started.elapsed().as_millis() as u64, "pulled image from a registry");
                    return Ok(());
                }
                Err(e) => tried.push(format!("registry {}: {e}", r.domain)),
            }
        }
        // Tags travel with the image only when asked for by tag; an ID stays an ID.
        let tags: Vec<Reference> = reference
            .into_iter()
            .filter(|r| r.digest.is_none() && !looks_like_id(image))
            .collect();
        let peers = self
            .cluster
            .other_manager_channels()
            .map_err(|e| format!("no node to fetch {image} from: {e}"))?;
        for (addr, ch) in peers {
            let peer = GrpcPeer::new(addr, ch);
            let started = std::time::Instant::now();
            match share::fetch(&self.store, &peer, image, &tags).await {
                Ok(Some(id)) => {
                    tracing::info!(%id, from = %peer.name(),
                        ms = started.elapsed().as_millis() as u64, "fetched image from a peer");
                    return Ok(());
                }
                Ok(None) => tried.push(format!("{}: no such image", peer.name())),
                Err(e) => {
                    tracing::warn!(error = %e, "fetching image from a peer");
                    tried.push(e.to_string());
                }
            }
        }
        if tried.is_empty() {
            tried.push("no other manager is known".into());
        }
        Err(format!(
            "No such image: {image} (not on this node; {})",
            tried.join("; ")
        ))
    }
}

/// An image ID or ID prefix (`sha256:...`, or bare hex) rather than a name.
fn looks_like_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    s.starts_with("sha256:") || (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_proto::images::image_share_server::ImageShare;

    fn store() -> (tempfile::TempDir, Arc<ImageStore>) {
        let dir = tempfile::tempdir().expect("test setup");
        let st = Arc::new(ImageStore::open(dir.path()).expect("test setup"));
        (dir, st)
    }

    #[tokio::test]
    async fn serves_a_blob_in_chunks_and_refuses_unknown_ones() {
        let (_d, st) = store();
        let data: Vec<u8> = (0..(share::CHUNK_BYTES * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let (digest, _) = st.put_blob(&data[..], None).expect("test setup");
        let svc = ImageShareService::new(st.clone());
        let mut s = svc
            .blob(Request::new(pb::BlobRequest {
                digest: digest.to_string(),
            }))
            .await
            .expect("test setup")
            .into_inner();
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = s.next().await {
            got.extend(c.expect("test setup").data);
            chunks += 1;
        }
        assert_eq!(got, data);
        assert_eq!(chunks, 3);
        let missing = Digest::of(b"nothing");
        let err = svc
            .blob(Request::new(pb::BlobRequest {
                digest: missing.to_string(),
            }))
            .await
            .err()
            .expect("an error");
        assert_eq!(err.code(), tonic::Code::NotFound);
        let err = svc
            .blob(Request::new(pb::BlobRequest {
                digest: "sha256:../../etc/passwd".into(),
            }))
            .await
            .err()
            .expect("an error");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn a_source_streams_a_bounded_number_of_blobs_at_once() {
        let (_d, st) = store();
        let (digest, _) = st
            .put_blob(&vec![7u8; share::CHUNK_BYTES * 40][..], None)
            .expect("test setup");
        let svc = ImageShareService::new(st);
        let mut open = Vec::new();
        for _ in 0..SERVE_PARALLEL {
            open.push(
                svc.blob(Request::new(pb::BlobRequest {
                    digest: digest.to_string(),
                }))
                .await
                .expect("test setup")
                .into_inner(),
            );
        }
        // Every permit is held by a stream nobody reads: the next request waits...
        let next = svc.blob(Request::new(pb::BlobRequest {
            digest: digest.to_string(),
        }));
        tokio::pin!(next);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut next).await;
        assert!(
            waited.is_err(),
            "a fifth stream started while four were open"
        );
        // ...until one of them goes away.
        drop(open.pop());
        let s = tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("the waiting request proceeds once a stream ends");
        assert!(s.is_ok());
    }

    #[tokio::test]
    async fn the_manifest_of_a_missing_image_is_not_found() {
        let (_d, st) = store();
        let svc = ImageShareService::new(st);
        let err = svc
            .manifest(Request::new(pb::ImageRequest {
                name: "nothing:here".into(),
            }))
            .await
            .expect_err("no such image");
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    #[test]
    fn ids_are_not_tags() {
        assert!(looks_like_id("sha256:abcd"));
        assert!(looks_like_id(&"a".repeat(64)));
        assert!(!looks_like_id("busybox:latest"));
        assert!(!looks_like_id("registry.local:5000/app"));
    }
}
