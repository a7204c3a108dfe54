//! Handler tests of the operator's views: the whole HTTP app (`app(state).oneshot`) over
//! real components with a manual clock (`test_support::Rig`), a viewer's token and worker
//! sessions registered in the registry: the explain route, the job page's "why is this job
//! waiting?" box and the list's short form, the job type's "needs configuration" status
//! and its refused Run now, its tabs and the tab a form comes back to, and the workers
//! page's departures, peer address and slot use.

use std::net::SocketAddr;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use proto::pb;
use serde_json::Value;
use tower::ServiceExt;

use crate::{
    auth::Role,
    clock::Clock,
    dispatcher::{Admission, NewJob},
    holds::{Hold, HoldKind},
    test_support::Rig,
    worker_history::LeftBecause,
};

struct Answer {
    status: StatusCode,
    location: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A token of `role` named `name` for the rig's admin.
fn token(rig: &Rig, name: &str, role: Role) -> String {
    rig.c.auth.tokens.create(name, role, rig.clock.now_ms()).expect("token")
}

/// One request as `token`. A JSON body goes as JSON; any other body is a form, posted
/// with the pages' CSRF cookie and with `CSRF` in it replaced by the token.
async fn call(rig: &Rig, token: &str, method: &str, path: &str, body: &str) -> Answer {
    let mut request = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    let csrf = super::pages::Chrome::bare("", "", &Default::default()).csrf;
    let body = if body.starts_with('{') || body.is_empty() {
        request = request.header("content-type", "application/json");
        body.to_string()
    } else {
        request = request
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("plughost_csrf={csrf}"));
        body.replace("CSRF", csrf)
    };
    let response = crate::http::app(rig.c.clone()).oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Answer { status, location, body: String::from_utf8_lossy(&bytes).into_owned() }
}

async fn get(rig: &Rig, token: &str, path: &str) -> Answer {
    call(rig, token, "GET", path, "").await
}

/// Admits a job of `t` and waits until it is dispatchable; returns its id.
async fn admit(rig: &Rig, key: &str) -> String {
    let spec = crate::test_support::spec(key, Rig::T0);
    let out = rig.c.dispatcher.admit(vec![NewJob { spec }], 10);
    let Admission::Created { job_id } = &out[0] else { panic!("not created: {out:?}") };
    rig.c.store.settle().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while rig.c.dispatcher.explain(crate::job::parse_job_id(job_id).unwrap()).unwrap().reason.code() == "saving" {
        assert!(tokio::time::Instant::now() < deadline, "job {key} never became dispatchable");
        tokio::task::yield_now().await;
    }
    job_id.clone()
}

#[tokio::test]
async fn the_explain_route_gives_a_viewer_the_dispatchers_reason_with_its_details() {
    let rig = Rig::new(|_| {});
    let viewer = token(&rig, "watcher", Role::Viewer);
    let id = admit(&rig, "a").await;

    let r = get(&rig, &viewer, &format!("/api/plugin/jobs/{id}/explain")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!((v["job_id"].as_str(), v["state"].as_str()), (Some(id.as_str()), Some("pending")));
    assert_eq!((v["blocked"].as_bool(), v["reason"].as_str()), (Some(true), Some("no_executor")));
    assert_eq!(v["message"], "no connected worker can execute t");

    let hold = Hold { kind: HoldKind::Dispatch, target: String::new(), set_by: "alice".into(), set_at: Rig::T0 };
    rig.c.holds.apply(HoldKind::Dispatch, "", Some(hold));
    let v = get(&rig, &viewer, &format!("/api/plugin/jobs/{id}/explain")).await.json();
    assert_eq!((v["reason"].as_str(), v["by"].as_str()), (Some("dispatch_paused"), Some("alice")));
    assert_eq!(v["since"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v["message"], "all dispatch is paused (by alice since 2023-11-14T22:13:20Z)");
    assert_eq!(v["also"][0]["reason"], "no_executor", "what would still block it is listed: {v}");
    rig.c.holds.apply(HoldKind::Dispatch, "", None);

    let _w = rig.worker("w1", 1);
    let v = get(&rig, &viewer, &format!("/api/plugin/jobs/{id}/explain")).await.json();
    assert_eq!((v["blocked"].as_bool(), v["reason"].as_str()), (Some(false), Some("ready")));
    assert_eq!(v["message"], "ready: will be dispatched at the next pass");

    for missing in ["/api/plugin/jobs/j999999/explain", "/api/plugin/jobs/nope/explain"] {
        let r = get(&rig, &viewer, missing).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
        assert!(r.json()["error"].as_str().unwrap().starts_with("no job"), "{}", r.body);
    }
    let r = call(&rig, "not-a-token", "GET", &format!("/api/plugin/jobs/{id}/explain"), "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_job_page_says_why_a_pending_job_waits_and_the_list_says_it_short() {
    let rig = Rig::new(|_| {});
    let viewer = token(&rig, "watcher", Role::Viewer);
    let id = admit(&rig, "a").await;

    let page = get(&rig, &viewer, &format!("/plugin/jobs/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Why is this job waiting?"), "{}", page.body);
    assert!(page.body.contains("data-reason=\"no_executor\""));
    assert!(page.body.contains("No connected worker can execute t."));
    assert!(page.body.contains("0 attempts"), "the attempt count has its noun");

    let list = get(&rig, &viewer, "/plugin/jobs?state=pending").await;
    assert!(list.body.contains("data-field=\"why\""), "{}", list.body);
    assert!(list.body.contains(">no worker</div>"), "the short form under the state");
    assert!(list.body.contains("title=\"No connected worker can execute t.\""), "the sentence on hover");

    // A job out on a worker has no box, and its row no reason.
    let mut w = rig.worker("w1", 1);
    rig.c.dispatcher.dispatch_pass();
    let _ = w.next().await;
    let page = get(&rig, &viewer, &format!("/plugin/jobs/{id}")).await;
    assert!(!page.body.contains("Why is this job waiting?"));
    assert!(page.body.contains("1 attempt<"), "{}", page.body);
    assert!(!get(&rig, &viewer, "/plugin/jobs").await.body.contains("data-field=\"why\""));
}

/// A descriptor of `t` whose admin form has one required field, Directories.
fn needs_directories() -> pb::JobTypeDescriptor {
    let field = pb::ConfigField {
        name: "directories".into(),
        label: "Directories".into(),
        field_type: pb::ConfigFieldType::String as i32,
        widget: pb::ConfigWidget::Text as i32,
        required: true,
        ..Default::default()
    };
    let mut d = crate::test_support::descriptor_with(vec![field]);
    d.display_name = "SQLite vacuum".into();
    d.descriptor_version = 2;
    d.admin_runtime_defaults = Some(pb::AdminRuntimeDefaults {
        enabled: true,
        global_execution_concurrency: 1,
        execution_timeout_seconds: 60,
        detection_timeout_seconds: 60,
        max_jobs_per_detection: 10,
        detection_interval_minutes: 10,
        ..Default::default()
    });
    d
}

#[tokio::test]
async fn a_job_type_with_an_empty_required_setting_says_so_and_its_run_now_is_refused_with_the_reason() {
    let rig = Rig::new(|_| {});
    rig.c.configs.save_descriptor(needs_directories()).expect("descriptor");
    let admin = token(&rig, "root", Role::Admin);
    let _w = rig.worker("w1", 1);

    let page = get(&rig, &admin, "/plugin/job-types/t").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"needs-configuration\""), "{}", page.body);
    assert!(page.body.contains("SQLite vacuum needs configuration:</strong> set Directories"));

    for path in ["/api/plugin/job-types/t/run?wait=false", "/api/plugin/job-types/t/detect?wait=false"] {
        let r = call(&rig, &admin, "POST", path, "{}").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "SQLite vacuum needs configuration: set Directories", "{path}");
    }
    let r = call(&rig, &admin, "POST", "/plugin/job-types/t/run", "csrf=CSRF").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location.ends_with("error=SQLite%20vacuum%20needs%20configuration%3A%20set%20Directories."),
        "{}",
        r.location
    );

    let body = r#"{"admin_config_values": {"directories": {"string_value": "/data"}}}"#;
    let r = call(&rig, &admin, "PUT", "/api/plugin/job-types/t/config", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!get(&rig, &admin, "/plugin/job-types/t").await.body.contains("id=\"needs-configuration\""));
    let r = call(&rig, &admin, "POST", "/api/plugin/job-types/t/run?wait=false", "{}").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "configured, it runs: {}", r.body);
}

/// The tab a job type page shows.
fn tab_of(html: &str) -> &str {
    let at = html.find("id=\"tab-panel\" data-tab=\"").expect("the tab panel") + "id=\"tab-panel\" data-tab=\"".len();
    &html[at..at + html[at..].find('"').unwrap()]
}

#[tokio::test]
async fn the_job_type_tabs_say_what_needs_the_operator_and_a_form_comes_back_to_its_tab() {
    let rig = Rig::new(|_| {});
    rig.c.configs.save_descriptor(needs_directories()).expect("descriptor");
    let admin = token(&rig, "root", Role::Admin);
    let _w = rig.worker("w1", 1);

    let page = get(&rig, &admin, "/plugin/job-types/t?tab=runtime").await;
    assert_eq!((page.status, tab_of(&page.body)), (StatusCode::OK, "runtime"));
    assert!(
        page.body.contains("Configuration <span class=\"tab-note\">needs configuration</span></a>"),
        "the tab that needs the operator says so from any tab"
    );
    assert!(!page.body.contains("id=\"config-form\""), "only the runtime tab is rendered");

    // Refused: the form's own tab again, whatever tab the page was on.
    let r = call(&rig, &admin, "POST", "/plugin/job-types/t/config", "csrf=CSRF&admin.directories=").await;
    assert_eq!((r.status, tab_of(&r.body)), (StatusCode::UNPROCESSABLE_ENTITY, "configuration"));
    assert!(r.body.contains("Is required."), "{}", r.body);
    let body = "csrf=CSRF&runtime.enabled=true&runtime.detection_interval_minutes=45&unit%3Aruntime.detection_interval_minutes=s";
    let r = call(&rig, &admin, "POST", "/plugin/job-types/t/runtime", body).await;
    assert_eq!((r.status, tab_of(&r.body)), (StatusCode::UNPROCESSABLE_ENTITY, "runtime"));
    assert!(r.body.contains("Must be a whole number of minutes."), "{}", r.body);

    // Saved: back where the form was posted from.
    let back = "%2Fplugin%2Fjob-types%2Ft%3Ftab%3Dconfiguration";
    let r = call(
        &rig,
        &admin,
        "POST",
        "/plugin/job-types/t/config",
        &format!("csrf=CSRF&admin.directories=%2Fdata&back={back}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location.starts_with("/plugin/job-types/t?tab=configuration&ok=Configuration%20saved."),
        "{}",
        r.location
    );
    let page = get(&rig, &admin, "/plugin/job-types/t?tab=runtime").await;
    assert!(!page.body.contains("tab-note"), "configured: nothing needs the operator");
}

#[tokio::test]
async fn the_workers_page_lists_departures_with_their_reason_and_a_worker_without_an_address_by_its_peer() {
    let rig = Rig::new(|_| {});
    let viewer = token(&rig, "watcher", Role::Viewer);
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let peer: SocketAddr = "127.0.0.1:40404".parse().unwrap();
    let hello = pb::WorkerHello {
        worker_id: "quiet".into(),
        capabilities: vec![pb::JobTypeCapability {
            job_type: "t".into(),
            can_execute: true,
            max_execution_concurrency: 4,
            ..Default::default()
        }],
        ..Default::default()
    };
    let session = std::sync::Arc::new(
        crate::registry::WorkerSession::new(rig.c.registry.next_session_id(), hello, tx, rig.clock.now_ms())
            .with_peer(Some(peer)),
    );
    rig.c.registry.register(session.clone());
    rig.c.registry.record_slot_use("quiet", 1, 4);
    rig.clock.advance(60_000);
    rig.c.registry.record_slot_use("quiet", 3, 4);

    let v = get(&rig, &viewer, "/api/plugin/workers").await.json();
    assert_eq!((v[0]["address"].as_str(), v[0]["peer_address"].as_str()), (Some(""), Some("127.0.0.1:40404")));
    let slots = &v[0]["slot_use_last_hour"];
    assert_eq!(
        (slots["peak_used"].as_i64(), slots["total"].as_i64(), slots["samples"].as_i64()),
        (Some(3), Some(4), Some(2))
    );
    let page = get(&rig, &viewer, "/plugin/workers").await.body;
    assert!(
        page.contains("127.0.0.1:40404 <span class=\"muted\">(connection's address; the worker sent none)"),
        "{page}"
    );
    assert!(page.contains("peak 3 of 4 · average 2"), "{page}");
    assert!(page.contains("<svg class=\"spark\""));
    assert!(page.contains("No worker has left during the last 24 hours."));

    rig.c.registry.remove_if_current("quiet", session.session_id);
    rig.c.registry.record_departure(&session, LeftBecause::Lost, "no heartbeat for 15 s");
    let v = get(&rig, &viewer, "/api/plugin/workers/departed").await.json();
    let d = &v["departed"][0];
    assert_eq!((d["worker_id"].as_str(), d["because"].as_str()), (Some("quiet"), Some("lost")));
    assert_eq!(
        (d["reason"].as_str(), d["peer_address"].as_str()),
        (Some("no heartbeat for 15 s"), Some("127.0.0.1:40404"))
    );
    assert_eq!(d["left_at"], "2023-11-14T22:14:20.000Z");
    let page = get(&rig, &viewer, "/plugin/workers").await.body;
    assert!(page.contains("data-departed=\"quiet\" data-because=\"lost\""), "{page}");
    assert!(page.contains("lost (stalled)") && page.contains("no heartbeat for 15 s"));

    rig.clock.advance(crate::worker_history::DEPARTURES_FOR_MS);
    let v = get(&rig, &viewer, "/api/plugin/workers/departed").await.json();
    assert_eq!(v["departed"].as_array().map(Vec::len), Some(0), "a day later it is forgotten");
}
