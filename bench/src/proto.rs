//! The two session protocols the load generator speaks: tether's envelope
//! (docs/PROTOCOL.md) and Socket.IO v4 over a WebSocket (Engine.IO 4 packets: `0` open,
//! `2`/`3` ping/pong, `4` message; Socket.IO packets inside: `0` connect, `2` event,
//! `3` ack). Only what the scenarios use is built or recognised, with byte scans
//! rather than a JSON parser so that the generator stays cheap next to the server.

use serde::{Deserialize, Serialize};

/// Which session protocol a subject speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// tether's envelope: auth by `Authorization: Bearer`, `echo` answered with the
    /// same `c`, `join` answered by `joined`, `pub` fanned out as `msg`.
    Tether,
    /// Socket.IO v4: `echo` and `join` with acks, `pub` fanned out as `msg`.
    SocketIo,
    /// tether's envelope over raw TCP (the length-prefixed framing): auth by
    /// `sys.auth`, the rest as [`Proto::Tether`].
    TetherTcp,
}

/// A frame the server sent, as a scenario sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to the echo or join request with this id.
    Reply(u64),
    /// A room delivery carrying the publisher's counter; `seq` is tether's `s`.
    Delivery {
        /// The publisher's counter.
        n: u64,
        /// tether's session sequence number, when present.
        seq: Option<u64>,
    },
    /// The session exists (tether `sys.session.created`, Socket.IO `40`).
    Ready,
    /// Engine.IO's ping: answer `3`.
    Ping,
    /// A refusal (tether `sys.error`).
    Error,
    /// Anything else (heartbeats, presence, the Engine.IO open packet).
    Other,
}

impl Proto {
    /// The upgrade path of the subject's session endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Proto::Tether | Proto::TetherTcp => "/ws",
            Proto::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// The request for echo `id` carrying `payload` (ASCII, no quotes or escapes).
    pub fn echo(self, id: u64, payload: &str) -> String {
        match self {
            Proto::Tether | Proto::TetherTcp => {
                format!(r#"{{"v":"1.0","e":"echo","p":"{payload}","c":"{id}"}}"#)
            }
            Proto::SocketIo => format!(r#"42{id}["echo","{payload}"]"#),
        }
    }

    /// The request to join `room`, answered as [`Incoming::Reply`] with `id`.
    pub fn join(self, id: u64, room: &str) -> String {
        match self {
            Proto::Tether | Proto::TetherTcp => {
                format!(r#"{{"v":"1.0","e":"join","p":"{room}","c":"{id}"}}"#)
            }
            Proto::SocketIo => format!(r#"42{id}["join","{room}"]"#),
        }
    }

    /// The publisher's message `n` to the room (delivered to every member as `msg`).
    pub fn publish(self, n: u64) -> String {
        match self {
            Proto::Tether | Proto::TetherTcp => format!(r#"{{"v":"1.0","e":"pub","p":{n}}}"#),
            Proto::SocketIo => format!(r#"42["pub",{n}]"#),
        }
    }

    /// tether's acknowledgement of every message up to `seq` (Socket.IO has none).
    pub fn ack(self, seq: u64) -> Option<String> {
        match self {
            Proto::Tether | Proto::TetherTcp => {
                Some(format!(r#"{{"v":"1.0","e":"sys.ack","p":{{"seq":{seq}}}}}"#))
            }
            Proto::SocketIo => None,
        }
    }

    /// What must follow the upgrade before the session exists (Socket.IO's connect
    /// to the main namespace; tether authenticates in the handshake).
    pub fn hello(self) -> Option<&'static str> {
        match self {
            Proto::Tether => None,
            Proto::TetherTcp => Some(r#"{"v":"1.0","e":"sys.auth","p":{"token":"bench"}}"#),
            Proto::SocketIo => Some("40"),
        }
    }

    /// Classifies one text frame from the server.
    pub fn classify(self, text: &[u8]) -> Incoming {
        match self {
            Proto::Tether | Proto::TetherTcp => classify_tether(text),
            Proto::SocketIo => classify_sio(text),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn digits(bytes: &[u8]) -> Option<u64> {
    let end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok()?.parse().ok()
}

/// The number after `key` (e.g. `"s":`), when the text has it.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    digits(&text[at..])
}

/// tether's `s` of a session-stream message, when it has one.
pub fn seq_of(text: &[u8]) -> Option<u64> {
    number_after(text, br#","s":"#)
}

fn classify_tether(text: &[u8]) -> Incoming {
    // Senders built on tether write `v, e, p, c, t, s` in this order.
    if text.starts_with(br#"{"v":"1.0","e":"msg","p":"#) {
        let n = digits(&text[br#"{"v":"1.0","e":"msg","p":"#.len()..]);
        let seq = number_after(text, br#","s":"#);
        return match n {
            Some(n) => Incoming::Delivery { n, seq },
            None => Incoming::Error,
        };
    }
    if text.starts_with(br#"{"v":"1.0","e":"echo","#) || text.starts_with(br#"{"v":"1.0","e":"joined","#) {
        let Some(at) = find(text, br#","c":""#) else {
            return Incoming::Error;
        };
        return digits(&text[at + 6..]).map_or(Incoming::Error, Incoming::Reply);
    }
    if text.starts_with(br#"{"v":"1.0","e":"sys.session.created""#) {
        return Incoming::Ready;
    }
    if text.starts_with(br#"{"v":"1.0","e":"sys.error""#) {
        return Incoming::Error;
    }
    Incoming::Other
}

fn classify_sio(text: &[u8]) -> Incoming {
    match text {
        b"2" => Incoming::Ping,
        [b'4', b'3', rest @ ..] => digits(rest).map_or(Incoming::Error, Incoming::Reply),
        [b'4', b'0', ..] => Incoming::Ready,
        [b'4', b'2', b'[', b'"', b'm', b's', b'g', b'"', b',', rest @ ..] => {
            digits(rest).map_or(Incoming::Error, |n| Incoming::Delivery { n, seq: None })
        }
        [b'4', b'4', ..] => Incoming::Error,
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tether_answers_are_recognised() {
        let p = Proto::Tether;
        assert_eq!(
            p.classify(br#"{"v":"1.0","e":"echo","p":"xx","c":"42","s":7}"#),
            Incoming::Reply(42)
        );
        assert_eq!(
            p.classify(br#"{"v":"1.0","e":"joined","p":"bench","c":"3","s":1}"#),
            Incoming::Reply(3)
        );
        assert_eq!(
            p.classify(br#"{"v":"1.0","e":"msg","p":12,"s":9}"#),
            Incoming::Delivery { n: 12, seq: Some(9) }
        );
        assert_eq!(
            p.classify(br#"{"v":"1.0","e":"sys.session.created","p":{}}"#),
            Incoming::Ready
        );
        assert_eq!(
            p.classify(br#"{"v":"1.0","e":"sys.error","p":{"code":4101}}"#),
            Incoming::Error
        );
        assert_eq!(p.classify(br#"{"v":"1.0","e":"sys.ping"}"#), Incoming::Other);
    }

    #[test]
    fn socket_io_answers_are_recognised() {
        let p = Proto::SocketIo;
        assert_eq!(p.classify(br#"4317["xx"]"#), Incoming::Reply(17));
        assert_eq!(
            p.classify(br#"42["msg",5]"#),
            Incoming::Delivery { n: 5, seq: None }
        );
        assert_eq!(p.classify(br#"40{"sid":"abc"}"#), Incoming::Ready);
        assert_eq!(p.classify(b"2"), Incoming::Ping);
        assert_eq!(p.classify(br#"0{"sid":"x"}"#), Incoming::Other);
    }
}
