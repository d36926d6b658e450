//! Images fetched from another node instead of a registry: what a node serves of its
//! store, and how a node takes an image from a peer without trusting it.
//!
//! The transport is not here (the agent carries it over the cluster's mutual-TLS
//! port); this module sees a peer as a [`Peer`]: a manifest (the config digest and the
//! layer blobs, bottom first) and blobs as streams of chunks. Everything a peer sends
//! is checked: every blob against the digest it was asked for (streamed into the
//! store, never held whole in memory, and cut off past the size announced), the config
//! against its limits and the layer count, and each layer's unpacked content against
//! the config's diff ID. When anything fails, the blobs and snapshots this fetch added
//! are removed again, so a bad peer leaves nothing behind.

use super::config::{ImageConfig, MAX_CONFIG_BYTES};
use super::reference::Reference;
use super::registry::{ChannelReader, PARALLEL_LAYERS};
use super::store::ImageStore;
use super::ImageError;
use crate::digest::Digest;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Chunks a blob is served in: small enough to bound memory, large enough to keep
/// per-message overhead negligible.
pub const CHUNK_BYTES: usize = 256 << 10;

/// Most layers one manifest may list (Docker's own limit is 127 for overlay mounts).
pub const MAX_LAYERS: usize = 256;

/// One layer blob of an image as a peer describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerLayer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What an image is made of, as a peer describes it (unverified until fetched).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerManifest {
    /// The config digest, which is the image ID.
    pub config: Digest,
    pub config_size: u64,
    pub layers: Vec<PeerLayer>,
}

/// A blob as a stream of chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ShareError>> + Send>>;

/// A node images can be fetched from.
pub trait Peer: Send + Sync {
    /// Where the peer is, for messages.
    fn name(&self) -> String;
    /// The manifest of the image `name`, or `None` when the peer has no such image.
    fn manifest(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<PeerManifest>, ShareError>> + Send;
    /// The bytes of one blob.
    fn blob(&self, digest: &Digest)
        -> impl Future<Output = Result<ChunkStream, ShareError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{peer}: {message}")]
    Transport { peer: String, message: String },
    #[error("{peer} described image {name:?} wrongly: {reason}")]
    BadManifest {
        peer: String,
        name: String,
        reason: String,
    },
    #[error("{peer} sent more than the {size} bytes it announced for blob {digest}")]
    TooLarge {
        peer: String,
        digest: Digest,
        size: u64,
    },
    #[error("blob {digest} from {peer}: {source}")]
    Blob {
        peer: String,
        digest: Digest,
        source: Box<ImageError>,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("background task failed: {0}")]
    Join(String),
}

/// What this node can serve of `name`: the manifest of a local image.
pub fn manifest_of(store: &ImageStore, name: &str) -> Result<PeerManifest, ImageError> {
    let image = store.resolve(name)?;
    let size_of = |d: &Digest| {
        let p = store.blob_path(d);
        std::fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| ImageError::io(p, e))
    };
    let layers = image
        .record
        .layers
        .iter()
        .map(|l| {
            Ok(PeerLayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: size_of(&l.digest)?,
            })
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    Ok(PeerManifest {
        config_size: size_of(image.id())?,
        config: image.id().clone(),
        layers,
    })
}

/// Fetches the image `name` from `peer` into `store`, tagging it with `tags`. Returns
/// the image ID, or `None` when the peer has no such image. Blobs already in the store
/// are not fetched again. On any error, nothing this call added stays in the store.
pub async fn fetch<P: Peer>(
    store: &Arc<ImageStore>,
    peer: &P,
    name: &str,
    tags: &[Reference],
) -> Result<Option<Digest>, ShareError> {
    let Some(m) = peer.manifest(name).await? else {
        return Ok(None);
    };
    let mut added = Vec::new();
    let result = fetch_manifest(store, peer, name, &m, tags, &mut added).await;
    if result.is_err() && !added.is_empty() {
        let st = store.clone();
        let blobs = added.clone();
        let undone = tokio::task::spawn_blocking(move || st.discard_blobs(&blobs))
            .await
            .map_err(|e| ShareError::Join(e.to_string()))
            .and_then(|r| r.map_err(ShareError::from));
        if let Err(e) = undone {
            tracing::warn!(error = %e, "removing the blobs of a failed image fetch");
        }
    }
    result.map(Some)
}

async fn fetch_manifest<P: Peer>(
    store: &Arc<ImageStore>,
    peer: &P,
    name: &str,
    m: &PeerManifest,
    tags: &[Reference],
    added: &mut Vec<Digest>,
) -> Result<Digest, ShareError> {
    let bad = |reason: String| ShareError::BadManifest {
        peer: peer.name(),
        name: name.into(),
        reason,
    };
    if m.config_size > MAX_CONFIG_BYTES as u64 {
        return Err(bad(format!(
            "config of {} bytes is over the {MAX_CONFIG_BYTES}-byte limit",
            m.config_size
        )));
    }
    if m.layers.len() > MAX_LAYERS {
        return Err(bad(format!(
            "{} layers is over the limit of {MAX_LAYERS}",
            m.layers.len()
        )));
    }
    if !store.has_blob(&m.config) {
        receive(store, peer, &m.config, m.config_size).await?;
        added.push(m.config.clone());
    }
    let raw = store.read_blob(&m.config, MAX_CONFIG_BYTES)?;
    let config: ImageConfig =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("config {}: {e}", m.config)))?;
    config
        .validate()
        .map_err(|e| bad(format!("config {}: {e}", m.config)))?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(bad(format!(
            "its config lists {} layers, its manifest {}",
            config.rootfs.diff_ids.len(),
            m.layers.len()
        )));
    }
    let missing: Vec<&PeerLayer> = m
        .layers
        .iter()
        .filter(|l| !store.has_blob(&l.digest))
        .collect();
    // Collected first: a lazily mapped stream would make this future's type carry a
    // closure with higher-ranked lifetimes, which tokio::spawn rejects.
    let futs: Vec<_> = missing
        .into_iter()
        .map(|l| async move {
            receive(store, peer, &l.digest, l.size)
                .await
                .map(|()| l.digest.clone())
        })
        .collect();
    let mut downloads = futures::stream::iter(futs).buffer_unordered(PARALLEL_LAYERS);
    let mut first_err = None;
    while let Some(r) = downloads.next().await {
        match r {
            Ok(d) => added.push(d),
            // Let the other downloads finish (or fail) so every blob that landed is
            // known and can be removed.
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    drop(downloads);
    if let Some(e) = first_err {
        return Err(e);
    }
    let st = store.clone();
    let id = m.config.clone();
    let layers: Vec<(Digest, String)> = m
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.media_type.clone()))
        .collect();
    let tags = tags.to_vec();
    tokio::task::spawn_blocking(move || {
        let _ingest = st.ingest_guard()?;
        // Unpacking checks each layer against the config's diff IDs.
        st.commit_image(&id, layers, &tags, None)
    })
    .await
    .map_err(|e| ShareError::Join(e.to_string()))?
    .map_err(ShareError::from)
}

/// Streams one blob from the peer into the store, verified against `digest` and cut
/// off past `size` bytes. On error nothing of it is left in the store.
async fn receive<P: Peer>(
    store: &Arc<ImageStore>,
    peer: &P,
    digest: &Digest,
    size: u64,
) -> Result<(), ShareError> {
    let mut chunks = peer.blob(digest).await?;
    // A few chunks in flight: the network and the disk overlap, memory stays bounded.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let st = store.clone();
    let want = digest.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let _ingest = st.ingest_guard()?;
        st.put_blob(ChannelReader::new(rx), Some(&want))
    });
    let mut got = 0u64;
    let pumped: Result<(), ShareError> = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            got += chunk.len() as u64;
            if got > size {
                return Err(ShareError::TooLarge {
                    peer: peer.name(),
                    digest: digest.clone(),
                    size,
                });
            }
            if tx.send(chunk).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        Ok(())
    }
    .await;
    // The writer sees the end of the stream: a cut-off blob fails its digest check.
    drop(tx);
    let written = writer.await.map_err(|e| ShareError::Join(e.to_string()))?;
    match (pumped, written) {
        (Ok(()), Ok(_)) => Ok(()),
        (Ok(()), Err(source)) => Err(ShareError::Blob {
            peer: peer.name(),
            digest: digest.clone(),
            source: Box::new(source),
        }),
        (Err(e), Ok(_)) => {
            // The announced bytes were right but more followed: keep nothing of a
            // peer that misbehaves.
            let _ = std::fs::remove_file(store.blob_path(digest));
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A peer serving from a map of blobs, with a manifest per name; it can be made to
    /// lie about blobs.
    struct FakePeer {
        manifests: HashMap<String, PeerManifest>,
        blobs: Mutex<HashMap<Digest, Vec<u8>>>,
        served: Mutex<Vec<Digest>>,
    }

    impl Peer for FakePeer {
        fn name(&self) -> String {
            "fake-peer".into()
        }
        async fn manifest(&self, name: &str) -> Result<Option<PeerManifest>, ShareError> {
            Ok(self.manifests.get(name).cloned())
        }
        async fn blob(&self, digest: &Digest) -> Result<ChunkStream, ShareError> {
            self.served.lock().expect("lock").push(digest.clone());
            let data = self
                .blobs
                .lock()
                .expect("test setup")
                .get(digest)
                .cloned()
                .ok_or_else(|| ShareError::Transport {
                    peer: self.name(),
                    message: format!("no blob {digest}"),
                })?;
            // Several small chunks, as the wire delivers them.
            let chunks: Vec<Result<Vec<u8>, ShareError>> =
                data.chunks(7).map(|c| Ok(c.to_vec())).collect();
            Ok(Box::pin(futures::stream::iter(chunks)))
        }
    }

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, name, *data).expect("test setup");
        }
        b.into_inner().expect("test setup")
    }

    /// A two-layer image made in `src`, and a peer that serves it as `app:1`.
    fn source_image(src: &ImageStore) -> (Digest, FakePeer) {
        let l1 = layer_tar(&[("a.txt", b"first layer")]);
        let l2 = layer_tar(&[("b.txt", b"second layer")]);
        let (d1, _) = src.put_blob(&l1[..], None).expect("test setup");
        let (d2, _) = src.put_blob(&l2[..], None).expect("test setup");
        let config = ImageConfig {
            architecture: super::super::config::host_architecture().into(),
            os: "linux".into(),
            rootfs: super::super::config::RootFs {
                kind: "layers".into(),
                diff_ids: vec![d1.clone(), d2.clone()],
            },
            ..Default::default()
        };
        let id = src.put_config(&config).expect("test setup");
        let tag = Reference::parse("app:1").expect("test setup");
        src.commit_image(
            &id,
            vec![
                (d1.clone(), super::super::MEDIA_LAYER_TAR.into()),
                (d2.clone(), super::super::MEDIA_LAYER_TAR.into()),
            ],
            &[tag],
            None,
        )
        .expect("test setup");
        let m = manifest_of(src, "app:1").expect("test setup");
        assert_eq!(m.config, id);
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[0].size, l1.len() as u64);
        let mut blobs = HashMap::new();
        for d in [&id, &d1, &d2] {
            blobs.insert(
                d.clone(),
                std::fs::read(src.blob_path(d)).expect("test setup"),
            );
        }
        let peer = FakePeer {
            manifests: HashMap::from([("app:1".to_string(), m)]),
            blobs: Mutex::new(blobs),
            served: Mutex::new(vec![]),
        };
        (id, peer)
    }

    fn stores() -> (tempfile::TempDir, ImageStore, Arc<ImageStore>) {
        let dir = tempfile::tempdir().expect("test setup");
        let src = ImageStore::open(&dir.path().join("src")).expect("test setup");
        let dst = Arc::new(ImageStore::open(&dir.path().join("dst")).expect("test setup"));
        (dir, src, dst)
    }

    /// Every file under the destination's blob, tmp and snapshot directories.
    fn leftovers(dir: &std::path::Path) -> Vec<String> {
        let mut out = vec![];
        for sub in ["dst/image/blobs/sha256", "dst/image/tmp", "dst/snapshots"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                out.extend(rd.flatten().map(|e| format!("{sub}/{:?}", e.file_name())));
            }
        }
        out
    }

    #[tokio::test]
    async fn fetches_tags_and_unpacks_an_image() {
        let (dir, src, dst) = stores();
        let (id, peer) = source_image(&src);
        let tag = Reference::parse("app:1").expect("test setup");
        let got = fetch(&dst, &peer, "app:1", &[tag])
            .await
            .expect("test setup");
        assert_eq!(got, Some(id.clone()));
        let img = dst.resolve("app:1").expect("test setup");
        assert_eq!(img.id(), &id);
        let dirs = dst.lower_dirs(&img).expect("test setup");
        assert!(dirs[0].join("b.txt").exists() && dirs[1].join("a.txt").exists());
        assert_eq!(peer.served.lock().expect("lock").len(), 3);
        // A second fetch of what is already there asks for no blob.
        peer.served.lock().expect("lock").clear();
        fetch(&dst, &peer, "app:1", &[]).await.expect("test setup");
        assert!(peer.served.lock().expect("lock").is_empty());
        assert!(std::fs::read_dir(dir.path().join("dst/image/tmp"))
            .expect("test setup")
            .next()
            .is_none());
    }

    #[tokio::test]
    async fn a_peer_without_the_image_gives_none() {
        let (_dir, src, dst) = stores();
        let (_, peer) = source_image(&src);
        assert_eq!(
            fetch(&dst, &peer, "other:1", &[])
                .await
                .expect("test setup"),
            None
        );
    }

    #[tokio::test]
    async fn a_corrupt_layer_is_rejected_and_nothing_stays() {
        let (dir, src, dst) = stores();
        let (_, peer) = source_image(&src);
        let layer = peer.manifests["app:1"].layers[1].digest.clone();
        {
            let mut blobs = peer.blobs.lock().expect("lock");
            let b = blobs.get_mut(&layer).expect("test setup");
            b[600] ^= 0xff; // same length, other bytes
        }
        let err = fetch(&dst, &peer, "app:1", &[])
            .await
            .expect_err("the fetch fails");
        assert!(
            matches!(&err, ShareError::Blob { digest, source, .. }
                if *digest == layer && matches!(**source, ImageError::DigestMismatch { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(dst.resolve("app:1").is_err());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_blob_longer_than_announced_is_cut_off() {
        let (dir, src, dst) = stores();
        let (_, mut peer) = source_image(&src);
        let m = peer.manifests.get_mut("app:1").expect("test setup");
        let layer = m.layers[0].digest.clone();
        // The right bytes, then more: announced size exceeded.
        peer.blobs
            .lock()
            .expect("test setup")
            .get_mut(&layer)
            .expect("test setup")
            .extend_from_slice(b"trailing garbage");
        let err = fetch(&dst, &peer, "app:1", &[])
            .await
            .expect_err("the fetch fails");
        assert!(matches!(err, ShareError::TooLarge { .. }), "{err}");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_manifest_that_disagrees_with_its_config_is_rejected() {
        let (dir, src, dst) = stores();
        let (_, mut peer) = source_image(&src);
        peer.manifests
            .get_mut("app:1")
            .expect("test setup")
            .layers
            .pop();
        let err = fetch(&dst, &peer, "app:1", &[])
            .await
            .expect_err("the fetch fails");
        assert!(
            err.to_string()
                .contains("config lists 2 layers, its manifest 1"),
            "{err}"
        );
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_layer_whose_content_is_not_the_configs_is_rejected() {
        // The blob matches the digest the peer announced, but is not the layer the
        // config names: caught when unpacking (diff ID), and undone.
        let (dir, src, dst) = stores();
        let (_, mut peer) = source_image(&src);
        let other = layer_tar(&[("evil", b"not what the config says")]);
        let (d, _) = src.put_blob(&other[..], None).expect("test setup");
        peer.blobs
            .lock()
            .expect("lock")
            .insert(d.clone(), other.clone());
        let m = peer.manifests.get_mut("app:1").expect("test setup");
        m.layers[1] = PeerLayer {
            digest: d,
            media_type: super::super::MEDIA_LAYER_TAR.into(),
            size: other.len() as u64,
        };
        let err = fetch(&dst, &peer, "app:1", &[])
            .await
            .expect_err("the fetch fails");
        assert!(err.to_string().contains("diff"), "{err}");
        assert!(dst.resolve("app:1").is_err());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn an_oversized_config_is_refused_before_any_transfer() {
        let (_dir, src, dst) = stores();
        let (_, mut peer) = source_image(&src);
        peer.manifests
            .get_mut("app:1")
            .expect("test setup")
            .config_size = (MAX_CONFIG_BYTES + 1) as u64;
        let err = fetch(&dst, &peer, "app:1", &[])
            .await
            .expect_err("the fetch fails");
        assert!(matches!(err, ShareError::BadManifest { .. }), "{err}");
        assert!(peer.served.lock().expect("lock").is_empty());
    }
}
