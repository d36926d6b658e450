//! Images without a registry: every node serves its images to the cluster, and fetches
//! the image of a task it must run from a node that has it.
//!
//! Where a node serves: on its cluster port when it has one (managers, workers started
//! with `--listen-addr`), else on the image-share port ([`DEFAULT_SHARE_PORT`],
//! `--image-share-port`) at the address the cluster knows it by (its advertise IP, else
//! the IP it joined from: `data_addr`), once that port is open the node reports it in its
//! description. Both are mutual TLS with the node's certificate; a node certificate
//! that is not a current member is refused (a manager checks its state, a worker the
//! member list its heartbeat stream carries; see `skiff_controller::cluster::members`).
//!
//! Which node has an image is asked on demand rather than reported: image lists change
//! with every pull, build and prune and would cost a raft write each, while a manifest
//! request is one small call. A node missing an image asks every ready member that
//! serves (at most [`ASK_PARALLEL`] at once) for its manifest, then fetches from the
//! holders in a random order ([`plan`]), so several fetchers spread over every node
//! that has the image, including those that fetched it a moment ago. Each serving node
//! streams at most [`SERVE_PARALLEL`] blobs at once; further requests wait their turn.
//! The transfer and its checks (digests, sizes, diff IDs, nothing left behind on
//! failure) are `skiff_runtime::image::share`.

use skiff_controller::cluster::members::Member;
use skiff_controller::cluster::Cluster;
use skiff_controller::state::Role;
use skiff_controller::tls;
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

pub use crate::config::DEFAULT_SHARE_PORT;

/// Nodes asked for a manifest at once by one fetch.
pub const ASK_PARALLEL: usize = 16;

/// How long a node may take to answer whether it has an image.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

    /// Serves on `port` when this node has no cluster port and is a worker (a manager
    /// always has one): on its advertise IP, else on the IP the cluster saw it join
    /// from, once its member list says so. A port that cannot be opened (another
    /// agent on the same address) is logged and not reported, so no one asks there.
    pub fn serve_without_cluster_port(self, cluster: Arc<Cluster>, port: u16) {
        if port == 0
            || cluster.listen_addr().is_some()
            || cluster.node_state().role == Role::Manager
        {
            return;
        }
        tokio::spawn(async move {
            let configured = cluster
                .cfg
                .advertise_addr
                .as_deref()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.ip());
            let ip = loop {
                let known = configured.or_else(|| {
                    cluster
                        .own_data_addr()
                        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                });
                if let Some(ip) = known {
                    break ip;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            };
            let addr = std::net::SocketAddr::new(ip, port);
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e,
                        "cannot open the image-share port; this node's images stay on it");
                    return;
                }
            };
            let local = listener.local_addr().unwrap_or(addr);
            cluster.set_image_share_port(local.port());
            tracing::info!(addr = %local, "image share listening (mutual TLS)");
            let c = cluster.clone();
            let incoming = tls::node_incoming(listener, Arc::new(move || c.identity()));
            let res = tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(members_only(cluster)))
                .add_routes(self.routes())
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "image-share port stopped");
            }
        });
    }
}

/// The image-share port's check on every request: a node certificate of a current
/// member; CLI client certificates and removed nodes are refused.
fn members_only(
    cluster: Arc<Cluster>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let id = req
            .extensions()
            .get::<tls::PeerIdentity>()
            .and_then(|p| p.node_id.clone())
            .ok_or_else(|| {
                Status::unauthenticated("a node certificate from this cluster's CA is required")
            })?;
        cluster.is_member(&id).map_err(Status::permission_denied)?;
        Ok(req)
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

/// Another node, reached over its cluster port or image-share port.
#[derive(Clone)]
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
    /// registry the reference names (when it names one); else fetched from another node
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
            .sources()
            .map_err(|e| format!("no node to fetch {image} from: {e}"))?;
        let holders = ask_all(peers, image, &mut tried).await;
        let mut by_addr: std::collections::HashMap<String, GrpcPeer> = holders
            .iter()
            .map(|(h, p)| (h.addr.clone(), p.clone()))
            .collect();
        let order = plan(
            holders.into_iter().map(|(h, _)| h).collect(),
            rand::random(),
        );
        for addr in order {
            let Some(peer) = by_addr.remove(&addr) else {
                continue;
            };
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
            tried.push("no other node serves images".into());
        }
        Err(format!(
            "No such image: {image} (not on this node; {})",
            tried.join("; ")
        ))
    }
}

impl ImageFetcher {
    /// Every other ready member that serves images, with a channel to it; the managers
    /// this node knows while it has not heard a member list yet.
    fn sources(&self) -> Result<Vec<(GrpcPeer, bool)>, skiff_controller::cluster::ClusterError> {
        let me = self.cluster.node_id();
        let Some(members) = self.cluster.members() else {
            return Ok(self
                .cluster
                .other_manager_channels()?
                .into_iter()
                .map(|(a, ch)| (GrpcPeer::new(a, ch), true))
                .collect());
        };
        let id = self.cluster.identity();
        let cfg = tls::client_config(&id.ca_pem, Some(&id))?;
        members
            .into_iter()
            .filter(|m: &Member| m.node_id != me && m.ready && !m.image_addr.is_empty())
            .map(|m| {
                let ch = tls::channel(&m.image_addr, cfg.clone())?;
                Ok((GrpcPeer::new(m.image_addr, ch), m.role == Role::Manager))
            })
            .collect()
    }
}

/// Asks every peer (a few at a time, each bounded) whether it has `image`; returns the
/// holders and adds each failure to `tried`.
async fn ask_all(
    peers: Vec<(GrpcPeer, bool)>,
    image: &str,
    tried: &mut Vec<String>,
) -> Vec<(Holder, GrpcPeer)> {
    let asks = futures::stream::iter(peers.into_iter().map(|(peer, manager)| async move {
        let r = tokio::time::timeout(ASK_TIMEOUT, peer.manifest(image)).await;
        (peer, manager, r)
    }));
    let answers: Vec<_> =
        futures::StreamExt::collect(futures::StreamExt::buffer_unordered(asks, ASK_PARALLEL)).await;
    let mut holders = Vec::new();
    for (peer, manager, r) in answers {
        match r {
            Ok(Ok(Some(m))) => holders.push((
                Holder {
                    addr: peer.addr.clone(),
                    manager,
                    config: m.config,
                },
                peer,
            )),
            Ok(Ok(None)) => tried.push(format!("{}: no such image", peer.name())),
            Ok(Err(e)) => tried.push(e.to_string()),
            Err(_) => tried.push(format!("{}: no answer within {ASK_TIMEOUT:?}", peer.name())),
        }
    }
    holders
}

/// A node that answered it has the image, and which image (its config digest).
#[derive(Debug, Clone)]
pub struct Holder {
    pub addr: String,
    pub manager: bool,
    pub config: Digest,
}

/// The order to fetch from the holders in. When they disagree on what the name is (two
/// nodes built different images under one tag), the image most of them hold wins, on a
/// tie the one a manager holds, then the lowest digest, so every fetcher picks the same.
/// Holders of other images are left out; the rest come in an order drawn from `seed`
/// (random per fetch), so fetchers spread over every holder.
pub fn plan(holders: Vec<Holder>, seed: u64) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<String, Vec<Holder>> = Default::default();
    for h in holders {
        groups.entry(h.config.to_string()).or_default().push(h);
    }
    let Some(mut chosen) = groups.into_values().max_by(|a, b| {
        a.len()
            .cmp(&b.len())
            .then(
                a.iter()
                    .any(|h| h.manager)
                    .cmp(&b.iter().any(|h| h.manager)),
            )
            // Lowest digest wins: reversed, as `max_by` keeps the greatest.
            .then(b[0].config.to_string().cmp(&a[0].config.to_string()))
    }) else {
        return Vec::new();
    };
    // Fisher-Yates with a splitmix64 stream: reproducible for a given seed.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..chosen.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        chosen.swap(i, j);
    }
    chosen.into_iter().map(|h| h.addr).collect()
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

    fn holder(addr: &str, manager: bool, image: &[u8]) -> Holder {
        Holder {
            addr: addr.into(),
            manager,
            config: Digest::of(image),
        }
    }

    #[test]
    fn fetchers_spread_over_every_holder() {
        let holders: Vec<Holder> = (0..4)
            .map(|i| holder(&format!("10.0.0.{i}:7946"), i == 0, b"app"))
            .collect();
        let mut first = std::collections::BTreeMap::<String, usize>::new();
        for seed in 0..400u64 {
            let order = plan(holders.clone(), seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            assert_eq!(order.len(), 4, "every holder is a fallback");
            let mut sorted = order.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 4);
            *first.entry(order[0].clone()).or_default() += 1;
        }
        // Each of the four is asked first by a fair share of 400 fetchers.
        assert_eq!(first.len(), 4, "{first:?}");
        assert!(first.values().all(|n| (50..=150).contains(n)), "{first:?}");
        // The same seed gives the same order.
        assert_eq!(plan(holders.clone(), 7), plan(holders, 7));
    }

    #[test]
    fn when_holders_disagree_the_image_most_hold_wins_then_a_managers() {
        let order = plan(
            vec![
                holder("m:2377", true, b"old"),
                holder("w1:7946", false, b"new"),
                holder("w2:7946", false, b"new"),
            ],
            1,
        );
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["w1:7946", "w2:7946"]);
        let order = plan(
            vec![holder("m:2377", true, b"a"), holder("w1:7946", false, b"b")],
            1,
        );
        assert_eq!(order, vec!["m:2377"]);
        // Without a manager, the lowest digest: the same pick on every node.
        let (a, b) = (Digest::of(b"x"), Digest::of(b"y"));
        let low = if a.to_string() < b.to_string() {
            "wx"
        } else {
            "wy"
        };
        for seed in 0..8 {
            let order = plan(
                vec![holder("wx", false, b"x"), holder("wy", false, b"y")],
                seed,
            );
            assert_eq!(order, vec![low]);
        }
        assert!(plan(Vec::new(), 1).is_empty());
    }

    #[test]
    fn ids_are_not_tags() {
        assert!(looks_like_id("sha256:abcd"));
        assert!(looks_like_id(&"a".repeat(64)));
        assert!(!looks_like_id("busybox:latest"));
        assert!(!looks_like_id("registry.local:5000/app"));
    }
}
