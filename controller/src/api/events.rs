//! Cluster events served and followed: [`feed`] gives a node every event at or after a
//! time, then the live ones, from its own state machine on a manager or over the
//! mutual-TLS cluster port from a manager ([`EventsApi`]) on a worker, reconnecting (to
//! any manager) without repeating what was already delivered.

use crate::model::events::ClusterEvent;
use crate::orchestrator::membership::Membership;
use skiff_proto::cluster as pb;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Cluster events at or after `since`, then every new one.
pub struct Feed {
    pub past: Vec<ClusterEvent>,
    /// `None` when not following.
    pub live: Option<mpsc::Receiver<ClusterEvent>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("no manager reachable for cluster events: {0}")]
    Unreachable(String),
}

/// The cluster events since `since` (0: none), and with `follow` the ones that come
/// after: from this node's own state machine on a manager, from a manager otherwise.
pub async fn feed(
    cluster: Arc<dyn Membership>,
    since: i64,
    follow: bool,
) -> Result<Feed, FeedError> {
    if let Some(h) = cluster.raft().filter(|h| !h.is_stopped()) {
        // Everything committed before the call is replayed (not just what this manager
        // happened to have applied); a cluster without quorum still gets what is here.
        if let Err(e) = h.read_barrier().await {
            tracing::debug!(error = %e, "events: read barrier failed; replaying local state");
        }
        let (past, rx) = h
            .store()
            .read(|sm| (sm.cluster_events(since), sm.subscribe_cluster_events()));
        let live = follow.then(|| forward_local(rx));
        return Ok(Feed { past, live });
    }
    remote_feed(cluster, since, follow).await
}

/// Turns a state machine subscription into an owned channel.
fn forward_local(mut rx: broadcast::Receiver<ClusterEvent>) -> mpsc::Receiver<ClusterEvent> {
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let r = tokio::select! {
                r = rx.recv() => r,
                _ = tx.closed() => return,
            };
            match r {
                Ok(e) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cluster events subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    out
}

type EventStream = tonic::Streaming<pb::ClusterEventsBatch>;

/// How long opening a manager's stream may take (a dead manager's address must not
/// hold `skiff events` up).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

async fn open(cluster: &dyn Membership, since: i64, follow: bool) -> Result<EventStream, String> {
    let ch = cluster.manager_channel().map_err(|e| e.to_string())?;
    let mut c = pb::events_client::EventsClient::new(ch);
    let call = c.stream(pb::ClusterEventsRequest {
        since_unix_nanos: since,
        follow,
    });
    let s = tokio::time::timeout(OPEN_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer from a manager within {OPEN_TIMEOUT:?}"))?
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(s)
}

async fn remote_feed(
    cluster: Arc<dyn Membership>,
    since: i64,
    follow: bool,
) -> Result<Feed, FeedError> {
    let mut s = open(&*cluster, since, follow)
        .await
        .map_err(FeedError::Unreachable)?;
    // The first message is the replay, even when empty.
    // Longer than the manager's read barrier may take without a quorum.
    let first = tokio::time::timeout(OPEN_TIMEOUT * 3, s.message())
        .await
        .map_err(|_| FeedError::Unreachable("the manager sent no replay".into()))?;
    let past: Vec<ClusterEvent> = match first {
        Ok(Some(b)) => b.events.into_iter().map(ClusterEvent::from_pb).collect(),
        Ok(None) => vec![],
        Err(e) => return Err(FeedError::Unreachable(e.message().to_string())),
    };
    if !follow {
        return Ok(Feed { past, live: None });
    }
    let (tx, rx) = mpsc::channel(256);
    // Where a reconnect resumes: the last event delivered, else where this feed began.
    let mut last = past
        .last()
        .map(|e| e.time_unix_nanos)
        .unwrap_or(if since > 0 { since } else { now_nanos() });
    let mut at_last: HashSet<_> = past
        .iter()
        .filter(|e| e.time_unix_nanos == last)
        .map(ClusterEvent::key)
        .collect();
    tokio::spawn(
        async move {
            let mut stream = Some(s);
            let mut replay = false;
            loop {
                let Some(s) = stream.as_mut() else {
                    // Reconnect (perhaps to another manager) and resume after `last`.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if tx.is_closed() {
                        return;
                    }
                    match open(&*cluster, last, true).await {
                        Ok(s) => {
                            stream = Some(s);
                            replay = true;
                        }
                        Err(e) => tracing::debug!(error = %e, "events: reconnecting"),
                    }
                    continue;
                };
                let msg = tokio::select! {
                    m = s.message() => m,
                    _ = tx.closed() => return,
                };
                let batch = match msg {
                    Ok(Some(b)) => b,
                    Ok(None) | Err(_) => {
                        stream = None;
                        continue;
                    }
                };
                let was_replay = std::mem::take(&mut replay);
                for e in batch.events.into_iter().map(ClusterEvent::from_pb) {
                    // A replay after a reconnect starts at `last`: skip what was sent.
                    if was_replay
                        && (e.time_unix_nanos < last
                            || (e.time_unix_nanos == last && at_last.contains(&e.key())))
                    {
                        continue;
                    }
                    if e.time_unix_nanos != last {
                        last = e.time_unix_nanos;
                        at_last.clear();
                    }
                    at_last.insert(e.key());
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
        }
        .instrument(tracing::debug_span!("cluster_events")),
    );
    Ok(Feed {
        past,
        live: Some(rx),
    })
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// The `Events` service on the mutual-TLS cluster port: any node of the cluster (its
/// certificate says so) may follow a manager's cluster events.
#[derive(Clone)]
pub struct EventsApi {
    pub cluster: Arc<dyn Membership>,
}

type BatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ClusterEventsBatch, Status>> + Send>>;

#[tonic::async_trait]
impl pb::events_server::Events for EventsApi {
    type StreamStream = BatchStream;

    async fn stream(
        &self,
        req: Request<pb::ClusterEventsRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let caller = req
            .extensions()
            .get::<crate::tls::PeerIdentity>()
            .and_then(|p| p.node_id.clone())
            .ok_or_else(|| {
                Status::unauthenticated("a client certificate from this cluster's CA is required")
            })?;
        let r = req.into_inner();
        let h = self
            .cluster
            .raft()
            .filter(|h| !h.is_stopped())
            .ok_or_else(|| Status::failed_precondition("this node is not a manager"))?;
        if h.store().read(|sm| sm.is_removed(&caller)) {
            return Err(Status::permission_denied(format!(
                "node {caller} was removed from the cluster"
            )));
        }
        let feed = feed(self.cluster.clone(), r.since_unix_nanos, r.follow)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::debug_span!("events_stream", node_id = %caller);
        tokio::spawn(
            async move {
                let first = pb::ClusterEventsBatch {
                    events: feed.past.iter().map(ClusterEvent::to_pb).collect(),
                };
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
                let Some(mut live) = feed.live else { return };
                while let Some(e) = live.recv().await {
                    let b = pb::ClusterEventsBatch {
                        events: vec![e.to_pb()],
                    };
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
