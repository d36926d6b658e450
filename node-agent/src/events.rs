//! The agent's event stream (`skiff events`): a broadcast for live subscribers plus a
//! bounded history so `--since` can replay recent events.

use skiff_proto::engine::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::broadcast;

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
            "container" | "image" | "network" | "volume" => {
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

#[cfg(test)]
mod tests {
    use super::*;

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
