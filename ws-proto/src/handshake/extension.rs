//! `Sec-WebSocket-Extensions` values (RFC 6455 §9.1): a list of extensions, each a
//! name and `;`-separated parameters, a parameter value a token or a quoted string.

use std::fmt;

use super::error::HandshakeError;
use super::headers::{is_tchar, is_token};

/// One extension offered or accepted in `Sec-WebSocket-Extensions`, such as
/// `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

impl Extension {
    /// An extension without parameters. The name should be an HTTP token; rendering an
    /// [`Accept`](super::Accept) or a client request checks the text it ends up in.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter, with or without a value.
    pub fn with_param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push((name.into(), value));
        self
    }

    /// The extension's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameters, in order: `(name, value)`, quoted values unquoted.
    pub fn params(&self) -> &[(String, Option<String>)] {
        &self.params
    }

    /// The first parameter called `name` (case-insensitively): `Some(None)` when it has
    /// no value, `None` when it is absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for Extension {
    /// Renders the extension as it appears in the header, quoting values that are not
    /// tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            match value {
                None => {}
                Some(v) if is_token(v) => write!(f, "={v}")?,
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Parses one `Sec-WebSocket-Extensions` value and appends its extensions to `out`.
pub(crate) fn parse_extensions(value: &str, out: &mut Vec<Extension>) -> Result<(), HandshakeError> {
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ows();
        match p.peek() {
            None => return Ok(()),
            // An empty list element (RFC 9110 §5.6.1 tolerates them).
            Some(b',') => {
                p.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let mut ext = Extension::new(p.token()?);
        loop {
            p.skip_ows();
            if p.peek() != Some(b';') {
                break;
            }
            p.i += 1;
            p.skip_ows();
            let name = p.token()?;
            p.skip_ows();
            let value = if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip_ows();
                Some(if p.peek() == Some(b'"') {
                    p.quoted()?
                } else {
                    p.token()?
                })
            } else {
                None
            };
            ext.params.push((name, value));
        }
        out.push(ext);
        match p.peek() {
            None => return Ok(()),
            Some(b',') => p.i += 1,
            Some(_) => return Err(p.error()),
        }
    }
}

/// A cursor over a header value.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn error(&self) -> HandshakeError {
        HandshakeError::InvalidExtensionHeader { offset: self.i }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Result<String, HandshakeError> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(self.error());
        }
        // Token bytes are ASCII, so this slice is valid UTF-8.
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, HandshakeError> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        None => return Err(self.error()),
                        Some(b) => out.push(b),
                    }
                    self.i += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<Vec<Extension>, HandshakeError> {
        let mut out = Vec::new();
        parse_extensions(value, &mut out).map(|()| out)
    }

    #[test]
    fn names_params_and_quotes() {
        let exts = parse(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\" ,, x-foo;a=b;c=\"d,\\\"e\"",
        )
        .unwrap();
        assert_eq!(exts.len(), 2);
        assert_eq!(exts[0].name(), "permessage-deflate");
        assert_eq!(
            exts[0].params(),
            [
                ("client_max_window_bits".to_owned(), None),
                ("server_max_window_bits".to_owned(), Some("10".to_owned()))
            ]
        );
        assert_eq!(exts[0].param("SERVER_MAX_WINDOW_BITS"), Some(Some("10")));
        assert_eq!(exts[0].param("client_max_window_bits"), Some(None));
        assert_eq!(exts[0].param("nope"), None);
        assert_eq!(exts[1].param("c"), Some(Some("d,\"e")));
    }

    #[test]
    fn empty_value_is_an_empty_list() {
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse(" , ").unwrap(), []);
    }

    #[test]
    fn malformed_values_report_the_offset() {
        assert_eq!(
            parse("a; =1"),
            Err(HandshakeError::InvalidExtensionHeader { offset: 3 })
        );
        assert_eq!(
            parse("a b"),
            Err(HandshakeError::InvalidExtensionHeader { offset: 2 })
        );
        assert_eq!(
            parse("a; b=\"open"),
            Err(HandshakeError::InvalidExtensionHeader { offset: 10 })
        );
        assert_eq!(
            parse("a;b="),
            Err(HandshakeError::InvalidExtensionHeader { offset: 4 })
        );
        assert_eq!(
            parse("a;b=\"x\\"),
            Err(HandshakeError::InvalidExtensionHeader { offset: 7 })
        );
    }

    #[test]
    fn display_round_trips() {
        let ext = Extension::new("x")
            .with_param("a", None)
            .with_param("b", Some("has space\"".into()));
        let text = ext.to_string();
        assert_eq!(text, "x; a; b=\"has space\\\"\"");
        assert_eq!(parse(&text).unwrap(), [ext]);
    }
}
