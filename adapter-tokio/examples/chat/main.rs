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
//!   `chat.presence {room, user, joined: true}`, only when the session was not in the
//!   room yet (a repeated join is answered, not announced again);
//! - `chat.leave {room}` → reply `chat.left {room}`; others get `chat.presence {…, joined: false}`.
//!   Leaving a room the session is not in is answered with `sys.error` 4201
//!   (`NOT_IN_ROOM`, as `chat.send` to such a room) and nobody is told anything;
//! - `chat.send {room, text}` → reply `chat.sent {room}`; every member, the sender too,
//!   gets `chat.message {room, user, text, ts}`;
//! - a session that expires or is closed leaves its rooms: their members get
//!   `chat.presence {…, joined: false}`.
//!
//! Presence follows the engine's membership: `ctx.join` and `ctx.leave` answer whether
//! they changed it, and only a change is announced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// Who is in which room: room → session → user name, and the other way round,
/// session → its rooms. Sessions stay members while suspended (a dropped phone is still
/// "there" for the resume window).
///
/// The second map is what makes a session's end cheap: the hook looks up the session's
/// own rooms (at most `max_rooms_per_session`, 64 by default) instead of walking every
/// room of the server, which for many sessions ending together (a network outage, a
/// restart of a load balancer) would be sessions × rooms.
#[derive(Default)]
struct Rooms {
    members: BTreeMap<String, HashMap<SessionId, String>>,
    rooms_of: HashMap<SessionId, BTreeSet<String>>,
}

impl Rooms {
    fn add(&mut self, room: &str, session: SessionId, user: &str) {
        self.members
            .entry(room.to_owned())
            .or_default()
            .insert(session, user.to_owned());
        self.rooms_of.entry(session).or_default().insert(room.to_owned());
    }

    fn remove(&mut self, room: &str, session: SessionId) {
        if let Some(members) = self.members.get_mut(room) {
            members.remove(&session);
            if members.is_empty() {
                self.members.remove(room);
            }
        }
        if let Some(rooms) = self.rooms_of.get_mut(&session) {
            rooms.remove(room);
            if rooms.is_empty() {
                self.rooms_of.remove(&session);
            }
        }
    }

    /// Forgets `session`; returns the rooms it was in.
    fn remove_session(&mut self, session: SessionId) -> BTreeSet<String> {
        let rooms = self.rooms_of.remove(&session).unwrap_or_default();
        for room in &rooms {
            if let Some(members) = self.members.get_mut(room) {
                members.remove(&session);
                if members.is_empty() {
                    self.members.remove(room);
                }
            }
        }
        rooms
    }

    fn is_member(&self, room: &str, session: SessionId) -> bool {
        self.rooms_of
            .get(&session)
            .is_some_and(|rooms| rooms.contains(room))
    }

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
                // `false`: the session was already in the room; answer, announce nothing.
                let joined = ctx.join(&room).await?;
                let user = ctx.user_id().as_str();
                let members = {
                    let mut rooms = rooms.lock().expect("rooms lock");
                    rooms.add(&room, ctx.session_id(), user);
                    rooms.users(&room)
                };
                if joined {
                    ctx.to_room_others(
                        &room,
                        "chat.presence",
                        &json!({ "room": room, "user": user, "joined": true }),
                    )?;
                }
                ctx.reply("chat.joined", &json!({ "room": room, "members": members }))
            }
        })
        .on("chat.leave", move |ctx: Context| {
            let rooms = leave_rooms.clone();
            async move {
                let RoomRequest { room } = ctx.payload()?;
                // `false`: the session was not in the room. Announcing it would let anyone
                // post "left" into any room; it is an error, as sending there is.
                if !ctx.leave(&room).await? {
                    return Err(HandlerError::new(NOT_IN_ROOM, format!("you are not in `{room}`")));
                }
                rooms.lock().expect("rooms lock").remove(&room, ctx.session_id());
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
                    .is_member(&room, ctx.session_id());
                if !member {
                    return Err(HandlerError::new(NOT_IN_ROOM, format!("join `{room}` first")));
                }
                let message =
                    json!({ "room": room, "user": ctx.user_id().as_str(), "text": text, "ts": now_ms() });
                ctx.to_room(&room, "chat.message", &message)?;
                ctx.reply("chat.sent", &json!({ "room": room }))
            }
        })
        .on_session(move |event: SessionEvent, server: ServerHandle| {
            let rooms = rooms.clone();
            // Runs on the session's own worker, after its last handler, never on the hub:
            // many sessions ending at once do not hold up anyone's messages.
            async move {
                // A session that expired or was closed has left its rooms: tell the others.
                let (SessionEvent::Expired { session, user } | SessionEvent::Closed { session, user, .. }) =
                    event
                else {
                    return;
                };
                let left = rooms.lock().expect("rooms lock").remove_session(session);
                for room in left {
                    let presence = json!({ "room": room, "user": user.as_str(), "joined": false });
                    let _ = server.broadcast_room(&room, "chat.presence", &presence, None);
                }
            }
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
