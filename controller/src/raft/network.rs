//! An in-process network between raft nodes with fault injection (after raft-rs's
//! `harness/src/network.rs`): links can be cut one way or both, nodes isolated, and
//! everything healed. Used by the controller's integration tests.

use crate::model::Proposal;
use crate::raft::consensus::{Forwarded, RaftError, RaftHandle, Transport};
use raft::prelude::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    nodes: HashMap<u64, RaftHandle>,
    /// Cut links (from, to).
    cut: HashSet<(u64, u64)>,
}

/// The shared fabric; each node gets an [`Endpoint`] as its transport.
#[derive(Clone, Default)]
pub struct Network {
    inner: Arc<Mutex<Inner>>,
}

/// One node's view of the [`Network`].
pub struct Endpoint {
    net: Network,
}

impl Network {
    pub fn endpoint(&self) -> Arc<Endpoint> {
        Arc::new(Endpoint { net: self.clone() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or replaces, after a restart) the node that receives for `id`.
    pub fn attach(&self, id: u64, h: RaftHandle) {
        self.lock().nodes.insert(id, h);
    }

    /// Detaches a node: messages to it are dropped (a crashed process).
    pub fn detach(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts the link in both directions.
    pub fn cut(&self, a: u64, b: u64) {
        let mut g = self.lock();
        g.cut.insert((a, b));
        g.cut.insert((b, a));
    }

    /// Cuts every link of `id` to `others`.
    pub fn isolate(&self, id: u64, others: &[u64]) {
        for o in others {
            if *o != id {
                self.cut(id, *o);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }
}

impl Transport for Endpoint {
    /// The leader proposes it directly; a cut link or a detached leader fails the way a
    /// broken connection would (retryable).
    fn forward(&self, from: u64, to: u64, p: Proposal) -> Forwarded {
        let g = self.net.lock();
        let leader = if g.cut.contains(&(from, to)) {
            None
        } else {
            g.nodes.get(&to).cloned()
        };
        drop(g);
        Box::pin(async move {
            match leader {
                Some(h) => h.propose_local(p).await,
                None => Err(RaftError::Forward(format!("no link to {to}"))),
            }
        })
    }

    fn send(&self, msgs: Vec<Message>) {
        let g = self.net.lock();
        for m in msgs {
            if g.cut.contains(&(m.from, m.to)) {
                continue;
            }
            if let Some(h) = g.nodes.get(&m.to) {
                let is_snap = m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot;
                let (from, to) = (m.from, m.to);
                h.step(m);
                if is_snap {
                    if let Some(sender) = g.nodes.get(&from) {
                        sender.report_snapshot(to, true);
                    }
                }
            }
        }
    }
}
