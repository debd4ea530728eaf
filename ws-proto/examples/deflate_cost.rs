//! What permessage-deflate costs and saves on chat-like traffic: bytes on the wire,
//! CPU time per message (compress on the sender, inflate on the receiver), and the
//! memory a connection's compression state takes. Figures in `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p ws-proto --example deflate_cost
//! ```
//!
//! Memory is measured as the growth of the process's resident set (Linux
//! `/proc/self/statm`) over 2,000 connection pairs that each exchanged a few
//! messages, divided by the number of pairs, so it counts what the allocator really
//! touched, not what was asked for.

// A measuring program, not the Sans-IO library: it reads the clock itself.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use ws_proto::frame::SeededMasks;
use ws_proto::{Config, Connection, DeflateParams, Event};

/// Chat envelopes as the chat example sends them: small, repetitive JSON.
fn envelope(i: usize) -> String {
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let lines = [
        "hello everyone",
        "did you see the deploy went out?",
        "yes, looks good on my side",
        "lunch at noon?",
        "I'll be five minutes late to the standup",
    ];
    format!(
        r#"{{"v":1,"e":"chat.message","p":{{"room":"lobby","from":"{}","text":"{}","at":{}}},"s":{}}}"#,
        users[i % 5],
        lines[(i * 7) % 5],
        1_700_000_000_000u64 + i as u64 * 1234,
        i
    )
}

fn pair(server_config: &Config, params: Option<DeflateParams>) -> (Connection, Connection) {
    (
        Connection::server(server_config.clone()).with_deflate(params),
        Connection::client(server_config.clone(), SeededMasks::new(1)).with_deflate(params),
    )
}

struct Run {
    wire: usize,
    plain: usize,
    send_ns: f64,
    recv_ns: f64,
}

/// Server sends `n` envelopes to the client: wire bytes and time per message.
fn run(config: &Config, params: Option<DeflateParams>, n: usize) -> Run {
    let (mut server, mut client) = pair(config, params);
    let messages: Vec<String> = (0..n).map(envelope).collect();
    let plain = messages.iter().map(String::len).sum();
    let mut frames = Vec::with_capacity(n);
    let start = Instant::now();
    for m in &messages {
        server.send_text(m).unwrap();
        frames.push(server.poll_transmit().unwrap());
    }
    let send_ns = start.elapsed().as_nanos() as f64 / n as f64;
    let wire = frames.iter().map(|f| f.len()).sum();
    let start = Instant::now();
    for f in &frames {
        client.handle_bytes(f);
        while let Some(event) = client.poll_event() {
            assert!(matches!(event, Event::Text(_)));
        }
    }
    let recv_ns = start.elapsed().as_nanos() as f64 / n as f64;
    Run {
        wire,
        plain,
        send_ns,
        recv_ns,
    }
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident memory per server connection that sent and received a few messages
/// (the client halves are dropped first, so only server state is counted).
fn memory_per_connection(config: &Config, params: Option<DeflateParams>) -> Option<usize> {
    const N: usize = 2000;
    let before = rss_bytes()?;
    let mut servers = Vec::with_capacity(N);
    for i in 0..N {
        let (mut server, mut client) = pair(config, params);
        for j in 0..3 {
            client.send_text(&envelope(i + j)).unwrap();
            while let Some(bytes) = client.poll_transmit() {
                server.handle_bytes(&bytes);
            }
            while server.poll_event().is_some() {}
            server.send_text(&envelope(i * 3 + j)).unwrap();
            while server.poll_transmit().is_some() {}
        }
        drop(client);
        servers.push(server);
    }
    let after = rss_bytes()?;
    let per = after.saturating_sub(before) / N;
    drop(servers);
    Some(per)
}

const MEMORY_MODES: [&str; 4] = [
    "no compression",
    "context takeover both ways",
    "no context takeover both ways",
    "server_no_context_takeover only",
];

fn memory_mode(mode: usize) {
    let params = match mode {
        0 => None,
        1 => Some(DeflateParams::default()),
        2 => Some(DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        }),
        _ => Some(DeflateParams {
            server_no_context_takeover: true,
            ..DeflateParams::default()
        }),
    };
    let name = MEMORY_MODES[mode];
    match memory_per_connection(&Config::default(), params) {
        Some(bytes) => println!("  {name:<40} {:>8.1} KiB", bytes as f64 / 1024.0),
        None => println!("  {name:<40} (no /proc/self/statm here)"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("memory") {
        memory_mode(args[2].parse().unwrap());
        return;
    }
    let n = 20_000;
    let base = Config::default();
    let with_level = |level| Config {
        deflate_level: level,
        ..base.clone()
    };
    let takeover = Some(DeflateParams::default());
    let no_takeover = Some(DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateParams::default()
    });
    let window_8 = Some(DeflateParams {
        server_max_window_bits: Some(8),
        ..DeflateParams::default()
    });
    let window_12 = Some(DeflateParams {
        server_max_window_bits: Some(12),
        ..DeflateParams::default()
    });
    println!(
        "{n} chat envelopes, server to client ({} bytes each on average)",
        { (0..n).map(|i| envelope(i).len()).sum::<usize>() / n }
    );
    println!(
        "{:<44} {:>12} {:>8} {:>12} {:>12}",
        "configuration", "wire bytes", "ratio", "send ns/msg", "recv ns/msg"
    );
    let cases = [
        ("no compression", base.clone(), None),
        ("deflate level 1, context takeover", with_level(1), takeover),
        ("deflate level 6, context takeover", with_level(6), takeover),
        ("deflate level 9, context takeover", with_level(9), takeover),
        ("deflate level 1, no context takeover", with_level(1), no_takeover),
        ("deflate level 6, no context takeover", with_level(6), no_takeover),
        (
            "deflate, server window 2^8 (client's offer)",
            with_level(1),
            window_8,
        ),
        (
            "deflate, server window 2^12 (client's offer)",
            with_level(1),
            window_12,
        ),
    ];
    // Warm up the allocator and caches once.
    let _ = run(&base, takeover, 2000);
    for (name, config, params) in &cases {
        let r = run(config, *params, n);
        println!(
            "{:<44} {:>12} {:>8.2} {:>12.0} {:>12.0}",
            name,
            r.wire,
            r.wire as f64 / r.plain as f64,
            r.send_ns,
            r.recv_ns
        );
    }
    println!();
    println!("resident memory per server connection after a few messages each way:");
    // Each measured in a fresh process: memory freed by one mode would be reused by
    // the next and hide its cost.
    for mode in 0..MEMORY_MODES.len() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["memory", &mode.to_string()])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
