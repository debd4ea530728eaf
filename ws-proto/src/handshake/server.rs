//! The server side of the upgrade: reading and validating the client's request.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
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
/// ARCHITECTURE §4) needs a clock, so it is the caller's: close the socket if no
/// outcome has arrived in time.
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
    let headers = Headers::from_parsed(parsed.headers)?;

    if headers.single("Host")?.is_none() {
        return Err(HandshakeError::MissingHeader { name: "Host" });
    }
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
        method: method.to_owned(),
        target: target.to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        key: key.to_owned(),
        headers,
        protocols,
        extensions,
        rest,
    })
}

/// Splits a request target into path and raw query: origin-form (`/p?q`) or
/// absolute-form (`ws://host/p?q`, whose path defaults to `/`).
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let (before, query) = match target.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (target, None),
    };
    if before.starts_with('/') {
        return Some((before, query));
    }
    let (scheme, after) = before.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    Some(match after.find('/') {
        Some(slash) => (&after[slash..], query),
        None => ("/", query),
    })
}

/// Checks that a `Sec-WebSocket-Key` is the base64 of 16 bytes.
fn check_key(key: &str) -> Result<(), HandshakeError> {
    match STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 16 => Ok(()),
        Ok(bytes) => Err(HandshakeError::InvalidKey {
            decoded_len: Some(bytes.len()),
        }),
        Err(_) => Err(HandshakeError::InvalidKey { decoded_len: None }),
    }
}
