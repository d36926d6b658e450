//! One module per group of commands; each function takes its clap args and a client.

pub mod build;
pub mod cluster;
pub mod containers;
pub mod images;
pub mod network;
pub mod registry;
pub mod service;
pub mod shell;
pub mod stack;
pub mod stats;
pub mod stdio;
pub mod system;
pub mod volume;
