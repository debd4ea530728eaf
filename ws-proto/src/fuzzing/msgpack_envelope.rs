//! The binary envelope decoder under arbitrary bytes: accepted envelopes must
//! re-encode to the same fields, the payload byte for byte.

use crate::envelope::msgpack::{write_head_fields, write_msgpack_framed, write_str, write_tail_fields};
use crate::envelope::{MsgPackEnvelope, OutgoingEnvelope, WIRE_VERSION};
use crate::Config;

/// Decodes `data` as a binary envelope under the default limits; when that succeeds,
/// re-encodes it (the payload's bytes as they came), decodes the encoding and checks
/// that every field survived, and reads the payload as a JSON value (which may be
/// refused, never panic). Refusals are fine; a panic or a changed field is a bug.
#[allow(unreachable_pub)] // `pub` for the fuzz target
pub fn msgpack_envelope(data: &[u8]) {
    let config = Config::default();
    let Ok(first) = MsgPackEnvelope::decode(data, &config) else {
        return;
    };
    let _ = first.payload_as::<serde_json::Value>();

    let mut outgoing = OutgoingEnvelope::new(first.event);
    if let Some(c) = first.correlation_id {
        outgoing = outgoing.with_correlation_id(c);
    }
    if let Some(t) = first.timestamp {
        outgoing = outgoing.with_timestamp(t);
    }
    let mut body = Vec::new();
    let mut fields = write_head_fields(&outgoing, &mut body);
    if let Some(payload) = first.payload {
        write_str(&mut body, "p");
        body.extend_from_slice(payload);
        fields += 1;
    }
    fields += write_tail_fields(&outgoing, &mut body);
    let mut encoded = Vec::new();
    write_msgpack_framed(&body, fields, first.seq, &mut encoded);

    // Re-encoding writes "1.0" where the input may have had "1", and may use a wider
    // integer or map header than the input did: allow for that growth.
    let relaxed = Config {
        max_message_size: config.max_message_size + 16,
        ..Config::default()
    };
    let second = match MsgPackEnvelope::decode(&encoded, &relaxed) {
        Ok(second) => second,
        Err(err) => panic!("re-encoded envelope refused: {err}\ninput: {data:?}\nencoded: {encoded:?}"),
    };
    assert_eq!(second.version, WIRE_VERSION);
    assert_eq!(second.event, first.event);
    assert_eq!(second.payload, first.payload);
    assert_eq!(second.correlation_id, first.correlation_id);
    assert_eq!(second.timestamp, first.timestamp);
    assert_eq!(second.seq, first.seq);
}
