//! Autobahn's client protocol through the tokio client stack: tokio TCP
//! ([`adapter_tokio::TokioConnector`]), the client handshake and masking of
//! [`ws_driver::client::handshake`], and [`ws_driver::WebSocket`] as the echo loop.
//! Asks a fuzzing server (`kosoku -m fuzzingserver`) how many cases it has, runs each
//! as an echo client, then asks it to write its reports.
//!
//! ```text
//! cargo run --release -p adapter-tokio --example autobahn_client_tokio -- [HOST:PORT] [--context-takeover]
//! ```

use std::io;

use adapter_tokio::TokioConnector;
use ws_driver::client::{handshake, Connector, Target};
use ws_driver::WebSocket;
use ws_proto::{Config, Event};

const AGENT: &str = "tether-adapter-tokio";

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    // Autobahn's case 9 sends up to 16 MiB, in up to 65,536 fragments.
    // Autobahn's case 13 servers accept only offers that carry
    // client_no_context_takeover for some of their parameter sets: offer it, so that
    // every case negotiates permessage-deflate.
    let mut config = Config {
        max_fragments: 1 << 20,
        // Off by default; the compression cases (12, 13) need it.
        deflate: true,
        deflate_client_no_context_takeover: true,
        // Compress every message, however small: kosoku (Autobahn) mishandles an
        // uncompressed text message inside its compression cases (12.x.1, 13.x.1:
        // 16 bytes, below the default Config::deflate_min_size).
        deflate_min_size: 0,
        ..Config::default().with_max_message_size(64 << 20)
    };
    // `--context-takeover`: offer plain permessage-deflate and keep the compression
    // context between messages (the differential test with Python websockets).
    if std::env::args().any(|arg| arg == "--context-takeover") {
        config.deflate_client_no_context_takeover = false;
    }
    let count: u32 = match run(&addr, "/getCaseCount", &config, false).await?.first() {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| io::Error::other("bad case count"))?,
        None => return Err(io::Error::other("no case count")),
    };
    eprintln!("{count} cases");
    for case in 1..=count {
        if let Err(err) = run(
            &addr,
            &format!("/runCase?case={case}&agent={AGENT}"),
            &config,
            true,
        )
        .await
        {
            eprintln!("case {case}: {err}");
        }
    }
    run(&addr, &format!("/updateReports?agent={AGENT}"), &config, false).await?;
    eprintln!("done");
    Ok(())
}

/// Opens `path`, echoes every message when `echo`, and returns the text messages.
async fn run(addr: &str, path: &str, config: &Config, echo: bool) -> io::Result<Vec<String>> {
    let target = Target::parse(&format!("ws://{addr}{path}")).map_err(io::Error::other)?;
    let stream = TokioConnector.connect(&target).await?;
    let (stream, conn) = handshake(stream, target.request(), config).await?;
    let mut ws = WebSocket::from_connection(stream, conn);
    let mut texts = Vec::new();
    while let Some(event) = ws.recv().await? {
        match event {
            Event::Text(text) if echo => ws.send_text(&text).await?,
            Event::Text(text) => texts.push(text),
            Event::Binary(data) if echo => ws.send_binary(&data).await?,
            _ => {}
        }
    }
    Ok(texts)
}
