//! Where a client connects: `ws://host[:port]/path?query` or `tcp://host:port`, and how.

use std::fmt;
use std::io;

use futures_util::io::{AsyncRead, AsyncWrite};
use ws_proto::handshake::ClientRequest;

use crate::handler::BoxFuture;

/// Which transport a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `ws://` or `wss://`: WebSocket.
    WebSocket,
    /// `tcp://`: tether's length-prefixed framing on raw TCP (`ws_proto::prefixed`).
    Tcp,
}

/// A parsed client URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The transport.
    pub scheme: Scheme,
    /// `wss` (TLS, the connector's business) rather than `ws`.
    pub secure: bool,
    /// The host name or address, without brackets for IPv6.
    pub host: String,
    /// The port (default 80 for `ws`, 443 for `wss`).
    pub port: u16,
    /// The request target: path and query, starting with `/`.
    pub path_and_query: String,
}

/// A URL that is not `ws://…`, `wss://…` or `tcp://…` with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl(pub String);

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid URL: {}", self.0)
    }
}

impl std::error::Error for InvalidUrl {}

impl Target {
    /// Parses `ws://host[:port][/path][?query]` (or `wss://`), or `tcp://host:port`
    /// (no path: the raw TCP transport has no request). No user info, no fragment;
    /// the path must already be percent-encoded.
    pub fn parse(url: &str) -> Result<Self, InvalidUrl> {
        let bad = |why: &str| InvalidUrl(format!("{url}: {why}"));
        let (scheme, secure, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::WebSocket, false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (Scheme::WebSocket, true, rest)
        } else if let Some(rest) = url.strip_prefix("tcp://") {
            (Scheme::Tcp, false, rest)
        } else {
            return Err(bad("the scheme must be ws://, wss:// or tcp://"));
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        if path.contains('#') {
            return Err(bad("a fragment is not allowed"));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after the IPv6 address")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad("bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let explicit_port = authority
            .rsplit_once(']')
            .map_or(authority, |(_, after)| after)
            .contains(':');
        if scheme == Scheme::Tcp && !(explicit_port && matches!(path, "" | "/")) {
            return Err(bad("tcp:// takes a host and a port, and no path"));
        }
        let path_and_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Self {
            scheme,
            secure,
            host: host.to_owned(),
            port,
            path_and_query,
        })
    }

    /// An upgrade request for this target with a fresh `Sec-WebSocket-Key` drawn from
    /// the OS-seeded generator, and nothing else.
    pub fn request(&self) -> ClientRequest {
        ClientRequest::new(self.host_header(), self.path_and_query.clone(), rand::random())
    }

    /// The `Host` header value: the host, with `:port` when not the default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.secure { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Opens byte streams to servers: what a runtime adapter supplies to the client
/// (TCP on tokio, async-io's on async-std and smol, TLS, an in-memory pipe in tests).
pub trait Connector: Send + Sync + 'static {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a stream to `target.host:target.port` (with TLS when `target.secure`,
    /// or an error if the connector cannot do it).
    fn connect(&self, target: &Target) -> BoxFuture<io::Result<Self::Stream>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://example.com/ws?token=a").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.path_and_query.as_str()),
            (false, "example.com", 80, "/ws?token=a")
        );
        assert_eq!(t.host_header(), "example.com");
        let t = Target::parse("wss://127.0.0.1:9000").unwrap();
        assert_eq!((t.secure, t.port, t.path_and_query.as_str()), (true, 9000, "/"));
        assert_eq!(t.host_header(), "127.0.0.1:9000");
        let t = Target::parse("tcp://127.0.0.1:9000").unwrap();
        assert_eq!((t.scheme, t.port, t.secure), (Scheme::Tcp, 9000, false));
        let t = Target::parse("ws://[::1]:8080?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("::1", 8080, "/?x=1")
        );
        assert_eq!(t.host_header(), "[::1]:8080");
        for bad in [
            "http://x/",
            "ws://",
            "ws://:80/",
            "ws://a:b/",
            "ws://u@h/",
            "ws://h/#f",
            "ws://[::1/",
            "tcp://host",
            "tcp://host:9000/path",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
