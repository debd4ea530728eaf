//! The client engine: one logical connection to a tether server that outlives its
//! transports.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use serde::Serialize;
use ws_proto::envelope::{sys, validate_event_name, Envelope, OutgoingEnvelope, OwnedEnvelope, Payload};
use ws_proto::CloseCode;

use super::action::{
    ClientAction, ClientError, IncomingRequest, QueryError, QueryId, ServerError, SessionDetails,
    SessionOutcome,
};
use super::config::{AuthMode, ClientConfig, IdleTimeout};
use super::state::{Disconnect, SessionEnd, State};
use crate::protocol::{
    Ack, Auth, ReconnectRequest, ReplyError, ServerRequest, SessionCreated, SessionEnd as SessionEndPayload,
    SessionEnded, SessionRestored, SysError,
};
use crate::ErrorCode;

/// The transport as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// None: waiting to reconnect, or stopped.
    None,
    /// `Connect` was emitted; not open yet.
    Opening,
    /// Open; `established` says whether a session is up on it.
    Open,
    /// `CloseTransport` was emitted; waiting for `handle_disconnected`.
    Closing,
}

/// The session the client holds (to resume it).
#[derive(Debug, Clone)]
struct Held {
    session_id: String,
    user_id: String,
    resume_token: String,
    heartbeat: Option<Duration>,
}

/// A resume request in flight on the current transport.
#[derive(Debug, Clone)]
struct Resume {
    correlation_id: String,
    from_seq: u64,
    /// The reason of the `sys.error` 4106 that refused it, once received.
    refused: Option<String>,
}

#[derive(Debug)]
struct Pending {
    correlation_id: String,
    deadline: Instant,
    /// The session it was written on; `None` while it waits in the queue.
    sent_on: Option<String>,
    /// The envelope, to send again if a stopping node refuses it (4116, not processed).
    text: String,
    /// Its binary form, when the payload was given in MessagePack too.
    msgpack: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Queued {
    text: String,
    /// The same envelope as MessagePack, when the payload was given in both codecs.
    msgpack: Option<Vec<u8>>,
    query: Option<QueryId>,
    /// An answer to a server request: written only on this session.
    for_session: Option<String>,
    /// A query a stopping node refused: it goes out again first, in the order refused.
    resend: bool,
}

/// The Sans-IO client engine of tether protocol v1.
///
/// It works on envelopes (text in, text out) and on the lifecycle of transports; the
/// driver opens transports, moves text, and keeps time. No clock, no randomness of
/// its own (jitter comes from the generator given to [`ClientEngine::new`]), no I/O.
///
/// After every call: drain [`poll_action`](Self::poll_action) until `None`, then arm
/// a timer for [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout) when it passes (early or spurious calls
/// are harmless).
///
/// Transport protocol with the driver: on [`ClientAction::Connect`] open a transport
/// and report [`handle_connected`](Self::handle_connected) or
/// [`handle_disconnected`](Self::handle_disconnected); while it is open report each
/// text message with [`handle_message`](Self::handle_message) and its end with
/// `handle_disconnected`; on [`ClientAction::CloseTransport`] close it (or abandon
/// the attempt) and report `handle_disconnected` once, nothing else from it.
///
/// Delivery: messages of the session stream (those with `s`) reach the user once
/// each, in order, across resumes; duplicates (`s` already seen) are dropped.
/// What the user sends is written once, at most: a message written on a transport
/// that then drops is not written again (the server does not deduplicate).
pub struct ClientEngine {
    config: ClientConfig,
    rng: Box<dyn RngCore + Send>,
    state: State,
    transport: Transport,
    /// A session is up on the current transport.
    established: bool,
    /// `close` was called, or the client gave up: no more reconnects.
    stopped: bool,
    /// The close the user asked for, reported in `Disconnected` when the peer's
    /// answer says nothing better.
    user_close: Option<(CloseCode, String)>,
    /// Authentication failed or the origin was refused: do not retry.
    fatal: Option<String>,
    /// The session was ended on purpose (by the server, or by our `close`).
    session_end: Option<SessionEnd>,
    ever_established: bool,
    held: Option<Held>,
    resume: Option<Resume>,
    last_seq: u64,
    last_acked: u64,
    attempt: u32,
    next_correlation: u64,
    next_query: u64,
    queue: VecDeque<Queued>,
    pending: BTreeMap<QueryId, Pending>,
    query_deadlines: BTreeSet<(Instant, QueryId)>,
    reconnect_at: Option<Instant>,
    connect_deadline: Option<Instant>,
    ack_at: Option<Instant>,
    idle_deadline: Option<Instant>,
    actions: VecDeque<ClientAction>,
}

impl std::fmt::Debug for ClientEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEngine")
            .field("state", &self.state)
            .field("transport", &self.transport)
            .field("established", &self.established)
            .field("last_seq", &self.last_seq)
            .field("queued", &self.queue.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ClientEngine {
    /// A client that starts connecting at once: the first actions are
    /// `StateChanged(Connecting)` and `Connect`. `rng` is used for backoff jitter
    /// only; production drivers pass an OS-seeded generator, tests a seeded one.
    pub fn new(now: Instant, config: ClientConfig, rng: impl RngCore + Send + 'static) -> Self {
        let mut engine = Self {
            config,
            rng: Box::new(rng),
            state: State::Connecting,
            transport: Transport::None,
            established: false,
            stopped: false,
            user_close: None,
            fatal: None,
            session_end: None,
            ever_established: false,
            held: None,
            resume: None,
            last_seq: 0,
            last_acked: 0,
            attempt: 0,
            next_correlation: 0,
            next_query: 0,
            queue: VecDeque::new(),
            pending: BTreeMap::new(),
            query_deadlines: BTreeSet::new(),
            reconnect_at: None,
            connect_deadline: None,
            ack_at: None,
            idle_deadline: None,
            actions: VecDeque::new(),
        };
        engine
            .actions
            .push_back(ClientAction::StateChanged(State::Connecting));
        engine.open(now);
        engine
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether a session is up: sends go out at once rather than into the queue.
    pub fn is_online(&self) -> bool {
        self.established
    }

    /// The id of the session held (current, or the one a reconnect will resume).
    pub fn session_id(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.session_id.as_str())
    }

    /// The user of the session held.
    pub fn user_id(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.user_id.as_str())
    }

    /// The highest `s` received in the current session.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many messages wait in the offline queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Replaces the credential used from the next `sys.auth` / resume on.
    pub fn set_credential(&mut self, credential: Option<String>) {
        self.config.credential = credential;
    }

    /// The next action; drain until `None` after every call.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.reconnect_at,
            self.connect_deadline,
            self.ack_at,
            self.idle_deadline,
            self.query_deadlines.first().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ------------------------------------------------------------------ commands

    /// Sends an application event. Online it is written at once; otherwise it waits in
    /// the offline queue (policy: [`ClientConfig::queue_limit`]) and is written once
    /// when a session is up, restored or new.
    pub fn send(&mut self, _now: Instant, event: &str, payload: Payload<'_>) -> Result<(), ClientError> {
        self.check_event(event)?;
        let envelope = OutgoingEnvelope::new(event).with_payload(payload);
        self.submit(Queued {
            text: encode(envelope),
            msgpack: binary_form(&envelope),
            query: None,
            for_session: None,
            resend: false,
        })
    }

    /// Answers a server request ([`ClientAction::Request`]): `Ok(payload)` becomes
    /// `sys.reply`, `Err((code, message))` `sys.reply.error` (use codes from 4200; 4150
    /// means "no handler"). Written at once when the request's session is up; while
    /// offline it waits (in the offline queue) for that session to be restored, and is
    /// dropped if another session comes up instead (the server has failed the request
    /// with the old session). `Err(Closed)` once the client is closed.
    pub fn answer(
        &mut self,
        _now: Instant,
        request: &IncomingRequest,
        result: Result<Payload<'_>, (u16, &str)>,
    ) -> Result<(), ClientError> {
        if self.stopped {
            return Err(ClientError::Closed);
        }
        if self.session_id() != Some(request.session_id.as_str()) {
            return Ok(()); // its session is gone, and the request with it
        }
        let text = match result {
            Ok(payload) => encode(
                OutgoingEnvelope::new(sys::REPLY)
                    .with_payload(payload)
                    .with_correlation_id(&request.id),
            ),
            Err((code, message)) => encode_serialize(
                OutgoingEnvelope::new(sys::REPLY_ERROR).with_correlation_id(&request.id),
                &ReplyError {
                    code,
                    message: message.into(),
                },
            ),
        };
        self.submit(Queued {
            text,
            msgpack: None,
            query: None,
            for_session: Some(request.session_id.clone()),
            resend: false,
        })
    }

    /// Sends a request carrying a fresh correlation id; the answer comes as
    /// [`ClientAction::QueryResult`]: the reply, the server's `sys.error`, a timeout
    /// after `timeout` (default [`ClientConfig::query_timeout`], counted from this
    /// call), or [`QueryError::NotRestored`] when the session it was sent on is lost.
    pub fn query(
        &mut self,
        now: Instant,
        event: &str,
        payload: Payload<'_>,
        timeout: Option<Duration>,
    ) -> Result<QueryId, ClientError> {
        self.check_event(event)?;
        self.next_query += 1;
        let id = QueryId(self.next_query);
        let correlation_id = format!("q{}", id.0);
        let envelope = OutgoingEnvelope::new(event)
            .with_payload(payload)
            .with_correlation_id(&correlation_id);
        let (text, msgpack) = (encode(envelope), binary_form(&envelope));
        self.submit(Queued {
            text: text.clone(),
            msgpack: msgpack.clone(),
            query: Some(id),
            for_session: None,
            resend: false,
        })?;
        let deadline = now + timeout.unwrap_or(self.config.query_timeout);
        let sent_on = self.pending_sent_on(id);
        self.pending.insert(
            id,
            Pending {
                correlation_id,
                deadline,
                sent_on,
                text,
                msgpack,
            },
        );
        self.query_deadlines.insert((deadline, id));
        Ok(id)
    }

    /// Closes for good: on a live session, first sends `sys.session.end` (with
    /// `reason`), so the server ends the session now rather than keep it for the
    /// resume window ([`Disconnect::session_end`] is then [`SessionEnd::ByClient`]);
    /// runs the closing handshake with `code` and `reason` when a transport is open
    /// (state `Disconnecting`, then `Disconnected` once it is gone), stops
    /// reconnecting, fails pending queries with [`QueryError::Closed`] and discards the
    /// offline queue. Closed while offline, the session is left to expire on the
    /// server. A second call does nothing.
    pub fn close(&mut self, _now: Instant, code: CloseCode, reason: &str) -> Result<(), ClientError> {
        if !code.is_sendable() {
            return Err(ClientError::InvalidCloseCode(code));
        }
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.user_close = Some((code, reason.to_owned()));
        self.reconnect_at = None;
        self.connect_deadline = None;
        self.ack_at = None;
        self.idle_deadline = None;
        self.fail_all(QueryError::Closed);
        self.queue.clear();
        match self.transport {
            Transport::Opening | Transport::Open => {
                if self.established {
                    // No `sys.ack` first: the session ends, nothing is kept to trim.
                    self.ack_at = None;
                    let text = encode_serialize(
                        OutgoingEnvelope::new(sys::SESSION_END),
                        &SessionEndPayload {
                            reason: reason.into(),
                        },
                    );
                    self.actions.push_back(ClientAction::Transmit(text));
                    self.session_end = Some(SessionEnd::ByClient);
                    self.held = None;
                }
                self.transport = Transport::Closing;
                self.established = false;
                self.actions.push_back(ClientAction::CloseTransport {
                    code,
                    reason: reason.to_owned(),
                });
                self.set_state(State::Disconnecting);
            }
            Transport::Closing => self.set_state(State::Disconnecting),
            Transport::None => {
                self.set_state(State::Disconnected(Disconnect::closed(code, reason)));
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ inputs

    /// The transport asked for by `Connect` is open (WebSocket handshake done).
    pub fn handle_connected(&mut self, now: Instant) {
        if self.transport != Transport::Opening {
            return;
        }
        self.transport = Transport::Open;
        self.established = false;
        self.arm_idle(now);
        if let Some(held) = &self.held {
            self.next_correlation += 1;
            let correlation_id = format!("r{}", self.next_correlation);
            let token = match self.config.auth_mode {
                AuthMode::Message => self.config.credential.as_deref(),
                AuthMode::Handshake => None,
            };
            let payload = ReconnectRequest {
                session_id: held.session_id.as_str().into(),
                resume_token: held.resume_token.as_str().into(),
                last_seq: self.last_seq,
                token: token.map(Into::into),
            };
            let text = encode_serialize(
                OutgoingEnvelope::new(sys::RECONNECT_REQUEST).with_correlation_id(&correlation_id),
                &payload,
            );
            self.actions.push_back(ClientAction::Transmit(text));
            self.resume = Some(Resume {
                correlation_id,
                from_seq: self.last_seq,
                refused: None,
            });
        } else if let (AuthMode::Message, Some(token)) = (self.config.auth_mode, &self.config.credential) {
            self.next_correlation += 1;
            let correlation_id = format!("a{}", self.next_correlation);
            let text = encode_serialize(
                OutgoingEnvelope::new(sys::AUTH).with_correlation_id(&correlation_id),
                &Auth { token: token.into() },
            );
            self.actions.push_back(ClientAction::Transmit(text));
        }
    }

    /// A text message arrived on the open transport. Envelopes the engine cannot
    /// decode are ignored.
    pub fn handle_message(&mut self, now: Instant, text: &str) {
        if self.transport != Transport::Open {
            return;
        }
        let Ok(envelope) = Envelope::decode(text, &self.config.proto) else {
            return;
        };
        self.arm_idle(now);
        if let Some(seq) = envelope.seq {
            if seq <= self.last_seq {
                return; // already delivered
            }
            self.last_seq = seq;
            self.schedule_ack(now);
        }
        if sys::is_system(&envelope.event) {
            self.handle_system(now, envelope);
            return;
        }
        let owned = envelope.into_owned();
        if let Some(id) = self.query_for(owned.correlation_id.as_deref()) {
            self.resolve(id, Ok(owned));
        } else {
            self.actions.push_back(ClientAction::Event(owned));
        }
    }

    /// The transport ended (closed, failed, or could not be opened). `info` is what
    /// the driver knows: the close code and reason, or the error.
    pub fn handle_disconnected(&mut self, now: Instant, info: Disconnect) {
        if self.transport == Transport::None {
            return;
        }
        self.transport = Transport::None;
        self.established = false;
        self.resume = None;
        self.connect_deadline = None;
        self.ack_at = None;
        self.idle_deadline = None;
        if let Some(code) = info.code {
            if (code.0 == ErrorCode::AUTH_FAILED.0 || code.0 == ErrorCode::ORIGIN_NOT_ALLOWED.0)
                && self.fatal.is_none()
            {
                self.fatal = Some(format!("refused by the server (close code {code})"));
            }
            if code.0 == ErrorCode::SESSION_ENDED.0 && self.session_end.is_none() {
                // The close without its `sys.session.ended` (lost, or a server that
                // sends only the close): ended all the same.
                self.end_by_server(info.reason.clone());
            }
        }
        if let Some(status) = info.status {
            // A client error (credential, origin, path, version) does not go away by
            // retrying; 408 and 429 (timeout, too many requests) do.
            if (400..500).contains(&status) && status != 408 && status != 429 && self.fatal.is_none() {
                self.fatal = Some(format!("the server refused the upgrade with HTTP {status}"));
            }
        }
        if self.stopped {
            let mut info = info;
            if let Some((code, reason)) = self.user_close.take() {
                if info.code.is_none() {
                    info.code = Some(code);
                    info.reason = reason;
                }
            }
            info.session_end.clone_from(&self.session_end);
            self.set_state(State::Disconnected(info));
            return;
        }
        if let Some(fatal) = self.fatal.clone() {
            self.give_up(info, fatal);
            return;
        }
        self.attempt = self.attempt.saturating_add(1);
        if let Some(max) = self.config.max_reconnect_attempts {
            if self.attempt > max {
                self.give_up(info, format!("gave up after {max} reconnect attempts"));
                return;
            }
        }
        // 4116: the session is on another node now (taken over, or handed over by a
        // stopping node): resuming at once is the point, so the first attempt after it
        // does not wait. Failed attempts after it back off as usual.
        let moved = info.code.is_some_and(|code| code.0 == ErrorCode::SESSION_MOVED.0);
        let delay = if moved && self.attempt == 1 {
            Duration::ZERO
        } else {
            self.config.backoff.delay(self.attempt, &mut *self.rng)
        };
        self.reconnect_at = Some(now + delay);
        self.set_state(State::Reconnecting {
            attempt: self.attempt,
            delay,
        });
    }

    /// Time passed: reconnects, connect and query timeouts, acks, dead connections.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            if !self.stopped && self.transport == Transport::None {
                self.open(now);
            }
        }
        if self.connect_deadline.is_some_and(|at| at <= now) {
            self.connect_deadline = None;
            if !self.established && matches!(self.transport, Transport::Opening | Transport::Open) {
                let secs = self.config.connect_timeout.as_secs_f64();
                self.drop_transport(format!("no session within the connect timeout ({secs} s)"));
            }
        }
        if self.idle_deadline.is_some_and(|at| at <= now) {
            self.idle_deadline = None;
            if self.transport == Transport::Open {
                self.drop_transport("nothing received within the idle timeout".to_owned());
            }
        }
        if self.ack_at.is_some_and(|at| at <= now) {
            self.ack_at = None;
            self.flush_ack();
        }
        while let Some(&(deadline, id)) = self.query_deadlines.first() {
            if deadline > now {
                break;
            }
            self.query_deadlines.pop_first();
            if self.pending.contains_key(&id) {
                self.queue.retain(|q| q.query != Some(id));
                self.resolve(id, Err(QueryError::Timeout));
            }
        }
    }

    // ------------------------------------------------------------------ internals

    fn check_event(&self, event: &str) -> Result<(), ClientError> {
        if self.stopped {
            return Err(ClientError::Closed);
        }
        validate_event_name(event, &self.config.proto).map_err(ClientError::InvalidEventName)?;
        if sys::is_system(event) {
            return Err(ClientError::ReservedEventName);
        }
        Ok(())
    }

    /// Writes one message of the application's: in both forms when it has a binary one.
    fn transmit(&mut self, text: String, msgpack: Option<Vec<u8>>) {
        self.actions.push_back(match msgpack {
            Some(msgpack) => ClientAction::TransmitBoth { text, msgpack },
            None => ClientAction::Transmit(text),
        });
    }

    fn submit(&mut self, item: Queued) -> Result<(), ClientError> {
        if self.established {
            self.transmit(item.text, item.msgpack);
            return Ok(());
        }
        if self.queue.len() >= self.config.queue_limit {
            return Err(ClientError::QueueFull {
                limit: self.config.queue_limit,
            });
        }
        self.queue.push_back(item);
        Ok(())
    }

    /// The session a query just submitted went out on, if it was written.
    fn pending_sent_on(&self, id: QueryId) -> Option<String> {
        if self.queue.iter().any(|q| q.query == Some(id)) {
            None
        } else {
            self.held.as_ref().map(|h| h.session_id.clone())
        }
    }

    fn open(&mut self, now: Instant) {
        self.transport = Transport::Opening;
        self.established = false;
        self.connect_deadline = Some(now + self.config.connect_timeout);
        self.actions.push_back(ClientAction::Connect);
    }

    /// Abandons the current transport; the reconnect follows its `handle_disconnected`.
    fn drop_transport(&mut self, why: String) {
        self.transport = Transport::Closing;
        self.established = false;
        self.idle_deadline = None;
        self.ack_at = None;
        self.actions.push_back(ClientAction::CloseTransport {
            code: CloseCode::NORMAL,
            reason: why,
        });
    }

    fn give_up(&mut self, info: Disconnect, why: String) {
        self.stopped = true;
        self.reconnect_at = None;
        self.fail_all(QueryError::Closed);
        self.queue.clear();
        let mut info = info;
        if info.error.is_none() {
            info.error = Some(why);
        }
        self.set_state(State::Disconnected(info));
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state.clone();
            self.actions.push_back(ClientAction::StateChanged(state));
        }
    }

    fn arm_idle(&mut self, now: Instant) {
        let limit = match self.config.idle_timeout {
            IdleTimeout::Off => None,
            IdleTimeout::Fixed(limit) => Some(limit),
            IdleTimeout::FromHeartbeat => self
                .held
                .as_ref()
                .and_then(|h| h.heartbeat)
                .map(|hb| hb * 2 + Duration::from_secs(5)),
        };
        self.idle_deadline = limit.map(|limit| now + limit);
    }

    fn schedule_ack(&mut self, now: Instant) {
        if !self.established {
            return;
        }
        let unacked = self.last_seq.saturating_sub(self.last_acked);
        if unacked >= self.config.ack_every {
            self.flush_ack();
        } else if unacked > 0 && self.ack_at.is_none() {
            self.ack_at = Some(now + self.config.ack_delay);
        }
    }

    fn flush_ack(&mut self) {
        self.ack_at = None;
        if !self.established || self.last_seq <= self.last_acked {
            return;
        }
        let text = encode_serialize(OutgoingEnvelope::new(sys::ACK), &Ack { seq: self.last_seq });
        self.actions.push_back(ClientAction::Transmit(text));
        self.last_acked = self.last_seq;
    }

    fn query_for(&self, correlation_id: Option<&str>) -> Option<QueryId> {
        let c = correlation_id?;
        let id = QueryId(c.strip_prefix('q')?.parse().ok()?);
        self.pending
            .get(&id)
            .filter(|p| p.correlation_id == c)
            .map(|_| id)
    }

    fn resolve(&mut self, id: QueryId, result: Result<OwnedEnvelope, QueryError>) {
        if let Some(pending) = self.pending.remove(&id) {
            self.query_deadlines.remove(&(pending.deadline, id));
            self.actions.push_back(ClientAction::QueryResult { id, result });
        }
    }

    /// Queues query `id` to go out again: after the other refused ones, before
    /// anything queued since.
    fn resend(&mut self, id: QueryId) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        pending.sent_on = None;
        let item = Queued {
            text: pending.text.clone(),
            msgpack: pending.msgpack.clone(),
            query: Some(id),
            for_session: None,
            resend: true,
        };
        let at = self.queue.iter().take_while(|q| q.resend).count();
        self.queue.insert(at, item);
    }

    fn fail_all(&mut self, error: QueryError) {
        let ids: Vec<QueryId> = self.pending.keys().copied().collect();
        for id in ids {
            self.resolve(id, Err(error.clone()));
        }
    }

    fn handle_system(&mut self, now: Instant, envelope: Envelope<'_>) {
        match &*envelope.event {
            sys::PING => {
                let mut pong = OutgoingEnvelope::new(sys::PONG).with_payload(envelope.payload);
                pong.correlation_id = envelope.correlation_id.as_deref();
                self.actions.push_back(ClientAction::Transmit(encode(pong)));
            }
            sys::SESSION_CREATED => {
                if let Ok(payload) = envelope.payload_as::<SessionCreated<'static>>() {
                    self.on_created(now, payload);
                }
            }
            sys::SESSION_RESTORED => {
                if let Ok(payload) = envelope.payload_as::<SessionRestored<'static>>() {
                    self.on_restored(now, payload);
                }
            }
            sys::ERROR => {
                let Ok(payload) = envelope.payload_as::<SysError<'static>>() else {
                    return;
                };
                let error = ServerError {
                    code: payload.code,
                    message: payload.message.into_owned(),
                    reason: payload.reason.map(std::borrow::Cow::into_owned),
                };
                let c = envelope.correlation_id.as_deref();
                if error.code == ErrorCode::NOT_RECOVERABLE.0 {
                    if let Some(resume) = &mut self.resume {
                        if c.is_none() || c == Some(resume.correlation_id.as_str()) {
                            resume.refused = Some(error.reason.unwrap_or_else(|| "unknown".to_owned()));
                            return;
                        }
                    }
                }
                if error.code == ErrorCode::AUTH_FAILED.0 && !self.established {
                    self.fatal = Some(format!("authentication failed: {}", error.message));
                }
                // 4116 on a query: a stopping node did not take it; it goes out again
                // after the resume instead of failing.
                if error.code == ErrorCode::SESSION_MOVED.0 {
                    if let Some(id) = self.query_for(c) {
                        self.resend(id);
                        return;
                    }
                }
                match self.query_for(c) {
                    Some(id) => self.resolve(id, Err(QueryError::Server(error))),
                    None => self.actions.push_back(ClientAction::ServerError(error)),
                }
            }
            // The node stops: what is sent from now on waits for the resume; tell it we
            // send nothing more here, and it closes with 4116 once its answers and
            // refusals are out (refused queries go again).
            sys::HANDOVER if self.established => {
                self.established = false;
                self.ack_at = None;
                let done = encode(OutgoingEnvelope::new(sys::HANDOVER));
                self.actions.push_back(ClientAction::Transmit(done));
            }
            sys::SESSION_ENDED => {
                let Ok(payload) = envelope.payload_as::<SessionEnded<'_>>() else {
                    return;
                };
                if self.session_id() == Some(&*payload.session_id) {
                    self.end_by_server(payload.reason.into_owned());
                }
            }
            sys::REQUEST => {
                let (Some(c), Some(held)) = (envelope.correlation_id.as_deref(), &self.held) else {
                    return;
                };
                let Ok(payload) = envelope.payload_as::<ServerRequest<'_>>() else {
                    return;
                };
                let request = IncomingRequest {
                    id: c.to_owned(),
                    session_id: held.session_id.clone(),
                    event: payload.event.into_owned(),
                    payload: payload.payload.map(|p| p.get().to_owned()),
                };
                self.actions.push_back(ClientAction::Request(request));
            }
            _ => {} // sys.pong and unknown system events (forward compatibility)
        }
    }

    /// The server ended the session on purpose: stop, without resuming or
    /// reconnecting; the transport's end (close 4115) makes the state `Disconnected`.
    fn end_by_server(&mut self, reason: String) {
        self.session_end = Some(SessionEnd::ByServer { reason });
        self.held = None;
        self.stopped = true;
        self.reconnect_at = None;
        self.connect_deadline = None;
        self.ack_at = None;
        self.fail_all(QueryError::Closed);
        self.queue.clear();
        if matches!(self.transport, Transport::Open | Transport::Opening) {
            self.established = false;
            self.set_state(State::Disconnecting);
        }
    }

    fn on_created(&mut self, now: Instant, payload: SessionCreated<'static>) {
        if self.resume.as_ref().is_some_and(|r| r.refused.is_none()) {
            // The fresh session a handshake-authenticated connection is announced
            // before our resume is answered: forgotten if the resume succeeds, and
            // announced again if it is refused.
            return;
        }
        let session = SessionDetails {
            session_id: payload.session_id.to_string(),
            user_id: payload.user_id.to_string(),
        };
        let previous = self.held.take();
        let reason = self
            .resume
            .take()
            .and_then(|r| r.refused)
            .unwrap_or_else(|| "unknown".to_owned());
        self.held = Some(Held {
            session_id: payload.session_id.into_owned(),
            user_id: payload.user_id.into_owned(),
            resume_token: payload.resume_token.into_owned(),
            heartbeat: (payload.heartbeat_ms > 0).then(|| Duration::from_millis(payload.heartbeat_ms)),
        });
        // A new stream: numbering starts again.
        self.last_seq = 0;
        self.last_acked = 0;
        self.ack_at = None;
        let outcome = match previous {
            None => SessionOutcome::Created(session),
            Some(old) => {
                let lost: Vec<QueryId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.sent_on.as_deref() == Some(old.session_id.as_str()))
                    .map(|(id, _)| *id)
                    .collect();
                for id in &lost {
                    self.resolve(
                        *id,
                        Err(QueryError::NotRestored {
                            reason: reason.clone(),
                        }),
                    );
                }
                SessionOutcome::NotRestored {
                    reason,
                    previous_session_id: old.session_id,
                    session,
                    failed_queries: lost.len(),
                }
            }
        };
        self.session_up(now, outcome);
    }

    fn on_restored(&mut self, now: Instant, payload: SessionRestored<'static>) {
        let Some(resume) = self.resume.take() else {
            return;
        };
        let Some(held) = &mut self.held else {
            return;
        };
        if payload.session_id != held.session_id {
            self.resume = Some(resume);
            return;
        }
        held.resume_token = payload.resume_token.into_owned();
        // The server trimmed its buffer up to what we said we had.
        self.last_acked = self.last_acked.max(resume.from_seq);
        let outcome = SessionOutcome::Restored {
            session_id: held.session_id.clone(),
            replayed: payload.replayed,
        };
        self.session_up(now, outcome);
    }

    fn session_up(&mut self, now: Instant, outcome: SessionOutcome) {
        if self.established {
            // A session event on a live connection: report it, nothing else changes.
            self.actions.push_back(ClientAction::Session(outcome));
            return;
        }
        self.established = true;
        self.connect_deadline = None;
        self.attempt = 0;
        self.arm_idle(now);
        let state = if self.ever_established {
            State::Reconnected
        } else {
            State::Connected
        };
        self.ever_established = true;
        // The outcome first: whoever waits for the state to say "connected" then finds
        // the session already reported.
        self.actions.push_back(ClientAction::Session(outcome));
        self.set_state(state);
        let session_id = self.held.as_ref().map(|h| h.session_id.clone());
        while let Some(item) = self.queue.pop_front() {
            if item.for_session.is_some() && item.for_session != session_id {
                continue; // an answer for a session that was not restored
            }
            if let Some(id) = item.query {
                if let Some(pending) = self.pending.get_mut(&id) {
                    pending.sent_on.clone_from(&session_id);
                }
            }
            self.transmit(item.text, item.msgpack);
        }
        self.schedule_ack(now);
    }
}

/// The binary envelope of `envelope` when its payload was given in MessagePack too
/// ([`Payload::Both`]): made once, when the message is submitted.
fn binary_form(envelope: &OutgoingEnvelope<'_>) -> Option<Vec<u8>> {
    envelope.payload.as_msgpack()?;
    let mut out = Vec::new();
    ws_proto::envelope::msgpack::encode_msgpack(envelope, &mut out).ok()?;
    Some(out)
}

fn encode(envelope: OutgoingEnvelope<'_>) -> String {
    String::from_utf8(envelope.to_vec()).unwrap_or_default()
}

fn encode_serialize<T: Serialize>(envelope: OutgoingEnvelope<'_>, payload: &T) -> String {
    let mut out = Vec::new();
    if envelope.encode_serialize(payload, &mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}
