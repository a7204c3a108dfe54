//! The JSON API under `/api/plugin/`. Paths follow SeaweedFS's admin where they exist so
//! existing scripts keep working; protobuf messages travel as proto JSON with snake_case
//! names. Sensitive config values never leave through here.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use proto::pb::{self, JobState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, AppState, auth::Caller, openapi::ErrorBody, routes::Routes, schemas, shapes};
use crate::{
    auth::{Role, TokenInfo},
    commands::{Actor, Command, Outcome},
    holds::Hold,
    job::{JobView, is_final, parse_job_id, parse_state, state_name},
    scheduler::{DetectOptions, DetectionMode},
    store::JobQuery,
    validator::{is_valid_job_type, redact},
};

pub fn routes() -> Routes {
    Routes::new()
        .get("/status", status)
        .get("/workers", workers)
        .get("/workers/departed", departed_workers)
        .post("/workers/{id}/drain", drain)
        .get("/job-types", job_types)
        .get("/job-types/{t}/descriptor", descriptor)
        .post("/job-types/{t}/schema", refresh_schema)
        .get("/job-types/{t}/config", get_config)
        .put("/job-types/{t}/config", put_config)
        .get("/job-types/{t}/runs", runs)
        .post("/job-types/{t}/detect", detect)
        .post("/job-types/{t}/run", run)
        .get("/job-types/{t}/detection-results", detection_results)
        .get("/jobs", jobs)
        .get("/jobs/{id}", job)
        .get("/jobs/{id}/detail", job_detail)
        .get("/jobs/{id}/explain", explain)
        .post("/jobs/{id}/cancel", cancel)
        .post("/jobs/{id}/retry", retry)
        .post("/jobs/{id}/expire", expire)
        .get("/activities", activities)
        .get("/scheduler-states", scheduler_states)
        .post("/dispatch", dispatch_pause)
        .get("/tokens", list_tokens)
        .post("/tokens", create_token)
        .delete("/tokens/{name}", revoke_token)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    status,
    workers,
    departed_workers,
    drain,
    job_types,
    descriptor,
    refresh_schema,
    get_config,
    put_config,
    runs,
    detect,
    run,
    detection_results,
    jobs,
    job,
    job_detail,
    explain,
    cancel,
    retry,
    expire,
    activities,
    scheduler_states,
    dispatch_pause,
    list_tokens,
    create_token,
    revoke_token,
))]
pub(super) struct Doc;

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

/// `GET status` with credentials.
#[derive(Serialize, ToSchema)]
struct Status {
    enabled: bool,
    worker_grpc_port: u16,
    version: &'static str,
    git_commit: &'static str,
    protocol_version: &'static str,
    configured: bool,
    base_dir: String,
    worker_count: usize,
    ready: bool,
    dispatch_paused: bool,
    schedules_paused: bool,
    holds: Vec<Hold>,
    dead_letters: i64,
    workers: usize,
    job_types: usize,
    active_jobs: usize,
    /// Jobs by state name, over all job types.
    jobs_by_state: HashMap<&'static str, i64>,
    last_event_id: u64,
    /// Proto JSON of the admin's `ClusterContext`.
    cluster_context: Value,
    cluster_context_file: Option<String>,
    cluster_context_error: Option<String>,
    /// `single` (SQLite), `leader` or `standby` (PostgreSQL: one of several admins).
    role: &'static str,
    /// The leader lease's epoch (PostgreSQL only).
    epoch: Option<i64>,
}

/// `GET status` without credentials: what a worker needs to dial in.
#[derive(Serialize, ToSchema)]
struct PublicStatus {
    enabled: bool,
    worker_grpc_port: u16,
    protocol_version: &'static str,
    authentication_required: bool,
    /// `single` (SQLite), `leader` or `standby` (PostgreSQL: one of several admins).
    role: &'static str,
    /// The leader lease's epoch (PostgreSQL only).
    epoch: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum StatusAnswer {
    Full(Box<Status>),
    Public(PublicStatus),
}

/// The admin's state. Without credentials it shows only what a worker needs to dial in.
#[utoipa::path(get, path = "/api/plugin/status", tag = "status",
    security((), ("bearer" = []), ("session" = []), ("client_certificate" = [])),
    responses((status = 200, description = "the admin's state; without credentials, only what a worker needs", body = StatusAnswer)))]
async fn status(State(state): State<AppState>, caller: Option<Extension<Caller>>) -> Json<StatusAnswer> {
    if caller.is_none() {
        return Json(StatusAnswer::Public(PublicStatus {
            enabled: true,
            worker_grpc_port: state.grpc_port(),
            protocol_version: proto::PROTOCOL_VERSION,
            authentication_required: true,
            role: role(&state),
            epoch: state.term().map(|t| t.epoch),
        }));
    }
    let mut counts: HashMap<&'static str, i64> = HashMap::new();
    for ((_, s), n) in state.dispatcher.counts() {
        *counts.entry(state_name(s)).or_insert(0) += n;
    }
    Json(StatusAnswer::Full(Box::new(Status {
        enabled: true,
        worker_grpc_port: state.grpc_port(),
        version: crate::monitor::VERSION,
        git_commit: crate::monitor::GIT_COMMIT,
        protocol_version: proto::PROTOCOL_VERSION,
        configured: true,
        base_dir: state.config.data_dir.join("plugin").display().to_string(),
        worker_count: state.registry.len(),
        ready: state.is_ready(),
        dispatch_paused: state.dispatcher.is_paused(),
        schedules_paused: state.holds.schedules_paused(),
        holds: state.holds.list(),
        dead_letters: state.store.dead_letters().map(|d| d.iter().map(|(_, n)| n).sum::<i64>()).unwrap_or(0),
        workers: state.registry.len(),
        job_types: state.configs.job_types().len(),
        active_jobs: state.dispatcher.active_len(),
        jobs_by_state: counts,
        last_event_id: state.events.last_id(),
        cluster_context: proto::json::to_value_with(state.cluster_context.current().as_ref(), true)
            .unwrap_or(Value::Null),
        cluster_context_file: state.cluster_context.file().map(|p| p.display().to_string()),
        cluster_context_error: state.cluster_context.last_error(),
        role: role(&state),
        epoch: state.term().map(|t| t.epoch),
    })))
}

fn role(state: &AppState) -> &'static str {
    if state.standby().is_some() {
        "standby"
    } else if state.term().is_some() {
        "leader"
    } else {
        "single"
    }
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct LaneQuery {
    /// Only this SeaweedFS scheduler lane: `default`, `iceberg`, `lifecycle` or `lance`.
    lane: Option<String>,
}

pub(crate) fn lane_param(lane: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    shapes::parse_lane(lane).map_err(ApiError::BadRequest)
}

/// A bare array of workers, as SeaweedFS answers; `lane` keeps the workers that offer a
/// job type of that lane.
#[utoipa::path(get, path = "/api/plugin/workers", tag = "status", params(LaneQuery),
    responses(
        (status = 200, description = "connected workers, by worker id", body = Vec<schemas::WorkerSession>),
        (status = 400, description = "an unknown lane", body = ErrorBody),
    ))]
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
#[utoipa::path(get, path = "/api/plugin/workers/departed", tag = "status",
    responses((status = 200, description = "workers that left during the last day, newest first", body = schemas::DepartedWorkers)))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DrainQuery {
    /// `false` ends the drain (default `true`).
    draining: Option<bool>,
}

#[derive(Serialize, ToSchema)]
struct Draining {
    worker_id: String,
    draining: bool,
}

/// Drains a worker (it keeps its running jobs and gets no new work, also after it
/// reconnects), or ends its drain.
#[utoipa::path(post, path = "/api/plugin/workers/{id}/drain", tag = "operations",
    params(("id" = String, Path, description = "a worker id"), DrainQuery),
    responses(
        (status = 200, description = "the worker's drain", body = Draining),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 404, description = "no connected worker with this id", body = ErrorBody),
    ))]
async fn drain(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DrainQuery>,
) -> Result<Json<Draining>, ApiError> {
    let draining = q.draining.unwrap_or(true);
    state.execute(&caller, Command::SetDraining { worker_id: id.clone(), draining }).await?;
    Ok(Json(Draining { worker_id: id, draining }))
}

/// One job type as the API lists it: SeaweedFS's `JobTypeInfo` (`job_type`,
/// `display_name`, `weight`) with Plughost's counts and flags.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
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
#[utoipa::path(get, path = "/api/plugin/job-types", tag = "status", params(LaneQuery),
    responses(
        (status = 200, description = "known and offered job types, by name", body = Vec<JobTypeSummary>),
        (status = 400, description = "an unknown lane", body = ErrorBody),
    ))]
async fn job_types(State(state): State<AppState>, ApiQuery(q): ApiQuery<LaneQuery>) -> Result<Json<Value>, ApiError> {
    let lane = lane_param(q.lane.as_deref())?;
    let list = job_type_summaries(&state, lane);
    Ok(Json(serde_json::to_value(list).map_err(|e| ApiError::Internal(e.to_string()))?))
}

/// The job type's descriptor, as its worker sent it (sensitive fields marked).
#[utoipa::path(get, path = "/api/plugin/job-types/{t}/descriptor", tag = "config", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    responses(
        (status = 200, description = "proto JSON of a `JobTypeDescriptor`", body = Value),
        (status = 400, description = "not a valid job type name", body = ErrorBody),
        (status = 404, description = "no descriptor for this job type", body = ErrorBody),
    ))]
async fn descriptor(State(state): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>, ApiError> {
    job_type_param(&t)?;
    let d =
        state.configs.descriptor(&t).ok_or_else(|| ApiError::NotFound(format!("no descriptor for job type {t:?}")))?;
    Ok(Json(proto_json(d.as_ref())?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SchemaQuery {
    /// Ask the worker even when a descriptor is stored.
    force_refresh: Option<bool>,
}

/// Asks a worker for the job type's descriptor again.
#[utoipa::path(post, path = "/api/plugin/job-types/{t}/schema", tag = "config", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)"), SchemaQuery),
    responses(
        (status = 200, description = "proto JSON of the `JobTypeDescriptor` now stored", body = Value),
        (status = 400, description = "not a valid job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 409, description = "the worker answered with an error", body = ErrorBody),
        (status = 503, description = "no worker could answer", body = ErrorBody),
    ))]
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

/// The job type's saved config, sensitive values redacted.
#[utoipa::path(get, path = "/api/plugin/job-types/{t}/config", tag = "config", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    responses(
        (status = 200, description = "proto JSON of a `PersistedJobTypeConfig`, sensitive values redacted", body = Value),
        (status = 400, description = "not a valid job type name", body = ErrorBody),
        (status = 404, description = "no descriptor or config for this job type", body = ErrorBody),
    ))]
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
#[utoipa::path(put, path = "/api/plugin/job-types/{t}/config", tag = "config", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    request_body(content = Value, description = "proto JSON of a `PersistedJobTypeConfig` (`admin_config_values`, `worker_config_values`, `admin_runtime`; each absent part keeps its saved value)"),
    responses(
        (status = 200, description = "the saved config, sensitive values redacted (proto JSON `PersistedJobTypeConfig`)", body = Value),
        (status = 400, description = "not JSON, for another job type, or invalid (`field_errors` names each field)", body = ErrorBody),
        (status = 403, description = "saving configs needs the admin role", body = ErrorBody),
        (status = 404, description = "no config for this job type", body = ErrorBody),
    ))]
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

/// The job type's recent runs (10 of each outcome): executions in SeaweedFS's fields,
/// detections and executions in Plughost's.
#[utoipa::path(get, path = "/api/plugin/job-types/{t}/runs", tag = "detection", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    responses(
        (status = 200, description = "recent runs", body = schemas::JobRunHistory),
        (status = 400, description = "not a valid job type name", body = ErrorBody),
    ))]
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

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// `false`: answer 202 once the detection is requested instead of waiting for it (a
    /// Plughost extension; SeaweedFS always waits).
    wait: Option<bool>,
}

/// A detection now, as a preview: its proposals, no jobs. Waits for it unless `wait=false`.
#[utoipa::path(post, path = "/api/plugin/job-types/{t}/detect", tag = "detection", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)"), WaitQuery),
    request_body(content = Option<DetectBody>, description = "optional options for this detection; no body is none"),
    responses(
        (status = 200, description = "the detection and its proposals", body = schemas::DetectAnswer),
        (status = 202, description = "`wait=false`: the detection was requested", body = schemas::DetectionAccepted),
        (status = 400, description = "a bad body or job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not (a cluster context needs the admin role)", body = ErrorBody),
        (status = 404, description = "no descriptor for this job type yet", body = ErrorBody),
        (status = 409, description = "the job type's detection is held", body = ErrorBody),
        (status = 422, description = "a negative max_results or timeout_seconds", body = ErrorBody),
        (status = 429, description = "over the run-now cap (`Retry-After`)", body = ErrorBody),
        (status = 500, description = "the detection failed (`error` says why)", body = schemas::DetectAnswer),
        (status = 503, description = "no worker can detect this job type", body = ErrorBody),
        (status = 504, description = "the detection did not finish in time; it goes on", body = schemas::DetectionFailed),
    ))]
async fn detect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    start_detection(state, caller, t, DetectionMode::Preview, q, body).await
}

/// A detection now that creates jobs, then waits for them (unless `wait=false`) and
/// counts how they ended.
#[utoipa::path(post, path = "/api/plugin/job-types/{t}/run", tag = "detection", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)"), WaitQuery),
    request_body(content = Option<DetectBody>, description = "optional options for this detection; no body is none"),
    responses(
        (status = 200, description = "the detection and its jobs", body = schemas::RunAnswer),
        (status = 202, description = "`wait=false`: the detection was requested", body = schemas::DetectionAccepted),
        (status = 400, description = "a bad body or job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not (operator scripts and a cluster context need the admin role)", body = ErrorBody),
        (status = 404, description = "no descriptor for this job type yet", body = ErrorBody),
        (status = 409, description = "the job type's detection is held", body = ErrorBody),
        (status = 422, description = "a negative max_results or timeout_seconds", body = ErrorBody),
        (status = 429, description = "over the run-now cap (`Retry-After`)", body = ErrorBody),
        (status = 500, description = "the detection failed", body = schemas::DetectionFailed),
        (status = 503, description = "no worker can detect this job type", body = ErrorBody),
        (status = 504, description = "the detection did not finish in time; it goes on", body = schemas::DetectionFailed),
    ))]
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
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DetectBody {
    /// A `ClusterContext` in proto JSON, over the admin's for this detection (the admin
    /// role).
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

#[derive(Serialize, ToSchema)]
struct DetectionResults {
    job_type: String,
    proposals: Vec<crate::scheduler::ProposalView>,
}

/// The proposals of the job type's latest detection and what became of each.
#[utoipa::path(get, path = "/api/plugin/job-types/{t}/detection-results", tag = "detection", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    responses(
        (status = 200, description = "the latest detection's proposals", body = DetectionResults),
        (status = 400, description = "not a valid job type name", body = ErrorBody),
    ))]
async fn detection_results(
    State(state): State<AppState>,
    Path(t): Path<String>,
) -> Result<Json<DetectionResults>, ApiError> {
    job_type_param(&t)?;
    let proposals = state.scheduler.latest_proposals(&t);
    Ok(Json(DetectionResults { job_type: t, proposals }))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    pub job_type: Option<String>,
    /// A SeaweedFS scheduler lane: `default`, `iceberg`, `lifecycle` or `lance`.
    pub lane: Option<String>,
    /// A job state, in any spelling (`pending`, `JOB_STATE_PENDING`, ...).
    pub state: Option<String>,
    /// A substring of the summary, dedupe key or job id (any case).
    pub text: Option<String>,
    pub dead_letter: Option<bool>,
    /// The last job id of the previous page.
    pub before: Option<String>,
    /// 1 to 1,000 (100).
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
#[utoipa::path(get, path = "/api/plugin/jobs", tag = "jobs", params(JobsQuery),
    responses(
        (status = 200, description = "jobs, newest first", body = Vec<schemas::TrackedJob>,
            headers(("x-plughost-next-before" = String, description = "the next page's `before`, when the page is full"))),
        (status = 400, description = "a bad filter", body = ErrorBody),
    ))]
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
    let result =
        pb::JobResult { output_values: job.result_values.to_map(), summary: String::from(&*job.result_summary) };
    let parameters = proto_json(&spec)?.get("parameters").cloned().unwrap_or(Value::Null);
    let outputs = proto_json(&result)?.get("output_values").cloned().unwrap_or(Value::Null);
    Ok(shapes::job_with_values(&job.view(), parameters, outputs))
}

/// One job with its parameters and result values.
#[utoipa::path(get, path = "/api/plugin/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "a job id (`j` and a number)")),
    responses(
        (status = 200, description = "the job", body = schemas::TrackedJob),
        (status = 404, description = "no such job", body = ErrorBody),
    ))]
async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let seq = job_seq(&id)?;
    let job = state.dispatcher.job(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    Ok(Json(full_job(&job)?))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct DetailQuery {
    /// Activities to show, at most 1,000 (500).
    activity_limit: Option<usize>,
    /// Other jobs of the type to show, at most 100 (20).
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
#[utoipa::path(get, path = "/api/plugin/jobs/{id}/detail", tag = "jobs", params(("id" = String, Path, description = "a job id (`j` and a number)"), DetailQuery),
    responses(
        (status = 200, description = "the job and its history", body = schemas::JobDetail),
        (status = 404, description = "no such job", body = ErrorBody),
    ))]
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
    let result =
        pb::JobResult { output_values: job.result_values.to_map(), summary: String::from(&*job.result_summary) };
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
#[utoipa::path(get, path = "/api/plugin/jobs/{id}/explain", tag = "jobs", params(("id" = String, Path, description = "a job id (`j` and a number)")),
    responses(
        (status = 200, description = "why the job waits, or that nothing holds it back", body = schemas::Explanation),
        (status = 404, description = "no such job", body = ErrorBody),
    ))]
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
        W::Saving | W::NotBefore { .. } | W::AdminStopping | W::LeaseUnconfirmed | W::NoExecutor => json!({}),
    };
    if let (Value::Object(out), Value::Object(extra)) = (&mut v, details) {
        out.extend(extra);
    }
    v
}

/// The optional body of cancel and expire (anything else is ignored).
#[derive(Deserialize, Default, ToSchema)]
struct ReasonBody {
    /// Recorded with the job (at most 500 characters kept).
    reason: Option<String>,
}

/// A job after a command.
#[derive(Serialize, ToSchema)]
pub(super) struct JobAnswer {
    job_id: String,
    #[schema(value_type = schemas::TrackedJob)]
    job: Value,
}

impl JobAnswer {
    pub(super) fn of(view: &crate::job::JobView) -> JobAnswer {
        JobAnswer { job_id: view.job_id.clone(), job: shapes::job(view) }
    }
}

/// `expire`'s answer, as SeaweedFS's: `expired: false` with the reason for a job that is
/// no longer active.
#[derive(Serialize, ToSchema)]
struct Expired {
    job_id: String,
    expired: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[schema(value_type = schemas::TrackedJob)]
    job: Value,
}

fn reason_from(body: &axum::body::Bytes, default: &str) -> String {
    reason_or(serde_json::from_slice::<ReasonBody>(body).ok().and_then(|b| b.reason).as_deref(), default)
}

/// An operator's reason for a cancel or an expire: trimmed, cut at 500 bytes, `default`
/// when empty.
pub(crate) fn reason_or(reason: Option<&str>, default: &str) -> String {
    reason.map(|r| crate::text::clip(r.trim(), 500)).filter(|r| !r.is_empty()).unwrap_or_else(|| default.to_string())
}

/// Cancels a job: a waiting one at once, a running one when its worker confirms or the
/// grace period ends.
#[utoipa::path(post, path = "/api/plugin/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "a job id (`j` and a number)")),
    request_body(content = Option<ReasonBody>, description = "optional"),
    responses(
        (status = 200, description = "the job now", body = JobAnswer),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job has already finished", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<JobAnswer>, ApiError> {
    let seq = job_seq(&id)?;
    let reason = reason_from(&body, "canceled by operator");
    job_outcome(state.execute(&caller, Command::CancelJob { seq, reason }).await?)
}

/// Ends a job as FAILED without retry.
#[utoipa::path(post, path = "/api/plugin/jobs/{id}/expire", tag = "jobs", params(("id" = String, Path, description = "a job id (`j` and a number)")),
    request_body(content = Option<ReasonBody>, description = "optional"),
    responses(
        (status = 200, description = "the job now; `expired: false` with the reason when it was no longer active", body = Expired),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
    ))]
async fn expire(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Expired>, ApiError> {
    let seq = job_seq(&id)?;
    let reason = reason_from(&body, "expired by operator");
    // SeaweedFS answers `{job_id, expired, job}`, with `expired: false` for a job that is
    // no longer active (the refusal is in the audit trail, its reason in `reason`).
    match state.execute(&caller, Command::ExpireJob { seq, reason }).await.map_err(ApiError::from) {
        Ok(outcome) => {
            let Json(JobAnswer { job_id, job }) = job_outcome(outcome)?;
            Ok(Json(Expired { job_id, expired: true, reason: None, job }))
        }
        Err(ApiError::Conflict(reason)) => {
            let job = state.dispatcher.job(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
            let view = job.view();
            Ok(Json(Expired {
                job_id: view.job_id.clone(),
                expired: false,
                reason: Some(reason),
                job: shapes::job(&view),
            }))
        }
        Err(e) => Err(e),
    }
}

/// Starts a new cycle of attempts for a FAILED or CANCELED job.
#[utoipa::path(post, path = "/api/plugin/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "a job id (`j` and a number)")),
    responses(
        (status = 200, description = "the job now", body = JobAnswer),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "not failed or canceled, or an active job has its dedupe key", body = ErrorBody),
    ))]
async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobAnswer>, ApiError> {
    let seq = job_seq(&id)?;
    job_outcome(state.execute(&caller, Command::RetryJob { seq }).await?)
}

fn job_outcome(outcome: Outcome) -> Result<Json<JobAnswer>, ApiError> {
    match outcome {
        Outcome::Job(view) => Ok(Json(JobAnswer::of(&view))),
        _ => Err(ApiError::Internal("a job command gave another outcome".into())),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ActivitiesQuery {
    job_type: Option<String>,
    lane: Option<String>,
    job_id: Option<String>,
    /// The last activity id of the previous page.
    before: Option<i64>,
    /// 1 to 1,000 (500).
    limit: Option<usize>,
}

/// The activity timeline, newest first.
#[utoipa::path(get, path = "/api/plugin/activities", tag = "jobs", params(ActivitiesQuery),
    responses(
        (status = 200, description = "activities, newest first", body = Vec<schemas::JobActivity>),
        (status = 400, description = "a bad filter", body = ErrorBody),
    ))]
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

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct SchedulerStatesQuery {
    job_type: Option<String>,
    lane: Option<String>,
}

/// A bare array of SeaweedFS's `SchedulerJobTypeState`; `job_type` and `lane` filter.
#[utoipa::path(get, path = "/api/plugin/scheduler-states", tag = "detection", params(SchedulerStatesQuery),
    responses(
        (status = 200, description = "each job type's scheduler state", body = Vec<schemas::SchedulerJobTypeState>),
        (status = 400, description = "an unknown lane", body = ErrorBody),
    ))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DispatchQuery {
    paused: bool,
}

#[derive(Serialize, ToSchema)]
struct DispatchPaused {
    dispatch_paused: bool,
}

/// Pauses or resumes the dispatch of every job type (a persisted hold).
#[utoipa::path(post, path = "/api/plugin/dispatch", tag = "operations", params(DispatchQuery),
    responses(
        (status = 200, description = "the pause now", body = DispatchPaused),
        (status = 400, description = "`paused` is missing or not a boolean", body = ErrorBody),
        (status = 403, description = "the caller's role may not, or the approval token is missing or wrong", body = ErrorBody),
    ))]
async fn dispatch_pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<DispatchQuery>,
) -> Result<Json<DispatchPaused>, ApiError> {
    state.execute(&caller, Command::PauseDispatch { paused: q.paused }).await?;
    Ok(Json(DispatchPaused { dispatch_paused: q.paused }))
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

#[derive(Serialize, ToSchema)]
struct Tokens {
    tokens: Vec<TokenInfo>,
}

/// The API tokens (never their secrets); the admin role.
#[utoipa::path(get, path = "/api/plugin/tokens", tag = "operations",
    responses(
        (status = 200, description = "every token", body = Tokens),
        (status = 403, description = "not the admin role", body = ErrorBody),
    ))]
async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Tokens>, ApiError> {
    require_admin(&caller.actor)?;
    let tokens = state.auth.tokens.list().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(Tokens { tokens }))
}

#[derive(Deserialize, ToSchema)]
struct NewToken {
    name: String,
    /// `viewer`, `operator` or `admin`.
    role: String,
}

#[derive(Serialize, ToSchema)]
struct CreatedToken {
    name: String,
    role: Role,
    /// Unix ms.
    created_at: i64,
    /// The token itself, shown this once.
    token: String,
}

#[derive(Serialize, ToSchema)]
struct Revoked {
    revoked: TokenInfo,
}

/// Issues an API token; the admin role.
#[utoipa::path(post, path = "/api/plugin/tokens", tag = "operations", request_body = NewToken,
    responses(
        (status = 201, description = "the new token, its secret shown once", body = CreatedToken),
        (status = 400, description = "a bad body, name or role", body = ErrorBody),
        (status = 403, description = "not the admin role", body = ErrorBody),
        (status = 409, description = "a token with this name exists", body = ErrorBody),
    ))]
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
            Json(CreatedToken { name: info.name, role: info.role, created_at: info.created_at, token }),
        )),
        _ => Err(ApiError::Internal("create_token gave another outcome".into())),
    }
}

/// Revokes an API token; its page sessions end too. The admin role.
#[utoipa::path(delete, path = "/api/plugin/tokens/{name}", tag = "operations",
    params(("name" = String, Path, description = "the token's name")),
    responses(
        (status = 200, description = "the revoked token", body = Revoked),
        (status = 403, description = "not the admin role", body = ErrorBody),
        (status = 404, description = "no token with this name", body = ErrorBody),
    ))]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    match state.execute(&caller, Command::RevokeToken { name }).await? {
        Outcome::TokenRevoked(info) => Ok(Json(Revoked { revoked: info })),
        _ => Err(ApiError::Internal("revoke_token gave another outcome".into())),
    }
}
