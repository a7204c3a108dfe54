//! Black-box tests of the worker SDK against a fake admin over real gRPC on 127.0.0.1:
//! the handshake, schema, detection, execution, slots, cancel, heartbeats, shutdown,
//! reconnects, admin address resolution, the persisted worker id and the token.

use std::{sync::Arc, time::Duration};

use proto::pb::{self, admin_to_worker_message::Body as Req, worker_to_admin_message::Body as Msg};
use tests::{
    TempDir,
    fake_admin::{
        DEADLINE, FakeAdmin, FakeSession, ack_of, detection_complete_of, heartbeat_of, job_completed_of, progress_of,
    },
    within,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use worker_sdk::{
    CancellationToken, CapabilityExt, Descriptor, DetectionSender, Error, Field, Form, HandlerResult, JobHandler,
    ProgressSender, Section, Worker, WorkerConfig, WorkerStatus, capability, value, values,
};

const JOB_TYPE: &str = "test_job";

/// What the handler tells the test.
#[derive(Debug, PartialEq)]
enum Event {
    Started(String),
    SawCancel(String),
}

/// A handler whose behaviour each request picks: executions read the job parameter
/// `mode` ("ok", "fail", "block": wait for the test's release or a cancel; all three
/// report progress and an activity first; "quiet": return at once, "quiet-block": wait
/// for the release, neither reporting anything; "late": return at once, leaving a task
/// that reports progress after the release and then sends `Event::Started("late")`);
/// detections
/// send `batches` batches of two proposals, or block with `block: true`.
struct Scripted {
    max_detect: u32,
    max_execute: u32,
    release: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
}

#[worker_sdk::async_trait]
impl JobHandler for Scripted {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(JOB_TYPE, "Test job").detect(self.max_detect).execute(self.max_execute).description("for tests")
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        descriptor()
    }

    async fn detect(
        &self,
        request: pb::RunDetectionRequest,
        out: DetectionSender,
        cancel: CancellationToken,
    ) -> HandlerResult<()> {
        let _ = self.events.send(Event::Started(request.request_id.clone()));
        if values::bool_or(&request.admin_config_values, "block", false)? {
            cancel.cancelled().await;
            let _ = self.events.send(Event::SawCancel(request.request_id.clone()));
            return Err("detection stopped".into());
        }
        let batches = values::i64_or(&request.admin_config_values, "batches", 1)?;
        out.activity("scanning").await;
        for b in 0..batches {
            let proposals = (0..2)
                .map(|i| pb::JobProposal {
                    proposal_id: format!("p-{b}-{i}"),
                    dedupe_key: format!("key-{b}-{i}"),
                    summary: format!("proposal {b}/{i}"),
                    ..Default::default()
                })
                .collect();
            out.send(proposals).await?;
        }
        Ok(())
    }

    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        let job = request.job.unwrap_or_default();
        let mode = values::string_or(&job.parameters, "mode", "ok".into())?;
        match mode.as_str() {
            "quiet" => return Ok(pb::JobResult { summary: "quiet".into(), ..Default::default() }),
            "late" => {
                let (mut release, events) = (self.release.clone(), self.events.clone());
                tokio::spawn(async move {
                    let _ = release.wait_for(|r| *r).await;
                    progress.progress(10.0, "late", "after the end").await;
                    let _ = events.send(Event::Started("late".into()));
                });
                return Ok(pb::JobResult { summary: "quiet".into(), ..Default::default() });
            }
            "quiet-block" => {
                let _ = self.release.clone().wait_for(|r| *r).await;
                return Ok(pb::JobResult { summary: "quiet".into(), ..Default::default() });
            }
            _ => {}
        }
        progress.progress(50.0, "working", "halfway").await;
        progress.activity("doing the work").await;
        let _ = self.events.send(Event::Started(job.job_id.clone()));
        match mode.as_str() {
            "fail" => return Err("the job failed on purpose".into()),
            "block" => {
                let mut release = self.release.clone();
                tokio::select! {
                    _ = release.wait_for(|r| *r) => {}
                    _ = cancel.cancelled() => {
                        let _ = self.events.send(Event::SawCancel(job.job_id.clone()));
                        return Err("stopped on cancel".into());
                    }
                }
            }
            _ => {}
        }
        Ok(pb::JobResult {
            summary: format!("done {}", job.job_id),
            output_values: [("answer".to_string(), value::int(42))].into(),
        })
    }
}

fn descriptor() -> pb::JobTypeDescriptor {
    Descriptor::new(JOB_TYPE, "Test job")
        .version(2)
        .admin_form(Form::new("admin", "Scope").section(
            Section::new("main", "Main").field(Field::int("batches", "Batches").range(0, 10).default_value(1)),
        ))
        .build()
}

/// A worker running against a fake admin, with the handles a test needs.
struct Harness {
    _dir: TempDir,
    shutdown: CancellationToken,
    run: JoinHandle<Result<(), Error>>,
    status: watch::Receiver<WorkerStatus>,
    release: watch::Sender<bool>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Harness {
    fn start(admin: &str, slots: (u32, u32), tweak: impl FnOnce(&mut WorkerConfig)) -> Self {
        let dir = TempDir::new("sdk-worker");
        let mut config = WorkerConfig::new(admin, dir.path());
        config.address = "127.0.0.1:0".into();
        config.version = "9.9.9".into();
        config.metadata.insert("zone".into(), "test".into());
        // Stopping a test worker cancels blocked handlers at once.
        config.shutdown_grace = Duration::ZERO;
        tweak(&mut config);
        Self::start_in(dir, config, slots)
    }

    fn start_in(dir: TempDir, config: WorkerConfig, (max_detect, max_execute): (u32, u32)) -> Self {
        let (release, release_rx) = watch::channel(false);
        let (events_tx, events) = mpsc::unbounded_channel();
        let worker =
            Worker::new(config).handler(Scripted { max_detect, max_execute, release: release_rx, events: events_tx });
        let status = worker.status();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(worker.run(shutdown.clone()));
        Harness { _dir: dir, shutdown, run, status, release, events }
    }

    async fn event(&mut self) -> Event {
        within("a handler event", DEADLINE, self.events.recv()).await.expect("the handler is alive")
    }

    async fn finished(self) -> Result<(), Error> {
        within("run() to return", DEADLINE, self.run).await.expect("run() does not panic")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.finished().await.expect("run() ends with Ok on shutdown");
    }
}

/// The next stream, its hello, and an accept with a 1 s heartbeat and reconnect delay.
async fn connect(admin: &mut FakeAdmin) -> (FakeSession, pb::WorkerHello) {
    let mut session = admin.next_session().await;
    let hello = session.expect_hello().await;
    session.accept(1, 1).await;
    (session, hello)
}

fn job(job_id: &str, mode: &str) -> Req {
    job_of_type(job_id, JOB_TYPE, mode)
}

fn job_of_type(job_id: &str, job_type: &str, mode: &str) -> Req {
    Req::ExecuteJobRequest(pb::ExecuteJobRequest {
        job: Some(pb::JobSpec {
            job_id: job_id.into(),
            job_type: job_type.into(),
            parameters: [("mode".to_string(), value::string(mode))].into(),
            ..Default::default()
        }),
        attempt: 1,
        ..Default::default()
    })
}

fn detection(job_type: &str, config: &[(&str, pb::ConfigValue)]) -> Req {
    Req::RunDetectionRequest(pb::RunDetectionRequest {
        job_type: job_type.into(),
        admin_config_values: config.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        ..Default::default()
    })
}

fn schema_request(job_type: &str) -> Req {
    Req::RequestConfigSchema(pb::RequestConfigSchema { job_type: job_type.into(), force_refresh: true })
}

fn cancel(target: &str, reason: &str) -> Req {
    Req::CancelRequest(pb::CancelRequest {
        target_id: target.into(),
        target_kind: pb::WorkKind::Execution as i32,
        reason: reason.into(),
        force: false,
    })
}

async fn wait_for_status(
    status: &mut watch::Receiver<WorkerStatus>,
    what: &str,
    pick: impl FnMut(&WorkerStatus) -> bool,
) -> WorkerStatus {
    within(what, DEADLINE, status.wait_for(pick)).await.expect("the worker publishes its status").clone()
}

#[tokio::test]
async fn hello_carries_the_worker_identity_and_the_handlers_capabilities() {
    tests::init_tracing();
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (2, 3), |c| c.worker_id = Some("worker-a".into()));
    let (mut session, hello) = connect(&mut admin).await;

    assert_eq!(hello.worker_id, "worker-a");
    assert_eq!(hello.protocol_version, "plugin.v1");
    assert_eq!(hello.worker_version, "9.9.9");
    assert_eq!(hello.address, "127.0.0.1:0");
    assert_eq!(hello.metadata.get("zone").map(String::as_str), Some("test"));
    assert!(!hello.worker_instance_id.is_empty());
    assert_eq!(
        hello.capabilities,
        vec![pb::JobTypeCapability {
            job_type: JOB_TYPE.into(),
            can_detect: true,
            can_execute: true,
            max_detection_concurrency: 2,
            max_execution_concurrency: 3,
            display_name: "Test job".into(),
            description: "for tests".into(),
            weight: 1,
        }]
    );
    // Every later message carries the worker id in its envelope.
    let heartbeat = session.recv().await.expect("a message after the accept");
    assert_eq!(heartbeat.worker_id, "worker-a");
    worker.stop().await;
}

#[tokio::test]
async fn a_schema_request_is_answered_with_the_handlers_descriptor() {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let id = session.request(schema_request(JOB_TYPE)).await;
    let ack = session.recv_matching("the schema ack", DEADLINE, |m| ack_of(m, &id)).await;
    assert!(ack.accepted, "{ack:?}");
    let response = session
        .recv_matching("the schema response", DEADLINE, |m| match &m.body {
            Some(Msg::ConfigSchemaResponse(r)) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(response.request_id, id);
    assert_eq!(response.job_type, JOB_TYPE);
    assert!(response.success, "{response:?}");
    assert_eq!(response.job_type_descriptor, Some(descriptor()));
    worker.stop().await;
}

#[tokio::test]
async fn a_detection_sends_every_proposal_batch_then_exactly_one_completion() {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let id = session.request(detection(JOB_TYPE, &[("batches", value::int(3))])).await;
    let (seen, complete) =
        session.collect_until("detection_complete", DEADLINE, |m| detection_complete_of(m, &id)).await;
    assert!(complete.success, "{complete:?}");
    assert_eq!(complete.total_proposals, 6);
    assert_eq!(complete.job_type, JOB_TYPE);

    let batches: Vec<_> = seen
        .iter()
        .filter_map(|m| match &m.body {
            Some(Msg::DetectionProposals(p)) if p.request_id == id => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 3);
    for batch in &batches {
        assert!(batch.has_more);
        assert_eq!(batch.proposals.len(), 2);
        assert!(batch.proposals.iter().all(|p| p.job_type == JOB_TYPE), "the SDK fills in the job type");
    }
    assert!(seen.iter().any(|m| ack_of(m, &id).is_some_and(|a| a.accepted)), "the detection was acknowledged");
    let activity = seen.iter().find_map(|m| progress_of(m, &id)).expect("the detector's activity");
    assert!(activity.job_id.is_empty());
    assert_eq!(activity.activities[0].source, pb::ActivitySource::Detector as i32);
    assert_eq!(activity.activities[0].message, "scanning");

    // A later request's reply is a barrier: nothing more for the detection before it.
    let barrier = session.request(schema_request(JOB_TYPE)).await;
    let (after, _) = session
        .collect_until("the barrier reply", DEADLINE, |m| match &m.body {
            Some(Msg::ConfigSchemaResponse(r)) if r.request_id == barrier => Some(()),
            _ => None,
        })
        .await;
    assert!(after.iter().all(|m| detection_complete_of(m, &id).is_none()), "a second detection_complete");
    worker.stop().await;
}

#[tokio::test]
async fn an_execution_reports_running_progress_then_one_successful_completion() {
    let mut admin = FakeAdmin::plain().await;
    // RUNNING comes with the handler's first report here, not after a while.
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |c| c.running_after = Duration::from_secs(3600));
    let (mut session, _) = connect(&mut admin).await;

    let id = session.request(job("job-1", "ok")).await;
    let (seen, completed) = session.collect_until("job_completed", DEADLINE, |m| job_completed_of(m, &id)).await;
    assert!(completed.success, "{completed:?}");
    assert_eq!(completed.job_id, "job-1");
    assert_eq!(completed.job_type, JOB_TYPE);
    let result = completed.result.expect("the handler's result");
    assert_eq!(result.summary, "done job-1");
    assert_eq!(result.output_values["answer"], value::int(42));

    let updates: Vec<_> = seen.iter().filter_map(|m| progress_of(m, &id)).collect();
    assert!(updates.len() >= 3, "running, progress, activity: {updates:#?}");
    assert_eq!(updates[0].message, "started", "RUNNING comes before the handler's own reports");
    assert!(updates.iter().all(|u| u.state == pb::JobState::Running as i32 && u.job_id == "job-1"));
    assert!(updates.iter().any(|u| u.progress_percent == 50.0 && u.stage == "working" && u.message == "halfway"));
    let activity = updates.iter().flat_map(|u| &u.activities).next().expect("an activity");
    assert_eq!(activity.source, pb::ActivitySource::Executor as i32);
    assert_eq!(activity.message, "doing the work");
    let ack_at = seen.iter().position(|m| ack_of(m, &id).is_some_and(|a| a.accepted)).expect("an accepted ack");
    let first_update = seen.iter().position(|m| progress_of(m, &id).is_some()).unwrap();
    assert!(ack_at < first_update, "the ack comes before the job's messages");
    worker.stop().await;
}

/// The progress updates and the completion of one execution in `mode`, on a worker whose
/// `running_after` is `running_after`. A "quiet-block" job is released once its first
/// update came.
async fn quiet_execution(running_after: Duration, mode: &str) -> (Vec<pb::JobProgressUpdate>, pb::JobCompleted) {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |c| c.running_after = running_after);
    let (mut session, _) = connect(&mut admin).await;
    let id = session.request(job("job-q", mode)).await;
    let mut seen = Vec::new();
    if mode == "quiet-block" {
        seen = session.collect_until("the RUNNING update", DEADLINE, |m| progress_of(m, &id)).await.0;
        worker.release.send_replace(true);
    }
    let (rest, completed) = session.collect_until("job_completed", DEADLINE, |m| job_completed_of(m, &id)).await;
    seen.extend(rest);
    worker.stop().await;
    (seen.iter().filter_map(|m| progress_of(m, &id)).collect(), completed)
}

#[tokio::test]
async fn an_execution_that_ends_before_running_after_is_reported_by_its_completion_alone() {
    let (updates, completed) = quiet_execution(Duration::from_secs(3600), "quiet").await;
    assert!(completed.success, "{completed:?}");
    assert_eq!(completed.result.expect("a result").summary, "quiet");
    assert!(updates.is_empty(), "no progress update: {updates:#?}");
}

#[tokio::test]
async fn an_execution_still_running_after_running_after_is_reported_running_once() {
    let (updates, completed) = quiet_execution(Duration::from_millis(20), "quiet-block").await;
    assert!(completed.success, "{completed:?}");
    assert_eq!(updates.len(), 1, "one RUNNING update: {updates:#?}");
    assert_eq!((updates[0].state, updates[0].message.as_str()), (pb::JobState::Running as i32, "started"));
    assert_eq!(updates[0].job_id, "job-q");
}

#[tokio::test]
async fn a_report_after_the_completion_is_not_sent() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 1), |c| c.running_after = Duration::from_secs(3600));
    let (mut session, _) = connect(&mut admin).await;
    let late = session.request(job("job-late", "late")).await;
    session.recv_matching("job_completed", DEADLINE, |m| job_completed_of(m, &late)).await;
    worker.release.send_replace(true);
    assert_eq!(worker.event().await, Event::Started("late".into()), "the late report was made");
    // Anything the late report queued would come before the next job's messages.
    let next = session.request(job("job-next", "quiet")).await;
    let (seen, _) = session.collect_until("the next job_completed", DEADLINE, |m| job_completed_of(m, &next)).await;
    let late_updates: Vec<_> = seen.iter().filter_map(|m| progress_of(m, &late)).collect();
    assert!(late_updates.is_empty(), "nothing after job_completed: {late_updates:#?}");
    worker.stop().await;
}

#[tokio::test]
async fn with_running_after_zero_every_execution_is_reported_running_as_it_starts() {
    let (updates, completed) = quiet_execution(Duration::ZERO, "quiet").await;
    assert!(completed.success, "{completed:?}");
    assert_eq!(updates.len(), 1, "one RUNNING update: {updates:#?}");
    assert_eq!((updates[0].state, updates[0].message.as_str()), (pb::JobState::Running as i32, "started"));
}

#[tokio::test]
async fn a_failing_execution_reports_the_handlers_error() {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let id = session.request(job("job-f", "fail")).await;
    let completed = session.recv_matching("job_completed", DEADLINE, |m| job_completed_of(m, &id)).await;
    assert!(!completed.success);
    assert_eq!(completed.error_message, "the job failed on purpose");
    assert_eq!(completed.result, None);
    worker.stop().await;
}

#[tokio::test]
async fn a_request_beyond_the_slots_is_answered_at_capacity_at_once() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let busy = session.request(job("job-busy", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-busy".into()));
    let extra = session.request(job("job-extra", "ok")).await;
    let ack = session.recv_matching("the refused ack", DEADLINE, |m| ack_of(m, &extra)).await;
    assert!(!ack.accepted);
    assert_eq!(ack.message, "executor is at capacity");
    let completed = session.recv_matching("the capacity reply", DEADLINE, |m| job_completed_of(m, &extra)).await;
    assert!(!completed.success);
    assert_eq!(completed.error_message, "executor is at capacity");
    assert_eq!(completed.job_id, "job-extra");

    let blocking = session.request(detection(JOB_TYPE, &[("block", value::boolean(true))])).await;
    assert_eq!(worker.event().await, Event::Started(blocking.clone()));
    let second = session.request(detection(JOB_TYPE, &[])).await;
    let complete =
        session.recv_matching("the detector capacity reply", DEADLINE, |m| detection_complete_of(m, &second)).await;
    assert!(!complete.success);
    assert_eq!(complete.error_message, "detector is at capacity");

    // Once the slot is free again, work is taken.
    worker.release.send_replace(true);
    let done = session.recv_matching("the blocked job", DEADLINE, |m| job_completed_of(m, &busy)).await;
    assert!(done.success);
    let again = session.request(job("job-again", "ok")).await;
    let completed = session.recv_matching("the next job", DEADLINE, |m| job_completed_of(m, &again)).await;
    assert!(completed.success, "{completed:?}");
    worker.stop().await;
}

#[tokio::test]
async fn canceling_a_running_execution_reaches_the_handler_and_is_reported() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 2), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    // One canceled by its job id, one by its request id.
    let by_job = session.request(job("job-c1", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-c1".into()));
    let by_request = session.request(job("job-c2", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-c2".into()));

    let cancel_1 = session.request(cancel("job-c1", "operator asked")).await;
    let ack = session.recv_matching("the cancel ack", DEADLINE, |m| ack_of(m, &cancel_1)).await;
    assert!(ack.accepted, "{ack:?}");
    assert_eq!(worker.event().await, Event::SawCancel("job-c1".into()));
    let completed = session.recv_matching("the canceled job", DEADLINE, |m| job_completed_of(m, &by_job)).await;
    assert!(!completed.success);
    assert_eq!(completed.error_message, "canceled: operator asked");

    session.request(cancel(&by_request, "timeout")).await;
    assert_eq!(worker.event().await, Event::SawCancel("job-c2".into()));
    let completed =
        session.recv_matching("the second canceled job", DEADLINE, |m| job_completed_of(m, &by_request)).await;
    assert_eq!(completed.error_message, "canceled: timeout");

    let unknown = session.request(cancel("no-such-job", "x")).await;
    let ack = session.recv_matching("the unknown cancel ack", DEADLINE, |m| ack_of(m, &unknown)).await;
    assert!(!ack.accepted);
    assert_eq!(ack.message, "no running work with id no-such-job");
    worker.stop().await;
}

#[tokio::test]
async fn an_unknown_job_type_gets_an_error_reply_for_every_request_kind() {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;
    let expected = "unknown job type nope";

    let id = session.request(schema_request("nope")).await;
    let ack = session.recv_matching("the schema ack", DEADLINE, |m| ack_of(m, &id)).await;
    assert_eq!((ack.accepted, ack.message.as_str()), (false, expected));
    let response = session
        .recv_matching("the schema reply", DEADLINE, |m| match &m.body {
            Some(Msg::ConfigSchemaResponse(r)) if r.request_id == id => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!((response.success, response.error_message.as_str()), (false, expected));

    let id = session.request(detection("nope", &[])).await;
    let ack = session.recv_matching("the detection ack", DEADLINE, |m| ack_of(m, &id)).await;
    assert_eq!((ack.accepted, ack.message.as_str()), (false, expected));
    let complete = session.recv_matching("the detection reply", DEADLINE, |m| detection_complete_of(m, &id)).await;
    assert_eq!((complete.success, complete.error_message.as_str()), (false, expected));

    let id = session.request(job_of_type("job-x", "nope", "ok")).await;
    let ack = session.recv_matching("the execution ack", DEADLINE, |m| ack_of(m, &id)).await;
    assert_eq!((ack.accepted, ack.message.as_str()), (false, expected));
    let completed = session.recv_matching("the execution reply", DEADLINE, |m| job_completed_of(m, &id)).await;
    assert_eq!((completed.success, completed.error_message.as_str()), (false, expected));

    let id = session.request(Req::RequestObjectPreview(pb::RequestObjectPreview::default())).await;
    let preview = session
        .recv_matching("the preview reply", DEADLINE, |m| match &m.body {
            Some(Msg::ObjectPreviewResponse(r)) if r.request_id == id => Some(r.clone()),
            _ => None,
        })
        .await;
    assert!(!preview.success);
    assert_eq!(preview.error_message, "object previews are not supported by this worker");
    worker.stop().await;
}

#[tokio::test]
async fn heartbeats_carry_slot_use_and_running_work() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (2, 3), |c| c.worker_id = Some("worker-hb".into()));
    let (mut session, _) = connect(&mut admin).await;

    let idle = session.recv_matching("a heartbeat", DEADLINE, heartbeat_of).await;
    assert_eq!(idle.worker_id, "worker-hb");
    assert_eq!((idle.detection_slots_total, idle.execution_slots_total), (2, 3));
    assert_eq!(idle.metadata.get("zone").map(String::as_str), Some("test"));

    let id = session.request(job("job-hb", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-hb".into()));
    let busy = session
        .recv_matching("a heartbeat showing the job", DEADLINE, |m| {
            heartbeat_of(m).filter(|h| h.running_work.iter().any(|w| w.work_id == id && w.stage == "working"))
        })
        .await;
    assert_eq!(busy.execution_slots_used, 1);
    assert_eq!(busy.detection_slots_used, 0);
    assert_eq!(
        busy.running_work,
        vec![pb::RunningWork {
            work_id: id.clone(),
            kind: pb::WorkKind::Execution as i32,
            job_type: JOB_TYPE.into(),
            state: pb::JobState::Running as i32,
            progress_percent: 50.0,
            stage: "working".into(),
        }]
    );

    worker.release.send_replace(true);
    session.recv_matching("the job's end", DEADLINE, |m| job_completed_of(m, &id)).await;
    let after = session
        .recv_matching("a heartbeat with nothing running", DEADLINE, |m| {
            heartbeat_of(m).filter(|h| h.running_work.is_empty())
        })
        .await;
    assert_eq!(after.execution_slots_used, 0);
    worker.stop().await;
}

#[tokio::test]
async fn the_worker_reconnects_after_the_admin_goes_away_and_comes_back() {
    tests::init_tracing();
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, first_hello) = connect(&mut admin).await;

    // A job started on the first stream finishes on the second.
    let id = session.request(job("job-r", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-r".into()));
    admin.stop().await;
    wait_for_status(&mut worker.status, "the worker to notice", |s| matches!(s, WorkerStatus::Disconnected { .. }))
        .await;
    drop(session);

    admin.restart().await;
    let (mut session, hello) = connect(&mut admin).await;
    assert_eq!(hello.worker_id, first_hello.worker_id);
    assert_eq!(hello.worker_instance_id, first_hello.worker_instance_id, "same process");
    wait_for_status(&mut worker.status, "the worker to reconnect", |s| matches!(s, WorkerStatus::Connected { .. }))
        .await;

    worker.release.send_replace(true);
    let completed =
        session.recv_matching("the job's completion on the new stream", DEADLINE, |m| job_completed_of(m, &id)).await;
    assert!(completed.success, "{completed:?}");
    worker.stop().await;
}

#[tokio::test]
async fn an_admin_rejection_stops_the_worker_with_a_fatal_error() {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let mut session = admin.next_session().await;
    session.expect_hello().await;
    session.reject("worker id is banned").await;

    let err = worker.finished().await.expect_err("a rejected worker stops");
    assert!(err.is_fatal());
    match err {
        Error::Rejected { message } => assert_eq!(message, "worker id is banned"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // run() has returned, so no retry can come later.
    assert!(admin.try_next_session().is_none(), "a rejected worker must not retry");
}

#[tokio::test]
async fn a_shutdown_from_the_admin_lets_running_work_finish_refuses_new_work_and_ends_run_with_ok() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 2), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let running = session.request(job("job-s", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-s".into()));
    let shutdown = session
        .request(Req::Shutdown(pb::AdminShutdown { reason: "maintenance".into(), grace_period_seconds: 600 }))
        .await;
    let ack = session.recv_matching("the shutdown ack", DEADLINE, |m| ack_of(m, &shutdown)).await;
    assert!(ack.accepted);

    let late = session.request(job("job-late", "ok")).await;
    let refused = session.recv_matching("the refusal", DEADLINE, |m| job_completed_of(m, &late)).await;
    assert!(!refused.success);
    assert_eq!(refused.error_message, "worker is shutting down");

    worker.release.send_replace(true);
    let completed = session.recv_matching("the running job", DEADLINE, |m| job_completed_of(m, &running)).await;
    assert!(completed.success, "running work finishes within the grace period: {completed:?}");
    session.expect_closed(DEADLINE).await;
    worker.finished().await.expect("run() ends with Ok after an admin shutdown");
}

// Work cut short by a shutdown did not fail: reporting it would use up an attempt. The
// stream ends without its job_completed, and the admin requeues it as after a crash.
#[tokio::test]
async fn a_shutdown_without_grace_cancels_running_work_and_ends_the_stream_without_reporting_it() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let running = session.request(job("job-g", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-g".into()));
    session.request(Req::Shutdown(pb::AdminShutdown { reason: "now".into(), grace_period_seconds: 0 })).await;
    assert_eq!(worker.event().await, Event::SawCancel("job-g".into()));
    let rest = session.expect_closed(DEADLINE).await;
    assert!(!rest.iter().any(|m| job_completed_of(m, &running).is_some()), "no completion for the job: {rest:?}");
    worker.finished().await.expect("run() ends with Ok");
}

#[tokio::test]
async fn a_local_shutdown_cancels_running_work_after_the_grace_and_ends_the_stream_without_reporting_it() {
    let mut admin = FakeAdmin::plain().await;
    let mut worker = Harness::start(&admin.grpc_url(), (1, 1), |_| {});
    let (mut session, _) = connect(&mut admin).await;

    let running = session.request(job("job-l", "block")).await;
    assert_eq!(worker.event().await, Event::Started("job-l".into()));
    worker.shutdown.cancel();
    assert_eq!(worker.event().await, Event::SawCancel("job-l".into()));
    let rest = session.expect_closed(DEADLINE).await;
    assert!(!rest.iter().any(|m| job_completed_of(m, &running).is_some()), "no completion for the job: {rest:?}");
    let mut status = worker.status.clone();
    worker.finished().await.expect("run() ends with Ok");
    assert_eq!(*status.borrow_and_update(), WorkerStatus::Stopped { error: None });
}

/// A one-route HTTP server standing in for the admin's /api/plugin/status: answers
/// every request with `status_line` and `body`, and reports each request line.
async fn status_server(
    listener: TcpListener,
    status_line: &'static str,
    body: String,
) -> mpsc::UnboundedReceiver<String> {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let _ = seen_tx.send(text.lines().next().unwrap_or_default().to_string());
            let response = format!(
                "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    seen
}

#[tokio::test]
async fn an_http_admin_address_resolves_the_grpc_port_through_the_status_endpoint() {
    let mut admin = FakeAdmin::plain().await;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let mut seen =
        status_server(http, "200 OK", format!(r#"{{"worker_grpc_port":{},"workers":0}}"#, admin.port())).await;

    let worker = Harness::start(&format!("http://{http_addr}"), (1, 1), |_| {});
    let (_session, hello) = connect(&mut admin).await;
    assert!(!hello.worker_id.is_empty());
    let request_line = within("the status request", DEADLINE, seen.recv()).await.unwrap();
    assert_eq!(request_line, "GET /api/plugin/status HTTP/1.1");
    worker.stop().await;
}

#[tokio::test]
async fn an_http_admin_address_falls_back_to_port_plus_10000_when_status_fails() {
    // Find a gRPC port whose port - 10000 can be bound for the failing status server.
    let (mut admin, http) = loop {
        let admin = FakeAdmin::plain().await;
        if admin.port() > 10000
            && let Ok(http) = TcpListener::bind(("127.0.0.1", admin.port() - 10000)).await
        {
            break (admin, http);
        }
    };
    let http_addr = http.local_addr().unwrap();
    let mut seen = status_server(http, "500 Internal Server Error", r#"{"error":"boom"}"#.into()).await;

    let worker = Harness::start(&format!("http://{http_addr}"), (1, 1), |_| {});
    let (_session, hello) = connect(&mut admin).await;
    assert!(!hello.worker_id.is_empty());
    let request_line = within("the status request", DEADLINE, seen.recv()).await.unwrap();
    assert!(request_line.starts_with("GET /api/plugin/status"), "{request_line}");
    worker.stop().await;
}

#[tokio::test]
async fn the_worker_id_persists_in_the_working_dir_across_restarts() {
    let mut admin = FakeAdmin::plain().await;
    let dir = TempDir::new("sdk-worker-id");
    let path = dir.path().to_path_buf();

    let config = WorkerConfig::new(admin.grpc_url(), &path);
    let first = Harness::start_in(dir, config.clone(), (1, 1));
    let (_session, hello) = connect(&mut admin).await;
    let saved = std::fs::read_to_string(path.join("worker_id")).expect("the id file was written");
    assert_eq!(saved.trim(), hello.worker_id);
    // Keep the directory: hand it to the second worker.
    let Harness { _dir: dir, shutdown, run, .. } = first;
    shutdown.cancel();
    within("the first run to end", DEADLINE, run).await.unwrap().unwrap();

    let second = Harness::start_in(dir, config.clone(), (1, 1));
    let (_session, again) = connect(&mut admin).await;
    assert_eq!(again.worker_id, hello.worker_id);
    assert_ne!(again.worker_instance_id, hello.worker_instance_id, "a new process start");
    assert_eq!(Worker::new(config).worker_id().unwrap(), hello.worker_id);
    second.stop().await;
}

#[tokio::test]
async fn a_bearer_token_reaches_the_admin_in_metadata() {
    let mut admin = FakeAdmin::plain().await;
    let worker = Harness::start(&admin.grpc_url(), (1, 1), |c| c.token = Some("s3cret-token".into()));
    let (session, _) = connect(&mut admin).await;
    assert_eq!(session.authorization(), Some("Bearer s3cret-token"));
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_without_handlers_or_with_a_bad_address_fails_fast() {
    let dir = TempDir::new("sdk-worker-config");
    let err = Worker::new(WorkerConfig::new("grpc://127.0.0.1:1", dir.path()))
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)) && err.is_fatal(), "{err}");

    let (_release, release) = watch::channel(false);
    let (events, _rx) = mpsc::unbounded_channel();
    let handler = Arc::new(Scripted { max_detect: 1, max_execute: 1, release, events });
    let err = Worker::new(WorkerConfig::new("ftp://127.0.0.1:1", dir.path()))
        .handler_arc(handler)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn a_worker_keeps_retrying_while_the_admin_is_down_and_stops_cleanly() {
    // Bind and drop: nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut worker = Harness::start(&format!("grpc://127.0.0.1:{port}"), (1, 1), |_| {});
    let status = wait_for_status(
        &mut worker.status,
        "a failed attempt",
        |s| matches!(s, WorkerStatus::Disconnected { failures, .. } if *failures >= 2),
    )
    .await;
    let WorkerStatus::Disconnected { error, .. } = status else { panic!("expected Disconnected, got {status:?}") };
    assert!(error.starts_with("cannot reach the admin at http://127.0.0.1:"), "{error}");
    worker.stop().await;
}
