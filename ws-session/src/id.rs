//! Identifiers: connections (engine-assigned counters), sessions (random, public),
//! users (the application's), authentication requests.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A connection, numbered by the engine from 1 in the order they open; never reused.
/// [`Engine::handle_connection_opened`](crate::Engine::handle_connection_opened) returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A session: 128 random bits from the caller's generator. Public (sent to the client
/// and usable in logs); it proves nothing — the [`ResumeToken`](crate::ResumeToken) does.
/// Written on the wire as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u128);

impl SessionId {
    /// Parses the 32-hex-digit wire form.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16)
            .ok()
            .map(Self)
            .filter(|_| text.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// The application's name for an authenticated user, as its authenticator returned it.
/// Cheap to clone (shared).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Arc<str>);

impl UserId {
    /// A user id from the application's text.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &*self.0)
    }
}

/// One authentication the engine asked the application for
/// ([`Action::Authenticate`](crate::Action::Authenticate)); answer it with
/// [`Engine::handle_auth_result`](crate::Engine::handle_auth_result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthId(pub u64);

/// A hasher for the engine's own keys: connection and auth counters and random session
/// ids. None is chosen by a peer, so no keyed (DoS-resistant) hash is needed; a multiply
/// spreads counters over the high bits the hash table probes with. Glue that keeps maps
/// keyed by these ids uses it too, through [`IdBuild`].
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u128(&mut self, n: u128) {
        // Session ids are random: folding the halves keeps all the entropy.
        self.write_u64((n as u64) ^ ((n >> 64) as u64));
    }
}

/// The [`BuildHasher`](std::hash::BuildHasher) of [`IdHasher`], for maps keyed by
/// [`SessionId`], [`ConnectionId`] and the other ids the engine hands out (not for keys
/// a peer chooses, such as event or room names).
pub type IdBuild = BuildHasherDefault<IdHasher>;
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdBuild>;
pub(crate) type IdSet<K> = std::collections::HashSet<K, IdBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_through_hex() {
        let id = SessionId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_eq!(SessionId::parse("+123456789abcdef0011223344556677"), None);
        assert_eq!(SessionId::parse("xyz"), None);
    }
}
