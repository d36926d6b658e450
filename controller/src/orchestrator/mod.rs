//! Orchestration on top of the replicated state: services and tasks ([`types`]), and
//! the reconciler that keeps tasks at their services' spec ([`reconcile`]).

pub mod api;
pub mod attach;
pub mod dispatcher;
pub mod logbroker;
pub mod netalloc;
pub mod overlay;
pub mod reconcile;
pub mod runner;
pub mod stack;
pub mod types;

#[cfg(test)]
mod tests;

pub use reconcile::{reconcile, Stored, World};
pub use types::*;
