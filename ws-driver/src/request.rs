//! Server→client requests as the application sees them:
//! [`ServerHandle::request`](crate::ServerHandle::request) resolves to the client's
//! answer or a [`RequestError`].

use std::fmt;

use ws_session::RequestFailure;

/// Why a server→client request ([`ServerHandle::request`](crate::ServerHandle::request))
/// got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// No answer within the timeout.
    Timeout,
    /// No such session (never existed here, or ended long ago).
    UnknownSession,
    /// The session ended (by either side, expired, or lost after a refused resume)
    /// before it answered, or had ended recently when the request was made.
    SessionEnded,
    /// The client refused: its application's code (from 4200), or 4150 when it has no
    /// handler for the event.
    Refused {
        /// The client's code.
        code: u16,
        /// The client's message.
        message: String,
    },
    /// The session already has as many requests waiting as allowed
    /// ([`EngineConfig::max_pending_requests`](ws_session::EngineConfig::max_pending_requests)).
    TooManyPending {
        /// The limit.
        max: usize,
    },
    /// The payload could not be serialized, or the answer could not be read as the
    /// type asked for.
    InvalidPayload(String),
    /// The server is shutting down (or has stopped).
    Stopped,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("the client did not answer in time"),
            Self::UnknownSession => f.write_str("no such session"),
            Self::SessionEnded => f.write_str("the session ended before the client answered"),
            Self::Refused { code, message } => write!(f, "the client refused: {message} ({code})"),
            Self::TooManyPending { max } => write!(f, "the session already has {max} requests waiting"),
            Self::InvalidPayload(why) => write!(f, "invalid payload: {why}"),
            Self::Stopped => f.write_str("the server stopped"),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<RequestFailure> for RequestError {
    fn from(failure: RequestFailure) -> Self {
        match failure {
            RequestFailure::Timeout => Self::Timeout,
            RequestFailure::SessionEnded => Self::SessionEnded,
            RequestFailure::Refused { code, message } => Self::Refused { code, message },
            // A failure this driver does not know yet.
            other => Self::Refused {
                code: ws_session::ErrorCode::INTERNAL.0,
                message: other.to_string(),
            },
        }
    }
}

impl From<ws_session::ApiError> for RequestError {
    fn from(err: ws_session::ApiError) -> Self {
        match err {
            ws_session::ApiError::UnknownSession(_) => Self::UnknownSession,
            ws_session::ApiError::SessionEnded(_) => Self::SessionEnded,
            ws_session::ApiError::TooManyRequests { max } => Self::TooManyPending { max },
            other => Self::InvalidPayload(other.to_string()),
        }
    }
}
