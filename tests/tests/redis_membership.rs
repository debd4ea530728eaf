//! Room membership across nodes: the rules of ws-driver's `MemberTable` run on the
//! in-memory backend and on broker-redis's `RedisMembership` against a real
//! `redis-server`, through the `Membership` trait; then what only Redis has (its keys,
//! an outage); then presence end to end on two nodes sharing Redis — a user with a
//! session on each node joins and leaves a room once, and every node lists the
//! members of both. `apt-get install redis-server` if it is missing: the tests fail
//! without it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_tokio::{App, Context, Presence, TokioRuntime};
use broker_redis::{RedisConfig, RedisMembership, RedisPubSub, RedisSessionStore, StoreOptions};
use serde_json::{json, Value};
use tether_tests::client::{recv, send, session, Conn};
use tether_tests::harness::{start, Running, ServerRuntime};
use tether_tests::redis_server::RedisServer;
use tether_tests::suite::{app, presence_entries, resume};
use ws_driver::{
    transition, InMemoryMembership, MemberChange, MemberState, MemberUpdate, Membership, PresenceState,
    RoomMember,
};
use ws_session::{SessionId, UserId};

const PREFIX: &str = "tm";
const TTL: Duration = Duration::from_secs(30);

fn config(redis: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(&redis.url()).expect("a Redis URL");
    config.prefix = PREFIX.to_owned();
    config.command_timeout = Duration::from_millis(500);
    config
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn sid(n: u8) -> SessionId {
    SessionId(u128::from(n) << 64 | 0xabc)
}

fn up(room: &str, session: u8, user: &str, state: MemberState) -> MemberUpdate {
    MemberUpdate {
        room: Arc::from(room),
        session: sid(session),
        user: UserId::new(user),
        state,
    }
}

/// What `changes` announce per user, as (user, state).
fn per_user(changes: &[MemberChange]) -> Vec<(String, PresenceState)> {
    changes
        .iter()
        .filter_map(|c| transition(c.user_before, c.user_after).map(|s| (c.user.to_string(), s)))
        .collect()
}

/// What `changes` announce per session.
fn per_session(changes: &[MemberChange]) -> Vec<(SessionId, PresenceState)> {
    changes
        .iter()
        .filter_map(|c| transition(c.session_before, c.session_after).map(|s| (c.session, s)))
        .collect()
}

async fn update(m: &dyn Membership, node: u64, now: u64, updates: Vec<MemberUpdate>) -> Vec<MemberChange> {
    tokio::time::timeout(Duration::from_secs(10), m.update(node, now, updates))
        .await
        .expect("an answer within 10 s")
        .expect("the update is taken")
}

async fn members(m: &dyn Membership, room: &str) -> Vec<RoomMember> {
    let mut list = m.members(room, now_ms()).await.expect("the members");
    list.sort_by_key(|m| m.session);
    list
}

/// The rules, on one backend. Times are real (Redis lists only unexpired entries by
/// its caller's clock), offset where a case needs time to pass.
async fn rules(m: &dyn Membership) {
    use PresenceState::*;
    let t = now_ms();

    // A user with a session on each of two nodes joins once and leaves once; each
    // session's own presence changes every time.
    let c = update(m, 1, t, vec![up("r", 1, "alice", MemberState::Online)]).await;
    assert_eq!(per_user(&c), [("alice".into(), Joined)]);
    assert_eq!(per_session(&c), [(sid(1), Joined)]);
    let c = update(
        m,
        2,
        t,
        vec![
            up("r", 2, "alice", MemberState::Online),
            up("r", 3, "bob", MemberState::Away),
        ],
    )
    .await;
    assert_eq!(per_user(&c), [("bob".into(), Joined)], "alice was in already");
    assert_eq!(per_session(&c), [(sid(2), Joined), (sid(3), Joined)]);
    let c = update(m, 1, t, vec![up("r", 1, "alice", MemberState::Away)]).await;
    assert_eq!(per_user(&c), [], "her other session is online");
    let c = update(m, 2, t, vec![up("r", 2, "alice", MemberState::Away)]).await;
    assert_eq!(per_user(&c), [("alice".into(), Away)]);
    let c = update(m, 2, t, vec![up("r", 2, "alice", MemberState::Online)]).await;
    assert_eq!(per_user(&c), [("alice".into(), Online)]);
    assert_eq!(
        members(m, "r").await,
        [
            RoomMember {
                session: sid(1),
                user: UserId::new("alice"),
                online: false
            },
            RoomMember {
                session: sid(2),
                user: UserId::new("alice"),
                online: true
            },
            RoomMember {
                session: sid(3),
                user: UserId::new("bob"),
                online: false
            },
        ]
    );
    // Reporting what is already there changes nothing.
    assert_eq!(
        update(m, 2, t, vec![up("r", 2, "alice", MemberState::Online)]).await,
        []
    );
    let c = update(m, 2, t, vec![up("r", 2, "alice", MemberState::Gone)]).await;
    assert_eq!(
        per_user(&c),
        [("alice".into(), Away)],
        "the session left is the online one"
    );
    let c = update(m, 1, t, vec![up("r", 1, "alice", MemberState::Gone)]).await;
    assert_eq!(per_user(&c), [("alice".into(), Left)]);
    assert_eq!(
        update(m, 1, t, vec![up("r", 1, "alice", MemberState::Gone)]).await,
        [],
        "gone already"
    );
    let c = update(m, 2, t, vec![up("r", 3, "bob", MemberState::Gone)]).await;
    assert_eq!(per_user(&c), [("bob".into(), Left)]);
    assert!(members(m, "r").await.is_empty());

    // A session that moved to node 2 is node 2's: node 1's late "gone" does not
    // remove it.
    update(m, 1, t, vec![up("m", 5, "carol", MemberState::Online)]).await;
    assert_eq!(
        update(m, 2, t, vec![up("m", 5, "carol", MemberState::Online)]).await,
        [],
        "the move changes nothing"
    );
    assert_eq!(
        update(m, 1, t, vec![up("m", 5, "carol", MemberState::Gone)]).await,
        [],
        "fenced"
    );
    assert_eq!(members(m, "m").await.len(), 1);
    let c = update(m, 2, t, vec![up("m", 5, "carol", MemberState::Gone)]).await;
    assert_eq!(per_user(&c), [("carol".into(), Left)]);

    // Entries expire unless reported again: a node that died leaves, swept by any
    // node's next call.
    let t0 = t + 1_000;
    update(
        m,
        3,
        t0,
        vec![
            up("x", 7, "dave", MemberState::Online),
            up("x", 8, "erin", MemberState::Online),
        ],
    )
    .await;
    let ttl = TTL.as_millis() as u64;
    update(m, 4, t0 + ttl / 2, vec![up("x", 8, "erin", MemberState::Online)]).await; // erin moved to node 4
    assert_eq!(update(m, 4, t0 + ttl - 1, vec![]).await, [], "not yet");
    let c = update(m, 4, t0 + ttl, vec![]).await;
    assert_eq!(
        per_user(&c),
        [("dave".into(), Left)],
        "dave's node stopped reporting"
    );
    assert_eq!(update(m, 4, t0 + ttl + 1, vec![]).await, [], "once");
    let erin = members(m, "x").await;
    assert_eq!(erin.len(), 1);
    assert_eq!(erin[0].user.as_str(), "erin");
    assert!(members(m, "nobody-here").await.is_empty());
}

#[tokio::test]
async fn the_rules_hold_in_memory() {
    rules(&InMemoryMembership::new(TTL)).await;
}

#[tokio::test]
async fn the_rules_hold_on_redis() {
    let redis = RedisServer::start();
    let m = RedisMembership::with_ttl(config(&redis), TTL, TokioRuntime);
    rules(&m).await;
    // Everything under the prefix.
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("tm:")), "{keys:?}");
}

#[tokio::test]
async fn an_outage_is_an_error_not_an_empty_list() {
    let mut redis = RedisServer::start();
    let m = RedisMembership::with_ttl(config(&redis), TTL, TokioRuntime);
    update(&m, 1, now_ms(), vec![up("r", 1, "alice", MemberState::Online)]).await;
    redis.stop();
    let err = m.members("r", now_ms()).await.expect_err("no Redis, no list");
    assert!(!err.0.is_empty());
    let err = m
        .update(1, now_ms(), vec![up("r", 2, "bob", MemberState::Online)])
        .await
        .expect_err("no Redis, no update");
    assert!(!err.0.is_empty());
    // Redis comes back empty (no persistence here): the node's next full report
    // writes its members again.
    redis.restart();
    let report = || {
        vec![
            up("r", 1, "alice", MemberState::Online),
            up("r", 2, "bob", MemberState::Online),
        ]
    };
    let mut reported = false;
    for _ in 0..100 {
        if m.update(1, now_ms(), report()).await.is_ok() {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reported, "Redis takes reports again");
    // A connection made while Redis was coming back may be reset once more: the next
    // call connects again.
    let mut listed = None;
    for _ in 0..100 {
        if let Ok(list) = m.members("r", now_ms()).await {
            listed = Some(list);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.expect("the list once Redis is back").len(), 2);
}

// ----- two nodes, end to end ----------------------------------------------------------

/// The suite's app with presence, membership in Redis, a `leave` and a `who` that
/// lists the room's members as the server handle sees them.
async fn node(redis: &RedisServer) -> Running {
    let store = RedisSessionStore::start(
        config(redis),
        StoreOptions::new(Duration::from_secs(60)),
        TokioRuntime,
    );
    let app: App = app()
        .session_store(store)
        .presence(Presence::default())
        .pubsub(RedisPubSub::start(config(redis), TokioRuntime))
        .membership(RedisMembership::with_ttl(config(redis), TTL, TokioRuntime))
        .on("leave", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.leave(&room).await?;
            ctx.reply("left", &room)
        })
        .on("who", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            let members = ctx
                .server()
                .room_presence(&room)
                .await
                .map_err(ws_driver::HandlerError::internal)?;
            ctx.reply("who", &members)
        });
    start(ServerRuntime::Tokio, app).await
}

/// The watcher of these tests: the one who hears the others.
const WATCHER: &str = "bob";

/// The next `sys.presence` announcement with news of others than the watcher (who
/// hears its own changes too): its room and entries as `{user, state}`, without the
/// entries about the watcher; every envelope until then must be one (the test knows
/// what comes).
async fn presence(ws: &mut Conn) -> Value {
    loop {
        let next = recv(ws).await;
        assert_eq!(next["e"], "sys.presence", "{next}");
        assert!(next.get("s").is_none(), "volatile: {next}");
        let news: Vec<Value> = presence_entries(&next["p"])
            .into_iter()
            .filter(|c| c["user"] != WATCHER)
            .collect();
        if !news.is_empty() {
            return json!({"room": next["p"]["room"], "entries": news});
        }
    }
}

/// An announcement of one change in room `r`, as [`presence`] gives it.
fn one(user: &str, state: &str) -> Value {
    json!({"room": "r", "entries": [{"user": user, "state": state}]})
}

async fn call(ws: &mut Conn, event: &str, payload: Value, reply: &str) -> Value {
    send(ws, event, payload, Some("c")).await;
    loop {
        let next = recv(ws).await;
        if next["e"] == reply {
            return next["p"].clone();
        }
        assert_eq!(next["e"], "sys.presence", "only presence may come first: {next}");
    }
}

/// Waits until the node of the room's first member is subscribed to the room's channel
/// (a node receives a room's publications from then on: docs/GUIDE.md, "Several nodes").
async fn subscribed(redis: &RedisServer, room: &str) {
    let channel = format!("{PREFIX}:room:{room}");
    for _ in 0..500 {
        if redis.subscribers(&channel) >= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no node subscribed to {channel} within 5 s");
}

/// `name` joins `room` on `node`, and `watcher` hears it as its next presence, alone:
/// what `node` announced before (it announces in order, a batch in one announcement)
/// was not about anyone else.
async fn marker(node: &Running, name: &str, watcher: &mut Conn) -> Conn {
    let (mut ws, _) = session(node.addr, name).await;
    call(&mut ws, "join", json!("r"), "joined").await;
    assert_eq!(presence(watcher).await, one(name, "joined"));
    ws
}

#[tokio::test]
async fn presence_and_members_span_the_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut bob, _) = session(b.addr, "bob").await;
    call(&mut bob, "join", json!("r"), "joined").await;
    subscribed(&redis, "r").await;

    // Alice joins on A: bob, on B, hears it once.
    let (mut alice_a, _) = session(a.addr, "alice").await;
    call(&mut alice_a, "join", json!("r"), "joined").await;
    assert_eq!(presence(&mut bob).await, one("alice", "joined"));

    // Her second tab, on B, is the same user in the room: nothing is announced.
    let (mut alice_b, _) = session(b.addr, "alice").await;
    call(&mut alice_b, "join", json!("r"), "joined").await;
    let _dave = marker(&b, "dave", &mut bob).await;

    // Both nodes list every user.
    let expected = json!([
        {"user": "alice", "online": true},
        {"user": "bob", "online": true},
        {"user": "dave", "online": true},
    ]);
    assert_eq!(call(&mut alice_a, "who", json!("r"), "who").await, expected);
    assert_eq!(call(&mut bob, "who", json!("r"), "who").await, expected);

    // The tab on A leaves: she is still in through B. Then the one on B: she left.
    call(&mut alice_a, "leave", json!("r"), "left").await;
    let _carol = marker(&a, "carol", &mut bob).await;
    call(&mut alice_b, "leave", json!("r"), "left").await;
    assert_eq!(presence(&mut bob).await, one("alice", "left"));
    assert_eq!(
        call(&mut alice_a, "who", json!("r"), "who").await,
        json!([
            {"user": "bob", "online": true},
            {"user": "carol", "online": true},
            {"user": "dave", "online": true},
        ])
    );
}

#[tokio::test]
async fn a_session_that_moves_to_another_node_stays_in_the_room_without_a_word() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut bob, _) = session(b.addr, "bob").await;
    call(&mut bob, "join", json!("r"), "joined").await;
    subscribed(&redis, "r").await;
    let (mut alice, created) = session(a.addr, "alice").await;
    call(&mut alice, "join", json!("r"), "joined").await;
    assert_eq!(presence(&mut bob).await, one("alice", "joined"));

    // Her connection to A drops: away. She resumes on B: online again, and nothing
    // else — node A, which let the session go, does not announce her gone.
    drop(alice);
    assert_eq!(presence(&mut bob).await, one("alice", "away"));
    let (mut alice, answer) = resume(b.addr, "alice", &created, 1).await;
    assert_eq!(answer["e"], "sys.session.restored", "{answer}");
    assert_eq!(presence(&mut bob).await, one("alice", "online"));
    let _carol = marker(&a, "carol", &mut bob).await;
    assert_eq!(
        call(&mut alice, "who", json!("r"), "who").await,
        json!([
            {"user": "alice", "online": true},
            {"user": "bob", "online": true},
            {"user": "carol", "online": true},
        ])
    );
}
