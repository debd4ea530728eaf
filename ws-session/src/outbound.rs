//! Outbound messages: a shared encoded prefix plus the recipient's sequence number.

use bytes::{Bytes, BytesMut};
use ws_proto::envelope::msgpack::{
    encode_msgpack_prefix, encode_msgpack_prefix_serialize, msgpack_seq_suffix_len, write_msgpack_seq_suffix,
};
use ws_proto::envelope::{write_seq_suffix, Codec, OutgoingEnvelope, Payload};
use ws_proto::Message;

/// One message for one connection: the envelope encoded up to (not including) `s`,
/// shared by every recipient of a broadcast that speaks the same codec, and this
/// recipient's sequence number (`None` for messages outside the session stream:
/// `sys.*` control events). Cloning costs a refcount (two for a shared reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The envelope without `s`, in `codec`: for JSON `{"v":"1.0","e":…` up to the `s`
    /// field and the closing brace ([`OutgoingEnvelope::encode_prefix`]); for
    /// MessagePack the map, its header already counting `s` when `seq` is set
    /// ([`encode_msgpack_prefix`]).
    pub prefix: Bytes,
    /// JSON only: this recipient's own fields between a shared `prefix` and `s` —
    /// `,"c":"…"` of a reply whose event and payload many sessions' replies share
    /// ([`SharedPrefix`]). Empty for every other message, and always for MessagePack
    /// (whose `prefix` is the whole map but `s`).
    pub tail: Bytes,
    /// The session sequence number `s` of this recipient's copy.
    pub seq: Option<u64>,
    /// The connection's codec: JSON in a text frame, MessagePack in a binary frame.
    pub codec: Codec,
}

impl OutboundMessage {
    /// A message of `prefix` (whole but for `s`) and `seq` in `codec`, with no tail:
    /// what a transport makes of [`Action::TransmitBroadcast`](crate::Action::TransmitBroadcast)
    /// for each recipient.
    pub fn new(prefix: Bytes, seq: Option<u64>, codec: Codec) -> Self {
        Self {
            prefix,
            tail: Bytes::new(),
            seq,
            codec,
        }
    }

    /// Appends the whole envelope (prefix, tail and the `s` ending of its codec) to
    /// `out`; returns the number of bytes written. This is the payload of one WebSocket
    /// frame (text for JSON, binary for MessagePack).
    pub fn write_to(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&self.prefix);
        self.write_end(out);
        out.len() - start
    }

    /// Appends what follows the prefix, this recipient's own bytes: the tail and the
    /// `s` ending of the codec. A transport that queues the shared prefix by reference
    /// copies only these.
    pub fn write_end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tail);
        write_suffix(self.codec, out, self.seq);
    }

    /// [`write_to`](Self::write_to) from the parts, for a transport that has a
    /// broadcast's shared prefix and each recipient's `s` (no message built, no
    /// refcount taken per recipient).
    pub fn write_parts(codec: Codec, prefix: &[u8], seq: Option<u64>, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(prefix);
        write_suffix(codec, out, seq);
        out.len() - start
    }

    /// Length of the whole envelope, in bytes.
    pub fn len(&self) -> usize {
        self.tail.len() + Self::encoded_len(self.codec, &self.prefix, self.seq)
    }

    /// Always `false`: an envelope is never empty. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole envelope as a WebSocket message of its codec's kind.
    pub fn to_message(&self) -> Message {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out);
        match self.codec {
            Codec::MsgPack => Message::Binary(out.into()),
            _ => Message::Text(
                String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// The whole envelope as JSON text, for tests and logs (a binary envelope is
    /// transcoded; one that cannot be shows as its bytes' lossy text).
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out);
        if self.codec == Codec::MsgPack {
            let config = ws_proto::Config {
                max_envelope_depth: usize::MAX,
                ..ws_proto::Config::default()
            };
            if let Some(text) = ws_proto::envelope::MsgPackEnvelope::decode(&out, &config)
                .ok()
                .and_then(|env| env.to_json().ok())
            {
                return text;
            }
        }
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    pub(crate) fn encoded_len(codec: Codec, prefix: &[u8], seq: Option<u64>) -> usize {
        prefix.len()
            + match codec {
                Codec::MsgPack => msgpack_seq_suffix_len(seq),
                _ => json_suffix_len(seq),
            }
    }

    /// The length of a JSON envelope from its prefix length (with its tail's): what
    /// replay buffers count.
    pub(crate) fn json_len(prefix_len: usize, seq: Option<u64>) -> usize {
        prefix_len + json_suffix_len(seq)
    }
}

/// An envelope encoded up to `s` outside the engine (JSON): its event, payload, `c`
/// and `t` as the engine would encode them, sent with
/// [`Engine::send_encoded`](crate::Engine::send_encoded). It lets whoever makes a
/// message serialize its payload straight into the envelope, where it runs (a
/// handler's task), instead of into a string the engine then copies (the driver's
/// replies on JSON connections: two allocations and a copy fewer per reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrefix(Bytes);

impl EncodedPrefix {
    /// The prefix of `envelope`, its payload in its JSON form (a MessagePack
    /// connection gets it transcoded, as any payload given as JSON only).
    pub fn new(envelope: &OutgoingEnvelope<'_>) -> Self {
        let json = envelope.payload.as_json().map_or(Payload::None, Payload::Trusted);
        let envelope = OutgoingEnvelope {
            payload: json,
            ..*envelope
        };
        let mut out = BytesMut::with_capacity(envelope.size_hint());
        envelope.encode_prefix(&mut out);
        Self(out.freeze())
    }

    /// The prefix of `envelope` with `payload` serialized as `p`; the serializer's
    /// error when it does not serialize.
    pub fn serialize<T: serde::Serialize + ?Sized>(
        envelope: &OutgoingEnvelope<'_>,
        payload: &T,
    ) -> Result<Self, serde_json::Error> {
        let mut out = BytesMut::with_capacity(envelope.size_hint() + 32);
        envelope.encode_prefix_serialize(payload, &mut out)?;
        Ok(Self(out.freeze()))
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// An envelope's event and payload encoded once for the replies of many sessions
/// (`{"v":"1.0","e":…,"p":…`, JSON): each reply made of it adds only its own `c` and
/// `s` ([`Engine::send_shared`](crate::Engine::send_shared)), and the replay buffers
/// that hold those replies share its bytes instead of a copy each. Made for answers
/// that many sessions get alike: a room's member list in every join reply, a game's
/// state. Cloning costs a refcount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPrefix(Bytes);

impl SharedPrefix {
    /// The prefix of an envelope with event `event` and `payload` (its JSON form: a
    /// MessagePack connection gets it transcoded, as any payload given as JSON only).
    pub fn new(event: &str, payload: Payload<'_>) -> Self {
        let EncodedPrefix(bytes) = EncodedPrefix::new(&OutgoingEnvelope::new(event).with_payload(payload));
        Self(bytes)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

/// Appends the end of a prefix in `codec`: `,"s":N}` / `}` for JSON, `s` for MessagePack.
pub(crate) fn write_suffix(codec: Codec, out: &mut Vec<u8>, seq: Option<u64>) {
    match codec {
        Codec::MsgPack => write_msgpack_seq_suffix(out, seq),
        _ => write_seq_suffix(out, seq),
    }
}

fn json_suffix_len(seq: Option<u64>) -> usize {
    seq.map_or(1, |s| 6 + decimal_len(s))
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Encodes the engine's envelopes.
///
/// What outlives its write gets a buffer of its own, sized to it: a message of a
/// session stream stays in replay buffers until acknowledged (for a suspended
/// session, the whole resume window), a volatile message is shared by every
/// recipient's queue. A `Bytes` cut from a shared buffer would keep the whole buffer
/// alive: one small message held for a resume held the 64 KiB block it was encoded
/// in (`tests/replay_memory.rs` measured 67 KB per suspended session holding 34
/// bytes), so what a replay buffer counts would not bound what it holds. Those buffers
/// come from a [`BufferPool`] that freed replay slots return theirs to, so a steady
/// stream of messages allocates nothing.
///
/// Control messages (`sys.*` to one connection, outside the stream) are written once
/// and dropped: those are cut from one growing block (`BytesMut` reclaims it once
/// every cut is dropped), which is also the scratch space for payloads of unknown size.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    buf: BytesMut,
}

/// Block size the encoder grows by.
const BLOCK: usize = 64 * 1024;

impl Encoder {
    /// The JSON prefix of `env` in a buffer of its own from `pool`.
    pub(crate) fn prefix(&mut self, pool: &mut BufferPool, env: &OutgoingEnvelope<'_>) -> Bytes {
        let mut own = pool.take(env.size_hint());
        env.encode_prefix(&mut own);
        own.freeze()
    }

    /// The JSON prefix of `env` with `payload` serialized as `p`, in a buffer of its
    /// own: serialized in the block (its size is not known before), then copied out.
    pub(crate) fn prefix_with<T: serde::Serialize + ?Sized>(
        &mut self,
        pool: &mut BufferPool,
        env: &OutgoingEnvelope<'_>,
        payload: &T,
    ) -> Bytes {
        self.encode_with(env, payload);
        let mut own = pool.take(self.buf.len());
        own.extend_from_slice(&self.buf);
        self.buf.clear();
        own.freeze()
    }

    /// `,"c":"…"`: the tail of a reply made of a [`SharedPrefix`], held beside it by
    /// the replay buffers (so, a buffer of its own too).
    pub(crate) fn correlation_tail(&mut self, pool: &mut BufferPool, correlation_id: &str) -> Bytes {
        let mut own = pool.take(8 + correlation_id.len());
        ws_proto::envelope::write_correlation_id(&mut own, correlation_id);
        own.freeze()
    }

    /// Serializes `env` with `payload` into the block, after what it holds.
    fn encode_with<T: serde::Serialize + ?Sized>(&mut self, env: &OutgoingEnvelope<'_>, payload: &T) {
        self.reserve(env.size_hint() + 128);
        if env.encode_prefix_serialize(payload, &mut self.buf).is_err() {
            // Our own payload structs always serialize; fall back to no payload.
            env.encode_prefix(&mut self.buf);
        }
    }

    /// The prefix of `env` in `codec`, for a message outside the session stream (no
    /// `s`), with `payload` serialized as `p` when given.
    pub(crate) fn control<T: serde::Serialize + ?Sized>(
        &mut self,
        codec: Codec,
        env: &OutgoingEnvelope<'_>,
        payload: Option<&T>,
    ) -> Bytes {
        match codec {
            Codec::MsgPack => {
                let mut out = Vec::with_capacity(env.size_hint() + 64);
                let encoded = match payload {
                    Some(p) => encode_msgpack_prefix_serialize(env, p, false, &mut out),
                    None => encode_msgpack_prefix(env, false, &mut out),
                };
                if encoded.is_err() {
                    // A payload with no MessagePack form: the envelope without it, as
                    // for JSON above.
                    out.clear();
                    let bare = OutgoingEnvelope {
                        payload: Default::default(),
                        ..*env
                    };
                    let _ = encode_msgpack_prefix(&bare, false, &mut out);
                }
                Bytes::from(out)
            }
            _ => {
                match payload {
                    Some(p) => self.encode_with(env, p),
                    None => {
                        self.reserve(env.size_hint());
                        env.encode_prefix(&mut self.buf);
                    }
                }
                self.buf.split().freeze()
            }
        }
    }

    fn reserve(&mut self, need: usize) {
        if self.buf.capacity() < need {
            self.buf.reserve(need.max(BLOCK));
        }
    }
}

/// Buffers for what the engine keeps, in power-of-two sizes from 64 bytes to 16 KiB,
/// taken by the [`Encoder`] and given back by the replay slots that held them
/// ([`PrefixSlab`](crate::replay::PrefixSlab)) once nothing else does. A buffer is at
/// most twice what it holds, so a replay buffer's byte count bounds its memory; a
/// larger message gets an allocation of its exact size and is not kept.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    /// Spare buffers per size class (`64 << class` bytes), each empty.
    spare: [Vec<BytesMut>; CLASSES],
}

/// Size classes: 64 B, 128 B, … 16 KiB.
const CLASSES: usize = 9;
/// The smallest class, in bytes.
const SMALLEST: usize = 64;
/// Spare buffers kept per class: enough for the messages a busy engine frees between
/// two sends, at most 256 × 16 KiB = 4 MiB in the largest class.
const SPARE_PER_CLASS: usize = 256;

impl BufferPool {
    /// An empty buffer with room for `need` bytes.
    pub(crate) fn take(&mut self, need: usize) -> BytesMut {
        match class_of(need) {
            Some(class) => self.spare[class].pop().unwrap_or_else(|| {
                let mut fresh = BytesMut::with_capacity(SMALLEST << class);
                // Made shared now (an empty split does it), once in the buffer's life:
                // the `Bytes` frozen from it then clone by a count, and give their
                // buffer back still shared. A buffer frozen unshared is made shared by
                // its first clone, and unshared again when taken back (`try_into_mut`),
                // which cost an allocation per message.
                drop(fresh.split_to(0));
                fresh
            }),
            None => BytesMut::with_capacity(need),
        }
    }

    /// Takes back the buffer of `bytes` when nothing else holds it and it is one of
    /// the pool's sizes (a message that outgrew its buffer, by escapes, is not).
    pub(crate) fn give_back(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let Ok(mut buf) = bytes.try_into_mut() else {
            return;
        };
        let capacity = buf.capacity();
        let Some(class) = class_of(capacity).filter(|&c| SMALLEST << c == capacity) else {
            return;
        };
        if self.spare[class].len() < SPARE_PER_CLASS {
            buf.clear();
            self.spare[class].push(buf);
        }
    }
}

/// The smallest class that holds `need` bytes, if one does.
fn class_of(need: usize) -> Option<usize> {
    let size = need.max(SMALLEST).next_power_of_two();
    let class = (size / SMALLEST).trailing_zeros() as usize;
    (class < CLASSES).then_some(class)
}

/// The binary prefix of `env`, its map counting `s` when `with_seq`, when its payload
/// was given in MessagePack too ([`Payload::Both`](ws_proto::envelope::Payload::Both)):
/// made once per message, for every MessagePack recipient and for other nodes. `None`
/// for a payload given as JSON only: then the binary form, when some connection needs
/// it, is made from the JSON prefix ([`msgpack_prefix_of`]).
pub(crate) fn own_msgpack_prefix(env: &OutgoingEnvelope<'_>, with_seq: bool) -> Option<Bytes> {
    env.payload.as_msgpack()?;
    let mut out = Vec::with_capacity(env.size_hint());
    encode_msgpack_prefix(env, with_seq, &mut out).ok()?;
    Some(Bytes::from(out))
}

/// The binary prefix, with `s` counted, of a message held as the JSON `prefix`. A JSON
/// prefix this engine did not make valid JSON (a [`Payload::Trusted`] text that is not
/// JSON) has no binary form: it goes out without its payload, which a JSON peer would
/// have refused anyway.
///
/// [`Payload::Trusted`]: ws_proto::envelope::Payload::Trusted
pub(crate) fn msgpack_stream_prefix(json_prefix: &[u8]) -> Bytes {
    msgpack_prefix_of(json_prefix, true)
}

/// [`msgpack_stream_prefix`], its map counting `s` only `with_seq` (a volatile message
/// has none).
pub(crate) fn msgpack_prefix_of(json_prefix: &[u8], with_seq: bool) -> Bytes {
    let mut out = Vec::with_capacity(json_prefix.len());
    let convert = ws_proto::envelope::msgpack::json_prefix_to_msgpack;
    if convert(json_prefix, with_seq, &mut out).is_err() {
        out.clear();
        let _ = convert(&bare_prefix(json_prefix), with_seq, &mut out);
    }
    Bytes::from(out)
}

/// `{"v":"1.0","e":…}` of a JSON prefix whose payload could not be read: the event
/// name is the prefix's first string after `"e":`.
fn bare_prefix(json_prefix: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        e: std::borrow::Cow<'a, str>,
    }
    // `{"v":"1.0","e":"name"` then `,"p":` …: cut at the first field after `e`.
    let text = String::from_utf8_lossy(json_prefix);
    let event = text
        .find(",\"p\":")
        .and_then(|end| {
            let head = format!("{}}}", &text[..end]);
            serde_json::from_str::<Event<'_>>(&head)
                .ok()
                .map(|e| e.e.into_owned())
        })
        .unwrap_or_else(|| "sys.error".to_owned());
    let mut out = Vec::new();
    OutgoingEnvelope::new(&event).encode_prefix(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_matches_written_bytes_in_both_codecs() {
        let mut enc = Encoder::default();
        let env = OutgoingEnvelope::new("chat");
        let json = enc.prefix(&mut BufferPool::default(), &env);
        let msgpack = msgpack_stream_prefix(&json);
        for seq in [
            None,
            Some(1),
            Some(9),
            Some(10),
            Some(127),
            Some(128),
            Some(12345),
            Some(u64::MAX),
        ] {
            for (codec, prefix) in [(Codec::Json, &json), (Codec::MsgPack, &msgpack)] {
                let m = OutboundMessage::new(prefix.clone(), seq, codec);
                let mut out = Vec::new();
                assert_eq!(m.write_to(&mut out), m.len());
                assert_eq!(out.len(), m.len());
            }
        }
        assert_eq!(
            OutboundMessage::new(json, Some(3), Codec::Json).to_text(),
            r#"{"v":"1.0","e":"chat","s":3}"#
        );
        let binary = OutboundMessage::new(msgpack, Some(3), Codec::MsgPack);
        assert!(matches!(binary.to_message(), Message::Binary(_)));
        assert_eq!(binary.to_text(), r#"{"v":"1.0","e":"chat","s":3}"#);
    }

    #[test]
    fn what_outlives_its_write_has_its_own_allocation_and_control_messages_share_the_block() {
        let (mut enc, mut pool) = (Encoder::default(), BufferPool::default());
        let env = OutgoingEnvelope::new("chat");
        let control = enc.control::<()>(Codec::Json, &env, None);
        let block_left = enc.buf.capacity();
        // Stream and volatile prefixes, reply tails, serialized payloads: none is cut
        // from the block (held in a replay buffer, it would keep the block alive).
        let stream = enc.prefix(&mut pool, &env);
        let tail = enc.correlation_tail(&mut pool, "c1");
        let error = enc.prefix_with(&mut pool, &OutgoingEnvelope::new("sys.error"), &[1, 2]);
        assert_eq!(enc.buf.capacity(), block_left, "the block is untouched");
        assert_eq!(stream, control, "the same bytes either way");
        assert_eq!(&tail[..], br#","c":"c1""#);
        assert_eq!(&error[..], br#"{"v":"1.0","e":"sys.error","p":[1,2]"#);
        // Control messages keep coming from the block.
        let next = enc.control(Codec::Json, &env, Some(&3));
        assert_eq!(&next[..], br#"{"v":"1.0","e":"chat","p":3"#);
        assert_eq!(enc.buf.capacity(), block_left - next.len());
    }

    #[test]
    fn the_pool_hands_out_buffers_at_most_twice_the_need_and_takes_back_only_free_ones() {
        let mut pool = BufferPool::default();
        for (need, capacity) in [(0, 64), (64, 64), (65, 128), (16 * 1024, 16 * 1024)] {
            assert_eq!(pool.take(need).capacity(), capacity, "need {need}");
        }
        // Larger than the largest class: exactly its size, never kept.
        let large = pool.take(20_000);
        assert_eq!(large.capacity(), 20_000);
        pool.give_back(Bytes::from(vec![1; 20_000]));
        assert!(pool.spare.iter().all(Vec::is_empty));

        let mut buf = pool.take(100);
        buf.extend_from_slice(b"held");
        let bytes = buf.freeze();
        let clone = bytes.clone();
        // Still held elsewhere (a queued write): not taken back.
        pool.give_back(bytes);
        assert!(pool.spare[1].is_empty());
        // The last holder gives it back; the next take of its class reuses it, empty.
        let at = clone.as_ptr();
        pool.give_back(clone);
        assert_eq!(pool.spare[1].len(), 1);
        let again = pool.take(128);
        assert_eq!((again.as_ptr(), again.len(), again.capacity()), (at, 0, 128));
    }

    #[test]
    fn a_trusted_payload_that_is_not_json_goes_out_binary_without_it() {
        let env = OutgoingEnvelope::new("x").with_payload(ws_proto::envelope::Payload::Trusted("{nope"));
        let json = Encoder::default().prefix(&mut BufferPool::default(), &env);
        let m = OutboundMessage::new(msgpack_stream_prefix(&json), Some(1), Codec::MsgPack);
        assert_eq!(m.to_text(), r#"{"v":"1.0","e":"x","s":1}"#);
    }
}
