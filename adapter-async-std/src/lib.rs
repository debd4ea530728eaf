//! # adapter-async-std: tether on async-std and on smol
//!
//! The Sans-IO core and the shared user API ([`ws_driver`]) bound to the runtimes of
//! the async-io family, over `futures-io`:
//!
//! - [`Server`]: binds an address, upgrades one path, serves every connection, shuts
//!   down gracefully — as [`SmolServer`] (tasks on smol) or [`AsyncStdServer`] (tasks
//!   on async-std);
//! - [`TlsServer`] ([`SmolTlsServer`], [`AsyncStdTlsServer`]) and [`tls`]: the
//!   standalone server over TLS (rustls), and the pieces to configure TLS on both
//!   sides; [`Client`] speaks `wss://` (feature `tls`, on by default);
//! - [`serve_stream`]: serves one already-accepted stream (custom listeners, tests);
//!   [`AsyncNetStream`] wraps a TCP one so that it reads only when the reactor says
//!   the socket may hold bytes (what [`Server`] and [`Client`] use);
//! - [`SmolRuntime`] and [`AsyncStdRuntime`]: the [`ws_driver::adapter::Runtime`] of each, for
//!   [`App::start`] and [`ws_driver::adapter::serve_connection`].
//!
//! Only sockets, tasks and timers are this crate's; the upgrade, the drive loop, the
//! accept loop and the graceful shutdown are `ws-driver`'s, the same code the tokio
//! adapter runs (the layers are in `docs/ARCHITECTURE.md`).
//!
//! ## async-std or smol?
//!
//! **async-std is deprecated upstream in favour of smol.** Both run on the same
//! reactor (async-io) and the same kind of executor; smol is maintained, smaller, and
//! the choice for new code. [`AsyncStdRuntime`] is here for applications that already
//! run on async-std. Each has a cargo feature (`smol`, `async-std`), both on by
//! default; turn off the one you do not use.
//!
//! ```no_run
//! use adapter_async_std::{App, Context, SmolServer};
//!
//! fn main() -> std::io::Result<()> {
//!     let app = App::new()
//!         .authenticate(|token: String, _info| async move { Ok(token) })
//!         .on("echo", |ctx: Context| async move {
//!             let text: String = ctx.payload()?;
//!             ctx.reply("echo", &text)
//!         });
//!     smol::block_on(async {
//!         let server = SmolServer::bind("127.0.0.1:8080", "/ws", app).await?;
//!         server.run().await
//!     })
//! }
//! ```
//!
//! ## A whole application and its client, from this crate alone
//!
//! Every type in this crate's signatures is re-exported here:
//!
//! ```no_run
//! use adapter_async_std::{
//!     App, Audience, ClientOptions, CloseCode, Context, Identity, SessionEvent, ServerHandle, SmolClient,
//!     SmolServer,
//! };
//!
//! struct Greeting(String);
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let app = App::new()
//!             .with_state(Greeting("hello".into()))
//!             .authenticate(|token: String, _info| async move { Ok::<_, String>(Identity::new(token)) })
//!             .on("greet", |ctx: Context| async move {
//!                 let greeting = &ctx.state::<Greeting>().0;
//!                 ctx.reply("greeting", &format!("{greeting}, {}", ctx.user_id()))
//!             })
//!             .on_session(|event: SessionEvent, server: ServerHandle| async move {
//!                 if let SessionEvent::Created { session, .. } = event {
//!                     let _ = server.join(session, "lobby").await;
//!                 }
//!             });
//!         let server = SmolServer::bind("127.0.0.1:8080", "/ws", app).await?;
//!         let handle = server.handle();
//!         smol::spawn(server.run()).detach();
//!         handle.to(Audience::room("lobby")).emit("news", &"welcome")?;
//!
//!         let client = SmolClient::connect("ws://127.0.0.1:8080/ws", ClientOptions::with_credential("bob")).await?;
//!         let answer = client.query("greet", &(), None).await?;
//!         println!("{:?}", answer.payload_as::<String>()?);
//!         client.close(CloseCode::NORMAL, "done").await?;
//!         Ok(())
//!     })
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod runtime;
mod server;
mod stream;

pub use client::{AsyncNetConnector, Client};
#[cfg(feature = "async-std")]
pub use runtime::AsyncStdRuntime;
#[cfg(feature = "smol")]
pub use runtime::SmolRuntime;
#[cfg(feature = "tls")]
pub use server::TlsServer;
pub use server::{serve_stream, AsyncNetListener, Server};
pub use stream::AsyncNetStream;
/// Prometheus metrics: the content type, the client crate (see `ServerHandle::prometheus_text`).
pub use ws_driver::prometheus;
/// TLS with rustls (feature `tls`, on by default): connectors, listeners, configurations.
#[cfg(feature = "tls")]
pub use ws_driver::tls;
// Everything an application and a client need, so that this crate alone is enough.
#[doc(inline)]
pub use ws_driver::prelude::*;

/// The server with its tasks and timers on async-std (deprecated upstream; prefer
/// [`SmolServer`]).
#[cfg(feature = "async-std")]
pub type AsyncStdServer = Server<AsyncStdRuntime>;

/// The server with its tasks and timers on smol.
#[cfg(feature = "smol")]
pub type SmolServer = Server<SmolRuntime>;

/// The TLS server with its tasks and timers on async-std.
#[cfg(all(feature = "async-std", feature = "tls"))]
pub type AsyncStdTlsServer = TlsServer<AsyncStdRuntime>;

/// The TLS server with its tasks and timers on smol.
#[cfg(all(feature = "smol", feature = "tls"))]
pub type SmolTlsServer = TlsServer<SmolRuntime>;

/// The client with its task and timers on async-std (deprecated upstream; prefer
/// [`SmolClient`]).
#[cfg(feature = "async-std")]
pub type AsyncStdClient = Client<AsyncStdRuntime>;

/// The client with its task and timers on smol.
#[cfg(feature = "smol")]
pub type SmolClient = Client<SmolRuntime>;
