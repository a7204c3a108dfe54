//! Turns each admin request into its replies: an `acknowledge` for every request, the
//! final message at once when the request is refused (unknown job type, at capacity,
//! shutting down), or a spawned detection/execution task when it is taken.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use crate::{
    pb::{self, admin_to_worker_message::Body as Request},
    shared::{Body, Shared},
    slots::SlotKind,
    tracker::Work,
};

/// What the session must do beyond sending the replies.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    Continue,
    Shutdown { reason: String, grace: Duration },
}

/// Handles one admin message, pushing the replies to send at once onto `replies`.
pub(crate) fn dispatch(shared: &Arc<Shared>, message: pb::AdminToWorkerMessage, replies: &mut Vec<Body>) -> Action {
    let id = message.request_id;
    match message.body {
        None => refuse(replies, &id, "request has no body".to_string(), None),
        Some(Request::Hello(_)) => tracing::debug!("ignoring a repeated AdminHello"),
        Some(Request::RequestConfigSchema(r)) => schema(shared, &id, r, replies),
        Some(Request::RunDetectionRequest(r)) => detection(shared, &id, r, replies),
        Some(Request::ExecuteJobRequest(r)) => execution(shared, &id, r, replies),
        Some(Request::CancelRequest(r)) => cancel(shared, &id, r, replies),
        Some(Request::Shutdown(r)) => {
            replies.push(ack(&id, true, "shutting down"));
            let grace = Duration::from_secs(u64::try_from(r.grace_period_seconds).unwrap_or(0));
            return Action::Shutdown { reason: r.reason, grace };
        }
        Some(Request::RequestObjectPreview(_)) => {
            let message = "object previews are not supported by this worker".to_string();
            let reply = Body::ObjectPreviewResponse(pb::ObjectPreviewResponse {
                request_id: id.clone(),
                success: false,
                error_message: message.clone(),
                ..Default::default()
            });
            refuse(replies, &id, message, Some(reply));
        }
    }
    Action::Continue
}

fn ack(request_id: &str, accepted: bool, message: &str) -> Body {
    Body::Acknowledge(pb::WorkerAcknowledge {
        request_id: request_id.to_string(),
        accepted,
        message: message.to_string(),
    })
}

/// A refused request: a negative acknowledgement, then its final reply (if it has one).
fn refuse(replies: &mut Vec<Body>, request_id: &str, message: String, final_reply: Option<Body>) {
    tracing::warn!(request_id, reason = %message, "refused an admin request");
    replies.push(ack(request_id, false, &message));
    replies.extend(final_reply);
}

fn schema(shared: &Shared, id: &str, r: pb::RequestConfigSchema, replies: &mut Vec<Body>) {
    let response = |success: bool, error_message: String, job_type_descriptor| {
        Body::ConfigSchemaResponse(pb::ConfigSchemaResponse {
            request_id: id.to_string(),
            job_type: r.job_type.clone(),
            success,
            error_message,
            job_type_descriptor,
        })
    };
    let Some((handler, _)) = shared.handler(&r.job_type) else {
        let message = format!("unknown job type {}", r.job_type);
        return refuse(replies, id, message.clone(), Some(response(false, message, None)));
    };
    // A panicking descriptor() is a plugin bug; the admin still gets an answer.
    match std::panic::catch_unwind(AssertUnwindSafe(|| handler.descriptor())) {
        Ok(mut descriptor) => {
            if descriptor.job_type.is_empty() {
                descriptor.job_type = r.job_type.clone();
            }
            replies.push(ack(id, true, ""));
            replies.push(response(true, String::new(), Some(descriptor)));
        }
        Err(_) => {
            let message = format!("descriptor of job type {} panicked", r.job_type);
            refuse(replies, id, message.clone(), Some(response(false, message, None)));
        }
    }
}

fn detection(shared: &Arc<Shared>, id: &str, mut r: pb::RunDetectionRequest, replies: &mut Vec<Body>) {
    let id = if id.is_empty() { r.request_id.clone() } else { id.to_string() };
    r.request_id = id.clone();
    let complete = |message: &str| {
        Some(Body::DetectionComplete(pb::DetectionComplete {
            request_id: id.clone(),
            job_type: r.job_type.clone(),
            success: false,
            error_message: message.to_string(),
            total_proposals: 0,
        }))
    };
    let refusal = check(shared, &r.job_type, SlotKind::Detection);
    let (handler, slot) = match refusal {
        Ok(taken) => taken,
        Err(message) => return refuse(replies, &id, message.clone(), complete(&message)),
    };
    let work = Work::new(&id, pb::WorkKind::Detection, &r.job_type, "");
    if !shared.tracker.insert(work.clone()) {
        // The first request with this id is running and will send the final reply.
        return refuse(replies, &id, format!("request {id} is already running"), None);
    }
    tracing::info!(request_id = %id, job_type = %r.job_type, "detection started");
    replies.push(ack(&id, true, "detection started"));
    tokio::spawn(crate::detection::run(shared.clone(), handler, work, r, slot));
}

fn execution(shared: &Arc<Shared>, id: &str, mut r: pb::ExecuteJobRequest, replies: &mut Vec<Body>) {
    let id = if id.is_empty() { r.request_id.clone() } else { id.to_string() };
    r.request_id = id.clone();
    let (job_id, job_type) = r.job.as_ref().map(|j| (j.job_id.clone(), j.job_type.clone())).unwrap_or_default();
    let completed = |message: &str| {
        Some(Body::JobCompleted(pb::JobCompleted {
            request_id: id.clone(),
            job_id: job_id.clone(),
            job_type: job_type.clone(),
            success: false,
            error_message: message.to_string(),
            completed_at: Some(proto::now()),
            ..Default::default()
        }))
    };
    if r.job.is_none() {
        let message = "execute request has no job".to_string();
        return refuse(replies, &id, message.clone(), completed(&message));
    }
    let (handler, slot) = match check(shared, &job_type, SlotKind::Execution) {
        Ok(taken) => taken,
        Err(message) => return refuse(replies, &id, message.clone(), completed(&message)),
    };
    let work = Work::new(&id, pb::WorkKind::Execution, &job_type, &job_id);
    if !shared.tracker.insert(work.clone()) {
        return refuse(replies, &id, format!("request {id} is already running"), None);
    }
    tracing::info!(request_id = %id, job_id = %job_id, job_type = %job_type, "job started");
    replies.push(ack(&id, true, "job started"));
    // Boxed: the task is spawned (moved into its cell) with its arguments, and the
    // request is the largest of them.
    tokio::spawn(crate::execution::run(shared.clone(), handler, work, Box::new(r), slot));
}

type Taken = (Arc<dyn crate::JobHandler>, tokio::sync::OwnedSemaphorePermit);

/// The handler and a slot for new work of `job_type`, or why the request is refused.
fn check(shared: &Shared, job_type: &str, kind: SlotKind) -> Result<Taken, String> {
    let (role, busy) = match kind {
        SlotKind::Detection => ("detect", "detector is at capacity"),
        SlotKind::Execution => ("execute", "executor is at capacity"),
    };
    if shared.draining.is_cancelled() {
        return Err("worker is shutting down".to_string());
    }
    let Some((handler, capability)) = shared.handler(job_type) else {
        return Err(format!("unknown job type {job_type}"));
    };
    let able = match kind {
        SlotKind::Detection => capability.can_detect,
        SlotKind::Execution => capability.can_execute,
    };
    if !able {
        return Err(format!("this worker does not {role} job type {job_type}"));
    }
    let slot = shared.slots.try_acquire(job_type, kind).ok_or_else(|| busy.to_string())?;
    Ok((handler.clone(), slot))
}

fn cancel(shared: &Shared, id: &str, r: pb::CancelRequest, replies: &mut Vec<Body>) {
    let Some(work) = (!r.target_id.is_empty()).then(|| shared.tracker.find(&r.target_id)).flatten() else {
        return refuse(replies, id, format!("no running work with id {}", r.target_id), None);
    };
    let reason = if r.reason.is_empty() { "canceled by the admin".to_string() } else { r.reason };
    tracing::info!(target = %r.target_id, request_id = %work.request_id, %reason, force = r.force, "canceling");
    work.cancel(&reason, r.force);
    replies.push(ack(id, true, &format!("canceling {}", work.request_id)));
}
