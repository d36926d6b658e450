//! Docker API: `/exec` endpoints and `POST /containers/{id}/exec`.
//!
//! An exec instance is made by create, run once by start (through
//! [`Containers::exec`](crate::containers::Containers::exec), the same shim path as
//! `skiff exec`), and read by inspect until it is forgotten. Start hijacks the HTTP
//! connection as dockerd does and relays it to the exec shim's frames.

use super::{mux_frame, ApiError, DockerApi, Req, Resp, Result};
use bollard_stubs::models::{ExecConfig, ExecStartConfig};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use skiff_runtime::shim::exec::ExecSpec;
use skiff_runtime::shim::frame::{read_frame, write_frame, Frame};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

/// At most this many exec instances are remembered; past it the oldest finished (or
/// never started) ones are forgotten first.
const MAX_EXECS: usize = 1024;
/// A finished or never-started exec is forgotten after this long, as dockerd's are
/// once their container goes.
const EXEC_TTL: Duration = Duration::from_secs(15 * 60);

pub(super) async fn route(api: &DockerApi, req: Req) -> Result<Resp> {
    let segs: Vec<String> = req.segs.clone();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::POST, ["exec", id, "start"]) => start(api, id, req).await,
        (&Method::POST, ["exec", id, "resize"]) => resize(api, id, &req).await,
        (&Method::GET, ["exec", id, "json"]) => inspect(api, id),
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

/// What create recorded, as inspect reports it.
#[derive(Clone, Debug)]
struct ExecProcess {
    container_id: String,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
    tty: bool,
    privileged: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    detach_keys: String,
    /// Initial terminal size, (width, height).
    console_size: Option<(u16, u16)>,
}

#[derive(Default)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    /// When the exec last changed (made, or ended): the age the forgetting goes by.
    touched: Option<Instant>,
    /// The exec process's pid on the host once started (kept after it ends, as
    /// dockerd's inspect does); 0 before.
    pid: i32,
    /// The shim connection's write half while the exec runs (resize writes to it).
    shim: Option<Arc<tokio::sync::Mutex<OwnedWriteHalf>>>,
    /// A resize that came before the process did (the CLI resizes right after start,
    /// and the process starts only once the connection is hijacked): its first size.
    pending_size: Option<(u16, u16)>,
}

struct Exec {
    id: String,
    process: ExecProcess,
    state: Mutex<ExecState>,
}

impl Exec {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, code: i32) {
        let mut s = self.state();
        s.running = false;
        s.exit_code = Some(code);
        s.shim = None;
        s.touched = Some(Instant::now());
    }
}

/// Exec instances by ID: made by create, run by start, read by inspect.
#[derive(Default)]
pub(crate) struct Execs {
    map: Mutex<HashMap<String, Arc<Exec>>>,
}

impl Execs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Exec>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Result<Arc<Exec>> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }

    /// The exec `id`; one whose container is gone is forgotten (404), as dockerd's
    /// go with their container.
    fn lookup(&self, api: &DockerApi, id: &str) -> Result<Arc<Exec>> {
        let e = self.get(id)?;
        if api.containers.get(&e.process.container_id).is_err() {
            self.map().remove(id);
            return Err(ApiError::not_found(format!("No such exec instance: {id}")));
        }
        Ok(e)
    }

    /// Adds `exec`, first forgetting instances whose container is gone, finished or
    /// unstarted ones past [`EXEC_TTL`], and then the oldest idle ones past [`MAX_EXECS`].
    fn insert(&self, exec: Arc<Exec>, live: impl Fn(&str) -> bool) {
        let mut m = self.map();
        let now = Instant::now();
        m.retain(|_, e| {
            let s = e.state();
            s.running
                || (live(&e.process.container_id)
                    && s.touched.is_none_or(|t| now.duration_since(t) < EXEC_TTL))
        });
        while m.len() >= MAX_EXECS {
            let oldest = m
                .values()
                .filter(|e| !e.state().running)
                .min_by_key(|e| e.state().touched)
                .map(|e| e.id.clone());
            match oldest {
                Some(id) => {
                    m.remove(&id);
                }
                None => break,
            }
        }
        m.insert(exec.id.clone(), exec);
    }
}

/// Docker's `[height, width]` console size as (width, height).
fn console_size(v: Option<&Vec<usize>>) -> Result<Option<(u16, u16)>> {
    match v.map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([h, w]) => {
            let conv = |n: usize| {
                u16::try_from(n)
                    .map_err(|_| ApiError::bad_request(format!("invalid ConsoleSize: {n}")))
            };
            let (h, w) = (conv(*h)?, conv(*w)?);
            Ok((h > 0 && w > 0).then_some((w, h)))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid ConsoleSize: expected [height, width]",
        )),
    }
}

fn check_running(api: &DockerApi, container: &str) -> Result<String> {
    let e = api.containers.get(container)?;
    let st = e.state();
    if st.status == skiff_runtime::container::Status::Paused {
        return Err(ApiError::conflict(format!(
            "Container {} is paused, unpause the container before exec",
            e.id
        )));
    }
    if !st.is_running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            e.id
        )));
    }
    Ok(e.id.clone())
}

/// `POST /containers/{id}/exec`: records an exec instance (nothing runs yet). The
/// containers router forwards that path here.
pub(super) async fn create(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let container = req.seg(1)?.to_string();
    let cfg: ExecConfig = req.json_or_default().await?;
    let container_id = check_running(api, &container)?;
    let cmd = cfg.cmd.clone().unwrap_or_default();
    if cmd.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let id = hex::encode(rand::random::<[u8; 32]>());
    let exec = Arc::new(Exec {
        id: id.clone(),
        process: ExecProcess {
            container_id,
            cmd,
            env: cfg.env.clone().unwrap_or_default(),
            working_dir: cfg.working_dir.clone().unwrap_or_default(),
            user: cfg.user.clone().unwrap_or_default(),
            tty: cfg.tty.unwrap_or(false),
            privileged: cfg.privileged.unwrap_or(false),
            stdin: cfg.attach_stdin.unwrap_or(false),
            stdout: cfg.attach_stdout.unwrap_or(false),
            stderr: cfg.attach_stderr.unwrap_or(false),
            detach_keys: {
                let k = cfg.detach_keys.clone().unwrap_or_default();
                detach_keys(&k)?;
                k
            },
            console_size: console_size(cfg.console_size.as_ref())?,
        },
        state: Mutex::new(ExecState {
            touched: Some(Instant::now()),
            ..Default::default()
        }),
    });
    api.events.emit(
        "container",
        "exec_create",
        &exec.process.container_id,
        [("execID".to_string(), id.clone())].into(),
    );
    let containers = api.containers.clone();
    api.execs.insert(exec, |cid| containers.get(cid).is_ok());
    Ok(super::json(StatusCode::CREATED, &json!({ "Id": id })))
}

/// `GET /exec/{id}/json`.
fn inspect(api: &DockerApi, id: &str) -> Result<Resp> {
    let e = api.execs.lookup(api, id)?;
    let p = &e.process;
    let s = e.state();
    let (entrypoint, arguments) = p
        .cmd
        .split_first()
        .map(|(a, rest)| (a.clone(), rest.to_vec()))
        .unwrap_or_default();
    super::ok_json(&json!({
        "ID": e.id,
        "Running": s.running,
        "ExitCode": s.exit_code,
        "ProcessConfig": {
            "tty": p.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": p.privileged,
            "user": p.user,
        },
        "OpenStdin": p.stdin,
        "OpenStderr": p.stderr,
        "OpenStdout": p.stdout,
        "CanRemove": false,
        "ContainerID": p.container_id,
        "DetachKeys": p.detach_keys,
        "Pid": s.pid,
    }))
}

/// `POST /exec/{id}/resize?h=&w=`.
async fn resize(api: &DockerApi, id: &str, req: &Req) -> Result<Resp> {
    let e = api.execs.lookup(api, id)?;
    let h = req.query.int("h")?.unwrap_or(0);
    let w = req.query.int("w")?.unwrap_or(0);
    let (Ok(height), Ok(width)) = (u16::try_from(h), u16::try_from(w)) else {
        return Err(ApiError::bad_request(format!("invalid size: {h}x{w}")));
    };
    let shim = {
        let mut st = e.state();
        match st.shim.clone() {
            Some(shim) => shim,
            // Started, process on its way: the size is applied when it starts.
            None if st.running && height > 0 && width > 0 => {
                st.pending_size = Some((width, height));
                let mut r = hyper::Response::new(super::full(Vec::new()));
                *r.status_mut() = StatusCode::OK;
                return Ok(r);
            }
            None => return Err(ApiError::conflict(format!("Exec {id} is not running"))),
        }
    };
    if height > 0 && width > 0 {
        let mut wr = shim.lock().await;
        write_frame(&mut *wr, &Frame::Resize { width, height })
            .await
            .map_err(|err| ApiError::internal(format!("resizing exec {id}: {err}")))?;
    }
    let mut r = hyper::Response::new(super::full(Vec::new()));
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

/// `POST /exec/{id}/start`: runs the exec; unless detached, the connection carries its
/// stdio (hijacked with `101 UPGRADED` when the client asked for an upgrade).
async fn start(api: &DockerApi, id: &str, mut req: Req) -> Result<Resp> {
    let body: ExecStartConfig = req.json_or_default().await?;
    let e = api.execs.lookup(api, id)?;
    let detach = body.detach.unwrap_or(false);
    let p = e.process.clone();
    let tty = body.tty.unwrap_or(p.tty);
    {
        let mut s = e.state();
        if s.started {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {id} is already running"
            )));
        }
        s.started = true;
        s.running = true;
    }
    if let Err(err) = check_running(api, &p.container_id) {
        e.finish(126);
        return Err(err);
    }
    let spec = ExecSpec {
        args: p.cmd.clone(),
        env: p.env.clone(),
        cwd: p.working_dir.clone(),
        user: p.user.clone(),
        tty,
        stdin: p.stdin && !detach,
        privileged: p.privileged,
        console_size: console_size(body.console_size.as_ref())?.or(p.console_size),
        ..Default::default()
    };
    let span = tracing::info_span!("exec", container = %p.container_id, exec = %id);
    // The process starts only once the client holds the hijacked connection (after the
    // 101 went out): output written right behind the answer's head would land in the
    // client's header buffer, where Docker's Python SDK never reads it.
    let containers = api.containers.clone();
    let cid = p.container_id.clone();
    let launch = {
        let e = e.clone();
        move || {
            let mut spec = spec;
            if let Some(size) = e.state().pending_size.take() {
                spec.console_size = Some(size);
            }
            tracing::Instrument::instrument(
                async move {
                    let (conn, pid) = containers.exec(&cid, spec, detach).await?;
                    e.state().pid = pid;
                    Ok(conn)
                },
                span,
            )
        }
    };
    let events = api.events.clone();
    let die = move |e: &Exec, code: i32| {
        e.finish(code);
        events.emit(
            "container",
            "exec_die",
            &e.process.container_id,
            [
                ("execID".to_string(), e.id.clone()),
                ("exitCode".to_string(), code.to_string()),
            ]
            .into(),
        );
    };
    if detach {
        let conn = match launch().await {
            Ok(c) => c,
            Err(err) => {
                die(&e, start_failure_code(&err));
                return Err(err.into());
            }
        };
        // Keep the connection until the exec ends, for its exit code.
        let (mut rd, wr) = conn.into_split();
        e.state().shim = Some(Arc::new(tokio::sync::Mutex::new(wr)));
        let e2 = e.clone();
        tokio::spawn(async move {
            let mut code = None;
            while let Ok(Some(f)) = read_frame(&mut rd).await {
                if let Frame::Exit { code: c, .. } = f {
                    code = Some(c);
                    break;
                }
            }
            die(&e2, code.unwrap_or(255));
        });
        let mut r = hyper::Response::new(super::full(Vec::new()));
        *r.status_mut() = StatusCode::OK;
        return Ok(r);
    }
    let upgrade_asked = req.headers.contains_key(UPGRADE);
    let content_type = if upgrade_asked && !tty && req.version >= super::ApiVersion(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    };
    // A start failure (command not found...) is reported in the stream, as dockerd does,
    // and recorded as the exec's exit code (126/127) for the client's inspect.
    let settle = {
        let e = e.clone();
        let die = die.clone();
        move |conn: crate::error::Result<tokio::net::UnixStream>| match conn {
            Ok(c) => (None, Some(c)),
            Err(err) => {
                let code = start_failure_code(&err);
                die(&e, code);
                (Some(format!("{err}\r\n")), None)
            }
        }
    };
    if !upgrade_asked {
        // No hijack: output only, streamed as the body.
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let mut out = ChanOut(tx);
            match settle(launch().await) {
                (Some(msg), _) => {
                    let _ = write_out(&mut out, tty, 1, msg.as_bytes()).await;
                }
                (None, Some(conn)) => {
                    let (rd, wr) = conn.into_split();
                    e.state().shim = Some(Arc::new(tokio::sync::Mutex::new(wr)));
                    let code = relay_output(rd, &mut out, tty, None).await;
                    die(&e, code);
                }
                _ => {}
            }
        });
        return Ok(super::stream_response(StatusCode::OK, content_type, rx));
    }
    let on_upgrade = req.upgrade;
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(err) => {
                tracing::debug!(error = %err, "exec: upgrade failed");
                if let (_, Some(conn)) = settle(launch().await) {
                    // Nobody listens: let the process run on, keep its exit code.
                    let (mut rd, _wr) = conn.into_split();
                    let mut code = None;
                    while let Ok(Some(f)) = read_frame(&mut rd).await {
                        if let Frame::Exit { code: c, .. } = f {
                            code = Some(c);
                            break;
                        }
                    }
                    die(&e, code.unwrap_or(255));
                }
                return;
            }
        };
        let (mut client_rd, mut client_wr) = tokio::io::split(io);
        let (failure, conn) = settle(launch().await);
        let Some(conn) = conn else {
            if let Some(msg) = failure {
                let _ = write_out(&mut client_wr, tty, 1, msg.as_bytes()).await;
            }
            let _ = client_wr.shutdown().await;
            return;
        };
        let (rd, wr) = conn.into_split();
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        let late = {
            let mut st = e.state();
            st.shim = Some(wr.clone());
            st.pending_size.take()
        };
        // A resize that came while the process was starting.
        if let Some((width, height)) = late {
            let _ = write_frame(&mut *wr.lock().await, &Frame::Resize { width, height }).await;
        }
        let stdin = p.stdin;
        // Validated at create; Docker's default when none was given.
        let escape = detach_keys(&p.detach_keys).ok().map(Escape::new);
        let detached = Arc::new(tokio::sync::Notify::new());
        let d2 = detached.clone();
        let input = tokio::spawn(async move {
            if relay_input(&mut client_rd, wr, stdin, escape).await {
                d2.notify_one();
            }
        });
        let code = relay_output(rd, &mut client_wr, tty, Some(detached)).await;
        die(&e, code);
        let _ = client_wr.flush().await;
        let _ = client_wr.shutdown().await;
        input.abort();
    });
    let mut r = hyper::Response::new(super::full(Vec::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"UPGRADED"));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    Ok(r)
}

/// Docker's exit code for an exec that never ran: 126/127 from the shim, else 126.
fn start_failure_code(e: &crate::error::AgentError) -> i32 {
    match e {
        crate::error::AgentError::Start { exit_code, .. } => *exit_code,
        _ => 126,
    }
}

/// A response body fed by a channel, as an `AsyncWrite`.
struct ChanOut(mpsc::Sender<Bytes>);

impl ChanOut {
    async fn send(&mut self, b: Bytes) -> std::io::Result<()> {
        self.0
            .send(b)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// Where relayed output goes: the hijacked connection or a streamed body.
trait OutSink {
    fn put(&mut self, b: Bytes) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Ends the client's stream (a detach); the process runs on.
    fn close(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

impl OutSink for ChanOut {
    async fn put(&mut self, b: Bytes) -> std::io::Result<()> {
        self.send(b).await
    }
    async fn close(&mut self) {}
}

impl<W: AsyncWrite + Unpin + Send> OutSink for tokio::io::WriteHalf<W> {
    async fn put(&mut self, b: Bytes) -> std::io::Result<()> {
        self.write_all(&b).await?;
        self.flush().await
    }
    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// Writes one chunk of `stream` (1 stdout, 2 stderr): raw with a tty, framed without.
async fn write_out(
    out: &mut impl OutSink,
    tty: bool,
    stream: u8,
    data: &[u8],
) -> std::io::Result<()> {
    if tty {
        out.put(Bytes::copy_from_slice(data)).await
    } else {
        out.put(mux_frame(stream, data)).await
    }
}

/// Relays the shim's output to the client until `Exit`; returns the exit code. After a
/// detach the client's stream ends but the shim is still read, for the exit code.
async fn relay_output(
    mut rd: tokio::net::unix::OwnedReadHalf,
    out: &mut impl OutSink,
    tty: bool,
    detach: Option<Arc<tokio::sync::Notify>>,
) -> i32 {
    // Frames are read by a task of their own: a frame half read is never dropped by
    // the select below.
    let (ftx, mut frames) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(f)) = read_frame(&mut rd).await {
            if ftx.send(f).await.is_err() {
                return;
            }
        }
    });
    let detached = async {
        match &detach {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(detached);
    let mut client_gone = false;
    loop {
        let frame = tokio::select! {
            f = frames.recv() => f,
            _ = &mut detached, if !client_gone => {
                client_gone = true;
                out.close().await;
                continue;
            }
        };
        match frame {
            Some(Frame::Stdout(d)) if !client_gone => {
                client_gone = write_out(out, tty, 1, &d).await.is_err();
            }
            Some(Frame::Stderr(d)) if !client_gone => {
                client_gone = write_out(out, tty, 2, &d).await.is_err();
            }
            Some(Frame::Exit { code, error }) => {
                if !error.is_empty() && !client_gone {
                    let _ = write_out(out, tty, 2, format!("{error}\n").as_bytes()).await;
                }
                return code;
            }
            Some(_) => {}
            // The shim went away without an exit report.
            None => return 255,
        }
    }
}

/// Docker's detach keys (`ctrl-p,ctrl-q`, `a,ctrl-x`...) as bytes; empty is the
/// default `ctrl-p,ctrl-q`.
fn detach_keys(spec: &str) -> Result<Vec<u8>> {
    let spec = if spec.is_empty() {
        "ctrl-p,ctrl-q"
    } else {
        spec
    };
    let bad = || ApiError::bad_request(format!("Invalid detach keys ({spec}) provided"));
    spec.split(',')
        .map(|k| {
            let k = k.trim();
            if let Some(c) = k.strip_prefix("ctrl-") {
                let c = c.as_bytes();
                if c.len() != 1 {
                    return Err(bad());
                }
                match c[0] {
                    b'a'..=b'z' => Ok(c[0] - b'a' + 1),
                    b'@' => Ok(0),
                    b'[' => Ok(27),
                    b'\\' => Ok(28),
                    b']' => Ok(29),
                    b'^' => Ok(30),
                    b'_' => Ok(31),
                    _ => Err(bad()),
                }
            } else if k.len() == 1 && k.is_ascii() {
                Ok(k.as_bytes()[0])
            } else {
                Err(bad())
            }
        })
        .collect()
}

/// Spots the detach sequence in a client's input, holding back bytes that may start
/// it until they turn out not to.
struct Escape {
    keys: Vec<u8>,
    matched: usize,
}

impl Escape {
    fn new(keys: Vec<u8>) -> Self {
        Escape { keys, matched: 0 }
    }

    /// The bytes to pass on, and whether the whole sequence was seen.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b != self.keys[self.matched] && self.matched > 0 {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Relays the client's stdin to the shim; the client's half-close closes the
/// process's stdin. Returns true when the client typed the detach keys (the process
/// keeps running, its stdin stays open).
async fn relay_input(
    client: &mut (impl AsyncRead + Unpin),
    wr: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    stdin: bool,
    mut escape: Option<Escape>,
) -> bool {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if stdin {
                    let _ = write_frame(&mut *wr.lock().await, &Frame::CloseStdin).await;
                }
                return false;
            }
            Ok(n) => {
                if !stdin {
                    continue;
                }
                let (data, detach) = match escape.as_mut() {
                    Some(e) => e.feed(&buf[..n]),
                    None => (buf[..n].to_vec(), false),
                };
                if !data.is_empty()
                    && write_frame(&mut *wr.lock().await, &Frame::Stdin(data))
                        .await
                        .is_err()
                {
                    return false;
                }
                if detach {
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_size_is_height_then_width() {
        assert_eq!(
            console_size(Some(&vec![24, 80])).expect("ok"),
            Some((80, 24))
        );
        assert_eq!(console_size(None).expect("ok"), None);
        assert_eq!(console_size(Some(&vec![0, 0])).expect("ok"), None);
        assert!(console_size(Some(&vec![1])).is_err());
        assert!(console_size(Some(&vec![70000, 1])).is_err());
    }

    fn exec(id: &str, container: &str) -> Arc<Exec> {
        Arc::new(Exec {
            id: id.into(),
            process: ExecProcess {
                container_id: container.into(),
                cmd: vec!["true".into()],
                env: vec![],
                working_dir: String::new(),
                user: String::new(),
                tty: false,
                privileged: false,
                stdin: false,
                stdout: true,
                stderr: true,
                detach_keys: String::new(),
                console_size: None,
            },
            state: Mutex::new(ExecState {
                touched: Some(Instant::now()),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn execs_of_removed_containers_are_forgotten() {
        let execs = Execs::default();
        execs.insert(exec("a", "c1"), |_| true);
        execs.insert(exec("b", "c2"), |_| true);
        // c1 is gone: its exec goes when the next one is added.
        execs.insert(exec("c", "c2"), |c| c == "c2");
        assert!(execs.get("a").is_err());
        assert!(execs.get("b").is_ok());
        let e = execs.get("nope").err().expect("missing");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such exec instance: nope");
    }

    #[test]
    fn detach_keys_parse_and_match_like_docker() {
        assert_eq!(detach_keys("").expect("default"), vec![16, 17]);
        assert_eq!(
            detach_keys("a,ctrl-x,ctrl-@").expect("ok"),
            vec![b'a', 24, 0]
        );
        let e = detach_keys("ctrl-xx").expect_err("bad");
        assert_eq!(e.message, "Invalid detach keys (ctrl-xx) provided");
        assert!(detach_keys("ab").is_err());
        let mut esc = Escape::new(vec![16, 17]);
        assert_eq!(esc.feed(b"ab\x10"), (b"ab".to_vec(), false));
        // A false start is passed on, and may itself start the sequence again.
        assert_eq!(esc.feed(b"\x10"), (b"\x10".to_vec(), false));
        assert_eq!(esc.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(esc.feed(b"x\x10\x11rest"), (b"x".to_vec(), true));
    }

    #[test]
    fn execs_are_bounded() {
        let execs = Execs::default();
        for i in 0..MAX_EXECS + 10 {
            execs.insert(exec(&format!("e{i}"), "c"), |_| true);
        }
        assert_eq!(execs.map().len(), MAX_EXECS);
        // The newest stays.
        assert!(execs.get(&format!("e{}", MAX_EXECS + 9)).is_ok());
    }
}
