//! The operator's views (issue 15) from outside: a real admin, real workers over gRPC (the
//! tests crate's fake worker; the SDK worker where a clean shutdown is the point) and real
//! HTTP. Why a pending job waits, for each reason the dispatcher gives, through
//! `GET /api/plugin/jobs/{id}/explain` and on the pages; Run now refused with what to set
//! for a job type whose required settings are empty; the workers that left, with why, and
//! the address of a worker that gave none.
//!
//! Time-dependent reasons (not before, retry backoff, expiry) run on a `ManualClock` with
//! heartbeats 30 days apart, so moving the clock never loses the worker. Everything waits
//! for a state with a deadline, never for a fixed time. "Ready" lasts only until the
//! dispatch loop's next pass, so here it shows as "nothing else holds it" (`also` empty)
//! before a gate is lifted and the job then running; the admin's own tests
//! (`dispatcher/tests.rs`) stop time between the two.

use std::{path::Path, sync::Arc, time::Duration};

use admin::{Admin, AdminConfig, clock::ManualClock};
use proto::pb;
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, proposal, simple_descriptor},
    harness::TestAdmin,
    http::{self, Response},
    page_client::{Client, flash_status},
    plugins::{self, PluginWorker},
    time_ms, wait_for,
};
use worker_sdk::prelude::*;

const T: &str = "views_job";
const U: &str = "views_capped";
const WAIT: Duration = Duration::from_secs(30);

// ---- helpers --------------------------------------------------------------------------

/// A worker that executes (and detects) `T` with `slots` slots. Jobs whose dedupe key
/// starts with `hang` run until canceled, `fail` fail, the rest succeed; scheduled
/// detection is off, so nothing runs behind the test's back.
fn spec(worker_id: &str, slots: i32) -> FakeWorkerSpec {
    let mut spec = FakeWorkerSpec::new(worker_id, T, slots).exec(|r| {
        let key = r.job.as_ref().map(|j| j.dedupe_key.clone()).unwrap_or_default();
        if key.starts_with("hang") {
            Exec::HangUntilCancel
        } else if key.starts_with("fail") {
            Exec::Fail("boom".into())
        } else {
            Exec::Succeed(vec![])
        }
    });
    runtime(&mut spec, |r| {
        r.enabled = false;
        r.retry_limit = 0;
    });
    spec
}

fn runtime(spec: &mut FakeWorkerSpec, f: impl Fn(&mut pb::AdminRuntimeDefaults)) {
    for d in spec.descriptors.values_mut() {
        f(d.admin_runtime_defaults.as_mut().expect("runtime defaults"));
    }
}

/// Adds job type `t` with `slots` slots and the test descriptor to `spec`.
fn offer(mut spec: FakeWorkerSpec, t: &str, slots: i32) -> FakeWorkerSpec {
    let mut cap = spec.capabilities[0].clone();
    cap.job_type = t.into();
    cap.display_name = t.into();
    cap.max_execution_concurrency = slots;
    spec.capabilities.push(cap);
    spec.descriptors.insert(t.into(), simple_descriptor(t));
    spec
}

async fn wait_config(admin: &TestAdmin, t: &str) {
    wait_for(&format!("the config of {t} is stored"), WAIT, || async {
        admin.components().configs.config(t).map(|_| ())
    })
    .await;
}

async fn enqueue(admin: &TestAdmin, t: &str, body: Value) -> String {
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{t}/jobs"), &body).await;
    assert_eq!(r.status, 201, "enqueue {t} {body}: {}", r.text());
    r.json()["job"]["job_id"].as_str().expect("the new job's id").to_string()
}

async fn enqueue_key(admin: &TestAdmin, t: &str, key: &str) -> String {
    enqueue(admin, t, json!({ "parameters": {}, "dedupe_key": key, "summary": format!("job {key}") })).await
}

async fn explain(admin: &TestAdmin, id: &str) -> Value {
    admin.get(&format!("/api/plugin/jobs/{id}/explain")).await
}

/// Waits until the job's explanation gives `reason`; returns it.
async fn wait_reason(admin: &TestAdmin, id: &str, reason: &str) -> Value {
    wait_for(&format!("{id} waits because of {reason}"), WAIT, || async {
        let v = explain(admin, id).await;
        (v["reason"] == reason).then_some(v)
    })
    .await
}

async fn wait_state(admin: &TestAdmin, id: &str, state: &str) {
    wait_for(&format!("{id} is {state}"), WAIT, || async {
        let v = admin.get(&format!("/api/plugin/jobs/{id}")).await;
        (v["state"] == format!("job_state_{state}")).then_some(())
    })
    .await;
}

async fn page(admin: &TestAdmin, path: &str) -> String {
    let r = http::get(&admin.http, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.text()
}

async fn as_token(admin: &TestAdmin, token: &str, method: &str, path: &str, body: &Value) -> Response {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    http::request(&admin.http, method, path, &headers, body.to_string().into_bytes()).await
}

/// A new operator token named `name`.
async fn operator(admin: &TestAdmin, name: &str) -> String {
    let r = http::post_json(&admin.http, "/api/plugin/tokens", &json!({ "name": name, "role": "operator" })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

/// An in-process admin on `clock`, with test timings and heartbeats 30 days apart.
async fn start_manual(dir: &Path, clock: &Arc<ManualClock>) -> TestAdmin {
    let mut config = AdminConfig::ephemeral(dir);
    config.heartbeat_interval = Duration::from_secs(30 * 24 * 3600);
    config.reconnect_delay = Duration::from_secs(1);
    config.first_detection_delay = Duration::ZERO;
    config.shutdown_grace = Duration::from_secs(1);
    let admin = Admin::start_with_clock(config, clock.clone()).await.expect("admin starts");
    http::register_admin_token(&admin.http_addr().to_string(), dir);
    TestAdmin { http: admin.http_addr().to_string(), grpc: admin.grpc_addr(), admin: Some(admin) }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ---- why a job waits ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_an_executor_says_so_then_waits_for_the_drained_worker_that_returns_and_runs_once_undrained() {
    let dir = TempDir::new("views-executors");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let w1 = FakeWorker::start(admin.grpc, spec("w1", 1)).await;
    wait_config(&admin, T).await;
    let r = http::post_json(&admin.http, "/api/plugin/workers/w1/drain", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    w1.kill();
    drop(w1);
    wait_for("no worker is connected", WAIT, || async {
        admin.get("/api/plugin/workers").await.as_array().is_some_and(|a| a.is_empty()).then_some(())
    })
    .await;

    let id = enqueue_key(&admin, T, "a").await;
    let v = wait_reason(&admin, &id, "no_executor").await;
    assert_eq!((v["blocked"].as_bool(), v["state"].as_str()), (Some(true), Some("pending")), "{v}");
    assert_eq!(v["message"], "no connected worker can execute views_job");
    let job_page = page(&admin, &format!("/plugin/jobs/{id}")).await;
    assert!(job_page.contains("id=\"why-waiting\""), "the job page has the box: {job_page}");
    assert!(job_page.contains("No connected worker can execute views_job."));
    let list = page(&admin, "/plugin/jobs?state=pending").await;
    assert!(list.contains(">no worker</div>"), "the list has the short form: {list}");

    // The same worker comes back: it is still drained (by its id), so it gets nothing.
    let w1 = FakeWorker::start(admin.grpc, spec("w1", 1)).await;
    let v = wait_reason(&admin, &id, "all_draining").await;
    assert_eq!(v["message"], "the only worker that can execute views_job is draining");
    assert_eq!(v["draining"], 1);
    assert!(w1.inbox.executions().is_empty());

    let r = http::post_json(&admin.http, "/api/plugin/workers/w1/drain?draining=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_state(&admin, &id, "succeeded").await;
    let v = explain(&admin, &id).await;
    assert_eq!((v["reason"].as_str(), v["blocked"].as_bool()), (Some("finished"), Some(false)), "{v}");
    assert_eq!(v["message"], "not waiting: it finished as succeeded");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_behind_busy_slots_or_its_types_concurrency_limit_says_how_many_are_in_use() {
    let dir = TempDir::new("views-capacity");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let mut s = offer(spec("w1", 1), U, 2);
    runtime(&mut s, |r| r.enabled = false);
    s.descriptors.get_mut(U).unwrap().admin_runtime_defaults.as_mut().unwrap().global_execution_concurrency = 1;
    let worker = FakeWorker::start(admin.grpc, s).await;
    wait_config(&admin, T).await;
    wait_config(&admin, U).await;

    let busy = enqueue_key(&admin, T, "hang-t").await;
    wait_state(&admin, &busy, "running").await;
    let v = explain(&admin, &busy).await;
    assert_eq!(
        (v["reason"].as_str(), v["worker_id"].as_str(), v["blocked"].as_bool()),
        (Some("in_flight"), Some("w1"), Some(false))
    );
    let next = enqueue_key(&admin, T, "next-t").await;
    let v = wait_reason(&admin, &next, "slots_full").await;
    assert_eq!((v["used"].as_i64(), v["total"].as_i64(), v["executors"].as_i64()), (Some(1), Some(1), Some(1)), "{v}");
    assert_eq!(v["message"], "all execution slots for views_job are busy (1 of 1 in use on 1 worker)");

    let capped = enqueue_key(&admin, U, "hang-u").await;
    wait_state(&admin, &capped, "running").await;
    let behind = enqueue_key(&admin, U, "next-u").await;
    let v = wait_reason(&admin, &behind, "concurrency_reached").await;
    assert_eq!((v["running"].as_i64(), v["max"].as_i64()), (Some(1), Some(1)), "{v}");
    assert_eq!(v["message"], "the global concurrency limit of views_capped is reached (1 of 1 running)");
    assert_eq!(v["also"], json!([]), "a slot is free: only the limit holds it");

    let list = page(&admin, "/plugin/jobs?state=pending").await;
    assert!(list.contains(">slots busy (1 of 1)</div>"), "{list}");
    assert!(list.contains(">at concurrency limit (1 of 1)</div>"), "{list}");
    let job_page = page(&admin, &format!("/plugin/jobs/{behind}")).await;
    assert!(
        job_page.contains("The global concurrency limit of views_capped is reached (1 of 1 running)."),
        "{job_page}"
    );

    // Freeing the slots lets both run.
    for id in [&busy, &capped] {
        let r = http::post_json(&admin.http, &format!("/api/plugin/jobs/{id}/cancel"), &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_state(&admin, &next, "succeeded").await;
    wait_state(&admin, &behind, "succeeded").await;
    assert_eq!(worker.inbox.executions().len(), 4);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_or_held_job_names_who_paused_it_and_runs_once_nothing_else_holds_it() {
    let dir = TempDir::new("views-holds");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let _worker = FakeWorker::start(admin.grpc, spec("w1", 1)).await;
    wait_config(&admin, T).await;
    let (alice, bob) = (operator(&admin, "alice").await, operator(&admin, "bob").await);

    let r = as_token(&admin, &alice, "POST", "/api/plugin/dispatch?paused=true", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = enqueue_key(&admin, T, "a").await;
    let v = wait_reason(&admin, &id, "dispatch_paused").await;
    assert_eq!(v["by"], "alice");
    assert!(v["message"].as_str().unwrap().starts_with("all dispatch is paused (by alice since "), "{v}");
    assert_eq!(v["also"], json!([]), "once dispatch resumes nothing else holds it: it is ready");

    let r =
        as_token(&admin, &bob, "POST", &format!("/api/plugin/job-types/{T}/hold"), &json!({"dispatch": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = explain(&admin, &id).await;
    assert_eq!(v["reason"], "dispatch_paused");
    assert_eq!(v["also"][0]["reason"], "type_held", "{v}");
    assert!(v["also"][0]["message"].as_str().unwrap().starts_with("dispatch of views_job is held (by bob since "));
    let job_page = page(&admin, &format!("/plugin/jobs/{id}")).await;
    assert!(job_page.contains("All dispatch is paused (by alice since "), "{job_page}");
    assert!(job_page.contains("Once that is resolved, it still waits because:"));
    assert!(job_page.contains("Dispatch of views_job is held (by bob since "));

    let r = as_token(&admin, &alice, "POST", "/api/plugin/dispatch?paused=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = wait_reason(&admin, &id, "type_held").await;
    assert_eq!((v["by"].as_str(), v["also"].clone()), (Some("bob"), json!([])));
    let type_page = page(&admin, &format!("/plugin/job-types/{T}")).await;
    assert!(type_page.contains("id=\"paused\""), "the job type says it is paused");

    let r =
        as_token(&admin, &bob, "POST", &format!("/api/plugin/job-types/{T}/hold"), &json!({"dispatch": false})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_state(&admin, &id, "succeeded").await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_keeps_a_job_waiting_until_not_before_through_its_retry_backoff_and_past_its_expiry() {
    let dir = TempDir::new("views-time");
    let t0 = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().timestamp_millis();
    let clock = ManualClock::new(t0);
    let admin = start_manual(dir.path(), &clock).await;
    let mut s = spec("w1", 2);
    runtime(&mut s, |r| {
        r.retry_limit = 2;
        r.retry_backoff_seconds = 60;
    });
    let _worker = FakeWorker::start(admin.grpc, s).await;
    wait_config(&admin, T).await;

    let later =
        enqueue(&admin, T, json!({ "parameters": {}, "dedupe_key": "later", "not_before": rfc3339(t0 + 3_600_000) }))
            .await;
    let v = wait_reason(&admin, &later, "not_before").await;
    assert_eq!(time_ms(&v["until"]), Some(t0 + 3_600_000), "{v}");
    assert_eq!(v["message"], "not before 2030-01-01T01:00:00Z");
    let job_page = page(&admin, &format!("/plugin/jobs/{later}")).await;
    assert!(job_page.contains("Not before 2030-01-01T01:00:00Z."), "{job_page}");
    assert!(job_page.contains("datetime=\"2030-01-01T01:00:00Z\""), "the time it waits for");

    let flaky = enqueue_key(&admin, T, "fail-1").await;
    let v = wait_reason(&admin, &flaky, "retry_backoff").await;
    let until = time_ms(&v["until"]).expect("until");
    assert!((t0 + 30_000..=t0 + 60_000).contains(&until), "half to all of the 60 s backoff: {v}");
    assert_eq!(v["failed_attempt"], 1);
    assert_eq!(v["message"], format!("attempt 1 failed; waiting for the retry backoff until {}", rfc3339(until)));

    // Paused, a job with an expiry waits; once its time passes the dispatcher expires it.
    let r = http::post_json(&admin.http, "/api/plugin/dispatch?paused=true", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doomed =
        enqueue(&admin, T, json!({ "parameters": {}, "dedupe_key": "doomed", "expires_at": rfc3339(t0 + 120_000) }))
            .await;
    wait_reason(&admin, &doomed, "dispatch_paused").await;
    clock.advance(120_000);
    let v = wait_reason(&admin, &doomed, "expired").await;
    assert_eq!(v["message"], "expired at 2030-01-01T00:02:00Z before it started; it will not run");
    assert_eq!(v["blocked"], true);
    wait_state(&admin, &doomed, "failed").await;
    assert_eq!(explain(&admin, &doomed).await["reason"], "expired", "it still says why once expired");

    let r = http::post_json(&admin.http, "/api/plugin/dispatch?paused=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(explain(&admin, &later).await["reason"], "not_before");
    clock.set(t0 + 3_600_000);
    wait_state(&admin, &later, "succeeded").await;
    admin.stop().await;
}

// ---- Run now and the configuration it needs -------------------------------------------

const NEEDS: &str = "views_sweep";

/// A worker of `NEEDS`, a job type with a required setting (Directories) and no default.
fn needs_directories() -> FakeWorkerSpec {
    let mut spec = FakeWorkerSpec::new("w-sweep", NEEDS, 1).detect(|_| vec![vec![proposal("alpha")]]);
    let d = spec.descriptors.get_mut(NEEDS).unwrap();
    d.display_name = "Disk sweep".into();
    let form = d.admin_config_form.as_mut().unwrap();
    form.sections[0].fields.push(pb::ConfigField {
        name: "directories".into(),
        label: "Directories".into(),
        field_type: pb::ConfigFieldType::String as i32,
        widget: pb::ConfigWidget::Text as i32,
        required: true,
        ..Default::default()
    });
    d.admin_runtime_defaults.as_mut().unwrap().enabled = false;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_is_refused_with_what_to_set_until_the_required_setting_is_saved() {
    let dir = TempDir::new("views-run-now");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let worker = FakeWorker::start(admin.grpc, needs_directories()).await;
    wait_config(&admin, NEEDS).await;
    let said = "Disk sweep needs configuration: set Directories";

    for path in
        [format!("/api/plugin/job-types/{NEEDS}/run?wait=false"), format!("/api/plugin/job-types/{NEEDS}/detect")]
    {
        let r = http::post_json(&admin.http, &path, &json!({})).await;
        assert_eq!(r.status, 409, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], said, "{path}");
    }
    let (client, type_page) = Client::open(&admin.http, &format!("/plugin/job-types/{NEEDS}")).await;
    let html = type_page.text();
    assert!(html.contains("id=\"needs-configuration\""), "{html}");
    assert!(html.contains("Disk sweep needs configuration:</strong> set Directories"));
    let r = client.post(&format!("/plugin/job-types/{NEEDS}/run"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(flash_status(&r), Some(Err(format!("{said}."))));
    assert!(worker.inbox.detections().is_empty(), "no detection was sent");
    let audit = admin.get("/api/plugin/audit?action=run&outcome=refused").await;
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(2), "both refusals are audited: {audit}");

    plugins::configure(&admin, NEEDS, json!({ "directories": plugins::string("/data") })).await;
    let r = client.post(&format!("/plugin/job-types/{NEEDS}/run"), &[]).await;
    assert!(matches!(flash_status(&r), Some(Ok(m)) if m.starts_with("Run started")), "{:?}", flash_status(&r));
    admin.wait_jobs("the run's job succeeded", &format!("job_type={NEEDS}"), 1, "succeeded").await;
    assert!(!page(&admin, &format!("/plugin/job-types/{NEEDS}")).await.contains("id=\"needs-configuration\""));
    admin.stop().await;
}

// ---- workers over time ----------------------------------------------------------------

const SDK: &str = "views_sdk";

/// An SDK job type that finds nothing and does nothing.
struct Idle;

#[worker_sdk::async_trait]
impl JobHandler for Idle {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(SDK, "Idle").detect(1).execute(2)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new(SDK, "Idle").runtime(Runtime::default().interval_minutes(60)).build()
    }

    async fn detect(&self, _: pb::RunDetectionRequest, _: DetectionSender, _: CancellationToken) -> HandlerResult<()> {
        Ok(())
    }

    async fn execute(
        &self,
        _: pb::ExecuteJobRequest,
        _: ProgressSender,
        _: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        Ok(pb::JobResult::default())
    }
}

async fn connected(admin: &TestAdmin, worker_id: &str) -> Value {
    wait_for(&format!("{worker_id} is connected"), WAIT, || async {
        let list = admin.get("/api/plugin/workers").await;
        list.as_array().and_then(|a| a.iter().find(|w| w["worker_id"] == worker_id).cloned())
    })
    .await
}

/// Waits until `worker_id` is listed as departed because of `because`; returns the entry.
async fn departed(admin: &TestAdmin, worker_id: &str, because: &str) -> Value {
    wait_for(&format!("{worker_id} departed ({because})"), WAIT, || async {
        let v = admin.get("/api/plugin/workers/departed").await;
        v["departed"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["worker_id"] == worker_id && d["because"] == because).cloned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_workers_are_listed_with_why_and_a_worker_without_an_address_is_shown_by_its_peer() {
    let dir = TempDir::new("views-workers");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let work = TempDir::new("views-workers-sdk");

    // Shut down cleanly, and drained first.
    let sdk = PluginWorker::start(admin.grpc, "sdk-1", work.path(), vec![Arc::new(Idle)]);
    connected(&admin, "sdk-1").await;
    sdk.stop().await;
    let d = departed(&admin, "sdk-1", "closed").await;
    assert_eq!(d["reason"], "stream closed by the worker");
    assert_eq!(d["job_types"], json!([SDK]));
    let sdk = PluginWorker::start(admin.grpc, "sdk-2", work.path(), vec![Arc::new(Idle)]);
    connected(&admin, "sdk-2").await;
    let r = http::post_json(&admin.http, "/api/plugin/workers/sdk-2/drain", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    sdk.stop().await;
    departed(&admin, "sdk-2", "drained").await;

    // No address in its hello: the connection's is shown; it heartbeats, then stalls.
    let quiet = FakeWorker::start(admin.grpc, spec("quiet", 3).address("")).await;
    let w = connected(&admin, "quiet").await;
    let peer = w["peer_address"].as_str().unwrap().to_string();
    assert_eq!(w["address"], "", "{w}");
    assert!(peer.starts_with("127.0.0.1:") && !peer.ends_with(":0"), "the stream's TCP peer: {w}");
    wait_for("a heartbeat's slot use is sampled", WAIT, || async {
        let list = admin.get("/api/plugin/workers").await;
        let w = list.as_array()?.iter().find(|w| w["worker_id"] == "quiet")?.clone();
        (w["slot_use_last_hour"]["samples"].as_i64()? > 0).then_some(())
    })
    .await;
    let workers_page = page(&admin, "/plugin/workers").await;
    assert!(
        workers_page.contains(&format!("{peer} <span class=\"muted\">(connection's address; the worker sent none)")),
        "{workers_page}"
    );
    assert!(workers_page.contains("<svg class=\"spark\""), "slot use over the hour is drawn");
    assert!(workers_page.contains("peak 0 of 3 · average 0"));
    quiet.stall();
    let d = departed(&admin, "quiet", "lost").await;
    assert!(d["reason"].as_str().unwrap().starts_with("no heartbeat for "), "{d}");
    assert_eq!((d["address"].as_str(), d["peer_address"].as_str()), (Some(""), Some(peer.as_str())));

    // A second stream with the same id replaces the first.
    let _first = FakeWorker::start(admin.grpc, spec("twin", 1)).await;
    let _second = FakeWorker::start(admin.grpc, spec("twin", 1)).await;
    let d = departed(&admin, "twin", "replaced").await;
    assert_eq!(d["reason"], "replaced by a newer stream with the same worker_id");
    connected(&admin, "twin").await;

    let list = admin.get("/api/plugin/workers/departed").await;
    let order: Vec<&str> = list["departed"].as_array().unwrap().iter().filter_map(|d| d["because"].as_str()).collect();
    assert_eq!(order, ["replaced", "lost", "drained", "closed"], "newest first: {list}");
    let workers_page = page(&admin, "/plugin/workers").await;
    for (id, because, label) in [
        ("sdk-1", "closed", "shut down (closed its stream)"),
        ("sdk-2", "drained", "drained, then shut down"),
        ("quiet", "lost", "lost (stalled)"),
        ("twin", "replaced", "replaced by a newer connection"),
    ] {
        assert!(workers_page.contains(&format!("data-departed=\"{id}\" data-because=\"{because}\"")), "{id}");
        assert!(workers_page.contains(label), "{label}");
    }
    admin.stop().await;
}
