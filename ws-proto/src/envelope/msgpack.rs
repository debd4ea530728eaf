//! The binary envelope: the same fields and rules as the JSON envelope, as one
//! MessagePack map in a binary frame, negotiated with `Sec-WebSocket-Protocol`
//! (see [`Codec`] and `docs/PROTOCOL.md`, "Binary envelope").
//!
//! ```text
//! {"v": "1.0", "e": "chat.message", "p": <any MessagePack value>, "c": "abc", "t": 1703123456789, "s": 7}
//! ```
//!
//! Decoding ([`MsgPackEnvelope::decode`]) checks the limits before it decodes anything:
//! the length against [`Config::max_message_size`], then one linear walk over the
//! bytes that checks every marker and length against what is left, every string's
//! UTF-8, and the nesting against [`Config::max_envelope_depth`], allocating nothing.
//! Only then are the fields read, with the JSON envelope's rules and error codes
//! ([`EnvelopeError`]; a malformed value is [`EnvelopeError::InvalidMsgPack`], 4014).
//! The payload stays the raw bytes it arrived as until a handler asks for a type
//! ([`MsgPackEnvelope::payload_as`], with `rmp-serde`), so binary data (`bin`) reaches
//! it as bytes.
//!
//! Encoding ([`encode_msgpack`]) writes `s` last, as the JSON encoder does, so that a
//! broadcast is encoded once ([`encode_msgpack_body`]) and completed per recipient
//! ([`write_msgpack_framed`]: the map header, the shared body, this recipient's `s`).

use serde::{Deserialize, Serialize};

use super::{
    check_correlation_id, check_seq, is_supported_version, validate_event_name, EnvelopeError,
    OutgoingEnvelope, WIRE_VERSION,
};
use crate::Config;

/// The subprotocol of the JSON envelope (the default, also used when the client
/// offers no subprotocol).
pub const JSON_PROTOCOL: &str = "tether.v1.json";
/// The subprotocol of the binary (MessagePack) envelope.
pub const MSGPACK_PROTOCOL: &str = "tether.v1.msgpack";

/// The envelope codec of a connection, chosen once at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON envelopes in text frames.
    #[default]
    Json,
    /// MessagePack envelopes in binary frames.
    MsgPack,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Self; 2] = [Self::Json, Self::MsgPack];

    /// Its `Sec-WebSocket-Protocol` name.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Json => JSON_PROTOCOL,
            Self::MsgPack => MSGPACK_PROTOCOL,
        }
    }

    /// The codec named `protocol`, if any.
    pub fn from_protocol(protocol: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|codec| codec.protocol() == protocol)
    }

    /// The server's choice among the subprotocols a client offered
    /// ([`Request::protocols`](crate::handshake::Request::protocols)): the first codec
    /// of `supports` (the server's order of preference) that the client offered, and
    /// the subprotocol to answer with
    /// ([`Accept::with_protocol`](crate::handshake::Accept::with_protocol)). A client
    /// that offers none of them (or no subprotocol at all) gets JSON and no
    /// subprotocol in the answer, as before subprotocols existed.
    pub fn negotiate(offered: &[String], supports: &[Self]) -> (Self, Option<&'static str>) {
        match supports
            .iter()
            .find(|codec| offered.iter().any(|p| p == codec.protocol()))
        {
            Some(&codec) => (codec, Some(codec.protocol())),
            None => (Self::Json, None),
        }
    }

    /// The codecs tether's servers negotiate, in their order of preference:
    /// MessagePack first (smaller, cheaper to decode, bytes as bytes), so a client
    /// that offers both gets it whatever its own order; JSON otherwise.
    pub const SERVED: [Self; 2] = [Self::MsgPack, Self::Json];
}

/// A decoded binary envelope, borrowing from the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MsgPackEnvelope<'a> {
    /// The version `v` as sent (major version 1).
    pub version: &'a str,
    /// The event name `e`.
    pub event: &'a str,
    /// The payload `p`: the raw MessagePack bytes of one value; `None` when absent or
    /// `nil`.
    pub payload: Option<&'a [u8]>,
    /// The correlation id `c`.
    pub correlation_id: Option<&'a str>,
    /// The timestamp `t`, in milliseconds.
    pub timestamp: Option<u64>,
    /// The session sequence number `s` (≥ 1).
    pub seq: Option<u64>,
}

impl<'a> MsgPackEnvelope<'a> {
    /// Decodes one envelope from the bytes of a binary message; see the module
    /// documentation for the order of the checks.
    pub fn decode(bytes: &'a [u8], config: &Config) -> Result<Self, EnvelopeError> {
        if bytes.len() > config.max_message_size {
            return Err(EnvelopeError::TooLarge {
                len: bytes.len(),
                max: config.max_message_size,
            });
        }
        // Validate the whole value before reading any field.
        let mut scan = Reader::new(bytes);
        scan.skip_value(config.max_envelope_depth)?;
        if scan.pos != bytes.len() {
            return Err(scan.fault("bytes after the envelope"));
        }

        let mut r = Reader::new(bytes);
        let entries = match r.head()? {
            Head::Map(n) => n,
            _ => return Err(EnvelopeError::NotAnObject),
        };
        let mut fields: [Option<(Head, usize, usize)>; 6] = Default::default();
        for _ in 0..entries {
            let key = match r.head()? {
                Head::Str(len) => r.str(len)?,
                _ => return Err(r.fault("a key of the envelope map is not a string")),
            };
            let start = r.pos;
            let head = r.head()?;
            r.pos = start;
            r.skip_value(usize::MAX)?;
            let Some(index) = FIELD_NAMES.iter().position(|name| *name == key) else {
                continue; // unknown fields are ignored
            };
            if fields[index].is_some() {
                return Err(EnvelopeError::DuplicateField {
                    field: FIELD_NAMES[index],
                });
            }
            fields[index] = Some((head, start, r.pos));
        }
        let [v, e, p, c, t, s] = fields;

        let version = required_str(bytes, "v", v)?;
        if !is_supported_version(version) {
            return Err(EnvelopeError::unsupported_version(version));
        }
        let event = required_str(bytes, "e", e)?;
        validate_event_name(event, config)?;
        let payload = match p {
            None | Some((Head::Nil, ..)) => None,
            Some((_, start, end)) => Some(&bytes[start..end]),
        };
        let correlation_id = optional_str(bytes, "c", c)?;
        check_correlation_id(correlation_id, config)?;
        let timestamp = optional_u64("t", t)?;
        let seq = optional_u64("s", s)?;
        check_seq(seq)?;
        Ok(Self {
            version,
            event,
            payload,
            correlation_id,
            timestamp,
            seq,
        })
    }

    /// Deserializes the payload as `T` with `rmp-serde`; an absent payload
    /// deserializes from `nil` (so `Option<T>` and `()` accept it). Binary data
    /// (`bin`) deserializes into byte buffers (`serde_bytes`, `Vec<u8>` through
    /// `deserialize_bytes`) without base64. A mismatch is
    /// [`EnvelopeError::InvalidPayload`].
    pub fn payload_as<T: Deserialize<'a>>(&self) -> Result<T, EnvelopeError> {
        let bytes = self.payload.unwrap_or(&[0xc0]);
        rmp_serde::from_slice(bytes).map_err(|err| EnvelopeError::InvalidPayload {
            reason: err.to_string(),
        })
    }
}

/// The known field names, in the order of `fields` in [`MsgPackEnvelope::decode`].
const FIELD_NAMES: [&str; 6] = ["v", "e", "p", "c", "t", "s"];

/// The kind of a value and what its header says about its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    Nil,
    Bool,
    Uint(u64),
    Int(i64),
    Float,
    Str(usize),
    Bin(usize),
    Array(usize),
    Map(usize),
    Ext(usize),
}

impl Head {
    /// The type in words, for [`EnvelopeError::WrongType`].
    fn words(self) -> &'static str {
        match self {
            Head::Nil => "nil",
            Head::Bool => "a boolean",
            Head::Uint(_) => "a number",
            Head::Int(n) if n < 0 => "a negative number",
            Head::Int(_) => "a number",
            Head::Float => "a float",
            Head::Str(_) => "a string",
            Head::Bin(_) => "binary data",
            Head::Array(_) => "an array",
            Head::Map(_) => "a map",
            Head::Ext(_) => "an extension value",
        }
    }
}

/// A cursor over the bytes of one message.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn fault(&self, reason: &'static str) -> EnvelopeError {
        EnvelopeError::InvalidMsgPack {
            offset: self.pos,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if n > self.bytes.len() - self.pos {
            return Err(self.fault("truncated value"));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn be(&mut self, n: usize) -> Result<u64, EnvelopeError> {
        Ok(self.take(n)?.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> Result<usize, EnvelopeError> {
        // At most 32 bits: fits `usize` on every platform Rust's std supports here.
        usize::try_from(self.be(n)?).map_err(|_| self.fault("length too large"))
    }

    /// Reads a value's header (marker and length), leaving the cursor on its content.
    fn head(&mut self) -> Result<Head, EnvelopeError> {
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Head::Uint(u64::from(marker)),
            0x80..=0x8f => Head::Map(usize::from(marker & 0x0f)),
            0x90..=0x9f => Head::Array(usize::from(marker & 0x0f)),
            0xa0..=0xbf => Head::Str(usize::from(marker & 0x1f)),
            0xc0 => Head::Nil,
            0xc1 => {
                self.pos -= 1;
                return Err(self.fault("the reserved marker 0xc1"));
            }
            0xc2 | 0xc3 => Head::Bool,
            0xc4 => Head::Bin(self.len(1)?),
            0xc5 => Head::Bin(self.len(2)?),
            0xc6 => Head::Bin(self.len(4)?),
            0xc7 => Head::Ext(self.len(1)? + 1),
            0xc8 => Head::Ext(self.len(2)? + 1),
            0xc9 => Head::Ext(self.len(4)?.saturating_add(1)),
            0xca => {
                self.take(4)?;
                Head::Float
            }
            0xcb => {
                self.take(8)?;
                Head::Float
            }
            0xcc => Head::Uint(self.be(1)?),
            0xcd => Head::Uint(self.be(2)?),
            0xce => Head::Uint(self.be(4)?),
            0xcf => Head::Uint(self.be(8)?),
            0xd0 => Head::Int(i64::from(self.take(1)?[0] as i8)),
            0xd1 => Head::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Head::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Head::Int(self.be(8)? as i64),
            0xd4 => Head::Ext(2),
            0xd5 => Head::Ext(3),
            0xd6 => Head::Ext(5),
            0xd7 => Head::Ext(9),
            0xd8 => Head::Ext(17),
            0xd9 => Head::Str(self.len(1)?),
            0xda => Head::Str(self.len(2)?),
            0xdb => Head::Str(self.len(4)?),
            0xdc => Head::Array(self.len(2)?),
            0xdd => Head::Array(self.len(4)?),
            0xde => Head::Map(self.len(2)?),
            0xdf => Head::Map(self.len(4)?),
            0xe0..=0xff => Head::Int(i64::from(marker as i8)),
        })
    }

    /// Reads `len` bytes of string content, which must be UTF-8.
    fn str(&mut self, len: usize) -> Result<&'a str, EnvelopeError> {
        let start = self.pos;
        let bytes = self.take(len)?;
        simdutf8::basic::from_utf8(bytes).map_err(|_| EnvelopeError::InvalidMsgPack {
            offset: start,
            reason: "a string that is not UTF-8",
        })
    }

    /// Skips one whole value, checking it on the way; `depth` is how many more levels
    /// of arrays and maps may open (the envelope map is the first).
    fn skip_value(&mut self, depth: usize) -> Result<(), EnvelopeError> {
        // An explicit stack of the elements left at each open level: no recursion, so
        // even `usize::MAX` (the fields' second walk) cannot overflow the stack.
        let mut open = Stack::default();
        let mut max_depth = depth;
        loop {
            match self.head()? {
                Head::Str(len) => {
                    self.str(len)?;
                }
                Head::Bin(len) | Head::Ext(len) => {
                    self.take(len)?;
                }
                head @ (Head::Array(_) | Head::Map(_)) => {
                    let elements = match head {
                        Head::Map(n) => n.checked_mul(2),
                        Head::Array(n) => Some(n),
                        _ => unreachable!("matched above"),
                    };
                    // Every element takes at least one byte: a count beyond the bytes
                    // left is refused before anything is walked.
                    let elements = elements
                        .filter(|&e| e <= self.bytes.len() - self.pos)
                        .ok_or_else(|| self.fault("more elements than bytes left"))?;
                    if max_depth == 0 {
                        return Err(EnvelopeError::TooDeep { max: depth });
                    }
                    if elements > 0 {
                        max_depth -= 1;
                        open.push(elements);
                        continue;
                    }
                }
                Head::Nil | Head::Bool | Head::Uint(_) | Head::Int(_) | Head::Float => {}
            }
            // One value done: count it against the innermost open level, closing
            // every level that is complete.
            loop {
                match open.last_mut() {
                    None => return Ok(()),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        open.pop();
                        max_depth += 1;
                    }
                }
            }
        }
    }
}

/// A stack of counters that lives inline for the first 16 levels (every envelope of
/// the default depth limit but the deepest), on the heap beyond.
#[derive(Default)]
struct Stack {
    inline: [usize; 16],
    len: usize,
    spill: Vec<usize>,
}

impl Stack {
    fn push(&mut self, value: usize) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = value,
            None => self.spill.push(value),
        }
        self.len += 1;
    }

    fn last_mut(&mut self) -> Option<&mut usize> {
        match self.len {
            0 => None,
            n if n <= self.inline.len() => Some(&mut self.inline[n - 1]),
            _ => self.spill.last_mut(),
        }
    }

    fn pop(&mut self) {
        if self.len > self.inline.len() {
            self.spill.pop();
        }
        self.len -= 1;
    }
}

fn required_str<'a>(
    bytes: &'a [u8],
    field: &'static str,
    found: Option<(Head, usize, usize)>,
) -> Result<&'a str, EnvelopeError> {
    match found {
        None => Err(EnvelopeError::MissingField { field }),
        Some((Head::Str(len), _, end)) => {
            Ok(std::str::from_utf8(&bytes[end - len..end]).expect("checked UTF-8"))
        }
        Some((other, ..)) => Err(EnvelopeError::WrongType {
            field,
            expected: "a string",
            found: other.words(),
        }),
    }
}

/// A string field where `nil` counts as absent.
fn optional_str<'a>(
    bytes: &'a [u8],
    field: &'static str,
    found: Option<(Head, usize, usize)>,
) -> Result<Option<&'a str>, EnvelopeError> {
    match found {
        None | Some((Head::Nil, ..)) => Ok(None),
        found => required_str(bytes, field, found).map(Some),
    }
}

fn optional_u64(
    field: &'static str,
    found: Option<(Head, usize, usize)>,
) -> Result<Option<u64>, EnvelopeError> {
    match found {
        None | Some((Head::Nil, ..)) => Ok(None),
        Some((Head::Uint(n), ..)) => Ok(Some(n)),
        // A signed encoding of a value that is not negative is still that number.
        Some((Head::Int(n), ..)) if n >= 0 => Ok(Some(n as u64)),
        Some((other, ..)) => Err(EnvelopeError::WrongType {
            field,
            expected: "an unsigned 64-bit integer",
            found: other.words(),
        }),
    }
}

/// Why an envelope could not be encoded as MessagePack: its payload, given as JSON
/// text, was not valid JSON ([`Payload::Trusted`](super::Payload::Trusted) text that
/// was not), or a payload value could not be serialized.
#[derive(Debug)]
pub struct MsgPackEncodeError(String);

impl std::fmt::Display for MsgPackEncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot encode the payload as MessagePack: {}", self.0)
    }
}

impl std::error::Error for MsgPackEncodeError {}

/// Encodes `env` as a binary envelope (`v` is [`WIRE_VERSION`]; `s` last). A JSON
/// payload is transcoded to the equivalent MessagePack value.
pub fn encode_msgpack(env: &OutgoingEnvelope<'_>, out: &mut Vec<u8>) -> Result<(), MsgPackEncodeError> {
    encode_msgpack_prefix(env, env.seq.is_some(), out)?;
    write_seq(env.seq, out);
    Ok(())
}

/// The fields `env` will have: `v`, `e`, and each of `p`, `c`, `t`, `s` present.
fn field_count(env: &OutgoingEnvelope<'_>, payload: bool) -> u32 {
    2 + u32::from(payload)
        + u32::from(env.correlation_id.is_some())
        + u32::from(env.timestamp.is_some())
        + u32::from(env.seq.is_some())
}

/// `env`'s JSON payload, `None` when absent or `null`.
fn json_payload<'a>(env: &OutgoingEnvelope<'a>) -> Option<&'a str> {
    env.payload.as_json().filter(|json| json.trim() != "null")
}

/// `p` and the JSON payload `json` transcoded as it streams by: maps keep their key
/// order, nothing is built in between.
fn write_json_payload(json: &str, out: &mut Vec<u8>) -> Result<(), MsgPackEncodeError> {
    write_str(out, "p");
    json_to_msgpack(json.as_bytes(), out)
}

/// `p` of `env`, whose payload is present (`json` its JSON form): its own MessagePack
/// form when the caller gave one ([`Payload::Both`](super::Payload::Both)), else
/// `json` transcoded.
fn write_payload(
    env: &OutgoingEnvelope<'_>,
    json: &str,
    out: &mut Vec<u8>,
) -> Result<(), MsgPackEncodeError> {
    match env.payload.as_msgpack() {
        Some(msgpack) => {
            write_str(out, "p");
            out.extend_from_slice(msgpack);
            Ok(())
        }
        None => write_json_payload(json, out),
    }
}

fn write_seq(seq: Option<u64>, out: &mut Vec<u8>) {
    if let Some(seq) = seq {
        write_str(out, "s");
        let _ = rmp::encode::write_uint(out, seq);
    }
}

/// Encodes `env` with `payload` serialized by `rmp-serde` (structs as maps with their
/// field names, as in JSON; byte buffers serialized as bytes become `bin`), ignoring
/// `env`'s own payload. On an error, `out` is left as it was.
pub fn encode_msgpack_serialize<T: Serialize + ?Sized>(
    env: &OutgoingEnvelope<'_>,
    payload: &T,
    out: &mut Vec<u8>,
) -> Result<(), MsgPackEncodeError> {
    let start = out.len();
    let _ = rmp::encode::write_map_len(out, field_count(env, true));
    write_head_fields(env, out);
    write_str(out, "p");
    if let Err(err) = rmp_serde::encode::write_named(out, payload) {
        out.truncate(start);
        return Err(MsgPackEncodeError(err.to_string()));
    }
    write_tail_fields(env, out);
    write_seq(env.seq, out);
    Ok(())
}

/// Writes every field of `env` but `s`, without the map header, to `out`; returns the
/// number of fields written. The body of a broadcast: encode it once, and complete it
/// per recipient with [`write_msgpack_framed`].
pub fn encode_msgpack_body(env: &OutgoingEnvelope<'_>, out: &mut Vec<u8>) -> Result<u32, MsgPackEncodeError> {
    let start = out.len();
    let mut fields = write_head_fields(env, out);
    if let Some(json) = json_payload(env) {
        if let Err(err) = write_payload(env, json, out) {
            out.truncate(start);
            return Err(err);
        }
        fields += 1;
    }
    Ok(fields + write_tail_fields(env, out))
}

/// Writes one whole binary envelope: the map header for `fields` fields (plus `s`
/// when `seq` is given), `body` (from [`encode_msgpack_body`]) and `s`.
pub fn write_msgpack_framed(body: &[u8], fields: u32, seq: Option<u64>, out: &mut Vec<u8>) {
    let count = fields + u32::from(seq.is_some());
    // `write_map_len` cannot fail on a `Vec`.
    let _ = rmp::encode::write_map_len(out, count);
    out.extend_from_slice(body);
    write_seq(seq, out);
}

/// Encodes every field of `env` but `s`, behind a map header that counts `s` when
/// `with_seq`: the binary counterpart of
/// [`OutgoingEnvelope::encode_prefix`], shared by every recipient of a broadcast and
/// completed by [`write_msgpack_seq_suffix`] with the same `seq.is_some()`. On an
/// error, `out` is left as it was.
pub fn encode_msgpack_prefix(
    env: &OutgoingEnvelope<'_>,
    with_seq: bool,
    out: &mut Vec<u8>,
) -> Result<(), MsgPackEncodeError> {
    let start = out.len();
    let payload = json_payload(env);
    // `s` is not `env`'s to write here: counted only when asked.
    let fields = field_count(env, payload.is_some()) - u32::from(env.seq.is_some()) + u32::from(with_seq);
    let _ = rmp::encode::write_map_len(out, fields);
    write_head_fields(env, out);
    if let Some(json) = payload {
        if let Err(err) = write_payload(env, json, out) {
            out.truncate(start);
            return Err(err);
        }
    }
    write_tail_fields(env, out);
    Ok(())
}

/// [`encode_msgpack_prefix`] with `payload` serialized by `rmp-serde` as `p` (structs
/// as maps, byte buffers as `bin`), in place of `env`'s own payload. On an error,
/// `out` is left as it was.
pub fn encode_msgpack_prefix_serialize<T: Serialize + ?Sized>(
    env: &OutgoingEnvelope<'_>,
    payload: &T,
    with_seq: bool,
    out: &mut Vec<u8>,
) -> Result<(), MsgPackEncodeError> {
    let start = out.len();
    let fields = field_count(env, true) - u32::from(env.seq.is_some()) + u32::from(with_seq);
    let _ = rmp::encode::write_map_len(out, fields);
    write_head_fields(env, out);
    write_str(out, "p");
    if let Err(err) = rmp_serde::encode::write_named(out, payload) {
        out.truncate(start);
        return Err(MsgPackEncodeError(err.to_string()));
    }
    write_tail_fields(env, out);
    Ok(())
}

/// [`encode_msgpack_prefix`] with `payload`, the MessagePack bytes of one value (from
/// `rmp-serde`, say), written as `p` as they are, in place of `env`'s own payload: for
/// a payload made in MessagePack, whose binary data stays `bin`. The caller vouches
/// that `payload` is one well-formed value.
pub fn encode_msgpack_prefix_raw(
    env: &OutgoingEnvelope<'_>,
    payload: &[u8],
    with_seq: bool,
    out: &mut Vec<u8>,
) {
    let fields = field_count(env, true) - u32::from(env.seq.is_some()) + u32::from(with_seq);
    let _ = rmp::encode::write_map_len(out, fields);
    write_head_fields(env, out);
    write_str(out, "p");
    out.extend_from_slice(payload);
    write_tail_fields(env, out);
}

/// Completes a prefix from [`encode_msgpack_prefix`]: `s` when `seq` is given, nothing
/// otherwise (the map header already counted it).
pub fn write_msgpack_seq_suffix(out: &mut Vec<u8>, seq: Option<u64>) {
    write_seq(seq, out);
}

/// The length of what [`write_msgpack_seq_suffix`] writes.
pub fn msgpack_seq_suffix_len(seq: Option<u64>) -> usize {
    match seq {
        None => 0,
        // "s" (2 bytes) and the smallest uint encoding of the number.
        Some(s) => {
            2 + match s {
                0..=0x7f => 1,
                0x80..=0xff => 2,
                0x100..=0xffff => 3,
                0x1_0000..=0xffff_ffff => 5,
                _ => 9,
            }
        }
    }
}

/// Turns a JSON envelope prefix ([`OutgoingEnvelope::encode_prefix`]: everything up to
/// `s` and the closing brace) into the binary prefix of the same envelope
/// ([`encode_msgpack_prefix`]). The engine keeps JSON prefixes in its replay buffers
/// and makes the binary form from them once per message when a binary connection
/// needs it.
pub fn json_prefix_to_msgpack(
    prefix: &[u8],
    with_seq: bool,
    out: &mut Vec<u8>,
) -> Result<(), MsgPackEncodeError> {
    #[derive(Deserialize)]
    struct Parts<'a> {
        #[serde(borrow)]
        e: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        p: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        c: Option<std::borrow::Cow<'a, str>>,
        t: Option<u64>,
    }
    let mut text = Vec::with_capacity(prefix.len() + 1);
    text.extend_from_slice(prefix);
    text.push(b'}');
    let parts: Parts<'_> =
        serde_json::from_slice(&text).map_err(|err| MsgPackEncodeError(err.to_string()))?;
    let env = OutgoingEnvelope {
        event: &parts.e,
        payload: parts.p.into(),
        correlation_id: parts.c.as_deref(),
        timestamp: parts.t,
        seq: None,
    };
    encode_msgpack_prefix(&env, with_seq, out)
}

/// Writes one MessagePack value as JSON text: `bin` becomes an array of numbers (what
/// `serde_json` makes of bytes), map keys must be strings or numbers. For a binary
/// payload that must reach a JSON API (a `sys.reply` answer, a handler reading the
/// raw payload).
pub fn msgpack_to_json(value: &[u8], out: &mut Vec<u8>) -> Result<(), MsgPackEncodeError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(value);
    let mut ser = serde_json::Serializer::new(out);
    serde_transcode::transcode(&mut de, &mut ser).map_err(|err| MsgPackEncodeError(err.to_string()))
}

/// Writes one JSON value as MessagePack (maps keep their key order).
pub fn json_to_msgpack(json: &[u8], out: &mut Vec<u8>) -> Result<(), MsgPackEncodeError> {
    let fail = |err: &dyn std::fmt::Display| MsgPackEncodeError(err.to_string());
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut ser = rmp_serde::Serializer::new(out);
    serde_transcode::transcode(&mut de, &mut ser).map_err(|e| fail(&e))?;
    // One value and nothing after it (whitespace aside).
    de.end().map_err(|e| fail(&e))
}

impl MsgPackEnvelope<'_> {
    /// The same envelope as JSON text (the payload through [`msgpack_to_json`]), for a
    /// peer that speaks the binary envelope on the wire and JSON inside (the Rust
    /// client engine).
    pub fn to_json(&self) -> Result<String, MsgPackEncodeError> {
        let mut payload = Vec::new();
        if let Some(p) = self.payload {
            msgpack_to_json(p, &mut payload)?;
        }
        let payload = std::str::from_utf8(&payload).map_err(|err| MsgPackEncodeError(err.to_string()))?;
        let env = OutgoingEnvelope {
            event: self.event,
            payload: if self.payload.is_some() {
                super::Payload::Trusted(payload)
            } else {
                super::Payload::None
            },
            correlation_id: self.correlation_id,
            timestamp: self.timestamp,
            seq: self.seq,
        };
        String::from_utf8(env.to_vec()).map_err(|err| MsgPackEncodeError(err.to_string()))
    }
}

/// `v` and `e`.
pub(crate) fn write_head_fields(env: &OutgoingEnvelope<'_>, out: &mut Vec<u8>) -> u32 {
    write_str(out, "v");
    write_str(out, WIRE_VERSION);
    write_str(out, "e");
    write_str(out, env.event);
    2
}

/// `c` and `t`, when present.
pub(crate) fn write_tail_fields(env: &OutgoingEnvelope<'_>, out: &mut Vec<u8>) -> u32 {
    let mut fields = 0;
    if let Some(c) = env.correlation_id {
        write_str(out, "c");
        write_str(out, c);
        fields += 1;
    }
    if let Some(t) = env.timestamp {
        write_str(out, "t");
        let _ = rmp::encode::write_uint(out, t);
        fields += 1;
    }
    fields
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Strings here are far below 4 GiB (the message limit): this cannot fail.
    let _ = rmp::encode::write_str(out, s);
}

#[cfg(test)]
mod tests;
