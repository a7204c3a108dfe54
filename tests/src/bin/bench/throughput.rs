//! `throughput`: N no-op jobs proposed in batches of 1,000 by one detector, run by W
//! workers x S slots. Completed jobs/s from the first proposal to the last completion
//! persisted (the store's own count, read from the SQLite file or the PostgreSQL database),
//! the admin's CPU seconds per 1,000 jobs, and queued->assigned latency from the admin's
//! histogram. `--store postgres` runs the admin on a durable PostgreSQL server the bench
//! starts (it leads at once: a fresh database has no lease to wait for).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::pb::JobState;
use serde_json::{Value, json};

use crate::{
    Carry, Options, Size,
    admin_process::{self, AdminProcess, CpuUse, CpuWindow},
    noop::{Fleet, Pace, Shared},
    stats::{Histogram, counter, num},
    store::{BenchStore, StoreKind},
};

pub const BATCH: usize = 1000;

pub fn default_jobs(size: Size) -> usize {
    match size {
        Size::Full => 200_000,
        Size::Quick => 50_000,
        Size::Smoke => 1_000,
    }
}

/// What one throughput run measured.
pub struct Measured {
    pub jobs: usize,
    pub finished_failed: u64,
    pub elapsed: Duration,
    pub jobs_per_s: f64,
    pub admin_cpu_s: f64,
    pub proposal_phase: Duration,
    pub dispatch: Histogram,
    pub peak_rss: u64,
    /// Resident memory once the workers were registered, before the first proposal.
    pub idle_rss: u64,
    pub execute_request_bytes: usize,
    /// CPU over the same interval: this process (the SDK workers) and the rest of the machine.
    pub cpu: CpuUse,
    /// The data dir's 4 KiB write + fsync time: median and worst of 50, in ms.
    pub fsync_ms: (f64, f64),
    /// The admin's CPU seconds per thread name over the same interval, busiest first.
    pub threads: Vec<(String, f64)>,
    /// PostgreSQL's server CPU seconds over about the same interval (PostgreSQL only).
    pub postgres_cpu_s: Option<f64>,
    /// Store batches committed and the operations in them over the run (the admin's
    /// `plughost_store_*_total` counters).
    pub store_batches: f64,
    pub store_operations: f64,
    /// Requests to the store's disk over the run (`None`: not on a block device).
    pub disk: Option<admin_process::DiskCounters>,
}

impl Measured {
    /// The store writer thread's CPU per job, in microseconds.
    pub fn writer_us_per_job(&self) -> f64 {
        let writer = self.threads.iter().find(|(n, _)| n == admin_process::STORE_WRITER_THREAD).map(|t| t.1);
        writer.map(|s| s * 1e6 / self.jobs as f64).unwrap_or(f64::NAN)
    }
}

pub async fn run(o: &Options, carry: &mut Carry) -> Result<Value> {
    let jobs = o.jobs.unwrap_or_else(|| default_jobs(o.size));
    let m = measure(jobs, o.workers, o.slots, o.store).await?;
    // `latency` runs on SQLite: it takes its capacity from a SQLite run only.
    if o.store == StoreKind::Sqlite {
        carry.jobs_per_s = Some(m.jobs_per_s);
    }
    let ratio = carry.round_trips_per_s.map(|rt| m.jobs_per_s / rt);
    let ms = |s: f64| s * 1000.0;
    Ok(json!({
        "store": o.store.name(),
        "jobs": m.jobs,
        "workers": o.workers,
        "slots_per_worker": o.slots,
        "failed_jobs": m.finished_failed,
        "elapsed_s": num(m.elapsed.as_secs_f64(), 3),
        "jobs_per_s": num(m.jobs_per_s, 1),
        "admin_cpu_s": num(m.admin_cpu_s, 2),
        "cpu_s_per_1000_jobs": num(m.admin_cpu_s / (m.jobs as f64 / 1000.0), 4),
        "admin_cores_busy": num(m.admin_cpu_s / m.elapsed.as_secs_f64(), 2),
        "store_writer_cpu_us_per_job": num(m.writer_us_per_job(), 2),
        "store_batches": m.store_batches,
        "store_operations_per_batch": num(m.store_operations / m.store_batches.max(1.0), 1),
        "store_writer_cores_busy": num(
            m.threads.iter().find(|(n, _)| n == admin_process::STORE_WRITER_THREAD).map_or(f64::NAN, |t| t.1)
                / m.elapsed.as_secs_f64(),
            2
        ),
        "admin_threads_cores_busy": m.threads.iter().take(8)
            .map(|(name, s)| (name.clone(), num(s / m.elapsed.as_secs_f64(), 2)))
            .collect::<serde_json::Map<_, _>>(),
        "workers_cpu_s": num(m.cpu.own, 2),
        "workers_cores_busy": num(m.cpu.own / m.cpu.wall, 2),
        "other_processes_cores_busy": num(m.cpu.other_cores(), 2),
        "postgres_cpu_s": m.postgres_cpu_s.map(|s| num(s, 2)),
        "postgres_cores_busy": m.postgres_cpu_s.map(|s| num(s / m.elapsed.as_secs_f64(), 2)),
        "postgres_cpu_note": "PostgreSQL's server processes (postmaster and children), counted within \
            other_processes_cores_busy; null on SQLite",
        "queued_to_assigned_p50_ms": num(ms(m.dispatch.quantile_upper(0.5)), 3),
        "queued_to_assigned_p99_ms": num(ms(m.dispatch.quantile_upper(0.99)), 3),
        "queued_to_assigned_max_ms": num(ms(m.dispatch.max_upper()), 3),
        "queued_to_assigned_mean_ms": num(ms(m.dispatch.mean()), 3),
        "queued_to_assigned_source": "admin histogram plughost_dispatch_latency_seconds: bucket upper bounds \
            (null = above the 10 s bucket); the admin's clock has 1 ms resolution",
        "proposal_phase_s": num(m.proposal_phase.as_secs_f64(), 3),
        "admin_peak_rss_mib": num(m.peak_rss as f64 / 1048576.0, 1),
        "admin_rss_per_queued_job_bytes": num(m.peak_rss.saturating_sub(m.idle_rss) as f64 / m.jobs as f64, 0),
        "admin_rss_per_queued_job_note": "(peak RSS - RSS before the first proposal) / jobs: every job is \
            proposed in the first moments (see proposal_phase_s), so at the peak nearly all are queued",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "fsync_probe_dir": if o.store == StoreKind::Postgres { "PostgreSQL's data dir" } else { "the admin's data dir" },
        "disk_writes_per_1000_jobs": m.disk.map(|d| num(d.writes as f64 * 1000.0 / m.jobs as f64, 1)),
        "disk_flushes_per_1000_jobs": m.disk.and_then(|d| d.flushes).map(|f| num(f as f64 * 1000.0 / m.jobs as f64, 1)),
        "disk_note": "write requests and cache flushes completed by the block device of the store's data dir \
            over the run (/sys/dev/block/<dev>/stat), every process's; null where it is not on a block device",
        "fsync_p50_ms": num(m.fsync_ms.0, 3),
        "fsync_max_ms": num(m.fsync_ms.1, 3),
        "execute_request_bytes": m.execute_request_bytes,
        "round_trips_per_s": carry.round_trips_per_s.map(|v| num(v, 1)),
        "ratio_to_ceiling": ratio.map(|r| num(r, 3)),
    }))
}

/// Runs `jobs` no-op jobs through a fresh admin on `store` and `workers` x `slots` SDK workers.
pub async fn measure(jobs: usize, workers: usize, slots: usize, store: StoreKind) -> Result<Measured> {
    let dir = tests::TempDir::new("bench-throughput");
    let store = BenchStore::start(store).await?;
    let probe_dir = store.pg_data_dir().unwrap_or_else(|| dir.path().to_path_buf());
    let fsync = admin_process::fsync_probe(&probe_dir).unwrap_or((f64::NAN, f64::NAN));
    let admin = AdminProcess::start_on(dir.path(), 5, &store.admin_store(None)).await?;
    let shared = Shared::new(jobs, Pace::Burst { batch: BATCH }, admin.pid);
    let fleet = Fleet::start(admin.grpc, workers, slots, &shared);
    let result = drive(&admin, &fleet, &shared, &store, dir.path(), jobs, workers).await;
    fleet.stop().await;
    admin.stop(Duration::from_secs(5)).await;
    result.map(|m| Measured { fsync_ms: fsync, ..m })
}

async fn drive(
    admin: &AdminProcess,
    fleet: &Fleet,
    shared: &std::sync::Arc<Shared>,
    store: &BenchStore,
    data_dir: &std::path::Path,
    jobs: usize,
    workers: usize,
) -> Result<Measured> {
    fleet.wait_registered(admin, workers).await?;
    let idle_rss = admin.rss_bytes()?;
    let before_text = admin_process::metrics(&admin.http).await?;
    let before = Histogram::parse(&before_text, "plughost_dispatch_latency_seconds").unwrap_or_default();
    shared.go();
    // The scheduled detection starts about 2 s after the detector appears.
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
    let window = CpuWindow::starting_with(admin.pid, first_at, cpu_start);
    let threads_start = admin_process::thread_cpu_seconds(admin.pid)?;
    let disk_dir = store.pg_data_dir().unwrap_or_else(|| data_dir.to_path_buf());
    let disk_start = admin_process::DiskCounters::of(&disk_dir);
    let postgres_start = store.postgres_cpu_seconds();

    // Follow progress in memory (cheap), then wait for the store to hold every final state.
    let deadline = Duration::from_secs(120).max(Duration::from_secs_f64(jobs as f64 / 200.0));
    let mut last_report = Instant::now();
    loop {
        let status = tests::http::get(&admin.http, "/api/plugin/status").await;
        let by_state = &status.json()["jobs_by_state"];
        let done: u64 = ["succeeded", "failed", "canceled"].iter().map(|s| by_state[*s].as_u64().unwrap_or(0)).sum();
        if done >= jobs as u64 {
            break;
        }
        if first_at.elapsed() > deadline {
            bail!("only {done} of {jobs} jobs finished within {deadline:?}");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("bench:   {done}/{jobs} jobs finished after {:.1} s", first_at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = store.connect(data_dir).await?;
    let finals = [JobState::Succeeded as i32, JobState::Failed as i32, JobState::Canceled as i32];
    let (end, cpu_end, threads_end) = loop {
        let persisted = db.count_in_states(&finals).await?;
        if persisted >= jobs as i64 {
            break (Instant::now(), admin.cpu_seconds()?, admin_process::thread_cpu_seconds(admin.pid)?);
        }
        if first_at.elapsed() > deadline {
            bail!("only {persisted} of {jobs} final states persisted within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let disk = disk_start.zip(admin_process::DiskCounters::of(&disk_dir)).map(|(a, b)| a.until(b));
    let postgres_cpu_s = postgres_start.zip(store.postgres_cpu_seconds()).map(|(a, b)| b - a);
    let cpu = window.finish();
    let failed = db.count_in_states(&[JobState::Failed as i32, JobState::Canceled as i32]).await?;
    let after_text = admin_process::metrics(&admin.http).await?;
    let after = Histogram::parse(&after_text, "plughost_dispatch_latency_seconds")
        .context("the admin's /metrics has no plughost_dispatch_latency_seconds")?;
    let store_delta = |name| -> Result<f64> {
        let at = |text| counter(text, name).with_context(|| format!("the admin's /metrics has no {name}"));
        Ok(at(&after_text)? - at(&before_text)?)
    };
    let (store_batches, store_operations) =
        (store_delta("plughost_store_batches_total")?, store_delta("plughost_store_operations_total")?);
    let elapsed = end - first_at;
    let last_proposal = shared.last_proposal.get().copied().unwrap_or(end);
    Ok(Measured {
        jobs,
        finished_failed: failed.max(0) as u64,
        elapsed,
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        admin_cpu_s: cpu_end - cpu_start,
        proposal_phase: last_proposal.saturating_duration_since(first_at),
        dispatch: after.since(&before),
        peak_rss: admin.peak_rss_bytes().unwrap_or(0),
        idle_rss,
        execute_request_bytes: shared.execute_request_bytes.load(std::sync::atomic::Ordering::Relaxed),
        cpu,
        fsync_ms: (f64::NAN, f64::NAN),
        threads: admin_process::thread_cpu_delta(&threads_start, &threads_end),
        postgres_cpu_s,
        store_batches,
        store_operations,
        disk,
    })
}
