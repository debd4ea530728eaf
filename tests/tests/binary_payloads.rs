//! Byte payloads on a MessagePack connection reach a handler as bytes: `bin` on the
//! wire, a byte buffer in `Context::payload`, no base64 and no array of numbers; the
//! same type refuses a JSON array (4013). And back: bytes the server sends are `bin`
//! for a MessagePack client and an array of numbers for a JSON one, on every path: a
//! handler's reply and emit, room broadcasts, broadcasts to all but one, the server
//! handle's sends to a session and to a user, publications from another node (in
//! memory and over a real `redis-server`), and the replay of a session that moved to
//! another node through a shared session store (in memory and on Redis). The Rust
//! client sends bytes as `bin` on MessagePack. Against the real server on tokio.

use std::time::{Duration, Instant};

use adapter_tokio::{App, Context, InMemoryPubSub};
use ws_driver::Audience;
use ws_session::SessionId;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tether_tests::client::{recv, send, session, with_codec};
use tether_tests::harness::{self, ServerRuntime};
use tether_tests::Codec;
use tokio_tungstenite::tungstenite::Message;

/// Bytes that deserialize only from binary data (`deserialize_bytes`): anything else,
/// an array of numbers included, is refused.
#[derive(Debug, PartialEq)]
struct OnlyBytes(Vec<u8>);

impl<'de> Deserialize<'de> for OnlyBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OnlyBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("binary data")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<OnlyBytes, E> {
                Ok(OnlyBytes(v.to_vec()))
            }
        }
        deserializer.deserialize_bytes(V)
    }
}

#[derive(Deserialize)]
struct Upload {
    name: String,
    data: OnlyBytes,
}

#[derive(Serialize)]
struct UploadOut<'a> {
    name: &'a str,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

#[derive(Serialize)]
struct Download {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

fn app() -> App {
    tether_tests::suite::app()
        .on("upload", |ctx: Context| async move {
            let upload: Upload = ctx.payload()?;
            let sum: u64 = upload.data.0.iter().map(|&b| u64::from(b)).sum();
            ctx.reply(
                "uploaded",
                &json!({"name": upload.name, "len": upload.data.0.len(), "sum": sum}),
            )
        })
        .on("download", |ctx: Context| async move {
            ctx.reply(
                "file",
                &Download {
                    data: vec![1, 2, 250],
                },
            )?;
            ctx.emit("file", &Download { data: vec![9] })
        })
}

/// The `data` of the next `file` envelope, read from the raw frame with a type that
/// takes binary data only.
async fn next_file(conn: &mut tether_tests::client::Conn) -> Vec<u8> {
    let tether_tests::client::Conn::WebSocketMsgPack(ws) = conn else {
        panic!("a MessagePack connection");
    };
    use futures::StreamExt;
    #[derive(Deserialize)]
    struct File {
        data: OnlyBytes,
    }
    #[derive(Deserialize)]
    struct Env {
        e: String,
        p: Option<File>,
    }
    loop {
        let frame = tokio::time::timeout(tether_tests::client::WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        let Message::Binary(bytes) = frame else {
            panic!("a MessagePack connection got {frame:?}");
        };
        let env: Env = rmp_serde::from_slice(&bytes).unwrap();
        if env.e == "file" {
            return env.p.expect("a payload").data.0;
        }
    }
}

#[tokio::test]
async fn bytes_reach_the_handler_as_bytes_on_a_msgpack_connection() {
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    with_codec(Codec::MsgPack, async {
        let (mut ws, _) = session(server.addr, "ann").await;
        let data: Vec<u8> = (0..=255).collect();
        // The envelope with a `bin` payload, written with rmp-serde.
        #[derive(Serialize)]
        struct Env<'a> {
            v: &'a str,
            e: &'a str,
            c: &'a str,
            p: UploadOut<'a>,
        }
        let frame = rmp_serde::to_vec_named(&Env {
            v: "1.0",
            e: "upload",
            c: "u",
            p: UploadOut {
                name: "all",
                data: &data,
            },
        })
        .unwrap();
        // 256 bytes do not fit `bin 8`: `bin 16` (0xc5), length 0x0100, then the bytes.
        assert!(frame.windows(3).any(|w| w == [0xc5, 0x01, 0x00]));
        let tether_tests::client::Conn::WebSocketMsgPack(socket) = &mut ws else {
            panic!("a MessagePack connection");
        };
        futures::SinkExt::send(socket, Message::binary(frame))
            .await
            .unwrap();
        let reply = recv(&mut ws).await;
        assert_eq!(reply["e"], "uploaded", "{reply}");
        assert_eq!(reply["p"], json!({"name": "all", "len": 256, "sum": 255 * 128}));
    })
    .await;
    // On JSON the same bytes can only be an array of numbers: refused by the type.
    with_codec(Codec::Json, async {
        let (mut ws, _) = session(server.addr, "ann").await;
        send(
            &mut ws,
            "upload",
            json!({"name": "all", "data": [1, 2, 3]}),
            Some("u"),
        )
        .await;
        let error = recv(&mut ws).await;
        assert_eq!(
            (&error["e"], &error["p"]["code"]),
            (&json!("sys.error"), &json!(4013))
        );
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bytes_a_handler_sends_are_bin_for_a_msgpack_client_and_numbers_for_a_json_one() {
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    with_codec(Codec::MsgPack, async {
        let (mut ws, _) = session(server.addr, "ann").await;
        send(&mut ws, "download", json!(null), Some("d")).await;
        assert_eq!(next_file(&mut ws).await, [1, 2, 250], "the reply");
        assert_eq!(next_file(&mut ws).await, [9], "the emit");
    })
    .await;
    with_codec(Codec::Json, async {
        let (mut ws, _) = session(server.addr, "ann").await;
        send(&mut ws, "download", json!(null), Some("d")).await;
        assert_eq!(recv(&mut ws).await["p"]["data"], json!([1, 2, 250]));
        assert_eq!(recv(&mut ws).await["p"]["data"], json!([9]));
    })
    .await;
    server.stop().await.unwrap();
}

/// The suite's app with sends of bytes to a room and to all but the sender.
fn sharing_app() -> App {
    app()
        .on("share", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.to_room(&room, "file", &Download { data: vec![3, 4, 5] })?;
            ctx.reply("shared", &())
        })
        .on("share.all", |ctx: Context| async move {
            ctx.server()
                .to(Audience::All)
                .except(ctx.session_id())
                .emit("file", &Download { data: vec![6, 7] })?;
            ctx.reply("shared", &())
        })
}

/// The `data` of the next `file` envelope on a JSON connection.
async fn next_json_file(conn: &mut tether_tests::client::Conn) -> serde_json::Value {
    loop {
        let env = recv(conn).await;
        if env["e"] == "file" {
            return env["p"]["data"].clone();
        }
    }
}

/// A session of `name` speaking `codec`, and its id.
async fn session_in(
    codec: Codec,
    addr: std::net::SocketAddr,
    name: &str,
) -> (tether_tests::client::Conn, SessionId) {
    let (conn, created) = with_codec(codec, session(addr, name)).await;
    let id = SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap();
    (conn, id)
}

async fn join(conn: &mut tether_tests::client::Conn, room: &str) {
    send(conn, "join", json!(room), Some("j")).await;
    assert_eq!(recv(conn).await["e"], "joined");
}

#[tokio::test]
async fn broadcasts_and_handle_sends_carry_bytes_as_bin_to_msgpack_clients() {
    let server = harness::start(ServerRuntime::Tokio, sharing_app()).await;
    let (mut packed, packed_id) = session_in(Codec::MsgPack, server.addr, "ann").await;
    let (mut json, _) = session_in(Codec::Json, server.addr, "bob").await;
    let (mut other, _) = session_in(Codec::MsgPack, server.addr, "cy").await;
    join(&mut packed, "r").await;
    join(&mut json, "r").await;

    // A room broadcast: bin for the MessagePack member, numbers for the JSON one (the
    // sender), in the same broadcast.
    send(&mut json, "share", json!("r"), Some("s")).await;
    assert_eq!(next_file(&mut packed).await, [3, 4, 5], "room broadcast");
    assert_eq!(next_json_file(&mut json).await, json!([3, 4, 5]));

    // To all but the sender.
    send(&mut packed, "share.all", json!(null), Some("a")).await;
    assert_eq!(next_file(&mut other).await, [6, 7], "broadcast to all but one");
    assert_eq!(next_json_file(&mut json).await, json!([6, 7]));

    // The server handle, to a session and to a user. The sender of `share.all` was
    // left out: its next file is the handle's.
    let handle = &server.handle;
    handle
        .send(packed_id, "file", &Download { data: vec![8] })
        .unwrap();
    assert_eq!(next_file(&mut packed).await, [8], "ServerHandle::send");
    handle
        .send_to_user("cy", "file", &Download { data: vec![10, 11] })
        .unwrap();
    assert_eq!(
        next_file(&mut other).await,
        [10, 11],
        "ServerHandle::send_to_user"
    );
    handle
        .send_to_user("bob", "file", &Download { data: vec![12] })
        .unwrap();
    assert_eq!(next_json_file(&mut json).await, json!([12]));
    server.stop().await.unwrap();
}

/// Waits (10 s at most) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node A has no MessagePack client; node B has one and a JSON one in the room. What
/// A's application sends reaches B's MessagePack client as `bin`: A serializes it in
/// MessagePack too because the bus says another node has MessagePack connections.
async fn publications_from_another_node_keep_bytes(
    a: &tether_tests::harness::Running,
    b: &tether_tests::harness::Running,
) {
    let (mut packed, packed_id) = session_in(Codec::MsgPack, b.addr, "dee").await;
    let (mut json, _) = session_in(Codec::Json, b.addr, "eve").await;
    join(&mut packed, "far").await;
    join(&mut json, "far").await;
    a.handle
        .broadcast_room("far", "file", &Download { data: vec![20, 21] }, None)
        .unwrap();
    assert_eq!(next_file(&mut packed).await, [20, 21], "a room broadcast from A");
    assert_eq!(next_json_file(&mut json).await, json!([20, 21]));
    a.handle
        .send_to_user("dee", "file", &Download { data: vec![22] })
        .unwrap();
    assert_eq!(next_file(&mut packed).await, [22], "a send to a user from A");
    a.handle
        .send(packed_id, "file", &Download { data: vec![23] })
        .unwrap();
    assert_eq!(next_file(&mut packed).await, [23], "a send to a session from A");
    a.handle.broadcast("file", &Download { data: vec![24] }).unwrap();
    assert_eq!(next_file(&mut packed).await, [24], "a broadcast from A");
    assert_eq!(next_json_file(&mut json).await, json!([24]));
}

#[tokio::test]
async fn publications_from_another_node_in_memory_carry_bytes_as_bin() {
    let bus = InMemoryPubSub::new();
    let a = harness::start(ServerRuntime::Tokio, sharing_app().pubsub(bus.clone())).await;
    let b = harness::start(ServerRuntime::Tokio, sharing_app().pubsub(bus.clone())).await;
    let (_first, _) = session_in(Codec::MsgPack, b.addr, "early").await;
    // Node 0 is no node: true once any node said it has MessagePack connections.
    until("B tells the bus", || {
        ws_driver::PubSub::msgpack_elsewhere(&bus, 0)
    })
    .await;
    publications_from_another_node_keep_bytes(&a, &b).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn publications_from_another_node_over_redis_carry_bytes_as_bin() {
    use broker_redis::{RedisConfig, RedisPubSub};
    let redis = tether_tests::redis_server::RedisServer::start();
    let broker = || {
        let mut config = RedisConfig::new(&redis.url()).expect("a Redis URL");
        config.prefix = "bin".to_owned();
        RedisPubSub::start(config, adapter_tokio::TokioRuntime)
    };
    let (broker_a, broker_b) = (broker(), broker());
    let a = harness::start(ServerRuntime::Tokio, sharing_app().pubsub(broker_a.clone())).await;
    let b = harness::start(ServerRuntime::Tokio, sharing_app().pubsub(broker_b.clone())).await;
    until("the brokers connect", || {
        broker_a.status().connected && broker_b.status().connected
    })
    .await;
    let (_first, _) = session_in(Codec::MsgPack, b.addr, "early").await;
    until("A learns that B has MessagePack connections", || {
        broker_a.status().msgpack_nodes == 1
    })
    .await;
    // The room broadcast needs B subscribed to the room: join first, then wait.
    let (mut packed, _) = session_in(Codec::MsgPack, b.addr, "dee").await;
    join(&mut packed, "far").await;
    until("B subscribes to the room", || {
        redis.subscribers("bin:room:far") == 1
    })
    .await;
    drop(packed);
    publications_from_another_node_keep_bytes(&a, &b).await;
    // A node that connects later is told at once (B's answer to its question).
    let late = broker();
    until("a later broker learns it", || late.status().msgpack_nodes == 1).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A MessagePack client's session holds two unacknowledged messages with bytes, sent
/// by node A's server handle (the client read the first); its connection is lost and
/// it resumes on node B, which shares A's session store: B rebuilds the session from
/// the journal, and the replay has the bytes as `bin` (the journal kept the messages'
/// MessagePack form). A message after the move is `bin` too. `held` tells how many
/// messages the store holds for the session (its writes are asynchronous).
async fn a_moved_msgpack_session_replays_bytes_as_bin<F: std::future::Future<Output = usize>>(
    a: &tether_tests::harness::Running,
    b: &tether_tests::harness::Running,
    held: impl Fn(SessionId) -> F,
) {
    with_codec(Codec::MsgPack, async {
        let (mut conn, created) = session(a.addr, "fay").await;
        let id = SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap();
        a.handle
            .send(id, "file", &Download { data: vec![30, 31] })
            .unwrap();
        a.handle.send(id, "file", &Download { data: vec![32] }).unwrap();
        assert_eq!(next_file(&mut conn).await, [30, 31], "live, on A");
        tether_tests::suite::drop_abruptly(conn);
        let deadline = Instant::now() + Duration::from_secs(10);
        while held(id).await < 2 {
            assert!(Instant::now() < deadline, "the store never held both messages");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (mut conn, restored) = tether_tests::suite::resume(b.addr, "fay", &created, 0).await;
        assert_eq!(restored["e"], "sys.session.restored", "{restored}");
        assert_eq!(restored["p"]["replayed"], 2, "{restored}");
        assert_eq!(next_file(&mut conn).await, [30, 31], "replayed by B");
        assert_eq!(next_file(&mut conn).await, [32], "replayed by B");
        b.handle.send(id, "file", &Download { data: vec![33] }).unwrap();
        assert_eq!(next_file(&mut conn).await, [33], "after the move");
    })
    .await;
}

#[tokio::test]
async fn a_session_moved_through_a_shared_store_in_memory_replays_bytes_as_bin() {
    let store = adapter_tokio::InMemorySessionStore::default();
    let a = harness::start(ServerRuntime::Tokio, app().session_store(store.clone())).await;
    let b = harness::start(ServerRuntime::Tokio, app().session_store(store.clone())).await;
    let held = |id| {
        let n = store.record(id).map_or(0, |r| r.replay.len());
        async move { n }
    };
    a_moved_msgpack_session_replays_bytes_as_bin(&a, &b, held).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_session_moved_through_redis_replays_bytes_as_bin() {
    use broker_redis::{RedisConfig, RedisSessionStore, StoreOptions};
    let redis = tether_tests::redis_server::RedisServer::start();
    let store = || {
        let mut config = RedisConfig::new(&redis.url()).expect("a Redis URL");
        config.prefix = "binj".to_owned();
        RedisSessionStore::start(config, StoreOptions::default(), adapter_tokio::TokioRuntime)
    };
    let a = harness::start(ServerRuntime::Tokio, app().session_store(store())).await;
    let b = harness::start(ServerRuntime::Tokio, app().session_store(store())).await;
    let peek = store();
    let held = |id| {
        let peek = peek.clone();
        async move {
            let record = peek.peek(id).await.ok().flatten();
            record.map_or(0, |(_, r)| r.replay.len())
        }
    };
    a_moved_msgpack_session_replays_bytes_as_bin(&a, &b, held).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// The Rust client asking for MessagePack sends bytes as `bin`: the handler's
/// bytes-only type takes them (it refuses the array of numbers a JSON serialization
/// makes, as the JSON case shows), in a query and in a plain send.
#[tokio::test]
async fn the_rust_client_sends_bytes_as_bin_on_msgpack() {
    use adapter_tokio::{Client, ClientOptions};
    let (uploaded_tx, mut uploaded) = futures::channel::mpsc::unbounded::<usize>();
    let app = app().on("upload.quiet", move |ctx: Context| {
        let uploaded_tx = uploaded_tx.clone();
        async move {
            let upload: Upload = ctx.payload()?;
            let _ = uploaded_tx.unbounded_send(upload.data.0.len());
            Ok(())
        }
    });
    let server = harness::start(ServerRuntime::Tokio, app).await;
    let url = format!("ws://{}/ws", server.addr);
    let data: Vec<u8> = (0..=255).collect();
    let upload = UploadOut {
        name: "all",
        data: &data,
    };
    let options = ClientOptions::with_credential("user:ann").with_codec(Codec::MsgPack);
    let client = Client::start(&url, options).unwrap();
    let reply = client.inner().query("upload", &upload, None).await.unwrap();
    assert_eq!(&*reply.event, "uploaded", "{reply:?}");
    assert_eq!(
        reply.payload_as::<serde_json::Value>().unwrap(),
        json!({"name": "all", "len": 256, "sum": 255 * 128})
    );
    client.inner().send("upload.quiet", &upload).await.unwrap();
    let len = tokio::time::timeout(
        tether_tests::client::WAIT,
        futures::StreamExt::next(&mut uploaded),
    )
    .await
    .expect("in time");
    assert_eq!(len, Some(256));
    client
        .inner()
        .close(ws_proto::CloseCode::NORMAL, "bye")
        .await
        .unwrap();

    // The same client on JSON: bytes are numbers there, which the type refuses.
    let options = ClientOptions::with_credential("user:ann").with_codec(Codec::Json);
    let client = Client::start(&url, options).unwrap();
    let refused = client.inner().query("upload", &upload, None).await;
    assert!(
        matches!(&refused, Err(adapter_tokio::ClientError::Query(_))),
        "{refused:?}"
    );
    client
        .inner()
        .close(ws_proto::CloseCode::NORMAL, "bye")
        .await
        .unwrap();
    server.stop().await.unwrap();
}

/// What a MessagePack client is sent while it is away — no MessagePack connection open
/// on the node at all — keeps its bytes as `bin` in the replay: its suspended session
/// counts as a MessagePack recipient, not only open connections.
#[tokio::test]
async fn bytes_sent_while_the_only_msgpack_client_is_away_replay_as_bin() {
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    with_codec(Codec::MsgPack, async {
        let (conn, created) = session(server.addr, "gus").await;
        let id = SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap();
        tether_tests::suite::drop_abruptly(conn);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server
            .handle
            .sessions()
            .await
            .iter()
            .any(|s| s.id == id && s.online)
        {
            assert!(Instant::now() < deadline, "the session was never suspended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server
            .handle
            .send(id, "file", &Download { data: vec![40, 41] })
            .unwrap();
        let (mut conn, restored) = tether_tests::suite::resume(server.addr, "gus", &created, 0).await;
        assert_eq!(restored["e"], "sys.session.restored", "{restored}");
        assert_eq!(next_file(&mut conn).await, [40, 41], "replayed as bin");
    })
    .await;
    server.stop().await.unwrap();
}

/// A server request's payload keeps its bytes as `bin` for a MessagePack client
/// (`ServerHandle::request`), as every other send does.
#[tokio::test]
async fn a_server_request_carries_bytes_as_bin_to_a_msgpack_client() {
    use futures::StreamExt;
    #[derive(Deserialize)]
    struct Asked {
        event: String,
        payload: AskedFile,
    }
    #[derive(Deserialize)]
    struct AskedFile {
        data: OnlyBytes,
    }
    #[derive(Deserialize)]
    struct Env {
        e: String,
        p: Option<Asked>,
    }
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    with_codec(Codec::MsgPack, async {
        let (conn, id) = session_in(Codec::MsgPack, server.addr, "hal").await;
        let handle = server.handle.clone();
        let asking = tokio::spawn(async move {
            handle
                .request(
                    id,
                    "ask",
                    &Download { data: vec![50, 51] },
                    Duration::from_secs(10),
                )
                .await
        });
        let tether_tests::client::Conn::WebSocketMsgPack(mut ws) = conn else {
            panic!("a MessagePack connection");
        };
        loop {
            let frame = tokio::time::timeout(tether_tests::client::WAIT, ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("a frame");
            let Message::Binary(bytes) = frame else {
                panic!("a MessagePack connection got {frame:?}");
            };
            let env: Env = rmp_serde::from_slice(&bytes).unwrap();
            if env.e == "sys.request" {
                let asked = env.p.expect("a payload");
                assert_eq!(asked.event, "ask");
                assert_eq!(asked.payload.data.0, [50, 51], "bin");
                break;
            }
        }
        asking.abort();
    })
    .await;
    server.stop().await.unwrap();
}
