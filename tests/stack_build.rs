//! End-to-end (root): Compose files with `build:` sections deployed on the embedded
//! one-node cluster. Two services are built by Skiff's builder during `stack deploy`,
//! a `depends_on` chain with `service_healthy` orders their start, `volumes_from`
//! shares a volume, a profile keeps a service out unless enabled, an override file
//! changes replicas; the second deploy builds nothing. Secret files are read by the
//! deploy, not by `stack config`, and a missing one stops the deploy before anything
//! is created.

mod common;
#[path = "common/shop.rs"]
mod shop;
use common::Agent;
use shop::{write, write_project};
use std::time::Duration;

const OVERRIDE: &str = r#"
services:
  web:
    scale: 2
    ulimits:
      nofile: {soft: 1000, hard: 2000}
    extra_hosts: ["db.example:10.1.2.3"]
"#;

/// The project directory: the Compose file, its override and two build contexts.
fn project(a: &Agent) -> (String, String) {
    let dir = a.dir.path().join("shop");
    (
        write_project(&dir),
        write(&dir, "compose.override.yaml", OVERRIDE),
    )
}

fn deploy(a: &Agent, files: &[&str], extra: &[&str]) -> common::Run {
    let mut args = vec!["stack", "deploy"];
    for f in files {
        args.extend(["-c", f]);
    }
    args.extend(extra);
    args.extend(["--detach=false", "--timeout", "120s", "shop"]);
    a.cmd(&args)
}

fn image_id(a: &Agent, image: &str) -> String {
    a.inspect(image, "{{.Id}}")
}

fn task_logs(a: &Agent, service: &str) -> String {
    let ids = a
        .cmd(&["ps", "-q", "--filter", &format!("name={service}")])
        .stdout;
    ids.lines()
        .next()
        .map(|id| {
            let r = a.cmd(&["logs", id]);
            r.stdout + &r.stderr
        })
        .unwrap_or_default()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stack_deploy_builds_orders_and_shares_volumes() {
    let a = Agent::start().with_busybox();
    let (file, over) = project(&a);

    let r = deploy(&a, &[&file, &over], &[]);
    assert!(
        r.stdout.contains("Building api (shop_api)") && r.stdout.contains("Building db (shop_db)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("converged"), "{}", r.stdout);
    let services = a.cmd(&["stack", "services", "shop"]).stdout;
    assert!(
        services.contains("shop_web") && services.contains("2/2"),
        "{services}"
    );
    assert!(
        services.contains("shop_api") && services.contains("shop_db"),
        "{services}"
    );
    assert!(!services.contains("shop_debug"), "{services}");

    // The build argument reached db's image; api read it through volumes_from at its
    // very start, so it started only once db was healthy.
    a.wait_until(
        "api printed what db shared",
        Duration::from_secs(30),
        || {
            let logs = task_logs(&a, "shop_api");
            logs.contains("hello-from-build") && logs.contains("api-message")
        },
    );

    // Container keys reach the task's container.
    let web = a
        .cmd(&["ps", "-q", "--filter", "name=shop_web"])
        .stdout
        .lines()
        .next()
        .expect("a web task")
        .to_string();
    let limits = a.cmd(&["exec", &web, "cat", "/proc/1/limits"]).stdout;
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains("1000") && l.contains("2000")),
        "{limits}"
    );
    let hosts = a.cmd(&["exec", &web, "cat", "/etc/hosts"]).stdout;
    assert!(
        hosts.contains("10.1.2.3") && hosts.contains("db.example"),
        "{hosts}"
    );

    // Second deploy: both images exist, nothing is built, nothing changes.
    let (db_id, api_id) = (image_id(&a, "shop_db"), image_id(&a, "shop_api"));
    let r = deploy(&a, &[&file, &over], &[]);
    assert!(!r.stdout.contains("Building"), "{}", r.stdout);
    assert_eq!(image_id(&a, "shop_db"), db_id);
    assert_eq!(image_id(&a, "shop_api"), api_id);

    // --build rebuilds from the builder's cache: the same image comes out.
    let r = deploy(&a, &[&file, &over], &["--build"]);
    assert!(
        r.stdout.contains("Building db") && r.stdout.contains("Using cache"),
        "{}",
        r.stdout
    );
    assert_eq!(image_id(&a, "shop_db"), db_id);

    // A profile adds its service.
    let r = deploy(&a, &[&file, &over], &["--profile", "debug", "--no-build"]);
    assert!(
        r.stdout.contains("Creating service shop_debug"),
        "{}",
        r.stdout
    );

    a.cmd(&["stack", "rm", "shop"]);
    a.wait_until("stack removed", Duration::from_secs(30), || {
        a.cmd(&[
            "ps",
            "-aq",
            "--filter",
            "label=com.docker.stack.namespace=shop",
        ])
        .stdout
        .trim()
        .is_empty()
    });
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn secret_files_are_read_by_deploy_not_by_config() {
    let a = Agent::start().with_busybox();
    let dir = a.dir.path().join("sec");
    let file = write(
        &dir,
        "compose.yaml",
        "services:\n  app:\n    image: busybox:latest\n    command: [sleep, '600']\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token.txt\n",
    );
    // `stack config` does not need the file...
    let r = a.cmd(&["stack", "config", "-c", &file, "--format", "json"]);
    assert!(r.stdout.contains("token.txt"), "{}", r.stdout);
    // ...a deploy does, and creates nothing without it.
    let r = a.try_cmd(&["stack", "deploy", "-c", &file, "sec"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("secret token: reading") && r.stderr.contains("token.txt"),
        "{}",
        r.stderr
    );
    let ls = a.cmd(&["stack", "ls"]).stdout;
    assert!(!ls.contains("sec"), "{ls}");
    let nets = a.cmd(&["network", "ls"]).stdout;
    assert!(!nets.contains("sec_default"), "{nets}");
}
