//! A room of many sessions spread over nodes sharing Redis, measured: deliveries per
//! second, the latency from a `say` to each member's receipt (p50/p99), and the Redis
//! commands per published message. For docs/BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p tether-tests --bin room_bench -- SESSIONS MESSAGES [EVERY_MS]
//! ```
//!
//! `EVERY_MS` paces the messages (0, the default: each as soon as the previous one was
//! accepted, a throughput run; a pace the machine sustains measures latency without a
//! backlog).
//!
//! Runs three setups, one after the other, each with its own `redis-server` (started on
//! a free port; `apt-get install redis-server` if it is missing): one node without
//! Redis; three nodes sharing the room through `RedisPubSub`; the same with
//! `RedisSessionStore` too (every message journaled for every member). Each node is a
//! `redis_node` process (built next to this binary); the clients run here. Nodes,
//! clients and Redis share this machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_tests::client::{recv, send, session, Received};
use tether_tests::redis_server::RedisServer;

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    OneNode,
    PubSub,
    PubSubAndStore,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::OneNode => "1 node, no Redis",
            Setup::PubSub => "3 nodes, RedisPubSub",
            Setup::PubSubAndStore => "3 nodes, RedisPubSub + RedisSessionStore",
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args.next().map_or(10_000, |a| a.parse().expect("SESSIONS"));
    let messages: u64 = args.next().map_or(100, |a| a.parse().expect("MESSAGES"));
    let every = Duration::from_millis(args.next().map_or(0, |a| a.parse().expect("EVERY_MS")));
    for setup in [Setup::OneNode, Setup::PubSub, Setup::PubSubAndStore] {
        run(setup, sessions, messages, every).await;
    }
}

async fn run(setup: Setup, sessions: usize, messages: u64, every: Duration) {
    let redis = RedisServer::start();
    let count = if setup == Setup::OneNode { 1 } else { 3 };
    let mode = match setup {
        Setup::OneNode => "alone",
        Setup::PubSub => "rooms",
        Setup::PubSubAndStore => "sessions",
    };
    let nodes: Vec<NodeProcess> = (0..count).map(|_| NodeProcess::start(&redis, mode)).collect();
    // The members, round robin over the nodes, and a publisher on node 0.
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(sessions * messages as usize)));
    let delivered = Arc::new(AtomicU64::new(0));
    let last_at = Arc::new(AtomicU64::new(0));
    let joined_at = Instant::now();
    let mut readers = Vec::new();
    for i in 0..sessions {
        let addr = nodes[i % count].addr;
        let (mut ws, _) = session(addr, &format!("m{i}")).await;
        send(&mut ws, "join", json!("big"), Some("j")).await;
        assert_eq!(recv(&mut ws).await["e"], "joined");
        let (latencies, delivered, last_at) = (latencies.clone(), delivered.clone(), last_at.clone());
        readers.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(messages as usize);
            let mut acked = 0;
            while (mine.len() as u64) < messages {
                let Some(received) = ws.next().await else { break };
                let Received::Text(text) = received else { continue };
                let env: Value = serde_json::from_str(&text).unwrap();
                if env["e"] != "said" {
                    continue;
                }
                let sent: u64 = env["p"]["text"].as_str().unwrap().parse().unwrap();
                let now = epoch.elapsed().as_micros() as u64;
                mine.push(now - sent);
                last_at.fetch_max(now, Ordering::Relaxed);
                delivered.fetch_add(1, Ordering::Relaxed);
                // Acknowledge as the clients do (every 16), so replay buffers stay small.
                if mine.len() - acked >= 16 {
                    acked = mine.len();
                    let seq = env["s"].as_u64().unwrap();
                    let ack = json!({"v": "1.0", "e": "sys.ack", "p": {"seq": seq}});
                    ws.send_text(ack.to_string()).await;
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    let joining = joined_at.elapsed();
    let (mut publisher, _) = session(nodes[0].addr, "publisher").await;
    send(&mut publisher, "join", json!("big"), Some("j")).await;
    assert_eq!(recv(&mut publisher).await["e"], "joined");
    // Let every node's subscription to the room settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = (
        redis.calls("publish"),
        redis.calls("evalsha") + redis.calls("eval"),
    );
    let first = epoch.elapsed().as_micros() as u64;
    for _ in 0..messages {
        let now = epoch.elapsed().as_micros() as u64;
        send(&mut publisher, "say", json!(["big", now.to_string()]), Some("s")).await;
        assert_eq!(recv(&mut publisher).await["e"], "said.ok");
        tokio::time::sleep(every).await;
    }
    let expected = sessions as u64 * messages;
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = delivered.load(Ordering::Relaxed);
    let span = Duration::from_micros(last_at.load(Ordering::Relaxed) - first);
    // Let the journal writers finish before counting their commands.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = (
        redis.calls("publish"),
        redis.calls("evalsha") + redis.calls("eval"),
    );
    for reader in readers {
        reader.abort();
    }
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!(
        "{}: {sessions} sessions, {messages} messages every {every:?}: {got}/{expected} deliveries in {:.2?} = {:.0} deliveries/s; latency p50 {:.1} ms, p99 {:.1} ms; Redis per message: {:.2} PUBLISH, {:.2} script calls (journal appends); joining took {joining:.1?}",
        setup.name(),
        span,
        got as f64 / span.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        (after.0 - before.0) as f64 / messages as f64,
        (after.1 - before.1) as f64 / messages as f64,
    );
    if setup == Setup::PubSubAndStore {
        let (used, keys) = redis.memory();
        println!("  Redis after: {keys} keys, {used} bytes used");
    }
    drop(nodes);
}

/// A `redis_node` process, killed when dropped.
struct NodeProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl NodeProcess {
    fn start(redis: &RedisServer, mode: &str) -> Self {
        use std::io::BufRead;
        let binary = std::env::current_exe().unwrap().with_file_name("redis_node");
        let mut command = std::process::Command::new(&binary);
        command.args([redis.url().as_str(), "bench"]);
        if mode != "rooms" {
            command.arg(mode);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "{} (build it: cargo build --release -p tether-tests --bins): {err}",
                    binary.display()
                )
            });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().strip_prefix("listening ").unwrap().parse().unwrap();
        Self { child, addr }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
