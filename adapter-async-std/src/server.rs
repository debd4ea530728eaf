//! The standalone server, generic over the runtime its tasks and timers come from.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;

use async_net::{AsyncToSocketAddrs, TcpListener};
use ws_driver::adapter::{Accepting, Bind, Listener, Runtime};
use ws_driver::{ConnectionOptions, Hub};

use crate::AsyncNetStream;

/// A WebSocket server on one address and path, its tasks and timers on runtime `R`
/// ([`AsyncStdServer`](crate::AsyncStdServer) and [`SmolServer`](crate::SmolServer)
/// name the two): ws-driver's [`Server`](ws_driver::Server) on an async-io listener.
pub type Server<R> = ws_driver::Server<AsyncNetListener<R>>;

/// A WebSocket server over TLS, its tasks and timers on runtime `R` (feature `tls`):
/// `TlsServer::<SmolRuntime>::bind_tls(addr, "/ws", app, tls::server_config_from_pem_files(cert, key)?)`.
#[cfg(feature = "tls")]
pub type TlsServer<R> = ws_driver::Server<ws_driver::tls::TlsListener<AsyncNetListener<R>>>;

/// async-io's TCP listener (the reactor async-std and smol share) as a [`Listener`]
/// whose server runs on `R`; accepted sockets get `TCP_NODELAY` and read only when
/// the reactor says they may hold bytes ([`AsyncNetStream`]).
pub struct AsyncNetListener<R> {
    listener: TcpListener,
    runtime: PhantomData<fn() -> R>,
}

impl<R> AsyncNetListener<R> {
    /// Wraps a listener you bound yourself (for [`ws_driver::Server::new`]).
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime + Default> Listener for AsyncNetListener<R> {
    type Stream = AsyncNetStream;
    type Runtime = R;

    fn accept(&self) -> Accepting<'_, Self::Stream> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((AsyncNetStream::new(stream), Some(peer)))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<R, A> Bind<A> for AsyncNetListener<R>
where
    R: Runtime + Default,
    A: AsyncToSocketAddrs + Send,
    A::Iter: Send,
{
    fn bind<'a>(addr: A) -> Pin<Box<dyn Future<Output = io::Result<Self>> + Send + 'a>>
    where
        A: 'a,
    {
        Box::pin(async move { TcpListener::bind(addr).await.map(Self::new) })
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
/// let options = ConnectionOptions { path: Some("/ws".into()), ..ConnectionOptions::default() };
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
    ws_driver::adapter::serve_connection(hub, runtime, stream, peer, options).await;
}
