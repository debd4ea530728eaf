//! The tether subprotocols in the upgrade (`docs/PROTOCOL.md`, "Binary envelope"):
//! the servers prefer `tether.v1.msgpack` whenever it is offered, whatever the client's
//! order, name `tether.v1.json` when only that is offered, and answer a client that
//! offers neither with no subprotocol (and JSON). The connection then speaks the codec
//! named: its first frame (`sys.session.created`) is binary for MessagePack, text
//! otherwise. Checked on the standalone server of each runtime and on the mounted
//! endpoint.

use adapter_tokio::{mount, serve_router, TokioRuntime};
use tether_tests::harness::{self, ServerRuntime};
use tether_tests::suite::app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `Sec-WebSocket-Protocol` of the answer to an upgrade offering `offer` (none
/// when `None`), after checking that the answer is a 101 and that the first frame is
/// of the kind that subprotocol says.
async fn chosen(addr: std::net::SocketAddr, offer: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let protocol = offer.map_or(String::new(), |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer user:ann\r\n{protocol}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the answer ended early");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let protocol = head
        .lines()
        .filter_map(|line| line.split_once(": "))
        .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .map(|(_, value)| value.to_owned());
    // The first frame's opcode: 0x2 binary, 0x1 text (FIN set, unfragmented).
    stream.read_exact(&mut byte).await.unwrap();
    let binary = protocol.as_deref() == Some("tether.v1.msgpack");
    assert_eq!(byte[0], if binary { 0x82 } else { 0x81 }, "{protocol:?}");
    protocol
}

async fn check(addr: std::net::SocketAddr) {
    assert_eq!(chosen(addr, None).await, None);
    assert_eq!(
        chosen(addr, Some("tether.v1.json")).await.as_deref(),
        Some("tether.v1.json")
    );
    for offer in [
        "tether.v1.msgpack, tether.v1.json",
        "tether.v1.json, tether.v1.msgpack",
        "tether.v1.msgpack",
    ] {
        assert_eq!(
            chosen(addr, Some(offer)).await.as_deref(),
            Some("tether.v1.msgpack")
        );
    }
    assert_eq!(
        chosen(addr, Some("chat.v2, tether.v1.json")).await.as_deref(),
        Some("tether.v1.json")
    );
    assert_eq!(chosen(addr, Some("chat.v2")).await, None);
}

#[tokio::test]
async fn the_standalone_servers_prefer_msgpack_and_speak_what_they_named() {
    for runtime in [ServerRuntime::Tokio, ServerRuntime::AsyncStd, ServerRuntime::Smol] {
        let server = harness::start(runtime, app()).await;
        check(server.addr).await;
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_mounted_endpoint_prefers_msgpack_and_speaks_what_it_named() {
    let hub = app().start(TokioRuntime);
    let router = axum::Router::new().route("/ws", mount(hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_router(listener, router, &hub).run_until(async {
        let _ = stopped.await;
    }));
    check(addr).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
