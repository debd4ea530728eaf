//! A validated upgrade request, and the responses that accept or refuse it.

use std::ops::Range;

use bytes::Bytes;

use super::accept_key::accept_key;
use super::error::HandshakeError;
use super::extension::{parse_extensions, Extension};
use super::headers::{check_extra, is_field_value, is_ows, is_token, write_field, Headers};
use super::rejection::Rejection;
use crate::deflate::DeflateParams;

/// Headers the 101 response writes itself; [`Accept::with_header`] may not repeat them.
const RESERVED: &[&str] = &[
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
];

/// A WebSocket upgrade request that passed every check of RFC 6455 §4.2.1.
///
/// Produced by [`ServerHandshake::handle_bytes`](super::ServerHandshake::handle_bytes).
/// Inspect it (path, `Origin`, credentials, offered subprotocols and extensions), then
/// answer with [`Request::accept`] or [`Request::reject`]. The bytes the client sent
/// after its head are kept in [`Request::rest`]: they are the first WebSocket frames and
/// must be fed to the connection.
///
/// `Debug` leaves out the query string and credential header values: both may carry
/// tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub(crate) target: String,
    /// Where the path is in `target`; `None` for an absolute-form target without one
    /// (its path is `/`). The method, path, query and key are read from the target
    /// and the headers rather than copied: a server makes one `Request` per
    /// connection it accepts, and each copy was an allocation.
    pub(crate) path: Option<Range<usize>>,
    /// Where the query is in `target`, after the `?`.
    pub(crate) query: Option<Range<usize>>,
    pub(crate) headers: Headers,
    pub(crate) protocols: Vec<String>,
    pub(crate) extensions: Vec<Extension>,
    pub(crate) rest: Bytes,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("path", &self.path())
            .field("query", &self.query().map(|_| "<redacted>"))
            .field("headers", &self.headers)
            .field("protocols", &self.protocols)
            .field("extensions", &self.extensions)
            .field("rest", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// The request method (always `GET` once validated).
    pub fn method(&self) -> &str {
        "GET"
    }

    /// The request target as received (`/chat?room=1`, or absolute-form `ws://host/chat`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path of the target, without the query (`/chat`). Not percent-decoded.
    pub fn path(&self) -> &str {
        self.path.clone().map_or("/", |path| &self.target[path])
    }

    /// The raw query string after `?`, if the target has one (not decoded).
    pub fn query(&self) -> Option<&str> {
        self.query.clone().map(|query| &self.target[query])
    }

    /// The first value of query parameter `name`, percent-decoded with `+` read as a
    /// space (`application/x-www-form-urlencoded`). Names are decoded before they are
    /// compared. Decoded bytes that are not UTF-8 are replaced with U+FFFD.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(key) == name).then(|| form_decode(value))
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Every header field, in the order received.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The header fields, taken out of the request (whose [`headers`](Self::headers)
    /// are then empty): for a server that keeps them past the request without a copy.
    pub fn take_headers(&mut self) -> Headers {
        std::mem::take(&mut self.headers)
    }

    /// The `Host` header (present: a request without one is refused).
    pub fn host(&self) -> &str {
        self.headers.get("Host").unwrap_or_default()
    }

    /// The `Origin` header, sent by browsers. Checking it against an allow-list is the
    /// caller's job (refuse with 403 through [`Request::reject`]).
    pub fn origin(&self) -> Option<&str> {
        self.headers.get("Origin")
    }

    /// The `Sec-WebSocket-Key` (base64 of 16 bytes) as received.
    pub fn key(&self) -> &str {
        self.headers.get("Sec-WebSocket-Key").unwrap_or_default()
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in order of preference,
    /// across repeated headers.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions offered in `Sec-WebSocket-Extensions`, in order, across repeated
    /// headers.
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The permessage-deflate parameters to answer the client's offers with (the
    /// first offer that `config` allows and we can honour), or `None`: see
    /// [`DeflateParams::negotiate`]. Answer with [`Accept::with_deflate`] and run the
    /// [`Connection`](crate::Connection) with the same value
    /// ([`Connection::with_deflate`](crate::Connection::with_deflate)).
    pub fn negotiate_deflate(&self, config: &crate::Config) -> Option<DeflateParams> {
        DeflateParams::negotiate(config, &self.extensions)
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme matched
    /// case-insensitively), if there is one.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.headers.get("Authorization")?;
        let (scheme, token) = value.split_once([' ', '\t'])?;
        let token = token.trim_matches(is_ows);
        (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
    }

    /// Bytes the client sent after its head, already read from the socket: the start of
    /// the WebSocket stream.
    pub fn rest(&self) -> &Bytes {
        &self.rest
    }

    /// Takes the bytes after the head (see [`Request::rest`]), leaving none behind.
    pub fn take_rest(&mut self) -> Bytes {
        std::mem::take(&mut self.rest)
    }

    /// Renders the `101 Switching Protocols` response that completes the handshake.
    ///
    /// Errors are the local caller's: a subprotocol the client did not offer
    /// ([`HandshakeError::UnofferedProtocol`]), an extension it did not offer or a
    /// malformed extension value, or an extra header that is invalid or written by the
    /// handshake itself.
    pub fn accept(&self, accept: &Accept) -> Result<Bytes, HandshakeError> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        self.accepted(accept, |name, value| write_field(&mut out, name, value))?;
        out.extend_from_slice(b"\r\n");
        Ok(Bytes::from(out))
    }

    /// The header fields of the `101 Switching Protocols` response, in order, for an
    /// HTTP server that writes the response itself (detached mode). Same checks and
    /// errors as [`Request::accept`].
    pub fn accept_fields(&self, accept: &Accept) -> Result<Vec<(String, String)>, HandshakeError> {
        let mut fields = Vec::new();
        self.accepted(accept, |name, value| {
            fields.push((name.to_owned(), value.to_owned()))
        })?;
        Ok(fields)
    }

    /// Checks `accept` against this request, then hands each field of the 101 to
    /// `field`, in order: the one place both forms of the answer come from.
    fn accepted(&self, accept: &Accept, mut field: impl FnMut(&str, &str)) -> Result<(), HandshakeError> {
        if let Some(protocol) = &accept.protocol {
            if !self.protocols.iter().any(|p| p == protocol) {
                return Err(HandshakeError::UnofferedProtocol {
                    protocol: protocol.clone(),
                });
            }
        }
        let extensions = match &accept.extensions {
            Some(value) => {
                if !is_field_value(value) {
                    return Err(HandshakeError::InvalidHeaderValue {
                        name: "Sec-WebSocket-Extensions".into(),
                    });
                }
                let mut chosen = Vec::new();
                parse_extensions(value, &mut chosen)?;
                if let Some(ext) = chosen.iter().find(|c| {
                    !self
                        .extensions
                        .iter()
                        .any(|o| o.name().eq_ignore_ascii_case(c.name()))
                }) {
                    return Err(HandshakeError::UnofferedExtension {
                        name: ext.name().to_owned(),
                    });
                }
                (!chosen.is_empty()).then_some(value.trim_matches(is_ows))
            }
            None => None,
        };
        for (name, value) in &accept.headers {
            check_extra(name, value, RESERVED)?;
        }
        field("Upgrade", "websocket");
        field("Connection", "Upgrade");
        field("Sec-WebSocket-Accept", &accept_key(self.key().as_bytes()));
        if let Some(protocol) = &accept.protocol {
            field("Sec-WebSocket-Protocol", protocol);
        }
        if let Some(extensions) = extensions {
            field("Sec-WebSocket-Extensions", extensions);
        }
        for (name, value) in &accept.headers {
            field(name, value);
        }
        Ok(())
    }

    /// Refuses the request for the application's own reason (403 for an Origin not on
    /// the allow-list, 401 for missing credentials, …). Render it with
    /// [`Rejection::to_response`]; `reason` becomes the plain-text body.
    ///
    /// Fails (a local error) with [`HandshakeError::InvalidStatus`] unless `status` is
    /// in 400–599.
    pub fn reject(&self, status: u16, reason: impl Into<String>) -> Result<Rejection, HandshakeError> {
        Rejection::refused(status, reason)
    }
}

/// How to accept a request: the chosen subprotocol, the extensions agreed, extra
/// headers. `Accept::default()` accepts with none of them.
///
/// ```
/// use ws_proto::handshake::Accept;
/// let accept = Accept::new().with_protocol("chat.v1").with_header("X-Server", "tether");
/// # let _ = accept;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    protocol: Option<String>,
    extensions: Option<String>,
    headers: Vec<(String, String)>,
}

impl Accept {
    /// Accepts with no subprotocol, no extension, no extra header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers with this subprotocol; it must be one of [`Request::protocols`].
    pub fn with_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Answers with this `Sec-WebSocket-Extensions` value (e.g. the permessage-deflate
    /// parameters agreed); every extension named must have been offered.
    pub fn with_extensions(mut self, value: impl Into<String>) -> Self {
        self.extensions = Some(value.into());
        self
    }

    /// Answers with the agreed permessage-deflate parameters (appended to any
    /// [`Accept::with_extensions`] value); `None` changes nothing.
    pub fn with_deflate(mut self, params: Option<&DeflateParams>) -> Self {
        if let Some(params) = params {
            let element = params.to_extension().to_string();
            self.extensions = Some(match self.extensions.take() {
                Some(value) if !value.trim_matches(is_ows).is_empty() => format!("{value}, {element}"),
                _ => element,
            });
        }
        self
    }

    /// Adds a header to the 101 response.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Decodes `application/x-www-form-urlencoded` text: `%XX` escapes and `+` as space.
/// A `%` not followed by two hex digits is kept as is.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The value of a hex digit.
fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// Whether a subprotocol name can be offered or chosen.
pub(crate) fn is_protocol_name(name: &str) -> bool {
    is_token(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%2Bd"), "a b c+d");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert_eq!(form_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn request_debug_output_carries_no_credential() {
        let mut handshake = crate::handshake::ServerHandshake::new(&crate::Config::default());
        let request = handshake
            .handle_bytes(
                b"GET /ws?token=query-secret HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\nAuthorization: Bearer header-secret\r\n\
                  Cookie: sid=cookie-secret\r\n\r\n",
            )
            .unwrap()
            .unwrap();
        assert_eq!(request.bearer_token(), Some("header-secret"));
        let printed = format!("{request:?}");
        for secret in ["query-secret", "header-secret", "cookie-secret"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("/ws"), "{printed}");
    }
}
