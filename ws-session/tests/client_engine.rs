//! The client engine against the server engine, both Sans-IO, under one fake clock
//! (the `cluster` harness): the two halves of protocol v1 agree (auth in either place,
//! resume with replay, refusal after the window, heartbeats, queries).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ws_proto::envelope::Payload;
use ws_proto::CloseCode;
use ws_session::client::{
    AuthMode, ClientAction, ClientConfig, ClientEngine, Constant, IncomingRequest, Jitter, QueryError,
    QueryId, SessionEnd, SessionOutcome, State,
};
use ws_session::cluster::Cluster;
use ws_session::{EngineConfig, ErrorCode, RequestFailure, RequestId, SessionId};

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

fn disconnect_info(engine: &ClientEngine) -> ws_session::client::Disconnect {
    match engine.state() {
        State::Disconnected(info) => info.clone(),
        other => panic!("not disconnected: {other:?}"),
    }
}

#[test]
fn a_client_close_ends_the_server_session_at_once() {
    let mut w = World::new(AuthMode::Message);
    let session = w.session();
    let now = w.now();
    w.cluster
        .client_mut(w.alice)
        .engine
        .close(now, CloseCode::NORMAL, "logout")
        .unwrap();
    w.cluster.settle();
    assert_eq!(
        w.cluster.server.session_info(session),
        None,
        "gone now, not after the window"
    );
    assert!(matches!(
        w.cluster.lifecycle.last(),
        Some(ws_session::SessionEvent::Closed {
            reason: ws_session::CloseReason::ByClient,
            ..
        })
    ));
    let info = disconnect_info(w.client());
    assert_eq!(info.session_end, Some(SessionEnd::ByClient));
    assert_eq!(info.code, Some(CloseCode::NORMAL));
}

#[test]
fn a_client_closed_while_offline_leaves_the_session_to_expire() {
    let mut w = World::new(AuthMode::Message);
    let session = w.session();
    w.cluster.server_up = false;
    w.cluster.cut(w.alice);
    let now = w.now();
    w.cluster
        .client_mut(w.alice)
        .engine
        .close(now, CloseCode::NORMAL, "")
        .unwrap();
    w.cluster.settle();
    assert_eq!(
        disconnect_info(w.client()).session_end,
        None,
        "not ended: it could not say so"
    );
    assert!(w.cluster.server.session_info(session).is_some(), "suspended");
}

#[test]
fn a_session_ended_by_the_server_stops_the_client_with_the_reason() {
    let mut w = World::new(AuthMode::Message);
    let session = w.session();
    let pending = w.query("ignored", Payload::None, None);
    let now = w.now();
    w.cluster.server.end_session(now, session, "kicked").unwrap();
    w.cluster.settle();
    let info = disconnect_info(w.client());
    assert_eq!(
        info.session_end,
        Some(SessionEnd::ByServer {
            reason: "kicked".into()
        })
    );
    assert_eq!(info.code, Some(ErrorCode::SESSION_ENDED.close_code()));
    assert!(w.cluster.client(w.alice).seen.iter().any(|a| matches!(
        a,
        ClientAction::QueryResult { id, result: Err(QueryError::Closed) } if *id == pending
    )));
    w.cluster.advance(Duration::from_secs(3600));
    assert_eq!(w.cluster.client(w.alice).connects, 1, "no reconnect");
    assert_eq!(w.client().session_id(), None, "nothing to resume");
}

#[test]
fn a_close_4115_alone_also_stops_the_client() {
    let mut w = World::new(AuthMode::Message);
    let now = w.now();
    let engine = &mut w.cluster.client_mut(w.alice).engine;
    engine.handle_disconnected(
        now,
        ws_session::client::Disconnect::closed(ErrorCode::SESSION_ENDED.close_code(), "bye"),
    );
    assert_eq!(
        disconnect_info(engine).session_end,
        Some(SessionEnd::ByServer { reason: "bye".into() })
    );
}

/// The server requests the client hold.
fn requests(w: &World) -> Vec<IncomingRequest> {
    w.cluster
        .client(w.alice)
        .seen
        .iter()
        .filter_map(|a| match a {
            ClientAction::Request(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn server_request(w: &mut World, timeout: Duration) -> RequestId {
    let now = w.now();
    let session = w.session();
    let payload = serde_json::value::RawValue::from_string("{\"tz\":\"UTC\"}".to_owned()).unwrap();
    let id = w
        .cluster
        .server
        .request(now, session, "client.time", Some(&payload), timeout)
        .unwrap();
    w.cluster.settle();
    id
}

fn answer(w: &mut World, request: &IncomingRequest, result: Result<Payload<'_>, (u16, &str)>) {
    let now = w.now();
    w.cluster
        .client_mut(w.alice)
        .engine
        .answer(now, request, result)
        .unwrap();
    w.cluster.settle();
}

#[test]
fn a_server_request_is_answered_by_the_client_engine() {
    let mut w = World::new(AuthMode::Message);
    let id = server_request(&mut w, Duration::from_secs(5));
    let [request] = &requests(&w)[..] else {
        panic!("one request: {:?}", requests(&w));
    };
    assert_eq!(
        (request.event.as_str(), request.payload.as_deref()),
        ("client.time", Some("{\"tz\":\"UTC\"}"))
    );
    answer(&mut w, request, Ok(Payload::Trusted("\"12:00\"")));
    assert_eq!(w.cluster.responses, [(id, Ok(Some("\"12:00\"".to_owned())))]);

    let refused = server_request(&mut w, Duration::from_secs(5));
    let request = requests(&w).pop().unwrap();
    answer(&mut w, &request, Err((4201, "not now")));
    assert_eq!(
        w.cluster.responses[1],
        (
            refused,
            Err(RequestFailure::Refused {
                code: 4201,
                message: "not now".into()
            })
        )
    );
}

#[test]
fn a_server_request_cut_off_by_a_drop_is_replayed_once_and_answered_after_the_resume() {
    let mut w = World::new(AuthMode::Message);
    w.cluster.server_up = false;
    w.cluster.cut(w.alice);
    let id = server_request(&mut w, Duration::from_secs(30));
    assert!(requests(&w).is_empty(), "the client is away");
    w.cluster.server_up = true;
    w.cluster.heal(w.alice);
    let [request] = &requests(&w)[..] else {
        panic!("replayed once: {:?}", requests(&w));
    };
    answer(&mut w, request, Ok(Payload::Trusted("1")));
    assert_eq!(w.cluster.responses, [(id, Ok(Some("1".to_owned())))]);
    // Cut again after it was delivered: the resume does not deliver it a second time.
    w.cluster.cut(w.alice);
    w.cluster.heal(w.alice);
    assert_eq!(requests(&w).len(), 1);
}

#[test]
fn an_answer_made_offline_goes_out_on_the_restored_session_only() {
    let mut w = World::new(AuthMode::Message);
    let id = server_request(&mut w, Duration::from_secs(30));
    let request = requests(&w).pop().unwrap();
    w.cluster.server_up = false;
    w.cluster.cut(w.alice);
    let now = w.now();
    w.cluster
        .client_mut(w.alice)
        .engine
        .answer(now, &request, Ok(Payload::Trusted("2")))
        .unwrap();
    assert_eq!(w.client().queued(), 1, "waits for its session");
    w.cluster.server_up = true;
    w.cluster.heal(w.alice);
    assert_eq!(w.cluster.responses, [(id, Ok(Some("2".to_owned())))]);
}
