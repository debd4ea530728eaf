//! Decoding: size check, depth pre-scan, one serde_json pass, then field checks.
//!
//! The single parse collects the known fields as raw JSON slices of the input (and
//! skips unknown ones without building values); the checks afterwards look at those
//! slices. So the payload `p` is validated once and never parsed into a value, and
//! a field of the wrong type is reported as such instead of as a parser message.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::depth::check_depth;
use super::{check_correlation_id, check_seq, validate_event_name, Envelope, EnvelopeError};
use crate::Config;

/// Decodes `text` under the limits of `config`. See [`Envelope::decode`].
pub(crate) fn decode<'a>(text: &'a str, config: &Config) -> Result<Envelope<'a>, EnvelopeError> {
    if text.len() > config.max_message_size {
        return Err(EnvelopeError::TooLarge {
            len: text.len(),
            max: config.max_message_size,
        });
    }
    check_depth(text, config.max_envelope_depth)?;
    let fields = match serde_json::from_str::<Top<'a>>(text) {
        Ok(Top::Object(fields)) => fields,
        Ok(Top::Other) => return Err(EnvelopeError::NotAnObject),
        Err(err) => return Err(EnvelopeError::from_json(&err)),
    };
    if let Some(field) = fields.duplicate {
        return Err(EnvelopeError::DuplicateField { field });
    }

    let version = required_str(text, "v", fields.v)?;
    if !is_supported_version(&version) {
        return Err(EnvelopeError::unsupported_version(&version));
    }
    let event = required_str(text, "e", fields.e)?;
    validate_event_name(&event, config)?;
    let payload = fields.p.filter(|raw| raw.get() != "null");
    let correlation_id = correlation_id(text, config, fields.c)?;
    let timestamp = optional_u64("t", fields.t)?;
    let seq = optional_u64("s", fields.s)?;
    check_seq(seq)?;

    Ok(Envelope {
        version,
        event,
        payload,
        correlation_id,
        timestamp,
        seq,
    })
}

/// The correlation id of `text` when it is readable. See [`Envelope::correlation_id_of`].
pub(crate) fn correlation_id_of<'a>(text: &'a str, config: &Config) -> Option<Cow<'a, str>> {
    let fields = parse(text, config).ok()?;
    if fields.duplicate == Some("c") {
        return None;
    }
    correlation_id(text, config, fields.c).ok().flatten()
}

/// The size check, the depth pre-scan and the one JSON parse.
fn parse<'a>(text: &'a str, config: &Config) -> Result<Fields<'a>, EnvelopeError> {
    if text.len() > config.max_message_size {
        return Err(EnvelopeError::TooLarge {
            len: text.len(),
            max: config.max_message_size,
        });
    }
    check_depth(text, config.max_envelope_depth)?;
    match serde_json::from_str::<Top<'a>>(text) {
        Ok(Top::Object(fields)) => Ok(fields),
        Ok(Top::Other) => Err(EnvelopeError::NotAnObject),
        Err(err) => Err(EnvelopeError::from_json(&err)),
    }
}

/// The correlation id field `c`: a string (or `null`) within its length limit.
fn correlation_id<'a>(
    text: &'a str,
    config: &Config,
    raw: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
    let c = optional_str(text, "c", raw)?;
    check_correlation_id(c.as_deref(), config)?;
    Ok(c)
}

/// Whether `version` has major version 1: exactly `1`, or `1.` followed by one or
/// more ASCII digits (`1.0`, `1.2`, `1.10`).
pub(crate) fn is_supported_version(version: &str) -> bool {
    match version.strip_prefix('1') {
        Some("") => true,
        Some(rest) => match rest.strip_prefix('.') {
            Some(minor) => !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()),
            None => false,
        },
        None => false,
    }
}

/// The type of a JSON value, judged by its first byte (the parser already validated
/// the value).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Object,
    Array,
    Boolean,
    Null,
}

impl Kind {
    fn of(raw: &RawValue) -> Self {
        match raw.get().as_bytes().first() {
            Some(b'"') => Kind::String,
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b't' | b'f') => Kind::Boolean,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    /// The type in words, for [`EnvelopeError::WrongType`].
    fn words(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::Boolean => "a boolean",
            Kind::Null => "null",
        }
    }
}

fn required_str<'a>(
    text: &'a str,
    field: &'static str,
    raw: Option<&'a RawValue>,
) -> Result<Cow<'a, str>, EnvelopeError> {
    let raw = raw.ok_or(EnvelopeError::MissingField { field })?;
    match Kind::of(raw) {
        Kind::String => {}
        other => {
            return Err(EnvelopeError::WrongType {
                field,
                expected: "a string",
                found: other.words(),
            })
        }
    }
    unescape(text, raw)
}

/// A string field where `null` counts as absent.
fn optional_str<'a>(
    text: &'a str,
    field: &'static str,
    raw: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
    let Some(raw) = raw else { return Ok(None) };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::String => unescape(text, raw).map(Some),
        other => Err(EnvelopeError::WrongType {
            field,
            expected: "a string",
            found: other.words(),
        }),
    }
}

/// Decodes a JSON string slice of `text`, borrowing it when it holds no escapes.
fn unescape<'a>(text: &'a str, raw: &'a RawValue) -> Result<Cow<'a, str>, EnvelopeError> {
    // The parser has validated the string (quotes, no raw control characters): without
    // a backslash its text is the slice between the quotes, and a second parse of every
    // `v`, `e` and `c` would cost more than the rest of the field checks together.
    let quoted = raw.get();
    if !quoted.as_bytes().contains(&b'\\') {
        if let Some(inner) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
            return Ok(Cow::Borrowed(inner));
        }
    }
    match serde_json::from_str::<CowStr<'a>>(quoted) {
        Ok(CowStr(s)) => Ok(s),
        // The parser accepted the string as JSON, so this is an escape that is not a
        // Unicode scalar value (a lone surrogate such as "\ud800"). Report it at its
        // place in the whole text.
        Err(err) => {
            let start = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            let at = (start + err.column().saturating_sub(1)).min(text.len());
            let (line, column) = position(text, at);
            Err(EnvelopeError::invalid_json_at(&err, line, column))
        }
    }
}

/// Line and column (both from 1, the column in bytes) of byte offset `at` of `text`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..at];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, at - line_start + 1)
}

/// An unsigned integer field where `null` counts as absent. Only plain integer
/// literals are accepted: `1e3` and `1.0` are refused even though they are whole.
fn optional_u64(field: &'static str, raw: Option<&RawValue>) -> Result<Option<u64>, EnvelopeError> {
    const EXPECTED: &str = "an unsigned 64-bit integer";
    let Some(raw) = raw else { return Ok(None) };
    let found = match Kind::of(raw) {
        Kind::Null => return Ok(None),
        Kind::Number => {
            let text = raw.get();
            if text.starts_with('-') {
                "a negative number"
            } else if text.contains(['.', 'e', 'E']) {
                "a number with a fraction or exponent"
            } else {
                match text.parse::<u64>() {
                    Ok(n) => return Ok(Some(n)),
                    Err(_) => "a number above 18446744073709551615",
                }
            }
        }
        other => other.words(),
    };
    Err(EnvelopeError::WrongType {
        field,
        expected: EXPECTED,
        found,
    })
}

/// The known fields of the envelope object, as raw slices of the input.
#[derive(Default)]
struct Fields<'a> {
    v: Option<&'a RawValue>,
    e: Option<&'a RawValue>,
    p: Option<&'a RawValue>,
    c: Option<&'a RawValue>,
    t: Option<&'a RawValue>,
    s: Option<&'a RawValue>,
    /// The first known field seen twice.
    duplicate: Option<&'static str>,
}

/// The top-level JSON value: an object's fields, or anything else.
enum Top<'a> {
    Object(Fields<'a>),
    Other,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let (name, slot) = match key {
                Key::V => ("v", &mut fields.v),
                Key::E => ("e", &mut fields.e),
                Key::P => ("p", &mut fields.p),
                Key::C => ("c", &mut fields.c),
                Key::T => ("t", &mut fields.t),
                Key::S => ("s", &mut fields.s),
                Key::Unknown => {
                    // Forward compatibility: skipped without building a value.
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let raw: &'de RawValue = map.next_value()?;
            if slot.is_some() {
                fields.duplicate.get_or_insert(name);
            } else {
                *slot = Some(raw);
            }
        }
        Ok(Top::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }
}

/// An object key: one of the envelope's fields, or any other.
enum Key {
    V,
    E,
    P,
    C,
    T,
    S,
    Unknown,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "v" => Key::V,
            "e" => Key::E,
            "p" => Key::P,
            "c" => Key::C,
            "t" => Key::T,
            "s" => Key::S,
            _ => Key::Unknown,
        })
    }
}

/// A JSON string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CowStrVisitor)
    }
}

struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = CowStr<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Owned(s)))
    }
}
