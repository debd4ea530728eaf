//! The client side of the upgrade: writing the request, validating the response.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use super::accept_key::accept_key;
use super::error::HandshakeError;
use super::extension::parse_extensions;
use super::head::HeadReader;
use super::headers::{check_extra, count_header_lines, is_field_value, parse_error, write_field, Headers};
use super::request::is_protocol_name;
use super::response::Response;
use crate::Config;

/// Headers the request writes itself; [`ClientRequest::headers`] may not repeat them.
const RESERVED: &[&str] = &[
    "Host",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Origin",
];

/// What a client asks for when it opens a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Host` header: the server's host, with `:port` when not the default.
    pub host: String,
    /// The request target: path and optional query, starting with `/`, already
    /// percent-encoded (visible ASCII only).
    pub path_and_query: String,
    /// The 16-byte nonce sent as `Sec-WebSocket-Key`. It must be fresh and random for
    /// each connection (RFC 6455 §4.1); the caller draws it, as this crate has no
    /// source of randomness.
    pub key: [u8; 16],
    /// Subprotocols to offer, most preferred first (`Sec-WebSocket-Protocol`).
    pub protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` offer, verbatim (e.g.
    /// `permessage-deflate; client_max_window_bits`).
    pub extensions: Option<String>,
    /// The `Origin` header, for clients that act on behalf of a web origin.
    pub origin: Option<String>,
    /// Extra headers (`Authorization`, `Cookie`, …), written in order.
    pub headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// A request for `path_and_query` on `host`, with nonce `key` and nothing else.
    pub fn new(host: impl Into<String>, path_and_query: impl Into<String>, key: [u8; 16]) -> Self {
        Self {
            host: host.into(),
            path_and_query: path_and_query.into(),
            key,
            protocols: Vec::new(),
            extensions: None,
            origin: None,
            headers: Vec::new(),
        }
    }
}

/// The client side of the upgrade handshake.
///
/// [`ClientHandshake::new`] renders the request to write; feed every chunk read back
/// from the socket to [`ClientHandshake::handle_bytes`], in any split, until it returns
/// the validated [`Response`] or an error. Limits come from
/// [`Config::max_handshake_size`] and [`Config::max_handshake_headers`]; the timeout
/// is the caller's, as there is no clock here.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    reader: HeadReader,
    max_headers: usize,
    expected_accept: String,
    protocols: Vec<String>,
    extension_names: Vec<String>,
    finished: bool,
}

impl ClientHandshake {
    /// Checks `request` and renders it. Returns the handshake, waiting for the
    /// response, and the request bytes to write to the socket.
    ///
    /// Errors are the local caller's: a host or target that cannot be sent as given,
    /// a subprotocol that is not a token, a malformed extension offer, an extra header
    /// that is invalid or written by the handshake itself.
    pub fn new(config: &Config, request: ClientRequest) -> Result<(Self, Bytes), HandshakeError> {
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !visible(&request.host) {
            return Err(HandshakeError::InvalidRequestLine { value: request.host });
        }
        if !request.path_and_query.starts_with('/') || !visible(&request.path_and_query) {
            return Err(HandshakeError::InvalidRequestLine {
                value: request.path_and_query,
            });
        }
        if let Some(bad) = request.protocols.iter().find(|p| !is_protocol_name(p)) {
            return Err(HandshakeError::InvalidProtocol {
                protocol: bad.clone(),
            });
        }
        let mut offered = Vec::new();
        if let Some(value) = &request.extensions {
            if !is_field_value(value) {
                return Err(HandshakeError::InvalidHeaderValue {
                    name: "Sec-WebSocket-Extensions".into(),
                });
            }
            parse_extensions(value, &mut offered)?;
        }
        if let Some(origin) = &request.origin {
            if !is_field_value(origin) {
                return Err(HandshakeError::InvalidHeaderValue {
                    name: "Origin".into(),
                });
            }
        }
        for (name, value) in &request.headers {
            check_extra(name, value, RESERVED)?;
        }

        let key = STANDARD.encode(request.key);
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(request.path_and_query.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        write_field(&mut out, "Host", &request.host);
        write_field(&mut out, "Upgrade", "websocket");
        write_field(&mut out, "Connection", "Upgrade");
        write_field(&mut out, "Sec-WebSocket-Key", &key);
        write_field(&mut out, "Sec-WebSocket-Version", "13");
        if let Some(origin) = &request.origin {
            write_field(&mut out, "Origin", origin);
        }
        if !request.protocols.is_empty() {
            write_field(&mut out, "Sec-WebSocket-Protocol", &request.protocols.join(", "));
        }
        if let (Some(value), false) = (&request.extensions, offered.is_empty()) {
            write_field(&mut out, "Sec-WebSocket-Extensions", value.trim());
        }
        for (name, value) in &request.headers {
            write_field(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");

        let handshake = Self {
            reader: HeadReader::new(config.max_handshake_size),
            max_headers: config.max_handshake_headers,
            expected_accept: accept_key(key.as_bytes()),
            protocols: request.protocols,
            extension_names: offered.into_iter().map(|e| e.name().to_owned()).collect(),
            finished: false,
        };
        Ok((handshake, Bytes::from(out)))
    }

    /// Takes the next chunk read from the socket.
    ///
    /// - `Ok(None)`: the response head is not complete yet; read more.
    /// - `Ok(Some(response))`: the server accepted. Bytes after its head are in
    ///   [`Response::rest`].
    /// - `Err(error)`: the server refused ([`HandshakeError::NotSwitchingProtocols`])
    ///   or answered in a way RFC 6455 §4.1 says to fail; close the connection.
    ///
    /// After `Ok(Some(_))` or `Err(_)` the handshake is finished: a further call is a
    /// caller bug and returns [`HandshakeError::Finished`] without consuming the bytes.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<Response>, HandshakeError> {
        if self.finished {
            return Err(HandshakeError::Finished);
        }
        let outcome = self
            .reader
            .feed(data)
            .and_then(|head| head.map(|h| self.parse_response(&h.head, h.rest)).transpose());
        if !matches!(outcome, Ok(None)) {
            self.finished = true;
        }
        outcome
    }

    /// The `Sec-WebSocket-Accept` value the server must answer with.
    pub fn expected_accept(&self) -> &str {
        &self.expected_accept
    }

    /// Whether the handshake has produced its outcome.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bytes the terminator search has examined (for the linear-time test).
    #[cfg(test)]
    pub(crate) fn examined(&self) -> usize {
        self.reader.examined
    }

    /// Parses and validates a complete response head (RFC 6455 §4.1, the client's
    /// checks of the server's response).
    fn parse_response(&self, head: &[u8], rest: Bytes) -> Result<Response, HandshakeError> {
        let lines = count_header_lines(head);
        if lines > self.max_headers {
            return Err(HandshakeError::TooManyHeaders {
                count: lines,
                max: self.max_headers,
            });
        }
        let mut slots = vec![httparse::EMPTY_HEADER; lines];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(len)) if len == head.len() => {}
            Ok(_) => {
                return Err(HandshakeError::MalformedHttp {
                    reason: "head not terminated by CRLF CRLF",
                })
            }
            Err(err) => return Err(parse_error(err, lines, self.max_headers)),
        }
        let minor = parsed.version.unwrap_or_default();
        let status = parsed.code.unwrap_or_default();
        if minor != 1 {
            return Err(HandshakeError::UnsupportedHttpVersion { minor: Some(minor) });
        }
        if status != 101 {
            return Err(HandshakeError::NotSwitchingProtocols { status });
        }
        let headers = Headers::from_parsed(parsed.headers)?;

        if !headers.contains("Upgrade") {
            return Err(HandshakeError::MissingHeader { name: "Upgrade" });
        }
        if !headers.has_token("Upgrade", "websocket") {
            return Err(HandshakeError::UpgradeNotWebSocket {
                found: headers.joined("Upgrade"),
            });
        }
        if !headers.contains("Connection") {
            return Err(HandshakeError::MissingHeader { name: "Connection" });
        }
        if !headers.has_token("Connection", "upgrade") {
            return Err(HandshakeError::ConnectionNotUpgrade {
                found: headers.joined("Connection"),
            });
        }
        let accept = headers
            .single("Sec-WebSocket-Accept")?
            .ok_or(HandshakeError::MissingHeader {
                name: "Sec-WebSocket-Accept",
            })?;
        if accept != self.expected_accept {
            return Err(HandshakeError::AcceptMismatch {
                expected: self.expected_accept.clone(),
                found: accept.to_owned(),
            });
        }
        let protocol = headers.single("Sec-WebSocket-Protocol")?;
        if let Some(protocol) = protocol {
            if !self.protocols.iter().any(|p| p == protocol) {
                return Err(HandshakeError::UnofferedProtocol {
                    protocol: protocol.to_owned(),
                });
            }
        }
        let mut extensions = Vec::new();
        for value in headers.get_all("Sec-WebSocket-Extensions") {
            parse_extensions(value, &mut extensions)?;
        }
        if let Some(ext) = extensions.iter().find(|e| {
            !self
                .extension_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(e.name()))
        }) {
            return Err(HandshakeError::UnofferedExtension {
                name: ext.name().to_owned(),
            });
        }

        Ok(Response {
            status,
            protocol: protocol.map(str::to_owned),
            headers,
            extensions,
            rest,
        })
    }
}
