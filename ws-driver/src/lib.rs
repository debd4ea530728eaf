//! # ws-driver: the user API of tether, shared by every runtime
//!
//! The Sans-IO core (`ws-proto`, `ws-session`) says *what* to do; this crate does it
//! with nothing but `futures` traits, so that each runtime adapter only supplies
//! sockets, task spawning and timers ([`Runtime`](adapter::Runtime)):
//!
//! - [`App`]: handlers per event ([`App::on`]), middleware, an [`Authenticator`], a
//!   [`PubSub`] backend for multi-node fan-out, lifecycle hooks and the limits.
//! - [`Context`]: what a handler gets — the session, the user, the payload (raw or
//!   typed), `reply`, `error`, rooms, broadcast, send.
//! - the drive loop: one *hub* task owns the session engine; one task per connection
//!   runs its [`Transport`](transport::Transport) — WebSocket
//!   ([`serve_connection`](adapter::serve_connection)), raw TCP
//!   ([`serve_prefixed`](adapter::serve_prefixed)), the in-memory pair, or one of
//!   yours ([`run_transport`](adapter::run_transport)) — batching every frame queued
//!   for it into one write;
//! - the client ([`client::Client`]) over the same transports, and
//!   [`TestRuntime`](test_runtime::TestRuntime), a runtime whose clock moves only when
//!   a test moves it;
//! - the accept loop of a standalone server, with its graceful shutdown
//!   ([`serve_until`](adapter::serve_until)): an adapter hands it a stream of accepted sockets.
//!
//! Nothing the application supplies runs on the hub: handlers and session hooks run
//! on their session's worker task, connection hooks on their connection's, the
//! authenticator on a task per request and [`PubSub::publish`] on a task of its own;
//! so a slow one never stalls the hub, and so never delays other clients.
//!
//! How the hub and the connection tasks share the work (corking, per-session handler
//! workers, slow consumers, backpressure) is told in `docs/ARCHITECTURE.md`, with the
//! layers around this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admission;
mod app;
mod auth;
mod buffers;
pub mod client;
mod context;
mod error;
mod handler;
mod hub;
mod inbox;
mod membership;
mod outbox;
mod payloads;
mod prefixed;
mod presence;
pub mod prometheus;
mod pubsub;
mod pump;
mod raw;
mod reach;
mod request;
mod runtime;
mod serve;
mod state;
mod store;
pub mod test_runtime;
#[cfg(test)]
mod test_wakers;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
mod upgrade;

pub use app::{App, ConnectionEvent};
pub use auth::{AuthFuture, Authenticator, FnAuthenticator};
pub use context::{Context, SessionHandle};
pub use error::HandlerError;
pub use handler::{Handler, HandlerResult, Middleware, Next};
pub use hub::{Hub, ServerHandle};
pub use membership::{
    InMemoryMembership, MemberChange, MemberState, MemberTable, MemberUpdate, Membership, MembershipError,
    RoomMember,
};
pub use payloads::EncodedPayload;
pub use presence::{
    transition, Count, Member, MemberList, Presence, PresenceDiff, PresenceEntry, PresenceState,
};
pub use pubsub::{HistoryError, InMemoryPubSub, PubSub};
pub use pump::{ConnectionOptions, Wire};
pub use raw::WebSocket;
pub use reach::{Audience, Emit, SessionView};
pub use request::RequestError;
pub use serve::{Server, DEFAULT_SHUTDOWN_TIMEOUT};
pub use state::Identity;
pub use store::{InMemorySessionStore, JournalBatch, SessionStore, StoreError};

pub use ws_proto::CloseCode;
pub use ws_session::{
    ApiError, CloseReason, ConfigError, ConnectionId, ConnectionInfo, EngineConfig, ErrorCode, Metrics,
    SessionEvent, SessionId, UserId,
};

/// Everything an application and a client need, in one list that each runtime adapter
/// re-exports (`pub use ws_driver::prelude::*`), so that the adapter's crate alone is
/// enough to write an app. The adapter adds its own `Server`, `Client`, runtime and
/// listener types.
pub mod prelude {
    pub use crate::client::{
        AuthMode, Backoff, ClientConfig, ClientError, ClientOptions, Constant, Disconnect, Exponential,
        IdleTimeout, IncomingRequest, InvalidUrl, Jitter, Linear, OwnedEnvelope, QueryError, RequestResult,
        ServerError, SessionDetails, SessionEnd, SessionOutcome, State,
    };
    pub use crate::{
        ApiError, App, Audience, AuthFuture, Authenticator, CloseCode, CloseReason, ConfigError,
        ConnectionEvent, ConnectionId, ConnectionInfo, ConnectionOptions, Context, Emit, EncodedPayload,
        EngineConfig, ErrorCode, FnAuthenticator, Handler, HandlerError, HandlerResult, Hub, Identity,
        InMemoryPubSub, InMemorySessionStore, Member, MemberList, Metrics, Middleware, Next, Presence,
        PresenceDiff, PresenceEntry, PresenceState, PubSub, RequestError, ServerHandle, SessionEvent,
        SessionHandle, SessionId, SessionStore, SessionView, UserId, WebSocket, Wire,
        DEFAULT_SHUTDOWN_TIMEOUT,
    };
}

/// What a runtime adapter builds on; applications do not need it. An adapter supplies
/// a [`Runtime`](adapter::Runtime) (spawn, sleep) and a [`Listener`](adapter::Listener),
/// and hands accepted or upgraded streams to [`serve_connection`](adapter::serve_connection)
/// or [`run_websocket`](adapter::run_websocket).
pub mod adapter {
    pub use crate::admission::{refuse_at_capacity, Admission, ConnectionSlot};
    pub use crate::handler::BoxFuture;
    pub use crate::pump::{connection_info, run_transport, run_websocket, serve_connection, serve_prefixed};
    pub use crate::runtime::Runtime;
    pub use crate::serve::{serve_until, Accepting, Bind, Listener};
}
