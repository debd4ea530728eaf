//! A Socket.IO v4 server on socketioxide (its hyper service), tokio single-threaded:
//! `echo` answers its data with an ack, `join` puts the socket in a room (ack),
//! `pub` sends its data to room `bench` as `msg`. A peer of tether-bench's sessions.
//!
//! `peer-socketioxide PORT`

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::SocketIo;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "9104".to_owned());
    let (service, io) = SocketIo::new_svc();
    io.ns("/", async |socket: SocketRef| {
        socket.on("echo", async |ack: AckSender, Data::<String>(text)| {
            let _ = ack.send(&text);
        });
        socket.on(
            "join",
            async |socket: SocketRef, ack: AckSender, Data::<String>(room)| {
                socket.join(room.clone());
                let _ = ack.send(&room);
            },
        );
        socket.on("pub", async |io: SocketIo, Data::<Value>(data)| {
            let _ = io.to("bench").emit("msg", &data).await;
        });
    });
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let service = service.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
