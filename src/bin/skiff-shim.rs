//! `skiff-shim`: the per-container shim as its own small binary, spawned by the agent
//! as `skiff-shim --task FILE [--exec FILE]` (the same arguments as `skiff shim`).
//!
//! Why a separate binary: in every process of a position-independent executable the
//! loader writes the relocated pointer tables (.data.rel.ro, GOT) into private pages.
//! For the whole `skiff` binary (CLI, agent, controller, gRPC, HTTP) that is about
//! 1 MB per shim, so per container; this binary links only the shim's code, so its
//! tables, its relocations at exec and its private memory stay small. That is why it
//! parses its few arguments by hand (no clap) and must never reach the CLI, the agent
//! or the controller: only `skiff_runtime::shim` and what that needs.

#[path = "../shim_entry.rs"]
mod shim_entry;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

const USAGE: &str = "Usage: skiff-shim [--log-level LEVEL] --task FILE [--exec FILE]\n\n\
Internal: the per-container shim, spawned by the skiff agent.";

/// The shim's arguments: those of `skiff shim`, plus the global `--log-level`.
#[derive(Debug, PartialEq)]
struct Args {
    task: PathBuf,
    exec: Option<PathBuf>,
    /// `--log-level`; else `SKIFF_LOG` (how the agent passes it); else `info`.
    log_level: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Args),
    Help,
}

/// Parses `--name VALUE` and `--name=VALUE`. `--log-format` is accepted and ignored,
/// as by `skiff shim` (the shim log is always text).
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut task = None;
    let mut exec = None;
    let mut log_level = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        // `--name=value`: split on the first '=', keeping the value's bytes (paths
        // need not be UTF-8).
        let (name, inline) = match bytes.iter().position(|&b| b == b'=') {
            Some(i) if bytes.starts_with(b"--") => (
                String::from_utf8_lossy(&bytes[..i]).into_owned(),
                Some(OsStr::from_bytes(&bytes[i + 1..]).to_os_string()),
            ),
            _ => (arg.to_string_lossy().into_owned(), None),
        };
        if inline.is_none() && (name == "-h" || name == "--help") {
            return Ok(Parsed::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--task" => task = Some(PathBuf::from(value()?)),
            "--exec" => exec = Some(PathBuf::from(value()?)),
            "--log-level" => log_level = Some(value()?.to_string_lossy().into_owned()),
            "--log-format" => {
                value()?;
            }
            _ => return Err(format!("unexpected argument {name:?}")),
        }
    }
    let task = task.ok_or("--task FILE is required")?;
    Ok(Parsed::Run(Args {
        task,
        exec,
        log_level,
    }))
}

fn main() {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        // Exit 2 on a usage error, as clap does for `skiff shim`.
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let level = args
        .log_level
        .or_else(|| std::env::var("SKIFF_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let code = shim_entry::run(&level, &args.task, args.exec.as_deref());
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_agents_arguments() {
        assert_eq!(
            p(&["--task", "/run/t.json"]),
            Ok(Parsed::Run(Args {
                task: "/run/t.json".into(),
                exec: None,
                log_level: None
            }))
        );
        assert_eq!(
            p(&[
                "--task=/t",
                "--exec",
                "/e",
                "--log-level=debug",
                "--log-format",
                "json"
            ]),
            Ok(Parsed::Run(Args {
                task: "/t".into(),
                exec: Some("/e".into()),
                log_level: Some("debug".into())
            }))
        );
    }

    #[test]
    fn usage_errors() {
        assert!(p(&[]).is_err());
        assert!(p(&["--task"]).is_err());
        assert!(p(&["--task", "/t", "shim"]).is_err());
        assert!(p(&["--task", "/t", "--bogus=1"]).is_err());
        assert_eq!(p(&["--help"]), Ok(Parsed::Help));
    }

    #[test]
    fn paths_need_not_be_utf8() {
        let raw = OsStr::from_bytes(b"--task=/t\xff").to_os_string();
        match parse([raw]) {
            Ok(Parsed::Run(a)) => assert_eq!(a.task.as_os_str().as_bytes(), b"/t\xff"),
            other => panic!("{other:?}"),
        }
    }
}
