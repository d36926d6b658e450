//! Stack files: Compose-spec YAML (with Swarm's `deploy:` section) turned into a
//! typed, normalised [`StackSpec`] that the CLI and the controller share. This crate
//! knows nothing of clusters or containers; it reads files and returns data.
//!
//! Pipeline of [`load`], each step in its own module:
//!
//! 1. read each `-c` file, capped at [`MAX_FILE_SIZE`] (`lib.rs`);
//! 2. parse it into a positioned tree with anchors, merge keys and caps on alias
//!    expansion and nesting (`yaml`);
//! 3. interpolate `${VAR}` forms in every value against the process environment
//!    over the `.env` file beside the first stack file (`interpolate`, `dotenv`);
//! 4. merge the files in order with the Compose rules (`merge`);
//! 5. convert to the typed spec, checking every key and reference (`convert`,
//!    `deploy`, with typed reads in `value`); the result types are in `spec`.
//!
//! Any error aborts the whole load: a bad file never partially loads. Errors and
//! warnings carry `file:line:col` and the dotted field path (`error`).

mod convert;
mod deploy;
mod dotenv;
pub mod error;
mod extends;
mod include;
mod interpolate;
mod merge;
mod relocate;
pub mod spec;
mod value;
mod yaml;

pub use error::{Location, StackError, Warning};
pub use spec::*;
pub use yaml::{to_yaml_string, Document, Step, MAX_DEPTH, MAX_NODES};

use error::{Diag, Pos};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use yaml::{Node, Value};

/// Largest stack (or env) file read: Compose files are small; a huge one is a mistake
/// or an attack.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// Deepest chain of `include` / `extends: {file}` between files: deeper is a loop or
/// a mistake.
pub const MAX_FILE_NESTING: usize = 16;

/// What to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Stack files, merged in order (`-c a.yaml -c b.yaml`).
    pub files: Vec<PathBuf>,
    /// The process environment, for interpolation and valueless `environment` keys.
    /// It overrides the `.env` file beside the first stack file.
    pub env: HashMap<String, String>,
    /// The stack name: resource names default to `NAME_key`.
    pub project_name: String,
    /// Whether `project_name` is only a default that the file's top-level `name:`
    /// replaces (`stack config` without `--name`); a deploy names the stack itself.
    pub name_is_default: bool,
    /// `--env-file`: read instead of the `.env` beside the first file, in order.
    pub env_files: Vec<PathBuf>,
    /// `--profile`: services that list `profiles` load only when one of theirs is
    /// active (`*` activates all). `COMPOSE_PROFILES` in `env` adds to these.
    pub profiles: Vec<String>,
}

/// A loaded stack and what the user should be told about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub spec: StackSpec,
    pub warnings: Vec<Warning>,
    /// The interpolation environment (`.env` or `--env-file`, then the process
    /// environment): secrets and configs with an `environment` source read it at deploy.
    pub env: HashMap<String, String>,
}

/// What loading one file needs: where to report, the environment to interpolate with,
/// and the chain of files that led here (to stop `include`/`extends` loops).
pub(crate) struct FileCx<'a> {
    pub diag: &'a mut Diag,
    pub process_env: &'a HashMap<String, String>,
    pub chain: Vec<PathBuf>,
}

/// Reads, interpolates, merges and converts the stack files.
pub fn load(opts: &LoadOptions) -> Result<Loaded, StackError> {
    let first = opts.files.first().ok_or(StackError::NoFiles)?;
    let mut diag = Diag {
        files: opts.files.clone(),
        warnings: Vec::new(),
    };
    let base_dir = absolute(first.parent().unwrap_or(Path::new(".")));
    let env = environment(&base_dir, &opts.env, &opts.env_files)?;
    let mut merged: Option<Node> = None;
    let mut fcx = FileCx {
        diag: &mut diag,
        process_env: &opts.env,
        chain: Vec::new(),
    };
    for path in &opts.files {
        // Later -c files resolve relative paths against the first file's directory,
        // as Compose does; only included and extended files keep their own.
        let root = load_file(&mut fcx, path, &env, None)?;
        merged = Some(match merged {
            None => root,
            Some(base) => merge::merge(base, root),
        });
    }
    let mut root = merged.ok_or(StackError::NoFiles)?;
    merge::strip_resets(&mut root);
    let mut project = opts.project_name.clone();
    if let Some(n) = root.get("name") {
        if let Value::Str { text, .. } = &n.value {
            if opts.name_is_default || project.is_empty() {
                project = text.clone();
            }
        }
    }
    if !valid_stack_name(&project) {
        let pos = root.get("name").map(|n| n.pos).unwrap_or(Pos {
            file: 0,
            line: 1,
            col: 1,
        });
        return Err(diag.invalid(
            pos,
            "name",
            format!(
                "invalid stack name {project:?} (letters, digits, '_', '-' and '.', starting with a letter or digit)"
            ),
        ));
    }
    let mut active: Vec<String> = opts.profiles.clone();
    if let Some(p) = env.get("COMPOSE_PROFILES") {
        active.extend(
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    let disabled = apply_profiles(&mut diag, &mut root, &active)?;
    let mut cx = convert::Cx {
        diag: &mut diag,
        env: &env,
        base_dir,
        project,
        disabled,
    };
    let spec = convert::convert(&mut cx, &root)?;
    Ok(Loaded {
        spec,
        warnings: diag.warnings,
        env,
    })
}

/// One file read, parsed and interpolated, its `include`s and `extends` applied.
/// With `relocate`, its relative paths are made absolute against that directory first
/// (a file included or extended from elsewhere keeps its own base).
pub(crate) fn load_file(
    fcx: &mut FileCx,
    path: &Path,
    env: &HashMap<String, String>,
    relocate: Option<&Path>,
) -> Result<Node, StackError> {
    let abs = absolute(path);
    let index = match fcx.diag.files.iter().position(|f| absolute(f) == abs) {
        Some(i) => i,
        None => {
            fcx.diag.files.push(path.to_path_buf());
            fcx.diag.files.len() - 1
        }
    };
    let start = Pos {
        file: index,
        line: 1,
        col: 1,
    };
    if fcx.chain.contains(&abs) {
        let chain: Vec<String> = fcx
            .chain
            .iter()
            .chain(std::iter::once(&abs))
            .map(|p| p.display().to_string())
            .collect();
        return Err(fcx.diag.syntax(
            start,
            format!(
                "files include or extend each other in a loop: {}",
                chain.join(" -> ")
            ),
        ));
    }
    if fcx.chain.len() >= MAX_FILE_NESTING {
        return Err(fcx.diag.syntax(
            start,
            format!("include/extends nested deeper than {MAX_FILE_NESTING} files"),
        ));
    }
    let text = read_capped(path)?;
    let Some(mut root) = yaml::parse(&text, index, fcx.diag)? else {
        return Err(fcx.diag.syntax(start, "the file is empty"));
    };
    if !matches!(root.value, Value::Map(_)) {
        return Err(fcx.diag.syntax(
            root.pos,
            format!(
                "expected a mapping at the top level, found {}",
                root.describe()
            ),
        ));
    }
    interpolate_tree(&mut root, env, fcx.diag, "")?;
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(base) = relocate {
        relocate::relocate(&mut root, base);
    }
    fcx.chain.push(abs);
    let r = include::apply(fcx, &mut root, &dir)
        .and_then(|()| extends::apply(fcx, &mut root, &dir, env));
    fcx.chain.pop();
    r?;
    Ok(root)
}

/// Drops the services whose profiles are all inactive; returns them with their
/// profiles, so a reference to one can say why it is missing.
fn apply_profiles(
    diag: &mut Diag,
    root: &mut Node,
    active: &[String],
) -> Result<BTreeMap<String, Vec<String>>, StackError> {
    let mut disabled = BTreeMap::new();
    let Value::Map(top) = &mut root.value else {
        return Ok(disabled);
    };
    let Some((_, services)) = top.iter_mut().find(|(k, _)| k.name == "services") else {
        return Ok(disabled);
    };
    let Value::Map(entries) = &mut services.value else {
        return Ok(disabled);
    };
    let mut keep = Vec::with_capacity(entries.len());
    for (k, v) in std::mem::take(entries) {
        let profiles = match v.get("profiles") {
            Some(p) => value::str_list(diag, p, &format!("services.{}.profiles", k.name), false)?,
            None => Vec::new(),
        };
        let enabled =
            profiles.is_empty() || active.iter().any(|a| a == "*" || profiles.contains(a));
        if enabled {
            keep.push((k, v));
        } else {
            disabled.insert(k.name.clone(), profiles);
        }
    }
    *entries = keep;
    Ok(disabled)
}

/// The normalised spec as YAML (it loads back as a Compose file). A literal `$` is
/// written `$$`, as `docker compose config` does, so loading it back does not
/// interpolate what was already interpolated.
pub fn to_yaml(spec: &StackSpec) -> String {
    let mut v = serde_json::to_value(spec)
        .expect("a StackSpec has only string keys and serialisable values");
    escape_dollars(&mut v);
    to_yaml_string(&v)
}

fn escape_dollars(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        serde_json::Value::Array(a) => a.iter_mut().for_each(escape_dollars),
        serde_json::Value::Object(m) => m.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

/// The normalised spec as pretty JSON.
pub fn to_json(spec: &StackSpec) -> String {
    serde_json::to_string_pretty(spec)
        .expect("a StackSpec has only string keys and serialisable values")
}

/// Docker's rule for stack names, which prefix every resource name.
pub fn valid_stack_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or(p.to_path_buf())
    })
}

/// Reads a whole file, refusing anything over [`MAX_FILE_SIZE`] without reading it.
pub(crate) fn read_capped(path: &Path) -> Result<String, StackError> {
    let io = |source| StackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if size > MAX_FILE_SIZE {
        return Err(StackError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_FILE_SIZE,
        });
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_FILE_SIZE {
        return Err(StackError::TooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit: MAX_FILE_SIZE,
        });
    }
    String::from_utf8(buf).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// `.env` beside the first file (or the `--env-file`s instead), overridden by the
/// process environment.
pub(crate) fn environment(
    base_dir: &Path,
    process: &HashMap<String, String>,
    env_files: &[PathBuf],
) -> Result<HashMap<String, String>, StackError> {
    let default = base_dir.join(".env");
    let files: Vec<(PathBuf, bool)> = if env_files.is_empty() {
        vec![(default, false)]
    } else {
        env_files.iter().map(|p| (p.clone(), true)).collect()
    };
    let mut env = HashMap::new();
    for (path, required) in files {
        if !required && !path.is_file() {
            continue;
        }
        let text = read_capped(&path)?;
        let entries = dotenv::parse(&text).map_err(|(line, message)| StackError::Invalid {
            location: Location {
                file: path.clone(),
                line,
                col: 1,
            },
            field: "env file".into(),
            message,
        })?;
        // Later files see the variables of earlier ones.
        let mut seen = env.clone();
        seen.extend(process.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(dotenv::resolve(&entries, &seen));
    }
    env.extend(process.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env)
}

/// Interpolates every scalar value (keys are left alone), except under top-level
/// `x-` extensions, which the spec says to ignore.
fn interpolate_tree(
    n: &mut Node,
    env: &HashMap<String, String>,
    diag: &mut Diag,
    f: &str,
) -> Result<(), StackError> {
    match &mut n.value {
        Value::Str { text, .. } => {
            if !text.contains('$') {
                return Ok(());
            }
            match interpolate::interpolate(text, env) {
                Ok(e) => {
                    for var in e.unset {
                        diag.warn(
                            n.pos,
                            f,
                            format!(
                                "the {var:?} variable is not set; defaulting to a blank string"
                            ),
                        );
                    }
                    *text = e.text;
                }
                Err(interpolate::InterpolationError::Invalid(m)) => {
                    return Err(diag.invalid(n.pos, f, m))
                }
                Err(interpolate::InterpolationError::Required { var, message }) => {
                    let why = if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    };
                    return Err(diag.invalid(
                        n.pos,
                        f,
                        format!("required variable {var:?} is missing a value{why}"),
                    ));
                }
            }
        }
        Value::Seq(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                interpolate_tree(it, env, diag, &value::idx(f, i))?;
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                if f.is_empty() && k.name.starts_with("x-") {
                    continue;
                }
                interpolate_tree(v, env, diag, &value::sub(f, &k.name))?;
            }
        }
        Value::Null => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
