//! Errors of *local* API misuse. Peer faults are never errors: they become `sys.error`
//! events or closes.

use std::fmt;

use crate::SessionId;

/// A command the application gave the engine could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// No such session (never existed, expired or closed).
    UnknownSession(SessionId),
    /// An [`AuthId`](crate::AuthId) the engine never issued.
    UnknownAuthRequest,
    /// The room name is longer than [`EngineConfig::max_room_name_len`](crate::EngineConfig::max_room_name_len).
    RoomNameTooLong {
        /// Length of the name, in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The session is already in [`EngineConfig::max_rooms_per_session`](crate::EngineConfig::max_rooms_per_session) rooms.
    TooManyRooms {
        /// The configured limit.
        max: usize,
    },
    /// The session ended recently (closed, ended or expired; the engine remembers
    /// [`EngineConfig::expired_memory`](crate::EngineConfig::expired_memory) of them).
    SessionEnded(SessionId),
    /// The session already has [`EngineConfig::max_pending_requests`](crate::EngineConfig::max_pending_requests)
    /// requests waiting for an answer.
    TooManyRequests {
        /// The configured limit.
        max: usize,
    },
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownSession(id) => write!(f, "no session {id}"),
            Self::UnknownAuthRequest => f.write_str("the engine never issued this authentication request"),
            Self::RoomNameTooLong { len, max } => {
                write!(f, "room name of {len} bytes exceeds the limit of {max} bytes")
            }
            Self::TooManyRooms { max } => write!(f, "the session is already in {max} rooms, the limit"),
            Self::SessionEnded(id) => write!(f, "session {id} has ended"),
            Self::TooManyRequests { max } => {
                write!(f, "the session already has {max} requests waiting, the limit")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// An [`EngineConfig`](crate::EngineConfig) whose figures contradict each other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `rate_limit_per_second` or `rate_limit_burst` is 0.
    ZeroRateLimit,
    /// `heartbeat_interval` is 0.
    ZeroHeartbeat,
    /// A duration is longer than [`EngineConfig::MAX_DURATION`](crate::EngineConfig::MAX_DURATION).
    DurationTooLong {
        /// The field.
        name: &'static str,
        /// The limit.
        max: std::time::Duration,
    },
    /// A full replay buffer would not fit the outbound bound, so every resume of a busy
    /// session would close the connection as a slow consumer.
    ReplayExceedsOutbound {
        /// The configured replay bound.
        replay_max_bytes: usize,
        /// The configured outbound bound.
        max_outbound_bytes: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroRateLimit => f.write_str("rate limit per second and burst must be at least 1"),
            Self::ZeroHeartbeat => f.write_str("heartbeat interval must not be zero"),
            Self::DurationTooLong { name, max } => write!(f, "{name} exceeds the limit of {max:?}"),
            Self::ReplayExceedsOutbound {
                replay_max_bytes,
                max_outbound_bytes,
            } => write!(
                f,
                "replay_max_bytes ({replay_max_bytes}) exceeds max_outbound_bytes ({max_outbound_bytes})"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
