//! async-std and smol as [`ws_driver::adapter::Runtime`]s: where tasks run and how they sleep.

#[cfg(any(feature = "async-std", feature = "smol"))]
use std::future::Future;
#[cfg(any(feature = "async-std", feature = "smol"))]
use std::time::Instant;

#[cfg(any(feature = "async-std", feature = "smol"))]
use ws_driver::adapter::{BoxFuture, Runtime};

/// Spawns on async-std's global executor and sleeps with its timer.
///
/// async-std is deprecated upstream in favour of smol; prefer [`SmolRuntime`] for new
/// applications.
#[cfg(feature = "async-std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

#[cfg(feature = "async-std")]
impl Runtime for AsyncStdRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Dropping async-std's JoinHandle detaches the task.
        drop(async_std::task::spawn(future));
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async_std::task::sleep(
            deadline.saturating_duration_since(Instant::now()),
        ))
    }
}

/// Spawns on smol's global executor and sleeps with async-io's timer.
///
/// smol's global executor starts its worker threads on first use (`SMOL_THREADS`, one
/// by default); an application that runs its own `smol::Executor` can still use this
/// runtime for the connection tasks.
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

#[cfg(feature = "smol")]
impl Runtime for SmolRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        let timer = smol::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }
}
