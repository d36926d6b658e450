//! End-to-end: Dockerfiles as people write them for BuildKit — heredocs, `RUN --mount`
//! (cache, secret), `RUN --network`, COPY `--chmod/--exclude/--parents`, platform ARGs
//! and ONBUILD — built by the real binary as root. Each test owns its agent and
//! temporary directories, which are removed on drop even when an assertion fails.

mod common;
use common::*;

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
    d
}

fn path(d: &tempfile::TempDir) -> String {
    d.path().to_string_lossy().into_owned()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn heredocs_copy_flags_and_target_arch() {
    let a = Agent::start().with_busybox();
    let df = "# syntax=docker/dockerfile:1.7
# check=skip=all
FROM busybox
ARG TARGETARCH
RUN <<EOF
set -e
echo \"arch=$TARGETARCH\" > /arch
EOF
RUN <<EOT
#!/bin/sh
echo shebang > /shebang
EOT
RUN cat <<A > /a.txt && cat <<-B > /b.txt
alpha
A
\tbeta
\tB
COPY <<EOF /etc/motd
welcome $TARGETARCH
EOF
COPY <<one <<'two' /files/
1
one
2 $TARGETARCH
two
COPY --chmod=u+x,go-r src/run.sh /run.sh
COPY --link --chmod=0600 src/run.sh /run600.sh
COPY --exclude=*.md docs /docs/
COPY --parents src/a/x.txt src/b/y.txt /par/
CMD [\"sh\", \"-c\", \"cat /arch /shebang /a.txt /b.txt /etc/motd /files/one /files/two; stat -c %a /run.sh /run600.sh; ls /docs; find /par -type f | sort\"]
";
    let ctx = context(&[
        ("Dockerfile", df),
        ("src/run.sh", "#!/bin/sh\n"),
        ("src/a/x.txt", "x"),
        ("src/b/y.txt", "y"),
        ("docs/guide.txt", "g"),
        ("docs/README.md", "r"),
    ]);
    let b = a.cmd(&["build", "-t", "modern:1", &path(&ctx)]);
    assert!(!b.stdout.contains("WARNING"), "no warnings: {}", b.stdout);
    let out = a.cmd(&["run", "--rm", "modern:1"]).stdout;
    let arch = go_arch();
    let want = format!(
        "arch={arch}\nshebang\nalpha\nbeta\nwelcome {arch}\n1\n2 $TARGETARCH\n700\n600\nguide.txt\n/par/src/a/x.txt\n/par/src/b/y.txt\n"
    );
    assert_eq!(out, want);
    let hist = a.cmd(&["history", "--no-trunc", "modern:1"]).stdout;
    assert!(hist.contains("COPY <<EOF /etc/motd"), "{hist}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn cache_mount_is_reused_by_the_next_build_and_never_in_a_layer() {
    let a = Agent::start().with_busybox();
    let first = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs echo from-build-1 > /var/cache/pkgs/seen && echo done > /first\n",
    )]);
    a.cmd(&["build", "-t", "cache:1", &path(&first)]);
    // A different Dockerfile (no layer cache hit), same cache id.
    let second = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs cp /var/cache/pkgs/seen /from-cache\n",
    )]);
    a.cmd(&["build", "-t", "cache:2", &path(&second)]);
    assert_eq!(
        a.cmd(&["run", "--rm", "cache:2", "cat", "/from-cache"])
            .stdout,
        "from-build-1\n"
    );
    // Neither image holds the cache directory (nor its mount-point stub).
    for img in ["cache:1", "cache:2"] {
        let r = a.try_cmd(&["run", "--rm", img, "ls", "/var/cache/pkgs"]);
        assert_ne!(r.code, 0, "{img} has /var/cache/pkgs: {r:?}");
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn secret_mount_stays_out_of_layers_and_history() {
    let a = Agent::start().with_busybox();
    let value = "TOPSECRET-5f3a9c";
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("s.txt");
    std::fs::write(&secret, value).expect("write secret");
    // The Dockerfile holds the value reversed, so finding it anywhere means a leak.
    let rev: String = value.chars().rev().collect();
    let df = format!(
        "FROM busybox\nRUN --mount=type=secret,id=s,required test \"$(rev /run/secrets/s)\" = {rev} && echo file-ok > /checked\nRUN --mount=type=secret,id=s,env=S_ENV test \"$(echo \"$S_ENV\" | rev)\" = {rev} && echo env-ok > /env-checked\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    // Without the secret: the build stops, naming the secret and the line.
    let r = a.try_cmd(&["build", "-t", "sec:1", &path(&ctx)]);
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("Dockerfile:2") && all.contains("secret \"s\" is required"),
        "{all}"
    );
    let src = format!("id=s,src={}", secret.display());
    a.cmd(&["build", "--secret", &src, "-t", "sec:1", &path(&ctx)]);
    assert_eq!(
        a.cmd(&["run", "--rm", "sec:1", "cat", "/checked", "/env-checked"])
            .stdout,
        "file-ok\nenv-ok\n"
    );
    assert_ne!(
        a.try_cmd(&["run", "--rm", "sec:1", "ls", "/run/secrets"])
            .code,
        0
    );
    let hist = a.cmd(&["history", "--no-trunc", "sec:1"]).stdout;
    assert!(!hist.contains(value), "{hist}");
    let archive = dir.path().join("sec.tar");
    a.cmd(&["save", "-o", &archive.to_string_lossy(), "sec:1"]);
    let bytes = std::fs::read(&archive).expect("read archive");
    assert!(bytes.len() > 1000);
    assert!(
        !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
        "the secret is in the saved image"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn onbuild_triggers_run_in_the_child() {
    let a = Agent::start().with_busybox();
    let parent = context(&[(
        "Dockerfile",
        "FROM busybox\nONBUILD COPY marker.txt /marker\nONBUILD RUN echo triggered > /triggered\n",
    )]);
    a.cmd(&["build", "-t", "parent:1", &path(&parent)]);
    assert_ne!(
        a.try_cmd(&["run", "--rm", "parent:1", "ls", "/triggered"])
            .code,
        0
    );
    let child = context(&[
        (
            "Dockerfile",
            "FROM parent:1\nCMD [\"cat\", \"/marker\", \"/triggered\"]\n",
        ),
        ("marker.txt", "from-child-context\n"),
    ]);
    a.cmd(&["build", "-t", "child:1", &path(&child)]);
    assert_eq!(
        a.cmd(&["run", "--rm", "child:1"]).stdout,
        "from-child-context\ntriggered\n"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn run_network_none_and_refusals_name_the_line() {
    let a = Agent::start().with_busybox();
    // --network=none: only the loopback interface.
    let ok = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --network=none test \"$(grep -c : /proc/net/dev)\" = 1\n",
    )]);
    a.cmd(&["build", "-t", "net:1", &path(&ok)]);
    for (line2, want) in [
        ("RUN --mount=type=ssh true", "type=ssh is not supported"),
        ("RUN --network=host true", "network.host"),
        ("ADD https://example.com/x.tar.gz /x", "need the network"),
    ] {
        let ctx = context(&[("Dockerfile", &format!("FROM busybox\n{line2}\n"))]);
        let r = a.try_cmd(&["build", &path(&ctx)]);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert_ne!(r.code, 0, "{line2}");
        assert!(
            all.contains("Dockerfile:2") && all.contains(want),
            "{line2}: {all}"
        );
    }
}
