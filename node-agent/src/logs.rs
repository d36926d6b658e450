//! Reading container logs (json-file lines written by the shim) for `skiff logs`,
//! with `--tail`, `--since/--until` and `--follow`.

use skiff_proto::engine::{LogChunk, LogsRequest};
use skiff_runtime::shim::logfile::LogLine;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

fn to_chunk(l: &LogLine, req: &LogsRequest) -> Option<LogChunk> {
    let stream = if l.stream == "stderr" { 2 } else { 1 };
    if (stream == 1 && !req.stdout) || (stream == 2 && !req.stderr) {
        return None;
    }
    let t = l.time.timestamp_nanos_opt().unwrap_or_default();
    if req.since_unix_nanos > 0 && t < req.since_unix_nanos {
        return None;
    }
    if req.until_unix_nanos > 0 && t > req.until_unix_nanos {
        return None;
    }
    Some(LogChunk {
        stream,
        data: l.log.clone().into_bytes(),
        time_unix_nanos: t,
    })
}

/// Reads what the log holds now; returns the chunks and the offset reached.
pub fn read_existing(path: &Path, req: &LogsRequest) -> std::io::Result<(Vec<LogChunk>, u64)> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e),
    };
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break; // a line still being written is read on the next pass
        }
        offset += n as u64;
        if let Ok(l) = serde_json::from_str::<LogLine>(&line) {
            if let Some(c) = to_chunk(&l, req) {
                out.push(c);
            }
        }
    }
    if req.tail >= 0 && out.len() > req.tail as usize {
        out.drain(..out.len() - req.tail as usize);
    }
    Ok((out, offset))
}

/// Reads complete lines appended after `offset`.
pub fn read_from(
    path: &Path,
    offset: u64,
    req: &LogsRequest,
) -> std::io::Result<(Vec<LogChunk>, u64)> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut off = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        off += n as u64;
        if let Ok(l) = serde_json::from_str::<LogLine>(&line) {
            if let Some(c) = to_chunk(&l, req) {
                out.push(c);
            }
        }
    }
    Ok((out, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_stream_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        let mut s = String::new();
        for (i, stream) in ["stdout", "stderr", "stdout", "stdout"].iter().enumerate() {
            s.push_str(
                &serde_json::to_string(&LogLine {
                    log: format!("l{i}\n"),
                    stream: stream.to_string(),
                    time: chrono::Utc::now(),
                })
                .expect("json"),
            );
            s.push('\n');
        }
        s.push_str("{\"partial");
        std::fs::write(&p, s).expect("write");
        let req = LogsRequest {
            stdout: true,
            stderr: true,
            tail: -1,
            ..Default::default()
        };
        let (all, off) = read_existing(&p, &req).expect("read");
        assert_eq!(all.len(), 4);
        let req2 = LogsRequest {
            stdout: true,
            stderr: false,
            tail: 2,
            ..Default::default()
        };
        let (tail, _) = read_existing(&p, &req2).expect("read");
        assert_eq!(
            tail.iter()
                .map(|c| String::from_utf8_lossy(&c.data).to_string())
                .collect::<Vec<_>>(),
            vec!["l2\n", "l3\n"]
        );
        let (more, _) = read_from(&p, off, &req).expect("read");
        assert!(more.is_empty(), "partial line must wait");
    }
}
