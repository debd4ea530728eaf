//! The server engine: connections in, sessions and rooms inside, actions out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand_core::CryptoRng;
use ws_proto::envelope::{sys, Envelope, OutgoingEnvelope};
use ws_proto::{CloseCode, Message};

use crate::action::Span;
use crate::connection::{Conn, ConnState, ResumeRequest};
use crate::id::IdMap;
use crate::outbound::Encoder;
use crate::protocol::{
    AckPayload, AuthPayload, ErrorPayload, ReconnectPayload, SessionCreated, SessionRestored,
};
use crate::rate_limit::RateLimiter;
use crate::replay::PrefixSlab;
use crate::room::Rooms;
use crate::session::{Session, SessionInfo, Tombstones};
use crate::timer::{TimerKey, Timers};
use crate::{
    Action, ApiError, AuthId, AuthRequest, ConfigError, ConnectionId, ConnectionInfo, EngineConfig,
    ErrorCode, InboundEvent, Metrics, NotRecoverable, OutboundMessage, Publication, PublishTarget,
    ResumeToken, SessionEvent, SessionId, UserId,
};

/// The Sans-IO server engine of tether.
///
/// Feed it inputs (`handle_*` methods and the application commands), then drain
/// [`poll_action`](Self::poll_action) until `None` and arm a timer for
/// [`poll_timeout`](Self::poll_timeout). Every input takes `now`; the engine never
/// reads a clock, and draws randomness only from the generator given to
/// [`new`](Self::new). See the crate documentation for the drive loop.
pub struct Engine {
    config: EngineConfig,
    rng: Box<dyn CryptoRng + Send>,
    conns: IdMap<ConnectionId, Conn>,
    sessions: IdMap<SessionId, Session>,
    rooms: Rooms,
    auths: IdMap<AuthId, ConnectionId>,
    next_connection: u64,
    next_auth: u64,
    timers: Timers,
    actions: VecDeque<Action>,
    encoder: Encoder,
    metrics: Metrics,
    expired: Tombstones,
    /// Connections that went over the outbound bound during the current input.
    slow: Vec<ConnectionId>,
    /// Recipient lists of broadcasts, handed back by the caller for reuse.
    recipients: Vec<Vec<(ConnectionId, u64)>>,
    /// The prefixes replay buffers hold, each stored once.
    slab: PrefixSlab,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("rooms", &self.rooms.len())
            .field("pending_actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

/// The parts of the engine a transmit touches, borrowed apart from the sessions and
/// rooms so that a broadcast can walk a room while sending.
struct Outbox<'a> {
    conns: &'a mut IdMap<ConnectionId, Conn>,
    actions: &'a mut VecDeque<Action>,
    metrics: &'a mut Metrics,
    slow: &'a mut Vec<ConnectionId>,
    slab: &'a mut PrefixSlab,
    config: &'a EngineConfig,
}

impl Outbox<'_> {
    /// Counts `len` more bytes handed to `cid`, unless that would put the connection
    /// over its outbound bound: then it is marked slow (closed when the input ends) and
    /// nothing more is sent to it. Returns whether the bytes may be sent.
    fn account(&mut self, cid: ConnectionId, len: usize) -> bool {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return false;
        };
        if conn.slow {
            return false;
        }
        if conn.queued + len > self.config.max_outbound_bytes {
            conn.slow = true;
            self.slow.push(cid);
            return false;
        }
        conn.queued += len;
        self.metrics.messages_out += 1;
        self.metrics.bytes_out += len as u64;
        true
    }

    /// Queues `message` for `cid` (see [`account`](Self::account)).
    fn transmit(&mut self, cid: ConnectionId, message: OutboundMessage) -> bool {
        if !self.account(cid, message.len()) {
            return false;
        }
        self.actions.push_back(Action::Transmit {
            connection: cid,
            message,
        });
        true
    }

    /// Appends a session-stream message to `session` (sequence number, replay buffer)
    /// and, when the session is attached, transmits it: on its own, or as one more
    /// recipient in `batch` (a broadcast). Returns its `s`.
    fn deliver(
        &mut self,
        session: &mut Session,
        prefix: &Bytes,
        slot: u32,
        batch: Option<&mut Vec<(ConnectionId, u64)>>,
    ) -> u64 {
        let seq = session.next_seq;
        session.next_seq += 1;
        session.replay.push(
            self.slab,
            seq,
            slot,
            self.config.replay_max_messages,
            self.config.replay_max_bytes,
        );
        if let Some(cid) = session.connection {
            match batch {
                Some(batch) => {
                    if self.account(cid, OutboundMessage::encoded_len(prefix, Some(seq))) {
                        batch.push((cid, seq));
                    }
                }
                None => {
                    self.transmit(
                        cid,
                        OutboundMessage {
                            prefix: prefix.clone(),
                            seq: Some(seq),
                        },
                    );
                }
            }
        }
        seq
    }
}

impl Engine {
    /// An engine with `config`, drawing session ids, resume tokens and hash keys from
    /// `rng`: pass an OS-seeded CSPRNG in production, a seeded `ChaCha20Rng` in tests.
    pub fn new(config: EngineConfig, mut rng: impl CryptoRng + Send + 'static) -> Result<Self, ConfigError> {
        config.validate()?;
        let room_key = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
        Ok(Self {
            config,
            rng: Box::new(rng),
            conns: IdMap::default(),
            sessions: IdMap::default(),
            rooms: Rooms::new(room_key),
            auths: IdMap::default(),
            next_connection: 1,
            next_auth: 1,
            timers: Timers::default(),
            actions: VecDeque::new(),
            encoder: Encoder::default(),
            metrics: Metrics::default(),
            expired: Tombstones::default(),
            slow: Vec::new(),
            recipients: Vec::new(),
            slab: PrefixSlab::default(),
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    // ----- inputs from the transport -------------------------------------------------

    /// Call when a WebSocket connection has been accepted (the upgrade succeeded).
    /// Returns the id the engine gives it. With a credential in `info.token` the engine
    /// asks the application to authenticate it; without one it waits for `sys.auth`
    /// (or creates an anonymous session when configured).
    pub fn handle_connection_opened(&mut self, now: Instant, info: ConnectionInfo) -> ConnectionId {
        let cid = ConnectionId(self.next_connection);
        self.next_connection += 1;
        self.metrics.connections_opened += 1;
        if let Some(allowed) = &self.config.allowed_origins {
            let ok = info
                .origin
                .as_deref()
                .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if !ok {
                self.actions.push_back(Action::Close {
                    connection: cid,
                    code: ErrorCode::ORIGIN_NOT_ALLOWED.close_code(),
                    reason: "origin not allowed",
                });
                return cid;
            }
        }
        let token = info.token.clone();
        self.conns.insert(
            cid,
            Conn {
                state: ConnState::AwaitingAuth,
                info: Some(Arc::new(info)),
                opened_at: now,
                last_inbound: now,
                next_ping: now + self.config.heartbeat_interval,
                rate: RateLimiter::new(now),
                rate_strikes: 0,
                queued: 0,
                slow: false,
                timer_at: None,
            },
        );
        if let Some(token) = token {
            self.start_auth(cid, token, None, None);
        } else if self.config.allow_anonymous {
            let sid = self.new_session_id();
            let user = UserId::new(format!("anon-{sid}"));
            self.create_session(cid, sid, user, true, None);
        }
        self.schedule_connection(cid);
        cid
    }

    /// Call with every message a connection delivered (ws-proto's `Event::Message`, or
    /// a custom transport's). Text is decoded as an envelope; any message counts as a
    /// sign of life. A `Close` means the peer is going: the session is suspended.
    /// Messages for a connection the engine closed are ignored.
    pub fn handle_message(&mut self, now: Instant, connection: ConnectionId, message: Message) {
        let Some(conn) = self.conns.get_mut(&connection) else {
            return;
        };
        conn.last_inbound = now;
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
            Message::Close(_) => {
                self.drop_connection(now, connection);
                return;
            }
            _ => return, // pings and pongs: liveness only
        };
        self.metrics.messages_in += 1;
        self.metrics.bytes_in += len as u64;
        let config = &self.config;
        if !conn
            .rate
            .allow(now, config.rate_limit_per_second, config.rate_limit_burst)
        {
            self.metrics.rate_limited += 1;
            conn.rate_strikes += 1;
            let strikes = conn.rate_strikes;
            if strikes >= config.rate_limit_max_strikes {
                self.close_connection(now, connection, CloseCode::POLICY_VIOLATION, "rate limit");
            } else if strikes == 1 {
                self.send_error(
                    connection,
                    ErrorCode::RATE_LIMITED.0,
                    "rate limited: message dropped",
                    None,
                    None,
                );
            }
            self.finish(now);
            return;
        }
        conn.rate_strikes = 0;
        match message {
            Message::Text(text) => self.on_text(now, connection, text),
            _ => self.send_error(
                connection,
                ErrorCode::BINARY_NOT_SUPPORTED.0,
                "binary messages are not supported; send envelopes as text",
                None,
                None,
            ),
        }
        self.finish(now);
    }

    /// Call when a connection closed or reached EOF (after a close handshake or not).
    /// Its session is suspended for the resume window. Unknown ids are ignored.
    pub fn handle_connection_closed(&mut self, now: Instant, connection: ConnectionId) {
        self.drop_connection(now, connection);
    }

    /// Call when `bytes` of what `Transmit` actions handed out for `connection` have been
    /// written to the socket. The engine bounds the difference per connection
    /// ([`EngineConfig::max_outbound_bytes`]).
    pub fn handle_flushed(&mut self, _now: Instant, connection: ConnectionId, bytes: usize) {
        if let Some(conn) = self.conns.get_mut(&connection) {
            conn.queued = conn.queued.saturating_sub(bytes);
        }
    }

    /// Call when the instant from [`poll_timeout`](Self::poll_timeout) has come (early
    /// or spurious calls are harmless): heartbeats, idle and authentication deadlines,
    /// session expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Connection(cid) => self.on_connection_timer(now, cid, at),
                TimerKey::Session(sid) => self.on_session_timer(now, sid, at),
            }
        }
        self.finish(now);
    }

    /// Call with the application's answer to [`Action::Authenticate`]: `Ok(user)` or
    /// `Err(reason)` (the reason goes to the client in `sys.error` 4102). Answers for
    /// connections that are gone are ignored; an id never issued is an error.
    pub fn handle_auth_result(
        &mut self,
        now: Instant,
        id: AuthId,
        result: Result<UserId, String>,
    ) -> Result<(), ApiError> {
        if id.0 == 0 || id.0 >= self.next_auth {
            return Err(ApiError::UnknownAuthRequest);
        }
        let Some(cid) = self.auths.remove(&id) else {
            return Ok(());
        };
        let Some(conn) = self.conns.get_mut(&cid) else {
            return Ok(());
        };
        let (resume, correlation_id) = match &mut conn.state {
            ConnState::Authenticating {
                auth,
                resume,
                correlation_id,
            } if *auth == id => (resume.take(), correlation_id.take()),
            _ => return Ok(()),
        };
        match result {
            Err(reason) => {
                self.metrics.auth_failures += 1;
                let c = resume
                    .as_ref()
                    .and_then(|r| r.correlation_id.as_deref())
                    .or(correlation_id.as_deref());
                let message = format!("authentication failed: {reason}");
                self.send_error(cid, ErrorCode::AUTH_FAILED.0, &message, None, c);
                self.close_connection(
                    now,
                    cid,
                    ErrorCode::AUTH_FAILED.close_code(),
                    "authentication failed",
                );
            }
            Ok(user) => match resume {
                Some(request) => {
                    if let Err(reason) = self.try_resume(now, cid, &user, false, &request, None) {
                        self.refuse_resume(cid, reason, request.correlation_id.as_deref());
                        let sid = self.new_session_id();
                        self.create_session(cid, sid, user, false, None);
                    }
                }
                None => {
                    let sid = self.new_session_id();
                    self.create_session(cid, sid, user, false, correlation_id.as_deref());
                }
            },
        }
        self.finish(now);
        Ok(())
    }

    /// Call with a broadcast another node published (from the cross-node backend): it
    /// is delivered to the local sessions it targets and never published again.
    pub fn handle_remote_publish(&mut self, now: Instant, publication: &Publication) {
        match &publication.target {
            PublishTarget::All => {
                self.fan_out_all(&publication.prefix, |sid, _| Some(sid) != publication.except);
            }
            PublishTarget::Room(room) => {
                self.fan_out_room(room, &publication.prefix, publication.except);
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.finish(now);
    }

    // ----- application commands ----------------------------------------------------

    /// Sends `envelope` to `session` as the next message of its stream (its `s` is
    /// set by the engine and returned). Kept for replay until acknowledged; sent now if
    /// the session is attached, on resume otherwise.
    pub fn send(
        &mut self,
        now: Instant,
        session: SessionId,
        envelope: &OutgoingEnvelope<'_>,
    ) -> Result<u64, ApiError> {
        if !self.sessions.contains_key(&session) {
            return Err(ApiError::UnknownSession(session));
        }
        let prefix = self.encoder.prefix(envelope);
        self.deliver_prefix(now, session, &prefix)
    }

    /// Answers the request with correlation id `correlation_id` of `session`: sends
    /// `envelope` with `c` set (in the session stream, so it survives a reconnect).
    pub fn reply(
        &mut self,
        now: Instant,
        session: SessionId,
        correlation_id: &str,
        envelope: &OutgoingEnvelope<'_>,
    ) -> Result<u64, ApiError> {
        self.send(now, session, &envelope.with_correlation_id(correlation_id))
    }

    /// Answers the request `correlation_id` of `session` with a `sys.error` carrying
    /// the application's `code` and `message` (in the session stream). Applications
    /// should use codes from 4200 up; below is the protocol's.
    pub fn reply_error(
        &mut self,
        now: Instant,
        session: SessionId,
        correlation_id: &str,
        code: u16,
        message: &str,
    ) -> Result<u64, ApiError> {
        if !self.sessions.contains_key(&session) {
            return Err(ApiError::UnknownSession(session));
        }
        let env = OutgoingEnvelope::new(sys::ERROR).with_correlation_id(correlation_id);
        let prefix = self.encoder.prefix_with(
            &env,
            &ErrorPayload {
                code,
                message,
                reason: None,
            },
        );
        self.deliver_prefix(now, session, &prefix)
    }

    /// Sends `envelope` to every session (serialized once). Published to other nodes
    /// when [`EngineConfig::publish_broadcasts`] is on. Returns the local recipients.
    pub fn broadcast(&mut self, now: Instant, envelope: &OutgoingEnvelope<'_>) -> usize {
        let prefix = self.encoder.prefix(envelope);
        let n = self.fan_out_all(&prefix, |_, _| true);
        self.publish(PublishTarget::All, None, prefix);
        self.finish(now);
        n
    }

    /// Sends `envelope` to the sessions `pick` chooses (local only: a predicate cannot
    /// cross nodes). Returns the recipients.
    pub fn broadcast_filter(
        &mut self,
        now: Instant,
        envelope: &OutgoingEnvelope<'_>,
        pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let prefix = self.encoder.prefix(envelope);
        let n = self.fan_out_all(&prefix, pick);
        self.finish(now);
        n
    }

    /// Sends `envelope` to every member of `room` but `except` (serialized once; each
    /// recipient costs a refcount, a sequence number and a queue push). Published to
    /// other nodes when configured. Returns the local recipients.
    pub fn broadcast_room(
        &mut self,
        now: Instant,
        room: &str,
        envelope: &OutgoingEnvelope<'_>,
        except: Option<SessionId>,
    ) -> usize {
        let prefix = self.encoder.prefix(envelope);
        let n = self.fan_out_room(room, &prefix, except);
        if self.config.publish_broadcasts {
            self.publish(PublishTarget::Room(Arc::from(room)), except, prefix);
        }
        self.finish(now);
        n
    }

    /// Sends `envelope` once, outside the session streams (no `s`, not replayed), to the
    /// attached members of `room`, or to every attached session when `room` is `None`:
    /// for volatile messages (presence, typing) that are worthless after a reconnect.
    /// One [`Action::TransmitMany`]. Returns the recipients.
    pub fn broadcast_volatile(
        &mut self,
        now: Instant,
        room: Option<&str>,
        envelope: &OutgoingEnvelope<'_>,
    ) -> usize {
        let prefix = self.encoder.prefix(envelope);
        let message = OutboundMessage { prefix, seq: None };
        let len = message.len();
        let mut connections = Vec::new();
        let mut consider = |sid: &SessionId, sessions: &IdMap<SessionId, Session>| {
            if let Some(cid) = sessions.get(sid).and_then(|s| s.connection) {
                connections.push(cid);
            }
        };
        match room {
            Some(room) => {
                if let Some(members) = self.rooms.members(room) {
                    members.iter().for_each(|sid| consider(sid, &self.sessions));
                }
            }
            None => self.sessions.keys().for_each(|sid| consider(sid, &self.sessions)),
        }
        connections.retain(|cid| {
            let Some(conn) = self.conns.get_mut(cid) else {
                return false;
            };
            if conn.slow || conn.queued + len > self.config.max_outbound_bytes {
                if !conn.slow {
                    conn.slow = true;
                    self.slow.push(*cid);
                }
                return false;
            }
            conn.queued += len;
            true
        });
        let n = connections.len();
        if n > 0 {
            self.metrics.messages_out += n as u64;
            self.metrics.bytes_out += (n * len) as u64;
            self.actions
                .push_back(Action::TransmitMany { connections, message });
        }
        self.finish(now);
        n
    }

    /// Adds `session` to `room`. Returns whether it was not a member yet. Refused over
    /// [`EngineConfig::max_rooms_per_session`] or [`EngineConfig::max_room_name_len`].
    pub fn join_room(&mut self, _now: Instant, session: SessionId, room: &str) -> Result<bool, ApiError> {
        let max_len = self.config.max_room_name_len;
        if room.len() > max_len {
            return Err(ApiError::RoomNameTooLong {
                len: room.len(),
                max: max_len,
            });
        }
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(ApiError::UnknownSession(session))?;
        if s.rooms.iter().any(|r| &**r == room) {
            return Ok(false);
        }
        if s.rooms.len() >= self.config.max_rooms_per_session {
            return Err(ApiError::TooManyRooms {
                max: self.config.max_rooms_per_session,
            });
        }
        let (name, _) = self.rooms.join(room, session);
        s.rooms.push(name);
        Ok(true)
    }

    /// Removes `session` from `room`. Returns whether it was a member.
    pub fn leave_room(&mut self, _now: Instant, session: SessionId, room: &str) -> Result<bool, ApiError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(ApiError::UnknownSession(session))?;
        let Some(at) = s.rooms.iter().position(|r| &**r == room) else {
            return Ok(false);
        };
        s.rooms.swap_remove(at);
        Ok(self.rooms.leave(room, session))
    }

    /// Ends `session` now: its connection (if any) is closed with 1000, it leaves every
    /// room, and [`SessionEvent::Closed`] follows.
    pub fn close_session(&mut self, now: Instant, session: SessionId) -> Result<(), ApiError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(ApiError::UnknownSession(session))?;
        if let Some(cid) = s.connection.take() {
            self.conns.remove(&cid);
            self.actions.push_back(Action::Close {
                connection: cid,
                code: CloseCode::NORMAL,
                reason: "session closed",
            });
        }
        self.end_session(session, false);
        self.finish(now);
        Ok(())
    }

    // ----- outputs -------------------------------------------------------------------

    /// The next thing to do. Call after every input until it returns `None`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None` when nothing
    /// is scheduled. Read it after draining the actions.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Hands back the `recipients` of an [`Action::TransmitBroadcast`] once sent, so
    /// the next broadcast reuses its allocation (optional; a few are kept).
    pub fn recycle(&mut self, mut recipients: Vec<(ConnectionId, u64)>) {
        if self.recipients.len() < 4 {
            recipients.clear();
            self.recipients.push(recipients);
        }
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let live = self.sessions.values().filter(|s| s.connection.is_some()).count() as u64;
        Metrics {
            connections: self.conns.len() as u64,
            sessions_live: live,
            sessions_suspended: self.sessions.len() as u64 - live,
            rooms: self.rooms.len() as u64,
            ..self.metrics
        }
    }

    /// A view of `session`, or `None` when it does not exist.
    pub fn session_info(&self, session: SessionId) -> Option<SessionInfo> {
        self.sessions.get(&session).map(SessionInfo::of)
    }

    /// The session attached to `connection`, if any.
    pub fn session_of(&self, connection: ConnectionId) -> Option<SessionId> {
        match self.conns.get(&connection)?.state {
            ConnState::Attached { session, .. } => Some(session),
            _ => None,
        }
    }

    /// Bytes handed out to `connection` and not yet reported flushed; `None` for a
    /// connection the engine does not know (closed).
    pub fn queued_bytes(&self, connection: ConnectionId) -> Option<usize> {
        self.conns.get(&connection).map(|c| c.queued)
    }

    /// Members of `room` (0 when it does not exist).
    pub fn room_len(&self, room: &str) -> usize {
        self.rooms.members(room).map_or(0, |m| m.len())
    }

    /// The sessions that exist (attached or suspended).
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
    }

    // ----- internals -----------------------------------------------------------------

    fn outbox(&mut self) -> (Outbox<'_>, &mut IdMap<SessionId, Session>, &Rooms) {
        (
            Outbox {
                conns: &mut self.conns,
                actions: &mut self.actions,
                metrics: &mut self.metrics,
                slow: &mut self.slow,
                slab: &mut self.slab,
                config: &self.config,
            },
            &mut self.sessions,
            &self.rooms,
        )
    }

    fn deliver_prefix(&mut self, now: Instant, sid: SessionId, prefix: &Bytes) -> Result<u64, ApiError> {
        let slot = self.slab.insert(prefix.clone());
        let (mut out, sessions, _) = self.outbox();
        let Some(session) = sessions.get_mut(&sid) else {
            self.slab.release(slot);
            return Err(ApiError::UnknownSession(sid));
        };
        let seq = out.deliver(session, prefix, slot, None);
        self.slab.release(slot);
        self.finish(now);
        Ok(seq)
    }

    fn fan_out_all(&mut self, prefix: &Bytes, mut pick: impl FnMut(SessionId, &UserId) -> bool) -> usize {
        let mut batch = self.recipients.pop().unwrap_or_default();
        let slot = self.slab.insert(prefix.clone());
        let (mut out, sessions, _) = self.outbox();
        let mut n = 0;
        for (&sid, session) in sessions.iter_mut() {
            if pick(sid, &session.user) {
                out.deliver(session, prefix, slot, Some(&mut batch));
                n += 1;
            }
        }
        self.slab.release(slot);
        self.emit_batch(prefix, batch);
        n
    }

    fn fan_out_room(&mut self, room: &str, prefix: &Bytes, except: Option<SessionId>) -> usize {
        let mut batch = self.recipients.pop().unwrap_or_default();
        let slot = self.slab.insert(prefix.clone());
        let (mut out, sessions, rooms) = self.outbox();
        let mut n = 0;
        if let Some(members) = rooms.members(room) {
            for sid in members {
                if Some(*sid) == except {
                    continue;
                }
                if let Some(session) = sessions.get_mut(sid) {
                    out.deliver(session, prefix, slot, Some(&mut batch));
                    n += 1;
                }
            }
        }
        self.slab.release(slot);
        self.emit_batch(prefix, batch);
        n
    }

    fn emit_batch(&mut self, prefix: &Bytes, recipients: Vec<(ConnectionId, u64)>) {
        if recipients.is_empty() {
            self.recycle(recipients);
        } else {
            self.actions.push_back(Action::TransmitBroadcast {
                prefix: prefix.clone(),
                recipients,
            });
        }
    }

    fn publish(&mut self, target: PublishTarget, except: Option<SessionId>, prefix: Bytes) {
        if self.config.publish_broadcasts {
            self.actions.push_back(Action::Publish(Publication {
                target,
                except,
                prefix,
            }));
        }
    }

    /// End of every input: close the connections that went over their outbound bound.
    fn finish(&mut self, now: Instant) {
        while let Some(cid) = self.slow.pop() {
            if self.conns.contains_key(&cid) {
                self.metrics.slow_consumer_drops += 1;
                self.close_connection(now, cid, ErrorCode::SLOW_CONSUMER.close_code(), "slow consumer");
            }
        }
    }

    fn new_session_id(&mut self) -> SessionId {
        loop {
            let id = SessionId(u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64()));
            if !self.sessions.contains_key(&id) && !self.expired.contains(id) {
                return id;
            }
        }
    }

    /// A control message outside the session stream (no `s`).
    fn send_system<T: serde::Serialize>(
        &mut self,
        cid: ConnectionId,
        event: &str,
        payload: Option<&T>,
        correlation_id: Option<&str>,
    ) {
        let mut env = OutgoingEnvelope::new(event);
        env.correlation_id = correlation_id;
        let prefix = match payload {
            Some(p) => self.encoder.prefix_with(&env, p),
            None => self.encoder.prefix(&env),
        };
        let (mut out, _, _) = self.outbox();
        out.transmit(cid, OutboundMessage { prefix, seq: None });
    }

    fn send_error(
        &mut self,
        cid: ConnectionId,
        code: u16,
        message: &str,
        reason: Option<&str>,
        correlation_id: Option<&str>,
    ) {
        self.metrics.protocol_errors += 1;
        let payload = ErrorPayload {
            code,
            message,
            reason,
        };
        self.send_system(cid, sys::ERROR, Some(&payload), correlation_id);
    }

    fn start_auth(
        &mut self,
        cid: ConnectionId,
        token: String,
        resume: Option<ResumeRequest>,
        correlation_id: Option<Box<str>>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let id = AuthId(self.next_auth);
        self.next_auth += 1;
        self.auths.insert(id, cid);
        conn.state = ConnState::Authenticating {
            auth: id,
            resume,
            correlation_id,
        };
        let info = conn.info.clone().unwrap_or_default();
        self.actions.push_back(Action::Authenticate(AuthRequest {
            id,
            connection: cid,
            token,
            info,
        }));
    }

    fn create_session(
        &mut self,
        cid: ConnectionId,
        sid: SessionId,
        user: UserId,
        anonymous: bool,
        correlation_id: Option<&str>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        conn.state = ConnState::Attached {
            session: sid,
            fresh: true,
        };
        conn.info = None;
        let token = ResumeToken::generate(&mut *self.rng);
        self.sessions.insert(
            sid,
            Session {
                user: user.clone(),
                anonymous,
                token,
                used_token: None,
                connection: Some(cid),
                next_seq: 1,
                replay: Default::default(),
                rooms: Vec::new(),
                expires_at: None,
                timer_at: None,
            },
        );
        self.metrics.sessions_created += 1;
        self.send_created(cid, sid, correlation_id);
        self.actions.push_back(Action::Session(SessionEvent::Created {
            session: sid,
            user,
            connection: cid,
        }));
        self.schedule_connection(cid);
    }

    fn send_created(&mut self, cid: ConnectionId, sid: SessionId, correlation_id: Option<&str>) {
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        let session_id = sid.to_string();
        let token = session.token.to_hex();
        let user = session.user.clone();
        let payload = SessionCreated {
            session_id: &session_id,
            user_id: user.as_str(),
            resume_token: &token,
            heartbeat_ms: duration_ms(self.config.heartbeat_interval),
            resume_window_ms: duration_ms(self.config.resume_window),
        };
        self.send_system(cid, sys::SESSION_CREATED, Some(&payload), correlation_id);
    }

    fn refuse_resume(&mut self, cid: ConnectionId, reason: NotRecoverable, correlation_id: Option<&str>) {
        self.metrics.resumes_refused += 1;
        let message = match reason {
            NotRecoverable::Unknown => "session not recoverable: unknown session",
            NotRecoverable::Expired => "session not recoverable: expired",
            NotRecoverable::Used => "session not recoverable: resume token already used",
            NotRecoverable::InvalidToken => "session not recoverable: invalid resume token",
            NotRecoverable::Foreign => "session not recoverable: session belongs to another user",
            NotRecoverable::Gap => "session not recoverable: missed messages are no longer buffered",
        };
        self.send_error(
            cid,
            ErrorCode::NOT_RECOVERABLE.0,
            message,
            Some(reason.as_str()),
            correlation_id,
        );
    }

    /// Resumes session `request.session_id` on `cid` for `user`, or says why not.
    /// `replacing` is the fresh session `cid` carries, ended on success.
    fn try_resume(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        user: &UserId,
        anonymous: bool,
        request: &ResumeRequest,
        replacing: Option<SessionId>,
    ) -> Result<(), NotRecoverable> {
        let sid = SessionId::parse(&request.session_id).ok_or(NotRecoverable::Unknown)?;
        let Some(session) = self.sessions.get(&sid) else {
            return Err(if self.expired.contains(sid) {
                NotRecoverable::Expired
            } else {
                NotRecoverable::Unknown
            });
        };
        if session.expires_at.is_some_and(|at| now >= at) {
            // Its timer has not fired yet; the window is over all the same.
            self.expire(sid);
            return Err(NotRecoverable::Expired);
        }
        let token = ResumeToken::parse(&request.resume_token).ok_or(NotRecoverable::InvalidToken)?;
        if !session.token.ct_eq(&token) {
            let used = session.used_token.is_some_and(|u| u.ct_eq(&token));
            return Err(if used {
                NotRecoverable::Used
            } else {
                NotRecoverable::InvalidToken
            });
        }
        let same_user = if session.anonymous || anonymous {
            session.anonymous && anonymous
        } else {
            session.user == *user
        };
        if !same_user {
            return Err(NotRecoverable::Foreign);
        }
        if Some(sid) == replacing {
            // Resuming the session this connection already carries: nothing to swap.
            return Err(NotRecoverable::InvalidToken);
        }
        let last_sent = session.last_sent();
        if request.last_seq > last_sent || !session.replay.covers(request.last_seq, last_sent) {
            // The client holder of a valid token moves to a new session: end this one
            // rather than let it linger unreachable.
            if let Some(old) = session.connection {
                self.close_connection_only(old, ErrorCode::TAKEN_OVER.close_code(), "session taken over");
            }
            self.end_session(sid, false);
            return Err(NotRecoverable::Gap);
        }

        // Accepted.
        if let Some(old) = session.connection.filter(|&old| old != cid) {
            self.close_connection_only(old, ErrorCode::TAKEN_OVER.close_code(), "session taken over");
        }
        if let Some(fresh) = replacing {
            self.end_session(fresh, false);
        }
        let new_token = ResumeToken::generate(&mut *self.rng);
        let Some(conn) = self.conns.get_mut(&cid) else {
            return Ok(());
        };
        conn.state = ConnState::Attached {
            session: sid,
            fresh: false,
        };
        conn.info = None;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        session.used_token = Some(session.token);
        session.token = new_token;
        session.connection = Some(cid);
        session.expires_at = None;
        session.replay.ack(&mut self.slab, request.last_seq);
        // `sys.session.restored` goes first, then the replayed messages: the client
        // switches to the resumed stream before any of its messages arrive, so it can
        // never mistake one for a message of the fresh session its handshake
        // credential may have announced.
        let replayed = session.replay.after(request.last_seq).count() as u64;
        let session_id = sid.to_string();
        let token = new_token.to_hex();
        self.send_system(
            cid,
            sys::SESSION_RESTORED,
            Some(&SessionRestored {
                session_id: &session_id,
                resume_token: &token,
                replayed,
            }),
            request.correlation_id.as_deref(),
        );
        let (mut out, sessions, _) = self.outbox();
        if let Some(session) = sessions.get(&sid) {
            for (seq, slot) in session.replay.after(request.last_seq) {
                let prefix = out.slab.prefix(slot).clone();
                out.transmit(
                    cid,
                    OutboundMessage {
                        prefix,
                        seq: Some(seq),
                    },
                );
            }
        }
        self.metrics.resumes_ok += 1;
        self.actions.push_back(Action::Session(SessionEvent::Resumed {
            session: sid,
            connection: cid,
        }));
        self.schedule_connection(cid);
        Ok(())
    }

    fn on_text(&mut self, now: Instant, cid: ConnectionId, text: String) {
        let envelope = match Envelope::decode(&text, &self.config.envelope) {
            Ok(envelope) => envelope,
            Err(err) => {
                let c = Envelope::correlation_id_of(&text, &self.config.envelope);
                self.send_error(cid, err.code(), &err.to_string(), None, c.as_deref());
                return;
            }
        };
        if sys::is_system(&envelope.event) {
            self.on_system(now, cid, &envelope);
            return;
        }
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let sid = match &mut conn.state {
            ConnState::Attached { session, fresh } => {
                *fresh = false;
                *session
            }
            _ => {
                let c = envelope.correlation_id.clone();
                self.send_error(
                    cid,
                    ErrorCode::NOT_AUTHENTICATED.0,
                    "not authenticated: wait for sys.session.created",
                    None,
                    c.as_deref(),
                );
                return;
            }
        };
        let Some(user) = self.sessions.get(&sid).map(|s| s.user.clone()) else {
            return;
        };
        // Point into the text instead of copying: the event owns the text it came in.
        let base = text.as_ptr() as usize;
        let span = |s: &std::borrow::Cow<'_, str>| match s {
            std::borrow::Cow::Borrowed(b) => {
                let start = b.as_ptr() as usize - base;
                Span::In(start..start + b.len())
            }
            std::borrow::Cow::Owned(o) => Span::Owned(o.as_str().into()),
        };
        let event = span(&envelope.event);
        let correlation_id = envelope.correlation_id.as_ref().map(span);
        let payload = envelope.payload.map(|raw| {
            let start = raw.get().as_ptr() as usize - base;
            start..start + raw.get().len()
        });
        let timestamp = envelope.timestamp;
        drop(envelope);
        self.actions.push_back(Action::Event(InboundEvent {
            session: sid,
            user,
            connection: cid,
            text,
            event,
            payload,
            correlation_id,
            timestamp,
        }));
    }

    fn on_system(&mut self, now: Instant, cid: ConnectionId, envelope: &Envelope<'_>) {
        let c = envelope.correlation_id.as_deref();
        match &*envelope.event {
            sys::PONG => {}
            sys::PING => self.send_system::<()>(cid, sys::PONG, None, c),
            sys::ACK => {
                let ack = match envelope.payload_as::<AckPayload>() {
                    Ok(ack) => ack,
                    Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
                };
                match self.session_of(cid) {
                    Some(sid) => {
                        if let Some(session) = self.sessions.get_mut(&sid) {
                            session.replay.ack(&mut self.slab, ack.seq);
                        }
                    }
                    None => {
                        self.send_error(cid, ErrorCode::NOT_AUTHENTICATED.0, "not authenticated", None, c)
                    }
                }
            }
            sys::AUTH => {
                let auth = match envelope.payload_as::<AuthPayload>() {
                    Ok(auth) => auth,
                    Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
                };
                let awaiting = self
                    .conns
                    .get(&cid)
                    .is_some_and(|conn| matches!(conn.state, ConnState::AwaitingAuth));
                if awaiting {
                    self.start_auth(cid, auth.token, None, c.map(Into::into));
                } else {
                    self.send_error(
                        cid,
                        ErrorCode::ALREADY_AUTHENTICATED.0,
                        "already authenticated or authenticating",
                        None,
                        c,
                    );
                }
            }
            sys::RECONNECT_REQUEST => {
                let payload = match envelope.payload_as::<ReconnectPayload>() {
                    Ok(p) => p,
                    Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
                };
                let request = ResumeRequest {
                    session_id: payload.session_id.into(),
                    resume_token: payload.resume_token.into(),
                    last_seq: payload.last_seq,
                    correlation_id: c.map(Into::into),
                };
                self.on_reconnect(now, cid, request, payload.token);
            }
            _ => self.send_error(
                cid,
                ErrorCode::UNKNOWN_SYSTEM_EVENT.0,
                "unknown system event",
                None,
                c,
            ),
        }
    }

    fn on_reconnect(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        request: ResumeRequest,
        credential: Option<String>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let c = request.correlation_id.clone();
        match &mut conn.state {
            ConnState::AwaitingAuth => match credential {
                Some(token) => self.start_auth(cid, token, Some(request), None),
                None => self.send_error(
                    cid,
                    ErrorCode::NOT_AUTHENTICATED.0,
                    "not authenticated: send the credential as \"token\" in sys.reconnect.request",
                    None,
                    c.as_deref(),
                ),
            },
            ConnState::Authenticating { resume, .. } => {
                if resume.is_none() {
                    *resume = Some(request);
                } else {
                    self.send_error(
                        cid,
                        ErrorCode::RESUME_IN_PROGRESS.0,
                        "a resume is already waiting for authentication",
                        None,
                        c.as_deref(),
                    );
                }
            }
            ConnState::Attached { session, fresh: true } => {
                // Authenticated in the handshake, then asked to resume: the connection's
                // user is known, so the resume is decided now and replaces the fresh
                // session on success.
                let fresh = *session;
                let Some((user, anonymous)) =
                    self.sessions.get(&fresh).map(|s| (s.user.clone(), s.anonymous))
                else {
                    return;
                };
                if let Err(reason) = self.try_resume(now, cid, &user, anonymous, &request, Some(fresh)) {
                    self.refuse_resume(cid, reason, c.as_deref());
                    // The fresh session stands in for a new one: tell the client again.
                    self.send_created(cid, fresh, None);
                }
            }
            ConnState::Attached { fresh: false, .. } => self.send_error(
                cid,
                ErrorCode::ALREADY_AUTHENTICATED.0,
                "this connection already carries a session in use",
                None,
                c.as_deref(),
            ),
        }
    }

    fn on_connection_timer(&mut self, now: Instant, cid: ConnectionId, at: Instant) {
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

    fn on_session_timer(&mut self, now: Instant, sid: SessionId, at: Instant) {
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

    fn schedule_connection(&mut self, cid: ConnectionId) {
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
    fn close_connection(&mut self, now: Instant, cid: ConnectionId, code: CloseCode, reason: &'static str) {
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
    fn close_connection_only(&mut self, cid: ConnectionId, code: CloseCode, reason: &'static str) {
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
    fn drop_connection(&mut self, now: Instant, cid: ConnectionId) {
        let Some(conn) = self.conns.remove(&cid) else {
            return;
        };
        match conn.state {
            ConnState::Authenticating { auth, .. } => {
                self.auths.remove(&auth);
            }
            ConnState::Attached { session, .. } => self.suspend(now, session),
            ConnState::AwaitingAuth => {}
        }
    }

    fn suspend(&mut self, now: Instant, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        session.connection = None;
        let expiry = now + self.config.resume_window;
        session.expires_at = Some(expiry);
        self.timers
            .schedule(TimerKey::Session(sid), expiry, &mut session.timer_at);
        self.actions
            .push_back(Action::Session(SessionEvent::Suspended { session: sid }));
    }

    fn expire(&mut self, sid: SessionId) {
        self.metrics.sessions_expired += 1;
        self.end_session(sid, true);
    }

    /// Removes a session (its connection already dealt with) from every room and the
    /// engine, and tells the application.
    fn end_session(&mut self, sid: SessionId, expired: bool) {
        let Some(mut session) = self.sessions.remove(&sid) else {
            return;
        };
        session.replay.clear(&mut self.slab);
        for room in &session.rooms {
            self.rooms.leave(room, sid);
        }
        self.expired.insert(sid, self.config.expired_memory);
        let user = session.user;
        self.actions.push_back(Action::Session(if expired {
            SessionEvent::Expired { session: sid, user }
        } else {
            SessionEvent::Closed { session: sid, user }
        }));
    }

    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Prefixes held by replay buffers, and the replay entries referring to them.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn replay_storage(&self) -> (usize, usize) {
        let entries = self.sessions.values().map(|s| s.replay.len()).sum();
        (self.slab.live(), entries)
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod size_tests {
    /// Per-session memory and per-action moves are part of the performance budget
    /// (docs/BENCHMARKS.md); growing these types should be a decision.
    #[test]
    fn type_sizes_stay_in_budget() {
        assert!(std::mem::size_of::<crate::session::Session>() <= 224);
        assert!(std::mem::size_of::<crate::connection::Conn>() <= 208);
        assert!(std::mem::size_of::<crate::Action>() <= 160);
        assert_eq!(std::mem::size_of::<crate::OutboundMessage>(), 48);
    }
}
