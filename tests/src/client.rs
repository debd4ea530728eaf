//! The client side of the suite: tokio-tungstenite on the test's tokio runtime,
//! whatever runtime the server runs on, speaking the envelope codec the test runs with
//! ([`with_codec`]): JSON in text frames, or MessagePack in binary frames encoded and
//! decoded here with `rmp-serde` (not with tether's own codec).

use std::future::Future;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_proto::envelope::Codec;

tokio::task_local! {
    /// The codec the suite's connections ask for, per test.
    static CODEC: Codec;
}

/// Runs `test` with every [`connect`] in it asking for `codec`.
pub async fn with_codec<F: Future>(codec: Codec, test: F) -> F::Output {
    CODEC.scope(codec, test).await
}

/// The codec of the running test ([`with_codec`]); JSON outside one.
pub fn codec() -> Codec {
    CODEC.try_with(|codec| *codec).unwrap_or(Codec::Json)
}

/// The test client: tokio-tungstenite over a tokio TCP stream, and the codec its
/// upgrade agreed on. Derefs to the stream, for raw frames.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The envelope codec of this connection.
    pub codec: Codec,
}

impl From<WebSocketStream<MaybeTlsStream<TcpStream>>> for Ws {
    /// A connection upgraded without a subprotocol offer: JSON.
    fn from(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self {
            stream,
            codec: Codec::Json,
        }
    }
}

impl Deref for Ws {
    type Target = WebSocketStream<MaybeTlsStream<TcpStream>>;
    fn deref(&self) -> &Self::Target {
        &self.stream
    }
}

impl DerefMut for Ws {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.stream
    }
}

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Opens a WebSocket to `ws://addr/ws`, with `token` as a bearer credential, asking for
/// the test's codec; checks that the server agreed to it.
pub async fn connect(addr: SocketAddr, token: Option<&str>) -> Ws {
    let codec = codec();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if codec == Codec::MsgPack {
        let offer = "tether.v1.msgpack, tether.v1.json";
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offer.parse().unwrap());
    }
    let (stream, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    let answered = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    let expected = (codec == Codec::MsgPack).then_some("tether.v1.msgpack");
    assert_eq!(answered, expected, "the subprotocol the server picked");
    Ws { stream, codec }
}

/// The frame of `envelope` in `codec`.
pub fn frame(codec: Codec, envelope: &Value) -> Message {
    match codec {
        Codec::MsgPack => Message::binary(rmp_serde::to_vec_named(envelope).unwrap()),
        _ => Message::text(envelope.to_string()),
    }
}

/// The envelope in `message`, if it is one of `codec`'s kind of frame; panics on a
/// data frame of the other kind (the codec is fixed for the connection).
pub fn envelope_of(codec: Codec, message: &Message) -> Option<Value> {
    match (message, codec) {
        (Message::Text(text), Codec::Json) => Some(serde_json::from_str(text).unwrap()),
        (Message::Binary(bytes), Codec::MsgPack) => Some(rmp_serde::from_slice(bytes).unwrap()),
        (Message::Text(_) | Message::Binary(_), codec) => panic!("a {codec:?} connection got {message:?}"),
        _ => None,
    }
}

/// Sends one envelope.
pub async fn send(ws: &mut Ws, event: &str, payload: Value, c: Option<&str>) {
    let mut env = json!({ "v": "1.0", "e": event, "p": payload });
    if let Some(c) = c {
        env["c"] = json!(c);
    }
    let message = frame(ws.codec, &env);
    ws.send(message).await.unwrap();
}

/// The next envelope that is not a heartbeat.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an envelope in time")
            .expect("the connection is open")
            .expect("a frame");
        if let Some(env) = envelope_of(ws.codec, &msg) {
            if env["e"] != "sys.ping" {
                return env;
            }
        }
    }
}

/// Connects as `name` and returns the connection and `sys.session.created`'s payload.
pub async fn session(addr: SocketAddr, name: &str) -> (Ws, Value) {
    let mut ws = connect(addr, Some(&format!("user:{name}"))).await;
    let created = recv(&mut ws).await;
    assert_eq!(created["e"], "sys.session.created", "{created}");
    (ws, created["p"].clone())
}

/// Waits for the close frame, lets the client answer it (as any client does), and
/// returns its code.
pub async fn closed_with(ws: &mut Ws) -> u16 {
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => break 1005,
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("connection failed instead of closing: {err}"),
        }
    };
    // Polling on sends tungstenite's answering close frame and sees the server's EOF.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    code
}
