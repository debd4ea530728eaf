//! A [`Runtime`] for applications' tests: tasks run on the test's own thread, one at
//! a time in the order they were woken, and the clock moves only when the test moves
//! it. With the in-memory transport ([`MemoryDialer`](crate::transport::memory::MemoryDialer))
//! an `App` and a real [`Client`](crate::client::Client) run with no socket, no
//! thread and no waiting: heartbeats, idle timeouts and resume windows pass in an
//! instant, the same way every run.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::task::{waker_ref, ArcWake};

use crate::handler::BoxFuture;
use crate::runtime::Runtime;

/// A single-threaded runtime with a clock of its own. Cheap to clone (clones share
/// the tasks and the clock).
///
/// Nothing runs until the test calls [`run_until_stalled`](Self::run_until_stalled),
/// [`advance`](Self::advance) or [`block_on`](Self::block_on).
#[derive(Clone)]
pub struct TestRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    ready: Mutex<VecDeque<Arc<Task>>>,
    clock: Mutex<Clock>,
}

struct Clock {
    now: Instant,
    /// Sleeps not yet due: their deadlines and where their wakers are (gone once the
    /// sleep is dropped).
    sleeping: Vec<(Instant, Weak<WakerSlot>)>,
}

/// The waker of one sleep, replaced at each poll.
type WakerSlot = Mutex<Option<Waker>>;

struct Task {
    future: Mutex<Option<BoxFuture<()>>>,
    runtime: Weak<Inner>,
}

impl ArcWake for Task {
    fn wake_by_ref(task: &Arc<Self>) {
        if let Some(inner) = task.runtime.upgrade() {
            lock(&inner.ready).push_back(task.clone());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for TestRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntime").finish_non_exhaustive()
    }
}

impl TestRuntime {
    /// A runtime whose clock starts at the real time of the call and then stands still.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                ready: Mutex::new(VecDeque::new()),
                clock: Mutex::new(Clock {
                    now: Instant::now(),
                    sleeping: Vec::new(),
                }),
            }),
        }
    }

    /// The time on this runtime's clock.
    pub fn now(&self) -> Instant {
        lock(&self.inner.clock).now
    }

    /// Runs every task that can make progress, until none can without the clock
    /// moving.
    pub fn run_until_stalled(&self) {
        loop {
            let Some(task) = lock(&self.inner.ready).pop_front() else {
                return;
            };
            let mut slot = lock(&task.future);
            if let Some(future) = slot.as_mut() {
                let waker = waker_ref(&task);
                if future.as_mut().poll(&mut Context::from_waker(&waker)).is_ready() {
                    *slot = None;
                }
            }
        }
    }

    /// Moves the clock forward by `by`, one due sleep after another (each sleeper
    /// sees the time it asked for), running what each wakes.
    pub fn advance(&self, by: Duration) {
        let target = lock(&self.inner.clock).now + by;
        self.run_until_stalled();
        while self.wake_next(Some(target)) {
            self.run_until_stalled();
        }
        lock(&self.inner.clock).now = target;
        self.run_until_stalled();
    }

    /// Runs `future` to its end: the tasks first, then, whenever everything waits,
    /// the clock jumps to the next sleep's deadline. Panics when nothing waits on the
    /// clock and the future still cannot finish (a deadlock in the test).
    pub fn block_on<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, mut rx) = oneshot::channel();
        self.spawn(async move {
            let _ = tx.send(future.await);
        });
        loop {
            self.run_until_stalled();
            if let Ok(Some(value)) = rx.try_recv() {
                return value;
            }
            assert!(
                self.wake_next(None),
                "TestRuntime::block_on: every task waits and no sleep is pending"
            );
        }
    }

    /// Moves the clock to the earliest pending deadline (if it is not past `limit`)
    /// and wakes every sleep due then. Returns whether there was one.
    fn wake_next(&self, limit: Option<Instant>) -> bool {
        let mut clock = lock(&self.inner.clock);
        clock.sleeping.retain(|(_, slot)| slot.strong_count() > 0);
        let Some(next) = clock.sleeping.iter().map(|(at, _)| *at).min() else {
            return false;
        };
        if limit.is_some_and(|limit| next > limit) {
            return false;
        }
        clock.now = clock.now.max(next);
        let now = clock.now;
        let (due, waiting) = std::mem::take(&mut clock.sleeping)
            .into_iter()
            .partition::<Vec<_>, _>(|(at, _)| *at <= now);
        clock.sleeping = waiting;
        drop(clock);
        for (_, slot) in due {
            if let Some(waker) = slot.upgrade().and_then(|slot| lock(&slot).take()) {
                waker.wake();
            }
        }
        true
    }
}

/// A sleep on the test clock.
struct Sleep {
    deadline: Instant,
    runtime: Weak<Inner>,
    /// Registered with the clock at the first poll that had to wait.
    slot: Option<Arc<WakerSlot>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.runtime.upgrade() else {
            return Poll::Pending;
        };
        let mut clock = lock(&inner.clock);
        if clock.now >= self.deadline {
            return Poll::Ready(());
        }
        match &self.slot {
            Some(slot) => *lock(slot) = Some(cx.waker().clone()),
            None => {
                let slot = Arc::new(Mutex::new(Some(cx.waker().clone())));
                clock.sleeping.push((self.deadline, Arc::downgrade(&slot)));
                drop(clock);
                self.get_mut().slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Runtime for TestRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = Arc::new(Task {
            future: Mutex::new(Some(Box::pin(future))),
            runtime: Arc::downgrade(&self.inner),
        });
        lock(&self.inner.ready).push_back(task);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(Sleep {
            deadline,
            runtime: Arc::downgrade(&self.inner),
            slot: None,
        })
    }

    fn now(&self) -> Instant {
        TestRuntime::now(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn sleeps_wake_in_deadline_order_when_the_clock_moves_and_not_before() {
        let runtime = TestRuntime::new();
        let start = runtime.now();
        let order = Arc::new(Mutex::new(Vec::new()));
        for secs in [3, 1, 2] {
            let (rt, order) = (runtime.clone(), order.clone());
            runtime.spawn(async move {
                rt.sleep_until(start + Duration::from_secs(secs)).await;
                lock(&order).push((secs, rt.now() - start));
            });
        }
        runtime.advance(Duration::from_millis(999));
        assert!(lock(&order).is_empty(), "nothing is due before 1 s");
        runtime.advance(Duration::from_secs(5));
        assert_eq!(
            *lock(&order),
            [
                (1, Duration::from_secs(1)),
                (2, Duration::from_secs(2)),
                (3, Duration::from_secs(3))
            ]
        );
        assert_eq!(runtime.now() - start, Duration::from_millis(5999));
    }

    #[test]
    fn block_on_jumps_to_each_deadline_and_a_deadlock_panics() {
        let runtime = TestRuntime::new();
        let start = runtime.now();
        let ticks = Arc::new(AtomicU32::new(0));
        let (rt, counted) = (runtime.clone(), ticks.clone());
        let elapsed = runtime.block_on(async move {
            for i in 1..=10 {
                rt.sleep_until(start + Duration::from_secs(60 * i)).await;
                counted.fetch_add(1, Ordering::SeqCst);
            }
            rt.now() - start
        });
        assert_eq!(
            (elapsed, ticks.load(Ordering::SeqCst)),
            (Duration::from_secs(600), 10)
        );
        let stuck = std::panic::catch_unwind(|| runtime.block_on(std::future::pending::<()>()));
        assert!(stuck.is_err());
    }
}
