//! The OpenAPI document at `GET /api/plugin/openapi.json`, fetched from a running admin:
//! it is OpenAPI 3.x JSON, it documents exactly the routes the admin routes (both ways),
//! and real answers of a real admin with a real worker fit the schemas it gives them.

use std::{collections::BTreeSet, sync::Arc};

use serde_json::{Value, json};
use tests::{
    TempDir,
    harness::TestAdmin,
    http,
    plugins::{Echo, PluginWorker},
    schema::{check, response_schema},
};

const JOB_TYPE: &str = "openapi_echo";

async fn document(admin: &TestAdmin) -> Value {
    let r = http::get(&admin.http, "/api/plugin/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    r.json()
}

/// Every (method, path) of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            found.insert((method.to_uppercase(), path.clone()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_and_covers_exactly_the_routed_paths() {
    let dir = TempDir::new("openapi");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let doc = document(&admin).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Plughost admin API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let routed: BTreeSet<(String, String)> = admin::http::route_table()
        .into_iter()
        .map(|(method, path)| (method.openapi_name().to_uppercase(), path))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routed but not documented: {undocumented:?}");
    assert!(unrouted.is_empty(), "documented but not routed: {unrouted:?}");
    for expected in [
        ("GET", "/api/plugin/metrics"),
        ("GET", "/api/plugin/openapi.json"),
        ("GET", "/metrics"),
        ("PUT", "/api/plugin/job-types/{t}/config"),
        ("DELETE", "/api/plugin/tokens/{name}"),
    ] {
        assert!(routed.contains(&(expected.0.to_string(), expected.1.to_string())), "{expected:?}");
    }

    // Each documented route answers on the real admin (a route documented under a path
    // it does not have would be a 404 from the router, which has no JSON body).
    for (method, path) in &documented {
        if method != "GET" || path.contains('{') || path.ends_with("/events") {
            continue;
        }
        let r = http::get(&admin.http, path).await;
        assert_ne!(r.status, 404, "GET {path}");
    }

    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "plughost_session");
    assert!(schemes.contains_key("client_certificate"));
    // Public routes say so; the others answer 401 without credentials.
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    assert!(doc["paths"]["/api/plugin/jobs"]["get"]["responses"]["401"].is_object());
    assert!(
        doc["paths"]["/api/plugin/jobs"]["get"]["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "state")
    );
    admin.stop().await;
}

/// GETs `path` and checks the answer against the document's schema for `template`.
async fn fits(admin: &TestAdmin, doc: &Value, template: &str, path: &str) -> Value {
    let r = http::get(&admin.http, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    let body = r.json();
    check(doc, response_schema(doc, "get", template, 200), &body, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    body
}

/// Sends `method` with a JSON body and checks the answer with `status` against the
/// document.
async fn sent(
    admin: &TestAdmin,
    doc: &Value,
    method: &str,
    template: &str,
    path: &str,
    body: Value,
    status: u16,
) -> Value {
    let headers = [("content-type", "application/json")];
    let r = http::request(&admin.http, method, path, &headers, body.to_string().into_bytes()).await;
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    let answer = r.json();
    let schema = response_schema(doc, &method.to_lowercase(), template, status);
    check(doc, schema, &answer, path).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_fit_the_schemas_the_document_gives_them() {
    let dir = TempDir::new("openapi-shapes");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let work = TempDir::new("openapi-worker");
    let worker = PluginWorker::start(
        admin.grpc,
        "openapi-w1",
        work.path(),
        vec![Arc::new(Echo { job_type: JOB_TYPE, jobs: 2, slots: 2 })],
    );
    let jobs = admin.wait_jobs("the echo jobs succeed", &format!("job_type={JOB_TYPE}"), 2, "succeeded").await;
    let job_id = jobs[0]["job_id"].as_str().unwrap().to_string();
    let doc = document(&admin).await;

    let t = JOB_TYPE;
    for (template, path) in [
        ("/api/plugin/status", "/api/plugin/status".to_string()),
        ("/api/plugin/workers", "/api/plugin/workers".into()),
        ("/api/plugin/job-types", "/api/plugin/job-types".into()),
        ("/api/plugin/jobs", format!("/api/plugin/jobs?job_type={t}")),
        ("/api/plugin/jobs/{id}", format!("/api/plugin/jobs/{job_id}")),
        ("/api/plugin/jobs/{id}/detail", format!("/api/plugin/jobs/{job_id}/detail")),
        ("/api/plugin/jobs/{id}/explain", format!("/api/plugin/jobs/{job_id}/explain")),
        ("/api/plugin/workers/departed", "/api/plugin/workers/departed".into()),
        ("/api/plugin/jobs/{id}/artifacts", format!("/api/plugin/jobs/{job_id}/artifacts")),
        ("/api/plugin/activities", "/api/plugin/activities".into()),
        ("/api/plugin/scheduler-states", "/api/plugin/scheduler-states".into()),
        ("/api/plugin/scheduler-status", "/api/plugin/scheduler-status".into()),
        ("/api/plugin/lanes", "/api/plugin/lanes".into()),
        ("/api/plugin/holds", "/api/plugin/holds".into()),
        ("/api/plugin/schedules", "/api/plugin/schedules".into()),
        ("/api/plugin/observations", "/api/plugin/observations".into()),
        ("/api/plugin/audit", "/api/plugin/audit".into()),
        ("/api/plugin/tokens", "/api/plugin/tokens".into()),
        ("/api/plugin/metrics", "/api/plugin/metrics".into()),
        ("/api/plugin/job-types/{t}/runs", format!("/api/plugin/job-types/{t}/runs")),
        ("/api/plugin/job-types/{t}/detection-results", format!("/api/plugin/job-types/{t}/detection-results")),
        ("/api/plugin/job-types/{t}/descriptor", format!("/api/plugin/job-types/{t}/descriptor")),
        ("/api/plugin/job-types/{t}/config", format!("/api/plugin/job-types/{t}/config")),
    ] {
        fits(&admin, &doc, template, &path).await;
    }

    // Commands and their refusals.
    sent(&admin, &doc, "POST", "/api/plugin/dispatch", "/api/plugin/dispatch?paused=true", Value::Null, 200).await;
    sent(&admin, &doc, "POST", "/api/plugin/dispatch", "/api/plugin/dispatch?paused=false", Value::Null, 200).await;
    let hold = format!("/api/plugin/job-types/{t}/hold");
    sent(&admin, &doc, "POST", "/api/plugin/job-types/{t}/hold", &hold, json!({ "detection": true }), 200).await;
    sent(&admin, &doc, "POST", "/api/plugin/job-types/{t}/hold", &hold, json!({ "detection": false }), 200).await;
    let cancel = format!("/api/plugin/jobs/{job_id}/cancel");
    sent(&admin, &doc, "POST", "/api/plugin/jobs/{id}/cancel", &cancel, Value::Null, 409).await;
    sent(&admin, &doc, "POST", "/api/plugin/jobs/{id}/cancel", "/api/plugin/jobs/j999999/cancel", Value::Null, 404)
        .await;
    let expire = format!("/api/plugin/jobs/{job_id}/expire");
    let expired = sent(&admin, &doc, "POST", "/api/plugin/jobs/{id}/expire", &expire, Value::Null, 200).await;
    assert_eq!(expired["expired"], false);
    let schedule = format!("/api/plugin/job-types/{t}/schedule");
    sent(&admin, &doc, "PUT", "/api/plugin/job-types/{t}/schedule", &schedule, json!({ "cron": "0 3 * * *" }), 200)
        .await;
    sent(&admin, &doc, "PUT", "/api/plugin/job-types/{t}/schedule", &schedule, json!({ "cron": "nope" }), 422).await;
    sent(&admin, &doc, "DELETE", "/api/plugin/job-types/{t}/schedule", &schedule, Value::Null, 200).await;
    let replay = json!({ "job_type": t, "dry_run": true });
    sent(&admin, &doc, "POST", "/api/plugin/jobs/replay", "/api/plugin/jobs/replay", replay, 200).await;
    let enqueue = format!("/api/plugin/job-types/{t}/jobs");
    let made =
        sent(&admin, &doc, "POST", "/api/plugin/job-types/{t}/jobs", &enqueue, json!({ "dedupe_key": "by-hand" }), 201)
            .await;
    assert!(made["job_id"].is_string());

    // The synchronous answers: a preview detection, a run that waits for its jobs, and a
    // job executed by SeaweedFS's route.
    let detect = format!("/api/plugin/job-types/{t}/detect");
    let preview = sent(&admin, &doc, "POST", "/api/plugin/job-types/{t}/detect", &detect, Value::Null, 200).await;
    assert_eq!(preview["count"], 2);
    let run = format!("/api/plugin/job-types/{t}/run");
    let ran = sent(&admin, &doc, "POST", "/api/plugin/job-types/{t}/run", &run, Value::Null, 200).await;
    assert!(ran["success_count"].as_u64().is_some(), "{ran}");
    let accepted = format!("{detect}?wait=false");
    sent(&admin, &doc, "POST", "/api/plugin/job-types/{t}/detect", &accepted, Value::Null, 202).await;
    let execute = json!({ "job": { "job_type": t, "dedupe_key": "executed" } });
    let done = sent(&admin, &doc, "POST", "/api/plugin/jobs/execute", "/api/plugin/jobs/execute", execute, 200).await;
    assert_eq!(done["success"], true);

    // Without credentials: the reduced status, and 401 elsewhere.
    let r = http::request_without_auth(&admin.http, "GET", "/api/plugin/status", &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    let public = r.json();
    assert_eq!(public["authentication_required"], true);
    check(&doc, response_schema(&doc, "get", "/api/plugin/status", 200), &public, "public status").unwrap();
    let r = http::request_without_auth(&admin.http, "GET", "/api/plugin/jobs", &[], Vec::new()).await;
    assert_eq!(r.status, 401);
    check(&doc, response_schema(&doc, "get", "/api/plugin/jobs", 401), &r.json(), "401").unwrap();

    worker.stop().await;
    admin.stop().await;
}

#[test]
fn the_schema_check_catches_a_missing_field_and_a_wrong_type() {
    let doc = json!({ "components": { "schemas": { "A": {
        "type": "object", "required": ["n"],
        "properties": { "n": { "type": "integer" }, "s": { "type": ["string", "null"] } }
    } } } });
    let a = json!({ "$ref": "#/components/schemas/A" });
    assert!(check(&doc, &a, &json!({ "n": 1, "s": null }), "ok").is_ok());
    assert!(check(&doc, &a, &json!({ "s": "x" }), "missing").unwrap_err().contains("required field n"));
    assert!(check(&doc, &a, &json!({ "n": "1" }), "type").is_err());
    assert!(check(&doc, &a, &json!({ "n": 1, "s": 2 }), "type").is_err());
}
