//! Header fields: the received list with case-insensitive lookup, HTTP list parsing,
//! and the checks applied to fields before they are written.

use super::error::HandshakeError;

/// The header fields of a handshake head, in the order received.
///
/// Names compare case-insensitively (RFC 9110 §5.1). Values are the field values as
/// received with surrounding whitespace removed; a head whose values are not UTF-8 is
/// refused with [`HandshakeError::InvalidHeaderValue`].
///
/// `Debug` prints the values of credential-bearing fields (`Authorization`, `Cookie`,
/// `Proxy-Authorization`) as `<redacted>`, so logging a request leaks no secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every name and value, one after the other: one allocation for a whole head
    /// instead of two per field (a server reads one per connection it accepts).
    text: String,
    /// Where each field's name ends and its value ends in `text`, in the order
    /// received; a name starts where the field before ends.
    ends: Vec<(usize, usize)>,
}

impl Headers {
    /// The first value of header `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of header `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether header `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All fields as `(name, value)`, in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, value_end)| value_end));
        starts.zip(&self.ends).map(|(start, &(name_end, value_end))| {
            (&self.text[start..name_end], &self.text[name_end..value_end])
        })
    }

    /// Number of header fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends a field, `name` and `value` as they are.
    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    /// Converts httparse's fields, refusing values that are not UTF-8.
    pub(crate) fn from_parsed(parsed: &[httparse::Header<'_>]) -> Result<Self, HandshakeError> {
        Self::from_pairs(parsed.iter().map(|header| (header.name, header.value)))
    }

    /// Takes name/value pairs, refusing values that are not UTF-8; surrounding
    /// whitespace of values is dropped.
    pub(crate) fn from_pairs<'a>(
        pairs: impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + Clone,
    ) -> Result<Self, HandshakeError> {
        let len = pairs.clone().map(|(name, value)| name.len() + value.len()).sum();
        let mut headers = Self {
            text: String::with_capacity(len),
            ends: Vec::with_capacity(pairs.len()),
        };
        for (name, value) in pairs {
            let value = std::str::from_utf8(value).map_err(|_| HandshakeError::InvalidHeaderValue {
                name: name.to_owned(),
            })?;
            headers.push(name, value.trim_matches(is_ows));
        }
        Ok(headers)
    }

    /// The value of a header that must appear at most once.
    pub(crate) fn single(&self, name: &'static str) -> Result<Option<&str>, HandshakeError> {
        let mut values = self.get_all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(HandshakeError::DuplicateHeader { name });
        }
        Ok(first)
    }

    /// Whether any value of header `name` lists `token` (case-insensitively).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(split_list)
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// The checks both sides make of an upgrade (RFC 6455 §4.1, §4.2.1): `Upgrade`
    /// lists `websocket` and `Connection` lists `upgrade`, case-insensitively.
    pub(crate) fn check_upgrade(&self) -> Result<(), HandshakeError> {
        if !self.contains("Upgrade") {
            return Err(HandshakeError::MissingHeader { name: "Upgrade" });
        }
        if !self.has_token("Upgrade", "websocket") {
            return Err(HandshakeError::UpgradeNotWebSocket {
                found: self.joined("Upgrade"),
            });
        }
        if !self.contains("Connection") {
            return Err(HandshakeError::MissingHeader { name: "Connection" });
        }
        if !self.has_token("Connection", "upgrade") {
            return Err(HandshakeError::ConnectionNotUpgrade {
                found: self.joined("Connection"),
            });
        }
        Ok(())
    }

    /// All values of header `name` joined with ", " (for error reports).
    pub(crate) fn joined(&self, name: &str) -> String {
        self.get_all(name).collect::<Vec<_>>().join(", ")
    }
}

/// Header fields whose values are credentials.
const SECRET_FIELDS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Whether header `name` carries a credential (`Authorization`, `Proxy-Authorization`,
/// `Cookie`), whose value must not be logged.
pub fn is_credential_header(name: &str) -> bool {
    SECRET_FIELDS
        .iter()
        .any(|secret| secret.eq_ignore_ascii_case(name))
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    /// Fields as they are (nothing trimmed or checked).
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(fields: I) -> Self {
        let mut headers = Self::default();
        for (name, value) in fields {
            headers.push(name, value);
        }
        headers
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, value)| {
                let value = if is_credential_header(name) {
                    "<redacted>"
                } else {
                    value
                };
                (name, value)
            }))
            .finish()
    }
}

/// Optional whitespace (RFC 9110 §5.6.3).
pub(crate) fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The elements of a comma-separated HTTP list, trimmed, empty elements skipped.
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|t| t.trim_matches(is_ows))
        .filter(|t| !t.is_empty())
}

/// Whether `b` may appear in an HTTP token (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty HTTP token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Checks a field the local caller asked to send: the name must be a token, the value
/// must not break the line (CR, LF) or contain NUL or other control bytes but tab.
pub(crate) fn check_field(name: &str, value: &str) -> Result<(), HandshakeError> {
    if !is_token(name) {
        return Err(HandshakeError::InvalidHeaderName {
            name: name.to_owned(),
        });
    }
    if !is_field_value(value) {
        return Err(HandshakeError::InvalidHeaderValue {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether `value` can be written as a field value as is.
pub(crate) fn is_field_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Checks an extra header against the names the handshake writes itself.
pub(crate) fn check_extra(name: &str, value: &str, reserved: &[&str]) -> Result<(), HandshakeError> {
    check_field(name, value)?;
    if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(HandshakeError::ReservedHeader {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Appends `name: value\r\n`.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Header lines in a complete head (terminator included): every line but the first
/// (request or status line) and the final blank one. Counts bare LFs too, so it is an
/// upper bound of what the HTTP parser will find.
pub(crate) fn count_header_lines(head: &[u8]) -> usize {
    head.iter().filter(|&&b| b == b'\n').count().saturating_sub(2)
}

/// Maps an httparse error to the handshake's error.
pub(crate) fn parse_error(err: httparse::Error, lines: usize, max: usize) -> HandshakeError {
    let reason = match err {
        httparse::Error::Version => return HandshakeError::UnsupportedHttpVersion { minor: None },
        httparse::Error::TooManyHeaders => return HandshakeError::TooManyHeaders { count: lines, max },
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid token in the start line",
    };
    HandshakeError::MalformedHttp { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> Headers {
        fields.iter().copied().collect()
    }

    #[test]
    fn fields_in_one_buffer_keep_their_bounds_and_order() {
        // Empty values and a value that reads like the next name must not run together.
        let parsed = [
            httparse::Header {
                name: "Host",
                value: b" example.com\t",
            },
            httparse::Header {
                name: "X-Empty",
                value: b"",
            },
            httparse::Header {
                name: "X-Next",
                value: b"X-Empty",
            },
            httparse::Header {
                name: "X-Empty",
                value: b"  ",
            },
        ];
        let h = Headers::from_parsed(&parsed).unwrap();
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [
                ("Host", "example.com"),
                ("X-Empty", ""),
                ("X-Next", "X-Empty"),
                ("X-Empty", "")
            ]
        );
        assert_eq!(h.get_all("x-empty").collect::<Vec<_>>(), ["", ""]);
        assert_eq!(h.get("x-next"), Some("X-Empty"));
        assert_eq!(h.len(), 4);
        let mut pushed: Headers = [("Host", "example.com"), ("X-Empty", "")].into_iter().collect();
        pushed.push("X-Next", "X-Empty");
        pushed.push("X-Empty", "");
        assert_eq!(pushed, h);
        let invalid = [httparse::Header {
            name: "X-Bad",
            value: b"\xff",
        }];
        assert!(matches!(
            Headers::from_parsed(&invalid),
            Err(HandshakeError::InvalidHeaderValue { name }) if name == "X-Bad"
        ));
    }

    #[test]
    fn lookup_is_case_insensitive_and_first_wins() {
        let h = headers(&[("X-One", "a"), ("x-one", "b"), ("Other", "c")]);
        assert_eq!(h.get("X-ONE"), Some("a"));
        assert_eq!(h.get_all("x-one").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.iter().count(), 3);
        assert_eq!(
            h.single("x-one"),
            Err(HandshakeError::DuplicateHeader { name: "x-one" })
        );
        assert_eq!(h.single("Other"), Ok(Some("c")));
    }

    #[test]
    fn tokens_across_lists_and_repeats() {
        let h = headers(&[("Connection", "keep-alive"), ("Connection", " , Upgrade ,")]);
        assert!(h.has_token("connection", "upgrade"));
        assert!(!h.has_token("connection", "close"));
        assert!(!headers(&[("Connection", "upgraded")]).has_token("Connection", "upgrade"));
    }

    #[test]
    fn field_checks() {
        assert!(check_field("X-Ok", "fine\tvalue").is_ok());
        assert_eq!(
            check_field("X-Bad", "a\r\nInjected: yes"),
            Err(HandshakeError::InvalidHeaderValue { name: "X-Bad".into() })
        );
        assert_eq!(
            check_field("Bad Name", "v"),
            Err(HandshakeError::InvalidHeaderName {
                name: "Bad Name".into()
            })
        );
        assert_eq!(
            check_extra("upgrade", "x", &["Upgrade"]),
            Err(HandshakeError::ReservedHeader {
                name: "upgrade".into()
            })
        );
    }

    #[test]
    fn line_count() {
        assert_eq!(count_header_lines(b"GET / HTTP/1.1\r\n\r\n"), 0);
        assert_eq!(count_header_lines(b"GET / HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n"), 2);
    }
}
