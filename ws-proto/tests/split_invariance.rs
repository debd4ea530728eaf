//! h11/wsproto's rule: however the input is cut, the same events come out, and the
//! same bytes go back. Checked on arbitrary bytes (mostly garbage, so every fault
//! path runs) and on streams of well-formed frames.

use proptest::prelude::*;
use ws_proto::frame::{encode_frame, OpCode, SeededMasks};
use ws_proto::{Config, Connection, Event};

fn run(mut conn: Connection, pieces: &[&[u8]]) -> (Vec<Event>, Vec<u8>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        conn.handle_bytes(piece);
        events.extend(std::iter::from_fn(|| conn.poll_event()));
        while let Some(chunk) = conn.poll_transmit() {
            out.extend_from_slice(&chunk);
        }
    }
    (events, out)
}

fn conns(server: bool) -> (Connection, Connection) {
    let config = Config::default().with_max_message_size(100_000);
    if server {
        (Connection::server(config.clone()), Connection::server(config))
    } else {
        (
            Connection::client(config.clone(), SeededMasks::new(3)),
            Connection::client(config, SeededMasks::new(3)),
        )
    }
}

fn check(server: bool, input: &[u8], cut: usize) -> Result<(), TestCaseError> {
    let (a, b) = conns(server);
    let whole = run(a, &[input]);
    let pieces: Vec<&[u8]> = input.chunks(cut.max(1)).collect();
    let split = run(b, &pieces);
    prop_assert_eq!(whole, split);
    Ok(())
}

fn frame_stream(masked: bool) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            0usize..4,
            proptest::collection::vec(any::<u8>(), 0..300),
        ),
        0..12,
    )
    .prop_map(move |frames| {
        let mut out = Vec::new();
        for (fin, op, payload) in frames {
            let opcode = [OpCode::Text, OpCode::Binary, OpCode::Continuation, OpCode::Ping][op];
            let payload = if op == 3 {
                &payload[..payload.len().min(125)]
            } else {
                &payload[..]
            };
            let fin = fin || opcode == OpCode::Ping;
            encode_frame(&mut out, fin, opcode, payload, masked.then_some([1, 2, 3, 4]));
        }
        out
    })
}

/// The same input through `Connection::events`, taking `take_first` events of each
/// read from the iterator and the rest (after dropping it) from `poll_event`.
fn run_iter(mut conn: Connection, pieces: &[&[u8]], take_first: usize) -> (Vec<Event>, Vec<u8>) {
    let mut events = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        events.extend(conn.events(piece).take(take_first));
        events.extend(std::iter::from_fn(|| conn.poll_event()));
        while let Some(chunk) = conn.poll_transmit() {
            out.extend_from_slice(&chunk);
        }
    }
    (events, out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn events_as_an_iterator_equal_queued_events(
        server in any::<bool>(),
        stream in frame_stream(true),
        unmasked in frame_stream(false),
        cut in 1usize..4096,
        take_first in prop_oneof![Just(usize::MAX), 0usize..4],
    ) {
        let input = if server { stream } else { unmasked };
        let pieces: Vec<&[u8]> = input.chunks(cut).collect();
        let (a, b) = conns(server);
        prop_assert_eq!(run(a, &pieces), run_iter(b, &pieces, take_first));
    }

    #[test]
    fn garbage_gives_the_same_events_at_any_split(
        server in any::<bool>(),
        input in proptest::collection::vec(any::<u8>(), 0..2000),
        cut in 1usize..64,
    ) {
        check(server, &input, cut)?;
        check(server, &input, 1)?;
    }

    #[test]
    fn frame_streams_give_the_same_events_at_any_split(
        server in any::<bool>(),
        stream in frame_stream(true),
        unmasked in frame_stream(false),
        cut in 1usize..64,
    ) {
        let input = if server { stream } else { unmasked };
        check(server, &input, cut)?;
        check(server, &input, 1)?;
    }
}
