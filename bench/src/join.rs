//! The join storm with presence: `sessions` sessions authenticate, then all join one
//! room of a server with presence on (`serve … session-presence`) at once. Each join is
//! answered with the room's member list (as the chat example does); everything else a
//! member learns of the others comes in `sys.presence` announcements. A member is
//! done when it knows every user of the room (its reply's list and the announcements'
//! entries, counted once each); the run ends when the last one is. Measured: the time
//! from the first join to then, the presence messages and bytes the members received,
//! and the server's RSS growth per session. The scan for user names is the formats'
//! common ground: the generator counts every format tether's presence has had (one
//! message per change, `{user, state}` objects, lists per state).

use std::io;
use std::time::{Duration, Instant};

use crate::load::{connect_session, open_all, Outcome, Spec};
use crate::proc_stat;
use crate::proto::Proto;
use crate::wire::{push_frame, Conn, TEXT};

/// How long the last member may take to know everyone.
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);
/// The prefix of a presence announcement (any format).
const PRESENCE: &[u8] = br#"{"v":"1.0","e":"sys.presence""#;
/// The prefix of the join reply.
const JOINED: &[u8] = br#"{"v":"1.0","e":"joined""#;

/// What one member counted.
#[derive(Default)]
struct Member {
    presence_msgs: u64,
    presence_bytes: u64,
    reply_bytes: u64,
    done_at: Option<Instant>,
    errors: u64,
    /// The member's connection, kept open until the server's CPU time and RSS have
    /// been read: a member that closed once it knew everyone would make the server
    /// announce its leaving to all the others while they still join.
    conn: Option<Conn>,
}

pub(crate) async fn run(spec: &Spec, sessions: usize) -> io::Result<Outcome> {
    let local = tokio::task::LocalSet::new();
    let (addr, pid) = (spec.addr, spec.server_pid);
    local
        .run_until(async move {
            let rss_before = pid.and_then(proc_stat::rss_bytes);
            let conns = open_all(sessions, move |user| connect_session(addr, Proto::Tether, user)).await?;
            let cpu_before = pid.and_then(proc_stat::cpu_times);
            let started = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut conn| {
                    tokio::task::spawn_local(async move {
                        let mut member = Member::default();
                        let mut frame = Vec::new();
                        push_frame(&mut frame, TEXT, Proto::Tether.join(0, "bench").as_bytes());
                        if conn.write(&frame).await.is_err() {
                            member.errors += 1;
                            return member;
                        }
                        // A bit per user: ten thousand members each keeping ten thousand
                        // bools was 100 MB of pages the generator faulted in mid-run.
                        let mut known = vec![0u64; sessions.div_ceil(64)];
                        let mut missing = sessions;
                        let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
                        while missing > 0 {
                            let read = tokio::time::timeout_at(
                                deadline,
                                conn.read_frames(|opcode, data| {
                                    if opcode != TEXT {
                                        return;
                                    }
                                    if data.starts_with(PRESENCE) {
                                        member.presence_msgs += 1;
                                        member.presence_bytes += data.len() as u64;
                                    } else if data.starts_with(JOINED) {
                                        member.reply_bytes += data.len() as u64;
                                    } else {
                                        return;
                                    }
                                    for user in users(data).filter(|&user| user < sessions) {
                                        let (word, bit) = (&mut known[user / 64], 1u64 << (user % 64));
                                        if *word & bit == 0 {
                                            *word |= bit;
                                            missing -= 1;
                                        }
                                    }
                                }),
                            )
                            .await;
                            if !matches!(read, Ok(Ok(_))) {
                                member.errors += 1;
                                return member;
                            }
                        }
                        member.done_at = Some(Instant::now());
                        member.conn = Some(conn);
                        member
                    })
                })
                .collect();
            let mut members = Vec::with_capacity(sessions);
            for task in tasks {
                members.push(task.await.map_err(io::Error::other)?);
            }
            let cpu_after = pid.and_then(proc_stat::cpu_times);
            let rss_after = pid.and_then(proc_stat::rss_bytes);
            for member in &mut members {
                drop(member.conn.take());
            }
            let done = members.iter().filter(|m| m.done_at.is_some()).count() as u64;
            let last = members.iter().filter_map(|m| m.done_at).max();
            let window_secs = last.map_or(0.0, |at| at.duration_since(started).as_secs_f64());
            let (server_cpu_s, server_kernel_s) = proc_stat::spent(cpu_before, cpu_after);
            let presence_msgs: u64 = members.iter().map(|m| m.presence_msgs).sum();
            Ok(Outcome {
                measured: done,
                window_secs,
                msg_per_s: if window_secs > 0.0 {
                    done as f64 / window_secs
                } else {
                    0.0
                },
                server_cpu_s,
                server_kernel_s,
                msg_per_cpu_s: server_cpu_s.filter(|s| *s > 0.0).map(|s| done as f64 / s),
                sent: sessions as u64,
                received: done,
                expected: sessions as u64,
                errors: members.iter().map(|m| m.errors).sum::<u64>(),
                rss_per_conn: rss_before
                    .zip(rss_after)
                    .map(|(b, a)| (a.saturating_sub(b)) as f64 / sessions as f64),
                presence_msgs: Some(presence_msgs),
                presence_bytes: Some(members.iter().map(|m| m.presence_bytes).sum()),
                reply_bytes: Some(members.iter().map(|m| m.reply_bytes).sum()),
                ..Outcome::default()
            })
        })
        .await
}

/// The user numbers named in `text`: every JSON string `"u<digits>"` (the load
/// generator's users are `u0`, `u1`, …; no other string of tether's looks like one).
fn users(text: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let quote_u = memchr::memmem::Finder::new(b"\"u");
    let mut at = 0;
    std::iter::from_fn(move || loop {
        // In a list the next name follows `,"` at once: no search (a 10,000-member
        // join is a gigabyte of such lists, and the generator must keep up with it).
        let start = if text[at..].starts_with(b",\"u") {
            at + 3
        } else {
            at + quote_u.find(&text[at..])? + 2
        };
        let len = text[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        at = start + len;
        // `"user"` and the like are not numbers; nine digits is more than any run opens.
        if len == 0 || len > 9 || text.get(at) != Some(&b'"') {
            continue;
        }
        at += 1;
        return Some(
            text[start..start + len]
                .iter()
                .fold(0, |n, d| n * 10 + usize::from(d - b'0')),
        );
    })
}

#[cfg(test)]
mod tests {
    use super::users;

    #[test]
    fn user_numbers_in_every_presence_format_and_in_replies() {
        let one = br#"{"v":"1.0","e":"sys.presence","p":{"room":"bench","user":"u12","state":"joined"}}"#;
        assert_eq!(users(one).collect::<Vec<_>>(), [12]);
        let diff = br#"{"v":"1.0","e":"sys.presence","p":{"room":"bench","changes":[{"user":"u3","state":"joined"},{"user":"u40","state":"joined"}]}}"#;
        assert_eq!(users(diff).collect::<Vec<_>>(), [3, 40]);
        let lists =
            br#"{"v":"1.0","e":"sys.presence","p":{"room":"bench","joined":["u3","u40"],"away":["u5"]}}"#;
        assert_eq!(users(lists).collect::<Vec<_>>(), [3, 40, 5]);
        let reply =
            br#"{"v":"1.0","e":"joined","p":{"room":"bench","members":["u0","u1","u7"]},"c":"0","s":1}"#;
        assert_eq!(users(reply).collect::<Vec<_>>(), [0, 1, 7]);
        assert_eq!(users(br#"{"user":"ux","u":"u5x"}"#).count(), 0);
    }
}
