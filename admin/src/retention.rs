//! Retention, once at start and then hourly: finished jobs, activities and runs older than
//! the retention period are deleted (and the job counts follow), and the audit trail is
//! bounded by age and count, archived first when an archive directory is set.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    audit::{AuditRetention, AuditTrail},
    clock::SharedClock,
    dispatcher::Dispatcher,
    store::{Op, Store},
};

pub struct Retention {
    pub store: Arc<Store>,
    pub dispatcher: Dispatcher,
    pub clock: SharedClock,
    /// History older than this is deleted; None keeps it.
    pub keep: Option<Duration>,
    pub audit: AuditTrail,
    /// The audit trail's bounds (always applied).
    pub audit_retention: AuditRetention,
}

impl Retention {
    /// Prunes once, waiting until the prune is committed; returns how many jobs went.
    pub async fn prune(&self) -> i64 {
        let (report, pruned) = tokio::sync::oneshot::channel();
        let Some(keep) = self.keep else { return 0 };
        let before_ms = self.clock.now_ms() - keep.as_millis() as i64;
        self.store.write(Op::Prune { before_ms, report: Some(report) });
        match pruned.await {
            Ok(pruned) => {
                self.dispatcher.forget_pruned(&pruned);
                pruned.values().sum()
            }
            Err(_) => 0,
        }
    }

    /// Prunes now and then hourly, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            self.prune().await;
            if let Err(e) = self.audit.prune(&self.audit_retention).await {
                tracing::error!(error = %e, "pruning the audit trail failed; it is tried again in an hour");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proto::pb::JobState;

    use super::*;
    use crate::{job::Job, test_support::Rig};

    fn finished(seq: i64, at: i64) -> Arc<Job> {
        let spec = crate::test_support::spec(&format!("k{seq}"), at);
        let mut job = Job::pending(seq, spec, at);
        job.state = JobState::Succeeded;
        job.completed_at = at;
        Arc::new(job)
    }

    #[tokio::test]
    async fn history_older_than_the_retention_period_by_the_clock_is_pruned_and_counts_follow() {
        let rig = Rig::new(|_| {});
        let day = 86_400_000;
        rig.c.store.write(Op::InsertJob(finished(1, Rig::T0)));
        rig.c.store.write(Op::InsertJob(finished(2, Rig::T0 + day)));
        rig.c.store.settle().await;
        let retention = Retention {
            store: rig.c.store.clone(),
            dispatcher: rig.c.dispatcher.clone(),
            clock: rig.clock.clone(),
            keep: Some(Duration::from_millis(2 * day as u64)),
            audit: rig.c.audit.clone(),
            audit_retention: crate::audit::AuditRetention { days: 0, max_events: 0, archive_dir: None },
        };
        assert_eq!(retention.prune().await, 0, "nothing is two days old yet");
        rig.clock.advance(2 * day + 1);
        assert_eq!(retention.prune().await, 1);
        assert!(rig.c.store.job(1).unwrap().is_none());
        assert!(rig.c.store.job(2).unwrap().is_some());
    }
}
