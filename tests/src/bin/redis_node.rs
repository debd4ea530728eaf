//! One node of several sharing rooms through Redis, as a process of its own, for the
//! tests that run nodes as separate OS processes (`tests/tests/redis_nodes.rs`).
//!
//! ```text
//! redis_node REDIS_URL PREFIX
//! ```
//!
//! Serves the suite's app (with `shout`: a broadcast to everyone) on a free loopback
//! port, prints `listening ADDRESS` once it accepts, and stops when its standard input
//! closes.

use std::io::{BufRead, Write};

use adapter_tokio::{Context, TokioRuntime};
use broker_redis::{RedisConfig, RedisPubSub};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: redis_node REDIS_URL PREFIX");
    let prefix = args.next().expect("usage: redis_node REDIS_URL PREFIX");
    let mut config = RedisConfig::new(&url).expect("a Redis URL");
    config.prefix = prefix;
    let broker = RedisPubSub::start(config, TokioRuntime);
    let app = tether_tests::suite::app()
        .on("shout", |ctx: Context| async move {
            let text: String = ctx.payload()?;
            ctx.broadcast("shouted", &text)?;
            ctx.reply("shout.ok", &())
        })
        .pubsub(broker.clone());
    let server = adapter_tokio::Server::bind("127.0.0.1:0", "/ws", app)
        .await
        .expect("bind");
    while !broker.status().connected {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut out = std::io::stdout();
    writeln!(out, "listening {}", server.local_addr().expect("an address")).expect("stdout");
    out.flush().expect("stdout");
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await;
    };
    server.run_until(stdin_closed).await.expect("the server ran");
}
