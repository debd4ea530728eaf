//! # ws-session: the Sans-IO session engine of tether
//!
//! Sessions outlive connections. A client authenticates once and gets a session
//! (`sys.session.created`: id, resume token, heartbeat settings); when its socket drops,
//! the session is *suspended*, stays in its rooms and keeps numbering and buffering the
//! messages sent to it; a new connection that presents the session id, the resume token
//! and the last sequence number it saw (`sys.reconnect.request`) gets exactly the
//! missed messages, in order, once, and a rotated token. After the resume window the
//! session *expires*. Rooms hold sessions, never connections.
//!
//! The [`Engine`] owns no socket, reads no clock and draws no entropy of its own:
//! every input carries `now`, randomness comes from the generator given to
//! [`Engine::new`], and everything it wants done comes out of
//! [`Engine::poll_action`] as an [`Action`]. Peer faults never panic and never return
//! `Err`: they become a `sys.error` event (codes in [`ErrorCode`]) or a close.
//! `Err` means the local caller misused the API ([`ApiError`], [`ConfigError`]).
//!
//! Identifiers: the engine numbers connections itself ([`ConnectionId`], returned by
//! [`Engine::handle_connection_opened`], never reused); sessions get 128 random bits
//! ([`SessionId`], public); resume tokens 256 random bits ([`ResumeToken`], secret,
//! single use, compared in constant time, bound to the user).
//!
//! Cost model: a message to a session is encoded once into a shared prefix
//! ([`OutboundMessage`]: the envelope up to `s`, plus the recipient's `s`). A broadcast
//! is one [`Action::TransmitBroadcast`] per envelope codec in use (a connection's codec,
//! JSON or MessagePack, is fixed at its upgrade: [`ConnectionInfo::codec`]): one prefix
//! and a `(connection, s)` pair per recipient; the replay buffers keep 4-byte references
//! to the one stored prefix, which holds the JSON form and, once a MessagePack
//! connection needed it, the binary form. No allocation per message in steady state
//! (see `docs/BENCHMARKS.md`).
//!
//! ## The drive loop
//!
//! ```no_run
//! use std::time::Instant;
//! use rand_chacha::rand_core::SeedableRng;
//! use ws_proto::envelope::OutgoingEnvelope;
//! use ws_session::{Action, ConnectionInfo, Engine, EngineConfig, OutboundMessage, UserId};
//!
//! # fn drive(now: Instant) {
//! // `now` comes from the caller's clock with every input: the engine reads none.
//! # fn write_frame(_: ws_session::ConnectionId, _: ws_proto::envelope::Codec, _: &[u8]) -> usize { 0 }
//! # fn close(_: ws_session::ConnectionId, _: u16) {}
//! # fn next_input() -> Option<ws_proto::Message> { None }
//! // Production: an OS-seeded CSPRNG (e.g. `rand::rngs::StdRng::from_os_rng()`).
//! let rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
//! let mut engine = Engine::new(EngineConfig::default(), rng).unwrap();
//!
//! // An upgrade was accepted: hand over its metadata.
//! let info = ConnectionInfo::with_token("secret");
//! let conn = engine.handle_connection_opened(now, info);
//! if let Some(message) = next_input() {
//!     engine.handle_message(now, conn, message);
//! }
//!
//! // After every input: drain the actions, then arm a timer.
//! let mut buf = Vec::new();
//! while let Some(action) = engine.poll_action() {
//!     match action {
//!         Action::Transmit { connection, message } => {
//!             buf.clear();
//!             // One frame: text for JSON, binary for MessagePack.
//!             message.write_to(&mut buf);
//!             let written = write_frame(connection, message.codec, &buf);
//!             engine.handle_flushed(now, connection, written);
//!         }
//!         Action::TransmitBroadcast { prefix, codec, recipients } => {
//!             // One serialization per codec, a tail with `s` per recipient.
//!             for &(connection, seq) in &recipients {
//!                 let message = OutboundMessage::new(prefix.clone(), Some(seq), codec);
//!                 buf.clear();
//!                 message.write_to(&mut buf);
//!                 let written = write_frame(connection, codec, &buf);
//!                 engine.handle_flushed(now, connection, written);
//!             }
//!             engine.recycle(recipients);
//!         }
//!         Action::Close { connection, code, .. } => close(connection, code.0),
//!         Action::Authenticate(request) => {
//!             let answer = if request.token == "secret" {
//!                 Ok(UserId::new("alice"))
//!             } else {
//!                 Err("bad credential".to_owned())
//!             };
//!             engine.handle_auth_result(now, request.id, answer).unwrap();
//!         }
//!         Action::Event(event) => {
//!             // An application handler; here: echo it back as a reply.
//!             let reply = OutgoingEnvelope::new(event.event());
//!             if let Some(c) = event.correlation_id() {
//!                 let _ = engine.reply(now, event.session, c, &reply);
//!             }
//!         }
//!         _ => {} // session lifecycle, publish, transmit-many, …
//!     }
//! }
//! if let Some(deadline) = engine.poll_timeout() {
//!     // sleep until `deadline`, then:
//!     engine.handle_timeout(deadline);
//! }
//! # }
//! ```
//!
//! The wire protocol (payloads of the `sys.*` events, the error codes, the resume
//! flow) is in `docs/PROTOCOL.md`; the layers, the house rules (this crate's
//! `clippy.toml` denies clocks, threads and OS entropy) and the reasons behind the
//! resume design are in `docs/ARCHITECTURE.md`. The feature `sim` adds a deterministic
//! simulation harness (fake clock, seeded generators): `sim`, the server engine with
//! scripted in-memory clients, and `cluster`, the server engine with real client
//! engines over links that can be cut, delayed and stepped by hand.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod action;
pub mod client;
#[cfg(feature = "sim")]
pub mod cluster;
mod config;
mod connection;
mod engine;
mod error;
mod error_code;
#[cfg(all(feature = "sim", any(fuzzing, test)))]
pub mod fuzzing;
mod id;
pub mod journal;
mod metrics;
#[cfg(feature = "sim")]
pub mod nodes;
mod outbound;
pub mod protocol;
mod rate_limit;
mod replay;
mod request;
mod room;
mod session;
#[cfg(feature = "sim")]
pub mod sim;
mod timer;
mod token;

pub use action::{
    Action, AuthRequest, CloseReason, InboundEvent, Publication, PublishTarget, RoomOffset, SessionEvent,
};
pub use config::EngineConfig;
pub use connection::ConnectionInfo;
pub use engine::Engine;
pub use error::{ApiError, ConfigError};
pub use error_code::{ErrorCode, NotRecoverable};
pub use id::{AuthId, ConnectionId, IdBuild, IdHasher, SessionId, UserId};
pub use journal::{JournalEntry, SessionRecord};
pub use metrics::{Metrics, RefusedResumes};
pub use outbound::{EncodedPrefix, OutboundMessage, SharedPrefix};
pub use request::{RequestFailure, RequestId};
pub use session::SessionInfo;
pub use token::{ResumeToken, TokenVerifier};
