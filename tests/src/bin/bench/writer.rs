//! `writer`: the store's writer alone, without gRPC, workers or the rest of the admin.
//! This process opens the real store (SQLite in a temp data dir, as the admin does; a
//! PostgreSQL server of its own with `--store postgres`) and queues what a no-op job costs
//! the store in `throughput`: its insert with an event, the event of its assignment (not
//! written: an attempt in flight is stored as PENDING), and its end with an event, queued
//! once the insert is durable, as the admin dispatches only then. It runs twice: at a fixed
//! pace ([`PACED_RATE`], about what the whole system reaches on 2 cores, so batches form
//! as they do there), then as fast as the writer takes it: the writer's own ceiling on this
//! machine, which bounds `throughput` on a machine with cores to spare.
//!
//! Both runs print the writer thread's CPU per job and operations per batch; a store
//! change can be compared in seconds here, with less noise than `throughput`, which shares
//! the cores with everything else.

use std::{
    collections::VecDeque,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use admin::{
    events::{EventBus, EventKind, JobEvent},
    job::{Job, JobSpecData, Pairs},
    store::{Op, PgTarget, Store},
};
use anyhow::{Context, Result, anyhow};
use proto::pb::{JobPriority, JobState};
use serde_json::{Value, json};

use crate::{
    Options, Size,
    admin_process::{self, DiskCounters, STORE_WRITER_THREAD},
    stats::num,
    store::{BenchStore, StoreKind},
};

/// The paced run's rate: about the jobs/s of `throughput` on the 2-core dev VM.
pub const PACED_RATE: f64 = 70_000.0;

/// Jobs queued together, as a detector's proposals arrive in one message.
const CHUNK: usize = 100;

/// Chunks whose inserts may be waiting for durability at once (a chunk's ends are queued
/// once its inserts are durable): at most 4,000 jobs between their insert and their end,
/// so the queue stays bounded at full speed.
const IN_FLIGHT: usize = 40;

pub fn default_jobs(size: Size) -> usize {
    match size {
        Size::Full => 1_000_000,
        Size::Quick => 200_000,
        Size::Smoke => 2_000,
    }
}

pub async fn run(o: &Options) -> Result<Value> {
    let jobs = o.jobs.unwrap_or_else(|| default_jobs(o.size));
    let rate = if o.size == Size::Smoke { PACED_RATE / 10.0 } else { PACED_RATE };
    let paced = measure(o.store, jobs, Some(rate)).await.context("the paced run")?;
    let full = measure(o.store, jobs, None).await.context("the full-speed run")?;
    let per_1000 = |n: Option<u64>| n.map(|n| num(n as f64 * 1000.0 / jobs as f64, 1));
    let mut out = serde_json::Map::new();
    for (prefix, m) in [("paced", &paced), ("full_speed", &full)] {
        let fields = [
            ("jobs_per_s", num(m.jobs_per_s, 1)),
            ("writer_cpu_us_per_job", num(m.writer_cpu_s * 1e6 / jobs as f64, 2)),
            ("writer_cores_busy", num(m.writer_cpu_s / m.elapsed.as_secs_f64(), 2)),
            ("batches", json!(m.batches)),
            ("operations_per_batch", num(m.operations as f64 / m.batches.max(1) as f64, 1)),
            ("disk_writes_per_1000_jobs", json!(per_1000(m.disk.map(|d| d.writes)))),
            ("disk_flushes_per_1000_jobs", json!(per_1000(m.disk.and_then(|d| d.flushes)))),
            ("writer_bytes_written_per_job", json!(m.written.map(|w| num(w as f64 / jobs as f64, 1)))),
            ("stored_succeeded", json!(m.stored_succeeded)),
        ];
        for (key, value) in fields {
            out.insert(format!("{prefix}_{key}"), value);
        }
    }
    out.insert("jobs".into(), json!(jobs));
    out.insert("store".into(), json!(o.store.name()));
    out.insert("paced_rate_jobs_per_s".into(), json!(rate));
    out.insert(
        "note".into(),
        json!(
            "the store's writer alone, in this process: per job an insert, an assignment event and the end \
             (queued once the insert is durable), at a fixed pace and then at full speed, each on a fresh store; \
             the writer thread's CPU and (SQLite) the bytes it passed to write calls, its log frames, \
             from /proc; disk figures as in throughput; stored_succeeded: the jobs the \
             store held as SUCCEEDED when opened again after the run"
        ),
    );
    Ok(Value::Object(out))
}

struct Measured {
    elapsed: Duration,
    jobs_per_s: f64,
    writer_cpu_s: f64,
    batches: u64,
    operations: u64,
    disk: Option<DiskCounters>,
    /// Bytes the writer thread passed to write system calls (None: /proc does not say).
    written: Option<u64>,
    /// Jobs stored as SUCCEEDED once the store was opened again after the run.
    stored_succeeded: i64,
}

/// One run over a fresh store: `jobs` jobs at `rate` per second (None: as fast as the
/// writer takes them), each ended once its insert is durable.
async fn measure(kind: StoreKind, jobs: usize, rate: Option<f64>) -> Result<Measured> {
    let dir = tests::TempDir::new("bench-writer");
    let bench_store = BenchStore::start(kind).await?;
    let open = || -> Result<(Arc<Store>, admin::store::Loaded)> {
        let events = Arc::new(EventBus::new(1024));
        Ok(match bench_store.url() {
            None => Store::open(dir.path(), events)?,
            Some(url) => {
                let target = PgTarget::parse(&url, None).map_err(|e| anyhow!("{e}"))?;
                // No lease: nothing else writes to this database.
                Store::open_postgres(&target, None, events)?
            }
        })
    };
    let disk_dir = bench_store.pg_data_dir().unwrap_or_else(|| dir.path().to_path_buf());
    let store = open()?.0;
    let result = drive(&store, jobs, rate, &disk_dir, bench_store.url().is_none()).await;
    store.close();
    let mut measured = result?;
    // What the run left in the store, as the next start reads it.
    let (store, loaded) = open()?;
    store.close();
    let succeeded = (crate::noop::JOB_TYPE.to_string(), JobState::Succeeded as i32);
    measured.stored_succeeded = loaded.counts.get(&succeeded).copied().unwrap_or(0);
    Ok(measured)
}

async fn drive(store: &Arc<Store>, jobs: usize, rate: Option<f64>, disk_dir: &Path, sqlite: bool) -> Result<Measured> {
    let writer = WriterThread::find().await?;
    let counters = || {
        let metrics = store.metrics();
        let total = |name: &str| {
            metrics.iter().find(|m| m.name == name).and_then(|m| m.samples.first()).and_then(|s| s.value).unwrap_or(0.0)
                as u64
        };
        (total("plughost_store_batches_total"), total("plughost_store_operations_total"))
    };
    let (cpu0, (batches0, ops0), disk0) = (writer.cpu_seconds()?, counters(), DiskCounters::of(disk_dir));
    let written0 = writer.bytes_written();
    let started = Instant::now();
    let mut in_flight: VecDeque<(u64, Vec<Arc<Job>>)> = VecDeque::new();
    let mut next = 0usize;
    let never_durable = |e| anyhow!("a batch never became durable: {e}");
    while next < jobs || !in_flight.is_empty() {
        if next < jobs && in_flight.len() < IN_FLIGHT {
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(next as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    // Until the next chunk is due, the oldest chunk's end goes out as soon
                    // as its insert is durable.
                    match in_flight.front() {
                        Some((ticket, _)) => {
                            if let Ok(durable) = tokio::time::timeout(wait, store.durable(*ticket)).await {
                                durable.map_err(never_durable)?;
                                end(store, &mut in_flight)?;
                            }
                        }
                        None => tokio::time::sleep(wait).await,
                    }
                    continue;
                }
            }
            let end_at = (next + CHUNK).min(jobs);
            let chunk: Vec<Arc<Job>> = (next..end_at).map(|i| Arc::new(new_job(i))).collect();
            let ticket = store.atomically(|| {
                let mut last = 0;
                for job in &chunk {
                    last = store.submit(Some(Op::InsertJob(job.clone())), Some(job_event(job)));
                }
                last
            });
            in_flight.push_back((ticket, chunk));
            next = end_at;
            continue;
        }
        let Some((ticket, _)) = in_flight.front() else { break };
        store.durable(*ticket).await.map_err(never_durable)?;
        end(store, &mut in_flight)?;
    }
    store.durable(store.last_ticket()).await.map_err(never_durable)?;
    let elapsed = started.elapsed();
    let (cpu1, (batches1, ops1)) = (writer.cpu_seconds()?, counters());
    let written = written0.zip(writer.bytes_written()).map(|(a, b)| b.saturating_sub(a)).filter(|_| sqlite);
    let disk = disk0.zip(DiskCounters::of(disk_dir)).map(|(a, b)| a.until(b));
    Ok(Measured {
        elapsed,
        jobs_per_s: jobs as f64 / elapsed.as_secs_f64(),
        writer_cpu_s: cpu1 - cpu0,
        batches: batches1 - batches0,
        operations: ops1 - ops0,
        disk,
        written,
        stored_succeeded: 0,
    })
}

/// The store's writer thread, found by its name in this process once the store is open
/// (one store is open at a time, and closing one joins its writer), then read by its id.
struct WriterThread {
    task: std::path::PathBuf,
}

impl WriterThread {
    /// Waits (up to 10 s) for the thread to have its name: a new thread names itself.
    async fn find() -> Result<WriterThread> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for task in std::fs::read_dir("/proc/self/task").context("/proc/self/task")?.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim_end() == STORE_WRITER_THREAD {
                    return Ok(WriterThread { task: task.path() });
                }
            }
            if Instant::now() > deadline {
                return Err(anyhow!("no {STORE_WRITER_THREAD} thread in this process"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn cpu_seconds(&self) -> Result<f64> {
        admin_process::stat_cpu_seconds(&self.task.join("stat").to_string_lossy())
    }

    /// What it has passed to write system calls so far (`wchar` in its io file): SQLite's
    /// log frames, with the database pages of the checkpoints it runs itself. None where
    /// /proc does not say. (PostgreSQL's messages go out with `send`, which it does not
    /// count.)
    fn bytes_written(&self) -> Option<u64> {
        let io = std::fs::read_to_string(self.task.join("io")).ok()?;
        io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok())
    }
}

/// Queues the assignment event and the end of the oldest chunk, whose inserts are durable.
fn end(store: &Store, in_flight: &mut VecDeque<(u64, Vec<Arc<Job>>)>) -> Result<()> {
    let (_, chunk) = in_flight.pop_front().context("nothing in flight")?;
    for job in chunk {
        let assigned = Arc::new(assign(&job));
        store.submit(None, Some(job_event(&assigned)));
        let done = Arc::new(succeed(&assigned));
        store.submit(Some(Op::UpdateJob(done.clone())), Some(job_event(&done)));
    }
    Ok(())
}

fn job_event(job: &Arc<Job>) -> EventKind {
    EventKind::Job { job: JobEvent(job.clone()) }
}

/// A job as `throughput`'s detector proposes it (seq from 1).
pub(crate) fn new_job(i: usize) -> Job {
    let now = admin::job::now_ms();
    let spec = JobSpecData {
        job_type: crate::noop::JOB_TYPE.to_string(),
        dedupe_key: crate::noop::key(i).into(),
        priority: JobPriority::Normal as i32,
        summary: format!("no-op job {i}").into(),
        detail: "".into(),
        parameters: Pairs::new(),
        labels: Pairs::new(),
        created_at: now,
        not_before: 0,
        expires_at: 0,
        detection_run: 1,
        replay_of: 0,
        cluster_context: None,
    };
    Job::pending(i as i64 + 1, spec, now)
}

/// `job` sent to a worker, now.
pub(crate) fn assign(job: &Job) -> Job {
    let mut j = job.clone();
    j.state = JobState::Assigned;
    j.attempts = 1;
    j.attempts_total = 1;
    j.worker_id = format!("bench-worker-{}", j.seq % 8).into();
    j.request_id = format!("exec-0123456789abcdef-{}", j.seq).into();
    j.assigned_at = admin::job::now_ms();
    j.updated_at = j.assigned_at;
    j
}

/// `job` succeeded, now.
pub(crate) fn succeed(job: &Job) -> Job {
    let mut j = job.clone();
    j.state = JobState::Succeeded;
    j.progress = 100.0;
    j.completed_at = admin::job::now_ms();
    j.updated_at = j.completed_at;
    j
}
