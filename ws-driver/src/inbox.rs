//! The hub's inboxes: what connection tasks hand the hub (messages read, write reports,
//! opens and ends), bounded so that a flooding client waits on its socket; and the
//! commands of handlers and the application, unbounded (they come from our code, and
//! a handler must never wait on the hub it is answering).
//!
//! Many producers (the connection tasks) and one consumer (the hub), which takes
//! everything queued at once and works through it in passes. So the inbox is a queue
//! behind a lock that the hub swaps out whole, and a producer wakes the hub only when
//! it puts something into an empty queue. A channel with a node per message allocated
//! one for every message read and every write reported (two per echoed message, one
//! per member written in a broadcast) and a handle per connection; freed by the hub
//! in bursts, after the bursts that made them, they were what the allocator's fast
//! path does not keep. The lock is never held for more than a push, a swap or a count.
//!
//! A full queue parks the producer: its waker waits in a list the hub wakes whole each
//! time it takes the queue. An unbounded one is never full.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::stream::{FusedStream, Stream};
use futures_util::task::AtomicWaker;

/// An inbox holding up to `capacity` inputs the hub has not taken yet, and one more
/// per sender: a connection with nothing queued never waits for a flood of others,
/// and a broadcast's write reports from every member fit without parking them.
pub(crate) fn inbox<T>(capacity: usize) -> (InboxSender<T>, InboxReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            open: true,
            waiting: Vec::new(),
            round: 0,
        }),
        hub: AtomicWaker::new(),
    });
    (
        InboxSender(shared.clone()),
        InboxReceiver {
            shared,
            taken: VecDeque::new(),
            ended: false,
        },
    )
}

/// An inbox that is never full: [`InboxSender::try_send`] fails only once the hub is
/// gone.
pub(crate) fn unbounded<T>() -> (InboxSender<T>, InboxReceiver<T>) {
    inbox(usize::MAX)
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The hub's task, woken when the queue stops being empty or the last sender goes.
    hub: AtomicWaker,
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// Live [`InboxSender`]s: the hub's inputs end when none is left.
    senders: usize,
    /// Whether the hub still takes inputs.
    open: bool,
    /// Producers waiting for room, woken together when the hub takes the queue.
    waiting: Vec<Waker>,
    /// How many times `waiting` was woken and emptied: a producer whose waker was put
    /// there in this round replaces it instead of adding another.
    round: u64,
}

impl<T> State<T> {
    fn is_full(&self) -> bool {
        self.items.len() >= self.capacity.saturating_add(self.senders)
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing runs under the lock that can panic halfway through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`InboxSender::try_send`] could not do, with the input it gives back.
pub(crate) enum TrySendError<T> {
    /// The queue is full: wait with [`InboxSender::send`].
    Full(T),
    /// The hub is gone.
    Gone,
}

/// A producer's end (cloned for each).
pub(crate) struct InboxSender<T>(Arc<Shared<T>>);

impl<T> InboxSender<T> {
    /// Queues `input` when there is room.
    pub(crate) fn try_send(&self, input: T) -> Result<(), TrySendError<T>> {
        let state = self.0.lock();
        if !state.open {
            return Err(TrySendError::Gone);
        }
        if state.is_full() {
            return Err(TrySendError::Full(input));
        }
        self.push(state, input);
        Ok(())
    }

    /// Queues `input` (the caller found room under `state`'s lock), then wakes the hub
    /// if the queue was empty: one that was not has a wake-up of the hub on the way
    /// already, since the hub takes the whole queue each time.
    fn push(&self, mut state: MutexGuard<'_, State<T>>, input: T) {
        let was_empty = state.items.is_empty();
        state.items.push_back(input);
        drop(state);
        if was_empty {
            self.0.hub.wake();
        }
    }

    /// Queues `input` once there is room: `true`, or `false` when the hub is gone.
    pub(crate) fn send(&self, input: T) -> SendInput<'_, T> {
        SendInput {
            sender: self,
            input: Some(input),
            parked: None,
        }
    }
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.hub.wake();
        }
    }
}

/// [`InboxSender::send`]'s future.
pub(crate) struct SendInput<'a, T> {
    sender: &'a InboxSender<T>,
    input: Option<T>,
    /// Where this future's waker is in the waiting list: the round and the index.
    parked: Option<(u64, usize)>,
}

// Nothing in it is pinned: the input is moved out by value.
impl<T> Unpin for SendInput<'_, T> {}

impl<T> Future for SendInput<'_, T> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        let Some(input) = this.input.take() else {
            return Poll::Ready(true);
        };
        let mut state = this.sender.0.lock();
        if !state.open {
            return Poll::Ready(false);
        }
        if !state.is_full() {
            this.sender.push(state, input);
            return Poll::Ready(true);
        }
        // Parked under the lock the hub takes the queue under: the next take wakes it.
        let round = state.round;
        match this.parked {
            Some((parked_round, index)) if parked_round == round => {
                state.waiting[index].clone_from(cx.waker());
            }
            _ => {
                state.waiting.push(cx.waker().clone());
                this.parked = Some((round, state.waiting.len() - 1));
            }
        }
        this.input = Some(input);
        Poll::Pending
    }
}

/// The hub's end.
pub(crate) struct InboxReceiver<T> {
    shared: Arc<Shared<T>>,
    /// What the hub took and has not handled yet; its allocation goes back to the
    /// queue at the next take.
    taken: VecDeque<T>,
    /// Whether the end was handed out.
    ended: bool,
}

impl<T> InboxReceiver<T> {
    /// The next input, if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        if self.taken.is_empty() {
            self.take_queue();
        }
        self.taken.pop_front()
    }

    /// The next input; `Ready(None)` once every sender is gone and nothing is left.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(input) = self.taken.pop_front() {
            return Poll::Ready(Some(input));
        }
        // Registered before looking, so that a push after the look wakes the hub.
        self.shared.hub.register(cx.waker());
        let ended = self.take_queue();
        match self.taken.pop_front() {
            Some(input) => Poll::Ready(Some(input)),
            None if ended => {
                self.ended = true;
                Poll::Ready(None)
            }
            None => Poll::Pending,
        }
    }

    /// Swaps the queue for the (empty) taken one, and wakes the producers waiting for
    /// room. Returns whether every sender was gone then (so nothing can follow what
    /// it took).
    fn take_queue(&mut self) -> bool {
        let mut state = self.shared.lock();
        std::mem::swap(&mut state.items, &mut self.taken);
        let ended = state.senders == 0;
        let waiting = if state.waiting.is_empty() {
            Vec::new()
        } else {
            state.round += 1;
            std::mem::take(&mut state.waiting)
        };
        drop(state);
        for waker in waiting {
            waker.wake();
        }
        ended
    }
}

// Nothing in it is pinned: items are moved out by value.
impl<T> Unpin for InboxReceiver<T> {}

impl<T> Stream for InboxReceiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<T> FusedStream for InboxReceiver<T> {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl<T> Drop for InboxReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.open = false;
        let unhandled = std::mem::take(&mut state.items);
        let waiting = std::mem::take(&mut state.waiting);
        state.round += 1;
        drop(state);
        // Outside the lock: what nobody will handle, and the producers to tell.
        drop(unhandled);
        for waker in waiting {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ConnInput;
    use crate::test_wakers::{counting_waker, park_until_woken, unparking_waker};
    use futures_util::FutureExt;
    use ws_session::ConnectionId;

    fn report(n: u64) -> ConnInput {
        ConnInput::Flushed {
            connection: ConnectionId(n),
            bytes: 1,
        }
    }

    fn number(input: Option<ConnInput>) -> Option<u64> {
        match input? {
            ConnInput::Flushed { connection, .. } => Some(connection.0),
            _ => None,
        }
    }

    #[test]
    fn inputs_arrive_in_order_and_wake_the_hub_once_per_take() {
        let (tx, mut rx) = inbox(8);
        let (hub, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        for n in 0..5 {
            assert!(tx.try_send(report(n)).is_ok());
        }
        assert_eq!(hub.count(), 1, "woken by the first only");
        let got: Vec<_> = (0..5).map(|_| number(rx.try_recv())).collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
        assert!(rx.try_recv().is_none());
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(tx.try_send(report(5)).is_ok());
        assert_eq!(hub.count(), 2);
        assert_eq!(number(rx.try_recv()), Some(5));
    }

    #[test]
    fn a_full_inbox_parks_the_sender_until_the_hub_takes_it() {
        // Room for two, and one for the one sender.
        let (tx, mut rx) = inbox(2);
        for n in 0..3 {
            assert!(tx.try_send(report(n)).is_ok());
        }
        assert!(matches!(tx.try_send(report(9)), Err(TrySendError::Full(_))));
        let (sender, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut send = tx.send(report(3));
        assert!(send.poll_unpin(&mut cx).is_pending());
        // Polled again while still full: one waker in the list, not two.
        assert!(send.poll_unpin(&mut cx).is_pending());
        assert_eq!(tx.0.lock().waiting.len(), 1);
        assert_eq!(sender.count(), 0);
        assert_eq!(number(rx.try_recv()), Some(0));
        assert_eq!(sender.count(), 1, "woken when the hub took the queue");
        assert_eq!(send.poll_unpin(&mut cx), Poll::Ready(true));
        let rest: Vec<_> = (0..3).map(|_| number(rx.try_recv())).collect();
        assert_eq!(rest, [Some(1), Some(2), Some(3)]);
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn an_unbounded_inbox_takes_everything_and_refuses_only_once_the_hub_is_gone() {
        let (tx, mut rx) = unbounded();
        let more = tx.clone();
        // Far past any bound a connection's inbox has, from two senders.
        for n in 0..5_000 {
            let sender = if n % 2 == 0 { &tx } else { &more };
            assert!(sender.try_send(report(n)).is_ok(), "refused input {n}");
        }
        let got: Vec<_> = std::iter::from_fn(|| number(rx.try_recv())).collect();
        assert_eq!(got, (0..5_000).collect::<Vec<_>>());
        drop(rx);
        assert!(matches!(tx.try_send(report(0)), Err(TrySendError::Gone)));
    }

    #[test]
    fn the_hub_sees_the_end_once_every_sender_is_gone_and_all_is_taken() {
        let (tx, mut rx) = inbox(4);
        let other = tx.clone();
        let (hub, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(other.try_send(report(0)).is_ok());
        drop(tx);
        assert_eq!(hub.count(), 1, "woken by the input");
        assert_eq!(number(ready(rx.poll_recv(&mut cx))), Some(0));
        assert!(rx.poll_recv(&mut cx).is_pending(), "a sender is left");
        drop(other);
        assert_eq!(hub.count(), 2, "woken by the last sender going");
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    fn ready<T>(poll: Poll<Option<T>>) -> Option<T> {
        match poll {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn senders_learn_that_the_hub_is_gone_also_while_parked() {
        let (tx, rx) = inbox(1);
        assert!(tx.try_send(report(0)).is_ok());
        assert!(tx.try_send(report(1)).is_ok());
        let (sender, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut send = tx.send(report(2));
        assert!(send.poll_unpin(&mut cx).is_pending());
        drop(rx);
        assert_eq!(sender.count(), 1);
        assert_eq!(send.poll_unpin(&mut cx), Poll::Ready(false));
        assert!(matches!(tx.try_send(report(2)), Err(TrySendError::Gone)));
    }

    #[test]
    fn every_input_from_many_threads_arrives_in_each_senders_order() {
        const SENDERS: u64 = 4;
        const EACH: u64 = 20_000;
        let (tx, mut rx) = inbox(16);
        let producers: Vec<_> = (0..SENDERS)
            .map(|s| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        futures_executor_block_on(tx.send(report(s * EACH + i)));
                    }
                })
            })
            .collect();
        drop(tx);
        let waker = unparking_waker();
        let mut cx = Context::from_waker(&waker);
        let mut next = vec![0u64; SENDERS as usize];
        let mut seen = 0;
        loop {
            match rx.poll_recv(&mut cx) {
                Poll::Ready(Some(input)) => {
                    let n = number(Some(input)).expect("a report");
                    let (s, i) = ((n / EACH) as usize, n % EACH);
                    assert_eq!(i, next[s], "sender {s} out of order");
                    next[s] += 1;
                    seen += 1;
                }
                Poll::Ready(None) => break,
                Poll::Pending => park_until_woken(format_args!("{seen} inputs")),
            }
        }
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(seen, SENDERS * EACH);
    }

    /// Runs `future` on this thread, parking while it is pending.
    fn futures_executor_block_on<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let waker = unparking_waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park_timeout(std::time::Duration::from_millis(100));
        }
    }
}
