//! The raft node: one tokio task owns the `RawNode`, its storage and the state machine's
//! write side. Everything else talks to it through a [`RaftHandle`] (a mailbox): client
//! proposals with a reply channel, linearizable read barriers (ReadIndex), configuration
//! changes, and raft messages from peers.
//!
//! Proposals that arrive together are batched into one log entry (a JSON array of
//! [`Proposal`]s), and every Ready is persisted with one fsync. Replies are matched by
//! request ID when the entry is applied, on whichever manager the client is waiting, so
//! followers can accept proposals: raft-rs forwards them to the leader. A client that
//! times out may retry with the same request ID: the state machine applies it once.

use crate::state::{ApplyError, Outcome, Proposal, StateMachine, Store};
use crate::storage::{DiskStorage, StorageError};
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Delivers raft messages to peers. Never blocks; may drop (raft retransmits).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msgs: Vec<Message>);
}

#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This member's raft ID (non-zero).
    pub id: u64,
    /// Where the log and snapshots live.
    pub dir: PathBuf,
    pub tick: Duration,
    /// Election timeout in ticks (randomised between this and twice this by raft-rs).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Take a snapshot and compact after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot so slightly slow followers need no snapshot.
    pub keep_entries: u64,
    /// How long a proposal or read may wait for the cluster before failing.
    pub request_timeout: Duration,
}

impl RaftConfig {
    pub fn new(id: u64, dir: PathBuf) -> RaftConfig {
        RaftConfig {
            id,
            dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_every: 10_000,
            keep_entries: 1_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// How a node with an empty log starts.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// Found a new cluster whose only voter is this node, with this initial state.
    New(Box<Store>),
    /// Wait to be contacted by a leader that added this node.
    Join,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error(
        "no cluster leader is known (is a majority of managers down?); the write was not accepted"
    )]
    NoLeader,
    #[error(
        "the cluster did not commit the request within {0:?} (a majority of managers may be down or unreachable); it may or may not be applied, retrying with the same request is safe"
    )]
    Timeout(Duration),
    #[error("could not confirm leadership within {0:?} for a consistent read (a majority of managers may be down)")]
    ReadTimeout(Duration),
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error("the cluster leader changed or was lost while the request was in flight (is a majority of managers down?); it may or may not be applied, retrying with the same request is safe")]
    LeaderChanged,
    #[error("another membership change is still being applied; retry")]
    ConfChangeBusy,
    #[error("this manager was removed from the cluster")]
    Removed,
    #[error("the raft node has stopped")]
    Stopped,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft refused the proposal: {0}")]
    Proposal(String),
    #[error("encoding proposal: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What the node last published about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub is_leader: bool,
    pub voters: Vec<u64>,
    /// Set once this node applied its own removal.
    pub removed: bool,
}

enum Msg {
    Propose(Proposal, oneshot::Sender<Result<Outcome, RaftError>>),
    ConfChange(
        ConfChange,
        String,
        oneshot::Sender<Result<Outcome, RaftError>>,
    ),
    ReadIndex(oneshot::Sender<Result<u64, RaftError>>),
    Raft(Box<Message>),
    Unreachable(u64),
    SnapshotStatus(u64, bool),
    Campaign,
    Stop,
}

/// The mailbox of a running raft node, plus read access to its state machine.
#[derive(Clone)]
pub struct RaftHandle {
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
    sm: Arc<RwLock<StateMachine>>,
    status: watch::Receiver<RaftStatus>,
    timeout: Duration,
}

type Reply = oneshot::Sender<Result<Outcome, RaftError>>;
/// Where a linearizable read waits for its index.
type ReadReply = oneshot::Sender<Result<u64, RaftError>>;

struct Node<T: Transport> {
    raw: RawNode<DiskStorage>,
    cfg: RaftConfig,
    transport: Arc<T>,
    sm: Arc<RwLock<StateMachine>>,
    /// Waiters by request ID (several if a request was retried).
    waiters: HashMap<String, Vec<(Instant, Reply)>>,
    reads: HashMap<Vec<u8>, (Instant, ReadReply)>,
    read_seq: u64,
    snapshot_index: u64,
    status: watch::Sender<RaftStatus>,
    removed: bool,
    /// (leader, term) at the end of the previous loop turn.
    last_leader: (u64, u64),
}

/// Opens the storage, restores the state machine and spawns the node's task.
pub fn start<T: Transport>(
    cfg: RaftConfig,
    bootstrap: Bootstrap,
    transport: Arc<T>,
) -> Result<RaftHandle, RaftError> {
    let (mut storage, recovery) = DiskStorage::open(&cfg.dir)?;
    if recovery.truncated_bytes > 0 {
        tracing::warn!(
            raft_id = cfg.id,
            bytes = recovery.truncated_bytes,
            "raft log had a torn tail; repaired"
        );
    }
    if storage.is_empty() {
        if let Bootstrap::New(store) = &bootstrap {
            // The founding member's first snapshot is the initial state: index 1, term 1,
            // itself the only voter. Joiners start empty and receive it from the leader.
            let mut snap = Snapshot {
                data: serde_json::to_vec(store.as_ref())?.into(),
                ..Default::default()
            };
            let md = snap.mut_metadata();
            md.index = 1;
            md.term = 1;
            md.mut_conf_state().voters = vec![cfg.id];
            storage.apply_snapshot(snap)?;
        }
    }
    let snap = storage.latest_snapshot().clone();
    let snapshot_index = snap.get_metadata().index;
    let mut sm = StateMachine::default();
    sm.restore(&snap.data).map_err(RaftError::Encode)?;
    sm.set_applied(snapshot_index);
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied: snapshot_index,
        max_size_per_msg: 4 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let sm = Arc::new(RwLock::new(sm));
    storage.attach_state(sm.clone());
    let raw = RawNode::new(&raft_cfg, storage, &crate::logger::raft_logger(cfg.id))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: cfg.id,
        ..Default::default()
    });
    let handle = RaftHandle {
        id: cfg.id,
        tx,
        sm: sm.clone(),
        status: status_rx,
        timeout: cfg.request_timeout,
    };
    let mut node = Node {
        raw,
        cfg,
        transport,
        sm,
        waiters: HashMap::new(),
        reads: HashMap::new(),
        read_seq: 0,
        snapshot_index,
        status: status_tx,
        removed: false,
        last_leader: (0, 0),
    };
    let span = tracing::info_span!("raft", raft_id = node.cfg.id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if let Err(e) = node.run(&mut rx).await {
                tracing::error!(error = %e, "raft node stopped on a storage error");
            }
            node.fail_all(|| RaftError::Stopped);
        },
        span,
    ));
    Ok(handle)
}

impl<T: Transport> Node<T> {
    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> Result<(), RaftError> {
        let mut ticker = tokio::time::interval(self.cfg.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish();
        loop {
            let mut batch: Vec<(Proposal, Reply)> = Vec::new();
            tokio::select! {
                _ = ticker.tick() => {
                    if !self.removed {
                        self.raw.tick();
                    }
                    self.expire();
                }
                m = rx.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    if !self.handle(m, &mut batch) {
                        return Ok(());
                    }
                    // Drain whatever else is queued: one Ready, one fsync for all of it.
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(m) => if !self.handle(m, &mut batch) { return Ok(()) },
                            Err(_) => break,
                        }
                    }
                }
            }
            self.propose_batch(batch);
            self.on_ready()?;
            self.maybe_snapshot()?;
            // A proposal forwarded to a leader that is gone would only time out: fail it
            // now as retryable (same request ID, so a retry cannot apply it twice).
            let leader = (self.raw.raft.leader_id, self.raw.raft.term);
            if leader != self.last_leader {
                if self.last_leader.0 != 0 && self.raw.raft.state != StateRole::Leader {
                    self.fail_all(|| RaftError::LeaderChanged);
                }
                self.last_leader = leader;
            }
            self.publish();
        }
    }

    /// Returns false on Stop.
    fn handle(&mut self, m: Msg, batch: &mut Vec<(Proposal, Reply)>) -> bool {
        match m {
            Msg::Propose(p, reply) => {
                if self.removed {
                    let _ = reply.send(Err(RaftError::Removed));
                } else {
                    batch.push((p, reply));
                }
            }
            Msg::ConfChange(cc, request_id, reply) => {
                // raft-rs silently turns a conf change into an empty entry while another
                // is unapplied; say so instead, so the caller retries.
                if self.raw.raft.state == StateRole::Leader && self.raw.raft.has_pending_conf() {
                    let _ = reply.send(Err(RaftError::ConfChangeBusy));
                    return true;
                }
                match self
                    .raw
                    .propose_conf_change(request_id.clone().into_bytes(), cc)
                {
                    Ok(()) => self
                        .waiters
                        .entry(request_id)
                        .or_default()
                        .push((Instant::now() + self.cfg.request_timeout, reply)),
                    Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(RaftError::NoLeader));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Msg::ReadIndex(reply) => {
                // raft-rs silently drops a read when no leader is known.
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(RaftError::NoLeader));
                    return true;
                }
                self.read_seq += 1;
                let ctx = format!("r{}-{}", self.cfg.id, self.read_seq).into_bytes();
                self.raw.read_index(ctx.clone());
                self.reads
                    .insert(ctx, (Instant::now() + self.cfg.request_timeout, reply));
            }
            Msg::Raft(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "dropping raft message");
                }
            }
            Msg::Unreachable(id) => self.raw.report_unreachable(id),
            Msg::SnapshotStatus(id, ok) => {
                let st = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(id, st);
            }
            Msg::Campaign => {
                let _ = self.raw.campaign();
            }
            Msg::Stop => return false,
        }
        true
    }

    /// Proposes the queued client proposals as one log entry.
    fn propose_batch(&mut self, batch: Vec<(Proposal, Reply)>) {
        if batch.is_empty() {
            return;
        }
        let (props, replies): (Vec<Proposal>, Vec<Reply>) = batch.into_iter().unzip();
        let data = match serde_json::to_vec(&props) {
            Ok(d) => d,
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(RaftError::Encode(serde_json::Error::io(
                        std::io::Error::other(e.to_string()),
                    ))));
                }
                return;
            }
        };
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                for (p, r) in props.into_iter().zip(replies) {
                    self.waiters
                        .entry(p.request_id)
                        .or_default()
                        .push((deadline, r));
                }
            }
            Err(e) => {
                for r in replies {
                    let err = match &e {
                        raft::Error::ProposalDropped => RaftError::NoLeader,
                        other => RaftError::Proposal(other.to_string()),
                    };
                    let _ = r.send(Err(err));
                }
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages a leader may send before its own append is durable.
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        // 2. A snapshot from the leader replaces the log and the state machine.
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            let index = snap.get_metadata().index;
            tracing::info!(raft_index = index, "installing snapshot from leader");
            self.raw.mut_store().apply_snapshot(snap.clone())?;
            let mut sm = self.sm.write().unwrap_or_else(|e| e.into_inner());
            sm.restore(&snap.data)?;
            sm.set_applied(index);
            self.snapshot_index = index;
        }
        // 3. Read barriers confirmed by the leader.
        for rs in ready.take_read_states() {
            if let Some((_, reply)) = self.reads.remove(&rs.request_ctx) {
                let _ = reply.send(Ok(rs.index));
            }
        }
        // 4. Entries committed (and already durable) are applied to the state machine.
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        // 5 + 6. New entries and the hard state, durably, with one fsync.
        let hs = ready.hs().cloned();
        if !ready.entries().is_empty() || hs.is_some() {
            self.raw.mut_store().persist(ready.entries(), hs.as_ref())?;
        }
        // 7. Messages that had to wait for the append (votes, follower acks).
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        // 8. Advance; the light ready may carry a new commit index, messages, entries.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply(light.take_committed_entries())?;
        // 9. Tell raft everything handed over has been applied.
        self.raw.advance_apply();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        self.sm
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .set_applied(e.index);
                        continue;
                    }
                    let props: Vec<Proposal> = match serde_json::from_slice(&e.data) {
                        Ok(p) => p,
                        Err(err) => {
                            // Written by a newer/older version we cannot read: skip, loudly.
                            tracing::error!(raft_index = e.index, error = %err, "undecodable log entry skipped");
                            self.sm
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .set_applied(e.index);
                            continue;
                        }
                    };
                    let mut results = Vec::with_capacity(props.len());
                    {
                        let mut sm = self.sm.write().unwrap_or_else(|p| p.into_inner());
                        for p in &props {
                            results.push((p.request_id.clone(), sm.apply(e.index, p)));
                        }
                    }
                    for (id, r) in results {
                        if let Some(ws) = self.waiters.remove(&id) {
                            for (_, w) in ws {
                                let _ = w.send(r.clone().map_err(RaftError::Rejected));
                            }
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)
                        .map_err(|err| RaftError::Raft(raft::Error::CodecError(err)))?;
                    let cs = match self.raw.apply_conf_change(&cc) {
                        Ok(cs) => Some(cs),
                        Err(err) => {
                            tracing::warn!(error = %err, "conf change rejected");
                            None
                        }
                    };
                    if let Some(cs) = cs {
                        self.raw.mut_store().set_conf_state(cs)?;
                    }
                    tracing::info!(raft_index = e.index, change = ?cc.get_change_type(), member = cc.node_id, "membership changed");
                    if cc.get_change_type() == ConfChangeType::RemoveNode
                        && cc.node_id == self.cfg.id
                    {
                        self.removed = true;
                    }
                    self.sm
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .set_applied(e.index);
                    let id = String::from_utf8_lossy(&e.context).into_owned();
                    if let Some(ws) = self.waiters.remove(&id) {
                        for (_, w) in ws {
                            let _ = w.send(Ok(Outcome {
                                index: e.index,
                                objects: vec![],
                            }));
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    self.sm
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .set_applied(e.index);
                }
            }
        }
        Ok(())
    }

    /// Snapshots the state machine and compacts the log once enough was applied.
    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        let (applied, data) = {
            let sm = self.sm.read().unwrap_or_else(|p| p.into_inner());
            let applied = sm.applied();
            if applied < self.snapshot_index + self.cfg.snapshot_every {
                return Ok(());
            }
            (applied, sm.snapshot_data()?)
        };
        let term = self.raw.store().term(applied)?;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let md = snap.mut_metadata();
        md.index = applied;
        md.term = term;
        md.set_conf_state(self.raw.store().conf_state());
        self.raw.mut_store().compact(snap, self.cfg.keep_entries)?;
        self.snapshot_index = applied;
        tracing::info!(raft_index = applied, "snapshot taken, log compacted");
        Ok(())
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let t = self.cfg.request_timeout;
        self.waiters.retain(|_, ws| {
            let mut i = 0;
            while i < ws.len() {
                if ws[i].0 <= now {
                    let (_, w) = ws.swap_remove(i);
                    let _ = w.send(Err(RaftError::Timeout(t)));
                } else {
                    i += 1;
                }
            }
            !ws.is_empty()
        });
        let expired: Vec<_> = self
            .reads
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some((_, r)) = self.reads.remove(&k) {
                let _ = r.send(Err(RaftError::ReadTimeout(t)));
            }
        }
    }

    fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        for (_, ws) in self.waiters.drain() {
            for (_, w) in ws {
                let _ = w.send(Err(err()));
            }
        }
        for (_, (_, r)) in self.reads.drain() {
            let _ = r.send(Err(err()));
        }
    }

    fn publish(&self) {
        let r = &self.raw.raft;
        let st = RaftStatus {
            id: self.cfg.id,
            leader_id: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.sm.read().unwrap_or_else(|p| p.into_inner()).applied(),
            is_leader: r.state == StateRole::Leader,
            voters: {
                let mut v: Vec<u64> = self.raw.store().conf_state().voters;
                v.sort();
                v
            },
            removed: self.removed,
        };
        self.status.send_if_modified(|old| {
            if *old != st {
                *old = st;
                true
            } else {
                false
            }
        });
    }
}

impl RaftHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Read access to the state machine. Call [`Self::read_barrier`] first for a
    /// linearizable read.
    pub fn state(&self) -> &Arc<RwLock<StateMachine>> {
        &self.sm
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// Replicates a proposal and returns its outcome once applied locally.
    ///
    /// While no leader is known, or if the leader changes mid-flight, it waits and
    /// re-proposes the same request (applied at most once) until the request timeout.
    pub async fn propose(&self, p: Proposal) -> Result<Outcome, RaftError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.status().leader_id == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || self.wait_leader(left).await.is_none() {
                    return Err(RaftError::NoLeader);
                }
            }
            let (tx, rx) = oneshot::channel();
            self.tx
                .send(Msg::Propose(p.clone(), tx))
                .map_err(|_| RaftError::Stopped)?;
            match self.wait(rx).await {
                Err(RaftError::NoLeader | RaftError::LeaderChanged)
                    if Instant::now() + Duration::from_millis(20) < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                r => return r,
            }
        }
    }

    async fn wait<V>(&self, rx: oneshot::Receiver<Result<V, RaftError>>) -> Result<V, RaftError> {
        // The node expires requests itself; this outer bound only guards a wedged task.
        match tokio::time::timeout(self.timeout * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::Timeout(self.timeout)),
        }
    }

    /// Returns once this node's state machine reflects every write committed before the
    /// call (raft ReadIndex, confirmed by a quorum heartbeat round).
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        if self.status().leader_id == 0 && self.wait_leader(self.timeout).await.is_none() {
            return Err(RaftError::NoLeader);
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::ReadIndex(tx))
            .map_err(|_| RaftError::Stopped)?;
        let index = self.wait(rx).await?;
        self.wait_applied(index).await
    }

    /// Waits until the local state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), RaftError> {
        let mut st = self.status.clone();
        let res = tokio::time::timeout(self.timeout, st.wait_for(|s| s.applied >= index)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::ReadTimeout(self.timeout)),
        }
    }

    /// Adds `raft_id` as a voter (request ID makes retries idempotent at the caller).
    pub async fn add_voter(&self, raft_id: u64) -> Result<Outcome, RaftError> {
        self.conf_change(ConfChangeType::AddNode, raft_id).await
    }

    pub async fn remove_voter(&self, raft_id: u64) -> Result<Outcome, RaftError> {
        self.conf_change(ConfChangeType::RemoveNode, raft_id).await
    }

    /// Proposes a membership change, retrying while another change is in flight or the
    /// leader dropped it, until it is applied or the request timeout passes.
    async fn conf_change(&self, t: ConfChangeType, raft_id: u64) -> Result<Outcome, RaftError> {
        let deadline = Instant::now() + self.timeout * 3;
        loop {
            let voters = self.status().voters;
            let done = match t {
                ConfChangeType::AddNode => voters.contains(&raft_id),
                _ => !voters.contains(&raft_id),
            };
            if done {
                return Ok(Outcome {
                    index: self.status().applied,
                    objects: vec![],
                });
            }
            let mut cc = ConfChange::default();
            cc.set_change_type(t);
            cc.node_id = raft_id;
            let (tx, rx) = oneshot::channel();
            self.tx
                .send(Msg::ConfChange(cc, crate::state::new_id(), tx))
                .map_err(|_| RaftError::Stopped)?;
            match self.wait(rx).await {
                Ok(o) => return Ok(o),
                Err(
                    e @ (RaftError::ConfChangeBusy
                    | RaftError::Timeout(_)
                    | RaftError::NoLeader
                    | RaftError::LeaderChanged),
                ) => {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Delivers a message from a peer.
    pub fn step(&self, m: Message) {
        let _ = self.tx.send(Msg::Raft(Box::new(m)));
    }

    pub fn report_unreachable(&self, raft_id: u64) {
        let _ = self.tx.send(Msg::Unreachable(raft_id));
    }

    pub fn report_snapshot(&self, raft_id: u64, ok: bool) {
        let _ = self.tx.send(Msg::SnapshotStatus(raft_id, ok));
    }

    /// Starts an election now (tests, and a lone founder that need not wait a timeout).
    pub fn campaign(&self) {
        let _ = self.tx.send(Msg::Campaign);
    }

    /// Stops the node's task (the storage stays as it is on disk).
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }

    /// True once the task has ended.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until a leader is known (any member), up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<u64> {
        let mut st = self.status.clone();
        let r = tokio::time::timeout(timeout, st.wait_for(|s| s.leader_id != 0)).await;
        r.ok().and_then(|r| r.ok().map(|s| s.leader_id))
    }
}

/// Conf state helper for tests and bootstrap checks.
pub fn voters(cs: &ConfState) -> Vec<u64> {
    cs.voters.clone()
}
