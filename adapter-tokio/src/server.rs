//! The standalone server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::task::TaskTracker;
use ws_driver::{App, ConnectionOptions, Hub, ServerHandle};

use crate::runtime::TokioRuntime;

/// A WebSocket server on one address and path.
pub struct Server {
    listener: TcpListener,
    hub: Hub,
    options: Arc<ConnectionOptions>,
    shutdown_timeout: Duration,
}

/// Connection tasks still running get this long to finish after a shutdown began.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

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
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
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

    /// Sets how long a graceful shutdown waits for connections to close.
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
        let tasks = TaskTracker::new();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(%err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let hub = self.hub.clone();
                    let options = self.options.clone();
                    tasks.spawn(async move { serve(hub, stream, Some(peer), &options).await });
                }
            }
        }
        drop(self.listener);
        let drained = async {
            self.hub.handle().shutdown().await;
            // The hub is done when every connection reported closed; wait for the
            // tasks' last writes too.
            tasks.close();
            tasks.wait().await;
        };
        if tokio::time::timeout(self.shutdown_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout: connections still open were dropped");
        }
        Ok(())
    }
}

async fn serve(
    hub: Hub,
    stream: tokio::net::TcpStream,
    peer: Option<SocketAddr>,
    options: &ConnectionOptions,
) {
    // Small frames go out at once; batching is done above, one write per batch.
    let _ = stream.set_nodelay(true);
    serve_stream(hub, stream, peer, options).await;
}

/// Serves one accepted stream of any kind (TCP, Unix socket, TLS, an in-memory duplex
/// in tests): the upgrade, then the WebSocket session, until it closes.
pub async fn serve_stream<S>(hub: Hub, stream: S, peer: Option<SocketAddr>, options: &ConnectionOptions)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ws_driver::serve_connection(hub, TokioRuntime, stream.compat(), peer, options).await;
}
