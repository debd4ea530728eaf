//! Counters a caller can snapshot.

use crate::NotRecoverable;

/// A snapshot of the engine's counters ([`Engine::metrics`](crate::Engine::metrics)).
/// Gauges (`connections`, `sessions_*`, `rooms`) are current values; the rest count up
/// from the engine's creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Open connections.
    pub connections: u64,
    /// Sessions attached to a connection.
    pub sessions_live: u64,
    /// Sessions waiting for a resume.
    pub sessions_suspended: u64,
    /// Rooms with at least one member.
    pub rooms: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions expired (resume window passed).
    pub sessions_expired: u64,
    /// Suspended sessions expired before their window passed, because more than
    /// [`EngineConfig::max_suspended_sessions`](crate::EngineConfig::max_suspended_sessions)
    /// were waiting (not counted in `sessions_expired`).
    pub sessions_evicted: u64,
    /// Inbound data messages (text and binary).
    pub messages_in: u64,
    /// Inbound data bytes.
    pub bytes_in: u64,
    /// Messages handed out in transmit actions (one per recipient).
    pub messages_out: u64,
    /// Bytes handed out in transmit actions.
    pub bytes_out: u64,
    /// Resumes that succeeded.
    pub resumes_ok: u64,
    /// Resumes refused (any reason; the sum of [`Metrics::resumes_refused_by`]).
    pub resumes_refused: u64,
    /// Resumes refused, by reason.
    pub resumes_refused_by: RefusedResumes,
    /// Messages held in the replay buffers of every session (live and suspended), for
    /// a resume: sent but not yet acknowledged.
    pub replay_messages: u64,
    /// Encoded bytes held in those replay buffers.
    pub replay_bytes: u64,
    /// Connections closed as slow consumers.
    pub slow_consumer_drops: u64,
    /// Credentials the authenticator refused, plus authentication timeouts.
    pub auth_failures: u64,
    /// Inbound messages dropped by the rate limit.
    pub rate_limited: u64,
    /// `sys.error` events sent for protocol faults (bad envelopes, unknown events, …).
    pub protocol_errors: u64,
    /// Sessions rebuilt from a shared store's record for a resume
    /// ([`Engine::handle_session_loaded`](crate::Engine::handle_session_loaded)) that
    /// then resumed.
    pub sessions_loaded: u64,
    /// Room messages a session that moved here got from the room's history (published
    /// while nobody held it, or while it moved), with
    /// [`EngineConfig::room_history`](crate::EngineConfig::room_history).
    pub history_replayed: u64,
    /// Sessions let go because another node took them
    /// ([`Engine::release_session`](crate::Engine::release_session)).
    pub sessions_moved: u64,
}

/// Refused resumes counted by [`NotRecoverable`] reason ([`Metrics::resumes_refused_by`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedResumes([u64; NotRecoverable::ALL.len()]);

impl RefusedResumes {
    /// The refusals for `reason`.
    pub fn get(&self, reason: NotRecoverable) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count, in [`NotRecoverable::ALL`] order (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (NotRecoverable, u64)> + '_ {
        NotRecoverable::ALL
            .iter()
            .map(|&reason| (reason, self.get(reason)))
    }

    pub(crate) fn count(&mut self, reason: NotRecoverable) {
        self.0[reason.index()] += 1;
    }
}
