//! Images: the content store, references, configs, and the ways images arrive
//! (`import` of a rootfs tarball, `load` of `docker save` / OCI-layout archives).

pub mod archive;
pub mod auth;
pub mod changes;
pub mod config;
pub mod reference;
pub mod registry;
pub mod save;
pub mod share;
pub mod store;

pub use config::ImageConfig;
pub use reference::{Reference, ReferenceError};
pub use store::{Image, ImageRecord, ImageStore, LayerRef};

use crate::digest::Digest;
use std::path::PathBuf;

pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("image reference {0:?} matches more than one image; use more characters of the ID")]
    Ambiguous(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    BadReference(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: usize },
    #[error("invalid image config: {0}")]
    BadConfig(String),
    #[error("invalid archive: {0}")]
    BadArchive(String),
    #[error("layer {0} is missing from the store")]
    MissingLayer(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("invalid change {line:?}: {reason}")]
    BadChange { line: String, reason: String },
    #[error("image store lock poisoned by a panic")]
    Poisoned,
}

impl ImageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }
}
