//! Sessions any node can resume, on real sockets: two tokio servers sharing an
//! `InMemorySessionStore`, and the Rust client (on tokio and on smol) behind a TCP
//! proxy that the test cuts and then sends to the other node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_tokio::{
    App, Client, ClientOptions, Context, InMemoryPubSub, InMemorySessionStore, PubSub, SessionOutcome, State,
};
use futures::StreamExt;
use serde_json::Value;
use tether_tests::client::{recv, send, session};
use tether_tests::harness::{start, Running, ServerRuntime};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use ws_driver::adapter::BoxFuture;
use ws_driver::client::{Constant, Jitter};
use ws_driver::{HistoryError, SessionId};
use ws_proto::envelope::OwnedEnvelope;
use ws_proto::CloseCode;
use ws_session::{Publication, RoomOffset};

const WAIT: Duration = Duration::from_secs(10);

fn app(store: &InMemorySessionStore) -> App {
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
        .session_store(store.clone())
}

/// A TCP proxy to one of several upstreams: new connections go to the current one;
/// the test can cut every connection in flight.
struct Switch {
    addr: SocketAddr,
    current: Arc<AtomicUsize>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Switch {
    async fn start(upstreams: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let current = Arc::new(AtomicUsize::new(0));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (current.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstreams[c.load(Ordering::SeqCst)];
                let link = tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                l.lock().unwrap().push(link);
            }
        });
        Self { addr, current, links }
    }

    fn route(&self, upstream: usize) {
        self.current.store(upstream, Ordering::SeqCst);
    }

    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

async fn next<T>(stream: &mut futures::channel::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("waited too long")
        .expect("stream ended")
}

fn tick(envelope: &OwnedEnvelope) -> u64 {
    assert_eq!(&*envelope.event, "tick", "{envelope:?}");
    envelope.payload_as::<u64>().unwrap()
}

enum ClientRuntime {
    Tokio,
    Smol,
}

fn start_client(rt: &ClientRuntime, url: &str) -> ws_driver::client::Client {
    let mut options = ClientOptions::with_credential("user:alice");
    options.engine.backoff = Arc::new(Constant {
        delay: Duration::from_millis(20),
        jitter: Jitter::None,
    });
    match rt {
        ClientRuntime::Tokio => Client::start(url, options).unwrap().inner().clone(),
        ClientRuntime::Smol => adapter_async_std::SmolClient::start(url, options)
            .unwrap()
            .inner()
            .clone(),
    }
}

/// The client is cut and sent to the other node, six times: each time it keeps its
/// session, and every message — sent while it was connected, while it was away (by
/// the node it had left), and after it came back (by the node it came to) — arrives
/// once, in order.
async fn a_client_moved_between_nodes_keeps_its_session_and_every_message(rt: ClientRuntime) {
    let store = InMemorySessionStore::default();
    let nodes: Vec<Running> = vec![
        start(ServerRuntime::Tokio, app(&store)).await,
        start(ServerRuntime::Tokio, app(&store)).await,
    ];
    let switch = Switch::start(nodes.iter().map(|n| n.addr).collect()).await;
    let client = start_client(&rt, &format!("ws://{}/ws", switch.addr));
    let mut sessions = client.sessions();
    let mut messages = client.messages();
    let mut states = client.states();
    let session = match next(&mut sessions).await {
        SessionOutcome::Created(details) => SessionId::parse(&details.session_id).unwrap(),
        other => panic!("expected a new session, got {other:?}"),
    };
    while next(&mut states).await != State::Connected {}

    let mut sent = 0u64;
    let mut owner = 0;
    for _ in 0..6 {
        for _ in 0..5 {
            sent += 1;
            nodes[owner].handle.send(session, "tick", &sent).unwrap();
        }
        switch.cut();
        // Sent by the node it left, while it is away.
        for _ in 0..5 {
            sent += 1;
            nodes[owner].handle.send(session, "tick", &sent).unwrap();
        }
        // A round trip through the node's hub: the sends above are in its journal
        // batch before the client can resume elsewhere.
        let _ = nodes[owner].handle.metrics().await;
        owner = 1 - owner;
        switch.route(owner);
        loop {
            if let State::Reconnected = next(&mut states).await {
                break;
            }
        }
        match next(&mut sessions).await {
            SessionOutcome::Restored { session_id, .. } => assert_eq!(session_id, session.to_string()),
            other => panic!("expected the session restored on node {owner}, got {other:?}"),
        }
    }
    for _ in 0..5 {
        sent += 1;
        nodes[owner].handle.send(session, "tick", &sent).unwrap();
    }
    for n in 1..=sent {
        assert_eq!(tick(&next(&mut messages).await), n);
    }
    let reply = client.query("echo", &"done", None).await.unwrap();
    assert_eq!(reply.payload_as::<String>().unwrap(), "done");
    assert!(messages.try_recv().is_err(), "a message arrived twice");
    // Held by the node it came to last, not by the other.
    let held = |n: usize| {
        let handle = nodes[n].handle.clone();
        async move { handle.metrics().await.unwrap().sessions_live }
    };
    assert_eq!((held(owner).await, held(1 - owner).await), (1, 0));
    let moved = nodes[1 - owner].handle.metrics().await.unwrap().sessions_moved;
    assert!(moved >= 3, "the node it left let it go each time ({moved})");
    assert!(store.record(session).is_some());
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
}

#[tokio::test]
async fn tokio_client_moved_between_nodes_keeps_its_session_and_every_message() {
    a_client_moved_between_nodes_keeps_its_session_and_every_message(ClientRuntime::Tokio).await;
}

#[tokio::test]
async fn smol_client_moved_between_nodes_keeps_its_session_and_every_message() {
    a_client_moved_between_nodes_keeps_its_session_and_every_message(ClientRuntime::Smol).await;
}

/// Without a shared store the other node refuses the resume as today (4106 unknown)
/// and the client gets a new session: the switch is what makes the difference.
#[tokio::test]
async fn without_a_store_the_other_node_refuses_the_resume() {
    let plain = || {
        App::new().authenticate(|token: String, _info| async move {
            token
                .strip_prefix("user:")
                .map(str::to_owned)
                .ok_or_else(String::new)
        })
    };
    let nodes = [
        start(ServerRuntime::Tokio, plain()).await,
        start(ServerRuntime::Tokio, plain()).await,
    ];
    let switch = Switch::start(nodes.iter().map(|n| n.addr).collect()).await;
    let client = start_client(&ClientRuntime::Tokio, &format!("ws://{}/ws", switch.addr));
    let mut sessions = client.sessions();
    let first = next(&mut sessions).await;
    assert!(matches!(first, SessionOutcome::Created(_)), "{first:?}");
    switch.route(1);
    switch.cut();
    let second = next(&mut sessions).await;
    assert!(!matches!(second, SessionOutcome::Restored { .. }), "{second:?}");
}

/// A node stopping gracefully hands its sessions over: its journal is written, then
/// its connections are closed with 4116, and the client (with a 5 s backoff) resumes
/// on the other node at once, with every message once and in order.
#[tokio::test]
async fn a_stopping_node_hands_its_sessions_over_and_the_client_resumes_at_once() {
    let store = InMemorySessionStore::default();
    let mut nodes: Vec<Option<Running>> = vec![
        Some(start(ServerRuntime::Tokio, app(&store)).await),
        Some(start(ServerRuntime::Tokio, app(&store)).await),
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    let switch = Switch::start(addrs).await;
    let mut options = ClientOptions::with_credential("user:alice");
    options.engine.backoff = Arc::new(Constant {
        delay: Duration::from_secs(5),
        jitter: Jitter::None,
    });
    let client = Client::start(&format!("ws://{}/ws", switch.addr), options)
        .unwrap()
        .inner()
        .clone();
    let mut sessions = client.sessions();
    let mut messages = client.messages();
    let mut states = client.states();
    let session = match next(&mut sessions).await {
        SessionOutcome::Created(details) => SessionId::parse(&details.session_id).unwrap(),
        other => panic!("expected a new session, got {other:?}"),
    };
    while next(&mut states).await != State::Connected {}
    let first = nodes[0].take().unwrap();
    for n in 1..=20u64 {
        first.handle.send(session, "tick", &n).unwrap();
    }
    switch.route(1);
    let stopped = std::time::Instant::now();
    first.stop().await.unwrap();
    loop {
        match next(&mut states).await {
            State::Reconnecting { delay, .. } => assert_eq!(delay, Duration::ZERO, "at once on 4116"),
            State::Reconnected => break,
            _ => {}
        }
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    match next(&mut sessions).await {
        SessionOutcome::Restored { session_id, .. } => assert_eq!(session_id, session.to_string()),
        other => panic!("expected the session restored on the other node, got {other:?}"),
    }
    let second = nodes[1].as_ref().unwrap();
    for n in 21..=30u64 {
        second.handle.send(session, "tick", &n).unwrap();
    }
    for n in 1..=30 {
        assert_eq!(tick(&next(&mut messages).await), n);
    }
    let reply = client.query("echo", &"done", None).await.unwrap();
    assert_eq!(reply.payload_as::<String>().unwrap(), "done");
    assert!(messages.try_recv().is_err(), "a message arrived twice");
    client.close(CloseCode::NORMAL, "bye").await.unwrap();
}

/// The in-memory bus with room history, counting the history reads a node makes.
#[derive(Clone)]
struct CountingBus {
    bus: InMemoryPubSub,
    reads: Arc<AtomicUsize>,
}

impl PubSub for CountingBus {
    fn subscribe(&self, node: u64) -> futures::channel::mpsc::UnboundedReceiver<Publication> {
        self.bus.subscribe(node)
    }
    fn publish(&self, node: u64, publication: Publication) {
        self.bus.publish(node, publication);
    }
    fn room_occupied(&self, node: u64, room: &str) {
        self.bus.room_occupied(node, room);
    }
    fn room_vacated(&self, node: u64, room: &str) {
        self.bus.room_vacated(node, room);
    }
    fn room_history(&self) -> bool {
        self.bus.room_history()
    }
    fn room_cursor(&self, node: u64, room: &str) -> BoxFuture<Option<RoomOffset>> {
        self.bus.room_cursor(node, room)
    }
    fn history(
        &self,
        node: u64,
        room: &str,
        after: RoomOffset,
    ) -> BoxFuture<Result<Vec<Publication>, HistoryError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.bus.history(node, room, after)
    }
    fn msgpack_connections(&self, node: u64, present: bool) {
        self.bus.msgpack_connections(node, present);
    }
    fn msgpack_elsewhere(&self, node: u64) -> bool {
        self.bus.msgpack_elsewhere(node)
    }
}

/// A resume on another node whose token does not fit the stored session is refused
/// (4106 `invalid`, so the record was found) without reading the history of the
/// session's rooms: it costs what an unknown session costs, however many rooms the
/// session it names is in (a hostile client made ~250 Redis commands per such resume
/// of a session in 64 rooms). The right token then resumes it, and reads them.
#[tokio::test]
async fn a_resume_with_a_wrong_token_reads_no_room_history() {
    let store = InMemorySessionStore::default();
    let bus = CountingBus {
        bus: InMemoryPubSub::with_room_history(100),
        reads: Arc::default(),
    };
    let node_app = || {
        app(&store)
            .pubsub(bus.clone())
            .on("join", |ctx: Context| async move {
                let room: String = ctx.payload()?;
                ctx.join(&room).await?;
                ctx.reply("joined", &room)
            })
    };
    let nodes = [
        start(ServerRuntime::Tokio, node_app()).await,
        start(ServerRuntime::Tokio, node_app()).await,
    ];
    let (mut first, created) = session(nodes[0].addr, "ann").await;
    for room in ["a", "b", "c"] {
        send(&mut first, "join", serde_json::json!(room), Some(room)).await;
        assert_eq!(recv(&mut first).await["e"], "joined");
    }
    drop(first);
    let resume = |token: &str| {
        serde_json::json!({
            "sessionId": created["sessionId"],
            "resumeToken": token,
            "lastSeq": 0,
        })
    };
    // Until node 0 has written the session's record, node 1 knows no such session.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (mut other, _) = session(nodes[1].addr, "ann").await;
        send(
            &mut other,
            "sys.reconnect.request",
            resume(&"0".repeat(64)),
            Some("r1"),
        )
        .await;
        let refused = recv(&mut other).await;
        assert_eq!(refused["e"], "sys.error", "{refused}");
        assert_eq!(refused["p"]["code"], 4106, "{refused}");
        if refused["p"]["reason"] == "invalid" {
            break;
        }
        assert_eq!(refused["p"]["reason"], "unknown", "{refused}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 1 never found the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        bus.reads.load(Ordering::SeqCst),
        0,
        "history read for a token that does not fit"
    );
    let (mut owner, _) = session(nodes[1].addr, "ann").await;
    let token = created["resumeToken"].as_str().unwrap();
    send(&mut owner, "sys.reconnect.request", resume(token), Some("r2")).await;
    let restored = recv(&mut owner).await;
    assert_eq!(restored["e"], "sys.session.restored", "{restored}");
    assert!(
        bus.reads.load(Ordering::SeqCst) >= 3,
        "the rooms' history read for the resume"
    );
}
