//! The client side of the suite: tokio-tungstenite on the test's tokio runtime,
//! whatever runtime the server runs on.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The test client: tokio-tungstenite over a tokio TCP stream.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// Opens a WebSocket to `ws://addr/ws`, with `token` as a bearer credential.
pub async fn connect(addr: SocketAddr, token: Option<&str>) -> Ws {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
        .0
}

/// Sends one envelope.
pub async fn send(ws: &mut Ws, event: &str, payload: Value, c: Option<&str>) {
    let mut env = json!({ "v": "1.0", "e": event, "p": payload });
    if let Some(c) = c {
        env["c"] = json!(c);
    }
    ws.send(Message::text(env.to_string())).await.unwrap();
}

/// The next envelope that is not a heartbeat.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an envelope in time")
            .expect("the connection is open")
            .expect("a frame");
        if let Message::Text(text) = msg {
            let env: Value = serde_json::from_str(&text).unwrap();
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
