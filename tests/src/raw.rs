//! A WebSocket client that does exactly what a test tells it and nothing else: it
//! writes frames it was given, reads only when asked. Built on ws-proto's framing, for
//! the cases a well-behaved client (tungstenite) cannot play: a peer that floods
//! pings without reading, a head sent byte by byte.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use ws_proto::frame::{encode_frame, OpCode, SeededMasks};
use ws_proto::{Config, Connection, Event};

/// Reads `stream` until the server closes it (a reset counts as closed): what the
/// server sent. Fails the test if it is still open after 5 s.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was left open after: {}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// An upgrade request for `/ws` with a bearer credential.
pub fn upgrade_request(addr: SocketAddr, token: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// A masked client frame.
pub fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode_frame(&mut out, true, opcode, payload, Some([0x11, 0x22, 0x33, 0x44]));
    out
}

/// A raw WebSocket connection after a successful upgrade.
pub struct RawClient {
    /// The socket; write to it directly.
    pub stream: TcpStream,
    conn: Connection,
}

impl RawClient {
    /// Connects with a receive buffer of `recv_buffer` bytes (small: the server's
    /// writes stall early when this client does not read), upgrades with `token`.
    pub async fn connect(addr: SocketAddr, token: &str, recv_buffer: u32) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(recv_buffer).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        stream
            .write_all(upgrade_request(addr, token).as_bytes())
            .await
            .expect("write the upgrade");
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read the response");
            assert_eq!(n, 1, "the server closed during the upgrade");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let conn = Connection::client(Config::default(), SeededMasks::new(7));
        Self { stream, conn }
    }

    /// Reads until the server's close frame or the end of the stream; returns every
    /// event in order (an end of stream without a close frame shows as close 1006).
    pub async fn read_to_close(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            // A reset ends the stream like an EOF does.
            let n = self.stream.read(&mut buf).await.unwrap_or_default();
            if n == 0 {
                self.conn.handle_eof();
            } else {
                self.conn.handle_bytes(&buf[..n]);
            }
            while let Some(event) = self.conn.poll_event() {
                let last = matches!(event, Event::Close(_) | Event::Failed(_));
                events.push(event);
                if last {
                    return events;
                }
            }
            // Our own answers (pongs, the close) are not written: this client does not
            // talk back unless told to.
            while self.conn.poll_transmit().is_some() {}
        }
    }
}
