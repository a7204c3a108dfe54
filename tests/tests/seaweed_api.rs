//! The JSON API as a SeaweedFS script reads it: one test per route Plughost shares with
//! SeaweedFS's admin (`/api/plugin/...`), each comparing Plughost's answer with the shape
//! SeaweedFS's handlers document. The field sets below are facts about SeaweedFS's answers
//! (its admin's routes under `/api/plugin`): the top-level shape (a bare array or an
//! object), the names that are always there, the ones it leaves out when unset, RFC 3339
//! times and `job_state_*` states. Plughost may add fields; it must not lack or rename
//! these.

use std::time::Duration;

use proto::pb;
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, proposal},
    harness::TestAdmin,
    http, wait_for,
};

/// A job type SeaweedFS places in its `lance` lane.
const T: &str = "lance_compact";
const WAIT: Duration = Duration::from_secs(30);

// ---- SeaweedFS's shapes, as facts -------------------------------------------------------

/// `GET status` (with a plugin service).
const STATUS: &[&str] = &["enabled", "configured", "base_dir", "worker_count", "worker_grpc_port"];
/// One entry of `GET lanes`.
const LANE: &[&str] = &["lane", "idle_sleep_sec", "job_types", "status"];
/// `SchedulerStatus`: always, and when set.
const SCHEDULER_STATUS: &[&str] = &["now", "scheduler_tick_seconds"];
const SCHEDULER_STATUS_TIMES: &[&str] = &["now", "next_detection_at", "last_iteration_done_at"];
/// `WorkerSession`, serialised with Go's field names.
const WORKER: &[&str] = &[
    "WorkerID",
    "WorkerInstance",
    "Address",
    "WorkerVersion",
    "ProtocolVersion",
    "ConnectedAt",
    "LastSeenAt",
    "Capabilities",
    "Heartbeat",
];
/// `JobTypeInfo`.
const JOB_TYPE: &[&str] = &["job_type", "display_name", "weight"];
/// `TrackedJob`: always, and times when set.
const TRACKED_JOB: &[&str] = &["job_id", "job_type", "request_id", "worker_id", "state", "progress"];
const TRACKED_JOB_TIMES: &[&str] = &["created_at", "updated_at", "completed_at"];
/// `JobActivity`.
const ACTIVITY: &[&str] = &["job_id", "job_type", "source", "message"];
/// `JobDetail`.
const JOB_DETAIL: &[&str] = &["job", "activities"];
/// `SchedulerJobTypeState`.
const SCHEDULER_STATE: &[&str] =
    &["job_type", "lane", "enabled", "detection_in_flight", "detector_available", "executor_worker_count"];
const SCHEDULER_STATE_TIMES: &[&str] = &["next_detection_at", "last_run_started_at", "last_run_completed_at"];
/// `JobTypeRunHistory` and its `JobRunRecord`s.
const RUN_HISTORY: &[&str] = &["job_type", "successful_runs", "error_runs"];
const RUN_RECORD: &[&str] = &["run_id", "job_id", "job_type", "worker_id", "outcome"];
/// The answer of `detect`.
const DETECT: &[&str] =
    &["job_type", "request_id", "detector_worker_id", "total_proposals", "count", "proposals", "activities"];
/// The answer of `run`.
const RUN: &[&str] = &[
    "job_type",
    "detected_count",
    "ready_to_execute_count",
    "skipped_active_count",
    "executed_count",
    "success_count",
    "error_count",
    "canceled_count",
];
/// `JobCompleted` in proto JSON with unpopulated fields, the answer of `jobs/execute`.
const JOB_COMPLETED: &[&str] =
    &["request_id", "job_id", "job_type", "success", "error_message", "result", "activities", "completed_at"];
/// The answer of `jobs/{id}/expire`.
const EXPIRE: &[&str] = &["job_id", "expired"];
/// `PersistedJobTypeConfig` and `JobTypeDescriptor` in proto JSON with proto names and
/// unpopulated fields (an unset message field, such as a descriptor without a worker
/// form, SeaweedFS writes as null and Plughost leaves out).
const CONFIG: &[&str] =
    &["job_type", "descriptor_version", "admin_config_values", "worker_config_values", "admin_runtime", "updated_by"];
const DESCRIPTOR: &[&str] = &["job_type", "display_name", "description", "descriptor_version", "admin_config_form"];

/// `v` is an object with every field of `always`, and each of `times` that is present is an
/// RFC 3339 time (SeaweedFS leaves unset times out rather than writing zero).
fn shaped(what: &str, v: &Value, always: &[&str], times: &[&str]) {
    let o = v.as_object().unwrap_or_else(|| panic!("{what} is an object: {v}"));
    for field in always {
        assert!(o.contains_key(*field), "{what} has SeaweedFS's {field:?}: {v}");
    }
    for field in times {
        if let Some(t) = o.get(*field) {
            assert!(tests::time_ms(t).is_some(), "{what}.{field} is RFC 3339, not {t}");
        }
    }
}

fn array<'a>(what: &str, v: &'a Value) -> &'a Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("{what} is a bare array, as SeaweedFS answers: {v}"))
}

// ---- a cluster to ask -------------------------------------------------------------------

struct Cluster {
    admin: TestAdmin,
    _dir: TempDir,
    worker: FakeWorker,
}

/// An admin and a worker for `T` that proposes two jobs per detection (keys unique per
/// detection) and runs them; `exec` decides how jobs end. The job type is disabled, so
/// only requests detect.
async fn cluster(name: &str, exec: impl Fn() -> Exec + Send + Sync + 'static) -> Cluster {
    let dir = TempDir::new(name);
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let mut spec = FakeWorkerSpec::new("w1", T, 4)
        .detect(|r| vec![(0..2).map(|i| with_path(proposal(&format!("d{}-{i}", r.detection_sequence)))).collect()])
        .exec(move |_| exec());
    // No scheduled detection: every job comes from the request under test.
    let descriptor = spec.descriptors.get_mut(T).expect("the descriptor");
    descriptor.admin_runtime_defaults.as_mut().expect("runtime defaults").enabled = false;
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_for("the descriptor is stored", WAIT, || async {
        (http::get(&admin.http, &format!("/api/plugin/job-types/{T}/descriptor")).await.status == 200).then_some(())
    })
    .await;
    Cluster { admin, _dir: dir, worker }
}

fn with_path(mut p: pb::JobProposal) -> pb::JobProposal {
    let path = pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue("/data/x".into())) };
    p.parameters.insert("path".into(), path);
    p
}

async fn succeeding(name: &str) -> Cluster {
    cluster(name, || Exec::Succeed(vec![50.0])).await
}

/// Runs a detection through the API and waits for its jobs: the synchronous `run`.
async fn run(c: &Cluster) -> Value {
    let r = http::post_json(&c.admin.http, &format!("/api/plugin/job-types/{T}/run"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

// ---- one test per shared route ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_seaweedfs_fields() {
    let c = succeeding("sw-status").await;
    let v = c.admin.get("/api/plugin/status").await;
    shaped("status", &v, STATUS, &[]);
    assert_eq!(
        (v["enabled"].clone(), v["configured"].clone(), v["worker_count"].clone()),
        (json!(true), json!(true), json!(1))
    );
    assert!(v["base_dir"].as_str().unwrap().ends_with("plugin"), "{v}");
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_answer_seaweedfs_lanes_each_with_its_job_types_and_status() {
    let c = succeeding("sw-lanes").await;
    let v = c.admin.get("/api/plugin/lanes").await;
    let lanes = array("lanes", &v);
    let names: Vec<&str> = lanes.iter().map(|l| l["lane"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "iceberg", "lifecycle", "lance"]);
    for lane in lanes {
        shaped("a lane", lane, LANE, &[]);
        shaped("a lane's status", &lane["status"], SCHEDULER_STATUS, SCHEDULER_STATUS_TIMES);
        assert_eq!(lane["status"]["lane"], lane["lane"]);
    }
    let lance = &lanes[3];
    assert!(array("job_types", &lance["job_types"]).contains(&json!(T)), "{lance}");
    assert_eq!(lance["status"]["job_types"][0]["job_type"], T, "{lance}");
    assert!(lanes[0]["status"].get("job_types").is_none(), "no job type of the default lane is known: {}", lanes[0]);
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_a_bare_array_of_seaweedfs_worker_sessions_and_filter_by_lane() {
    let c = succeeding("sw-workers").await;
    let v = c.admin.get("/api/plugin/workers").await;
    let w = &array("workers", &v)[0];
    shaped("a worker", w, WORKER, &["ConnectedAt", "LastSeenAt"]);
    assert_eq!(w["WorkerID"], "w1");
    assert_eq!(w["Capabilities"][T]["job_type"], T, "capabilities keyed by job type: {w}");
    assert_eq!(w["Capabilities"][T]["can_execute"], true);
    assert_eq!(w["worker_id"], "w1", "Plughost's own fields stay beside them");
    assert_eq!(array("lance workers", &c.admin.get("/api/plugin/workers?lane=lance").await).len(), 1);
    assert!(array("default workers", &c.admin.get("/api/plugin/workers?lane=default").await).is_empty());
    let r = http::get(&c.admin.http, "/api/plugin/workers?lane=fast").await;
    assert_eq!(r.status, 400, "an unknown lane is refused: {}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("default, iceberg, lifecycle, lance"));
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_types_are_a_bare_array_of_seaweedfs_job_type_infos() {
    let c = succeeding("sw-job-types").await;
    let v = c.admin.get("/api/plugin/job-types").await;
    let t = &array("job types", &v)[0];
    shaped("a job type", t, JOB_TYPE, &[]);
    assert_eq!((t["job_type"].as_str(), t["display_name"].as_str()), (Some(T), Some("Test lance_compact")));
    assert!(t["weight"].is_i64(), "{t}");
    assert_eq!(array("lance", &c.admin.get("/api/plugin/job-types?lane=lance").await).len(), 1);
    assert!(array("iceberg", &c.admin.get("/api/plugin/job-types?lane=iceberg").await).is_empty());
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_a_bare_array_of_tracked_jobs_with_the_cursor_in_a_header() {
    let c = succeeding("sw-jobs").await;
    run(&c).await;
    let r = http::get(&c.admin.http, &format!("/api/plugin/jobs?job_type={T}&limit=1")).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let jobs = array("jobs", &v);
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    shaped("a job", j, TRACKED_JOB, TRACKED_JOB_TIMES);
    assert_eq!(j["state"], "job_state_succeeded", "{j}");
    assert!(j["progress"].is_number() && j.get("completed_at").is_some(), "{j}");
    assert!(j.get("not_before").is_none(), "unset times are left out: {j}");
    let next = r.headers.get("x-plughost-next-before").expect("the next page's cursor").to_str().unwrap().to_string();
    let rest = c.admin.get(&format!("/api/plugin/jobs?job_type={T}&before={next}")).await;
    assert_eq!(array("the next page", &rest).len(), 1);
    let by_state = c.admin.get("/api/plugin/jobs?state=job_state_succeeded&lane=lance").await;
    assert_eq!(array("lance jobs", &by_state).len(), 2);
    assert!(array("default jobs", &c.admin.get("/api/plugin/jobs?lane=default").await).is_empty());
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_a_tracked_job() {
    let c = succeeding("sw-job").await;
    let ran = run(&c).await;
    let id = ran["job_ids"][0].as_str().unwrap();
    let j = c.admin.get(&format!("/api/plugin/jobs/{id}")).await;
    shaped("a job", &j, TRACKED_JOB, TRACKED_JOB_TIMES);
    assert_eq!((j["job_id"].as_str(), j["state"].as_str()), (Some(id), Some("job_state_succeeded")));
    assert_eq!(j["parameters"]["path"]["string_value"], "/data/x", "parameters as proto JSON values: {j}");
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_detail_is_seaweedfs_job_detail() {
    let c = succeeding("sw-detail").await;
    let ran = run(&c).await;
    let id = ran["job_ids"][0].as_str().unwrap();
    let d = c.admin.get(&format!("/api/plugin/jobs/{id}/detail")).await;
    shaped("a job's detail", &d, JOB_DETAIL, &["last_updated"]);
    shaped("its job", &d["job"], TRACKED_JOB, TRACKED_JOB_TIMES);
    for a in array("its activities", &d["activities"]) {
        shaped("an activity", a, ACTIVITY, &["occurred_at"]);
        assert_eq!(a["job_id"], id);
    }
    shaped("its run record", &d["run_record"], RUN_RECORD, &["completed_at"]);
    assert_eq!(d["run_record"]["outcome"], "success");
    let related = array("related jobs", &d["related_jobs"]);
    assert_eq!(related.len(), 1, "the other job of the run: {d}");
    assert!(
        c.admin.get(&format!("/api/plugin/jobs/{id}/detail?related_limit=0")).await.get("related_jobs").is_none(),
        "related_limit=0 leaves them out"
    );
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_are_a_bare_array_of_job_activities() {
    let c = succeeding("sw-activities").await;
    run(&c).await;
    let v = c.admin.get(&format!("/api/plugin/activities?job_type={T}")).await;
    let list = array("activities", &v);
    assert!(!list.is_empty());
    for a in list {
        shaped("an activity", a, ACTIVITY, &["occurred_at"]);
        assert!(a.get("occurred_at").is_some(), "{a}");
    }
    assert!(array("default", &c.admin.get("/api/plugin/activities?lane=default").await).is_empty());
    assert_eq!(array("lance", &c.admin.get("/api/plugin/activities?lane=lance").await).len(), list.len());
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_states_are_a_bare_array_of_seaweedfs_scheduler_states() {
    let c = succeeding("sw-states").await;
    run(&c).await;
    let v = c.admin.get(&format!("/api/plugin/scheduler-states?job_type={T}")).await;
    let s = &array("scheduler states", &v)[0];
    shaped("a scheduler state", s, SCHEDULER_STATE, SCHEDULER_STATE_TIMES);
    assert_eq!((s["lane"].as_str(), s["detector_available"].as_bool()), (Some("lance"), Some(true)));
    assert_eq!(s["last_run_status"], "success", "{s}");
    assert!(array("other", &c.admin.get("/api/plugin/scheduler-states?job_type=other").await).is_empty());
    assert!(array("iceberg", &c.admin.get("/api/plugin/scheduler-states?lane=iceberg").await).is_empty());
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_status_is_seaweedfs_scheduler_status() {
    let c = cluster("sw-status-hang", || Exec::HangUntilCancel).await;
    let r = http::post_json(&c.admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202);
    let v = wait_for("two jobs in process", WAIT, || async {
        let v = c.admin.get("/api/plugin/scheduler-status").await;
        (v["scheduler"]["in_process_jobs"].as_array().map_or(0, Vec::len) == 2).then_some(v)
    })
    .await;
    assert_eq!(v["enabled"], true);
    shaped("the scheduler", &v["scheduler"], SCHEDULER_STATUS, SCHEDULER_STATUS_TIMES);
    let job = &v["scheduler"]["in_process_jobs"][0];
    shaped("an in-process job", job, &["job_id", "job_type", "state"], &["created_at", "updated_at"]);
    assert!(job["state"].as_str().unwrap().starts_with("job_state_"), "{job}");
    assert_eq!(v["scheduler"]["job_types"][0]["job_type"], T);
    let lane = c.admin.get("/api/plugin/scheduler-status?lane=default").await;
    assert_eq!(lane["scheduler"]["lane"], "default");
    assert!(lane["scheduler"].get("in_process_jobs").is_none(), "{lane}");
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_and_schema_are_proto_json_with_proto_names() {
    let c = succeeding("sw-descriptor").await;
    let d = c.admin.get(&format!("/api/plugin/job-types/{T}/descriptor")).await;
    shaped("the descriptor", &d, DESCRIPTOR, &[]);
    // The worker sent no worker form: SeaweedFS writes the unset message as null.
    assert_eq!(d.get("worker_config_form"), Some(&Value::Null), "{d}");
    let r = http::post_json(&c.admin.http, &format!("/api/plugin/job-types/{T}/schema?force_refresh=true"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    shaped("the refreshed descriptor", &r.json(), DESCRIPTOR, &[]);
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reads_and_saves_as_a_persisted_job_type_config() {
    let c = succeeding("sw-config").await;
    let path = format!("/api/plugin/job-types/{T}/config");
    let v = c.admin.get(&path).await;
    shaped("the config", &v, CONFIG, &[]);
    let r = http::put_json(
        &c.admin.http,
        &path,
        &json!({ "admin_config_values": { "threshold": { "int64_value": "20" } } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let saved = r.json();
    shaped("the saved config", &saved, CONFIG, &[]);
    assert_eq!(saved["admin_config_values"]["threshold"]["int64_value"], "20");
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_seaweedfs_run_history_of_executions() {
    let c = succeeding("sw-runs").await;
    run(&c).await;
    let v = c.admin.get(&format!("/api/plugin/job-types/{T}/runs")).await;
    shaped("the run history", &v, RUN_HISTORY, &["last_updated_time"]);
    let runs = array("successful runs", &v["successful_runs"]);
    assert_eq!(runs.len(), 2, "one per job: {v}");
    for r in runs {
        shaped("a run record", r, RUN_RECORD, &["completed_at"]);
        assert_eq!((r["outcome"].as_str(), r["kind"].as_str()), (Some("success"), Some("execution")));
    }
    assert!(array("errors", &v["error_runs"]).is_empty());
    assert!(array("Plughost's successes", &v["successes"]).iter().any(|r| r["kind"] == "detection"));
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_waits_and_answers_the_proposals() {
    let c = succeeding("sw-detect").await;
    let r = http::post_json(&c.admin.http, &format!("/api/plugin/job-types/{T}/detect"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    shaped("the detect answer", &v, DETECT, &[]);
    assert_eq!((v["count"].as_i64(), v["total_proposals"].as_i64()), (Some(2), Some(2)), "{v}");
    assert_eq!(v["detector_worker_id"], "w1");
    assert_eq!(v["proposals"][0]["parameters"]["path"]["string_value"], "/data/x", "proposals in proto JSON: {v}");
    assert!(c.admin.jobs(&format!("job_type={T}")).await.is_empty(), "a preview creates no job");
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_the_jobs_and_answers_the_counts() {
    let c = succeeding("sw-run").await;
    let v = run(&c).await;
    shaped("the run answer", &v, RUN, &[]);
    let counts = ["detected_count", "ready_to_execute_count", "executed_count", "success_count", "error_count"];
    let got: Vec<i64> = counts.iter().map(|k| v[*k].as_i64().unwrap()).collect();
    assert_eq!(got, [2, 2, 2, 2, 0], "{v}");
    assert_eq!(v["unfinished_count"], 0);
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_execute_runs_one_job_and_answers_job_completed() {
    let c = succeeding("sw-execute").await;
    let body = json!({ "job": { "job_type": T, "dedupe_key": "by-hand", "summary": "one job",
        "parameters": { "path": { "string_value": "/data/y" } } }, "attempt": 1, "timeout_seconds": 30 });
    let r = http::post_json(&c.admin.http, "/api/plugin/jobs/execute", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    shaped("the completion", &v, JOB_COMPLETED, &["completed_at"]);
    assert_eq!((v["success"].as_bool(), v["job_type"].as_str()), (Some(true), Some(T)), "{v}");
    assert_eq!(
        c.admin.get(&format!("/api/plugin/jobs/{}", v["job_id"].as_str().unwrap())).await["state"],
        "job_state_succeeded"
    );
    // A cluster context for the job reaches its execution, over the admin's.
    let body = json!({ "job": { "job_type": T, "dedupe_key": "with-context" },
        "cluster_context": { "master_grpc_addresses": ["m:1"], "metadata": { "run": "one" } } });
    let r = http::post_json(&c.admin.http, "/api/plugin/jobs/execute", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let executed = c.worker.inbox.executions();
    let last = executed.iter().find(|e| e.job.as_ref().is_some_and(|j| j.dedupe_key == "with-context")).unwrap();
    let context = last.cluster_context.as_ref().expect("a cluster context");
    assert_eq!(context.master_grpc_addresses, vec!["m:1".to_string()]);
    assert_eq!(context.metadata.get("run").map(String::as_str), Some("one"));
    for (bad, status) in [
        (json!({}), 400),
        (json!({ "job": { "job_type": "" } }), 422),
        (json!({ "job": { "job_type": T }, "cluster_context": "m:1" }), 400),
    ] {
        let r = http::post_json(&c.admin.http, "/api/plugin/jobs/execute", &bad).await;
        assert_eq!(r.status, status, "{bad}: {}", r.text());
    }
    c.admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_answers_the_job_id_and_expired() {
    let c = cluster("sw-expire", || Exec::HangUntilCancel).await;
    let r = http::post_json(&c.admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202);
    let jobs = c.admin.wait_jobs("two running jobs", &format!("job_type={T}"), 2, "running").await;
    let id = jobs[0]["job_id"].as_str().unwrap();
    let r =
        http::post_json(&c.admin.http, &format!("/api/plugin/jobs/{id}/expire"), &json!({ "reason": "stuck" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    shaped("the expire answer", &v, EXPIRE, &[]);
    assert_eq!((v["job_id"].as_str(), v["expired"].as_bool()), (Some(id), Some(true)));
    shaped("its job", &v["job"], TRACKED_JOB, TRACKED_JOB_TIMES);
    // A job that is no longer active is not expired again: `expired: false`, as SeaweedFS.
    c.admin.wait_jobs("one job expired", &format!("job_type={T}&state=failed"), 1, "failed").await;
    let r = http::post_json(&c.admin.http, &format!("/api/plugin/jobs/{id}/expire"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["job_id"].as_str(), v["expired"].as_bool()), (Some(id), Some(false)), "{v}");
    assert_eq!(v["job"]["state"], "job_state_failed", "{v}");
    let r = http::post_json(&c.admin.http, "/api/plugin/jobs/j999999/expire", &json!({})).await;
    assert_eq!(r.status, 404, "no such job: {}", r.text());
    c.admin.stop().await;
}
