//! The tether client on async-std and smol: [`ws_driver::client::Client`] with
//! async-io TCP and the runtime's tasks and timers.

use std::io;
use std::marker::PhantomData;
use std::ops::Deref;

use async_net::TcpStream;

use crate::AsyncNetStream;
use ws_driver::adapter::{BoxFuture, Runtime};
use ws_driver::client::{ClientError, ClientOptions, Connector, Target};

/// Opens plain TCP connections on async-io, the reactor async-std and smol share
/// (`ws://` only). [`Client::connect`] wraps it in
/// [`TlsConnector`](crate::tls::TlsConnector) for `wss://` (feature `tls`, on by
/// default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncNetConnector;

impl Connector for AsyncNetConnector {
    type Stream = AsyncNetStream;

    fn connect(&self, target: &Target) -> BoxFuture<io::Result<Self::Stream>> {
        let target = target.clone();
        Box::pin(async move {
            if target.secure {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "wss:// needs a TLS connector; AsyncNetConnector speaks plain TCP",
                ));
            }
            let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
            stream.set_nodelay(true)?;
            Ok(AsyncNetStream::new(stream))
        })
    }
}

/// The connector of [`Client::start`]: TCP, with TLS for `wss://` when the `tls`
/// feature is on.
#[cfg(feature = "tls")]
fn default_connector() -> crate::tls::TlsConnector<AsyncNetConnector> {
    crate::tls::TlsConnector::new(AsyncNetConnector)
}

#[cfg(not(feature = "tls"))]
fn default_connector() -> AsyncNetConnector {
    AsyncNetConnector
}

/// A tether client whose task and timers run on `R` ([`AsyncStdClient`](crate::AsyncStdClient)
/// and [`SmolClient`](crate::SmolClient) name the two): reconnects with backoff,
/// resumes its session, queues while offline, matches queries to replies. Every method
/// of [`ws_driver::client::Client`] is available through `Deref`.
#[derive(Debug, Clone)]
pub struct Client<R> {
    inner: ws_driver::client::Client,
    runtime: PhantomData<R>,
}

impl<R: Runtime + Default> Client<R> {
    /// Starts the client and waits for its first session. It retries (with the
    /// configured backoff) until a session is up, or fails with `Closed` if the client
    /// stops first (authentication refused, attempts exhausted).
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let client = Self::start(url, options)?;
        client.connected().await?;
        Ok(client)
    }

    /// Starts the client without waiting: it connects in the background (watch
    /// [`states`](ws_driver::client::Client::states)).
    ///
    /// `wss://` URLs are verified against Mozilla's roots (feature `tls`, on by
    /// default); to trust other roots or use a `rustls::ClientConfig` of your own, use
    /// [`Client::start_with`] with a [`TlsConnector`](crate::tls::TlsConnector).
    pub fn start(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        Self::start_with(url, options, default_connector())
    }

    /// [`Client::connect`] with a connector of your own: TLS with your roots or
    /// configuration (`TlsConnector::with_roots(AsyncNetConnector, roots)`), a proxy, a
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
        let inner = ws_driver::client::Client::start(url, options, R::default(), connector)?;
        Ok(Self {
            inner,
            runtime: PhantomData,
        })
    }

    /// The runtime-agnostic client underneath.
    pub fn inner(&self) -> &ws_driver::client::Client {
        &self.inner
    }
}

impl<R> Deref for Client<R> {
    type Target = ws_driver::client::Client;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}
