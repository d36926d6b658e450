//! Between managers over mutual-TLS gRPC:
//! - raft messages: one sender task per peer keeps one long-lived `Raft.Stream` open,
//!   writes whatever queued up as one batch, and reports an unreachable peer the moment
//!   its stream breaks (that is how followers notice a dead leader early) and snapshot
//!   outcomes back to raft. A full queue drops messages; raft retransmits.
//! - client proposals a follower hands to the leader (`Raft.Forward`): one forwarder task
//!   per leader batches whatever queued up while earlier calls were in flight (at most
//!   [`FORWARD_INFLIGHT`] at a time), so a busy follower sends few, large calls.
//!
//! Tasks run on the raft network runtime ([`super::raft_runtime`], a thread of its own,
//! so worker load on the process's runtime cannot delay them): the raft node calls in
//! from its own thread.

use crate::model::{Outcome, Proposal};
use crate::raft::consensus::{Forwarded, RaftError, RaftHandle, Transport};
use crate::raft::wire::result_from_pb;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use skiff_proto::cluster as pb;
use skiff_proto::cluster::raft_client::RaftClient;
use skiff_proto::cluster::RaftBatch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

const QUEUE: usize = 8192;
const BATCH: usize = 512;
/// Batches written to a peer's stream but not yet sent; more are dropped.
const STREAM_QUEUE: usize = 256;
/// Forward calls in flight to the leader at a time; more requests wait and batch up.
const FORWARD_INFLIGHT: usize = 4;
/// Proposals per forward call at most.
const FORWARD_BATCH: usize = 1024;
/// Outer bound on one forward call (the leader times proposals out after 5 s itself).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = (Proposal, oneshot::Sender<Result<Outcome, RaftError>>);

pub struct GrpcTransport {
    /// raft ID → advertised address, from the state machine's manager records.
    addrs: RwLock<HashMap<u64, String>>,
    peers: Mutex<HashMap<u64, (String, mpsc::Sender<Message>)>>,
    forwarders: Mutex<HashMap<u64, (String, mpsc::Sender<Pending>)>>,
    tls: RwLock<Arc<rustls::ClientConfig>>,
    raft: RwLock<Option<RaftHandle>>,
    /// The process's runtime (captured at creation), should the raft network runtime
    /// not start.
    fallback: tokio::runtime::Handle,
}

impl GrpcTransport {
    /// Must be called within the process's tokio runtime. Its tasks start on the raft
    /// network runtime once a peer is first contacted.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            addrs: RwLock::default(),
            peers: Mutex::default(),
            forwarders: Mutex::default(),
            tls: RwLock::new(tls),
            raft: RwLock::new(None),
            fallback: tokio::runtime::Handle::current(),
        })
    }

    /// The raft node to report to (replaced when a demoted node is promoted again).
    pub fn set_raft(&self, h: RaftHandle) {
        *self.raft.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Where this transport's tasks run.
    fn rt(&self) -> tokio::runtime::Handle {
        super::raft_runtime::handle().unwrap_or_else(|| self.fallback.clone())
    }

    fn raft(&self) -> Option<RaftHandle> {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the TLS client identity (after a certificate renewal); new connections use it.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Updates where peers are; a changed address restarts that peer's connection.
    pub fn set_addrs(&self, addrs: HashMap<u64, String>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|id, (addr, _)| addrs.get(id) == Some(addr));
        self.forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, (addr, _)| addrs.get(id) == Some(addr));
        *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    /// Where `to` listens: as last set, else as the state machine records it (a manager
    /// that just joined, or restarted before its address reached `node.json`, is known to
    /// raft before the periodic refresh catches up; a vote it sends must not be dropped).
    fn addr_of(&self, to: u64) -> Option<String> {
        if let Some(a) = self
            .addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
        {
            return Some(a.clone());
        }
        let addr = self.raft().and_then(|h| {
            h.store().read(|sm| {
                sm.nodes()
                    .find(|n| n.raft_id == to && !n.addr.is_empty())
                    .map(|n| n.addr.clone())
            })
        })?;
        self.addrs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(to, addr.clone());
        Some(addr)
    }

    fn channel_to(&self, to: u64) -> Option<(String, tonic::transport::Channel)> {
        let addr = self.addr_of(to)?;
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        // tonic spawns the channel's connection task on the current runtime: make that
        // the raft network runtime, not the raft thread's (which blocks on fsync).
        let rt = self.rt();
        let _rt = rt.enter();
        match crate::tls::channel(&addr, tls) {
            Ok(c) => Some((addr, c)),
            Err(e) => {
                tracing::warn!(peer = to, %addr, error = %e, "bad peer address");
                None
            }
        }
    }

    fn forwarder(&self, to: u64) -> Option<mpsc::Sender<Pending>> {
        let mut fw = self.forwarders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tx)) = fw.get(&to) {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let (addr, channel) = self.channel_to(to)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = RaftClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        self.rt()
            .spawn(forward_loop(to, addr.clone(), client, rx, self.raft()));
        fw.insert(to, (addr, tx.clone()));
        Some(tx)
    }

    fn sender(&self, to: u64) -> Option<mpsc::Sender<Message>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tx)) = peers.get(&to) {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let (addr, channel) = self.channel_to(to)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let raft = self.raft();
        self.rt().spawn(peer_loop(
            to,
            addr.clone(),
            RaftClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
            rx,
            raft,
        ));
        peers.insert(to, (addr, tx.clone()));
        Some(tx)
    }
}

/// Whether the peer at `addr` is certainly gone: its host refuses a TCP connection
/// (nothing listens on the port). A broken, late or timed-out stream is no proof (a
/// peer starved of CPU under load looks the same); a refusal is, and only it lets a
/// follower drop its leader's lease early ([`RaftHandle::leader_lost`]).
pub async fn gone(addr: &str) -> bool {
    let probe = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Keeps one `Raft.Stream` open to the peer and writes whatever queued up as one batch.
/// When the stream breaks (the peer went away), raft hears that the peer is unreachable
/// at once (a follower whose leader it was campaigns early), queued messages are dropped
/// (raft resends what matters) and the stream is reopened after a pause. Snapshots go as
/// unary `Raft.Send` calls: raft needs to know whether they arrived.
async fn peer_loop(
    to: u64,
    addr: String,
    client: RaftClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Message>,
    raft: Option<RaftHandle>,
) {
    let mut buf = Vec::with_capacity(BATCH);
    let mut pause = Duration::from_millis(100);
    loop {
        let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(STREAM_QUEUE);
        let mut c = client.clone();
        let call = async move {
            c.stream(tokio_stream::wrappers::ReceiverStream::new(stream_rx))
                .await
        };
        tokio::pin!(call);
        let opened = std::time::Instant::now();
        let why = loop {
            tokio::select! {
                res = &mut call => break match res {
                    Ok(_) => "the peer ended the stream".to_string(),
                    Err(s) => s.message().to_string(),
                },
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    let mut batch = RaftBatch::default();
                    for m in buf.drain(..) {
                        if m.get_msg_type() == MessageType::MsgSnapshot {
                            send_snapshot(to, &addr, &client, m, raft.as_ref()).await;
                            continue;
                        }
                        match m.write_to_bytes() {
                            Ok(b) => batch.messages.push(b),
                            Err(e) => tracing::error!(error = %e, "encoding raft message"),
                        }
                    }
                    if !batch.messages.is_empty() && stream_tx.try_send(batch).is_err() {
                        tracing::debug!(peer = to, "raft stream backed up; batch dropped");
                    }
                }
            }
        };
        tracing::debug!(peer = to, %addr, error = %why, "raft stream to peer broke");
        if let Some(r) = &raft {
            r.report_unreachable(to);
            if gone(&addr).await {
                r.leader_lost(to);
            }
        }
        // Back off while the peer stays down; a stream that lived a while starts over.
        pause = if opened.elapsed() > Duration::from_secs(2) {
            Duration::from_millis(100)
        } else {
            (pause * 2).min(Duration::from_millis(800))
        };
        tokio::time::sleep(pause).await;
        while rx.try_recv().is_ok() {}
    }
}

/// One snapshot, as a unary call whose outcome raft is told.
async fn send_snapshot(
    to: u64,
    addr: &str,
    client: &RaftClient<tonic::transport::Channel>,
    m: Message,
    raft: Option<&RaftHandle>,
) {
    let batch = match m.write_to_bytes() {
        Ok(b) => RaftBatch { messages: vec![b] },
        Err(e) => {
            tracing::error!(error = %e, "encoding raft snapshot");
            return;
        }
    };
    let res = tokio::time::timeout(Duration::from_secs(30), client.clone().send(batch)).await;
    let ok = matches!(res, Ok(Ok(_)));
    if !ok {
        let why = match res {
            Ok(Err(s)) => s.message().to_string(),
            _ => "timed out".into(),
        };
        tracing::debug!(peer = to, %addr, error = %why, "sending a snapshot failed");
    }
    if let Some(r) = raft {
        r.report_snapshot(to, ok);
        if !ok {
            r.report_unreachable(to);
        }
    }
}

/// Sends queued proposals to the leader `to` in batches, at most [`FORWARD_INFLIGHT`]
/// calls at a time, and hands each its result.
async fn forward_loop(
    to: u64,
    addr: String,
    client: RaftClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Pending>,
    raft: Option<RaftHandle>,
) {
    let inflight = Arc::new(Semaphore::new(FORWARD_INFLIGHT));
    let mut buf = Vec::with_capacity(FORWARD_BATCH);
    loop {
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut buf, FORWARD_BATCH).await == 0 {
            return;
        }
        let mut req = pb::ForwardBatch::default();
        let mut replies = Vec::with_capacity(buf.len());
        for (p, reply) in buf.drain(..) {
            match serde_json::to_vec(&p) {
                Ok(b) => {
                    req.proposals.push(b);
                    replies.push(reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(RaftError::Encode(e)));
                }
            }
        }
        let mut client = client.clone();
        let raft = raft.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let n = replies.len();
            let fail = |replies: Vec<oneshot::Sender<_>>, why: String| {
                for r in replies {
                    let _ = r.send(Err(RaftError::Forward(why.clone())));
                }
            };
            match tokio::time::timeout(FORWARD_TIMEOUT, client.forward(req)).await {
                Ok(Ok(resp)) => {
                    let results = resp.into_inner().results;
                    if results.len() != n {
                        return fail(
                            replies,
                            format!("the leader answered {} of {n} proposals", results.len()),
                        );
                    }
                    for (r, reply) in results.into_iter().zip(replies) {
                        let _ = reply.send(result_from_pb(r));
                    }
                }
                Ok(Err(s)) => {
                    tracing::debug!(leader = to, error = %s.message(), "forwarding to the leader failed");
                    // A broken connection: the leader is likely gone.
                    if s.code() == tonic::Code::Unavailable {
                        if let Some(r) = &raft {
                            if gone(&addr).await {
                                r.leader_lost(to);
                            }
                        }
                    }
                    fail(replies, s.message().to_string());
                }
                Err(_) => fail(replies, format!("no answer within {FORWARD_TIMEOUT:?}")),
            }
        });
    }
}

impl Transport for GrpcTransport {
    fn forward(&self, _from: u64, to: u64, p: Proposal) -> Forwarded {
        let (tx, rx) = oneshot::channel();
        let queued = match self.forwarder(to) {
            Some(q) => q
                .try_send((p, tx))
                .map_err(|_| "the forwarding queue is full".to_string()),
            None => Err(format!("no address is known for leader {to:x}")),
        };
        Box::pin(async move {
            queued.map_err(RaftError::Forward)?;
            rx.await
                .unwrap_or_else(|_| Err(RaftError::Forward("the forwarder stopped".into())))
        })
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            match self.sender(to) {
                Some(tx) => {
                    if tx.try_send(m).is_err() {
                        tracing::debug!(peer = to, "raft queue full; message dropped");
                    }
                }
                None => {
                    if let Some(r) = self.raft() {
                        r.report_unreachable(to);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gone;

    #[tokio::test]
    async fn only_a_refused_connection_proves_a_peer_gone() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        assert!(
            !gone(&addr).await,
            "a listening peer, even one that never accepts"
        );
        drop(listener);
        assert!(gone(&addr).await, "nothing listens on the port any more");
    }
}
