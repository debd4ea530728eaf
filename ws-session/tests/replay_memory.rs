//! What a replay buffer holds is what it counts: a message kept for a suspended
//! session (or a client that does not acknowledge) holds its own bytes, not the
//! buffer of other messages it was encoded beside. Measured with a counting global
//! allocator, so this file is one test (the counts are the process's).

use std::alloc::System;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_session::sim::Sim;
use ws_session::EngineConfig;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, process-wide.
fn heap() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

/// The sessions that wait for a resume, each holding one small message.
const SUSPENDED: usize = 200;

#[test]
fn a_message_held_for_a_resume_holds_only_its_own_bytes() {
    // The busy client acknowledges every message: no rate limit in the way.
    let mut sim = Sim::new(EngineConfig {
        rate_limit_per_second: u32::MAX,
        rate_limit_burst: u32::MAX,
        ..EngineConfig::default()
    });
    sim.set_recording(false);
    let busy = sim.connect(Some("user:busy"));
    let busy_session = sim.client(busy).session_id().unwrap();
    let text = format!("\"{}\"", "x".repeat(1000));
    let chatter = OutgoingEnvelope::new("chat.message").with_payload(Payload::Trusted(&text));
    // Warm-up: the busy session's buffers and the engine's tables at their size.
    for _ in 0..200 {
        let now = sim.now();
        sim.engine.send(now, busy_session, &chatter).unwrap();
        sim.drain();
        sim.ack(busy);
    }
    let before = heap();
    let mut held = 0;
    for i in 0..SUSPENDED {
        let quiet = sim.connect(Some(&format!("user:quiet{i}")));
        let session = sim.client(quiet).session_id().unwrap();
        let now = sim.now();
        let note = OutgoingEnvelope::new("note").with_payload(Payload::Trusted("1"));
        sim.engine.send(now, session, &note).unwrap();
        sim.drain();
        sim.drop_connection(quiet);
        // Then 70 KB of traffic to a session that acknowledges all of it: nothing of
        // it is held, the note is.
        for _ in 0..70 {
            let now = sim.now();
            sim.engine.send(now, busy_session, &chatter).unwrap();
            sim.drain();
            sim.ack(busy);
        }
        held += 1;
    }
    let metrics = sim.engine.metrics();
    assert_eq!(metrics.sessions_suspended as usize, held);
    let per_session = (heap() - before) / SUSPENDED as isize;
    eprintln!(
        "{per_session} bytes held per suspended session; replay counts {} bytes in all",
        metrics.replay_bytes
    );
    // A session's state and its one message: 1.6 KB measured. A message that kept the 64 KiB
    // block it was encoded in alive would hold that much per session.
    assert!(
        per_session < 4 * 1024,
        "{per_session} bytes per suspended session"
    );
}
