//! A plain WebSocket echo server on async-std or smol (no sessions): the subject of the
//! Autobahn server cases for adapter-async-std (`kosoku -m fuzzingclient`).
//!
//! ```text
//! cargo run --release -p adapter-async-std --example autobahn_echo_async -- smol|async-std [ADDR]
//! ```
//!
//! Autobahn's case 9 sends up to 16 MiB in up to 65,536 fragments: the limits are
//! raised above the defaults (1 MiB, 4096 fragments) for this subject only.

use adapter_async_std::{AsyncStdRuntime, SmolRuntime};
use async_net::TcpListener;
use ws_driver::adapter::Runtime;
use ws_driver::WebSocket;
use ws_proto::{Config, Event};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let runtime = args.next().unwrap_or_else(|| "smol".to_owned());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    match runtime.as_str() {
        "smol" => smol::block_on(serve(SmolRuntime, &addr)),
        "async-std" => async_std::task::block_on(serve(AsyncStdRuntime, &addr)),
        other => {
            eprintln!("unknown runtime {other:?}: smol or async-std");
            std::process::exit(2);
        }
    }
}

/// Accepts on `addr` and echoes every connection in a task of `runtime`.
async fn serve(runtime: impl Runtime, addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("echo server on ws://{}", listener.local_addr()?);
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
        runtime.spawn(async move {
            let Ok(Some((mut ws, _))) = WebSocket::accept(stream, config).await else {
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
