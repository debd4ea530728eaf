//! A terminal client of the chat example, on the tokio tether client: it joins a
//! room, prints what is said there, and sends the lines typed on stdin (or, with
//! `--script`, a few fixed lines, then leaves). Connection states and session
//! outcomes are printed too: stop the network for a moment and watch it resume.
//!
//! ```text
//! cargo run -p adapter-tokio --example chat                                  # the server
//! cargo run -p adapter-tokio --example chat_client -- ws://127.0.0.1:8080/ws alice lobby
//! cargo run -p adapter-tokio --example chat_client -- ws://127.0.0.1:8080/ws bob lobby --script
//! ```
//!
//! Typed lines: `/join ROOM`, `/leave ROOM`, `/quit`; anything else is said in the
//! current room.

use std::io::BufRead;

use adapter_tokio::{Client, ClientError, ClientOptions, PresenceDiff, SessionOutcome, State};
use futures::StreamExt;
use serde_json::{json, Value};
use ws_proto::CloseCode;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let script = args.iter().any(|a| a == "--script");
    let mut positional = args.iter().filter(|a| !a.starts_with("--")).cloned();
    let url = positional
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    let name = positional.next().unwrap_or_else(|| "rustacean".to_owned());
    let mut room = positional.next().unwrap_or_else(|| "lobby".to_owned());

    // The chat authenticates by name, sent as `sys.auth` like the browser page does.
    let client = Client::start(&url, ClientOptions::with_credential(name.clone()))?;
    client.on("chat.message", |msg| {
        if let Ok(m) = msg.payload_as::<Value>() {
            println!(
                "[{}] {}: {}",
                m["room"].as_str().unwrap_or("?"),
                m["user"].as_str().unwrap_or("?"),
                m["text"].as_str().unwrap_or("")
            );
        }
    });
    client.on("chat.presence", |msg| {
        if let Ok(diff) = msg.payload_as::<PresenceDiff>() {
            for (state, entry) in diff.entries() {
                let state = serde_json::to_value(state).unwrap_or_default();
                println!(
                    "[{}] * {} {}",
                    diff.room,
                    entry.user,
                    state.as_str().unwrap_or("?")
                );
            }
        }
    });
    let mut states = client.states();
    tokio::spawn(async move {
        while let Some(state) = states.next().await {
            match state {
                State::Reconnecting { attempt, delay } => {
                    eprintln!("-- connection lost; attempt {attempt} in {delay:?}");
                }
                other => eprintln!("-- {other:?}"),
            }
        }
    });
    let mut sessions = client.sessions();
    tokio::spawn(async move {
        while let Some(outcome) = sessions.next().await {
            match outcome {
                SessionOutcome::Created(s) => eprintln!("-- session {} as {}", s.session_id, s.user_id),
                SessionOutcome::Restored { replayed, .. } => {
                    eprintln!("-- session restored, {replayed} missed messages follow")
                }
                SessionOutcome::NotRestored { reason, .. } => {
                    eprintln!(
                        "-- session NOT restored ({reason}): a new one began; rooms must be joined again"
                    )
                }
                _ => {}
            }
        }
    });
    client.connected().await?;
    join(&client, &room).await?;

    if script {
        for text in ["hello from the Rust client", "sessions outlive connections"] {
            say(&client, &room, text).await?;
        }
        client.query("chat.leave", &json!({ "room": room }), None).await?;
        client.close(CloseCode::NORMAL, "bye").await?;
        return Ok(());
    }

    // Lines from stdin on a thread of their own (stdin is blocking).
    let (tx, mut lines) = futures::channel::mpsc::unbounded::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.unbounded_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.next().await {
        let line = line.trim();
        let result = if let Some(next) = line.strip_prefix("/join ") {
            room = next.trim().to_owned();
            join(&client, &room).await
        } else if let Some(old) = line.strip_prefix("/leave ") {
            client
                .query("chat.leave", &json!({ "room": old.trim() }), None)
                .await
                .map(drop)
        } else if line == "/quit" {
            break;
        } else if !line.is_empty() {
            say(&client, &room, line).await
        } else {
            Ok(())
        };
        if let Err(err) = result {
            eprintln!("-- {err}");
        }
    }
    client.close(CloseCode::NORMAL, "bye").await
}

async fn join(client: &Client, room: &str) -> Result<(), ClientError> {
    let reply = client.query("chat.join", &json!({ "room": room }), None).await?;
    let members = reply
        .payload_as::<Value>()
        .map(|p| p["members"].clone())
        .unwrap_or_default();
    eprintln!("-- joined {room}; members: {members}");
    Ok(())
}

async fn say(client: &Client, room: &str, text: &str) -> Result<(), ClientError> {
    client
        .query("chat.send", &json!({ "room": room, "text": text }), None)
        .await
        .map(drop)
}
