//! One node of several sharing rooms (and, with `sessions`, sessions) through Redis, as
//! a process of its own, for the tests that run nodes as separate OS processes
//! (`tests/tests/redis_nodes.rs`, `tests/tests/redis_session_nodes.rs`).
//!
//! ```text
//! redis_node REDIS_URL PREFIX [sessions|alone]
//! ```
//!
//! Serves the suite's app (with `shout`: a broadcast to everyone) on a free loopback
//! port, prints `listening ADDRESS` once it accepts, and stops when its standard input
//! closes or on SIGTERM (gracefully: with `sessions`, it hands its sessions over).
//!
//! With `alone` the node does not use Redis at all (a one-node baseline for
//! `room_bench`). With `sessions` the node keeps its sessions in Redis (`RedisSessionStore`), so that
//! any node resumes them, and serves two more events: `tick` (payload `n`: sends the
//! message `tick` with `n` in the session stream, then replies `tick.ok`) and `stream`
//! (payload `[count, every_ms]`: sends `count` messages `streamed` 0, 1, … to the
//! session, one every `every_ms`, from a task of its own).

use std::io::{BufRead, Write};
use std::time::Duration;

use adapter_tokio::{Context, TokioRuntime};
use broker_redis::{RedisConfig, RedisPubSub, RedisSessionStore, StoreOptions};

const USAGE: &str = "usage: redis_node REDIS_URL PREFIX [sessions|alone]";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect(USAGE);
    let prefix = args.next().expect(USAGE);
    let (sessions, alone) = match args.next().as_deref() {
        None => (false, false),
        Some("sessions") => (true, false),
        Some("alone") => (false, true),
        Some(_) => panic!("{USAGE}"),
    };
    let mut config = RedisConfig::new(&url).expect("a Redis URL");
    config.prefix = prefix;
    // Tests that need a short room history set it here.
    if let Ok(len) = std::env::var("REDIS_NODE_HISTORY_LEN") {
        config.history_len = len.parse().expect("REDIS_NODE_HISTORY_LEN: a number");
    }
    let broker = RedisPubSub::start(config.clone(), TokioRuntime);
    let mut app = tether_tests::suite::app().on("shout", |ctx: Context| async move {
        let text: String = ctx.payload()?;
        ctx.broadcast("shouted", &text)?;
        ctx.reply("shout.ok", &())
    });
    if !alone {
        app = app.pubsub(broker.clone());
    }
    if sessions {
        let store = RedisSessionStore::start(config, StoreOptions::default(), TokioRuntime);
        app = app
            .session_store(store)
            .on("tick", |ctx: Context| async move {
                let n: u64 = ctx.payload()?;
                ctx.session().send("tick", &n)?;
                ctx.reply("tick.ok", &n)
            })
            .on("flood", |ctx: Context| async move {
                // Many room messages from one request (a client may send only 50 a
                // second): `said` texts m{from}.. to the room's others.
                let (room, from, count): (String, u64, u64) = ctx.payload()?;
                for i in from..from + count {
                    let said = serde_json::json!({ "user": ctx.user_id().as_str(), "text": format!("m{i}") });
                    ctx.to_room_others(&room, "said", &said)?;
                }
                ctx.reply("flood.ok", &count)
            })
            .on("stream", |ctx: Context| async move {
                let (count, every): (u64, u64) = ctx.payload()?;
                let session = ctx.session();
                tokio::spawn(async move {
                    for i in 0..count {
                        if session.send("streamed", &i).is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(every)).await;
                    }
                });
                ctx.reply("stream.ok", &count)
            });
    }
    let server = adapter_tokio::Server::bind("127.0.0.1:0", "/ws", app)
        .await
        .expect("bind");
    while !alone && !broker.status().connected {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = std::io::stdout();
    writeln!(out, "listening {}", server.local_addr().expect("an address")).expect("stdout");
    out.flush().expect("stdout");
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await;
    };
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    let stop = async move {
        tokio::select! {
            () = stdin_closed => {}
            _ = terminate.recv() => {}
        }
    };
    server.run_until(stop).await.expect("the server ran");
    // Not waiting for the thread blocked on standard input.
    std::process::exit(0);
}
