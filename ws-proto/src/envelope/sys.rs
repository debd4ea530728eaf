//! Names of the system events of protocol v1.
//!
//! Every event whose name starts with [`PREFIX`] (`sys.`) belongs to the protocol
//! itself; applications should not name their own events with that prefix. Their
//! payloads are described in `docs/PROTOCOL.md`, "Sessions, authentication and resume".
//! Direction: S→C is server to client, C→S client to server.

/// The prefix reserved for system events: `sys.`.
pub const PREFIX: &str = "sys.";

/// S→C: a new session exists (session id, user id, resume token, heartbeat and
/// resume-window settings).
pub const SESSION_CREATED: &str = "sys.session.created";

/// C→S: resume a session after a reconnect (session id, resume token, last `s` seen).
pub const RECONNECT_REQUEST: &str = "sys.reconnect.request";

/// S→C: the session was resumed (new resume token, how many messages are replayed).
pub const SESSION_RESTORED: &str = "sys.session.restored";

/// Either direction: an application-level heartbeat, answered with [`PONG`].
pub const PING: &str = "sys.ping";

/// Either direction: the answer to a [`PING`].
pub const PONG: &str = "sys.pong";

/// S→C: a request or message was refused (numeric code, message; `c` echoes the
/// correlation id of the request it answers).
pub const ERROR: &str = "sys.error";

/// C→S: the highest sequence number `s` the client has received, so the server can
/// trim its replay buffer.
pub const ACK: &str = "sys.ack";

/// C→S: first-message authentication, for clients (browsers) that cannot set headers
/// on the upgrade request.
pub const AUTH: &str = "sys.auth";

/// Whether `event` is a system event: its name starts with `sys.`.
pub fn is_system(event: &str) -> bool {
    event.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_names_have_the_prefix() {
        for name in [
            SESSION_CREATED,
            RECONNECT_REQUEST,
            SESSION_RESTORED,
            PING,
            PONG,
            ERROR,
            ACK,
            AUTH,
        ] {
            assert!(is_system(name), "{name}");
        }
        assert!(!is_system("chat.message"));
        assert!(!is_system("sys"));
        assert!(!is_system("system.reboot"));
        assert!(!is_system("SYS.ping"));
    }
}
