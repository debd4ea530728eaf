//! What can go wrong in an upgrade handshake.

use std::fmt;

/// Why a handshake failed, with the figures that broke the rule.
///
/// Most variants describe a fault of the *peer* (a bad request on the server side, a
/// bad response on the client side); on the server they travel inside a
/// [`Rejection`](super::Rejection) together with the HTTP status that answers them.
/// A few describe a misuse by the *local* caller (an extra header with a line break, a
/// subprotocol the client never offered passed to [`Request::accept`](super::Request::accept));
/// their documentation says so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head did not end within [`Config::max_handshake_size`](crate::Config::max_handshake_size)
    /// bytes. Answered with 431.
    HeadTooLarge {
        /// Bytes received without the end of the head. The search stops at the limit,
        /// so this is the limit itself, whatever the split of the input.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// More header lines than [`Config::max_handshake_headers`](crate::Config::max_handshake_headers).
    /// Answered with 431.
    TooManyHeaders {
        /// Header lines in the head.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// The head is not well-formed HTTP/1.1 (a bad request or status line, a bad header
    /// name or value, bare LF line endings). Answered with 400.
    MalformedHttp {
        /// What the parser objected to.
        reason: &'static str,
    },
    /// Not HTTP/1.1. Answered with 400.
    UnsupportedHttpVersion {
        /// The minor version of an `HTTP/1.x` head (`Some(0)` for HTTP/1.0); `None`
        /// when the version is not `HTTP/1.0` or `HTTP/1.1` at all.
        minor: Option<u8>,
    },
    /// A request method other than `GET`. Answered with 405 and `Allow: GET`.
    MethodNotAllowed {
        /// The method received.
        method: String,
    },
    /// A request target that is neither origin-form (`/path?query`) nor absolute-form
    /// (`ws://host/path`). Answered with 400.
    InvalidTarget {
        /// The target received.
        target: String,
    },
    /// A required header is absent. Answered with 400.
    MissingHeader {
        /// The header's name.
        name: &'static str,
    },
    /// A header that must appear once appeared more than once. Answered with 400.
    DuplicateHeader {
        /// The header's name.
        name: &'static str,
    },
    /// A header value that is not UTF-8 (from the peer), or that contains a line break
    /// or NUL (local: a value the caller asked to send).
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
    /// Local: a header name that is not an HTTP token.
    InvalidHeaderName {
        /// The name given.
        name: String,
    },
    /// Local: an extra header that the handshake writes itself (`Upgrade`,
    /// `Sec-WebSocket-Accept`, …) and that may not be given twice.
    ReservedHeader {
        /// The name given.
        name: String,
    },
    /// `Upgrade` does not list `websocket`. Answered with 400.
    UpgradeNotWebSocket {
        /// The `Upgrade` value received.
        found: String,
    },
    /// `Connection` does not list `upgrade`. Answered with 400.
    ConnectionNotUpgrade {
        /// The `Connection` value received.
        found: String,
    },
    /// `Sec-WebSocket-Version` is absent or not `13`. Answered with 426 and
    /// `Sec-WebSocket-Version: 13`.
    UnsupportedVersion {
        /// The value received, `None` when the header was absent.
        found: Option<String>,
    },
    /// `Sec-WebSocket-Key` is not the base64 of 16 bytes. Answered with 400.
    InvalidKey {
        /// How many bytes it decodes to; `None` when it is not valid base64.
        decoded_len: Option<usize>,
    },
    /// A `Sec-WebSocket-Extensions` value that does not follow RFC 6455 §9.1's grammar
    /// (from the peer: answered with 400; local: an extension string the caller gave).
    InvalidExtensionHeader {
        /// Byte offset in the value where parsing failed.
        offset: usize,
    },
    /// Local: a subprotocol name that is empty or not an HTTP token.
    InvalidProtocol {
        /// The name given.
        protocol: String,
    },
    /// Local: a `Host` or request target the client cannot send as given.
    InvalidRequestLine {
        /// The offending value.
        value: String,
    },
    /// The server answered with a status other than 101 Switching Protocols.
    NotSwitchingProtocols {
        /// The status received.
        status: u16,
    },
    /// `Sec-WebSocket-Accept` does not match the key the client sent.
    AcceptMismatch {
        /// The value the key calls for.
        expected: String,
        /// The value received.
        found: String,
    },
    /// A subprotocol the client did not offer: picked by the server (client side), or
    /// passed to [`Request::accept`](super::Request::accept) by the local caller.
    UnofferedProtocol {
        /// The subprotocol.
        protocol: String,
    },
    /// An extension the client did not offer: in the server's response (client side),
    /// or passed to [`Request::accept`](super::Request::accept) by the local caller.
    UnofferedExtension {
        /// The extension's name.
        name: String,
    },
    /// The server's `permessage-deflate` answer is not one RFC 7692 §7.1 allows for
    /// the offer the client made (client side).
    InvalidDeflateResponse {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Local: [`Request::reject`](super::Request::reject) with a status outside 400–599.
    InvalidStatus {
        /// The status given.
        status: u16,
    },
    /// The application refused the request ([`Request::reject`](super::Request::reject)).
    Refused {
        /// The reason given, sent as the response body.
        reason: String,
    },
    /// Local: `handle_bytes` was called after the handshake had already produced its
    /// outcome. The bytes were not consumed; nothing should be written for this.
    Finished,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadTooLarge { len, max } => {
                write!(
                    f,
                    "handshake head of at least {len} bytes exceeds the limit of {max}"
                )
            }
            Self::TooManyHeaders { count, max } => {
                write!(f, "{count} header lines exceed the limit of {max}")
            }
            Self::MalformedHttp { reason } => write!(f, "malformed HTTP: {reason}"),
            Self::UnsupportedHttpVersion { minor: Some(minor) } => {
                write!(f, "HTTP/1.{minor} is not supported, HTTP/1.1 is required")
            }
            Self::UnsupportedHttpVersion { minor: None } => f.write_str("HTTP/1.1 is required"),
            Self::MethodNotAllowed { method } => write!(f, "method {method} is not allowed, use GET"),
            Self::InvalidTarget { target } => write!(f, "invalid request target {target:?}"),
            Self::MissingHeader { name } => write!(f, "missing {name} header"),
            Self::DuplicateHeader { name } => write!(f, "more than one {name} header"),
            Self::InvalidHeaderValue { name } => write!(f, "invalid value for header {name:?}"),
            Self::InvalidHeaderName { name } => write!(f, "invalid header name {name:?}"),
            Self::ReservedHeader { name } => {
                write!(f, "header {name:?} is written by the handshake itself")
            }
            Self::UpgradeNotWebSocket { found } => {
                write!(f, "Upgrade header {found:?} does not name websocket")
            }
            Self::ConnectionNotUpgrade { found } => {
                write!(f, "Connection header {found:?} does not list upgrade")
            }
            Self::UnsupportedVersion { found: Some(found) } => {
                write!(f, "WebSocket version {found:?} is not supported, use 13")
            }
            Self::UnsupportedVersion { found: None } => {
                f.write_str("missing Sec-WebSocket-Version header, use 13")
            }
            Self::InvalidKey {
                decoded_len: Some(len),
            } => {
                write!(f, "Sec-WebSocket-Key decodes to {len} bytes instead of 16")
            }
            Self::InvalidKey { decoded_len: None } => f.write_str("Sec-WebSocket-Key is not base64"),
            Self::InvalidExtensionHeader { offset } => {
                write!(f, "malformed Sec-WebSocket-Extensions at byte {offset}")
            }
            Self::InvalidProtocol { protocol } => write!(f, "invalid subprotocol name {protocol:?}"),
            Self::InvalidRequestLine { value } => {
                write!(f, "{value:?} cannot be sent in the request line or Host header")
            }
            Self::NotSwitchingProtocols { status } => {
                write!(f, "server answered {status} instead of 101 Switching Protocols")
            }
            Self::AcceptMismatch { expected, found } => {
                write!(
                    f,
                    "Sec-WebSocket-Accept {found:?} does not match the expected {expected:?}"
                )
            }
            Self::UnofferedProtocol { protocol } => {
                write!(f, "subprotocol {protocol:?} was not offered by the client")
            }
            Self::UnofferedExtension { name } => {
                write!(f, "extension {name:?} was not offered by the client")
            }
            Self::InvalidDeflateResponse { reason } => {
                write!(f, "invalid permessage-deflate response: {reason}")
            }
            Self::InvalidStatus { status } => {
                write!(f, "status {status} cannot refuse a handshake, use 400-599")
            }
            Self::Refused { reason } => f.write_str(reason),
            Self::Finished => f.write_str("the handshake has already finished"),
        }
    }
}

impl std::error::Error for HandshakeError {}
