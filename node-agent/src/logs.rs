//! Reading container logs (json-file lines written by the shim) for `skiff logs`,
//! with `--tail`, `--since/--until` and `--follow`, across rotated files.
//!
//! The shim rotates `container.log` to `container.log.1` (older files shift up) while
//! readers may be following it (see `skiff_runtime::shim::logfile`). A [`LogCursor`]
//! holds the live file open and tells rotations apart by inode: when the path names a
//! new file, it finishes the one it holds, then reads any rotated files newer than it,
//! then continues with the new live file. Lines therefore come out once each, in order,
//! unless the container writes more than `max-size × (max-file − 1)` between two polls.

use skiff_proto::engine::{LogChunk, LogsRequest};
use skiff_runtime::shim::logfile::{rotated_path, LogLine};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Reads the complete lines of `f` from `offset`; returns the chunks and the offset
/// after the last complete line (a line still being written is read on the next pass).
fn read_lines(
    f: &mut File,
    offset: u64,
    req: &LogsRequest,
    out: &mut Vec<LogChunk>,
) -> std::io::Result<u64> {
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in buf[..complete].split(|&b| b == b'\n') {
        if let Ok(l) = serde_json::from_slice::<LogLine>(line) {
            if let Some(c) = to_chunk(&l, req) {
                out.push(c);
            }
        }
    }
    Ok(offset + complete as u64)
}

/// The rotated files that exist now, as (number, open file, inode), highest (oldest)
/// number first. Opened before reading so a concurrent rotation cannot swap them.
fn rotated_files(path: &Path) -> Vec<(u32, File, u64)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix(&prefix)
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers
        .into_iter()
        .filter_map(|n| {
            let f = File::open(rotated_path(path, n)).ok()?;
            let ino = f.metadata().ok()?.ino();
            Some((n, f, ino))
        })
        .collect()
}

/// A reader positioned in a container's log; see the module doc.
pub struct LogCursor {
    path: PathBuf,
    req: LogsRequest,
    /// The live file as opened, its inode, and how far it has been read.
    live: Option<(File, u64, u64)>,
}

impl LogCursor {
    /// Opens the log and reads everything it holds now (rotated files oldest first,
    /// then the live file), keeping the last `req.tail` chunks if `tail >= 0`.
    pub fn open(path: &Path, req: &LogsRequest) -> std::io::Result<(Self, Vec<LogChunk>)> {
        let mut cursor = Self {
            path: path.to_path_buf(),
            req: req.clone(),
            live: None,
        };
        // The live file first: if it rotates while the older files are read, it is
        // found among them by inode and the files newer than it come from `poll`.
        let live = match File::open(path) {
            Ok(f) => {
                let ino = f.metadata()?.ino();
                Some((f, ino))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let rotated = rotated_files(path);
        let live_ino = live.as_ref().map(|l| l.1);
        let older_than = rotated
            .iter()
            .find(|r| Some(r.2) == live_ino)
            .map_or(0, |r| r.0);
        let mut out = Vec::new();
        for (_, mut f, _) in rotated.into_iter().filter(|r| r.0 > older_than) {
            read_lines(&mut f, 0, req, &mut out)?;
        }
        if let Some((mut f, ino)) = live {
            let off = read_lines(&mut f, 0, req, &mut out)?;
            cursor.live = Some((f, ino, off));
        }
        out.extend(cursor.poll()?);
        if req.tail >= 0 && out.len() > req.tail as usize {
            let mut d: VecDeque<_> = out.into();
            d.drain(..d.len() - req.tail as usize);
            out = d.into();
        }
        Ok((cursor, out))
    }

    /// What was written since the last call, following rotations.
    pub fn poll(&mut self) -> std::io::Result<Vec<LogChunk>> {
        let mut out = Vec::new();
        // Bounded: each pass either returns or moves to a newer live file.
        for _ in 0..16 {
            let Some((f, ino, off)) = self.live.as_mut() else {
                match File::open(&self.path) {
                    Ok(f) => {
                        let ino = f.metadata()?.ino();
                        self.live = Some((f, ino, 0));
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(e),
                }
            };
            *off = read_lines(f, *off, &self.req, &mut out)?;
            let now = match std::fs::metadata(&self.path) {
                Ok(m) => m,
                // Between the rename and the new file: the next poll sees it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            if now.ino() == *ino {
                if now.len() < *off {
                    // Truncated by hand (the shim never truncates): start over.
                    *off = read_lines(f, 0, &self.req, &mut out)?;
                }
                return Ok(out);
            }
            // Rotated: finish the file we hold (complete now), then the rotated files
            // newer than it, then continue with the new live file.
            *off = read_lines(f, *off, &self.req, &mut out)?;
            let held = *ino;
            let rotated = rotated_files(&self.path);
            let newer_than = rotated.iter().find(|r| r.2 == held).map(|r| r.0);
            for (n, mut rf, rino) in rotated {
                let newer = match newer_than {
                    Some(k) => n < k,
                    None => rino != now.ino(),
                };
                if newer {
                    read_lines(&mut rf, 0, &self.req, &mut out)?;
                }
            }
            self.live = None;
        }
        Ok(out)
    }
}

/// Streams a container's logs: what is there now (after `tail`, `since`, `until`), then,
/// with `follow`, new lines as they come until the container stops or the receiver
/// goes away.
pub fn stream(
    e: std::sync::Arc<crate::containers::Entry>,
    r: LogsRequest,
) -> std::io::Result<tokio::sync::mpsc::Receiver<LogChunk>> {
    use std::time::Duration;
    let path = e.paths.log();
    let (mut cursor, existing) = LogCursor::open(&path, &r)?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        for c in existing {
            if tx.send(c).await.is_err() {
                return;
            }
        }
        if !r.follow {
            return;
        }
        let mut changed = e.changed.subscribe();
        loop {
            let running = e.state().is_running();
            if let Ok(chunks) = cursor.poll() {
                for c in chunks {
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
            }
            if !running {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = changed.changed() => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::shim::logfile::{LogWriter, Rotation};
    use skiff_runtime::shim::relay::Stream;

    fn line(i: usize, stream: &str) -> String {
        let mut s = serde_json::to_string(&LogLine {
            log: format!("l{i}\n"),
            stream: stream.to_string(),
            time: chrono::Utc::now(),
        })
        .expect("json");
        s.push('\n');
        s
    }

    fn all() -> LogsRequest {
        LogsRequest {
            stdout: true,
            stderr: true,
            tail: -1,
            ..Default::default()
        }
    }

    fn texts(c: &[LogChunk]) -> Vec<String> {
        c.iter()
            .map(|c| String::from_utf8_lossy(&c.data).trim_end().to_string())
            .collect()
    }

    #[test]
    fn tail_and_stream_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        let mut s = String::new();
        for (i, stream) in ["stdout", "stderr", "stdout", "stdout"].iter().enumerate() {
            s.push_str(&line(i, stream));
        }
        s.push_str("{\"partial");
        std::fs::write(&p, s).expect("write");
        let (mut cur, got) = LogCursor::open(&p, &all()).expect("read");
        assert_eq!(got.len(), 4);
        let req2 = LogsRequest {
            stdout: true,
            stderr: false,
            tail: 2,
            ..Default::default()
        };
        let (_, tail) = LogCursor::open(&p, &req2).expect("read");
        assert_eq!(texts(&tail), vec!["l2", "l3"]);
        assert!(
            cur.poll().expect("poll").is_empty(),
            "partial line must wait"
        );
    }

    #[test]
    fn reads_rotated_files_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("container.log");
        std::fs::write(rotated_path(&p, 2), line(0, "stdout") + &line(1, "stdout")).expect("w");
        std::fs::write(rotated_path(&p, 1), line(2, "stdout")).expect("w");
        std::fs::write(&p, line(3, "stderr")).expect("w");
        let (_, got) = LogCursor::open(&p, &all()).expect("read");
        assert_eq!(texts(&got), vec!["l0", "l1", "l2", "l3"]);
        let tail = LogsRequest { tail: 3, ..all() };
        let (_, got) = LogCursor::open(&p, &tail).expect("read");
        assert_eq!(texts(&got), vec!["l1", "l2", "l3"]);
    }

    #[test]
    fn follows_across_rotations_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(
            &p,
            Rotation {
                max_size: Some(300),
                max_file: 4,
            },
        )
        .expect("open");
        w.write(Stream::Stdout, b"first\n");
        let (mut cur, mut seen) = LogCursor::open(&p, &all()).expect("open");
        // Several rotations between polls, and polls between single lines.
        let mut expected = vec!["first".to_string()];
        for i in 0..40 {
            let l = format!("line {i}");
            w.write(Stream::Stdout, format!("{l}\n").as_bytes());
            expected.push(l);
            if i % 7 == 0 {
                seen.extend(cur.poll().expect("poll"));
            }
        }
        seen.extend(cur.poll().expect("poll"));
        assert!(rotated_path(&p, 1).exists(), "nothing rotated");
        assert_eq!(texts(&seen), expected);
        assert!(cur.poll().expect("poll").is_empty());
    }

    #[test]
    fn follows_a_single_file_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(
            &p,
            Rotation {
                max_size: Some(200),
                max_file: 1,
            },
        )
        .expect("open");
        w.write(Stream::Stdout, b"a\nb\n");
        let (mut cur, seen) = LogCursor::open(&p, &all()).expect("open");
        assert_eq!(texts(&seen), vec!["a", "b"]);
        // Enough to start a new file once; nothing is lost while the cursor holds the
        // old one, and the new file is read from its start.
        let ino = std::fs::metadata(&p).expect("stat").ino();
        for l in ["c", "d"] {
            w.write(Stream::Stdout, format!("{l}\n").as_bytes());
        }
        assert_ne!(
            std::fs::metadata(&p).expect("stat").ino(),
            ino,
            "did not rotate"
        );
        assert!(!rotated_path(&p, 1).exists());
        assert_eq!(texts(&cur.poll().expect("poll")), vec!["c", "d"]);
    }
}
