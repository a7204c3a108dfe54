//! The charts' series as JSON (`trends.rs`): `GET job-types/{t}/series?window=1h|24h`
//! for one job type and `GET series?window=1h|24h` for all of them together. Each is
//! the window's buckets, oldest first (1 minute over the last hour, 15 minutes over the
//! last day), with the jobs that finished in each, the wait and run percentiles, and the
//! sampled queue depth and slot use; a bad `window` is a 400, an unknown job type a 404.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiQuery, AppState, api::job_type_param, openapi::ErrorBody, routes::Routes};
use crate::trends::{Series, Window};

pub fn routes() -> Routes {
    Routes::new().get("/series", overall).get("/job-types/{t}/series", job_type)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(overall, job_type))]
pub(super) struct Doc;

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesQuery {
    /// `1h` (the default: 1-minute buckets) or `24h` (15-minute buckets).
    window: Option<String>,
}

/// `1h` (the default) or `24h`.
pub(crate) fn window_param(window: Option<&str>) -> Result<Window, ApiError> {
    match window.map(str::trim).filter(|w| !w.is_empty()) {
        None => Ok(Window::Hour),
        Some(w) => Window::parse(w)
            .ok_or_else(|| ApiError::BadRequest(format!("window must be 1h or 24h, not {}", crate::input::shown(w)))),
    }
}

/// Whether the admin knows the job type: stored, or offered by a connected worker.
pub(crate) fn is_known_job_type(state: &AppState, t: &str) -> bool {
    state.configs.entry(t).is_some() || state.registry.job_types().contains_key(t)
}

/// A series with the gauges sampled just now.
pub(crate) fn series(state: &AppState, job_type: Option<&str>, window: Window) -> Series {
    state.trends.sample(&state.dispatcher, &state.registry);
    state.trends.series(job_type, window)
}

/// Every job type's trends together.
#[utoipa::path(get, path = "/api/plugin/series", tag = "status", params(SeriesQuery),
    responses(
        (status = 200, description = "the window's buckets, oldest first, and their totals", body = Series),
        (status = 400, description = "a window other than 1h or 24h", body = ErrorBody),
    ))]
async fn overall(State(state): State<AppState>, ApiQuery(q): ApiQuery<SeriesQuery>) -> Result<Json<Series>, ApiError> {
    let window = window_param(q.window.as_deref())?;
    Ok(Json(series(&state, None, window)))
}

/// One job type's trends.
#[utoipa::path(get, path = "/api/plugin/job-types/{t}/series", tag = "config",
    params(("t" = String, Path, description = "a job type"), SeriesQuery),
    responses(
        (status = 200, description = "the window's buckets, oldest first, and their totals", body = Series),
        (status = 400, description = "a window other than 1h or 24h, or a malformed job type", body = ErrorBody),
        (status = 404, description = "a job type the admin does not know", body = ErrorBody),
    ))]
async fn job_type(
    State(state): State<AppState>,
    Path(t): Path<String>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<Series>, ApiError> {
    job_type_param(&t)?;
    let window = window_param(q.window.as_deref())?;
    if !is_known_job_type(&state, &t) {
        return Err(ApiError::NotFound(format!("no job type {t:?}")));
    }
    Ok(Json(series(&state, Some(&t), window)))
}
