//! A refused upgrade request and the HTTP response that says so.

use std::fmt;

use bytes::Bytes;

use super::error::HandshakeError;
use super::headers::{check_extra, write_field};

/// Headers a rejection writes itself.
const RESERVED: &[&str] = &["Connection", "Content-Length", "Content-Type"];

/// A refused upgrade: the HTTP status, what was wrong, and the response to write back
/// before closing the connection ([`Rejection::to_response`]).
///
/// The server handshake produces one for every fault of the request (400, 405, 426,
/// 431); [`Request::reject`](super::Request::reject) produces one for the
/// application's own refusals (401, 403, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: u16,
    error: HandshakeError,
    headers: Vec<(String, String)>,
}

impl Rejection {
    /// The refusal of a fault of the request, with the status that answers it (431,
    /// 405 with `Allow: GET`, 426 with `Sec-WebSocket-Version: 13`, else 400).
    pub fn for_error(error: HandshakeError) -> Self {
        let status = match error {
            HandshakeError::HeadTooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::MethodNotAllowed { .. } => 405,
            HandshakeError::UnsupportedVersion { .. } => 426,
            HandshakeError::Finished => 500,
            _ => 400,
        };
        let mut rejection = Self {
            status,
            error,
            headers: Vec::new(),
        };
        match status {
            405 => rejection.headers.push(("Allow".into(), "GET".into())),
            426 => rejection
                .headers
                .push(("Sec-WebSocket-Version".into(), "13".into())),
            _ => {}
        }
        rejection
    }

    /// The application's own refusal with `status`, `reason` becoming the plain-text
    /// body: what [`Request::reject`](super::Request::reject) makes, for a server
    /// that refuses before it has a request to judge (at its connection limit, say).
    ///
    /// Fails (a local error) with [`HandshakeError::InvalidStatus`] unless `status` is
    /// in 400–599.
    pub fn refused(status: u16, reason: impl Into<String>) -> Result<Self, HandshakeError> {
        if !(400..=599).contains(&status) {
            return Err(HandshakeError::InvalidStatus { status });
        }
        Ok(Self {
            status,
            error: HandshakeError::Refused {
                reason: reason.into(),
            },
            headers: Vec::new(),
        })
    }

    /// Adds a header to the response, e.g. `WWW-Authenticate` for a 401 or
    /// `Retry-After` for a 503.
    ///
    /// Fails (a local error) if the name is not a token, the value would break the
    /// line, or the header is one the rejection writes itself (`Connection`,
    /// `Content-Length`, `Content-Type`).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, HandshakeError> {
        check_extra(name, value, RESERVED)?;
        self.headers.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// What was wrong with the request.
    pub fn error(&self) -> &HandshakeError {
        &self.error
    }

    /// Consumes the rejection, keeping what was wrong.
    pub fn into_error(self) -> HandshakeError {
        self.error
    }

    /// The headers the response carries besides `Connection`, `Content-Type` and
    /// `Content-Length` (`Allow: GET` for a 405, `Sec-WebSocket-Version: 13` for a 426).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The complete HTTP response: status line, `Connection: close`, a plain-text body
    /// giving the reason, and the status-specific headers. Write it, then close.
    pub fn to_response(&self) -> Bytes {
        let body = format!("{}\n", self.error);
        let mut out = Vec::with_capacity(128 + body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status)).as_bytes(),
        );
        write_field(&mut out, "Connection", "close");
        write_field(&mut out, "Content-Type", "text/plain; charset=utf-8");
        write_field(&mut out, "Content-Length", &body.len().to_string());
        for (name, value) in &self.headers {
            write_field(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        Bytes::from(out)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            reason_phrase(self.status),
            self.error
        )
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The reason phrase of the status line.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        s if s < 500 => "Client Error",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(rejection: &Rejection) -> String {
        String::from_utf8(rejection.to_response().to_vec()).unwrap()
    }

    #[test]
    fn renders_status_headers_and_body() {
        let r = Rejection::for_error(HandshakeError::MethodNotAllowed {
            method: "POST".into(),
        });
        let body = "method POST is not allowed, use GET\n";
        assert_eq!(
            text(&r),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
                 Allow: GET\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn version_rejection_names_the_version() {
        let r = Rejection::for_error(HandshakeError::UnsupportedVersion {
            found: Some("8".into()),
        });
        assert_eq!(r.status(), 426);
        assert!(text(&r).contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn extra_headers_are_checked() {
        let r = Rejection::refused(401, "token expired").unwrap();
        assert_eq!(
            Rejection::refused(200, "no"),
            Err(HandshakeError::InvalidStatus { status: 200 })
        );
        let r = r.with_header("WWW-Authenticate", "Bearer").unwrap();
        assert!(text(&r).starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text(&r).contains("\r\nWWW-Authenticate: Bearer\r\n"));
        assert!(text(&r).ends_with("\r\n\r\ntoken expired\n"));
        assert_eq!(
            r.clone().with_header("content-length", "0"),
            Err(HandshakeError::ReservedHeader {
                name: "content-length".into()
            })
        );
        assert!(r.with_header("X", "a\nb").is_err());
    }
}
