//! Coalesced presence (`sys.presence`, a `PresenceDiff` per room and interval), on the
//! test runtime: its clock stands still until a test moves it, so what changes before
//! the move is one interval's batch, every run the same way. The announcements are
//! named `room.presence` here ([`Presence::event`]): the Rust client keeps `sys.*`
//! events to itself; the payload is the same.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use ws_driver::client::{Client, ClientOptions};
use ws_driver::test_runtime::TestRuntime;
use ws_driver::transport::memory::MemoryDialer;
use ws_driver::{App, Context, Hub, Presence, PresenceDiff};

/// The flush interval of these tests: the clock moves by it to announce a batch.
const INTERVAL: Duration = Duration::from_secs(1);
/// The announcements' event.
const EVENT: &str = "room.presence";

fn app(presence: Presence) -> App {
    App::new()
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .presence(presence)
        .on("join", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.join(&room).await?;
            ctx.reply("joined", &room)
        })
        .on("leave", |ctx: Context| async move {
            let room: String = ctx.payload()?;
            ctx.leave(&room).await?;
            ctx.reply("left", &room)
        })
}

fn presence(max_changes: usize) -> Presence {
    Presence {
        flush_interval: INTERVAL,
        max_changes,
        event: EVENT.to_owned(),
        ..Presence::default()
    }
}

/// A connected client of `user` and the presence announcements it receives.
struct Member {
    client: Client,
    heard: Arc<Mutex<Vec<PresenceDiff>>>,
}

impl Member {
    fn connect(hub: &Hub, runtime: &TestRuntime, user: &str) -> Self {
        let dialer = MemoryDialer::new(hub, runtime.clone());
        let client = Client::start_with(dialer, ClientOptions::with_credential(user), runtime.clone());
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        client.on(EVENT, move |env| {
            assert!(env.seq.is_none(), "presence is volatile: no sequence number");
            let diff: PresenceDiff = env.payload_as().expect("a PresenceDiff");
            log.lock().unwrap().push(diff);
        });
        let c = client.clone();
        runtime
            .block_on(async move { c.connected().await })
            .expect("connected");
        Self { client, heard }
    }

    fn call(&self, runtime: &TestRuntime, event: &'static str, room: &str) {
        let (c, room) = (self.client.clone(), room.to_owned());
        runtime
            .block_on(async move { c.query(event, &room, None).await })
            .expect("answered");
    }

    /// The announcements received since the last call, as JSON.
    fn take(&self) -> Vec<Value> {
        let heard = std::mem::take(&mut *self.heard.lock().unwrap());
        heard.iter().map(|d| serde_json::to_value(d).unwrap()).collect()
    }
}

#[test]
fn joins_within_an_interval_are_one_announcement_to_every_member() {
    let runtime = TestRuntime::new();
    let hub = app(presence(500)).try_start(runtime.clone()).unwrap();
    let watcher = Member::connect(&hub, &runtime, "watcher");
    watcher.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    assert_eq!(watcher.take(), [json!({"room": "r", "joined": ["watcher"]})]);

    let names: Vec<String> = (0..20).map(|n| format!("u{n:02}")).collect();
    let joiners: Vec<Member> = names
        .iter()
        .map(|name| {
            let m = Member::connect(&hub, &runtime, name);
            m.call(&runtime, "join", "r");
            m
        })
        .collect();
    // Nothing before the interval ends …
    runtime.run_until_stalled();
    assert_eq!(watcher.take(), Vec::<Value>::new());
    // … then one announcement listing the 20, in the order they joined, to the watcher
    // and to each of the 20 (connected members of the room when it is sent).
    runtime.advance(INTERVAL);
    let users: Vec<&str> = names.iter().map(String::as_str).collect();
    let expected = json!({"room": "r", "joined": users});
    assert_eq!(watcher.take(), std::slice::from_ref(&expected));
    for joiner in &joiners {
        assert_eq!(joiner.take(), std::slice::from_ref(&expected));
    }
}

#[test]
fn a_join_and_a_leave_within_an_interval_cancel_out() {
    let runtime = TestRuntime::new();
    let hub = app(presence(500)).try_start(runtime.clone()).unwrap();
    let watcher = Member::connect(&hub, &runtime, "watcher");
    watcher.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    watcher.take();

    let passer = Member::connect(&hub, &runtime, "passer");
    passer.call(&runtime, "join", "r");
    passer.call(&runtime, "leave", "r");
    let stayer = Member::connect(&hub, &runtime, "stayer");
    stayer.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    // Only the one who stayed: the passer's join and leave folded into nothing.
    assert_eq!(watcher.take(), [json!({"room": "r", "joined": ["stayer"]})]);
    // And an interval with nothing but a join and a leave announces nothing at all.
    passer.call(&runtime, "join", "r");
    passer.call(&runtime, "leave", "r");
    runtime.advance(INTERVAL);
    assert_eq!(watcher.take(), Vec::<Value>::new());
    assert_eq!(passer.take(), Vec::<Value>::new());
}

#[test]
fn the_entry_bound_splits_a_batch_in_order() {
    let runtime = TestRuntime::new();
    let hub = app(presence(2)).try_start(runtime.clone()).unwrap();
    let watcher = Member::connect(&hub, &runtime, "watcher");
    watcher.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    watcher.take();

    let members: Vec<Member> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|name| {
            let m = Member::connect(&hub, &runtime, name);
            m.call(&runtime, "join", "r");
            m
        })
        .collect();
    runtime.advance(INTERVAL);
    assert_eq!(
        watcher.take(),
        [
            json!({"room": "r", "joined": ["a", "b"]}),
            json!({"room": "r", "joined": ["c", "d"]}),
            json!({"room": "r", "joined": ["e"]}),
        ]
    );
    drop(members);
}

#[test]
fn a_users_changes_keep_their_order_across_intervals() {
    let runtime = TestRuntime::new();
    let hub = app(presence(500)).try_start(runtime.clone()).unwrap();
    let watcher = Member::connect(&hub, &runtime, "watcher");
    watcher.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    watcher.take();

    let alice = Member::connect(&hub, &runtime, "alice");
    let bob = Member::connect(&hub, &runtime, "bob");
    // Interval 1: alice joins. Interval 2: bob joins, alice leaves (bob first).
    // Interval 3: alice joins again, bob leaves.
    alice.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    bob.call(&runtime, "join", "r");
    alice.call(&runtime, "leave", "r");
    runtime.advance(INTERVAL);
    alice.call(&runtime, "join", "r");
    bob.call(&runtime, "leave", "r");
    runtime.advance(INTERVAL);
    assert_eq!(
        watcher.take(),
        [
            json!({"room": "r", "joined": ["alice"]}),
            json!({"room": "r", "joined": ["bob"], "left": ["alice"]}),
            json!({"room": "r", "joined": ["alice"], "left": ["bob"]}),
        ]
    );
}

#[test]
fn per_session_entries_name_the_session() {
    let runtime = TestRuntime::new();
    let hub = app(Presence {
        per_user: false,
        ..presence(500)
    })
    .try_start(runtime.clone())
    .unwrap();
    let watcher = Member::connect(&hub, &runtime, "watcher");
    watcher.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    watcher.take();
    // Two tabs of one user: two entries, one per session.
    let tab1 = Member::connect(&hub, &runtime, "alice");
    let tab2 = Member::connect(&hub, &runtime, "alice");
    tab1.call(&runtime, "join", "r");
    tab2.call(&runtime, "join", "r");
    runtime.advance(INTERVAL);
    let heard = watcher.take();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(
        heard[0].as_object().unwrap().len(),
        2,
        "room and joined: {heard:?}"
    );
    let changes = heard[0]["joined"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{heard:?}");
    assert!(changes.iter().all(|c| c["user"] == "alice"));
    assert!(changes
        .iter()
        .all(|c| c["session"].as_str().is_some_and(|s| s.len() == 32)));
    assert_ne!(changes[0]["session"], changes[1]["session"]);
}
