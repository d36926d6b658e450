//! raft-rs logs through `slog`; this drain forwards its records into `tracing`, once, at
//! the edge (target `raft`).

use slog::{Drain, OwnedKVList, Record, KV};

struct TracingDrain;

/// Collects a record's key-values into `k=v` pairs.
struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        // Formatting comes after the level check: raft-rs's debug records carry whole
        // messages, entries included, and printing those as text on the raft thread
        // stalled it for seconds with large proposals (a leader then loses its quorum).
        if !enabled(record.level()) {
            return Ok(());
        }
        let mut f = Fields(String::new());
        let _ = record.kv().serialize(record, &mut f);
        let _ = values.serialize(record, &mut f);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{}", f.0)
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", f.0),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{}", f.0),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{}", f.0),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{}", f.0),
        }
        Ok(())
    }
}

/// Whether `tracing` would record a raft-rs record of this level.
fn enabled(level: slog::Level) -> bool {
    match level {
        slog::Level::Critical | slog::Level::Error => {
            tracing::enabled!(target: "raft", tracing::Level::ERROR)
        }
        slog::Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        slog::Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
        slog::Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        slog::Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

/// A slog logger for raft-rs that writes into `tracing`.
pub fn raft_logger(raft_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => raft_id))
}
