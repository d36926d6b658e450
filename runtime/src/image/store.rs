//! The content-addressed image store.
//!
//! Layout under `<root>/image`:
//! - `blobs/sha256/<hex>`: layer tarballs (as received), configs and manifests;
//! - `images/<config hex>.json`: one [`ImageRecord`] per image (the image ID is its config digest, as in Docker);
//! - `repositories.json`: tag → image ID.
//!
//! Every write is temp-file + fsync + rename, so a crash leaves the old or the new state.
//! Layers are unpacked into snapshots (see [`crate::snapshot`]) when an image is added,
//! so starting a container never waits for an unpack.

use super::config::{ImageConfig, MAX_CONFIG_BYTES};
use super::reference::Reference;
use super::ImageError;
use crate::digest::{Digest, HashingReader};
use crate::fsutil;
use crate::snapshot::Snapshotter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

/// One layer of an image: the blob as stored and the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRef {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What the store knows of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest.
    pub id: Digest,
    pub layers: Vec<LayerRef>,
    /// When the image entered this store (RFC 3339).
    pub added: String,
    #[serde(default)]
    pub repo_digests: Vec<String>,
}

/// An image as callers see it: its record, its parsed config and its tags.
#[derive(Clone, Debug)]
pub struct Image {
    pub record: ImageRecord,
    pub config: ImageConfig,
    pub repo_tags: Vec<String>,
}

impl Image {
    pub fn id(&self) -> &Digest {
        &self.record.id
    }
    /// Sum of the layers' unpacked sizes is not known cheaply; Docker reports the
    /// uncompressed size, which is what our snapshots hold.
    pub fn created(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.config
            .created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
    }
}

/// The store. Cheap to share behind an `Arc`; mutations are serialised internally.
pub struct ImageStore {
    root: PathBuf,
    snapshots: Snapshotter,
    lock: Mutex<()>,
    /// Held shared by every ingest (import, load) from its first blob to its record, and
    /// exclusively by garbage collection, so GC never takes a blob an ingest still needs.
    ingest: RwLock<()>,
}

type Tags = BTreeMap<String, Digest>;

impl ImageStore {
    /// Opens (creating if needed) the store under `root/image` and snapshots under `root/snapshots`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let dir = root.join("image");
        for d in ["blobs/sha256", "images", "tmp"] {
            fs::create_dir_all(dir.join(d)).map_err(|e| ImageError::io(dir.join(d), e))?;
        }
        // Leftovers of an interrupted write are garbage by construction.
        if let Ok(rd) = fs::read_dir(dir.join("tmp")) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok(Self {
            snapshots: Snapshotter::open(&root.join("snapshots"))?,
            root: dir,
            lock: Mutex::new(()),
            ingest: RwLock::new(()),
        })
    }

    /// Keeps garbage collection away while an ingest is in progress.
    pub fn ingest_guard(&self) -> Result<RwLockReadGuard<'_, ()>, ImageError> {
        self.ingest.read().map_err(|_| ImageError::Poisoned)
    }

    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    fn tags_path(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    /// A fresh scratch path inside the store (same filesystem, so renames are atomic).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{what}-{:016x}", rand::random::<u64>()))
    }

    /// Streams `reader` into the blob store, verifying `expected` when given. On any
    /// error (including a digest mismatch or a short read) nothing is left behind.
    pub fn put_blob(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), ImageError> {
        let tmp = self.temp_path("blob");
        let result = (|| {
            let mut f = fs::File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
            let mut hr = HashingReader::new(reader);
            io::copy(&mut hr, &mut f).map_err(|e| ImageError::io(&tmp, e))?;
            f.sync_all().map_err(|e| ImageError::io(&tmp, e))?;
            let (digest, size) = hr.finish();
            if let Some(want) = expected {
                if *want != digest {
                    return Err(ImageError::DigestMismatch {
                        expected: want.clone(),
                        actual: digest,
                    });
                }
            }
            let dest = self.blob_path(&digest);
            fs::rename(&tmp, &dest).map_err(|e| ImageError::io(&dest, e))?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    pub fn read_blob(&self, d: &Digest, limit: usize) -> Result<Vec<u8>, ImageError> {
        let p = self.blob_path(d);
        let f = fs::File::open(&p).map_err(|e| ImageError::io(&p, e))?;
        let mut buf = Vec::new();
        f.take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ImageError::io(&p, e))?;
        if buf.len() > limit {
            return Err(ImageError::TooLarge {
                what: d.to_string(),
                limit,
            });
        }
        Ok(buf)
    }

    fn load_tags(&self) -> Result<Tags, ImageError> {
        Ok(fsutil::read_json(&self.tags_path())
            .map_err(|e| ImageError::io(self.tags_path(), e))?
            .unwrap_or_default())
    }

    fn save_tags(&self, tags: &Tags) -> Result<(), ImageError> {
        fsutil::write_json_atomic(&self.tags_path(), tags)
            .map_err(|e| ImageError::io(self.tags_path(), e))
    }

    fn load_record(&self, id: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        fsutil::read_json(&self.record_path(id))
            .map_err(|e| ImageError::io(self.record_path(id), e))
    }

    /// Adds an image whose config blob and layer blobs are already in the store: checks
    /// the config, unpacks any missing layer snapshot (verifying each diff ID), then
    /// writes the record and tags. Returns the image ID.
    pub fn commit_image(
        &self,
        config_digest: &Digest,
        layers: Vec<(Digest, String)>,
        tags: &[Reference],
        repo_digest: Option<String>,
    ) -> Result<Digest, ImageError> {
        let raw = self.read_blob(config_digest, MAX_CONFIG_BYTES)?;
        let config: ImageConfig =
            serde_json::from_slice(&raw).map_err(|e| ImageError::BadConfig(e.to_string()))?;
        config.validate().map_err(ImageError::BadConfig)?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(ImageError::BadConfig(format!(
                "config lists {} layers (rootfs.diff_ids), manifest {}",
                config.rootfs.diff_ids.len(),
                layers.len()
            )));
        }
        let mut refs = Vec::with_capacity(layers.len());
        let mut parent: Option<Digest> = None;
        for ((digest, media_type), diff_id) in layers.into_iter().zip(&config.rootfs.diff_ids) {
            let chain = Snapshotter::chain_id(parent.as_ref(), diff_id);
            if !self.snapshots.exists(&chain) {
                let blob = self.blob_path(&digest);
                let f = fs::File::open(&blob).map_err(|e| ImageError::io(&blob, e))?;
                self.snapshots.unpack(&chain, f, diff_id)?;
            }
            let size = fs::metadata(self.blob_path(&digest))
                .map(|m| m.len())
                .unwrap_or(0);
            refs.push(LayerRef {
                digest,
                diff_id: diff_id.clone(),
                media_type,
                size,
            });
            parent = Some(chain);
        }
        let _g = self.lock.lock().map_err(|_| ImageError::Poisoned)?;
        let mut record = match self.load_record(config_digest)? {
            Some(r) => r,
            None => ImageRecord {
                id: config_digest.clone(),
                layers: refs,
                added: chrono::Utc::now().to_rfc3339(),
                repo_digests: vec![],
            },
        };
        if let Some(rd) = repo_digest {
            if !record.repo_digests.contains(&rd) {
                record.repo_digests.push(rd);
            }
        }
        fsutil::write_json_atomic(&self.record_path(config_digest), &record)
            .map_err(|e| ImageError::io(self.record_path(config_digest), e))?;
        if !tags.is_empty() {
            let mut all = self.load_tags()?;
            for t in tags {
                if let Some(name) = t.tagged() {
                    all.insert(name, config_digest.clone());
                }
            }
            self.save_tags(&all)?;
        }
        Ok(config_digest.clone())
    }

    /// Writes a config document as a blob; returns its digest (the image ID).
    pub fn put_config(&self, config: &ImageConfig) -> Result<Digest, ImageError> {
        let raw = serde_json::to_vec(config).map_err(|e| ImageError::BadConfig(e.to_string()))?;
        Ok(self.put_blob(&raw[..], None)?.0)
    }

    /// Every image with its tags, newest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let tags = self.load_tags()?;
        let mut by_id: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (t, id) in &tags {
            by_id.entry(id.clone()).or_default().push(t.clone());
        }
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)
            .map_err(|e| ImageError::io(&dir, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(id) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            match self.get(&id, by_id.remove(&id).unwrap_or_default()) {
                Ok(img) => out.push(img),
                Err(err) => tracing::warn!(image = %id, %err, "skipping unreadable image record"),
            }
        }
        out.sort_by(|a, b| b.created().cmp(&a.created()).then(a.id().cmp(b.id())));
        Ok(out)
    }

    fn get(&self, id: &Digest, repo_tags: Vec<String>) -> Result<Image, ImageError> {
        let record = self
            .load_record(id)?
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        let raw = self.read_blob(id, MAX_CONFIG_BYTES)?;
        let config =
            serde_json::from_slice(&raw).map_err(|e| ImageError::BadConfig(e.to_string()))?;
        Ok(Image {
            record,
            config,
            repo_tags,
        })
    }

    /// Resolves a name (`busybox`, `busybox:1`, `repo@sha256:..`), a full ID (`sha256:..`)
    /// or a unique ID prefix to an image.
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        let tags = self.load_tags()?;
        let tags_of = |id: &Digest| -> Vec<String> {
            tags.iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| k.clone())
                .collect()
        };
        if let Ok(r) = Reference::parse(name) {
            if let Some(t) = r.tagged() {
                if let Some(id) = tags.get(&t) {
                    return self.get(id, tags_of(id));
                }
            }
            if let Some(d) = &r.digest {
                for img in self.list()? {
                    let want = format!("{}@{d}", r.familiar_name());
                    if img.record.repo_digests.contains(&want) {
                        return Ok(img);
                    }
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let dir = self.root.join("images");
            let matches: Vec<String> = fs::read_dir(&dir)
                .map_err(|e| ImageError::io(&dir, e))?
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(String::from)
                })
                .filter(|h| h.starts_with(hex))
                .collect();
            match matches.len() {
                1 => {
                    let id = Digest::parse(&format!("sha256:{}", matches[0]))
                        .map_err(|e| ImageError::BadConfig(e.to_string()))?;
                    return self.get(&id, tags_of(&id));
                }
                0 => {}
                _ => return Err(ImageError::Ambiguous(name.to_string())),
            }
        }
        Err(ImageError::NotFound(name.to_string()))
    }

    /// Points `target` at the image `source` resolves to.
    pub fn tag(&self, source: &str, target: &str) -> Result<Digest, ImageError> {
        let img = self.resolve(source)?;
        let r = Reference::parse(target)?;
        let t = r.tagged().ok_or_else(|| {
            ImageError::BadReference(format!("{target}: a tag, not a digest, is needed"))
        })?;
        let _g = self.lock.lock().map_err(|_| ImageError::Poisoned)?;
        let mut tags = self.load_tags()?;
        tags.insert(t, img.id().clone());
        self.save_tags(&tags)?;
        Ok(img.id().clone())
    }

    /// Removes one reference. When `name` is a tag and other tags remain, only the tag
    /// goes; otherwise the image goes (refused when `in_use` and not forced; with `force`
    /// an image with several tags loses them all). Returns (untagged, deleted).
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: impl Fn(&Digest) -> bool,
    ) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let img = self.resolve(name)?;
        let by_tag = Reference::parse(name)
            .ok()
            .and_then(|r| r.tagged())
            .filter(|t| img.repo_tags.contains(t));
        let _g = self.lock.lock().map_err(|_| ImageError::Poisoned)?;
        let mut tags = self.load_tags()?;
        let mut untagged = Vec::new();
        if let Some(t) = &by_tag {
            if img.repo_tags.len() > 1 {
                tags.remove(t);
                self.save_tags(&tags)?;
                return Ok((vec![t.clone()], vec![]));
            }
        } else if img.repo_tags.len() > 1 && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                img.id().short()
            )));
        }
        if in_use(img.id()) {
            if !force || by_tag.is_none() {
                return Err(ImageError::Conflict(format!(
                    "unable to remove {} - image {} is being used by a container",
                    name,
                    img.id().short()
                )));
            }
            // Forced removal of a tag in use: untag, keep the image for its containers.
            for t in &img.repo_tags {
                tags.remove(t);
                untagged.push(t.clone());
            }
            self.save_tags(&tags)?;
            return Ok((untagged, vec![]));
        }
        for t in &img.repo_tags {
            tags.remove(t);
            untagged.push(t.clone());
        }
        self.save_tags(&tags)?;
        let rp = self.record_path(img.id());
        fs::remove_file(&rp).map_err(|e| ImageError::io(&rp, e))?;
        drop(_g);
        self.collect_garbage()?;
        Ok((untagged, vec![img.id().to_string()]))
    }

    /// The blobs and snapshot chains (hex) some image record refers to.
    fn live_sets(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), ImageError> {
        let mut live_blobs = BTreeSet::new();
        let mut live_chains = BTreeSet::new();
        let dir = self.root.join("images");
        for e in fs::read_dir(&dir)
            .map_err(|e| ImageError::io(&dir, e))?
            .flatten()
        {
            let Ok(Some(rec)) = fsutil::read_json::<ImageRecord>(&e.path()) else {
                continue;
            };
            live_blobs.insert(rec.id.hex().to_string());
            let mut parent: Option<Digest> = None;
            for l in &rec.layers {
                live_blobs.insert(l.digest.hex().to_string());
                let chain = Snapshotter::chain_id(parent.as_ref(), &l.diff_id);
                live_chains.insert(chain.hex().to_string());
                parent = Some(chain);
            }
        }
        Ok((live_blobs, live_chains))
    }

    /// Undoes a failed ingest: removes the given blobs unless an image now refers to
    /// them, and every snapshot no image refers to (a failed commit may have unpacked
    /// the lower layers of an image it never recorded). Snapshots are only made inside
    /// an ingest guard, which this waits out, so no other ingest loses one.
    pub fn discard_blobs(&self, blobs: &[Digest]) -> Result<(), ImageError> {
        let _i = self.ingest.write().map_err(|_| ImageError::Poisoned)?;
        let _g = self.lock.lock().map_err(|_| ImageError::Poisoned)?;
        let (live_blobs, live_chains) = self.live_sets()?;
        for d in blobs {
            if !live_blobs.contains(d.hex()) {
                let p = self.blob_path(d);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io(&p, e)),
                }
            }
        }
        self.snapshots.remove_unreferenced(&live_chains)?;
        Ok(())
    }

    /// Removes blobs and snapshots no image refers to.
    pub fn collect_garbage(&self) -> Result<u64, ImageError> {
        let _i = self.ingest.write().map_err(|_| ImageError::Poisoned)?;
        let _g = self.lock.lock().map_err(|_| ImageError::Poisoned)?;
        let (live_blobs, live_chains) = self.live_sets()?;
        let mut freed = 0;
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(|e| ImageError::io(&blobs, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if !live_blobs.contains(&name) {
                freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(e.path());
            }
        }
        freed += self.snapshots.remove_unreferenced(&live_chains)?;
        Ok(freed)
    }

    /// Lower directories for an overlay mount of `image`, topmost first.
    pub fn lower_dirs(&self, image: &Image) -> Result<Vec<PathBuf>, ImageError> {
        let mut parent: Option<Digest> = None;
        let mut dirs = Vec::new();
        for l in &image.record.layers {
            let chain = Snapshotter::chain_id(parent.as_ref(), &l.diff_id);
            if !self.snapshots.exists(&chain) {
                return Err(ImageError::MissingLayer(l.diff_id.to_string()));
            }
            dirs.push(self.snapshots.layer_dir(&chain));
            parent = Some(chain);
        }
        dirs.reverse();
        Ok(dirs)
    }

    /// Unpacked size of an image (its snapshots), as `docker images` shows it.
    pub fn size(&self, image: &Image) -> u64 {
        self.lower_dirs(image)
            .map(|dirs| dirs.iter().map(|d| fsutil::disk_usage(d)).sum())
            .unwrap_or(0)
    }

    /// Streams a rootfs tarball (plain, gzip or zstd) into a one-layer image, as
    /// `docker import` does. `changes` are Dockerfile-style `CMD`/`ENV`/... lines.
    pub fn import_rootfs<R: Read + 'static>(
        &self,
        reader: R,
        reference: Option<&Reference>,
        changes: &[String],
        message: &str,
    ) -> Result<Digest, ImageError> {
        let _ingest = self.ingest_guard()?;
        // Store the uncompressed tar: its digest is then also its diff ID.
        let tmp = self.temp_path("import");
        let res = (|| {
            let mut input = crate::snapshot::unpack::decompressed(reader)
                .map_err(|e| ImageError::io(&tmp, e))?;
            let mut f = fs::File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
            io::copy(&mut input, &mut f).map_err(|e| ImageError::io(&tmp, e))?;
            f.flush().map_err(|e| ImageError::io(&tmp, e))?;
            let f = fs::File::open(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
            self.put_blob(f, None)
        })();
        let _ = fs::remove_file(&tmp);
        let (layer, _) = res?;
        // The history entry carries the import's time as Docker's does (`docker history`
        // shows its age) and the message given, or the default comment.
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let comment = if message.is_empty() {
            "Imported from tarball"
        } else {
            message
        };
        let mut config = ImageConfig {
            created: Some(now.clone()),
            architecture: super::config::host_architecture().into(),
            os: "linux".into(),
            rootfs: super::config::RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer.clone()],
            },
            history: vec![super::config::History {
                created: Some(now),
                comment: Some(comment.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        super::changes::apply(&mut config.config, changes)?;
        let id = self.put_config(&config)?;
        let tags: Vec<Reference> = reference.cloned().into_iter().collect();
        self.commit_image(
            &id,
            vec![(layer, super::MEDIA_LAYER_TAR.into())],
            &tags,
            None,
        )
    }
}
