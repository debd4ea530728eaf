//! Decode and encode throughput of ws-proto against tungstenite on the same inputs.
//!
//! Each case moves a batch of frames through each implementation the way an
//! application drives it: decode = bytes in, whole messages out (ours from slices of
//! 64 KiB, as a socket read would deliver them; tungstenite from a `Read` stream over
//! the same bytes); encode = messages in, wire bytes out. Throughput is reported in
//! bytes of payload per second; docs/BENCHMARKS.md gives the ratios.
//!
//! ```text
//! cargo bench -p ws-proto --bench codec
//! ```

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::Message as TMessage;
use ws_proto::frame::{encode_frame, OpCode, SeededMasks};
use ws_proto::{Config, Connection, Event};

const READ_CHUNK: usize = 64 * 1024;

struct Case {
    name: &'static str,
    text: bool,
    payload_len: usize,
    count: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "text_20B",
        text: true,
        payload_len: 20,
        count: 10_000,
    },
    Case {
        name: "binary_1KiB",
        text: false,
        payload_len: 1024,
        count: 2_000,
    },
    Case {
        name: "binary_64KiB",
        text: false,
        payload_len: 64 * 1024,
        count: 64,
    },
    Case {
        name: "text_64KiB",
        text: true,
        payload_len: 64 * 1024,
        count: 64,
    },
];

fn payload(case: &Case) -> Vec<u8> {
    // ASCII with some two-byte characters, so text validation does real work.
    let unit = "chat message é ".as_bytes();
    let mut p: Vec<u8> = unit.iter().copied().cycle().take(case.payload_len).collect();
    while std::str::from_utf8(&p).is_err() {
        p.pop();
        p.push(b'x');
    }
    p
}

/// `count` frames of the case, masked (client → server).
fn masked_stream(case: &Case) -> Vec<u8> {
    let p = payload(case);
    let opcode = if case.text { OpCode::Text } else { OpCode::Binary };
    let mut out = Vec::new();
    let mut masks = SeededMasks::new(7);
    for _ in 0..case.count {
        encode_frame(
            &mut out,
            true,
            opcode,
            &p,
            Some(ws_proto::frame::MaskSource::next_mask(&mut masks)),
        );
    }
    out
}

fn config() -> Config {
    Config::default().with_max_message_size(1 << 20)
}

fn tungstenite_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

fn decode_ours(stream: &[u8]) -> usize {
    let mut conn = Connection::server(config());
    let mut messages = 0;
    for chunk in stream.chunks(READ_CHUNK) {
        for event in conn.events(chunk) {
            match event {
                Event::Text(t) => {
                    black_box(&t);
                }
                Event::Binary(b) => {
                    black_box(&b);
                }
                _ => unreachable!(),
            }
            messages += 1;
        }
    }
    messages
}

/// A socket stand-in: reads come from a cursor, writes are dropped.
struct Io(Cursor<Vec<u8>>);

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn decode_tungstenite(stream: &[u8]) -> usize {
    let io = Io(Cursor::new(stream.to_vec()));
    let mut ws = WebSocket::from_raw_socket(io, TRole::Server, Some(tungstenite_config()));
    let mut messages = 0;
    while let Ok(msg) = ws.read() {
        black_box(&msg);
        messages += 1;
    }
    messages
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_masked");
    for case in CASES {
        let stream = masked_stream(case);
        group.throughput(Throughput::Bytes((case.payload_len * case.count) as u64));
        assert_eq!(decode_ours(&stream), case.count);
        assert_eq!(decode_tungstenite(&stream), case.count);
        group.bench_with_input(BenchmarkId::new("ws-proto", case.name), &stream, |b, s| {
            b.iter(|| decode_ours(s))
        });
        // tungstenite's cursor copy of the input is excluded from the timing.
        group.bench_with_input(BenchmarkId::new("tungstenite", case.name), &stream, |b, s| {
            b.iter_batched(
                || Io(Cursor::new(s.clone())),
                |io| {
                    let mut ws = WebSocket::from_raw_socket(io, TRole::Server, Some(tungstenite_config()));
                    let mut n = 0;
                    while let Ok(msg) = ws.read() {
                        black_box(&msg);
                        n += 1;
                    }
                    n
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    for (group_name, client) in [("encode_server", false), ("encode_client_masked", true)] {
        let mut group = c.benchmark_group(group_name);
        for case in CASES {
            let p = payload(case);
            let text = String::from_utf8(p.clone()).unwrap();
            // tungstenite takes owned payloads: share one, so each send costs a refcount.
            let shared_text = tungstenite::Utf8Bytes::from(text.clone());
            let shared_binary = bytes::Bytes::from(p.clone());
            group.throughput(Throughput::Bytes((case.payload_len * case.count) as u64));
            group.bench_function(BenchmarkId::new("ws-proto", case.name), |b| {
                b.iter(|| {
                    let mut conn = if client {
                        Connection::client(config(), SeededMasks::new(1))
                    } else {
                        Connection::server(config())
                    };
                    let mut written = 0;
                    for _ in 0..case.count {
                        if case.text {
                            conn.send_text(&text).unwrap();
                        } else {
                            conn.send_binary(&p).unwrap();
                        }
                        // Drain as an adapter would after each batch of sends.
                        while let Some(chunk) = conn.poll_transmit() {
                            written += black_box(chunk).len();
                        }
                    }
                    written
                })
            });
            // The same, given shared payloads as tungstenite is: a large body is queued
            // by reference on a server connection.
            let shared_text_bytes = bytes::Bytes::from(text.clone());
            group.bench_function(BenchmarkId::new("ws-proto-shared", case.name), |b| {
                b.iter(|| {
                    let mut conn = if client {
                        Connection::client(config(), SeededMasks::new(1))
                    } else {
                        Connection::server(config())
                    };
                    let mut written = 0;
                    for _ in 0..case.count {
                        if case.text {
                            conn.send_text_parts(&shared_text_bytes, b"").unwrap();
                        } else {
                            conn.send_binary_shared(&shared_binary).unwrap();
                        }
                        while let Some(chunk) = conn.poll_transmit() {
                            written += black_box(chunk).len();
                        }
                    }
                    written
                })
            });
            let role = if client { TRole::Client } else { TRole::Server };
            group.bench_function(BenchmarkId::new("tungstenite", case.name), |b| {
                b.iter(|| {
                    let io = Io(Cursor::new(Vec::new()));
                    let mut ws = WebSocket::from_raw_socket(io, role, Some(tungstenite_config()));
                    for _ in 0..case.count {
                        let msg = if case.text {
                            TMessage::Text(shared_text.clone())
                        } else {
                            TMessage::Binary(shared_binary.clone())
                        };
                        ws.send(msg).unwrap();
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench_decode, bench_encode
}
criterion_main!(benches);
