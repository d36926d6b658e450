//! Who may talk to a cluster, end to end on real agents: through the mutual-TLS cluster
//! port, a process with no client certificate, with a certificate of another cluster's
//! CA, or with the certificate of a removed (revoked) node can neither read nor change
//! anything; a worker's certificate cannot use the managers' log relay; and a non-root
//! user cannot use the agent's unix socket.

mod common;
#[path = "common/cluster.rs"]
mod harness;

use harness::{wait_until, Member};
use skiff_controller::{ca, tls};
use skiff_proto::cluster as cpb;
use skiff_proto::orchestrator as opb;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;
use tonic::Code;

/// A member's node identity as its agent stored it.
fn identity(m: &Member) -> tls::Identity {
    let d = m.root().join("cluster/tls");
    let read = |f: &str| std::fs::read_to_string(d.join(f)).expect("tls file");
    tls::Identity {
        ca_pem: read("ca.crt"),
        cert_pem: read("node.crt"),
        key_pem: read("node.key"),
    }
}

fn channel(port: u16, ca_pem: &str, id: Option<&tls::Identity>) -> tonic::transport::Channel {
    tls::channel(
        &format!("127.0.0.1:{port}"),
        tls::client_config(ca_pem, id).expect("tls config"),
    )
    .expect("channel")
}

/// One probe's outcome: the call's, or DeadlineExceeded when it hangs.
async fn call(
    fut: impl std::future::Future<Output = Result<(), tonic::Status>>,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer")))
}

/// A unary call's outcome without its answer.
fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    r.map(|_| ())
}

/// Ok only if the server stream the call opens yields a first message.
async fn first<T>(
    opened: impl std::future::Future<
        Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    >,
) -> Result<(), tonic::Status> {
    opened
        .await?
        .into_inner()
        .message()
        .await?
        .map(|_| ())
        .ok_or_else(|| tonic::Status::cancelled("empty"))
}

/// Calls every RPC of the cluster port that reads or changes state; each result is
/// Ok only if the server answered with data.
async fn probe(ch: tonic::transport::Channel) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut raft = cpb::raft_client::RaftClient::new(ch.clone());
    let mut mem = cpb::membership_client::MembershipClient::new(ch.clone());
    let mut disp = opb::dispatcher_client::DispatcherClient::new(ch.clone());
    let mut ev = cpb::events_client::EventsClient::new(ch.clone());
    // The cluster state API is only on the unix socket, never on the port.
    let mut api = cpb::cluster_client::ClusterClient::new(ch);
    let (_, csr) = ca::new_key_and_csr().expect("csr");
    vec![
        (
            "Raft.Send",
            call(async { ok(raft.send(cpb::RaftBatch::default()).await) }).await,
        ),
        (
            "Raft.Stream",
            call(async {
                ok(raft
                    .stream(tokio_stream::iter(vec![cpb::RaftBatch::default()]))
                    .await)
            })
            .await,
        ),
        (
            "Raft.Forward",
            call(async {
                ok(raft
                    .forward(cpb::ForwardBatch {
                        proposals: vec![b"{}".to_vec()],
                    })
                    .await)
            })
            .await,
        ),
        (
            "Membership.RenewCertificate",
            call(async {
                ok(mem
                    .renew_certificate(cpb::RenewRequest {
                        csr_pem: csr.clone().into_bytes(),
                    })
                    .await)
            })
            .await,
        ),
        (
            "Membership.AddManager",
            call(async {
                ok(mem
                    .add_manager(cpb::AddManagerRequest {
                        addr: String::new(),
                        replace: true,
                    })
                    .await)
            })
            .await,
        ),
        (
            "Membership.Join (bogus token)",
            call(async {
                ok(mem
                    .join(cpb::JoinRequest {
                        token: format!("SWMTKN-1-{}-0123456789abcdefghijklmno", "0".repeat(64)),
                        csr_pem: csr.clone().into_bytes(),
                        hostname: "intruder".into(),
                        ..Default::default()
                    })
                    .await)
            })
            .await,
        ),
        (
            "Membership.Heartbeat",
            call(first(mem.heartbeat(tokio_stream::iter(vec![
                cpb::HeartbeatRequest {
                    node_id: "intruder".into(),
                    ..Default::default()
                },
            ]))))
            .await,
        ),
        (
            "Dispatcher.Assignments",
            call(first(disp.assignments(opb::AssignmentsRequest::default()))).await,
        ),
        (
            "Dispatcher.UpdateTaskStatus",
            call(async {
                ok(disp
                    .update_task_status(opb::UpdateTaskStatusRequest {
                        task_id: "x".into(),
                        version: 1,
                        status: Some(opb::TaskStatus {
                            state: opb::TaskState::Running as i32,
                            ..Default::default()
                        }),
                    })
                    .await)
            })
            .await,
        ),
        (
            "Dispatcher.LogSubscriptions",
            call(first(
                disp.log_subscriptions(opb::LogSubscriptionsRequest {}),
            ))
            .await,
        ),
        (
            "Dispatcher.PublishLogs",
            call(async {
                ok(disp
                    .publish_logs(tokio_stream::iter(vec![opb::LogMessages {
                        subscription_id: "x".into(),
                        ..Default::default()
                    }]))
                    .await)
            })
            .await,
        ),
        (
            "Dispatcher.SubscribeLogs",
            call(first(disp.subscribe_logs(opb::ServiceLogsRequest {
                service: "x".into(),
                ..Default::default()
            })))
            .await,
        ),
        (
            "Events.Stream",
            call(first(ev.stream(cpb::ClusterEventsRequest {
                since_unix_nanos: 1,
                follow: false,
            })))
            .await,
        ),
        (
            "Cluster.List",
            call(async {
                ok(api
                    .list(cpb::ListRequest {
                        kind: "service".into(),
                    })
                    .await)
            })
            .await,
        ),
    ]
}

/// Asserts that every probed RPC failed, with `code` where one is given.
fn all_refused(what: &str, res: &[(&str, Result<(), tonic::Status>)], code: Option<Code>) {
    for (rpc, r) in res {
        let st = match r {
            Ok(()) => panic!("{what}: {rpc} answered"),
            Err(st) => st,
        };
        if *rpc == "Cluster.List" {
            if code.is_some() {
                assert!(
                    matches!(st.code(), Code::Unimplemented | Code::PermissionDenied),
                    "{what}: {rpc}: {st:?}"
                );
            }
            continue;
        }
        if *rpc == "Membership.Join (bogus token)" {
            // Joining needs no certificate; a token that buys nothing is refused.
            if code.is_some() {
                assert!(
                    matches!(st.code(), Code::PermissionDenied | Code::InvalidArgument),
                    "{what}: {rpc}: {st:?}"
                );
            }
            continue;
        }
        if let Some(c) = code {
            assert_eq!(st.code(), c, "{what}: {rpc}: {st:?}");
        }
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn the_cluster_port_refuses_missing_foreign_and_revoked_certificates() {
    common::require_root();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Channels connect lazily on the runtime.
    let _enter = rt.enter();
    let m = Member::start(true, None);
    let port = m.port.expect("port");
    let wtoken = m
        .cmd(&["cluster", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    let w = Member::start(false, Some((port, wtoken)));
    let wid = w.node_id();
    let ca_pem = identity(&m).ca_pem;

    // A legitimate node's certificate reads its assignments: the probe can succeed.
    let good = channel(port, &ca_pem, Some(&identity(&w)));
    let res = rt.block_on(probe(good.clone()));
    let assignments = res
        .iter()
        .find(|(n, _)| *n == "Dispatcher.Assignments")
        .expect("probed");
    assert!(assignments.1.is_ok(), "a member's certificate: {res:?}");
    // A worker's certificate is a member's, but only managers may relay log requests.
    let relay = res
        .iter()
        .find(|(n, _)| *n == "Dispatcher.SubscribeLogs")
        .expect("probed");
    assert_eq!(
        relay.1.as_ref().err().map(|s| s.code()),
        Some(Code::PermissionDenied),
        "a worker's certificate: {res:?}"
    );

    // No client certificate: nothing but the public CA certificate.
    let anon = channel(port, &ca_pem, None);
    all_refused(
        "no certificate",
        &rt.block_on(probe(anon.clone())),
        Some(Code::Unauthenticated),
    );
    rt.block_on(async {
        cpb::membership_client::MembershipClient::new(anon)
            .get_ca_cert(cpb::Empty {})
            .await
            .expect("the CA certificate is public (joiners pin its digest)");
    });

    // A certificate of another cluster's CA (a real second cluster's node), and one a
    // rogue CA forged for a real node ID: the TLS handshake fails, so no call is made.
    let other = Member::start(true, None);
    let foreign = identity(&other);
    let ch = channel(port, &ca_pem, Some(&foreign));
    all_refused(
        "another cluster's certificate",
        &rt.block_on(probe(ch)),
        None,
    );
    let rogue_ca = ca::Ca::create("rogue").expect("ca");
    let (key, csr) = ca::new_key_and_csr().expect("csr");
    let forged = tls::Identity {
        ca_pem: ca_pem.clone(),
        cert_pem: rogue_ca
            .sign_csr(&csr, &m.node_id(), Duration::from_secs(3600))
            .expect("sign"),
        key_pem: key,
    };
    all_refused(
        "a forged certificate",
        &rt.block_on(probe(channel(port, &ca_pem, Some(&forged)))),
        None,
    );
    assert!(
        m.log().contains("TLS handshake failed"),
        "the manager logs refused handshakes"
    );

    // Revocation: `node rm` revokes the node's certificate, also on a connection
    // that was opened (and used) before the removal.
    m.cmd(&["node", "rm", "--force", &wid]);
    let res = rt.block_on(probe(good));
    all_refused(
        "a removed node (open connection)",
        &res,
        Some(Code::PermissionDenied),
    );
    for (rpc, r) in &res {
        if let Err(st) = r {
            if st.code() == Code::PermissionDenied && !rpc.starts_with("Membership.Join") {
                assert!(st.message().contains("removed"), "{rpc}: {}", st.message());
            }
        }
    }
    let fresh = channel(port, &ca_pem, Some(&identity(&w)));
    all_refused(
        "a removed node (new connection)",
        &rt.block_on(probe(fresh)),
        Some(Code::PermissionDenied),
    );
    // The removed agent learns it and stops trying with that identity.
    wait_until(
        "the removed worker is told",
        Duration::from_secs(10),
        || w.root().join("cluster/removed").exists(),
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_non_root_user_cannot_use_the_agent_socket() {
    common::require_root();
    let m = Member::start(false, None);
    let sock = m.dir.path().join("s.sock");
    let meta = std::fs::metadata(&sock).expect("socket");
    assert_eq!(meta.uid(), 0, "the socket is root's");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "the socket is rw for root and its group only"
    );
    // Let `nobody` reach the socket file, so only the socket's own mode stands in the way,
    // and run a copy of the CLI it can execute.
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod dir");
    let bin_dir = tempfile::Builder::new()
        .prefix("skbin")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let bin = bin_dir.path().join("skiff");
    std::fs::copy(common::bin(), &bin).expect("copy cli");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let host = m.host();
    for args in [
        vec!["ps", "-a"],
        vec!["node", "ls"],
        vec!["run", "--rm", "busybox", "true"],
        vec!["service", "ls"],
    ] {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("--host")
            .arg(&host)
            .args(&args)
            .output()
            .expect("setpriv");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains("permission denied"), "{args:?}: {stderr}");
    }
    // Root still can: the refusal above is the socket's mode, not a dead agent.
    assert!(m.cmd(&["node", "ls"]).contains("Leader"));
}
