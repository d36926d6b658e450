//! `skiff context ...`: named agent endpoints, so `skiff stack deploy` from a laptop
//! reaches a cluster without `--host` on every command.
//!
//! Stored in the client's config directory (`$SKIFF_CONFIG`, else `~/.skiff`):
//! `contexts/NAME.json` per context, and the current one as `currentContext` in
//! `config.json` (which also holds registry logins; other keys are kept). The `default`
//! context always exists: the local agent socket.
//!
//! Which agent a command talks to, first match wins (Docker's order): `--host`,
//! `--context`, `SKIFF_HOST`, `SKIFF_CONTEXT`, the current context, the default socket.

use crate::client::exit;
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The local agent's socket: the `default` context.
pub const DEFAULT_HOST: &str = "unix:///run/skiff/skiff.sock";
pub const DEFAULT_NAME: &str = "default";

#[derive(Subcommand, Debug)]
pub enum ContextCommand {
    /// Create a context.
    ///
    /// Example: skiff context create prod --host tcp://10.0.0.5:2376 --tlsdir ~/.skiff/prod
    ///
    /// Example: skiff context create lab --host ssh://root@lab-1 --description 'lab manager'
    Create(CreateArgs),
    /// List contexts (the current one is marked with *).
    ///
    /// Example: skiff context ls --format '{{.Name}} {{.Host}}'
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Make a context the current one (`default`: the local agent).
    ///
    /// Example: skiff context use prod
    Use(NameArg),
    /// Show contexts as JSON (default: the current one).
    ///
    /// Example: skiff context inspect prod
    Inspect(InspectArgs),
    /// Remove contexts.
    ///
    /// Example: skiff context rm -f prod
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// unix:///PATH, ssh://[USER@]HOST[:PORT] or tcp://HOST[:PORT].
    #[arg(long)]
    pub host: String,
    /// For tcp://: the directory with ca.pem, cert.pem and key.pem.
    #[arg(long, value_name = "DIR")]
    pub tlsdir: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
    /// table, json, or a Go template over .Name .Description .Host .TLSDir .Current.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Also remove the current context (the default one becomes current).
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// One stored context.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Context {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub host: String,
    #[serde(default, rename = "TLSDir", skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
}

impl Context {
    fn default_context() -> Context {
        Context {
            name: DEFAULT_NAME.into(),
            description: "Local agent".into(),
            host: DEFAULT_HOST.into(),
            tls_dir: None,
        }
    }
}

/// The agent a command talks to, after the precedence rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    /// For tcp://: where the TLS files are.
    pub tls_dir: PathBuf,
}

/// The client's config directory: `$SKIFF_CONFIG`, else `~/.skiff`.
pub fn config_dir() -> PathBuf {
    skiff_runtime::image::auth::CredentialFile::default_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/root/.skiff"))
}

/// Where `skiff cluster client-cert` writes and `tcp://` reads by default.
pub fn default_tls_dir() -> PathBuf {
    config_dir().join("tls")
}

struct Store {
    dir: PathBuf,
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && n.len() <= 64
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'+'))
}

fn check_host(host: &str) -> Result<()> {
    if host.starts_with("unix://") {
        Ok(())
    } else if host.starts_with("ssh://") {
        crate::remote::SshTarget::parse(host).map(|_| ())
    } else if host.starts_with("tcp://") {
        crate::remote::tcp_addr(host).map(|_| ())
    } else {
        Err(exit(
            1,
            format!("unsupported host {host:?}: use unix:///PATH, ssh://[USER@]HOST[:PORT] or tcp://HOST[:PORT]"),
        ))
    }
}

/// Writes `data` to `path` with `mode` from the first byte, atomically.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

impl Store {
    fn open() -> Store {
        Store { dir: config_dir() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join("contexts").join(format!("{name}.json"))
    }

    fn get(&self, name: &str) -> Result<Context> {
        if name == DEFAULT_NAME {
            return Ok(Context::default_context());
        }
        if !valid_name(name) {
            return Err(exit(1, format!("invalid context name {name:?}")));
        }
        let p = self.path(name);
        let raw = match std::fs::read(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(exit(
                    1,
                    format!("context {name:?} does not exist (skiff context ls)"),
                ))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        serde_json::from_slice(&raw).with_context(|| format!("parsing {}", p.display()))
    }

    fn list(&self) -> Result<Vec<Context>> {
        let mut out = vec![Context::default_context()];
        let rd = match std::fs::read_dir(self.dir.join("contexts")) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).context("reading contexts"),
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|n| valid_name(n))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        for n in names {
            out.push(self.get(&n)?);
        }
        Ok(out)
    }

    fn config(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let p = self.dir.join("config.json");
        match std::fs::read(&p) {
            Ok(raw) if raw.iter().all(u8::is_ascii_whitespace) => Ok(Default::default()),
            Ok(raw) => {
                serde_json::from_slice(&raw).with_context(|| format!("parsing {}", p.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// The current context's name as `config.json` records it.
    fn current(&self) -> Result<String> {
        Ok(self
            .config()?
            .get("currentContext")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_NAME)
            .to_string())
    }

    fn set_current(&self, name: &str) -> Result<()> {
        let mut cfg = self.config()?;
        if name == DEFAULT_NAME {
            cfg.remove("currentContext");
        } else {
            cfg.insert("currentContext".into(), name.into());
        }
        skiff_runtime::fsutil::create_dir_mode(&self.dir, 0o700)?;
        let p = self.dir.join("config.json");
        write_private(&p, &serde_json::to_vec_pretty(&cfg)?, 0o600)
            .with_context(|| format!("writing {}", p.display()))
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Applies the precedence rules to the global flags and the environment.
pub fn resolve(
    flag_host: Option<&str>,
    flag_context: Option<&str>,
    flag_tlsdir: Option<&Path>,
) -> Result<Endpoint> {
    let store = Store::open();
    // (host, the context's TLS directory)
    let (host, ctx_tls) = if let Some(h) = flag_host {
        (h.to_string(), None)
    } else if let Some(c) = flag_context {
        let c = store.get(c)?;
        (c.host, c.tls_dir)
    } else if let Some(h) = env("SKIFF_HOST") {
        (h, None)
    } else {
        let name = match env("SKIFF_CONTEXT") {
            Some(c) => c,
            None => store.current()?,
        };
        let c = store.get(&name)?;
        (c.host, c.tls_dir)
    };
    let tls_dir = flag_tlsdir
        .map(Path::to_path_buf)
        .or(ctx_tls)
        .unwrap_or_else(default_tls_dir);
    Ok(Endpoint { host, tls_dir })
}

/// The context commands and `--context`/`SKIFF_CONTEXT` consider current.
fn current_name(store: &Store, flag_context: Option<&str>) -> Result<String> {
    Ok(
        match flag_context
            .map(str::to_string)
            .or_else(|| env("SKIFF_CONTEXT"))
        {
            Some(c) => c,
            None => store.current()?,
        },
    )
}

const COLUMNS: [(&str, &str); 3] = [
    ("Name", "NAME"),
    ("Description", "DESCRIPTION"),
    ("Host", "HOST"),
];

fn row(c: &Context, current: bool, table: bool) -> serde_json::Value {
    serde_json::json!({
        "Name": if table && current { format!("{} *", c.name) } else { c.name.clone() },
        "Description": c.description,
        "Host": c.host,
        "TLSDir": c.tls_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        "Current": current,
    })
}

pub fn run(cmd: &ContextCommand, flag_context: Option<&str>) -> Result<i32> {
    let store = Store::open();
    match cmd {
        ContextCommand::Create(a) => {
            if a.name == DEFAULT_NAME || !valid_name(&a.name) {
                return Err(exit(
                    1,
                    format!(
                        "invalid context name {:?}: letters, digits, '_', '.', '-', '+' (not \"default\")",
                        a.name
                    ),
                ));
            }
            check_host(&a.host)?;
            let p = store.path(&a.name);
            if p.exists() {
                return Err(exit(1, format!("context {:?} already exists", a.name)));
            }
            let tls_dir = match &a.tlsdir {
                Some(d) => Some(std::path::absolute(d).context("--tlsdir")?),
                None => None,
            };
            let c = Context {
                name: a.name.clone(),
                description: a.description.clone(),
                host: a.host.clone(),
                tls_dir,
            };
            skiff_runtime::fsutil::create_dir_mode(&store.dir, 0o700)?;
            skiff_runtime::fsutil::create_dir_mode(&store.dir.join("contexts"), 0o700)?;
            write_private(&p, &serde_json::to_vec_pretty(&c)?, 0o600)
                .with_context(|| format!("writing {}", p.display()))?;
            println!("{}", a.name);
            eprintln!("Successfully created context {:?}", a.name);
        }
        ContextCommand::Ls(a) => {
            let current = current_name(&store, flag_context)?;
            let all = store.list()?;
            if a.quiet {
                for c in all {
                    println!("{}", c.name);
                }
                return Ok(0);
            }
            let format = crate::output::Format::parse(a.format.as_deref())?;
            let table = matches!(format, crate::output::Format::Table);
            let rows: Vec<_> = all
                .iter()
                .map(|c| row(c, c.name == current, table))
                .collect();
            crate::output::print_rows(&format, &COLUMNS, &rows)?;
        }
        ContextCommand::Use(a) => {
            store.get(&a.name)?;
            store.set_current(&a.name)?;
            println!("{}", a.name);
            eprintln!("Current context is now {:?}", a.name);
            if env("SKIFF_HOST").is_some() {
                eprintln!("Warning: SKIFF_HOST is set and overrides the current context");
            }
        }
        ContextCommand::Inspect(a) => {
            let names = if a.names.is_empty() {
                vec![current_name(&store, flag_context)?]
            } else {
                a.names.clone()
            };
            let mut out = Vec::new();
            for n in &names {
                out.push(store.get(n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ContextCommand::Rm(a) => {
            let current = store.current()?;
            for n in &a.names {
                if n == DEFAULT_NAME {
                    return Err(exit(1, "the default context cannot be removed"));
                }
                store.get(n)?;
                if *n == current {
                    if !a.force {
                        return Err(exit(
                            1,
                            format!("context {n:?} is in use: `skiff context use default` first, or use -f"),
                        ));
                    }
                    store.set_current(DEFAULT_NAME)?;
                }
                std::fs::remove_file(store.path(n))
                    .with_context(|| format!("removing context {n}"))?;
                println!("{n}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["prod", "a", "lab-1.x+y_z"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_global_context_flag_is_not_builds_context_dir() {
        let parse = |args: &[&str]| {
            let m = crate::cli::command()
                .try_get_matches_from(args)
                .expect("parse");
            <crate::cli::Cli as clap::FromArgMatches>::from_arg_matches(&m).expect("cli")
        };
        assert_eq!(parse(&["skiff", "build", "-t", "x", "."]).context, None);
        let c = parse(&["skiff", "--context", "prod", "build", "."]);
        assert_eq!(c.context.as_deref(), Some("prod"));
    }

    #[test]
    fn hosts_are_checked() {
        assert!(check_host("unix:///run/skiff/skiff.sock").is_ok());
        assert!(check_host("ssh://root@h:22").is_ok());
        assert!(check_host("tcp://h:2376").is_ok());
        assert!(check_host("http://h").is_err());
        assert!(check_host("tcp://h/x").is_err());
    }

    #[test]
    fn ls_rows_mark_the_current_context_in_tables_only() {
        let c = Context {
            name: "prod".into(),
            description: "d".into(),
            host: "tcp://h:2376".into(),
            tls_dir: None,
        };
        let t = crate::output::render_rows(
            &crate::output::Format::Table,
            &COLUMNS,
            &[row(&c, true, true)],
        )
        .expect("table");
        assert!(t.contains("prod *"), "{t}");
        let f = crate::output::Format::parse(Some("{{.Name}} {{.Current}}")).expect("f");
        let t = crate::output::render_rows(&f, &COLUMNS, &[row(&c, true, false)]).expect("t");
        assert_eq!(t, "prod true\n");
    }
}
