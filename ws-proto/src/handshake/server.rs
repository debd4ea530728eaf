//! The server side of the upgrade: reading and validating the client's request.

use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::{DecodeSliceError, Engine as _};
use bytes::Bytes;

use super::error::HandshakeError;
use super::extension::parse_extensions;
use super::head::HeadReader;
use super::headers::{count_header_lines, parse_error, split_list, Headers};
use super::rejection::Rejection;
use super::request::Request;
use crate::Config;

/// Reads a client's upgrade request from the bytes of a fresh connection.
///
/// Feed every chunk read from the socket to [`ServerHandshake::handle_bytes`], in any
/// split, until it returns the validated [`Request`] or a [`Rejection`]. The end of the
/// head is found in time linear in the bytes received, and the head is parsed once,
/// when complete. Limits come from [`Config::max_handshake_size`] and
/// [`Config::max_handshake_headers`]; the handshake timeout (10 s by default in
/// ws-driver, `App::handshake_timeout`) needs a clock, so it is the caller's: close
/// the socket if no outcome has arrived in time.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    reader: HeadReader,
    max_headers: usize,
    finished: bool,
}

impl ServerHandshake {
    /// A handshake waiting for the request, with the limits of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            reader: HeadReader::new(config.max_handshake_size),
            max_headers: config.max_handshake_headers,
            finished: false,
        }
    }

    /// Takes the next chunk read from the socket.
    ///
    /// - `Ok(None)`: the head is not complete yet; read more.
    /// - `Ok(Some(request))`: a valid upgrade request. Bytes after its head are in
    ///   [`Request::rest`].
    /// - `Err(rejection)`: the request is refused; write
    ///   [`Rejection::to_response`] and close.
    ///
    /// After `Ok(Some(_))` or `Err(_)` the handshake is finished: a further call is a
    /// caller bug and returns a rejection carrying [`HandshakeError::Finished`] (status
    /// 500, nothing to write) without consuming the bytes.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<Request>, Rejection> {
        if self.finished {
            return Err(Rejection::for_error(HandshakeError::Finished));
        }
        let outcome = self.reader.feed(data).and_then(|head| {
            head.map(|h| parse_request(&h.head, h.rest, self.max_headers))
                .transpose()
        });
        match outcome {
            Ok(None) => Ok(None),
            Ok(Some(request)) => {
                self.finished = true;
                Ok(Some(request))
            }
            Err(error) => {
                self.finished = true;
                Err(Rejection::for_error(error))
            }
        }
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
}

/// The first checks of [`ServerHandshake`], for a server that hands the head on to
/// another HTTP parser (hyper, in adapter-tokio's detached mode) but must refuse what
/// tether refuses before that parser sees it: a head larger than
/// [`Config::max_handshake_size`] (431) and bare-LF line endings (400), found in time
/// linear in the input however it is split. The handshake timeout stays the caller's.
#[derive(Debug, Clone)]
pub struct RequestHeadReader {
    reader: HeadReader,
}

impl RequestHeadReader {
    /// A reader with the limits of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            reader: HeadReader::new(config.max_handshake_size),
        }
    }

    /// Takes the next chunk read from the socket: `Ok(None)` while the head is
    /// incomplete; once its blank line arrived, every byte read so far (the head and
    /// what followed it), to replay into the next parser; or the refusal to write
    /// before closing. Call no more after `Ok(Some(_))` or `Err(_)`.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<Option<Bytes>, Rejection> {
        match self.reader.feed(data) {
            Ok(None) => Ok(None),
            Ok(Some(head)) => {
                let mut all = head.head;
                all.extend_from_slice(&head.rest);
                Ok(Some(Bytes::from(all)))
            }
            Err(error) => Err(Rejection::for_error(error)),
        }
    }
}

/// Parses and validates a complete request head (RFC 6455 §4.2.1).
fn parse_request(head: &[u8], rest: Bytes, max_headers: usize) -> Result<Request, HandshakeError> {
    let lines = count_header_lines(head);
    if lines > max_headers {
        return Err(HandshakeError::TooManyHeaders {
            count: lines,
            max: max_headers,
        });
    }
    let mut slots = vec![httparse::EMPTY_HEADER; lines];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        // The parser ended the head before our CRLF CRLF: it accepted bare LFs.
        Ok(_) => {
            return Err(HandshakeError::MalformedHttp {
                reason: "head not terminated by CRLF CRLF",
            })
        }
        Err(err) => return Err(parse_error(err, lines, max_headers)),
    }
    // A complete parse sets all three.
    let method = parsed.method.unwrap_or_default();
    let target = parsed.path.unwrap_or_default();
    let minor = parsed.version.unwrap_or_default();
    let headers = Headers::from_parsed(parsed.headers)?;
    validate_request(method, target, minor, headers, rest)
}

/// Validates a request already split into parts by an HTTP server (hyper, in
/// adapter-tokio's detached mode) with exactly the checks and refusals of
/// [`ServerHandshake`]: the limits of `config` (431), the method (405), the version
/// (400), the upgrade headers (400, 426). `minor` is the `x` of `HTTP/1.x`; header
/// values must be UTF-8 (else 400). The request's [`Request::rest`] is empty: the
/// server that parsed the head keeps what followed it.
pub fn validate_request_parts<'a>(
    config: &Config,
    method: &str,
    target: &str,
    minor: u8,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Request, Rejection> {
    let headers: Vec<(&str, &[u8])> = headers.into_iter().collect();
    let check = || {
        // The head these parts came from, as ws-proto would have counted it.
        let len = method.len()
            + 1
            + target.len()
            + " HTTP/1.1\r\n".len()
            + headers
                .iter()
                .map(|(n, v)| n.len() + 2 + v.len() + 2)
                .sum::<usize>()
            + 2;
        if len > config.max_handshake_size {
            return Err(HandshakeError::HeadTooLarge {
                len,
                max: config.max_handshake_size,
            });
        }
        if headers.len() > config.max_handshake_headers {
            return Err(HandshakeError::TooManyHeaders {
                count: headers.len(),
                max: config.max_handshake_headers,
            });
        }
        let headers = Headers::from_pairs(headers.iter().copied())?;
        validate_request(method, target, minor, headers, Bytes::new())
    };
    check().map_err(Rejection::for_error)
}

/// The checks of RFC 6455 §4.2.1 on a parsed request, shared by both ways in.
fn validate_request(
    method: &str,
    target: &str,
    minor: u8,
    headers: Headers,
    rest: Bytes,
) -> Result<Request, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed {
            method: method.to_owned(),
        });
    }
    if minor != 1 {
        return Err(HandshakeError::UnsupportedHttpVersion { minor: Some(minor) });
    }
    let (path, query) = split_target(target).ok_or_else(|| HandshakeError::InvalidTarget {
        target: target.to_owned(),
    })?;

    if headers.single("Host")?.is_none() {
        return Err(HandshakeError::MissingHeader { name: "Host" });
    }
    headers.check_upgrade()?;
    match headers.single("Sec-WebSocket-Version")? {
        Some("13") => {}
        found => {
            return Err(HandshakeError::UnsupportedVersion {
                found: found.map(str::to_owned),
            })
        }
    }
    let key = headers
        .single("Sec-WebSocket-Key")?
        .ok_or(HandshakeError::MissingHeader {
            name: "Sec-WebSocket-Key",
        })?;
    check_key(key)?;

    let protocols = headers
        .get_all("Sec-WebSocket-Protocol")
        .flat_map(split_list)
        .map(str::to_owned)
        .collect();
    let mut extensions = Vec::new();
    for value in headers.get_all("Sec-WebSocket-Extensions") {
        parse_extensions(value, &mut extensions)?;
    }

    Ok(Request {
        target: target.to_owned(),
        path,
        query,
        headers,
        protocols,
        extensions,
        rest,
    })
}

/// Where a part of a request target is in it.
type Span = Range<usize>;

/// Splits a request target into where its path and raw query are: origin-form
/// (`/p?q`) or absolute-form (`ws://host/p?q`, whose path is `/` when it has none:
/// `None`).
fn split_target(target: &str) -> Option<(Option<Span>, Option<Span>)> {
    let (path_end, query) = match target.find('?') {
        Some(mark) => (mark, Some(mark + 1..target.len())),
        None => (target.len(), None),
    };
    let before = &target[..path_end];
    if before.starts_with('/') {
        return Some((Some(0..path_end), query));
    }
    let scheme_end = before.find("://")?;
    let scheme = &before[..scheme_end];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority = scheme_end + "://".len();
    let path = before[authority..]
        .find('/')
        .map(|slash| authority + slash..path_end);
    Some((path, query))
}

/// Checks that a `Sec-WebSocket-Key` is the base64 of 16 bytes.
fn check_key(key: &str) -> Result<(), HandshakeError> {
    // Decoded on the stack: a key is checked for every connection accepted. One too
    // long for the buffer is decoded again, on the heap, only to say how long it is.
    let mut decoded = [0u8; 64];
    let decoded_len = match STANDARD.decode_slice(key, &mut decoded) {
        Ok(len) => Some(len),
        Err(DecodeSliceError::OutputSliceTooSmall) => STANDARD.decode(key).ok().map(|bytes| bytes.len()),
        Err(DecodeSliceError::DecodeError(_)) => None,
    };
    match decoded_len {
        Some(16) => Ok(()),
        decoded_len => Err(HandshakeError::InvalidKey { decoded_len }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::handshake::{Accept, Extension};

    const VALID: &str = "GET /chat?room=lobby&token=a%20b+c&empty HTTP/1.1\r\n\
        Host: example.com:8080\r\n\
        Upgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Origin: https://example.com\r\n\
        Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n\
        Sec-WebSocket-Protocol: superchat\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        Sec-WebSocket-Extensions: x-foo; a=\"b c\", x-bar\r\n\
        Authorization: bEaReR abc.def\r\n\
        \r\n";

    /// A masked text frame "hi" and the start of another: bytes after the head.
    const FRAMES: &[u8] = &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2, 0x81, 0x85];

    fn valid_with_frames() -> Vec<u8> {
        [VALID.as_bytes(), FRAMES].concat()
    }

    /// Feeds `input` in chunks of the given sizes (cycled); returns the outcome and the
    /// bytes that were never fed.
    fn feed(config: &Config, input: &[u8], sizes: &[usize]) -> (Result<Option<Request>, Rejection>, Vec<u8>) {
        let mut server = ServerHandshake::new(config);
        let mut at = 0;
        for size in sizes.iter().cycle() {
            let end = (at + size.max(&1)).min(input.len());
            match server.handle_bytes(&input[at..end]) {
                Ok(None) if end < input.len() => at = end,
                outcome => return (outcome, input[end..].to_vec()),
            }
        }
        unreachable!()
    }

    fn accept_all(input: &[u8]) -> Request {
        let (outcome, unfed) = feed(&Config::default(), input, &[input.len()]);
        assert!(unfed.is_empty());
        outcome.expect("accepted").expect("complete")
    }

    fn reject(input: &str) -> Rejection {
        let (outcome, _) = feed(&Config::default(), input.as_bytes(), &[input.len()]);
        outcome.expect_err("rejected")
    }

    fn response_text(rejection: &Rejection) -> String {
        String::from_utf8(rejection.to_response().to_vec()).unwrap()
    }

    /// VALID with header `name` removed and, when `value` is given, set to it.
    fn with_header(name: &str, value: Option<&str>) -> String {
        let mut out = String::new();
        for line in VALID.split_inclusive("\r\n") {
            if line
                .to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                continue;
            }
            if line == "\r\n" {
                if let Some(value) = value {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
            }
            out.push_str(line);
        }
        out
    }

    #[test]
    fn valid_request_exposes_everything() {
        let mut request = accept_all(&valid_with_frames());
        assert_eq!(request.method(), "GET");
        assert_eq!(request.target(), "/chat?room=lobby&token=a%20b+c&empty");
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("room=lobby&token=a%20b+c&empty"));
        assert_eq!(request.query_param("room").as_deref(), Some("lobby"));
        assert_eq!(request.query_param("token").as_deref(), Some("a b c"));
        assert_eq!(request.query_param("empty").as_deref(), Some(""));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(request.host(), "example.com:8080");
        assert_eq!(request.origin(), Some("https://example.com"));
        assert_eq!(request.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(request.header("sec-websocket-version"), Some("13"));
        assert_eq!(request.header("SEC-WEBSOCKET-PROTOCOL"), Some("chat.v2, chat.v1"));
        assert_eq!(request.headers().len(), 11);
        assert_eq!(
            request.headers().iter().next(),
            Some(("Host", "example.com:8080"))
        );
        assert_eq!(
            request.headers().iter().last(),
            Some(("Authorization", "bEaReR abc.def"))
        );
        assert_eq!(request.protocols(), ["chat.v2", "chat.v1", "superchat"]);
        assert_eq!(
            request.extensions(),
            [
                Extension::new("permessage-deflate").with_param("client_max_window_bits", None),
                Extension::new("x-foo").with_param("a", Some("b c".into())),
                Extension::new("x-bar"),
            ]
        );
        assert_eq!(request.bearer_token(), Some("abc.def"));
        assert_eq!(&request.rest()[..], FRAMES);
        assert_eq!(&request.take_rest()[..], FRAMES);
        assert!(request.rest().is_empty());
    }

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        let request = accept_all(with_header("Authorization", Some("Basic dXNlcg==")).as_bytes());
        assert_eq!(request.bearer_token(), None);
        let request = accept_all(with_header("Authorization", Some("Bearer")).as_bytes());
        assert_eq!(request.bearer_token(), None);
        let request = accept_all(with_header("Authorization", None).as_bytes());
        assert_eq!(request.bearer_token(), None);
    }

    #[test]
    fn absolute_form_target() {
        let input = VALID.replacen("/chat?room", "wss://example.com/chat?room", 1);
        let request = accept_all(input.as_bytes());
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query_param("room").as_deref(), Some("lobby"));
        let input = VALID.replacen("/chat?room=lobby&token=a%20b+c&empty", "ws://example.com", 1);
        let request = accept_all(input.as_bytes());
        assert_eq!((request.path(), request.query()), ("/", None));
        let input = VALID.replacen("/chat?room", "ws://example.com?room", 1);
        let request = accept_all(input.as_bytes());
        assert_eq!(request.path(), "/");
        assert_eq!(request.query(), Some("room=lobby&token=a%20b+c&empty"));
        assert_eq!(
            request.target(),
            "ws://example.com?room=lobby&token=a%20b+c&empty"
        );
    }

    #[test]
    fn same_request_and_rest_under_every_split() {
        let input = valid_with_frames();
        let whole = accept_all(&input);
        for size in 1..=input.len() {
            let (outcome, unfed) = feed(&Config::default(), &input, &[size]);
            let request = outcome.unwrap().unwrap();
            // Nothing lost: what the handshake kept plus what was never fed is the
            // exact stream after the head.
            assert_eq!(
                [&request.rest()[..], &unfed].concat(),
                FRAMES,
                "chunk size {size}"
            );
            assert_eq!(request.headers(), whole.headers());
            assert_eq!(
                (request.path(), request.protocols(), request.extensions()),
                (whole.path(), whole.protocols(), whole.extensions())
            );
        }
        // One byte at a time, the head ends exactly on the last byte fed.
        let (outcome, unfed) = feed(&Config::default(), &input, &[1]);
        assert!(outcome.unwrap().unwrap().rest().is_empty());
        assert_eq!(unfed, FRAMES);
        // All at once, the request equals the whole-input one including its rest.
        assert_eq!(
            feed(&Config::default(), &input, &[input.len()])
                .0
                .unwrap()
                .unwrap(),
            whole
        );
    }

    proptest! {
        #[test]
        fn same_request_under_random_chunks(sizes in prop::collection::vec(1usize..200, 1..40)) {
            let input = valid_with_frames();
            let whole = accept_all(&input);
            let (outcome, unfed) = feed(&Config::default(), &input, &sizes);
            let mut request = outcome.unwrap().unwrap();
            let rest = request.take_rest();
            prop_assert_eq!([&rest[..], &unfed].concat(), FRAMES);
            let mut whole = whole;
            whole.take_rest();
            prop_assert_eq!(request, whole);
        }

        #[test]
        fn garbage_never_panics_and_split_does_not_matter(
            input in prop::collection::vec(any::<u8>(), 0..600),
            size in 1usize..64,
        ) {
            let config = Config { max_handshake_size: 512, ..Config::default() };
            let (at_once, _) = feed(&config, &input, &[input.len().max(1)]);
            let (split, _) = feed(&config, &input, &[size]);
            match (at_once, split) {
                (Ok(Some(mut a)), Ok(Some(mut b))) => {
                    a.take_rest();
                    b.take_rest();
                    prop_assert_eq!(a, b);
                }
                (a, b) => prop_assert_eq!(a.map(|r| r.is_some()), b.map(|r| r.is_some())),
            }
        }
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let rejection = reject(&VALID.replacen("GET", "POST", 1));
        assert_eq!(rejection.status(), 405);
        assert_eq!(
            rejection.error(),
            &HandshakeError::MethodNotAllowed {
                method: "POST".into()
            }
        );
        let text = response_text(&rejection);
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn wrong_http_version_is_400() {
        let rejection = reject(&VALID.replacen("HTTP/1.1", "HTTP/1.0", 1));
        assert_eq!(rejection.status(), 400);
        assert_eq!(
            rejection.error(),
            &HandshakeError::UnsupportedHttpVersion { minor: Some(0) }
        );
        // httparse only knows HTTP/1.0 and HTTP/1.1; anything else is a version error.
        let rejection = reject(&VALID.replacen("HTTP/1.1", "HTTP/2.0", 1));
        assert_eq!(rejection.status(), 400);
        assert_eq!(
            rejection.error(),
            &HandshakeError::UnsupportedHttpVersion { minor: None }
        );
    }

    #[test]
    fn header_faults_are_400() {
        let cases: Vec<(String, HandshakeError)> = vec![
            (
                with_header("Host", None),
                HandshakeError::MissingHeader { name: "Host" },
            ),
            (
                VALID.replacen("Host: example.com:8080\r\n", "Host: a\r\nHost: b\r\n", 1),
                HandshakeError::DuplicateHeader { name: "Host" },
            ),
            (
                with_header("Upgrade", None),
                HandshakeError::MissingHeader { name: "Upgrade" },
            ),
            (
                with_header("Upgrade", Some("h2c, websocket2")),
                HandshakeError::UpgradeNotWebSocket {
                    found: "h2c, websocket2".into(),
                },
            ),
            (
                with_header("Connection", None),
                HandshakeError::MissingHeader { name: "Connection" },
            ),
            (
                with_header("Connection", Some("keep-alive, upgraded")),
                HandshakeError::ConnectionNotUpgrade {
                    found: "keep-alive, upgraded".into(),
                },
            ),
            (
                with_header("Sec-WebSocket-Key", None),
                HandshakeError::MissingHeader {
                    name: "Sec-WebSocket-Key",
                },
            ),
            (
                with_header("Sec-WebSocket-Key", Some("not base64!")),
                HandshakeError::InvalidKey { decoded_len: None },
            ),
            (
                // 15 bytes.
                with_header("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA")),
                HandshakeError::InvalidKey {
                    decoded_len: Some(15),
                },
            ),
            (
                // 17 bytes.
                with_header("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAAA=")),
                HandshakeError::InvalidKey {
                    decoded_len: Some(17),
                },
            ),
            (
                // 96 bytes: more than the check decodes on the stack.
                with_header("Sec-WebSocket-Key", Some(&"A".repeat(128))),
                HandshakeError::InvalidKey {
                    decoded_len: Some(96),
                },
            ),
            (
                // Too long for the stack, and not base64 further on.
                with_header("Sec-WebSocket-Key", Some(&format!("{}!", "A".repeat(127)))),
                HandshakeError::InvalidKey { decoded_len: None },
            ),
            (
                VALID.replacen(
                    "Origin:",
                    "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nOrigin:",
                    1,
                ),
                HandshakeError::DuplicateHeader {
                    name: "Sec-WebSocket-Key",
                },
            ),
            (
                with_header("Sec-WebSocket-Extensions", Some("permessage-deflate; =1")),
                HandshakeError::InvalidExtensionHeader { offset: 20 },
            ),
            (
                VALID.replacen("/chat?room", "*?room", 1),
                HandshakeError::InvalidTarget {
                    target: "*?room=lobby&token=a%20b+c&empty".into(),
                },
            ),
        ];
        for (input, error) in cases {
            let rejection = reject(&input);
            assert_eq!(rejection.error(), &error, "{input}");
            assert_eq!(rejection.status(), 400, "{input}");
            let text = response_text(&rejection);
            assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
            assert!(text.ends_with(&format!("\r\n\r\n{error}\n")), "{text}");
        }
    }

    #[test]
    fn non_utf8_header_value_is_400() {
        // UTF-8 values are kept as they are.
        let request = accept_all(with_header("X-Name", Some("caf\u{e9}")).as_bytes());
        assert_eq!(request.header("x-name"), Some("caf\u{e9}"));

        let mut input = with_header("X-Latin1", Some("caf#")).into_bytes();
        let at = input.iter().position(|&b| b == b'#').unwrap();
        input[at] = 0xe9;
        let (outcome, _) = feed(&Config::default(), &input, &[input.len()]);
        let rejection = outcome.unwrap_err();
        assert_eq!(rejection.status(), 400);
        assert_eq!(
            rejection.error(),
            &HandshakeError::InvalidHeaderValue {
                name: "X-Latin1".into()
            }
        );
    }

    #[test]
    fn malformed_http_is_400() {
        for input in [
            "GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
            "\r\n\r\n",
            // Bare LF line endings end the head before our CRLF CRLF.
            "GET / HTTP/1.1\nHost: a\n\nX: y\r\n\r\n",
        ] {
            let rejection = reject(input);
            assert_eq!(rejection.status(), 400, "{input:?}");
            assert!(
                matches!(rejection.error(), HandshakeError::MalformedHttp { .. }),
                "{input:?}: {:?}",
                rejection.error()
            );
        }
    }

    #[test]
    fn wrong_websocket_version_is_426() {
        for (value, found) in [
            (Some("8"), Some("8")),
            (None, None),
            (Some("13, 8"), Some("13, 8")),
        ] {
            let rejection = reject(&with_header("Sec-WebSocket-Version", value));
            assert_eq!(rejection.status(), 426);
            assert_eq!(
                rejection.error(),
                &HandshakeError::UnsupportedVersion {
                    found: found.map(str::to_owned)
                }
            );
            let text = response_text(&rejection);
            assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
            assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        }
    }

    #[test]
    fn oversized_head_is_431_without_waiting_for_more() {
        let config = Config::default();
        let max = config.max_handshake_size;
        let mut input = b"GET / HTTP/1.1\r\nX-Padding: ".to_vec();
        input.resize(max + 100, b'a');

        // Fed at once: refused immediately.
        let mut server = ServerHandshake::new(&config);
        let rejection = server.handle_bytes(&input).unwrap_err();
        assert_eq!(rejection.status(), 431);
        assert_eq!(rejection.error(), &HandshakeError::HeadTooLarge { len: max, max });
        assert!(response_text(&rejection).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));

        // Fed in pieces: refused by the piece that reaches the limit, not later.
        let mut server = ServerHandshake::new(&config);
        assert!(server.handle_bytes(&input[..max - 1]).unwrap().is_none());
        let rejection = server.handle_bytes(&input[max - 1..max]).unwrap_err();
        assert_eq!(rejection.error(), &HandshakeError::HeadTooLarge { len: max, max });
    }

    #[test]
    fn head_of_exactly_the_limit_is_accepted() {
        let base = with_header("X-Padding", Some(""));
        let pad = Config::default().max_handshake_size - base.len();
        let input = with_header("X-Padding", Some(&"p".repeat(pad)));
        assert_eq!(input.len(), Config::default().max_handshake_size);
        assert_eq!(
            accept_all(input.as_bytes()).header("x-padding").unwrap().len(),
            pad
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        // VALID has 11 header lines; pad to exactly 64, then 65.
        let mut input = VALID.trim_end_matches("\r\n").to_owned() + "\r\n";
        for i in 0..(64 - 11) {
            input.push_str(&format!("X-Pad-{i}: {i}\r\n"));
        }
        let at_limit = input.clone() + "\r\n";
        assert_eq!(accept_all(at_limit.as_bytes()).headers().len(), 64);

        input.push_str("X-One-Too-Many: 1\r\n\r\n");
        let rejection = reject(&input);
        assert_eq!(rejection.status(), 431);
        assert_eq!(
            rejection.error(),
            &HandshakeError::TooManyHeaders { count: 65, max: 64 }
        );
    }

    #[test]
    fn finished_handshake_refuses_more_bytes() {
        let mut server = ServerHandshake::new(&Config::default());
        assert!(server.handle_bytes(VALID.as_bytes()).unwrap().is_some());
        assert!(server.is_finished());
        let again = server.handle_bytes(b"more").unwrap_err();
        assert_eq!((again.status(), again.error()), (500, &HandshakeError::Finished));

        let mut server = ServerHandshake::new(&Config::default());
        assert!(server.handle_bytes(b"POST / HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(
            server.handle_bytes(b"x").unwrap_err().error(),
            &HandshakeError::Finished
        );
    }

    #[test]
    fn terminator_search_is_linear() {
        let n = 16 * 1024;
        let config = Config {
            max_handshake_size: 4 * n,
            ..Config::default()
        };
        let mut server = ServerHandshake::new(&config);
        let mut input = b"GET / HTTP/1.1\r\nX-Slow: ".to_vec();
        input.resize(n, b'\r');
        for byte in &input {
            assert!(server.handle_bytes(std::slice::from_ref(byte)).unwrap().is_none());
        }
        // Every byte examined exactly once: n, not n²/2.
        assert_eq!(server.examined(), n);

        // And a complete request fed a byte at a time costs its length.
        let mut server = ServerHandshake::new(&Config::default());
        for byte in VALID.as_bytes() {
            let _ = server.handle_bytes(std::slice::from_ref(byte));
        }
        assert_eq!(server.examined(), VALID.len());
    }

    #[test]
    fn accept_renders_101() {
        let request = accept_all(VALID.as_bytes());
        let response = request
            .accept(
                &Accept::new()
                    .with_protocol("chat.v1")
                    .with_extensions("permessage-deflate; client_max_window_bits=15")
                    .with_header("X-Server", "tether"),
            )
            .unwrap();
        assert_eq!(
            &response[..],
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat.v1\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n\
              X-Server: tether\r\n\
              \r\n"
        );
        let plain = request.accept(&Accept::default()).unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn accept_refuses_the_callers_mistakes() {
        let request = accept_all(VALID.as_bytes());
        let cases = [
            (
                Accept::new().with_protocol("chat.v3"),
                HandshakeError::UnofferedProtocol {
                    protocol: "chat.v3".into(),
                },
            ),
            (
                Accept::new().with_extensions("permessage-deflate, x-other"),
                HandshakeError::UnofferedExtension {
                    name: "x-other".into(),
                },
            ),
            (
                Accept::new().with_extensions("permessage-deflate;"),
                HandshakeError::InvalidExtensionHeader { offset: 19 },
            ),
            (
                Accept::new().with_extensions("x-foo\r\nInjected: 1"),
                HandshakeError::InvalidHeaderValue {
                    name: "Sec-WebSocket-Extensions".into(),
                },
            ),
            (
                Accept::new().with_header("Set-Cookie", "a=b\r\nInjected: 1"),
                HandshakeError::InvalidHeaderValue {
                    name: "Set-Cookie".into(),
                },
            ),
            (
                Accept::new().with_header("sec-websocket-accept", "forged"),
                HandshakeError::ReservedHeader {
                    name: "sec-websocket-accept".into(),
                },
            ),
        ];
        for (accept, error) in cases {
            assert_eq!(request.accept(&accept), Err(error));
        }
    }

    #[test]
    fn callers_own_refusals() {
        let request = accept_all(VALID.as_bytes());
        let rejection = request.reject(403, "origin not allowed").unwrap();
        assert_eq!(rejection.status(), 403);
        assert_eq!(
            rejection.error(),
            &HandshakeError::Refused {
                reason: "origin not allowed".into()
            }
        );
        assert_eq!(
            response_text(&rejection),
            "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\n\r\norigin not allowed\n"
        );
        let rejection = request
            .reject(401, "no token")
            .unwrap()
            .with_header("WWW-Authenticate", "Bearer")
            .unwrap();
        assert!(response_text(&rejection).starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert_eq!(
            request.reject(200, "ok"),
            Err(HandshakeError::InvalidStatus { status: 200 })
        );
        assert_eq!(
            request.reject(101, "no"),
            Err(HandshakeError::InvalidStatus { status: 101 })
        );
    }
}
