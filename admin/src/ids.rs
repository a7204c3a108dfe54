//! Identifiers the admin hands out at run time: request ids for messages to workers and
//! ids of detection runs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct Ids {
    nonce: String,
    next_request: AtomicU64,
    next_run: AtomicI64,
}

impl Ids {
    /// `next_run` continues the store's run ids.
    pub fn new(next_run: i64) -> Ids {
        // Request ids differ across admin restarts, so a late reply to a request of a
        // previous run can never match a new one.
        Ids { nonce: crate::random::hex(4), next_request: AtomicU64::new(1), next_run: AtomicI64::new(next_run) }
    }

    /// `prefix-<nonce>-<n>`: unique within this run and across runs.
    pub fn request(&self, prefix: &str) -> String {
        format!("{prefix}-{}-{}", self.nonce, self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    pub fn run(&self) -> i64 {
        self.next_run.fetch_add(1, Ordering::Relaxed)
    }
}
