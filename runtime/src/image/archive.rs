//! `skiff load`: reads `docker save` archives (legacy `manifest.json` layout, and the
//! OCI-layout archives Docker 25+ writes) and plain OCI image-layout archives.
//!
//! The archive is read in one pass: every regular file that is not a small metadata
//! document streams straight into the blob store (its digest computed on the way, and
//! checked against its name where the name is a digest). Nothing is extracted to a
//! directory, so hostile paths inside the archive have nowhere to land. Layer contents
//! are verified against the config's diff IDs when unpacked.

use super::reference::Reference;
use super::store::ImageStore;
use super::{ImageError, MEDIA_OCI_INDEX};
use crate::digest::Digest;
use oci_spec::image::{Digest as OciDigest, ImageIndex, ImageManifest};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;

const MAX_METADATA: u64 = 4 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Normalises an archive member name; `None` for names that try to climb out.
fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn digest_from_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    if name.starts_with("blobs/sha256/") || name.ends_with(".json") {
        Digest::parse(&format!("sha256:{hex}")).ok()
    } else {
        None
    }
}

/// Loads every image in the archive; returns what was loaded, as Docker prints it
/// ("Loaded image: busybox:latest" / "Loaded image ID: sha256:...").
/// On failure, blobs already stored are garbage-collected: a failed load leaves nothing.
pub fn load(store: &ImageStore, reader: impl Read) -> Result<Vec<String>, ImageError> {
    let res = {
        let _ingest = store.ingest_guard()?;
        load_inner(store, reader)
    };
    if res.is_err() {
        let _ = store.collect_garbage();
    }
    res
}

fn load_inner(store: &ImageStore, reader: impl Read) -> Result<Vec<String>, ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut blobs: HashMap<String, Digest> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| ImageError::BadArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::BadArchive(e.to_string()))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let Some(name) = clean(&raw) else {
            return Err(ImageError::BadArchive(format!(
                "member {raw:?} points outside the archive"
            )));
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default();
            let joined = if kind.is_symlink() {
                match name.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target,
                }
            } else {
                target
            };
            if let Some(t) = clean(&joined) {
                links.insert(name, t);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let is_doc = matches!(
            name.as_str(),
            "manifest.json" | "index.json" | "repositories" | "oci-layout"
        );
        if is_doc {
            let mut buf = Vec::new();
            (&mut entry)
                .take(MAX_METADATA + 1)
                .read_to_end(&mut buf)
                .map_err(|e| ImageError::BadArchive(format!("{name}: {e}")))?;
            if buf.len() as u64 > MAX_METADATA {
                return Err(ImageError::BadArchive(format!(
                    "{name} is larger than {MAX_METADATA} bytes"
                )));
            }
            docs.insert(name, buf);
        } else {
            let expected = digest_from_name(&name);
            let (d, _) = store
                .put_blob(&mut entry, expected.as_ref())
                .map_err(|e| match e {
                    ImageError::DigestMismatch { expected, actual } => {
                        ImageError::BadArchive(format!(
                            "{name}: content digest {actual} does not match its name {expected}"
                        ))
                    }
                    e => e,
                })?;
            blobs.insert(name, d);
        }
    }
    let lookup = |name: &str| -> Result<Digest, ImageError> {
        let mut n = clean(name).unwrap_or_default();
        for _ in 0..8 {
            if let Some(d) = blobs.get(&n) {
                return Ok(d.clone());
            }
            match links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        Err(ImageError::BadArchive(format!(
            "archive does not contain {name:?}"
        )))
    };

    let mut loaded = Vec::new();
    if let Some(raw) = docs.get("manifest.json") {
        let entries: Vec<DockerManifestEntry> = serde_json::from_slice(raw)
            .map_err(|e| ImageError::BadArchive(format!("manifest.json: {e}")))?;
        for m in entries {
            let config = lookup(&m.config)?;
            let layers = m
                .layers
                .iter()
                .map(|l| Ok((lookup(l)?, layer_media_type(store, &lookup(l)?))))
                .collect::<Result<Vec<_>, ImageError>>()?;
            let tags = m
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let id = store.commit_image(&config, layers, &tags, None)?;
            report(&mut loaded, &tags, &id);
        }
    } else if let Some(raw) = docs.get("index.json") {
        let index: ImageIndex = serde_json::from_slice(raw)
            .map_err(|e| ImageError::BadArchive(format!("index.json: {e}")))?;
        for desc in index.manifests() {
            let annotation = |k: &str| desc.annotations().as_ref().and_then(|a| a.get(k));
            let tag = annotation("io.containerd.image.name")
                .or_else(|| annotation("org.opencontainers.image.ref.name"))
                .cloned();
            let id = load_oci_manifest(
                store,
                &lookup,
                desc.digest(),
                Some(desc.media_type().as_ref()),
                tag.as_deref(),
                0,
            )?;
            let tags: Vec<Reference> = tag.and_then(|t| full_ref(&t)).into_iter().collect();
            report(&mut loaded, &tags, &id);
        }
    } else {
        return Err(ImageError::BadArchive(
            "neither manifest.json (docker save) nor index.json (OCI layout) found".into(),
        ));
    }
    Ok(loaded)
}

fn report(loaded: &mut Vec<String>, tags: &[Reference], id: &Digest) {
    if tags.is_empty() {
        loaded.push(format!("Loaded image ID: {id}"));
    }
    for t in tags {
        loaded.push(format!("Loaded image: {t}"));
    }
}

/// A `ref.name` annotation may be a full reference or only a tag.
fn full_ref(t: &str) -> Option<Reference> {
    if t.contains('/') || t.contains(':') {
        Reference::parse(t).ok()
    } else {
        None
    }
}

fn layer_media_type(store: &ImageStore, d: &Digest) -> String {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(store.blob_path(d))
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match crate::snapshot::unpack::detect_compression(&head[..n]) {
        crate::snapshot::unpack::Compression::Gzip => super::MEDIA_LAYER_GZIP.into(),
        crate::snapshot::unpack::Compression::Zstd => super::MEDIA_LAYER_ZSTD.into(),
        crate::snapshot::unpack::Compression::None => super::MEDIA_LAYER_TAR.into(),
    }
}

/// Loads the manifest (or, for an index, the host platform's manifest) at `digest`.
/// Which keys the document has decides what it is, checked against its declared media
/// type; it is then read as oci-spec's [`ImageIndex`] or [`ImageManifest`].
fn load_oci_manifest(
    store: &ImageStore,
    lookup: &dyn Fn(&str) -> Result<Digest, ImageError>,
    digest: &OciDigest,
    media_type: Option<&str>,
    tag: Option<&str>,
    depth: u32,
) -> Result<Digest, ImageError> {
    if depth > 4 {
        return Err(ImageError::BadArchive(
            "image indexes nested too deeply".into(),
        ));
    }
    let blob_of = |d: &OciDigest| -> Result<Digest, ImageError> {
        let d = Digest::try_from(d).map_err(|e| ImageError::BadArchive(e.to_string()))?;
        lookup(&format!("blobs/sha256/{}", d.hex()))
    };
    let d = Digest::try_from(digest).map_err(|e| ImageError::BadArchive(e.to_string()))?;
    let raw = store.read_blob(&blob_of(digest)?, MAX_METADATA as usize)?;
    let bad = |e: &dyn std::fmt::Display| ImageError::BadArchive(format!("{digest}: {e}"));
    let doc: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| bad(&e))?;
    let declared = doc
        .get("mediaType")
        .and_then(|v| v.as_str())
        .or(media_type)
        .unwrap_or_default()
        .to_string();
    let is_index = doc
        .get("manifests")
        .and_then(|m| m.as_array())
        .is_some_and(|m| !m.is_empty());
    if is_index != (declared == MEDIA_OCI_INDEX || declared == super::MEDIA_DOCKER_LIST)
        && !declared.is_empty()
    {
        return Err(bad(&format!(
            "media type {declared} does not match its content"
        )));
    }
    if is_index {
        let index: ImageIndex = serde_json::from_value(doc).map_err(|e| bad(&e))?;
        let list = index.manifests();
        let chosen = super::registry::pick_platform(list)
            .or_else(|| (list.len() == 1).then(|| &list[0]))
            .ok_or_else(|| {
                let arch = super::config::host_architecture();
                bad(&format!("no manifest for linux/{arch}"))
            })?;
        return load_oci_manifest(store, lookup, chosen.digest(), None, tag, depth + 1);
    }
    if doc.get("config").is_none_or(|c| c.is_null()) {
        return Err(bad(&"manifest without config"));
    }
    let manifest: ImageManifest = serde_json::from_value(doc).map_err(|e| bad(&e))?;
    let config_d = blob_of(manifest.config().digest())?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| Ok((blob_of(l.digest())?, l.media_type().to_string())))
        .collect::<Result<Vec<_>, ImageError>>()?;
    let tags: Vec<Reference> = tag.and_then(full_ref).into_iter().collect();
    let repo_digest = tags.first().map(|t| format!("{}@{}", t.familiar_name(), d));
    store.commit_image(&config_d, layers, &tags, repo_digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::ImageStore;

    #[test]
    fn clean_refuses_escapes() {
        assert_eq!(clean("./a/b").as_deref(), Some("a/b"));
        assert_eq!(clean("a/../b").as_deref(), Some("b"));
        assert_eq!(clean("../x"), None);
    }

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/motd", &b"hello"[..])
            .expect("append");
        b.into_inner().expect("tar")
    }

    fn config_for(layer: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(layer).to_string()]}
        }))
        .expect("json")
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    }

    #[test]
    fn loads_docker_save_archives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store");
        let layer = layer_tar();
        let config = config_for(&layer);
        let cd = Digest::of(&config);
        let manifest = serde_json::json!([{
            "Config": format!("{}.json", cd.hex()),
            "RepoTags": ["example/app:1"],
            "Layers": ["abc/layer.tar"]
        }]);
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, &format!("{}.json", cd.hex()), &config);
        add(&mut b, "abc/layer.tar", &layer);
        add(&mut b, "manifest.json", manifest.to_string().as_bytes());
        let archive = b.into_inner().expect("tar");
        let loaded = load(&store, &archive[..]).expect("load");
        assert_eq!(loaded, vec!["Loaded image: example/app:1".to_string()]);
        let img = store.resolve("example/app:1").expect("resolve");
        assert_eq!(img.id(), &cd);
        let lower = store.lower_dirs(&img).expect("lowers");
        assert_eq!(
            std::fs::read(lower[0].join("etc/motd")).expect("motd"),
            b"hello"
        );
    }

    #[test]
    fn loads_oci_layouts_with_gzip_layers() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store");
        let layer = layer_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).expect("gz");
        let gz = gz.finish().expect("gz");
        let config = config_for(&layer);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": super::super::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": super::super::MEDIA_LAYER_GZIP, "digest": Digest::of(&gz).to_string(), "size": gz.len()}]
        }))
        .expect("json");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": super::super::MEDIA_OCI_MANIFEST, "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
                           "annotations": {"io.containerd.image.name": "docker.io/library/app:2"}}]
        });
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        for blob in [&config, &gz, &manifest] {
            add(
                &mut b,
                &format!("blobs/sha256/{}", Digest::of(blob).hex()),
                blob,
            );
        }
        add(&mut b, "index.json", index.to_string().as_bytes());
        let archive = b.into_inner().expect("tar");
        load(&store, &archive[..]).expect("load");
        let img = store.resolve("app:2").expect("resolve");
        let lower = store.lower_dirs(&img).expect("lowers");
        assert_eq!(
            std::fs::read(lower[0].join("etc/motd")).expect("motd"),
            b"hello"
        );
    }

    #[test]
    fn hostile_archives_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store");
        // A member climbing out of the archive.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_old_mut().name[..6].copy_from_slice(b"../../");
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
        let err = load(&store, &b.into_inner().expect("tar")[..]).expect_err("escape accepted");
        assert!(err.to_string().contains("outside"), "{err}");
        // A blob whose content does not match its name.
        let mut b = tar::Builder::new(Vec::new());
        add(
            &mut b,
            &format!("blobs/sha256/{}", Digest::of(b"other").hex()),
            b"content",
        );
        let err = load(&store, &b.into_inner().expect("tar")[..]).expect_err("mismatch accepted");
        assert!(err.to_string().contains("does not match"), "{err}");
        // A layer whose content is not what the config's diff ID says.
        let layer = layer_tar();
        let mut config: serde_json::Value =
            serde_json::from_slice(&config_for(b"something else")).expect("json");
        config["rootfs"]["diff_ids"] =
            serde_json::json!([Digest::of(b"something else").to_string()]);
        let config = serde_json::to_vec(&config).expect("json");
        let cd = Digest::of(&config);
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, &format!("{}.json", cd.hex()), &config);
        add(&mut b, "l/layer.tar", &layer);
        add(&mut b, "manifest.json", serde_json::json!([{"Config": format!("{}.json", cd.hex()), "RepoTags": ["bad:1"], "Layers": ["l/layer.tar"]}]).to_string().as_bytes());
        assert!(load(&store, &b.into_inner().expect("tar")[..]).is_err());
        assert!(store.resolve("bad:1").is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("image/blobs/sha256"))
                .expect("blobs")
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("snapshots"))
                .expect("snapshots")
                .count(),
            0
        );
    }
}
