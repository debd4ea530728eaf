//! docs/PROTOCOL.md's table of upgrade refusals, row by row, against both ways a
//! tokio server takes upgrades: the standalone `Server` and detached mode (`mount` on
//! an axum router served by `serve_router`). One table, two subjects: every row must
//! get the same status, the same extra header, `Connection: close`, and the
//! connection closed. Then the handshake deadline for silent and trickling clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use adapter_tokio::{mount, serve_router, App, Server, TokioRuntime};
use tether_tests::raw::read_until_closed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_session::EngineConfig;

const DEADLINE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
enum Subject {
    Standalone,
    Detached,
}

fn app() -> App {
    App::new()
        .authenticate(|token: String, _info| async move { Ok(token) })
        .config(EngineConfig {
            allowed_origins: Some(vec!["https://ok.example".to_owned()]),
            ..EngineConfig::default()
        })
        .handshake_timeout(DEADLINE)
}

async fn start(subject: Subject) -> SocketAddr {
    match subject {
        Subject::Standalone => {
            let server = Server::bind("127.0.0.1:0", "/ws", app()).await.unwrap();
            let addr = server.local_addr().unwrap();
            tokio::spawn(server.run_until(std::future::pending()));
            addr
        }
        Subject::Detached => {
            let hub = app().start(TokioRuntime);
            let router = axum::Router::new()
                .route("/ws", mount(hub.clone()))
                .route("/ok", axum::routing::get(|| async { "ok" }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve_router(listener, router, &hub).run_until(std::future::pending()));
            addr
        }
    }
}

/// A valid upgrade head with `edit` applied to its lines (CRLF line endings added).
fn head(edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
    let mut lines: Vec<String> = [
        "GET /ws HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Origin: https://ok.example",
    ]
    .map(str::to_owned)
    .to_vec();
    edit(&mut lines);
    let mut text = lines.join("\r\n");
    text.push_str("\r\n\r\n");
    text.into_bytes()
}

fn set(lines: &mut [String], prefix: &str, line: &str) {
    let at = lines.iter().position(|l| l.starts_with(prefix)).unwrap();
    lines[at] = line.to_owned();
}

fn remove(lines: &mut Vec<String>, prefix: &str) {
    lines.retain(|l| !l.starts_with(prefix));
}

/// A row: its name, what is sent, the status, an extra header the answer must carry.
type Row = (&'static str, Vec<u8>, u16, Option<(&'static str, &'static str)>);

/// Every row of the table.
fn rows() -> Vec<Row> {
    let allow = Some(("allow", "GET"));
    let version = Some(("sec-websocket-version", "13"));
    vec![
        ("POST", head(|l| set(l, "GET", "POST /ws HTTP/1.1")), 405, allow),
        ("HEAD", head(|l| set(l, "GET", "HEAD /ws HTTP/1.1")), 405, allow),
        ("HTTP/1.0", head(|l| set(l, "GET", "GET /ws HTTP/1.0")), 400, None),
        (
            "bad header line",
            head(|l| l.push("no colon here".into())),
            400,
            None,
        ),
        (
            "bare LF",
            b"GET /ws HTTP/1.1\nHost: localhost\nUpgrade: websocket\n\n".to_vec(),
            400,
            None,
        ),
        (
            "bare LF after CRLF lines",
            {
                let mut h = head(|_| {});
                h.truncate(h.len() - 2);
                h.extend_from_slice(b"X-A: b\n\r\n");
                h
            },
            400,
            None,
        ),
        ("no Host", head(|l| remove(l, "Host")), 400, None),
        ("two Host", head(|l| l.push("Host: other".into())), 400, None),
        (
            "Upgrade without websocket",
            head(|l| set(l, "Upgrade", "Upgrade: h2c")),
            400,
            None,
        ),
        (
            "Connection without upgrade",
            head(|l| set(l, "Connection", "Connection: keep-alive")),
            400,
            None,
        ),
        (
            "short key",
            head(|l| set(l, "Sec-WebSocket-Key", "Sec-WebSocket-Key: YWJj")),
            400,
            None,
        ),
        (
            "two keys",
            head(|l| l.push("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into())),
            400,
            None,
        ),
        (
            "two versions",
            head(|l| l.push("Sec-WebSocket-Version: 13".into())),
            400,
            None,
        ),
        (
            "version 8",
            head(|l| set(l, "Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")),
            426,
            version,
        ),
        (
            "no version",
            head(|l| remove(l, "Sec-WebSocket-Version")),
            426,
            version,
        ),
        (
            "head over 16 KiB",
            head(|l| l.push(format!("X-Big: {}", "a".repeat(17 * 1024)))),
            431,
            None,
        ),
        (
            "65 header lines",
            head(|l| l.extend((0..60).map(|i| format!("X-N{i}: v")))),
            431,
            None,
        ),
        (
            "origin not allowed",
            head(|l| set(l, "Origin", "Origin: https://evil.example")),
            403,
            None,
        ),
    ]
}

/// Sends `request`, reads to the end of the stream: the response, lowercased.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A refusal may come before the whole request was read; the rest then fails.
    let _ = stream.write_all(request).await;
    let response = read_until_closed(&mut stream).await;
    String::from_utf8_lossy(&response).to_lowercase()
}

async fn every_row_is_refused_as_documented(subject: Subject) {
    let addr = start(subject).await;
    for (name, request, status, extra) in rows() {
        let response = exchange(addr, &request).await;
        // (hyper answers an HTTP/1.0 request in HTTP/1.0: the status is what counts.)
        assert!(
            response.starts_with("http/1.") && response[9..].starts_with(&format!("{status} ")),
            "{subject:?} {name}: {response}"
        );
        assert!(
            response.contains("\r\nconnection: close\r\n"),
            "{subject:?} {name}: {response}"
        );
        if let Some((header, value)) = extra {
            assert!(
                response.contains(&format!("\r\n{header}: {}\r\n", value.to_lowercase())),
                "{subject:?} {name}: {response}"
            );
        }
    }
    // And the valid head is upgraded, so the refusals above are the rows' own doing.
    let response = {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&head(|_| {})).await.unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    };
    assert!(response.starts_with("http/1.1 101 "), "{subject:?}: {response}");
}

/// Connects, sends `trickle` one byte every 100 ms (nothing if empty): the server must
/// close the connection once the handshake deadline has passed, not long after.
async fn is_closed_at_the_deadline(addr: SocketAddr, trickle: &[u8]) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = trickle.iter().cycle();
    let mut buf = [0; 256];
    let limit = DEADLINE * 6;
    loop {
        assert!(
            started.elapsed() < limit,
            "still open after {:?}",
            started.elapsed()
        );
        if let Some(&byte) = bytes.next() {
            if stream.write_all(&[byte]).await.is_err() {
                return started.elapsed();
            }
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(n)) => panic!(
                "an answer instead of a close: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
}

async fn silent_and_trickling_clients_are_closed_at_the_deadline(subject: Subject) {
    let addr = start(subject).await;
    let silent = is_closed_at_the_deadline(addr, b"").await;
    // A head that would be valid, one byte at a time: it never completes in time.
    let trickle = is_closed_at_the_deadline(addr, &head(|_| {})).await;
    for (what, elapsed) in [("silent", silent), ("trickling", trickle)] {
        assert!(
            elapsed >= DEADLINE - Duration::from_millis(50),
            "{subject:?} {what}: {elapsed:?}"
        );
    }
}

/// On a kept-alive connection of detached mode the heads after the first are hyper's
/// to parse: they are held to the first head's size limits all the same (431).
#[tokio::test]
async fn detached_holds_later_heads_of_a_kept_alive_connection_to_the_same_limits() {
    let addr = start(Subject::Detached).await;
    let too_long = vec![format!("X-Big: {}", "a".repeat(17 * 1024))];
    // With `Host`, one header over the 64.
    let too_many: Vec<String> = (0..64).map(|i| format!("X-N{i}: v")).collect();
    for (name, extra, status) in [
        ("within the limits", vec!["X-Fine: v".to_owned()], 200),
        ("head over 16 KiB", too_long, 431),
        ("65 header lines", too_many, 431),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        // The first answer, whole (its body is `ok`), on a connection kept alive.
        let mut first = Vec::new();
        let mut buf = [0; 4096];
        while !first.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("the first answer")
                .unwrap();
            assert!(n > 0, "{name}: closed after the first request");
            first.extend_from_slice(&buf[..n]);
        }
        assert!(first.starts_with(b"HTTP/1.1 200 "), "{name}");
        let mut second = String::from("GET /ok HTTP/1.1\r\nHost: localhost\r\n");
        for line in extra {
            second.push_str(&line);
            second.push_str("\r\n");
        }
        second.push_str("\r\n");
        let _ = stream.write_all(second.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {answer}"
        );
    }
}

#[tokio::test]
async fn standalone_refuses_every_row_as_documented() {
    every_row_is_refused_as_documented(Subject::Standalone).await;
}

#[tokio::test]
async fn detached_refuses_every_row_as_documented() {
    every_row_is_refused_as_documented(Subject::Detached).await;
}

#[tokio::test]
async fn standalone_closes_silent_and_trickling_clients_at_the_deadline() {
    silent_and_trickling_clients_are_closed_at_the_deadline(Subject::Standalone).await;
}

#[tokio::test]
async fn detached_closes_silent_and_trickling_clients_at_the_deadline() {
    silent_and_trickling_clients_are_closed_at_the_deadline(Subject::Detached).await;
}
