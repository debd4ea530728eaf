//! Raw TCP's length-prefixed framing under arbitrary bytes and splits: the first byte
//! picks the size of the pieces and whether a preamble comes first; the rest is the
//! input. Whatever the bytes: no panic, the same outcome whole and split (preamble
//! and frames), nothing over the size limit handed out, a failure reported once and
//! last, and every message decoded re-encodes to the same message.

use crate::prefixed::{PreambleError, PreambleReader, PrefixedConnection};
use crate::{Config, Event};

/// The limit the fuzzed connections run with: small, so that lengths cross it.
const MAX: usize = 4096;

fn config() -> Config {
    Config::default().with_max_message_size(MAX)
}

/// The preamble's outcome with the rest of the input, comparable across splits.
#[derive(Debug, PartialEq)]
enum Preamble {
    Incomplete,
    Accepted(Vec<u8>),
    NotTether,
    Version(u8),
}

fn read_preamble(input: &[u8], cut: usize) -> Preamble {
    let mut reader = PreambleReader::new();
    let mut pieces = input.chunks(cut);
    for piece in pieces.by_ref() {
        match reader.handle_bytes(piece) {
            Ok(None) => {}
            Ok(Some(rest)) => {
                let mut rest = rest.to_vec();
                rest.extend(pieces.flatten());
                return Preamble::Accepted(rest);
            }
            // What was seen depends on the split; that it is not tether's does not.
            Err(PreambleError::NotTether { .. }) => return Preamble::NotTether,
            Err(PreambleError::Version { version }) => return Preamble::Version(version),
            Err(err @ PreambleError::Http { .. }) => panic!("the reader reads no HTTP status: {err}"),
        }
    }
    Preamble::Incomplete
}

/// Feeds `input` in pieces of `cut`, then the end of stream; returns the events and
/// the bytes queued.
fn drive(input: &[u8], cut: usize) -> (Vec<Event>, Vec<u8>) {
    let mut conn = PrefixedConnection::new(&config());
    let mut events = Vec::new();
    for piece in input.chunks(cut) {
        conn.handle_bytes(piece);
        events.extend(std::iter::from_fn(|| conn.poll_event()));
    }
    conn.handle_eof();
    events.extend(std::iter::from_fn(|| conn.poll_event()));
    assert!(conn.is_closed());
    if let Some(at) = events.iter().position(|e| matches!(e, Event::Failed(_))) {
        assert_eq!(at, events.len() - 1, "a failure is the last event: {events:?}");
    }
    let closes = events
        .iter()
        .filter(|e| matches!(e, Event::Close(_) | Event::Failed(_)))
        .count();
    assert_eq!(closes, 1, "one end: {events:?}");
    for event in &events {
        match event {
            Event::Text(text) => assert!(text.len() <= MAX),
            Event::Binary(data) => assert!(data.len() <= MAX),
            _ => {}
        }
    }
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    (events, out)
}

/// The fuzz entry point.
pub fn prefixed(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(control & 0x3f).max(1);
    let frames = if control & 0x80 != 0 {
        let whole = read_preamble(input, input.len().max(1));
        assert_eq!(
            whole,
            read_preamble(input, cut),
            "preamble split into pieces of {cut}"
        );
        match whole {
            Preamble::Accepted(rest) => rest,
            _ => return,
        }
    } else {
        input.to_vec()
    };
    let whole = drive(&frames, frames.len().max(1));
    assert_eq!(whole, drive(&frames, cut), "frames split into pieces of {cut}");

    // The messages decoded, sent again and decoded again, are the same messages.
    let mut sender = PrefixedConnection::new(&config());
    let messages: Vec<&Event> = whole
        .0
        .iter()
        .filter(|e| matches!(e, Event::Text(_) | Event::Binary(_)))
        .collect();
    for message in &messages {
        match message {
            Event::Text(text) => sender.send_text(text).expect("open"),
            Event::Binary(data) => sender.send_binary(data).expect("open"),
            _ => unreachable!("filtered"),
        }
    }
    let mut wire = Vec::new();
    while let Some(chunk) = sender.poll_transmit() {
        wire.extend_from_slice(&chunk);
    }
    let mut receiver = PrefixedConnection::new(&config());
    receiver.handle_bytes(&wire);
    let again: Vec<Event> = std::iter::from_fn(|| receiver.poll_event()).collect();
    assert_eq!(again.iter().collect::<Vec<_>>(), messages);
}
