//! What the load benches share (not an example of its own): a hand-made WebSocket client that
//! reads frames from one reused buffer, so that 10,000 watchers cost the bench little, and the
//! open-files check.

pub mod procs;

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A client WebSocket read frame by frame from one buffer.
pub struct RawWebSocket {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes `start..end` of `buf` are read and not yet used.
    start: usize,
    end: usize,
}

/// One frame from the server; `Text` borrows the connection's buffer.
pub enum RawFrame<'a> {
    Text(&'a str),
    /// A ping, with where its payload lies in the buffer.
    Ping(std::ops::Range<usize>),
    Close,
    Other,
}

impl RawWebSocket {
    const KEY: &'static str = "bG9hZGJlbmNoIHdhdGNoZXI=";

    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr).await.context("TCP connect")?;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            Self::KEY
        );
        stream.write_all(request.as_bytes()).await.context("sending the handshake")?;
        let mut conn = RawWebSocket { stream, buf: vec![0; 4096], start: 0, end: 0 };
        let head_end = loop {
            if let Some(i) = conn.buf[..conn.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if conn.fill().await? == 0 {
                bail!("the server closed the connection during the handshake");
            }
        };
        let head = String::from_utf8_lossy(&conn.buf[..head_end]);
        let accept = derive_accept_key(Self::KEY.as_bytes());
        if !head.starts_with("HTTP/1.1 101")
            || !head.lines().any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
                })
            })
        {
            bail!("handshake refused: {}", head.lines().next().unwrap_or_default());
        }
        conn.start = head_end;
        Ok(conn)
    }

    /// Reads more bytes after `end`, first moving what is unused to the front (and growing the
    /// buffer when it is full of one unfinished frame); returns how many were read.
    pub async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await.context("reading")?;
        self.end += n;
        Ok(n)
    }

    pub async fn next_frame(&mut self) -> anyhow::Result<RawFrame<'_>> {
        let (opcode, payload) = loop {
            if let Some(frame) = parse_header(&self.buf[self.start..self.end])? {
                break frame;
            }
            if self.fill().await? == 0 {
                bail!("the server closed the connection without a close frame");
            }
        };
        let payload = self.start + payload.start..self.start + payload.end;
        self.start = payload.end;
        Ok(match opcode {
            0x1 => RawFrame::Text(
                std::str::from_utf8(&self.buf[payload]).context("text frame is not UTF-8")?,
            ),
            0x8 => RawFrame::Close,
            0x9 => RawFrame::Ping(payload),
            0x2 | 0xA => RawFrame::Other,
            other => bail!("unexpected opcode {other:#x}"),
        })
    }

    /// Answers a ping with its payload, masked as a client must.
    pub async fn pong(&mut self, payload: std::ops::Range<usize>) -> anyhow::Result<()> {
        const MASK: [u8; 4] = [0x6c, 0x6f, 0x61, 0x64];
        let payload = &self.buf[payload];
        let len = u8::try_from(payload.len()).ok().filter(|n| *n <= 125).context("long ping")?;
        let mut frame = vec![0x8A, 0x80 | len];
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
        self.stream.write_all(&frame).await.context("sending a pong")
    }
}

/// Parses the frame at the start of `buf`: its opcode and where its payload lies, or `None` when
/// `buf` does not hold all of it yet. Server frames are unmasked and, from this server, never
/// fragmented.
fn parse_header(buf: &[u8]) -> anyhow::Result<Option<(u8, std::ops::Range<usize>)>> {
    let [b0, b1, rest @ ..] = buf else { return Ok(None) };
    if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
        bail!("fragmented frame");
    }
    if b1 & 0x80 != 0 {
        bail!("masked frame from the server");
    }
    let (len, header) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(bytes) => (u64::from_be_bytes(bytes.try_into().context("length")?), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).ok().filter(|n| *n <= 1 << 20).context("frame over 1 MiB")?;
    let end = header + len;
    Ok((buf.len() >= end).then(|| (b0 & 0x0f, header..end)))
}

/// A random number that is good enough to spread a bench's timers (not for anything secret).
pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::try_from(std::time::Instant::now().elapsed().as_nanos()).unwrap_or(0));
    h.finish() as u32
}

/// Fails early, with the fix, when the open-files limit cannot hold every connection.
pub fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < connections + 256
    {
        bail!("open-files limit is {soft}; run `ulimit -n {}` first", connections + 256);
    }
    Ok(())
}
