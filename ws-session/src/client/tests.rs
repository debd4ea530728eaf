//! The client engine under a fake clock, against a scripted server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ws_proto::envelope::Payload;
use ws_proto::CloseCode;

use super::*;

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(42)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The engine, a fake clock and every action drained so far.
struct Harness {
    client: ClientEngine,
    now: Instant,
    actions: Vec<ClientAction>,
}

impl Harness {
    fn new(config: ClientConfig) -> Self {
        // The fake clock's origin: the one real clock read of these tests.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let client = ClientEngine::new(now, config, rng());
        let mut h = Self {
            client,
            now,
            actions: Vec::new(),
        };
        h.drain();
        h
    }

    fn drain(&mut self) -> Vec<ClientAction> {
        let mut out = Vec::new();
        while let Some(action) = self.client.poll_action() {
            out.push(action);
        }
        self.actions.extend(out.iter().cloned());
        out
    }

    /// Moves the clock to `at` and fires the timer.
    fn advance_to(&mut self, at: Instant) -> Vec<ClientAction> {
        assert!(at >= self.now);
        self.now = at;
        self.client.handle_timeout(at);
        self.drain()
    }

    fn advance(&mut self, by: Duration) -> Vec<ClientAction> {
        self.advance_to(self.now + by)
    }

    /// Fires the next timer, whatever it is.
    fn fire(&mut self) -> Vec<ClientAction> {
        let at = self.client.poll_timeout().expect("a timer is armed");
        self.advance_to(at.max(self.now))
    }

    fn connected(&mut self) -> Vec<ClientAction> {
        self.client.handle_connected(self.now);
        self.drain()
    }

    fn recv(&mut self, text: &str) -> Vec<ClientAction> {
        self.client.handle_message(self.now, text);
        self.drain()
    }

    fn dropped(&mut self) -> Vec<ClientAction> {
        self.client
            .handle_disconnected(self.now, Disconnect::closed(CloseCode::ABNORMAL, ""));
        self.drain()
    }

    /// Connects and gets session `sid` announced.
    fn online(&mut self, sid: &str) {
        self.connected();
        self.recv(&created(sid, "tok1"));
        assert!(self.client.is_online());
    }
}

fn created(sid: &str, token: &str) -> String {
    format!(
        r#"{{"v":"1.0","e":"sys.session.created","p":{{"sessionId":"{sid}","userId":"alice","resumeToken":"{token}","heartbeatMs":20000,"resumeWindowMs":120000}}}}"#
    )
}

fn restored(sid: &str, token: &str, replayed: u64) -> String {
    format!(
        r#"{{"v":"1.0","e":"sys.session.restored","c":"r2","p":{{"sessionId":"{sid}","resumeToken":"{token}","replayed":{replayed}}}}}"#
    )
}

fn msg(seq: u64) -> String {
    format!(r#"{{"v":"1.0","e":"chat.message","p":{{"n":{seq}}},"s":{seq}}}"#)
}

fn transmits(actions: &[ClientAction]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            ClientAction::Transmit(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn events(actions: &[ClientAction]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            ClientAction::Event(env) => env.seq,
            _ => None,
        })
        .collect()
}

fn states(actions: &[ClientAction]) -> Vec<State> {
    actions
        .iter()
        .filter_map(|a| match a {
            ClientAction::StateChanged(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn count_connects(actions: &[ClientAction]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, ClientAction::Connect))
        .count()
}

/// The reconnect delays a client waits through `n` failed attempts in a row.
fn delays(backoff: impl Backoff + 'static, n: usize) -> Vec<Duration> {
    let config = ClientConfig {
        backoff: Arc::new(backoff),
        ..ClientConfig::default()
    };
    let mut h = Harness::new(config);
    let mut out = Vec::new();
    for _ in 0..n {
        h.client
            .handle_disconnected(h.now, Disconnect::failed("connection refused"));
        let actions = h.drain();
        let Some(State::Reconnecting { delay, .. }) = states(&actions).pop() else {
            panic!("not reconnecting: {actions:?}");
        };
        out.push(delay);
        // Nothing happens before the delay; the attempt comes exactly at it.
        assert_eq!(h.client.poll_timeout(), Some(h.now + delay));
        let at = h.advance(delay);
        assert_eq!(count_connects(&at), 1, "{at:?}");
    }
    out
}

#[test]
fn constant_backoff_sequence() {
    let d = delays(
        Constant {
            delay: ms(250),
            jitter: Jitter::None,
        },
        4,
    );
    assert_eq!(d, vec![ms(250); 4]);
}

#[test]
fn linear_backoff_sequence() {
    let d = delays(
        Linear {
            initial: ms(100),
            increment: ms(300),
            maximum: ms(1000),
            jitter: Jitter::None,
        },
        6,
    );
    assert_eq!(d, [100, 400, 700, 1000, 1000, 1000].map(ms));
}

#[test]
fn exponential_backoff_sequence() {
    let d = delays(
        Exponential {
            initial: ms(500),
            max_step: 4,
            jitter: Jitter::None,
        },
        7,
    );
    assert_eq!(d, [500, 1000, 2000, 4000, 8000, 8000, 8000].map(ms));
}

#[test]
fn jitter_stays_in_bounds_and_varies() {
    let strategy = Exponential {
        initial: ms(1000),
        max_step: 3,
        jitter: Jitter::Proportional(0.25),
    };
    let d = delays(strategy, 40);
    for (i, delay) in d.iter().enumerate() {
        let base = ms(1000 << i.min(3));
        assert!(
            *delay <= base && *delay >= base.mul_f64(0.75),
            "attempt {}: {delay:?}",
            i + 1
        );
    }
    // Drawn, not constant: the capped attempts do not all wait the same.
    let capped: std::collections::BTreeSet<_> = d[3..].iter().collect();
    assert!(capped.len() > 10, "{capped:?}");
    // Out-of-range ratios are clamped: full jitter stays within [0, base].
    let mut rng = rng();
    for _ in 0..100 {
        let d = Jitter::Proportional(7.0).apply(ms(100), &mut rng);
        assert!(d <= ms(100));
        let d = Jitter::Proportional(-1.0).apply(ms(100), &mut rng);
        assert_eq!(d, ms(100));
    }
}

#[test]
fn default_backoff_is_the_documented_sequence_with_half_jitter() {
    // 0.5 s doubling to 32 s (step 6), each lowered by at most half.
    let d = delays(Exponential::default(), 10);
    for (i, delay) in d.iter().enumerate() {
        let base = ms(500 << i.min(6));
        assert!(
            *delay <= base && *delay >= base / 2,
            "attempt {}: {delay:?}",
            i + 1
        );
    }
}

#[test]
fn constant_and_linear_jitter_stay_in_bounds() {
    let d = delays(
        Constant {
            delay: ms(1000),
            jitter: Jitter::Proportional(0.1),
        },
        20,
    );
    assert!(d.iter().all(|d| *d <= ms(1000) && *d >= ms(900)), "{d:?}");
    assert!(d.iter().collect::<std::collections::BTreeSet<_>>().len() > 1);
    let d = delays(
        Linear {
            initial: ms(100),
            increment: ms(100),
            maximum: ms(500),
            jitter: Jitter::Proportional(1.0),
        },
        8,
    );
    for (i, delay) in d.iter().enumerate() {
        assert!(
            *delay <= ms(100 * (i as u64 + 1).min(5)),
            "attempt {}: {delay:?}",
            i + 1
        );
    }
}

#[test]
fn custom_backoff_is_used() {
    #[derive(Debug)]
    struct Fib;
    impl Backoff for Fib {
        fn delay(&self, attempt: u32, _rng: &mut dyn rand_core::RngCore) -> Duration {
            let (mut a, mut b) = (1u64, 1u64);
            for _ in 1..attempt {
                (a, b) = (b, a + b);
            }
            Duration::from_secs(a)
        }
    }
    let d = delays(Fib, 6);
    assert_eq!(d, [1, 1, 2, 3, 5, 8].map(Duration::from_secs));
}

#[test]
fn attempts_reset_after_a_session() {
    let config = ClientConfig {
        backoff: Arc::new(Linear {
            initial: ms(100),
            increment: ms(100),
            maximum: ms(10_000),
            jitter: Jitter::None,
        }),
        ..ClientConfig::default()
    };
    let mut h = Harness::new(config);
    h.client.handle_disconnected(h.now, Disconnect::failed("refused"));
    h.drain();
    h.fire();
    h.client.handle_disconnected(h.now, Disconnect::failed("refused"));
    let a = h.drain();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 2,
            delay: ms(200)
        }]
    );
    h.fire();
    h.online("s1");
    let a = h.dropped();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 1,
            delay: ms(100)
        }]
    );
}

#[test]
fn first_session_sends_auth_and_reports_created() {
    let mut h = Harness::new(ClientConfig::with_credential("secret"));
    assert_eq!(states(&h.actions), vec![State::Connecting]);
    assert_eq!(count_connects(&h.actions), 1);
    let a = h.connected();
    assert_eq!(
        transmits(&a),
        vec![r#"{"v":"1.0","e":"sys.auth","p":{"token":"secret"},"c":"a1"}"#.to_owned()]
    );
    let a = h.recv(&created("s1", "t1"));
    assert_eq!(states(&a), vec![State::Connected]);
    assert!(a.iter().any(|x| matches!(
        x,
        ClientAction::Session(SessionOutcome::Created(SessionDetails { session_id, user_id }))
            if session_id == "s1" && user_id == "alice"
    )));
    assert_eq!(h.client.user_id(), Some("alice"));
}

#[test]
fn handshake_auth_sends_no_auth_message() {
    let config = ClientConfig {
        auth_mode: AuthMode::Handshake,
        ..ClientConfig::with_credential("secret")
    };
    let mut h = Harness::new(config);
    assert!(transmits(&h.connected()).is_empty());
    h.recv(&created("s1", "t1"));
    h.dropped();
    h.fire();
    let a = h.connected();
    // No credential in the resume: the new handshake carries it.
    assert_eq!(
        transmits(&a),
        vec![r#"{"v":"1.0","e":"sys.reconnect.request","p":{"sessionId":"s1","resumeToken":"t1","lastSeq":0},"c":"r1"}"#.to_owned()]
    );
    // The server announces a fresh session before answering the resume: ignored.
    let a = h.recv(&created("fresh", "tf"));
    assert!(states(&a).is_empty() && !h.client.is_online(), "{a:?}");
    let a = h.recv(&restored("s1", "t2", 0));
    assert_eq!(states(&a), vec![State::Reconnected]);
    assert_eq!(h.client.session_id(), Some("s1"));
}

#[test]
fn answers_ping_with_pong() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    let a = h.recv(r#"{"v":"1.0","e":"sys.ping","c":"x"}"#);
    assert_eq!(
        transmits(&a),
        vec![r#"{"v":"1.0","e":"sys.pong","c":"x"}"#.to_owned()]
    );
}

#[test]
fn acks_every_16_messages_or_after_a_second() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    let mut sent = Vec::new();
    for s in 1..=20 {
        sent.extend(transmits(&h.recv(&msg(s))));
    }
    assert_eq!(
        sent,
        vec![r#"{"v":"1.0","e":"sys.ack","p":{"seq":16}}"#.to_owned()]
    );
    // 4 more unacknowledged: the ack comes after the ack delay.
    assert!(transmits(&h.advance(ms(900))).is_empty());
    let a = h.advance(ms(100));
    assert_eq!(
        transmits(&a),
        vec![r#"{"v":"1.0","e":"sys.ack","p":{"seq":20}}"#.to_owned()]
    );
    assert!(transmits(&h.advance(ms(5000))).is_empty());
}

#[test]
fn duplicates_are_dropped() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    let mut got = Vec::new();
    for s in [1, 2, 2, 1, 3, 3] {
        got.extend(events(&h.recv(&msg(s))));
    }
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn resume_replays_once_in_order() {
    let mut h = Harness::new(ClientConfig::with_credential("secret"));
    h.online("s1");
    for s in 1..=3 {
        h.recv(&msg(s));
    }
    let a = h.dropped();
    assert!(matches!(states(&a)[..], [State::Reconnecting { attempt: 1, .. }]));
    let a = h.fire();
    assert_eq!(count_connects(&a), 1);
    let a = h.connected();
    assert_eq!(
        transmits(&a),
        vec![r#"{"v":"1.0","e":"sys.reconnect.request","p":{"sessionId":"s1","resumeToken":"tok1","lastSeq":3,"token":"secret"},"c":"r2"}"#.to_owned()]
    );
    let mut a = h.recv(&restored("s1", "t2", 3));
    // The server replays 4..=6; a stale copy of 3 and a duplicate 5 are dropped.
    for s in [3, 4, 5, 5, 6] {
        a.extend(h.recv(&msg(s)));
    }
    assert_eq!(events(&a), vec![4, 5, 6]);
    assert_eq!(states(&a), vec![State::Reconnected]);
    assert!(a.iter().any(|x| matches!(
        x,
        ClientAction::Session(SessionOutcome::Restored { replayed: 3, session_id }) if session_id == "s1"
    )));
    // The rotated token is used next time.
    h.dropped();
    h.fire();
    let a = h.connected();
    assert!(
        transmits(&a)[0].contains(r#""resumeToken":"t2","lastSeq":6"#),
        "{a:?}"
    );
}

#[test]
fn refused_resume_starts_a_new_session_and_fails_pending_queries() {
    let mut h = Harness::new(ClientConfig::with_credential("secret"));
    h.online("s1");
    h.recv(&msg(1));
    let sent = h.client.query(h.now, "get", Payload::None, None).unwrap();
    h.drain();
    h.dropped();
    // Made while offline: waits in the queue and survives the lost session.
    let queued = h.client.query(h.now, "get2", Payload::None, None).unwrap();
    h.client.send(h.now, "note", Payload::None).unwrap();
    h.fire();
    h.connected();
    let mut a = h.recv(
        r#"{"v":"1.0","e":"sys.error","c":"r2","p":{"code":4106,"message":"session not recoverable: expired","reason":"expired"}}"#,
    );
    assert!(a.is_empty(), "{a:?}");
    a.extend(h.recv(&created("s2", "n1")));
    assert_eq!(states(&a), vec![State::Reconnected]);
    assert!(a.contains(&ClientAction::QueryResult {
        id: sent,
        result: Err(QueryError::NotRestored {
            reason: "expired".into()
        })
    }));
    assert!(a.iter().any(|x| matches!(
        x,
        ClientAction::Session(SessionOutcome::NotRestored { reason, previous_session_id, session, failed_queries: 1 })
            if reason == "expired" && previous_session_id == "s1" && session.session_id == "s2"
    )), "{a:?}");
    // The queued query and message are written once, on the new session.
    let t = transmits(&a);
    assert_eq!(
        t,
        vec![
            r#"{"v":"1.0","e":"get2","c":"q2"}"#.to_owned(),
            r#"{"v":"1.0","e":"note"}"#.to_owned()
        ]
    );
    // Numbering restarts with the new stream.
    assert_eq!(h.client.last_seq(), 0);
    assert_eq!(events(&h.recv(&msg(1))), vec![1]);
    let a = h.recv(r#"{"v":"1.0","e":"get2.ok","c":"q2","p":1,"s":2}"#);
    assert!(
        matches!(&a[..], [ClientAction::QueryResult { id, result: Ok(env) }] if *id == queued && &*env.event == "get2.ok")
    );
}

#[test]
fn query_resolves_to_reply_or_error() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    let q1 = h
        .client
        .query(h.now, "sum", Payload::Trusted("[1,2]"), None)
        .unwrap();
    let q2 = h
        .client
        .query(h.now, "sum", Payload::Trusted("[]"), None)
        .unwrap();
    let a = h.drain();
    assert_eq!(
        transmits(&a),
        vec![
            r#"{"v":"1.0","e":"sum","p":[1,2],"c":"q1"}"#.to_owned(),
            r#"{"v":"1.0","e":"sum","p":[],"c":"q2"}"#.to_owned()
        ]
    );
    let a = h.recv(r#"{"v":"1.0","e":"sys.error","c":"q2","p":{"code":4200,"message":"empty"},"s":1}"#);
    assert_eq!(
        a,
        vec![ClientAction::QueryResult {
            id: q2,
            result: Err(QueryError::Server(ServerError {
                code: 4200,
                message: "empty".into(),
                reason: None
            }))
        }]
    );
    let a = h.recv(r#"{"v":"1.0","e":"sum.result","c":"q1","p":3,"s":2}"#);
    assert!(
        matches!(&a[..], [ClientAction::QueryResult { id, result: Ok(env) }]
        if *id == q1 && env.payload.as_ref().map(|p| p.get()) == Some("3"))
    );
    // A reply nobody waits for is an ordinary event.
    let a = h.recv(r#"{"v":"1.0","e":"sum.result","c":"q1","s":3}"#);
    assert_eq!(events(&a), vec![3]);
    // An error answering nothing is reported as such.
    let a = h.recv(r#"{"v":"1.0","e":"sys.error","p":{"code":4105,"message":"slow down"}}"#);
    assert!(matches!(
        &a[..],
        [ClientAction::ServerError(ServerError { code: 4105, .. })]
    ));
}

#[test]
fn queries_time_out() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    let fast = h.client.query(h.now, "a", Payload::None, Some(ms(500))).unwrap();
    let slow = h.client.query(h.now, "b", Payload::None, None).unwrap();
    h.drain();
    let a = h.advance(ms(499));
    assert!(a.is_empty());
    let a = h.advance(ms(1));
    assert_eq!(
        a,
        vec![ClientAction::QueryResult {
            id: fast,
            result: Err(QueryError::Timeout)
        }]
    );
    // The default: 30 s from the call.
    let a = h.advance(Duration::from_secs(30) - ms(501));
    assert!(a.is_empty(), "{a:?}");
    let a = h.advance(ms(1));
    assert_eq!(
        a,
        vec![ClientAction::QueryResult {
            id: slow,
            result: Err(QueryError::Timeout)
        }]
    );
    // A late reply is just an event.
    let a = h.recv(r#"{"v":"1.0","e":"b.ok","c":"q2","s":1}"#);
    assert_eq!(events(&a), vec![1]);
}

#[test]
fn a_queued_query_that_times_out_is_never_sent() {
    let mut h = Harness::new(ClientConfig::default());
    let q = h.client.query(h.now, "a", Payload::None, Some(ms(100))).unwrap();
    h.client.send(h.now, "b", Payload::None).unwrap();
    assert_eq!(h.client.queued(), 2);
    let a = h.advance(ms(100));
    assert_eq!(
        a,
        vec![ClientAction::QueryResult {
            id: q,
            result: Err(QueryError::Timeout)
        }]
    );
    assert_eq!(h.client.queued(), 1);
    h.connected();
    let a = h.recv(&created("s1", "t"));
    assert_eq!(transmits(&a), vec![r#"{"v":"1.0","e":"b"}"#.to_owned()]);
}

#[test]
fn connect_timeout_abandons_the_attempt() {
    let config = ClientConfig {
        backoff: Arc::new(Constant {
            delay: ms(1000),
            jitter: Jitter::None,
        }),
        ..ClientConfig::default()
    };
    let mut h = Harness::new(config);
    // The transport never opens: 60 s later the attempt is abandoned.
    assert!(h.advance(Duration::from_secs(60) - ms(1)).is_empty());
    let a = h.advance(ms(1));
    assert!(matches!(&a[..], [ClientAction::CloseTransport { .. }]), "{a:?}");
    let a = h.dropped();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 1,
            delay: ms(1000)
        }]
    );
    // The next one opens but no session comes: the timeout also covers that.
    h.fire();
    h.connected();
    let a = h.advance(Duration::from_secs(60));
    assert!(matches!(&a[..], [ClientAction::CloseTransport { .. }]), "{a:?}");
    let a = h.dropped();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 2,
            delay: ms(1000)
        }]
    );
}

#[test]
fn close_runs_the_handshake_and_stops_reconnecting() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    h.recv(&msg(1));
    let q = h.client.query(h.now, "a", Payload::None, None).unwrap();
    h.drain();
    h.client.close(h.now, CloseCode::NORMAL, "bye").unwrap();
    let a = h.drain();
    assert_eq!(
        a,
        vec![
            ClientAction::QueryResult {
                id: q,
                result: Err(QueryError::Closed)
            },
            // The session ends on the server at once (no ack: nothing is kept to trim).
            ClientAction::Transmit(r#"{"v":"1.0","e":"sys.session.end","p":{"reason":"bye"}}"#.to_owned()),
            ClientAction::CloseTransport {
                code: CloseCode::NORMAL,
                reason: "bye".into()
            },
            ClientAction::StateChanged(State::Disconnecting),
        ]
    );
    assert_eq!(h.client.send(h.now, "x", Payload::None), Err(ClientError::Closed));
    h.client
        .handle_disconnected(h.now, Disconnect::closed(CloseCode::NORMAL, "bye"));
    let a = h.drain();
    let mut ended = Disconnect::closed(CloseCode::NORMAL, "bye");
    ended.session_end = Some(crate::client::SessionEnd::ByClient);
    assert_eq!(states(&a), vec![State::Disconnected(ended)]);
    // No timer, no reconnect, ever.
    assert_eq!(h.client.poll_timeout(), None);
    assert!(h.advance(Duration::from_secs(3600)).is_empty());
}

#[test]
fn close_while_waiting_to_reconnect_stops_at_once() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1");
    h.dropped();
    assert!(h.client.poll_timeout().is_some());
    h.client.close(h.now, CloseCode::NORMAL, "").unwrap();
    let a = h.drain();
    assert_eq!(
        states(&a),
        vec![State::Disconnected(Disconnect::closed(CloseCode::NORMAL, ""))]
    );
    assert_eq!(h.client.poll_timeout(), None);
    assert_eq!(count_connects(&h.advance(Duration::from_secs(600))), 0);
    assert_eq!(
        h.client.close(h.now, CloseCode::ABNORMAL, ""),
        Err(ClientError::InvalidCloseCode(CloseCode::ABNORMAL))
    );
}

#[test]
fn offline_queue_refuses_when_full_and_sends_each_once() {
    let config = ClientConfig {
        queue_limit: 3,
        ..ClientConfig::default()
    };
    let mut h = Harness::new(config);
    for i in 0..3 {
        h.client
            .send(h.now, "m", Payload::Trusted(&i.to_string()))
            .unwrap();
    }
    assert_eq!(
        h.client.send(h.now, "m", Payload::Trusted("3")),
        Err(ClientError::QueueFull { limit: 3 })
    );
    assert_eq!(
        h.client.query(h.now, "q", Payload::None, None),
        Err(ClientError::QueueFull { limit: 3 })
    );
    // Nothing goes out before a session, even on an open transport.
    assert!(transmits(&h.connected()).is_empty());
    let a = h.recv(&created("s1", "t"));
    let sent = transmits(&a);
    assert_eq!(sent.len(), 3);
    for (i, text) in sent.iter().enumerate() {
        assert_eq!(*text, format!(r#"{{"v":"1.0","e":"m","p":{i}}}"#));
    }
    // After a drop and a resume, nothing is sent twice.
    h.dropped();
    h.fire();
    h.connected();
    let a = h.recv(&restored("s1", "t2", 0));
    assert!(transmits(&a).is_empty(), "{a:?}");
}

#[test]
fn refused_names() {
    let mut h = Harness::new(ClientConfig::default());
    assert_eq!(
        h.client.send(h.now, "sys.ack", Payload::None),
        Err(ClientError::ReservedEventName)
    );
    assert!(matches!(
        h.client.send(h.now, "a b", Payload::None),
        Err(ClientError::InvalidEventName(_))
    ));
}

#[test]
fn auth_failure_stops_the_client() {
    let mut h = Harness::new(ClientConfig::with_credential("wrong"));
    h.connected();
    let a = h.recv(r#"{"v":"1.0","e":"sys.error","c":"a1","p":{"code":4102,"message":"bad credential"}}"#);
    assert!(matches!(
        &a[..],
        [ClientAction::ServerError(ServerError { code: 4102, .. })]
    ));
    h.client.handle_disconnected(
        h.now,
        Disconnect::closed(CloseCode(4102), "authentication failed"),
    );
    let a = h.drain();
    let [State::Disconnected(info)] = &states(&a)[..] else {
        panic!("{a:?}");
    };
    assert_eq!(info.code, Some(CloseCode(4102)));
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn an_upgrade_refused_with_4xx_stops_the_client_and_5xx_is_retried() {
    let mut h = Harness::new(ClientConfig::default());
    h.client
        .handle_disconnected(h.now, Disconnect::refused(503, "busy"));
    let a = h.drain();
    assert!(matches!(states(&a)[..], [State::Reconnecting { attempt: 1, .. }]));
    h.client
        .handle_disconnected(h.now, Disconnect::refused(429, "slow down"));
    // (a spurious report without a transport is ignored)
    assert!(h.drain().is_empty());
    h.fire();
    h.client
        .handle_disconnected(h.now, Disconnect::refused(429, "slow down"));
    let a = h.drain();
    assert!(matches!(states(&a)[..], [State::Reconnecting { attempt: 2, .. }]));
    h.fire();
    h.client
        .handle_disconnected(h.now, Disconnect::refused(401, "who are you"));
    let a = h.drain();
    let [State::Disconnected(info)] = &states(&a)[..] else {
        panic!("{a:?}");
    };
    assert_eq!(info.status, Some(401));
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn gives_up_after_max_attempts() {
    let config = ClientConfig {
        max_reconnect_attempts: Some(2),
        ..ClientConfig::default()
    };
    let mut h = Harness::new(config);
    for _ in 0..2 {
        h.client.handle_disconnected(h.now, Disconnect::failed("refused"));
        h.drain();
        h.fire();
    }
    h.client.handle_disconnected(h.now, Disconnect::failed("refused"));
    let a = h.drain();
    let [State::Disconnected(info)] = &states(&a)[..] else {
        panic!("{a:?}");
    };
    assert_eq!(info.error.as_deref(), Some("refused"));
}

#[test]
fn idle_connection_is_dropped() {
    let mut h = Harness::new(ClientConfig::default());
    h.online("s1"); // heartbeat 20 s: idle limit 45 s
    h.advance(Duration::from_secs(40));
    h.recv(r#"{"v":"1.0","e":"sys.ping"}"#);
    assert!(h
        .advance(Duration::from_secs(44))
        .iter()
        .all(|a| !matches!(a, ClientAction::CloseTransport { .. })));
    let a = h.advance(Duration::from_secs(1));
    assert!(matches!(&a[..], [ClientAction::CloseTransport { .. }]), "{a:?}");
    let a = h.dropped();
    assert!(matches!(states(&a)[..], [State::Reconnecting { .. }]));
}

#[test]
fn close_4116_resumes_at_once_then_backs_off_as_usual() {
    let config = ClientConfig {
        backoff: Arc::new(Constant {
            delay: ms(500),
            jitter: Jitter::None,
        }),
        ..ClientConfig::default()
    };
    let mut h = Harness::new(config);
    h.online("s1");
    // The session moved (taken over, or handed over by a stopping node): no wait.
    h.client.handle_disconnected(
        h.now,
        Disconnect::closed(crate::ErrorCode::SESSION_MOVED.close_code(), "node stopping"),
    );
    let a = h.drain();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 1,
            delay: Duration::ZERO
        }]
    );
    let a = h.advance(Duration::ZERO);
    assert_eq!(count_connects(&a), 1, "{a:?}");
    // That attempt fails: the usual backoff.
    h.client.handle_disconnected(h.now, Disconnect::failed("refused"));
    let a = h.drain();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 2,
            delay: ms(500)
        }]
    );
    // Any other close waits as configured.
    let mut h = Harness::new(ClientConfig {
        backoff: Arc::new(Constant {
            delay: ms(500),
            jitter: Jitter::None,
        }),
        ..ClientConfig::default()
    });
    h.online("s1");
    h.client
        .handle_disconnected(h.now, Disconnect::closed(CloseCode::GOING_AWAY, "bye"));
    let a = h.drain();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 1,
            delay: ms(500)
        }]
    );
}

#[test]
fn a_handover_is_acknowledged_and_the_refused_queries_go_again_first_in_order() {
    let mut h = Harness::new(ClientConfig::with_credential("secret"));
    h.online("s1");
    for _ in 0..3 {
        h.client.query(h.now, "q", Payload::None, None).unwrap();
    }
    h.drain();
    // The node answers the first and says it hands over: the client says it sends
    // nothing more here.
    h.recv(r#"{"v":"1.0","e":"a","c":"q1","s":1}"#);
    let a = h.recv(r#"{"v":"1.0","e":"sys.handover"}"#);
    assert_eq!(transmits(&a), [r#"{"v":"1.0","e":"sys.handover"}"#]);
    // Sent after the notice: queued, not written on this connection.
    h.client.query(h.now, "later", Payload::None, None).unwrap();
    assert!(transmits(&h.drain()).is_empty());
    // The node refuses the other two (as they arrived) before its close.
    let refusal = |c: &str| {
        format!(r#"{{"v":"1.0","e":"sys.error","c":"{c}","p":{{"code":4116,"message":"not processed"}}}}"#)
    };
    let a = h.recv(&refusal("q2"));
    let b = h.recv(&refusal("q3"));
    assert!(
        !a.iter()
            .chain(&b)
            .any(|x| matches!(x, ClientAction::QueryResult { .. })),
        "a refused query does not fail: {a:?} {b:?}"
    );
    h.client.handle_disconnected(
        h.now,
        Disconnect::closed(crate::ErrorCode::SESSION_MOVED.close_code(), "handed over"),
    );
    let a = h.drain();
    assert_eq!(
        states(&a),
        vec![State::Reconnecting {
            attempt: 1,
            delay: Duration::ZERO
        }]
    );
    h.advance(Duration::ZERO);
    h.connected();
    let a = h.recv(&restored("s1", "t2", 0));
    let sent = transmits(&a);
    let correlations: Vec<&str> = sent
        .iter()
        .filter_map(|t| t.split(r#""c":""#).nth(1).and_then(|r| r.split('"').next()))
        .collect();
    // The refused ones again, in their order, then what was queued since.
    assert_eq!(correlations, ["q2", "q3", "q4"], "{sent:?}");
    // Their answers resolve them.
    let a = h.recv(r#"{"v":"1.0","e":"a","c":"q2","s":2}"#);
    assert!(
        a.iter()
            .any(|x| matches!(x, ClientAction::QueryResult { result: Ok(_), .. })),
        "{a:?}"
    );
}
