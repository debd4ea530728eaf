//! What a runtime adapter supplies: spawning tasks and sleeping.

use std::future::Future;
use std::time::Instant;

use crate::handler::BoxFuture;

/// The runtime services the drive loop needs. Sockets are not here: the adapter
/// accepts them and hands each to [`serve_connection`](crate::adapter::serve_connection) as a
/// `futures-io` stream.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Runs `future` to completion as a task of its own.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;

    /// The time now, on this runtime's clock: every time the drive loops hand the
    /// engines, and every deadline they sleep until, is read here. The process's
    /// clock by default; a test runtime moves its own
    /// ([`TestRuntime`](crate::test_runtime::TestRuntime)).
    fn now(&self) -> Instant {
        Instant::now()
    }
}
