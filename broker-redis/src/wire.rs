//! How a publication travels through Redis: the channel names it, the message carries
//! the rest.
//!
//! Channels: `{prefix}:all`, `{prefix}:room:{room}` (subscribed only by nodes with
//! members in the room) and `{prefix}:direct` (to a user or a session: every node
//! subscribes, the nodes that hold them deliver). Message: a version byte (1; 2 for a
//! volatile publication, laid out the same, so that a node too old to know volatile
//! publications drops them rather than putting them in session streams), the
//! publishing node (8 bytes, big-endian), the session to leave out (a flag byte, then
//! 16 bytes when set); on `direct`, the target (0, the user id's length in 2 bytes and
//! its UTF-8; or 1 and the session id in 16 bytes); then the envelope prefix as the
//! engine encoded it.
//!
//! A publication that carries its MessagePack form too ([`Publication::msgpack`]) is
//! version 3 (4 when volatile), laid out as 1 (2) up to the target, then the JSON
//! prefix's length (4 bytes, big-endian), the JSON prefix, and the MessagePack prefix
//! to the end. A node that reads only versions 1 and 2 drops those; a publication
//! without the MessagePack form is still written as 1 or 2, so that such nodes read
//! everything until MessagePack clients appear.
//!
//! `{prefix}:codecs` carries which nodes have MessagePack connections: version 1, the
//! node (8 bytes), a flag byte (bit 0: it has MessagePack connections; bit 1: every
//! node that has some is asked to say so, sent by a broker that has just connected).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ws_session::{Publication, PublishTarget, RoomOffset, SessionId, UserId};

const VERSION: u8 = 1;
const VERSION_VOLATILE: u8 = 2;
const VERSION_MSGPACK: u8 = 3;
const VERSION_VOLATILE_MSGPACK: u8 = 4;
const HEADER: usize = 1 + 8 + 1;
const CODECS_VERSION: u8 = 1;
const HAS_MSGPACK: u8 = 1;
const ASK: u8 = 2;

/// The channel of a target.
pub(crate) fn channel(prefix: &str, target: &PublishTarget) -> Option<String> {
    match target {
        PublishTarget::All => Some(all_channel(prefix)),
        PublishTarget::Room(room) => Some(room_channel(prefix, room)),
        PublishTarget::User(_) | PublishTarget::Session(_) => Some(direct_channel(prefix)),
        // A kind of target this backend does not know: not sent rather than misrouted.
        _ => None,
    }
}

pub(crate) fn all_channel(prefix: &str) -> String {
    format!("{prefix}:all")
}

pub(crate) fn direct_channel(prefix: &str) -> String {
    format!("{prefix}:direct")
}

pub(crate) fn room_channel(prefix: &str, room: &str) -> String {
    format!("{prefix}:room:{room}")
}

/// The stream that keeps a room's history: each entry is one publication's message
/// (field `m`), its id the publication's offset.
pub(crate) fn history_key(prefix: &str, room: &str) -> String {
    format!("{prefix}:history:{room}")
}

/// Beside a room's history stream: the newest id trimmed from it. A key family of its
/// own (`history-trim`, not a suffix of the history key): a room name is any text, so
/// `{history}:trimmed` was also the history stream of the room `{room}:trimmed`, and
/// trimming one room overwrote the other's stream with a string.
pub(crate) fn trim_key(prefix: &str, room: &str) -> String {
    format!("{prefix}:history-trim:{room}")
}

/// A stream entry id, `ms-seq`, as an offset.
pub(crate) fn parse_offset(id: &str) -> Option<RoomOffset> {
    let (ms, seq) = id.split_once('-')?;
    Some(RoomOffset(ms.parse().ok()?, seq.parse().ok()?))
}

/// A message on a room channel published with history: `{offset} ` then the
/// message. Returns the offset and the message; `None` for a message without one.
pub(crate) fn split_offset(message: &[u8]) -> Option<(RoomOffset, &[u8])> {
    if !message.first()?.is_ascii_digit() {
        return None;
    }
    let space = message.iter().position(|b| *b == b' ')?;
    let offset = parse_offset(std::str::from_utf8(&message[..space]).ok()?)?;
    Some((offset, &message[space + 1..]))
}

pub(crate) fn codecs_channel(prefix: &str) -> String {
    format!("{prefix}:codecs")
}

/// What a node says on the codecs channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodecNotice {
    /// The node it is about.
    pub(crate) node: u64,
    /// Whether it has MessagePack connections.
    pub(crate) msgpack: bool,
    /// Whether every node with MessagePack connections should say so.
    pub(crate) ask: bool,
}

impl CodecNotice {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.push(CODECS_VERSION);
        out.extend_from_slice(&self.node.to_be_bytes());
        out.push(if self.msgpack { HAS_MSGPACK } else { 0 } | if self.ask { ASK } else { 0 });
        out
    }

    /// `None` for a message this version cannot read.
    pub(crate) fn decode(message: &[u8]) -> Option<Self> {
        match message {
            [CODECS_VERSION, node @ .., flags] if node.len() == 8 => Some(Self {
                node: u64::from_be_bytes(node.try_into().ok()?),
                msgpack: flags & HAS_MSGPACK != 0,
                ask: flags & ASK != 0,
            }),
            _ => None,
        }
    }
}

/// The message for `publication` from `node`.
pub(crate) fn encode(node: u64, publication: &Publication) -> Vec<u8> {
    let msgpack = publication.msgpack.as_deref();
    let len = HEADER + 16 + 16 + 4 + publication.prefix.len() + msgpack.map_or(0, <[u8]>::len);
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(match (publication.volatile, msgpack.is_some()) {
        (false, false) => VERSION,
        (true, false) => VERSION_VOLATILE,
        (false, true) => VERSION_MSGPACK,
        (true, true) => VERSION_VOLATILE_MSGPACK,
    });
    out.put_u64(node);
    match publication.except {
        Some(session) => {
            out.put_u8(1);
            out.put_u128(session.0);
        }
        None => out.put_u8(0),
    }
    match &publication.target {
        PublishTarget::User(user) => {
            out.put_u8(0);
            let id = user.as_str().as_bytes();
            // Cut rather than misread past 64 KiB (no user id is that long).
            let len = id.len().min(usize::from(u16::MAX));
            out.put_u16(len as u16);
            out.put_slice(&id[..len]);
        }
        PublishTarget::Session(session) => {
            out.put_u8(1);
            out.put_u128(session.0);
        }
        _ => {}
    }
    if let Some(msgpack) = msgpack {
        // A prefix over 4 GiB cannot be published anyway (Redis refuses 512 MiB).
        out.put_u32(u32::try_from(publication.prefix.len()).unwrap_or(u32::MAX));
        out.put_slice(&publication.prefix);
        out.put_slice(msgpack);
    } else {
        out.put_slice(&publication.prefix);
    }
    out.to_vec()
}

/// A message read back: the publishing node and the publication, or `None` for a
/// message this version cannot read (another version, or not ours). A room message
/// published with history carries its offset in front (see [`split_offset`]).
pub(crate) fn decode(prefix: &str, channel: &str, message: &[u8]) -> Option<(u64, Publication)> {
    match split_offset(message) {
        Some((offset, message)) if channel.starts_with(&room_channel(prefix, "")) => {
            decode_plain(prefix, channel, message).map(|(node, p)| (node, p.at(offset)))
        }
        _ => decode_plain(prefix, channel, message),
    }
}

fn decode_plain(prefix: &str, channel: &str, message: &[u8]) -> Option<(u64, Publication)> {
    let direct = channel == direct_channel(prefix);
    let mut target = if direct || channel == all_channel(prefix) {
        PublishTarget::All
    } else {
        let room = channel.strip_prefix(prefix)?.strip_prefix(":room:")?;
        PublishTarget::Room(Arc::from(room))
    };
    let (&version, rest) = message.split_first()?;
    if !(VERSION..=VERSION_VOLATILE_MSGPACK).contains(&version) || rest.len() < HEADER - 1 {
        return None;
    }
    let node = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let (except, mut body) = match rest[8] {
        0 => (None, &rest[9..]),
        1 if rest.len() >= 9 + 16 => {
            let id = u128::from_be_bytes(rest[9..25].try_into().ok()?);
            (Some(SessionId(id)), &rest[25..])
        }
        _ => return None,
    };
    if direct {
        let (&kind, rest) = body.split_first()?;
        match kind {
            0 if rest.len() >= 2 => {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let id = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
                target = PublishTarget::User(UserId::new(id));
                body = &rest[2 + len..];
            }
            1 if rest.len() >= 16 => {
                target = PublishTarget::Session(SessionId(u128::from_be_bytes(rest[..16].try_into().ok()?)));
                body = &rest[16..];
            }
            _ => return None,
        }
    }
    let (json, msgpack) = match version {
        VERSION_MSGPACK | VERSION_VOLATILE_MSGPACK => {
            let len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
            let json = body.get(4..4 + len)?;
            (json, Some(Bytes::copy_from_slice(&body[4 + len..])))
        }
        _ => (body, None),
    };
    let json = Bytes::copy_from_slice(json);
    let publication = match version {
        VERSION_VOLATILE | VERSION_VOLATILE_MSGPACK => Publication::new_volatile(target, except, json),
        _ => Publication::new(target, except, json),
    };
    Some((node, publication.with_msgpack(msgpack)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_rooms_share_a_key() {
        // Room names are any text: names that look like another key's suffix or
        // family must still get keys of their own (a trim mark once was the history
        // key of `{room}:trimmed`).
        let rooms = [
            "v",
            "v:trimmed",
            "v:history-trim",
            "history-trim:v",
            ":v",
            "v:",
            "",
            "history:v",
            "a:b:c",
        ];
        let mut keys = std::collections::HashSet::new();
        for room in rooms {
            for key in [history_key("t", room), trim_key("t", room)] {
                assert!(keys.insert(key.clone()), "{key} is the key of two things");
            }
        }
        assert_eq!(keys.len(), 2 * rooms.len());
    }

    #[test]
    fn a_publication_round_trips() {
        for (target, except) in [
            (PublishTarget::All, None),
            (
                PublishTarget::Room(Arc::from("lobby:1")),
                Some(SessionId(0xfeed_beef)),
            ),
            (PublishTarget::User(UserId::new("alice")), Some(SessionId(3))),
            (PublishTarget::User(UserId::new("")), None),
            (PublishTarget::Session(SessionId(u128::MAX - 1)), None),
        ] {
            let prefix = Bytes::from_static(br#"{"v":"1.0","e":"x""#);
            let channel = channel("t", &target).unwrap();
            let msgpack = Some(Bytes::from_static(&[0x83, 0xa1, 0x76, 0xa3, 0x31, 0x2e, 0x30]));
            for publication in [
                Publication::new(target.clone(), except, prefix.clone()),
                Publication::new_volatile(target.clone(), except, prefix.clone()),
                Publication::new(target.clone(), except, prefix.clone()).with_msgpack(msgpack.clone()),
                Publication::new_volatile(target.clone(), except, prefix.clone())
                    .with_msgpack(msgpack.clone()),
            ] {
                let message = encode(42, &publication);
                assert_eq!(decode("t", &channel, &message), Some((42, publication)));
            }
        }
    }

    #[test]
    fn a_room_message_with_history_carries_its_offset() {
        let room = Publication::new(
            PublishTarget::Room(Arc::from("r")),
            None,
            Bytes::from_static(b"{}"),
        );
        let mut message = b"1733270400123-7 ".to_vec();
        message.extend(encode(5, &room));
        let (node, got) = decode("t", "t:room:r", &message).unwrap();
        assert_eq!((node, got.offset), (5, Some(RoomOffset(1_733_270_400_123, 7))));
        assert_eq!(got.prefix, room.prefix);
        assert_eq!(parse_offset("12-x"), None);
        assert_eq!(split_offset(b"12-3"), None, "no space: not an offset");
    }

    #[test]
    fn what_is_not_ours_is_ignored() {
        let message = encode(1, &Publication::new(PublishTarget::All, None, Bytes::new()));
        assert_eq!(decode("t", "other:all", &message), None);
        assert_eq!(decode("t", "t:all", &[2, 0, 0]), None);
        assert_eq!(
            decode("t", "t:all", &[5, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            None,
            "a later version"
        );
        // Version 3 whose JSON length runs past the end.
        assert_eq!(
            decode("t", "t:all", &[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 9, b'{']),
            None
        );
        assert_eq!(decode("t", "t:all", &[]), None);
        let mut truncated = encode(
            1,
            &Publication::new(PublishTarget::All, Some(SessionId(7)), Bytes::new()),
        );
        truncated.truncate(12);
        assert_eq!(decode("t", "t:all", &truncated), None);
        let user = Publication::new(PublishTarget::User(UserId::new("bob")), None, Bytes::new());
        let mut cut = encode(1, &user);
        cut.truncate(cut.len() - 1);
        assert_eq!(decode("t", "t:direct", &cut), None, "a user id cut short");
        let session_cut = [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 7];
        assert_eq!(
            decode("t", "t:direct", &session_cut),
            None,
            "a session id cut short"
        );
        assert_eq!(decode("t", "t:direct", &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9]), None);
    }

    /// Versions 1 and 2 read as before (no MessagePack form); a publication without
    /// the form is still written as them, one with it as 3 or 4.
    #[test]
    fn older_versions_stay_readable_and_are_still_written() {
        let prefix = Bytes::from_static(br#"{"v":"1.0","e":"x""#);
        let mut v1 = vec![1, 0, 0, 0, 0, 0, 0, 0, 9, 0];
        v1.extend_from_slice(&prefix);
        let (node, read) = decode("t", "t:all", &v1).unwrap();
        assert_eq!((node, read.msgpack.clone(), read.volatile), (9, None, false));
        assert_eq!(read.prefix, prefix);
        assert_eq!(encode(9, &read), v1);
        let packed = read.clone().with_msgpack(Some(Bytes::from_static(&[0x80])));
        assert_eq!(encode(9, &packed)[0], 3);
        let volatile = Publication::new_volatile(PublishTarget::All, None, prefix);
        assert_eq!(encode(9, &volatile)[0], 2);
        assert_eq!(encode(9, &volatile.with_msgpack(Some(Bytes::new())))[0], 4);
    }

    #[test]
    fn codec_notices_round_trip() {
        for (msgpack, ask) in [(false, false), (true, false), (false, true), (true, true)] {
            let notice = CodecNotice {
                node: 0x0102_0304_0506_0708,
                msgpack,
                ask,
            };
            assert_eq!(CodecNotice::decode(&notice.encode()), Some(notice));
        }
        assert_eq!(CodecNotice::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 1]), None);
        assert_eq!(CodecNotice::decode(&[1, 0, 0, 1]), None);
    }
}
