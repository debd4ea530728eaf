//! Deadlines of connections and suspended sessions, in one min-heap.
//!
//! Lazy: each owner remembers the earliest deadline it has in the heap; an entry that
//! does not match it is stale and skipped when it surfaces. A deadline that moves later
//! (a connection heard from) is not re-pushed: its old entry fires, the owner finds
//! nothing due and schedules the real deadline. So the heap stays O(owners) and inbound
//! traffic costs no heap operation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::{ConnectionId, RequestId, SessionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    Connection(ConnectionId),
    Session(SessionId),
    /// A server→client request's deadline (one entry per request, never moved).
    Request(RequestId),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
}

impl Timers {
    /// Makes sure the owner `key` is woken at `at` at the latest; `slot` is the owner's
    /// record of its scheduled deadline.
    pub(crate) fn schedule(&mut self, key: TimerKey, at: Instant, slot: &mut Option<Instant>) {
        if slot.map_or(true, |current| at < current) {
            *slot = Some(at);
            self.heap.push(Reverse((at, key)));
        }
    }

    /// The earliest entry (possibly stale: waking for it is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns an entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
