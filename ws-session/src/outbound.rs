//! Outbound messages: a shared encoded prefix plus the recipient's sequence number.

use bytes::{Bytes, BytesMut};
use ws_proto::envelope::{write_seq_suffix, OutgoingEnvelope};

/// One message for one connection: the envelope encoded up to (not including) `s` and
/// the closing brace, shared by every recipient of a broadcast, and this recipient's
/// sequence number (`None` for messages outside the session stream: `sys.*` control
/// events). Cloning costs a refcount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// `{"v":"1.0","e":…` up to the `s` field; see
    /// [`OutgoingEnvelope::encode_prefix`].
    pub prefix: Bytes,
    /// The session sequence number `s` of this recipient's copy.
    pub seq: Option<u64>,
}

impl OutboundMessage {
    /// Appends the whole envelope text (prefix, `,"s":N`, `}`) to `out`; returns the
    /// number of bytes written. This is the text of one WebSocket text frame.
    pub fn write_to(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&self.prefix);
        write_seq_suffix(out, self.seq);
        out.len() - start
    }

    /// Length of the whole envelope text, in bytes.
    pub fn len(&self) -> usize {
        Self::encoded_len(&self.prefix, self.seq)
    }

    /// Always `false`: an envelope is never empty. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole envelope as a `String`, for tests and logs.
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out);
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    pub(crate) fn encoded_len(prefix: &[u8], seq: Option<u64>) -> usize {
        Self::encoded_len_parts(prefix.len(), seq)
    }

    pub(crate) fn encoded_len_parts(prefix_len: usize, seq: Option<u64>) -> usize {
        prefix_len + seq.map_or(1, |s| 6 + decimal_len(s))
    }
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Encodes prefixes into one growing buffer and splits each off as `Bytes`, so that
/// steady-state encoding reuses a block instead of allocating per message (`BytesMut`
/// reclaims the block once every `Bytes` cut from it has been dropped).
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    buf: BytesMut,
}

/// Block size the encoder grows by.
const BLOCK: usize = 64 * 1024;

impl Encoder {
    pub(crate) fn prefix(&mut self, env: &OutgoingEnvelope<'_>) -> Bytes {
        self.reserve(env.size_hint());
        env.encode_prefix(&mut self.buf);
        self.buf.split().freeze()
    }

    pub(crate) fn prefix_with<T: serde::Serialize + ?Sized>(
        &mut self,
        env: &OutgoingEnvelope<'_>,
        payload: &T,
    ) -> Bytes {
        self.reserve(env.size_hint() + 128);
        if env.encode_prefix_serialize(payload, &mut self.buf).is_err() {
            // Our own payload structs always serialize; fall back to no payload.
            env.encode_prefix(&mut self.buf);
        }
        self.buf.split().freeze()
    }

    fn reserve(&mut self, need: usize) {
        if self.buf.capacity() < need {
            self.buf.reserve(need.max(BLOCK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_matches_written_text() {
        let mut enc = Encoder::default();
        let prefix = enc.prefix(&OutgoingEnvelope::new("chat"));
        for seq in [None, Some(1), Some(9), Some(10), Some(12345), Some(u64::MAX)] {
            let m = OutboundMessage {
                prefix: prefix.clone(),
                seq,
            };
            let mut out = Vec::new();
            assert_eq!(m.write_to(&mut out), m.len());
            assert_eq!(out.len(), m.len());
        }
        assert_eq!(
            OutboundMessage { prefix, seq: Some(3) }.to_text(),
            r#"{"v":"1.0","e":"chat","s":3}"#
        );
    }
}
