//! The error a handler returns; it reaches the client as a `sys.error`.

use std::fmt;

use ws_session::ErrorCode;

/// A handler's refusal: sent to the client as `sys.error` with `code` and `message`,
/// carrying the request's correlation id.
///
/// Applications use codes from 4200 up; 4000–4199 belong to tether and are listed in
/// [`ErrorCode`] (`docs/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The `sys.error` code.
    pub code: u16,
    /// What went wrong, for the client's developer.
    pub message: String,
}

impl HandlerError {
    /// An error with the application's own `code` (4200 and up) and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error with one of tether's codes and `message`.
    pub fn with_code(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code.0, message)
    }

    /// The client's payload does not have the shape the handler expects (4013).
    pub fn invalid_payload(err: impl fmt::Display) -> Self {
        Self::with_code(ErrorCode::INVALID_PAYLOAD, format!("invalid payload: {err}"))
    }

    /// The server failed on its own side (4199): the details are logged here, the
    /// client only learns that it was not its fault.
    pub fn internal(err: impl fmt::Display) -> Self {
        tracing::error!(%err, "internal error while handling an event");
        Self::with_code(ErrorCode::INTERNAL, "internal error")
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for HandlerError {}
