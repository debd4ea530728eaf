//! Server→client requests: the id that correlates a `sys.request` with its answer,
//! and how one can fail. The engine's table of waiting requests is in
//! `engine/requests.rs`.

use std::fmt;
use std::time::Instant;

use crate::SessionId;

/// A server→client request issued by [`Engine::request`](crate::Engine::request). On
/// the wire it is the `c` of the `sys.request` (`sr<N>`), which the client's
/// `sys.reply` / `sys.reply.error` echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The prefix of request correlation ids: `sr`, so they cannot be mistaken for the
    /// ids tether's clients give their own queries.
    pub const PREFIX: &'static str = "sr";

    /// The correlation id on the wire.
    pub fn correlation_id(self) -> String {
        format!("{}{}", Self::PREFIX, self.0)
    }

    /// The request a correlation id names, if it is one of ours.
    pub fn parse(correlation_id: &str) -> Option<Self> {
        let digits = correlation_id.strip_prefix(Self::PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Self)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

/// Why a server→client request got no answer ([`Action::Response`](crate::Action::Response)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestFailure {
    /// No answer before the deadline.
    Timeout,
    /// The session ended (closed, ended by either side, expired, or abandoned after a
    /// refused resume) before the answer came.
    SessionEnded,
    /// The client answered with `sys.reply.error`: its application refused (its own
    /// code, from 4200), or it has no handler for the event (4150).
    Refused {
        /// The client's code.
        code: u16,
        /// The client's message.
        message: String,
    },
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("the client did not answer in time"),
            Self::SessionEnded => f.write_str("the session ended before the client answered"),
            Self::Refused { code, message } => write!(f, "the client refused: {message} ({code})"),
        }
    }
}

impl std::error::Error for RequestFailure {}

/// A request waiting for its answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRequest {
    pub(crate) session: SessionId,
    pub(crate) deadline: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_round_trip_and_others_are_not_ours() {
        assert_eq!(RequestId(7).correlation_id(), "sr7");
        assert_eq!(RequestId::parse("sr7"), Some(RequestId(7)));
        for other in ["q7", "sr", "sr+7", "sr 7", "7", "sr7x", "r1"] {
            assert_eq!(RequestId::parse(other), None, "{other}");
        }
    }
}
