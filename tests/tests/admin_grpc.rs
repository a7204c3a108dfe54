//! The gRPC admin API (`plughost.admin.v1.AdminService`) over real gRPC on loopback, with
//! a real admin and workers attached over the worker protocol: every method, who may call
//! (API tokens and mapped client certificates, never worker tokens), refusals with the
//! JSON API's codes' gRPC counterparts and its messages, the event stream's resume, the
//! standard health service following the store, and server reflection driving a call
//! with no generated stubs.

use std::{path::Path, time::Duration};

use proto::{
    admin_pb::{self as api, admin_service_client::AdminServiceClient},
    pb,
};
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, int},
    harness::TestAdmin,
    http, wait_for, within,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

const T: &str = "grpc_job";
const WAIT: Duration = Duration::from_secs(30);

/// A gRPC admin API client with a token.
struct Api {
    client: AdminServiceClient<Channel>,
    token: String,
}

impl Api {
    async fn connect(admin: &TestAdmin, token: &str) -> Api {
        let client = AdminServiceClient::connect(format!("http://{}", admin.grpc)).await.expect("connect");
        Api { client, token: token.to_string() }
    }

    /// With the admin token the admin wrote into its data dir.
    async fn as_admin(admin: &TestAdmin, data_dir: &Path) -> Api {
        Api::connect(admin, &admin_token(data_dir)).await
    }

    fn c(&self) -> AdminServiceClient<Channel> {
        self.client.clone()
    }

    /// `message` with this client's token.
    fn r<M>(&self, message: M) -> Request<M> {
        with_token(&self.token, message)
    }

    async fn job(&self, job_id: &str) -> api::Job {
        let request = api::GetJobRequest { job_id: job_id.into(), ..Default::default() };
        self.c().get_job(self.r(request)).await.expect("get job").into_inner().job.expect("a job")
    }

    /// Waits until job `job_id` is in `state`.
    async fn wait_state(&self, job_id: &str, state: pb::JobState) -> api::Job {
        wait_for(&format!("{job_id} {state:?}"), WAIT, || async {
            let job = self.job(job_id).await;
            (job.state == state as i32).then_some(job)
        })
        .await
    }

    /// Waits until the worker's descriptor and the bootstrapped config are stored.
    async fn wait_config(&self) -> api::JobTypeConfig {
        wait_for("the job type's config", WAIT, || async {
            self.c().get_config(self.r(api::GetConfigRequest { job_type: T.into() })).await.ok().map(|r| r.into_inner())
        })
        .await
    }
}

fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("plugin/admin.token")).expect("admin token").trim().to_string()
}

fn with_token<M>(token: &str, message: M) -> Request<M> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Creates an API token through the JSON API; returns its plaintext.
async fn new_token(admin: &TestAdmin, name: &str, role: &str) -> String {
    let r = http::post_json(&admin.http, "/api/plugin/tokens", &json!({ "name": name, "role": role })).await;
    assert_eq!(r.status, 201, "create {name}: {}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

/// The `error` of a JSON API answer.
fn json_error(r: &http::Response) -> String {
    r.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", r.text())).to_string()
}

fn text(v: &str) -> pb::ConfigValue {
    pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue(v.into())) }
}

fn proposal(key: &str) -> pb::JobProposal {
    pb::JobProposal {
        proposal_id: format!("p-{key}"),
        dedupe_key: key.into(),
        summary: format!("job for {key}"),
        priority: pb::JobPriority::Normal as i32,
        parameters: [("path".to_string(), text(&format!("/data/{key}")))].into(),
        ..Default::default()
    }
}

/// A worker of `T` that proposes `ok-1`, `ok-2` and `bad`; executes `bad` as a failure,
/// `hang` until it is canceled, and everything else as a success. The job type starts
/// disabled (no scheduled detection: each detection here is asked for) and without
/// retries.
fn spec(worker_id: &str) -> FakeWorkerSpec {
    let mut spec = FakeWorkerSpec::new(worker_id, T, 4)
        .detect(|_| vec![vec![proposal("ok-1"), proposal("ok-2")], vec![proposal("bad")]])
        .exec(|r| match r.job.as_ref().map(|j| j.dedupe_key.as_str()) {
            Some("bad") => Exec::Fail("boom".into()),
            Some("hang") => Exec::HangUntilCancel,
            _ => Exec::Succeed(vec![50.0]),
        });
    let defaults = spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap();
    defaults.enabled = false;
    defaults.retry_limit = 0;
    spec
}

fn ids(jobs: &[api::Job]) -> Vec<String> {
    jobs.iter().map(|j| j.job_id.clone()).collect()
}

fn json_ids(jobs: &Value) -> Vec<String> {
    jobs.as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_workers_job_types_activities_and_configs_are_read_and_saved_over_grpc() {
    let dir = TempDir::new("grpc-reads");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1")).await;
    let config = api.wait_config().await;
    assert_eq!(config.descriptor.as_ref().unwrap().job_type, T);
    assert_eq!(config.config.as_ref().unwrap().admin_config_values["threshold"], int(10), "bootstrapped");

    let status = api.c().get_status(api.r(api::GetStatusRequest {})).await.unwrap().into_inner();
    let json_status = admin.get("/api/plugin/status").await;
    assert_eq!(status.worker_grpc_port, u32::from(admin.grpc.port()));
    assert_eq!(status.protocol_version, "plugin.v1");
    assert_eq!(status.version, json_status["version"].as_str().unwrap());
    assert_eq!(status.base_dir, json_status["base_dir"].as_str().unwrap());
    assert!(status.ready && status.store_healthy && !status.dispatch_paused);
    assert_eq!((status.worker_count, status.job_type_count, status.active_jobs), (1, 1, 0));
    assert!(status.last_event_id > 0);

    let workers = api.c().list_workers(api.r(api::ListWorkersRequest::default())).await.unwrap().into_inner().workers;
    assert_eq!(workers.len(), 1);
    let w = &workers[0];
    assert_eq!((w.worker_id.as_str(), w.worker_instance_id.as_str()), ("w1", "w1-instance"));
    assert_eq!(w.capabilities[0].job_type, T);
    assert_eq!(w.capabilities[0].max_execution_concurrency, 4);
    assert!(w.connected_at.is_some() && !w.draining);
    let other_lane = api::ListWorkersRequest { lane: "iceberg".into() };
    assert!(api.c().list_workers(api.r(other_lane)).await.unwrap().into_inner().workers.is_empty());
    let bad_lane = api.c().list_workers(api.r(api::ListWorkersRequest { lane: "fast".into() })).await.unwrap_err();
    let json_refusal = http::get(&admin.http, "/api/plugin/workers?lane=fast").await;
    assert_eq!(json_refusal.status, 400);
    assert_eq!((bad_lane.code(), bad_lane.message()), (Code::InvalidArgument, json_error(&json_refusal).as_str()));

    let types = api.c().list_job_types(api.r(api::ListJobTypesRequest::default())).await.unwrap().into_inner();
    let t = &types.job_types[0];
    assert_eq!((types.job_types.len(), t.job_type.as_str(), t.display_name.as_str()), (1, T, "Test grpc_job"));
    assert!(t.has_descriptor && !t.enabled);
    assert_eq!((t.detectors, t.executors, t.descriptor_version, t.lane.as_str()), (1, 1, 1, "default"));

    // Save a part of the config; the rest keeps its saved values.
    let mut runtime = config.config.as_ref().unwrap().admin_runtime.unwrap();
    runtime.retry_limit = 1;
    let put = api::PutConfigRequest {
        job_type: T.into(),
        config: Some(pb::PersistedJobTypeConfig {
            admin_config_values: [("threshold".to_string(), int(42))].into(),
            admin_runtime: Some(runtime),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["admin_config_values".into()] }),
    };
    let saved = api.c().put_config(api.r(put)).await.unwrap().into_inner().config.unwrap();
    assert_eq!(saved.admin_config_values["threshold"], int(42));
    assert_eq!(saved.admin_runtime.unwrap().retry_limit, 0, "not in the mask: kept");
    assert_eq!(saved.updated_by, "admin");
    let json_config = admin.get(&format!("/api/plugin/job-types/{T}/config")).await;
    assert_eq!(json_config["admin_config_values"]["threshold"]["int64_value"], "42", "the JSON API sees it");

    let missing = api.c().get_config(api.r(api::GetConfigRequest { job_type: "nope".into() })).await.unwrap_err();
    let json_missing = http::get(&admin.http, "/api/plugin/job-types/nope/config").await;
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, json_error(&json_missing).as_str()));

    // The save is in the activity timeline, as the JSON API lists it.
    let request = api::ListActivitiesRequest { job_type: T.into(), ..Default::default() };
    let activities = api.c().list_activities(api.r(request)).await.unwrap().into_inner();
    let saved_activity = activities.activities.iter().find(|a| a.stage == "config").expect("the config activity");
    assert_eq!(saved_activity.message, "configuration saved by admin");
    assert_eq!(saved_activity.source, pb::ActivitySource::Admin as i32);
    let json_list = admin.get(&format!("/api/plugin/activities?job_type={T}")).await;
    let json_activity_ids: Vec<i64> = json_list.as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(activities.activities.iter().map(|a| a.id).collect::<Vec<_>>(), json_activity_ids);
    let one = api::ListActivitiesRequest { job_type: T.into(), limit: 1, ..Default::default() };
    let page = api.c().list_activities(api.r(one)).await.unwrap().into_inner();
    assert_eq!((page.activities.len(), page.next_before), (1, json_activity_ids[0]));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_run_list_inspect_and_replay_jobs_over_grpc() {
    let dir = TempDir::new("grpc-jobs");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1")).await;
    api.wait_config().await;

    let detect = api::DetectRequest { job_type: T.into(), ..Default::default() };
    let d = api.c().detect(api.r(detect)).await.unwrap().into_inner();
    assert!(d.finished && d.success, "{d:?}");
    assert_eq!((d.total_proposals, d.detector_worker_id.as_str()), (3, "w1"));
    let keys: Vec<&str> = d.proposals.iter().map(|p| p.dedupe_key.as_str()).collect();
    assert_eq!(keys, ["bad", "ok-1", "ok-2"], "by priority, then proposal id");
    assert_eq!(d.run.as_ref().unwrap().kind, "detection_preview");
    let all = api::ListJobsRequest::default();
    assert!(api.c().list_jobs(api.r(all.clone())).await.unwrap().into_inner().jobs.is_empty(), "a preview");

    let run = api.c().run(api.r(api::RunRequest { job_type: T.into(), ..Default::default() })).await.unwrap();
    let run = run.into_inner();
    assert!(run.finished && run.success, "{run:?}");
    assert_eq!((run.detected_count, run.ready_to_execute_count, run.job_ids.len()), (3, 3, 3));
    assert_eq!((run.executed_count, run.success_count, run.error_count, run.unfinished_count), (3, 2, 1, 0));

    let jobs = api.c().list_jobs(api.r(all.clone())).await.unwrap().into_inner();
    assert_eq!(ids(&jobs.jobs), json_ids(&admin.get("/api/plugin/jobs").await), "as the JSON API lists them");
    assert_eq!(jobs.next_before, "");
    let failed = api::ListJobsRequest { state: pb::JobState::Failed as i32, ..Default::default() };
    let failed = api.c().list_jobs(api.r(failed)).await.unwrap().into_inner().jobs;
    assert_eq!(failed.len(), 1);
    let bad = &failed[0];
    assert_eq!((bad.dedupe_key.as_str(), bad.error_message.as_str()), ("bad", "boom"));
    assert!(bad.dead_letter && bad.completed_at.is_some());
    let dead = api::ListJobsRequest { dead_letter: Some(false), ..Default::default() };
    assert_eq!(api.c().list_jobs(api.r(dead)).await.unwrap().into_inner().jobs.len(), 2);

    let page = api::ListJobsRequest { limit: 2, ..Default::default() };
    let first = api.c().list_jobs(api.r(page)).await.unwrap().into_inner();
    assert_eq!((first.jobs.len(), first.next_before.as_str()), (2, first.jobs[1].job_id.as_str()));
    let next = api::ListJobsRequest { limit: 2, before: first.next_before.clone(), ..Default::default() };
    let second = api.c().list_jobs(api.r(next)).await.unwrap().into_inner();
    assert_eq!((second.jobs.len(), second.next_before.as_str()), (1, ""));
    assert_eq!([ids(&first.jobs), ids(&second.jobs)].concat(), ids(&jobs.jobs));
    let bogus = api::ListJobsRequest { state: 99, ..Default::default() };
    assert_eq!(api.c().list_jobs(api.r(bogus)).await.unwrap_err().code(), Code::InvalidArgument);

    let request = api::GetJobRequest { job_id: bad.job_id.clone(), ..Default::default() };
    let detail = api.c().get_job(api.r(request)).await.unwrap().into_inner();
    let job = detail.job.unwrap();
    assert_eq!(job.parameters["path"], text("/data/bad"));
    assert_eq!(job.state, pb::JobState::Failed as i32);
    assert!(detail.r#final);
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!((detail.attempts[0].outcome.as_str(), detail.attempts[0].worker_id.as_str()), ("failed", "w1"));
    assert_eq!(detail.related_jobs.len(), 2);
    assert_eq!(detail.run_record.unwrap().kind, "execution");
    let missing = api.c().get_job(api.r(api::GetJobRequest { job_id: "j999999".into(), ..Default::default() })).await;
    let json_missing = http::get(&admin.http, "/api/plugin/jobs/j999999/detail").await;
    let missing = missing.unwrap_err();
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, json_error(&json_missing).as_str()));

    let dry = api::ReplayJobsRequest { job_type: T.into(), dry_run: true, ..Default::default() };
    let report = api.c().replay_jobs(api.r(dry)).await.unwrap().into_inner();
    assert_eq!((report.dry_run, report.matched, report.eligible, report.replayed.len()), (true, 1, 1, 0));
    let replay = api::ReplayJobsRequest { ids: vec![bad.job_id.clone()], ..Default::default() };
    let report = api.c().replay_jobs(api.r(replay)).await.unwrap().into_inner();
    assert_eq!(report.replayed.len(), 1);
    assert_eq!(report.replayed[0].replay_of, bad.job_id);
    let replayed = api.job(&report.replayed[0].job_id).await;
    assert_eq!((replayed.replay_of.as_str(), replayed.dedupe_key.as_str()), (bad.job_id.as_str(), "bad"));
    let not_an_id = api::ReplayJobsRequest { ids: vec!["x".into()], ..Default::default() };
    let refused = api.c().replay_jobs(api.r(not_an_id)).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, "\"x\" is not a job id"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_cancel_retry_and_expire_jobs_over_grpc() {
    let dir = TempDir::new("grpc-commands");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let w = FakeWorker::start(admin.grpc, spec("w1")).await;
    api.wait_config().await;

    let hang = pb::JobProposal {
        dedupe_key: "hang".into(),
        summary: "waits for a cancel".into(),
        priority: pb::JobPriority::High as i32,
        ..Default::default()
    };
    let enqueue = api::EnqueueJobRequest { job_type: T.into(), job: Some(hang.clone()) };
    let job = api.c().enqueue_job(api.r(enqueue.clone())).await.unwrap().into_inner().job.unwrap();
    assert_eq!((job.priority, job.summary.as_str()), (pb::JobPriority::High as i32, "waits for a cancel"));
    let duplicate = api.c().enqueue_job(api.r(enqueue)).await.unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert_eq!(duplicate.metadata().get("x-plughost-job-id").unwrap().to_str().unwrap(), job.job_id);
    assert_eq!(duplicate.message(), format!("an active job has the same dedupe key: {}", job.job_id));
    api.wait_state(&job.job_id, pb::JobState::Running).await;

    let cancel = api::CancelJobRequest { job_id: job.job_id.clone(), reason: "not today".into() };
    api.c().cancel_job(api.r(cancel)).await.unwrap();
    w.inbox
        .wait_for("the cancel request", WAIT, |m| {
            matches!(m.body, Some(pb::admin_to_worker_message::Body::CancelRequest(_)))
        })
        .await;
    api.wait_state(&job.job_id, pb::JobState::Canceled).await;

    let retried = api.c().retry_job(api.r(api::RetryJobRequest { job_id: job.job_id.clone() })).await.unwrap();
    assert_eq!(retried.into_inner().job.unwrap().job_id, job.job_id);
    api.wait_state(&job.job_id, pb::JobState::Running).await;
    let expire = api::ExpireJobRequest { job_id: job.job_id.clone(), reason: String::new() };
    let expired = api.c().expire_job(api.r(expire.clone())).await.unwrap().into_inner();
    assert!(expired.expired, "{expired:?}");
    let failed = api.wait_state(&job.job_id, pb::JobState::Failed).await;
    assert_eq!(failed.error_message, "expired by operator", "{failed:?}");

    // A job that is no longer active: expire answers as the JSON API does, cancel is refused.
    let again = api.c().expire_job(api.r(expire)).await.unwrap().into_inner();
    let json_again =
        http::post_json(&admin.http, &format!("/api/plugin/jobs/{}/expire", job.job_id), &json!({})).await.json();
    assert!(!again.expired);
    assert_eq!(again.reason, json_again["reason"].as_str().unwrap());
    assert_eq!(again.job.unwrap().state, pb::JobState::Failed as i32);
    let cancel = api::CancelJobRequest { job_id: job.job_id.clone(), reason: String::new() };
    let refused = api.c().cancel_job(api.r(cancel)).await.unwrap_err();
    let json_refused =
        http::post_json(&admin.http, &format!("/api/plugin/jobs/{}/cancel", job.job_id), &json!({})).await;
    assert_eq!(json_refused.status, 409);
    assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, json_error(&json_refused).as_str()));
    let unknown = api::CancelJobRequest { job_id: "nonsense".into(), reason: String::new() };
    let unknown = api.c().cancel_job(api.r(unknown)).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (Code::NotFound, "no job \"nonsense\""));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_holds_drains_and_the_audit_trail_over_grpc() {
    let dir = TempDir::new("grpc-holds");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1")).await;
    api.wait_config().await;

    let mut pause = api.r(api::SetPausedRequest { paused: true });
    pause.metadata_mut().insert("x-request-id", "grpc-pause-1".parse().unwrap());
    let paused = api.c().set_dispatch_paused(pause).await.unwrap();
    assert_eq!(paused.metadata().get("x-request-id").unwrap(), "grpc-pause-1", "the request id is echoed");
    assert!(paused.into_inner().paused);
    let status = api.c().get_status(api.r(api::GetStatusRequest {})).await.unwrap().into_inner();
    assert!(status.dispatch_paused);
    let hold = status.holds.iter().find(|h| h.kind == api::HoldKind::Dispatch as i32).expect("the dispatch hold");
    assert_eq!(hold.set_by, "admin");
    api.c().set_dispatch_paused(api.r(api::SetPausedRequest { paused: false })).await.unwrap();
    api.c().set_schedules_paused(api.r(api::SetPausedRequest { paused: true })).await.unwrap();
    assert_eq!(admin.get("/api/plugin/holds").await["schedules_paused"], true);
    api.c().set_schedules_paused(api.r(api::SetPausedRequest { paused: false })).await.unwrap();
    let status = api.c().get_status(api.r(api::GetStatusRequest {})).await.unwrap().into_inner();
    assert!(!status.dispatch_paused && !status.schedules_paused && status.holds.is_empty());

    let hold = api::HoldJobTypeRequest { job_type: T.into(), detection: Some(true), dispatch: None };
    let held = api.c().hold_job_type(api.r(hold)).await.unwrap().into_inner();
    assert_eq!(held.detection.unwrap().set_by, "admin");
    assert!(held.dispatch.is_none());
    let refused = api.c().detect(api.r(api::DetectRequest { job_type: T.into(), ..Default::default() })).await;
    let json_refused = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/detect"), &json!({})).await;
    assert_eq!(json_refused.status, 409);
    let refused = refused.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, json_error(&json_refused).as_str()));
    let release = api::HoldJobTypeRequest { job_type: T.into(), detection: Some(false), dispatch: None };
    assert!(api.c().hold_job_type(api.r(release)).await.unwrap().into_inner().detection.is_none());
    let neither = api::HoldJobTypeRequest { job_type: T.into(), ..Default::default() };
    assert_eq!(api.c().hold_job_type(api.r(neither)).await.unwrap_err().code(), Code::InvalidArgument);
    let unknown = api::HoldJobTypeRequest { job_type: "nope".into(), detection: Some(true), dispatch: None };
    assert_eq!(api.c().hold_job_type(api.r(unknown)).await.unwrap_err().code(), Code::NotFound);

    let drain = api::DrainWorkerRequest { worker_id: "w1".into(), draining: None };
    let drained = api.c().drain_worker(api.r(drain)).await.unwrap().into_inner();
    assert_eq!((drained.worker_id.as_str(), drained.draining), ("w1", true));
    let workers = api.c().list_workers(api.r(api::ListWorkersRequest::default())).await.unwrap().into_inner();
    assert!(workers.workers[0].draining);
    let undrain = api::DrainWorkerRequest { worker_id: "w1".into(), draining: Some(false) };
    assert!(!api.c().drain_worker(api.r(undrain)).await.unwrap().into_inner().draining);
    let nobody = api::DrainWorkerRequest { worker_id: "nobody".into(), draining: None };
    assert_eq!(api.c().drain_worker(api.r(nobody)).await.unwrap_err().code(), Code::NotFound);

    let request = api::ListAuditEventsRequest { action: "pause_dispatch".into(), ..Default::default() };
    let audit = api.c().list_audit_events(api.r(request)).await.unwrap().into_inner();
    assert_eq!(audit.events.len(), 2, "{audit:?}");
    let first = &audit.events[1];
    assert_eq!(
        (first.request_id.as_str(), first.actor.as_str(), first.actor_kind.as_str()),
        ("grpc-pause-1", "admin", "token")
    );
    assert_eq!(first.outcome, "done");
    let paused = &first.params.as_ref().unwrap().fields["paused"];
    assert_eq!(paused.kind, Some(prost_types::value::Kind::BoolValue(true)));
    let json_audit = admin.get("/api/plugin/audit?action=pause_dispatch").await;
    let json_audit_ids: Vec<i64> =
        json_audit["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(audit.events.iter().map(|e| e.id).collect::<Vec<_>>(), json_audit_ids);
    let page = api::ListAuditEventsRequest { action: "pause_dispatch".into(), limit: 1, ..Default::default() };
    let page = api.c().list_audit_events(api.r(page)).await.unwrap().into_inner();
    assert_eq!(page.next_before, json_audit_ids[0]);
    let next = api::ListAuditEventsRequest {
        action: "pause_dispatch".into(),
        limit: 1,
        before: page.next_before,
        ..Default::default()
    };
    assert_eq!(api.c().list_audit_events(api.r(next)).await.unwrap().into_inner().events[0].id, json_audit_ids[1]);
    let bad = api::ListAuditEventsRequest { outcome: "maybe".into(), ..Default::default() };
    let bad = api.c().list_audit_events(api.r(bad)).await.unwrap_err();
    let json_bad = http::get(&admin.http, "/api/plugin/audit?outcome=maybe").await;
    assert_eq!((bad.code(), bad.message()), (Code::InvalidArgument, json_error(&json_bad).as_str()));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_an_api_token_with_the_role_and_a_worker_token_is_not_one() {
    let dir = TempDir::new("grpc-auth");
    let admin = TestAdmin::start(dir.path(), |c| c.worker_tokens = vec!["w0rker-s3cret".into()]).await;
    // The worker needs its worker token and no API token.
    let mut worker = spec("w1");
    worker.token = Some("w0rker-s3cret".into());
    let w = FakeWorker::start(admin.grpc, worker).await;
    assert!(w.hello.accepted, "{}", w.hello.message);

    let mut anonymous = AdminServiceClient::connect(format!("http://{}", admin.grpc)).await.unwrap();
    let refused = anonymous.get_status(api::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = anonymous.watch_events(api::WatchEventsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    for token in ["w0rker-s3cret", "pht_not-a-token"] {
        let refused = anonymous.list_jobs(with_token(token, api::ListJobsRequest::default())).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{token}: {refused:?}");
        let refused = anonymous.set_dispatch_paused(with_token(token, api::SetPausedRequest { paused: true })).await;
        assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated, "{token}");
    }
    let activities = admin.get("/api/plugin/activities?limit=200").await;
    assert!(
        activities.as_array().unwrap().iter().any(|a| a["stage"] == "auth"
            && a["message"]
                .as_str()
                .unwrap()
                .starts_with("unauthenticated request refused: gRPC plughost.admin.v1.AdminService/")),
        "{activities}"
    );

    let viewer = Api::connect(&admin, &new_token(&admin, "dashboard", "viewer").await).await;
    assert!(viewer.c().list_jobs(viewer.r(api::ListJobsRequest::default())).await.is_ok(), "a viewer reads");
    let refused = viewer.c().set_dispatch_paused(viewer.r(api::SetPausedRequest { paused: true })).await.unwrap_err();
    let bearer = format!("Bearer {}", viewer.token);
    let json_refused = http::request(
        &admin.http,
        "POST",
        "/api/plugin/dispatch?paused=true",
        &[("authorization", bearer.as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(json_refused.status, 403);
    assert_eq!((refused.code(), refused.message()), (Code::PermissionDenied, json_error(&json_refused).as_str()));
    let audit_refused = viewer.c().list_audit_events(viewer.r(api::ListAuditEventsRequest::default())).await;
    assert_eq!(audit_refused.unwrap_err().code(), Code::PermissionDenied);
    let operator = Api::connect(&admin, &new_token(&admin, "ops", "operator").await).await;
    operator.c().set_dispatch_paused(operator.r(api::SetPausedRequest { paused: false })).await.unwrap();
    let put = api::PutConfigRequest { job_type: T.into(), ..Default::default() };
    assert_eq!(operator.c().put_config(operator.r(put)).await.unwrap_err().code(), Code::PermissionDenied);

    // The refusal is audited, with the viewer as the actor.
    let owner = Api::as_admin(&admin, dir.path()).await;
    let request = api::ListAuditEventsRequest { actor: "dashboard".into(), ..Default::default() };
    let audit = owner.c().list_audit_events(owner.r(request)).await.unwrap().into_inner().events;
    assert!(audit.iter().any(|e| e.action == "pause_dispatch" && e.outcome == "refused"), "{audit:?}");
    let done = api::ListAuditEventsRequest { actor: "ops".into(), outcome: "done".into(), ..Default::default() };
    assert_eq!(owner.c().list_audit_events(owner.r(done)).await.unwrap().into_inner().events.len(), 1);

    // What a caller sends is bounded.
    let long = api::ListJobsRequest { text: "x".repeat(2000), ..Default::default() };
    let refused = owner.c().list_jobs(owner.r(long)).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, "text is over 1024 bytes"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_commands_need_the_approval_token_and_run_now_is_capped() {
    let dir = TempDir::new("grpc-guardrails");
    let admin = TestAdmin::start(dir.path(), |c| {
        c.approval_token = Some("approve-me-please-2026".into());
        c.run_now_max = admin::RateCap { max: 1, window: Duration::from_secs(3600) };
    })
    .await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1")).await;
    api.wait_config().await;

    let refused = api.c().set_schedules_paused(api.r(api::SetPausedRequest { paused: true })).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("needs approval"), "{refused:?}");
    let mut approved = api.r(api::SetPausedRequest { paused: true });
    approved.metadata_mut().insert("x-plughost-approval", "approve-me-please-2026".parse().unwrap());
    assert!(api.c().set_schedules_paused(approved).await.unwrap().into_inner().paused);

    let detect = api::DetectRequest { job_type: T.into(), no_wait: true, ..Default::default() };
    let started = api.c().detect(api.r(detect.clone())).await.unwrap().into_inner();
    assert!(!started.finished);
    let capped = api.c().detect(api.r(detect)).await.unwrap_err();
    assert_eq!(capped.code(), Code::ResourceExhausted);
    let retry_after: u64 = capped.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry_after > 0 && retry_after <= 3600, "{retry_after}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_every_grpc_caller_is_a_local_admin_as_on_http() {
    let dir = TempDir::new("grpc-auth-off");
    let admin = TestAdmin::start(dir.path(), |c| c.auth = admin::auth::AuthMode::Off).await;
    let mut client = AdminServiceClient::connect(format!("http://{}", admin.grpc)).await.unwrap();
    assert!(client.set_dispatch_paused(api::SetPausedRequest { paused: true }).await.unwrap().into_inner().paused);
    let audit = client.list_audit_events(api::ListAuditEventsRequest::default()).await.unwrap().into_inner();
    assert_eq!((audit.events[0].actor.as_str(), audit.events[0].actor_kind.as_str()), ("local", "local"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_mapped_to_an_identity_calls_the_admin_api_and_a_worker_certificate_cannot() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let pki = tests::certs::TestPki::generate();
    let dir = TempDir::new("grpc-mtls");
    let files = dir.path().join("pki");
    std::fs::create_dir_all(&files).unwrap();
    for (name, pem) in
        [("ca.pem", &pki.ca_pem), ("server.pem", &pki.server.cert_pem), ("server.key", &pki.server.key_pem)]
    {
        std::fs::write(files.join(name), pem).unwrap();
    }
    let data = dir.path().join("data");
    let tls = admin::TlsFiles {
        cert: files.join("server.pem"),
        key: files.join("server.key"),
        client_ca: Some(files.join("ca.pem")),
    };
    let admin = TestAdmin::start(&data, |c| c.grpc_tls = Some(tls.clone())).await;
    let operator_cert = pki.ca.client("deploy-bot");
    let fingerprint = admin::auth::tokens::certificate_fingerprint(operator_cert.cert_pem.as_bytes()).unwrap();
    admin.components().auth.tokens.add_certificate("deploy-bot", admin::auth::Role::Operator, &fingerprint, 1).unwrap();
    let channel = |cert: &tests::certs::CertPair| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{}", admin.grpc)).unwrap().tls_config(tls).unwrap()
    };

    let mut mapped = AdminServiceClient::new(channel(&operator_cert).connect().await.unwrap());
    assert!(mapped.set_dispatch_paused(api::SetPausedRequest { paused: true }).await.unwrap().into_inner().paused);
    let audit = mapped.list_audit_events(api::ListAuditEventsRequest::default()).await.unwrap().into_inner();
    assert_eq!((audit.events[0].actor.as_str(), audit.events[0].actor_kind.as_str()), ("deploy-bot", "certificate"));
    // Choosing where the workers connect is the admin role's.
    let detect = api::DetectRequest {
        job_type: T.into(),
        cluster_context: Some(pb::ClusterContext::default()),
        ..Default::default()
    };
    let refused = mapped.detect(detect).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("deploy-bot has the operator role"), "{refused:?}");

    // A worker's certificate (signed by the same CA, mapped to no one) is a worker's only.
    let mut worker_cert = AdminServiceClient::new(channel(&pki.client).connect().await.unwrap());
    let refused = worker_cert.get_status(api::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_put_is_refused_with_the_json_apis_message_and_field_errors_and_secrets_never_come_back() {
    let dir = TempDir::new("grpc-config");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let mut worker = spec("w1");
    worker.descriptors.get_mut(T).unwrap().admin_config_form.as_mut().unwrap().sections[0].fields.push(
        pb::ConfigField {
            name: "api_token".into(),
            label: "API token".into(),
            field_type: pb::ConfigFieldType::String as i32,
            widget: pb::ConfigWidget::Password as i32,
            sensitive: true,
            ..Default::default()
        },
    );
    let _w = FakeWorker::start(admin.grpc, worker).await;
    api.wait_config().await;
    let base = dir.path().join("plugin/job_types").join(T);
    let before = std::fs::read(base.join("config.pb")).unwrap();

    let path = format!("/api/plugin/job-types/{T}/config");
    let cases = [
        (
            json!({"admin_config_values": {"threshold": {"int64_value": "500"}}}),
            pb::PersistedJobTypeConfig {
                admin_config_values: [("threshold".to_string(), int(500))].into(),
                ..Default::default()
            },
        ),
        (
            json!({"admin_config_values": {"nope": {"int64_value": "1"}}}),
            pb::PersistedJobTypeConfig {
                admin_config_values: [("nope".to_string(), int(1))].into(),
                ..Default::default()
            },
        ),
        (
            json!({"admin_runtime": {"retry_limit": -1}}),
            pb::PersistedJobTypeConfig {
                admin_runtime: Some(pb::AdminRuntimeConfig { retry_limit: -1, ..Default::default() }),
                ..Default::default()
            },
        ),
    ];
    for (body, config) in cases {
        let r = http::put_json(&admin.http, &path, &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let json = r.json();
        let refused = api
            .c()
            .put_config(api.r(api::PutConfigRequest { job_type: T.into(), config: Some(config), update_mask: None }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{body}");
        assert_eq!(refused.message(), json["error"].as_str().unwrap(), "{body}: the same message");
        let violations: Vec<(String, String)> = refused
            .get_details_bad_request()
            .expect("field errors in the details")
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect();
        let field_errors: Vec<(String, String)> = json["field_errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string()))
            .collect();
        assert!(!violations.is_empty());
        assert_eq!(violations, field_errors, "{body}: the same field errors");
    }
    // A job type name the JSON API refuses, refused alike.
    let refused = api.c().get_config(api.r(api::GetConfigRequest { job_type: "bad name".into() })).await.unwrap_err();
    let json_refused = http::get(&admin.http, "/api/plugin/job-types/bad%20name/config").await;
    assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, json_error(&json_refused).as_str()));
    let mask = prost_types::FieldMask { paths: vec!["job_type".into()] };
    let refused = api
        .c()
        .put_config(api.r(api::PutConfigRequest { job_type: T.into(), config: None, update_mask: Some(mask) }))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(std::fs::read(base.join("config.pb")).unwrap(), before, "refused saves change nothing");

    // A secret is saved, and never comes back out.
    let secret = pb::PersistedJobTypeConfig {
        admin_config_values: [("threshold".to_string(), int(7)), ("api_token".to_string(), text("hunter2-secret"))]
            .into(),
        ..Default::default()
    };
    let put = api::PutConfigRequest { job_type: T.into(), config: Some(secret), update_mask: None };
    let saved = api.c().put_config(api.r(put)).await.unwrap().into_inner();
    let got = api.c().get_config(api.r(api::GetConfigRequest { job_type: T.into() })).await.unwrap().into_inner();
    for answer in [&saved, &got] {
        let values = &answer.config.as_ref().unwrap().admin_config_values;
        assert_eq!(values["threshold"], int(7));
        assert!(!values.contains_key("api_token"), "{values:?}");
        assert!(!format!("{answer:?}").contains("hunter2"), "{answer:?}");
    }
    let kept = admin.components().configs.config(T).unwrap().admin_config_values["api_token"].clone();
    assert_eq!(kept, text("hunter2-secret"), "the workers still get it");
    admin.stop().await;
}

/// Reads events from a stream until `until` matches one; returns them all.
async fn read_until(
    stream: &mut tonic::Streaming<api::Event>,
    what: &str,
    until: impl Fn(&api::Event) -> bool,
) -> Vec<api::Event> {
    within(what, WAIT, async {
        let mut seen = Vec::new();
        loop {
            let event = stream.next().await.expect("the stream goes on").expect("an event");
            let done = until(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    })
    .await
}

fn is_config_saved(e: &api::Event, updated_by: &str) -> bool {
    matches!(&e.kind, Some(api::event::Kind::ConfigSaved(c)) if c.updated_by == updated_by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_after_the_last_event_id_with_exactly_the_events_that_followed() {
    let dir = TempDir::new("grpc-events");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let start = api.c().get_status(api.r(api::GetStatusRequest {})).await.unwrap().into_inner().last_event_id;
    // The reference stream sees everything from the start.
    let watch = async |after: Option<u64>| {
        let request = api.r(api::WatchEventsRequest { after_event_id: after });
        api.c().watch_events(request).await.expect("watch events").into_inner()
    };
    let mut all = watch(Some(start)).await;
    let mut partial = watch(Some(start)).await;

    let _w = FakeWorker::start(admin.grpc, spec("w1")).await;
    api.wait_config().await;
    let joined = read_until(
        &mut partial,
        "the worker joining",
        |e| matches!(&e.kind, Some(api::event::Kind::WorkerJoined(j)) if j.worker_id == "w1" && j.job_types == [T]),
    )
    .await;
    let last = joined.last().unwrap().id;
    assert_eq!(joined[0].id, start + 1, "from the first event after the id");
    drop(partial);

    // While no one holds the partial stream: a drain, a config save by a second token.
    let drain = api::DrainWorkerRequest { worker_id: "w1".into(), draining: None };
    api.c().drain_worker(api.r(drain)).await.unwrap();
    let editor = Api::connect(&admin, &new_token(&admin, "editor", "admin").await).await;
    let put = api::PutConfigRequest {
        job_type: T.into(),
        config: Some(pb::PersistedJobTypeConfig {
            admin_config_values: [("threshold".to_string(), int(5))].into(),
            ..Default::default()
        }),
        update_mask: None,
    };
    editor.c().put_config(editor.r(put)).await.unwrap();

    let reference = read_until(&mut all, "the config save (reference)", |e| is_config_saved(e, "editor")).await;
    let mut resumed = watch(Some(last)).await;
    let got = read_until(&mut resumed, "the config save (resumed)", |e| is_config_saved(e, "editor")).await;
    let expected: Vec<&api::Event> = reference.iter().filter(|e| e.id > last).collect();
    assert_eq!(got.iter().collect::<Vec<_>>(), expected, "exactly the events after the id, in order");
    assert_eq!(got[0].id, last + 1);
    assert!(got.windows(2).all(|w| w[1].id == w[0].id + 1), "no gap, no repeat");
    assert!(
        got.iter()
            .any(|e| matches!(&e.kind, Some(api::event::Kind::WorkerDrain(d)) if d.worker_id == "w1" && d.draining))
    );

    // An id this run never handed out: reset first.
    let mut stale = watch(Some(1)).await;
    let first = within("the reset", WAIT, stale.next()).await.unwrap().unwrap();
    let Some(api::event::Kind::Reset(reset)) = first.kind else { panic!("not a reset: {first:?}") };
    assert!(reset.reason.contains("not from this run"), "{reset:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_event_stream_outlives_the_handshake_deadline_that_closes_idle_connections() {
    let dir = TempDir::new("grpc-established");
    let admin = TestAdmin::start(dir.path(), |c| c.connections.handshake_timeout = Duration::from_millis(500)).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let request = api.r(api::WatchEventsRequest::default());
    let mut events = api.c().watch_events(request).await.unwrap().into_inner();

    // A connection opened after the stream's and never used: once the admin has closed it,
    // the stream's connection is past its handshake deadline too.
    let mut idle = tokio::net::TcpStream::connect(admin.grpc).await.unwrap();
    within("the idle connection is closed", WAIT, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        while matches!(idle.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    // An anonymous call is refused and recorded: an activity event on the stream.
    let mut anonymous = AdminServiceClient::connect(format!("http://{}", admin.grpc)).await.unwrap();
    assert_eq!(anonymous.get_status(api::GetStatusRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let seen = read_until(
        &mut events,
        "the refusal's activity",
        |e| matches!(&e.kind, Some(api::event::Kind::Activity(a)) if a.stage == "auth"),
    )
    .await;
    let Some(api::event::Kind::Activity(refusal)) = &seen.last().unwrap().kind else { unreachable!() };
    assert_eq!(refusal.message, "unauthenticated request refused: gRPC plughost.admin.v1.AdminService/GetStatus");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_store_cannot_commit_and_serving_again_once_it_can() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let dir = TempDir::new("grpc-health");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    // Health needs no credentials.
    let channel = Channel::from_shared(format!("http://{}", admin.grpc)).unwrap().connect().await.unwrap();
    let health = HealthClient::new(channel);
    let services = ["", "plughost.admin.v1.AdminService", "plugin.PluginControlService"];
    let check = |service: &str| {
        let mut health = health.clone();
        let service = service.to_string();
        async move { health.check(HealthCheckRequest { service }).await.unwrap().into_inner().status }
    };
    let mut watch = health.clone().watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    // The server as a whole ("") changes last, so once it has, every service has.
    let mut wait_status = async |status: ServingStatus| {
        within(&format!("health {status:?}"), WAIT, async {
            while watch.next().await.expect("the health stream goes on").unwrap().status != status as i32 {}
        })
        .await
    };
    wait_status(ServingStatus::Serving).await;
    for service in services {
        assert_eq!(check(service).await, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.clone().check(HealthCheckRequest { service: "no.Such".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // The database refuses every audit row from now on, as a full or failing disk would
    // refuse the commit: a real SQLite error inside the writer's transaction.
    let db = rusqlite::Connection::open(dir.path().join("plugin/state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'injected'); END;")
        .unwrap();
    let (client, request) = (api.c(), api.r(api::SetPausedRequest { paused: true }));
    let pause = tokio::spawn(async move { client.clone().set_dispatch_paused(request).await });
    wait_status(ServingStatus::NotServing).await;
    for service in services {
        assert_eq!(check(service).await, ServingStatus::NotServing as i32, "{service:?}");
    }
    let readyz = http::get(&admin.http, "/readyz").await;
    assert_eq!((readyz.status, readyz.text().contains("cannot commit")), (503, true));
    assert!(!pause.is_finished(), "a command is answered only once its audit event is durable");

    db.execute_batch("DROP TRIGGER refuse;").unwrap();
    wait_status(ServingStatus::Serving).await;
    for service in services {
        assert_eq!(check(service).await, ServingStatus::Serving as i32, "{service:?}");
    }
    let paused = within("the pause", WAIT, pause).await.unwrap().unwrap();
    assert!(paused.into_inner().paused);
    admin.stop().await;
}

/// A codec for messages known only by their descriptors (from reflection).
#[derive(Clone)]
struct DynamicCodec {
    output: prost_reflect::MessageDescriptor,
}

struct DynamicEncoder;
struct DynamicDecoder(prost_reflect::MessageDescriptor);

impl tonic::codec::Codec for DynamicCodec {
    type Encode = prost_reflect::DynamicMessage;
    type Decode = prost_reflect::DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.output.clone())
    }
}

impl tonic::codec::Encoder for DynamicEncoder {
    type Item = prost_reflect::DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for DynamicDecoder {
    type Item = prost_reflect::DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        prost_reflect::DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// One reflection request and its answer.
async fn reflect(
    client: &mut tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient<Channel>,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> tonic_reflection::pb::v1::server_reflection_response::MessageResponse {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    within("a reflection answer", WAIT, answers.next()).await.unwrap().unwrap().message_response.unwrap()
}

/// Every file the reflection service holds for `symbol`, with the files they import.
async fn files_for(
    client: &mut tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient<Channel>,
    symbol: &str,
) -> Vec<prost_types::FileDescriptorProto> {
    use prost::Message;
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(symbol.into())];
    while let Some(request) = wanted.pop() {
        let MessageResponse::FileDescriptorResponse(answer) = reflect(client, request).await else {
            panic!("no file descriptors")
        };
        for bytes in answer.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            if files.iter().any(|f| f.name == file.name) {
                continue;
            }
            for dependency in &file.dependency {
                if !files.iter().any(|f| f.name() == dependency) {
                    wanted.push(MessageRequest::FileByFilename(dependency.clone()));
                }
            }
            files.push(file);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_both_services_and_describes_enough_to_call_the_admin_api_without_stubs() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let dir = TempDir::new("grpc-reflection");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let api = Api::as_admin(&admin, dir.path()).await;
    let _w = FakeWorker::start(admin.grpc, spec("w1")).await;
    api.wait_config().await;
    let enqueue = api::EnqueueJobRequest { job_type: T.into(), job: Some(proposal("reflected")) };
    let created = api.c().enqueue_job(api.r(enqueue)).await.unwrap().into_inner().job.unwrap();

    // Reflection needs no credentials, as is customary.
    let channel = Channel::from_shared(format!("http://{}", admin.grpc)).unwrap().connect().await.unwrap();
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let MessageResponse::ListServicesResponse(listed) =
        reflect(&mut reflection, MessageRequest::ListServices(String::new())).await
    else {
        panic!("no service list")
    };
    let names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    for service in ["plughost.admin.v1.AdminService", "plugin.PluginControlService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }

    let files = files_for(&mut reflection, "plughost.admin.v1.AdminService").await;
    let mut pool = prost_reflect::DescriptorPool::new();
    pool.add_file_descriptor_protos(files).expect("the reflected files make a pool");
    let service = pool.get_service_by_name("plughost.admin.v1.AdminService").expect("the admin service");

    let call = |method_name: &str, fill: &dyn Fn(&mut prost_reflect::DynamicMessage)| {
        let method = service.methods().find(|m| m.name() == method_name).expect("the method");
        let mut input = prost_reflect::DynamicMessage::new(method.input());
        fill(&mut input);
        let path: tonic::codegen::http::uri::PathAndQuery =
            format!("/{}/{}", service.full_name(), method.name()).parse().unwrap();
        let codec = DynamicCodec { output: method.output() };
        let request = with_token(&api.token, input);
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            grpc.unary(request, path, codec).await.map(|r| r.into_inner())
        }
    };
    let status = call("GetStatus", &|_| {}).await.unwrap();
    let port = status.get_field_by_name("worker_grpc_port").unwrap().as_u32().unwrap();
    assert_eq!(port, u32::from(admin.grpc.port()));
    assert_eq!(status.get_field_by_name("protocol_version").unwrap().as_str().unwrap(), "plugin.v1");

    let jobs = call("ListJobs", &|m| {
        m.set_field_by_name("job_type", prost_reflect::Value::String(T.into()));
        m.set_field_by_name("limit", prost_reflect::Value::U32(10));
    })
    .await
    .unwrap();
    let jobs = jobs.get_field_by_name("jobs").unwrap();
    let jobs = jobs.as_list().unwrap();
    assert_eq!(jobs.len(), 1);
    let job = jobs[0].as_message().unwrap();
    assert_eq!(job.get_field_by_name("job_id").unwrap().as_str().unwrap(), created.job_id);
    assert_eq!(job.get_field_by_name("dedupe_key").unwrap().as_str().unwrap(), "reflected");

    let without_token = {
        let method = service.methods().find(|m| m.name() == "GetStatus").unwrap();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path: tonic::codegen::http::uri::PathAndQuery =
            "/plughost.admin.v1.AdminService/GetStatus".parse().unwrap();
        grpc.unary(
            Request::new(prost_reflect::DynamicMessage::new(method.input())),
            path,
            DynamicCodec { output: method.output() },
        )
        .await
    };
    assert_eq!(without_token.unwrap_err().code(), Code::Unauthenticated, "reflection opens no door");
    admin.stop().await;
}
