//! Messages the admin sends to workers, built in one place.

use proto::pb::{self, admin_to_worker_message::Body};

/// Wraps a request body in the admin's envelope.
pub fn envelope(request_id: &str, body: Body) -> pb::AdminToWorkerMessage {
    pb::AdminToWorkerMessage { request_id: request_id.to_string(), sent_at: Some(proto::now()), body: Some(body) }
}

/// A cancel for an execution or a detection. The envelope gets its own request id, so
/// the worker's reply to the cancel can never be mistaken for a reply to the work.
pub fn cancel(
    cancel_request_id: &str,
    kind: pb::WorkKind,
    target_request_id: &str,
    reason: &str,
) -> pb::AdminToWorkerMessage {
    envelope(
        cancel_request_id,
        Body::CancelRequest(pb::CancelRequest {
            target_id: target_request_id.to_string(),
            target_kind: kind as i32,
            reason: reason.to_string(),
            force: false,
        }),
    )
}
