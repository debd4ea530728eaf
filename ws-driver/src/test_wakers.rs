//! Wakers for the unit tests of the queues between tasks (`inbox`, `outbox`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

/// Counts its wake-ups.
pub(crate) struct Counter(AtomicUsize);

impl Counter {
    /// Wake-ups so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts its wake-ups, and the count.
pub(crate) fn counting_waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    (counter.clone(), Waker::from(counter))
}

/// Wakes a parked thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread.
pub(crate) fn unparking_waker() -> Waker {
    Waker::from(Arc::new(Unpark(std::thread::current())))
}

/// Parks the thread until an [`unparking_waker`] wakes it; fails the test when no
/// wake-up comes within 10 s — a liveness bound for a lost wake-up, not a measurement
/// (a wake-up takes microseconds). `progress` says how far the test got.
pub(crate) fn park_until_woken(progress: impl std::fmt::Display) {
    const BOUND: std::time::Duration = std::time::Duration::from_secs(10);
    let parked = std::time::Instant::now();
    std::thread::park_timeout(BOUND);
    assert!(parked.elapsed() < BOUND, "not woken after {progress}");
}
