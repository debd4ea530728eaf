//! Length-prefixed framing: tether's messages over a plain byte stream (raw TCP, a
//! Unix socket, a pipe) instead of WebSocket. Sans-IO like [`Connection`](crate::Connection),
//! with the same calls, so one driver runs either.
//!
//! The wire (docs/PROTOCOL.md, "Raw TCP"):
//!
//! ```text
//! preamble, each way, once:  "TETHER" (6 bytes of ASCII) | version: u8 (1)
//! then frames, both ways:    length: u32 BE | kind: u8 | payload (`length` bytes)
//! kinds:                     1 text (UTF-8), 2 binary, 8 close (empty, or code: u16 BE | UTF-8 reason)
//! ```
//!
//! The client writes its preamble first; the server reads it ([`PreambleReader`])
//! and answers with its own. Bytes that are not the magic (an HTTP request: a
//! WebSocket client on the wrong port) get [`refusal_response`], an HTTP 400 that
//! says what the port speaks; a preamble of another version gets the server's own
//! preamble, so the client learns which version it speaks, and the stream is closed.
//!
//! Faults are answered as WebSocket answers them, with the same close codes: a
//! payload longer than [`Config::max_message_size`] closes with 1009 as soon as its
//! length is read (nothing of it is buffered), text that is not UTF-8 with 1007, an
//! unknown kind or a bad close payload with 1002. A close is answered with a close,
//! as in RFC 6455; the side that sent the first one closes the stream once the
//! answer arrived (or its close timeout passed).

use std::collections::VecDeque;
use std::mem;

use bytes::Bytes;

use crate::close::{close_body, failure_close_body, parse_close_body, CloseCode, CloseFrame};
use crate::config::Config;
use crate::connection::{ConnectionState, Event};
use crate::error::{ProtocolError, SendError};

/// The magic that opens the preamble.
pub const MAGIC: [u8; 6] = *b"TETHER";
/// The framing version this crate speaks.
pub const VERSION: u8 = 1;
/// The preamble each side sends once, before any frame: [`MAGIC`] then [`VERSION`].
pub const PREAMBLE: [u8; 7] = [b'T', b'E', b'T', b'H', b'E', b'R', VERSION];
/// Bytes before each frame's payload: the length (4) and the kind (1).
pub const HEADER_LEN: usize = 5;

/// The kind byte of a text frame.
pub const KIND_TEXT: u8 = 1;
/// The kind byte of a binary frame.
pub const KIND_BINARY: u8 = 2;
/// The kind byte of a close frame.
pub const KIND_CLOSE: u8 = 8;

/// Why a preamble was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreambleError {
    /// The bytes are not tether's magic (an HTTP request, another protocol); the
    /// first `seen` bytes are the ones read.
    NotTether {
        /// What arrived instead, up to the preamble's length.
        seen: Vec<u8>,
    },
    /// The magic, with a version this side does not speak.
    Version {
        /// The version the peer announced.
        version: u8,
    },
    /// The server answered with an HTTP response ([`http_status`] read its status):
    /// an HTTP server, most likely a WebSocket port.
    Http {
        /// The response's status.
        status: u16,
    },
}

impl std::fmt::Display for PreambleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotTether { seen } => write!(
                f,
                "the peer does not speak tether's length-prefixed framing (it sent {:?})",
                String::from_utf8_lossy(seen)
            ),
            Self::Version { version } => {
                write!(
                    f,
                    "the peer speaks framing version {version}, this side {VERSION}"
                )
            }
            Self::Http { status } => write!(
                f,
                "the server answered HTTP {status}: it does not speak tether's length-prefixed framing (a WebSocket port?)"
            ),
        }
    }
}

impl std::error::Error for PreambleError {}

/// Reads the peer's preamble from whatever pieces the stream delivers; both sides use it.
#[derive(Debug, Default)]
pub struct PreambleReader {
    seen: Vec<u8>,
}

impl PreambleReader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes: `Ok(None)` while the preamble is incomplete, `Ok(Some(rest))`
    /// once it is whole and right (`rest`: the bytes that followed it, the first
    /// frames), `Err` as soon as a byte differs from the magic, or on another
    /// version. After a decision, further calls are not meaningful.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<Bytes>, PreambleError> {
        let take = (PREAMBLE.len() - self.seen.len()).min(data.len());
        self.seen.extend_from_slice(&data[..take]);
        let magic_seen = self.seen.len().min(MAGIC.len());
        if self.seen[..magic_seen] != MAGIC[..magic_seen] {
            return Err(PreambleError::NotTether {
                seen: mem::take(&mut self.seen),
            });
        }
        if self.seen.len() < PREAMBLE.len() {
            return Ok(None);
        }
        let version = self.seen[MAGIC.len()];
        if version != VERSION {
            return Err(PreambleError::Version { version });
        }
        Ok(Some(Bytes::copy_from_slice(&data[take..])))
    }
}

/// What a server writes to a peer whose preamble is not tether's (then it closes):
/// an HTTP 400 naming what the port speaks, which a WebSocket client or a browser
/// reports as a failed upgrade with that status.
pub fn refusal_response() -> Vec<u8> {
    const BODY: &str = "This port speaks tether's length-prefixed framing (a TETHER preamble, \
                        then length-prefixed frames), not HTTP or WebSocket.\n";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// The status of the HTTP response line `bytes` start with (`HTTP/1.1 400 …`), once
/// its status code is whole: what a WebSocket port answers a client's preamble with.
/// `None` while it may still come, or when `bytes` are not one.
pub fn http_status(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?;
    let (code, after) = rest.get(2..5).zip(rest.get(5))?;
    if rest[1] != b' ' || *after != b' ' || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// One length-prefixed connection, either role (the framing is symmetric): bytes in,
/// [`Event`]s and bytes out. Drive it like [`Connection`](crate::Connection): after
/// each input drain [`poll_event`](Self::poll_event), then
/// [`poll_transmit`](Self::poll_transmit).
#[derive(Debug)]
pub struct PrefixedConnection {
    max_message_size: usize,
    state: ConnectionState,
    /// The start of a frame that has not arrived whole.
    partial: Vec<u8>,
    events: VecDeque<Event>,
    out: Vec<u8>,
    /// Our close frame went out (or is queued).
    close_sent: bool,
    /// The close body owed to the peer, written when its event is polled (after the
    /// answers to the messages before it, as `Connection` does).
    pending_close: Option<Vec<u8>>,
}

impl PrefixedConnection {
    /// A connection after the preamble, payloads bounded by
    /// [`Config::max_message_size`].
    pub fn new(config: &Config) -> Self {
        Self {
            max_message_size: config.max_message_size,
            state: ConnectionState::Open,
            partial: Vec::new(),
            events: VecDeque::new(),
            out: Vec::new(),
            close_sent: false,
            pending_close: None,
        }
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Whether nothing more will be read or sent (flush what is queued, then close
    /// the stream).
    pub fn is_closed(&self) -> bool {
        self.state == ConnectionState::Closed
    }

    /// Feeds bytes read from the stream.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        if self.partial.is_empty() {
            let used = self.read_frames(data);
            if !self.is_closed() {
                self.partial.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.read_frames(&buf);
            if !self.is_closed() {
                buf.drain(..used);
                self.partial = buf;
            }
        }
    }

    /// Tells the connection the stream ended: unless the closing handshake was done,
    /// an [`Event::Close`] with 1006 reports the abnormal closure.
    pub fn handle_eof(&mut self) {
        if !self.is_closed() {
            self.state = ConnectionState::Closed;
            self.events
                .push_back(Event::Close(CloseFrame::new(CloseCode::ABNORMAL, String::new())));
        }
        self.partial = Vec::new();
    }

    /// Decodes the whole frames at the start of `buf`; returns the bytes used.
    fn read_frames(&mut self, buf: &[u8]) -> usize {
        let mut used = 0;
        while let Some(header) = buf[used..].first_chunk::<HEADER_LEN>() {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let kind = header[4];
            let len = len as usize;
            if len > self.max_message_size {
                self.fail(ProtocolError::MessageTooLarge {
                    len: len as u64,
                    max: self.max_message_size,
                });
                return used;
            }
            let Some(payload) = buf[used + HEADER_LEN..].get(..len) else {
                break;
            };
            used += HEADER_LEN + len;
            self.handle_frame(kind, payload);
            if self.is_closed() {
                break;
            }
        }
        used
    }

    fn handle_frame(&mut self, kind: u8, payload: &[u8]) {
        match kind {
            KIND_TEXT => match std::str::from_utf8(payload) {
                Ok(text) => self.events.push_back(Event::Text(text.to_owned())),
                Err(err) => self.fail(ProtocolError::InvalidUtf8 {
                    valid_up_to: err.valid_up_to(),
                }),
            },
            KIND_BINARY => self
                .events
                .push_back(Event::Binary(Bytes::copy_from_slice(payload))),
            KIND_CLOSE => {
                if payload.len() > 2 + CloseFrame::MAX_REASON_LEN {
                    self.fail(ProtocolError::ControlFrameTooLarge {
                        len: payload.len() as u64,
                    });
                    return;
                }
                match parse_close_body(payload) {
                    Ok(frame) => {
                        if !self.close_sent {
                            // Answered with the peer's code, as RFC 6455 §5.5.1 does.
                            let code = frame.code.map(|code| code.0.to_be_bytes().to_vec());
                            self.pending_close = Some(code.unwrap_or_default());
                        }
                        self.state = ConnectionState::Closed;
                        self.events.push_back(Event::Close(frame));
                    }
                    Err(err) => self.fail(err),
                }
            }
            opcode => self.fail(ProtocolError::ReservedOpcode { opcode }),
        }
    }

    fn fail(&mut self, err: ProtocolError) {
        if !self.close_sent {
            self.pending_close = Some(failure_close_body(&err));
        }
        self.state = ConnectionState::Closed;
        self.partial = Vec::new();
        self.events.push_back(Event::Failed(err));
    }

    /// The next event, or `None` until the next input. A close owed to the peer (its
    /// close, or its fault) is queued as the last event is taken.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if self.events.is_empty() {
            if let Some(body) = self.pending_close.take() {
                self.write_frame(KIND_CLOSE, &[&body]);
                self.close_sent = true;
            }
        }
        Some(event)
    }

    /// Open, or a close is owed but not yet written: the answers to the messages
    /// before it still go out.
    fn can_send(&self) -> bool {
        !self.close_sent && (self.state == ConnectionState::Open || self.pending_close.is_some())
    }

    fn write_frame(&mut self, kind: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        // Whatever we send is bounded by the engine's limits, far below 4 GiB.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.push(kind);
        for part in parts {
            self.out.extend_from_slice(part);
        }
    }

    /// Sends a text message made of `body` followed by `tail` (valid UTF-8 together:
    /// the caller's guarantee, as for `Connection::send_text_parts`).
    pub fn send_text_parts(&mut self, body: &[u8], tail: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        self.write_frame(KIND_TEXT, &[body, tail]);
        Ok(())
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_text_parts(text.as_bytes(), &[])
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        self.write_frame(KIND_BINARY, &[data]);
        Ok(())
    }

    /// Starts the closing handshake: nothing is sent after it; keep reading until the
    /// peer's answer (or a timeout of the caller's).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if self.close_sent || self.is_closed() {
            return Err(SendError::Closed);
        }
        let body = close_body(code, reason)?;
        self.write_frame(KIND_CLOSE, &[&body]);
        self.close_sent = true;
        self.state = ConnectionState::Closing;
        Ok(())
    }

    /// Bytes queued for the stream.
    pub fn pending_transmit_len(&self) -> usize {
        self.out.len()
    }

    /// Everything queued for the stream, in one chunk.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| Bytes::from(mem::take(&mut self.out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    fn events(conn: &mut PrefixedConnection) -> Vec<Event> {
        std::iter::from_fn(|| conn.poll_event()).collect()
    }

    fn small() -> PrefixedConnection {
        PrefixedConnection::new(&Config::default().with_max_message_size(16))
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut wire = frame(KIND_TEXT, b"hello");
        wire.extend(frame(KIND_BINARY, &[0, 1, 2]));
        wire.extend(frame(KIND_TEXT, b""));
        for cut in 0..=wire.len() {
            let mut conn = small();
            conn.handle_bytes(&wire[..cut]);
            conn.handle_bytes(&wire[cut..]);
            assert_eq!(
                events(&mut conn),
                [
                    Event::Text("hello".into()),
                    Event::Binary(Bytes::from_static(&[0, 1, 2])),
                    Event::Text(String::new())
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_oversized_length_fails_with_1009_before_its_payload_arrives() {
        let mut conn = small();
        conn.handle_bytes(&17u32.to_be_bytes());
        conn.handle_bytes(&[KIND_TEXT]);
        let events = events(&mut conn);
        assert!(
            matches!(&events[..], [Event::Failed(err)] if err.close_code() == CloseCode::MESSAGE_TOO_BIG),
            "{events:?}"
        );
        assert!(conn.is_closed());
        let close = conn.poll_transmit().unwrap();
        assert_eq!(&close[4..7], &[KIND_CLOSE, 0x03, 0xf1], "close 1009");
    }

    #[test]
    fn bad_text_kinds_and_close_payloads_fail_with_their_codes() {
        for (wire, code) in [
            (frame(KIND_TEXT, &[0xff]), CloseCode::INVALID_PAYLOAD),
            (frame(3, b"x"), CloseCode::PROTOCOL_ERROR),
            (frame(KIND_CLOSE, &[3]), CloseCode::PROTOCOL_ERROR),
            (
                frame(KIND_CLOSE, &1005u16.to_be_bytes()),
                CloseCode::PROTOCOL_ERROR,
            ),
        ] {
            let mut conn = small();
            conn.handle_bytes(&wire);
            let events = events(&mut conn);
            assert!(
                matches!(&events[..], [Event::Failed(err)] if err.close_code() == code),
                "{wire:?}: {events:?}"
            );
        }
    }

    #[test]
    fn messages_before_a_close_are_answered_before_the_answering_close() {
        let mut conn = small();
        let mut wire = frame(KIND_TEXT, b"ping");
        wire.extend(frame(KIND_CLOSE, &[0x0f, 0xa0, b'b', b'y', b'e']));
        conn.handle_bytes(&wire);
        assert_eq!(conn.poll_event(), Some(Event::Text("ping".into())));
        conn.send_text("pong").unwrap();
        assert_eq!(
            conn.poll_event(),
            Some(Event::Close(CloseFrame::new(CloseCode(4000), "bye")))
        );
        assert!(conn.send_text("late").is_err(), "nothing after the close");
        let mut expected = frame(KIND_TEXT, b"pong");
        expected.extend(frame(KIND_CLOSE, &[0x0f, 0xa0]));
        assert_eq!(conn.poll_transmit().unwrap(), expected);
    }

    #[test]
    fn our_close_is_answered_and_eof_before_it_is_abnormal() {
        let mut conn = small();
        conn.close(CloseCode::NORMAL, "done").unwrap();
        assert_eq!(conn.state(), ConnectionState::Closing);
        assert!(conn.close(CloseCode::NORMAL, "").is_err());
        conn.handle_bytes(&frame(KIND_CLOSE, &1000u16.to_be_bytes()));
        assert!(conn.is_closed());
        assert!(matches!(conn.poll_event(), Some(Event::Close(_))));
        assert_eq!(
            conn.poll_transmit().unwrap(),
            frame(KIND_CLOSE, b"\x03\xe8done"),
            "no second close"
        );

        let mut cut = small();
        cut.handle_bytes(&frame(KIND_TEXT, b"abc")[..6]);
        cut.handle_eof();
        assert_eq!(
            events(&mut cut),
            [Event::Close(CloseFrame::new(CloseCode::ABNORMAL, ""))]
        );
    }

    #[test]
    fn the_preamble_is_read_in_pieces_and_refused_at_the_first_wrong_byte() {
        let mut reader = PreambleReader::new();
        assert_eq!(reader.handle_bytes(b"TET"), Ok(None));
        let mut rest = PREAMBLE[3..].to_vec();
        rest.extend(frame(KIND_TEXT, b"x"));
        assert_eq!(
            reader.handle_bytes(&rest),
            Ok(Some(Bytes::from(frame(KIND_TEXT, b"x"))))
        );

        let mut http = PreambleReader::new();
        assert_eq!(
            http.handle_bytes(b"G"),
            Err(PreambleError::NotTether { seen: b"G".to_vec() }),
            "refused at once, not at the deadline"
        );
        let mut future = PreambleReader::new();
        assert_eq!(
            future.handle_bytes(b"TETHER\x02"),
            Err(PreambleError::Version { version: 2 })
        );
        assert!(refusal_response().starts_with(b"HTTP/1.1 400 "));
        assert_eq!(http_status(&refusal_response()), Some(400));
        for not_yet in [
            &b"HTTP/1.1 40"[..],
            b"HTTP/1.1 400",
            b"HTTP/2 200 ",
            b"TETHER\x01",
        ] {
            assert_eq!(http_status(not_yet), None, "{not_yet:?}");
        }
    }
}
