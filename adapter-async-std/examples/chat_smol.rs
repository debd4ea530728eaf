//! A chat-lite server on smol: rooms, messages to everyone in a room, presence.
//!
//! ```text
//! cargo run -p adapter-async-std --example chat_smol -- [ADDR]
//! ```
//!
//! Connect with a bearer token (`Authorization: Bearer <name>`, or `?token=<name>`);
//! the events (payloads in JSON):
//! - `join {"room": "lobby"}` → reply `joined {"room"}`; the others get
//!   `presence {"room", "user", "joined": true}`;
//! - `leave {"room": "lobby"}` → reply `left {"room"}`; the others get `presence {…,
//!   "joined": false}`;
//! - `say {"room": "lobby", "text": "hi"}` → every member, the sender too, gets
//!   `message {"room", "user", "text"}`; the sender's reply is `said {"room"}`.
//!
//! A dropped client that resumes its session (`sys.reconnect.request`) is still in
//! its rooms and gets what it missed: that is the engine's, not this example's.

use adapter_async_std::{App, Context, HandlerError, SmolServer};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

/// The longest message text accepted, in bytes.
const MAX_TEXT: usize = 2000;

fn app() -> App {
    App::new()
        // Any non-empty token is a user name: a demo, not an authenticator.
        .authenticate(|token: String, _info| async move { Ok(token) })
        .on("join", |ctx: Context| async move {
            let Room { room } = ctx.payload()?;
            if ctx.join(&room).await? {
                let presence = json!({ "room": room, "user": ctx.user_id().as_str(), "joined": true });
                ctx.to_room_others(&room, "presence", &presence)?;
            }
            ctx.reply("joined", &json!({ "room": room }))
        })
        .on("leave", |ctx: Context| async move {
            let Room { room } = ctx.payload()?;
            if ctx.leave(&room).await? {
                let presence = json!({ "room": room, "user": ctx.user_id().as_str(), "joined": false });
                ctx.to_room(&room, "presence", &presence)?;
            }
            ctx.reply("left", &json!({ "room": room }))
        })
        .on("say", |ctx: Context| async move {
            let Say { room, text } = ctx.payload()?;
            if text.len() > MAX_TEXT {
                return Err(HandlerError::new(
                    4201,
                    format!("text longer than {MAX_TEXT} bytes"),
                ));
            }
            let message = json!({ "room": room, "user": ctx.user_id().as_str(), "text": text });
            ctx.to_room(&room, "message", &message)?;
            ctx.reply("said", &json!({ "room": room }))
        })
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8082".to_owned());
    smol::block_on(async {
        let server = SmolServer::bind(addr, "/ws", app()).await?;
        eprintln!("chat on ws://{}/ws (smol)", server.local_addr()?);
        server.run().await
    })
}
