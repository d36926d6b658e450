//! `skiff stack ...`: stacks from Compose-spec files. `stack config` is purely
//! client-side (no agent, no cluster); the parsing lives in the `skiff-stack` crate.

use crate::client::Exit;
use clap::{Args, Subcommand};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Print the normalised stack file(s): merged, interpolated, defaults filled in.
    ///
    /// Example: skiff stack config -c app.yaml -c override.yaml --format json
    Config(ConfigArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Stack (Compose) file; repeat to merge several in order.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_files: Vec<PathBuf>,
    /// Output format: yaml or json.
    #[arg(long, default_value = "yaml")]
    pub format: String,
    /// Stack name used to resolve resource names (default: the first file's directory).
    #[arg(long)]
    pub name: Option<String>,
}

/// Where the stack name comes from when none is given: the first file's directory,
/// as Compose does, falling back to "stack" when that is not a valid name.
pub fn default_stack_name(first: &Path) -> String {
    let dir = std::fs::canonicalize(first).ok().and_then(|p| {
        p.parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().to_lowercase())
    });
    match dir {
        Some(d) if skiff_stack::valid_stack_name(&d) => d,
        _ => "stack".to_string(),
    }
}

/// Loads the files against the process environment; warnings go to stderr.
pub fn load(files: &[PathBuf], name: &str) -> anyhow::Result<skiff_stack::StackSpec> {
    let opts = skiff_stack::LoadOptions {
        files: files.to_vec(),
        env: std::env::vars().collect::<HashMap<_, _>>(),
        project_name: name.to_string(),
    };
    let loaded = skiff_stack::load(&opts).map_err(|e| Exit {
        code: 1,
        message: format!("Error: {e}"),
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.spec)
}

/// `skiff stack config`: exit 0 with the spec on stdout, or 1 with the error
/// (`file:line:col: field: message`) on stderr.
pub fn config(a: &ConfigArgs) -> anyhow::Result<i32> {
    if a.format != "yaml" && a.format != "json" {
        return Err(Exit {
            code: 1,
            message: format!(
                "Error: unknown format {:?} (expected yaml or json)",
                a.format
            ),
        }
        .into());
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .compose_files
            .first()
            .map(|f| default_stack_name(f))
            .unwrap_or_else(|| "stack".into()),
    };
    let spec = load(&a.compose_files, &name)?;
    let text = if a.format == "json" {
        skiff_stack::to_json(&spec) + "\n"
    } else {
        skiff_stack::to_yaml(&spec)
    };
    // `stack config | head` closes the pipe early: that is not an error.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}
