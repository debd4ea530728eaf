//! Numeric codes of `sys.error` events and of the close frames the server sends: every
//! code tether uses, in one type.
//!
//! - 4000–4099: envelope errors ([`ws_proto::envelope::EnvelopeError::code`]);
//! - 4100–4149: the session layer (this crate's engine);
//! - 4150–4199: the application layer (`ws-driver`: handlers, middleware);
//! - 4200 and up: the application's own codes.
//!
//! A close frame with a code in 4100–4199 means the same as the `sys.error` of that
//! code. Codes never change meaning once released. The table is in `docs/PROTOCOL.md`
//! (a test checks that it lists exactly the codes of [`ErrorCode::ALL`]).

use ws_proto::CloseCode;

/// A `sys.error` code (and, for some, a close code) of tether.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// 4013: an event's payload does not have the shape its receiver expects: a
    /// `sys.*` payload the engine cannot read, or an application payload its handler
    /// cannot (the envelope code `InvalidPayload`).
    pub const INVALID_PAYLOAD: Self = Self(4013);
    /// 4100: an event named `sys.…` that clients may not send, or that does not exist.
    pub const UNKNOWN_SYSTEM_EVENT: Self = Self(4100);
    /// 4101: the event needs an authenticated user: an application event, `sys.ack`
    /// or a resume before the session exists, or an event whose handler refuses
    /// anonymous sessions.
    pub const NOT_AUTHENTICATED: Self = Self(4101);
    /// 4102: the authenticator refused the credential; the connection is closed with 4102.
    pub const AUTH_FAILED: Self = Self(4102);
    /// 4103: no session within the authentication deadline; closed with 4103.
    pub const AUTH_TIMEOUT: Self = Self(4103);
    /// 4104: nothing heard for the heartbeat interval plus the idle timeout; closed with
    /// 4104 (no `sys.error`: the peer is presumed gone).
    pub const IDLE_TIMEOUT: Self = Self(4104);
    /// 4105: over the inbound rate limit; the message was dropped. Persisting closes
    /// the connection with 1008.
    pub const RATE_LIMITED: Self = Self(4105);
    /// 4106: the resume was refused (payload field `reason`); a new session follows.
    pub const NOT_RECOVERABLE: Self = Self(4106);
    /// 4107: the session is in as many rooms as allowed.
    pub const TOO_MANY_ROOMS: Self = Self(4107);
    /// 4108: a room name is longer than allowed.
    pub const ROOM_NAME_TOO_LONG: Self = Self(4108);
    /// 4109: `sys.auth` on a connection that already has a session or an
    /// authentication under way.
    pub const ALREADY_AUTHENTICATED: Self = Self(4109);
    /// 4110: close code for a slow consumer; the session is suspended and may resume.
    pub const SLOW_CONSUMER: Self = Self(4110);
    /// 4111: close code for a connection whose session was resumed on another one.
    pub const TAKEN_OVER: Self = Self(4111);
    /// 4112: a second `sys.reconnect.request` while one waits for authentication.
    pub const RESUME_IN_PROGRESS: Self = Self(4112);
    /// 4113: a binary message on a JSON connection (one that did not negotiate
    /// `tether.v1.msgpack`): its envelopes travel in text frames only. The message is
    /// dropped.
    pub const BINARY_NOT_SUPPORTED: Self = Self(4113);
    /// 4114: close code for an `Origin` outside the configured allow-list.
    pub const ORIGIN_NOT_ALLOWED: Self = Self(4114);
    /// 4115: close code after `sys.session.ended`: the server ended the session on
    /// purpose. The client must neither resume nor reconnect.
    pub const SESSION_ENDED: Self = Self(4115);
    /// 4116: close code for a connection whose session another node took over (a
    /// resume there, through a shared session store) or that a stopping node handed
    /// over; the client reconnects at once and resumes. As a `sys.error` (with the
    /// message's `c`): a stopping node did not process that message; the client sends
    /// it again after the resume.
    pub const SESSION_MOVED: Self = Self(4116);
    /// 4117: a text message on a MessagePack connection (one that negotiated
    /// `tether.v1.msgpack`): its envelopes travel in binary frames only. The message
    /// is dropped.
    pub const TEXT_NOT_SUPPORTED: Self = Self(4117);
    /// 4150: an application event no handler is registered for (the message names it).
    pub const UNKNOWN_EVENT: Self = Self(4150);
    /// 4199: a handler failed unexpectedly (it panicked, or the server could not
    /// serialize its own reply); details are in the server's log.
    pub const INTERNAL: Self = Self(4199);

    /// Every code above with its name, in order: what `docs/PROTOCOL.md` documents.
    pub const ALL: &'static [(Self, &'static str)] = &[
        (Self::INVALID_PAYLOAD, "INVALID_PAYLOAD"),
        (Self::UNKNOWN_SYSTEM_EVENT, "UNKNOWN_SYSTEM_EVENT"),
        (Self::NOT_AUTHENTICATED, "NOT_AUTHENTICATED"),
        (Self::AUTH_FAILED, "AUTH_FAILED"),
        (Self::AUTH_TIMEOUT, "AUTH_TIMEOUT"),
        (Self::IDLE_TIMEOUT, "IDLE_TIMEOUT"),
        (Self::RATE_LIMITED, "RATE_LIMITED"),
        (Self::NOT_RECOVERABLE, "NOT_RECOVERABLE"),
        (Self::TOO_MANY_ROOMS, "TOO_MANY_ROOMS"),
        (Self::ROOM_NAME_TOO_LONG, "ROOM_NAME_TOO_LONG"),
        (Self::ALREADY_AUTHENTICATED, "ALREADY_AUTHENTICATED"),
        (Self::SLOW_CONSUMER, "SLOW_CONSUMER"),
        (Self::TAKEN_OVER, "TAKEN_OVER"),
        (Self::RESUME_IN_PROGRESS, "RESUME_IN_PROGRESS"),
        (Self::BINARY_NOT_SUPPORTED, "BINARY_NOT_SUPPORTED"),
        (Self::ORIGIN_NOT_ALLOWED, "ORIGIN_NOT_ALLOWED"),
        (Self::SESSION_ENDED, "SESSION_ENDED"),
        (Self::SESSION_MOVED, "SESSION_MOVED"),
        (Self::TEXT_NOT_SUPPORTED, "TEXT_NOT_SUPPORTED"),
        (Self::UNKNOWN_EVENT, "UNKNOWN_EVENT"),
        (Self::INTERNAL, "INTERNAL"),
    ];

    /// This code as a close code.
    pub fn close_code(self) -> CloseCode {
        CloseCode(self.0)
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}

/// Why a resume was refused: the `reason` field of a `sys.error` 4106.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRecoverable {
    /// No such session (malformed id, or never existed here).
    Unknown,
    /// The session expired (its resume window passed) or was closed (replaced, or
    /// abandoned after a gap).
    Expired,
    /// The session was ended on purpose, by the server's application or by its client.
    Ended,
    /// The token was valid once but has been used (it was rotated by a resume).
    Used,
    /// The token is not the session's (forged or garbled).
    InvalidToken,
    /// The authenticated user is not the session's user.
    Foreign,
    /// Messages after `lastSeq` are no longer in the replay buffer (or `lastSeq` is
    /// beyond what was sent). The old session is ended.
    Gap,
}

impl NotRecoverable {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::Unknown,
        Self::Expired,
        Self::Ended,
        Self::Used,
        Self::InvalidToken,
        Self::Foreign,
        Self::Gap,
    ];

    /// The position of this reason in [`NotRecoverable::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Unknown => 0,
            Self::Expired => 1,
            Self::Ended => 2,
            Self::Used => 3,
            Self::InvalidToken => 4,
            Self::Foreign => 5,
            Self::Gap => 6,
        }
    }

    /// The `reason` text on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Ended => "ended",
            Self::Used => "used",
            Self::InvalidToken => "invalid",
            Self::Foreign => "foreign",
            Self::Gap => "gap",
        }
    }
}
