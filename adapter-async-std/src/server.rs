//! The standalone server, generic over the runtime its tasks and timers come from.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_net::{AsyncToSocketAddrs, TcpListener};
use ws_driver::{App, ConnectionOptions, Hub, Runtime, ServerHandle};

/// A WebSocket server on one address and path, its tasks and timers on runtime `R`
/// ([`AsyncStdServer`](crate::AsyncStdServer) and [`SmolServer`](crate::SmolServer)
/// name the two). The listening socket is async-io's, the reactor both runtimes share.
pub struct Server<R: Runtime> {
    listener: TcpListener,
    runtime: R,
    hub: Hub,
    options: Arc<ConnectionOptions>,
    shutdown_timeout: Duration,
}

impl<R: Runtime + Default> Server<R> {
    /// Binds `addr`, upgrades requests for `path` (others get 404) and starts `app`.
    /// Call [`Server::run`] or [`Server::run_until`] to accept connections.
    pub async fn bind(addr: impl AsyncToSocketAddrs, path: &str, app: App) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let runtime = R::default();
        Ok(Self {
            listener,
            hub: app.start(runtime.clone()),
            runtime,
            options: Arc::new(ConnectionOptions {
                path: Some(path.to_owned()),
            }),
            shutdown_timeout: ws_driver::DEFAULT_SHUTDOWN_TIMEOUT,
        })
    }
}

impl<R: Runtime> Server<R> {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The handle that sends commands to the application (send, broadcast, metrics).
    pub fn handle(&self) -> ServerHandle {
        self.hub.handle().clone()
    }

    /// Sets how long a graceful shutdown waits for connections to close (default:
    /// [`ws_driver::DEFAULT_SHUTDOWN_TIMEOUT`], 10 s).
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
        let incoming = futures_lite::stream::unfold(self.listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, peer)| {
                // Small frames go out at once; batching is done above, one write per batch.
                let _ = stream.set_nodelay(true);
                (stream, Some(peer))
            });
            Some((accepted, listener))
        });
        ws_driver::serve_until(
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

/// Serves one accepted stream of any `futures-io` kind (an async-std or smol
/// `TcpStream`, a Unix socket, TLS, an in-memory pipe in tests) on `runtime`: the
/// upgrade, then the WebSocket session, until it closes. Start `hub` with
/// `app.start(runtime)`.
///
/// ```no_run
/// use adapter_async_std::{App, AsyncStdRuntime, ConnectionOptions};
///
/// # async fn run(app: App) -> std::io::Result<()> {
/// let hub = app.start(AsyncStdRuntime);
/// let options = ConnectionOptions { path: Some("/ws".into()) };
/// let listener = async_std::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let (stream, peer) = listener.accept().await?;
/// adapter_async_std::serve_stream(AsyncStdRuntime, hub, stream, Some(peer), &options).await;
/// # Ok(()) }
/// ```
pub async fn serve_stream<R, S>(
    runtime: R,
    hub: Hub,
    stream: S,
    peer: Option<SocketAddr>,
    options: &ConnectionOptions,
) where
    R: Runtime,
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    ws_driver::serve_connection(hub, runtime, stream, peer, options).await;
}
