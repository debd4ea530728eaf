//! TLS with rustls, for every runtime at once (feature `tls`).
//!
//! The drive loop speaks `futures-io`; so does [futures-rustls], so one TLS layer here
//! serves tokio (through its compat layer), async-std and smol:
//!
//! - [`TlsConnector`] wraps a plain [`Connector`]: `wss://` targets get a TLS session
//!   (verified against Mozilla's roots by default, or the roots or `ClientConfig` you
//!   give), `ws://` targets pass through untouched.
//! - [`TlsListener`] wraps a plain [`Listener`]: every accepted socket becomes a
//!   [`TlsAccepted`] stream whose TLS handshake runs *on the connection's own task*,
//!   within the server's handshake timeout, never in the accept loop (so one slow or
//!   silent peer does not hold up the others).
//! - [`webpki_roots()`] (the default of the connector) and, with the `native-roots`
//!   feature, `native_roots` (the platform's store) give the roots to trust.
//! - [`server_config`] and [`server_config_from_pem_files`] build a
//!   `rustls::ServerConfig` from a PEM certificate chain and key.
//!
//! The crypto provider is `ring` (see the workspace manifest for why); a configuration
//! you build yourself may use any provider. [`rustls`] is re-exported so that your
//! configuration is of the version this crate uses.
//!
//! Detached mode (the endpoint mounted on an axum/hyper server) does not use this: TLS
//! there is the host server's business, and the upgrade arrives already decrypted.
//!
//! [futures-rustls]: https://docs.rs/futures-rustls

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_rustls::{client, server, TlsAcceptor};
use futures_util::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::client::{Connector, Target};
use crate::handler::BoxFuture;
use crate::serve::{Accepting, Bind, Listener};

pub use rustls;

/// The crypto provider of the configurations this module builds.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Mozilla's root certificates (the `webpki-roots` crate), as a rustls root store.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The platform's trusted certificates (feature `native-roots`): the system store on
/// Linux (`/etc/ssl/certs` and the like, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when
/// set), the keychain on macOS, the Windows store. Certificates that cannot be parsed
/// are skipped; it fails only when none could be loaded, saying why.
#[cfg(feature = "native-roots")]
pub fn native_roots() -> io::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "the store is empty".to_owned(), ToString::to_string);
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no usable certificate in the platform's store: {why}"),
        ));
    }
    Ok(roots)
}

/// A client configuration (TLS 1.2 and 1.3, no client certificate) trusting `roots`.
pub fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A server configuration (TLS 1.2 and 1.3, no client authentication) presenting
/// `chain` (leaf first) with `key`. Fails with `InvalidInput` if the key does not
/// match or is of a kind rustls does not support.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TLS certificate or key: {err}"),
            )
        })?;
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM data: `cert_pem` holds the chain (leaf first), `key_pem`
/// the private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Arc<ServerConfig>> {
    let invalid = |what: &str, err: rustls::pki_types::pem::Error| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {err}"))
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid("TLS certificate PEM", err))?;
    if chain.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS certificate PEM: no certificate found",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| invalid("TLS key PEM", err))?;
    server_config(chain, key)
}

/// [`server_config_from_pem`] reading two files (what the chat example's
/// `--tls-cert`/`--tls-key` take). The error names the file that could not be read.
pub fn server_config_from_pem_files(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> io::Result<Arc<ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))
    };
    server_config_from_pem(&read(cert.as_ref())?, &read(key.as_ref())?)
}

/// A [`Connector`] that adds TLS to another for `wss://` targets and leaves `ws://`
/// targets plain.
///
/// The server's certificate is checked against the roots for the URL's host name
/// (or IP address). A failed check fails the connection attempt with an
/// `io::Error` of kind `InvalidData` whose message says what was wrong
/// (`TLS handshake with localhost:8443 failed: invalid peer certificate: UnknownIssuer`)
/// and whose inner error ([`io::Error::get_ref`]) is the [`rustls::Error`].
#[derive(Clone)]
pub struct TlsConnector<C> {
    inner: C,
    config: Arc<ClientConfig>,
}

impl<C> std::fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl<C: Connector> TlsConnector<C> {
    /// TLS over `inner` trusting Mozilla's roots ([`webpki_roots()`]).
    pub fn new(inner: C) -> Self {
        Self::with_roots(inner, webpki_roots())
    }

    /// TLS over `inner` trusting `roots` only (a private CA, the platform's store
    /// loaded with `rustls-native-certs`, a test certificate).
    pub fn with_roots(inner: C, roots: RootCertStore) -> Self {
        Self::with_config(inner, client_config(roots))
    }

    /// TLS over `inner` with a configuration of your own (client certificates, another
    /// crypto provider, custom verification). Its ALPN list is used as is (tether
    /// needs none).
    pub fn with_config(inner: C, config: Arc<ClientConfig>) -> Self {
        Self { inner, config }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = MaybeTls<C::Stream>;

    fn connect(&self, target: &Target) -> BoxFuture<io::Result<Self::Stream>> {
        if !target.secure {
            let opening = self.inner.connect(target);
            return Box::pin(async move { opening.await.map(MaybeTls::Plain) });
        }
        // The inner connector opens the TCP stream only: to it, the target is plain.
        let opening = self.inner.connect(&Target {
            secure: false,
            ..target.clone()
        });
        let connector = futures_rustls::TlsConnector::from(self.config.clone());
        let (host, port) = (target.host.clone(), target.port);
        Box::pin(async move {
            let name = ServerName::try_from(host.clone()).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("TLS: {host:?} is not a server name: {err}"),
                )
            })?;
            let stream = opening.await?;
            match connector.connect(name, stream).await {
                Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
                Err(err) => Err(handshake_error(&format!("{host}:{port}"), err)),
            }
        })
    }
}

/// The error of a failed client handshake: says so and what rustls found, and keeps
/// the [`rustls::Error`] as the inner error.
fn handshake_error(peer: &str, err: io::Error) -> io::Error {
    let kind = err.kind();
    match err.into_inner() {
        Some(inner) => match inner.downcast::<rustls::Error>() {
            Ok(tls) => io::Error::new(
                kind,
                HandshakeError(format!("TLS handshake with {peer} failed: {tls}"), *tls),
            ),
            Err(other) => io::Error::new(kind, format!("TLS handshake with {peer} failed: {other}")),
        },
        None => io::Error::new(kind, format!("TLS handshake with {peer} failed: {kind}")),
    }
}

/// A rustls error with the words of [`handshake_error`]; `source()` is the rustls error.
#[derive(Debug)]
struct HandshakeError(String, rustls::Error);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.1)
    }
}

/// The [`rustls::Error`] behind an error of [`TlsConnector::connect`], if the TLS
/// handshake is what failed (a certificate not valid for the name, an unknown issuer,
/// no common protocol version, …).
pub fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    let inner = err.get_ref()?;
    if let Some(ours) = inner.downcast_ref::<HandshakeError>() {
        return Some(&ours.1);
    }
    inner.downcast_ref::<rustls::Error>()
}

/// A client stream of a [`TlsConnector`]: TLS for `wss://`, the plain stream for `ws://`.
#[derive(Debug)]
pub enum MaybeTls<S> {
    /// A `ws://` connection.
    Plain(S),
    /// A `wss://` connection (boxed: a TLS session is large).
    Tls(Box<client::TlsStream<S>>),
}

/// Forwards the futures-io calls of an enum of streams to its variant.
macro_rules! forward_io {
    ($ty:ident, $($variant:ident),+) => {
        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for $ty<S> {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for $ty<S> {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(s) => Pin::new(s).poll_close(cx),)+
                }
            }
        }
    };
}

forward_io!(MaybeTls, Plain, Tls);

/// A [`Listener`] that serves TLS on the sockets another accepts.
///
/// `accept` returns at once with a [`TlsAccepted`] stream; the TLS handshake happens
/// on the connection's task when the server first reads from it, so it counts against
/// the server's handshake timeout (`EngineConfig::handshake_timeout`) like the HTTP
/// upgrade request. A failed handshake (a client that does not trust the certificate,
/// plain HTTP on the TLS port) ends that connection only, logged at debug level.
pub struct TlsListener<L> {
    inner: L,
    acceptor: TlsAcceptor,
}

impl<L: Listener> TlsListener<L> {
    /// TLS with `config` on the sockets `inner` accepts.
    pub fn new(inner: L, config: Arc<ServerConfig>) -> Self {
        Self {
            inner,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Stream = TlsAccepted<L::Stream>;
    type Runtime = L::Runtime;

    fn accept(&self) -> Accepting<'_, Self::Stream> {
        let (accepting, acceptor) = (self.inner.accept(), self.acceptor.clone());
        Box::pin(async move {
            let (stream, peer) = accepting.await?;
            let handshake = acceptor.accept(stream);
            Ok((
                TlsAccepted(Accepted::Handshaking(Box::new(handshake), peer)),
                peer,
            ))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<L: Listener> crate::Server<TlsListener<L>> {
    /// Binds `addr` and serves TLS with `config` on it (see
    /// [`Server::bind`](crate::Server::bind) for `path` and `app`; [`server_config`]
    /// and [`server_config_from_pem_files`] build `config`).
    pub async fn bind_tls<A>(
        addr: A,
        path: &str,
        app: crate::App,
        config: Arc<ServerConfig>,
    ) -> io::Result<Self>
    where
        L: Bind<A>,
    {
        let listener = L::bind(addr).await?;
        Self::new(TlsListener::new(listener, config), path, app)
    }
}

/// A socket a [`TlsListener`] accepted: the TLS handshake runs on the first read or
/// write, then the decrypted stream.
pub struct TlsAccepted<S>(Accepted<S>);

enum Accepted<S> {
    Handshaking(Box<futures_rustls::Accept<S>>, Option<SocketAddr>),
    Ready(Box<server::TlsStream<S>>),
    Failed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsAccepted<S> {
    /// The server side of TLS with `config` on `stream`, accepted by a listener of
    /// your own; the handshake runs on the first read or write.
    pub fn new(stream: S, config: Arc<ServerConfig>) -> Self {
        Self(Accepted::Handshaking(
            Box::new(TlsAcceptor::from(config).accept(stream)),
            None,
        ))
    }

    /// Drives the handshake; `Ready` once the TLS stream is there.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut server::TlsStream<S>>> {
        if let Accepted::Handshaking(handshake, peer) = &mut self.0 {
            match std::task::ready!(Pin::new(handshake).poll(cx)) {
                Ok(stream) => self.0 = Accepted::Ready(Box::new(stream)),
                Err(err) => {
                    tracing::debug!(peer = ?peer, %err, "TLS handshake failed");
                    self.0 = Accepted::Failed;
                    return Poll::Ready(Err(err));
                }
            }
        }
        match &mut self.0 {
            Accepted::Ready(stream) => Poll::Ready(Ok(&mut **stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsAccepted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let stream = std::task::ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsAccepted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let stream = std::task::ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = std::task::ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = std::task::ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Accepted::Ready(stream) => Pin::new(stream).poll_close(cx),
            // Nothing was said yet (or the handshake failed): nothing to close politely.
            _ => Poll::Ready(Ok(())),
        }
    }
}
