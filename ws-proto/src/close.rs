//! Close codes (RFC 6455 §7.4) and the close frame body.

use std::fmt;

use crate::{ProtocolError, SendError};

/// A WebSocket close status code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a text message was not valid UTF-8, or data was inconsistent with its type.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy (rate limits, authentication).
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Whether this code may appear in a close frame on the wire (RFC 6455 §7.4.1 and
    /// the IANA registry): 1000–1003, 1007–1014 and the application range 3000–4999.
    /// 1004, 1005, 1006 and 1015 are reserved and never sent.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

/// The body of a close frame: an optional code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; `None` when the frame had an empty body (reported as 1005).
    pub code: Option<CloseCode>,
    /// The reason text (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// Longest reason that fits a control frame: 125 bytes of payload minus the code.
    pub const MAX_REASON_LEN: usize = 123;

    /// A close frame with a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }
}

/// Parses and validates a close frame body (RFC 6455 §5.5.1, §7.4).
pub(crate) fn parse_close_body(body: &[u8]) -> Result<CloseFrame, ProtocolError> {
    match body {
        [] => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(ProtocolError::CloseBodyTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode { code: code.0 });
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|e| ProtocolError::InvalidUtf8 {
                    valid_up_to: e.valid_up_to(),
                })?
                .to_owned();
            Ok(CloseFrame {
                code: Some(code),
                reason,
            })
        }
    }
}

/// Cuts a reason to what fits a close frame, on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= CloseFrame::MAX_REASON_LEN {
        return reason;
    }
    let mut end = CloseFrame::MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The body of a close frame we send: the code, then the reason. Refuses a code that
/// may not be sent and a reason longer than [`CloseFrame::MAX_REASON_LEN`].
pub(crate) fn close_body(code: CloseCode, reason: &str) -> Result<Vec<u8>, SendError> {
    if !code.is_sendable() {
        return Err(SendError::InvalidCloseCode { code: code.0 });
    }
    if reason.len() > CloseFrame::MAX_REASON_LEN {
        return Err(SendError::ControlPayloadTooLarge {
            len: 2 + reason.len(),
        });
    }
    let mut body = Vec::with_capacity(2 + reason.len());
    body.extend_from_slice(&code.0.to_be_bytes());
    body.extend_from_slice(reason.as_bytes());
    Ok(body)
}

/// The body of the close frame that answers a peer's fault.
pub(crate) fn failure_close_body(err: &ProtocolError) -> Vec<u8> {
    let frame = err.close_frame();
    let code = frame.code.unwrap_or(CloseCode::PROTOCOL_ERROR);
    let mut body = Vec::with_capacity(2 + frame.reason.len());
    body.extend_from_slice(&code.0.to_be_bytes());
    body.extend_from_slice(frame.reason.as_bytes());
    body
}
