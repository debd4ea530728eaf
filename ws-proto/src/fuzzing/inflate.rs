//! The permessage-deflate receive path under arbitrary input: compressed frames made
//! by our own compressor (any window, context kept or not, fragmented), mixed with
//! frames of arbitrary bytes claiming to be compressed, fed whole and in pieces.
//!
//! Layout: byte 0 picks the role, the agreed parameters and the piece size; then
//! records of `[flags, len, payload...]`. A record with flag bit 7 is a binary message (its payload
//! repeated 1-4 times, bits 4-5) the peer sends through its own `Connection` (so
//! compressed with the agreed window and context, fragmented when the piece size is
//! odd); otherwise it is one raw frame: bit 6 FIN, bit 5 RSV1,
//! bits 0-1 the opcode (continuation, text, binary, ping). Whatever the bytes: no
//! panic, the same events whole and split, memory bounded by the message limit,
//! and every message before the first raw frame arrives intact.

use crate::frame::{apply_mask, FrameHeader, OpCode, SeededMasks};
use crate::{Config, Connection, DeflateParams, Event, ProtocolError};

const LIMIT: usize = 64 * 1024;

fn config(fragment: Option<usize>) -> Config {
    Config {
        send_fragment_size: fragment,
        deflate_min_size: 0,
        ..Config::default().with_max_message_size(LIMIT)
    }
}

fn connection(server: bool, params: DeflateParams, fragment: Option<usize>) -> Connection {
    let conn = if server {
        Connection::server(config(fragment))
    } else {
        Connection::client(config(fragment), SeededMasks::new(9))
    };
    conn.with_deflate(Some(params))
}

fn drive(mut conn: Connection, pieces: &mut dyn Iterator<Item = &[u8]>) -> Vec<Event> {
    let mut events = Vec::new();
    for piece in pieces {
        conn.handle_bytes(piece);
        // The limit bounds what a message may hold, inflated; the decompressor and
        // one step of output come on top.
        assert!(
            conn.buffered_bytes() <= 3 * LIMIT + 512 * 1024,
            "{}",
            conn.buffered_bytes()
        );
        events.extend(std::iter::from_fn(|| conn.poll_event()));
        while conn.poll_transmit().is_some() {}
    }
    events
}

/// Whole and split input give the same events, but for one thing: a compressed
/// message whose inflated text is invalid UTF-8 *and* whose DEFLATE data is corrupt
/// further on may fail with either error, because how much the decompressor hands out
/// before it finds the corruption depends on how the input was split. Both close with
/// the same code (1007), so the peer sees the same outcome.
fn assert_same_events(whole: &[Event], split: &[Event], cut: usize) {
    if whole == split {
        return;
    }
    let (Some((Event::Failed(a), a_before)), Some((Event::Failed(b), b_before))) =
        (whole.split_last(), split.split_last())
    else {
        panic!("split into pieces of {cut}: {whole:?} != {split:?}");
    };
    assert_eq!(a_before, b_before, "split into pieces of {cut}");
    assert!(
        (*a == ProtocolError::InvalidCompressedData || *b == ProtocolError::InvalidCompressedData)
            && a.close_code() == b.close_code(),
        "split into pieces of {cut}: failed with {a:?} whole, {b:?} split"
    );
}

/// The fuzz entry point.
pub fn inflate(data: &[u8]) {
    let Some((&control, mut rest)) = data.split_first() else {
        return;
    };
    let server = control & 0x80 != 0;
    let bits = 8 + (control & 0x07);
    let params = DeflateParams {
        server_no_context_takeover: control & 0x40 != 0,
        client_no_context_takeover: control & 0x20 != 0,
        server_max_window_bits: (control & 0x10 != 0).then_some(bits),
        client_max_window_bits: (control & 0x08 != 0).then_some(bits),
    };
    let cut = usize::from(rest.first().copied().unwrap_or(1)).max(1);
    // The peer: the other role, same parameters, fragmenting when `cut` is odd.
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut raw_seen = false;
    let mut peer = connection(!server, params, (cut % 2 == 1).then_some(cut * 3));
    while let [flags, len, tail @ ..] = rest {
        let len = usize::from(*len) * 8;
        let (payload, after) = tail.split_at(len.min(tail.len()));
        rest = after;
        if flags & 0x80 != 0 {
            let _ = peer.send_binary(&payload.repeat(usize::from(flags >> 4 & 0x3) + 1));
            while let Some(chunk) = peer.poll_transmit() {
                input.extend_from_slice(&chunk);
            }
            if !raw_seen {
                expected.push(payload.repeat(usize::from(flags >> 4 & 0x3) + 1));
            }
        } else {
            raw_seen = true;
            let opcode =
                [OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Ping][usize::from(flags & 3)];
            let payload = if opcode == OpCode::Ping {
                &payload[..payload.len().min(125)]
            } else {
                payload
            };
            // Frames to a server are masked, frames to a client are not.
            let mask = server.then_some([0x12, 0x34, 0x56, 0x78]);
            let header = FrameHeader {
                fin: flags & 0x40 != 0 || opcode == OpCode::Ping,
                rsv: if flags & 0x20 != 0 { 0b100 } else { 0 },
                opcode,
                mask,
                payload_len: payload.len() as u64,
            };
            header.encode(&mut input);
            let start = input.len();
            input.extend_from_slice(payload);
            if let Some(mask) = mask {
                apply_mask(&mut input[start..], mask, 0);
            }
        }
    }
    let whole = drive(connection(server, params, None), &mut std::iter::once(&input[..]));
    let split = drive(connection(server, params, None), &mut input.chunks(cut));
    assert_same_events(&whole, &split, cut);
    // The peer's messages before any raw frame arrive intact, in order.
    let got: Vec<&[u8]> = whole
        .iter()
        .filter_map(|e| match e {
            Event::Binary(data) => Some(&data[..]),
            _ => None,
        })
        .collect();
    for (i, want) in expected.iter().enumerate() {
        if want.len() > LIMIT {
            break; // the peer's message was too large for our limit: 1009
        }
        assert_eq!(got.get(i).copied(), Some(&want[..]), "message {i}");
    }
}
