//! A server [`Engine`] and several [`ClientEngine`]s wired together under one fake
//! clock: the other half of the simulation harness (feature `sim`). Where
//! [`sim`](crate::sim) scripts what clients send, a [`Cluster`] runs the real client
//! engine, so both halves of the protocol are tested against each other.
//!
//! Each client talks to the server over a [`Link`] that carries whole messages in
//! order in each direction (as TCP does) and can be cut, delayed, or stepped by hand so
//! that deliveries in the two directions and across clients interleave in any order a
//! test picks. Connection attempts complete at once or when the test says so, and are
//! refused while the server is down.
//!
//! ```
//! use ws_session::client::ClientConfig;
//! use ws_session::cluster::Cluster;
//! use ws_session::EngineConfig;
//!
//! let mut cluster = Cluster::new(EngineConfig::default(), 1);
//! let alice = cluster.add_client(ClientConfig::with_credential("alice"));
//! cluster.settle();
//! let session = cluster.session(alice).unwrap();
//! cluster.send_to(session, "tick", "1");
//! cluster.cut(alice);
//! cluster.advance(std::time::Duration::from_secs(5)); // reconnects and resumes
//! assert_eq!(cluster.client(alice).events_named("tick"), ["1"]);
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use ws_proto::envelope::{Codec, OutgoingEnvelope, Payload};
use ws_proto::{CloseCode, Message};

use crate::client::{wire, AuthMode, ClientAction, ClientConfig, ClientEngine, Disconnect};
use crate::{
    Action, ConnectionId, ConnectionInfo, Engine, EngineConfig, InboundEvent, RequestFailure, RequestId,
    SessionEvent, SessionId, UserId,
};

/// How messages and connection attempts travel between one client and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Delivered as soon as sent; connection attempts complete at once.
    Instant,
    /// Delivered `latency` after being sent (in order per direction); connection
    /// attempts complete after the same latency.
    Delayed(Duration),
    /// Nothing moves until the test says so ([`Cluster::deliver_to_client`],
    /// [`Cluster::deliver_to_server`], [`Cluster::complete_connect`]).
    Manual,
}

/// One client engine and its end of the link.
pub struct Peer {
    /// The client engine under test.
    pub engine: ClientEngine,
    /// How its link behaves.
    pub link: Link,
    /// The server's id of its transport, while one is open.
    pub connection: Option<ConnectionId>,
    /// A connection attempt the link has not completed yet, and when it started.
    pub connect_pending: Option<Instant>,
    /// Connection attempts the client made.
    pub connects: usize,
    /// Messages on their way to the server, with the instant each was sent.
    pub to_server: VecDeque<(Instant, String)>,
    /// Messages on their way to the client, with the instant each was sent.
    pub to_client: VecDeque<(Instant, String)>,
    /// What the client reported to its application, in order (events, session
    /// outcomes, states, query results).
    pub seen: Vec<ClientAction>,
}

impl Peer {
    /// The payloads (raw JSON) of the application events named `event` it received.
    pub fn events_named(&self, event: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|action| match action {
                ClientAction::Event(env) if &*env.event == event => Some(
                    env.payload
                        .as_ref()
                        .map_or_else(String::new, |p| p.get().to_owned()),
                ),
                _ => None,
            })
            .collect()
    }
}

/// What the server's application does with an event: the default answers `echo` with
/// `echo.reply` carrying the payload and `fail` with error 4242, when they carry a
/// correlation id.
pub type ServerHandler = Box<dyn FnMut(&mut Engine, Instant, &InboundEvent)>;

/// A server engine and its clients, under one fake clock. See the [module docs](self).
pub struct Cluster {
    /// The fake clock.
    pub now: Instant,
    /// The server engine under test.
    pub server: Engine,
    /// Whether connection attempts reach the server.
    pub server_up: bool,
    /// Sessions the server created, in order.
    pub created: Vec<SessionId>,
    /// Every session lifecycle event the server reported, in order.
    pub lifecycle: Vec<SessionEvent>,
    /// Outcomes of server→client requests, in order.
    pub responses: Vec<(RequestId, Result<Option<String>, RequestFailure>)>,
    peers: Vec<Peer>,
    handler: ServerHandler,
    seed: u64,
}

impl Cluster {
    /// A server with `config` whose authenticator accepts every credential as the user
    /// of that name; the engines' generators are seeded from `seed`.
    pub fn new(config: EngineConfig, seed: u64) -> Self {
        let now = crate::sim::origin();
        let server = Engine::new(config, ChaCha20Rng::seed_from_u64(seed)).expect("a valid EngineConfig");
        Self {
            now,
            server,
            server_up: true,
            created: Vec::new(),
            lifecycle: Vec::new(),
            responses: Vec::new(),
            peers: Vec::new(),
            handler: Box::new(echo_handler),
            seed,
        }
    }

    /// Replaces what the server's application does with events.
    pub fn set_handler(&mut self, handler: impl FnMut(&mut Engine, Instant, &InboundEvent) + 'static) {
        self.handler = Box::new(handler);
    }

    /// Adds a client with `config` over an [`Link::Instant`] link; returns its index.
    /// It starts connecting at once (drive it with [`Cluster::settle`]).
    pub fn add_client(&mut self, config: ClientConfig) -> usize {
        let index = self.peers.len();
        let rng = ChaCha8Rng::seed_from_u64(self.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9));
        self.peers.push(Peer {
            engine: ClientEngine::new(self.now, config, rng),
            link: Link::Instant,
            connection: None,
            connect_pending: None,
            connects: 0,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            seen: Vec::new(),
        });
        index
    }

    /// The client at `index`.
    pub fn client(&self, index: usize) -> &Peer {
        &self.peers[index]
    }

    /// The client at `index`, mutably (to call its engine's API).
    pub fn client_mut(&mut self, index: usize) -> &mut Peer {
        &mut self.peers[index]
    }

    /// Sets the link of client `index`.
    pub fn set_link(&mut self, index: usize, link: Link) {
        self.peers[index].link = link;
    }

    /// The server's id of the session client `index` holds, if it holds one.
    pub fn session(&self, index: usize) -> Option<SessionId> {
        self.peers[index].engine.session_id().and_then(SessionId::parse)
    }

    /// The server sends `event` with the raw JSON `payload` in `session`'s stream.
    pub fn send_to(&mut self, session: SessionId, event: &str, payload: &str) {
        let envelope = OutgoingEnvelope::new(event).with_payload(Payload::Trusted(payload));
        self.server
            .send(self.now, session, &envelope)
            .expect("a live session");
        self.settle();
    }

    /// Handles every action of every engine, and (on instant links) delivers every
    /// message and completes every connection attempt, until nothing moves.
    pub fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for index in 0..self.peers.len() {
                progressed |= self.drain_client(index);
            }
            progressed |= self.drain_server();
            for index in 0..self.peers.len() {
                progressed |= self.move_due(index);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Moves the clock forward by `by`, firing every timer of every engine (and every
    /// delayed delivery) at its own instant on the way.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            self.settle();
            let next = self.next_deadline();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.fire_timers();
                }
                _ => break,
            }
        }
        self.now = end;
        self.fire_timers();
        self.settle();
    }

    /// The transport of client `index` drops without a close frame, on both sides;
    /// what was in flight is lost.
    pub fn cut(&mut self, index: usize) {
        let now = self.now;
        if self.drop_transport(index) {
            self.peers[index]
                .engine
                .handle_disconnected(now, Disconnect::closed(CloseCode::ABNORMAL, ""));
        }
        self.settle();
    }

    /// Delivers the oldest message on its way to client `index`, whatever its link.
    /// `false` when none was in flight.
    pub fn deliver_to_client(&mut self, index: usize) -> bool {
        let Some((_, text)) = self.peers[index].to_client.pop_front() else {
            return false;
        };
        self.peers[index].engine.handle_message(self.now, &text);
        self.settle();
        true
    }

    /// Delivers the oldest message on its way from client `index` to the server.
    /// `false` when none was in flight.
    pub fn deliver_to_server(&mut self, index: usize) -> bool {
        let peer = &mut self.peers[index];
        let (Some(connection), Some((_, text))) = (peer.connection, peer.to_server.pop_front()) else {
            return false;
        };
        let message = wire::to_wire(peer.engine.config().codec, text);
        self.server.handle_message(self.now, connection, message);
        self.settle();
        true
    }

    /// Completes client `index`'s pending connection attempt (refused if the server is
    /// down). `false` when none was pending.
    pub fn complete_connect(&mut self, index: usize) -> bool {
        if self.peers[index].connect_pending.take().is_none() {
            return false;
        }
        self.open(index);
        self.settle();
        true
    }

    /// Lets everything in flight arrive and time pass in small steps until client
    /// `index` is online again. Panics if it never comes back.
    pub fn heal(&mut self, index: usize) {
        for _ in 0..100_000 {
            if self.deliver_to_client(index) || self.deliver_to_server(index) || self.complete_connect(index)
            {
                continue;
            }
            if self.peers[index].engine.is_online() {
                return;
            }
            self.now += Duration::from_millis(10);
            self.fire_timers();
            self.settle();
        }
        panic!("client {index} did not come back online");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let engines = self
            .peers
            .iter()
            .filter_map(|peer| peer.engine.poll_timeout())
            .chain(self.server.poll_timeout());
        let deliveries = self.peers.iter().filter_map(|peer| match peer.link {
            Link::Delayed(latency) => [
                peer.to_client.front().map(|(at, _)| *at),
                peer.to_server.front().map(|(at, _)| *at),
                peer.connect_pending,
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at + latency),
            _ => None,
        });
        engines.chain(deliveries).min()
    }

    fn fire_timers(&mut self) {
        self.server.handle_timeout(self.now);
        for peer in &mut self.peers {
            peer.engine.handle_timeout(self.now);
        }
    }

    /// Whether `sent_at` has travelled the link by now.
    fn due(link: Link, sent_at: Instant, now: Instant) -> bool {
        match link {
            Link::Instant => true,
            Link::Delayed(latency) => sent_at + latency <= now,
            Link::Manual => false,
        }
    }

    /// Delivers what the link of client `index` has carried by now.
    fn move_due(&mut self, index: usize) -> bool {
        let now = self.now;
        let link = self.peers[index].link;
        let peer = &mut self.peers[index];
        if let Some(started) = peer.connect_pending {
            if Self::due(link, started, now) {
                peer.connect_pending = None;
                self.open(index);
                return true;
            }
        }
        let peer = &mut self.peers[index];
        if let Some((sent, _)) = peer.to_client.front() {
            if Self::due(link, *sent, now) {
                let (_, text) = peer.to_client.pop_front().expect("a message");
                peer.engine.handle_message(now, &text);
                return true;
            }
        }
        if let (Some(connection), Some((sent, _))) = (peer.connection, peer.to_server.front()) {
            if Self::due(link, *sent, now) {
                let (_, text) = peer.to_server.pop_front().expect("a message");
                let message = wire::to_wire(peer.engine.config().codec, text);
                self.server.handle_message(now, connection, message);
                return true;
            }
        }
        false
    }

    /// A connection attempt of client `index` reaches the server (or finds it down).
    fn open(&mut self, index: usize) {
        let now = self.now;
        let peer = &mut self.peers[index];
        if !self.server_up {
            peer.engine
                .handle_disconnected(now, Disconnect::failed("connection refused"));
            return;
        }
        let config = peer.engine.config();
        let info = match (config.auth_mode, &config.credential) {
            (AuthMode::Handshake, Some(credential)) => ConnectionInfo::with_token(credential.clone()),
            _ => ConnectionInfo::default(),
        }
        // The server speaks every codec: the client gets the one it asks for.
        .with_codec(config.codec);
        peer.connection = Some(self.server.handle_connection_opened(now, info));
        peer.engine.handle_connected(now);
    }

    /// Closes the transport of client `index` on the server's side and empties the
    /// link. `true` if one was open.
    fn drop_transport(&mut self, index: usize) -> bool {
        let peer = &mut self.peers[index];
        peer.to_client.clear();
        peer.to_server.clear();
        match peer.connection.take() {
            Some(connection) => {
                self.server.handle_connection_closed(self.now, connection);
                true
            }
            None => false,
        }
    }

    fn drain_client(&mut self, index: usize) -> bool {
        let now = self.now;
        let mut progressed = false;
        while let Some(action) = self.peers[index].engine.poll_action() {
            progressed = true;
            match action {
                ClientAction::Connect => {
                    let peer = &mut self.peers[index];
                    peer.connects += 1;
                    peer.connect_pending = Some(now);
                }
                ClientAction::Transmit(text) => {
                    let peer = &mut self.peers[index];
                    assert!(peer.connection.is_some(), "transmit without a transport");
                    peer.to_server.push_back((now, text));
                }
                ClientAction::CloseTransport { code, reason } => {
                    self.peers[index].connect_pending = None;
                    // An orderly close: what the client wrote before its close frame
                    // arrives first (one TCP stream keeps the order).
                    if let Some(connection) = self.peers[index].connection {
                        let codec = self.peers[index].engine.config().codec;
                        let written: Vec<_> = self.peers[index].to_server.drain(..).collect();
                        for (_, text) in written {
                            self.server
                                .handle_message(now, connection, wire::to_wire(codec, text));
                        }
                    }
                    self.drop_transport(index);
                    self.peers[index]
                        .engine
                        .handle_disconnected(now, Disconnect::closed(code, reason));
                }
                other => self.peers[index].seen.push(other),
            }
        }
        progressed
    }

    fn drain_server(&mut self) -> bool {
        let now = self.now;
        let mut progressed = false;
        while let Some(action) = self.server.poll_action() {
            progressed = true;
            match action {
                Action::Transmit { connection, message } => self.transmit(connection, &message),
                Action::TransmitBroadcast {
                    prefix,
                    codec,
                    recipients,
                } => {
                    for &(connection, seq) in &recipients {
                        let message = crate::OutboundMessage::new(prefix.clone(), Some(seq), codec);
                        self.transmit(connection, &message);
                    }
                    self.server.recycle(recipients);
                }
                Action::TransmitMany { connections, message } => {
                    for connection in connections {
                        self.transmit(connection, &message);
                    }
                }
                Action::Close {
                    connection,
                    code,
                    reason,
                } => {
                    if let Some(index) = self.peer_of(connection) {
                        // What the server wrote before its close frame arrives first (one
                        // TCP stream keeps the order); the close frame ends the transport,
                        // and what the client had in flight is lost.
                        self.peers[index].connection = None;
                        let written: Vec<_> = self.peers[index].to_client.drain(..).collect();
                        for (_, text) in written {
                            self.peers[index].engine.handle_message(now, &text);
                        }
                        self.peers[index].to_server.clear();
                        self.peers[index]
                            .engine
                            .handle_disconnected(now, Disconnect::closed(code, reason));
                    }
                }
                Action::Authenticate(request) => {
                    let user = Ok(UserId::new(request.token.clone()));
                    self.server
                        .handle_auth_result(now, request.id, user)
                        .expect("an authentication the engine asked for");
                }
                Action::Event(event) => (self.handler)(&mut self.server, now, &event),
                Action::Session(event) => {
                    if let SessionEvent::Created { session, .. } = &event {
                        self.created.push(*session);
                    }
                    self.lifecycle.push(event);
                }
                Action::Publish(_) | Action::RoomOccupied(_) | Action::RoomVacated(_) => {}
                Action::Response { id, result, .. } => self.responses.push((id, result)),
                // One node, no shared store (see `nodes` for several).
                Action::Journal { .. } => {}
                Action::LoadSession {
                    connection, session, ..
                } => self
                    .server
                    .handle_session_loaded(now, connection, session, None, Some(Vec::new())),
            }
        }
        progressed
    }

    fn peer_of(&self, connection: ConnectionId) -> Option<usize> {
        self.peers
            .iter()
            .position(|peer| peer.connection == Some(connection))
    }

    /// Puts `message` on its way to the client of `connection`, as the frame its codec
    /// makes, read back as that client's driver reads it.
    fn transmit(&mut self, connection: ConnectionId, message: &crate::OutboundMessage) {
        if let Some(index) = self.peer_of(connection) {
            let peer = &mut self.peers[index];
            let text = match (message.to_message(), peer.engine.config().codec) {
                (Message::Text(text), Codec::Json) => text,
                (Message::Binary(bytes), Codec::MsgPack) => {
                    wire::from_binary(&bytes, &peer.engine.config().proto)
                        .expect("a binary envelope the client reads")
                }
                (frame, codec) => panic!("a {codec:?} client was sent {frame:?}"),
            };
            peer.to_client.push_back((self.now, text));
        }
    }
}

/// The default server application: `echo` → `echo.reply` with the payload, `fail` →
/// error 4242, each when it carries a correlation id.
pub fn echo_handler(engine: &mut Engine, now: Instant, event: &InboundEvent) {
    let Some(c) = event.correlation_id() else {
        return;
    };
    match event.event() {
        "echo" => {
            // JSON whichever codec it came in: the engine makes the binary form.
            let json = event.payload_json().ok().flatten();
            let payload = json.as_deref().map_or(Payload::None, Payload::Trusted);
            let reply = OutgoingEnvelope::new("echo.reply").with_payload(payload);
            let _ = engine.reply(now, event.session, c, &reply);
        }
        "fail" => {
            let _ = engine.reply_error(now, event.session, c, 4242, "asked to fail");
        }
        _ => {}
    }
}
