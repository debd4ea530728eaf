//! `App::max_connections`: past the bound an upgrade gets 503 with `Retry-After` (the
//! standalone server and axum's `mount` alike), a raw TCP connection its preamble and
//! close code 1013; refusals past the margin are dropped without an answer; a slot
//! freed by a closed connection is taken by the next client; `serve_router` counts its
//! plain HTTP connections too, and an upgraded one once; every refusal is counted
//! in `tether_connections_refused_total`.

use std::net::SocketAddr;
use std::time::Duration;

use adapter_tokio::{mount, serve_router, App, Server, ServerHandle, TokioRuntime};
use tether_tests::raw::read_until_closed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_proto::prefixed::{PrefixedConnection, PREAMBLE};
use ws_proto::{CloseCode, Config, Event};

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn app(max: usize) -> App {
    App::new()
        .authenticate(|token: String, _info| async move { Ok(token) })
        .max_connections(max)
}

/// Sends the upgrade; the first bytes of the answer, lowercased.
async fn upgrade(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(UPGRADE).await.unwrap();
    let mut buf = vec![0; 2048];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    (stream, head)
}

/// The whole answer to an upgrade that is refused, lowercased.
async fn refused(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(UPGRADE).await.unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut stream).await).to_lowercase()
}

/// Upgrades once a slot is free (the server frees one when it has seen a connection
/// close): every answer before the 101 must be the 503.
async fn upgrade_once_a_slot_is_free(addr: SocketAddr) -> TcpStream {
    for _ in 0..500 {
        let (stream, head) = upgrade(addr).await;
        if head.starts_with("http/1.1 101 ") {
            return stream;
        }
        assert!(head.starts_with("http/1.1 503 "), "{head}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a closed connection's slot was never freed");
}

fn assert_503(response: &str) {
    assert!(response.starts_with("http/1.1 503 "), "{response}");
    assert!(response.contains("\r\nretry-after: 5\r\n"), "{response}");
    assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
    assert!(response.contains("connection limit"), "{response}");
}

async fn refusals_counted(handle: &ServerHandle) -> u64 {
    let text = handle.prometheus_text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("tether_connections_refused_total "))
        .unwrap_or_else(|| panic!("no refusal counter in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits until the server has counted `n` refusals (each connection is counted by
/// its own task, in no set order).
async fn until_refusals(handle: &ServerHandle, n: u64) {
    for _ in 0..500 {
        if refusals_counted(handle).await >= n {
            assert_eq!(refusals_counted(handle).await, n);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} refusals counted, {n} expected",
        refusals_counted(handle).await
    );
}

#[tokio::test]
async fn standalone_refuses_past_the_bound_and_admits_once_a_slot_is_free() {
    let server = Server::bind("127.0.0.1:0", "/ws", app(2)).await.unwrap();
    let (addr, handle) = (server.local_addr().unwrap(), server.handle());
    tokio::spawn(server.run_until(std::future::pending()));

    let (first, head) = upgrade(addr).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let (_second, head) = upgrade(addr).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert_503(&refused(addr).await);
    assert_eq!(refusals_counted(&handle).await, 1);

    // The slot of a closed connection is free again.
    drop(first);
    let _held = upgrade_once_a_slot_is_free(addr).await;
    // Held: the bound is reached again.
    assert_503(&refused(addr).await);
}

#[tokio::test]
async fn refusals_past_the_margin_are_dropped_without_an_answer() {
    let server = Server::bind("127.0.0.1:0", "/ws", app(2)).await.unwrap();
    let (addr, handle) = (server.local_addr().unwrap(), server.handle());
    tokio::spawn(server.run_until(std::future::pending()));
    let (_a, _) = upgrade(addr).await;
    let (_b, _) = upgrade(addr).await;
    // Sixteen clients that say nothing: each holds a refusal's slot while its request
    // is awaited (the margin of a bound below 128 is 16).
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    until_refusals(&handle, 16).await;
    // The margin is full: the next stream is closed at once, unanswered.
    let mut dropped = TcpStream::connect(addr).await.unwrap();
    let _ = dropped.write_all(UPGRADE).await;
    assert_eq!(read_until_closed(&mut dropped).await, b"");
    assert_eq!(refusals_counted(&handle).await, 17);
    // The silent ones still get their 503 once they speak.
    for mut stream in silent {
        stream.write_all(UPGRADE).await.unwrap();
        assert_503(&String::from_utf8_lossy(&read_until_closed(&mut stream).await).to_lowercase());
    }
}

#[tokio::test]
async fn detached_counts_every_connection_once_and_refuses_past_the_bound() {
    let hub = app(1).start(TokioRuntime);
    let router = axum::Router::new()
        .route("/ws", mount(hub.clone()))
        .route("/ok", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_router(listener, router, &hub).run_until(std::future::pending()));

    // A bound of one: the upgraded connection is counted once (from its accept, the
    // slot handed to the WebSocket), so it is admitted.
    let (held, head) = upgrade(addr).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert_503(&refused(addr).await);
    assert_eq!(refusals_counted(hub.handle()).await, 1);
    drop(held);

    // A kept-alive plain HTTP connection holds the slot as much.
    let mut http = loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        if answer.starts_with("http/1.1 200 ") {
            break stream;
        }
        // The WebSocket's slot is freed once its task has seen the close.
        assert!(answer.starts_with("http/1.1 503 "), "{answer}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_503(&refused(addr).await);
    // Closed, its slot goes to the next upgrade.
    http.shutdown().await.unwrap();
    drop(http);
    upgrade_once_a_slot_is_free(addr).await;
}

#[tokio::test]
async fn raw_tcp_past_the_bound_gets_the_preamble_and_1013() {
    let server = Server::bind_tcp("127.0.0.1:0", app(1)).await.unwrap();
    let (addr, handle) = (server.local_addr().unwrap(), server.handle());
    tokio::spawn(server.run_until(std::future::pending()));

    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(&PREAMBLE).await.unwrap();
    let mut preamble = [0; PREAMBLE.len()];
    held.read_exact(&mut preamble).await.unwrap();
    assert_eq!(preamble, PREAMBLE);

    let mut refused = TcpStream::connect(addr).await.unwrap();
    refused.write_all(&PREAMBLE).await.unwrap();
    let answer = read_until_closed(&mut refused).await;
    assert_eq!(answer[..PREAMBLE.len()], PREAMBLE);
    let mut framing = PrefixedConnection::new(&Config::default());
    framing.handle_bytes(&answer[PREAMBLE.len()..]);
    match framing.poll_event() {
        Some(Event::Close(frame)) => {
            assert_eq!(frame.code, Some(CloseCode::TRY_AGAIN_LATER));
            assert!(frame.reason.contains("connection limit"), "{}", frame.reason);
        }
        other => panic!("expected a close with 1013, got {other:?}"),
    }
    assert_eq!(refusals_counted(&handle).await, 1);
}
