//! The raft node: one task, on a thread of its own, owns the `RawNode`, its storage and
//! the state machine's write side (fsync blocks that thread, never the process's async
//! workers). Everything else talks to it through a [`RaftHandle`] (a mailbox): client
//! proposals with a reply channel, linearizable read barriers (ReadIndex), configuration
//! changes, and raft messages from peers.
//!
//! Write path: a proposal is only ever proposed by the leader. [`RaftHandle::propose`] on
//! a follower hands it to the leader over the [`Transport`] (`Raft.Forward` between
//! managers), which answers once the entry is applied there; the follower then waits until
//! its own state machine has applied it too, so the caller reads its own write locally.
//! raft-rs's own forwarding (`MsgPropose` to the leader) is never used: it drops
//! proposals silently during leader changes. Whatever fails in a retryable way (no leader,
//! leader changed, forwarding failed) is retried with the same request ID until the
//! request timeout; the state machine applies a request ID once.
//!
//! Proposals that arrive together are batched into one log entry (a JSON array of
//! [`Proposal`]s), and every Ready is persisted with one fsync. Snapshots are encoded and
//! written on a helper thread from a copy of the state, so the raft loop (and the
//! heartbeats it sends) never stalls on a large state.

use crate::model::{ApplyError, Outcome, Proposal};
use crate::raft::storage::{DiskStorage, StorageError};
use crate::store::{SharedState, StateMachine, Store};
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Early campaigns after the connection to the leader broke, beyond the first, while no
/// leader emerges (see `Node::campaign_early`).
const EARLY_CAMPAIGNS: u32 = 3;

/// A proposal on its way to the leader: resolves to the leader's outcome.
pub type Forwarded = Pin<Box<dyn Future<Output = Result<Outcome, RaftError>> + Send>>;

/// Connects a raft node to its peers.
pub trait Transport: Send + Sync + 'static {
    /// Delivers raft messages to peers. Never blocks; may drop (raft retransmits).
    fn send(&self, msgs: Vec<Message>);

    /// Hands a client proposal from `from` to the leader `to`, which proposes it itself
    /// ([`RaftHandle::propose_local`]) and answers once it is applied there. A failure
    /// that leaves the outcome unknown ([`RaftError::Forward`], [`RaftError::NotLeader`],
    /// [`RaftError::LeaderChanged`]) is retried by the caller with the same request ID.
    fn forward(&self, from: u64, to: u64, p: Proposal) -> Forwarded;
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
    /// Where proposal latency and leader changes are counted (shared per process, so
    /// counts survive a raft node being restarted by a promotion).
    pub metrics: Arc<crate::raft::metrics::ControllerMetrics>,
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
            metrics: Arc::default(),
        }
    }
}

/// The most proposal data one log entry holds (a single larger proposal gets one of
/// its own). See `Node::propose_batch`.
pub const ENTRY_BYTES: usize = 1 << 20;

/// Time one round of the run loop spent applying entries, waiting for the state's
/// write lock, and copying the state for a snapshot.
#[derive(Default)]
struct RoundCosts {
    entries: usize,
    applying: Duration,
    lock_wait: Duration,
    snapshot_copy: Duration,
}

/// How long one round of the run loop works through Readys before it lets ticks and
/// messages in.
const ROUND_BUDGET: Duration = Duration::from_millis(50);

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
    #[error("this manager is not the leader (any more); retry on the leader")]
    NotLeader,
    #[error("could not reach the cluster leader ({0}); it may or may not be applied, retrying with the same request is safe")]
    Forward(String),
    #[error("starting the raft thread: {0}")]
    Thread(std::io::Error),
    /// A final failure the leader reported for a forwarded proposal.
    #[error("{0}")]
    Remote(String),
}

impl RaftError {
    /// Failures after which the same request may be sent again (to the leader as it is
    /// then known) without risk: the state machine applies a request ID once.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RaftError::NoLeader
                | RaftError::LeaderChanged
                | RaftError::NotLeader
                | RaftError::Forward(_)
        )
    }
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
    /// Several proposals at once, so that they land in one log entry.
    ProposeAll(Vec<(Proposal, oneshot::Sender<Result<Outcome, RaftError>>)>),
    ConfChange(
        ConfChange,
        String,
        oneshot::Sender<Result<Outcome, RaftError>>,
    ),
    ReadIndex(oneshot::Sender<Result<u64, RaftError>>),
    Raft(Box<Message>),
    Unreachable(u64),
    /// Evidence that this raft ID, if it is our leader, is gone (its connection broke).
    LeaderLost(u64),
    SnapshotStatus(u64, bool),
    Campaign,
    Stop,
}

/// The mailbox of a running raft node, plus read access to its state machine.
#[derive(Clone)]
pub struct RaftHandle {
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
    sm: SharedState,
    status: watch::Receiver<RaftStatus>,
    timeout: Duration,
    metrics: Arc<crate::raft::metrics::ControllerMetrics>,
    transport: Arc<dyn Transport>,
}

type Reply = oneshot::Sender<Result<Outcome, RaftError>>;
/// Where a linearizable read waits for its index.
type ReadReply = oneshot::Sender<Result<u64, RaftError>>;

struct Node<T: Transport> {
    raw: RawNode<DiskStorage>,
    cfg: RaftConfig,
    transport: Arc<T>,
    sm: SharedState,
    /// Waiters by request ID (several if a request was retried).
    waiters: HashMap<String, Vec<(Instant, Reply)>>,
    reads: HashMap<Vec<u8>, PendingRead>,
    read_seq: u64,
    /// Whether the commit index had reached an entry of the current term at the end of
    /// the previous loop turn (a leader serves reads only from then on).
    read_ready: bool,
    snapshot_index: u64,
    /// The WAL thread reports here which Ready numbers are durable.
    persisted_tx: mpsc::UnboundedSender<Result<u64, String>>,
    persisted_rx: mpsc::UnboundedReceiver<Result<u64, String>>,
    /// When to campaign because the connection to this leader broke, and how many more
    /// times after that if no leader emerges.
    campaign_at: Option<(Instant, u64, u32)>,
    /// Where the current round of the run loop spent its time (for the slow-round log).
    round: RoundCosts,
    /// A snapshot being encoded and written on a helper thread.
    snapshot_job: Option<oneshot::Receiver<Result<(Snapshot, PathBuf), StorageError>>>,
    status: watch::Sender<RaftStatus>,
    removed: bool,
    /// (leader, term) at the end of the previous loop turn.
    last_leader: (u64, u64),
    /// The last non-empty leader seen, for counting leader changes.
    known_leader: u64,
}

/// A linearizable read waiting for its ReadIndex.
struct PendingRead {
    deadline: Instant,
    /// When the ReadIndex request was last handed to raft.
    issued: Instant,
    reply: ReadReply,
}

/// Opens the storage, restores the state machine and starts the node's thread.
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
        // A round applies at most this much (see `on_ready`), so a burst of large
        // entries is applied over several rounds with ticks and messages between them.
        max_committed_size_per_ready: 2 * ENTRY_BYTES as u64,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let sm = SharedState::new(sm);
    storage.attach_state(sm.clone());
    let raw = RawNode::new(
        &raft_cfg,
        storage,
        &crate::raft::logger::raft_logger(cfg.id),
    )?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
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
        metrics: cfg.metrics.clone(),
        transport: transport.clone(),
    };
    let mut node = Node {
        raw,
        cfg,
        transport,
        sm,
        waiters: HashMap::new(),
        reads: HashMap::new(),
        read_seq: 0,
        read_ready: false,
        snapshot_index,
        snapshot_job: None,
        persisted_tx,
        persisted_rx,
        campaign_at: None,
        round: RoundCosts::default(),
        status: status_tx,
        removed: false,
        last_leader: (0, 0),
        known_leader: 0,
    };
    let span = tracing::info_span!("raft", raft_id = node.cfg.id);
    // A thread of its own: the loop blocks on fsync, which must not take one of the
    // process's few async workers (client RPCs, the transport) with it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RaftError::Thread)?;
    std::thread::Builder::new()
        .name(format!("raft-{:x}", node.cfg.id & 0xffff))
        .spawn(move || {
            crate::raft::priority::raise_current_thread();
            rt.block_on(tracing::Instrument::instrument(
                async move {
                    if let Err(e) = node.run(&mut rx).await {
                        tracing::error!(error = %e, "raft node stopped on a storage error");
                    }
                    node.fail_all(|| RaftError::Stopped);
                },
                span,
            ))
        })
        .map_err(RaftError::Thread)?;
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
                biased;
                Some(p) = self.persisted_rx.recv() => {
                    self.on_persisted(p)?;
                }
                _ = ticker.tick() => {
                    if !self.removed {
                        self.raw.tick();
                    }
                    self.expire();
                    self.issue_reads(false);
                }
                _ = async {
                    match self.campaign_at {
                        Some((at, _, _)) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some((_, lost, left)) = self.campaign_at.take() {
                        self.campaign_early(lost, left);
                    }
                }
                done = async {
                    match self.snapshot_job.as_mut() {
                        Some(job) => job.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.snapshot_job = None;
                    match done {
                        Ok(Ok(snap)) => self.install_own_snapshot(snap)?,
                        Ok(Err(e)) => tracing::warn!(error = %e, "taking a snapshot failed; will retry"),
                        Err(_) => tracing::warn!("the snapshot thread died; will retry"),
                    }
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
                // Readys a bounded round left (see `on_ready`): after everything else.
                _ = std::future::ready(()), if self.raw.has_ready() => {}
            }
            let busy = Instant::now();
            self.propose_batch(batch);
            self.on_ready()?;
            self.maybe_snapshot();
            // Ticks, heartbeats and acks wait while this runs: a run longer than a few
            // ticks risks an election, so say what it was.
            let took = busy.elapsed();
            let round = std::mem::take(&mut self.round);
            if took > self.cfg.tick * 3 {
                tracing::warn!(
                    ?took,
                    applied = self.raw.raft.raft_log.applied,
                    entries = round.entries,
                    applying = ?round.applying,
                    lock_wait = ?round.lock_wait,
                    snapshot_copy = ?round.snapshot_copy,
                    "slow raft round"
                );
            }
            // Proposals of a leader that lost its role would only time out: fail them now
            // as retryable (same request ID, so a retry cannot apply them twice).
            let leader = (self.raw.raft.leader_id, self.raw.raft.term);
            let read_ready = self.raw.raft.commit_to_current_term();
            let leader_changed = leader != self.last_leader;
            // raft-rs drops a ReadIndex while no leader is known, and a new leader drops
            // one until it has committed an entry of its term: send pending reads again
            // as soon as either may have changed, instead of letting them time out.
            if leader_changed || (read_ready && !self.read_ready) {
                self.issue_reads(true);
            }
            self.read_ready = read_ready;
            if leader_changed {
                if self.last_leader.0 != 0 && self.raw.raft.state != StateRole::Leader {
                    self.fail_proposals(|| RaftError::LeaderChanged);
                }
                self.last_leader = leader;
                if leader.0 != 0 && leader.0 != self.known_leader {
                    self.known_leader = leader.0;
                    self.cfg.metrics.leader_changes.inc();
                }
            }
            self.publish();
        }
    }

    /// Queues a client proposal for this round's entry, or refuses it.
    fn accept(&mut self, p: Proposal, reply: Reply, batch: &mut Vec<(Proposal, Reply)>) {
        if self.removed {
            let _ = reply.send(Err(RaftError::Removed));
        } else if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(RaftError::NotLeader));
        } else {
            batch.push((p, reply));
        }
    }

    /// Returns false on Stop.
    fn handle(&mut self, m: Msg, batch: &mut Vec<(Proposal, Reply)>) -> bool {
        match m {
            Msg::Propose(p, reply) => self.accept(p, reply, batch),
            Msg::ProposeAll(ps) => {
                for (p, reply) in ps {
                    self.accept(p, reply, batch);
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
                self.read_seq += 1;
                let ctx = format!("r{}-{}", self.cfg.id, self.read_seq).into_bytes();
                let now = Instant::now();
                // raft-rs silently drops a read while no leader is known: it waits here
                // and goes out once one is (see issue_reads).
                if self.raw.raft.leader_id != raft::INVALID_ID {
                    self.raw.read_index(ctx.clone());
                }
                self.reads.insert(
                    ctx,
                    PendingRead {
                        deadline: now + self.cfg.request_timeout,
                        issued: now,
                        reply,
                    },
                );
            }
            Msg::Raft(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "dropping raft message");
                }
            }
            // Whether the leader is gone is the transport's to prove (`leader_lost`):
            // an unreachable peer may only be slow.
            Msg::Unreachable(id) => self.raw.report_unreachable(id),
            Msg::LeaderLost(id) => self.leader_lost(id),
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
        // Leadership may have moved while the mailbox was drained; raft-rs would then
        // forward the entry itself, and drop it silently if the leader is in flux.
        if self.raw.raft.state != StateRole::Leader {
            for (_, r) in batch {
                let _ = r.send(Err(RaftError::NotLeader));
            }
            return;
        }
        // Proposals queued together share entries of at most ENTRY_BYTES each (one
        // that is larger alone): every member applies an entry in one go, with its
        // heartbeats waiting, so an entry holding a whole deploy stalled all of them.
        let mut data = b"[".to_vec();
        let mut group: Vec<(Proposal, Reply)> = Vec::new();
        for (p, r) in batch {
            let enc = match serde_json::to_vec(&p) {
                Ok(d) => d,
                Err(e) => {
                    let _ = r.send(Err(RaftError::Encode(e)));
                    continue;
                }
            };
            if !group.is_empty() && data.len() + enc.len() > ENTRY_BYTES {
                data.push(b']');
                self.propose_entry(
                    std::mem::replace(&mut data, b"[".to_vec()),
                    std::mem::take(&mut group),
                );
            }
            if !group.is_empty() {
                data.push(b',');
            }
            data.extend_from_slice(&enc);
            group.push((p, r));
        }
        if !group.is_empty() {
            data.push(b']');
            self.propose_entry(data, group);
        }
    }

    /// Appends one entry holding `group` (already encoded as `data`).
    fn propose_entry(&mut self, data: Vec<u8>, group: Vec<(Proposal, Reply)>) {
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                let deadline = Instant::now() + self.cfg.request_timeout;
                for (p, r) in group {
                    self.waiters
                        .entry(p.request_id)
                        .or_default()
                        .push((deadline, r));
                }
            }
            Err(e) => {
                for (_, r) in group {
                    let err = match &e {
                        raft::Error::ProposalDropped => RaftError::NotLeader,
                        other => RaftError::Proposal(other.to_string()),
                    };
                    let _ = r.send(Err(err));
                }
            }
        }
    }

    /// Raft learns which Readys the WAL thread made durable. Called before each Ready:
    /// a peer's answer to messages sent after an append must never be stepped before
    /// raft knows that append is durable (a new leader asserts as much).
    fn drain_persisted(&mut self) -> Result<(), RaftError> {
        while let Ok(p) = self.persisted_rx.try_recv() {
            self.on_persisted(p)?;
        }
        Ok(())
    }

    fn on_persisted(&mut self, p: Result<u64, String>) -> Result<(), RaftError> {
        match p {
            Ok(number) => {
                self.raw.on_persist_ready(number);
                Ok(())
            }
            // Fail-stop: the log on disk can no longer be trusted to have what raft thinks.
            Err(why) => Err(RaftError::Storage(StorageError::Io {
                path: self.cfg.dir.clone(),
                source: std::io::Error::other(why),
            })),
        }
    }

    /// Handles whatever raft has ready. Entries and hard state go to the WAL thread; the
    /// loop goes on (applying, answering, proposing) while they are fsynced, and raft
    /// counts them (a leader's own vote for an entry, a follower's acknowledgement sent
    /// afterwards) only once they are durable.
    fn on_ready(&mut self) -> Result<(), RaftError> {
        self.drain_persisted()?;
        // Rounds are bounded in time: what is still ready after ROUND_BUDGET waits for
        // the run loop to take ticks and messages first (it comes straight back).
        let began = Instant::now();
        while self.raw.has_ready() && began.elapsed() < ROUND_BUDGET {
            let mut ready = self.raw.ready();
            if !ready.snapshot().is_empty() {
                self.on_snapshot_ready(ready)?;
                continue;
            }
            // 1. Messages a leader may send before its own append is durable.
            if !ready.messages().is_empty() {
                self.transport.send(ready.take_messages());
            }
            // 2. Read barriers confirmed by the leader.
            for rs in ready.take_read_states() {
                if let Some(r) = self.reads.remove(&rs.request_ctx) {
                    let _ = r.reply.send(Ok(rs.index));
                }
            }
            // 3. Entries committed (and durable here) are applied to the state machine.
            self.apply(ready.take_committed_entries())?;
            // 4. New entries and the hard state to the WAL thread; the messages that must
            //    wait for them (votes, follower acks) leave once they are durable.
            let hs = ready.hs().cloned();
            let msgs = ready.take_persisted_messages();
            let number = ready.number();
            let transport = self.transport.clone();
            let persisted = self.persisted_tx.clone();
            self.raw.mut_store().persist_async(
                ready.entries(),
                hs.as_ref(),
                Box::new(move |res| match res {
                    Ok(()) => {
                        // Queued before any answer to these messages can arrive.
                        let _ = persisted.send(Ok(number));
                        if !msgs.is_empty() {
                            transport.send(msgs);
                        }
                    }
                    Err(e) => {
                        let _ = persisted.send(Err(e.to_string()));
                    }
                }),
            )?;
            self.raw.advance_append_async(ready);
            self.raw.advance_apply();
        }
        Ok(())
    }

    /// A Ready carrying a snapshot from the leader, handled synchronously: the snapshot
    /// replaces the log and the state machine, and everything queued before it is durable
    /// by the time it is installed.
    fn on_snapshot_ready(&mut self, mut ready: raft::Ready) -> Result<(), RaftError> {
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        let snap = ready.snapshot().clone();
        let index = snap.get_metadata().index;
        tracing::info!(raft_index = index, "installing snapshot from leader");
        self.raw.mut_store().apply_snapshot(snap.clone())?;
        {
            let mut sm = self.sm.write();
            sm.restore(&snap.data)?;
            sm.set_applied(index);
        }
        self.snapshot_index = index;
        for rs in ready.take_read_states() {
            if let Some(r) = self.reads.remove(&rs.request_ctx) {
                let _ = r.reply.send(Ok(rs.index));
            }
        }
        self.apply(ready.take_committed_entries())?;
        let hs = ready.hs().cloned();
        if !ready.entries().is_empty() || hs.is_some() {
            self.raw.mut_store().persist(ready.entries(), hs.as_ref())?;
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        Ok(())
    }

    /// Applies committed entries in order. Runs of normal entries are decoded first and
    /// applied under one write lock: taking the lock per entry queued the raft thread
    /// behind the store's readers once per entry (hundreds per Ready during a deploy),
    /// which held its ticks and heartbeats for seconds.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        let mut run: Vec<(u64, Option<Vec<Proposal>>)> = Vec::new();
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => run.push((e.index, None)),
                EntryType::EntryNormal => match serde_json::from_slice(&e.data) {
                    Ok(props) => run.push((e.index, Some(props))),
                    Err(err) => {
                        // Written by a newer/older version we cannot read: skip, loudly.
                        tracing::error!(raft_index = e.index, error = %err, "undecodable log entry skipped");
                        run.push((e.index, None));
                    }
                },
                EntryType::EntryConfChange => {
                    self.apply_run(std::mem::take(&mut run));
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
                    self.sm.write().set_applied(e.index);
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
                EntryType::EntryConfChangeV2 => run.push((e.index, None)),
            }
        }
        self.apply_run(run);
        Ok(())
    }

    /// Applies a run of normal entries (`None`: nothing to apply, only the index) under
    /// one write lock, then answers their waiters.
    fn apply_run(&mut self, run: Vec<(u64, Option<Vec<Proposal>>)>) {
        if run.is_empty() {
            return;
        }
        let mut results = Vec::new();
        {
            let asked = Instant::now();
            let mut sm = self.sm.write();
            let got = Instant::now();
            self.round.lock_wait += got - asked;
            for (index, props) in &run {
                match props {
                    None => sm.set_applied(*index),
                    Some(props) => {
                        for p in props {
                            results.push((p.request_id.clone(), sm.apply(*index, p)));
                        }
                    }
                }
            }
            self.round.applying += got.elapsed();
            self.round.entries += run.len();
        }
        for (id, r) in results {
            if let Some(ws) = self.waiters.remove(&id) {
                for (_, w) in ws {
                    let _ = w.send(r.clone().map_err(RaftError::Rejected));
                }
            }
        }
    }

    /// Starts a snapshot once enough was applied: at least `snapshot_every` entries and,
    /// so that encoding the state costs no more than writing the log did, at least half
    /// the last snapshot's size in log bytes. The state is copied here (cheap next to
    /// encoding it) and encoded and written on a helper thread; the raft loop goes on.
    fn maybe_snapshot(&mut self) {
        if self.snapshot_job.is_some() {
            return;
        }
        let store = self.raw.store();
        if store.log_bytes_since_snapshot() * 2 < store.snapshot_bytes() {
            return;
        }
        let due = self.snapshot_index + self.cfg.snapshot_every;
        let copying = Instant::now();
        let copy = self.sm.read(|sm| {
            let applied = sm.applied();
            (applied >= due).then(|| (applied, sm.store().clone()))
        });
        self.round.snapshot_copy += copying.elapsed();
        let Some((applied, state)) = copy else {
            return;
        };
        let Ok(term) = self.raw.store().term(applied) else {
            return;
        };
        let mut snap = Snapshot::default();
        let md = snap.mut_metadata();
        md.index = applied;
        md.term = term;
        md.set_conf_state(self.raw.store().conf_state());
        let dir = self.cfg.dir.clone();
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                let res = serde_json::to_vec(&state)
                    .map_err(|e| StorageError::Encode(e.to_string()))
                    .and_then(|data| {
                        snap.data = data.into();
                        crate::raft::storage::write_snapshot_file(&dir, &snap)
                            .map(|tmp| (snap, tmp))
                    });
                let _ = tx.send(res);
            });
        match spawned {
            Ok(_) => self.snapshot_job = Some(rx),
            Err(e) => tracing::warn!(error = %e, "cannot start the snapshot thread"),
        }
    }

    /// Installs a snapshot the helper thread wrote and compacts the log behind it.
    fn install_own_snapshot(&mut self, (snap, file): (Snapshot, PathBuf)) -> Result<(), RaftError> {
        let index = snap.get_metadata().index;
        if self
            .raw
            .mut_store()
            .install_own_snapshot(snap, &file, self.cfg.keep_entries)?
        {
            self.snapshot_index = index;
            tracing::info!(raft_index = index, "snapshot taken, log compacted");
        }
        Ok(())
    }

    /// Hands pending reads to raft (again): all of them when `all`, else those sent more
    /// than two ticks ago (raft-rs may have dropped them on the way).
    fn issue_reads(&mut self, all: bool) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let now = Instant::now();
        let stale = self.cfg.tick * 2;
        let due: Vec<Vec<u8>> = self
            .reads
            .iter_mut()
            .filter(|(_, r)| all || now.duration_since(r.issued) >= stale)
            .map(|(ctx, r)| {
                r.issued = now;
                ctx.clone()
            })
            .collect();
        for ctx in due {
            self.raw.read_index(ctx);
        }
    }

    /// Our leader is certainly gone (its port refuses connections: see
    /// `cluster::transport::gone`): stop honouring its lease (so we vote
    /// for whoever asks first) and campaign after a random moment under one tick, rather
    /// than a whole election timeout. The random delay keeps two followers that noticed
    /// together from splitting the vote; pre-vote keeps a wrong guess harmless: members
    /// that still hear from a live leader refuse to vote.
    fn leader_lost(&mut self, id: u64) {
        let r = &mut self.raw.raft;
        if self.removed || r.state != StateRole::Follower || r.leader_id != id || id == 0 {
            return;
        }
        r.election_elapsed = r.election_elapsed.max(r.election_timeout());
        if self.campaign_at.is_none() {
            let jitter = self.cfg.tick.mul_f64(rand::random::<f64>());
            tracing::info!(leader = id, after = ?jitter, "lost the connection to the leader; campaigning early");
            self.campaign_at = Some((Instant::now() + jitter, id, EARLY_CAMPAIGNS));
        }
    }

    /// The early campaign [`Self::leader_lost`] planned, unless a leader emerged meanwhile.
    /// Two members that campaigned at once split the vote and would wait a whole election
    /// timeout: while no leader emerges, try again a few times, a tick or so apart.
    fn campaign_early(&mut self, lost: u64, left: u32) {
        let r = &self.raw.raft;
        // Hearing from the lost leader again resets the election clock: it is alive.
        let leaderless = r.leader_id == raft::INVALID_ID
            || (r.leader_id == lost && r.election_elapsed >= r.election_timeout());
        if self.removed || r.state == StateRole::Leader || !leaderless {
            return;
        }
        let _ = self.raw.campaign();
        if left > 0 {
            let again = self.cfg.tick.mul_f64(1.0 + rand::random::<f64>());
            self.campaign_at = Some((Instant::now() + again, lost, left - 1));
        }
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
            .filter(|(_, r)| r.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(r) = self.reads.remove(&k) {
                let _ = r.reply.send(Err(RaftError::ReadTimeout(t)));
            }
        }
    }

    fn fail_proposals(&mut self, err: impl Fn() -> RaftError) {
        for (_, ws) in self.waiters.drain() {
            for (_, w) in ws {
                let _ = w.send(Err(err()));
            }
        }
    }

    fn fail_all(&mut self, err: impl Fn() -> RaftError) {
        self.fail_proposals(&err);
        for (_, r) in self.reads.drain() {
            let _ = r.reply.send(Err(err()));
        }
    }

    fn publish(&self) {
        let r = &self.raw.raft;
        let st = RaftStatus {
            id: self.cfg.id,
            leader_id: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.sm.read(StateMachine::applied),
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

    /// The store this node applies to. Call [`Self::read_barrier`] first for a
    /// linearizable read.
    pub fn store(&self) -> &SharedState {
        &self.sm
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// The metrics this node (and the reconciler driving it) records into.
    pub fn metrics(&self) -> &Arc<crate::raft::metrics::ControllerMetrics> {
        &self.metrics
    }

    /// Replicates a proposal and returns its outcome once applied locally.
    ///
    /// While no leader is known, or if the leader changes mid-flight, it waits and
    /// re-proposes the same request (applied at most once) until the request timeout.
    pub async fn propose(&self, p: Proposal) -> Result<Outcome, RaftError> {
        let started = Instant::now();
        let r = self.propose_inner(p).await;
        if r.is_ok() {
            self.metrics
                .proposal_duration
                .observe(started.elapsed().as_secs_f64());
        }
        r
    }

    async fn propose_inner(&self, p: Proposal) -> Result<Outcome, RaftError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut leader = self.status().leader_id;
            if leader == 0 {
                match self.wait_leader(left).await {
                    Some(l) => leader = l,
                    None => return Err(RaftError::NoLeader),
                }
            }
            let res = if leader == self.id {
                self.propose_local(p.clone()).await
            } else {
                match tokio::time::timeout(left, self.transport.forward(self.id, leader, p.clone()))
                    .await
                {
                    Ok(Ok(o)) => {
                        // Read-your-writes on this manager: the leader's commit index
                        // reaches us at about the time its answer does.
                        let left = deadline.saturating_duration_since(Instant::now());
                        let mut st = self.status.clone();
                        let _ =
                            tokio::time::timeout(left, st.wait_for(|s| s.applied >= o.index)).await;
                        Ok(o)
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(RaftError::Timeout(self.timeout)),
                }
            };
            match res {
                Err(e) if e.is_retryable() => {
                    let wait = Duration::from_millis(50);
                    if Instant::now() + wait >= deadline {
                        return Err(match e {
                            RaftError::NotLeader => RaftError::NoLeader,
                            e => e,
                        });
                    }
                    // Until this node's view of the leader moves on, or a moment passes.
                    let mut st = self.status.clone();
                    let _ =
                        tokio::time::timeout(wait, st.wait_for(|s| s.leader_id != leader)).await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                r => return r,
            }
        }
    }

    /// Replicates several proposals, each answered on its own as [`Self::propose`] would.
    /// On the leader they reach the node in one message, so they share one log entry
    /// however busy the node is; one that fails retryably is proposed again alone.
    pub async fn propose_all(&self, ps: Vec<Proposal>) -> Vec<Result<Outcome, RaftError>> {
        if self.status().leader_id == self.id {
            let mut msg = Vec::with_capacity(ps.len());
            let mut rxs = Vec::with_capacity(ps.len());
            for p in &ps {
                let (tx, rx) = oneshot::channel();
                msg.push((p.clone(), tx));
                rxs.push(rx);
            }
            if self.tx.send(Msg::ProposeAll(msg)).is_ok() {
                let started = Instant::now();
                let waits = ps.into_iter().zip(rxs).map(|(p, rx)| async move {
                    match self.wait(rx).await {
                        Err(e) if e.is_retryable() => self.propose(p).await,
                        Ok(o) => {
                            self.metrics
                                .proposal_duration
                                .observe(started.elapsed().as_secs_f64());
                            Ok(o)
                        }
                        Err(e) => Err(e),
                    }
                });
                return futures::future::join_all(waits).await;
            }
        }
        futures::future::join_all(ps.into_iter().map(|p| self.propose(p))).await
    }

    /// Proposes on this node if it is the leader, never forwarding: the leader's side of
    /// a forwarded proposal. Fails with [`RaftError::NotLeader`] anywhere else.
    pub async fn propose_local(&self, p: Proposal) -> Result<Outcome, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Propose(p, tx))
            .map_err(|_| RaftError::Stopped)?;
        self.wait(rx).await
    }

    /// Tells the node that `raft_id` is certainly gone (its port refuses connections, not
    /// merely a broken or slow stream); if that is its leader, it campaigns soon rather
    /// than after a whole election timeout.
    pub fn leader_lost(&self, raft_id: u64) {
        let _ = self.tx.send(Msg::LeaderLost(raft_id));
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
    /// Bounded by the request timeout: the node holds the read until a leader is known and
    /// has committed in its term, and fails it with [`RaftError::ReadTimeout`] after that.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
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
                .send(Msg::ConfChange(cc, crate::model::new_id(), tx))
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
