//! The admin's metrics as an operator scrapes them: `/metrics` is well-formed Prometheus
//! text whose series carry the job type, the worker and the command's outcome, and
//! `GET /api/plugin/metrics` is the same metrics as JSON. Real jobs of a real job type run
//! through a real SDK worker over gRPC.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::Value;
use tests::{
    TempDir,
    harness::TestAdmin,
    http,
    plugins::{Echo, PluginWorker},
    prometheus::{self, Exposition},
    wait_for,
};

const JOB_TYPE: &str = "metrics_echo";
const WORKER: &str = "metrics-w1";
const JOBS: usize = 3;
const WAIT: Duration = Duration::from_secs(30);

async fn scrape(admin: &TestAdmin) -> (String, Exposition) {
    let r = http::get(&admin.http, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let parsed = prometheus::parse(&text);
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_job_type_worker_and_command_labels_and_the_json_snapshot_matches_the_text() {
    let dir = TempDir::new("metrics");
    let admin = TestAdmin::start(dir.path(), |_| {}).await;
    let work = TempDir::new("metrics-worker");
    let worker = PluginWorker::start(
        admin.grpc,
        WORKER,
        work.path(),
        vec![Arc::new(Echo { job_type: JOB_TYPE, jobs: JOBS, slots: 2 })],
    );
    // The first detection runs as soon as the worker offers the job type.
    admin.wait_jobs("the echo jobs succeed", &format!("job_type={JOB_TYPE}"), JOBS, "succeeded").await;

    // Commands: a pause and a resume carried out, a cancel of no job refused.
    for paused in [true, false] {
        let r = http::post_json(&admin.http, &format!("/api/plugin/dispatch?paused={paused}"), &Value::Null).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = http::post_json(&admin.http, "/api/plugin/jobs/j999999/cancel", &Value::Null).await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The slot gauges follow the worker's heartbeats: wait for one that reports its slots.
    let (text, m) = wait_for("the worker's slots in the metrics", WAIT, || async {
        let (text, m) = scrape(&admin).await;
        let slots = m.value("plughost_worker_slots", &[("kind", "execution"), ("worker_id", WORKER)]);
        (slots == Some(2.0)).then_some((text, m))
    })
    .await;

    let t = [("job_type", JOB_TYPE)];
    let n = JOBS as f64;
    assert_eq!(m.value("plughost_jobs_created_total", &t), Some(n), "{text}");
    assert_eq!(m.value("plughost_jobs_succeeded_total", &t), Some(n), "{text}");
    assert_eq!(m.value("plughost_attempts_started_total", &t), Some(n), "{text}");
    for zero in ["plughost_attempts_failed_total", "plughost_retries_total", "plughost_requeues_capacity_total"] {
        assert_eq!(m.value(zero, &t), Some(0.0), "{zero}: {text}");
    }
    for histogram in ["plughost_dispatch_latency_seconds", "plughost_job_run_duration_seconds"] {
        assert_eq!(m.families[histogram].kind, "histogram");
        assert_eq!(m.value(&format!("{histogram}_count"), &t), Some(n), "{histogram}: {text}");
        assert_eq!(m.value(&format!("{histogram}_bucket"), &[t[0], ("le", "+Inf")]), Some(n), "{text}");
        assert!(m.value(&format!("{histogram}_sum"), &t).is_some_and(|s| s >= 0.0));
    }
    assert_eq!(m.value("plughost_worker_slots", &[("kind", "detection"), ("worker_id", WORKER)]), Some(1.0), "{text}");
    assert_eq!(m.matching("plughost_worker_slots_used", &[("worker_id", WORKER)]).len(), 2, "{text}");
    assert_eq!(m.value("plughost_workers_connected", &[]), Some(1.0));
    assert_eq!(m.value("plughost_jobs", &[t[0], ("state", "succeeded")]), Some(n), "{text}");

    let command = |outcome| [("action", "pause_dispatch"), ("outcome", outcome)];
    assert_eq!(m.value("plughost_admin_commands_total", &command("ok")), Some(2.0), "{text}");
    assert_eq!(
        m.value("plughost_admin_commands_total", &[("action", "cancel_job"), ("outcome", "not_found")]),
        Some(1.0),
        "{text}"
    );

    let build = m.matching("plughost_build_info", &[("version", env!("CARGO_PKG_VERSION"))]);
    assert_eq!(build.len(), 1, "{text}");
    assert_eq!(build[0].value, 1.0);
    let commit = &build[0].labels["commit"];
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");

    // The store's counters: each job was written at least twice (created, then finished,
    // in separate batches since a job is durable before it is dispatched), and coalescing
    // only ever folds operations together.
    let store = |name| m.value(name, &[]).unwrap_or_else(|| panic!("{name} missing: {text}"));
    let (batches, operations, writes) = (
        store("plughost_store_batches_total"),
        store("plughost_store_operations_total"),
        store("plughost_store_writes_total"),
    );
    assert!(batches >= 2.0 && operations >= writes && writes >= 2.0 * n, "{batches} {operations} {writes}: {text}");

    // The JSON snapshot: the same families with the same type and help, the same series,
    // and the same values for everything that no longer moves (heartbeats go on).
    let json = admin.get("/api/plugin/metrics").await;
    let families = json["metrics"].as_array().expect("metrics");
    let (_, m) = scrape(&admin).await;
    assert_eq!(families.len(), m.families.len(), "{json}");
    for f in families {
        let name = f["name"].as_str().unwrap();
        let declared = &m.families[name];
        assert_eq!(f["type"], declared.kind.as_str(), "{name}");
        assert_eq!(f["help"], declared.help.as_str(), "{name}");
        for s in f["samples"].as_array().unwrap() {
            let pairs: BTreeMap<String, String> = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (text_name, json_value) = if f["type"] == "histogram" {
                (format!("{name}_count"), s["count"].as_f64())
            } else {
                (name.to_string(), s["value"].as_f64())
            };
            let text_value = m.value(&text_name, &pairs);
            assert!(text_value.is_some(), "{text_name}{pairs:?} is in the JSON but not in the text");
            let moves = [
                "plughost_heartbeats_total",
                "plughost_worker_slots_used",
                "plughost_store_batches_total",
                "plughost_store_operations_total",
                "plughost_store_writes_total",
            ]
            .contains(&name);
            if !moves {
                assert_eq!(json_value, text_value, "{text_name}{pairs:?}");
            }
        }
    }
    let job_type_series = families
        .iter()
        .find(|f| f["name"] == "plughost_jobs_succeeded_total")
        .and_then(|f| f["samples"].as_array())
        .unwrap();
    assert_eq!(job_type_series[0]["labels"]["job_type"], JOB_TYPE);
    // And nothing in the text that the JSON lacks: one JSON sample per series.
    let series_in_text = m
        .samples
        .iter()
        .filter(|s| {
            m.families.contains_key(&s.name)
                || s.name
                    .strip_suffix("_count")
                    .is_some_and(|f| m.families.get(f).is_some_and(|f| f.kind == "histogram"))
        })
        .count();
    let series_in_json: usize = families.iter().map(|f| f["samples"].as_array().unwrap().len()).sum();
    assert_eq!(series_in_text, series_in_json);

    worker.stop().await;
    admin.stop().await;
}
