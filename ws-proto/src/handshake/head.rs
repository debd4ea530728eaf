//! Incremental, linear-time detection of the end of an HTTP head (`\r\n\r\n`).
//!
//! A line feed not preceded by a carriage return is refused as soon as it arrives:
//! heads ending lines with a bare LF are answered 400 at once rather than waiting for
//! a CRLF CRLF that never comes (and parsers that disagree on bare LF are how request
//! smuggling starts). So is a control character other than CR, LF and HTAB, which no
//! HTTP head holds (RFC 9110 §5.5): a peer speaking another protocol (binary, or
//! tether's raw TCP preamble) is answered at once, not at the handshake timeout.
//!
//! Every byte received is examined exactly once, whatever the split of the input: the
//! reader keeps how much of the terminator the buffered bytes already end with, so a
//! peer trickling one byte per read costs one comparison per byte, never a rescan of
//! what came before (the quadratic pattern of tungstenite's CVE-2023-43669).

use bytes::Bytes;

use super::error::HandshakeError;

/// The bytes that end an HTTP head.
const TERMINATOR: &[u8; 4] = b"\r\n\r\n";

/// Accumulates the bytes of an HTTP head until its blank line, within a size limit.
#[derive(Debug, Clone)]
pub(crate) struct HeadReader {
    /// The head received so far (never more than `max` bytes).
    buf: Vec<u8>,
    /// How many bytes of [`TERMINATOR`] the buffer currently ends with (0..=3).
    matched: usize,
    /// Largest head accepted, terminator included.
    max: usize,
    /// Bytes the terminator search has examined since creation.
    #[cfg(test)]
    pub(crate) examined: usize,
}

/// A complete head and the bytes that followed it in the same read.
#[derive(Debug)]
pub(crate) struct Head {
    /// The head, terminator included.
    pub(crate) head: Vec<u8>,
    /// Bytes after the terminator: the start of the WebSocket stream.
    pub(crate) rest: Bytes,
}

impl HeadReader {
    /// A reader accepting heads of at most `max` bytes, terminator included.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            matched: 0,
            max,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Takes the next chunk read from the socket.
    ///
    /// Returns the head once its terminator has arrived, `Ok(None)` while more is
    /// needed, and [`HandshakeError::HeadTooLarge`] as soon as `max` bytes have arrived
    /// without a terminator (without waiting for more).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Option<Head>, HandshakeError> {
        // Only the bytes that could still belong to an acceptable head are examined.
        let room = self.max.saturating_sub(self.buf.len());
        let window = &data[..room.min(data.len())];
        for (i, &byte) in window.iter().enumerate() {
            #[cfg(test)]
            {
                self.examined += 1;
            }
            // After a `\r` the state is 1 or 3; any other state means the LF is bare.
            if byte == b'\n' && self.matched != 1 && self.matched != 3 {
                return Err(HandshakeError::MalformedHttp {
                    reason: "bare LF line ending (lines must end with CRLF)",
                });
            }
            if (byte < 0x20 && !matches!(byte, b'\r' | b'\n' | b'\t')) || byte == 0x7f {
                return Err(HandshakeError::MalformedHttp {
                    reason: "a control character in the head",
                });
            }
            self.matched = next_state(self.matched, byte);
            if self.matched == TERMINATOR.len() {
                self.buf.extend_from_slice(&window[..=i]);
                let head = std::mem::take(&mut self.buf);
                let rest = Bytes::copy_from_slice(&data[i + 1..]);
                self.matched = 0;
                return Ok(Some(Head { head, rest }));
            }
        }
        self.buf.extend_from_slice(window);
        if self.buf.len() >= self.max && !data.is_empty() {
            // The search stops at the limit, so the figure is the same however the
            // input was split: bytes received without the end of the head.
            return Err(HandshakeError::HeadTooLarge {
                len: self.buf.len(),
                max: self.max,
            });
        }
        Ok(None)
    }
}

/// How many bytes of the terminator are matched after `byte`, given `matched` before.
///
/// The only partial match that survives a mismatch is a lone `\r` (the terminator's
/// proper prefixes that are also suffixes of longer prefixes are exactly that one).
fn next_state(matched: usize, byte: u8) -> usize {
    if byte == TERMINATOR[matched] {
        matched + 1
    } else if byte == b'\r' {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(reader: &mut HeadReader, data: &[u8], chunk: usize) -> Result<Option<Head>, HandshakeError> {
        for piece in data.chunks(chunk.max(1)) {
            if let Some(head) = reader.feed(piece)? {
                return Ok(Some(head));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_terminator_under_every_split() {
        let input = b"GET / HTTP/1.1\r\nA: b\r\r\n\r\r\n\r\nREST";
        for chunk in 1..=input.len() {
            let mut reader = HeadReader::new(1024);
            let head = feed_all(&mut reader, input, chunk).unwrap().unwrap();
            let head_len = input.len() - 4;
            assert_eq!(head.head, &input[..head_len]);
            // The rest is what followed the terminator in the chunk that completed it.
            let chunk_end = (head_len.div_ceil(chunk) * chunk).min(input.len());
            assert_eq!(head.rest, &input[head_len..chunk_end]);
        }
    }

    #[test]
    fn exact_limit_is_accepted_one_more_is_not() {
        let head = b"GET / HTTP/1.1\r\n\r\n";
        let mut reader = HeadReader::new(head.len());
        assert!(reader.feed(head).unwrap().is_some());

        let mut reader = HeadReader::new(head.len() - 1);
        let err = reader.feed(head).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::HeadTooLarge {
                len: head.len() - 1,
                max: head.len() - 1
            }
        );
    }

    #[test]
    fn rejects_as_soon_as_the_limit_is_reached() {
        let mut reader = HeadReader::new(8);
        assert!(reader.feed(b"GET / HT").is_err());
        let mut reader = HeadReader::new(8);
        assert!(reader.feed(b"GET / H").unwrap().is_none());
        assert_eq!(
            reader.feed(b"T").unwrap_err(),
            HandshakeError::HeadTooLarge { len: 8, max: 8 }
        );
    }

    #[test]
    fn a_control_character_is_refused_as_soon_as_it_arrives() {
        for input in [&b"TETHER\x01"[..], b"GET /\x00", b"GET / HTTP/1.1\r\nX: a\x7f"] {
            let mut reader = HeadReader::new(8192);
            let err = reader.feed(input).unwrap_err();
            assert!(matches!(err, HandshakeError::MalformedHttp { .. }), "{err:?}");
        }
        let mut tab = HeadReader::new(8192);
        assert!(
            tab.feed(b"GET / HTTP/1.1\r\nX:\ta\r\n\r\n").unwrap().is_some(),
            "HTAB is allowed"
        );
    }

    #[test]
    fn a_bare_lf_is_refused_as_soon_as_it_arrives() {
        for input in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"\n",
        ] {
            let bare = input.windows(2).position(|w| w[1] == b'\n' && w[0] != b'\r');
            let bare = bare.map_or(0, |i| i + 1);
            for chunk in 1..=input.len() {
                let mut reader = HeadReader::new(1024);
                let err = feed_all(&mut reader, input, chunk).unwrap_err();
                assert!(matches!(err, HandshakeError::MalformedHttp { .. }), "{err:?}");
                // Nothing after the bare LF was needed to decide.
                assert!(
                    reader.examined <= bare + 1,
                    "{chunk}: {} > {}",
                    reader.examined,
                    bare + 1
                );
            }
        }
    }

    #[test]
    fn every_byte_is_examined_once() {
        let n = 16 * 1024;
        let mut reader = HeadReader::new(4 * n);
        for i in 0..n {
            // `\r\n\r` repeated: the most backtracking-prone input there is.
            let byte = b"\r\n\r"[i % 3];
            assert!(reader.feed(&[byte]).unwrap().is_none());
        }
        assert_eq!(reader.examined, n);
    }
}
