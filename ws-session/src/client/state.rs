//! The connection states a user can watch.

use std::time::Duration;

use ws_proto::CloseCode;

/// How a transport ended: the close code and reason the peer sent (or 1006 when it
/// vanished), and a local error when there was one (connect refused, handshake
/// refused, I/O error, timeout).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Disconnect {
    /// The close code; `None` when no close frame was exchanged and none applies
    /// (for example a TCP connect that failed).
    pub code: Option<CloseCode>,
    /// The close reason, possibly empty.
    pub reason: String,
    /// What went wrong locally, in words.
    pub error: Option<String>,
    /// The HTTP status, when the server answered the upgrade request with something
    /// other than 101.
    pub status: Option<u16>,
    /// Set when the client stopped because its session was ended on purpose, by the
    /// server or by this client: not a network drop, nothing to resume.
    pub session_end: Option<SessionEnd>,
}

/// Who ended the session on purpose ([`Disconnect::session_end`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The server ended it (`sys.session.ended`, close 4115), saying why.
    ByServer {
        /// The server application's reason (may be empty).
        reason: String,
    },
    /// This client ended it: [`close`](super::ClientEngine::close) sent
    /// `sys.session.end` on a live session.
    ByClient,
}

impl Disconnect {
    /// A transport that ended with a close frame.
    pub fn closed(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
            error: None,
            status: None,
            session_end: None,
        }
    }

    /// A transport that failed (or never opened) with `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            code: None,
            reason: String::new(),
            error: Some(error.into()),
            status: None,
            session_end: None,
        }
    }

    /// The server refused the upgrade with HTTP `status`.
    pub fn refused(status: u16, error: impl Into<String>) -> Self {
        Self {
            status: Some(status),
            ..Self::failed(error)
        }
    }
}

/// Says what ended the transport, most specific first: the HTTP status of a refused
/// upgrade, the close code and reason, the local error.
impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(status) = self.status {
            parts.push(format!("HTTP {status}"));
        }
        if let Some(code) = self.code {
            parts.push(if self.reason.is_empty() {
                format!("closed {}", code.0)
            } else {
                format!("closed {}: {}", code.0, self.reason)
            });
        }
        if let Some(error) = &self.error {
            parts.push(error.clone());
        }
        if parts.is_empty() {
            parts.push("disconnected".to_owned());
        }
        f.write_str(&parts.join(", "))
    }
}

/// Where the client stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// The first connection attempt is under way (transport, then session).
    Connecting,
    /// The first session is up.
    Connected,
    /// The connection was lost or could not be made; the client waits `delay` and
    /// makes reconnect attempt number `attempt` (1, 2, …).
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// How long the client waits before it.
        delay: Duration,
    },
    /// A session is up again after a loss: restored or new, see
    /// [`SessionOutcome`](super::SessionOutcome).
    Reconnected,
    /// [`close`](super::ClientEngine::close) was called: the closing handshake runs.
    Disconnecting,
    /// Stopped for good: closed by the user, ended by the server, refused
    /// authentication, or out of reconnect attempts. [`Disconnect::session_end`] tells a
    /// session ended on purpose (by either side) from the rest.
    Disconnected(Disconnect),
}
