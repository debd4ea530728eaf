//! Detached mode's HTTP server: an axum [`Router`] that mounts the tether endpoint,
//! served with the limits tether promises for every upgrade.
//!
//! `axum::serve` runs hyper without a timer, so a connection that sends nothing, or an
//! incomplete head one byte a second, is kept open forever; and hyper reads heads
//! whose lines end in a bare LF. [`RouterServer`] reads each connection's first head
//! itself, with the handshake deadline, the head size limit and the bare-LF refusal of
//! the standalone server ([`RequestHeadReader`]), then replays those bytes into hyper,
//! which it runs with a timer so that later heads on a kept-alive connection have the
//! same deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tower_service::Service;
use ws_driver::adapter::Admission;
use ws_driver::Hub;

use crate::mount::HeldSlot;
use ws_proto::handshake::RequestHeadReader;

/// Serves `router` on `listener` with the handshake limits of `hub`'s application
/// ([`App::handshake_timeout`](ws_driver::App::handshake_timeout) and the head limits
/// of its `EngineConfig`). Use it instead of `axum::serve` for a router that
/// [`mount`](crate::mount)s tether.
///
/// ```no_run
/// use adapter_tokio::{mount, serve_router, App, TokioRuntime};
///
/// # async fn run() -> std::io::Result<()> {
/// let hub = App::new().start(TokioRuntime);
/// let router = axum::Router::new().route("/ws", mount(hub.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// serve_router(listener, router, &hub)
///     .run_until(async { tokio::signal::ctrl_c().await.ok(); })
///     .await
/// # }
/// ```
pub fn serve_router(listener: TcpListener, router: Router, hub: &Hub) -> RouterServer {
    RouterServer {
        listener,
        router,
        head: RequestHeadReader::new(hub.proto_config()),
        head_limits: (
            hub.proto_config().max_handshake_size,
            hub.proto_config().max_handshake_headers,
        ),
        handshake_timeout: hub.handshake_timeout(),
        hub: hub.clone(),
        #[cfg(feature = "tls")]
        tls: None,
    }
}

/// A connection's byte stream, TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A router server made by [`serve_router`]; run it with [`RouterServer::run_until`].
pub struct RouterServer {
    listener: TcpListener,
    router: Router,
    head: RequestHeadReader,
    /// The head limits of the upgrade (`max_handshake_size`, `max_handshake_headers`),
    /// given to hyper for the later heads of a kept-alive connection.
    head_limits: (usize, usize),
    handshake_timeout: Duration,
    /// Counts the connections against `App::max_connections`, plain HTTP ones too.
    hub: Hub,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<crate::tls::rustls::ServerConfig>>,
}

impl RouterServer {
    /// Serves HTTPS (and `wss://`) with `config` (feature `tls`): every connection's
    /// TLS handshake and first request head share the handshake deadline. This is the
    /// TLS of detached mode when tether's server is the host server; behind a server
    /// or proxy of your own, TLS is that server's business.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<crate::tls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Accepts connections until `signal` completes, then stops accepting and waits
    /// for the HTTP connections in progress to finish their current request (bound
    /// the wait yourself). Upgraded WebSockets are not HTTP connections any more: shut
    /// them down with the hub's handle ([`ServerHandle::shutdown`](ws_driver::ServerHandle::shutdown)).
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        // Each connection task holds a receiver: `closed()` resolves when all are done.
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut signal = std::pin::pin!(signal);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors and the like: the listener is fine, this
                    // accept is not. Pause briefly instead of spinning.
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut signal => break,
            };
            let _ = stream.set_nodelay(true);
            let router = self.router.clone();
            let head = self.head.clone();
            let timeout = self.handshake_timeout;
            let (head_bytes, head_lines) = self.head_limits;
            let mut stopping = stopping.clone();
            // Counted from the accept, as the standalone server counts: past the
            // bound the first request gets 503, past the margin the stream is closed.
            let (slot, at_capacity) = match self.hub.admit_connection() {
                Admission::Admitted(slot) => (slot, false),
                Admission::Refused(slot) => (slot, true),
                Admission::Dropped => continue,
            };
            let stream: Box<dyn Io> = match &self.tls_config() {
                #[cfg(feature = "tls")]
                Some(config) => {
                    use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
                    // The handshake runs in `first_head`'s first read, within its deadline.
                    Box::new(crate::tls::TlsAccepted::new(stream.compat(), config.clone()).compat())
                }
                _ => Box::new(stream),
            };
            tokio::spawn(async move {
                let Some(stream) = first_head(stream, head, timeout, peer, at_capacity).await else {
                    return;
                };
                // The request that upgrades (`mount`) takes the slot over; else it is
                // freed with the connection.
                let held = HeldSlot::new(slot);
                let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.extensions_mut().insert(held.clone());
                    let mut router = router.clone();
                    async move { router.call(request).await }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    // The first head's limits for the later ones too (431 past them);
                    // hyper takes no buffer under 8 KiB.
                    .max_buf_size(head_bytes.max(8192))
                    .max_headers(head_lines)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut connection = std::pin::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    _ = stopping.changed() => {
                        // Finish the request in progress, then close.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(err) = result {
                    tracing::debug!(?peer, %err, "HTTP connection ended with an error");
                }
            });
        }
        drop(stopping);
        let _ = stop.send(true);
        stop.closed().await;
        Ok(())
    }
}

impl RouterServer {
    /// The TLS configuration, if any (always `None` without the `tls` feature).
    #[cfg(feature = "tls")]
    fn tls_config(&self) -> Option<std::sync::Arc<crate::tls::rustls::ServerConfig>> {
        self.tls.clone()
    }

    #[cfg(not(feature = "tls"))]
    fn tls_config(&self) -> Option<std::convert::Infallible> {
        None
    }
}

/// Reads the connection's first head within `timeout`: the stream with those bytes
/// to replay, or `None` when it was refused (answered: a fault of the head, or
/// `at_capacity` with 503) or timed out (dropped).
async fn first_head<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut head: RequestHeadReader,
    timeout: Duration,
    peer: SocketAddr,
    at_capacity: bool,
) -> Option<Replay<S>> {
    let read = async {
        let mut buf = vec![0; 4096];
        loop {
            let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
            match head.handle_bytes(&buf[..n]) {
                Ok(None) => continue,
                Ok(Some(bytes)) => return Some(Ok(bytes)),
                Err(rejection) => return Some(Err(rejection)),
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => {
            tracing::debug!(?peer, "no request head within the handshake timeout");
            None
        }
        Ok(None) => None,
        Ok(Some(Ok(_))) if at_capacity => {
            let refusal = ws_driver::adapter::refuse_at_capacity();
            let _ = stream.write_all(&refusal.to_response()).await;
            let _ = stream.shutdown().await;
            None
        }
        Ok(Some(Err(rejection))) => {
            tracing::debug!(?peer, status = rejection.status(), error = %rejection.error(), "request refused");
            let _ = stream.write_all(&rejection.to_response()).await;
            let _ = stream.shutdown().await;
            None
        }
        Ok(Some(Ok(bytes))) => Some(Replay {
            prefix: bytes,
            inner: stream,
        }),
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Replay<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
