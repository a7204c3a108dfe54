//! The schemas of the answers the API builds as JSON values rather than from one type:
//! SeaweedFS's shapes (`shapes.rs`, a typed view with fields renamed, added and left
//! out) and the synchronous detection answers (`detection.rs`). These types exist for
//! the OpenAPI document only; each names the fields the code writes, with their types,
//! and a field the code leaves out when unset is optional. `tests/tests/admin_openapi.rs`
//! checks real answers against them, so they cannot drift from the code unnoticed.
//! Times are RFC 3339 strings in UTC.

#![allow(dead_code)]

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::{registry::CapabilityView, scheduler::DetectionMode};

/// A job as SeaweedFS's `TrackedJob`, with Plughost's fields.
#[derive(Serialize, ToSchema)]
pub struct TrackedJob {
    pub job_id: String,
    pub job_type: String,
    pub dedupe_key: String,
    /// `job_state_pending`, `job_state_assigned`, `job_state_running`,
    /// `job_state_succeeded`, `job_state_failed` or `job_state_canceled`.
    pub state: String,
    /// `low`, `normal`, `high` or `critical`.
    pub priority: String,
    pub summary: String,
    pub detail: String,
    pub worker_id: String,
    pub request_id: String,
    /// 0 to 100 (SeaweedFS's name).
    pub progress: f64,
    pub progress_percent: f64,
    pub stage: String,
    pub message: String,
    pub error_message: String,
    pub result_summary: String,
    /// Attempts over the job's life.
    pub attempt: i32,
    /// Failed with its retries spent.
    pub dead_letter: bool,
    pub lane: String,
    pub labels: HashMap<String, String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub completed_at: Option<String>,
    pub not_before: Option<String>,
    pub expires_at: Option<String>,
    /// The dead letter this job replays.
    pub replay_of: Option<String>,
    /// One job only (`GET jobs/{id}`): its parameters, proto JSON `ConfigValue`s by name.
    pub parameters: Option<HashMap<String, Value>>,
    /// One job only: its result's output values, proto JSON `ConfigValue`s by name.
    pub result_output_values: Option<HashMap<String, Value>>,
}

/// An activity as SeaweedFS's `JobActivity`, with Plughost's `id` (the paging cursor).
#[derive(Serialize, ToSchema)]
pub struct JobActivity {
    pub id: i64,
    pub job_type: String,
    /// Empty for a detection's activity.
    pub job_id: String,
    /// `admin`, `detector` or `executor`.
    pub source: String,
    pub stage: String,
    pub message: String,
    pub occurred_at: Option<String>,
    pub created_at: Option<String>,
}

/// A run as SeaweedFS's `JobRunRecord`, with Plughost's fields.
#[derive(Serialize, ToSchema)]
pub struct JobRunRecord {
    pub id: i64,
    /// `id` as a string (SeaweedFS's name).
    pub run_id: String,
    pub job_type: String,
    /// `detection` or `execution`.
    pub kind: String,
    pub job_id: String,
    pub worker_id: String,
    /// `success` or `error`.
    pub outcome: String,
    pub success: bool,
    pub message: String,
    pub proposals: i64,
    pub jobs_created: i64,
    pub duration_ms: Option<i64>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub completed_at: Option<String>,
}

/// A worker's last heartbeat, as SeaweedFS's `Heartbeat`.
#[derive(Serialize, ToSchema)]
pub struct WorkerHeartbeat {
    pub worker_id: String,
    pub detection_slots_used: i32,
    pub detection_slots_total: i32,
    pub execution_slots_used: i32,
    pub execution_slots_total: i32,
    pub metadata: HashMap<String, String>,
}

/// A worker as SeaweedFS's `WorkerSession` (Go field names), with Plughost's snake_case
/// view beside them.
#[derive(Serialize, ToSchema)]
pub struct WorkerSession {
    #[serde(rename = "WorkerID")]
    pub worker_id_go: String,
    #[serde(rename = "WorkerInstance")]
    pub worker_instance: String,
    #[serde(rename = "Address")]
    pub address_go: String,
    #[serde(rename = "WorkerVersion")]
    pub worker_version_go: String,
    #[serde(rename = "ProtocolVersion")]
    pub protocol_version_go: String,
    #[serde(rename = "ConnectedAt")]
    pub connected_at_go: Option<String>,
    #[serde(rename = "LastSeenAt")]
    pub last_seen_at: Option<String>,
    /// By job type.
    #[serde(rename = "Capabilities")]
    pub capabilities_go: HashMap<String, CapabilityView>,
    #[serde(rename = "Heartbeat")]
    pub heartbeat: WorkerHeartbeat,
    pub worker_id: String,
    pub worker_instance_id: String,
    pub address: String,
    pub worker_version: String,
    pub protocol_version: String,
    pub job_types: Vec<String>,
    pub capabilities: Vec<CapabilityView>,
    pub connected_at: Option<String>,
    /// When it was last heard from.
    pub last_heartbeat: Option<String>,
    /// The interval its heartbeats keep; absent before the second one.
    pub heartbeat_interval_observed_ms: Option<i64>,
    /// Silence after which it is lost.
    pub lost_after_silence_ms: i64,
    pub draining: bool,
    pub detection_slots_used: i32,
    pub detection_slots_total: i32,
    pub execution_slots_used: i32,
    pub execution_slots_total: i32,
    /// Work items its last heartbeat listed.
    pub running_work: usize,
    pub metadata: HashMap<String, String>,
}

/// A job type's run history: SeaweedFS's executions, and Plughost's runs of both kinds.
#[derive(Serialize, ToSchema)]
pub struct JobRunHistory {
    pub job_type: String,
    /// Executions only (SeaweedFS's).
    pub successful_runs: Vec<JobRunRecord>,
    pub error_runs: Vec<JobRunRecord>,
    /// Detections and executions.
    pub successes: Vec<JobRunRecord>,
    pub errors: Vec<JobRunRecord>,
    pub last_updated_time: Option<String>,
}

/// One attempt at a job.
#[derive(Serialize, ToSchema)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub worker_id: String,
    pub request_id: String,
    /// `running`, `succeeded`, `failed`, `canceled`, `requeued` or `timed_out`.
    pub outcome: String,
    pub error_message: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

/// SeaweedFS's `JobDetail`, with Plughost's `spec`, `result`, `attempts` and `final`.
#[derive(Serialize, ToSchema)]
pub struct JobDetail {
    pub job: TrackedJob,
    /// Oldest first.
    pub activities: Vec<JobActivity>,
    pub last_updated: Option<String>,
    /// Proto JSON of the job's `JobSpec`.
    pub spec: Value,
    /// Proto JSON of the job's `JobResult`.
    pub result: Value,
    pub attempts: Vec<AttemptRecord>,
    /// The job is finished.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub run_record: Option<JobRunRecord>,
    /// Other jobs of its type, newest first; absent when there are none.
    pub related_jobs: Option<Vec<TrackedJob>>,
}

/// A job type's scheduler state as SeaweedFS's `SchedulerJobTypeState`, with Plughost's
/// view.
#[derive(Serialize, ToSchema)]
pub struct SchedulerJobTypeState {
    pub job_type: String,
    pub lane: String,
    pub enabled: bool,
    pub detection_in_flight: bool,
    pub detection_running: bool,
    /// The mode of the detection in flight.
    pub running_mode: Option<DetectionMode>,
    pub detector_worker_id: Option<String>,
    pub detector_available: bool,
    pub detectors: usize,
    pub executors: usize,
    pub executor_worker_count: usize,
    pub detection_interval_minutes: i32,
    pub detection_timeout_seconds: i32,
    pub execution_timeout_seconds: i32,
    pub job_type_max_runtime_seconds: i32,
    pub max_jobs_per_detection: i32,
    pub global_execution_concurrency: i32,
    pub per_worker_execution_concurrency: i32,
    pub retry_limit: i32,
    pub retry_backoff_seconds: i32,
    pub next_detection_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_run_started_at: Option<String>,
    pub last_run_completed_at: Option<String>,
    /// `success` or `error`, once the last run ended.
    pub last_run_status: Option<String>,
    pub last_run: Option<JobRunRecord>,
}

/// A job type's line in SeaweedFS's `SchedulerStatus`.
#[derive(Serialize, ToSchema)]
pub struct SchedulerJobTypeStatus {
    pub job_type: String,
    pub enabled: bool,
    pub detection_in_flight: bool,
    pub detection_interval_minutes: i32,
    pub next_detection_at: Option<String>,
    pub last_detected_at: Option<String>,
    pub last_detected_count: Option<i64>,
    pub last_detection_error: Option<String>,
}

/// What a lane waits for.
#[derive(Serialize, ToSchema)]
pub struct SchedulerWait {
    /// `detection_in_flight` or `next_detection_at`.
    pub reason: String,
    pub job_type: String,
    pub until: Option<String>,
}

/// An active job as SeaweedFS's `SchedulerJobStatus`.
#[derive(Serialize, ToSchema)]
pub struct SchedulerJobStatus {
    pub job_id: String,
    pub job_type: String,
    pub state: String,
    pub stage: Option<String>,
    pub worker_id: Option<String>,
    pub message: Option<String>,
    pub progress: f64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub duration_seconds: f64,
}

/// SeaweedFS's `SchedulerStatus`, for one lane or all.
#[derive(Serialize, ToSchema)]
pub struct SchedulerStatus {
    pub now: Option<String>,
    pub lane: Option<String>,
    pub scheduler_tick_seconds: i64,
    pub idle_sleep_seconds: i64,
    pub next_detection_at: Option<String>,
    pub current_job_type: Option<String>,
    /// `detecting` or `idle`.
    pub current_phase: String,
    pub waiting: Option<Vec<SchedulerWait>>,
    /// Longest-running first, at most 1,000.
    pub in_process_jobs: Option<Vec<SchedulerJobStatus>>,
    pub job_types: Option<Vec<SchedulerJobTypeStatus>>,
}

#[derive(Serialize, ToSchema)]
pub struct SchedulerStatusAnswer {
    pub enabled: bool,
    pub scheduler: SchedulerStatus,
}

/// One of SeaweedFS's scheduler lanes.
#[derive(Serialize, ToSchema)]
pub struct SchedulerLane {
    pub lane: String,
    pub idle_sleep_sec: i64,
    pub job_types: Vec<String>,
    pub status: SchedulerStatus,
}

/// An observation as SeaweedFS's, with Plughost's `received_at`.
#[derive(Serialize, ToSchema)]
pub struct Observation {
    pub job_type: String,
    pub worker_id: String,
    pub object_id: Vec<String>,
    pub object_kind: String,
    pub format: String,
    /// Plain values by name.
    pub attributes: HashMap<String, Value>,
    pub observed_at: Option<String>,
    pub received_at: Option<String>,
}

/// A detection's activity, with the detection's request and worker.
#[derive(Serialize, ToSchema)]
pub struct DetectionActivity {
    #[serde(flatten)]
    pub activity: JobActivity,
    pub request_id: String,
    pub worker_id: String,
}

/// SeaweedFS's detect answer, with Plughost's `mode` and `run`; `error` (with status 500)
/// when the detection failed.
#[derive(Serialize, ToSchema)]
pub struct DetectAnswer {
    pub job_type: String,
    pub request_id: String,
    pub detector_worker_id: String,
    pub total_proposals: i64,
    pub count: usize,
    /// Proto JSON `JobProposal`s, highest priority first.
    pub proposals: Vec<Value>,
    pub activities: Vec<DetectionActivity>,
    pub mode: DetectionMode,
    pub run: JobRunRecord,
    pub error: Option<String>,
}

/// SeaweedFS's run answer, with Plughost's fields.
#[derive(Serialize, ToSchema)]
pub struct RunAnswer {
    pub job_type: String,
    pub detected_count: i64,
    pub ready_to_execute_count: usize,
    pub skipped_active_count: usize,
    pub executed_count: usize,
    pub success_count: usize,
    pub error_count: usize,
    pub canceled_count: usize,
    /// Jobs still queued or running at the deadline: they go on.
    pub unfinished_count: usize,
    pub over_limit_count: usize,
    pub invalid_count: usize,
    pub job_ids: Vec<String>,
    pub request_id: String,
    pub detector_worker_id: String,
    pub run: JobRunRecord,
}

/// A failed detection of `run` (500), or one not finished in time (504).
#[derive(Serialize, ToSchema)]
pub struct DetectionFailed {
    pub job_type: String,
    pub error: String,
    pub request_id: Option<String>,
}

/// With `wait=false`: the detection was requested (202).
#[derive(Serialize, ToSchema)]
pub struct DetectionAccepted {
    pub job_type: String,
    pub mode: DetectionMode,
    /// `started`, or `queued behind the running detection`.
    pub status: String,
}

/// SeaweedFS's `JobCompleted` in proto JSON (every field present), with Plughost's
/// `state` and `attempt`.
#[derive(Serialize, ToSchema)]
pub struct JobCompletedAnswer {
    pub request_id: String,
    pub job_id: String,
    pub job_type: String,
    pub success: bool,
    pub error_message: String,
    /// Proto JSON `JobResult`.
    pub result: Option<Value>,
    pub activities: Vec<Value>,
    pub completed_at: Option<String>,
    pub state: String,
    pub attempt: i32,
}

/// `jobs/execute`'s job failed or was canceled (500).
#[derive(Serialize, ToSchema)]
pub struct JobFailedAnswer {
    pub error: String,
    pub completion: JobCompletedAnswer,
}

/// `jobs/execute`'s job did not finish in time and was canceled (504).
#[derive(Serialize, ToSchema)]
pub struct JobTimedOutAnswer {
    pub error: String,
    pub job_id: String,
}

/// Why a job waits (`GET jobs/{id}/explain`), from the dispatcher's own state. The
/// reason's details are added beside the fixed fields.
#[derive(Serialize, ToSchema)]
pub struct Explanation {
    pub job_id: String,
    pub job_type: String,
    pub state: String,
    /// Something other than the next dispatch pass holds the job back.
    pub blocked: bool,
    /// `not_before`, `retry_backoff`, `expired`, `dispatch_paused`, `type_held`,
    /// `no_executor`, `all_draining`, `concurrency_reached`, `slots_full`, `ready`,
    /// `saving`, `admin_stopping`, `in_flight` or `finished`.
    pub reason: String,
    /// The reason in the admin's words.
    pub message: String,
    /// Until when, for reasons that end at a time.
    pub until: Option<String>,
    /// What would still hold the job back once the first reason is gone.
    pub also: Vec<ExplanationAlso>,
    pub at: Option<String>,
    /// Details of `retry_backoff`.
    pub failed_attempt: Option<i32>,
    /// Details of `expired`.
    pub expired_at: Option<String>,
    /// Who paused or held dispatch (`dispatch_paused`, `type_held`), and since when.
    pub by: Option<String>,
    pub since: Option<String>,
    /// `all_draining`: how many executors drain.
    pub draining: Option<i64>,
    /// `concurrency_reached`.
    pub running: Option<i64>,
    pub max: Option<i64>,
    /// `slots_full`.
    pub used: Option<i64>,
    pub total: Option<i64>,
    pub executors: Option<i64>,
    /// `ready`: jobs ahead of this one.
    pub ahead: Option<i64>,
    /// `in_flight`.
    pub worker_id: Option<String>,
    pub stopping: Option<bool>,
    /// `finished`.
    pub dead_letter: Option<bool>,
}

/// One more reason of an [`Explanation`].
#[derive(Serialize, ToSchema)]
pub struct ExplanationAlso {
    pub reason: String,
    pub message: String,
}

/// The workers that left during the last day (`GET workers/departed`), newest first.
#[derive(Serialize, ToSchema)]
pub struct DepartedWorkers {
    pub departed: Vec<DepartedWorker>,
}

/// A worker that left.
#[derive(Serialize, ToSchema)]
pub struct DepartedWorker {
    pub worker_id: String,
    pub address: String,
    /// The address its connection came from.
    pub peer_address: String,
    pub job_types: Vec<String>,
    pub connected_at: Option<String>,
    pub last_seen: Option<String>,
    pub left_at: Option<String>,
    /// Why, as a code, its label and in the admin's words.
    pub because: String,
    pub because_label: String,
    pub reason: String,
}
