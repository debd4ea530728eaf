//! Differential property tests against `tungstenite`, a widely used implementation:
//! the same bytes, read by both under arbitrary read splits, must give the same
//! messages and the same verdict; and what either side writes, the other must read
//! back as sent. A disagreement is a bug in one of the two (so far, never theirs).
//!
//! Known, deliberate differences are kept out of the generated space and listed here:
//! tungstenite answers a close frame carrying a forbidden code by delivering it and
//! replying 1002 (we fail the connection with 1002), and it accepts non-minimal
//! length encodings (we refuse them, RFC 6455 §5.2 "the minimal number of bytes
//! MUST be used"). Both are covered by the RFC tests in `rfc6455.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use proptest::prelude::*;
use tungstenite::protocol::frame::coding::{Data as TData, OpCode as TOpCode};
use tungstenite::protocol::frame::Frame as TFrame;
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::{Error as TError, Message as TMessage};
use ws_proto::frame::SeededMasks;
use ws_proto::{Config, Connection, Event, Role};

const LIMIT: usize = 200_000;

/// What a reader saw, in a form both implementations map to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// How a reader failed the connection, as its close code.
type Verdict = Option<u16>;

/// A frame to put on the wire, faults allowed.
#[derive(Debug, Clone)]
struct RawFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl RawFrame {
    fn new(fin: bool, opcode: u8, payload: Vec<u8>, masked: bool) -> Self {
        Self {
            fin,
            rsv: 0,
            opcode,
            masked,
            payload,
        }
    }

    /// A minimal reference encoder, independent of both implementations.
    fn encode(&self, out: &mut Vec<u8>, mask: [u8; 4]) {
        out.push(u8::from(self.fin) << 7 | self.rsv << 4 | self.opcode);
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= 0xffff {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&mask);
            out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(&self.payload);
        }
    }
}

/// A stream that hands out its input in the given split and records what is written.
struct SplitStream {
    chunks: VecDeque<Vec<u8>>,
    written: Vec<u8>,
}

impl SplitStream {
    fn new(input: &[u8], splits: &[usize]) -> Self {
        Self {
            chunks: split(input, splits).into_iter().map(<[u8]>::to_vec).collect(),
            written: Vec::new(),
        }
    }
}

impl Read for SplitStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(chunk) = self.chunks.front_mut() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        Ok(n)
    }
}

impl Write for SplitStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn split<'a>(input: &'a [u8], splits: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    let mut sizes = splits.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&usize::MAX)).clamp(1, rest.len());
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces
}

fn our_config() -> Config {
    Config {
        max_fragments: usize::MAX,
        ..Config::default().with_max_message_size(LIMIT)
    }
}

fn their_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(LIMIT))
        .max_frame_size(Some(LIMIT))
}

fn our_connection(role: Role) -> Connection {
    match role {
        Role::Server => Connection::server(our_config()),
        Role::Client => Connection::client(our_config(), SeededMasks::new(99)),
    }
}

fn read_ours(role: Role, input: &[u8], splits: &[usize]) -> (Vec<Seen>, Verdict) {
    let mut conn = our_connection(role);
    let mut seen = Vec::new();
    for piece in split(input, splits) {
        conn.handle_bytes(piece);
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Text(t) => seen.push(Seen::Text(t)),
                Event::Binary(b) => seen.push(Seen::Binary(b.to_vec())),
                Event::Ping(b) => seen.push(Seen::Ping(b.to_vec())),
                Event::Pong(b) => seen.push(Seen::Pong(b.to_vec())),
                Event::Close(f) => seen.push(Seen::Close(f.code.map(|c| (c.0, f.reason)))),
                Event::Failed(err) => return (seen, Some(err.close_code().0)),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    (seen, None)
}

fn read_theirs(role: Role, input: &[u8], splits: &[usize]) -> (Vec<Seen>, Verdict) {
    let role = match role {
        Role::Server => TRole::Server,
        Role::Client => TRole::Client,
    };
    let mut ws = WebSocket::from_raw_socket(SplitStream::new(input, splits), role, Some(their_config()));
    let mut seen = Vec::new();
    loop {
        match ws.read() {
            Ok(TMessage::Text(t)) => seen.push(Seen::Text(t.as_str().to_owned())),
            Ok(TMessage::Binary(b)) => seen.push(Seen::Binary(b.to_vec())),
            Ok(TMessage::Ping(b)) => seen.push(Seen::Ping(b.to_vec())),
            Ok(TMessage::Pong(b)) => seen.push(Seen::Pong(b.to_vec())),
            Ok(TMessage::Close(f)) => {
                seen.push(Seen::Close(
                    f.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                ));
                return (seen, None);
            }
            Ok(TMessage::Frame(_)) => unreachable!("tungstenite never reads raw frames"),
            Err(TError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return (seen, None),
            Err(TError::Protocol(_)) => return (seen, Some(1002)),
            Err(TError::Utf8(_)) => return (seen, Some(1007)),
            Err(TError::Capacity(_)) => return (seen, Some(1009)),
            Err(other) => panic!("unexpected tungstenite error {other:?}"),
        }
    }
}

// ------------------------------------------------------------------ generators

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..20,
        1 => Just(125usize),
        1 => Just(126usize),
        1 => Just(127usize),
        1 => Just(65_535usize),
        1 => Just(65_536usize),
        1 => 100usize..70_000,
    ]
}

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..max_chars).prop_map(|c| c.into_iter().collect()),
        payload_len().prop_map(|n| "é".repeat(n / 2)),
    ]
}

#[derive(Debug, Clone)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=125)
}

fn message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        3 => text(40).prop_map(Msg::Text),
        3 => payload_len().prop_map(|n| Msg::Binary((0..n).map(|i| i as u8).collect())),
        1 => control_payload().prop_map(Msg::Ping),
        1 => control_payload().prop_map(Msg::Pong),
    ]
}

/// A faulty frame that both implementations must refuse, with its close code.
fn fault() -> impl Strategy<Value = (RawFrame, u16)> {
    prop_oneof![
        (1u8..8).prop_map(|rsv| (
            RawFrame {
                rsv,
                ..RawFrame::new(true, 1, b"x".to_vec(), true)
            },
            1002
        )),
        prop_oneof![3u8..8, 11u8..16].prop_map(|op| (RawFrame::new(true, op, vec![], true), 1002)),
        Just((RawFrame::new(false, 9, vec![], true), 1002)),
        Just((RawFrame::new(true, 9, vec![0; 126], true), 1002)),
        Just((RawFrame::new(true, 0, b"c".to_vec(), true), 1002)),
        Just((RawFrame::new(true, 1, vec![b'a', 0xff, b'b'], true), 1007)),
        Just((RawFrame::new(true, 1, vec![0xed, 0xa0, 0x80], true), 1007)),
        Just((RawFrame::new(true, 2, vec![0; LIMIT + 1], true), 1009)),
    ]
}

/// Frames for a list of messages: data messages cut into `fragments` pieces, with
/// the following control message slipped between two fragments when there is one.
fn frames_for(messages: &[(Msg, usize)], masked: bool) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    for (msg, fragments) in messages {
        let (opcode, payload) = match msg {
            Msg::Text(t) => (1, t.as_bytes().to_vec()),
            Msg::Binary(b) => (2, b.clone()),
            Msg::Ping(p) => {
                frames.push(RawFrame::new(true, 9, p.clone(), masked));
                continue;
            }
            Msg::Pong(p) => {
                frames.push(RawFrame::new(true, 10, p.clone(), masked));
                continue;
            }
        };
        let size = payload.len().div_ceil(*fragments).max(1);
        let pieces: Vec<_> = payload.chunks(size).collect();
        if pieces.len() <= 1 {
            frames.push(RawFrame::new(true, opcode, payload.clone(), masked));
            continue;
        }
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 { opcode } else { 0 };
            frames.push(RawFrame::new(i + 1 == pieces.len(), op, piece.to_vec(), masked));
            if i == 0 {
                // A control frame in the middle of a fragmented message.
                frames.push(RawFrame::new(true, 10, b"mid".to_vec(), masked));
            }
        }
    }
    frames
}

fn encode_all(frames: &[RawFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        frame.encode(&mut out, (i as u32).wrapping_mul(0x9E37_79B9).to_be_bytes());
    }
    out
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..4, 1usize..200, 1usize..100_000], 1..8)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The same bytes, read by both under independent splits: same messages, same verdict.
    #[test]
    fn same_bytes_same_messages_and_verdict(
        role in role(),
        messages in proptest::collection::vec((message(), 1usize..4), 0..6),
        fault in proptest::option::of(fault()),
        close in proptest::option::of(prop_oneof![Just(1000u16), Just(1001), Just(3000), Just(4999)]),
        our_splits in splits(),
        their_splits in splits(),
    ) {
        // Frames toward a server are masked, toward a client not.
        let masked = role == Role::Server;
        let mut frames = frames_for(&messages, masked);
        let mut expected_verdict = None;
        if let Some((mut frame, code)) = fault {
            frame.masked = masked;
            frames.push(frame);
            expected_verdict = Some(code);
        }
        if let Some(code) = close {
            frames.push(RawFrame::new(true, 8, code.to_be_bytes().to_vec(), masked));
        }
        let input = encode_all(&frames);
        let ours = read_ours(role, &input, &our_splits);
        let theirs = read_theirs(role, &input, &their_splits);
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(ours.1, expected_verdict);
    }

    /// A frame masked the wrong way for the reader's role fails both with 1002.
    #[test]
    fn wrong_masking_is_refused_by_both(role in role(), msg in message(), our_splits in splits()) {
        let masked = role == Role::Client;
        let input = encode_all(&frames_for(&[(msg, 1)], masked));
        let ours = read_ours(role, &input, &our_splits);
        let theirs = read_theirs(role, &input, &our_splits);
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(ours.1, Some(1002));
    }

    /// What tungstenite writes (with its own fragmentation), we read back as sent.
    #[test]
    fn we_read_what_tungstenite_writes(
        role in role(),
        messages in proptest::collection::vec((message(), 1usize..4), 0..6),
        our_splits in splits(),
    ) {
        // tungstenite plays the other role and writes.
        let their_role = if role == Role::Server { TRole::Client } else { TRole::Server };
        let mut ws = WebSocket::from_raw_socket(SplitStream::new(&[], &[1]), their_role, Some(their_config()));
        let mut expected = Vec::new();
        for (msg, fragments) in &messages {
            match msg {
                Msg::Text(t) if *fragments > 1 && t.len() > 1 => {
                    let (a, b) = t.as_bytes().split_at(t.len() / 2);
                    ws.write(TMessage::Frame(TFrame::message(a.to_vec(), TOpCode::Data(TData::Text), false))).unwrap();
                    ws.write(TMessage::Frame(TFrame::message(b.to_vec(), TOpCode::Data(TData::Continue), true))).unwrap();
                    expected.push(Seen::Text(t.clone()));
                }
                Msg::Text(t) => {
                    ws.write(TMessage::text(t.clone())).unwrap();
                    expected.push(Seen::Text(t.clone()));
                }
                Msg::Binary(b) => {
                    ws.write(TMessage::binary(b.clone())).unwrap();
                    expected.push(Seen::Binary(b.clone()));
                }
                Msg::Ping(p) => {
                    ws.write(TMessage::Ping(p.clone().into())).unwrap();
                    expected.push(Seen::Ping(p.clone()));
                }
                Msg::Pong(p) => {
                    ws.write(TMessage::Pong(p.clone().into())).unwrap();
                    expected.push(Seen::Pong(p.clone()));
                }
            }
        }
        ws.close(None).ok();
        ws.flush().ok();
        expected.push(Seen::Close(None));
        let written = std::mem::take(&mut ws.get_mut().written);
        let ours = read_ours(role, &written, &our_splits);
        prop_assert_eq!(ours, (expected, None));
    }

    /// What we write (fragmented or not), tungstenite reads back as sent.
    #[test]
    fn tungstenite_reads_what_we_write(
        role in role(),
        messages in proptest::collection::vec(message(), 0..6),
        fragment_size in proptest::option::of(1usize..300),
        their_splits in splits(),
    ) {
        let config = Config { send_fragment_size: fragment_size, ..our_config() };
        let mut conn = match role {
            Role::Server => Connection::server(config),
            Role::Client => Connection::client(config, SeededMasks::new(5)),
        };
        let mut expected = Vec::new();
        for msg in &messages {
            match msg {
                Msg::Text(t) => { conn.send_text(t).unwrap(); expected.push(Seen::Text(t.clone())); }
                Msg::Binary(b) => { conn.send_binary(b).unwrap(); expected.push(Seen::Binary(b.clone())); }
                Msg::Ping(p) => { conn.send_ping(p).unwrap(); expected.push(Seen::Ping(p.clone())); }
                Msg::Pong(p) => { conn.send_pong(p).unwrap(); expected.push(Seen::Pong(p.clone())); }
            }
        }
        conn.close(ws_proto::CloseCode::NORMAL, "done").unwrap();
        expected.push(Seen::Close(Some((1000, "done".into()))));
        let mut written = Vec::new();
        while let Some(chunk) = conn.poll_transmit() {
            written.extend_from_slice(&chunk);
        }
        // tungstenite reads in the other role.
        let their_role = if role == Role::Server { Role::Client } else { Role::Server };
        let theirs = read_theirs(their_role, &written, &their_splits);
        prop_assert_eq!(theirs, (expected, None));
    }
}
