//! A worker written from the wire contract that behaves as SeaweedFS's Go vacuum worker
//! does, end to end against a real admin over real gRPC: it heartbeats on its own cadence
//! (3 s here, standing for Go's 15 s; the admin advertises 1 s), acknowledges every
//! request, reports detection activities, sends a descriptor without runtime defaults, and
//! reports observations. Its job type is created disabled and waits for an operator; the
//! worker stays attached through a minute of its heartbeats, in which nothing detects the
//! disabled type; once enabled it detects and executes with the cluster context a
//! SeaweedFS job type needs (the admin's `--master` and `--filer`); its observations and a
//! preview of one of its objects are served.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use proto::pb::{self, admin_to_worker_message::Body as AdminBody, worker_to_admin_message::Body};
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{envelope, int, open_stream, simple_descriptor},
    harness::TestAdmin,
    http,
    page_client::Client,
    wait_for,
};

const T: &str = "vacuum";
const ID: &str = "vacuum-worker-1";
const WAIT: Duration = Duration::from_secs(30);
/// The worker's own heartbeat cadence, whatever the admin advertises.
const CADENCE: Duration = Duration::from_secs(3);
/// Beats it must stay attached through: 20 gaps of 3 s, a minute.
const BEATS: usize = 21;

/// What the worker saw, for the test to check.
#[derive(Default)]
struct Seen {
    detections: Vec<pb::RunDetectionRequest>,
    executions: Vec<pb::ExecuteJobRequest>,
    previews: Vec<pb::RequestObjectPreview>,
}

/// The vacuum worker's descriptor: one admin field, and no runtime defaults (as
/// SeaweedFS's Go job types send it), so the admin must not run it unattended.
fn descriptor() -> pb::JobTypeDescriptor {
    pb::JobTypeDescriptor { admin_runtime_defaults: None, ..simple_descriptor(T) }
}

fn volume(id: &str, garbage: f64) -> pb::ObjectObservation {
    pb::ObjectObservation {
        object_id: vec!["volumes".into(), id.into()],
        object_kind: "volume".into(),
        format: "seaweedfs".into(),
        attributes: [
            ("garbage_ratio".to_string(), pb::ConfigValue { kind: Some(pb::config_value::Kind::DoubleValue(garbage)) }),
            ("size_bytes".to_string(), int(1 << 30)),
        ]
        .into(),
        observed_at: Some(proto::now()),
    }
}

fn activity(source: pb::ActivitySource, stage: &str, message: &str) -> pb::ActivityEvent {
    pb::ActivityEvent {
        source: source as i32,
        stage: stage.into(),
        message: message.into(),
        created_at: Some(proto::now()),
        ..Default::default()
    }
}

/// Runs the worker: hello, then heartbeats every [`CADENCE`] and answers the admin as the
/// Go worker does. Returns the heartbeat counter and what it saw.
async fn vacuum_worker(admin: &TestAdmin) -> (Arc<AtomicUsize>, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let (tx, mut inbound) = open_stream(admin.grpc, None).await.expect("stream");
    let hello = pb::WorkerHello {
        worker_id: ID.into(),
        worker_instance_id: format!("{ID}-a"),
        address: "10.0.0.7:0".into(),
        worker_version: "go-like".into(),
        protocol_version: proto::PROTOCOL_VERSION.into(),
        capabilities: vec![pb::JobTypeCapability {
            job_type: T.into(),
            can_detect: true,
            can_execute: true,
            max_detection_concurrency: 1,
            max_execution_concurrency: 2,
            display_name: "Vacuum".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    tx.send(envelope(ID, Body::Hello(hello))).await.unwrap();
    let first = tests::within("the admin's hello", WAIT, inbound.message()).await.unwrap().unwrap();
    let Some(AdminBody::Hello(admin_hello)) = first.body else { panic!("expected the admin's hello: {first:?}") };
    assert_eq!(admin_hello.heartbeat_interval_seconds, 1, "the admin advertises 1 s; the worker keeps 3 s");
    tx.send(envelope(
        ID,
        Body::Observations(pb::WorkerObservations {
            job_type: T.into(),
            observations: vec![volume("7", 0.42), volume("9", 0.05)],
        }),
    ))
    .await
    .unwrap();

    let beats = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (beats_in, seen_in) = (beats.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let send = |body: Body| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(envelope(ID, body)).await;
            }
        };
        // The first beat one whole cadence after the hello, as the Go worker's ticker.
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + CADENCE, CADENCE);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    send(Body::Heartbeat(pb::WorkerHeartbeat {
                        worker_id: ID.into(),
                        execution_slots_total: 2,
                        ..Default::default()
                    }))
                    .await;
                    beats_in.fetch_add(1, Ordering::Relaxed);
                }
                msg = inbound.message() => {
                    let Ok(Some(msg)) = msg else { return };
                    let request_id = msg.request_id.clone();
                    let ack = Body::Acknowledge(pb::WorkerAcknowledge {
                        request_id: request_id.clone(),
                        accepted: true,
                        message: String::new(),
                    });
                    match msg.body {
                        Some(AdminBody::RequestConfigSchema(r)) => {
                            send(Body::ConfigSchemaResponse(pb::ConfigSchemaResponse {
                                request_id,
                                job_type: r.job_type,
                                success: true,
                                error_message: String::new(),
                                job_type_descriptor: Some(descriptor()),
                            }))
                            .await;
                        }
                        Some(AdminBody::RunDetectionRequest(r)) => {
                            let first_detection = {
                                let mut seen = seen_in.lock().unwrap();
                                seen.detections.push(r.clone());
                                seen.detections.len() == 1
                            };
                            send(ack).await;
                            send(Body::JobProgressUpdate(pb::JobProgressUpdate {
                                request_id: request_id.clone(),
                                job_type: T.into(),
                                activities: vec![activity(
                                    pb::ActivitySource::Detector,
                                    "scanning",
                                    "scanned 2 volumes on 1 master",
                                )],
                                ..Default::default()
                            }))
                            .await;
                            let proposal = pb::JobProposal {
                                proposal_id: "vacuum-7".into(),
                                dedupe_key: "volume-7".into(),
                                job_type: T.into(),
                                summary: "vacuum volume 7 (42% garbage)".into(),
                                parameters: [("volume_id".to_string(), int(7))].into(),
                                ..Default::default()
                            };
                            let proposals = if first_detection { vec![proposal] } else { Vec::new() };
                            let total = proposals.len() as i32;
                            send(Body::DetectionProposals(pb::DetectionProposals {
                                request_id: request_id.clone(),
                                job_type: T.into(),
                                proposals,
                                has_more: false,
                            }))
                            .await;
                            send(Body::DetectionComplete(pb::DetectionComplete {
                                request_id,
                                job_type: T.into(),
                                success: true,
                                total_proposals: total,
                                ..Default::default()
                            }))
                            .await;
                        }
                        Some(AdminBody::ExecuteJobRequest(r)) => {
                            let job = r.job.clone().unwrap_or_default();
                            // Go's vacuum refuses to start without a master to talk to.
                            let masters = r.cluster_context.as_ref().map(|c| c.master_grpc_addresses.clone());
                            seen_in.lock().unwrap().executions.push(r);
                            send(ack).await;
                            let Some(masters) = masters.filter(|m| !m.is_empty()) else {
                                send(Body::JobCompleted(pb::JobCompleted {
                                    request_id,
                                    job_id: job.job_id,
                                    job_type: T.into(),
                                    success: false,
                                    error_message: "no master addresses provided in cluster context".into(),
                                    ..Default::default()
                                }))
                                .await;
                                continue;
                            };
                            send(Body::JobProgressUpdate(pb::JobProgressUpdate {
                                request_id: request_id.clone(),
                                job_id: job.job_id.clone(),
                                job_type: T.into(),
                                state: pb::JobState::Running as i32,
                                progress_percent: 50.0,
                                stage: "compacting".into(),
                                activities: vec![activity(
                                    pb::ActivitySource::Executor,
                                    "compacting",
                                    &format!("compacting volume 7 through {}", masters[0]),
                                )],
                                ..Default::default()
                            }))
                            .await;
                            send(Body::JobCompleted(pb::JobCompleted {
                                request_id,
                                job_id: job.job_id,
                                job_type: T.into(),
                                success: true,
                                result: Some(pb::JobResult {
                                    output_values: [("reclaimed_bytes".to_string(), int(450 << 20))].into(),
                                    summary: "volume 7 vacuumed".into(),
                                }),
                                ..Default::default()
                            }))
                            .await;
                        }
                        Some(AdminBody::RequestObjectPreview(r)) => {
                            let rows = (0..3).map(|i| pb::PreviewRow { values: vec![format!("needle {i}"), "deleted".into()] });
                            let answer = pb::ObjectPreviewResponse {
                                success: true,
                                columns: vec!["needle".into(), "status".into()],
                                rows: rows.collect(),
                                total_rows: 3,
                                request_id,
                                ..Default::default()
                            };
                            seen_in.lock().unwrap().previews.push(r);
                            send(Body::ObjectPreviewResponse(answer)).await;
                        }
                        _ => {}
                    }
                }
            }
        }
    });
    (beats, seen, task)
}

/// The worker's entry in `GET /api/plugin/workers`, if it is listed.
async fn listed(admin: &TestAdmin) -> Option<Value> {
    let workers = admin.get("/api/plugin/workers").await;
    workers.as_array()?.iter().find(|w| w["worker_id"] == ID).cloned()
}

async fn job_type(admin: &TestAdmin) -> Option<Value> {
    let types = admin.get("/api/plugin/job-types").await;
    types.as_array()?.iter().find(|t| t["job_type"] == T).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seaweedfs_style_vacuum_worker_attaches_waits_for_an_operator_and_runs_with_its_cluster_context() {
    let dir = TempDir::new("seaweed-vacuum");
    let admin = TestAdmin::start(dir.path(), |c| {
        c.master_addresses = vec!["master-1:9333.19333".into()];
        c.filer_addresses = vec!["filer-1:8888".into()];
    })
    .await;
    let (beats, seen, task) = vacuum_worker(&admin).await;
    let first = wait_for("the worker listed", WAIT, || listed(&admin)).await;

    // Created disabled: no runtime defaults means nothing runs until an operator says so.
    let created = wait_for("the vacuum job type's descriptor", WAIT, || async {
        job_type(&admin).await.filter(|t| t["has_descriptor"] == true)
    })
    .await;
    assert_eq!(created["enabled"], false, "a descriptor without runtime defaults is created disabled: {created}");
    let (_client, page) = Client::open(&admin.http, &format!("/plugin/job-types/{T}")).await;
    assert!(page.text().contains("waits for an operator"), "the page says it waits for an operator");

    // A minute of heartbeats three advertised intervals apart: still the same session, and
    // in all that time the disabled job type was never detected on its own.
    let view = wait_for("21 heartbeats at 3 s", Duration::from_secs(120), || async {
        let view = listed(&admin).await;
        let n = beats.load(Ordering::Relaxed);
        let view = view.unwrap_or_else(|| panic!("dropped after {n} heartbeats 3 s apart"));
        assert_eq!(view["connected_at"], first["connected_at"], "the same session");
        (n >= BEATS).then_some(view)
    })
    .await;
    let observed_ms = view["heartbeat_interval_observed_ms"].as_i64().expect("an observed cadence");
    assert!((2_500..=4_500).contains(&observed_ms), "observed cadence {observed_ms} ms: {view}");
    assert!(seen.lock().unwrap().detections.is_empty(), "no detection while it waits for an operator");

    // The operator enables it and runs it: the detection and its job carry the cluster
    // context (the worker proposes volume 7 at its first detection only).
    let r = http::put_json(
        &admin.http,
        &format!("/api/plugin/job-types/{T}/config"),
        &json!({"admin_runtime": {"enabled": true, "detection_interval_minutes": 60, "execution_timeout_seconds": 60}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::post_json(&admin.http, &format!("/api/plugin/job-types/{T}/run?wait=false"), &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let jobs = admin.wait_jobs("the vacuum job done", &format!("job_type={T}"), 1, "succeeded").await;
    assert_eq!(jobs[0]["summary"], "vacuum volume 7 (42% garbage)");
    {
        let seen = seen.lock().unwrap();
        assert!(!seen.detections.is_empty() && !seen.executions.is_empty(), "a detection and an execution");
        let contexts = seen.detections.iter().map(|d| ("detection", &d.cluster_context));
        for (what, context) in contexts.chain(seen.executions.iter().map(|e| ("execution", &e.cluster_context))) {
            let context = context.as_ref().unwrap_or_else(|| panic!("the {what} has a cluster context"));
            assert_eq!(context.master_grpc_addresses, vec!["master-1:9333.19333".to_string()], "{what}");
            assert_eq!(context.filer_addresses, vec!["filer-1:8888".to_string()], "{what}");
        }
    }
    let activities = admin.get(&format!("/api/plugin/activities?job_type={T}")).await;
    let messages: Vec<&str> = activities.as_array().unwrap().iter().filter_map(|a| a["message"].as_str()).collect();
    assert!(messages.contains(&"scanned 2 volumes on 1 master"), "the detection's activity: {messages:?}");
    assert!(messages.contains(&"compacting volume 7 through master-1:9333.19333"), "{messages:?}");

    // Its observations are served, and a preview of one of its volumes comes from it.
    let observed = admin.get(&format!("/api/plugin/observations?job_type={T}")).await;
    let observed = observed.as_array().expect("a bare array");
    assert_eq!(observed.len(), 2, "{observed:?}");
    let seven = observed.iter().find(|o| o["object_id"] == json!(["volumes", "7"])).expect("volume 7");
    assert_eq!((seven["worker_id"].as_str(), seven["object_kind"].as_str()), (Some(ID), Some("volume")));
    let r = http::post_json(
        &admin.http,
        &format!("/api/plugin/job-types/{T}/preview"),
        &json!({"object_id": "volumes/7", "format": "seaweedfs"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let preview = r.json();
    assert_eq!(preview["columns"], json!(["needle", "status"]));
    assert_eq!(preview["rows"].as_array().map(Vec::len), Some(3), "{preview}");
    assert_eq!(seen.lock().unwrap().previews[0].object_id, vec!["volumes".to_string(), "7".to_string()]);

    task.abort();
    admin.stop().await;
}
