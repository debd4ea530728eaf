//! One server, two ports: WebSocket and raw TCP on the same hub. A session is the
//! engine's, not the transport's, so a session created over one resumes over the
//! other (docs/PROTOCOL.md, "Raw TCP"); and the Rust client speaks raw TCP on every
//! runtime (`tcp://` URLs), refusing clearly when pointed at the wrong port.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tether_tests::client::{recv, send, session, Endpoint};
use tether_tests::harness::{start, Running, ServerRuntime, Setup, TransportKind};
use tether_tests::suite::{app, drop_abruptly, resume};
use ws_driver::client::{ClientError, ClientOptions};

const RUNTIMES: [ServerRuntime; 3] = [ServerRuntime::Tokio, ServerRuntime::AsyncStd, ServerRuntime::Smol];

async fn both_ports(runtime: ServerRuntime) -> (Running, Endpoint, Endpoint) {
    let server = start(
        Setup {
            runtime,
            transport: TransportKind::Tcp,
        },
        app(),
    )
    .await;
    let (ws, tcp) = (Endpoint::WebSocket(server.addr), server.endpoint.clone());
    (server, ws, tcp)
}

/// A session created over raw TCP resumes over WebSocket with exactly the messages
/// it missed, then moves back to raw TCP the same way.
#[tokio::test]
async fn a_session_moves_from_tcp_to_websocket_and_back() {
    for runtime in RUNTIMES {
        let (_server, ws, tcp) = both_ports(runtime).await;
        let (mut alice, created) = session(&tcp, "alice").await;
        let (mut bob, _) = session(&ws, "bob").await;
        for conn in [&mut alice, &mut bob] {
            send(conn, "join", json!("lobby"), Some("j")).await;
            assert_eq!(recv(conn).await["e"], "joined");
        }
        let mut created = created;
        let mut last_seq = 0;
        // Over TCP, then WebSocket, then TCP again.
        for (round, next) in [(0, &ws), (1, &tcp)] {
            send(&mut bob, "say", json!(["lobby", format!("seen {round}")]), None).await;
            let seen = recv(&mut alice).await;
            assert_eq!(seen["p"]["text"], format!("seen {round}"), "{runtime:?}");
            last_seq = seen["s"].as_u64().unwrap();
            drop_abruptly(alice);
            assert_eq!(recv(&mut bob).await["e"], "said.ok");
            for i in 0..3 {
                send(
                    &mut bob,
                    "say",
                    json!(["lobby", format!("missed {round}.{i}")]),
                    None,
                )
                .await;
                assert_eq!(recv(&mut bob).await["e"], "said.ok");
            }
            let (moved, restored) = resume(next, "alice", &created, last_seq).await;
            alice = moved;
            assert_eq!(
                restored["e"], "sys.session.restored",
                "{runtime:?} round {round}: {restored}"
            );
            assert_eq!(restored["p"]["sessionId"], created["sessionId"]);
            assert_eq!(restored["p"]["replayed"], 3);
            for i in 0..3u64 {
                let missed = recv(&mut alice).await;
                assert_eq!(missed["p"]["text"], format!("missed {round}.{i}"));
                assert_eq!(missed["s"].as_u64(), Some(last_seq + 1 + i), "in order, no gap");
            }
            last_seq += 3;
            // The next resume presents the rotated token.
            created["resumeToken"] = restored["p"]["resumeToken"].clone();
            send(&mut alice, "echo", json!(round), Some("e")).await;
            assert_eq!(recv(&mut alice).await["c"], "e");
        }
        // Still in the room after two moves, nothing delivered twice.
        send(&mut bob, "say", json!(["lobby", "after"]), None).await;
        let after = recv(&mut alice).await;
        assert_eq!(after["p"]["text"], "after");
        assert_eq!(after["s"].as_u64(), Some(last_seq + 2), "the echo reply took one");
    }
}

fn options(token: &str) -> ClientOptions {
    let mut options = ClientOptions::with_credential(token);
    options.connect_attempts = Some(2);
    options
}

/// Waits for the client's first session and asks for an echo over it.
async fn echo_over<C>(client: &C) -> serde_json::Value
where
    C: std::ops::Deref<Target = ws_driver::client::Client>,
{
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.query("echo", &json!("over tcp"), None),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    reply.payload_as::<serde_json::Value>().unwrap()
}

/// The Rust client of each runtime speaks raw TCP (`tcp://host:port`), to a server of
/// each runtime.
#[tokio::test]
async fn the_rust_client_of_each_runtime_speaks_raw_tcp() {
    for runtime in RUNTIMES {
        let (_server, _ws, tcp) = both_ports(runtime).await;
        let url = format!("tcp://{}", tcp.socket().unwrap());
        let tokio_client = adapter_tokio::Client::connect(&url, options("user:t"))
            .await
            .unwrap();
        assert_eq!(echo_over(&tokio_client).await, "over tcp");
        let url2 = url.clone();
        let smol_reply = smol::spawn(async move {
            let client = adapter_async_std::SmolClient::connect(&url2, options("user:s"))
                .await
                .unwrap();
            let reply = client.query("echo", &json!("over tcp"), None).await.unwrap();
            reply.payload_as::<serde_json::Value>().unwrap()
        })
        .await;
        assert_eq!(smol_reply, "over tcp", "{runtime:?}");
        let async_std_reply = async_std::task::spawn(async move {
            let client = adapter_async_std::AsyncStdClient::connect(&url, options("user:a"))
                .await
                .unwrap();
            let reply = client.query("echo", &json!("over tcp"), None).await.unwrap();
            reply.payload_as::<serde_json::Value>().unwrap()
        })
        .await;
        assert_eq!(async_std_reply, "over tcp", "{runtime:?}");
    }
}

/// Pointed at the wrong port, the client says so and stops (a 4xx is final, no
/// retry): `ws://` at the raw TCP port is refused with that port's 400, `tcp://` at the
/// WebSocket port with the 400 the WebSocket server answers the preamble with;
/// `tcp://` with the credential in the handshake is refused at once (raw TCP has no
/// headers).
#[tokio::test]
async fn a_client_on_the_wrong_port_is_told_why() {
    let (_server, ws, tcp) = both_ports(ServerRuntime::Tokio).await;
    let tcp_addr: SocketAddr = tcp.socket().unwrap();
    let err = adapter_tokio::Client::connect(&format!("ws://{tcp_addr}/ws"), options("user:x"))
        .await
        .unwrap_err();
    let ClientError::Closed(why) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(why.status, Some(400), "{why:?}");

    let ws_addr = ws.socket().unwrap();
    let err = adapter_tokio::Client::connect(&format!("tcp://{ws_addr}"), options("user:x"))
        .await
        .unwrap_err();
    let ClientError::Closed(why) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(why.status, Some(400), "{why:?}");
    let error = why.error.as_deref().unwrap_or_default();
    assert!(error.contains("length-prefixed"), "{error}");

    let mut handshake = options("user:x");
    handshake.engine.auth_mode = ws_driver::client::AuthMode::Handshake;
    let err = adapter_tokio::Client::start(&format!("tcp://{tcp_addr}"), handshake).unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl(_)), "{err:?}");
}
