//! The load generator: N client connections on one single-threaded tokio runtime
//! (the runner pins it to its own core), a warm-up, a measured window, then a drain
//! that waits for every answer so that counts can be checked.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::proc_stat;
use crate::proto::{Incoming, Proto};
use crate::wire::{Conn, PING, PONG, TEXT};

/// What to run against one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The server's address.
    pub addr: SocketAddr,
    /// The scenario.
    pub scenario: Scenario,
    /// Seconds of load before the measured window.
    pub warmup: f64,
    /// Seconds of the measured window.
    pub secs: f64,
    /// The server's process, for its CPU time and RSS (`/proc/<pid>`); none in-process.
    pub server_pid: Option<u32>,
}

/// The scenarios.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Scenario {
    /// Plain WebSocket echo: `conns` connections, each keeping `inflight` text
    /// messages of `size` bytes in flight (pre-masked frames, one write per batch).
    RawEcho {
        /// Connections.
        conns: usize,
        /// Messages in flight per connection.
        inflight: usize,
        /// Payload bytes.
        size: usize,
    },
    /// Session echo: each request carries an id the answer must echo.
    SessionEcho {
        /// The protocol.
        proto: Proto,
        /// Sessions.
        conns: usize,
        /// Requests in flight per session.
        inflight: usize,
        /// Payload bytes (inside the JSON string).
        size: usize,
        /// tether: acknowledge every this many answers (0: never).
        ack_every: u64,
    },
    /// Room fan-out: `members` sessions in one room, one more session publishes
    /// numbered messages, at most `window` of them not yet delivered to everyone.
    Fanout {
        /// The protocol.
        proto: Proto,
        /// Members of the room.
        members: usize,
        /// Publications in flight.
        window: u64,
        /// tether: each member acknowledges every this many deliveries (0: never).
        ack_every: u64,
    },
    /// The resume storm (tether only): `sessions` sessions in a room are cut at once
    /// (TCP dropped, no close), `missed` messages are published to the room meanwhile,
    /// then every session reconnects at once and resumes with its last `s`. Measures
    /// resumes per second (and per server-CPU-second) from the first reconnect to the
    /// last session that has all it missed; counts every missed message once, in order.
    ResumeStorm {
        /// Sessions cut and resumed.
        sessions: usize,
        /// Messages each one misses.
        missed: u64,
    },
    /// The join storm with presence (tether only, against `serve … session-presence`):
    /// `sessions` authenticated sessions join one room at once; measures the time
    /// until every member knows every other (join reply list and `sys.presence`), the
    /// presence messages and bytes received, and the server RSS per session.
    Join {
        /// Sessions that join.
        sessions: usize,
    },
    /// Server memory per idle connection: `conns` upgraded connections (with
    /// `proto`: authenticated sessions that joined a room), nothing sent after.
    Idle {
        /// None for plain WebSocket connections.
        proto: Option<Proto>,
        /// Connections.
        conns: usize,
    },
}

/// What one run measured and counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Messages (echo answers, or room deliveries) received in the measured window.
    pub measured: u64,
    /// Length of the measured window, seconds.
    pub window_secs: f64,
    /// `measured / window_secs`.
    pub msg_per_s: f64,
    /// Server CPU seconds (user + system) during the window, when known.
    pub server_cpu_s: Option<f64>,
    /// Of those, the seconds in the kernel (system calls, and the softirqs that ran
    /// while the server did: on loopback, the client's TCP input of what it sent).
    #[serde(default)]
    pub server_kernel_s: Option<f64>,
    /// `measured / server_cpu_s`.
    pub msg_per_cpu_s: Option<f64>,
    /// Latency percentiles in the window, microseconds: of echo answers (from the
    /// write of the request's batch), or of fan-out deliveries (from the publisher's
    /// write of the publication to the member's read that brought it).
    pub p50_us: Option<u32>,
    /// 99th percentile.
    pub p99_us: Option<u32>,
    /// 99.9th percentile.
    pub p999_us: Option<u32>,
    /// Requests (or publications) sent in all.
    pub sent: u64,
    /// Answers (or deliveries) received in all.
    pub received: u64,
    /// Deliveries expected in all (fan-out: publications × members; echo: `sent`).
    pub expected: u64,
    /// Deliveries that did not follow the previous one of the same member.
    pub out_of_order: u64,
    /// Unexpected frames, refusals, wrong sizes, connection errors.
    pub errors: u64,
    /// Server RSS growth per connection, bytes (idle and join scenarios).
    pub rss_per_conn: Option<f64>,
    /// Presence announcements received by all members (join scenario).
    #[serde(default)]
    pub presence_msgs: Option<u64>,
    /// Their bytes (WebSocket payloads).
    #[serde(default)]
    pub presence_bytes: Option<u64>,
    /// Bytes of the join replies (their member lists).
    #[serde(default)]
    pub reply_bytes: Option<u64>,
}

const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;
/// How long the drain may take after the window before missing answers count as lost.
const DRAIN: Duration = Duration::from_secs(10);
/// How long opening every connection (and session, and join) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Handshakes in progress at once.
const CONNECT_CONCURRENCY: usize = 64;

/// Per-connection tallies, summed at the end.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    expected: u64,
    measured: u64,
    out_of_order: u64,
    errors: u64,
    latencies: Vec<u32>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.received += other.received;
        self.expected += other.expected;
        self.measured += other.measured;
        self.out_of_order += other.out_of_order;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }
}

struct Shared {
    phase: AtomicU8,
    stop: CancellationToken,
    drain_deadline: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.drain_deadline
            .lock()
            .expect("not poisoned")
            .unwrap_or_else(|| tokio::time::Instant::now() + DRAIN)
    }
}

/// Runs `spec` on a fresh single-threaded runtime and returns what it measured.
pub fn run(spec: &Spec) -> io::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(spec))
}

async fn run_async(spec: &Spec) -> io::Result<Outcome> {
    match &spec.scenario {
        Scenario::Idle { proto, conns } => idle(spec, *proto, *conns).await,
        Scenario::ResumeStorm { sessions, missed } => crate::storm::run(spec, *sessions, *missed).await,
        Scenario::Join { sessions } => crate::join::run(spec, *sessions).await,
        _ => loaded(spec).await,
    }
}

pub(crate) async fn connect_session(addr: SocketAddr, proto: Proto, user: usize) -> io::Result<Conn> {
    let bearer = format!("Bearer u{user}");
    let headers: &[(&str, &str)] = match proto {
        Proto::Tether => &[("Authorization", bearer.as_str())],
        Proto::SocketIo | Proto::TetherTcp => &[],
    };
    let mut conn = match proto {
        Proto::TetherTcp => Conn::connect_tcp(addr).await?,
        Proto::Tether | Proto::SocketIo => Conn::connect(addr, proto.path(), headers).await?,
    };
    if let Some(hello) = proto.hello() {
        let mut frame = Vec::new();
        conn.frame(&mut frame, TEXT, hello.as_bytes());
        conn.write(&frame).await?;
    }
    wait_for(&mut conn, proto, |incoming| incoming == &Incoming::Ready).await?;
    Ok(conn)
}

async fn join(conn: &mut Conn, proto: Proto) -> io::Result<()> {
    let mut frame = Vec::new();
    conn.frame(&mut frame, TEXT, proto.join(0, "bench").as_bytes());
    conn.write(&frame).await?;
    wait_for(conn, proto, |incoming| incoming == &Incoming::Reply(0)).await
}

/// Reads until a frame `done` accepts; answers Engine.IO pings on the way.
async fn wait_for(conn: &mut Conn, proto: Proto, done: impl Fn(&Incoming) -> bool) -> io::Result<()> {
    loop {
        let mut found = false;
        let mut refused = false;
        let mut pings = 0;
        conn.read_frames(|opcode, payload| {
            if opcode != TEXT {
                return;
            }
            let incoming = proto.classify(payload);
            found |= done(&incoming);
            refused |= incoming == Incoming::Error;
            pings += usize::from(incoming == Incoming::Ping);
        })
        .await?;
        answer_pings(conn, pings).await?;
        if refused {
            return Err(io::Error::other("the server refused a request"));
        }
        if found {
            return Ok(());
        }
    }
}

async fn answer_pings(conn: &mut Conn, pings: usize) -> io::Result<()> {
    if pings == 0 {
        return Ok(());
    }
    let mut frame = Vec::new();
    for _ in 0..pings {
        conn.frame(&mut frame, TEXT, b"3");
    }
    conn.write(&frame).await
}

/// Opens `count` connections with `open`, at most [`CONNECT_CONCURRENCY`] at once.
pub(crate) async fn open_all<F, Fut>(count: usize, open: F) -> io::Result<Vec<Conn>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = io::Result<Conn>> + 'static,
{
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let gate = gate.clone();
        let opening = open(i);
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("never closed");
            opening.await
        }));
    }
    let mut conns = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    for task in tasks {
        let opened = tokio::time::timeout_at(deadline, task)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connections not opened in time"))?;
        conns.push(opened.map_err(io::Error::other)??);
    }
    Ok(conns)
}

async fn idle(spec: &Spec, proto: Option<Proto>, count: usize) -> io::Result<Outcome> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let rss = |pid: Option<u32>| pid.and_then(proc_stat::rss_bytes);
            // Let the server settle after its start, then open one connection first so
            // that lazily built state (the first task, the first session) is not
            // charged to the idle ones.
            let addr = spec.addr;
            let open = move |i: usize| async move {
                match proto {
                    None => Conn::connect(addr, "/", &[]).await,
                    Some(proto) => {
                        let mut conn = connect_session(addr, proto, i).await?;
                        join(&mut conn, proto).await?;
                        Ok(conn)
                    }
                }
            };
            let first = open_all(1, open).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = rss(spec.server_pid);
            let conns = open_all(count, move |i| open(i + 1)).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = rss(spec.server_pid);
            let outcome = Outcome {
                received: conns.len() as u64,
                expected: count as u64,
                rss_per_conn: before
                    .zip(after)
                    .map(|(b, a)| (a as f64 - b as f64) / count as f64),
                ..Outcome::default()
            };
            drop(conns);
            drop(first);
            Ok(outcome)
        })
        .await
}

async fn loaded(spec: &Spec) -> io::Result<Outcome> {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(PHASE_WARMUP),
        stop: CancellationToken::new(),
        drain_deadline: std::sync::Mutex::new(None),
    });
    let local = tokio::task::LocalSet::new();
    let spec = spec.clone();
    local
        .run_until(async move {
            let addr = spec.addr;
            let mut tasks = Vec::new();
            let mut publisher = None;
            match spec.scenario.clone() {
                Scenario::RawEcho {
                    conns,
                    inflight,
                    size,
                } => {
                    let opened = open_all(conns, move |_| Conn::connect(addr, "/", &[])).await?;
                    for conn in opened {
                        tasks.push(tokio::task::spawn_local(raw_echo(
                            conn,
                            inflight,
                            size,
                            shared.clone(),
                        )));
                    }
                }
                Scenario::SessionEcho {
                    proto,
                    conns,
                    inflight,
                    size,
                    ack_every,
                } => {
                    let opened = open_all(conns, move |i| connect_session(addr, proto, i)).await?;
                    for conn in opened {
                        tasks.push(tokio::task::spawn_local(session_echo(
                            conn,
                            proto,
                            inflight,
                            size,
                            ack_every,
                            shared.clone(),
                        )));
                    }
                }
                Scenario::Fanout {
                    proto,
                    members,
                    window,
                    ack_every,
                } => {
                    let opened = open_all(members, move |i| async move {
                        let mut conn = connect_session(addr, proto, i).await?;
                        join(&mut conn, proto).await?;
                        Ok(conn)
                    })
                    .await?;
                    let fan = Arc::new(Fan {
                        delivered: AtomicU64::new(0),
                        published: AtomicU64::new(u64::MAX),
                        progress: Notify::new(),
                        sent_at: std::sync::Mutex::new(Vec::new()),
                    });
                    for conn in opened {
                        tasks.push(tokio::task::spawn_local(member(
                            conn,
                            proto,
                            ack_every,
                            shared.clone(),
                            fan.clone(),
                        )));
                    }
                    let conn = connect_session(addr, proto, members).await?;
                    publisher = Some(tokio::task::spawn_local(publish(
                        conn,
                        proto,
                        members as u64,
                        window,
                        shared.clone(),
                        fan,
                    )));
                }
                Scenario::Idle { .. } | Scenario::ResumeStorm { .. } | Scenario::Join { .. } => {
                    unreachable!("handled by idle(), storm::run() and join::run()")
                }
            }
            tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;
            let cpu_before = spec.server_pid.and_then(proc_stat::cpu_times);
            shared.phase.store(PHASE_MEASURE, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(spec.secs)).await;
            shared.phase.store(PHASE_STOP, Ordering::Relaxed);
            let window_secs = started.elapsed().as_secs_f64();
            let cpu_after = spec.server_pid.and_then(proc_stat::cpu_times);
            *shared.drain_deadline.lock().expect("not poisoned") = Some(tokio::time::Instant::now() + DRAIN);
            shared.stop.cancel();
            let mut tally = Tally::default();
            if let Some(publisher) = publisher {
                let published = publisher.await.map_err(io::Error::other)?;
                tally.sent = published.sent;
                tally.errors += published.errors;
            }
            for task in tasks {
                tally.add(task.await.map_err(io::Error::other)?);
            }
            let (server_cpu_s, server_kernel_s) = proc_stat::spent(cpu_before, cpu_after);
            let mut latencies = std::mem::take(&mut tally.latencies);
            latencies.sort_unstable();
            let pct = |p: f64| -> Option<u32> {
                if latencies.is_empty() {
                    return None;
                }
                let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
                Some(latencies[at])
            };
            Ok(Outcome {
                measured: tally.measured,
                window_secs,
                msg_per_s: tally.measured as f64 / window_secs,
                server_cpu_s,
                server_kernel_s,
                msg_per_cpu_s: server_cpu_s
                    .filter(|s| *s > 0.0)
                    .map(|s| tally.measured as f64 / s),
                p50_us: pct(0.5),
                p99_us: pct(0.99),
                p999_us: pct(0.999),
                sent: tally.sent,
                received: tally.received,
                expected: tally.expected,
                out_of_order: tally.out_of_order,
                errors: tally.errors,
                ..Outcome::default()
            })
        })
        .await
}

/// Reads once, or gives up at the drain deadline once the run is stopping.
async fn read_or_stop(
    conn: &mut Conn,
    shared: &Shared,
    mut on_frame: impl FnMut(u8, &[u8]),
) -> Option<io::Result<crate::wire::ReadOutcome>> {
    if shared.phase() != PHASE_STOP {
        // A read waiting when the run stops is given up (reads are cancel-safe: nothing
        // is consumed until the read returns) and retried under the drain deadline.
        tokio::select! {
            read = conn.read_frames(&mut on_frame) => return Some(read),
            () = shared.stop.cancelled() => {}
        }
    }
    tokio::time::timeout_at(shared.deadline(), conn.read_frames(on_frame))
        .await
        .ok()
}

fn micros(since: Instant, now: Instant) -> u32 {
    now.duration_since(since).as_micros().min(u128::from(u32::MAX)) as u32
}

async fn raw_echo(mut conn: Conn, inflight: usize, size: usize, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let payload = vec![b'x'; size];
    let mut batch = Vec::new();
    for _ in 0..inflight {
        conn.frame(&mut batch, TEXT, &payload);
    }
    let frame_len = batch.len() / inflight.max(1);
    let mut sent_at = VecDeque::with_capacity(inflight);
    let now = Instant::now();
    if conn.write(&batch).await.is_err() {
        tally.errors += 1;
        return tally;
    }
    sent_at.extend((0..inflight).map(|_| now));
    tally.sent += inflight as u64;
    loop {
        let mut got = 0usize;
        let mut wrong = 0u64;
        let read = read_or_stop(&mut conn, &shared, |opcode, data| {
            if opcode == TEXT {
                got += 1;
                wrong += u64::from(data.len() != size);
            }
        })
        .await;
        match read {
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                tally.errors += 1;
                break;
            }
            None => break,
        }
        let now = Instant::now();
        let measuring = shared.phase() == PHASE_MEASURE;
        tally.errors += wrong;
        tally.received += got as u64;
        for _ in 0..got {
            let Some(at) = sent_at.pop_front() else {
                tally.errors += 1;
                continue;
            };
            if measuring {
                tally.measured += 1;
                tally.latencies.push(micros(at, now));
            }
        }
        if shared.phase() == PHASE_STOP {
            if sent_at.is_empty() {
                break;
            }
            continue;
        }
        let again = got.min(inflight);
        if again > 0 {
            if conn.write(&batch[..again * frame_len]).await.is_err() {
                tally.errors += 1;
                break;
            }
            sent_at.extend((0..again).map(|_| now));
            tally.sent += again as u64;
        }
    }
    tally.expected = tally.sent;
    tally
}

async fn session_echo(
    mut conn: Conn,
    proto: Proto,
    inflight: usize,
    size: usize,
    ack_every: u64,
    shared: Arc<Shared>,
) -> Tally {
    let mut tally = Tally::default();
    let payload = "x".repeat(size);
    let mut pending: Vec<(u64, Instant)> = Vec::with_capacity(inflight);
    let mut next_id = 1u64;
    let mut out = Vec::new();
    let now = Instant::now();
    for _ in 0..inflight {
        conn.frame(&mut out, TEXT, proto.echo(next_id, &payload).as_bytes());
        pending.push((next_id, now));
        next_id += 1;
    }
    if conn.write(&out).await.is_err() {
        tally.errors += 1;
        return tally;
    }
    tally.sent += inflight as u64;
    let mut last_seq = 0u64;
    let mut unacked = 0u64;
    loop {
        let mut answered = Vec::new();
        let mut errors = 0u64;
        let mut pings = 0usize;
        let read = read_or_stop(&mut conn, &shared, |opcode, data| {
            if opcode != TEXT {
                return;
            }
            match proto.classify(data) {
                Incoming::Reply(id) => {
                    answered.push(id);
                    if let Some(seq) = crate::proto::seq_of(data) {
                        last_seq = last_seq.max(seq);
                    }
                }
                Incoming::Ping => pings += 1,
                Incoming::Error => errors += 1,
                _ => {}
            }
        })
        .await;
        match read {
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                tally.errors += 1;
                break;
            }
            None => break,
        }
        let now = Instant::now();
        let measuring = shared.phase() == PHASE_MEASURE;
        tally.errors += errors;
        tally.received += answered.len() as u64;
        for id in &answered {
            match pending.iter().position(|(p, _)| p == id) {
                Some(at) => {
                    let (_, since) = pending.swap_remove(at);
                    if measuring {
                        tally.measured += 1;
                        tally.latencies.push(micros(since, now));
                    }
                }
                None => tally.errors += 1,
            }
        }
        out.clear();
        for _ in 0..pings {
            conn.frame(&mut out, TEXT, b"3");
        }
        unacked += answered.len() as u64;
        if ack_every > 0 && unacked >= ack_every {
            if let Some(ack) = proto.ack(last_seq) {
                conn.frame(&mut out, TEXT, ack.as_bytes());
            }
            unacked = 0;
        }
        let stopping = shared.phase() == PHASE_STOP;
        if !stopping {
            for _ in 0..answered.len().min(inflight) {
                conn.frame(&mut out, TEXT, proto.echo(next_id, &payload).as_bytes());
                pending.push((next_id, now));
                next_id += 1;
                tally.sent += 1;
            }
        }
        if !out.is_empty() && conn.write(&out).await.is_err() {
            tally.errors += 1;
            break;
        }
        if stopping && pending.is_empty() {
            break;
        }
    }
    tally.expected = tally.sent;
    tally
}

/// What the publisher and the members of a fan-out share.
struct Fan {
    /// Deliveries received by all members together.
    delivered: AtomicU64,
    /// The number of publications, once the publisher has stopped (`u64::MAX` before).
    published: AtomicU64,
    /// Members signal deliveries; the publisher waits on it when its window is full.
    progress: Notify,
    /// When the publisher began writing each publication (publication `n` at `n - 1`):
    /// a delivery's latency is from there to the member's read that brought it.
    sent_at: std::sync::Mutex<Vec<Instant>>,
}

struct Published {
    sent: u64,
    errors: u64,
}

async fn publish(
    mut conn: Conn,
    proto: Proto,
    members: u64,
    window: u64,
    shared: Arc<Shared>,
    fan: Arc<Fan>,
) -> Published {
    let mut n = 0u64;
    let mut errors = 0;
    let mut out = Vec::new();
    while shared.phase() != PHASE_STOP {
        let delivered = fan.delivered.load(Ordering::Relaxed);
        let done = delivered / members.max(1);
        let room = (done + window).saturating_sub(n);
        if room == 0 {
            tokio::select! {
                () = fan.progress.notified() => {}
                () = shared.stop.cancelled() => {}
            }
            continue;
        }
        out.clear();
        for _ in 0..room {
            n += 1;
            conn.frame(&mut out, TEXT, proto.publish(n).as_bytes());
        }
        let now = Instant::now();
        fan.sent_at
            .lock()
            .expect("not poisoned")
            .extend((0..room).map(|_| now));
        if conn.write(&out).await.is_err() {
            errors += 1;
            break;
        }
    }
    fan.published.store(n, Ordering::Relaxed);
    // Wake members waiting for the end.
    Published { sent: n, errors }
}

async fn member(mut conn: Conn, proto: Proto, ack_every: u64, shared: Arc<Shared>, fan: Arc<Fan>) -> Tally {
    let mut tally = Tally::default();
    let mut last = 0u64;
    let mut last_seq = 0u64;
    let mut unacked = 0u64;
    let mut out = Vec::new();
    // The publication numbers the last read delivered.
    let mut delivered = Vec::new();
    loop {
        let published = fan.published.load(Ordering::Relaxed);
        if published != u64::MAX && last >= published {
            break;
        }
        delivered.clear();
        let mut disorder = 0u64;
        let mut errors = 0u64;
        let mut pings = 0usize;
        let read = if shared.phase() == PHASE_STOP {
            // The publisher may be done: look at the count again at least every 50 ms.
            match tokio::time::timeout(Duration::from_millis(50), async {
                read_or_stop(&mut conn, &shared, |opcode, data| {
                    on_delivery(
                        proto,
                        opcode,
                        data,
                        &mut last,
                        &mut last_seq,
                        &mut delivered,
                        &mut disorder,
                        &mut errors,
                        &mut pings,
                    )
                })
                .await
            })
            .await
            {
                Ok(read) => read,
                Err(_) if tokio::time::Instant::now() < shared.deadline() => continue,
                Err(_) => None,
            }
        } else {
            tokio::select! {
                read = conn.read_frames(|opcode, data| {
                    on_delivery(proto, opcode, data, &mut last, &mut last_seq, &mut delivered, &mut disorder, &mut errors, &mut pings)
                }) => Some(read),
                () = shared.stop.cancelled() => continue,
            }
        };
        match read {
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                tally.errors += 1;
                break;
            }
            None => break,
        }
        let got = delivered.len() as u64;
        tally.received += got;
        tally.out_of_order += disorder;
        tally.errors += errors;
        if shared.phase() == PHASE_MEASURE {
            tally.measured += got;
            let now = Instant::now();
            let sent_at = fan.sent_at.lock().expect("not poisoned");
            for &n in &delivered {
                match n.checked_sub(1).and_then(|i| sent_at.get(i as usize)) {
                    Some(&at) => tally.latencies.push(micros(at, now)),
                    // Delivered before it was published: the count is wrong.
                    None => tally.errors += 1,
                }
            }
        }
        if got > 0 {
            fan.delivered.fetch_add(got, Ordering::Relaxed);
            fan.progress.notify_one();
        }
        out.clear();
        for _ in 0..pings {
            conn.frame(&mut out, TEXT, b"3");
        }
        unacked += got;
        if ack_every > 0 && unacked >= ack_every {
            if let Some(ack) = proto.ack(last_seq) {
                conn.frame(&mut out, TEXT, ack.as_bytes());
            }
            unacked = 0;
        }
        if !out.is_empty() && conn.write(&out).await.is_err() {
            tally.errors += 1;
            break;
        }
    }
    let published = fan.published.load(Ordering::Relaxed);
    tally.expected = if published == u64::MAX { 0 } else { published };
    tally
}

#[allow(clippy::too_many_arguments)]
fn on_delivery(
    proto: Proto,
    opcode: u8,
    data: &[u8],
    last: &mut u64,
    last_seq: &mut u64,
    delivered: &mut Vec<u64>,
    disorder: &mut u64,
    errors: &mut u64,
    pings: &mut usize,
) {
    match opcode {
        TEXT => {}
        PING | PONG => return,
        _ => {
            *errors += 1;
            return;
        }
    }
    match proto.classify(data) {
        Incoming::Delivery { n, seq } => {
            if n != *last + 1 {
                *disorder += 1;
            }
            *last = n;
            delivered.push(n);
            if let Some(seq) = seq {
                *last_seq = seq;
            }
        }
        Incoming::Ping => *pings += 1,
        Incoming::Error => *errors += 1,
        _ => {}
    }
}
