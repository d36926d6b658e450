//! The shim's entry point, shared by the `skiff-shim` binary and the hidden
//! `skiff shim` command (containers started by an older agent, and installs that
//! copied only `skiff`): the same tracing set-up, the same dispatch, the same exit codes.

use std::path::Path;

/// `SKIFF_LOG_SPANS=1` (inherited by shims) also logs every span's close with its
/// busy and idle time: how the per-step timings of `run` in BENCHMARKS.md are taken.
pub fn span_events() -> tracing_subscriber::fmt::format::FmtSpan {
    match std::env::var("SKIFF_LOG_SPANS").as_deref() {
        Ok("1") => tracing_subscriber::fmt::format::FmtSpan::CLOSE,
        _ => tracing_subscriber::fmt::format::FmtSpan::NONE,
    }
}

/// The shim logs to a private duplicate of its stderr (the shim log file): the
/// container's init process inherits the subscriber, and its fd 2 becomes the
/// container's stderr, where runtime diagnostics must not appear.
fn init_shim_tracing(level: &str) {
    use std::os::fd::AsFd;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let file = std::sync::Mutex::new(std::fs::File::from(fd));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_span_events(span_events())
                .with_ansi(false)
                .with_writer(file)
                .init();
        }
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::io::sink)
            .init(),
    }
}

/// Runs the shim of a container (`exec` absent) or of one exec; returns its exit
/// status. Single-threaded until libcontainer has forked: no async runtime here.
pub fn run(log_level: &str, task: &Path, exec: Option<&Path>) -> i32 {
    init_shim_tracing(log_level);
    match exec {
        Some(e) => skiff_runtime::shim::exec::main(task, e),
        None => skiff_runtime::shim::init::main(task),
    }
}
