//! A deterministic simulation harness (feature `sim`): a fake clock, a seeded ChaCha20
//! generator and in-memory clients around one [`Engine`].
//!
//! [`Sim`] routes every action the engine emits: transmits are decoded into the
//! receiving client's log (and flushed at once unless the client is
//! [stalled](Sim::stall)), authentication requests go to a closure, application events
//! to an optional handler, lifecycle events into [`Sim::lifecycle`]. It panics when an
//! action addresses a connection the engine closed or never had, so every test that
//! drives it checks that invariant for free.
//!
//! The clock starts at one `Instant::now()` read (the only way to make an `Instant`);
//! from then on only [`Sim::advance`] moves it, so runs are reproducible.
//!
//! ```
//! use std::time::Duration;
//! use ws_session::sim::Sim;
//! use ws_session::EngineConfig;
//!
//! let mut sim = Sim::new(EngineConfig::default());
//! let alice = sim.connect_user("alice");
//! assert_eq!(sim.app_send(alice, "chat.message", Some(r#"{"n":1}"#)), Some(1));
//! sim.drop_connection(alice);
//! sim.app_send(alice, "chat.message", Some(r#"{"n":2}"#)); // buffered while suspended
//! sim.advance(Duration::from_secs(30));
//! sim.reconnect(alice, Some("user:alice"));
//! sim.resume(alice);
//! assert_eq!(sim.client(alice).last_control(), Some("sys.session.restored"));
//! let seqs: Vec<_> = sim.client(alice).stream().iter().map(|r| r.envelope.seq).collect();
//! assert_eq!(seqs, [Some(1), Some(2)]);
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Deserialize;
use ws_proto::envelope::{sys, Codec, Envelope, OwnedEnvelope};
use ws_proto::{CloseCode, Message};

use crate::{
    Action, AuthRequest, ConnectionId, ConnectionInfo, Engine, EngineConfig, InboundEvent, Publication,
    RequestFailure, RequestId, SessionEvent, SessionId, UserId,
};

/// A simulated client. The harness hands out indexes; a client keeps its index (and
/// its log) across reconnects.
pub type ClientId = usize;

/// The fake clock's origin for every harness of this crate (`Sim`, `Cluster`, `Nodes`,
/// the fuzz harnesses): the one real clock read, since an `Instant` cannot be made
/// otherwise. From there only the harnesses' `advance` moves their clocks.
pub fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// One envelope a client received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The text as transmitted.
    pub text: String,
    /// The text decoded.
    pub envelope: OwnedEnvelope,
    /// The connection it came on.
    pub connection: ConnectionId,
}

impl Received {
    /// The event name.
    pub fn event(&self) -> &str {
        &self.envelope.event
    }

    /// The payload as a JSON value (`Null` when absent).
    pub fn payload(&self) -> serde_json::Value {
        self.envelope
            .payload
            .as_deref()
            .map_or(serde_json::Value::Null, |p| {
                serde_json::from_str(p.get()).unwrap_or(serde_json::Value::Null)
            })
    }

    /// The `code` of a `sys.error`.
    pub fn error_code(&self) -> Option<u16> {
        (self.event() == sys::ERROR)
            .then(|| self.payload()["code"].as_u64())
            .flatten()
            .and_then(|c| u16::try_from(c).ok())
    }
}

/// What a simulated client knows.
#[derive(Debug, Default, Clone)]
pub struct Client {
    /// Its current connection (`None` after a drop or a close).
    pub connection: Option<ConnectionId>,
    /// Every envelope received, over all its connections.
    pub received: Vec<Received>,
    /// The close the engine sent on its last closed connection.
    pub closed: Option<(CloseCode, &'static str)>,
    /// The session id and resume token from the last `sys.session.created` or
    /// `sys.session.restored`.
    pub session: Option<(String, String)>,
    /// The highest `s` received in the current session.
    pub last_seq: u64,
    /// The highest `s` received per session id (a client remembers it per session).
    pub last_seen: BTreeMap<String, u64>,
    /// Whether it stopped reading (transmits are not flushed).
    pub stalled: bool,
    /// Session id, token and last `s` remembered at the last [`Sim::reconnect`], for
    /// [`Sim::resume`] (a handshake credential makes the new connection announce a
    /// fresh session first).
    pub resumable: Option<(String, String, u64)>,
    /// Whether it answers every `sys.ping` with a `sys.pong` at once
    /// ([`Sim::set_auto_pong`]).
    pub auto_pong: bool,
    /// The envelope codec its connections negotiate ([`Sim::connect_with_codec`]):
    /// what [`Sim::send`] encodes in, what the engine must send it.
    pub codec: Codec,
}

impl Client {
    /// The event name of the last envelope received.
    pub fn last_event(&self) -> Option<&str> {
        self.received.last().map(Received::event)
    }

    /// The event name of the last envelope received outside the session stream
    /// (without `s`): `sys.session.created`, `sys.session.restored`, `sys.error`, …
    pub fn last_control(&self) -> Option<&str> {
        self.received
            .iter()
            .rev()
            .find(|r| r.envelope.seq.is_none())
            .map(Received::event)
    }

    /// The last envelope named `event`.
    pub fn last_of(&self, event: &str) -> Option<&Received> {
        self.received.iter().rev().find(|r| r.event() == event)
    }

    /// The codes of every `sys.error` received.
    pub fn error_codes(&self) -> Vec<u16> {
        self.received.iter().filter_map(Received::error_code).collect()
    }

    /// The event names received, in order.
    pub fn events(&self) -> Vec<&str> {
        self.received.iter().map(Received::event).collect()
    }

    /// The session-stream messages (with `s`) of the session the client has now,
    /// attributing each to the session the last `sys.session.created` or
    /// `sys.session.restored` before it announced.
    pub fn stream(&self) -> Vec<&Received> {
        let current = self.session.as_ref().map(|(id, _)| id.as_str());
        let mut announced: Option<String> = None;
        let mut out = Vec::new();
        for r in &self.received {
            if r.event() == sys::SESSION_CREATED || r.event() == sys::SESSION_RESTORED {
                announced = r.payload()["sessionId"].as_str().map(str::to_owned);
            } else if r.envelope.seq.is_some() && announced.as_deref() == current {
                out.push(r);
            }
        }
        out
    }

    /// The session id as a [`SessionId`].
    pub fn session_id(&self) -> Option<SessionId> {
        self.session.as_ref().and_then(|(id, _)| SessionId::parse(id))
    }
}

type Authenticator = Box<dyn FnMut(&AuthRequest) -> Option<Result<UserId, String>>>;
type Handler = Box<dyn FnMut(&mut Engine, Instant, &InboundEvent)>;

/// The harness. See the [module documentation](self).
pub struct Sim {
    /// The engine under test (drive it directly for commands; call [`Sim::drain`]
    /// afterwards).
    pub engine: Engine,
    now: Instant,
    start: Instant,
    clients: Vec<Client>,
    by_conn: BTreeMap<ConnectionId, ClientId>,
    closed: HashSet<ConnectionId>,
    recording: bool,
    authenticator: Authenticator,
    handler: Option<Handler>,
    /// Application events dispatched, in order.
    pub events: Vec<InboundEvent>,
    /// Lifecycle events, in order.
    pub lifecycle: Vec<SessionEvent>,
    /// Publications for other nodes, in order.
    pub publications: Vec<Publication>,
    /// Authentication requests the authenticator left unanswered (returned `None`).
    pub pending_auth: Vec<AuthRequest>,
    /// Connections the engine closed, with code.
    pub closes: Vec<(ConnectionId, CloseCode)>,
    /// Outcomes of server→client requests, in order.
    pub responses: Vec<(RequestId, Result<Option<String>, RequestFailure>)>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("elapsed", &self.elapsed())
            .field("engine", &self.engine)
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// The default authenticator: `user:NAME` is user `NAME`, `pending` is left unanswered
/// (in [`Sim::pending_auth`]), anything else is refused.
pub fn default_authenticator(request: &AuthRequest) -> Option<Result<UserId, String>> {
    if request.token == "pending" {
        return None;
    }
    Some(match request.token.strip_prefix("user:") {
        Some(name) if !name.is_empty() => Ok(UserId::new(name)),
        _ => Err("unknown credential".to_owned()),
    })
}

impl Sim {
    /// A harness around an engine with `config`, generator seeded with 0.
    pub fn new(config: EngineConfig) -> Self {
        Self::with_seed(config, 0)
    }

    /// A harness whose engine draws from `ChaCha20Rng::seed_from_u64(seed)`.
    pub fn with_seed(config: EngineConfig, seed: u64) -> Self {
        let engine = Engine::new(config, ChaCha20Rng::seed_from_u64(seed)).expect("valid config");
        let now = origin();
        Self {
            engine,
            now,
            start: now,
            clients: Vec::new(),
            by_conn: BTreeMap::new(),
            closed: HashSet::new(),
            recording: true,
            authenticator: Box::new(default_authenticator),
            handler: None,
            events: Vec::new(),
            lifecycle: Vec::new(),
            publications: Vec::new(),
            pending_auth: Vec::new(),
            closes: Vec::new(),
            responses: Vec::new(),
        }
    }

    /// Replaces the authenticator: `Some(answer)` answers at once, `None` leaves the
    /// request in [`Sim::pending_auth`].
    pub fn set_authenticator(
        &mut self,
        auth: impl FnMut(&AuthRequest) -> Option<Result<UserId, String>> + 'static,
    ) {
        self.authenticator = Box::new(auth);
    }

    /// Whether clients log what they receive in [`Client::received`] (on by default).
    /// Off, every envelope is still decoded and checked, and each client's session and
    /// last `s` are still tracked, but nothing is copied into the log: for fuzzing and
    /// long runs that never read it (the accessors built on the log then see nothing).
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// Installs an application handler called for every dispatched event (after which
    /// the event is also recorded in [`Sim::events`]).
    pub fn set_handler(&mut self, handler: impl FnMut(&mut Engine, Instant, &InboundEvent) + 'static) {
        self.handler = Some(Box::new(handler));
    }

    /// An echo handler: every event with a correlation id is answered with a reply of
    /// the same name and payload.
    pub fn echo_handler(engine: &mut Engine, now: Instant, event: &InboundEvent) {
        if let Some(c) = event.correlation_id() {
            let mut env = ws_proto::envelope::OutgoingEnvelope::new(event.event());
            env.payload = ws_proto::envelope::Payload::Trusted(event.payload().unwrap_or("null"));
            let _ = engine.reply(now, event.session, c, &env);
        }
    }

    /// The fake clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Time since the harness started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A client's state.
    pub fn client(&self, id: ClientId) -> &Client {
        &self.clients[id]
    }

    /// A client's state, mutably (to forge tokens, say).
    pub fn client_mut(&mut self, id: ClientId) -> &mut Client {
        &mut self.clients[id]
    }

    /// Every client.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// A new client connects with credential `token` (as if from the handshake).
    pub fn connect(&mut self, token: Option<&str>) -> ClientId {
        self.connect_with_codec(token, Codec::Json)
    }

    /// [`connect`](Self::connect) on connections of `codec`: its envelopes go out in
    /// that codec's frames, and every frame the engine sends it must be of that kind.
    pub fn connect_with_codec(&mut self, token: Option<&str>, codec: Codec) -> ClientId {
        let id = self.clients.len();
        self.clients.push(Client {
            codec,
            ..Client::default()
        });
        self.open(id, token);
        id
    }

    /// A new client connects as user `name` (credential `user:NAME` in the handshake,
    /// which the default authenticator accepts).
    pub fn connect_user(&mut self, name: &str) -> ClientId {
        self.connect(Some(&format!("user:{name}")))
    }

    /// The application sends `event` with raw JSON `payload` to the client's session;
    /// returns its `s`, or `None` when the client has no live session.
    pub fn app_send(&mut self, client: ClientId, event: &str, payload: Option<&str>) -> Option<u64> {
        let sid = self.clients[client].session_id()?;
        let mut env = ws_proto::envelope::OutgoingEnvelope::new(event);
        if let Some(p) = payload {
            env.payload = ws_proto::envelope::Payload::Trusted(p);
        }
        let seq = self.engine.send(self.now, sid, &env).ok();
        self.drain();
        seq
    }

    /// An existing client opens a new connection (its log and session memory stay).
    /// Returns the same id, for chaining.
    pub fn reconnect(&mut self, client: ClientId, token: Option<&str>) -> ClientId {
        if self.clients[client].connection.is_some() {
            self.drop_connection(client);
        }
        let c = &mut self.clients[client];
        c.resumable = c.session.clone().map(|(id, token)| (id, token, c.last_seq));
        self.open(client, token);
        client
    }

    fn open(&mut self, client: ClientId, token: Option<&str>) {
        let info = ConnectionInfo {
            token: token.map(str::to_owned),
            ..ConnectionInfo::default()
        }
        .with_codec(self.clients[client].codec);
        let cid = self.engine.handle_connection_opened(self.now, info);
        self.clients[client].connection = Some(cid);
        self.clients[client].closed = None;
        self.by_conn.insert(cid, client);
        self.drain();
    }

    /// The client sends a raw message (text or otherwise). Ignored when it has no
    /// connection.
    pub fn send_message(&mut self, client: ClientId, message: Message) {
        if let Some(cid) = self.clients[client].connection {
            self.engine.handle_message(self.now, cid, message);
            self.drain();
        }
    }

    /// The client sends `text` in a text frame.
    pub fn send_text(&mut self, client: ClientId, text: &str) {
        self.send_message(client, Message::Text(text.to_owned()));
    }

    /// The client sends an envelope with event `event`, raw JSON payload `payload` and
    /// correlation id `c`.
    pub fn send(&mut self, client: ClientId, event: &str, payload: Option<&str>, c: Option<&str>) {
        let mut env = ws_proto::envelope::OutgoingEnvelope::new(event);
        if let Some(p) = payload {
            env.payload = ws_proto::envelope::Payload::Trusted(p);
        }
        env.correlation_id = c;
        let text = String::from_utf8(env.to_vec()).expect("utf-8");
        let message = crate::client::wire::to_wire(self.clients[client].codec, text);
        self.send_message(client, message);
    }

    /// The client asks to resume the session in [`Client::session`] from `last_seq`
    /// (and `credential` in the payload, for connections without one).
    pub fn resume_with(&mut self, client: ClientId, last_seq: u64, credential: Option<&str>) {
        let Some((id, token)) = self.clients[client].session.clone() else {
            return;
        };
        let mut payload = serde_json::json!({
            "sessionId": id, "resumeToken": token, "lastSeq": last_seq
        });
        if let Some(cred) = credential {
            payload["token"] = serde_json::Value::from(cred);
        }
        self.send(
            client,
            sys::RECONNECT_REQUEST,
            Some(&payload.to_string()),
            Some("resume"),
        );
    }

    /// The client resumes the session it had before its last [`reconnect`](Self::reconnect)
    /// (or its current one) from the last `s` it saw, without a credential in the request.
    pub fn resume(&mut self, client: ClientId) {
        let c = &mut self.clients[client];
        let last = match c.resumable.clone() {
            Some((id, token, last)) => {
                c.session = Some((id, token));
                last
            }
            None => c.last_seq,
        };
        self.resume_with(client, last, None);
    }

    /// The client acknowledges everything it received.
    pub fn ack(&mut self, client: ClientId) {
        let last = self.clients[client].last_seq;
        self.send(client, sys::ACK, Some(&format!("{{\"seq\":{last}}}")), None);
    }

    /// The client's connection drops (EOF without a close frame).
    pub fn drop_connection(&mut self, client: ClientId) {
        if let Some(cid) = self.clients[client].connection.take() {
            self.by_conn.remove(&cid);
            self.closed.insert(cid);
            self.engine.handle_connection_closed(self.now, cid);
            self.drain();
        }
    }

    /// The client answers every `sys.ping` with a `sys.pong` (for long simulations with
    /// heartbeats on; off by default, so a client is silent unless told otherwise).
    pub fn set_auto_pong(&mut self, client: ClientId, on: bool) {
        self.clients[client].auto_pong = on;
    }

    /// The client stops reading: transmits to it are no longer flushed.
    pub fn stall(&mut self, client: ClientId, stalled: bool) {
        self.clients[client].stalled = stalled;
    }

    /// Answers a pending authentication request.
    pub fn answer_auth(&mut self, request: &AuthRequest, answer: Result<UserId, String>) {
        self.engine
            .handle_auth_result(self.now, request.id, answer)
            .expect("issued id");
        self.drain();
    }

    /// Moves the clock forward by `by`, firing every deadline on the way at its own
    /// instant.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.engine.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
    }

    /// Routes every pending action. Call after driving [`Sim::engine`] directly.
    ///
    /// # Panics
    ///
    /// When an action addresses a connection that is closed or unknown.
    pub fn drain(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Transmit { connection, message } => {
                    self.check_codec(connection, message.codec);
                    self.deliver(connection, &message.to_text(), message.len())
                }
                Action::TransmitBroadcast {
                    prefix,
                    codec,
                    recipients,
                } => {
                    for &(cid, seq) in &recipients {
                        self.check_codec(cid, codec);
                        let message = crate::OutboundMessage::new(prefix.clone(), Some(seq), codec);
                        self.deliver(cid, &message.to_text(), message.len());
                    }
                    self.engine.recycle(recipients);
                }
                Action::TransmitMany { connections, message } => {
                    let text = message.to_text();
                    for cid in connections {
                        self.check_codec(cid, message.codec);
                        self.deliver(cid, &text, message.len());
                    }
                }
                Action::Close {
                    connection,
                    code,
                    reason,
                } => {
                    let client = self.live_client(connection);
                    self.by_conn.remove(&connection);
                    self.closed.insert(connection);
                    self.closes.push((connection, code));
                    let c = &mut self.clients[client];
                    c.connection = None;
                    c.closed = Some((code, reason));
                }
                Action::Authenticate(request) => {
                    self.live_client(request.connection);
                    match (self.authenticator)(&request) {
                        Some(answer) => self
                            .engine
                            .handle_auth_result(self.now, request.id, answer)
                            .expect("issued id"),
                        None => self.pending_auth.push(request),
                    }
                }
                Action::Event(event) => {
                    self.live_client(event.connection);
                    if let Some(handler) = self.handler.as_mut() {
                        handler(&mut self.engine, self.now, &event);
                    }
                    self.events.push(event);
                }
                Action::Session(event) => self.lifecycle.push(event),
                Action::Publish(publication) => self.publications.push(publication),
                // Room occupancy matters to a cross-node backend only; the sim has none.
                Action::RoomOccupied(_) | Action::RoomVacated(_) => {}
                Action::Response { id, result, .. } => self.responses.push((id, result)),
                // One engine, no shared store (see `nodes` for several).
                Action::Journal { .. } => {}
                Action::LoadSession {
                    connection, session, ..
                } => self
                    .engine
                    .handle_session_loaded(self.now, connection, session, None, Some(Vec::new())),
            }
        }
    }

    fn live_client(&self, cid: ConnectionId) -> ClientId {
        match self.by_conn.get(&cid) {
            Some(&client) => client,
            None if self.closed.contains(&cid) => panic!("action addresses closed {cid}"),
            None => panic!("action addresses unknown {cid}"),
        }
    }

    /// Panics when the engine sends `cid` a message in another codec than its
    /// client's.
    fn check_codec(&self, cid: ConnectionId, codec: Codec) {
        let client = self.live_client(cid);
        assert_eq!(
            codec, self.clients[client].codec,
            "a message in the wrong codec for {cid:?}"
        );
    }

    fn deliver(&mut self, cid: ConnectionId, text: &str, len: usize) {
        let client = self.live_client(cid);
        let envelope = Envelope::decode(text, &ws_proto::Config::default())
            .unwrap_or_else(|e| panic!("engine sent an invalid envelope {text:?}: {e}"));
        let c = &mut self.clients[client];
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Ids {
            session_id: String,
            resume_token: String,
        }
        match &*envelope.event {
            sys::SESSION_CREATED | sys::SESSION_RESTORED => {
                if let Ok(ids) = envelope.payload_as::<Ids>() {
                    if envelope.event == sys::SESSION_RESTORED {
                        c.resumable = None;
                    }
                    c.last_seq = c.last_seen.get(&ids.session_id).copied().unwrap_or(0);
                    c.session = Some((ids.session_id, ids.resume_token));
                }
            }
            _ => {}
        }
        if let Some(s) = envelope.seq {
            c.last_seq = c.last_seq.max(s);
            if let Some((id, _)) = &c.session {
                c.last_seen.insert(id.clone(), c.last_seq);
            }
        }
        let pong = c.auto_pong && envelope.event == sys::PING;
        if self.recording {
            c.received.push(Received {
                text: text.to_owned(),
                envelope: envelope.into_owned(),
                connection: cid,
            });
        }
        if !c.stalled {
            self.engine.handle_flushed(self.now, cid, len);
        }
        if pong {
            let text = format!("{{\"v\":\"1.0\",\"e\":\"{}\"}}", sys::PONG);
            self.engine.handle_message(self.now, cid, Message::Text(text));
        }
    }

    /// Checks the engine's bounds: every replay buffer within its message and byte
    /// bounds, every connection's outbound bytes within its bound.
    ///
    /// # Panics
    ///
    /// When a bound is exceeded.
    pub fn check_bounds(&self) {
        if let Some(violation) = self.engine.bounds_violation() {
            panic!("bound exceeded: {violation}");
        }
        // Every stored prefix is held by some replay buffer (no leak).
        let (live, entries) = self.engine.replay_storage();
        assert!(
            live <= entries,
            "{live} prefixes stored for {entries} replay entries"
        );
        // Lazy timers: each connection and session has pushed at most a couple of
        // entries that have not fired yet.
        let m = self.engine.metrics();
        let owners = m.connections_opened + m.sessions_created;
        assert!(
            self.engine.timer_entries() as u64 <= 3 * owners + 8,
            "timer heap grows"
        );
    }
}
