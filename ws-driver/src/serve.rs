//! The accept loop every standalone server shares: one task per accepted stream, a
//! graceful shutdown on a signal. Adapters supply the accepted streams and the runtime.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_util::future::FutureExt;
use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::{Stream, StreamExt};

use crate::hub::Hub;
use crate::pump::{serve_connection, ConnectionOptions};
use crate::runtime::Runtime;

/// How long a graceful shutdown waits for connection tasks by default, in every
/// adapter's `Server` (each has a `shutdown_timeout` setter).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the loop waits after a failed accept (out of file descriptors and the
/// like) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves every stream `incoming` yields, each as a task of its own on `runtime`
/// ([`serve_connection`]), until `signal` completes or `incoming` ends. Then it shuts
/// down gracefully: drops `incoming` (so a listener inside it stops accepting), closes
/// every connection with 1001 (going away) after what was queued for it, and waits for
/// the connection tasks up to `shutdown_timeout`.
///
/// A failed accept is logged and retried after a short pause; it never ends the loop.
/// Adapters turn their listener into `incoming` (e.g. with
/// `futures_util::stream::unfold`), setting socket options such as `TCP_NODELAY` as
/// they accept.
pub async fn serve_until<R, S, I, F>(
    hub: Hub,
    runtime: R,
    incoming: I,
    options: Arc<ConnectionOptions>,
    shutdown_timeout: Duration,
    signal: F,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Stream<Item = io::Result<(S, Option<SocketAddr>)>>,
    F: Future<Output = ()>,
{
    // Every connection task holds a sender; when the last is dropped, `all_done` ends.
    let (tracker, mut all_done) = mpsc::channel::<Infallible>(0);
    let mut incoming = Box::pin(incoming.fuse());
    let mut signal = std::pin::pin!(signal.fuse());
    loop {
        let accepted = futures_util::select_biased! {
            () = signal => break,
            accepted = incoming.next() => accepted,
        };
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                let (hub, task_runtime, options) = (hub.clone(), runtime.clone(), options.clone());
                let guard = tracker.clone();
                runtime.spawn(async move {
                    serve_connection(hub, task_runtime, stream, peer, &options).await;
                    drop(guard);
                });
            }
            Some(Err(err)) => {
                tracing::warn!(%err, "accept failed");
                let mut pause = runtime.sleep_until(Instant::now() + ACCEPT_BACKOFF).fuse();
                futures_util::select_biased! {
                    () = signal => break,
                    () = pause => {},
                }
            }
        }
    }
    drop(incoming);
    drop(tracker);
    let drained = async {
        hub.handle().shutdown().await;
        // The hub is done when every connection reported closed; wait for the tasks'
        // last writes too.
        while all_done.next().await.is_some() {}
    };
    let mut deadline = runtime.sleep_until(Instant::now() + shutdown_timeout).fuse();
    futures_util::select_biased! {
        () = drained.fuse() => {},
        () = deadline => tracing::warn!("shutdown timeout: connections still open were dropped"),
    }
}
