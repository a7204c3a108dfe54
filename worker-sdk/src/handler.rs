//! The `JobHandler` trait: what a plugin author implements for each job type.

use crate::{CancellationToken, DetectionSender, ProgressSender, pb};

/// What a handler returns on failure. Any error type converts with `?`, including
/// `anyhow::Error` and strings (`Err("no such volume".into())`).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of a handler method.
pub type HandlerResult<T> = Result<T, HandlerError>;

/// A failed job that still has a result to report (its output values, such as logs a
/// run left behind): return `Err(JobFailure { .. }.into())` from
/// [`JobHandler::execute`], and the SDK sends `job_completed{success: false}` with
/// `error_message` and `result` both set. Any other error sends no result.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub message: String,
    pub result: pb::JobResult,
}

/// One job type: what it can do, how it is configured, how it finds work and how it
/// does it. Register one with [`Worker::handler`](crate::Worker::handler).
///
/// Implement it with `#[worker_sdk::async_trait]` on the impl block so the methods can
/// be `async fn`; the trait is object safe (`Arc<dyn JobHandler>`).
///
/// The SDK owns the protocol: it sends the acknowledgements, the final
/// `detection_complete` / `job_completed`, the RUNNING state and the heartbeats. A
/// handler only does the work and reports progress through the sender it is given.
/// RUNNING is sent once a job has run for `WorkerConfig::running_after` (100 ms by
/// default) or just before the handler's first report, so a job that finishes sooner
/// costs the admin and the worker no update at all.
///
/// **Cancellation:** `cancel` fires when the admin cancels this request or the worker
/// shuts down. Return soon after; whatever is returned then, the outcome is reported
/// as `canceled: <reason>`. A handler that has not returned 10 s after a cancel (at
/// once for a forced cancel) is dropped. Dropping the future cannot stop work it started
/// with `spawn_blocking` or on its own threads: such loops must check `cancel` themselves
/// (`cancel.is_cancelled()`), or the work goes on after the admin was told it stopped.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The job type, whether this worker detects and/or executes it, and how many of
    /// each it runs at once (see [`capability()`](crate::capability())).
    fn capability(&self) -> pb::JobTypeCapability;

    /// The config schema the admin renders as forms (see [`Descriptor`](crate::Descriptor)).
    fn descriptor(&self) -> pb::JobTypeDescriptor;

    /// Finds work: send proposals in batches through `out`, then return. The SDK sends
    /// `detection_complete` with the total afterwards (success, or the error).
    async fn detect(
        &self,
        request: pb::RunDetectionRequest,
        out: DetectionSender,
        cancel: CancellationToken,
    ) -> HandlerResult<()>;

    /// Does one job, reporting progress through `progress`. `Ok` becomes
    /// `job_completed{success: true, result}`, `Err` becomes `success: false` with the
    /// error's message (and a result, for a [`JobFailure`]).
    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult>;
}
