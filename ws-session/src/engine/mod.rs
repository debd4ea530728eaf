//! The server engine: connections in, sessions and rooms inside, actions out.
//!
//! This file holds the public API; the internals are split by concern: `fanout`
//! (outbound), `inbound`, `resume`, `lifecycle` (timers, closes, expiry).

mod fanout;
mod inbound;
mod lifecycle;
mod requests;
mod resume;
mod suspended;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand_core::CryptoRng;
use ws_proto::envelope::{sys, AnyEnvelope, Codec, Envelope, MsgPackEnvelope, OutgoingEnvelope};
use ws_proto::{CloseCode, Message};

use crate::action::Span;
use crate::connection::{Conn, ConnState, Loading, ResumeRequest};
use crate::id::IdMap;
use crate::journal::{JournalEntry, SessionRecord};
use crate::outbound::{own_msgpack_prefix, Encoder};
use crate::protocol::{
    Ack, Auth, ReconnectRequest, ReplyError, ServerRequest, SessionCreated, SessionEnd, SessionEnded,
    SessionRestored, SysError,
};
use crate::rate_limit::{LastSeen, RateLimiter};
use crate::replay::{PrefixSlab, ReplayBuffer};
use crate::request::PendingRequest;
use crate::room::Rooms;
use crate::session::{Session, SessionInfo, Tomb, Tombstones};
use crate::timer::{TimerKey, Timers};
use crate::{
    Action, ApiError, AuthId, AuthRequest, CloseReason, ConfigError, ConnectionId, ConnectionInfo,
    EncodedPrefix, EngineConfig, ErrorCode, InboundEvent, Metrics, NotRecoverable, OutboundMessage,
    Publication, PublishTarget, RequestFailure, RequestId, ResumeToken, RoomOffset, SessionEvent, SessionId,
    SharedPrefix, TokenVerifier, UserId,
};
use lifecycle::Ending;

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
    /// The suspended sessions, oldest first (bounded by `max_suspended_sessions`).
    suspensions: suspended::Suspensions,
    /// Connections that went over the outbound bound during the current input.
    slow: Vec<ConnectionId>,
    /// Recipient lists of broadcasts, handed back by the caller for reuse.
    recipients: Vec<Vec<(ConnectionId, u64)>>,
    /// The prefixes replay buffers hold, each stored once.
    slab: PrefixSlab,
    /// Server→client requests waiting for their answer.
    requests: IdMap<RequestId, PendingRequest>,
    next_request: u64,
    /// Set by [`Engine::stop_taking_messages`]: application messages are refused.
    stopping: bool,
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
            suspensions: suspended::Suspensions::default(),
            slow: Vec::new(),
            recipients: Vec::new(),
            slab: PrefixSlab::default(),
            requests: IdMap::default(),
            next_request: 1,
            stopping: false,
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
        if !self.config.allows_origin(info.origin.as_deref()) {
            self.actions.push_back(Action::Close {
                connection: cid,
                code: ErrorCode::ORIGIN_NOT_ALLOWED.close_code(),
                reason: "origin not allowed",
            });
            return cid;
        }
        let token = info.token.clone();
        let codec = info.codec;
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
                last_refusal: None,
                queued: 0,
                slow: false,
                timer_at: None,
                codec,
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
    ///
    /// Every message but `Close` takes a token of the connection's rate limit, pings
    /// and pongs included: the transport answers pings without asking, so a ping flood
    /// would otherwise be free (it ends, like any flood, in close 1008).
    pub fn handle_message(&mut self, now: Instant, connection: ConnectionId, message: Message) {
        let Some(conn) = self.conns.get_mut(&connection) else {
            return;
        };
        conn.last_inbound = now;
        let data_len = match &message {
            Message::Text(text) => Some(text.len()),
            Message::Binary(data) => Some(data.len()),
            Message::Close(_) => {
                self.drop_connection(now, connection);
                return;
            }
            _ => None, // pings and pongs: liveness, under the rate limit
        };
        if let Some(len) = data_len {
            self.metrics.messages_in += 1;
            self.metrics.bytes_in += len as u64;
        }
        let config = &self.config;
        if !conn
            .rate
            .allow(now, config.rate_limit_per_second, config.rate_limit_burst)
        {
            self.metrics.rate_limited += 1;
            // A streak of refusals ends once the client has been refused nothing for as
            // long as its bucket takes to refill; a client that keeps pushing past the
            // rate (even between accepted messages) stays in its streak and is closed.
            let forgive = std::time::Duration::from_secs(u64::from(config.rate_limit_burst))
                / config.rate_limit_per_second.max(1);
            let new_streak = conn.last_refusal.is_none_or_elapsed(now, forgive);
            conn.rate_strikes = if new_streak { 1 } else { conn.rate_strikes + 1 };
            conn.last_refusal = Some(now);
            let strikes = conn.rate_strikes;
            if strikes >= config.rate_limit_max_strikes {
                self.close_connection(now, connection, CloseCode::POLICY_VIOLATION, "rate limit");
            } else if new_streak {
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
        if data_len.is_none() {
            return;
        }
        let codec = conn.codec;
        if let ConnState::Attached { session, .. } = conn.state {
            // Any envelope on the connection that carried `sys.session.restored` shows
            // the client holds the rotated token: the previous one is now spent.
            if let Some(s) = self.sessions.get_mut(&session) {
                if !s.token_confirmed {
                    s.token_confirmed = true;
                    self.journal(session, JournalEntry::Confirmed);
                }
            }
        }
        // The codec was fixed at the upgrade: a frame of the other kind is refused,
        // the connection stays.
        match (message, codec) {
            (Message::Text(text), Codec::Json) => self.on_text(now, connection, text),
            (Message::Binary(data), Codec::MsgPack) => self.on_binary(now, connection, data),
            (Message::Binary(_), _) => self.send_error(
                connection,
                ErrorCode::BINARY_NOT_SUPPORTED.0,
                "binary messages are not supported on a JSON connection; send envelopes as text",
                None,
                None,
            ),
            _ => self.send_error(
                connection,
                ErrorCode::TEXT_NOT_SUPPORTED.0,
                "text messages are not supported on a MessagePack connection; send envelopes as binary",
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
                TimerKey::Request(id) => self.on_request_timer(now, id),
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
                Some(request) => self.resume_or_fallback(now, cid, user, false, *request, None, true),
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
        let (prefix, msgpack) = (&publication.prefix, publication.msgpack.as_ref());
        if publication.volatile {
            self.fan_out_volatile_to(&publication.target, prefix, msgpack, publication.except);
            self.finish(now);
            return;
        }
        match &publication.target {
            PublishTarget::All => {
                self.fan_out_all(prefix, msgpack, |sid, _| Some(sid) != publication.except);
            }
            PublishTarget::Room(room) => {
                self.fan_out_room(room, prefix, msgpack, publication.except, publication.offset);
            }
            PublishTarget::User(user) => {
                self.fan_out_all(prefix, msgpack, |sid, u| {
                    u == user && Some(sid) != publication.except
                });
            }
            PublishTarget::Session(session) => {
                if Some(*session) != publication.except && self.sessions.contains_key(session) {
                    // Cannot fail: the session is here.
                    let _ = self.deliver_prefix(now, *session, prefix, msgpack);
                }
            }
        }
        self.finish(now);
    }

    /// Call with the backend's room cursor (room history; ws-driver asks its
    /// `PubSub::room_cursor`): `room`'s last offset before this node began to receive it, asked when
    /// the room's first member here joined ([`Action::RoomOccupied`]). Members of the
    /// room without a position start there (journaled), so that what the room publishes
    /// next is theirs even if this node dies before the first of it arrives; members
    /// with one, and a room that already has a cursor, are left as they are.
    pub fn handle_room_cursor(&mut self, now: Instant, room: &str, offset: RoomOffset) {
        if !self.config.room_history || self.rooms.cursor(room).is_some() {
            return;
        }
        let Some(name) = self.rooms.name(room) else {
            return;
        };
        self.rooms.advance(room, offset);
        let members: Vec<SessionId> = self
            .rooms
            .members(room)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        for sid in members {
            let Some(session) = self.sessions.get_mut(&sid) else {
                continue;
            };
            if session.room_offset(room).is_some() {
                continue;
            }
            session.set_room_offset(&name, offset);
            self.journal(
                sid,
                JournalEntry::RoomPosition {
                    room: name.clone(),
                    offset,
                },
            );
        }
        self.finish(now);
    }

    // ----- application commands ----------------------------------------------------

    /// Sends `envelope` to `session` as the next message of its stream (its `s` is
    /// set by the engine and returned). Kept for replay until acknowledged; sent now if
    /// the session is attached, on resume otherwise.
    ///
    /// Every send and broadcast takes a payload given in both codecs
    /// ([`Payload::Both`](ws_proto::envelope::Payload::Both)): MessagePack connections
    /// then get its MessagePack form (binary data as `bin`), made once per message,
    /// which also travels to other nodes ([`Publication::msgpack`]) and stays with the
    /// message for replays on this node.
    pub fn send(
        &mut self,
        now: Instant,
        session: SessionId,
        envelope: &OutgoingEnvelope<'_>,
    ) -> Result<u64, ApiError> {
        let Some(s) = self.sessions.get(&session) else {
            return Err(ApiError::UnknownSession(session));
        };
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let slot = self.slab.insert(prefix);
        // Attached to a MessagePack connection, or given in MessagePack: its binary
        // form straight from the envelope, rather than from the JSON prefix just made.
        let codec = s.connection.and_then(|cid| self.conns.get(&cid)).map(|c| c.codec);
        if codec == Some(Codec::MsgPack) || envelope.payload.as_msgpack().is_some() {
            self.slab.set_msgpack(slot, envelope);
        }
        self.deliver_slot(now, session, slot)
    }

    /// Sends `prefix` (an envelope encoded outside the engine, its `c` included when
    /// it has one) to `session` as the next message of its stream: [`send`](Self::send)
    /// of the envelope it was made from, byte for byte. A MessagePack connection gets
    /// it transcoded from the JSON.
    pub fn send_encoded(
        &mut self,
        now: Instant,
        session: SessionId,
        prefix: &EncodedPrefix,
    ) -> Result<u64, ApiError> {
        let slot = self.slab.insert(prefix.as_bytes().clone());
        self.deliver_slot(now, session, slot)
    }

    /// Sends `shared` (an event and payload encoded once for many sessions) to
    /// `session` as the next message of its stream, with `correlation_id` as its `c`
    /// when given: [`reply`](Self::reply) or [`send`](Self::send) of the same envelope,
    /// byte for byte, but the replay buffer holds `shared`'s bytes by reference and
    /// this message's own `c` beside them instead of a copy of the whole envelope. A
    /// MessagePack connection gets the envelope transcoded from the JSON.
    ///
    /// Call it instead of `reply` when many sessions get the same large payload in
    /// their replies: the room's member list in each of 10,000 join replies held
    /// 10,000 copies of the list until each client acknowledged its own.
    pub fn send_shared(
        &mut self,
        now: Instant,
        session: SessionId,
        shared: &SharedPrefix,
        correlation_id: Option<&str>,
    ) -> Result<u64, ApiError> {
        let tail = match correlation_id {
            Some(c) => self.encoder.correlation_tail(&mut self.slab.pool, c),
            None => Bytes::new(),
        };
        let slot = self.slab.insert_parts(shared.as_bytes().clone(), tail);
        self.deliver_slot(now, session, slot)
    }

    /// [`send`](Self::send) with the payload given in MessagePack too (`msgpack`: the
    /// bytes of one value, e.g. from `rmp-serde`), so that binary data stays `bin` for
    /// a session on a MessagePack connection. `envelope`'s JSON payload is what JSON
    /// connections and the journal get; the two must say the same thing. The same as
    /// `send` with [`Payload::Both`](ws_proto::envelope::Payload::Both); `msgpack` is
    /// ignored when `envelope` has no payload.
    pub fn send_with_msgpack(
        &mut self,
        now: Instant,
        session: SessionId,
        envelope: &OutgoingEnvelope<'_>,
        msgpack: &[u8],
    ) -> Result<u64, ApiError> {
        match envelope.payload.as_json() {
            Some(json) => {
                let both = OutgoingEnvelope {
                    payload: ws_proto::envelope::Payload::Both { json, msgpack },
                    ..*envelope
                };
                self.send(now, session, &both)
            }
            None => self.send(now, session, envelope),
        }
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
            &mut self.slab.pool,
            &env,
            &SysError {
                code,
                message: message.into(),
                reason: None,
            },
        );
        self.deliver_prefix(now, session, &prefix, None)
    }

    /// Sends `envelope` to every session (serialized once). Published to other nodes
    /// when [`EngineConfig::publish_broadcasts`] is on. Returns the local recipients.
    pub fn broadcast(&mut self, now: Instant, envelope: &OutgoingEnvelope<'_>) -> usize {
        self.broadcast_except(now, envelope, None)
    }

    /// Sends `envelope` to every session but `except` (serialized once). Published to
    /// other nodes, with the same exception, when configured. Returns the local
    /// recipients.
    pub fn broadcast_except(
        &mut self,
        now: Instant,
        envelope: &OutgoingEnvelope<'_>,
        except: Option<SessionId>,
    ) -> usize {
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, true);
        let n = self.fan_out_all(&prefix, msgpack.as_ref(), |sid, _| Some(sid) != except);
        self.publish(PublishTarget::All, except, prefix, msgpack);
        self.finish(now);
        n
    }

    /// Sends `envelope` to every session of `user` but `except`, each in its own stream
    /// (serialized once). Published to other nodes, for their sessions of `user`, when
    /// configured. Returns the local recipients.
    pub fn send_to_user(
        &mut self,
        now: Instant,
        user: &UserId,
        envelope: &OutgoingEnvelope<'_>,
        except: Option<SessionId>,
    ) -> usize {
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, true);
        let n = self.fan_out_all(&prefix, msgpack.as_ref(), |sid, u| {
            u == user && Some(sid) != except
        });
        self.publish(PublishTarget::User(user.clone()), except, prefix, msgpack);
        self.finish(now);
        n
    }

    /// Sends `envelope` to `session` wherever it is: like [`send`](Self::send) when this
    /// node holds it (`Ok(Some(s))`); otherwise, when publishing across nodes, published
    /// for the node that holds it (`Ok(None)`: delivered there if it exists).
    /// [`ApiError::UnknownSession`] when the session is not here and nothing is published.
    pub fn send_anywhere(
        &mut self,
        now: Instant,
        session: SessionId,
        envelope: &OutgoingEnvelope<'_>,
    ) -> Result<Option<u64>, ApiError> {
        if self.sessions.contains_key(&session) {
            return self.send(now, session, envelope).map(Some);
        }
        if !self.config.publish_broadcasts {
            return Err(ApiError::UnknownSession(session));
        }
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, true);
        self.publish(PublishTarget::Session(session), None, prefix, msgpack);
        self.finish(now);
        Ok(None)
    }

    /// Sends `envelope` to the sessions `pick` chooses (local only: a predicate cannot
    /// cross nodes). Returns the recipients.
    pub fn broadcast_filter(
        &mut self,
        now: Instant,
        envelope: &OutgoingEnvelope<'_>,
        pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, true);
        let n = self.fan_out_all(&prefix, msgpack.as_ref(), pick);
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
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, true);
        let n = if self.config.publish_broadcasts && self.config.room_history {
            // The backend orders it among the room's publications and hands it back to
            // this node too, with its offset: members here get it then.
            self.rooms
                .members(room)
                .map_or(0, |m| m.iter().filter(|sid| Some(**sid) != except).count())
        } else {
            self.fan_out_room(room, &prefix, msgpack.as_ref(), except, None)
        };
        if self.config.publish_broadcasts {
            self.publish(PublishTarget::Room(Arc::from(room)), except, prefix, msgpack);
        }
        self.finish(now);
        n
    }

    /// Sends `envelope` once, outside the session streams (no `s`, not replayed), to the
    /// attached members of `room`, or to every attached session when `room` is `None`:
    /// for volatile messages (presence, typing) that are worthless after a reconnect.
    /// One [`Action::TransmitMany`]; published to other nodes (as a volatile
    /// [`Publication`]) when configured. Returns the local recipients.
    pub fn broadcast_volatile(
        &mut self,
        now: Instant,
        room: Option<&str>,
        envelope: &OutgoingEnvelope<'_>,
    ) -> usize {
        let target = room.map_or(PublishTarget::All, |room| PublishTarget::Room(Arc::from(room)));
        self.send_volatile(now, target, envelope, None)
    }

    /// Sends `envelope` outside the session streams to the attached sessions of
    /// `target` but `except`, on this node and (published as a volatile
    /// [`Publication`], when configured) on the others. Returns the local recipients.
    pub fn send_volatile(
        &mut self,
        now: Instant,
        target: PublishTarget,
        envelope: &OutgoingEnvelope<'_>,
        except: Option<SessionId>,
    ) -> usize {
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, false);
        let n = self.fan_out_volatile_to(&target, &prefix, msgpack.as_ref(), except);
        if self.config.publish_broadcasts {
            let publication = Publication::new_volatile(target, except, prefix).with_msgpack(msgpack);
            self.actions.push_back(Action::Publish(publication));
        }
        self.finish(now);
        n
    }

    /// [`broadcast_volatile`](Self::broadcast_volatile) to the sessions of `room` (or
    /// all) that `pick` chooses, on this node only (a filter does not travel).
    pub fn broadcast_volatile_filter(
        &mut self,
        now: Instant,
        room: Option<&str>,
        envelope: &OutgoingEnvelope<'_>,
        pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let prefix = self.encoder.prefix(&mut self.slab.pool, envelope);
        let msgpack = own_msgpack_prefix(envelope, false);
        let n = self.fan_out_volatile(room, &prefix, msgpack.as_ref(), pick);
        self.finish(now);
        n
    }

    /// The local part of a volatile send to `target`.
    fn fan_out_volatile_to(
        &mut self,
        target: &PublishTarget,
        prefix: &Bytes,
        msgpack: Option<&Bytes>,
        except: Option<SessionId>,
    ) -> usize {
        let keep = |sid: SessionId| Some(sid) != except;
        match target {
            PublishTarget::All => self.fan_out_volatile(None, prefix, msgpack, |sid, _| keep(sid)),
            PublishTarget::Room(room) => {
                self.fan_out_volatile(Some(room), prefix, msgpack, |sid, _| keep(sid))
            }
            PublishTarget::User(user) => {
                self.fan_out_volatile(None, prefix, msgpack, |sid, u| u == user && keep(sid))
            }
            PublishTarget::Session(session) => {
                self.fan_out_volatile(None, prefix, msgpack, |sid, _| sid == *session && keep(sid))
            }
        }
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
        let occupied = self.rooms.members(room).is_none();
        let (name, _) = self.rooms.join(room, session);
        s.rooms.push(name.clone());
        if occupied && self.config.publish_broadcasts {
            self.actions.push_back(Action::RoomOccupied(name.clone()));
        }
        // What the room published before the join is not the session's: it starts
        // after the last offset handled here (none known: from the first that comes).
        let cursor = self.rooms.cursor(&name);
        if let Some(offset) = cursor {
            s.set_room_offset(&name, offset);
        }
        self.journal(session, JournalEntry::Joined(name.clone()));
        if let Some(offset) = cursor {
            self.journal(session, JournalEntry::RoomPosition { room: name, offset });
        }
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
        let name = s.rooms.swap_remove(at);
        s.forget_room_offset(&name);
        self.journal(session, JournalEntry::Left(name));
        Ok(self.leave_room_of(room, session))
    }

    /// Ends `session` on purpose, now. If it is attached, its client is told
    /// (`sys.session.ended` with `reason`, then close 4115
    /// [`ErrorCode::SESSION_ENDED`]) and does not resume or reconnect; a suspended
    /// session just ends (a later resume is refused with reason `ended`). It leaves
    /// every room, nothing is kept for a resume, its waiting requests fail
    /// ([`RequestFailure::SessionEnded`]), and
    /// [`SessionEvent::Closed`] follows with [`CloseReason::ByServer`].
    pub fn end_session(&mut self, now: Instant, session: SessionId, reason: &str) -> Result<(), ApiError> {
        let s = self
            .sessions
            .get(&session)
            .ok_or(ApiError::UnknownSession(session))?;
        if let Some(cid) = s.connection {
            let session_id = session.to_string();
            let payload = SessionEnded {
                session_id: session_id.as_str().into(),
                reason: reason.into(),
            };
            self.send_system(cid, sys::SESSION_ENDED, Some(&payload), None);
            self.close_connection_only(cid, ErrorCode::SESSION_ENDED.close_code(), "session ended");
        }
        self.remove_session(session, Ending::Closed(CloseReason::ByServer));
        self.finish(now);
        Ok(())
    }

    /// The former name of [`end_session`](Self::end_session) with an empty reason. It
    /// used to close with 1000, after which clients reconnected with a new session;
    /// it now ends the session for its client too (4115).
    #[deprecated(note = "use end_session, which says why and tells the client not to come back")]
    pub fn close_session(&mut self, now: Instant, session: SessionId) -> Result<(), ApiError> {
        self.end_session(now, session, "")
    }

    /// Call with the shared store's answer to [`Action::LoadSession`]: the session's
    /// record, or `None` when the store has none, failed or did not answer in time. The
    /// parked resume is then decided exactly as a local one (token, user, gap), on the
    /// session rebuilt from the record; refused, it is answered as today (`sys.error`
    /// 4106, then a new session) and the rebuilt session is dropped without a trace.
    /// Answers for a connection that is gone or no longer waits for `session` are
    /// ignored.
    ///
    /// `history` (with [`EngineConfig::room_history`]): the publications of the
    /// record's rooms after the offsets in
    /// [`SessionRecord::room_offsets`](crate::SessionRecord::room_offsets) — what the
    /// rooms published while nobody held the session, or while it moved. Each one the
    /// session does not have yet is appended to its stream (in offset order) before the
    /// resume is decided, so the replay carries it. `None` means the history could not
    /// be read in full (the backend failed, or no longer reaches back that far): a
    /// session with a room position is then refused as `gap`, as a session that missed
    /// more than its replay buffer holds. Without room history pass `Some(vec![])`.
    pub fn handle_session_loaded(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        session: SessionId,
        record: Option<SessionRecord>,
        history: Option<Vec<Publication>>,
    ) {
        self.on_session_loaded(now, connection, session, record, history);
        self.finish(now);
    }

    /// Call when a graceful stop that hands the sessions over begins, once every
    /// [`Action::Event`] taken so far is with its handler: from now on each
    /// application message is answered with `sys.error` 4116
    /// ([`ErrorCode::SESSION_MOVED`], "not processed", its `c` echoed) instead of
    /// becoming an event, and the client sends it again once resumed elsewhere. The
    /// refusal is queued on its connection in order with everything else, so it
    /// reaches the client before that connection's close — a refusal made later, by
    /// the caller, could find the connection closed by the client's answer to
    /// [`begin_handover`](Self::begin_handover) in between, and the request would be
    /// neither answered nor refused. System events are still handled.
    pub fn stop_taking_messages(&mut self) {
        self.stopping = true;
    }

    /// Tells every attached client that this node hands its sessions over
    /// (`sys.handover`): clients that know it stop sending, close with 4116 and resume
    /// elsewhere at once. Call when a graceful stop with a session store has stopped
    /// taking messages ([`stop_taking_messages`](Self::stop_taking_messages)) and the
    /// ones it took are answered; close the connections that have not closed after a
    /// grace period.
    pub fn begin_handover(&mut self, now: Instant) {
        self.stopping = true;
        let attached: Vec<ConnectionId> = self.sessions.values().filter_map(|s| s.connection).collect();
        for cid in attached {
            self.send_system::<()>(cid, sys::HANDOVER, None, None);
        }
        self.finish(now);
    }

    /// Call when another node took `session` over through the shared store: this
    /// engine lets it go without ending it. An attached connection is closed with 4116
    /// ([`ErrorCode::SESSION_MOVED`]; its client reconnects and resumes, on whichever
    /// node), the session leaves this node's rooms, its waiting requests fail, nothing
    /// is journaled and [`SessionEvent::Moved`] is the only event. A later resume here
    /// goes to the store again. Returns whether the engine held it.
    pub fn release_session(&mut self, now: Instant, session: SessionId) -> bool {
        let Some(cid) = self.sessions.get(&session).map(|s| s.connection) else {
            return false;
        };
        if let Some(cid) = cid {
            self.close_connection_only(cid, ErrorCode::SESSION_MOVED.close_code(), "session moved");
        }
        self.forget_session(session);
        self.metrics.sessions_moved += 1;
        self.actions
            .push_back(Action::Session(SessionEvent::Moved { session }));
        self.finish(now);
        true
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
        let (mut live, mut replay_messages, mut replay_bytes) = (0, 0, 0);
        for session in self.sessions.values() {
            live += u64::from(session.connection.is_some());
            replay_messages += session.replay.len() as u64;
            replay_bytes += session.replay.bytes() as u64;
        }
        Metrics {
            connections: self.conns.len() as u64,
            sessions_live: live,
            sessions_suspended: self.sessions.len() as u64 - live,
            rooms: self.rooms.len() as u64,
            replay_messages,
            replay_bytes,
            ..self.metrics
        }
    }

    /// A view of `session`, or `None` when it does not exist.
    pub fn session_info(&self, session: SessionId) -> Option<SessionInfo> {
        self.sessions.get(&session).map(SessionInfo::of)
    }

    /// What `connection`'s upgrade request said (path, query, headers, peer), while the
    /// engine knows the connection.
    pub fn connection_info(&self, connection: ConnectionId) -> Option<Arc<ConnectionInfo>> {
        self.conns.get(&connection)?.info.clone()
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

    /// The sessions in `room` (attached or suspended), in no particular order.
    pub fn room_members(&self, room: &str) -> impl Iterator<Item = SessionId> + '_ {
        self.rooms
            .members(room)
            .into_iter()
            .flat_map(|members| members.iter().copied())
    }

    /// The sessions that exist (attached or suspended).
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
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
        // 224 until room history: one word for the (boxed) room positions.
        assert!(std::mem::size_of::<crate::session::Session>() <= 232);
        assert!(std::mem::size_of::<crate::connection::Conn>() <= 208);
        // 160 until the journal's messages carried their MessagePack form: the
        // journal entry grew from 72 to 80 bytes, and the action's discriminant no
        // longer fits beside it in the niche of the largest variants (publications and
        // inbound events, 160). Accepted: 16 bytes more per action moved, against a
        // second journal entry (one more action) per message sent in both codecs.
        assert!(std::mem::size_of::<crate::Action>() <= 176);
        assert!(std::mem::size_of::<crate::JournalEntry>() <= 80);
        // 48 until the codec joined the message (one byte, padded to eight); 56 until
        // the tail of a reply made of a shared prefix (a `Bytes`, empty but for those):
        // 32 bytes more per message queued, against a copy of a shared payload per
        // recipient held until acknowledged (46 KB each in a 10,000-member join).
        assert_eq!(std::mem::size_of::<crate::OutboundMessage>(), 88);
    }
}
