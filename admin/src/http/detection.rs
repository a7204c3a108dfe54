//! The synchronous answers of `detect`, `run` and `jobs/execute`, as SeaweedFS's admin
//! gives them: the request waits for the detection (and, for `run` and `execute`, for
//! the jobs) and answers what happened. Waiting is on the scheduler's report and the
//! event bus, bounded by a deadline; jobs still unfinished at the deadline keep running
//! (Plughost's queue is durable) and are named in the answer.

use std::{collections::HashSet, sync::Arc};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use proto::pb;
use serde_json::{Value, json};
use tokio::{sync::broadcast::error::RecvError, time::Instant};

use super::{ApiError, AppState, shapes};
use crate::{
    events::EventKind,
    job::{Job, is_final, parse_job_id},
    scheduler::{DetectOptions, DetectionMode, DetectionReport, DetectionWatch},
};

/// SeaweedFS's default for a whole `run` (detection and jobs), when the body gives none.
const DEFAULT_RUN_SECONDS: u64 = 5 * 60;

/// How long a request waits: for the detection, and (for `run`) for its jobs.
pub struct WaitLimit {
    pub detection: std::time::Duration,
    pub run: std::time::Duration,
}

/// The detection may be queued behind a running one, so it gets two of its timeouts (and
/// a margin for the worker's last message); a run's jobs get the body's timeout, else 5
/// minutes, as SeaweedFS's.
pub fn wait_limit(state: &AppState, job_type: &str, mode: DetectionMode, options: &DetectOptions) -> WaitLimit {
    let runtime = state.configs.runtime(job_type);
    let detection_secs = options.effective_timeout_seconds(mode, &runtime).max(1) as u64;
    let detection = std::time::Duration::from_secs(2 * detection_secs + 10);
    let run_secs = options
        .timeout_seconds
        .map(|s| u64::from(s.min(crate::scheduler::MAX_RUN_TIMEOUT_SECONDS)))
        .unwrap_or(DEFAULT_RUN_SECONDS);
    WaitLimit { detection, run: detection.max(std::time::Duration::from_secs(run_secs)) }
}

/// Why a request stopped waiting for its detection.
#[derive(Debug)]
pub enum WaitError {
    /// The detection was not run: it was held, or the admin is stopping.
    NotRun(String),
    /// The detection did not finish by the deadline; it goes on.
    TimedOut(String),
}

/// Waits for the detection that serves a request, until `deadline`. Shared by the JSON
/// API and the gRPC admin API.
pub async fn wait_report(
    job_type: &str,
    mut watch: DetectionWatch,
    deadline: Instant,
) -> Result<Arc<DetectionReport>, WaitError> {
    loop {
        if let Some(r) = watch.borrow_and_update().clone() {
            return Ok(r);
        }
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => {
                return Err(WaitError::NotRun(format!(
                    "the detection of {job_type:?} was not run: its detection was held, or the admin is stopping"
                )));
            }
            Err(_) => {
                return Err(WaitError::TimedOut(format!(
                    "the detection of {job_type:?} did not finish in time; it goes on, see GET job-types/{job_type}/runs"
                )));
            }
        }
    }
}

/// [`wait_report`], with its refusals as the JSON API answers them.
async fn report(job_type: &str, watch: DetectionWatch, deadline: Instant) -> Result<Arc<DetectionReport>, Response> {
    wait_report(job_type, watch, deadline).await.map_err(|e| match e {
        WaitError::NotRun(message) => ApiError::Conflict(message).into_response(),
        WaitError::TimedOut(message) => {
            let body = json!({ "job_type": job_type, "error": message });
            (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
        }
    })
}

/// A detection's proposals as the answers show them: highest priority first, then by
/// `proposal_id`.
pub fn sorted_proposals(r: &DetectionReport) -> Vec<pb::JobProposal> {
    let mut proposals = r.proposals.clone();
    proposals.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.proposal_id.cmp(&b.proposal_id)));
    proposals
}

/// SeaweedFS's detect answer: `job_type`, `request_id`, `detector_worker_id`,
/// `total_proposals`, `count`, `proposals` (proto JSON, highest priority first, then by
/// `proposal_id`), `activities`, and `error` with status 500 when the detection failed;
/// with Plughost's `run` (the run record) and `mode`.
pub async fn detect_answer(
    state: &AppState,
    job_type: &str,
    watch: DetectionWatch,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let r = match report(job_type, watch, deadline).await {
        Ok(r) => r,
        Err(response) => return Ok(response),
    };
    let proposals: Vec<Value> = sorted_proposals(&r)
        .iter()
        .map(|p| proto::json::to_value(p).map_err(|e| ApiError::Internal(e.to_string())))
        .collect::<Result<_, _>>()?;
    let mut body = json!({
        "job_type": job_type,
        "request_id": r.request_id,
        "detector_worker_id": r.worker_id,
        "total_proposals": r.run.proposals,
        "count": proposals.len(),
        "proposals": proposals,
        "activities": detector_activities(state, job_type, &r)
            .await?
            .iter()
            .map(|a| {
                let mut v = shapes::activity(a);
                v["request_id"] = Value::String(r.request_id.clone());
                v["worker_id"] = Value::String(r.worker_id.clone());
                v
            })
            .collect::<Vec<_>>(),
        "mode": r.mode,
        "run": shapes::run_record(&r.run),
    });
    Ok(finish(&r, &mut body))
}

/// 200, or 500 with `error` when the detection failed (as SeaweedFS answers).
fn finish(r: &DetectionReport, body: &mut Value) -> Response {
    if r.run.success {
        return (StatusCode::OK, Json(body.take())).into_response();
    }
    body["error"] = Value::String(r.run.message.clone());
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body.take())).into_response()
}

/// The detector's activities during this detection, oldest first.
pub async fn detector_activities(
    state: &AppState,
    job_type: &str,
    r: &DetectionReport,
) -> Result<Vec<crate::job::ActivityView>, ApiError> {
    state.store.settle().await;
    let mut list = state.store.activities(Some(job_type), None, None, 500)?;
    list.retain(|a| {
        a.job_id.is_empty()
            && a.source == "detector"
            && a.created_at >= r.run.started_at
            && (r.run.ended_at == 0 || a.created_at <= r.run.ended_at)
    });
    list.reverse();
    Ok(list)
}

/// How a run's jobs ended (or not) when its answer was given.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    pub succeeded: usize,
    pub failed: usize,
    pub canceled: usize,
    /// Still queued or running: they go on.
    pub unfinished: usize,
}

impl RunCounts {
    pub fn of(jobs: &[Job]) -> RunCounts {
        let count = |s: pb::JobState| jobs.iter().filter(|j| j.state == s).count();
        RunCounts {
            succeeded: count(pb::JobState::Succeeded),
            failed: count(pb::JobState::Failed),
            canceled: count(pb::JobState::Canceled),
            unfinished: jobs.iter().filter(|j| !is_final(j.state)).count(),
        }
    }

    pub fn executed(&self) -> usize {
        self.succeeded + self.failed + self.canceled
    }
}

/// The run's jobs (as created by its detection), once each is final or at `deadline`.
pub async fn run_jobs(state: &AppState, r: &DetectionReport, deadline: Instant) -> Vec<Job> {
    let seqs: Vec<i64> = r.created_jobs.iter().filter_map(|id| parse_job_id(id)).collect();
    wait_final(state, &seqs, deadline).await
}

/// SeaweedFS's run answer: `job_type`, `detected_count`, `ready_to_execute_count`,
/// `skipped_active_count`, `executed_count`, `success_count`, `error_count`,
/// `canceled_count`; with Plughost's `request_id`, `detector_worker_id`, `job_ids`,
/// `unfinished_count` (jobs still queued or running at the deadline: they go on),
/// `over_limit_count`, `invalid_count` and `run`.
pub async fn run_answer(
    state: &AppState,
    job_type: &str,
    watch: DetectionWatch,
    detection_deadline: Instant,
    run_deadline: Instant,
) -> Result<Response, ApiError> {
    let r = match report(job_type, watch, detection_deadline).await {
        Ok(r) => r,
        Err(response) => return Ok(response),
    };
    if !r.run.success {
        let body = json!({ "job_type": job_type, "error": r.run.message, "request_id": r.request_id });
        return Ok((StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response());
    }
    let counts = RunCounts::of(&run_jobs(state, &r, run_deadline).await);
    let body = json!({
        "job_type": job_type,
        "detected_count": r.run.proposals,
        "ready_to_execute_count": r.created_jobs.len(),
        "skipped_active_count": r.deduplicated,
        "executed_count": counts.executed(),
        "success_count": counts.succeeded,
        "error_count": counts.failed,
        "canceled_count": counts.canceled,
        "unfinished_count": counts.unfinished,
        "over_limit_count": r.over_limit,
        "invalid_count": r.invalid,
        "job_ids": r.created_jobs,
        "request_id": r.request_id,
        "detector_worker_id": r.worker_id,
        "run": shapes::run_record(&r.run),
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Waits until every job of `seqs` is final, or `deadline`, or the admin stops; returns
/// the jobs as they are then. Wakes on the jobs' own events, and looks at all of them
/// again when it missed events.
pub async fn wait_final(state: &AppState, seqs: &[i64], deadline: Instant) -> Vec<Job> {
    let mut sub = state.events.subscribe_after(None);
    let mut open: HashSet<i64> = HashSet::new();
    let mut look_again = true;
    loop {
        if look_again {
            open =
                seqs.iter().copied().filter(|s| state.dispatcher.job(*s).is_some_and(|j| !is_final(j.state))).collect();
            look_again = false;
        }
        if open.is_empty() {
            break;
        }
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, sub.rx.recv()) => next,
            _ = state.shutdown.cancelled() => break,
        };
        match next {
            Err(_) | Ok(Err(RecvError::Closed)) => break,
            Ok(Err(RecvError::Lagged(_))) => look_again = true,
            Ok(Ok(event)) => {
                if let EventKind::Job { job } = &event.kind
                    && is_final(job.0.state)
                {
                    open.remove(&job.0.seq);
                }
            }
        }
    }
    seqs.iter().filter_map(|s| state.dispatcher.job(*s)).collect()
}

/// SeaweedFS's default and longest wait for `jobs/execute`.
const DEFAULT_EXECUTE_SECONDS: u64 = 90;
const MAX_EXECUTE_SECONDS: u64 = 10 * 60;

/// The body of `POST jobs/execute`, with SeaweedFS's field names. `attempt` is accepted
/// and not used: the dispatcher numbers attempts.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// A `JobSpec` in proto JSON; `job_type` is required, `job_id`, `created_at` and
    /// `scheduled_at` are Plughost's to set.
    job: Option<Value>,
    /// A `ClusterContext` in proto JSON over the admin's for this job (the admin role).
    cluster_context: Option<Value>,
    #[serde(rename = "attempt")]
    _attempt: Option<i32>,
    timeout_seconds: Option<i64>,
}

/// `POST jobs/execute`: creates the job (as a hand-made job: the same checks, dedupe and
/// roles), waits for it to finish and answers SeaweedFS's `JobCompleted` in proto JSON
/// (`request_id`, `job_id`, `job_type`, `success`, `error_message`, `result`,
/// `activities`, `completed_at`) with Plughost's `state` and `attempt`; a failed or
/// canceled job answers 500 with `error` and that `completion`, as SeaweedFS does. A job
/// not finished within `timeout_seconds` (90 s; at most 600) is canceled and answered 504.
#[utoipa::path(post, path = "/api/plugin/jobs/execute", tag = "seaweedfs", request_body = ExecuteBody,
    responses(
        (status = 200, description = "the job succeeded", body = super::schemas::JobCompletedAnswer),
        (status = 400, description = "a bad body", body = super::openapi::ErrorBody),
        (status = 403, description = "the caller's role may not", body = super::openapi::ErrorBody),
        (status = 404, description = "no such job type", body = super::openapi::ErrorBody),
        (status = 409, description = "an active job has the same dedupe key (`job_id`)", body = super::openapi::ErrorBody),
        (status = 422, description = "an invalid job type or timeout", body = super::openapi::ErrorBody),
        (status = 500, description = "the job failed or was canceled", body = super::schemas::JobFailedAnswer),
        (status = 504, description = "the job did not finish in time and was canceled", body = super::schemas::JobTimedOutAnswer),
    ))]
pub async fn execute(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::commands::{Command, Outcome};
    let body: ExecuteBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    let job = body.job.filter(|j| !j.is_null()).ok_or_else(|| ApiError::BadRequest("job is required".into()))?;
    let spec: pb::JobSpec =
        proto::json::from_value(job).map_err(|e| ApiError::BadRequest(format!("invalid job payload: {e}")))?;
    if !crate::validator::is_valid_job_type(&spec.job_type) {
        return Err(ApiError::Unprocessable(format!(
            "job.job_type {:?} is not a valid job type (letters, digits, '_', '.', '-')",
            spec.job_type
        )));
    }
    let cluster_context = match body.cluster_context.filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(
            crate::cluster_context::from_json_value(v)
                .map_err(|e| ApiError::BadRequest(crate::cluster_context::ClusterContextError::Value(e).to_string()))?,
        ),
    };
    let secs = match body.timeout_seconds {
        None | Some(0) => DEFAULT_EXECUTE_SECONDS,
        Some(n) if n < 0 => {
            return Err(ApiError::Unprocessable(format!(
                "timeout_seconds is {n}; give a positive number, or 0 for 90"
            )));
        }
        Some(n) => (n as u64).min(MAX_EXECUTE_SECONDS),
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    let proposal = pb::JobProposal {
        proposal_id: spec.job_id.clone(),
        dedupe_key: spec.dedupe_key,
        job_type: spec.job_type.clone(),
        priority: spec.priority,
        summary: spec.summary,
        detail: spec.detail,
        parameters: spec.parameters,
        labels: spec.labels,
        not_before: None,
        expires_at: None,
    };
    let command = Command::EnqueueJob {
        job_type: spec.job_type.clone(),
        proposal,
        cluster_context: cluster_context.map(Box::new),
    };
    let Outcome::Job(view) = state.execute(&caller, command).await? else {
        return Err(ApiError::Internal("enqueue_job gave another outcome".into()));
    };
    let seq = parse_job_id(&view.job_id).ok_or_else(|| ApiError::Internal("a created job has no job id".into()))?;
    let job = wait_final(&state, &[seq], deadline).await.pop();
    let Some(job) = job.filter(|j| is_final(j.state)) else {
        let reason = format!("jobs/execute waited {secs} s");
        let _ = state.execute(&caller, Command::CancelJob { seq, reason }).await;
        let body = json!({
            "error": format!("job {} did not finish within {secs} s; it was canceled", view.job_id),
            "job_id": view.job_id,
        });
        return Ok((StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response());
    };
    let completed = pb::JobCompleted {
        request_id: String::from(&*job.request_id),
        job_id: job.id(),
        job_type: job.spec.job_type.clone(),
        success: job.state == pb::JobState::Succeeded,
        error_message: String::from(&*job.error),
        result: Some(pb::JobResult {
            output_values: job.result_values.to_map(),
            summary: String::from(&*job.result_summary),
        }),
        activities: Vec::new(),
        completed_at: Some(crate::job::ms_to_timestamp(job.completed_at)),
    };
    let mut completion = proto::json::to_value_with(&completed, true).map_err(|e| ApiError::Internal(e.to_string()))?;
    completion["state"] = Value::String(shapes::state(crate::job::state_name(job.state)));
    completion["attempt"] = json!(job.attempts_total);
    if completed.success {
        return Ok((StatusCode::OK, Json(completion)).into_response());
    }
    let error = if job.error.is_empty() {
        format!("job {} ended {}", job.id(), crate::job::state_name(job.state))
    } else {
        String::from(&*job.error)
    };
    Ok((StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": error, "completion": completion }))).into_response())
}
