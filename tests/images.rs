//! End-to-end tests of images: registry push/pull (Debian's `docker-registry` on
//! loopback, with and without htpasswd auth), Dockerfile builds with the layer cache,
//! history/inspect, commit/export, and save/load round trips.

mod common;
use common::{bin, Agent, Registry, Run};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs the CLI with a private credential directory.
fn cli(a: &Agent, cfg: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut c = Command::new(bin())
        .arg("--host")
        .arg(a.host())
        .args(args)
        .env("SKIFF_CONFIG", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut i = c.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        i.write_all(s.as_bytes()).expect("stdin");
    }
    drop(i);
    let o = c.wait_with_output().expect("wait");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn digest_from_push(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("push prints the manifest digest")
        .to_string()
}

/// A context directory with a Dockerfile and files.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
    d
}

fn image_id(a: &Agent, name: &str) -> String {
    a.cmd(&["image", "inspect", "-f", "{{.Id}}", name])
        .stdout
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn registry_push_pull_by_tag_and_digest_then_run() {
    let reg = Registry::start(None);
    let a = Agent::start().with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nRUN echo layer2 > /l2\nCOPY f /f\nCMD [\"cat\", \"/l2\", \"/f\"]\n",
        ),
        ("f", "file3\n"),
    ]);
    let name = format!("{}/team/app:v1", reg.addr);
    a.cmd(&["build", "-t", &name, &ctx.path().to_string_lossy()]);
    let id = image_id(&a, &name);
    let cfg = tempfile::tempdir().expect("cfg");
    let push = cli(&a, cfg.path(), &["push", &name], None);
    assert_eq!(push.code, 0, "{} {}", push.stdout, push.stderr);
    assert!(push.stdout.contains("Pushed"), "{}", push.stdout);
    let digest = digest_from_push(&push.stdout);
    // A second push finds every layer already there.
    let again = cli(&a, cfg.path(), &["push", &name], None);
    assert!(
        again.stdout.contains("Layer already exists") && !again.stdout.contains("Pushed"),
        "{}",
        again.stdout
    );

    a.cmd(&["rmi", &name]);
    assert_ne!(a.try_cmd(&["image", "inspect", &name]).code, 0);
    let pull = cli(&a, cfg.path(), &["pull", &name], None);
    assert_eq!(pull.code, 0, "{} {}", pull.stdout, pull.stderr);
    assert!(
        pull.stdout.contains("Already exists"),
        "busybox's layer is shared, not refetched: {}",
        pull.stdout
    );
    assert!(
        pull.stdout.contains(&format!("Digest: {digest}")),
        "{}",
        pull.stdout
    );
    assert_eq!(image_id(&a, &name), id, "same config, same image ID");
    let r = a.cmd(&["run", "--rm", &name]);
    assert_eq!(r.stdout, "layer2\nfile3\n");

    // By digest, into a store that has nothing of it.
    a.cmd(&["rmi", &name]);
    let by_digest = format!("{}/team/app@{digest}", reg.addr);
    let pull = cli(&a, cfg.path(), &["pull", &by_digest], None);
    assert_eq!(pull.code, 0, "{} {}", pull.stdout, pull.stderr);
    assert_eq!(
        a.cmd(&["run", "--rm", &by_digest]).stdout,
        "layer2\nfile3\n"
    );
    let digests = a
        .cmd(&[
            "image",
            "inspect",
            "-f",
            "{{json .RepoDigests}}",
            &by_digest,
        ])
        .stdout;
    assert!(digests.contains(&digest), "{digests}");

    // Unknown tag and wrong digest are errors.
    let missing = cli(
        &a,
        cfg.path(),
        &["pull", &format!("{}/team/app:nope", reg.addr)],
        None,
    );
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn registry_with_htpasswd_auth() {
    let reg = Registry::start(Some(("alice", "s3cret")));
    let a = Agent::start().with_busybox();
    let cfg = tempfile::tempdir().expect("cfg");
    let name = format!("{}/alice/busybox:1", reg.addr);
    a.cmd(&["tag", "busybox", &name]);
    let denied = cli(&a, cfg.path(), &["push", &name], None);
    assert_ne!(denied.code, 0);
    assert!(
        denied.stderr.contains("unauthorized") || denied.stderr.contains("authentication required"),
        "{}",
        denied.stderr
    );
    let bad = cli(
        &a,
        cfg.path(),
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        Some("wrong\n"),
    );
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    assert!(
        !cfg.path().join("config.json").exists(),
        "failed login stored nothing"
    );
    let ok = cli(
        &a,
        cfg.path(),
        &["login", "-u", "alice", "--password-stdin", &reg.addr],
        Some("s3cret\n"),
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("Login Succeeded"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cfg.path().join("config.json"))
        .expect("config.json")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let push = cli(&a, cfg.path(), &["push", &name], None);
    assert_eq!(push.code, 0, "{} {}", push.stdout, push.stderr);
    a.cmd(&["rmi", &name]);
    let pull = cli(&a, cfg.path(), &["pull", &name], None);
    assert_eq!(pull.code, 0, "{} {}", pull.stdout, pull.stderr);
    assert_eq!(a.cmd(&["run", "--rm", &name, "echo", "ok"]).stdout, "ok\n");
    let out = cli(&a, cfg.path(), &["logout", &reg.addr], None);
    assert!(
        out.stdout.contains("Removing login credentials"),
        "{}",
        out.stdout
    );
    a.cmd(&["rmi", &name]);
    let denied = cli(&a, cfg.path(), &["pull", &name], None);
    assert_ne!(denied.code, 0, "pull after logout must fail");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn build_runs_steps_and_caches_layers() {
    let a = Agent::start().with_busybox();
    let df = r#"# a comment
ARG GREETING=hello
FROM busybox
ARG GREETING
ENV APP_HOME=/app \
    MODE=prod
WORKDIR $APP_HOME
COPY *.txt ./
COPY conf/ /etc/app/
RUN echo "$GREETING from $(pwd)" > greeting && rm /bin/vi && mkdir -p /data
RUN ["sh", "-c", "echo exec-form > /exec"]
LABEL org.example.version="1.0" team=core
EXPOSE 8080/tcp
USER 1000:1000
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD true
VOLUME /data
CMD ["sh", "-c", "cat greeting a.txt /etc/app/app.conf /exec; id -u; ls /bin/vi 2>&1 || true"]
"#;
    let ctx = context(&[
        ("Dockerfile", df),
        ("a.txt", "A\n"),
        ("b.txt", "B\n"),
        ("secret.txt.bak", "no"),
        ("ignored.txt", "should not be sent\n"),
        (".dockerignore", "ignored.txt\n*.bak\n"),
        ("conf/app.conf", "conf=1\n"),
    ]);
    let path = ctx.path().to_string_lossy().into_owned();
    let b = a.cmd(&["build", "-t", "app:1", "--build-arg", "GREETING=hi", &path]);
    assert!(
        b.stdout.contains("Successfully tagged app:1"),
        "{}",
        b.stdout
    );
    // Build-step images are intermediates: listed only with -a.
    assert!(!a.cmd(&["images"]).stdout.contains("<none>"));
    assert!(a.cmd(&["images", "-a"]).stdout.contains("<none>"));
    let r = a.cmd(&["run", "--rm", "app:1"]);
    assert_eq!(
        r.stdout,
        "hi from /app\nA\nconf=1\nexec-form\n1000\nls: /bin/vi: No such file or directory\n"
    );
    assert_eq!(
        a.cmd(&["run", "--rm", "app:1", "ls", "/app"]).stdout,
        "a.txt\nb.txt\ngreeting\n",
        ".dockerignore'd file left out"
    );
    // Config as built.
    let inspect = |f: &str| {
        a.cmd(&["image", "inspect", "-f", f, "app:1"])
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(
        inspect("{{.Config.WorkingDir}} {{.Config.User}} {{.Config.StopSignal}}"),
        "/app 1000:1000 SIGINT"
    );
    assert!(inspect("{{json .Config.Env}}").contains("MODE=prod"));
    assert!(inspect("{{json .Config.ExposedPorts}}").contains("8080/tcp"));
    assert!(inspect("{{json .Config.Labels}}").contains("\"org.example.version\":\"1.0\""));
    assert!(inspect("{{json .Config.Volumes}}").contains("/data"));
    assert!(inspect("{{json .Config.Healthcheck}}").contains("CMD-SHELL"));
    let layers: Vec<String> =
        serde_json::from_str(&inspect("{{json .RootFS.Layers}}")).expect("layers json");
    assert_eq!(
        layers.len(),
        6,
        "busybox + WORKDIR + 2 COPY + 2 RUN: {layers:?}"
    );
    let hist = a.cmd(&["history", "--no-trunc", "app:1"]).stdout;
    assert!(hist.contains("RUN /bin/sh -c echo \"$GREETING"), "{hist}");
    assert_eq!(
        hist.lines().count(),
        15,
        "header + 13 steps + the base image: {hist}"
    );

    // Unchanged rebuild: every step from cache, same image.
    let id = image_id(&a, "app:1");
    let t = Instant::now();
    let again = a.cmd(&["build", "-t", "app:1", "--build-arg", "GREETING=hi", &path]);
    let cached_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        again.stdout.matches("Running in").count(),
        0,
        "{}",
        again.stdout
    );
    assert_eq!(image_id(&a, "app:1"), id);
    eprintln!("cached rebuild took {cached_secs:.3}s");

    // Touching one copied file rebuilds from that COPY on: the first COPY is new, so
    // both RUN steps run again; steps before it stay cached.
    std::fs::write(ctx.path().join("b.txt"), "B2\n").expect("write");
    let changed = a.cmd(&["build", "-t", "app:1", "--build-arg", "GREETING=hi", &path]);
    let steps: Vec<&str> = changed
        .stdout
        .lines()
        .filter(|l| l.starts_with("Step ") || l.contains("Using cache") || l.contains("Running in"))
        .collect();
    let copy_idx = steps
        .iter()
        .position(|l| l.contains("COPY *.txt"))
        .expect("copy step");
    assert!(
        steps[..copy_idx]
            .iter()
            .filter(|l| l.contains("Using cache"))
            .count()
            >= 2,
        "{steps:#?}"
    );
    assert!(!steps[copy_idx + 1].contains("Using cache"), "{steps:#?}");
    assert_eq!(
        changed.stdout.matches("Running in").count(),
        2,
        "{}",
        changed.stdout
    );
    assert_ne!(image_id(&a, "app:1"), id);
    assert_eq!(
        a.cmd(&["run", "--rm", "app:1", "cat", "/app/b.txt"]).stdout,
        "B2\n"
    );
    // Build containers are gone.
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn build_multistage_target_add_and_errors() {
    let a = Agent::start().with_busybox();
    // A tar for ADD to extract.
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("inner.txt"), "from-tar\n").expect("write");
    let tarball = {
        let mut b = tar::Builder::new(Vec::new());
        b.append_path_with_name(d.path().join("inner.txt"), "pkg/inner.txt")
            .expect("tar");
        b.into_inner().expect("tar")
    };
    let df = "FROM busybox AS build\nRUN mkdir /out && echo built > /out/artifact\nADD pkg.tar /opt/\nCOPY --chown=1234:99 plain.txt /out/\n\nFROM scratch AS final\nCOPY --from=build /out/artifact /artifact\nCOPY --from=build /bin/busybox /bin/sh\nCOPY --from=build /opt/pkg/inner.txt /inner\nCMD [\"/bin/sh\", \"-c\", \"read x < /artifact; read y < /inner; echo $x $y\"]\n\nFROM busybox AS other\nRUN false\n";
    let ctx = context(&[("Dockerfile", df), ("plain.txt", "p\n")]);
    std::fs::write(ctx.path().join("pkg.tar"), tarball).expect("write tar");
    let path = ctx.path().to_string_lossy().into_owned();
    // --target stops before the failing stage.
    a.cmd(&["build", "--target", "final", "-t", "multi:1", &path]);
    assert_eq!(
        a.cmd(&["run", "--rm", "multi:1"]).stdout,
        "built from-tar\n"
    );
    a.cmd(&["build", "--target", "build", "-t", "stage:1", &path]);
    assert_eq!(
        a.cmd(&[
            "run",
            "--rm",
            "stage:1",
            "stat",
            "-c",
            "%u:%g",
            "/out/plain.txt"
        ])
        .stdout,
        "1234:99\n"
    );
    // Without --target the failing RUN fails the build.
    let fail = a.try_cmd(&["build", "-t", "multi:2", &path]);
    assert_ne!(fail.code, 0);
    assert!(
        fail.stderr.contains("returned a non-zero code: 1"),
        "{}",
        fail.stderr
    );
    assert_ne!(a.try_cmd(&["image", "inspect", "multi:2"]).code, 0);

    // Parse errors name the file and line; unknown instructions are errors.
    let bad = context(&[("Dockerfile", "FROM busybox\nRUN true\nFROBNICATE now\n")]);
    let r = a.try_cmd(&["build", &bad.path().to_string_lossy()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Dockerfile:3") && r.stderr.contains("unknown instruction: FROBNICATE"),
        "{}",
        r.stderr
    );
    let missing = context(&[("Dockerfile", "FROM busybox\nCOPY nothere /x\n")]);
    let r = a.try_cmd(&["build", &missing.path().to_string_lossy()]);
    assert!(
        r.stderr.contains("Dockerfile:2") && r.stderr.contains("nothere"),
        "{}",
        r.stderr
    );
    let vol = context(&[("Dockerfile", "FROM busybox\nVOLUME relative/path\n")]);
    let r = a.try_cmd(&["build", &vol.path().to_string_lossy()]);
    assert_ne!(r.code, 0, "relative VOLUME refused");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn save_load_commit_export_round_trip() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "echo committed > /state; rm /bin/ls",
    ]);
    let id = a
        .cmd(&["commit", "-c", "CMD [\"cat\", \"/state\"]", "c1", "snap:1"])
        .stdout
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(a.cmd(&["run", "--rm", "snap:1"]).stdout, "committed\n");
    assert_ne!(
        a.try_cmd(&["run", "--rm", "snap:1", "ls"]).code,
        0,
        "the deletion is a whiteout in the new layer"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let fs_tar: PathBuf = dir.path().join("fs.tar");
    a.cmd(&["export", "-o", &fs_tar.to_string_lossy(), "c1"]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&fs_tar).expect("open"))
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("state")) && !names.iter().any(|n| n.ends_with("bin/ls")),
        "{names:?}"
    );

    let archive = dir.path().join("snap.tar");
    a.cmd(&[
        "save",
        "-o",
        &archive.to_string_lossy(),
        "snap:1",
        "busybox",
    ]);
    a.cmd(&["rm", "c1"]);
    a.cmd(&["rmi", "snap:1"]);
    let other = Agent::start();
    let out = other
        .cmd(&["load", "-i", &archive.to_string_lossy()])
        .stdout;
    assert!(
        out.contains("Loaded image: snap:1") && out.contains("Loaded image: busybox:latest"),
        "{out}"
    );
    assert_eq!(
        other
            .cmd(&["image", "inspect", "-f", "{{.Id}}", "snap:1"])
            .stdout
            .trim(),
        id
    );
    assert_eq!(other.cmd(&["run", "--rm", "snap:1"]).stdout, "committed\n");
    // The archive has both layouts docker load understands.
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).expect("open"))
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    for n in ["manifest.json", "index.json", "oci-layout"] {
        assert!(names.contains(&n.to_string()), "{n} missing: {names:?}");
    }
}

/// Interop with Docker itself, only where a Docker daemon binary is installed (Debian's
/// docker.io is not installed on the test machine, so this test returns early there).
#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn docker_load_accepts_our_save() {
    // Runs its own private dockerd (no iptables, no bridge) where docker.io is installed.
    let Some(d) = PrivateDockerd::start() else {
        eprintln!("skipping: dockerd is not installed (apt-get install docker.io)");
        return;
    };
    let a = Agent::start().with_busybox();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("bb.tar");
    a.cmd(&["tag", "busybox", "skiff-interop:1"]);
    a.cmd(&["save", "-o", &archive.to_string_lossy(), "skiff-interop:1"]);
    let out = d.docker(&["load", "-i", &archive.to_string_lossy()]);
    assert!(out.contains("skiff-interop:1"), "docker load: {out}");
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "skiff-interop:1",
        "echo",
        "ok",
    ]);
    assert_eq!(out, "ok\n");
    // And back: docker save, skiff load, run on our side.
    let back = dir.path().join("back.tar");
    d.docker(&["tag", "skiff-interop:1", "from-docker:2"]);
    d.docker(&["save", "-o", &back.to_string_lossy(), "from-docker:2"]);
    let b = Agent::start();
    b.cmd(&["load", "-i", &back.to_string_lossy()]);
    assert_eq!(
        b.cmd(&["run", "--rm", "from-docker:2", "echo", "ok"])
            .stdout,
        "ok\n"
    );
}

/// A dockerd with its own data root and socket, stopped and removed on drop.
struct PrivateDockerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl PrivateDockerd {
    fn start() -> Option<PrivateDockerd> {
        if !Path::new("/usr/sbin/dockerd").exists() && !Path::new("/usr/bin/dockerd").exists() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("skd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sock = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--iptables=false", "--ip-forward=false", "--bridge", "none"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .ok()?;
        let d = PrivateDockerd { dir, child };
        for _ in 0..150 {
            if d.try_docker(&["info"]).is_some() {
                return Some(d);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!(
            "private dockerd did not start: {}",
            std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    fn try_docker(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args)
            .unwrap_or_else(|| panic!("docker {args:?} failed"))
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::unmount_below(self.dir.path());
    }
}
