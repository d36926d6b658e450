//! End-to-end tests of remote use: `--host tcp://` (mutual TLS with a client certificate
//! from `skiff cluster client-cert`), `--host ssh://` through a private sshd on loopback,
//! and contexts. Real agents, the real binary, as root.

mod common;
#[path = "common/cluster.rs"]
mod harness;

use common::{bin, Agent, Run};
use harness::free_port;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `skiff ARGS` with a private client config dir and no inherited host/context settings.
fn skiff(cfg: &Path, envs: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = Command::new(bin());
    c.args(args)
        .env("SKIFF_CONFIG", cfg)
        .env_remove("SKIFF_HOST")
        .env_remove("SKIFF_CONTEXT")
        .env_remove("SKIFF_TLS_DIR")
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().expect("run skiff");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(
        r.code, 0,
        "{what} failed: stdout={:?} stderr={:?}",
        r.stdout, r.stderr
    );
    r
}

/// Refused with exit 125 and a one-line message containing `needle`.
fn refused(r: Run, needle: &str) {
    assert_eq!(r.code, 125, "stdout={:?} stderr={:?}", r.stdout, r.stderr);
    assert!(r.stderr.contains(needle), "{:?} lacks {needle:?}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{:?}", r.stderr);
}

/// A tlsdir assembled from other files (node certificates, another cluster's).
fn tlsdir(base: &Path, name: &str, ca: &Path, cert_key: Option<(&Path, &Path)>) -> String {
    let d = base.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::copy(ca, d.join("ca.pem")).expect("ca");
    if let Some((c, k)) = cert_key {
        std::fs::copy(c, d.join("cert.pem")).expect("cert");
        std::fs::copy(k, d.join("key.pem")).expect("key");
    }
    d.to_string_lossy().into_owned()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn tcp_engine_api_takes_client_certificates_of_its_cluster_only() {
    let mut a = Agent::start();
    let (cluster_port, api_port) = (free_port(), free_port());
    a.restart_with_config(&format!(
        "listen_addr: 127.0.0.1:{cluster_port}\napi_listen_addr: 127.0.0.1:{api_port}\n"
    ));
    let a = a.with_busybox();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("cfg");
    let tls = tmp.path().join("tls");
    let tls_s = tls.to_string_lossy().into_owned();

    // Issued over the local socket; the key is 0600 and the files chain to the CA.
    let r = ok(
        skiff(
            &cfg,
            &[],
            &[
                "--host",
                &a.host(),
                "cluster",
                "client-cert",
                "--out",
                &tls_s,
                "--name",
                "ci-laptop",
                "--expiry",
                "2d",
            ],
        ),
        "client-cert",
    );
    assert!(r.stdout.contains("ci-laptop"), "{}", r.stdout);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls.join("key.pem"))
        .expect("key.pem")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for f in ["ca.pem", "cert.pem"] {
        assert!(tls.join(f).exists(), "{f}");
    }

    let host = format!("tcp://127.0.0.1:{api_port}");
    let remote = |args: &[&str]| {
        let mut v = vec!["--host", &host, "--tlsdir", &tls_s];
        v.extend_from_slice(args);
        skiff(&cfg, &[], &v)
    };
    // Engine, cluster and orchestrator APIs all answer over TLS.
    ok(remote(&["ps"]), "ps over tcp");
    let r = ok(
        remote(&["run", "--rm", "busybox", "echo", "hello-over-tls"]),
        "run over tcp",
    );
    assert!(r.stdout.contains("hello-over-tls"), "{}", r.stdout);
    ok(
        remote(&["run", "-d", "--name", "tlsweb", "busybox", "sleep", "60"]),
        "run -d",
    );
    let r = ok(remote(&["ps", "--format", "{{.Names}}"]), "ps");
    assert!(r.stdout.lines().any(|l| l == "tlsweb"), "{}", r.stdout);
    ok(remote(&["rm", "-f", "tlsweb"]), "rm");
    let r = ok(remote(&["node", "ls", "-q"]), "node ls");
    assert_eq!(r.stdout.trim().lines().count(), 1, "{}", r.stdout);
    let stack = tmp.path().join("stack.yaml");
    std::fs::write(
        &stack,
        "services:\n  app:\n    image: busybox:latest\n    command: [\"sleep\", \"300\"]\n",
    )
    .expect("stack");
    ok(
        remote(&["stack", "deploy", "-c", &stack.to_string_lossy(), "rem"]),
        "stack deploy over tcp",
    );
    let r = ok(
        remote(&["service", "ls", "--format", "{{.Name}}"]),
        "service ls",
    );
    assert!(r.stdout.lines().any(|l| l == "rem_app"), "{}", r.stdout);
    a.wait_until("the stack's task running", Duration::from_secs(30), || {
        a.cmd(&["ps", "-q", "--filter", "name=rem_app"])
            .stdout
            .lines()
            .count()
            == 1
    });
    ok(remote(&["stack", "rm", "rem"]), "stack rm over tcp");

    // A context remembers host and tlsdir.
    ok(
        skiff(
            &cfg,
            &[],
            &[
                "context", "create", "tls", "--host", &host, "--tlsdir", &tls_s,
            ],
        ),
        "context create",
    );
    ok(
        skiff(&cfg, &[], &["--context", "tls", "ps"]),
        "ps via context",
    );

    // No client certificate (the CA alone): the agent refuses the handshake.
    let ca = tls.join("ca.pem");
    let none = tlsdir(tmp.path(), "nocert", &ca, None);
    refused(
        skiff(&cfg, &[], &["--host", &host, "--tlsdir", &none, "ps"]),
        "requires a client certificate",
    );
    // No TLS files at all: told where to get them.
    refused(
        skiff(
            &cfg,
            &[],
            &["--host", &host, "--tlsdir", "/nonexistent", "ps"],
        ),
        "skiff cluster client-cert",
    );
    // The node's own certificate is of the right CA but is no client certificate.
    let ctls = a.root.join("cluster/tls");
    let node = tlsdir(
        tmp.path(),
        "node",
        &ctls.join("ca.crt"),
        Some((&ctls.join("node.crt"), &ctls.join("node.key"))),
    );
    refused(
        skiff(&cfg, &[], &["--host", &host, "--tlsdir", &node, "ps"]),
        "client certificates of its own cluster only",
    );

    // A client certificate of a second cluster.
    let b = Agent::start();
    let other = tmp.path().join("other");
    ok(
        skiff(
            &cfg,
            &[],
            &[
                "--host",
                &b.host(),
                "cluster",
                "client-cert",
                "--out",
                &other.to_string_lossy(),
            ],
        ),
        "client-cert of cluster b",
    );
    // With cluster b's CA the client already refuses cluster a's agent...
    refused(
        skiff(
            &cfg,
            &[],
            &["--host", &host, "--tlsdir", &other.to_string_lossy(), "ps"],
        ),
        "another cluster",
    );
    // ...and with cluster a's CA, the agent refuses b's certificate.
    let mixed = tlsdir(
        tmp.path(),
        "mixed",
        &ca,
        Some((&other.join("cert.pem"), &other.join("key.pem"))),
    );
    refused(
        skiff(&cfg, &[], &["--host", &host, "--tlsdir", &mixed, "ps"]),
        "refused the certificate",
    );
    assert!(
        a.log().contains("refused Engine API connection"),
        "the agent logs refusals"
    );

    // Plain TCP gets no HTTP answer, and no HTTP/2 either: at most a TLS alert.
    for probe in [
        &b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api_port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(probe).expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(
            got.is_empty() || got[0] == 0x15,
            "plain TCP got an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    // On the cluster port, a client certificate carries no node identity: node-only
    // RPCs (raft, dispatcher) refuse it.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let read = |f: &str| std::fs::read_to_string(tls.join(f)).expect("tls file");
        let id = skiff_controller::tls::Identity {
            ca_pem: read("ca.pem"),
            cert_pem: read("cert.pem"),
            key_pem: read("key.pem"),
        };
        let cfg = skiff_controller::tls::client_config(&id.ca_pem, Some(&id)).expect("tls");
        let ch = skiff_controller::tls::channel(&format!("127.0.0.1:{cluster_port}"), cfg)
            .expect("channel");
        let mut raft = skiff_proto::cluster::raft_client::RaftClient::new(ch.clone());
        let e = raft
            .send(skiff_proto::cluster::RaftBatch { messages: vec![] })
            .await
            .expect_err("raft with a client certificate");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let mut disp =
            skiff_proto::orchestrator::dispatcher_client::DispatcherClient::new(ch.clone());
        let e = disp
            .assignments(skiff_proto::orchestrator::AssignmentsRequest::default())
            .await
            .expect_err("dispatcher with a client certificate");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    });
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn revoked_client_certificates_are_refused_on_every_nodes_api_port() {
    common::require_root();
    let (mapi, wapi) = (free_port(), free_port());
    let mapi_flag = format!("127.0.0.1:{mapi}");
    let m = harness::Member::start_with(true, None, &["--api-listen-addr", &mapi_flag]);
    let token = m.cmd(&["cluster", "join-token", "-q", "worker"]);
    let wapi_flag = format!("127.0.0.1:{wapi}");
    let w = harness::Member::start_with(
        false,
        Some((m.port.expect("cluster port"), token.trim().to_string())),
        &["--api-listen-addr", &wapi_flag],
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("cfg");
    let mhost = m.host();
    // `skiff cluster client-cert ARGS` on the manager's local socket.
    let certs = |args: &[&str]| {
        let mut v = vec!["--host", mhost.as_str(), "cluster", "client-cert"];
        v.extend_from_slice(args);
        skiff(&cfg, &[], &v)
    };
    // `skiff ARGS` on a node's API port with the certificate in `dir`.
    let at = |port: u16, dir: &str, args: &[&str]| {
        let host = format!("tcp://127.0.0.1:{port}");
        let mut v = vec!["--host", host.as_str(), "--tlsdir", dir];
        v.extend_from_slice(args);
        skiff(&cfg, &[], &v)
    };
    let mut dirs = Vec::new();
    for name in ["alice", "bob"] {
        let d = tmp.path().join(name).to_string_lossy().into_owned();
        let r = ok(certs(&["--out", &d, "--name", name]), "client-cert");
        assert!(r.stdout.contains("serial "), "{}", r.stdout);
        dirs.push(d);
    }
    // The worker's port answers once its assignments brought the (empty) list.
    harness::wait_until("the worker's API port", Duration::from_secs(20), || {
        at(wapi, &dirs[0], &["ps"]).code == 0
    });
    for port in [mapi, wapi] {
        for d in &dirs {
            ok(at(port, d, &["ps"]), "a valid client certificate");
        }
    }
    let ls = ok(certs(&["ls"]), "client-cert ls");
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", ls.stdout);
    assert!(lines[0].starts_with("NAME") && lines[0].contains("REVOKED"));
    assert!(lines[1].starts_with("alice") && lines[1].trim_end().ends_with('-'));

    // Revoked by name: refused at once on the manager, on the worker as soon as its
    // assignments carry the list; the other certificate keeps working.
    let r = ok(certs(&["revoke", "alice"]), "revoke");
    assert!(
        r.stdout.starts_with("revoked ") && r.stdout.contains("(alice)"),
        "{}",
        r.stdout
    );
    let r = at(mapi, &dirs[0], &["ps"]);
    assert!(revoked(&r), "{r:?}");
    harness::wait_until(
        "the worker to refuse alice",
        Duration::from_secs(10),
        || revoked(&at(wapi, &dirs[0], &["ps"])),
    );
    for port in [mapi, wapi] {
        ok(at(port, &dirs[1], &["ps"]), "bob after alice's revocation");
    }
    let ls = ok(certs(&["ls"]), "client-cert ls");
    let alice = ls.stdout.lines().nth(1).expect("alice's row");
    assert!(
        !alice.trim_end().ends_with('-'),
        "revoked time shown: {alice}"
    );
    // Bob revoked by serial, through the API port with bob's own certificate.
    let serials = ok(certs(&["ls", "-q"]), "ls -q").stdout;
    let bob_serial = serials.lines().nth(1).expect("bob's serial").to_string();
    ok(
        at(
            mapi,
            &dirs[1],
            &["cluster", "client-cert", "revoke", &bob_serial],
        ),
        "revoke by serial",
    );
    let r = at(mapi, &dirs[1], &["ps"]);
    assert!(revoked(&r), "{r:?}");
    let r = certs(&["revoke", "carol"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("no client certificate named"),
        "{}",
        r.stderr
    );
    drop(w);
}

/// Refused because its client certificate was revoked.
fn revoked(r: &Run) -> bool {
    r.code != 0 && r.stderr.contains("was revoked")
}

/// A private sshd on a loopback port, killed (and its files removed) on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    made_privsep_dir: bool,
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd missing: install the test packages with deploy/deps.sh --test"
        );
        let dir = tempfile::Builder::new()
            .prefix("skssh")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        for key in ["hostkey", "userkey"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(st.success(), "ssh-keygen");
        }
        std::fs::copy(d.join("userkey.pub"), d.join("authorized_keys")).expect("keys");
        let bin_dir = bin().parent().expect("bin dir").to_path_buf();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nPidFile none\n\
                 SetEnv PATH={}:/usr/sbin:/usr/bin:/sbin:/bin\n",
                bin_dir.display(),
                d = d.display()
            ),
        )
        .expect("sshd_config");
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {d}/userkey\n  IdentitiesOnly yes\n  BatchMode yes\n\
                 StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                d = d.display()
            ),
        )
        .expect("ssh_config");
        // sshd's privilege separation directory (normally made by its service unit).
        let privsep = Path::new("/run/sshd");
        let made_privsep_dir = !privsep.exists();
        if made_privsep_dir {
            std::fs::create_dir_all(privsep).expect("/run/sshd");
        }
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        let mut s = Sshd {
            child,
            port,
            dir,
            made_privsep_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("sshd exited ({st}): {}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `SKIFF_SSH_COMMAND`: ssh with this test's key and no known-hosts prompts.
    fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.dir.path().join("ssh_config").display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.made_privsep_dir {
            let _ = std::fs::remove_dir(Path::new("/run/sshd"));
        }
    }
}

/// Processes whose command line contains `needle` (other than this test).
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(cmd);
        }
    }
    out
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn ssh_host_reaches_the_remote_agent_through_dial_stdio() {
    let a = Agent::start().with_busybox();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("cfg");
    let ssh_cmd = sshd.ssh_command();
    let env = [("SKIFF_SSH_COMMAND", ssh_cmd.as_str())];
    let sock = a.socket.to_string_lossy().into_owned();
    let host = format!(
        "ssh://root@127.0.0.1:{}?binary={}&socket={sock}",
        sshd.port,
        bin().display()
    );
    let r = skiff(&cfg, &env, &["--host", &host, "ps"]);
    assert_eq!(
        r.code,
        0,
        "ps over ssh: {r_err}; sshd log: {log}",
        r_err = r.stderr,
        log = sshd.log()
    );
    assert!(r.stdout.starts_with("CONTAINER ID"), "{}", r.stdout);
    let r = ok(
        skiff(
            &cfg,
            &env,
            &[
                "--host",
                &host,
                "run",
                "--rm",
                "busybox",
                "echo",
                "hello-over-ssh",
            ],
        ),
        "run over ssh",
    );
    assert!(r.stdout.contains("hello-over-ssh"), "{}", r.stdout);
    ok(
        skiff(
            &cfg,
            &env,
            &[
                "--host", &host, "run", "-d", "--name", "sshweb", "busybox", "sleep", "60",
            ],
        ),
        "run -d over ssh",
    );
    assert_eq!(a.inspect("sshweb", "{{.State.Running}}"), "true");
    ok(
        skiff(&cfg, &env, &["--host", &host, "rm", "-f", "sshweb"]),
        "rm",
    );
    // The remote skiff found on the remote PATH (the sshd puts the built binary first).
    let by_path = format!("ssh://root@127.0.0.1:{}?socket={sock}", sshd.port);
    ok(skiff(&cfg, &env, &["--host", &by_path, "version"]), "PATH");

    // ssh's own errors come through as one line, exit 125.
    let closed = format!("ssh://root@127.0.0.1:{}", free_port());
    refused(
        skiff(&cfg, &env, &["--host", &closed, "ps"]),
        "Connection refused",
    );
    let missing = format!(
        "ssh://root@127.0.0.1:{}?binary=/nonexistent/skiff&socket={sock}",
        sshd.port
    );
    refused(skiff(&cfg, &env, &["--host", &missing, "ps"]), "?binary=");
    let nosock = format!(
        "ssh://root@127.0.0.1:{}?binary={}&socket=/nonexistent.sock",
        sshd.port,
        bin().display()
    );
    refused(
        skiff(&cfg, &env, &["--host", &nosock, "ps"]),
        "dial-stdio: cannot connect",
    );

    // Every ssh and dial-stdio the CLI started is gone once it exited.
    a.wait_until("no ssh left behind", Duration::from_secs(10), || {
        processes_with(&format!("unix://{sock} system dial-stdio")).is_empty()
    });
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn contexts_choose_the_agent() {
    let a = Agent::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("cfg");
    let host = a.host();
    let run = |envs: &[(&str, &str)], args: &[&str]| skiff(&cfg, envs, args);

    let r = ok(run(&[], &["context", "ls"]), "ls");
    assert!(r.stdout.contains("default *"), "{}", r.stdout);
    ok(
        run(
            &[],
            &[
                "context",
                "create",
                "loc",
                "--host",
                &host,
                "--description",
                "test agent",
            ],
        ),
        "create",
    );
    let r = run(&[], &["context", "create", "loc", "--host", &host]);
    assert_ne!(r.code, 0, "duplicate accepted");
    let r = run(&[], &["context", "create", "default", "--host", &host]);
    assert_ne!(r.code, 0, "default re-created");
    let r = run(&[], &["context", "create", "bad", "--host", "http://x"]);
    assert_ne!(r.code, 0, "http:// accepted");

    ok(run(&[], &["context", "use", "loc"]), "use");
    let r = ok(
        run(
            &[],
            &[
                "context",
                "ls",
                "--format",
                "{{.Name}}|{{.Host}}|{{.Current}}",
            ],
        ),
        "ls --format",
    );
    assert!(
        r.stdout.lines().any(|l| l == format!("loc|{host}|true")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.lines().any(|l| l.starts_with("default|")),
        "{}",
        r.stdout
    );
    let r = ok(run(&[], &["context", "ls", "--format", "json"]), "json");
    let v: serde_json::Value =
        serde_json::from_str(r.stdout.lines().nth(1).expect("two lines")).expect("json");
    assert_eq!(v["Description"], "test agent");
    let r = ok(run(&[], &["context", "inspect"]), "inspect");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v[0]["Name"], "loc");
    assert_eq!(v[0]["Host"], host);

    // The current context reaches the agent with no --host at all.
    let r = ok(run(&[], &["ps"]), "via the current context");
    assert!(r.stdout.starts_with("CONTAINER ID"), "{}", r.stdout);
    // Precedence: SKIFF_HOST beats the current context; --context beats SKIFF_HOST;
    // --host beats --context; SKIFF_CONTEXT beats the current context.
    let nowhere = "unix:///nonexistent/skiff.sock";
    refused(
        run(&[("SKIFF_HOST", nowhere)], &["ps"]),
        "/nonexistent/skiff.sock",
    );
    ok(
        run(&[("SKIFF_HOST", nowhere)], &["--context", "loc", "ps"]),
        "--context over SKIFF_HOST",
    );
    ok(
        run(&[], &["--host", &host, "--context", "nosuch", "ps"]),
        "--host over --context",
    );
    let r = run(&[("SKIFF_CONTEXT", "nosuch")], &["ps"]);
    assert!(
        r.code != 0 && r.stderr.contains("\"nosuch\" does not exist"),
        "{:?}",
        r.stderr
    );

    // The current context is not removed by accident; -f falls back to default.
    let r = run(&[], &["context", "rm", "loc"]);
    assert!(r.code != 0 && r.stderr.contains("in use"), "{:?}", r.stderr);
    assert_ne!(run(&[], &["context", "rm", "default"]).code, 0);
    ok(run(&[], &["context", "rm", "-f", "loc"]), "rm -f");
    let r = ok(run(&[], &["context", "ls", "-q"]), "ls -q");
    assert_eq!(r.stdout, "default\n");
    // config.json keeps other keys (registry logins) across context switches.
    let conf: PathBuf = cfg.join("config.json");
    std::fs::write(&conf, r#"{"auths":{"r.example":{"auth":"eDp5"}}}"#).expect("write");
    ok(
        run(&[], &["context", "create", "again", "--host", &host]),
        "create",
    );
    ok(run(&[], &["context", "use", "again"]), "use");
    let raw = std::fs::read_to_string(&conf).expect("config.json");
    assert!(raw.contains("r.example") && raw.contains("again"), "{raw}");
    ok(run(&[], &["context", "use", "default"]), "use default");
}
