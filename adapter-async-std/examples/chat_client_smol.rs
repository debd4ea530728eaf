//! A client of the chat example (`cargo run -p adapter-tokio --example chat`) on smol:
//! it joins a room, says a few lines, prints what is said there, and leaves. The same
//! code runs on async-std with `AsyncStdClient`.
//!
//! ```text
//! cargo run -p adapter-async-std --example chat_client_smol -- ws://127.0.0.1:8080/ws carol lobby
//! ```

use std::time::Duration;

use adapter_async_std::{ClientError, ClientOptions, SmolClient};
use serde_json::{json, Value};
use ws_proto::CloseCode;

fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    let name = args.next().unwrap_or_else(|| "smol-user".to_owned());
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());
    smol::block_on(async {
        // The chat authenticates by name, sent as `sys.auth` like the browser page does.
        let client = SmolClient::connect(&url, ClientOptions::with_credential(name.clone())).await?;
        client.on("chat.message", |msg| {
            if let Ok(m) = msg.payload_as::<Value>() {
                println!("[{}] {}: {}", m["room"], m["user"], m["text"]);
            }
        });
        let joined = client.query("chat.join", &json!({ "room": room }), None).await?;
        let members = joined
            .payload_as::<Value>()
            .map(|p| p["members"].clone())
            .unwrap_or_default();
        println!("joined {room}; here: {members}");
        for line in ["hello from smol", "sessions outlive connections"] {
            client
                .query("chat.send", &json!({ "room": room, "text": line }), None)
                .await?;
        }
        // Let our own messages come back through the room before leaving.
        smol::Timer::after(Duration::from_millis(200)).await;
        client.query("chat.leave", &json!({ "room": room }), None).await?;
        client.close(CloseCode::NORMAL, "bye").await?;
        Ok(())
    })
}
