//! The parts of the user API beyond one request and its reply: cross-node pub/sub,
//! lifecycle hooks, per-session listeners and handlers that need an authenticated user.
//! The API is shared by every runtime; these run on tokio.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_tokio::{App, Context, InMemoryPubSub};
use serde_json::{json, Value};
use tether_tests::client::{connect, recv, send, session};
use tether_tests::harness::{start, ServerRuntime};
use tether_tests::suite::app;
use ws_driver::ConnectionEvent;
use ws_session::{EngineConfig, SessionEvent};

#[tokio::test]
async fn a_room_broadcast_reaches_members_on_another_node_once() {
    let bus = InMemoryPubSub::new();
    let node_a = start(ServerRuntime::Tokio, app().pubsub(bus.clone())).await;
    let node_b = start(ServerRuntime::Tokio, app().pubsub(bus.clone())).await;
    let (mut alice, _) = session(node_a.addr, "alice").await;
    let (mut bob, _) = session(node_b.addr, "bob").await;
    let (mut carol, _) = session(node_b.addr, "carol").await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        send(ws, "join", json!("lobby"), Some("j")).await;
        assert_eq!(recv(ws).await["e"], "joined");
    }
    send(&mut alice, "say", json!(["lobby", "across nodes"]), Some("s")).await;
    assert_eq!(
        recv(&mut alice).await["e"],
        "said.ok",
        "the sender is excluded on its node"
    );
    for ws in [&mut bob, &mut carol] {
        let said = recv(ws).await;
        assert_eq!(said["p"], json!({"user": "alice", "text": "across nodes"}));
        assert!(
            said["s"].as_u64().is_some(),
            "in the recipient's own session stream"
        );
    }
    // Exactly once: the next thing bob sees is the answer to his own next request.
    send(&mut bob, "echo", json!("next"), Some("n")).await;
    assert_eq!(recv(&mut bob).await["c"], "n");
}

/// A pub/sub backend whose `publish` is broken: it panics on every publication.
struct PanickingPubSub;

impl ws_driver::PubSub for PanickingPubSub {
    fn subscribe(&self, _node: u64) -> futures::channel::mpsc::UnboundedReceiver<ws_session::Publication> {
        futures::channel::mpsc::unbounded().1
    }

    fn publish(&self, _node: u64, _publication: ws_session::Publication) {
        panic!("a bug in a pub/sub backend");
    }
}

#[tokio::test]
async fn a_panicking_pubsub_backend_loses_its_publications_not_the_server() {
    let server = start(ServerRuntime::Tokio, app().pubsub(PanickingPubSub)).await;
    let (mut alice, _) = session(server.addr, "alice").await;
    let (mut bob, _) = session(server.addr, "bob").await;
    for ws in [&mut alice, &mut bob] {
        send(ws, "join", json!("lobby"), Some("j")).await;
        assert_eq!(recv(ws).await["e"], "joined");
    }
    // Both broadcasts are published (publish runs off the hub and panics); the local
    // members still get them, and the server keeps serving.
    for text in ["first", "second"] {
        send(&mut alice, "say", json!(["lobby", text]), Some("s")).await;
        assert_eq!(recv(&mut alice).await["e"], "said.ok");
        assert_eq!(recv(&mut bob).await["p"]["text"], text);
    }
    send(&mut bob, "echo", json!("still served"), Some("e")).await;
    assert_eq!(recv(&mut bob).await["p"], "still served");
}

#[tokio::test]
async fn lifecycle_hooks_see_connections_and_sessions_come_and_go() {
    let sessions_seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let connections_seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let (sessions, connections) = (sessions_seen.clone(), connections_seen.clone());
    let app = app()
        .on_session(move |event, _| {
            let sessions = sessions.clone();
            async move {
                let name = match event {
                    SessionEvent::Created { .. } => "created",
                    SessionEvent::Suspended { .. } => "suspended",
                    SessionEvent::Resumed { .. } => "resumed",
                    SessionEvent::Expired { .. } => "expired",
                    SessionEvent::Closed { .. } => "closed",
                    _ => "other",
                };
                sessions.lock().unwrap().push(name);
            }
        })
        .on_connection(move |event, _| {
            let connections = connections.clone();
            async move {
                let name = match event {
                    ConnectionEvent::Connected { peer, .. } => {
                        assert!(peer.is_some_and(|p| p.ip().is_loopback()));
                        "connected"
                    }
                    ConnectionEvent::Disconnected { .. } => "disconnected",
                    _ => "other",
                };
                connections.lock().unwrap().push(name);
            }
        })
        .config(EngineConfig {
            resume_window: Duration::from_millis(200),
            ..EngineConfig::default()
        });
    let server = start(ServerRuntime::Tokio, app).await;
    let (ws, _) = session(server.addr, "alice").await;
    drop(ws);
    // Hooks run off the hub: each stream keeps its own order, not one with the other.
    let expected_sessions = ["created", "suspended", "expired"];
    let expected_connections = ["connected", "disconnected"];
    for _ in 0..100 {
        if sessions_seen.lock().unwrap().len() >= expected_sessions.len()
            && connections_seen.lock().unwrap().len() >= expected_connections.len()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*sessions_seen.lock().unwrap(), expected_sessions);
    assert_eq!(*connections_seen.lock().unwrap(), expected_connections);
}

#[tokio::test]
async fn a_session_hook_runs_in_order_with_the_sessions_handlers() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (hook_seen, handler_seen) = (seen.clone(), seen.clone());
    let app = app()
        .on_session(move |event, _| {
            let seen = hook_seen.clone();
            async move {
                if let SessionEvent::Created { user, .. } = event {
                    // Slow: the session's first message arrives while it sleeps.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    seen.lock().unwrap().push(format!("created {user}"));
                }
            }
        })
        .on("note", move |ctx: Context| {
            let seen = handler_seen.clone();
            async move {
                seen.lock().unwrap().push(format!("note {}", ctx.user_id()));
                ctx.reply("noted", &())
            }
        });
    let server = start(ServerRuntime::Tokio, app).await;
    let (mut alice, _) = session(server.addr, "alice").await;
    send(&mut alice, "note", json!(null), Some("n")).await;
    assert_eq!(recv(&mut alice).await["e"], "noted");
    assert_eq!(*seen.lock().unwrap(), ["created alice", "note alice"]);
}

#[tokio::test]
async fn a_panicking_hook_stops_neither_the_session_nor_the_other_hooks() {
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let (sessions, connections) = (seen.clone(), seen.clone());
    let app = app()
        .on_session(|event, _| async move {
            if matches!(event, SessionEvent::Created { .. }) {
                panic!("a bug in a session hook");
            }
        })
        .on_session(move |event, _| {
            let seen = sessions.clone();
            async move {
                if matches!(event, SessionEvent::Created { .. }) {
                    seen.lock().unwrap().push("second session hook");
                }
            }
        })
        .on_connection(|_event, _| -> std::future::Ready<()> { panic!("a bug before the future") })
        .on_connection(move |event, _| {
            let seen = connections.clone();
            async move {
                if matches!(event, ConnectionEvent::Connected { .. }) {
                    seen.lock().unwrap().push("second connection hook");
                }
            }
        });
    let server = start(ServerRuntime::Tokio, app).await;
    let (mut alice, _) = session(server.addr, "alice").await;
    send(&mut alice, "echo", json!("still served"), Some("e")).await;
    assert_eq!(recv(&mut alice).await["p"], "still served");
    let (mut bob, _) = session(server.addr, "bob").await;
    send(&mut bob, "echo", json!("so is the hub"), Some("e")).await;
    assert_eq!(recv(&mut bob).await["p"], "so is the hub");
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "second connection hook",
            "second connection hook",
            "second session hook",
            "second session hook"
        ]
    );
}

#[tokio::test]
async fn a_listener_registered_after_login_is_reachable_only_by_that_session() {
    let app = app().on("login", |ctx: Context| async move {
        let password: String = ctx.payload()?;
        if password != "open sesame" {
            return Err(ws_driver::HandlerError::new(4401, "wrong password"));
        }
        ctx.listen("vault.open", |ctx: Context| async move {
            ctx.reply("vault.opened", &json!({ "for": ctx.user_id().as_str() }))
        });
        ctx.reply("login.ok", &())
    });
    let server = start(ServerRuntime::Tokio, app).await;
    let (mut alice, _) = session(server.addr, "alice").await;
    let (mut mallory, _) = session(server.addr, "mallory").await;

    send(&mut alice, "vault.open", json!(null), Some("v0")).await;
    assert_eq!(
        recv(&mut alice).await["p"]["code"],
        ws_session::ErrorCode::UNKNOWN_EVENT.0,
        "no listener before the login"
    );
    send(&mut alice, "login", json!("open sesame"), Some("l")).await;
    assert_eq!(recv(&mut alice).await["e"], "login.ok");
    send(&mut alice, "vault.open", json!(null), Some("v1")).await;
    let opened: Value = recv(&mut alice).await;
    assert_eq!(
        (opened["e"].as_str(), opened["p"]["for"].as_str()),
        (Some("vault.opened"), Some("alice"))
    );

    send(&mut mallory, "login", json!("guess"), Some("l")).await;
    assert_eq!(recv(&mut mallory).await["p"]["code"], 4401);
    send(&mut mallory, "vault.open", json!(null), Some("v2")).await;
    assert_eq!(
        recv(&mut mallory).await["p"]["code"],
        ws_session::ErrorCode::UNKNOWN_EVENT.0,
        "another session's listener is not reachable"
    );
}

#[tokio::test]
async fn authenticated_only_handlers_refuse_anonymous_sessions() {
    let app = App::new()
        .authenticate(|token: String, _info| async move { Ok(token.trim_start_matches("user:").to_owned()) })
        .on("public", |ctx: Context| async move {
            ctx.reply("public.ok", &ctx.is_anonymous())
        })
        .on_authenticated("private", |ctx: Context| async move {
            ctx.reply("private.ok", &ctx.user_id().as_str())
        })
        .config(EngineConfig {
            allow_anonymous: true,
            ..EngineConfig::default()
        });
    let server = start(ServerRuntime::Tokio, app).await;

    let mut anonymous = connect(server.addr, None).await;
    assert_eq!(recv(&mut anonymous).await["e"], "sys.session.created");
    send(&mut anonymous, "public", json!(null), Some("a")).await;
    assert_eq!(recv(&mut anonymous).await["p"], true);
    send(&mut anonymous, "private", json!(null), Some("b")).await;
    let refused = recv(&mut anonymous).await;
    assert_eq!(
        (refused["p"]["code"].as_u64(), refused["c"].as_str()),
        (Some(4101), Some("b"))
    );

    let (mut alice, _) = session(server.addr, "alice").await;
    send(&mut alice, "private", json!(null), Some("c")).await;
    assert_eq!(recv(&mut alice).await["p"], "alice");
}
