//! The payloads of the system events, one type each, used both ways: the server
//! engine and the client engine serialize what they send and deserialize what they
//! receive with the same types, so the two halves cannot drift apart. Field names are
//! camelCase on the wire (`docs/PROTOCOL.md`, "Sessions, authentication and resume").
//!
//! Strings are `Cow`: a sender borrows what it has, a receiver gets owned values.
//! Fields that older servers may omit default when absent, so receivers are lenient.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `sys.auth` (C→S): the credential, for connections that did not bring one in the
/// handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth<'a> {
    /// The credential the application's authenticator checks.
    pub token: Cow<'a, str>,
}

/// `sys.reconnect.request` (C→S): resume a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconnectRequest<'a> {
    /// The session to resume.
    pub session_id: Cow<'a, str>,
    /// The resume token of the session's latest `sys.session.created`/`restored`.
    pub resume_token: Cow<'a, str>,
    /// The highest `s` the client has received (0 for none).
    pub last_seq: u64,
    /// The credential, for connections that did not bring one in the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Cow<'a, str>>,
}

/// `sys.ack` (C→S): the client has every message up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The highest `s` received without a gap.
    pub seq: u64,
}

/// `sys.session.created` (S→C): a new session and how to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated<'a> {
    /// The session's public id.
    pub session_id: Cow<'a, str>,
    /// The user the authenticator named.
    #[serde(default)]
    pub user_id: Cow<'a, str>,
    /// The secret that resumes the session (single use).
    pub resume_token: Cow<'a, str>,
    /// How often the server sends `sys.ping`, in milliseconds.
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// How long a suspended session waits for a resume, in milliseconds.
    #[serde(default)]
    pub resume_window_ms: u64,
}

/// `sys.session.restored` (S→C): the resume succeeded; the replayed messages follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRestored<'a> {
    /// The session resumed.
    pub session_id: Cow<'a, str>,
    /// The new resume token (the one used is spent once the client speaks).
    pub resume_token: Cow<'a, str>,
    /// How many messages are replayed after this one.
    #[serde(default)]
    pub replayed: u64,
}

/// `sys.error` (S→C): a refusal, with the request's `c` when it answers one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysError<'a> {
    /// The code ([`ErrorCode`](crate::ErrorCode), or the application's own from 4200).
    pub code: u16,
    /// What went wrong, for the client's developer.
    #[serde(default)]
    pub message: Cow<'a, str>,
    /// Machine-readable detail: why a resume was refused (4106).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
}

/// `sys.session.end` (C→S): the client ends its session now (tether's clients send it
/// from `close`). The server ends the session at once (it leaves its rooms, nothing is
/// kept for a resume) and closes the connection with 1000.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd<'a> {
    /// Why, in words (informational; may be empty).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub reason: Cow<'a, str>,
}

/// `sys.session.ended` (S→C, control): the server ended the session on purpose; a close
/// with 4115 (`SESSION_ENDED`) follows. The client must neither resume nor reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnded<'a> {
    /// The session that ended.
    pub session_id: Cow<'a, str>,
    /// The application's reason (may be empty).
    #[serde(default)]
    pub reason: Cow<'a, str>,
}

/// `sys.request` (S→C, in the session stream): a request of the server's application to
/// the client's. The envelope's `c` is the request id the answer (`sys.reply` or
/// `sys.reply.error`) echoes; the answer of `sys.reply` is its whole payload.
///
/// `P` is the payload's type: JSON text as read and as the engine writes it (the
/// default), or the application's own value when a driver serializes the whole
/// payload in both codecs ([`Engine::request_serialized`](crate::Engine::request_serialized)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "P: Serialize", deserialize = "P: Deserialize<'de>"))]
pub struct ServerRequest<'a, P = &'a RawValue> {
    /// The application event the client's request handler is registered for.
    pub event: Cow<'a, str>,
    /// Its payload; absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<P>,
}

/// `sys.reply.error` (C→S): the client's application refused a `sys.request` (`c`
/// echoes it), or the client has no handler for its event (4150).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError<'a> {
    /// The code: the application's own (from 4200), or 4150 for no handler.
    pub code: u16,
    /// What went wrong, for the server's developer.
    #[serde(default)]
    pub message: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a sender writes, a receiver reads back unchanged.
    #[test]
    fn every_payload_round_trips() {
        fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: T) {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
        }
        round_trip(Auth { token: "t".into() });
        round_trip(ReconnectRequest {
            session_id: "s".into(),
            resume_token: "r".into(),
            last_seq: 7,
            token: Some("t".into()),
        });
        round_trip(Ack { seq: 3 });
        round_trip(SessionCreated {
            session_id: "s".into(),
            user_id: "u".into(),
            resume_token: "r".into(),
            heartbeat_ms: 20_000,
            resume_window_ms: 120_000,
        });
        round_trip(SessionRestored {
            session_id: "s".into(),
            resume_token: "r".into(),
            replayed: 2,
        });
        round_trip(SysError {
            code: 4106,
            message: "m".into(),
            reason: Some("used".into()),
        });
        round_trip(SessionEnd { reason: "bye".into() });
        round_trip(SessionEnd::default());
        round_trip(SessionEnded {
            session_id: "s".into(),
            reason: "kicked".into(),
        });
        round_trip(ReplyError {
            code: 4201,
            message: "no".into(),
        });
        // Borrowed from the text it came in, like the engines read it.
        let json = r#"{"event":"client.time","payload":{"tz":"UTC"}}"#;
        let request: ServerRequest<'_> = serde_json::from_str(json).unwrap();
        assert_eq!(request.event, "client.time");
        assert_eq!(request.payload.map(RawValue::get), Some(r#"{"tz":"UTC"}"#));
        assert_eq!(serde_json::to_string(&request).unwrap(), json);
        assert_eq!(serde_json::to_string(&SessionEnd::default()).unwrap(), "{}");
    }

    /// The wire names are the documented camelCase ones.
    #[test]
    fn field_names_are_camel_case() {
        let json = serde_json::to_value(ReconnectRequest {
            session_id: "s".into(),
            resume_token: "r".into(),
            last_seq: 1,
            token: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sessionId": "s", "resumeToken": "r", "lastSeq": 1})
        );
    }
}
