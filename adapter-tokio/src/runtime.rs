//! tokio as a [`ws_driver::adapter::Runtime`].

use std::future::Future;
use std::time::Instant;

use ws_driver::adapter::{BoxFuture, Runtime};

/// Spawns on the current tokio runtime and sleeps with tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}
