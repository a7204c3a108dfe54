//! Crash safety: a real `plughost admin` process is killed with SIGKILL in the middle of a
//! run and restarted on the same data dir; a real SDK worker reconnects by itself, and
//! every job still ends SUCCEEDED exactly once.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tests::{
    harness::{AdminProcess, data_dir, free_port},
    http, wait_for,
};
use worker_sdk::prelude::*;

const JOBS: usize = 30;

/// Proposes JOBS jobs in its first detection only (like a detector that looks at real
/// state, it does not propose finished work again), and takes a moment per job.
struct Batch {
    proposed: AtomicBool,
    executions: Arc<AtomicUsize>,
}

#[worker_sdk::async_trait]
impl JobHandler for Batch {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("batch", "Batch").detect(1).execute(2)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("batch", "Batch").runtime(Runtime::default().interval_minutes(600).retry_limit(0)).build()
    }

    async fn detect(
        &self,
        _r: pb::RunDetectionRequest,
        out: DetectionSender,
        _c: CancellationToken,
    ) -> HandlerResult<()> {
        if self.proposed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let proposals = (0..JOBS)
            .map(|i| pb::JobProposal {
                dedupe_key: format!("item-{i}"),
                summary: format!("item {i}"),
                ..Default::default()
            })
            .collect();
        out.send(proposals).await?;
        Ok(())
    }

    async fn execute(
        &self,
        _r: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        progress.progress(50.0, "working", "").await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(150)) => {}
            _ = cancel.cancelled() => return Err("canceled".into()),
        }
        Ok(pb::JobResult { summary: "ok".into(), ..Default::default() })
    }
}

async fn jobs(http_addr: &str) -> Vec<serde_json::Value> {
    let r = http::get(http_addr, "/api/plugin/jobs?limit=1000").await;
    assert_eq!(r.status, 200);
    r.json().as_array().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_killed_mid_run_and_restarted_loses_no_job_and_finishes_them_all() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_plughost-under-test"));
    let (_dir, data) = data_dir("restart");
    let (http_port, grpc_port) = (free_port(), free_port());
    let mut admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;

    let work = tests::TempDir::new("restart-worker");
    let executions = Arc::new(AtomicUsize::new(0));
    let mut config = WorkerConfig::new(format!("http://{}", admin.http), work.path());
    config.max_reconnect_delay = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let worker =
        Worker::new(config).handler(Batch { proposed: AtomicBool::new(false), executions: executions.clone() });
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));

    // Kill it once some jobs are done and the rest are still waiting or running.
    wait_for("a few jobs done", Duration::from_secs(60), || async {
        let j = jobs(&admin.http).await;
        let done = j.iter().filter(|j| j["state"] == "job_state_succeeded").count();
        (j.len() == JOBS && (3..JOBS - 5).contains(&done)).then_some(())
    })
    .await;
    admin.kill();
    let admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;

    let finished = wait_for("every job finished after the restart", Duration::from_secs(90), || async {
        let j = jobs(&admin.http).await;
        (j.len() == JOBS && j.iter().all(|j| j["state"] == "job_state_succeeded")).then_some(j)
    })
    .await;
    let keys: HashSet<&str> = finished.iter().map(|j| j["dedupe_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), JOBS, "no job lost, none duplicated");
    assert!(executions.load(Ordering::SeqCst) >= JOBS);
    let workers = http::get(&admin.http, "/api/plugin/workers").await.json();
    assert_eq!(workers.as_array().unwrap().len(), 1, "the worker reconnected by itself");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), worker_task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_pending_when_the_admin_is_killed_ends_the_job_after_the_restart() {
    use tests::fake_worker::{Exec, FakeWorker, FakeWorkerSpec, proposal};
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_plughost-under-test"));
    let (_dir, data) = data_dir("restart-cancel");
    let (http_port, grpc_port) = (free_port(), free_port());
    let mut admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;
    // The worker never answers the cancel, so the stop stays pending.
    let spec =
        FakeWorkerSpec::new("deaf", "stoppable", 1).detect(|_| vec![vec![proposal("only")]]).exec(|_| Exec::Ignore);
    let _worker = FakeWorker::start(admin.grpc, spec).await;
    let running = wait_for("job running", Duration::from_secs(60), || async {
        jobs(&admin.http).await.into_iter().find(|j| j["state"] == "job_state_running")
    })
    .await;
    let id = running["job_id"].as_str().unwrap().to_string();
    let r = http::post_json(
        &admin.http,
        &format!("/api/plugin/jobs/{id}/cancel"),
        &serde_json::json!({"reason": "not needed"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The detail endpoint waits for the store, so the stop request is on disk now.
    let detail = http::get(&admin.http, &format!("/api/plugin/jobs/{id}/detail")).await.json();
    assert_eq!(detail["job"]["state"], "job_state_running", "still waiting for the worker: {detail}");
    admin.kill();
    let admin = AdminProcess::spawn(bin, &data, http_port, grpc_port).await;
    let job = http::get(&admin.http, &format!("/api/plugin/jobs/{id}")).await.json();
    assert_eq!(job["state"], "job_state_canceled", "{job}");
    assert_eq!(job["error_message"], "not needed");
}
