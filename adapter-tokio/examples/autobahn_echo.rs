//! A plain WebSocket echo server on adapter-tokio (no sessions): the subject of the
//! Autobahn server cases for the tokio adapter (`kosoku -m fuzzingclient`).
//!
//! ```text
//! cargo run --release -p adapter-tokio --example autobahn_echo -- [ADDR]
//! ```
//!
//! Autobahn's case 9 sends up to 16 MiB in up to 65,536 fragments: the limits are
//! raised above the defaults (1 MiB, 4096 fragments) for this subject only.

use tokio::net::TcpListener;
use tokio_util::compat::TokioAsyncReadCompatExt;
use ws_driver::WebSocket;
use ws_proto::{Config, Event};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("tokio echo server on ws://{}", listener.local_addr()?);
    let config = Config {
        max_fragments: 1 << 20,
        // Off by default; the compression cases (12, 13) need it.
        deflate: true,
        // Compress every message, however small: kosoku (Autobahn) mishandles an
        // uncompressed text message inside its compression cases (12.x.1, 13.x.1:
        // 16 bytes, below the default Config::deflate_min_size).
        deflate_min_size: 0,
        ..Config::default().with_max_message_size(64 << 20)
    };
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let config = config.clone();
        tokio::spawn(async move {
            let Ok(Some((mut ws, _))) = WebSocket::accept(stream.compat(), config).await else {
                return;
            };
            while let Ok(Some(event)) = ws.recv().await {
                let sent = match event {
                    Event::Text(text) => ws.send_text(&text).await,
                    Event::Binary(data) => ws.send_binary(&data).await,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
        });
    }
}
