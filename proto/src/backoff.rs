//! How long to wait before trying again: exponential backoff with jitter
//! and a cap, shared by every retry loop of flotilla (the scheduler's
//! election and reconcile loop, the agent's feed, reports and reconcile
//! passes).
//!
//! Pure: the jitter comes from a small generator seeded once per value
//! (from the process's random hash keys, or from a given seed in tests), so
//! no clock or I/O is involved.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff: each delay doubles the last, up to a cap, with up
/// to a quarter added at random so that many clients that failed together
/// do not retry in lockstep. [`Backoff::reset`] after a success starts
/// again from the initial delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    /// The next delay before jitter.
    next: Duration,
    /// xorshift64 state; never zero.
    rng: u64,
}

impl Default for Backoff {
    /// 50 ms, doubling up to 5 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }
}

impl Backoff {
    /// The largest share of a delay that jitter adds, in thousandths.
    const JITTER_PER_MILLE: u64 = 250;

    /// Delays from `initial`, doubling each time, never above `cap` (before
    /// jitter). A zero `initial` is taken as 1 ms, so that the delays grow.
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let seed = RandomState::new().build_hasher().finish();
        Backoff {
            initial,
            cap: cap.max(initial),
            next: initial,
            rng: seed | 1,
        }
    }

    /// The same backoff with its jitter drawn from `seed`: the same seed
    /// gives the same delays (for tests).
    pub fn with_seed(mut self, seed: u64) -> Backoff {
        self.rng = seed | 1;
        self
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        let per_mille = self.random() % (Self::JITTER_PER_MILLE + 1);
        // `per_mille` is at most 250, so the conversion is exact.
        base + base.mul_f64(per_mille as f64 / 1000.0)
    }

    /// Starts again from the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// For loops whose "success" is running a while (a task restarted when
    /// it fails): starts again from the initial delay when the attempt that
    /// just failed had `ran` for at least twice the cap, so that a failure
    /// after a quiet hour is retried at once rather than after the longest
    /// delay of a burst long past.
    pub fn reset_if_quiet(&mut self, ran: Duration) {
        if ran >= self.cap.saturating_mul(2) {
            self.reset();
        }
    }

    /// The delay before jitter that the next call starts from.
    pub fn peek_base(&self) -> Duration {
        self.next
    }

    fn random(&mut self) -> u64 {
        // xorshift64 (Marsaglia): plenty for spreading retries.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000)).with_seed(7);
        let bases = [100, 200, 400, 800, 1000, 1000, 1000];
        for base in bases {
            let d = b.next_delay();
            assert!(d >= ms(base), "{d:?} below {base} ms");
            assert!(d <= ms(base) + ms(base) / 4, "{d:?} above {base} ms + 25%");
        }
        b.reset();
        assert_eq!(b.peek_base(), ms(100));
        let d = b.next_delay();
        assert!(d >= ms(100) && d <= ms(125));
    }

    #[test]
    fn a_long_quiet_run_starts_the_delays_again() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000)).with_seed(5);
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset_if_quiet(ms(1999));
        assert_eq!(b.peek_base(), ms(1000), "a short run keeps the delay");
        b.reset_if_quiet(ms(2000));
        assert_eq!(b.peek_base(), ms(100));
    }

    #[test]
    fn jitter_varies_and_a_seed_repeats_it() {
        let ms = Duration::from_millis;
        let delays = |seed| {
            let mut b = Backoff::new(ms(1000), ms(1000)).with_seed(seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = delays(1);
        assert_eq!(a, delays(1));
        assert_ne!(a, delays(2));
        // Not all the same: the jitter spreads retries.
        assert!(a.iter().any(|d| *d != a[0]));
    }

    #[test]
    fn zero_initial_delay_still_grows() {
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(1)).with_seed(3);
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(1));
        assert!(b.next_delay() >= Duration::from_millis(2));
    }
}
