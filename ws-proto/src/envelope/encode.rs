//! Encoding envelopes straight into a caller's buffer.

use bytes::BytesMut;
use serde::Serialize;
use serde_json::value::RawValue;

use super::WIRE_VERSION;

/// A growable buffer envelopes are encoded into: `Vec<u8>` or [`BytesMut`].
///
/// Sealed: the encoder needs to grow the buffer without limit and to cut it back to its
/// previous length when serializing a typed payload fails, which fixed-size `BufMut`s
/// cannot do.
pub trait EnvelopeBuf: sealed::Sealed {}

impl EnvelopeBuf for Vec<u8> {}
impl EnvelopeBuf for BytesMut {}

#[allow(unreachable_pub)] // a public trait in a private module: the sealing idiom
mod sealed {
    use bytes::{BufMut, BytesMut};
    use serde::Serialize;

    /// The buffer operations the encoder uses; not nameable outside the crate.
    pub trait Sealed {
        /// Appends bytes.
        fn put(&mut self, bytes: &[u8]);
        /// Appends the JSON serialization of `value`.
        fn put_json<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()>;
        /// Current length, to cut back to on failure.
        fn len_now(&self) -> usize;
        /// Cuts the buffer back to `len` bytes.
        fn cut_to(&mut self, len: usize);
    }

    impl Sealed for Vec<u8> {
        fn put(&mut self, bytes: &[u8]) {
            self.extend_from_slice(bytes);
        }
        fn put_json<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
            serde_json::to_writer(self, value)
        }
        fn len_now(&self) -> usize {
            self.len()
        }
        fn cut_to(&mut self, len: usize) {
            self.truncate(len);
        }
    }

    impl Sealed for BytesMut {
        fn put(&mut self, bytes: &[u8]) {
            self.put_slice(bytes);
        }
        fn put_json<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
            serde_json::to_writer(self.writer(), value)
        }
        fn len_now(&self) -> usize {
            self.len()
        }
        fn cut_to(&mut self, len: usize) {
            self.truncate(len);
        }
    }
}

/// The payload `p` of an [`OutgoingEnvelope`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub enum Payload<'a> {
    /// No `p` field is written.
    #[default]
    None,
    /// Already-validated JSON, written verbatim.
    Raw(&'a RawValue),
    /// Text the caller guarantees to be exactly one valid JSON value, written verbatim
    /// without checking (for JSON this process produced itself). If it is not, the
    /// encoded envelope is not valid JSON and its receiver refuses it; nothing worse
    /// happens. Use [`Payload::from_json`] for text of unknown quality.
    Trusted(&'a str),
    /// A payload the caller made in both codecs: `json` as for [`Payload::Trusted`]
    /// (written verbatim into JSON envelopes) and `msgpack`, the MessagePack bytes of
    /// the same value (one well-formed value, e.g. from `rmp-serde`), written verbatim
    /// into binary envelopes instead of transcoding `json`. So binary data serialized
    /// as bytes (`serde_bytes`) is `bin` in MessagePack and an array of numbers in
    /// JSON, as each serializer writes it. The caller vouches that both say the same.
    Both {
        /// The payload as JSON text.
        json: &'a str,
        /// The payload as MessagePack bytes.
        msgpack: &'a [u8],
    },
}

impl<'a> Payload<'a> {
    /// Checks that `json` is one valid JSON value (a linear scan, no allocation) and
    /// wraps it as [`Payload::Raw`]. Whitespace around the value is kept.
    pub fn from_json(json: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<&'a RawValue>(json).map(Payload::Raw)
    }

    /// The JSON text written for `p`, or `None` when no `p` field is written.
    pub fn as_json(&self) -> Option<&'a str> {
        match *self {
            Payload::None => None,
            Payload::Raw(raw) => Some(raw.get()),
            Payload::Trusted(text) | Payload::Both { json: text, .. } => Some(text),
        }
    }

    /// The payload's own MessagePack form ([`Payload::Both`]), when the caller gave one;
    /// otherwise binary envelopes transcode [`as_json`](Self::as_json).
    pub fn as_msgpack(&self) -> Option<&'a [u8]> {
        match *self {
            Payload::Both { msgpack, .. } => Some(msgpack),
            _ => None,
        }
    }
}

impl<'a> From<&'a RawValue> for Payload<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Payload::Raw(raw)
    }
}

impl<'a> From<Option<&'a RawValue>> for Payload<'a> {
    fn from(raw: Option<&'a RawValue>) -> Self {
        raw.map_or(Payload::None, Payload::Raw)
    }
}

/// An envelope to send, made of borrowed parts; nothing is copied until it is encoded.
///
/// Fields are written in the order `v, e, p, c, t, s`, `v` always as `"1.0"` and `s`
/// last, so that a broadcast can be encoded once with
/// [`encode_prefix`](OutgoingEnvelope::encode_prefix) and completed per recipient with
/// [`write_seq_suffix`]. Absent optional fields are omitted, not written as `null`.
///
/// The encoder does not check the event name or correlation id against the limits a
/// receiver applies; see [`validate_event_name`](super::validate_event_name).
#[derive(Debug, Clone, Copy)]
pub struct OutgoingEnvelope<'a> {
    /// The event name `e`.
    pub event: &'a str,
    /// The payload `p`.
    pub payload: Payload<'a>,
    /// The correlation id `c`.
    pub correlation_id: Option<&'a str>,
    /// The timestamp `t`, in milliseconds.
    pub timestamp: Option<u64>,
    /// The session sequence number `s`.
    pub seq: Option<u64>,
}

impl<'a> OutgoingEnvelope<'a> {
    /// An envelope with event name `event` and no other field.
    pub fn new(event: &'a str) -> Self {
        Self {
            event,
            payload: Payload::None,
            correlation_id: None,
            timestamp: None,
            seq: None,
        }
    }

    /// Sets the payload `p`.
    pub fn with_payload(mut self, payload: impl Into<Payload<'a>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets the correlation id `c`.
    pub fn with_correlation_id(mut self, correlation_id: &'a str) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// Sets the timestamp `t`, in milliseconds.
    pub fn with_timestamp(mut self, timestamp: u64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the session sequence number `s`.
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    /// Appends the whole envelope, `s` included when set, to `out`.
    pub fn encode_into<B: EnvelopeBuf>(&self, out: &mut B) {
        self.encode_prefix(out);
        write_seq_suffix(out, self.seq);
    }

    /// Encodes the whole envelope into a new `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        self.encode_into(&mut out);
        out
    }

    /// Appends everything up to, and not including, the closing `}` and the `s` field
    /// (which this ignores): `{"v":"1.0","e":…,"p":…,"c":…,"t":…`. Complete it with
    /// [`write_seq_suffix`]; the two together equal [`encode_into`](Self::encode_into).
    pub fn encode_prefix<B: EnvelopeBuf>(&self, out: &mut B) {
        self.write_head(out);
        if let Some(json) = self.payload.as_json() {
            out.put(b",\"p\":");
            out.put(json.as_bytes());
        }
        self.write_tail(out);
    }

    /// Appends the whole envelope to `out` with `payload` serialized as `p`, in place of
    /// [`self.payload`](Self::payload). On error `out` is left as it was.
    pub fn encode_serialize<T, B>(&self, payload: &T, out: &mut B) -> Result<(), serde_json::Error>
    where
        T: Serialize + ?Sized,
        B: EnvelopeBuf,
    {
        self.encode_prefix_serialize(payload, out)?;
        write_seq_suffix(out, self.seq);
        Ok(())
    }

    /// [`encode_prefix`](Self::encode_prefix) with `payload` serialized as `p`, in
    /// place of [`self.payload`](Self::payload). On error `out` is left as it was.
    pub fn encode_prefix_serialize<T, B>(&self, payload: &T, out: &mut B) -> Result<(), serde_json::Error>
    where
        T: Serialize + ?Sized,
        B: EnvelopeBuf,
    {
        let start = out.len_now();
        self.write_head(out);
        out.put(b",\"p\":");
        if let Err(err) = out.put_json(payload) {
            out.cut_to(start);
            return Err(err);
        }
        self.write_tail(out);
        Ok(())
    }

    /// A guess of the encoded length, exact when no string needs escaping.
    pub fn size_hint(&self) -> usize {
        // {"v":"1.0","e":"…"  then ,"p":…  ,"c":"…"  ,"t":N  ,"s":N  and }
        17 + self.event.len()
            + self.payload.as_json().map_or(0, |p| 5 + p.len())
            + self.correlation_id.map_or(0, |c| 7 + c.len())
            + self.timestamp.map_or(0, |_| 25)
            + self.seq.map_or(0, |_| 25)
            + 1
    }

    fn write_head<B: EnvelopeBuf>(&self, out: &mut B) {
        out.put(b"{\"v\":\"");
        out.put(WIRE_VERSION.as_bytes());
        out.put(b"\",\"e\":");
        put_infallible(out, self.event);
    }

    fn write_tail<B: EnvelopeBuf>(&self, out: &mut B) {
        if let Some(c) = self.correlation_id {
            write_correlation_id(out, c);
        }
        if let Some(t) = self.timestamp {
            out.put(b",\"t\":");
            put_infallible(out, &t);
        }
    }
}

/// Appends `,"c":"…"`, the correlation id field, as [`OutgoingEnvelope::encode_prefix`]
/// writes it after `p`: for a server that shares one encoded event and payload among
/// the replies of many requests and adds each one's `c` after it.
pub fn write_correlation_id<B: EnvelopeBuf>(out: &mut B, correlation_id: &str) {
    out.put(b",\"c\":");
    put_infallible(out, correlation_id);
}

/// Appends the end of an envelope begun with
/// [`encode_prefix`](OutgoingEnvelope::encode_prefix): `}` when `seq` is `None`,
/// `,"s":N}` otherwise.
pub fn write_seq_suffix<B: EnvelopeBuf>(out: &mut B, seq: Option<u64>) {
    if let Some(s) = seq {
        out.put(b",\"s\":");
        put_infallible(out, &s);
    }
    out.put(b"}");
}

/// Appends a string (JSON-escaped by serde_json) or an integer. Neither can fail: the
/// buffers grow without limit and these types serialize without error.
fn put_infallible<B: EnvelopeBuf, T: Serialize + ?Sized>(out: &mut B, value: &T) {
    let result = out.put_json(value);
    debug_assert!(
        result.is_ok(),
        "serializing a str or u64 into a growable buffer failed"
    );
}
