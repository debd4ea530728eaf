//! Payloads serialized once and sent many times (`EncodedPayload`,
//! `Context::reply_encoded`, `MemberList::encoded`), against the real server on tokio:
//! the reply reaches a JSON and a MessagePack client as the same value with its
//! request's correlation id and a sequence number; a room's member list makes its
//! reply once per list and payload type, again after the room changes; a payload that
//! does not serialize is the handler's error (4199 to the client) and is not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use adapter_tokio::{App, Context, EncodedPayload, HandlerError, MemberList};
use serde_json::{json, Value};
use tether_tests::client::{recv, send, session, with_codec, Conn};
use tether_tests::harness::{self, ServerRuntime};
use tether_tests::Codec;

/// The `who` reply: a room's users, made of the shared member list.
#[derive(serde::Serialize)]
struct Who<'a> {
    room: &'a str,
    users: Vec<&'a str>,
}

/// Another payload type made of the same list: its users counted.
#[derive(serde::Serialize)]
struct Count {
    count: usize,
}

/// The suite's app with `who` (the member list, encoded once per list), `count` (a
/// second payload type of the same list) and `broken` (a payload that does not
/// serialize); `makes` counts the payloads made.
fn app(makes: Arc<AtomicUsize>) -> App {
    let (who_makes, count_makes) = (makes.clone(), makes);
    tether_tests::suite::app()
        .on("who", move |ctx: Context| {
            let makes = who_makes.clone();
            async move {
                let (room, members) = room_list(&ctx).await?;
                let payload = members.encoded(|list| {
                    makes.fetch_add(1, Ordering::SeqCst);
                    Who {
                        room: &room,
                        users: list.iter().map(|m| m.user.as_str()).collect(),
                    }
                })?;
                ctx.reply_encoded("who", &payload);
                Ok(())
            }
        })
        .on("count", move |ctx: Context| {
            let makes = count_makes.clone();
            async move {
                let (_, members) = room_list(&ctx).await?;
                let payload = members.encoded(|list| {
                    makes.fetch_add(1, Ordering::SeqCst);
                    Count { count: list.len() }
                })?;
                ctx.reply_encoded("count", &payload);
                Ok(())
            }
        })
        .on("broken", |ctx: Context| async move {
            // JSON object keys must be strings: this map does not serialize.
            let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
            let payload = EncodedPayload::new(&bad)?;
            ctx.reply_encoded("never", &payload);
            Ok(())
        })
}

/// The room the request names and its shared member list.
async fn room_list(ctx: &Context) -> Result<(String, MemberList), HandlerError> {
    let room: String = ctx.payload()?;
    let members = ctx
        .server()
        .room_presence_shared(&room)
        .await
        .map_err(HandlerError::internal)?;
    Ok((room, members))
}

/// A session of `name` in `codec` that joined `room`.
async fn member(addr: std::net::SocketAddr, codec: Codec, name: &str, room: &str) -> Conn {
    let (mut conn, _) = with_codec(codec, session(addr, name)).await;
    send(&mut conn, "join", json!(room), Some("j")).await;
    assert_eq!(recv(&mut conn).await["e"], "joined");
    conn
}

/// Sends `event` with `payload` and correlation id `c`; the answer.
async fn ask(conn: &mut Conn, event: &str, payload: Value, c: &str) -> Value {
    send(conn, event, payload, Some(c)).await;
    loop {
        let env = recv(conn).await;
        if env["c"] == c {
            return env;
        }
    }
}

#[tokio::test]
async fn an_encoded_reply_reaches_both_codecs_and_a_list_is_encoded_once_per_change() {
    let makes = Arc::new(AtomicUsize::new(0));
    let server = harness::start(ServerRuntime::Tokio, app(makes.clone())).await;
    let mut ann = member(server.addr, Codec::Json, "ann", "r").await;
    let mut bob = member(server.addr, Codec::MsgPack, "bob", "r").await;

    let want = json!({"room": "r", "users": ["ann", "bob"]});
    let to_ann = ask(&mut ann, "who", json!("r"), "w1").await;
    assert_eq!((&to_ann["e"], &to_ann["p"]), (&json!("who"), &want), "{to_ann}");
    assert!(to_ann["s"].as_u64().is_some(), "a stream message: {to_ann}");
    let to_bob = ask(&mut bob, "who", json!("r"), "w2").await;
    assert_eq!((&to_bob["e"], &to_bob["p"]), (&json!("who"), &want), "{to_bob}");
    assert_eq!(makes.load(Ordering::SeqCst), 1, "one list, one payload made");

    // Another payload type of the same list is made once too.
    for c in ["n1", "n2"] {
        let count = ask(&mut ann, "count", json!("r"), c).await;
        assert_eq!(count["p"], json!({"count": 2}), "{count}");
    }
    assert_eq!(makes.load(Ordering::SeqCst), 2, "one per payload type");

    // The room changes: a new list, made again.
    let _cy = member(server.addr, Codec::Json, "cy", "r").await;
    let after = ask(&mut bob, "who", json!("r"), "w3").await;
    assert_eq!(after["p"], json!({"room": "r", "users": ["ann", "bob", "cy"]}));
    assert_eq!(makes.load(Ordering::SeqCst), 3);
    // Gone before the server stops (it would wait for their closing handshakes).
    drop((ann, bob, _cy));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_payload_that_does_not_serialize_is_the_handlers_error() {
    let server = harness::start(ServerRuntime::Tokio, app(Arc::default())).await;
    let mut ann = member(server.addr, Codec::Json, "ann", "r").await;
    let answer = ask(&mut ann, "broken", json!(null), "b").await;
    assert_eq!(answer["e"], "sys.error", "{answer}");
    assert_eq!(answer["p"]["code"], 4199, "{answer}");
    // The session goes on.
    let echo = ask(&mut ann, "echo", json!(7), "e").await;
    assert_eq!(echo["p"], json!(7));
    drop(ann);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_encoded_reply_is_replayed_after_a_cut_as_it_was_first_sent() {
    let server = harness::start(ServerRuntime::Tokio, app(Arc::default())).await;
    let (mut ann, created) = session(server.addr, "ann").await;
    send(&mut ann, "join", json!("r"), Some("j")).await;
    let joined = recv(&mut ann).await;
    assert_eq!(joined["e"], "joined");
    let first = ask(&mut ann, "who", json!("r"), "w1").await;
    let second = ask(&mut ann, "who", json!("r"), "w2").await;
    assert_eq!(first["p"], second["p"], "one list");
    tether_tests::suite::drop_abruptly(ann);

    // Resumed from before the join: the stream again, each reply with its own `c`.
    let (mut ann, restored) = tether_tests::suite::resume(server.addr, "ann", &created, 0).await;
    assert_eq!(restored["e"], "sys.session.restored", "{restored}");
    for want in [&joined, &first, &second] {
        assert_eq!(&recv(&mut ann).await, want);
    }
    drop(ann);
    server.stop().await.unwrap();
}
