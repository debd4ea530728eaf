//! The envelope codec under arbitrary input: accepted envelopes must re-encode to the
//! same fields.

use crate::envelope::{Envelope, WIRE_VERSION};
use crate::Config;

/// Decodes `data` as an envelope (when it is UTF-8) under the default limits; when that
/// succeeds, re-encodes it, decodes the encoding and checks that every field survived.
/// Refusals are fine; a panic or a changed field is a bug.
#[allow(unreachable_pub)] // `pub` for the fuzz target; unreachable when a test includes this file as a module
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = Config::default();
    let Ok(first) = Envelope::decode(text, &config) else {
        return;
    };

    let mut encoded = Vec::new();
    first.as_outgoing().encode_into(&mut encoded);
    let encoded = std::str::from_utf8(&encoded).expect("the encoder writes UTF-8");

    // Re-encoding writes `"v":"1.0"` where the input may have had `"v":"1"`, so an
    // input at the size limit may come back two bytes over it. Nothing else grows.
    let relaxed = Config {
        max_message_size: config.max_message_size + 2,
        ..Config::default()
    };
    let second = match Envelope::decode(encoded, &relaxed) {
        Ok(second) => second,
        Err(err) => panic!("re-encoded envelope refused: {err}\ninput: {text:?}\nencoded: {encoded:?}"),
    };

    assert_eq!(second.version, WIRE_VERSION);
    assert_eq!(second.event, first.event);
    assert_eq!(second.payload.map(|p| p.get()), first.payload.map(|p| p.get()));
    assert_eq!(second.correlation_id, first.correlation_id);
    assert_eq!(second.timestamp, first.timestamp);
    assert_eq!(second.seq, first.seq);
}
