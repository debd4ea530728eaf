//! The custom-transport example (`examples/length_prefixed.rs`): the session engine
//! over raw TCP with length-prefixed frames, driven by a plain blocking client.

#[allow(dead_code)]
#[path = "../examples/length_prefixed.rs"]
mod length_prefixed;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use ws_session::EngineConfig;

/// A small frame limit, so the test can exceed it cheaply.
const LIMIT: usize = 4096;

fn start() -> SocketAddr {
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(length_prefixed::serve(listener, EngineConfig::default(), LIMIT)).detach();
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    // A guard against a hang, not a measurement: every answer comes at once.
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn write_frame(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
}

fn send(stream: &mut TcpStream, envelope: Value) {
    write_frame(stream, envelope.to_string().as_bytes());
}

/// The next envelope that is not a heartbeat; `None` when the server closed.
fn recv(stream: &mut TcpStream) -> Option<Value> {
    loop {
        let mut header = [0; 4];
        if let Err(err) = stream.read_exact(&mut header) {
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "closed, not {err}");
            return None;
        }
        let mut body = vec![0; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut body).unwrap();
        let envelope: Value = serde_json::from_slice(&body).unwrap();
        if envelope["e"] != "sys.ping" {
            return Some(envelope);
        }
    }
}

fn authenticate(stream: &mut TcpStream, token: &str) -> Value {
    send(
        stream,
        json!({"v": "1.0", "e": "sys.auth", "p": {"token": token}, "c": "a1"}),
    );
    recv(stream).expect("an answer to sys.auth")
}

#[test]
fn authenticates_creates_a_session_and_answers_events() {
    let addr = start();
    let mut client = connect(addr);
    let created = authenticate(&mut client, "user:alice");
    assert_eq!(created["e"], "sys.session.created", "{created}");
    assert_eq!(created["c"], "a1");
    assert_eq!(created["p"]["userId"], "alice");
    assert!(created["p"]["resumeToken"]
        .as_str()
        .is_some_and(|t| t.len() >= 22));

    send(
        &mut client,
        json!({"v": "1.0", "e": "echo", "p": {"n": 7}, "c": "e1"}),
    );
    let reply = recv(&mut client).expect("the echo reply");
    assert_eq!(
        (reply["e"].as_str(), reply["c"].as_str()),
        (Some("echo.reply"), Some("e1"))
    );
    assert_eq!(reply["p"], json!({"n": 7}));
    assert_eq!(reply["s"], 1, "the first message of the session stream");

    send(&mut client, json!({"v": "1.0", "e": "nope", "c": "e2"}));
    let error = recv(&mut client).expect("the error");
    assert_eq!(
        (
            error["e"].as_str(),
            error["c"].as_str(),
            error["p"]["code"].as_u64()
        ),
        (Some("sys.error"), Some("e2"), Some(4200))
    );
}

#[test]
fn a_refused_credential_gets_an_error_then_the_connection_closes() {
    let addr = start();
    let mut client = connect(addr);
    let error = authenticate(&mut client, "nobody");
    assert_eq!(
        (error["e"].as_str(), error["p"]["code"].as_u64()),
        (Some("sys.error"), Some(4102))
    );
    assert_eq!(recv(&mut client), None, "closed after the error");
}

#[test]
fn a_frame_over_the_limit_closes_the_connection() {
    let addr = start();
    let mut client = connect(addr);
    assert_eq!(authenticate(&mut client, "user:bob")["e"], "sys.session.created");
    // Only the header: the server must refuse on the length, not read the body first.
    let len = u32::try_from(LIMIT + 1).unwrap();
    client.write_all(&len.to_be_bytes()).unwrap();
    assert_eq!(recv(&mut client), None, "closed on the length");
    // Others are unaffected.
    let mut other = connect(addr);
    assert_eq!(authenticate(&mut other, "user:carol")["e"], "sys.session.created");
}

#[test]
fn a_frame_that_is_not_utf8_closes_the_connection() {
    let addr = start();
    let mut client = connect(addr);
    write_frame(&mut client, &[0xff, 0xfe, 0x22]);
    assert_eq!(recv(&mut client), None);
}
