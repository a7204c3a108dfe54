//! The admin end to end over real gRPC and a real SQLite file: detection, dedupe,
//! dispatch, progress, completion, retries, dead letters, capacity, cancel, drain,
//! not_before and expires_at, and a real SDK worker that stops mid-job.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use proto::pb;
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, proposal},
    harness::TestAdmin,
    http,
    plugins::PluginWorker,
    wait_for,
};
use worker_sdk::prelude::*;

const T: &str = "test_job";
const WAIT: Duration = Duration::from_secs(30);

/// Proposals the detector returns, changeable by the test between runs.
fn shared_proposals(list: Vec<Vec<pb::JobProposal>>) -> Arc<Mutex<Vec<Vec<pb::JobProposal>>>> {
    Arc::new(Mutex::new(list))
}

fn detector(spec: FakeWorkerSpec, proposals: &Arc<Mutex<Vec<Vec<pb::JobProposal>>>>) -> FakeWorkerSpec {
    let p = proposals.clone();
    spec.detect(move |_| p.lock().unwrap().clone())
}

async fn attempts(admin: &TestAdmin, job_id: &str) -> Vec<Value> {
    admin.get(&format!("/api/plugin/jobs/{job_id}/detail")).await["attempts"].as_array().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_proposals_become_deduplicated_jobs_that_run_to_completion() {
    tests::init_tracing();
    let dir = TempDir::new("flow");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("a"), proposal("b")], vec![proposal("b"), proposal("c")]]);
    let spec = detector(FakeWorkerSpec::new("w1", T, 4), &proposals).exec(|_| Exec::Succeed(vec![25.0, 75.0]));
    let worker = FakeWorker::start(admin.grpc, spec).await;

    let jobs = admin.wait_jobs("three jobs succeeded", &format!("job_type={T}"), 3, "succeeded").await;
    let mut keys: Vec<&str> = jobs.iter().map(|j| j["dedupe_key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"], "b proposed twice in one run becomes one job");
    for j in &jobs {
        assert_eq!(j["worker_id"], "w1");
        assert_eq!(j["progress_percent"], 100.0);
        let a = attempts(&admin, j["job_id"].as_str().unwrap()).await;
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["outcome"], "succeeded");
    }
    assert_eq!(worker.inbox.executions().len(), 3);
    let exec = &worker.inbox.executions()[0];
    assert_eq!(exec.attempt, 1);
    assert!(exec.admin_config_values.contains_key("threshold"), "saved config travels with the job");

    let runs = admin.get(&format!("/api/plugin/job-types/{T}/runs")).await;
    let detection =
        runs["successes"].as_array().unwrap().iter().find(|r| r["kind"] == "detection").expect("detection run");
    assert_eq!(detection["jobs_created"], 3);
    assert_eq!(detection["proposals"], 4);
    assert!(runs["successes"].as_array().unwrap().iter().any(|r| r["kind"] == "execution"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_matching_an_active_job_are_not_duplicated() {
    let dir = TempDir::new("dedupe");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("x"), proposal("y")]]);
    let spec = detector(FakeWorkerSpec::new("w1", T, 4), &proposals).exec(|_| Exec::HangUntilCancel);
    let worker = FakeWorker::start(admin.grpc, spec).await;
    admin.wait_jobs("two running jobs", &format!("job_type={T}"), 2, "running").await;

    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("second detection finished", WAIT, || async {
        let runs = admin.get(&format!("/api/plugin/job-types/{T}/runs")).await;
        let n = runs["successes"].as_array().unwrap().iter().filter(|r| r["kind"] == "detection").count();
        (n == 2).then_some(())
    })
    .await;
    assert_eq!(admin.jobs(&format!("job_type={T}")).await.len(), 2, "no job was added for x and y");
    assert_eq!(worker.inbox.executions().len(), 2);
    let results = admin.get(&format!("/api/plugin/job-types/{T}/detection-results")).await;
    assert!(results["proposals"].as_array().unwrap().iter().all(|p| p["outcome"] == "deduplicated"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_on_another_executor_then_dead_lettered() {
    let dir = TempDir::new("retry");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("flaky")]]);
    let mut spec = detector(FakeWorkerSpec::new("w1", T, 1), &proposals).exec(|_| Exec::Fail("disk on fire".into()));
    spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap().retry_backoff_seconds = 1;
    // The second executor joins first (so both are there when the job is created), and
    // its descriptor is the one stored, so it carries the same short backoff.
    let mut spec2 = FakeWorkerSpec::new("w2", T, 1).executor_only().exec(|_| Exec::Fail("also broken".into()));
    spec2.descriptors = spec.descriptors.clone();
    let _w2 = FakeWorker::start(admin.grpc, spec2).await;
    let _w1 = FakeWorker::start(admin.grpc, spec).await;

    let jobs = admin.wait_jobs("job dead-lettered", &format!("job_type={T}"), 1, "failed").await;
    let job = &jobs[0];
    assert_eq!(job["dead_letter"], true);
    let a = attempts(&admin, job["job_id"].as_str().unwrap()).await;
    assert_eq!(a.len(), 3, "retry_limit 2 means three attempts: {a:?}");
    assert!(a.iter().all(|x| x["outcome"] == "failed"));
    assert_ne!(a[0]["worker_id"], a[1]["worker_id"], "the retry goes to the other executor");
    let dead = admin.jobs("dead_letter=true").await;
    assert_eq!(dead.len(), 1);

    // An operator retry starts a new cycle.
    let id = job["job_id"].as_str().unwrap();
    let r = http::post_json(&admin.http, &format!("/api/plugin/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("retried job dead-lettered again", WAIT, || async {
        let a = attempts(&admin, id).await;
        let j = admin.get(&format!("/api/plugin/jobs/{id}")).await;
        (a.len() == 6 && j["state"] == "job_state_failed").then_some(())
    })
    .await;
    let r = http::post_json(&admin.http, "/api/plugin/jobs/j999999/retry", &json!({})).await;
    assert_eq!(r.status, 404);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_at_capacity_gets_the_job_requeued_without_using_an_attempt() {
    let dir = TempDir::new("capacity");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("busy")]]);
    let mut spec = detector(FakeWorkerSpec::new("full", T, 1), &proposals).exec(|_| Exec::AtCapacity);
    spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap().retry_limit = 0;
    let full = FakeWorker::start(admin.grpc, spec).await;
    full.inbox
        .wait_for("an execute request", WAIT, |m| {
            matches!(m.body, Some(pb::admin_to_worker_message::Body::ExecuteJobRequest(_)))
        })
        .await;

    let _free = FakeWorker::start(admin.grpc, FakeWorkerSpec::new("free", T, 1).executor_only()).await;
    let jobs = admin.wait_jobs("job succeeded elsewhere", &format!("job_type={T}"), 1, "succeeded").await;
    assert_eq!(jobs[0]["worker_id"], "free");
    let a = attempts(&admin, jobs[0]["job_id"].as_str().unwrap()).await;
    assert!(a.iter().any(|x| x["outcome"] == "requeued" && x["error_message"] == "executor is at capacity"), "{a:?}");
    assert_eq!(a.last().unwrap()["outcome"], "succeeded");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_gets_its_job_requeued_and_finished_by_another() {
    let dir = TempDir::new("killed");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("survivor")]]);
    let mut spec = detector(FakeWorkerSpec::new("doomed", T, 1), &proposals).exec(|_| Exec::HangUntilCancel);
    spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap().retry_limit = 0;
    let doomed = FakeWorker::start(admin.grpc, spec).await;
    admin.wait_jobs("job running on the doomed worker", &format!("job_type={T}"), 1, "running").await;
    doomed.kill();
    let jobs = admin.wait_jobs("job back to pending", &format!("job_type={T}"), 1, "pending").await;
    assert!(jobs[0]["message"].as_str().unwrap().contains("requeued"));

    let _rescuer = FakeWorker::start(admin.grpc, FakeWorkerSpec::new("rescuer", T, 1).executor_only()).await;
    let jobs = admin.wait_jobs("job finished by the rescuer", &format!("job_type={T}"), 1, "succeeded").await;
    assert_eq!(jobs[0]["worker_id"], "rescuer");
    let a = attempts(&admin, jobs[0]["job_id"].as_str().unwrap()).await;
    assert_eq!(a[0]["outcome"], "requeued");
    assert_eq!(a[0]["worker_id"], "doomed");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_stream_stalls_is_declared_lost_within_three_heartbeat_intervals() {
    let dir = TempDir::new("stall");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("stuck")]]);
    let spec = detector(FakeWorkerSpec::new("deaf", T, 1), &proposals).exec(|_| Exec::HangUntilCancel);
    let deaf = FakeWorker::start(admin.grpc, spec).await;
    assert_eq!(deaf.hello.heartbeat_interval_seconds, 1);
    admin.wait_jobs("job running", &format!("job_type={T}"), 1, "running").await;
    deaf.stall();
    // Three 1 s intervals plus the liveness check's 250 ms tick; the rest of the deadline
    // is headroom for a loaded CI machine, not part of the claim.
    wait_for("deaf worker declared lost", Duration::from_secs(8), || async {
        let w = admin.get("/api/plugin/workers").await;
        w.as_array().unwrap().is_empty().then_some(())
    })
    .await;
    let jobs = admin.wait_jobs("job requeued", &format!("job_type={T}"), 1, "pending").await;
    assert!(jobs[0]["message"].as_str().unwrap().contains("no heartbeat"), "{}", jobs[0]);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_worker_and_the_job_ends_canceled() {
    let dir = TempDir::new("cancel");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("long")]]);
    let w = FakeWorker::start(
        admin.grpc,
        detector(FakeWorkerSpec::new("w1", T, 1), &proposals).exec(|_| Exec::HangUntilCancel),
    )
    .await;
    let jobs = admin.wait_jobs("job running", &format!("job_type={T}"), 1, "running").await;
    let id = jobs[0]["job_id"].as_str().unwrap().to_string();
    let request_id = jobs[0]["request_id"].as_str().unwrap().to_string();
    let r = http::post_json(
        &admin.http,
        &format!("/api/plugin/jobs/{id}/cancel"),
        &json!({"reason": "operator changed mind"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cancel = w
        .inbox
        .wait_for("cancel request", WAIT, |m| {
            matches!(&m.body, Some(pb::admin_to_worker_message::Body::CancelRequest(_)))
        })
        .await;
    let Some(pb::admin_to_worker_message::Body::CancelRequest(c)) = cancel.body else { unreachable!() };
    assert_eq!(c.target_id, request_id);
    assert_eq!(c.target_kind, pb::WorkKind::Execution as i32);
    assert_eq!(c.reason, "operator changed mind");
    let jobs = admin.wait_jobs("job canceled", &format!("job_type={T}"), 1, "canceled").await;
    assert_eq!(jobs[0]["error_message"], "operator changed mind");
    let again = http::post_json(&admin.http, &format!("/api/plugin/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(again.status, 409, "a finished job cannot be canceled: {}", again.text());
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_gets_no_new_jobs() {
    let dir = TempDir::new("drain");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![]);
    let w1 = FakeWorker::start(admin.grpc, detector(FakeWorkerSpec::new("w1", T, 8), &proposals)).await;
    wait_for("descriptor stored", WAIT, || async {
        (http::get(&admin.http, &format!("/api/plugin/job-types/{T}/descriptor")).await.status == 200).then_some(())
    })
    .await;
    let r = http::post_json(&admin.http, "/api/plugin/workers/w1/drain", &json!({})).await;
    assert_eq!(r.status, 200);
    *proposals.lock().unwrap() = vec![(0..6).map(|i| proposal(&format!("d{i}"))).collect()];
    // A draining worker gets no new work of any kind, detections included.
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run"), &json!({})).await;
    assert_eq!(r.status, 503, "no detector but the draining one: {}", r.text());
    let w2 = FakeWorker::start(admin.grpc, detector(FakeWorkerSpec::new("w2", T, 8), &proposals)).await;
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let jobs = admin.wait_jobs("six jobs done", &format!("job_type={T}"), 6, "succeeded").await;
    assert!(jobs.iter().all(|j| j["worker_id"] == "w2"));
    assert!(w1.inbox.executions().is_empty(), "the draining worker got no job");
    assert_eq!(w2.inbox.executions().len(), 6);
    let workers = admin.get("/api/plugin/workers").await;
    let w1v = workers.as_array().unwrap().iter().find(|w| w["worker_id"] == "w1").unwrap().clone();
    assert_eq!(w1v["draining"], true);
    let r = http::post_json(&admin.http, "/api/plugin/workers/nobody/drain", &json!({})).await;
    assert_eq!(r.status, 404);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_before_delays_a_job_and_expires_at_ends_one_that_never_started() {
    let dir = TempDir::new("timing");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let now = std::time::SystemTime::now();
    let ts = |d: Duration| -> pb::Timestamp { (now + d).into() };
    let mut later = proposal("later");
    later.not_before = Some(ts(Duration::from_millis(1500)));
    let mut blocker = proposal("blocker");
    blocker.priority = pb::JobPriority::Critical as i32;
    let mut short = proposal("short-lived");
    short.expires_at = Some(ts(Duration::from_millis(800)));
    let proposals = shared_proposals(vec![vec![blocker, short, later]]);
    // One slot, taken by the blocker until it is canceled.
    let w = FakeWorker::start(
        admin.grpc,
        detector(FakeWorkerSpec::new("w1", T, 1), &proposals).exec(|r| {
            if r.job.as_ref().unwrap().dedupe_key == "blocker" { Exec::HangUntilCancel } else { Exec::Succeed(vec![]) }
        }),
    )
    .await;
    let expired = wait_for("short-lived job expired", WAIT, || async {
        admin.jobs(&format!("job_type={T}&state=failed")).await.into_iter().find(|j| j["dedupe_key"] == "short-lived")
    })
    .await;
    assert!(expired["error_message"].as_str().unwrap().contains("expired"), "{expired}");
    let blocker_id = admin
        .jobs(&format!("job_type={T}"))
        .await
        .into_iter()
        .find(|j| j["dedupe_key"] == "blocker")
        .unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    http::post_json(&admin.http, &format!("/api/plugin/jobs/{blocker_id}/cancel"), &json!({})).await;
    let done = wait_for("later job done", WAIT, || async {
        admin.jobs(&format!("job_type={T}&state=succeeded")).await.into_iter().find(|j| j["dedupe_key"] == "later")
    })
    .await;
    let a = attempts(&admin, done["job_id"].as_str().unwrap()).await;
    let not_before_ms = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 1500;
    assert!(tests::time_ms(&a[0]["started_at"]).unwrap() >= not_before_ms, "started before not_before: {a:?}");
    assert!(w.inbox.executions().iter().all(|e| e.job.as_ref().unwrap().dedupe_key != "short-lived"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_past_its_timeout_is_canceled_and_its_attempt_fails() {
    let dir = TempDir::new("timeout");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("slow")]]);
    let mut spec = detector(FakeWorkerSpec::new("w1", T, 1), &proposals).exec(|_| Exec::Ignore);
    let rt = spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap();
    rt.execution_timeout_seconds = 1;
    rt.retry_limit = 0;
    let w = FakeWorker::start(admin.grpc, spec).await;
    let jobs = admin.wait_jobs("job failed by timeout", &format!("job_type={T}"), 1, "failed").await;
    assert!(jobs[0]["error_message"].as_str().unwrap().contains("timed out"), "{}", jobs[0]);
    w.inbox
        .wait_for("cancel for the timed out attempt", WAIT, |m| {
            matches!(m.body, Some(pb::admin_to_worker_message::Body::CancelRequest(_)))
        })
        .await;
    let a = attempts(&admin, jobs[0]["job_id"].as_str().unwrap()).await;
    assert_eq!(a[0]["outcome"], "timed_out");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_bad_names_get_clear_client_errors() {
    let dir = TempDir::new("errors");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    for (path, status) in [
        ("/api/plugin/jobs/j42", 404),
        ("/api/plugin/jobs/not-a-job", 404),
        ("/api/plugin/jobs?state=bogus", 400),
        ("/api/plugin/jobs?job_type=..%2Fetc", 400),
        ("/api/plugin/job-types/bad%20name/descriptor", 400),
        ("/api/plugin/job-types/nothing/descriptor", 404),
        ("/api/plugin/job-types/nothing/config", 404),
    ] {
        let r = http::get(&admin.http, path).await;
        assert_eq!(r.status, status, "GET {path}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "GET {path} explains itself");
    }
    let r = http::post_json(&admin.http, "/api/plugin/job-types/nothing/run", &json!({})).await;
    assert_eq!(r.status, 404);
    let m = http::get(&admin.http, "/metrics").await;
    // Histograms are per job type: with no job yet the family is declared, without series.
    assert!(m.text().contains("# TYPE plughost_dispatch_latency_seconds histogram"), "{}", m.text());
    assert_eq!(http::get(&admin.http, "/healthz").await.status, 200);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_past_its_timeout_is_canceled_and_recorded_as_failed() {
    let dir = TempDir::new("detect-timeout");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let mut spec = FakeWorkerSpec::new("w1", T, 1);
    spec.detect_hangs = true;
    spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap().detection_timeout_seconds = 1;
    let w = FakeWorker::start(admin.grpc, spec).await;
    let detect = w
        .inbox
        .wait_for("a detection request", WAIT, |m| {
            matches!(m.body, Some(pb::admin_to_worker_message::Body::RunDetectionRequest(_)))
        })
        .await;
    let cancel = w
        .inbox
        .wait_for("the detection's cancel", WAIT, |m| {
            matches!(m.body, Some(pb::admin_to_worker_message::Body::CancelRequest(_)))
        })
        .await;
    let Some(pb::admin_to_worker_message::Body::CancelRequest(c)) = cancel.body else { unreachable!() };
    assert_eq!(c.target_id, detect.request_id);
    assert_eq!(c.target_kind, pb::WorkKind::Detection as i32);
    let runs = wait_for("failed detection run", WAIT, || async {
        let runs = admin.get(&format!("/api/plugin/job-types/{T}/runs")).await;
        (!runs["errors"].as_array().unwrap().is_empty()).then_some(runs)
    })
    .await;
    assert!(runs["errors"][0]["message"].as_str().unwrap().contains("timed out"), "{runs}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_enforces_max_jobs_per_detection_and_global_concurrency() {
    let dir = TempDir::new("limits");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![(0..10).map(|i| proposal(&format!("k{i}"))).collect()]);
    let mut spec = detector(FakeWorkerSpec::new("w1", T, 8), &proposals).exec(|_| Exec::HangUntilCancel);
    let rt = spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap();
    rt.max_jobs_per_detection = 3;
    rt.global_execution_concurrency = 1;
    let w = FakeWorker::start(admin.grpc, spec).await;
    let jobs = wait_for("three jobs, one running", WAIT, || async {
        let jobs = admin.jobs(&format!("job_type={T}")).await;
        (jobs.len() == 3 && jobs.iter().any(|j| j["state"] == "job_state_running")).then_some(jobs)
    })
    .await;
    // All three became ready together, so a missing limit would have started them all.
    assert_eq!(jobs.iter().filter(|j| j["state"] == "job_state_pending").count(), 2, "{jobs:?}");
    assert_eq!(w.inbox.executions().len(), 1);
    let runs = admin.get(&format!("/api/plugin/job-types/{T}/runs")).await;
    let detection = runs["successes"].as_array().unwrap().iter().find(|r| r["kind"] == "detection").unwrap().clone();
    assert_eq!(detection["jobs_created"], 3);
    assert!(detection["message"].as_str().unwrap().contains("7 over the per-detection limit"), "{detection}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_sent_on_a_replaced_stream_is_requeued_and_finished_on_the_new_one() {
    let dir = TempDir::new("replaced");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let proposals = shared_proposals(vec![vec![proposal("carried")]]);
    let mut spec = detector(FakeWorkerSpec::new("same", T, 1), &proposals).exec(|_| Exec::HangUntilCancel);
    spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap().retry_limit = 0;
    let _old = FakeWorker::start(admin.grpc, spec.clone()).await;
    admin.wait_jobs("job running on the first stream", &format!("job_type={T}"), 1, "running").await;
    // The same worker reconnects before the admin noticed anything wrong with the old stream.
    let _new = FakeWorker::start(admin.grpc, spec.exec(|_| Exec::Succeed(vec![]))).await;
    let jobs = admin.wait_jobs("job finished on the new stream", &format!("job_type={T}"), 1, "succeeded").await;
    let a = attempts(&admin, jobs[0]["job_id"].as_str().unwrap()).await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0]["outcome"], "requeued", "without using an attempt (retry_limit is 0)");
    assert_eq!(a[1]["outcome"], "succeeded");
    admin.stop().await;
}

/// A real SDK handler with one long job: it runs until canceled (then fails, as a handler
/// that notices a cancel does), or at once once `finish` is set. Its first detection
/// proposes the job, later ones nothing.
struct LongJob {
    proposed: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
}

#[worker_sdk::async_trait]
impl JobHandler for LongJob {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("long", "Long").detect(1).execute(1)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("long", "Long").runtime(Runtime::default().interval_minutes(600).retry_limit(0)).build()
    }

    async fn detect(
        &self,
        _r: pb::RunDetectionRequest,
        out: DetectionSender,
        _c: CancellationToken,
    ) -> HandlerResult<()> {
        if !self.proposed.swap(true, Ordering::SeqCst) {
            out.send(vec![proposal("long-1")]).await?;
        }
        Ok(())
    }

    async fn execute(
        &self,
        _r: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        progress.progress(10.0, "working", "").await;
        if !self.finish.load(Ordering::SeqCst) {
            cancel.cancelled().await;
            return Err("stopped before the end".into());
        }
        Ok(pb::JobResult { summary: "done".into(), ..Default::default() })
    }
}

// Bug: a job cut short by its worker's own shutdown (SIGTERM of `plughost worker` or
// `plughost up`) was reported as failed and used up an attempt, while a crash did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_short_by_its_workers_shutdown_is_requeued_without_using_an_attempt() {
    let dir = TempDir::new("worker-stops");
    let admin = TestAdmin::start(&dir.path().join("admin"), |_| {}).await;
    let proposed = Arc::new(AtomicBool::new(false));
    let finish = Arc::new(AtomicBool::new(false));
    let handler =
        || -> Arc<dyn JobHandler> { Arc::new(LongJob { proposed: proposed.clone(), finish: finish.clone() }) };
    let worker = PluginWorker::start(admin.grpc, "stopping", &dir.path().join("w1"), vec![handler()]);
    let jobs = admin.wait_jobs("the long job running", "job_type=long", 1, "running").await;
    let id = jobs[0]["job_id"].as_str().unwrap().to_string();

    // The worker's grace period (2 s) runs out, so the SDK cancels the job.
    worker.stop().await;
    let jobs = admin.wait_jobs("the job requeued", "job_type=long", 1, "pending").await;
    assert_eq!(jobs[0]["dead_letter"], false, "retry_limit is 0: a used attempt would have dead-lettered it");
    let a = attempts(&admin, &id).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["outcome"], "requeued", "not a failed attempt: {a:?}");

    finish.store(true, Ordering::SeqCst);
    let next = PluginWorker::start(admin.grpc, "next", &dir.path().join("w2"), vec![handler()]);
    admin.wait_jobs("the job finished on the next worker", "job_type=long", 1, "succeeded").await;
    let a = attempts(&admin, &id).await;
    let outcomes: Vec<&str> = a.iter().map(|x| x["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["requeued", "succeeded"]);
    next.stop().await;
    admin.stop().await;
}
