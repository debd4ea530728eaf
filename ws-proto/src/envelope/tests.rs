//! Tests of the envelope codec: every refusal with its figures, borrowing, raw
//! payloads, the depth pre-scan, and encode/decode round trips.

use std::borrow::Cow;

use bytes::BytesMut;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::*;

fn decode(text: &str) -> Result<Envelope<'_>, EnvelopeError> {
    Envelope::decode(text, &Config::default())
}

fn err(text: &str) -> EnvelopeError {
    decode(text).expect_err(text)
}

fn encode(out: &OutgoingEnvelope<'_>) -> String {
    String::from_utf8(out.to_vec()).expect("encoder writes UTF-8")
}

// ---- decoding: success ----

#[test]
fn decodes_every_field() {
    let text = r#"{"v":"1.0","e":"chat.message","p":{"text":"hi"},"c":"abc","t":1703123456789,"s":7}"#;
    let env = decode(text).unwrap();
    assert_eq!(env.version, "1.0");
    assert_eq!(env.event, "chat.message");
    assert_eq!(env.payload.map(RawValue::get), Some(r#"{"text":"hi"}"#));
    assert_eq!(env.correlation_id.as_deref(), Some("abc"));
    assert_eq!(env.timestamp, Some(1_703_123_456_789));
    assert_eq!(env.seq, Some(7));
}

#[test]
fn decodes_minimal_envelope() {
    let env = decode(r#"{"v":"1","e":"x"}"#).unwrap();
    assert_eq!(env.event, "x");
    assert_eq!(env.payload.map(RawValue::get), None);
    assert_eq!(env.correlation_id, None);
    assert_eq!(env.timestamp, None);
    assert_eq!(env.seq, None);
}

#[test]
fn field_order_and_whitespace_do_not_matter() {
    let env = decode(" {\n \"s\" : 3 ,\"e\":\"a.b\",\t\"v\":\"1.0\" } \n").unwrap();
    assert_eq!((env.event.as_ref(), env.seq), ("a.b", Some(3)));
}

#[test]
fn strings_without_escapes_are_borrowed() {
    let env = decode(r#"{"v":"1.0","e":"chat.message","c":"req-1"}"#).unwrap();
    assert!(matches!(env.version, Cow::Borrowed("1.0")));
    assert!(matches!(env.event, Cow::Borrowed("chat.message")));
    assert!(matches!(env.correlation_id, Some(Cow::Borrowed("req-1"))));
}

#[test]
fn escapes_inside_strings_are_decoded() {
    let env = decode(r#"{"v":"1.0","e":"chat\/msg\u0021","c":"a\"b\\c\n\u00e9\ud83d\ude00"}"#).unwrap();
    assert!(matches!(env.event, Cow::Owned(_)));
    assert_eq!(env.event, "chat/msg!");
    assert_eq!(env.correlation_id.as_deref(), Some("a\"b\\c\né😀"));
}

#[test]
fn escaped_keys_name_the_same_fields() {
    let env = decode(r#"{"\u0076":"1.0","\u0065":"x"}"#).unwrap();
    assert_eq!(env.event, "x");
}

#[test]
fn payload_raw_text_is_preserved_byte_for_byte() {
    let payload = "{ \"b\" : [1, 2.50, -0.0, 1e3, \"\\u00e9\"],\n  \"a\":{} }";
    let text = format!(r#"{{"v":"1.0","e":"x","p":{payload}}}"#);
    let env = decode(&text).unwrap();
    assert_eq!(env.payload.unwrap().get(), payload);
}

#[test]
fn scalar_payloads_are_kept() {
    for p in ["0", "\"text\"", "true", "[]", "{}", "-1.5e-7"] {
        let text = format!(r#"{{"v":"1.0","e":"x","p":{p}}}"#);
        assert_eq!(decode(&text).unwrap().payload.map(RawValue::get), Some(p), "{p}");
    }
}

#[test]
fn null_payload_and_optional_fields_are_absent() {
    let env = decode(r#"{"v":"1.0","e":"x","p":null,"c":null,"t":null,"s":null}"#).unwrap();
    assert_eq!(env.payload.map(RawValue::get), None);
    assert_eq!((env.correlation_id, env.timestamp, env.seq), (None, None, None));
}

#[test]
fn unknown_fields_are_ignored() {
    let text = r#"{"x":[[{"y":null}]],"v":"1.0","future":{"a":1},"e":"x","zz":"\u0000"}"#;
    let env = decode(text).unwrap();
    assert_eq!(env.event, "x");
}

#[test]
fn duplicate_unknown_fields_are_ignored() {
    assert!(decode(r#"{"v":"1.0","e":"x","k":1,"k":2}"#).is_ok());
}

#[test]
fn accepted_versions() {
    for v in ["1", "1.0", "1.1", "1.10", "1.999"] {
        let text = format!(r#"{{"v":"{v}","e":"x"}}"#);
        assert!(decode(&text).is_ok(), "{v}");
    }
}

#[test]
fn limits_are_inclusive() {
    let config = Config::default();
    let name = "n".repeat(config.max_event_name_len);
    let id = "é".repeat(config.max_correlation_id_len / 2);
    let text = format!(r#"{{"v":"1.0","e":"{name}","c":"{id}"}}"#);
    assert!(decode(&text).is_ok());
}

#[test]
fn timestamp_and_seq_extremes() {
    let env = decode(r#"{"v":"1.0","e":"x","t":0,"s":18446744073709551615}"#).unwrap();
    assert_eq!((env.timestamp, env.seq), (Some(0), Some(u64::MAX)));
}

// ---- decoding: every refusal ----

#[test]
fn too_large_is_checked_first() {
    let config = Config {
        max_message_size: 16,
        ..Config::default()
    };
    let text = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[";
    assert_eq!(
        Envelope::decode(text, &config),
        Err(EnvelopeError::TooLarge {
            len: text.len(),
            max: 16
        })
    );
    let ok = r#"{"v":"1","e":"x"}"#;
    assert_eq!(ok.len(), 17);
    let config = Config {
        max_message_size: 17,
        ..Config::default()
    };
    assert!(Envelope::decode(ok, &config).is_ok());
}

#[test]
fn depth_bomb_is_refused() {
    let text = "[".repeat(100_000);
    assert_eq!(err(&text), EnvelopeError::TooDeep { max: 32 });
    let text = format!(r#"{{"v":"1.0","e":"x","p":{}"#, "{\"a\":".repeat(100_000));
    assert_eq!(err(&text), EnvelopeError::TooDeep { max: 32 });
}

#[test]
fn depth_limit_counts_the_envelope() {
    let config = Config {
        max_envelope_depth: 3,
        ..Config::default()
    };
    let ok = r#"{"v":"1.0","e":"x","p":{"a":[1]}}"#;
    assert!(Envelope::decode(ok, &config).is_ok());
    let deep = r#"{"v":"1.0","e":"x","p":{"a":[[1]]}}"#;
    assert_eq!(
        Envelope::decode(deep, &config),
        Err(EnvelopeError::TooDeep { max: 3 })
    );
    // Unknown fields count too: they are part of the text.
    let deep = r#"{"v":"1.0","e":"x","z":[[[]]]}"#;
    assert_eq!(
        Envelope::decode(deep, &config),
        Err(EnvelopeError::TooDeep { max: 3 })
    );
}

#[test]
fn brackets_in_strings_are_not_depth() {
    let config = Config {
        max_envelope_depth: 1,
        ..Config::default()
    };
    let text = format!(
        r#"{{"v":"1.0","e":"x","c":"{}","p":"\"]]{}"}}"#,
        "[".repeat(100),
        "{".repeat(50)
    );
    let env = Envelope::decode(&text, &config).unwrap();
    assert_eq!(env.correlation_id.as_deref(), Some("[".repeat(100).as_str()));
}

#[test]
fn invalid_json_carries_position_and_reason() {
    match err("{\"v\":\"1.0\",\n\"e\":x}") {
        EnvelopeError::InvalidJson { line, column, reason } => {
            assert_eq!((line, column), (2, 5));
            assert!(reason.contains("expected value"), "{reason}");
            assert!(!reason.contains("at line"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_json_cases() {
    for text in [
        "",
        "   ",
        "{",
        r#"{"v":"1.0","e":"x""#,
        r#"{"v":"1.0","e":"x"} trailing"#,
        r#"{"v":"1.0","e":"x",}"#,
        r#"{"v":"1.0","e":"x","p":}"#,
        r#"{"v":"1.0","e":"x","p":[1,]}"#,
        r#"{"v":"1.0","e":"x","p":01}"#,
        r#"{"v":"1.0","e":"x","p":"\q"}"#,
        "{\"v\":\"1.0\",\"e\":\"x\",\"c\":\"tab\there\"}",
        "hello",
        "[1,2",
        "]",
    ] {
        assert!(
            matches!(err(text), EnvelopeError::InvalidJson { .. }),
            "{text:?}: {:?}",
            err(text)
        );
    }
}

#[test]
fn lone_surrogate_in_a_field_is_invalid_json_at_its_place() {
    match err(r#"{"v":"1.0","e":"x","c":"\ud800"}"#) {
        EnvelopeError::InvalidJson { line, column, .. } => {
            assert_eq!(line, 1);
            assert!((24..=31).contains(&column), "column {column}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_an_object() {
    for text in [
        "[]",
        "[1,[2],{\"v\":\"1.0\"}]",
        "1",
        "-2.5",
        "true",
        "null",
        r#""{}""#,
        r#""a\nb""#,
    ] {
        assert_eq!(err(text), EnvelopeError::NotAnObject, "{text}");
    }
}

#[test]
fn missing_fields() {
    assert_eq!(err(r#"{"e":"x"}"#), EnvelopeError::MissingField { field: "v" });
    assert_eq!(err(r#"{"v":"1.0"}"#), EnvelopeError::MissingField { field: "e" });
    assert_eq!(err("{}"), EnvelopeError::MissingField { field: "v" });
}

#[test]
fn wrong_types() {
    let wrong = |field, expected, found| EnvelopeError::WrongType {
        field,
        expected,
        found,
    };
    let u64_ = "an unsigned 64-bit integer";
    for (text, expect) in [
        (r#"{"v":1,"e":"x"}"#, wrong("v", "a string", "a number")),
        (r#"{"v":null,"e":"x"}"#, wrong("v", "a string", "null")),
        (r#"{"v":"1.0","e":["x"]}"#, wrong("e", "a string", "an array")),
        (r#"{"v":"1.0","e":{"x":1}}"#, wrong("e", "a string", "an object")),
        (r#"{"v":"1.0","e":true}"#, wrong("e", "a string", "a boolean")),
        (r#"{"v":"1.0","e":"x","c":5}"#, wrong("c", "a string", "a number")),
        (r#"{"v":"1.0","e":"x","t":"5"}"#, wrong("t", u64_, "a string")),
        (
            r#"{"v":"1.0","e":"x","t":-1}"#,
            wrong("t", u64_, "a negative number"),
        ),
        (
            r#"{"v":"1.0","e":"x","t":1.5}"#,
            wrong("t", u64_, "a number with a fraction or exponent"),
        ),
        (
            r#"{"v":"1.0","e":"x","t":1e3}"#,
            wrong("t", u64_, "a number with a fraction or exponent"),
        ),
        (
            r#"{"v":"1.0","e":"x","s":18446744073709551616}"#,
            wrong("s", u64_, "a number above 18446744073709551615"),
        ),
        (r#"{"v":"1.0","e":"x","s":false}"#, wrong("s", u64_, "a boolean")),
    ] {
        assert_eq!(err(text), expect, "{text}");
    }
}

#[test]
fn duplicate_fields() {
    assert_eq!(
        err(r#"{"v":"1.0","e":"x","e":"y"}"#),
        EnvelopeError::DuplicateField { field: "e" }
    );
    assert_eq!(
        err(r#"{"v":"1.0","p":1,"e":"x","p":null}"#),
        EnvelopeError::DuplicateField { field: "p" }
    );
    // An escaped key is the same key.
    assert_eq!(
        err(r#"{"v":"1.0","e":"x","\u0073":1,"s":2}"#),
        EnvelopeError::DuplicateField { field: "s" }
    );
}

#[test]
fn unsupported_versions() {
    for v in ["2", "2.0", "0.9", "1.", "1.x", "1.0.0", "10", "", " 1.0", "v1"] {
        let text = format!(r#"{{"v":"{v}","e":"x"}}"#);
        assert_eq!(
            err(&text),
            EnvelopeError::UnsupportedVersion { found: v.to_owned() },
            "{v}"
        );
    }
}

#[test]
fn unsupported_version_is_cut_when_long() {
    let v = "é".repeat(40);
    let text = format!(r#"{{"v":"{v}","e":"x"}}"#);
    assert_eq!(
        err(&text),
        EnvelopeError::UnsupportedVersion {
            found: format!("{}…", "é".repeat(16))
        }
    );
}

#[test]
fn version_is_checked_before_event() {
    assert!(matches!(
        err(r#"{"v":"2","e":""}"#),
        EnvelopeError::UnsupportedVersion { .. }
    ));
}

#[test]
fn event_name_rules() {
    assert_eq!(err(r#"{"v":"1.0","e":""}"#), EnvelopeError::EmptyEventName);
    assert_eq!(
        err(r#"{"v":"1.0","e":"chat message"}"#),
        EnvelopeError::InvalidEventName { at: 4, found: ' ' }
    );
    assert_eq!(
        err(r#"{"v":"1.0","e":"a\tb"}"#),
        EnvelopeError::InvalidEventName { at: 1, found: '\t' }
    );
    assert_eq!(
        err(r#"{"v":"1.0","e":"ab\u007f"}"#),
        EnvelopeError::InvalidEventName {
            at: 2,
            found: '\u{7f}'
        }
    );
    assert_eq!(
        err(r#"{"v":"1.0","e":"caf\u00e9"}"#),
        EnvelopeError::InvalidEventName { at: 3, found: 'é' }
    );
    let name = "n".repeat(129);
    let text = format!(r#"{{"v":"1.0","e":"{name}"}}"#);
    assert_eq!(err(&text), EnvelopeError::EventNameTooLong { len: 129, max: 128 });
}

#[test]
fn event_name_limit_follows_config() {
    let config = Config {
        max_event_name_len: 4,
        ..Config::default()
    };
    assert!(Envelope::decode(r#"{"v":"1.0","e":"abcd"}"#, &config).is_ok());
    assert_eq!(
        Envelope::decode(r#"{"v":"1.0","e":"abcde"}"#, &config),
        Err(EnvelopeError::EventNameTooLong { len: 5, max: 4 })
    );
}

#[test]
fn correlation_id_too_long_counts_unescaped_bytes() {
    let config = Config {
        max_correlation_id_len: 4,
        ..Config::default()
    };
    // Six characters of JSON text, four bytes once unescaped.
    assert!(Envelope::decode(r#"{"v":"1.0","e":"x","c":"\u0041bcd"}"#, &config).is_ok());
    // "é" is two bytes.
    assert_eq!(
        Envelope::decode(r#"{"v":"1.0","e":"x","c":"abcé"}"#, &config),
        Err(EnvelopeError::CorrelationIdTooLong { len: 5, max: 4 })
    );
}

#[test]
fn zero_seq_is_refused() {
    assert_eq!(err(r#"{"v":"1.0","e":"x","s":0}"#), EnvelopeError::ZeroSeq);
}

#[test]
fn syntax_errors_win_over_field_errors() {
    // The whole text is parsed before fields are judged.
    assert!(matches!(
        err(r#"{"v":2,"e":"x",]"#),
        EnvelopeError::InvalidJson { .. }
    ));
}

#[test]
fn codes_are_stable_and_in_range() {
    let errors = [
        (EnvelopeError::TooLarge { len: 2, max: 1 }, 4000),
        (EnvelopeError::TooDeep { max: 1 }, 4001),
        (
            EnvelopeError::InvalidJson {
                line: 1,
                column: 1,
                reason: String::new(),
            },
            4002,
        ),
        (EnvelopeError::NotAnObject, 4003),
        (EnvelopeError::MissingField { field: "v" }, 4004),
        (
            EnvelopeError::WrongType {
                field: "v",
                expected: "a string",
                found: "null",
            },
            4005,
        ),
        (EnvelopeError::DuplicateField { field: "e" }, 4006),
        (EnvelopeError::UnsupportedVersion { found: "2".into() }, 4007),
        (EnvelopeError::EmptyEventName, 4008),
        (EnvelopeError::InvalidEventName { at: 0, found: ' ' }, 4009),
        (EnvelopeError::EventNameTooLong { len: 2, max: 1 }, 4010),
        (EnvelopeError::CorrelationIdTooLong { len: 2, max: 1 }, 4011),
        (EnvelopeError::ZeroSeq, 4012),
        (
            EnvelopeError::InvalidPayload {
                reason: String::new(),
            },
            4013,
        ),
    ];
    for (error, code) in errors {
        assert_eq!(error.code(), code, "{error:?}");
        assert!((EnvelopeError::CODE_RANGE_START..=EnvelopeError::CODE_RANGE_END).contains(&code));
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn display_names_the_fault_and_figures() {
    assert_eq!(
        EnvelopeError::TooLarge { len: 2000, max: 1024 }.to_string(),
        "envelope of 2000 bytes exceeds the limit of 1024 bytes"
    );
    assert_eq!(
        err(r#"{"v":"1.0","e":"x","t":-1}"#).to_string(),
        "envelope field \"t\" must be an unsigned 64-bit integer, found a negative number"
    );
    assert_eq!(
        err(r#"{"v":"1.0","e":"a b"}"#).to_string(),
        "event name \"e\" has the character ' ' at byte 1; only printable ASCII without spaces is allowed"
    );
    assert!(err("{")
        .to_string()
        .starts_with("envelope is not valid JSON: EOF while parsing"));
}

#[test]
fn correlation_id_of_a_refused_envelope() {
    let config = Config::default();
    let of = |text| Envelope::correlation_id_of(text, &config);
    assert_eq!(
        of(r#"{"v":"9","e":"x","c":"req-1"}"#),
        Some(Cow::Borrowed("req-1"))
    );
    assert_eq!(of(r#"{"c":"req-\u0032","e":" "}"#).as_deref(), Some("req-2"));
    assert_eq!(of(r#"{"v":"1.0","e":"x"}"#), None);
    assert_eq!(of(r#"{"c":5}"#), None);
    assert_eq!(of(r#"{"c":"a","c":"b"}"#), None);
    assert_eq!(of(r#"{"c":"a",]"#), None);
    assert_eq!(of(&format!(r#"{{"c":"{}"}}"#, "x".repeat(129))), None);
}

// ---- typed payloads and owned envelopes ----

#[derive(Debug, PartialEq, Deserialize, Serialize)]
struct Chat<'a> {
    room: &'a str,
    text: String,
}

#[test]
fn payload_as_typed_and_borrowed() {
    let env = decode(r#"{"v":"1.0","e":"x","p":{"room":"lobby","text":"hi\n"}}"#).unwrap();
    let chat: Chat<'_> = env.payload_as().unwrap();
    assert_eq!(
        chat,
        Chat {
            room: "lobby",
            text: "hi\n".into()
        }
    );
}

#[test]
fn payload_as_absent_is_null() {
    let env = decode(r#"{"v":"1.0","e":"x"}"#).unwrap();
    assert_eq!(env.payload_as::<Option<u32>>(), Ok(None));
    assert_eq!(env.payload_as::<()>(), Ok(()));
    assert!(matches!(
        env.payload_as::<u32>(),
        Err(EnvelopeError::InvalidPayload { .. })
    ));
}

#[test]
fn payload_as_mismatch_is_invalid_payload() {
    let env = decode(r#"{"v":"1.0","e":"x","p":{"room":5}}"#).unwrap();
    let error = env.payload_as::<Chat<'_>>().unwrap_err();
    assert_eq!(error.code(), 4013);
    assert!(error.to_string().contains("invalid type"), "{error}");
}

#[test]
fn owned_envelope_outlives_the_text() {
    let owned = {
        let text = String::from(r#"{"v":"1.2","e":"a\/b","p":[1, 2],"c":"k","t":9,"s":4}"#);
        decode(&text).unwrap().into_owned()
    };
    assert_eq!(&*owned.version, "1.2");
    assert_eq!(&*owned.event, "a/b");
    assert_eq!(owned.payload.as_deref().map(RawValue::get), Some("[1, 2]"));
    assert_eq!(owned.payload_as::<Vec<u8>>(), Ok(vec![1, 2]));
    let again = OwnedEnvelope::decode(
        &String::from_utf8(owned.as_outgoing().to_vec()).unwrap(),
        &Config::default(),
    )
    .unwrap();
    assert_eq!(again.as_envelope().event, owned.as_envelope().event);
    assert_eq!(again.as_envelope().seq, Some(4));
}

// ---- encoding ----

#[test]
fn encodes_fields_in_order_with_s_last() {
    let p = RawValue::from_string("{\"a\":1}".into()).unwrap();
    let out = OutgoingEnvelope::new("chat.message")
        .with_payload(&*p)
        .with_correlation_id("abc")
        .with_timestamp(1_703_123_456_789)
        .with_seq(7);
    assert_eq!(
        encode(&out),
        r#"{"v":"1.0","e":"chat.message","p":{"a":1},"c":"abc","t":1703123456789,"s":7}"#
    );
}

#[test]
fn encodes_minimal_envelope() {
    assert_eq!(
        encode(&OutgoingEnvelope::new("sys.ping")),
        r#"{"v":"1.0","e":"sys.ping"}"#
    );
}

#[test]
fn prefix_and_suffix_make_the_whole() {
    let out = OutgoingEnvelope::new("room.msg")
        .with_payload(Payload::Trusted("[true]"))
        .with_correlation_id("c")
        .with_timestamp(5)
        .with_seq(42);
    let mut prefix = Vec::new();
    out.encode_prefix(&mut prefix);
    assert_eq!(prefix, br#"{"v":"1.0","e":"room.msg","p":[true],"c":"c","t":5"#);

    let mut whole = prefix.clone();
    write_seq_suffix(&mut whole, Some(42));
    assert_eq!(whole, out.to_vec());

    let mut no_seq = prefix;
    write_seq_suffix(&mut no_seq, None);
    assert_eq!(no_seq, OutgoingEnvelope { seq: None, ..out }.to_vec());
}

#[test]
fn broadcast_prefix_once_then_seq_per_recipient() {
    let out = OutgoingEnvelope::new("room.msg").with_payload(Payload::Trusted("\"hi\""));
    let mut prefix = BytesMut::new();
    out.encode_prefix(&mut prefix);
    let prefix = prefix.freeze();
    for seq in [1, 2, u64::MAX] {
        let mut frame = BytesMut::from(&prefix[..]);
        write_seq_suffix(&mut frame, Some(seq));
        let env = decode(std::str::from_utf8(&frame).unwrap()).unwrap();
        assert_eq!(env.seq, Some(seq));
        assert_eq!(env.payload.map(RawValue::get), Some("\"hi\""));
    }
}

#[test]
fn vec_and_bytes_mut_encode_the_same() {
    let out = OutgoingEnvelope::new("a\"b")
        .with_correlation_id("\u{1}\\")
        .with_seq(3);
    let mut bytes = BytesMut::from(&b"prefix:"[..]);
    out.encode_into(&mut bytes);
    let mut vec = b"prefix:".to_vec();
    out.encode_into(&mut vec);
    assert_eq!(&bytes[..], &vec[..]);
    assert!(vec.starts_with(b"prefix:{"), "appends to what is there");
}

#[test]
fn strings_are_escaped() {
    let out = OutgoingEnvelope::new("q\"\\\n").with_correlation_id("\u{0}\u{1f}é😀</script>");
    let text = encode(&out);
    assert_eq!(
        text,
        r#"{"v":"1.0","e":"q\"\\\n","c":"\u0000\u001fé😀</script>"}"#
    );
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["e"], "q\"\\\n");
    assert_eq!(back["c"], "\u{0}\u{1f}é😀</script>");
}

#[test]
fn encode_serialize_writes_typed_payload() {
    let out = OutgoingEnvelope::new("chat")
        .with_payload(Payload::Trusted("ignored"))
        .with_seq(2);
    let mut buf = Vec::new();
    out.encode_serialize(
        &Chat {
            room: "r",
            text: "t".into(),
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        buf,
        br#"{"v":"1.0","e":"chat","p":{"room":"r","text":"t"},"s":2}"#
    );
    let env = decode(std::str::from_utf8(&buf).unwrap()).unwrap();
    assert_eq!(
        env.payload_as::<Chat<'_>>().unwrap(),
        Chat {
            room: "r",
            text: "t".into()
        }
    );
}

#[test]
fn encode_serialize_failure_leaves_buffer_as_it_was() {
    use std::collections::BTreeMap;
    // serde_json refuses maps whose keys are not strings or numbers.
    let mut bad = BTreeMap::new();
    bad.insert(vec![1u8], 1);
    let out = OutgoingEnvelope::new("x").with_seq(1);
    let mut vec = b"keep".to_vec();
    assert!(out.encode_serialize(&bad, &mut vec).is_err());
    assert_eq!(vec, b"keep");
    let mut bytes = BytesMut::from(&b"keep"[..]);
    assert!(out.encode_prefix_serialize(&bad, &mut bytes).is_err());
    assert_eq!(&bytes[..], b"keep");
}

#[test]
fn payload_from_json_validates() {
    assert!(matches!(
        Payload::from_json(" [1, {\"a\":null}] "),
        Ok(Payload::Raw(_))
    ));
    assert!(Payload::from_json("[1,").is_err());
    assert!(Payload::from_json("").is_err());
    assert!(Payload::from_json("1 2").is_err());
    assert_eq!(Payload::None.as_json(), None);
}

#[test]
fn size_hint_is_exact_without_escapes_or_numbers() {
    let out = OutgoingEnvelope::new("chat.message")
        .with_payload(Payload::Trusted("{}"))
        .with_correlation_id("abc");
    assert_eq!(out.size_hint(), out.to_vec().len());
}

#[test]
fn decoded_envelope_echoes_through_as_outgoing() {
    let text = r#"{"v":"1.3","e":"echo","p":{ "k" : [1] },"c":"id","t":1,"s":2,"zz":0}"#;
    let env = decode(text).unwrap();
    assert_eq!(
        encode(&env.as_outgoing()),
        r#"{"v":"1.0","e":"echo","p":{ "k" : [1] },"c":"id","t":1,"s":2}"#
    );
}

#[test]
fn validate_event_name_is_public() {
    let config = Config::default();
    assert_eq!(validate_event_name("chat.message", &config), Ok(()));
    assert_eq!(
        validate_event_name("", &config),
        Err(EnvelopeError::EmptyEventName)
    );
    assert!(is_supported_version(WIRE_VERSION));
}

// ---- property: decode(encode(x)) == x ----

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(
        event in "[!-~]{1,128}",
        correlation_id in prop::option::of("(?s).{0,40}"),
        payload in prop::option::of(json_value()),
        timestamp in any::<Option<u64>>(),
        seq in prop::option::of(1..=u64::MAX),
        typed in any::<bool>(),
    ) {
        let json = payload.as_ref().map(|p| p.to_string());
        let out = OutgoingEnvelope {
            event: &event,
            payload: json.as_deref().map_or(Payload::None, Payload::Trusted),
            correlation_id: correlation_id.as_deref(),
            timestamp,
            seq,
        };
        let mut buf = Vec::new();
        match (&payload, typed) {
            (Some(p), true) => out.encode_serialize(p, &mut buf).unwrap(),
            _ => out.encode_into(&mut buf),
        }
        // The split encoding is the same text.
        let mut split = Vec::new();
        match (&payload, typed) {
            (Some(p), true) => out.encode_prefix_serialize(p, &mut split).unwrap(),
            _ => out.encode_prefix(&mut split),
        }
        write_seq_suffix(&mut split, seq);
        prop_assert_eq!(&split, &buf);

        let text = std::str::from_utf8(&buf).unwrap();
        let env = Envelope::decode(text, &Config::default()).unwrap();
        prop_assert_eq!(env.version.as_ref(), WIRE_VERSION);
        prop_assert_eq!(env.event.as_ref(), event.as_str());
        prop_assert_eq!(env.correlation_id.as_deref(), correlation_id.as_deref());
        prop_assert_eq!(env.timestamp, timestamp);
        prop_assert_eq!(env.seq, seq);
        // A null payload decodes as absent; any other comes back as the same text.
        let expected = json.as_deref().filter(|p| *p != "null");
        prop_assert_eq!(env.payload.map(RawValue::get), expected);
        // And the decoded envelope re-encodes to the same bytes.
        let again = env.as_outgoing().to_vec();
        if expected.is_some() || payload.is_none() {
            prop_assert_eq!(again, buf);
        }
    }

    #[test]
    fn decode_never_panics(text in "(?s).{0,200}") {
        let _ = Envelope::decode(&text, &Config::default());
    }

    #[test]
    fn decode_never_panics_on_jsonish(text in r#"[{}\[\]":,\\ a-z0-9.-]{0,200}"#) {
        let _ = Envelope::decode(&text, &Config::default());
    }
}
