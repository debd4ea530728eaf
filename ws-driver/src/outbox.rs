//! The hub's outboxes: what it hands one connection task to write, and one session's
//! worker to run (its handlers and hooks, in order).
//!
//! One producer (the hub) and one consumer (the task), and the consumer always takes
//! everything queued at once: a connection to write it in one go (corking), a worker
//! to run it in order. So the outbox is a queue behind a lock that the consumer swaps
//! out whole, and the hub wakes the task only when it puts something into an empty
//! queue: a broadcast of k messages to a member costs one wake-up and no allocation per
//! message, where a channel pays a node allocation, its atomic counters and a wake-up
//! for each. The lock is never held for more than a push or a swap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Makes an outbox: the hub's end and the task's.
pub(crate) fn outbox<T>() -> (OutboxSender<T>, OutboxReceiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
        }),
        waker: AtomicWaker::new(),
    });
    (OutboxSender(shared.clone()), OutboxReceiver(shared))
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// The task, woken when the queue stops being empty or is closed.
    waker: AtomicWaker,
}

struct Queue<T> {
    items: VecDeque<T>,
    /// Either end is gone: the hub's means no more will come, the task's that nothing
    /// more will be taken.
    closed: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Nothing runs under the lock that can panic halfway through a change.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hub's end. Dropping it tells the task the hub is gone, once the task has taken
/// what is queued.
pub(crate) struct OutboxSender<T>(Arc<Shared<T>>);

impl<T> OutboxSender<T> {
    /// Queues `outbound` for the task; false when the task is gone.
    pub(crate) fn send(&self, outbound: T) -> bool {
        let mut queue = self.0.lock();
        if queue.closed {
            return false;
        }
        let was_empty = queue.items.is_empty();
        queue.items.push_back(outbound);
        drop(queue);
        // A queue that was not empty has a wake-up on the way already: the task takes
        // the whole queue each time it is woken.
        if was_empty {
            self.0.waker.wake();
        }
        true
    }
}

impl<T> Drop for OutboxSender<T> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.waker.wake();
    }
}

/// The task's end.
pub(crate) struct OutboxReceiver<T>(Arc<Shared<T>>);

impl<T> OutboxReceiver<T> {
    /// Moves everything queued into `into` (which must be empty): `Ready(true)` when
    /// there was something, `Ready(false)` when nothing is queued and the hub is gone,
    /// else `Pending` with the task woken when that changes.
    pub(crate) fn poll_take(&mut self, cx: &mut Context<'_>, into: &mut VecDeque<T>) -> Poll<bool> {
        debug_assert!(into.is_empty(), "the last batch was not written");
        // Registered before looking, so that a push after the look wakes us.
        self.0.waker.register(cx.waker());
        let mut queue = self.0.lock();
        if !queue.items.is_empty() {
            // The queue's allocation goes with the batch and is freed once it is
            // written (or run): an idle task keeps none.
            std::mem::swap(&mut queue.items, into);
            return Poll::Ready(true);
        }
        if queue.closed {
            return Poll::Ready(false);
        }
        Poll::Pending
    }
}

impl<T> Drop for OutboxReceiver<T> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.closed = true;
        // What nobody will take is dropped now, not when the hub lets go; outside
        // the lock, which is never held for more than a push or a swap.
        let unwritten = std::mem::take(&mut queue.items);
        drop(queue);
        drop(unwritten);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Outbound;
    use crate::test_wakers::{counting_waker, park_until_woken, unparking_waker};
    use ws_proto::CloseCode;

    fn close(code: u16) -> Outbound {
        Outbound::Close(CloseCode(code), "test")
    }

    fn codes(batch: &mut VecDeque<Outbound>) -> Vec<u16> {
        batch
            .drain(..)
            .map(|outbound| match outbound {
                Outbound::Close(code, _) => code.0,
                Outbound::Message(_) => 0,
            })
            .collect()
    }

    #[test]
    fn a_batch_is_everything_queued_in_order_and_wakes_the_task_once() {
        let (tx, mut rx) = outbox();
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Pending);
        for code in 4000..4005 {
            assert!(tx.send(close(code)));
        }
        assert_eq!(counter.count(), 1, "one wake-up for the batch");
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(codes(&mut batch), vec![4000, 4001, 4002, 4003, 4004]);
        // Empty again: the next message wakes the task again.
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Pending);
        assert!(tx.send(close(4005)));
        assert_eq!(counter.count(), 2);
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(codes(&mut batch), vec![4005]);
    }

    #[test]
    fn the_hub_gone_is_seen_after_what_it_queued() {
        let (tx, mut rx) = outbox();
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Pending);
        assert!(tx.send(close(4000)));
        drop(tx);
        // One wake-up: the task has not looked since the message, so the drop's finds
        // nothing registered, and the task sees the close when it takes the message.
        assert_eq!(counter.count(), 1);
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(codes(&mut batch), vec![4000]);
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Ready(false));
    }

    #[test]
    fn the_hub_gone_wakes_a_task_waiting_on_an_empty_outbox() {
        let (tx, mut rx) = outbox::<Outbound>();
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Pending);
        drop(tx);
        assert_eq!(counter.count(), 1);
        assert_eq!(rx.poll_take(&mut cx, &mut batch), Poll::Ready(false));
    }

    #[test]
    fn a_send_to_a_task_that_is_gone_fails_and_keeps_nothing() {
        let (tx, rx) = outbox();
        assert!(tx.send(close(4000)));
        drop(rx);
        assert!(tx.0.lock().items.is_empty(), "dropped with the task");
        assert!(!tx.send(close(4001)));
        assert!(tx.0.lock().items.is_empty());
    }

    #[test]
    fn every_message_from_another_thread_arrives_and_the_close_after_them() {
        const N: u16 = 20_000;
        let (tx, mut rx) = outbox();
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                assert!(tx.send(close(i)));
                if i % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let waker = unparking_waker();
        let mut cx = Context::from_waker(&waker);
        let mut seen = Vec::new();
        loop {
            let mut batch = VecDeque::new();
            match rx.poll_take(&mut cx, &mut batch) {
                Poll::Ready(true) => seen.extend(codes(&mut batch)),
                Poll::Ready(false) => break,
                Poll::Pending => park_until_woken(format_args!("{} messages", seen.len())),
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, (0..N).collect::<Vec<_>>());
    }
}
