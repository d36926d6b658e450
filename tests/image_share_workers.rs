//! Images served by workers (end-to-end, needs root): on a cluster of network namespaces
//! (one manager, two workers), an image loaded on worker 1 only runs on worker 2, which
//! fetches it from worker 1's image-share port; the manager never holds it. That port
//! takes only current members: no certificate is refused, and a node removed with
//! `node rm` is refused from then on.

mod common;
#[path = "common/netns.rs"]
mod netns;
use netns::NetnsCluster;
use skiff_controller::tls;
use skiff_proto::images as ipb;
use std::time::Duration;
use tonic::Code;

/// The default image-share port (`skiff agent --image-share-port`).
const SHARE_PORT: u16 = 7946;

/// A host's node identity as its agent stored it.
fn identity(c: &NetnsCluster, host: &str) -> tls::Identity {
    let d = c.dir.join(host).join("root/cluster/tls");
    let read = |f: &str| std::fs::read_to_string(d.join(f)).expect("tls file");
    tls::Identity {
        ca_pem: read("ca.crt"),
        cert_pem: read("node.crt"),
        key_pem: read("node.key"),
    }
}

/// Asks `host`'s image-share port for `image`'s manifest as `id` (none: no certificate).
fn ask(
    rt: &tokio::runtime::Runtime,
    c: &NetnsCluster,
    host: &str,
    ca_pem: &str,
    id: Option<&tls::Identity>,
    image: &str,
) -> Result<(), tonic::Status> {
    let addr = format!("{}:{SHARE_PORT}", c.addr(host));
    let ch =
        tls::channel(&addr, tls::client_config(ca_pem, id).expect("tls config")).expect("channel");
    rt.block_on(async {
        let mut client = ipb::image_share_client::ImageShareClient::new(ch);
        let call = client.manifest(ipb::ImageRequest { name: image.into() });
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
        }
    })
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn an_image_only_a_worker_has_runs_on_another_worker_and_removed_nodes_are_refused() {
    let c = NetnsCluster::up(2);
    let scratch = tempfile::tempdir().expect("tempdir");
    let image = "local/app:1";

    // 1. worker1 alone has the image: imported, saved, removed and loaded back.
    let rootfs = common::marker_rootfs_tar(scratch.path(), "app-rootfs", "served-by-worker1");
    c.on(
        "worker1",
        &["image", "import", &rootfs.to_string_lossy(), image],
    );
    let archive = scratch.path().join("app.tar");
    c.on(
        "worker1",
        &["image", "save", "-o", &archive.to_string_lossy(), image],
    );
    c.on("worker1", &["image", "rm", image]);
    assert_eq!(c.image_id("worker1", image), None);
    c.on(
        "worker1",
        &["image", "load", "-i", &archive.to_string_lossy()],
    );
    let id = c.image_id("worker1", image).expect("loaded on worker1");
    for h in ["manager1", "worker2"] {
        assert_eq!(c.image_id(h, image), None, "{h} had the image");
    }

    // 2. A service that may only run on worker2 runs it, fetched from worker1.
    c.deploy(
        "fromworker",
        &format!(
            r#"services:
  app:
    image: {image}
    command: ["sh", "-c", "cat /marker; echo; sleep 100000"]
    stop_grace_period: 1s
    deploy:
      replicas: 1
      placement:
        constraints: [node.hostname == worker2]
"#
        ),
    );
    c.wait("the task on worker2", Duration::from_secs(90), || {
        c.placement("fromworker").get("worker2") == Some(&1)
    });
    assert_eq!(c.image_id("worker2", image).as_deref(), Some(&*id));
    assert_eq!(
        c.image_id("manager1", image),
        None,
        "the manager fetched it"
    );
    let ids = c.on("worker2", &["ps", "-q", "--filter", "name=fromworker_app"]);
    let cid = ids.lines().next().unwrap_or_default().trim().to_string();
    assert!(!cid.is_empty(), "no task container on worker2");
    assert!(c
        .on("worker2", &["logs", &cid])
        .contains("served-by-worker1"));
    let log = std::fs::read_to_string(c.dir.join("worker2/agent.log")).unwrap_or_default();
    let from = format!("{}:{SHARE_PORT}", c.addr("worker1"));
    assert!(
        log.lines()
            .any(|l| l.contains("fetched image from a peer") && l.contains(&from)),
        "worker2 names worker1 as its source"
    );

    // 3. worker1's port: members only.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let ca_pem = identity(&c, "worker1").ca_pem;
    let w2 = identity(&c, "worker2");
    ask(&rt, &c, "worker1", &ca_pem, Some(&w2), image).expect("a member may ask");
    let anon = ask(&rt, &c, "worker1", &ca_pem, None, image).expect_err("no certificate");
    assert_eq!(anon.code(), Code::Unauthenticated, "{anon:?}");
    c.on("manager1", &["stack", "rm", "fromworker"]);
    c.on("manager1", &["node", "rm", "--force", "worker2"]);
    let mut last = None;
    c.wait(
        "worker1 to refuse the removed worker2",
        Duration::from_secs(20),
        || {
            let r = ask(&rt, &c, "worker1", &ca_pem, Some(&w2), image);
            let refused = matches!(&r, Err(s) if s.code() == Code::PermissionDenied);
            last = Some(r);
            refused
        },
    );
    let msg = last
        .and_then(|r| r.err())
        .map(|s| s.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("not a current member"), "{msg}");
    // The manager still may.
    ask(
        &rt,
        &c,
        "worker1",
        &ca_pem,
        Some(&identity(&c, "manager1")),
        image,
    )
    .expect("a member may ask");
}
