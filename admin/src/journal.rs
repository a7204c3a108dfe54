//! The activity timeline: what the admin and the workers did, one line each, persisted
//! and then published like every other change.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use proto::pb;

use crate::{
    clock::SharedClock,
    events::EventKind,
    job::{ActivityView, source_name},
    store::{Op, Store},
    text::clip,
};

/// A handle for recording activities; clones share the id sequence.
#[derive(Clone)]
pub struct Journal {
    store: Arc<Store>,
    clock: SharedClock,
    next_id: Arc<AtomicI64>,
}

impl Journal {
    /// `next_id` continues the store's activity ids.
    pub fn new(store: Arc<Store>, clock: SharedClock, next_id: i64) -> Journal {
        Journal { store, clock, next_id: Arc::new(AtomicI64::new(next_id)) }
    }

    /// Records an activity (persisted, then published).
    pub fn record(&self, job_type: &str, job_id: &str, source: pb::ActivitySource, stage: &str, message: &str) {
        let a = ActivityView {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            created_at: self.clock.now_ms(),
            job_type: job_type.to_string(),
            job_id: job_id.to_string(),
            source: source_name(source as i32),
            stage: stage.to_string(),
            message: message.to_string(),
        };
        let a = Box::new(a);
        self.store.submit(Some(Op::Activity(a.clone())), Some(EventKind::Activity { activity: a }));
    }

    /// Records the activities a worker attached to a progress update or completion.
    pub fn worker_activities(
        &self,
        job_type: &str,
        job_id: &str,
        list: &[pb::ActivityEvent],
        default_source: pb::ActivitySource,
    ) {
        for e in list {
            let source = pb::ActivitySource::try_from(e.source)
                .ok()
                .filter(|s| *s != pb::ActivitySource::Unspecified)
                .unwrap_or(default_source);
            self.record(job_type, job_id, source, &clip(&e.stage, 200), &clip(&e.message, 4096));
        }
    }
}
