//! The load generator's side of the wire: an HTTP upgrade written by hand, masked
//! client frames built once, server frames parsed in place; or tether's raw TCP
//! framing (a preamble, then length-prefixed frames: docs/PROTOCOL.md). Nothing here validates
//! more than a benchmark needs (the servers under test are not the subject of
//! conformance here: docs/CONFORMANCE.md is).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;

/// The masking key of every frame the load generator sends (a fixed non-zero key:
/// the server unmasks as it would any other).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Appends one whole (FIN) masked client frame of `opcode` carrying `payload`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
}

/// How a connection frames messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// RFC 6455, masked client frames.
    WebSocket,
    /// tether's raw TCP framing: `length: u32 BE | kind: u8 | payload` (kinds are
    /// WebSocket's opcodes: 1 text, 8 close).
    Prefixed,
}

/// A client connection as the load generator drives it: one task reads and writes
/// it in turns.
pub struct Conn {
    stream: TcpStream,
    framing: Framing,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// What [`Conn::read_frames`] found in one read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadOutcome {
    /// Whole data frames handed to the callback.
    pub frames: usize,
}

impl Conn {
    /// Connects to `addr` and upgrades `path` with `headers` added to the request.
    /// Fails unless the answer is `101`.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut end = 0;
        let head_end = loop {
            if end == buf.len() {
                return Err(io::Error::other("handshake answer too long"));
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
            end += n;
            if let Some(pos) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            return Err(io::Error::other(format!("upgrade refused: {head}")));
        }
        Ok(Self {
            stream,
            framing: Framing::WebSocket,
            buf,
            start: head_end,
            end,
        })
    }

    /// Connects to a raw TCP port and exchanges preambles (`TETHER`, version 1).
    pub async fn connect_tcp(addr: SocketAddr) -> io::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(b"TETHER\x01").await?;
        let mut preamble = [0; 7];
        stream.read_exact(&mut preamble).await?;
        if &preamble != b"TETHER\x01" {
            return Err(io::Error::other("not tether's raw TCP framing"));
        }
        Ok(Self {
            stream,
            framing: Framing::Prefixed,
            buf: vec![0u8; 16 * 1024],
            start: 0,
            end: 0,
        })
    }

    /// Appends one frame of `opcode` carrying `payload`, framed as this connection
    /// frames: [`push_frame`] for WebSocket, a length and a kind for raw TCP.
    pub fn frame(&self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        match self.framing {
            Framing::WebSocket => push_frame(out, opcode, payload),
            Framing::Prefixed => {
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.push(opcode);
                out.extend_from_slice(payload);
            }
        }
    }

    /// Writes `bytes` (frames built with [`push_frame`]) at once.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads once (unless whole frames are already buffered) and hands every whole
    /// data frame to `on_frame(opcode, payload)`. Pings are handed out too (the
    /// caller answers them); a close frame or the end of the stream is an error.
    pub async fn read_frames(&mut self, mut on_frame: impl FnMut(u8, &[u8])) -> io::Result<ReadOutcome> {
        let mut outcome = ReadOutcome::default();
        loop {
            let parsed = match self.framing {
                Framing::WebSocket => parse,
                Framing::Prefixed => parse_prefixed,
            };
            while let Some((opcode, masked, range, next)) = parsed(&self.buf[self.start..self.end]) {
                let base = self.start;
                if masked {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "masked frame from the server",
                    ));
                }
                if opcode == CLOSE {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "server sent close",
                    ));
                }
                on_frame(opcode, &self.buf[base + range.0..base + range.1]);
                outcome.frames += 1;
                self.start += next;
            }
            if outcome.frames > 0 {
                return Ok(outcome);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.end += n;
        }
    }
}

/// One whole server frame at the start of `bytes`: its opcode, whether it is masked
/// (a fault: servers must not mask), the payload's range and the length of the frame. Fragmented messages are not expected (every
/// subject sends small messages whole).
fn parse(bytes: &[u8]) -> Option<(u8, bool, (usize, usize), usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let opcode = bytes[0] & 0x0f;
    let masked = bytes[1] & 0x80 != 0;
    let (len, header) = match bytes[1] & 0x7f {
        126 => {
            if bytes.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4)
        }
        127 => {
            if bytes.len() < 10 {
                return None;
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&bytes[2..10]);
            (u64::from_be_bytes(len) as usize, 10)
        }
        len => (len as usize, 2),
    };
    let header = if masked { header + 4 } else { header };
    if bytes.len() < header + len {
        return None;
    }
    Some((opcode, masked, (header, header + len), header + len))
}

/// One whole raw TCP frame at the start of `bytes`, in [`parse`]'s terms (never masked).
fn parse_prefixed(bytes: &[u8]) -> Option<(u8, bool, (usize, usize), usize)> {
    let header = bytes.get(..5)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if bytes.len() < 5 + len {
        return None;
    }
    Some((header[4], false, (5, 5 + len), 5 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_parser_once_unmasked() {
        for len in [0usize, 20, 125, 126, 1024, 70_000] {
            let payload = vec![b'x'; len];
            let mut frame = Vec::new();
            push_frame(&mut frame, TEXT, &payload);
            // A server frame is the same without mask bit and key.
            let mut server = vec![frame[0], frame[1] & 0x7f];
            let header = if len < 126 {
                2
            } else if len <= 0xffff {
                4
            } else {
                10
            };
            server.extend_from_slice(&frame[2..header]);
            server.extend_from_slice(&payload);
            let (opcode, masked, range, next) = parse(&server).expect("a whole frame");
            assert_eq!(
                (opcode, masked, range.1 - range.0, next),
                (TEXT, false, len, server.len())
            );
            let (_, masked, _, next) = parse(&frame).expect("a whole masked frame");
            assert_eq!((masked, next), (true, frame.len()));
            assert!(parse(&server[..server.len() - 1]).is_none() || len == 0);
        }
    }
}
