//! Heartbeats: how often (the admin's `heartbeat_interval_seconds`) and what they say
//! (running work, slot use summed over job types). They ride on the work stream, so a
//! stalled stream also stops them and the admin notices.

use std::time::Duration;

use crate::{pb, shared::Shared};

/// Used when the admin's hello leaves the interval at 0.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The interval the admin asked for.
pub(crate) fn interval(hello: &pb::AdminHello) -> Duration {
    match u64::try_from(hello.heartbeat_interval_seconds) {
        Ok(secs) if secs > 0 => Duration::from_secs(secs),
        _ => DEFAULT_INTERVAL,
    }
}

/// A heartbeat describing the worker right now.
pub(crate) fn build(shared: &Shared) -> pb::WorkerHeartbeat {
    let slots = shared.slots.usage();
    let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    pb::WorkerHeartbeat {
        worker_id: shared.worker_id.clone(),
        running_work: shared.tracker.snapshot(),
        detection_slots_used: n(slots.detection_used),
        detection_slots_total: n(slots.detection_total),
        execution_slots_used: n(slots.execution_used),
        execution_slots_total: n(slots.execution_total),
        queued_jobs_by_type: Default::default(),
        metadata: shared.config.metadata.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_negative_intervals_fall_back_to_five_seconds() {
        let hello = |s| pb::AdminHello { heartbeat_interval_seconds: s, ..Default::default() };
        assert_eq!(interval(&hello(0)), DEFAULT_INTERVAL);
        assert_eq!(interval(&hello(-3)), DEFAULT_INTERVAL);
        assert_eq!(interval(&hello(2)), Duration::from_secs(2));
    }
}
