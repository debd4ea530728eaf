//! Every limit of the session engine, in one place, each with its documented default
//! (`docs/ARCHITECTURE.md`, "Limits and configuration").

use std::time::Duration;

/// Limits and switches of the [`Engine`](crate::Engine).
///
/// One struct so that a deployment reads every bound it runs with in one place. Each
/// default is documented on its field and, for figures, named by a `DEFAULT_*`
/// constant. Build one with struct update syntax:
/// `EngineConfig { allow_anonymous: true, ..EngineConfig::default() }`.
/// [`Engine::new`](crate::Engine::new) checks it with [`EngineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Envelope limits (size, depth, event name and correlation id lengths), applied to
    /// every inbound text message. Default: [`ws_proto::Config::default`].
    pub envelope: ws_proto::Config,
    /// The engine sends `sys.ping` to every connection this often. Default: 20 s.
    pub heartbeat_interval: Duration,
    /// A connection from which nothing arrived for `heartbeat_interval + idle_timeout`
    /// is closed (4104) and its session suspended. Default: 20 s.
    pub idle_timeout: Duration,
    /// A connection that has no session this long after it opened (no credential, or
    /// the authenticator did not answer) is closed (4103). Default: 10 s.
    pub auth_timeout: Duration,
    /// How long a suspended session waits for a resume before it expires. Default: 2 min.
    pub resume_window: Duration,
    /// Most sessions waiting for a resume at once. When one more is suspended, the one
    /// suspended longest ago expires at once (`SessionEvent::Expired`; counted in
    /// [`Metrics::sessions_evicted`](crate::Metrics::sessions_evicted)). It bounds what
    /// clients that create sessions and leave can make the server hold: each suspended
    /// session keeps its rooms and up to `replay_max_bytes` of replay. Set it above the
    /// connections a node carries, so that all of them can drop at once and resume.
    /// 0: a session ends with its connection. Default: 10,000.
    pub max_suspended_sessions: usize,
    /// Most unacknowledged messages a session's replay buffer keeps; older ones are
    /// dropped and a resume from before them is refused as a gap. Default: 1000.
    pub replay_max_messages: usize,
    /// Most bytes (of encoded messages) a replay buffer keeps. Default: 100 KiB.
    pub replay_max_bytes: usize,
    /// Most bytes handed out to one connection in `Transmit` actions and not yet reported
    /// flushed ([`Engine::handle_flushed`](crate::Engine::handle_flushed)). Over it the
    /// connection is a slow consumer: closed with 4110 and its session suspended (so it
    /// can resume and get the rest by replay). Must be at least `replay_max_bytes`, so
    /// that a full replay fits. Default: 1 MiB.
    pub max_outbound_bytes: usize,
    /// Inbound data messages per second a connection may sustain. Default: 50.
    pub rate_limit_per_second: u32,
    /// Inbound data messages a connection may send in one burst. Default: 100.
    pub rate_limit_burst: u32,
    /// Refusals in one streak after which the connection is closed with 1008. A streak
    /// ends when nothing was refused for as long as the bucket takes to refill
    /// (`rate_limit_burst / rate_limit_per_second`, 2 s by default); its first refusal
    /// gets a `sys.error` 4105, the others are dropped silently. Default: 20.
    pub rate_limit_max_strikes: u32,
    /// Most rooms one session may be in. Default: 64.
    pub max_rooms_per_session: usize,
    /// Longest room name, in bytes. Default: 128.
    pub max_room_name_len: usize,
    /// Create an anonymous session at connect for connections without a credential,
    /// instead of waiting for `sys.auth`. Default: `false`.
    pub allow_anonymous: bool,
    /// When set, a connection whose `Origin` is not in the list is closed (4114) at
    /// open. Compared exactly (ASCII case-insensitive). Default: `None` (no check).
    pub allowed_origins: Option<Vec<String>>,
    /// Emit [`Action::Publish`](crate::Action::Publish) for every broadcast, for a
    /// cross-node backend to forward. Default: `false`.
    pub publish_broadcasts: bool,
    /// Room broadcasts are ordered and kept by the backend (with
    /// `publish_broadcasts`): a room broadcast is not delivered to this node's members
    /// at once, the backend hands it back ([`Engine::handle_remote_publish`]) with its
    /// [`RoomOffset`](crate::RoomOffset), to every node in the same order; each session
    /// remembers the offset it has per room (journaled as
    /// [`JournalEntry::RoomPosition`](crate::JournalEntry::RoomPosition)), skips what
    /// it already has, and a node that takes a session over replays the room's history
    /// after it ([`Engine::handle_session_loaded`]). Default: `false`.
    ///
    /// [`Engine::handle_remote_publish`]: crate::Engine::handle_remote_publish
    /// [`Engine::handle_session_loaded`]: crate::Engine::handle_session_loaded
    pub room_history: bool,
    /// How many expired session ids the engine remembers, so that a late resume is
    /// refused as "expired" rather than "unknown". Default: 4096.
    pub expired_memory: usize,
    /// Most server→client requests ([`Engine::request`](crate::Engine::request)) one
    /// session may have waiting for an answer; past it `request` is refused
    /// ([`ApiError::TooManyRequests`](crate::ApiError::TooManyRequests)). Default: 64.
    pub max_pending_requests: usize,
    /// Sessions any node can resume: emit [`Action::Journal`](crate::Action::Journal)
    /// for every change a resume needs, and ask for a session this engine does not hold
    /// ([`Action::LoadSession`](crate::Action::LoadSession)) instead of refusing the
    /// resume as unknown. For a shared session store (docs/PROTOCOL.md, "Sessions
    /// across nodes"). Off, it costs nothing. Default: `false`.
    pub shared_sessions: bool,
}

impl EngineConfig {
    /// Default heartbeat interval: 20 s.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);
    /// Default idle timeout after a heartbeat: 20 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
    /// Default authentication deadline: 10 s.
    pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default resume window: 2 min.
    pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(120);
    /// Default most sessions waiting for a resume: 10,000.
    pub const DEFAULT_MAX_SUSPENDED_SESSIONS: usize = 10_000;
    /// Default replay buffer bound in messages: 1000.
    pub const DEFAULT_REPLAY_MAX_MESSAGES: usize = 1000;
    /// Default replay buffer bound in bytes: 100 KiB (SignalR's figure).
    pub const DEFAULT_REPLAY_MAX_BYTES: usize = 100 * 1024;
    /// Default outbound bound per connection: 1 MiB.
    pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 1 << 20;
    /// Default sustained inbound rate per connection: 50 messages per second.
    pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 50;
    /// Default inbound burst per connection: 100 messages.
    pub const DEFAULT_RATE_LIMIT_BURST: u32 = 100;
    /// Default refusals in one streak before the close with 1008: 20.
    pub const DEFAULT_RATE_LIMIT_MAX_STRIKES: u32 = 20;
    /// Default most rooms per session: 64.
    pub const DEFAULT_MAX_ROOMS_PER_SESSION: usize = 64;
    /// Default longest room name: 128 bytes.
    pub const DEFAULT_MAX_ROOM_NAME_LEN: usize = 128;
    /// Default count of expired session ids remembered: 4096.
    pub const DEFAULT_EXPIRED_MEMORY: usize = 4096;
    /// Default most server→client requests waiting per session: 64.
    pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 64;

    /// Longest any duration of the configuration may be: 30 days.
    pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Whether a connection with this `Origin` may proceed: always when no allow-list
    /// is configured, else only for a listed origin (ASCII case-insensitive). The one
    /// place this is decided: the engine at connect (4114) and adapters at the upgrade
    /// (403) both ask here.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        match &self.allowed_origins {
            None => true,
            Some(allowed) => origin.is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))),
        }
    }

    /// Checks the figures against each other; [`Engine::new`](crate::Engine::new) calls it.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.rate_limit_per_second == 0 || self.rate_limit_burst == 0 {
            return Err(ConfigError::ZeroRateLimit);
        }
        if self.replay_max_bytes > self.max_outbound_bytes {
            return Err(ConfigError::ReplayExceedsOutbound {
                replay_max_bytes: self.replay_max_bytes,
                max_outbound_bytes: self.max_outbound_bytes,
            });
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::ZeroHeartbeat);
        }
        // Deadlines are `now + duration`; keep them far from `Instant`'s range end.
        for (name, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("auth_timeout", self.auth_timeout),
            ("resume_window", self.resume_window),
        ] {
            if value > Self::MAX_DURATION {
                return Err(ConfigError::DurationTooLong {
                    name,
                    max: Self::MAX_DURATION,
                });
            }
        }
        Ok(())
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            envelope: ws_proto::Config::default(),
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            auth_timeout: Self::DEFAULT_AUTH_TIMEOUT,
            resume_window: Self::DEFAULT_RESUME_WINDOW,
            max_suspended_sessions: Self::DEFAULT_MAX_SUSPENDED_SESSIONS,
            replay_max_messages: Self::DEFAULT_REPLAY_MAX_MESSAGES,
            replay_max_bytes: Self::DEFAULT_REPLAY_MAX_BYTES,
            max_outbound_bytes: Self::DEFAULT_MAX_OUTBOUND_BYTES,
            rate_limit_per_second: Self::DEFAULT_RATE_LIMIT_PER_SECOND,
            rate_limit_burst: Self::DEFAULT_RATE_LIMIT_BURST,
            rate_limit_max_strikes: Self::DEFAULT_RATE_LIMIT_MAX_STRIKES,
            max_rooms_per_session: Self::DEFAULT_MAX_ROOMS_PER_SESSION,
            max_room_name_len: Self::DEFAULT_MAX_ROOM_NAME_LEN,
            allow_anonymous: false,
            allowed_origins: None,
            publish_broadcasts: false,
            room_history: false,
            expired_memory: Self::DEFAULT_EXPIRED_MEMORY,
            max_pending_requests: Self::DEFAULT_MAX_PENDING_REQUESTS,
            shared_sessions: false,
        }
    }
}
