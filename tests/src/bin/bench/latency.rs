//! `latency`: light load, 10% of the measured capacity, proposed at a steady rate by the
//! detector. Proposal->completion is measured from the detector's send to the job's final
//! state arriving on the admin's event stream (SSE), which the admin publishes only after
//! the store committed it, so it covers "completion persisted". Queued->assigned comes from
//! the admin's dispatch latency histogram.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{
    Carry, Options, Size,
    admin_process::{self, AdminProcess, CpuUse, CpuWindow},
    noop::{Fleet, Pace, Shared},
    stats::{Histogram, num, summary},
    throughput,
};

fn window(size: Size) -> Duration {
    match size {
        Size::Full => Duration::from_secs(20),
        Size::Quick => Duration::from_secs(8),
        Size::Smoke => Duration::from_secs(2),
    }
}

fn probe_jobs(size: Size) -> usize {
    match size {
        Size::Full => 50_000,
        Size::Quick => 10_000,
        Size::Smoke => 500,
    }
}

pub async fn run(o: &Options, carry: &mut Carry) -> Result<Value> {
    let (capacity, source) = match carry.jobs_per_s {
        Some(c) => (c, "throughput scenario of this run".to_string()),
        None => {
            let n = probe_jobs(o.size);
            eprintln!("bench:   measuring capacity first ({n} jobs)");
            let m = throughput::measure(n, o.workers, o.slots, crate::store::StoreKind::Sqlite).await?;
            (m.jobs_per_s, format!("throughput probe of {n} jobs"))
        }
    };
    let rate = (capacity * 0.1).max(5.0);
    let jobs = ((rate * window(o.size).as_secs_f64()) as usize).max(20);

    let dir = tests::TempDir::new("bench-latency");
    let admin = AdminProcess::start(dir.path(), 5).await?;
    let shared = Shared::new(jobs, Pace::Rate { per_s: rate }, admin.pid);
    let fleet = Fleet::start(admin.grpc, o.workers, o.slots, &shared);
    let result = drive(&admin, &fleet, &shared, o, jobs).await;
    fleet.stop().await;
    admin.stop(Duration::from_secs(5)).await;
    let m = result?;

    let ms = |s: f64| s * 1000.0;
    let achieved = jobs.saturating_sub(1) as f64 / m.proposal_phase.as_secs_f64().max(1e-9);
    Ok(json!({
        "capacity_jobs_per_s": num(capacity, 1),
        "capacity_source": source,
        "target_rate_jobs_per_s": num(rate, 1),
        "offered_rate_jobs_per_s": num(achieved, 1),
        "jobs": jobs,
        "workers": o.workers,
        "slots_per_worker": o.slots,
        "failed_jobs": m.failed,
        "proposal_to_completion_p50_ms": num(m.completion.0, 3),
        "proposal_to_completion_p99_ms": num(m.completion.1, 3),
        "proposal_to_completion_max_ms": num(m.completion.2, 3),
        "proposal_to_execute_p50_ms": num(m.execute.0, 3),
        "proposal_to_execute_p99_ms": num(m.execute.1, 3),
        "queued_to_assigned_p50_ms": num(ms(m.dispatch.quantile_upper(0.5)), 3),
        "queued_to_assigned_p99_ms": num(ms(m.dispatch.quantile_upper(0.99)), 3),
        "queued_to_assigned_max_ms": num(ms(m.dispatch.max_upper()), 3),
        "queued_to_assigned_mean_ms": num(ms(m.dispatch.mean()), 3),
        "queued_to_assigned_source": "admin histogram plughost_dispatch_latency_seconds: bucket upper bounds \
            (0.5, 1, 2.5, 5 ms ...); the admin's clock has 1 ms resolution",
        "completion_source": "detector send -> final job event on GET /api/plugin/events (published after commit)",
        "sse_resets": m.sse_resets,
        "cpu_s_per_1000_jobs": num(m.cpu.admin / (jobs as f64 / 1000.0), 4),
        "admin_cores_busy": num(m.cpu.admin / m.cpu.wall, 2),
        "workers_cores_busy": num(m.cpu.own / m.cpu.wall, 2),
        "other_processes_cores_busy": num(m.cpu.other_cores(), 2),
    }))
}

struct Measured {
    completion: (f64, f64, f64),
    execute: (f64, f64, f64),
    dispatch: Histogram,
    proposal_phase: Duration,
    cpu: CpuUse,
    failed: usize,
    sse_resets: usize,
}

async fn drive(
    admin: &AdminProcess,
    fleet: &Fleet,
    shared: &Arc<Shared>,
    o: &Options,
    jobs: usize,
) -> Result<Measured> {
    fleet.wait_registered(admin, o.workers).await?;
    // Final job states as the event stream announces them.
    let persisted: Arc<Vec<AtomicU64>> = Arc::new((0..jobs).map(|_| AtomicU64::new(0)).collect());
    let seen = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let resets = Arc::new(AtomicUsize::new(0));
    let mut sse = tests::http::Sse::open(&admin.http, "/api/plugin/events", None).await;
    let reader = {
        let (persisted, seen, failed, resets, shared) =
            (persisted.clone(), seen.clone(), failed.clone(), resets.clone(), shared.clone());
        tokio::spawn(async move {
            while let Some(ev) = sse.next().await {
                let at = shared.stamp_of(Instant::now());
                if ev.event == "reset" {
                    resets.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if ev.event != "job" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else { continue };
                let state = v["job"]["state"].as_str().unwrap_or_default();
                if !matches!(state, "succeeded" | "failed" | "canceled") {
                    continue;
                }
                let i = v["job"]["dedupe_key"].as_str().and_then(|k| k.strip_prefix('k')?.parse::<usize>().ok());
                if let Some(i) = i.filter(|i| *i < persisted.len())
                    && persisted[i].compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    seen.fetch_add(1, Ordering::Relaxed);
                    if state != "succeeded" {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let result = async {
        let before = Histogram::parse(&admin_process::metrics(&admin.http).await?, "plughost_dispatch_latency_seconds")
            .unwrap_or_default();
        shared.go();
        let wait_start = Instant::now();
        let (first_at, cpu_start) = loop {
            if let Some(v) = shared.first_proposal.get() {
                break *v;
            }
            if wait_start.elapsed() > Duration::from_secs(60) {
                bail!("no detection started within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let cpu_window = CpuWindow::starting_with(admin.pid, first_at, cpu_start);
        let deadline = window(o.size) * 3 + Duration::from_secs(60);
        while seen.load(Ordering::Relaxed) < jobs {
            if first_at.elapsed() > deadline {
                bail!("only {} of {jobs} final job events within {deadline:?}", seen.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cpu = cpu_window.finish();
        let after = Histogram::parse(&admin_process::metrics(&admin.http).await?, "plughost_dispatch_latency_seconds")
            .unwrap_or_default();
        let mut completion: Vec<f64> =
            (0..jobs).filter_map(|i| Shared::between_ms(&shared.sent, &persisted, i)).collect();
        let mut execute: Vec<f64> =
            (0..jobs).filter_map(|i| Shared::between_ms(&shared.sent, &shared.started, i)).collect();
        let last = shared.last_proposal.get().copied().unwrap_or_else(Instant::now);
        Ok(Measured {
            completion: summary(&mut completion),
            execute: summary(&mut execute),
            dispatch: after.since(&before),
            proposal_phase: last.saturating_duration_since(first_at),
            cpu,
            failed: failed.load(Ordering::Relaxed),
            sse_resets: resets.load(Ordering::Relaxed),
        })
    }
    .await;
    reader.abort();
    result
}
