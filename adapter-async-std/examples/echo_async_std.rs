//! An echo server on async-std: sessions, one handler, a graceful shutdown.
//!
//! ```text
//! cargo run -p adapter-async-std --example echo_async_std -- [ADDR]
//! ```
//!
//! Connect with a bearer token (`Authorization: Bearer <name>`, or `?token=<name>`),
//! send `{"v":"1.0","e":"echo","p":"hello","c":"1"}` and get `echo.reply` back. Type
//! `quit` (or close stdin) to stop: connections are closed with 1001 after what was
//! queued for them.
//!
//! async-std is deprecated upstream in favour of smol (see the `chat_smol` example);
//! this is for applications that already run on async-std.

use adapter_async_std::{App, AsyncStdServer, Context};
use async_std::io::{prelude::BufReadExt, stdin, BufReader};
use async_std::stream::StreamExt;

#[async_std::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let app = App::new()
        // Any non-empty token is a user name: a demo, not an authenticator.
        .authenticate(|token: String, _info| async move { Ok(token) })
        .on("echo", |ctx: Context| async move {
            let payload: serde_json::Value = ctx.payload()?;
            ctx.reply("echo.reply", &payload)
        });
    let server = AsyncStdServer::bind(addr, "/ws", app).await?;
    eprintln!(
        "echo on ws://{}/ws (async-std); type quit to stop",
        server.local_addr()?
    );
    let quit = async {
        let mut lines = BufReader::new(stdin()).lines();
        while let Some(Ok(line)) = lines.next().await {
            if line.trim() == "quit" {
                break;
            }
        }
    };
    server.run_until(quit).await?;
    eprintln!("stopped");
    Ok(())
}
