//! One module per group of commands; each function takes its clap args and a client.

pub mod containers;
pub mod images;
pub mod stdio;
pub mod system;
