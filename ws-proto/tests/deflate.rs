//! permessage-deflate (RFC 7692) through the public API: the handshake agreeing on
//! parameters, messages compressed both ways in every configuration, RSV1 rules,
//! corrupt data, and the decompression bomb.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use ws_proto::frame::{FrameHeader, OpCode, SeededMasks};
use ws_proto::handshake::{Accept, ClientHandshake, ClientRequest, ServerHandshake};
use ws_proto::{CloseCode, Config, Connection, DeflateParams, Event, Precompressed, ProtocolError};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame with any RSV bits, masked (client to server) or not.
/// The default configuration with permessage-deflate turned on (it is off by default).
fn deflate_on() -> Config {
    Config {
        deflate: true,
        ..Config::default()
    }
}

fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    }
    .encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        ws_proto::frame::apply_mask(&mut out[start..], mask, 0);
    }
    out
}

/// Raw DEFLATE of `data` by a fresh compressor, sync-flushed, tail removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let before = c.total_in() as usize;
        c.compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
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

/// Runs the handshake in memory with these configs; returns the agreed parameters
/// as each side sees them and the connected pair.
fn connect(server_config: &Config, client_config: &Config) -> (Connection, Connection) {
    let mut request = ClientRequest::new("h", "/", [3; 16]);
    request.extensions = DeflateParams::client_offer(client_config);
    let (mut client, bytes) = ClientHandshake::new(client_config, request).unwrap();
    let request = ServerHandshake::new(server_config)
        .handle_bytes(&bytes)
        .unwrap()
        .unwrap();
    let agreed = request.negotiate_deflate(server_config);
    let response = request
        .accept(&Accept::new().with_deflate(agreed.as_ref()))
        .unwrap();
    let response = client.handle_bytes(&response).unwrap().unwrap();
    assert_eq!(response.deflate(), agreed.as_ref());
    (
        Connection::server(server_config.clone()).with_deflate(agreed),
        Connection::client(client_config.clone(), SeededMasks::new(7))
            .with_deflate(response.deflate().copied()),
    )
}

fn chat_message(i: usize) -> String {
    format!(
        r#"{{"v":1,"e":"chat.message","p":{{"room":"lobby","from":"user-{}","text":"hello number {i}, how are you today?"}},"s":{i}}}"#,
        i % 7
    )
}

/// Sends messages both ways (text and binary, small and large) and checks they
/// arrive intact; returns the bytes that went over the wire each way.
fn exchange(server: &mut Connection, client: &mut Connection) -> (usize, usize) {
    let mut wire = (0, 0);
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
        .collect();
    for i in 0..50 {
        let text = chat_message(i);
        client.send_text(&text).unwrap();
        let bytes = transmitted(client);
        wire.0 += bytes.len();
        server.handle_bytes(&bytes);
        assert_eq!(events(server), [Event::Text(text.clone())]);
        server
            .send_text_parts(&Bytes::from(text.clone().into_bytes()), b"")
            .unwrap();
        server.send_binary(&big[..i * 1000]).unwrap();
        let bytes = transmitted(server);
        wire.1 += bytes.len();
        // Any split of the input gives the same events.
        for piece in bytes.chunks(777) {
            client.handle_bytes(piece);
        }
        assert_eq!(
            events(client),
            [
                Event::Text(text),
                Event::Binary(Bytes::copy_from_slice(&big[..i * 1000]))
            ]
        );
    }
    wire
}

#[test]
fn every_configuration_round_trips() {
    let base = deflate_on();
    let configs = [
        (base.clone(), base.clone()),
        (
            Config {
                deflate_server_no_context_takeover: true,
                deflate_client_no_context_takeover: true,
                ..base.clone()
            },
            base.clone(),
        ),
        (
            base.clone(),
            Config {
                deflate_server_no_context_takeover: true,
                deflate_client_no_context_takeover: true,
                send_fragment_size: Some(100),
                deflate_level: 9,
                ..base.clone()
            },
        ),
        (
            Config {
                send_fragment_size: Some(1000),
                deflate_min_size: 0,
                deflate_level: 0,
                ..base.clone()
            },
            base.clone(),
        ),
    ];
    for (server_config, client_config) in configs {
        let (mut server, mut client) = connect(&server_config, &client_config);
        assert!(server.deflate().is_some());
        exchange(&mut server, &mut client);
    }
}

#[test]
fn compression_shrinks_chat_traffic_and_context_takeover_helps() {
    let (mut server, mut client) = connect(&deflate_on(), &deflate_on());
    let with_context = exchange(&mut server, &mut client);
    let no_context = Config {
        deflate_server_no_context_takeover: true,
        deflate_client_no_context_takeover: true,
        ..deflate_on()
    };
    let (mut server, mut client) = connect(&no_context, &no_context);
    let without_context = exchange(&mut server, &mut client);
    let off = Config {
        deflate: false,
        ..deflate_on()
    };
    let (mut server, mut client) = connect(&off, &deflate_on());
    assert!(server.deflate().is_none() && client.deflate().is_none());
    let plain = exchange(&mut server, &mut client);
    assert!(with_context.0 * 3 < plain.0, "{with_context:?} vs {plain:?}");
    assert!(
        with_context.0 < without_context.0,
        "{with_context:?} vs {without_context:?}"
    );
    assert!(without_context.0 < plain.0);
}

#[test]
fn deflate_is_off_by_default() {
    let mut request = ClientRequest::new("h", "/", [3; 16]);
    request.extensions = Some("permessage-deflate; client_max_window_bits".into());
    let (_, bytes) = ClientHandshake::new(&deflate_on(), request).unwrap();
    let request = ServerHandshake::new(&Config::default())
        .handle_bytes(&bytes)
        .unwrap()
        .unwrap();
    assert_eq!(request.negotiate_deflate(&Config::default()), None);
    assert_eq!(DeflateParams::client_offer(&Config::default()), None);
}

#[test]
fn a_window_under_32_kib_is_honoured_with_stored_blocks() {
    // A client that asks the server for a 512-byte window: agreed, and everything the
    // server sends goes out as stored blocks (RSV1 set, the bytes as they are, no
    // back-reference to reach too far), however large or repetitive; the client,
    // whose own window was not limited, compresses.
    let mut request = ClientRequest::new("h", "/", [3; 16]);
    request.extensions = Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits".into());
    let config = deflate_on();
    let (mut client_hs, bytes) = ClientHandshake::new(&config, request).unwrap();
    let request = ServerHandshake::new(&config)
        .handle_bytes(&bytes)
        .unwrap()
        .unwrap();
    let agreed = request.negotiate_deflate(&config).unwrap();
    assert_eq!(agreed.server_max_window_bits, Some(9));
    let response = request
        .accept(&Accept::new().with_deflate(Some(&agreed)))
        .unwrap();
    let response = client_hs.handle_bytes(&response).unwrap().unwrap();
    let mut server = Connection::server(config.clone()).with_deflate(Some(agreed));
    let mut client =
        Connection::client(config, SeededMasks::new(1)).with_deflate(response.deflate().copied());
    let text = chat_message(1).repeat(100);
    server.send_text(&text).unwrap();
    let frame = transmitted(&mut server);
    assert_eq!(frame[0] & 0x40, 0x40, "RSV1 clear on a server frame");
    assert!(
        frame.len() > text.len(),
        "{} bytes for {}",
        frame.len(),
        text.len()
    );
    assert!(
        frame.len() < text.len() + 20,
        "{} bytes for {}",
        frame.len(),
        text.len()
    );
    client.handle_bytes(&frame);
    assert_eq!(events(&mut client), [Event::Text(text.clone())]);
    client.send_text(&text).unwrap();
    let frame = transmitted(&mut client);
    assert_eq!(frame[0] & 0x40, 0x40, "the client compresses");
    assert!(
        frame.len() * 10 < text.len(),
        "{} bytes for {}",
        frame.len(),
        text.len()
    );
    server.handle_bytes(&frame);
    assert_eq!(events(&mut server), [Event::Text(text)]);
    // And the whole exchange round-trips, stored one way, compressed the other.
    exchange(&mut server, &mut client);
    assert_eq!(server.deflate().unwrap().server_max_window_bits, Some(9));
}

#[test]
fn precompressed_broadcast_is_shared_and_mixes_with_per_connection_messages() {
    let config = deflate_on();
    // Varied enough that its compressed form is queued by reference (256 bytes+).
    let body = Bytes::from((0..200).map(|i| chat_message(i * 7919)).collect::<String>());
    let shared = Precompressed::text(body.clone(), &config);
    let deflated = shared.deflated().unwrap().clone();
    assert!(deflated.len() >= 256, "{}", deflated.len());
    for server_config in [
        config.clone(),
        Config {
            deflate_server_no_context_takeover: true,
            ..config.clone()
        },
    ] {
        let (mut server, mut client) = connect(&server_config, &config);
        for i in 0..5 {
            server.send_text(&chat_message(i)).unwrap();
            server.send_precompressed(&shared).unwrap();
            let chunks: Vec<Bytes> = std::iter::from_fn(|| server.poll_transmit()).collect();
            // The compressed body went out by reference, not copied.
            assert!(chunks.iter().any(|c| c.as_ptr() == deflated.as_ptr()));
            for chunk in &chunks {
                client.handle_bytes(chunk);
            }
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert_eq!(
                events(&mut client),
                [Event::Text(chat_message(i)), Event::Text(text)]
            );
        }
    }
    // No compression agreed: the plain payload goes out.
    let off = Config {
        deflate: false,
        ..config.clone()
    };
    let (mut server, mut client) = connect(&off, &config);
    server.send_precompressed(&shared).unwrap();
    client.handle_bytes(&transmitted(&mut server));
    assert_eq!(
        events(&mut client),
        [Event::Text(String::from_utf8(body.to_vec()).unwrap())]
    );
}

/// A server connection with permessage-deflate agreed (default parameters).
fn deflate_server(config: Config) -> Connection {
    Connection::server(config).with_deflate(Some(DeflateParams::default()))
}

fn assert_fails(conn: &mut Connection, input: &[u8], code: CloseCode) -> ProtocolError {
    conn.handle_bytes(input);
    let events = events(conn);
    let Some(Event::Failed(err)) = events.last() else {
        panic!("no failure: {events:?}");
    };
    assert_eq!(err.close_code(), code, "{err}");
    let out = transmitted(conn);
    assert_eq!(out[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), code.0);
    err.clone()
}

#[test]
fn rsv1_only_on_the_first_frame_of_a_compressed_data_message() {
    let hello = deflate(b"Hello");
    // Fine: compressed text, fragmented, RSV1 on the first frame only.
    let mut conn = deflate_server(deflate_on());
    let mut input = frame(false, 0b100, OpCode::Text, &hello[..2], Some(MASK));
    input.extend(frame(true, 0, OpCode::Ping, b"p", Some(MASK)));
    input.extend(frame(true, 0, OpCode::Continuation, &hello[2..], Some(MASK)));
    conn.handle_bytes(&input);
    assert_eq!(
        events(&mut conn),
        [Event::Ping(Bytes::from_static(b"p")), Event::Text("Hello".into())]
    );
    // An uncompressed message on the same connection is fine too.
    conn.handle_bytes(&frame(true, 0, OpCode::Binary, b"raw", Some(MASK)));
    assert_eq!(events(&mut conn), [Event::Binary(Bytes::from_static(b"raw"))]);

    let cases = [
        // RSV1 on a continuation frame.
        [
            frame(false, 0b100, OpCode::Text, &hello[..2], Some(MASK)),
            frame(true, 0b100, OpCode::Continuation, &hello[2..], Some(MASK)),
        ]
        .concat(),
        // RSV1 on control frames.
        frame(true, 0b100, OpCode::Ping, b"", Some(MASK)),
        frame(true, 0b100, OpCode::Close, &[0x03, 0xe8], Some(MASK)),
        // RSV2 and RSV3 mean nothing here.
        frame(true, 0b010, OpCode::Text, b"a", Some(MASK)),
        frame(true, 0b110, OpCode::Text, &hello, Some(MASK)),
    ];
    for input in cases {
        let err = assert_fails(
            &mut deflate_server(deflate_on()),
            &input,
            CloseCode::PROTOCOL_ERROR,
        );
        assert!(matches!(err, ProtocolError::ReservedBits { .. }), "{err}");
    }
    // Without the extension agreed, RSV1 is a protocol error.
    assert_fails(
        &mut Connection::server(deflate_on()),
        &frame(true, 0b100, OpCode::Text, &hello, Some(MASK)),
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn corrupt_data_and_invalid_text_after_inflation() {
    // 0xff: a block of the reserved type 3.
    let err = assert_fails(
        &mut deflate_server(deflate_on()),
        &frame(true, 0b100, OpCode::Binary, &[0xff, 0xff, 0xff], Some(MASK)),
        CloseCode::INVALID_PAYLOAD,
    );
    assert_eq!(err, ProtocolError::InvalidCompressedData);
    // Valid DEFLATE, invalid UTF-8 once inflated, even split across frames.
    let bad = deflate(b"ok \xff\xfe not text");
    let input = [
        frame(false, 0b100, OpCode::Text, &bad[..3], Some(MASK)),
        frame(true, 0, OpCode::Continuation, &bad[3..], Some(MASK)),
    ]
    .concat();
    let err = assert_fails(
        &mut deflate_server(deflate_on()),
        &input,
        CloseCode::INVALID_PAYLOAD,
    );
    assert!(matches!(err, ProtocolError::InvalidUtf8 { .. }), "{err}");
    // A message ending inside a code point.
    let cut = deflate("é".as_bytes().split_at(1).0);
    assert_fails(
        &mut deflate_server(deflate_on()),
        &frame(true, 0b100, OpCode::Text, &cut, Some(MASK)),
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn final_block_and_stored_blocks_from_the_peer() {
    // A stream ended with BFINAL=1 (no sync flush): the receiver still appends the
    // tail, which must be ignored, and the next message starts a fresh stream.
    let mut c = Compress::new(Compression::default(), false);
    let mut finished = Vec::with_capacity(64);
    c.compress_vec(b"first message", &mut finished, FlushCompress::Finish)
        .unwrap();
    let mut conn = deflate_server(deflate_on());
    conn.handle_bytes(&frame(true, 0b100, OpCode::Text, &finished, Some(MASK)));
    conn.handle_bytes(&frame(true, 0b100, OpCode::Text, &deflate(b"second"), Some(MASK)));
    assert_eq!(
        events(&mut conn),
        [Event::Text("first message".into()), Event::Text("second".into())]
    );
}

/// DEFLATE data for `copies` MiB of zeros: one block sequence compressed by a fresh
/// compressor references nothing before it, so it can be repeated.
fn zeros_bomb(copies: usize) -> Vec<u8> {
    let one = deflate(&vec![0; 1 << 20]);
    // The repeated unit must end on a complete block: keep the sync marker.
    let mut unit = one.clone();
    unit.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut bomb = unit.repeat(copies);
    bomb.truncate(bomb.len() - 4);
    bomb
}

#[test]
fn decompression_bomb_is_stopped_at_the_limit() {
    let config = deflate_on();
    let max = config.max_message_size;
    // About 1 KiB that inflates to 1 MiB... and a frame of ~1 MiB that inflates to
    // 1 GiB (DEFLATE cannot do better than ~1:1032).
    let small = zeros_bomb(1);
    assert!(small.len() < 2048, "{}", small.len());
    let huge = zeros_bomb(1000);
    assert!(huge.len() <= config.max_frame_size, "{}", huge.len());
    for (bomb, limit) in [(&small, 64 * 1024), (&huge, max)] {
        for text in [false, true] {
            let config = Config {
                max_message_size: limit,
                ..deflate_on()
            };
            let mut conn = deflate_server(config);
            let opcode = if text { OpCode::Text } else { OpCode::Binary };
            let input = frame(true, 0b100, opcode, bomb, Some(MASK));
            // The peer's bytes arrive as a socket would deliver them.
            let mut peak = 0;
            for piece in input.chunks(64 * 1024) {
                conn.handle_bytes(piece);
                peak = peak.max(conn.buffered_bytes());
            }
            let events = events(&mut conn);
            let [Event::Failed(ProtocolError::MessageTooLarge { len, max })] = &events[..] else {
                panic!("{events:?}");
            };
            assert_eq!(*max, limit);
            // Inflation stopped as soon as it passed the limit...
            assert_eq!(*len as usize, limit + 1);
            // ...and the memory held never went much past the limit: the message
            // itself, one step of output, the decompressor.
            assert!(peak <= 2 * limit + 128 * 1024, "peak {peak} for limit {limit}");
            let out = transmitted(&mut conn);
            assert_eq!(u16::from_be_bytes([out[2], out[3]]), 1009);
            // After the failure the decompressor is gone.
            assert!(conn.buffered_bytes() <= 2 * limit + 1024);
        }
    }
}

#[test]
fn fragmented_bomb_is_stopped_too() {
    let config = deflate_on();
    let bomb = zeros_bomb(8);
    let mut input = Vec::new();
    let pieces: Vec<&[u8]> = bomb.chunks(100).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let (rsv, opcode) = if i == 0 {
            (0b100, OpCode::Binary)
        } else {
            (0, OpCode::Continuation)
        };
        input.extend(frame(i + 1 == pieces.len(), rsv, opcode, piece, Some(MASK)));
    }
    let err = assert_fails(&mut deflate_server(config), &input, CloseCode::MESSAGE_TOO_BIG);
    assert!(matches!(err, ProtocolError::MessageTooLarge { len, .. } if len == (1 << 20) + 1));
}

#[test]
fn client_refuses_invalid_deflate_answers() {
    let config = deflate_on();
    for answer in [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; mystery",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate, permessage-deflate",
    ] {
        let mut request = ClientRequest::new("h", "/", [3; 16]);
        request.extensions = DeflateParams::client_offer(&config);
        let (mut client, bytes) = ClientHandshake::new(&config, request).unwrap();
        let request = ServerHandshake::new(&config)
            .handle_bytes(&bytes)
            .unwrap()
            .unwrap();
        let response = request.accept(&Accept::new().with_extensions(answer)).unwrap();
        let err = client.handle_bytes(&response).unwrap_err();
        assert!(err.to_string().contains("permessage-deflate"), "{answer}: {err}");
    }
}
