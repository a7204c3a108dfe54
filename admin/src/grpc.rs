//! The worker-facing gRPC service: `plugin.PluginControlService/WorkerStream`. One task
//! per stream reads the worker's messages and hands them to the components; the admin's
//! messages go out through a bounded queue (see `registry::WorkerSession::send`).

use std::{pin::Pin, sync::Arc, time::Duration};

use proto::pb::{
    self, admin_to_worker_message::Body as AdminBody, plugin_control_service_server::PluginControlService,
    worker_to_admin_message::Body,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    components::Components,
    events::EventKind,
    monitor::inc,
    registry::{Outbound, WorkerSession},
    validator::is_valid_job_type,
    wire::envelope,
};

/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ID_LEN: usize = 256;

pub struct WorkerService {
    state: Arc<Components>,
}

impl WorkerService {
    pub fn new(state: Arc<Components>) -> Self {
        WorkerService { state }
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::AdminToWorkerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl PluginControlService for WorkerService {
    type WorkerStreamStream = OutStream;

    async fn worker_stream(
        &self,
        request: Request<Streaming<pb::WorkerToAdminMessage>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        check_token(&self.state.config.worker_tokens, request.metadata())?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.state.config.outbound_queue);
        let state = self.state.clone();
        // The response starts at once and the hello is awaited inside the task, so a
        // worker that waits for response headers before sending hello still works.
        tokio::spawn(async move { run_session(state, inbound, tx).await });
        let stream = ReceiverStream::new(rx).map(|item| item.map(|m| *m).map_err(|s| *s));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn check_token(tokens: &[String], metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
    if tokens.is_empty() {
        return Ok(());
    }
    let presented = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(t) if tokens.iter().any(|known| crate::secrets::constant_time_eq(known.as_bytes(), t.as_bytes())) => {
            Ok(())
        }
        Some(_) => Err(Status::unauthenticated("invalid worker token")),
        None => Err(Status::unauthenticated("a worker token is required (authorization: Bearer <token>)")),
    }
}

/// Checks a hello; the error is sent back as `AdminHello { accepted: false }`.
fn check_hello(hello: &pb::WorkerHello) -> Result<(), String> {
    if hello.worker_id.len() > MAX_ID_LEN || hello.worker_id.chars().any(char::is_control) {
        return Err(format!("worker_id must be at most {MAX_ID_LEN} printable characters"));
    }
    for cap in &hello.capabilities {
        if !is_valid_job_type(&cap.job_type) {
            return Err(format!("job type {:?} is not a valid name (letters, digits, '_', '.', '-')", cap.job_type));
        }
        if cap.max_execution_concurrency < 0 || cap.max_detection_concurrency < 0 {
            return Err(format!("job type {:?} has a negative concurrency", cap.job_type));
        }
    }
    Ok(())
}

async fn run_session(state: Arc<Components>, mut inbound: Streaming<pb::WorkerToAdminMessage>, tx: Outbound) {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return,
        Ok(Err(status)) => {
            tracing::debug!(%status, "worker stream failed before hello");
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
    if let Err(message) = check_hello(&hello) {
        tracing::warn!(worker_id = %hello.worker_id, %message, "worker rejected");
        let reply =
            pb::AdminHello { accepted: false, message, heartbeat_interval_seconds: 0, reconnect_delay_seconds: 0 };
        let _ = tx.send(Ok(Box::new(envelope("", AdminBody::Hello(reply))))).await;
        return;
    }
    if state.is_stopping() {
        let _ = tx.send(Err(Box::new(Status::unavailable("the admin is shutting down")))).await;
        return;
    }

    let session = Arc::new(WorkerSession::new(state.registry.next_session_id(), hello, tx, state.clock.now_ms()));
    if let Some(old) = state.registry.register(session.clone()) {
        old.close("replaced by a newer stream with the same worker_id");
    }
    let reply = pb::AdminHello {
        accepted: true,
        message: format!("welcome, {}", session.worker_id),
        heartbeat_interval_seconds: state.config.heartbeat_interval.as_secs().max(1) as i32,
        reconnect_delay_seconds: state.config.reconnect_delay.as_secs().max(1) as i32,
    };
    session.send(envelope("", AdminBody::Hello(reply)), state.config.send_timeout);
    tracing::info!(worker_id = %session.worker_id, address = %session.hello.address, "worker connected");
    state.events.publish(EventKind::WorkerJoined {
        worker_id: session.worker_id.clone(),
        address: session.hello.address.clone(),
        job_types: session.capabilities.keys().cloned().collect(),
    });
    state.schemas.on_hello(&session);
    state.dispatcher.wake();
    state.scheduler.wake();

    let reason = loop {
        tokio::select! {
            biased;
            _ = session.kill.cancelled() => break session.close_reason().unwrap_or_else(|| "closed by the admin".into()),
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    session.touch(state.clock.now_ms());
                    handle(&state, &session, m).await;
                }
                Ok(None) => break "stream closed by the worker".to_string(),
                Err(status) => break format!("stream error: {}", status.message()),
            },
        }
    };
    // Work sent on this stream is requeued whether or not a newer stream replaced it: a
    // message still queued on the old stream never reaches the worker.
    let lost = state.registry.remove_if_current(&session.worker_id, session.session_id);
    state.dispatcher.on_worker_gone(&session.worker_id, session.session_id, &reason);
    state.scheduler.on_detector_gone(&session.worker_id, session.session_id, lost, &reason);
    state.schemas.expire_schema_requests(Some((&session.worker_id, session.session_id)));
    if lost {
        tracing::info!(worker_id = %session.worker_id, %reason, "worker left");
        state.events.publish(EventKind::WorkerLeft { worker_id: session.worker_id.clone(), reason });
    }
}

async fn handle(state: &Arc<Components>, session: &Arc<WorkerSession>, msg: pb::WorkerToAdminMessage) {
    let Some(body) = msg.body else {
        inc(&state.monitor.ignored_messages);
        return;
    };
    match body {
        Body::Hello(_) => {
            inc(&state.monitor.ignored_messages);
            tracing::debug!(worker_id = %session.worker_id, "second hello on one stream ignored");
        }
        Body::Heartbeat(hb) => {
            inc(&state.monitor.heartbeats);
            session.set_heartbeat(hb);
        }
        Body::Acknowledge(ack) => {
            if ack.accepted {
                return;
            }
            if state.dispatcher.is_execution(&ack.request_id) {
                state.dispatcher.on_execute_rejected(session, &ack.request_id, &ack.message);
            } else if state.scheduler.is_detection(&ack.request_id) {
                state.scheduler.on_detection_rejected(session, &ack.request_id, &ack.message);
            } else if !state.schemas.on_schema_rejected(&ack.request_id, &session.worker_id, &ack.message) {
                inc(&state.monitor.ignored_messages);
            }
        }
        Body::ConfigSchemaResponse(resp) => state.schemas.on_schema_response(session, resp).await,
        Body::DetectionProposals(batch) => state.scheduler.on_proposals(session, batch),
        Body::DetectionComplete(done) => state.scheduler.on_detection_complete(session, done),
        Body::JobProgressUpdate(update) => {
            if update.job_id.is_empty() && state.scheduler.is_detection(&update.request_id) {
                state.journal.worker_activities(&update.job_type, "", &update.activities, pb::ActivitySource::Detector);
            } else {
                state.dispatcher.on_progress(session, update);
            }
        }
        Body::JobCompleted(done) => state.dispatcher.on_completed(session, done),
        Body::Observations(_) => inc(&state.monitor.observations),
        Body::ObjectPreviewResponse(_) => inc(&state.monitor.ignored_messages),
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_when_configured() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(check_token(&[], &md).is_ok());
        let tokens = vec!["s3cret".to_string()];
        assert_eq!(check_token(&tokens, &md).unwrap_err().code(), tonic::Code::Unauthenticated);
        md.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(check_token(&tokens, &md).is_err());
        md.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check_token(&tokens, &md).is_ok());
    }

    #[test]
    fn hellos_with_bad_job_type_names_are_rejected() {
        let mut hello = pb::WorkerHello { worker_id: "w".into(), ..Default::default() };
        hello.capabilities.push(pb::JobTypeCapability { job_type: "../etc".into(), ..Default::default() });
        assert!(check_hello(&hello).is_err());
        hello.capabilities[0].job_type = "ok.type-1".into();
        assert!(check_hello(&hello).is_ok());
    }
}
