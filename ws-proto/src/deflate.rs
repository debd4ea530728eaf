//! permessage-deflate (RFC 7692): negotiating the extension, and the compressor and
//! decompressor a [`Connection`](crate::Connection) runs when it was agreed.
//!
//! # Negotiation
//!
//! - **Server** ([`DeflateParams::negotiate`], or
//!   [`Request::negotiate_deflate`](crate::handshake::Request::negotiate_deflate)): the
//!   first `permessage-deflate` offer we can honour is accepted; an offer with an
//!   unknown parameter, a repeated parameter or a bad value is declined (RFC 7692 §5),
//!   and the next offer is tried. No acceptable offer: no compression.
//! - **Client** ([`DeflateParams::client_offer`]): we offer
//!   `permessage-deflate; client_max_window_bits` (plus the no-context-takeover
//!   parameters [`Config`] asks for). The server's answer is checked by
//!   [`ClientHandshake`](crate::handshake::ClientHandshake): anything RFC 7692 does not
//!   allow fails the handshake ([`HandshakeError::InvalidDeflateResponse`]).
//!
//! # Window sizes
//!
//! The pure-Rust backend (miniz_oxide) always inflates with a 32 KiB window, which
//! decodes a stream made with any smaller window, so we never ask the peer for a
//! smaller one (`client_max_window_bits` is offered bare and never answered with a
//! value; that would save the peer memory, not us). Its compressor also always uses a
//! 32 KiB window and cannot be told to use less. When the peer limits our window to
//! 2^N bytes (N < 15, `server_max_window_bits=N` offered to a server,
//! `client_max_window_bits=N` answered to a client), we accept and honour it by
//! sending every message as *stored* DEFLATE blocks (RFC 1951 §3.2.4: the bytes as
//! they are, behind a 5-byte header per 64 KiB): no back-references, so none reaches
//! too far, for the cost of a copy and no compressor at all. Emulating the window
//! with miniz_oxide instead (a full flush every 2^N input bytes) cleared 128 KiB of
//! its tables per flush: at N = 8 that was ~460 µs of server CPU per 6 KB message and
//! connection, a cost any client could choose for everything sent to it. (Stored
//! blocks rather than plain frames: a plain frame would do as well by RFC 7692, but
//! Autobahn's runner, kosoku 0.1, fails its compression cases on an uncompressed
//! text message.)
//!
//! # Memory
//!
//! A compressor (miniz_oxide) holds about 300 KB, a decompressor about 43 KB. Both are
//! created on first use. When this end does not take its context over (`*_no_context_takeover`
//! for our side) the compressor is dropped after each message; when the peer does not,
//! the decompressor is dropped after each message. An idle connection that negotiated
//! both therefore holds no compression state at all. `docs/BENCHMARKS.md` has figures.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::config::Config;
use crate::error::ProtocolError;
use crate::handshake::{Extension, HandshakeError};

/// The extension's registered name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The four octets a sync flush ends with, removed by the sender and appended by the
/// receiver (RFC 7692 §7.2.1, §7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The parameters of an agreed permessage-deflate, as they appear in the server's
/// response (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server starts every message with a fresh compressor.
    pub server_no_context_takeover: bool,
    /// The client starts every message with a fresh compressor.
    pub client_no_context_takeover: bool,
    /// The server compresses with a window of at most 2^N bytes (8–15).
    pub server_max_window_bits: Option<u8>,
    /// The client compresses with a window of at most 2^N bytes (8–15).
    pub client_max_window_bits: Option<u8>,
}

/// The parameters of one offer or response, checked for form only.
#[derive(Debug, Default)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `Some(None)`: present without a value.
    server_max_window_bits: Option<Option<u8>>,
    client_max_window_bits: Option<Option<u8>>,
}

/// Parses the parameters of one `permessage-deflate` element: unknown parameters,
/// repeated ones, values where none belong and window sizes outside 8–15 (or not
/// plain decimal) are errors.
fn parse(ext: &Extension) -> Result<Parsed, &'static str> {
    let mut p = Parsed::default();
    for (name, value) in ext.params() {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if value.is_some() {
                    return Err("a no_context_takeover parameter has a value");
                }
                let slot = if name.starts_with("server") {
                    &mut p.server_no_context_takeover
                } else {
                    &mut p.client_no_context_takeover
                };
                if *slot {
                    return Err("repeated parameter");
                }
                *slot = true;
            }
            "server_max_window_bits" | "client_max_window_bits" => {
                let slot = if name.starts_with("server") {
                    &mut p.server_max_window_bits
                } else {
                    &mut p.client_max_window_bits
                };
                if slot.is_some() {
                    return Err("repeated parameter");
                }
                *slot = Some(match value {
                    None => None,
                    Some(v) => Some(parse_window_bits(v).ok_or("max_window_bits is not 8-15")?),
                });
            }
            _ => return Err("unknown parameter"),
        }
    }
    Ok(p)
}

/// `8`–`15`, decimal, no sign, no leading zero.
fn parse_window_bits(value: &str) -> Option<u8> {
    if value.is_empty()
        || value.len() > 2
        || value.starts_with('0')
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

impl DeflateParams {
    /// Server side: the answer to the client's offers. `None` when
    /// [`Config::deflate`] is off or no offer is acceptable.
    ///
    /// Offers are tried in order; an offer is declined when it is malformed (an
    /// unknown or repeated parameter, a bad value, `server_max_window_bits` without a
    /// value). Accepted: `server_no_context_takeover` and `server_max_window_bits`
    /// are echoed (and honoured); `client_no_context_takeover` is echoed when offered
    /// (the client promised it; it lets us drop our decompressor between messages) or
    /// when [`Config::deflate_client_no_context_takeover`] asks for it;
    /// `server_no_context_takeover` is also sent when
    /// [`Config::deflate_server_no_context_takeover`] is set. `client_max_window_bits`
    /// is never answered with a value: we inflate with a 32 KiB window anyway.
    pub fn negotiate(config: &Config, offers: &[Extension]) -> Option<Self> {
        if !config.deflate {
            return None;
        }
        offers
            .iter()
            .filter(|e| e.name().eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
            .find_map(|offer| {
                let p = parse(offer).ok()?;
                let server_max_window_bits = match p.server_max_window_bits {
                    None => None,
                    Some(None) => return None, // needs a value in an offer
                    Some(Some(bits)) => Some(bits),
                };
                Some(Self {
                    server_no_context_takeover: p.server_no_context_takeover
                        || config.deflate_server_no_context_takeover,
                    client_no_context_takeover: p.client_no_context_takeover
                        || config.deflate_client_no_context_takeover,
                    server_max_window_bits,
                    client_max_window_bits: None,
                })
            })
    }

    /// Client side: the `Sec-WebSocket-Extensions` offer [`Config`] calls for, or
    /// `None` when [`Config::deflate`] is off.
    pub fn client_offer(config: &Config) -> Option<String> {
        if !config.deflate {
            return None;
        }
        let mut offer = String::from(PERMESSAGE_DEFLATE);
        if config.deflate_client_no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if config.deflate_server_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        offer.push_str("; client_max_window_bits");
        Some(offer)
    }

    /// Client side: checks the server's answer against the offers the client made
    /// (RFC 7692 §7.1): known parameters only, none repeated, window sizes with values
    /// in 8–15, `client_max_window_bits` only if an offer had it, a
    /// `server_max_window_bits` no larger than an offer asked for.
    pub(crate) fn from_response(response: &Extension, offers: &[Extension]) -> Result<Self, HandshakeError> {
        let invalid = |reason: &'static str| HandshakeError::InvalidDeflateResponse { reason };
        let p = parse(response).map_err(invalid)?;
        let offers: Vec<Parsed> = offers
            .iter()
            .filter(|e| e.name().eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
            .filter_map(|e| parse(e).ok())
            .collect();
        let server_max_window_bits = match p.server_max_window_bits {
            None => None,
            Some(None) => return Err(invalid("server_max_window_bits without a value")),
            Some(Some(bits)) => Some(bits),
        };
        let client_max_window_bits = match p.client_max_window_bits {
            None => None,
            Some(None) => return Err(invalid("client_max_window_bits without a value")),
            Some(Some(bits)) => Some(bits),
        };
        // Some offer must allow the answer as a whole.
        let fits = |o: &Parsed| {
            let server_bits_ok = match (o.server_max_window_bits, server_max_window_bits) {
                (Some(Some(asked)), Some(got)) => got <= asked,
                (Some(Some(_)), None) => false,
                _ => true,
            };
            let client_bits_ok = client_max_window_bits.is_none() || o.client_max_window_bits.is_some();
            let server_nct_ok = !o.server_no_context_takeover || p.server_no_context_takeover;
            server_bits_ok && client_bits_ok && server_nct_ok
        };
        if !offers.iter().any(fits) {
            return Err(invalid("parameters that no offer allowed"));
        }
        Ok(Self {
            server_no_context_takeover: p.server_no_context_takeover,
            client_no_context_takeover: p.client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        })
    }

    /// The extension element of the server's response.
    pub fn to_extension(&self) -> Extension {
        let mut ext = Extension::new(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            ext = ext.with_param("server_no_context_takeover", None);
        }
        if self.client_no_context_takeover {
            ext = ext.with_param("client_no_context_takeover", None);
        }
        if let Some(bits) = self.server_max_window_bits {
            ext = ext.with_param("server_max_window_bits", Some(bits.to_string()));
        }
        if let Some(bits) = self.client_max_window_bits {
            ext = ext.with_param("client_max_window_bits", Some(bits.to_string()));
        }
        ext
    }

    /// Whether an endpoint with this role compresses without context takeover, and
    /// the window it may compress with (bits).
    pub(crate) fn sending(&self, server: bool) -> (bool, u8) {
        if server {
            (
                self.server_no_context_takeover,
                self.server_max_window_bits.unwrap_or(15),
            )
        } else {
            (
                self.client_no_context_takeover,
                self.client_max_window_bits.unwrap_or(15),
            )
        }
    }

    /// Whether the peer of an endpoint with this role resets its context every message.
    pub(crate) fn peer_resets(&self, server: bool) -> bool {
        if server {
            self.client_no_context_takeover
        } else {
            self.server_no_context_takeover
        }
    }
}

// ------------------------------------------------------------------ compression

/// This end's compressor: created on first use, dropped after each message when no
/// context is taken over.
pub(crate) struct Deflater {
    compress: Option<Compress>,
    level: u32,
    /// Log2 of the window we may use.
    window_bits: u8,
    no_context_takeover: bool,
}

impl Deflater {
    pub(crate) fn new(level: u32, window_bits: u8, no_context_takeover: bool) -> Self {
        Self {
            compress: None,
            level: level.min(9),
            window_bits,
            no_context_takeover,
        }
    }

    /// Whether this end compresses with a 32 KiB window, so that a payload compressed
    /// by a fresh compressor may be sent on this connection (else it sends stored
    /// blocks: see "Window sizes" in the module docs).
    pub(crate) fn full_window(&self) -> bool {
        self.window_bits >= 15
    }

    /// Forgets the context: the next message starts a fresh stream.
    pub(crate) fn reset(&mut self) {
        if let Some(c) = self.compress.as_mut() {
            c.reset();
        }
    }

    /// Bytes of compressor state held now (approximate; see the module docs).
    pub(crate) fn state_size(&self) -> usize {
        if self.compress.is_some() {
            COMPRESSOR_STATE
        } else {
            0
        }
    }

    /// Compresses the concatenation of `parts` as one message into `out` (cleared
    /// first), the final `00 00 ff ff` removed; stored, not compressed, when our
    /// window is under 32 KiB (see "Window sizes" in the module docs).
    pub(crate) fn compress(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) {
        out.clear();
        if !self.full_window() {
            store(parts, out);
            return;
        }
        let level = self.level;
        let c = self
            .compress
            .get_or_insert_with(|| Compress::new(Compression::new(level), false));
        for part in parts {
            feed(c, part, FlushCompress::None, out);
        }
        feed(c, &[], FlushCompress::Sync, out);
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.no_context_takeover {
            self.compress = None;
        }
    }
}

/// `parts` as stored DEFLATE blocks (RFC 1951 §3.2.4), ended as a sync flush ends
/// with its `00 00 ff ff` removed: each block is a header byte (not final, type 00,
/// padding to the byte), `LEN` and its complement little-endian, then `LEN` bytes;
/// the last byte is the header of the empty block the receiver completes with the
/// tail it appends.
fn store(parts: &[&[u8]], out: &mut Vec<u8>) {
    const MAX_BLOCK: usize = u16::MAX as usize;
    let total: usize = parts.iter().map(|part| part.len()).sum();
    out.reserve(total + 5 * (total / MAX_BLOCK + parts.len()) + 1);
    for block in parts.iter().flat_map(|part| part.chunks(MAX_BLOCK)) {
        let len = block.len() as u16;
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.push(0x00);
}

/// Approximate bytes of a miniz_oxide compressor (hash chains, dictionary, LZ and
/// Huffman buffers), measured by `examples/deflate_cost.rs`.
pub(crate) const COMPRESSOR_STATE: usize = 300 * 1024;
/// Approximate bytes of a miniz_oxide decompressor (32 KiB window and tables).
pub(crate) const DECOMPRESSOR_STATE: usize = 43 * 1024;

/// Runs the compressor over `input` with `flush`, growing `out` as needed.
///
/// It returns only once nothing is left pending inside the compressor (the last call
/// left room in `out`). That matters: miniz_oxide answers a call that finds output
/// still pending from the previous one by writing it out and returning, without
/// performing the flush that call asked for; a sync flush issued then would be lost.
fn feed(c: &mut Compress, mut input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(input.len() / 2 + 1024);
        }
        let before = c.total_in();
        if c.compress_vec(input, out, flush).is_err() {
            // Cannot happen with a valid stream; the message goes out truncated
            // rather than the process panicking, and the peer fails it.
            return;
        }
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            return;
        }
    }
}

/// A payload compressed once, to send to many connections (a broadcast): see
/// [`Connection::send_precompressed`](crate::Connection::send_precompressed).
#[derive(Debug, Clone)]
pub struct Precompressed {
    pub(crate) text: bool,
    pub(crate) plain: Bytes,
    /// The payload compressed by a fresh compressor with a 32 KiB window, tail
    /// removed; `None` when compression is off or the payload is below
    /// [`Config::deflate_min_size`].
    pub(crate) deflated: Option<Bytes>,
}

impl Precompressed {
    /// A text message. The caller guarantees `text` is UTF-8 (checked in debug builds).
    pub fn text(text: Bytes, config: &Config) -> Self {
        debug_assert!(
            std::str::from_utf8(&text).is_ok(),
            "Precompressed::text: not UTF-8"
        );
        Self::new(true, text, config)
    }

    /// A binary message.
    pub fn binary(data: Bytes, config: &Config) -> Self {
        Self::new(false, data, config)
    }

    fn new(text: bool, plain: Bytes, config: &Config) -> Self {
        let deflated = (config.deflate && plain.len() >= config.deflate_min_size).then(|| {
            let mut out = Vec::new();
            Deflater::new(config.deflate_level, 15, true).compress(&[&plain], &mut out);
            Bytes::from(out)
        });
        Self {
            text,
            plain,
            deflated,
        }
    }

    /// The uncompressed payload.
    pub fn payload(&self) -> &Bytes {
        &self.plain
    }

    /// The compressed payload (without its tail), if it was compressed.
    pub fn deflated(&self) -> Option<&Bytes> {
        self.deflated.as_ref()
    }
}

// ---------------------------------------------------------------- decompression

/// Output bytes produced per decompression step: the most a message can exceed its
/// limit by before the limit is noticed.
pub(crate) const INFLATE_STEP: usize = 16 * 1024;

/// The decompressor of one connection.
pub(crate) struct Inflater {
    decompress: Option<Decompress>,
    /// Output of one step.
    scratch: Vec<u8>,
    /// The peer resets its context every message: drop ours after each.
    peer_resets: bool,
    /// The current message's stream ended with a final block; the rest of the message
    /// (its tail) is ignored and the next message starts a fresh stream.
    ended: bool,
}

impl Inflater {
    pub(crate) fn new(peer_resets: bool) -> Self {
        Self {
            decompress: None,
            scratch: Vec::new(),
            peer_resets,
            ended: false,
        }
    }

    /// Bytes of decompressor state held now (approximate).
    pub(crate) fn state_size(&self) -> usize {
        self.decompress.as_ref().map_or(0, |_| DECOMPRESSOR_STATE) + self.scratch.capacity()
    }

    /// Inflates `input`, handing the output to `sink` in pieces of at most
    /// [`INFLATE_STEP`] bytes. `sink` returns an error to stop (the limit, invalid
    /// UTF-8); corrupt data is [`ProtocolError::InvalidCompressedData`].
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        if self.ended {
            return Ok(());
        }
        let d = self.decompress.get_or_insert_with(|| Decompress::new(false));
        if self.scratch.len() != INFLATE_STEP {
            self.scratch = vec![0; INFLATE_STEP];
        }
        loop {
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let result = d.decompress(input, &mut self.scratch, FlushDecompress::None);
            let used = (d.total_in() - before_in) as usize;
            let produced = (d.total_out() - before_out) as usize;
            input = &input[used..];
            // What inflated before a fault is judged first (the limit, UTF-8), as it
            // would have been had the input arrived in smaller pieces.
            if produced > 0 {
                sink(&self.scratch[..produced])?;
            }
            let status = result.map_err(|_| ProtocolError::InvalidCompressedData)?;
            if status == Status::StreamEnd {
                self.ended = true;
                return Ok(());
            }
            // Output owed for input already taken can come out short of a full step
            // (at a block's end, say): keep asking until nothing more comes, so what
            // this input inflates to is judged now, not when the next piece arrives.
            if produced == 0 && (input.is_empty() || used == 0) {
                return Ok(());
            }
        }
    }

    /// The message ended (its tail already inflated): forget the context when the
    /// peer does not keep it or the stream ended.
    pub(crate) fn end_message(&mut self) {
        if self.peer_resets || self.ended {
            if self.peer_resets {
                self.decompress = None;
                self.scratch = Vec::new();
            } else if let Some(d) = self.decompress.as_mut() {
                d.reset(false);
            }
        }
        self.ended = false;
    }

    /// A message was abandoned (the connection failed): nothing more will come.
    pub(crate) fn release(&mut self) {
        self.decompress = None;
        self.scratch = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default configuration with permessage-deflate on (off by default).
    fn on() -> Config {
        Config {
            deflate: true,
            ..Config::default()
        }
    }

    fn offers(value: &str) -> Vec<Extension> {
        let mut out = Vec::new();
        crate::handshake::parse_extensions(value, &mut out).unwrap();
        out
    }

    fn negotiate(value: &str) -> Option<DeflateParams> {
        DeflateParams::negotiate(&on(), &offers(value))
    }

    #[test]
    fn server_picks_the_first_acceptable_offer() {
        assert_eq!(
            negotiate("x-foo, permessage-deflate"),
            Some(DeflateParams::default())
        );
        assert_eq!(
            negotiate("permessage-deflate; server_max_window_bits=9; client_no_context_takeover"),
            Some(DeflateParams {
                server_max_window_bits: Some(9),
                client_no_context_takeover: true,
                ..DeflateParams::default()
            })
        );
        // Malformed offers are declined, the next one taken.
        for bad in [
            "permessage-deflate; x=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
        ] {
            assert_eq!(negotiate(bad), None, "{bad}");
            assert_eq!(
                negotiate(&format!("{bad}, permessage-deflate; server_no_context_takeover")),
                Some(DeflateParams {
                    server_no_context_takeover: true,
                    ..DeflateParams::default()
                }),
                "{bad}"
            );
        }
        assert_eq!(
            negotiate("permessage-deflate; client_max_window_bits=\"10\""),
            Some(DeflateParams::default())
        );
        let off = Config {
            deflate: false,
            ..on()
        };
        assert_eq!(
            DeflateParams::negotiate(&off, &offers("permessage-deflate")),
            None
        );
    }

    #[test]
    fn server_switches_add_parameters() {
        let config = Config {
            deflate_server_no_context_takeover: true,
            deflate_client_no_context_takeover: true,
            ..on()
        };
        let params = DeflateParams::negotiate(&config, &offers("permessage-deflate")).unwrap();
        assert_eq!(
            params.to_extension().to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn client_checks_the_response() {
        let offer = offers(&DeflateParams::client_offer(&on()).unwrap());
        let check = |value: &str| DeflateParams::from_response(&offers(value)[0], &offer);
        assert_eq!(check("permessage-deflate"), Ok(DeflateParams::default()));
        assert_eq!(
            check("permessage-deflate; client_max_window_bits=9; server_max_window_bits=10; server_no_context_takeover"),
            Ok(DeflateParams {
                client_max_window_bits: Some(9),
                server_max_window_bits: Some(10),
                server_no_context_takeover: true,
                ..DeflateParams::default()
            })
        );
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; foo",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        // A client that did not offer client_max_window_bits refuses a value for it.
        let plain = offers("permessage-deflate");
        assert!(DeflateParams::from_response(
            &offers("permessage-deflate; client_max_window_bits=10")[0],
            &plain
        )
        .is_err());
        // One that asked for server_no_context_takeover needs it in the answer.
        let strict = offers("permessage-deflate; server_no_context_takeover");
        assert!(DeflateParams::from_response(&offers("permessage-deflate")[0], &strict).is_err());
    }

    fn inflate_all(data: &[u8]) -> Vec<u8> {
        let mut inflater = Inflater::new(false);
        let mut out = Vec::new();
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        inflater
            .inflate(&input, |chunk| {
                out.extend_from_slice(chunk);
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn compress_round_trips_with_every_window_and_stores_under_32_kib() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"e\":\"msg\",\"p\":{}}}", i % 97).into_bytes())
            .collect();
        for bits in 8..=15 {
            // Each message inflated on its own: a fresh context for the compressed
            // one; the stored one never refers to anything.
            let mut deflater = Deflater::new(6, bits, bits == 15);
            let mut out = Vec::new();
            for _ in 0..2 {
                deflater.compress(&[&text[..1000], &text[1000..]], &mut out);
                assert!(inflate_all(&out) == text, "{bits}");
                if bits == 15 {
                    assert!(out.len() < text.len() / 2, "{bits}: {}", out.len());
                } else {
                    // Stored: the text itself behind a header per block (and per
                    // part), and no compressor built.
                    let blocks = 1 + (text.len() - 1000).div_ceil(65_535);
                    assert_eq!(out.len(), text.len() + 5 * blocks + 1, "{bits}");
                    assert_eq!(deflater.state_size(), 0, "{bits}");
                }
            }
        }
        // Empty parts and an empty message.
        let mut out = Vec::new();
        Deflater::new(1, 9, false).compress(&[b"", b"ab", b""], &mut out);
        assert_eq!(inflate_all(&out), b"ab");
        Deflater::new(1, 9, false).compress(&[], &mut out);
        assert_eq!(inflate_all(&out), b"");
    }

    #[test]
    fn a_flush_is_never_lost_behind_pending_output() {
        // Data that compresses to about half, in messages of many sizes sent through
        // one reused buffer (as the connection does): the output buffer fills at
        // varied points, and each message must still inflate whole on its own (its
        // sync flush emitted), with the context carried over.
        let mut x = 0x2545_f491_u32;
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'a' + (x % 16) as u8
            })
            .collect();
        let mut deflater = Deflater::new(1, 15, false);
        let mut inflater = Inflater::new(false);
        let mut out = Vec::new();
        let mut start = 0;
        for i in 0..400 {
            let len = 1 + (i * 7919) % 70_000;
            let message = &data[start % (data.len() - len)..][..len];
            start += len;
            deflater.compress(&[message], &mut out);
            let mut inflated = Vec::new();
            let input = [&out[..], &TAIL].concat();
            inflater
                .inflate(&input, |chunk| {
                    inflated.extend_from_slice(chunk);
                    Ok(())
                })
                .unwrap();
            assert!(
                inflated == message,
                "message {i} of {len}: {} inflated",
                inflated.len()
            );
        }
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        // §7.2.3.1: "Hello" compressed; §7.2.3.3: "Hello" in a stored block.
        assert_eq!(inflate_all(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
        assert_eq!(
            inflate_all(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]),
            b"Hello"
        );
        // §7.2.3.4: two blocks, the first with BFINAL=0.
        assert_eq!(
            inflate_all(&[0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00]),
            b"Hello"
        );
    }
}
