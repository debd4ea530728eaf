//! The session engine under arbitrary operation sequences, through the simulation
//! harness (feature `sim`), decoded with `arbitrary`.
//!
//! The input is decoded as a configuration choice and a sequence of operations: clients
//! connecting (with good, bad, pending or no credentials, on JSON or MessagePack
//! connections: the harness sends each client's envelopes in its codec and checks that
//! every message the engine sends it is in that codec), raw text and binary messages,
//! well-formed and malformed system events, drops, resumes with true or forged state,
//! acks, stalls, application commands and clock jumps, up to the end of the data or
//! `MAX_STEPS` operations. Checked: no panic and no action addressing a closed
//! connection (the harness panics on one) after every operation; replay buffers,
//! outbound queues and room counts within their bounds every `CHECK_EVERY` operations
//! and at the end.

use std::time::Duration;

use crate::sim::Sim;
use crate::EngineConfig;
use arbitrary::{Arbitrary, Unstructured};
use ws_proto::envelope::{sys, Codec, OutgoingEnvelope, Payload};
use ws_proto::Message;

#[derive(Arbitrary, Debug)]
enum Credential {
    None,
    User(u8),
    Bad,
    Pending,
}

impl Credential {
    fn text(&self) -> Option<String> {
        match self {
            Credential::None => None,
            Credential::User(u) => Some(format!("user:u{}", u % 4)),
            Credential::Bad => Some("bad".to_owned()),
            Credential::Pending => Some("pending".to_owned()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect(Credential),
    ConnectMsgPack(Credential),
    Text {
        client: u8,
        text: String,
    },
    System {
        client: u8,
        event: u8,
        payload: String,
        c: bool,
    },
    Binary {
        client: u8,
        data: Vec<u8>,
    },
    Transport {
        client: u8,
        kind: u8,
    },
    Drop {
        client: u8,
    },
    Resume {
        client: u8,
        credential: Credential,
        in_handshake: bool,
        last: Option<u64>,
        forge: bool,
    },
    Ack {
        client: u8,
        seq: Option<u64>,
    },
    Stall {
        client: u8,
        on: bool,
    },
    Send {
        client: u8,
        len: u8,
    },
    Reply {
        client: u8,
        error: bool,
    },
    Broadcast {
        room: u8,
        except: Option<u8>,
    },
    BroadcastAll,
    Volatile {
        room: Option<u8>,
    },
    Join {
        client: u8,
        room: u8,
    },
    Leave {
        client: u8,
        room: u8,
    },
    CloseSession {
        client: u8,
    },
    Answer {
        ok: bool,
    },
    Tick {
        millis: u32,
    },
}

const SYSTEM_EVENTS: [&str; 10] = [
    sys::AUTH,
    sys::RECONNECT_REQUEST,
    sys::ACK,
    sys::PING,
    sys::PONG,
    sys::SESSION_CREATED,
    sys::SESSION_RESTORED,
    sys::ERROR,
    "sys.unknown",
    "app.event",
];

/// Operations per input at most.
const MAX_STEPS: usize = 512;

/// Bounds are checked every `CHECK_EVERY` operations and once at the end of the input.
/// A check walks every session and connection, so checking after each operation made
/// an input cost O(steps × sessions). A bound the engine breaks stays broken until the
/// next check: a replay buffer or a room list only shrinks through the code that keeps
/// it bounded, and a connection over its outbound bound is closed, not healed.
const CHECK_EVERY: usize = 16;

/// Drives an engine with the operations decoded from `data`. A panic is a bug.
#[allow(unreachable_pub)] // `pub` for the fuzz target; unreachable when a test includes this file as a module
pub fn engine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let small = u.arbitrary::<bool>().unwrap_or(false);
    let config = if small {
        EngineConfig {
            replay_max_messages: 8,
            replay_max_bytes: 2048,
            max_outbound_bytes: 4096,
            max_rooms_per_session: 3,
            max_room_name_len: 8,
            rate_limit_per_second: 5,
            rate_limit_burst: 10,
            rate_limit_max_strikes: 4,
            allow_anonymous: u.arbitrary().unwrap_or(false),
            publish_broadcasts: true,
            expired_memory: 4,
            ..EngineConfig::default()
        }
    } else {
        EngineConfig::default()
    };
    let seed = u.arbitrary::<u64>().unwrap_or(0);
    let mut sim = Sim::with_seed(config, seed);
    // Envelopes are still decoded and checked; nothing here reads the clients' logs.
    sim.set_recording(false);
    // `arbitrary` keeps producing defaults (zeros: `Connect(None)`) once the data runs
    // out: stop at its end, or every input would pad itself to `MAX_STEPS` connects.
    let mut steps = 0;
    while !u.is_empty() && steps < MAX_STEPS {
        let Ok(op) = u.arbitrary::<Op>() else { break };
        steps += 1;
        apply(&mut sim, op);
        if steps % CHECK_EVERY == 0 {
            sim.check_bounds();
        }
    }
    sim.check_bounds();
}

fn client(sim: &Sim, c: u8) -> Option<usize> {
    let n = sim.clients().len();
    (n > 0).then(|| usize::from(c) % n)
}

fn apply(sim: &mut Sim, op: Op) {
    let now = sim.now();
    match op {
        Op::Connect(cred) => {
            sim.connect(cred.text().as_deref());
        }
        Op::ConnectMsgPack(cred) => {
            sim.connect_with_codec(cred.text().as_deref(), Codec::MsgPack);
        }
        Op::Text { client: c, text } => {
            if let Some(c) = client(sim, c) {
                sim.send_text(c, &text);
            }
        }
        Op::System {
            client: c,
            event,
            payload,
            c: with_c,
        } => {
            if let Some(c) = client(sim, c) {
                let name = SYSTEM_EVENTS[usize::from(event) % SYSTEM_EVENTS.len()];
                // The payload is raw text: often not JSON, which must be refused cleanly.
                let cid = if with_c { ",\"c\":\"x\"" } else { "" };
                let text = format!("{{\"v\":\"1.0\",\"e\":\"{name}\",\"p\":{payload}{cid}}}");
                sim.send_text(c, &text);
            }
        }
        Op::Binary { client: c, data } => {
            if let Some(c) = client(sim, c) {
                // On a MessagePack connection, often a map: the envelope decoder's
                // checks rather than its first byte.
                let mut data = data;
                if sim.client(c).codec == Codec::MsgPack && data.first().is_some_and(|b| b & 1 == 0) {
                    data[0] = 0x80 | (data[0] >> 1 & 0x0f);
                }
                sim.send_message(c, Message::Binary(data.into()));
            }
        }
        Op::Transport { client: c, kind } => {
            if let Some(c) = client(sim, c) {
                let message = match kind % 3 {
                    0 => Message::Ping(bytes::Bytes::new()),
                    1 => Message::Pong(bytes::Bytes::new()),
                    _ => Message::Close(None),
                };
                if matches!(message, Message::Close(_)) {
                    // The transport reports the close; the client is gone.
                    sim.send_message(c, message);
                    sim.drop_connection(c);
                } else {
                    sim.send_message(c, message);
                }
            }
        }
        Op::Drop { client: c } => {
            if let Some(c) = client(sim, c) {
                sim.drop_connection(c);
            }
        }
        Op::Resume {
            client: c,
            credential,
            in_handshake,
            last,
            forge,
        } => {
            if let Some(c) = client(sim, c) {
                let cred = credential.text();
                if in_handshake {
                    sim.reconnect(c, cred.as_deref());
                } else {
                    sim.reconnect(c, None);
                }
                if forge {
                    if let Some((_, token)) = &mut sim.client_mut(c).session {
                        *token = "0".repeat(64);
                    }
                }
                let last = last.unwrap_or(sim.client(c).last_seq);
                let in_request = if in_handshake { None } else { cred };
                sim.resume_with(c, last, in_request.as_deref());
            }
        }
        Op::Ack { client: c, seq } => {
            if let Some(c) = client(sim, c) {
                match seq {
                    Some(s) => sim.send(c, sys::ACK, Some(&format!("{{\"seq\":{s}}}")), None),
                    None => sim.ack(c),
                }
            }
        }
        Op::Stall { client: c, on } => {
            if let Some(c) = client(sim, c) {
                sim.stall(c, on);
            }
        }
        Op::Send { client: c, len } => {
            if let Some(s) = client(sim, c).and_then(|c| sim.client(c).session_id()) {
                let text = format!("\"{}\"", "x".repeat(usize::from(len) * 8));
                let env = OutgoingEnvelope::new("m").with_payload(Payload::Trusted(&text));
                let _ = sim.engine.send(now, s, &env);
                sim.drain();
            }
        }
        Op::Reply { client: c, error } => {
            if let Some(s) = client(sim, c).and_then(|c| sim.client(c).session_id()) {
                let _ = if error {
                    sim.engine.reply_error(now, s, "q", 4200, "nope")
                } else {
                    sim.engine.reply(now, s, "q", &OutgoingEnvelope::new("r"))
                };
                sim.drain();
            }
        }
        Op::Broadcast { room, except } => {
            let except = except
                .and_then(|e| client(sim, e))
                .and_then(|c| sim.client(c).session_id());
            let env = OutgoingEnvelope::new("b").with_payload(Payload::Trusted("{\"k\":1}"));
            sim.engine
                .broadcast_room(now, &format!("r{}", room % 4), &env, except);
            sim.drain();
            // Feed publications back as if from another node: delivered, never re-published.
            let before = sim.publications.len();
            if let Some(p) = sim.publications.last().cloned() {
                sim.engine.handle_remote_publish(now, &p);
                sim.drain();
                assert_eq!(sim.publications.len(), before, "remote publish echoed");
            }
        }
        Op::BroadcastAll => {
            sim.engine.broadcast(now, &OutgoingEnvelope::new("all"));
            sim.drain();
        }
        Op::Volatile { room } => {
            let room = room.map(|r| format!("r{}", r % 4));
            sim.engine
                .broadcast_volatile(now, room.as_deref(), &OutgoingEnvelope::new("v"));
            sim.drain();
        }
        Op::Join { client: c, room } => {
            if let Some(s) = client(sim, c).and_then(|c| sim.client(c).session_id()) {
                let name = if room > 250 {
                    "a-very-long-room-name".to_owned()
                } else {
                    format!("r{}", room % 4)
                };
                let _ = sim.engine.join_room(now, s, &name);
            }
        }
        Op::Leave { client: c, room } => {
            if let Some(s) = client(sim, c).and_then(|c| sim.client(c).session_id()) {
                let _ = sim.engine.leave_room(now, s, &format!("r{}", room % 4));
            }
        }
        Op::CloseSession { client: c } => {
            if let Some(s) = client(sim, c).and_then(|c| sim.client(c).session_id()) {
                let _ = sim.engine.end_session(now, s, "fuzz");
                sim.drain();
            }
        }
        Op::Answer { ok } => {
            if let Some(req) = sim.pending_auth.pop() {
                let answer = if ok { Ok("u0".into()) } else { Err("no".to_owned()) };
                sim.answer_auth(&req, answer);
            }
        }
        Op::Tick { millis } => sim.advance(Duration::from_millis(u64::from(millis % 200_000))),
    }
}
