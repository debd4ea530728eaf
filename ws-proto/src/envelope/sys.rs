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

/// Whether `text` starts as a `sys.ack` envelope written the way tether's clients
/// write it (`{"v":"1.0","e":"sys.ack"` — version, then event, no spaces). A server
/// connection may hold such a message back and hand only the latest on with its next
/// input, since acknowledgements are cumulative; whether it is a valid envelope is
/// still the engine's to decide. An acknowledgement spelled otherwise is just as valid
/// and goes the usual way.
pub fn is_ack_text(text: &str) -> bool {
    text.strip_prefix(r#"{"v":""#)
        .and_then(|rest| rest.strip_prefix(super::WIRE_VERSION))
        .and_then(|rest| rest.strip_prefix(r#"","e":""#))
        .and_then(|rest| rest.strip_prefix(ACK))
        .is_some_and(|rest| rest.starts_with('"'))
}

/// C→S: first-message authentication, for clients (browsers) that cannot set headers
/// on the upgrade request.
pub const AUTH: &str = "sys.auth";

/// C→S: the client ends its session now (payload: an optional `reason`); the server
/// forgets it at once instead of keeping it for the resume window, then closes.
pub const SESSION_END: &str = "sys.session.end";

/// S→C: the server ended the session on purpose (payload: session id and the
/// application's `reason`); the close 4115 follows. The client must not resume or
/// reconnect.
pub const SESSION_ENDED: &str = "sys.session.ended";

/// S→C: this node is stopping and hands its sessions over (no payload, outside the
/// stream). The client stops sending application messages on this connection and
/// answers with C→S `sys.handover` (no payload: "I send nothing more here"); the
/// server then closes with 4116 and the client resumes at once, on whichever node its
/// new connection lands. Every message the server no longer processes is answered
/// with an [`ERROR`] 4116 carrying its `c` before that close, so each request is
/// either answered or refused, and a refused one was not processed: the client sends
/// it again after the resume.
pub const HANDOVER: &str = "sys.handover";

/// S→C: a request from the server to the client's application, in the session stream
/// (payload: the application `event` and its `payload`; `c` is the server's request
/// id). The client answers with [`REPLY`] or [`REPLY_ERROR`] carrying the same `c`.
pub const REQUEST: &str = "sys.request";

/// C→S: the answer to a [`REQUEST`] (`c` echoes it; the payload is the answer).
pub const REPLY: &str = "sys.reply";

/// C→S: the refusal of a [`REQUEST`] (`c` echoes it; payload: numeric code, message).
pub const REPLY_ERROR: &str = "sys.reply.error";

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
            SESSION_END,
            SESSION_ENDED,
            REQUEST,
            REPLY,
            REPLY_ERROR,
        ] {
            assert!(is_system(name), "{name}");
        }
        assert!(!is_system("chat.message"));
        assert!(!is_system("sys"));
        assert!(!is_system("system.reboot"));
        assert!(!is_system("SYS.ping"));
    }

    #[test]
    fn acks_as_tethers_clients_write_them_are_recognised_and_nothing_else() {
        assert!(is_ack_text(r#"{"v":"1.0","e":"sys.ack","p":{"seq":42}}"#));
        for other in [
            r#"{"v":"1.0","e":"sys.ackx","p":{"seq":42}}"#,
            r#"{"e":"sys.ack","v":"1.0","p":{"seq":42}}"#,
            r#"{"v":"1.0","e":"sys.auth","p":{}}"#,
            r#"{"v":"1.0","e":"sys.ac"#,
            "",
        ] {
            assert!(!is_ack_text(other), "{other}");
        }
    }
}
