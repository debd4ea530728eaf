//! Nodes that share rooms through a real `redis-server` (broker-redis): a room message
//! reaches the members on other nodes once and in order, a node without members of a
//! room is not sent its publications, broadcasts reach every node, on tokio, smol and
//! async-std; and a Redis outage is survived as documented. Each test starts its own
//! `redis-server` on a free port (`apt-get install redis-server` if it is missing: the
//! tests fail without it).

use std::time::{Duration, Instant};

use adapter_async_std::{AsyncStdRuntime, SmolRuntime};
use adapter_tokio::prometheus::prometheus_client::encoding::text::encode_registry;
use adapter_tokio::{App, Context, TokioRuntime};
use broker_redis::{BrokerStatus, RedisConfig, RedisPubSub};
use serde_json::{json, Value};
use tether_tests::client::{recv, send, session, Conn};
use tether_tests::harness::{start, Running, ServerRuntime};
use tether_tests::redis_server::{start_node, RedisServer};
use tether_tests::suite::app;

const PREFIX: &str = "tt";

/// The suite's app (`join`, `say` to the room's others, `echo`) with `leave`.
fn node_app() -> App {
    app().on("leave", |ctx: Context| async move {
        let room: String = ctx.payload()?;
        ctx.leave(&room).await?;
        ctx.reply("left", &room)
    })
}

fn config(redis: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(&redis.url()).expect("a Redis URL");
    config.prefix = PREFIX.to_owned();
    config
}

/// A broker on the node's own runtime.
fn broker(runtime: ServerRuntime, config: RedisConfig) -> RedisPubSub {
    match runtime {
        ServerRuntime::Tokio => RedisPubSub::start(config, TokioRuntime),
        ServerRuntime::AsyncStd => RedisPubSub::start(config, AsyncStdRuntime),
        ServerRuntime::Smol => RedisPubSub::start(config, SmolRuntime),
    }
}

/// A node: a server on `runtime` whose broker talks to `redis`.
async fn node(runtime: ServerRuntime, config: RedisConfig) -> (Running, RedisPubSub) {
    let broker = broker(runtime, config);
    let server = start(runtime, node_app().pubsub(broker.clone())).await;
    until("the broker connects", || broker.status().connected).await;
    (server, broker)
}

/// Waits (10 s at most) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn join(ws: &mut Conn, room: &str) {
    send(ws, "join", json!(room), Some("j")).await;
    assert_eq!(recv(ws).await["e"], "joined");
}

async fn say(ws: &mut Conn, room: &str, text: &str) {
    send(ws, "say", json!([room, text]), Some("s")).await;
    assert_eq!(recv(ws).await["e"], "said.ok");
}

/// The next envelope is the answer to a fresh echo: nothing else was waiting.
async fn nothing_more(ws: &mut Conn) {
    send(ws, "echo", json!("last"), Some("last")).await;
    let next = recv(ws).await;
    assert_eq!(next["c"], "last", "nothing else was delivered: {next}");
}

/// `count` messages said in `room` by `from` arrive at `to` in order, once, with
/// consecutive `s`.
async fn receives_in_order(to: &mut Conn, from: &str, texts: &[String]) {
    let mut last_s = None;
    for text in texts {
        let said: Value = recv(to).await;
        assert_eq!(said["e"], "said", "{said}");
        assert_eq!(said["p"], json!({"user": from, "text": text}));
        let s = said["s"].as_u64().expect("in the session stream");
        if let Some(last) = last_s {
            assert_eq!(s, last + 1, "consecutive s");
        }
        last_s = Some(s);
    }
}

fn room_channel(room: &str) -> String {
    format!("{PREFIX}:room:{room}")
}

async fn rooms_reach_other_nodes_once_in_order(runtime: ServerRuntime) {
    let redis = RedisServer::start();
    let (a, broker_a) = node(runtime, config(&redis)).await;
    let (b, broker_b) = node(runtime, config(&redis)).await;
    let (c, broker_c) = node(runtime, config(&redis)).await;
    let (mut alice, _) = session(a.addr, "alice").await;
    let (mut bob, _) = session(b.addr, "bob").await;
    let (mut carol, _) = session(c.addr, "carol").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;
    join(&mut carol, "elsewhere").await;
    // Fan-out per room: only the nodes with members are subscribed to it.
    until("A and B subscribe to the lobby", || {
        redis.subscribers(&room_channel("lobby")) == 2
    })
    .await;
    until("C subscribes to its room", || {
        redis.subscribers(&room_channel("elsewhere")) == 1
    })
    .await;
    assert_eq!(broker_c.status().rooms, 1);

    let publishes = redis.calls("publish");
    let texts: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    for text in &texts {
        say(&mut alice, "lobby", text).await;
    }
    receives_in_order(&mut bob, "alice", &texts).await;
    nothing_more(&mut bob).await;
    nothing_more(&mut alice).await;
    // One PUBLISH per publication, whatever the number of recipients.
    assert_eq!(redis.calls("publish") - publishes, texts.len() as u64);
    // (Redis may deliver before it answers A.)
    until("A counts its publications", || {
        broker_a.status().published == texts.len() as u64
    })
    .await;
    assert_eq!(broker_b.status().received, texts.len() as u64);
    // C has no member in the lobby: Redis sent it none of these.
    assert_eq!(broker_c.status().received, 0, "{:?}", broker_c.status());
    nothing_more(&mut carol).await;

    // And the other way round, once bob's room has a member on C too.
    join(&mut carol, "lobby").await;
    until("C subscribes to the lobby", || {
        redis.subscribers(&room_channel("lobby")) == 3
    })
    .await;
    say(&mut bob, "lobby", "from B").await;
    for ws in [&mut alice, &mut carol] {
        receives_in_order(ws, "bob", &["from B".to_owned()]).await;
        nothing_more(ws).await;
    }
    // The last member on a node leaves: that node unsubscribes.
    send(&mut carol, "leave", json!("lobby"), Some("l")).await;
    assert_eq!(recv(&mut carol).await["e"], "left");
    until("C unsubscribes from the lobby", || {
        redis.subscribers(&room_channel("lobby")) == 2
    })
    .await;
    assert_eq!(broker_c.status().rooms, 1);
    say(&mut alice, "lobby", "after carol left").await;
    receives_in_order(&mut bob, "alice", &["after carol left".to_owned()]).await;
    nothing_more(&mut carol).await;
    drop((a, b, c));
}

async fn broadcasts_reach_every_node(runtime: ServerRuntime) {
    let redis = RedisServer::start();
    let (a, _) = node(runtime, config(&redis)).await;
    let (b, _) = node(runtime, config(&redis)).await;
    let (c, _) = node(runtime, config(&redis)).await;
    let (mut alice, _) = session(a.addr, "alice").await;
    let (mut bob, _) = session(b.addr, "bob").await;
    let (mut carol, _) = session(c.addr, "carol").await;
    assert_eq!(redis.subscribers(&format!("{PREFIX}:all")), 3);
    a.handle
        .broadcast("news", &json!("to everyone"))
        .expect("a broadcast");
    for ws in [&mut alice, &mut bob, &mut carol] {
        let news = recv(ws).await;
        assert_eq!(
            (news["e"].as_str(), &news["p"]),
            (Some("news"), &json!("to everyone"))
        );
        nothing_more(ws).await;
    }
}

mod tokio_nodes {
    use super::*;

    #[tokio::test]
    async fn a_room_message_reaches_other_nodes_once_and_in_order() {
        rooms_reach_other_nodes_once_in_order(ServerRuntime::Tokio).await;
    }

    #[tokio::test]
    async fn a_broadcast_reaches_every_node() {
        broadcasts_reach_every_node(ServerRuntime::Tokio).await;
    }
}

mod smol_nodes {
    use super::*;

    #[tokio::test]
    async fn a_room_message_reaches_other_nodes_once_and_in_order() {
        rooms_reach_other_nodes_once_in_order(ServerRuntime::Smol).await;
    }

    #[tokio::test]
    async fn a_broadcast_reaches_every_node() {
        broadcasts_reach_every_node(ServerRuntime::Smol).await;
    }
}

mod async_std_nodes {
    use super::*;

    #[tokio::test]
    async fn a_room_message_reaches_other_nodes_once_and_in_order() {
        rooms_reach_other_nodes_once_in_order(ServerRuntime::AsyncStd).await;
    }
}

/// A tokio node and a smol node share a room.
#[tokio::test]
async fn nodes_on_different_runtimes_share_rooms() {
    let redis = RedisServer::start();
    let (a, _) = node(ServerRuntime::Tokio, config(&redis)).await;
    let (b, _) = node(ServerRuntime::Smol, config(&redis)).await;
    let (mut alice, _) = session(a.addr, "alice").await;
    let (mut bob, _) = session(b.addr, "bob").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;
    until("both subscribe", || {
        redis.subscribers(&room_channel("lobby")) == 2
    })
    .await;
    say(&mut bob, "lobby", "smol to tokio").await;
    receives_in_order(&mut alice, "bob", &["smol to tokio".to_owned()]).await;
    say(&mut alice, "lobby", "tokio to smol").await;
    receives_in_order(&mut bob, "alice", &["tokio to smol".to_owned()]).await;
}

/// redis-server is killed for 5 s and started again. Meanwhile each node serves its
/// own clients; what node A publishes waits in its outage buffer (4 here: the oldest of
/// 6 are dropped and counted), and is published once A is back, to the nodes subscribed
/// by then (B reconnects first here). Then everything works as before.
#[tokio::test]
async fn a_redis_outage_keeps_local_traffic_and_buffers_publications() {
    let mut redis = RedisServer::start();
    let mut config_a = config(&redis);
    config_a.outage_buffer = 4;
    // A retries slowly and B quickly, so that B is subscribed again when A publishes
    // what it kept (pub/sub stores nothing for a node that is not there).
    config_a.reconnect_backoff = (Duration::from_millis(1500), Duration::from_millis(1500));
    let mut config_b = config(&redis);
    config_b.reconnect_backoff = (Duration::from_millis(50), Duration::from_millis(100));
    let (a, broker_a) = node(ServerRuntime::Tokio, config_a).await;
    let (b, broker_b) = node(ServerRuntime::Tokio, config_b).await;
    let (mut alice, _) = session(a.addr, "alice").await;
    let (mut anna, _) = session(a.addr, "anna").await;
    let (mut bob, _) = session(b.addr, "bob").await;
    for ws in [&mut alice, &mut anna, &mut bob] {
        join(ws, "lobby").await;
    }
    until("A and B subscribe", || {
        redis.subscribers(&room_channel("lobby")) == 2
    })
    .await;
    say(&mut alice, "lobby", "before").await;
    for ws in [&mut anna, &mut bob] {
        receives_in_order(ws, "alice", &["before".to_owned()]).await;
    }

    redis.stop();
    let outage = Instant::now();
    until("both nodes see the outage", || {
        !broker_a.status().connected && !broker_b.status().connected
    })
    .await;
    // Local traffic flows: anna, on alice's node, gets every message at once.
    let during: Vec<String> = (1..=6).map(|i| format!("during {i}")).collect();
    for text in &during {
        say(&mut alice, "lobby", text).await;
    }
    receives_in_order(&mut anna, "alice", &during).await;
    until("A keeps 4 and drops 2", || {
        let s = broker_a.status();
        (s.buffered, s.dropped) == (4, 2)
    })
    .await;
    let status: BrokerStatus = broker_a.status();
    assert!(status.last_error.is_some());
    // bob's node goes on serving him too.
    send(&mut bob, "echo", json!("still here"), Some("e")).await;
    assert_eq!(recv(&mut bob).await["p"], "still here");

    tokio::time::sleep(Duration::from_secs(5).saturating_sub(outage.elapsed())).await;
    redis.restart();
    until("both nodes reconnect", || {
        broker_a.status().connected && broker_b.status().connected
    })
    .await;
    // The 4 kept publications arrive at bob, in order and once; the 2 dropped never do.
    receives_in_order(&mut bob, "alice", &during[2..]).await;
    nothing_more(&mut bob).await;
    until("A's buffer is empty", || broker_a.status().buffered == 0).await;
    let status = broker_a.status();
    assert_eq!((status.dropped, status.connects), (2, 2), "{status:?}");

    // Full service again, both ways.
    until("both resubscribe", || {
        redis.subscribers(&room_channel("lobby")) == 2
    })
    .await;
    say(&mut alice, "lobby", "after").await;
    receives_in_order(&mut anna, "alice", &["after".to_owned()]).await;
    receives_in_order(&mut bob, "alice", &["after".to_owned()]).await;
    say(&mut bob, "lobby", "back").await;
    for ws in [&mut alice, &mut anna] {
        receives_in_order(ws, "bob", &["back".to_owned()]).await;
        nothing_more(ws).await;
    }
}

/// A node as an OS process of its own (`redis_node`), killed when dropped.
struct NodeProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl NodeProcess {
    fn start(redis: &RedisServer) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_redis_node"));
        command.args([redis.url().as_str(), PREFIX]);
        let (child, addr) = start_node(command);
        Self { child, addr }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes as separate processes: a room message reaches the members on the
/// other processes once and in order, a process without members of the room is not
/// subscribed to it, and a broadcast reaches all three.
#[tokio::test]
async fn nodes_as_separate_processes_share_rooms_and_broadcasts() {
    let redis = RedisServer::start();
    let nodes: Vec<NodeProcess> = (0..3).map(|_| NodeProcess::start(&redis)).collect();
    let (mut alice, _) = session(nodes[0].addr, "alice").await;
    let (mut bob, _) = session(nodes[1].addr, "bob").await;
    let (mut carol, _) = session(nodes[2].addr, "carol").await;
    // dave is on alice's node: the latency of the same message without Redis.
    let (mut dave, _) = session(nodes[0].addr, "dave").await;
    for ws in [&mut alice, &mut bob, &mut dave] {
        join(ws, "lobby").await;
    }
    until("two processes subscribe to the lobby", || {
        redis.subscribers(&room_channel("lobby")) == 2
    })
    .await;
    // One at a time: each message's latency from alice's send to its receipt. (60: well
    // inside the inbound rate limit's burst of 100, whatever the machine's speed.)
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let text = [format!("across processes {i}")];
        let sent = Instant::now();
        send(&mut alice, "say", json!(["lobby", text[0]]), Some("s")).await;
        receives_in_order(&mut dave, "alice", &text).await;
        local.push(sent.elapsed());
        receives_in_order(&mut bob, "alice", &text).await;
        remote.push(sent.elapsed());
        assert_eq!(recv(&mut alice).await["e"], "said.ok");
    }
    local.sort();
    remote.sort();
    println!(
        "a room message, p50 / max of 60: on the sender's node {:?} / {:?}, on another process through Redis {:?} / {:?}",
        local[29], local[59], remote[29], remote[59]
    );
    nothing_more(&mut dave).await;
    nothing_more(&mut bob).await;
    nothing_more(&mut carol).await;

    send(&mut carol, "shout", json!("hello all"), Some("h")).await;
    for ws in [&mut carol, &mut alice, &mut bob, &mut dave] {
        let shouted = recv(ws).await;
        assert_eq!(
            (shouted["e"].as_str(), &shouted["p"]),
            (Some("shouted"), &json!("hello all"))
        );
    }
    assert_eq!(recv(&mut carol).await["e"], "shout.ok");
    drop(nodes);
}

/// A user's sessions, one session, and everyone but one session are reached across
/// nodes through the broker's `direct` and `all` channels, with the `ServerHandle` calls
/// of one node.
#[tokio::test]
async fn users_sessions_and_all_but_one_are_reached_across_nodes() {
    let redis = RedisServer::start();
    let (a, _) = node(ServerRuntime::Tokio, config(&redis)).await;
    let (b, broker_b) = node(ServerRuntime::Tokio, config(&redis)).await;
    let (mut alice_a, _) = session(a.addr, "alice").await;
    let (mut alice_b, _) = session(b.addr, "alice").await;
    let (mut bob_b, created) = session(b.addr, "bob").await;
    let bob = ws_session::SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap();
    assert_eq!(redis.subscribers(&format!("{PREFIX}:direct")), 2);

    a.handle
        .send_to_user("alice", "note", &json!("to alice"))
        .unwrap();
    for ws in [&mut alice_a, &mut alice_b] {
        let note = recv(ws).await;
        assert_eq!(
            (note["e"].as_str(), &note["p"]),
            (Some("note"), &json!("to alice"))
        );
        assert!(note["s"].as_u64().is_some(), "in the session stream");
    }
    // A session held by node B, addressed from node A.
    a.handle.send(bob, "direct", &json!("to bob")).unwrap();
    let direct = recv(&mut bob_b).await;
    assert_eq!(
        (direct["e"].as_str(), &direct["p"]),
        (Some("direct"), &json!("to bob"))
    );
    // Everyone but bob.
    a.handle
        .to(adapter_tokio::Audience::All)
        .except(bob)
        .emit("news", &json!("not bob"))
        .unwrap();
    for ws in [&mut alice_a, &mut alice_b] {
        assert_eq!(recv(ws).await["p"], "not bob");
    }
    for ws in [&mut alice_a, &mut alice_b, &mut bob_b] {
        nothing_more(ws).await;
    }
    assert_eq!(broker_b.status().received, 3);
}

/// A publication Redis refuses (here a room whose history key something else wrote as
/// a string: WRONGTYPE) fails alone: it reaches the publisher's node (it is not lost
/// there), is counted in `refused`, and the link stays up, so the other rooms' messages
/// go on reaching the other node once and in order. It once tore the link down, and
/// the rebuild lost and repeated other rooms' messages.
#[tokio::test]
async fn a_publication_redis_refuses_fails_alone_and_keeps_the_link() {
    let redis = RedisServer::start();
    let (a, broker_a) = node(ServerRuntime::Tokio, config(&redis)).await;
    let (b, _broker_b) = node(ServerRuntime::Tokio, config(&redis)).await;
    let (mut alice, _) = session(a.addr, "alice").await;
    let (mut anna, _) = session(a.addr, "anna").await;
    let (mut bob, _) = session(b.addr, "bob").await;
    for ws in [&mut alice, &mut anna, &mut bob] {
        join(ws, "lobby").await;
        join(ws, "broken").await;
    }
    until("A and B subscribe", || {
        redis.subscribers(&room_channel("lobby")) == 2 && redis.subscribers(&room_channel("broken")) == 2
    })
    .await;
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}:history:broken"))
        .arg("not a stream")
        .query(&mut redis.connection())
        .unwrap();
    say(&mut alice, "broken", "refused").await;
    receives_in_order(&mut anna, "alice", &["refused".to_owned()]).await;
    until("A counts the refusal", || broker_a.status().refused == 1).await;
    let status = broker_a.status();
    assert!(status.connected, "{status:?}");
    assert_eq!(status.connects, 1, "the link was not rebuilt: {status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("WRONGTYPE")),
        "{status:?}"
    );
    // And a dashboard sees it.
    let mut text = String::new();
    encode_registry(&mut text, &status.prometheus_registry()).unwrap();
    assert!(
        text.lines().any(|l| l == "tether_broker_refused_total 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "tether_broker_connects_total 1"),
        "{text}"
    );
    let after: Vec<String> = (1..=3).map(|i| format!("after {i}")).collect();
    for text in &after {
        say(&mut alice, "lobby", text).await;
    }
    for ws in [&mut anna, &mut bob] {
        receives_in_order(ws, "alice", &after).await;
        nothing_more(ws).await;
    }
    assert_eq!(broker_a.status().connects, 1);
}
