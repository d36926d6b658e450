//! End-to-end tests of the Docker API's image endpoints (and `/build`, `/commit`),
//! driven by the real docker CLIs (Debian's 20.10 and 28.x) against a private agent.
//! Containers are made with skiff's own CLI, and results are checked with it too, so the
//! tests also show both front ends share one engine.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// `curl` against the agent's Docker socket: (HTTP status, body).
fn curl(a: &Agent, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(a.docker_socket())
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn image_id(a: &Agent, name: &str) -> String {
    a.docker(&["image", "inspect", "-f", "{{.Id}}", name])
        .stdout
        .trim()
        .to_string()
}

fn repo_tags(a: &Agent, args: &[&str]) -> Vec<String> {
    let mut full = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
    full.extend_from_slice(args);
    let mut v: Vec<String> = a.docker(&full).stdout.lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn images_list_filters_inspect_history_and_tag() {
    let a = Agent::start().with_busybox();
    let tar = busybox_tar().to_string_lossy().into_owned();
    // An image with a label, imported through the Docker API.
    let data = std::fs::read(&tar).expect("busybox tar");
    let r = a.try_docker_with(
        docker_cli(),
        &[
            "import",
            "-c",
            "LABEL team=blue",
            "-c",
            "CMD [\"sh\"]",
            "-",
            "labelled:1",
        ],
        Some(&data),
    );
    assert_eq!(r.code, 0, "{r:?}");
    a.docker(&["tag", "busybox", "localhost:5000/a/b:v1"]);
    for cli in docker_clis() {
        let d = |args: &[&str]| a.try_docker_with(cli, args, None);
        let all = d(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout;
        for want in ["busybox:latest", "labelled:1", "localhost:5000/a/b:v1"] {
            assert!(all.lines().any(|l| l == want), "{cli}: {want} in {all:?}");
        }
        let r = d(&[
            "images",
            "--filter",
            "reference=localhost:5000/*/b",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]);
        assert_eq!(
            r.stdout, "localhost:5000/a/b:v1\n",
            "{cli}: only the matching tag: {r:?}"
        );
        let r = d(&[
            "images",
            "--filter",
            "label=team=blue",
            "--format",
            "{{.Repository}}",
        ]);
        assert_eq!(r.stdout, "labelled\n", "{cli}: {r:?}");
        let r = d(&["images", "--filter", "dangling=true", "-q"]);
        assert_eq!(r.stdout, "", "{cli}: nothing dangling yet: {r:?}");
        let r = d(&[
            "images",
            "--filter",
            "since=busybox",
            "--format",
            "{{.Repository}}",
        ]);
        assert_eq!(r.stdout, "labelled\n", "{cli}: {r:?}");
        let r = d(&[
            "images",
            "--filter",
            "before=labelled:1",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ]);
        assert!(
            r.stdout.contains("busybox:latest") && !r.stdout.contains("labelled"),
            "{cli}: {r:?}"
        );
        let r = d(&["images", "--filter", "bogus=1"]);
        assert_ne!(r.code, 0, "{cli}: an unknown filter is refused");
        // Inspect by a name with a registry port and path, and by ID prefix.
        let r = d(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{.Config.Cmd}} {{.Os}}",
            "localhost:5000/a/b:v1",
        ]);
        assert!(
            r.stdout.starts_with("sha256:") && r.stdout.contains("[sh] linux"),
            "{cli}: {r:?}"
        );
        let id = r
            .stdout
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let r = d(&["image", "inspect", "-f", "{{.Id}}", &id[7..19]]);
        assert_eq!(r.stdout.trim(), id, "{cli}");
        let r = d(&["image", "inspect", "nope:1"]);
        assert!(
            r.code != 0 && r.stderr.contains("No such image"),
            "{cli}: {r:?}"
        );
        let r = d(&[
            "history",
            "--format",
            "{{.CreatedBy}}|{{.Comment}}",
            "labelled:1",
        ]);
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        assert!(!r.stdout.is_empty(), "{cli}: history has rows");
    }
    // One engine: the tag made through the Docker API is skiff's too.
    let skiff = a.cmd(&["images"]).stdout;
    assert!(skiff.contains("localhost:5000/a/b"), "{skiff}");
    // Search is not served, clearly.
    let (code, body) = curl(&a, &["http://d/v1.47/images/search?term=busybox"]);
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("not supported"), "{body}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn rmi_untags_deletes_and_refuses_images_in_use() {
    let a = Agent::start().with_busybox();
    a.docker(&["tag", "busybox", "other:1"]);
    let r = a.docker(&["rmi", "other:1"]);
    assert_eq!(r.stdout.trim(), "Untagged: other:1", "{r:?}");
    a.cmd(&["create", "--name", "user1", "busybox", "true"]);
    let r = a.try_docker(&["rmi", "busybox"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("conflict") && r.stderr.contains("being used"),
        "{r:?}"
    );
    // Still there for skiff.
    assert!(a.cmd(&["images"]).stdout.contains("busybox"));
    let (code, body) = curl(&a, &["-XDELETE", "http://d/v1.47/images/busybox"]);
    assert_eq!(code, 409, "{body}");
    a.cmd(&["rm", "user1"]);
    let id = image_id(&a, "busybox");
    let r = a.docker(&["rmi", "busybox"]);
    assert!(r.stdout.contains("Untagged: busybox:latest"), "{r:?}");
    assert!(r.stdout.contains(&format!("Deleted: {id}")), "{r:?}");
    assert!(!a.cmd(&["images"]).stdout.contains("busybox"));
    let r = a.try_docker(&["rmi", "busybox"]);
    assert!(r.code != 0 && r.stderr.contains("No such image"), "{r:?}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn save_then_load_round_trips() {
    let a = Agent::start().with_busybox();
    let id = image_id(&a, "busybox");
    for cli in docker_clis() {
        // docker save busybox | docker load, through a pipe as a shell does.
        let out = Command::new(cli)
            .args(["save", "busybox"])
            .env("DOCKER_HOST", a.docker_host())
            .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
            .output()
            .expect("docker save");
        assert!(
            out.status.success(),
            "{cli}: save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.len() > 1 << 20,
            "{cli}: the archive holds the layer"
        );
        a.docker(&["rmi", "busybox"]);
        let r = a.try_docker_with(cli, &["load"], Some(&out.stdout));
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        assert!(
            r.stdout.contains("Loaded image: busybox:latest"),
            "{cli}: {r:?}"
        );
        assert_eq!(
            image_id(&a, "busybox"),
            id,
            "{cli}: same image ID after the round trip"
        );
    }
    // -o / -i, and GET /images/get?names= for several names.
    let file = a.dir.path().join("bb.tar");
    a.docker(&["tag", "busybox", "copy:2"]);
    a.docker(&[
        "save",
        "-o",
        file.to_str().expect("utf8"),
        "busybox",
        "copy:2",
    ]);
    a.docker(&["rmi", "busybox", "copy:2"]);
    let r = a.docker(&["load", "-i", file.to_str().expect("utf8")]);
    assert!(
        r.stdout.contains("copy:2") && r.stdout.contains("busybox:latest"),
        "{r:?}"
    );
    // The loaded image runs (skiff's CLI, same engine).
    assert_eq!(
        a.cmd(&["run", "--rm", "copy:2", "echo", "ran"]).stdout,
        "ran\n"
    );
    let r = a.try_docker(&["save", "missing:1"]);
    assert!(r.code != 0 && r.stderr.contains("No such image"), "{r:?}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn import_from_a_tarball() {
    let a = Agent::start();
    let data = std::fs::read(busybox_tar()).expect("busybox tar");
    for cli in docker_clis() {
        let tag = format!(
            "imported:{}",
            if cli.contains("local") { "new" } else { "old" }
        );
        let r = a.try_docker_with(
            cli,
            &[
                "import",
                "-c",
                "CMD [\"echo\", \"from-import\"]",
                "-c",
                "ENV A=1",
                "-m",
                "a message",
                "-",
                &tag,
            ],
            Some(&data),
        );
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        assert!(r.stdout.trim().starts_with("sha256:"), "{cli}: {r:?}");
        assert_eq!(
            a.cmd(&["run", "--rm", &tag]).stdout,
            "from-import\n",
            "{cli}"
        );
        let env = a
            .docker(&["image", "inspect", "-f", "{{.Config.Env}}", &tag])
            .stdout;
        assert!(env.contains("A=1"), "{cli}: {env}");
    }
    // Not a tarball: refused, nothing tagged.
    let r = a.try_docker_with(
        docker_cli(),
        &["import", "-", "junk:1"],
        Some(b"this is not a tar archive at all"),
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(!a.docker(&["images"]).stdout.contains("junk"));
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
    d
}

const DOCKERFILE: &str = r#"FROM busybox AS base
ARG WHO=world
LABEL stage=base
COPY greeting.txt /greeting.txt
RUN echo "hello $WHO" > /who.txt
FROM base AS final
LABEL stage=final
RUN cat /greeting.txt >> /who.txt
CMD ["cat", "/who.txt"]
"#;

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn build_with_a_dockerfile_then_run() {
    let a = Agent::start().with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("greeting.txt", "from-copy\n")]);
    let dir = ctx.path().to_str().expect("utf8");
    for cli in docker_clis() {
        let tag = if cli.contains("local") {
            "built:new"
        } else {
            "built:old"
        };
        // The legacy builder, asked for explicitly.
        let out = Command::new(cli)
            .args(["build", "--build-arg", "WHO=docker", "-t", tag, dir])
            .env("DOCKER_HOST", a.docker_host())
            .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker build");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cli}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("Step 1/9 : FROM busybox AS base"),
            "{cli}: {stdout}"
        );
        assert!(stdout.contains("Successfully built "), "{cli}: {stdout}");
        assert!(
            stdout.contains(&format!("Successfully tagged {tag}")),
            "{cli}: {stdout}"
        );
        // The built image runs through skiff's CLI: one engine.
        assert_eq!(
            a.cmd(&["run", "--rm", tag]).stdout,
            "hello docker\nfrom-copy\n",
            "{cli}"
        );
        // And through the Docker API's own run.
        let r = a.try_docker_with(cli, &["run", "--rm", tag], None);
        assert_eq!(r.stdout, "hello docker\nfrom-copy\n", "{cli}: {r:?}");
        let label = a
            .docker(&["image", "inspect", "-f", "{{.Config.Labels.stage}}", tag])
            .stdout;
        assert_eq!(label.trim(), "final", "{cli}");
    }
    // The 28.x CLI without DOCKER_BUILDKIT: the daemon announces the legacy builder and
    // the CLI falls back to it (with its deprecation warning) rather than failing.
    if let Some(new) = docker_clis().into_iter().find(|c| c.contains("local")) {
        let r = a.try_docker_with(
            new,
            &["build", "-q", "--target", "base", "-t", "built:base", dir],
            None,
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            r.stdout.trim().starts_with("sha256:"),
            "-q prints only the ID: {r:?}"
        );
        assert_eq!(
            a.cmd(&["run", "--rm", "built:base", "cat", "/who.txt"])
                .stdout,
            "hello world\n"
        );
        let labels = a
            .docker(&[
                "image",
                "inspect",
                "-f",
                "{{.Config.Labels.stage}}",
                "built:base",
            ])
            .stdout;
        assert_eq!(labels.trim(), "base", "--target stops at the stage");
    }
    // --label adds a last LABEL step to the built stage; --compress sends a gzipped
    // context (Debian's 20.10 CLI still has the flag).
    let out = Command::new("/usr/bin/docker")
        .args([
            "build",
            "--compress",
            "--label",
            "via=label flag",
            "--target",
            "base",
            "-t",
            "built:labelled",
            dir,
        ])
        .env("DOCKER_HOST", a.docker_host())
        .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels = a
        .docker(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.Labels.via}}|{{.Config.Labels.stage}}",
            "built:labelled",
        ])
        .stdout;
    assert_eq!(labels.trim(), "label flag|base");
    // -f names a Dockerfile elsewhere in the context; a failing RUN reports its code.
    let bad = context(&[("sub/Failing", "FROM busybox\nRUN echo out; exit 3\n")]);
    let bad_dir = bad.path().to_str().expect("utf8");
    let df = bad.path().join("sub/Failing");
    let out = Command::new(docker_cli())
        .args(["build", "-f", df.to_str().expect("utf8"), bad_dir])
        .env("DOCKER_HOST", a.docker_host())
        .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("returned a non-zero code: 3"), "{text}");
    assert!(text.contains("out"), "RUN output is streamed: {text}");
    // No RUN container is left behind.
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn build_refuses_bad_contexts() {
    let a = Agent::start().with_busybox();
    let (code, body) = curl(
        &a,
        &[
            "-XPOST",
            "-H",
            "Content-Type: application/x-tar",
            "--data-binary",
            "this is not a tar",
            "http://d/v1.47/build?t=x:1",
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("build context"), "{body}");
    // A context without the named Dockerfile.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = header();
    h.set_size(3);
    h.set_mode(0o644);
    tar.append_data(&mut h, "other.txt", &b"abc"[..])
        .expect("append");
    let ctx = tar.into_inner().expect("tar");
    let file = a.dir.path().join("ctx.tar");
    std::fs::write(&file, ctx).expect("write");
    let data = format!("@{}", file.display());
    let (code, body) = curl(
        &a,
        &["-XPOST", "--data-binary", &data, "http://d/v1.47/build"],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Dockerfile"), "{body}");
    let (code, body) = curl(
        &a,
        &[
            "-XPOST",
            "--data-binary",
            &data,
            "http://d/v1.47/build?dockerfile=../../etc/passwd",
        ],
    );
    assert_eq!(code, 400, "{body}");
    let repos = a.docker(&["images", "--format", "{{.Repository}}"]).stdout;
    assert_eq!(repos, "busybox\n", "nothing was built");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn pull_and_push_against_a_private_registry() {
    let a = Agent::start().with_busybox();
    let reg = Registry::start(None);
    let name = format!("{}/team/bb:v1", reg.addr);
    a.docker(&["tag", "busybox", &name]);
    for cli in docker_clis() {
        let r = a.try_docker_with(cli, &["push", &name], None);
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        assert!(
            r.stdout.contains("The push refers to repository"),
            "{cli}: {r:?}"
        );
        assert!(r.stdout.contains("v1: digest: sha256:"), "{cli}: {r:?}");
        a.docker(&["rmi", &name]);
        let r = a.try_docker_with(cli, &["pull", &name], None);
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        assert!(
            r.stdout.contains("v1: Pulling from team/bb") || r.stdout.contains("v1: Pulling from"),
            "{cli}: {r:?}"
        );
        assert!(r.stdout.contains("Digest: sha256:"), "{cli}: {r:?}");
        assert!(
            r.stdout
                .contains(&format!("Status: Downloaded newer image for {name}"))
                || r.stdout.contains("Status: Image is up to date"),
            "{cli}: {r:?}"
        );
        assert_eq!(image_id(&a, &name), image_id(&a, "busybox"), "{cli}");
        // The image is missing: Docker's error, before any progress.
        let missing = format!("{}/team/nothere:v1", reg.addr);
        let r = a.try_docker_with(cli, &["pull", &missing], None);
        assert_ne!(r.code, 0, "{cli}: {r:?}");
        assert!(
            r.stderr.contains("not found") && r.stderr.contains("manifest unknown"),
            "{cli}: {r:?}"
        );
        let r = a.try_docker_with(cli, &["push", &missing], None);
        assert_ne!(r.code, 0, "{cli}: {r:?}");
        assert!(r.stderr.contains("does not exist locally"), "{cli}: {r:?}");
    }
    // The progress stream in Docker's JSON shape, straight from the API.
    a.docker(&["rmi", &name]);
    let (code, body) = curl(
        &a,
        &[
            "-XPOST",
            &format!(
                "http://d/v1.47/images/create?fromImage={}/team/bb&tag=v1",
                reg.addr
            ),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines[0]["status"], "Pulling from team/bb", "{body}");
    assert_eq!(lines[0]["id"], "v1", "{body}");
    assert!(
        lines.iter().any(|l| l["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("Digest: sha256:"))),
        "{body}"
    );
    let (code, body) = curl(
        &a,
        &[
            "-XPOST",
            &format!(
                "http://d/v1.47/images/create?fromImage={}/team/nothere&tag=v1",
                reg.addr
            ),
        ],
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("manifest unknown"), "{body}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn x_registry_auth_is_honoured() {
    let a = Agent::start().with_busybox();
    let reg = Registry::start(Some(("alice", "s3cret")));
    let name = format!("{}/private/bb:v1", reg.addr);
    a.docker(&["tag", "busybox", &name]);
    let b64 = |s: &str| {
        // base64url without a dependency: the header is small.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let good = format!(
        "X-Registry-Auth: {}",
        b64(&format!(
            r#"{{"username":"alice","password":"s3cret","serveraddress":"{}"}}"#,
            reg.addr
        ))
    );
    let bad = format!(
        "X-Registry-Auth: {}",
        b64(r#"{"username":"alice","password":"wrong"}"#)
    );
    let push = format!("http://d/v1.47/images/{}/private/bb/push?tag=v1", reg.addr);
    // Wrong credentials: the push fails (as an error line or an error answer).
    let (code, body) = curl(&a, &["-XPOST", "-H", &bad, &push]);
    assert!(code != 200 || body.contains("errorDetail"), "{code} {body}");
    let (code, body) = curl(&a, &["-XPOST", "-H", &good, &push]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("v1: digest: sha256:") && !body.contains("errorDetail"),
        "{body}"
    );
    a.docker(&["rmi", &name]);
    let pull = format!(
        "http://d/v1.47/images/create?fromImage={}/private/bb&tag=v1",
        reg.addr
    );
    let (code, body) = curl(&a, &["-XPOST", "-H", &bad, &pull]);
    assert!(code != 200 || body.contains("errorDetail"), "{code} {body}");
    let (code, body) = curl(&a, &["-XPOST", "-H", &good, &pull]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Status: Downloaded newer image"), "{body}");
    assert_eq!(image_id(&a, &name), image_id(&a, "busybox"));
    // A build FROM the private image pulls it with the X-Registry-Config credentials.
    a.docker(&["rmi", &name]);
    let dockerfile = format!("FROM {name}\nRUN echo built > /b\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = header();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
        .expect("append");
    let file = a.dir.path().join("private-ctx.tar");
    std::fs::write(&file, tar.into_inner().expect("tar")).expect("write");
    let data = format!("@{}", file.display());
    let (_, body) = curl(
        &a,
        &[
            "-XPOST",
            "--data-binary",
            &data,
            "http://d/v1.47/build?t=fromprivate:1",
        ],
    );
    assert!(
        body.contains("errorDetail"),
        "no credentials, no base image: {body}"
    );
    let config = format!(
        "X-Registry-Config: {}",
        b64(&format!(
            r#"{{"{}":{{"username":"alice","password":"s3cret"}}}}"#,
            reg.addr
        ))
    );
    let (code, body) = curl(
        &a,
        &[
            "-XPOST",
            "-H",
            &config,
            "--data-binary",
            &data,
            "http://d/v1.47/build?t=fromprivate:1",
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("Successfully tagged fromprivate:1") && !body.contains("errorDetail"),
        "{body}"
    );
    assert!(body.contains(r#""aux":{"ID":"sha256:"#), "{body}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn image_prune_and_commit() {
    let a = Agent::start().with_busybox();
    let data = std::fs::read(busybox_tar()).expect("busybox tar");
    // A dangling image (imported without a name) and an unused tagged one.
    let r = a.try_docker_with(
        docker_cli(),
        &["import", "-c", "LABEL x=1", "-"],
        Some(&data),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let dangling = r.stdout.trim().to_string();
    let r = a.try_docker_with(
        docker_cli(),
        &["import", "-c", "LABEL y=2", "-", "unused:1"],
        Some(&data),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        a.docker(&["images", "-q", "--no-trunc", "--filter", "dangling=true"])
            .stdout
            .trim(),
        dangling
    );
    // A container keeps busybox in use.
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "busybox",
        "sh",
        "-c",
        "echo committed > /made; sleep 1000",
    ]);
    let r = a.docker(&["image", "prune", "-f"]);
    assert!(r.stdout.contains(&format!("deleted: {dangling}")), "{r:?}");
    assert_eq!(repo_tags(&a, &[]), vec!["busybox:latest", "unused:1"]);
    let r = a.docker(&["image", "prune", "-a", "-f"]);
    assert!(r.stdout.contains("untagged: unused:1"), "{r:?}");
    assert!(r.stdout.contains("Total reclaimed space"), "{r:?}");
    assert_eq!(
        repo_tags(&a, &[]),
        vec!["busybox:latest"],
        "busybox is in use and stays"
    );

    // Commit the running container's changes, with a change and a message.
    a.wait_until("the container's file", Duration::from_secs(10), || {
        a.try_cmd(&["exec", "keeper", "cat", "/made"]).stdout == "committed\n"
    });
    for cli in docker_clis() {
        let tag = if cli.contains("local") {
            "snap:new"
        } else {
            "snap:old"
        };
        let r = a.try_docker_with(
            cli,
            &[
                "commit",
                "-c",
                "ENV SNAP=1",
                "-c",
                "CMD [\"cat\", \"/made\"]",
                "-m",
                "snapshot",
                "keeper",
                tag,
            ],
            None,
        );
        assert_eq!(r.code, 0, "{cli}: {r:?}");
        assert!(r.stdout.trim().starts_with("sha256:"), "{cli}: {r:?}");
        assert_eq!(a.cmd(&["run", "--rm", tag]).stdout, "committed\n", "{cli}");
        let env = a
            .docker(&[
                "image",
                "inspect",
                "-f",
                "{{.Config.Env}}|{{.Comment}}",
                tag,
            ])
            .stdout;
        assert!(
            env.contains("SNAP=1") && env.contains("snapshot"),
            "{cli}: {env}"
        );
    }
    let r = a.try_docker(&["commit", "nothere", "x:1"]);
    assert!(
        r.code != 0 && r.stderr.contains("No such container"),
        "{r:?}"
    );
}

/// A `docker save`-style archive whose one layer is `layer`, tagged `tag`; `extra`
/// members are appended to the outer archive after the layer.
fn save_archive(
    layer: &[u8],
    tag: &str,
    extra: impl FnOnce(&mut tar::Builder<Vec<u8>>),
) -> Vec<u8> {
    use sha2::Digest;
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(layer)));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let config_name = format!(
        "{}.json",
        hex::encode(sha2::Sha256::digest(config.as_bytes()))
    );
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).to_string();
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = header();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).expect("append");
    };
    add(&mut b, &config_name, config.as_bytes());
    add(&mut b, "layer/layer.tar", layer);
    extra(&mut b);
    add(&mut b, "manifest.json", manifest.as_bytes());
    b.into_inner().expect("tar")
}

/// A GNU tar header with the owner and time fields filled in (the unpacker insists).
fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Appends an entry with a raw name (the `tar` crate refuses `..` through its safe API).
fn append_raw(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = header();
    {
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    b.append(&h, data).expect("append raw");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn load_refuses_archives_that_point_outside_the_store() {
    let a = Agent::start();
    let outside = tempfile::Builder::new()
        .prefix("skiff-breakout")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let target = outside.path().to_str().expect("utf8").to_string();
    let escape_name = format!("../../../../../../../..{target}/escaped.txt");
    // 1. An outer archive member with `../` in its name.
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = header();
    h.set_size(2);
    h.set_mode(0o644);
    layer
        .append_data(&mut h, "ok.txt", &b"ok"[..])
        .expect("append");
    let layer = layer.into_inner().expect("layer");
    let evil = save_archive(&layer, "evil:1", |b| {
        append_raw(b, &escape_name, tar::EntryType::Regular, None, b"pwned")
    });
    let r = a.try_docker_with(docker_cli(), &["load"], Some(&evil));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("outside"), "{r:?}");
    // 2. The layer member is an absolute symlink to a file on the host (here a valid
    // layer, so following it would load).
    let host_layer = outside.path().join("host-layer.tar");
    std::fs::write(&host_layer, &layer).expect("host layer");
    let linked = {
        use sha2::Digest;
        let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer)));
        let config = serde_json::json!({"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[diff_id]}}).to_string();
        let config_name = format!(
            "{}.json",
            hex::encode(sha2::Sha256::digest(config.as_bytes()))
        );
        let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["linked:1"], "Layers": ["layer.tar"]}]).to_string();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_size(config.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, &config_name, config.as_bytes())
            .expect("config");
        append_raw(
            &mut b,
            "layer.tar",
            tar::EntryType::Symlink,
            Some(host_layer.to_str().expect("utf8")),
            b"",
        );
        let mut h = header();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "manifest.json", manifest.as_bytes())
            .expect("manifest");
        b.into_inner().expect("tar")
    };
    let r = a.try_docker_with(docker_cli(), &["load"], Some(&linked));
    assert_ne!(
        r.code, 0,
        "an absolute symlink is not followed to the host: {r:?}"
    );
    // 3. A layer that escapes with `..` and through an absolute symlink: it may load,
    // but unpacking it (a container from it) writes nothing outside the store.
    let mut evil_layer = tar::Builder::new(Vec::new());
    append_raw(
        &mut evil_layer,
        &escape_name,
        tar::EntryType::Regular,
        None,
        b"pwned",
    );
    append_raw(
        &mut evil_layer,
        "hostdir",
        tar::EntryType::Symlink,
        Some(&target),
        b"",
    );
    append_raw(
        &mut evil_layer,
        "hostdir/through-link.txt",
        tar::EntryType::Regular,
        None,
        b"pwned",
    );
    let evil_layer = evil_layer.into_inner().expect("layer");
    let archive = save_archive(&evil_layer, "evil:2", |_| {});
    let r = a.try_docker_with(docker_cli(), &["load"], Some(&archive));
    if r.code == 0 {
        let _ = a.try_cmd(&["run", "--rm", "evil:2", "true"]);
    }
    for f in ["escaped.txt", "through-link.txt"] {
        assert!(
            !outside.path().join(f).exists(),
            "{f} was written outside the store: {r:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("dir").count(),
        1,
        "only the test's own file is there"
    );
    // Nothing half-loaded is listed.
    let images = a
        .docker(&["images", "-a", "--format", "{{.Repository}}"])
        .stdout;
    assert!(!images.contains("linked"), "{images}");
    assert!(
        !images.lines().any(|l| l == "evil" && r.code != 0),
        "{images}"
    );
}
