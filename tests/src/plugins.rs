//! Helpers for the bundled plugins' tests: real SQLite files (fragmented or not), a
//! real SDK worker running plugin handlers against a test admin, a small job type of
//! its own ([`Echo`]), and the job-type API calls those tests share (configure, run, read
//! a job's detail).

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use worker_sdk::prelude::*;

use crate::{harness::TestAdmin, http, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A job type whose detection proposes `jobs` jobs (dedupe keys `echo-0`, `echo-1`, ...)
/// and whose jobs succeed at once; `slots` execution slots, one detection slot.
pub struct Echo {
    pub job_type: &'static str,
    pub jobs: usize,
    pub slots: u32,
}

#[worker_sdk::async_trait]
impl JobHandler for Echo {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(self.job_type, "Echo").detect(1).execute(self.slots)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new(self.job_type, "Echo").build()
    }

    async fn detect(
        &self,
        _r: pb::RunDetectionRequest,
        out: DetectionSender,
        _c: CancellationToken,
    ) -> HandlerResult<()> {
        let proposals = (0..self.jobs)
            .map(|i| pb::JobProposal {
                dedupe_key: format!("echo-{i}"),
                summary: format!("echo {i}"),
                ..Default::default()
            })
            .collect();
        out.send(proposals).await?;
        Ok(())
    }

    async fn execute(
        &self,
        _r: pb::ExecuteJobRequest,
        p: ProgressSender,
        _c: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        p.progress(100.0, "done", "echoed").await;
        Ok(pb::JobResult { summary: "echoed".into(), ..Default::default() })
    }
}

/// Creates an SQLite database at `path` with `kept` rows that stay and `dropped` rows
/// in a table that is then dropped, so that its pages end up on the free list.
pub fn fragmented_database(path: &Path, kept: usize, dropped: usize) {
    let mut conn = rusqlite::Connection::open(path).expect("create database");
    conn.execute_batch(
        "CREATE TABLE kept(id INTEGER PRIMARY KEY, body TEXT); CREATE TABLE dropped(id INTEGER PRIMARY KEY, body TEXT);",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..kept.max(dropped) {
        if i < kept {
            tx.execute("INSERT INTO kept(body) VALUES (?1)", [format!("{i:0>300}")]).unwrap();
        }
        if i < dropped {
            tx.execute("INSERT INTO dropped(body) VALUES (?1)", [format!("{i:0>300}")]).unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("DROP TABLE dropped;").unwrap();
}

/// (page_count, freelist_count) of a database.
pub fn page_counts(path: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let pages = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let free = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    (pages, free)
}

/// A real SDK worker with the given handlers, dialing a test admin; stopped on drop.
pub struct PluginWorker {
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), worker_sdk::Error>>>,
}

impl PluginWorker {
    pub fn start(grpc: SocketAddr, worker_id: &str, working_dir: &Path, handlers: Vec<Arc<dyn JobHandler>>) -> Self {
        let mut config = WorkerConfig::new(format!("grpc://{grpc}"), working_dir);
        config.worker_id = Some(worker_id.to_string());
        config.shutdown_grace = Duration::from_secs(2);
        let worker = handlers.into_iter().fold(Worker::new(config), Worker::handler_arc);
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        PluginWorker { stop, task: Some(task) }
    }

    /// Stops the worker and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = crate::within("worker stops", WAIT, task).await;
        }
    }
}

impl Drop for PluginWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until the admin has stored `job_type`'s descriptor, and returns it.
pub async fn wait_descriptor(admin: &TestAdmin, job_type: &str) -> Value {
    let path = format!("/api/plugin/job-types/{job_type}/descriptor");
    wait_for(&format!("the {job_type} descriptor"), WAIT, || async {
        let r = http::get(&admin.http, &path).await;
        (r.status == 200).then(|| r.json())
    })
    .await
}

/// Saves `values` (proto JSON config values) for `job_type` over its saved ones (the
/// descriptor's defaults at first).
pub async fn configure(admin: &TestAdmin, job_type: &str, values: Value) -> Value {
    let path = format!("/api/plugin/job-types/{job_type}/config");
    let mut merged = admin.get(&path).await["admin_config_values"].clone();
    if !merged.is_object() {
        merged = json!({});
    }
    merged.as_object_mut().unwrap().extend(values.as_object().expect("values are a JSON object").clone());
    let r = http::put_json(&admin.http, &path, &json!({ "admin_config_values": merged })).await;
    assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
    r.json()
}

/// Starts a detection whose proposals become jobs.
pub async fn run(admin: &TestAdmin, job_type: &str) {
    let path = format!("/api/plugin/job-types/{job_type}/run?wait=false");
    // Right after attaching, the scheduler's first detection may still be running; the
    // request is then queued behind it.
    let r = http::post_json(&admin.http, &path, &json!({})).await;
    assert_eq!(r.status, 202, "POST {path}: {}", r.text());
}

/// Waits for the number of detection runs of `job_type` that succeeded to reach `n`.
pub async fn wait_detections(admin: &TestAdmin, job_type: &str, n: usize) {
    wait_for(&format!("{n} detections of {job_type}"), WAIT, || async {
        let runs = admin.get(&format!("/api/plugin/job-types/{job_type}/runs")).await;
        let done = runs["successes"].as_array().map_or(0, |r| r.iter().filter(|r| r["kind"] == "detection").count());
        (done >= n).then_some(())
    })
    .await
}

/// A job's detail: `job`, `spec`, `result` (proto JSON), `attempts`, `activities`.
pub async fn detail(admin: &TestAdmin, job_id: &str) -> Value {
    admin.get(&format!("/api/plugin/jobs/{job_id}/detail")).await
}

/// An int64 output value from proto JSON (where int64s are strings).
pub fn int_output(result: &Value, name: &str) -> i64 {
    let v = &result["output_values"][name]["int64_value"];
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("no {name} in {result}"))
}

/// Proto JSON for a list of strings.
pub fn string_list(values: &[&str]) -> Value {
    json!({ "string_list": { "values": values } })
}

/// Proto JSON for a string.
pub fn string(value: &str) -> Value {
    json!({ "string_value": value })
}

/// Proto JSON for an int64.
pub fn int(value: i64) -> Value {
    json!({ "int64_value": value.to_string() })
}

/// Proto JSON for a double.
pub fn double(value: f64) -> Value {
    json!({ "double_value": value })
}

/// Proto JSON for a duration in seconds.
pub fn seconds(value: u64) -> Value {
    json!({ "duration_value": format!("{value}s") })
}

/// Proto JSON for an object of strings.
pub fn string_map(entries: &[(&str, &str)]) -> Value {
    let fields: serde_json::Map<String, Value> = entries.iter().map(|(k, v)| (k.to_string(), string(v))).collect();
    json!({ "map_value": { "fields": fields } })
}
