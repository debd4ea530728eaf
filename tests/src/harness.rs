//! Starting the server under test on a chosen runtime.
//!
//! A tokio server runs on the test's own runtime, as an application would run it. An
//! async-std or smol server runs on that runtime's executor (its own threads), so the
//! server side never touches tokio: only the test client does.

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
use ws_driver::{App, ServerHandle};

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

/// A server running `/ws` on a loopback port. Dropping it shuts the server down.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
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

/// The address, the handle, and the end of the server's `run_until`.
type Ready = oneshot::Sender<(SocketAddr, ServerHandle)>;
type Done = oneshot::Sender<io::Result<()>>;

/// Binds `app` on `127.0.0.1:0` on `runtime` and starts accepting.
pub async fn start(runtime: ServerRuntime, app: App) -> Running {
    start_with(runtime, app, None).await
}

/// [`start`] serving TLS with `tls` (the runtime's `TlsServer`).
pub async fn start_tls(runtime: ServerRuntime, app: App, tls: Arc<ServerConfig>) -> Running {
    start_with(runtime, app, Some(tls)).await
}

async fn start_with(runtime: ServerRuntime, app: App, tls: Option<Arc<ServerConfig>>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, started) = oneshot::channel();
    let (done, finished) = oneshot::channel();
    // The server stops when asked, or when the `Running` is dropped.
    let signal = async move {
        let _ = stopped.await;
    };
    match runtime {
        ServerRuntime::Tokio => {
            tokio::spawn(async move {
                let addr = "127.0.0.1:0";
                match tls {
                    None => {
                        let server = adapter_tokio::Server::bind(addr, "/ws", app).await.expect("bind");
                        let _ = ready.send((server.local_addr().expect("local address"), server.handle()));
                        let _ = done.send(server.run_until(signal).await);
                    }
                    Some(tls) => {
                        let server = adapter_tokio::TlsServer::bind_tls(addr, "/ws", app, tls)
                            .await
                            .expect("bind");
                        let _ = ready.send((server.local_addr().expect("local address"), server.handle()));
                        let _ = done.send(server.run_until(signal).await);
                    }
                }
            });
        }
        ServerRuntime::AsyncStd => {
            drop(async_std::task::spawn(run_on::<AsyncStdRuntime>(
                app, tls, signal, ready, done,
            )));
        }
        ServerRuntime::Smol => smol::spawn(run_on::<SmolRuntime>(app, tls, signal, ready, done)).detach(),
    }
    let (addr, handle) = started.await.expect("the server started");
    Running {
        addr,
        handle,
        stop,
        done: finished,
    }
}

/// An async-io family server, bound and run inside a task of its runtime.
async fn run_on<R: Runtime + Default>(
    app: App,
    tls: Option<Arc<ServerConfig>>,
    signal: impl Future<Output = ()> + Send + 'static,
    ready: Ready,
    done: Done,
) {
    let addr = "127.0.0.1:0";
    match tls {
        None => {
            let server = adapter_async_std::Server::<R>::bind(addr, "/ws", app)
                .await
                .expect("bind");
            let _ = ready.send((server.local_addr().expect("local address"), server.handle()));
            let _ = done.send(server.run_until(signal).await);
        }
        Some(tls) => {
            let server = adapter_async_std::TlsServer::<R>::bind_tls(addr, "/ws", app, tls)
                .await
                .expect("bind");
            let _ = ready.send((server.local_addr().expect("local address"), server.handle()));
            let _ = done.send(server.run_until(signal).await);
        }
    }
}
