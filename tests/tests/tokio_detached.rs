//! Detached mode (tokio only): the endpoint mounted on an application's axum router,
//! sharing its port with ordinary routes.

use adapter_tokio::{mount, TokioRuntime};
use serde_json::json;
use tether_tests::client::{recv, send, session};
use tether_tests::suite::app;
use tokio::net::TcpStream;

#[tokio::test]
async fn detached_mode_shares_the_port_with_ordinary_routes() {
    let hub = app().start(TokioRuntime);
    let router = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/ws", mount(hub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let (mut ws, created) = session(addr, "alice").await;
    assert_eq!(created["userId"], "alice");
    send(&mut ws, "echo", json!("via axum"), Some("a")).await;
    assert_eq!(recv(&mut ws).await["p"], "via axum");

    let mut http = TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    http.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200") && body.ends_with("ok"), "{body}");

    // A bad upgrade on the mounted route gets ws-proto's refusal.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").await.unwrap();
    let mut answer = vec![0; 1024];
    let n = bad.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(
        answer.starts_with("http/1.1 426") && answer.contains("sec-websocket-version: 13"),
        "{answer}"
    );
}
