//! Byte payloads on a MessagePack connection reach a handler as bytes: `bin` on the
//! wire, a byte buffer in `Context::payload`, no base64 and no array of numbers; the
//! same type refuses a JSON array (4013). And back: a handler's reply with bytes is
//! `bin` for a MessagePack client, an array of numbers for a JSON one. Against the
//! real server on tokio.

use adapter_tokio::{App, Context};

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
