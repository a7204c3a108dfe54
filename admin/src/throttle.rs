//! Rate-limited warnings: a flood of refused connections or inputs costs a few log lines
//! per window, and the next line that gets through says how many were left out.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct Throttle {
    per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Throttle {
    /// At most `per_window` lines every `window`.
    pub const fn new(per_window: u32, window: Duration) -> Throttle {
        Throttle { per_window, window, state: Mutex::new(State { window_start: None, used: 0, suppressed: 0 }) }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were left out since the
    /// last one; `None` when this one is to be left out.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.window_start.is_none_or(|start| now.duration_since(start) >= self.window) {
            s.window_start = Some(now);
            s.used = 0;
        }
        if s.used < self.per_window {
            s.used += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_window_budget_are_left_out_and_counted_on_the_next_one() {
        let t = Throttle::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        assert_eq!(t.allow_at(t0), Some(0));
        assert_eq!(t.allow_at(t0), None);
        assert_eq!(t.allow_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow_at(t0 + Duration::from_secs(10)), Some(2));
    }
}
