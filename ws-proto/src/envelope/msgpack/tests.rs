//! Tests of the binary envelope: round trips, the JSON envelope's rules and codes on
//! the same documents, the limits checked before decoding, bytes carried as bytes,
//! negotiation.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;

use super::*;
use crate::envelope::{Envelope, Payload};

fn config() -> Config {
    Config::default()
}

/// The MessagePack of a JSON document (maps keep their keys; numbers their kind).
fn msgpack_of(value: &serde_json::Value) -> Vec<u8> {
    rmp_serde::encode::to_vec_named(value).unwrap()
}

#[test]
fn every_field_survives_a_round_trip() {
    let payload = r#"{"text":"héllo","n":-3,"f":1.5,"list":[1,null,true],"deep":{"a":{"b":[]}}}"#;
    let env = OutgoingEnvelope::new("chat.message")
        .with_payload(Payload::from_json(payload).unwrap())
        .with_correlation_id("q1")
        .with_timestamp(1_703_123_456_789)
        .with_seq(u64::MAX);
    let mut bytes = Vec::new();
    encode_msgpack(&env, &mut bytes).unwrap();
    let decoded = MsgPackEnvelope::decode(&bytes, &config()).unwrap();
    assert_eq!(decoded.version, WIRE_VERSION);
    assert_eq!(decoded.event, "chat.message");
    assert_eq!(decoded.correlation_id, Some("q1"));
    assert_eq!(decoded.timestamp, Some(1_703_123_456_789));
    assert_eq!(decoded.seq, Some(u64::MAX));
    let value: serde_json::Value = decoded.payload_as().unwrap();
    assert_eq!(value, serde_json::from_str::<serde_json::Value>(payload).unwrap());

    // Without a payload, correlation id, timestamp or seq: only `v` and `e`.
    let mut bytes = Vec::new();
    encode_msgpack(&OutgoingEnvelope::new("ping"), &mut bytes).unwrap();
    assert_eq!(bytes[0], 0x82, "a map of two fields");
    let decoded = MsgPackEnvelope::decode(&bytes, &config()).unwrap();
    assert_eq!((decoded.payload, decoded.seq), (None, None));
    assert_eq!(decoded.payload_as::<Option<u8>>().unwrap(), None);
}

#[test]
fn a_broadcast_body_is_encoded_once_and_framed_per_recipient() {
    let env = OutgoingEnvelope::new("news").with_payload(Payload::from_json(r#"{"headline":"hi"}"#).unwrap());
    let mut body = Vec::new();
    let fields = encode_msgpack_body(&env, &mut body).unwrap();
    for seq in [None, Some(1), Some(300), Some(u64::MAX)] {
        let mut framed = Vec::new();
        write_msgpack_framed(&body, fields, seq, &mut framed);
        let mut whole = Vec::new();
        let env = match seq {
            Some(s) => env.with_seq(s),
            None => env,
        };
        encode_msgpack(&env, &mut whole).unwrap();
        assert_eq!(framed, whole);
        assert_eq!(MsgPackEnvelope::decode(&framed, &config()).unwrap().seq, seq);
    }
}

/// The same documents through both codecs: accepted with the same fields, or refused
/// with the same code.
#[test]
fn the_json_rules_and_codes_hold_for_the_same_documents() {
    let long_event = "e".repeat(Config::DEFAULT_MAX_EVENT_NAME_LEN + 1);
    let long_c = "c".repeat(Config::DEFAULT_MAX_CORRELATION_ID_LEN + 1);
    let documents = [
        json!({"v": "1.0", "e": "a"}),
        json!({"v": "1", "e": "a", "p": {"x": [1, 2]}, "c": "id", "t": 5, "s": 9}),
        json!({"v": "1.7", "e": "a", "unknown": {"ignored": true}}),
        json!({"v": "1.0", "e": "a", "p": null, "c": null, "t": null, "s": null}),
        json!({"e": "a"}),
        json!({"v": "1.0"}),
        json!({"v": "2.0", "e": "a"}),
        json!({"v": "1.x", "e": "a"}),
        json!({"v": 1, "e": "a"}),
        json!({"v": "1.0", "e": ""}),
        json!({"v": "1.0", "e": "has space"}),
        json!({"v": "1.0", "e": "é"}),
        json!({"v": "1.0", "e": long_event}),
        json!({"v": "1.0", "e": ["a"]}),
        json!({"v": "1.0", "e": "a", "c": long_c}),
        json!({"v": "1.0", "e": "a", "c": 7}),
        json!({"v": "1.0", "e": "a", "s": 0}),
        json!({"v": "1.0", "e": "a", "s": -1}),
        json!({"v": "1.0", "e": "a", "t": 1.5}),
        json!({"v": "1.0", "e": "a", "t": "5"}),
        json!(["v", "e"]),
        json!("text"),
    ];
    for document in documents {
        let text = document.to_string();
        let bytes = msgpack_of(&document);
        let from_json = Envelope::decode(&text, &config());
        let from_msgpack = MsgPackEnvelope::decode(&bytes, &config());
        match (&from_json, &from_msgpack) {
            (Ok(j), Ok(m)) => {
                assert_eq!(
                    (
                        &*j.version,
                        &*j.event,
                        j.correlation_id.as_deref(),
                        j.timestamp,
                        j.seq
                    ),
                    (m.version, m.event, m.correlation_id, m.timestamp, m.seq),
                    "{text}"
                );
                let json_payload: Option<serde_json::Value> = j.payload_as().unwrap();
                let msgpack_payload: Option<serde_json::Value> = m.payload_as().unwrap();
                assert_eq!(json_payload, msgpack_payload, "{text}");
            }
            (Err(j), Err(m)) => assert_eq!(j.code(), m.code(), "{text}: {j} / {m}"),
            _ => panic!("{text}: JSON {from_json:?}, MessagePack {from_msgpack:?}"),
        }
    }
}

/// `{"v":"1.0","e":"a", <extra>}` by hand, for what serde_json cannot make.
fn with_extra(extra_fields: u8, extra: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x80 | (2 + extra_fields)];
    bytes.extend_from_slice(b"\xa1v\xa31.0\xa1e\xa1a");
    bytes.extend_from_slice(extra);
    bytes
}

#[test]
fn a_repeated_field_is_refused() {
    let bytes = with_extra(1, b"\xa1e\xa1b");
    assert_eq!(
        MsgPackEnvelope::decode(&bytes, &config()),
        Err(EnvelopeError::DuplicateField { field: "e" })
    );
}

#[test]
fn malformed_bytes_are_refused_with_where() {
    let cases: [(&[u8], &str); 7] = [
        (b"", "truncated value"),
        (b"\x81\xa1v\xa3", "truncated value"),
        (b"\xc1", "the reserved marker 0xc1"),
        (b"\x81\xa1v\xa2\xff\xfe", "a string that is not UTF-8"),
        (b"\x81\x01\x02", "a key of the envelope map is not a string"),
        (b"\xc0\x00", "bytes after the envelope"),
        // An array claiming 4 billion elements in a few bytes: refused at once.
        (
            b"\x81\xa1p\xdd\xff\xff\xff\xff\x00",
            "more elements than bytes left",
        ),
    ];
    for (bytes, reason) in cases {
        match MsgPackEnvelope::decode(bytes, &config()) {
            Err(err @ EnvelopeError::InvalidMsgPack { reason: found, .. }) => {
                assert_eq!(found, reason, "{bytes:?}");
                assert_eq!(err.code(), 4014);
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

#[test]
fn limits_are_checked_before_decoding() {
    let config = Config {
        max_message_size: 64,
        max_envelope_depth: 4,
        ..Config::default()
    };
    // Too long: refused on the length alone, whatever the bytes.
    assert_eq!(
        MsgPackEnvelope::decode(&[0xc1; 65], &config),
        Err(EnvelopeError::TooLarge { len: 65, max: 64 })
    );
    // Depth: the envelope map is level 1; `p` holding [[[ ]]] reaches 4, [[[[ ]]]] 5.
    let ok = with_extra(1, b"\xa1p\x91\x91\x91\x01");
    assert!(MsgPackEnvelope::decode(&ok, &config).is_ok());
    let deep = with_extra(1, b"\xa1p\x91\x91\x91\x91\x01");
    assert_eq!(
        MsgPackEnvelope::decode(&deep, &config),
        Err(EnvelopeError::TooDeep { max: 4 })
    );
    // Deeper than the inline part of the walk's stack, within the default limit (32):
    // accepted, and every level closes.
    let mut nested = with_extra(2, b"\xa1p");
    nested.extend(std::iter::repeat_n(0x91, 25));
    nested.extend_from_slice(b"\x01\xa1c\xa2ok");
    let decoded = MsgPackEnvelope::decode(&nested, &Config::default()).unwrap();
    assert_eq!(decoded.correlation_id, Some("ok"));
    // A deep structure far past the limit costs one linear walk, no recursion.
    let mut abyss = with_extra(1, b"\xa1p");
    abyss.extend(std::iter::repeat_n(0x91, 100_000));
    abyss.push(0x01);
    let roomy = Config {
        max_message_size: 1 << 20,
        ..Config::default()
    };
    assert!(matches!(
        MsgPackEnvelope::decode(&abyss, &roomy),
        Err(EnvelopeError::TooDeep { .. })
    ));
}

/// A byte buffer that serializes as bytes (MessagePack `bin`) and reads them back.
#[derive(Debug, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Upload {
    name: String,
    data: Blob,
}

#[test]
fn byte_payloads_travel_as_bytes() {
    let upload = Upload {
        name: "pic".into(),
        data: Blob((0..=255).collect()),
    };
    let mut bytes = Vec::new();
    encode_msgpack_serialize(&OutgoingEnvelope::new("upload"), &upload, &mut bytes).unwrap();
    // 256 raw bytes behind a `bin 16` marker, not base64 and not an array of numbers.
    let raw: Vec<u8> = (0..=255).collect();
    let at = bytes
        .windows(3)
        .position(|w| w == [0xc5, 0x01, 0x00])
        .expect("a bin 16 header");
    assert_eq!(&bytes[at + 3..at + 3 + 256], &raw[..]);
    assert!(bytes.len() < 256 + 40, "{} bytes", bytes.len());
    let decoded = MsgPackEnvelope::decode(&bytes, &config()).unwrap();
    assert_eq!(decoded.payload_as::<Upload>().unwrap(), upload);
    // The wrong shape is InvalidPayload (4013), as with JSON.
    assert_eq!(decoded.payload_as::<u8>().unwrap_err().code(), 4013);
}

#[test]
fn negotiation_follows_the_servers_preference() {
    let offer = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let served = Codec::SERVED;
    assert_eq!(Codec::negotiate(&[], &served), (Codec::Json, None));
    assert_eq!(
        Codec::negotiate(&offer(&["chat.v2"]), &served),
        (Codec::Json, None)
    );
    // MessagePack whenever offered, whatever the client's order.
    for order in [
        [MSGPACK_PROTOCOL, JSON_PROTOCOL],
        [JSON_PROTOCOL, MSGPACK_PROTOCOL],
    ] {
        assert_eq!(
            Codec::negotiate(&offer(&order), &served),
            (Codec::MsgPack, Some(MSGPACK_PROTOCOL))
        );
    }
    assert_eq!(
        Codec::negotiate(&offer(&["x", JSON_PROTOCOL]), &served),
        (Codec::Json, Some(JSON_PROTOCOL))
    );
    // A server that supports JSON only never names MessagePack.
    assert_eq!(
        Codec::negotiate(&offer(&[MSGPACK_PROTOCOL]), &[Codec::Json]),
        (Codec::Json, None)
    );
    assert_eq!(Codec::from_protocol("tether.v1.msgpack"), Some(Codec::MsgPack));
}

#[test]
fn a_prefix_completed_per_recipient_equals_the_whole_envelope() {
    let env = OutgoingEnvelope::new("news")
        .with_payload(Payload::from_json(r#"{"headline":"hi","n":[1,2.5,-3]}"#).unwrap())
        .with_correlation_id("c1");
    for seq in [
        None,
        Some(1),
        Some(127),
        Some(128),
        Some(300),
        Some(70_000),
        Some(1 << 40),
    ] {
        let mut prefix = Vec::new();
        encode_msgpack_prefix(&env, seq.is_some(), &mut prefix).unwrap();
        let mut framed = prefix.clone();
        write_msgpack_seq_suffix(&mut framed, seq);
        assert_eq!(framed.len(), prefix.len() + msgpack_seq_suffix_len(seq));
        let mut whole = Vec::new();
        encode_msgpack(&OutgoingEnvelope { seq, ..env }, &mut whole).unwrap();
        assert_eq!(framed, whole);
        // The same prefix made from the JSON prefix of the envelope.
        let mut json = Vec::new();
        env.encode_prefix(&mut json);
        let mut converted = Vec::new();
        json_prefix_to_msgpack(&json, seq.is_some(), &mut converted).unwrap();
        assert_eq!(converted, prefix);
    }
    assert!(json_prefix_to_msgpack(b"{\"v\":\"1.0\",\"e\":", false, &mut Vec::new()).is_err());
}

#[test]
fn transcoding_keeps_values_and_turns_bytes_into_numbers_for_json() {
    let json = r#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":{}}}"#;
    let mut packed = Vec::new();
    json_to_msgpack(json.as_bytes(), &mut packed).unwrap();
    let mut back = Vec::new();
    msgpack_to_json(&packed, &mut back).unwrap();
    assert_eq!(std::str::from_utf8(&back).unwrap(), json);
    // `bin` has no JSON form of its own: serde_json's, an array of numbers.
    let mut bin = Vec::new();
    rmp::encode::write_bin(&mut bin, &[0, 7, 255]).unwrap();
    let mut text = Vec::new();
    msgpack_to_json(&bin, &mut text).unwrap();
    assert_eq!(text, b"[0,7,255]");
    assert!(msgpack_to_json(&[0xc1], &mut Vec::new()).is_err());

    // A whole envelope, for the client engine.
    let mut bytes = Vec::new();
    let env = OutgoingEnvelope::new("e")
        .with_payload(Payload::from_json(r#"{"k":"v"}"#).unwrap())
        .with_seq(9);
    encode_msgpack(&env, &mut bytes).unwrap();
    let decoded = MsgPackEnvelope::decode(&bytes, &config()).unwrap();
    assert_eq!(
        decoded.to_json().unwrap(),
        r#"{"v":"1.0","e":"e","p":{"k":"v"},"s":9}"#
    );
}

#[test]
fn invalid_trusted_json_is_an_encoding_error_not_a_bad_envelope() {
    let env = OutgoingEnvelope::new("e").with_payload(Payload::Trusted("{nope"));
    assert!(encode_msgpack(&env, &mut Vec::new()).is_err());
}

/// A payload given in both codecs: its MessagePack form goes into binary envelopes as
/// it is (bytes stay `bin`), its JSON form into JSON ones; the prefix and suffix meet.
#[test]
fn a_payload_in_both_codecs_keeps_its_bytes_in_messagepack() {
    #[derive(Serialize)]
    struct Blob {
        name: &'static str,
        #[serde(serialize_with = "as_bytes")]
        data: Vec<u8>,
    }
    fn as_bytes<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }
    let blob = Blob {
        name: "pic",
        data: vec![0, 1, 255],
    };
    let json = serde_json::to_string(&blob).unwrap();
    let msgpack = rmp_serde::to_vec_named(&blob).unwrap();
    let env = OutgoingEnvelope::new("upload").with_payload(Payload::Both {
        json: &json,
        msgpack: &msgpack,
    });
    assert_eq!(env.payload.as_json(), Some(json.as_str()));
    let mut bytes = Vec::new();
    encode_msgpack_prefix(&env, true, &mut bytes).unwrap();
    write_msgpack_seq_suffix(&mut bytes, Some(9));
    let decoded = MsgPackEnvelope::decode(&bytes, &config()).unwrap();
    // `bin`, not an array: 0xc4 (bin 8), length 3, the bytes.
    let p = decoded.payload.unwrap();
    assert!(p.windows(5).any(|w| w == [0xc4, 3, 0, 1, 255]), "{p:x?}");
    assert_eq!(decoded.seq, Some(9));
    // The JSON envelope carries the JSON form, bytes as numbers.
    let mut text = Vec::new();
    env.encode_prefix(&mut text);
    assert!(String::from_utf8(text).unwrap().contains(r#""data":[0,1,255]"#));
    // Without the MessagePack form, the JSON is transcoded: an array.
    let plain = OutgoingEnvelope::new("upload").with_payload(Payload::Trusted(&json));
    let mut transcoded = Vec::new();
    encode_msgpack_prefix(&plain, false, &mut transcoded).unwrap();
    assert!(!transcoded.windows(2).any(|w| w == [0xc4, 3]));
}
