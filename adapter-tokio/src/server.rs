//! The standalone server: ws-driver's [`Server`](ws_driver::Server) on a tokio
//! listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use ws_driver::adapter::{Accepting, Bind, Listener};
use ws_driver::{ConnectionOptions, Hub};

use crate::runtime::TokioRuntime;

/// A WebSocket server on one address and path, on tokio:
/// `Server::bind("127.0.0.1:8080", "/ws", app).await?.run_until(signal).await`.
pub type Server = ws_driver::Server<TokioListener>;

/// A WebSocket server over TLS on tokio (feature `tls`):
/// `TlsServer::bind_tls("0.0.0.0:443", "/ws", app, tls::server_config_from_pem_files(cert, key)?)`.
#[cfg(feature = "tls")]
pub type TlsServer = ws_driver::Server<ws_driver::tls::TlsListener<TokioListener>>;

/// tokio's TCP listener as a [`Listener`]: accepted sockets get `TCP_NODELAY` (small
/// frames go out at once; batching is done above, one write per batch).
pub struct TokioListener(TcpListener);

impl TokioListener {
    /// Wraps a listener you bound yourself (for [`ws_driver::Server::new`]).
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl Listener for TokioListener {
    type Stream = Compat<tokio::net::TcpStream>;
    type Runtime = TokioRuntime;

    fn accept(&self) -> Accepting<'_, Self::Stream> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((stream.compat(), Some(peer)))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl<A: ToSocketAddrs + Send> Bind<A> for TokioListener {
    fn bind<'a>(addr: A) -> Pin<Box<dyn Future<Output = io::Result<Self>> + Send + 'a>>
    where
        A: 'a,
    {
        Box::pin(async move { TcpListener::bind(addr).await.map(Self) })
    }
}

/// Serves one accepted stream of any kind (TCP, Unix socket, TLS, an in-memory duplex
/// in tests): the upgrade, then the WebSocket session, until it closes.
pub async fn serve_stream<S>(hub: Hub, stream: S, peer: Option<SocketAddr>, options: &ConnectionOptions)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ws_driver::adapter::serve_connection(hub, TokioRuntime, stream.compat(), peer, options).await;
}
