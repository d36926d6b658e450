//! Cluster events (`skiff events --filter type=service|node`): service create/update/
//! remove and node join/ready/down/update/remove, as Docker reports them from a swarm.
//!
//! They are derived inside the state machine's apply path ([`derive_node`],
//! [`derive_object`]), from the old and new value of what a proposal changed, stamped
//! with the proposal's own time (`Proposal::at`). Every manager applies the same log, so
//! every manager derives the same events with the same timestamps, and the most recent
//! [`HISTORY`] are kept in the replicated store: a manager that restarts, or receives a
//! snapshot, still replays them for `--since`.
//!
//! Workers have no state machine: `api::events::feed` reaches a manager over the
//! mutual-TLS cluster port and follows its stream. This module is the events' data and
//! their derivation only (pure functions of a change).

use super::node::Node;
use super::object::{Action, Object};
use super::services::{Mode, Service, KIND_SERVICE};
use serde::{Deserialize, Serialize};
use skiff_proto::cluster as pb;
use std::collections::BTreeMap;

/// How many cluster events the replicated store keeps for replay.
pub const HISTORY: usize = 1000;

/// One cluster event, as recorded in the store and streamed to nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterEvent {
    /// From the proposal's `at` (the proposer's clock), so identical on every manager.
    pub time_unix_nanos: i64,
    /// Raft index of the entry that caused it.
    pub index: u64,
    /// `service` or `node`.
    pub kind: String,
    pub action: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl ClusterEvent {
    fn new(at: i64, index: u64, kind: &str, action: &str, id: &str) -> ClusterEvent {
        ClusterEvent {
            time_unix_nanos: at,
            index,
            kind: kind.into(),
            action: action.into(),
            actor_id: id.into(),
            attributes: BTreeMap::new(),
        }
    }

    fn attr(mut self, k: &str, v: impl Into<String>) -> ClusterEvent {
        self.attributes.insert(k.into(), v.into());
        self
    }

    /// Records `k.old` / `k.new` when the value changed.
    fn changed(&mut self, k: &str, old: &str, new: &str) -> bool {
        if old == new {
            return false;
        }
        self.attributes.insert(format!("{k}.old"), old.into());
        self.attributes.insert(format!("{k}.new"), new.into());
        true
    }

    pub fn to_pb(&self) -> pb::ClusterEvent {
        pb::ClusterEvent {
            r#type: self.kind.clone(),
            action: self.action.clone(),
            actor_id: self.actor_id.clone(),
            attributes: self.attributes.clone().into_iter().collect(),
            time_unix_nanos: self.time_unix_nanos,
        }
    }

    pub fn from_pb(e: pb::ClusterEvent) -> ClusterEvent {
        ClusterEvent {
            time_unix_nanos: e.time_unix_nanos,
            index: 0,
            kind: e.r#type,
            action: e.action,
            actor_id: e.actor_id,
            attributes: e.attributes.into_iter().collect(),
        }
    }

    /// What identifies an event across a reconnect (time plus what happened to whom).
    pub fn key(&self) -> (i64, String, String, String) {
        (
            self.time_unix_nanos,
            self.kind.clone(),
            self.action.clone(),
            self.actor_id.clone(),
        )
    }
}

/// A proposal's RFC 3339 time in nanoseconds (0 if unreadable: still deterministic).
pub fn proposal_time(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// Node events for one node's change: `join` (new), `ready`/`down` (status
/// transitions), `update` (availability, role, labels, address), `remove`.
pub fn derive_node(
    at: i64,
    index: u64,
    old: Option<&Node>,
    new: Option<&Node>,
) -> Vec<ClusterEvent> {
    let ev = |n: &Node, action: &str| {
        ClusterEvent::new(at, index, "node", action, &n.id).attr("name", n.hostname.clone())
    };
    match (old, new) {
        (None, Some(n)) => vec![ev(n, "join")
            .attr("role", n.role.as_str())
            .attr("state", n.status.as_str())],
        (Some(o), None) => vec![ev(o, "remove")],
        (Some(o), Some(n)) => {
            let mut out = Vec::new();
            if o.status != n.status {
                let action = match n.status {
                    crate::model::NodeStatus::Ready => "ready",
                    crate::model::NodeStatus::Down => "down",
                    crate::model::NodeStatus::Unknown => "update",
                };
                let mut e = ev(n, action);
                e.changed("state", o.status.as_str(), n.status.as_str());
                out.push(e);
            }
            let mut e = ev(n, "update");
            let mut any = e.changed(
                "availability",
                o.availability.as_str(),
                n.availability.as_str(),
            );
            any |= e.changed("role", o.role.as_str(), n.role.as_str());
            any |= o.labels != n.labels || o.addr != n.addr || o.hostname != n.hostname;
            if any {
                out.push(e);
            }
            out
        }
        (None, None) => vec![],
    }
}

/// The service event for a change of a stored object, if it is a service: `create`,
/// `update` (with Docker's `replicas.*`, `image.*`, `updatestate.*` attributes when
/// they changed), `remove`. Other kinds (tasks, networks, secrets) yield none.
pub fn derive_object(
    at: i64,
    index: u64,
    action: Action,
    old: Option<&Object>,
    new: &Object,
) -> Option<ClusterEvent> {
    if new.kind != KIND_SERVICE {
        return None;
    }
    let name = |o: &Object| o.name.clone();
    match action {
        Action::Created => {
            Some(ClusterEvent::new(at, index, "service", "create", &new.id).attr("name", name(new)))
        }
        Action::Deleted => {
            Some(ClusterEvent::new(at, index, "service", "remove", &new.id).attr("name", name(new)))
        }
        Action::Updated => {
            let mut e =
                ClusterEvent::new(at, index, "service", "update", &new.id).attr("name", name(new));
            let decode = |o: &Object| serde_json::from_slice::<Service>(&o.spec).ok();
            if let (Some(a), Some(b)) = (old.and_then(decode), decode(new)) {
                let replicas = |s: &Service| match s.spec.mode {
                    Mode::Replicated { replicas } => replicas.to_string(),
                    Mode::Global => String::new(),
                };
                e.changed("replicas", &replicas(&a), &replicas(&b));
                e.changed("image", &a.spec.template.image, &b.spec.template.image);
                let state = |s: &Service| s.update.as_ref().map(|u| u.state.clone());
                e.changed(
                    "updatestate",
                    &state(&a).unwrap_or_default(),
                    &state(&b).unwrap_or_default(),
                );
            }
            Some(e)
        }
    }
}

/// Values the event tests of this crate share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::model::{NodeStatus, ServiceSpec, UpdateStatus};

    pub(crate) fn node(status: NodeStatus) -> Node {
        Node {
            id: "n1".into(),
            hostname: "h1".into(),
            status,
            ..Default::default()
        }
    }

    pub(crate) fn service_obj(replicas: u64, image: &str, update: Option<&str>) -> Object {
        let s = Service {
            spec: ServiceSpec {
                name: "web".into(),
                mode: Mode::Replicated { replicas },
                template: crate::model::TaskTemplate {
                    image: image.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            update: update.map(|u| UpdateStatus {
                state: u.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Object {
            kind: KIND_SERVICE.into(),
            id: "s1".into(),
            name: "web".into(),
            version: 1,
            spec: serde_json::to_vec(&s).expect("json"),
            created_index: 1,
            updated_index: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{node, service_obj};
    use super::*;
    use crate::model::{Availability, NodeStatus, Role};

    #[test]
    fn node_transitions() {
        let up = node(NodeStatus::Ready);
        let join = derive_node(5, 1, None, Some(&node(NodeStatus::Unknown)));
        assert_eq!(join.len(), 1);
        assert_eq!(join[0].action, "join");
        assert_eq!(join[0].attributes["name"], "h1");
        assert_eq!(join[0].attributes["state"], "unknown");
        assert_eq!(join[0].time_unix_nanos, 5);

        let ready = derive_node(6, 2, Some(&node(NodeStatus::Unknown)), Some(&up));
        assert_eq!(ready.len(), 1, "{ready:?}");
        assert_eq!(ready[0].action, "ready");
        assert_eq!(ready[0].attributes["state.new"], "ready");

        let down = derive_node(7, 3, Some(&up), Some(&node(NodeStatus::Down)));
        assert_eq!(down[0].action, "down");
        assert_eq!(down[0].attributes["state.old"], "ready");

        let mut drained = up.clone();
        drained.availability = Availability::Drain;
        drained.role = Role::Manager;
        let upd = derive_node(8, 4, Some(&up), Some(&drained));
        assert_eq!(upd.len(), 1);
        assert_eq!(upd[0].action, "update");
        assert_eq!(upd[0].attributes["availability.new"], "drain");
        assert_eq!(upd[0].attributes["role.old"], "worker");

        // A heartbeat-only rewrite with nothing visible changed yields nothing.
        assert!(derive_node(9, 5, Some(&up), Some(&up)).is_empty());
        assert_eq!(derive_node(10, 6, Some(&up), None)[0].action, "remove");
    }

    #[test]
    fn service_changes() {
        let a = service_obj(3, "busybox", None);
        let c = derive_object(1, 1, Action::Created, None, &a).expect("event");
        assert_eq!((c.kind.as_str(), c.action.as_str()), ("service", "create"));
        assert_eq!(c.attributes["name"], "web");

        let b = service_obj(5, "busybox:2", Some("updating"));
        let u = derive_object(2, 2, Action::Updated, Some(&a), &b).expect("event");
        assert_eq!(u.action, "update");
        assert_eq!(u.attributes["replicas.old"], "3");
        assert_eq!(u.attributes["replicas.new"], "5");
        assert_eq!(u.attributes["image.new"], "busybox:2");
        assert_eq!(u.attributes["updatestate.new"], "updating");

        let r = derive_object(3, 3, Action::Deleted, None, &b).expect("event");
        assert_eq!(r.action, "remove");

        let mut task = a.clone();
        task.kind = "task".into();
        assert!(derive_object(4, 4, Action::Created, None, &task).is_none());
    }

    #[test]
    fn proposal_times_parse() {
        assert_eq!(
            proposal_time("1970-01-01T00:00:01Z"),
            1_000_000_000,
            "RFC 3339 to nanoseconds"
        );
        assert_eq!(proposal_time("garbage"), 0);
    }
}
