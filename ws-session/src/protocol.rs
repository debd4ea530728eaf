//! Payloads of the system events (see `docs/PROTOCOL.md`, "Sessions, authentication
//! and resume"). Field names are camelCase on the wire.

use serde::{Deserialize, Serialize};

/// `sys.auth` (C→S).
#[derive(Debug, Deserialize)]
pub(crate) struct AuthPayload {
    pub(crate) token: String,
}

/// `sys.reconnect.request` (C→S). `token` is the credential, for connections that did
/// not bring one in the handshake.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReconnectPayload {
    pub(crate) session_id: String,
    pub(crate) resume_token: String,
    pub(crate) last_seq: u64,
    #[serde(default)]
    pub(crate) token: Option<String>,
}

/// `sys.ack` (C→S).
#[derive(Debug, Deserialize)]
pub(crate) struct AckPayload {
    pub(crate) seq: u64,
}

/// `sys.session.created` (S→C).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionCreated<'a> {
    pub(crate) session_id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) resume_token: &'a str,
    pub(crate) heartbeat_ms: u64,
    pub(crate) resume_window_ms: u64,
}

/// `sys.session.restored` (S→C).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRestored<'a> {
    pub(crate) session_id: &'a str,
    pub(crate) resume_token: &'a str,
    pub(crate) replayed: u64,
}

/// `sys.error` (S→C).
#[derive(Debug, Serialize)]
pub(crate) struct ErrorPayload<'a> {
    pub(crate) code: u16,
    pub(crate) message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
}
