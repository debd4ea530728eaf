//! Timers (heartbeats, deadlines, expiry) and the ends of connections and sessions.

use super::*;

/// How a session leaves the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Its resume window passed.
    Expired,
    /// It was closed before that.
    Closed(CloseReason),
}

impl Engine {
    /// A connection's deadline: authentication timeout, idle timeout, or heartbeat.
    pub(super) fn on_connection_timer(&mut self, now: Instant, cid: ConnectionId, at: Instant) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        if conn.timer_at != Some(at) {
            return; // stale entry
        }
        conn.timer_at = None;
        let attached = matches!(conn.state, ConnState::Attached { .. });
        if !attached && now >= conn.opened_at + self.config.auth_timeout {
            self.metrics.auth_failures += 1;
            self.send_error(
                cid,
                ErrorCode::AUTH_TIMEOUT.0,
                "authentication timed out",
                None,
                None,
            );
            self.close_connection(
                now,
                cid,
                ErrorCode::AUTH_TIMEOUT.close_code(),
                "authentication timeout",
            );
            return;
        }
        if now >= conn.last_inbound + self.config.heartbeat_interval + self.config.idle_timeout {
            self.close_connection(now, cid, ErrorCode::IDLE_TIMEOUT.close_code(), "idle timeout");
            return;
        }
        if now >= conn.next_ping {
            conn.next_ping = now + self.config.heartbeat_interval;
            self.send_system::<()>(cid, sys::PING, None, None);
        }
        self.schedule_connection(cid);
    }

    /// A suspended session's deadline: expiry.
    pub(super) fn on_session_timer(&mut self, now: Instant, sid: SessionId, at: Instant) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if session.timer_at != Some(at) {
            return;
        }
        session.timer_at = None;
        match session.expires_at {
            Some(expiry) if now >= expiry => self.expire(sid),
            Some(expiry) => self
                .timers
                .schedule(TimerKey::Session(sid), expiry, &mut session.timer_at),
            None => {}
        }
    }

    /// Makes sure the connection's earliest deadline is in the timer heap.
    pub(super) fn schedule_connection(&mut self, cid: ConnectionId) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let idle = conn.last_inbound + self.config.heartbeat_interval + self.config.idle_timeout;
        let mut at = conn.next_ping.min(idle);
        if !matches!(conn.state, ConnState::Attached { .. }) {
            at = at.min(conn.opened_at + self.config.auth_timeout);
        }
        self.timers
            .schedule(TimerKey::Connection(cid), at, &mut conn.timer_at);
    }

    /// Forgets `cid`, emits `Close`, and suspends its session.
    pub(super) fn close_connection(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        code: CloseCode,
        reason: &'static str,
    ) {
        if self.conns.contains_key(&cid) {
            self.actions.push_back(Action::Close {
                connection: cid,
                code,
                reason,
            });
            self.drop_connection(now, cid);
        }
    }

    /// Forgets `cid` and emits `Close`; its session (being taken over or ended) is
    /// detached but not suspended.
    pub(super) fn close_connection_only(&mut self, cid: ConnectionId, code: CloseCode, reason: &'static str) {
        if let Some(conn) = self.conns.remove(&cid) {
            if let ConnState::Attached { session, .. } = conn.state {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.connection = None;
                }
            }
            self.actions.push_back(Action::Close {
                connection: cid,
                code,
                reason,
            });
        }
    }

    /// Forgets `cid` (the peer is gone) and suspends its session.
    pub(super) fn drop_connection(&mut self, now: Instant, cid: ConnectionId) {
        let Some(conn) = self.conns.remove(&cid) else {
            return;
        };
        match conn.state {
            ConnState::Authenticating { auth, .. } => {
                self.auths.remove(&auth);
            }
            ConnState::Attached { session, .. } => self.suspend(now, session),
            // The load's answer will find no connection; the fresh session it would
            // have replaced is suspended like any other.
            ConnState::Loading(loading) => {
                if let Some(fresh) = loading.replacing {
                    self.suspend(now, fresh);
                }
            }
            ConnState::AwaitingAuth => {}
        }
    }

    /// Detaches a session from its (gone) connection and starts its resume window.
    pub(super) fn suspend(&mut self, now: Instant, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        session.connection = None;
        let expiry = now + self.config.resume_window;
        if session.expires_at.replace(expiry).is_some() {
            self.suspensions.left();
        }
        self.timers
            .schedule(TimerKey::Session(sid), expiry, &mut session.timer_at);
        let sessions = &self.sessions;
        self.suspensions
            .push(sid, expiry, |sid, at| is_suspension(sessions, sid, at));
        self.journal(sid, JournalEntry::Suspended);
        self.actions
            .push_back(Action::Session(SessionEvent::Suspended { session: sid }));
        // Past the bound, the sessions suspended longest ago (the nearest their end
        // anyway) expire now, this one last.
        while self.suspensions.len() > self.config.max_suspended_sessions {
            let sessions = &self.sessions;
            let Some(oldest) = self
                .suspensions
                .pop_oldest(|sid, at| is_suspension(sessions, sid, at))
            else {
                break;
            };
            self.metrics.sessions_evicted += 1;
            self.remove_session(oldest, Ending::Expired);
        }
    }

    /// The resume window passed.
    pub(super) fn expire(&mut self, sid: SessionId) {
        self.metrics.sessions_expired += 1;
        self.remove_session(sid, Ending::Expired);
    }

    /// Takes `sid` out of the room index; the last member out vacates the room (and
    /// says so to a cross-node backend). Returns whether it was a member.
    pub(super) fn leave_room_of(&mut self, room: &str, sid: SessionId) -> bool {
        let removed = self.rooms.leave(room, sid);
        if removed && self.config.publish_broadcasts && self.rooms.members(room).is_none() {
            self.actions.push_back(Action::RoomVacated(Arc::from(room)));
        }
        removed
    }

    /// Removes a session (its connection already dealt with) from every room and the
    /// engine, fails its waiting requests, and tells the application.
    pub(super) fn remove_session(&mut self, sid: SessionId, ending: Ending) {
        let Some(mut session) = self.sessions.remove(&sid) else {
            return;
        };
        if session.expires_at.is_some() {
            self.suspensions.left();
        }
        session.replay.clear(&mut self.slab);
        for room in &session.rooms {
            self.leave_room_of(room, sid);
        }
        let tomb = match ending {
            Ending::Closed(CloseReason::ByServer | CloseReason::ByClient) => Tomb::Ended,
            Ending::Expired | Ending::Closed(CloseReason::Replaced | CloseReason::Gap) => Tomb::Expired,
        };
        self.expired.insert(sid, tomb, self.config.expired_memory);
        if session.pending_requests > 0 {
            self.fail_requests_of(sid);
        }
        self.journal(sid, JournalEntry::Ended);
        let user = session.user;
        self.actions.push_back(Action::Session(match ending {
            Ending::Expired => SessionEvent::Expired { session: sid, user },
            Ending::Closed(reason) => SessionEvent::Closed {
                session: sid,
                user,
                reason,
            },
        }));
    }

    /// Drops a session without ending it (it lives on in the shared store, or never
    /// resumed here): out of every room, its waiting requests failed; no tombstone, no
    /// journal entry, no lifecycle event.
    pub(super) fn forget_session(&mut self, sid: SessionId) {
        let Some(mut session) = self.sessions.remove(&sid) else {
            return;
        };
        if session.expires_at.is_some() {
            self.suspensions.left();
        }
        session.replay.clear(&mut self.slab);
        for room in &session.rooms {
            self.leave_room_of(room, sid);
        }
        if session.pending_requests > 0 {
            self.fail_requests_of(sid);
        }
    }

    /// Drops the messages up to `seq` from `sid`'s replay buffer (its client has them).
    pub(super) fn ack_replay(&mut self, sid: SessionId, seq: u64) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let before = session.replay.first();
        session.replay.ack(&mut self.slab, seq);
        if before.is_some() && session.replay.first() != before {
            let first = session.replay.first().unwrap_or(session.next_seq);
            self.journal(sid, JournalEntry::Trimmed { first });
        }
    }

    /// End of every input: close the connections that went over their outbound bound.
    pub(super) fn finish(&mut self, now: Instant) {
        while let Some(cid) = self.slow.pop() {
            if self.conns.contains_key(&cid) {
                self.metrics.slow_consumer_drops += 1;
                self.close_connection(now, cid, ErrorCode::SLOW_CONSUMER.close_code(), "slow consumer");
            }
        }
    }

    /// 128 random bits not in use.
    pub(super) fn new_session_id(&mut self) -> SessionId {
        let mut id = SessionId(u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64()));
        // A collision of 128 random bits means a broken generator; step past it rather
        // than spin forever (ids are public, so predictability costs nothing here).
        while self.sessions.contains_key(&id) || self.expired.contains(id) {
            id = SessionId(id.0.wrapping_add(1));
        }
        id
    }

    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// The first bound a session or connection exceeds, if any (checked without
    /// allocating, so the simulation can call it after every step).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn bounds_violation(&self) -> Option<String> {
        let c = &self.config;
        for (sid, s) in &self.sessions {
            if s.replay.len() > c.replay_max_messages || s.replay.bytes() > c.replay_max_bytes {
                return Some(format!(
                    "{sid:?} replay {} messages {} bytes",
                    s.replay.len(),
                    s.replay.bytes()
                ));
            }
            if s.rooms.len() > c.max_rooms_per_session {
                return Some(format!("{sid:?} in {} rooms", s.rooms.len()));
            }
        }
        for (cid, conn) in &self.conns {
            if conn.queued > c.max_outbound_bytes {
                return Some(format!("{cid} queued {}", conn.queued));
            }
        }
        None
    }

    /// Prefixes held by replay buffers, and the replay entries referring to them.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn replay_storage(&self) -> (usize, usize) {
        let entries = self.sessions.values().map(|s| s.replay.len()).sum();
        (self.slab.live(), entries)
    }
}

/// Whether `sid` is suspended with the resume deadline `at` (an entry of the
/// suspension queue that still holds).
pub(super) fn is_suspension(sessions: &IdMap<SessionId, Session>, sid: SessionId, at: Instant) -> bool {
    sessions
        .get(&sid)
        .is_some_and(|session| session.connection.is_none() && session.expires_at == Some(at))
}
