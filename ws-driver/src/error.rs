//! The error a handler returns; it reaches the client as a `sys.error`.

use std::fmt;

/// A handler's refusal: sent to the client as `sys.error` with `code` and `message`,
/// carrying the request's correlation id.
///
/// Applications use codes from 4200 up; 4000–4199 belong to the protocol
/// (`docs/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The `sys.error` code.
    pub code: u16,
    /// What went wrong, for the client's developer.
    pub message: String,
}

impl HandlerError {
    /// 4013: the payload does not have the shape the handler expects.
    pub const INVALID_PAYLOAD: u16 = 4013;
    /// 4101: the event needs an authenticated user; the session is anonymous.
    pub const NOT_AUTHENTICATED: u16 = 4101;
    /// 4100: no handler for this event.
    pub const UNKNOWN_EVENT: u16 = 4100;
    /// 4199: a handler failed unexpectedly (it panicked); details are in the server log.
    pub const INTERNAL: u16 = 4199;
    /// 4200: a generic application error.
    pub const APPLICATION: u16 = 4200;

    /// An error with `code` and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for HandlerError {}

impl From<serde_json::Error> for HandlerError {
    fn from(err: serde_json::Error) -> Self {
        Self::new(Self::INVALID_PAYLOAD, format!("invalid payload: {err}"))
    }
}
