//! Errors of the wire layer.
//!
//! Two kinds, kept apart on purpose (`docs/ARCHITECTURE.md`, "House rules": a peer's
//! fault is output, never a panic, and never an `Err` of the local API):
//! - [`ProtocolError`]: the *peer* broke RFC 6455. Never returned as `Err` from a
//!   connection; it arrives as [`Event::Failed`](crate::Event::Failed) together with
//!   the close frame already queued, and it is sticky.
//! - [`SendError`]: the *local* caller misused the API (sent after closing, an
//!   oversized control payload, a close code that may not be sent).

use std::fmt;

use crate::close::CloseCode;
use crate::frame::OpCode;

/// A violation of RFC 6455 by the peer. Each variant says which close code answers it
/// ([`ProtocolError::close_code`]) and carries the figures that broke the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client sent a frame without a mask (RFC 6455 §5.1).
    UnmaskedClientFrame,
    /// A server sent a masked frame (RFC 6455 §5.1).
    MaskedServerFrame,
    /// RSV1–RSV3 bits were set where no agreed extension defines them (§5.2): RSV2 or
    /// RSV3, or RSV1 without permessage-deflate or on a frame other than a data
    /// message's first (RFC 7692 §6.1).
    ReservedBits {
        /// The three bits as they appeared, `0b100` for RSV1.
        bits: u8,
    },
    /// An opcode the RFC reserves (3–7, 11–15) (§5.2).
    ReservedOpcode {
        /// The opcode received.
        opcode: u8,
    },
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlFrameTooLarge {
        /// The announced payload length.
        len: u64,
    },
    /// A control frame without the FIN bit (§5.5).
    FragmentedControlFrame {
        /// The control frame's opcode.
        opcode: OpCode,
    },
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was still open (§5.4).
    ExpectedContinuation {
        /// The opcode that arrived instead of a continuation.
        opcode: OpCode,
    },
    /// A payload length not encoded in the fewest bytes (§5.2).
    NonMinimalLength {
        /// The length that was encoded.
        len: u64,
    },
    /// A 64-bit payload length with its most significant bit set (§5.2).
    LengthTopBitSet,
    /// A frame larger than [`Config::max_frame_size`](crate::Config::max_frame_size).
    FrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message larger than [`Config::max_message_size`](crate::Config::max_message_size).
    MessageTooLarge {
        /// The message size it would have reached; for a compressed message, the
        /// limit plus one (inflation stops as soon as the limit is passed, so the
        /// size it would have reached is not known).
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message split into more than [`Config::max_fragments`](crate::Config::max_fragments) frames.
    TooManyFragments {
        /// The most fragments allowed.
        max: usize,
    },
    /// A text message (or close reason) that is not valid UTF-8 (§8.1).
    InvalidUtf8 {
        /// Bytes of the message that were valid before the fault.
        valid_up_to: usize,
    },
    /// A close frame whose payload is one byte long (§5.5.1).
    CloseBodyTooShort,
    /// A compressed message (permessage-deflate, RFC 7692) that does not inflate: the
    /// DEFLATE data is corrupt.
    InvalidCompressedData,
    /// A close code that may not appear on the wire (§7.4).
    InvalidCloseCode {
        /// The code received.
        code: u16,
    },
}

impl ProtocolError {
    /// The close this error is answered with: its [`close_code`](Self::close_code)
    /// and its text, cut to what fits a close frame.
    pub fn close_frame(&self) -> crate::CloseFrame {
        let text = self.to_string();
        crate::CloseFrame::new(self.close_code(), crate::close::truncate_reason(&text))
    }

    /// The close code this error is answered with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } | Self::TooManyFragments { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            Self::InvalidUtf8 { .. } | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnmaskedClientFrame => f.write_str("client frame is not masked"),
            Self::MaskedServerFrame => f.write_str("server frame is masked"),
            Self::ReservedBits { bits } => {
                write!(
                    f,
                    "reserved bits {bits:03b} set where no agreed extension defines them"
                )
            }
            Self::ReservedOpcode { opcode } => write!(f, "reserved opcode {opcode:#x}"),
            Self::ControlFrameTooLarge { len } => {
                write!(f, "control frame of {len} bytes (max 125)")
            }
            Self::FragmentedControlFrame { opcode } => {
                write!(f, "fragmented {opcode:?} control frame")
            }
            Self::UnexpectedContinuation => f.write_str("continuation frame with no message in progress"),
            Self::ExpectedContinuation { opcode } => {
                write!(f, "{opcode:?} frame while a fragmented message is open")
            }
            Self::NonMinimalLength { len } => {
                write!(f, "payload length {len} not minimally encoded")
            }
            Self::LengthTopBitSet => f.write_str("64-bit payload length has its top bit set"),
            Self::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            Self::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            Self::TooManyFragments { max } => {
                write!(f, "message split into more than {max} fragments")
            }
            Self::InvalidUtf8 { valid_up_to } => {
                write!(f, "text is not valid UTF-8 after {valid_up_to} bytes")
            }
            Self::CloseBodyTooShort => f.write_str("close frame payload of 1 byte"),
            Self::InvalidCompressedData => f.write_str("compressed message does not inflate"),
            Self::InvalidCloseCode { code } => write!(f, "close code {code} may not be sent"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The local caller misused a [`Connection`](crate::Connection).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent, or the connection failed: no more frames go out.
    Closed,
    /// A ping, pong or close payload longer than 125 bytes.
    ControlPayloadTooLarge {
        /// The payload length asked for.
        len: usize,
    },
    /// A close code that may not be sent on the wire (1005, 1006, 1015, …).
    InvalidCloseCode {
        /// The code asked for.
        code: u16,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closing or closed"),
            Self::ControlPayloadTooLarge { len } => {
                write!(f, "control payload of {len} bytes (max 125)")
            }
            Self::InvalidCloseCode { code } => write!(f, "close code {code} may not be sent"),
        }
    }
}

impl std::error::Error for SendError {}
