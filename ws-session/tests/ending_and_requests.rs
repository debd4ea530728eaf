//! Ending sessions on purpose (either side) and server→client requests, driven through
//! the simulation harness with a scripted client.

use std::time::Duration;

use serde_json::value::RawValue;
use ws_proto::envelope::sys;
use ws_proto::CloseCode;
use ws_session::sim::{ClientId, Sim};
use ws_session::{
    ApiError, CloseReason, EngineConfig, ErrorCode, RequestFailure, RequestId, SessionEvent, SessionId,
};

fn sim() -> Sim {
    Sim::new(EngineConfig::default())
}

fn sid(sim: &Sim, c: ClientId) -> SessionId {
    sim.client(c).session_id().expect("client has a session")
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// Sends a request from the server's application and drains.
fn request(sim: &mut Sim, session: SessionId, event: &str, payload: &str, timeout: Duration) -> RequestId {
    let now = sim.now();
    let payload = raw(payload);
    let id = sim
        .engine
        .request(now, session, event, Some(&payload), timeout)
        .expect("request accepted");
    sim.drain();
    id
}

#[test]
fn a_client_ending_its_session_ends_it_now_not_after_the_window() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let now = sim.now();
    sim.engine.join_room(now, s, "lobby").unwrap();
    sim.send(a, sys::SESSION_END, Some(r#"{"reason":"logout"}"#), None);
    assert_eq!(sim.client(a).closed.unwrap().0, CloseCode::NORMAL);
    assert_eq!(sim.engine.session_info(s), None, "gone at once, nothing kept");
    assert_eq!(sim.engine.room_len("lobby"), 0);
    assert_eq!(
        sim.lifecycle.last(),
        Some(&SessionEvent::Closed {
            session: s,
            user: ws_session::UserId::new("alice"),
            reason: CloseReason::ByClient
        })
    );
    assert!(
        !sim.lifecycle
            .iter()
            .any(|e| matches!(e, SessionEvent::Suspended { .. })),
        "ended, not suspended"
    );
    // Its token no longer resumes it: the refusal says it was ended.
    let b = sim.connect(Some("user:alice"));
    let old = sim.client(a).session.clone();
    sim.client_mut(b).session = old;
    sim.resume_with(b, 0, None);
    let refusal = sim.client(b).last_of(sys::ERROR).unwrap().payload();
    assert_eq!(
        (refusal["code"].as_u64(), refusal["reason"].as_str()),
        (Some(4106), Some("ended"))
    );
}

#[test]
fn session_end_before_a_session_exists_is_refused_and_a_bad_payload_too() {
    let mut sim = sim();
    let a = sim.connect(None);
    sim.send(a, sys::SESSION_END, None, Some("e1"));
    assert_eq!(sim.client(a).error_codes(), [ErrorCode::NOT_AUTHENTICATED.0]);
    let b = sim.connect(Some("user:bob"));
    sim.send(b, sys::SESSION_END, Some(r#"{"reason":7}"#), Some("e2"));
    assert_eq!(sim.client(b).error_codes(), [ErrorCode::INVALID_PAYLOAD.0]);
    assert!(sim.engine.session_info(sid(&sim, b)).is_some(), "still there");
}

#[test]
fn a_network_drop_still_suspends() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    sim.drop_connection(a);
    assert_eq!(
        sim.lifecycle.last(),
        Some(&SessionEvent::Suspended { session: s })
    );
    assert!(sim.engine.session_info(s).is_some());
}

#[test]
fn ending_a_suspended_session_refuses_its_resume_as_ended() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    sim.drop_connection(a);
    let now = sim.now();
    sim.engine.end_session(now, s, "banned").unwrap();
    sim.drain();
    assert!(matches!(
        sim.lifecycle.last(),
        Some(SessionEvent::Closed {
            reason: CloseReason::ByServer,
            ..
        })
    ));
    sim.reconnect(a, Some("user:alice"));
    sim.resume(a);
    assert_eq!(
        sim.client(a).last_of(sys::ERROR).unwrap().payload()["reason"],
        "ended"
    );
}

#[test]
fn a_request_is_in_the_stream_and_its_answer_resolves_it() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let id = request(
        &mut sim,
        s,
        "client.time",
        r#"{"tz":"UTC"}"#,
        Duration::from_secs(5),
    );
    let got = sim.client(a).last_of(sys::REQUEST).expect("sys.request").clone();
    assert_eq!(got.envelope.seq, Some(1), "in the session stream");
    assert_eq!(
        got.envelope.correlation_id.as_deref(),
        Some(id.correlation_id().as_str())
    );
    assert_eq!(
        got.payload(),
        serde_json::json!({"event": "client.time", "payload": {"tz": "UTC"}})
    );
    assert_eq!(sim.engine.pending_requests(), 1);
    let c = id.correlation_id();
    sim.send(a, sys::REPLY, Some(r#"{"now":42}"#), Some(&c));
    assert_eq!(sim.responses, [(id, Ok(Some(r#"{"now":42}"#.to_owned())))]);
    assert_eq!(sim.engine.pending_requests(), 0);
    // A second answer, or one for a request never made, is ignored.
    sim.send(a, sys::REPLY, Some("1"), Some(&c));
    sim.send(a, sys::REPLY, Some("1"), Some("sr999"));
    sim.send(a, sys::REPLY, Some("1"), Some("q1"));
    assert_eq!(sim.responses.len(), 1);
    assert!(sim.client(a).error_codes().is_empty());
}

#[test]
fn a_refusal_a_timeout_and_an_ended_session_each_fail_a_request_once() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let refused = request(&mut sim, s, "x", "1", Duration::from_secs(5));
    sim.send(
        a,
        sys::REPLY_ERROR,
        Some(r#"{"code":4201,"message":"no"}"#),
        Some(&refused.correlation_id()),
    );
    let timed_out = request(&mut sim, s, "x", "2", Duration::from_secs(1));
    sim.advance(Duration::from_millis(999));
    assert_eq!(sim.responses.len(), 1, "not before its deadline");
    sim.advance(Duration::from_millis(1));
    let cut_off = request(&mut sim, s, "x", "3", Duration::from_secs(60));
    let now = sim.now();
    sim.engine.end_session(now, s, "").unwrap();
    sim.drain();
    assert_eq!(
        sim.responses,
        [
            (
                refused,
                Err(RequestFailure::Refused {
                    code: 4201,
                    message: "no".into()
                })
            ),
            (timed_out, Err(RequestFailure::Timeout)),
            (cut_off, Err(RequestFailure::SessionEnded)),
        ]
    );
    // The session is gone: a new request is refused at once, and says why.
    let now = sim.now();
    assert_eq!(
        sim.engine.request(now, s, "x", None, Duration::from_secs(1)),
        Err(ApiError::SessionEnded(s))
    );
    let never = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(
        sim.engine.request(now, never, "x", None, Duration::from_secs(1)),
        Err(ApiError::UnknownSession(never))
    );
    // Its late deadline is harmless.
    sim.advance(Duration::from_secs(120));
    assert_eq!(sim.responses.len(), 3);
}

#[test]
fn an_answer_from_another_session_does_not_resolve_a_request() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let b = sim.connect(Some("user:mallory"));
    let s = sid(&sim, a);
    let id = request(&mut sim, s, "x", "1", Duration::from_secs(5));
    sim.send(b, sys::REPLY, Some("\"forged\""), Some(&id.correlation_id()));
    assert!(sim.responses.is_empty());
    sim.send(a, sys::REPLY, Some("\"real\""), Some(&id.correlation_id()));
    assert_eq!(sim.responses, [(id, Ok(Some("\"real\"".to_owned())))]);
}

#[test]
fn pending_requests_per_session_are_bounded() {
    let mut sim = Sim::new(EngineConfig {
        max_pending_requests: 2,
        ..EngineConfig::default()
    });
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let first = request(&mut sim, s, "x", "1", Duration::from_secs(5));
    request(&mut sim, s, "x", "2", Duration::from_secs(5));
    let now = sim.now();
    assert_eq!(
        sim.engine.request(now, s, "x", None, Duration::from_secs(5)),
        Err(ApiError::TooManyRequests { max: 2 })
    );
    sim.send(a, sys::REPLY, None, Some(&first.correlation_id()));
    assert_eq!(sim.responses, [(first, Ok(None))]);
    assert!(sim
        .engine
        .request(now, s, "x", None, Duration::from_secs(5))
        .is_ok());
}

#[test]
fn a_request_made_while_suspended_is_replayed_on_resume_and_answered() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    sim.drop_connection(a);
    let id = request(&mut sim, s, "client.time", "null", Duration::from_secs(30));
    assert!(sim.responses.is_empty(), "waits for the client");
    sim.advance(Duration::from_secs(10));
    sim.reconnect(a, Some("user:alice"));
    sim.resume(a);
    let replayed = sim.client(a).last_of(sys::REQUEST).expect("replayed").clone();
    assert_eq!(replayed.envelope.seq, Some(1));
    sim.send(a, sys::REPLY, Some("\"12:00\""), Some(&id.correlation_id()));
    assert_eq!(sim.responses, [(id, Ok(Some("\"12:00\"".to_owned())))]);
}

#[test]
fn a_malformed_refusal_is_a_sys_error_and_the_request_still_waits() {
    let mut sim = sim();
    let a = sim.connect(Some("user:alice"));
    let s = sid(&sim, a);
    let id = request(&mut sim, s, "x", "1", Duration::from_secs(5));
    sim.send(
        a,
        sys::REPLY_ERROR,
        Some(r#"{"code":"no"}"#),
        Some(&id.correlation_id()),
    );
    assert_eq!(sim.client(a).error_codes(), [ErrorCode::INVALID_PAYLOAD.0]);
    assert!(sim.responses.is_empty());
    assert_eq!(sim.engine.pending_requests(), 1);
}
