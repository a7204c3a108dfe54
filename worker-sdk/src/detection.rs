//! The detection reply path: `DetectionSender` for the handler's proposal batches and
//! activities, and the task that runs `detect` and sends exactly one
//! `detection_complete` afterwards.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::OwnedSemaphorePermit;

use crate::{
    Error, JobHandler, pb,
    shared::{Body, Shared, post},
    supervise::{Outcome, supervise},
    tracker::Work,
};

/// Hands a detection's proposals and activities to the admin.
#[derive(Clone)]
pub struct DetectionSender {
    work: Arc<Work>,
    outbox: crate::shared::Outbox,
    total: Arc<AtomicUsize>,
}

impl DetectionSender {
    /// Sends one batch of proposals (`detection_proposals` with `has_more: true`).
    /// Empty `job_type` fields are filled in. Fails with [`Error::Canceled`] once the
    /// detection is canceled, so `out.send(batch).await?` also stops a canceled loop.
    pub async fn send(&self, proposals: Vec<pb::JobProposal>) -> Result<(), Error> {
        if let Some(reason) = self.work.cancel_reason() {
            return Err(Error::Canceled { reason });
        }
        let proposals: Vec<_> = proposals
            .into_iter()
            .map(|mut p| {
                if p.job_type.is_empty() {
                    p.job_type = self.work.job_type.clone();
                }
                p
            })
            .collect();
        self.total.fetch_add(proposals.len(), Ordering::Relaxed);
        let batch = || {
            Body::DetectionProposals(pb::DetectionProposals {
                request_id: self.work.request_id.clone(),
                job_type: self.work.job_type.clone(),
                proposals,
                has_more: true,
            })
        };
        if post(&self.outbox, batch).await { Ok(()) } else { Err(Error::Stopped) }
    }

    /// Reports what the detector is doing (a `job_progress_update` with an empty job id
    /// carrying one DETECTOR activity). Lost silently once the worker has stopped.
    pub async fn activity(&self, message: impl Into<String>) {
        let message = message.into();
        let update = || {
            Body::JobProgressUpdate(pb::JobProgressUpdate {
                request_id: self.work.request_id.clone(),
                job_type: self.work.job_type.clone(),
                state: pb::JobState::Running as i32,
                activities: vec![pb::ActivityEvent {
                    source: pb::ActivitySource::Detector as i32,
                    message,
                    created_at: Some(proto::now()),
                    ..Default::default()
                }],
                updated_at: Some(proto::now()),
                ..Default::default()
            })
        };
        post(&self.outbox, update).await;
    }

    /// The detection's request id.
    pub fn request_id(&self) -> &str {
        &self.work.request_id
    }

    /// The job type being detected.
    pub fn job_type(&self) -> &str {
        &self.work.job_type
    }

    /// How many proposals were sent so far.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Runs one detection to its `detection_complete`. The slot is held until then, and
/// the work leaves the tracker only after the final message is queued.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    work: Arc<Work>,
    request: pb::RunDetectionRequest,
    _slot: OwnedSemaphorePermit,
) {
    let out = DetectionSender { work: work.clone(), outbox: shared.outbox.clone(), total: Arc::default() };
    let cancel = work.cancel.clone();
    let sender = out.clone();
    let outcome = supervise(&work, async move { handler.detect(request, sender, cancel).await }).await;
    let total = out.total();
    match &outcome {
        Outcome::Done(()) => {
            tracing::info!(request_id = %work.request_id, job_type = %work.job_type, total, "detection complete")
        }
        other => {
            tracing::warn!(request_id = %work.request_id, job_type = %work.job_type, error = %other.error_message(), "detection failed")
        }
    }
    let complete = || {
        Body::DetectionComplete(pb::DetectionComplete {
            request_id: work.request_id.clone(),
            job_type: work.job_type.clone(),
            success: matches!(outcome, Outcome::Done(())),
            error_message: outcome.error_message(),
            total_proposals: i32::try_from(total).unwrap_or(i32::MAX),
        })
    };
    post(&shared.outbox, complete).await;
    shared.tracker.remove(&work.request_id);
}
