//! Image commands: images, import, load, tag, rmi.

use crate::cli::*;
use crate::client::status;
use crate::output::{self, Format};
use anyhow::{Context, Result};
use serde_json::json;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use std::io::Read;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

const CHUNK: usize = 1 << 20;

/// Streams a file (or stdin for `-`/None) as chunks built by `wrap`.
fn stream_file<T: Send + 'static>(
    path: Option<std::path::PathBuf>,
    first: T,
    wrap: fn(Vec<u8>) -> T,
) -> Result<ReceiverStream<T>> {
    let mut reader: Box<dyn Read + Send> = match &path {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?)
        }
        _ => Box::new(std::io::stdin()),
    };
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        if tx.blocking_send(first).is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(wrap(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

pub async fn images(c: &mut Client, a: &ImagesArgs) -> Result<i32> {
    let list = c
        .image_list(ImageListRequest {
            all: a.all,
            filters: vec![],
        })
        .await
        .map_err(status)?
        .into_inner()
        .images;
    let short = |id: &str| -> String {
        if a.no_trunc {
            id.to_string()
        } else {
            id.trim_start_matches("sha256:").chars().take(12).collect()
        }
    };
    let wanted = a.reference.as_deref().map(|r| {
        if r.contains(':') {
            r.to_string()
        } else {
            format!("{r}:")
        }
    });
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for img in &list {
        let tags: Vec<String> = if img.repo_tags.is_empty() {
            vec!["<none>:<none>".into()]
        } else {
            img.repo_tags.clone()
        };
        for t in tags {
            if let Some(w) = &wanted {
                if !(t == *w || (w.ends_with(':') && t.starts_with(w.as_str()))) {
                    continue;
                }
            }
            let (repo, tag) = t.rsplit_once(':').unwrap_or((&t, "<none>"));
            if !ids.contains(&img.id) {
                ids.push(img.id.clone());
            }
            rows.push(json!({
                "ID": short(&img.id),
                "Repository": repo,
                "Tag": tag,
                "CreatedSince": output::ago(img.created_unix),
                "CreatedAt": chrono::DateTime::from_timestamp(img.created_unix, 0).map(|t| t.to_string()).unwrap_or_default(),
                "Size": output::human_size(img.size),
                "Containers": img.containers,
                "Digest": img.repo_digests.first().and_then(|d| d.split_once('@')).map(|(_, d)| d.to_string()).unwrap_or_else(|| "<none>".into()),
            }));
        }
    }
    if a.quiet {
        for id in ids {
            println!("{}", short(&id));
        }
        return Ok(0);
    }
    let columns = [
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("ID", "IMAGE ID"),
        ("CreatedSince", "CREATED"),
        ("Size", "SIZE"),
    ];
    output::print_rows(&Format::parse(a.format.as_deref())?, &columns, &rows)?;
    Ok(0)
}

pub async fn import(c: &mut Client, a: &ImportArgs) -> Result<i32> {
    let first = ImportChunk {
        reference: a.reference.clone().unwrap_or_default(),
        changes: a.change.clone(),
        data: vec![],
    };
    let path = if a.file == "-" {
        None
    } else {
        Some(a.file.clone().into())
    };
    let s = stream_file(path, first, |data| ImportChunk {
        data,
        ..Default::default()
    })?;
    let r = c.image_import(s).await.map_err(status)?.into_inner();
    println!("{}", r.id);
    Ok(0)
}

pub async fn load(c: &mut Client, a: &LoadArgs) -> Result<i32> {
    if a.input.is_none() && super::stdio::is_tty() {
        return Err(crate::client::exit(
            125,
            "requested load from stdin, but stdin is a terminal: use -i FILE or a pipe",
        ));
    }
    let s = stream_file(a.input.clone(), DataChunk { data: vec![] }, |data| {
        DataChunk { data }
    })?;
    let r = c.image_load(s).await.map_err(status)?.into_inner();
    if !a.quiet {
        for l in r.loaded {
            println!("{l}");
        }
    }
    Ok(0)
}

pub async fn tag(c: &mut Client, a: &TagArgs) -> Result<i32> {
    c.image_tag(TagRequest {
        source: a.source.clone(),
        target: a.target.clone(),
    })
    .await
    .map_err(status)?;
    Ok(0)
}

pub async fn rmi(c: &mut Client, a: &RmiArgs) -> Result<i32> {
    let mut rc = 0;
    for n in &a.images {
        match c
            .image_remove(ImageRemoveRequest {
                names: vec![n.clone()],
                force: a.force,
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                for u in r.untagged {
                    println!("Untagged: {u}");
                }
                for d in r.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(s) => {
                eprintln!("Error response from agent: {}", s.message());
                rc = 1;
            }
        }
    }
    Ok(rc)
}
