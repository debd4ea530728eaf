//! The session engine alone, in process: echo envelopes per second, cost per recipient
//! of a room broadcast to 10,000 sessions. docs/BENCHMARKS.md ("ws-session engine")
//! gives the figures; `benches/memory.rs` measures bytes per session and allocations.
//!
//! ```text
//! cargo bench -p ws-session --bench engine
//! ```

// criterion's macros generate undocumented items.
#![allow(missing_docs)]
// A benchmark is a driver: it reads the real clock to time itself and to start the
// engine's clock (ws-session/clippy.toml denies that to the engine).
#![allow(clippy::disallowed_methods)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ws_proto::envelope::msgpack::encode_msgpack_serialize;
use ws_proto::envelope::{Codec, OutgoingEnvelope, Payload};
use ws_proto::Message;
use ws_session::{Action, ConnectionInfo, Engine, UserId};

const ECHO: &str = r#"{"v":"1.0","e":"echo","p":{"text":"hello, world"},"c":"r1"}"#;

/// One echo: a text message in, dispatched as an event, answered with a reply (same
/// event, payload and correlation id), the reply encoded into a buffer and flushed.
/// The inbound `String` is recycled from the event, as a transport reusing its read
/// buffer would.
fn echo(c: &mut Criterion) {
    let now = Instant::now();
    let (mut engine, conns) = common::engine_with_sessions(now, 1, None);
    let (cid, _) = conns[0];
    let mut text = String::from(ECHO);
    let mut out = Vec::with_capacity(256);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("echo_envelope", |b| {
        b.iter(|| {
            engine.handle_message(now, cid, Message::Text(std::mem::take(&mut text)));
            while let Some(action) = engine.poll_action() {
                match action {
                    Action::Event(event) => {
                        let reply = OutgoingEnvelope::new(event.event())
                            .with_payload(Payload::Trusted(event.payload().unwrap_or("null")));
                        let c = event.correlation_id().unwrap_or_default();
                        engine.reply(now, event.session, c, &reply).unwrap();
                        text = event.into_text();
                    }
                    Action::Transmit { connection, message } => {
                        out.clear();
                        let len = message.write_to(&mut out);
                        engine.handle_flushed(now, connection, len);
                        black_box(&out);
                    }
                    _ => {}
                }
            }
            if text.is_empty() {
                text.push_str(ECHO);
            }
        })
    });
    group.finish();
}

/// The chat line of the codec comparison: what a client sends and a handler reads.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    room: String,
    text: String,
}

/// One echo as the driver runs it, per codec: an envelope in (text or binary), its
/// payload deserialized into a struct with the codec it came in (`payload_as`, as
/// `Context::payload` does), the reply's payload serialized as `Context::reply` does
/// (JSON; on MessagePack, MessagePack too) and encoded by the engine in the
/// connection's codec, written and flushed. Prints the bytes in and out once.
fn echo_typed(c: &mut Criterion) {
    let now = Instant::now();
    let line = Line {
        room: "lobby".into(),
        text: "hello, world: a chat line of about forty-one c".into(),
    };
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    for codec in Codec::ALL {
        let (mut engine, conns) = common::engine_with_codecs(common::config(), now, 1, None, |_| codec);
        let (cid, _) = conns[0];
        let env = OutgoingEnvelope::new("chat.send").with_correlation_id("r1");
        let inbound = match codec {
            Codec::MsgPack => {
                let mut out = Vec::new();
                encode_msgpack_serialize(&env, &line, &mut out).unwrap();
                Message::Binary(out.into())
            }
            _ => {
                let mut out = Vec::new();
                env.encode_serialize(&line, &mut out).unwrap();
                Message::Text(String::from_utf8(out).unwrap())
            }
        };
        let mut out = Vec::with_capacity(256);
        let run = |engine: &mut Engine, out: &mut Vec<u8>| {
            engine.handle_message(now, cid, inbound.clone());
            while let Some(action) = engine.poll_action() {
                match action {
                    Action::Event(event) => {
                        let line: Line = event.payload_as().unwrap();
                        let json = serde_json::to_string(&line).unwrap();
                        let c = event.correlation_id().unwrap_or_default();
                        let reply = OutgoingEnvelope::new("chat.sent")
                            .with_payload(Payload::Trusted(&json))
                            .with_correlation_id(c);
                        // As `Context::reply`: on MessagePack, the payload in both codecs.
                        match event.codec() {
                            Codec::MsgPack => {
                                let packed = rmp_serde::to_vec_named(&line).unwrap();
                                engine
                                    .send_with_msgpack(now, event.session, &reply, &packed)
                                    .unwrap();
                            }
                            _ => {
                                engine.send(now, event.session, &reply).unwrap();
                            }
                        }
                    }
                    Action::Transmit { connection, message } => {
                        out.clear();
                        let len = message.write_to(out);
                        engine.handle_flushed(now, connection, len);
                    }
                    _ => {}
                }
            }
        };
        run(&mut engine, &mut out);
        let inbound_len = match &inbound {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        eprintln!(
            "echo_typed/{codec:?}: {inbound_len} bytes in, {} bytes out (s = 2)",
            out.len()
        );
        group.bench_function(format!("echo_typed/{codec:?}"), |b| {
            b.iter(|| {
                run(&mut engine, &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// The 10,000-session room broadcast (encoded and flushed, as `with_encoding` below)
/// with every connection on MessagePack, and with half of them: the binary prefix is
/// made once per broadcast, then each recipient costs what a JSON one does. `/both`:
/// the payload given in both codecs (`Payload::Both`, what the server API gives while
/// a MessagePack connection may receive it), the binary prefix made from its own
/// MessagePack form rather than transcoded from JSON.
fn broadcast_codecs(c: &mut Criterion) {
    const N: usize = 10_000;
    let now = Instant::now();
    let json = r#"{"from":"alice","text":"hello, everyone in the room, this is a 100-byte-ish message!"}"#;
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let packed = rmp_serde::to_vec_named(&value).unwrap();
    let trusted = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(json));
    let both = OutgoingEnvelope::new("chat.message").with_payload(Payload::Both {
        json,
        msgpack: &packed,
    });
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(30);
    type CodecOf = fn(usize) -> Codec;
    let cases: [(&str, CodecOf); 2] = [
        ("msgpack", |_| Codec::MsgPack),
        ("half_msgpack", |i| {
            if i % 2 == 0 {
                Codec::MsgPack
            } else {
                Codec::Json
            }
        }),
    ];
    for ((name, codec), (form, env)) in cases
        .into_iter()
        .flat_map(|case| [(case, ("", trusted)), (case, ("/both", both))])
    {
        let (mut engine, _) = common::engine_with_codecs(common::config(), now, N, Some("room"), codec);
        group.bench_function(format!("broadcast_room_10k/with_encoding/{name}{form}"), |b| {
            b.iter(|| {
                let n = engine.broadcast_room(now, "room", &env, None);
                black_box(common::drain(&mut engine, now));
                black_box(n)
            })
        });
    }
    group.finish();
}

/// A broadcast to a 10,000-session room: one serialization, then per recipient a
/// sequence number, a replay-buffer push, a transmit action; drained (each transmit
/// encoded and flushed) inside the measurement. Throughput is per recipient.
fn broadcast(c: &mut Criterion) {
    const N: usize = 10_000;
    let now = Instant::now();
    let (mut engine, _) = common::engine_with_sessions(now, N, Some("room"));
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(
        r#"{"from":"alice","text":"hello, everyone in the room, this is a 100-byte-ish message!"}"#,
    ));
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(30);
    group.bench_function("broadcast_room_10k/fan_out_only", |b| {
        b.iter(|| {
            let n = engine.broadcast_room(now, "room", &env, None);
            // Drop the actions without encoding: the engine's own share.
            drain_unencoded(&mut engine, now);
            black_box(n)
        })
    });
    group.bench_function("broadcast_room_10k/with_encoding", |b| {
        b.iter(|| {
            let n = engine.broadcast_room(now, "room", &env, None);
            black_box(common::drain(&mut engine, now));
            black_box(n)
        })
    });
    // Clients that acknowledge: every 32 messages each session's client sends a
    // `sys.ack`, and the engine's work on those acks is measured too (amortized over
    // the 32 broadcasts). Replay buffers stay short and never evict.
    let (mut engine, conns) = common::engine_with_sessions(now, N, Some("room"));
    let mut sent = 0u64;
    group.bench_function("broadcast_room_10k/acked_every_32", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let acks: Vec<String> = if sent % 32 == 31 {
                    (0..N)
                        .map(|_| format!(r#"{{"v":"1.0","e":"sys.ack","p":{{"seq":{}}}}}"#, sent + 1))
                        .collect()
                } else {
                    Vec::new()
                };
                let start = Instant::now();
                black_box(engine.broadcast_room(now, "room", &env, None));
                drain_unencoded(&mut engine, now);
                for (text, &(cid, _)) in acks.into_iter().zip(&conns) {
                    engine.handle_message(now, cid, Message::Text(text));
                }
                total += start.elapsed();
                sent += 1;
            }
            total
        })
    });
    group.finish();
}

/// Drains actions reporting each recipient's bytes flushed without encoding them: the
/// engine's own share of a broadcast.
fn drain_unencoded(engine: &mut ws_session::Engine, now: Instant) {
    while let Some(action) = engine.poll_action() {
        match action {
            Action::Transmit { connection, message } => {
                engine.handle_flushed(now, connection, message.len());
            }
            Action::TransmitBroadcast {
                prefix,
                codec,
                recipients,
            } => {
                for &(connection, seq) in &recipients {
                    let len = prefix.len()
                        + match codec {
                            Codec::MsgPack => ws_proto::envelope::msgpack::msgpack_seq_suffix_len(Some(seq)),
                            // `,"s":N}`
                            _ => 6 + seq.checked_ilog10().unwrap_or(0) as usize + 1,
                        };
                    engine.handle_flushed(now, connection, len);
                }
                engine.recycle(recipients);
            }
            _ => {}
        }
    }
}

/// A resume storm: 10,000 suspended sessions (each with 4 missed messages) come back
/// at once. Per resume: a connection opens without a credential, sends
/// `sys.reconnect.request` with the credential in it, is authenticated (answered at
/// once), and gets `sys.session.restored` plus its 4 missed messages, all encoded and
/// flushed. Throughput is per resume.
fn resume_storm(c: &mut Criterion) {
    const N: usize = 10_000;
    let now = Instant::now();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.bench_function("resume_storm_10k", |b| {
        b.iter_batched(
            || common::suspended_sessions(now, N, 4),
            |(mut engine, requests)| {
                let mut buf = Vec::with_capacity(256);
                for (i, request) in requests.into_iter().enumerate() {
                    let cid = engine.handle_connection_opened(now, ConnectionInfo::default());
                    engine.handle_message(now, cid, Message::Text(request));
                    while let Some(action) = engine.poll_action() {
                        match action {
                            Action::Authenticate(req) => {
                                let user = UserId::new(format!("user{i}"));
                                engine.handle_auth_result(now, req.id, Ok(user)).unwrap();
                            }
                            Action::Transmit { connection, message } => {
                                buf.clear();
                                let len = message.write_to(&mut buf);
                                engine.handle_flushed(now, connection, len);
                            }
                            _ => {}
                        }
                    }
                }
                assert_eq!(engine.metrics().resumes_ok, N as u64);
                engine
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The snapshot a metrics scrape takes on the hub (`Engine::metrics`): the counters,
/// and a walk over every session for the gauges (live, suspended, replay buffers),
/// with 10,000 sessions.
fn metrics_snapshot(c: &mut Criterion) {
    let now = Instant::now();
    let (engine, _) = common::engine_with_sessions(now, 10_000, Some("room"));
    let mut group = c.benchmark_group("engine");
    group.bench_function("metrics_snapshot_10k_sessions", |b| {
        b.iter(|| black_box(engine.metrics()))
    });
    group.finish();
}

criterion_group!(
    benches,
    echo,
    echo_typed,
    broadcast,
    broadcast_codecs,
    resume_storm,
    metrics_snapshot
);
criterion_main!(benches);
