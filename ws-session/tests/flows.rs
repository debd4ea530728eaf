//! The session flows and every refusal, driven through the simulation harness.

use std::time::Duration;

use bytes::Bytes;
use ws_proto::envelope::{sys, OutgoingEnvelope, Payload};
use ws_proto::{CloseCode, Message};
use ws_session::sim::{ClientId, Sim};
use ws_session::{
    ApiError, CloseReason, EngineConfig, ErrorCode, NotRecoverable, PublishTarget, SessionEvent, SessionId,
    UserId,
};

fn sim() -> Sim {
    Sim::new(EngineConfig::default())
}

fn sid(sim: &Sim, c: ClientId) -> SessionId {
    sim.client(c).session_id().expect("client has a session")
}

fn send_app(sim: &mut Sim, to: SessionId, n: u32) {
    let now = sim.now();
    let text = format!("{{\"n\":{n}}}");
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(&text));
    sim.engine.send(now, to, &env).expect("session exists");
    sim.drain();
}

/// The `n` of every `chat.message` the client received, in order, with its `s`.
fn chat(sim: &Sim, c: ClientId) -> Vec<(u64, u64)> {
    sim.client(c)
        .received
        .iter()
        .filter(|r| r.event() == "chat.message")
        .map(|r| (r.envelope.seq.unwrap(), r.payload()["n"].as_u64().unwrap()))
        .collect()
}

fn last_error(sim: &Sim, c: ClientId) -> serde_json::Value {
    sim.client(c)
        .received
        .iter()
        .rev()
        .find(|r| r.event() == sys::ERROR)
        .expect("a sys.error")
        .payload()
}

#[test]
fn session_created_after_handshake_auth() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let created = &sim.client(a).received[0];
    assert_eq!(created.event(), sys::SESSION_CREATED);
    assert_eq!(
        created.envelope.seq, None,
        "control events are outside the stream"
    );
    let p = created.payload();
    assert_eq!(p["userId"], "alice");
    assert_eq!(p["heartbeatMs"], 20_000);
    assert_eq!(p["resumeWindowMs"], 120_000);
    assert_eq!(p["sessionId"].as_str().unwrap().len(), 32);
    assert_eq!(p["resumeToken"].as_str().unwrap().len(), 64, "256-bit token");
    assert_ne!(p["sessionId"], p["resumeToken"]);
    assert!(matches!(sim.lifecycle[0], SessionEvent::Created { .. }));
    assert_eq!(sim.engine.metrics().sessions_live, 1);
}

#[test]
fn session_created_after_first_message_auth() {
    let mut sim = sim();
    let a = sim.connect(None);
    assert!(sim.client(a).received.is_empty());
    sim.send(a, sys::AUTH, Some(r#"{"token":"user:bob"}"#), Some("a1"));
    let created = sim.client(a).received.last().unwrap();
    assert_eq!(created.event(), sys::SESSION_CREATED);
    assert_eq!(created.envelope.correlation_id.as_deref(), Some("a1"));
    assert_eq!(created.payload()["userId"], "bob");
    // A second sys.auth is refused, the connection stays.
    sim.send(a, sys::AUTH, Some(r#"{"token":"user:bob"}"#), None);
    assert_eq!(sim.client(a).error_codes(), [ErrorCode::ALREADY_AUTHENTICATED.0]);
    assert!(sim.client(a).connection.is_some());
}

#[test]
fn auth_failure_is_an_error_then_a_close() {
    let mut sim = sim();
    let a = sim.connect(Some("wrong"));
    assert_eq!(sim.client(a).error_codes(), [ErrorCode::AUTH_FAILED.0]);
    assert_eq!(sim.client(a).closed.unwrap().0, CloseCode(4102));
    assert_eq!(sim.engine.metrics().auth_failures, 1);
}

#[test]
fn app_events_need_a_session_unless_anonymous() {
    let mut sim = sim();
    let a = sim.connect(None);
    sim.send(a, "chat.message", Some("{}"), Some("q1"));
    let err = sim.client(a).received.last().unwrap();
    assert_eq!(err.error_code(), Some(ErrorCode::NOT_AUTHENTICATED.0));
    assert_eq!(err.envelope.correlation_id.as_deref(), Some("q1"));
    assert!(sim.events.is_empty());
    assert!(sim.client(a).connection.is_some());

    let mut anon = Sim::new(EngineConfig {
        allow_anonymous: true,
        ..EngineConfig::default()
    });
    let b = anon.connect(None);
    assert_eq!(anon.client(b).last_control(), Some(sys::SESSION_CREATED));
    assert!(anon.client(b).received[0].payload()["userId"]
        .as_str()
        .unwrap()
        .starts_with("anon-"));
    anon.send(b, "chat.message", Some("{}"), None);
    assert_eq!(anon.events.len(), 1);
}

#[test]
fn events_dispatch_with_payload_and_replies_carry_the_correlation_id() {
    let mut sim = sim();
    sim.set_handler(Sim::echo_handler);
    let a = sim.connect(Some("user:alice"));
    sim.send(a, "math.add", Some(r#"{"a":1,"b":"\u00e9"}"#), Some("req-7"));
    let ev = &sim.events[0];
    assert_eq!(ev.event(), "math.add");
    assert_eq!(ev.payload(), Some(r#"{"a":1,"b":"\u00e9"}"#));
    assert_eq!(ev.correlation_id(), Some("req-7"));
    assert_eq!(ev.user.as_str(), "alice");
    let reply = sim.client(a).received.last().unwrap();
    assert_eq!(reply.event(), "math.add");
    assert_eq!(reply.envelope.correlation_id.as_deref(), Some("req-7"));
    assert_eq!(reply.envelope.seq, Some(1));

    // Escaped correlation ids survive too.
    sim.send_text(a, r#"{"v":"1","e":"x","c":"a\"b"}"#);
    assert_eq!(sim.events[1].correlation_id(), Some("a\"b"));

    let s = sid(&sim, a);
    let now = sim.now();
    sim.engine
        .reply_error(now, s, "req-8", 4200, "no such thing")
        .unwrap();
    sim.drain();
    let err = sim.client(a).received.last().unwrap();
    assert_eq!(err.error_code(), Some(4200));
    assert_eq!(err.envelope.correlation_id.as_deref(), Some("req-8"));
    assert_eq!(err.envelope.seq, Some(3));
}

#[test]
fn bad_envelopes_and_unknown_system_events_get_errors_and_the_connection_stays() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    sim.send_text(a, "not json");
    sim.send_text(a, r#"{"v":"2.0","e":"x","c":"k"}"#);
    sim.send_text(a, r#"[1,2]"#);
    sim.send(a, "sys.nonsense", None, Some("z"));
    sim.send(a, sys::SESSION_CREATED, None, None); // S→C only
                                                   // The answer to a handover the server did not begin (it is not stopping).
    sim.send(a, sys::HANDOVER, None, None);
    sim.send(a, sys::ACK, Some(r#"{"seq":"x"}"#), None);
    sim.send_message(a, Message::Binary(bytes::Bytes::from_static(b"\x00")));
    assert_eq!(
        sim.client(a).error_codes(),
        [4002, 4007, 4003, 4100, 4100, 4100, 4013, 4113]
    );
    let errs: Vec<_> = sim
        .client(a)
        .received
        .iter()
        .filter(|r| r.error_code().is_some())
        .collect();
    assert_eq!(
        errs[1].envelope.correlation_id.as_deref(),
        Some("k"),
        "c of a refused envelope"
    );
    assert_eq!(errs[3].envelope.correlation_id.as_deref(), Some("z"));
    assert!(sim.client(a).connection.is_some());
    // Still works.
    sim.send(a, "chat.message", None, None);
    assert_eq!(sim.events.len(), 1);
}

#[test]
fn ping_is_answered_with_pong() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    sim.send(a, sys::PING, None, Some("p"));
    let pong = sim.client(a).received.last().unwrap();
    assert_eq!(pong.event(), sys::PONG);
    assert_eq!(pong.envelope.correlation_id.as_deref(), Some("p"));
}

#[test]
fn resume_inside_the_window_replays_exactly_the_missed_messages_and_rotates_the_token() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    for n in 1..=3 {
        send_app(&mut sim, s, n);
    }
    sim.drop_connection(a);
    assert!(matches!(
        sim.lifecycle.last(),
        Some(SessionEvent::Suspended { .. })
    ));
    for n in 4..=6 {
        send_app(&mut sim, s, n);
    }
    let old_token = sim.client(a).session.clone().unwrap().1;
    // Nothing was acknowledged: the six messages wait in the replay buffer.
    let held = sim.engine.metrics();
    assert_eq!(held.replay_messages, 6);
    assert!(held.replay_bytes > 6 * 20, "{held:?}");
    sim.advance(Duration::from_secs(60));
    sim.reconnect(a, Some("user:alice"));
    // The handshake credential made a fresh session; the resume replaces it.
    let fresh = sid(&sim, a);
    assert_ne!(fresh, s);
    sim.client_mut(a).session = Some((s.to_string(), old_token.clone()));
    sim.resume_with(a, 3, None);
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    let restored = sim.client(a).last_of(sys::SESSION_RESTORED).unwrap();
    assert_eq!(restored.payload()["replayed"], 3);
    assert_eq!(restored.envelope.correlation_id.as_deref(), Some("resume"));
    let new_token = restored.payload()["resumeToken"].as_str().unwrap().to_owned();
    assert_ne!(new_token, old_token);
    assert_eq!(chat(&sim, a), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)]);
    assert!(sim
        .lifecycle
        .iter()
        .any(|e| matches!(e, SessionEvent::Resumed { session, .. } if *session == s)));
    assert!(sim
        .lifecycle
        .iter()
        .any(|e| matches!(e, SessionEvent::Closed { session, .. } if *session == fresh)));
    assert!(sim.engine.session_info(fresh).is_none());
    // Later messages continue the stream.
    send_app(&mut sim, s, 7);
    assert_eq!(chat(&sim, a).last(), Some(&(7, 7)));
    assert_eq!(sim.engine.metrics().resumes_ok, 1);
}

#[test]
fn resume_with_credential_in_the_request() {
    let mut sim = sim();
    let a = sim.connect(None);
    sim.send(a, sys::AUTH, Some(r#"{"token":"user:carol"}"#), None);
    let s = sid(&sim, a);
    send_app(&mut sim, s, 1);
    sim.drop_connection(a);
    send_app(&mut sim, s, 2);
    sim.reconnect(a, None);
    sim.resume_with(a, 1, Some("user:carol"));
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    assert_eq!(chat(&sim, a), [(1, 1), (2, 2)]);
    // Without any credential a resume is not authenticated.
    sim.drop_connection(a);
    sim.reconnect(a, None);
    sim.resume(a);
    assert_eq!(
        sim.client(a).error_codes().last(),
        Some(&ErrorCode::NOT_AUTHENTICATED.0)
    );
}

#[test]
fn resume_while_handshake_auth_is_pending_waits_for_it() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    sim.drop_connection(a);
    send_app(&mut sim, s, 1);
    sim.reconnect(a, Some("pending"));
    sim.resume_with(a, 0, None);
    assert!(sim
        .client(a)
        .received
        .iter()
        .all(|r| r.event() != sys::SESSION_RESTORED));
    let req = sim.pending_auth.pop().unwrap();
    sim.answer_auth(&req, Ok("alice".into()));
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    assert_eq!(sid(&sim, a), s);
    assert_eq!(chat(&sim, a), [(1, 1)]);
}

#[test]
fn rooms_are_restored_after_resume() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:bob"));
    let (sa, sb) = (sid(&sim, a), sid(&sim, b));
    let now = sim.now();
    assert!(sim.engine.join_room(now, sa, "lobby").unwrap());
    assert!(!sim.engine.join_room(now, sa, "lobby").unwrap());
    sim.engine.join_room(now, sb, "lobby").unwrap();
    sim.drop_connection(a);
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(r#"{"n":1}"#));
    assert_eq!(sim.engine.broadcast_room(now, "lobby", &env, Some(sb)), 1);
    sim.drain();
    sim.reconnect(a, Some("user:alice"));
    let token = sim.client(a).session.clone().unwrap().1;
    let _ = token;
    // Resume the old session (the client remembered it before reconnecting).
    let old = sim
        .client(a)
        .received
        .iter()
        .find(|r| r.event() == sys::SESSION_CREATED)
        .unwrap()
        .payload();
    sim.client_mut(a).session = Some((
        old["sessionId"].as_str().unwrap().into(),
        old["resumeToken"].as_str().unwrap().into(),
    ));
    sim.resume_with(a, 0, None);
    assert_eq!(sid(&sim, a), sa);
    assert_eq!(&*sim.engine.session_info(sa).unwrap().rooms[0], "lobby");
    assert_eq!(chat(&sim, a), [(1, 1)]);
    assert_eq!(sim.engine.broadcast_room(now, "lobby", &env, None), 2);
    sim.drain();
    assert_eq!(chat(&sim, a).len(), 2);
    assert!(chat(&sim, b).len() == 1, "b was excepted the first time");
}

/// Reconnects `a` without a credential in the handshake and resumes with `session`,
/// the credential `user:NAME` in the request.
fn resume_as(sim: &mut Sim, a: ClientId, session: (String, String), last: u64, name: &str) {
    sim.reconnect(a, None);
    sim.client_mut(a).session = Some(session);
    sim.resume_with(a, last, Some(&format!("user:{name}")));
}

fn refused_reason(sim: &Sim, a: ClientId) -> String {
    let err = last_error(sim, a);
    assert_eq!(err["code"], ErrorCode::NOT_RECOVERABLE.0);
    // …and a fresh session follows, never a silent gap.
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_CREATED));
    err["reason"].as_str().unwrap().to_owned()
}

#[test]
fn forged_token_is_refused_with_a_fresh_session() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let (id, _) = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    resume_as(&mut sim, a, (id.clone(), "ab".repeat(32)), 0, "alice");
    assert_eq!(refused_reason(&sim, a), "invalid");
    assert_ne!(sim.client(a).session.as_ref().unwrap().0, id);
    resume_as(&mut sim, a, (id, "short".into()), 0, "alice");
    assert_eq!(refused_reason(&sim, a), "invalid");
    resume_as(&mut sim, a, ("0".repeat(32), "ab".repeat(32)), 0, "alice");
    assert_eq!(refused_reason(&sim, a), "unknown");
    let metrics = sim.engine.metrics();
    assert_eq!(metrics.resumes_refused, 3);
    assert_eq!(metrics.resumes_refused_by.get(NotRecoverable::InvalidToken), 2);
    assert_eq!(metrics.resumes_refused_by.get(NotRecoverable::Unknown), 1);
    assert_eq!(metrics.resumes_refused_by.iter().map(|(_, n)| n).sum::<u64>(), 3);
}

#[test]
fn reused_token_is_refused() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let first = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    resume_as(&mut sim, a, first.clone(), 0, "alice");
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    // The client's first message after the restore shows it holds the new token.
    sim.send(a, sys::PING, None, None);
    sim.drop_connection(a);
    let b = sim.connect(None);
    sim.client_mut(b).session = Some(first);
    sim.resume_with(b, 0, Some("user:alice"));
    assert_eq!(refused_reason(&sim, b), "used");
}

#[test]
fn expired_token_is_refused_and_expiry_leaves_rooms() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let now = sim.now();
    sim.engine.join_room(now, s, "lobby").unwrap();
    let session = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    sim.advance(Duration::from_secs(119));
    assert_eq!(
        sim.engine.room_len("lobby"),
        1,
        "still in its rooms while suspended"
    );
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.engine.room_len("lobby"), 0);
    assert!(sim.lifecycle.iter().any(
        |e| matches!(e, SessionEvent::Expired { session, user } if *session == s && user.as_str() == "alice")
    ));
    assert_eq!(sim.engine.metrics().rooms, 0);
    resume_as(&mut sim, a, session, 0, "alice");
    assert_eq!(refused_reason(&sim, a), "expired");
}

#[test]
fn past_max_suspended_sessions_the_longest_suspended_expires_at_once() {
    let mut sim = Sim::new(EngineConfig {
        max_suspended_sessions: 2,
        ..EngineConfig::default()
    });
    let names = ["alice", "bob", "carol", "dave"];
    let clients: Vec<ClientId> = names
        .iter()
        .map(|name| sim.connect(Some(&format!("user:{name}"))))
        .collect();
    let sessions: Vec<SessionId> = clients.iter().map(|&c| sid(&sim, c)).collect();
    let tokens: Vec<(String, String)> = clients
        .iter()
        .map(|&c| sim.client(c).session.clone().unwrap())
        .collect();
    let now = sim.now();
    for &s in &sessions {
        sim.engine.join_room(now, s, "lobby").unwrap();
    }
    // alice leaves and comes back: her suspension ends and is not counted again.
    sim.drop_connection(clients[0]);
    resume_as(&mut sim, clients[0], tokens[0].clone(), 0, "alice");
    assert_eq!(sim.client(clients[0]).last_control(), Some(sys::SESSION_RESTORED));
    // bob, alice (again), then carol: bob, suspended longest ago, goes.
    for &i in &[1, 0, 2] {
        sim.drop_connection(clients[i]);
        sim.advance(Duration::from_millis(10));
    }
    let evicted = |sim: &Sim, s: SessionId| {
        sim.lifecycle
            .iter()
            .any(|e| matches!(e, SessionEvent::Expired { session, .. } if *session == s))
    };
    assert!(evicted(&sim, sessions[1]), "bob was suspended longest");
    assert!(!evicted(&sim, sessions[0]) && !evicted(&sim, sessions[2]));
    let metrics = sim.engine.metrics();
    assert_eq!(metrics.sessions_suspended, 2);
    assert_eq!(metrics.sessions_evicted, 1);
    assert_eq!(metrics.sessions_expired, 0, "not the resume window");
    assert_eq!(sim.engine.room_len("lobby"), 3, "bob left his rooms");
    // bob's resume is refused as expired; alice's and carol's succeed.
    resume_as(&mut sim, clients[1], tokens[1].clone(), 0, "bob");
    assert_eq!(refused_reason(&sim, clients[1]), "expired");
    for (i, name) in [(0, "alice"), (2, "carol")] {
        let token = sim.client(clients[i]).session.clone().unwrap();
        resume_as(&mut sim, clients[i], token, 0, name);
        assert_eq!(
            sim.client(clients[i]).last_control(),
            Some(sys::SESSION_RESTORED),
            "{name}"
        );
    }
    // None is suspended now; dave's suspension evicts nobody.
    sim.drop_connection(clients[3]);
    assert_eq!(sim.engine.metrics().sessions_evicted, 1);
    assert_eq!(sim.engine.metrics().sessions_suspended, 1);
}

#[test]
fn with_max_suspended_sessions_zero_a_session_ends_with_its_connection() {
    let mut sim = Sim::new(EngineConfig {
        max_suspended_sessions: 0,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let token = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    assert!(sim
        .lifecycle
        .iter()
        .any(|e| matches!(e, SessionEvent::Expired { session, .. } if *session == s)));
    assert_eq!(sim.engine.metrics().sessions_suspended, 0);
    resume_as(&mut sim, a, token, 0, "alice");
    assert_eq!(refused_reason(&sim, a), "expired");
}

#[test]
fn expiry_is_enforced_even_before_the_timer_fires() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let session = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    // Jump the clock without firing timers.
    let later = sim.now() + Duration::from_secs(500);
    let b = sim.connect(Some("user:alice"));
    let cid = sim.client(b).connection.unwrap();
    let payload = format!(
        r#"{{"sessionId":"{}","resumeToken":"{}","lastSeq":0}}"#,
        session.0, session.1
    );
    let text = format!(r#"{{"v":"1.0","e":"sys.reconnect.request","p":{payload}}}"#);
    sim.engine.handle_message(later, cid, Message::Text(text));
    sim.drain();
    assert_eq!(last_error(&sim, b)["reason"], "expired");
}

#[test]
fn other_users_token_is_refused() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let session = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    let m = sim.connect(None);
    resume_as(&mut sim, m, session.clone(), 0, "mallory");
    assert_eq!(refused_reason(&sim, m), "foreign");
    // The refusal did not burn alice's token.
    resume_as(&mut sim, a, session, 0, "alice");
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
}

#[test]
fn replay_buffer_overflow_is_a_gap_and_a_new_session() {
    let mut sim = Sim::new(EngineConfig {
        replay_max_messages: 4,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let session = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    for n in 1..=5 {
        send_app(&mut sim, s, n);
    }
    assert_eq!(sim.engine.session_info(s).unwrap().replay_len, 4);
    resume_as(&mut sim, a, session, 0, "alice");
    assert_eq!(refused_reason(&sim, a), "gap");
    assert!(sim.engine.session_info(s).is_none(), "the old session ends");
    assert!(chat(&sim, a).is_empty(), "no partial replay");
}

#[test]
fn resume_claiming_unsent_messages_is_a_gap() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let session = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    resume_as(&mut sim, a, session, 9, "alice");
    assert_eq!(refused_reason(&sim, a), "gap");
}

#[test]
fn acks_trim_the_replay_buffer() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    for n in 1..=5 {
        send_app(&mut sim, s, n);
    }
    assert_eq!(sim.engine.session_info(s).unwrap().replay_len, 5);
    sim.send(a, sys::ACK, Some(r#"{"seq":3}"#), None);
    assert_eq!(sim.engine.session_info(s).unwrap().replay_len, 2);
    sim.ack(a);
    let info = sim.engine.session_info(s).unwrap();
    assert_eq!((info.replay_len, info.replay_bytes), (0, 0));
    // A resume from before the ack is now a gap.
    let session = sim.client(a).session.clone().unwrap();
    sim.drop_connection(a);
    resume_as(&mut sim, a, session, 2, "alice");
    assert_eq!(refused_reason(&sim, a), "gap");
}

#[test]
fn takeover_closes_the_old_connection() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let session = sim.client(a).session.clone().unwrap();
    send_app(&mut sim, s, 1);
    // A second device resumes while the first is still attached.
    let b = sim.connect(None);
    resume_as(&mut sim, b, session, 1, "alice");
    assert_eq!(sim.client(b).last_control(), Some(sys::SESSION_RESTORED));
    assert_eq!(sim.client(a).connection, None);
    assert_eq!(
        sim.client(a).closed.unwrap().0,
        CloseCode(ErrorCode::TAKEN_OVER.0)
    );
    send_app(&mut sim, s, 2);
    assert_eq!(chat(&sim, b), [(2, 2)]);
    assert_eq!(chat(&sim, a), [(1, 1)]);
}

#[test]
fn a_ping_flood_is_rate_limited_like_messages_and_closed_with_1008() {
    let mut sim = Sim::new(EngineConfig {
        rate_limit_per_second: 10,
        rate_limit_burst: 5,
        rate_limit_max_strikes: 3,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    // Pings and pongs take tokens as messages do: the burst passes quietly...
    for i in 0..5 {
        let message = if i % 2 == 0 {
            Message::Ping(Bytes::new())
        } else {
            Message::Pong(Bytes::new())
        };
        sim.send_message(a, message);
    }
    assert!(sim.client(a).error_codes().is_empty());
    // ...the next one is refused (one sys.error for the streak), and a flood is closed.
    for _ in 0..3 {
        sim.send_message(a, Message::Ping(Bytes::from_static(b"flood")));
    }
    assert_eq!(sim.client(a).error_codes(), [ErrorCode::RATE_LIMITED.0]);
    assert_eq!(sim.client(a).closed.unwrap().0, CloseCode::POLICY_VIOLATION);
    assert_eq!(sim.engine.metrics().rate_limited, 3);
    // Pings are not data: they are not counted as messages in.
    assert_eq!(sim.engine.metrics().messages_in, 0);
}

#[test]
fn rate_limit_errors_then_closes_with_1008() {
    let mut sim = Sim::new(EngineConfig {
        rate_limit_per_second: 10,
        rate_limit_burst: 5,
        rate_limit_max_strikes: 3,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    for _ in 0..5 {
        sim.send(a, "x", None, None);
    }
    assert_eq!(sim.events.len(), 5);
    sim.send(a, "x", None, None);
    assert_eq!(sim.client(a).error_codes(), [ErrorCode::RATE_LIMITED.0]);
    // Quiet for as long as the bucket takes to refill (5 / 10 per s): forgiven, and a
    // new streak gets a new sys.error.
    sim.advance(Duration::from_millis(500));
    for _ in 0..6 {
        sim.send(a, "x", None, None);
    }
    assert_eq!(sim.events.len(), 10);
    assert_eq!(sim.client(a).error_codes(), [4105, 4105]);
    assert!(sim.client(a).connection.is_some());
    // Pushing on at twice the rate keeps the streak going, accepted messages between
    // refusals notwithstanding, until the connection is closed.
    for _ in 0..4 {
        sim.advance(Duration::from_millis(50));
        sim.send(a, "x", None, None);
        sim.send(a, "x", None, None);
    }
    assert_eq!(sim.client(a).closed.unwrap().0, CloseCode::POLICY_VIOLATION);
    assert_eq!(
        sim.client(a).error_codes(),
        [4105, 4105],
        "one sys.error per streak"
    );
    assert_eq!(sim.engine.metrics().rate_limited, 4);
    assert!(matches!(
        sim.lifecycle.last(),
        Some(SessionEvent::Suspended { .. })
    ));
}

#[test]
fn slow_consumer_is_closed_and_can_resume() {
    let mut sim = Sim::new(EngineConfig {
        max_outbound_bytes: 8 * 1024,
        replay_max_bytes: 8 * 1024,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let session = sim.client(a).session.clone().unwrap();
    sim.stall(a, true);
    let mut n = 0;
    while sim.client(a).connection.is_some() {
        n += 1;
        send_app(&mut sim, s, n);
        sim.check_bounds();
        assert!(n < 1000);
    }
    assert_eq!(
        sim.client(a).closed.unwrap().0,
        CloseCode(ErrorCode::SLOW_CONSUMER.0)
    );
    assert_eq!(sim.engine.metrics().slow_consumer_drops, 1);
    assert!(matches!(
        sim.lifecycle.last(),
        Some(SessionEvent::Suspended { .. })
    ));
    // The client got some; it resumes from what it saw and gets the rest.
    sim.stall(a, false);
    let seen = sim.client(a).last_seq;
    assert!(seen > 0 && seen < n as u64);
    resume_as(&mut sim, a, session, seen, "alice");
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    let got: Vec<u64> = chat(&sim, a).iter().map(|&(s, _)| s).collect();
    assert_eq!(got, (1..=n as u64).collect::<Vec<_>>());
}

#[test]
fn auth_timeout_closes_unauthenticated_connections() {
    let mut sim = sim();
    let a = sim.connect(None);
    let p = sim.connect(Some("pending"));
    sim.advance(Duration::from_secs(9));
    assert!(sim.client(a).connection.is_some());
    sim.advance(Duration::from_secs(2));
    for c in [a, p] {
        assert_eq!(sim.client(c).error_codes(), [ErrorCode::AUTH_TIMEOUT.0]);
        assert_eq!(sim.client(c).closed.unwrap().0, CloseCode(4103));
    }
    // A late answer for the closed connection is ignored.
    let req = sim.pending_auth.pop().unwrap();
    sim.answer_auth(&req, Ok("late".into()));
    assert_eq!(sim.engine.metrics().sessions_created, 0);
}

#[test]
fn heartbeats_and_idle_timeout() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:bob"));
    sim.advance(Duration::from_secs(20));
    assert_eq!(sim.client(a).last_event(), Some(sys::PING));
    assert_eq!(sim.client(a).received.last().unwrap().envelope.seq, None);
    // b answers every ping, a stays silent.
    for _ in 0..5 {
        sim.send(b, sys::PONG, None, None);
        sim.advance(Duration::from_secs(10));
    }
    assert!(sim.client(b).connection.is_some());
    assert_eq!(
        sim.client(a).closed.unwrap().0,
        CloseCode(ErrorCode::IDLE_TIMEOUT.0)
    );
    assert!(sim.elapsed() >= Duration::from_secs(40));
    assert!(sim
        .lifecycle
        .iter()
        .any(|e| matches!(e, SessionEvent::Suspended { .. })));
    sim.check_bounds();
}

#[test]
fn auto_pong_clients_stay_connected_for_hours() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    sim.set_auto_pong(a, true);
    sim.advance(Duration::from_secs(3 * 3600));
    assert!(sim.client(a).connection.is_some());
    let pings = sim
        .client(a)
        .received
        .iter()
        .filter(|r| r.event() == sys::PING)
        .count();
    assert_eq!(pings, 3 * 3600 / 20);
    sim.check_bounds();
}

#[test]
fn room_limits() {
    let mut sim = Sim::new(EngineConfig {
        max_rooms_per_session: 2,
        max_room_name_len: 8,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let now = sim.now();
    assert_eq!(
        sim.engine.join_room(now, s, "much-too-long"),
        Err(ApiError::RoomNameTooLong { len: 13, max: 8 })
    );
    sim.engine.join_room(now, s, "r1").unwrap();
    sim.engine.join_room(now, s, "r2").unwrap();
    assert_eq!(
        sim.engine.join_room(now, s, "r3"),
        Err(ApiError::TooManyRooms { max: 2 })
    );
    assert!(sim.engine.leave_room(now, s, "r1").unwrap());
    assert!(!sim.engine.leave_room(now, s, "r1").unwrap());
    assert!(sim.engine.join_room(now, s, "r3").unwrap());
    assert_eq!(sim.engine.metrics().rooms, 2);
    let gone = SessionId(1);
    assert_eq!(
        sim.engine.join_room(now, gone, "r"),
        Err(ApiError::UnknownSession(gone))
    );
}

#[test]
fn end_session_tells_the_client_closes_with_4115_and_leaves_rooms() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let now = sim.now();
    sim.engine.join_room(now, s, "lobby").unwrap();
    sim.engine.end_session(now, s, "kicked").unwrap();
    sim.drain();
    let ended = sim
        .client(a)
        .last_of(sys::SESSION_ENDED)
        .expect("sys.session.ended");
    assert_eq!(ended.envelope.seq, None, "a control event");
    assert_eq!(ended.payload()["reason"], "kicked");
    assert_eq!(ended.payload()["sessionId"], s.to_string());
    assert_eq!(
        sim.client(a).closed.unwrap().0,
        ErrorCode::SESSION_ENDED.close_code()
    );
    assert_eq!(sim.engine.room_len("lobby"), 0);
    assert!(matches!(
        sim.lifecycle.last(),
        Some(SessionEvent::Closed {
            reason: CloseReason::ByServer,
            ..
        })
    ));
    assert_eq!(
        sim.engine.end_session(now, s, ""),
        Err(ApiError::UnknownSession(s))
    );
}

#[test]
fn broadcasts_publish_and_remote_publishes_do_not_echo() {
    let mut sim = Sim::new(EngineConfig {
        publish_broadcasts: true,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:bob"));
    let now = sim.now();
    sim.engine.join_room(now, sid(&sim, a), "r").unwrap();
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(r#"{"n":1}"#));
    sim.engine.broadcast_room(now, "r", &env, None);
    sim.drain();
    assert_eq!(sim.publications.len(), 1);
    let publication = sim.publications[0].clone();
    // Another node's engine would deliver it; here: feed it back, no second publish.
    sim.engine.handle_remote_publish(now, &publication);
    sim.drain();
    assert_eq!(sim.publications.len(), 1);
    assert_eq!(chat(&sim, a), [(1, 1), (2, 1)]);
    assert!(chat(&sim, b).is_empty());
    assert_eq!(sim.engine.broadcast(now, &env), 2);
    sim.drain();
    assert_eq!(sim.publications.len(), 2);
    let only_bob = sim
        .engine
        .broadcast_filter(now, &env, |_, user| user.as_str() == "bob");
    sim.drain();
    assert_eq!(only_bob, 1);
    assert_eq!(chat(&sim, b).len(), 2);
}

/// A node that publishes across nodes; nodes of one test get different seeds (as real
/// nodes draw different session ids).
fn publishing(seed: u64) -> Sim {
    let config = EngineConfig {
        publish_broadcasts: true,
        ..EngineConfig::default()
    };
    Sim::with_seed(config, seed)
}

/// Sends to a user, to a session or to all but one cross nodes as publications; the
/// node that receives one delivers it only to the sessions it holds and never publishes
/// it again.
#[test]
fn user_session_and_all_but_one_targets_are_published_and_delivered_where_held() {
    let (mut a, mut b) = (publishing(1), publishing(2));
    let alice_a = a.connect(Some("user:alice"));
    let bob_a = a.connect(Some("user:bob"));
    let alice_b = b.connect(Some("user:alice"));
    let bob_b = b.connect(Some("user:bob"));
    let alice = UserId::new("alice");
    let env = |n: &'static str| OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(n));
    let now = a.now();

    // To a user: her sessions here, and a publication for the other nodes.
    assert_eq!(a.engine.send_to_user(now, &alice, &env(r#"{"n":1}"#), None), 1);
    a.drain();
    let to_alice = a.publications.pop().expect("published");
    assert_eq!(
        (to_alice.target.clone(), to_alice.except),
        (PublishTarget::User(alice.clone()), None)
    );
    b.engine.handle_remote_publish(now, &to_alice);
    b.drain();
    assert_eq!(chat(&a, alice_a), [(1, 1)]);
    assert_eq!(chat(&b, alice_b), [(1, 1)], "in her own stream on the other node");
    assert!(chat(&a, bob_a).is_empty() && chat(&b, bob_b).is_empty());
    assert!(
        b.publications.is_empty(),
        "a remote publication is never published again"
    );

    // To a user but one of her sessions: the exception travels with it.
    let except = sid(&b, alice_b);
    a.engine
        .send_to_user(now, &alice, &env(r#"{"n":2}"#), Some(except));
    a.drain();
    let publication = a.publications.pop().expect("published");
    assert_eq!(publication.except, Some(except));
    b.engine.handle_remote_publish(now, &publication);
    b.drain();
    assert_eq!(chat(&a, alice_a), [(1, 1), (2, 2)]);
    assert_eq!(chat(&b, alice_b), [(1, 1)], "left out");

    // To a session this node does not hold: published; only its node delivers it.
    let bob_there = sid(&b, bob_b);
    assert_eq!(
        a.engine.send_anywhere(now, bob_there, &env(r#"{"n":3}"#)),
        Ok(None)
    );
    a.drain();
    let to_bob = a.publications.pop().expect("published");
    assert_eq!(to_bob.target, PublishTarget::Session(bob_there));
    a.engine.handle_remote_publish(now, &to_bob);
    a.drain();
    assert!(chat(&a, bob_a).is_empty(), "not held here: ignored");
    b.engine.handle_remote_publish(now, &to_bob);
    b.drain();
    assert_eq!(chat(&b, bob_b), [(1, 3)]);
    // A session this node holds is sent to at once, not published.
    let bob_here = sid(&a, bob_a);
    assert_eq!(
        a.engine.send_anywhere(now, bob_here, &env(r#"{"n":4}"#)),
        Ok(Some(1))
    );
    a.drain();
    assert!(a.publications.is_empty());
    assert_eq!(chat(&a, bob_a), [(1, 4)]);

    // To all but one: the exception travels too.
    assert_eq!(
        a.engine
            .broadcast_except(now, &env(r#"{"n":5}"#), Some(bob_there)),
        2
    );
    a.drain();
    let all = a.publications.pop().expect("published");
    assert_eq!(
        (all.target.clone(), all.except),
        (PublishTarget::All, Some(bob_there))
    );
    b.engine.handle_remote_publish(now, &all);
    b.drain();
    assert_eq!(chat(&b, alice_b), [(1, 1), (2, 5)]);
    assert_eq!(chat(&b, bob_b), [(1, 3)], "left out");
}

/// Without cross-node publishing, a send to a session this node does not hold is an
/// error, and sends to a user or all publish nothing.
#[test]
fn without_publishing_an_unknown_session_is_an_error() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let now = sim.now();
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(r#"{"n":1}"#));
    let elsewhere = SessionId(42);
    assert_eq!(
        sim.engine.send_anywhere(now, elsewhere, &env),
        Err(ApiError::UnknownSession(elsewhere))
    );
    assert_eq!(sim.engine.send_to_user(now, &UserId::new("alice"), &env, None), 1);
    assert_eq!(sim.engine.broadcast_except(now, &env, Some(sid(&sim, a))), 0);
    sim.drain();
    assert!(sim.publications.is_empty());
    assert_eq!(chat(&sim, a), [(1, 1)]);
}

#[test]
fn volatile_broadcast_is_outside_the_stream() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:bob"));
    let now = sim.now();
    let env = OutgoingEnvelope::new("presence");
    assert_eq!(sim.engine.broadcast_volatile(now, None, &env), 2);
    sim.drain();
    for c in [a, b] {
        let last = sim.client(c).received.last().unwrap();
        assert_eq!((last.event(), last.envelope.seq), ("presence", None));
    }
    assert_eq!(sim.engine.session_info(sid(&sim, a)).unwrap().replay_len, 0);
}

#[test]
fn origin_allow_list() {
    let mut sim = Sim::new(EngineConfig {
        allowed_origins: Some(vec!["https://app.example".into()]),
        ..EngineConfig::default()
    });
    let now = sim.now();
    let mut info = ws_session::ConnectionInfo::new(
        None,
        "/ws",
        Some("token=user:eve".into()),
        [("Origin", "https://evil.example")].into_iter().collect(),
    );
    assert_eq!(info.token.as_deref(), Some("user:eve"));
    let cid = sim.engine.handle_connection_opened(now, info.clone());
    match sim.engine.poll_action() {
        Some(ws_session::Action::Close { connection, code, .. }) => {
            assert_eq!((connection, code), (cid, CloseCode(4114)));
        }
        other => panic!("{other:?}"),
    }
    info.origin = Some("https://APP.example".into());
    sim.engine.handle_connection_opened(now, info);
    assert!(matches!(
        sim.engine.poll_action(),
        Some(ws_session::Action::Authenticate(_))
    ));
}

#[test]
fn connection_info_extracts_the_bearer_token_first() {
    let info = ws_session::ConnectionInfo::new(
        None,
        "/ws",
        Some("a=1&token=q".into()),
        [("authorization", "Bearer  h ")].into_iter().collect(),
    );
    assert_eq!(info.token.as_deref(), Some("h"));
}

#[test]
fn stale_and_unknown_inputs_are_harmless() {
    let mut sim = sim();
    let now = sim.now();
    let ghost = ws_session::ConnectionId(999);
    sim.engine.handle_message(now, ghost, Message::Text("{}".into()));
    sim.engine.handle_connection_closed(now, ghost);
    sim.engine.handle_flushed(now, ghost, 10);
    sim.engine.handle_timeout(now);
    assert!(sim.engine.poll_action().is_none());
    assert_eq!(
        sim.engine
            .handle_auth_result(now, ws_session::AuthId(5), Ok("x".into())),
        Err(ApiError::UnknownAuthRequest)
    );
}

#[test]
fn config_validation() {
    use std::time::Duration;
    use ws_session::ConfigError;
    let rng = || <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(1);
    let bad = |config: EngineConfig| ws_session::Engine::new(config, rng()).unwrap_err();
    assert_eq!(
        bad(EngineConfig {
            rate_limit_burst: 0,
            ..EngineConfig::default()
        }),
        ConfigError::ZeroRateLimit
    );
    assert!(matches!(
        bad(EngineConfig {
            replay_max_bytes: 2 << 20,
            ..EngineConfig::default()
        }),
        ConfigError::ReplayExceedsOutbound { .. }
    ));
    assert!(matches!(
        bad(EngineConfig {
            resume_window: Duration::MAX,
            ..EngineConfig::default()
        }),
        ConfigError::DurationTooLong {
            name: "resume_window",
            ..
        }
    ));
}

/// A generator that always returns zeros: broken, but it must not hang the engine.
struct Zeros;

impl rand_chacha::rand_core::RngCore for Zeros {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        dst.fill(0);
    }
}

impl rand_chacha::rand_core::CryptoRng for Zeros {}

#[test]
fn a_broken_generator_does_not_hang_session_creation() {
    let mut engine = ws_session::Engine::new(
        EngineConfig {
            allow_anonymous: true,
            ..EngineConfig::default()
        },
        Zeros,
    )
    .unwrap();
    // The fake clock's origin: the one real clock read of the test.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    for _ in 0..3 {
        let cid = engine.handle_connection_opened(now, ws_session::ConnectionInfo::default());
        assert!(engine.session_of(cid).is_some());
    }
    assert_eq!(engine.sessions().count(), 3);
}

#[test]
fn escaped_event_names_and_payload_positions_are_exact() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    sim.send_text(a, r#"{"p" : [1, {"x":"}"}] ,"e":"ch\u0061t","v":"1"}"#);
    let ev = sim.events.last().unwrap();
    assert_eq!(ev.event(), "chat");
    assert_eq!(ev.payload(), Some(r#"[1, {"x":"}"}]"#));
    assert_eq!(ev.correlation_id(), None);
}

#[test]
fn metrics_count_traffic_sessions_and_rooms() {
    let mut sim = sim();
    sim.set_handler(Sim::echo_handler);
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:bob"));
    let now = sim.now();
    sim.engine.join_room(now, sid(&sim, a), "r").unwrap();
    sim.send(a, "echo", Some("1"), Some("c1"));
    sim.drop_connection(b);
    let m = sim.engine.metrics();
    assert_eq!(m.connections, 1);
    assert_eq!(m.connections_opened, 2);
    assert_eq!((m.sessions_live, m.sessions_suspended), (1, 1));
    assert_eq!(m.sessions_created, 2);
    assert_eq!(m.rooms, 1);
    assert_eq!(m.messages_in, 1);
    let echo_text = r#"{"v":"1.0","e":"echo","p":1,"c":"c1"}"#;
    assert_eq!(m.bytes_in, echo_text.len() as u64);
    // Two sys.session.created and one reply.
    assert_eq!(m.messages_out, 3);
    let sent: usize = sim
        .clients()
        .iter()
        .flat_map(|c| &c.received)
        .map(|r| r.text.len())
        .sum();
    assert_eq!(m.bytes_out, sent as u64);
}

#[test]
fn a_restore_cut_off_before_the_client_saw_it_can_be_resumed_with_the_old_token() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let first = sim.client(a).session.clone().unwrap();
    send_app(&mut sim, s, 1);
    sim.drop_connection(a);
    send_app(&mut sim, s, 2);
    // The server accepts the resume and rotates the token, but the connection drops
    // before the client reads `sys.session.restored`: it only knows the first token.
    resume_as(&mut sim, a, first.clone(), 1, "alice");
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    sim.drop_connection(a);
    send_app(&mut sim, s, 3);
    resume_as(&mut sim, a, first.clone(), 1, "alice");
    assert_eq!(sim.client(a).last_control(), Some(sys::SESSION_RESTORED));
    assert_eq!(sid(&sim, a), s, "the same session, not a new one");
    let restored = sim.client(a).last_of(sys::SESSION_RESTORED).unwrap();
    assert_eq!(restored.payload()["replayed"], 2);
    // Once the client has spoken on the restored connection, the old token is spent.
    sim.send(a, sys::PING, None, None);
    sim.drop_connection(a);
    resume_as(&mut sim, a, first, 3, "alice");
    assert_eq!(refused_reason(&sim, a), "used");
}

/// With cross-node publishing on, the engine says when this node's first member enters
/// a room and its last one leaves it (by leaving or by the session ending), so that a
/// backend subscribes to the rooms this node has members in, and only those.
#[test]
fn room_occupancy_is_announced_for_cross_node_backends() {
    use ws_session::Action;
    let mut sim = Sim::new(EngineConfig {
        publish_broadcasts: true,
        ..EngineConfig::default()
    });
    let a = sim.connect_user("alice");
    let b = sim.connect_user("bob");
    let (sa, sb) = (
        sim.client(a).session_id().unwrap(),
        sim.client(b).session_id().unwrap(),
    );
    let now = sim.now();
    let occupancy = |sim: &mut Sim| -> Vec<String> {
        std::iter::from_fn(|| sim.engine.poll_action())
            .filter_map(|action| match action {
                Action::RoomOccupied(room) => Some(format!("+{room}")),
                Action::RoomVacated(room) => Some(format!("-{room}")),
                _ => None,
            })
            .collect()
    };
    sim.engine.join_room(now, sa, "r").unwrap();
    sim.engine.join_room(now, sb, "r").unwrap();
    assert_eq!(occupancy(&mut sim), ["+r"]);
    sim.engine.leave_room(now, sa, "r").unwrap();
    assert_eq!(occupancy(&mut sim), Vec::<String>::new());
    sim.engine.end_session(now, sb, "test").unwrap();
    assert_eq!(occupancy(&mut sim), ["-r"]);
}

#[test]
fn a_handover_notice_is_answered_by_the_client_and_its_connection_closes_with_4116() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:bob"));
    let s = sid(&sim, a);
    let now = sim.now();
    sim.engine.begin_handover(now);
    sim.drain();
    // Every attached client is told, outside the stream.
    for client in [a, b] {
        let notice = sim.client(client).last_of(sys::HANDOVER).expect("the notice");
        assert!(notice.envelope.seq.is_none());
    }
    // Alice answers that she sends nothing more: her connection closes with 4116 and
    // her session is suspended (resumable), not ended.
    sim.send(a, sys::HANDOVER, None, None);
    assert_eq!(
        sim.client(a).closed.map(|(code, _)| code),
        Some(ErrorCode::SESSION_MOVED.close_code())
    );
    assert!(matches!(sim.lifecycle.last(), Some(SessionEvent::Suspended { session }) if *session == s));
    assert!(sim.engine.session_info(s).is_some());
    // Bob has not answered: his connection stays until the driver's grace ends it.
    assert!(sim.client(b).closed.is_none());
}

#[test]
fn a_stopping_node_refuses_each_message_with_4116_in_order_before_the_close_its_client_asks_for() {
    let mut sim = sim();
    let taken = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = taken.clone();
    sim.set_handler(move |_, _, event| seen.borrow_mut().push(event.correlation_id().map(str::to_owned)));
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect_with_codec(Some("user:bob"), ws_proto::envelope::Codec::MsgPack);
    sim.send(a, "tick", Some("1"), Some("q1"));
    assert_eq!(*taken.borrow(), [Some("q1".to_owned())], "taken before the stop");

    sim.engine.stop_taking_messages();
    sim.send(a, "tick", Some("2"), Some("q2"));
    sim.send(b, "tick", Some("3"), Some("q3"));
    sim.send(a, "tick", Some("4"), None);
    assert_eq!(
        taken.borrow().len(),
        1,
        "nothing reaches a handler after the stop"
    );
    let refusals = |sim: &Sim, client: ClientId| -> Vec<(Option<u16>, Option<String>)> {
        sim.client(client)
            .received
            .iter()
            .filter(|r| r.event() == sys::ERROR)
            .map(|r| {
                (
                    r.error_code(),
                    r.envelope.correlation_id.as_deref().map(str::to_owned),
                )
            })
            .collect()
    };
    let moved = Some(ErrorCode::SESSION_MOVED.0);
    // Refused with 4116, each with its own `c` (none for an event without one), in
    // both codecs, outside the stream.
    assert_eq!(refusals(&sim, a), [(moved, Some("q2".to_owned())), (moved, None)]);
    assert_eq!(refusals(&sim, b), [(moved, Some("q3".to_owned()))]);
    assert!(sim.client(a).last_of(sys::ERROR).unwrap().envelope.seq.is_none());
    // System events are still handled.
    sim.send(a, sys::PING, None, Some("p1"));
    assert_eq!(sim.client(a).last_event(), Some(sys::PONG));

    // The notice, then a request and the client's answer read in one go: the refusal
    // is queued before the close the answer asks for (the simulator panics on a
    // message to a closed connection), so the client learns to send it again.
    let now = sim.now();
    sim.engine.begin_handover(now);
    sim.drain();
    let cid = sim.client(a).connection.expect("open");
    let text = |event: &str, c: Option<&str>| {
        let mut envelope = OutgoingEnvelope::new(event);
        envelope.correlation_id = c;
        Message::Text(String::from_utf8(envelope.to_vec()).unwrap())
    };
    sim.engine.handle_message(now, cid, text("tick", Some("q5")));
    sim.engine.handle_message(now, cid, text(sys::HANDOVER, None));
    sim.drain();
    assert_eq!(refusals(&sim, a).last(), Some(&(moved, Some("q5".to_owned()))));
    assert_eq!(
        sim.client(a).closed.map(|(code, _)| code),
        Some(ErrorCode::SESSION_MOVED.close_code())
    );
    assert_eq!(taken.borrow().len(), 1);
}

#[test]
fn replies_made_of_a_shared_prefix_are_whole_in_both_codecs_counted_whole_and_replayed_alike() {
    let mut sim = sim();
    let shared = ws_session::SharedPrefix::new("who", Payload::Trusted(r#"{"users":["ann","bob"]}"#));
    sim.set_handler(move |engine, now, event| {
        if event.event() == "who" {
            let c = event.correlation_id();
            engine
                .send_shared(now, event.session, &shared, c)
                .expect("session exists");
        }
    });
    let ann = sim.connect(Some("user:ann"));
    let bob = sim.connect_with_codec(Some("user:bob"), ws_proto::envelope::Codec::MsgPack);
    sim.send(ann, "who", None, Some("a1"));
    sim.send(bob, "who", None, Some("b1"));
    sim.send(ann, "who", None, None);

    // Byte for byte what `reply` and `send` make of the same envelope.
    let to_ann: Vec<&str> = sim.client(ann).stream().iter().map(|r| r.text.as_str()).collect();
    let first = r#"{"v":"1.0","e":"who","p":{"users":["ann","bob"]},"c":"a1","s":1}"#;
    let second = r#"{"v":"1.0","e":"who","p":{"users":["ann","bob"]},"s":2}"#;
    assert_eq!(to_ann, [first, second]);
    // The MessagePack connection gets the same envelope, transcoded, its own `c`.
    let to_bob = sim.client(bob).last_of("who").expect("a reply").clone();
    assert_eq!(to_bob.envelope.correlation_id.as_deref(), Some("b1"));
    assert_eq!(to_bob.envelope.seq, Some(1));
    assert_eq!(to_bob.payload(), serde_json::json!({"users": ["ann", "bob"]}));
    // The replay buffers count each reply whole (its `c` included).
    let bob_json_len = first.len(); // "b1" is as long as "a1"
    assert_eq!(
        sim.engine.metrics().replay_bytes,
        (first.len() + second.len() + bob_json_len) as u64
    );
    sim.check_bounds();

    // Replayed after a cut exactly as first sent, in both codecs.
    for client in [ann, bob] {
        sim.reconnect(client, None);
        sim.resume_with(
            client,
            0,
            Some(if client == ann { "user:ann" } else { "user:bob" }),
        );
    }
    let replayed: Vec<&str> = sim.client(ann).stream().iter().map(|r| r.text.as_str()).collect();
    assert_eq!(replayed, [first, second, first, second]);
    let again = sim.client(bob).last_of("who").expect("a replay");
    assert_eq!(
        (
            again.envelope.correlation_id.as_deref(),
            again.envelope.seq,
            again.payload()
        ),
        (Some("b1"), Some(1), to_bob.payload())
    );
    // Acknowledged: nothing held.
    sim.ack(ann);
    sim.ack(bob);
    assert_eq!(sim.engine.metrics().replay_bytes, 0);
    sim.check_bounds();
}

#[test]
fn a_prefix_encoded_outside_the_engine_goes_out_as_reply_would_send_it() {
    let mut sim = sim();
    sim.set_handler(|engine, now, event| {
        let Some(c) = event.correlation_id() else {
            return;
        };
        let envelope = OutgoingEnvelope::new("echoed").with_correlation_id(c);
        let prefix = match event.event() {
            "made" => ws_session::EncodedPrefix::new(&envelope.with_payload(Payload::Trusted("[1,2]"))),
            _ => ws_session::EncodedPrefix::serialize(&envelope, &[1, 2]).expect("serializes"),
        };
        engine
            .send_encoded(now, event.session, &prefix)
            .expect("session exists");
    });
    let ann = sim.connect(Some("user:ann"));
    sim.send(ann, "made", None, Some("m"));
    sim.send(ann, "serialized", None, Some("s"));
    let got: Vec<&str> = sim.client(ann).stream().iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        got,
        [
            r#"{"v":"1.0","e":"echoed","p":[1,2],"c":"m","s":1}"#,
            r#"{"v":"1.0","e":"echoed","p":[1,2],"c":"s","s":2}"#
        ]
    );
    // Kept for replay like any stream message, counted whole.
    assert_eq!(
        sim.engine.metrics().replay_bytes,
        (got[0].len() + got[1].len()) as u64
    );

    // A session that is gone is an error, as for `send`.
    let session = sid(&sim, ann);
    let now = sim.now();
    sim.engine.end_session(now, session, "bye").expect("ends");
    sim.drain();
    let prefix = ws_session::EncodedPrefix::new(&OutgoingEnvelope::new("late"));
    assert!(matches!(
        sim.engine.send_encoded(now, session, &prefix),
        Err(ApiError::UnknownSession(s)) if s == session
    ));
}
