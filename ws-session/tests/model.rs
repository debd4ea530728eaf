//! Model-based property test: arbitrary interleavings of connect, auth, join, leave,
//! send, broadcast, drop, resume, ack, client events, stalls and ticks, checked against
//! a reference model after every step.
//!
//! Checked: every session's stream reaches its client exactly once, in order, and
//! complete while attached (across resumes inside the window); a resume succeeds exactly
//! when the model says it can (alive, and the buffer covers the gap) and is refused
//! explicitly otherwise; rooms are restored after a resume; expiry happens exactly when
//! the window passes and is announced; every suspension is explained by a drop or a
//! slow-consumer close; no action addresses a closed connection (the
//! harness panics); replay buffers and outbound queues stay within their bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ws_proto::envelope::{sys, OutgoingEnvelope, Payload};
use ws_session::sim::{ClientId, Sim};
use ws_session::{EngineConfig, SessionEvent, SessionId};

const USERS: u8 = 3;
const ROOMS: u8 = 3;
const REPLAY_MAX: usize = 6;
const WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
enum Op {
    /// A new client; `via_auth`: credential in `sys.auth` instead of the handshake.
    Connect {
        user: u8,
        via_auth: bool,
    },
    /// A client's connection drops.
    Drop {
        client: u8,
    },
    /// A disconnected client reconnects and resumes; `handshake`: credential in the
    /// handshake (a fresh session is announced first) rather than in the request.
    Resume {
        client: u8,
        handshake: bool,
    },
    /// The application sends to the client's session.
    Send {
        client: u8,
    },
    /// The client stops (or resumes) reading; a stalled client may be closed as a
    /// slow consumer.
    Stall {
        client: u8,
        on: bool,
    },
    /// The application broadcasts to a room.
    Broadcast {
        room: u8,
        except: Option<u8>,
    },
    Join {
        client: u8,
        room: u8,
    },
    Leave {
        client: u8,
        room: u8,
    },
    Ack {
        client: u8,
    },
    /// The client sends an application event.
    Event {
        client: u8,
    },
    Tick {
        secs: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..USERS, any::<bool>()).prop_map(|(user, via_auth)| Op::Connect { user, via_auth }),
        2 => any::<u8>().prop_map(|client| Op::Drop { client }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(client, handshake)| Op::Resume { client, handshake }),
        5 => any::<u8>().prop_map(|client| Op::Send { client }),
        3 => (0..ROOMS, proptest::option::of(any::<u8>())).prop_map(|(room, except)| Op::Broadcast { room, except }),
        2 => (any::<u8>(), 0..ROOMS).prop_map(|(client, room)| Op::Join { client, room }),
        1 => (any::<u8>(), 0..ROOMS).prop_map(|(client, room)| Op::Leave { client, room }),
        1 => any::<u8>().prop_map(|client| Op::Ack { client }),
        1 => any::<u8>().prop_map(|client| Op::Event { client }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(client, on)| Op::Stall { client, on }),
        2 => (0u16..90).prop_map(|secs| Op::Tick { secs }),
    ]
}

#[derive(Debug)]
struct ModelSession {
    /// The payload numbers sent to it, in order (its `s` is the index + 1).
    sent: Vec<u64>,
    rooms: BTreeSet<u8>,
    suspended_at: Option<Instant>,
}

struct Harness {
    sim: Sim,
    users: Vec<u8>,
    sessions: BTreeMap<SessionId, ModelSession>,
    /// Sessions the model considers gone, and whether by expiry.
    gone: BTreeMap<SessionId, bool>,
    next_n: u64,
    seen_lifecycle: usize,
    seen_closes: usize,
    /// Suspensions the operations so far explain (drops of attached connections,
    /// slow-consumer closes); the engine's `Suspended` events must match.
    expected_suspensions: usize,
    suspensions: usize,
}

fn room(r: u8) -> String {
    format!("room-{r}")
}

impl Harness {
    fn new(seed: u64) -> Self {
        let config = EngineConfig {
            replay_max_messages: REPLAY_MAX,
            resume_window: WINDOW,
            // Heartbeats and rate limits have their own tests; keep them out of the way.
            heartbeat_interval: Duration::from_secs(3600),
            auth_timeout: Duration::from_secs(3600),
            rate_limit_burst: 100_000,
            rate_limit_per_second: 100_000,
            // Small enough that a stalled client is soon a slow consumer.
            max_outbound_bytes: 512,
            replay_max_bytes: 512,
            ..EngineConfig::default()
        };
        Self {
            sim: Sim::with_seed(config, seed),
            users: Vec::new(),
            sessions: BTreeMap::new(),
            gone: BTreeMap::new(),
            next_n: 0,
            seen_lifecycle: 0,
            seen_closes: 0,
            expected_suspensions: 0,
            suspensions: 0,
        }
    }

    fn pick(&self, c: u8) -> Option<ClientId> {
        let n = self.sim.clients().len();
        (n > 0).then(|| usize::from(c) % n)
    }

    /// The client's current session, when the model says it is alive.
    fn current(&self, c: ClientId) -> Option<SessionId> {
        self.sim
            .client(c)
            .session_id()
            .filter(|s| self.sessions.contains_key(s))
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Connect { user, via_auth } => {
                let cred = format!("user:u{user}");
                if via_auth {
                    let c = self.sim.connect(None);
                    self.sim
                        .send(c, sys::AUTH, Some(&format!(r#"{{"token":"{cred}"}}"#)), None);
                } else {
                    self.sim.connect(Some(&cred));
                }
                self.users.push(user);
            }
            Op::Drop { client } => {
                let Some(c) = self.pick(client) else { return };
                if let Some(cid) = self.sim.client(c).connection {
                    if self.sim.engine.session_of(cid).is_some() {
                        self.expected_suspensions += 1;
                    }
                    self.sim.drop_connection(c);
                }
            }
            Op::Resume { client, handshake } => {
                let Some(c) = self.pick(client) else { return };
                let cl = self.sim.client(c);
                if cl.connection.is_some() || cl.session.is_none() {
                    return;
                }
                let target = cl.session_id().unwrap();
                let last = cl.last_seq;
                let expect_ok = self
                    .sessions
                    .get(&target)
                    .is_some_and(|m| m.sent.len() as u64 - last <= REPLAY_MAX as u64);
                let cred = format!("user:u{}", self.users[c]);
                if handshake {
                    self.sim.reconnect(c, Some(&cred));
                    self.sim.resume(c);
                } else {
                    self.sim.reconnect(c, None);
                    self.sim.resume_with(c, last, Some(&cred));
                }
                let restored = self.sim.client(c).last_control() == Some(sys::SESSION_RESTORED);
                assert_eq!(restored, expect_ok, "resume of {target:?} (last {last})");
                if restored {
                    assert_eq!(self.sim.client(c).session_id(), Some(target));
                } else {
                    let err = self.sim.client(c).last_of(sys::ERROR).unwrap();
                    assert_eq!(err.error_code(), Some(4106));
                    if self.sessions.remove(&target).is_some() {
                        // Alive but not covered: a gap ends it.
                        assert_eq!(err.payload()["reason"], "gap");
                        self.gone.insert(target, false);
                    }
                }
            }
            Op::Send { client } => {
                let Some(c) = self.pick(client) else { return };
                let Some(s) = self.current(c) else { return };
                let n = self.next_n;
                self.next_n += 1;
                let text = format!("{{\"n\":{n}}}");
                let env = OutgoingEnvelope::new("m").with_payload(Payload::Trusted(&text));
                let now = self.sim.now();
                let seq = self.sim.engine.send(now, s, &env).expect("model says alive");
                self.sim.drain();
                let m = self.sessions.get_mut(&s).unwrap();
                m.sent.push(n);
                assert_eq!(seq, m.sent.len() as u64);
            }
            Op::Broadcast { room: r, except } => {
                let except = except.and_then(|e| self.pick(e)).and_then(|c| self.current(c));
                let n = self.next_n;
                self.next_n += 1;
                let text = format!("{{\"n\":{n}}}");
                let env = OutgoingEnvelope::new("m").with_payload(Payload::Trusted(&text));
                let now = self.sim.now();
                let count = self.sim.engine.broadcast_room(now, &room(r), &env, except);
                self.sim.drain();
                let mut expected = 0;
                for (id, m) in &mut self.sessions {
                    if m.rooms.contains(&r) && Some(*id) != except {
                        m.sent.push(n);
                        expected += 1;
                    }
                }
                assert_eq!(count, expected);
            }
            Op::Join { client, room: r } => {
                let Some(c) = self.pick(client) else { return };
                let Some(s) = self.current(c) else { return };
                let now = self.sim.now();
                self.sim.engine.join_room(now, s, &room(r)).unwrap();
                self.sessions.get_mut(&s).unwrap().rooms.insert(r);
            }
            Op::Leave { client, room: r } => {
                let Some(c) = self.pick(client) else { return };
                let Some(s) = self.current(c) else { return };
                let now = self.sim.now();
                let was = self.sim.engine.leave_room(now, s, &room(r)).unwrap();
                assert_eq!(was, self.sessions.get_mut(&s).unwrap().rooms.remove(&r));
            }
            Op::Ack { client } => {
                let Some(c) = self.pick(client) else { return };
                self.sim.ack(c);
            }
            Op::Event { client } => {
                let Some(c) = self.pick(client) else { return };
                let before = self.sim.events.len();
                self.sim.send(c, "app.event", Some("{}"), None);
                let attached = self
                    .sim
                    .client(c)
                    .connection
                    .and_then(|cid| self.sim.engine.session_of(cid))
                    .is_some();
                assert_eq!(self.sim.events.len(), before + usize::from(attached));
            }
            Op::Stall { client, on } => {
                let Some(c) = self.pick(client) else { return };
                self.sim.stall(c, on);
            }
            Op::Tick { secs } => {
                self.sim.advance(Duration::from_secs(u64::from(secs)));
                let now = self.sim.now();
                let due: Vec<_> = self
                    .sessions
                    .iter()
                    .filter(|(_, m)| m.suspended_at.is_some_and(|at| now >= at + WINDOW))
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    self.sessions.remove(&id);
                    self.gone.insert(id, true);
                }
            }
        }
        self.absorb_closes();
        self.absorb_lifecycle();
        self.check();
    }

    /// Connections the engine closed: only slow consumers can be (the model keeps
    /// heartbeats, deadlines and rate limits out of the way), and each suspends the
    /// session it carried.
    fn absorb_closes(&mut self) {
        let closes = self.sim.closes[self.seen_closes..].to_vec();
        self.seen_closes = self.sim.closes.len();
        for (cid, code) in closes {
            assert_eq!(code.0, 4110, "unexpected close of {cid}");
            self.expected_suspensions += 1;
        }
    }

    /// New sessions come from the engine's `Created` events; every end must be one
    /// the model expects.
    fn absorb_lifecycle(&mut self) {
        let events = self.sim.lifecycle[self.seen_lifecycle..].to_vec();
        self.seen_lifecycle = self.sim.lifecycle.len();
        for event in events {
            match event {
                SessionEvent::Created { session, .. } => {
                    self.sessions.insert(
                        session,
                        ModelSession {
                            sent: Vec::new(),
                            rooms: BTreeSet::new(),
                            suspended_at: None,
                        },
                    );
                }
                SessionEvent::Suspended { session } => {
                    self.suspensions += 1;
                    let m = self.sessions.get_mut(&session).expect("suspended a live session");
                    assert!(m.suspended_at.is_none(), "suspended twice");
                    m.suspended_at = Some(self.sim.now());
                }
                SessionEvent::Resumed { session, .. } => {
                    // Resumes are checked against the model's prediction in `apply`.
                    self.sessions
                        .get_mut(&session)
                        .expect("resumed a live session")
                        .suspended_at = None;
                }
                SessionEvent::Expired { session, .. } => {
                    assert_eq!(
                        self.gone.get(&session),
                        Some(&true),
                        "unexpected expiry of {session:?}"
                    );
                }
                SessionEvent::Closed { session, .. } => {
                    // A fresh session replaced by a resume (never used), or a gap.
                    match self.sessions.remove(&session) {
                        Some(m) => assert!(m.sent.is_empty() && m.rooms.is_empty(), "closed a used session"),
                        None => assert_eq!(self.gone.get(&session), Some(&false)),
                    }
                }
                _ => {}
            }
        }
    }

    fn check(&self) {
        self.sim.check_bounds();
        assert_eq!(
            self.suspensions, self.expected_suspensions,
            "unexplained suspensions"
        );
        for (id, m) in &self.sessions {
            let info = self
                .sim
                .engine
                .session_info(*id)
                .unwrap_or_else(|| panic!("{id:?} should be alive"));
            let rooms: BTreeSet<String> = info.rooms.iter().map(|r| r.to_string()).collect();
            let want: BTreeSet<String> = m.rooms.iter().map(|&r| room(r)).collect();
            assert_eq!(rooms, want, "rooms of {id:?}");
            assert_eq!(
                info.connection.is_none(),
                m.suspended_at.is_some(),
                "{id:?} attachment"
            );
        }
        for id in self.gone.keys() {
            assert!(
                self.sim.engine.session_info(*id).is_none(),
                "{id:?} should be gone"
            );
        }
        let m = self.sim.engine.metrics();
        assert_eq!(m.sessions_live + m.sessions_suspended, self.sessions.len() as u64);

        // Per client: attribute each sequenced message to the session announced last.
        for (c, client) in self.sim.clients().iter().enumerate() {
            let mut streams: BTreeMap<SessionId, Vec<(u64, u64)>> = BTreeMap::new();
            let mut current = None;
            for r in &client.received {
                if r.event() == sys::SESSION_CREATED || r.event() == sys::SESSION_RESTORED {
                    current = r.payload()["sessionId"].as_str().and_then(SessionId::parse);
                } else if let Some(seq) = r.envelope.seq {
                    let n = r.payload()["n"].as_u64().unwrap();
                    streams
                        .entry(current.expect("a session"))
                        .or_default()
                        .push((seq, n));
                }
            }
            for (id, got) in &streams {
                // Exactly once, in order: s = 1, 2, 3, … with the model's payloads.
                for (i, &(seq, n)) in got.iter().enumerate() {
                    assert_eq!(seq, i as u64 + 1, "client {c} stream of {id:?}: {got:?}");
                    if let Some(m) = self.sessions.get(id) {
                        assert_eq!(Some(&n), m.sent.get(i), "client {c} payload of {id:?}");
                    }
                }
            }
            // Complete while attached.
            if let Some(sid) = client.connection.and_then(|cid| self.sim.engine.session_of(cid)) {
                let got = streams.get(&sid).map_or(0, Vec::len);
                assert_eq!(
                    got,
                    self.sessions[&sid].sent.len(),
                    "client {c} misses messages of {sid:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = Harness::new(seed);
        for op in &ops {
            h.apply(op);
        }
    }
}
