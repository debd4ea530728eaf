//! The client engine (`crate::client`) under arbitrary operation sequences.
//!
//! The input is decoded as a sequence of operations: transports opening, failing and
//! closing (with any close code or HTTP status), raw and well-formed server envelopes
//! (sessions created and restored, errors with any code and correlation id, pings,
//! sequenced messages with any `s`), user sends, queries and closes, and clock jumps.
//! Checked after every operation: no panic; `Transmit` only while a transport is open;
//! no `Connect` while one is open or after the client stopped; every query answered at
//! most once; after `handle_timeout(now)` the next deadline lies after `now` (no busy
//! loop).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::client::{AuthMode, ClientAction, ClientConfig, ClientEngine, Disconnect, QueryId, State};
use arbitrary::{Arbitrary, Unstructured};
use ws_proto::envelope::Payload;
use ws_proto::CloseCode;

#[derive(Arbitrary, Debug)]
enum Op {
    Connected,
    Closed {
        code: u16,
        reason: String,
    },
    Failed,
    Refused {
        status: u16,
    },
    Raw(String),
    Created {
        sid: u8,
        heartbeat_ms: u16,
    },
    Restored {
        sid: u8,
        replayed: u8,
    },
    Error {
        code: u16,
        c: Option<String>,
        reason: Option<String>,
    },
    Ping {
        c: Option<String>,
    },
    Sequenced {
        s: u64,
        c: Option<u8>,
    },
    Send {
        event: String,
    },
    Query {
        timeout_ms: Option<u16>,
    },
    Close {
        code: u16,
    },
    Advance {
        ms: u32,
    },
}

/// A tiny generator for jitter (the engine only needs `RngCore`).
struct Counter(u64);

impl rand_core::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u64() as u8;
        }
    }
}

#[derive(Default)]
struct Model {
    /// `Connect` asked, no outcome reported yet.
    opening: bool,
    /// Open (handle_connected reported) and not closed.
    open: bool,
    /// CloseTransport emitted for the current transport.
    closing: bool,
    stopped: bool,
    answered: BTreeSet<QueryId>,
}

/// Runs one input.
pub fn client_engine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut config = ClientConfig::with_credential("alice");
    if u.arbitrary::<bool>().unwrap_or(false) {
        config.auth_mode = AuthMode::Handshake;
    }
    config.queue_limit = 8;
    let start = crate::sim::origin();
    let mut now = start;
    let mut client = ClientEngine::new(now, config, Counter(7));
    let mut model = Model::default();
    drain(&mut client, &mut model);
    // `arbitrary` keeps producing defaults once the data runs out: stop at its end.
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        apply(&mut client, &mut model, &mut now, op);
        drain(&mut client, &mut model);
    }
}

fn apply(client: &mut ClientEngine, model: &mut Model, now: &mut Instant, op: Op) {
    let t = *now;
    match op {
        Op::Connected => {
            if model.opening && !model.closing {
                model.opening = false;
                model.open = true;
                client.handle_connected(t);
            }
        }
        Op::Closed { code, reason } => {
            if model.opening || model.open {
                model.opening = false;
                model.open = false;
                model.closing = false;
                client.handle_disconnected(t, Disconnect::closed(CloseCode(code), reason));
            }
        }
        Op::Failed => {
            if model.opening || model.open {
                model.opening = false;
                model.open = false;
                model.closing = false;
                client.handle_disconnected(t, Disconnect::failed("io"));
            }
        }
        Op::Refused { status } => {
            if model.opening {
                model.opening = false;
                model.closing = false;
                client.handle_disconnected(t, Disconnect::refused(status, "refused"));
            }
        }
        Op::Raw(text) => message(client, model, t, &text),
        Op::Created { sid, heartbeat_ms } => message(
            client,
            model,
            t,
            &format!(
                r#"{{"v":"1.0","e":"sys.session.created","p":{{"sessionId":"s{sid}","userId":"alice","resumeToken":"t{sid}","heartbeatMs":{heartbeat_ms},"resumeWindowMs":120000}}}}"#
            ),
        ),
        Op::Restored { sid, replayed } => message(
            client,
            model,
            t,
            &format!(
                r#"{{"v":"1.0","e":"sys.session.restored","p":{{"sessionId":"s{sid}","resumeToken":"n{sid}","replayed":{replayed}}}}}"#
            ),
        ),
        Op::Error { code, c, reason } => {
            let mut p = serde_json::json!({ "code": code, "message": "m" });
            if let Some(reason) = reason {
                p["reason"] = reason.into();
            }
            let mut env = serde_json::json!({ "v": "1.0", "e": "sys.error", "p": p });
            if let Some(c) = c {
                env["c"] = c.into();
            }
            message(client, model, t, &env.to_string());
        }
        Op::Ping { c } => {
            let mut env = serde_json::json!({ "v": "1.0", "e": "sys.ping" });
            if let Some(c) = c {
                env["c"] = c.into();
            }
            message(client, model, t, &env.to_string());
        }
        Op::Sequenced { s, c } => {
            let mut env = serde_json::json!({ "v": "1.0", "e": "app", "p": s, "s": s.max(1) });
            if let Some(c) = c {
                env["c"] = format!("q{}", c % 8).into();
            }
            message(client, model, t, &env.to_string());
        }
        Op::Send { event } => {
            let _ = client.send(t, &event, Payload::None);
        }
        Op::Query { timeout_ms } => {
            let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
            let _ = client.query(t, "q", Payload::Trusted("1"), timeout);
        }
        Op::Close { code } => {
            let _ = client.close(t, CloseCode(code), "bye");
        }
        Op::Advance { ms } => {
            *now += Duration::from_millis(ms.into());
            client.handle_timeout(*now);
            // Drain before checking: the actions may open a transport.
            drain(client, model);
            if let Some(next) = client.poll_timeout() {
                assert!(next > *now, "busy loop: deadline {next:?} not after {now:?}");
            }
        }
    }
}

fn message(client: &mut ClientEngine, model: &Model, now: Instant, text: &str) {
    if model.open && !model.closing {
        client.handle_message(now, text);
    }
}

fn drain(client: &mut ClientEngine, model: &mut Model) {
    while let Some(action) = client.poll_action() {
        match action {
            ClientAction::Connect => {
                assert!(!model.opening && !model.open, "Connect while a transport exists");
                assert!(!model.stopped, "Connect after the client stopped");
                model.opening = true;
                model.closing = false;
            }
            ClientAction::Transmit(text) => {
                assert!(model.open && !model.closing, "Transmit without an open transport");
                // Everything the engine writes is an envelope its own decoder accepts.
                ws_proto::envelope::Envelope::decode(&text, &ws_proto::Config::default())
                    .expect("valid envelope");
            }
            ClientAction::CloseTransport { code, .. } => {
                assert!(model.opening || model.open, "CloseTransport without a transport");
                assert!(code.is_sendable());
                model.closing = true;
            }
            ClientAction::QueryResult { id, .. } => {
                assert!(model.answered.insert(id), "{id:?} answered twice");
            }
            ClientAction::StateChanged(State::Disconnected(_)) => model.stopped = true,
            _ => {}
        }
    }
}
