//! The client side of the upgrade: writing the request, validating the response.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;

use super::accept_key::accept_key;
use super::error::HandshakeError;
use super::extension::{parse_extensions, Extension};
use super::head::HeadReader;
use super::headers::{check_extra, count_header_lines, is_field_value, parse_error, write_field, Headers};
use super::request::is_protocol_name;
use super::response::Response;
use crate::deflate::{DeflateParams, PERMESSAGE_DEFLATE};
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
    /// The extensions offered, to check the server's choice against.
    offered: Vec<Extension>,
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
            offered,
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

        headers.check_upgrade()?;
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
                .offered
                .iter()
                .any(|o| o.name().eq_ignore_ascii_case(e.name()))
        }) {
            return Err(HandshakeError::UnofferedExtension {
                name: ext.name().to_owned(),
            });
        }
        let mut deflate = None;
        for ext in extensions
            .iter()
            .filter(|e| e.name().eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        {
            if deflate.is_some() {
                return Err(HandshakeError::InvalidDeflateResponse {
                    reason: "permessage-deflate accepted twice",
                });
            }
            deflate = Some(DeflateParams::from_response(ext, &self.offered)?);
        }

        Ok(Response {
            status,
            protocol: protocol.map(str::to_owned),
            headers,
            extensions,
            deflate,
            rest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Extension;

    const KEY: [u8; 16] = *b"the sample nonce";
    /// `accept_key` of base64(KEY), which is RFC 6455's example key.
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    /// An unmasked text frame "hi" and the start of another.
    const FRAMES: &[u8] = &[0x81, 0x02, b'h', b'i', 0x82];

    fn request() -> ClientRequest {
        ClientRequest {
            protocols: vec!["chat.v2".into(), "chat.v1".into()],
            extensions: Some("permessage-deflate; client_max_window_bits".into()),
            origin: Some("https://example.com".into()),
            headers: vec![("Authorization".into(), "Bearer abc".into())],
            ..ClientRequest::new("example.com:8080", "/chat?room=1", KEY)
        }
    }

    fn client() -> ClientHandshake {
        ClientHandshake::new(&Config::default(), request()).unwrap().0
    }

    fn response(status_line: &str, fields: &[(&str, &str)]) -> String {
        let mut out = format!("{status_line}\r\n");
        for (name, value) in fields {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out + "\r\n"
    }

    fn ok_fields() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ACCEPT),
            ("Sec-WebSocket-Protocol", "chat.v1"),
            (
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits=15",
            ),
        ]
    }

    fn ok_response() -> String {
        response("HTTP/1.1 101 Switching Protocols", &ok_fields())
    }

    fn fail(input: &str) -> HandshakeError {
        client().handle_bytes(input.as_bytes()).unwrap_err()
    }

    /// The ok fields with `name` replaced by `value` (removed when `None`).
    fn ok_with(name: &'static str, value: Option<&'static str>) -> String {
        let mut fields: Vec<_> = ok_fields().into_iter().filter(|(n, _)| *n != name).collect();
        if let Some(value) = value {
            fields.push((name, value));
        }
        response("HTTP/1.1 101 Switching Protocols", &fields)
    }

    #[test]
    fn renders_the_request() {
        let (client, bytes) = ClientHandshake::new(&Config::default(), request()).unwrap();
        assert_eq!(
            &bytes[..],
            b"GET /chat?room=1 HTTP/1.1\r\n\
              Host: example.com:8080\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\
              Origin: https://example.com\r\n\
              Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
              Authorization: Bearer abc\r\n\
              \r\n"
        );
        assert_eq!(client.expected_accept(), ACCEPT);

        let (_, bytes) = ClientHandshake::new(&Config::default(), ClientRequest::new("h", "/", KEY)).unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(!text.contains("Sec-WebSocket-Protocol") && !text.contains("Origin"));
    }

    #[test]
    fn refuses_requests_it_cannot_send() {
        let cases = [
            (
                ClientRequest::new("exa mple.com", "/", KEY),
                HandshakeError::InvalidRequestLine {
                    value: "exa mple.com".into(),
                },
            ),
            (
                ClientRequest::new("", "/", KEY),
                HandshakeError::InvalidRequestLine { value: "".into() },
            ),
            (
                ClientRequest::new("h", "chat", KEY),
                HandshakeError::InvalidRequestLine { value: "chat".into() },
            ),
            (
                ClientRequest::new("h", "/a b", KEY),
                HandshakeError::InvalidRequestLine { value: "/a b".into() },
            ),
            (
                ClientRequest {
                    protocols: vec!["a, b".into()],
                    ..ClientRequest::new("h", "/", KEY)
                },
                HandshakeError::InvalidProtocol {
                    protocol: "a, b".into(),
                },
            ),
            (
                ClientRequest {
                    extensions: Some("x;".into()),
                    ..ClientRequest::new("h", "/", KEY)
                },
                HandshakeError::InvalidExtensionHeader { offset: 2 },
            ),
            (
                ClientRequest {
                    origin: Some("o\r\nX: y".into()),
                    ..ClientRequest::new("h", "/", KEY)
                },
                HandshakeError::InvalidHeaderValue {
                    name: "Origin".into(),
                },
            ),
            (
                ClientRequest {
                    headers: vec![("sec-websocket-key".into(), "x".into())],
                    ..ClientRequest::new("h", "/", KEY)
                },
                HandshakeError::ReservedHeader {
                    name: "sec-websocket-key".into(),
                },
            ),
            (
                ClientRequest {
                    headers: vec![("Cookie".into(), "a\nb".into())],
                    ..ClientRequest::new("h", "/", KEY)
                },
                HandshakeError::InvalidHeaderValue {
                    name: "Cookie".into(),
                },
            ),
        ];
        for (request, error) in cases {
            assert_eq!(
                ClientHandshake::new(&Config::default(), request).unwrap_err(),
                error
            );
        }
    }

    #[test]
    fn happy_path_keeps_leftover_frames_under_every_split() {
        let input = [ok_response().as_bytes(), FRAMES].concat();
        for size in 1..=input.len() {
            let mut client = client();
            let mut outcome = None;
            let mut unfed = &input[..0];
            for (i, chunk) in input.chunks(size).enumerate() {
                if let Some(response) = client.handle_bytes(chunk).unwrap() {
                    unfed = &input[((i + 1) * size).min(input.len())..];
                    outcome = Some(response);
                    break;
                }
            }
            let mut response = outcome.expect("complete");
            assert_eq!(response.status(), 101);
            assert_eq!(response.protocol(), Some("chat.v1"));
            assert_eq!(
                response.extensions(),
                [Extension::new("permessage-deflate")
                    .with_param("client_max_window_bits", Some("15".into()))]
            );
            assert_eq!(response.header("SEC-WEBSOCKET-ACCEPT"), Some(ACCEPT));
            assert_eq!(response.headers().len(), 5);
            assert_eq!(
                [&response.take_rest()[..], unfed].concat(),
                FRAMES,
                "chunk size {size}"
            );
            assert!(client.is_finished());
            assert_eq!(client.handle_bytes(b"x"), Err(HandshakeError::Finished));
        }
    }

    #[test]
    fn no_protocol_no_extension_is_fine() {
        let input = response(
            "HTTP/1.1 101 Switching Protocols",
            &[
                ("Upgrade", "WebSocket"),
                ("Connection", "upgrade"),
                ("Sec-WebSocket-Accept", ACCEPT),
            ],
        );
        let response = client().handle_bytes(input.as_bytes()).unwrap().unwrap();
        assert_eq!(response.protocol(), None);
        assert!(response.extensions().is_empty());
        assert!(response.rest().is_empty());
    }

    #[test]
    fn refused_status_is_reported_with_its_code() {
        let input = "HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n";
        assert_eq!(fail(input), HandshakeError::NotSwitchingProtocols { status: 403 });
        let input = response("HTTP/1.1 200 OK", &ok_fields());
        assert_eq!(
            fail(&input),
            HandshakeError::NotSwitchingProtocols { status: 200 }
        );
        let input = response("HTTP/1.0 101 Switching Protocols", &ok_fields());
        assert_eq!(
            fail(&input),
            HandshakeError::UnsupportedHttpVersion { minor: Some(0) }
        );
    }

    #[test]
    fn wrong_accept_fails() {
        assert_eq!(
            fail(&ok_with(
                "Sec-WebSocket-Accept",
                Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            )),
            HandshakeError::AcceptMismatch {
                expected: ACCEPT.into(),
                found: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            }
        );
        assert_eq!(
            fail(&ok_with("Sec-WebSocket-Accept", None)),
            HandshakeError::MissingHeader {
                name: "Sec-WebSocket-Accept"
            }
        );
    }

    #[test]
    fn unoffered_protocol_fails() {
        assert_eq!(
            fail(&ok_with("Sec-WebSocket-Protocol", Some("chat.v3"))),
            HandshakeError::UnofferedProtocol {
                protocol: "chat.v3".into()
            }
        );
        // A list is not one of our tokens either.
        assert_eq!(
            fail(&ok_with("Sec-WebSocket-Protocol", Some("chat.v1, chat.v2"))),
            HandshakeError::UnofferedProtocol {
                protocol: "chat.v1, chat.v2".into()
            }
        );
        // Nothing offered, something picked.
        let (mut client, _) =
            ClientHandshake::new(&Config::default(), ClientRequest::new("h", "/", KEY)).unwrap();
        assert_eq!(
            client.handle_bytes(ok_with("Sec-WebSocket-Extensions", None).as_bytes()),
            Err(HandshakeError::UnofferedProtocol {
                protocol: "chat.v1".into()
            })
        );
    }

    #[test]
    fn unoffered_extension_fails() {
        assert_eq!(
            fail(&ok_with(
                "Sec-WebSocket-Extensions",
                Some("permessage-deflate, x-webkit")
            )),
            HandshakeError::UnofferedExtension {
                name: "x-webkit".into()
            }
        );
        assert_eq!(
            fail(&ok_with(
                "Sec-WebSocket-Extensions",
                Some("permessage-deflate; =")
            )),
            HandshakeError::InvalidExtensionHeader { offset: 20 }
        );
    }

    #[test]
    fn upgrade_and_connection_are_checked() {
        assert_eq!(
            fail(&ok_with("Upgrade", None)),
            HandshakeError::MissingHeader { name: "Upgrade" }
        );
        assert_eq!(
            fail(&ok_with("Upgrade", Some("h2c"))),
            HandshakeError::UpgradeNotWebSocket { found: "h2c".into() }
        );
        assert_eq!(
            fail(&ok_with("Connection", None)),
            HandshakeError::MissingHeader { name: "Connection" }
        );
        assert_eq!(
            fail(&ok_with("Connection", Some("close"))),
            HandshakeError::ConnectionNotUpgrade {
                found: "close".into()
            }
        );
    }

    #[test]
    fn malformed_responses_fail() {
        for input in [
            "HTTP/1.1 abc Nope\r\n\r\n",
            "HTTP/1.1 101 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(fail(input), HandshakeError::MalformedHttp { .. }),
                "{input:?}"
            );
        }
        assert_eq!(
            fail("HTTP/2 101 OK\r\n\r\n"),
            HandshakeError::UnsupportedHttpVersion { minor: None }
        );
    }

    #[test]
    fn limits_apply() {
        let config = Config::default();
        let (mut client, _) = ClientHandshake::new(&config, request()).unwrap();
        let mut input = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
        input.resize(config.max_handshake_size, b'a');
        assert_eq!(
            client.handle_bytes(&input),
            Err(HandshakeError::HeadTooLarge {
                len: config.max_handshake_size,
                max: config.max_handshake_size
            })
        );

        let mut input = "HTTP/1.1 101 Switching Protocols\r\n".to_owned();
        for i in 0..65 {
            input.push_str(&format!("X-{i}: {i}\r\n"));
        }
        assert_eq!(
            fail(&(input + "\r\n")),
            HandshakeError::TooManyHeaders { count: 65, max: 64 }
        );
    }

    #[test]
    fn terminator_search_is_linear() {
        let n = 16 * 1024;
        let config = Config {
            max_handshake_size: 4 * n,
            ..Config::default()
        };
        let (mut client, _) = ClientHandshake::new(&config, request()).unwrap();
        for i in 0..n {
            let byte = b"\r\n\r"[i % 3];
            assert!(client.handle_bytes(&[byte]).unwrap().is_none());
        }
        assert_eq!(client.examined(), n);
    }
}
