//! The raw TCP example (`examples/length_prefixed.rs`), driven by a plain blocking
//! client that frames by hand what docs/PROTOCOL.md ("Raw TCP") says: no tether code
//! on the client side.

#[allow(dead_code)]
#[path = "../examples/length_prefixed.rs"]
mod length_prefixed;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use adapter_async_std::{EngineConfig, SmolServer};
use serde_json::{json, Value};

/// A small message limit, so the test can exceed it cheaply.
const LIMIT: usize = 4096;

const TEXT: u8 = 1;
const CLOSE: u8 = 8;

fn start() -> SocketAddr {
    let mut config = EngineConfig::default();
    config.envelope = config.envelope.with_max_message_size(LIMIT);
    let server = smol::block_on(SmolServer::bind_tcp("127.0.0.1:0", length_prefixed::app(config))).unwrap();
    let addr = server.local_addr().unwrap();
    smol::spawn(server.run()).detach();
    addr
}

/// Connects and exchanges preambles.
fn connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    // A guard against a hang, not a measurement: every answer comes at once.
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"TETHER\x01").unwrap();
    let mut preamble = [0; 7];
    stream.read_exact(&mut preamble).unwrap();
    assert_eq!(&preamble, b"TETHER\x01");
    stream
}

fn write_frame(stream: &mut TcpStream, kind: u8, body: &[u8]) {
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.push(kind);
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
}

fn send(stream: &mut TcpStream, envelope: Value) {
    write_frame(stream, TEXT, envelope.to_string().as_bytes());
}

/// What the server sent next, heartbeats skipped.
#[derive(Debug, PartialEq)]
enum Next {
    Envelope(Value),
    Close(u16, String),
    End,
}

fn recv(stream: &mut TcpStream) -> Next {
    loop {
        let mut header = [0; 5];
        if let Err(err) = stream.read_exact(&mut header) {
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "closed, not {err}");
            return Next::End;
        }
        let mut body = vec![0; u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize];
        stream.read_exact(&mut body).unwrap();
        match header[4] {
            TEXT => {
                let envelope: Value = serde_json::from_slice(&body).unwrap();
                if envelope["e"] != "sys.ping" {
                    return Next::Envelope(envelope);
                }
            }
            CLOSE => {
                let code = u16::from_be_bytes([body[0], body[1]]);
                return Next::Close(code, String::from_utf8(body[2..].to_vec()).unwrap());
            }
            kind => panic!("a frame of kind {kind}"),
        }
    }
}

fn envelope(next: Next) -> Value {
    match next {
        Next::Envelope(envelope) => envelope,
        other => panic!("expected an envelope: {other:?}"),
    }
}

fn authenticate(stream: &mut TcpStream, token: &str) -> Value {
    send(
        stream,
        json!({"v": "1.0", "e": "sys.auth", "p": {"token": token}, "c": "a1"}),
    );
    envelope(recv(stream))
}

#[test]
fn authenticates_creates_a_session_and_answers_events() {
    let addr = start();
    let mut client = connect(addr);
    let created = authenticate(&mut client, "user:alice");
    assert_eq!(created["e"], "sys.session.created", "{created}");
    assert_eq!(created["c"], "a1");
    assert_eq!(created["p"]["userId"], "alice");

    send(
        &mut client,
        json!({"v": "1.0", "e": "echo", "p": {"n": 7}, "c": "e1"}),
    );
    let reply = envelope(recv(&mut client));
    assert_eq!(
        (reply["e"].as_str(), reply["c"].as_str()),
        (Some("echo.reply"), Some("e1"))
    );
    assert_eq!(reply["p"], json!({"n": 7}));

    send(&mut client, json!({"v": "1.0", "e": "nope", "c": "e2"}));
    let error = envelope(recv(&mut client));
    assert_eq!(
        (error["e"].as_str(), error["p"]["code"].as_u64()),
        (Some("sys.error"), Some(4150))
    );

    // A close is answered with a close, then the stream ends.
    write_frame(&mut client, CLOSE, &1000u16.to_be_bytes());
    assert!(matches!(recv(&mut client), Next::Close(1000, _)));
    assert_eq!(recv(&mut client), Next::End);
}

#[test]
fn a_refused_credential_gets_an_error_then_a_close() {
    let addr = start();
    let mut client = connect(addr);
    let error = authenticate(&mut client, "nobody");
    assert_eq!(
        (error["e"].as_str(), error["p"]["code"].as_u64()),
        (Some("sys.error"), Some(4102))
    );
    assert!(matches!(recv(&mut client), Next::Close(4102, _)));
}

#[test]
fn a_frame_over_the_limit_is_closed_with_1009_on_its_length() {
    let addr = start();
    let mut client = connect(addr);
    assert_eq!(authenticate(&mut client, "user:bob")["e"], "sys.session.created");
    // Only the header: the server must refuse on the length, not read the body first.
    let mut header = u32::try_from(LIMIT + 1).unwrap().to_be_bytes().to_vec();
    header.push(TEXT);
    client.write_all(&header).unwrap();
    assert!(matches!(recv(&mut client), Next::Close(1009, _)));
    // Others are unaffected.
    let mut other = connect(addr);
    assert_eq!(authenticate(&mut other, "user:carol")["e"], "sys.session.created");
}

#[test]
fn text_that_is_not_utf8_is_closed_with_1007() {
    let addr = start();
    let mut client = connect(addr);
    write_frame(&mut client, TEXT, &[0xff, 0xfe, 0x22]);
    assert!(matches!(recv(&mut client), Next::Close(1007, _)));
}

#[test]
fn an_http_request_is_answered_400_at_once() {
    let addr = start();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("length-prefixed"), "{answer}");
}
