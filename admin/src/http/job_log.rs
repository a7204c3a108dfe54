//! A job's log as text (`job_log.rs`): `GET jobs/{id}/log`, an attachment of type
//! `text/plain` named `<id>.log`: its newest lines (at most [`job_log::DOWNLOAD`]) oldest
//! first, each with its UTC time and stream (stdout, stderr, worker, admin), under a
//! header that says when older lines were left out.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState, api::job_seq, openapi::ErrorBody, routes::Routes};
use crate::job_log::{self, JobLog};

pub fn routes() -> Routes {
    Routes::new().get("/jobs/{id}/log", download)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(download))]
pub(super) struct Doc;

#[utoipa::path(get, path = "/api/plugin/jobs/{id}/log", tag = "jobs",
    params(("id" = String, Path, description = "a job id")),
    responses(
        (status = 200, description = "the job's log as text, oldest line first", content_type = "text/plain", body = String),
        (status = 404, description = "no such job", body = ErrorBody),
    ))]
async fn download(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let seq = job_seq(&id)?;
    let job = state.dispatcher.job(seq).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    // `id` parsed as a job id: `j` and digits, so the file name needs no quoting.
    let id = job.id();
    state.store.settle().await;
    let store = state.store.clone();
    let (log_id, job_type) = (id.clone(), job.spec.job_type.clone());
    let text = tokio::task::spawn_blocking(move || {
        JobLog::read(&store, &log_id, job_log::DOWNLOAD).map(|log| log.to_text(&log_id, &job_type))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{id}.log\"")),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        text,
    )
        .into_response())
}
