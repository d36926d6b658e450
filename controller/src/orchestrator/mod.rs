//! Orchestration on top of the store: the reconciler that keeps tasks at their
//! services' spec ([`reconcile`](mod@reconcile)) and the loop that runs it on the leader ([`runner`]),
//! the overlay allocator ([`attach`] → [`overlay`] → [`netalloc`], one way: pure
//! allocation at the bottom, standalone attachments on top), the dispatcher that
//! streams assignments to nodes ([`dispatcher`]) and commits their task status reports
//! in batches ([`status_batch`]), the service log broker
//! ([`logbroker`]), and what these servers need of the node they run on
//! ([`membership`]).

pub mod attach;
pub mod dispatcher;
pub mod logbroker;
pub mod membership;
pub mod netalloc;
pub mod overlay;
pub mod reconcile;
pub mod runner;
pub mod status_batch;

#[cfg(test)]
mod tests;

/// The shortest gap between two reconciler passes, or two looks of one node's
/// assignment stream, while changes keep coming: a burst costs one pass per gap, and the
/// first change after a quiet spell is acted on at once.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

pub use crate::model::services::*;
pub use crate::model::{services as types, stack};
pub use crate::store::Stored;
pub use reconcile::{reconcile, World};
