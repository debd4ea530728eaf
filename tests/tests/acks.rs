//! Acknowledgements (`sys.ack`) trim the replay buffer however the connection goes on:
//! a server connection may hold the latest one back and hand it to the engine with
//! its next input or write report (so that acknowledgements alone do not wake the
//! hub), and when nothing follows, with the connection's end.

use serde_json::{json, Value};
use tether_tests::client::{recv, send, session, Conn};
use tether_tests::harness::{self, ServerRuntime};
use tether_tests::suite::{app, drop_abruptly, resume};

/// Three echoes to `ws`; the `s` of the last.
async fn three_replies(ws: &mut Conn) -> u64 {
    let mut last = 0;
    for i in 0..3 {
        send(ws, "echo", json!(i), Some("e")).await;
        let reply = recv(ws).await;
        assert_eq!(reply["e"], "echo.reply", "{reply}");
        last = reply["s"].as_u64().expect("in the stream");
    }
    last
}

/// `sys.ack` as tether's clients write it.
fn ack(seq: u64) -> String {
    format!(r#"{{"v":"1.0","e":"sys.ack","p":{{"seq":{seq}}}}}"#)
}

async fn resume_from_zero(addr: &tether_tests::client::Endpoint, created: &Value) -> Value {
    let (_ws, answer) = resume(addr.clone(), "alice", created, 0).await;
    answer
}

#[tokio::test]
async fn an_acknowledgement_with_nothing_after_it_is_applied_when_the_connection_ends() {
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    let addr = &server.endpoint;
    let (mut alice, created) = session(addr, "alice").await;
    let last = three_replies(&mut alice).await;
    alice.send_text(ack(last)).await;
    drop_abruptly(alice);
    // The three replies were acknowledged, so they are gone from the replay buffer:
    // a resume from before them is a gap.
    let answer = resume_from_zero(addr, &created).await;
    assert_eq!(answer["e"], "sys.error", "{answer}");
    assert_eq!(answer["p"]["code"], 4106, "{answer}");
    assert_eq!(answer["p"]["reason"], "gap", "{answer}");
}

#[tokio::test]
async fn without_the_acknowledgement_the_same_resume_replays_everything() {
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    let addr = &server.endpoint;
    let (mut alice, created) = session(addr, "alice").await;
    three_replies(&mut alice).await;
    drop_abruptly(alice);
    let answer = resume_from_zero(addr, &created).await;
    assert_eq!(answer["e"], "sys.session.restored", "{answer}");
    assert_eq!(answer["p"]["replayed"], 3, "{answer}");
}

#[tokio::test]
async fn an_acknowledgement_followed_by_a_message_is_applied_with_it() {
    let server = harness::start(ServerRuntime::Tokio, app()).await;
    let addr = &server.endpoint;
    let (mut alice, created) = session(addr, "alice").await;
    let last = three_replies(&mut alice).await;
    alice.send_text(ack(last)).await;
    // The fourth reply is the only one left unacknowledged.
    send(&mut alice, "echo", json!(3), Some("e")).await;
    let fourth = recv(&mut alice).await;
    assert_eq!(fourth["s"].as_u64(), Some(last + 1), "{fourth}");
    drop_abruptly(alice);
    let (_ws, answer) = resume(addr.clone(), "alice", &created, last).await;
    assert_eq!(answer["e"], "sys.session.restored", "{answer}");
    assert_eq!(answer["p"]["replayed"], 1, "{answer}");
}
