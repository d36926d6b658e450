//! Reaching an agent on another host, as Docker's CLI does:
//!
//! - `ssh://[USER@]HOST[:PORT][?binary=PATH&socket=PATH]`: each connection runs
//!   `ssh ... -- skiff [--host unix://SOCKET] system dial-stdio` and speaks gRPC over the
//!   child's stdin/stdout. `ssh` is the system's OpenSSH client, so `~/.ssh/config`,
//!   agents and known hosts apply; `SKIFF_SSH_COMMAND` replaces the command (like
//!   `GIT_SSH_COMMAND`, e.g. `ssh -F ./cfg`). The remote `skiff` must be on the remote
//!   PATH unless `?binary=` names it.
//! - `tcp://HOST[:PORT]` (port 2376 by default): mutual TLS to the agent's
//!   `--api-listen-addr`, with `ca.pem`, `cert.pem`, `key.pem` from the TLS directory
//!   (`skiff cluster client-cert`). Never plain TCP.
//!
//! Both connectors wait for the agent's first bytes (its HTTP/2 settings) before handing
//! the stream to tonic, so a refused ssh login or TLS certificate is reported as one
//! clear line instead of a transport error on the first call. tonic may reconnect a
//! broken channel: each connection is a fresh ssh process (killed with its stream) or a
//! fresh TLS session.

use crate::client::exit;
use anyhow::Result;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// The Engine API port when a `tcp://` URL names none (Docker's TLS port).
pub const DEFAULT_TLS_PORT: u16 = 2376;

/// A connection failure worth showing as is (ssh's own words, a TLS refusal).
#[derive(Debug)]
struct ConnectFailure(String);

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectFailure {}

fn failure(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(ConnectFailure(msg.into()))
}

/// The [`ConnectFailure`] somewhere in a tonic connect error, if any.
fn find_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(f) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<ConnectFailure>())
        {
            return Some(f.0.clone());
        }
        src = s.source();
    }
    None
}

/// A connected stream whose first bytes were already read (to learn that the agent
/// answers); they are replayed before the rest. Holds the ssh child, if any, so it is
/// killed when tonic drops the connection.
struct Peeked<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
    _child: Option<tokio::process::Child>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Peeked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Peeked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where an `ssh://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The remote `skiff` (`?binary=`), default `skiff` from the remote PATH.
    pub binary: String,
    /// The remote agent's socket (`?socket=`), default the remote default.
    pub socket: Option<String>,
}

impl SshTarget {
    pub fn parse(url: &str) -> Result<SshTarget> {
        let bad = |why: &str| {
            exit(
                125,
                format!("invalid --host {url:?}: {why} (want ssh://[USER@]HOST[:PORT])"),
            )
        };
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("not ssh://"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad("a path is not allowed"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("empty user")),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad("bad port"))?),
                None if tail.is_empty() => None,
                None => return Err(bad("junk after ']'")),
            };
            (h.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad("bad port"))?)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("no host"));
        }
        let mut t = SshTarget {
            user,
            host,
            port,
            binary: "skiff".into(),
            socket: None,
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("binary", v)) if !v.is_empty() => t.binary = v.to_string(),
                Some(("socket", v)) if !v.is_empty() => t.socket = Some(v.to_string()),
                _ => {
                    return Err(bad(&format!(
                        "unknown option {kv:?}: binary=PATH or socket=PATH"
                    )))
                }
            }
        }
        Ok(t)
    }

    /// The ssh command line (program and arguments) this target runs.
    pub fn command(&self) -> Result<(String, Vec<String>)> {
        let base = std::env::var("SKIFF_SSH_COMMAND").unwrap_or_else(|_| "ssh".into());
        let mut words = shlex::split(&base)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| exit(125, format!("SKIFF_SSH_COMMAND {base:?} does not parse")))?;
        let prog = words.remove(0);
        let mut args = words;
        // No terminal for the remote side; fail rather than hang on an unreachable host.
        args.extend(["-T".into(), "-o".into(), "ConnectTimeout=30".into()]);
        if let Some(u) = &self.user {
            args.extend(["-l".into(), u.clone()]);
        }
        if let Some(p) = self.port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.extend(["--".into(), self.host.clone()]);
        // ssh hands the remote command to the remote user's shell: quote every word.
        let mut remote = vec![self.binary.clone()];
        if let Some(s) = &self.socket {
            remote.extend(["--host".into(), format!("unix://{s}")]);
        }
        remote.extend(["system".into(), "dial-stdio".into()]);
        for w in remote {
            args.push(
                shlex::try_quote(&w)
                    .map_err(|_| exit(125, format!("{w:?} cannot be quoted for ssh")))?
                    .into_owned(),
            );
        }
        Ok((prog, args))
    }
}

type BoxedIo = Peeked<Pin<Box<dyn AsyncReadWrite>>>;

trait AsyncReadWrite: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> AsyncReadWrite for T {}

/// Runs ssh and waits until the remote agent answers; the error is ssh's (or the remote
/// command's) own stderr, on one line.
#[tracing::instrument(skip_all, fields(host = %t.host))]
async fn ssh_connect(t: Arc<SshTarget>) -> std::io::Result<TokioIo<BoxedIo>> {
    let (prog, args) = t.command().map_err(|e| failure(e.to_string()))?;
    tracing::debug!(%prog, ?args, "running ssh");
    let mut child = tokio::process::Command::new(&prog)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failure(format!(
                "running {prog}: {e} (is openssh-client installed?)"
            ))
        })?;
    let (Some(mut stdout), Some(stdin), Some(stderr)) =
        (child.stdout.take(), child.stdin.take(), child.stderr.take())
    else {
        return Err(failure("ssh: no stdio pipes"));
    };
    // ssh's stderr: kept until the agent answers (it explains a failure), then passed
    // through (warnings, a remote error later on).
    let early = Arc::new(Mutex::new(Some(Vec::<String>::new())));
    let early2 = early.clone();
    let relay = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut g = early2.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_mut() {
                Some(buf) => buf.push(l),
                None => eprintln!("{l}"),
            }
        }
    });
    let mut head = vec![0u8; 16 << 10];
    let n = stdout.read(&mut head).await.unwrap_or(0);
    if n == 0 {
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        let _ = tokio::time::timeout(Duration::from_secs(2), relay).await;
        let lines = early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let said: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        let mut msg = if said.is_empty() {
            match status {
                Some(s) => format!("{prog} exited ({s}) before the agent answered"),
                None => format!("{prog} closed its output before the agent answered"),
            }
        } else {
            said.join("; ")
        };
        if status.and_then(|s| s.code()) == Some(127) {
            msg.push_str(&format!(
                " (is {} on the remote PATH? name it with ssh://HOST?binary=/path/to/skiff)",
                t.binary
            ));
        }
        return Err(failure(msg));
    }
    head.truncate(n);
    if let Some(lines) = early.lock().unwrap_or_else(|p| p.into_inner()).take() {
        for l in lines {
            eprintln!("{l}");
        }
    }
    let io: Pin<Box<dyn AsyncReadWrite>> = Box::pin(tokio::io::join(stdout, stdin));
    Ok(TokioIo::new(Peeked {
        head,
        pos: 0,
        inner: io,
        _child: Some(child),
    }))
}

/// A channel to the agent behind `ssh://...`.
pub async fn ssh_channel(url: &str) -> Result<Channel> {
    let target = Arc::new(SshTarget::parse(url)?);
    target.command()?; // a bad SKIFF_SSH_COMMAND fails here, once
    let t = target.clone();
    Endpoint::try_from("http://skiff.ssh")?
        .connect_with_connector(tower::service_fn(move |_: Uri| ssh_connect(t.clone())))
        .await
        .map_err(|e| {
            let why = find_failure(&e).unwrap_or_else(|| e.to_string());
            exit(
                125,
                format!("Cannot connect to the Skiff agent at {url}: {why}"),
            )
        })
}

/// `tcp://HOST[:PORT]` → `HOST:PORT`.
pub fn tcp_addr(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("tcp://")
        .unwrap_or(url)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(exit(
            125,
            format!("invalid --host {url:?}: want tcp://HOST[:PORT]"),
        ));
    }
    let has_port = match rest.rsplit_once(']') {
        Some((_, tail)) => tail.starts_with(':'),
        None => rest.contains(':'),
    };
    Ok(if has_port {
        rest.to_string()
    } else {
        format!("{rest}:{DEFAULT_TLS_PORT}")
    })
}

/// The client TLS settings from `dir`: `ca.pem` (required) and `cert.pem` + `key.pem`.
/// Without a certificate the agent refuses the connection; that is left to the agent
/// so the refusal is the real one.
fn tls_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let ca = read("ca.pem").map_err(|e| {
        exit(
            125,
            format!(
                "tcp:// needs the cluster's TLS files: reading {}: {e}. Get them with `skiff cluster client-cert --out {}` on a manager, or pass --tlsdir DIR.",
                dir.join("ca.pem").display(),
                dir.display()
            ),
        )
    })?;
    let identity = match (read("cert.pem"), read("key.pem")) {
        (Ok(cert_pem), Ok(key_pem)) => Some(skiff_controller::tls::Identity {
            ca_pem: ca.clone(),
            cert_pem,
            key_pem,
        }),
        _ => None,
    };
    skiff_controller::tls::client_config(&ca, identity.as_ref())
        .map_err(|e| exit(125, format!("TLS files in {}: {e}", dir.display())))
}

/// Words for a TLS failure a user can act on.
fn explain_tls(e: &std::io::Error, dir: &Path) -> String {
    use rustls::AlertDescription as A;
    let rustls_err = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match rustls_err {
        Some(rustls::Error::InvalidCertificate(c)) => format!(
            "the agent's certificate is not from the cluster CA in {} ({c:?}): that directory belongs to another cluster",
            dir.join("ca.pem").display()
        ),
        Some(rustls::Error::AlertReceived(A::CertificateRequired)) => format!(
            "the agent requires a client certificate and {} has none: run `skiff cluster client-cert` on a manager",
            dir.display()
        ),
        Some(rustls::Error::AlertReceived(a)) => format!(
            "the agent refused the certificate in {} ({a:?}): it takes client certificates of its own cluster only, not node certificates or another cluster's (issue one with `skiff cluster client-cert` on one of its managers)",
            dir.display()
        ),
        Some(other) => format!("TLS: {other}"),
        None => e.to_string(),
    }
}

#[tracing::instrument(skip(cfg, dir))]
async fn tls_connect(
    addr: String,
    cfg: Arc<rustls::ClientConfig>,
    dir: PathBuf,
) -> std::io::Result<TokioIo<BoxedIo>> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| failure(format!("connecting to {addr}: timed out")))?
    .map_err(|e| failure(format!("connecting to {addr}: {e}")))?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(skiff_controller::ca::SERVER_NAME)
        .map_err(std::io::Error::other)?;
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| failure(explain_tls(&e, &dir)))?;
    // TLS 1.3: the server judges our certificate after our side finished; its verdict
    // (an alert, or its HTTP/2 settings) is the first thing to read.
    let mut head = vec![0u8; 16 << 10];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut head))
        .await
        .map_err(|_| {
            failure(format!(
                "{addr} accepted TLS but sent nothing: is it a Skiff agent's --api-listen-addr?"
            ))
        })?
        .map_err(|e| failure(explain_tls(&e, &dir)))?;
    if n == 0 {
        return Err(failure(format!("{addr} closed the connection")));
    }
    head.truncate(n);
    let io: Pin<Box<dyn AsyncReadWrite>> = Box::pin(tls);
    Ok(TokioIo::new(Peeked {
        head,
        pos: 0,
        inner: io,
        _child: None,
    }))
}

/// A channel to the agent's mutual-TLS Engine API at `tcp://...`, with the TLS files
/// in `dir`.
pub async fn tls_channel(url: &str, dir: &Path) -> Result<Channel> {
    let addr = tcp_addr(url)?;
    let cfg = tls_config(dir)?;
    let (a, d) = (addr.clone(), dir.to_path_buf());
    Endpoint::try_from("http://skiff.tls")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            tls_connect(a.clone(), cfg.clone(), d.clone())
        }))
        .await
        .map_err(|e| {
            let why = find_failure(&e).unwrap_or_else(|| e.to_string());
            exit(
                125,
                format!("Cannot connect to the Skiff agent at {url}: {why}"),
            )
        })
}

/// `skiff system dial-stdio`: relays this process's stdin/stdout to the local agent's
/// socket (what `ssh://` runs on the remote host). Ends when the agent closes.
pub async fn dial_stdio(host: &str) -> Result<i32> {
    let path = host.strip_prefix("unix://").ok_or_else(|| {
        exit(
            125,
            format!("dial-stdio needs a local agent socket (unix:///PATH), not {host:?}"),
        )
    })?;
    let sock = tokio::net::UnixStream::connect(path).await.map_err(|e| {
        exit(
            125,
            format!("dial-stdio: cannot connect to the Skiff agent at {host}: {e}"),
        )
    })?;
    let (mut from_agent, mut to_agent) = sock.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to_agent).await;
        // Our client is gone: let the agent see end-of-stream too.
        let _ = to_agent.shutdown().await;
        std::future::pending::<()>().await;
    };
    let down = async move {
        let mut out = tokio::io::stdout();
        let r = tokio::io::copy(&mut from_agent, &mut out).await;
        let _ = out.flush().await;
        r
    };
    tokio::select! {
        _ = up => Ok(0),
        r = down => {
            r.map_err(|e| exit(125, format!("dial-stdio: {e}")))?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_parse() {
        let t = SshTarget::parse("ssh://root@10.0.0.5:2222").expect("parse");
        assert_eq!(t.user.as_deref(), Some("root"));
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", Some(2222)));
        assert_eq!(t.binary, "skiff");
        let t = SshTarget::parse("ssh://box?binary=/opt/skiff&socket=/run/x.sock").expect("q");
        assert_eq!((t.user, t.port), (None, None));
        assert_eq!(t.binary, "/opt/skiff");
        assert_eq!(t.socket.as_deref(), Some("/run/x.sock"));
        let t = SshTarget::parse("ssh://me@[::1]:22").expect("v6");
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        for bad in [
            "ssh://",
            "ssh://host:port",
            "ssh://@host",
            "ssh://host/path",
            "ssh://-oProxyCommand=x",
            "ssh://host?evil=1",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ssh_command_quotes_the_remote_words() {
        let t = SshTarget::parse("ssh://u@h:1?binary=/my%20dir/skiff&socket=/tmp/a b.sock")
            .expect("parse");
        let (_, args) = t.command().expect("command");
        let dash = args.iter().position(|a| a == "--").expect("--");
        assert_eq!(args[dash + 1], "h");
        assert!(args.contains(&"-p".to_string()) && args.contains(&"-l".to_string()));
        assert_eq!(args[dash + 4], "'unix:///tmp/a b.sock'");
        assert_eq!(&args[args.len() - 2..], ["system", "dial-stdio"]);
    }

    #[test]
    fn tcp_addresses_default_to_2376() {
        assert_eq!(tcp_addr("tcp://10.0.0.5").expect("a"), "10.0.0.5:2376");
        assert_eq!(tcp_addr("tcp://h:9").expect("a"), "h:9");
        assert_eq!(tcp_addr("tcp://[::1]").expect("a"), "[::1]:2376");
        assert_eq!(tcp_addr("tcp://[::1]:7").expect("a"), "[::1]:7");
        assert!(tcp_addr("tcp://").is_err());
        assert!(tcp_addr("tcp://h/x").is_err());
    }
}
