//! The accept loop every standalone server shares: one task per accepted stream, a
//! graceful shutdown on a signal. Adapters supply the accepted streams and the runtime.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::future::FutureExt;
use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::{Stream, StreamExt};

use crate::hub::Hub;
use crate::pump::{serve_prefixed, serve_websocket, ConnectionOptions, Wire};
use crate::runtime::Runtime;

/// How long a graceful shutdown waits for connection tasks by default, in every
/// adapter's `Server` (each has a `shutdown_timeout` setter).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the loop waits after a failed accept (out of file descriptors and the
/// like) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves every stream `incoming` yields, each as a task of its own on `runtime`
/// ([`serve_connection`](crate::adapter::serve_connection) or [`serve_prefixed`], as `options.wire` says), until `signal` completes or `incoming` ends. Then it shuts
/// down gracefully: drops `incoming` (so a listener inside it stops accepting), closes
/// every connection with 1001 (going away) after what was queued for it, and waits for
/// the connection tasks up to `shutdown_timeout`.
///
/// A failed accept is logged and retried after a short pause; it never ends the loop.
/// Adapters turn their listener into `incoming` (e.g. with
/// `futures_util::stream::unfold`), setting socket options such as `TCP_NODELAY` as
/// they accept.
pub async fn serve_until<R, S, I, F>(
    hub: Hub,
    runtime: R,
    incoming: I,
    options: Arc<ConnectionOptions>,
    shutdown_timeout: Duration,
    signal: F,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Stream<Item = io::Result<(S, Option<SocketAddr>)>>,
    F: Future<Output = ()>,
{
    // Every connection task holds a sender; when the last is dropped, `all_done` ends.
    let (tracker, mut all_done) = mpsc::channel::<Infallible>(0);
    let mut incoming = Box::pin(incoming.fuse());
    let mut signal = std::pin::pin!(signal.fuse());
    loop {
        let accepted = futures_util::select_biased! {
            () = signal => break,
            accepted = incoming.next() => accepted,
        };
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                let (hub, task_runtime) = (hub.clone(), runtime.clone());
                let guard = tracker.clone();
                // The connection's future itself, not wrapped in an `async` block that
                // would hold the hub, the stream and the options a second time.
                let served = match options.wire {
                    Wire::WebSocket => {
                        serve_websocket(hub, task_runtime, stream, peer, options.clone()).left_future()
                    }
                    Wire::Tcp => serve_prefixed(hub, task_runtime, stream, peer).right_future(),
                };
                runtime.spawn(served.map(move |()| drop(guard)));
            }
            Some(Err(err)) => {
                tracing::warn!(%err, "accept failed");
                let mut pause = runtime.sleep_until(runtime.now() + ACCEPT_BACKOFF).fuse();
                futures_util::select_biased! {
                    () = signal => break,
                    () = pause => {},
                }
            }
        }
    }
    drop(incoming);
    drop(tracker);
    let drained = async {
        hub.handle().shutdown().await;
        // The hub is done when every connection reported closed; wait for the tasks'
        // last writes too.
        while all_done.next().await.is_some() {}
    };
    let mut deadline = runtime.sleep_until(runtime.now() + shutdown_timeout).fuse();
    futures_util::select_biased! {
        () = drained.fuse() => {},
        () = deadline => tracing::warn!("shutdown timeout: connections still open were dropped"),
    }
}

/// What [`Listener::accept`] returns: the stream and the peer's address, when known.
pub type Accepting<'a, S> = Pin<Box<dyn Future<Output = io::Result<(S, Option<SocketAddr>)>> + Send + 'a>>;

/// A listening socket of some runtime, as [`Server`] accepts from it. Adapters
/// implement it for their runtime's TCP listener (and may for Unix sockets, TLS…).
pub trait Listener: Send + Sized + 'static {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The runtime the server's tasks and timers run on.
    type Runtime: Runtime + Default;

    /// Waits for the next connection. Set per-socket options here (`TCP_NODELAY`).
    fn accept(&self) -> Accepting<'_, Self::Stream>;

    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A listener that can be bound to addresses of type `A` (each runtime takes its own
/// kind of address: `"127.0.0.1:8080"`, a `SocketAddr`, …).
pub trait Bind<A>: Listener {
    /// Binds `addr`.
    fn bind<'a>(addr: A) -> Pin<Box<dyn Future<Output = io::Result<Self>> + Send + 'a>>
    where
        A: 'a;
}

/// A server on one address: WebSocket on one path ([`Server::bind`]) or raw TCP
/// ([`Server::bind_tcp`]); the standalone server of every adapter
/// (`adapter_tokio::Server`, `adapter_async_std::SmolServer`, …), generic over the
/// [`Listener`] that brings its sockets and runtime.
pub struct Server<L: Listener> {
    listener: L,
    runtime: L::Runtime,
    hub: Hub,
    options: Arc<ConnectionOptions>,
    shutdown_timeout: Duration,
}

impl<L: Listener> Server<L> {
    /// Binds `addr`, upgrades requests for `path` (others get 404) and starts `app`.
    /// Call [`Server::run`] or [`Server::run_until`] to accept connections. Fails if
    /// the address cannot be bound or `app`'s configuration is invalid
    /// ([`ConfigError`](ws_session::ConfigError), as `InvalidInput`).
    pub async fn bind<A>(addr: A, path: &str, app: crate::App) -> io::Result<Self>
    where
        L: Bind<A>,
    {
        let listener = L::bind(addr).await?;
        Self::new(listener, path, app)
    }

    /// Serves `listener`, already bound; see [`Server::bind`].
    pub fn new(listener: L, path: &str, app: crate::App) -> io::Result<Self> {
        let options = ConnectionOptions {
            path: Some(path.to_owned()),
            wire: Wire::WebSocket,
        };
        Self::started(listener, app, options)
    }

    /// Binds `addr` for the raw TCP transport (a `TETHER` preamble, then
    /// length-prefixed frames: docs/PROTOCOL.md) and starts `app`. A WebSocket client
    /// that connects there gets an HTTP 400 that says what the port speaks.
    pub async fn bind_tcp<A>(addr: A, app: crate::App) -> io::Result<Self>
    where
        L: Bind<A>,
    {
        let listener = L::bind(addr).await?;
        let options = ConnectionOptions {
            path: None,
            wire: Wire::Tcp,
        };
        Self::started(listener, app, options)
    }

    fn started(listener: L, app: crate::App, options: ConnectionOptions) -> io::Result<Self> {
        let runtime = L::Runtime::default();
        let hub = app
            .try_start(runtime.clone())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        Ok(Self::with_hub(listener, &hub, options))
    }

    /// Binds `addr` for one more listener of a running hub (another server's
    /// [`hub`](Self::hub)): the same application and the same sessions on another port
    /// and wire, e.g. raw TCP beside WebSocket. A session may move between them (a
    /// resume over either finds it). Stopping either server shuts the hub down, and
    /// with it the connections of both.
    pub async fn bind_on<A>(addr: A, hub: &Hub, options: ConnectionOptions) -> io::Result<Self>
    where
        L: Bind<A>,
    {
        Ok(Self::with_hub(L::bind(addr).await?, hub, options))
    }

    /// Serves `listener`, already bound, on a running hub; see [`Server::bind_on`].
    pub fn with_hub(listener: L, hub: &Hub, options: ConnectionOptions) -> Self {
        Self {
            listener,
            runtime: L::Runtime::default(),
            hub: hub.clone(),
            options: Arc::new(options),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The handle that reaches the application from anywhere (send, broadcast, rooms,
    /// sessions, metrics, shutdown).
    pub fn handle(&self) -> crate::ServerHandle {
        self.hub.handle().clone()
    }

    /// The running hub, to serve more connections on it (`serve_stream`, `mount`).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sets how long a graceful shutdown waits for connections to close (default:
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`], 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Accepts connections until the process ends.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Accepts connections until `signal` completes, then shuts down gracefully: stops
    /// accepting, closes every connection with 1001 (going away) after what was queued
    /// for it, and waits for them up to the shutdown timeout.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        let incoming = futures_util::stream::unfold(self.listener, |listener| async move {
            let accepted = listener.accept().await;
            Some((accepted, listener))
        });
        serve_until(
            self.hub,
            self.runtime,
            incoming,
            self.options,
            self.shutdown_timeout,
            signal,
        )
        .await;
        Ok(())
    }
}
