//! The resume storm: every session of a room loses its connection at once, misses a
//! few room messages, and comes back at once. What it measures is the server's resume
//! path under a thundering herd — authentication, the resume checks, token rotation and
//! the replay of what was missed — and what it counts is the promise: every missed
//! message once, in order, for every session.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::load::{connect_session, open_all, Outcome, Spec};
use crate::proc_stat;
use crate::proto::{seq_of, Incoming, Proto};
use crate::wire::{push_frame, Conn, TEXT};

/// How long every session may take to come back with all it missed.
const STORM_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last session is whole, how long extra deliveries (duplicates) are looked
/// for.
const QUIET: Duration = Duration::from_millis(300);
/// Reconnects in progress at once: a storm, bounded only so that the generator's own
/// accept backlog does not turn it into connection errors.
const STORM_CONCURRENCY: usize = 1024;

/// A session as the storm needs it: who, and where its stream was at the cut.
struct Resumable {
    user: usize,
    session_id: String,
    token: String,
    last_seq: u64,
}

/// What one session's comeback counted.
#[derive(Default)]
struct Comeback {
    delivered: u64,
    out_of_order: u64,
    errors: u64,
    /// When it had everything it missed.
    whole_at: Option<Instant>,
    /// The connection it came back on, kept open until the server's CPU time has been
    /// read: closing ten thousand connections is not part of resuming them (it was a
    /// third of the server's CPU per resume while each closed as it finished).
    conn: Option<Conn>,
}

pub(crate) async fn run(spec: &Spec, sessions: usize, missed: u64) -> io::Result<Outcome> {
    let local = tokio::task::LocalSet::new();
    let addr = spec.addr;
    let pid = spec.server_pid;
    local
        .run_until(async move {
            // Sessions in the room, each knowing its id, token and last `s`.
            let opened = open_all(sessions, move |user| async move {
                let conn = Conn::connect(
                    addr,
                    Proto::Tether.path(),
                    &[("Authorization", &format!("Bearer u{user}"))],
                )
                .await?;
                Ok(conn)
            })
            .await?;
            let mut members = Vec::with_capacity(sessions);
            let mut conns = Vec::with_capacity(sessions);
            for (user, mut conn) in opened.into_iter().enumerate() {
                members.push(join_and_note(&mut conn, user).await?);
                conns.push(conn);
            }
            // The cut: every connection dropped at once (FIN, no close frame).
            drop(conns);
            // Meanwhile the room gets `missed` messages.
            let mut publisher = connect_session(addr, Proto::Tether, sessions).await?;
            let mut out = Vec::new();
            for n in 1..=missed {
                push_frame(&mut out, TEXT, Proto::Tether.publish(n).as_bytes());
            }
            publisher.write(&out).await?;
            // A request after them: once it is answered, the publications are handled.
            let mut echo = Vec::new();
            push_frame(&mut echo, TEXT, Proto::Tether.echo(1, "x").as_bytes());
            publisher.write(&echo).await?;
            wait_reply(&mut publisher, 1).await?;
            // Give the server a moment to see every cut (it would replay from the buffer
            // either way; this keeps the storm about resumes, not about closes).
            tokio::time::sleep(Duration::from_millis(500)).await;

            // The storm.
            let cpu_before = pid.and_then(proc_stat::cpu_times);
            let started = Instant::now();
            let gate = Arc::new(Semaphore::new(STORM_CONCURRENCY));
            let tasks: Vec<_> = members
                .into_iter()
                .map(|member| {
                    let gate = gate.clone();
                    tokio::task::spawn_local(async move {
                        let permit = gate.acquire_owned().await.expect("never closed");
                        comeback(addr, member, missed, permit).await
                    })
                })
                .collect();
            let mut comebacks = Vec::with_capacity(tasks.len());
            for task in tasks {
                comebacks.push(task.await.map_err(io::Error::other)?);
            }
            let last_whole = comebacks.iter().filter_map(|c| c.whole_at).max();
            let cpu_after = pid.and_then(proc_stat::cpu_times);
            for comeback in &mut comebacks {
                drop(comeback.conn.take());
            }
            let resumed = comebacks.iter().filter(|c| c.whole_at.is_some()).count() as u64;
            let window_secs = last_whole.map_or(0.0, |at| at.duration_since(started).as_secs_f64());
            // The CPU sample is taken after the quiet period: the server's work for the
            // storm is over by then, and an idle server adds next to nothing.
            let (server_cpu_s, server_kernel_s) = proc_stat::spent(cpu_before, cpu_after);
            Ok(Outcome {
                measured: resumed,
                window_secs,
                msg_per_s: if window_secs > 0.0 {
                    resumed as f64 / window_secs
                } else {
                    0.0
                },
                server_cpu_s,
                server_kernel_s,
                msg_per_cpu_s: server_cpu_s.filter(|s| *s > 0.0).map(|s| resumed as f64 / s),
                sent: sessions as u64,
                received: comebacks.iter().map(|c| c.delivered).sum(),
                expected: sessions as u64 * missed,
                out_of_order: comebacks.iter().map(|c| c.out_of_order).sum(),
                errors: comebacks.iter().map(|c| c.errors).sum::<u64>() + (sessions as u64 - resumed),
                ..Outcome::default()
            })
        })
        .await
}

/// Reads the new session's `sys.session.created` (its id and resume token), joins the
/// room and notes the `s` of the join reply: the last message before the cut.
async fn join_and_note(conn: &mut Conn, user: usize) -> io::Result<Resumable> {
    let mut ids = None;
    while ids.is_none() {
        conn.read_frames(|opcode, data| {
            if opcode == TEXT && Proto::Tether.classify(data) == Incoming::Ready {
                ids = string_after(data, br#""sessionId":""#).zip(string_after(data, br#""resumeToken":""#));
            }
        })
        .await?;
    }
    let (session_id, token) = ids.unwrap_or_default();
    let mut frame = Vec::new();
    push_frame(&mut frame, TEXT, Proto::Tether.join(0, "bench").as_bytes());
    conn.write(&frame).await?;
    let mut joined = None;
    while joined.is_none() {
        conn.read_frames(|opcode, data| {
            if opcode == TEXT && Proto::Tether.classify(data) == Incoming::Reply(0) {
                joined = Some(seq_of(data).unwrap_or(0));
            }
        })
        .await?;
    }
    Ok(Resumable {
        user,
        session_id,
        token,
        last_seq: joined.unwrap_or(0),
    })
}

/// The JSON string value after `key` (which ends with the opening quote); tether's ids
/// and tokens have no escapes.
fn string_after(text: &[u8], key: &[u8]) -> Option<String> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let len = text[at..].iter().position(|&b| b == b'"')?;
    String::from_utf8(text[at..at + len].to_vec()).ok()
}

async fn wait_reply(conn: &mut Conn, id: u64) -> io::Result<()> {
    loop {
        let mut found = false;
        conn.read_frames(|opcode, data| {
            found |= opcode == TEXT && Proto::Tether.classify(data) == Incoming::Reply(id);
        })
        .await?;
        if found {
            return Ok(());
        }
    }
}

/// One session comes back: a new connection (no credential in the upgrade), the
/// resume request with the last `s` and the credential, then `sys.session.restored`
/// and the missed messages, 1 to `missed`, each once and in order; then a quiet
/// period in which nothing more may come.
async fn comeback(
    addr: SocketAddr,
    member: Resumable,
    missed: u64,
    permit: OwnedSemaphorePermit,
) -> Comeback {
    let mut tally = Comeback::default();
    let Ok(mut conn) = Conn::connect(addr, Proto::Tether.path(), &[]).await else {
        tally.errors += 1;
        return tally;
    };
    let request = format!(
        r#"{{"v":"1.0","e":"sys.reconnect.request","p":{{"sessionId":"{}","resumeToken":"{}","lastSeq":{},"token":"u{}"}},"c":"r"}}"#,
        member.session_id, member.token, member.last_seq, member.user
    );
    let mut frame = Vec::new();
    push_frame(&mut frame, TEXT, request.as_bytes());
    if conn.write(&frame).await.is_err() {
        tally.errors += 1;
        return tally;
    }
    let mut restored = false;
    let mut last = 0u64;
    let deadline = tokio::time::Instant::now() + STORM_TIMEOUT;
    while !(restored && last >= missed) {
        let read = tokio::time::timeout_at(
            deadline,
            conn.read_frames(|opcode, data| {
                if opcode != TEXT {
                    return;
                }
                if data.starts_with(br#"{"v":"1.0","e":"sys.session.restored""#) {
                    restored = true;
                } else {
                    count(&mut tally, &mut last, data);
                }
            }),
        )
        .await;
        if !matches!(read, Ok(Ok(_))) {
            tally.errors += 1;
            return tally;
        }
    }
    tally.whole_at = Some(Instant::now());
    // Others may come back now; this one only listens for one too many.
    drop(permit);
    let quiet = tokio::time::Instant::now() + QUIET;
    loop {
        let read = tokio::time::timeout_at(
            quiet,
            conn.read_frames(|opcode, data| {
                if opcode == TEXT {
                    count(&mut tally, &mut last, data);
                }
            }),
        )
        .await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                tally.errors += 1;
                return tally;
            }
            Err(_) => {
                tally.conn = Some(conn);
                return tally;
            }
        }
    }
}

/// Counts one frame: a delivery (in order after `last`, or not) or a refusal.
fn count(tally: &mut Comeback, last: &mut u64, data: &[u8]) {
    match Proto::Tether.classify(data) {
        Incoming::Delivery { n, .. } => {
            tally.delivered += 1;
            tally.out_of_order += u64::from(n != *last + 1);
            *last = n;
        }
        Incoming::Error => tally.errors += 1,
        _ => {}
    }
}
