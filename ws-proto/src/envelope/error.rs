//! Why an envelope was refused, with a stable numeric code for `sys.error`.

use std::fmt;

/// Why a text message is not a valid protocol v1 envelope.
///
/// Every variant is a fault of the peer that sent the text. The session layer answers
/// it with a `sys.error` event carrying [`EnvelopeError::code`] and the
/// [`Display`](fmt::Display) text; neither ever panics.
///
/// The codes live in the range **4000–4099**, reserved for envelope errors, and never
/// change meaning once released:
///
/// | code | variant |
/// |------|---------|
/// | 4000 | [`TooLarge`](EnvelopeError::TooLarge) |
/// | 4001 | [`TooDeep`](EnvelopeError::TooDeep) |
/// | 4002 | [`InvalidJson`](EnvelopeError::InvalidJson) |
/// | 4003 | [`NotAnObject`](EnvelopeError::NotAnObject) |
/// | 4004 | [`MissingField`](EnvelopeError::MissingField) |
/// | 4005 | [`WrongType`](EnvelopeError::WrongType) |
/// | 4006 | [`DuplicateField`](EnvelopeError::DuplicateField) |
/// | 4007 | [`UnsupportedVersion`](EnvelopeError::UnsupportedVersion) |
/// | 4008 | [`EmptyEventName`](EnvelopeError::EmptyEventName) |
/// | 4009 | [`InvalidEventName`](EnvelopeError::InvalidEventName) |
/// | 4010 | [`EventNameTooLong`](EnvelopeError::EventNameTooLong) |
/// | 4011 | [`CorrelationIdTooLong`](EnvelopeError::CorrelationIdTooLong) |
/// | 4012 | [`ZeroSeq`](EnvelopeError::ZeroSeq) |
/// | 4013 | [`InvalidPayload`](EnvelopeError::InvalidPayload) |
/// | 4014 | [`InvalidMsgPack`](EnvelopeError::InvalidMsgPack) |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The text is longer than [`Config::max_message_size`](crate::Config::max_message_size).
    /// Checked before any parsing.
    TooLarge {
        /// Length of the text, in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Objects and arrays are nested deeper than
    /// [`Config::max_envelope_depth`](crate::Config::max_envelope_depth).
    /// Checked by a linear pre-scan before any parsing.
    TooDeep {
        /// The configured limit.
        max: usize,
    },
    /// The text is not valid JSON.
    InvalidJson {
        /// Line of the fault, counted from 1.
        line: usize,
        /// Column of the fault (in bytes), counted from 1.
        column: usize,
        /// What the JSON parser found wrong, without the position.
        reason: String,
    },
    /// The text is valid JSON but not an object.
    NotAnObject,
    /// A required field (`v` or `e`) is absent.
    MissingField {
        /// The field's name on the wire.
        field: &'static str,
    },
    /// A field holds a JSON value of the wrong type.
    WrongType {
        /// The field's name on the wire.
        field: &'static str,
        /// What the field must hold, e.g. `"a string"`.
        expected: &'static str,
        /// What it held instead, e.g. `"a number"` or `"a negative number"`.
        found: &'static str,
    },
    /// A known field appears more than once in the object. Refused rather than
    /// resolved, since JSON parsers disagree on which occurrence wins.
    DuplicateField {
        /// The field's name on the wire.
        field: &'static str,
    },
    /// The version `v` does not have major version 1.
    UnsupportedVersion {
        /// The version received, cut to at most 32 bytes (with `…` appended when cut).
        found: String,
    },
    /// The event name `e` is the empty string.
    EmptyEventName,
    /// The event name `e` holds a character outside printable ASCII (`!` to `~`);
    /// spaces and control characters included.
    InvalidEventName {
        /// Byte offset of the first offending character in the (unescaped) name.
        at: usize,
        /// The offending character.
        found: char,
    },
    /// The event name `e` is longer than
    /// [`Config::max_event_name_len`](crate::Config::max_event_name_len).
    EventNameTooLong {
        /// Length of the name, in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The correlation id `c` is longer than
    /// [`Config::max_correlation_id_len`](crate::Config::max_correlation_id_len).
    CorrelationIdTooLong {
        /// Length of the id, in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The sequence number `s` is 0; sequence numbers start at 1.
    ZeroSeq,
    /// The payload `p` does not have the shape the handler asked for
    /// ([`Envelope::payload_as`](super::Envelope::payload_as)). Not returned by decoding,
    /// which leaves the payload's shape to the handler.
    InvalidPayload {
        /// What the JSON deserializer found wrong, with its position in the payload.
        reason: String,
    },
    /// The bytes of a binary (MessagePack) envelope are not one well-formed
    /// MessagePack value: truncated, the reserved marker `0xc1`, a string that is not
    /// UTF-8, bytes after the value, or a key of the envelope map that is not a string.
    /// The binary counterpart of [`InvalidJson`](EnvelopeError::InvalidJson).
    InvalidMsgPack {
        /// Byte offset of the fault.
        offset: usize,
        /// What is wrong there.
        reason: &'static str,
    },
}

impl EnvelopeError {
    /// The first code of the range reserved for envelope errors.
    pub const CODE_RANGE_START: u16 = 4000;
    /// The last code of the range reserved for envelope errors.
    pub const CODE_RANGE_END: u16 = 4099;

    /// The stable numeric code of this error, in 4000–4099, for a `sys.error` event.
    /// See the table on [`EnvelopeError`].
    pub fn code(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 4000,
            Self::TooDeep { .. } => 4001,
            Self::InvalidJson { .. } => 4002,
            Self::NotAnObject => 4003,
            Self::MissingField { .. } => 4004,
            Self::WrongType { .. } => 4005,
            Self::DuplicateField { .. } => 4006,
            Self::UnsupportedVersion { .. } => 4007,
            Self::EmptyEventName => 4008,
            Self::InvalidEventName { .. } => 4009,
            Self::EventNameTooLong { .. } => 4010,
            Self::CorrelationIdTooLong { .. } => 4011,
            Self::ZeroSeq => 4012,
            Self::InvalidPayload { .. } => 4013,
            Self::InvalidMsgPack { .. } => 4014,
        }
    }

    /// Builds [`EnvelopeError::InvalidJson`] from a serde_json error, keeping its
    /// position apart from its reason.
    pub(crate) fn from_json(err: &serde_json::Error) -> Self {
        Self::invalid_json_at(err, err.line(), err.column())
    }

    /// Builds [`EnvelopeError::InvalidJson`] with the reason of `err` and a position
    /// the caller computed (when `err` came from parsing a part of the text).
    pub(crate) fn invalid_json_at(err: &serde_json::Error, line: usize, column: usize) -> Self {
        let mut reason = err.to_string();
        // serde_json appends " at line L column C" when it knows the position.
        if err.line() != 0 {
            if let Some(at) = reason.rfind(" at line ") {
                reason.truncate(at);
            }
        }
        Self::InvalidJson { line, column, reason }
    }

    /// Builds [`EnvelopeError::UnsupportedVersion`], cutting a long version string.
    pub(crate) fn unsupported_version(found: &str) -> Self {
        const MAX: usize = 32;
        let found = if found.len() <= MAX {
            found.to_owned()
        } else {
            let mut end = MAX;
            while !found.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &found[..end])
        };
        Self::UnsupportedVersion { found }
    }
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "envelope of {len} bytes exceeds the limit of {max} bytes")
            }
            Self::TooDeep { max } => {
                write!(f, "envelope nests objects and arrays deeper than {max} levels")
            }
            Self::InvalidJson { line, column, reason } => {
                write!(
                    f,
                    "envelope is not valid JSON: {reason} at line {line} column {column}"
                )
            }
            Self::NotAnObject => {
                f.write_str("envelope must be an object (a JSON object, or a MessagePack map)")
            }
            Self::MissingField { field } => {
                write!(f, "envelope has no \"{field}\" field, which is required")
            }
            Self::WrongType {
                field,
                expected,
                found,
            } => {
                write!(f, "envelope field \"{field}\" must be {expected}, found {found}")
            }
            Self::DuplicateField { field } => {
                write!(f, "envelope field \"{field}\" appears more than once")
            }
            Self::UnsupportedVersion { found } => {
                write!(
                    f,
                    "envelope version \"{found}\" is not supported (expected \"1.0\")"
                )
            }
            Self::EmptyEventName => f.write_str("event name \"e\" is empty"),
            Self::InvalidEventName { at, found } => write!(
                f,
                "event name \"e\" has the character {found:?} at byte {at}; \
                 only printable ASCII without spaces is allowed"
            ),
            Self::EventNameTooLong { len, max } => {
                write!(
                    f,
                    "event name \"e\" of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Self::CorrelationIdTooLong { len, max } => {
                write!(
                    f,
                    "correlation id \"c\" of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Self::ZeroSeq => f.write_str("sequence number \"s\" is 0; sequence numbers start at 1"),
            Self::InvalidPayload { reason } => write!(f, "payload \"p\" is not as expected: {reason}"),
            Self::InvalidMsgPack { offset, reason } => {
                write!(f, "envelope is not valid MessagePack: {reason} at byte {offset}")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}
