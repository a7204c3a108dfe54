//! Refusals as gRPC statuses. The admin API checks requests with the JSON API's own
//! functions and gets the command layer's refusals through the same [`ApiError`], so a
//! refusal has the same message on both; here only the code is chosen. An invalid config
//! also carries `google.rpc.BadRequest` details, one violation per field, as the JSON
//! answer carries `field_errors`.

use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

use crate::http::ApiError;

/// The metadata that names the active job a refused enqueue collided with.
pub const JOB_ID: &str = "x-plughost-job-id";

/// The code and message of a refusal, with its details.
pub fn status(e: ApiError) -> Status {
    match e {
        ApiError::BadRequest(m) | ApiError::Unprocessable(m) => Status::invalid_argument(m),
        ApiError::NotFound(m) => Status::not_found(m),
        ApiError::Conflict(m) => Status::failed_precondition(m),
        ApiError::Invalid(fields) => {
            let mut details = ErrorDetails::new();
            for f in &fields {
                details.add_bad_request_violation(f.field.clone(), f.message.clone());
            }
            Status::with_error_details(Code::InvalidArgument, crate::http::INVALID_CONFIG, details)
        }
        ApiError::Unavailable(m) => Status::unavailable(m),
        ApiError::Forbidden(m) => Status::permission_denied(m),
        ApiError::ConflictWithJob { message, job_id } => {
            let mut status = Status::already_exists(message);
            if let Ok(v) = MetadataValue::try_from(job_id.as_str()) {
                status.metadata_mut().insert(JOB_ID, v);
            }
            status
        }
        ApiError::TooMany { message, retry_after_secs } => {
            let mut status = Status::resource_exhausted(message);
            status.metadata_mut().insert("retry-after", MetadataValue::from(retry_after_secs));
            status
        }
        ApiError::Internal(m) => {
            tracing::error!(error = %m, "internal error in the gRPC admin API");
            Status::internal("internal error; see the admin's log")
        }
    }
}

/// A refusal of the command layer, through the JSON API's classification.
pub fn refusal(e: crate::commands::Refusal) -> Status {
    status(ApiError::from(e))
}

/// A request field over its bound: refused before anything reads it.
pub fn too_long(field: &str, max: usize) -> Status {
    Status::invalid_argument(format!("{field} is over {max} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validator::FieldError;

    #[test]
    fn refusals_keep_their_message_and_get_their_code() {
        let s = status(ApiError::NotFound("no job \"j9\"".into()));
        assert_eq!((s.code(), s.message()), (Code::NotFound, "no job \"j9\""));
        assert_eq!(status(ApiError::Conflict("x".into())).code(), Code::FailedPrecondition);
        assert_eq!(status(ApiError::Forbidden("x".into())).code(), Code::PermissionDenied);
        let s = status(ApiError::TooMany { message: "capped".into(), retry_after_secs: 7 });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get("retry-after").unwrap(), "7");
        let s = status(ApiError::ConflictWithJob { message: "dup".into(), job_id: "j4".into() });
        assert_eq!((s.code(), s.metadata().get(JOB_ID).unwrap().to_str().unwrap()), (Code::AlreadyExists, "j4"));
        let s = status(ApiError::Internal("disk on fire".into()));
        assert!(!s.message().contains("disk"), "internals stay in the log");
    }

    #[test]
    fn an_invalid_config_names_each_field_in_the_details() {
        let s = status(ApiError::Invalid(vec![FieldError::new("admin.threshold", "must be at most 100")]));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "config is invalid"));
        let bad = s.get_details_bad_request().expect("BadRequest details");
        assert_eq!(bad.field_violations[0].field, "admin.threshold");
        assert_eq!(bad.field_violations[0].description, "must be at most 100");
    }
}
