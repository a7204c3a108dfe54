//! Per-job-type concurrency slots: one semaphore for detections and one for executions,
//! sized from the handler's capability. A request that finds no free slot is answered
//! "at capacity" at once instead of queueing, so the admin can send it elsewhere.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pb;

/// Which slot pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SlotKind {
    Detection,
    Execution,
}

#[derive(Debug)]
struct Pool {
    semaphore: Arc<Semaphore>,
    total: usize,
}

impl Pool {
    fn new(enabled: bool, max: i32) -> Self {
        // 0 (or a negative number) means "one at a time"; a disabled pool has no slots.
        let total = if enabled { usize::try_from(max).unwrap_or(0).max(1) } else { 0 };
        Pool { semaphore: Arc::new(Semaphore::new(total)), total }
    }

    fn used(&self) -> usize {
        self.total - self.semaphore.available_permits().min(self.total)
    }
}

/// All slot pools of one worker.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    pools: HashMap<(String, SlotKind), Pool>,
}

/// Used and total slots, summed over job types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SlotUse {
    pub(crate) detection_used: usize,
    pub(crate) detection_total: usize,
    pub(crate) execution_used: usize,
    pub(crate) execution_total: usize,
}

impl Slots {
    pub(crate) fn new<'a>(capabilities: impl IntoIterator<Item = &'a pb::JobTypeCapability>) -> Self {
        let mut pools = HashMap::new();
        for c in capabilities {
            pools.insert(
                (c.job_type.clone(), SlotKind::Detection),
                Pool::new(c.can_detect, c.max_detection_concurrency),
            );
            pools.insert(
                (c.job_type.clone(), SlotKind::Execution),
                Pool::new(c.can_execute, c.max_execution_concurrency),
            );
        }
        Slots { pools }
    }

    /// A slot if one is free now; held until the permit is dropped.
    pub(crate) fn try_acquire(&self, job_type: &str, kind: SlotKind) -> Option<OwnedSemaphorePermit> {
        let pool = self.pools.get(&(job_type.to_string(), kind))?;
        pool.semaphore.clone().try_acquire_owned().ok()
    }

    pub(crate) fn usage(&self) -> SlotUse {
        let mut u = SlotUse::default();
        for ((_, kind), pool) in &self.pools {
            if *kind == SlotKind::Detection {
                u.detection_used += pool.used();
                u.detection_total += pool.total;
            } else {
                u.execution_used += pool.used();
                u.execution_total += pool.total;
            }
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CapabilityExt, capability};

    #[test]
    fn slots_follow_the_capability_and_zero_means_one() {
        let caps = [capability("a", "A").detect(0).execute(2), capability("b", "B").execute(1)];
        let slots = Slots::new(&caps);
        assert_eq!(
            slots.usage(),
            SlotUse { detection_used: 0, detection_total: 1, execution_used: 0, execution_total: 3 }
        );
        let first = slots.try_acquire("a", SlotKind::Execution).unwrap();
        let _second = slots.try_acquire("a", SlotKind::Execution).unwrap();
        assert!(slots.try_acquire("a", SlotKind::Execution).is_none());
        assert!(slots.try_acquire("b", SlotKind::Detection).is_none(), "b does not detect");
        assert!(slots.try_acquire("c", SlotKind::Execution).is_none(), "unknown job type");
        assert_eq!(slots.usage().execution_used, 2);
        drop(first);
        assert_eq!(slots.usage().execution_used, 1);
    }
}
