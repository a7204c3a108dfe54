//! The artifacts of a job (`artifacts.rs`), listed and downloaded:
//! `GET jobs/{id}/artifacts` and `GET jobs/{id}/artifacts/{name}`. A download is always
//! an attachment of type `application/octet-stream` that the browser must not sniff or
//! run; its `filename` is the artifact's name, which holds only letters, digits, `.`,
//! `_` and `-`, so it needs no quoting.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::job::parse_job_id;

pub fn router() -> Router<AppState> {
    Router::new().route("/jobs/{id}/artifacts", get(list)).route("/jobs/{id}/artifacts/{name}", get(download))
}

fn known_job(state: &AppState, id: &str) -> Result<(), ApiError> {
    let seq = parse_job_id(id).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    state.dispatcher.job(seq).map(|_| ()).ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))
}

async fn list(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    known_job(&state, &id)?;
    let artifacts = state.artifacts.clone();
    let job_id = id.clone();
    let list = tokio::task::spawn_blocking(move || artifacts.list(&job_id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let items: Vec<Value> = list
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "size_bytes": a.size_bytes,
                "created_at_ms": a.created_at_ms,
                "url": format!("/api/plugin/jobs/{id}/artifacts/{}", a.name),
            })
        })
        .collect();
    Ok(Json(json!({ "job_id": id, "artifacts": items })))
}

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
