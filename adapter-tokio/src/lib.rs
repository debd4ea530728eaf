//! # adapter-tokio: tether on tokio
//!
//! The Sans-IO core and the shared user API ([`ws_driver`]) bound to tokio sockets,
//! tasks and timers:
//!
//! - [`Server`]: binds an address, upgrades one path, serves every connection,
//!   shuts down gracefully;
//! - [`serve_stream`]: serves one already-accepted stream (custom listeners, tests);
//! - [`mount`]: the endpoint as an axum handler, so an application's other HTTP routes
//!   share the port ("detached mode"), served by [`serve_router`] (axum's router with
//!   tether's handshake deadline and head checks);
//! - [`Client`]: the tether client (reconnect, resume, queries) over tokio TCP.
//!
//! An adapter holds no protocol or session logic: that is the core's and
//! [`ws_driver`]'s (`docs/ARCHITECTURE.md` tells the layers, and why detached mode
//! needs [`serve_router`]).
//!
//! ```no_run
//! use adapter_tokio::{App, Context, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = App::new()
//!     .authenticate(|token: String, _info| async move { Ok(token) })
//!     .on("echo", |ctx: Context| async move {
//!         let text: String = ctx.payload()?;
//!         ctx.reply("echo", &text)
//!     });
//! let server = Server::bind("127.0.0.1:8080", "/ws", app).await?;
//! server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod mount;
mod router_server;
mod runtime;
mod server;

pub use client::{Client, TokioConnector};
pub use mount::mount;
pub use router_server::{serve_router, RouterServer};
pub use runtime::TokioRuntime;
pub use server::{serve_stream, Server};
pub use ws_driver::client::{ClientError, ClientOptions, QueryError, SessionOutcome, State};
pub use ws_driver::client::{IncomingRequest, RequestResult, SessionEnd};
pub use ws_driver::{
    App, Context, HandlerError, HandlerResult, Hub, InMemoryPubSub, Metrics, Next, PubSub, ServerHandle,
    SessionEvent, SessionId, UserId,
};
pub use ws_driver::{CloseReason, RequestError};
pub use ws_proto::CloseCode;
