//! Image operations shared by the API front ends (gRPC and Docker's): import, load,
//! list, tag and remove, each with the events it emits. The front ends only translate
//! their requests and answers.

use crate::containers::Containers;
use crate::error::AgentError;
use skiff_runtime::digest::Digest;
use skiff_runtime::image::{Image, Reference};
use std::sync::Arc;
use tokio::sync::mpsc;

/// `import`: a rootfs tarball (plain, gzip or zstd) from `input` becomes a one-layer
/// image, optionally tagged, `message` its history comment (a default when empty);
/// emits `import` (and `tag`).
pub async fn import(
    c: &Containers,
    input: mpsc::Receiver<Vec<u8>>,
    reference: Option<Reference>,
    changes: Vec<String>,
    message: String,
) -> Result<Digest, AgentError> {
    let images = c.images.clone();
    let r2 = reference.clone();
    let id = tokio::task::spawn_blocking(move || {
        images.import_rootfs(
            skiff_runtime::image::registry::ChannelReader::new(input),
            r2.as_ref(),
            &changes,
            &message,
        )
    })
    .await
    .map_err(AgentError::internal)??;
    c.events
        .emit("image", "import", id.as_str(), Default::default());
    if let Some(r) = &reference {
        c.events.emit(
            "image",
            "tag",
            id.as_str(),
            [("name".to_string(), r.to_string())].into(),
        );
    }
    Ok(id)
}

/// `load`: a `docker save` archive from `input` (the breakout-proof loader); returns
/// the `Loaded image: ...` lines and emits `load` for each.
pub async fn load(
    c: &Containers,
    input: mpsc::Receiver<Vec<u8>>,
) -> Result<Vec<String>, AgentError> {
    let images = c.images.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        skiff_runtime::image::archive::load(
            &images,
            skiff_runtime::image::registry::ChannelReader::new(input),
        )
    })
    .await
    .map_err(AgentError::internal)??;
    for l in &loaded {
        c.events.emit(
            "image",
            "load",
            l.rsplit(' ').next().unwrap_or_default(),
            Default::default(),
        );
    }
    Ok(loaded)
}

/// One image as `images` lists it.
pub struct Listed {
    pub image: Image,
    /// Unpacked size on disk.
    pub size: u64,
    /// Containers (any state) made from it.
    pub containers: u32,
}

/// Every image, newest first; untagged build-step images only with `all`, as Docker's
/// intermediates.
pub async fn list(c: &Arc<Containers>, all: bool) -> Result<Vec<Listed>, AgentError> {
    let c = c.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<Listed>, AgentError> {
        let entries = c.list();
        let hidden = if all {
            Default::default()
        } else {
            crate::build::intermediate_ids(&c.cfg.root)
        };
        Ok(c.images
            .list()?
            .into_iter()
            .filter(|img| !img.repo_tags.is_empty() || !hidden.contains(img.id().as_str()))
            .map(|img| Listed {
                size: c.images.size(&img),
                containers: entries
                    .iter()
                    .filter(|e| e.record().image_id == *img.id())
                    .count() as u32,
                image: img,
            })
            .collect())
    })
    .await
    .map_err(AgentError::internal)?
}

/// `tag`: points `target` at `source`'s image; emits `tag`.
pub fn tag(c: &Containers, source: &str, target: &str) -> Result<Digest, AgentError> {
    let id = c.images.tag(source, target)?;
    c.events.emit(
        "image",
        "tag",
        id.as_str(),
        [("name".to_string(), target.to_string())].into(),
    );
    Ok(id)
}

/// `rmi`: removes a tag or an image (refused while a container uses it unless forced);
/// returns (untagged, deleted) and emits `untag` / `delete`.
pub fn remove(
    c: &Containers,
    name: &str,
    force: bool,
) -> Result<(Vec<String>, Vec<String>), AgentError> {
    let (untagged, deleted) = c.images.remove(name, force, |id| c.image_in_use(id))?;
    for u in &untagged {
        c.events.emit("image", "untag", u, Default::default());
    }
    for d in &deleted {
        c.events.emit("image", "delete", d, Default::default());
    }
    Ok((untagged, deleted))
}
