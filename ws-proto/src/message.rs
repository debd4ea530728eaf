//! Messages: what a connection delivers and what the layers above it send.

use bytes::Bytes;

use crate::close::CloseFrame;

/// A transport-level WebSocket message.
///
/// This is also the unit the session engine consumes, so a custom transport that
/// does not speak RFC 6455 framing can still drive it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// A complete text message, validated as UTF-8.
    Text(String),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping with its application data (at most 125 bytes).
    Ping(Bytes),
    /// A pong with its application data (at most 125 bytes).
    Pong(Bytes),
    /// A close frame; `None` for an empty body.
    Close(Option<CloseFrame>),
}
