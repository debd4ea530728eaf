//! Every limit of the wire layer, in one place, each with its documented default
//! (`docs/ARCHITECTURE.md`, "Limits and configuration").

/// Limits and behaviour switches of the wire layer.
///
/// One struct so that a deployment can read every bound it runs with in one place.
/// Each default is documented on its field and, for figures, named by a `DEFAULT_*`
/// constant. The defaults follow trusted servers (see `docs/PROTOCOL.md`, "Limits").
///
/// Build one with struct update syntax: `Config { max_fragments: 64, ..Config::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest payload of a single frame, in bytes. A frame header announcing more is
    /// answered with close code 1009 before any of its payload is buffered.
    /// Default: 1 MiB.
    pub max_frame_size: usize,
    /// Largest message (all fragments together), in bytes. Default: 1 MiB.
    pub max_message_size: usize,
    /// Most frames one message may be split into, empty continuation frames counted
    /// (a stream of empty fragments costs CPU without growing the message).
    /// Default: 4096.
    pub max_fragments: usize,
    /// Largest HTTP upgrade request or response head, in bytes. Default: 16 KiB.
    pub max_handshake_size: usize,
    /// Most header lines in the upgrade request or response. Default: 64.
    pub max_handshake_headers: usize,
    /// Split outgoing data messages into frames of at most this many payload bytes.
    /// `None` (the default) sends each message as one frame.
    pub send_fragment_size: Option<usize>,
    /// Answer pings with pongs automatically (the RFC requires an answer; turn this off
    /// only to answer them yourself). Default: `true`.
    pub auto_pong: bool,
    /// Most automatic pongs that wait to be taken by
    /// [`Connection::poll_transmit`](crate::Connection::poll_transmit). Pings beyond
    /// it are answered by one pong for the latest of them (RFC 6455 §5.5.3), so a
    /// peer that pings without reading costs bounded memory. Default: 16.
    pub max_queued_pongs: usize,
    /// Deepest nesting of objects and arrays in an envelope, the envelope object itself
    /// counting as level 1 (so `{"e":"x","p":{"a":[1]}}` has depth 3). Checked by a
    /// linear pre-scan before any parsing, so a `[[[[…` bomb costs O(n) and no
    /// recursion. Default: 32.
    pub max_envelope_depth: usize,
    /// Longest event name (`e`) of an envelope, in bytes. Default: 128.
    pub max_event_name_len: usize,
    /// Longest correlation id (`c`) of an envelope, in bytes, after JSON unescaping.
    /// Default: 128.
    pub max_correlation_id_len: usize,
    /// Negotiate permessage-deflate (RFC 7692): a server accepts a client's offer, a
    /// client offers it. Default: `false`.
    ///
    /// Off by default because of what it costs a server per connection, and every
    /// browser offers it: a compressor of ~300 KB and a decompressor of ~43 KB, kept
    /// for the connection's life with context takeover (measured through the chat
    /// example: 165–190 KB of resident memory per idle connection that sent and
    /// received one compressed message, against ~1.2 KB without), and ~17 µs of CPU
    /// per compressed small message against ~1 µs to send it plain
    /// (`docs/BENCHMARKS.md`). Turn it on where bandwidth costs more than memory and
    /// CPU (chat-like JSON shrinks to about a quarter), with a connection bound that
    /// accounts for it. See [`crate::deflate`] for what is negotiated.
    pub deflate: bool,
    /// Messages smaller than this many bytes are sent uncompressed even when
    /// permessage-deflate was agreed (compressing a few bytes costs more CPU than
    /// it saves bytes, and can even grow them). Default: 64.
    pub deflate_min_size: usize,
    /// Compression level, 0 (stored, no compression) to 9 (best). Default: 1 (fastest
    /// of the real levels: on chat-like JSON it gets most of level 6's ratio for a
    /// fraction of the CPU; see `docs/BENCHMARKS.md`).
    pub deflate_level: u32,
    /// The server compresses every message with a fresh context
    /// (`server_no_context_takeover`): a server answers every offer with it, a client
    /// asks for it. It lowers the ratio on small repetitive messages but lets a
    /// server drop its compressor between messages and share one compressed
    /// broadcast payload among connections
    /// ([`Connection::send_precompressed`](crate::Connection::send_precompressed)).
    /// Default: `false`.
    pub deflate_server_no_context_takeover: bool,
    /// The client compresses every message with a fresh context
    /// (`client_no_context_takeover`): a client offers it (and keeps to it), a server
    /// asks for it in every answer. It lets the server drop its decompressor between
    /// messages. Default: `false`.
    pub deflate_client_no_context_takeover: bool,
}

impl Config {
    /// Default largest frame payload: 1 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;
    /// Default largest message: 1 MiB (checked after decompression).
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
    /// Default most fragments per message: 4096.
    pub const DEFAULT_MAX_FRAGMENTS: usize = 4096;
    /// Default largest handshake head: 16 KiB.
    pub const DEFAULT_MAX_HANDSHAKE_SIZE: usize = 16 * 1024;
    /// Default most handshake header lines: 64.
    pub const DEFAULT_MAX_HANDSHAKE_HEADERS: usize = 64;
    /// Default most pongs waiting to be transmitted: 16.
    pub const DEFAULT_MAX_QUEUED_PONGS: usize = 16;
    /// Default deepest envelope nesting: 32 (the envelope object counts as 1).
    pub const DEFAULT_MAX_ENVELOPE_DEPTH: usize = 32;
    /// Default longest event name: 128 bytes.
    pub const DEFAULT_MAX_EVENT_NAME_LEN: usize = 128;
    /// Default longest correlation id: 128 bytes.
    pub const DEFAULT_MAX_CORRELATION_ID_LEN: usize = 128;

    /// Default smallest message that is compressed: 64 bytes.
    pub const DEFAULT_DEFLATE_MIN_SIZE: usize = 64;
    /// Default compression level: 1.
    pub const DEFAULT_DEFLATE_LEVEL: u32 = 1;

    /// Sets [`Config::max_message_size`] and raises [`Config::max_frame_size`] to match,
    /// since a single-frame message may be as large as a message.
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self.max_frame_size = max;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_fragments: Self::DEFAULT_MAX_FRAGMENTS,
            max_handshake_size: Self::DEFAULT_MAX_HANDSHAKE_SIZE,
            max_handshake_headers: Self::DEFAULT_MAX_HANDSHAKE_HEADERS,
            send_fragment_size: None,
            auto_pong: true,
            max_queued_pongs: Self::DEFAULT_MAX_QUEUED_PONGS,
            max_envelope_depth: Self::DEFAULT_MAX_ENVELOPE_DEPTH,
            max_event_name_len: Self::DEFAULT_MAX_EVENT_NAME_LEN,
            max_correlation_id_len: Self::DEFAULT_MAX_CORRELATION_ID_LEN,
            deflate: false,
            deflate_min_size: Self::DEFAULT_DEFLATE_MIN_SIZE,
            deflate_level: Self::DEFAULT_DEFLATE_LEVEL,
            deflate_server_no_context_takeover: false,
            deflate_client_no_context_takeover: false,
        }
    }
}
