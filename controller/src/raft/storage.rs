//! Durable raft storage: a write-ahead log of checksummed records plus the latest snapshot.
//!
//! Layout of the directory (`<root>/controller/raft/`):
//! - `snap`: the latest snapshot (raft `Snapshot` with the state machine image), written to
//!   a temporary file, fsynced and renamed; a header carries its length and CRC32.
//! - `wal-<seq>.log`: segments of records `[len u32 LE][crc32 u32 LE][kind u8][payload]`,
//!   where the CRC covers kind and payload. Kinds: one raft entry, the hard state, the
//!   conf state. Replay applies them in order: an entry at index `i` drops any later entry
//!   already seen (raft's overwrite rule). A full segment is followed by a new, empty one;
//!   a compaction writes the live entries into a fresh segment and deletes the older ones.
//!
//! Nothing is acknowledged before [`DiskStorage::persist`] returns, and it returns only
//! after `fdatasync` (and a directory fsync when it created a file).
//!
//! Recovery: a damaged record at the end of the last segment is a torn write from a crash
//! (it was never acknowledged) and is truncated away; a damaged record anywhere else is
//! corruption and [`DiskStorage::open`] refuses with the file and offset at fault. A
//! manager that has peers checks first ([`DiskStorage::check`]) and treats either as a
//! lost log: a cut tail looks exactly like a torn write but may have held acknowledged
//! entries, so it rejoins under a new raft ID instead (see `cluster::Cluster`).
//!
//! In memory the log lives in raft-rs's `MemStorage` (bounded by compaction), which
//! answers raft's reads.

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const SNAP_MAGIC: &[u8; 8] = b"SKIFFSN1";
/// A segment is rolled over after this many bytes (compaction also rolls over).
const SEGMENT_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "raft log {} is corrupt at byte {offset} ({why}); refusing to start. The damage is not at \
         the end of the log, so it is not a torn write: restore this manager from a backup, or \
         remove it from the cluster and wipe {} to rejoin it empty",
        path.display(), dir.display()
    )]
    Corrupt {
        path: PathBuf,
        dir: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("snapshot {} is corrupt ({why}); refusing to start", path.display())]
    CorruptSnapshot { path: PathBuf, why: String },
    #[error("decoding raft record in {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: protobuf::ProtobufError,
    },
    #[error("raft storage: {0}")]
    Raft(#[from] raft::Error),
    #[error("encoding a snapshot: {0}")]
    Encode(String),
}

impl StorageError {
    /// Damage to what was written (as opposed to an I/O failure now): the log cannot be
    /// trusted, and a manager recovers by rejoining under a new identity.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. }
                | StorageError::CorruptSnapshot { .. }
                | StorageError::Decode { .. }
        )
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// What recovery found, for logging and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub entries: usize,
    /// Bytes cut from the end of the last segment (a torn write).
    pub truncated_bytes: u64,
}

/// The raft log on disk plus its in-memory mirror; only the raft thread uses it. Segment
/// files are written by a thread of their own (see [`DiskStorage::persist_async`]).
pub struct DiskStorage {
    dir: PathBuf,
    mem: MemStorage,
    snapshot: Snapshot,
    /// Jobs for the WAL thread, done in order.
    wal: std::sync::mpsc::Sender<WalJob>,
    /// Bytes handed to the current segment (decides when to roll over).
    wal_len: u64,
    /// Entry payload bytes written since the latest snapshot (decides when the next one
    /// is worth taking).
    log_bytes: u64,
    buf: Vec<u8>,
    /// The live state machine: snapshots sent to followers are cut from it on demand, so
    /// a new member always gets one that already lists it as a voter.
    live: Option<crate::store::SharedState>,
}

/// Runs once an asynchronous append is durable, or failed.
pub type PersistDone = Box<dyn FnOnce(Result<(), &StorageError>) + Send>;

/// Work for the WAL thread.
enum WalJob {
    /// Records to append; `roll`: continue in a new segment afterwards.
    Append {
        records: Vec<u8>,
        roll: bool,
        done: PersistDone,
    },
    /// Anything else that touches segments, in order with the appends.
    Run(Box<dyn FnOnce(&mut Wal) + Send>),
}

/// The segment being appended to; owned by the WAL thread.
struct Wal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    seq: u64,
}

impl Wal {
    fn append(&mut self, data: &[u8]) -> Result<(), StorageError> {
        if data.is_empty() {
            return Ok(());
        }
        self.file.write_all(data).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Continues the log in a new, empty segment; the older ones stay until a compaction
    /// makes them obsolete (copying live entries here would cost O(log) per rollover).
    fn roll(&mut self) -> Result<(), StorageError> {
        let seq = self.seq + 1;
        let path = self.dir.join(segment_name(seq));
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        fsync_dir(&self.dir)?;
        self.path = path;
        self.seq = seq;
        Ok(())
    }

    /// Starts a new segment holding `records` (the whole live log), then deletes the
    /// older segments.
    fn rewrite(&mut self, records: &[u8]) -> Result<(), StorageError> {
        let seq = self.seq + 1;
        let path = self.dir.join(segment_name(seq));
        let tmp = self.dir.join(format!("{}.tmp", segment_name(seq)));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(records)
            .and_then(|_| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fsync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let old: Vec<_> = segments(&self.dir)?
            .into_iter()
            .filter(|(s, _)| *s < seq)
            .collect();
        for (_, p) in old {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
        fsync_dir(&self.dir)?;
        self.path = path;
        self.seq = seq;
        Ok(())
    }
}

/// The WAL thread: appends that queued up while it was busy share one write and one
/// fsync (group commit); each is answered in order once durable.
fn wal_thread(mut wal: Wal, jobs: std::sync::mpsc::Receiver<WalJob>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match jobs.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        match job {
            WalJob::Run(f) => f(&mut wal),
            WalJob::Append {
                mut records,
                mut roll,
                done,
            } => {
                let mut dones = vec![done];
                while !roll {
                    match jobs.try_recv() {
                        Ok(WalJob::Append {
                            records: more,
                            roll: r,
                            done,
                        }) => {
                            records.extend_from_slice(&more);
                            dones.push(done);
                            roll = r;
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let res = wal
                    .append(&records)
                    .and_then(|_| if roll { wal.roll() } else { Ok(()) });
                for d in dones {
                    d(res.as_ref().map(|_| ()));
                }
            }
        }
    }
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:016x}.log")
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name
            .strip_prefix("wal-")
            .and_then(|n| n.strip_suffix(".log"))
        {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                out.push((seq, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One decoded record.
enum Record {
    Entry(Entry),
    HardState(HardState),
    ConfState(ConfState),
}

/// Parses a segment. `last` segments may end in a torn record, which is reported as the
/// offset to truncate at; anywhere else a bad record is corruption.
fn parse_segment(
    path: &Path,
    dir: &Path,
    data: &[u8],
    last: bool,
) -> Result<(Vec<Record>, Option<u64>), StorageError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let corrupt = |why: &str| StorageError::Corrupt {
            path: path.into(),
            dir: dir.into(),
            offset: off as u64,
            why: why.into(),
        };
        let rest = &data[off..];
        let torn_tail_ok = last && rest.iter().all(|b| *b == 0);
        if rest.len() < 8 {
            return if last {
                Ok((out, Some(off as u64)))
            } else {
                Err(corrupt("truncated record header"))
            };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 {
            return if torn_tail_ok {
                Ok((out, Some(off as u64)))
            } else {
                Err(corrupt("zero-length record"))
            };
        }
        if 8 + len > rest.len() {
            // A record running past the end of the last file was being written at a crash.
            return if last {
                Ok((out, Some(off as u64)))
            } else {
                Err(corrupt("record runs past end of segment"))
            };
        }
        let body = &rest[8..8 + len];
        if crc32fast::hash(body) != crc {
            let is_final = 8 + len == rest.len();
            return if last && (is_final || torn_tail_ok) {
                Ok((out, Some(off as u64)))
            } else {
                Err(corrupt("checksum mismatch"))
            };
        }
        let dec = |e| StorageError::Decode {
            path: path.into(),
            source: e,
        };
        let rec = match body[0] {
            KIND_ENTRY => Record::Entry(Entry::parse_from_bytes(&body[1..]).map_err(dec)?),
            KIND_HARD_STATE => {
                Record::HardState(HardState::parse_from_bytes(&body[1..]).map_err(dec)?)
            }
            KIND_CONF_STATE => {
                Record::ConfState(ConfState::parse_from_bytes(&body[1..]).map_err(dec)?)
            }
            k => return Err(corrupt(&format!("unknown record kind {k}"))),
        };
        out.push(rec);
        off += 8 + len;
    }
    Ok((out, None))
}

/// Writes `snap` durably to a temporary file in `dir` (header with length and CRC32, then
/// the encoded snapshot) and returns its path; installing it is a rename. Safe to run on
/// any thread: it touches nothing but that file.
pub fn write_snapshot_file(dir: &Path, snap: &Snapshot) -> Result<PathBuf, StorageError> {
    let tmp = dir.join(format!("snap.{}.tmp", snap.get_metadata().index));
    let body = snap.write_to_bytes().map_err(|e| StorageError::Decode {
        path: tmp.clone(),
        source: e,
    })?;
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut head = Vec::with_capacity(20);
    head.extend_from_slice(SNAP_MAGIC);
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    f.write_all(&head)
        .and_then(|_| f.write_all(&body))
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    Ok(tmp)
}

fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, StorageError> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut data).map_err(io_err(path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let bad = |why: &str| StorageError::CorruptSnapshot {
        path: path.into(),
        why: why.into(),
    };
    if data.len() < 20 || &data[..8] != SNAP_MAGIC {
        return Err(bad("bad header"));
    }
    let len = u64::from_le_bytes(data[8..16].try_into().map_err(|_| bad("bad header"))?) as usize;
    let crc = u32::from_le_bytes(data[16..20].try_into().map_err(|_| bad("bad header"))?);
    let body = data.get(20..20 + len).ok_or_else(|| bad("short file"))?;
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    Snapshot::parse_from_bytes(body)
        .map(Some)
        .map_err(|e| StorageError::Decode {
            path: path.into(),
            source: e,
        })
}

/// What a log directory holds, parsed.
struct Replay {
    snapshot: Snapshot,
    segs: Vec<(u64, PathBuf)>,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    cs: Option<ConfState>,
    recovery: Recovery,
}

/// Parses snapshot and segments. A torn tail is measured, and cut when `repair`.
fn replay(dir: &Path, repair: bool) -> Result<Replay, StorageError> {
    let mut recovery = Recovery::default();
    let snap_path = dir.join("snap");
    let snapshot = read_snapshot(&snap_path)?.unwrap_or_default();
    let snap_index = snapshot.get_metadata().index;
    let segs = if dir.exists() { segments(dir)? } else { vec![] };
    let mut entries: Vec<Entry> = Vec::new();
    let mut hs: Option<HardState> = None;
    let mut cs: Option<ConfState> = None;
    for (i, (_, path)) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let data = std::fs::read(path).map_err(io_err(path))?;
        let (records, truncate_at) = parse_segment(path, dir, &data, last)?;
        if let Some(at) = truncate_at {
            recovery.truncated_bytes = data.len() as u64 - at;
            if repair {
                tracing::warn!(file = %path.display(), offset = at, bytes = recovery.truncated_bytes, "repairing torn write at the end of the raft log");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(at).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
            }
        }
        for r in records {
            match r {
                Record::Entry(e) => {
                    if e.index <= snap_index {
                        continue;
                    }
                    // Raft overwrite rule: a new entry at i replaces i and everything after.
                    while entries.last().is_some_and(|l| l.index >= e.index) {
                        entries.pop();
                    }
                    if entries.last().map_or(snap_index + 1, |l| l.index + 1) != e.index {
                        return Err(StorageError::Corrupt {
                            path: path.clone(),
                            dir: dir.into(),
                            offset: 0,
                            why: format!("gap in the log before index {}", e.index),
                        });
                    }
                    entries.push(e);
                }
                Record::HardState(h) => hs = Some(h),
                Record::ConfState(c) => cs = Some(c),
            }
        }
    }
    recovery.entries = entries.len();
    Ok(Replay {
        snapshot,
        segs,
        entries,
        hs,
        cs,
        recovery,
    })
}

impl DiskStorage {
    /// Reads the log in `dir` without changing anything: what [`Self::open`] would
    /// recover, including how many bytes of torn tail it would cut. A manager with peers
    /// uses it to tell a cut tail (acknowledged entries may be gone: raft must not trust
    /// this log) from a clean one before starting.
    pub fn check(dir: &Path) -> Result<Recovery, StorageError> {
        replay(dir, false).map(|r| r.recovery)
    }

    /// Opens (or creates) the log in `dir`, replaying snapshot and segments.
    pub fn open(dir: &Path) -> Result<(Self, Recovery), StorageError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mem = MemStorage::new();
        let Replay {
            snapshot,
            segs,
            entries,
            hs,
            cs,
            recovery,
        } = replay(dir, true)?;
        let snap_index = snapshot.get_metadata().index;
        if snap_index > 0 {
            mem.wl().apply_snapshot(snapshot.clone())?;
        }
        // A snapshot a crash interrupted before it was installed is of no use.
        for e in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snap.") && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let log_bytes = entries.iter().map(|e| e.data.len() as u64).sum();
        {
            let mut w = mem.wl();
            w.append(&entries)?;
            if let Some(c) = cs {
                // A conf state older than the snapshot's is stale.
                if snap_index == 0 || !c.voters.is_empty() {
                    w.set_conf_state(c);
                }
            }
            if let Some(mut h) = hs {
                h.commit = h.commit.max(snap_index);
                w.set_hardstate(h);
            }
        }
        let wal_seq = segs.last().map_or(1, |(s, _)| *s);
        let wal_path = dir.join(segment_name(wal_seq));
        let created = !wal_path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(io_err(&wal_path))?;
        let wal_len = file.metadata().map_err(io_err(&wal_path))?.len();
        if created {
            fsync_dir(dir)?;
        }
        let wal = Wal {
            dir: dir.into(),
            file,
            path: wal_path,
            seq: wal_seq,
        };
        let (wal_tx, jobs) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("raft-wal".into())
            .spawn(move || {
                crate::raft::priority::raise_current_thread();
                wal_thread(wal, jobs)
            })
            .map_err(io_err(dir))?;
        Ok((
            DiskStorage {
                dir: dir.into(),
                mem,
                snapshot,
                wal: wal_tx,
                wal_len,
                log_bytes,
                buf: Vec::new(),
                live: None,
            },
            recovery,
        ))
    }

    /// Lets [`Storage::snapshot`] cut snapshots from the running state machine.
    pub fn attach_state(&mut self, sm: crate::store::SharedState) {
        self.live = Some(sm);
    }

    /// True when nothing was ever written (a brand-new node).
    pub fn is_empty(&self) -> bool {
        let blank = self.mem.rl().hard_state() == &HardState::default();
        blank && self.snapshot.get_metadata().index == 0 && self.last_index_inner() == 0
    }

    fn last_index_inner(&self) -> u64 {
        self.mem.last_index().unwrap_or(0)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn push_record(&mut self, kind: u8, msg: &dyn protobuf::Message) -> Result<(), StorageError> {
        let body_len = msg.compute_size() as usize + 1;
        let start = self.buf.len();
        self.buf.extend_from_slice(&(body_len as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.push(kind);
        msg.write_to_vec(&mut self.buf)
            .map_err(|e| StorageError::Decode {
                path: self.dir.clone(),
                source: e,
            })?;
        let crc = crc32fast::hash(&self.buf[start + 8..]);
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Runs `f` on the WAL thread after every write queued before it, and waits.
    fn run_wal<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Wal) -> Result<R, StorageError> + Send + 'static,
    ) -> Result<R, StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.wal
            .send(WalJob::Run(Box::new(move |w| {
                let _ = tx.send(f(w));
            })))
            .map_err(|_| self.wal_gone())?;
        rx.recv().map_err(|_| self.wal_gone())?
    }

    fn wal_gone(&self) -> StorageError {
        StorageError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("the raft log's writer thread stopped"),
        }
    }

    /// Encodes entries and a hard state as WAL records; mirrors them in memory.
    fn stage(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<Vec<u8>, StorageError> {
        self.buf.clear();
        for e in entries {
            self.push_record(KIND_ENTRY, e)?;
            self.log_bytes += e.data.len() as u64;
        }
        if let Some(h) = hs {
            self.push_record(KIND_HARD_STATE, h)?;
        }
        let mut w = self.mem.wl();
        if !entries.is_empty() {
            w.append(entries)?;
        }
        if let Some(h) = hs {
            w.set_hardstate(h.clone());
        }
        drop(w);
        self.wal_len += self.buf.len() as u64;
        Ok(std::mem::take(&mut self.buf))
    }

    /// True when the current segment is full: the next append rolls over.
    fn take_roll(&mut self) -> bool {
        let roll = self.wal_len > SEGMENT_BYTES;
        if roll {
            self.wal_len = 0;
        }
        roll
    }

    /// Durably appends entries and/or a new hard state (one fsync) and mirrors them in
    /// memory. Returns only once they are on disk.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<(), StorageError> {
        let records = self.stage(entries, hs)?;
        let roll = self.take_roll();
        self.run_wal(move |w| {
            w.append(&records)?;
            if roll {
                w.roll()?;
            }
            Ok(())
        })
    }

    /// Mirrors entries and/or a new hard state in memory now (raft reads them from here
    /// at once) and hands them to the WAL thread; `done` runs there once they are durable
    /// (or the write failed). Appends queued while the thread is busy share one fsync, so
    /// the raft thread never waits on the disk. `done` runs for every call, in order.
    pub fn persist_async(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        done: PersistDone,
    ) -> Result<(), StorageError> {
        let records = self.stage(entries, hs)?;
        let roll = self.take_roll();
        self.wal
            .send(WalJob::Append {
                records,
                roll,
                done,
            })
            .map_err(|_| self.wal_gone())
    }

    /// Entry payload bytes written since the latest snapshot.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.log_bytes
    }

    /// Size of the latest snapshot's state image.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot.data.len() as u64
    }

    /// Records the configuration after a conf change was applied.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), StorageError> {
        self.buf.clear();
        self.push_record(KIND_CONF_STATE, &cs)?;
        let records = std::mem::take(&mut self.buf);
        self.wal_len += records.len() as u64;
        self.run_wal(move |w| w.append(&records))?;
        self.mem.wl().set_conf_state(cs);
        Ok(())
    }

    /// Updates the commit index in the in-memory hard state (light ready); the next
    /// persisted hard state carries it to disk.
    pub fn set_commit(&mut self, commit: u64) {
        self.mem.wl().mut_hard_state().commit = commit;
    }

    pub fn hard_state(&self) -> HardState {
        self.mem.rl().hard_state().clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.mem
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default()
    }

    /// The latest snapshot (with state machine data).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn write_snapshot_file(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let tmp = write_snapshot_file(&self.dir, snap)?;
        let path = self.dir.join("snap");
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fsync_dir(&self.dir)
    }

    /// Installs a snapshot of the local state machine that [`write_snapshot_file`] wrote
    /// to `file` on another thread, and compacts the log behind it, keeping `keep`
    /// entries for slow followers. A snapshot no newer than the current one (the leader
    /// sent one meanwhile) is discarded: false.
    pub fn install_own_snapshot(
        &mut self,
        snap: Snapshot,
        file: &Path,
        keep: u64,
    ) -> Result<bool, StorageError> {
        if snap.get_metadata().index <= self.snapshot.get_metadata().index {
            let _ = std::fs::remove_file(file);
            return Ok(false);
        }
        let path = self.dir.join("snap");
        std::fs::rename(file, &path).map_err(io_err(&path))?;
        fsync_dir(&self.dir)?;
        self.compact_to(snap, keep)?;
        Ok(true)
    }

    /// Saves a snapshot the local state machine produced at `snap.metadata.index` and
    /// compacts the log up to it, keeping `keep` entries for slow followers.
    pub fn compact(&mut self, snap: Snapshot, keep: u64) -> Result<(), StorageError> {
        self.write_snapshot_file(&snap)?;
        self.compact_to(snap, keep)
    }

    /// Makes `snap` (already on disk) the latest snapshot and drops the log behind it.
    fn compact_to(&mut self, snap: Snapshot, keep: u64) -> Result<(), StorageError> {
        let index = snap.get_metadata().index;
        self.log_bytes = 0;
        self.snapshot = snap;
        let first = self.mem.first_index()?;
        let to = index.saturating_sub(keep);
        if to > first {
            self.mem.wl().compact(to)?;
        }
        self.rewrite_segment()
    }

    /// Installs a snapshot received from the leader: replaces the whole log.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        self.write_snapshot_file(&snap)?;
        self.mem.wl().apply_snapshot(snap.clone())?;
        self.snapshot = snap;
        self.log_bytes = 0;
        self.rewrite_segment()
    }

    /// Starts a new segment holding the current state (hard state, conf state, live
    /// entries), then deletes older segments: disk use stays bounded by compaction.
    fn rewrite_segment(&mut self) -> Result<(), StorageError> {
        // (MemStorage's accessors lock internally; hold no guard across them.)
        let first = self.mem.first_index()?;
        let last = self.mem.last_index()?;
        let entries = if last >= first {
            self.mem
                .entries(first, last + 1, None, GetEntriesContext::empty(false))?
        } else {
            vec![]
        };
        let RaftState {
            hard_state: hs,
            conf_state: cs,
        } = self.mem.initial_state()?;
        self.buf.clear();
        for e in &entries {
            self.push_record(KIND_ENTRY, e)?;
        }
        self.push_record(KIND_HARD_STATE, &hs)?;
        self.push_record(KIND_CONF_STATE, &cs)?;
        let records = std::mem::take(&mut self.buf);
        self.wal_len = records.len() as u64;
        self.run_wal(move |w| w.rewrite(&records))
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // The latest snapshot on disk serves any follower it already lists: cutting one
        // from the live state costs O(state) on the raft thread.
        let md = self.snapshot.get_metadata();
        let cs = md.get_conf_state();
        if md.index > 0
            && md.index >= request_index
            && (cs.voters.contains(&to) || cs.learners.contains(&to))
        {
            return Ok(self.snapshot.clone());
        }
        // Called on the raft task, so the state machine and the conf state are in step.
        if let Some(sm) = &self.live {
            let (index, data) = sm.read(|sm| (sm.applied(), sm.snapshot_data()));
            let data =
                data.map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(e))))?;
            let mut snap = Snapshot {
                data: data.into(),
                ..Default::default()
            };
            let md = snap.mut_metadata();
            md.index = index;
            md.term = self.mem.term(index)?;
            md.set_conf_state(self.conf_state());
            return Ok(snap);
        }
        if self.snapshot.get_metadata().index == 0 {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
// Protobuf messages are built field by field.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = data.to_vec().into();
        e
    }

    fn hs(term: u64, commit: u64) -> HardState {
        let mut h = HardState::default();
        h.term = term;
        h.commit = commit;
        h
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let s = segments(dir).expect("segments");
        assert_eq!(s.len(), 1);
        s[0].1.clone()
    }

    #[test]
    fn replays_entries_and_hard_state() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            assert!(s.is_empty());
            s.persist(&[entry(1, 1, b"a"), entry(2, 1, b"b")], Some(&hs(1, 1)))
                .expect("persist");
            // Overwrite index 2 with a later term, as a new leader would.
            s.persist(&[entry(2, 2, b"c"), entry(3, 2, b"d")], Some(&hs(2, 3)))
                .expect("persist");
        }
        let (s, rec) = DiskStorage::open(d.path()).expect("reopen");
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(s.last_index().expect("last"), 3);
        assert_eq!(s.term(2).expect("term"), 2);
        let e = s
            .entries(2, 3, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(&e[0].data[..], b"c");
        assert_eq!(s.hard_state().commit, 3);
    }

    #[test]
    fn async_appends_answer_in_order_once_durable() {
        let d = tempfile::tempdir().expect("tempdir");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            for i in 1..=50u64 {
                let tx = done_tx.clone();
                s.persist_async(
                    &[entry(i, 1, b"x")],
                    Some(&hs(1, i)),
                    Box::new(move |r| {
                        let _ = tx.send((i, r.is_ok()));
                    }),
                )
                .expect("queue");
                // Raft reads what it handed over at once.
                assert_eq!(s.last_index().expect("last"), i);
            }
            // A synchronous write waits for everything queued before it.
            s.set_conf_state(ConfState::default()).expect("conf");
            let answered: Vec<(u64, bool)> = done_rx.try_iter().collect();
            assert_eq!(answered, (1..=50).map(|i| (i, true)).collect::<Vec<_>>());
        }
        let (s, _) = DiskStorage::open(d.path()).expect("reopen");
        assert_eq!(s.last_index().expect("last"), 50);
        assert_eq!(s.hard_state().commit, 50);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            s.persist(&[entry(1, 1, b"a")], Some(&hs(1, 1)))
                .expect("persist");
            s.persist(&[entry(2, 1, b"bbbbbbbb")], None)
                .expect("persist");
        }
        let seg = only_segment(d.path());
        let len = std::fs::metadata(&seg).expect("meta").len();
        // Cut the last record in half, as a crash mid-write would.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open")
            .set_len(len - 5)
            .expect("truncate");
        let before = std::fs::metadata(&seg).expect("meta").len();
        let checked = DiskStorage::check(d.path()).expect("check");
        assert!(checked.truncated_bytes > 0, "check measures the torn tail");
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len(),
            before,
            "check changes nothing"
        );
        let (s, rec) = DiskStorage::open(d.path()).expect("a torn tail must be repaired");
        assert_eq!(rec.truncated_bytes, checked.truncated_bytes);
        assert!(rec.truncated_bytes > 0);
        assert_eq!(s.last_index().expect("last"), 1);
        // The repair is durable and the log is writable again.
        drop(s);
        let (mut s, rec) = DiskStorage::open(d.path()).expect("reopen");
        assert_eq!(rec.truncated_bytes, 0);
        s.persist(&[entry(2, 1, b"x")], None)
            .expect("append after repair");
    }

    #[test]
    fn corrupt_final_record_checksum_is_a_torn_write() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            s.persist(&[entry(1, 1, b"a")], None).expect("persist");
            s.persist(&[entry(2, 1, b"b")], None).expect("persist");
        }
        let seg = only_segment(d.path());
        let mut data = std::fs::read(&seg).expect("read");
        let n = data.len();
        data[n - 1] ^= 0xff;
        std::fs::write(&seg, &data).expect("write");
        let (s, rec) = DiskStorage::open(d.path()).expect("open");
        assert!(rec.truncated_bytes > 0);
        assert_eq!(s.last_index().expect("last"), 1);
    }

    #[test]
    fn corruption_in_the_middle_refuses_to_start() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            s.persist(&[entry(1, 1, b"first-record")], None)
                .expect("persist");
            s.persist(&[entry(2, 1, b"second-record")], Some(&hs(1, 2)))
                .expect("persist");
        }
        let seg = only_segment(d.path());
        let mut data = std::fs::read(&seg).expect("read");
        data[12] ^= 0xff; // inside the first record's payload
        std::fs::write(&seg, &data).expect("write");
        assert!(DiskStorage::check(d.path())
            .err()
            .is_some_and(|e| e.is_corruption()));
        let err = DiskStorage::open(d.path()).err().expect("must refuse");
        let msg = err.to_string();
        assert!(
            matches!(err, StorageError::Corrupt { offset: 0, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("corrupt at byte 0") && msg.contains("refusing to start"),
            "{msg}"
        );
    }

    #[test]
    fn compaction_keeps_state_and_drops_old_segments() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            let ents: Vec<_> = (1..=100).map(|i| entry(i, 1, b"x")).collect();
            s.persist(&ents, Some(&hs(1, 100))).expect("persist");
            let mut cs = ConfState::default();
            cs.voters = vec![1];
            s.set_conf_state(cs.clone()).expect("conf");
            let mut snap = Snapshot::default();
            snap.data = b"image".to_vec().into();
            snap.mut_metadata().index = 90;
            snap.mut_metadata().term = 1;
            snap.mut_metadata().set_conf_state(cs);
            s.compact(snap, 5).expect("compact");
            assert_eq!(s.first_index().expect("first"), 85);
        }
        assert_eq!(segments(d.path()).expect("segs").len(), 1);
        let (s, _) = DiskStorage::open(d.path()).expect("reopen");
        assert_eq!(s.latest_snapshot().get_metadata().index, 90);
        assert_eq!(&s.latest_snapshot().data[..], b"image");
        assert_eq!(s.first_index().expect("first"), 91);
        assert_eq!(s.last_index().expect("last"), 100);
        assert_eq!(s.conf_state().voters, vec![1]);
    }

    #[test]
    fn corrupt_snapshot_refuses_to_start() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = DiskStorage::open(d.path()).expect("open");
            s.persist(&[entry(1, 1, b"x")], Some(&hs(1, 1)))
                .expect("persist");
            let mut snap = Snapshot::default();
            snap.data = b"image".to_vec().into();
            snap.mut_metadata().index = 1;
            snap.mut_metadata().term = 1;
            s.compact(snap, 0).expect("compact");
        }
        let p = d.path().join("snap");
        let mut data = std::fs::read(&p).expect("read");
        let n = data.len();
        data[n - 2] ^= 0x55;
        std::fs::write(&p, data).expect("write");
        assert!(matches!(
            DiskStorage::open(d.path()),
            Err(StorageError::CorruptSnapshot { .. })
        ));
    }
}
