//! A session's replay buffer: the encoded messages it was sent and the client has not
//! acknowledged, bounded in messages and in bytes.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::outbound::OutboundMessage;

/// Messages `(seq, prefix)` in sequence order. The prefix is the shared encoding of a
/// broadcast, so keeping it costs a refcount, not a copy.
#[derive(Debug, Default)]
pub(crate) struct ReplayBuffer {
    entries: VecDeque<(u64, Bytes)>,
    /// Encoded bytes held (prefix plus the `,"s":N}` suffix of each message).
    bytes: usize,
}

impl ReplayBuffer {
    /// Appends message `seq`, dropping the oldest ones until both bounds hold.
    pub(crate) fn push(&mut self, seq: u64, prefix: Bytes, max_messages: usize, max_bytes: usize) {
        self.bytes += OutboundMessage::encoded_len(&prefix, Some(seq));
        self.entries.push_back((seq, prefix));
        while self.entries.len() > max_messages || self.bytes > max_bytes {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((seq, prefix)) = self.entries.pop_front() {
            self.bytes -= OutboundMessage::encoded_len(&prefix, Some(seq));
        }
    }

    /// Drops every message up to and including `seq` (the client has it).
    pub(crate) fn ack(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|&(s, _)| s <= seq) {
            self.pop_front();
        }
    }

    /// Whether every message after `last_seen`, up to `last_sent`, is still here.
    pub(crate) fn covers(&self, last_seen: u64, last_sent: u64) -> bool {
        if last_seen >= last_sent {
            return true;
        }
        self.entries
            .front()
            .is_some_and(|&(first, _)| first <= last_seen + 1)
    }

    /// The messages after `last_seen`, in order.
    pub(crate) fn after(&self, last_seen: u64) -> impl Iterator<Item = &(u64, Bytes)> + '_ {
        self.entries.iter().filter(move |&&(s, _)| s > last_seen)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        let mut buf = ReplayBuffer::default();
        let p = Bytes::from_static(b"{\"v\":\"1.0\",\"e\":\"x\"");
        for seq in 1..=10 {
            buf.push(seq, p.clone(), 4, 10_000);
        }
        assert_eq!(buf.len(), 4);
        assert!(buf.covers(6, 10));
        assert!(!buf.covers(5, 10));
        assert_eq!(buf.after(8).map(|e| e.0).collect::<Vec<_>>(), [9, 10]);
        buf.ack(8);
        assert_eq!(buf.len(), 2);
        let one = OutboundMessage::encoded_len(&p, Some(11));
        buf.push(11, p.clone(), 100, one * 2);
        assert!(buf.bytes() <= one * 2);
        assert_eq!(buf.len(), 2);
    }
}
