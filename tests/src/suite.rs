//! The integration suite every server adapter runs: each body takes the runtime to
//! start its server on and the transport its client connects over ([`Setup`]), and
//! drives it with a client no tether code wrote (tokio-tungstenite for WebSocket; for
//! raw TCP, framing written from docs/PROTOCOL.md; ws-driver's in-memory pair). Each
//! test states one behaviour a user relies on. [`runtime_suite!`](crate::runtime_suite)
//! instantiates every body for one runtime and transport, and says which bodies are
//! one transport's only.

use std::time::Duration;

use adapter_tokio::{App, Context, HandlerError, Next};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use ws_session::EngineConfig;

use crate::client::{closed_with, connect, recv, send, session, Conn, Endpoint, Received, WAIT};
use crate::harness::{start, Setup, TransportKind};

/// The application under test: tokens `user:<name>` authenticate as `<name>`.
pub fn app() -> App {
    App::new()
        .authenticate(|token: String, _info| async move {
            token
                .strip_prefix("user:")
                .map(str::to_owned)
                .ok_or_else(|| "tokens look like user:<name>".to_owned())
        })
        .on("echo", |ctx: Context| async move {
            let value: Value = ctx.payload()?;
            ctx.reply("echo.reply", &value)
        })
        .on("fail", |_ctx: Context| async move {
            Err(HandlerError::new(4242, "asked to fail"))
        })
        .on(
            "panic",
            |_ctx: Context| async move { panic!("a bug in a handler") },
        )
        .on("join", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.join(&room).await?;
            ctx.reply("joined", &room)
        })
        .on("say", |ctx: Context| async move {
            let (room, text): (String, String) = ctx.payload()?;
            ctx.to_room_others(
                &room,
                "said",
                &json!({ "user": ctx.user_id().as_str(), "text": text }),
            )?;
            ctx.reply("said.ok", &())
        })
}

/// A bearer token creates a session.
pub async fn a_bearer_token_creates_a_session(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (_ws, created) = session(addr, "alice").await;
    assert_eq!(created["userId"], "alice");
    assert!(created["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
    let token = created["resumeToken"].as_str().unwrap();
    assert!(token.len() >= 22, "a resume token of 128 bits or more: {token}");
    assert_ne!(created["sessionId"], created["resumeToken"]);
}

/// A refused credential gets a clear error and a close.
pub async fn a_refused_credential_gets_a_clear_error_and_a_close(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let mut ws = connect(addr, Some("nobody")).await;
    let error = recv(&mut ws).await;
    assert_eq!(error["e"], "sys.error");
    assert_eq!(error["p"]["code"], 4102);
    assert!(
        error["p"]["message"].as_str().unwrap().contains("user:<name>"),
        "{error}"
    );
    assert_eq!(closed_with(&mut ws).await, 4102);
}

/// Replies and errors carry the correlation id.
pub async fn replies_and_errors_carry_the_correlation_id(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (mut ws, _) = session(addr, "alice").await;
    send(&mut ws, "echo", json!({"n": 1}), Some("c-1")).await;
    let reply = recv(&mut ws).await;
    assert_eq!(
        (reply["e"].as_str(), reply["c"].as_str()),
        (Some("echo.reply"), Some("c-1"))
    );
    assert_eq!(reply["p"], json!({"n": 1}));
    send(&mut ws, "fail", json!(null), Some("c-2")).await;
    let error = recv(&mut ws).await;
    assert_eq!(
        (error["e"].as_str(), error["c"].as_str()),
        (Some("sys.error"), Some("c-2"))
    );
    assert_eq!(error["p"]["code"], 4242);
    send(&mut ws, "no.such.event", json!(null), Some("c-3")).await;
    let unknown = recv(&mut ws).await;
    assert_eq!(
        (unknown["p"]["code"].as_u64(), unknown["c"].as_str()),
        (Some(4150), Some("c-3"))
    );
    // A handler that panics is an internal error for that request, and the session's
    // later messages are still handled.
    send(&mut ws, "panic", json!(null), Some("c-4")).await;
    let internal = recv(&mut ws).await;
    assert_eq!(
        (internal["p"]["code"].as_u64(), internal["c"].as_str()),
        (Some(4199), Some("c-4"))
    );
    send(&mut ws, "echo", json!("still here"), Some("c-5")).await;
    assert_eq!(recv(&mut ws).await["p"], "still here");
}

/// A room broadcast reaches the others but not the sender.
pub async fn a_room_broadcast_reaches_the_others_but_not_the_sender(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (mut alice, _) = session(addr, "alice").await;
    let (mut bob, _) = session(addr, "bob").await;
    for ws in [&mut alice, &mut bob] {
        send(ws, "join", json!("lobby"), Some("j")).await;
        assert_eq!(recv(ws).await["e"], "joined");
    }
    send(&mut alice, "say", json!(["lobby", "hi"]), Some("s")).await;
    assert_eq!(
        recv(&mut alice).await["e"],
        "said.ok",
        "the sender gets its reply, not the broadcast"
    );
    let said = recv(&mut bob).await;
    assert_eq!(said["e"], "said");
    assert_eq!(said["p"], json!({"user": "alice", "text": "hi"}));
}

/// Middleware can stop a message.
pub async fn middleware_can_stop_a_message(setup: Setup) {
    let app = app().middleware(|ctx: Context, next: Next| async move {
        if ctx.event() == "echo" && ctx.payload_raw() == Some("\"forbidden\"") {
            return Err(HandlerError::new(4403, "stopped by middleware"));
        }
        next.run(ctx).await
    });
    let server = start(setup, app).await;
    let addr = &server.endpoint;
    let (mut ws, _) = session(addr, "alice").await;
    send(&mut ws, "echo", json!("forbidden"), Some("m1")).await;
    let stopped = recv(&mut ws).await;
    assert_eq!(
        (stopped["p"]["code"].as_u64(), stopped["c"].as_str()),
        (Some(4403), Some("m1"))
    );
    send(&mut ws, "echo", json!("fine"), Some("m2")).await;
    assert_eq!(recv(&mut ws).await["p"], "fine");
}

/// A bad envelope gets a sys error and the connection stays.
pub async fn a_bad_envelope_gets_a_sys_error_and_the_connection_stays(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (mut ws, _) = session(addr, "alice").await;
    ws.send_text("{not json".to_owned()).await;
    let error = recv(&mut ws).await;
    // Not JSON: 4002; on a MessagePack connection it went as a text frame: 4117.
    let code = match ws.codec() {
        ws_proto::envelope::Codec::MsgPack => 4117,
        _ => 4002,
    };
    assert_eq!(
        (error["e"].as_str(), error["p"]["code"].as_u64()),
        (Some("sys.error"), Some(code))
    );
    send(&mut ws, "echo", json!(1), Some("after")).await;
    assert_eq!(recv(&mut ws).await["c"], "after");
}

/// An oversized message is closed with 1009.
pub async fn an_oversized_message_is_closed_with_1009(setup: Setup) {
    let mut config = EngineConfig::default();
    config.envelope = config.envelope.with_max_message_size(1024);
    let server = start(setup, app().config(config)).await;
    let addr = &server.endpoint;
    let (mut ws, _) = session(addr, "alice").await;
    ws.send_text("x".repeat(2048)).await;
    assert_eq!(closed_with(&mut ws).await, 1009);
}

/// A connection that never authenticates is closed with 4103 at the authentication
/// deadline, whatever carries it.
pub async fn a_connection_that_never_authenticates_is_closed_at_the_auth_deadline(setup: Setup) {
    let config = EngineConfig {
        auth_timeout: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let server = start(setup, app().config(config)).await;
    let mut silent = connect(&server.endpoint, None).await;
    assert_eq!(closed_with(&mut silent).await, 4103);
    // The deadline is that connection's: a session opened now is served.
    let (mut ws, _) = session(&server.endpoint, "alice").await;
    send(&mut ws, "echo", json!("after"), Some("a")).await;
    assert_eq!(recv(&mut ws).await["c"], "a");
}

/// Graceful shutdown closes connections with 1001.
pub async fn graceful_shutdown_closes_connections_with_1001(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (mut ws, _) = session(addr, "alice").await;
    let listening: Vec<_> = [Some(server.addr), addr.socket()].into_iter().flatten().collect();
    let stopped = server.stop();
    assert_eq!(closed_with(&mut ws).await, 1001);
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("run_until returns")
        .expect("run_until ends without an error");
    for addr in listening {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} no longer accepting"
        );
    }
}

/// Heartbeat and resume timers short enough for a test.
pub fn fast_timers() -> EngineConfig {
    EngineConfig {
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(100),
        resume_window: Duration::from_millis(600),
        ..EngineConfig::default()
    }
}

/// A silent client is closed by the heartbeat.
pub async fn a_silent_client_is_closed_by_the_heartbeat(setup: Setup) {
    let server = start(setup, app().config(fast_timers())).await;
    let addr = &server.endpoint;
    // The server counts from the connection's opening: start the clock before it, so
    // that a timer firing exactly on time (async-io's do; tokio's round up to the next
    // millisecond) still passes the lower bound.
    let started = std::time::Instant::now();
    let (mut ws, _) = session(addr, "alice").await;
    // Read without ever answering `sys.ping` (tungstenite answers WebSocket pings,
    // the other transports have none).
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Received::Text(text)) if text.contains("sys.ping") => pings += 1,
            Some(Received::Close(code)) => break code,
            Some(_) => {}
            None => panic!("expected a close, the connection ended"),
        }
    };
    assert_eq!(code, 4104, "idle timeout");
    assert!(pings >= 1, "pinged before being dropped");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before interval + idle timeout"
    );
}

/// Drops `ws` without a closing handshake, as a lost network does.
pub fn drop_abruptly(ws: Conn) {
    drop(ws);
}

/// Opens a new session as `name` and asks it to resume `created` from `last_seq`;
/// returns the connection and the answer.
pub async fn resume(addr: impl Into<Endpoint>, name: &str, created: &Value, last_seq: u64) -> (Conn, Value) {
    let (mut ws, _fresh) = session(addr, name).await;
    let request = json!({
        "sessionId": created["sessionId"],
        "resumeToken": created["resumeToken"],
        "lastSeq": last_seq,
    });
    send(&mut ws, "sys.reconnect.request", request, Some("r")).await;
    let answer = recv(&mut ws).await;
    (ws, answer)
}

/// A dropped session resumes with exactly the missed messages.
pub async fn a_dropped_session_resumes_with_exactly_the_missed_messages(setup: Setup) {
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (mut alice, created) = session(addr, "alice").await;
    let (mut bob, _) = session(addr, "bob").await;
    for ws in [&mut alice, &mut bob] {
        send(ws, "join", json!("lobby"), Some("j")).await;
        assert_eq!(recv(ws).await["e"], "joined");
    }
    send(&mut bob, "say", json!(["lobby", "before"]), None).await;
    let before = recv(&mut alice).await;
    assert_eq!(before["p"]["text"], "before");
    let last_seq = before["s"].as_u64().unwrap();
    drop_abruptly(alice);
    assert_eq!(recv(&mut bob).await["e"], "said.ok");
    for i in 0..5 {
        send(&mut bob, "say", json!(["lobby", format!("missed {i}")]), None).await;
        assert_eq!(recv(&mut bob).await["e"], "said.ok");
    }

    let (mut alice, restored) = resume(addr, "alice", &created, last_seq).await;
    assert_eq!(restored["e"], "sys.session.restored", "{restored}");
    assert_eq!(restored["c"], "r");
    assert_eq!(restored["p"]["replayed"], 5);
    assert_eq!(restored["p"]["sessionId"], created["sessionId"]);
    assert_ne!(
        restored["p"]["resumeToken"], created["resumeToken"],
        "the token is rotated"
    );
    for i in 0..5u64 {
        let missed = recv(&mut alice).await;
        assert_eq!(missed["p"]["text"], format!("missed {i}"));
        assert_eq!(missed["s"].as_u64(), Some(last_seq + 1 + i), "in order, no gap");
    }
    // Still in the room, and nothing is delivered twice.
    send(&mut bob, "say", json!(["lobby", "after"]), None).await;
    let after = recv(&mut alice).await;
    assert_eq!(after["p"]["text"], "after");
    assert_eq!(after["s"].as_u64(), Some(last_seq + 6));
}

/// Resumes with used stolen or expired tokens are refused.
pub async fn resumes_with_used_stolen_or_expired_tokens_are_refused(setup: Setup) {
    let server = start(setup, app().config(fast_timers())).await;
    let addr = &server.endpoint;
    let (alice, created) = session(addr, "alice").await;
    drop_abruptly(alice);

    // Another user presenting alice's session and token.
    let (_mallory, refused) = resume(addr, "mallory", &created, 0).await;
    assert_eq!(
        (refused["e"].as_str(), refused["p"]["code"].as_u64()),
        (Some("sys.error"), Some(4106))
    );
    assert_eq!(refused["p"]["reason"], "foreign");

    // Alice resumes; once she has spoken on the restored connection (so she holds the
    // new token), the token she used is spent.
    let (mut alice, restored) = resume(addr, "alice", &created, 0).await;
    assert_eq!(restored["e"], "sys.session.restored");
    send(&mut alice, "echo", json!("got the new token"), Some("e")).await;
    assert_eq!(recv(&mut alice).await["c"], "e");
    drop_abruptly(alice);
    let (_again, reused) = resume(addr, "alice", &created, 0).await;
    assert_eq!(reused["p"]["reason"], "used");

    // Past the resume window, even the fresh token no longer works.
    let fresh = json!({ "sessionId": created["sessionId"], "resumeToken": restored["p"]["resumeToken"] });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_late, expired) = resume(addr, "alice", &fresh, 0).await;
    assert_eq!(expired["p"]["code"], 4106);
    assert!(
        matches!(expired["p"]["reason"].as_str(), Some("expired" | "unknown")),
        "{expired}"
    );
}

/// A slow consumer is cut off while others keep their latency.
pub async fn a_slow_consumer_is_cut_off_while_others_keep_their_latency(setup: Setup) {
    let config = EngineConfig {
        max_outbound_bytes: 256 * 1024,
        rate_limit_per_second: 1_000_000,
        rate_limit_burst: 1_000_000,
        ..EngineConfig::default()
    };
    let server = start(setup, app().config(config)).await;
    let addr = &server.endpoint;
    let handle = server.handle.clone();
    let (mut slow, _) = session(addr, "slow").await;
    let (mut fast, _) = session(addr, "fast").await;
    // 40 MiB of broadcasts: far more than the socket buffers of a client that never reads.
    let chunk = "x".repeat(16 * 1024);
    let started = std::time::Instant::now();
    for _ in 0..2560 {
        handle.broadcast("bulk", &chunk).unwrap();
        // The fast client keeps up.
        let got = recv(&mut fast).await;
        assert_eq!(got["e"], "bulk");
    }
    let fast_elapsed = started.elapsed();
    // The slow one was closed (or dropped, once its socket stalled) and its session
    // suspended, not kept growing.
    let metrics = handle.metrics().await.unwrap();
    assert!(metrics.slow_consumer_drops >= 1, "{metrics:?}");
    let mut closed = false;
    while let Ok(received) = tokio::time::timeout(WAIT, slow.next()).await {
        match received {
            Some(Received::Close(code)) => {
                assert_eq!(code, 4110);
                closed = true;
                break;
            }
            Some(_) => continue,
            None => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the slow consumer's connection ended");
    assert!(
        fast_elapsed < Duration::from_secs(20),
        "the fast client was not held back: {fast_elapsed:?}"
    );
}

/// An origin outside the allow list is refused with 403.
pub async fn an_origin_outside_the_allow_list_is_refused_with_403(setup: Setup) {
    let config = EngineConfig {
        allowed_origins: Some(vec!["https://chat.example".to_owned()]),
        ..EngineConfig::default()
    };
    let server = start(setup, app().config(config)).await;
    let addr = server.addr;
    for (origin, allowed) in [("https://chat.example", true), ("https://evil.example", false)] {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        request
            .headers_mut()
            .insert("authorization", "Bearer user:alice".parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => {
                assert!(allowed, "{origin} was let in");
                let mut ws = Conn::WebSocket(Box::new(ws));
                assert_eq!(recv(&mut ws).await["e"], "sys.session.created");
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert!(!allowed, "{origin} was refused");
                assert_eq!(response.status(), 403);
            }
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
}

/// A client that floods pings and never reads is rate-limited like any other sender
/// and closed with 1008; the server neither answers every ping nor stops serving the
/// others.
pub async fn a_ping_flood_from_a_client_that_never_reads_is_closed_with_1008(setup: Setup) {
    use tokio::io::AsyncWriteExt;
    use ws_proto::frame::OpCode;
    use ws_proto::Event;

    let server = start(setup, app()).await;
    let addr = server.addr;
    let (mut bystander, _) = session(addr, "bystander").await;
    let mut flooder = crate::raw::RawClient::connect(addr, "user:flood", 4096).await;
    // 100,000 pings of 125 bytes (13 MB), written without reading a byte.
    let ping = crate::raw::client_frame(OpCode::Ping, &[b'p'; 125]);
    let batch: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    let pings = 100_000;
    for _ in 0..pings / 1000 {
        // Once the server has closed, the rest of the flood has nowhere to go.
        if flooder.stream.write_all(&batch).await.is_err() {
            break;
        }
    }
    let events = tokio::time::timeout(Duration::from_secs(30), flooder.read_to_close())
        .await
        .expect("the flooding connection ends");
    let pongs = events.iter().filter(|e| matches!(e, Event::Pong(_))).count();
    let close = events.last().expect("a close");
    assert!(
        matches!(close, Event::Close(frame) if frame.code == Some(ws_proto::CloseCode::POLICY_VIOLATION)),
        "{close:?}"
    );
    // The rate limit (100 burst, 20 strikes) closed it long before the flood ended;
    // the pings read meanwhile were answered at most once each, coalesced when stalled.
    assert!(
        pongs <= 5_000,
        "{pongs} pongs for a flood closed at the rate limit"
    );
    let metrics = server.handle.metrics().await.unwrap();
    assert!(metrics.rate_limited >= 20, "{metrics:?}");
    // The others were served throughout.
    send(&mut bystander, "echo", json!("still here"), Some("b")).await;
    assert_eq!(recv(&mut bystander).await["p"], "still here");
}

/// How many sessions end together in
/// [`a_slow_session_hook_does_not_hold_up_other_clients`].
pub const ENDING_TOGETHER: usize = 1000;

/// The longest `sys.ping` → `sys.pong` round trip a bystander may see while the hooks
/// of [`ENDING_TOGETHER`] ended sessions run. A hook that held up the hub would cost
/// the bystander its 1 s sleep (9.9 s in the chat before hooks left the hub); the bound
/// leaves room for a loaded 2-core machine (162 ms seen once under four parallel builds,
/// 7–22 ms usually).
pub const BYSTANDER_BOUND: Duration = Duration::from_millis(250);

/// Sends `sys.ping` with correlation id `c` and returns how long the `sys.pong` took.
pub async fn ping_round_trip(ws: &mut Conn, c: &str) -> Duration {
    let sent = std::time::Instant::now();
    send(ws, "sys.ping", json!(null), Some(c)).await;
    loop {
        let answer = recv(ws).await;
        if answer["e"] == "sys.pong" && answer["c"] == c {
            return sent.elapsed();
        }
    }
}

/// A slow session hook does not hold up other clients: while a hook sleeps 1 s (an
/// async sleep of the server's runtime) for each of 1000 sessions whose resume window
/// runs out together, another client's `sys.ping` is answered within 50 ms, and the
/// hooks run side by side (all done in seconds, not 1000 s one after the other).
pub async fn a_slow_session_hook_does_not_hold_up_other_clients(setup: Setup) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use ws_session::SessionEvent;

    // Long enough that every session is suspended before the first one expires: the
    // measurement covers the expiries and the hooks, not the 1000 disconnections.
    let resume_window = Duration::from_secs(1);
    let config = EngineConfig {
        resume_window,
        // The bystander pings faster than the default rate limit allows.
        rate_limit_per_second: 10_000,
        rate_limit_burst: 10_000,
        ..EngineConfig::default()
    };
    #[derive(Default)]
    struct Counts {
        suspended: AtomicUsize,
        started: AtomicUsize,
        finished: AtomicUsize,
    }
    let counts: Arc<Counts> = Arc::default();
    let hook_counts = counts.clone();
    let app = app()
        .config(config)
        .on_session(move |event: SessionEvent, _server| {
            let counts = hook_counts.clone();
            async move {
                match event {
                    SessionEvent::Suspended { .. } => {
                        counts.suspended.fetch_add(1, Ordering::SeqCst);
                    }
                    SessionEvent::Expired { .. } | SessionEvent::Closed { .. } => {
                        counts.started.fetch_add(1, Ordering::SeqCst);
                        setup.runtime.sleep(Duration::from_secs(1)).await;
                        counts.finished.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
    let server = start(setup, app).await;
    let addr = &server.endpoint;
    let (mut bystander, _) = session(addr, "bystander").await;
    let sessions: Vec<Conn> = futures::stream::iter(0..ENDING_TOGETHER)
        .map(|i| async move { session(addr, &format!("s{i}")).await.0 })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(sessions.len(), ENDING_TOGETHER);

    // Dropped together, the sessions are suspended together and expire together.
    let dropped = std::time::Instant::now();
    drop(sessions);
    while counts.suspended.load(Ordering::SeqCst) < ENDING_TOGETHER {
        assert!(
            dropped.elapsed() < WAIT,
            "the dropped sessions were not all suspended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        counts.started.load(Ordering::SeqCst),
        0,
        "a session expired before the measurement began"
    );
    ping_round_trip(&mut bystander, "warm-up").await;
    let mut worst = Duration::ZERO;
    let mut pings = 0u32;
    // Until every hook has started (the hub has handed out every expiry) and a while
    // after, while the hooks sleep.
    let mut all_started: Option<std::time::Instant> = None;
    while !matches!(all_started, Some(at) if at.elapsed() >= Duration::from_millis(300)) {
        assert!(
            dropped.elapsed() < resume_window + WAIT,
            "the hooks of the ended sessions did not all start: {} did",
            counts.started.load(Ordering::SeqCst)
        );
        pings += 1;
        worst = worst.max(ping_round_trip(&mut bystander, &format!("p{pings}")).await);
        if all_started.is_none() && counts.started.load(Ordering::SeqCst) == ENDING_TOGETHER {
            all_started = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        worst < BYSTANDER_BOUND,
        "a bystander's sys.ping took {worst:?} (worst of {pings}) while {ENDING_TOGETHER} session hooks ran"
    );
    // Side by side: 1000 hooks of 1 s each end within seconds.
    while counts.finished.load(Ordering::SeqCst) < ENDING_TOGETHER {
        assert!(
            dropped.elapsed() < resume_window + 2 * WAIT,
            "the hooks ran one after the other: {} of {ENDING_TOGETHER} done",
            counts.finished.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{setup:?}: worst bystander round trip {worst:?} over {pings} pings");
}

/// Claims an authenticator attaches to a session, as the suite's richer app reads them.
#[derive(Debug, PartialEq, Eq)]
pub struct Role(pub String);

/// State shared by every handler of the app: a counter of `whoami` calls.
pub struct Calls(pub std::sync::atomic::AtomicU64);

/// How many messages this session sent: data a middleware keeps per session.
pub struct Seen(pub u64);

/// Application state, the authenticator's claims, per-session data and the connection's
/// request reach every handler without clones, and survive a resume.
pub async fn state_claims_and_session_data_reach_handlers(setup: Setup) {
    use std::sync::atomic::Ordering;
    let app = App::new()
        .with_state(Calls(std::sync::atomic::AtomicU64::new(0)))
        // Tokens look like `user:<name>:<role>`; the role is a claim of the identity.
        .authenticate(|token: String, _info| async move {
            let mut parts = token
                .strip_prefix("user:")
                .ok_or("tokens look like user:<name>:<role>")?
                .split(':');
            let (Some(name), Some(role)) = (parts.next(), parts.next()) else {
                return Err("tokens look like user:<name>:<role>".to_owned());
            };
            Ok(ws_driver::Identity::new(name).with_claims(Role(role.to_owned())))
        })
        .middleware(|ctx: Context, next: Next| async move {
            let seen = ctx.data::<Seen>().map_or(0, |s| s.0);
            ctx.set_data(Seen(seen + 1));
            next.run(ctx).await
        })
        .on("whoami", |ctx: Context| async move {
            let calls = ctx.state::<Calls>().0.fetch_add(1, Ordering::SeqCst) + 1;
            let role = ctx.claims::<Role>().map(|r| r.0.clone());
            ctx.reply(
                "you",
                &json!({
                    "user": ctx.user_id().as_str(),
                    "role": role,
                    "seen": ctx.data::<Seen>().map(|s| s.0),
                    "calls": calls,
                    "header": ctx.header("x-test"),
                    "query": ctx.query(),
                    "peer": ctx.peer_addr().is_some(),
                    "t": ctx.timestamp(),
                    "missing": ctx.try_state::<Seen>().is_some(),
                }),
            )
        });
    let server = start(setup, app.config(fast_timers())).await;
    let addr = server.addr;
    let mut request = format!("ws://{addr}/ws?room=blue").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", "Bearer user:alice:admin".parse().unwrap());
    headers.insert("x-test", "hello".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = Conn::WebSocket(Box::new(ws));
    let created = recv(&mut ws).await["p"].clone();
    let whoami = json!({"v": "1.0", "e": "whoami", "c": "w", "t": 1_700_000_000_000u64});
    ws.send_text(whoami.to_string()).await;
    let you = recv(&mut ws).await;
    assert_eq!(
        you["p"],
        json!({"user": "alice", "role": "admin", "seen": 1, "calls": 1, "header": "hello",
               "query": "room=blue", "peer": true, "t": 1_700_000_000_000u64, "missing": false})
    );
    ws.send_text(whoami.to_string()).await;
    assert_eq!(recv(&mut ws).await["p"]["seen"], 2);
    // A resume keeps the session's data; the claims are the new authentication's.
    drop_abruptly(ws);
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer user:alice:reader".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = Conn::WebSocket(Box::new(ws));
    assert_eq!(recv(&mut ws).await["e"], "sys.session.created");
    let resume =
        json!({"sessionId": created["sessionId"], "resumeToken": created["resumeToken"], "lastSeq": 2});
    send(&mut ws, "sys.reconnect.request", resume, Some("r")).await;
    assert_eq!(recv(&mut ws).await["e"], "sys.session.restored");
    ws.send_text(whoami.to_string()).await;
    let you = recv(&mut ws).await;
    assert_eq!(
        (
            you["p"]["role"].as_str(),
            you["p"]["seen"].as_u64(),
            you["p"]["calls"].as_u64()
        ),
        (Some("reader"), Some(3), Some(3))
    );
}

fn sid(created: &Value) -> ws_session::SessionId {
    ws_session::SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap()
}

/// The server handle reaches any session from outside handlers: rooms joined and left
/// for it, a user's every session, rooms with an exception, volatile messages, a
/// filter over session data, and the lists of sessions and room members with who is
/// online.
pub async fn the_server_handle_reaches_sessions_users_and_rooms(setup: Setup) {
    use ws_driver::Audience;
    let app = app().on("tag", |ctx: Context| async move {
        let tag: String = ctx.payload()?;
        ctx.set_data(tag);
        ctx.reply("tagged", &())
    });
    let server = start(setup, app).await;
    let (addr, handle) = (&server.endpoint, server.handle.clone());
    let (mut tab1, a1) = session(addr, "alice").await;
    let (mut tab2, a2) = session(addr, "alice").await;
    let (mut bob, b) = session(addr, "bob").await;
    let (mut carol, c) = session(addr, "carol").await;
    let (a1, a2, b, c) = (sid(&a1), sid(&a2), sid(&b), sid(&c));

    // Rooms moved from outside; an unknown session is an error, not a silent no-op.
    assert_eq!(handle.join(b, "r").await, Ok(true));
    assert_eq!(handle.join(b, "r").await, Ok(false));
    assert_eq!(handle.join(c, "r").await, Ok(true));
    let ghost = ws_session::SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
    assert!(handle.join(ghost, "r").await.is_err());
    assert!(handle.leave(ghost, "r").await.is_err());

    // A room but the sender; the others of the room get it in their stream.
    handle
        .to(Audience::room("r"))
        .except(b)
        .emit("news", &"for carol")
        .unwrap();
    let news = recv(&mut carol).await;
    assert_eq!(
        (news["e"].as_str(), news["p"].as_str()),
        (Some("news"), Some("for carol"))
    );
    assert!(news["s"].as_u64().is_some(), "in the stream: {news}");
    // Every session of a user.
    handle.send_to_user("alice", "hi", &"both tabs").unwrap();
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(recv(tab).await["p"], "both tabs");
    }
    // Volatile: no sequence number.
    handle
        .to(Audience::All)
        .except(a2)
        .volatile()
        .emit("blip", &1)
        .unwrap();
    for ws in [&mut tab1, &mut bob, &mut carol] {
        let blip = recv(ws).await;
        assert_eq!(blip["e"], "blip");
        assert!(blip.get("s").is_none(), "volatile: {blip}");
    }
    // A filter over session data, run by the caller.
    send(&mut tab2, "tag", json!("vip"), Some("t")).await;
    assert_eq!(recv(&mut tab2).await["e"], "tagged");
    let chosen = handle
        .to(Audience::All)
        .emit_filtered("vip", &"only you", |s| {
            s.data::<String>().is_some_and(|t| *t == "vip")
        })
        .await
        .unwrap();
    assert_eq!(chosen, 1);
    assert_eq!(recv(&mut tab2).await["p"], "only you");
    // The bystanders got nothing more: the next thing they see is this echo.
    for ws in [&mut tab1, &mut bob, &mut carol] {
        send(ws, "echo", json!("next"), Some("n")).await;
        assert_eq!(recv(ws).await["p"], "next");
    }

    // Lists: every session with its user; room members with who is online.
    let mut users: Vec<String> = handle
        .sessions()
        .await
        .iter()
        .map(|s| s.user.to_string())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "alice", "bob", "carol"]);
    drop_abruptly(carol);
    let mut members = Vec::new();
    for _ in 0..100 {
        members = handle.room_members("r").await;
        if members.iter().any(|m| m.id == c && !m.online) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    members.sort_by_key(|m| m.user.to_string());
    let seen: Vec<(String, bool)> = members.iter().map(|m| (m.user.to_string(), m.online)).collect();
    assert_eq!(seen, [("bob".to_owned(), true), ("carol".to_owned(), false)]);
    assert_eq!(handle.leave(b, "r").await, Ok(true));
    assert_eq!(handle.room_members("r").await.len(), 1);
    assert!(handle
        .session(a1)
        .await
        .is_some_and(|s| s.online && s.user.as_str() == "alice"));
}

/// The next envelope named `event`, skipping others.
async fn recv_event(ws: &mut Conn, event: &str) -> Value {
    loop {
        let env = recv(ws).await;
        if env["e"] == event {
            return env;
        }
    }
}

/// The entries of the next `sys.presence` (volatile: no `s`) with news of others than
/// `me`, each as `{user, state}` (from the lists per state), without those about `me`
/// (a member hears its own changes too), passing over other envelopes.
async fn presence_news(ws: &mut Conn, me: &str) -> Vec<Value> {
    loop {
        let env = recv_event(ws, "sys.presence").await;
        assert!(env.get("s").is_none(), "volatile: {env}");
        let news = presence_entries(&env["p"]);
        let news: Vec<Value> = news.into_iter().filter(|c| c["user"] != me).collect();
        if !news.is_empty() {
            return news;
        }
    }
}

/// A `sys.presence` payload's entries (per user) as `{user, state}`, list by list;
/// panics on a field that is neither the room nor a list of user names.
pub fn presence_entries(p: &Value) -> Vec<Value> {
    let mut entries = Vec::new();
    for (key, list) in p.as_object().unwrap_or_else(|| panic!("an object: {p}")) {
        if key == "room" {
            continue;
        }
        assert!(
            ["joined", "left", "away", "online"].contains(&key.as_str()),
            "a presence list: {key} in {p}"
        );
        let list = list.as_array().unwrap_or_else(|| panic!("a list: {p}"));
        assert!(!list.is_empty(), "empty lists are left out: {p}");
        for user in list {
            assert!(user.is_string(), "a user name: {p}");
            entries.push(json!({"user": user, "state": key}));
        }
    }
    entries
}

/// Presence: joins, leaves, drops and resumes are announced to the room once per user
/// (two tabs count once), volatile and coalesced (`{room, joined, left, away, online}`); the member list
/// says who is online.
pub async fn presence_is_announced_once_per_user_and_listed(setup: Setup) {
    // Announced at the end of each pass of the hub (no interval): these clients do not
    // answer heartbeats, and the fast timers close an idle one within 200 ms.
    let presence = ws_driver::Presence {
        flush_interval: Duration::ZERO,
        ..ws_driver::Presence::default()
    };
    let app = app().presence(presence).on("leave", |ctx: Context| async move {
        let room: String = ctx.payload()?;
        ctx.leave(&room).await?;
        ctx.reply("left", &room)
    });
    let server = start(setup, app.config(fast_timers())).await;
    let (addr, handle) = (&server.endpoint, server.handle.clone());
    let (mut watcher, _) = session(addr, "watcher").await;
    send(&mut watcher, "join", json!("r"), Some("j")).await;
    recv_event(&mut watcher, "joined").await;

    let (mut tab1, created) = session(addr, "alice").await;
    let (mut tab2, _) = session(addr, "alice").await;
    for tab in [&mut tab1, &mut tab2] {
        send(tab, "join", json!("r"), Some("j")).await;
        recv_event(tab, "joined").await;
    }
    // The watcher's own join (it hears it too), then alice's, once for both tabs
    // (in one announcement or two, the second tab changes nothing).
    assert_eq!(
        presence_news(&mut watcher, "watcher").await,
        [json!({"user": "alice", "state": "joined"})]
    );

    // One tab drops: alice is still online through the other. Both drop: away.
    drop_abruptly(tab2);
    drop_abruptly(tab1);
    assert_eq!(
        presence_news(&mut watcher, "watcher").await,
        [json!({"user": "alice", "state": "away"})]
    );
    let members = handle.room_presence("r").await.unwrap();
    let listed: Vec<(String, bool)> = members.iter().map(|m| (m.user.to_string(), m.online)).collect();
    assert_eq!(
        listed,
        [("alice".to_owned(), false), ("watcher".to_owned(), true)]
    );

    // A resume brings her back online; her leave says left.
    let (mut back, answer) = resume(addr, "alice", &created, 0).await;
    assert_eq!(answer["e"], "sys.session.restored");
    assert_eq!(
        presence_news(&mut watcher, "watcher").await,
        [json!({"user": "alice", "state": "online"})]
    );
    send(&mut back, "leave", json!("r"), Some("l")).await;
    assert_eq!(recv_event(&mut back, "left").await["p"], "r");
    // The other tab's session is still in the room (suspended): alice is away, not gone.
    assert_eq!(
        presence_news(&mut watcher, "watcher").await,
        [json!({"user": "alice", "state": "away"})]
    );
    // A session that left hears nothing more of the room (its own `away` included).
    send(&mut back, "echo", json!("x"), Some("e")).await;
    assert_eq!(recv(&mut back).await["e"], "echo.reply");
}

/// `ServerHandle::request`: answered (`sys.reply`), refused (`sys.reply.error`),
/// timed out, and refused at once for an unknown session.
pub async fn server_requests_are_answered_refused_or_timed_out(setup: Setup) {
    use adapter_tokio::RequestError;
    let server = start(setup, app()).await;
    let handle = server.handle.clone();
    let (mut ws, created) = session(&server.endpoint, "alice").await;
    let session = session_id_of(&created);

    let asked = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .request(session, "client.time", &json!({"tz": "UTC"}), WAIT)
                .await
        }
    });
    let request = next_request(&mut ws).await;
    assert_eq!(
        request["p"],
        json!({"event": "client.time", "payload": {"tz": "UTC"}})
    );
    assert!(
        request["s"].as_u64().is_some(),
        "in the session stream: {request}"
    );
    let c = request["c"].as_str().unwrap().to_owned();
    send(&mut ws, "sys.reply", json!({"now": "12:00"}), Some(&c)).await;
    assert_eq!(asked.await.unwrap(), Ok(json!({"now": "12:00"})));

    let refused = tokio::spawn({
        let handle = handle.clone();
        async move { handle.request(session, "client.secret", &(), WAIT).await }
    });
    let c = next_request(&mut ws).await["c"].as_str().unwrap().to_owned();
    send(
        &mut ws,
        "sys.reply.error",
        json!({"code": 4201, "message": "no"}),
        Some(&c),
    )
    .await;
    assert_eq!(
        refused.await.unwrap(),
        Err(RequestError::Refused {
            code: 4201,
            message: "no".into()
        })
    );

    let started = std::time::Instant::now();
    let timed_out = handle
        .request(session, "client.time", &(), Duration::from_millis(200))
        .await;
    assert_eq!(timed_out, Err(RequestError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(200));

    let never = adapter_tokio::SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(
        handle.request(never, "client.time", &(), WAIT).await,
        Err(RequestError::UnknownSession)
    );
}

/// A request waiting when its session is ended fails with `SessionEnded`, and so does
/// one made afterwards.
pub async fn a_request_to_an_ended_session_fails(setup: Setup) {
    use adapter_tokio::RequestError;
    let server = start(setup, app()).await;
    let handle = server.handle.clone();
    let (mut ws, created) = session(&server.endpoint, "alice").await;
    let session = session_id_of(&created);
    let waiting = tokio::spawn({
        let handle = handle.clone();
        async move { handle.request(session, "client.time", &(), WAIT).await }
    });
    next_request(&mut ws).await;
    handle.end_session(session, "bye");
    assert_eq!(
        tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap(),
        Err(RequestError::SessionEnded)
    );
    assert_eq!(
        handle.request(session, "client.time", &(), WAIT).await,
        Err(RequestError::SessionEnded)
    );
}

/// A request made while the session is suspended is delivered on resume (replayed, in
/// the stream) and its answer, made then, resolves it within its timeout.
pub async fn a_request_made_during_a_drop_is_answered_after_the_resume(setup: Setup) {
    let server = start(setup, app()).await;
    let handle = server.handle.clone();
    let (ws, created) = session(&server.endpoint, "alice").await;
    let session = session_id_of(&created);
    drop_abruptly(ws);
    // Wait until the server has seen the drop, so the request is made while suspended.
    tokio::time::timeout(WAIT, async {
        while handle.metrics().await.unwrap().sessions_suspended == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("suspended");
    let asked = tokio::spawn({
        let handle = handle.clone();
        async move { handle.request(session, "client.time", &(), WAIT).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut ws, restored) = resume(&server.endpoint, "alice", &created, 0).await;
    assert_eq!(restored["e"], "sys.session.restored", "{restored}");
    assert_eq!(restored["p"]["replayed"], 1);
    let request = next_request(&mut ws).await;
    assert_eq!(request["s"], 1, "replayed with its place in the stream");
    let c = request["c"].as_str().unwrap().to_owned();
    send(&mut ws, "sys.reply", json!("12:00"), Some(&c)).await;
    assert_eq!(asked.await.unwrap(), Ok(json!("12:00")));
}

/// The session hooks' events as they fire, with when each fired.
pub type HookLog = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, ws_session::SessionEvent)>>>;

/// [`app`] with `config` and a session hook that records every event in the returned log.
pub fn app_with_hook_log(config: EngineConfig) -> (App, HookLog) {
    let log = HookLog::default();
    let hook_log = log.clone();
    let app = app().config(config).on_session(move |event, _server| {
        let log = hook_log.clone();
        async move {
            log.lock().unwrap().push((std::time::Instant::now(), event));
        }
    });
    (app, log)
}

/// Waits until the hook log holds an event `pick` accepts, and returns when it fired.
pub async fn hook_fired(
    log: &HookLog,
    pick: impl Fn(&ws_session::SessionEvent) -> bool,
) -> std::time::Instant {
    let started = std::time::Instant::now();
    loop {
        if let Some((at, _)) = log.lock().unwrap().iter().find(|(_, e)| pick(e)) {
            return *at;
        }
        assert!(
            started.elapsed() < WAIT,
            "the hook did not fire: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn session_id_of(created: &Value) -> adapter_tokio::SessionId {
    adapter_tokio::SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap()
}

/// `ServerHandle::end_session`: the client gets `sys.session.ended` with the reason,
/// then close 4115 (its signal not to resume or reconnect), the hook `Closed` by the
/// server, and a resume with its token is refused as `ended`.
pub async fn end_session_tells_the_client_why_and_closes_with_4115(setup: Setup) {
    use ws_session::{CloseReason, SessionEvent};
    let (app, log) = app_with_hook_log(EngineConfig::default());
    let server = start(setup, app).await;
    let (mut ws, created) = session(&server.endpoint, "alice").await;
    let session = session_id_of(&created);
    server.handle.end_session(session, "kicked by a moderator");
    let ended = recv(&mut ws).await;
    assert_eq!(ended["e"], "sys.session.ended", "{ended}");
    assert_eq!(ended["p"]["reason"], "kicked by a moderator");
    assert_eq!(ended["p"]["sessionId"], created["sessionId"]);
    assert!(ended.get("s").is_none(), "a control event");
    assert_eq!(closed_with(&mut ws).await, 4115);
    hook_fired(&log, |e| {
        matches!(e, SessionEvent::Closed { session: s, reason: CloseReason::ByServer, .. } if *s == session)
    })
    .await;
    let (_again, refused) = resume(&server.endpoint, "alice", &created, 0).await;
    assert_eq!(
        (refused["p"]["code"].as_u64(), refused["p"]["reason"].as_str()),
        (Some(4106), Some("ended"))
    );
}

/// `sys.session.end` from the client ends its session at once: the hook sees `Closed`
/// by the client well inside the resume window (2 min), the server closes with 1000,
/// and the old token no longer resumes anything.
pub async fn a_client_ending_its_session_is_seen_at_once_and_its_token_is_dead(setup: Setup) {
    use ws_session::{CloseReason, SessionEvent};
    let (app, log) = app_with_hook_log(EngineConfig::default());
    let server = start(setup, app).await;
    let (mut ws, created) = session(&server.endpoint, "alice").await;
    let session = session_id_of(&created);
    let sent = std::time::Instant::now();
    send(&mut ws, "sys.session.end", json!({"reason": "logout"}), None).await;
    assert_eq!(closed_with(&mut ws).await, 1000);
    let fired = hook_fired(&log, |e| {
        matches!(e, SessionEvent::Closed { session: s, reason: CloseReason::ByClient, .. } if *s == session)
    })
    .await;
    assert!(
        fired.duration_since(sent) < Duration::from_secs(2),
        "the hook took {:?}",
        fired.duration_since(sent)
    );
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|(_, e)| matches!(e, SessionEvent::Suspended { .. })),
        "ended, never suspended"
    );
    let (_again, refused) = resume(&server.endpoint, "alice", &created, 0).await;
    assert_eq!(
        (refused["p"]["code"].as_u64(), refused["p"]["reason"].as_str()),
        (Some(4106), Some("ended"))
    );
}

/// A network drop is not an end: the session is suspended (no `Closed`), and resumes.
pub async fn a_network_drop_suspends_the_session_and_does_not_end_it(setup: Setup) {
    use ws_session::SessionEvent;
    let (app, log) = app_with_hook_log(EngineConfig::default());
    let server = start(setup, app).await;
    let (ws, created) = session(&server.endpoint, "alice").await;
    let session = session_id_of(&created);
    drop_abruptly(ws);
    hook_fired(
        &log,
        |e| matches!(e, SessionEvent::Suspended { session: s } if *s == session),
    )
    .await;
    let (_ws, restored) = resume(&server.endpoint, "alice", &created, 0).await;
    assert_eq!(restored["e"], "sys.session.restored", "{restored}");
    assert!(!log.lock().unwrap().iter().any(|(_, e)| matches!(
        e,
        SessionEvent::Closed { session: s, .. } | SessionEvent::Expired { session: s, .. } if *s == session
    )));
}

/// Reads envelopes until a `sys.request`.
async fn next_request(ws: &mut Conn) -> Value {
    loop {
        let env = recv(ws).await;
        if env["e"] == "sys.request" {
            return env;
        }
    }
}

/// A client offering permessage-deflate (as browsers do) gets it from a server with
/// compression turned on, and a repetitive envelope makes the round trip through the
/// compressed path both ways; a server with compression off (the default, or turned
/// off) declines the offer and serves the same session uncompressed.
pub async fn permessage_deflate_is_negotiated_only_when_turned_on(setup: Setup) {
    for setting in [Some(true), Some(false), None] {
        let enabled = setting == Some(true);
        let mut config = EngineConfig::default();
        if let Some(deflate) = setting {
            config.envelope.deflate = deflate;
        }
        let server = start(setup, app().config(config)).await;
        let addr = server.addr;
        // A futures-io socket (async-io's reactor works under any executor).
        let stream = async_std::net::TcpStream::connect(addr).await.expect("connect");
        let mut request =
            ws_proto::handshake::ClientRequest::new(addr.to_string(), "/ws", *b"deflate-test-key");
        request
            .headers
            .push(("Authorization".into(), "Bearer user:zip".into()));
        let offer = ws_proto::Config {
            deflate: true,
            ..ws_proto::Config::default()
        };
        let (stream, conn) = ws_driver::client::handshake(stream, request, &offer)
            .await
            .expect("the upgrade");
        assert_eq!(
            conn.deflate().is_some(),
            enabled,
            "negotiated {:?} with the server's compression {setting:?}",
            conn.deflate(),
        );
        let mut ws = ws_driver::WebSocket::from_connection(stream, conn);
        assert_eq!(next_envelope(&mut ws).await["e"], "sys.session.created");
        let text = "the same words again and again, ".repeat(100);
        let envelope = json!({"v": "1.0", "e": "echo", "p": text, "c": "z1"});
        ws.send_text(&envelope.to_string()).await.expect("send");
        let reply = next_envelope(&mut ws).await;
        assert_eq!(reply["c"], "z1", "{reply}");
        assert_eq!(reply["p"], text.as_str());
    }
}

/// The next envelope on a raw WebSocket that is not a heartbeat.
async fn next_envelope(ws: &mut ws_driver::WebSocket<async_std::net::TcpStream>) -> Value {
    let read = async {
        loop {
            match ws.recv().await.expect("read") {
                Some(ws_proto::Event::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("an envelope");
                    if value["e"] != "sys.ping" {
                        return value;
                    }
                }
                Some(_) => {}
                None => panic!("the server closed"),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an envelope in time")
}

/// A WebSocket client on the raw TCP port is refused with an HTTP 400 that says what
/// the port speaks (it never waits for the handshake timeout), a preamble of another
/// version gets the server's own preamble and the end of the stream, and the
/// server's WebSocket port serves on.
pub async fn a_websocket_client_on_the_tcp_port_is_refused_with_400(setup: Setup) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    assert_eq!(setup.transport, TransportKind::Tcp);
    let server = start(setup, app()).await;
    let tcp = server.endpoint.socket().expect("a TCP port");
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(format!("ws://{tcp}/ws")))
        .await
        .expect("refused at once")
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            if let Some(body) = response.body() {
                let body = String::from_utf8_lossy(body);
                assert!(body.contains("length-prefixed"), "{body}");
            }
        }
        other => panic!("a WebSocket upgrade on the TCP port: {other:?}"),
    }
    let mut stream = TcpStream::connect(tcp).await.unwrap();
    stream.write_all(b"TETHER\x02").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(
        answer, b"TETHER\x01",
        "the version the server speaks, then the end"
    );
    let (_ws, created) = session(server.addr, "alice").await;
    assert_eq!(created["userId"], "alice");
}

/// The raw TCP version of the ping flood: a client that sends messages without ever
/// reading is rate-limited like any sender and closed with 1008, and the others are
/// served throughout.
pub async fn a_message_flood_from_a_client_that_never_reads_is_closed_with_1008(setup: Setup) {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpSocket;

    assert_eq!(setup.transport, TransportKind::Tcp);
    let server = start(setup, app()).await;
    let addr = &server.endpoint;
    let (mut bystander, _) = session(addr, "bystander").await;
    // A small receive buffer: the server's writes to it stall early.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket
        .connect(addr.socket().expect("a TCP port"))
        .await
        .expect("connect");
    let mut flooder = crate::client::TcpConn::over(stream).await;
    let auth = json!({"v": "1.0", "e": "sys.auth", "p": {"token": "user:flood"}}).to_string();
    flooder
        .stream
        .write_all(&crate::client::tcp_text(&auth))
        .await
        .unwrap();
    // 100,000 `sys.ping`s, written without reading a byte.
    let ping = crate::client::tcp_text(r#"{"v":"1.0","e":"sys.ping","c":"p"}"#);
    let batch: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    for _ in 0..100 {
        // Once the server has closed, the rest of the flood has nowhere to go.
        if flooder.stream.write_all(&batch).await.is_err() {
            break;
        }
    }
    let read_to_close = async {
        loop {
            match flooder.next().await {
                Some(Received::Close(code)) => return Some(code),
                Some(_) => {}
                None => return None,
            }
        }
    };
    let code = tokio::time::timeout(Duration::from_secs(30), read_to_close)
        .await
        .expect("the flooding connection ends");
    assert_eq!(code, Some(1008));
    let metrics = server.handle.metrics().await.unwrap();
    assert!(metrics.rate_limited >= 20, "{metrics:?}");
    send(&mut bystander, "echo", json!("still here"), Some("b")).await;
    assert_eq!(recv(&mut bystander).await["p"], "still here");
}

/// A peer that connects to the raw TCP port and never completes its preamble is
/// dropped without an answer at the handshake timeout, as a WebSocket client that never
/// completes its upgrade request is.
pub async fn a_silent_tcp_peer_is_dropped_at_the_handshake_timeout(setup: Setup) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    assert_eq!(setup.transport, TransportKind::Tcp);
    let app = app().handshake_timeout(Duration::from_millis(200));
    let server = start(setup, app).await;
    let tcp = server.endpoint.socket().expect("a TCP port");
    for start_of_preamble in [&b""[..], b"TET"] {
        let mut stream = TcpStream::connect(tcp).await.unwrap();
        stream.write_all(start_of_preamble).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
            .await
            .expect("dropped in time")
            .unwrap();
        assert!(answer.is_empty(), "no answer: {answer:?}");
    }
    let (_conn, created) = session(&server.endpoint, "alice").await;
    assert_eq!(created["userId"], "alice");
}
