//! The client engine against the server engine, both Sans-IO, under one fake clock:
//! the two halves of protocol v1 agree (auth in either place, resume with replay,
//! refusal after the window, heartbeats, queries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_proto::{CloseCode, Message};
use ws_session::client::{
    AuthMode, ClientAction, ClientConfig, ClientEngine, Constant, Disconnect, Jitter, QueryError, QueryId,
    SessionOutcome, State,
};
use ws_session::{
    Action, ConnectionId, ConnectionInfo, Engine, EngineConfig, SessionEvent, SessionId, UserId,
};

struct World {
    now: Instant,
    server: Engine,
    client: ClientEngine,
    /// The server side of the client's current transport.
    conn: Option<ConnectionId>,
    /// Whether connection attempts reach the server.
    server_up: bool,
    /// The client's actions worth checking (events, sessions, states, query results).
    seen: Vec<ClientAction>,
    /// Sessions the server created, in order.
    created: Vec<SessionId>,
    /// Deliver the server's answer to a handshake credential before the client's first
    /// message (as a server that authenticates quickly does).
    server_first: bool,
    connects: usize,
}

impl World {
    fn new(mode: AuthMode) -> Self {
        // The fake clock's origin: the one real clock read of the test.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let server = Engine::new(EngineConfig::default(), ChaCha20Rng::seed_from_u64(1)).unwrap();
        let mut config = ClientConfig::with_credential("alice");
        config.auth_mode = mode;
        config.backoff = Arc::new(Constant {
            delay: Duration::from_millis(100),
            jitter: Jitter::None,
        });
        let client = ClientEngine::new(now, config, ChaCha8Rng::seed_from_u64(2));
        let mut world = Self {
            now,
            server,
            client,
            conn: None,
            server_up: true,
            seen: Vec::new(),
            created: Vec::new(),
            server_first: mode == AuthMode::Handshake,
            connects: 0,
        };
        world.pump();
        world
    }

    /// Moves every message and lifecycle input between the two until both are quiet.
    fn pump(&mut self) {
        while self.pump_client() | self.pump_server() {}
    }

    fn pump_client(&mut self) -> bool {
        let now = self.now;
        let mut progressed = false;
        while let Some(action) = self.client.poll_action() {
            progressed = true;
            match action {
                ClientAction::Connect => {
                    self.connects += 1;
                    if self.server_up {
                        let info = match self.client.config().auth_mode {
                            AuthMode::Handshake => ConnectionInfo::with_token("alice"),
                            _ => ConnectionInfo::default(),
                        };
                        self.conn = Some(self.server.handle_connection_opened(now, info));
                        self.client.handle_connected(now);
                        if self.server_first {
                            // The server's answer to the handshake credential (a
                            // fresh session) arrives before the client's first message.
                            self.pump_server();
                        }
                    } else {
                        self.client
                            .handle_disconnected(now, Disconnect::failed("connection refused"));
                    }
                }
                ClientAction::Transmit(text) => {
                    let conn = self.conn.expect("transmit without a transport");
                    self.server.handle_message(now, conn, Message::Text(text));
                }
                ClientAction::CloseTransport { code, reason } => {
                    if let Some(conn) = self.conn.take() {
                        self.server.handle_connection_closed(now, conn);
                    }
                    self.client
                        .handle_disconnected(now, Disconnect::closed(code, reason));
                }
                other => self.seen.push(other),
            }
        }
        progressed
    }

    fn pump_server(&mut self) -> bool {
        let now = self.now;
        let mut progressed = false;
        while let Some(action) = self.server.poll_action() {
            progressed = true;
            match action {
                Action::Transmit { connection, message } => self.deliver(connection, &message.to_text()),
                Action::TransmitBroadcast { prefix, recipients } => {
                    for (connection, seq) in recipients {
                        let message = ws_session::OutboundMessage {
                            prefix: prefix.clone(),
                            seq: Some(seq),
                        };
                        self.deliver(connection, &message.to_text());
                    }
                }
                Action::TransmitMany { connections, message } => {
                    for connection in connections {
                        self.deliver(connection, &message.to_text());
                    }
                }
                Action::Close {
                    connection,
                    code,
                    reason,
                    ..
                } if self.conn == Some(connection) => {
                    self.conn = None;
                    self.client
                        .handle_disconnected(now, Disconnect::closed(code, reason));
                }
                Action::Authenticate(request) => {
                    let user = Ok(UserId::new(request.token.clone()));
                    self.server.handle_auth_result(now, request.id, user).unwrap();
                }
                Action::Event(event) => {
                    // `echo` replies with its payload; `fail` with an error; others: nothing.
                    let c = event.correlation_id().map(str::to_owned);
                    match (event.event(), c) {
                        ("echo", Some(c)) => {
                            let payload = event.payload().map(str::to_owned);
                            let reply = OutgoingEnvelope::new("echo.reply")
                                .with_payload(payload.as_deref().map_or(Payload::None, Payload::Trusted));
                            self.server.reply(now, event.session, &c, &reply).unwrap();
                        }
                        ("fail", Some(c)) => {
                            self.server
                                .reply_error(now, event.session, &c, 4242, "asked to fail")
                                .unwrap();
                        }
                        _ => {}
                    }
                }
                Action::Session(SessionEvent::Created { session, .. }) => self.created.push(session),
                _ => {}
            }
        }
        progressed
    }

    fn deliver(&mut self, connection: ConnectionId, text: &str) {
        if self.conn == Some(connection) {
            self.client.handle_message(self.now, text);
        }
    }

    /// Runs both engines' timers up to `now + by`.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.server.poll_timeout(), self.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.server.handle_timeout(self.now);
                    self.client.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        self.server.handle_timeout(end);
        self.client.handle_timeout(end);
        self.pump();
    }

    /// The transport drops without a close frame, on both sides.
    fn cut(&mut self) {
        let conn = self.conn.take().expect("connected");
        self.server.handle_connection_closed(self.now, conn);
        self.client
            .handle_disconnected(self.now, Disconnect::closed(CloseCode::ABNORMAL, ""));
        self.pump();
    }

    fn server_send(&mut self, n: u64) {
        let session = self.session();
        let payload = n.to_string();
        let env = OutgoingEnvelope::new("tick").with_payload(Payload::Trusted(&payload));
        self.server.send(self.now, session, &env).unwrap();
        self.pump();
    }

    /// The server's id of the session the client holds.
    fn session(&self) -> SessionId {
        SessionId::parse(self.client.session_id().expect("a session")).unwrap()
    }

    fn ticks(&self) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|a| match a {
                ClientAction::Event(env) if &*env.event == "tick" => Some(env.payload_as::<u64>().unwrap()),
                _ => None,
            })
            .collect()
    }

    fn sessions(&self) -> Vec<&SessionOutcome> {
        self.seen
            .iter()
            .filter_map(|a| match a {
                ClientAction::Session(outcome) => Some(outcome),
                _ => None,
            })
            .collect()
    }

    fn result(&self, id: QueryId) -> Option<&Result<ws_proto::envelope::OwnedEnvelope, QueryError>> {
        self.seen.iter().find_map(|a| match a {
            ClientAction::QueryResult { id: got, result } if *got == id => Some(result),
            _ => None,
        })
    }
}

fn resume_replays_once_in_order(mode: AuthMode) {
    let mut w = World::new(mode);
    assert_eq!(w.client.state(), &State::Connected);
    for n in 1..=5 {
        w.server_send(n);
    }
    w.cut();
    assert!(matches!(w.client.state(), State::Reconnecting { attempt: 1, .. }));
    for n in 6..=15 {
        w.server_send(n);
    }
    w.advance(Duration::from_millis(100));
    assert_eq!(w.client.state(), &State::Reconnected);
    for n in 16..=20 {
        w.server_send(n);
    }
    assert_eq!(w.ticks(), (1..=20).collect::<Vec<_>>());
    let sessions = w.sessions();
    assert!(matches!(sessions[0], SessionOutcome::Created(_)));
    assert!(
        matches!(sessions[1], SessionOutcome::Restored { replayed: 10, .. }),
        "{sessions:?}"
    );
    assert_eq!(sessions.len(), 2);
    if mode == AuthMode::Handshake {
        // The fresh session announced to the second connection was forgotten.
        assert_eq!(w.created.len(), 2);
        assert_eq!(w.session(), w.created[0]);
    }
    // The acks let the server trim its buffer: after the ack delay nothing is held.
    w.advance(Duration::from_secs(2));
    let info = w.server.session_info(w.session()).unwrap();
    assert_eq!(info.replay_len, 0, "{info:?}");
}

#[test]
fn resume_replays_once_in_order_with_auth_message() {
    resume_replays_once_in_order(AuthMode::Message);
}

#[test]
fn resume_replays_once_in_order_with_handshake_auth() {
    resume_replays_once_in_order(AuthMode::Handshake);
}

#[test]
fn after_the_window_the_resume_is_refused_and_pending_queries_fail() {
    let mut w = World::new(AuthMode::Message);
    let first = w.session();
    w.server_send(1);
    let lost = w
        .client
        .query(w.now, "ignore", Payload::None, Some(Duration::from_secs(3600)))
        .unwrap();
    w.pump();
    w.server_up = false;
    w.cut();
    // Down for longer than the resume window (2 min): the session expires.
    w.advance(Duration::from_secs(200));
    assert!(w.connects > 10, "kept trying: {}", w.connects);
    w.server_up = true;
    w.advance(Duration::from_secs(60));
    assert_eq!(w.client.state(), &State::Reconnected);
    assert_ne!(w.session(), first);
    match w.sessions()[1] {
        SessionOutcome::NotRestored {
            reason,
            failed_queries,
            ..
        } => assert_eq!((reason.as_str(), *failed_queries), ("expired", 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.result(lost),
        Some(&Err(QueryError::NotRestored {
            reason: "expired".into()
        }))
    );
    // The new stream numbers from 1 again and is delivered.
    w.server_send(2);
    assert_eq!(w.ticks(), vec![1, 2]);
}

#[test]
fn heartbeats_keep_an_idle_connection_alive() {
    let mut w = World::new(AuthMode::Message);
    w.advance(Duration::from_secs(600));
    assert_eq!(w.client.state(), &State::Connected);
    assert_eq!(w.connects, 1);
}

#[test]
fn queries_against_the_server_engine() {
    let mut w = World::new(AuthMode::Message);
    let ok = w
        .client
        .query(w.now, "echo", Payload::Trusted("[1,2]"), None)
        .unwrap();
    let err = w.client.query(w.now, "fail", Payload::None, None).unwrap();
    let silent = w.client.query(w.now, "ignore", Payload::None, None).unwrap();
    w.pump();
    let Some(Ok(reply)) = w.result(ok) else {
        panic!("{:?}", w.result(ok));
    };
    assert_eq!(reply.payload.as_ref().unwrap().get(), "[1,2]");
    assert!(matches!(w.result(err), Some(Err(QueryError::Server(e))) if e.code == 4242));
    assert_eq!(w.result(silent), None);
    w.advance(Duration::from_secs(30));
    assert_eq!(w.result(silent), Some(&Err(QueryError::Timeout)));
}

#[test]
fn close_ends_the_session_and_nothing_reconnects() {
    let mut w = World::new(AuthMode::Message);
    w.client.close(w.now, CloseCode::NORMAL, "bye").unwrap();
    w.pump();
    assert!(matches!(w.client.state(), State::Disconnected(_)));
    w.advance(Duration::from_secs(3600));
    assert_eq!(w.connects, 1);
}
