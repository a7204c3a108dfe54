//! The artifacts of a job (`artifacts.rs`), listed and downloaded:
//! `GET jobs/{id}/artifacts` and `GET jobs/{id}/artifacts/{name}`. A download is always
//! an attachment of type `application/octet-stream` that the browser must not sniff or
//! run; its `filename` is the artifact's name, which holds only letters, digits, `.`,
//! `_` and `-`, so it needs no quoting.

use axum::{
    Json,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, openapi::ErrorBody, routes::Routes};
use crate::job::parse_job_id;

pub fn routes() -> Routes {
    Routes::new().get("/jobs/{id}/artifacts", list).get("/jobs/{id}/artifacts/{name}", download)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, download))]
pub(super) struct Doc;

#[derive(Serialize, ToSchema)]
struct Artifacts {
    job_id: String,
    artifacts: Vec<Artifact>,
}

#[derive(Serialize, ToSchema)]
struct Artifact {
    name: String,
    size_bytes: u64,
    created_at_ms: i64,
    /// Where to download it.
    url: String,
}

fn known_job(state: &AppState, id: &str) -> Result<(), ApiError> {
    let seq = parse_job_id(id).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    state.dispatcher.job(seq).map(|_| ()).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))
}

/// The artifacts kept for the job's current attempt.
#[utoipa::path(get, path = "/api/plugin/jobs/{id}/artifacts", tag = "jobs",
    params(("id" = String, Path, description = "a job id")),
    responses(
        (status = 200, description = "the job's artifacts", body = Artifacts),
        (status = 404, description = "no such job", body = ErrorBody),
    ))]
async fn list(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Artifacts>, ApiError> {
    known_job(&state, &id)?;
    let artifacts = state.artifacts.clone();
    let job_id = id.clone();
    let list = tokio::task::spawn_blocking(move || artifacts.list(&job_id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let artifacts = list
        .iter()
        .map(|a| Artifact {
            name: a.name.clone(),
            size_bytes: a.size_bytes,
            created_at_ms: a.created_at_ms,
            url: format!("/api/plugin/jobs/{id}/artifacts/{}", a.name),
        })
        .collect();
    Ok(Json(Artifacts { job_id: id, artifacts }))
}

/// One artifact, as an attachment.
#[utoipa::path(get, path = "/api/plugin/jobs/{id}/artifacts/{name}", tag = "jobs",
    params(("id" = String, Path, description = "a job id"), ("name" = String, Path, description = "the artifact's name")),
    responses(
        (status = 200, description = "the artifact's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "no such job or artifact", body = ErrorBody),
    ))]
async fn download(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    known_job(&state, &id)?;
    let missing = || ApiError::NotFound(format!("job {id} has no artifact {}", crate::input::shown(&name)));
    let path = state.artifacts.path(&id, &name).ok_or_else(missing)?;
    let data = tokio::fs::read(&path).await.map_err(|_| missing())?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        data,
    )
        .into_response())
}
