//! The sessions waiting for a resume, in the order they were suspended: past
//! [`EngineConfig::max_suspended_sessions`](crate::EngineConfig::max_suspended_sessions)
//! the one waiting longest expires early. Without a bound, clients that connect,
//! create a session and leave make the server hold each session (and its replay
//! buffer) for the whole resume window, as many as they can create in it.

use std::collections::VecDeque;
use std::time::Instant;

use crate::SessionId;

/// Suspended sessions, oldest first.
#[derive(Debug, Default)]
pub(super) struct Suspensions {
    /// Each suspension: the session and the deadline it got. An entry whose session
    /// has since been resumed, ended, or suspended again (with a later deadline) is
    /// stale: skipped when met, swept once stale entries outnumber the current ones.
    order: VecDeque<(SessionId, Instant)>,
    /// Sessions suspended now.
    count: usize,
}

impl Suspensions {
    /// `session` was suspended, its resume window ending at `deadline`. A session
    /// suspended again without a resume between must be [`left`](Self::left) first.
    pub(super) fn push(
        &mut self,
        session: SessionId,
        deadline: Instant,
        current: impl Fn(SessionId, Instant) -> bool,
    ) {
        self.order.push_back((session, deadline));
        self.count += 1;
        if self.order.len() > 2 * self.count + 64 {
            self.order
                .retain(|&(session, deadline)| current(session, deadline));
        }
    }

    /// A suspended session was resumed or ended.
    pub(super) fn left(&mut self) {
        debug_assert!(
            self.count > 0,
            "a session left the suspended that was not in them"
        );
        self.count = self.count.saturating_sub(1);
    }

    /// How many sessions are suspended.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Takes the session suspended longest ago that still is (`current` says whether
    /// an entry still describes its session's suspension).
    pub(super) fn pop_oldest(&mut self, current: impl Fn(SessionId, Instant) -> bool) -> Option<SessionId> {
        while let Some((session, deadline)) = self.order.pop_front() {
            if current(session, deadline) {
                return Some(session);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn the_oldest_current_suspension_comes_first_and_stale_entries_are_skipped_and_swept() {
        let t0 = crate::sim::origin();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // What each session's suspension is now (absent: resumed or ended).
        let mut now: HashMap<SessionId, Instant> = HashMap::new();
        let mut queue = Suspensions::default();
        let (a, b, c) = (SessionId(1), SessionId(2), SessionId(3));
        for (session, deadline) in [(a, at(1)), (b, at(2))] {
            now.insert(session, deadline);
            queue.push(session, deadline, |s, d| now.get(&s) == Some(&d));
        }
        // `a` resumes, then is suspended again after `c`: `b` is the oldest now.
        now.remove(&a);
        queue.left();
        now.insert(c, at(3));
        queue.push(c, at(3), |s, d| now.get(&s) == Some(&d));
        now.insert(a, at(4));
        queue.push(a, at(4), |s, d| now.get(&s) == Some(&d));
        assert_eq!(queue.len(), 3);
        let current = |s: SessionId, d: Instant| now.get(&s) == Some(&d);
        assert_eq!(queue.pop_oldest(current), Some(b));
        assert_eq!(queue.pop_oldest(current), Some(c));
        assert_eq!(queue.pop_oldest(current), Some(a));
        assert_eq!(queue.pop_oldest(current), None);

        // One session suspended and resumed over and over: the stale entries are swept.
        let mut queue = Suspensions::default();
        let mut now: HashMap<SessionId, Instant> = HashMap::new();
        for s in 0..10_000 {
            now.insert(a, at(s));
            queue.push(a, at(s), |s, d| now.get(&s) == Some(&d));
            now.remove(&a);
            queue.left();
        }
        assert_eq!(queue.len(), 0);
        assert!(queue.order.len() <= 65, "{} entries kept", queue.order.len());
    }
}
