//! Skiff's container engine as a library, usable without any daemon.
//!
//! Map of the crate:
//! - [`image`]: the content-addressed image store, references, configs, `import`/`load`;
//! - [`snapshot`]: breakout-proof layer unpacking and overlayfs root filesystems;
//! - [`container`]: container records and state, OCI spec generation, security defaults;
//! - [`shim`]: the per-container process that runs a container through libcontainer;
//! - [`digest`], [`fsutil`]: content digests and crash-safe file writes.
//!
//! Nothing here knows about clusters; the agent (`skiff-agent`) drives this crate.

pub mod build;
pub mod cgroup;
pub mod container;
pub mod digest;
pub mod fsutil;
pub mod heap;
pub mod image;
pub mod network;
pub mod shim;
pub mod snapshot;
pub mod volume;
