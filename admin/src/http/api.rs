//! The JSON API under `/api/plugin/`. Paths follow SeaweedFS's admin where they exist so
//! existing scripts keep working; protobuf messages travel as proto JSON with snake_case
//! names. Sensitive config values never leave through here.

use std::collections::HashMap;

use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use proto::pb::{self, JobState};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiQuery, AppState, auth::Caller, shapes};
use crate::{
    auth::Role,
    commands::{Actor, Command, Outcome},
    job::{JobView, is_final, parse_job_id, parse_state, state_name},
    scheduler::{DetectOptions, DetectionMode},
    store::JobQuery,
    validator::{is_valid_job_type, redact},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(status))
        .route("/workers", get(workers))
        .route("/workers/departed", get(departed_workers))
        .route("/workers/{id}/drain", post(drain))
        .route("/job-types", get(job_types))
        .route("/job-types/{t}/descriptor", get(descriptor))
        .route("/job-types/{t}/schema", post(refresh_schema))
        .route("/job-types/{t}/config", get(get_config).put(put_config))
        .route("/job-types/{t}/runs", get(runs))
        .route("/job-types/{t}/detect", post(detect))
        .route("/job-types/{t}/run", post(run))
        .route("/job-types/{t}/detection-results", get(detection_results))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/detail", get(job_detail))
        .route("/jobs/{id}/explain", get(explain))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/expire", post(expire))
        .route("/activities", get(activities))
        .route("/scheduler-states", get(scheduler_states))
        .route("/dispatch", post(dispatch_pause))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name}", axum::routing::delete(revoke_token))
}

fn proto_json<M: prost::Message + proto::ProtoName>(m: &M) -> Result<Value, ApiError> {
    proto::json::to_value_with(m, true).map_err(|e| ApiError::Internal(e.to_string()))
}

pub(crate) fn job_type_param(t: &str) -> Result<(), ApiError> {
    if is_valid_job_type(t) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("job type {t:?} is not a valid name (letters, digits, '_', '.', '-')")))
    }
}

pub(crate) fn job_seq(id: &str) -> Result<i64, ApiError> {
    parse_job_id(id).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))
}

/// The admin's state. Without credentials it shows only what a worker needs to dial in.
async fn status(State(state): State<AppState>, caller: Option<Extension<Caller>>) -> Json<Value> {
    if caller.is_none() {
        return Json(json!({
            "enabled": true,
            "worker_grpc_port": state.grpc_port(),
            "protocol_version": proto::PROTOCOL_VERSION,
            "authentication_required": true,
        }));
    }
    let mut counts: HashMap<&'static str, i64> = HashMap::new();
    for ((_, s), n) in state.dispatcher.counts() {
        *counts.entry(state_name(s)).or_insert(0) += n;
    }
    let active = state.dispatcher.active_len();
    Json(json!({
        "enabled": true,
        "worker_grpc_port": state.grpc_port(),
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("PLUGHOST_GIT_COMMIT").unwrap_or("unknown"),
        "protocol_version": proto::PROTOCOL_VERSION,
        "configured": true,
        "base_dir": state.config.data_dir.join("plugin").display().to_string(),
        "worker_count": state.registry.len(),
        "ready": state.is_ready(),
        "dispatch_paused": state.dispatcher.is_paused(),
        "schedules_paused": state.holds.schedules_paused(),
        "holds": state.holds.list(),
        "dead_letters": state.store.dead_letters().map(|d| d.iter().map(|(_, n)| n).sum::<i64>()).unwrap_or(0),
        "workers": state.registry.len(),
        "job_types": state.configs.job_types().len(),
        "active_jobs": active,
        "jobs_by_state": counts,
        "last_event_id": state.events.last_id(),
        "cluster_context": proto::json::to_value_with(state.cluster_context.current().as_ref(), true).unwrap_or(Value::Null),
        "cluster_context_file": state.cluster_context.file().map(|p| p.display().to_string()),
        "cluster_context_error": state.cluster_context.last_error(),
    }))
}

#[derive(Deserialize, Default)]
struct LaneQuery {
    lane: Option<String>,
}

pub(crate) fn lane_param(lane: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    shapes::parse_lane(lane).map_err(ApiError::BadRequest)
}

/// A bare array of workers, as SeaweedFS answers; `lane` keeps the workers that offer a
/// job type of that lane.
async fn workers(State(state): State<AppState>, ApiQuery(q): ApiQuery<LaneQuery>) -> Result<Json<Value>, ApiError> {
    let lane = lane_param(q.lane.as_deref())?;
    let list: Vec<Value> = state
        .registry
        .views()
        .iter()
        .filter(|w| lane.is_none() || w.job_types.iter().any(|t| shapes::in_lane(t, lane)))
        .map(shapes::worker)
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The workers that left during the last day, newest first: `{departed: [...]}`, each
/// with `worker_id`, `address`, `peer_address`, `job_types`, `connected_at`, `last_seen`,
/// `left_at` (RFC 3339), `because` (a code) and `reason` (the admin's words).
async fn departed_workers(State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .registry
        .departures()
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
            for (key, ms) in [("connected_at", d.connected_at), ("last_seen", d.last_seen), ("left_at", d.left_at)] {
                v[key] = shapes::time(ms).map(Value::String).unwrap_or(Value::Null);
            }
            v["because_label"] = Value::String(d.because.label().to_string());
            v
        })
        .collect();
    Json(json!({ "departed": list }))
}

#[derive(Deserialize)]
struct DrainQuery {
    draining: Option<bool>,
}

async fn drain(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DrainQuery>,
) -> Result<Json<Value>, ApiError> {
    let draining = q.draining.unwrap_or(true);
    state.execute(&caller, Command::SetDraining { worker_id: id.clone(), draining }).await?;
    Ok(Json(json!({ "worker_id": id, "draining": draining })))
}

/// One job type as the API lists it: SeaweedFS's `JobTypeInfo` (`job_type`,
/// `display_name`, `weight`) with Plughost's counts and flags.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct JobTypeSummary {
    pub job_type: String,
    pub display_name: String,
    pub weight: i32,
    pub lane: &'static str,
    pub description: String,
    pub descriptor_version: u32,
    pub has_descriptor: bool,
    pub enabled: bool,
    pub detectors: usize,
    pub executors: usize,
    pub pending: i64,
    pub assigned: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub canceled: i64,
}

/// The job types with a descriptor or offered by a worker, by name; `lane` keeps one
/// lane's. Shared by the JSON API and the gRPC admin API.
pub(crate) fn job_type_summaries(state: &AppState, lane: Option<&str>) -> Vec<JobTypeSummary> {
    let offered = state.registry.job_types();
    let mut names = state.configs.job_types();
    for t in offered.keys() {
        if !names.contains(t) {
            names.push(t.clone());
        }
    }
    names.sort();
    names.retain(|t| shapes::in_lane(t, lane));
    let counts = state.dispatcher.counts();
    let count_of = |name: &str, s: JobState| {
        counts.iter().find(|((t, st), _)| t == name && *st == s).map(|(_, n)| *n).unwrap_or(0)
    };
    names
        .iter()
        .map(|name| {
            let d = state.configs.descriptor(name);
            let cap = offered.get(name);
            JobTypeSummary {
                job_type: name.clone(),
                display_name: d
                    .as_ref()
                    .map(|d| d.display_name.clone())
                    .filter(|s| !s.is_empty())
                    .or_else(|| cap.map(|c| c.display_name.clone()).filter(|s| !s.is_empty()))
                    .unwrap_or_else(|| name.clone()),
                weight: cap.map(|c| c.weight).unwrap_or(0),
                lane: shapes::lane_of(name),
                description: d.as_ref().map(|d| d.description.clone()).unwrap_or_default(),
                descriptor_version: d.as_ref().map(|d| d.descriptor_version).unwrap_or(0),
                has_descriptor: d.is_some(),
                enabled: state.configs.runtime(name).enabled,
                detectors: state.registry.detectors(name).len(),
                executors: state.registry.executors(name).len(),
                pending: count_of(name, JobState::Pending),
                assigned: count_of(name, JobState::Assigned),
                running: count_of(name, JobState::Running),
                succeeded: count_of(name, JobState::Succeeded),
                failed: count_of(name, JobState::Failed),
                canceled: count_of(name, JobState::Canceled),
            }
        })
        .collect()
}

/// A bare array of [`JobTypeSummary`]; `lane` keeps one lane's job types.
async fn job_types(State(state): State<AppState>, ApiQuery(q): ApiQuery<LaneQuery>) -> Result<Json<Value>, ApiError> {
    let lane = lane_param(q.lane.as_deref())?;
    let list = job_type_summaries(&state, lane);
    Ok(Json(serde_json::to_value(list).map_err(|e| ApiError::Internal(e.to_string()))?))
}

async fn descriptor(State(state): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    let d =
        state.configs.descriptor(&t).ok_or_else(|| ApiError::NotFound(format!("no descriptor for job type {t:?}")))?;
    Ok(Json(proto_json(d.as_ref())?))
}

#[derive(Deserialize)]
struct SchemaQuery {
    force_refresh: Option<bool>,
}

async fn refresh_schema(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    ApiQuery(q): ApiQuery<SchemaQuery>,
) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    let command = Command::RefreshSchema { job_type: t, force: q.force_refresh.unwrap_or(false) };
    let Outcome::SchemaRefreshed(d) = state.execute(&caller, command).await? else {
        return Err(ApiError::Internal("refresh_schema gave another outcome".into()));
    };
    Ok(Json(proto_json(d.as_ref())?))
}

/// A job type's descriptor and its saved config with the sensitive values left out.
pub(crate) fn redacted_config(
    state: &AppState,
    t: &str,
) -> Result<(std::sync::Arc<pb::JobTypeDescriptor>, pb::PersistedJobTypeConfig), ApiError> {
    let d =
        state.configs.descriptor(t).ok_or_else(|| ApiError::NotFound(format!("no descriptor for job type {t:?}")))?;
    let c = state.configs.config(t).ok_or_else(|| ApiError::NotFound(format!("no config for job type {t:?}")))?;
    let shown = redact(&d, &c);
    Ok((d, shown))
}

async fn get_config(State(state): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    Ok(Json(proto_json(&redacted_config(&state, &t)?.1)?))
}

/// Which top-level parts of a config a save replaces; the others keep their saved values.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConfigParts {
    pub admin_config_values: bool,
    pub worker_config_values: bool,
    pub admin_runtime: bool,
}

/// Saves the `parts` of `incoming` over job type `t`'s saved config through the command
/// layer (sensitive fields left out of a value map keep their saved values; the config
/// store validates the result) and answers the saved config, redacted. The one path of a
/// config save for the JSON API and the gRPC admin API, so both validate alike and
/// refuse with the same messages.
pub(crate) async fn save_config_parts(
    state: &AppState,
    caller: &Caller,
    t: &str,
    incoming: pb::PersistedJobTypeConfig,
    parts: ConfigParts,
) -> Result<(std::sync::Arc<pb::JobTypeDescriptor>, pb::PersistedJobTypeConfig), ApiError> {
    job_type_param(t)?;
    let current = state.configs.config(t).ok_or_else(|| ApiError::NotFound(format!("no config for job type {t:?}")))?;
    if !incoming.job_type.is_empty() && incoming.job_type != t {
        return Err(ApiError::BadRequest(format!("body is for job type {:?}, not {t:?}", incoming.job_type)));
    }
    let mut next = (*current).clone();
    if parts.admin_config_values {
        next.admin_config_values = incoming.admin_config_values;
    }
    if parts.worker_config_values {
        next.worker_config_values = incoming.worker_config_values;
    }
    if parts.admin_runtime {
        next.admin_runtime = incoming.admin_runtime;
    }
    next.job_type = t.to_string();
    state.execute(caller, Command::SaveConfig { config: next }).await?;
    redacted_config(state, t)
}

/// Replaces the parts of the config present in the body; absent top-level parts keep
/// their saved values, and so do sensitive fields left out of the value maps.
async fn put_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    if state.configs.config(&t).is_none() {
        return Err(ApiError::NotFound(format!("no config for job type {t:?}")));
    }
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))?;
    let Value::Object(fields) = &value else {
        return Err(ApiError::BadRequest("body must be a JSON object (a PersistedJobTypeConfig)".into()));
    };
    let has = |k: &str, camel: &str| fields.contains_key(k) || fields.contains_key(camel);
    let parts = ConfigParts {
        admin_config_values: has("admin_config_values", "adminConfigValues"),
        worker_config_values: has("worker_config_values", "workerConfigValues"),
        admin_runtime: has("admin_runtime", "adminRuntime"),
    };
    let incoming: pb::PersistedJobTypeConfig =
        proto::json::from_value(value.clone()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (_, saved) = save_config_parts(&state, &caller, &t, incoming, parts).await?;
    Ok(Json(proto_json(&saved)?))
}

async fn runs(State(state): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    state.store.settle().await;
    let (successes, errors) = state.store.runs(&t, 10)?;
    // SeaweedFS's run history is of job executions; Plughost's `successes` and `errors`
    // also hold detections.
    let executions = |runs: &[crate::job::RunView]| -> Vec<Value> {
        runs.iter().filter(|r| r.kind == "execution").map(shapes::run_record).collect()
    };
    let last = successes.iter().chain(errors.iter()).map(|r| r.ended_at.max(r.started_at)).max().unwrap_or(0);
    let mut answer = json!({
        "job_type": t,
        "successful_runs": executions(&successes),
        "error_runs": executions(&errors),
        "successes": successes.iter().map(shapes::run_record).collect::<Vec<_>>(),
        "errors": errors.iter().map(shapes::run_record).collect::<Vec<_>>(),
    });
    if let Some(at) = shapes::time(last) {
        answer["last_updated_time"] = Value::String(at);
    }
    Ok(Json(answer))
}

#[derive(Deserialize, Default)]
struct WaitQuery {
    /// `false`: answer 202 once the detection is requested instead of waiting for it (a
    /// Plughost extension; SeaweedFS always waits).
    wait: Option<bool>,
}

async fn detect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    start_detection(state, caller, t, DetectionMode::Preview, q, body).await
}

async fn run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    start_detection(state, caller, t, DetectionMode::Run, q, body).await
}

/// The optional body of `detect` and `run`, with the field names of SeaweedFS's admin
/// (`weed/admin/dash/plugin_api.go`). Unknown fields are refused: a misspelt option is an
/// error, not a silent default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectBody {
    /// A `ClusterContext` in proto JSON, over the admin's for this detection.
    cluster_context: Option<Value>,
    /// 0: the job type's own limit.
    max_results: Option<i64>,
    /// 0: the job type's own detection timeout.
    timeout_seconds: Option<i64>,
    /// SeaweedFS's `run` takes the first execution's attempt number; Plughost's
    /// dispatcher counts attempts itself, so it is accepted and not used.
    #[serde(rename = "attempt")]
    _attempt: Option<i32>,
}

/// Reads a detect or run body into the command's options. No body (or `null`) is no
/// options, as the page buttons send.
fn detect_options(body: &[u8]) -> Result<DetectOptions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DetectOptions::default());
    }
    let body: Option<DetectBody> =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    let Some(body) = body else { return Ok(DetectOptions::default()) };
    let cluster_context = match body.cluster_context.filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(
            crate::cluster_context::from_json_value(v)
                .map_err(|e| ApiError::BadRequest(crate::cluster_context::ClusterContextError::Value(e).to_string()))?,
        ),
    };
    Ok(DetectOptions {
        cluster_context,
        max_results: optional_count("max_results", body.max_results)?,
        timeout_seconds: optional_count("timeout_seconds", body.timeout_seconds)?,
    })
}

/// A count where 0 (or absent) means "the job type's own"; negative is refused, and one
/// past `u32` is as good as `u32::MAX` (the scheduler bounds both anyway).
fn optional_count(name: &str, value: Option<i64>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(0) => Ok(None),
        Some(n) if n < 0 => {
            Err(ApiError::Unprocessable(format!("{name} is {n}; give a positive number, or 0 for the job type's own")))
        }
        Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
    }
}

async fn start_detection(
    state: AppState,
    caller: Caller,
    t: String,
    mode: DetectionMode,
    q: WaitQuery,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    job_type_param(&t)?;
    let options = detect_options(&body)?;
    let started = tokio::time::Instant::now();
    let limit = super::detection::wait_limit(&state, &t, mode, &options);
    let command = Command::Detect { job_type: t.clone(), mode, options };
    let Outcome::DetectionRequested { queued, report } = state.execute(&caller, command).await? else {
        return Err(ApiError::Internal("detect gave another outcome".into()));
    };
    if q.wait == Some(false) {
        let status = if queued { "queued behind the running detection" } else { "started" };
        return Ok(
            (StatusCode::ACCEPTED, Json(json!({ "job_type": t, "mode": mode, "status": status }))).into_response()
        );
    }
    match mode {
        DetectionMode::Run => {
            super::detection::run_answer(&state, &t, report, started + limit.detection, started + limit.run).await
        }
        _ => super::detection::detect_answer(&state, &t, report, started + limit.detection).await,
    }
}

async fn detection_results(State(state): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    Ok(Json(json!({ "job_type": t, "proposals": state.scheduler.latest_proposals(&t) })))
}

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    pub job_type: Option<String>,
    /// SeaweedFS's scheduler lane (see `shapes::LANES`).
    pub lane: Option<String>,
    pub state: Option<String>,
    pub text: Option<String>,
    pub dead_letter: Option<bool>,
    pub before: Option<String>,
    pub limit: Option<usize>,
}

/// Lists jobs newest first, `limit` at a time; pass `before=<last job_id>` for the next page.
pub async fn list_jobs(state: &AppState, q: &JobsQuery) -> Result<(Vec<JobView>, Option<String>), ApiError> {
    if let Some(t) = q.job_type.as_deref().filter(|t| !t.is_empty()) {
        job_type_param(t)?;
    }
    let job_state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(parse_state(s).ok_or_else(|| ApiError::BadRequest(format!("unknown job state {s:?}")))?),
    };
    let before_seq = match q.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(b) => {
            Some(parse_job_id(b).ok_or_else(|| ApiError::BadRequest(format!("before must be a job id, not {b:?}")))?)
        }
    };
    let lane = lane_param(q.lane.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let query = JobQuery {
        job_type: q.job_type.clone().filter(|t| !t.is_empty()),
        state: job_state,
        dead_letter: q.dead_letter,
        text: q.text.clone().filter(|t| !t.is_empty()),
        before_seq,
        limit,
        ..Default::default()
    };
    // Read what was changed before this request (a job created a moment ago is listed).
    state.store.settle().await;
    // Jobs still in memory are listed in their current state, so a list never shows a job
    // behind its detail page.
    let mut jobs = state.dispatcher.list_jobs(&query)?;
    let next = (jobs.len() == limit).then(|| jobs.last().map(|j| j.job_id.clone())).flatten();
    if lane.is_some() {
        jobs.retain(|j| shapes::in_lane(&j.job_type, lane));
    }
    Ok((jobs, next))
}

/// The header that carries the next page's `before` (SeaweedFS answers a bare array, so
/// the cursor cannot go in the body).
pub const NEXT_BEFORE_HEADER: &str = "x-plughost-next-before";

/// A bare array of jobs, newest first; the next page's cursor is in `X-Plughost-Next-Before`.
async fn jobs(State(state): State<AppState>, ApiQuery(q): ApiQuery<JobsQuery>) -> Result<impl IntoResponse, ApiError> {
    let (jobs, next) = list_jobs(&state, &q).await?;
    let body = Json(Value::Array(jobs.iter().map(shapes::job).collect()));
    let mut headers = axum::http::HeaderMap::new();
    if let Some(next) = next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
        headers.insert(NEXT_BEFORE_HEADER, next);
    }
    Ok((headers, body))
}

/// One job with its parameters and result values.
fn full_job(job: &crate::job::Job) -> Result<Value, ApiError> {
    let spec = job.to_spec();
    let result = pb::JobResult { output_values: job.result_values.clone(), summary: job.result_summary.clone() };
    let parameters = proto_json(&spec)?.get("parameters").cloned().unwrap_or(Value::Null);
    let outputs = proto_json(&result)?.get("output_values").cloned().unwrap_or(Value::Null);
    Ok(shapes::job_with_values(&job.view(), parameters, outputs))
}

async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let seq = job_seq(&id)?;
    let job = state.dispatcher.job(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    Ok(Json(full_job(&job)?))
}

#[derive(Deserialize, Default)]
struct DetailQuery {
    activity_limit: Option<usize>,
    related_limit: Option<usize>,
}

/// Everything a job's detail shows, read once for the JSON API and the gRPC admin API.
pub(crate) struct JobDetailParts {
    pub job: crate::job::Job,
    pub attempts: Vec<crate::job::AttemptView>,
    /// Oldest first.
    pub activities: Vec<crate::job::ActivityView>,
    /// The execution's record, when the job type's recent run history has it.
    pub run_record: Option<crate::job::RunView>,
    /// Other jobs of the job type, newest first.
    pub related: Vec<JobView>,
}

/// Reads a job's detail: `activity_limit` (500) and `related_limit` (20) are capped at
/// 1,000 and 100.
pub(crate) async fn job_detail_parts(
    state: &AppState,
    id: &str,
    activity_limit: Option<usize>,
    related_limit: Option<usize>,
) -> Result<JobDetailParts, ApiError> {
    let seq = job_seq(id)?;
    let job = state.dispatcher.job(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    let activity_limit = activity_limit.filter(|n| *n > 0).unwrap_or(500).min(1000);
    let related_limit = related_limit.unwrap_or(20).min(100);
    state.store.settle().await;
    let attempts = state.dispatcher.attempts(seq)?;
    let mut activities = state.store.activities(None, Some(id), None, activity_limit)?;
    activities.reverse();
    let (successes, errors) = state.store.runs(&job.spec.job_type, 10)?;
    let run_record = successes.into_iter().chain(errors).find(|r| r.kind == "execution" && r.job_id == id);
    let mut related = Vec::new();
    if related_limit > 0 {
        let query =
            JobQuery { job_type: Some(job.spec.job_type.clone()), limit: related_limit + 1, ..Default::default() };
        related = state.dispatcher.list_jobs(&query)?;
        related.retain(|j| j.job_id != id);
        related.truncate(related_limit);
    }
    Ok(JobDetailParts { job, attempts, activities, run_record, related })
}

/// SeaweedFS's `JobDetail` (`job`, `run_record`, `activities` oldest first,
/// `related_jobs`, `last_updated`) with Plughost's `spec`, `result`, `attempts` and
/// `final`. `activity_limit` (500) and `related_limit` (20) are capped at 1,000 and 100.
async fn job_detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DetailQuery>,
) -> Result<Json<Value>, ApiError> {
    let JobDetailParts { job, attempts, activities, run_record, related } =
        job_detail_parts(&state, &id, q.activity_limit, q.related_limit).await?;
    let attempts: Vec<Value> = attempts
        .into_iter()
        .map(|a| {
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            for (key, ms) in [("started_at", a.started_at), ("ended_at", a.ended_at)] {
                match shapes::time(ms) {
                    Some(t) => v[key] = Value::String(t),
                    None => {
                        v.as_object_mut().map(|o| o.remove(key));
                    }
                }
            }
            v
        })
        .collect();
    let spec = job.to_spec();
    let result = pb::JobResult { output_values: job.result_values.clone(), summary: job.result_summary.clone() };
    let mut detail = json!({
        "job": full_job(&job)?,
        "activities": activities.iter().map(shapes::activity).collect::<Vec<_>>(),
        "last_updated": shapes::time(crate::job::now_ms()),
        "spec": proto_json(&spec)?,
        "result": proto_json(&result)?,
        "attempts": attempts,
        "final": is_final(job.state),
    });
    if let Some(run) = &run_record {
        detail["run_record"] = shapes::run_record(run);
    }
    if !related.is_empty() {
        detail["related_jobs"] = Value::Array(related.iter().map(shapes::job).collect());
    }
    Ok(Json(detail))
}

/// Why a job is waiting, from the dispatcher's own state: `{job_id, job_type, state,
/// blocked, reason, message, until?, ...details, also: [{reason, message}], at}`.
async fn explain(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let seq = job_seq(&id)?;
    let explanation = state.dispatcher.explain(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    Ok(Json(explanation_json(&explanation)))
}

/// An explanation as the JSON API answers it; times are RFC 3339.
pub(crate) fn explanation_json(e: &crate::dispatcher::Explanation) -> Value {
    use crate::dispatcher::WaitReason as W;
    let mut v = json!({
        "job_id": e.job_id,
        "job_type": e.job_type,
        "state": state_name(e.state),
        "blocked": e.blocked(),
        "reason": e.reason.code(),
        "message": e.message(),
        "also": e.also.iter().map(|r| json!({ "reason": r.code(), "message": e.message_of(r) })).collect::<Vec<_>>(),
        "at": shapes::time(e.at),
    });
    if let Some(until) = e.reason.until().and_then(shapes::time) {
        v["until"] = Value::String(until);
    }
    let details = match &e.reason {
        W::RetryBackoff { failed_attempt, .. } => json!({ "failed_attempt": failed_attempt }),
        W::Expired { at } => json!({ "expired_at": shapes::time(*at) }),
        W::DispatchPaused { by, since } | W::TypeHeld { by, since } => {
            json!({ "by": by, "since": shapes::time(*since) })
        }
        W::AllDraining { executors } => json!({ "draining": executors }),
        W::ConcurrencyReached { running, max } => json!({ "running": running, "max": max }),
        W::SlotsFull { used, total, executors } => json!({ "used": used, "total": total, "executors": executors }),
        W::Ready { ahead } => json!({ "ahead": ahead }),
        W::InFlight { worker_id, stopping } => json!({ "worker_id": worker_id, "stopping": stopping }),
        W::Finished { dead_letter } => json!({ "dead_letter": dead_letter }),
        W::Saving | W::NotBefore { .. } | W::AdminStopping | W::NoExecutor => json!({}),
    };
    if let (Value::Object(out), Value::Object(extra)) = (&mut v, details) {
        out.extend(extra);
    }
    v
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    reason: Option<String>,
}

fn reason_from(body: &axum::body::Bytes, default: &str) -> String {
    reason_or(serde_json::from_slice::<ReasonBody>(body).ok().and_then(|b| b.reason).as_deref(), default)
}

/// An operator's reason for a cancel or an expire: trimmed, cut at 500 bytes, `default`
/// when empty.
pub(crate) fn reason_or(reason: Option<&str>, default: &str) -> String {
    reason.map(|r| crate::text::clip(r.trim(), 500)).filter(|r| !r.is_empty()).unwrap_or_else(|| default.to_string())
}

async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let seq = job_seq(&id)?;
    let reason = reason_from(&body, "canceled by operator");
    job_outcome(state.execute(&caller, Command::CancelJob { seq, reason }).await?)
}

async fn expire(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let seq = job_seq(&id)?;
    let reason = reason_from(&body, "expired by operator");
    // SeaweedFS answers `{job_id, expired, job}`, with `expired: false` for a job that is
    // no longer active (the refusal is in the audit trail, its reason in `reason`).
    match state.execute(&caller, Command::ExpireJob { seq, reason }).await.map_err(ApiError::from) {
        Ok(outcome) => {
            let Json(mut answer) = job_outcome(outcome)?;
            answer["expired"] = Value::Bool(true);
            Ok(Json(answer))
        }
        Err(ApiError::Conflict(reason)) => {
            let job = state.dispatcher.job(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
            let view = job.view();
            Ok(Json(json!({ "job_id": view.job_id, "expired": false, "reason": reason, "job": shapes::job(&view) })))
        }
        Err(e) => Err(e),
    }
}

async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let seq = job_seq(&id)?;
    job_outcome(state.execute(&caller, Command::RetryJob { seq }).await?)
}

fn job_outcome(outcome: Outcome) -> Result<Json<Value>, ApiError> {
    match outcome {
        Outcome::Job(view) => Ok(Json(json!({ "job_id": view.job_id, "job": shapes::job(&view) }))),
        _ => Err(ApiError::Internal("a job command gave another outcome".into())),
    }
}

#[derive(Deserialize)]
struct ActivitiesQuery {
    job_type: Option<String>,
    lane: Option<String>,
    job_id: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

async fn activities(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ActivitiesQuery>,
) -> Result<Json<Value>, ApiError> {
    let (list, _) =
        list_activities(&state, q.job_type.as_deref(), q.lane.as_deref(), q.job_id.as_deref(), q.before, q.limit)
            .await?;
    Ok(Json(Value::Array(list.iter().map(shapes::activity).collect())))
}

/// The activity timeline, newest first: `limit` (500, at most 1,000) older than
/// `before`; empty filters are no filters. Also the next page's `before`, when the page
/// was full.
pub(crate) async fn list_activities(
    state: &AppState,
    job_type: Option<&str>,
    lane: Option<&str>,
    job_id: Option<&str>,
    before: Option<i64>,
    limit: Option<usize>,
) -> Result<(Vec<crate::job::ActivityView>, Option<i64>), ApiError> {
    let job_type = job_type.filter(|t| !t.is_empty());
    if let Some(t) = job_type {
        job_type_param(t)?;
    }
    let lane = lane_param(lane)?;
    state.store.settle().await;
    let limit = limit.unwrap_or(500).clamp(1, 1000);
    let mut list = state.store.activities(job_type, job_id.filter(|t| !t.is_empty()), before, limit)?;
    let next = (list.len() == limit).then(|| list.last().map(|a| a.id)).flatten();
    list.retain(|a| lane.is_none() || shapes::in_lane(&a.job_type, lane));
    Ok((list, next))
}

#[derive(Deserialize, Default)]
struct SchedulerStatesQuery {
    job_type: Option<String>,
    lane: Option<String>,
}

/// A bare array of SeaweedFS's `SchedulerJobTypeState`; `job_type` and `lane` filter.
async fn scheduler_states(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SchedulerStatesQuery>,
) -> Result<Json<Value>, ApiError> {
    let lane = lane_param(q.lane.as_deref())?;
    let job_type = q.job_type.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let list: Vec<Value> = state
        .scheduler
        .scheduler_states()
        .iter()
        .filter(|s| job_type.is_none_or(|t| s.job_type == t) && shapes::in_lane(&s.job_type, lane))
        .map(|s| shapes::scheduler_state(s, &state.configs.runtime(&s.job_type)))
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
struct DispatchQuery {
    paused: bool,
}

async fn dispatch_pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<DispatchQuery>,
) -> Result<Json<Value>, ApiError> {
    state.execute(&caller, Command::PauseDispatch { paused: q.paused }).await?;
    Ok(Json(json!({ "dispatch_paused": q.paused })))
}

/// Token management needs the admin role, listing included: token names are who may do
/// what.
fn require_admin(actor: &Actor) -> Result<(), ApiError> {
    if actor.role() < Role::Admin {
        return Err(ApiError::Forbidden(format!(
            "managing tokens needs the admin role; {actor} has the {} role",
            actor.role()
        )));
    }
    Ok(())
}

async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller.actor)?;
    let tokens = state.auth.tokens.list().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    role: String,
}

async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: NewToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body must be {{\"name\": ..., \"role\": ...}}: {e}")))?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::BadRequest(format!("role {:?} is not viewer, operator or admin", req.role)))?;
    match state.execute(&caller, Command::CreateToken { name: req.name, role }).await? {
        Outcome::TokenCreated { info, token } => Ok((
            StatusCode::CREATED,
            Json(json!({ "name": info.name, "role": info.role, "created_at": info.created_at, "token": token })),
        )),
        _ => Err(ApiError::Internal("create_token gave another outcome".into())),
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.execute(&caller, Command::RevokeToken { name }).await? {
        Outcome::TokenRevoked(info) => Ok(Json(json!({ "revoked": info }))),
        _ => Err(ApiError::Internal("revoke_token gave another outcome".into())),
    }
}
