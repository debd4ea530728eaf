//! The tether subprotocols in the upgrade (`docs/PROTOCOL.md`, "Binary envelope"):
//! the servers name `tether.v1.json` in the 101 when the client offers it, whatever
//! else it offers; they do not select `tether.v1.msgpack` yet, so a client offering
//! only that gets no subprotocol (and JSON), as does a client offering none. Checked
//! on the standalone server of each runtime and on the mounted endpoint.

use adapter_tokio::{mount, serve_router, TokioRuntime};
use tether_tests::harness::{self, ServerRuntime};
use tether_tests::suite::app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `Sec-WebSocket-Protocol` of the answer to an upgrade offering `offer` (none
/// when `None`), after checking that the answer is a 101.
async fn chosen(addr: std::net::SocketAddr, offer: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let protocol = offer.map_or(String::new(), |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
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
    head.lines()
        .filter_map(|line| line.split_once(": "))
        .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .map(|(_, value)| value.to_owned())
}

async fn check(addr: std::net::SocketAddr) {
    assert_eq!(chosen(addr, None).await, None);
    assert_eq!(
        chosen(addr, Some("tether.v1.json")).await.as_deref(),
        Some("tether.v1.json")
    );
    assert_eq!(
        chosen(addr, Some("tether.v1.msgpack, tether.v1.json"))
            .await
            .as_deref(),
        Some("tether.v1.json")
    );
    assert_eq!(
        chosen(addr, Some("chat.v2, tether.v1.json")).await.as_deref(),
        Some("tether.v1.json")
    );
    assert_eq!(chosen(addr, Some("tether.v1.msgpack")).await, None);
    assert_eq!(chosen(addr, Some("chat.v2")).await, None);
}

#[tokio::test]
async fn the_standalone_servers_name_the_json_subprotocol_when_offered() {
    for runtime in [ServerRuntime::Tokio, ServerRuntime::AsyncStd, ServerRuntime::Smol] {
        let server = harness::start(runtime, app()).await;
        check(server.addr).await;
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_mounted_endpoint_names_the_json_subprotocol_when_offered() {
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
