//! The execution reply path: `ProgressSender` for the handler's progress and
//! activities, and the task that runs `execute` to exactly one `job_completed` (none
//! when the worker's own shutdown cut the job short: the admin requeues it when the
//! stream ends). RUNNING is reported once the job has run for the config's
//! `running_after`, or just before the handler's first report, whichever comes first; a
//! job that finishes sooner is reported by its `job_completed` alone.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::{
    JobHandler, pb,
    shared::{Body, Outbox, Shared, post},
    supervise::{Outcome, supervise},
    tracker::{Reports, Work},
};

/// Reports a running job's progress to the admin.
#[derive(Clone)]
pub struct ProgressSender {
    work: Arc<Work>,
    outbox: Outbox,
}

impl ProgressSender {
    /// Reports `percent` (0 to 100) done, in `stage`, with a human message. Heartbeats
    /// carry the latest percent and stage too. Lost silently once the worker stopped.
    pub async fn progress(&self, percent: f64, stage: &str, message: &str) {
        self.work.set_progress(percent, stage);
        self.send(message, Vec::new()).await;
    }

    /// Records an activity (an EXECUTOR activity event at the current stage).
    pub async fn activity(&self, message: impl Into<String>) {
        let (_, stage) = self.work.progress();
        let event = pb::ActivityEvent {
            source: pb::ActivitySource::Executor as i32,
            message: message.into(),
            stage,
            created_at: Some(proto::now()),
            ..Default::default()
        };
        self.send("", vec![event]).await;
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.work.job_id
    }

    /// The execute request's id.
    pub fn request_id(&self) -> &str {
        &self.work.request_id
    }

    /// The job type.
    pub fn job_type(&self) -> &str {
        &self.work.job_type
    }

    /// Sends an update, after the RUNNING one if that was not sent yet; nothing once the
    /// job's `job_completed` is queued.
    async fn send(&self, message: &str, activities: Vec<pb::ActivityEvent>) {
        let mut reports = self.work.reports.lock().await;
        if *reports == Reports::Ended {
            return;
        }
        running(&mut reports, &self.work, &self.outbox).await;
        send_update(&self.work, &self.outbox, message, activities).await;
    }
}

/// Sends `work`'s RUNNING update unless something was reported already.
async fn report_running(work: &Work, outbox: &Outbox) {
    running(&mut *work.reports.lock().await, work, outbox).await;
}

/// Sends the RUNNING update if nothing was reported yet (`reports` is the held state).
async fn running(reports: &mut Reports, work: &Work, outbox: &Outbox) {
    if *reports == Reports::Unreported {
        send_update(work, outbox, RUNNING_MESSAGE, Vec::new()).await;
        *reports = Reports::Running;
    }
}

/// A RUNNING progress update carrying the work's latest percent and stage.
async fn send_update(work: &Work, outbox: &Outbox, message: &str, activities: Vec<pb::ActivityEvent>) {
    let update = || {
        let (progress_percent, stage) = work.progress();
        Body::JobProgressUpdate(pb::JobProgressUpdate {
            request_id: work.request_id.clone(),
            job_id: work.job_id.clone(),
            job_type: work.job_type.clone(),
            state: pb::JobState::Running as i32,
            progress_percent,
            stage,
            message: message.to_string(),
            activities,
            updated_at: Some(proto::now()),
            ..Default::default()
        })
    };
    post(outbox, update).await;
}

/// Reports RUNNING for the executions that have run for the config's `running_after`
/// without reporting anything: one task per worker, waking every half of that while work
/// runs (so RUNNING comes between one and one and a half times it after the start), and
/// asleep while none does. Not a timer per job: most jobs are short, and a timer set and
/// dropped for each cost the benchmark's workers about 1 µs per job (an eighth).
pub(crate) async fn report_long_running(shared: Arc<Shared>) {
    let after = shared.config.running_after;
    if after.is_zero() {
        return;
    }
    let mut busy = shared.tracker.watch_busy();
    loop {
        if busy.wait_for(|busy| *busy).await.is_err() {
            return;
        }
        tokio::time::sleep(after / 2).await;
        let since = tokio::time::Instant::now().checked_sub(after).unwrap_or_else(tokio::time::Instant::now);
        for work in shared.tracker.unreported_since(since) {
            report_running(&work, &shared.outbox).await;
        }
    }
}

/// The message of the RUNNING update the SDK sends on the handler's behalf.
const RUNNING_MESSAGE: &str = "started";

/// Runs one execution to its `job_completed`. The slot is held until then, and the
/// work leaves the tracker only after the final message is queued. A job cut short by
/// the worker's shutdown gets no `job_completed`: it did not fail, and reporting it
/// would use up one of its attempts.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    work: Arc<Work>,
    request: Box<pb::ExecuteJobRequest>,
    _slot: OwnedSemaphorePermit,
) {
    if shared.config.running_after.is_zero() {
        report_running(&work, &shared.outbox).await;
    }
    let progress = ProgressSender { work: work.clone(), outbox: shared.outbox.clone() };
    let cancel = work.cancel.clone();
    // A `JobFailure` is a failure with a result: it passes through as a value.
    let outcome = supervise(&work, async move {
        match handler.execute(*request, progress, cancel).await {
            Ok(result) => Ok(Ok(result)),
            Err(error) => error.downcast::<crate::JobFailure>().map(|failure| Err(*failure)),
        }
    })
    .await;
    // Waits for a report being queued; nothing is reported after this.
    let mut reports = work.reports.lock().await;
    *reports = Reports::Ended;
    let mut error_message = outcome.error_message();
    let (success, result) = match outcome {
        Outcome::Done(Ok(result)) => {
            tracing::info!(request_id = %work.request_id, job_id = %work.job_id, "job succeeded");
            (true, Some(result))
        }
        Outcome::Done(Err(failure)) => {
            tracing::warn!(request_id = %work.request_id, job_id = %work.job_id, error = %failure.message, "job failed");
            error_message = failure.message;
            (false, Some(failure.result))
        }
        Outcome::CutShort(reason) => {
            // Not a failed attempt: no job_completed at all. The stream ends once the
            // worker has drained, and the admin requeues the job without using up an
            // attempt, as it does when a worker is lost.
            tracing::info!(request_id = %work.request_id, job_id = %work.job_id, %reason, "job cut short by the shutdown; left for the admin to requeue");
            shared.tracker.remove(&work.request_id);
            return;
        }
        _ => {
            tracing::warn!(request_id = %work.request_id, job_id = %work.job_id, error = %error_message, "job failed");
            (false, None)
        }
    };
    let completed = || {
        Body::JobCompleted(pb::JobCompleted {
            request_id: work.request_id.clone(),
            job_id: work.job_id.clone(),
            job_type: work.job_type.clone(),
            success,
            error_message,
            result,
            completed_at: Some(proto::now()),
            ..Default::default()
        })
    };
    post(&shared.outbox, completed).await;
    drop(reports);
    shared.tracker.remove(&work.request_id);
}
