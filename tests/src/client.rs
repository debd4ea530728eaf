//! The client side of the suite, on the test's tokio runtime whatever runtime the
//! server runs on, over one of three transports: WebSocket through tokio-tungstenite;
//! raw TCP through the few lines of framing below, written from docs/PROTOCOL.md
//! rather than with ws-proto's codec (so a fault in that codec is not mirrored
//! here); ws-driver's in-memory pair, served by the server's hub.
//! Over WebSocket it speaks the envelope codec the test runs with ([`with_codec`]):
//! JSON in text frames, or MessagePack in binary frames encoded and decoded here with
//! `rmp-serde` (not with tether's own codec).

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::poll_fn;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws_driver::client::{DialRequest, Dialer};
use ws_driver::transport::memory::MemoryDialer;
use ws_driver::transport::{BoxTransport, Transport};
use ws_driver::Hub;
use ws_proto::envelope::Codec;

use crate::harness::{ServerRuntime, TransportKind};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

tokio::task_local! {
    /// The codec the suite's WebSocket connections ask for, per test.
    static CODEC: Codec;
}

/// Runs `test` with every WebSocket [`connect`] in it asking for `codec`.
pub async fn with_codec<F: std::future::Future>(codec: Codec, test: F) -> F::Output {
    CODEC.scope(codec, test).await
}

/// The codec of the running test ([`with_codec`]); JSON outside one.
pub fn codec() -> Codec {
    CODEC.try_with(|codec| *codec).unwrap_or(Codec::Json)
}

/// Where the suite's client connects.
#[derive(Clone)]
pub enum Endpoint {
    /// `ws://addr/ws`.
    WebSocket(SocketAddr),
    /// A raw TCP port.
    Tcp(SocketAddr),
    /// A hub, reached in memory; the server's end runs on `runtime`.
    Memory {
        /// The server's hub.
        hub: Hub,
        /// The runtime its connection tasks run on.
        runtime: ServerRuntime,
    },
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::WebSocket(addr)
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(endpoint: &Endpoint) -> Self {
        endpoint.clone()
    }
}

impl Endpoint {
    /// The transport it is reached over.
    pub fn transport(&self) -> TransportKind {
        match self {
            Self::WebSocket(_) => TransportKind::WebSocket,
            Self::Tcp(_) => TransportKind::Tcp,
            Self::Memory { .. } => TransportKind::Memory,
        }
    }

    /// Its socket address; `None` in memory.
    pub fn socket(&self) -> Option<SocketAddr> {
        match self {
            Self::WebSocket(addr) | Self::Tcp(addr) => Some(*addr),
            Self::Memory { .. } => None,
        }
    }
}

/// What a connection received, whatever the transport.
#[derive(Debug)]
pub enum Received {
    /// A text message.
    Text(String),
    /// The server's close and its code (1005 for none).
    Close(u16),
    /// Anything else (a WebSocket ping, a binary message).
    Other,
}

/// A raw TCP connection after the preamble exchange.
pub struct TcpConn {
    /// The socket.
    pub stream: TcpStream,
    /// Our close went out.
    close_sent: bool,
}

/// The length-prefixed framing's kind bytes (docs/PROTOCOL.md, "Raw TCP").
const TEXT: u8 = 1;
const CLOSE: u8 = 8;

/// One frame: the payload's length (u32 BE), its kind, the payload.
pub fn tcp_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.push(kind);
    frame.extend_from_slice(payload);
    frame
}

/// A text frame of the raw TCP framing.
pub fn tcp_text(text: &str) -> Vec<u8> {
    tcp_frame(TEXT, text.as_bytes())
}

impl TcpConn {
    /// Connects and exchanges preambles.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Self::over(stream).await
    }

    /// Exchanges preambles (`TETHER` and version 1, each way) on a connected socket.
    pub async fn over(mut stream: TcpStream) -> Self {
        stream.write_all(b"TETHER\x01").await.unwrap();
        let mut preamble = [0; 7];
        stream
            .read_exact(&mut preamble)
            .await
            .expect("the server's preamble");
        assert_eq!(&preamble, b"TETHER\x01");
        Self {
            stream,
            close_sent: false,
        }
    }

    /// Reads one frame: its kind and payload; `None` at the end of the stream.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0; 5];
        self.stream.read_exact(&mut header).await.ok()?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((header[4], payload))
    }

    /// The next thing received (a close is answered); `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Received> {
        let (kind, payload) = self.read_frame().await?;
        Some(match kind {
            TEXT => Received::Text(String::from_utf8(payload).expect("UTF-8 text")),
            CLOSE => {
                // Answer it, as a client does.
                if !self.close_sent {
                    let _ = self
                        .stream
                        .write_all(&tcp_frame(CLOSE, &payload[..payload.len().min(2)]))
                        .await;
                    self.close_sent = true;
                }
                match payload[..] {
                    [hi, lo, ..] => Received::Close(u16::from_be_bytes([hi, lo])),
                    _ => Received::Close(1005),
                }
            }
            _ => Received::Other,
        })
    }
}

/// The suite's connection to the server under test.
pub enum Conn {
    /// tokio-tungstenite over a tokio TCP stream.
    WebSocket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    /// The same, on a connection that agreed on `tether.v1.msgpack`: envelopes go out
    /// as MessagePack in binary frames, and those received are handed on as their JSON
    /// text; a text frame from the server panics (the codec is fixed).
    WebSocketMsgPack(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    /// The raw TCP framing.
    Tcp(TcpConn),
    /// ws-driver's in-memory transport.
    Memory(BoxTransport),
}

impl Conn {
    /// The codec of its envelopes.
    pub fn codec(&self) -> Codec {
        match self {
            Conn::WebSocketMsgPack(_) => Codec::MsgPack,
            _ => Codec::Json,
        }
    }

    /// Sends one text message as it is (no envelope check); on a MessagePack
    /// connection a text that is JSON goes as its MessagePack form in a binary frame,
    /// any other as a text frame.
    pub async fn send_text(&mut self, text: String) {
        match self {
            Conn::WebSocket(ws) => ws.send(Message::text(text)).await.unwrap(),
            Conn::WebSocketMsgPack(ws) => {
                let message = match serde_json::from_str::<Value>(&text) {
                    Ok(value) => Message::binary(rmp_serde::to_vec_named(&value).unwrap()),
                    Err(_) => Message::text(text),
                };
                ws.send(message).await.unwrap();
            }
            Conn::Tcp(tcp) => tcp.stream.write_all(&tcp_text(&text)).await.unwrap(),
            Conn::Memory(transport) => {
                transport.feed_text(&text.into(), &[]).expect("open");
                poll_fn(|cx| transport.poll_flush(cx)).await.unwrap();
            }
        }
    }

    /// The next thing received; `None` once the connection has ended (or failed).
    pub async fn next(&mut self) -> Option<Received> {
        match self {
            Conn::WebSocket(ws) => match ws.next().await? {
                Ok(Message::Text(text)) => Some(Received::Text(text.to_string())),
                Ok(Message::Close(frame)) => Some(Received::Close(frame.map_or(1005, |f| u16::from(f.code)))),
                Ok(Message::Binary(bytes)) => panic!("a JSON connection got a binary frame: {bytes:?}"),
                Ok(_) => Some(Received::Other),
                Err(_) => None,
            },
            Conn::WebSocketMsgPack(ws) => match ws.next().await? {
                Ok(Message::Binary(bytes)) => {
                    let value: Value = rmp_serde::from_slice(&bytes).expect("a MessagePack envelope");
                    Some(Received::Text(value.to_string()))
                }
                Ok(Message::Text(text)) => panic!("a MessagePack connection got a text frame: {text}"),
                Ok(Message::Close(frame)) => Some(Received::Close(frame.map_or(1005, |f| u16::from(f.code)))),
                Ok(_) => Some(Received::Other),
                Err(_) => None,
            },
            Conn::Tcp(tcp) => tcp.next().await,
            Conn::Memory(transport) => {
                let event = poll_fn(|cx| transport.poll_recv(cx)).await?;
                // Our answer to a close is queued with it: send it.
                let _ = poll_fn(|cx| transport.poll_flush(cx)).await;
                match event {
                    ws_proto::Event::Text(text) => Some(Received::Text(text)),
                    // The server's end dropped without a close: the end, as a socket's EOF.
                    ws_proto::Event::Close(frame) if frame.code == Some(ws_proto::CloseCode::ABNORMAL) => {
                        None
                    }
                    ws_proto::Event::Close(frame) => Some(Received::Close(frame.code.map_or(1005, |c| c.0))),
                    _ => Some(Received::Other),
                }
            }
        }
    }
}

/// Opens a connection to `endpoint` (for WebSocket `ws://addr/ws`), with `token`
/// as a bearer credential: in the upgrade for WebSocket and in memory, as `sys.auth`
/// for raw TCP (which has no headers). The answer to `sys.auth` is the first message
/// either way.
pub async fn connect(endpoint: impl Into<Endpoint>, token: Option<&str>) -> Conn {
    match endpoint.into() {
        Endpoint::WebSocket(addr) => {
            let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
            if let Some(token) = token {
                request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            let msgpack = codec() == Codec::MsgPack;
            if msgpack {
                let offer = "tether.v1.msgpack, tether.v1.json";
                request
                    .headers_mut()
                    .insert("sec-websocket-protocol", offer.parse().unwrap());
            }
            let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
            let answered = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok());
            assert_eq!(
                answered,
                msgpack.then_some("tether.v1.msgpack"),
                "the subprotocol picked"
            );
            if msgpack {
                Conn::WebSocketMsgPack(Box::new(ws))
            } else {
                Conn::WebSocket(Box::new(ws))
            }
        }
        Endpoint::Tcp(addr) => {
            let mut conn = Conn::Tcp(TcpConn::connect(addr).await);
            if let Some(token) = token {
                send(&mut conn, "sys.auth", json!({ "token": token }), None).await;
            }
            conn
        }
        Endpoint::Memory { hub, runtime } => {
            let headers = token
                .map(|token| vec![("Authorization".to_owned(), format!("Bearer {token}"))])
                .unwrap_or_default();
            let request = DialRequest {
                origin: None,
                headers,
                ..DialRequest::default()
            };
            let dialed = match runtime {
                ServerRuntime::Tokio => MemoryDialer::new(&hub, adapter_tokio::TokioRuntime).dial(request),
                ServerRuntime::AsyncStd => {
                    MemoryDialer::new(&hub, adapter_async_std::AsyncStdRuntime).dial(request)
                }
                ServerRuntime::Smol => MemoryDialer::new(&hub, adapter_async_std::SmolRuntime).dial(request),
            };
            Conn::Memory(dialed.await.expect("an in-memory pair"))
        }
    }
}

/// Sends one envelope.
pub async fn send(conn: &mut Conn, event: &str, payload: Value, c: Option<&str>) {
    let mut env = json!({ "v": "1.0", "e": event, "p": payload });
    if let Some(c) = c {
        env["c"] = json!(c);
    }
    conn.send_text(env.to_string()).await;
}

/// The next envelope that is not a heartbeat.
pub async fn recv(conn: &mut Conn) -> Value {
    loop {
        let received = tokio::time::timeout(WAIT, conn.next())
            .await
            .expect("an envelope in time")
            .expect("the connection is open");
        if let Received::Text(text) = received {
            let env: Value = serde_json::from_str(&text).unwrap();
            if env["e"] != "sys.ping" {
                return env;
            }
        }
    }
}

/// Connects as `name` and returns the connection and `sys.session.created`'s payload.
pub async fn session(endpoint: impl Into<Endpoint>, name: &str) -> (Conn, Value) {
    let mut conn = connect(endpoint, Some(&format!("user:{name}"))).await;
    let created = recv(&mut conn).await;
    assert_eq!(created["e"], "sys.session.created", "{created}");
    (conn, created["p"].clone())
}

/// Waits for the server's close, lets the client answer it (as any client does), and
/// returns its code (1006 when the connection ended without one).
pub async fn closed_with(conn: &mut Conn) -> u16 {
    let code = loop {
        match tokio::time::timeout(WAIT, conn.next())
            .await
            .expect("closed in time")
        {
            Some(Received::Close(code)) => break code,
            Some(_) => continue,
            None => break 1006,
        }
    };
    // Reading on sends the answering close and sees the server's end of stream.
    while let Ok(Some(_)) = tokio::time::timeout(WAIT, conn.next()).await {}
    code
}
