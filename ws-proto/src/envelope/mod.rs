//! The JSON envelope of protocol v1.
//!
//! Every text frame carries one envelope, a JSON object:
//!
//! ```json
//! {"v":"1.0","e":"chat.message","p":{"text":"hi"},"c":"abc","t":1703123456789,"s":7}
//! ```
//!
//! | field | type | required | meaning |
//! |-------|------|----------|---------|
//! | `v` | string | yes | protocol version; major version 1 (`"1"`, `"1.0"`, `"1.N"`) |
//! | `e` | string | yes | event name: 1 to [`Config::max_event_name_len`] bytes of printable ASCII, no spaces |
//! | `p` | any JSON | no | payload; `null` is the same as absent |
//! | `c` | string | no | correlation id, echoed by replies and errors; at most [`Config::max_correlation_id_len`] bytes |
//! | `t` | integer | no | timestamp, milliseconds, `0..=u64::MAX` |
//! | `s` | integer | no | session sequence number, `1..=u64::MAX`, on server→client messages of a session stream |
//!
//! **Unknown fields are ignored**, so later minor versions can add fields that older
//! peers skip. A known field may appear only once. `null` in an optional field means
//! absent. Whole text: at most [`Config::max_message_size`] bytes and
//! [`Config::max_envelope_depth`] levels of nesting.
//!
//! Decoding ([`Envelope::decode`]) borrows from the text and parses it once: the
//! payload is kept as the raw JSON slice it arrived as ([`RawValue`]) until a handler
//! asks for a type ([`Envelope::payload_as`]). Encoding ([`OutgoingEnvelope`]) writes
//! straight into a caller's `Vec<u8>` or `BytesMut`, `s` last, so a broadcast is
//! serialized once and completed per recipient with [`write_seq_suffix`].
//!
//! Every refusal is an [`EnvelopeError`] with a stable code for `sys.error`; see
//! `docs/PROTOCOL.md` for the whole protocol.

mod decode;
mod depth;
mod encode;
mod error;
pub mod msgpack;
pub mod sys;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::Config;

pub use encode::{write_correlation_id, write_seq_suffix, EnvelopeBuf, OutgoingEnvelope, Payload};
pub use error::EnvelopeError;
pub use msgpack::{Codec, MsgPackEnvelope};

/// The version string every encoded envelope carries.
pub const WIRE_VERSION: &str = "1.0";

/// A decoded envelope, borrowing from the text it was decoded from.
///
/// Strings without JSON escapes are borrowed ([`Cow::Borrowed`]); the payload is the
/// raw JSON slice of the text, byte for byte.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Envelope<'a> {
    /// The version `v` as sent (major version 1).
    pub version: Cow<'a, str>,
    /// The event name `e`.
    pub event: Cow<'a, str>,
    /// The payload `p`, as raw JSON; `None` when absent or `null`.
    pub payload: Option<&'a RawValue>,
    /// The correlation id `c`.
    pub correlation_id: Option<Cow<'a, str>>,
    /// The timestamp `t`, in milliseconds.
    pub timestamp: Option<u64>,
    /// The session sequence number `s` (≥ 1).
    pub seq: Option<u64>,
}

impl<'a> Envelope<'a> {
    /// Decodes one envelope from the text of a text message.
    ///
    /// In order: the length against [`Config::max_message_size`], nesting against
    /// [`Config::max_envelope_depth`] (a linear scan, before any parsing), one JSON
    /// parse, then each field's type and rules (`v` before `e` before `c`, `t`, `s`).
    /// The first fault found is returned.
    pub fn decode(text: &'a str, config: &Config) -> Result<Self, EnvelopeError> {
        decode::decode(text, config)
    }

    /// The correlation id `c` of a text that [`decode`](Self::decode) refused, so that
    /// the `sys.error` answering it can echo `c`.
    ///
    /// `Some` when the text passes the size and depth checks, parses as a JSON object,
    /// and has exactly one `c` that is a string within
    /// [`Config::max_correlation_id_len`]; the other fields are not looked at. This parses
    /// the text again, so call it only on the error path.
    pub fn correlation_id_of(text: &'a str, config: &Config) -> Option<Cow<'a, str>> {
        decode::correlation_id_of(text, config)
    }

    /// Deserializes the payload as `T`; an absent payload deserializes from `null`
    /// (so `Option<T>` and `()` accept it). `T` may borrow from the text.
    ///
    /// The payload was checked to be JSON and to nest within the configured depth, but
    /// not against `T`: a mismatch is [`EnvelopeError::InvalidPayload`].
    pub fn payload_as<T: Deserialize<'a>>(&self) -> Result<T, EnvelopeError> {
        let json = self.payload.map_or("null", RawValue::get);
        serde_json::from_str(json).map_err(|err| EnvelopeError::InvalidPayload {
            reason: err.to_string(),
        })
    }

    /// An [`OutgoingEnvelope`] with this envelope's fields, to re-encode or echo it.
    /// The version is not carried over: encoding always writes [`WIRE_VERSION`].
    pub fn as_outgoing(&self) -> OutgoingEnvelope<'_> {
        OutgoingEnvelope {
            event: &self.event,
            payload: self.payload.into(),
            correlation_id: self.correlation_id.as_deref(),
            timestamp: self.timestamp,
            seq: self.seq,
        }
    }

    /// Copies the borrowed parts into an [`OwnedEnvelope`] that outlives the text.
    pub fn into_owned(self) -> OwnedEnvelope {
        OwnedEnvelope {
            version: self.version.into(),
            event: self.event.into(),
            payload: self.payload.map(ToOwned::to_owned),
            correlation_id: self.correlation_id.map(Into::into),
            timestamp: self.timestamp,
            seq: self.seq,
        }
    }
}

impl PartialEq for Envelope<'_> {
    /// Field by field; payloads compare by their raw text.
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.event == other.event
            && self.payload.map(RawValue::get) == other.payload.map(RawValue::get)
            && self.correlation_id == other.correlation_id
            && self.timestamp == other.timestamp
            && self.seq == other.seq
    }
}

impl Eq for Envelope<'_> {}

/// An [`Envelope`] that owns its parts, for keeping past the life of the text (a
/// queue, a replay buffer). Made by [`Envelope::into_owned`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OwnedEnvelope {
    /// The version `v` as sent (major version 1).
    pub version: Box<str>,
    /// The event name `e`.
    pub event: Box<str>,
    /// The payload `p`, as raw JSON; `None` when absent or `null`.
    pub payload: Option<Box<RawValue>>,
    /// The correlation id `c`.
    pub correlation_id: Option<Box<str>>,
    /// The timestamp `t`, in milliseconds.
    pub timestamp: Option<u64>,
    /// The session sequence number `s` (≥ 1).
    pub seq: Option<u64>,
}

impl OwnedEnvelope {
    /// Decodes `text` and copies the result; see [`Envelope::decode`].
    pub fn decode(text: &str, config: &Config) -> Result<Self, EnvelopeError> {
        Envelope::decode(text, config).map(Envelope::into_owned)
    }

    /// Borrows this envelope as an [`Envelope`].
    pub fn as_envelope(&self) -> Envelope<'_> {
        Envelope {
            version: Cow::Borrowed(&self.version),
            event: Cow::Borrowed(&self.event),
            payload: self.payload.as_deref(),
            correlation_id: self.correlation_id.as_deref().map(Cow::Borrowed),
            timestamp: self.timestamp,
            seq: self.seq,
        }
    }

    /// Deserializes the payload as `T`; see [`Envelope::payload_as`].
    pub fn payload_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, EnvelopeError> {
        self.as_envelope().payload_as()
    }

    /// An [`OutgoingEnvelope`] with this envelope's fields; see [`Envelope::as_outgoing`].
    pub fn as_outgoing(&self) -> OutgoingEnvelope<'_> {
        OutgoingEnvelope {
            event: &self.event,
            payload: self.payload.as_deref().into(),
            correlation_id: self.correlation_id.as_deref(),
            timestamp: self.timestamp,
            seq: self.seq,
        }
    }
}

impl PartialEq for OwnedEnvelope {
    /// Field by field; payloads compare by their raw text.
    fn eq(&self, other: &Self) -> bool {
        self.as_envelope() == other.as_envelope()
    }
}

impl Eq for OwnedEnvelope {}

/// A decoded envelope of either codec, for code that reads the fields whatever the
/// connection speaks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyEnvelope<'a> {
    /// From a text frame ([`Envelope::decode`]).
    Json(Envelope<'a>),
    /// From a binary frame ([`MsgPackEnvelope::decode`]).
    MsgPack(MsgPackEnvelope<'a>),
}

impl<'a> AnyEnvelope<'a> {
    /// The event name `e`.
    pub fn event(&self) -> &str {
        match self {
            Self::Json(env) => &env.event,
            Self::MsgPack(env) => env.event,
        }
    }

    /// The correlation id `c`.
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            Self::Json(env) => env.correlation_id.as_deref(),
            Self::MsgPack(env) => env.correlation_id,
        }
    }

    /// The timestamp `t`.
    pub fn timestamp(&self) -> Option<u64> {
        match self {
            Self::Json(env) => env.timestamp,
            Self::MsgPack(env) => env.timestamp,
        }
    }

    /// The payload deserialized as `T`, with the codec's deserializer; see
    /// [`Envelope::payload_as`] and [`MsgPackEnvelope::payload_as`].
    pub fn payload_as<T: Deserialize<'a>>(&self) -> Result<T, EnvelopeError> {
        match self {
            Self::Json(env) => env.payload_as(),
            Self::MsgPack(env) => env.payload_as(),
        }
    }

    /// The payload as JSON text (a binary payload transcoded), `None` when absent.
    pub fn payload_json(&self) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
        match self {
            Self::Json(env) => Ok(env.payload.map(|raw| Cow::Borrowed(raw.get()))),
            Self::MsgPack(env) => env
                .payload
                .map(|p| {
                    let mut out = Vec::new();
                    msgpack::msgpack_to_json(p, &mut out)
                        .ok()
                        .and_then(|()| String::from_utf8(out).ok())
                        .map(Cow::Owned)
                        .ok_or_else(|| EnvelopeError::InvalidPayload {
                            reason: "the payload has no JSON form".into(),
                        })
                })
                .transpose(),
        }
    }
}

/// The rule for `c`, whatever the codec: at most [`Config::max_correlation_id_len`]
/// bytes.
pub(crate) fn check_correlation_id(c: Option<&str>, config: &Config) -> Result<(), EnvelopeError> {
    match c {
        Some(c) if c.len() > config.max_correlation_id_len => Err(EnvelopeError::CorrelationIdTooLong {
            len: c.len(),
            max: config.max_correlation_id_len,
        }),
        _ => Ok(()),
    }
}

/// The rule for `s`, whatever the codec: sequence numbers start at 1.
pub(crate) fn check_seq(seq: Option<u64>) -> Result<(), EnvelopeError> {
    if seq == Some(0) {
        return Err(EnvelopeError::ZeroSeq);
    }
    Ok(())
}

/// Checks an event name against the rules [`Envelope::decode`] applies to `e`: at most
/// [`Config::max_event_name_len`] bytes, not empty, and only printable ASCII from `!`
/// to `~` (no spaces, no control characters, no non-ASCII).
///
/// Useful to check names when handlers are registered rather than when a peer sends
/// them.
pub fn validate_event_name(name: &str, config: &Config) -> Result<(), EnvelopeError> {
    if name.len() > config.max_event_name_len {
        return Err(EnvelopeError::EventNameTooLong {
            len: name.len(),
            max: config.max_event_name_len,
        });
    }
    if name.is_empty() {
        return Err(EnvelopeError::EmptyEventName);
    }
    match name.char_indices().find(|&(_, c)| !c.is_ascii_graphic()) {
        Some((at, found)) => Err(EnvelopeError::InvalidEventName { at, found }),
        None => Ok(()),
    }
}

/// Whether `version` is one this crate decodes: major version 1, written `1` or `1.N`
/// with `N` one or more ASCII digits.
pub fn is_supported_version(version: &str) -> bool {
    decode::is_supported_version(version)
}

#[cfg(test)]
mod tests;
