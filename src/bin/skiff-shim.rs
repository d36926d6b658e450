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

const USAGE: &str = "Usage: skiff-shim [--log-level LEVEL] --task FILE [--exec FILE]\n       \
skiff-shim --standby\n\n\
Internal: the per-container shim, spawned by the skiff agent.";

/// `--standby`: spawned ahead of need by the agent (`node-agent/src/shimpool.rs`), the
/// process waits for the run it is to serve, so a container start skips the exec and
/// the loader. The agent writes the assignment to its stdin and closes it: NUL-ended
/// fields, the shim log's path first, then the arguments a shim spawned for that run
/// would have had. The process then has its stderr on that log and its stdin on
/// /dev/null, as such a shim would, and goes on as one. EOF before any assignment
/// (the agent stopped) ends it quietly: `Ok(None)`.
/// `fds`: the (stdin, stderr) to replace; 0 and 2 but in tests.
fn take_assignment(
    input: &mut impl std::io::Read,
    fds: (std::os::fd::RawFd, std::os::fd::RawFd),
) -> Result<Option<Vec<OsString>>, String> {
    let mut msg = Vec::new();
    input
        .read_to_end(&mut msg)
        .map_err(|e| format!("reading the assignment: {e}"))?;
    if msg.is_empty() {
        return Ok(None);
    }
    let body = msg
        .strip_suffix(b"\0")
        .ok_or("the assignment does not end with NUL")?;
    let mut fields = body
        .split(|&b| b == 0)
        .map(|f| OsStr::from_bytes(f).to_os_string());
    let log = fields.next().ok_or("the assignment names no log")?;
    let open = |path: &OsStr, append: bool| {
        std::fs::OpenOptions::new()
            .read(!append)
            .append(append)
            .create(append)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.to_string_lossy()))
    };
    let log = open(&log, true)?;
    let null = open(OsStr::new("/dev/null"), false)?;
    for (file, fd) in [(&log, fds.1), (&null, fds.0)] {
        // SAFETY: dup2 onto an fd this process owns and nothing else uses yet.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(file), fd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(Some(fields.collect()))
}

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

/// Rewrites this process's command line (`/proc/self/cmdline`, what `ps` and `pgrep -f`
/// show) to `args`, in place: an assigned standby then reads like a shim spawned for
/// its run, `skiff-shim --task PATH`, and whatever finds a container's shim by its
/// command line (operators, cleanup scripts, the chaos checker) still does. The agent
/// spawns standbys with `STANDBY_PAD` (node-agent/src/shimpool.rs) empty arguments
/// after `--standby` to make the room (`ps` shows nothing of them); when `args` do not
/// fit, nothing changes.
/// Call it after the last read of the process's arguments: std's copy of argv points
/// into the memory this overwrites.
fn set_cmdline(args: &[OsString]) {
    let mut line = Vec::new();
    for a in args {
        line.extend_from_slice(a.as_bytes());
        line.push(0);
    }
    // Fields 48 and 49 of /proc/self/stat: where the argument strings lie.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some((_, after_comm)) = stat.rsplit_once(") ") else {
        return;
    };
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(48 - 3).map(|f| f.parse::<usize>()),
        fields.get(49 - 3).map(|f| f.parse::<usize>()),
    ) else {
        return;
    };
    if start == 0 || end <= start || line.len() > end - start {
        return;
    }
    // SAFETY: [start, end) holds this process's own argument strings (writable stack
    // memory set up by exec); nothing reads them after this (see above).
    unsafe {
        std::ptr::copy_nonoverlapping(line.as_ptr(), start as *mut u8, line.len());
        std::ptr::write_bytes((start + line.len()) as *mut u8, 0, end - start - line.len());
    }
}

fn main() {
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--standby") && argv[1..].iter().all(|a| a.is_empty()) {
        argv = match take_assignment(&mut std::io::stdin().lock(), (0, 2)) {
            Ok(Some(a)) => {
                let mut shown: Vec<OsString> = std::env::args_os().take(1).collect();
                shown.extend(a.iter().cloned());
                set_cmdline(&shown);
                a
            }
            Ok(None) => std::process::exit(0),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
    }
    let args = match parse(argv) {
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
    fn a_standby_takes_its_assignment_and_log() {
        use std::io::{Seek, Write};
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("shim.log");
        let mut msg = log.as_os_str().as_bytes().to_vec();
        msg.extend_from_slice(b"\0--task\0/t\xff\0--exec\0/e\0");
        // Two fds standing in for stdin and stderr.
        let mut stdin = tempfile::tempfile().expect("file");
        stdin.write_all(b"not replaced").expect("write");
        stdin.rewind().expect("rewind");
        let mut stderr = tempfile::tempfile().expect("file");
        let args = take_assignment(&mut &msg[..], (stdin.as_raw_fd(), stderr.as_raw_fd()));
        assert_eq!(
            args,
            Ok(Some(vec![
                OsString::from("--task"),
                OsStr::from_bytes(b"/t\xff").to_os_string(),
                OsString::from("--exec"),
                OsString::from("/e"),
            ]))
        );
        stderr.write_all(b"on the log").expect("write");
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "on the log");
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut stdin, &mut buf).expect("read");
        assert_eq!(buf, "", "stdin is /dev/null");

        assert_eq!(take_assignment(&mut &b""[..], (-1, -1)), Ok(None));
        assert!(take_assignment(&mut &b"/log"[..], (-1, -1)).is_err());
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
