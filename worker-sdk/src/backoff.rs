//! Reconnect delays: exponential backoff with full jitter, so that many workers
//! losing the same admin do not all come back in the same instant.

use std::time::Duration;

/// The delay before the next reconnect attempt.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, attempt: 0 }
    }

    /// Starts over from `base` (after a session was accepted; the admin's
    /// `reconnect_delay_seconds` becomes the new base).
    pub(crate) fn reset(&mut self, base: Duration) {
        self.base = base;
        self.attempt = 0;
    }

    /// The ceiling for the current attempt: `base * 2^attempt`, at most `cap`.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random delay in `[0, ceiling]` ("full jitter"); the next ceiling doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.ceiling().mul_f64(crate::random::unit());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..7 {
            ceilings.push(b.ceiling().as_secs());
            let ceiling = b.ceiling();
            assert!(b.next_delay() <= ceiling);
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset(Duration::from_secs(3));
        assert_eq!(b.ceiling(), Duration::from_secs(3));
    }

    #[test]
    fn a_huge_attempt_count_does_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..200 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }
}
