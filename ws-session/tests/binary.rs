//! Connections that negotiated the binary (MessagePack) envelope, driven on the engine
//! directly: frames of the codec in and out, the other kind refused, a broadcast
//! encoded once per codec in use, resumes across codecs.

use std::time::Instant;

use bytes::Bytes;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use ws_proto::envelope::msgpack::encode_msgpack_serialize;
use ws_proto::envelope::{sys, Codec, MsgPackEnvelope, OutgoingEnvelope, Payload};
use ws_proto::Message;
use ws_session::{Action, ConnectionId, ConnectionInfo, Engine, EngineConfig, ErrorCode, SessionId};

struct Server {
    engine: Engine,
    now: Instant,
    /// Every frame sent, per connection, in order.
    sent: Vec<(ConnectionId, Message)>,
    events: Vec<ws_session::InboundEvent>,
    /// `(codec, recipients)` of each broadcast action.
    broadcasts: Vec<(Codec, usize)>,
    /// What the engine published for other nodes.
    published: Vec<ws_session::Publication>,
}

impl Server {
    fn new() -> Self {
        Self::with_config(EngineConfig::default())
    }

    fn with_config(config: EngineConfig) -> Self {
        // The fake clock starts from a real instant: `Instant` cannot be built otherwise.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            engine: Engine::new(config, ChaCha20Rng::seed_from_u64(7)).unwrap(),
            now,
            sent: Vec::new(),
            events: Vec::new(),
            broadcasts: Vec::new(),
            published: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Transmit { connection, message } => {
                    self.sent.push((connection, message.to_message()))
                }
                Action::TransmitBroadcast {
                    prefix,
                    codec,
                    recipients,
                } => {
                    self.broadcasts.push((codec, recipients.len()));
                    for &(connection, seq) in &recipients {
                        let message = ws_session::OutboundMessage::new(prefix.clone(), Some(seq), codec);
                        self.sent.push((connection, message.to_message()));
                    }
                }
                Action::TransmitMany { connections, message } => {
                    self.broadcasts.push((message.codec, connections.len()));
                    for connection in connections {
                        self.sent.push((connection, message.to_message()));
                    }
                }
                Action::Event(event) => self.events.push(event),
                Action::Publish(publication) => self.published.push(publication),
                // Every credential is the user of that name.
                Action::Authenticate(request) => {
                    let user = ws_session::UserId::new(request.token.clone());
                    self.engine
                        .handle_auth_result(self.now, request.id, Ok(user))
                        .unwrap();
                }
                _ => {}
            }
        }
    }

    fn open(&mut self, codec: Codec) -> (ConnectionId, SessionId) {
        let info = ConnectionInfo::with_token("alice").with_codec(codec);
        let cid = self.engine.handle_connection_opened(self.now, info);
        self.drain();
        (cid, self.engine.session_of(cid).expect("a session"))
    }

    fn send(&mut self, cid: ConnectionId, message: Message) {
        self.engine.handle_message(self.now, cid, message);
        self.drain();
    }

    /// The frames `cid` got, decoded as JSON values, after `from` frames; panics on a
    /// frame of the wrong kind for `codec`.
    fn received(&self, cid: ConnectionId, codec: Codec) -> Vec<serde_json::Value> {
        self.sent
            .iter()
            .filter(|(c, _)| *c == cid)
            .map(|(_, message)| match (message, codec) {
                (Message::Text(text), Codec::Json) => serde_json::from_str(text).unwrap(),
                (Message::Binary(bytes), Codec::MsgPack) => {
                    let env = MsgPackEnvelope::decode(bytes, &ws_proto::Config::default()).unwrap();
                    serde_json::from_str(&env.to_json().unwrap()).unwrap()
                }
                (other, codec) => panic!("{codec:?} connection got {other:?}"),
            })
            .collect()
    }

    fn last_error(&self, cid: ConnectionId, codec: Codec) -> u64 {
        let got = self.received(cid, codec);
        let last = got.last().expect("a message");
        assert_eq!(last["e"], sys::ERROR, "{last}");
        last["p"]["code"].as_u64().unwrap()
    }
}

fn binary<T: Serialize>(event: &str, payload: &T, c: Option<&str>) -> Message {
    let mut env = OutgoingEnvelope::new(event);
    env.correlation_id = c;
    let mut out = Vec::new();
    encode_msgpack_serialize(&env, payload, &mut out).unwrap();
    Message::Binary(Bytes::from(out))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Upload {
    name: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[test]
fn a_msgpack_connection_speaks_binary_and_its_events_keep_their_bytes() {
    let mut server = Server::new();
    let (cid, sid) = server.open(Codec::MsgPack);
    // sys.session.created, in MessagePack with the JSON envelope's fields.
    let created = &server.received(cid, Codec::MsgPack)[0];
    assert_eq!(created["e"], sys::SESSION_CREATED);
    assert_eq!(created["p"]["sessionId"], sid.to_string());

    let upload = Upload {
        name: "pic".into(),
        data: vec![0, 1, 2, 255],
    };
    server.send(cid, binary("upload", &upload, Some("u1")));
    let event = server.events.pop().expect("the event reached the application");
    assert_eq!((event.event(), event.correlation_id()), ("upload", Some("u1")));
    assert_eq!(event.codec(), Codec::MsgPack);
    assert_eq!(event.payload_as::<Upload>().unwrap(), upload);
    // The raw JSON view is not there for binary; the transcoded one is.
    assert_eq!(event.payload(), None);
    assert_eq!(
        event.payload_json().unwrap().as_deref(),
        Some(r#"{"name":"pic","data":[0,1,2,255]}"#)
    );

    // sys.ping → sys.pong, in binary.
    server.send(cid, binary(sys::PING, &(), Some("p1")));
    let pong = server.received(cid, Codec::MsgPack).pop().unwrap();
    assert_eq!((&pong["e"], &pong["c"]), (&sys::PONG.into(), &"p1".into()));
}

#[test]
fn a_frame_of_the_other_kind_is_refused_and_the_connection_stays() {
    let mut server = Server::new();
    let (json, _) = server.open(Codec::Json);
    let (packed, _) = server.open(Codec::MsgPack);
    server.send(json, binary("chat", &1, None));
    assert_eq!(
        server.last_error(json, Codec::Json),
        u64::from(ErrorCode::BINARY_NOT_SUPPORTED.0)
    );
    server.send(packed, Message::Text(r#"{"v":"1","e":"chat"}"#.into()));
    assert_eq!(
        server.last_error(packed, Codec::MsgPack),
        u64::from(ErrorCode::TEXT_NOT_SUPPORTED.0)
    );
    // Malformed MessagePack: 4014, with where.
    server.send(packed, Message::Binary(Bytes::from_static(&[0x81, 0xc1])));
    assert_eq!(server.last_error(packed, Codec::MsgPack), 4014);
    assert!(server.events.is_empty());
    // Both still serve envelopes of their codec.
    server.send(packed, binary("chat", &1, None));
    server.send(json, Message::Text(r#"{"v":"1","e":"chat","p":2}"#.into()));
    let got: Vec<u64> = server.events.iter().map(|e| e.payload_as().unwrap()).collect();
    assert_eq!(got, [1, 2]);
}

#[test]
fn a_broadcast_is_encoded_once_per_codec_in_use() {
    let mut server = Server::new();
    let conns: Vec<_> = [
        Codec::Json,
        Codec::MsgPack,
        Codec::MsgPack,
        Codec::Json,
        Codec::MsgPack,
    ]
    .into_iter()
    .map(|codec| (codec, server.open(codec)))
    .collect();
    server.sent.clear();
    let env = OutgoingEnvelope::new("news").with_payload(Payload::from_json(r#"{"h":"hi"}"#).unwrap());
    let now = server.now;
    assert_eq!(server.engine.broadcast(now, &env), 5);
    server.drain();
    // One action per codec, each carrying its recipients.
    let mut broadcasts = server.broadcasts.clone();
    broadcasts.sort_by_key(|(codec, _)| *codec == Codec::MsgPack);
    assert_eq!(broadcasts, [(Codec::Json, 2), (Codec::MsgPack, 3)]);
    for (codec, (cid, _)) in &conns {
        let got = server.received(*cid, *codec);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["p"]["h"], "hi");
        assert_eq!(got[0]["s"], 1);
    }

    // Volatile messages too; an audience of one codec is one action.
    server.broadcasts.clear();
    let typing = OutgoingEnvelope::new("typing");
    server.engine.broadcast_volatile(now, None, &typing);
    server.drain();
    let mut broadcasts = server.broadcasts.clone();
    broadcasts.sort_by_key(|(codec, _)| *codec == Codec::MsgPack);
    assert_eq!(broadcasts, [(Codec::Json, 2), (Codec::MsgPack, 3)]);
    let mut packed_only = Server::new();
    let (a, _) = packed_only.open(Codec::MsgPack);
    let (b, _) = packed_only.open(Codec::MsgPack);
    packed_only.engine.broadcast(now, &env);
    packed_only.drain();
    assert_eq!(packed_only.broadcasts, [(Codec::MsgPack, 2)]);
    assert_eq!(packed_only.received(a, Codec::MsgPack).len(), 2);
    assert_eq!(packed_only.received(b, Codec::MsgPack).len(), 2);
}

/// Resumes `sid` (token from the connection's `sys.session.created`) on a new
/// connection of `codec`, asking for what came after `last_seq`.
fn resume(
    server: &mut Server,
    from: (ConnectionId, Codec),
    sid: SessionId,
    last_seq: u64,
    codec: Codec,
) -> ConnectionId {
    let created = &server.received(from.0, from.1)[0];
    let token = created["p"]["resumeToken"].as_str().unwrap().to_owned();
    server.engine.handle_connection_closed(server.now, from.0);
    server.drain();
    // Messages while it is suspended: replayed on resume.
    let now = server.now;
    for n in ["1", "2", "3"] {
        let env = OutgoingEnvelope::new("tick").with_payload(Payload::from_json(n).unwrap());
        server.engine.send(now, sid, &env).unwrap();
    }
    server.drain();
    // Authenticated in the handshake: a fresh session, replaced by the resume.
    let info = ConnectionInfo::with_token("alice").with_codec(codec);
    let cid = server.engine.handle_connection_opened(now, info);
    server.drain();
    let request = serde_json::json!({
        "sessionId": sid.to_string(),
        "resumeToken": token,
        "lastSeq": last_seq,
    });
    let message = match codec {
        Codec::MsgPack => binary(sys::RECONNECT_REQUEST, &request, Some("r1")),
        _ => Message::Text(
            serde_json::json!({"v": "1", "e": sys::RECONNECT_REQUEST, "p": request, "c": "r1"}).to_string(),
        ),
    };
    server.send(cid, message);
    cid
}

#[test]
fn a_session_resumes_on_a_connection_of_the_other_codec_with_its_replay_converted() {
    for (first, then) in [(Codec::Json, Codec::MsgPack), (Codec::MsgPack, Codec::Json)] {
        let mut server = Server::new();
        let (cid, sid) = server.open(first);
        let now = server.now;
        server
            .engine
            .send(
                now,
                sid,
                &OutgoingEnvelope::new("tick").with_payload(Payload::Trusted("0")),
            )
            .unwrap();
        server.drain();
        let resumed = resume(&mut server, (cid, first), sid, 1, then);
        let got = server.received(resumed, then);
        let restored = got.iter().position(|m| m["e"] == sys::SESSION_RESTORED);
        let restored = restored.unwrap_or_else(|| panic!("{first:?} → {then:?}: {got:?}"));
        let ticks: Vec<_> = got[restored + 1..]
            .iter()
            .map(|m| (m["p"].as_u64().unwrap(), m["s"].as_u64().unwrap()))
            .collect();
        assert_eq!(ticks, [(1, 2), (2, 3), (3, 4)], "{first:?} → {then:?}");
    }
}

#[test]
fn a_payload_given_in_msgpack_keeps_its_bytes_and_json_connections_get_the_json_form() {
    let mut server = Server::new();
    let (cid, sid) = server.open(Codec::MsgPack);
    let upload = Upload {
        name: "pic".into(),
        data: vec![7, 0, 255],
    };
    let packed = rmp_serde::to_vec_named(&upload).unwrap();
    let json = serde_json::to_string(&upload).unwrap();
    let env = OutgoingEnvelope::new("file").with_payload(Payload::Trusted(&json));
    let now = server.now;
    server.engine.send_with_msgpack(now, sid, &env, &packed).unwrap();
    server.drain();
    // The frame carries `bin`: the bytes-only field of `Upload` reads it.
    let Some((_, Message::Binary(frame))) = server.sent.iter().rev().find(|(c, _)| *c == cid) else {
        panic!("a binary frame");
    };
    let decoded = MsgPackEnvelope::decode(frame, &ws_proto::Config::default()).unwrap();
    assert_eq!(decoded.payload_as::<Upload>().unwrap(), upload);
    assert!(
        frame.windows(5).any(|w| w == [0xc4, 3, 7, 0, 255]),
        "bin 8 of 3 bytes"
    );

    // Resumed on a JSON connection: the JSON form, bytes as numbers.
    let resumed = resume(&mut server, (cid, Codec::MsgPack), sid, 0, Codec::Json);
    let got = server.received(resumed, Codec::Json);
    let file = got.iter().find(|m| m["e"] == "file").expect("the replayed file");
    assert_eq!(file["p"]["data"], serde_json::json!([7, 0, 255]));
}

/// `bin 8` of `data` somewhere in `frame`.
fn has_bin(frame: &[u8], data: &[u8]) -> bool {
    let mut bin = vec![0xc4, data.len() as u8];
    bin.extend_from_slice(data);
    frame.windows(bin.len()).any(|w| w == bin.as_slice())
}

/// The binary frames `cid` got.
fn binary_frames(server: &Server, cid: ConnectionId) -> Vec<Bytes> {
    server
        .sent
        .iter()
        .filter_map(|(c, m)| match m {
            Message::Binary(b) if *c == cid => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// A broadcast whose payload was given in both codecs: MessagePack recipients get
/// `bin` (the binary form made once, one action per codec), JSON ones the array; the
/// publication for other nodes carries the binary form, and a node that receives it
/// sends it as it is; a replay on this node keeps `bin`; volatile sends too.
#[test]
fn a_broadcast_given_in_both_codecs_keeps_bytes_for_msgpack_everywhere() {
    let config = EngineConfig {
        publish_broadcasts: true,
        ..EngineConfig::default()
    };
    let mut here = Server::with_config(config.clone());
    let (packed, packed_sid) = here.open(Codec::MsgPack);
    let (json, json_sid) = here.open(Codec::Json);
    let (other_packed, _) = here.open(Codec::MsgPack);
    let now = here.now;
    for sid in [packed_sid, json_sid] {
        here.engine.join_room(now, sid, "r").unwrap();
    }
    let upload = Upload {
        name: "pic".into(),
        data: vec![9, 0, 255],
    };
    let packed_payload = rmp_serde::to_vec_named(&upload).unwrap();
    let json_payload = serde_json::to_string(&upload).unwrap();
    let both = Payload::Both {
        json: &json_payload,
        msgpack: &packed_payload,
    };
    let env = OutgoingEnvelope::new("file").with_payload(both);
    assert_eq!(here.engine.broadcast_room(now, "r", &env, None), 2);
    here.drain();
    let mut broadcasts = here.broadcasts.clone();
    broadcasts.sort_by_key(|(codec, _)| *codec == Codec::MsgPack);
    assert_eq!(broadcasts, [(Codec::Json, 1), (Codec::MsgPack, 1)]);
    let frames = binary_frames(&here, packed);
    let last = frames.last().unwrap();
    assert!(has_bin(last, &[9, 0, 255]), "{last:x?}");
    let got = here.received(json, Codec::Json);
    assert_eq!(got.last().unwrap()["p"]["data"], serde_json::json!([9, 0, 255]));
    let publication = here.published.pop().expect("published");
    let carried = publication.msgpack.clone().expect("the binary form travels");
    assert!(has_bin(&carried, &[9, 0, 255]));

    // Another node delivers the publication's binary form to its MessagePack member.
    let mut there = Server::with_config(config);
    let (remote_packed, remote_sid) = there.open(Codec::MsgPack);
    let (remote_json, remote_json_sid) = there.open(Codec::Json);
    for sid in [remote_sid, remote_json_sid] {
        there.engine.join_room(now, sid, "r").unwrap();
    }
    there.engine.handle_remote_publish(now, &publication);
    there.drain();
    let frames = binary_frames(&there, remote_packed);
    assert!(has_bin(frames.last().unwrap(), &[9, 0, 255]));
    let got = there.received(remote_json, Codec::Json);
    assert_eq!(got.last().unwrap()["p"]["data"], serde_json::json!([9, 0, 255]));
    // Without the binary form (an older node's publication), it is made from JSON.
    let old = ws_session::Publication::new(publication.target.clone(), None, publication.prefix.clone());
    there.engine.handle_remote_publish(now, &old);
    there.drain();
    let frames = binary_frames(&there, remote_packed);
    assert!(!has_bin(frames.last().unwrap(), &[9, 0, 255]));

    // To all but one, volatile: the same.
    let before = (
        binary_frames(&here, packed).len(),
        binary_frames(&here, other_packed).len(),
    );
    here.engine
        .send_volatile(now, ws_session::PublishTarget::All, &env, Some(packed_sid));
    here.drain();
    assert_eq!(binary_frames(&here, packed).len(), before.0, "left out");
    let frames = binary_frames(&here, other_packed);
    assert_eq!(frames.len(), before.1 + 1);
    assert!(has_bin(frames.last().unwrap(), &[9, 0, 255]));
    let volatile = here.published.pop().unwrap();
    assert!(volatile.volatile && has_bin(volatile.msgpack.as_ref().unwrap(), &[9, 0, 255]));

    // Replayed on a new MessagePack connection of this node: still `bin`.
    let resumed = resume(&mut here, (packed, Codec::MsgPack), packed_sid, 0, Codec::MsgPack);
    let frames = binary_frames(&here, resumed);
    assert!(
        frames.iter().any(|f| has_bin(f, &[9, 0, 255])),
        "the replay keeps the binary form"
    );
}

/// A payload given as JSON only changes nothing: no binary form is made for a
/// JSON-only audience, nor published.
#[test]
fn a_json_only_broadcast_makes_no_binary_form() {
    let config = EngineConfig {
        publish_broadcasts: true,
        ..EngineConfig::default()
    };
    let mut server = Server::with_config(config);
    server.open(Codec::Json);
    let now = server.now;
    let env = OutgoingEnvelope::new("n").with_payload(Payload::Trusted("[1,2]"));
    server.engine.broadcast(now, &env);
    server.drain();
    assert!(server.published.pop().unwrap().msgpack.is_none());
}
