//! The Redis session store (broker-redis `RedisSessionStore`) against a real
//! `redis-server`: the store rules — the cases of ws-session's `SessionTable` — run on
//! both the in-memory store and the Redis one, through the `SessionStore` trait; then
//! what only Redis has (time to live, compaction, keys and verifiers, outages, a full
//! journal buffer). `apt-get install redis-server` if it is missing: the tests fail
//! without it.

use std::sync::Arc;
use std::time::Duration;

use adapter_async_std::SmolRuntime;
use adapter_tokio::TokioRuntime;
use broker_redis::{RedisConfig, RedisSessionStore, StoreOptions};
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use tether_tests::redis_server::RedisServer;
use ws_driver::{InMemorySessionStore, JournalBatch, SessionStore};
use ws_session::{JournalEntry, SessionId, TokenVerifier, UserId};

const PREFIX: &str = "ts";
const WAIT: Duration = Duration::from_secs(10);

/// Message `seq`; an even one carries a MessagePack form too (its bytes are not read
/// by the stores, only kept).
fn msg(seq: u64) -> JournalEntry {
    JournalEntry::Message {
        seq,
        prefix: format!(r#"{{"v":"1.0","e":"m","p":{seq}"#).into_bytes().into(),
        msgpack: seq
            .is_multiple_of(2)
            .then(|| format!("packed {seq}").into_bytes().into()),
    }
}

/// Which messages of `record` kept their MessagePack form, and that it is theirs.
fn packed(record: &ws_session::SessionRecord) -> Vec<u64> {
    record
        .replay
        .iter()
        .filter_map(|(s, _, m)| {
            let m = m.as_ref()?;
            assert_eq!(&m[..], format!("packed {s}").as_bytes());
            Some(*s)
        })
        .collect()
}

fn v(n: u8) -> TokenVerifier {
    TokenVerifier([n; 32])
}

fn created(user: &str, token: u8) -> JournalEntry {
    JournalEntry::Created {
        user: UserId::new(user),
        anonymous: false,
        token: v(token),
    }
}

fn config(redis: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(&redis.url()).expect("a Redis URL");
    config.prefix = PREFIX.to_owned();
    config.command_timeout = Duration::from_millis(500);
    config.reconnect_backoff = (Duration::from_millis(50), Duration::from_millis(200));
    config
}

async fn append(store: &dyn SessionStore, node: u64, batch: JournalBatch) -> Vec<SessionId> {
    tokio::time::timeout(WAIT, store.append(node, batch))
        .await
        .expect("an append within 10 s")
        .expect("the append is taken")
}

async fn seqs(store: &dyn SessionStore, node: u64, session: SessionId) -> Option<Vec<u64>> {
    // A wrong token reads without claiming.
    let record = store.load(node, session, v(255)).await.expect("a load");
    record.map(|r| r.replay.iter().map(|(s, _, _)| *s).collect())
}

async fn moved(stream: &mut UnboundedReceiver<SessionId>) -> SessionId {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a moved notice within 10 s")
        .expect("the stream is open")
}

/// The rules of `SessionTable`, asked of any store through the trait. `ttl` is the
/// store's resume window.
async fn the_store_rules(store: Arc<dyn SessionStore>, ttl: Duration) {
    let store = &*store;
    let (a, b) = (11_u64, 22_u64);
    let mut moved_a = store.subscribe(a);
    let mut moved_b = store.subscribe(b);
    let sid = SessionId(0x5e55_1011);

    // No start, no record: refused.
    assert_eq!(append(store, a, vec![(sid, vec![msg(1)])]).await, [sid]);
    assert!(seqs(store, a, sid).await.is_none());

    // Created makes the writer the owner; another node's writes are refused whole.
    let fenced = append(
        store,
        a,
        vec![(
            sid,
            vec![
                created("alice", 1),
                JournalEntry::Joined("r".into()),
                msg(1),
                msg(2),
            ],
        )],
    )
    .await;
    assert!(fenced.is_empty());
    assert_eq!(
        append(store, b, vec![(sid, vec![msg(3)])]).await,
        [sid],
        "not the owner"
    );
    assert_eq!(
        seqs(store, b, sid).await.unwrap(),
        [1, 2],
        "the fenced write left no trace"
    );

    // A wrong token reads the record but does not move it: A still writes.
    let read = store.load(b, sid, v(9)).await.unwrap().expect("a record");
    assert_eq!((read.next_seq, read.rooms.len()), (3, 1));
    assert!(append(store, a, vec![(sid, vec![msg(3)])]).await.is_empty());

    // The right token claims it for B; A is told and fenced off.
    let claimed = store.load(b, sid, v(1)).await.unwrap().expect("claimed");
    assert_eq!(claimed.next_seq, 4);
    assert_eq!(
        claimed.replay.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        packed(&claimed),
        [2],
        "the MessagePack form is kept, only where given"
    );
    assert_eq!(moved(&mut moved_a).await, sid);
    assert_eq!(
        append(store, a, vec![(sid, vec![msg(4)])]).await,
        [sid],
        "fenced off"
    );
    let rotated = vec![
        JournalEntry::Token {
            token: v(2),
            previous: Some(v(1)),
        },
        JournalEntry::Attached,
        msg(4),
        JournalEntry::Trimmed { first: 3 },
    ];
    assert!(append(store, b, vec![(sid, rotated)]).await.is_empty());
    assert_eq!(seqs(store, a, sid).await.unwrap(), [3, 4]);

    // The previous token still admits until confirmed: A takes it back with it.
    assert!(store.load(a, sid, v(1)).await.unwrap().is_some());
    assert_eq!(moved(&mut moved_b).await, sid);
    assert!(append(store, a, vec![(sid, vec![JournalEntry::Confirmed])])
        .await
        .is_empty());
    // Confirmed: the previous token is used and moves nothing.
    assert!(store.load(b, sid, v(1)).await.unwrap().is_some());
    assert!(
        append(store, a, vec![(sid, vec![msg(5)])]).await.is_empty(),
        "A still owns it"
    );

    // Several sessions in one batch: each judged alone.
    let other = SessionId(0x07e4);
    let fenced = append(
        store,
        b,
        vec![(other, vec![created("bob", 3)]), (sid, vec![msg(6)])],
    )
    .await;
    assert_eq!(fenced, [sid]);
    assert!(seqs(store, b, other).await.is_some());

    // One session twice in a batch (batches merged): both parts, in order.
    let twice = SessionId(0x7_1ce);
    let fenced = append(
        store,
        a,
        vec![
            (twice, vec![created("erin", 5), msg(1)]),
            (sid, vec![msg(6)]),
            (twice, vec![msg(2)]),
            (twice, vec![msg(3), JournalEntry::Ended]),
        ],
    )
    .await;
    assert!(fenced.is_empty());
    assert!(seqs(store, a, twice).await.is_none(), "ended in the same batch");
    let fenced = append(
        store,
        a,
        vec![(twice, vec![created("erin", 5), msg(1)]), (twice, vec![msg(2)])],
    )
    .await;
    assert!(fenced.is_empty());
    assert_eq!(seqs(store, a, twice).await.unwrap(), [1, 2]);

    // Ended deletes the record.
    assert!(append(store, b, vec![(other, vec![JournalEntry::Ended])])
        .await
        .is_empty());
    assert!(seqs(store, b, other).await.is_none(), "ended");
    assert_eq!(
        append(store, b, vec![(other, vec![msg(1)])]).await,
        [other],
        "gone"
    );

    // Suspended: gone after the window; attached: kept while its node lives.
    let attached = SessionId(0xa77a);
    assert!(
        append(store, a, vec![(attached, vec![created("carol", 4), msg(1)])])
            .await
            .is_empty()
    );
    assert!(append(store, a, vec![(sid, vec![JournalEntry::Suspended])])
        .await
        .is_empty());
    tokio::time::sleep(ttl / 2).await;
    // Messages to a suspended session do not extend its window.
    assert!(append(store, a, vec![(sid, vec![msg(7)])]).await.is_empty());
    tokio::time::sleep(ttl * 3 / 4).await;
    assert!(
        seqs(store, a, sid).await.is_none(),
        "expired a window after Suspended"
    );
    tokio::time::sleep(ttl).await;
    assert_eq!(
        seqs(store, a, attached).await.unwrap(),
        [1],
        "attached, not expired"
    );
}

#[tokio::test]
async fn the_in_memory_store_follows_the_rules() {
    let ttl = Duration::from_millis(600);
    the_store_rules(Arc::new(InMemorySessionStore::new(ttl)), ttl).await;
}

#[tokio::test]
async fn the_redis_store_follows_the_same_rules_on_tokio() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(600);
    let store = RedisSessionStore::start(config(&redis), StoreOptions::new(ttl), TokioRuntime);
    the_store_rules(Arc::new(store.clone()), ttl).await;
    let status = store.status();
    assert!(status.claims >= 2 && status.moved_notices >= 2, "{status:?}");
    assert_eq!((status.entries_lost, status.load_failures), (0, 0), "{status:?}");
}

#[tokio::test]
async fn the_redis_store_follows_the_same_rules_on_smol() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(600);
    let store = RedisSessionStore::start(config(&redis), StoreOptions::new(ttl), SmolRuntime);
    the_store_rules(Arc::new(store), ttl).await;
}

/// Keys live under the prefix, with a time to live; the token's verifier is stored,
/// and a record with many appends is folded into a snapshot by its owner.
#[tokio::test]
async fn keys_have_the_prefix_a_ttl_and_records_are_compacted() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(30);
    let mut options = StoreOptions::new(ttl);
    options.compact_after = 8;
    let store = RedisSessionStore::start(config(&redis), options, TokioRuntime);
    let sid = SessionId(0xc0ffee);
    let node = 7;
    let _moved = store.subscribe(node);
    append(&store, node, vec![(sid, vec![created("dave", 1)])]).await;
    for s in 1..=40 {
        let mut entries = vec![msg(s)];
        if s % 10 == 0 {
            entries.push(JournalEntry::Trimmed { first: s - 2 });
        }
        append(&store, node, vec![(sid, entries)]).await;
    }
    let mut redis_conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis_conn).unwrap();
    assert_eq!(keys, [store.key(sid)]);
    assert!(keys[0].starts_with("ts:session:"));
    let pttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut redis_conn).unwrap();
    assert!(
        pttl > 20_000 && pttl <= 30_000,
        "attached: the window, refreshed ({pttl})"
    );
    let fields: i64 = redis::cmd("HLEN").arg(&keys[0]).query(&mut redis_conn).unwrap();
    assert!(fields <= 5 + 8, "compacted: {fields} fields");
    assert!(store.status().compactions >= 4, "{:?}", store.status());
    let (owner, record) = store.peek(sid).await.unwrap().expect("a record");
    assert_eq!(owner, node);
    assert_eq!(
        record.replay.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        [38, 39, 40]
    );
    assert_eq!(packed(&record), [38, 40], "through the snapshots");
    assert_eq!(record.next_seq, 41);
    assert_eq!(record.token, v(1));
}

/// A session that keeps receiving large messages (a suspended member of a busy room)
/// has its record folded by bytes, not only every `compact_after` chunks: with the
/// replay buffer trimming behind, what Redis holds for it stays near the replay bound
/// (it grew to 6–8.5 MB per member with 12 KB room messages before).
#[tokio::test]
async fn a_record_of_large_messages_is_folded_by_its_bytes() {
    let redis = RedisServer::start();
    let mut options = StoreOptions::new(Duration::from_secs(30));
    options.compact_after = 1000;
    options.compact_after_bytes = 16 * 1024;
    let store = RedisSessionStore::start(config(&redis), options, TokioRuntime);
    let sid = SessionId(0xb16);
    let node = 3;
    let _moved = store.subscribe(node);
    append(&store, node, vec![(sid, vec![created("erin", 1)])]).await;
    let big = "x".repeat(4096);
    for seq in 1..=200u64 {
        let message = JournalEntry::Message {
            seq,
            prefix: format!(r#"{{"v":"1.0","e":"m","p":"{big}""#).into_bytes().into(),
            msgpack: None,
        };
        // The replay buffer keeps the last 4: each message trims the one 4 back.
        let mut entries = vec![message];
        if seq > 4 {
            entries.push(JournalEntry::Trimmed { first: seq - 3 });
        }
        append(&store, node, vec![(sid, entries)]).await;
    }
    // 200 messages of 4 KiB were written (~820 KB); 4 are kept, plus at most 16 KiB
    // of chunks not folded yet (the fold runs after the writes that crossed the bound).
    let usage = || -> i64 {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(store.key(sid))
            .query(&mut redis.connection())
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while usage() >= 64 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} bytes held for one session in Redis",
            usage()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.status().compactions >= 10, "{:?}", store.status());
    let (_, record) = store.peek(sid).await.unwrap().expect("a record");
    assert_eq!(
        record.replay.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        [197, 198, 199, 200]
    );
}

/// Redis away: a load fails within the command timeout (the hub refuses the resume as
/// unknown); appends wait and are written once Redis is back, each once; beyond the
/// journal buffer the oldest are dropped, answered with an error and counted.
#[tokio::test]
async fn an_outage_fails_loads_and_holds_appends_within_the_buffer() {
    let mut redis = RedisServer::start();
    let mut options = StoreOptions::new(Duration::from_secs(30));
    options.journal_buffer = 6;
    let store = RedisSessionStore::start(config(&redis), options, TokioRuntime);
    let node = 3;
    let _moved = store.subscribe(node);
    let (s1, s2, s3) = (SessionId(1), SessionId(2), SessionId(3));
    append(&store, node, vec![(s1, vec![created("a", 1), msg(1)])]).await;
    assert!(store.status().connected);

    redis.stop();
    let started = std::time::Instant::now();
    let err = store.load(9, s1, v(1)).await.expect_err("no Redis, no record");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{err} after {:?}",
        started.elapsed()
    );
    assert_eq!(store.status().load_failures, 1);
    // Held while Redis is away: 3 batches of 3 entries, 6 kept.
    let first = store.append(node, vec![(s2, vec![created("b", 2), msg(1), msg(2)])]);
    let second = store.append(node, vec![(s3, vec![created("c", 3), msg(1), msg(2)])]);
    let third = store.append(node, vec![(s3, vec![msg(3), msg(4), msg(5)])]);
    let first = tokio::spawn(first);
    let (second, third) = (tokio::spawn(second), tokio::spawn(third));
    let dropped = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert!(dropped.is_err(), "the oldest batch is dropped and says so");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = store.status();
    assert!(!status.connected && status.write_retries > 0, "{status:?}");
    assert_eq!(
        (status.entries_lost, status.entries_buffered),
        (3, 6),
        "{status:?}"
    );

    // Back, empty (no persistence): the held batches are written once, in order.
    redis.restart();
    assert!(tokio::time::timeout(WAIT, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .is_empty());
    assert!(tokio::time::timeout(WAIT, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .is_empty());
    let (_, record) = store.peek(s3).await.unwrap().expect("written after the outage");
    assert_eq!(
        record.replay.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(
        store.peek(s2).await.unwrap().is_none(),
        "dropped, not half-written"
    );
    // The session written before the outage is gone with Redis's memory: its next
    // write is fenced (its node lets it go) and a resume elsewhere finds nothing.
    assert_eq!(append(&store, node, vec![(s1, vec![msg(2)])]).await, [s1]);
    assert!(store.load(9, s1, v(1)).await.unwrap().is_none());
    let status = store.status();
    assert!(status.connected, "{status:?}");
    assert_eq!(
        (status.entries_lost, status.entries_buffered),
        (3, 0),
        "{status:?}"
    );
}

/// A real node writing to the Redis store: the record holds the resume token's
/// verifier, and neither the token (hex) nor its 32 bytes appear anywhere in Redis.
#[tokio::test]
async fn redis_holds_the_token_only_as_its_verifier() {
    use tether_tests::client::{recv, send, session};
    use tether_tests::harness::{start, ServerRuntime};
    let redis = RedisServer::start();
    let store = RedisSessionStore::start(config(&redis), StoreOptions::default(), TokioRuntime);
    let node = start(
        ServerRuntime::Tokio,
        tether_tests::suite::app().session_store(store.clone()),
    )
    .await;
    let (mut ws, created) = session(node.addr, "alice").await;
    send(&mut ws, "echo", serde_json::json!("hello"), Some("e")).await;
    assert_eq!(recv(&mut ws).await["e"], "echo.reply");
    let sid = SessionId::parse(created["sessionId"].as_str().unwrap()).unwrap();
    let token_hex = created["resumeToken"].as_str().unwrap().to_owned();
    let token = ws_session::ResumeToken::parse(&token_hex).expect("a token");
    let deadline = std::time::Instant::now() + WAIT;
    let record = loop {
        if let Some((_, record)) = store.peek(sid).await.unwrap() {
            break record;
        }
        assert!(std::time::Instant::now() < deadline, "the session reached Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(record.token, token.verifier());
    assert_eq!(record.user, UserId::new("alice"));
    let mut connection = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    assert_eq!(keys, [store.key(sid)]);
    let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query(&mut connection)
        .unwrap();
    let everything: Vec<u8> = fields.concat();
    let contains = |needle: &[u8]| everything.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&token.verifier().0), "the verifier is there");
    assert!(!contains(token_hex.as_bytes()), "the token in clear");
    let raw: Vec<u8> = (0..token_hex.len() / 2)
        .map(|i| u8::from_str_radix(&token_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(!contains(&raw), "the token's bytes");
}

/// A session whose owner keeps writing messages can still be claimed (appends that do
/// not touch the token do not defeat a claim), and the claimer gets every message the
/// owner wrote before it was fenced off, no more, no less.
#[tokio::test]
async fn a_busy_session_is_claimed_with_every_message_written_before_the_fence() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(30);
    let owner = RedisSessionStore::start(config(&redis), StoreOptions::new(ttl), TokioRuntime);
    let claimer = RedisSessionStore::start(config(&redis), StoreOptions::new(ttl), TokioRuntime);
    let (a, b) = (1_u64, 2_u64);
    let _moved_a = owner.subscribe(a);
    let _moved_b = claimer.subscribe(b);
    let sid = SessionId(0xb05);
    append(&owner, a, vec![(sid, vec![created("busy", 1)])]).await;
    let writer = {
        let owner = owner.clone();
        tokio::spawn(async move {
            // Writes until fenced off; returns the last s written.
            let mut s = 0;
            loop {
                let fenced = append(&owner, a, vec![(sid, vec![msg(s + 1), msg(s + 2)])]).await;
                if !fenced.is_empty() {
                    return s;
                }
                s += 2;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let record = claimer.load(b, sid, v(1)).await.unwrap().expect("claimed");
    let last = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert!(last > 10, "the owner was busy ({last} messages)");
    assert_eq!(
        record.next_seq,
        last + 1,
        "every message written before the fence"
    );
    let seqs: Vec<u64> = record.replay.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    assert!(claimer.status().claims == 1, "{:?}", claimer.status());
}
