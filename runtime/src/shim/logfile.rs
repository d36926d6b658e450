//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"RFC3339 nanos"}`. Output is split at
//! newlines; a partial line is flushed once it passes 16 KiB or when the stream ends.
//!
//! Rotation follows Docker's json-file `max-size` / `max-file`: `container.log` is the
//! file being written; when the next record would take it past `max-size` it becomes
//! `container.log.1` (older ones shift to `.2`, ...) and at most `max-file` files exist
//! in total. With `max-file` 1 the live file is replaced by an empty one (Docker
//! truncates it; a new inode lets a follower tell the two apart). A file only exceeds
//! `max-size` when a single record is larger. Readers ([`rotated_path`]) go from the
//! highest number down to the live file.

use super::relay::Stream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAX_PARTIAL: usize = 16 * 1024;

/// The only log driver: Docker's default, `json-file`.
pub const DRIVER: &str = "json-file";

/// The agent's built-in `log_opts`, used where neither agent.yaml nor `--log-opt` says
/// otherwise: enough history to debug, never a full disk.
pub const DEFAULT_OPTS: [(&str, &str); 2] = [("max-size", "10m"), ("max-file", "3")];

/// A container's log settings as Docker records them (`HostConfig.LogConfig`): the
/// driver and its options, as given (defaults merged in at create).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Config")]
    pub config: BTreeMap<String, String>,
}

/// How the shim rotates: parsed, validated [`LogConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Bytes per file; `None` is unlimited (`max-size=-1`), and then nothing rotates.
    pub max_size: Option<u64>,
    /// Files kept in total, the live one included (at least 1).
    pub max_file: u32,
}

impl Default for Rotation {
    /// The built-in [`DEFAULT_OPTS`].
    fn default() -> Self {
        Self {
            max_size: Some(10 << 20),
            max_file: 3,
        }
    }
}

/// A `--log-opt` (or agent.yaml `log_opts`) the json-file driver cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogOptError {
    #[error("invalid log opt {0:?}: want KEY=VALUE")]
    Syntax(String),
    #[error("unknown log opt '{0}' for json-file log driver (supported: max-size, max-file)")]
    Unknown(String),
    #[error("invalid log opt max-size={0:?}: want a positive size like 10m, 512k or 1g (or -1 for unlimited)")]
    MaxSize(String),
    #[error("invalid log opt max-file={0:?}: want a whole number of files, at least 1")]
    MaxFile(String),
    #[error("invalid log opts: max-file={0} needs a max-size (files only rotate at a size)")]
    MaxFileWithoutSize(u32),
}

/// Splits `KEY=VALUE` as given to `--log-opt`.
pub fn parse_opt(s: &str) -> Result<(String, String), LogOptError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(LogOptError::Syntax(s.to_string())),
    }
}

/// Parses `max-size`: Docker's sizes (`10m`, `512k`, `1g`, `1024`; base 1024), or `-1`
/// for unlimited.
pub fn parse_max_size(v: &str) -> Result<Option<u64>, LogOptError> {
    if v.trim() == "-1" {
        return Ok(None);
    }
    match crate::volume::parse::parse_bytes(v) {
        Some(n) if n > 0 => Ok(Some(n as u64)),
        _ => Err(LogOptError::MaxSize(v.to_string())),
    }
}

impl LogConfig {
    /// `defaults` (the agent's `log_opts`) overridden by `opts` (`--log-opt`), validated.
    /// `max-size=-1` alone also means one file: the default `max-file` is for rotation.
    pub fn merge(
        defaults: &BTreeMap<String, String>,
        opts: &BTreeMap<String, String>,
    ) -> Result<Self, LogOptError> {
        let mut config = defaults.clone();
        config.extend(opts.iter().map(|(k, v)| (k.clone(), v.clone())));
        let unlimited = opts.get("max-size").is_some_and(|v| v.trim() == "-1");
        if unlimited && !opts.contains_key("max-file") {
            config.insert("max-file".into(), "1".into());
        }
        let c = Self {
            kind: DRIVER.into(),
            config,
        };
        c.rotation()?;
        Ok(c)
    }

    /// The rotation these options ask for. A missing key takes Docker's json-file
    /// default (unlimited size, one file), not Skiff's [`DEFAULT_OPTS`], which the agent
    /// merges in before this.
    pub fn rotation(&self) -> Result<Rotation, LogOptError> {
        if let Some(k) = self
            .config
            .keys()
            .find(|k| !matches!(k.as_str(), "max-size" | "max-file"))
        {
            return Err(LogOptError::Unknown(k.clone()));
        }
        let max_size = match self.config.get("max-size") {
            Some(v) => parse_max_size(v)?,
            None => None,
        };
        let max_file = match self.config.get("max-file") {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(LogOptError::MaxFile(v.clone())),
            },
            None => 1,
        };
        if max_size.is_none() && max_file > 1 {
            return Err(LogOptError::MaxFileWithoutSize(max_file));
        }
        Ok(Rotation { max_size, max_file })
    }
}

/// `container.log.N`: the N-th most recent rotated file (N ≥ 1).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub log: String,
    pub stream: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the live file.
    size: u64,
    rotation: Rotation,
    partial: [Vec<u8>; 2],
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl LogWriter {
    /// Opens (appending to) the live log; a restarted container continues its files.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Shifts `.N` to `.N+1` (dropping what would pass `max-file`), the live file to
    /// `.1`, and starts a new live file; with `max-file` 1, just starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        if self.rotation.max_file <= 1 {
            std::fs::remove_file(&self.path)?;
        } else {
            let keep = self.rotation.max_file - 1;
            ignore_missing(std::fs::remove_file(rotated_path(&self.path, keep)))?;
            for n in (1..keep).rev() {
                ignore_missing(std::fs::rename(
                    rotated_path(&self.path, n),
                    rotated_path(&self.path, n + 1),
                ))?;
            }
            std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
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
            if let Some(max) = self.rotation.max_size {
                if self.size > 0 && self.size + s.len() as u64 > max {
                    if let Err(e) = self.rotate() {
                        tracing::warn!(error = %e, "rotating container log");
                    }
                }
            }
            match self.file.write_all(&s) {
                Ok(()) => self.size += s.len() as u64,
                Err(e) => tracing::warn!(error = %e, "writing container log"),
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

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_flushes_partials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        let mut w = LogWriter::open(&p, Rotation::default()).expect("open");
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

#[cfg(test)]
mod rotation_tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn defaults() -> BTreeMap<String, String> {
        opts(&DEFAULT_OPTS)
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_max_size("10m"), Ok(Some(10 << 20)));
        assert_eq!(parse_max_size("512k"), Ok(Some(512 << 10)));
        assert_eq!(parse_max_size("1G"), Ok(Some(1 << 30)));
        assert_eq!(parse_max_size("2mb"), Ok(Some(2 << 20)));
        assert_eq!(parse_max_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_max_size("-1"), Ok(None));
        for bad in ["0", "", "ten", "10x", "-5", "1.5.2m"] {
            assert_eq!(
                parse_max_size(bad),
                Err(LogOptError::MaxSize(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn opts_merge_over_defaults_and_errors_name_the_option() {
        let c = LogConfig::merge(&defaults(), &opts(&[("max-size", "1k")])).expect("ok");
        assert_eq!(c.kind, "json-file");
        assert_eq!(c.config, opts(&[("max-file", "3"), ("max-size", "1k")]));
        assert_eq!(
            c.rotation(),
            Ok(Rotation {
                max_size: Some(1024),
                max_file: 3
            })
        );
        assert_eq!(
            LogConfig::merge(&defaults(), &BTreeMap::new())
                .expect("defaults")
                .rotation(),
            Ok(Rotation::default())
        );
        let err = |o: &[(&str, &str)]| {
            LogConfig::merge(&defaults(), &opts(o))
                .expect_err("accepted")
                .to_string()
        };
        assert!(err(&[("max-size", "abc")]).contains("max-size=\"abc\""));
        assert!(err(&[("max-file", "0")]).contains("max-file=\"0\""));
        assert!(err(&[("max-file", "x")]).contains("max-file"));
        assert!(err(&[("compress", "true")]).contains("unknown log opt 'compress'"));
        assert!(err(&[("max-size", "-1"), ("max-file", "2")]).contains("needs a max-size"));
        // Unlimited (one file, Docker's own default) needs only max-size=-1.
        let c = LogConfig::merge(&defaults(), &opts(&[("max-size", "-1")])).expect("ok");
        assert_eq!(
            c.rotation(),
            Ok(Rotation {
                max_size: None,
                max_file: 1
            })
        );
        assert_eq!(
            parse_opt("max-size=1m"),
            Ok(("max-size".into(), "1m".into()))
        );
        assert_eq!(
            parse_opt("max-size"),
            Err(LogOptError::Syntax("max-size".into()))
        );
    }

    fn lines_of(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<LogLine>(l).expect("json").log)
            .collect()
    }

    #[test]
    fn rotates_at_max_size_and_keeps_max_file_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("container.log");
        let rot = Rotation {
            max_size: Some(400),
            max_file: 3,
        };
        let mut w = LogWriter::open(&p, rot).expect("open");
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line {i:03}\n").as_bytes());
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["container.log", "container.log.1", "container.log.2"]
        );
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).expect("stat").len();
            assert!(len <= 400, "{n} is {len} bytes");
        }
        // Oldest to newest, the kept lines are consecutive and end with the last one.
        let all: Vec<String> = [rotated_path(&p, 2), rotated_path(&p, 1), p.clone()]
            .iter()
            .flat_map(|f| lines_of(f))
            .collect();
        assert_eq!(all.last().map(String::as_str), Some("line 099\n"));
        let first: usize = all[0][5..8].parse().expect("number");
        for (k, l) in all.iter().enumerate() {
            assert_eq!(l, &format!("line {:03}\n", first + k));
        }
        assert!(first > 0, "nothing was rotated away");
        // Reopening (a restarted container) continues from the live file's size.
        drop(w);
        assert!(std::fs::metadata(&p).expect("stat").len() > 0);
        let mut w = LogWriter::open(&p, rot).expect("reopen");
        for i in 0..10 {
            w.write(Stream::Stderr, format!("again {i}\n").as_bytes());
            let len = std::fs::metadata(&p).expect("stat").len();
            assert!(len <= 400, "live file grew to {len} bytes after reopening");
        }
    }

    #[test]
    fn max_file_one_keeps_a_single_file() {
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
        for i in 0..50 {
            w.write(Stream::Stdout, format!("l{i}\n").as_bytes());
        }
        assert!(!rotated_path(&p, 1).exists());
        assert!(std::fs::metadata(&p).expect("stat").len() <= 200);
        assert_eq!(lines_of(&p).last().map(String::as_str), Some("l49\n"));
    }

    #[test]
    fn unlimited_never_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(
            &p,
            Rotation {
                max_size: None,
                max_file: 1,
            },
        )
        .expect("open");
        for i in 0..200 {
            w.write(Stream::Stdout, format!("l{i}\n").as_bytes());
        }
        assert_eq!(lines_of(&p).len(), 200);
    }
}
