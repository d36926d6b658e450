//! `skiff save`: writes images as one tar archive that both generations of `docker load`
//! read: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`, as Docker 25+
//! writes) plus the legacy `manifest.json` pointing at the same blobs (what Docker before
//! 25 reads). Layers are written uncompressed so each layer blob's digest is its diff ID,
//! which is what `docker load` checks.

use super::reference::Reference;
use super::store::{Image, ImageStore};
use super::{ImageError, MEDIA_LAYER_TAR, MEDIA_OCI_MANIFEST};
use crate::digest::{Digest, HashingReader};
use serde_json::json;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), ImageError> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .map_err(|e| ImageError::io(path, e))
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    file: &std::path::Path,
) -> Result<(), ImageError> {
    let mut f = fs::File::open(file).map_err(|e| ImageError::io(file, e))?;
    let len = f.metadata().map_err(|e| ImageError::io(file, e))?.len();
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, &mut f)
        .map_err(|e| ImageError::io(path, e))
}

/// Writes the uncompressed form of a layer to the archive (decompressing through a
/// temporary file when the stored blob is compressed; its digest must be the diff ID).
fn append_layer<W: Write>(
    store: &ImageStore,
    tar: &mut tar::Builder<W>,
    blob: &Digest,
    diff_id: &Digest,
) -> Result<u64, ImageError> {
    let path = format!("blobs/sha256/{}", diff_id.hex());
    if blob == diff_id {
        append_file(tar, &path, &store.blob_path(blob))?;
        return Ok(fs::metadata(store.blob_path(blob))
            .map(|m| m.len())
            .unwrap_or(0));
    }
    let tmp = store.temp_path("save");
    let res = (|| {
        let src = fs::File::open(store.blob_path(blob))
            .map_err(|e| ImageError::io(store.blob_path(blob), e))?;
        let plain = crate::snapshot::unpack::decompressed(src)
            .map_err(|e| ImageError::io(store.blob_path(blob), e))?;
        let mut hr = HashingReader::new(plain);
        let mut out = fs::File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        io::copy(&mut hr, &mut out).map_err(|e| ImageError::io(&tmp, e))?;
        let (actual, size) = hr.finish();
        if actual != *diff_id {
            return Err(ImageError::DigestMismatch {
                expected: diff_id.clone(),
                actual,
            });
        }
        append_file(tar, &path, &tmp)?;
        Ok(size)
    })();
    let _ = fs::remove_file(&tmp);
    res
}

/// Saves `names` (tags, IDs or ID prefixes) to `out`.
pub fn save(store: &ImageStore, names: &[String], out: impl Write) -> Result<(), ImageError> {
    let mut images: Vec<(Image, Option<Reference>)> = Vec::new();
    for n in names {
        let img = store.resolve(n)?;
        // A name that is a tag of the image is saved with it; an ID is saved untagged.
        let tag = Reference::parse(n).ok().filter(|r| {
            r.tagged()
                .map(|t| img.repo_tags.contains(&t))
                .unwrap_or(false)
        });
        images.push((img, tag));
    }
    let mut tar = tar::Builder::new(out);
    let mut written: BTreeSet<Digest> = BTreeSet::new();
    let mut legacy = Vec::new();
    let mut index = Vec::new();
    let mut repositories = serde_json::Map::new();
    for (img, tag) in &images {
        if written.insert(img.id().clone()) {
            append_file(
                &mut tar,
                &format!("blobs/sha256/{}", img.id().hex()),
                &store.blob_path(img.id()),
            )?;
        }
        let mut layer_descs = Vec::new();
        let mut layer_paths = Vec::new();
        for l in &img.record.layers {
            let path = format!("blobs/sha256/{}", l.diff_id.hex());
            let size = if written.insert(l.diff_id.clone()) {
                append_layer(store, &mut tar, &l.digest, &l.diff_id)?
            } else {
                0
            };
            layer_paths.push(path);
            layer_descs.push((l.diff_id.clone(), size));
        }
        // Sizes of layers written earlier in this archive: look them up again.
        let layers_json: Vec<serde_json::Value> = layer_descs
            .iter()
            .map(|(d, s)| {
                let size = if *s > 0 {
                    *s
                } else {
                    uncompressed_size(store, img, d)
                };
                json!({"mediaType": MEDIA_LAYER_TAR, "digest": d, "size": size})
            })
            .collect();
        let config_size = fs::metadata(store.blob_path(img.id()))
            .map(|m| m.len())
            .unwrap_or(0);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": img.id(), "size": config_size},
            "layers": layers_json,
        }))
        .map_err(|e| ImageError::BadConfig(e.to_string()))?;
        let md = Digest::of(&manifest);
        if written.insert(md.clone()) {
            append_bytes(&mut tar, &format!("blobs/sha256/{}", md.hex()), &manifest)?;
        }
        let mut desc =
            json!({"mediaType": MEDIA_OCI_MANIFEST, "digest": md, "size": manifest.len()});
        if let Some(t) = tag {
            desc["annotations"] = json!({
                "io.containerd.image.name": format!("{}:{}", t.full_name(), t.tag.clone().unwrap_or_default()),
                "org.opencontainers.image.ref.name": t.tag.clone().unwrap_or_default(),
            });
            if let (Some(top), Some(tg)) = (img.record.layers.last(), &t.tag) {
                let repo = repositories
                    .entry(t.familiar_name())
                    .or_insert_with(|| json!({}));
                repo[tg] = json!(top.diff_id.hex());
            }
        }
        index.push(desc);
        legacy.push(json!({
            "Config": format!("blobs/sha256/{}", img.id().hex()),
            "RepoTags": tag.as_ref().and_then(|t| t.tagged()).map(|t| vec![t]),
            "Layers": layer_paths,
        }));
    }
    let enc = |v: &serde_json::Value| {
        serde_json::to_vec(v).map_err(|e| ImageError::BadConfig(e.to_string()))
    };
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_bytes(
        &mut tar,
        "index.json",
        &enc(
            &json!({"schemaVersion": 2, "mediaType": super::MEDIA_OCI_INDEX, "manifests": index}),
        )?,
    )?;
    append_bytes(
        &mut tar,
        "manifest.json",
        &enc(&serde_json::Value::Array(legacy))?,
    )?;
    if !repositories.is_empty() {
        append_bytes(
            &mut tar,
            "repositories",
            &enc(&serde_json::Value::Object(repositories))?,
        )?;
    }
    tar.into_inner()
        .map_err(|e| ImageError::io("archive", e))?
        .flush()
        .map_err(|e| ImageError::io("archive", e))
}

/// Uncompressed size of one of `img`'s layers (for descriptors of layers shared with an
/// image saved earlier in the same archive).
fn uncompressed_size(store: &ImageStore, img: &Image, diff_id: &Digest) -> u64 {
    let Some(l) = img.record.layers.iter().find(|l| &l.diff_id == diff_id) else {
        return 0;
    };
    if l.digest == *diff_id {
        return fs::metadata(store.blob_path(&l.digest))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    fs::File::open(store.blob_path(&l.digest))
        .ok()
        .and_then(|f| crate::snapshot::unpack::decompressed(f).ok())
        .and_then(|mut r| io::copy(&mut r, &mut io::sink()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_tar(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, name, body).expect("append");
        b.into_inner().expect("tar")
    }

    #[test]
    fn save_then_load_round_trips_tags_and_layers() {
        let src = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(src.path()).expect("open");
        let r = Reference::parse("example.com/app:v1").expect("ref");
        // A gzip layer exercises decompression on save.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer_tar("hello", b"hi")).expect("gz");
        let gz = gz.finish().expect("gz");
        let id = store
            .import_rootfs(
                io::Cursor::new(gz),
                Some(&r),
                &["CMD [\"/hello\"]".into()],
                "",
            )
            .expect("import");
        let mut archive = Vec::new();
        save(&store, &["example.com/app:v1".into()], &mut archive).expect("save");

        let dst = tempfile::tempdir().expect("tempdir");
        let other = ImageStore::open(dst.path()).expect("open");
        let loaded = super::super::archive::load(&other, io::Cursor::new(archive)).expect("load");
        assert_eq!(loaded, vec!["Loaded image: example.com/app:v1".to_string()]);
        let img = other.resolve("example.com/app:v1").expect("resolve");
        assert_eq!(img.id(), &id);
        let dirs = other.lower_dirs(&img).expect("lowers");
        assert_eq!(fs::read(dirs[0].join("hello")).expect("read"), b"hi");
    }
}
