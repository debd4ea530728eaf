//! Autobahn's client protocol on blocking `std::net`, with no async runtime: ask a
//! fuzzing server (`kosoku -m fuzzingserver`) how many cases it has, run each one as an
//! echo client, then ask it to write its reports.
//!
//! ```text
//! cargo run --release -p ws-proto --example autobahn_client -- [HOST:PORT] [--context-takeover]
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use ws_proto::frame::SeededMasks;
use ws_proto::handshake::{ClientHandshake, ClientRequest};
use ws_proto::{Config, Connection, DeflateParams, Event};

const AGENT: &str = "tether-ws-proto";
/// After the closing handshake the client waits this long for the server to close TCP.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

fn main() -> io::Result<()> {
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

    let count: u32 = match run(&addr, "/getCaseCount", &config, false)?.first() {
        Some(text) => text.trim().parse().expect("case count"),
        None => return Err(io::Error::other("no case count")),
    };
    eprintln!("{count} cases");
    for case in 1..=count {
        run(
            &addr,
            &format!("/runCase?case={case}&agent={AGENT}"),
            &config,
            true,
        )?;
    }
    run(&addr, &format!("/updateReports?agent={AGENT}"), &config, false)?;
    eprintln!("done");
    Ok(())
}

/// 64 random bits from the standard library's per-process hasher keys: the example
/// needs no extra crate, and the core stays free of entropy (it takes masking keys
/// from the caller's `MaskSource`).
fn entropy() -> u64 {
    // The example is the driver: the entropy is its own, not the library's
    // (ws-proto/clippy.toml denies it to the crate).
    #[allow(clippy::disallowed_methods)]
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

/// Opens `path`, echoes every message when `echo`, and returns the text messages.
fn run(addr: &str, path: &str, config: &Config, echo: bool) -> io::Result<Vec<String>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&entropy().to_ne_bytes());
    key[8..].copy_from_slice(&entropy().to_ne_bytes());
    let mut request = ClientRequest::new(addr, path, key);
    request.extensions = DeflateParams::client_offer(config);
    let (mut handshake, request) =
        ClientHandshake::new(config, request).map_err(|e| io::Error::other(e.to_string()))?;
    stream.write_all(&request)?;

    let mut buf = vec![0; 64 * 1024];
    let response = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("server closed during the handshake"));
        }
        match handshake.handle_bytes(&buf[..n]) {
            Ok(None) => continue,
            Ok(Some(response)) => break response,
            Err(err) => return Err(io::Error::other(err.to_string())),
        }
    };

    let mut conn = Connection::client(config.clone(), SeededMasks::new(entropy()))
        .with_deflate(response.deflate().copied());
    conn.handle_bytes(response.rest());
    let mut texts = Vec::new();
    loop {
        while let Some(event) = conn.poll_event() {
            let _ = match event {
                Event::Text(text) if echo => conn.send_text(&text),
                Event::Text(text) => {
                    texts.push(text);
                    Ok(())
                }
                Event::Binary(data) if echo => conn.send_binary(&data),
                _ => Ok(()),
            };
        }
        while let Some(chunk) = conn.poll_transmit() {
            stream.write_all(&chunk)?;
        }
        if conn.is_closed() {
            // The client lets the server close TCP first (RFC 6455 §7.1.1), but not
            // forever.
            stream.set_read_timeout(Some(CLOSE_WAIT))?;
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(texts);
        }
        match stream.read(&mut buf) {
            Ok(0) => conn.handle_eof(),
            Ok(n) => conn.handle_bytes(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => conn.handle_eof(),
            Err(err) => return Err(err),
        }
    }
}
