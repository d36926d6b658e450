//! Images without a registry (end-to-end, needs root): on a cluster of network
//! namespaces (one manager, two workers), an image imported on the manager only runs
//! on both workers, which fetch it from the manager over the cluster port; a layer
//! corrupted on the manager is refused by the workers (digest mismatch), leaves nothing
//! in their stores, and the service runs once the source is sound again.

mod common;
#[path = "common/netns.rs"]
mod netns;
use netns::NetnsCluster;
use std::path::PathBuf;
use std::time::Duration;

fn stack_yaml(image: &str) -> String {
    format!(
        r#"services:
  app:
    image: {image}
    command: ["sh", "-c", "cat /marker; echo; sleep 100000"]
    stop_grace_period: 1s
    deploy:
      replicas: 2
      placement:
        constraints: [node.role == worker]
        max_replicas_per_node: 1
"#
    )
}

/// The only layer of an imported image (its blob digest is its diff ID).
fn layer_of(c: &NetnsCluster, image: &str) -> String {
    let out = c.on(
        "manager1",
        &["image", "inspect", "-f", "{{json .RootFS.Layers}}", image],
    );
    let layers: Vec<String> = serde_json::from_str(out.trim()).expect("layers json");
    assert_eq!(layers.len(), 1, "{layers:?}");
    layers[0].clone()
}

fn blob(c: &NetnsCluster, host: &str, digest: &str) -> PathBuf {
    c.dir.join(format!(
        "{host}/root/image/blobs/sha256/{}",
        digest.trim_start_matches("sha256:")
    ))
}

/// Names of the files in a worker's blob scratch directory (must stay empty).
fn scratch(c: &NetnsCluster, host: &str) -> Vec<String> {
    std::fs::read_dir(c.dir.join(format!("{host}/root/image/tmp")))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a task's container printed, on the node that runs it.
fn marker_on(c: &NetnsCluster, host: &str, service: &str) -> String {
    let ids = c.on(host, &["ps", "-q", "--filter", &format!("name={service}")]);
    let id = ids.lines().next().unwrap_or_default().trim().to_string();
    assert!(!id.is_empty(), "no {service} container on {host}");
    c.on(host, &["logs", &id])
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn an_image_on_one_node_runs_on_every_node_and_a_corrupt_layer_is_refused() {
    let c = NetnsCluster::up(2);
    let scratch_dir = tempfile::tempdir().expect("tempdir");
    let workers = ["worker1", "worker2"];

    // 1. Only the manager has shared/app:1.
    let tar = common::marker_rootfs_tar(scratch_dir.path(), "app", "shared-from-manager");
    c.on(
        "manager1",
        &["image", "import", &tar.to_string_lossy(), "shared/app:1"],
    );
    let id = c
        .image_id("manager1", "shared/app:1")
        .expect("imported on the manager");
    let layer = layer_of(&c, "shared/app:1");
    for w in workers {
        assert_eq!(c.image_id(w, "shared/app:1"), None, "{w} had the image");
        assert!(!blob(&c, w, &layer).exists());
    }
    c.deploy("share", &stack_yaml("shared/app:1"));
    c.wait("a task on each worker", Duration::from_secs(90), || {
        let p = c.placement("share");
        p.get("worker1") == Some(&1) && p.get("worker2") == Some(&1) && p.len() == 2
    });
    for w in workers {
        // Same image (same config digest), tagged as asked, and the layer it runs is
        // the manager's.
        assert_eq!(c.image_id(w, "shared/app:1").as_deref(), Some(&*id), "{w}");
        assert!(blob(&c, w, &layer).exists(), "{w} lacks the layer blob");
        assert!(
            marker_on(&c, w, "share_app").contains("shared-from-manager"),
            "{w}"
        );
        assert_eq!(scratch(&c, w), Vec::<String>::new());
    }

    // 2. A second image whose layer is corrupted on the manager (same size, other
    // bytes): the workers refuse it and keep nothing of it.
    let tar = common::marker_rootfs_tar(scratch_dir.path(), "bad", "must-not-run-corrupt");
    c.on(
        "manager1",
        &["image", "import", &tar.to_string_lossy(), "shared/bad:1"],
    );
    let bad_layer = layer_of(&c, "shared/bad:1");
    let src = blob(&c, "manager1", &bad_layer);
    let good = std::fs::read(&src).expect("read the layer blob");
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    std::fs::write(&src, &corrupt).expect("corrupt the layer blob");
    let file = c.dir.join("bad.yaml");
    std::fs::write(&file, stack_yaml("shared/bad:1")).expect("write stack");
    c.on(
        "manager1",
        &["stack", "deploy", "-c", &file.to_string_lossy(), "bad"],
    );
    let mut errors = String::new();
    c.wait(
        "workers to refuse the corrupt layer",
        Duration::from_secs(60),
        || {
            errors = c.on("manager1", &["stack", "ps", "--no-trunc", "bad"]);
            workers.iter().all(|w| {
                errors
                    .lines()
                    .any(|l| l.contains(w) && l.contains("digest mismatch"))
            })
        },
    );
    assert!(
        errors.contains(&bad_layer),
        "the error names the layer: {errors}"
    );
    for w in workers {
        assert_eq!(c.image_id(w, "shared/bad:1"), None, "{w} kept the image");
        assert!(!blob(&c, w, &bad_layer).exists(), "{w} kept the bad blob");
        // A retry may be mid-transfer right now; what must not happen is a scratch
        // file that stays.
        c.wait(
            &format!("{w}'s scratch directory to be empty"),
            Duration::from_secs(20),
            || scratch(&c, w).is_empty(),
        );
        let (_, ps) = c.try_on(w, &["ps", "-a", "--filter", "name=bad_app"]);
        assert!(!ps.contains("bad_app"), "{w} created a container: {ps}");
    }

    // 3. The source is sound again: the retried tasks fetch it and run.
    std::fs::write(&src, &good).expect("restore the layer blob");
    c.wait(
        "the bad service to run once repaired",
        Duration::from_secs(90),
        || {
            let p = c.placement("bad");
            p.get("worker1") == Some(&1) && p.get("worker2") == Some(&1)
        },
    );
    for w in workers {
        assert!(marker_on(&c, w, "bad_app").contains("must-not-run-corrupt"));
    }
    c.on("manager1", &["stack", "rm", "share"]);
    c.on("manager1", &["stack", "rm", "bad"]);
}
