//! Bytes per idle session and allocations per message, measured with a counting global
//! allocator (`stats_alloc`), outside criterion. Prints a small table for
//! docs/BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p ws-session --bench memory
//! ```

#![allow(missing_docs)]
// A benchmark is a driver: it reads the real clock once to start the engine's clock
// (ws-session/clippy.toml denies that to the engine).
#![allow(clippy::disallowed_methods)]

mod common;

use std::alloc::System;
use std::time::Instant;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_proto::Message;
use ws_session::Action;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn live_bytes() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

fn main() {
    let now = Instant::now();

    // Idle sessions: authenticated, attached, in one room, no traffic.
    for n in [1_000usize, 10_000, 100_000] {
        let before = live_bytes();
        let (engine, conns) = common::engine_with_sessions(now, n, Some("lobby"));
        let after = live_bytes();
        // The list the benchmark keeps is not the engine's.
        let ours = (conns.capacity() * std::mem::size_of_val(&conns[0])) as isize;
        let per = (after - before - ours) as f64 / n as f64;
        println!(
            "idle sessions: {n:>7}  engine heap {:>11} B  = {per:>7.0} B/session",
            after - before - ours
        );
        drop(engine);
    }

    // Allocations per echo in steady state.
    let (mut engine, conns) = common::engine_with_sessions(now, 1, None);
    let cid = conns[0].0;
    const ECHO: &str = r#"{"v":"1.0","e":"echo","p":{"text":"hello, world"},"c":"r1"}"#;
    let mut text = String::from(ECHO);
    let mut out = Vec::with_capacity(256);
    let mut run = |engine: &mut ws_session::Engine, rounds: usize| {
        for _ in 0..rounds {
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
                    }
                    _ => {}
                }
            }
        }
    };
    run(&mut engine, 50_000); // warm up: replay buffer full, blocks recycled
    let region = Region::new(GLOBAL);
    const ROUNDS: usize = 100_000;
    run(&mut engine, ROUNDS);
    let s = region.change();
    println!(
        "echo steady state: {ROUNDS} messages, {} allocations ({:.4}/message), {} reallocations",
        s.allocations,
        s.allocations as f64 / ROUNDS as f64,
        s.reallocations
    );

    // Allocations per broadcast recipient in steady state.
    const N: usize = 10_000;
    let (mut engine, _) = common::engine_with_sessions(now, N, Some("room"));
    let env = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(r#"{"text":"hi"}"#));
    let mut buf = Vec::with_capacity(256);
    for _ in 0..1_100 {
        engine.broadcast_room(now, "room", &env, None);
        common::drain_with(&mut engine, now, &mut buf);
    }
    let region = Region::new(GLOBAL);
    const BROADCASTS: usize = 100;
    for _ in 0..BROADCASTS {
        engine.broadcast_room(now, "room", &env, None);
        common::drain_with(&mut engine, now, &mut buf);
    }
    let s = region.change();
    println!(
        "broadcast steady state: {BROADCASTS} x {N} recipients, {} allocations ({:.5}/recipient)",
        s.allocations,
        s.allocations as f64 / (BROADCASTS * N) as f64
    );
}
