//! Starting the server under test on a chosen runtime, reached over a chosen
//! transport.
//!
//! A tokio server runs on the test's own runtime, as an application would run it. An
//! async-std or smol server runs on that runtime's executor (its own threads), so the
//! server side never touches tokio: only the test client does.
//!
//! Every server listens for WebSocket on `/ws` ([`Running::addr`]); a server set up
//! for raw TCP also listens for it on a second port, on the same hub (so the same
//! sessions), and one set up for the in-memory transport is reached through its hub.
//! [`Running::endpoint`] is where the suite's client connects.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_async_std::{AsyncStdRuntime, SmolRuntime};
use adapter_tokio::tls::rustls::ServerConfig;
use adapter_tokio::TokioRuntime;
use futures::channel::oneshot;
use futures::FutureExt;
use ws_driver::adapter::{BoxFuture, Runtime};
use ws_driver::{App, ConnectionOptions, Hub, ServerHandle, Wire};

use crate::client::Endpoint;

/// The runtime a server under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRuntime {
    /// adapter-tokio's `Server`, on the test's tokio runtime.
    Tokio,
    /// adapter-async-std's `AsyncStdServer`, on async-std's executor.
    AsyncStd,
    /// adapter-async-std's `SmolServer`, on smol's executor.
    Smol,
}

impl ServerRuntime {
    /// An async sleep of this runtime's own timer, for code that runs inside the server
    /// (a hook, a handler): it waits without holding a thread, as application code on
    /// that runtime would.
    pub fn sleep(self, duration: Duration) -> BoxFuture<()> {
        let deadline = Instant::now() + duration;
        match self {
            Self::Tokio => TokioRuntime.sleep_until(deadline),
            Self::AsyncStd => AsyncStdRuntime.sleep_until(deadline),
            Self::Smol => SmolRuntime.sleep_until(deadline),
        }
    }
}

/// The transport the suite's client reaches the server over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// WebSocket, through tokio-tungstenite.
    WebSocket,
    /// Raw TCP: tether's length-prefixed framing, through the suite's own framing code.
    Tcp,
    /// The in-memory pair of ws-driver, served by the hub without a socket.
    Memory,
}

/// What a suite body runs against: the server's runtime and the client's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// The runtime the server runs on.
    pub runtime: ServerRuntime,
    /// The transport the client connects over.
    pub transport: TransportKind,
}

impl From<ServerRuntime> for Setup {
    /// WebSocket, the transport of every test written before there were others.
    fn from(runtime: ServerRuntime) -> Self {
        Self {
            runtime,
            transport: TransportKind::WebSocket,
        }
    }
}

/// A server running `/ws` on a loopback port. Dropping it shuts the server down.
pub struct Running {
    /// Where it listens for WebSocket.
    pub addr: SocketAddr,
    /// Where the suite's client connects: [`Running::addr`], the raw TCP port, or
    /// the hub in memory, as the [`Setup`] said.
    pub endpoint: Endpoint,
    /// Its handle (broadcast, metrics).
    pub handle: ServerHandle,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<io::Result<()>>,
}

impl Running {
    /// Starts the graceful shutdown; the future completes with what `run_until`
    /// returned.
    pub fn stop(self) -> impl Future<Output = io::Result<()>> {
        let _ = self.stop.send(());
        self.done
            .map(|done| done.expect("the server task ended without reporting"))
    }
}

/// The address, the handle, the hub and the TCP port if asked, and the end of the
/// servers' `run_until`.
type Ready = oneshot::Sender<(SocketAddr, ServerHandle, Hub, Option<SocketAddr>)>;
type Done = oneshot::Sender<io::Result<()>>;

/// Binds `app` on `127.0.0.1:0` on `setup`'s runtime (a [`ServerRuntime`] alone:
/// WebSocket) and starts accepting.
pub async fn start(setup: impl Into<Setup>, app: App) -> Running {
    start_with(setup.into(), app, None).await
}

/// [`start`] serving TLS with `tls` (the runtime's `TlsServer`).
pub async fn start_tls(runtime: ServerRuntime, app: App, tls: Arc<ServerConfig>) -> Running {
    start_with(runtime.into(), app, Some(tls)).await
}

async fn start_with(setup: Setup, app: App, tls: Option<Arc<ServerConfig>>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, started) = oneshot::channel();
    let (done, finished) = oneshot::channel();
    // The servers stop when asked, or when the `Running` is dropped.
    let signal = async move {
        let _ = stopped.await;
    }
    .shared();
    let tcp = setup.transport == TransportKind::Tcp;
    match setup.runtime {
        ServerRuntime::Tokio => {
            tokio::spawn(async move {
                let addr = "127.0.0.1:0";
                match tls {
                    None => {
                        let server = adapter_tokio::Server::bind(addr, "/ws", app).await.expect("bind");
                        let tcp_server = match tcp {
                            true => Some(
                                adapter_tokio::Server::bind_on(addr, server.hub(), tcp_options())
                                    .await
                                    .expect("bind"),
                            ),
                            false => None,
                        };
                        let tcp_addr = tcp_server
                            .as_ref()
                            .map(|s| s.local_addr().expect("local address"));
                        let _ = ready.send((
                            server.local_addr().expect("local address"),
                            server.handle(),
                            server.hub().clone(),
                            tcp_addr,
                        ));
                        let _ = done.send(run_both(server, tcp_server, signal).await);
                    }
                    Some(tls) => {
                        let server = adapter_tokio::TlsServer::bind_tls(addr, "/ws", app, tls)
                            .await
                            .expect("bind");
                        let _ = ready.send((
                            server.local_addr().expect("local address"),
                            server.handle(),
                            server.hub().clone(),
                            None,
                        ));
                        let _ = done.send(server.run_until(signal).await);
                    }
                }
            });
        }
        ServerRuntime::AsyncStd => {
            drop(async_std::task::spawn(run_on::<AsyncStdRuntime>(
                app, tls, tcp, signal, ready, done,
            )));
        }
        ServerRuntime::Smol => {
            smol::spawn(run_on::<SmolRuntime>(app, tls, tcp, signal, ready, done)).detach()
        }
    }
    let (addr, handle, hub, tcp_addr) = started.await.expect("the server started");
    let endpoint = match setup.transport {
        TransportKind::WebSocket => Endpoint::WebSocket(addr),
        TransportKind::Tcp => Endpoint::Tcp(tcp_addr.expect("a TCP port")),
        TransportKind::Memory => Endpoint::Memory {
            hub,
            runtime: setup.runtime,
        },
    };
    Running {
        addr,
        endpoint,
        handle,
        stop,
        done: finished,
    }
}

/// Runs the WebSocket server and, beside it, the TCP one, until `signal`; the
/// outcome of the first, once both have stopped.
async fn run_both<L: ws_driver::adapter::Listener>(
    server: ws_driver::Server<L>,
    tcp_server: Option<ws_driver::Server<L>>,
    signal: impl Future<Output = ()> + Clone,
) -> io::Result<()> {
    let tcp = async {
        match tcp_server {
            Some(tcp_server) => tcp_server.run_until(signal.clone()).await,
            None => Ok(()),
        }
    };
    let (result, tcp_result) = futures::join!(server.run_until(signal.clone()), tcp);
    tcp_result.expect("the TCP server ends without an error");
    result
}

/// The raw TCP listener of a server's hub.
fn tcp_options() -> ConnectionOptions {
    ConnectionOptions {
        wire: Wire::Tcp,
        ..ConnectionOptions::default()
    }
}

/// An async-io family server (and its TCP port when `tcp`), bound and run inside a
/// task of its runtime.
async fn run_on<R: Runtime + Default>(
    app: App,
    tls: Option<Arc<ServerConfig>>,
    tcp: bool,
    signal: impl Future<Output = ()> + Clone + Send + 'static,
    ready: Ready,
    done: Done,
) {
    let addr = "127.0.0.1:0";
    match tls {
        None => {
            let server = adapter_async_std::Server::<R>::bind(addr, "/ws", app)
                .await
                .expect("bind");
            let tcp_server = match tcp {
                true => Some(
                    adapter_async_std::Server::<R>::bind_on(addr, server.hub(), tcp_options())
                        .await
                        .expect("bind"),
                ),
                false => None,
            };
            let tcp_addr = tcp_server
                .as_ref()
                .map(|s| s.local_addr().expect("local address"));
            let _ = ready.send((
                server.local_addr().expect("local address"),
                server.handle(),
                server.hub().clone(),
                tcp_addr,
            ));
            let _ = done.send(run_both(server, tcp_server, signal).await);
        }
        Some(tls) => {
            let server = adapter_async_std::TlsServer::<R>::bind_tls(addr, "/ws", app, tls)
                .await
                .expect("bind");
            let _ = ready.send((
                server.local_addr().expect("local address"),
                server.handle(),
                server.hub().clone(),
                None,
            ));
            let _ = done.send(server.run_until(signal).await);
        }
    }
}
