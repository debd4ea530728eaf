//! The standalone server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::compat::TokioAsyncReadCompatExt;
use ws_driver::{App, ConnectionOptions, Hub, ServerHandle};

use crate::runtime::TokioRuntime;

/// A WebSocket server on one address and path.
pub struct Server {
    listener: TcpListener,
    hub: Hub,
    options: Arc<ConnectionOptions>,
    shutdown_timeout: Duration,
}

impl Server {
    /// Binds `addr`, upgrades requests for `path` (others get 404) and starts `app`.
    /// Call [`Server::run`] or [`Server::run_until`] to accept connections.
    pub async fn bind(addr: impl ToSocketAddrs, path: &str, app: App) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            hub: app.start(TokioRuntime),
            options: Arc::new(ConnectionOptions {
                path: Some(path.to_owned()),
            }),
            shutdown_timeout: ws_driver::DEFAULT_SHUTDOWN_TIMEOUT,
        })
    }

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
        let incoming = futures_util::stream::unfold(self.listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, peer)| {
                // Small frames go out at once; batching is done above, one write per batch.
                let _ = stream.set_nodelay(true);
                (stream.compat(), Some(peer))
            });
            Some((accepted, listener))
        });
        ws_driver::serve_until(
            self.hub,
            TokioRuntime,
            incoming,
            self.options,
            self.shutdown_timeout,
            signal,
        )
        .await;
        Ok(())
    }
}

/// Serves one accepted stream of any kind (TCP, Unix socket, TLS, an in-memory duplex
/// in tests): the upgrade, then the WebSocket session, until it closes.
pub async fn serve_stream<S>(hub: Hub, stream: S, peer: Option<SocketAddr>, options: &ConnectionOptions)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ws_driver::serve_connection(hub, TokioRuntime, stream.compat(), peer, options).await;
}
