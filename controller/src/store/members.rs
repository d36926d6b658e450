//! Who is in the cluster, as the nodes that serve images need it: every node, worker
//! or manager, serves its images to the others, refusing nodes that are not current
//! members, and a node missing an image asks the members that serve.
//!
//! Managers read the replicated state; a worker holds the copy the leader sends on its
//! heartbeat stream (on the stream's first response and whenever it changes).

use super::StateMachine;
pub use crate::model::Member;
use crate::model::{Node, NodeStatus};
use skiff_proto::cluster as pb;

/// Where `n` serves its images: at its data address on the port it reported when it
/// has no cluster port, else at its cluster address (managers; workers started with
/// `--listen-addr`); empty when neither is known.
pub fn image_addr(n: &Node) -> String {
    let port = n.description.image_share_port;
    if port != 0 && !n.data_addr.is_empty() {
        return match n.data_addr.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{}:{port}", n.data_addr),
        };
    }
    n.addr.clone()
}

/// The current members (removed nodes are gone from the state), sorted by node ID.
pub fn of_state(sm: &StateMachine) -> Vec<Member> {
    let mut v: Vec<Member> = sm
        .nodes()
        .map(|n| Member {
            node_id: n.id.clone(),
            role: n.role,
            ready: n.status == NodeStatus::Ready,
            image_addr: image_addr(n),
            data_addr: n.data_addr.clone(),
        })
        .collect();
    v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    v
}

/// The list as the heartbeat stream carries it.
/// The current members, derived once per change of the state and shared by every
/// heartbeat stream (each compares it only when it is a new derivation).
pub struct MemberList(pub Vec<Member>);

pub fn shared(sm: &StateMachine) -> std::sync::Arc<MemberList> {
    sm.memo_nodes(|sm| MemberList(of_state(sm)))
}

pub fn to_pb(members: &[Member]) -> pb::Members {
    pb::Members {
        nodes: members.iter().cloned().map(Into::into).collect(),
    }
}

/// The list a heartbeat carried.
pub fn from_pb(members: &pb::Members) -> Vec<Member> {
    members.nodes.iter().cloned().map(Into::into).collect()
}

/// Whether the node `id` may fetch images from this node: `Err` with the reason when it
/// is not a current member, or when the list is not known yet (fail closed).
pub fn check_member(members: Option<&[Member]>, id: &str) -> Result<(), String> {
    match members {
        None => Err("this node has not heard the cluster's member list yet; retry shortly".into()),
        Some(ms) if ms.iter().any(|m| m.node_id == id) => Ok(()),
        Some(_) => Err(format!(
            "node {id} is not a current member of the cluster (removed?); its certificate is refused"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn node(id: &str, addr: &str, data: &str, port: u16) -> Node {
        let mut n = Node {
            id: id.into(),
            addr: addr.into(),
            data_addr: data.into(),
            ..Default::default()
        };
        n.description.image_share_port = port;
        n
    }

    #[test]
    fn a_node_serves_on_its_share_port_else_on_its_cluster_port() {
        assert_eq!(
            image_addr(&node("w", "", "10.0.0.7", 7946)),
            "10.0.0.7:7946"
        );
        assert_eq!(
            image_addr(&node("w", "", "fd00::7", 7946)),
            "[fd00::7]:7946"
        );
        assert_eq!(
            image_addr(&node("m", "10.0.0.1:2377", "10.0.0.1", 0)),
            "10.0.0.1:2377"
        );
        assert_eq!(image_addr(&node("w", "", "10.0.0.7", 0)), "");
        assert_eq!(image_addr(&node("w", "", "", 7946)), "");
    }

    #[test]
    fn only_listed_members_pass_and_an_unknown_list_refuses_everyone() {
        let ms = vec![Member {
            node_id: "a".into(),
            role: Role::Worker,
            ready: true,
            ..Default::default()
        }];
        assert!(check_member(Some(&ms), "a").is_ok());
        let err = check_member(Some(&ms), "b").expect_err("not a member");
        assert!(err.contains("not a current member"), "{err}");
        assert!(check_member(None, "a").is_err());
        assert_eq!(from_pb(&to_pb(&ms)), ms);
    }
}
