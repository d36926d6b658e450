//! Wiring a local terminal to a remote process: raw mode for `-t`, window-size
//! changes, stdin forwarding, and the stream of output/exit messages.

use anyhow::Result;
use skiff_proto::engine::AttachOutput;
use std::io::Write;
use std::os::fd::AsFd;
use tokio::sync::mpsc;
use tonic::Streaming;

/// Puts the terminal on stdin into raw mode; restores it when dropped.
pub struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub fn enable() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        Self { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

pub fn is_tty() -> bool {
    nix::unistd::isatty(libc::STDIN_FILENO).unwrap_or(false)
}

/// The terminal's size as (columns, rows).
pub fn term_size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize struct through a valid pointer.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// What the input side sends: stdin bytes, stdin EOF, or a new window size.
pub enum Input {
    Data(Vec<u8>),
    Eof,
    Resize(u32, u32),
}

/// Reads stdin on a thread (when `stdin`) and watches SIGWINCH (when `tty`).
pub fn input_pump(stdin: bool, tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(64);
    if stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Input::Eof);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Input::Data(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((w, h)) = term_size() {
                    if tx.send(Input::Resize(w, h)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    rx
}

/// Forwards local input (stdin, window changes) as messages built by `to_msg` until
/// the stream closes.
pub fn forward_input<T: Send + 'static>(
    stdin: bool,
    tty: bool,
    tx: mpsc::Sender<T>,
    to_msg: fn(Input) -> T,
) {
    let mut inputs = input_pump(stdin, tty);
    tokio::spawn(async move {
        while let Some(i) = inputs.recv().await {
            if tx.send(to_msg(i)).await.is_err() {
                return;
            }
        }
    });
}

/// Copies output to stdout/stderr until the exit message; returns the exit code.
pub async fn drain_output(mut out: Streaming<AttachOutput>) -> Result<i32> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        match out.message().await {
            Ok(Some(m)) => {
                if m.exited {
                    let _ = stdout.flush();
                    if !m.error.is_empty() {
                        eprintln!("{}", m.error);
                    }
                    return Ok(m.exit_code);
                }
                if m.stream == 2 {
                    let _ = stderr.write_all(&m.data);
                    let _ = stderr.flush();
                } else {
                    let _ = stdout.write_all(&m.data);
                    let _ = stdout.flush();
                }
            }
            Ok(None) => return Ok(0),
            Err(s) => return Err(crate::client::status(s)),
        }
    }
}
