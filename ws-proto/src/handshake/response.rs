//! A server's validated `101 Switching Protocols` response, as the client sees it.

use bytes::Bytes;

use super::extension::Extension;
use super::headers::Headers;
use crate::deflate::DeflateParams;

/// The server's answer to a [`ClientHandshake`](super::ClientHandshake), checked
/// against what the client sent: status 101, `Upgrade: websocket`,
/// `Connection: upgrade`, the right `Sec-WebSocket-Accept`, and only a subprotocol and
/// extensions the client offered.
///
/// Bytes the server sent after its head are kept in [`Response::rest`]: they are the
/// first WebSocket frames and must be fed to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Headers,
    pub(crate) protocol: Option<String>,
    pub(crate) extensions: Vec<Extension>,
    pub(crate) deflate: Option<DeflateParams>,
    pub(crate) rest: Bytes,
}

impl Response {
    /// The HTTP status (always 101 once validated).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Every header field, in the order received.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The subprotocol the server chose, one of those the client offered.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The extensions the server agreed to, each one the client offered.
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The permessage-deflate parameters the server agreed to (already checked
    /// against the offer), if it did: run the
    /// [`Connection`](crate::Connection) with them
    /// ([`Connection::with_deflate`](crate::Connection::with_deflate)).
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Bytes the server sent after its head, already read from the socket.
    pub fn rest(&self) -> &Bytes {
        &self.rest
    }

    /// Takes the bytes after the head (see [`Response::rest`]), leaving none behind.
    pub fn take_rest(&mut self) -> Bytes {
        std::mem::take(&mut self.rest)
    }
}
