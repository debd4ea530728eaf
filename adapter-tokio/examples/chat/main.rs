//! The chat: tether's main example, and the project's main job.
//!
//! ```text
//! cargo run --release -p adapter-tokio --example chat            # http://127.0.0.1:8080
//! cargo run --release -p adapter-tokio --example chat -- 0.0.0.0:9000
//! ```
//!
//! `/` is a page where a person picks a name, joins and leaves rooms, sees who is there
//! and talks; `/tether-client.js` is the page's protocol client, the `tether-client`
//! package of `clients/js` (with resume: cut the network for ten seconds and the
//! missed messages arrive when it comes back);
//! `/ws` is the tether endpoint, mounted on the same axum router as the page
//! (detached mode).
//!
//! The chat protocol on top of tether's envelope (see `docs/PROTOCOL.md`):
//! - `chat.join {room}` → reply `chat.joined {room, members}`; others get
//!   `chat.presence {room, user, joined: true}`;
//! - `chat.leave {room}` → reply `chat.left {room}`; others get `chat.presence {…, joined: false}`;
//! - `chat.send {room, text}` → reply `chat.sent {room}`; every member, the sender too,
//!   gets `chat.message {room, user, text, ts}`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_tokio::{
    mount, serve_router, App, Context, HandlerError, ServerHandle, SessionEvent, SessionId, TokioRuntime,
};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

const PAGE: &str = include_str!("index.html");
/// The browser client: the `clients/js` package, served as is (no build step).
const CLIENT: &str = include_str!("../../../clients/js/src/index.js");

/// Who is in which room: room → session → user name. Sessions stay members while
/// suspended (a dropped phone is still "there" for the resume window).
#[derive(Default)]
struct Rooms {
    members: BTreeMap<String, HashMap<SessionId, String>>,
}

impl Rooms {
    fn users(&self, room: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .members
            .get(room)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        users.sort();
        users.dedup();
        users
    }
}

type Shared = Arc<Mutex<Rooms>>;

#[derive(Deserialize)]
struct RoomRequest {
    room: String,
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
    if room.is_empty() || room.chars().count() > 64 {
        return Err(HandlerError::new(BAD_ROOM, "a room name has 1 to 64 characters"));
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

fn app(rooms: Shared) -> App {
    let join_rooms = rooms.clone();
    let leave_rooms = rooms.clone();
    let send_rooms = rooms.clone();
    App::new()
        .authenticate(|token: String, _info| async move { authenticate(&token) })
        .on("chat.join", move |ctx: Context| {
            let rooms = join_rooms.clone();
            async move {
                let RoomRequest { room } = ctx.payload()?;
                check_room(&room)?;
                ctx.join(&room).await?;
                let user = ctx.user_id().as_str().to_owned();
                let members = {
                    let mut rooms = rooms.lock().expect("rooms lock");
                    rooms
                        .members
                        .entry(room.clone())
                        .or_default()
                        .insert(ctx.session_id(), user.clone());
                    rooms.users(&room)
                };
                ctx.to_room_others(
                    &room,
                    "chat.presence",
                    &json!({ "room": room, "user": user, "joined": true }),
                )?;
                ctx.reply("chat.joined", &json!({ "room": room, "members": members }))
            }
        })
        .on("chat.leave", move |ctx: Context| {
            let rooms = leave_rooms.clone();
            async move {
                let RoomRequest { room } = ctx.payload()?;
                ctx.leave(&room).await?;
                if let Some(members) = rooms.lock().expect("rooms lock").members.get_mut(&room) {
                    members.remove(&ctx.session_id());
                }
                let user = ctx.user_id().as_str();
                ctx.to_room_others(
                    &room,
                    "chat.presence",
                    &json!({ "room": room, "user": user, "joined": false }),
                )?;
                ctx.reply("chat.left", &json!({ "room": room }))
            }
        })
        .on("chat.send", move |ctx: Context| {
            let rooms = send_rooms.clone();
            async move {
                let SendRequest { room, text } = ctx.payload()?;
                if text.trim().is_empty() || text.chars().count() > 2000 {
                    return Err(HandlerError::new(BAD_TEXT, "a message has 1 to 2000 characters"));
                }
                let member = rooms
                    .lock()
                    .expect("rooms lock")
                    .members
                    .get(&room)
                    .is_some_and(|m| m.contains_key(&ctx.session_id()));
                if !member {
                    return Err(HandlerError::new(NOT_IN_ROOM, format!("join `{room}` first")));
                }
                let message =
                    json!({ "room": room, "user": ctx.user_id().as_str(), "text": text, "ts": now_ms() });
                ctx.to_room(&room, "chat.message", &message)?;
                ctx.reply("chat.sent", &json!({ "room": room }))
            }
        })
        .on_session(move |event: &SessionEvent, server: &ServerHandle| {
            // A session that expired or was closed has left its rooms: tell the others.
            let (SessionEvent::Expired { session, user } | SessionEvent::Closed { session, user }) = event
            else {
                return;
            };
            let mut rooms = rooms.lock().expect("rooms lock");
            for (room, members) in rooms.members.iter_mut() {
                if members.remove(session).is_some() {
                    let left = json!({ "room": room, "user": user.as_str(), "joined": false });
                    let _ = server.broadcast_room(room, "chat.presence", &left, None);
                }
            }
            rooms.members.retain(|_, members| !members.is_empty());
        })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()
        .expect("an address like 127.0.0.1:8080");
    let hub = app(Shared::default()).start(TokioRuntime);
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
        .route("/ws", mount(hub.clone()));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("chat on http://{}", listener.local_addr()?);
    // Not `axum::serve`: tether's server gives every request head the handshake
    // deadline and refuses bare-LF heads, as the standalone server does.
    serve_router(listener, router, &hub)
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The page's HTTP server has stopped; now close the WebSockets (1001) and wait for
    // them, a bounded while.
    let _ = tokio::time::timeout(Duration::from_secs(10), hub.handle().shutdown()).await;
    Ok(())
}
