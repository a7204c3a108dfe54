//! The worker-facing gRPC service: `plugin.PluginControlService/WorkerStream`. One task
//! per stream reads the worker's messages and hands them to the components; the admin's
//! messages go out through a bounded queue (see `registry::WorkerSession::send`). Every
//! message is checked against the input limits first (`input.rs`); a hello also against
//! the stream's credential (`identity.rs`).

use std::{pin::Pin, sync::Arc, time::Duration};

use proto::pb::{
    self, admin_to_worker_message::Body as AdminBody, plugin_control_service_server::PluginControlService,
    worker_to_admin_message::Body,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::{
    components::Components,
    events::EventKind,
    identity::{Credential, Identity, WorkerToken},
    input,
    listener::ConnInfo,
    monitor::inc,
    registry::{Outbound, WorkerSession},
    text::clip,
    throttle::Throttle,
    wire::envelope,
    worker_history::LeftBecause,
};

/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Worker-supplied text in a log line is cut to this many bytes.
const LOG_CLIP: usize = 64;

pub struct WorkerService {
    state: Arc<Components>,
    identity: Arc<Identity>,
    /// Log lines about refused hellos, across all streams.
    refusals: Arc<Throttle>,
}

impl WorkerService {
    pub fn new(state: Arc<Components>, identity: Arc<Identity>) -> Self {
        WorkerService { state, identity, refusals: Arc::new(Throttle::new(10, Duration::from_secs(10))) }
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::AdminToWorkerMessage, Status>> + Send>>;

/// How a stream authenticated, and where it came from.
#[derive(Default)]
struct Auth {
    /// The worker token it presented (when tokens are configured).
    token: Option<WorkerToken>,
    /// What its worker_id is bound to: the token, else the client certificate.
    credential: Option<Credential>,
    conn: Option<ConnInfo>,
}

#[tonic::async_trait]
impl PluginControlService for WorkerService {
    type WorkerStreamStream = OutStream;

    async fn worker_stream(
        &self,
        request: Request<Streaming<pb::WorkerToAdminMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        let token = check_token(&self.identity, request.metadata())?;
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let certificate = conn.as_ref().and_then(|c| c.certificate.as_deref()).map(Credential::certificate);
        let credential = token.as_ref().map(|t| Credential::token(&t.secret)).or(certificate);
        let auth = Auth { token, credential, conn };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.state.config.outbound_queue);
        let (state, identity, refusals) = (self.state.clone(), self.identity.clone(), self.refusals.clone());
        // The response starts at once and the hello is awaited inside the task, so a
        // worker that waits for response headers before sending hello still works.
        tokio::spawn(async move { run_session(state, identity, refusals, auth, inbound, tx).await });
        let stream = ReceiverStream::new(rx).map(|item| item.map(|m| *m).map_err(|s| *s));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The token entry the stream's bearer token matches; `None` when no token is required.
fn check_token(identity: &Identity, metadata: &tonic::metadata::MetadataMap) -> Result<Option<WorkerToken>, Status> {
    if !identity.requires_token() {
        return Ok(None);
    }
    let presented = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(t) => match identity.token(t) {
            Some(token) => Ok(Some(token.clone())),
            None => Err(Status::unauthenticated("invalid worker token")),
        },
        None => Err(Status::unauthenticated("a worker token is required (authorization: Bearer <token>)")),
    }
}

/// A message over the gRPC size limit (tonic reports it as OUT_OF_RANGE) ends the stream
/// with RESOURCE_EXHAUSTED; `None` for other stream errors.
fn over_size(status: &Status, limit: usize) -> Option<Status> {
    (status.code() == Code::OutOfRange && status.message().contains("too large"))
        .then(|| Status::resource_exhausted(format!("a message is over the admin's limit of {limit} bytes")))
}

/// Sends `AdminHello { accepted: false }` and logs one clipped line (at most a few per window).
async fn reject(tx: &Outbound, refusals: &Throttle, hello: &pb::WorkerHello, auth: &Auth, message: String) {
    if let Some(left_out) = refusals.allow() {
        let peer = auth.conn.as_ref().map(|c| c.peer.to_string()).unwrap_or_default();
        tracing::warn!(worker_id = %clip(&hello.worker_id, LOG_CLIP), %peer, %message, similar_lines_left_out = left_out, "worker rejected");
    }
    let reply = pb::AdminHello { accepted: false, message, heartbeat_interval_seconds: 0, reconnect_delay_seconds: 0 };
    let _ = tx.send(Ok(Box::new(envelope("", AdminBody::Hello(reply))))).await;
}

/// Checks the hello against the limits, the token's worker_id pattern and the worker_id's
/// binding (which a first registration creates).
async fn admit(
    state: &Components,
    identity: &Arc<Identity>,
    hello: &pb::WorkerHello,
    auth: &Auth,
) -> Result<(), String> {
    input::check_hello(hello, &state.config.limits)?;
    if let Some(token) = &auth.token
        && !token.allows(&hello.worker_id)
    {
        return Err(crate::identity::BindError::NotAllowed(input::shown(&hello.worker_id)).to_string());
    }
    if let Some(credential) = auth.credential.clone() {
        let (identity, worker_id, now) = (identity.clone(), hello.worker_id.clone(), state.clock.now_ms());
        tokio::task::spawn_blocking(move || identity.bind(&worker_id, &credential, now))
            .await
            .map_err(|e| format!("the worker binding could not be checked: {e}"))?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn run_session(
    state: Arc<Components>,
    identity: Arc<Identity>,
    refusals: Arc<Throttle>,
    auth: Auth,
    mut inbound: Streaming<pb::WorkerToAdminMessage>,
    tx: Outbound,
) {
    let limit = state.config.max_message_bytes;
    let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return,
        Ok(Err(status)) => {
            tracing::debug!(%status, "worker stream failed before hello");
            if let Some(status) = over_size(&status, limit) {
                let _ = tx.send(Err(Box::new(status))).await;
            }
            return;
        }
        Err(_) => {
            let _ = tx.send(Err(Box::new(Status::deadline_exceeded("no hello within 10 s")))).await;
            return;
        }
    };
    let hello = match first.body {
        Some(Body::Hello(h)) if !h.worker_id.is_empty() => h,
        Some(Body::Hello(_)) => {
            let _ = tx.send(Err(Box::new(Status::invalid_argument("hello needs a non-empty worker_id")))).await;
            return;
        }
        _ => {
            let _ = tx
                .send(Err(Box::new(Status::failed_precondition("the first message on a worker stream must be hello"))))
                .await;
            return;
        }
    };
    if let Err(message) = admit(&state, &identity, &hello, &auth).await {
        // The refused hello is dropped here: nothing of it is kept, and its job types
        // never reach the schema coordinator (no folders, no requests).
        reject(&tx, &refusals, &hello, &auth, message).await;
        return;
    }
    if state.auth.mode == crate::auth::AuthMode::Off
        && hello.capabilities.iter().any(|c| crate::auth::runs_operator_code(&c.job_type))
    {
        let message = "this admin runs with --auth off, so it refuses workers that offer scripts".to_string();
        tracing::warn!(worker_id = %crate::text::clip(&hello.worker_id, 64), "{message}");
        let reply =
            pb::AdminHello { accepted: false, message, heartbeat_interval_seconds: 0, reconnect_delay_seconds: 0 };
        let _ = tx.send(Ok(Box::new(envelope("", AdminBody::Hello(reply))))).await;
        return;
    }
    if state.is_stopping() {
        let _ = tx.send(Err(Box::new(Status::unavailable("the admin is shutting down")))).await;
        return;
    }
    if let Some(conn) = &auth.conn {
        conn.establish();
    }

    // Kept to end the stream with a status of our own (the session's sender closes with ABORTED).
    let status_tx = tx.clone();
    let peer = auth.conn.as_ref().map(|c| c.peer);
    let session =
        Arc::new(WorkerSession::new(state.registry.next_session_id(), hello, tx, state.clock.now_ms()).with_peer(peer));
    if let Some(old) = state.registry.register(session.clone()) {
        old.close(LeftBecause::Replaced, "replaced by a newer stream with the same worker_id");
    }
    let reply = pb::AdminHello {
        accepted: true,
        message: format!("welcome, {}", session.worker_id),
        heartbeat_interval_seconds: state.config.heartbeat_interval.as_secs().max(1) as i32,
        reconnect_delay_seconds: state.config.reconnect_delay.as_secs().max(1) as i32,
    };
    session.send(envelope("", AdminBody::Hello(reply)), state.config.send_timeout);
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::info!(worker_id = %session.worker_id, address = %session.hello.address, %peer, "worker connected");
    state.events.publish(EventKind::WorkerJoined {
        worker_id: session.worker_id.clone(),
        address: session.hello.address.clone(),
        job_types: session.capabilities.keys().cloned().collect(),
    });
    state.schemas.on_hello(&session);
    state.dispatcher.wake();
    state.scheduler.wake();

    let warn = Throttle::new(5, Duration::from_secs(10));
    let (because, reason) = loop {
        tokio::select! {
            biased;
            _ = session.kill.cancelled() => {
                break session.close_cause().unwrap_or_else(|| (LeftBecause::ClosedByAdmin, "closed by the admin".into()))
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    session.touch(state.clock.now_ms());
                    handle(&state, &session, &warn, m).await;
                }
                Ok(None) => {
                    let because =
                        if state.registry.is_draining(&session.worker_id) { LeftBecause::Drained } else { LeftBecause::Closed };
                    break (because, "stream closed by the worker".to_string());
                }
                Err(status) => {
                    if let Some(over) = over_size(&status, limit) {
                        tracing::warn!(worker_id = %session.worker_id, limit, "worker sent a message over the size limit; ending its stream");
                        let _ = status_tx.send_timeout(Err(Box::new(over)), state.config.send_timeout).await;
                    }
                    break (LeftBecause::StreamError, format!("stream error: {}", status.message()));
                }
            },
        }
    };
    drop(status_tx);
    // Work sent on this stream is requeued whether or not a newer stream replaced it: a
    // message still queued on the old stream never reaches the worker.
    let lost = state.registry.remove_if_current(&session.worker_id, session.session_id);
    state.dispatcher.on_worker_gone(&session.worker_id, session.session_id, &reason);
    state.scheduler.on_detector_gone(&session.worker_id, session.session_id, lost, &reason);
    state.schemas.expire_schema_requests(Some((&session.worker_id, session.session_id)));
    state.registry.record_departure(&session, because, &reason);
    if lost {
        tracing::info!(worker_id = %session.worker_id, %reason, "worker left");
        state.events.publish(EventKind::WorkerLeft { worker_id: session.worker_id.clone(), reason });
    }
}

/// Counts a refused input and logs one clipped line (at most a few per window per stream).
fn refused(state: &Components, session: &WorkerSession, warn: &Throttle, what: &str, reason: &str) {
    inc(&state.monitor.refused_inputs);
    if let Some(left_out) = warn.allow() {
        tracing::warn!(
            worker_id = %session.worker_id,
            what,
            reason = %clip(reason, 200),
            similar_lines_left_out = left_out,
            "worker input refused"
        );
    }
}

async fn handle(state: &Arc<Components>, session: &Arc<WorkerSession>, warn: &Throttle, msg: pb::WorkerToAdminMessage) {
    let Some(body) = msg.body else {
        inc(&state.monitor.ignored_messages);
        return;
    };
    let limits = &state.config.limits;
    if let Err(reason) = input::check_ids(&body, limits) {
        return refused(state, session, warn, "reply ids", &reason);
    }
    match body {
        Body::Hello(_) => {
            inc(&state.monitor.ignored_messages);
            tracing::debug!(worker_id = %session.worker_id, "second hello on one stream ignored");
        }
        Body::Heartbeat(hb) => {
            inc(&state.monitor.heartbeats);
            session.beat(state.clock.now_ms());
            match input::check_heartbeat(&hb, limits) {
                Ok(()) => {
                    state.registry.record_slot_use(
                        &session.worker_id,
                        hb.execution_slots_used,
                        hb.execution_slots_total,
                    );
                    session.set_heartbeat(hb)
                }
                Err(reason) => refused(state, session, warn, "heartbeat", &reason),
            }
        }
        Body::Acknowledge(ack) => {
            if ack.accepted {
                return;
            }
            let message = clip(&ack.message, limits.max_text_bytes);
            if state.dispatcher.is_execution(&ack.request_id) {
                state.dispatcher.on_execute_rejected(session, &ack.request_id, &message);
            } else if state.scheduler.is_detection(&ack.request_id) {
                state.scheduler.on_detection_rejected(session, &ack.request_id, &message);
            } else if !state.schemas.on_schema_rejected(&ack.request_id, &session.worker_id, &message) {
                inc(&state.monitor.ignored_messages);
            }
        }
        Body::ConfigSchemaResponse(mut resp) => {
            // An oversized descriptor fails the schema request with the reason; it is never stored.
            if let Some(Err(reason)) = resp.job_type_descriptor.as_ref().map(|d| input::check_descriptor(d, limits)) {
                refused(state, session, warn, "descriptor", &reason);
                resp.success = false;
                resp.error_message = reason;
                resp.job_type_descriptor = None;
            }
            resp.error_message = clip(&resp.error_message, limits.max_text_bytes);
            state.schemas.on_schema_response(session, resp).await
        }
        Body::DetectionProposals(batch) => {
            if let Some((n, reason)) = state.scheduler.on_proposals(session, batch) {
                refused(state, session, warn, "proposals", &format!("{n} refused, the first because {reason}"));
            }
        }
        Body::DetectionComplete(done) => state.scheduler.on_detection_complete(session, done),
        Body::JobProgressUpdate(mut update) => {
            trim_activities(state, session, warn, &mut update.activities);
            if update.job_id.is_empty()
                && let Some(job_type) = state.scheduler.detection_job_type(session, &update.request_id)
            {
                state.journal.worker_activities(&job_type, "", &update.activities, pb::ActivitySource::Detector);
            } else {
                state.dispatcher.on_progress(session, update);
            }
        }
        Body::JobCompleted(mut done) => {
            trim_activities(state, session, warn, &mut done.activities);
            keep_artifacts(state, session, warn, &mut done).await;
            if let Some(reason) = input::trim_result(&mut done, limits) {
                refused(state, session, warn, "job result", &reason);
            }
            state.dispatcher.on_completed(session, done)
        }
        Body::Observations(o) => match input::check_observations(&o, limits) {
            Ok(()) => {
                inc(&state.monitor.observations);
                let job_type = o.job_type.clone();
                let refused_n = state.observations.record(session, o, state.clock.now_ms());
                if refused_n > 0 {
                    let why = format!("{refused_n} for job type {} it does not offer", input::shown(&job_type));
                    refused(state, session, warn, "observations", &why);
                }
            }
            Err(reason) => refused(state, session, warn, "observations", &reason),
        },
        Body::ObjectPreviewResponse(r) => {
            if !state.observations.on_preview(session, r) {
                inc(&state.monitor.ignored_messages);
            }
        }
    }
}

/// Takes the artifacts out of a completion's result (before its size is checked) and
/// keeps them when the completion is the job's current attempt; the job is completed
/// only after they are written, so a finished job's artifacts are there to download.
async fn keep_artifacts(state: &Components, session: &WorkerSession, warn: &Throttle, done: &mut pb::JobCompleted) {
    let (files, refusals) = crate::artifacts::take(done.result.as_mut(), state.artifacts.limits());
    if let Some(first) = refusals.first() {
        refused(state, session, warn, "artifacts", &format!("{} dropped, the first because {first}", refusals.len()));
    }
    if files.is_empty() {
        return;
    }
    let Some(job_id) = state.dispatcher.current_job_id(session, &done.request_id, &done.job_id) else {
        return;
    };
    let artifacts = state.artifacts.clone();
    let id = job_id.clone();
    let saved = tokio::task::spawn_blocking(move || artifacts.save(&id, &files)).await;
    if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
        tracing::error!(job_id, error = %e, "the job's artifacts could not be kept");
    }
}

fn trim_activities(state: &Components, session: &WorkerSession, warn: &Throttle, list: &mut Vec<pb::ActivityEvent>) {
    let limit = state.config.limits.max_activities_per_message;
    let dropped = input::trim_activities(list, &state.config.limits);
    if dropped > 0 {
        refused(
            state,
            session,
            warn,
            "activities",
            &format!("{dropped} activities over the limit of {limit} per message"),
        );
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_when_configured() {
        let dir = crate::test_support::TempDir::new("grpc-tokens");
        let mut md = tonic::metadata::MetadataMap::new();
        let open = Identity::open(&dir.0, &[]).unwrap();
        assert_eq!(check_token(&open, &md).unwrap(), None);
        let identity = Identity::open(&dir.0, &["s3cret@w-*".to_string()]).unwrap();
        assert_eq!(check_token(&identity, &md).unwrap_err().code(), tonic::Code::Unauthenticated);
        md.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(check_token(&identity, &md).is_err());
        md.insert("authorization", "Bearer s3cret".parse().unwrap());
        let token = check_token(&identity, &md).unwrap().expect("the token entry");
        assert_eq!(token.pattern.as_deref(), Some("w-*"));
    }

    #[test]
    fn an_over_size_message_ends_the_stream_with_resource_exhausted() {
        let decode =
            Status::out_of_range("Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes");
        assert_eq!(over_size(&decode, 4).unwrap().code(), Code::ResourceExhausted);
        assert!(over_size(&Status::cancelled("gone"), 4).is_none());
    }
}
