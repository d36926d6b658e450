//! End-to-end tests of `skiff stack config`: the real binary on the fixture files in
//! stack/tests/fixtures. It needs no agent, so these run without root and point
//! --host at a socket that does not exist to prove it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stack/tests/fixtures")
        .join(name)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn skiff(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(["-H", "unix:///nonexistent/skiff.sock"])
        .args(args)
        .env_remove("WEB_PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run skiff");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn json(o: &Out) -> serde_json::Value {
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    serde_json::from_str(&o.stdout).expect("stdout is JSON")
}

#[test]
fn good_file_prints_the_normalised_spec() {
    let app = fixture("hello/app.yaml");
    let o = skiff(
        &[
            "stack",
            "config",
            "-c",
            app.to_str().expect("utf-8"),
            "--format",
            "json",
        ],
        &[],
    );
    let v = json(&o);
    assert_eq!(
        v["name"], "hello",
        "stack name defaults to the file's directory"
    );
    let web = &v["services"]["web"];
    assert_eq!(web["deploy"]["mode"], "replicated");
    assert_eq!(web["deploy"]["replicas"], 3);
    assert_eq!(web["ports"][0]["published"], 8080);
    assert_eq!(web["ports"][0]["target"], 80);
    assert_eq!(web["deploy"]["resources"]["limits"]["memory"], 32 << 20);
    assert_eq!(web["healthcheck"]["interval"], "5s");
    assert_eq!(v["services"]["api"]["volumes"][0]["source"], "pages");
    assert_eq!(v["volumes"]["pages"]["name"], "hello_pages");
    assert!(o.stderr.is_empty(), "no warnings expected: {}", o.stderr);

    let o = skiff(
        &["stack", "config", "-c", app.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("replicas: 3") && o.stdout.contains("published: 8080"),
        "{}",
        o.stdout
    );
}

#[test]
fn files_merge_in_order_and_interpolate_from_the_environment() {
    let (app, over) = (fixture("hello/app.yaml"), fixture("hello/override.yaml"));
    let args = [
        "stack",
        "config",
        "-c",
        app.to_str().expect("utf-8"),
        "-c",
        over.to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    let v = json(&skiff(&args, &[("WEB_PORT", "9999")]));
    let web = &v["services"]["web"];
    assert_eq!(web["deploy"]["replicas"], 5);
    assert_eq!(web["deploy"]["labels"]["tier"], "front");
    let published: Vec<i64> = web["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["published"].as_i64())
        .collect();
    assert_eq!(published, vec![9999, 8443]);
    assert_eq!(web["environment"], serde_json::json!(["MODE=prod"]));
}

#[test]
fn bad_file_fails_with_file_line_column_and_field() {
    let bad = fixture("bad-replicas.yaml");
    let o = skiff(
        &["stack", "config", "-c", bad.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.is_empty(),
        "nothing printed for a bad file: {}",
        o.stdout
    );
    let want = format!(
        "{}:5:17: services.web.deploy.replicas: expected an integer, found \"three\"",
        bad.display()
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
}

#[test]
fn yaml_bomb_fails_fast() {
    let bomb = fixture("bomb.yaml");
    let t = std::time::Instant::now();
    let o = skiff(
        &["stack", "config", "-c", bomb.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("bomb.yaml:") && o.stderr.contains("YAML bomb"),
        "{}",
        o.stderr
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn keys_a_cluster_cannot_apply_warn_once_each_and_builds_are_kept() {
    let f = fixture("with-build.yaml");
    let o = skiff(&["stack", "config", "-c", f.to_str().expect("utf-8")], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", o.stderr);
    assert!(
        lines[0].starts_with("warning: ")
            && lines[0].contains("with-build.yaml:6:5: services.web.container_name"),
        "{}",
        lines[0]
    );
    // network_mode is applied: kept, printed as Compose prints it, no warning.
    assert!(
        o.stdout.contains("    network_mode: host\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("image: busybox:latest"), "{}", o.stdout);
    // The build section is printed in its long form; `restart` became the policy.
    assert!(
        o.stdout.contains("build:\n      context: ")
            && o.stdout.contains("stack/tests/fixtures/web"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("condition: any"), "{}", o.stdout);
}

#[test]
fn missing_file_and_bad_format_fail() {
    let o = skiff(&["stack", "config", "-c", "/nonexistent/app.yaml"], &[]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("/nonexistent/app.yaml"), "{}", o.stderr);
    let app = fixture("hello/app.yaml");
    let o = skiff(
        &[
            "stack",
            "config",
            "-c",
            app.to_str().expect("utf-8"),
            "--format",
            "toml",
        ],
        &[],
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("unknown format"), "{}", o.stderr);
}
