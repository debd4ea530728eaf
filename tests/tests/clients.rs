//! The clients (tokio, async-std, smol) against a real tether server on loopback sockets: reconnect and
//! resume through a TCP proxy the test cuts, a refused resume after a server restart,
//! queries, close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_tokio::{
    App, Client, ClientError, ClientOptions, CloseReason, Context, HandlerError, QueryError, RequestError,
    Server, ServerHandle, SessionEnd, SessionOutcome, State,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use ws_driver::client::{Constant, Jitter};
use ws_driver::SessionId;
use ws_proto::envelope::OwnedEnvelope;
use ws_proto::CloseCode;

/// A bound on every wait, so that a broken build fails instead of hanging. Nothing
/// here depends on timing: each wait is for an event that must come.
const WAIT: Duration = Duration::from_secs(10);

fn app() -> App {
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
        // Never answers.
        .on("ignore", |_ctx: Context| async move { Ok(()) })
        // The codec the connection agreed on.
        .on("codec", |ctx: Context| async move {
            ctx.reply("codec", &format!("{:?}", ctx.codec()))
        })
}

async fn serve(addr: &str) -> (SocketAddr, ServerHandle, oneshot::Sender<()>, JoinHandle<()>) {
    serve_app(addr, app()).await
}

async fn serve_app(addr: &str, app: App) -> (SocketAddr, ServerHandle, oneshot::Sender<()>, JoinHandle<()>) {
    let server = Server::bind(addr, "/ws", app).await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .shutdown_timeout(Duration::from_secs(2))
            .run_until(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, handle, stop, task)
}

/// A TCP proxy whose current connections the test can cut (both sides dropped).
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (l, a) = (links.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                *a.lock().unwrap() += 1;
                let link = tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                l.lock().unwrap().push(link);
            }
        });
        Self {
            addr,
            links,
            accepted,
        }
    }

    /// Drops every connection in flight, without a close frame.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

fn options(token: &str) -> ClientOptions {
    let mut options = ClientOptions::with_credential(token);
    options.engine.backoff = Arc::new(Constant {
        delay: Duration::from_millis(20),
        jitter: Jitter::None,
    });
    options
}

async fn next<T>(stream: &mut futures::channel::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("waited too long")
        .expect("stream ended")
}

async fn until_state(
    states: &mut futures::channel::mpsc::UnboundedReceiver<State>,
    want: impl Fn(&State) -> bool,
) -> State {
    loop {
        let state = next(states).await;
        if want(&state) {
            return state;
        }
    }
}

fn created_id(outcome: &SessionOutcome) -> String {
    match outcome {
        SessionOutcome::Created(details) => details.session_id.clone(),
        other => panic!("expected a new session, got {other:?}"),
    }
}

/// The runtime the client's task and timers run on. The test body awaits the client
/// from tokio either way: the client's handle talks to its task through channels.
#[derive(Debug, Clone, Copy)]
enum ClientRuntime {
    Tokio,
    AsyncStd,
    Smol,
}

fn start_client(
    rt: ClientRuntime,
    url: &str,
    options: ClientOptions,
) -> Result<ws_driver::client::Client, ClientError> {
    match rt {
        ClientRuntime::Tokio => Client::start(url, options).map(|c| c.inner().clone()),
        ClientRuntime::AsyncStd => {
            adapter_async_std::AsyncStdClient::start(url, options).map(|c| c.inner().clone())
        }
        ClientRuntime::Smol => adapter_async_std::SmolClient::start(url, options).map(|c| c.inner().clone()),
    }
}

async fn connect_client(
    rt: ClientRuntime,
    url: &str,
    options: ClientOptions,
) -> Result<ws_driver::client::Client, ClientError> {
    let client = start_client(rt, url, options)?;
    client.connected().await?;
    Ok(client)
}

/// Each body once per client runtime.
macro_rules! on_every_client_runtime {
    ($($name:ident),* $(,)?) => {
        mod tokio_client {
            $(#[tokio::test] async fn $name() { super::$name(super::ClientRuntime::Tokio).await })*
        }
        mod async_std_client {
            $(#[tokio::test] async fn $name() { super::$name(super::ClientRuntime::AsyncStd).await })*
        }
        mod smol_client {
            $(#[tokio::test] async fn $name() { super::$name(super::ClientRuntime::Smol).await })*
        }
    };
}

on_every_client_runtime!(
    a_cut_connection_resumes_and_every_message_arrives_once_in_order,
    a_restarted_server_refuses_the_resume_and_a_new_session_begins,
    queries_get_replies_errors_and_timeouts,
    a_session_ended_by_the_server_stops_the_client_with_the_reason,
    closing_the_client_ends_its_server_session_at_once,
    server_requests_are_answered_by_the_clients_handlers,
    a_server_request_cut_off_by_a_drop_is_answered_after_the_resume,
    a_msgpack_client_speaks_binary_and_resumes_with_every_message_once,
);

fn tick_number(envelope: &OwnedEnvelope) -> u64 {
    assert_eq!(&*envelope.event, "tick");
    envelope.payload_as::<u64>().unwrap()
}

async fn a_cut_connection_resumes_and_every_message_arrives_once_in_order(rt: ClientRuntime) {
    let (server_addr, handle, _stop, _task) = serve("127.0.0.1:0").await;
    let proxy = Proxy::start(server_addr).await;
    let client = start_client(rt, &format!("ws://{}/ws", proxy.addr), options("user:alice")).unwrap();
    let mut sessions = client.sessions();
    let mut messages = client.messages();
    let mut states = client.states();
    let session = SessionId::parse(&created_id(&next(&mut sessions).await)).unwrap();
    until_state(&mut states, |s| *s == State::Connected).await;

    // 1..=10 while connected.
    for n in 1..=10u64 {
        handle.send(session, "tick", &n).unwrap();
    }
    for n in 1..=10 {
        assert_eq!(tick_number(&next(&mut messages).await), n);
    }
    // Five times: the connection is cut, ticks are sent while the client is away
    // (written to a dead socket or buffered: either way the replay buffer has them),
    // the client resumes, more ticks follow.
    let mut sent = 10;
    for _ in 0..5 {
        proxy.cut();
        for _ in 0..20 {
            sent += 1;
            handle.send(session, "tick", &sent).unwrap();
        }
        until_state(&mut states, |s| matches!(s, State::Reconnecting { .. })).await;
        until_state(&mut states, |s| *s == State::Reconnected).await;
        match next(&mut sessions).await {
            SessionOutcome::Restored { session_id, .. } => assert_eq!(session_id, session.to_string()),
            other => panic!("expected a restored session, got {other:?}"),
        }
        for _ in 0..10 {
            sent += 1;
            handle.send(session, "tick", &sent).unwrap();
        }
    }
    for n in 11..=sent {
        assert_eq!(tick_number(&next(&mut messages).await), n);
    }
    // A round trip proves nothing else was queued behind them: no duplicate.
    let reply = client.query("echo", &"done", None).await.unwrap();
    assert_eq!(reply.payload_as::<String>().unwrap(), "done");
    assert!(messages.try_recv().is_err(), "a message arrived twice");
    assert_eq!(proxy.accepted(), 6);
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
}

/// The client asking for MessagePack: the server picks it, both sides speak binary
/// frames, and a cut connection resumes with the missed messages, once each.
async fn a_msgpack_client_speaks_binary_and_resumes_with_every_message_once(rt: ClientRuntime) {
    let (server_addr, handle, _stop, _task) = serve("127.0.0.1:0").await;
    let proxy = Proxy::start(server_addr).await;
    let options = options("user:mia").with_codec(ws_proto::envelope::Codec::MsgPack);
    let client = start_client(rt, &format!("ws://{}/ws", proxy.addr), options).unwrap();
    let mut sessions = client.sessions();
    let mut messages = client.messages();
    let mut states = client.states();
    let session = SessionId::parse(&created_id(&next(&mut sessions).await)).unwrap();
    until_state(&mut states, |s| *s == State::Connected).await;
    let codec = client.query("codec", &(), None).await.unwrap();
    assert_eq!(codec.payload_as::<String>().unwrap(), "MsgPack");
    let reply = client
        .query(
            "echo",
            &json!({"text": "héllo", "n": [1, -2, 3.5], "nested": {"ok": true}}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        reply.payload_as::<Value>().unwrap(),
        json!({"text": "héllo", "n": [1, -2, 3.5], "nested": {"ok": true}})
    );
    for n in 1..=5u64 {
        handle.send(session, "tick", &n).unwrap();
    }
    for n in 1..=5 {
        assert_eq!(tick_number(&next(&mut messages).await), n);
    }
    proxy.cut();
    for n in 6..=15u64 {
        handle.send(session, "tick", &n).unwrap();
    }
    until_state(&mut states, |s| *s == State::Reconnected).await;
    match next(&mut sessions).await {
        SessionOutcome::Restored { session_id, .. } => assert_eq!(session_id, session.to_string()),
        other => panic!("expected a restored session, got {other:?}"),
    }
    for n in 6..=15 {
        assert_eq!(tick_number(&next(&mut messages).await), n);
    }
    let codec = client.query("codec", &(), None).await.unwrap();
    assert_eq!(
        codec.payload_as::<String>().unwrap(),
        "MsgPack",
        "the new connection too"
    );
    assert!(messages.try_recv().is_err(), "a message arrived twice");
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
}

async fn a_restarted_server_refuses_the_resume_and_a_new_session_begins(rt: ClientRuntime) {
    let (addr, _handle, stop, task) = serve("127.0.0.1:0").await;
    let client = connect_client(rt, &format!("ws://{addr}/ws"), options("user:bob"))
        .await
        .unwrap();
    let mut sessions = client.sessions();
    let mut states = client.states();
    assert_eq!(next(&mut states).await, State::Connected);
    // A query the server will never answer, written on the first session. Polling its
    // future once hands the command to the client's task, so it is queued before the
    // echo below whatever runtime that task runs on (a spawned task might run later).
    let mut lost = Box::pin(client.query("ignore", &(), Some(Duration::from_secs(60))));
    assert!(futures::poll!(&mut lost).is_pending());
    // The server handles one session's messages in order: the echo's reply proves the
    // query was received on the first session.
    client.query("echo", &1, None).await.unwrap();

    stop.send(()).unwrap();
    task.await.unwrap();
    let (addr2, _handle2, _stop2, _task2) = serve(&addr.to_string()).await;
    assert_eq!(addr, addr2);

    until_state(&mut states, |s| *s == State::Reconnected).await;
    match next(&mut sessions).await {
        SessionOutcome::NotRestored {
            reason,
            failed_queries,
            session,
            ..
        } => {
            assert_eq!(reason, "unknown");
            assert_eq!(failed_queries, 1);
            assert_eq!(session.user_id, "bob");
        }
        other => panic!("expected NotRestored, got {other:?}"),
    }
    let result = tokio::time::timeout(WAIT, lost).await.unwrap();
    assert_eq!(
        result.unwrap_err(),
        ClientError::Query(QueryError::NotRestored {
            reason: "unknown".into()
        })
    );
    // The new session works.
    let reply = client.query("echo", &json!({"again": true}), None).await.unwrap();
    assert_eq!(reply.payload_as::<Value>().unwrap(), json!({"again": true}));
    client.close(CloseCode::NORMAL, "").await.unwrap();
}

async fn queries_get_replies_errors_and_timeouts(rt: ClientRuntime) {
    let (addr, _handle, _stop, _task) = serve("127.0.0.1:0").await;
    let client = connect_client(rt, &format!("ws://{addr}/ws"), options("user:carol"))
        .await
        .unwrap();
    let reply = client.query("echo", &json!([1, 2, 3]), None).await.unwrap();
    assert_eq!(&*reply.event, "echo.reply");
    assert_eq!(reply.payload_as::<Value>().unwrap(), json!([1, 2, 3]));

    let err = client.query("fail", &(), None).await.unwrap_err();
    let ClientError::Query(QueryError::Server(err)) = err else {
        panic!("{err:?}");
    };
    assert_eq!((err.code, err.message.as_str()), (4242, "asked to fail"));

    let err = client
        .query("ignore", &(), Some(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Query(QueryError::Timeout));
    client.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn listeners_and_sends() {
    let (addr, handle, _stop, _task) = serve("127.0.0.1:0").await;
    let client = Client::start(&format!("ws://{addr}/ws"), options("user:dave")).unwrap();
    let mut sessions = client.sessions();
    // Sent before any session: queued, then written once.
    client.send("echo", &"queued").await.unwrap();
    let session = SessionId::parse(&created_id(&next(&mut sessions).await)).unwrap();
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    client.on("echo.reply", move |env| {
        let _ = tx.unbounded_send(env.payload_as::<String>().unwrap());
    });
    assert_eq!(next(&mut rx).await, "queued");
    handle.send(session, "echo.reply", &"pushed").unwrap();
    assert_eq!(next(&mut rx).await, "pushed");
    assert!(matches!(
        client.send("sys.ack", &()).await,
        Err(ClientError::Refused(_))
    ));
    client.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn close_stops_reconnecting() {
    let (server_addr, _handle, _stop, _task) = serve("127.0.0.1:0").await;
    let proxy = Proxy::start(server_addr).await;
    let client = Client::connect(&format!("ws://{}/ws", proxy.addr), options("user:erin"))
        .await
        .unwrap();
    let mut states = client.states();
    assert_eq!(next(&mut states).await, State::Connected);
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert_eq!(next(&mut states).await, State::Disconnecting);
    let State::Disconnected(info) = next(&mut states).await else {
        panic!("not disconnected");
    };
    assert_eq!(info.code, Some(CloseCode::NORMAL));
    // The task has ended: the state stream is over and nothing reconnects.
    assert!(tokio::time::timeout(WAIT, states.next()).await.unwrap().is_none());
    assert_eq!(proxy.accepted(), 1);
    // Every later call says the client is closed, and why: by the application (1000).
    assert!(matches!(
        client.send("echo", &1).await,
        Err(ClientError::Closed(why)) if why.code == Some(CloseCode::NORMAL)
    ));
    assert!(matches!(client.state(), State::Disconnected(_)));
    // Subscriptions taken after the stop end at once instead of waiting forever.
    assert!(tokio::time::timeout(WAIT, client.messages().next())
        .await
        .unwrap()
        .is_none());
    assert!(tokio::time::timeout(WAIT, client.sessions().next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_refused_credential_stops_the_client() {
    let (addr, _handle, _stop, _task) = serve("127.0.0.1:0").await;
    let err = Client::connect(&format!("ws://{addr}/ws"), options("nobody"))
        .await
        .unwrap_err();
    // The refusal says why: close 4102 and the authenticator's own reason.
    let ClientError::Closed(why) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(why.code, Some(CloseCode(4102)));
    assert!(err.to_string().contains("tokens look like user:<name>"), "{err}");
}

#[tokio::test]
async fn connect_gives_up_after_the_attempts_it_was_given() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = options("user:ida");
    opts.connect_attempts = Some(3);
    let started = std::time::Instant::now();
    let err = Client::connect(&format!("ws://127.0.0.1:{port}/ws"), opts)
        .await
        .unwrap_err();
    let ClientError::Unreachable { attempts, last } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*attempts, 3);
    assert!(last.error.as_deref().is_some_and(|e| !e.is_empty()), "{last:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_is_an_error_with_question_mark() {
    async fn typed(client: &Client) -> Result<String, ClientError> {
        let reply = client.query("echo", &1, None).await?;
        // A number is not a string: `?` turns the envelope error into a ClientError.
        Ok(reply.payload_as::<String>()?)
    }
    let (addr, _handle, _stop, _task) = serve("127.0.0.1:0").await;
    let client = Client::connect(&format!("ws://{addr}/ws"), options("user:jo"))
        .await
        .unwrap();
    assert!(matches!(
        typed(&client).await,
        Err(ClientError::InvalidPayload(_))
    ));
    client.close(CloseCode::NORMAL, "").await.unwrap();
}

/// Polls the server's metrics until `done` holds (each poll is a round trip through
/// the hub, not a sleep).
async fn until_metrics(
    handle: &ServerHandle,
    done: impl Fn(&ws_driver::Metrics) -> bool,
) -> ws_driver::Metrics {
    tokio::time::timeout(WAIT, async {
        loop {
            let metrics = handle.metrics().await.expect("server running");
            if done(&metrics) {
                return metrics;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("waited too long")
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let (addr, handle, _stop, _task) = serve("127.0.0.1:0").await;
    let client = Client::connect(&format!("ws://{addr}/ws"), options("user:fay"))
        .await
        .unwrap();
    let copy = client.clone();
    until_metrics(&handle, |m| m.connections == 1).await;
    drop(client);
    // One handle is left: still connected.
    assert_eq!(
        copy.query("echo", &1, None)
            .await
            .unwrap()
            .payload_as::<u64>()
            .unwrap(),
        1
    );
    drop(copy);
    let metrics = until_metrics(&handle, |m| m.connections == 0).await;
    assert_eq!(metrics.connections_opened, 1);
}

#[tokio::test]
async fn an_unreachable_server_is_retried_with_the_error_reported() {
    // A port with nobody listening: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = options("user:gus");
    opts.engine.max_reconnect_attempts = Some(2);
    let client = Client::start(&format!("ws://127.0.0.1:{port}/ws"), opts).unwrap();
    let mut states = client.states();
    let mut attempts = Vec::new();
    let last = loop {
        match next(&mut states).await {
            State::Reconnecting { attempt, .. } => attempts.push(attempt),
            State::Disconnected(info) => break info,
            _ => {}
        }
    };
    assert_eq!(attempts, vec![1, 2]);
    assert!(last.error.is_some(), "{last:?}");
    assert!(matches!(client.connected().await, Err(ClientError::Closed(why)) if why == last));
}

#[tokio::test]
async fn an_upgrade_refused_with_404_stops_the_client() {
    let (addr, _handle, _stop, _task) = serve("127.0.0.1:0").await;
    let client = Client::start(&format!("ws://{addr}/elsewhere"), options("user:hal")).unwrap();
    let mut states = client.states();
    let info = loop {
        if let State::Disconnected(info) = next(&mut states).await {
            break info;
        }
    };
    assert_eq!(info.status, Some(404));
    assert!(info.error.unwrap().contains("404"));
}

#[test]
fn urls_that_cannot_be_used_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(matches!(
            Client::start("http://127.0.0.1/ws", ClientOptions::default()),
            Err(ClientError::InvalidUrl(_))
        ));
        // wss:// parses, but the plain-TCP connector (without the `TlsConnector` that
        // `Client::start` puts around it) says it cannot do TLS.
        let mut opts = ClientOptions::default();
        opts.engine.max_reconnect_attempts = Some(0);
        let client = Client::start_with("wss://127.0.0.1:1/ws", opts, adapter_tokio::TokioConnector).unwrap();
        let mut states = client.states();
        let info = loop {
            if let State::Disconnected(info) = next(&mut states).await {
                break info;
            }
        };
        assert!(info.error.unwrap().contains("TLS"));
    });
}

/// A server whose session hook sends every `Closed` to the returned channel.
async fn serve_with_closed_hook() -> (
    SocketAddr,
    ServerHandle,
    futures::channel::mpsc::UnboundedReceiver<(std::time::Instant, ws_driver::SessionEvent)>,
    oneshot::Sender<()>,
) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let app = app().on_session(move |event, _server| {
        let tx = tx.clone();
        async move {
            if matches!(event, ws_driver::SessionEvent::Closed { .. }) {
                let _ = tx.unbounded_send((std::time::Instant::now(), event));
            }
        }
    });
    let (addr, handle, stop, _task) = serve_app("127.0.0.1:0", app).await;
    (addr, handle, rx, stop)
}

async fn a_session_ended_by_the_server_stops_the_client_with_the_reason(rt: ClientRuntime) {
    let (server_addr, handle, mut closed, _stop) = serve_with_closed_hook().await;
    let proxy = Proxy::start(server_addr).await;
    let client = start_client(rt, &format!("ws://{}/ws", proxy.addr), options("user:ivy")).unwrap();
    let mut sessions = client.sessions();
    let mut states = client.states();
    let session = SessionId::parse(&created_id(&next(&mut sessions).await)).unwrap();
    until_state(&mut states, |s| *s == State::Connected).await;
    handle.end_session(session, "kicked");
    let State::Disconnected(info) = until_state(&mut states, |s| matches!(s, State::Disconnected(_))).await
    else {
        unreachable!()
    };
    assert_eq!(info.code, Some(CloseCode(4115)));
    assert_eq!(
        info.session_end,
        Some(SessionEnd::ByServer {
            reason: "kicked".into()
        })
    );
    let (_, event) = next(&mut closed).await;
    assert!(matches!(
        event,
        ws_driver::SessionEvent::Closed {
            reason: CloseReason::ByServer,
            ..
        }
    ));
    // Stopped for good: the state stream ends, no new connection is made.
    assert!(tokio::time::timeout(WAIT, states.next()).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.accepted(), 1, "no reconnect");
    // Later calls say why: the session was ended by the server (4115).
    assert!(matches!(
        client.send("echo", &1).await,
        Err(ClientError::Closed(why)) if why.code == Some(CloseCode(4115))
    ));
}

async fn closing_the_client_ends_its_server_session_at_once(rt: ClientRuntime) {
    let (addr, handle, mut closed, _stop) = serve_with_closed_hook().await;
    let client = connect_client(rt, &format!("ws://{addr}/ws"), options("user:jo"))
        .await
        .unwrap();
    let mut states = client.states();
    let started = std::time::Instant::now();
    client.close(CloseCode::NORMAL, "logout").await.unwrap();
    let (fired, event) = next(&mut closed).await;
    assert!(matches!(
        event,
        ws_driver::SessionEvent::Closed {
            reason: CloseReason::ByClient,
            ..
        }
    ));
    // The resume window is 2 minutes: this is the close, not the expiry.
    assert!(fired.duration_since(started) < Duration::from_secs(2));
    let State::Disconnected(info) = until_state(&mut states, |s| matches!(s, State::Disconnected(_))).await
    else {
        unreachable!()
    };
    assert_eq!(info.session_end, Some(SessionEnd::ByClient));
    let metrics = until_metrics(&handle, |m| m.connections == 0).await;
    assert_eq!(
        metrics.sessions_suspended + metrics.sessions_live,
        0,
        "{metrics:?}"
    );
}

async fn server_requests_are_answered_by_the_clients_handlers(rt: ClientRuntime) {
    let (addr, handle, _stop, _task) = serve("127.0.0.1:0").await;
    let client = start_client(rt, &format!("ws://{addr}/ws"), options("user:kim")).unwrap();
    let mut sessions = client.sessions();
    let session = SessionId::parse(&created_id(&next(&mut sessions).await)).unwrap();
    client.connected().await.unwrap();
    client.on_request("client.time", |payload| async move {
        Ok(json!({ "tz": payload["tz"], "time": "12:00" }))
    });
    client.on_request("client.secret", |_| async move {
        Err((4201, "not telling".to_owned()))
    });
    let answer = handle
        .request(session, "client.time", &json!({"tz": "UTC"}), WAIT)
        .await
        .unwrap();
    assert_eq!(answer, json!({"tz": "UTC", "time": "12:00"}));
    let typed: std::collections::HashMap<String, String> = handle
        .request_as(session, "client.time", &json!({"tz": "CET"}), WAIT)
        .await
        .unwrap();
    assert_eq!(typed["time"], "12:00");
    assert_eq!(
        handle.request(session, "client.secret", &(), WAIT).await,
        Err(RequestError::Refused {
            code: 4201,
            message: "not telling".into()
        })
    );
    // No handler (never registered, or removed): refused with 4150.
    assert!(client.off_request("client.time"));
    for event in ["client.time", "client.unknown"] {
        match handle.request(session, event, &(), WAIT).await {
            Err(RequestError::Refused { code: 4150, .. }) => {}
            other => panic!("{event}: {other:?}"),
        }
    }
    // The typed query and `off`.
    let n: u64 = client.query_as("echo", &7u64, None).await.unwrap();
    assert_eq!(n, 7);
    assert!(matches!(
        client.query_as::<_, String>("echo", &7u64, None).await,
        Err(ClientError::InvalidPayload(_))
    ));
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    client.on("note", move |env| {
        let _ = tx.unbounded_send(env.payload_as::<u64>().unwrap());
    });
    handle.send(session, "note", &1).unwrap();
    assert_eq!(next(&mut rx).await, 1);
    assert!(client.off("note"));
    assert!(!client.off("note"));
    handle.send(session, "note", &2).unwrap();
    client.query("echo", &"barrier", None).await.unwrap();
    assert!(rx.try_recv().is_err(), "no listener after off");
    client.close(CloseCode::NORMAL, "").await.unwrap();
}

async fn a_server_request_cut_off_by_a_drop_is_answered_after_the_resume(rt: ClientRuntime) {
    let (server_addr, handle, _stop, _task) = serve("127.0.0.1:0").await;
    let proxy = Proxy::start(server_addr).await;
    let client = start_client(rt, &format!("ws://{}/ws", proxy.addr), options("user:lee")).unwrap();
    let mut sessions = client.sessions();
    let mut states = client.states();
    let session = SessionId::parse(&created_id(&next(&mut sessions).await)).unwrap();
    until_state(&mut states, |s| *s == State::Connected).await;
    let answered = Arc::new(Mutex::new(0u32));
    let count = answered.clone();
    client.on_request("client.time", move |_| {
        *count.lock().unwrap() += 1;
        async move { Ok(json!("12:00")) }
    });
    proxy.cut();
    let asked = tokio::spawn({
        let handle = handle.clone();
        async move { handle.request(session, "client.time", &(), WAIT).await }
    });
    until_state(&mut states, |s| *s == State::Reconnected).await;
    assert_eq!(
        tokio::time::timeout(WAIT, asked).await.unwrap().unwrap(),
        Ok(json!("12:00"))
    );
    match next(&mut sessions).await {
        SessionOutcome::Restored { .. } => {}
        other => panic!("expected a restored session, got {other:?}"),
    }
    assert_eq!(*answered.lock().unwrap(), 1, "answered once");
    client.close(CloseCode::NORMAL, "").await.unwrap();
}
