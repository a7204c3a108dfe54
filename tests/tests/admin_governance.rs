//! Operator governance from outside (issue 11): the audit trail (who did what, its
//! filters and keyset paging, export in three formats, retention by count and by age), holds
//! that survive a `kill -9` (the global dispatch pause, per job type detection and dispatch
//! holds, worker drains), cron schedules under a manual clock, bulk dead-letter replay,
//! enqueue by hand, and the guardrails (an approval token, the run-now cap).
//!
//! Real admins (in process, or a real `plughost admin` process for the `kill -9` restarts)
//! and fake workers over real gRPC. Jobs come from `POST job-types/{t}/jobs`, and job types
//! start disabled unless a test needs scheduled detection, so nothing runs behind a test's
//! back. Tests that move time drive an in-process admin with a `ManualClock` and a
//! heartbeat interval of 30 days: jumping the clock by hours must not make the liveness
//! check (which reads the same clock) declare the fake worker lost. A "no detection
//! happened" claim is checked right after a scheduler pass run by the test itself at the
//! manual clock's instant, never after a sleep.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use admin::{Admin, AdminConfig, RateCap, clock::ManualClock};
use proto::pb::{self, admin_to_worker_message::Body as AdminBody, config_value::Kind};
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{Exec, FakeWorker, FakeWorkerSpec, simple_descriptor},
    harness::{AdminProcess, TestAdmin, data_dir, free_port},
    http::{self, Response},
    wait_for,
};

const T: &str = "gov_job";
const WAIT: Duration = Duration::from_secs(30);
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;
const APPROVAL: &str = "approve-7d1c2e";
const CSV_COLUMNS: [&str; 10] =
    ["id", "at", "actor", "actor_kind", "action", "target", "params", "outcome", "reason", "request_id"];

// ---- time ------------------------------------------------------------------------------

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix ms of a UTC date and time.
fn utc_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
    (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000
}

// ---- requests --------------------------------------------------------------------------

/// One request with `headers` (plus the address's registered token unless `headers` has an
/// `authorization`), and a JSON body when given.
async fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Response {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    let bytes = match body {
        Some(b) => {
            all.push(("content-type", "application/json"));
            b.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    http::request(addr, method, path, &all, bytes).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn as_token(addr: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> Response {
    let auth = bearer(token);
    call(addr, method, path, &[("authorization", auth.as_str())], body).await
}

/// One request as `token` carrying `X-Request-Id: rid`; the response must carry it back.
async fn act(addr: &str, token: &str, rid: &str, method: &str, path: &str, body: Option<&Value>) -> Response {
    let auth = bearer(token);
    let r = call(addr, method, path, &[("authorization", auth.as_str()), ("x-request-id", rid)], body).await;
    assert_eq!(header(&r, "x-request-id").as_deref(), Some(rid), "{method} {path}: the response echoes the request id");
    r
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn error_of(r: &Response) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

/// A refusal: `status`, and a JSON error that says something.
fn refused(r: &Response, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let e = error_of(r);
    assert!(!e.trim().is_empty(), "{what}: the refusal says why: {}", r.text());
    e
}

async fn get_json(addr: &str, path: &str) -> Value {
    let r = http::get(addr, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("plugin").join("admin.token")).expect("the admin token").trim().to_string()
}

/// Creates a token with the address's registered (admin) token; returns its plaintext.
async fn create_token(addr: &str, name: &str, role: &str) -> String {
    let r = http::post_json(addr, "/api/plugin/tokens", &json!({ "name": name, "role": role })).await;
    assert_eq!(r.status, 201, "create token {name}: {}", r.text());
    r.json()["token"].as_str().expect("the token").to_string()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

// ---- jobs ------------------------------------------------------------------------------

async fn enqueue(addr: &str, t: &str, body: &Value) -> Response {
    http::post_json(addr, &format!("/api/plugin/job-types/{t}/jobs"), body).await
}

/// Enqueues a job with no parameters and dedupe key `key`; returns its id.
async fn enqueue_ok(addr: &str, t: &str, key: &str) -> String {
    let r = enqueue(addr, t, &json!({ "parameters": {}, "dedupe_key": key, "summary": format!("job {key}") })).await;
    assert_eq!(r.status, 201, "enqueue {t}/{key}: {}", r.text());
    r.json()["job"]["job_id"].as_str().expect("the new job's id").to_string()
}

async fn list_jobs(addr: &str, query: &str) -> Vec<Value> {
    let path = if query.is_empty() {
        "/api/plugin/jobs?limit=1000".to_string()
    } else {
        format!("/api/plugin/jobs?limit=1000&{query}")
    };
    get_json(addr, &path).await.as_array().cloned().unwrap_or_default()
}

async fn job(addr: &str, id: &str) -> Value {
    get_json(addr, &format!("/api/plugin/jobs/{id}")).await
}

async fn wait_job(addr: &str, id: &str, state: &str) -> Value {
    wait_for(&format!("job {id} {state}"), WAIT, || async {
        let j = job(addr, id).await;
        (j["state"] == format!("job_state_{state}")).then_some(j)
    })
    .await
}

/// Waits until `query` lists `n` jobs, all in `state`.
async fn wait_jobs_at(addr: &str, query: &str, n: usize, state: &str) -> Vec<Value> {
    wait_for(&format!("{n} jobs {state} for {query:?}"), WAIT, || async {
        let jobs = list_jobs(addr, query).await;
        (jobs.len() == n && jobs.iter().all(|j| j["state"] == format!("job_state_{state}"))).then_some(jobs)
    })
    .await
}

async fn attempts(addr: &str, id: &str) -> Vec<Value> {
    get_json(addr, &format!("/api/plugin/jobs/{id}/detail")).await["attempts"].as_array().cloned().unwrap_or_default()
}

// ---- holds and schedules ---------------------------------------------------------------

async fn holds(addr: &str) -> Value {
    get_json(addr, "/api/plugin/holds").await
}

/// `(kind, target, set_by)` of each listed hold.
fn hold_rows(v: &Value) -> Vec<(String, String, String)> {
    v["holds"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of holds: {v}"))
        .iter()
        .map(|h| (s(&h["kind"]), s(&h["target"]), s(&h["set_by"])))
        .collect()
}

fn has_hold(v: &Value, kind: &str, target: &str, by: &str) -> bool {
    hold_rows(v).iter().any(|(k, t, b)| k == kind && t == target && b == by)
}

async fn hold(addr: &str, t: &str, body: &Value) -> Value {
    let r = http::post_json(addr, &format!("/api/plugin/job-types/{t}/hold"), body).await;
    assert_eq!(r.status, 200, "hold {t} {body}: {}", r.text());
    r.json()
}

async fn schedule_of(addr: &str, t: &str) -> Value {
    let v = get_json(addr, "/api/plugin/schedules").await;
    v["schedules"]
        .as_array()
        .and_then(|list| list.iter().find(|x| x["job_type"] == t).cloned())
        .unwrap_or_else(|| panic!("{t} is listed in the schedules: {v}"))
}

// ---- audit -----------------------------------------------------------------------------

/// One page of `GET audit?{query}`: the events and `next_before`.
async fn audit_page(addr: &str, query: &str) -> (Vec<Value>, Value) {
    let v = get_json(addr, &format!("/api/plugin/audit?{query}")).await;
    let events = v["events"].as_array().cloned().unwrap_or_else(|| panic!("audit lists events: {v}"));
    (events, v["next_before"].clone())
}

/// Every event `query` selects (up to 1000), newest first.
async fn audit_all(addr: &str, query: &str) -> Vec<Value> {
    let q = if query.is_empty() { "limit=1000".to_string() } else { format!("limit=1000&{query}") };
    let events = audit_page(addr, &q).await.0;
    assert_newest_first(&events);
    events
}

fn assert_newest_first(events: &[Value]) {
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap_or_else(|| panic!("an id: {e}"))).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, each once: {ids:?}");
}

fn outcomes(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| s(&e["outcome"])).collect()
}

fn by_id(mut events: Vec<Value>) -> Vec<Value> {
    events.sort_by_key(|e| e["id"].as_i64());
    events
}

/// The JSONL archive files in `dir`, each checked to be named `audit-<first>-<last>.jsonl`
/// after the ids it holds; all their events.
fn read_archive(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries {
        let path = entry.expect("archive entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("audit-") && name.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read an archive file");
        let events: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: a line is not JSON ({e}): {l}")))
            .collect();
        assert!(!events.is_empty(), "{name} holds events");
        let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().expect("an archived event's id")).collect();
        let (lo, hi) = (*ids.iter().min().unwrap(), *ids.iter().max().unwrap());
        // The ids in the name may be zero-padded (so that names sort); read them as numbers.
        let named: Option<(i64, i64)> = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        assert!(
            named == Some((lo, hi)) || named == Some((ids[0], ids[ids.len() - 1])),
            "{name} is named after the first and last ids it holds ({lo}..{hi})"
        );
        out.extend(events);
    }
    out
}

/// The value of one Prometheus series (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series).and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

// ---- CSV (RFC 4180) --------------------------------------------------------------------

/// Parses CSV: fields separated by commas, records by CRLF or LF; a quoted field may hold
/// commas, line breaks and doubled quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut dirty = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                dirty = true;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                dirty = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                dirty = false;
            }
            other => {
                field.push(other);
                dirty = true;
            }
        }
    }
    assert!(!in_quotes, "the CSV ends inside a quoted field");
    if dirty {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[test]
fn the_csv_reader_of_these_tests_follows_rfc_4180() {
    let text = "a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\r\n2,\"two\r\nlines\",\n3,,last";
    assert_eq!(
        parse_csv(text),
        vec![
            vec!["a", "b", "c"],
            vec!["1", "x, y", "say \"hi\""],
            vec!["2", "two\r\nlines", ""],
            vec!["3", "", "last"]
        ]
    );
}

/// A CSV row read back is the event: every column, params compared as parsed JSON.
fn assert_row_is_event(row: &[String], e: &Value) {
    assert_eq!(row.len(), CSV_COLUMNS.len(), "a row has every column: {row:?}");
    for (i, col) in CSV_COLUMNS.iter().enumerate() {
        if *col == "params" {
            let parsed: Value = serde_json::from_str(&row[i])
                .unwrap_or_else(|err| panic!("params of event {} is a JSON string ({err}): {:?}", e["id"], row[i]));
            assert_eq!(parsed, e["params"], "params of event {}", e["id"]);
        } else {
            let want = match &e[*col] {
                Value::String(x) => x.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            assert_eq!(row[i], want, "column {col} of event {}", e["id"]);
        }
    }
}

// ---- workers and detection -------------------------------------------------------------

/// A worker that detects and executes each of `types` with `slots` slots, proposes nothing
/// and succeeds at everything.
fn spec_for(worker_id: &str, types: &[&str], slots: i32) -> FakeWorkerSpec {
    let mut spec = FakeWorkerSpec::new(worker_id, types[0], slots);
    for t in &types[1..] {
        let mut cap = spec.capabilities[0].clone();
        cap.job_type = t.to_string();
        cap.display_name = t.to_string();
        spec.capabilities.push(cap);
        spec.descriptors.insert(t.to_string(), simple_descriptor(t));
    }
    spec
}

fn runtime(spec: &mut FakeWorkerSpec, f: impl Fn(&mut pb::AdminRuntimeDefaults)) {
    for d in spec.descriptors.values_mut() {
        f(d.admin_runtime_defaults.as_mut().expect("runtime defaults"));
    }
}

/// Job types start disabled (no scheduled detection) and a failure is final (a dead letter
/// at once).
fn quiet(mut spec: FakeWorkerSpec) -> FakeWorkerSpec {
    runtime(&mut spec, |r| {
        r.enabled = false;
        r.retry_limit = 0;
    });
    spec
}

fn key_of(r: &pb::ExecuteJobRequest) -> String {
    r.job.as_ref().map(|j| j.dedupe_key.clone()).unwrap_or_default()
}

fn executions_of(w: &FakeWorker, t: &str) -> Vec<pb::ExecuteJobRequest> {
    w.inbox.executions().into_iter().filter(|e| e.job.as_ref().is_some_and(|j| j.job_type == t)).collect()
}

fn detections(w: &FakeWorker, t: &str) -> usize {
    w.inbox
        .all()
        .iter()
        .filter(|m| matches!(&m.body, Some(AdminBody::RunDetectionRequest(r)) if r.job_type == t))
        .count()
}

async fn wait_config(admin: &TestAdmin, t: &str) {
    wait_for(&format!("the descriptor and config of {t} are stored"), WAIT, || async {
        admin.components().configs.config(t).map(|_| ())
    })
    .await;
}

async fn wait_descriptor(addr: &str, t: &str) {
    wait_for(&format!("the descriptor of {t}"), WAIT, || async {
        (http::get(addr, &format!("/api/plugin/job-types/{t}/descriptor")).await.status == 200).then_some(())
    })
    .await;
}

async fn detector_state(addr: &str, t: &str) -> Value {
    let v = get_json(addr, "/api/plugin/scheduler-states").await;
    v.as_array().and_then(|a| a.iter().find(|x| x["job_type"] == t).cloned()).unwrap_or(Value::Null)
}

/// Waits until `worker` was asked to detect `t` exactly `n` times and that detection has
/// ended; more than `n` fails at once.
async fn wait_detections(addr: &str, worker: &FakeWorker, t: &str, n: usize) {
    wait_for(&format!("{n} finished detections of {t}"), WAIT, || async {
        let seen = detections(worker, t);
        assert!(seen <= n, "{t} was asked to detect {seen} times; expected {n}");
        let st = detector_state(addr, t).await;
        (seen == n && st["detection_running"] == false).then_some(())
    })
    .await;
}

/// Runs a scheduler pass at the manual clock's current instant and checks it started no
/// detection of `t`, which has had `n`.
async fn assert_no_detection_starts(admin: &TestAdmin, worker: &FakeWorker, t: &str, n: usize) {
    let before = detector_state(&admin.http, t).await["last_run"]["id"].clone();
    let _ = admin.components().scheduler.scheduler_pass();
    let after = detector_state(&admin.http, t).await;
    assert_eq!(after["detection_running"], false, "this pass starts no detection of {t}: {after}");
    assert_eq!(after["last_run"]["id"], before, "no detection of {t} ran: {after}");
    assert_eq!(detections(worker, t), n, "{t} was asked to detect {n} times");
}

/// An in-process admin on `clock`, with test timings and heartbeats 30 days apart.
async fn start_manual(dir: &Path, clock: &Arc<ManualClock>, tweak: impl FnOnce(&mut AdminConfig)) -> TestAdmin {
    let mut config = AdminConfig::ephemeral(dir);
    config.heartbeat_interval = Duration::from_secs(30 * 24 * 3600);
    config.reconnect_delay = Duration::from_secs(1);
    config.first_detection_delay = Duration::ZERO;
    config.shutdown_grace = Duration::from_secs(1);
    tweak(&mut config);
    let admin = Admin::start_with_clock(config, clock.clone()).await.expect("admin starts");
    http::register_admin_token(&admin.http_addr().to_string(), dir);
    TestAdmin { http: admin.http_addr().to_string(), grpc: admin.grpc_addr(), admin: Some(admin) }
}

// ---- the audit trail -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_in_the_audit_trail_with_its_actor_target_outcome_and_request_id() {
    let dir = TempDir::new("gov-audit");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let spec = quiet(spec_for("w1", &[T], 4)).exec(|r| match key_of(r).as_str() {
        "hang" => Exec::HangUntilCancel,
        "fail" => Exec::Fail("boom".into()),
        _ => Exec::Succeed(vec![]),
    });
    let _worker = FakeWorker::start(admin.grpc, spec).await;
    wait_config(&admin, T).await;
    let addr = admin.http.clone();
    let root = admin_token(dir.path());
    let started = now_ms();

    // The admin's token makes the operator's; the admin makes up this request's id.
    let r = http::post_json(&addr, "/api/plugin/tokens", &json!({"name": "ops", "role": "operator"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ops = r.json()["token"].as_str().unwrap().to_string();
    let create_rid = header(&r, "x-request-id").expect("every response carries X-Request-Id");
    assert!(!create_rid.is_empty());

    let jobs_path = format!("/api/plugin/job-types/{T}/jobs");
    let r =
        act(&addr, &ops, "rid-01", "POST", &jobs_path, Some(&json!({"parameters": {}, "dedupe_key": "hang"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let hang = r.json()["job"]["job_id"].as_str().unwrap().to_string();
    let r =
        act(&addr, &ops, "rid-02", "POST", &jobs_path, Some(&json!({"parameters": {}, "dedupe_key": "fail"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let fail = r.json()["job"]["job_id"].as_str().unwrap().to_string();
    let not_before = now_ms() + 3_600_000;
    let body = json!({"parameters": {}, "dedupe_key": "later", "not_before": not_before});
    let r = act(&addr, &ops, "rid-03", "POST", &jobs_path, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let later = r.json()["job"]["job_id"].as_str().unwrap().to_string();
    wait_job(&addr, &hang, "running").await;
    wait_job(&addr, &fail, "failed").await;

    let r = act(&addr, &ops, "rid-04", "POST", &format!("/api/plugin/job-types/{T}/run?wait=false"), Some(&json!({})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = act(&addr, &ops, "rid-05", "POST", &format!("/api/plugin/jobs/{hang}/cancel"), Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = act(&addr, &ops, "rid-06", "POST", &format!("/api/plugin/jobs/{fail}/retry"), Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = act(&addr, &ops, "rid-07", "POST", &format!("/api/plugin/jobs/{later}/expire"), Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = act(&addr, &ops, "rid-08", "POST", "/api/plugin/workers/w1/drain?draining=true", Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = act(&addr, &ops, "rid-09", "POST", "/api/plugin/workers/w1/drain?draining=false", Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let hold_path = format!("/api/plugin/job-types/{T}/hold");
    let r = act(&addr, &ops, "rid-10", "POST", &hold_path, Some(&json!({"detection": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = act(&addr, &ops, "rid-11", "POST", "/api/plugin/dispatch?paused=true", Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = act(&addr, &ops, "rid-12", "POST", "/api/plugin/dispatch?paused=false", Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Two refusals: no such job, and a command above the operator's role.
    let r = act(&addr, &ops, "rid-13", "POST", "/api/plugin/jobs/j999999/cancel", Some(&json!({}))).await;
    let not_found = refused(&r, 404, "cancel of an unknown job");
    let config = json!({"admin_config_values": {"threshold": {"int64_value": "7"}}});
    let r = act(&addr, &ops, "rid-14", "PUT", &format!("/api/plugin/job-types/{T}/config"), Some(&config)).await;
    refused(&r, 403, "an operator saving a config");
    // The admin sets a schedule: the trail names the admin.
    let schedule = json!({"interval_minutes": 30});
    let r = act(&addr, &root, "rid-15", "PUT", &format!("/api/plugin/job-types/{T}/schedule"), Some(&schedule)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ended = now_ms();

    let expected: Vec<(&str, &str, &str, String, &str)> = vec![
        ("rid-01", "ops", "enqueue_job", T.to_string(), "done"),
        ("rid-02", "ops", "enqueue_job", T.to_string(), "done"),
        ("rid-03", "ops", "enqueue_job", T.to_string(), "done"),
        ("rid-04", "ops", "run", T.to_string(), "done"),
        ("rid-05", "ops", "cancel_job", hang.clone(), "done"),
        ("rid-06", "ops", "retry_job", fail.clone(), "done"),
        ("rid-07", "ops", "expire_job", later.clone(), "done"),
        ("rid-08", "ops", "set_draining", "w1".to_string(), "done"),
        ("rid-09", "ops", "set_draining", "w1".to_string(), "done"),
        ("rid-10", "ops", "hold_job_type", T.to_string(), "done"),
        ("rid-11", "ops", "pause_dispatch", "dispatch".to_string(), "done"),
        ("rid-12", "ops", "pause_dispatch", "dispatch".to_string(), "done"),
        ("rid-13", "ops", "cancel_job", "j999999".to_string(), "refused"),
        ("rid-14", "ops", "save_config", T.to_string(), "refused"),
        ("rid-15", "admin", "set_schedule", T.to_string(), "done"),
    ];
    // An answered command is in the trail at once, newest first.
    let events = audit_all(&addr, "").await;
    let ours: Vec<&Value> =
        events.iter().filter(|e| e["request_id"].as_str().is_some_and(|r| r.starts_with("rid-"))).collect();
    let got: Vec<Value> = ours
        .iter()
        .map(|e| json!([e["request_id"], e["actor"], e["actor_kind"], e["action"], e["target"], e["outcome"]]))
        .collect();
    let want: Vec<Value> = expected
        .iter()
        .rev()
        .map(|(rid, actor, action, target, outcome)| json!([rid, actor, "token", action, target, outcome]))
        .collect();
    assert_eq!(got, want, "each command once, newest first, with its actor, action, target and outcome");
    for e in &ours {
        let at = e["at"].as_i64().expect("at");
        assert!((started..=ended).contains(&at), "the event's time is when it happened: {e}");
        assert!(e["params"].is_object(), "params are an object: {e}");
        if e["outcome"] == "done" {
            assert_eq!(e["reason"], "", "a done command has no refusal reason: {e}");
        }
    }
    let by_rid = |rid: &str| ours.iter().find(|e| e["request_id"] == rid).copied().expect("the event");
    assert_eq!(by_rid("rid-13")["reason"], not_found.as_str(), "a refusal records the reason the caller got");
    let forbidden = s(&by_rid("rid-14")["reason"]);
    assert!(forbidden.contains("needs the admin role"), "{forbidden}");

    let created = events
        .iter()
        .find(|e| e["action"] == "create_token" && e["target"] == "ops")
        .expect("the token's creation is in the trail");
    assert_eq!((s(&created["actor"]), s(&created["actor_kind"])), ("admin".to_string(), "token".to_string()));
    assert_eq!(created["outcome"], "done");
    assert_eq!(created["request_id"], create_rid.as_str(), "an id the admin made up is the one it answered with");

    // The actor filter finds exactly the operator's commands.
    let by_ops = audit_all(&addr, "actor=ops").await;
    assert_eq!(by_ops.len(), 14, "{by_ops:?}");
    assert!(by_ops.iter().all(|e| e["actor"] == "ops"));
    // Credentials never reach the trail.
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&ops) && !text.contains(&root), "no token plaintext in the audit trail");

    let metrics = http::get(&addr, "/metrics").await.text();
    let series =
        |outcome: &str| format!("plughost_admin_commands_total{{action=\"cancel_job\",outcome=\"{outcome}\"}}");
    assert!(metric(&metrics, &series("ok")) >= 1.0, "{metrics}");
    assert!(metric(&metrics, &series("not_found")) >= 1.0, "{metrics}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_filters_by_action_actor_target_outcome_and_time_and_pages_by_keyset() {
    let dir = TempDir::new("gov-audit-filters");
    // Event k happens at t0 + 2 s * k: on odd seconds, so the even-second bounds below never
    // coincide with an event, whether a bound is inclusive or not.
    let t0 = utc_ms(2030, 1, 1, 0, 0, 1);
    let clock = ManualClock::new(t0);
    let admin = start_manual(dir.path(), &clock, |_| {}).await;
    let addr = admin.http.clone();
    let root = admin_token(dir.path());

    let r =
        as_token(&addr, &root, "POST", "/api/plugin/tokens", Some(&json!({"name": "ops", "role": "operator"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ops = r.json()["token"].as_str().unwrap().to_string();
    let empty = Some(json!({}));
    let steps: Vec<(&str, &str, &str, Option<Value>, u16)> = vec![
        (ops.as_str(), "POST", "/api/plugin/dispatch?paused=true", empty.clone(), 200),
        (ops.as_str(), "POST", "/api/plugin/dispatch?paused=false", empty.clone(), 200),
        (ops.as_str(), "POST", "/api/plugin/schedules/pause?paused=true", empty.clone(), 200),
        (ops.as_str(), "POST", "/api/plugin/schedules/pause?paused=false", empty.clone(), 200),
        (ops.as_str(), "POST", "/api/plugin/jobs/j999998/cancel", empty.clone(), 404),
        (ops.as_str(), "POST", "/api/plugin/jobs/j999999/cancel", empty.clone(), 404),
        (root.as_str(), "POST", "/api/plugin/tokens", Some(json!({"name": "temp", "role": "viewer"})), 201),
        (root.as_str(), "DELETE", "/api/plugin/tokens/temp", None, 200),
        (ops.as_str(), "POST", "/api/plugin/dispatch?paused=true", empty.clone(), 200),
        (ops.as_str(), "POST", "/api/plugin/dispatch?paused=false", empty.clone(), 200),
    ];
    for (k, (token, method, path, body, status)) in steps.iter().enumerate() {
        clock.set(t0 + 2000 * (k as i64 + 1));
        let r = as_token(&addr, token, method, path, body.as_ref()).await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
    }
    // (action, target, actor, outcome) of event k.
    let table = [
        ("create_token", "ops", "admin", "done"),
        ("pause_dispatch", "dispatch", "ops", "done"),
        ("pause_dispatch", "dispatch", "ops", "done"),
        ("pause_schedules", "schedules", "ops", "done"),
        ("pause_schedules", "schedules", "ops", "done"),
        ("cancel_job", "j999998", "ops", "refused"),
        ("cancel_job", "j999999", "ops", "refused"),
        ("create_token", "temp", "admin", "done"),
        ("revoke_token", "temp", "admin", "done"),
        ("pause_dispatch", "dispatch", "ops", "done"),
        ("pause_dispatch", "dispatch", "ops", "done"),
    ];
    let k_of = |e: &Value| -> usize {
        let at = e["at"].as_i64().unwrap_or_else(|| panic!("at: {e}"));
        assert_eq!((at - t0) % 2000, 0, "events happen at the manual clock's instants: {e}");
        ((at - t0) / 2000) as usize
    };
    let ks = |events: &[Value]| events.iter().map(k_of).collect::<Vec<usize>>();

    let all = audit_all(&addr, "").await;
    assert_eq!(ks(&all), (0..=10).rev().collect::<Vec<_>>(), "every command once, newest first");
    for e in &all {
        let (action, target, actor, outcome) = table[k_of(e)];
        assert_eq!(
            (s(&e["action"]), s(&e["target"]), s(&e["actor"]), s(&e["outcome"])),
            (action.to_string(), target.to_string(), actor.to_string(), outcome.to_string()),
            "{e}"
        );
    }
    let id_of = |k: usize| all.iter().find(|e| k_of(e) == k).expect("event k")["id"].as_i64().unwrap();

    let at = |ms: i64| (t0 + ms).to_string();
    for (query, want) in [
        ("action=pause_dispatch".to_string(), vec![10, 9, 2, 1]),
        ("actor=admin".to_string(), vec![8, 7, 0]),
        ("actor=ops&action=cancel_job".to_string(), vec![6, 5]),
        ("target=temp".to_string(), vec![8, 7]),
        ("outcome=refused".to_string(), vec![6, 5]),
        ("action=cancel_job&target=j999999".to_string(), vec![6]),
        ("action=no_such_action".to_string(), vec![]),
        (format!("since={}&until={}", at(5000), at(13_000)), vec![6, 5, 4, 3]),
        ("since=2030-01-01T00:00:06Z&until=2030-01-01T00:00:14Z".to_string(), vec![6, 5, 4, 3]),
        ("since=2030-01-01T00:00:16Z".to_string(), vec![10, 9, 8]),
        (format!("until={}", at(1000)), vec![0]),
        (format!("actor=ops&since={}", at(9000)), vec![10, 9, 6, 5]),
        (format!("before={}", id_of(5)), vec![4, 3, 2, 1, 0]),
    ] {
        assert_eq!(ks(&audit_all(&addr, &query).await), want, "GET audit?{query}");
    }

    // Keyset paging: pages of `limit`, each continuing before the last one's oldest event,
    // together give the unpaged list.
    for (filter, limit, want) in
        [("", 4, (0..=10).rev().collect::<Vec<usize>>()), ("actor=ops&", 3, vec![10, 9, 6, 5, 4, 3, 2, 1])]
    {
        let mut seen = Vec::new();
        let mut before: Option<i64> = None;
        for page in 0.. {
            assert!(page < 10, "paging ends");
            let q = match before {
                Some(b) => format!("{filter}limit={limit}&before={b}"),
                None => format!("{filter}limit={limit}"),
            };
            let (events, next) = audit_page(&addr, &q).await;
            assert!(events.len() <= limit, "a page holds at most limit events: {q}");
            seen.extend(ks(&events));
            if events.len() < limit {
                assert!(next.is_null(), "the last page says there is no next one: {q} -> {next}");
            }
            match next.as_i64() {
                Some(b) if !events.is_empty() => {
                    assert_eq!(Some(b), events.last().unwrap()["id"].as_i64(), "next_before is the page's oldest id");
                    before = Some(b);
                }
                _ => break,
            }
        }
        assert_eq!(seen, want, "the pages of {filter}limit={limit} make the whole list");
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_export_round_trips_in_jsonl_json_and_csv_and_is_capped() {
    let dir = TempDir::new("gov-export");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let addr = admin.http.clone();
    let root = admin_token(dir.path());
    let ops = create_token(&addr, "ops", "operator").await;
    // Values a CSV writer must quote: commas, quotes and line breaks in reasons and params.
    let tricky = json!({"reason": "not needed, \"really\"\nsee ticket 7"});
    for (token, method, path, body, status) in [
        (ops.as_str(), "POST", "/api/plugin/dispatch?paused=true", json!({}), 200),
        (ops.as_str(), "POST", "/api/plugin/jobs/j999999/cancel", tricky.clone(), 404),
        (ops.as_str(), "POST", "/api/plugin/dispatch?paused=false", json!({}), 200),
        (ops.as_str(), "POST", "/api/plugin/schedules/pause?paused=true", json!({}), 200),
        (ops.as_str(), "POST", "/api/plugin/jobs/j999998/expire", tricky.clone(), 404),
        (root.as_str(), "POST", "/api/plugin/tokens", json!({"name": "temp", "role": "viewer"}), 201),
        (ops.as_str(), "POST", "/api/plugin/tokens", json!({"name": "sneaky", "role": "admin"}), 403),
        (ops.as_str(), "POST", "/api/plugin/schedules/pause?paused=false", json!({}), 200),
    ] {
        let r = as_token(&addr, token, method, path, Some(&body)).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    }
    let listed = by_id(audit_all(&addr, "").await);
    assert!(listed.len() >= 9, "{listed:?}");

    let export = |query: String| {
        let addr = addr.clone();
        async move {
            let r = http::get(&addr, &format!("/api/plugin/audit/export?{query}")).await;
            assert_eq!(r.status, 200, "export {query}: {}", r.text());
            r
        }
    };

    let r = export("format=jsonl".into()).await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("false"));
    let lines: Vec<Value> = r
        .text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a JSONL line is JSON ({e}): {l}")))
        .collect();
    assert_eq!(by_id(lines), listed, "JSONL: one event per line, the same events as GET audit");

    let r = export("format=json".into()).await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("false"));
    let array = r.json().as_array().cloned().expect("a JSON array");
    assert_eq!(by_id(array), listed, "JSON: an array of the same events");

    let r = export("format=csv".into()).await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("false"));
    let rows = parse_csv(&r.text());
    assert_eq!(rows.first().map(|h| h.join(",")), Some(CSV_COLUMNS.join(",")), "the CSV header");
    let mut data: Vec<&Vec<String>> = rows[1..].iter().collect();
    data.sort_by_key(|row| row[0].parse::<i64>().unwrap_or_else(|_| panic!("an id in the first column: {row:?}")));
    assert_eq!(data.len(), listed.len(), "one row per event");
    for (row, e) in data.iter().zip(&listed) {
        assert_row_is_event(row, e);
    }
    assert!(
        listed.iter().any(|e| s(&e["reason"]).contains('"') || e["params"].to_string().contains(',')),
        "some field needed quoting: {listed:?}"
    );

    // The filters of GET audit apply to the export.
    let r = export("format=jsonl&action=pause_dispatch&actor=ops".into()).await;
    let lines: Vec<Value> =
        r.text().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    let filtered = by_id(audit_all(&addr, "action=pause_dispatch&actor=ops").await);
    assert_eq!(filtered.len(), 2);
    assert_eq!(by_id(lines), filtered);
    let r = export("format=csv&outcome=refused".into()).await;
    let rows = parse_csv(&r.text());
    let refusals = by_id(audit_all(&addr, "outcome=refused").await);
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    let mut data: Vec<&Vec<String>> = rows[1..].iter().collect();
    data.sort_by_key(|row| row[0].parse::<i64>().unwrap());
    assert_eq!(data.len(), 3);
    for (row, e) in data.iter().zip(&refusals) {
        assert_row_is_event(row, e);
    }
    admin.stop().await;

    // An export stops at --audit-export-max rows and says so.
    let dir = TempDir::new("gov-export-cap");
    let admin = TestAdmin::start(dir.path(), |c| c.audit_export_max = 3).await;
    let addr = admin.http.clone();
    create_token(&addr, "ops", "operator").await;
    for paused in [true, false, true, false, true, false] {
        let r = http::post_json(&addr, &format!("/api/plugin/dispatch?paused={paused}"), &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(audit_all(&addr, "").await.len(), 7, "the listing is not capped by the export cap");
    let export = |query: &'static str| {
        let addr = addr.clone();
        async move {
            let r = http::get(&addr, &format!("/api/plugin/audit/export?{query}")).await;
            assert_eq!(r.status, 200, "export {query}: {}", r.text());
            r
        }
    };
    let r = export("format=jsonl").await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("true"));
    assert_eq!(r.text().lines().filter(|l| !l.trim().is_empty()).count(), 3);
    let r = export("format=json").await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("true"));
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));
    let r = export("format=csv").await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("true"));
    assert_eq!(parse_csv(&r.text()).len(), 1 + 3, "the header and three rows");
    let r = export("format=jsonl&action=create_token").await;
    assert_eq!(header(&r, "x-plughost-export-truncated").as_deref(), Some("false"), "one match fits under the cap");
    assert_eq!(r.text().lines().filter(|l| !l.trim().is_empty()).count(), 1);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_the_audit_trail_by_count_and_archives_what_it_prunes() {
    // The retention sweep runs at start (and periodically, at an interval this test does not
    // know): restarting the admin on the same data dir is the deterministic trigger.
    let (_dir, data) = data_dir("gov-retention-count");
    let archive = TempDir::new("gov-retention-count-archive");
    let archive_dir = archive.path().to_path_buf();
    let admin = TestAdmin::start(&data, |c| {
        c.audit_max_events = 5;
        c.audit_archive_dir = Some(archive_dir.clone());
    })
    .await;
    for i in 0..12 {
        let r = http::post_json(&admin.http, &format!("/api/plugin/dispatch?paused={}", i % 2 == 0), &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let before: BTreeMap<i64, Value> =
        audit_all(&admin.http, "").await.into_iter().map(|e| (e["id"].as_i64().unwrap(), e)).collect();
    admin.stop().await;

    let admin = TestAdmin::start(&data, |c| {
        c.audit_max_events = 5;
        c.audit_archive_dir = Some(archive_dir.clone());
    })
    .await;
    let kept = wait_for("the sweep at start keeps five events", WAIT, || async {
        let events = audit_all(&admin.http, "").await;
        assert!(events.len() >= 5, "never fewer than the cap: {events:?}");
        (events.len() == 5).then_some(events)
    })
    .await;
    let archived = read_archive(&archive_dir);
    let kept_ids: BTreeSet<i64> = kept.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let archived_ids: Vec<i64> = archived.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let archived_set: BTreeSet<i64> = archived_ids.iter().copied().collect();
    assert_eq!(archived_set.len(), archived_ids.len(), "each pruned event is archived once");
    assert!(kept_ids.is_disjoint(&archived_set), "what is kept is not archived");
    assert_eq!(kept_ids.len() + archived_set.len(), 12, "all twelve events are kept or archived");
    assert!(kept_ids.iter().min() > archived_set.iter().max(), "the newest are kept, the oldest pruned");
    assert!(kept.iter().chain(&archived).all(|e| e["action"] == "pause_dispatch"));
    for e in &archived {
        if let Some(was) = before.get(&e["id"].as_i64().unwrap()) {
            assert_eq!(e, was, "the archive holds the event as it was listed");
        }
    }
    for e in &kept {
        assert_eq!(Some(e), before.get(&e["id"].as_i64().unwrap()), "kept events are unchanged");
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_the_audit_trail_by_age_and_archives_what_it_prunes() {
    // Deterministic ages: a manual clock. Three events on day 0, two on day 3; the admin is
    // restarted (its retention sweep runs at start) on day 8 with a retention of 7 days, so
    // the day-0 events are 8 days old (pruned) and the day-3 ones 5 days old (kept).
    let dir = TempDir::new("gov-retention-age");
    let archive = TempDir::new("gov-retention-age-archive");
    let archive_dir = archive.path().to_path_buf();
    let t0 = utc_ms(2030, 3, 1, 12, 0, 0);
    let clock = ManualClock::new(t0);
    let admin = start_manual(dir.path(), &clock, |c| {
        c.audit_retention_days = 7;
        c.audit_archive_dir = Some(archive_dir.clone());
    })
    .await;
    for (i, name) in ["old-a", "old-b", "old-c"].into_iter().enumerate() {
        clock.set(t0 + 1000 * i as i64);
        create_token(&admin.http, name, "viewer").await;
    }
    for (i, name) in ["new-a", "new-b"].into_iter().enumerate() {
        clock.set(t0 + 3 * DAY + 1000 * i as i64);
        create_token(&admin.http, name, "viewer").await;
    }
    assert_eq!(audit_all(&admin.http, "").await.len(), 5, "nothing is old enough yet");
    admin.stop().await;

    clock.set(t0 + 8 * DAY);
    let admin = start_manual(dir.path(), &clock, |c| {
        c.audit_retention_days = 7;
        c.audit_archive_dir = Some(archive_dir.clone());
    })
    .await;
    let kept = wait_for("the sweep at start prunes events older than 7 days", WAIT, || async {
        let events = audit_all(&admin.http, "").await;
        (events.len() == 2).then_some(events)
    })
    .await;
    let targets = |events: &[Value]| events.iter().map(|e| s(&e["target"])).collect::<BTreeSet<String>>();
    assert_eq!(targets(&kept), BTreeSet::from(["new-a".to_string(), "new-b".to_string()]));
    assert!(kept.iter().all(|e| e["at"].as_i64().unwrap() >= t0 + 3 * DAY), "{kept:?}");
    let archived = read_archive(&archive_dir);
    assert_eq!(archived.len(), 3, "the pruned events went to the archive: {archived:?}");
    assert_eq!(targets(&archived), BTreeSet::from(["old-a".to_string(), "old-b".to_string(), "old-c".to_string()]));
    assert!(archived.iter().all(|e| e["action"] == "create_token" && e["at"].as_i64().unwrap() < t0 + DAY));
    admin.stop().await;
}

// ---- holds -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_dispatch_keeps_jobs_pending_across_a_kill_9_restart_and_releases_them_when_lifted() {
    let bin = Path::new(env!("CARGO_BIN_EXE_plughost-under-test"));
    let (_dir, data) = data_dir("gov-pause-restart");
    let (http_port, grpc_port) = (free_port(), free_port());
    let mut admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;
    let first = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 4))).await;
    wait_descriptor(&admin.http, T).await;

    let r = http::post_json(&admin.http, "/api/plugin/dispatch?paused=true", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"dispatch_paused": true}));
    let mut ids = Vec::new();
    for key in ["p1", "p2", "p3"] {
        ids.push(enqueue_ok(&admin.http, T, key).await);
    }
    let jobs = list_jobs(&admin.http, &format!("job_type={T}")).await;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["state"] == "job_state_pending"), "{jobs:?}");
    let h = holds(&admin.http).await;
    assert_eq!(h["dispatch_paused"], true);
    assert!(has_hold(&h, "dispatch", "", "admin"), "{h}");
    assert!(first.inbox.executions().is_empty(), "nothing was dispatched while paused");

    admin.kill();
    drop(first);
    let admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;
    let status = get_json(&admin.http, "/api/plugin/status").await;
    assert_eq!(status["dispatch_paused"], true, "the pause survives the restart: {status}");
    let h = holds(&admin.http).await;
    assert_eq!(h["dispatch_paused"], true, "{h}");
    assert!(has_hold(&h, "dispatch", "", "admin"), "who paused it is kept too: {h}");
    let listed: Vec<(String, String, String)> = status["holds"]
        .as_array()
        .unwrap_or_else(|| panic!("status lists the holds: {status}"))
        .iter()
        .map(|x| (s(&x["kind"]), s(&x["target"]), s(&x["set_by"])))
        .collect();
    assert_eq!(listed, hold_rows(&h), "the overview shows the same holds");

    let second = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 4))).await;
    // A barrier: the new worker answers a detection; a dispatch pass woken by its arrival
    // has had its chance by then.
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    second
        .inbox
        .wait_for("the detection request", WAIT, |m| matches!(m.body, Some(AdminBody::RunDetectionRequest(_))))
        .await;
    let jobs = list_jobs(&admin.http, &format!("job_type={T}")).await;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["state"] == "job_state_pending"), "still held after the restart: {jobs:?}");
    assert!(second.inbox.executions().is_empty(), "nothing is dispatched while the pause holds");

    let r = http::post_json(&admin.http, "/api/plugin/dispatch?paused=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"dispatch_paused": false}));
    wait_jobs_at(&admin.http, &format!("job_type={T}"), 3, "succeeded").await;
    for id in &ids {
        let a = attempts(&admin.http, id).await;
        assert_eq!(a.len(), 1, "job {id} ran once, after the lift: {a:?}");
        assert_eq!((s(&a[0]["worker_id"]), s(&a[0]["outcome"])), ("w1".to_string(), "succeeded".to_string()));
    }
    assert_eq!(second.inbox.executions().len(), 3);
    let h = holds(&admin.http).await;
    assert_eq!(h["dispatch_paused"], false);
    assert!(!hold_rows(&h).iter().any(|(k, _, _)| k == "dispatch"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_type_whose_detection_is_held_does_not_detect_while_another_type_does() {
    const HELD: &str = "held_type";
    const FREE: &str = "free_type";
    let dir = TempDir::new("gov-detection-hold");
    let t0 = utc_ms(2030, 1, 1, 0, 0, 30);
    let clock = ManualClock::new(t0);
    let admin = start_manual(dir.path(), &clock, |_| {}).await;
    // Both enabled, every 60 minutes, the first detection at once.
    let mut spec = spec_for("w1", &[HELD, FREE], 2);
    runtime(&mut spec, |r| r.retry_limit = 0);
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_detections(&admin.http, &worker, HELD, 1).await;
    wait_detections(&admin.http, &worker, FREE, 1).await;

    let v = hold(&admin.http, HELD, &json!({"detection": true})).await;
    assert_eq!(v["job_type"], HELD);
    assert_eq!(v["detection"]["held"], true, "{v}");
    assert_eq!(v["detection"]["set_by"], "admin", "{v}");
    assert_eq!(v["detection"]["set_at"], t0, "set at the admin's clock: {v}");
    assert_eq!(v["dispatch"]["held"], false, "the dispatch hold is left as it was: {v}");

    // An hour later both are due: only the free type detects, in the same scheduler pass
    // that would have started the held one.
    clock.advance(61 * MINUTE);
    admin.components().scheduler.wake();
    wait_detections(&admin.http, &worker, FREE, 2).await;
    assert_eq!(detections(&worker, HELD), 1, "the held type did not detect");
    assert_no_detection_starts(&admin, &worker, HELD, 1).await;

    // Run now and preview are refused for the held type, not for the other.
    for action in ["run", "detect"] {
        let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{HELD}/{action}"), &json!({})).await;
        refused(&r, 409, &format!("{action} of a held type"));
    }
    assert_eq!(detections(&worker, HELD), 1);
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{FREE}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_detections(&admin.http, &worker, FREE, 3).await;

    let held = schedule_of(&admin.http, HELD).await;
    assert_eq!(held["held"], true, "{held}");
    assert_eq!(schedule_of(&admin.http, FREE).await["held"], false);
    let h = holds(&admin.http).await;
    assert!(has_hold(&h, "detection", HELD, "admin"), "{h}");
    assert!(!hold_rows(&h).iter().any(|(_, t, _)| t == FREE), "{h}");

    // Lifted, it detects again.
    let v = hold(&admin.http, HELD, &json!({"detection": false})).await;
    assert_eq!(v["detection"]["held"], false, "{v}");
    assert!(!has_hold(&holds(&admin.http).await, "detection", HELD, "admin"));
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{HELD}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for("the lifted type detects", WAIT, || async { (detections(&worker, HELD) >= 2).then_some(()) }).await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_type_whose_dispatch_is_held_keeps_its_jobs_pending_while_another_type_runs() {
    const HELD: &str = "held_type";
    const FREE: &str = "free_type";
    let dir = TempDir::new("gov-dispatch-hold");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let worker = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[HELD, FREE], 4))).await;
    wait_config(&admin, HELD).await;
    wait_config(&admin, FREE).await;

    let v = hold(&admin.http, HELD, &json!({"dispatch": true})).await;
    assert_eq!(v["dispatch"]["held"], true, "{v}");
    assert_eq!(v["dispatch"]["set_by"], "admin", "{v}");
    assert!(v["dispatch"]["set_at"].as_i64().is_some_and(|t| t > 0), "{v}");
    assert_eq!(v["detection"]["held"], false, "{v}");
    let held_ids = [enqueue_ok(&admin.http, HELD, "h1").await, enqueue_ok(&admin.http, HELD, "h2").await];
    enqueue_ok(&admin.http, FREE, "f1").await;
    enqueue_ok(&admin.http, FREE, "f2").await;

    // The same dispatcher passes that ran the free type's jobs left the held type's alone.
    admin.wait_jobs("the free type's jobs run", &format!("job_type={FREE}"), 2, "succeeded").await;
    let held = admin.jobs(&format!("job_type={HELD}")).await;
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|j| j["state"] == "job_state_pending"), "{held:?}");
    assert!(executions_of(&worker, HELD).is_empty(), "no job of the held type was dispatched");
    assert_eq!(executions_of(&worker, FREE).len(), 2);
    let h = holds(&admin.http).await;
    assert!(has_hold(&h, "job_dispatch", HELD, "admin"), "{h}");
    let status = admin.get("/api/plugin/status").await;
    assert!(status["holds"].to_string().contains(HELD), "the overview lists the hold: {status}");

    let v = hold(&admin.http, HELD, &json!({"dispatch": false})).await;
    assert_eq!(v["dispatch"]["held"], false, "{v}");
    admin.wait_jobs("the held jobs run once lifted", &format!("job_type={HELD}"), 2, "succeeded").await;
    for id in &held_ids {
        assert_eq!(attempts(&admin.http, id).await.len(), 1);
    }
    assert!(!has_hold(&holds(&admin.http).await, "job_dispatch", HELD, "admin"));
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_stays_drained_after_a_kill_9_restart_and_gets_no_job() {
    let bin = Path::new(env!("CARGO_BIN_EXE_plughost-under-test"));
    let (_dir, data) = data_dir("gov-drain-restart");
    let (http_port, grpc_port) = (free_port(), free_port());
    let mut admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;
    let w1 = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 4))).await;
    wait_descriptor(&admin.http, T).await;
    let r = http::post_json(&admin.http, "/api/plugin/workers/w1/drain?draining=true", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"worker_id": "w1", "draining": true}));
    assert!(has_hold(&holds(&admin.http).await, "drain", "w1", "admin"));

    admin.kill();
    drop(w1);
    let admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;
    assert!(has_hold(&holds(&admin.http).await, "drain", "w1", "admin"), "the drain survives the restart");
    let w1 = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 4))).await;
    let w2 = FakeWorker::start(admin.grpc, quiet(spec_for("w2", &[T], 4)).executor_only()).await;
    let addr = admin.http.clone();
    let draining_of = |id: &'static str| {
        let addr = addr.clone();
        async move {
            let list = get_json(&addr, "/api/plugin/workers").await;
            list.as_array().and_then(|a| a.iter().find(|w| w["worker_id"] == id).map(|w| w["draining"].clone()))
        }
    };
    wait_for("both workers listed, w1 still draining", WAIT, || async {
        (draining_of("w1").await == Some(json!(true)) && draining_of("w2").await == Some(json!(false))).then_some(())
    })
    .await;

    for key in ["d1", "d2", "d3"] {
        enqueue_ok(&addr, T, key).await;
    }
    let done = wait_jobs_at(&addr, &format!("job_type={T}"), 3, "succeeded").await;
    assert!(done.iter().all(|j| j["worker_id"] == "w2"), "only the undrained worker ran jobs: {done:?}");
    assert!(w1.inbox.executions().is_empty(), "the drained worker got no job");

    // Lifted, w1 takes work again: with w2 gone it runs the next job.
    let r = http::post_json(&addr, "/api/plugin/workers/w1/drain?draining=false", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"worker_id": "w1", "draining": false}));
    assert!(!hold_rows(&holds(&addr).await).iter().any(|(k, _, _)| k == "drain"));
    w2.kill();
    wait_for("w2 is gone", WAIT, || async { draining_of("w2").await.is_none().then_some(()) }).await;
    let id = enqueue_ok(&addr, T, "after").await;
    let j = wait_job(&addr, &id, "succeeded").await;
    assert_eq!(j["worker_id"], "w1");
}

// ---- schedules -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_fires_at_its_instants_under_a_manual_clock_and_once_after_downtime() {
    let dir = TempDir::new("gov-cron");
    let at = |h: i64, m: i64, s: i64| utc_ms(2030, 1, 1, h, m, s);
    let clock = ManualClock::new(at(0, 0, 30));
    let admin = start_manual(dir.path(), &clock, |_| {}).await;
    let spec = || {
        let mut s = spec_for("w1", &[T], 2);
        runtime(&mut s, |r| r.retry_limit = 0);
        s
    };
    let worker = FakeWorker::start(admin.grpc, spec()).await;
    // The interval schedule's first detection, at once; then the type goes on a cron.
    wait_detections(&admin.http, &worker, T, 1).await;
    let path = format!("/api/plugin/job-types/{T}/schedule");

    // In a time zone: 03:00 in Berlin is 02:00 UTC in January.
    let r = http::put_json(&admin.http, &path, &json!({"cron": "0 3 * * *", "time_zone": "Europe/Berlin"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (s(&v["kind"]), s(&v["cron"]), s(&v["time_zone"])),
        ("cron".to_string(), "0 3 * * *".to_string(), "Europe/Berlin".to_string())
    );
    assert_eq!(v["next_fire_at"], at(2, 0, 0), "{v}");
    // Every ten minutes, in UTC by default.
    let r = http::put_json(&admin.http, &path, &json!({"cron": "*/10 * * * *"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["time_zone"], "UTC");
    let sched = schedule_of(&admin.http, T).await;
    assert_eq!((s(&sched["kind"]), s(&sched["cron"])), ("cron".to_string(), "*/10 * * * *".to_string()), "{sched}");
    assert_eq!(sched["next_fire_at"], at(0, 10, 0), "{sched}");
    assert_eq!((sched["held"].clone(), sched["enabled"].clone()), (json!(false), json!(true)), "{sched}");

    // Not a millisecond early.
    clock.set(at(0, 10, 0) - 1);
    assert_no_detection_starts(&admin, &worker, T, 1).await;
    // At the instant, once.
    clock.set(at(0, 10, 0));
    admin.components().scheduler.wake();
    wait_detections(&admin.http, &worker, T, 2).await;
    assert_no_detection_starts(&admin, &worker, T, 2).await;
    let sched = schedule_of(&admin.http, T).await;
    assert_eq!(sched["previous_fire_at"], at(0, 10, 0), "{sched}");
    assert_eq!(sched["next_fire_at"], at(0, 20, 0), "{sched}");

    // The scheduler misses three slots (00:20, 00:30, 00:40): one detection, not three.
    clock.set(at(0, 45, 0));
    admin.components().scheduler.wake();
    wait_detections(&admin.http, &worker, T, 3).await;
    assert_no_detection_starts(&admin, &worker, T, 3).await;
    let sched = schedule_of(&admin.http, T).await;
    assert_eq!(sched["next_fire_at"], at(0, 50, 0), "{sched}");
    let previous = sched["previous_fire_at"].as_i64();
    assert!(previous == Some(at(0, 40, 0)) || previous == Some(at(0, 45, 0)), "{sched}");

    // Downtime: the admin stops, five slots pass (00:50 .. 01:30), it starts again.
    admin.stop().await;
    drop(worker);
    clock.set(at(1, 35, 0));
    let admin = start_manual(dir.path(), &clock, |_| {}).await;
    let worker = FakeWorker::start(admin.grpc, spec()).await;
    wait_detections(&admin.http, &worker, T, 1).await;
    assert_no_detection_starts(&admin, &worker, T, 1).await;
    let sched = schedule_of(&admin.http, T).await;
    assert_eq!(
        (s(&sched["kind"]), s(&sched["cron"])),
        ("cron".to_string(), "*/10 * * * *".to_string()),
        "kept: {sched}"
    );
    assert_eq!(sched["next_fire_at"], at(1, 40, 0), "{sched}");
    clock.set(at(1, 40, 0));
    admin.components().scheduler.wake();
    wait_detections(&admin.http, &worker, T, 2).await;
    assert_no_detection_starts(&admin, &worker, T, 2).await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cron_expression_or_time_zone_is_refused_with_422_and_nothing_is_saved() {
    let dir = TempDir::new("gov-cron-bad");
    // A frozen clock: the schedule view cannot change between the two reads by itself.
    let clock = ManualClock::new(utc_ms(2030, 1, 1, 0, 0, 30));
    let admin = start_manual(dir.path(), &clock, |_| {}).await;
    let _worker = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 2))).await;
    wait_config(&admin, T).await;
    let path = format!("/api/plugin/job-types/{T}/schedule");
    let r = http::put_json(&admin.http, &path, &json!({"cron": "0 3 * * *", "time_zone": "Europe/Berlin"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let schedules = get_json(&admin.http, "/api/plugin/schedules").await;
    let config = get_json(&admin.http, &format!("/api/plugin/job-types/{T}/config")).await;

    for (body, cron_problem) in [
        (json!({"cron": "61 * * * *"}), true),
        (json!({"cron": "every day at noon"}), true),
        (json!({"cron": "0 3 * * *", "time_zone": "Mars/Olympus_Mons"}), false),
    ] {
        let r = http::put_json(&admin.http, &path, &body).await;
        let e = refused(&r, 422, &format!("schedule {body}"));
        let lower = e.to_lowercase();
        if cron_problem {
            let expr = body["cron"].as_str().unwrap();
            assert!(lower.contains("cron") || e.contains(expr), "the message names the expression: {e}");
        } else {
            assert!(
                e.contains("Mars/Olympus_Mons") || lower.contains("time zone") || lower.contains("time_zone"),
                "{e}"
            );
        }
    }
    assert_eq!(get_json(&admin.http, "/api/plugin/schedules").await, schedules, "no schedule changed");
    assert_eq!(get_json(&admin.http, &format!("/api/plugin/job-types/{T}/config")).await, config, "no config saved");
    let trail = audit_all(&admin.http, "action=set_schedule").await;
    assert_eq!(outcomes(&trail), ["refused", "refused", "refused", "done"], "{trail:?}");
    assert!(trail[..3].iter().all(|e| !s(&e["reason"]).is_empty()));

    // The interval form is a schedule too.
    let r = http::put_json(&admin.http, &path, &json!({"interval_minutes": 30})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sched = schedule_of(&admin.http, T).await;
    assert_eq!((sched["kind"].clone(), sched["interval_minutes"].clone()), (json!("interval"), json!(30)), "{sched}");
    assert!(sched["cron"].is_null(), "{sched}");
    admin.stop().await;
}

// ---- dead-letter replay ----------------------------------------------------------------

fn ineligible(v: &Value) -> BTreeMap<String, String> {
    v["ineligible"]
        .as_array()
        .unwrap_or_else(|| panic!("an ineligible list: {v}"))
        .iter()
        .map(|x| (s(&x["job_id"]), s(&x["reason"])))
        .collect()
}

/// `(new job, the job it replays)` of each replay.
fn replayed(v: &Value) -> Vec<(String, String)> {
    v["replayed"]
        .as_array()
        .map(|a| a.iter().map(|x| (s(&x["job_id"]), s(&x["replay_of"]))).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_honours_its_filter_limit_and_dry_run_and_links_each_replay_to_its_dead_letter() {
    const A: &str = "replay_a";
    const B: &str = "replay_b";
    let dir = TempDir::new("gov-replay");
    let admin = TestAdmin::start(dir.path(), |c| c.replay_max = 4).await;
    let addr = admin.http.clone();
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let spec = quiet(spec_for("w1", &[A, B], 8)).exec(move |r| {
        let key = key_of(r);
        if h.load(Ordering::SeqCst) {
            Exec::Succeed(vec![])
        } else if key.starts_with("net") {
            Exec::Fail(format!("network unreachable for {key}"))
        } else {
            Exec::Fail(format!("disk full on {key}"))
        }
    });
    let _worker = FakeWorker::start(admin.grpc, spec).await;
    wait_config(&admin, A).await;
    wait_config(&admin, B).await;
    let mut dead: HashMap<&str, String> = HashMap::new();
    for (t, key) in [(A, "disk-1"), (A, "disk-2"), (A, "disk-3"), (A, "net-1"), (A, "net-2"), (B, "disk-b1")] {
        dead.insert(key, enqueue_ok(&addr, t, key).await);
    }
    admin.wait_jobs("six dead letters", "dead_letter=true", 6, "failed").await;
    assert_eq!(admin.get("/api/plugin/status").await["dead_letters"], 6);
    healed.store(true, Ordering::SeqCst);
    let total = || async { list_jobs(&addr, "").await.len() };
    let replay = |body: Value| {
        let addr = addr.clone();
        async move { http::post_json(&addr, "/api/plugin/jobs/replay", &body).await }
    };
    let ok = |r: Response| {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };

    // A dry run counts and creates nothing.
    let v = ok(replay(json!({"job_type": A, "error_contains": "disk full", "dry_run": true})).await);
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        (v["matched"].clone(), v["eligible"].clone(), v["over_limit"].clone()),
        (json!(3), json!(3), json!(0)),
        "{v}"
    );
    assert!(ineligible(&v).is_empty(), "{v}");
    assert!(replayed(&v).is_empty(), "a dry run replays nothing: {v}");
    assert_eq!(total().await, 6, "a dry run creates nothing");
    let v = ok(replay(json!({"since": now_ms() + 3_600_000, "dry_run": true})).await);
    assert_eq!(v["matched"], 0, "since applies to the completion time: {v}");
    let v = ok(replay(json!({"job_type": B, "dry_run": true})).await);
    assert_eq!((v["matched"].clone(), v["eligible"].clone()), (json!(1), json!(1)), "{v}");

    // A limit above --replay-max is refused.
    refused(&replay(json!({"job_type": A, "limit": 5})).await, 422, "a limit above replay_max");
    assert_eq!(total().await, 6);

    // Two of the three matches, linked to the jobs they replay.
    let v = ok(replay(json!({"job_type": A, "error_contains": "disk full", "limit": 2})).await);
    assert_eq!(v["dry_run"], false);
    assert_eq!(
        (v["matched"].clone(), v["eligible"].clone(), v["over_limit"].clone()),
        (json!(3), json!(3), json!(1)),
        "{v}"
    );
    let first_round = replayed(&v);
    assert_eq!(first_round.len(), 2, "{v}");
    let disk: BTreeSet<String> = ["disk-1", "disk-2", "disk-3"].iter().map(|k| dead[k].clone()).collect();
    let olds: BTreeSet<String> = first_round.iter().map(|(_, old)| old.clone()).collect();
    assert_eq!(olds.len(), 2);
    assert!(olds.is_subset(&disk), "{v}");
    assert_eq!(total().await, 8);
    for (new, old) in &first_round {
        let (n, o) = (job(&addr, new).await, job(&addr, old).await);
        assert_eq!(n["replay_of"], old.as_str(), "{n}");
        for field in ["job_type", "dedupe_key", "summary", "priority", "labels"] {
            assert_eq!(n[field], o[field], "the replay keeps {field}");
        }
        assert_eq!(
            (o["state"].clone(), o["dead_letter"].clone()),
            (json!("job_state_failed"), json!(true)),
            "the original stays"
        );
        wait_job(&addr, new, "succeeded").await;
        let row = list_jobs(&addr, &format!("job_type={A}")).await.into_iter().find(|j| j["job_id"] == new.as_str());
        assert_eq!(row.expect("the replay is listed")["replay_of"], old.as_str(), "list rows link too");
    }
    let left_disk = disk.difference(&olds).next().unwrap().clone();

    // Again: the replayed ones are ineligible, naming their replay.
    let v = ok(replay(json!({"job_type": A, "error_contains": "disk full", "dry_run": true})).await);
    assert_eq!((v["matched"].clone(), v["eligible"].clone()), (json!(3), json!(1)), "{v}");
    let want: BTreeMap<String, String> =
        first_round.iter().map(|(new, old)| (old.clone(), format!("already replayed as {new}"))).collect();
    assert_eq!(ineligible(&v), want);

    // A newer job with the same key, a job still active, one that is no dead letter, none.
    hold(&addr, A, &json!({"dispatch": true})).await;
    let newer = enqueue_ok(&addr, A, "net-1").await;
    let finished = first_round[0].0.clone();
    let ids = json!([dead["net-1"], newer, finished, "j999999"]);
    let v = ok(replay(json!({"ids": ids, "dry_run": true})).await);
    assert_eq!(v["eligible"], 0, "{v}");
    let want = BTreeMap::from([
        (dead["net-1"].clone(), format!("a newer job with the same dedupe key exists: {newer}")),
        (newer.clone(), "still active".to_string()),
        (finished.clone(), "not a dead letter".to_string()),
        ("j999999".to_string(), "no such job".to_string()),
    ]);
    assert_eq!(ineligible(&v), want);
    let before = total().await;
    let v = ok(replay(json!({"ids": ids})).await);
    assert!(replayed(&v).is_empty(), "{v}");
    assert_eq!(total().await, before, "nothing eligible, nothing created");

    // Everything left of A: the unreplayed disk job and net-2.
    let v = ok(replay(json!({"job_type": A})).await);
    assert_eq!((v["matched"].clone(), v["eligible"].clone()), (json!(5), json!(2)), "{v}");
    let olds: BTreeSet<String> = replayed(&v).into_iter().map(|(_, old)| old).collect();
    assert_eq!(olds, BTreeSet::from([left_disk, dead["net-2"].clone()]));
    assert_eq!(total().await, before + 2);

    let trail = audit_all(&addr, "action=replay_jobs&outcome=done").await;
    assert!(trail.iter().any(|e| e["target"] == A), "a filtered replay targets its job type: {trail:?}");
    assert!(trail.iter().any(|e| e["target"] == "jobs"), "a replay by ids targets jobs: {trail:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_approval_token_wide_actions_are_refused_without_it_and_the_refusals_are_audited() {
    let dir = TempDir::new("gov-approval");
    let admin = TestAdmin::start(dir.path(), |c| c.approval_token = Some(APPROVAL.to_string())).await;
    let addr = admin.http.clone();
    let _worker =
        FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 2)).exec(|_| Exec::Fail("boom".into()))).await;
    wait_config(&admin, T).await;
    let dead = enqueue_ok(&addr, T, "dead").await;
    wait_job(&addr, &dead, "failed").await;
    let approve = [("x-plughost-approval", APPROVAL)];
    let wrong = [("x-plughost-approval", "not-it")];

    // A dry run changes nothing: it needs no approval, and says what a replay would do.
    let r = call(&addr, "POST", "/api/plugin/jobs/replay", &[], Some(&json!({"dry_run": true}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["eligible"].as_u64(), r.json()["dry_run"].as_bool()), (Some(1), Some(true)));
    let r = call(&addr, "POST", "/api/plugin/jobs/replay", &[], Some(&json!({}))).await;
    refused(&r, 403, "a replay without approval");
    let r = call(&addr, "POST", "/api/plugin/jobs/replay", &wrong, Some(&json!({}))).await;
    refused(&r, 403, "a replay with the wrong approval");
    assert_eq!(list_jobs(&addr, "").await.len(), 1, "nothing was replayed");
    let r = call(&addr, "POST", "/api/plugin/jobs/replay", &approve, Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rep = replayed(&r.json());
    assert_eq!(rep.len(), 1, "{}", r.text());
    assert_eq!(rep[0].1, dead, "the replay links to the dead letter");

    let r = call(&addr, "POST", "/api/plugin/dispatch?paused=true", &[], Some(&json!({}))).await;
    refused(&r, 403, "a global dispatch pause without approval");
    assert_eq!(admin.get("/api/plugin/status").await["dispatch_paused"], false);
    for paused in [true, false] {
        let r = call(&addr, "POST", &format!("/api/plugin/dispatch?paused={paused}"), &approve, Some(&json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"dispatch_paused": paused}));
    }

    let r = call(&addr, "POST", "/api/plugin/schedules/pause?paused=true", &[], Some(&json!({}))).await;
    refused(&r, 403, "pausing all schedules without approval");
    assert_eq!(holds(&addr).await["schedules_paused"], false);
    let r = call(&addr, "POST", "/api/plugin/schedules/pause?paused=true", &approve, Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"schedules_paused": true}));
    let h = holds(&addr).await;
    assert_eq!(h["schedules_paused"], true);
    assert!(has_hold(&h, "schedules", "", "admin"), "{h}");
    assert_eq!(get_json(&addr, "/api/plugin/schedules").await["paused"], true);
    let r = call(&addr, "POST", "/api/plugin/schedules/pause?paused=false", &approve, Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Setting a schedule needs no approval; deleting one does.
    let path = format!("/api/plugin/job-types/{T}/schedule");
    let r = http::put_json(&addr, &path, &json!({"cron": "0 3 * * *"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&addr, "DELETE", &path, &[], None).await;
    refused(&r, 403, "deleting a schedule without approval");
    assert_eq!(schedule_of(&addr, T).await["kind"], "cron", "still there");
    let r = call(&addr, "DELETE", &path, &approve, None).await;
    assert!((200..300).contains(&r.status), "{}", r.text());
    assert_eq!(schedule_of(&addr, T).await["kind"], "interval", "back on its interval");

    for (action, want) in [
        ("replay_jobs", vec!["done", "refused", "refused", "done"]),
        ("pause_dispatch", vec!["done", "done", "refused"]),
        ("pause_schedules", vec!["done", "done", "refused"]),
        ("delete_schedule", vec!["done", "refused"]),
    ] {
        let trail = audit_all(&addr, &format!("action={action}")).await;
        assert_eq!(outcomes(&trail), want, "{action}: {trail:?}");
        assert!(trail.iter().filter(|e| e["outcome"] == "refused").all(|e| !s(&e["reason"]).is_empty()), "{trail:?}");
    }
    let text = serde_json::to_string(&audit_all(&addr, "").await).unwrap();
    assert!(!text.contains(APPROVAL), "the approval token never reaches the trail");
    admin.stop().await;
}

// ---- enqueue and the run-now cap -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_creates_a_job_run_with_its_parameters_and_refuses_duplicates_unknown_types_and_bad_parameters() {
    let dir = TempDir::new("gov-enqueue");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let addr = admin.http.clone();
    let worker = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[T], 4)).exec(|_| Exec::HangUntilCancel)).await;
    wait_config(&admin, T).await;

    let body = json!({
        "parameters": {"name": {"string_value": "x"}, "count": {"int64_value": "3"}},
        "labels": {"team": "storage"},
        "summary": "by hand",
        "detail": "made in a test",
        "dedupe_key": "k1",
        "priority": "high",
    });
    let r = enqueue(&addr, T, &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let view = r.json()["job"].clone();
    let id = s(&view["job_id"]);
    assert_eq!(
        json!([
            view["job_type"],
            view["dedupe_key"],
            view["summary"],
            view["detail"],
            view["priority"],
            view["labels"]
        ]),
        json!([T, "k1", "by hand", "made in a test", "high", {"team": "storage"}]),
        "{view}"
    );
    let m = worker
        .inbox
        .wait_for("the job's execution", WAIT, |m| {
            matches!(&m.body, Some(AdminBody::ExecuteJobRequest(e)) if e.job.as_ref().is_some_and(|j| j.job_id == id))
        })
        .await;
    let Some(AdminBody::ExecuteJobRequest(exec)) = m.body else { unreachable!() };
    let spec = exec.job.expect("the job spec");
    let kind = |k: &str| spec.parameters.get(k).and_then(|v| v.kind.clone());
    assert_eq!(kind("name"), Some(Kind::StringValue("x".into())));
    assert_eq!(kind("count"), Some(Kind::Int64Value(3)));
    assert_eq!(spec.parameters.len(), 2);
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("storage"));
    assert_eq!((spec.summary.as_str(), spec.dedupe_key.as_str()), ("by hand", "k1"));
    assert_eq!(spec.priority, pb::JobPriority::High as i32);
    wait_job(&addr, &id, "running").await;

    // The same key while that job is active: 409 naming it.
    let r = enqueue(&addr, T, &json!({"parameters": {}, "dedupe_key": "k1"})).await;
    let duplicate = refused(&r, 409, "a duplicate dedupe key");
    assert_eq!(r.json()["job_id"], id.as_str(), "the refusal names the active job");

    // not_before, as Unix ms and as RFC 3339.
    let soon = (now_ms() / 1000 + 3600) * 1000;
    let r = enqueue(&addr, T, &json!({"parameters": {}, "dedupe_key": "later", "not_before": soon})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let later = s(&r.json()["job"]["job_id"]);
    assert_eq!(tests::time_ms(&r.json()["job"]["not_before"]), Some(soon));
    let body = json!({"parameters": {}, "dedupe_key": "much-later", "not_before": "2099-01-01T00:00:00Z"});
    let r = enqueue(&addr, T, &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(tests::time_ms(&r.json()["job"]["not_before"]), Some(utc_ms(2099, 1, 1, 0, 0, 0)));

    // Refusals create nothing.
    let count = list_jobs(&addr, "").await.len();
    let r = enqueue(&addr, "no_such_type", &json!({"parameters": {}, "dedupe_key": "x"})).await;
    refused(&r, 404, "an unknown job type");
    for (what, parameters) in [
        ("a parameter that is not a ConfigValue", json!({"name": "plain"})),
        ("an int64 that is not a number", json!({"count": {"int64_value": "three"}})),
        ("parameters over the size limit", json!({"blob": {"string_value": "x".repeat(100 * 1024)}})),
    ] {
        let r = enqueue(&addr, T, &json!({"parameters": parameters, "dedupe_key": "bad"})).await;
        refused(&r, 422, what);
    }
    assert_eq!(list_jobs(&addr, "").await.len(), count, "no refused enqueue made a job");
    assert_eq!(job(&addr, &later).await["state"], "job_state_pending", "not before its time");
    assert!(worker.inbox.executions().iter().all(|e| key_of(e) == "k1"), "only the first job was dispatched");

    // Once the first job has ended, its key is free again.
    let r = http::post_json(&addr, &format!("/api/plugin/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_job(&addr, &id, "canceled").await;
    let again = enqueue_ok(&addr, T, "k1").await;
    assert_ne!(again, id);

    let trail = audit_all(&addr, "action=enqueue_job&outcome=refused").await;
    assert!(
        trail.iter().any(|e| e["target"] == T && e["reason"] == duplicate.as_str()),
        "the 409 is audited: {trail:?}"
    );
    assert!(trail.iter().any(|e| e["target"] == "no_such_type"), "the 404 is audited: {trail:?}");
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_now_cap_answers_429_with_retry_after_per_job_type_and_is_audited() {
    const CAPPED: &str = "capped_type";
    const OTHER: &str = "other_type";
    let dir = TempDir::new("gov-run-cap");
    let admin =
        TestAdmin::start(dir.path(), |c| c.run_now_max = RateCap { max: 2, window: Duration::from_secs(60) }).await;
    let addr = admin.http.clone();
    let worker = FakeWorker::start(admin.grpc, quiet(spec_for("w1", &[CAPPED, OTHER], 2))).await;
    wait_config(&admin, CAPPED).await;
    wait_config(&admin, OTHER).await;
    let post = |t: &'static str, action: &'static str| {
        let addr = addr.clone();
        async move { http::post_json(&addr, &format!("/api/plugin/job-types/{t}/{action}?wait=false"), &json!({})).await }
    };

    assert_eq!(post(CAPPED, "run").await.status, 202);
    assert_eq!(post(CAPPED, "detect").await.status, 202);
    for action in ["run", "detect"] {
        let r = post(CAPPED, action).await;
        refused(&r, 429, &format!("a third {action} within the window"));
        let retry_after: u64 = header(&r, "retry-after")
            .unwrap_or_else(|| panic!("a 429 says when to retry: {:?}", r.headers))
            .trim()
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "within the window: {retry_after}");
    }
    let r = post(OTHER, "run").await;
    assert_eq!(r.status, 202, "the cap is per job type: {}", r.text());
    wait_for("the other type detects", WAIT, || async { (detections(&worker, OTHER) == 1).then_some(()) }).await;

    let trail = audit_all(&addr, &format!("action=run&target={CAPPED}")).await;
    assert_eq!(outcomes(&trail), ["refused", "done"], "{trail:?}");
    assert!(!s(&trail[0]["reason"]).is_empty());
    let trail = audit_all(&addr, &format!("action=detect&target={CAPPED}")).await;
    assert_eq!(outcomes(&trail), ["refused", "done"], "{trail:?}");
    let metrics = http::get(&addr, "/metrics").await.text();
    assert!(
        metric(&metrics, "plughost_admin_commands_total{action=\"run\",outcome=\"rate_limited\"}") >= 1.0,
        "{metrics}"
    );
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_read_the_audit_trail_an_operator_can() {
    let dir = TempDir::new("gov-audit-roles");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let addr = admin.http.clone();
    let viewer = create_token(&addr, "dash", "viewer").await;
    let operator = create_token(&addr, "ops", "operator").await;
    for path in ["/api/plugin/audit", "/api/plugin/audit/export?format=csv", "/plugin/audit"] {
        let r = as_token(&addr, &viewer, "GET", path, None).await;
        assert_eq!(r.status, 403, "{path} for a viewer: {}", r.text());
        assert!(r.text().contains("needs the operator role"), "{path}: {}", r.text());
        let r = as_token(&addr, &operator, "GET", path, None).await;
        assert_eq!(r.status, 200, "{path} for an operator: {}", r.text());
    }
    let r = as_token(&addr, &operator, "GET", "/api/plugin/audit?action=create_token", None).await;
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 2, "{}", r.text());
    admin.stop().await;
}
