//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"RFC3339 nanos"}`. Output is split at
//! newlines; a partial line is flushed once it passes 16 KiB or when the stream ends.

use super::relay::Stream;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

pub struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LogWriter {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn emit(&mut self, stream: Stream, line: &[u8]) {
        let rec = LogLine {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: match stream {
                Stream::Stdout => "stdout".into(),
                Stream::Stderr => "stderr".into(),
            },
            time: chrono::Utc::now(),
        };
        if let Ok(mut s) = serde_json::to_vec(&rec) {
            s.push(b'\n');
            if let Err(e) = self.file.write_all(&s) {
                tracing::warn!(error = %e, "writing container log");
            }
        }
    }

    /// Appends a chunk of output, emitting every complete line.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let i = idx(stream);
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            self.emit(stream, &buf[start..end]);
            start = end;
        }
        let rest = buf.split_off(start);
        if rest.len() >= MAX_PARTIAL {
            self.emit(stream, &rest);
        } else {
            self.partial[i] = rest;
        }
    }

    /// Emits whatever partial line is pending for `stream`.
    pub fn flush_partial(&mut self, stream: Stream) {
        let rest = std::mem::take(&mut self.partial[idx(stream)]);
        if !rest.is_empty() {
            self.emit(stream, &rest);
        }
    }

    pub fn sync(&mut self) {
        let _ = self.file.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_flushes_partials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        let mut w = LogWriter::open(&p).expect("open");
        w.write(Stream::Stdout, b"hel");
        w.write(Stream::Stdout, b"lo\nwor");
        w.write(Stream::Stderr, b"err\n");
        w.flush_partial(Stream::Stdout);
        let lines: Vec<LogLine> = std::fs::read_to_string(&p)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.stream.as_str(), l.log.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("stdout", "hello\n"),
                ("stderr", "err\n"),
                ("stdout", "wor")
            ]
        );
    }
}
