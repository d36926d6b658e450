//! End-to-end (root): a Compose project with two built services deployed on a cluster
//! of network namespaces (one manager, two workers) where only the manager has the
//! base image. `stack deploy` builds both images on the manager; every task runs on a
//! worker, which fetches the built images (and busybox) from the manager. A
//! `depends_on` chain with `service_healthy` orders the start, `volumes_from` shares a
//! volume (its tasks placed together), a profile keeps a service out, an override file
//! places the services and scales one; the second deploy builds nothing.

mod common;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/shop.rs"]
mod shop;
use netns::NetnsCluster;
use shop::{write, write_project};
use std::time::Duration;

/// Keeps every task off the manager, so each runs on a node that had no image.
const OVERRIDE: &str = r#"
x-on-workers: &on-workers
  placement:
    constraints: [node.role == worker]
services:
  db:
    deploy: *on-workers
  api:
    deploy: *on-workers
  web:
    scale: 2
    deploy:
      placement:
        constraints: [node.role == worker]
        max_replicas_per_node: 1
"#;

fn deploy(c: &NetnsCluster, files: &[&str]) -> String {
    let mut args = vec!["stack", "deploy"];
    for f in files {
        args.extend(["-c", f]);
    }
    args.extend(["--detach=false", "--timeout", "180s", "shop"]);
    c.on("manager1", &args)
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn built_services_deploy_on_workers_that_had_no_image() {
    let c = NetnsCluster::up_base_on_managers(1, 2);
    let workers = ["worker1", "worker2"];
    for w in workers {
        assert_eq!(c.image_id(w, "busybox:latest"), None, "{w} had busybox");
    }
    let dir = c.dir.join("shop");
    let file = write_project(&dir);
    let over = write(&dir, "compose.override.yaml", OVERRIDE);

    let out = deploy(&c, &[&file, &over]);
    assert!(
        out.contains("Building api (shop_api)") && out.contains("Building db (shop_db)"),
        "{out}"
    );
    assert!(out.contains("converged"), "{out}");

    // Every task runs, all of them on the workers.
    c.wait(
        "4 tasks running on the workers",
        Duration::from_secs(120),
        || {
            let p = c.placement("shop");
            p.values().sum::<usize>() == 4 && p.keys().all(|n| n.starts_with("worker"))
        },
    );
    let services = c.on("manager1", &["stack", "services", "shop"]);
    for (name, replicas) in [("shop_web", "2/2"), ("shop_api", "1/1"), ("shop_db", "1/1")] {
        assert!(
            services
                .lines()
                .any(|l| l.contains(name) && l.contains(replicas)),
            "{name} {replicas}: {services}"
        );
    }
    assert!(!services.contains("shop_debug"), "{services}");

    // The build argument reached db's image; api read it through volumes_from at its
    // very start, so it started only once db was healthy, on db's node.
    let mut logs = String::new();
    c.wait(
        "api printed what db shared",
        Duration::from_secs(60),
        || {
            logs = c.try_on("manager1", &["service", "logs", "shop_api"]).1;
            logs.contains("hello-from-build") && logs.contains("api-message")
        },
    );

    // The workers that run the built services hold the manager's images.
    let (db_id, api_id) = (
        c.image_id("manager1", "shop_db")
            .expect("db built on the manager"),
        c.image_id("manager1", "shop_api")
            .expect("api built on the manager"),
    );
    let holders: Vec<&str> = workers
        .iter()
        .copied()
        .filter(|w| c.image_id(w, "shop_api").is_some())
        .collect();
    assert_eq!(holders.len(), 1, "api runs on one worker: {holders:?}");
    assert_eq!(c.image_id(holders[0], "shop_api"), Some(api_id.clone()));
    assert_eq!(c.image_id(holders[0], "shop_db"), Some(db_id.clone()));

    // Second deploy: the images exist, nothing is built, nothing changes.
    let out = deploy(&c, &[&file, &over]);
    assert!(!out.contains("Building"), "{out}");
    assert_eq!(c.image_id("manager1", "shop_db"), Some(db_id));
    assert_eq!(c.image_id("manager1", "shop_api"), Some(api_id));
    assert_eq!(c.placement("shop").values().sum::<usize>(), 4);

    c.on("manager1", &["stack", "rm", "shop"]);
}
