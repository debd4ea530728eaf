//! The tether client on tokio: [`ws_driver::client::Client`] with tokio TCP and
//! timers.

use std::io;
use std::ops::Deref;

use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use ws_driver::adapter::BoxFuture;
use ws_driver::client::{ClientError, ClientOptions, Connector, Target};

use crate::runtime::TokioRuntime;

/// Opens plain TCP connections with tokio (`ws://` only). [`Client::connect`] wraps it
/// in [`TlsConnector`](crate::tls::TlsConnector) for `wss://` (feature `tls`, on by
/// default).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioConnector;

impl Connector for TokioConnector {
    type Stream = Compat<TcpStream>;

    fn connect(&self, target: &Target) -> BoxFuture<io::Result<Self::Stream>> {
        let target = target.clone();
        Box::pin(async move {
            if target.secure {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "wss:// needs a TLS connector; TokioConnector speaks plain TCP",
                ));
            }
            let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream.compat())
        })
    }
}

/// The connector of [`Client::start`]: TCP, with TLS for `wss://` when the `tls`
/// feature is on.
#[cfg(feature = "tls")]
fn default_connector() -> crate::tls::TlsConnector<TokioConnector> {
    crate::tls::TlsConnector::new(TokioConnector)
}

#[cfg(not(feature = "tls"))]
fn default_connector() -> TokioConnector {
    TokioConnector
}

/// A tether client on tokio: reconnects with backoff, resumes its session, queues
/// while offline, matches queries to replies. Every method of
/// [`ws_driver::client::Client`] is available through `Deref`.
///
/// ```no_run
/// use adapter_tokio::{Client, ClientOptions};
///
/// # async fn run() -> Result<(), adapter_tokio::ClientError> {
/// let client = Client::connect("ws://127.0.0.1:8080/ws", ClientOptions::with_credential("alice")).await?;
/// let reply = client.query("echo", "hi", None).await?;
/// println!("{:?}", reply.payload);
/// client.close(ws_proto::CloseCode::NORMAL, "bye").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client(ws_driver::client::Client);

impl Client {
    /// Starts the client and waits for its first session. It retries (with the
    /// configured backoff) until a session is up, or fails with `Closed` if the client
    /// stops first (authentication refused, attempts exhausted). Must run inside a
    /// tokio runtime.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let client = Self::start(url, options)?;
        client.connected().await?;
        Ok(client)
    }

    /// Starts the client without waiting: it connects in the background (watch
    /// [`states`](ws_driver::client::Client::states)). Must be called inside a tokio
    /// runtime (it spawns the client's task).
    ///
    /// `wss://` URLs are verified against Mozilla's roots (feature `tls`, on by
    /// default); to trust other roots or use a `rustls::ClientConfig` of your own, use
    /// [`Client::start_with`] with a [`TlsConnector`](crate::tls::TlsConnector).
    pub fn start(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        Self::start_with(url, options, default_connector())
    }

    /// [`Client::connect`] with a connector of your own: TLS with your roots or
    /// configuration (`TlsConnector::with_roots(TokioConnector, roots)`), a proxy, a
    /// Unix socket.
    pub async fn connect_with<C: Connector>(
        url: &str,
        options: ClientOptions,
        connector: C,
    ) -> Result<Self, ClientError> {
        let client = Self::start_with(url, options, connector)?;
        client.connected().await?;
        Ok(client)
    }

    /// [`Client::start`] with a connector of your own.
    pub fn start_with<C: Connector>(
        url: &str,
        options: ClientOptions,
        connector: C,
    ) -> Result<Self, ClientError> {
        ws_driver::client::Client::start(url, options, TokioRuntime, connector).map(Self)
    }

    /// The runtime-agnostic client underneath.
    pub fn inner(&self) -> &ws_driver::client::Client {
        &self.0
    }
}

impl Deref for Client {
    type Target = ws_driver::client::Client;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
