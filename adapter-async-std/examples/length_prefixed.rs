//! tether over raw TCP: the same `App` as over WebSocket, on the length-prefixed
//! framing (docs/PROTOCOL.md, "Raw TCP"), on smol.
//!
//! ```text
//! cargo run -p adapter-async-std --example length_prefixed -- [ADDR]
//! ```
//!
//! A client writes the preamble `TETHER` + `\x01`, reads the server's, then sends
//! frames (a `u32` big-endian payload length, a kind byte: 1 text, 2 binary, 8 close;
//! the payload). It authenticates with a first `sys.auth` message, since there are no
//! headers (`{"v":"1.0","e":"sys.auth","p":{"token":"user:alice"}}`); from there on
//! the protocol is the WebSocket one. Tokens `user:<name>` authenticate as `<name>`;
//! `echo` is answered with `echo.reply` and the same payload. The Rust client speaks
//! it with `tcp://` URLs: `SmolClient::connect("tcp://127.0.0.1:9010", options)`.

use adapter_async_std::{App, Context, EngineConfig, SmolServer};

/// The application: the same whatever the transport.
pub(crate) fn app(config: EngineConfig) -> App {
    App::new()
        .config(config)
        .authenticate(|token: String, _info| async move {
            token
                .strip_prefix("user:")
                .map(str::to_owned)
                .ok_or_else(|| "tokens look like user:<name>".to_owned())
        })
        .on("echo", |ctx: Context| async move {
            let payload: serde_json::Value = ctx.payload()?;
            ctx.reply("echo.reply", &payload)
        })
}

#[allow(dead_code)] // The integration test includes this file and starts its own server.
fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9010".to_owned());
    smol::block_on(async {
        let server = SmolServer::bind_tcp(addr, app(EngineConfig::default())).await?;
        eprintln!("tether over raw TCP on tcp://{}", server.local_addr()?);
        server.run().await
    })
}
