//! Raft messages between managers over mutual-TLS gRPC: one sender task per peer keeps
//! messages in order, batches whatever queued up into one `Raft.Send` call, and reports
//! unreachable peers and snapshot outcomes back to raft. A full queue drops messages;
//! raft retransmits.

use crate::consensus::{RaftHandle, Transport};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use skiff_proto::cluster::raft_client::RaftClient;
use skiff_proto::cluster::RaftBatch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 8192;
const BATCH: usize = 512;

pub struct GrpcTransport {
    /// raft ID → advertised address, from the state machine's manager records.
    addrs: RwLock<HashMap<u64, String>>,
    peers: Mutex<HashMap<u64, (String, mpsc::Sender<Message>)>>,
    tls: RwLock<Arc<rustls::ClientConfig>>,
    raft: RwLock<Option<RaftHandle>>,
}

impl GrpcTransport {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport {
            addrs: RwLock::default(),
            peers: Mutex::default(),
            tls: RwLock::new(tls),
            raft: RwLock::new(None),
        })
    }

    /// The raft node to report to (replaced when a demoted node is promoted again).
    pub fn set_raft(&self, h: RaftHandle) {
        *self.raft.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn raft(&self) -> Option<RaftHandle> {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the TLS client identity (after a certificate renewal); new connections use it.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Updates where peers are; a changed address restarts that peer's connection.
    pub fn set_addrs(&self, addrs: HashMap<u64, String>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|id, (addr, _)| addrs.get(id) == Some(addr));
        *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    fn sender(&self, to: u64) -> Option<mpsc::Sender<Message>> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, tx)) = peers.get(&to) {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let addr = self
            .addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .cloned()?;
        let tls = self.tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let channel = match crate::tls::channel(&addr, tls) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(peer = to, %addr, error = %e, "bad peer address");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let raft = self.raft();
        tokio::spawn(peer_loop(
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

async fn peer_loop(
    to: u64,
    addr: String,
    mut client: RaftClient<tonic::transport::Channel>,
    mut rx: mpsc::Receiver<Message>,
    raft: Option<RaftHandle>,
) {
    let mut buf = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut buf, BATCH).await > 0 {
        let snapshot = buf
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        let mut batch = RaftBatch::default();
        for m in buf.drain(..) {
            match m.write_to_bytes() {
                Ok(b) => batch.messages.push(b),
                Err(e) => tracing::error!(error = %e, "encoding raft message"),
            }
        }
        let res = tokio::time::timeout(
            Duration::from_secs(if snapshot { 30 } else { 3 }),
            client.send(batch),
        )
        .await;
        let ok = matches!(res, Ok(Ok(_)));
        if !ok {
            let why = match res {
                Ok(Err(s)) => s.message().to_string(),
                _ => "timed out".into(),
            };
            tracing::debug!(peer = to, %addr, error = %why, "raft send failed");
        }
        if let Some(r) = &raft {
            if snapshot {
                r.report_snapshot(to, ok);
            }
            if !ok {
                r.report_unreachable(to);
                // Drop what queued during the failure; raft resends what matters.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Transport for GrpcTransport {
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
