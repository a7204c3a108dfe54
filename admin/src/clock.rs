//! Time as the admin's components see it. Every component that compares timestamps (the
//! job state machine, placement, detection, liveness, retention) reads the time from a
//! `Clock` it was given, so tests drive them with a [`ManualClock`] instead of waiting.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// A source of "now", in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The shared handle components keep.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::job::now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(start_ms)))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The wall clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}
