//! Differential check of `skiff stack config` against Debian's docker-compose 1.29
//! (`docker-compose config`) on the corpus in stack/tests/fixtures/corpus, for the
//! files that docker-compose 1.x can read (it predates `include`, `name:`, `develop`,
//! secrets from the environment...). Both must agree on the services, their images,
//! published ports, environment and volume targets. No agent is involved, so this runs
//! without root.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stack/tests/fixtures/corpus")
}

const ENV: &[(&str, &str)] = &[
    ("ACME_EMAIL", "ops@example.com"),
    ("GITLAB_HOME", "/srv/gitlab"),
    ("VERSION", "2.1.0"),
];

fn yaml_to_json(text: &str, what: &str) -> Value {
    skiff_stack::Document::parse(text, Path::new(what))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .map(|d| d.to_json())
        .unwrap_or(Value::Null)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (deploy/deps.sh --test installs Debian's docker-compose)")
    });
    assert!(
        o.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// What both tools must agree on, per service.
#[derive(Debug, PartialEq)]
struct Facts {
    image: String,
    ports: BTreeSet<(Option<u64>, u64)>,
    environment: BTreeMap<String, Option<String>>,
    volume_targets: BTreeSet<String>,
}

fn volume_target(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() >= 2 {
                parts[1].to_string()
            } else {
                parts[0].to_string()
            }
        }
        other => other["target"].as_str().unwrap_or_default().to_string(),
    }
}

fn compose_facts(doc: &Value) -> BTreeMap<String, Facts> {
    let mut out = BTreeMap::new();
    for (name, s) in doc["services"].as_object().expect("services") {
        let environment = match &s["environment"] {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
            _ => BTreeMap::new(),
        };
        out.insert(name.clone(), facts(s, environment));
    }
    out
}

/// What both outputs are compared on, once each side's environment is read.
fn facts(s: &Value, environment: BTreeMap<String, Option<String>>) -> Facts {
    let ports = s["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| (p["published"].as_u64(), p["target"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let volume_targets = s["volumes"]
        .as_array()
        .map(|a| a.iter().map(volume_target).collect())
        .unwrap_or_default();
    Facts {
        image: s["image"].as_str().unwrap_or_default().to_string(),
        ports,
        environment,
        volume_targets,
    }
}

fn skiff_facts(doc: &Value) -> BTreeMap<String, Facts> {
    let mut out = BTreeMap::new();
    for (name, s) in doc["services"].as_object().expect("services") {
        let environment = s["environment"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (e.to_string(), None),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name.clone(), facts(s, environment));
    }
    out
}

#[test]
fn stack_config_agrees_with_docker_compose_v1_on_the_corpus() {
    for file in [
        "wordpress.yaml",
        "legacy-v2.yaml",
        "traefik.yaml",
        "anchors.yaml",
        "swarm-external.yaml",
        "gitlab.yaml",
        "mailserver.yaml",
    ] {
        let path = corpus().join(file);
        let path = path.to_str().expect("utf-8");
        let mut dc = Command::new("docker-compose");
        dc.args(["-f", path, "config"]).env_remove("TAG");
        let mut sk = Command::new(env!("CARGO_BIN_EXE_skiff"));
        sk.args([
            "-H",
            "unix:///nonexistent/skiff.sock",
            "stack",
            "config",
            "--format",
            "json",
            "--name",
            "corpus",
            "-c",
            path,
        ])
        .env_remove("TAG");
        for (k, v) in ENV {
            dc.env(k, v);
            sk.env(k, v);
        }
        let theirs = compose_facts(&yaml_to_json(
            &run(&mut dc, &format!("docker-compose config {file}")),
            file,
        ));
        let ours = skiff_facts(
            &serde_json::from_str(&run(&mut sk, &format!("skiff stack config {file}")))
                .expect("JSON"),
        );
        assert_eq!(ours, theirs, "{file}");
    }
}
