//! `ApiError`: how handlers fail. It shows the user a clear message (and per-field errors
//! for invalid config) as JSON, and keeps internals in the log.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::openapi::ErrorBody;
use crate::validator::FieldError;

/// The error of an invalid config; which fields are wrong and why travel beside it
/// (`field_errors`, and `google.rpc.BadRequest` details in the gRPC admin API).
pub const INVALID_CONFIG: &str = "config is invalid";

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Invalid(Vec<FieldError>),
    Unavailable(String),
    Forbidden(String),
    /// Well formed, but cannot be carried out as asked (422).
    Unprocessable(String),
    /// A conflict with an existing job, named in the body's `job_id`.
    ConflictWithJob {
        message: String,
        job_id: String,
    },
    /// Over a rate cap; retry after this many seconds (429).
    TooMany {
        message: String,
        retry_after_secs: u64,
    },
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = |status: StatusCode, m: String| (status, ErrorBody::new(m));
        let (status, body) = match self {
            ApiError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => error(StatusCode::CONFLICT, m),
            ApiError::Invalid(fields) => (
                StatusCode::BAD_REQUEST,
                ErrorBody { field_errors: Some(fields), ..ErrorBody::new(INVALID_CONFIG.into()) },
            ),
            ApiError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Forbidden(m) => error(StatusCode::FORBIDDEN, m),
            ApiError::Unprocessable(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::ConflictWithJob { message, job_id } => {
                (StatusCode::CONFLICT, ErrorBody { job_id: Some(job_id), ..ErrorBody::new(message) })
            }
            ApiError::TooMany { message, retry_after_secs } => {
                let retry = retry_after_secs.to_string();
                let body = Json(ErrorBody { retry_after_seconds: Some(retry_after_secs), ..ErrorBody::new(message) });
                return (StatusCode::TOO_MANY_REQUESTS, [(axum::http::header::RETRY_AFTER, retry)], body)
                    .into_response();
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error in an HTTP handler");
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the admin's log".into())
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::dispatcher::JobActionError> for ApiError {
    fn from(e: crate::dispatcher::JobActionError) -> Self {
        use crate::dispatcher::JobActionError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Conflict { .. } | E::Duplicate { .. } => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<crate::config_store::ConfigStoreError> for ApiError {
    fn from(e: crate::config_store::ConfigStoreError) -> Self {
        use crate::config_store::ConfigStoreError as E;
        match e {
            E::Invalid(fields) => ApiError::Invalid(fields),
            E::InvalidJobType(_) => ApiError::BadRequest(e.to_string()),
            E::UnknownJobType(_) => ApiError::NotFound(e.to_string()),
            // Another admin leads now: nothing was saved, and this one is stepping down.
            _ if e.is_fenced() => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::commands::Refusal> for ApiError {
    fn from(e: crate::commands::Refusal) -> Self {
        use crate::{commands::Refusal as R, scheduler::DetectError, schema::SchemaError};
        match e {
            R::Config(e) => e.into(),
            R::Job(e) => e.into(),
            R::Schema(SchemaError::Worker { .. }) => ApiError::Conflict(e.to_string()),
            R::Schema(SchemaError::Store(m)) => ApiError::Internal(m),
            R::Schema(_) => ApiError::Unavailable(e.to_string()),
            R::Detect(DetectError::UnknownJobType(_)) => ApiError::NotFound(e.to_string()),
            R::Detect(_) => ApiError::Unavailable(e.to_string()),
            R::NotConnected(_) => ApiError::NotFound(e.to_string()),
            R::Forbidden { .. } => ApiError::Forbidden(e.to_string()),
            R::Token(crate::auth::TokenError::NotFound(_)) => ApiError::NotFound(e.to_string()),
            R::Token(crate::auth::TokenError::File { .. }) => ApiError::Internal(e.to_string()),
            R::Token(crate::auth::TokenError::Exists(_)) => ApiError::Conflict(e.to_string()),
            R::Token(_) => ApiError::BadRequest(e.to_string()),
            R::Schedule(_) | R::Invalid(_) => ApiError::Unprocessable(e.to_string()),
            R::Preview(crate::observations::PreviewError::NoWorker(_)) => ApiError::Unavailable(e.to_string()),
            R::Preview(crate::observations::PreviewError::Failed { .. }) => ApiError::Unprocessable(e.to_string()),
            R::Preview(_) => ApiError::Unavailable(e.to_string()),
            R::ApprovalRequired { .. } | R::ApprovalWrong { .. } => ApiError::Forbidden(e.to_string()),
            R::RateLimited { retry_after_secs, .. } => ApiError::TooMany { message: e.to_string(), retry_after_secs },
            R::Held(_) | R::NeedsConfiguration { .. } => ApiError::Conflict(e.to_string()),
            R::UnknownJobType(_) | R::NoSchedule(_) => ApiError::NotFound(e.to_string()),
            R::Duplicate { ref job_id } => ApiError::ConflictWithJob { job_id: job_id.clone(), message: e.to_string() },
            R::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// `Query<T>` whose rejection is an [`ApiError`] (JSON, like every other API error) rather
/// than axum's plain-text 400.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(q)) => Ok(ApiQuery(q)),
            Err(e) => Err(ApiError::BadRequest(format!("query string: {}", e.body_text()))),
        }
    }
}
