//! Real cluster ports on loopback (in-process members): joining with tokens, mutual TLS
//! refusals, certificate renewal, manager admission through raft over TLS.

use skiff_controller::ca::{self, JoinToken};
use skiff_controller::cluster::{Cluster, ClusterConfig};
use skiff_controller::tls;
use skiff_proto::cluster as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, name: &str) -> ClusterConfig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut c = ClusterConfig::new(dir.join(name), name.into(), "test".into());
    c.listen_addr = Some("127.0.0.1:0".parse().expect("addr"));
    c.heartbeat_period = Duration::from_millis(200);
    c.down_grace = Duration::from_millis(1000);
    c
}

async fn founder(dir: &std::path::Path) -> Arc<Cluster> {
    let c = Cluster::start(config(dir, "m1"))
        .await
        .expect("found cluster");
    let h = c.raft().expect("manager");
    assert!(
        h.wait_leader(Duration::from_secs(5)).await.is_some(),
        "founder elected"
    );
    c
}

fn token(c: &Cluster, role: &str) -> String {
    let h = c.raft().expect("manager");
    h.store().read(|sm| {
        let m = sm.meta();
        let secret = if role == "manager" {
            &m.manager_secret
        } else {
            &m.worker_secret
        };
        JoinToken::new(&ca::cert_digest(&m.ca_cert_pem).expect("digest"), secret).to_string()
    })
}

fn addr(c: &Cluster) -> String {
    c.listen_addr().expect("listening").to_string()
}

/// The founder's own advertised address must be its real port (port 0 was asked for).
async fn fix_founder_addr(c: &Arc<Cluster>) {
    let h = c.raft().expect("manager");
    let op = skiff_controller::Op::UpdateNode {
        id: c.node_id(),
        availability: None,
        label_add: Default::default(),
        label_rm: vec![],
        role: None,
        status: None,
        raft_id: None,
        addr: Some(addr(c)),
    };
    h.propose(skiff_controller::Proposal::new(vec![op]))
        .await
        .expect("set addr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_mutual_tls_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m1 = founder(dir.path()).await;
    fix_founder_addr(&m1).await;
    let a = addr(&m1);

    // A worker joins with the worker token and heartbeats.
    let mut wc = config(dir.path(), "w1");
    wc.listen_addr = None;
    wc.join = Some((a.clone(), token(&m1, "worker")));
    let w1 = Cluster::start(wc).await.expect("worker joins");
    assert!(w1.raft().is_none(), "a worker runs no raft");
    let h = m1.raft().expect("manager");
    let n = h
        .store()
        .read(|sm| sm.node(&w1.node_id()).cloned().expect("worker recorded"));
    assert_eq!(n.role.as_str(), "worker");

    // A wrong secret is refused, and says so.
    let good = JoinToken::parse(&token(&m1, "worker")).expect("parse");
    let mut bad = config(dir.path(), "w2");
    bad.listen_addr = None;
    bad.join = Some((
        a.clone(),
        JoinToken::new(&good.ca_digest, "zzzzzzzzzzzzzzzzzzzzzzzzz").to_string(),
    ));
    let err = Cluster::start(bad)
        .await
        .err()
        .expect("wrong token refused")
        .to_string();
    assert!(err.contains("invalid join token"), "{err}");

    // A token pinning another CA is refused before anything is sent.
    let mut other = config(dir.path(), "w3");
    other.listen_addr = None;
    other.join = Some((
        a.clone(),
        JoinToken::new(&"0".repeat(64), &good.secret).to_string(),
    ));
    let err = Cluster::start(other)
        .await
        .err()
        .expect("digest mismatch")
        .to_string();
    assert!(err.contains("does not match the join token"), "{err}");

    // Rotation: the old worker token stops working.
    h.propose(skiff_controller::Proposal::new(vec![
        skiff_controller::Op::RotateToken {
            role: skiff_controller::state::Role::Worker,
            secret: ca::new_secret(),
        },
    ]))
    .await
    .expect("rotate");
    let mut late = config(dir.path(), "w4");
    late.listen_addr = None;
    late.join = Some((a.clone(), good.to_string()));
    let err = Cluster::start(late)
        .await
        .err()
        .expect("rotated token refused")
        .to_string();
    assert!(err.contains("invalid join token"), "{err}");

    // No client certificate: only GetCaCert/Join work; raft is refused clearly.
    let ca_pem = m1.identity().ca_pem;
    let anon = tls::channel(&a, tls::client_config(&ca_pem, None).expect("tls")).expect("channel");
    let st = pb::raft_client::RaftClient::new(anon.clone())
        .send(pb::RaftBatch::default())
        .await
        .expect_err("no cert");
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    assert!(
        st.message().contains("client certificate"),
        "{}",
        st.message()
    );
    pb::membership_client::MembershipClient::new(anon)
        .get_ca_cert(pb::Empty {})
        .await
        .expect("CA is public");

    // A certificate from another CA fails the TLS handshake.
    let rogue_ca = ca::Ca::create("rogue").expect("ca");
    let (key, csr) = ca::new_key_and_csr().expect("csr");
    let cert = rogue_ca
        .sign_csr(&csr, &m1.node_id(), Duration::from_secs(3600))
        .expect("sign");
    let rogue = tls::Identity {
        ca_pem: ca_pem.clone(),
        cert_pem: cert,
        key_pem: key,
    };
    let ch =
        tls::channel(&a, tls::client_config(&ca_pem, Some(&rogue)).expect("tls")).expect("channel");
    assert!(
        pb::raft_client::RaftClient::new(ch)
            .send(pb::RaftBatch::default())
            .await
            .is_err(),
        "foreign CA accepted"
    );

    // A worker's certificate does not make it a raft peer.
    let wid = w1.identity();
    let ch =
        tls::channel(&a, tls::client_config(&ca_pem, Some(&wid)).expect("tls")).expect("channel");
    let st = pb::raft_client::RaftClient::new(ch)
        .send(pb::RaftBatch::default())
        .await
        .expect_err("worker is no manager");
    assert_eq!(st.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_join_over_tls_and_survive_leader_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m1 = founder(dir.path()).await;
    fix_founder_addr(&m1).await;
    let a = addr(&m1);
    let mut members = vec![m1.clone()];
    for name in ["m2", "m3"] {
        let mut c = config(dir.path(), name);
        // Fixed ports: the address is advertised at join time.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        c.listen_addr = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
        c.join = Some((a.clone(), token(&m1, "manager")));
        members.push(Cluster::start(c).await.expect("manager joins"));
    }
    let h1 = m1.raft().expect("raft");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h1.status().voters.len() != 3 {
        assert!(Instant::now() < deadline, "3 voters: {:?}", h1.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Replicated to the joiners over TLS.
    let h3 = members[2].raft().expect("raft");
    h3.read_barrier()
        .await
        .expect("linearizable read on a follower");
    assert_eq!(h3.store().read(|sm| sm.nodes().count()), 3);
    // Stop the founder's raft (as if killed): the other two elect a leader and write.
    h1.stop();
    let t0 = Instant::now();
    let h2 = members[1].raft().expect("raft");
    loop {
        let p = skiff_controller::Proposal::new(vec![skiff_controller::Op::Create {
            kind: "kv".into(),
            id: "after".into(),
            name: "after".into(),
            spec: vec![],
        }]);
        match h2.propose(p).await {
            Ok(_) => break,
            Err(e) => assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no write after leader loss: {e}"
            ),
        }
    }
    eprintln!(
        "write committed {:?} after stopping the founder",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_renew_before_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path(), "m1");
    c.cert_validity = Duration::from_secs(4);
    let m1 = Cluster::start(c).await.expect("found");
    let first = m1.identity().cert_pem;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m1.identity().cert_pem == first {
        assert!(Instant::now() < deadline, "certificate not renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_disk = std::fs::read_to_string(dir.path().join("m1/tls/node.crt")).expect("cert file");
    assert_eq!(
        on_disk,
        m1.identity().cert_pem,
        "renewed certificate persisted"
    );
    let (cn, _) = ca::cert_identity(&ca::pem_to_der(&on_disk).expect("der")).expect("identity");
    assert_eq!(cn, m1.node_id());
}
