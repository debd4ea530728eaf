//! What the engine knows about a connection: the handshake metadata the caller hands
//! over, and the engine's own per-connection state.

use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ws_proto::envelope::Codec;
use ws_proto::handshake::Headers;

use crate::rate_limit::RateLimiter;
use crate::{AuthId, SessionId, UserId};

/// Metadata of an accepted WebSocket connection, from its upgrade request. The engine
/// keeps it until the connection has a session (the authenticator gets it in
/// [`AuthRequest`](crate::AuthRequest)), then drops it.
///
/// `Debug` leaves out the credential, the query string and credential header values.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer's address, when the transport has one.
    pub peer_addr: Option<SocketAddr>,
    /// The request path, without the query (`/ws`).
    pub path: String,
    /// The raw query string, without `?` (`token=abc&x=1`).
    pub query: Option<String>,
    /// The request headers, names as received (their `Debug` redacts credentials).
    pub headers: Headers,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// The credential, when the request carried one (`Authorization: Bearer …` or
    /// `?token=…`). [`ConnectionInfo::new`] extracts it; set it yourself otherwise.
    pub token: Option<String>,
    /// The envelope codec the upgrade agreed on (`Sec-WebSocket-Protocol`), fixed for
    /// the connection: JSON in text frames (the default) or MessagePack in binary
    /// frames.
    pub codec: Codec,
}

impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("peer_addr", &self.peer_addr)
            .field("path", &self.path)
            .field("query", &self.query.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers)
            .field("origin", &self.origin)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("codec", &self.codec)
            .finish()
    }
}

impl ConnectionInfo {
    /// Builds the metadata from the parts of an upgrade request and extracts the
    /// credential: the `Authorization: Bearer` header first, else the `token` query
    /// parameter (taken verbatim: tokens are expected to be URL-safe).
    pub fn new(
        peer_addr: Option<SocketAddr>,
        path: impl Into<String>,
        query: Option<String>,
        headers: Headers,
    ) -> Self {
        let origin = headers.get("origin").map(|v| v.trim().to_owned());
        let bearer = headers.get("authorization").and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
        let from_query = query.as_deref().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .map(str::to_owned)
        });
        Self {
            peer_addr,
            path: path.into(),
            query,
            headers,
            origin,
            token: bearer.or(from_query).filter(|t| !t.is_empty()),
            codec: Codec::Json,
        }
    }

    /// The same metadata with `codec` as the connection's envelope codec.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Metadata with only a credential, for tests and custom transports.
    pub fn with_token(token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..Self::default()
        }
    }
}

/// A resume the client asked for, waiting for its authentication to finish.
#[derive(Debug, Clone)]
pub(crate) struct ResumeRequest {
    pub(crate) session_id: Box<str>,
    pub(crate) resume_token: Box<str>,
    pub(crate) last_seq: u64,
    pub(crate) correlation_id: Option<Box<str>>,
}

/// A resume parked while its session is loaded from the shared store.
#[derive(Debug)]
pub(crate) struct Loading {
    pub(crate) user: UserId,
    pub(crate) anonymous: bool,
    pub(crate) request: ResumeRequest,
    /// The session wanted (parsed from the request).
    pub(crate) session: SessionId,
    /// The fresh session the connection carries, replaced on success.
    pub(crate) replacing: Option<SessionId>,
}

#[derive(Debug)]
pub(crate) enum ConnState {
    /// No credential yet: waiting for `sys.auth` (or `sys.reconnect.request` with one).
    AwaitingAuth,
    /// The authenticator was asked; `resume` is set when the client wants to resume
    /// rather than start a new session.
    Authenticating {
        auth: AuthId,
        /// Boxed: rare, and inline it would grow every connection.
        resume: Option<Box<ResumeRequest>>,
        /// Correlation id of the `sys.auth` that started it, for the answer.
        correlation_id: Option<Box<str>>,
    },
    /// A resume of a session this engine does not hold waits for the shared store's
    /// record ([`Action::LoadSession`](crate::Action::LoadSession)). Nothing else is
    /// served meanwhile; the authentication deadline still runs.
    Loading(Box<Loading>),
    /// The connection carries a session.
    Attached {
        session: SessionId,
        /// The session was created on this connection and the client has sent no
        /// application event on it yet: a `sys.reconnect.request` may still replace it
        /// (clients that authenticate in the handshake and then resume).
        fresh: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) state: ConnState,
    pub(crate) info: Option<Arc<ConnectionInfo>>,
    pub(crate) opened_at: Instant,
    pub(crate) last_inbound: Instant,
    pub(crate) next_ping: Instant,
    pub(crate) rate: RateLimiter,
    /// Refusals in the current streak.
    pub(crate) rate_strikes: u32,
    /// When the last message was refused by the rate limit.
    pub(crate) last_refusal: Option<Instant>,
    /// Bytes handed out in transmits and not yet reported flushed.
    pub(crate) queued: usize,
    /// Over the outbound bound: no more transmits; closed once the current command ends.
    pub(crate) slow: bool,
    pub(crate) timer_at: Option<Instant>,
    /// The envelope codec, from [`ConnectionInfo::codec`].
    pub(crate) codec: Codec,
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_carries_no_credential() {
        let info = ConnectionInfo::new(
            None,
            "/ws",
            Some("token=query-secret".to_owned()),
            [
                ("Authorization", "Bearer header-secret"),
                ("Cookie", "sid=cookie-secret"),
                ("Origin", "https://chat.example"),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(info.token.as_deref(), Some("header-secret"));
        let printed = format!("{info:?}");
        for secret in ["query-secret", "header-secret", "cookie-secret"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("https://chat.example"), "{printed}");
    }
}
