//! The client engine against the server engine, both Sans-IO, under one fake clock
//! (the `cluster` harness): the two halves of protocol v1 agree (auth in either place,
//! resume with replay, refusal after the window, heartbeats, queries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ws_proto::envelope::Payload;
use ws_proto::CloseCode;
use ws_session::client::{
    AuthMode, ClientAction, ClientConfig, ClientEngine, Constant, Jitter, QueryError, QueryId,
    SessionOutcome, State,
};
use ws_session::cluster::Cluster;
use ws_session::{EngineConfig, SessionId};

/// The harness's cluster with one client, `alice`, retrying every 100 ms.
struct World {
    cluster: Cluster,
    alice: usize,
}

impl World {
    fn new(mode: AuthMode) -> Self {
        let mut cluster = Cluster::new(EngineConfig::default(), 1);
        let mut config = ClientConfig::with_credential("alice");
        config.auth_mode = mode;
        config.backoff = Arc::new(Constant {
            delay: Duration::from_millis(100),
            jitter: Jitter::None,
        });
        let alice = cluster.add_client(config);
        cluster.settle();
        Self { cluster, alice }
    }

    fn client(&self) -> &ClientEngine {
        &self.cluster.client(self.alice).engine
    }

    fn now(&self) -> Instant {
        self.cluster.now
    }

    fn query(&mut self, event: &str, payload: Payload<'_>, timeout: Option<Duration>) -> QueryId {
        let now = self.cluster.now;
        let id = self
            .cluster
            .client_mut(self.alice)
            .engine
            .query(now, event, payload, timeout)
            .unwrap();
        self.cluster.settle();
        id
    }

    fn server_send(&mut self, n: u64) {
        let session = self.session();
        self.cluster.send_to(session, "tick", &n.to_string());
    }

    /// The server's id of the session the client holds.
    fn session(&self) -> SessionId {
        self.cluster.session(self.alice).expect("a session")
    }

    fn ticks(&self) -> Vec<u64> {
        let ticks = self.cluster.client(self.alice).events_named("tick");
        ticks.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn sessions(&self) -> Vec<&SessionOutcome> {
        self.cluster
            .client(self.alice)
            .seen
            .iter()
            .filter_map(|a| match a {
                ClientAction::Session(outcome) => Some(outcome),
                _ => None,
            })
            .collect()
    }

    fn result(&self, id: QueryId) -> Option<&Result<ws_proto::envelope::OwnedEnvelope, QueryError>> {
        self.cluster.client(self.alice).seen.iter().find_map(|a| match a {
            ClientAction::QueryResult { id: got, result } if *got == id => Some(result),
            _ => None,
        })
    }
}

fn resume_replays_once_in_order(mode: AuthMode) {
    let mut w = World::new(mode);
    assert_eq!(w.client().state(), &State::Connected);
    for n in 1..=5 {
        w.server_send(n);
    }
    w.cluster.cut(w.alice);
    assert!(matches!(
        w.client().state(),
        State::Reconnecting { attempt: 1, .. }
    ));
    for n in 6..=15 {
        w.server_send(n);
    }
    w.cluster.advance(Duration::from_millis(100));
    assert_eq!(w.client().state(), &State::Reconnected);
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
        assert_eq!(w.cluster.created.len(), 2);
        assert_eq!(w.session(), w.cluster.created[0]);
    }
    // The acks let the server trim its buffer: after the ack delay nothing is held.
    w.cluster.advance(Duration::from_secs(2));
    let info = w.cluster.server.session_info(w.session()).unwrap();
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
    let lost = w.query("ignore", Payload::None, Some(Duration::from_secs(3600)));
    w.cluster.server_up = false;
    w.cluster.cut(w.alice);
    // Down for longer than the resume window (2 min): the session expires.
    w.cluster.advance(Duration::from_secs(200));
    let connects = w.cluster.client(w.alice).connects;
    assert!(connects > 10, "kept trying: {connects}");
    w.cluster.server_up = true;
    w.cluster.advance(Duration::from_secs(60));
    assert_eq!(w.client().state(), &State::Reconnected);
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
    w.cluster.advance(Duration::from_secs(600));
    assert_eq!(w.client().state(), &State::Connected);
    assert_eq!(w.cluster.client(w.alice).connects, 1);
}

#[test]
fn queries_against_the_server_engine() {
    let mut w = World::new(AuthMode::Message);
    let ok = w.query("echo", Payload::Trusted("[1,2]"), None);
    let err = w.query("fail", Payload::None, None);
    let silent = w.query("ignore", Payload::None, None);
    let Some(Ok(reply)) = w.result(ok) else {
        panic!("{:?}", w.result(ok));
    };
    assert_eq!(reply.payload.as_ref().unwrap().get(), "[1,2]");
    assert!(matches!(w.result(err), Some(Err(QueryError::Server(e))) if e.code == 4242));
    assert_eq!(w.result(silent), None);
    w.cluster.advance(Duration::from_secs(30));
    assert_eq!(w.result(silent), Some(&Err(QueryError::Timeout)));
}

#[test]
fn close_ends_the_session_and_nothing_reconnects() {
    let mut w = World::new(AuthMode::Message);
    let now = w.now();
    w.cluster
        .client_mut(w.alice)
        .engine
        .close(now, CloseCode::NORMAL, "bye")
        .unwrap();
    w.cluster.settle();
    assert!(matches!(w.client().state(), State::Disconnected(_)));
    w.cluster.advance(Duration::from_secs(3600));
    assert_eq!(w.cluster.client(w.alice).connects, 1);
}
