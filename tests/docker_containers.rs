//! The Docker API's `/containers` group, driven by the real docker CLIs (Debian's 20.10
//! and the newer one) against a private agent, and by raw requests where the CLI
//! cannot say what we need to check.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A raw request on the agent's Docker socket: (HTTP status, body).
fn curl(a: &Agent, method: &str, path: &str, body: Option<&[u8]>, ctype: &str) -> (u16, Vec<u8>) {
    let sock = a.docker_socket();
    let mut c = Command::new("curl");
    c.args(["-s", "--max-time", "30", "--unix-socket"])
        .arg(&sock)
        .args(["-X", method, "-o", "-", "-w", "\n%{http_code}"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if body.is_some() {
        c.args([
            "-H",
            &format!("Content-Type: {ctype}"),
            "--data-binary",
            "@-",
        ]);
    }
    c.arg(format!("http://d/v1.47{path}"));
    let mut child = c.spawn().expect("curl");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(b) = body {
            stdin.write_all(b).expect("write body");
        }
    }
    let out = child.wait_with_output().expect("curl output");
    let mut v = out.stdout;
    let nl = v.iter().rposition(|&b| b == b'\n').expect("status line");
    let code = String::from_utf8_lossy(&v[nl + 1..])
        .trim()
        .parse()
        .expect("code");
    v.truncate(nl);
    (code, v)
}

fn curl_json(a: &Agent, method: &str, path: &str, body: &str) -> (u16, String) {
    let (c, b) = curl(a, method, path, Some(body.as_bytes()), "application/json");
    (c, String::from_utf8_lossy(&b).into_owned())
}

fn names(a: &Agent) -> Vec<String> {
    let mut v: Vec<String> = a
        .docker(&["ps", "-a", "--format", "{{.Names}}"])
        .stdout
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn run_variants_work_with_both_clis() {
    let a = Agent::start().with_busybox();
    for cli in docker_clis() {
        let r = a.try_docker_with(cli, &["run", "--rm", "busybox", "echo", "hi"], None);
        assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{cli}: {r:?}");
        assert!(names(&a).is_empty(), "{cli}: --rm left {:?}", names(&a));

        // Exit codes, stdout and stderr apart, env, names.
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--name",
                "codes",
                "-e",
                "FOO=bar",
                "busybox",
                "sh",
                "-c",
                "echo out $FOO; echo err >&2; exit 3",
            ],
            None,
        );
        assert_eq!(r.code, 3, "{cli}: {r:?}");
        assert_eq!(r.stdout, "out bar\n");
        assert_eq!(r.stderr, "err\n");
        assert_eq!(a.docker(&["wait", "codes"]).stdout.trim(), "3");
        a.docker(&["rm", "codes"]);

        // Piped stdin reaches the container and its end closes stdin.
        let r = a.try_docker_with(
            cli,
            &["run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done"],
            Some(b"piped\n"),
        );
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, "piped\ndone\n"),
            "{cli}: {r:?}"
        );

        // -a stdout only; start -a of a created container.
        let r = a.try_docker_with(
            cli,
            &[
                "run",
                "--rm",
                "-a",
                "stdout",
                "busybox",
                "sh",
                "-c",
                "echo o; echo e >&2",
            ],
            None,
        );
        assert_eq!(
            (r.stdout.as_str(), r.stderr.as_str()),
            ("o\n", ""),
            "{cli}: {r:?}"
        );
        a.try_docker_with(
            cli,
            &["create", "--name", "later", "busybox", "echo", "started"],
            None,
        )
        .ok();
        let r = a.try_docker_with(cli, &["start", "-a", "later"], None).ok();
        assert_eq!(r.stdout, "started\n");
        a.docker(&["rm", "later"]);

        // -d returns the ID of a running container.
        let id = a
            .try_docker_with(cli, &["run", "-d", "busybox", "sleep", "30"], None)
            .ok()
            .stdout;
        let id = id.trim();
        assert_eq!(id.len(), 64, "{cli}: {id}");
        assert_eq!(
            a.docker(&["inspect", "-f", "{{.State.Running}}", id])
                .stdout
                .trim(),
            "true"
        );
        a.docker(&["rm", "-f", id]);
        assert!(names(&a).is_empty());
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn run_it_has_a_real_terminal() {
    let a = Agent::start().with_busybox();
    for cli in docker_clis() {
        let cmd = format!("{cli} run -it --rm busybox sh");
        let mut c = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("DOCKER_HOST", a.docker_host())
            .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script");
        let mut stdin = c.stdin.take().expect("stdin");
        let out = c.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut r = BufReader::new(out);
            let _ = std::io::Read::read_to_end(&mut r, &mut all);
            let _ = tx.send(all);
        });
        std::thread::sleep(Duration::from_millis(1500));
        stdin
            .write_all(b"echo ok-$((6*7)); tty; exit 5\r")
            .expect("type");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = c.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "docker run -it did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        drop(stdin);
        let text = String::from_utf8_lossy(&rx.recv().expect("output")).replace('\r', "");
        assert_eq!(status.code(), Some(5), "{cli}: {text}");
        assert!(text.contains("ok-42"), "{cli}: {text}");
        assert!(text.contains("/dev/pts/"), "{cli}: no tty: {text}");
        assert!(names(&a).is_empty());
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn ps_lists_filters_and_formats() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "run", "-d", "--name", "up1", "--label", "tier=web", "busybox", "sleep", "60",
    ]);
    a.docker(&["run", "--name", "ex0", "busybox", "true"]);
    assert_eq!(
        a.try_docker(&["run", "--name", "ex2", "busybox", "sh", "-c", "exit 2"])
            .code,
        2
    );
    a.docker(&["create", "--name", "cr", "busybox"]);
    for cli in docker_clis() {
        let ps = |args: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = a
                .try_docker_with(cli, args, None)
                .ok()
                .stdout
                .lines()
                .map(String::from)
                .collect();
            v.sort();
            v
        };
        assert_eq!(ps(&["ps", "--format", "{{.Names}}"]), ["up1"]);
        assert_eq!(
            ps(&["ps", "-a", "--format", "{{.Names}}"]),
            ["cr", "ex0", "ex2", "up1"]
        );
        assert_eq!(ps(&["ps", "-a", "-q"]).len(), 4);
        assert!(ps(&["ps", "-a", "-q"]).iter().all(|l| l.len() == 12));
        assert_eq!(
            ps(&[
                "ps",
                "-a",
                "--filter",
                "status=exited",
                "--format",
                "{{.Names}}"
            ]),
            ["ex0", "ex2"]
        );
        assert_eq!(
            ps(&["ps", "-a", "--filter", "exited=2", "--format", "{{.Names}}"]),
            ["ex2"]
        );
        assert_eq!(
            ps(&[
                "ps",
                "-a",
                "--filter",
                "label=tier=web",
                "--format",
                "{{.Names}}"
            ]),
            ["up1"]
        );
        assert_eq!(
            ps(&["ps", "-a", "--filter", "name=ex", "--format", "{{.Names}}"]),
            ["ex0", "ex2"]
        );
        assert_eq!(
            ps(&[
                "ps",
                "-a",
                "--filter",
                "status=created",
                "--format",
                "{{.Names}}"
            ]),
            ["cr"]
        );
        assert_eq!(
            ps(&["ps", "-a", "--filter", "ancestor=busybox", "-q"]).len(),
            4
        );
        assert_eq!(
            ps(&[
                "ps",
                "-a",
                "--filter",
                "before=ex2",
                "--format",
                "{{.Names}}"
            ]),
            ["ex0", "up1"]
        );
        assert_eq!(
            ps(&[
                "ps",
                "-a",
                "--filter",
                "since=ex2",
                "--format",
                "{{.Names}}"
            ]),
            ["cr"]
        );
        assert_eq!(ps(&["ps", "-n", "1", "--format", "{{.Names}}"]), ["cr"]);
        assert_eq!(
            ps(&[
                "ps",
                "--format",
                "{{.Names}} {{.Image}} {{.Command}} {{.Labels}}"
            ]),
            ["up1 busybox \"sleep 60\" tier=web"]
        );
        let bad = a.try_docker_with(cli, &["ps", "--filter", "status=sleepy"], None);
        assert_ne!(bad.code, 0);
        assert!(bad.stderr.contains("status=sleepy"), "{bad:?}");
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn logs_follow_and_survive_a_client_that_goes_away() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "run",
        "--name",
        "done",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 0.2; echo three",
    ]);
    let r = a.docker(&["logs", "done"]);
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str()),
        ("one\nthree\n", "two\n")
    );
    assert_eq!(a.docker(&["logs", "--tail", "1", "done"]).stdout, "three\n");
    let ts = a.docker(&["logs", "-t", "done"]).stdout;
    assert!(
        ts.lines()
            .all(|l| l.contains("Z one") || l.contains("Z three")),
        "{ts}"
    );

    // logs -f sees lines written after it started, and ends when the container exits.
    a.docker(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 30 ]; do echo tick$i; i=$((i+1)); sleep 0.2; done",
    ]);
    let mut f = Command::new(docker_cli())
        .args(["logs", "-f", "ticker"])
        .env("DOCKER_HOST", a.docker_host())
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let mut lines = BufReader::new(f.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.expect("line");
        seen.push(l);
        if seen.len() == 30 {
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("tick29"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if f.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f did not end with the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A follower killed mid-stream: the agent keeps serving.
    a.docker(&[
        "run",
        "-d",
        "--name",
        "forever",
        "busybox",
        "sh",
        "-c",
        "while :; do echo x; sleep 0.1; done",
    ]);
    for _ in 0..3 {
        let mut f = Command::new(docker_cli())
            .args(["logs", "-f", "forever"])
            .env("DOCKER_HOST", a.docker_host())
            .stdout(Stdio::piped())
            .spawn()
            .expect("logs -f");
        let mut r = BufReader::new(f.stdout.take().expect("stdout"));
        let mut l = String::new();
        r.read_line(&mut l).expect("a line");
        assert_eq!(l, "x\n");
        f.kill().expect("kill");
        let _ = f.wait();
    }
    assert_eq!(
        a.docker(&["inspect", "-f", "{{.State.Status}}", "forever"])
            .stdout
            .trim(),
        "running"
    );
    a.docker(&["rm", "-f", "forever"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn lifecycle_operations_answer_like_docker() {
    let a = Agent::start().with_busybox();
    a.docker(&["run", "-d", "--name", "life", "busybox", "sleep", "300"]);
    // Start of a running container: 304; stop twice: 204 then 304.
    assert_eq!(curl(&a, "POST", "/containers/life/start", None, "").0, 304);
    a.docker(&["pause", "life"]);
    assert_eq!(
        a.docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "life"
        ])
        .stdout
        .trim(),
        "paused true"
    );
    let r = a.try_docker(&["pause", "life"]);
    assert!(r.stderr.contains("already paused"), "{r:?}");
    a.docker(&["unpause", "life"]);
    assert_eq!(
        a.docker(&["inspect", "-f", "{{.State.Status}}", "life"])
            .stdout
            .trim(),
        "running"
    );
    a.docker(&["rename", "life", "life2"]);
    assert_eq!(names(&a), ["life2"]);
    a.docker(&[
        "update",
        "--memory",
        "96m",
        "--memory-swap",
        "-1",
        "--restart",
        "on-failure:2",
        "life2",
    ]);
    assert_eq!(
        a.docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
            "life2"
        ])
        .stdout
        .trim(),
        "100663296 on-failure"
    );
    let pid1 = a
        .docker(&["inspect", "-f", "{{.State.Pid}}", "life2"])
        .stdout;
    a.docker(&["restart", "-t", "1", "life2"]);
    let pid2 = a
        .docker(&["inspect", "-f", "{{.State.Pid}}", "life2"])
        .stdout;
    assert_ne!(pid1, pid2);
    let r = a.try_docker(&["rm", "life2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("You cannot remove a running container"),
        "{r:?}"
    );
    a.docker(&["stop", "-t", "1", "life2"]);
    assert_eq!(curl(&a, "POST", "/containers/life2/stop", None, "").0, 304);
    let r = a.try_docker(&["kill", "life2"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not running"), "{r:?}");
    // A signal of our choosing reaches the process.
    a.docker(&[
        "run",
        "-d",
        "--name",
        "trapper",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while :; do sleep 0.1; done",
    ]);
    a.docker(&["kill", "-s", "USR1", "trapper"]);
    assert_eq!(a.docker(&["wait", "trapper"]).stdout.trim(), "42");
    a.docker(&["rm", "trapper"]);

    // wait for an exit code; rm -f of a running one; prune takes stopped ones only.
    a.docker(&[
        "run",
        "-d",
        "--name",
        "seven",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; exit 7",
    ]);
    assert_eq!(a.docker(&["wait", "seven"]).stdout.trim(), "7");
    a.docker(&["run", "-d", "--name", "runs", "busybox", "sleep", "300"]);
    a.docker(&["run", "-d", "--name", "gone", "busybox", "sleep", "300"]);
    a.docker(&["rm", "-f", "gone"]);
    let r = a.docker(&["container", "prune", "-f"]);
    assert!(r.stdout.contains("Total reclaimed space"), "{r:?}");
    assert_eq!(names(&a), ["runs"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn inspect_stats_top_and_memory_limits() {
    let a = Agent::start().with_busybox();
    for cli in docker_clis() {
        let name = format!("busy{}", cli.len());
        a.try_docker_with(
            cli,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--memory",
                "64m",
                "busybox",
                "sh",
                "-c",
                "while :; do :; done",
            ],
            None,
        )
        .ok();
        let r = a
            .try_docker_with(
                cli,
                &[
                    "inspect",
                    "-f",
                    "{{.HostConfig.Memory}} {{.Config.Image}} {{.State.Running}}",
                    &name,
                ],
                None,
            )
            .ok();
        assert_eq!(r.stdout.trim(), "67108864 busybox true");
        let r = a
            .try_docker_with(
                cli,
                &[
                    "stats",
                    "--no-stream",
                    "--format",
                    "{{.CPUPerc}}|{{.MemUsage}}|{{.NetIO}}|{{.PIDs}}",
                    &name,
                ],
                None,
            )
            .ok();
        let cols: Vec<&str> = r.stdout.trim().split('|').collect();
        let cpu: f64 = cols[0].trim_end_matches('%').parse().expect("cpu %");
        assert!(cpu > 1.0, "{cli}: a busy loop uses CPU: {}", r.stdout);
        assert!(cols[1].ends_with("/ 64MiB"), "{cli}: {}", r.stdout);
        assert!(!cols[1].starts_with("0B"), "{cli}: {}", r.stdout);
        assert_eq!(cols[3], "1");
        let top = a.try_docker_with(cli, &["top", &name], None).ok().stdout;
        assert!(top.contains("PID") && top.contains("while :"), "{top}");
        let top = a
            .try_docker_with(cli, &["top", &name, "-o", "pid,comm"], None)
            .ok()
            .stdout;
        assert!(
            top.lines()
                .next()
                .is_some_and(|h| h.split_whitespace().eq(["PID", "COMMAND"])),
            "{top}"
        );
        a.docker(&["rm", "-f", &name]);
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn published_ports_volumes_and_networks() {
    let a = Agent::start().with_busybox();
    let port = 20000 + (std::process::id() % 20000) as u16;
    a.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        "echo served > /tmp/index.html; httpd -f -p 80 -h /tmp",
    ]);
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut body = String::new();
    a.wait_until("the published port", Duration::from_secs(15), || {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "2", &url])
            .output()
            .expect("curl");
        body = String::from_utf8_lossy(&o.stdout).into_owned();
        body == "served\n"
    });
    assert_eq!(
        a.docker(&["port", "web"]).stdout.trim(),
        format!("80/tcp -> 0.0.0.0:{port}")
    );
    let ps = a.docker(&["ps", "--format", "{{.Ports}}"]).stdout;
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");

    // Bind and named volumes, read and written from both sides.
    let host = a.dir.path().join("bind");
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::write(host.join("in"), "from host").expect("write");
    let r = a.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/b", host.display()),
        "-v",
        "named:/n",
        "busybox",
        "sh",
        "-c",
        "cat /b/in; echo from-ctr > /b/out; echo kept > /n/f",
    ]);
    assert_eq!(r.stdout, "from host");
    assert_eq!(
        std::fs::read_to_string(host.join("out")).expect("out"),
        "from-ctr\n"
    );
    assert_eq!(
        a.docker(&["run", "--rm", "-v", "named:/n", "busybox", "cat", "/n/f"])
            .stdout,
        "kept\n"
    );
    let mounts = a.docker(&[
        "run",
        "-d",
        "--name",
        "mro",
        "--mount",
        "type=volume,source=named,target=/n,readonly",
        "busybox",
        "sleep",
        "60",
    ]);
    let _ = mounts;
    assert_eq!(
        a.docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Name}}:{{.RW}}{{end}}",
            "mro"
        ])
        .stdout
        .trim(),
        "named:false"
    );

    // A user-defined network (made with skiff: the same engine) by name.
    a.cmd(&["network", "create", "backnet"]);
    a.docker(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "backnet",
        "--network-alias",
        "db",
        "busybox",
        "sleep",
        "60",
    ]);
    let r = a.docker(&[
        "run",
        "--rm",
        "--network",
        "backnet",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "db",
    ]);
    assert!(r.stdout.contains("1 packets received"), "{r:?}");
    assert_eq!(
        a.docker(&[
            "ps",
            "--filter",
            "network=backnet",
            "--format",
            "{{.Names}}"
        ])
        .stdout
        .trim(),
        "peer"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn cp_both_ways_and_refuses_escapes() {
    let a = Agent::start().with_busybox();
    let d = a.dir.path().join("cp");
    std::fs::create_dir_all(d.join("tree/sub")).expect("mkdir");
    std::fs::write(d.join("tree/sub/f"), "deep").expect("write");
    std::fs::write(d.join("one.txt"), "one").expect("write");
    a.docker(&["run", "-d", "--name", "box", "busybox", "sleep", "300"]);
    a.docker(&["create", "--name", "stopped", "busybox", "true"]);
    for c in ["box", "stopped"] {
        a.docker(&[
            "cp",
            &d.join("one.txt").to_string_lossy(),
            &format!("{c}:/tmp/"),
        ]);
        a.docker(&[
            "cp",
            &d.join("tree").to_string_lossy(),
            &format!("{c}:/tmp/tree"),
        ]);
        let out = d.join(format!("out-{c}"));
        a.docker(&["cp", &format!("{c}:/tmp/tree"), &out.to_string_lossy()]);
        assert_eq!(
            std::fs::read_to_string(out.join("sub/f")).expect("copied back"),
            "deep"
        );
        a.docker(&[
            "cp",
            &format!("{c}:/tmp/one.txt"),
            &d.join(format!("one-{c}")).to_string_lossy(),
        ]);
        assert_eq!(
            std::fs::read_to_string(d.join(format!("one-{c}"))).expect("file"),
            "one"
        );
        let r = a.try_docker(&["cp", &format!("{c}:/nope"), &d.to_string_lossy()]);
        assert!(
            r.stderr
                .contains("Could not find the file /nope in container"),
            "{r:?}"
        );
    }

    // A tar with `../` climbing out is refused; an absolute symlink stays inside.
    let victim = a.dir.path().join("victim");
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let rel = format!("../../../../../../../..{}", victim.display());
    h.as_gnu_mut().expect("gnu").name[..rel.len()].copy_from_slice(rel.as_bytes());
    h.set_cksum();
    evil.append(&h, &b"pwned"[..]).expect("append");
    let evil = evil.into_inner().expect("tar");
    let (code, body) = curl(
        &a,
        "PUT",
        "/containers/box/archive?path=/tmp",
        Some(&evil),
        "application/x-tar",
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(!victim.exists());

    let mut sl = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    sl.append_link(&mut h, "esc", a.dir.path()).expect("link");
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    sl.append_data(&mut h, "esc/victim", &b"pwned"[..])
        .expect("file");
    let sl = sl.into_inner().expect("tar");
    for c in ["box", "stopped"] {
        let (code, _) = curl(
            &a,
            "PUT",
            &format!("/containers/{c}/archive?path=/tmp"),
            Some(&sl),
            "application/x-tar",
        );
        assert!(code == 200 || code == 400, "{code}");
        assert!(!victim.exists(), "{c}: the symlink led outside");
    }
    let (code, body) = curl(
        &a,
        "PUT",
        "/containers/box/archive?path=/missing",
        Some(&sl),
        "application/x-tar",
    );
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    let (code, _) = curl(
        &a,
        "HEAD",
        "/containers/box/archive?path=/etc/passwd",
        None,
        "",
    );
    assert_eq!(code, 200);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn export_and_diff_show_the_container_filesystem() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "run",
        "--name",
        "ch",
        "busybox",
        "sh",
        "-c",
        "echo x > /added; rm /bin/mt; echo y >> /etc/passwd",
    ]);
    let diff = a.docker(&["diff", "ch"]).stdout;
    let lines: Vec<&str> = diff.lines().collect();
    for want in ["A /added", "D /bin/mt", "C /etc/passwd", "C /etc", "C /bin"] {
        assert!(lines.contains(&want), "{want} missing from {diff}");
    }
    assert!(!diff.contains("/etc/hostname"), "{diff}");
    let tarfile = a.dir.path().join("ch.tar");
    a.docker(&["export", "-o", &tarfile.to_string_lossy(), "ch"]);
    let list = Command::new("tar")
        .arg("tf")
        .arg(&tarfile)
        .output()
        .expect("tar");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines().any(|l| l.trim_start_matches("./") == "added"),
        "{list}"
    );
    assert!(
        !list.lines().any(|l| l.trim_start_matches("./") == "bin/mt"),
        "{list}"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn one_engine_for_both_clis() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "run",
        "-d",
        "--name",
        "fromdocker",
        "busybox",
        "sh",
        "-c",
        "echo dk-log; sleep 300",
    ]);
    let ps = a.cmd(&["ps"]).stdout;
    assert!(ps.contains("fromdocker"), "{ps}");
    assert_eq!(
        a.cmd(&["exec", "fromdocker", "echo", "via-skiff"]).stdout,
        "via-skiff\n"
    );
    a.wait_until("the log line", Duration::from_secs(10), || {
        a.cmd(&["logs", "fromdocker"]).stdout == "dk-log\n"
    });
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "fromskiff",
        "busybox",
        "sh",
        "-c",
        "echo sk-log; sleep 300",
    ]);
    let ps = a.docker(&["ps", "--format", "{{.Names}}"]).stdout;
    assert!(ps.lines().any(|l| l == "fromskiff"), "{ps}");
    a.wait_until("the log line", Duration::from_secs(10), || {
        a.docker(&["logs", "fromskiff"]).stdout == "sk-log\n"
    });
    a.docker(&["rm", "-f", "fromskiff"]);
    assert!(!a.cmd(&["ps", "-a"]).stdout.contains("fromskiff"));
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn bad_create_input_is_refused_and_creates_nothing() {
    let a = Agent::start().with_busybox();
    a.docker(&["create", "--name", "taken", "busybox"]);
    let before = names(&a);
    let (code, body) = curl_json(&a, "POST", "/containers/create?name=x1", "{\"Image\": ");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid JSON"), "{body}");
    let (code, body) = curl_json(
        &a,
        "POST",
        "/containers/create?name=x2",
        r#"{"Image":"busybox","Cmd":5}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Cmd"), "{body}");
    let (code, body) = curl_json(
        &a,
        "POST",
        "/containers/create?name=x3",
        r#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("HostConfig.Memory"), "{body}");
    let (code, body) = curl_json(
        &a,
        "POST",
        "/containers/create?name=x4",
        r#"{"Image":"busybox","HostConfig":{"LogConfig":{"Type":"syslog"}}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("syslog"), "{body}");
    let (code, body) = curl_json(
        &a,
        "POST",
        "/containers/create?name=x5",
        r#"{"Image":"busybox:nope"}"#,
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("No such image: busybox:nope"), "{body}");
    let (code, body) = curl_json(
        &a,
        "POST",
        "/containers/create?name=taken",
        r#"{"Image":"busybox"}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("The container name \\\"/taken\\\" is already in use"),
        "{body}"
    );
    assert_eq!(names(&a), before);
    let (code, body) = curl_json(
        &a,
        "POST",
        "/containers/create?name=ok1",
        r#"{"Image":"busybox","Cmd":["true"]}"#,
    );
    assert_eq!(code, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["Id"].as_str().map(str::len), Some(64));
    assert!(v["Warnings"].is_array());
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn attach_to_a_running_container() {
    let a = Agent::start().with_busybox();
    for (i, cli) in docker_clis().into_iter().enumerate() {
        let name = format!("att{i}");
        a.docker(&[
            "run",
            "-d",
            "-i",
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "while read l; do echo got-$l; done; echo bye; exit 4",
        ]);
        let mut c = Command::new(cli)
            .args(["attach", &name])
            .env("DOCKER_HOST", a.docker_host())
            .env("DOCKER_CONFIG", a.dir.path().join("docker-config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("attach");
        let mut stdin = c.stdin.take().expect("stdin");
        let mut out = BufReader::new(c.stdout.take().expect("stdout"));
        // The attach is up once a line goes through.
        stdin.write_all(b"one\n").expect("write");
        let mut l = String::new();
        out.read_line(&mut l).expect("read");
        assert_eq!(l, "got-one\n", "{cli}");
        // Closing our stdin closes the container's: its loop ends, and so does attach.
        drop(stdin);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).expect("rest");
        assert_eq!(rest, "bye\n", "{cli}");
        let status = c.wait().expect("wait");
        assert_eq!(status.code(), Some(4), "{cli}");
        assert_eq!(a.docker(&["wait", &name]).stdout.trim(), "4");
    }
}
