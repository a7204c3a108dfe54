//! Liveness: declares workers lost after three silent heartbeat intervals, and publishes
//! a summary of slot use for the live pages.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    clock::SharedClock,
    events::{EventBus, EventKind},
    registry::Registry,
};

/// How often the slot summary is published at most.
const SUMMARY_EVERY_MS: i64 = 2000;

pub struct Liveness {
    registry: Arc<Registry>,
    events: Arc<EventBus>,
    clock: SharedClock,
    interval: Duration,
}

impl Liveness {
    pub fn new(registry: Arc<Registry>, events: Arc<EventBus>, clock: SharedClock, interval: Duration) -> Liveness {
        Liveness { registry, events, clock, interval: interval.max(Duration::from_secs(1)) }
    }

    /// Closes the streams of workers silent for more than three intervals; returns how
    /// many. Closing a stream ends its session, which requeues its work.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let limit_ms = 3 * self.interval.as_millis() as i64;
        let mut lost = 0;
        for s in self.registry.sessions() {
            let silent = now - s.last_seen();
            if silent > limit_ms {
                tracing::warn!(worker_id = %s.worker_id, silent_ms = silent, "worker lost: no heartbeat");
                s.close(&format!("no heartbeat for {} s", silent / 1000));
                lost += 1;
            }
        }
        lost
    }

    /// Publishes every worker's slot use added up.
    fn publish_summary(&self) {
        let sessions = self.registry.sessions();
        if sessions.is_empty() {
            return;
        }
        let (mut used, mut total) = (0i64, 0i64);
        for s in &sessions {
            let hb = s.heartbeat();
            used += i64::from(hb.execution_slots_used);
            total += i64::from(hb.execution_slots_total);
        }
        self.events.publish(EventKind::Heartbeat {
            workers: sessions.len(),
            execution_slots_used: used,
            execution_slots_total: total,
        });
    }

    /// Sweeps a few times per interval until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250).min(self.interval / 2));
        let mut last_summary = 0i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            self.sweep();
            let now = self.clock.now_ms();
            if now - last_summary >= SUMMARY_EVERY_MS {
                last_summary = now;
                self.publish_summary();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::{Clock, ManualClock},
        registry::WorkerSession,
    };
    use proto::pb;

    #[tokio::test]
    async fn a_worker_silent_for_three_intervals_is_declared_lost_and_not_before() {
        let clock = ManualClock::new(1_000_000);
        let registry = Arc::new(Registry::default());
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let hello = pb::WorkerHello { worker_id: "w1".into(), ..Default::default() };
        let session = Arc::new(WorkerSession::new(1, hello, tx, clock.now_ms()));
        registry.register(session.clone());
        let liveness =
            Liveness::new(registry.clone(), Arc::new(EventBus::new(16)), clock.clone(), Duration::from_secs(5));

        clock.advance(14_000);
        session.touch(clock.now_ms());
        clock.advance(15_000);
        assert_eq!(liveness.sweep(), 0, "exactly three intervals of silence is still alive");
        assert!(!session.kill.is_cancelled());
        clock.advance(1);
        assert_eq!(liveness.sweep(), 1);
        assert!(session.kill.is_cancelled());
        assert_eq!(session.close_reason().as_deref(), Some("no heartbeat for 15 s"));
    }
}
