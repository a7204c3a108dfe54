//! Observations and object previews, as a SeaweedFS-style worker sends and answers them:
//! a raw worker stream over real gRPC reports what it observed of two tables, the admin
//! keeps the newest of each (only for the job types the worker offers) and serves them
//! at `GET /api/plugin/observations` and on the job type page, and a preview asked for
//! through the API or the page's Preview button reaches that worker and comes back capped
//! at 200 rows.

use std::time::Duration;

use proto::pb::{self, admin_to_worker_message::Body as AdminBody, worker_to_admin_message::Body};
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{envelope, int, open_stream},
    harness::TestAdmin,
    http,
    page_client::Client,
    wait_for,
};

const T: &str = "lance_compact";
const WAIT: Duration = Duration::from_secs(30);

fn observation(path: &[&str], fragments: i64) -> pb::ObjectObservation {
    pb::ObjectObservation {
        object_id: path.iter().map(|s| s.to_string()).collect(),
        object_kind: "table".into(),
        format: "lance".into(),
        attributes: [("fragments".to_string(), int(fragments))].into(),
        observed_at: Some(proto::now()),
    }
}

/// A worker that offers `T`, sends `observations`, and answers every preview with 250
/// rows of one column; returns once the admin has said hello.
async fn observing_worker(admin: &TestAdmin, batches: Vec<pb::WorkerObservations>) -> tokio::task::JoinHandle<()> {
    let (tx, mut inbound) = open_stream(admin.grpc, None).await.expect("stream");
    let hello = pb::WorkerHello {
        worker_id: "lance-1".into(),
        worker_instance_id: "lance-1-a".into(),
        protocol_version: proto::PROTOCOL_VERSION.into(),
        capabilities: vec![pb::JobTypeCapability {
            job_type: T.into(),
            can_detect: true,
            can_execute: true,
            max_detection_concurrency: 1,
            max_execution_concurrency: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    tx.send(envelope("lance-1", Body::Hello(hello))).await.unwrap();
    let first = tests::within("the admin's hello", WAIT, inbound.message()).await.unwrap().unwrap();
    assert!(matches!(first.body, Some(AdminBody::Hello(_))), "{first:?}");
    for batch in batches {
        tx.send(envelope("lance-1", Body::Observations(batch))).await.unwrap();
    }
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(AdminBody::RequestObjectPreview(r)) = m.body {
                let rows = (0..250).map(|i| pb::PreviewRow { values: vec![format!("{}#{i}", r.object_id.join("/"))] });
                let answer = pb::ObjectPreviewResponse {
                    success: true,
                    columns: vec!["row".into()],
                    rows: rows.collect(),
                    total_rows: 250,
                    request_id: m.request_id.clone(),
                    ..Default::default()
                };
                let _ = tx.send(envelope("lance-1", Body::ObjectPreviewResponse(answer))).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_are_kept_served_and_shown_and_a_preview_comes_back_from_the_worker() {
    let dir = TempDir::new("observations");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let batches = vec![
        pb::WorkerObservations { job_type: T.into(), observations: vec![observation(&["db", "a"], 12)] },
        pb::WorkerObservations {
            job_type: T.into(),
            observations: vec![observation(&["db", "a"], 1), observation(&["db", "b"], 3)],
        },
        pb::WorkerObservations { job_type: "not_offered".into(), observations: vec![observation(&["x"], 1)] },
    ];
    let _worker = observing_worker(&admin, batches).await;

    let listed = wait_for("both tables observed", WAIT, || async {
        let list = admin.get(&format!("/api/plugin/observations?job_type={T}")).await;
        (list.as_array().map_or(0, Vec::len) == 2).then_some(list)
    })
    .await;
    let a = listed.as_array().unwrap().iter().find(|o| o["object_id"] == json!(["db", "a"])).unwrap();
    assert_eq!(
        a["attributes"]["fragments"],
        json!(1),
        "the newest observation of db/a, its value as SeaweedFS flattens it"
    );
    assert_eq!((a["worker_id"].as_str(), a["object_kind"].as_str()), (Some("lance-1"), Some("table")));
    // SeaweedFS's observation fields, all always there; `observed_at` is RFC 3339.
    for field in ["object_id", "object_kind", "format", "attributes", "job_type", "worker_id", "observed_at"] {
        assert!(a.get(field).is_some(), "SeaweedFS's {field:?}: {a}");
    }
    assert!(tests::time_ms(&a["observed_at"]).is_some(), "{a}");
    let lance = admin.get("/api/plugin/observations?format=LANCE").await;
    assert_eq!(lance.as_array().unwrap().len(), 2, "SeaweedFS's format filter, any case");
    assert!(admin.get("/api/plugin/observations?format=iceberg").await.as_array().unwrap().is_empty());
    let one = admin.get("/api/plugin/observations?object=db/b").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let everything = admin.get("/api/plugin/observations").await;
    assert_eq!(everything.as_array().unwrap().len(), 2, "nothing kept for a type it does not offer");

    let r = http::post_json(
        &admin.http,
        &format!("/api/plugin/job-types/{T}/preview"),
        &json!({"object_id": "db/a", "format": "lance"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let preview: Value = r.json();
    assert_eq!(preview["rows"].as_array().unwrap().len(), 200, "capped at 200 rows");
    assert_eq!((preview["total_rows"].as_i64(), preview["truncated"].as_bool()), (Some(250), Some(true)));
    assert_eq!(preview["rows"][0], json!(["db/a#0"]));
    assert_eq!(preview["worker_id"], "lance-1");
    let r =
        http::post_json(&admin.http, "/api/plugin/job-types/unknown_type/preview", &json!({"object_id": "x"})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/preview"), &json!({})).await;
    assert_eq!(r.status, 400, "an object is needed: {}", r.text());
    let r =
        http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/preview"), &json!({"object_id": "/"})).await;
    assert_eq!(r.status, 422, "an empty path is not an object: {}", r.text());
    let audit = admin.get("/api/plugin/audit?action=preview_object").await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 3, "previews are commands: {audit}");

    let page_path = format!("/plugin/job-types/{T}");
    let (client, page) = Client::open(&admin.http, &format!("{page_path}?tab=history")).await;
    let html = page.text();
    assert!(html.contains("db/a") && html.contains("db/b"), "the job type page's history lists the observed objects");
    let r = client.post(&format!("{page_path}/preview"), &[("object", "db/b"), ("format", "lance")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(html.contains("id=\"preview-table\"") && html.contains("db/b#199") && !html.contains("db/b#200"), "{html}");
    admin.stop().await;
}
