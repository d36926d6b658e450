//! build, history, save, export, commit.

use crate::client::{exit, status};
use crate::output;
use anyhow::{Context, Result};
use clap::Args;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use std::io::Write;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (NAME[:TAG]); may be repeated.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable KEY=VALUE (KEY alone takes it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub no_cache: bool,
    /// Always pull base images.
    #[arg(long)]
    pub pull: bool,
    /// Network for RUN steps: host (default) or none.
    #[arg(long, default_value = "host")]
    pub network: String,
    /// Build secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR
    /// (id=ID alone reads the environment variable ID).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Only print the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Build context directory.
    pub context: PathBuf,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    pub image: String,
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file (default: stdout).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    pub container: String,
    pub reference: Option<String>,
}

pub async fn build(c: &mut Client, a: &BuildArgs) -> Result<i32> {
    let ctx = a.context.clone();
    if !ctx.is_dir() {
        return Err(exit(
            1,
            format!(
                "unable to prepare context: path {:?} not found",
                ctx.display().to_string()
            ),
        ));
    }
    let df_path = a.file.clone().unwrap_or_else(|| ctx.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&df_path).map_err(|e| {
        exit(
            1,
            format!("unable to read Dockerfile {}: {e}", df_path.display()),
        )
    })?;
    let df_rel = df_path
        .strip_prefix(&ctx)
        .ok()
        .map(|p| p.display().to_string());
    let mut build_args = std::collections::HashMap::new();
    for b in &a.build_args {
        match b.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(b) {
                    build_args.insert(b.clone(), v);
                }
            }
        }
    }
    let mut secrets = std::collections::HashMap::new();
    for spec in &a.secrets {
        let (id, value) = read_secret(spec).map_err(|e| exit(1, e))?;
        secrets.insert(id, value);
    }
    let job = BuildJob {
        context: ctx,
        dockerfile,
        dockerfile_name: df_path.display().to_string(),
        dockerfile_rel: df_rel,
        tags: a.tags.clone(),
        build_args,
        target: a.target.clone().unwrap_or_default(),
        no_cache: a.no_cache,
        pull: a.pull,
        network: a.network.clone(),
        secrets,
    };
    let quiet = a.quiet;
    let id = run_build(c, job, |line| {
        if !quiet {
            println!("{line}");
        }
    })
    .await?;
    if quiet {
        println!("{id}");
    }
    Ok(0)
}

/// One build on the agent: what `skiff build` and a stack deploy's `build:` sections
/// both send.
pub struct BuildJob {
    /// The context directory, streamed to the agent as a tar.
    pub context: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name, for error messages.
    pub dockerfile_name: String,
    /// Its path inside the context, if it is there (always sent, even if ignored).
    pub dockerfile_rel: Option<String>,
    pub tags: Vec<String>,
    pub build_args: std::collections::HashMap<String, String>,
    pub target: String,
    pub no_cache: bool,
    pub pull: bool,
    /// `host` or `none`.
    pub network: String,
    pub secrets: std::collections::HashMap<String, Vec<u8>>,
}

/// Runs a build, handing each progress line to `progress`; returns the image ID.
pub async fn run_build(
    c: &mut Client,
    job: BuildJob,
    mut progress: impl FnMut(&str),
) -> Result<String> {
    let first = BuildInput {
        dockerfile: job.dockerfile,
        dockerfile_name: job.dockerfile_name,
        tags: job.tags,
        build_args: job.build_args,
        target: job.target,
        no_cache: job.no_cache,
        pull: job.pull,
        network: job.network,
        auths: super::registry::all_auths(),
        context: vec![],
        secrets: job.secrets,
    };
    let (ctx, df_rel) = (job.context, job.dockerfile_rel);
    let (tx, rx) = mpsc::channel(8);
    tx.send(first)
        .await
        .map_err(|_| anyhow::anyhow!("build stream closed"))?;
    // The context tar is produced on a thread and streamed as it is written.
    std::thread::spawn(move || {
        struct W(mpsc::Sender<BuildInput>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .blocking_send(BuildInput {
                        context: b.to_vec(),
                        ..Default::default()
                    })
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "agent went away")
                    })?;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = std::io::BufWriter::with_capacity(1 << 20, W(tx));
        if let Err(e) = skiff_runtime::build::context::write_context(&ctx, df_rel.as_deref(), w) {
            eprintln!("error sending the build context: {e}");
        }
    });
    let mut s = c
        .image_build(ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    while let Some(m) = s.message().await.map_err(status)? {
        if !m.error.is_empty() {
            return Err(exit(1, m.error));
        }
        if !m.image_id.is_empty() {
            return Ok(m.image_id);
        }
        progress(&m.line);
    }
    Err(exit(1, "the build ended without a result"))
}

/// `--secret id=ID[,src=PATH|,env=VAR][,type=file|env]` → (id, value), as buildx reads it.
fn read_secret(spec: &str) -> std::result::Result<(String, Vec<u8>), String> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", v)) if v == "file" || v == "env" => kind = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "invalid --secret {spec:?}: want id=ID,src=PATH or id=ID,env=VAR"
                ))
            }
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("invalid --secret {spec:?}: id= is required"))?;
    if kind.as_deref() == Some("env") && env.is_none() {
        env = src.take().or_else(|| Some(id.clone()));
    }
    let value = match (src, env) {
        (Some(p), _) => {
            std::fs::read(&p).map_err(|e| format!("--secret {id}: reading {p}: {e}"))?
        }
        (None, Some(v)) => std::env::var_os(&v)
            .ok_or_else(|| format!("--secret {id}: environment variable {v} is not set"))?
            .into_encoded_bytes(),
        (None, None) => std::env::var_os(&id)
            .ok_or_else(|| {
                format!("--secret {id}: give src=PATH or env=VAR (no variable {id} is set)")
            })?
            .into_encoded_bytes(),
    };
    Ok((id, value))
}

pub async fn history(c: &mut Client, a: &HistoryArgs) -> Result<i32> {
    let r = c
        .image_history(NameRequest {
            id: a.image.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<serde_json::Value> = r
        .entries
        .iter()
        .map(|e| {
            let id = if e.id.starts_with("sha256:") && !a.no_trunc {
                e.id[7..19].to_string()
            } else {
                e.id.clone()
            };
            let created_by = if a.no_trunc || e.created_by.chars().count() <= 45 {
                e.created_by.clone()
            } else {
                e.created_by.chars().take(44).collect::<String>() + "…"
            };
            serde_json::json!({
                "ID": id,
                "CreatedSince": if e.created_unix > 0 { output::ago(e.created_unix) } else { "N/A".into() },
                "CreatedBy": created_by,
                "Size": if a.human { output::human_size(e.size) } else { e.size.to_string() },
                "Comment": e.comment,
            })
        })
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let columns = [
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ];
    output::print_rows(
        &output::Format::parse(a.format.as_deref())?,
        &columns,
        &rows,
    )?;
    Ok(0)
}

/// Writes a stream of chunks to a file (or stdout, refused when it is a terminal).
async fn write_stream(mut s: tonic::Streaming<DataChunk>, out: &Option<PathBuf>) -> Result<()> {
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(exit(
                    1,
                    "cowardly refusing to write an archive to a terminal: use -o FILE or redirect",
                ));
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let res = async {
        while let Some(m) = s.message().await.map_err(status)? {
            w.write_all(&m.data)?;
        }
        w.flush()?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if res.is_err() {
        if let Some(p) = out {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

pub async fn save(c: &mut Client, a: &SaveArgs) -> Result<i32> {
    let s = c
        .image_save(SaveRequest {
            names: a.images.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    write_stream(s, &a.output).await?;
    Ok(0)
}

pub async fn export(c: &mut Client, a: &ExportArgs) -> Result<i32> {
    let s = c
        .container_export(NameRequest {
            id: a.container.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    write_stream(s, &a.output).await?;
    Ok(0)
}

pub async fn commit(c: &mut Client, a: &CommitArgs) -> Result<i32> {
    let r = c
        .container_commit(CommitRequest {
            container: a.container.clone(),
            reference: a.reference.clone().unwrap_or_default(),
            changes: a.changes.clone(),
            message: a.message.clone().unwrap_or_default(),
            author: a.author.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", r.id);
    Ok(0)
}
