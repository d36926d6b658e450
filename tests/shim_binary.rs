//! `skiff-shim` must stay small: one runs per container, and every process of this
//! position-independent binary writes its own copy of the relocated pointer tables
//! (BENCHMARKS.md, "Shim and agent memory"). This checks that none of the heavy crates
//! (the CLI's clap, gRPC, HTTP, TLS, the agent, the controller) reached its link.
//! Needs no root; skipped where binutils' `nm` is missing.

use std::process::Command;

/// Crates the shim never needs; a symbol of one means a dependency crept in.
const KEPT_OUT: &[&str] = &[
    "clap_builder",
    "tonic",
    "hyper",
    "h2",
    "reqwest",
    "rustls",
    "skiff_agent",
    "skiff_controller",
    "skiff_stack",
    "raft",
];

#[test]
fn skiff_shim_links_only_the_shim() {
    let shim = env!("CARGO_BIN_EXE_skiff-shim");
    let Ok(out) = Command::new("nm").args(["-C", shim]).output() else {
        eprintln!("nm not installed: skipped");
        return;
    };
    assert!(out.status.success(), "nm {shim} failed");
    let symbols = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in symbols.lines() {
        for krate in KEPT_OUT {
            let path = format!("{krate}::");
            // A crate path at the start of a name or after a non-identifier character
            // (`<tonic::...`, `&hyper::...`), not inside another identifier.
            let hit = line.match_indices(&path).any(|(i, _)| {
                i == 0
                    || !line.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && line.as_bytes()[i - 1] != b'_'
            });
            if hit && found.len() < 20 {
                found.push(format!("{krate}: {line}"));
            }
        }
    }
    assert!(found.is_empty(), "skiff-shim links:\n{}", found.join("\n"));
}
