//! The routes Plughost adds because SeaweedFS's admin has them: `GET lanes`,
//! `GET scheduler-status` and `POST jobs/execute`. Their answers have SeaweedFS's shapes
//! (`shapes.rs`); what Plughost does differently is said beside each handler.

use axum::{Json, extract::State};
use proto::pb::JobState;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::IntoParams;

use super::{ApiError, ApiQuery, AppState, openapi::ErrorBody, routes::Routes, schemas, shapes};
use crate::store::JobQuery;

pub fn routes() -> Routes {
    Routes::new()
        .get("/lanes", lanes)
        .get("/scheduler-status", scheduler_status)
        .post("/jobs/execute", super::detection::execute)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(lanes, scheduler_status, super::detection::execute))]
pub(super) struct Doc;

/// How often the scheduler looks at every job type at the least: it never sleeps longer.
const SCHEDULER_TICK_SECONDS: i64 = 1;

/// At most this many active jobs in `in_process_jobs`.
const MAX_IN_PROCESS: usize = 1000;

/// `GET lanes`: a bare array of SeaweedFS's lanes (`lane`, `idle_sleep_sec`, `job_types`,
/// `status`). Plughost schedules each job type on its own timer, so a lane never waits
/// for another and never sleeps longer than the scheduler's tick.
#[utoipa::path(get, path = "/api/plugin/lanes", tag = "seaweedfs",
    responses((status = 200, description = "SeaweedFS's lanes and their status", body = Vec<schemas::SchedulerLane>)))]
async fn lanes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let known = state.configs.job_types();
    let mut out = Vec::with_capacity(shapes::LANES.len());
    for lane in shapes::LANES {
        out.push(json!({
            "lane": lane,
            "idle_sleep_sec": SCHEDULER_TICK_SECONDS,
            "job_types": shapes::lane_job_types(lane, &known),
            "status": status(&state, Some(lane)).await?,
        }));
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct LaneQuery {
    /// `default`, `iceberg`, `lifecycle` or `lance`; absent: all.
    lane: Option<String>,
}

/// `GET scheduler-status[?lane=]`: `{enabled, scheduler}` as SeaweedFS answers (it adds
/// `lock` when it runs under a cluster lock; Plughost has none).
#[utoipa::path(get, path = "/api/plugin/scheduler-status", tag = "seaweedfs", params(LaneQuery),
    responses(
        (status = 200, description = "the scheduler's status", body = schemas::SchedulerStatusAnswer),
        (status = 400, description = "an unknown lane", body = ErrorBody),
    ))]
async fn scheduler_status(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LaneQuery>,
) -> Result<Json<Value>, ApiError> {
    let lane = shapes::parse_lane(q.lane.as_deref()).map_err(ApiError::BadRequest)?;
    Ok(Json(json!({ "enabled": true, "scheduler": status(&state, lane).await? })))
}

/// SeaweedFS's `SchedulerStatus` for one lane or all: `now`, `lane`,
/// `scheduler_tick_seconds`, `idle_sleep_seconds`, `next_detection_at`,
/// `current_job_type`, `current_phase` (`detecting` while a detection runs, else
/// `idle`), `waiting`, `in_process_jobs` and `job_types`.
async fn status(state: &AppState, lane: Option<&'static str>) -> Result<Value, ApiError> {
    let now = crate::job::now_ms();
    let states: Vec<_> =
        state.scheduler.scheduler_states().into_iter().filter(|s| shapes::in_lane(&s.job_type, lane)).collect();
    let mut o = Map::new();
    o.insert("now".into(), json!(shapes::time(now)));
    if let Some(lane) = lane {
        o.insert("lane".into(), json!(lane));
    }
    o.insert("scheduler_tick_seconds".into(), json!(SCHEDULER_TICK_SECONDS));
    o.insert("idle_sleep_seconds".into(), json!(SCHEDULER_TICK_SECONDS));
    let next = states.iter().filter(|s| s.enabled && s.next_detection_at > 0).map(|s| s.next_detection_at).min();
    if let Some(at) = next.and_then(shapes::time) {
        o.insert("next_detection_at".into(), json!(at));
    }
    match states.iter().find(|s| s.detection_running) {
        Some(s) => {
            o.insert("current_job_type".into(), json!(s.job_type));
            o.insert("current_phase".into(), json!("detecting"));
        }
        None => {
            o.insert("current_phase".into(), json!("idle"));
        }
    }
    let waiting: Vec<Value> = states
        .iter()
        .filter_map(|s| {
            if s.detection_running {
                Some(json!({ "reason": "detection_in_flight", "job_type": s.job_type }))
            } else if s.enabled && s.next_detection_at > now {
                Some(json!({ "reason": "next_detection_at", "job_type": s.job_type, "until": shapes::time(s.next_detection_at) }))
            } else {
                None
            }
        })
        .collect();
    if !waiting.is_empty() {
        o.insert("waiting".into(), Value::Array(waiting));
    }
    let in_process = in_process_jobs(state, lane, now).await?;
    if !in_process.is_empty() {
        o.insert("in_process_jobs".into(), Value::Array(in_process));
    }
    if !states.is_empty() {
        o.insert("job_types".into(), Value::Array(states.iter().map(shapes::scheduler_job_type_status).collect()));
    }
    Ok(Value::Object(o))
}

/// The active jobs (pending, assigned, running) of a lane as SeaweedFS's
/// `SchedulerJobStatus`, the longest-running first.
async fn in_process_jobs(state: &AppState, lane: Option<&str>, now: i64) -> Result<Vec<Value>, ApiError> {
    state.store.settle().await;
    let mut jobs = Vec::new();
    for s in [JobState::Running, JobState::Assigned, JobState::Pending] {
        let query = JobQuery { state: Some(s), limit: MAX_IN_PROCESS, ..Default::default() };
        let found = state.dispatcher.list_jobs(&query)?;
        jobs.extend(found.into_iter().filter(|j| shapes::in_lane(&j.job_type, lane)));
    }
    jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.job_id.cmp(&b.job_id)));
    jobs.truncate(MAX_IN_PROCESS);
    Ok(jobs
        .iter()
        .map(|j| {
            let mut o = Map::new();
            o.insert("job_id".into(), json!(j.job_id));
            o.insert("job_type".into(), json!(j.job_type));
            o.insert("state".into(), json!(shapes::state(j.state)));
            for (key, text) in [("stage", &j.stage), ("worker_id", &j.worker_id), ("message", &j.message)] {
                if !text.is_empty() {
                    o.insert(key.into(), json!(text));
                }
            }
            o.insert("progress".into(), json!(j.progress_percent));
            for (key, ms) in [("created_at", j.created_at), ("updated_at", j.updated_at)] {
                if let Some(t) = shapes::time(ms) {
                    o.insert(key.into(), json!(t));
                }
            }
            o.insert("duration_seconds".into(), json!((now - j.created_at).max(0) as f64 / 1000.0));
            Value::Object(o)
        })
        .collect())
}
