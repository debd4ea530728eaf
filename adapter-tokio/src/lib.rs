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
//! - [`Client`]: the tether client (reconnect, resume, queries) over tokio TCP, with
//!   TLS for `wss://` URLs;
//! - [`TlsServer`] and [`tls`]: the standalone server over TLS (rustls), and the
//!   pieces to configure TLS on both sides (feature `tls`, on by default). Detached
//!   mode keeps the host server's TLS (terminate it in front of axum, or serve the
//!   router with a TLS acceptor of your own).
//! - [`prometheus_route`]: the server's metrics in the Prometheus text format as an
//!   axum route (`ServerHandle::prometheus_text` for any other HTTP server);
//!   [`prometheus_route_with`] adds registries of your own (broker-redis's counters).
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
//!
//! ## A whole application and its client, from this crate alone
//!
//! Every type in this crate's signatures is re-exported here, so an application
//! needs no other tether crate:
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use adapter_tokio::{
//!     App, Audience, Client, ClientOptions, CloseCode, Context, EngineConfig, HandlerError, Identity, Next,
//!     Server, SessionEvent, ServerHandle,
//! };
//!
//! struct Bids(AtomicU64);
//! struct Admin(bool);
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::new()
//!     .with_state(Bids(AtomicU64::new(0)))
//!     .config(EngineConfig { rate_limit_per_second: 100, ..EngineConfig::default() })
//!     .authenticate(|token: String, _info| async move {
//!         Ok::<_, String>(Identity::new(token.clone()).with_claims(Admin(token == "root")))
//!     })
//!     .middleware(|ctx: Context, next: Next| async move { next.run(ctx).await })
//!     .on("bid", |ctx: Context| async move {
//!         let amount: u64 = ctx.payload()?;
//!         ctx.state::<Bids>().0.fetch_max(amount, Ordering::SeqCst);
//!         ctx.server().to(Audience::room("auction")).except(ctx.session_id()).emit("bid", &amount)?;
//!         ctx.reply("bid.ok", &amount)
//!     })
//!     .on("admin.reset", |ctx: Context| async move {
//!         if !ctx.claims::<Admin>().is_some_and(|a| a.0) {
//!             return Err(HandlerError::new(4403, "admins only"));
//!         }
//!         ctx.state::<Bids>().0.store(0, Ordering::SeqCst);
//!         ctx.reply("admin.reset.ok", &())
//!     })
//!     .on_session(|event: SessionEvent, server: ServerHandle| async move {
//!         if let SessionEvent::Created { session, .. } = event {
//!             let _ = server.join(session, "auction").await;
//!         }
//!     });
//! let server = Server::bind("127.0.0.1:8080", "/ws", app).await?;
//! let handle = server.handle();
//! tokio::spawn(server.run());
//! handle.to(Audience::All).volatile().emit("tick", &1)?;
//!
//! let client = Client::connect("ws://127.0.0.1:8080/ws", ClientOptions::with_credential("alice")).await?;
//! let answer = client.query("bid", &10, None).await?;
//! assert_eq!(answer.payload_as::<u64>()?, 10);
//! client.close(CloseCode::NORMAL, "done").await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod mount;
mod router_server;
mod runtime;
mod server;

pub use client::{Client, TokioConnector};
pub use mount::{mount, prometheus_route, prometheus_route_with};
pub use router_server::{serve_router, RouterServer};
pub use runtime::TokioRuntime;
#[cfg(feature = "tls")]
pub use server::TlsServer;
pub use server::{serve_stream, Server, TokioListener};
/// Prometheus metrics: the content type, the client crate (see `ServerHandle::prometheus_text`).
pub use ws_driver::prometheus;
/// TLS with rustls (feature `tls`, on by default): connectors, listeners, configurations.
#[cfg(feature = "tls")]
pub use ws_driver::tls;
// Everything an application and a client need, so that this crate alone is enough.
#[doc(inline)]
pub use ws_driver::prelude::*;
