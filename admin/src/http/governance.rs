//! The operator's controls in the JSON API: the audit trail and its export, holds,
//! schedules, bulk replay of dead letters and enqueue by hand. Every change goes through
//! the command layer, so it is authorised, audited and the same as from the pages.

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, AppState, api::JobAnswer, auth::Caller, openapi::ErrorBody, routes::Routes, schemas};
use crate::{
    audit::{AuditEvent, AuditQuery},
    commands::{Command, Outcome, ReplayFilter, ReplayReport, ScheduleSpec, ScheduleView},
    holds::Hold,
    job::parse_job_id,
    store::MAX_PAGE,
    text::parse_time,
    validator::is_valid_job_type,
};

pub fn routes() -> Routes {
    Routes::new()
        .get("/audit", audit)
        .get("/audit/export", export)
        .get("/holds", holds)
        .post("/job-types/{t}/hold", hold)
        .get("/schedules", schedules)
        .post("/schedules/pause", pause_schedules)
        .put("/job-types/{t}/schedule", set_schedule)
        .delete("/job-types/{t}/schedule", delete_schedule)
        .post("/jobs/replay", replay)
        .post("/job-types/{t}/jobs", enqueue)
        .get("/observations", observations)
        .post("/job-types/{t}/preview", preview)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    audit,
    export,
    holds,
    hold,
    schedules,
    pause_schedules,
    set_schedule,
    delete_schedule,
    replay,
    enqueue,
    observations,
    preview,
))]
pub(super) struct Doc;

/// An object id as a path: a JSON list of parts, or a string with `/` between them.
pub fn object_path(value: &Value) -> Result<Vec<String>, ApiError> {
    match value {
        Value::String(s) => Ok(s.split('/').filter(|p| !p.is_empty()).map(String::from).collect()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.as_str().map(String::from).ok_or_else(|| ApiError::BadRequest("object_id parts are strings".into()))
            })
            .collect(),
        _ => Err(ApiError::BadRequest("object_id is a list of strings or a string like \"db/table\"".into())),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ObservationsQuery {
    job_type: Option<String>,
    /// An object id path (`db/table`): the objects under it.
    object: Option<String>,
    /// SeaweedFS's filter: the object format, any case.
    format: Option<String>,
}

/// `GET observations?job_type&object&format`: a bare array (as SeaweedFS answers) of the
/// newest observation of each object, newest first; `object` (`db/table`) keeps the
/// objects under that path, `format` those of one format.
#[utoipa::path(get, path = "/api/plugin/observations", tag = "seaweedfs", params(ObservationsQuery),
    responses(
        (status = 200, description = "the newest observation of each object, newest first", body = Vec<schemas::Observation>),
        (status = 400, description = "a bad job type", body = ErrorBody),
    ))]
async fn observations(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ObservationsQuery>,
) -> Result<Json<Value>, ApiError> {
    let job_type = q.job_type.as_deref().filter(|t| !t.is_empty());
    if let Some(t) = job_type {
        job_type_param(t)?;
    }
    let object = match q.object.as_deref().filter(|o| !o.is_empty()) {
        Some(o) => Some(object_path(&Value::String(o.to_string()))?),
        None => None,
    };
    let format = q.format.as_deref().map(str::trim).filter(|f| !f.is_empty());
    let list = state.observations.list(job_type, object.as_deref());
    let list = list.iter().filter(|o| format.is_none_or(|f| o.format.eq_ignore_ascii_case(f)));
    Ok(Json(Value::Array(list.map(super::shapes::observation).collect())))
}

/// The body of `preview`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PreviewBody {
    /// A list of path parts, or a string like `db/table`.
    #[schema(value_type = Value)]
    object_id: Vec<String>,
    format: Option<String>,
    /// Above 0 (the worker's default when absent).
    row_limit: Option<i32>,
}

/// `POST job-types/{t}/preview` with `{"object_id": ..., "format": ..., "row_limit": N}`:
/// asks the worker that last observed the object (else any worker of the job type).
#[utoipa::path(post, path = "/api/plugin/job-types/{t}/preview", tag = "seaweedfs", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    request_body = PreviewBody,
    responses(
        (status = 200, description = "the preview", body = crate::observations::PreviewView),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 404, description = "no such job type", body = ErrorBody),
        (status = 422, description = "the worker could not preview the object, or the object id is empty", body = ErrorBody),
        (status = 503, description = "no worker could answer in time", body = ErrorBody),
    ))]
async fn preview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Json<crate::observations::PreviewView>, ApiError> {
    job_type_param(&t)?;
    let value = json_body(&body)?;
    let object_id = object_path(value.get("object_id").unwrap_or(&Value::Null))?;
    let format = text_field(value.as_object().unwrap_or(&Map::new()), "format")?.unwrap_or_default();
    let row_limit = match value.get("row_limit") {
        None | Some(Value::Null) => 0,
        Some(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::BadRequest("row_limit must be a whole number above 0".into()))?,
    };
    let request = pb::RequestObjectPreview { object_id, format, row_limit };
    match state.execute(&caller, Command::PreviewObject { job_type: t, request }).await? {
        Outcome::Preview(view) => Ok(Json(*view)),
        _ => Err(ApiError::Internal("preview_object gave another outcome".into())),
    }
}

fn job_type_param(t: &str) -> Result<(), ApiError> {
    if is_valid_job_type(t) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("job type {t:?} is not a valid name (letters, digits, '_', '.', '-')")))
    }
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body is not JSON: {e}")))
}

fn bad_time(field: &str, e: String) -> ApiError {
    ApiError::BadRequest(format!("{field}: {e}"))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    pub action: Option<String>,
    pub target: Option<String>,
    pub actor: Option<String>,
    /// `done` or `refused`.
    pub outcome: Option<String>,
    /// Unix ms or RFC 3339.
    pub since: Option<String>,
    /// Unix ms or RFC 3339.
    pub until: Option<String>,
    /// The last event id of the previous page.
    pub before: Option<i64>,
    pub limit: Option<usize>,
    /// Export only: `jsonl` (default), `json` or `csv`.
    pub format: Option<String>,
}

impl AuditParams {
    pub fn query(&self) -> Result<AuditQuery, ApiError> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        let time = |field: &str, v: &Option<String>| match text(v) {
            None => Ok(None),
            Some(t) => parse_time(&t).map(Some).map_err(|e| bad_time(field, e)),
        };
        if let Some(o) = text(&self.outcome)
            && o != "done"
            && o != "refused"
        {
            return Err(ApiError::BadRequest(format!("outcome must be done or refused, not {o:?}")));
        }
        Ok(AuditQuery {
            action: text(&self.action),
            target: text(&self.target),
            actor: text(&self.actor),
            outcome: text(&self.outcome),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            before_id: self.before,
            limit: self.limit.unwrap_or(100).clamp(1, MAX_PAGE),
        })
    }
}

/// Reading the audit trail needs the operator role: it names every token and who did
/// what with it, which a viewer (a dashboard) has no need to know.
pub fn may_read_audit(caller: &Caller) -> Result<(), ApiError> {
    let role = caller.actor.role();
    if role < crate::auth::Role::Operator {
        return Err(ApiError::Forbidden(format!(
            "reading the audit trail needs the operator role; {} has the {role} role",
            caller.actor
        )));
    }
    Ok(())
}

#[derive(Serialize, ToSchema)]
struct AuditPage {
    events: Vec<AuditEvent>,
    /// `before` for the next page, when this one is full.
    next_before: Option<i64>,
}

/// `GET audit`: newest first, `limit` at a time; `before=<last id>` for the next page.
#[utoipa::path(get, path = "/api/plugin/audit", tag = "operations", params(AuditParams),
    responses(
        (status = 200, description = "audit events, newest first", body = AuditPage),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 403, description = "reading the audit trail needs the operator role", body = ErrorBody),
    ))]
async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    may_read_audit(&caller)?;
    let query = p.query()?;
    state.store.settle().await;
    let events = state.store.audit(&query)?;
    let next_before = (events.len() == query.limit).then(|| events.last().map(|e| e.id)).flatten();
    Ok(Json(AuditPage { events, next_before }))
}

/// The export formats.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Json,
    Csv,
}

impl ExportFormat {
    pub fn parse(s: Option<&str>) -> Result<ExportFormat, ApiError> {
        match s.unwrap_or("jsonl") {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "json" => Ok(ExportFormat::Json),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(ApiError::BadRequest(format!("format must be jsonl, json or csv, not {other:?}"))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Json => "application/json",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Json => "json",
            ExportFormat::Csv => "csv",
        }
    }
}

/// The CSV header of an export.
pub const CSV_HEADER: &str = "id,at,actor,actor_kind,action,target,params,outcome,reason,request_id\r\n";

/// One field of a CSV row (RFC 4180): quoted when it holds a comma, a quote or a line
/// break, with quotes doubled.
fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

pub fn csv_row(e: &AuditEvent) -> String {
    let mut out = String::new();
    let id = e.id.to_string();
    let at = e.at.to_string();
    let params = e.params.to_string();
    let fields = [
        id.as_str(),
        at.as_str(),
        &e.actor,
        &e.actor_kind,
        &e.action,
        &e.target,
        &params,
        &e.outcome,
        &e.reason,
        &e.request_id,
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, f);
    }
    out.push_str("\r\n");
    out
}

/// `GET audit/export?format=jsonl|json|csv`: every matching event, newest first, at most
/// `--audit-export-max`, streamed a page at a time.
#[utoipa::path(get, path = "/api/plugin/audit/export", tag = "operations", params(AuditParams),
    responses(
        (status = 200, description = "every matching event, newest first, as an attachment",
            headers(("x-plughost-export-truncated" = bool, description = "more events matched than were exported")),
            content(
                (Vec<AuditEvent> = "application/json"),
                (String = "application/x-ndjson"),
                (String = "text/csv"),
            )),
        (status = 400, description = "a bad filter or format", body = ErrorBody),
        (status = 403, description = "reading the audit trail needs the operator role", body = ErrorBody),
    ))]
async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    may_read_audit(&caller)?;
    let format = ExportFormat::parse(p.format.as_deref())?;
    let query = AuditQuery { limit: MAX_PAGE, before_id: None, ..p.query()? };
    state.store.settle().await;
    let max = state.config.audit_export_max;
    let total = usize::try_from(state.store.audit_count(&query)?).unwrap_or(usize::MAX);
    let truncated = total > max;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let send = |chunk: String| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok();
        let mut query = query;
        let mut sent = 0usize;
        let opening = match format {
            ExportFormat::Json => "[".to_string(),
            ExportFormat::Csv => CSV_HEADER.to_string(),
            ExportFormat::Jsonl => String::new(),
        };
        if !opening.is_empty() && !send(opening) {
            return;
        }
        while sent < max {
            query.limit = MAX_PAGE.min(max - sent);
            let page = match store.audit(&query) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "audit export stopped");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let mut chunk = String::new();
            for e in &page {
                match format {
                    ExportFormat::Csv => chunk.push_str(&csv_row(e)),
                    ExportFormat::Json => {
                        if sent > 0 {
                            chunk.push(',');
                        }
                        chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                    }
                    ExportFormat::Jsonl => {
                        chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                        chunk.push('\n');
                    }
                }
                sent += 1;
            }
            if !chunk.is_empty() && !send(chunk) {
                return;
            }
            if page.len() < query.limit {
                break;
            }
            query.before_id = page.last().map(|e| e.id);
        }
        if format == ExportFormat::Json {
            send("]".to_string());
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let disposition = format!("attachment; filename=\"plughost-audit.{}\"", format.extension());
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::HeaderName::from_static("x-plughost-export-truncated"), truncated.to_string()),
        ],
        body,
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
struct HoldsAnswer {
    holds: Vec<Hold>,
    dispatch_paused: bool,
    schedules_paused: bool,
}

/// Every active hold, with who set it and when.
#[utoipa::path(get, path = "/api/plugin/holds", tag = "operations",
    responses((status = 200, description = "the active holds", body = HoldsAnswer)))]
async fn holds(State(state): State<AppState>) -> Json<HoldsAnswer> {
    Json(HoldsAnswer {
        holds: state.holds.list(),
        dispatch_paused: state.holds.dispatch_paused(),
        schedules_paused: state.holds.schedules_paused(),
    })
}

fn optional_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::BadRequest(format!("{key} must be true or false"))),
    }
}

/// The body of `hold`: true holds, false releases, absent keeps.
#[derive(ToSchema)]
#[allow(dead_code)]
struct HoldBody {
    detection: Option<bool>,
    dispatch: Option<bool>,
}

/// A job type's hold of one kind.
#[derive(Serialize, ToSchema)]
struct HoldState {
    held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    set_by: Option<String>,
    /// Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    set_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct JobTypeHolds {
    job_type: String,
    detection: HoldState,
    dispatch: HoldState,
}

/// `POST job-types/{t}/hold` with `{"detection": bool, "dispatch": bool}`.
#[utoipa::path(post, path = "/api/plugin/job-types/{t}/hold", tag = "operations", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    request_body = HoldBody,
    responses(
        (status = 200, description = "the job type's holds now", body = JobTypeHolds),
        (status = 400, description = "a bad body or job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not", body = ErrorBody),
        (status = 404, description = "no such job type", body = ErrorBody),
        (status = 422, description = "neither detection nor dispatch given", body = ErrorBody),
    ))]
async fn hold(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Json<JobTypeHolds>, ApiError> {
    job_type_param(&t)?;
    let value = json_body(&body)?;
    let Value::Object(map) = &value else {
        return Err(ApiError::BadRequest("body must be {\"detection\": bool, \"dispatch\": bool}".into()));
    };
    if let Some(key) = map.keys().find(|k| *k != "detection" && *k != "dispatch") {
        return Err(ApiError::BadRequest(format!("unknown field {key:?}; use detection and dispatch")));
    }
    let command = Command::HoldJobType {
        job_type: t,
        detection: optional_bool(map, "detection")?,
        dispatch: optional_bool(map, "dispatch")?,
    };
    match state.execute(&caller, command).await? {
        Outcome::JobTypeHolds { job_type, detection, dispatch } => {
            Ok(Json(JobTypeHolds { job_type, detection: hold_state(detection), dispatch: hold_state(dispatch) }))
        }
        _ => Err(ApiError::Internal("hold_job_type gave another outcome".into())),
    }
}

fn hold_state(hold: Option<Hold>) -> HoldState {
    match hold {
        Some(h) => HoldState { held: true, set_by: Some(h.set_by), set_at: Some(h.set_at) },
        None => HoldState { held: false, set_by: None, set_at: None },
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PausedQuery {
    paused: bool,
}

#[derive(Serialize, ToSchema)]
struct SchedulesPaused {
    schedules_paused: bool,
}

/// Pauses or resumes every scheduled detection (on-demand ones still run).
#[utoipa::path(post, path = "/api/plugin/schedules/pause", tag = "operations", params(PausedQuery),
    responses(
        (status = 200, description = "the pause now", body = SchedulesPaused),
        (status = 400, description = "`paused` is missing or not a boolean", body = ErrorBody),
        (status = 403, description = "the caller's role may not, or the approval token is missing or wrong", body = ErrorBody),
    ))]
async fn pause_schedules(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PausedQuery>,
) -> Result<Json<SchedulesPaused>, ApiError> {
    state.execute(&caller, Command::PauseSchedules { paused: q.paused }).await?;
    Ok(Json(SchedulesPaused { schedules_paused: q.paused }))
}

#[derive(Serialize, ToSchema)]
struct Schedules {
    /// All schedules are paused.
    paused: bool,
    schedules: Vec<ScheduleView>,
}

/// Each job type's schedule, with its previous and next fire time.
#[utoipa::path(get, path = "/api/plugin/schedules", tag = "operations",
    responses((status = 200, description = "every job type's schedule", body = Schedules)))]
async fn schedules(State(state): State<AppState>) -> Json<Schedules> {
    Json(Schedules { paused: state.holds.schedules_paused(), schedules: state.schedule_views() })
}

fn schedule_outcome(outcome: Outcome) -> Result<Json<ScheduleView>, ApiError> {
    match outcome {
        Outcome::Schedule(view) => Ok(Json(*view)),
        _ => Err(ApiError::Internal("a schedule command gave another outcome".into())),
    }
}

/// The body of `PUT job-types/{t}/schedule`: a cron expression (5 fields, or 6 with
/// seconds first, or `@daily` and the like) in a time zone (UTC), or an interval (which
/// also removes a cron schedule).
#[derive(ToSchema)]
#[allow(dead_code)]
struct ScheduleBody {
    cron: Option<String>,
    /// An IANA time zone name.
    time_zone: Option<String>,
    interval_minutes: Option<i64>,
}

/// Detect on a cron expression, or on an interval.
#[utoipa::path(put, path = "/api/plugin/job-types/{t}/schedule", tag = "operations", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    request_body = ScheduleBody,
    responses(
        (status = 200, description = "the schedule now", body = ScheduleView),
        (status = 400, description = "not JSON, or a bad job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not (operator scripts need the admin role)", body = ErrorBody),
        (status = 404, description = "no such job type", body = ErrorBody),
        (status = 422, description = "an invalid expression, time zone or interval", body = ErrorBody),
    ))]
async fn set_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Json<ScheduleView>, ApiError> {
    job_type_param(&t)?;
    let schedule = ScheduleSpec::from_json(&json_body(&body)?).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    schedule_outcome(state.execute(&caller, Command::SetSchedule { job_type: t, schedule }).await?)
}

/// Removes the job type's cron schedule: it detects on its interval again.
#[utoipa::path(delete, path = "/api/plugin/job-types/{t}/schedule", tag = "operations", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    responses(
        (status = 200, description = "the schedule now", body = ScheduleView),
        (status = 400, description = "a bad job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not, or the approval token is missing or wrong", body = ErrorBody),
        (status = 404, description = "no such job type, or it has no cron schedule", body = ErrorBody),
    ))]
async fn delete_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    job_type_param(&t)?;
    schedule_outcome(state.execute(&caller, Command::DeleteSchedule { job_type: t }).await?)
}

/// A time field of a JSON body: Unix ms or RFC 3339.
fn time_field(map: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad_time(key, format!("{n} is not Unix ms"))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => parse_time(s).map(Some).map_err(|e| bad_time(key, e)),
        Some(_) => Err(bad_time(key, "use Unix milliseconds or RFC 3339".into())),
    }
}

fn text_field(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(_) => Err(ApiError::BadRequest(format!("{key} must be a string"))),
    }
}

/// A replay request's body: a filter or ids, a limit, and dry_run.
pub fn replay_command(value: &Value) -> Result<Command, ApiError> {
    let Value::Object(map) = value else { return Err(ApiError::BadRequest("body must be a JSON object".into())) };
    const FIELDS: [&str; 8] = ["job_type", "text", "error_contains", "since", "until", "ids", "limit", "dry_run"];
    if let Some(key) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!("unknown field {key:?}; known: {}", FIELDS.join(", "))));
    }
    let job_type = text_field(map, "job_type")?;
    if let Some(t) = &job_type {
        job_type_param(t)?;
    }
    let ids = match map.get("ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str().and_then(parse_job_id).ok_or_else(|| ApiError::BadRequest(format!("{v} is not a job id")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::BadRequest("ids must be a list of job ids".into())),
    };
    let limit = match map.get("limit") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ApiError::BadRequest("limit must be a whole number above 0".into()))?,
    };
    Ok(Command::ReplayJobs {
        filter: ReplayFilter {
            job_type,
            text: text_field(map, "text")?,
            error_contains: text_field(map, "error_contains")?,
            since: time_field(map, "since")?,
            until: time_field(map, "until")?,
            ids,
        },
        limit,
        dry_run: optional_bool(map, "dry_run")?.unwrap_or(false),
    })
}

/// The body of `jobs/replay`: `ids`, or a filter; unknown fields are refused.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ReplayBody {
    job_type: Option<String>,
    /// A substring of the summary, dedupe key or job id (any case).
    text: Option<String>,
    error_contains: Option<String>,
    /// Finished at or after: Unix ms or RFC 3339.
    #[schema(value_type = Option<Value>)]
    since: Option<String>,
    /// Finished before: Unix ms or RFC 3339.
    #[schema(value_type = Option<Value>)]
    until: Option<String>,
    /// Job ids to replay instead of a filter.
    ids: Option<Vec<String>>,
    /// At most `--replay-max`.
    limit: Option<u64>,
    /// Report what would be replayed, replay nothing.
    dry_run: Option<bool>,
}

/// `POST jobs/replay`: each eligible dead letter becomes a new job.
#[utoipa::path(post, path = "/api/plugin/jobs/replay", tag = "jobs", request_body = ReplayBody,
    responses(
        (status = 200, description = "what matched, what was replayed and why the rest was not", body = ReplayReport),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 403, description = "the caller's role may not, or the approval token is missing or wrong", body = ErrorBody),
        (status = 422, description = "over the replay limit", body = ErrorBody),
    ))]
async fn replay(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<ReplayReport>, ApiError> {
    let command = replay_command(&json_body(&body)?)?;
    match state.execute(&caller, command).await? {
        Outcome::Replay(report) => Ok(Json(*report)),
        _ => Err(ApiError::Internal("replay_jobs gave another outcome".into())),
    }
}

/// A job given by hand: the proto JSON of a `JobProposal`, with `priority` also as a
/// plain name (`low`, `normal`, `high`, `critical`) and `not_before`/`expires_at` also as
/// Unix ms.
pub fn parse_new_job(value: Value) -> Result<pb::JobProposal, ApiError> {
    let Value::Object(mut map) = value else { return Err(ApiError::BadRequest("body must be a JSON object".into())) };
    let priority = match map.remove("priority") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(parse_priority(&p)?),
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .filter(|n| (1..=4).contains(n))
                .map(|n| n as i32)
                .ok_or_else(|| ApiError::Unprocessable(format!("priority {n} is not 1 to 4")))?,
        ),
        Some(_) => return Err(ApiError::Unprocessable("priority must be low, normal, high or critical".into())),
    };
    let not_before = time_field(&map, "not_before")?;
    let expires_at = time_field(&map, "expires_at")?;
    map.remove("not_before");
    map.remove("expires_at");
    let mut proposal: pb::JobProposal = proto::json::from_value(Value::Object(map))
        .map_err(|e| ApiError::Unprocessable(format!("the job is not valid: {e}")))?;
    if let Some(p) = priority {
        proposal.priority = p;
    }
    proposal.not_before = not_before.map(crate::job::ms_to_timestamp);
    proposal.expires_at = expires_at.map(crate::job::ms_to_timestamp);
    Ok(proposal)
}

fn parse_priority(p: &str) -> Result<i32, ApiError> {
    let lower = p.trim().to_ascii_lowercase();
    Ok(match lower.strip_prefix("job_priority_").unwrap_or(&lower) {
        "low" => pb::JobPriority::Low as i32,
        "normal" | "" => pb::JobPriority::Normal as i32,
        "high" => pb::JobPriority::High as i32,
        "critical" => pb::JobPriority::Critical as i32,
        _ => return Err(ApiError::Unprocessable(format!("priority {p:?} is not low, normal, high or critical"))),
    })
}

/// The body of `POST job-types/{t}/jobs`: a `JobProposal` in proto JSON, with
/// `priority` also as a plain name and the times also as Unix ms.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NewJobBody {
    /// Proto JSON `ConfigValue`s by name.
    parameters: Option<std::collections::HashMap<String, Value>>,
    summary: Option<String>,
    detail: Option<String>,
    labels: Option<std::collections::HashMap<String, String>>,
    dedupe_key: Option<String>,
    /// `low`, `normal`, `high`, `critical` (or 1 to 4).
    #[schema(value_type = Option<Value>)]
    priority: Option<String>,
    /// Unix ms or RFC 3339.
    #[schema(value_type = Option<Value>)]
    not_before: Option<String>,
    /// Unix ms or RFC 3339.
    #[schema(value_type = Option<Value>)]
    expires_at: Option<String>,
}

/// `POST job-types/{t}/jobs`: one job by hand.
#[utoipa::path(post, path = "/api/plugin/job-types/{t}/jobs", tag = "jobs", params(("t" = String, Path, description = "a job type (letters, digits, `_`, `.`, `-`)")),
    request_body = NewJobBody,
    responses(
        (status = 201, description = "the new job", body = JobAnswer),
        (status = 400, description = "not JSON, or a bad job type name", body = ErrorBody),
        (status = 403, description = "the caller's role may not (operator scripts and a cluster context need the admin role)", body = ErrorBody),
        (status = 404, description = "no such job type", body = ErrorBody),
        (status = 409, description = "an active job has the same dedupe key (`job_id`)", body = ErrorBody),
        (status = 422, description = "the job is not valid", body = ErrorBody),
    ))]
async fn enqueue(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    job_type_param(&t)?;
    let proposal = parse_new_job(json_body(&body)?)?;
    match state.execute(&caller, Command::EnqueueJob { job_type: t, proposal, cluster_context: None }).await? {
        Outcome::Job(view) => Ok((StatusCode::CREATED, Json(JobAnswer::of(&view))).into_response()),
        _ => Err(ApiError::Internal("enqueue_job gave another outcome".into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(reason: &str, params: Value) -> AuditEvent {
        AuditEvent {
            id: 7,
            at: 1_700_000_000_000,
            actor: "ops".into(),
            actor_kind: "token".into(),
            action: "cancel_job".into(),
            target: "j3".into(),
            params,
            outcome: "refused".into(),
            reason: reason.into(),
            request_id: "r-1".into(),
        }
    }

    #[test]
    fn csv_rows_quote_what_needs_quoting() {
        let row = csv_row(&event("plain", json!({})));
        assert_eq!(row, "7,1700000000000,ops,token,cancel_job,j3,{},refused,plain,r-1\r\n");
        let row = csv_row(&event("say \"no\", twice\nplease", json!({ "reason": "a,b" })));
        assert_eq!(
            row,
            "7,1700000000000,ops,token,cancel_job,j3,\"{\"\"reason\"\":\"\"a,b\"\"}\",refused,\"say \"\"no\"\", twice\nplease\",r-1\r\n"
        );
    }

    #[test]
    fn a_hand_made_job_takes_plain_priorities_and_times_and_refuses_bad_values() {
        let p = parse_new_job(json!({
            "parameters": { "path": { "string_value": "/a" } },
            "summary": "s",
            "dedupe_key": "k",
            "priority": "high",
            "not_before": "2026-01-02T03:04:05Z",
        }))
        .unwrap();
        assert_eq!(p.priority, pb::JobPriority::High as i32);
        assert_eq!(p.not_before.unwrap().seconds, 1_767_323_045);
        assert_eq!(p.dedupe_key, "k");
        assert!(p.parameters.contains_key("path"));
        let bad = parse_new_job(json!({ "parameters": { "path": 3 } })).unwrap_err();
        assert!(matches!(bad, ApiError::Unprocessable(_)), "{bad:?}");
        assert!(matches!(parse_new_job(json!({ "priority": "urgent" })), Err(ApiError::Unprocessable(_))));
        assert!(matches!(parse_new_job(json!({ "nonsense": 1 })), Err(ApiError::Unprocessable(_))));
    }

    #[test]
    fn replay_bodies_parse_ids_filters_and_refuse_unknown_fields() {
        let Command::ReplayJobs { filter, limit, dry_run } =
            replay_command(&json!({ "ids": ["j3", "j9"], "limit": 5, "dry_run": true })).unwrap()
        else {
            panic!("not a replay")
        };
        assert_eq!(filter.ids, vec![3, 9]);
        assert_eq!((limit, dry_run), (5, true));
        let Command::ReplayJobs { filter, .. } =
            replay_command(&json!({ "job_type": "t", "error_contains": "boom", "since": 5 })).unwrap()
        else {
            panic!("not a replay")
        };
        assert_eq!(filter.job_type.as_deref(), Some("t"));
        assert_eq!(filter.since, Some(5));
        assert!(replay_command(&json!({ "ids": ["x"] })).is_err());
        assert!(replay_command(&json!({ "limit": 0 })).is_err());
        assert!(replay_command(&json!({ "jobtype": "t" })).is_err());
    }
}
