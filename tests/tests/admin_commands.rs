//! The command layer seen from outside: every operator command sent once through the
//! JSON API and once through its page form reaches the same outcome, and the same
//! request that one surface refuses the other refuses too.
//!
//! Each test starts two admins set up identically (own data dir, one fake worker over
//! real gRPC each): one is driven through `/api/plugin/...` with a token named "api", the
//! other through the `/plugin` forms with the CSRF cookie and field and a token named
//! "ui"; the actor a command records is the token's name. Pausing
//! dispatch has no form, so that test compares the API with a command executed
//! directly on `Components`. Job types start disabled, so no scheduled detection runs
//! behind a test's back; detections happen only when a test asks for one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use admin::{
    Components,
    commands::{Actor, Caller, Command, Outcome},
    scheduler::DetectionMode,
};
use proto::pb::{self, config_value::Kind};
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, proposal},
    harness::TestAdmin,
    http::{self, Response},
    page_client::{Client, flash_status, location},
    wait_for,
};

const T: &str = "test_job";
const WAIT: Duration = Duration::from_secs(30);
/// Who the tests' own setup commands act as.
const SETUP: Actor = Actor::Local("test");

// ---- a page client (as in ui_pages.rs) ------------------------------------------------

/// The flash status a page action's 303 carries: `Ok(message)` or `Err(message)`.
fn flash(r: &Response) -> Result<String, String> {
    assert_eq!(r.status, 303, "a page action answers with a redirect: {}", r.text());
    flash_status(r).unwrap_or_else(|| panic!("the redirect carries no flash status: {}", location(r)))
}

/// An API error as the pages word it: capitalised, ending in a full stop.
fn as_sentence(s: &str) -> String {
    let s = s.trim();
    let mut chars = s.chars();
    let mut out: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// The `error` of a JSON API refusal, after checking its status.
fn api_refusal(r: &Response, status: u16) -> String {
    assert_eq!(r.status, status, "the API refuses with {status}: {}", r.text());
    r.json()["error"].as_str().expect("a refusal says why").to_string()
}

// ---- two admins set up alike ------------------------------------------------------------

/// A worker for `T` whose job type starts disabled (no scheduled detection) and whose
/// failures are final (no automatic retry).
fn quiet(worker_id: &str) -> FakeWorkerSpec {
    let mut spec = FakeWorkerSpec::new(worker_id, T, 2);
    let runtime = spec.descriptors.get_mut(T).unwrap().admin_runtime_defaults.as_mut().unwrap();
    runtime.enabled = false;
    runtime.retry_limit = 0;
    spec
}

/// One admin with one fake worker on its own data dir.
struct Side {
    admin: TestAdmin,
    worker: Option<FakeWorker>,
    _dir: TempDir,
}

impl Side {
    async fn start(name: &str, spec: FakeWorkerSpec) -> Side {
        let dir = TempDir::new(name);
        let admin = TestAdmin::start(dir.path(), |_| {}).await;
        let worker = FakeWorker::start(admin.grpc, spec).await;
        wait_for("the descriptor and config are stored", WAIT, || async {
            admin.components().configs.config(T).map(|_| ())
        })
        .await;
        Side { admin, worker: Some(worker), _dir: dir }
    }

    fn c(&self) -> &Arc<Components> {
        self.admin.components()
    }

    fn http(&self) -> &str {
        &self.admin.http
    }

    fn worker(&self) -> &FakeWorker {
        self.worker.as_ref().expect("the worker is attached")
    }

    /// A page client holding this admin's CSRF cookie and token.
    async fn client(&self) -> Client {
        Client::open(self.http(), &format!("/plugin/job-types/{T}")).await.0
    }

    fn saved(&self) -> pb::PersistedJobTypeConfig {
        (*self.c().configs.config(T).expect("saved config")).clone()
    }

    async fn status(&self) -> Value {
        self.admin.get("/api/plugin/status").await
    }

    async fn job(&self, id: &str) -> Value {
        self.admin.get(&format!("/api/plugin/jobs/{id}")).await
    }

    /// The job's attempts, without their ids and times.
    async fn attempts(&self, id: &str) -> Vec<Value> {
        let detail = self.admin.get(&format!("/api/plugin/jobs/{id}/detail")).await;
        detail["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| json!([a["attempt"], a["worker_id"], a["outcome"], a["error_message"]]))
            .collect()
    }

    async fn wait_job(&self, id: &str, state: &str) -> Value {
        wait_for(&format!("job {id} {state}"), WAIT, || async {
            let j = self.job(id).await;
            (j["state"] == format!("job_state_{state}")).then_some(j)
        })
        .await
    }

    /// The latest detection's proposals, once a detection has proposed `n` and ended.
    async fn wait_proposals(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("a finished detection with {n} proposals"), WAIT, || async {
            let states = self.admin.get("/api/plugin/scheduler-states").await;
            let running = states
                .as_array()
                .and_then(|s| s.iter().find(|s| s["job_type"] == T))
                .is_some_and(|s| s["detection_running"] == true);
            let results = self.admin.get(&format!("/api/plugin/job-types/{T}/detection-results")).await;
            let proposals = results["proposals"].as_array().cloned().unwrap_or_default();
            (!running && proposals.len() == n).then_some(proposals)
        })
        .await
    }

    /// Setup, not under test: a run detection through the command layer, and the one
    /// job it creates once it is in `state`.
    async fn one_job(&self, state: &str) -> String {
        let outcome = self
            .c()
            .execute(
                &Caller::new(SETUP),
                Command::Detect { job_type: T.into(), mode: DetectionMode::Run, options: Default::default() },
            )
            .await;
        assert!(matches!(outcome, Ok(Outcome::DetectionRequested { .. })), "{outcome:?}");
        let jobs = self.admin.wait_jobs(&format!("one job {state}"), &format!("job_type={T}"), 1, state).await;
        jobs[0]["job_id"].as_str().unwrap().to_string()
    }

    /// Drops the worker's stream and waits until the admin has let it go.
    async fn lose_worker(&mut self) {
        let worker = self.worker.take().expect("a worker to lose");
        worker.kill();
        wait_for("the admin lets the worker go", WAIT, || async {
            self.c().registry.get(&worker.worker_id).is_none().then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.admin.stop().await;
    }
}

/// Two admins set up alike: the first is driven through the API, the second through
/// the pages.
async fn pair(spec: impl Fn() -> FakeWorkerSpec) -> (Side, Side) {
    let (api, ui) = (Side::start("commands-api", spec()).await, Side::start("commands-ui", spec()).await);
    // Each side acts with an admin-role token named after its surface, so the actor a
    // command records tells the two apart.
    for (side, name) in [(&api, "api"), (&ui, "ui")] {
        let r = http::post_json(side.http(), "/api/plugin/tokens", &json!({ "name": name, "role": "admin" })).await;
        assert_eq!(r.status, 201, "create token {name}: {}", r.text());
        http::register_token(side.http(), r.json()["token"].as_str().unwrap());
    }
    (api, ui)
}

/// What a job ended as, without ids, request ids and times.
fn job_outcome(j: &Value) -> Value {
    json!({
        "job_type": j["job_type"],
        "dedupe_key": j["dedupe_key"],
        "summary": j["summary"],
        "state": j["state"],
        "error_message": j["error_message"],
        "result_summary": j["result_summary"],
        "attempt": j["attempt"],
        "dead_letter": j["dead_letter"],
        "worker_id": j["worker_id"],
        "progress_percent": j["progress_percent"],
    })
}

/// Proposals without the job ids they became.
fn proposal_outcomes(list: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = list
        .iter()
        .map(|p| json!([p["dedupe_key"], p["summary"], p["priority"], p["outcome"], p["job_id"] != ""]))
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

/// An admin's listed jobs as outcomes, by dedupe key.
async fn job_outcomes(side: &Side) -> Vec<Value> {
    let mut out: Vec<Value> = side.admin.jobs(&format!("job_type={T}")).await.iter().map(job_outcome).collect();
    out.sort_by_key(|v| v["dedupe_key"].to_string());
    out
}

fn int_of(v: Option<&pb::ConfigValue>) -> Option<i64> {
    match v.and_then(|v| v.kind.as_ref()) {
        Some(Kind::Int64Value(i)) => Some(*i),
        _ => None,
    }
}

/// A saved config without who saved it and when.
fn anonymous(mut c: pb::PersistedJobTypeConfig) -> pb::PersistedJobTypeConfig {
    c.updated_at = None;
    c.updated_by.clear();
    c
}

/// How many jobs the dispatcher knows, in any state.
async fn jobs_total(side: &Side) -> i64 {
    let status = side.status().await;
    status["jobs_by_state"].as_object().expect("jobs_by_state").values().map(|n| n.as_i64().unwrap()).sum()
}

async fn activity_messages(side: &Side) -> Vec<String> {
    let list = side.admin.get(&format!("/api/plugin/activities?job_type={T}")).await;
    list.as_array().expect("activities").iter().filter_map(|a| a["message"].as_str().map(str::to_string)).collect()
}

// ---- the tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_the_config_through_the_api_and_the_form_stores_the_same_values_signed_by_each_surface() {
    let (api, ui) = pair(|| quiet("w1")).await;
    assert_eq!(int_of(api.saved().admin_config_values.get("threshold")), Some(10), "the default before");
    let path = format!("/api/plugin/job-types/{T}/config");

    let r =
        http::put_json(api.http(), &path, &json!({"admin_config_values": {"threshold": {"int64_value": "42"}}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["updated_by"], "api", "{}", r.text());
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/job-types/{T}/config"), &[("admin.threshold", "42")]).await;
    assert_eq!(flash(&r), Ok("Configuration saved.".to_string()));

    let (a, u) = (api.saved(), ui.saved());
    assert_eq!(int_of(a.admin_config_values.get("threshold")), Some(42));
    assert_eq!((a.updated_by.as_str(), u.updated_by.as_str()), ("api", "ui"), "each save names its surface");
    assert!(a.updated_at.is_some() && u.updated_at.is_some());
    assert_eq!(anonymous(a), anonymous(u), "the same config is stored");
    assert!(activity_messages(&api).await.contains(&"configuration saved by api".to_string()));
    assert!(activity_messages(&ui).await.contains(&"configuration saved by ui".to_string()));

    // The same out-of-range value is refused by both, for the same field and reason,
    // and neither stores anything.
    let r =
        http::put_json(api.http(), &path, &json!({"admin_config_values": {"threshold": {"int64_value": "500"}}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    let error = body["field_errors"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["field"] == "admin.threshold"))
        .unwrap_or_else(|| panic!("a field error for admin.threshold: {body}"));
    let reason = as_sentence(error["message"].as_str().unwrap());
    let r = client.post(&format!("/plugin/job-types/{T}/config"), &[("admin.threshold", "500")]).await;
    assert_eq!(r.status, 422, "the form comes back with the error");
    assert!(r.text().contains(&reason), "the page gives the API's reason {reason:?}");
    assert_eq!(int_of(api.saved().admin_config_values.get("threshold")), Some(42), "the API stored nothing");
    assert_eq!(int_of(ui.saved().admin_config_values.get("threshold")), Some(42), "the form stored nothing");
    api.stop().await;
    ui.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_runtime_settings_through_the_api_and_the_form_stores_the_same_settings() {
    let (api, ui) = pair(|| quiet("w1")).await;
    let wanted = pb::AdminRuntimeConfig {
        enabled: true,
        detection_interval_minutes: 15,
        detection_timeout_seconds: 45,
        max_jobs_per_detection: 7,
        global_execution_concurrency: 3,
        per_worker_execution_concurrency: 2,
        retry_limit: 5,
        retry_backoff_seconds: 20,
        job_type_max_runtime_seconds: 600,
        execution_timeout_seconds: 120,
    };
    assert_ne!(api.saved().admin_runtime, Some(wanted), "the settings differ before");
    let path = format!("/api/plugin/job-types/{T}/config");

    let r = http::put_json(
        api.http(),
        &path,
        &json!({"admin_runtime": {
            "enabled": true,
            "detection_interval_minutes": 15,
            "detection_timeout_seconds": 45,
            "max_jobs_per_detection": 7,
            "global_execution_concurrency": 3,
            "per_worker_execution_concurrency": 2,
            "retry_limit": 5,
            "retry_backoff_seconds": 20,
            "job_type_max_runtime_seconds": 600,
            "execution_timeout_seconds": 120,
        }}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let client = ui.client().await;
    let form = [
        // A checked box after its hidden "false", as the page's form sends it.
        ("runtime.enabled", "false"),
        ("runtime.enabled", "true"),
        ("runtime.detection_interval_minutes", "15"),
        ("runtime.detection_timeout_seconds", "45"),
        ("runtime.max_jobs_per_detection", "7"),
        ("runtime.global_execution_concurrency", "3"),
        ("runtime.per_worker_execution_concurrency", "2"),
        ("runtime.retry_limit", "5"),
        ("runtime.retry_backoff_seconds", "20"),
        ("runtime.job_type_max_runtime_seconds", "600"),
        ("runtime.execution_timeout_seconds", "120"),
    ];
    let r = client.post(&format!("/plugin/job-types/{T}/runtime"), &form).await;
    assert_eq!(flash(&r), Ok("Runtime settings saved.".to_string()));

    let (a, u) = (api.saved(), ui.saved());
    assert_eq!(a.admin_runtime, Some(wanted), "the API stored the settings");
    assert_eq!((a.updated_by.as_str(), u.updated_by.as_str()), ("api", "ui"));
    assert_eq!(anonymous(a), anonymous(u), "the same config is stored");
    assert_eq!(api.c().configs.runtime(T), ui.c().configs.runtime(T), "the same settings are in effect");

    // An out-of-range retry limit is refused by both for the same reason.
    let r = http::put_json(api.http(), &path, &json!({"admin_runtime": {"enabled": true, "retry_limit": 1000}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    let error = body["field_errors"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["field"] == "runtime.retry_limit"))
        .unwrap_or_else(|| panic!("a field error for runtime.retry_limit: {body}"));
    let reason = as_sentence(error["message"].as_str().unwrap());
    let r = client
        .post(
            &format!("/plugin/job-types/{T}/runtime"),
            &[("runtime.enabled", "true"), ("runtime.retry_limit", "1000")],
        )
        .await;
    assert_eq!(r.status, 422);
    let html = r.text();
    let at = html.find("name=\"runtime.retry_limit\"").expect("the retry limit field");
    assert!(html[at..].chars().take(600).collect::<String>().contains(&reason), "the field shows {reason:?}");
    assert_eq!(api.saved().admin_runtime, Some(wanted), "the API stored nothing");
    assert_eq!(ui.saved().admin_runtime, Some(wanted), "the form stored nothing");
    api.stop().await;
    ui.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_the_schema_through_the_api_and_the_form_stores_the_same_new_descriptor_version() {
    let (mut api, mut ui) = pair(|| quiet("w1")).await;
    // Without a worker that offers the job type, both refuse alike.
    api.lose_worker().await;
    ui.lose_worker().await;
    let r =
        http::post_json(api.http(), &format!("/api/plugin/job-types/{T}/schema?force_refresh=true"), &json!({})).await;
    let refusal = api_refusal(&r, 503);
    assert!(refusal.contains("no connected worker offers"), "{refusal}");
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/job-types/{T}/schema"), &[]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal)), "the page gives the API's reason");

    // The same worker comes back (same instance, so the admin does not ask it on its
    // own) offering a newer descriptor; only a refresh picks it up.
    for side in [&mut api, &mut ui] {
        let mut spec = quiet("w1");
        spec.descriptors.get_mut(T).unwrap().descriptor_version = 2;
        spec.descriptors.get_mut(T).unwrap().description = "the second version".into();
        side.worker = Some(FakeWorker::start(side.admin.grpc, spec).await);
        assert_eq!(side.c().configs.descriptor(T).unwrap().descriptor_version, 1, "still the stored version");
    }
    let r =
        http::post_json(api.http(), &format!("/api/plugin/job-types/{T}/schema?force_refresh=true"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["descriptor_version"], 2);
    let r = client.post(&format!("/plugin/job-types/{T}/schema"), &[]).await;
    assert_eq!(flash(&r), Ok("Schema refreshed: descriptor version 2.".to_string()));

    let (a, u) = (api.c().configs.descriptor(T).unwrap(), ui.c().configs.descriptor(T).unwrap());
    assert_eq!(a.descriptor_version, 2);
    assert_eq!(a.description, "the second version");
    assert_eq!(a, u, "the same descriptor is stored");
    let (a, u) = (api.admin.get("/api/plugin/job-types").await, ui.admin.get("/api/plugin/job-types").await);
    assert_eq!(a[0]["descriptor_version"], 2);
    assert_eq!(a, u, "the job type lists agree");
    api.stop().await;
    ui.stop().await;
}

fn detector() -> FakeWorkerSpec {
    quiet("w1").detect(|_| vec![vec![proposal("alpha")], vec![proposal("beta")]]).exec(|_| Exec::Succeed(vec![50.0]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_preview_through_the_api_and_the_form_shows_the_same_proposals_and_creates_no_job() {
    let (mut api, mut ui) = pair(detector).await;
    let r = http::post_json(api.http(), &format!("/api/plugin/job-types/{T}/detect?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["status"], "started");
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/job-types/{T}/detect"), &[]).await;
    let message = flash(&r).expect("the detection starts");
    assert!(message.starts_with("Detection started") && !message.contains("after"), "{message}");

    let (a, u) = (api.wait_proposals(2).await, ui.wait_proposals(2).await);
    assert!(a.iter().all(|p| p["outcome"] == "preview" && p["job_id"] == ""), "{a:?}");
    assert_eq!(proposal_outcomes(&a), proposal_outcomes(&u), "the same proposals");
    // The dispatcher's counts, not the job list: the list reads the store, which may lag.
    assert_eq!(jobs_total(&api).await, 0, "no job is created");
    assert_eq!(jobs_total(&ui).await, 0, "no job is created");
    let runs = |side: &Side| {
        let addr = side.http().to_string();
        async move {
            let r = http::get(&addr, &format!("/api/plugin/job-types/{T}/runs")).await.json();
            r["successes"].as_array().unwrap().iter().map(|r| json!([r["kind"], r["proposals"]])).collect::<Vec<_>>()
        }
    };
    let api_runs = runs(&api).await;
    assert_eq!(api_runs, [json!(["detection_preview", 2])], "the run is recorded as a preview");
    assert_eq!(api_runs, runs(&ui).await);

    // With no detector left, both refuse the same way.
    api.lose_worker().await;
    ui.lose_worker().await;
    let r = http::post_json(api.http(), &format!("/api/plugin/job-types/{T}/detect"), &json!({})).await;
    let refusal = api_refusal(&r, 503);
    assert!(refusal.contains("no connected worker can detect"), "{refusal}");
    let r = client.post(&format!("/plugin/job-types/{T}/detect"), &[]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal)));
    api.stop().await;
    ui.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_the_api_and_the_form_creates_the_same_jobs_that_finish_the_same_way() {
    let (api, ui) = pair(detector).await;
    let r = http::post_json(api.http(), &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["mode"], json!(DetectionMode::Run));
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/job-types/{T}/run"), &[]).await;
    let message = flash(&r).expect("the run starts");
    assert!(message.starts_with("Run started"), "{message}");

    let (a, u) = (api.wait_proposals(2).await, ui.wait_proposals(2).await);
    assert!(a.iter().all(|p| p["outcome"] == "created" && p["job_id"] != ""), "{a:?}");
    assert_eq!(proposal_outcomes(&a), proposal_outcomes(&u), "the same proposals became jobs");
    api.admin.wait_jobs("the API's jobs succeed", &format!("job_type={T}"), 2, "succeeded").await;
    ui.admin.wait_jobs("the page's jobs succeed", &format!("job_type={T}"), 2, "succeeded").await;
    let outcomes = job_outcomes(&api).await;
    assert_eq!(outcomes.iter().map(|j| j["dedupe_key"].clone()).collect::<Vec<_>>(), [json!("alpha"), json!("beta")]);
    assert_eq!(outcomes, job_outcomes(&ui).await, "the same jobs ended the same way");

    // A job type the admin does not know: both answer "not found".
    let r = http::post_json(api.http(), "/api/plugin/job-types/no_such_type/run", &json!({})).await;
    let refusal = api_refusal(&r, 404);
    assert!(refusal.contains("no_such_type"), "{refusal}");
    let r = client.post("/plugin/job-types/no_such_type/run", &[]).await;
    assert_eq!(r.status, 404, "the page refuses too: {}", r.text());
    assert!(r.text().contains("no_such_type"));
    assert_eq!(jobs_total(&api).await, 2, "nothing more was created");
    api.stop().await;
    ui.stop().await;
}

fn hanging() -> FakeWorkerSpec {
    quiet("w1").detect(|_| vec![vec![proposal("one")]]).exec(|_| Exec::HangUntilCancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_running_job_through_the_api_and_the_form_ends_it_the_same_way_and_both_refuse_a_second_cancel() {
    let (api, ui) = pair(hanging).await;
    let (a, u) = (api.one_job("running").await, ui.one_job("running").await);

    let r = http::post_json(api.http(), &format!("/api/plugin/jobs/{a}/cancel"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let requested = r.json()["job"].clone();
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/jobs/{u}/cancel"), &[("confirm", "yes")]).await;
    // A running job ends when its worker confirms: both say so.
    assert_eq!((requested["state"].as_str(), requested["worker_id"].as_str()), (Some("job_state_running"), Some("w1")));
    assert_eq!(flash(&r), Ok(format!("Cancel requested: job {u} ends when worker w1 confirms.")));

    let (a_job, u_job) = (api.wait_job(&a, "canceled").await, ui.wait_job(&u, "canceled").await);
    assert!(a_job["error_message"].as_str().unwrap().contains("canceled by operator"), "{a_job}");
    assert_eq!(job_outcome(&a_job), job_outcome(&u_job), "the same end");
    assert_eq!(api.attempts(&a).await, ui.attempts(&u).await, "the same attempts");
    let reasons = |side: &Side| side.worker().inbox.cancels().into_iter().map(|c| c.reason).collect::<Vec<_>>();
    assert_eq!(reasons(&api), ["canceled by operator"], "the worker was asked to stop once");
    assert_eq!(reasons(&api), reasons(&ui));

    // The job has finished: both refuse, for the same reason, and nothing changes.
    let r = http::post_json(api.http(), &format!("/api/plugin/jobs/{a}/cancel"), &json!({})).await;
    let refusal = api_refusal(&r, 409);
    assert!(refusal.contains("has already finished"), "{refusal}");
    let r = client.post(&format!("/plugin/jobs/{u}/cancel"), &[("confirm", "yes")]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal.replace(&a, &u))));
    assert_eq!(job_outcome(&api.job(&a).await), job_outcome(&a_job));
    assert_eq!(job_outcome(&ui.job(&u).await), job_outcome(&u_job));
    api.stop().await;
    ui.stop().await;
}

/// A worker whose one proposal is not due for an hour, so its job waits as PENDING.
fn later() -> FakeWorkerSpec {
    let mut not_before = proto::now();
    not_before.seconds += 3600;
    quiet("w1").detect(move |_| vec![vec![pb::JobProposal { not_before: Some(not_before), ..proposal("later") }]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_a_waiting_job_through_the_api_and_the_form_fails_it_the_same_way_and_both_refuse_a_second_expiry() {
    let (api, ui) = pair(later).await;
    let (a, u) = (api.one_job("pending").await, ui.one_job("pending").await);

    let r = http::post_json(api.http(), &format!("/api/plugin/jobs/{a}/expire"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expired = r.json()["job"].clone();
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/jobs/{u}/expire"), &[("confirm", "yes")]).await;
    // A waiting job ends at once: both say so.
    assert_eq!(expired["state"], "job_state_failed", "{expired}");
    assert_eq!(flash(&r), Ok(format!("Job {u} was expired; it will not be retried.")));

    let (a_job, u_job) = (api.job(&a).await, ui.job(&u).await);
    assert_eq!(a_job["state"], "job_state_failed");
    assert_eq!(a_job["error_message"], "expired by operator", "{a_job}");
    assert_eq!(job_outcome(&a_job), job_outcome(&u_job), "the same end");
    assert_eq!(api.attempts(&a).await, ui.attempts(&u).await);
    assert!(api.worker().inbox.executions().is_empty() && ui.worker().inbox.executions().is_empty(), "never ran");

    // The API answers as SeaweedFS's does, `expired: false` with the reason; the page says why.
    let r = http::post_json(api.http(), &format!("/api/plugin/jobs/{a}/expire"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["expired"], false, "{answer}");
    let refusal = answer["reason"].as_str().expect("the reason").to_string();
    assert!(refusal.contains("has already finished"), "{refusal}");
    let r = client.post(&format!("/plugin/jobs/{u}/expire"), &[("confirm", "yes")]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal.replace(&a, &u))));
    assert_eq!(job_outcome(&api.job(&a).await), job_outcome(&a_job));
    assert_eq!(job_outcome(&ui.job(&u).await), job_outcome(&u_job));

    // Not a job at all: both answer "not found".
    let r = http::post_json(api.http(), "/api/plugin/jobs/j999999/expire", &json!({})).await;
    let refusal = api_refusal(&r, 404);
    let r = client.post("/plugin/jobs/j999999/expire", &[("confirm", "yes")]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal)));
    api.stop().await;
    ui.stop().await;
}

/// A worker whose first execution fails and whose later ones succeed.
fn fails_once() -> FakeWorkerSpec {
    let executions = Arc::new(AtomicUsize::new(0));
    quiet("w1").detect(|_| vec![vec![proposal("flaky")]]).exec(move |_| {
        if executions.fetch_add(1, Ordering::SeqCst) == 0 { Exec::Fail("boom".into()) } else { Exec::Succeed(vec![]) }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_failed_job_through_the_api_and_the_form_runs_it_again_the_same_way_and_both_refuse_a_second_retry()
{
    let (api, ui) = pair(fails_once).await;
    let (a, u) = (api.one_job("failed").await, ui.one_job("failed").await);
    assert_eq!(api.job(&a).await["error_message"], "boom");

    let r = http::post_json(api.http(), &format!("/api/plugin/jobs/{a}/retry"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.json()["job"]["state"], "job_state_failed", "requeued");
    let client = ui.client().await;
    let r = client.post(&format!("/plugin/jobs/{u}/retry"), &[]).await;
    assert_eq!(flash(&r), Ok(format!("Job {u} was requeued for a new round of attempts.")));

    let (a_job, u_job) = (api.wait_job(&a, "succeeded").await, ui.wait_job(&u, "succeeded").await);
    assert_eq!(job_outcome(&a_job), job_outcome(&u_job), "the same end");
    let attempts = api.attempts(&a).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts, ui.attempts(&u).await, "the same attempts");
    assert_eq!(api.worker().inbox.executions().len(), 2);
    assert_eq!(ui.worker().inbox.executions().len(), 2);

    // A job that succeeded cannot be retried: both refuse for the same reason.
    let r = http::post_json(api.http(), &format!("/api/plugin/jobs/{a}/retry"), &json!({})).await;
    let refusal = api_refusal(&r, 409);
    assert!(refusal.contains("only a failed or canceled job can be retried"), "{refusal}");
    let r = client.post(&format!("/plugin/jobs/{u}/retry"), &[]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal.replace(&a, &u))));
    assert_eq!(job_outcome(&api.job(&a).await), job_outcome(&a_job));
    assert_eq!(job_outcome(&ui.job(&u).await), job_outcome(&u_job));
    api.stop().await;
    ui.stop().await;
}

async fn worker_view(side: &Side, id: &str) -> Value {
    let list = side.admin.get("/api/plugin/workers").await;
    list.as_array().unwrap().iter().find(|w| w["worker_id"] == id).cloned().expect("the worker is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_and_undraining_through_the_api_and_the_form_agree_and_both_refuse_an_unknown_worker() {
    let (api, ui) = pair(detector).await;
    let client = ui.client().await;

    let r = http::post_json(api.http(), "/api/plugin/workers/w1/drain", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"worker_id": "w1", "draining": true}));
    let r = client.post("/plugin/workers/w1/drain", &[("draining", "true"), ("confirm", "yes")]).await;
    assert!(flash(&r).expect("drained").contains("is draining"));
    for side in [&api, &ui] {
        assert!(side.c().registry.is_draining("w1"));
        assert_eq!(worker_view(side, "w1").await["draining"], true);
    }
    // A draining worker is no detector: both admins now refuse a detection alike.
    let r = http::post_json(api.http(), &format!("/api/plugin/job-types/{T}/detect"), &json!({})).await;
    let refusal = api_refusal(&r, 503);
    let r = client.post(&format!("/plugin/job-types/{T}/detect"), &[]).await;
    assert_eq!(flash(&r), Err(as_sentence(&refusal)));

    let r = http::post_json(api.http(), "/api/plugin/workers/w1/drain?draining=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"worker_id": "w1", "draining": false}));
    let r = client.post("/plugin/workers/w1/drain", &[("draining", "false")]).await;
    assert!(flash(&r).expect("undrained").contains("takes new jobs again"));
    for side in [&api, &ui] {
        assert!(!side.c().registry.is_draining("w1"));
        assert_eq!(worker_view(side, "w1").await["draining"], false);
    }

    // A worker that is not connected cannot be drained.
    let r = http::post_json(api.http(), "/api/plugin/workers/nobody/drain", &json!({})).await;
    let refusal = api_refusal(&r, 404);
    assert!(refusal.contains("no connected worker"), "{refusal}");
    let r = client.post("/plugin/workers/nobody/drain", &[("draining", "true"), ("confirm", "yes")]).await;
    let error = flash(&r).expect_err("the page refuses");
    assert!(error.contains("not connected"), "{error}");
    assert!(!api.c().registry.is_draining("nobody") && !ui.c().registry.is_draining("nobody"));
    api.stop().await;
    ui.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_dispatch_through_the_api_and_as_a_command_holds_and_releases_jobs_the_same_way() {
    let (api, cmd) = pair(detector).await;
    for side in [&api, &cmd] {
        assert_eq!(side.status().await["dispatch_paused"], false);
    }

    let r = http::post_json(api.http(), "/api/plugin/dispatch?paused=true", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"dispatch_paused": true}));
    let outcome = cmd.c().execute(&Caller::new(SETUP), Command::PauseDispatch { paused: true }).await;
    assert!(matches!(outcome, Ok(Outcome::DispatchPaused(true))), "{outcome:?}");
    for side in [&api, &cmd] {
        assert_eq!(side.status().await["dispatch_paused"], true);
    }

    // While paused, a run's jobs are created and wait.
    for side in [&api, &cmd] {
        let outcome = side
            .c()
            .execute(
                &Caller::new(SETUP),
                Command::Detect { job_type: T.into(), mode: DetectionMode::Run, options: Default::default() },
            )
            .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        side.wait_proposals(2).await;
        side.admin.wait_jobs("the run's jobs are listed", &format!("job_type={T}"), 2, "pending").await;
    }
    let held = job_outcomes(&api).await;
    assert!(held.iter().all(|j| j["state"] == "job_state_pending"), "{held:?}");
    assert_eq!(held, job_outcomes(&cmd).await);
    assert!(api.worker().inbox.executions().is_empty() && cmd.worker().inbox.executions().is_empty());

    // A request the API cannot read changes nothing.
    let r = http::post_json(api.http(), "/api/plugin/dispatch?paused=maybe", &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api.status().await["dispatch_paused"], true);

    let r = http::post_json(api.http(), "/api/plugin/dispatch?paused=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"dispatch_paused": false}));
    let outcome = cmd.c().execute(&Caller::new(SETUP), Command::PauseDispatch { paused: false }).await;
    assert!(matches!(outcome, Ok(Outcome::DispatchPaused(false))), "{outcome:?}");
    for side in [&api, &cmd] {
        assert_eq!(side.status().await["dispatch_paused"], false);
        side.admin.wait_jobs("the held jobs run once released", &format!("job_type={T}"), 2, "succeeded").await;
    }
    assert_eq!(job_outcomes(&api).await, job_outcomes(&cmd).await, "the same jobs ended the same way");
    api.stop().await;
    cmd.stop().await;
}
