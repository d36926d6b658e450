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
mod interpolate;
mod merge;
pub mod spec;
mod value;
mod yaml;

pub use error::{Location, StackError, Warning};
pub use spec::*;
pub use yaml::{to_yaml_string, Document, Step, MAX_DEPTH, MAX_NODES};

use error::{Diag, Pos};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use yaml::{Node, Value};

/// Largest stack (or env) file read: Compose files are small; a huge one is a mistake
/// or an attack.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

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
}

/// A loaded stack and what the user should be told about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub spec: StackSpec,
    pub warnings: Vec<Warning>,
}

/// Reads, interpolates, merges and converts the stack files.
pub fn load(opts: &LoadOptions) -> Result<Loaded, StackError> {
    let first = opts.files.first().ok_or(StackError::NoFiles)?;
    let mut diag = Diag {
        files: opts.files.clone(),
        warnings: Vec::new(),
    };
    if !valid_stack_name(&opts.project_name) {
        return Err(StackError::Invalid {
            location: Location { file: first.clone(), line: 1, col: 1 },
            field: "name".into(),
            message: format!(
                "invalid stack name {:?} (letters, digits, '_', '-' and '.', starting with a letter or digit)",
                opts.project_name
            ),
        });
    }
    let base_dir = absolute(first.parent().unwrap_or(Path::new(".")));
    let env = environment(&base_dir, &opts.env)?;
    let mut merged: Option<Node> = None;
    for (i, path) in opts.files.iter().enumerate() {
        let text = read_capped(path)?;
        let start = Pos {
            file: i,
            line: 1,
            col: 1,
        };
        let Some(mut root) = yaml::parse(&text, i, &diag)? else {
            return Err(diag.syntax(start, "the file is empty"));
        };
        if !matches!(root.value, Value::Map(_)) {
            return Err(diag.syntax(
                root.pos,
                format!(
                    "expected a mapping at the top level, found {}",
                    root.describe()
                ),
            ));
        }
        interpolate_tree(&mut root, &env, &mut diag, "")?;
        merged = Some(match merged {
            None => root,
            Some(base) => merge::merge(base, root),
        });
    }
    let root = merged.ok_or(StackError::NoFiles)?;
    let mut cx = convert::Cx {
        diag: &mut diag,
        env: &env,
        base_dir,
        project: opts.project_name.clone(),
    };
    let spec = convert::convert(&mut cx, &root)?;
    Ok(Loaded {
        spec,
        warnings: diag.warnings,
    })
}

/// The normalised spec as YAML (it loads back as a Compose file).
pub fn to_yaml(spec: &StackSpec) -> String {
    let v = serde_json::to_value(spec)
        .expect("a StackSpec has only string keys and serialisable values");
    to_yaml_string(&v)
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

fn absolute(p: &Path) -> PathBuf {
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

/// `.env` beside the first file, overridden by the process environment.
fn environment(
    base_dir: &Path,
    process: &HashMap<String, String>,
) -> Result<HashMap<String, String>, StackError> {
    let path = base_dir.join(".env");
    let mut env = HashMap::new();
    if path.is_file() {
        let text = read_capped(&path)?;
        let entries = dotenv::parse(&text).map_err(|(line, message)| StackError::Invalid {
            location: Location {
                file: path.clone(),
                line,
                col: 1,
            },
            field: ".env".into(),
            message,
        })?;
        env.extend(dotenv::resolve(&entries, process));
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
                    return Err(diag.invalid(
                        n.pos,
                        f,
                        format!("required variable {var:?} is missing a value: {message}"),
                    ))
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
