//! The inbound token bucket of a connection, as GCRA: one instant per connection, no
//! floating point, no refill loop.

use std::time::{Duration, Instant};

/// Generic cell rate algorithm: equivalent to a token bucket of `burst` tokens refilled
/// at `per_second`, kept as the "theoretical arrival time" of the next message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimiter {
    tat: Instant,
}

impl RateLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        Self { tat: now }
    }

    /// Whether a message arriving at `now` fits; consumes a token when it does.
    pub(crate) fn allow(&mut self, now: Instant, per_second: u32, burst: u32) -> bool {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let tolerance = interval * burst.max(1).saturating_sub(1);
        let tat = self.tat.max(now);
        if tat.saturating_duration_since(now) > tolerance {
            return false;
        }
        self.tat = tat + interval;
        true
    }
}

/// `Option<Instant>` as "the last time something happened".
pub(crate) trait LastSeen {
    /// Whether it never happened, or happened at least `gap` before `now`.
    fn is_none_or_elapsed(&self, now: Instant, gap: Duration) -> bool;
}

impl LastSeen for Option<Instant> {
    fn is_none_or_elapsed(&self, now: Instant, gap: Duration) -> bool {
        self.map_or(true, |at| now.saturating_duration_since(at) >= gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        // The fake clock's origin: the one real clock read of this test.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(t0);
        for _ in 0..10 {
            assert!(rl.allow(t0, 10, 10));
        }
        assert!(!rl.allow(t0, 10, 10));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(rl.allow(t1, 10, 10));
        assert!(!rl.allow(t1, 10, 10));
        // A long pause refills the bucket, but not beyond the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..10 {
            assert!(rl.allow(t2, 10, 10));
        }
        assert!(!rl.allow(t2, 10, 10));
    }
}
