//! An echo server on blocking `std::net`, a thread per connection, with no async
//! runtime: the whole Sans-IO drive loop in a page. It is the subject of the Autobahn
//! server cases (`kosoku -m fuzzingclient`).
//!
//! ```text
//! cargo run --release -p ws-proto --example echo_server -- [ADDR] [--max-message-size BYTES] [--max-fragments N] [--deflate-min-size BYTES] [--no-deflate]
//! ```
//!
//! ADDR defaults to 127.0.0.1:9001. Autobahn's case 9 sends messages of up to 16 MiB,
//! some cut into 65,536 fragments, so conformance runs raise the defaults (1 MiB, 4096
//! fragments) with the two flags.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use ws_proto::handshake::{Accept, ServerHandshake};
use ws_proto::{Config, Connection, Event};

/// How long a client may take to send its upgrade request (10 s, ws-driver's default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 64 * 1024;

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:9001".to_owned();
    // permessage-deflate is off by default; Autobahn's compression cases need it.
    let mut config = Config {
        deflate: true,
        ..Config::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-message-size" => {
                let max = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--max-message-size BYTES");
                config = config.with_max_message_size(max);
            }
            "--max-fragments" => {
                config.max_fragments = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--max-fragments N");
            }
            "--deflate-min-size" => {
                config.deflate_min_size = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--deflate-min-size BYTES");
            }
            "--no-deflate" => config.deflate = false,
            _ => addr = arg,
        }
    }
    let listener = TcpListener::bind(&addr)?;
    eprintln!("echo server listening on ws://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("accept failed: {err}");
                continue;
            }
        };
        let config = config.clone();
        // This example is the driver: its threads are its own, not the library's
        // (ws-proto/clippy.toml denies them to the crate).
        #[allow(clippy::disallowed_methods)]
        std::thread::spawn(move || {
            if let Err(err) = serve(stream, config) {
                eprintln!("connection ended with an I/O error: {err}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream, config: Config) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0; READ_BUFFER];

    // 1. The upgrade request, within the handshake timeout.
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut handshake = ServerHandshake::new(&config);
    let request = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        match handshake.handle_bytes(&buf[..n]) {
            Ok(None) => continue,
            Ok(Some(request)) => break request,
            Err(rejection) => {
                stream.write_all(&rejection.to_response())?;
                return Ok(());
            }
        }
    };
    // permessage-deflate, if the client offers it and the config allows it.
    let deflate = request.negotiate_deflate(&config);
    let response = request
        .accept(&Accept::new().with_deflate(deflate.as_ref()))
        .expect("no subprotocol chosen, nothing to refuse");
    stream.write_all(&response)?;
    stream.set_read_timeout(None)?;

    // 2. Frames: feed what we read, drain events and transmits, until closed.
    let mut conn = Connection::server(config).with_deflate(deflate);
    conn.handle_bytes(request.rest());
    loop {
        while let Some(event) = conn.poll_event() {
            // A send only fails once the connection is closing: nothing to echo then.
            let _ = match event {
                Event::Text(text) => conn.send_text(&text),
                Event::Binary(data) => conn.send_binary(&data),
                _ => Ok(()),
            };
        }
        flush(&mut conn, &mut stream)?;
        if conn.is_closed() {
            // The server closes TCP first (RFC 6455 §7.1.1).
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        match stream.read(&mut buf) {
            Ok(0) => conn.handle_eof(),
            Ok(n) => conn.handle_bytes(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => conn.handle_eof(),
            Err(err) => return Err(err),
        }
    }
}

/// Writes everything the connection has queued, in one write when it is one chunk.
fn flush(conn: &mut Connection, stream: &mut TcpStream) -> io::Result<()> {
    while let Some(chunk) = conn.poll_transmit() {
        stream.write_all(&chunk)?;
    }
    Ok(())
}
