//! End-to-end tests of shell integration: completion scripts, man pages, and `--format`
//! (table, json, Go template) on the cluster list commands against a real agent.

mod common;
use common::Agent;
use std::process::Command;
use std::time::Duration;

fn skiff(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .output()
        .expect("run skiff")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bash_completion_parses_and_names_subcommands() {
    let out = skiff(&["completion", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).expect("utf8");
    for word in [
        "stack",
        "service",
        "network",
        "completion",
        "--log-opt",
        "--format",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("skiff.bash");
    std::fs::write(&f, &script).expect("write");
    let st = Command::new("bash")
        .arg("-n")
        .arg(&f)
        .status()
        .expect("bash");
    assert!(st.success(), "bash -n rejected the completion script");
    // Loaded into a shell, it completes `skiff net` to `network`.
    let probe = format!(
        "source {}; COMP_WORDS=(skiff net); COMP_CWORD=1; COMP_LINE='skiff net'; COMP_POINT=9; _skiff skiff net skiff; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        f.display()
    );
    let o = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == "network"),
        "no completion for `skiff net`: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn zsh_and_fish_completions_name_subcommands() {
    for (shell, check) in [("zsh", "zsh"), ("fish", "fish")] {
        let out = skiff(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).expect("utf8");
        assert!(
            script.contains("stack") && script.contains("node"),
            "{shell}"
        );
        if have(check) {
            let dir = tempfile::tempdir().expect("tempdir");
            let f = dir.path().join("s");
            std::fs::write(&f, &script).expect("write");
            let st = Command::new(check).arg("-n").arg(&f).status().expect(check);
            assert!(st.success(), "{check} -n rejected the script");
        }
    }
    let bad = skiff(&["completion", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_pages_are_written_and_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = skiff(&["man", "--dir", &dir.path().to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "skiff.1",
        "skiff-run.1",
        "skiff-network-ls.1",
        "skiff-stack-deploy.1",
        "skiff-completion.1",
    ] {
        let p = dir.path().join(page);
        let roff = std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{page} missing"));
        assert!(roff.starts_with(".ie") || roff.contains(".TH "), "{page}");
        assert!(roff.contains(".SH NAME"), "{page}");
        assert!(roff.contains(".SH SYNOPSIS"), "{page}");
        assert!(roff.contains(".SH EXAMPLES"), "{page} has no examples");
    }
    assert!(
        !dir.path().join("skiff-shim.1").exists(),
        "hidden commands get no page"
    );
    if have("man") {
        let o = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("skiff-network-ls.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .expect("man");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for s in [
            "NAME",
            "SYNOPSIS",
            "EXAMPLES",
            "skiff network ls",
            "--format",
        ] {
            assert!(text.contains(s), "rendered page lacks {s}:\n{text}");
        }
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn cluster_list_commands_take_format() {
    let a = Agent::start().with_busybox();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.yaml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: busybox:latest\n    command: [\"sleep\", \"300\"]\n",
    )
    .expect("stack file");
    a.cmd(&["stack", "deploy", "-c", &file.to_string_lossy(), "fmt"]);
    a.wait_until("the task runs", Duration::from_secs(30), || {
        a.try_cmd(&["service", "ls", "--format", "{{.Replicas}}"])
            .stdout
            .trim()
            == "1/1"
    });
    assert_eq!(
        a.cmd(&["stack", "ls", "--format", "{{.Name}}={{.Services}}"])
            .stdout,
        "fmt=1\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(a.cmd(&["stack", "ls", "--format", "json"]).stdout.trim())
            .expect("json");
    assert_eq!(v["Name"], "fmt");
    assert!(a
        .cmd(&["stack", "ls"])
        .stdout
        .starts_with("NAME      SERVICES\nfmt       1"));
    assert_eq!(
        a.cmd(&[
            "stack",
            "services",
            "--format",
            "{{.Name}} {{.Mode}}",
            "fmt"
        ])
        .stdout,
        "fmt_web replicated\n"
    );
    assert_eq!(
        a.cmd(&[
            "service",
            "ps",
            "--format",
            "{{.Name}} {{.DesiredState}}",
            "fmt_web"
        ])
        .stdout,
        "fmt_web.1 Running\n"
    );
    let ps = a.cmd(&["stack", "ps", "--format", "json", "fmt"]).stdout;
    let t: serde_json::Value = serde_json::from_str(ps.trim()).expect("json");
    assert_eq!(t["Name"], "fmt_web.1");
    assert!(t["CurrentState"]
        .as_str()
        .is_some_and(|s| s.starts_with("Running")));
    let table = a
        .cmd(&["service", "ls", "--format", "table {{.Name}}\t{{.Image}}"])
        .stdout;
    assert_eq!(table, "NAME      IMAGE\nfmt_web   busybox:latest\n");
    let me = a
        .cmd(&["node", "ls", "--format", "{{.Self}} {{.Status}}"])
        .stdout;
    assert_eq!(me, "true Ready\n");
    assert!(a.cmd(&["node", "ls"]).stdout.contains(" *   "));
    let bad = a.try_cmd(&["node", "ls", "--format", "{{.Nope"]);
    assert_eq!(bad.code, 125);
    assert!(bad.stderr.contains("invalid --format"), "{}", bad.stderr);
    a.cmd(&["stack", "rm", "fmt"]);
}
