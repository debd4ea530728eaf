//! The chat: tether's main example, and the project's main job.
//!
//! ```text
//! cargo run --release -p adapter-tokio --example chat            # http://127.0.0.1:8080
//! cargo run --release -p adapter-tokio --example chat -- 0.0.0.0:9000
//! # several nodes sharing rooms through Redis, one command per node:
//! cargo run --release -p adapter-tokio --example chat -- --redis redis://127.0.0.1:6379 127.0.0.1:8080
//! cargo run --release -p adapter-tokio --example chat -- --redis redis://127.0.0.1:6379 127.0.0.1:8081
//! # HTTPS and wss:// with a PEM certificate chain and key:
//! cargo run --release -p adapter-tokio --example chat -- --tls-cert cert.pem --tls-key key.pem 0.0.0.0:8443
//! # at most 10,000 connections at once (503 with Retry-After past it; no bound by default):
//! cargo run --release -p adapter-tokio --example chat -- --max-connections 10000
//! # permessage-deflate for the browsers (off by default: ~170 KB more per connection):
//! cargo run --release -p adapter-tokio --example chat -- --deflate
//! ```
//!
//! With `--redis`, rooms and messages work across nodes (broker-redis), and sessions
//! live in Redis too (`RedisSessionStore`): a page whose connection lands on another
//! node (a load balancer, a node that stopped or died) resumes its session there with
//! the messages it missed. A node stopped with Ctrl-C or SIGTERM hands its sessions
//! over (close 4116: the pages resume on another node at once). Presence
//! (`chat.presence`, the members listed in `chat.joined`) is per node.
//!
//! `/` is a page where a person picks a name, joins and leaves rooms, sees who is there
//! and talks; `/tether-client.js` is the page's protocol client, the `tether-client`
//! package of `clients/js` (with resume: cut the network for ten seconds and the
//! missed messages arrive when it comes back);
//! `/ws` is the tether endpoint, mounted on the same axum router as the page
//! (detached mode); `/metrics` is the server's metrics in the Prometheus text format
//! (with `--redis`, the broker's and the session store's too).
//!
//! The chat protocol on top of tether's envelope (see `docs/PROTOCOL.md`):
//! - `chat.join {room}` → reply `chat.joined {room, members, away}` (the users in the
//!   room connected now, and those whose sessions are all suspended);
//! - `chat.leave {room}` → reply `chat.left {room}`. Leaving a room the session is not
//!   in is answered with `sys.error` 4201 (`NOT_IN_ROOM`, as `chat.send` to such a
//!   room) and nobody is told anything;
//! - `chat.send {room, text}` → reply `chat.sent {room}`; every member, the sender too,
//!   gets `chat.message {room, user, text, ts}`;
//! - a room name has 1 to 64 characters, none of them control or text-direction
//!   characters (else `sys.error` 4203, `BAD_ROOM`, for every request naming a room);
//!   a text 1 to 2000 characters, no control characters but newline and tab (else
//!   4202, `BAD_TEXT`). A name that cannot be a room's is never echoed back;
//! - presence is tether's (`App::presence`): the members of a room get
//!   `chat.presence {room, joined: [user, …], left, away, online}` (empty lists left
//!   out), what changed in the room within 50 ms in one announcement
//!   (`Presence::flush_interval`), each user once in the list of where it now stands:
//!   `joined`, `left`, `away` (every session of the user lost its connection; it may
//!   come back) or `online`; once per user across tabs, only for real changes,
//!   volatile. A session that expires or is closed has left its rooms.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_tokio::{
    mount, prometheus_route_with, serve_router, tls, App, Context, EngineConfig, HandlerError, Member,
    Presence, TokioRuntime,
};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use broker_redis::{RedisConfig, RedisMembership, RedisPubSub, RedisSessionStore, StoreOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

const PAGE: &str = include_str!("index.html");
/// The browser client: the `clients/js` package, served as is (no build step).
const CLIENT: &str = include_str!("../../../clients/js/src/index.js");

#[derive(Deserialize)]
struct RoomRequest {
    room: String,
}

/// The answer to `chat.join`: `{room, members: [user, …], away: [user, …]}`, who is
/// connected and who is not, each sorted by name.
#[derive(Serialize)]
struct Joined<'a> {
    room: &'a str,
    members: Names<'a>,
    away: Names<'a>,
}

/// The names of the members of `list` that are `online` (or not), serialized as they
/// are read: a large room's reply needs no list of its own.
struct Names<'a> {
    list: &'a [Member],
    online: bool,
}

impl Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names = self.list.iter().filter(|m| m.online == self.online);
        serializer.collect_seq(names.map(|m| m.user.as_str()))
    }
}

#[derive(Deserialize)]
struct SendRequest {
    room: String,
    text: String,
}

/// Application error codes of the chat (4200 and up are the application's).
const NOT_IN_ROOM: u16 = 4201;
const BAD_TEXT: u16 = 4202;
const BAD_ROOM: u16 = 4203;

fn check_room(room: &str) -> Result<(), HandlerError> {
    if room.is_empty() || room.chars().count() > 64 || room.chars().any(|c| c.is_control() || is_direction(c))
    {
        return Err(HandlerError::new(
            BAD_ROOM,
            "a room name has 1 to 64 characters, none of them control or text-direction characters",
        ));
    }
    Ok(())
}

/// Characters that reorder the text around them (bidirectional embeddings, overrides,
/// isolates and marks): in a name shown to others they can make it read as another.
fn is_direction(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// 1 to 2000 characters, not all blank; no control characters but newline and tab
/// (each would reach every member as a six-byte `\u00XX` escape).
fn check_text(text: &str) -> Result<(), HandlerError> {
    if text.trim().is_empty()
        || text.chars().count() > 2000
        || text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(HandlerError::new(
            BAD_TEXT,
            "a message has 1 to 2000 characters, no control characters but newline and tab",
        ));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A name is the credential of this demo: 1–32 of `[A-Za-z0-9_-]`. A real application
/// checks a signed token here.
fn authenticate(token: &str) -> Result<String, String> {
    let valid = (1..=32).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(token.to_owned())
    } else {
        Err("a name has 1 to 32 letters, digits, '_' or '-'".to_owned())
    }
}

fn app() -> App {
    App::new()
        .authenticate(|token: String, _info| async move { authenticate(&token) })
        // Presence is the library's: `chat.presence {room, joined: [user, …], left,
        // away, online}`, coalesced per room every 50 ms, once per user
        // across tabs, volatile, announced only when membership or connectivity really
        // changes.
        .presence(Presence {
            event: "chat.presence".to_owned(),
            ..Presence::default()
        })
        .on("chat.join", |ctx: Context| async move {
            let RoomRequest { room } = ctx.payload()?;
            check_room(&room)?;
            // `false`: the session was already in the room (nothing is announced).
            ctx.join(&room).await?;
            // Across nodes (with `--redis`) the list comes from Redis: when it cannot be
            // read, the join stands and the client is told the list failed (4199).
            // The shared list: a room's list is built once per change for everyone who
            // joins meanwhile, read here without a copy, and the reply made of it is
            // serialized once per list (a crowd joining gets a few dozen lists, not
            // one serialization per join).
            let members = ctx
                .server()
                .room_presence_shared(&room)
                .await
                .map_err(HandlerError::internal)?;
            let reply = members.encoded(|list| Joined {
                room: &room,
                members: Names { list, online: true },
                away: Names { list, online: false },
            })?;
            ctx.reply_encoded("chat.joined", &reply);
            Ok(())
        })
        .on("chat.leave", |ctx: Context| async move {
            let RoomRequest { room } = ctx.payload()?;
            check_room(&room)?;
            // `false`: the session was not in the room. It is an error, as sending there
            // is, and nothing is announced.
            if !ctx.leave(&room).await? {
                return Err(HandlerError::new(NOT_IN_ROOM, format!("you are not in `{room}`")));
            }
            ctx.reply("chat.left", &json!({ "room": room }))
        })
        .on("chat.send", |ctx: Context| async move {
            let SendRequest { room, text } = ctx.payload()?;
            check_room(&room)?;
            check_text(&text)?;
            // The engine's membership, not a copy in session data: it moves with the
            // session to another node (session data stays on the node that set it).
            let member = ctx
                .server()
                .session(ctx.session_id())
                .await
                .is_some_and(|me| me.rooms.iter().any(|r| **r == *room));
            if !member {
                return Err(HandlerError::new(NOT_IN_ROOM, format!("join `{room}` first")));
            }
            let message =
                json!({ "room": room, "user": ctx.user_id().as_str(), "text": text, "ts": now_ms() });
            ctx.to_room(&room, "chat.message", &message)?;
            ctx.reply("chat.sent", &json!({ "room": room }))
        })
}

/// The command line, in any order.
const USAGE: &str =
    "usage: chat [ADDRESS] [--redis URL] [--tls-cert PEM --tls-key PEM] [--max-connections N] [--deflate]

  ADDRESS            where to listen (default 127.0.0.1:8080)
  --redis URL        one node of several sharing rooms and sessions through Redis
  --tls-cert PEM     HTTPS and wss:// with this certificate chain ...
  --tls-key PEM      ... and this private key
  --max-connections N  at most N connections at once (503 with Retry-After past it)
  --deflate          negotiate permessage-deflate (off by default: ~170 KB per connection)";

struct Args {
    addr: SocketAddr,
    redis: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    max_connections: Option<usize>,
    deflate: bool,
}

fn args() -> Args {
    let (mut addr, mut redis, mut cert, mut key, mut max_connections) = (None, None, None, None, None);
    let mut deflate = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--deflate" => deflate = true,
            "--redis" => {
                redis = Some(
                    args.next()
                        .expect("--redis needs a URL like redis://127.0.0.1:6379"),
                )
            }
            "--tls-cert" => cert = Some(PathBuf::from(args.next().expect("--tls-cert needs a PEM file"))),
            "--tls-key" => key = Some(PathBuf::from(args.next().expect("--tls-key needs a PEM file"))),
            "--max-connections" => {
                let n = args.next().and_then(|n| n.parse().ok());
                max_connections = Some(n.expect("--max-connections needs a number"));
            }
            _ => match arg.strip_prefix("--redis=") {
                Some(url) => redis = Some(url.to_owned()),
                None => match arg.parse() {
                    Ok(parsed) => addr = Some(parsed),
                    Err(_) => {
                        eprintln!("`{arg}` is not an address like 127.0.0.1:8080\n\n{USAGE}");
                        std::process::exit(2);
                    }
                },
            },
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => panic!("--tls-cert and --tls-key go together"),
    };
    Args {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        redis,
        tls,
        max_connections,
        deflate,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let Args {
        addr,
        redis,
        tls,
        max_connections,
        deflate,
    } = args();
    let mut app = app();
    if deflate {
        let mut config = EngineConfig::default();
        config.envelope.deflate = true;
        app = app.config(config);
    }
    if let Some(max) = max_connections {
        app = app.max_connections(max);
    }
    // With `--redis`, this process is one node of several: rooms and broadcasts reach
    // the members on every node through Redis, room members and presence are the
    // cluster's (a user on two nodes joins once), and any node resumes any session
    // (its journal is kept in Redis, with the resume window as time to live).
    let shared = match &redis {
        Some(url) => {
            let config = RedisConfig::new(url).unwrap_or_else(|err| panic!("--redis {url}: {err}"));
            let broker = RedisPubSub::start(config.clone(), TokioRuntime);
            let store = RedisSessionStore::start(config.clone(), StoreOptions::default(), TokioRuntime);
            let members = RedisMembership::start(config, TokioRuntime);
            app = app
                .pubsub(broker.clone())
                .session_store(store.clone())
                .membership(members);
            Some((broker, store))
        }
        None => None,
    };
    let broker = shared.as_ref().map(|(broker, _)| broker.clone());
    let hub = app.start(TokioRuntime);
    let router = Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response() }),
        )
        .route(
            "/tether-client.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], CLIENT).into_response()
            }),
        )
        .route("/ws", mount(hub.clone()))
        // The server's counters, gauges and handler latencies for Prometheus to scrape;
        // with `--redis`, the broker's and the session store's beside them.
        .route(
            "/metrics",
            prometheus_route_with(hub.handle().clone(), move || match &shared {
                Some((broker, store)) => vec![
                    broker.status().prometheus_registry(),
                    store.status().prometheus_registry(),
                ],
                None => Vec::new(),
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    if let (Some(url), Some(broker)) = (&redis, broker) {
        println!("rooms and sessions shared with the other nodes through {url}");
        // Say when Redis comes and goes (the node serves its own clients meanwhile).
        tokio::spawn(async move {
            let mut connected = None;
            loop {
                let status = broker.status();
                if connected != Some(status.connected) {
                    connected = Some(status.connected);
                    match (status.connected, &status.last_error) {
                        (true, _) => println!("connected to Redis"),
                        (false, Some(err)) => {
                            println!("Redis unreachable ({err}); serving this node's clients, reconnecting")
                        }
                        (false, None) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    // Not `axum::serve`: tether's server gives every request head the handshake
    // deadline and refuses bare-LF heads, as the standalone server does.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut server = serve_router(listener, router, &hub);
    let scheme = match &tls {
        Some((cert, key)) => {
            server = server.tls(tls::server_config_from_pem_files(cert, key)?);
            "https"
        }
        None => "http",
    };
    println!("chat on {scheme}://{local}");
    server
        .run_until(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await?;
    // The page's HTTP server has stopped; now close the WebSockets and wait for them, a
    // bounded while: 1001 on a single node; with `--redis` the sessions are handed over
    // (their journal written, then 4116: the pages resume on another node at once).
    let _ = tokio::time::timeout(Duration::from_secs(10), hub.handle().shutdown()).await;
    Ok(())
}
