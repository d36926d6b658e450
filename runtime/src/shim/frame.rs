//! The framing spoken on a shim's unix socket: `[kind u8][len u32 BE][payload]`.
//!
//! One connection is one client: the agent attaching a user's terminal, waiting for an
//! exit, or forwarding a signal. Every connection hears `Exit` when the process ends.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted; stdio chunks are far smaller.
const MAX_FRAME: u32 = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Client → shim, first frame: what this client wants.
    Hello {
        stdin: bool,
        output: bool,
    },
    Stdin(Vec<u8>),
    CloseStdin,
    Resize {
        width: u16,
        height: u16,
    },
    /// Start a container that was created waiting for its first attach.
    Start,
    Signal(i32),
    /// Shim → client.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process is running (with its pid); sent after `Start`.
    Started(i32),
    Exit {
        code: i32,
        error: String,
    },
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => 1,
            Frame::Stdin(_) => 2,
            Frame::CloseStdin => 3,
            Frame::Resize { .. } => 4,
            Frame::Start => 5,
            Frame::Signal(_) => 6,
            Frame::Stdout(_) => 10,
            Frame::Stderr(_) => 11,
            Frame::Started(_) => 12,
            Frame::Exit { .. } => 13,
        }
    }

    fn payload(&self) -> Vec<u8> {
        match self {
            Frame::Hello { stdin, output } => vec![*stdin as u8, *output as u8],
            Frame::Stdin(d) | Frame::Stdout(d) | Frame::Stderr(d) => d.clone(),
            Frame::CloseStdin | Frame::Start => vec![],
            Frame::Resize { width, height } => [width.to_be_bytes(), height.to_be_bytes()].concat(),
            Frame::Signal(s) | Frame::Started(s) => s.to_be_bytes().to_vec(),
            Frame::Exit { code, error } => [&code.to_be_bytes()[..], error.as_bytes()].concat(),
        }
    }

    fn decode(kind: u8, p: Vec<u8>) -> std::io::Result<Frame> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad frame kind {kind} len {}", p.len()),
            )
        };
        let i32_at = |p: &[u8]| -> std::io::Result<i32> {
            Ok(i32::from_be_bytes(
                p.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
            ))
        };
        Ok(match kind {
            1 if p.len() == 2 => Frame::Hello {
                stdin: p[0] != 0,
                output: p[1] != 0,
            },
            2 => Frame::Stdin(p),
            3 => Frame::CloseStdin,
            4 if p.len() == 4 => Frame::Resize {
                width: u16::from_be_bytes([p[0], p[1]]),
                height: u16::from_be_bytes([p[2], p[3]]),
            },
            5 => Frame::Start,
            6 => Frame::Signal(i32_at(&p)?),
            10 => Frame::Stdout(p),
            11 => Frame::Stderr(p),
            12 => Frame::Started(i32_at(&p)?),
            13 => Frame::Exit {
                code: i32_at(&p)?,
                error: String::from_utf8_lossy(&p[4..]).into(),
            },
            _ => return Err(bad()),
        })
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> std::io::Result<()> {
    let p = f.payload();
    let mut buf = Vec::with_capacity(5 + p.len());
    buf.push(f.kind());
    buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
    buf.extend_from_slice(&p);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut p = vec![0; len as usize];
    r.read_exact(&mut p).await?;
    Frame::decode(head[0], p).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let frames = vec![
            Frame::Hello {
                stdin: true,
                output: false,
            },
            Frame::Stdin(b"abc".to_vec()),
            Frame::CloseStdin,
            Frame::Resize {
                width: 120,
                height: 40,
            },
            Frame::Start,
            Frame::Signal(15),
            Frame::Stdout(vec![0, 1, 2]),
            Frame::Stderr(vec![]),
            Frame::Started(42),
            Frame::Exit {
                code: -1,
                error: "boom".into(),
            },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write_frame(&mut buf, f).await.expect("write");
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).await.expect("read").as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).await.expect("eof"), None);
        let mut bad: &[u8] = &[99, 0, 0, 0, 0];
        assert!(read_frame(&mut bad).await.is_err());
    }
}
