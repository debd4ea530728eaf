//! Setup shared by the engine benchmarks, and by tether-bench's engine rows
//! (bench/src/engine.rs includes this file by path, so that both measure the same
//! engines).

use std::time::Instant;

use rand_chacha::rand_core::SeedableRng;
use ws_proto::envelope::{Codec, OutgoingEnvelope, Payload};
use ws_session::{
    Action, ConnectionId, ConnectionInfo, Engine, EngineConfig, OutboundMessage, SessionId, UserId,
};

/// Limits out of the benchmarks' way: no rate limit, replay bounded as by default.
pub(crate) fn config() -> EngineConfig {
    EngineConfig {
        rate_limit_per_second: u32::MAX,
        rate_limit_burst: u32::MAX,
        ..EngineConfig::default()
    }
}

/// An engine with `n` authenticated sessions, each on its own connection and, when
/// `room` is set, in that room. Actions are drained.
pub(crate) fn engine_with_sessions(
    now: Instant,
    n: usize,
    room: Option<&str>,
) -> (Engine, Vec<(ConnectionId, SessionId)>) {
    engine_with_config(config(), now, n, room)
}

/// [`engine_with_sessions`] with another configuration.
pub(crate) fn engine_with_config(
    config: EngineConfig,
    now: Instant,
    n: usize,
    room: Option<&str>,
) -> (Engine, Vec<(ConnectionId, SessionId)>) {
    engine_with_codecs(config, now, n, room, |_| Codec::Json)
}

/// [`engine_with_config`] with connection `i` of codec `codec(i)`.
#[allow(dead_code)] // not every bench binary uses it
pub(crate) fn engine_with_codecs(
    config: EngineConfig,
    now: Instant,
    n: usize,
    room: Option<&str>,
    codec: impl Fn(usize) -> Codec,
) -> (Engine, Vec<(ConnectionId, SessionId)>) {
    let mut engine = Engine::new(config, rand_chacha::ChaCha20Rng::seed_from_u64(1)).unwrap();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let info = ConnectionInfo::with_token(format!("t{i}")).with_codec(codec(i));
        let cid = engine.handle_connection_opened(now, info);
        while let Some(action) = engine.poll_action() {
            if let Action::Authenticate(req) = action {
                engine
                    .handle_auth_result(now, req.id, Ok(UserId::new(format!("user{i}"))))
                    .unwrap();
            }
        }
        let sid = engine.session_of(cid).expect("authenticated");
        if let Some(room) = room {
            engine.join_room(now, sid, room).unwrap();
        }
        out.push((cid, sid));
    }
    drain(&mut engine, now);
    (engine, out)
}

/// Drains the actions the way a transport does: transmits are "written" (encoded into
/// a reused buffer) and reported flushed.
pub(crate) fn drain(engine: &mut Engine, now: Instant) -> usize {
    drain_with(engine, now, &mut Vec::with_capacity(256))
}

/// [`drain`] encoding into the caller's buffer.
pub(crate) fn drain_with(engine: &mut Engine, now: Instant, buf: &mut Vec<u8>) -> usize {
    let mut n = 0;
    while let Some(action) = engine.poll_action() {
        match action {
            Action::Transmit { connection, message } => {
                buf.clear();
                let len = message.write_to(buf);
                engine.handle_flushed(now, connection, len);
                n += 1;
            }
            Action::TransmitBroadcast {
                prefix,
                codec,
                recipients,
            } => {
                // What a transport does: the shared body once, a tail per recipient.
                for &(connection, seq) in &recipients {
                    buf.clear();
                    OutboundMessage::write_parts(codec, &prefix, Some(seq), buf);
                    engine.handle_flushed(now, connection, buf.len());
                    n += 1;
                }
                engine.recycle(recipients);
            }
            _ => {}
        }
    }
    n
}

/// `n` sessions in the room named `room`, suspended (connections closed), each missing `missed`
/// broadcasts; and for each the text of its `sys.reconnect.request` (credential
/// `t{i}`, user `user{i}`, `lastSeq` 0), in session order.
#[allow(dead_code)] // not every bench binary uses it
pub(crate) fn suspended_sessions(now: Instant, n: usize, missed: u64) -> (Engine, Vec<String>) {
    let mut engine = Engine::new(config(), rand_chacha::ChaCha20Rng::seed_from_u64(1)).unwrap();
    let mut requests = Vec::with_capacity(n);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let cid = engine.handle_connection_opened(now, ConnectionInfo::with_token(format!("t{i}")));
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Authenticate(req) => {
                    let user = UserId::new(format!("user{i}"));
                    engine.handle_auth_result(now, req.id, Ok(user)).unwrap();
                }
                Action::Transmit { message, .. } => {
                    let created: serde_json::Value = serde_json::from_str(&message.to_text()).unwrap();
                    let p = &created["p"];
                    requests.push(format!(
                        r#"{{"v":"1.0","e":"sys.reconnect.request","p":{{"sessionId":"{}","resumeToken":"{}","lastSeq":0,"token":"t{i}"}}}}"#,
                        p["sessionId"].as_str().unwrap(),
                        p["resumeToken"].as_str().unwrap()
                    ));
                }
                _ => {}
            }
        }
        let sid = engine.session_of(cid).unwrap();
        engine.join_room(now, sid, "room").unwrap();
        conns.push(cid);
    }
    for cid in conns {
        engine.handle_connection_closed(now, cid);
    }
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(r#"{"text":"missed"}"#));
    for _ in 0..missed {
        engine.broadcast_room(now, "room", &env, None);
    }
    drain(&mut engine, now);
    (engine, requests)
}
