//! Frame decoding under arbitrary splits: the first byte picks the role and the size
//! of the pieces; the rest is the input. Whatever the bytes, no panic, bounded
//! buffering, and the same events whole and split.

use crate::frame::SeededMasks;
use crate::{Config, Connection, Event};

fn connection(server: bool) -> Connection {
    let config = Config::default().with_max_message_size(64 * 1024);
    if server {
        Connection::server(config)
    } else {
        Connection::client(config, SeededMasks::new(1))
    }
}

/// Feeds `pieces` to `conn`, taking events after each piece and the bytes to transmit
/// after each piece (`drain_each`) or only at the end.
fn drive(
    mut conn: Connection,
    pieces: &mut dyn Iterator<Item = &[u8]>,
    drain_each: bool,
) -> (Vec<Event>, Vec<u8>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        conn.handle_bytes(piece);
        events.extend(std::iter::from_fn(|| conn.poll_event()));
        if drain_each {
            while let Some(chunk) = conn.poll_transmit() {
                out.extend_from_slice(&chunk);
            }
        }
        if let Some(err) = conn.error() {
            // A failure is reported once, last, with a close frame queued.
            assert!(matches!(events.last(), Some(Event::Failed(e)) if e == err));
            assert!(conn.is_closed());
        }
    }
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    (events, out)
}

/// The fuzz entry point.
pub fn frames(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let server = control & 0x80 != 0;
    let cut = usize::from(control & 0x7f).max(1);
    let whole = drive(connection(server), &mut std::iter::once(input), false);
    let split = drive(connection(server), &mut input.chunks(cut), false);
    assert_eq!(whole, split, "split into pieces of {cut}");
    // Taking the output after every piece changes only which pongs are coalesced
    // (a pong per ping while fewer than `max_queued_pongs` wait to be taken, RFC 6455
    // §5.5.3), so the bytes may differ; the events may not.
    let (events, _) = drive(connection(server), &mut input.chunks(cut), true);
    assert_eq!(
        whole.0, events,
        "split into pieces of {cut}, output taken after each"
    );
}
