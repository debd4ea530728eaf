//! What the client engine asks its driver to do, and what it tells the user.

use std::fmt;

use ws_proto::envelope::{EnvelopeError, OwnedEnvelope};
use ws_proto::CloseCode;

use super::state::State;

/// Identifies a query made with [`ClientEngine::query`](super::ClientEngine::query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// A `sys.error` from the server: `{code, message, reason?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The numeric code (`docs/PROTOCOL.md`, error tables; 4200 up: the application's).
    pub code: u16,
    /// The server's text, for developers.
    pub message: String,
    /// The `reason` field (4106 carries one).
    pub reason: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Why a query got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// The server answered with a `sys.error`.
    Server(ServerError),
    /// No answer within the query's timeout. A query still waiting in the offline
    /// queue is removed from it: it is never sent.
    Timeout,
    /// The query was sent on a session that could not be restored: its answer is lost
    /// with that session. `reason` is the server's (`expired`, `gap`, …).
    NotRestored {
        /// The `reason` of the `sys.error` 4106.
        reason: String,
    },
    /// The client was closed (or gave up) before the answer came.
    Closed,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Server(err) => write!(f, "server error: {err}"),
            QueryError::Timeout => f.write_str("query timed out"),
            QueryError::NotRestored { reason } => {
                write!(f, "the session the query was sent on was not restored ({reason})")
            }
            QueryError::Closed => f.write_str("client closed"),
        }
    }
}

impl std::error::Error for QueryError {}

/// A session, as announced by `sys.session.created`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetails {
    /// The public session id.
    pub session_id: String,
    /// The user the server authenticated.
    pub user_id: String,
}

/// What became of the session when a connection came up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionOutcome {
    /// A first session began.
    Created(SessionDetails),
    /// The session was resumed; `replayed` missed messages follow (each delivered
    /// once, in order, as [`ClientAction::Event`]).
    Restored {
        /// The session id (unchanged).
        session_id: String,
        /// How many messages the server replays.
        replayed: u64,
    },
    /// The resume was refused: the old stream ended, a new session began. Queries
    /// sent on the old session failed with [`QueryError::NotRestored`].
    NotRestored {
        /// The server's `reason` (`unknown`, `expired`, `used`, `invalid`, `foreign`,
        /// `gap`), or `unknown` when it gave none.
        reason: String,
        /// The session that ended.
        previous_session_id: String,
        /// The new one.
        session: SessionDetails,
        /// How many pending queries failed with it.
        failed_queries: usize,
    },
}

/// What the engine wants done or reported. Drain with
/// [`poll_action`](super::ClientEngine::poll_action) after every call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAction {
    /// Open a new transport (TCP + WebSocket handshake). Report the outcome with
    /// `handle_connected` or `handle_disconnected`.
    Connect,
    /// Send this text as one text message on the current transport.
    Transmit(String),
    /// Send one message of the application's whose payload was given in both codecs
    /// ([`Payload::Both`](ws_proto::envelope::Payload::Both)): `msgpack`, the envelope
    /// as MessagePack, in a binary message on a connection that negotiated
    /// `tether.v1.msgpack` (its binary data stays `bin`); `text`, the same envelope
    /// as JSON, in a text message on any other. Only a driver that gives such payloads
    /// gets this action.
    TransmitBoth {
        /// The envelope as JSON.
        text: String,
        /// The same envelope as MessagePack.
        msgpack: Vec<u8>,
    },
    /// Close the current transport with this code and reason (or abandon it while it
    /// is being opened), then report `handle_disconnected` once it is gone. Report
    /// nothing else from it.
    CloseTransport {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: String,
    },
    /// An application message from the server (not a reply to a query). Messages of
    /// the session stream come once each, in order.
    Event(OwnedEnvelope),
    /// The state changed.
    StateChanged(State),
    /// A query is answered.
    QueryResult {
        /// The query.
        id: QueryId,
        /// The reply envelope, or why there is none.
        result: Result<OwnedEnvelope, QueryError>,
    },
    /// A session came up on a new transport.
    Session(SessionOutcome),
    /// A `sys.error` that answers no query (a refused `send`, rate limiting, …).
    ServerError(ServerError),
    /// The server asks the application something (`sys.request`): answer with
    /// [`ClientEngine::answer`](super::ClientEngine::answer). Requests come in the
    /// session stream, once each, in order (a request replayed after a resume is not
    /// delivered twice).
    Request(IncomingRequest),
}

/// A request from the server's application ([`ClientAction::Request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// The server's request id (the `c` the answer echoes).
    pub id: String,
    /// The session it came on: its answer goes out on that session only.
    pub session_id: String,
    /// The application event the request names.
    pub event: String,
    /// Its payload as raw JSON, if any.
    pub payload: Option<String>,
}

/// A local misuse of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// There is no session now and the offline queue holds `limit` messages already.
    QueueFull {
        /// The queue limit.
        limit: usize,
    },
    /// The client is closing or closed.
    Closed,
    /// The event name is not valid on the wire.
    InvalidEventName(EnvelopeError),
    /// Names starting with `sys.` belong to the protocol.
    ReservedEventName,
    /// This code may not be sent in a close frame.
    InvalidCloseCode(CloseCode),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::QueueFull { limit } => {
                write!(f, "offline queue full ({limit} messages): not accepted")
            }
            ClientError::Closed => f.write_str("client closed"),
            ClientError::InvalidEventName(err) => write!(f, "invalid event name: {err}"),
            ClientError::ReservedEventName => f.write_str("event names starting with `sys.` are reserved"),
            ClientError::InvalidCloseCode(code) => write!(f, "close code {code} may not be sent"),
        }
    }
}

impl std::error::Error for ClientError {}
