//! A client of the chat example (`cargo run -p adapter-tokio --example chat`) on smol
//! or async-std: it joins a room, says a few lines, prints what is said there, and
//! leaves. One body, two runtimes: only the client type differs.
//!
//! ```text
//! cargo run -p adapter-async-std --example chat_client_async -- smol ws://127.0.0.1:8080/ws carol lobby
//! cargo run -p adapter-async-std --example chat_client_async -- async-std ws://127.0.0.1:8080/ws dan lobby
//! ```

use std::time::Duration;

use adapter_async_std::{AsyncStdClient, ClientError, ClientOptions, SmolClient};
use serde_json::{json, Value};
use ws_driver::client::Client;
use ws_proto::CloseCode;

fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let runtime = args.next().unwrap_or_else(|| "smol".to_owned());
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    let name = args.next().unwrap_or_else(|| "async-user".to_owned());
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());
    let options = ClientOptions::with_credential(name);
    match runtime.as_str() {
        "smol" => smol::block_on(async {
            let client = SmolClient::connect(&url, options).await?;
            chat(&client, &room, smol::Timer::after(Duration::from_millis(200))).await
        }),
        "async-std" => async_std::task::block_on(async {
            let client = AsyncStdClient::connect(&url, options).await?;
            chat(&client, &room, async_std::task::sleep(Duration::from_millis(200))).await
        }),
        other => panic!("unknown runtime {other:?}: smol or async-std"),
    }
}

/// Joins `room`, says two lines, waits `pause` for them to come back, leaves.
async fn chat(client: &Client, room: &str, pause: impl std::future::Future) -> Result<(), ClientError> {
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
    for line in ["hello from the async-io family", "sessions outlive connections"] {
        client
            .query("chat.send", &json!({ "room": room, "text": line }), None)
            .await?;
    }
    pause.await;
    client.query("chat.leave", &json!({ "room": room }), None).await?;
    client.close(CloseCode::NORMAL, "bye").await
}
