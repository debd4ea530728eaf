//! The connection state machine against RFC 6455, section by section, through the
//! public API only. Every peer fault must end in a close frame with the right code
//! and an `Event::Failed`, never a panic.

use bytes::Bytes;
use ws_proto::frame::{encode_frame, FrameHeader, OpCode, SeededMasks};
use ws_proto::{CloseCode, CloseFrame, Config, Connection, ConnectionState, Event, ProtocolError, SendError};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as a client would send it (masked).
fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, payload, Some(MASK));
    out
}

/// A frame as a server would send it (unmasked).
fn server_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, payload, None);
    out
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn transmitted(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Decodes the unmasked frames a server wrote: (fin, opcode, payload) each.
fn decode_server_output(mut bytes: &[u8]) -> Vec<(bool, OpCode, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (header, len) = FrameHeader::decode(bytes).unwrap().expect("whole header");
        let end = len + header.payload_len as usize;
        let mut payload = bytes[len..end].to_vec();
        if let Some(mask) = header.mask {
            ws_proto::frame::apply_mask(&mut payload, mask, 0);
        }
        frames.push((header.fin, header.opcode, payload));
        bytes = &bytes[end..];
    }
    frames
}

fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason.as_bytes());
    body
}

/// Feeds `input` to a fresh server and checks it fails with `expected` and answers
/// with a close frame carrying `code`.
fn assert_server_fails(input: &[u8], expected: ProtocolError, code: CloseCode) {
    assert_fails(Connection::server(Config::default()), input, expected, code);
}

fn assert_fails(mut conn: Connection, input: &[u8], expected: ProtocolError, code: CloseCode) {
    conn.handle_bytes(input);
    let evs = events(&mut conn);
    assert_eq!(
        evs.last(),
        Some(&Event::Failed(expected.clone())),
        "events: {evs:?}"
    );
    assert_eq!(conn.error(), Some(&expected));
    assert!(conn.is_closed());
    let out = decode_server_output(&transmitted(&mut conn));
    let (fin, opcode, body) = out.last().expect("a close frame").clone();
    assert!(fin);
    assert_eq!(opcode, OpCode::Close);
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), code.0);
    assert!(std::str::from_utf8(&body[2..]).is_ok());
    // Sticky: nothing more is read or reported.
    conn.handle_bytes(&client_frame(true, OpCode::Text, b"more"));
    assert!(events(&mut conn).is_empty());
}

// ---------------------------------------------------------------- §5.2 framing

#[test]
fn a_masked_text_frame_is_one_text_event() {
    let mut server = Connection::server(Config::default());
    server.handle_bytes(&client_frame(true, OpCode::Text, b"Hello"));
    assert_eq!(events(&mut server), [Event::Text("Hello".into())]);
    assert!(transmitted(&mut server).is_empty());
}

#[test]
fn every_split_of_the_input_gives_the_same_events() {
    let mut input = Vec::new();
    input.extend(client_frame(true, OpCode::Text, "κόσμε".as_bytes()));
    input.extend(client_frame(false, OpCode::Binary, &[1; 200]));
    input.extend(client_frame(true, OpCode::Ping, b"mid"));
    input.extend(client_frame(true, OpCode::Continuation, &[2; 70_000]));
    input.extend(client_frame(true, OpCode::Text, b""));
    let mut whole = Connection::server(Config::default());
    whole.handle_bytes(&input);
    let expected = events(&mut whole);
    assert_eq!(expected.len(), 4);
    for split in [1, 2, 3, 7, 13, 125, 4096] {
        let mut conn = Connection::server(Config::default());
        for piece in input.chunks(split) {
            conn.handle_bytes(piece);
        }
        assert_eq!(events(&mut conn), expected, "split {split}");
    }
}

#[test]
fn reserved_bits_without_extension_fail_with_1002() {
    for bits in 1..8u8 {
        let mut frame = client_frame(true, OpCode::Text, b"x");
        frame[0] |= bits << 4;
        assert_server_fails(
            &frame,
            ProtocolError::ReservedBits { bits },
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    for opcode in [3u8, 7, 0xb, 0xf] {
        let frame = [0x80 | opcode, 0x80, 0, 0, 0, 0];
        assert_server_fails(
            &frame,
            ProtocolError::ReservedOpcode { opcode },
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn non_minimal_and_top_bit_lengths_fail_with_1002() {
    assert_server_fails(
        &[0x82, 0xfe, 0, 5, 1, 2, 3, 4],
        ProtocolError::NonMinimalLength { len: 5 },
        CloseCode::PROTOCOL_ERROR,
    );
    assert_server_fails(
        &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
        ProtocolError::LengthTopBitSet,
        CloseCode::PROTOCOL_ERROR,
    );
}

// ---------------------------------------------------------------- §5.1/5.3 masking

#[test]
fn an_unmasked_client_frame_fails_with_1002() {
    assert_server_fails(
        &server_frame(true, OpCode::Text, b"hi"),
        ProtocolError::UnmaskedClientFrame,
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn a_masked_server_frame_fails_the_client_with_1002() {
    let client = Connection::client(Config::default(), SeededMasks::new(7));
    let mut conn = client;
    conn.handle_bytes(&client_frame(true, OpCode::Text, b"hi"));
    let evs = events(&mut conn);
    assert_eq!(evs, [Event::Failed(ProtocolError::MaskedServerFrame)]);
    let out = transmitted(&mut conn);
    // The client's own close frame is masked.
    let (header, _) = FrameHeader::decode(&out).unwrap().unwrap();
    assert_eq!(header.opcode, OpCode::Close);
    assert!(header.mask.is_some());
    assert_eq!(decode_server_output(&out)[0].2[..2], 1002u16.to_be_bytes());
}

#[test]
fn client_frames_are_masked_with_keys_from_the_source() {
    let mut keys = vec![[1, 2, 3, 4], [5, 6, 7, 8]].into_iter();
    let mut client = Connection::client(Config::default(), move || keys.next().unwrap_or([0; 4]));
    client.send_text("abc").unwrap();
    client.send_binary(&[9; 300]).unwrap();
    let out = transmitted(&mut client);
    let (first, len) = FrameHeader::decode(&out).unwrap().unwrap();
    assert_eq!(first.mask, Some([1, 2, 3, 4]));
    let (second, _) = FrameHeader::decode(&out[len + 3..]).unwrap().unwrap();
    assert_eq!(second.mask, Some([5, 6, 7, 8]));
    // A server reads back exactly what was sent.
    let mut server = Connection::server(Config::default());
    server.handle_bytes(&out);
    assert_eq!(
        events(&mut server),
        [
            Event::Text("abc".into()),
            Event::Binary(Bytes::from(vec![9; 300]))
        ]
    );
}

// ---------------------------------------------------------------- §5.4 fragmentation

#[test]
fn fragments_reassemble_with_control_frames_between_them() {
    let mut server = Connection::server(Config::default());
    let mut input = client_frame(false, OpCode::Text, b"frag");
    input.extend(client_frame(true, OpCode::Ping, b"p"));
    input.extend(client_frame(false, OpCode::Continuation, b"men"));
    input.extend(client_frame(true, OpCode::Pong, b"q"));
    input.extend(client_frame(true, OpCode::Continuation, b"ted"));
    server.handle_bytes(&input);
    assert_eq!(
        events(&mut server),
        [
            Event::Ping(Bytes::from_static(b"p")),
            Event::Pong(Bytes::from_static(b"q")),
            Event::Text("fragmented".into())
        ]
    );
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [(true, OpCode::Pong, b"p".to_vec())]
    );
}

#[test]
fn a_continuation_without_a_message_fails_with_1002() {
    assert_server_fails(
        &client_frame(true, OpCode::Continuation, b"x"),
        ProtocolError::UnexpectedContinuation,
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn a_new_message_inside_a_fragmented_one_fails_with_1002() {
    let mut input = client_frame(false, OpCode::Text, b"a");
    input.extend(client_frame(true, OpCode::Binary, b"b"));
    assert_server_fails(
        &input,
        ProtocolError::ExpectedContinuation {
            opcode: OpCode::Binary,
        },
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn fragmented_and_oversized_control_frames_fail_with_1002() {
    assert_server_fails(
        &client_frame(false, OpCode::Ping, b"x"),
        ProtocolError::FragmentedControlFrame { opcode: OpCode::Ping },
        CloseCode::PROTOCOL_ERROR,
    );
    assert_server_fails(
        &client_frame(true, OpCode::Ping, &[0; 126]),
        ProtocolError::ControlFrameTooLarge { len: 126 },
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn too_many_fragments_fail_with_1009_even_when_empty() {
    let config = Config {
        max_fragments: 4,
        ..Config::default()
    };
    let mut input = client_frame(false, OpCode::Binary, b"");
    for _ in 0..4 {
        input.extend(client_frame(false, OpCode::Continuation, b""));
    }
    assert_fails(
        Connection::server(config),
        &input,
        ProtocolError::TooManyFragments { max: 4 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn outgoing_messages_are_fragmented_when_configured() {
    let config = Config {
        send_fragment_size: Some(4),
        ..Config::default()
    };
    let mut server = Connection::server(config);
    server.send_text("0123456789").unwrap();
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [
            (false, OpCode::Text, b"0123".to_vec()),
            (false, OpCode::Continuation, b"4567".to_vec()),
            (true, OpCode::Continuation, b"89".to_vec()),
        ]
    );
}

// ---------------------------------------------------------------- limits

#[test]
fn an_oversized_frame_fails_with_1009_before_its_payload_arrives() {
    let config = Config::default().with_max_message_size(1000);
    let frame = client_frame(true, OpCode::Binary, &[0; 1001]);
    // Only the header: the verdict must not wait for (or buffer) the payload.
    assert_fails(
        Connection::server(config),
        &frame[..8],
        ProtocolError::FrameTooLarge { len: 1001, max: 1000 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn an_oversized_fragmented_message_fails_with_1009() {
    let config = Config {
        max_message_size: 1000,
        ..Config::default()
    };
    let mut input = client_frame(false, OpCode::Binary, &[0; 600]);
    input.extend(client_frame(true, OpCode::Continuation, &[0; 600]));
    assert_fails(
        Connection::server(config),
        &input,
        ProtocolError::MessageTooLarge { len: 1200, max: 1000 },
        CloseCode::MESSAGE_TOO_BIG,
    );
}

// ---------------------------------------------------------------- §5.5 control frames

#[test]
fn a_ping_is_answered_with_a_pong_carrying_its_payload() {
    let mut server = Connection::server(Config::default());
    server.handle_bytes(&client_frame(true, OpCode::Ping, &[7; 125]));
    assert_eq!(events(&mut server), [Event::Ping(Bytes::from(vec![7; 125]))]);
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [(true, OpCode::Pong, vec![7; 125])]
    );
}

#[test]
fn pings_from_a_peer_that_never_reads_cost_bounded_memory() {
    // A million pings of 125 bytes while the caller never takes the transmit queue
    // (its write is stalled): 16 pongs wait, plus one for the latest ping.
    let mut server = Connection::server(Config::default());
    let max = Config::DEFAULT_MAX_QUEUED_PONGS;
    let bound = (max + 1) * (2 + 125);
    let mut batch = Vec::new();
    for i in 0..1000u32 {
        batch.extend_from_slice(&client_frame(true, OpCode::Ping, &[(i % 251) as u8; 125]));
    }
    for _ in 0..1000 {
        server.handle_bytes(&batch);
        while server.poll_event().is_some() {}
        assert!(
            server.pending_transmit_len() <= bound,
            "{}",
            server.pending_transmit_len()
        );
    }
    let frames = decode_server_output(&transmitted(&mut server));
    assert_eq!(frames.len(), max + 1);
    assert!(frames.iter().all(|(fin, op, _)| *fin && *op == OpCode::Pong));
    // The first pongs answer the first pings; the last one answers the latest ping.
    assert_eq!(frames[0].2, vec![0; 125]);
    assert_eq!(frames[max].2, vec![(999 % 251) as u8; 125]);

    // Once the queue was taken, pings get a pong each again.
    server.handle_bytes(&client_frame(true, OpCode::Ping, b"again"));
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [(true, OpCode::Pong, b"again".to_vec())]
    );
}

#[test]
fn a_coalesced_pong_goes_out_before_our_close() {
    let config = Config {
        max_queued_pongs: 1,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    for payload in [b"a", b"b", b"c"] {
        server.handle_bytes(&client_frame(true, OpCode::Ping, payload));
    }
    server.close(CloseCode::NORMAL, "bye").unwrap();
    let frames = decode_server_output(&transmitted(&mut server));
    assert_eq!(
        frames,
        [
            (true, OpCode::Pong, b"a".to_vec()),
            (true, OpCode::Pong, b"c".to_vec()),
            (true, OpCode::Close, close_body(1000, "bye")),
        ]
    );
}

#[test]
fn auto_pong_can_be_turned_off() {
    let config = Config {
        auto_pong: false,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    server.handle_bytes(&client_frame(true, OpCode::Ping, b"x"));
    assert_eq!(events(&mut server), [Event::Ping(Bytes::from_static(b"x"))]);
    assert!(transmitted(&mut server).is_empty());
}

#[test]
fn oversized_control_payloads_are_refused_to_the_caller() {
    let mut server = Connection::server(Config::default());
    assert_eq!(
        server.send_ping(&[0; 126]),
        Err(SendError::ControlPayloadTooLarge { len: 126 })
    );
    assert_eq!(
        server.close(CloseCode::NORMAL, &"x".repeat(124)),
        Err(SendError::ControlPayloadTooLarge { len: 126 })
    );
    assert_eq!(
        server.close(CloseCode::NO_STATUS, ""),
        Err(SendError::InvalidCloseCode { code: 1005 })
    );
    assert!(transmitted(&mut server).is_empty());
}

// ---------------------------------------------------------------- §5.5.1 / §7 closing

#[test]
fn the_peers_close_is_echoed_and_closes_the_connection() {
    let mut server = Connection::server(Config::default());
    let mut input = client_frame(true, OpCode::Close, &close_body(1000, "bye"));
    input.extend(client_frame(true, OpCode::Text, b"after close"));
    server.handle_bytes(&input);
    assert_eq!(
        events(&mut server),
        [Event::Close(CloseFrame::new(CloseCode::NORMAL, "bye"))]
    );
    assert!(server.is_closed());
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [(true, OpCode::Close, 1000u16.to_be_bytes().to_vec())]
    );
    assert_eq!(server.send_text("late"), Err(SendError::Closed));
}

#[test]
fn an_empty_close_is_answered_with_an_empty_close() {
    let mut server = Connection::server(Config::default());
    server.handle_bytes(&client_frame(true, OpCode::Close, b""));
    assert_eq!(
        events(&mut server),
        [Event::Close(CloseFrame {
            code: None,
            reason: String::new()
        })]
    );
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [(true, OpCode::Close, vec![])]
    );
}

#[test]
fn our_close_waits_for_the_peers_and_still_delivers_messages() {
    let mut server = Connection::server(Config::default());
    server.close(CloseCode::GOING_AWAY, "restart").unwrap();
    assert_eq!(server.state(), ConnectionState::Closing);
    assert_eq!(server.send_text("x"), Err(SendError::Closed));
    assert_eq!(server.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
    let mut input = client_frame(true, OpCode::Text, b"in flight");
    input.extend(client_frame(true, OpCode::Ping, b"no pong after close"));
    input.extend(client_frame(true, OpCode::Close, &close_body(1001, "")));
    server.handle_bytes(&input);
    assert_eq!(
        events(&mut server),
        [
            Event::Text("in flight".into()),
            Event::Ping(Bytes::from_static(b"no pong after close")),
            Event::Close(CloseFrame::new(CloseCode::GOING_AWAY, ""))
        ]
    );
    assert!(server.is_closed());
    // Our close went out once, and nothing followed it.
    assert_eq!(
        decode_server_output(&transmitted(&mut server)),
        [(true, OpCode::Close, close_body(1001, "restart"))]
    );
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
        assert_server_fails(
            &client_frame(true, OpCode::Close, &close_body(code, "")),
            ProtocolError::InvalidCloseCode { code },
            CloseCode::PROTOCOL_ERROR,
        );
    }
    for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
        let mut server = Connection::server(Config::default());
        server.handle_bytes(&client_frame(true, OpCode::Close, &close_body(code, "")));
        assert_eq!(
            events(&mut server),
            [Event::Close(CloseFrame::new(CloseCode(code), ""))]
        );
    }
}

#[test]
fn a_one_byte_close_body_fails_with_1002() {
    assert_server_fails(
        &client_frame(true, OpCode::Close, &[3]),
        ProtocolError::CloseBodyTooShort,
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn a_close_reason_that_is_not_utf8_fails_with_1007() {
    let mut body = close_body(1000, "");
    body.extend_from_slice(&[0xce, 0xba, 0xff]);
    assert_server_fails(
        &client_frame(true, OpCode::Close, &body),
        ProtocolError::InvalidUtf8 { valid_up_to: 2 },
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn eof_before_the_close_handshake_is_an_abnormal_close() {
    let mut server = Connection::server(Config::default());
    let frame = client_frame(true, OpCode::Text, b"cut short");
    server.handle_bytes(&frame[..5]);
    server.handle_eof();
    assert_eq!(
        events(&mut server),
        [Event::Close(CloseFrame::new(CloseCode::ABNORMAL, ""))]
    );
    assert!(server.is_closed());
    server.handle_eof();
    assert!(events(&mut server).is_empty());
}

// ---------------------------------------------------------------- §8.1 UTF-8

#[test]
fn invalid_utf8_text_fails_with_1007() {
    assert_server_fails(
        &client_frame(true, OpCode::Text, &[b'a', 0xc0, 0xaf]),
        ProtocolError::InvalidUtf8 { valid_up_to: 1 },
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn invalid_utf8_fails_fast_at_the_first_bad_fragment() {
    let mut server = Connection::server(Config::default());
    server.handle_bytes(&client_frame(false, OpCode::Text, "κόσ".as_bytes()));
    assert!(events(&mut server).is_empty());
    // 0xf4 0x90 can never be valid: fail now, before the message ends.
    server.handle_bytes(&client_frame(false, OpCode::Continuation, &[0xf4, 0x90]));
    assert_eq!(
        events(&mut server),
        [Event::Failed(ProtocolError::InvalidUtf8 { valid_up_to: 6 })]
    );
}

#[test]
fn invalid_utf8_fails_fast_inside_a_frame_that_arrives_in_pieces() {
    let mut server = Connection::server(Config::default());
    let mut payload = b"hello".to_vec();
    payload.extend_from_slice(&[0xed, 0xa0, 0x80]); // a UTF-16 surrogate
    payload.extend_from_slice(&[b'z'; 100]);
    let frame = client_frame(true, OpCode::Text, &payload);
    server.handle_bytes(&frame[..6 + 7]);
    assert_eq!(
        events(&mut server),
        [Event::Failed(ProtocolError::InvalidUtf8 { valid_up_to: 5 })]
    );
}

#[test]
fn a_text_ending_inside_a_code_point_fails_with_1007() {
    let mut input = client_frame(false, OpCode::Text, b"ab");
    input.extend(client_frame(true, OpCode::Continuation, &[0xe2, 0x82]));
    assert_server_fails(
        &input,
        ProtocolError::InvalidUtf8 { valid_up_to: 2 },
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn a_code_point_split_across_fragments_is_valid() {
    let mut server = Connection::server(Config::default());
    let euro = "€".as_bytes();
    let mut input = client_frame(false, OpCode::Text, &euro[..1]);
    input.extend(client_frame(false, OpCode::Continuation, &euro[1..2]));
    input.extend(client_frame(true, OpCode::Continuation, &euro[2..]));
    server.handle_bytes(&input);
    assert_eq!(events(&mut server), [Event::Text("€".into())]);
}

// ---------------------------------------------------------------- sending

#[test]
fn preframed_bytes_keep_their_place_in_the_output() {
    let mut server = Connection::server(Config::default());
    server.send_text("one").unwrap();
    let mut shared = Vec::new();
    encode_frame(&mut shared, true, OpCode::Text, b"two", None);
    server.send_preframed(Bytes::from(shared)).unwrap();
    server.send_text("three").unwrap();
    assert_eq!(server.pending_transmit_len(), 5 + 5 + 7);
    let frames = decode_server_output(&transmitted(&mut server));
    let texts: Vec<_> = frames.iter().map(|f| f.2.clone()).collect();
    assert_eq!(texts, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    assert_eq!(server.pending_transmit_len(), 0);

    let mut client = Connection::client(Config::default(), SeededMasks::new(1));
    assert_eq!(
        client.send_preframed(Bytes::from_static(b"x")),
        Err(SendError::Closed)
    );
}

#[test]
fn answers_to_messages_before_a_fault_go_out_before_the_close() {
    // Autobahn 3.2: a text, then a frame with a reserved bit, then a ping, in one read.
    let mut server = Connection::server(Config::default());
    let mut input = client_frame(true, OpCode::Text, b"echo me");
    let mut bad = client_frame(true, OpCode::Text, b"x");
    bad[0] |= 0x20;
    input.extend(bad);
    input.extend(client_frame(true, OpCode::Ping, b""));
    server.handle_bytes(&input);
    assert!(!server.is_closed(), "a close is owed but not yet written");
    let mut answered = Vec::new();
    while let Some(event) = server.poll_event() {
        if let Event::Text(text) = &event {
            server.send_text(text).unwrap();
        }
        answered.push(event);
    }
    assert_eq!(
        answered,
        [
            Event::Text("echo me".into()),
            Event::Failed(ProtocolError::ReservedBits { bits: 2 })
        ]
    );
    assert!(server.is_closed());
    let frames = decode_server_output(&transmitted(&mut server));
    assert_eq!(frames[0], (true, OpCode::Text, b"echo me".to_vec()));
    assert_eq!(frames[1].1, OpCode::Close);
    assert_eq!(frames.len(), 2);
    assert_eq!(server.send_text("late"), Err(SendError::Closed));
}

#[test]
fn answers_to_messages_before_the_peers_close_go_out_before_ours() {
    let mut server = Connection::server(Config::default());
    let mut input = client_frame(true, OpCode::Text, b"last words");
    input.extend(client_frame(true, OpCode::Close, &close_body(1000, "")));
    server.handle_bytes(&input);
    while let Some(event) = server.poll_event() {
        if let Event::Text(text) = &event {
            server.send_text(text).unwrap();
        }
    }
    // Our own close may not be started while the answer to theirs is owed.
    assert_eq!(server.close(CloseCode::NORMAL, ""), Err(SendError::Closed));
    let frames = decode_server_output(&transmitted(&mut server));
    assert_eq!(
        frames,
        [
            (true, OpCode::Text, b"last words".to_vec()),
            (true, OpCode::Close, close_body(1000, ""))
        ]
    );
}

#[test]
fn text_parts_are_one_frame_and_share_large_bodies() {
    let body = Bytes::from(format!(
        "{{\"v\":\"1.0\",\"e\":\"x\",\"p\":\"{}\"",
        "é".repeat(200)
    ));
    for (name, mut conn) in [
        ("server", Connection::server(Config::default())),
        (
            "client",
            Connection::client(Config::default(), SeededMasks::new(9)),
        ),
    ] {
        conn.send_text("before").unwrap();
        conn.send_text_parts(&body, b",\"s\":7}").unwrap();
        conn.send_text_parts(&Bytes::from_static(b"{\"e\":\"small\""), b"}")
            .unwrap();
        conn.send_text("after").unwrap();
        let mut chunks = Vec::new();
        while let Some(chunk) = conn.poll_transmit() {
            chunks.push(chunk);
        }
        if name == "server" {
            // The large body went out by reference: same allocation as ours.
            assert!(chunks.iter().any(|c| c.as_ptr() == body.as_ptr()), "{name}");
        }
        let wire: Vec<u8> = chunks.concat();
        let frames = decode_server_output(&wire);
        let texts: Vec<String> = frames
            .iter()
            .map(|f| String::from_utf8(f.2.clone()).unwrap())
            .collect();
        let expected_big = format!("{},\"s\":7}}", std::str::from_utf8(&body).unwrap());
        assert_eq!(
            texts,
            [
                "before".to_owned(),
                expected_big,
                "{\"e\":\"small\"}".to_owned(),
                "after".to_owned()
            ],
            "{name}"
        );
    }
}

#[test]
fn large_texts_are_validated_whole_and_fail_with_1007() {
    let mut valid = "ü".repeat(400);
    let mut server = Connection::server(Config::default());
    server.handle_bytes(&client_frame(true, OpCode::Text, valid.as_bytes()));
    assert_eq!(events(&mut server), [Event::Text(valid.clone())]);

    valid.push('a');
    let mut bad = valid.into_bytes();
    let at = bad.len();
    bad.extend_from_slice(&[0xe2, 0x28, 0xa1]);
    assert_server_fails(
        &client_frame(true, OpCode::Text, &bad),
        ProtocolError::InvalidUtf8 { valid_up_to: at },
        CloseCode::INVALID_PAYLOAD,
    );
}
