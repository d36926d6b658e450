//! The shim's event loop: copies the process's output to the log and to attached
//! clients, feeds stdin, applies resizes and signals, reaps the process and announces
//! its exit. Runs on a current-thread tokio runtime started only after libcontainer
//! has forked (forking from a multi-threaded process is what the shim exists to avoid).

use super::frame::{read_frame, write_frame, Frame};
use super::logfile::LogWriter;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, watch};

/// Which stream a chunk of output belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The process's stdio as the shim holds it.
pub struct Stdio {
    /// Output fds: pipes, or the pty master (as stdout).
    pub outputs: Vec<(OwnedFd, Stream)>,
    /// Where client stdin goes: a pipe's write end or a dup of the pty master.
    pub stdin: Option<OwnedFd>,
    /// The pty master, for resizes.
    pub pty: Option<OwnedFd>,
}

/// How the run ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub code: i32,
    pub signaled: bool,
}

/// Sets a pty's window size.
pub fn resize(pty: &OwnedFd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct from a valid pointer on a valid fd.
    unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`, so the descriptor stays open (and is
    // not reused) for as long as it is registered.
    unsafe { AsyncFd::register(fd) }.ok()
}

async fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| {
            nix::unistd::read(inner.get_ref().as_raw_fd(), buf).map_err(std::io::Error::from)
        }) {
            Ok(Ok(n)) => return Ok(n),
            // A pty master reports EIO once every slave is closed: that is its EOF.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard
            .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Accepts one client and reads its Hello: (connection, wants stdin, wants output).
pub async fn accept_hello(listener: &UnixListener) -> Option<(UnixStream, bool, bool)> {
    let (mut conn, _) = listener.accept().await.ok()?;
    match read_frame(&mut conn).await {
        Ok(Some(Frame::Hello { stdin, output })) => Some((conn, stdin, output)),
        _ => None,
    }
}

/// Output frames held for attached clients that fall behind; a client further behind
/// skips ahead (the log file has everything).
const OUTPUT_FRAMES: usize = 4096;

/// Where output goes to attached clients. The channel's slots (about 230 kB, all
/// written when it is made) are made when the first client asks for output: the shim
/// of a detached container (the agent's own connections ask for none) idles for the
/// container's whole life and never needs them.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Option<broadcast::Sender<Frame>>>>);

impl Output {
    fn subscribe(&self) -> broadcast::Receiver<Frame> {
        let mut tx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tx.get_or_insert_with(|| broadcast::channel(OUTPUT_FRAMES).0)
            .subscribe()
    }

    /// To every attached client that wants output; none has attached yet: to nobody,
    /// as a broadcast without receivers.
    fn send(&self, frame: Frame) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(frame);
        }
    }
}

/// Runs until `pid` exits and its output is drained. `on_exit` runs after output is
/// drained and before clients hear `Exit`, so state written there is visible to them;
/// `after_announce` runs once they have been told (the slow clean-up: clients that
/// must not reuse what it frees wait for this process to end, its sockets' EOF).
pub async fn run(
    pid: Pid,
    stdio: Stdio,
    listener: UnixListener,
    log: Option<LogWriter>,
    first: Option<(UnixStream, bool, bool)>,
    on_exit: impl FnOnce(&Outcome) -> String,
    after_announce: impl FnOnce() + Send + 'static,
) -> Outcome {
    let out_tx = Output::default();
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Option<Vec<u8>>>(64);
    let (exit_tx, exit_rx) = watch::channel::<Option<(i32, String)>>(None);
    let log = Arc::new(Mutex::new(log));
    let pty = stdio.pty.map(Arc::new);
    // The client that started the container subscribes before any output is read.
    if let Some((conn, want_stdin, want_output)) = first {
        let output = want_output.then(|| out_tx.subscribe());
        tokio::spawn(serve_client(
            conn,
            Some((want_stdin, output)),
            out_tx.clone(),
            pid,
            stdin_tx.clone(),
            pty.clone(),
            exit_rx.clone(),
        ));
    }

    // Output pumps.
    let mut pumps = Vec::new();
    for (fd, stream) in stdio.outputs {
        if set_nonblocking(&fd).is_err() {
            continue;
        }
        let Some(afd) = register(fd) else { continue };
        let tx = out_tx.clone();
        let log = log.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read_some(&afd, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = buf[..n].to_vec();
                        if let Ok(mut l) = log.lock() {
                            if let Some(l) = l.as_mut() {
                                l.write(stream, &chunk);
                            }
                        }
                        tx.send(match stream {
                            Stream::Stdout => Frame::Stdout(chunk),
                            Stream::Stderr => Frame::Stderr(chunk),
                        });
                    }
                }
            }
            if let Ok(mut l) = log.lock() {
                if let Some(l) = l.as_mut() {
                    l.flush_partial(stream);
                }
            }
        }));
    }

    // Stdin feeder.
    if let Some(fd) = stdio.stdin {
        tokio::spawn(async move {
            if set_nonblocking(&fd).is_err() {
                return;
            }
            let Some(afd) = register(fd) else { return };
            while let Some(msg) = stdin_rx.recv().await {
                match msg {
                    Some(data) => {
                        if write_all(&afd, &data).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                }
            }
            // Dropping the fd closes the process's stdin (for a pipe).
        });
    }

    // Client acceptor.
    let acceptor = {
        let out_tx = out_tx.clone();
        let exit_rx = exit_rx.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_client(
                    conn,
                    None,
                    out_tx.clone(),
                    pid,
                    stdin_tx.clone(),
                    pty.clone(),
                    exit_rx.clone(),
                ));
            }
        })
    };

    // Reaper.
    let outcome = reap(pid).await;
    // The pid namespace is gone with its init; give output a moment to drain.
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    if let Ok(mut l) = log.lock() {
        if let Some(l) = l.as_mut() {
            l.sync();
        }
    }
    let error = on_exit(&outcome);
    let _ = exit_tx.send(Some((outcome.code, error)));
    // The clean-up runs while clients receive the exit frame (on another thread: this
    // runtime has one), so the exit is announced without waiting for it.
    let cleanup = tokio::task::spawn_blocking(after_announce);
    // Let clients receive the exit frame.
    let (_, _) = tokio::join!(cleanup, tokio::time::sleep(Duration::from_millis(50)));
    acceptor.abort();
    outcome
}

async fn reap(pid: Pid) -> Outcome {
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        // Reap everything (we are a subreaper); stop when our process is among them.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == pid => {
                    return Outcome {
                        code,
                        signaled: false,
                    }
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                    return Outcome {
                        code: 128 + sig as i32,
                        signaled: true,
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        match sigchld.as_mut() {
            Some(s) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The next output frame for a client that wants output; never, for one that does not.
async fn next_output(
    rx: &mut Option<broadcast::Receiver<Frame>>,
) -> Result<Frame, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves one client. `first`: the client that started the container, its Hello already
/// read and its output subscribed before any output was (`(wants stdin, output)`);
/// any other subscribes once its Hello asks for output.
async fn serve_client(
    conn: UnixStream,
    first: Option<(bool, Option<broadcast::Receiver<Frame>>)>,
    out: Output,
    pid: Pid,
    stdin: mpsc::Sender<Option<Vec<u8>>>,
    pty: Option<Arc<OwnedFd>>,
    mut exit: watch::Receiver<Option<(i32, String)>>,
) {
    let (mut rd, mut wr) = conn.into_split();
    let (want_stdin, mut output) = match first {
        Some(f) => f,
        None => match read_frame(&mut rd).await {
            Ok(Some(Frame::Hello { stdin, output })) => (stdin, output.then(|| out.subscribe())),
            _ => return,
        },
    };
    let writer = tokio::spawn(async move {
        let exited = async move {
            match exit.wait_for(|e| e.is_some()).await {
                Ok(v) => v.clone().unwrap_or_default(),
                Err(_) => (-1, String::new()),
            }
        };
        tokio::pin!(exited);
        let (code, error) = loop {
            tokio::select! {
                biased;
                f = next_output(&mut output) => match f {
                    Ok(f) => if write_frame(&mut wr, &f).await.is_err() { return },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                r = &mut exited => break r,
            }
        };
        // Drain output that is already queued, then announce the exit.
        while let Some(Ok(f)) = output.as_mut().map(|rx| rx.try_recv()) {
            if write_frame(&mut wr, &f).await.is_err() {
                return;
            }
        }
        let _ = write_frame(&mut wr, &Frame::Exit { code, error }).await;
    });
    while let Ok(Some(f)) = read_frame(&mut rd).await {
        match f {
            Frame::Stdin(d) if want_stdin => {
                let _ = stdin.send(Some(d)).await;
            }
            Frame::CloseStdin if want_stdin => {
                let _ = stdin.send(None).await;
            }
            Frame::Resize { width, height } => {
                if let Some(p) = &pty {
                    resize(p, width, height);
                }
            }
            Frame::Signal(s) => {
                if let Ok(sig) = Signal::try_from(s) {
                    let _ = kill(pid, sig);
                }
            }
            _ => {}
        }
    }
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_has_no_channel_until_a_client_attaches() {
        let out = Output::default();
        out.send(Frame::Stdout(b"before".to_vec()));
        assert!(
            out.0.lock().expect("lock").is_none(),
            "made without a client"
        );
        let mut rx = out.subscribe();
        out.send(Frame::Stdout(b"after".to_vec()));
        match rx.try_recv() {
            Ok(Frame::Stdout(b)) => assert_eq!(b, b"after"),
            other => panic!("{other:?}"),
        }
        assert!(
            rx.try_recv().is_err(),
            "output from before the attach replayed"
        );
    }
}
