//! The Sans-IO client engine: one logical connection to a tether server that
//! reconnects by itself, resumes its session and loses nothing.
//!
//! Like the server [`Engine`](crate::Engine) it owns no socket, reads no clock and
//! draws no entropy: `now` comes with every call, jitter comes from the generator
//! given to [`ClientEngine::new`], and everything it wants done comes out of
//! [`ClientEngine::poll_action`]. It speaks envelopes (text), not bytes: the driver
//! (`ws-driver`'s `Client`) runs the WebSocket and feeds it the text messages.
//!
//! ```
//! use std::time::Instant;
//! use rand_chacha::rand_core::SeedableRng;
//! use ws_proto::envelope::Payload;
//! use ws_session::client::{ClientAction, ClientConfig, ClientEngine};
//!
//! let now = Instant::now();
//! let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let mut client = ClientEngine::new(now, ClientConfig::with_credential("secret"), rng);
//! client.send(now, "chat.message", Payload::Trusted(r#"{"text":"hi"}"#)).unwrap(); // queued
//! while let Some(action) = client.poll_action() {
//!     match action {
//!         ClientAction::Connect => { /* open a transport, then: */ client.handle_connected(now); }
//!         ClientAction::Transmit(text) => { /* write one text message */ }
//!         _ => {}
//!     }
//! }
//! ```
//!
//! Policies (see the field docs of [`ClientConfig`] for the figures):
//! - **reconnect**: after a transport ends, wait [`Backoff::delay`] for the attempt
//!   (1, 2, …; reset when a session is up) and connect again; `connect_timeout`
//!   bounds each attempt from `Connect` to a session. Close code or `sys.error` 4102
//!   (authentication failed), close 4114 (origin) and an upgrade refused with an HTTP
//!   4xx status other than 408 and 429 ([`Disconnect::status`]) stop the client.
//! - **resume**: every reconnect of a client holding a session sends
//!   `sys.reconnect.request` (session id, resume token, last `s`, and the credential
//!   when [`AuthMode::Message`]); the outcome is a [`SessionOutcome`].
//! - **acks**: `sys.ack` with the highest `s` after `ack_every` messages or
//!   `ack_delay` after the first unacknowledged one.
//! - **offline queue**: bounded; when full, new messages are refused
//!   ([`ClientError::QueueFull`]); queued ones are written once, in order, when a
//!   session is up; `close` discards them.
//! - **queries**: correlation id `q<N>`; answered by a reply with that `c`, a
//!   `sys.error` with it, a timeout, or [`QueryError::NotRestored`] when the session
//!   it was written on could not be resumed. Queries still queued are written on
//!   the next session whatever it is.
//! - **ending**: [`ClientEngine::close`] on a live session sends `sys.session.end`
//!   first, so the server ends the session at once instead of keeping it for the
//!   resume window; `sys.session.ended` or close 4115 from the server stop the client
//!   (no resume, no reconnect). Either way [`Disconnect::session_end`] says so.
//! - **server requests**: `sys.request` becomes [`ClientAction::Request`]; the answer
//!   ([`ClientEngine::answer`]) is written on the session the request came on, at once
//!   or, while offline, when that session is restored (dropped if it is not).

mod action;
mod backoff;
mod config;
mod engine;
mod state;
#[cfg(test)]
mod tests;
pub mod wire;

pub use action::{
    ClientAction, ClientError, IncomingRequest, QueryError, QueryId, ServerError, SessionDetails,
    SessionOutcome,
};
pub use backoff::{Backoff, Constant, Exponential, Jitter, Linear};
pub use config::{AuthMode, ClientConfig, IdleTimeout};
pub use engine::ClientEngine;
pub use state::{Disconnect, SessionEnd, State};
