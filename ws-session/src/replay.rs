//! Replay buffers: the encoded messages a session was sent and its client has not
//! acknowledged, bounded in messages and in bytes.
//!
//! The prefixes live once, in the engine's [`PrefixSlab`], with a plain reference count
//! per prefix; a session's buffer is a ring of 4-byte slot numbers (the sequence numbers
//! are implicit: consecutive from the front). So a broadcast to N sessions stores one
//! `Bytes` and N slot numbers, and costs no atomic operation per recipient — an atomic
//! increment per recipient (cloning a `Bytes`) would also stall on every cache-missing
//! store before it, which measured as the largest part of a large room broadcast.
//! Replies many sessions get alike (a room's member list in every join reply) cannot
//! share a slot — each has its own `c` — so each has a slot that holds the shared
//! part by reference and its own `,"c":"…"` beside it (`Slot::tail`).
//!
//! A slot holds the message as JSON (the form journals get) and its MessagePack form:
//! made from the payload's own MessagePack form when the application gave one (then
//! at once, and published with the JSON form), else from the JSON form for the first
//! binary connection that needs it; once per message either way, shared by every
//! binary recipient and by replays on binary connections. The byte bound counts the
//! JSON form, whatever the codecs of the connections.

use std::collections::VecDeque;

use bytes::Bytes;
use ws_proto::envelope::Codec;

use crate::outbound::{msgpack_stream_prefix, BufferPool, OutboundMessage};

/// A prefix shared by the replay buffers that hold it.
#[derive(Debug)]
struct Slot {
    prefix: Bytes,
    /// What follows `prefix` in the JSON form of this message alone: `,"c":"…"` of a
    /// reply whose prefix other replies share ([`SharedPrefix`]); empty otherwise.
    ///
    /// [`SharedPrefix`]: crate::SharedPrefix
    tail: Bytes,
    /// The binary form (with `s` counted), made on first use.
    msgpack: Option<Bytes>,
    /// Whether `msgpack` was made from the payload's own MessagePack form (so it
    /// cannot be made again from `prefix`): what a journal carries.
    own: bool,
    /// Replay buffers holding this slot.
    refs: u32,
}

/// The engine's store of encoded prefixes that some replay buffer holds.
#[derive(Debug, Default)]
pub(crate) struct PrefixSlab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The buffers prefixes are encoded in: a freed slot gives its back.
    pub(crate) pool: BufferPool,
}

impl PrefixSlab {
    /// Stores `prefix`, held by the caller until [`PrefixSlab::release`] (so that a
    /// buffer evicting it mid-broadcast cannot free it under the other recipients).
    pub(crate) fn insert(&mut self, prefix: Bytes) -> u32 {
        self.insert_parts(prefix, Bytes::new())
    }

    /// Stores a message made of a shared `prefix` and its own `tail` (JSON), held as
    /// [`insert`](Self::insert).
    pub(crate) fn insert_parts(&mut self, prefix: Bytes, tail: Bytes) -> u32 {
        let slot = Slot {
            prefix,
            tail,
            msgpack: None,
            own: false,
            refs: 1,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The JSON prefix of `slot`, whole (a shared prefix and its tail joined): what
    /// journals and other nodes get.
    pub(crate) fn json_prefix(&self, slot: u32) -> Bytes {
        let s = &self.slots[slot as usize];
        joined(&s.prefix, &s.tail)
    }

    /// Makes the binary form of `slot` from `envelope` (the one its JSON prefix was
    /// encoded from, its payload's own MessagePack form included when it has one),
    /// when it can; otherwise it is made from the JSON prefix on use.
    pub(crate) fn set_msgpack(&mut self, slot: u32, envelope: &ws_proto::envelope::OutgoingEnvelope<'_>) {
        let mut out = Vec::with_capacity(self.slots[slot as usize].prefix.len());
        if ws_proto::envelope::msgpack::encode_msgpack_prefix(envelope, true, &mut out).is_ok() {
            let s = &mut self.slots[slot as usize];
            s.msgpack = Some(Bytes::from(out));
            s.own = envelope.payload.as_msgpack().is_some();
        }
    }

    /// Stores `prefix` (JSON) with `msgpack`, its binary form with `s` counted, when
    /// there is one already (made from the payload's own MessagePack form, here or on
    /// the node that published it, or journaled by the node that sent it); held as
    /// [`insert`](Self::insert).
    pub(crate) fn insert_with(&mut self, prefix: Bytes, msgpack: Option<&Bytes>) -> u32 {
        let slot = self.insert(prefix);
        let s = &mut self.slots[slot as usize];
        s.msgpack = msgpack.cloned();
        s.own = msgpack.is_some();
        slot
    }

    /// The binary form of `slot` when it was made from the payload's own MessagePack
    /// form; `None` when it is made (or was made) from the JSON prefix, which a
    /// journal's reader can do again.
    pub(crate) fn own_msgpack(&self, slot: u32) -> Option<&Bytes> {
        let s = &self.slots[slot as usize];
        s.msgpack.as_ref().filter(|_| s.own)
    }

    /// The prefix of `slot` in `codec` and the tail after it (empty but for a JSON
    /// reply made of a shared prefix), the binary form made the first time it is
    /// asked for.
    pub(crate) fn parts_for(&mut self, slot: u32, codec: Codec) -> (&Bytes, &Bytes) {
        let s = &mut self.slots[slot as usize];
        match codec {
            Codec::MsgPack => {
                let binary = s
                    .msgpack
                    .get_or_insert_with(|| msgpack_stream_prefix(&joined(&s.prefix, &s.tail)));
                (binary, &EMPTY)
            }
            _ => (&s.prefix, &s.tail),
        }
    }

    /// The prefix of a broadcast's `slot` in `codec` (a broadcast has no tail: its
    /// prefix is whole).
    pub(crate) fn prefix_for(&mut self, slot: u32, codec: Codec) -> &Bytes {
        let (prefix, tail) = self.parts_for(slot, codec);
        debug_assert!(tail.is_empty(), "a broadcast's prefix is whole");
        prefix
    }

    /// `slot` as the message `seq` in `codec`.
    pub(crate) fn message(&mut self, slot: u32, codec: Codec, seq: u64) -> OutboundMessage {
        let (prefix, tail) = self.parts_for(slot, codec);
        OutboundMessage {
            prefix: prefix.clone(),
            tail: tail.clone(),
            seq: Some(seq),
            codec,
        }
    }

    /// Drops the inserter's hold: the slot is freed unless a replay buffer holds it.
    pub(crate) fn release(&mut self, slot: u32) {
        self.unhold(slot);
    }

    /// Takes one more hold; returns the JSON prefix length (tail included).
    fn hold(&mut self, slot: u32) -> usize {
        let s = &mut self.slots[slot as usize];
        s.refs += 1;
        s.prefix.len() + s.tail.len()
    }

    /// Drops one holder; returns the JSON prefix length (tail included).
    fn unhold(&mut self, slot: u32) -> usize {
        let s = &mut self.slots[slot as usize];
        s.refs -= 1;
        let len = s.prefix.len() + s.tail.len();
        if s.refs == 0 {
            self.pool.give_back(std::mem::take(&mut s.prefix));
            self.pool.give_back(std::mem::take(&mut s.tail));
            s.msgpack = None;
            s.own = false;
            self.free.push(slot);
        }
        len
    }

    /// Slots in use (for leak checks).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// No tail: what [`PrefixSlab::parts_for`] hands out for a binary form.
static EMPTY: Bytes = Bytes::new();

/// `prefix` and `tail` as one buffer (a copy only when there is a tail).
fn joined(prefix: &Bytes, tail: &Bytes) -> Bytes {
    if tail.is_empty() {
        return prefix.clone();
    }
    let mut whole = Vec::with_capacity(prefix.len() + tail.len());
    whole.extend_from_slice(prefix);
    whole.extend_from_slice(tail);
    Bytes::from(whole)
}

/// One session's unacknowledged messages: slots of consecutive sequence numbers.
#[derive(Debug, Default)]
pub(crate) struct ReplayBuffer {
    /// The `s` of the front entry (meaningful when not empty).
    front_seq: u64,
    slots: VecDeque<u32>,
    /// Encoded bytes held (prefix plus the `,"s":N}` suffix of each message).
    bytes: usize,
}

impl ReplayBuffer {
    /// Appends message `seq` (the next after the back), dropping the oldest ones until
    /// both bounds hold. Returns whether any was dropped.
    pub(crate) fn push(
        &mut self,
        slab: &mut PrefixSlab,
        seq: u64,
        slot: u32,
        max_messages: usize,
        max_bytes: usize,
    ) -> bool {
        if self.slots.is_empty() {
            self.front_seq = seq;
        }
        debug_assert_eq!(seq, self.front_seq + self.slots.len() as u64);
        let len = slab.hold(slot);
        self.bytes += OutboundMessage::json_len(len, Some(seq));
        self.slots.push_back(slot);
        let mut dropped = false;
        while self.slots.len() > max_messages || self.bytes > max_bytes {
            self.pop_front(slab);
            dropped = true;
        }
        dropped
    }

    /// The `s` of the oldest message held, if any.
    pub(crate) fn first(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.front_seq)
    }

    /// The `s` the next pushed message must have, when not empty.
    pub(crate) fn next(&self) -> Option<u64> {
        (!self.slots.is_empty()).then(|| self.front_seq + self.slots.len() as u64)
    }

    fn pop_front(&mut self, slab: &mut PrefixSlab) {
        if let Some(slot) = self.slots.pop_front() {
            let len = slab.unhold(slot);
            self.bytes -= OutboundMessage::json_len(len, Some(self.front_seq));
            self.front_seq += 1;
        }
    }

    /// Drops every message up to and including `seq` (the client has it).
    pub(crate) fn ack(&mut self, slab: &mut PrefixSlab, seq: u64) {
        while !self.slots.is_empty() && self.front_seq <= seq {
            self.pop_front(slab);
        }
    }

    /// Drops everything (the session ends).
    pub(crate) fn clear(&mut self, slab: &mut PrefixSlab) {
        while !self.slots.is_empty() {
            self.pop_front(slab);
        }
    }

    /// Whether every message after `last_seen`, up to `last_sent`, is still here.
    pub(crate) fn covers(&self, last_seen: u64, last_sent: u64) -> bool {
        last_seen >= last_sent || (!self.slots.is_empty() && self.front_seq <= last_seen + 1)
    }

    /// The messages after `last_seen`, in order: `(seq, slot)`.
    pub(crate) fn after(&self, last_seen: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let skip = last_seen.saturating_sub(self.front_seq.saturating_sub(1));
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let front = self.front_seq;
        self.slots
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(i, &slot)| (front + i as u64, slot))
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_messages_and_bytes_and_trimmed_by_acks() {
        let mut slab = PrefixSlab::default();
        let mut buf = ReplayBuffer::default();
        let p = Bytes::from_static(b"{\"v\":\"1.0\",\"e\":\"x\"");
        for seq in 1..=10 {
            let slot = slab.insert(p.clone());
            buf.push(&mut slab, seq, slot, 4, 10_000);
            slab.release(slot);
        }
        assert_eq!(buf.len(), 4);
        assert_eq!(slab.live(), 4);
        assert!(buf.covers(6, 10));
        assert!(!buf.covers(5, 10));
        assert_eq!(buf.after(8).map(|e| e.0).collect::<Vec<_>>(), [9, 10]);
        assert_eq!(buf.after(0).map(|e| e.0).collect::<Vec<_>>(), [7, 8, 9, 10]);
        buf.ack(&mut slab, 8);
        assert_eq!(buf.len(), 2);
        let one = OutboundMessage::json_len(p.len(), Some(11));
        let slot = slab.insert(p.clone());
        buf.push(&mut slab, 11, slot, 100, one * 2);
        slab.release(slot);
        assert!(buf.bytes() <= one * 2);
        assert_eq!(buf.len(), 2);
        buf.clear(&mut slab);
        assert_eq!((buf.len(), buf.bytes(), slab.live()), (0, 0, 0));
    }

    #[test]
    fn slots_are_shared_and_freed_with_the_last_holder() {
        let mut slab = PrefixSlab::default();
        let (mut a, mut b) = (ReplayBuffer::default(), ReplayBuffer::default());
        let slot = slab.insert(Bytes::from_static(b"{\"e\":\"x\""));
        a.push(&mut slab, 1, slot, 10, 1000);
        b.push(&mut slab, 1, slot, 10, 1000);
        slab.release(slot);
        assert_eq!(slab.live(), 1);
        a.ack(&mut slab, 1);
        assert_eq!(slab.live(), 1);
        b.clear(&mut slab);
        assert_eq!(slab.live(), 0);
        let unused = slab.insert(Bytes::from_static(b"{"));
        slab.release(unused);
        assert_eq!(slab.live(), 0);
    }

    #[test]
    fn the_binary_form_is_made_once_and_dropped_with_the_slot() {
        let mut slab = PrefixSlab::default();
        let slot = slab.insert(Bytes::from_static(b"{\"v\":\"1.0\",\"e\":\"x\""));
        let first = slab.prefix_for(slot, Codec::MsgPack).clone();
        let again = slab.prefix_for(slot, Codec::MsgPack).clone();
        // The same allocation: made once, shared.
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert_eq!(first[0], 0x83, "v, e and the s to come");
        let json = slab.json_prefix(slot);
        assert_eq!(slab.prefix_for(slot, Codec::Json), &json);
        slab.release(slot);
        let reused = slab.insert(Bytes::from_static(b"{\"v\":\"1.0\",\"e\":\"y\""));
        assert_eq!(reused, slot);
        assert_ne!(slab.prefix_for(reused, Codec::MsgPack), &first);
        slab.release(reused);
    }
}
