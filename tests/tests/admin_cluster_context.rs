//! The cluster context (master, filer, volume addresses and metadata) that SeaweedFS's job
//! types need: from the `--master`/`--filer` flags, from a context file that is re-read
//! when it changes and on SIGHUP, and from the body of a detect or run request for that
//! one detection. A real admin, fake workers over real gRPC; what the workers received is
//! what is checked.

use std::{collections::HashMap, path::Path, time::Duration};

use proto::pb;
use serde_json::{Value, json};
use tests::{
    TempDir,
    fake_worker::{FakeWorker, FakeWorkerSpec, proposal},
    harness::{AdminProcess, TestAdmin, data_dir, free_port},
    http, wait_for,
};

const T: &str = "ctx_job";
const WAIT: Duration = Duration::from_secs(30);

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A worker for `T` that proposes `n` new jobs in each detection (keys unique per
/// detection, so every run creates jobs).
fn proposing(worker_id: &str, n: usize) -> FakeWorkerSpec {
    FakeWorkerSpec::new(worker_id, T, 4)
        .detect(move |r| vec![(0..n).map(|i| proposal(&format!("d{}-{i}", r.detection_sequence))).collect()])
}

async fn wait_descriptor(http: &str) {
    wait_for("the descriptor is stored", WAIT, || async {
        (http::get(http, &format!("/api/plugin/job-types/{T}/descriptor")).await.status == 200).then_some(())
    })
    .await;
}

async fn post(http: &str, action: &str, body: &str) -> http::Response {
    let path = format!("/api/plugin/job-types/{T}/{action}");
    http::request(http, "POST", &path, &[("content-type", "application/json")], body.as_bytes().to_vec()).await
}

/// Posts a detect or run and returns the detection request the worker got for it.
async fn detect_via_api(http: &str, worker: &FakeWorker, action: &str, body: &str) -> pb::RunDetectionRequest {
    let before = worker.inbox.detections().len();
    let r = post(http, &format!("{action}?wait=false"), body).await;
    assert_eq!(r.status, 202, "{action} {body}: {}", r.text());
    wait_for("the worker gets the detection request", WAIT, || async { worker.inbox.detections().get(before).cloned() })
        .await
}

/// Waits until the detection's run is over (its jobs, if any, are created by then).
async fn wait_run_done(http: &str) {
    wait_for("the detection finishes", WAIT, || async {
        let states = http::get(http, "/api/plugin/scheduler-states").await.json();
        let running = states
            .as_array()
            .or_else(|| states.as_array())
            .and_then(|a| a.iter().find(|s| s["job_type"] == T).map(|s| s["detection_running"] == true));
        (running == Some(false)).then_some(())
    })
    .await;
}

/// Waits for `n` executions in all, and returns them.
async fn executions(worker: &FakeWorker, n: usize) -> Vec<pb::ExecuteJobRequest> {
    wait_for(&format!("{n} executions"), WAIT, || async {
        let e = worker.inbox.executions();
        (e.len() >= n).then_some(e)
    })
    .await
}

fn context_of(c: &Option<pb::ClusterContext>) -> &pb::ClusterContext {
    c.as_ref().expect("the request carries a cluster context")
}

/// Writes `text` to `path` with the given modification time, atomically (a rename), so a
/// poller sees either the old file or the new one whole.
fn replace_file(path: &Path, text: &str, mtime: std::time::SystemTime) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status(http: &str) -> Value {
    let r = http::get(http, "/api/plugin/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_detection_and_execution_carries_the_master_and_filer_addresses_of_the_flags() {
    let dir = TempDir::new("ctx-flags");
    let admin = TestAdmin::start(dir.path(), |c| {
        c.master_addresses = strings(&["m1:9333.19333", "m2:9333"]);
        c.filer_addresses = strings(&["f1:8888"]);
        c.cluster_metadata = HashMap::from([("cluster".to_string(), "test".to_string())]);
    })
    .await;
    let worker = FakeWorker::start(admin.grpc, proposing("w1", 2)).await;
    wait_descriptor(&admin.http).await;
    // The first (scheduled) detection, then one on demand with no body.
    wait_for("the scheduled detection", WAIT, || async { worker.inbox.detections().first().cloned() }).await;
    executions(&worker, 2).await;
    wait_run_done(&admin.http).await;
    detect_via_api(&admin.http, &worker, "run", "").await;
    let executed = executions(&worker, 4).await;
    let detections = worker.inbox.detections();
    assert_eq!(detections.len(), 2);

    let expected = pb::ClusterContext {
        master_grpc_addresses: strings(&["m1:9333.19333", "m2:9333"]),
        filer_addresses: strings(&["f1:8888"]),
        metadata: HashMap::from([("cluster".to_string(), "test".to_string())]),
        ..Default::default()
    };
    for d in &detections {
        assert_eq!(context_of(&d.cluster_context), &expected, "detection {}", d.request_id);
    }
    for e in &executed {
        assert_eq!(context_of(&e.cluster_context), &expected, "execution {}", e.request_id);
    }
    assert_eq!(
        status(&admin.http).await["cluster_context"]["master_grpc_addresses"],
        json!(["m1:9333.19333", "m2:9333"])
    );
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_context_file_reaches_the_next_requests_and_a_broken_one_keeps_the_last_good() {
    let dir = TempDir::new("ctx-file");
    let file = dir.path().join("cluster.json");
    std::fs::write(
        &file,
        r#"{"master_grpc_addresses": ["a-m:9333"], "volume_grpc_addresses": ["a-v:8080"], "metadata": {"gen": "a"}}"#,
    )
    .unwrap();
    let admin = TestAdmin::start(dir.path(), |c| {
        c.master_addresses = strings(&["flag-m:9333"]);
        c.filer_addresses = strings(&["flag-f:8888"]);
        c.cluster_context_file = Some(file.clone());
        c.cluster_context_poll = Duration::from_millis(50);
    })
    .await;
    let worker = FakeWorker::start(admin.grpc, proposing("w1", 1)).await;
    wait_descriptor(&admin.http).await;
    let first =
        wait_for("the scheduled detection", WAIT, || async { worker.inbox.detections().first().cloned() }).await;
    let c = context_of(&first.cluster_context);
    assert_eq!(c.master_grpc_addresses, strings(&["a-m:9333"]), "the file's list wins");
    assert_eq!(c.filer_addresses, strings(&["flag-f:8888"]), "the flags fill what the file leaves empty");
    assert_eq!(c.volume_grpc_addresses, strings(&["a-v:8080"]));
    assert_eq!(c.metadata.get("gen").map(String::as_str), Some("a"));
    let executed = executions(&worker, 1).await;
    assert_eq!(context_of(&executed[0].cluster_context), c);
    wait_run_done(&admin.http).await;

    std::fs::write(&file, r#"{"master_grpc_addresses": ["b-m:9333"], "filer_addresses": ["b-f:8888"]}"#).unwrap();
    wait_for("the admin reads the rewritten file", WAIT, || async {
        let s = status(&admin.http).await;
        (s["cluster_context"]["master_grpc_addresses"] == json!(["b-m:9333"])).then_some(())
    })
    .await;
    let second = detect_via_api(&admin.http, &worker, "run", "").await;
    let expected = pb::ClusterContext {
        master_grpc_addresses: strings(&["b-m:9333"]),
        filer_addresses: strings(&["b-f:8888"]),
        ..Default::default()
    };
    assert_eq!(context_of(&second.cluster_context), &expected);
    let executed = executions(&worker, 2).await;
    assert_eq!(context_of(&executed[1].cluster_context), &expected);
    wait_run_done(&admin.http).await;

    std::fs::write(&file, r#"{"master_grpc_addresses": ["c-m:9333"], "#).unwrap();
    let error = wait_for("the admin reports the broken file", WAIT, || async {
        status(&admin.http).await["cluster_context_error"].as_str().map(str::to_string)
    })
    .await;
    assert!(error.contains(&file.display().to_string()) && error.contains("not a ClusterContext"), "{error}");
    let third = detect_via_api(&admin.http, &worker, "run", "").await;
    assert_eq!(context_of(&third.cluster_context), &expected, "the last good context stays");
    let executed = executions(&worker, 3).await;
    assert_eq!(context_of(&executed[2].cluster_context), &expected);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detect_or_run_body_sets_the_context_max_results_and_timeout_of_that_detection_only() {
    let dir = TempDir::new("ctx-body");
    let admin = TestAdmin::start(dir.path(), |c| {
        c.master_addresses = strings(&["flag-m:9333"]);
        c.filer_addresses = strings(&["flag-f:8888"]);
        c.cluster_metadata = HashMap::from([("cluster".to_string(), "test".to_string())]);
        c.limits.max_proposals_per_detection = 5;
    })
    .await;
    let worker = FakeWorker::start(admin.grpc, proposing("w1", 8)).await;
    wait_descriptor(&admin.http).await;
    let first =
        wait_for("the scheduled detection", WAIT, || async { worker.inbox.detections().first().cloned() }).await;
    assert_eq!(first.max_results, 5, "the job type asks for 1000; the admin's ceiling is 5");
    wait_run_done(&admin.http).await;
    let admin_context = context_of(&first.cluster_context).clone();

    let body = json!({
        "cluster_context": {"master_grpc_addresses": ["body-m:9333"], "metadata": {"run": "one"}},
        "max_results": 3,
        "timeout_seconds": 7,
    });
    let preview = detect_via_api(&admin.http, &worker, "detect", &body.to_string()).await;
    let c = context_of(&preview.cluster_context);
    assert_eq!(c.master_grpc_addresses, strings(&["body-m:9333"]), "the body's list wins");
    assert_eq!(c.filer_addresses, strings(&["flag-f:8888"]), "the admin's fills the rest");
    assert_eq!(c.metadata, HashMap::from([("cluster".into(), "test".into()), ("run".into(), "one".into())]));
    assert_eq!(preview.max_results, 3);
    assert_eq!(preview.admin_runtime.unwrap().detection_timeout_seconds, 7);
    wait_run_done(&admin.http).await;

    // A run asking for more than the ceiling gets the ceiling; one asking for 2 creates 2
    // jobs although the worker proposes 8.
    let capped = detect_via_api(&admin.http, &worker, "run", r#"{"max_results": 50}"#).await;
    assert_eq!(capped.max_results, 5);
    assert_eq!(context_of(&capped.cluster_context), &admin_context, "the body's context was for its detection only");
    wait_run_done(&admin.http).await;
    let jobs_before = admin.jobs(&format!("job_type={T}&limit=500")).await.len();
    let two = detect_via_api(
        &admin.http,
        &worker,
        "run",
        r#"{"cluster_context": {"filer_grpc_addresses": ["old-name-f:8888"]}, "max_results": 2, "attempt": 1}"#,
    )
    .await;
    assert_eq!(two.max_results, 2);
    assert_eq!(context_of(&two.cluster_context).filer_addresses, strings(&["old-name-f:8888"]));
    wait_run_done(&admin.http).await;
    assert_eq!(admin.jobs(&format!("job_type={T}&limit=500")).await.len(), jobs_before + 2);
    // The run's jobs execute with its context too, laid over the admin's.
    let executed = wait_for("the run's two jobs executed", WAIT, || async {
        let mine: Vec<pb::ExecuteJobRequest> = worker
            .inbox
            .executions()
            .into_iter()
            .filter(|e| {
                e.job.as_ref().is_some_and(|j| j.dedupe_key.starts_with(&format!("d{}-", two.detection_sequence)))
            })
            .collect();
        (mine.len() == 2).then_some(mine)
    })
    .await;
    for e in &executed {
        let c = context_of(&e.cluster_context);
        assert_eq!(c.filer_addresses, strings(&["old-name-f:8888"]), "execution {}", e.request_id);
        assert_eq!(c.master_grpc_addresses, strings(&["flag-m:9333"]), "the admin's fills the rest");
    }

    let plain = detect_via_api(&admin.http, &worker, "run", "").await;
    assert_eq!(plain.max_results, 5);
    assert_eq!(plain.admin_runtime.unwrap().detection_timeout_seconds, 30, "the job type's own timeout");
    assert_eq!(context_of(&plain.cluster_context), &admin_context);
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_timeout_ends_a_hanging_detection_at_that_timeout() {
    let dir = TempDir::new("ctx-timeout");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let mut spec = FakeWorkerSpec::new("w1", T, 1);
    spec.detect_hangs = true;
    // Disabled: no scheduled detection, only the ones asked for here.
    let descriptor = spec.descriptors.get_mut(T).unwrap();
    descriptor.admin_runtime_defaults.as_mut().unwrap().enabled = false;
    let worker = FakeWorker::start(admin.grpc, spec).await;
    wait_descriptor(&admin.http).await;
    let short = detect_via_api(&admin.http, &worker, "detect", r#"{"timeout_seconds": 1}"#).await;
    assert_eq!(short.admin_runtime.unwrap().detection_timeout_seconds, 1);
    let is_cancel_of = |id: String| move |m: &pb::AdminToWorkerMessage| matches!(&m.body, Some(pb::admin_to_worker_message::Body::CancelRequest(c)) if c.target_id == id);
    // The job type's own timeout is 30 s; this one ends in about 1.
    worker
        .inbox
        .wait_for("the 1 s detection is canceled", Duration::from_secs(10), is_cancel_of(short.request_id))
        .await;
    wait_for("the timed-out run is recorded", WAIT, || async {
        let runs = http::get(&admin.http, &format!("/api/plugin/job-types/{T}/runs")).await.json();
        let errors = runs["errors"].as_array().cloned().unwrap_or_default();
        errors.iter().any(|r| r["message"] == "detection timed out after 1 s").then_some(())
    })
    .await;
    let plain = detect_via_api(&admin.http, &worker, "detect", "").await;
    assert_eq!(plain.admin_runtime.unwrap().detection_timeout_seconds, 30, "the next one has the job type's own");
    let over = post(&admin.http, "detect?wait=false", r#"{"timeout_seconds": 100000}"#).await;
    assert_eq!(over.status, 202, "{}", over.text());
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_detect_and_run_bodies_are_refused_with_a_clear_error_and_start_nothing() {
    let dir = TempDir::new("ctx-bad-body");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let worker = FakeWorker::start(admin.grpc, proposing("w1", 0)).await;
    wait_descriptor(&admin.http).await;
    wait_for("the scheduled detection", WAIT, || async { worker.inbox.detections().first().cloned() }).await;
    wait_run_done(&admin.http).await;
    let cases = [
        ("not json", 400, "invalid request body"),
        (r#"{"max_results": "three"}"#, 400, "invalid request body"),
        (r#"{"max_result": 3}"#, 400, "unknown field `max_result`"),
        (r#"[1, 2]"#, 400, "invalid request body"),
        (r#"{"cluster_context": {"masters": ["m:9333"]}}"#, 400, "cluster_context is not a ClusterContext"),
        (r#"{"cluster_context": ["m:9333"]}"#, 400, "cluster_context is not a ClusterContext"),
        (r#"{"max_results": -1}"#, 422, "max_results is -1"),
        (r#"{"timeout_seconds": -5}"#, 422, "timeout_seconds is -5"),
    ];
    for action in ["detect", "run"] {
        for (body, status, says) in cases {
            let r = post(&admin.http, action, body).await;
            assert_eq!(r.status, status, "{action} {body}: {}", r.text());
            let error = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(error.contains(says), "{action} {body}: {error}");
        }
    }
    // Nothing was started: the next detection is the next request the worker gets.
    detect_via_api(&admin.http, &worker, "detect", "").await;
    wait_run_done(&admin.http).await;
    assert_eq!(worker.inbox.detections().len(), 2, "the refused bodies started no detection");
    for body in ["  ", "null", "{}", r#"{"max_results": 0, "timeout_seconds": 0, "cluster_context": null}"#] {
        let r = post(&admin.http, "detect?wait=false", body).await;
        assert_eq!(r.status, 202, "{body:?} keeps today's behaviour: {}", r.text());
    }
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_admin_process_takes_the_flags_and_rereads_the_file_on_sighup() {
    let bin = Path::new(env!("CARGO_BIN_EXE_plughost-under-test"));
    let (_dir, data) = data_dir("ctx-process");
    let file = data.join("cluster.json");
    std::fs::write(&file, r#"{"volume_grpc_addresses": ["a-v:8080"], "metadata": {"gen": "a"}}"#).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let file_arg = file.display().to_string();
    let extra = ["--master", "p-m1:9333,p-m2:9333.19333", "--filer", "p-f:8888", "--cluster-context-file", &file_arg];
    let admin = AdminProcess::spawn_with(bin, &data, http_port, grpc_port, &extra).await;
    let worker = FakeWorker::start(admin.grpc, proposing("w1", 1)).await;
    wait_descriptor(&admin.http).await;
    let first =
        wait_for("the scheduled detection", WAIT, || async { worker.inbox.detections().first().cloned() }).await;
    let expected_a = pb::ClusterContext {
        master_grpc_addresses: strings(&["p-m1:9333", "p-m2:9333.19333"]),
        filer_addresses: strings(&["p-f:8888"]),
        volume_grpc_addresses: strings(&["a-v:8080"]),
        metadata: HashMap::from([("gen".to_string(), "a".to_string())]),
        ..Default::default()
    };
    assert_eq!(context_of(&first.cluster_context), &expected_a);
    let executed = executions(&worker, 1).await;
    assert_eq!(context_of(&executed[0].cluster_context), &expected_a);
    wait_run_done(&admin.http).await;

    // The same length and modification time: the poll cannot tell; only SIGHUP reloads.
    replace_file(&file, r#"{"volume_grpc_addresses": ["b-v:8080"], "metadata": {"gen": "b"}}"#, mtime);
    let pid = rustix::process::Pid::from_child(&admin.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    wait_for("the admin rereads the file on SIGHUP", WAIT, || async {
        let s = status(&admin.http).await;
        (s["cluster_context"]["volume_grpc_addresses"] == json!(["b-v:8080"])).then_some(())
    })
    .await;
    let second = detect_via_api(&admin.http, &worker, "run", "").await;
    let expected_b = pb::ClusterContext {
        volume_grpc_addresses: strings(&["b-v:8080"]),
        metadata: HashMap::from([("gen".to_string(), "b".to_string())]),
        ..expected_a
    };
    assert_eq!(context_of(&second.cluster_context), &expected_b);
    let executed = executions(&worker, 2).await;
    assert_eq!(context_of(&executed[1].cluster_context), &expected_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_context_file_is_a_clear_start_error() {
    let bin = env!("CARGO_BIN_EXE_plughost-under-test");
    let (_dir, data) = data_dir("ctx-start-error");
    let file = data.join("cluster.json");
    std::fs::write(&file, r#"{"master_grpc_addresses": "m:9333"}"#).unwrap();
    let out = tokio::process::Command::new(bin)
        .args(["admin", "--data-dir"])
        .arg(&data)
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--cluster-context-file")
        .arg(&file)
        .kill_on_drop(true)
        .output();
    let out = tests::within("the admin refuses to start", WAIT, out).await.expect("run plughost");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the cluster context file {} is not a ClusterContext", file.display())),
        "{stderr}"
    );
}
