//! How the Redis session store writes journal entries and records: hand-rolled bytes
//! behind a version byte.
//!
//! Why not serde: the types are ws-session's Sans-IO core types, which stay free of a
//! serialization framework; the store is the only reader of these bytes (a private
//! format, versioned so that it can change); and message bytes (the bulk of a record)
//! are stored as they are, not escaped into JSON or base64. Integers are big-endian,
//! strings and byte strings are a `u32` length then the bytes.
//!
//! A *chunk* is one append of one session: the version byte, then its entries, each a
//! tag byte and its fields. A *snapshot* is a folded [`SessionRecord`]: the version
//! byte, then its fields in declaration order (an ended record is never stored).
//!
//! A message with its MessagePack form ([`JournalEntry::Message`]'s `msgpack`) is a
//! tag of its own in a chunk, and needs snapshot version 3; without it, chunks and
//! snapshots are written as before (tag 6, version 2), byte for byte, so a JSON-only
//! cluster's records stay readable by an older node. An older node cannot read a
//! record holding the new tag or version (it refuses the resume, as for any record it
//! cannot read): upgrade every node before MessagePack clients connect, as for the
//! pub/sub wire.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ws_session::{JournalEntry, RoomOffset, SessionRecord, TokenVerifier, UserId};

const VERSION: u8 = 1;
/// Snapshots: 2 adds the rooms' history positions after `attached`; 1 is still read.
const RECORD_VERSION: u8 = 2;
/// Snapshots: 3 is 2 with each replayed message followed by its MessagePack form, if
/// any (a byte 0, or 1 then the bytes); written only when some message has one.
const RECORD_VERSION_MSGPACK: u8 = 3;

const CREATED: u8 = 1;
const TOKEN: u8 = 2;
const CONFIRMED: u8 = 3;
const JOINED: u8 = 4;
const LEFT: u8 = 5;
const MESSAGE: u8 = 6;
const TRIMMED: u8 = 7;
const ATTACHED: u8 = 8;
const SUSPENDED: u8 = 9;
const ENDED: u8 = 10;
const ROOM_POSITION: u8 = 11;
/// A message with its MessagePack form: `seq`, the JSON prefix, the binary prefix.
const MESSAGE_BOTH: u8 = 12;

/// Bytes this version cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A kind of journal entry this version of the store does not know (ws-session is
/// newer than broker-redis): the append is refused rather than stored without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownEntry(pub(crate) String);

/// The chunk for `entries`.
pub(crate) fn encode_chunk(entries: &[JournalEntry]) -> Result<Vec<u8>, UnknownEntry> {
    let mut out = BytesMut::with_capacity(
        1 + entries
            .iter()
            .map(|e| match e {
                JournalEntry::Message { prefix, msgpack, .. } => {
                    13 + prefix.len() + msgpack.as_ref().map_or(0, |m| 4 + m.len())
                }
                _ => 40,
            })
            .sum::<usize>(),
    );
    out.put_u8(VERSION);
    for entry in entries {
        match entry {
            JournalEntry::Created {
                user,
                anonymous,
                token,
            } => {
                out.put_u8(CREATED);
                put_str(&mut out, user.as_str().as_bytes());
                out.put_u8(u8::from(*anonymous));
                out.put_slice(&token.0);
            }
            JournalEntry::Token { token, previous } => {
                out.put_u8(TOKEN);
                out.put_slice(&token.0);
                put_verifier(&mut out, previous.as_ref());
            }
            JournalEntry::Confirmed => out.put_u8(CONFIRMED),
            JournalEntry::Joined(room) => {
                out.put_u8(JOINED);
                put_str(&mut out, room.as_bytes());
            }
            JournalEntry::Left(room) => {
                out.put_u8(LEFT);
                put_str(&mut out, room.as_bytes());
            }
            JournalEntry::Message {
                seq,
                prefix,
                msgpack: None,
            } => {
                out.put_u8(MESSAGE);
                out.put_u64(*seq);
                put_str(&mut out, prefix);
            }
            JournalEntry::Message {
                seq,
                prefix,
                msgpack: Some(msgpack),
            } => {
                out.put_u8(MESSAGE_BOTH);
                out.put_u64(*seq);
                put_str(&mut out, prefix);
                put_str(&mut out, msgpack);
            }
            JournalEntry::Trimmed { first } => {
                out.put_u8(TRIMMED);
                out.put_u64(*first);
            }
            JournalEntry::Attached => out.put_u8(ATTACHED),
            JournalEntry::Suspended => out.put_u8(SUSPENDED),
            JournalEntry::Ended => out.put_u8(ENDED),
            JournalEntry::RoomPosition { room, offset } => {
                out.put_u8(ROOM_POSITION);
                put_str(&mut out, room.as_bytes());
                out.put_u64(offset.0);
                out.put_u64(offset.1);
            }
            other => return Err(UnknownEntry(format!("{other:?}"))),
        }
    }
    Ok(out.to_vec())
}

/// The entries of a chunk.
pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<Vec<JournalEntry>, Malformed> {
    let mut r = Reader::new(bytes)?;
    let mut entries = Vec::new();
    while !r.is_empty() {
        entries.push(match r.u8()? {
            CREATED => JournalEntry::Created {
                user: UserId::new(r.string()?),
                anonymous: r.bool()?,
                token: r.verifier()?,
            },
            TOKEN => JournalEntry::Token {
                token: r.verifier()?,
                previous: r.optional_verifier()?,
            },
            CONFIRMED => JournalEntry::Confirmed,
            JOINED => JournalEntry::Joined(Arc::from(r.string()?)),
            LEFT => JournalEntry::Left(Arc::from(r.string()?)),
            MESSAGE => JournalEntry::Message {
                seq: r.u64()?,
                prefix: Bytes::copy_from_slice(r.bytes()?),
                msgpack: None,
            },
            MESSAGE_BOTH => JournalEntry::Message {
                seq: r.u64()?,
                prefix: Bytes::copy_from_slice(r.bytes()?),
                msgpack: Some(Bytes::copy_from_slice(r.bytes()?)),
            },
            TRIMMED => JournalEntry::Trimmed { first: r.u64()? },
            ATTACHED => JournalEntry::Attached,
            SUSPENDED => JournalEntry::Suspended,
            ENDED => JournalEntry::Ended,
            ROOM_POSITION => JournalEntry::RoomPosition {
                room: Arc::from(r.string()?),
                offset: RoomOffset(r.u64()?, r.u64()?),
            },
            _ => return Err(Malformed),
        });
    }
    Ok(entries)
}

/// The snapshot of `record`.
pub(crate) fn encode_record(record: &SessionRecord) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(128 + record.replay_bytes() + 17 * record.replay.len());
    let both = record.replay.iter().any(|(_, _, m)| m.is_some());
    out.put_u8(if both {
        RECORD_VERSION_MSGPACK
    } else {
        RECORD_VERSION
    });
    put_str(&mut out, record.user.as_str().as_bytes());
    out.put_u8(u8::from(record.anonymous));
    out.put_slice(&record.token.0);
    put_verifier(&mut out, record.previous.as_ref());
    out.put_u8(u8::from(record.confirmed));
    out.put_u64(record.next_seq);
    out.put_u32(len(record.rooms.len()));
    for room in &record.rooms {
        put_str(&mut out, room.as_bytes());
    }
    out.put_u32(len(record.replay.len()));
    for (seq, prefix, msgpack) in &record.replay {
        out.put_u64(*seq);
        put_str(&mut out, prefix);
        if both {
            match msgpack {
                Some(msgpack) => {
                    out.put_u8(1);
                    put_str(&mut out, msgpack);
                }
                None => out.put_u8(0),
            }
        }
    }
    out.put_u8(u8::from(record.attached));
    out.put_u32(len(record.room_offsets.len()));
    for (room, offset) in &record.room_offsets {
        put_str(&mut out, room.as_bytes());
        out.put_u64(offset.0);
        out.put_u64(offset.1);
    }
    out.to_vec()
}

/// The record of a snapshot.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<SessionRecord, Malformed> {
    let (version, rest) = bytes.split_first().ok_or(Malformed)?;
    if !(1..=RECORD_VERSION_MSGPACK).contains(version) {
        return Err(Malformed);
    }
    let mut r = Reader { rest };
    let user = UserId::new(r.string()?);
    let anonymous = r.bool()?;
    let token = r.verifier()?;
    // `start` is the only constructor outside ws-session; the fields are then set.
    let mut record = SessionRecord::start(&JournalEntry::Created {
        user,
        anonymous,
        token,
    })
    .ok_or(Malformed)?;
    record.previous = r.optional_verifier()?;
    record.confirmed = r.bool()?;
    record.next_seq = r.u64()?;
    for _ in 0..r.u32()? {
        record.rooms.push(Arc::from(r.string()?));
    }
    for _ in 0..r.u32()? {
        let seq = r.u64()?;
        let prefix = Bytes::copy_from_slice(r.bytes()?);
        let msgpack = match *version {
            RECORD_VERSION_MSGPACK if r.bool()? => Some(Bytes::copy_from_slice(r.bytes()?)),
            _ => None,
        };
        record.replay.push_back((seq, prefix, msgpack));
    }
    record.attached = r.bool()?;
    if *version >= RECORD_VERSION {
        for _ in 0..r.u32()? {
            let room = Arc::from(r.string()?);
            record.room_offsets.push((room, RoomOffset(r.u64()?, r.u64()?)));
        }
    }
    if !r.is_empty() {
        return Err(Malformed);
    }
    Ok(record)
}

fn len(n: usize) -> u32 {
    u32::try_from(n).expect("a record part under 4 GiB")
}

fn put_str(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(len(bytes.len()));
    out.put_slice(bytes);
}

fn put_verifier(out: &mut BytesMut, verifier: Option<&TokenVerifier>) {
    match verifier {
        Some(v) => {
            out.put_u8(1);
            out.put_slice(&v.0);
        }
        None => out.put_u8(0),
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, Malformed> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Self { rest }),
            _ => Err(Malformed),
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed),
        }
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().map_err(|_| Malformed)?,
        ))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| Malformed)?,
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed)
    }

    fn verifier(&mut self) -> Result<TokenVerifier, Malformed> {
        Ok(TokenVerifier(self.take(32)?.try_into().map_err(|_| Malformed)?))
    }

    fn optional_verifier(&mut self) -> Result<Option<TokenVerifier>, Malformed> {
        if self.bool()? {
            Ok(Some(self.verifier()?))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u8) -> TokenVerifier {
        TokenVerifier([n; 32])
    }

    fn journal() -> Vec<JournalEntry> {
        vec![
            JournalEntry::Created {
                user: UserId::new("alice é"),
                anonymous: false,
                token: v(1),
            },
            JournalEntry::Joined("lobby".into()),
            JournalEntry::Joined("r2".into()),
            JournalEntry::RoomPosition {
                room: "r2".into(),
                offset: RoomOffset(1_733_270_400_123, 4),
            },
            JournalEntry::Left("lobby".into()),
            JournalEntry::Message {
                seq: 1,
                prefix: Bytes::from_static(br#"{"v":"1.0","e":"x","p":1"#),
                msgpack: None,
            },
            JournalEntry::Message {
                seq: 2,
                prefix: Bytes::new(),
                msgpack: None,
            },
            JournalEntry::Message {
                seq: 3,
                prefix: Bytes::from_static(br#"{"v":"1.0","e":"f","p":{"data":[1,2]}"#),
                msgpack: Some(Bytes::from_static(
                    b"\x84\xa1v\xa31.0\xa1e\xa1f\xa1p\x81\xa4data\xc4\x02\x01\x02",
                )),
            },
            JournalEntry::Trimmed { first: 2 },
            JournalEntry::Suspended,
            JournalEntry::Token {
                token: v(2),
                previous: Some(v(1)),
            },
            JournalEntry::Token {
                token: v(3),
                previous: None,
            },
            JournalEntry::Attached,
            JournalEntry::Confirmed,
            JournalEntry::Ended,
        ]
    }

    #[test]
    fn chunks_round_trip() {
        let entries = journal();
        assert_eq!(decode_chunk(&encode_chunk(&entries).unwrap()).unwrap(), entries);
        assert_eq!(decode_chunk(&encode_chunk(&[]).unwrap()).unwrap(), []);
    }

    #[test]
    fn records_round_trip() {
        let entries = journal();
        for n in 1..entries.len() {
            let record = SessionRecord::fold(&entries[..n]).unwrap();
            assert_eq!(
                decode_record(&encode_record(&record)).unwrap(),
                record,
                "after {n} entries"
            );
        }
    }

    #[test]
    fn what_this_version_cannot_read_is_refused() {
        let chunk = encode_chunk(&journal()).unwrap();
        let record = encode_record(&SessionRecord::fold(&journal()[..6]).unwrap());
        for cut in 0..record.len() {
            assert_eq!(decode_record(&record[..cut]), Err(Malformed), "cut at {cut}");
        }
        // A chunk cut between entries is a shorter chunk; cut inside one, it fails.
        assert_eq!(decode_chunk(&chunk[..5]), Err(Malformed));
        for cut in 0..chunk.len() {
            let _ = decode_chunk(&chunk[..cut]);
        }
        for bytes in [&chunk, &record] {
            let mut other = bytes.to_vec();
            other[0] = 4;
            assert_eq!(decode_chunk(&other), Err(Malformed));
            assert_eq!(decode_record(&other), Err(Malformed));
        }
        assert_eq!(decode_chunk(&[VERSION, 99]), Err(Malformed));
        let mut long = record.clone();
        long.push(0);
        assert_eq!(decode_record(&long), Err(Malformed));
    }

    fn record_with(journal: &[JournalEntry]) -> SessionRecord {
        SessionRecord::fold(journal).unwrap()
    }

    #[test]
    fn a_message_with_its_msgpack_form_round_trips_and_only_then_changes_the_bytes() {
        let entries = journal();
        let (json_only, both) = (&entries[5], &entries[7]);
        // Without the MessagePack form: tag 6, as before this form existed.
        let chunk = encode_chunk(std::slice::from_ref(json_only)).unwrap();
        assert_eq!(chunk[..2], [VERSION, MESSAGE]);
        let chunk = encode_chunk(std::slice::from_ref(both)).unwrap();
        assert_eq!(chunk[..2], [VERSION, MESSAGE_BOTH]);
        assert_eq!(decode_chunk(&chunk).unwrap(), std::slice::from_ref(both));
        // A snapshot holding it is version 3 and keeps it; once it is trimmed, 2.
        let record = record_with(&entries[..8]);
        assert_eq!(record.replay.len(), 3);
        assert!(record.replay[2].2.is_some());
        let bytes = encode_record(&record);
        assert_eq!(bytes[0], RECORD_VERSION_MSGPACK);
        assert_eq!(decode_record(&bytes).unwrap(), record);
        let mut trimmed = record.clone();
        trimmed.apply(&JournalEntry::Trimmed { first: 4 });
        assert_eq!(encode_record(&trimmed)[0], RECORD_VERSION);
        for cut in 0..bytes.len() {
            assert_eq!(decode_record(&bytes[..cut]), Err(Malformed), "cut at {cut}");
        }
        // The first message's flag byte, right after its prefix: only 0 or 1.
        let mut bad_flag = bytes.clone();
        let first = &record.replay[0].1;
        let flag = bytes.windows(first.len()).position(|w| w == &first[..]).unwrap() + first.len();
        assert_eq!(bad_flag[flag], 0);
        bad_flag[flag] = 2;
        assert_eq!(decode_record(&bad_flag), Err(Malformed));
    }

    #[test]
    fn chunks_and_snapshots_written_before_the_msgpack_form_still_decode() {
        let token = [7u8; 32];
        // A chunk of an older node: Created, then a message (tag 6).
        let mut chunk = vec![VERSION, CREATED, 0, 0, 0, 1, b'a', 0];
        chunk.extend_from_slice(&token);
        chunk.extend_from_slice(&[MESSAGE, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, b'{', b'}']);
        let entries = decode_chunk(&chunk).unwrap();
        assert_eq!(
            entries[1],
            JournalEntry::Message {
                seq: 1,
                prefix: Bytes::from_static(b"{}"),
                msgpack: None,
            }
        );
        assert_eq!(encode_chunk(&entries).unwrap(), chunk, "written as it was");

        // A version 1 snapshot (before room positions), one message held.
        let body = |version: u8| {
            let mut b = vec![version, 0, 0, 0, 1, b'a', 0];
            b.extend_from_slice(&token);
            b.push(0); // no previous token
            b.push(1); // confirmed
            b.extend_from_slice(&2u64.to_be_bytes()); // next_seq
            b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'r']); // rooms: "r"
            b.extend_from_slice(&[0, 0, 0, 1]); // one message
            b.extend_from_slice(&1u64.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 2, b'{', b'}']);
            b.push(1); // attached
            b
        };
        let v1 = body(1);
        let record = decode_record(&v1).unwrap();
        assert_eq!(
            record.replay,
            [(1, Bytes::from_static(b"{}"), None)],
            "{record:?}"
        );
        assert_eq!((record.next_seq, &*record.rooms[0]), (2, "r"));
        assert!(record.room_offsets.is_empty());
        // Version 2: the same and the room positions; written as it was.
        let mut v2 = body(2);
        v2.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'r']);
        v2.extend_from_slice(&5u64.to_be_bytes());
        v2.extend_from_slice(&6u64.to_be_bytes());
        let record = decode_record(&v2).unwrap();
        assert_eq!(record.room_offset("r"), Some(RoomOffset(5, 6)));
        assert_eq!(
            encode_record(&record),
            v2,
            "a JSON-only record is written as before"
        );
    }
}
