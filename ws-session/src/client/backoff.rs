//! Reconnect delays: the [`Backoff`] trait and the three built-in strategies, each
//! with optional [`Jitter`].
//!
//! Attempt numbers start at 1 (the first *re*connect). The delay is computed from the
//! attempt number alone, then jitter lowers it by a random part of at most `ratio` of
//! itself, drawn from the caller's generator: with jitter the delay lies in
//! `[base × (1 − ratio), base]`, so it never exceeds the strategy's documented figure
//! and a thousand clients dropped at once come back spread over that interval.

use std::fmt;
use std::time::Duration;

use rand_core::RngCore;

/// A reconnect-delay strategy. Implement it for a custom policy.
pub trait Backoff: fmt::Debug + Send + Sync {
    /// The delay before reconnect attempt `attempt` (1 for the first retry). `rng` is
    /// the generator handed to the client engine, for jitter.
    fn delay(&self, attempt: u32, rng: &mut dyn RngCore) -> Duration;
}

/// Randomness applied on top of a strategy's delay.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// The delay is exactly the strategy's figure.
    #[default]
    None,
    /// The delay is lowered by a uniformly drawn part of at most `ratio` of itself:
    /// it lies in `[base × (1 − ratio), base]`. `ratio` is clamped to `0.0..=1.0`.
    Proportional(f64),
}

impl Jitter {
    /// Applies the jitter to `base`.
    pub fn apply(self, base: Duration, rng: &mut dyn RngCore) -> Duration {
        match self {
            Jitter::None => base,
            Jitter::Proportional(ratio) => {
                let ratio = if ratio.is_nan() {
                    0.0
                } else {
                    ratio.clamp(0.0, 1.0)
                };
                // Uniform in [0, 1) with 53 bits of precision.
                let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let cut = base.as_secs_f64() * ratio * unit;
                base.saturating_sub(Duration::from_secs_f64(cut)).min(base)
            }
        }
    }
}

/// The same delay before every attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    /// The delay.
    pub delay: Duration,
    /// Randomness on top.
    pub jitter: Jitter,
}

impl Backoff for Constant {
    fn delay(&self, _attempt: u32, rng: &mut dyn RngCore) -> Duration {
        self.jitter.apply(self.delay, rng)
    }
}

/// `initial + increment × (attempt − 1)`, capped at `maximum`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    /// The delay before the first attempt.
    pub initial: Duration,
    /// Added for each further attempt.
    pub increment: Duration,
    /// The cap.
    pub maximum: Duration,
    /// Randomness on top.
    pub jitter: Jitter,
}

impl Backoff for Linear {
    fn delay(&self, attempt: u32, rng: &mut dyn RngCore) -> Duration {
        let steps = attempt.saturating_sub(1);
        let base = self
            .increment
            .checked_mul(steps)
            .and_then(|grown| self.initial.checked_add(grown))
            .unwrap_or(Duration::MAX)
            .min(self.maximum);
        self.jitter.apply(base, rng)
    }
}

/// Binary exponential: `initial × 2^min(attempt − 1, max_step)`. With the defaults
/// (500 ms, step 6) the delays are 0.5, 1, 2, 4, 8, 16, 32, 32, … seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exponential {
    /// The delay before the first attempt.
    pub initial: Duration,
    /// The largest doubling: from attempt `max_step + 1` on, the delay stays at
    /// `initial × 2^max_step`.
    pub max_step: u32,
    /// Randomness on top.
    pub jitter: Jitter,
}

impl Default for Exponential {
    /// 500 ms doubling up to 32 s (step 6), with 50 % proportional jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max_step: 6,
            jitter: Jitter::Proportional(0.5),
        }
    }
}

impl Backoff for Exponential {
    fn delay(&self, attempt: u32, rng: &mut dyn RngCore) -> Duration {
        let step = attempt.saturating_sub(1).min(self.max_step).min(31);
        let base = self.initial.checked_mul(1 << step).unwrap_or(Duration::MAX);
        self.jitter.apply(base, rng)
    }
}
