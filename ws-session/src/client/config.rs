//! The client engine's settings, each with a documented default.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::{Backoff, Exponential};

/// How the credential reaches the server (`docs/PROTOCOL.md`, "Authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthMode {
    /// The engine sends `sys.auth {token}` as the first message of a new session and
    /// puts `token` in every `sys.reconnect.request` (the browser way).
    #[default]
    Message,
    /// The driver puts the credential in the upgrade request (`Authorization: Bearer`);
    /// the engine sends no `sys.auth` and no `token` on resume.
    Handshake,
}

/// When a connection on which nothing arrives is considered dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdleTimeout {
    /// `2 × heartbeatMs + 5 s`, from the server's `sys.session.created` (the server
    /// pings every `heartbeatMs`); off while no session announced a heartbeat.
    #[default]
    FromHeartbeat,
    /// A fixed limit.
    Fixed(Duration),
    /// Never: rely on the transport to notice.
    Off,
}

/// Settings of a [`ClientEngine`](super::ClientEngine).
///
/// Like every settings struct of tether: public fields, each default documented on
/// its field (and named by a `DEFAULT_*` constant where it is a figure). Build one with
/// struct update syntax:
/// `ClientConfig { queue_limit: 100, ..ClientConfig::with_credential("secret") }`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The credential, or `None` for a server that allows anonymous sessions.
    pub credential: Option<String>,
    /// How the credential is sent. Default: [`AuthMode::Message`].
    pub auth_mode: AuthMode,
    /// Reconnect delays. Default: [`Exponential::default`] (0.5 s doubling to 32 s,
    /// 50 % jitter).
    pub backoff: Arc<dyn Backoff>,
    /// Reconnect attempts in a row before giving up (`State::Disconnected`); `None`
    /// (the default) retries for ever.
    pub max_reconnect_attempts: Option<u32>,
    /// From asking for a transport to having a session on it (created or restored).
    /// Past it the attempt is abandoned and counts as a failed one. Default: 60 s.
    pub connect_timeout: Duration,
    /// Timeout of a query when its call gives none. Default: 30 s.
    pub query_timeout: Duration,
    /// Messages (and queries) that may wait while there is no session. When full, a
    /// new `send` or `query` is refused with `ClientError::QueueFull`; what is already
    /// queued keeps its place and nothing queued is dropped silently. Default: 1000.
    pub queue_limit: usize,
    /// Send `sys.ack` as soon as this many received messages are unacknowledged.
    /// Default: 16.
    pub ack_every: u64,
    /// … or this long after the first unacknowledged one. Default: 1 s.
    pub ack_delay: Duration,
    /// Dead-connection detection. Default: [`IdleTimeout::FromHeartbeat`].
    pub idle_timeout: IdleTimeout,
    /// Limits for decoding the server's envelopes. Default: [`ws_proto::Config::default`].
    pub proto: ws_proto::Config,
    /// The envelope codec to ask the server for (`Sec-WebSocket-Protocol`). A server
    /// that does not answer with it gets JSON, as before subprotocols existed; see
    /// [`wire`](super::wire). Default: [`Codec::Json`](ws_proto::envelope::Codec::Json).
    pub codec: ws_proto::envelope::Codec,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            credential: None,
            auth_mode: AuthMode::default(),
            backoff: Arc::new(Exponential::default()),
            max_reconnect_attempts: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            query_timeout: Self::DEFAULT_QUERY_TIMEOUT,
            queue_limit: Self::DEFAULT_QUEUE_LIMIT,
            ack_every: Self::DEFAULT_ACK_EVERY,
            ack_delay: Self::DEFAULT_ACK_DELAY,
            idle_timeout: IdleTimeout::default(),
            proto: ws_proto::Config::default(),
            codec: ws_proto::envelope::Codec::Json,
        }
    }
}

impl ClientConfig {
    /// Default time from asking for a transport to having a session on it: 60 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default query timeout: 30 s.
    pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default bound of the offline queue: 1000 messages and queries.
    pub const DEFAULT_QUEUE_LIMIT: usize = 1000;
    /// Default count of unacknowledged messages that triggers a `sys.ack`: 16.
    pub const DEFAULT_ACK_EVERY: u64 = 16;
    /// Default delay after the first unacknowledged message before a `sys.ack`: 1 s.
    pub const DEFAULT_ACK_DELAY: Duration = Duration::from_secs(1);

    /// The defaults with `credential`.
    pub fn with_credential(credential: impl Into<String>) -> Self {
        Self {
            credential: Some(credential.into()),
            ..Self::default()
        }
    }
}
