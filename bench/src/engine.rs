//! The engine alone, in process: ws-session's server [`Engine`] driven through its
//! Sans-IO API by a loop on this thread, with no socket and no runtime. The same
//! scenarios as the socket rows (session echo, room fan-out, resume storm), so that
//! the tables can say how much of the socket path's server CPU per message is the
//! engine's.
//!
//! The driver does what a transport does and no more: it hands each inbound text to
//! [`Engine::handle_message`], answers `echo` events with [`Engine::reply`] and `pub`
//! events with [`Engine::broadcast_room`], encodes every outbound message into a reused
//! buffer and reports it flushed. Its own work (building the clients' texts, counting)
//! is in the figures too; it is small next to the engine's. The clock stands still
//! (one `now` per engine, as in ws-session's benches): no heartbeat or timer fires.
//!
//! CPU time is the thread's own ([`proc_stat::thread_cpu_ns`]), read at both ends of
//! the measured window (for the storm: around each storm, setup excluded). Every
//! operation is counted over the whole run, warm-up included: an echo not answered, a
//! delivery missing or out of order, a resume without all it missed is an error, and
//! [`run`] fails with it.

// The setup of ws-session's own engine benches (benches/common/mod.rs), included by
// path rather than copied: engines with authenticated sessions, the limits lifted,
// the transport's drain, suspended sessions with messages to replay.
#[path = "../../ws-session/benches/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_proto::Message;
use ws_session::{Action, ConnectionId, ConnectionInfo, Engine, OutboundMessage, UserId};

use crate::proc_stat;

/// The room of the fan-out and the storm (the one `common::suspended_sessions` uses).
const ROOM: &str = "room";

/// One scenario of the engine alone. Each counts operations: echo answers,
/// deliveries, resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum EngineScenario {
    /// Session echo: each step, every session sends `per_step` `echo` requests of
    /// `size` payload bytes with correlation ids (one read batch), then the actions
    /// are drained: each event answered with [`Engine::reply`], each answer encoded and
    /// flushed. Each session acknowledges every `ack_every` answers (`sys.ack`), as the
    /// socket rows' clients do. One operation: one answer.
    Echo {
        /// Sessions.
        sessions: usize,
        /// Requests per session per step (the socket rows' "in flight").
        per_step: usize,
        /// Payload bytes (inside the JSON string).
        size: usize,
        /// Acknowledge every this many answers (0: never).
        ack_every: u64,
    },
    /// Room fan-out: `members` sessions in one room; each step, one more session sends
    /// a numbered `pub`, answered with [`Engine::broadcast_room`], every delivery
    /// encoded and flushed. Each member acknowledges every `ack_every` deliveries (0:
    /// never). One operation: one delivery.
    Fanout {
        /// Members of the room.
        members: usize,
        /// Acknowledge every this many deliveries (0: never).
        ack_every: u64,
    },
    /// Resume storm: `sessions` suspended sessions of a room, each having missed
    /// `missed` room messages, come back one after the other as fast as the engine
    /// takes them: a connection without a credential, `sys.reconnect.request` with it,
    /// the credential accepted at once, `sys.session.restored` and the replay, all
    /// encoded and flushed. The setup of each storm is outside the measurement; storms
    /// repeat until the window is full. One operation: one resume.
    ResumeStorm {
        /// Sessions that resume.
        sessions: usize,
        /// Messages each one missed.
        missed: u64,
    },
}

/// One run of one engine scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSpec {
    /// The scenario.
    pub scenario: EngineScenario,
    /// Seconds of warm-up (same work, not measured).
    pub warmup: f64,
    /// Seconds of the measured window (wall clock; at least one step or storm).
    pub secs: f64,
}

/// What one run measured and counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EngineOutcome {
    /// Operations in the measured window (answers, deliveries or resumes).
    pub ops: u64,
    /// CPU seconds of this thread in the window.
    pub cpu_s: f64,
    /// Wall seconds of the window.
    pub wall_s: f64,
    /// `ops / cpu_s`.
    pub ops_per_cpu_s: f64,
    /// CPU nanoseconds per operation.
    pub ns_per_op: f64,
    /// Operations the run expected, warm-up included.
    pub expected: u64,
    /// Operations the run saw made, warm-up included.
    pub done: u64,
}

/// Runs `spec` on this thread. Fails when the thread's CPU time cannot be read or when
/// any count is off (an answer, a delivery, a replayed message missing, duplicated or
/// out of order).
pub fn run(spec: &EngineSpec) -> Result<EngineOutcome, String> {
    let warmup = Duration::from_secs_f64(spec.warmup.max(0.0));
    let window = Duration::from_secs_f64(spec.secs.max(0.0));
    let (ops, cpu_ns, wall, tally) = match spec.scenario {
        EngineScenario::Echo {
            sessions,
            per_step,
            size,
            ack_every,
        } => {
            let mut echo = Echo::new(sessions, per_step, size, ack_every);
            let (ops, cpu, wall) = stepped(warmup, window, || echo.step())?;
            (ops, cpu, wall, echo.tally)
        }
        EngineScenario::Fanout { members, ack_every } => {
            let mut fanout = Fanout::new(members, ack_every);
            let (ops, cpu, wall) = stepped(warmup, window, || fanout.step())?;
            (ops, cpu, wall, fanout.tally)
        }
        EngineScenario::ResumeStorm { sessions, missed } => storms(warmup, window, sessions, missed)?,
    };
    if tally.done != tally.expected {
        return Err(format!(
            "{:?}: {} of {} operations made",
            spec.scenario, tally.done, tally.expected
        ));
    }
    let cpu_s = cpu_ns as f64 / 1e9;
    Ok(EngineOutcome {
        ops,
        cpu_s,
        wall_s: wall.as_secs_f64(),
        ops_per_cpu_s: if cpu_s > 0.0 { ops as f64 / cpu_s } else { 0.0 },
        ns_per_op: if ops > 0 { cpu_ns as f64 / ops as f64 } else { 0.0 },
        expected: tally.expected,
        done: tally.done,
    })
}

/// Operations expected and made, over a whole run.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    expected: u64,
    done: u64,
}

fn thread_cpu() -> Result<u64, String> {
    proc_stat::thread_cpu_ns().ok_or_else(|| "no thread CPU time in /proc/thread-self".to_owned())
}

/// Steps for `warmup`, then for `window` (at least once): the operations of the
/// window, the thread's CPU nanoseconds and the wall time it took. A step that finds
/// a count off stops the run.
fn stepped(
    warmup: Duration,
    window: Duration,
    mut step: impl FnMut() -> Result<u64, String>,
) -> Result<(u64, u64, Duration), String> {
    let started = Instant::now();
    while started.elapsed() < warmup {
        step()?;
    }
    let cpu_before = thread_cpu()?;
    let started = Instant::now();
    let mut ops = 0;
    loop {
        ops += step()?;
        if started.elapsed() >= window {
            break;
        }
    }
    let wall = started.elapsed();
    let cpu = thread_cpu()?.saturating_sub(cpu_before);
    Ok((ops, cpu, wall))
}

/// Session echo: the engine, its sessions and what the clients have in hand.
struct Echo {
    engine: Engine,
    now: Instant,
    /// Each session's connection, in the order they opened.
    conns: Vec<ConnectionId>,
    /// The first connection's number: connection `c` is session `c - base`.
    base: u64,
    per_step: usize,
    payload: String,
    ack_every: u64,
    /// Per session: answers since its last ack, and the `s` of its last answer.
    unacked: Vec<(u64, u64)>,
    /// Inbound texts handed back by the events, reused for the next requests (as a
    /// transport reuses its read buffers).
    spare: Vec<String>,
    out: Vec<u8>,
    next_id: u64,
    tally: Tally,
}

impl Echo {
    fn new(sessions: usize, per_step: usize, size: usize, ack_every: u64) -> Self {
        let now = Instant::now();
        let (engine, conns) = common::engine_with_sessions(now, sessions, None);
        let conns: Vec<ConnectionId> = conns.into_iter().map(|(cid, _)| cid).collect();
        Echo {
            engine,
            now,
            base: conns.first().map_or(0, |c| c.0),
            conns,
            per_step,
            payload: "x".repeat(size),
            ack_every,
            unacked: vec![(0, 0); sessions],
            spare: Vec::new(),
            out: Vec::with_capacity(256),
            next_id: 0,
            tally: Tally::default(),
        }
    }

    fn step(&mut self) -> Result<u64, String> {
        let now = self.now;
        let mut answers = 0u64;
        let mut requests = 0u64;
        for i in 0..self.conns.len() {
            let cid = self.conns[i];
            for _ in 0..self.per_step {
                let mut text = self.spare.pop().unwrap_or_default();
                text.clear();
                self.next_id += 1;
                let _ = write!(
                    text,
                    r#"{{"v":"1.0","e":"echo","p":"{}","c":"{}"}}"#,
                    self.payload, self.next_id
                );
                self.engine.handle_message(now, cid, Message::Text(text));
                requests += 1;
            }
            // The batch read, its answers written: what a transport does per read.
            while let Some(action) = self.engine.poll_action() {
                match action {
                    Action::Event(event) => {
                        let reply = OutgoingEnvelope::new("echo")
                            .with_payload(Payload::Trusted(event.payload().unwrap_or("null")));
                        let c = event.correlation_id().unwrap_or_default();
                        let seq = self
                            .engine
                            .reply(now, event.session, c, &reply)
                            .map_err(|e| format!("echo reply: {e:?}"))?;
                        let k = (event.connection.0 - self.base) as usize;
                        self.unacked[k].1 = seq;
                        self.spare.push(event.into_text());
                    }
                    Action::Transmit { connection, message } => {
                        answers += u64::from(connection == cid);
                        self.out.clear();
                        let len = message.write_to(&mut self.out);
                        self.engine.handle_flushed(now, connection, len);
                    }
                    other => return Err(format!("echo: unexpected {other:?}")),
                }
            }
            if self.ack_every > 0 {
                let (unacked, seq) = &mut self.unacked[i];
                *unacked += self.per_step as u64;
                if *unacked >= self.ack_every {
                    *unacked = 0;
                    let ack = format!(r#"{{"v":"1.0","e":"sys.ack","p":{{"seq":{seq}}}}}"#);
                    self.engine.handle_message(now, cid, Message::Text(ack));
                    // An ack is answered with nothing; anything else is a fault.
                    if let Some(action) = self.engine.poll_action() {
                        return Err(format!("echo: answer to an ack: {action:?}"));
                    }
                }
            }
        }
        self.tally.expected += requests;
        self.tally.done += answers;
        if answers != requests {
            return Err(format!("echo: {answers} answers to {requests} requests"));
        }
        Ok(answers)
    }
}

/// Room fan-out: the engine, the members and the publisher.
struct Fanout {
    engine: Engine,
    now: Instant,
    members: Vec<ConnectionId>,
    /// The first member's connection number: connection `c` is member `c - base`.
    base: u64,
    publisher: ConnectionId,
    ack_every: u64,
    /// The `s` of each member's last delivery.
    last_seq: Vec<u64>,
    publications: u64,
    out: Vec<u8>,
    tally: Tally,
}

impl Fanout {
    fn new(members: usize, ack_every: u64) -> Self {
        let now = Instant::now();
        // Members and publisher authenticated; the members (not the publisher) join.
        let (mut engine, conns) = common::engine_with_sessions(now, members + 1, None);
        for &(_, sid) in &conns[..members] {
            engine.join_room(now, sid, ROOM).expect("join");
        }
        common::drain(&mut engine, now);
        Fanout {
            engine,
            now,
            base: conns[0].0 .0,
            members: conns[..members].iter().map(|(cid, _)| *cid).collect(),
            publisher: conns[members].0,
            ack_every,
            last_seq: vec![0; members],
            publications: 0,
            out: Vec::with_capacity(256),
            tally: Tally::default(),
        }
    }

    fn step(&mut self) -> Result<u64, String> {
        let now = self.now;
        self.publications += 1;
        let publication = format!(r#"{{"v":"1.0","e":"pub","p":{}}}"#, self.publications);
        self.engine
            .handle_message(now, self.publisher, Message::Text(publication));
        let mut delivered = 0u64;
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Event(event) => {
                    let msg = OutgoingEnvelope::new("msg")
                        .with_payload(Payload::Trusted(event.payload().unwrap_or("null")));
                    self.engine.broadcast_room(now, ROOM, &msg, None);
                }
                Action::TransmitBroadcast {
                    prefix,
                    codec,
                    recipients,
                } => {
                    for &(connection, seq) in &recipients {
                        self.out.clear();
                        let len = OutboundMessage::write_parts(codec, &prefix, Some(seq), &mut self.out);
                        self.engine.handle_flushed(now, connection, len);
                        let k = connection.0.wrapping_sub(self.base) as usize;
                        // Each member gets 1, 2, 3, … in order, once each.
                        match self.last_seq.get_mut(k) {
                            Some(last) if seq == *last + 1 => *last = seq,
                            _ => return Err(format!("fan-out: {connection} got s={seq} out of turn")),
                        }
                        delivered += 1;
                    }
                    self.engine.recycle(recipients);
                }
                Action::Transmit { connection, message } => {
                    // Sent one by one (no broadcast batch), still a delivery in turn.
                    self.out.clear();
                    let len = message.write_to(&mut self.out);
                    self.engine.handle_flushed(now, connection, len);
                    let k = connection.0.wrapping_sub(self.base) as usize;
                    match (self.last_seq.get_mut(k), message.seq) {
                        (Some(last), Some(seq)) if seq == *last + 1 => *last = seq,
                        _ => return Err(format!("fan-out: unexpected message to {connection}")),
                    }
                    delivered += 1;
                }
                other => return Err(format!("fan-out: unexpected {other:?}")),
            }
        }
        if self.ack_every > 0 && self.publications % self.ack_every == 0 {
            for (k, &cid) in self.members.iter().enumerate() {
                let seq = self.last_seq[k];
                let ack = format!(r#"{{"v":"1.0","e":"sys.ack","p":{{"seq":{seq}}}}}"#);
                self.engine.handle_message(now, cid, Message::Text(ack));
            }
            if let Some(action) = self.engine.poll_action() {
                return Err(format!("fan-out: answer to an ack: {action:?}"));
            }
        }
        let expected = self.members.len() as u64;
        self.tally.expected += expected;
        self.tally.done += delivered;
        if delivered != expected {
            return Err(format!("fan-out: {delivered} deliveries to {expected} members"));
        }
        Ok(delivered)
    }
}

/// Resume storms until the window is full: each set up (not measured), then every
/// session resumed, its `sys.session.restored` and replay encoded and flushed
/// (measured).
fn storms(
    warmup: Duration,
    window: Duration,
    sessions: usize,
    missed: u64,
) -> Result<(u64, u64, Duration, Tally), String> {
    let mut tally = Tally::default();
    // The warm-up: storms whose time is not kept (at least one, which also checks).
    let started = Instant::now();
    loop {
        storm(sessions, missed, &mut tally)?;
        if started.elapsed() >= warmup {
            break;
        }
    }
    let (mut ops, mut cpu, mut wall) = (0, 0, Duration::ZERO);
    loop {
        let (resumed, storm_cpu, storm_wall) = storm(sessions, missed, &mut tally)?;
        ops += resumed;
        cpu += storm_cpu;
        wall += storm_wall;
        if wall >= window {
            break;
        }
    }
    Ok((ops, cpu, wall, tally))
}

/// One storm: the resumes made, the CPU nanoseconds and the wall time they took.
fn storm(sessions: usize, missed: u64, tally: &mut Tally) -> Result<(u64, u64, Duration), String> {
    let now = Instant::now();
    let (mut engine, requests) = common::suspended_sessions(now, sessions, missed);
    let resumes_before = engine.metrics().resumes_ok;
    let mut out = Vec::with_capacity(256);
    let mut whole = 0u64;
    let cpu_before = thread_cpu()?;
    let started = Instant::now();
    for (i, request) in requests.into_iter().enumerate() {
        let cid = engine.handle_connection_opened(now, ConnectionInfo::default());
        engine.handle_message(now, cid, Message::Text(request));
        // What this connection gets: `sys.session.restored` (no `s`), then 1..=missed.
        let mut restored = false;
        let mut next_seq = 1;
        let mut wrong = 0u32;
        while let Some(action) = engine.poll_action() {
            match action {
                Action::Authenticate(req) => {
                    let user = UserId::new(format!("user{i}"));
                    engine
                        .handle_auth_result(now, req.id, Ok(user))
                        .map_err(|e| format!("storm: auth result: {e:?}"))?;
                }
                Action::Transmit { connection, message } => {
                    out.clear();
                    let len = message.write_to(&mut out);
                    engine.handle_flushed(now, connection, len);
                    match message.seq {
                        None if connection == cid && !restored => restored = true,
                        Some(seq) if connection == cid && restored && seq == next_seq => next_seq += 1,
                        _ => wrong += 1,
                    }
                }
                // The session's suspension ending, and the like: nothing to do.
                Action::Session(_) => {}
                other => return Err(format!("storm: unexpected {other:?}")),
            }
        }
        if restored && wrong == 0 && next_seq == missed + 1 {
            whole += 1;
        } else {
            return Err(format!(
                "storm: session {i} restored {restored}, {} of {missed} replayed in order, {wrong} out of turn",
                next_seq - 1
            ));
        }
    }
    let wall = started.elapsed();
    let cpu = thread_cpu()?.saturating_sub(cpu_before);
    let resumed = engine.metrics().resumes_ok - resumes_before;
    tally.expected += sessions as u64;
    tally.done += whole.min(resumed);
    if resumed != sessions as u64 {
        return Err(format!(
            "storm: {resumed} of {sessions} resumes counted by the engine"
        ));
    }
    Ok((whole, cpu, wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(scenario: EngineScenario) -> EngineOutcome {
        let spec = EngineSpec {
            scenario: scenario.clone(),
            warmup: 0.0,
            secs: 0.02,
        };
        run(&spec).unwrap_or_else(|err| panic!("{scenario:?}: {err}"))
    }

    #[test]
    fn spec_round_trips_as_json() {
        let spec = EngineSpec {
            scenario: EngineScenario::Fanout {
                members: 3,
                ack_every: 16,
            },
            warmup: 0.5,
            secs: 1.0,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""kind":"fanout""#), "{json}");
        let back: EngineSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.scenario, spec.scenario);
    }

    #[test]
    fn every_scenario_counts_out() {
        for scenario in [
            EngineScenario::Echo {
                sessions: 3,
                per_step: 1,
                size: 20,
                ack_every: 4,
            },
            EngineScenario::Echo {
                sessions: 3,
                per_step: 8,
                size: 20,
                ack_every: 16,
            },
            EngineScenario::Fanout {
                members: 5,
                ack_every: 0,
            },
            EngineScenario::Fanout {
                members: 5,
                ack_every: 2,
            },
            EngineScenario::ResumeStorm {
                sessions: 4,
                missed: 3,
            },
        ] {
            let outcome = quick(scenario.clone());
            assert!(outcome.ops > 0, "{scenario:?}: {outcome:?}");
            assert_eq!(outcome.done, outcome.expected, "{scenario:?}");
            assert!(outcome.cpu_s >= 0.0 && outcome.ns_per_op >= 0.0);
        }
    }
}
