//! `examples/monitoring/` stays deployable: its stack file loads with `skiff stack
//! config` (no agent needed) and its Prometheus configuration and rules pass Debian's
//! `promtool`.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring")
}

#[test]
fn monitoring_stack_file_loads() {
    let out = Command::new(common::bin())
        .args(["stack", "config", "--format", "json", "-c"])
        .arg(dir().join("stack.yml"))
        .output()
        .expect("skiff stack config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "the example should load without warnings: {stderr}"
    );
    let spec: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(spec["name"], "monitoring");
    let p = &spec["services"]["prometheus"];
    assert_eq!(p["image"], "skiff-prometheus:latest");
    assert_eq!(p["ports"][0]["published"], 9090);
    assert_eq!(p["ports"][0]["target"], 9090);
    assert_eq!(
        p["deploy"]["placement"]["constraints"][0],
        "node.role==manager"
    );
    let targets: Vec<&str> = p["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .filter_map(|c| c["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        vec![
            "/etc/prometheus/prometheus.yml",
            "/etc/prometheus/rules.yml",
            "/etc/prometheus/targets.json"
        ]
    );
    // Every config file the stack names exists beside it.
    for (_, c) in spec["configs"].as_object().expect("configs") {
        let f = c["file"].as_str().expect("file");
        assert!(Path::new(f).is_file(), "{f}");
    }
    let targets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("targets.json")).expect("targets.json"),
    )
    .expect("targets.json is JSON");
    assert!(targets[0]["targets"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
}

#[test]
fn prometheus_configuration_is_valid() {
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "rules.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(dir())
            .output()
            .expect("run promtool (deploy/deps.sh --test installs Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
