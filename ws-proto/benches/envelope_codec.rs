//! The JSON envelope against the binary (MessagePack) one on the same messages: bytes
//! on the wire, and CPU per message to encode (a typed payload into a buffer) and to
//! decode (the envelope, then the payload into its type). docs/BENCHMARKS.md gives
//! the figures.
//!
//! ```text
//! cargo bench -p ws-proto --bench envelope_codec
//! ```

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use ws_proto::envelope::msgpack::encode_msgpack_serialize;
use ws_proto::envelope::{Envelope, MsgPackEnvelope, OutgoingEnvelope};
use ws_proto::Config;

/// A chat line, as the chat example sends it.
#[derive(Serialize, Deserialize)]
struct ChatMessage {
    room: String,
    user: String,
    text: String,
    ts: u64,
}

/// 1 KiB of binary data: base64 in a JSON string, `bin` in MessagePack.
#[derive(Serialize, Deserialize)]
struct Upload {
    name: String,
    data: Data,
}

struct Data(Vec<u8>);

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Data;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes or base64")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Data, E> {
                Ok(Data(v.to_vec()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Data, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Data)
                    .map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

fn chat() -> ChatMessage {
    ChatMessage {
        room: "lobby".into(),
        user: "alice".into(),
        text: "hello there, are we still on for tonight?".into(),
        ts: 1_703_123_456_789,
    }
}

fn upload() -> Upload {
    Upload {
        name: "avatar.png".into(),
        data: Data((0..1024u32).map(|i| (i * 7) as u8).collect()),
    }
}

fn bench_case<T: Serialize + for<'a> Deserialize<'a>>(c: &mut Criterion, name: &str, value: &T) {
    let config = Config::default();
    let env = OutgoingEnvelope::new("chat.message").with_seq(12_345);
    let mut json = Vec::new();
    env.encode_serialize(value, &mut json).unwrap();
    let mut msgpack = Vec::new();
    encode_msgpack_serialize(&env, value, &mut msgpack).unwrap();
    println!(
        "{name}: JSON {} bytes, MessagePack {} bytes",
        json.len(),
        msgpack.len()
    );

    let mut group = c.benchmark_group(name);
    let mut buf = Vec::with_capacity(4096);
    group.bench_function("encode/json", |b| {
        b.iter(|| {
            buf.clear();
            env.encode_serialize(black_box(value), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    group.bench_function("encode/msgpack", |b| {
        b.iter(|| {
            buf.clear();
            encode_msgpack_serialize(&env, black_box(value), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    let text = std::str::from_utf8(&json).unwrap();
    group.bench_function("decode/json", |b| {
        b.iter(|| {
            let envelope = Envelope::decode(black_box(text), &config).unwrap();
            black_box(envelope.payload_as::<T>().unwrap())
        })
    });
    group.bench_function("decode/msgpack", |b| {
        b.iter(|| {
            let envelope = MsgPackEnvelope::decode(black_box(&msgpack), &config).unwrap();
            black_box(envelope.payload_as::<T>().unwrap())
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_case(c, "chat_line", &chat());
    bench_case(c, "upload_1KiB", &upload());
}

criterion_group!(envelope_codec, benches);
criterion_main!(envelope_codec);
