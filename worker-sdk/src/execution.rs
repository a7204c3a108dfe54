//! The execution reply path: `ProgressSender` for the handler's progress and
//! activities, and the task that runs `execute` between the RUNNING update and
//! exactly one `job_completed` (none when the worker's own shutdown cut the job short:
//! the admin requeues it when the stream ends).

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::{
    JobHandler, pb,
    shared::{Body, Outbox, Shared},
    supervise::{Outcome, supervise},
    tracker::Work,
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

    async fn send(&self, message: &str, activities: Vec<pb::ActivityEvent>) {
        let (progress_percent, stage) = self.work.progress();
        let update = pb::JobProgressUpdate {
            request_id: self.work.request_id.clone(),
            job_id: self.work.job_id.clone(),
            job_type: self.work.job_type.clone(),
            state: pb::JobState::Running as i32,
            progress_percent,
            stage,
            message: message.to_string(),
            activities,
            updated_at: Some(proto::now()),
            ..Default::default()
        };
        let _ = self.outbox.send(Body::JobProgressUpdate(update)).await;
    }
}

/// Runs one execution to its `job_completed`. The slot is held until then, and the
/// work leaves the tracker only after the final message is queued. A job cut short by
/// the worker's shutdown gets no `job_completed`: it did not fail, and reporting it
/// would use up one of its attempts.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    work: Arc<Work>,
    request: pb::ExecuteJobRequest,
    _slot: OwnedSemaphorePermit,
) {
    let progress = ProgressSender { work: work.clone(), outbox: shared.outbox.clone() };
    progress.send("started", Vec::new()).await;
    let cancel = work.cancel.clone();
    // A `JobFailure` is a failure with a result: it passes through as a value.
    let outcome = supervise(&work, async move {
        match handler.execute(request, progress, cancel).await {
            Ok(result) => Ok(Ok(result)),
            Err(error) => error.downcast::<crate::JobFailure>().map(|failure| Err(*failure)),
        }
    })
    .await;
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
    let completed = pb::JobCompleted {
        request_id: work.request_id.clone(),
        job_id: work.job_id.clone(),
        job_type: work.job_type.clone(),
        success,
        error_message,
        result,
        completed_at: Some(proto::now()),
        ..Default::default()
    };
    let _ = shared.outbox.send(Body::JobCompleted(completed)).await;
    shared.tracker.remove(&work.request_id);
}
