//! The admin's one backoff rule: a delay that doubles from a base up to a cap, with
//! optional "equal jitter". Job retries use it with jitter; the store's commit retries use
//! its ceiling. Jitter is an argument, not drawn here, so callers (the job state machine)
//! stay pure functions that tests drive with fixed values.

/// Exponential backoff: `base * 2^(attempt - 1)`, at most `cap` (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: i64,
    pub cap_ms: i64,
}

impl Backoff {
    pub const fn new(base_ms: i64, cap_ms: i64) -> Self {
        Backoff { base_ms, cap_ms }
    }

    /// The full delay before retry number `attempt` (1 is the first retry).
    pub fn ceiling_ms(&self, attempt: i32) -> i64 {
        let base = self.base_ms.max(0);
        base.saturating_mul(1i64 << (attempt - 1).clamp(0, 30)).min(self.cap_ms.max(0))
    }

    /// "Equal jitter": somewhere in `[ceiling / 2, ceiling]`, chosen by `jitter` (any
    /// random number), so retries neither stampede nor run earlier than half the delay.
    pub fn jittered_ms(&self, attempt: i32, jitter: u64) -> i64 {
        let full = self.ceiling_ms(attempt);
        let half = full / 2;
        half + (jitter % (half as u64 + 1)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_the_cap() {
        let b = Backoff::new(100, 5_000);
        let got: Vec<i64> = (1..=8).map(|a| b.ceiling_ms(a)).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.ceiling_ms(1000), 5_000, "huge attempt numbers do not overflow");
        assert_eq!(Backoff::new(0, 5_000).ceiling_ms(3), 0);
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let b = Backoff::new(10_000, 3_600_000);
        for attempt in 1..8 {
            let full = b.ceiling_ms(attempt);
            assert_eq!(b.jittered_ms(attempt, 0), full / 2);
            assert_eq!(b.jittered_ms(attempt, (full / 2) as u64), full);
            for jitter in [1u64, 7, 12345, u64::MAX] {
                let d = b.jittered_ms(attempt, jitter);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} not in [{}, {full}]", full / 2);
            }
        }
    }
}
