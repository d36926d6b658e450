//! The agent's event stream (`skiff events`): a broadcast for live subscribers plus a
//! bounded history so `--since` can replay recent events.
//!
//! [`stream`] merges these local events (containers, images, networks, volumes) with
//! the cluster's service and node events (`skiff_controller::events`), which come from
//! this node's state machine on a manager and from a manager on a worker.

use skiff_controller::events::ClusterEvent;
use skiff_proto::engine::{Event, EventsRequest};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use tracing::Instrument;

const HISTORY: usize = 1000;

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            history: Mutex::new(VecDeque::new()),
        }
    }
}

pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

impl EventBus {
    /// Records and broadcasts an event.
    pub fn emit(&self, kind: &str, action: &str, actor: &str, attributes: HashMap<String, String>) {
        let ev = Event {
            r#type: kind.into(),
            action: action.into(),
            actor_id: actor.into(),
            attributes,
            time_unix_nanos: now_nanos(),
        };
        tracing::debug!(r#type = kind, action, actor, "event");
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// Past events at or after `since` (nanos), and a receiver for what follows.
    pub fn subscribe(&self, since: i64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        // Subscribe under the history lock so no event falls between the two.
        let h = self.history.lock();
        let rx = self.tx.subscribe();
        let past = match h {
            Ok(h) if since > 0 => h
                .iter()
                .filter(|e| e.time_unix_nanos >= since)
                .cloned()
                .collect(),
            _ => vec![],
        };
        (past, rx)
    }
}

/// Docker's `--filter` semantics for events: same key ORs, different keys AND.
pub fn matches(ev: &Event, filters: &[String]) -> bool {
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for f in filters {
        if let Some((k, v)) = f.split_once('=') {
            by_key.entry(k).or_default().push(v);
        }
    }
    by_key.iter().all(|(k, vals)| {
        vals.iter().any(|v| match *k {
            "type" => ev.r#type == *v,
            "event" | "action" => ev.action == *v,
            "container" | "image" | "network" | "volume" | "service" | "node" => {
                ev.r#type == *k
                    && (ev.actor_id.starts_with(v)
                        || ev.attributes.get("name").map(|n| n == v).unwrap_or(false))
            }
            "label" => {
                let (lk, lv) = v.split_once('=').unwrap_or((v, ""));
                ev.attributes
                    .get(lk)
                    .map(|x| lv.is_empty() || x == lv)
                    .unwrap_or(false)
            }
            _ => true,
        })
    })
}

/// A cluster event in the Engine API's shape.
pub fn from_cluster(e: ClusterEvent) -> Event {
    Event {
        r#type: e.kind,
        action: e.action,
        actor_id: e.actor_id,
        attributes: e.attributes.into_iter().collect(),
        time_unix_nanos: e.time_unix_nanos,
    }
}

/// Replayed events (local and cluster) in time order, at or before `until` (0: all).
fn merge_past(local: Vec<Event>, cluster: Vec<ClusterEvent>, until: i64) -> Vec<Event> {
    let mut all: Vec<Event> = local
        .into_iter()
        .chain(cluster.into_iter().map(from_cluster))
        .filter(|e| until <= 0 || e.time_unix_nanos <= until)
        .collect();
    // Stable: events with one timestamp keep the order their source gave them.
    all.sort_by_key(|e| e.time_unix_nanos);
    all
}

/// `skiff events`: the replay since `since_unix_nanos`, then live events until
/// `until_unix_nanos` (0: until the client leaves), both filtered.
pub fn stream(
    bus: &EventBus,
    cluster: Option<Arc<skiff_controller::cluster::Cluster>>,
    req: EventsRequest,
) -> mpsc::Receiver<Result<Event, Status>> {
    // Subscribe before anything awaits, so no local event is missed.
    let (past, mut rx) = bus.subscribe(req.since_unix_nanos);
    let (tx, out) = mpsc::channel(256);
    let span = tracing::debug_span!(
        "events",
        since = req.since_unix_nanos,
        until = req.until_unix_nanos
    );
    tokio::spawn(
        async move {
            let until = req.until_unix_nanos;
            let follow = until <= 0 || until > now_nanos();
            let (cluster_past, mut cluster_live) = match cluster {
                Some(c) => {
                    match skiff_controller::events::feed(c, req.since_unix_nanos, follow).await {
                        Ok(f) => (f.past, f.live),
                        Err(e) => {
                            // Local events still flow; the cluster's are missing.
                            tracing::warn!(error = %e, "events: cluster events unavailable");
                            (vec![], None)
                        }
                    }
                }
                None => (vec![], None),
            };
            for ev in merge_past(past, cluster_past, until) {
                if matches(&ev, &req.filters) && tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            let deadline = (until > 0).then(|| {
                tokio::time::Instant::now()
                    + Duration::from_nanos((until - now_nanos()).max(0) as u64)
            });
            loop {
                let cluster_next = async {
                    match cluster_live.as_mut() {
                        Some(l) => l.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let expired = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let ev = tokio::select! {
                    r = rx.recv() => match r {
                        Ok(ev) => ev,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    c = cluster_next => match c {
                        Some(e) => from_cluster(e),
                        None => {
                            cluster_live = None;
                            continue;
                        }
                    },
                    _ = expired => return,
                    _ = tx.closed() => return,
                };
                if until > 0 && ev.time_unix_nanos > until {
                    continue;
                }
                if matches(&ev, &req.filters) && tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_merges_local_and_cluster_events_in_time_order() {
        let local = |t: i64, action: &str| Event {
            r#type: "container".into(),
            action: action.into(),
            actor_id: "c".into(),
            time_unix_nanos: t,
            ..Default::default()
        };
        let cluster = |t: i64, action: &str| ClusterEvent {
            time_unix_nanos: t,
            index: 1,
            kind: "service".into(),
            action: action.into(),
            actor_id: "s".into(),
            attributes: [("name".to_string(), "web".to_string())].into(),
        };
        let merged = merge_past(
            vec![local(10, "create"), local(30, "start"), local(50, "die")],
            vec![cluster(20, "create"), cluster(40, "update")],
            45,
        );
        let order: Vec<_> = merged
            .iter()
            .map(|e| (e.time_unix_nanos, e.r#type.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                (10, "container", "create"),
                (20, "service", "create"),
                (30, "container", "start"),
                (40, "service", "update"),
            ],
            "sorted by time, cut at --until"
        );
        assert!(matches(&merged[1], &["type=service".into()]));
        assert!(matches(&merged[1], &["service=web".into()]));
        assert!(matches(
            &merged[1],
            &["service=s".into(), "event=create".into()]
        ));
        assert!(!matches(&merged[1], &["node=web".into()]));
        assert!(!matches(&merged[0], &["type=service".into()]));
    }

    #[tokio::test]
    async fn stream_replays_then_follows_until() {
        let bus = EventBus::default();
        let start = now_nanos();
        bus.emit("container", "create", "a", HashMap::new());
        let until = now_nanos() + 300_000_000;
        let mut rx = stream(
            &bus,
            None,
            EventsRequest {
                since_unix_nanos: start,
                until_unix_nanos: until,
                filters: vec!["type=container".into()],
            },
        );
        bus.emit("image", "tag", "i", HashMap::new());
        bus.emit("container", "start", "a", HashMap::new());
        let mut got = vec![];
        while let Some(ev) = rx.recv().await {
            got.push(ev.expect("event").action);
        }
        // The stream ended by itself at --until.
        assert_eq!(got, vec!["create", "start"]);
    }

    #[test]
    fn filters_and_history() {
        let bus = EventBus::default();
        let start = now_nanos();
        bus.emit(
            "container",
            "start",
            "abc123",
            [("name".to_string(), "web".to_string())].into(),
        );
        bus.emit("image", "tag", "sha256:1", HashMap::new());
        let (past, _) = bus.subscribe(start);
        assert_eq!(past.len(), 2);
        assert!(matches(&past[0], &["type=container".into()]));
        assert!(!matches(&past[1], &["type=container".into()]));
        assert!(matches(
            &past[0],
            &["container=web".into(), "event=start".into()]
        ));
        assert!(!matches(
            &past[0],
            &["container=web".into(), "event=die".into()]
        ));
        assert!(matches(
            &past[1],
            &["type=container".into(), "type=image".into()]
        ));
    }
}
